//! The resolver's counters as the `stats` op carries them.

use serde::{Deserialize, Serialize};

/// Upstream latency for one outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// The outcome label (see `resolve::stats::UPSTREAM_OUTCOMES`).
    pub outcome: String,
    /// Per-bucket counts (not cumulative): each bound of `resolve::stats::LATENCY_BUCKETS`, then `f64::MAX`
    /// standing for +Inf.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the latencies, seconds.
    pub sum: f64,
}

/// A point-in-time copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Cache hits per kind (label, count), stale and wildcard answers excluded.
    pub hits: Vec<(String, u64)>,
    /// Misses per kind (answers that needed upstream).
    pub misses: Vec<(String, u64)>,
    /// Background prefetches started.
    pub prefetches: u64,
    /// Stale answers served.
    pub stale_served: u64,
    /// Requests that joined an in-flight query instead of making one.
    pub coalesced: u64,
    /// Requests refused by the per-organization limiter (with nothing cached to serve).
    pub rate_limited: u64,
    /// Organizations marked wildcard.
    pub wildcard_marked: u64,
    /// Answers synthesized from a wildcard sample.
    pub wildcard_synthesized: u64,
    /// Negative answers synthesized from an ancestor's NXDOMAIN (RFC 8020).
    pub nxdomain_cut: u64,
    /// Questions answered with an upstream failure remembered for the name (RFC 9520), without
    /// asking upstream again.
    #[serde(default)]
    pub failure_cached: u64,
    /// Questions over the per-organization budget answered from a shorter name's cached
    /// record (DMARC discovery), flagged `rate_limited_fallback`.
    pub rate_limited_fallback: u64,
    /// Random-label probes asked before marking an organization wildcard.
    pub wildcard_probed: u64,
    /// Names under a wildcard mark asked upstream anyway to verify the sample.
    pub wildcard_verified: u64,
    /// Wildcard marks ended because a verified name answered differently.
    pub wildcard_unmarked: u64,
    /// Upstream queries by outcome (label, count).
    pub upstream: Vec<(String, u64)>,
    /// Upstream latency per outcome: (outcome, per-bucket counts, not cumulative, for each
    /// bound of `resolve::stats::LATENCY_BUCKETS` then `f64::MAX` for +Inf, sum of seconds).
    pub upstream_latency: Vec<LatencyHistogram>,
    /// Cache entries.
    pub cache_entries: u64,
    /// Cache weighted bytes.
    pub cache_bytes: u64,
}

impl StatsSnapshot {
    /// Total upstream queries.
    pub fn upstream_total(&self) -> u64 {
        self.upstream.iter().map(|(_, n)| n).sum()
    }
}
