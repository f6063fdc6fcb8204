//! Configuration: an embedded default, overridden by a TOML file, then `MAILPOLICYD_*`
//! environment variables, then command-line flags. One table of settings ([`SETTINGS`])
//! drives the defaults, the validation, the environment names and the commented default file
//! (`mailpolicyd config --print-default`), so they cannot drift apart.
//!
//! Every problem is collected (unknown keys, wrong types, bad addresses, out-of-range values)
//! and reported together; the daemon then exits 64 (EX_USAGE), as linkerd2-proxy does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::orgdomain::SuffixList;
use crate::resolve::{CacheConfig, DiscoveryMode, LimitConfig, ResolverConfig, UpstreamConfig};
use crate::serve::SocketConfig;
use crate::serve::admin::AdminConfig;

/// What a setting holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Str,
    Int,
    Bool,
    StrList,
    IntList,
}

/// One setting: section, key, type, default (as TOML), help.
struct Setting {
    section: &'static str,
    key: &'static str,
    ty: Ty,
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
const SETTINGS: &[Setting] = &[
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
        "false",
        "Answer types other than TXT and TLSA by forwarding; otherwise REFUSED.",
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

/// The fully validated configuration.
#[derive(Clone)]
pub struct Config {
    /// Socket path (resolved; see [`default_socket_path`]).
    pub socket: PathBuf,
    /// Socket server settings.
    pub socket_cfg: SocketConfig,
    /// Resolver settings.
    pub resolver: ResolverConfig,
    /// Admin listen address, if on.
    pub admin: Option<SocketAddr>,
    /// Admin endpoint limits.
    pub admin_cfg: AdminConfig,
    /// DNS front-end address, if on.
    pub dns_listen: Option<SocketAddr>,
    /// Forward DNS types other than TXT/TLSA.
    pub dns_forward: bool,
    /// Snapshot path, if any.
    pub snapshot: Option<PathBuf>,
    /// How often the snapshot is written while running (zero: only on shutdown).
    pub snapshot_interval: Duration,
    /// `json` logs.
    pub log_json: bool,
    /// The tracing filter.
    pub log_level: String,
    /// Where the socket path came from, for the start-up log line.
    pub socket_note: Option<String>,
    /// Harmless oddities to log at start (unknown `MAILPOLICYD_*` variables).
    pub warnings: Vec<String>,
}

/// Command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--socket`.
    pub socket: Option<String>,
    /// `--upstream`, repeatable.
    pub upstream: Vec<String>,
    /// `--admin`.
    pub admin: Option<String>,
    /// `--dns-listen`.
    pub dns_listen: Option<String>,
    /// `--snapshot`.
    pub snapshot: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
}

/// Environment variable for a setting: `MAILPOLICYD_<SECTION>_<KEY>`; the common ones also have
/// short names matching the flags (`MAILPOLICYD_SOCKET`, `MAILPOLICYD_UPSTREAM`,
/// `MAILPOLICYD_ADMIN`, `MAILPOLICYD_DNS_LISTEN`, `MAILPOLICYD_SNAPSHOT`,
/// `MAILPOLICYD_LOG_FORMAT`).
fn env_names(st: &Setting) -> Vec<String> {
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

type Values = BTreeMap<(&'static str, &'static str), toml::Value>;

fn parse_default(st: &Setting) -> toml::Value {
    let doc: toml::Table = format!("v = {}", st.default).parse().unwrap_or_default();
    doc.get("v")
        .cloned()
        .unwrap_or(toml::Value::String(String::new()))
}

fn type_ok(ty: Ty, v: &toml::Value) -> bool {
    match (ty, v) {
        (Ty::Str, toml::Value::String(_))
        | (Ty::Int, toml::Value::Integer(_))
        | (Ty::Bool, toml::Value::Boolean(_)) => true,
        (Ty::StrList, toml::Value::Array(a)) => a.iter().all(|x| x.is_str()),
        (Ty::IntList, toml::Value::Array(a)) => a.iter().all(|x| x.is_integer()),
        _ => false,
    }
}

/// A string from the environment or a flag, read as the setting's type.
fn from_text(ty: Ty, text: &str) -> Option<toml::Value> {
    match ty {
        Ty::Str => Some(toml::Value::String(text.to_owned())),
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

/// Loads the configuration. `file` is the TOML text (if a file was given), `env` the
/// environment (a map, so tests never mutate the process environment), `runtime_dir` the
/// value of `XDG_RUNTIME_DIR` if set. Returns every problem found.
pub fn load(
    file: Option<&str>,
    env: &BTreeMap<String, String>,
    flags: &Flags,
) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut values: Values = SETTINGS
        .iter()
        .map(|st| ((st.section, st.key), parse_default(st)))
        .collect();
    let find = |section: &str, key: &str| {
        SETTINGS
            .iter()
            .find(|s| s.section == section && s.key == key)
    };

    if let Some(text) = file {
        match text.parse::<toml::Table>() {
            Err(e) => problems.push(format!("config file: {e}")),
            Ok(table) => {
                for (section, body) in &table {
                    let Some(body) = body.as_table() else {
                        problems.push(format!("config file: {section} must be a [section]"));
                        continue;
                    };
                    for (key, v) in body {
                        match find(section, key) {
                            None => problems
                                .push(format!("config file: unknown setting {section}.{key}")),
                            Some(st) if !type_ok(st.ty, v) => problems.push(format!(
                                "config file: {section}.{key} = {v} is not a {}",
                                ty_name(st.ty)
                            )),
                            Some(st) => {
                                values.insert((st.section, st.key), v.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    for (name, text) in env.iter().filter(|(k, _)| k.starts_with("MAILPOLICYD_")) {
        let Some(st) = SETTINGS
            .iter()
            .find(|st| env_names(st).iter().any(|n| n == name))
        else {
            // Not an error: other tools share the prefix (the test harness's
            // MAILPOLICYD_CONFORMANCE_DIR, say). Reported so a typo is still visible.
            warnings.push(format!(
                "environment: {name} is not a mailpolicyd setting; ignored"
            ));
            continue;
        };
        match from_text(st.ty, text) {
            Some(v) => {
                values.insert((st.section, st.key), v);
            }
            None => problems.push(format!(
                "environment: {name}={text:?} is not a {}",
                ty_name(st.ty)
            )),
        }
    }
    let mut flag = |section: &'static str, key: &'static str, v: toml::Value| {
        values.insert((section, key), v);
    };
    if let Some(v) = &flags.socket {
        flag("socket", "path", toml::Value::String(v.clone()));
    }
    if !flags.upstream.is_empty() {
        flag(
            "upstream",
            "servers",
            toml::Value::Array(
                flags
                    .upstream
                    .iter()
                    .map(|s| toml::Value::String(s.clone()))
                    .collect(),
            ),
        );
    }
    if let Some(v) = &flags.admin {
        flag("admin", "listen", toml::Value::String(v.clone()));
    }
    if let Some(v) = &flags.dns_listen {
        flag("dns", "listen", toml::Value::String(v.clone()));
    }
    if let Some(v) = &flags.snapshot {
        flag("lifecycle", "snapshot", toml::Value::String(v.clone()));
    }
    if let Some(v) = &flags.log_format {
        flag("log", "format", toml::Value::String(v.clone()));
    }
    let mut cfg = build(
        &values,
        env.get("XDG_RUNTIME_DIR").map(String::as_str),
        &mut problems,
    );
    cfg.warnings = warnings;
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::Str => "string",
        Ty::Int => "integer",
        Ty::Bool => "boolean",
        Ty::StrList => "list of strings",
        Ty::IntList => "list of integers",
    }
}

/// Reads and parses a `public_suffix_list.dat` (the config's `dmarc.psl_file`, the CLI's
/// `--psl`); `orgdomain` stays pure, so the file I/O lives here.
pub fn read_suffix_list(path: &std::path::Path) -> Result<SuffixList, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    SuffixList::parse(&text).map_err(|e| e.to_string())
}

/// The socket path used when none is configured, and a note when it fell back to a temporary
/// directory.
pub fn default_socket_path(runtime_dir: Option<&str>) -> (PathBuf, Option<String>) {
    if let Some(dir) = runtime_dir.filter(|d| !d.is_empty()) {
        return (PathBuf::from(dir).join("mailpolicyd.sock"), None);
    }
    let run = PathBuf::from("/run/mailpolicyd");
    if std::fs::create_dir_all(&run).is_ok() && writable(&run) {
        return (run.join("mailpolicyd.sock"), None);
    }
    let tmp = std::env::temp_dir().join(format!("mailpolicyd-{}", std::process::id()));
    let note = format!(
        "no $XDG_RUNTIME_DIR and /run/mailpolicyd is not writable: socket in {}",
        tmp.display()
    );
    (tmp.join("mailpolicyd.sock"), Some(note))
}

fn writable(dir: &std::path::Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

fn build(v: &Values, runtime_dir: Option<&str>, problems: &mut Vec<String>) -> Config {
    let str_ = |s: &str, k: &str| {
        v.iter()
            .find(|((a, b), _)| *a == s && *b == k)
            .and_then(|(_, x)| x.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let int = |s: &str, k: &str| {
        v.iter()
            .find(|((a, b), _)| *a == s && *b == k)
            .and_then(|(_, x)| x.as_integer())
            .unwrap_or(0)
    };
    let boolean = |s: &str, k: &str| {
        v.iter()
            .find(|((a, b), _)| *a == s && *b == k)
            .and_then(|(_, x)| x.as_bool())
            .unwrap_or(false)
    };
    let list = |s: &str, k: &str| -> Vec<toml::Value> {
        v.iter()
            .find(|((a, b), _)| *a == s && *b == k)
            .and_then(|(_, x)| x.as_array().cloned())
            .unwrap_or_default()
    };
    let mut positive = |s: &str, k: &str, min: i64| -> u64 {
        let n = int(s, k);
        if n < min {
            problems.push(format!("{s}.{k} = {n} must be at least {min}"));
        }
        n.max(min) as u64
    };
    let max_connections = positive("socket", "max_connections", 1) as usize;
    let max_inflight = positive("socket", "max_inflight", 1) as usize;
    let bulk_batch = positive("socket", "bulk_batch", 0) as usize;
    let bulk_nice = positive("socket", "bulk_nice", 1);
    let timeout_ms = positive("upstream", "timeout_ms", 1);
    let attempts = positive("upstream", "attempts", 1) as usize;
    let max_bytes = positive("cache", "max_bytes", 1024);
    let pos = (
        positive("cache", "positive_min_ttl", 0),
        positive("cache", "positive_max_ttl", 1),
    );
    let neg = (
        positive("cache", "negative_min_ttl", 0),
        positive("cache", "negative_max_ttl", 1),
    );
    let prefetch = positive("cache", "prefetch_percent", 0);
    let stale_window = positive("cache", "stale_window", 0);
    let stale_retry = positive("cache", "stale_retry", 0);
    let client_timeout = positive("cache", "client_timeout_ms", 1);
    let failure_ttl = positive("cache", "failure_ttl_s", 1);
    let per_second = positive("limits", "per_second", 1);
    let burst = positive("limits", "burst", 1);
    let wc_names = positive("limits", "wildcard_min_names", 2);
    let wc_pct = positive("limits", "wildcard_identical_percent", 1);
    let wc_window = positive("limits", "wildcard_window", 1);
    let wc_mark = positive("limits", "wildcard_mark", 1);
    let drain = positive("lifecycle", "drain_timeout", 0);
    let idle_timeout = positive("socket", "idle_timeout_s", 1);
    let max_pending_bytes = positive("socket", "max_pending_bytes", 1024) as usize;
    let admin_max_connections = positive("admin", "max_connections", 1) as usize;
    let admin_header_timeout = positive("admin", "header_timeout_s", 1);
    let admin_idle_timeout = positive("admin", "idle_timeout_s", 1);
    let snapshot_interval = positive("lifecycle", "snapshot_interval", 0);
    if failure_ttl > 300 {
        problems.push(format!(
            "cache.failure_ttl_s = {failure_ttl} must be at most 300 (RFC 9520: 5 minutes)"
        ));
    }
    if bulk_nice > 19 {
        problems.push(format!("socket.bulk_nice = {bulk_nice} must be at most 19"));
    }
    if prefetch > 100 || wc_pct > 100 {
        problems.push(
            "cache.prefetch_percent and limits.wildcard_identical_percent are percentages (0..100)"
                .into(),
        );
    }
    if pos.0 > pos.1 || neg.0 > neg.1 {
        problems.push("cache: a minimum TTL is above its maximum".into());
    }

    let mode_text = str_("socket", "mode");
    let mode = u32::from_str_radix(mode_text.trim_start_matches("0o"), 8).unwrap_or_else(|_| {
        problems.push(format!(
            "socket.mode = {mode_text:?} is not an octal file mode"
        ));
        0o660
    });
    let ids = |k: &str, problems: &mut Vec<String>| -> Vec<u32> {
        list("socket", k)
            .iter()
            .filter_map(
                |x| match x.as_integer().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) => Some(n),
                    None => {
                        problems.push(format!("socket.{k}: {x} is not a user or group id"));
                        None
                    }
                },
            )
            .collect()
    };
    let allow_uids = ids("allow_uids", problems);
    let allow_gids = ids("allow_gids", problems);

    let mut servers = Vec::new();
    for x in list("upstream", "servers") {
        let text = x.as_str().unwrap_or_default().to_owned();
        match text.parse::<SocketAddr>().or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        }) {
            Ok(a) => servers.push(a),
            Err(_) => problems.push(format!("upstream.servers: {text:?} is not IP:PORT")),
        }
    }
    let discovery = match str_("dmarc", "discovery").as_str() {
        "treewalk" => DiscoveryMode::TreeWalk,
        "psl" => DiscoveryMode::Psl,
        "both" => DiscoveryMode::Both,
        other => {
            problems.push(format!(
                "dmarc.discovery = {other:?} is not treewalk, psl or both"
            ));
            DiscoveryMode::TreeWalk
        }
    };
    let psl_file = str_("dmarc", "psl_file");
    let suffix_list = if psl_file.is_empty() {
        SuffixList::builtin()
    } else {
        match read_suffix_list(std::path::Path::new(&psl_file)) {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("dmarc.psl_file = {psl_file:?}: {e}"));
                SuffixList::builtin()
            }
        }
    };
    let addr = |s: &str, k: &str, problems: &mut Vec<String>| -> Option<SocketAddr> {
        let text = str_(s, k);
        if text.is_empty() {
            return None;
        }
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!("{s}.{k} = {text:?} is not IP:PORT"));
                None
            }
        }
    };
    let admin = addr("admin", "listen", problems);
    let dns_listen = addr("dns", "listen", problems);
    if let Some(a) = dns_listen
        && !a.ip().is_loopback()
        && !boolean("dns", "allow_non_loopback")
    {
        problems.push(format!(
            "dns.listen = {a} is not a loopback address; set dns.allow_non_loopback = true to serve it (beware of running an open resolver)"
        ));
    }
    let log_format = str_("log", "format");
    if log_format != "human" && log_format != "json" {
        problems.push(format!("log.format = {log_format:?} is not human or json"));
    }
    let socket_text = str_("socket", "path");
    let (socket, socket_note) = if socket_text.is_empty() {
        default_socket_path(runtime_dir)
    } else {
        (PathBuf::from(socket_text), None)
    };
    let snapshot = Some(str_("lifecycle", "snapshot"))
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);

    Config {
        socket,
        socket_note,
        warnings: Vec::new(),
        socket_cfg: SocketConfig {
            max_connections,
            max_inflight,
            bulk_batch,
            bulk_nice: bulk_nice.min(19) as i32,
            drain_timeout: Duration::from_secs(drain),
            idle_timeout: Duration::from_secs(idle_timeout),
            max_pending_bytes,
            mode,
            allow_uids,
            allow_gids,
        },
        resolver: ResolverConfig {
            upstream: UpstreamConfig {
                servers,
                timeout: Duration::from_millis(timeout_ms),
                attempts,
                trust_anchors: None,
            },
            cache: CacheConfig {
                max_bytes,
                positive_ttl: (Duration::from_secs(pos.0), Duration::from_secs(pos.1)),
                negative_ttl: (Duration::from_secs(neg.0), Duration::from_secs(neg.1)),
                prefetch_fraction: prefetch as f64 / 100.0,
                stale_window: Duration::from_secs(stale_window),
                stale_retry: Duration::from_secs(stale_retry),
                client_timeout: Duration::from_millis(client_timeout),
                failure_ttl: Duration::from_secs(failure_ttl.min(300)),
            },
            limits: LimitConfig {
                per_second: u32::try_from(per_second).unwrap_or(u32::MAX),
                burst: u32::try_from(burst).unwrap_or(u32::MAX),
                wildcard_min_names: wc_names as usize,
                wildcard_identical: wc_pct as f64 / 100.0,
                wildcard_window: Duration::from_secs(wc_window),
                wildcard_mark: Duration::from_secs(wc_mark),
                wildcard_max_orgs: 10_000,
            },
            discovery,
            nxdomain_cut: boolean("dmarc", "nxdomain_cut"),
            suffix_list: Arc::new(suffix_list),
        },
        admin,
        admin_cfg: AdminConfig {
            max_connections: admin_max_connections,
            header_timeout: Duration::from_secs(admin_header_timeout),
            idle_timeout: Duration::from_secs(admin_idle_timeout),
        },
        dns_listen,
        dns_forward: boolean("dns", "forward_other_types"),
        snapshot,
        snapshot_interval: Duration::from_secs(snapshot_interval),
        log_json: log_format == "json",
        log_level: str_("log", "level"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_default_file_is_the_default() {
        let text = default_file();
        let from_file = load(
            Some(&text),
            &env(&[("XDG_RUNTIME_DIR", "/tmp/x")]),
            &Flags::default(),
        )
        .unwrap();
        let none = load(
            None,
            &env(&[("XDG_RUNTIME_DIR", "/tmp/x")]),
            &Flags::default(),
        )
        .unwrap();
        assert_eq!(from_file.socket, none.socket);
        assert_eq!(from_file.socket, PathBuf::from("/tmp/x/mailpolicyd.sock"));
        assert_eq!(from_file.admin, Some("127.0.0.1:9253".parse().unwrap()));
        assert_eq!(from_file.resolver.cache.max_bytes, 256 << 20);
        assert_eq!(from_file.resolver.limits.per_second, 50);
        assert_eq!(from_file.socket_cfg.mode, 0o660);
        assert!(from_file.dns_listen.is_none());
        for st in SETTINGS {
            assert!(text.contains(&format!("\n{} = ", st.key)), "{}", st.key);
        }
    }

    #[test]
    fn failure_ttl_is_1_to_300_seconds() {
        let load_with = |v: &str| {
            load(
                None,
                &env(&[
                    ("XDG_RUNTIME_DIR", "/tmp/x"),
                    ("MAILPOLICYD_CACHE_FAILURE_TTL_S", v),
                ]),
                &Flags::default(),
            )
        };
        let default = load(
            None,
            &env(&[("XDG_RUNTIME_DIR", "/tmp/x")]),
            &Flags::default(),
        );
        assert_eq!(
            default.unwrap().resolver.cache.failure_ttl,
            Duration::from_secs(5)
        );
        for ok in [1, 300] {
            let c = load_with(&ok.to_string()).unwrap();
            assert_eq!(c.resolver.cache.failure_ttl, Duration::from_secs(ok));
        }
        for bad in ["0", "301"] {
            let problems = load_with(bad).err().expect(bad);
            assert!(
                problems.iter().any(|p| p.contains("cache.failure_ttl_s")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn precedence_file_env_flags() {
        let file = "[upstream]\nservers = [\"127.0.0.1:5301\"]\n[admin]\nlisten = \"127.0.0.1:1000\"\n[cache]\nmax_bytes = 2048\n";
        let e = env(&[
            ("MAILPOLICYD_ADMIN", "127.0.0.1:2000"),
            ("MAILPOLICYD_CACHE_MAX_BYTES", "4096"),
        ]);
        let flags = Flags {
            admin: Some("127.0.0.1:3000".into()),
            ..Flags::default()
        };
        let c = load(Some(file), &e, &flags).unwrap();
        assert_eq!(
            c.resolver.upstream.servers,
            vec!["127.0.0.1:5301".parse().unwrap()]
        );
        assert_eq!(
            c.admin,
            Some("127.0.0.1:3000".parse().unwrap()),
            "flag beats env beats file"
        );
        assert_eq!(c.resolver.cache.max_bytes, 4096, "env beats file");
        let c = load(Some(file), &e, &Flags::default()).unwrap();
        assert_eq!(c.admin, Some("127.0.0.1:2000".parse().unwrap()));
    }

    #[test]
    fn every_problem_is_listed() {
        let file = "[socket]\nmode = \"999\"\nbogus = 1\n[upstream]\nservers = [\"nope\"]\ntimeout_ms = \"fast\"\n[dmarc]\ndiscovery = \"magic\"\n";
        let e = env(&[
            ("MAILPOLICYD_LIMITS_BURST", "lots"),
            ("MAILPOLICYD_NOPE", "1"),
        ]);
        let flags = Flags {
            dns_listen: Some("192.0.2.1:53".into()),
            ..Flags::default()
        };
        let problems = load(Some(file), &e, &flags).err().unwrap();
        for want in [
            "socket.mode",
            "socket.bogus",
            "\"nope\"",
            "timeout_ms",
            "magic",
            "MAILPOLICYD_LIMITS_BURST",
            "loopback",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "missing {want}: {problems:#?}"
            );
        }
        assert!(problems.len() >= 7);
    }

    #[test]
    fn unknown_environment_variables_are_warnings() {
        let e = env(&[
            ("MAILPOLICYD_CONFORMANCE_DIR", "/x"),
            ("XDG_RUNTIME_DIR", "/tmp/x"),
        ]);
        let c = load(None, &e, &Flags::default()).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("MAILPOLICYD_CONFORMANCE_DIR"))
        );
    }

    #[test]
    fn bad_toml_is_a_problem() {
        assert!(load(Some("[socket\n"), &BTreeMap::new(), &Flags::default()).is_err());
    }
}
