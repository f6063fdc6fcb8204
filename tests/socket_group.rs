//! Issue 14, item 3: `socket.group` (a group name or a numeric gid; `MAILPOLICYD_SOCKET_GROUP`
//! in the environment). The real daemon binary is started with it and the socket file's group
//! and mode are read back; the group is taken from this machine's `/etc/group` (one that is not
//! the test's own group when the test runs as root, so the chown is seen to happen). An unknown
//! name is a configuration error naming the key: exit 64, the daemon never binds.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailpolicyd::config::{self, Flags};

/// `(name, gid)` of every group in `/etc/group`.
fn groups() -> Vec<(String, u32)> {
    std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.to_owned();
            let gid = f.nth(1)?.parse().ok()?;
            Some((name, gid))
        })
        .collect()
}

/// The test's own uid and gid, as the files it creates get them.
fn own_ids(dir: &Path) -> (u32, u32) {
    let probe = dir.join("probe");
    std::fs::write(&probe, b"").unwrap();
    let m = std::fs::metadata(&probe).unwrap();
    (m.uid(), m.gid())
}

/// A group to give the socket: as root, one from `/etc/group` other than our own (preferring
/// the usual system groups); otherwise our own group (the only one a chown surely may give).
fn target_group(dir: &Path) -> (String, u32) {
    let (uid, gid) = own_ids(dir);
    let all = groups();
    if uid == 0 {
        for want in ["nogroup", "daemon", "adm", "mail", "users", "staff"] {
            if let Some(g) = all.iter().find(|(n, g)| n == want && *g != gid) {
                return g.clone();
            }
        }
        if let Some(g) = all.iter().find(|(_, g)| *g != gid) {
            return g.clone();
        }
    }
    all.into_iter()
        .find(|(_, g)| *g == gid)
        .expect("our own group is in /etc/group")
}

fn start(socket: &Path, config: Option<&Path>, env: &[(&str, String)]) -> Child {
    // No question is asked upstream here: a port nothing listens on will do.
    let mut c = common::daemon_command(socket, "127.0.0.1:9".parse().unwrap());
    if let Some(f) = config {
        c.args(["--config", f.to_str().unwrap()]);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits (up to 20 s) until the daemon answers a JSON `ping` on `socket`.
fn wait_ping(socket: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = UnixStream::connect(socket) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut w = s.try_clone().unwrap();
            w.write_all(b"{\"id\": 1, \"op\": \"ping\"}\n").unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            assert!(line.contains("pong"), "{line}");
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited early"
        );
        assert!(Instant::now() < deadline, "the daemon did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(child: &mut Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert_eq!(common::wait_exit(child).code(), Some(0));
}

#[test]
fn the_socket_gets_the_configured_group_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (name, gid) = target_group(dir.path());
    let (_, own_gid) = own_ids(dir.path());
    println!("socket.group: {name} (gid {gid}; the test's own gid {own_gid})");

    // By name, in the file, with another mode.
    let socket = dir.path().join("by-name.sock");
    let file = dir.path().join("by-name.toml");
    std::fs::write(
        &file,
        format!("[socket]\ngroup = \"{name}\"\nmode = \"0640\"\n"),
    )
    .unwrap();
    let mut child = start(&socket, Some(&file), &[]);
    wait_ping(&socket, &mut child);
    let m = std::fs::metadata(&socket).unwrap();
    assert_eq!(m.gid(), gid, "group by name");
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    stop(&mut child);

    // A numeric gid: as a TOML integer, and from the environment (MAILPOLICYD_SOCKET_GROUP).
    let socket = dir.path().join("by-gid.sock");
    let file = dir.path().join("by-gid.toml");
    std::fs::write(&file, format!("[socket]\ngroup = {gid}\n")).unwrap();
    let mut child = start(&socket, Some(&file), &[]);
    wait_ping(&socket, &mut child);
    let m = std::fs::metadata(&socket).unwrap();
    assert_eq!(m.gid(), gid, "group by TOML integer");
    assert_eq!(m.permissions().mode() & 0o7777, 0o660, "the default mode");
    stop(&mut child);

    let socket = dir.path().join("by-env.sock");
    let mut child = start(
        &socket,
        None,
        &[("MAILPOLICYD_SOCKET_GROUP", gid.to_string())],
    );
    wait_ping(&socket, &mut child);
    assert_eq!(
        std::fs::metadata(&socket).unwrap().gid(),
        gid,
        "group from env"
    );
    stop(&mut child);

    // Unset: the daemon's own group, as before.
    let socket = dir.path().join("unset.sock");
    let mut child = start(&socket, None, &[]);
    wait_ping(&socket, &mut child);
    assert_eq!(std::fs::metadata(&socket).unwrap().gid(), own_gid);
    stop(&mut child);
}

#[test]
fn an_unknown_group_is_a_configuration_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (how, file_text, env) in [
        (
            "file",
            "[socket]\ngroup = \"no-such-group-mailpolicyd\"\n",
            None,
        ),
        ("env", "", Some("no-such-group-mailpolicyd")),
        ("negative", "[socket]\ngroup = -5\n", None),
        ("type", "[socket]\ngroup = true\n", None),
    ] {
        let socket = dir.path().join(format!("{how}.sock"));
        let file = dir.path().join(format!("{how}.toml"));
        std::fs::write(&file, file_text).unwrap();
        let mut env_vars = Vec::new();
        if let Some(v) = env {
            env_vars.push(("MAILPOLICYD_SOCKET_GROUP", v.to_owned()));
        }
        let child = start(&socket, Some(&file), &env_vars);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{how}: {err}");
        assert!(err.contains("socket.group"), "{how}: {err}");
        if how == "file" || how == "env" {
            assert!(err.contains("no-such-group-mailpolicyd"), "{how}: {err}");
            assert!(err.contains("no such group"), "{how}: {err}");
        }
        assert!(!socket.exists(), "{how}: no socket was bound");
        println!("{how}: {}", err.trim());
    }
}

#[test]
fn the_key_is_in_the_one_table() {
    // The environment name is derived from the table; the default file lists the key.
    let mut env = BTreeMap::new();
    env.insert("MAILPOLICYD_SOCKET_GROUP".to_owned(), "0".to_owned());
    let cfg = config::load(None, &env, &Flags::default()).unwrap();
    assert_eq!(cfg.daemon.socket_cfg.group, Some(0));
    let cfg = config::load(None, &BTreeMap::new(), &Flags::default()).unwrap();
    assert_eq!(cfg.daemon.socket_cfg.group, None);
    let cfg = config::load(
        Some("[socket]\ngroup = \"\"\n"),
        &BTreeMap::new(),
        &Flags::default(),
    )
    .unwrap();
    assert_eq!(cfg.daemon.socket_cfg.group, None);
    let default = config::default_file();
    assert!(default.contains("group = \"\""), "{default}");
    assert!(default.contains("MAILPOLICYD_SOCKET_GROUP"), "{default}");
}
