//! The answer cache: moka (its synchronous cache: a hit is a plain call, measured ~15 % more
//! pipelined throughput than the async one), keyed by (question kind, normalized name), bounded by bytes, each
//! entry expiring by its own TTL; concurrent misses coalesced into one upstream query; the
//! freshness decisions (fresh, prefetch, stale, gone) made against a `now` passed in, so they
//! are tested without sleeping.
//!
//! moka evicts an entry only once its TTL *and* the serve-stale window (RFC 8767) have passed in
//! real time; until then the logical clock decides how the entry may be used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::answer::{Answer, Kind};
use super::upstream::RawAnswer;
use super::{DomainName, ResolveError};
use crate::model::answer::alloc_size;
use hickory_resolver::proto::rr::RecordType;

/// Cache policy (defaults per `../shared/DESIGN.md`).
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Byte bound over all entries.
    pub max_bytes: u64,
    /// Positive TTL clamp.
    pub positive_ttl: (Duration, Duration),
    /// Negative TTL clamp.
    pub negative_ttl: (Duration, Duration),
    /// A hit with less than this fraction of its TTL left triggers one background refresh.
    pub prefetch_fraction: f64,
    /// How long past expiry an entry may still be served when upstream fails.
    pub stale_window: Duration,
    /// A stale entry's refresh is attempted at most this often.
    pub stale_retry: Duration,
    /// How long a client waits for a refresh before the stale answer is served.
    pub client_timeout: Duration,
    /// How long an upstream failure (SERVFAIL, REFUSED, timeout, DNSSEC bogus) is remembered
    /// per name and answered without asking again (RFC 9520 §3.2: at least 1 s, at most 5 min).
    pub failure_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: 256 << 20,
            positive_ttl: (Duration::from_secs(30), Duration::from_secs(86_400)),
            negative_ttl: (Duration::from_secs(30), Duration::from_secs(3_600)),
            prefetch_fraction: 0.10,
            stale_window: Duration::from_secs(86_400),
            stale_retry: Duration::from_secs(30),
            client_timeout: Duration::from_millis(400),
            failure_ttl: Duration::from_secs(5),
        }
    }
}

/// A cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The question kind.
    pub kind: Kind,
    /// The query name.
    pub name: DomainName,
}

/// How an entry got into the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client's miss (or a stale refresh).
    Fetched,
    /// A background prefetch.
    Prefetched,
    /// Loaded from a snapshot.
    Restored,
}

/// One cached answer and its timing.
#[derive(Debug)]
pub struct Entry {
    /// The answer.
    pub answer: Arc<Answer>,
    /// Logical time it was stored.
    pub stored_at: Instant,
    /// Effective (clamped) TTL.
    pub ttl: Duration,
    /// How it got here.
    pub origin: Origin,
    prefetch_claimed: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
}

impl Entry {
    /// A new entry for `answer` stored at `now`, its TTL clamped per `cfg`.
    pub fn new(answer: Arc<Answer>, now: Instant, origin: Origin, cfg: &CacheConfig) -> Entry {
        let (lo, hi) = if answer.is_positive() {
            cfg.positive_ttl
        } else {
            cfg.negative_ttl
        };
        let ttl = Duration::from_secs(u64::from(answer.ttl)).clamp(lo, hi);
        Entry {
            answer,
            stored_at: now,
            ttl,
            origin,
            prefetch_claimed: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
        }
    }

    /// An entry loaded from a snapshot, with the TTL it has left.
    pub fn restored(answer: Arc<Answer>, stored_at: Instant, ttl: Duration) -> Entry {
        Entry {
            answer,
            stored_at,
            ttl,
            origin: Origin::Restored,
            prefetch_claimed: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
        }
    }

    /// When the entry stops being fresh.
    pub fn expires_at(&self) -> Instant {
        self.stored_at + self.ttl
    }

    /// Seconds of freshness left at `now` (0 once expired).
    pub fn remaining_secs(&self, now: Instant) -> u32 {
        u32::try_from(self.expires_at().saturating_duration_since(now).as_secs())
            .unwrap_or(u32::MAX)
    }

    /// Claims the one prefetch this entry may trigger.
    pub fn claim_prefetch(&self) -> bool {
        !self.prefetch_claimed.swap(true, Ordering::AcqRel)
    }

