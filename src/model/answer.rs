//! One answer per (question kind, name), with the record already parsed by `policy`, so a hit
//! costs no parsing; where it came from ([`Source`]) and its DNSSEC status. The resolver builds
//! answers from upstream data (`resolve::answer`); the protocol carries them as they are.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::policy::{self, ParseResult, Parsed, Rejected};

pub use super::alloc::alloc_size;
use super::alloc::heap_strings;

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
/// The record is boxed (serde writes a `Box<T>` as the `T`): no answer pays DMARC's size inline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Found<T, E> {
    /// TXT records, but none of this kind: the name publishes no such policy.
    Absent,
    /// One record, parsed.
    Valid(Box<Parsed<T>>),
    /// A record (or several) that cannot be used, with why.
    Invalid(Box<Rejected<E>>),
}

impl<T, E> Found<T, E> {
    /// The parsed record when valid.
    pub fn valid(&self) -> Option<&Parsed<T>> {
        match self {
            Found::Valid(p) => Some(p.as_ref()),
            _ => None,
        }
    }

    /// The allocator chunk of the boxed record (none when absent).
    fn boxed(&self) -> usize {
        match self {
            Found::Absent => 0,
            Found::Valid(_) => alloc_size(size_of::<Parsed<T>>()),
            Found::Invalid(_) => alloc_size(size_of::<Rejected<E>>()),
        }
    }
}

impl<T, E> From<Option<ParseResult<T, E>>> for Found<T, E> {
    fn from(r: Option<ParseResult<T, E>>) -> Self {
        match r {
            None => Found::Absent,
            Some(Ok(p)) => Found::Valid(Box::new(p)),
            Some(Err(e)) => Found::Invalid(Box::new(e)),
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
/// unchanged, and an answer restored from a snapshot has no TXT records kept. Nothing is held
/// twice: where the upstream's records are exactly the selected record ([`Answer::raw`]) as one
/// TXT record at the name, they are rebuilt from it when asked for instead of kept.
#[derive(Clone, Default)]
pub(crate) struct Kept {
    /// The answer's postcard encoding ([`Answer::encoded`]), made by the first cache hit.
    encoding: OnceLock<Box<[u8]>>,
    /// For the parsing kinds (DMARC, SPF, DKIM key, ATPS): every TXT record at the name as the
    /// upstream gave it ([`Answer::txt`]). The parsed data keeps only the one record of its
    /// kind, and a name may publish other TXT too; the DNS front-end answers a TXT question
    /// from the same entry as the socket.
    pub(crate) txt: KeptTxt,
    /// The upstream's records for the DNS front-end ([`Answer::wire`]): the CNAME chain and
    /// records as given (TXT strings as published), the SOA of a negative answer.
    pub(crate) wire: KeptWire,
}

/// The TXT records behind a parsed answer.
#[derive(Clone, Default)]
pub(crate) enum KeptTxt {
    /// Not known (restored from a snapshot, synthesized, another kind).
    #[default]
    Unknown,
    /// Exactly one record, the selected one: [`Answer::raw`].
    Raw,
    /// Any other set, as given (boxed: rare, and every answer pays the inline size).
    All(Box<Box<[String]>>),
}

/// The upstream's records in wire form.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum KeptWire {
    /// Not known.
    #[default]
    Unknown,
    /// Exactly what [`txt_wire`] rebuilds from the name, the TTL and [`Answer::raw`] (checked
    /// byte for byte when the answer was made).
    FromRaw,
    /// Kept as given (boxed, as [`KeptTxt::All`]).
    Stored(Box<WireRecords>),
}

impl Kept {
    /// What to keep of an upstream answer: its TXT records (parsing kinds) and its records in
    /// wire form, if known. [`Answer::compact`] then drops what the value itself holds.
    pub(crate) fn new(txt: Option<Vec<String>>, wire: Option<WireRecords>) -> Kept {
        Kept {
            encoding: OnceLock::new(),
            txt: txt.map_or(KeptTxt::Unknown, |t| KeptTxt::All(Box::new(t.into()))),
            wire: wire.map_or(KeptWire::Unknown, |w| KeptWire::Stored(Box::new(w))),
        }
    }

    /// What is kept as given, no encoding made yet (an answer rebuilt by the cache).
    pub(crate) fn with(txt: KeptTxt, wire: KeptWire) -> Kept {
        Kept {
            encoding: OnceLock::new(),
            txt,
            wire,
        }
    }

    /// Takes the stored wire records out (a forwarded type's are its data).
    pub(crate) fn take_wire(&mut self) -> Option<WireRecords> {
        match std::mem::take(&mut self.wire) {
            KeptWire::Stored(w) => Some(*w),
            _ => None,
        }
    }

    /// Heap bytes held (allocator chunks included).
    fn heap(&self) -> usize {
        let txt = match &self.txt {
            KeptTxt::All(t) => alloc_size(size_of::<Box<[String]>>()) + heap_strings(t),
            _ => 0,
        };
        let wire = match &self.wire {
            KeptWire::Stored(w) => alloc_size(size_of::<WireRecords>()) + alloc_size(w.bytes.len()),
            _ => 0,
        };
        txt + wire
    }
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
            Some(b) => write!(f, "<{} bytes> ", b.len())?,
            None => f.write_str("<not encoded> ")?,
        }
        match &self.txt {
            KeptTxt::Unknown => f.write_str("<no TXT kept>")?,
            KeptTxt::Raw => f.write_str("<TXT: the raw record>")?,
            KeptTxt::All(t) => write!(f, "<{} TXT>", t.len())?,
        }
        match &self.wire {
            KeptWire::Unknown => f.write_str(" <no wire>"),
            KeptWire::FromRaw => f.write_str(" <wire: from the raw record>"),
            KeptWire::Stored(w) => write!(f, " <wire: {} bytes>", w.bytes.len()),
        }
    }
}

