//! Bounds on what one validation costs (`[dnssec] mode = "validate"`).
//!
//! hickory's validator (`DnssecDnsHandle`) sits above its name-server pool and asks for the
//! NS, DS and DNSKEY RRsets a chain of trust needs with no answer cache of its own (its
//! validation cache remembers proofs, not the responses it fetched) and no bound but a
//! recursion depth of 26: for a name it cannot prove insecure it walks up with NS and DS
//! queries at every level, again at every depth (hickory-dns#3974; the issue saw 317 queries
//! for one TLSA question). This module is the connection layer of the validating resolver
//! (a `ConnectionProvider` whose connections wrap hickory's), so every exchange the validator
//! makes passes through it:
//!
//! - NS, DS and DNSKEY responses (positive and negative) are kept for their TTL (the smallest
//!   TTL in the response; a negative one at most the SOA MINIMUM; at most [`MAX_KEY_TTL`]), at
//!   most [`MAX_KEY_ENTRIES`] of them, and answered from memory: a second validation in the
//!   same zones costs only its own question. Concurrent identical exchanges are already
//!   coalesced by hickory's pool.
//! - Each validating question runs with a budget of [`MAX_VALIDATION_QUERIES`] exchanges
//!   (a task-local counter set by [`with_budget`]); past it every further exchange fails, the
//!   validator reports the answer bogus, and the resolver remembers that failure for the
//!   failure TTL. Exchanges answered from memory are free.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt, stream};
use hickory_resolver::config::ConnectionConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::DnsExchange;
use hickory_resolver::net::{DnsHandle, NetError};
use hickory_resolver::proto::op::{DnsRequest, DnsResponse, ResponseCode};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{ConnectionProvider, PoolContext};

/// The most upstream exchanges one validating question may make (its own question, the CNAMEs
/// it follows, and the NS/DS/DNSKEY lookups of its chain of trust). A cold three-level chain
/// (root, TLD, zone) with an NS walk of four labels takes about 15.
pub const MAX_VALIDATION_QUERIES: usize = 30;
/// The longest an NS/DS/DNSKEY response is kept.
pub const MAX_KEY_TTL: Duration = Duration::from_secs(3600);
/// The most NS/DS/DNSKEY responses kept.
pub const MAX_KEY_ENTRIES: usize = 10_000;

/// One validating question's budget.
struct Budget {
    left: AtomicUsize,
    refused: AtomicBool,
}

tokio::task_local! {
    static BUDGET: Arc<Budget>;
}

/// What [`with_budget`] reports besides the question's output.
pub(super) struct Spent {
    /// Exchanges sent upstream (answers from memory not counted).
    pub(super) sent: usize,
    /// Whether an exchange was refused because the budget was spent.
    pub(super) exhausted: bool,
}

/// Runs `fut` (one validating question) with a fresh budget of [`MAX_VALIDATION_QUERIES`]
/// exchanges.
pub(super) async fn with_budget<F: std::future::Future>(fut: F) -> (F::Output, Spent) {
    let budget = Arc::new(Budget {
        left: AtomicUsize::new(MAX_VALIDATION_QUERIES),
        refused: AtomicBool::new(false),
    });
    let out = BUDGET.scope(budget.clone(), fut).await;
    let spent = Spent {
        sent: MAX_VALIDATION_QUERIES - budget.left.load(Ordering::Relaxed),
        exhausted: budget.refused.load(Ordering::Relaxed),
    };
    (out, spent)
}

/// Takes one exchange from the current question's budget; `false` when it is spent. Outside a
/// budgeted question (never, for the validating resolver) there is no bound.
fn spend() -> bool {
    BUDGET
        .try_with(|b| {
            let ok = b
                .left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if !ok {
                b.refused.store(true, Ordering::Relaxed);
            }
            ok
        })
        .unwrap_or(true)
}

/// The validating resolver's counters (`[dnssec] mode = "validate"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnssecStats {
    /// Exchanges the validating resolver sent upstream: the questions, their CNAMEs and the
    /// NS/DS/DNSKEY lookups of their chains of trust.
    pub upstream_queries: u64,
    /// NS/DS/DNSKEY lookups answered from memory.
    pub key_cache_hits: u64,
    /// Validating questions stopped at [`MAX_VALIDATION_QUERIES`] (answered bogus).
    pub budget_exhausted: u64,
}

type Key = (String, RecordType, bool);

/// The NS/DS/DNSKEY responses kept, shared by every connection of the validating resolver.
#[derive(Default)]
pub(super) struct KeyCache {
    entries: Mutex<HashMap<Key, (Instant, DnsResponse)>>,
    exchanges: AtomicU64,
    hits: AtomicU64,
    pub(super) exhausted: AtomicU64,
}