    /// Records a refresh attempt at `now` unless one was made less than `every` ago; returns
    /// whether the caller may go upstream.
    pub fn begin_refresh(&self, now: Instant, every: Duration) -> bool {
        let mut last = self.last_refresh.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.saturating_duration_since(t) < every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// What the cache can do for a key at `now`.
pub enum State {
    /// Fresh; `prefetch` says the remaining TTL is under the prefetch fraction.
    Fresh {
        /// The entry.
        entry: Arc<Entry>,
        /// Whether to refresh it in the background.
        prefetch: bool,
    },
    /// Expired but inside the stale window.
    Stale(Arc<Entry>),
    /// Nothing usable.
    Absent,
}

/// Reads between two housekeeping steps (moka's own threshold is 64).
const HOUSEKEEPING_EVERY: u64 = 16;

/// A task in flight, shared by everyone waiting for it.
type InFlight<T> = Shared<BoxFuture<'static, Result<T, ResolveError>>>;

type Inflight = InFlight<Arc<Entry>>;

type QueryInflight = InFlight<RawAnswer>;

/// The tasks in flight, by key.
type InFlightMap<K, T> = Mutex<HashMap<K, InFlight<T>>>;

/// Runs `work` as its own task, so it completes even if every waiter gives up, and returns its
/// shared handle for the caller to put in its in-flight map (`map`) under the lock it holds.
/// When the work ends, `done` records its result (the cache entry, a remembered failure), then
/// the task leaves the map: taking the lock orders this after the caller's insertion, and a
/// question that finds the key no longer in flight finds what `done` recorded.
fn spawn_in_flight<K, T>(
    inner: &Arc<Inner>,
    key: K,
    work: BoxFuture<'static, Result<T, ResolveError>>,
    map: fn(&Inner) -> &InFlightMap<K, T>,
    done: impl FnOnce(&Inner, &K, &Result<T, ResolveError>) + Send + 'static,
    failed: &'static str,
) -> InFlight<T>
where
    K: std::hash::Hash + Eq + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    let inner = inner.clone();
    let task = tokio::spawn(async move {
        let result = work.await;
        done(&inner, &key, &result);
        map(&inner)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        result
    });
    async move {
        task.await
            .unwrap_or(Err(ResolveError::Internal(failed.into())))
    }
    .boxed()
    .shared()
}

/// The upstream query a question needs: its DNS type and name. Questions of different kinds
/// may share one (an SPF and a raw TXT question for one name): they share its failure and its
/// flight.
type Query = (RecordType, DomainName);

fn query_of(key: &Key) -> Query {
    (key.kind.record_type(), key.name.clone())
}

/// How [`Cache::query_coalesced`] got its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryOutcome {
    /// This caller sent the query.
    Asked,
    /// It waited for the same query in flight (for this question or another kind's).
    Joined,
    /// A failure of the query was remembered: nothing was sent.
    Remembered,
}

/// An upstream failure remembered for a key until `until` (logical time).
#[derive(Clone)]
struct Failure {
    error: ResolveError,
    until: Instant,
}

/// How [`Cache::fetch_coalesced`] got its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// This caller ran the fetch (or `start` refused it).
    Fetched,
    /// It waited for the fetch of the same key in flight.
    Coalesced,
    /// A failure of the key's query was remembered: no fetch.
    Remembered,
}

/// Failures remembered at most (a failure weighs little; the bound keeps a flood of failing
/// names from growing memory).
const MAX_FAILURES: u64 = 100_000;

struct Inner {
    store: moka::sync::Cache<Key, Arc<Entry>>,
    /// Upstream failures per (query name, type), for the failure TTL (RFC 9520 §3: the
    /// failure belongs to the query, so an SPF and a raw TXT question share it).
    failures: moka::sync::Cache<Query, Failure>,
    /// Reads since start, to run moka's housekeeping in small steps (see [`Cache::state`]).
    reads: AtomicU64,
    inflight: Mutex<HashMap<Key, Inflight>>,
    /// Upstream queries in flight, per (DNS type, name): one query for every kind that needs it.
    queries: Mutex<HashMap<Query, QueryInflight>>,
    cfg: CacheConfig,
}

