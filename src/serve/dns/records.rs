//! One resolver answer → the DNS records, response code and flags the front-end sends: the
//! upstream's records as it gave them when the entry keeps them ([`Answer::wire`]: the CNAME
//! chain, TXT strings as published, the SOA of a negative answer), else records rebuilt from
//! the parsed data (an entry restored from a snapshot; owner: the question name as asked).
//! TTLs: what is left of the cached answer's.
//!
//! [`Answer::wire`]: crate::resolve::Answer::wire

use std::time::Duration;

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR, TXT, tlsa};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::model::WireRecords;
use crate::resolve::upstream::is_dnssec_record;

use crate::resolve::{Data, DnssecStatus, Lookup, Rcode};

/// One question's answer, before encoding.
pub(super) struct Answered {
    pub(super) rcode: ResponseCode,
    pub(super) records: Vec<Record>,
    /// Authority records: the SOA of a negative answer.
    pub(super) authority: Vec<Record>,
    pub(super) secure: bool,
    /// How long the answer may be reused; `None` for refusals and failures.
    pub(super) ttl: Option<Duration>,
}

impl Answered {
    /// No records, with `rcode` (REFUSED, SERVFAIL).
    pub(super) fn refused(rcode: ResponseCode) -> Answered {
        Answered {
            rcode,
            records: Vec::new(),
            authority: Vec::new(),
            secure: false,
            ttl: None,
        }
    }

    /// The records of `lookup` for a `qtype` question at `name`. A TXT answer holds every TXT
    /// record at the name ([`crate::resolve::Answer::txt`]), whatever kind of entry it came
    /// from; a bogus or SERVFAIL answer is SERVFAIL. The DNSSEC records kept with the upstream's
    /// (RRSIG, NSEC, NSEC3) go only to a client that set DO (`dnssec_ok`, RFC 4035 §3.2.1), or
    /// one that asked for that type.
    pub(super) fn from_lookup(
        name: &Name,
        qtype: RecordType,
        lookup: &Lookup,
        dnssec_ok: bool,
    ) -> Answered {
        let a = &lookup.answer;
        if a.dnssec == DnssecStatus::Bogus || a.rcode == Rcode::ServFail {
            return Answered::refused(ResponseCode::ServFail);
        }
        let ttl = lookup.ttl_remaining.max(1);
        let rcode = if a.rcode == Rcode::NxDomain {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        let secure = a.dnssec == DnssecStatus::Secure;
        let reuse = Some(Duration::from_secs(u64::from(ttl)));
        // The upstream's own records, when they are this name's (a wildcard sample's are
        // another name's: rebuilt below with the question as owner).
        let asked = name.to_ascii();
        let asked = asked.strip_suffix('.').unwrap_or(&asked);
        if let Some(wire) = a.wire()
            && a.name.eq_ignore_ascii_case(asked)
            && let Some((records, authority)) = decode(&wire, ttl, name, |t| {
                dnssec_ok || t == qtype || !is_dnssec_record(t)
            })
        {
            return Answered {
                rcode,
                records,
                authority,
                secure,
                ttl: reuse,
            };
        }
        let rdatas: Vec<RData> = match (&a.data, qtype) {
            (_, RecordType::TXT) => a
                .txt()
                .unwrap_or_default()
                .iter()
                .map(|s| txt_rdata(s))
                .collect(),
            (Data::Tlsa(t), _) => t.iter().map(|p| tlsa_rdata(&p.policy)).collect(),
            (Data::Addrs(ips), _) => ips
                .iter()
                .filter_map(|ip| match (ip, qtype) {
                    (std::net::IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (std::net::IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                })
                .collect(),
            (Data::Mx(m), _) => m
                .iter()
                .filter_map(|(pref, host)| {
                    Name::from_ascii(format!("{host}."))
                        .ok()
                        .map(|n| RData::MX(MX::new(*pref, n)))
                })
                .collect(),
            (Data::Names(n), _) => n
                .iter()
                .filter_map(|h| {
                    Name::from_ascii(format!("{h}."))
                        .ok()
                        .map(|n| RData::PTR(PTR(n)))
                })
                .collect(),
            _ => Vec::new(),
        };
        let records = rdatas
            .into_iter()
            .map(|rd| Record::from_rdata(name.clone(), ttl, rd))
            .collect();
        Answered {
            rcode,
            records,
            authority: Vec::new(),
            secure,
            ttl: reuse,
        }
    }
}

/// The answer and authority records kept in `wire` whose type `keep` accepts, each with TTL
/// `ttl` (what is left of the entry's); answers owned by the question name get it as asked
/// (its 0x20 case, as a stub that randomizes case expects). `None` if they do not decode (they
/// were encoded by us, so they do).
fn decode(
    wire: &WireRecords,
    ttl: u32,
    asked: &Name,
    keep: impl Fn(RecordType) -> bool,
) -> Option<(Vec<Record>, Vec<Record>)> {
    let mut decoder = BinDecoder::new(&wire.bytes);
    let mut read = |n: u16| -> Option<Vec<Record>> {
        let mut records = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let mut r = Record::read(&mut decoder).ok()?;
            if !keep(r.record_type()) {
                continue;
            }
            r.ttl = ttl;
            if r.name.eq_ignore_root(asked) {
                r.name = asked.clone();
            }
            records.push(r);
        }
        Some(records)
    };
    let answers = read(wire.answers)?;
    let authority = read(wire.authorities)?;
    Some((answers, authority))
}

fn txt_rdata(joined: &str) -> RData {
    // Character-strings hold at most 255 octets; the joined record is split back into them.
    let chunks: Vec<&[u8]> = joined.as_bytes().chunks(255).collect();
    RData::TXT(TXT::from_bytes(if chunks.is_empty() {
        vec![&b""[..]]
    } else {
        chunks
    }))
}

fn tlsa_rdata(t: &crate::policy::tlsa::Tlsa) -> RData {
    RData::TLSA(tlsa::TLSA::new(
        tlsa::CertUsage::from(t.usage.0),
        tlsa::Selector::from(t.selector.0),
        tlsa::Matching::from(t.matching.0),
        t.data.clone(),
    ))
}
