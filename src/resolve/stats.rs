//! Counters kept by the resolver, so the admin endpoint only reads them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::answer::{KINDS, Kind};
pub use crate::model::stats::{LatencyHistogram, StatsSnapshot};

/// Upper bounds (seconds) of the upstream latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upstream outcomes counted separately.
pub const UPSTREAM_OUTCOMES: [&str; 7] = [
    "noerror", "nxdomain", "servfail", "refused", "timeout", "bogus", "other",
];

/// Live counters.
#[derive(Default)]
pub struct Stats {
    hits: [AtomicU64; KINDS.len()],
    misses: [AtomicU64; KINDS.len()],
    prefetches: AtomicU64,
    stale_served: AtomicU64,
    coalesced: AtomicU64,
    rate_limited: AtomicU64,
    wildcard_marked: AtomicU64,
    wildcard_synthesized: AtomicU64,
    nxdomain_cut: AtomicU64,
    failure_cached: AtomicU64,
    rate_limited_fallback: AtomicU64,
    wildcard_probed: AtomicU64,
    wildcard_verified: AtomicU64,
    wildcard_unmarked: AtomicU64,
    upstream: [AtomicU64; UPSTREAM_OUTCOMES.len()],
    latency: [[AtomicU64; LATENCY_BUCKETS.len() + 1]; UPSTREAM_OUTCOMES.len()],
    latency_sum_us: [AtomicU64; UPSTREAM_OUTCOMES.len()],
}

impl Stats {
    pub(crate) fn hit(&self, k: Kind) {
        self.hits[k.index()].fetch_add(1, Relaxed);
    }
    pub(crate) fn miss(&self, k: Kind) {
        self.misses[k.index()].fetch_add(1, Relaxed);
    }
    pub(crate) fn prefetch(&self) {
        self.prefetches.fetch_add(1, Relaxed);
    }
    pub(crate) fn stale(&self) {
        self.stale_served.fetch_add(1, Relaxed);
    }
    pub(crate) fn coalesced(&self) {
        self.coalesced.fetch_add(1, Relaxed);
    }
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }
    pub(crate) fn wildcard_marked(&self) {
        self.wildcard_marked.fetch_add(1, Relaxed);
    }
    pub(crate) fn wildcard_synthesized(&self) {
        self.wildcard_synthesized.fetch_add(1, Relaxed);
    }
    pub(crate) fn nxdomain_cut(&self) {
        self.nxdomain_cut.fetch_add(1, Relaxed);
    }
    pub(crate) fn failure_cached(&self) {
        self.failure_cached.fetch_add(1, Relaxed);
    }
    pub(crate) fn rate_limited_fallback(&self) {
        self.rate_limited_fallback.fetch_add(1, Relaxed);
    }
    pub(crate) fn wildcard_probed(&self) {
        self.wildcard_probed.fetch_add(1, Relaxed);
    }
    pub(crate) fn wildcard_verified(&self) {
        self.wildcard_verified.fetch_add(1, Relaxed);
    }
    pub(crate) fn wildcard_unmarked(&self) {
        self.wildcard_unmarked.fetch_add(1, Relaxed);
    }

    /// Counts one upstream query with its outcome label and latency.
    pub(crate) fn upstream(&self, outcome: &str, latency: Duration) {
        let i = UPSTREAM_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(UPSTREAM_OUTCOMES.len() - 1);
        self.upstream[i].fetch_add(1, Relaxed);
        let secs = latency.as_secs_f64();
        let b = LATENCY_BUCKETS
            .iter()
            .position(|&ub| secs <= ub)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[i][b].fetch_add(1, Relaxed);
        self.latency_sum_us[i].fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    /// Copies the counters.
    pub fn snapshot(&self, cache_entries: u64, cache_bytes: u64) -> StatsSnapshot {
        let per_kind = |a: &[AtomicU64; KINDS.len()]| {
            KINDS
                .iter()
                .map(|k| (k.label().to_owned(), a[k.index()].load(Relaxed)))
                .collect()
        };
        let upstream_latency = UPSTREAM_OUTCOMES
            .iter()
            .enumerate()
            .map(|(o, name)| {
                let buckets = LATENCY_BUCKETS
                    .iter()
                    .copied()
                    .chain([f64::MAX])
                    .enumerate()
                    .map(|(b, ub)| (ub, self.latency[o][b].load(Relaxed)))
                    .collect();
                LatencyHistogram {
                    outcome: (*name).to_owned(),
                    buckets,
                    sum: self.latency_sum_us[o].load(Relaxed) as f64 / 1e6,
                }
            })
            .collect();
        StatsSnapshot {
            hits: per_kind(&self.hits),
            misses: per_kind(&self.misses),
            prefetches: self.prefetches.load(Relaxed),
            stale_served: self.stale_served.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            wildcard_marked: self.wildcard_marked.load(Relaxed),
            wildcard_synthesized: self.wildcard_synthesized.load(Relaxed),
            nxdomain_cut: self.nxdomain_cut.load(Relaxed),
            failure_cached: self.failure_cached.load(Relaxed),
            rate_limited_fallback: self.rate_limited_fallback.load(Relaxed),
            wildcard_probed: self.wildcard_probed.load(Relaxed),
            wildcard_verified: self.wildcard_verified.load(Relaxed),
            wildcard_unmarked: self.wildcard_unmarked.load(Relaxed),
            upstream: UPSTREAM_OUTCOMES
                .iter()
                .zip(&self.upstream)
                .map(|(o, n)| ((*o).to_owned(), n.load(Relaxed)))
                .collect(),
            upstream_latency,
            cache_entries,
            cache_bytes,
        }
    }
}
