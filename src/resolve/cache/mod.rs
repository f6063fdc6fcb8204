//! The answer cache: quick_cache's sharded synchronous cache (CLOCK-PRO eviction, a hit is a
//! read lock and an atomic flag), keyed by (question kind, normalized name), bounded by bytes;
//! concurrent misses coalesced into one upstream query; the freshness decisions (fresh,
//! prefetch, stale, gone) made against a `now` passed in, so they are tested without sleeping.
//!
//! Why not moka (the design card's choice, used for the small bounded maps elsewhere): moka
//! holds ~360 bytes of its own per entry (shared key, access- and write-order nodes, timer
//! wheel, write buffers that let a fill run ahead of eviction), more than a cached SPF policy
//! itself; quick_cache holds one slab slot and one table index (~64 bytes), evicts on the
//! inserting thread, and so keeps the weighed total, and with it the process, under
//! `max_bytes` (issue 17, loadtest/MEMORY.md).
//!
//! Entries do not expire by themselves: one past its TTL and the serve-stale window (RFC 8767)
//! reads as absent and leaves the store when next looked at, unless eviction or replacement
//! took its slot first; the logical clock decides how an entry may be used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

mod cold;
mod entry;

pub use entry::{Entry, hot_budget};
use entry::{HotList, gone};

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

/// What the cache can do for a key at `now`.
pub enum State {
    /// Fresh; `prefetch` says the remaining TTL is under the prefetch fraction.
    Fresh {
        /// The entry.
        entry: Arc<Entry>,
        /// Its answer.
        answer: Arc<Answer>,
        /// Whether to refresh it in the background.
        prefetch: bool,
    },
    /// Expired but inside the stale window.
    Stale {
        /// The entry.
        entry: Arc<Entry>,
        /// Its answer.
        answer: Arc<Answer>,
    },
    /// Nothing usable.
    Absent,
}

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

/// The store: entries weighed by [`entry_weight`].
type Store = quick_cache::sync::Cache<Key, Arc<Entry>, EntryWeight>;

#[derive(Clone)]
struct EntryWeight;

impl quick_cache::Weighter<Key, Arc<Entry>> for EntryWeight {
    fn weight(&self, k: &Key, v: &Arc<Entry>) -> u64 {
        u64::from(entry_weight(k, v))
    }
}

struct Inner {
    store: Store,
    /// Upstream failures per (query name, type), for the failure TTL (RFC 9520 §3: the
    /// failure belongs to the query, so an SPF and a raw TXT question share it).
    failures: moka::sync::Cache<Query, Failure>,
    inflight: Mutex<HashMap<Key, Inflight>>,
    /// Upstream queries in flight, per (DNS type, name): one query for every kind that needs it.
    queries: Mutex<HashMap<Query, QueryInflight>>,
    hot: HotList,
    cfg: CacheConfig,
}

/// The cache (cheap to clone).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// What the store holds per entry beside the key's name and the value's allocations: its slab
/// slot (key, value, eviction state and link) and its hash-table index and control byte, the
/// table at its largest load (7/8 of a power of two, so up to twice the entries).
const STORE_PER_ENTRY: usize = std::mem::size_of::<Key>() + 8 + 16 + 2 * (4 + 1);

/// Ghost slots (keys recently evicted, remembered by hash so a returning key is admitted hot)
/// per resident entry at most, and what each costs: a slab slot and a table index.
const GHOST_SHARE: f64 = 0.5;

/// An entry's typical weight, to size the store's tables and its ghost list.
const TYPICAL_ENTRY: u64 = 512;

/// What an entry costs the process: its own form (its compact form, or its answer,
/// [`Answer::weight`]), the `Entry` allocation, the key's name and the store's slot, in
/// allocator chunks. A parsed answer held beside a compact form is charged to the hot list.
fn entry_weight(k: &Key, v: &Arc<Entry>) -> u32 {
    let own = alloc_size(std::mem::size_of::<Entry>() + 16)
        + alloc_size(k.name.len() + 16)
        + STORE_PER_ENTRY;
    v.weight
        .saturating_add(u32::try_from(own).unwrap_or(u32::MAX))
}

