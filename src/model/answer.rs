//! One answer per (question kind, name), with the record already parsed by `policy`, so a hit
//! costs no parsing; where it came from ([`Source`]) and its DNSSEC status. The resolver builds
//! answers from upstream data (`resolve::answer`); the protocol carries them as they are.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::policy::{self, ParseResult, Parsed, Rejected};

/// The kinds of question the resolver answers and caches separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// DMARC record at `_dmarc.<domain>` (TXT).
    Dmarc,
    /// SPF record of a domain (TXT).
    Spf,
    /// DKIM key at `<selector>._domainkey.<domain>` (TXT).
    DkimKey,
    /// ATPS record at `<label>._atps.<signer>` (TXT).
    Atps,
    /// TLSA records at `_<port>._tcp.<host>`, DNSSEC-validated.
    Tlsa,
    /// Whether a domain exists (A query; NXDOMAIN means it does not, RFC 9989 §3.2.13).
    Exists,
    /// Raw TXT (SPF explanations).
    Txt,
    /// A records.
    A,
    /// AAAA records.
    Aaaa,
    /// MX records.
    Mx,
    /// PTR records.
    Ptr,
    /// Any other DNS type of class IN, by its type code, forwarded for the DNS front-end and
    /// kept as the upstream's records ([`Data::Wire`]).
    Forward(u16),
}

/// Every kind, in a fixed order (metrics index by it); `Forward(0)` stands for every
/// forwarded type.
pub const KINDS: [Kind; 12] = [
    Kind::Dmarc,
    Kind::Spf,
    Kind::DkimKey,
    Kind::Atps,
    Kind::Tlsa,
    Kind::Exists,
    Kind::Txt,
    Kind::A,
    Kind::Aaaa,
    Kind::Mx,
    Kind::Ptr,
    Kind::Forward(0),
];

impl Kind {
    /// A stable lower-case label (metrics, logs).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Dmarc => "dmarc",
            Kind::Spf => "spf",
            Kind::DkimKey => "dkim",
            Kind::Atps => "atps",
            Kind::Tlsa => "tlsa",
            Kind::Exists => "exists",
            Kind::Txt => "txt",
            Kind::A => "a",
            Kind::Aaaa => "aaaa",
            Kind::Mx => "mx",
            Kind::Ptr => "ptr",
            Kind::Forward(_) => "forward",
        }
    }

    /// Index into [`KINDS`].
    pub fn index(self) -> usize {
        match self {
            Kind::Forward(_) => KINDS.len() - 1,
            k => KINDS.iter().position(|x| *x == k).unwrap_or(0),
        }
    }

    /// The domain a question is about, without the kind's fixed prefix labels
    /// (`_dmarc.`, `<sel>._domainkey.`, `_25._tcp.`, `<label>._atps.`).
    pub fn subject(self, name: &str) -> &str {
        let after = |marker: &str| {
            name.find(marker)
                .map_or(name, |i| &name[i + marker.len()..])
        };
        match self {
            Kind::Dmarc => name.strip_prefix("_dmarc.").unwrap_or(name),
            Kind::DkimKey => after("._domainkey."),
            Kind::Atps => after("._atps."),
            Kind::Tlsa => after("._tcp."),
            _ => name,
        }
    }
}

/// An answer's response code, reduced to what is cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rcode {
    /// Records, or NODATA.
    NoError,
    /// The name does not exist.
    NxDomain,
    /// DNSSEC validation failed (the answer is cached briefly, with no data).
    ServFail,
}

/// What a name's TXT records held for one record kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Found<T, E> {
    /// TXT records, but none of this kind: the name publishes no such policy.
    Absent,
    /// One record, parsed.
    Valid(Parsed<T>),
    /// A record (or several) that cannot be used, with why.
    Invalid(Rejected<E>),
}

impl<T, E> Found<T, E> {
    /// The parsed record when valid.
    pub fn valid(&self) -> Option<&Parsed<T>> {
        match self {
            Found::Valid(p) => Some(p),
            _ => None,
        }
    }
}

impl<T, E> From<Option<ParseResult<T, E>>> for Found<T, E> {
    fn from(r: Option<ParseResult<T, E>>) -> Self {
        match r {
            None => Found::Absent,
            Some(Ok(p)) => Found::Valid(p),
            Some(Err(e)) => Found::Invalid(e),
        }
    }
}