/// The cache (cheap to clone).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// What moka holds per entry beside the key and value themselves (its shared key, the entry's
/// bookkeeping, its access-order, write-order and timer-wheel nodes, its hash-table bucket):
/// measured with heaptrack on `loadtest/memory`'s fill, ~363 bytes per entry (36.3 MB for
/// 100,000 entries; loadtest/RESULTS.md).
const MOKA_PER_ENTRY: usize = 368;

/// What an entry costs the process: its answer ([`Answer::weight`]), the `Entry` allocation,
/// the key's name and moka's own bookkeeping, in allocator chunks.
fn entry_weight(k: &Key, v: &Arc<Entry>) -> u32 {
    let own = alloc_size(std::mem::size_of::<Entry>() + 16)
        + alloc_size(k.name.len() + 16)
        + MOKA_PER_ENTRY;
    v.answer
        .weight()
        .saturating_add(u32::try_from(own).unwrap_or(u32::MAX))
}

struct EntryExpiry {
    stale_window: Duration,
}

impl moka::Expiry<Key, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _k: &Key,
        v: &Arc<Entry>,
        _at: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.ttl + self.stale_window)
    }
    fn expire_after_update(
        &self,
        _k: &Key,
        v: &Arc<Entry>,
        _at: std::time::Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl + self.stale_window)
    }
}

impl Inner {
    fn failure(&self, query: &Query, now: Instant) -> Option<ResolveError> {
        let f = self.failures.get(query)?;
        (now < f.until).then_some(f.error)
    }

    fn insert_failure(&self, query: Query, error: ResolveError, now: Instant) {
        let until = now + self.cfg.failure_ttl;
        self.failures.insert(query, Failure { error, until });
    }
}

impl Cache {
    /// An empty cache.
    pub fn new(cfg: CacheConfig) -> Cache {
        let store = moka::sync::Cache::builder()
            .max_capacity(cfg.max_bytes)
            .weigher(entry_weight)
            .expire_after(EntryExpiry {
                stale_window: cfg.stale_window,
            })
            .build();
        let failures = moka::sync::Cache::builder()
            .max_capacity(MAX_FAILURES)
            .time_to_live(cfg.failure_ttl)
            .build();
        Cache {
            inner: Arc::new(Inner {
                store,
                failures,
                reads: AtomicU64::new(0),
                inflight: Mutex::new(HashMap::new()),
                queries: Mutex::new(HashMap::new()),
                cfg,
            }),
        }
    }

