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

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::domain::Label;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use serde::{Deserialize, Serialize};

use super::ResolveError;
use crate::policy::join_txt;

/// The longest CNAME chain followed in an answer.
pub const MAX_CNAME_HOPS: usize = 16;

/// A validating lookup's deadline is this many times a plain one's (`timeout × attempts`): the
/// answer plus the DNSKEY/DS exchanges of a cold chain of trust, each bounded by itself.
pub const VALIDATION_DEADLINE_FACTOR: u32 = 3;

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
        }
    }
}

/// DNSSEC status of an answer (RFC 4035 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnssecStatus {
    /// Validated from a trust anchor.
    Secure,
    /// Provably unsigned.
    Insecure,
    /// Validation failed: never to be used as secure.
    Bogus,
    /// Not validated (validation off for this question), or undecidable.
    Indeterminate,
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
    /// How long the query took.
    pub elapsed: Duration,
}

/// The hickory resolvers.
pub struct Upstream {
    plain: TokioResolver,
    validating: TokioResolver,
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

fn build(cfg: &UpstreamConfig, validate: bool) -> Result<TokioResolver, ResolveError> {
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
    let mut builder =
        Resolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(opts);
    if validate && let Some(ta) = &cfg.trust_anchors {
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
        Ok(Upstream {
            plain: build(cfg, false)?,
            validating: build(cfg, true)?,
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

    /// Asks for `name` (absolute, no trailing dot needed) of type `rtype`.
    pub async fn query(
        &self,
        name: &str,
        rtype: RecordType,
        validate: bool,
    ) -> Result<RawAnswer, ResolveError> {
        // Raw labels, not host-name parsing: labels such as padded base32 ATPS labels
        // ("...====") are valid DNS but not valid host names, and would be refused.
        let labels = name
            .split('.')
            .filter(|l| !l.is_empty())
            .map(|l| Label::from_raw_bytes(l.as_bytes()));
        let mut qname = labels
            .collect::<Result<Vec<_>, _>>()
            .and_then(Name::from_labels)
            .map_err(|e| ResolveError::InvalidName(format!("{name:?}: {e}").into()))?;
        qname.set_fqdn(true);
        let started = Instant::now();
        let until = tokio::time::Instant::from_std(started) + self.deadline(validate);
        let resolver = if validate {
            &self.validating
        } else {
            &self.plain
        };
        let lookup =
            match tokio::time::timeout_at(until, resolver.lookup(qname.clone(), rtype)).await {
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
        let mut txt = Vec::new();
        let mut tlsa = Vec::new();
        let mut addrs = Vec::new();
        let mut mx = Vec::new();
        let mut names = Vec::new();
        for r in chain.cnames.iter().chain(&chain.rrset) {
            // The weakest proof among the records used (CNAMEs included) is the answer's.
            proof = Some(match proof {
                None => r.proof,
                Some(p) => weaker(p, r.proof),
            });
        }
        for r in &chain.rrset {
            match &r.data {
                RData::TXT(t) => txt.push(join_txt(&t.txt_data)),
                RData::TLSA(t) => tlsa.push(t.clone()),
                RData::A(a) => addrs.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => addrs.push(IpAddr::V6(a.0)),
                RData::MX(m) => mx.push((m.preference, lower_name(&m.exchange))),
                RData::PTR(p) => names.push(lower_name(&p.0)),
                _ => {}
            }
        }
        let records = match rtype {
            RecordType::TXT => Records::Txt(txt),
            RecordType::TLSA => Records::Tlsa(tlsa),
            RecordType::A | RecordType::AAAA => Records::Addrs(addrs),
            RecordType::MX => Records::Mx(mx),
            RecordType::PTR => Records::Names(names),
            _ => Records::None,
        };
        let dnssec = if validate {
            proof.map_or(DnssecStatus::Indeterminate, status)
        } else {
            DnssecStatus::Indeterminate
        };
        if dnssec == DnssecStatus::Bogus {
            return Err(ResolveError::DnssecBogus);
        }
        Ok(RawAnswer {
            found_at: Some(lower_name(&chain.owner)),
            negative_at: None,
            rcode: ResponseCode::NoError,
            ttl: chain.ttl,
            dnssec,
            records,
            elapsed,
        })
    }

    /// A negative answer (NXDOMAIN or NODATA) for `qname`, as hickory reported it in `nr`.
    /// When hickory followed CNAMEs to get there, `nr` is about the chain's end and carries
    /// none of the CNAMEs: they are asked for ([`Upstream::cname_chain`]) so their TTLs (and,
    /// validating, their proofs) count.
    async fn negative(
        &self,
        qname: &Name,
        nr: &NoRecords,
        validate: bool,
        started: Instant,
        until: tokio::time::Instant,
    ) -> Result<RawAnswer, ResolveError> {
        // RFC 2308 §5: the negative TTL is min(SOA TTL, SOA MINIMUM).
        let soa_ttl = nr.soa.as_ref().map(|soa| soa.ttl.min(soa.data.minimum));
        let mut ttl = soa_ttl.or(nr.negative_ttl).unwrap_or(0);
        let mut proof = nr.soa.as_ref().map(|soa| soa.proof);
        let end = nr.query.name();
        let negative_at = if same_name(end, qname) {
            qname
        } else {
            let chain = tokio::time::timeout_at(until, self.cname_chain(qname, end, validate))
                .await
                .unwrap_or(Err(ResolveError::Timeout));
            match chain {
                Ok((chain_ttl, chain_proof)) => {
                    ttl = ttl.min(chain_ttl);
                    proof = match (proof, chain_proof) {
                        (Some(a), Some(b)) => Some(weaker(a, b)),
                        (a, b) => a.or(b),
                    };
                }
                Err(ResolveError::DnssecBogus) => return Err(ResolveError::DnssecBogus),
                Err(e) => {
                    // The CNAMEs' TTLs are unknown: the floor, never the target's own TTL.
                    tracing::debug!(name = %qname, error = %e, "negative answer through CNAMEs: chain not confirmed, TTL 0");
                    ttl = 0;
                }
            }
            end
        };
        let dnssec = if !validate {
            DnssecStatus::Indeterminate
        } else {
            proof.map_or(DnssecStatus::Indeterminate, status)
        };
        if dnssec == DnssecStatus::Bogus {
            return Err(ResolveError::DnssecBogus);
        }
        let rcode = if nr.response_code == ResponseCode::NXDomain {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        Ok(RawAnswer {
            found_at: None,
            negative_at: Some(lower_name(negative_at)),
            rcode,
            ttl,
            dnssec,
            records: Records::None,
            elapsed: started.elapsed(),
        })
    }

    /// Asks for the CNAMEs from `qname` to `end` one hop at a time (a `CNAME` question is not
    /// followed by hickory), at most [`MAX_CNAME_HOPS`]; returns the minimum TTL over them and
    /// their weakest proof. A hop without a CNAME, a loop, or a chain that does not reach `end`
    /// is an error.
    async fn cname_chain(
        &self,
        qname: &Name,
        end: &Name,
        validate: bool,
    ) -> Result<(u32, Option<Proof>), ResolveError> {
        let resolver = if validate {
            &self.validating
        } else {
            &self.plain
        };
        let mut owner = qname.clone();
        let mut seen: Vec<Name> = Vec::new();
        let mut ttl = u32::MAX;
        let mut proof = None::<Proof>;
        for _ in 0..MAX_CNAME_HOPS {
            let lookup = resolver
                .lookup(owner.clone(), RecordType::CNAME)
                .await
                .map_err(error)?;
            let chain = answer_chain(&owner, RecordType::CNAME, lookup.answers())?;
            let cname = chain.rrset[0];
            let RData::CNAME(target) = &cname.data else {
                return Err(ResolveError::Network("a CNAME without a target".into()));
            };
            if chain.rrset.iter().any(|other| other.data != cname.data) {
                return Err(ResolveError::Network(
                    format!("two different CNAMEs at {owner}").into(),
                ));
            }
            ttl = ttl.min(cname.ttl);
            proof = Some(proof.map_or(cname.proof, |p| weaker(p, cname.proof)));
            let target = target.0.clone();
            if same_name(&target, end) {
                return Ok((ttl, proof));
            }
            if same_name(&target, qname) || seen.iter().any(|n| same_name(n, &target)) {
                return Err(ResolveError::Network(
                    format!("a CNAME loop at {target}").into(),
                ));
            }
            seen.push(owner);
            owner = target;
        }
        Err(ResolveError::Network(
            format!("a CNAME chain from {qname} longer than {MAX_CNAME_HOPS}").into(),
        ))
    }
}

/// The part of an answer section that answers the question: the CNAMEs followed from the
/// question name and the RRset of the asked type at the chain's end.
struct Chain<'a> {
    /// The chain's last name, where the RRset is.
    owner: Name,
    /// The CNAMEs followed, in order.
    cnames: Vec<&'a Record>,
    /// The records of the asked type owned by `owner` (never empty).
    rrset: Vec<&'a Record>,
    /// The minimum TTL over `cnames` and `rrset`.
    ttl: u32,
}

/// Walks the CNAME chain from `qname` through `answers` (RFC 2181 §5.4.1: only records on the
/// chain are believed; names compare case-insensitively). Records off the chain (another
/// owner, another type) are ignored, whatever the upstream put there. A loop, a chain longer
/// than [`MAX_CNAME_HOPS`], two different CNAMEs at one name, or a chain that ends without
/// records of the asked type is an error: the answer cannot be trusted.
fn answer_chain<'a>(
    qname: &Name,
    rtype: RecordType,
    answers: &'a [Record],
) -> Result<Chain<'a>, ResolveError> {
    let bad = |why: String| {
        ResolveError::Network(format!("unusable answer for {qname} {rtype}: {why}").into())
    };
    let mut owner = qname.clone();
    let mut cnames: Vec<&Record> = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..=MAX_CNAME_HOPS {
        let rrset: Vec<&Record> = answers
            .iter()
            .filter(|r| r.record_type() == rtype && same_name(&r.name, &owner))
            .collect();
        if !rrset.is_empty() {
            ttl = rrset.iter().fold(ttl, |t, r| t.min(r.ttl));
            return Ok(Chain {
                owner,
                cnames,
                rrset,
                ttl,
            });
        }
        let mut here = answers
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME && same_name(&r.name, &owner));
        let Some(cname) = here.next() else {
            return Err(bad(format!("no {rtype} records and no CNAME at {owner}")));
        };
        let RData::CNAME(target) = &cname.data else {
            return Err(bad(format!("a CNAME at {owner} without a target")));
        };
        if here.any(|other| other.data != cname.data) {
            return Err(bad(format!("two different CNAMEs at {owner}")));
        }
        let target = target.0.clone();
        if same_name(&target, qname) || cnames.iter().any(|c| same_name(&c.name, &target)) {
            return Err(bad(format!("a CNAME loop at {target}")));
        }
        ttl = ttl.min(cname.ttl);
        cnames.push(cname);
        owner = target;
    }
    Err(bad(format!("a CNAME chain longer than {MAX_CNAME_HOPS}")))
}

/// DNS name equality: case-insensitive, the final dot ignored.
fn same_name(a: &Name, b: &Name) -> bool {
    a.num_labels() == b.num_labels()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// A name as its raw labels joined by dots, lower-case, no final dot. Not `to_ascii()`, which
/// escapes octets such as ':' or '/' that SPF targets may legitimately hold.
fn lower_name(n: &Name) -> String {
    n.iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

fn status(p: Proof) -> DnssecStatus {
    match p {
        Proof::Secure => DnssecStatus::Secure,
        Proof::Insecure => DnssecStatus::Insecure,
        Proof::Bogus => DnssecStatus::Bogus,
        Proof::Indeterminate => DnssecStatus::Indeterminate,
    }
}

fn weaker(a: Proof, b: Proof) -> Proof {
    let rank = |p: Proof| match p {
        Proof::Bogus => 0,
        Proof::Indeterminate => 1,
        Proof::Insecure => 2,
        Proof::Secure => 3,
    };
    if rank(a) <= rank(b) { a } else { b }
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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::{CNAME, TXT};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }
    fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }
    fn txt(owner: &str, ttl: u32, text: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::TXT(TXT::new(vec![text.into()])))
    }

    #[test]
    fn the_chain_from_the_question_is_all_that_is_used() {
        let answers = [
            txt("victim.test.", 10, "v=spf1 +all"),
            cname("Q.example.test.", 40, "t.example.test."),
            txt("t.EXAMPLE.test.", 3600, "v=spf1 -all"),
            txt("q.example.test.", 5, "off the chain: q is a CNAME"),
        ];
        // An RRset at the question name itself wins (a CNAME beside it is off the chain).
        let c = answer_chain(&name("q.example.test."), RecordType::TXT, &answers).unwrap();
        assert_eq!(c.rrset.len(), 1);
        assert_eq!(c.ttl, 5);
        let answers = &answers[..3];
        let c = answer_chain(&name("q.example.test."), RecordType::TXT, answers).unwrap();
        assert_eq!(lower_name(&c.owner), "t.example.test");
        assert_eq!(c.cnames.len(), 1);
        assert_eq!(c.rrset.len(), 1, "victim.test is not on the chain");
        assert_eq!(c.ttl, 40, "min over the CNAME and the RRset");
    }

    #[test]
    fn loops_long_chains_conflicts_and_dead_ends_are_errors() {
        let looped = [
            cname("a.test.", 60, "b.test."),
            cname("b.test.", 60, "a.test."),
        ];
        assert!(answer_chain(&name("a.test."), RecordType::TXT, &looped).is_err());
        let long: Vec<Record> = (0..=MAX_CNAME_HOPS)
            .map(|i| cname(&format!("n{i}.test."), 60, &format!("n{}.test.", i + 1)))
            .chain([txt(&format!("n{}.test.", MAX_CNAME_HOPS + 1), 60, "x")])
            .collect();
        assert!(answer_chain(&name("n0.test."), RecordType::TXT, &long).is_err());
        let ok = &long[MAX_CNAME_HOPS - 15..];
        let start = format!("n{}.test.", MAX_CNAME_HOPS - 15);
        assert!(answer_chain(&name(&start), RecordType::TXT, ok).is_ok());
        let two = [
            cname("a.test.", 60, "b.test."),
            cname("a.test.", 60, "c.test."),
            txt("b.test.", 60, "x"),
        ];
        assert!(answer_chain(&name("a.test."), RecordType::TXT, &two).is_err());
        let dead = [txt("other.test.", 60, "x")];
        assert!(answer_chain(&name("a.test."), RecordType::TXT, &dead).is_err());
    }
}
