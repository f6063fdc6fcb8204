//! The test zone, the cases and the daemon of the Postfix policy tests (`tests/postfix_policy.rs`
//! at the protocol level, `tests/postfix_e2e.rs` through a real Postfix and against
//! pypolicyd-spf): one table of cases, each with the outcome issue 16 asks for.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::dnsserver::{TestDns, Zone};

/// The client address every case plays (TEST-NET-1).
pub const CLIENT: &str = "192.0.2.10";
/// A HELO name whose SPF record passes [`CLIENT`].
pub const GOOD_HELO: &str = "mx.sender.test";
/// A HELO name whose SPF record fails [`CLIENT`].
pub const BAD_HELO: &str = "bad-helo.sender.test";

/// The authority for `sender.test`: pass, fail (with an `exp=`), softfail, permerror, none, a
/// name answered SERVFAIL, and the two HELO names.
pub async fn authority() -> TestDns {
    let zone = Zone::new("sender.test.", 300)
        .txt("mx", 300, &["v=spf1 ip4:192.0.2.0/24 -all"])
        .txt("bad-helo", 300, &["v=spf1 ip4:198.51.100.1 -all"])
        .txt("pass", 300, &["v=spf1 ip4:192.0.2.0/24 -all"])
        .txt(
            "fail",
            300,
            &["v=spf1 ip4:198.51.100.1 -all exp=why.fail.sender.test"],
        )
        .txt("why.fail", 300, &["%{i} is not one of %{d}'s mail servers"])
        .txt("soft", 300, &["v=spf1 ip4:198.51.100.1 ~all"])
        .txt("perm", 300, &["v=spf1 ip4:192.0.2.0/24 frobnicate -all"])
        .txt("slow", 300, &["v=spf1 ip4:192.0.2.0/24 -all"])
        .txt("none", 300, &["just a text record"])
        .txt("broken", 300, &["v=spf1 -all"]);
    let dns = TestDns::start(vec![zone]).await;
    dns.servfail("broken.sender.test");
    dns
}

/// The authority, a temporary directory and a daemon in it with `env` (see [`Daemon::start`]).
pub async fn lab(env: &[(&str, &str)]) -> (TestDns, tempfile::TempDir, Daemon) {
    let dns = authority().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), dns.addr, env);
    (dns, dir, d)
}

