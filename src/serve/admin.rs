//! The admin endpoint: HTTP on loopback with `/live`, `/ready` (only once the socket is bound
//! and the snapshot loaded) and `/metrics` in the Prometheus text format, names in the CoreDNS
//! and unbound_exporter style. Encoded with prometheus-client; the resolver's counters are read
//! at scrape time by a collector, so serving a request costs one atomic add per counter.

use std::fmt::Write as _;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::Service;
use crate::proto::ErrorCode;
use crate::resolve::Resolver;

/// `op` and `result` labels; both static, so counting a request allocates nothing.
type Labels = [(&'static str, &'static str); 2];

/// Liveness path.
pub const LIVE_PATH: &str = "/live";
/// Readiness path.
pub const READY_PATH: &str = "/ready";
/// Metrics path.
pub const METRICS_PATH: &str = "/metrics";

/// Request metrics, updated on every request.
pub struct Metrics {
    requests: Family<Labels, Counter>,
    /// DNS front-end answers by path: `wire` (the wire cache) or `full` (through the resolver).
    dns: Family<[(&'static str, &'static str); 1], Counter>,
    duration: Histogram,
    connections: AtomicI64,
    demoted: Counter,
    /// Requests rejected for their size or syntax, by reason (the error code).
    bad_frames: Family<[(&'static str, &'static str); 1], Counter>,
    /// Socket connections closed at once because `socket.max_connections` were open.
    rejected: Counter,
    /// Socket connections closed by `socket.idle_timeout_s`.
    timed_out: Counter,
    /// Admin connections closed at once because `admin.max_connections` were open.
    admin_rejected: Counter,
    /// Rate limits of the warnings about failed accepts, rejected connections and bad frames.
    pub(crate) accept_log: LogLimit,
    /// The admin listener's own: its failures never hide the filters' socket's.
    pub(crate) admin_accept_log: LogLimit,
    pub(crate) reject_log: LogLimit,
    bad_log: LogLimit,
}

