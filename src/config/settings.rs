//! The one table of settings ([`SETTINGS`]): section, key, type, default and help of each,
//! and what is derived from it: the environment names, the commented default file, the
//! defaults as TOML values and the reading of a text (environment, flag) as a setting's type.

use std::collections::BTreeMap;

/// What a setting holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ty {
    Str,
    /// A name or a number: a string, or an integer (kept as given).
    StrOrInt,
    Int,
    Bool,
    StrList,
    IntList,
}

/// One setting: section, key, type, default (as TOML), help.
pub(super) struct Setting {
    pub(super) section: &'static str,
    pub(super) key: &'static str,
    pub(super) ty: Ty,
    default: &'static str,
    help: &'static str,
}

const fn s(
    section: &'static str,
    key: &'static str,
    ty: Ty,
    default: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        section,
        key,
        ty,
        default,
        help,
    }
}

/// Every setting, in the order the default file lists them.
pub(super) const SETTINGS: &[Setting] = &[
    s(
        "socket",
        "path",
        Ty::Str,
        "\"\"",
        "Unix socket path. Empty: $XDG_RUNTIME_DIR/mailpolicyd.sock, else /run/mailpolicyd/mailpolicyd.sock, else a temporary directory (logged).",
    ),
    s(
        "socket",
        "mode",
        Ty::Str,
        "\"0660\"",
        "Socket file mode, octal.",
    ),
    s(
        "socket",
        "group",
        Ty::StrOrInt,
        "\"\"",
        "Group of the socket file: a group name (\"postfix\", \"_rspamd\", \"opendkim\") or a numeric gid, looked up at startup (an unknown name is a configuration error). The socket is chowned to it (its owner unchanged) before socket.mode is applied, so with mode \"0660\" that group's members can connect; the daemon must be root or a member of the group. Empty: the daemon's own group.",
    ),
    s(
        "socket",
        "max_connections",
        Ty::Int,
        "1024",
        "Connections served at once; each has a thread of its own (512 KiB stack, mostly untouched), which counts against a container's pids limit.",
    ),
    s(
        "socket",
        "max_inflight",
        Ty::Int,
        "256",
        "Requests waiting on upstream per connection before it stops reading.",
    ),
    s(
        "socket",
        "bulk_batch",
        Ty::Int,
        "8",
        "A connection whose reads bring at least this many requests each on average (over 256 requests) keeps the server busy on its own: while connections that ask one question at a time are open, its thread is demoted to socket.bulk_nice for the rest of the connection, so they are served first when the CPU is contended. 0: never.",
    ),
    s(
        "socket",
        "bulk_nice",
        Ty::Int,
        "10",
        "Nice value (1..=19) of a demoted connection's thread. Only ever raised: an unprivileged process cannot lower it again.",
    ),
    s(
        "socket",
        "idle_timeout_s",
        Ty::Int,
        "300",
        "Seconds a connection may stay idle (no request) or in the middle of a frame, or stuck writing to a client that does not read, before it is closed.",
    ),
    s(
        "socket",
        "max_pending_bytes",
        Ty::Int,
        "4194304",
        "Answers not yet sent to one connection, in bytes: past this the connection is not read until its client has taken its answers.",
    ),
    s(
        "socket",
        "allow_uids",
        Ty::IntList,
        "[]",
        "Peer UIDs allowed (SO_PEERCRED); with allow_gids empty too, any peer the file mode admits.",
    ),
    s(
        "socket",
        "allow_gids",
        Ty::IntList,
        "[]",
        "Peer GIDs allowed.",
    ),
    s(
        "upstream",
        "servers",
        Ty::StrList,
        "[]",
        "Recursive resolvers, \"IP:PORT\". Empty: the nameservers of /etc/resolv.conf.",
    ),
    s(
        "upstream",
        "timeout_ms",
        Ty::Int,
        "2000",
        "Per-attempt upstream timeout.",
    ),
    s(
        "upstream",
        "attempts",
        Ty::Int,
        "2",
        "Sends per upstream query, the first included: a query that gets no answer fails with timeout after at most timeout_ms × attempts (a DNSSEC-validated TLSA lookup, which also fetches the DNSKEY/DS chain, after at most 3 × that).",
    ),
    s(
        "dnssec",
        "mode",
        Ty::Str,
        "\"validate\"",
        "Where the dnssec status of TLSA answers (and, in upstream_ad, DKIM key answers) comes from. \"validate\": mailpolicyd validates from the trust anchor, asking the upstream for DNSKEY/DS (bounded: at most 30 upstream queries per validating question, NS/DS/DNSKEY answers kept for their TTL). \"upstream_ad\": queries carry DO and AD and an answer is secure exactly when the upstream set AD (insecure otherwise), a SERVFAIL is dnssec_bogus only with an Extended DNS Error 6-12; only for a trusted validating resolver on the same host or pod (Unbound, Knot, CoreDNS with dnssec). \"off\": every answer indeterminate, TLSA never usable for DANE.",
    ),
    s(
        "dnssec",
        "trust_anchor",
        Ty::Str,
        "\"\"",
        "File of DNSKEY or DS records in zone-file presentation format (as Unbound's trust-anchor-file; \";\" comments, \"( )\" continuations), the keys validation starts from in mode \"validate\"; it replaces the IANA root anchors. For a DS record the owner's DNSKEY RRset is fetched once, before the first validated question, and the keys it matches are anchored. Empty: the IANA root anchors (KSK-2017 and KSK-2024).",
    ),
    s(
        "cache",
        "max_bytes",
        Ty::Int,
        "268435456",
        "Cache bound in bytes (weighted).",
    ),
    s(
        "cache",
        "positive_min_ttl",
        Ty::Int,
        "30",
        "Positive TTL floor, seconds.",
    ),
    s(
        "cache",
        "positive_max_ttl",
        Ty::Int,
        "86400",
        "Positive TTL ceiling, seconds.",
    ),
    s(
        "cache",
        "negative_min_ttl",
        Ty::Int,
        "30",
        "Negative TTL floor, seconds.",
    ),
    s(
        "cache",
        "negative_max_ttl",
        Ty::Int,
        "3600",
        "Negative TTL ceiling, seconds.",
    ),
    s(
        "cache",
        "prefetch_percent",
        Ty::Int,
        "10",
        "A hit with less than this percentage of its TTL left is refreshed in the background.",
    ),
    s(
        "cache",
        "stale_window",
        Ty::Int,
        "86400",
        "Seconds past expiry an entry may be served when upstream fails (RFC 8767).",
    ),
    s(
        "cache",
        "stale_retry",
        Ty::Int,
        "30",
        "Seconds between refresh attempts of a stale entry.",
    ),
    s(
        "cache",
        "client_timeout_ms",
        Ty::Int,
        "400",
        "How long a client waits for a refresh before the stale answer is served.",
    ),
    s(
        "cache",
        "failure_ttl_s",
        Ty::Int,
        "5",
        "Seconds an upstream failure (SERVFAIL, REFUSED, timeout, DNSSEC bogus) is remembered per name and answered as that error without asking again (RFC 9520), 1..=300.",
    ),
    s(
        "dmarc",
        "discovery",
        Ty::Str,
        "\"treewalk\"",
        "Organizational domain: \"treewalk\" (RFC 9989), \"psl\" (RFC 7489) or \"both\".",
    ),
    s(
        "dmarc",
        "nxdomain_cut",
        Ty::Bool,
        "false",
        "RFC 8020: answer names under a cached NXDOMAIN without asking.",
    ),
    s(
        "dmarc",
        "psl_file",
        Ty::Str,
        "\"\"",
        "A public_suffix_list.dat to use instead of the compiled-in list.",
    ),
    s(
        "limits",
        "per_second",
        Ty::Int,
        "50",
        "Upstream queries per second per organizational domain.",
    ),
    s(
        "limits",
        "burst",
        Ty::Int,
        "100",
        "Burst allowance per organizational domain.",
    ),
    s(
        "limits",
        "wildcard_min_names",
        Ty::Int,
        "100",
        "Distinct subdomains before an organization can be marked wildcard.",
    ),
    s(
        "limits",
        "wildcard_identical_percent",
        Ty::Int,
        "95",
        "Share of byte-identical answers that marks it.",
    ),
    s(
        "limits",
        "wildcard_window",
        Ty::Int,
        "600",
        "Observation window, seconds.",
    ),
    s(
        "limits",
        "wildcard_mark",
        Ty::Int,
        "3600",
        "How long a wildcard mark lasts, seconds.",
    ),
    s(
        "admin",
        "listen",
        Ty::Str,
        "\"127.0.0.1:9253\"",
        "HTTP /live, /ready, /metrics. Empty: off.",
    ),
    s(
        "admin",
        "max_connections",
        Ty::Int,
        "64",
        "Admin HTTP connections open at once; a connection over it is closed at once.",
    ),
    s(
        "admin",
        "header_timeout_s",
        Ty::Int,
        "5",
        "Seconds an admin connection has to send a request's headers.",
    ),
    s(
        "admin",
        "idle_timeout_s",
        Ty::Int,
        "5",
        "Seconds an admin connection may go without reading or writing anything before it is closed.",
    ),
    s(
        "dns",
        "listen",
        Ty::Str,
        "\"\"",
        "DNS front-end address, e.g. \"127.0.0.1:5300\". Empty: off.",
    ),
    s(
        "dns",
        "allow_non_loopback",
        Ty::Bool,
        "false",
        "Allow the DNS front-end on a non-loopback address (an open resolver risk).",
    ),
    s(
        "dns",
        "forward_other_types",
        Ty::Bool,
        "true",
        "Forward every type other than TXT and TLSA (A, AAAA, MX, PTR, NS, SOA, CNAME, DS, SRV, CAA, ...) to the upstream, cached by TTL; false: REFUSED.",
    ),
    s(
        "postfix_policy",
        "socket",
        Ty::Str,
        "\"\"",
        "Unix socket for Postfix's SMTPD policy delegation protocol (check_policy_service unix:...; SPF at RCPT time). Postfix's smtpd runs chrooted by default: a socket in its queue directory's private/ (e.g. /var/spool/postfix/private/mailpolicyd) is reached as unix:private/mailpolicyd. Empty: off.",
    ),
    s(
        "postfix_policy",
        "mode",
        Ty::Str,
        "\"0666\"",
        "File mode of the policy socket, octal (private/ itself is only reachable by postfix and root).",
    ),
    s(
        "postfix_policy",
        "listen",
        Ty::Str,
        "\"\"",
        "A loopback TCP address for the policy protocol (check_policy_service inet:127.0.0.1:PORT), e.g. \"127.0.0.1:10031\". Empty: off.",
    ),
    s(
        "postfix_policy",
        "mail_from_reject",
        Ty::Str,
        "\"fail\"",
        "SPF results of the MAIL FROM identity answered 550 5.7.23: \"fail\" (fail only), \"softfail\" (fail and softfail) or \"never\".",
    ),
    s(
        "postfix_policy",
        "helo_reject",
        Ty::Str,
        "\"fail\"",
        "The same for the HELO identity, checked first (RFC 7208 2.3; a HELO that is not a domain name gives none): \"fail\", \"softfail\" or \"never\".",
    ),
    s(
        "postfix_policy",
        "temperror",
        Ty::Str,
        "\"defer\"",
        "A temperror (a DNS failure, or past timeout_ms): \"defer\" (451 4.7.24) or \"dunno\".",
    ),
    s(
        "postfix_policy",
        "permerror",
        Ty::Str,
        "\"dunno\"",
        "A permerror (a broken SPF record): \"dunno\" or \"reject\" (550 5.7.24).",
    ),
    s(
        "postfix_policy",
        "prepend",
        Ty::Bool,
        "true",
        "When not rejecting, prepend the Received-SPF: header of the MAIL FROM identity (RFC 7208 9.1), once per message.",
    ),
    s(
        "postfix_policy",
        "skip_sasl",
        Ty::Bool,
        "true",
        "Requests with a sasl_username (authenticated submission) are not checked (DUNNO).",
    ),
    s(
        "postfix_policy",
        "skip_networks",
        Ty::StrList,
        "[]",
        "Client addresses not checked (DUNNO), as CIDRs or addresses, e.g. [\"192.0.2.0/24\", \"2001:db8::/32\"] for a secondary MX or relays.",
    ),
    s(
        "postfix_policy",
        "timeout_ms",
        Ty::Int,
        "10000",
        "Budget of one policy request in milliseconds; past it the answer follows temperror. Keep it below Postfix's smtpd_policy_service_timeout (100 s).",
    ),
    s(
        "lifecycle",
        "snapshot",
        Ty::Str,
        "\"\"",
        "Cache snapshot file, written on shutdown and loaded on start. Empty: none.",
    ),
    s(
        "lifecycle",
        "drain_timeout",
        Ty::Int,
        "10",
        "Seconds to let in-flight requests finish on SIGTERM (below Kubernetes' 30 s grace).",
    ),
    s(
        "lifecycle",
        "snapshot_interval",
        Ty::Int,
        "300",
        "Seconds between snapshot writes while running (temp file, then rename), so a crash loses at most this much; 0: only on shutdown.",
    ),
    s(
        "log",
        "format",
        Ty::Str,
        "\"human\"",
        "\"human\" or \"json\".",
    ),
    s(
        "log",
        "level",
        Ty::Str,
        "\"info\"",
        "A tracing filter, e.g. \"info\" or \"mailpolicyd=debug\".",
    ),
];