impl KeyCache {
    fn key(request: &DnsRequest) -> Option<Key> {
        let q = request.queries.first()?;
        let t = q.query_type();
        if !matches!(t, RecordType::NS | RecordType::DS | RecordType::DNSKEY) {
            return None;
        }
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        Some((q.name().to_ascii().to_ascii_lowercase(), t, dnssec_ok))
    }

    fn get(&self, key: &Key, request: &DnsRequest) -> Option<DnsResponse> {
        let mut map = self.entries.lock().ok()?;
        let (until, response) = map.get(key)?;
        if *until <= Instant::now() {
            map.remove(key);
            return None;
        }
        let mut m = response.clone().into_message();
        m.metadata.id = request.metadata.id;
        DnsResponse::from_message(m).ok()
    }

    fn put(&self, key: Key, response: &DnsResponse) {
        if !matches!(
            response.response_code,
            ResponseCode::NoError | ResponseCode::NXDomain
        ) || response.truncation
        {
            return;
        }
        let mut ttl = MAX_KEY_TTL.as_secs() as u32;
        for r in response
            .answers
            .iter()
            .chain(&response.authorities)
            .filter(|r| r.record_type() != RecordType::OPT)
        {
            ttl = ttl.min(r.ttl);
            if let RData::SOA(soa) = &r.data {
                ttl = ttl.min(soa.minimum);
            }
        }
        if ttl == 0 {
            return;
        }
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        if map.len() >= MAX_KEY_ENTRIES {
            let now = Instant::now();
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= MAX_KEY_ENTRIES {
                return;
            }
        }
        map.insert(
            key,
            (
                Instant::now() + Duration::from_secs(u64::from(ttl)),
                response.clone(),
            ),
        );
    }

    /// The counters since start.
    pub(super) fn stats(&self) -> DnssecStats {
        DnssecStats {
            upstream_queries: self.exchanges.load(Ordering::Relaxed),
            key_cache_hits: self.hits.load(Ordering::Relaxed),
            budget_exhausted: self.exhausted.load(Ordering::Relaxed),
        }
    }
}

/// hickory's connections, counted, bounded and with NS/DS/DNSKEY answered from [`KeyCache`].
#[derive(Clone)]
pub(super) struct Guarded {
    runtime: TokioRuntimeProvider,
    cache: Arc<KeyCache>,
}

impl Guarded {
    pub(super) fn new(cache: Arc<KeyCache>) -> Self {
        Guarded {
            runtime: TokioRuntimeProvider::default(),
            cache,
        }
    }
}

impl ConnectionProvider for Guarded {
    type Conn = GuardedConn;
    type FutureConn =
        Pin<Box<dyn std::future::Future<Output = Result<GuardedConn, NetError>> + Send>>;
    type RuntimeProvider = TokioRuntimeProvider;

    fn new_connection(
        &self,
        ip: IpAddr,
        config: &ConnectionConfig,
        cx: &PoolContext,
    ) -> Result<Self::FutureConn, NetError> {
        let inner = self.runtime.new_connection(ip, config, cx)?;
        let cache = self.cache.clone();
        Ok(Box::pin(async move {
            Ok(GuardedConn {
                inner: inner.await?,
                cache,
            })
        }))
    }

    fn runtime_provider(&self) -> &TokioRuntimeProvider {
        &self.runtime
    }
}

/// One connection of the validating resolver.
#[derive(Clone)]
pub(super) struct GuardedConn {
    inner: DnsExchange<TokioRuntimeProvider>,
    cache: Arc<KeyCache>,
}

type Responses = Pin<Box<dyn Stream<Item = Result<DnsResponse, NetError>> + Send>>;

impl DnsHandle for GuardedConn {
    type Response = Responses;
    type Runtime = TokioRuntimeProvider;

    fn send(&self, request: DnsRequest) -> Responses {
        let key = KeyCache::key(&request);
        if let Some(k) = &key
            && let Some(hit) = self.cache.get(k, &request)
        {
            self.cache.hits.fetch_add(1, Ordering::Relaxed);
            return Box::pin(stream::once(async move { Ok(hit) }));
        }
        if !spend() {
            let name = request
                .queries
                .first()
                .map(|q| q.name().to_string())
                .unwrap_or_default();
            tracing::debug!(%name, limit = MAX_VALIDATION_QUERIES, "validation query budget spent");
            return Box::pin(stream::once(async move {
                Err(NetError::from(format!(
                    "validation needs more than {MAX_VALIDATION_QUERIES} upstream queries (at {name})"
                )))
            }));
        }
        self.cache.exchanges.fetch_add(1, Ordering::Relaxed);
        let cache = self.cache.clone();
        Box::pin(self.inner.send(request).map(move |r| {
            if let (Ok(response), Some(k)) = (&r, &key) {
                cache.put(k.clone(), response);
            }
            r
        }))
    }
}