    /// The policy in force.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.cfg
    }

    /// Classifies the entry for `key` at `now`.
    pub fn state(&self, key: &Key, now: Instant) -> State {
        // moka records every read and applies the records (LRU and frequency updates) on the
        // reading thread once 64 have piled up: with a working set of thousands of entries that
        // one batch costs ~20 µs, which a client sees as a latency spike on ~1.6 % of its hits
        // (measured: p99 30 µs against a p50 of 10 µs). Applying them every sixteenth read
        // costs about the same in all and keeps each step small (p99 17 µs; every eighth: 15 µs
        // at 3 % less throughput).
        if self.inner.reads.fetch_add(1, Ordering::Relaxed) % HOUSEKEEPING_EVERY
            == HOUSEKEEPING_EVERY - 1
        {
            self.inner.store.run_pending_tasks();
        }
        let Some(entry) = self.inner.store.get(key) else {
            return State::Absent;
        };
        let cfg = &self.inner.cfg;
        let expires = entry.expires_at();
        if now < expires {
            let left = expires - now;
            let prefetch = left.as_secs_f64() < entry.ttl.as_secs_f64() * cfg.prefetch_fraction;
            State::Fresh { entry, prefetch }
        } else if now < expires + cfg.stale_window {
            State::Stale(entry)
        } else {
            State::Absent
        }
    }

    /// The upstream failure remembered for `key`'s query (name and DNS type), if it is still
    /// in force at `now`.
    pub fn failure(&self, key: &Key, now: Instant) -> Option<ResolveError> {
        self.inner.failure(&query_of(key), now)
    }

    /// Sends the upstream query `key` needs (its DNS type and name) unless that query is in
    /// flight already, for this kind or another (an SPF and a raw TXT question for one name
    /// send one query), or a failure of it is remembered (RFC 9520). Both are decided under the
    /// lock that puts a query in flight, and a failure is remembered before its query leaves
    /// the in-flight map: no question slips between the two and sends another query. The query
    /// runs as its own task.
    pub async fn query_coalesced<F>(
        &self,
        key: &Key,
        now: Instant,
        start: F,
    ) -> (Result<RawAnswer, ResolveError>, QueryOutcome)
    where
        F: FnOnce() -> BoxFuture<'static, Result<RawAnswer, ResolveError>>,
    {
        let query = query_of(key);
        let (shared, outcome) = {
            let mut map = self.inner.queries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = map.get(&query) {
                (f.clone(), QueryOutcome::Joined)
            } else if let Some(e) = self.inner.failure(&query, now) {
                return (Err(e), QueryOutcome::Remembered);
            } else {
                let shared = spawn_in_flight(
                    &self.inner,
                    query.clone(),
                    start(),
                    |inner| &inner.queries,
                    move |inner, query, result| {
                        if let Err(e) = result
                            && e.is_upstream_failure()
                        {
                            inner.insert_failure(query.clone(), e.clone(), now);
                        }
                    },
                    "query task failed",
                );
                map.insert(query, shared.clone());
                (shared, QueryOutcome::Asked)
            }
        };
        (shared.await, outcome)
    }

    /// Stores an entry.
    pub fn insert(&self, key: Key, entry: Arc<Entry>) {
        self.inner.store.insert(key, entry);
    }

    /// Runs `fetch` for `key` unless a fetch for it is already in flight, in which case the
    /// caller waits for that one (the flag says so). The fetch runs as its own task: it
    /// completes and fills the cache even if every waiter gives up (a client timeout).
    /// `start` may refuse to start a fetch (rate limit); then nothing is put in flight. A
    /// failure remembered for the key's query at `now` is returned without a fetch (checked
    /// under the in-flight lock). So is an entry fresh at `now` other than `seen` (the one the
    /// caller's cache look found, if any): a fetch for the key that completed between that
    /// look and this lock already answered it, and asking again would cost a second query.
    pub async fn fetch_coalesced<F>(
        &self,
        key: &Key,
        seen: Option<&Arc<Entry>>,
        now: Instant,
        start: F,
    ) -> (Result<Arc<Entry>, ResolveError>, FetchOutcome)
    where
        F: FnOnce() -> Result<BoxFuture<'static, Result<Arc<Entry>, ResolveError>>, ResolveError>,
    {
        let (shared, coalesced) = {
            let mut map = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(f) = map.get(key) {
                (f.clone(), true)
            } else if let Some(entry) = self
                .inner
                .store
                .get(key)
                .filter(|e| now < e.expires_at() && !seen.is_some_and(|s| Arc::ptr_eq(s, e)))
            {
                // Filled since the caller looked (a fetch stores its entry before it leaves
                // this map).
                return (Ok(entry), FetchOutcome::Coalesced);
            } else if let Some(e) = self.inner.failure(&query_of(key), now) {
                // Checked again under the lock: a fetch that failed remembered the failure
                // before it left this map.
                return (Err(e), FetchOutcome::Remembered);
            } else {
                let fetch = match start() {
                    Ok(f) => f,
                    Err(e) => return (Err(e), FetchOutcome::Fetched),
                };
                let shared = spawn_in_flight(
                    &self.inner,
                    key.clone(),
                    fetch,
                    |inner| &inner.inflight,
                    |inner, key, result| {
                        if let Ok(entry) = result {
                            inner.store.insert(key.clone(), entry.clone());
                        }
                    },
                    "fetch task failed",
                );
                map.insert(key.clone(), shared.clone());
                (shared, false)
            }
        };
        let outcome = if coalesced {
            FetchOutcome::Coalesced
        } else {
            FetchOutcome::Fetched
        };
        (shared.await, outcome)
    }

    /// Entries and weighted bytes (moka's counts, approximate until its housekeeping runs).
    pub fn usage(&self) -> (u64, u64) {
        (
            self.inner.store.entry_count(),
            self.inner.store.weighted_size(),
        )
    }

    /// Runs moka's pending housekeeping (so `usage` is exact).
    pub fn sync(&self) {
        self.inner.store.run_pending_tasks();
    }

    /// Every entry, for snapshots.
    pub fn entries(&self) -> Vec<(Key, Arc<Entry>)> {
        self.inner
            .store
            .iter()
            .map(|(k, v)| ((*k).clone(), v))
            .collect()
    }
}