impl Inner {
    /// Stores an entry; one holding a parsed answer beside its compact form goes on the hot
    /// list.
    fn insert(&self, key: Key, entry: Arc<Entry>) {
        // A compact form is rebuilt with the key's kind and name: an answer stored under
        // another key (no caller does) is kept parsed instead.
        let entry = match entry.answers_for(&key) {
            true => entry,
            false => entry.parsed_only().map_or(entry, Arc::new),
        };
        let hot = entry.hot_weight();
        self.store.insert(key, entry.clone());
        if let Some(w) = hot {
            self.hot.push(&entry, w);
        }
    }

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
        // The hot list's answers and the ghost list's slots are paid from the same bound.
        let hot = hot_budget(cfg.max_bytes);
        let items = (cfg.max_bytes / TYPICAL_ENTRY).max(1);
        let ghosts = (items as f64 * GHOST_SHARE) as u64 * STORE_PER_ENTRY as u64;
        let store = Store::with_options(
            quick_cache::OptionsBuilder::new()
                .estimated_items_capacity(usize::try_from(items).unwrap_or(usize::MAX))
                .weight_capacity(cfg.max_bytes.saturating_sub(ghosts + hot).max(1))
                .ghost_allocation(GHOST_SHARE)
                .build()
                .expect("the cache's options are valid"),
            EntryWeight,
            Default::default(),
            Default::default(),
        );
        let failures = moka::sync::Cache::builder()
            .max_capacity(MAX_FAILURES)
            .time_to_live(cfg.failure_ttl)
            .build();
        Cache {
            inner: Arc::new(Inner {
                store,
                failures,
                inflight: Mutex::new(HashMap::new()),
                queries: Mutex::new(HashMap::new()),
                hot: HotList {
                    budget: hot,
                    inner: Mutex::default(),
                },
                cfg,
            }),
        }
    }

    /// The policy in force.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.cfg
    }

    /// Classifies the entry for `key` at `now`, for a use of its answer (a released answer is
    /// rebuilt and held again).
    pub fn state(&self, key: &Key, now: Instant) -> State {
        self.classify(key, now, true)
    }

    /// Classifies the entry for `key` at `now` for a look only (an existence check, the
    /// wildcard watch's comparison): a released answer is rebuilt for the caller and not held.
    pub fn peek_state(&self, key: &Key, now: Instant) -> State {
        self.classify(key, now, false)
    }

    fn classify(&self, key: &Key, now: Instant, hold: bool) -> State {
        let Some(entry) = self.inner.store.get(key) else {
            return State::Absent;
        };
        let cfg = &self.inner.cfg;
        let expires = entry.expires_at();
        let answer = |entry: &Arc<Entry>| match hold {
            true => self.answer(key, entry),
            false => self.peek_answer(key, entry),
        };
        if now < expires {
            let left = expires - now;
            let prefetch = left.as_secs_f64() < entry.ttl().as_secs_f64() * cfg.prefetch_fraction;
            let answer = answer(&entry);
            State::Fresh {
                entry,
                answer,
                prefetch,
            }
        } else if now < expires + cfg.stale_window {
            let answer = answer(&entry);
            State::Stale { entry, answer }
        } else {
            // Past serving: its slot goes now rather than at eviction (unless replaced since).
            self.inner.store.remove_if(key, |e| Arc::ptr_eq(e, &entry));
            State::Absent
        }
    }

    /// The answer of `entry` (cached for `key`): the one it holds, or the one rebuilt from its
    /// compact form, which it then holds on the hot list.
    pub fn answer(&self, key: &Key, entry: &Arc<Entry>) -> Arc<Answer> {
        let (answer, rebuilt) = entry.parse(key, true).unwrap_or_else(|| gone(key));
        if rebuilt {
            self.inner.hot.push(entry, answer.weight());
        }
        answer
    }

    /// The answer of `entry` without holding it or marking it used (snapshots, looks).
    pub fn peek_answer(&self, key: &Key, entry: &Entry) -> Arc<Answer> {
        entry.parse(key, false).unwrap_or_else(|| gone(key)).0
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
        self.inner.insert(key, entry);
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
                            inner.insert(key.clone(), entry.clone());
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

    /// Entries and weighted bytes: the store's (exact: it evicts as it inserts) and the hot
    /// list's parsed answers.
    pub fn usage(&self) -> (u64, u64) {
        (
            self.inner.store.len() as u64,
            self.inner.store.weight() + self.inner.hot.bytes(),
        )
    }

    /// Every entry, for snapshots.
    pub fn entries(&self) -> Vec<(Key, Arc<Entry>)> {
        self.inner.store.iter().collect()
    }
}
