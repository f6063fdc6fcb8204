//! Issue 12, availability: the daemon on a real mail stream with careless neighbours and
//! hostile clients. Each test drives the real thing: the socket server started in process over
//! a resolver whose upstream is the loopback authority (`tests/dnsserver/`), or the real daemon
//! binary; real Unix-socket and TCP connections.
//!
//! - item 9: a second daemon does not take over a live socket; stop removes only our inode; a
//!   failed start leaves no socket file;
//! - item 10: the admin port is bounded (connections, header and idle timeouts) and cannot
//!   starve the filters' socket of descriptors;
//! - item 11: a client that never reads holds a bounded amount of memory;
//! - item 12: idle and stalled connections are closed; over `max_connections` a connection is
//!   closed at once and counted; `/ready` says 503 while the socket is full;
//! - item 14: the snapshot is written periodically (a SIGKILL restarts warm), and an unwritable
//!   snapshot directory is reported at start;
//! - item 17: negative or repeated JSON ids are `bad_json`; rejected frames are counted.

mod common;
mod dnsserver;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::metric;
use dnsserver::{TestDns, Zone};
use mailpolicyd::client::Client;
use mailpolicyd::proto::frame::{FrameBuf, Framing, MAX_RESPONSE_FRAME};
use mailpolicyd::proto::{self, Op, Outcome, Request, Response};
use mailpolicyd::resolve::Source;
use mailpolicyd::serve::{self, SocketConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

fn zones() -> Vec<Zone> {
    vec![
        Zone::new("test.", 300),
        Zone::new("example.test.", 300).txt("@", 3600, &["v=spf1 ip4:192.0.2.0/24 -all"]),
    ]
}

type Daemon = common::Daemon<TestDns>;

async fn start_with(socket_cfg: SocketConfig) -> Daemon {
    let dns = TestDns::start(zones()).await;
    start_on(dns, socket_cfg, Duration::from_millis(500)).await
}

async fn start_on(dns: TestDns, socket_cfg: SocketConfig, upstream_timeout: Duration) -> Daemon {
    let mut cfg = common::resolver_config(dns.addr, upstream_timeout);
    common::no_rate_limit(&mut cfg);
    common::serve_resolver(cfg, socket_cfg, dns)
}

async fn ping(path: &Path) -> bool {
    let Ok(c) = Client::connect(path).await else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), c.call(Op::Ping)).await,
        Ok(Ok(_))
    )
}

