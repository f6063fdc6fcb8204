//! `loadtest/run` stops only what it started (issue 12 item 16): never a process by name (on a
//! mail host that would be the production resolver), and a leftover of an earlier, killed run
//! only by its recorded PID while that PID still runs a command naming that run's work directory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn exited(c: &mut Child, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if c.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `loadtest/run --stop-leftovers` with `tmp` as its `TMPDIR`.
fn stop_leftovers(tmp: &Path) -> std::process::Output {
    Command::new("bash")
        .args(["loadtest/run", "--stop-leftovers"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TMPDIR", tmp)
        .output()
        .unwrap()
}

#[test]
fn loadtest_never_stops_processes_by_name() {
    // loadtest/memory (issue 17) starts NSD, Unbound and the daemon the same way.
    for path in ["loadtest/run", "loadtest/memory"] {
        let text = read(path);
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            for word in ["pkill", "killall", "pgrep", "kill -- -", "kill 0"] {
                assert!(
                    !line.contains(word),
                    "{path} stops by name or group: {line}"
                );
            }
        }
        let syntax = Command::new("bash")
            .args(["-n", path])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(syntax.success(), "bash -n {path}");
    }
}

#[test]
fn loadtest_stops_only_its_own_leftovers_by_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("mailpolicyd-loadtest.OLD1");
    std::fs::create_dir(&old).unwrap();
    let ours_conf = old.join("nsd.conf");
    std::fs::write(&ours_conf, "").unwrap();
    let theirs_conf = tmp.path().join("production-unbound.conf");
    std::fs::write(&theirs_conf, "").unwrap();
    // A leftover of the killed run (its command line names the run's work directory), and a
    // process of someone else's whose PID the ledger also holds (as after PID reuse).
    let mut ours = Command::new("tail")
        .arg("-f")
        .arg(&ours_conf)
        .spawn()
        .unwrap();
    let mut theirs = Command::new("tail")
        .arg("-f")
        .arg(&theirs_conf)
        .spawn()
        .unwrap();
    let ledger = format!(
        "{} {dir}\n{} {dir}\nnot-a-pid {dir}\n",
        ours.id(),
        theirs.id(),
        dir = old.display()
    );
    // The ledger's directory is this user's own: `<TMPDIR>/mailpolicyd-loadtest-<uid>/pids`.
    let uid = std::fs::metadata(&ours_conf).unwrap().uid();
    let state = tmp.path().join(format!("mailpolicyd-loadtest-{uid}"));
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("pids"), ledger).unwrap();

    let out = stop_leftovers(tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        exited(&mut ours, Duration::from_secs(5)),
        "the run's own leftover was stopped"
    );
    assert!(
        !exited(&mut theirs, Duration::from_millis(300)),
        "a process not started by a run is left alone: {stderr}"
    );
    let left = std::fs::read_to_string(state.join("pids")).unwrap();
    assert!(left.trim().is_empty(), "the ledger is emptied: {left:?}");
    theirs.kill().unwrap();
    theirs.wait().unwrap();
}

#[test]
fn loadtest_refuses_a_planted_ledger_link() {
    // Someone else plants a symbolic link where the ledger's directory goes: the script, often
    // run as root, must not write through it.
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let uid = std::fs::metadata(&victim).unwrap().uid();
    let state = tmp.path().join(format!("mailpolicyd-loadtest-{uid}"));
    std::os::unix::fs::symlink(&victim, &state).unwrap();
    let out = stop_leftovers(tmp.path());
    assert!(!out.status.success(), "a planted link is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}