/// The parsed content of an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Data {
    /// NXDOMAIN, NODATA, or a bogus answer: no records.
    None,
    /// The DMARC record, if any TXT record is one.
    Dmarc(Found<policy::dmarc::DmarcRecord, policy::dmarc::DmarcError>),
    /// The SPF record, if any TXT record is one.
    Spf(Found<policy::spf::SpfRecord, policy::spf::SpfError>),
    /// The DKIM key record, if any.
    DkimKey(Found<policy::dkim::DkimKey, policy::dkim::DkimError>),
    /// The ATPS record, if any.
    Atps(Found<policy::atps::AtpsRecord, policy::atps::AtpsError>),
    /// TLSA records.
    Tlsa(Vec<Parsed<policy::tlsa::Tlsa>>),
    /// Joined TXT strings.
    Txt(Vec<String>),
    /// Addresses (A, AAAA; for `Exists` the A records).
    Addrs(Vec<IpAddr>),
    /// MX (preference, exchange).
    Mx(Vec<(u16, String)>),
    /// PTR targets.
    Names(Vec<String>),
    /// A forwarded type's records as the upstream gave them ([`Kind::Forward`]).
    Wire(WireRecords),
}

/// Resource records in DNS wire form, as an upstream answer held them: its answer section (the
/// CNAME chain from the question name, then the records of the asked type) and its authority
/// records (the SOA of a negative answer, RFC 2308). What the DNS front-end sends, with the TTLs
/// lowered to what is left; nothing here reads them, `serve::dns` decodes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireRecords {
    /// How many of the records are answers; the rest are authority records.
    pub answers: u16,
    /// How many authority records follow the answers.
    pub authorities: u16,
    /// The records, each a complete RR (owner, type, class, TTL, RDATA), names uncompressed.
    pub bytes: Box<[u8]>,
}

/// One cached answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The question kind.
    pub kind: Kind,
    /// The name asked for (lower-case, no trailing dot).
    pub name: String,
    /// Where the records were found (after CNAMEs), if any.
    pub found_at: Option<String>,
    /// Response code.
    pub rcode: Rcode,
    /// Raw TTL from the answer (or the RFC 2308 negative TTL).
    pub ttl: u32,
    /// DNSSEC status.
    pub dnssec: DnssecStatus,
    /// The parsed data.
    pub data: Data,
    /// A hash of the raw record data, equal for byte-identical answers (wildcard watch).
    pub fingerprint: u64,
    /// For the parsing kinds (DMARC, SPF, DKIM key, ATPS): the text of the record the parser
    /// selected (the valid one, or the invalid one it rejected) as published, its
    /// character-strings joined, for filters that verify with the record itself (DKIM
    /// libraries take the key record's text). `None` when the name has no record of the kind,
    /// when two or more were found where one is allowed (no record was selected), and for the
    /// other kinds (a raw TXT answer's records are its data).
    pub raw: Option<String>,
    /// What is kept beside the answer's value: its encoding and its TXT records.
    #[serde(skip)]
    pub(crate) kept: Kept,
}

/// What an answer keeps beside its value, derived from the same upstream answer. Not part of
/// the value: comparisons ignore it and (de)serialization skips it, so the wire format is
/// unchanged, and an answer restored from a snapshot has no TXT records kept.
#[derive(Clone, Default)]
pub(crate) struct Kept {
    /// The answer's postcard encoding ([`Answer::encoded`]), computed once (when the cache
    /// weighs the answer), so a binary client's cache hit is answered with a copy of these
    /// bytes instead of a walk over the parsed record.
    pub(crate) encoding: OnceLock<Box<[u8]>>,
    /// For the parsing kinds (DMARC, SPF, DKIM key, ATPS): every TXT record at the name as the
    /// upstream gave it ([`Answer::txt`]), moved, not copied, from the upstream answer. The
    /// parsed data keeps only the one record of its kind, and a name may publish other TXT
    /// too; the DNS front-end answers a TXT question from the same entry as the socket.
    pub(crate) txt: Option<Box<[String]>>,
    /// The upstream's records for the DNS front-end ([`Answer::wire`]): the CNAME chain and
    /// records as given (TXT strings as published), the SOA of a negative answer.
    pub(crate) wire: Option<WireRecords>,
}

impl PartialEq for Kept {
    fn eq(&self, _: &Kept) -> bool {
        true
    }
}

impl Eq for Kept {}

impl fmt::Debug for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.encoding.get() {
            Some(b) => write!(f, "<{} bytes>", b.len())?,
            None => f.write_str("<not encoded>")?,
        }
        match &self.txt {
            Some(t) => write!(f, " <{} TXT>", t.len()),
            None => f.write_str(" <no TXT kept>"),
        }
    }
}

