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
        let mut kept = Kept::default();
        // The selected record's text (parsing kinds only).
        let mut raw_text = None;
        let data = match (raw.records, kind) {
            (Records::None, _) => Data::None,
            (r, Kind::Dmarc | Kind::Spf | Kind::DkimKey | Kind::Atps) => {
                let txt = match r {
                    Records::Txt(t) => t,
                    _ => Vec::new(),
                };
                let strings = txt.iter().map(String::as_str);
                // The parser says which record it selected; `raw` is that record's text.
                fn found<T, E>(p: Option<policy::Picked<T, E>>) -> (Found<T, E>, Option<usize>) {
                    let index = p.as_ref().and_then(|p| p.index);
                    (p.map(|p| p.result).into(), index)
                }
                let (data, index) = match kind {
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
                };
                raw_text = index.and_then(|i| txt.get(i).cloned());
                kept.txt = Some(txt.into_boxed_slice());
                data
            }
            (Records::Tlsa(t), _) => Data::Tlsa(t.iter().map(policy::tlsa::from_rdata).collect()),
            (Records::Txt(t), _) => Data::Txt(t),
            (Records::Addrs(a), _) => Data::Addrs(a),
            (Records::Mx(m), _) => Data::Mx(m),
            (Records::Names(n), _) => Data::Names(n),
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
    }
}

fn fingerprint(r: &Records) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.hash(&mut h);
    h.finish()
}
