//! Helpers shared by the integration tests.

// Each test crate uses some of them.
#![allow(dead_code)]

use std::path::PathBuf;

/// The outside conformance suites (`../shared/conformance`, or `MAILPOLICYD_CONFORMANCE_DIR`).
/// Returns `None`, after printing one line saying why, when the folder is absent, unless
/// `MAILPOLICYD_REQUIRE_CONFORMANCE` is set (CI sets it): then absence is a failure.
pub fn conformance_dir(suite: &str) -> Option<PathBuf> {
    let base = std::env::var_os("MAILPOLICYD_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"));
    let dir = base.join(suite);
    if dir.is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "conformance suite {suite:?} skipped: {} not found (set MAILPOLICYD_CONFORMANCE_DIR)",
        dir.display()
    );
    assert!(
        std::env::var_os("MAILPOLICYD_REQUIRE_CONFORMANCE").is_none(),
        "{msg}"
    );
    println!("{msg}");
    None
}

/// The daemon's socket served on a fresh temporary directory (`mp.sock` in `dir`).
pub struct Socket {
    pub path: PathBuf,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The `serve::run` task: it ends once `shutdown` is cancelled and the drain is over.
    pub task: tokio::task::JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

/// Binds `mp.sock` in a new temporary directory with `cfg`'s mode and serves `service` on it
/// (`serve::run`, spawned) until the returned `shutdown` is cancelled. Call inside a runtime.
pub fn serve_socket(
    service: &std::sync::Arc<mailpolicyd::serve::Service>,
    cfg: mailpolicyd::serve::SocketConfig,
) -> Socket {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mp.sock");
    let listener = mailpolicyd::serve::socket::bind(&path, cfg.mode).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(mailpolicyd::serve::run(
        listener,
        service.clone(),
        cfg,
        shutdown.clone(),
    ));
    Socket {
        path,
        shutdown,
        task,
        dir,
    }
}

/// The socket server in process: a resolver behind [`serve_socket`], with what its upstream
/// needs kept alive as long as it runs (`dns`: the test's DNS server, or `()`).
pub struct Daemon<U> {
    pub socket: PathBuf,
    pub service: std::sync::Arc<mailpolicyd::serve::Service>,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The `serve::run` task: it ends once `shutdown` is cancelled and the drain is over.
    pub task: tokio::task::JoinHandle<()>,
    pub dns: U,
    pub dir: tempfile::TempDir,
}

/// Serves a resolver with `cfg` on a fresh socket with `socket_cfg` (see [`Daemon`]). Call
/// inside a runtime.
pub fn serve_resolver<U>(
    cfg: mailpolicyd::resolve::ResolverConfig,
    socket_cfg: mailpolicyd::serve::SocketConfig,
    dns: U,
) -> Daemon<U> {
    let service =
        mailpolicyd::serve::Service::new(mailpolicyd::resolve::Resolver::new(cfg).unwrap());
    let sock = serve_socket(&service, socket_cfg);
    Daemon {
        socket: sock.path,
        service,
        shutdown: sock.shutdown,
        task: sock.task,
        dns,
        dir: sock.dir,
    }
}

/// A resolver configuration that asks `server` (the test's DNS server), each attempt bounded by
/// `timeout`.
pub fn resolver_config(
    server: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> mailpolicyd::resolve::ResolverConfig {
    let mut cfg = mailpolicyd::resolve::ResolverConfig::default();
    cfg.upstream.servers = vec![server];
    cfg.upstream.timeout = timeout;
    cfg
}

/// Lifts the per-organization rate limit out of a test's way.
pub fn no_rate_limit(cfg: &mut mailpolicyd::resolve::ResolverConfig) {
    cfg.limits.per_second = 100_000;
    cfg.limits.burst = 100_000;
}

/// Runs `cmd`, asserts it exited 0 (showing the program and its stderr otherwise) and returns
/// its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        cmd.get_program().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `mailpolicyd query --socket SOCKET --json ARGS…` as a subprocess: asserts it succeeded
/// and returns its JSON output.
pub fn query_json(socket: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
            .args(["query", "--socket", socket.to_str().unwrap(), "--json"])
            .args(args),
    );
    serde_json::from_slice(&out).unwrap()
}

/// Serves the admin endpoint (default limits) for `service` on a loopback port until the
/// returned token is cancelled; returns its address.
pub async fn serve_admin(
    service: &std::sync::Arc<mailpolicyd::serve::Service>,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    let listener = mailpolicyd::serve::admin::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(mailpolicyd::serve::admin::serve(
        listener,
        service.clone(),
        stop.clone(),
    ));
    (addr, stop)
}

/// Serves the DNS front-end (no forwarding) for `service` on a loopback UDP port until
/// `shutdown`; returns its address.
pub async fn serve_dns_front_end(
    service: &std::sync::Arc<mailpolicyd::serve::Service>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> std::net::SocketAddr {
    serve_dns_front_end_forwarding(service, shutdown, false).await
}

/// [`serve_dns_front_end`], forwarding the other types when `forward` (the default
/// configuration's `dns.forward_other_types = true`).
pub async fn serve_dns_front_end_forwarding(
    service: &std::sync::Arc<mailpolicyd::serve::Service>,
    shutdown: &tokio_util::sync::CancellationToken,
    forward: bool,
) -> std::net::SocketAddr {
    mailpolicyd::serve::dns::serve(
        "127.0.0.1:0".parse().unwrap(),
        service.clone(),
        forward,
        shutdown.clone(),
    )
    .await
    .unwrap()
}

/// `serve --socket SOCKET --upstream UPSTREAM`: the daemon's arguments in a test.
pub fn serve_args(socket: &std::path::Path, upstream: std::net::SocketAddr) -> [String; 5] {
    [
        "serve".into(),
        "--socket".into(),
        socket.to_str().unwrap().into(),
        "--upstream".into(),
        upstream.to_string(),
    ]
}

/// The daemon binary with [`serve_args`], the rate limit out of the way and warnings logged.
pub fn daemon_command(
    socket: &std::path::Path,
    upstream: std::net::SocketAddr,
) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mailpolicyd"));
    c.args(serve_args(socket, upstream))
        .env("MAILPOLICYD_LIMITS_PER_SECOND", "100000")
        .env("MAILPOLICYD_LIMITS_BURST", "100000")
        .env("MAILPOLICYD_LOG_LEVEL", "warn");
    c
}

/// The value on the first `/metrics` line of `service` that starts with `line_start` (a metric
/// name, with its labels if any); 0 when there is none.
pub fn metric(service: &mailpolicyd::serve::Service, line_start: &str) -> u64 {
    mailpolicyd::serve::admin::render(service)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Waits (up to 20 s, then fails) for a daemon child to exit; its exit status.
pub fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The daemon binary run with `args`, to its end.
pub fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
        .args(args)
        .output()
        .unwrap()
}

/// Sends one raw UDP message to `addr` and decodes the reply (waiting 5 s at most).
pub async fn udp_exchange(
    addr: std::net::SocketAddr,
    msg: &hickory_server::proto::op::Message,
) -> hickory_server::proto::op::Message {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&msg.to_vec().unwrap(), addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    hickory_server::proto::op::Message::from_vec(&buf[..n]).unwrap()
}
