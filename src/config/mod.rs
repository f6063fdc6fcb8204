//! Configuration: an embedded default, overridden by a TOML file, then `MAILPOLICYD_*`
//! environment variables, then command-line flags. One table of settings (`settings::SETTINGS`)
//! drives the defaults, the validation, the environment names and the commented default file
//! (`mailpolicyd config --print-default`), so they cannot drift apart.
//!
//! Every problem is collected (unknown keys, wrong types, bad addresses, out-of-range values)
//! and reported together; the daemon then exits 64 (EX_USAGE), as linkerd2-proxy does.
//!
//! - `settings`: the one table of settings and what is derived from it;
//! - `validate`: the layered values → the typed [`Config`], every problem listed;
//! - here: [`load`] (default < file < environment < flags) and the paths both the daemon and
//!   the CLI need.
//!
//! `config` builds the daemon's [`DaemonConfig`] (a type of `serve`); `serve` never imports
//! `config`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::policy::orgdomain::SuffixList;
pub use crate::serve::daemon::DaemonConfig;

mod settings;
mod validate;

pub use settings::default_file;
use settings::{SETTINGS, Values, env_names, from_text, parse_default, ty_name, type_ok};

/// The fully validated configuration: what the daemon runs with, and the logging `main` sets
/// up before it starts.
#[derive(Clone)]
pub struct Config {
    /// Everything `serve::daemon::run` needs.
    pub daemon: DaemonConfig,
    /// `json` logs.
    pub log_json: bool,
    /// The tracing filter.
    pub log_level: String,
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
                "environment: {name}={text:?} is not a {} ({}.{})",
                ty_name(st.ty),
                st.section,
                st.key
            )),
        }
    }
    let text_flags = [
        (&flags.socket, ("socket", "path")),
        (&flags.admin, ("admin", "listen")),
        (&flags.dns_listen, ("dns", "listen")),
        (&flags.snapshot, ("lifecycle", "snapshot")),
        (&flags.log_format, ("log", "format")),
    ];
    for (flag, key) in text_flags {
        if let Some(v) = flag {
            values.insert(key, toml::Value::String(v.clone()));
        }
    }
    if !flags.upstream.is_empty() {
        let servers = flags.upstream.iter().cloned().map(toml::Value::String);
        values.insert(
            ("upstream", "servers"),
            toml::Value::Array(servers.collect()),
        );
    }
    let mut cfg = validate::build(
        &values,
        env.get("XDG_RUNTIME_DIR").map(String::as_str),
        &mut problems,
    );
    cfg.daemon.warnings = warnings;
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert_eq!(from_file.daemon.socket, none.daemon.socket);
        assert_eq!(
            from_file.daemon.socket,
            PathBuf::from("/tmp/x/mailpolicyd.sock")
        );
        assert_eq!(
            from_file.daemon.admin,
            Some("127.0.0.1:9253".parse().unwrap())
        );
        assert_eq!(from_file.daemon.resolver.cache.max_bytes, 256 << 20);
        assert_eq!(from_file.daemon.resolver.limits.per_second, 50);
        assert_eq!(from_file.daemon.socket_cfg.mode, 0o660);
        assert!(from_file.daemon.dns_listen.is_none());
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
            default.unwrap().daemon.resolver.cache.failure_ttl,
            Duration::from_secs(5)
        );
        for ok in [1, 300] {
            let c = load_with(&ok.to_string()).unwrap();
            assert_eq!(c.daemon.resolver.cache.failure_ttl, Duration::from_secs(ok));
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
            c.daemon.resolver.upstream.servers,
            vec!["127.0.0.1:5301".parse().unwrap()]
        );
        assert_eq!(
            c.daemon.admin,
            Some("127.0.0.1:3000".parse().unwrap()),
            "flag beats env beats file"
        );
        assert_eq!(c.daemon.resolver.cache.max_bytes, 4096, "env beats file");
        let c = load(Some(file), &e, &Flags::default()).unwrap();
        assert_eq!(c.daemon.admin, Some("127.0.0.1:2000".parse().unwrap()));
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
            c.daemon
                .warnings
                .iter()
                .any(|w| w.contains("MAILPOLICYD_CONFORMANCE_DIR"))
        );
    }

    #[test]
    fn bad_toml_is_a_problem() {
        assert!(load(Some("[socket\n"), &BTreeMap::new(), &Flags::default()).is_err());
    }
}
