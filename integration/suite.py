#!/usr/bin/env python3
"""The integration suite's Python half, driven by integration/run.

Subcommands (each prints or appends what integration/run needs):
  zone DIR              write the test zones (real DKIM key made with openssl) and nsd zone list
  sign DIR              write DIR/signed.eml (DKIM-signed by good.test, s1), forged.eml, soft.eml
  probe NSD FE OUT      the questions filters ask, to NSD and to the front-end; appends rows
  pyspf NS SOCK OUT     pyspf against NS (IP:PORT, NSD directly) and against the front-end,
                        and mailpolicyd's spf_check op; appends rows to OUT
  checkdmarc NSD FE OUT checkdmarc -n NSD vs -n FE (both port 53); appends rows to OUT
  dkimpy NSD FE SOCK DIR OUT
                        dkimpy verification through the socket's dkim_key `raw`; appends rows
  report TSV MD SECONDS print the per-filter table, write MD, exit 1 if a comparison failed

Rows are tab-separated: filter, case, NSD-direct, via mailpolicyd, equal (yes/NO), upstream
queries (NSD's own query counter around the via-mailpolicyd run; "-" where not measured).
"""

import base64
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))

NSD_NS_ADDR = "127.0.10.1"

# Zones: name -> list of (owner relative to the zone, type, rdata). "@" is the apex.
# The SPF records cover ip4, ip6, include, mx, a, a:, redirect, ~all, -all; nospf.test has none.
ZONES = {
    "good.test": [
        ("@", "A", "192.0.2.1"),
        ("@", "AAAA", "2001:db8:1::1"),
        ("@", "MX", "10 mx.good.test."),
        ("mx", "A", "198.51.100.25"),
        ("mx", "AAAA", "2001:db8:1::25"),
        ("out", "A", "198.51.100.30"),
        ("@", "TXT", '"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8:1::/48 include:_spf.relay.test mx a:out.good.test -all"'),
        ("@", "TXT", '"google-site-verification=integration-suite"'),
        ("_dmarc", "TXT", '"v=DMARC1; p=reject; rua=mailto:dmarc-reports@good.test"'),
        ("_submission._tcp", "SRV", "0 1 587 mx.good.test."),
        ("@", "CAA", '0 issue "ca.test"'),
        # s1._domainkey: added by write_zones (the per-run key)
    ],
    "relay.test": [
        ("_spf", "TXT", '"v=spf1 ip4:203.0.113.0/24 -all"'),
        ("@", "MX", "0 ."),
    ],
    "soft.test": [
        ("@", "A", "198.51.100.50"),
        ("@", "MX", "10 mail.soft.test."),
        ("mail", "A", "198.51.100.51"),
        ("mail", "AAAA", "2001:db8:2::25"),
        # published as two strings: "TXT strings as published", joined without a space
        ("@", "TXT", '"v=spf1 a mx" " ~all"'),
        ("_dmarc", "TXT", '"v=DMARC1; p=none"'),
    ],
    "redir.test": [
        ("@", "MX", "10 mx.good.test."),
        ("@", "TXT", '"v=spf1 redirect=good.test"'),
    ],
    "nospf.test": [
        ("@", "A", "198.51.100.60"),
        ("@", "MX", "10 mx.nospf.test."),
        ("mx", "A", "198.51.100.61"),
        ("@", "TXT", '"site-verification=no-spf-here"'),
    ],
    "cname.test": [
        ("@", "TXT", '"v=spf1 a:www.cname.test -all"'),
        ("@", "MX", "10 www.cname.test."),
        ("www", "CNAME", "alias1.cname.test."),
        ("alias1", "CNAME", "host.cname.test."),
        ("host", "A", "192.0.2.80"),
        ("_dmarc", "TXT", '"v=DMARC1; p=quarantine; sp=none"'),
    ],
}

