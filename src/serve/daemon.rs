//! The daemon: configuration → resolver → snapshot → socket, admin and DNS servers → signals →
//! drain → snapshot. `main.rs` only parses arguments and calls [`run`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Service, admin, dns, socket};
use crate::config::Config;
use crate::resolve::Resolver;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The resolver could not be built (e.g. no usable /etc/resolv.conf).
    #[error("resolver: {0}")]
    Resolver(#[from] crate::resolve::ResolveError),
    /// The socket could not be bound.
    #[error("socket: {0}")]
    Socket(#[from] socket::BindError),
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

/// Runs until `shutdown` is cancelled (SIGTERM/SIGINT in `main`), then drains and writes the
/// snapshot. Returns once everything has stopped.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
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
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if let Some(note) = &cfg.socket_note {
        tracing::warn!("{note}");
    }
    let listener = socket::bind(&cfg.socket, cfg.socket_cfg.mode)?;
    tracing::info!(socket = %cfg.socket.display(), "listening");
    let stop_others = CancellationToken::new();
    let mut background = tokio::task::JoinSet::new();
    if let Some(addr) = cfg.admin {
        let l = admin::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen {
                what: "admin",
                addr,
                source,
            })?;
        tracing::info!(admin = %addr, "admin endpoint (/live, /ready, /metrics)");
        background.spawn(admin::serve(l, service.clone(), stop_others.clone()));
    }
    if let Some(addr) = cfg.dns_listen {
        let bound = dns::serve(addr, service.clone(), cfg.dns_forward, stop_others.clone())
            .await
            .map_err(|source| DaemonError::Listen {
                what: "dns",
                addr,
                source,
            })?;
        tracing::info!(dns = %bound, "DNS front-end (TXT, TLSA)");
    }
    service.set_ready(true);
    socket::run(listener, service.clone(), cfg.socket_cfg.clone(), shutdown).await;
    service.set_ready(false);
    tracing::info!("drained");
    if let Some(path) = &cfg.snapshot {
        match resolver.save_snapshot(path).await {
            Ok(n) => tracing::info!(path = %path.display(), entries = n, "snapshot written"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "snapshot not written"),
        }
    }
    let _ = std::fs::remove_file(&cfg.socket);
    stop_others.cancel();
    while background.join_next().await.is_some() {}
    Ok(())
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
