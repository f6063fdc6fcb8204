//! The one place that talks to DNS: hickory-resolver 0.26 with its own cache turned off
//! (`cache_size = 0`, ours is the cache), UDP with TCP fallback on truncation, and a second,
//! validating instance for the questions that need DNSSEC (TLSA, RFC 7672 §2.2).
//!
//! An answer is reduced to what the cache needs: the records' data (TXT strings already joined
//! per record, never parsed here), the raw TTL, the rcode, the name the records were found at
//! after CNAMEs, and the DNSSEC status. NXDOMAIN and NODATA are answers, not errors, with the
//! RFC 2308 §5 negative TTL: min(SOA TTL, SOA MINIMUM).
//!
//! Only the records on the CNAME chain from the question name are used (RFC 2181 §5.4.1): the
//! chain is walked from the question name (case-insensitive, at most [`MAX_CNAME_HOPS`] hops,
//! a loop is an error), the RRset of the asked type owned by the chain's last name is the
//! answer, and anything else in the answer section is ignored. The answer's TTL is the minimum
//! over every record used, the CNAMEs included.
//!
//! A negative answer reached through CNAMEs (the question name is a CNAME whose chain ends at a
//! name without records of the type, or at no name at all) keeps the chain's TTLs too: hickory
//! follows the chain with a new query for its target and reports the negative answer for the
//! target's query only, without the CNAMEs, so the CNAMEs are asked for (one `CNAME` query per
//! hop, at most [`MAX_CNAME_HOPS`]) and the answer's TTL is min(CNAME TTLs, negative TTL).
//! When they cannot be had within the query's deadline, the TTL is 0 (the negative clamp's
//! floor), never the target's own. The name the negative answer is about, the chain's end, is
//! [`RawAnswer::negative_at`]: the question name exists (it is a CNAME) and is never taken as
//! NXDOMAIN (RFC 8020).
//!
//! Failures are errors, never "no records": SERVFAIL, REFUSED, timeouts, and any answer that
//! failed DNSSEC validation ([`ResolveError::DnssecBogus`]). One query costs at most
//! `attempts` sends and `timeout × attempts` of time: hickory's `attempts` counts retries after
//! the first send, so it is given `attempts - 1`, and the whole lookup runs under a deadline.
//!
//! A validating lookup (TLSA) is more than one exchange: besides the answer, the validator
//! fetches the DNSKEY and DS RRsets up the chain of trust (cold: about two per zone cut). Each
//! exchange is bounded by hickory as above (`timeout`, `attempts` sends); the whole validating
//! lookup runs under [`VALIDATION_DEADLINE_FACTOR`] × `timeout × attempts` (12 s with the
//! defaults). hickory's own validation cache (1,048,576 entries, kept: it is apart from the
//! answer cache turned off by `cache_size = 0`) remembers each RRset's proof, the DNSKEY and DS
//! ones included, for its TTL, so they are not re-validated; the DNSKEY/DS exchanges themselves
//! are sent for every validating lookup whatever `cache_size` is (the validator asks the name
//! servers below hickory's answer cache), and the recursive upstream's cache answers them.

pub use crate::model::answer::{DnssecStatus, WireRecords};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

mod ad;
mod chain;
mod forward;
mod guard;
mod reach;
mod records;

pub use self::guard::{DnssecStats, MAX_VALIDATION_QUERIES};
pub use self::reach::{REACHED_FOR, UNREACHED_FOR};
pub use self::records::is_dnssec_record;

use super::ResolveError;

use self::chain::answer_chain;
use self::records::{encode_wire, lower_name, query_name, status, weaker};

/// The longest CNAME chain followed in an answer.
pub const MAX_CNAME_HOPS: usize = 16;

/// A validating lookup's deadline is this many times a plain one's (`timeout × attempts`): the
/// answer plus the DNSKEY/DS exchanges of a cold chain of trust, each bounded by itself.
pub const VALIDATION_DEADLINE_FACTOR: u32 = 3;

/// Where an answer's DNSSEC status comes from (`[dnssec] mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DnssecMode {
    /// mailpolicyd validates from its trust anchors (hickory's validator), asking the upstream
    /// for DNSKEY/DS as needed.
    #[default]
    Validate,
    /// The upstream validates: queries carry DO and AD, an answer is secure exactly when the
    /// upstream set AD. Only for a trusted validating resolver on the same host or pod.
    UpstreamAd,
    /// No DNSSEC: every answer is indeterminate; no validating queries.
    Off,
}

impl DnssecMode {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DnssecMode::Validate => "validate",
            DnssecMode::UpstreamAd => "upstream_ad",
            DnssecMode::Off => "off",
        }
    }
}

