//! Issue 13, part C: the command line and the configuration keep their behaviour after the
//! move (cli/ in the binary, config/ split, `DaemonConfig` built by config), and `serve`
//! never imports `config` (the one arrow that ran back up).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use mailpolicyd::config::{self, Flags};

#[allow(dead_code)] // each test crate uses part of it
#[path = "common/sources.rs"]
mod sources;

#[test]
fn serve_never_imports_config() {
    let found = sources::lines_naming(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/serve"),
        &["crate::config", "mailpolicyd::config"],
    );
    assert!(
        found.is_empty(),
        "serve imports config:\n{}",
        found.join("\n")
    );
}

#[test]
fn print_default_is_the_librarys_default_file_and_loads() {
    let out = Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
        .args(["config", "--print-default"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed, config::default_file());
    let env = BTreeMap::from([("XDG_RUNTIME_DIR".to_owned(), "/tmp/x".to_owned())]);
    let cfg = config::load(Some(&printed), &env, &Flags::default()).unwrap();
    assert_eq!(
        cfg.daemon.socket,
        Path::new("/tmp/x/mailpolicyd.sock"),
        "the daemon's part of the configuration is what config built"
    );
    let bare = Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(
        bare.status.code(),
        Some(2),
        "nothing to do is a usage error"
    );
}

#[test]
fn flags_beat_environment_in_the_daemon_config() {
    let env = BTreeMap::from([
        ("MAILPOLICYD_SOCKET".to_owned(), "/tmp/env.sock".to_owned()),
        ("MAILPOLICYD_ADMIN".to_owned(), "127.0.0.1:1".to_owned()),
        ("MAILPOLICYD_UPSTREAM".to_owned(), "127.0.0.1:53".to_owned()),
    ]);
    let flags = Flags {
        socket: Some("/tmp/flag.sock".into()),
        upstream: vec!["127.0.0.2:5353".into(), "127.0.0.3".into()],
        admin: Some(String::new()),
        dns_listen: Some("127.0.0.1:5300".into()),
        snapshot: Some("/tmp/snap".into()),
        log_format: Some("json".into()),
    };
    let cfg = config::load(None, &env, &flags).unwrap();
    let d = &cfg.daemon;
    assert_eq!(d.socket, Path::new("/tmp/flag.sock"));
    assert_eq!(d.admin, None, "an empty --admin turns it off");
    assert_eq!(d.dns_listen, Some("127.0.0.1:5300".parse().unwrap()));
    assert_eq!(d.snapshot.as_deref(), Some(Path::new("/tmp/snap")));
    assert_eq!(
        d.resolver.upstream.servers,
        vec![
            "127.0.0.2:5353".parse().unwrap(),
            "127.0.0.3:53".parse().unwrap()
        ]
    );
    assert!(cfg.log_json);
    let bad = config::load(
        None,
        &BTreeMap::new(),
        &Flags {
            log_format: Some("xml".into()),
            ..Flags::default()
        },
    );
    assert_eq!(
        bad.err().unwrap(),
        vec!["log.format = \"xml\" is not human or json".to_owned()]
    );
}
