//! Forwarding for the DNS front-end: a question of any type of class IN asked of the upstream
//! as it is, through hickory's name-server pool rather than its resolver, so there is no
//! answer cache (ours is the cache), no CNAME chasing of our own, no RFC 6761 `localhost`
//! answers and no hosts file: what a filter gets is what its upstream said. The response's
//! records are kept as given ([`RawAnswer::wire`]): the CNAME chain from the question name, the
//! records of the asked type at its end, and for a negative answer the SOA (RFC 2308), whose
//! TTL and MINIMUM give the negative TTL. Only the chain from the question name is believed
//! (RFC 2181 §5.4.1): records off it are dropped, as in [`super::Upstream::query`].

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, DnsHandle, NetError, NoRecords};
use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

use super::chain::{answer_chain, same_name};
use super::records::proofs;
use super::{
    DnssecMode, DnssecStatus, MAX_CNAME_HOPS, RawAnswer, Records, Upstream, UpstreamConfig,
    encode_wire, error, lower_name, query_name, servers_and_options,
};
use crate::resolve::ResolveError;

/// hickory's name-server pool over the configured upstreams.
pub(super) type Pool = NameServerPool<TokioRuntimeProvider>;

/// The pool for `cfg`'s servers, with the same options as the plain resolver.
pub(super) fn pool(cfg: &UpstreamConfig) -> Result<Pool, ResolveError> {
    let (config, opts) = servers_and_options(cfg, false)?;
    let tls = TlsConfig::new()
        .map_err(|e| ResolveError::Config(format!("building the forwarder: {e}").into()))?;
    let cx = Arc::new(PoolContext::new(opts, tls));
    Ok(NameServerPool::from_config(
        config.name_servers().iter().cloned(),
        cx,
        TokioRuntimeProvider::default(),
    ))
}

impl Upstream {
    /// Asks `rtype` at `name` as it is and keeps the records the upstream gave.
    pub async fn forward(&self, name: &str, rtype: RecordType) -> Result<RawAnswer, ResolveError> {
        let qname = query_name(name)?;
        let started = Instant::now();
        let until = tokio::time::Instant::from_std(started) + self.deadline(false);
        // With DO unless DNSSEC is off: the signatures and denial proofs are kept beside the
        // records for a front-end client that sets DO (and left out for one that does not).
        let mut opts = DnsRequestOptions::default();
        opts.edns_set_dnssec_ok = self.mode != DnssecMode::Off;
        let mut responses = self.pool.lookup(Query::query(qname.clone(), rtype), opts);
        let response = match tokio::time::timeout_at(until, responses.next()).await {
            Err(_) => return Err(ResolveError::Timeout),
            Ok(None) => return Err(ResolveError::Network("no response".into())),
            Ok(Some(Err(NetError::Dns(DnsError::NoRecordsFound(nr))))) => {
                return Ok(negative(&qname, &nr, &[], started));
            }
            Ok(Some(Err(e))) => return Err(error(e)),
            Ok(Some(Ok(r))) => r,
        };
        if response.response_code == ResponseCode::NoError
            && let Ok(chain) = answer_chain(&qname, rtype, &response.answers)
        {
            return Ok(RawAnswer::positive(
                rtype,
                &chain,
                &response.authorities,
                DnssecStatus::Indeterminate,
                started.elapsed(),
            ));
        }
        match response.response_code {
            // CNAMEs, then no records of the type (NODATA) or no name (NXDOMAIN) at the end.
            code @ (ResponseCode::NoError | ResponseCode::NXDomain) => {
                let nr = no_records(&qname, rtype, code, &response.authorities);
                Ok(negative(&qname, &nr, &response.answers, started))
            }
            other => Err(error(NetError::from(DnsError::ResponseCode(other)))),
        }
    }
}

/// A negative response's `authorities` as hickory's resolver reports them: the SOA (for the
/// negative TTL) and the DNSSEC proofs (NSEC, NSEC3 and the signatures) kept for DO clients.
pub(super) fn no_records(
    qname: &Name,
    rtype: RecordType,
    code: ResponseCode,
    authorities: &[Record],
) -> NoRecords {
    let mut nr = NoRecords::new(Query::query(qname.clone(), rtype), code);
    nr.soa = authorities.iter().find_map(|r| match &r.data {
        RData::SOA(s) => Some(Box::new(Record::from_rdata(
            r.name.clone(),
            r.ttl,
            s.clone(),
        ))),
        _ => None,
    });
    nr.authorities = Some(proofs(authorities).cloned().collect());
    nr
}

/// A negative answer to `qname`: the CNAMEs from it found in `answers` (only the chain), the
/// SOA of `nr` and its DNSSEC proofs; TTL min(SOA TTL, SOA MINIMUM, the CNAMEs' TTLs), 0 without an SOA (RFC 2308
/// §5: not cached beyond the floor).
pub(super) fn negative(
    qname: &Name,
    nr: &NoRecords,
    answers: &[Record],
    started: Instant,
) -> RawAnswer {
    let (cnames, end) = cname_prefix(qname, answers);
    let soa = nr
        .soa
        .as_ref()
        .map(|s| s.as_ref().clone().into_record_of_rdata());
    let mut ttl = nr.soa.as_ref().map_or(0, |s| s.ttl.min(s.data.minimum));
    ttl = cnames.iter().fold(ttl, |t, c| t.min(c.ttl));
    let rcode = if nr.response_code == ResponseCode::NXDomain {
        ResponseCode::NXDomain
    } else {
        ResponseCode::NoError
    };
    RawAnswer {
        found_at: None,
        negative_at: Some(lower_name(&end)),
        rcode,
        ttl,
        dnssec: DnssecStatus::Indeterminate,
        records: Records::None,
        wire: encode_wire(
            cnames.iter().copied(),
            soa.iter()
                .chain(proofs(nr.authorities.as_deref().unwrap_or_default())),
        ),
        elapsed: started.elapsed(),
    }
}

/// The CNAMEs followed from `qname` through `answers` (at most [`MAX_CNAME_HOPS`], stopping at
/// a loop or a conflict), and the name the chain ends at.
fn cname_prefix<'a>(qname: &Name, answers: &'a [Record]) -> (Vec<&'a Record>, Name) {
    let mut owner = qname.clone();
    let mut cnames: Vec<&Record> = Vec::new();
    for _ in 0..MAX_CNAME_HOPS {
        let mut here = answers
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME && same_name(&r.name, &owner));
        let Some(cname) = here.next() else {
            break;
        };
        let RData::CNAME(target) = &cname.data else {
            break;
        };
        if here.any(|other| other.data != cname.data)
            || same_name(&target.0, qname)
            || cnames.iter().any(|c| same_name(&c.name, &target.0))
        {
            break;
        }
        cnames.push(cname);
        owner = target.0.clone();
    }
    (cnames, owner)
}