/// At most one log line a second for one kind of event; the rest are counted and reported
/// with the next line (`suppressed`).
pub(crate) struct LogLimit {
    origin: std::time::Instant,
    /// Milliseconds since `origin` from which the next line may be logged.
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit {
            origin: std::time::Instant::now(),
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl LogLimit {
    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next.load(Ordering::Relaxed);
        if now >= next
            && self
                .next
                .compare_exchange(next, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The `reason` labels of `mailpolicyd_bad_frames_total`: the error code sent.
const BAD_FRAME_REASONS: &[&str] = &[
    ErrorCode::BadJson.as_str(),
    ErrorCode::BadFrame.as_str(),
    ErrorCode::FrameTooLarge.as_str(),
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            dns: Family::default(),
            // 1 µs .. ~4 s.
            duration: Histogram::new(exponential_buckets(1e-6, 4.0, 12)),
            connections: AtomicI64::new(0),
            demoted: Counter::default(),
            bad_frames: {
                let f = Family::default();
                for r in BAD_FRAME_REASONS {
                    let _ = f.get_or_create(&[("reason", *r)]);
                }
                f
            },
            rejected: Counter::default(),
            timed_out: Counter::default(),
            admin_rejected: Counter::default(),
            accept_log: LogLimit::default(),
            admin_accept_log: LogLimit::default(),
            reject_log: LogLimit::default(),
            bad_log: LogLimit::default(),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, op: &'static str, result: &str, took: Duration) {
        // `ok` and the codes of the one table (`proto::ERROR_CODES`); anything else is `other`.
        let result = match result {
            "ok" => "ok",
            code => ErrorCode::parse(code).map_or("other", ErrorCode::as_str),
        };
        self.requests
            .get_or_create(&[("op", op), ("result", result)])
            .inc();
        self.duration.observe(took.as_secs_f64());
    }
    /// The counter of `op` requests answered `ok`, for a loop that counts each answer itself
    /// (one atomic add, no lookup): the DNS front-end's wire-cache hits.
    pub fn ok_counter(&self, op: &'static str) -> Counter {
        self.requests
            .get_or_create(&[("op", op), ("result", "ok")])
            .clone()
    }
    /// Counts one DNS front-end answer sent by `path` (`wire` or `full`).
    pub fn dns_answered(&self, path: &'static str) {
        self.dns.get_or_create(&[("path", path)]).inc();
    }
    /// The counter of DNS front-end answers sent by `path`, for a loop that counts every
    /// datagram (incrementing it is one atomic add, no lookup).
    pub fn dns_counter(&self, path: &'static str) -> Counter {
        self.dns.get_or_create(&[("path", path)]).clone()
    }
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a connection whose thread was demoted as bulk.
    pub(crate) fn connection_demoted(&self) {
        self.demoted.inc();
    }
    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
    /// Counts a socket connection closed at once over `socket.max_connections`.
    pub(crate) fn connection_rejected(&self) {
        self.rejected.inc();
    }
    /// Counts a socket connection closed by the idle timeout.
    pub(crate) fn connection_timed_out(&self) {
        self.timed_out.inc();
    }
    /// Counts (and logs, at most once a second) a request rejected for its size or syntax;
    /// `code` is the error code sent (`bad_json`, `bad_frame`, `frame_too_large`).
    pub(crate) fn bad_frame(&self, code: &str, message: &str) {
        let Some(reason) = BAD_FRAME_REASONS.iter().copied().find(|r| *r == code) else {
            return;
        };
        self.bad_frames.get_or_create(&[("reason", reason)]).inc();
        if let Some(suppressed) = self.bad_log.allow() {
            // Debug-escaped: the message quotes client bytes, which must not make log lines.
            tracing::warn!(reason, suppressed, detail = ?message, "rejected a request");
        }
    }
}

/// Reads the resolver's counters (and the open connections) at scrape time.
#[derive(Debug)]
struct ResolverCollector(ResolverHandle, i64);

struct ResolverHandle(Resolver);

impl std::fmt::Debug for ResolverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

struct SnapshotHistogram<'a> {
    buckets: &'a [(f64, u64)],
    sum: f64,
}

impl EncodeMetric for SnapshotHistogram<'_> {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let count = self.buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            count,
            self.buckets,
            None,
        )
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl prometheus_client::collector::Collector for ResolverCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.0.stats_now();
        let g = ConstGauge::new(self.1);
        g.encode(enc.encode_descriptor(
            "connections",
            "Open socket connections.",
            None,
            g.metric_type(),
        )?)?;
        let counter = |enc: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       v: u64|
         -> Result<(), std::fmt::Error> {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
        };
        {
            let mut fam = enc.encode_descriptor(
                "cache_hits",
                "Answers served fresh from the cache.",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in &s.hits {
                ConstCounter::new(*n).encode(fam.encode_family(&[("kind", kind.as_str())])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "cache_requests",
                "Questions asked of the cache (hits and misses).",
                None,
                MetricType::Counter,
            )?;
            for ((kind, h), (_, m)) in s.hits.iter().zip(&s.misses) {
                ConstCounter::new(h + m).encode(fam.encode_family(&[("kind", kind.as_str())])?)?;
            }
        }
        {
            let g = ConstGauge::new(s.cache_entries as i64);
            g.encode(enc.encode_descriptor(
                "cache_entries",
                "Entries in the cache.",
                None,
                g.metric_type(),
            )?)?;
            let g = ConstGauge::new(s.cache_bytes as i64);
            g.encode(enc.encode_descriptor(
                "cache_bytes",
                "Weighted bytes held by the cache.",
                None,
                g.metric_type(),
            )?)?;
        }
        counter(
            &mut enc,
            "prefetch",
            "Background prefetches started.",
            s.prefetches,
        )?;
        counter(
            &mut enc,
            "served_stale",
            "Stale answers served (RFC 8767).",
            s.stale_served,
        )?;
        counter(
            &mut enc,
            "coalesced",
            "Questions that joined an in-flight upstream query.",
            s.coalesced,
        )?;
        counter(
            &mut enc,
            "rate_limited",
            "Questions refused by the per-organization limiter.",
            s.rate_limited,
        )?;
        counter(
            &mut enc,
            "wildcard_marked",
            "Organizations marked wildcard.",
            s.wildcard_marked,
        )?;
        counter(
            &mut enc,
            "wildcard_synthesized",
            "Answers synthesized from a wildcard sample.",
            s.wildcard_synthesized,
        )?;
        counter(
            &mut enc,
            "nxdomain_cut",
            "Answers synthesized below a cached NXDOMAIN (RFC 8020).",
            s.nxdomain_cut,
        )?;
        counter(
            &mut enc,
            "failure_cached",
            "Questions answered with an upstream failure remembered for the name (RFC 9520).",
            s.failure_cached,
        )?;
        counter(
            &mut enc,
            "rate_limited_fallback",
            "Questions over the per-organization budget answered from an organization-level cached record.",
            s.rate_limited_fallback,
        )?;
        counter(
            &mut enc,
            "wildcard_probed",
            "Random-label probes asked before marking an organization wildcard.",
            s.wildcard_probed,
        )?;
        counter(
            &mut enc,
            "wildcard_verified",
            "Names under a wildcard mark asked upstream to verify the sample.",
            s.wildcard_verified,
        )?;
        counter(
            &mut enc,
            "wildcard_unmarked",
            "Wildcard marks ended because a verified name answered differently.",
            s.wildcard_unmarked,
        )?;
        {
            let mut fam = enc.encode_descriptor(
                "upstream_request_duration_seconds",
                "Upstream query latency by outcome.",
                None,
                MetricType::Histogram,
            )?;
            for l in &s.upstream_latency {
                let h = SnapshotHistogram {
                    buckets: &l.buckets,
                    sum: l.sum,
                };
                h.encode(fam.encode_family(&[("rcode", l.outcome.as_str())])?)?;
            }
        }
        Ok(())
    }
}

/// Renders `/metrics`.
pub fn render(service: &Service) -> String {
    let mut registry = Registry::with_prefix("mailpolicyd");
    registry.register(
        "requests",
        "Requests (socket operations and DNS front-end questions) by operation and result",
        service.metrics.requests.clone(),
    );
    registry.register(
        "dns_answers",
        "DNS front-end answers over UDP by path (wire: the wire-form cache; full: through the resolver)",
        service.metrics.dns.clone(),
    );
    registry.register(
        "connections_demoted",
        "Connections whose thread was demoted to a lower CPU priority as bulk (socket.bulk_batch)",
        service.metrics.demoted.clone(),
    );
    registry.register(
        "bad_frames",
        "Socket requests rejected for their size or syntax, by reason (the error code sent)",
        service.metrics.bad_frames.clone(),
    );
    registry.register(
        "connections_rejected",
        "Socket connections closed at once because socket.max_connections were open",
        service.metrics.rejected.clone(),
    );
    registry.register(
        "connections_timed_out",
        "Socket connections closed after socket.idle_timeout_s idle, inside a frame, or not reading their answers",
        service.metrics.timed_out.clone(),
    );
    registry.register(
        "admin_connections_rejected",
        "Admin connections closed at once because admin.max_connections were open",
        service.metrics.admin_rejected.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time to answer a socket request",
        service.metrics.duration.clone(),
    );
    registry.register_collector(Box::new(ResolverCollector(
        ResolverHandle(service.resolver().clone()),
        service.metrics.connections.load(Ordering::Relaxed),
    )));
    let mut out = String::with_capacity(8 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        let _ = writeln!(out, "# encoding failed");
    }
    out
}

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
