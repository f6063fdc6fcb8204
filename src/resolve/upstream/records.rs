//! Upstream records as the cache keeps them: the question name from its text, the typed data
//! of an RRset, the records in wire form for the DNS front-end, names as raw lower-case labels,
//! and the DNSSEC proof of a set of records.

use std::net::IpAddr;

use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::domain::Label;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::proto::serialize::binary::{BinEncodable, BinEncoder};

use std::time::Duration;

use super::chain::Chain;
use super::{DnssecStatus, RawAnswer, Records, WireRecords};
use crate::policy::join_txt;
use crate::resolve::ResolveError;

/// A question name from its text: raw labels, not host-name parsing (labels such as padded
/// base32 ATPS labels, "...====", are valid DNS but not valid host names and would be refused).
pub(super) fn query_name(name: &str) -> Result<Name, ResolveError> {
    let labels = name
        .split('.')
        .filter(|l| !l.is_empty())
        .map(|l| Label::from_raw_bytes(l.as_bytes()));
    let mut qname = labels
        .collect::<Result<Vec<_>, _>>()
        .and_then(Name::from_labels)
        .map_err(|e| ResolveError::InvalidName(format!("{name:?}: {e}").into()))?;
    qname.set_fqdn(true);
    Ok(qname)
}

/// The data of `rrset` (records of the asked type `rtype`) as the cache keeps it: TXT joined
/// per record (never parsed here), TLSA, addresses, MX, PTR names; any other type by a hash of
/// its RDATA.
pub(super) fn typed_records(rtype: RecordType, rrset: &[&Record]) -> Records {
    let data = rrset.iter().map(|r| &r.data);
    match rtype {
        RecordType::TXT => Records::Txt(
            data.filter_map(|d| match d {
                RData::TXT(t) => Some(join_txt(&t.txt_data)),
                _ => None,
            })
            .collect(),
        ),
        RecordType::TLSA => Records::Tlsa(
            data.filter_map(|d| match d {
                RData::TLSA(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        ),
        RecordType::A | RecordType::AAAA => Records::Addrs(
            data.filter_map(|d| match d {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect(),
        ),
        RecordType::MX => Records::Mx(
            data.filter_map(|d| match d {
                RData::MX(m) => Some((m.preference, lower_name(&m.exchange))),
                _ => None,
            })
            .collect(),
        ),
        RecordType::PTR => Records::Names(
            data.filter_map(|d| match d {
                RData::PTR(p) => Some(lower_name(&p.0)),
                _ => None,
            })
            .collect(),
        ),
        _ => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for d in data {
                std::hash::Hash::hash(&d.to_string(), &mut h);
            }
            Records::Other(std::hash::Hasher::finish(&h))
        }
    }
}

/// Whether records of type `t` are the DNSSEC records that go with an answer for a client that
/// set DO (RFC 4035 §3.1): signatures (RRSIG) and denial proofs (NSEC, NSEC3). They are kept in
/// [`WireRecords`] as the upstream gave them and left out for a client that did not set DO.
pub fn is_dnssec_record(t: RecordType) -> bool {
    matches!(t, RecordType::RRSIG | RecordType::NSEC | RecordType::NSEC3)
}

/// The DNSSEC records among a response's authority section: a negative or wildcard answer's
/// NSEC/NSEC3 proofs and the signatures over them and over the SOA.
pub(super) fn proofs(authorities: &[Record]) -> impl Iterator<Item = &Record> {
    authorities
        .iter()
        .filter(|r| is_dnssec_record(r.record_type()))
}

/// The type an RRSIG record covers; `None` for any other record.
pub(super) fn covered(r: &Record) -> Option<RecordType> {
    match &r.data {
        RData::DNSSEC(hickory_resolver::proto::dnssec::rdata::DNSSECRData::RRSIG(sig)) => {
            Some(sig.input().type_covered)
        }
        _ => None,
    }
}

/// `answers` and `authorities` in DNS wire form ([`WireRecords`]); `None` if one does not
/// encode (it came off the wire, so it does) or there are more than 65,535.
pub(super) fn encode_wire<'a>(
    answers: impl IntoIterator<Item = &'a Record>,
    authorities: impl IntoIterator<Item = &'a Record>,
) -> Option<WireRecords> {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    let mut count = |records: &mut dyn Iterator<Item = &'a Record>| -> Option<u16> {
        let mut n = 0u16;
        for r in records {
            r.emit(&mut encoder).ok()?;
            n = n.checked_add(1)?;
        }
        Some(n)
    };
    let answers = count(&mut answers.into_iter())?;
    let authorities = count(&mut authorities.into_iter())?;
    Some(WireRecords {
        answers,
        authorities,
        bytes: bytes.into_boxed_slice(),
    })
}

/// A name as its raw labels joined by dots, lower-case, no final dot. Not `to_ascii()`, which
/// escapes octets such as ':' or '/' that SPF targets may legitimately hold.
pub(super) fn lower_name(n: &Name) -> String {
    n.iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

pub(super) fn status(p: Proof) -> DnssecStatus {
    match p {
        Proof::Secure => DnssecStatus::Secure,
        Proof::Insecure => DnssecStatus::Insecure,
        Proof::Bogus => DnssecStatus::Bogus,
        Proof::Indeterminate => DnssecStatus::Indeterminate,
    }
}

pub(super) fn weaker(a: Proof, b: Proof) -> Proof {
    let rank = |p: Proof| match p {
        Proof::Bogus => 0,
        Proof::Indeterminate => 1,
        Proof::Insecure => 2,
        Proof::Secure => 3,
    };
    if rank(a) <= rank(b) { a } else { b }
}

impl RawAnswer {
    /// A positive answer from the chain that answers the question: found at the chain's end,
    /// TTL the chain's minimum, the RRset's typed data and the chain in wire form, with the
    /// signatures over it and the DNSSEC proofs among `authorities` (a wildcard answer's NSEC).
    pub(super) fn positive(
        rtype: RecordType,
        chain: &Chain<'_>,
        authorities: &[Record],
        dnssec: DnssecStatus,
        elapsed: Duration,
    ) -> RawAnswer {
        RawAnswer {
            found_at: Some(lower_name(&chain.owner)),
            negative_at: None,
            rcode: hickory_resolver::proto::op::ResponseCode::NoError,
            ttl: chain.ttl,
            dnssec,
            records: typed_records(rtype, &chain.rrset),
            wire: encode_wire(
                chain
                    .cnames
                    .iter()
                    .chain(&chain.rrset)
                    .chain(&chain.sigs)
                    .copied(),
                proofs(authorities),
            ),
            elapsed,
        }
    }
}