/// Where and how to ask.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// Recursive resolvers to ask; empty means the ones in `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Sends per query, the first included (at least 1); one query takes at most
    /// `timeout × attempts`.
    pub attempts: usize,
    /// DNSSEC trust anchors for the validating resolver; `None` means the root's.
    pub trust_anchors: Option<Arc<TrustAnchors>>,
    /// DS trust anchors: the owner's DNSKEY RRset is fetched once, before the first validating
    /// question, and the keys a DS matches join `trust_anchors`.
    pub trust_anchor_ds: Vec<(Name, hickory_resolver::proto::dnssec::rdata::DS)>,
    /// The zones whose keys are anchored (`trust_anchors` and `trust_anchor_ds`); empty means
    /// the root's. Asked for their DNSKEY RRset to learn whether the anchors can be reached
    /// through the upstream at all ([`Upstream::validates_dkim`]).
    pub anchor_owners: Vec<Name>,
    /// Where DNSSEC status comes from.
    pub dnssec: DnssecMode,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field(
                "trust_anchors",
                &self.trust_anchors.as_ref().map(|_| "custom"),
            )
            .field("dnssec", &self.dnssec)
            .finish()
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
            attempts: 2,
            trust_anchors: None,
            trust_anchor_ds: Vec::new(),
            anchor_owners: Vec::new(),
            dnssec: DnssecMode::Validate,
        }
    }
}

/// The record data of an answer, by type. TXT records are joined per record but not parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Records {
    /// No records: NXDOMAIN or NODATA (see the rcode).
    None,
    /// One joined string per TXT record.
    Txt(Vec<String>),
    /// TLSA records.
    Tlsa(Vec<hickory_resolver::proto::rr::rdata::TLSA>),
    /// A or AAAA addresses.
    Addrs(Vec<IpAddr>),
    /// MX exchanges with preferences.
    Mx(Vec<(u16, String)>),
    /// PTR targets.
    Names(Vec<String>),
    /// Records of another type (forwarded): a hash of their RDATA, so identical answers
    /// compare equal.
    Other(u64),
}

/// What one upstream query returned.
#[derive(Clone, Debug)]
pub struct RawAnswer {
    /// The owner name of the records (after CNAMEs), lower-case without the final dot.
    pub found_at: Option<String>,
    /// For a negative answer, the name it is about, lower-case without the final dot: the
    /// question name, or the end of its CNAME chain (the name that does not exist, for
    /// NXDOMAIN). `None` for a positive answer.
    pub negative_at: Option<String>,
    /// `NoError` or `NXDomain` (errors are [`ResolveError`]s).
    pub rcode: ResponseCode,
    /// Raw TTL: the smallest record TTL, or the RFC 2308 negative TTL.
    pub ttl: u32,
    /// DNSSEC status.
    pub dnssec: DnssecStatus,
    /// The data.
    pub records: Records,
    /// The records as the upstream gave them, for the DNS front-end: the CNAME chain and the
    /// asked type's records, or a negative answer's CNAMEs and SOA.
    pub wire: Option<WireRecords>,
    /// How long the query took.
    pub elapsed: Duration,
}

/// The hickory resolvers.
pub struct Upstream {
    plain: TokioResolver,
    /// The name servers without hickory's resolver on top (no CNAME chasing, no RFC 6761
    /// localhost answers, no hosts file): forwarding for the DNS front-end.
    pool: forward::Pool,
    /// Built at once, or (with DS anchors) before the first validating question.
    validating: tokio::sync::OnceCell<Resolver<guard::Guarded>>,
    /// What the validating resolver is built from when DS anchors need their keys first.
    validating_cfg: UpstreamConfig,
    /// NS/DS/DNSKEY responses kept for the validator.
    key_cache: Arc<guard::KeyCache>,
    /// Whether a trust anchor validates through the upstream (DKIM keys, `validate`).
    reach: reach::Reach,
    /// Where DNSSEC status comes from.
    mode: DnssecMode,
    /// The servers `upstream_ad` asks, in turn.
    ad_servers: Vec<SocketAddr>,
    /// Sends per query (`upstream_ad`).
    attempts: usize,
    /// Per-send timeout (`upstream_ad`).
    timeout: Duration,
    /// The most one query may take: `timeout × attempts`.
    deadline: Duration,
    /// The most one validating query may take: `deadline × VALIDATION_DEADLINE_FACTOR`.
    validating_deadline: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

/// The name servers and options for `cfg`: its servers, or `/etc/resolv.conf`'s; hickory's
/// cache off, `attempts` sends, TCP after a truncated or failed UDP exchange.
fn servers_and_options(
    cfg: &UpstreamConfig,
    validate: bool,
) -> Result<(ResolverConfig, ResolverOpts), ResolveError> {
    let (config, mut opts) = if cfg.servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| ResolveError::Config(format!("reading /etc/resolv.conf: {e}").into()))?
    } else {
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        (
            ResolverConfig::from_parts(None, vec![], servers),
            ResolverOpts::default(),
        )
    };
    opts.cache_size = 0;
    opts.timeout = cfg.timeout;
    // hickory's `attempts` are retries after the first send (2 meant three sends, 6 s of
    // timeouts at 2 s each): ours count the first.
    opts.attempts = cfg.attempts.max(1) - 1;
    opts.validate = validate;
    opts.ndots = 0;
    opts.try_tcp_on_error = true;
    opts.preserve_intermediates = true;
    Ok((config, opts))
}

