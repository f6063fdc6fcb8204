//! The lookup path: cache state → hit, prefetch, stale refresh, or miss → RFC 8020 NXDOMAIN
//! cut → wildcard mark → one coalesced, rate-limited upstream query → parsed answer → cache.
//! The organizational domain (limiter and wildcard key) is computed once per miss and passed
//! down.

use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use hickory_resolver::proto::op::ResponseCode;

use super::cache::{Entry, FetchOutcome, Key, QueryOutcome, State};
use super::upstream::RawAnswer;
use super::{
    Answer, AsName, DomainName, Kind, Lookup, Origin, Rcode, ResolveError, Resolver, Source, limit,
};

impl Lookup {
    /// An answer from a cache entry, with the freshness it has left at `now`.
    pub(super) fn of(answer: Arc<Answer>, entry: &Entry, source: Source, now: Instant) -> Lookup {
        Lookup {
            answer,
            source,
            ttl_remaining: entry.remaining_secs(now),
        }
    }
}

/// The outcome label of one upstream query, for the upstream counters.
pub(super) fn upstream_outcome(result: &Result<RawAnswer, ResolveError>) -> &'static str {
    match result {
        Err(ResolveError::DnssecBogus) => "bogus",
        Err(e) => e.label(),
        Ok(raw) if raw.rcode == ResponseCode::NXDomain => "nxdomain",
        Ok(_) => "noerror",
    }
}

impl Resolver {
    /// The organizational domain keying `key`'s limiter budget and wildcard windows (of the
    /// name the kind is about: `_dmarc.` and the like stripped).
    fn org_of_key(&self, key: &Key) -> String {
        self.org_of(key.kind.subject(&key.name))
    }

    /// Answers one question of `kind` about `name` at logical time `now`.
    pub async fn lookup(
        &self,
        kind: Kind,
        name: &(impl AsName + ?Sized),
        now: Instant,
    ) -> Result<Lookup, ResolveError> {
        let name = name.to_name()?;
        let key = Key { kind, name };
        let inner = &self.inner;
        match inner.cache.state(&key, now) {
            State::Fresh {
                entry,
                answer,
                prefetch,
            } => {
                if prefetch && entry.claim_prefetch() {
                    inner.stats.prefetch();
                    let this = self.clone();
                    let seen = entry.clone();
                    tokio::spawn(async move {
                        let org = this.org_of_key(&key);
                        let _ = this
                            .fetch(key, org, Some(&seen), now, Origin::Prefetched)
                            .await;
                    });
                }
                inner.stats.hit(kind);
                let source = if entry.origin == Origin::Prefetched {
                    Source::Prefetched
                } else {
                    Source::Hit
                };
                Ok(Lookup::of(answer, &entry, source, now))
            }
            State::Stale { entry, answer } => {
                let stale = || {
                    inner.stats.stale();
                    Ok(Lookup {
                        answer: answer.clone(),
                        source: Source::Stale,
                        ttl_remaining: 0,
                    })
                };
                if !entry.begin_refresh(now, inner.cfg.cache.stale_retry) {
                    return stale();
                }
                let org = self.org_of_key(&key);
                match tokio::time::timeout(
                    inner.cfg.cache.client_timeout,
                    self.fetch(key.clone(), org, Some(&entry), now, Origin::Fetched),
                )
                .await
                {
                    Ok(Ok(fresh)) => {
                        inner.stats.miss(kind);
                        let answer = inner.cache.answer(&key, &fresh);
                        Ok(Lookup::of(answer, &fresh, Source::Miss, now))
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
        // Once per miss: the wildcard window, the limiter and the wildcard watch share it.
        let org = self.org_of_key(&key);
        if let Some(at) = limit::Shaped::of(key.kind, &key.name, &org)
            && let Some(sample) = self.wildcard_sample(&key, &at, now)
        {
            return self.wildcard_answer(key, org, at, sample, now).await;
        }
        let entry = self
            .fetch(key.clone(), org, None, now, Origin::Fetched)
            .await?;
        inner.stats.miss(key.kind);
        let answer = inner.cache.answer(&key, &entry);
        Ok(Lookup::of(answer, &entry, Source::Miss, now))
    }

    /// The TTL left on an NXDOMAIN cached for a proper ancestor of `name`, if any.
    pub(super) fn nx_ancestor(&self, name: &str, now: Instant) -> Option<u32> {
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
    pub(crate) fn cached_existence(&self, name: &DomainName, now: Instant) -> Option<bool> {
        let inner = &self.inner;
        if inner.nx.get(name.as_str()).is_some_and(|until| now < until)
            || self.nx_ancestor(name, now).is_some()
        {
            return Some(false);
        }
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
            match inner.cache.peek_state(&key, now) {
                State::Fresh { answer, .. } => match answer.rcode {
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
    /// `org` is the key's organizational domain ([`Resolver::org_of_key`]), computed by the
    /// caller once; `seen` is the entry the caller's cache look found, if any (a different
    /// fresh one found under the lock answers without a query).
    pub(super) async fn fetch(
        &self,
        key: Key,
        org: String,
        seen: Option<&Arc<Entry>>,
        now: Instant,
        origin: Origin,
    ) -> Result<Arc<Entry>, ResolveError> {
        if let Some(e) = self.inner.cache.failure(&key, now) {
            self.inner.stats.failure_cached();
            return Err(e);
        }
        let this = self.clone();
        let task_key = key.clone();
        let (result, outcome) = self
            .inner
            .cache
            .fetch_coalesced(&key, seen, now, move || {
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
                    // TLSA needs a DNSSEC status (RFC 7672 §2.2); a DKIM key gets one unless
                    // the mode is `off` or no trust anchor can be reached through the upstream
                    // (`Upstream::validates_dkim`).
                    let validate = match query_key.kind {
                        Kind::Tlsa => true,
                        Kind::DkimKey => inner.upstream.validates_dkim().await,
                        _ => false,
                    };
                    let started = Instant::now();
                    let (name, rtype) = (&query_key.name, query_key.kind.record_type());
                    let result = match query_key.kind {
                        Kind::Forward(_) => inner.upstream.forward(name, rtype).await,
                        _ => inner.upstream.query(name, rtype, validate).await,
                    };
                    inner
                        .stats
                        .upstream(upstream_outcome(&result), started.elapsed());
                    if matches!(result, Err(ResolveError::DnssecBogus)) {
                        // Once per name and type per failure TTL: the failure is remembered
                        // for that long and answered without a new query (so without a new
                        // line). The validator's own detail is at debug (`hickory_net`).
                        tracing::warn!(
                            name = %name,
                            rtype = %rtype,
                            remembered_s = inner.cfg.cache.failure_ttl.as_secs(),
                            "DNSSEC validation failed (bogus)"
                        );
                    }
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
}
