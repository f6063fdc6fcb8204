//! The admin endpoint's `/metrics`: the request counters every request updates (one atomic add
//! each), the collector that reads the resolver's counters at scrape time, and the Prometheus
//! text rendering (prometheus-client; names in the CoreDNS and unbound_exporter style).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::proto::ErrorCode;
use crate::resolve::Resolver;
use crate::serve::Service;

/// `op` and `result` labels; both static, so counting a request allocates nothing.
type Labels = [(&'static str, &'static str); 2];

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
    pub(super) admin_rejected: Counter,
    /// Postfix policy answers by action (`reject`, `defer`, `prepend`, `dunno`).
    postfix_actions: Family<[(&'static str, &'static str); 1], Counter>,
    /// Postfix policy connections closed for a malformed request.
    postfix_malformed: Counter,
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

/// The `action` labels of `mailpolicyd_postfix_policy_requests_total`
/// (`proto::postfix_policy::Action::label`).
pub const POSTFIX_ACTIONS: &[&str] = &["reject", "defer", "prepend", "dunno"];

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
            postfix_actions: {
                let f = Family::default();
                for a in POSTFIX_ACTIONS {
                    let _ = f.get_or_create(&[("action", *a)]);
                }
                f
            },
            postfix_malformed: Counter::default(),
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
    /// Counts one Postfix policy answer by its action label ([`POSTFIX_ACTIONS`]).
    pub(crate) fn postfix_action(&self, action: &'static str) {
        self.postfix_actions
            .get_or_create(&[("action", action)])
            .inc();
    }
    /// Counts (and logs, at most once a second) a Postfix policy connection closed for a
    /// malformed request.
    pub(crate) fn postfix_malformed(&self, e: &crate::proto::postfix_policy::PolicyError) {
        self.postfix_malformed.inc();
        if let Some(suppressed) = self.bad_log.allow() {
            tracing::warn!(suppressed, error = %e, "postfix_policy: malformed request, connection closed");
        }
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
        // Counters read from the snapshot: (name, help, value), in exposition order.
        let counters: [(&str, &str, u64); 12] = [
            ("prefetch", "Background prefetches started.", s.prefetches),
            (
                "served_stale",
                "Stale answers served (RFC 8767).",
                s.stale_served,
            ),
            (
                "coalesced",
                "Questions that joined an in-flight upstream query.",
                s.coalesced,
            ),
            (
                "rate_limited",
                "Questions refused by the per-organization limiter.",
                s.rate_limited,
            ),
            (
                "wildcard_marked",
                "Organizations marked wildcard.",
                s.wildcard_marked,
            ),
            (
                "wildcard_synthesized",
                "Answers synthesized from a wildcard sample.",
                s.wildcard_synthesized,
            ),
            (
                "nxdomain_cut",
                "Answers synthesized below a cached NXDOMAIN (RFC 8020).",
                s.nxdomain_cut,
            ),
            (
                "failure_cached",
                "Questions answered with an upstream failure remembered for the name (RFC 9520).",
                s.failure_cached,
            ),
            (
                "rate_limited_fallback",
                "Questions over the per-organization budget answered from an organization-level cached record.",
                s.rate_limited_fallback,
            ),
            (
                "wildcard_probed",
                "Random-label probes asked before marking an organization wildcard.",
                s.wildcard_probed,
            ),
            (
                "wildcard_verified",
                "Names under a wildcard mark asked upstream to verify the sample.",
                s.wildcard_verified,
            ),
            (
                "wildcard_unmarked",
                "Wildcard marks ended because a verified name answered differently.",
                s.wildcard_unmarked,
            ),
        ];
        let d = self.0.0.dnssec_stats();
        let dnssec = [
            (
                "dnssec_upstream_queries",
                "Upstream queries sent by the validating resolver (dnssec.mode = validate): questions, CNAMEs and the NS/DS/DNSKEY lookups of their chains of trust.",
                d.upstream_queries,
            ),
            (
                "dnssec_key_cache_hits",
                "NS/DS/DNSKEY lookups of the validator answered from memory.",
                d.key_cache_hits,
            ),
            (
                "dnssec_budget_exhausted",
                "Validating questions stopped at the per-question query budget (answered dnssec_bogus).",
                d.budget_exhausted,
            ),
        ];
        for (name, help, v) in counters.into_iter().chain(dnssec) {
            let c = ConstCounter::new(v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
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

/// A metric of any type, so that the registrations in [`render`] are one table.
#[derive(Debug)]
struct AnyMetric(Box<dyn Metric>);

impl EncodeMetric for AnyMetric {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Renders `/metrics`.
pub fn render(service: &Service) -> String {
    let mut registry = Registry::with_prefix("mailpolicyd");
    let m = &service.metrics;
    let own: [(&str, &str, AnyMetric); 10] = [
        (
            "requests",
            "Requests (socket operations and DNS front-end questions) by operation and result",
            AnyMetric(Box::new(m.requests.clone())),
        ),
        (
            "dns_answers",
            "DNS front-end answers over UDP by path (wire: the wire-form cache; full: through the resolver)",
            AnyMetric(Box::new(m.dns.clone())),
        ),
        (
            "connections_demoted",
            "Connections whose thread was demoted to a lower CPU priority as bulk (socket.bulk_batch)",
            AnyMetric(Box::new(m.demoted.clone())),
        ),
        (
            "bad_frames",
            "Socket requests rejected for their size or syntax, by reason (the error code sent)",
            AnyMetric(Box::new(m.bad_frames.clone())),
        ),
        (
            "connections_rejected",
            "Socket connections closed at once because socket.max_connections were open",
            AnyMetric(Box::new(m.rejected.clone())),
        ),
        (
            "connections_timed_out",
            "Socket connections closed after socket.idle_timeout_s idle, inside a frame, or not reading their answers",
            AnyMetric(Box::new(m.timed_out.clone())),
        ),
        (
            "admin_connections_rejected",
            "Admin connections closed at once because admin.max_connections were open",
            AnyMetric(Box::new(m.admin_rejected.clone())),
        ),
        (
            "postfix_policy_requests",
            "Postfix policy delegation requests answered, by action (reject: 550, defer: 451, prepend: PREPEND Received-SPF, dunno: DUNNO)",
            AnyMetric(Box::new(m.postfix_actions.clone())),
        ),
        (
            "postfix_policy_malformed",
            "Postfix policy connections closed for a malformed request (not name=value, over 100 attributes or 64 KiB)",
            AnyMetric(Box::new(m.postfix_malformed.clone())),
        ),
        (
            "request_duration_seconds",
            "Time to answer a socket request",
            AnyMetric(Box::new(m.duration.clone())),
        ),
    ];
    for (name, help, metric) in own {
        registry.register(name, help, metric);
    }
    registry.register_collector(Box::new(ResolverCollector(
        ResolverHandle(service.resolver().clone()),
        m.connections.load(Ordering::Relaxed),
    )));
    let mut out = String::with_capacity(8 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        let _ = writeln!(out, "# encoding failed");
    }
    out
}