# pyspf / spf_check cases: (case, ip, mail_from, helo)
SPF_CASES = [
    ("ip4 pass", "192.0.2.10", "alice@good.test", "mx.good.test"),
    ("ip6 pass", "2001:db8:1::99", "alice@good.test", "mx.good.test"),
    ("include pass", "203.0.113.5", "alice@good.test", "mx.good.test"),
    ("mx pass (A of MX)", "198.51.100.25", "alice@good.test", "mx.good.test"),
    ("a:host pass", "198.51.100.30", "alice@good.test", "out.good.test"),
    ("-all fail", "198.51.100.99", "alice@good.test", "nohost.test"),
    ("redirect pass", "192.0.2.10", "bob@redir.test", "mx.good.test"),
    ("redirect fail", "198.51.100.99", "bob@redir.test", "nohost.test"),
    ("a pass (bare a)", "198.51.100.50", "carol@soft.test", "soft.test"),
    ("mx pass (AAAA of MX)", "2001:db8:2::25", "carol@soft.test", "mail.soft.test"),
    ("~all softfail", "198.51.100.99", "carol@soft.test", "nohost.test"),
    ("none (no SPF record)", "192.0.2.10", "dave@nospf.test", "nospf.test"),
    ("none (NXDOMAIN)", "192.0.2.10", "eve@nx.good.test", "nx.good.test"),
    ("null sender (HELO)", "192.0.2.10", "", "good.test"),
    ("a: via CNAME chain", "192.0.2.80", "frank@cname.test", "www.cname.test"),
]

# Reverse zones, so that PTR questions (rspamd's RDNS, checkdmarc's MX checks) have real answers
REVERSE = {
    "2.0.192.in-addr.arpa": [("10", "PTR", "mx.good.test."), ("80", "PTR", "host.cname.test.")],
    "100.51.198.in-addr.arpa": [("25", "PTR", "mx.good.test."), ("51", "PTR", "mail.soft.test.")],
    # what the authoritative server says for a loopback address (a resolver must ask, not invent)
    "127.in-addr.arpa": [("1.0.0", "PTR", "loopback.test.")],
}

CHECKDMARC_DOMAINS = ["good.test", "soft.test", "redir.test", "nospf.test", "cname.test"]


def txt_strings(text, size=250):
    return " ".join('"%s"' % text[i : i + size] for i in range(0, len(text), size))


def write_zones(d):
    key = os.path.join(d, "s1.private")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", key, "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    pub = base64.b64encode(der).decode()
    # the key record published in several strings, as opendkim-genkey does
    dkim = '"v=DKIM1; k=rsa; " ' + txt_strings("p=" + pub)
    zones = dict(ZONES)
    zones["good.test"] = ZONES["good.test"] + [("s1._domainkey", "TXT", dkim)]
    serial = int(time.time())
    # the parent zone test., delegating to each child (NSD serves both): names between the
    # zones (_dmarc.test, which checkdmarc asks) get a real NXDOMAIN, not REFUSED
    parent = [("ns1", "A", NSD_NS_ADDR)]
    for zone in zones:
        child = zone[: -len(".test")]
        parent += [(child, "NS", "ns1.%s." % zone), ("ns1." + child, "A", NSD_NS_ADDR)]
    conf = []
    for zone, records in [("test", parent)] + list(zones.items()) + list(REVERSE.items()):
        lines = [
            "$ORIGIN %s." % zone,
            "$TTL 300",
            "@ IN SOA ns1.%s. hostmaster.%s. %d 3600 600 86400 300" % (zone, zone, serial),
            "@ IN NS ns1.%s." % (zone if zone.endswith("test") else "test"),
        ]
        if zone.endswith(".test"):
            lines.append("ns1 IN A %s" % NSD_NS_ADDR)
        lines += ["%s IN %s %s" % r for r in records]
        with open(os.path.join(d, zone + ".zone"), "w") as f:
            f.write("\n".join(lines) + "\n")
        conf.append('zone:\n  name: "%s"\n  zonefile: "%s/%s.zone"\n' % (zone, d, zone))
    with open(os.path.join(d, "zones.conf"), "w") as f:
        f.write("\n".join(conf))
    with open(os.path.join(d, "s1.dns"), "w") as f:
        f.write("v=DKIM1; k=rsa; p=" + pub + "\n")