/// True if the peer closed `s` within `within` (end of file or reset).
async fn closed_within(s: &mut (impl AsyncReadExt + Unpin), within: Duration) -> bool {
    let mut b = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> u16 {
    http_text(addr, path)
        .await
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- the daemon binary

/// A daemon child process, killed if a test fails before stopping it.
struct Kid(Child);

impl std::ops::Deref for Kid {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Kid {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn daemon_cmd(socket: &Path, dns: &TestDns) -> Command {
    let mut c = common::daemon_command(socket, dns.addr);
    c.args(["--admin", ""]);
    c
}

async fn wait_up(path: &Path, child: &mut Kid) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ping(path).await {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the daemon exited: {status}");
        }
        assert!(Instant::now() < deadline, "the daemon did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn wait_exit(child: &mut Kid) -> std::process::ExitStatus {
    common::wait_exit(&mut child.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// A DNS server for `zones`, a new temporary directory and the socket path `mp.sock` in it.
async fn dns_and_socket(zones: Vec<Zone>) -> (TestDns, tempfile::TempDir, PathBuf) {
    let dns = TestDns::start(zones).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mp.sock");
    (dns, dir, socket)
}

/// Spawns `cmd` (a daemon on `socket`) and waits until the socket answers.
async fn spawn_up(cmd: &mut Command, socket: &Path) -> Kid {
    let mut child = cmd.spawn().map(Kid).unwrap();
    wait_up(socket, &mut child).await;
    child
}

/// Stops the daemon with SIGTERM and asserts that it exited 0.
fn stop_cleanly(child: &mut Kid) {
    signal(child, "-TERM");
    assert_eq!(wait_exit(child).code(), Some(0));
}

/// Kills the daemon (SIGKILL) and returns what it wrote on its piped stdout and stderr.
fn kill_for_output(child: &mut Kid) -> String {
    signal(child, "-KILL");
    let out = std::mem::replace(&mut child.0, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A daemon on `socket`, its stderr piped.
fn spawn_piped(socket: &Path, dns: &TestDns) -> Kid {
    Kid(daemon_cmd(socket, dns)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap())
}

/// All of a daemon's piped stderr.
fn stderr_text(child: &mut Kid) -> String {
    let mut err = String::new();
    let mut pipe = child.stderr.take().unwrap();
    pipe.read_to_string(&mut err).unwrap();
    err
}

/// `n` TCP connections to `addr`, left idle.
async fn tcp_connections(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    held
}

/// A loopback TCP address that was free a moment ago (for the daemon's admin port).
fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------- item 9

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_does_not_take_over_a_live_socket() {
    let (dns, _dir, socket) = dns_and_socket(zones()).await;
    let mut first = Kid(daemon_cmd(&socket, &dns).spawn().unwrap());
    wait_up(&socket, &mut first).await;
    let inode = std::fs::metadata(&socket).unwrap().ino();

    // A second daemon on the same path: exit 70, a clear message, the first one untouched.
    let mut second = spawn_piped(&socket, &dns);
    // (Were it to take the socket over, it would run on: `wait_exit` fails after 20 s.)
    assert_eq!(wait_exit(&mut second).code(), Some(70));
    let err = stderr_text(&mut second);
    assert!(err.contains("in use"), "{err}");
    assert_eq!(std::fs::metadata(&socket).unwrap().ino(), inode);
    assert!(ping(&socket).await, "the first daemon is still reachable");

    // Someone replaces the path while the first daemon runs: at stop, it leaves the new one.
    std::fs::remove_file(&socket).unwrap();
    let newer = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let newer_inode = std::fs::metadata(&socket).unwrap().ino();
    stop_cleanly(&mut first);
    assert_eq!(
        std::fs::metadata(&socket).map(|m| m.ino()).ok(),
        Some(newer_inode),
        "stop removed a socket that was not its own"
    );
    drop(newer);

    // The newer listener is gone but its file stayed: a dead socket is replaced.
    let mut third = Kid(daemon_cmd(&socket, &dns).spawn().unwrap());
    wait_up(&socket, &mut third).await;
    stop_cleanly(&mut third);
    assert!(!socket.exists(), "a clean stop removes its own socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_leaves_no_socket_file() {
    let (dns, _dir, socket) = dns_and_socket(zones()).await;
    // The admin port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = common::daemon_command(&socket, dns.addr)
        .args(["--admin", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(70));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "the failed start left its socket file behind"
    );
}

// ---------------------------------------------------------------- item 10

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_are_bounded_and_timed_out() {
    let d = start_with(SocketConfig::default()).await;
    d.service.set_ready(true);
    let listener = serve::admin::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve::admin::serve_with(
        listener,
        d.service.clone(),
        serve::admin::AdminConfig {
            max_connections: 8,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        },
        stop.clone(),
    ));
    // Eight idle connections take every slot.
    let mut idle = tcp_connections(addr, 8).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The ninth is closed at once, and counted.
    let mut ninth = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut ninth, Duration::from_millis(500)).await);
    assert!(metric(&d.service, "mailpolicyd_admin_connections_rejected_total") >= 1);
    // The filters' socket is not affected.
    assert!(ping(&d.socket).await);
    // The idle ones are closed by the timeout (1 s here), not held for ever.
    let started = Instant::now();
    for s in &mut idle {
        assert!(closed_within(s, Duration::from_secs(3)).await);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // Headers trickled a byte at a time (never idle for a second) are cut at the header timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let request = b"GET /live HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for b in request {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    assert!(
        cut || closed_within(&mut slow, Duration::from_millis(500)).await,
        "a slow header was not cut"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    // Slots are free again: the probes work.
    assert_eq!(http_get(addr, "/live").await, 200);
    assert_eq!(http_get(addr, "/ready").await, 200);
    stop.cancel();
    d.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_cannot_starve_the_filter_socket() {
    let (dns, _dir, socket) = dns_and_socket(zones()).await;
    let port = free_port();
    // With prlimit (util-linux), the daemon gets 256 descriptors, soft and hard: far fewer than
    // the connections opened below.
    let mut cmd = if Path::new("/usr/bin/prlimit").exists() {
        let mut c = Command::new("/usr/bin/prlimit");
        c.args(["--nofile=256:256", env!("CARGO_BIN_EXE_mailpolicyd")]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
    };
    let mut child = spawn_up(
        cmd.args(common::serve_args(&socket, dns.addr))
            .args(["--admin", &port.to_string()])
            .env("MAILPOLICYD_LOG_LEVEL", "error"),
        &socket,
    )
    .await;
    // 1,000 idle TCP connections to the admin port (no permission needed).
    let mut held = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = tokio::net::TcpStream::connect(port).await {
            held.push(s);
        }
    }
    // The filters' socket still accepts and answers, many times over.
    for _ in 0..20 {
        assert!(ping(&socket).await, "the filter socket starved");
    }
    let fds = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .count();
    assert!(fds < 200, "{fds} descriptors open");
    drop(held);
    stop_cleanly(&mut child);
}

// ---------------------------------------------------------------- item 11

/// `test.` with `big.test` holding an SPF record of ~40 KB (an answer as big).
fn big_zones() -> Vec<Zone> {
    let mut spf = String::from("v=spf1");
    let mut i = 0u32;
    while spf.len() < 40_000 {
        spf.push_str(&format!(" ip4:10.{}.{}.0/24", i / 256 % 256, i % 256));
        i += 1;
    }
    spf.push_str(" -all");
    vec![
        Zone::new("test.", 300),
        Zone::new("big.test.", 300).long_txt("@", 3600, &spf),
    ]
}

/// Binary frames asking `spf domain`, ids `0..n`.
fn spf_frames(domain: &str, n: u64) -> Vec<u8> {
    let mut frames = Vec::new();
    for id in 0..n {
        proto::encode_frame(
            &Request {
                id,
                op: Op::Spf {
                    domain: domain.into(),
                },
            },
            &mut frames,
        )
        .unwrap();
    }
    frames
}

/// Splits `bytes` into whole binary frames (each must decode as a response); a cut frame can
/// only be the last thing (its prefix is left over).
fn whole_frames(bytes: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut frames = FrameBuf::new(Framing::Binary, MAX_RESPONSE_FRAME);
    frames.feed(bytes);
    while let Some(payload) = frames.next_frame().unwrap() {
        let r: Response = postcard::from_bytes(payload)
            .unwrap_or_else(|e| panic!("frame {} is garbage: {e}", out.len()));
        out.push(r);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_holds_bounded_memory() {
    let (dns, _dir, socket) = dns_and_socket(big_zones()).await;
    let mut child = spawn_up(
        daemon_cmd(&socket, &dns).env("MAILPOLICYD_SOCKET_MAX_PENDING_BYTES", "262144"),
        &socket,
    )
    .await;
    let c = Client::connect(&socket).await.unwrap();
    let warm = c.spf("big.test").await.unwrap();
    assert_eq!(warm.source, Source::Miss);
    let size = serde_json::to_vec(&warm.answer).unwrap().len();
    assert!(size > 30_000, "the answer is only {size} bytes");
    let before = rss_kib(child.id());
    // Eight connections write requests for it (cache hits) as fast as they can and never read.
    let frames = spf_frames("big.test", 60_000);
    let mut writers = Vec::new();
    for _ in 0..8 {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let frames = frames.clone();
        writers.push(std::thread::spawn(move || {
            s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut sent = 0;
            for chunk in frames.chunks(4096) {
                match s.write_all(chunk) {
                    Ok(()) => sent += chunk.len(),
                    Err(_) => break,
                }
            }
            (s, sent)
        }));
    }
    let writers: Vec<_> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    // Every connection was stopped: the server no longer reads it.
    for (_, sent) in &writers {
        assert!(*sent < frames.len(), "all {sent} bytes accepted");
    }
    let during = rss_kib(child.id());
    // Unbounded, 8 connections × the requests of one 16 KiB read × 40 KB each is over 100 MB.
    assert!(
        during.saturating_sub(before) < 40 * 1024,
        "RSS grew from {before} KiB to {during} KiB"
    );
    // Reading drains it: the connection was paused, not dropped.
    let (mut s, _) = writers.into_iter().next().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut frames = FrameBuf::new(Framing::Binary, MAX_RESPONSE_FRAME);
    for _ in 0..20 {
        frames.read_frame(&mut s).unwrap();
    }
    assert!(ping(&socket).await);
    signal(&child, "-KILL");
    let _ = wait_exit(&mut child);
}

// ---------------------------------------------------------------- item 12

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_and_a_full_socket_is_not_ready() {
    let d = start_with(SocketConfig {
        max_connections: 4,
        idle_timeout: Duration::from_secs(1),
        ..SocketConfig::default()
    })
    .await;
    d.service.set_ready(true);
    let (admin, stop) = common::serve_admin(&d.service).await;
    assert_eq!(http_get(admin, "/ready").await, 200);

    // Four connections send half a frame and stall: the socket is full.
    let mut half = Vec::new();
    for _ in 0..4 {
        let mut s = UnixStream::connect(&d.socket).await.unwrap();
        s.write_all(&[0, 0, 0, 40, 1, 2]).await.unwrap();
        half.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http_get(admin, "/ready").await, 503, "full, yet ready");
    // A fifth is closed at once (end of file: the client may retry), and counted.
    // Its request, written right after connecting as filters do, does not turn the close into
    // a reset: the client reads an end of file.
    let mut fifth = UnixStream::connect(&d.socket).await.unwrap();
    let _ = fifth.write_all(b"{\"id\":1,\"op\":\"ping\"}\n").await;
    let mut b = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut b)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "a rejected connection must read EOF, got {read:?}"
    );
    assert_eq!(
        metric(&d.service, "mailpolicyd_connections_rejected_total"),
        1
    );
    // The stalled ones are closed after the idle timeout; then the socket serves again.
    for s in &mut half {
        assert!(closed_within(s, Duration::from_secs(3)).await);
    }
    assert!(ping(&d.socket).await);
    assert_eq!(http_get(admin, "/ready").await, 200);
    assert!(metric(&d.service, "mailpolicyd_connections_timed_out_total") >= 4);

    // A frame trickled a byte at a time (never idle for a second) is cut too.
    let mut slow = UnixStream::connect(&d.socket).await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    slow.write_all(&[0, 0, 0, 200]).await.unwrap();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if slow.write_all(&[7]).await.is_err() {
            cut = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert!(cut || closed_within(&mut slow, Duration::from_millis(200)).await);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A connection that asks, then stays idle, is closed too, after its answers.
    let mut quiet = UnixStream::connect(&d.socket).await.unwrap();
    quiet
        .write_all(b"{\"id\":3,\"op\":\"ping\"}\n")
        .await
        .unwrap();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(&mut quiet);
    r.read_line(&mut line).await.unwrap();
    assert!(line.contains("\"id\":3"), "{line}");
    assert!(closed_within(&mut quiet, Duration::from_secs(3)).await);
    stop.cancel();
    d.shutdown.cancel();
}

// ---------------------------------------------------------------- item 14

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_is_written_while_running_so_sigkill_restarts_warm() {
    let zone =
        Zone::new("warm.test.", 300).numbered(50, |i| format!("v=spf1 ip4:10.0.{i}.0/24 -all"));
    let dns = TestDns::start(vec![zone]).await;
    let dir = tempfile::tempdir().unwrap();
    let (socket, snapshot) = (dir.path().join("mp.sock"), dir.path().join("cache.snap"));
    let run = |dns: &TestDns| {
        daemon_cmd(&socket, dns)
            .args(["--snapshot", snapshot.to_str().unwrap()])
            .env("MAILPOLICYD_LIFECYCLE_SNAPSHOT_INTERVAL", "1")
            .spawn()
            .map(Kid)
            .unwrap()
    };
    let mut child = run(&dns);
    wait_up(&socket, &mut child).await;
    let c = Client::connect(&socket).await.unwrap();
    for i in 0..50 {
        c.spf(&format!("n{i}.warm.test")).await.unwrap();
    }
    assert_eq!(dns.log.len(), 50);
    // Within a couple of intervals the snapshot holds them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(snapshot.exists(), "no snapshot written while running");
    signal(&child, "-KILL");
    let _ = wait_exit(&mut child);
    drop(c);
    // The SIGKILLed daemon left a dead socket behind: the restart replaces it and is warm.
    let mut child = run(&dns);
    wait_up(&socket, &mut child).await;
    let c = Client::connect(&socket).await.unwrap();
    for i in 0..50 {
        assert_eq!(
            c.spf(&format!("n{i}.warm.test")).await.unwrap().source,
            Source::Hit
        );
    }
    assert_eq!(dns.log.len(), 50, "no upstream query after the restart");
    // No temporary file is left next to the snapshot.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    stop_cleanly(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_snapshot_directory_is_reported_at_start() {
    let (dns, dir, socket) = dns_and_socket(zones()).await;
    // A directory that cannot be written, whoever runs the test (even root): it is a file.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let snapshot = not_a_dir.join("cache.snap");
    let mut child = spawn_up(
        daemon_cmd(&socket, &dns)
            .args(["--snapshot", snapshot.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        &socket,
    )
    .await;
    // Said at start, while the daemon runs.
    let text = kill_for_output(&mut child);
    assert!(text.contains("not writable"), "{text}");
}

// ---------------------------------------------------------------- item 17

fn code(r: &Response) -> &str {
    match &r.result {
        Outcome::Ok(_) => "ok",
        Outcome::Error(e) => &e.code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_negative_or_repeated_id_is_bad_json_and_bad_frames_are_counted() {
    let d = start_with(SocketConfig::default()).await;
    let s = UnixStream::connect(&d.socket).await.unwrap();
    let mut s = tokio::io::BufReader::new(s);
    let mut ask = async |line: &str| -> Response {
        s.get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_line(&mut out).await.unwrap();
        serde_json::from_str(&out).unwrap()
    };
    let r = ask("{\"id\": -1, \"op\": \"ping\"}").await;
    assert_eq!((r.id, code(&r)), (0, "bad_json"));
    let r = ask("{\"id\": 1, \"id\": 2, \"op\": \"ping\"}").await;
    assert_eq!(code(&r), "bad_json");
    let r = ask("{\"id\": 1.5, \"op\": \"ping\"}").await;
    assert_eq!(code(&r), "bad_json");
    let r = ask("{\"id\": 4, \"op\": {\"spf\": {\"domain\": \"a\", \"domain\": \"b\"}}}").await;
    assert_eq!(code(&r), "bad_json");
    let r = ask("{\"id\": 5, \"op\": \"ping\", \"op\": \"stats\"}").await;
    assert_eq!(code(&r), "bad_json");
    let r = ask("{\"op\": \"ping\"}").await;
    assert_eq!(code(&r), "bad_json");
    // Client bytes in the error text (a new line in an op name) stay one answer line.
    let r = ask("{\"id\": 6, \"op\": {\"spf\": {\"domain\": 1, \"x\\nmailpolicyd: forged\": 2}}}")
        .await;
    assert_eq!(code(&r), "bad_json");
    // A well-formed request for an operation this build does not know is still unknown_op.
    let r = ask("{\"id\": 7, \"op\": \"frobnicate\"}").await;
    assert_eq!((r.id, code(&r)), (7, "unknown_op"));
    let r = ask("{\"id\": 8, \"op\": {\"frobnicate\": {\"x\": 1}}}").await;
    assert_eq!((r.id, code(&r)), (8, "unknown_op"));
    let r = ask("{\"id\": 9, \"op\": \"ping\"}").await;
    assert_eq!((r.id, code(&r)), (9, "ok"));
    assert_eq!(
        metric(
            &d.service,
            "mailpolicyd_bad_frames_total{reason=\"bad_json\"}"
        ),
        7
    );
    // Oversized and undecodable binary frames are counted by reason.
    let mut big = UnixStream::connect(&d.socket).await.unwrap();
    big.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(closed_within(&mut big, Duration::from_secs(2)).await);
    let mut garbage = UnixStream::connect(&d.socket).await.unwrap();
    garbage.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    assert!(closed_within(&mut garbage, Duration::from_secs(2)).await);
    assert_eq!(
        metric(
            &d.service,
            "mailpolicyd_bad_frames_total{reason=\"frame_too_large\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &d.service,
            "mailpolicyd_bad_frames_total{reason=\"bad_frame\"}"
        ),
        1
    );
    assert!(
        metric(
            &d.service,
            "mailpolicyd_requests_total{op=\"ping\",result=\"ok\"}"
        ) >= 1,
        "the connection kept working"
    );
    d.shutdown.cancel();
}

// ---------------------------------------------------------------- review of items 9–17

/// Item 12 (and 11) on the miss path: a client that asks and never reads, with answers still
/// coming from upstream. The first write that times out closes the connection; the tasks left
/// skip their writes, so the slot is free after about the idle timeout plus the upstream wait
/// (not one idle timeout per request), and what the client did get is whole frames then an end
/// of file, never a whole frame written after a cut one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_writer_on_the_miss_path_frees_its_slot_and_never_misaligns_frames() {
    let dns = TestDns::start(big_zones()).await;
    dns.delay("big.test", Duration::from_millis(300));
    let d = start_on(
        dns,
        SocketConfig {
            max_connections: 1,
            idle_timeout: Duration::from_secs(1),
            ..SocketConfig::default()
        },
        Duration::from_secs(2),
    )
    .await;
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    // 200 questions (misses, waiting on the slow upstream) for ~8 MB of answers.
    s.write_all(&spf_frames("big.test", 200)).unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!d.service.socket_accepts(), "the one slot is taken");
    while !d.service.socket_accepts() {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the slot is still held after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ping(&d.socket).await, "the freed slot serves");
    // What the stuck client received: whole answers, then the end (a cut frame only last).
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let frames = whole_frames(&got);
    assert!(!frames.is_empty());
    assert!(
        frames.len() < 200,
        "{} answers fit a socket buffer?",
        frames.len()
    );
    for r in &frames {
        assert!(r.id < 200);
        assert_eq!(code(r), "ok");
    }
    assert!(metric(&d.service, "mailpolicyd_connections_timed_out_total") >= 1);
    d.shutdown.cancel();
}

/// Item 11 on the miss path: misses completing together do not each hold their encoded answer
/// while the client does not read (8 connections × 256 misses × 40 KB would be 80 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_misses_holds_bounded_memory() {
    let dns = TestDns::start(big_zones()).await;
    dns.delay("big.test", Duration::from_secs(1));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mp.sock");
    let mut child = spawn_up(
        daemon_cmd(&socket, &dns).env("MAILPOLICYD_SOCKET_MAX_PENDING_BYTES", "262144"),
        &socket,
    )
    .await;
    let before = rss_kib(child.id());
    let frames = spf_frames("big.test", 256);
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(&frames).unwrap();
        held.push(s);
    }
    // The upstream answers after a second; every question of every connection is then done.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rss_kib(child.id());
    eprintln!("RSS {before} KiB → {during} KiB");
    assert!(
        during.saturating_sub(before) < 24 * 1024,
        "RSS grew from {before} KiB to {during} KiB"
    );
    // Paused, not dropped: a client that reads gets all 256 answers, whole.
    let mut s = held.pop().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ids = Vec::new();
    let mut frames = FrameBuf::new(Framing::Binary, MAX_RESPONSE_FRAME);
    for _ in 0..256 {
        let r: Response = postcard::from_bytes(frames.read_frame(&mut s).unwrap()).unwrap();
        assert_eq!(code(&r), "ok");
        ids.push(r.id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..256).collect::<Vec<u64>>());
    signal(&child, "-KILL");
    let _ = wait_exit(&mut child);
}

/// Item 9: two daemons started at the same moment on one path where a crash left a dead
/// socket: the lock on `<path>.lock` lets exactly one replace it and serve; the other exits 70.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_starting_at_once_on_a_dead_socket_one_serves() {
    let dns = TestDns::start(zones()).await;
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let socket = dir.path().join(format!("mp{round}.sock"));
        // A crashed daemon's leftover: a socket file nobody accepts on.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let mut a = spawn_piped(&socket, &dns);
        let mut b = spawn_piped(&socket, &dns);
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut loser, mut winner, status) = loop {
            if let Some(st) = a.try_wait().unwrap() {
                break (a, b, st);
            }
            if let Some(st) = b.try_wait().unwrap() {
                break (b, a, st);
            }
            assert!(Instant::now() < deadline, "neither daemon stopped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status.code(), Some(70));
        let err = stderr_text(&mut loser);
        assert!(err.contains("in use"), "{err}");
        wait_up(&socket, &mut winner).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(winner.try_wait().unwrap().is_none(), "the winner stopped");
        assert!(ping(&socket).await, "the socket answers");
        stop_cleanly(&mut winner);
        assert!(!socket.exists(), "a clean stop removes its own socket");
    }
}

/// Item 9: a regular file or a symlink at the socket path is not a socket: exit 70, left as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_or_symlink_at_the_socket_path_is_left_alone() {
    let (dns, dir, socket) = dns_and_socket(zones()).await;
    std::fs::write(&socket, b"precious").unwrap();
    let out = daemon_cmd(&socket, &dns).output().unwrap();
    assert_eq!(out.status.code(), Some(70));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a socket"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&socket).unwrap(), b"precious");

    let target = dir.path().join("target");
    std::fs::write(&target, b"also precious").unwrap();
    std::fs::remove_file(&socket).unwrap();
    std::os::unix::fs::symlink(&target, &socket).unwrap();
    let out = daemon_cmd(&socket, &dns).output().unwrap();
    assert_eq!(out.status.code(), Some(70));
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(std::fs::read_link(&socket).unwrap(), target);
    assert_eq!(std::fs::read(&target).unwrap(), b"also precious");
}

async fn http_text(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    out
}

/// Item 10 through the real configuration: `admin.max_connections` set by
/// `MAILPOLICYD_ADMIN_MAX_CONNECTIONS` bounds the real daemon's admin port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_max_connections_from_the_environment_bounds_the_daemon() {
    let (dns, _dir, socket) = dns_and_socket(zones()).await;
    let port = free_port();
    let mut child = spawn_up(
        common::daemon_command(&socket, dns.addr)
            .args(["--admin", &port.to_string()])
            .env("MAILPOLICYD_ADMIN_MAX_CONNECTIONS", "2"),
        &socket,
    )
    .await;
    assert_eq!(http_get(port, "/live").await, 200);
    let idle = tcp_connections(port, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The third is closed at once (the default idle timeout is 5 s).
    let mut third = tokio::net::TcpStream::connect(port).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(1)).await);
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = http_text(port, "/metrics").await;
    let rejected: u64 = metrics
        .lines()
        .find(|l| l.starts_with("mailpolicyd_admin_connections_rejected_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(rejected >= 1, "{metrics}");
    stop_cleanly(&mut child);
}

/// Item 14: the snapshot is rewritten every interval (not only once), into a directory created
/// at start without a false warning; a crash's leftover temporary file is removed at start;
/// `snapshot_interval = 0` writes only at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_is_rewritten_every_interval_and_zero_writes_only_at_stop() {
    let (dns, dir, socket) = dns_and_socket(zones()).await;
    let snapshot = dir.path().join("not/yet/cache.snap");
    let mut child = spawn_up(
        daemon_cmd(&socket, &dns)
            .args(["--snapshot", snapshot.to_str().unwrap()])
            .env("MAILPOLICYD_LIFECYCLE_SNAPSHOT_INTERVAL", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        &socket,
    )
    .await;
    let c = Client::connect(&socket).await.unwrap();
    c.spf("example.test").await.unwrap();
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while mtime(&snapshot).is_none() {
        assert!(Instant::now() < deadline, "no first periodic snapshot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = mtime(&snapshot);
    let deadline = Instant::now() + Duration::from_secs(5);
    while mtime(&snapshot) == first {
        assert!(Instant::now() < deadline, "no second periodic snapshot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
    let text = kill_for_output(&mut child);
    assert!(!text.contains("not writable"), "{text}");

    // Interval 0: nothing while running, the snapshot at a clean stop; a leftover temp file
    // (a crash in the middle of a write) is removed at start.
    std::fs::remove_file(&snapshot).unwrap();
    let stale = snapshot.with_file_name("cache.snap.tmp.4000000");
    std::fs::write(&stale, b"half").unwrap();
    let mut child = spawn_up(
        daemon_cmd(&socket, &dns)
            .args(["--snapshot", snapshot.to_str().unwrap()])
            .env("MAILPOLICYD_LIFECYCLE_SNAPSHOT_INTERVAL", "0"),
        &socket,
    )
    .await;
    let c = Client::connect(&socket).await.unwrap();
    c.spf("example.test").await.unwrap();
    assert!(!stale.exists(), "the stale temporary file is still there");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!snapshot.exists(), "written while running with interval 0");
    drop(c);
    stop_cleanly(&mut child);
    assert!(snapshot.exists(), "not written at stop");
}
