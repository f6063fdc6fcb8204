//! Building answers from upstream data: the one place an upstream answer's records are handed
//! to `policy` (the answer types themselves are `model::answer`'s).

use std::hash::{Hash, Hasher};

use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RecordType;

use super::upstream::{RawAnswer, Records};
use crate::model::answer::Kept;
pub use crate::model::answer::{Answer, Data, Found, KINDS, Kind, Rcode};
use crate::policy;

impl Kind {
    /// The DNS type asked for.
    pub fn record_type(self) -> RecordType {
        match self {
            Kind::Dmarc | Kind::Spf | Kind::DkimKey | Kind::Atps | Kind::Txt => RecordType::TXT,
            Kind::Tlsa => RecordType::TLSA,
            Kind::Exists | Kind::A => RecordType::A,
            Kind::Aaaa => RecordType::AAAA,
            Kind::Mx => RecordType::MX,
            Kind::Ptr => RecordType::PTR,
            Kind::Forward(t) => RecordType::from(t),
        }
    }
}

impl Answer {
    /// Parses a raw upstream answer for `kind` at `name`.
    pub fn from_raw(kind: Kind, name: &str, raw: RawAnswer) -> Answer {
        let fingerprint = fingerprint(&raw.records);
        let rcode = match raw.rcode {
            ResponseCode::NXDomain => Rcode::NxDomain,
            ResponseCode::ServFail => Rcode::ServFail,
            _ => Rcode::NoError,
        };
        let mut kept = Kept::new(None, raw.wire);
        let positive = !matches!(raw.records, Records::None);
        // The selected record's text (parsing kinds only).
        let mut raw_text = None;
        let data = match (raw.records, kind) {
            // A forwarded type's records are kept as given; a negative one keeps its SOA.
            (_, Kind::Forward(_)) if positive => match kept.take_wire() {
                Some(w) => Data::Wire(w),
                None => Data::None,
            },
            // A negative one keeps its SOA.
            (_, Kind::Forward(_)) => Data::None,
            (Records::None, _) => Data::None,
            (r, Kind::Dmarc | Kind::Spf | Kind::DkimKey | Kind::Atps) => {
                let txt = match r {
                    Records::Txt(t) => t,
                    _ => Vec::new(),
                };
                let (data, index) = parse_txt(kind, &txt);
                raw_text = index.and_then(|i| txt.get(i).cloned());
                kept = Kept::new(Some(txt), kept.take_wire());
                data
            }
            (Records::Tlsa(t), _) => Data::Tlsa(t.iter().map(policy::tlsa::from_rdata).collect()),
            (Records::Txt(t), _) => Data::Txt(t),
            (Records::Addrs(a), _) => Data::Addrs(a),
            (Records::Mx(m), _) => Data::Mx(m),
            (Records::Names(n), _) => Data::Names(n),
            (Records::Other(_), _) => Data::None,
        };
        Answer {
            kind,
            name: name.to_owned(),
            found_at: raw.found_at,
            rcode,
            ttl: raw.ttl,
            dnssec: raw.dnssec,
            data,
            fingerprint,
            raw: raw_text,
            kept,
        }
        .compact()
    }
}

/// A parsing kind's data from every TXT record at the name, and the index of the record the
/// parser selected (the valid one, or the invalid one it rejected), if any. Pure: the cache
/// rebuilds an answer from its records with it (`resolve::cold`).
pub(crate) fn parse_txt(kind: Kind, txt: &[String]) -> (Data, Option<usize>) {
    let strings = txt.iter().map(String::as_str);
    fn found<T, E>(p: Option<policy::Picked<T, E>>) -> (Found<T, E>, Option<usize>) {
        let index = p.as_ref().and_then(|p| p.index);
        (p.map(|p| p.result).into(), index)
    }
    match kind {
        Kind::Dmarc => {
            let (f, i) = found(policy::dmarc::pick_txt(strings));
            (Data::Dmarc(f), i)
        }
        Kind::Spf => {
            let (f, i) = found(policy::spf::pick_txt(strings));
            (Data::Spf(f), i)
        }
        Kind::DkimKey => {
            let (f, i) = found(policy::dkim::pick_txt(strings));
            (Data::DkimKey(f), i)
        }
        _ => {
            let (f, i) = found(policy::atps::pick_txt(strings));
            (Data::Atps(f), i)
        }
    }
}

/// A hash of the records, kept to 53 bits: JSON readers that hold numbers as doubles (Lua,
/// JavaScript) or as signed 64-bit integers (rspamd's UCL parser refuses larger ones) read it
/// exactly.
pub(crate) fn fingerprint(r: &Records) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.hash(&mut h);
    h.finish() & FINGERPRINT_MASK
}

/// The bits a fingerprint keeps (2^53 - 1).
pub const FINGERPRINT_MASK: u64 = (1 << 53) - 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_fit_in_a_double() {
        for i in 0..2_000 {
            let f = fingerprint(&Records::Txt(vec![format!("v=spf1 ip4:192.0.2.{i} -all")]));
            assert!(f <= FINGERPRINT_MASK, "{f}");
            assert_eq!(f as f64 as u64, f);
        }
        assert_ne!(
            fingerprint(&Records::Txt(vec!["a".into()])),
            fingerprint(&Records::Txt(vec!["b".into()]))
        );
    }
}