fn build(cfg: &UpstreamConfig) -> Result<TokioResolver, ResolveError> {
    let (config, opts) = servers_and_options(cfg, false)?;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| ResolveError::Config(format!("building the resolver: {e}").into()))
}

/// The validating resolver: hickory's validator over connections that keep NS/DS/DNSKEY
/// answers and bound each question's exchanges ([`guard`]).
fn build_validating(
    cfg: &UpstreamConfig,
    cache: Arc<guard::KeyCache>,
) -> Result<Resolver<guard::Guarded>, ResolveError> {
    let (config, opts) = servers_and_options(cfg, true)?;
    let mut builder =
        Resolver::builder_with_config(config, guard::Guarded::new(cache)).with_options(opts);
    if let Some(ta) = &cfg.trust_anchors {
        builder = builder.with_trust_anchor(ta.clone());
    }
    builder
        .build()
        .map_err(|e| ResolveError::Config(format!("building the resolver: {e}").into()))
}

impl Upstream {
    /// Builds the plain and the validating resolver.
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, ResolveError> {
        let deadline = cfg
            .timeout
            .saturating_mul(u32::try_from(cfg.attempts.max(1)).unwrap_or(u32::MAX));
        let key_cache = Arc::new(guard::KeyCache::default());
        Ok(Upstream {
            plain: build(cfg)?,
            pool: forward::pool(cfg)?,
            validating: if cfg.trust_anchor_ds.is_empty() {
                tokio::sync::OnceCell::new_with(Some(build_validating(cfg, key_cache.clone())?))
            } else {
                tokio::sync::OnceCell::new()
            },
            validating_cfg: cfg.clone(),
            key_cache,
            reach: reach::Reach::default(),
            mode: cfg.dnssec,
            ad_servers: if cfg.dnssec == DnssecMode::UpstreamAd {
                ad::servers(cfg)?
            } else {
                Vec::new()
            },
            attempts: cfg.attempts.max(1),
            timeout: cfg.timeout,
            deadline,
            validating_deadline: deadline.saturating_mul(VALIDATION_DEADLINE_FACTOR),
        })
    }

    /// The most one query may take: `timeout × attempts`, times
    /// [`VALIDATION_DEADLINE_FACTOR`] when it is validated.
    pub fn deadline(&self, validate: bool) -> Duration {
        if validate {
            self.validating_deadline
        } else {
            self.deadline
        }
    }

    /// A lookup by the plain or the validating hickory resolver.
    async fn hickory_lookup(
        &self,
        validate: bool,
        name: Name,
        rtype: RecordType,
    ) -> Result<hickory_resolver::lookup::Lookup, NetError> {
        if validate {
            let validating = self
                .validating
                .get_or_try_init(|| self.anchor_ds_keys())
                .await?;
            validating.lookup(name, rtype).await
        } else {
            self.plain.lookup(name, rtype).await
        }
    }

    /// The validating resolver for DS anchors: each DS owner's DNSKEY RRset asked (without
    /// validation), the zone keys a DS matches (key tag, algorithm, digest) added to the key
    /// anchors. A DS that matches no key is an error for this question (asked again on the
    /// next); the DNSKEY RRset itself is then verified by the validator with the anchored key.
    async fn anchor_ds_keys(&self) -> Result<Resolver<guard::Guarded>, NetError> {
        use hickory_resolver::net::DnsHandle;
        use hickory_resolver::proto::dnssec::{PublicKey, PublicKeyBuf};
        use hickory_resolver::proto::op::{DnsRequestOptions, Query};
        let cfg = &self.validating_cfg;
        let mut anchors = cfg
            .trust_anchors
            .as_deref()
            .cloned()
            .unwrap_or_else(TrustAnchors::empty);
        for (owner, ds) in &cfg.trust_anchor_ds {
            let mut opts = DnsRequestOptions::default();
            opts.edns_set_dnssec_ok = true;
            let response = futures_util::StreamExt::next(
                &mut self
                    .pool
                    .lookup(Query::query(owner.clone(), RecordType::DNSKEY), opts),
            )
            .await
            .ok_or_else(|| NetError::from("no answer to the DNSKEY query of a DS anchor"))??;
            let mut matched = 0;
            for r in &response.answers {
                let RData::DNSSEC(hickory_resolver::proto::dnssec::rdata::DNSSECRData::DNSKEY(key)) =
                    &r.data
                else {
                    continue;
                };
                if key.zone_key() && !key.revoke() && ds.covers(owner, key).unwrap_or(false) {
                    let public = key.public_key();
                    let public =
                        PublicKeyBuf::new(public.public_bytes().to_vec(), public.algorithm());
                    anchors.insert_with_name(&public, owner.into());
                    matched += 1;
                }
            }
            if matched == 0 {
                return Err(NetError::from(format!(
                    "no DNSKEY of {owner} matches the DS anchor (key tag {})",
                    ds.key_tag()
                )));
            }
            tracing::info!(%owner, key_tag = ds.key_tag(), "DS trust anchor: matching DNSKEY anchored");
        }
        let mut cfg = cfg.clone();
        cfg.trust_anchors = Some(Arc::new(anchors));
        build_validating(&cfg, self.key_cache.clone()).map_err(|e| NetError::from(e.to_string()))
    }

