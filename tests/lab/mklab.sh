#!/usr/bin/env bash
# Builds the signed DNS hierarchy for tests/dnssec_lab.rs in DIR (fresh keys, fresh signatures):
#   .            signed, its KSK is the trust anchor (DIR/root.anchor as DS, DIR/root-dnskey.anchor as DNSKEY)
#   test.        signed, delegated from . with DS
#   signed.test. signed, delegated with DS
#   unsigned.test. unsigned, delegated without DS
#   broken.test. signed, delegated with DS, its TLSA and DKIM key rdata changed after signing (bogus)
# and the configuration of one NSD serving all five zones on NSD_IP@NSD_PORT, of an Unbound
# iterator (no validation) and of a validating Unbound, both on NSD_IP at their own ports.
# Starts nothing: the test starts (and stops, by PID) the servers.
# Usage: mklab.sh DIR NSD_IP NSD_PORT ITER_PORT VALID_PORT
set -euo pipefail
[ $# -eq 5 ] || { echo "usage: $0 DIR NSD_IP NSD_PORT ITER_PORT VALID_PORT" >&2; exit 2; }
dir=$1 ip=$2 nsd_port=$3 iter_port=$4 valid_port=$5
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/keys"
cd "$dir"
alg=ECDSAP256SHA256

# zone-file name of ZONE ("." -> root)
file() { if [ "$1" = . ]; then echo root; else echo "${1%.}"; fi; }

# A zone from its template, @IP@ replaced.
template() { sed "s/@IP@/$ip/g" "$here/zones/$(file "$1").zone" > "$(file "$1").zone"; }

# Signs ZONE (origin) with a fresh KSK and ZSK; leaves ZONE.zone.signed and keys/ZONE.ds (SHA-256).
sign() {
  local z=$1 f ksk zsk
  f=$(file "$z")
  ksk=$(cd keys && ldns-keygen -a "$alg" -k "$z")
  zsk=$(cd keys && ldns-keygen -a "$alg" "$z")
  ldns-signzone -o "$z" "$f.zone" "keys/$ksk" "keys/$zsk"
  (cd keys && ldns-key2ds -n -2 "$ksk.key") > "keys/$f.ds"
  cp "keys/$ksk.key" "keys/$f.ksk"
}

for z in signed.test. broken.test. unsigned.test.; do template "$z"; done
sign signed.test.
sign broken.test.
# broken.test.: another TLSA digest under the old RRSIG.
ab=$(printf 'ab%.0s' $(seq 32)) cd=$(printf 'cd%.0s' $(seq 32))
sed -i -E "/[[:space:]]TLSA[[:space:]]/s/$ab/$cd/I" broken.test.zone.signed
grep -qi "TLSA.*$cd" broken.test.zone.signed || { echo "mklab: failed to break broken.test's TLSA" >&2; exit 1; }
# and another DKIM key text (t=y added) under the old RRSIG.
sed -i -E '/_domainkey/s/k=ed25519; p=/k=ed25519; t=y; p=/' broken.test.zone.signed
grep -q 't=y; p=' broken.test.zone.signed || { echo "mklab: failed to break broken.test's DKIM key" >&2; exit 1; }
cp unsigned.test.zone unsigned.test.zone.signed

template test.
cat keys/signed.test.ds keys/broken.test.ds >> test.zone
sign test.
template .
cat keys/test.ds >> root.zone
sign .

cp keys/root.ds root.anchor
cp keys/root.ksk root-dnskey.anchor
printf '.\t3600000\tIN\tNS\ta.root.\na.root.\t3600000\tIN\tA\t%s\n' "$ip" > root.hints

{
  printf 'server:\n  ip-address: %s@%s\n  server-count: 1\n  username: ""\n  chroot: ""\n' "$ip" "$nsd_port"
  printf '  database: ""\n  zonesdir: "%s"\n  pidfile: "%s/nsd.pid"\n' "$dir" "$dir"
  printf '  zonelistfile: "%s/nsd.zonelist"\n  xfrdfile: "%s/nsd.xfrd"\n  logfile: "%s/nsd.log"\n' "$dir" "$dir" "$dir"
  printf '  rrl-ratelimit: 0\n  do-ip6: no\n  verbosity: 1\n'
  # No remote control: its default port (127.0.0.1:8952) is shared by every NSD on the host.
  printf 'remote-control:\n  control-enable: no\n'
  for z in . test. signed.test. unsigned.test. broken.test.; do
    printf 'zone:\n  name: "%s"\n  zonefile: "%s.zone.signed"\n' "$z" "$(file "$z")"
  done
} > nsd.conf

# Unbound NAME PORT MODULES [ANCHOR]
unbound_conf() {
  {
    printf 'server:\n  interface: %s\n  port: %s\n  do-ip6: no\n  num-threads: 1\n' "$ip" "$2"
    printf '  username: ""\n  chroot: ""\n  directory: "%s"\n  pidfile: "%s/%s.pid"\n' "$dir" "$dir" "$1"
    printf '  logfile: "%s/%s.log"\n  use-syslog: no\n  verbosity: 1\n' "$dir" "$1"
    printf '  do-not-query-localhost: no\n  harden-referral-path: no\n  local-zone: "test." nodefault\n'
    printf '  access-control: 127.0.0.0/8 allow\n  ede: yes\n  val-log-level: 2\n  prefetch: no\n'
    printf '  module-config: "%s"\n' "$3"
    if [ "$nsd_port" = 53 ]; then
      printf '  root-hints: "%s/root.hints"\n' "$dir"
    fi
    [ -z "${4:-}" ] || printf '  trust-anchor-file: "%s"\n' "$4"
    printf 'remote-control:\n  control-enable: yes\n  control-interface: "%s/%s.ctl"\n  control-use-cert: no\n' "$dir" "$1"
    if [ "$nsd_port" != 53 ]; then
      # Referrals name port 53: without it, point Unbound at every zone by stub.
      for z in . test. signed.test. unsigned.test. broken.test.; do
        printf 'stub-zone:\n  name: "%s"\n  stub-addr: %s@%s\n' "$z" "$ip" "$nsd_port"
      done
    fi
  } > "$1.conf"
}
unbound_conf unbound-iter "$iter_port" "iterator"
unbound_conf unbound-valid "$valid_port" "validator iterator" "$dir/root.anchor"