/// What a case must be answered: the class of the action, and a text the answer must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `550 5.7.23`, holding the text.
    Reject(&'static str),
    /// `451 4.7.24` (Postfix: a 451 reply), holding the text.
    Defer(&'static str),
    /// `PREPEND Received-SPF: <result> …`.
    Prepend(&'static str),
    /// `DUNNO`.
    Dunno,
}

/// One case: a name, the HELO, the sender (empty: the null sender), the outcome.
pub struct Case {
    /// What it shows.
    pub name: &'static str,
    /// The HELO name.
    pub helo: &'static str,
    /// The envelope sender.
    pub sender: &'static str,
    /// With the default settings.
    pub expect: Expect,
}

/// The cases with the default settings (every "Must show" SPF outcome of issue 16).
pub const CASES: &[Case] = &[
    Case {
        name: "pass",
        helo: GOOD_HELO,
        sender: "alice@pass.sender.test",
        expect: Expect::Prepend("pass"),
    },
    Case {
        name: "fail",
        helo: GOOD_HELO,
        sender: "alice@fail.sender.test",
        expect: Expect::Reject("192.0.2.10 is not one of fail.sender.test's mail servers"),
    },
    Case {
        name: "softfail",
        helo: GOOD_HELO,
        sender: "alice@soft.sender.test",
        expect: Expect::Prepend("softfail"),
    },
    Case {
        name: "servfail",
        helo: GOOD_HELO,
        sender: "alice@broken.sender.test",
        expect: Expect::Defer("temperror"),
    },
    Case {
        name: "null sender, failing HELO",
        helo: BAD_HELO,
        sender: "",
        expect: Expect::Reject("SPF fail (identity helo, domain bad-helo.sender.test)"),
    },
    Case {
        name: "failing HELO, passing sender",
        helo: BAD_HELO,
        sender: "alice@pass.sender.test",
        expect: Expect::Reject("SPF fail (identity helo"),
    },
    Case {
        name: "permerror",
        helo: GOOD_HELO,
        sender: "alice@perm.sender.test",
        expect: Expect::Prepend("permerror"),
    },
    Case {
        name: "no SPF record",
        helo: GOOD_HELO,
        sender: "alice@none.sender.test",
        expect: Expect::Prepend("none"),
    },
];

/// A policy request for `helo`/`sender` from [`CLIENT`] at `state`, message `instance`.
pub fn request(state: &str, helo: &str, sender: &str, instance: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state={state}\nprotocol_name=ESMTP\nclient_address={CLIENT}\nclient_name=unknown\nreverse_client_name=unknown\nhelo_name={helo}\nsender={sender}\nrecipient=bob@rcpt.test\nrecipient_count=0\nqueue_id=\ninstance={instance}\nsize=0\netrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n\n"
    )
}

/// Sends one request on `conn` and reads the answer's lines (without the ending empty line);
/// `None` when the server closed the connection instead.
pub fn ask(conn: &mut UnixStream, req: &str) -> Option<Vec<String>> {
    conn.write_all(req.as_bytes()).ok()?;
    read_answer(&mut BufReader::new(conn))
}

/// The lines of one answer, up to its empty line; `None` at end of file.
pub fn read_answer(r: &mut impl BufRead) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches('\n').to_owned();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

/// Whether an `action=` value meets `expect` (ours: exact codes; see [`class`] for the
/// comparison with another server).
pub fn meets(action: &str, expect: Expect) -> bool {
    match expect {
        Expect::Reject(t) => action.starts_with("550 5.7.23 ") && action.contains(t),
        Expect::Defer(t) => action.starts_with("451 4.7.24 ") && action.contains(t),
        Expect::Prepend(r) => action.starts_with(&format!("PREPEND Received-SPF: {r} (")),
        Expect::Dunno => action == "DUNNO",
    }
}

/// The class of an `action=` value, any server's spelling: `reject` (a 5xx or REJECT),
/// `defer` (a 4xx, DEFER, DEFER_IF_PERMIT), `prepend` with the Received-SPF result in lower
/// case, `dunno`, or the value itself.
pub fn class(action: &str) -> String {
    let lower = action.to_ascii_lowercase();
    if lower.starts_with('5') || lower.starts_with("reject") {
        "reject".into()
    } else if lower.starts_with('4') || lower.starts_with("defer") {
        "defer".into()
    } else if let Some(rest) = lower.strip_prefix("prepend received-spf: ") {
        format!("prepend {}", rest.split([' ', '(']).next().unwrap_or(""))
    } else if lower == "dunno" || lower.starts_with("dunno ") {
        "dunno".into()
    } else {
        action.to_owned()
    }
}

/// The class [`class`] gives an expectation.
pub fn expected_class(e: Expect) -> String {
    match e {
        Expect::Reject(_) => "reject".into(),
        Expect::Defer(_) => "defer".into(),
        Expect::Prepend(r) => format!("prepend {r}"),
        Expect::Dunno => "dunno".into(),
    }
}

/// A free loopback TCP port (bound, read, let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The daemon binary with a policy socket, stopped (SIGTERM by its PID) when dropped.
pub struct Daemon {
    /// The process.
    pub child: std::process::Child,
    /// Its policy socket.
    pub policy: PathBuf,
    /// Its admin endpoint.
    pub admin: SocketAddr,
    /// Its policy TCP address, when asked for.
    pub tcp: Option<SocketAddr>,
}

impl Daemon {
    /// Starts the daemon in `dir` (its filter socket and policy socket there) asking
    /// `upstream`, with `env` added (`MAILPOLICYD_POSTFIX_POLICY_*` and others); waits until
    /// the policy socket accepts.
    pub fn start(dir: &Path, upstream: SocketAddr, env: &[(&str, &str)]) -> Daemon {
        let policy = dir.join("policy.sock");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = super::common::daemon_command(&dir.join("mailpolicyd.sock"), upstream);
        cmd.env("MAILPOLICYD_POSTFIX_POLICY_SOCKET", &policy)
            .env("MAILPOLICYD_ADMIN_LISTEN", admin.to_string());
        let mut tcp = None;
        for (k, v) in env {
            if *k == "MAILPOLICYD_POSTFIX_POLICY_LISTEN" {
                tcp = Some(v.parse().unwrap());
            }
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let d = Daemon {
            child,
            policy,
            admin,
            tcp,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&d.policy).is_err() {
            assert!(
                Instant::now() < deadline,
                "the policy socket did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// A connection to the policy socket.
    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.policy).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// `/metrics` of the admin endpoint.
    pub fn metrics(&self) -> String {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The value of the `/metrics` line starting with `line_start`; 0 when absent.
    pub fn metric(&self, line_start: &str) -> u64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// SIGTERM by PID, then waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        super::common::wait_exit(&mut self.child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
