//! The Postfix SMTPD policy delegation listener (`[postfix_policy]`): a Unix socket (bound with
//! the socket module's [`bind_owned`](super::socket::bind_owned): its lock, its dead-socket
//! replacement, its mode) and/or a loopback TCP address, for `check_policy_service unix:…` or
//! `inet:127.0.0.1:PORT`.
//!
//! Three layers, so a later protocol (a socketmap for TLS policy) reuses the first and the
//! last: this file accepts connections (bounded by [`PostfixConfig::max_connections`], over it
//! closed at once), runs each as a task reading requests one after another (several per
//! connection, an idle timeout, drain on shutdown); `proto::postfix_policy` frames (pure,
//! incremental, `RequestBuf`; a malformed request closes only its connection); [`decide`] turns one request
//! into an action over the [`Service`]'s resolver.

pub mod decide;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::decide::{Decider, PolicySettings};
use super::Service;
use super::socket::{BindError, SocketFile, bind_owned};
use crate::proto::postfix_policy::{PolicyError, RequestBuf};

/// The `op` label of the request metrics (`mailpolicyd_requests_total`,
/// `mailpolicyd_request_duration_seconds`) for a policy request.
pub const OP: &str = "postfix_policy";

/// The `[postfix_policy]` settings.
#[derive(Clone, Debug)]
pub struct PostfixConfig {
    /// `socket`: the Unix socket path; `None`: no Unix socket.
    pub socket: Option<PathBuf>,
    /// `mode`: the Unix socket's file mode.
    pub mode: u32,
    /// `listen`: a loopback TCP address; `None`: none.
    pub listen: Option<SocketAddr>,
    /// The decision settings.
    pub policy: PolicySettings,
    /// Connections served at once (`socket.max_connections`).
    pub max_connections: usize,
    /// How long a connection may wait for its next request, or in the middle of one, or for
    /// its answer to be taken (`socket.idle_timeout_s`; Postfix closes its own idle
    /// connections after `smtpd_policy_service_max_idle`, 300 s).
    pub idle_timeout: Duration,
    /// How long shutdown waits for requests being answered (`lifecycle.drain_timeout`).
    pub drain_timeout: Duration,
}

impl PostfixConfig {
    /// Whether any listener is configured.
    pub fn enabled(&self) -> bool {
        self.socket.is_some() || self.listen.is_some()
    }
}

impl Default for PostfixConfig {
    fn default() -> Self {
        PostfixConfig {
            socket: None,
            mode: 0o666,
            listen: None,
            policy: PolicySettings::default(),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The bound listeners, before serving.
pub struct Bound {
    unix: Option<(UnixListener, SocketFile)>,
    tcp: Option<TcpListener>,
}

impl Bound {
    /// The TCP address actually bound (a port 0 in `listen` picks one).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Why a policy listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum PostfixBindError {
    /// The Unix socket.
    #[error("postfix_policy.socket: {0}")]
    Socket(#[from] BindError),
    /// The TCP address.
    #[error("postfix_policy.listen {addr}: {source}")]
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the configured listeners.
pub async fn bind(cfg: &PostfixConfig) -> Result<Bound, PostfixBindError> {
    let unix = match &cfg.socket {
        Some(p) => Some(bind_owned(p, cfg.mode, None)?),
        None => None,
    };
    let tcp = match cfg.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| PostfixBindError::Listen { addr, source })?,
        ),
        None => None,
    };
    Ok(Bound { unix, tcp })
}

/// Serves `bound` until `shutdown`; then stops accepting, lets requests being answered finish
/// (up to the drain timeout), closes idle connections and removes the Unix socket if it is
/// still ours.
pub async fn serve(
    bound: Bound,
    service: Arc<Service>,
    cfg: PostfixConfig,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        service,
        decider: Decider::new(cfg.policy.clone()),
        slots: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
        idle: cfg.idle_timeout,
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
    });
    let Bound { unix, tcp } = bound;
    let mut socket_file = None;
    let mut listeners = Vec::new();
    if let Some((l, file)) = unix {
        socket_file = Some(file);
        listeners.push(Listener::Unix(l));
    }
    listeners.extend(tcp.map(Listener::Tcp));
    let mut accepting = tokio::task::JoinSet::new();
    for l in listeners {
        let sh = shared.clone();
        accepting.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = sh.shutdown.cancelled() => return,
                    a = l.accept(&sh) => a,
                };
                if let Err(e) = accepted {
                    sh.accept_failed(&e).await;
                }
            }
        });
    }
    while accepting.join_next().await.is_some() {}
    shared.tracker.close();
    if tokio::time::timeout(cfg.drain_timeout, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("postfix_policy: connections still answering at the drain timeout");
    }
    if let Some(f) = socket_file {
        f.remove();
    }
}

/// A bound listener of either kind.
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    /// Accepts one connection and starts serving it.
    async fn accept(&self, sh: &Arc<Shared>) -> std::io::Result<()> {
        match self {
            Listener::Unix(l) => sh.start(l.accept().await?.0),
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                sh.start(s)
            }
        }
        Ok(())
    }
}

struct Shared {
    service: Arc<Service>,
    decider: Decider,
    slots: Arc<Semaphore>,
    idle: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Shared {
    fn start<S>(self: &Arc<Self>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            // Over the bound: closed at once (Postfix retries, then answers its default).
            self.service.metrics.connection_rejected();
            return;
        };
        let sh = self.clone();
        self.tracker.spawn(async move {
            let _permit = permit;
            connection(stream, &sh).await;
        });
    }

    async fn accept_failed(&self, e: &std::io::Error) {
        if let Some(suppressed) = self.service.metrics.accept_log.allow() {
            tracing::warn!(error = %e, suppressed, "postfix_policy: accept failed");
        }
        // EMFILE and the like: give the process a moment instead of spinning.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Why a connection ended early.
enum Ended {
    Closed,
    Idle,
    Bad(PolicyError),
}

/// One connection: requests one after another until the peer closes, a request is malformed
/// (logged, counted, the connection closed), it idles past the timeout, or shutdown (a request
/// being answered is answered first).
async fn connection<S>(mut stream: S, sh: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut requests = RequestBuf::default();
    let mut chunk = vec![0u8; 8192];
    let ended = loop {
        match requests.next_request() {
            Ok(Some(req)) => {
                let started = Instant::now();
                let action = sh.decider.decide(&sh.service, &req).await;
                sh.service.metrics.request(OP, "ok", started.elapsed());
                sh.service.metrics.postfix_action(action.label());
                match tokio::time::timeout(sh.idle, stream.write_all(&action.encode())).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => break Ended::Closed,
                    Err(_) => break Ended::Idle,
                }
            }
            Ok(None) => {}
            Err(e) => break Ended::Bad(e),
        }
        let read = tokio::select! {
            _ = sh.shutdown.cancelled() => break Ended::Closed,
            r = tokio::time::timeout(sh.idle, stream.read(&mut chunk)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break Ended::Closed,
            Ok(Ok(n)) => requests.feed(&chunk[..n]),
            Err(_) => break Ended::Idle,
        }
    };
    match ended {
        Ended::Closed => {}
        Ended::Idle => sh.service.metrics.connection_timed_out(),
        Ended::Bad(e) => sh.service.metrics.postfix_malformed(&e),
    }
    let _ = stream.shutdown().await;
}