def message(frm, to, subject, body):
    return (
        "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: Mon, 30 Nov 2026 08:00:00 +0000\r\n"
        "Message-ID: <%s.%d@integration.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n"
        % (frm, to, subject, subject.replace(" ", "-"), os.getpid(), body)
    ).encode()


def write_messages(d):
    import dkim

    with open(os.path.join(d, "s1.private"), "rb") as f:
        key = f.read()
    msg = message("Alice <alice@good.test>", "rcpt@receiver.test", "signed and aligned",
                  "This message is signed by good.test (selector s1) and sent from 192.0.2.10.")
    sig = dkim.sign(msg, b"s1", b"good.test", key,
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    signed = sig + msg
    with open(os.path.join(d, "signed.eml"), "wb") as f:
        f.write(signed)
    with open(os.path.join(d, "tampered.eml"), "wb") as f:
        f.write(signed.replace(b"sent from 192.0.2.10", b"sent from 192.0.2.11"))
    with open(os.path.join(d, "forged.eml"), "wb") as f:
        f.write(message("CEO <ceo@good.test>", "rcpt@receiver.test", "urgent wire transfer",
                        "Unsigned, from 198.51.100.99, which good.test's SPF does not list."))
    with open(os.path.join(d, "soft.eml"), "wb") as f:
        f.write(message("Carol <carol@soft.test>", "rcpt@receiver.test", "p=none sender",
                        "Unsigned, from 198.51.100.99: soft.test says ~all and p=none."))


def row(out, filt, case, nsd, via, queries="-", equal=None, verdict=None):
    if equal is None:
        equal = nsd == via
    if verdict is None:
        verdict = "yes" if equal else "NO"
    clean = lambda s: str(s).replace("\t", " ").replace("\n", " ").replace("|", "/")
    with open(out, "a") as f:
        f.write("\t".join([filt, clean(case), clean(nsd), clean(via), verdict,
                           str(queries)]) + "\n")


def use_resolver(ip, port):
    import dns.resolver

    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [ip]
    r.port = int(port)
    r.lifetime = 4.0
    r.timeout = 2.0
    dns.resolver.default_resolver = r
    return r


def nsd_queries(ctl):
    """NSD's total query counter (nsd-control stats_noreset), or None without a control socket."""
    if not ctl:
        return None
    out = subprocess.run(ctl.split() + ["stats_noreset"], capture_output=True, text=True, timeout=10)
    for line in out.stdout.splitlines():
        if line.startswith("num.queries="):
            return int(line.split("=", 1)[1])
    return None


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


def cmd_pyspf(nsd, fe, sock, out, ctl):
    import spf
    from mailpolicy import Client, MailpolicyError

    def run_all(server):
        use_resolver(*hostport(server))
        res = {}
        for case, ip, s, h in SPF_CASES:
            try:
                r, expl = spf.check2(i=ip, s=s, h=h, timeout=8, querytime=8)
                res[case] = r if r not in ("temperror", "permerror") else "%s (%s)" % (r, expl)
            except Exception as e:  # a crash in the filter is a result too
                res[case] = "exception: %r" % e
        return res

    q_start = nsd_queries(ctl)
    direct = run_all(nsd)
    before = nsd_queries(ctl)
    d_q = before - q_start if before is not None and q_start is not None else "-"
    via = run_all(fe)
    after = nsd_queries(ctl)
    first = after - before if before is not None and after is not None else "-"
    again = run_all(fe)
    after2 = nsd_queries(ctl)
    second = after2 - after if after is not None and after2 is not None else "-"
    for case, *_ in SPF_CASES:
        row(out, "pyspf", case, direct[case], via[case])
    row(out, "pyspf", "all cases, second pass through the front-end", "same answers",
        "same answers" if again == via else "different: %s" % again,
        queries="NSD-direct %s; via %s first pass, %s second" % (d_q, first, second),
        equal=(again == via))
    # mailpolicyd's own SPF evaluation against pyspf's NSD-direct verdicts
    with Client(sock) as c:
        for case, ip, s, h in SPF_CASES:
            try:
                r = c.spf_check(ip, s, h)["result"]
            except MailpolicyError as e:
                r = "error %s" % e.code
            row(out, "pyspf vs spf_check op", case, direct[case], r)


def spf_mechanisms(parsed):
    """checkdmarc's parsed SPF mechanisms as short strings, with what each resolved to."""
    out = []
    for m in (parsed or {}).get("mechanisms") or []:
        s = "%s:%s" % (m.get("mechanism"), m.get("value"))
        if "addresses" in m:
            s += "->" + ",".join(sorted(m["addresses"]))
        if "hosts" in m:
            s += "->" + ",".join(sorted(str(h.get("hostname")) for h in m["hosts"]))
        if "parsed" in m:
            s += "{" + " ".join(spf_mechanisms(m["parsed"])) + "}"
        out.append(s)
    redirect = (parsed or {}).get("redirect")
    if redirect:
        out.append("redirect=%s{%s}" % (redirect.get("domain"),
                                        " ".join(spf_mechanisms(redirect.get("parsed")))))
    return out


def summarize_checkdmarc(d):
    """The DMARC/SPF/MX/NS parts of one domain's checkdmarc JSON, as a short string each."""
    def fields(sec, keys):
        return "; ".join("%s=%s" % (k, sec.get(k)) for k in keys if sec.get(k) not in (None, [], ""))

    dmarc = d.get("dmarc") or {}
    spf_ = d.get("spf") or {}
    mx = d.get("mx") or {}
    ns = d.get("ns") or {}
    warnings = list(spf_.get("warnings") or [])
    redirect = (spf_.get("parsed") or {}).get("redirect") or {}
    warnings += redirect.get("warnings") or []
    hosts = ["%s %s %s" % (h.get("preference"), h.get("hostname"), ",".join(sorted(h.get("addresses") or [])))
             for h in (mx.get("hosts") or [])]
    return {
        "DMARC": fields(dmarc, ["record", "location", "valid", "error"]),
        "SPF": fields(spf_, ["record", "valid", "error"]) + "; mechanisms=" + " ".join(
            spf_mechanisms(spf_.get("parsed"))) + ("; warnings=%s" % warnings if warnings else ""),
        "MX": "hosts=%s" % hosts + ("; error=%s" % mx["error"] if mx.get("error") else ""),
        "NS": fields(ns, ["hostnames", "error"]),
    }


def run_checkdmarc(server):
    exe = os.path.join(os.path.dirname(sys.executable), "checkdmarc")
    p = subprocess.run([exe, *CHECKDMARC_DOMAINS, "-f", "json", "-t", "3", "-n", server],
                       capture_output=True, text=True, timeout=120)
    data = json.loads(p.stdout)
    if isinstance(data, dict):
        data = [data]
    return {d["domain"]: summarize_checkdmarc(d) for d in data}


def cmd_checkdmarc(nsd_ip, fe_ip, out, ctl):
    q_start = nsd_queries(ctl)
    direct = run_checkdmarc(nsd_ip)
    before = nsd_queries(ctl)
    via = run_checkdmarc(fe_ip)
    after = nsd_queries(ctl)
    q = "-"
    if None not in (q_start, before, after):
        q = "all 5 domains: NSD-direct %d; via %d" % (before - q_start, after - before)
    for dom in CHECKDMARC_DOMAINS:
        for sec in ("DMARC", "SPF", "MX", "NS"):
            row(out, "checkdmarc", "%s %s" % (dom, sec), direct[dom][sec], via[dom][sec],
                queries=q if (dom, sec) == (CHECKDMARC_DOMAINS[0], "DMARC") else "")


# What a filter's resolver asks: each question to NSD and to the front-end, compared on the
# rcode, the answer section (names, types, data in order: a CNAME chain stays a chain; TXT
# strings as published) and, for NXDOMAIN and NODATA, the SOA in the authority section.
PROBES = [
    ("good.test", "TXT"), ("s1._domainkey.good.test", "TXT"), ("soft.test", "TXT"),
    ("_dmarc.good.test", "TXT"), ("good.test", "A"), ("good.test", "AAAA"), ("good.test", "MX"),
    ("good.test", "NS"), ("good.test", "SOA"), ("www.cname.test", "A"),
    ("10.2.0.192.in-addr.arpa", "PTR"), ("1.0.0.127.in-addr.arpa", "PTR"),
    ("nx.good.test", "TXT"), ("nx.good.test", "A"), ("mx.good.test", "TXT"),
    ("good.test", "CAA"), ("soft.test", "CAA"), ("_submission._tcp.good.test", "SRV"),
    ("good.test", "DS"), ("good.test", "DNSKEY"), ("_dmarc.nospf.test", "TXT"),
    ("_25._tcp.mx.good.test", "TLSA"),
]


def probe(server, name, rdtype):
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode

    q = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
    q.flags |= dns.flags.RD
    ip, port = hostport(server)
    try:
        r = dns.query.udp(q, ip, port=port, timeout=3)
    except Exception as e:
        return "no answer (%s)" % type(e).__name__
    rcode = dns.rcode.to_text(r.rcode())
    ans = []
    for rrset in r.answer:
        for rd in rrset:
            if rrset.rdtype == 16:  # TXT: the strings one by one, as published
                data = "+".join(
                    '"%s"(%d)' % (x.decode()[:20] + ("..." if len(x) > 20 else ""), len(x))
                    for x in rd.strings)
            else:
                data = rd.to_text()
            ans.append("%s %s %s" % (rrset.name.to_text(omit_final_dot=True),
                                     dns.rdatatype.to_text(rrset.rdtype), data))
    out = rcode + ": " + ("; ".join(ans) if ans else "(no answer)")
    if r.rcode() == dns.rcode.NXDOMAIN or (r.rcode() == dns.rcode.NOERROR and not r.answer):
        soa = [x for x in r.authority if x.rdtype == 6]
        out += " | authority SOA %s" % (soa[0].name.to_text(omit_final_dot=True) if soa else "MISSING")
    return out


def cmd_probe(nsd, fe, out, ctl):
    for name, rdtype in PROBES:
        a = probe(nsd, name, rdtype)
        before = nsd_queries(ctl)
        b = probe(fe, name, rdtype)
        time.sleep(0.2)  # background work the question started (validation, prefetch) counts too
        after = nsd_queries(ctl)
        q = after - before if None not in (before, after) else "-"
        if rdtype == "TLSA" and a != b:
            # TLSA is answered only with a DNSSEC status (RFC 7672): an unsigned zone's TLSA
            # depends on the trust anchor: these private zones sit under a `test.` no root anchor
            # covers, so validation cannot prove them insecure; shown, not compared.
            row(out, "front-end (dnspython)", "%s %s (no anchor covers test.)" % (name, rdtype), a, b,
                queries=q, verdict="info")
            continue
        row(out, "front-end (dnspython)", "%s %s" % (name, rdtype), a, b, queries=q)


def find_raw(obj):
    """The `raw` string of a socket answer, wherever the answer carries it; None if absent."""
    if isinstance(obj, dict):
        if isinstance(obj.get("raw"), str):
            return obj["raw"]
        for v in obj.values():
            r = find_raw(v)
            if r is not None:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = find_raw(v)
            if r is not None:
                return r
    return None


def cmd_dkimpy(nsd, fe, sock, d, out, ctl):
    import dkim
    import dns.resolver
    from mailpolicy import Client

    with open(os.path.join(d, "signed.eml"), "rb") as f:
        signed = f.read()
    with open(os.path.join(d, "tampered.eml"), "rb") as f:
        tampered = f.read()

    def dnspython_func(server):
        ip, port = hostport(server)

        def f(name, timeout=5):
            r = use_resolver(ip, port)
            try:
                ans = r.resolve(name.decode().rstrip("."), "TXT")
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return None
            return b"".join(b"".join(rr.strings) for rr in ans)

        return f

    client = Client(sock)
    notes = []

    def socket_func(name, timeout=5):
        labels = name.decode().rstrip(".").split(".")
        i = labels.index("_domainkey")
        selector, domain = ".".join(labels[:i]), ".".join(labels[i + 1 :])
        answer = client.dkim_key(selector, domain)
        raw = find_raw(answer)
        if raw is None:
            notes.append("the dkim_key answer has no `raw` field: %s" % json.dumps(answer)[:300])
            raise KeyError("raw")
        return raw.encode()

    def verify(msg, func):
        try:
            return "pass" if dkim.verify(msg, dnsfunc=func) else "fail"
        except Exception as e:
            return "error: %r" % e

    q_start = nsd_queries(ctl)
    direct_ok = verify(signed, dnspython_func(nsd))
    direct_bad = verify(tampered, dnspython_func(nsd))
    before = nsd_queries(ctl)
    sock_ok = verify(signed, socket_func)
    sock_bad = verify(tampered, socket_func)
    after = nsd_queries(ctl)
    q = "-"
    if None not in (q_start, before, after):
        q = "both messages: NSD-direct %d; via %d" % (before - q_start, after - before)
    row(out, "dkimpy (dnsfunc = socket dkim_key raw)", "signed message", direct_ok, sock_ok,
        queries=q, equal=(direct_ok == sock_ok == "pass"))
    row(out, "dkimpy (dnsfunc = socket dkim_key raw)", "tampered copy", direct_bad, sock_bad,
        equal=(direct_bad == sock_bad == "fail"))
    # the comparison the brief allows while `raw` is missing: dnspython against the front-end
    fe_ok = verify(signed, dnspython_func(fe))
    fe_bad = verify(tampered, dnspython_func(fe))
    row(out, "dkimpy (dnsfunc = dnspython at front-end)", "signed message", direct_ok, fe_ok,
        equal=(direct_ok == fe_ok == "pass"))
    row(out, "dkimpy (dnsfunc = dnspython at front-end)", "tampered copy", direct_bad, fe_bad,
        equal=(direct_bad == fe_bad == "fail"))
    client.close()
    for n in dict.fromkeys(notes):
        print("dkimpy: " + n)


def cmd_report(tsv, md, seconds, header):
    rows = []
    with open(tsv) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 6:
                rows.append(parts)
    cols = ["filter", "case", "NSD-direct", "via mailpolicyd", "equal?", "upstream queries"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(c if c else " " for c in r) + " |")
    failed = [r for r in rows if r[4] not in ("yes", "info")]
    compared = [r for r in rows if r[4] != "info"]
    summary = "%d comparisons, %d failed; run time %s s" % (len(compared), len(failed), seconds)
    table = "\n".join(lines)
    print(table)
    print(summary)
    with open(header) as f:
        head = f.read()
    with open(md, "w") as f:
        f.write(head.rstrip("\n") + "\n\n" + summary + ".\n\n" + table + "\n")
        if failed:
            f.write("\n## Failed comparisons\n\n")
            for r in failed:
                f.write("- **%s / %s**: NSD-direct `%s`, via mailpolicyd `%s`\n" % (r[0], r[1], r[2], r[3]))
    if not rows:
        print("no results at all", file=sys.stderr)
        return 1
    return 1 if failed else 0


def main(argv):
    cmd = argv[1]
    ctl = os.environ.get("INTEG_NSD_CONTROL", "")
    if cmd == "zone":
        write_zones(argv[2])
    elif cmd == "sign":
        write_messages(argv[2])
    elif cmd == "pyspf":
        cmd_pyspf(argv[2], argv[3], argv[4], argv[5], ctl)
    elif cmd == "probe":
        cmd_probe(argv[2], argv[3], argv[4], ctl)
    elif cmd == "checkdmarc":
        cmd_checkdmarc(argv[2], argv[3], argv[4], ctl)
    elif cmd == "dkimpy":
        cmd_dkimpy(argv[2], argv[3], argv[4], argv[5], argv[6], ctl)
    elif cmd == "report":
        return cmd_report(argv[2], argv[3], argv[4], argv[5])
    elif cmd == "summarize-rspamd":
        # rspamc -j output -> sorted symbol names and the action
        data = json.load(open(argv[2]))
        syms = sorted((data.get("symbols") or {}).keys())
        print(json.dumps({"action": data.get("action"), "symbols": syms}))
    else:
        print("unknown subcommand " + cmd, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