/// Environment variable for a setting: `MAILPOLICYD_<SECTION>_<KEY>`; the common ones also have
/// short names matching the flags (`MAILPOLICYD_SOCKET`, `MAILPOLICYD_UPSTREAM`,
/// `MAILPOLICYD_ADMIN`, `MAILPOLICYD_DNS_LISTEN`, `MAILPOLICYD_SNAPSHOT`,
/// `MAILPOLICYD_LOG_FORMAT`).
pub(super) fn env_names(st: &Setting) -> Vec<String> {
    let mut v = vec![format!(
        "MAILPOLICYD_{}_{}",
        st.section.to_uppercase(),
        st.key.to_uppercase()
    )];
    let short = match (st.section, st.key) {
        ("socket", "path") => Some("MAILPOLICYD_SOCKET"),
        ("upstream", "servers") => Some("MAILPOLICYD_UPSTREAM"),
        ("admin", "listen") => Some("MAILPOLICYD_ADMIN"),
        ("dns", "listen") => Some("MAILPOLICYD_DNS_LISTEN"),
        ("lifecycle", "snapshot") => Some("MAILPOLICYD_SNAPSHOT"),
        _ => None,
    };
    if let Some(s) = short {
        v.push(s.to_owned());
    }
    v
}

/// The default configuration file, commented.
pub fn default_file() -> String {
    let mut out = String::from(
        "# mailpolicyd configuration. Every key is optional; the values below are the defaults.\n\
         # Precedence: this file < MAILPOLICYD_<SECTION>_<KEY> environment variables < flags.\n",
    );
    let mut section = "";
    for st in SETTINGS {
        if st.section != section {
            section = st.section;
            out.push_str(&format!("\n[{section}]\n"));
        }
        out.push_str(&format!(
            "# {}\n# env: {}\n{} = {}\n",
            st.help,
            env_names(st).join(", "),
            st.key,
            st.default
        ));
    }
    out
}

