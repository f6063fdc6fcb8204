//! The engine that keeps per-message DNS load down: one method per question, answered from a
//! cache of parsed policies. Knows nothing of sockets.
//!
//! A question goes: normalize the name → cache ([`cache`]): fresh (maybe prefetch in the
//! background), stale (refresh within the client timeout, else serve stale, RFC 8767), or
//! absent → RFC 8020 NXDOMAIN cut → wildcard mark ([`limit`]) → rate limit per organizational
//! domain → one coalesced upstream query ([`upstream`]) → parse (`policy`) → cache.

pub mod answer;
pub mod cache;
pub mod discover;
mod error;
pub mod evaluate;
pub mod limit;
pub mod snapshot;
pub mod spf;
pub mod stats;
pub mod upstream;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hickory_resolver::proto::op::ResponseCode;

pub use self::answer::{Answer, Data, Found, Kind, Rcode};
pub use self::cache::{CacheConfig, Origin};
pub use self::discover::{DiscoveryMode, DmarcDiscovery};
pub use self::error::ResolveError;
pub use self::limit::LimitConfig;
pub use self::stats::StatsSnapshot;
pub use self::upstream::{DnssecStatus, UpstreamConfig};

use self::cache::{Cache, Entry, FetchOutcome, Key, QueryOutcome, State};
use self::limit::{Limiter, Observed, WildcardWatch};
use self::stats::Stats;
use self::upstream::Upstream;
use crate::orgdomain::SuffixList;
use crate::policy::atps::{self, AtpsHash};

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// From the cache, fresh.
    Hit,
    /// From upstream, just now.
    Miss,
    /// Expired, served because upstream failed or was too slow (RFC 8767).
    Stale,
    /// From the cache, refreshed in the background by a prefetch.
    Prefetched,
    /// Synthesized from the sample of an organization marked wildcard.
    Wildcard,
    /// Not asked: the organization's upstream budget was spent, and a shorter name's cached
    /// record answered instead (DMARC discovery; listed in its `queries` and `source`).
    RateLimitedFallback,
}

/// An answer with its provenance.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// The cached answer.
    pub answer: Arc<Answer>,
    /// Where it came from.
    pub source: Source,
    /// Seconds of freshness left (0 when stale).
    pub ttl_remaining: u32,
}

/// Everything the resolver needs to know.
#[derive(Clone)]
pub struct ResolverConfig {
    /// Upstream servers and timeouts.
    pub upstream: UpstreamConfig,
    /// Cache policy.
    pub cache: CacheConfig,
    /// Abuse controls.
    pub limits: LimitConfig,
    /// How DMARC policies are discovered.
    pub discovery: DiscoveryMode,
    /// RFC 8020: answer names under a known-NXDOMAIN name negatively without a query.
    pub nxdomain_cut: bool,
    /// The Public Suffix List (organizational domains, limiter keys).
    pub suffix_list: Arc<SuffixList>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            upstream: UpstreamConfig::default(),
            cache: CacheConfig::default(),
            limits: LimitConfig::default(),
            discovery: DiscoveryMode::TreeWalk,
            nxdomain_cut: false,
            suffix_list: Arc::new(SuffixList::builtin()),
        }
    }
}

struct Inner {
    upstream: Upstream,
    cache: Cache,
    limiter: Limiter,
    wildcard: WildcardWatch,
    nx: moka::sync::Cache<Arc<str>, Instant>,
    stats: Stats,
    cfg: ResolverConfig,
}

/// The resolver (cheap to clone; all clones share one cache).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

