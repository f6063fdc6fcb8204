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
mod lookup;
mod name;
pub mod snapshot;
pub mod spf;
pub mod stats;
pub mod upstream;
mod wildcard;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

pub use self::answer::{Answer, Data, Found, Kind, Rcode};
pub use self::cache::{CacheConfig, Origin};
pub use self::discover::{DiscoveryMode, DmarcDiscovery};
pub use self::error::ResolveError;
pub use self::limit::LimitConfig;
pub use self::name::{AsAuthor, AsName, AuthorDomain, DomainName, NameError};
pub use self::stats::StatsSnapshot;
pub use self::upstream::{DnssecMode, DnssecStatus, UpstreamConfig};
pub use crate::model::answer::{PolicyAnswer, Source};

use self::cache::Cache;
use self::limit::{Limiter, WildcardWatch};
use self::stats::Stats;
use self::upstream::Upstream;
use crate::policy::atps::{self, AtpsHash};
use crate::policy::orgdomain::SuffixList;

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
        let (entries, bytes) = self.inner.cache.usage();
        self.inner.stats.snapshot(entries, bytes)
    }

    /// Where DNSSEC status comes from (`[dnssec] mode`).
    pub fn dnssec_mode(&self) -> DnssecMode {
        self.inner.upstream.dnssec_mode()
    }

    /// The validating resolver's counters (`[dnssec] mode = "validate"`; zero otherwise).
    pub fn dnssec_stats(&self) -> upstream::DnssecStats {
        self.inner.upstream.dnssec_stats()
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

    /// The SPF record of `domain`.
    pub async fn spf(
        &self,
        domain: &(impl AsName + ?Sized),
        now: Instant,
    ) -> Result<Lookup, ResolveError> {
        self.lookup(Kind::Spf, domain, now).await
    }

    /// The DKIM key at `<selector>._domainkey.<domain>`.
    pub async fn dkim_key(
        &self,
        selector: &str,
        domain: &(impl AsName + ?Sized),
        now: Instant,
    ) -> Result<Lookup, ResolveError> {
        let name = prefixed(&domain.to_name()?, &format!("{selector}._domainkey"))?;
        self.lookup(Kind::DkimKey, &name, now).await
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
    pub async fn tlsa(
        &self,
        host: &(impl AsName + ?Sized),
        port: u16,
        now: Instant,
    ) -> Result<Lookup, ResolveError> {
        let name = prefixed(&host.to_name()?, &format!("_{port}._tcp"))?;
        self.lookup(Kind::Tlsa, &name, now).await
    }
}

/// `<prefix>.<name>` ([`DomainName::prefixed`]), or why it cannot be asked.
fn prefixed(name: &DomainName, prefix: &str) -> Result<DomainName, ResolveError> {
    name.prefixed(prefix).ok_or_else(|| {
        ResolveError::InvalidName(
            format!("{prefix}.{name}: not a DNS name (over 253 octets, or a bad label)").into(),
        )
    })
}
