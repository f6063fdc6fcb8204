//! The admin endpoint: HTTP on loopback with `/live`, `/ready` (only once the socket is bound
//! and the snapshot loaded) and `/metrics` in the Prometheus text format ([`metrics`]). The
//! listener bounds its connections and their header and idle time: it must never take the file
//! descriptors the filters' socket needs.

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::Service;

mod metrics;

pub use metrics::{Metrics, render};

/// Liveness path.
pub const LIVE_PATH: &str = "/live";
/// Readiness path.
pub const READY_PATH: &str = "/ready";
/// Metrics path.
pub const METRICS_PATH: &str = "/metrics";

/// Admin endpoint limits: it must never take the file descriptors the filters' socket needs.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// Connections open at once; one over it is closed at once.
    pub max_connections: usize,
    /// Time a connection has to send a request's headers (from the connection, or from the
    /// first byte of a later request).
    pub header_timeout: Duration,
    /// Time a connection may go without reading or writing anything.
    pub idle_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves the admin endpoint on `listener` until `shutdown`, with the default limits.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, service, AdminConfig::default(), shutdown).await
}

/// Serves the admin endpoint on `listener` until `shutdown`, bounded by `cfg`.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    cfg: AdminConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = Bounded {
        slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1))),
        inner: listener,
        service: service.clone(),
        cfg,
    };
    let app = Router::new()
        .route(LIVE_PATH, get(|| async { "ok\n" }))
        .route(
            READY_PATH,
            get(|State(s): State<Arc<Service>>| async move {
                if s.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .route(
            METRICS_PATH,
            get(|State(s): State<Arc<Service>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render(&s),
                )
                    .into_response()
            }),
        )
        .with_state(service);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// The admin listener: at most `max_connections` open (one over it is closed at once), each
/// under the header and idle timeouts ([`TimedIo`]).
struct Bounded {
    inner: tokio::net::TcpListener,
    slots: Arc<tokio::sync::Semaphore>,
    service: Arc<Service>,
    cfg: AdminConfig,
}

impl axum::serve::Listener for Bounded {
    type Io = TimedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TimedIo, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    if let Some(suppressed) = self.service.metrics.admin_accept_log.allow() {
                        tracing::warn!(error = %e, suppressed, "admin accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                // A FIN, then what the client already sent is dropped (without waiting), so it
                // reads an end of file rather than a reset when that is still possible.
                if let Ok(mut s) = stream.into_std() {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    super::socket::discard_unread(&mut s);
                }
                self.service.metrics.admin_rejected.inc();
                continue;
            };
            return (TimedIo::new(stream, permit, &self.cfg), addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An admin connection: holds its slot, and fails a read or write (so the server closes it)
/// once nothing moved for `idle_timeout`, or a request's headers took longer than
/// `header_timeout` (counted from the connection, or from a later request's first byte, to the
/// blank line that ends them).
struct TimedIo {
    io: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
    idle: Duration,
    header: Duration,
    idle_deadline: tokio::time::Instant,
    /// Set while a request's headers are being read.
    header_deadline: Option<tokio::time::Instant>,
    /// How much of `\r\n\r\n` the last bytes matched.
    matched: u8,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl TimedIo {
    fn new(
        io: tokio::net::TcpStream,
        slot: tokio::sync::OwnedSemaphorePermit,
        cfg: &AdminConfig,
    ) -> TimedIo {
        let now = tokio::time::Instant::now();
        TimedIo {
            io,
            _slot: slot,
            idle: cfg.idle_timeout,
            header: cfg.header_timeout,
            idle_deadline: now + cfg.idle_timeout,
            header_deadline: Some(now + cfg.header_timeout),
            matched: 0,
            timer: Box::pin(tokio::time::sleep_until(now + cfg.idle_timeout)),
        }
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.header_deadline
            .map_or(self.idle_deadline, |h| h.min(self.idle_deadline))
    }

    /// Bytes read: the connection is not idle; follow the headers' end.
    fn saw(&mut self, data: &[u8]) {
        let now = tokio::time::Instant::now();
        self.idle_deadline = now + self.idle;
        for &b in data {
            if self.header_deadline.is_none() {
                self.header_deadline = Some(now + self.header);
            }
            self.matched = match (self.matched, b) {
                (0 | 2, b'\r') | (1 | 3, b'\n') => self.matched + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if self.matched == 4 {
                self.matched = 0;
                self.header_deadline = None;
            }
        }
    }

    /// Pending until the nearest deadline, then the error that closes the connection.
    fn poll_timeout(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Error> {
        let deadline = self.deadline();
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "admin connection timed out",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.saw(&buf.filled()[before..]);
                    // A client trickling its headers a byte at a time.
                    if this
                        .header_deadline
                        .is_some_and(|h| tokio::time::Instant::now() >= h)
                    {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "admin request headers too slow",
                        )));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_timeout(cx).map(Err),
        }
    }
}

impl tokio::io::AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.idle_deadline = tokio::time::Instant::now() + this.idle;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_timeout(cx).map(Err),
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