/// Lower-cases, strips one trailing dot, and checks RFC 1035 lengths (labels 1..=63 octets,
/// name ≤ 253) and characters (printable ASCII). The serving layer does IDNA, and the stricter
/// host-name checks, before this.
pub fn normalize_name(name: &str) -> Result<Arc<str>, ResolveError> {
    let n = name.strip_suffix('.').unwrap_or(name);
    let bad = |why: &str| ResolveError::InvalidName(format!("{name:?}: {why}").into());
    if n.is_empty() {
        return Err(bad("empty"));
    }
    if n.len() > 253 {
        return Err(bad("longer than 253 octets"));
    }
    for label in n.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("label longer than 63 octets"));
        }
        // Any octet but control characters: DNS labels are binary (RFC 2181 §11), and SPF
        // macro expansion can produce spaces and '%'. Non-ASCII must arrive as A-labels.
        if !label.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(bad("control or non-ASCII characters (use A-labels)"));
        }
    }
    // Names arrive lower-cased (the serving layer normalizes them): then one allocation.
    if n.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Arc::from(n.to_ascii_lowercase()))
    } else {
        Ok(Arc::from(n))
    }
}

/// Whether `name` (normalized) can be a DNS name at all: at most 253 octets, labels of at most
/// 63 (RFC 1035 §2.3.4). A longer name cannot exist, nor can any name below it.
pub fn dns_formable(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(|l| l.len() <= 63)
}

/// An author (From) domain for DMARC: [`normalize_name`], except that a name beyond DNS's
/// lengths (over 253 octets, or a label over 63) that is otherwise a plausible domain (labels
/// of letters, digits, `-` and `_`, none empty) is accepted as it is: such a name cannot exist
/// (see [`dns_formable`]), so its organization's `np` applies (RFC 9989 §4.10 skips the query
/// names that cannot be formed). Garbage (empty labels, spaces, control characters) is still
/// `invalid_name`.
pub fn normalize_author_domain(name: &str) -> Result<Arc<str>, ResolveError> {
    match normalize_name(name) {
        Ok(n) => Ok(n),
        Err(e) => {
            let n = name.strip_suffix('.').unwrap_or(name);
            let plausible = !n.is_empty()
                && !dns_formable(n)
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if plausible {
                Ok(Arc::from(n.to_ascii_lowercase()))
            } else {
                Err(e)
            }
        }
    }
}

