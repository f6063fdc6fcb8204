//! DNSSEC and DANE against a real signed hierarchy on loopback (issue 15, "Must show").
//!
//! Each test builds its own lab with `tests/lab/mklab.sh` (fresh keys and signatures from
//! `ldns-keygen` / `ldns-signzone`, NSEC): a root zone `.` of its own whose KSK is the trust
//! anchor (`root.anchor`, a DS line in zone-file presentation format), `test.` delegated with DS,
//! and under it `signed.test.` (DS), `unsigned.test.` (no DS) and `broken.test.` (DS, its TLSA
//! rdata changed after signing). One NSD serves all five zones on `127.X.Y.1` port 53 (an
//! address of the lab's own; another port with stub zones when port 53 cannot be bound), and two
//! Unbounds recurse from that root: an iterator without validation (`module-config:
//! "iterator"`: the upstream of mailpolicyd's `validate` mode) and a validating one with the same
//! anchor (the upstream of `upstream_ad` mode). [`lab_is_sound`] proves the lab with `dig`
//! alone; the other tests ask the real daemon binary (`MAILPOLICYD_DNSSEC_MODE`,
//! `MAILPOLICYD_DNSSEC_TRUST_ANCHOR`) through the CLI (`mailpolicyd query … --json`).
//!
//! Upstream queries are counted at the Unbound the daemon asks (`unbound-control
//! stats_noreset`, `total.num.queries`): that is exactly what the daemon sent its upstream,
//! the cost the issue bounds; NSD's count would measure Unbound's own iteration (its cache, its
//! qname minimisation), not mailpolicyd.
//!
//! Every process a test starts is stopped by its PID when the test ends (a `Drop` guard:
//! SIGTERM, then SIGKILL after a bounded wait). Skipped, with one line, where `nsd`, `unbound`,
//! the ldns tools or `dig` are missing, unless `MAILPOLICYD_REQUIRE_TOOLS` is set (CI).

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The bound the issue states for the first TLSA question of a fresh daemon (a cold chain).
const MAX_COLD_QUERIES: u64 = 30;

/// The TLSA digest every lab zone publishes at `_25._tcp.mx` (`3 1 1 abab…`).
const DIGEST: &str = "abababababababababababababababababababababababababababababababab";

// ---------------------------------------------------------------------------------------------
// Tools and bounded commands

/// `name` on `PATH` or in the system directories (NSD and Unbound live in `/usr/sbin`).
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

const TOOLS: [&str; 8] = [
    "nsd",
    "unbound",
    "unbound-control",
    "ldns-keygen",
    "ldns-signzone",
    "ldns-key2ds",
    "dig",
    "bash",
];

/// `true` when every tool is there; otherwise prints one line and returns `false`, or fails
/// when `MAILPOLICYD_REQUIRE_TOOLS` is set.
fn tools_present(test: &str) -> bool {
    let missing: Vec<&str> = TOOLS.into_iter().filter(|t| tool(t).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test} skipped: {} not installed (Debian: nsd unbound ldnsutils dnsutils)",
        missing.join(", ")
    );
    assert!(
        std::env::var_os("MAILPOLICYD_REQUIRE_TOOLS").is_none(),
        "{msg} (MAILPOLICYD_REQUIRE_TOOLS is set)"
    );
    println!("{msg}");
    false
}

