//! From the layered values to the typed configuration: every range, address, mode and list
//! checked, every problem collected (never the first only).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::settings::Values;
use super::{Config, DaemonConfig, default_socket_path, read_suffix_list};
use crate::policy::orgdomain::SuffixList;
use crate::resolve::{
    CacheConfig, DiscoveryMode, DnssecMode, LimitConfig, ResolverConfig, UpstreamConfig,
};
use crate::serve::SocketConfig;
use crate::serve::admin::AdminConfig;
use crate::serve::postfix::PostfixConfig;
use crate::serve::postfix::decide::{Cidr, OnPermError, OnTempError, PolicySettings, RejectOn};

pub(super) fn build(v: &Values, runtime_dir: Option<&str>, problems: &mut Vec<String>) -> Config {
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
    let postfix_timeout = positive("postfix_policy", "timeout_ms", 1);
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

    let mode = octal_mode("socket.mode", &str_("socket", "mode"), 0o660, problems);
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
    let group = socket_group(
        v.iter()
            .find(|((a, b), _)| *a == "socket" && *b == "group")
            .map(|(_, x)| x),
        problems,
    );
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
    let discovery = choice(
        "dmarc.discovery",
        &str_("dmarc", "discovery"),
        &[
            ("treewalk", DiscoveryMode::TreeWalk),
            ("psl", DiscoveryMode::Psl),
            ("both", DiscoveryMode::Both),
        ],
        problems,
    );
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
    let dnssec_mode = choice(
        "dnssec.mode",
        &str_("dnssec", "mode"),
        &[
            ("validate", DnssecMode::Validate),
            ("upstream_ad", DnssecMode::UpstreamAd),
            ("off", DnssecMode::Off),
        ],
        problems,
    );
    let anchor_file = str_("dnssec", "trust_anchor");
    let trust_anchors = if anchor_file.is_empty() {
        None
    } else {
        match std::fs::read_to_string(&anchor_file) {
            Err(e) => {
                problems.push(format!(
                    "dnssec.trust_anchor = {anchor_file:?}: cannot be read: {e}"
                ));
                None
            }
            Ok(text) => match crate::policy::trust_anchor::parse(&text) {
                Ok(a) => Some(a),
                Err(e) => {
                    problems.push(format!("dnssec.trust_anchor = {anchor_file:?}: {e}"));
                    None
                }
            },
        }
    };
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
    let postfix = PostfixConfig {
        socket: Some(str_("postfix_policy", "socket"))
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        mode: octal_mode("postfix_policy.mode", &str_("postfix_policy", "mode"), 0o666, problems),
        listen: addr("postfix_policy", "listen", problems),
        policy: PolicySettings {
            mail_from_reject: reject_on("postfix_policy.mail_from_reject", &str_("postfix_policy", "mail_from_reject"), problems),
            helo_reject: reject_on("postfix_policy.helo_reject", &str_("postfix_policy", "helo_reject"), problems),
            temperror: choice(
                "postfix_policy.temperror",
                &str_("postfix_policy", "temperror"),
                &[("defer", OnTempError::Defer), ("dunno", OnTempError::Dunno)],
                problems,
            ),
            permerror: choice(
                "postfix_policy.permerror",
                &str_("postfix_policy", "permerror"),
                &[("dunno", OnPermError::Dunno), ("reject", OnPermError::Reject)],
                problems,
            ),
            prepend: boolean("postfix_policy", "prepend"),
            skip_sasl: boolean("postfix_policy", "skip_sasl"),
            skip_networks: list("postfix_policy", "skip_networks")
                .iter()
                .filter_map(|x| {
                    let text = x.as_str().unwrap_or_default();
                    Cidr::parse(text).or_else(|| {
                        problems.push(format!(
                            "postfix_policy.skip_networks: {text:?} is not an address or ADDRESS/PREFIX"
                        ));
                        None
                    })
                })
                .collect(),
            timeout: Duration::from_millis(postfix_timeout),
        },
        max_connections,
        idle_timeout: Duration::from_secs(idle_timeout),
        drain_timeout: Duration::from_secs(drain),
    };
    if let Some(a) = postfix.listen
        && !a.ip().is_loopback()
    {
        problems.push(format!(
            "postfix_policy.listen = {a} is not a loopback address (127.0.0.0/8 or ::1): the policy protocol has no authentication"
        ));
    }
    let snapshot = Some(str_("lifecycle", "snapshot"))
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);

    let daemon = DaemonConfig {
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
            group,
            allow_uids,
            allow_gids,
        },
        resolver: ResolverConfig {
            upstream: UpstreamConfig {
                servers,
                timeout: Duration::from_millis(timeout_ms),
                attempts,
                trust_anchors: trust_anchors.as_ref().map(|a| Arc::new(a.keys.clone())),
                anchor_owners: trust_anchors
                    .as_ref()
                    .map(|a| a.owners.clone())
                    .unwrap_or_default(),
                trust_anchor_ds: trust_anchors.map(|a| a.ds).unwrap_or_default(),
                dnssec: dnssec_mode,
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
        postfix,
        snapshot,
        snapshot_interval: Duration::from_secs(snapshot_interval),
    };
    Config {
        daemon,
        log_json: log_format == "json",
        log_level: str_("log", "level"),
    }
}