pub(super) type Values = BTreeMap<(&'static str, &'static str), toml::Value>;

pub(super) fn parse_default(st: &Setting) -> toml::Value {
    let doc: toml::Table = format!("v = {}", st.default).parse().unwrap_or_default();
    doc.get("v")
        .cloned()
        .unwrap_or(toml::Value::String(String::new()))
}

pub(super) fn type_ok(ty: Ty, v: &toml::Value) -> bool {
    match (ty, v) {
        (Ty::Str | Ty::StrOrInt, toml::Value::String(_))
        | (Ty::Int | Ty::StrOrInt, toml::Value::Integer(_))
        | (Ty::Bool, toml::Value::Boolean(_)) => true,
        (Ty::StrList, toml::Value::Array(a)) => a.iter().all(|x| x.is_str()),
        (Ty::IntList, toml::Value::Array(a)) => a.iter().all(|x| x.is_integer()),
        _ => false,
    }
}

/// A string from the environment or a flag, read as the setting's type.
pub(super) fn from_text(ty: Ty, text: &str) -> Option<toml::Value> {
    match ty {
        Ty::Str | Ty::StrOrInt => Some(toml::Value::String(text.to_owned())),
        Ty::Int => text.trim().parse().ok().map(toml::Value::Integer),
        Ty::Bool => match text.trim() {
            "true" | "1" | "yes" => Some(toml::Value::Boolean(true)),
            "false" | "0" | "no" => Some(toml::Value::Boolean(false)),
            _ => None,
        },
        Ty::StrList => Some(toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        )),
        Ty::IntList => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok().map(toml::Value::Integer))
            .collect::<Option<Vec<_>>>()
            .map(toml::Value::Array),
    }
}
pub(super) fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::Str => "string",
        Ty::StrOrInt => "string or integer",
        Ty::Int => "integer",
        Ty::Bool => "boolean",
        Ty::StrList => "list of strings",
        Ty::IntList => "list of integers",
    }
}