/// What a bounded command gave.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to its end, killed (by its PID) after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd.get_program().display()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {:?} ran longer than {limit:?}",
                cmd.get_program().display(),
                cmd.get_args().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A server this test started, stopped by its PID on drop: SIGTERM (NSD then stops its own
/// children), SIGKILL if it is still there after 5 s.
struct Proc {
    name: &'static str,
    child: Child,
    /// Its standard output and error.
    log: PathBuf,
    /// The log file its configuration names, if any.
    logfile: Option<PathBuf>,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Proc {
            name,
            child,
            log,
            logfile: None,
        }
    }

    fn with_logfile(mut self, path: PathBuf) -> Proc {
        self.logfile = Some(path);
        self
    }

    /// Panics with the log when the process has ended.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }

    fn log(&self) -> String {
        let mut log = std::fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(f) = &self.logfile {
            log += &std::fs::read_to_string(f).unwrap_or_default();
        }
        log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The lab

/// A lab: NSD serving the hierarchy, the two Unbounds. Fields drop in order: the servers stop
/// before their directory goes.
struct Lab {
    _procs: Vec<Proc>,
    /// The non-validating Unbound (`module-config: "iterator"`).
    iter: SocketAddr,
    /// The validating Unbound (`trust-anchor-file` = `root.anchor`).
    valid: SocketAddr,
    /// NSD.
    nsd: SocketAddr,
    dir: tempfile::TempDir,
}

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A free UDP and TCP port on `ip` (bound, then released).
fn free_port(ip: Ipv4Addr) -> u16 {
    for _ in 0..50 {
        let u = UdpSocket::bind((ip, 0)).unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// An address of the lab's own, `127.X.Y.1`, and NSD's port on it: 53 when it can be bound (the
/// referrals of the hierarchy are then followed as on the internet), else a free port (the
/// Unbounds then get a stub zone per zone).
fn lab_address() -> (Ipv4Addr, u16) {
    let pid = std::process::id();
    let mut ip = Ipv4Addr::LOCALHOST;
    for _ in 0..20 {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        ip = Ipv4Addr::new(127, 100 + (pid % 150) as u8, (n % 250 + 1) as u8, 1);
        match (UdpSocket::bind((ip, 53)), TcpListener::bind((ip, 53))) {
            (Ok(_), Ok(_)) => return (ip, 53),
            (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => break,
            _ => continue,
        }
    }
    // Not root, or port 53 taken on every address tried (a wildcard listener on the host).
    (ip, free_port(ip))
}

/// `dig` against `server` (bounded: 2 s per try, 2 tries), its whole output.
fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = run_bounded(
        Command::new(tool("dig").unwrap())
            .arg(format!("@{}", server.ip()))
            .args(["-p", &server.port().to_string(), "+time=2", "+tries=2"])
            .args(args),
        Duration::from_secs(15),
    );
    format!("{}{}", out.stdout, out.stderr)
}

/// Polls `server` with `SOA .` until it answers NOERROR (bounded: 10 s).
fn wait_answering(server: SocketAddr, proc: &mut Proc, rd: bool) {
    let start = Instant::now();
    loop {
        proc.assert_running();
        let out = dig(
            server,
            &[
                if rd { "+rec" } else { "+norec" },
                "+time=1",
                "+tries=1",
                "SOA",
                ".",
            ],
        );
        if out.contains("status: NOERROR") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} does not answer on {server}:\n{out}\n{}",
            proc.name,
            proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Lab {
    /// Builds and starts a lab, or `None` (after one line) when a tool is missing.
    fn start(test: &str) -> Option<Lab> {
        if !tools_present(test) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("dnssec-lab")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let (ip, nsd_port) = lab_address();
        let (iter_port, valid_port) = (free_port(ip), free_port(ip));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/mklab.sh");
        let built = run_bounded(
            Command::new(tool("bash").unwrap()).arg(&script).args([
                d.to_str().unwrap(),
                &ip.to_string(),
                &nsd_port.to_string(),
                &iter_port.to_string(),
                &valid_port.to_string(),
            ]),
            Duration::from_secs(60),
        );
        assert!(
            built.status.success(),
            "mklab.sh failed:\n{}{}",
            built.stdout,
            built.stderr
        );
        let conf = |f: &str| d.join(f).to_str().unwrap().to_owned();
        let mut nsd = Proc::spawn(
            "nsd",
            Command::new(tool("nsd").unwrap()).args(["-d", "-c", &conf("nsd.conf")]),
            d.join("nsd.out"),
        )
        .with_logfile(d.join("nsd.log"));
        let nsd_addr = SocketAddr::from((ip, nsd_port));
        wait_answering(nsd_addr, &mut nsd, false);
        let mut procs = vec![nsd];
        let mut addrs = Vec::new();
        for (name, port) in [("unbound-iter", iter_port), ("unbound-valid", valid_port)] {
            let mut p = Proc::spawn(
                name,
                Command::new(tool("unbound").unwrap()).args([
                    "-d",
                    "-c",
                    &conf(&format!("{name}.conf")),
                ]),
                d.join(format!("{name}.out")),
            )
            .with_logfile(d.join(format!("{name}.log")));
            let addr = SocketAddr::from((ip, port));
            wait_answering(addr, &mut p, true);
            procs.push(p);
            addrs.push(addr);
        }
        Some(Lab {
            _procs: procs,
            iter: addrs[0],
            valid: addrs[1],
            nsd: nsd_addr,
            dir,
        })
    }

    /// The root trust anchor: a DS line in zone-file presentation format.
    fn anchor(&self) -> PathBuf {
        self.dir.path().join("root.anchor")
    }

    /// The same anchor as the root KSK's DNSKEY line.
    fn dnskey_anchor(&self) -> PathBuf {
        self.dir.path().join("root-dnskey.anchor")
    }

    /// `total.num.queries` of the Unbound `name` (`unbound-iter` or `unbound-valid`): the
    /// questions its clients sent it.
    fn unbound_queries(&self, name: &str) -> u64 {
        let conf = self.dir.path().join(format!("{name}.conf"));
        let out = run_bounded(
            Command::new(tool("unbound-control").unwrap())
                .arg("-c")
                .arg(conf)
                .arg("stats_noreset"),
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "unbound-control: {}", out.stderr);
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("total.num.queries="))
            .unwrap_or_else(|| panic!("no total.num.queries in:\n{}", out.stdout))
            .trim()
            .parse()
            .unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// The real daemon binary, asking `upstream`, with `[dnssec]` set through its environment.
struct Daemon {
    proc: Proc,
    socket: PathBuf,
    /// Its DNS front-end.
    dns: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(upstream: SocketAddr, mode: &str, anchor: Option<&Path>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("mp.sock");
        let mut cmd = common::daemon_command(&socket, upstream);
        // No admin endpoint: its default port is one per host.
        cmd.args(["--admin", ""]);
        let dns = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
        cmd.args(["--dns-listen", &dns.to_string()]);
        cmd.env("MAILPOLICYD_DNSSEC_MODE", mode);
        if let Some(a) = anchor {
            cmd.env("MAILPOLICYD_DNSSEC_TRUST_ANCHOR", a);
        }
        let mut proc = Proc::spawn("mailpolicyd", &mut cmd, dir.path().join("daemon.log"));
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            proc.assert_running();
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the daemon did not open {}:\n{}",
                socket.display(),
                proc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon {
            proc,
            socket,
            dns,
            _dir: dir,
        }
    }

    /// `mailpolicyd query --socket … --json ARGS`: its exit code and JSON output (the answer,
    /// or `{"error": …}`).
    fn query(&self, args: &[&str]) -> (Option<i32>, Value) {
        let out = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
                .args(["query", "--socket", self.socket.to_str().unwrap(), "--json"])
                .args(args),
            Duration::from_secs(30),
        );
        let v = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "query {args:?}: not JSON ({e}), exit {:?}:\n{}{}\ndaemon log:\n{}",
                out.status.code(),
                out.stdout,
                out.stderr,
                self.proc.log()
            )
        });
        (out.status.code(), v)
    }

    /// A query that must fail DNSSEC validation: a non-zero exit and the error `dnssec_bogus`.
    fn bogus(&self, args: &[&str]) {
        let (code, v) = self.query(args);
        assert_ne!(
            code,
            Some(0),
            "the CLI exits non-zero on a bogus answer: {v}"
        );
        let err = v
            .get("error")
            .unwrap_or_else(|| panic!("an error, not an answer: {v}"));
        assert_eq!(
            find(err, "code").and_then(Value::as_str),
            Some("dnssec_bogus"),
            "{v}"
        );
    }

    /// A query that must succeed: its JSON.
    fn ok(&self, args: &[&str]) -> Value {
        let (code, v) = self.query(args);
        assert_eq!(
            code,
            Some(0),
            "query {args:?} failed: {v}\ndaemon log:\n{}",
            self.proc.log()
        );
        v
    }
}

/// The first value of `key` anywhere in `v` (depth first).
fn find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(key).or_else(|| m.values().find_map(|x| find(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}

/// The `dnssec` status of an answer.
fn dnssec(v: &Value) -> &str {
    find(v, "dnssec")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no dnssec status in {v}"))
}

/// The TLSA records of an answer (none when its data is `none`).
fn tlsa_records(v: &Value) -> Vec<Value> {
    find(v, "tlsa")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Asserts `v` is a TLSA answer with the lab's one record, `3 1 1 abab…`.
fn assert_lab_tlsa(v: &Value) {
    let recs = tlsa_records(v);
    assert_eq!(recs.len(), 1, "one TLSA record expected: {v}");
    let text = recs[0].to_string().to_ascii_lowercase();
    assert!(text.contains(DIGEST), "the lab's digest expected: {v}");
}

/// The lab and a daemon in `mode` on the matching Unbound (`validate`: the iterator, with the
/// lab's root anchor; `upstream_ad`: the validating Unbound).
fn lab_and_daemon(test: &str, mode: &str) -> Option<(Lab, Daemon)> {
    let lab = Lab::start(test)?;
    let daemon = match mode {
        "validate" => Daemon::start(lab.iter, mode, Some(&lab.anchor())),
        "upstream_ad" => Daemon::start(lab.valid, mode, None),
        other => panic!("mode {other}"),
    };
    Some((lab, daemon))
}

/// The Unbound a daemon in `mode` asks (its name in the lab).
fn upstream_name(mode: &str) -> &'static str {
    if mode == "validate" {
        "unbound-iter"
    } else {
        "unbound-valid"
    }
}

// ---------------------------------------------------------------------------------------------
// The lab itself, without mailpolicyd

/// The flags of a `dig` answer (`;; flags: qr rd ra ad;` → `["qr", "rd", "ra", "ad"]`).
fn dig_flags(out: &str) -> Vec<&str> {
    out.lines()
        .find_map(|l| l.strip_prefix(";; flags:"))
        .and_then(|l| l.split(';').next())
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default()
}

fn dig_status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
}

/// The hierarchy is what the tests assume, shown with `dig +dnssec` against the validating
/// Unbound (and NSD, and the iterator) alone: signed TLSA has AD, unsigned has no AD, broken is
/// SERVFAIL with EDE 6 (DNSSEC Bogus); the names without TLSA in the signed zone are
/// authenticated denials (AD); the iterator hands the broken record out with its RRSIG.
#[test]
fn lab_is_sound() {
    let Some(lab) = Lab::start("lab_is_sound") else {
        return;
    };
    let q = |server: SocketAddr, name: &str, ty: &str| dig(server, &["+dnssec", ty, name]);

    let root = dig(lab.nsd, &["+dnssec", "+norec", "DNSKEY", "."]);
    assert!(dig_flags(&root).contains(&"aa"), "NSD serves .:\n{root}");
    assert!(root.contains("RRSIG"), "the root is signed:\n{root}");

    let signed = q(lab.valid, "_25._tcp.mx.signed.test", "TLSA");
    assert_eq!(dig_status(&signed), "NOERROR", "{signed}");
    assert!(dig_flags(&signed).contains(&"ad"), "signed: AD\n{signed}");
    assert!(
        signed
            .to_ascii_lowercase()
            .replace(' ', "")
            .contains(DIGEST),
        "{signed}"
    );

    let unsigned = q(lab.valid, "_25._tcp.mx.unsigned.test", "TLSA");
    assert_eq!(dig_status(&unsigned), "NOERROR", "{unsigned}");
    assert!(
        !dig_flags(&unsigned).contains(&"ad"),
        "unsigned: no AD\n{unsigned}"
    );
    assert!(unsigned.contains("\tTLSA\t3 1 1"), "{unsigned}");

    let broken = q(lab.valid, "_25._tcp.mx.broken.test", "TLSA");
    assert_eq!(
        dig_status(&broken),
        "SERVFAIL",
        "broken: SERVFAIL\n{broken}"
    );
    if broken.contains("EDE:") {
        assert!(broken.contains("EDE: 6"), "EDE 6 (DNSSEC Bogus):\n{broken}");
    }

    for (name, status) in [
        ("_25._tcp.mx2.signed.test", "NOERROR"),
        ("_25._tcp.nx.signed.test", "NXDOMAIN"),
    ] {
        let out = q(lab.valid, name, "TLSA");
        assert_eq!(dig_status(&out), status, "{out}");
        assert!(dig_flags(&out).contains(&"ad"), "denial with AD\n{out}");
        assert!(out.contains("\tNSEC\t"), "NSEC proof\n{out}");
        assert!(!out.contains("\tTLSA\t3"), "no TLSA\n{out}");
    }

    let through_iterator = q(lab.iter, "_25._tcp.mx.broken.test", "TLSA");
    assert_eq!(
        dig_status(&through_iterator),
        "NOERROR",
        "{through_iterator}"
    );
    assert!(
        through_iterator.contains("RRSIG\tTLSA"),
        "the iterator passes RRSIGs on:\n{through_iterator}"
    );
    assert!(!dig_flags(&through_iterator).contains(&"ad"));

    for zone in ["signed.test", "unsigned.test", "broken.test"] {
        for name in [format!("_dmarc.{zone}"), zone.to_owned()] {
            let out = q(lab.valid, &name, "TXT");
            assert_eq!(dig_status(&out), "NOERROR", "{out}");
            assert!(out.contains("v=DMARC1") || out.contains("v=spf1"), "{out}");
            assert_eq!(
                dig_flags(&out).contains(&"ad"),
                zone != "unsigned.test",
                "AD exactly in the signed zones:\n{out}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mailpolicyd in both modes

/// The lab's TLSA record at `host`, with DNSSEC status `status`.
fn lab_tlsa_is(mode: &str, test: &str, host: &str, status: &str) {
    let Some((_lab, d)) = lab_and_daemon(test, mode) else {
        return;
    };
    let v = d.ok(&["tlsa", host, "25"]);
    assert_eq!(dnssec(&v), status, "{v}");
    assert_lab_tlsa(&v);
}

fn signed_tlsa_is_secure_with_records(mode: &str, test: &str) {
    lab_tlsa_is(mode, test, "mx.signed.test", "secure");
}

fn unsigned_tlsa_is_insecure_with_records(mode: &str, test: &str) {
    lab_tlsa_is(mode, test, "mx.unsigned.test", "insecure");
}

fn broken_tlsa_is_dnssec_bogus(mode: &str, test: &str) {
    let Some((_lab, d)) = lab_and_daemon(test, mode) else {
        return;
    };
    d.bogus(&["tlsa", "mx.broken.test", "25"]);
}

fn no_tlsa_in_signed_zone_is_secure_without_records(mode: &str, test: &str) {
    let Some((_lab, d)) = lab_and_daemon(test, mode) else {
        return;
    };
    // NODATA (`_25._tcp.mx2` holds a TXT only) and NXDOMAIN (nothing under `nx`), both proven
    // by NSEC.
    for host in ["mx2.signed.test", "nx.signed.test"] {
        let v = d.ok(&["tlsa", host, "25"]);
        assert_eq!(dnssec(&v), "secure", "{host}: {v}");
        assert!(tlsa_records(&v).is_empty(), "{host}: no records: {v}");
    }
}

fn unsigned_tlsa_cost_is_bounded_and_repeat_is_free(mode: &str, test: &str) {
    let Some((lab, d)) = lab_and_daemon(test, mode) else {
        return;
    };
    let upstream = upstream_name(mode);
    let before = lab.unbound_queries(upstream);
    let (code, first_answer) = d.query(&["tlsa", "mx.unsigned.test", "25"]);
    let first = lab.unbound_queries(upstream) - before;
    println!("{mode}: the first TLSA question for unsigned.test cost {first} upstream queries");
    assert!(
        first <= MAX_COLD_QUERIES,
        "the first TLSA question for the unsigned zone cost {first} upstream queries (at most \
         {MAX_COLD_QUERIES}): {first_answer}"
    );
    assert_eq!(code, Some(0), "{first_answer}");
    assert_eq!(dnssec(&first_answer), "insecure", "{first_answer}");
    let v = d.ok(&["tlsa", "mx.unsigned.test", "25"]);
    let repeat = lab.unbound_queries(upstream) - before - first;
    assert_eq!(dnssec(&v), "insecure", "{v}");
    assert_eq!(repeat, 0, "a repeat is answered from the cache");
}

fn dmarc_and_spf_work_in_all_three_zones(mode: &str, test: &str) {
    let Some((_lab, d)) = lab_and_daemon(test, mode) else {
        return;
    };
    for zone in ["signed.test", "unsigned.test", "broken.test"] {
        let v = d.ok(&["dmarc", zone]);
        let text = v.to_string();
        assert!(
            text.contains("reject"),
            "{zone}: the DMARC policy p=reject: {v}"
        );
        assert!(
            text.contains(&format!("d@{zone}")),
            "{zone}: the zone's own record: {v}"
        );
        let v = d.ok(&["spf", zone]);
        assert!(
            v.to_string().contains("192.0.2.0"),
            "{zone}: the SPF record: {v}"
        );
    }
}

fn dkim_keys_carry_their_dnssec_status(mode: &str, test: &str) {
    let Some((_lab, d)) = lab_and_daemon(test, mode) else {
        return;
    };
    for (zone, status) in [("signed.test", "secure"), ("unsigned.test", "insecure")] {
        let v = d.ok(&["dkim", "lab", zone]);
        assert_eq!(dnssec(&v), status, "{zone}: {v}");
        assert!(
            v.to_string().contains("11qYAYKxCrfVS"),
            "{zone}: the key itself: {v}"
        );
    }
    // A key whose signature does not verify is an error, as a validating resolver's SERVFAIL.
    d.bogus(&["dkim", "lab", "broken.test"]);
}

/// The `dig +dnssec` (DO) or plain answer of the daemon's front-end.
fn front_dig(d: &Daemon, dnssec: bool, qtype: &str, name: &str) -> String {
    // dig sets AD in its queries by default, which asks for AD as DO does (RFC 6840 §5.7).
    let flags: &[&str] = if dnssec {
        &["+dnssec"]
    } else {
        &["+nodnssec", "+noadflag"]
    };
    let out = dig(d.dns, &[flags, &["+rec", qtype, name]].concat());
    assert!(
        out.contains("status: "),
        "no answer from the front-end:
{out}"
    );
    out
}

/// The types of the records in one section of a `dig` answer (`ANSWER`, `AUTHORITY`).
fn section_types<'a>(out: &'a str, section: &str) -> Vec<&'a str> {
    let head = format!(";; {section} SECTION:");
    out.lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect()
}

fn front_end_passes_dnssec_records_to_do_clients(mode: &str, test: &str) {
    let Some((_lab, d)) = lab_and_daemon(test, mode) else {
        return;
    };
    // TLSA: the records, their RRSIG and AD for a DO client; neither for a plain one.
    let out = front_dig(&d, true, "TLSA", "_25._tcp.mx.signed.test");
    let answer = section_types(&out, "ANSWER");
    assert!(
        answer.contains(&"TLSA") && answer.contains(&"RRSIG"),
        "{out}"
    );
    assert!(dig_flags(&out).contains(&"ad"), "{out}");
    let out = front_dig(&d, false, "TLSA", "_25._tcp.mx.signed.test");
    assert_eq!(section_types(&out, "ANSWER"), ["TLSA"], "{out}");
    assert!(!dig_flags(&out).contains(&"ad"), "{out}");
    // An authenticated denial: the SOA, NSEC and their RRSIGs in the authority section.
    let out = front_dig(&d, true, "TLSA", "_25._tcp.mx2.signed.test");
    assert_eq!(dig_status(&out), "NOERROR", "{out}");
    let authority = section_types(&out, "AUTHORITY");
    assert!(
        authority.contains(&"SOA") && authority.contains(&"NSEC") && authority.contains(&"RRSIG"),
        "{out}"
    );
    assert!(dig_flags(&out).contains(&"ad"), "{out}");
    let out = front_dig(&d, false, "TLSA", "_25._tcp.mx2.signed.test");
    assert_eq!(section_types(&out, "AUTHORITY"), ["SOA"], "{out}");
    // A DKIM key (validated) and the other types (forwarded): their RRSIGs for DO only.
    for (qtype, name) in [
        ("TXT", "lab._domainkey.signed.test"),
        ("TXT", "signed.test"),
        ("TXT", "_dmarc.signed.test"),
        ("A", "mx.signed.test"),
        ("DNSKEY", "signed.test"),
    ] {
        let out = front_dig(&d, true, qtype, name);
        let answer = section_types(&out, "ANSWER");
        assert!(
            answer.contains(&qtype) && answer.contains(&"RRSIG"),
            "{qtype} {name} with DO:\n{out}"
        );
        let out = front_dig(&d, false, qtype, name);
        let answer = section_types(&out, "ANSWER");
        assert!(
            answer.contains(&qtype) && !answer.contains(&"RRSIG"),
            "{qtype} {name} without DO:\n{out}"
        );
    }
    // The unsigned zone has no signatures to pass.
    let out = front_dig(&d, true, "TLSA", "_25._tcp.mx.unsigned.test");
    assert_eq!(section_types(&out, "ANSWER"), ["TLSA"], "{out}");
    assert!(!dig_flags(&out).contains(&"ad"), "{out}");
}

macro_rules! both_modes {
    ($($check:ident => $validate:ident, $upstream_ad:ident;)*) => {$(
        #[test]
        fn $validate() {
            $check("validate", stringify!($validate));
        }
        #[test]
        fn $upstream_ad() {
            $check("upstream_ad", stringify!($upstream_ad));
        }
    )*};
}

both_modes! {
    signed_tlsa_is_secure_with_records =>
        validate_signed_tlsa_is_secure_with_records,
        upstream_ad_signed_tlsa_is_secure_with_records;
    unsigned_tlsa_is_insecure_with_records =>
        validate_unsigned_tlsa_is_insecure_with_records,
        upstream_ad_unsigned_tlsa_is_insecure_with_records;
    broken_tlsa_is_dnssec_bogus =>
        validate_broken_tlsa_is_dnssec_bogus,
        upstream_ad_broken_tlsa_is_dnssec_bogus;
    no_tlsa_in_signed_zone_is_secure_without_records =>
        validate_no_tlsa_in_signed_zone_is_secure_without_records,
        upstream_ad_no_tlsa_in_signed_zone_is_secure_without_records;
    unsigned_tlsa_cost_is_bounded_and_repeat_is_free =>
        validate_unsigned_tlsa_cost_is_bounded_and_repeat_is_free,
        upstream_ad_unsigned_tlsa_cost_is_bounded_and_repeat_is_free;
    dmarc_and_spf_work_in_all_three_zones =>
        validate_dmarc_and_spf_work_in_all_three_zones,
        upstream_ad_dmarc_and_spf_work_in_all_three_zones;
    dkim_keys_carry_their_dnssec_status =>
        validate_dkim_keys_carry_their_dnssec_status,
        upstream_ad_dkim_keys_carry_their_dnssec_status;
    front_end_passes_dnssec_records_to_do_clients =>
        validate_front_end_passes_dnssec_records_to_do_clients,
        upstream_ad_front_end_passes_dnssec_records_to_do_clients;
}

/// With the IANA root anchors (no `trust_anchor`) over the lab's private root, no anchor's
/// DNSKEY validates through the upstream: DKIM keys are answered `indeterminate` (DKIM does not
/// need DNSSEC, and the failure is not the key's), while TLSA stays strict (`dnssec_bogus`).
#[test]
fn an_unreachable_anchor_leaves_dkim_indeterminate_and_tlsa_bogus() {
    let Some(lab) = Lab::start("an_unreachable_anchor_leaves_dkim_indeterminate_and_tlsa_bogus")
    else {
        return;
    };
    let d = Daemon::start(lab.iter, "validate", None);
    for zone in ["signed.test", "unsigned.test"] {
        let v = d.ok(&["dkim", "lab", zone]);
        assert_eq!(dnssec(&v), "indeterminate", "{zone}: {v}");
        assert!(v.to_string().contains("11qYAYKxCrfVS"), "{zone}: {v}");
    }
    d.bogus(&["tlsa", "mx.signed.test", "25"]);
}

/// The trust anchor file may hold the root KSK as a DNSKEY line instead of a DS (both are
/// Unbound's `trust-anchor-file` format).
#[test]
fn validate_accepts_a_dnskey_trust_anchor() {
    let Some(lab) = Lab::start("validate_accepts_a_dnskey_trust_anchor") else {
        return;
    };
    let d = Daemon::start(lab.iter, "validate", Some(&lab.dnskey_anchor()));
    let v = d.ok(&["tlsa", "mx.signed.test", "25"]);
    assert_eq!(dnssec(&v), "secure", "{v}");
    assert_lab_tlsa(&v);
    let v = d.ok(&["tlsa", "mx.unsigned.test", "25"]);
    assert_eq!(dnssec(&v), "insecure", "{v}");
}