/// `socket.group`: `None` when empty; a numeric gid (an integer, or a string of digits) as it
/// is; a name looked up in the system's group database (`getgrnam_r`, so NSS sources such as
/// LDAP count too). An unknown name or a failed lookup is a problem naming the key.
fn socket_group(v: Option<&toml::Value>, problems: &mut Vec<String>) -> Option<u32> {
    let text = match v {
        None => return None,
        Some(toml::Value::Integer(n)) => {
            return u32::try_from(*n).ok().or_else(|| {
                problems.push(format!("socket.group = {n} is not a group id"));
                None
            });
        }
        Some(x) => x.as_str().unwrap_or_default().trim(),
    };
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok().or_else(|| {
            problems.push(format!("socket.group = {text:?} is not a group id"));
            None
        });
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        Ok(None) => {
            problems.push(format!(
                "socket.group = {text:?}: no such group (not in the system's group database)"
            ));
            None
        }
        Err(e) => {
            problems.push(format!(
                "socket.group = {text:?}: the group could not be looked up: {e}"
            ));
            None
        }
    }
}

/// The value of a setting that names one of `options` (the first is the default); another
/// name is a problem, "KEY = \"x\" is not a, b or c", and the default stands.
fn choice<T: Copy>(key: &str, value: &str, options: &[(&str, T)], problems: &mut Vec<String>) -> T {
    if let Some((_, v)) = options.iter().find(|(name, _)| *name == value) {
        return *v;
    }
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let (last, rest) = names.split_last().expect("at least one option");
    problems.push(format!(
        "{key} = {value:?} is not {} or {last}",
        rest.join(", ")
    ));
    options[0].1
}

/// An octal file mode setting (`0660`, `0o660`, `666`); another text, or a mode with bits
/// beyond 0o7777, is a problem naming `key`, and `default` stands.
fn octal_mode(key: &str, text: &str, default: u32, problems: &mut Vec<String>) -> u32 {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o7777 => m,
        _ => {
            problems.push(format!("{key} = {text:?} is not an octal file mode"));
            default
        }
    }
}

/// `mail_from_reject`, `helo_reject`: which SPF results are rejected.
fn reject_on(key: &str, value: &str, problems: &mut Vec<String>) -> RejectOn {
    choice(
        key,
        value,
        &[
            ("fail", RejectOn::Fail),
            ("softfail", RejectOn::SoftFail),
            ("never", RejectOn::Never),
        ],
        problems,
    )
}
