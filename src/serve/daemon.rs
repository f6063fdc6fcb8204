//! The daemon: configuration → resolver → snapshot → socket, admin and DNS servers → signals →
//! drain → snapshot. `main.rs` loads the configuration (`config` builds a [`DaemonConfig`])
//! and calls [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::admin::AdminConfig;
use super::{Service, SocketConfig, admin, dns, postfix, socket};
use crate::resolve::{Resolver, ResolverConfig};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The resolver could not be built (e.g. no usable /etc/resolv.conf).
    #[error("resolver: {0}")]
    Resolver(#[from] crate::resolve::ResolveError),
    /// The socket could not be bound.
    #[error("socket: {0}")]
    Socket(#[from] socket::BindError),
    /// A Postfix policy listener could not be bound.
    #[error("{0}")]
    Postfix(#[from] postfix::PostfixBindError),
    /// The admin or DNS listener could not be bound.
    #[error("{what} {addr}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl DaemonError {
    /// The error for a listener (`what`) that could not be bound at `addr`.
    fn listen(what: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> Self {
        move |source| DaemonError::Listen { what, addr, source }
    }
}

/// What the daemon runs with. Built by `config` (from the file, the environment and the
/// flags); `serve` does not know where the values came from.
#[derive(Clone)]
pub struct DaemonConfig {
    /// Socket path.
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
    /// The Postfix policy delegation listeners (`[postfix_policy]`), if any.
    pub postfix: postfix::PostfixConfig,
    /// Snapshot path, if any.
    pub snapshot: Option<PathBuf>,
    /// How often the snapshot is written while running (zero: only on shutdown).
    pub snapshot_interval: Duration,
    /// Where the socket path came from, logged at start.
    pub socket_note: Option<String>,
    /// Harmless oddities logged at start (unknown `MAILPOLICYD_*` variables).
    pub warnings: Vec<String>,
}

/// Runs until `shutdown` is cancelled (SIGTERM/SIGINT in `main`), then drains and writes the
/// snapshot. Returns once everything has stopped.
pub async fn run(cfg: DaemonConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    raise_fd_limit();
    let resolver = Resolver::new(cfg.resolver.clone())?;
    let service = Service::new(resolver.clone());
    if let Some(path) = &cfg.snapshot {
        match resolver.load_snapshot(path).await {
            Ok(n) => tracing::info!(path = %path.display(), entries = n, "snapshot loaded"),
            Err(crate::resolve::snapshot::SnapshotError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                tracing::info!(path = %path.display(), "no snapshot yet: starting cold")
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "snapshot ignored"),
        }
        // Said now, not first at shutdown when it is too late to fix.
        if let Err(e) = snapshot_dir_writable(path) {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "the snapshot directory is not writable: the snapshot will not be saved"
            );
        }
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if let Some(note) = &cfg.socket_note {
        tracing::warn!("{note}");
    }
    // Removed when this function returns, on success or on a failure below, and only while
    // the path is still the socket bound here.
    let (listener, socket_file) =
        socket::bind_owned(&cfg.socket, cfg.socket_cfg.mode, cfg.socket_cfg.group)?;
    tracing::info!(
        socket = %cfg.socket.display(),
        mode = format!("{:04o}", cfg.socket_cfg.mode),
        group = cfg.socket_cfg.group.map_or_else(|| "(own)".to_owned(), |g| g.to_string()),
        "listening"
    );
    // This process owns the socket (and so the daemon's files): a temporary snapshot file left
    // by a crash is removed.
    if let Some(path) = &cfg.snapshot {
        let n = crate::resolve::snapshot::remove_stale_temp(path);
        if n > 0 {
            tracing::info!(path = %path.display(), files = n, "stale temporary snapshot files removed");
        }
    }
    let stop_others = CancellationToken::new();
    let mut background = tokio::task::JoinSet::new();
    if let Some(addr) = cfg.admin {
        let l = admin::bind(addr)
            .await
            .map_err(DaemonError::listen("admin", addr))?;
        tracing::info!(admin = %addr, "admin endpoint (/live, /ready, /metrics)");
        background.spawn(admin::serve_with(
            l,
            service.clone(),
            cfg.admin_cfg.clone(),
            stop_others.clone(),
        ));
    }
    if let Some(addr) = cfg.dns_listen {
        let bound = dns::serve(addr, service.clone(), cfg.dns_forward, stop_others.clone())
            .await
            .map_err(DaemonError::listen("dns", addr))?;
        if cfg.dns_forward {
            tracing::info!(
                dns = %bound,
                "DNS front-end: TXT and TLSA from the policy cache; every other type of class IN (A, AAAA, MX, PTR, NS, SOA, CNAME, DS, SRV, CAA, ...) forwarded to the upstream and cached by TTL (dns.forward_other_types = true); ANY, AXFR, IXFR refused"
            );
        } else {
            tracing::info!(
                dns = %bound,
                "DNS front-end: TXT and TLSA only; other types REFUSED (dns.forward_other_types = false)"
            );
        }
    }
    // The Postfix policy listeners: stopped with the socket (`shutdown`), drained, and their
    // Unix socket removed (if still ours) before `run` returns.
    let mut postfix_task = None;
    if cfg.postfix.enabled() {
        let bound = postfix::bind(&cfg.postfix).await?;
        tracing::info!(
            socket = cfg
                .postfix
                .socket
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string()),
            mode = format!("{:04o}", cfg.postfix.mode),
            listen = bound.tcp_addr().map_or_else(String::new, |a| a.to_string()),
            "Postfix policy delegation (check_policy_service)"
        );
        postfix_task = Some(tokio::spawn(postfix::serve(
            bound,
            service.clone(),
            cfg.postfix.clone(),
            shutdown.clone(),
        )));
    }
    // Periodic snapshots, so a crash (SIGKILL, OOM) restarts from a recent one. Stopped, and
    // waited for, before the final write (which uses the same temporary file).
    let stop_snapshots = CancellationToken::new();
    let mut snapshots = None;
    if let Some(path) = cfg.snapshot.clone()
        && !cfg.snapshot_interval.is_zero()
    {
        let (resolver, every, stop) = (
            resolver.clone(),
            cfg.snapshot_interval,
            stop_snapshots.clone(),
        );
        snapshots = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match resolver.save_snapshot(&path).await {
                    Ok(n) => {
                        tracing::debug!(path = %path.display(), entries = n, "snapshot written")
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "snapshot not written")
                    }
                }
            }
        }));
    }
    service.set_ready(true);
    socket::run(listener, service.clone(), cfg.socket_cfg.clone(), shutdown).await;
    service.set_ready(false);
    if let Some(task) = postfix_task {
        let _ = task.await;
    }
    tracing::info!("drained");
    stop_snapshots.cancel();
    if let Some(task) = snapshots {
        let _ = task.await;
    }
    if let Some(path) = &cfg.snapshot {
        match resolver.save_snapshot(path).await {
            Ok(n) => tracing::info!(path = %path.display(), entries = n, "snapshot written"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "snapshot not written"),
        }
    }
    socket_file.remove();
    stop_others.cancel();
    while background.join_next().await.is_some() {}
    Ok(())
}

/// Whether a file can be created next to `path` (the snapshot's temp file and rename); the
/// directory is created first if missing (as the first write would).
fn snapshot_dir_writable(path: &std::path::Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".mailpolicyd-probe.{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Raises the soft limit on open files to the hard limit, so connections (socket, admin, DNS
/// over TCP) do not run out of descriptors long before the system would.
fn raise_fd_limit() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        // An unlimited hard limit (None) is left alone: the kernel caps it at nr_open anyway.
        if let (Some(from), Some(to)) = (lim.current, lim.maximum)
            && from < to
        {
            lim.current = Some(to);
            match setrlimit(Resource::Nofile, lim) {
                Ok(()) => tracing::debug!(from, to, "RLIMIT_NOFILE raised"),
                Err(e) => tracing::debug!(error = %e, "RLIMIT_NOFILE not raised"),
            }
        }
    }
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}

/// Keeps the service reachable for tests that start the pieces themselves.
pub fn service(resolver: Resolver) -> Arc<Service> {
    Service::new(resolver)
}