impl Answer {
    /// The answer's postcard encoding (what `postcard::to_allocvec(self)` gives), computed on
    /// first use and kept: a binary client's cache hit is answered with a copy of these bytes
    /// instead of a walk over the parsed record. The first answer (the miss) serializes
    /// straight into its frame instead ([`Answer::encoded_if_kept`]), so an entry asked once
    /// holds no second copy of its record; the cache charges the encoding from the start.
    pub fn encoded(&self) -> &[u8] {
        self.kept.encoding.get_or_init(|| {
            postcard::to_allocvec(self)
                .map(Vec::into_boxed_slice)
                .unwrap_or_default()
        })
    }

    /// The kept encoding, if a hit has made it ([`Answer::encoded`]).
    pub fn encoded_if_kept(&self) -> Option<&[u8]> {
        self.kept.encoding.get().map(|b| &b[..])
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
                match &self.kept.txt {
                    KeptTxt::Unknown => None,
                    KeptTxt::Raw => self.raw.as_ref().map(std::slice::from_ref),
                    KeptTxt::All(t) => Some(&t[..]),
                }
            }
            _ => None,
        }
    }

    /// The upstream's records as it gave them, for the DNS front-end: a forwarded type's, or
    /// those kept beside a parsed answer (rebuilt from [`Answer::raw`] when they were exactly
    /// that record, see [`Kept`]). `None` when they are not known (an answer restored from a
    /// snapshot, or synthesized).
    pub fn wire(&self) -> Option<Cow<'_, WireRecords>> {
        match (&self.data, &self.kept.wire) {
            (Data::Wire(w), _) => Some(Cow::Borrowed(w)),
            (_, KeptWire::Stored(w)) => Some(Cow::Borrowed(w.as_ref())),
            (_, KeptWire::FromRaw) => self
                .raw
                .as_deref()
                .and_then(|r| txt_wire(&self.name, self.ttl, r))
                .map(Cow::Owned),
            (_, KeptWire::Unknown) => None,
        }
    }

    /// Drops from what is kept whatever the value itself holds: TXT records that are just the
    /// selected record, and wire records that [`txt_wire`] rebuilds byte for byte from it.
    /// Called once the answer is complete; the answer reads the same before and after.
    pub(crate) fn compact(mut self) -> Answer {
        let Some(raw) = self.raw.as_deref() else {
            return self;
        };
        if let KeptTxt::All(t) = &self.kept.txt
            && t.len() == 1
            && t[0] == raw
        {
            self.kept.txt = KeptTxt::Raw;
        }
        if let KeptWire::Stored(w) = &self.kept.wire
            && matches!(self.kept.txt, KeptTxt::Raw)
            && txt_wire(&self.name, self.ttl, raw).is_some_and(|r| r == **w)
        {
            self.kept.wire = KeptWire::FromRaw;
        }
        self
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

    /// The heap bytes this answer holds once hit (its encoding kept), its own allocation
    /// (behind the cache's `Arc`) included, counted in allocator chunks ([`alloc_size`]): what the byte-bounded cache
    /// charges for it, beside the entry's own cost (`resolve::cache`). Buffers are counted as
    /// they are; a parsed record's small allocations (directives, URIs, tag lists) are charged
    /// from its serialized size with the factor measured by `loadtest/memory` and the
    /// `cache_weight` test.
    pub fn weight(&self) -> u32 {
        let parsed = || {
            postcard::experimental::serialized_size(&self.data).unwrap_or(0) * PARSED_FACTOR
                + PARSED_EXTRA
        };
        let data = match &self.data {
            Data::None => 0,
            Data::Txt(t) | Data::Names(t) => heap_strings(t),
            Data::Addrs(a) => alloc_size(std::mem::size_of_val(a.as_slice())),
            Data::Mx(m) => {
                alloc_size(std::mem::size_of_val(m.as_slice()))
                    + m.iter()
                        .map(|(_, s)| alloc_size(s.capacity()))
                        .sum::<usize>()
            }
            Data::Tlsa(t) => {
                alloc_size(std::mem::size_of_val(t.as_slice()))
                    + t.iter()
                        .map(|p| alloc_size(p.policy.data.capacity()) + PARSED_EXTRA)
                        .sum::<usize>()
            }
            Data::Wire(w) => alloc_size(w.bytes.len()),
            // A DKIM key's bytes are one buffer; its tag lists are small.
            Data::DkimKey(f @ Found::Valid(k)) => {
                f.boxed() + alloc_size(k.policy.p.capacity()) + 2 * PARSED_EXTRA
            }
            Data::Dmarc(f) => f.boxed() + parsed(),
            Data::Spf(f) => f.boxed() + parsed(),
            Data::DkimKey(f) => f.boxed() + parsed(),
            Data::Atps(f) => f.boxed() + parsed(),
        };
        // The encoding a hit keeps ([`Answer::encoded`]), charged whether made yet or not.
        let encoding = alloc_size(postcard::experimental::serialized_size(self).unwrap_or(0));
        let total = encoding
            + alloc_size(std::mem::size_of::<Answer>() + 16)
            + alloc_size(self.name.capacity())
            + self
                .found_at
                .as_ref()
                .map_or(0, |s| alloc_size(s.capacity()))
            + self.raw.as_ref().map_or(0, |s| alloc_size(s.capacity()))
            + self.kept.heap()
            + data;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// What a parsed record's heap use is charged per serialized byte, and beside it (its vectors'
/// and strings' allocator chunks): from heaptrack on `loadtest/memory`'s fill (an SPF record
/// with two includes: its directives and include targets ~240 bytes for ~70 serialized; a
/// DMARC record's URI list one small buffer; see loadtest/RESULTS.md), checked by the
/// `cache_weight` test and the run's RSS against the weighed total.
const PARSED_FACTOR: usize = 2;
const PARSED_EXTRA: usize = 64;

/// One TXT record at `owner` in DNS wire form (owner uncompressed, class IN, `ttl`), `text`
/// split into character-strings of 255 octets: what an upstream gives for a name publishing
/// only that record. `None` for an owner that is no host name of 1–63-octet labels.
pub fn txt_wire(owner: &str, ttl: u32, text: &str) -> Option<WireRecords> {
    let text = text.as_bytes();
    let chunks = text.len().div_ceil(255).max(1);
    let rdlength = u16::try_from(text.len() + chunks).ok()?;
    let mut b = Vec::with_capacity(owner.len() + 2 + 10 + usize::from(rdlength));
    for label in owner
        .split('.')
        .filter(|l| !owner.is_empty() || !l.is_empty())
    {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))?;
        b.push(len);
        b.extend_from_slice(label.as_bytes());
    }
    b.push(0);
    b.extend_from_slice(&16u16.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&ttl.to_be_bytes());
    b.extend_from_slice(&rdlength.to_be_bytes());
    if text.is_empty() {
        b.push(0);
    }
    for c in text.chunks(255) {
        b.push(c.len() as u8);
        b.extend_from_slice(c);
    }
    Some(WireRecords {
        answers: 1,
        authorities: 0,
        bytes: b.into_boxed_slice(),
    })
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