    /// The validating resolver's counters.
    pub fn dnssec_stats(&self) -> DnssecStats {
        self.key_cache.stats()
    }

    /// The DNSSEC mode.
    pub fn dnssec_mode(&self) -> DnssecMode {
        self.mode
    }

    /// Asks for `name` (absolute, no trailing dot needed) of type `rtype`. `validate`: the
    /// answer needs a DNSSEC status (TLSA, DKIM keys), which the mode gives: validated here,
    /// the upstream's AD bit, or none (`off`: indeterminate, no validating query).
    pub async fn query(
        &self,
        name: &str,
        rtype: RecordType,
        validate: bool,
    ) -> Result<RawAnswer, ResolveError> {
        match (validate, self.mode) {
            (false, _) | (true, DnssecMode::Off) => self.query_hickory(name, rtype, false).await,
            (true, DnssecMode::UpstreamAd) => self.query_ad(name, rtype).await,
            (true, DnssecMode::Validate) => {
                let (result, spent) =
                    guard::with_budget(self.query_hickory(name, rtype, true)).await;
                tracing::debug!(%name, ?rtype, sent = spent.sent, "validated question: upstream exchanges");
                if spent.exhausted {
                    self.key_cache
                        .exhausted
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(%name, ?rtype, limit = MAX_VALIDATION_QUERIES, "validation stopped: query budget spent");
                }
                result
            }
        }
    }

    async fn query_hickory(
        &self,
        name: &str,
        rtype: RecordType,
        validate: bool,
    ) -> Result<RawAnswer, ResolveError> {
        let qname = query_name(name)?;
        let started = Instant::now();
        let until = tokio::time::Instant::from_std(started) + self.deadline(validate);
        let lookup = match tokio::time::timeout_at(
            until,
            self.hickory_lookup(validate, qname.clone(), rtype),
        )
        .await
        {
            Err(_) => return Err(ResolveError::Timeout),
            Ok(Ok(l)) => l,
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(nr)))) => {
                return self.negative(&qname, &nr, validate, started, until).await;
            }
            Ok(Err(e)) => return Err(error(e)),
        };
        let elapsed = started.elapsed();
        let chain = answer_chain(&qname, rtype, lookup.answers())?;
        let mut proof = None::<Proof>;
        for r in chain.cnames.iter().chain(&chain.rrset) {
            // The weakest proof among the records used (CNAMEs included) is the answer's.
            proof = Some(match proof {
                None => r.proof,
                Some(p) => weaker(p, r.proof),
            });
        }
        let dnssec = if validate {
            proof.map_or(DnssecStatus::Indeterminate, status)
        } else {
            DnssecStatus::Indeterminate
        };
        if dnssec == DnssecStatus::Bogus {
            return Err(ResolveError::DnssecBogus);
        }
        Ok(RawAnswer::positive(rtype, &chain, &[], dnssec, elapsed))
    }
}

/// Classes hickory's errors (negative answers are handled before: [`Upstream::negative`]).
fn error(e: NetError) -> ResolveError {
    match e {
        NetError::Dns(DnsError::DnssecBogus) => ResolveError::DnssecBogus,
        NetError::Dns(DnsError::ResponseCode(code)) => match code {
            ResponseCode::ServFail => ResolveError::ServFail,
            ResponseCode::Refused => ResolveError::Refused,
            other => ResolveError::Rcode(other.to_string().into()),
        },
        NetError::Timeout => ResolveError::Timeout,
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            ResolveError::Network(format!("no records for {}", nr.query.name()).into())
        }
        other => ResolveError::Network(other.to_string().into()),
    }
}