impl Answer {
    /// The answer's postcard encoding (what `postcard::to_allocvec(self)` gives), computed on
    /// first use and kept.
    pub fn encoded(&self) -> &[u8] {
        self.kept.encoding.get_or_init(|| {
            postcard::to_allocvec(self)
                .map(Vec::into_boxed_slice)
                .unwrap_or_default()
        })
    }

    /// Every TXT string at the name, as the upstream gave it (each record's strings joined):
    /// the records of a raw TXT answer, or those behind a parsed DMARC, SPF, DKIM key or ATPS
    /// answer; empty for an answer without records. `None` when they are not known: a parsed
    /// answer restored from a snapshot, or another kind of answer.
    pub fn txt(&self) -> Option<&[String]> {
        match &self.data {
            Data::None => Some(&[]),
            Data::Txt(t) => Some(t),
            Data::Dmarc(_) | Data::Spf(_) | Data::DkimKey(_) | Data::Atps(_) => {
                self.kept.txt.as_deref()
            }
            _ => None,
        }
    }

    /// The upstream's records as it gave them, for the DNS front-end: a forwarded type's, or
    /// those kept beside a parsed answer. `None` when they are not known (an answer restored
    /// from a snapshot, or synthesized).
    pub fn wire(&self) -> Option<&WireRecords> {
        match &self.data {
            Data::Wire(w) => Some(w),
            _ => self.kept.wire.as_ref(),
        }
    }

    /// A negative answer synthesized from an ancestor's NXDOMAIN (RFC 8020).
    pub fn nxdomain(kind: Kind, name: &str, ttl: u32) -> Answer {
        Answer {
            kind,
            name: name.to_owned(),
            found_at: None,
            rcode: Rcode::NxDomain,
            ttl,
            dnssec: DnssecStatus::Indeterminate,
            data: Data::None,
            fingerprint: 0,
            raw: None,
            kept: Kept::default(),
        }
    }

    /// The record when this is a valid DMARC policy record.
    pub fn dmarc_record(&self) -> Option<&Parsed<policy::dmarc::DmarcRecord>> {
        match &self.data {
            Data::Dmarc(found) => found.valid(),
            _ => None,
        }
    }

    /// Whether the answer has records (not NXDOMAIN/NODATA/bogus).
    pub fn is_positive(&self) -> bool {
        !matches!(self.data, Data::None)
    }

    /// Approximate memory held by this answer, for the byte-bounded cache: the structure, its
    /// strings, the parsed data (estimated from its encoded size), the selected record's text
    /// ([`Answer::raw`]), the kept encoding and TXT records.
    pub fn weight(&self) -> u32 {
        let encoded = self.encoded().len();
        let strings = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        let data = match &self.data {
            Data::None => 0,
            Data::Txt(t) | Data::Names(t) => strings(t),
            Data::Addrs(a) => a.len() * 17,
            Data::Mx(m) => m.iter().map(|(_, s)| s.len() + 32).sum(),
            Data::Tlsa(t) => t.iter().map(|p| p.policy.data.len() + 64).sum(),
            Data::Wire(w) => w.bytes.len() + 32,
            // Parsed records: their serialized size is a fair estimate of their heap use.
            _ => encoded * 2,
        };
        let raw_txt = self.kept.txt.as_deref().map_or(0, strings)
            + self.kept.wire.as_ref().map_or(0, |w| w.bytes.len() + 32);
        let total = std::mem::size_of::<Answer>()
            + self.name.len()
            + raw_txt
            + self.raw.as_ref().map_or(0, String::len)
            + self.found_at.as_ref().map_or(0, String::len)
            + data
            + encoded;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// From the cache, fresh.
    Hit,
    /// From upstream, just now.
    Miss,
    /// Expired, served because upstream failed or was too slow (RFC 8767).
    Stale,
    /// From the cache, refreshed in the background by a prefetch.
    Prefetched,
    /// Synthesized from the sample of an organization marked wildcard.
    Wildcard,
    /// Not asked: the organization's upstream budget was spent, and a shorter name's cached
    /// record answered instead (DMARC discovery; listed in its `queries` and `source`).
    RateLimitedFallback,
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

/// One cached answer with its provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyAnswer {
    /// Where it came from.
    pub source: Source,
    /// Seconds of freshness left.
    pub ttl: u32,
    /// The answer: the parsed record (with its diagnostics), the name it was found at, the
    /// rcode, the DNSSEC status.
    pub answer: Arc<Answer>,
}