impl Resolver {
    /// Builds the resolver. Must be called inside a tokio runtime: it starts the limiter's
    /// housekeeping task, which ends when the last clone of the resolver is dropped.
    pub fn new(cfg: ResolverConfig) -> Result<Resolver, ResolveError> {
        let inner = Arc::new(Inner {
            upstream: Upstream::new(&cfg.upstream)?,
            cache: Cache::new(cfg.cache.clone()),
            limiter: Limiter::new(&cfg.limits),
            wildcard: WildcardWatch::new(&cfg.limits),
            nx: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cfg.cache.negative_ttl.1)
                .build(),
            stats: Stats::default(),
            cfg,
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(inner) => {
                        inner.limiter.retain_recent();
                        inner.wildcard.retain_recent();
                    }
                    None => break,
                }
            }
        });
        Ok(Resolver { inner })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ResolverConfig {
        &self.inner.cfg
    }

    /// The counters, with cache usage.
    pub async fn stats(&self) -> StatsSnapshot {
        self.inner.cache.sync();
        let (entries, bytes) = self.inner.cache.usage();
        self.inner.stats.snapshot(entries, bytes)
    }

    /// The counters without waiting for the cache's housekeeping (entry and byte counts may
    /// lag by a few operations); for synchronous readers such as the metrics endpoint.
    pub fn stats_now(&self) -> StatsSnapshot {
        let (entries, bytes) = self.inner.cache.usage();
        self.inner.stats.snapshot(entries, bytes)
    }

    /// The organizational domain (PSL) used to key the limiter and the wildcard watch; a name
    /// that is itself a public suffix keys by itself.
    pub fn org_of(&self, name: &str) -> String {
        self.inner
            .cfg
            .suffix_list
            .org_domain(name)
            .unwrap_or_else(|| name.to_owned())
    }

    /// Answers one question of `kind` about `name` at logical time `now`.
    pub async fn lookup(
        &self,
        kind: Kind,
        name: &str,
        now: Instant,
    ) -> Result<Lookup, ResolveError> {
        let name = normalize_name(name)?;
        let key = Key { kind, name };
        let inner = &self.inner;
        match inner.cache.state(&key, now) {
            State::Fresh { entry, prefetch } => {
                if prefetch && entry.claim_prefetch() {
                    inner.stats.prefetch();
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _ = this.fetch(key, now, Origin::Prefetched).await;
                    });
                }
                inner.stats.hit(kind);
                let source = if entry.origin == Origin::Prefetched {
                    Source::Prefetched
                } else {
                    Source::Hit
                };
                Ok(Lookup {
                    answer: entry.answer.clone(),
                    source,
                    ttl_remaining: entry.remaining_secs(now),
                })
            }
            State::Stale(entry) => {
                let stale = || {
                    inner.stats.stale();
                    Ok(Lookup {
                        answer: entry.answer.clone(),
                        source: Source::Stale,
                        ttl_remaining: 0,
                    })
                };
                if !entry.begin_refresh(now, inner.cfg.cache.stale_retry) {
                    return stale();
                }
                match tokio::time::timeout(
                    inner.cfg.cache.client_timeout,
                    self.fetch(key, now, Origin::Fetched),
                )
                .await
                {
                    Ok(Ok(fresh)) => {
                        inner.stats.miss(kind);
                        Ok(Lookup {
                            answer: fresh.answer.clone(),
                            source: Source::Miss,
                            ttl_remaining: fresh.remaining_secs(now),
                        })
                    }
                    _ => stale(),
                }
            }
            State::Absent => self.miss(key, now).await,
        }
    }

    async fn miss(&self, key: Key, now: Instant) -> Result<Lookup, ResolveError> {
        let inner = &self.inner;
        if inner.cfg.nxdomain_cut
            && let Some(ttl) = self.nx_ancestor(&key.name, now)
        {
            inner.stats.nxdomain_cut();
            let answer = Arc::new(Answer::nxdomain(key.kind, &key.name, ttl));
            return Ok(Lookup {
                answer,
                source: Source::Hit,
                ttl_remaining: ttl,
            });
        }
        let org = self.org_of(key.kind.subject(&key.name));
        if let Some(at) = limit::Shaped::of(key.kind, &key.name, &org)
            && let Some(sample) = self.wildcard_sample(&key, &at, now)
        {
            return self.wildcard_answer(key, at, sample, now).await;
        }
        let kind = key.kind;
        let entry = self.fetch(key, now, Origin::Fetched).await?;
        inner.stats.miss(kind);
        Ok(Lookup {
            answer: entry.answer.clone(),
            source: Source::Miss,
            ttl_remaining: entry.remaining_secs(now),
        })
    }

    /// The TTL left on an NXDOMAIN cached for a proper ancestor of `name`, if any.
    fn nx_ancestor(&self, name: &str, now: Instant) -> Option<u32> {
        let mut rest = name;
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            if let Some(until) = self.inner.nx.get(rest)
                && now < until
            {
                return u32::try_from((until - now).as_secs()).ok();
            }
        }
        None
    }

    /// Whether `name` exists as far as fresh cached answers tell, without asking: `false`
    /// under a known NXDOMAIN (the name or an ancestor), else the response code of an answer
    /// cached at the name itself (existence, address, MX, TXT or SPF questions); `None` when
    /// nothing is known.
    pub(crate) fn cached_existence(&self, name: &str, now: Instant) -> Option<bool> {
        let inner = &self.inner;
        if inner.nx.get(name).is_some_and(|until| now < until)
            || self.nx_ancestor(name, now).is_some()
        {
            return Some(false);
        }
        let name: Arc<str> = Arc::from(name);
        [
            Kind::Exists,
            Kind::A,
            Kind::Aaaa,
            Kind::Mx,
            Kind::Txt,
            Kind::Spf,
        ]
        .into_iter()
        .find_map(|kind| {
            let key = Key {
                kind,
                name: name.clone(),
            };
            match inner.cache.state(&key, now) {
                State::Fresh { entry, .. } => match entry.answer.rcode {
                    Rcode::NoError => Some(true),
                    Rcode::NxDomain => Some(false),
                    Rcode::ServFail => None,
                },
                _ => None,
            }
        })
    }

    /// One coalesced upstream query for `key`, within the organization's budget; a failure
    /// remembered for the key's query (RFC 9520: its DNS type and name, whatever the kind) is
    /// returned without asking, checked first without a lock and again under the in-flight
    /// lock (a fetch that fails remembers its failure before it leaves the in-flight map).
    async fn fetch(
        &self,
        key: Key,
        now: Instant,
        origin: Origin,
    ) -> Result<Arc<Entry>, ResolveError> {
        if let Some(e) = self.inner.cache.failure(&key, now) {
            self.inner.stats.failure_cached();
            return Err(e);
        }
        let this = self.clone();
        let org = self.org_of(key.kind.subject(&key.name));
        let task_key = key.clone();
        let (result, outcome) = self
            .inner
            .cache
            .fetch_coalesced(&key, now, move || {
                if !this.inner.limiter.allow(&org) {
                    return Err(ResolveError::RateLimited);
                }
                Ok(async move { this.query_upstream(task_key, org, now, origin).await }.boxed())
            })
            .await;
        match outcome {
            FetchOutcome::Coalesced => self.inner.stats.coalesced(),
            FetchOutcome::Remembered => self.inner.stats.failure_cached(),
            FetchOutcome::Fetched => {}
        }
        if matches!(result, Err(ResolveError::RateLimited)) {
            self.inner.stats.rate_limited();
        }
        result
    }

    async fn query_upstream(
        &self,
        key: Key,
        org: String,
        now: Instant,
        origin: Origin,
    ) -> Result<Arc<Entry>, ResolveError> {
        let inner = &self.inner;
        let this = self.clone();
        let query_key = key.clone();
        // One query for every kind that needs it (an SPF and a raw TXT question for one name),
        // counted once; its failure is remembered (for the failure TTL) before it leaves the
        // in-flight map, and a remembered one is answered without a query.
        let (result, outcome) = inner
            .cache
            .query_coalesced(&key, now, move || {
                async move {
                    let inner = &this.inner;
                    let validate = query_key.kind == Kind::Tlsa;
                    let started = Instant::now();
                    let result = inner
                        .upstream
                        .query(&query_key.name, query_key.kind.record_type(), validate)
                        .await;
                    let outcome = match &result {
                        Err(ResolveError::DnssecBogus) => "bogus",
                        Err(e) => e.label(),
                        Ok(raw) if raw.rcode == ResponseCode::NXDomain => "nxdomain",
                        Ok(_) => "noerror",
                    };
                    inner.stats.upstream(outcome, started.elapsed());
                    result
                }
                .boxed()
            })
            .await;
        match outcome {
            QueryOutcome::Joined => inner.stats.coalesced(),
            QueryOutcome::Remembered => inner.stats.failure_cached(),
            QueryOutcome::Asked => {}
        }
        let raw = result?;
        // The name that does not exist: the question's, or the end of its CNAME chain (the
        // question name is then a CNAME, and names below it may exist).
        let nx_name = raw.negative_at.clone();
        let answer = Arc::new(Answer::from_raw(key.kind, &key.name, raw));
        let entry = Arc::new(Entry::new(answer.clone(), now, origin, &inner.cfg.cache));
        if answer.rcode == Rcode::NxDomain
            && let Some(nx_name) = nx_name
        {
            inner.nx.insert(Arc::from(nx_name), entry.expires_at());
        }
        self.watch_wildcard(&key, &org, &answer, now);
        Ok(entry)
    }

    /// The wildcard sample that may answer `key` (a cache miss in the window `at`), unless
    /// anything known about the name says otherwise: it was seen answering differently (as
    /// any kind asking the same DNS type), it or an ancestor is known NXDOMAIN (a DNS wildcard
    /// never answers below an NXDOMAIN), or another kind asking the same DNS type at the name
    /// is cached with a different answer.
    fn wildcard_sample(&self, key: &Key, at: &limit::Shaped, now: Instant) -> Option<Arc<Answer>> {
        let inner = &self.inner;
        let sample = inner.wildcard.synthesize(at, &key.name, now)?;
        if inner.nx.get(&key.name).is_some_and(|until| now < until)
            || self.nx_ancestor(&key.name, now).is_some()
        {
            return None;
        }
        let rtype = key.kind.record_type();
        for other in answer::KINDS {
            if other == key.kind || other.record_type() != rtype {
                continue;
            }
            let okey = Key {
                kind: other,
                name: key.name.clone(),
            };
            if let State::Fresh { entry, .. } | State::Stale(entry) = inner.cache.state(&okey, now)
                && !limit::same_answer(&entry.answer, &sample)
            {
                return None;
            }
        }
        Some(sample)
    }

    /// Answers a miss in a window marked wildcard: from the sample, or, for a sample of
    /// questions within the budget, from upstream, ending the mark when the real answer
    /// differs.
    async fn wildcard_answer(
        &self,
        key: Key,
        at: limit::Shaped,
        sample: Arc<Answer>,
        now: Instant,
    ) -> Result<Lookup, ResolveError> {
        let inner = &self.inner;
        let kind = key.kind;
        // Over the budget or upstream failed: the mark still stands and the sample answers.
        if inner.wildcard.claim_verification(&at.key)
            && let Ok(entry) = self.fetch(key, now, Origin::Fetched).await
        {
            inner.stats.wildcard_verified();
            if !limit::same_answer(&entry.answer, &sample) {
                inner.wildcard.unmark(&at.key, now);
                inner.stats.wildcard_unmarked();
                tracing::warn!(org = %at.key.org, kind = kind.label(), shape = %at.key.shape, name = %entry.answer.name, "wildcard mark ended: a verified name answered differently from the sample");
            }
            inner.stats.miss(kind);
            return Ok(Lookup {
                answer: entry.answer.clone(),
                source: Source::Miss,
                ttl_remaining: entry.remaining_secs(now),
            });
        }
        inner.stats.wildcard_synthesized();
        let ttl_remaining = sample.ttl;
        Ok(Lookup {
            answer: sample,
            source: Source::Wildcard,
            ttl_remaining,
        })
    }

    /// Records an upstream answer (positive or negative) in its wildcard window; when the
    /// window becomes a candidate, starts one probe in the background (the question that
    /// triggered it is answered at once): a random label of the same shape under the
    /// organization, marking the window only if it answers the same record, the evidence of a
    /// real DNS wildcard. One probe per window at a time (the window is *probing* until it
    /// reports, at most 30 s).
    fn watch_wildcard(&self, key: &Key, org: &str, answer: &Arc<Answer>, now: Instant) {
        let inner = &self.inner;
        let Some(at) = limit::Shaped::of(key.kind, &key.name, org) else {
            return;
        };
        let Observed::Candidate { sample } = inner.wildcard.observe(&at, &key.name, answer, now)
        else {
            return;
        };
        let probe = at.probe_name(&key.name, &probe_label());
        let this = self.clone();
        tokio::spawn(async move { this.probe_wildcard(at, probe, sample, now).await });
    }

    /// The probe of a candidate window, paid from the organization's budget like any query:
    /// the organization is reserved (no other question of it admitted) until the probe has
    /// its token, so upstream queries never exceed the budget, and a flood that keeps the
    /// budget empty cannot starve the probe.
    async fn probe_wildcard(
        &self,
        at: limit::Shaped,
        probe: String,
        sample: Arc<Answer>,
        now: Instant,
    ) {
        let inner = &self.inner;
        let kind = at.key.kind;
        let wait = inner
            .cfg
            .cache
            .client_timeout
            .max(inner.limiter.interval() * 2);
        let mut probed = None;
        if normalize_name(&probe).is_ok() && inner.limiter.reserve(&at.key.org, wait).await {
            inner.stats.wildcard_probed();
            let started = Instant::now();
            // The probe is not cached and not observed.
            match inner
                .upstream
                .query(&probe, kind.record_type(), kind == Kind::Tlsa)
                .await
            {
                Ok(raw) => {
                    inner.stats.upstream(
                        match raw.rcode {
                            hickory_resolver::proto::op::ResponseCode::NXDomain => "nxdomain",
                            _ => "noerror",
                        },
                        raw.elapsed,
                    );
                    probed = Some(Answer::from_raw(kind, &probe, raw));
                }
                Err(e) => {
                    let outcome = match e {
                        ResolveError::DnssecBogus => "bogus",
                        _ => e.label(),
                    };
                    inner.stats.upstream(outcome, started.elapsed());
                }
            }
        }
        if inner
            .wildcard
            .probed(&at.key, &sample, probed.as_ref(), now)
        {
            inner.stats.wildcard_marked();
            tracing::warn!(org = %at.key.org, kind = kind.label(), shape = %at.key.shape, "marked wildcard (a random label of the same shape answers the same record): such names answered from a sample");
        }
    }

    /// The SPF record of `domain`.
    pub async fn spf(&self, domain: &str, now: Instant) -> Result<Lookup, ResolveError> {
        self.lookup(Kind::Spf, domain, now).await
    }

    /// The DKIM key at `<selector>._domainkey.<domain>`.
    pub async fn dkim_key(
        &self,
        selector: &str,
        domain: &str,
        now: Instant,
    ) -> Result<Lookup, ResolveError> {
        self.lookup(
            Kind::DkimKey,
            &format!("{selector}._domainkey.{domain}"),
            now,
        )
        .await
    }

    /// The ATPS record authorizing `signer` to sign for `author` (RFC 6541), trying the padded
    /// base32 label first, then the unpadded one.
    pub async fn atps(
        &self,
        signer: &str,
        author: &str,
        hash: AtpsHash,
        now: Instant,
    ) -> Result<Lookup, ResolveError> {
        let names = atps::query_names(signer, author, hash)
            .map_err(|e| ResolveError::InvalidName(e.to_string().into()))?;
        let mut last = None;
        for name in names {
            let l = self.lookup(Kind::Atps, &name, now).await?;
            if matches!(
                &l.answer.data,
                Data::Atps(Found::Valid(_) | Found::Invalid(_))
            ) {
                return Ok(l);
            }
            last = Some(l);
        }
        last.ok_or_else(|| ResolveError::InvalidName("no ATPS query name".into()))
    }

    /// The TLSA records at `_<port>._tcp.<host>`, DNSSEC-validated; usable for DANE only when
    /// the answer's status is `secure` (RFC 7672 §2.2).
    pub async fn tlsa(&self, host: &str, port: u16, now: Instant) -> Result<Lookup, ResolveError> {
        self.lookup(Kind::Tlsa, &format!("_{port}._tcp.{host}"), now)
            .await
    }
}

/// A random label of 20 letters and digits, for a wildcard probe.
fn probe_label() -> String {
    use std::hash::BuildHasher;
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let first = std::hash::RandomState::new().hash_one(Instant::now());
    let second = std::hash::RandomState::new().hash_one(first);
    let mut out = String::with_capacity(20);
    // Ten base-36 digits from each 64-bit value (36^10 < 2^64).
    for mut bits in [first, second] {
        for _ in 0..10 {
            out.push(char::from(ALPHABET[(bits % 36) as usize]));
            bits /= 36;
        }
    }
    out
}
