//! The admin endpoint: HTTP on loopback with `/live`, `/ready` (only once the socket is bound
//! and the snapshot loaded) and `/metrics` in the Prometheus text format, names in the CoreDNS
//! and unbound_exporter style. Encoded with prometheus-client; the resolver's counters are read
//! at scrape time by a collector, so serving a request costs one atomic add per counter.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
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
use crate::resolve::Resolver;

/// `op` and `result` labels; both static, so counting a request allocates nothing.
type Labels = [(&'static str, &'static str); 2];

/// Every `result` label: `ok` and the stable error codes of [`crate::proto::WireError`].
const RESULTS: &[&str] = &[
    "ok",
    "invalid_name",
    "invalid_ip",
    "rate_limited",
    "timeout",
    "servfail",
    "refused",
    "dnssec_bogus",
    "upstream",
    "unknown_op",
    "bad_json",
    "frame_too_large",
    "bad_frame",
    "unsupported_version",
    "forbidden",
    "shutting_down",
    "internal",
];

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
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            dns: Family::default(),
            // 1 µs .. ~4 s.
            duration: Histogram::new(exponential_buckets(1e-6, 4.0, 12)),
            connections: AtomicI64::new(0),
            demoted: Counter::default(),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, op: &'static str, result: &str, took: Duration) {
        let result = RESULTS
            .iter()
            .copied()
            .find(|r| *r == result)
            .unwrap_or("other");
        self.requests
            .get_or_create(&[("op", op), ("result", result)])
            .inc();
        self.duration.observe(took.as_secs_f64());
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
        "Socket requests by operation and result",
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

/// Serves the admin endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
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

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
