//! DMARC policy records: RFC 7489 §6.3–§6.4 and §6.6.3, RFC 9989 (DMARCbis) §4.7–§4.8 and
//! §4.10.1, plus two proposed extensions kept as data with a diagnostic saying so:
//!
//! - "must pass" alignment modifiers: `adkim`/`aspf` values `p`, `rp`, `sp` (first letter the
//!   alignment mode, a trailing `p` meaning that mechanism must pass for DMARC to pass);
//! - DKIM2 forwarder tags: `fp=` (a forwarder policy, same values as `p`), `frua=`, `fruf=`
//!   (report URI lists like `rua`/`ruf`).
//!
//! The parser never guesses: `p=rej` is not `reject`. A record whose `p` is missing or invalid
//! (or whose `sp`/`np` is invalid) is treated as `p=none` when it has at least one valid `rua`
//! URI (RFC 7489 §6.6.3, RFC 9989 §4.10.1) and is invalid otherwise.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::scan::{Class, Classes};
use super::tag::{self, Item};
use super::{Diagnostics, ErrorCode, ParseResult, Parsed, Rejected, is_wsp, scan, str_enum};

/// Stable diagnostic codes of this parser.
pub mod code {
    #![allow(missing_docs)]
    pub const VERSION_MISSING: &str = "dmarc.version.missing";
    pub const VERSION_INVALID: &str = "dmarc.version.invalid";
    pub const VERSION_CASE: &str = "dmarc.version.tag_case";
    pub const POLICY_MISSING: &str = "dmarc.p.missing";
    pub const POLICY_INVALID: &str = "dmarc.p.invalid";
    pub const SP_INVALID: &str = "dmarc.sp.invalid";
    pub const NP_INVALID: &str = "dmarc.np.invalid";
    pub const POLICY_FALLBACK: &str = "dmarc.p.fallback_none";
    pub const TAG_SYNTAX: &str = "dmarc.tag.syntax";
    pub const TAG_EMPTY: &str = "dmarc.tag.empty";
    pub const TAG_CASE: &str = "dmarc.tag.case";
    pub const TAG_DUPLICATE: &str = "dmarc.tag.duplicate";
    pub const TAG_UNKNOWN: &str = "dmarc.tag.unknown";
    pub const VALUE_CASE: &str = "dmarc.value.case";
    pub const VALUE_INVALID: &str = "dmarc.value.invalid";
    pub const URI_INVALID: &str = "dmarc.uri.invalid";
    pub const URI_SIZE_OBSOLETE: &str = "dmarc.uri.size_obsolete";
    pub const URI_SIZE_INVALID: &str = "dmarc.uri.size_invalid";
    pub const URI_NONE_VALID: &str = "dmarc.uri.none_valid";
    pub const URI_TOO_MANY: &str = "dmarc.uri.too_many_uris";
    pub const OBSOLETE_TAG: &str = "dmarc.tag.obsolete";
    pub const FO_WITHOUT_RUF: &str = "dmarc.fo.without_ruf";
    pub const EXT_MUST_PASS: &str = "dmarc.ext.must_pass";
    pub const EXT_FORWARDER: &str = "dmarc.ext.forwarder";
    pub const MULTIPLE: &str = "dmarc.record.multiple";
}

str_enum! {
    /// A Domain Owner Assessment Policy (`p`, `sp`, `np`, and the `fp` extension).
    pub enum Disposition {
        /// No preference expressed (monitoring).
        None => "none",
        /// Treat failing mail as suspicious.
        Quarantine => "quarantine",
        /// Reject failing mail.
        Reject => "reject",
    }
}

impl Disposition {
    /// Strictness order, for choosing "the strictest candidate" among policies.
    pub fn strictness(self) -> u8 {
        match self {
            Disposition::None => 0,
            Disposition::Quarantine => 1,
            Disposition::Reject => 2,
        }
    }

    /// One level below (RFC 9989 `t=y` test mode): reject → quarantine → none.
    pub fn downgraded(self) -> Disposition {
        match self {
            Disposition::Reject => Disposition::Quarantine,
            _ => Disposition::None,
        }
    }
}

str_enum! {
    /// Identifier alignment mode (`adkim`, `aspf`), with the proposed must-pass modifier.
    pub enum Alignment {
        /// `r`: organizational domains must match (RFC 7489 §3.1).
        Relaxed => "r",
        /// `s`: domains must be identical.
        Strict => "s",
        /// `rp` (or bare `p`): relaxed, and this mechanism must pass (extension).
        RelaxedMustPass => "rp",
        /// `sp`: strict, and this mechanism must pass (extension).
        StrictMustPass => "sp",
    }
}

impl Alignment {
    /// Whether the mode is strict.
    pub fn is_strict(self) -> bool {
        matches!(self, Alignment::Strict | Alignment::StrictMustPass)
    }
    /// Whether the must-pass extension is set.
    pub fn must_pass(self) -> bool {
        matches!(self, Alignment::RelaxedMustPass | Alignment::StrictMustPass)
    }
}

str_enum! {
    /// The RFC 9989 `psd` flag.
    pub enum Psd {
        /// The domain is a public suffix domain.
        Yes => "y",
        /// The domain is an organizational domain for itself and its subdomains.
        No => "n",
        /// Unknown (the default): use the tree walk.
        Unknown => "u",
    }
}

str_enum! {
    /// The RFC 9989 `t` test-mode flag.
    pub enum TestMode {
        /// Apply one level below the published policy.
        Yes => "y",
        /// Apply the policy as published (default).
        No => "n",
    }
}

/// The record's version, always `DMARC1` once parsed; kept as a type so JSON shows `v`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Version;

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("DMARC1")
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "DMARC1" {
            Ok(Version)
        } else {
            Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&s),
                &"DMARC1",
            ))
        }
    }
}

/// A reporting URI, with the RFC 7489 `!size` limit in bytes when one was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ReportUri<'a> {
    /// The URI as published.
    pub uri: &'a str,
    /// The RFC 7489 maximum report size in bytes (obsolete in RFC 9989).
    pub max_size: Option<u64>,
}

impl fmt::Display for ReportUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uri)?;
        if let Some(n) = self.max_size {
            write!(f, "!{n}")?;
        }
        Ok(())
    }
}

/// A list of reporting URIs (`rua`, `ruf`, `frua`, `fruf`), kept in one buffer: the valid URIs
/// joined by `,`, which cannot occur inside one (RFC 7489 §6.4 and RFC 9989 §4.8 require it to
/// be percent-encoded). A typical list costs one allocation however many URIs it holds, and
/// the `!size` limits take a second one only when some URI has one. Boxed slices rather than
/// growable buffers keep the record small (it is moved into the cache and the answers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UriList {
    joined: Box<str>,
    /// One entry per URI when any URI has a size limit.
    sizes: Option<Box<[Option<u64>]>>,
}

/// A [`UriList`] being built.
#[derive(Default)]
struct UriListBuilder {
    joined: String,
    sizes: Vec<Option<u64>>,
    count: usize,
}

impl UriListBuilder {
    fn with_capacity(bytes: usize) -> Self {
        UriListBuilder {
            joined: String::with_capacity(bytes),
            sizes: Vec::new(),
            count: 0,
        }
    }

    /// Appends a URI, which must hold no `,` (the parser has checked it is a valid URI).
    fn push(&mut self, uri: &str, max_size: Option<u64>) {
        debug_assert!(!uri.is_empty() && !uri.contains(','));
        if max_size.is_some() || !self.sizes.is_empty() {
            // The first limit fills in `None` for the URIs before it.
            self.sizes.resize(self.count, None);
            self.sizes.push(max_size);
        }
        if !self.joined.is_empty() {
            self.joined.push(',');
        }
        self.joined.push_str(uri);
        self.count += 1;
    }

    /// The list. When every entry of the value was a valid URI without white space or size
    /// limit, the buffer was sized exactly and is kept as it is.
    fn finish(self) -> UriList {
        UriList {
            joined: self.joined.into_boxed_str(),
            sizes: (!self.sizes.is_empty()).then(|| self.sizes.into_boxed_slice()),
        }
    }
}

impl UriList {
    /// The number of URIs.
    pub fn len(&self) -> usize {
        if self.joined.is_empty() {
            0
        } else {
            self.joined.bytes().filter(|&b| b == b',').count() + 1
        }
    }

    /// Whether the list holds no URI.
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty()
    }

    /// The URIs in published order.
    pub fn iter(&self) -> impl Iterator<Item = ReportUri<'_>> {
        let uris = (!self.joined.is_empty()).then(|| scan::split(&self.joined, b','));
        uris.into_iter()
            .flatten()
            .enumerate()
            .map(|(i, uri)| ReportUri {
                uri,
                max_size: self
                    .sizes
                    .as_ref()
                    .and_then(|s| s.get(i).copied().flatten()),
            })
    }

    /// The `i`th URI.
    pub fn get(&self, i: usize) -> Option<ReportUri<'_>> {
        self.iter().nth(i)
    }
}

impl fmt::Display for UriList {
    /// The list as a record writes it (`uri[!size],...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, u) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{u}")?;
        }
        Ok(())
    }
}

impl Serialize for UriList {
    /// A sequence of `{uri, max_size}` objects.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // The length up front: postcard's sequences need it.
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for u in self.iter() {
            seq.serialize_element(&u)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for UriList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Owned {
            uri: String,
            max_size: Option<u64>,
        }
        let mut list = UriListBuilder::default();
        for u in Vec::<Owned>::deserialize(d)? {
            if scan_uri(u.uri.as_bytes()).is_none_or(|s| s.bang.is_some()) {
                return Err(serde::de::Error::invalid_value(
                    serde::de::Unexpected::Str(&u.uri),
                    &"a reporting URI",
                ));
            }
            list.push(&u.uri, u.max_size);
        }
        Ok(list.finish())
    }
}

/// Failure reporting options (`fo`): any combination of `0`, `1`, `d`, `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FailureOptions {
    /// `0`: report when all mechanisms fail to produce an aligned pass.
    pub all: bool,
    /// `1`: report when any mechanism fails to produce an aligned pass.
    pub any: bool,
    /// `d`: report DKIM signature failures.
    pub dkim: bool,
    /// `s`: report SPF failures.
    pub spf: bool,
}

impl Default for FailureOptions {
    fn default() -> Self {
        FailureOptions {
            all: true,
            any: false,
            dkim: false,
            spf: false,
        }
    }
}

impl FailureOptions {
    fn parse(value: &str) -> Option<FailureOptions> {
        let mut fo = FailureOptions {
            all: false,
            any: false,
            dkim: false,
            spf: false,
        };
        // The common case, one option.
        if let [x] = value.as_bytes() {
            match x {
                b'0' => fo.all = true,
                b'1' => fo.any = true,
                b'd' | b'D' => fo.dkim = true,
                b's' | b'S' => fo.spf = true,
                _ => return None,
            }
            return Some(fo);
        }
        for item in scan::split(value, b':') {
            let (s, e) = trim_wsp(item.as_bytes(), 0, item.len());
            let slot = match &item.as_bytes()[s..e] {
                b"0" => &mut fo.all,
                b"1" => &mut fo.any,
                b"d" | b"D" => &mut fo.dkim,
                b"s" | b"S" => &mut fo.spf,
                _ => return None,
            };
            if *slot {
                return None;
            }
            *slot = true;
        }
        // RFC 9989 §4.8: "0" and "1" are mutually exclusive.
        (!(fo.all && fo.any)).then_some(fo)
    }
}

impl fmt::Display for FailureOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (on, s) in [
            (self.all, "0"),
            (self.any, "1"),
            (self.dkim, "d"),
            (self.spf, "s"),
        ] {
            if on {
                write!(f, "{sep}{s}")?;
                sep = ":";
            }
        }
        Ok(())
    }
}

impl Serialize for FailureOptions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FailureOptions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FailureOptions::parse(&s).ok_or_else(|| {
            serde::de::Error::invalid_value(serde::de::Unexpected::Str(&s), &"a DMARC fo value")
        })
    }
}

/// Which tags were absent (or discarded) and so hold their default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Defaulted(u32);

/// Every tag a DMARC record may carry, in canonical output order.
const TAGS: [&str; 17] = [
    "p", "sp", "np", "adkim", "aspf", "pct", "rua", "ruf", "fo", "rf", "ri", "psd", "t", "fp",
    "frua", "fruf", "v",
];

fn tag_bit(name: &str) -> Option<u32> {
    tag_index(name).map(|i| 1 << i)
}

/// Indexes into [`TAGS`], so the parser dispatches on a number instead of comparing strings.
mod ix {
    pub const P: usize = 0;
    pub const SP: usize = 1;
    pub const NP: usize = 2;
    pub const ADKIM: usize = 3;
    pub const ASPF: usize = 4;
    pub const PCT: usize = 5;
    pub const RUA: usize = 6;
    pub const RUF: usize = 7;
    pub const FO: usize = 8;
    pub const RF: usize = 9;
    pub const RI: usize = 10;
    pub const PSD: usize = 11;
    pub const T: usize = 12;
    pub const FP: usize = 13;
    pub const FRUA: usize = 14;
    pub const FRUF: usize = 15;
    pub const V: usize = 16;
}

/// The index in [`TAGS`] of a tag name, ignoring ASCII case.
fn tag_index(name: &str) -> Option<usize> {
    tag_index_of_key(tag::key(name.as_bytes())?)
}

/// The index in [`TAGS`] of a packed tag name ([`tag::key`]): a match on constants, which
/// compiles to a few word comparisons, since this runs once per tag of every record parsed.
fn tag_index_of_key(key: u64) -> Option<usize> {
    const P: u64 = tag::known(TAGS[ix::P]);
    const SP: u64 = tag::known(TAGS[ix::SP]);
    const NP: u64 = tag::known(TAGS[ix::NP]);
    const ADKIM: u64 = tag::known(TAGS[ix::ADKIM]);
    const ASPF: u64 = tag::known(TAGS[ix::ASPF]);
    const PCT: u64 = tag::known(TAGS[ix::PCT]);
    const RUA: u64 = tag::known(TAGS[ix::RUA]);
    const RUF: u64 = tag::known(TAGS[ix::RUF]);
    const FO: u64 = tag::known(TAGS[ix::FO]);
    const RF: u64 = tag::known(TAGS[ix::RF]);
    const RI: u64 = tag::known(TAGS[ix::RI]);
    const PSD: u64 = tag::known(TAGS[ix::PSD]);
    const T: u64 = tag::known(TAGS[ix::T]);
    const FP: u64 = tag::known(TAGS[ix::FP]);
    const FRUA: u64 = tag::known(TAGS[ix::FRUA]);
    const FRUF: u64 = tag::known(TAGS[ix::FRUF]);
    const V: u64 = tag::known(TAGS[ix::V]);
    Some(match key {
        P => ix::P,
        SP => ix::SP,
        NP => ix::NP,
        ADKIM => ix::ADKIM,
        ASPF => ix::ASPF,
        PCT => ix::PCT,
        RUA => ix::RUA,
        RUF => ix::RUF,
        FO => ix::FO,
        RF => ix::RF,
        RI => ix::RI,
        PSD => ix::PSD,
        T => ix::T,
        FP => ix::FP,
        FRUA => ix::FRUA,
        FRUF => ix::FRUF,
        V => ix::V,
        _ => return None,
    })
}

/// Bits of the tags whose absence is recorded directly (`p`, `sp`, `np` are decided with the
/// p=none fallback, and `v` is always present).
const PLAIN_TAGS_MASK: u32 = ((1 << 16) - 1) & !0b111;

impl Defaulted {
    /// Whether `tag` holds its default.
    pub fn contains(self, tag: &str) -> bool {
        tag_bit(tag).is_some_and(|b| self.0 & b != 0)
    }
    /// The defaulted tag names in canonical order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        TAGS.iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, t)| *t)
    }
}

impl Serialize for Defaulted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.count_ones() as usize))?;
        for n in self.names() {
            seq.serialize_element(n)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Defaulted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        let mut out = Defaulted(0);
        for n in names {
            let b = tag_bit(&n).ok_or_else(|| serde::de::Error::unknown_variant(&n, &TAGS))?;
            out.0 |= b;
        }
        Ok(out)
    }
}

/// A parsed DMARC policy record. Absent tags hold their defaults and are named in
/// `defaulted`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DmarcRecord {
    /// Always `DMARC1`.
    pub v: Version,
    /// Policy for the domain itself.
    pub p: Disposition,
    /// Policy for existing subdomains (default: `p`).
    pub sp: Disposition,
    /// Policy for non-existent subdomains, RFC 9989 (default: `sp`).
    pub np: Disposition,
    /// DKIM alignment (default `r`).
    pub adkim: Alignment,
    /// SPF alignment (default `r`).
    pub aspf: Alignment,
    /// RFC 7489 sampling percentage (default 100; removed in RFC 9989).
    pub pct: u8,
    /// Aggregate report URIs.
    pub rua: UriList,
    /// Failure report URIs.
    pub ruf: UriList,
    /// Failure reporting options (default `0`).
    pub fo: FailureOptions,
    /// RFC 7489 failure report formats, colon-separated (default `afrf`).
    pub rf: Cow<'static, str>,
    /// RFC 7489 aggregate report interval in seconds (default 86400).
    pub ri: u32,
    /// RFC 9989 public suffix domain flag (default `u`).
    pub psd: Psd,
    /// RFC 9989 test mode (default `n`).
    pub t: TestMode,
    /// DKIM2 forwarder policy (extension), if published.
    pub fp: Option<Disposition>,
    /// DKIM2 forwarder aggregate report URIs (extension).
    pub frua: UriList,
    /// DKIM2 forwarder failure report URIs (extension).
    pub fruf: UriList,
    /// Tags that were absent or discarded, so hold their defaults.
    pub defaulted: Defaulted,
}

/// Why a DMARC record is not usable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DmarcError {
    /// The record does not start with a `v` tag (RFC 9989 §4.7: the record is ignored).
    VersionMissing,
    /// The `v` value is not exactly `DMARC1` (case-sensitive).
    VersionInvalid {
        /// The value found.
        value: String,
    },
    /// No `p` tag and no valid `rua` to fall back on.
    PolicyMissing,
    /// `p`, `sp` or `np` is invalid and there is no valid `rua` to fall back on.
    PolicyInvalid {
        /// The tag (`p`, `sp` or `np`).
        tag: Cow<'static, str>,
        /// The value found.
        value: String,
    },
    /// More than one TXT record at the name starts with `v=DMARC1`.
    MultipleRecords {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for DmarcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmarcError::VersionMissing => f.write_str("the record does not start with v=DMARC1"),
            DmarcError::VersionInvalid { value } => {
                write!(
                    f,
                    "v={value:?} is not exactly \"DMARC1\" (the value is case-sensitive)"
                )
            }
            DmarcError::PolicyMissing => {
                f.write_str("no p= tag, and no valid rua= URI to fall back to p=none")
            }
            DmarcError::PolicyInvalid { tag, value } => write!(
                f,
                "{tag}={value:?} is not none, quarantine or reject, and no valid rua= URI to fall back to p=none"
            ),
            DmarcError::MultipleRecords { count } => {
                write!(f, "{count} DMARC records at one name: all are discarded")
            }
        }
    }
}

impl std::error::Error for DmarcError {}

impl ErrorCode for DmarcError {
    fn code(&self) -> &'static str {
        match self {
            DmarcError::VersionMissing => code::VERSION_MISSING,
            DmarcError::VersionInvalid { .. } => code::VERSION_INVALID,
            DmarcError::PolicyMissing => code::POLICY_MISSING,
            DmarcError::PolicyInvalid { .. } => code::POLICY_INVALID,
            DmarcError::MultipleRecords { .. } => code::MULTIPLE,
        }
    }
}

/// Whether a joined TXT record is a DMARC record candidate (RFC 7489 §6.6.3 step 3: records
/// that do not start with a `v=` tag naming DMARC1 are discarded). The value is compared
/// without case here so that `v=dmarc1` is selected and then rejected with a diagnostic
/// naming the problem, instead of looking like "no record".
pub fn is_candidate(text: &str) -> bool {
    let t = text.trim_start_matches(super::is_fws);
    let Some(rest) = t.strip_prefix(['v', 'V']) else {
        return false;
    };
    let rest = rest.trim_start_matches(super::is_fws);
    let Some(rest) = rest.strip_prefix('=') else {
        return false;
    };
    let rest = rest.trim_start_matches(super::is_fws);
    rest.get(..6)
        .is_some_and(|v| v.eq_ignore_ascii_case("DMARC1"))
        && rest[6..]
            .chars()
            .next()
            .is_none_or(|c| c == ';' || super::is_fws(c))
}

/// Selects and parses the DMARC record among a name's joined TXT records. `None` means the
/// name publishes no DMARC record.
pub fn from_txt<'a, I>(records: I) -> Option<ParseResult<DmarcRecord, DmarcError>>
where
    I: IntoIterator<Item = &'a str>,
{
    match super::select(records, is_candidate) {
        super::Selection::None => None,
        super::Selection::One(r) => Some(parse(r)),
        super::Selection::Multiple(count) => Some(Err(Rejected::new(
            DmarcError::MultipleRecords { count },
            Diagnostics::default(),
        ))),
    }
}

fn parse_disposition<'a>(
    tag: &'static str,
    value: &'a str,
    diags: &mut Diagnostics,
) -> Result<Disposition, &'a str> {
    match Disposition::from_token_lenient(value) {
        Some((d, case_differs)) => {
            if case_differs {
                diags.info(code::VALUE_CASE, format!("{tag}={value} read as {tag}={d}"));
            }
            Ok(d)
        }
        None => Err(value),
    }
}

/// Parses an RFC 7489 / RFC 9989 reporting URI list, the value at `text[from..to]`. Invalid
/// entries are dropped with a diagnostic; the caller learns how many valid ones remain from the
/// list length.
///
/// One pass over the list's odd bytes ([`for_each_entry`]): in
/// `mailto:a@example.com,mailto:b@example.net` those are the two `:`, the two `@` and the `,`,
/// and they are all a URI's structure that [`check_uri`] needs.
fn parse_uri_list(
    tag: &'static str,
    text: &str,
    (from, to): (usize, usize),
    c: &Classes,
    diags: &mut Diagnostics,
    list: &mut UriList,
) {
    let b = text.as_bytes();
    let mut entries = 0usize;
    if clean_uri_list(b, c, from, to, &mut entries) {
        list.joined = text.split_at(to).0.split_at(from).1.into();
        list.sizes = None;
        too_many_uris(tag, entries, diags);
        return;
    }
    let mut out = UriListBuilder::with_capacity(to - from);
    for_each_entry(b, c, from, to, |marks, end| {
        add_uri(tag, text, c, marks, end, &mut out, diags);
        true
    });
    if out.joined.is_empty() {
        diags.warn(code::URI_NONE_VALID, format!("{tag} holds no valid URI"));
    }
    too_many_uris(tag, out.count, diags);
    *list = out.finish();
}

/// The most report URIs one list (`rua`, `ruf`, `frua`, `fruf`) holds before it is flagged: every
/// report is sent to each of them, and domains have been seen accepting aggregate reports for
/// tens of thousands of other domains (report amplification). The record stays valid.
pub const MAX_REPORT_URIS: usize = 5;

/// Warns when a list holds more than [`MAX_REPORT_URIS`] valid URIs.
fn too_many_uris(tag: &str, count: usize, diags: &mut Diagnostics) {
    if count > MAX_REPORT_URIS {
        diags.warn(
            code::URI_TOO_MANY,
            format!(
                "{tag} lists {count} URIs (more than {MAX_REPORT_URIS}): every report is sent to \
                 each of them (report amplification)"
            ),
        );
    }
}

/// Whether `b[from..to]` is a list of valid URIs with nothing to report: no white space, no
/// size limits, no empty entries. Then the list is the value as it stands (the common case:
/// one copy, no diagnostics); otherwise [`parse_uri_list`] takes it entry by entry. `entries`
/// counts the entries visited (all of them when the list is clean).
#[inline]
fn clean_uri_list(b: &[u8], c: &Classes, from: usize, to: usize, entries: &mut usize) -> bool {
    for_each_entry(b, c, from, to, |m, end| {
        *entries += 1;
        !m.wsp && m.bang.is_none() && check_uri(b, c, m, m.start, end)
    })
}

/// Walks the entries of the URI list `b[from..to]`, visiting only its odd bytes (the class
/// bitmaps' bytes that are not letters, digits, `.`, `-`, `_`): each entry's marks and end go
/// to `entry`, which returns whether to go on. A URI cannot hold an unencoded `,`, so one always
/// ends an entry. Whether every entry was visited.
#[inline(always)]
fn for_each_entry(
    b: &[u8],
    c: &Classes,
    from: usize,
    to: usize,
    mut entry: impl FnMut(&UriMarks, usize) -> bool,
) -> bool {
    // `min` lets the compiler see that the positions below are in bounds.
    let to = to.min(b.len());
    let mut marks = UriMarks::new(from);
    for p in c.positions(Class::Odd, from, to) {
        let x = b[p];
        if x == b',' {
            if !entry(&marks, p) {
                return false;
            }
            marks = UriMarks::new(p + 1);
        } else {
            marks.note(x, p);
        }
    }
    entry(&marks, to)
}

/// Where the structural bytes of one URI list entry are (absolute positions).
struct UriMarks {
    start: usize,
    /// The first `:`.
    colon: Option<usize>,
    /// The first `!` (the obsolete size suffix follows it).
    bang: Option<usize>,
    /// The first `?` and `@` before the `!`.
    query: Option<usize>,
    at: Option<usize>,
    /// A byte that is not a VCHAR before the `!`.
    bad: bool,
    /// White space somewhere in the entry (only allowed at its ends).
    wsp: bool,
}

impl UriMarks {
    fn new(start: usize) -> UriMarks {
        UriMarks {
            start,
            colon: None,
            bang: None,
            query: None,
            at: None,
            bad: false,
            wsp: false,
        }
    }

    #[inline]
    fn note(&mut self, x: u8, p: usize) {
        if self.bang.is_some() {
            return;
        }
        match x {
            b':' => {
                self.colon.get_or_insert(p);
            }
            b'!' => self.bang = Some(p),
            b'?' => {
                self.query.get_or_insert(p);
            }
            b'@' => {
                self.at.get_or_insert(p);
            }
            b' ' | b'\t' => self.wsp = true,
            x if !scan::is(x, scan::VCHAR) => self.bad = true,
            _ => {}
        }
    }
}

/// Checks the list entry `text[marks.start..end]` and appends it to `out` when it is a valid
/// URI, or records why not.
fn add_uri(
    tag: &'static str,
    text: &str,
    c: &Classes,
    marks: &UriMarks,
    end: usize,
    out: &mut UriListBuilder,
    diags: &mut Diagnostics,
) {
    let b = text.as_bytes();
    let (s, e) = trim_wsp(b, marks.start, end);
    let bang = if marks.wsp {
        // White space inside the entry, or only around it: decide on the trimmed text.
        let rescanned = scan_uri(&b[s..e]);
        rescanned.map(|r| r.bang.map(|i| s + i))
    } else {
        check_uri(b, c, marks, s, e).then_some(marks.bang)
    };
    let raw = &text[s..e];
    let Some(bang) = bang else {
        diags.warn(
            code::URI_INVALID,
            format!("{tag}: {raw:?} is not a valid URI, ignored"),
        );
        return;
    };
    let (uri, size) = match bang {
        Some(i) => (&text[s..i], Some(&text[i + 1..e])),
        None => (raw, None),
    };
    let max_size = size.and_then(|s| {
        let n = parse_size(s);
        match n {
            Some(_) => diags.info(
                code::URI_SIZE_OBSOLETE,
                format!("{tag}: size limit !{s} is obsolete in RFC 9989 and ignored by reporters"),
            ),
            None => diags.warn(
                code::URI_SIZE_INVALID,
                format!(
                    "{tag}: size limit !{s} is not a number with an optional k/m/g/t unit, ignored"
                ),
            ),
        }
        n
    });
    out.push(uri, max_size);
}

/// Whether `b[s..e]`, whose odd bytes `marks` has noted (no white space among them), is a
/// valid URI: RFC 3986 `scheme ":" hier-part`, with the RFC 7489 rule that `,` and `!` must be
/// encoded (the first `!` starts the obsolete size suffix), and for `mailto:` an address with a
/// local part and a domain.
#[inline(always)]
fn check_uri(b: &[u8], c: &Classes, marks: &UriMarks, s: usize, e: usize) -> bool {
    // "mailto" in any case, as one word comparison: `| 0x20` lower-cases the six letters (and
    // turns nothing else into a letter).
    const MAILTO: u64 = u64::from_le_bytes(*b"mailto\0\0");
    const CASE: u64 = u64::from_le_bytes([0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0, 0]);
    let Some(colon) = marks.colon else {
        return false;
    };
    let scheme = &b[s..colon];
    let mailto = match *scheme {
        [a, b, c, d, e, f] => u64::from_le_bytes([a, b, c, d, e, f, 0, 0]) | CASE == MAILTO,
        _ => false,
    };
    if marks.bad || !(mailto || is_scheme(scheme)) {
        return false;
    }
    let end = marks.bang.unwrap_or(e);
    if end == colon + 1 {
        return false;
    }
    if !mailto {
        return true;
    }
    let addr_end = marks.query.map_or(end, |q| q.min(end));
    match marks.at {
        Some(at) if at < addr_end && at > colon + 1 => is_domain_at(b, c, at + 1, addr_end),
        _ => false,
    }
}

/// RFC 3986 `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &[u8]) -> bool {
    match s.split_first() {
        Some((first, rest)) => {
            scan::is(*first, scan::ALPHA)
                && rest
                    .iter()
                    .all(|&c| scan::is(c, scan::ALNUM) || matches!(c, b'+' | b'-' | b'.'))
        }
        None => false,
    }
}

/// `[start, end)` without leading and trailing WSP (SP, HTAB).
fn trim_wsp(b: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && matches!(b[start], b' ' | b'\t') {
        start += 1;
    }
    while end > start && matches!(b[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    (start, end)
}

/// Where a valid URI's optional `!size` suffix starts.
struct UriScan {
    bang: Option<usize>,
}

/// [`check_uri`] for a URI on its own (deserialized lists, entries with white space inside):
/// its classes are computed here.
fn scan_uri(uri: &[u8]) -> Option<UriScan> {
    let mut c = Classes::empty();
    c.index(uri);
    let mut marks = UriMarks::new(0);
    for p in c.positions(Class::Odd, 0, uri.len()) {
        marks.note(uri[p], p);
    }
    (!marks.wsp && check_uri(uri, &c, &marks, 0, uri.len())).then_some(UriScan { bang: marks.bang })
}

/// [`scan::is_domain_name`] for `b[s..e]`, from the class bitmaps: no odd byte at all, then
/// only the dots are looked at.
#[inline(always)]
fn is_domain_at(b: &[u8], c: &Classes, s: usize, e: usize) -> bool {
    let e = if e > s && b[e - 1] == b'.' { e - 1 } else { e };
    if e == s || e - s > 253 || c.any(Class::Odd, s, e) {
        return false;
    }
    let mut label = s;
    for dot in c.positions(Class::Dot, s, e) {
        if dot == label || dot - label > 63 {
            return false;
        }
        label = dot + 1;
    }
    label < e && e - label <= 63
}

fn parse_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        b't' | b'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Where a policy tag's parse left it.
enum Slot<'a> {
    Absent,
    Valid(Disposition),
    Invalid(&'a str),
}

/// Parses one DMARC record (already selected and joined).
pub fn parse(text: &str) -> ParseResult<DmarcRecord, DmarcError> {
    let mut diags = Diagnostics::default();
    let mut classes = Classes::empty();
    classes.index(text.as_bytes());
    let mut items = tag::lex(text, &classes);

    // RFC 9989 §4.7: v must be the first tag, value exactly "DMARC1".
    match items.next() {
        Some(Item::Tag { name, value, .. }) if name.eq_ignore_ascii_case("v") => {
            if name != "v" {
                diags.info(code::VERSION_CASE, "tag name V= read as v=");
            }
            if value != "DMARC1" {
                return Err(Rejected::new(
                    DmarcError::VersionInvalid {
                        value: value.to_owned(),
                    },
                    diags,
                ));
            }
        }
        _ => return Err(Rejected::new(DmarcError::VersionMissing, diags)),
    }

    // The fields live in locals and the record is built once, in the return expression, so
    // it is written straight into the caller's slot instead of being moved there.
    let mut adkim = Alignment::Relaxed;
    let mut aspf = Alignment::Relaxed;
    let mut pct = 100;
    let (mut rua, mut ruf, mut frua, mut fruf) = Default::default();
    let mut fo = FailureOptions::default();
    let mut rf = Cow::Borrowed("afrf");
    let mut ri = 86400;
    let mut psd = Psd::Unknown;
    let mut t = TestMode::No;
    let mut fp = None;
    let (mut p_slot, mut sp_slot, mut np_slot) = (Slot::Absent, Slot::Absent, Slot::Absent);
    let mut seen: u32 = 1 << ix::V;

    for item in items {
        let (name, value, key, at, raw) = match item {
            Item::Tag {
                name,
                value,
                key,
                at,
                raw,
            } => (name, value, key, at, raw),
            Item::Empty => {
                diags.info(code::TAG_EMPTY, "empty tag between two ';'");
                continue;
            }
            Item::NoEquals(seg) | Item::BadName(seg) => {
                diags.warn(
                    code::TAG_SYNTAX,
                    format!("{seg:?} is not a tag=value pair, ignored"),
                );
                continue;
            }
        };
        let Some(index) = tag_index_of_key(key) else {
            diags.info(code::TAG_UNKNOWN, format!("unknown tag {name}= ignored"));
            continue;
        };
        let canon = TAGS[index];
        if raw != key {
            diags.info(code::TAG_CASE, format!("tag name {name}= read as {canon}="));
        }
        let bit = 1u32 << index;
        if seen & bit != 0 {
            diags.warn(
                code::TAG_DUPLICATE,
                format!("{canon}= appears more than once; the first one is used"),
            );
            continue;
        }
        seen |= bit;
        match index {
            ix::P | ix::SP | ix::NP => {
                let slot = match parse_disposition(canon, value, &mut diags) {
                    Ok(d) => Slot::Valid(d),
                    Err(v) => Slot::Invalid(v),
                };
                match index {
                    ix::P => p_slot = slot,
                    ix::SP => sp_slot = slot,
                    _ => np_slot = slot,
                }
            }
            ix::ADKIM | ix::ASPF => {
                let parsed = match Alignment::from_token_lenient(value) {
                    Some((a, case_differs)) => {
                        if case_differs {
                            diags.info(
                                code::VALUE_CASE,
                                format!("{canon}={value} read as {canon}={a}"),
                            );
                        }
                        Some(a)
                    }
                    None if value.eq_ignore_ascii_case("p") => Some(Alignment::RelaxedMustPass),
                    None => None,
                };
                match parsed {
                    Some(a) => {
                        if a.must_pass() {
                            diags.info(
                                code::EXT_MUST_PASS,
                                format!("{canon}={value}: non-standard must-pass modifier (read as {canon}={a})"),
                            );
                        }
                        if index == ix::ADKIM {
                            adkim = a;
                        } else {
                            aspf = a;
                        }
                    }
                    None => {
                        seen &= !bit;
                        diags.warn(
                            code::VALUE_INVALID,
                            format!("{canon}={value:?} is not r or s; default r used"),
                        );
                    }
                }
            }
            ix::PCT => match value.parse::<u8>() {
                Ok(n) if n <= 100 && value.bytes().all(|b| b.is_ascii_digit()) => {
                    pct = n;
                    diags.info(
                        code::OBSOLETE_TAG,
                        "pct= is RFC 7489 only; RFC 9989 removed it",
                    );
                }
                _ => {
                    seen &= !bit;
                    diags.warn(
                        code::VALUE_INVALID,
                        format!("pct={value:?} is not an integer 0..100; default 100 used"),
                    );
                }
            },
            ix::RUA | ix::RUF | ix::FRUA | ix::FRUF => {
                let list = match index {
                    ix::RUA => &mut rua,
                    ix::RUF => &mut ruf,
                    ix::FRUA => &mut frua,
                    _ => &mut fruf,
                };
                // Built in place: a list returned by value and then moved here was reloaded
                // before its stores had landed (a measurable stall at this rate).
                let span = (at, at + value.len());
                parse_uri_list(canon, text, span, &classes, &mut diags, list);
                if list.is_empty() {
                    seen &= !bit;
                }
                if matches!(index, ix::FRUA | ix::FRUF) {
                    diags.info(
                        code::EXT_FORWARDER,
                        format!("{canon}=: non-standard DKIM2 forwarder tag"),
                    );
                }
            }
            ix::FO => match FailureOptions::parse(value) {
                Some(parsed) => fo = parsed,
                None => {
                    seen &= !bit;
                    diags.warn(
                        code::VALUE_INVALID,
                        format!("fo={value:?} is not a colon list of 0, 1, d, s; default 0 used"),
                    );
                }
            },
            ix::RF => {
                let items_ok = !value.is_empty()
                    && value.split(':').all(|f| {
                        let f = f.trim_matches(is_wsp);
                        !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if items_ok {
                    rf = if value == "afrf" {
                        Cow::Borrowed("afrf")
                    } else {
                        Cow::Owned(value.to_ascii_lowercase())
                    };
                    diags.info(
                        code::OBSOLETE_TAG,
                        "rf= is RFC 7489 only; RFC 9989 removed it",
                    );
                } else {
                    seen &= !bit;
                    diags.warn(
                        code::VALUE_INVALID,
                        format!("rf={value:?} is not a format list; default afrf used"),
                    );
                }
            }
            ix::RI => match value.parse::<u32>() {
                Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => {
                    ri = n;
                    diags.info(
                        code::OBSOLETE_TAG,
                        "ri= is RFC 7489 only; RFC 9989 removed it",
                    );
                }
                _ => {
                    seen &= !bit;
                    diags.warn(
                        code::VALUE_INVALID,
                        format!("ri={value:?} is not a 32-bit integer; default 86400 used"),
                    );
                }
            },
            ix::PSD => match Psd::from_token_lenient(value) {
                Some((v, case_differs)) => {
                    if case_differs {
                        diags.info(code::VALUE_CASE, format!("psd={value} read as psd={v}"));
                    }
                    psd = v;
                }
                None => {
                    seen &= !bit;
                    diags.warn(
                        code::VALUE_INVALID,
                        format!("psd={value:?} is not y, n or u; default u used"),
                    );
                }
            },
            ix::T => match TestMode::from_token_lenient(value) {
                Some((v, case_differs)) => {
                    if case_differs {
                        diags.info(code::VALUE_CASE, format!("t={value} read as t={v}"));
                    }
                    t = v;
                }
                None => {
                    seen &= !bit;
                    diags.warn(
                        code::VALUE_INVALID,
                        format!("t={value:?} is not y or n; default n used"),
                    );
                }
            },
            ix::FP => {
                diags.info(
                    code::EXT_FORWARDER,
                    "fp=: non-standard DKIM2 forwarder policy",
                );
                match parse_disposition("fp", value, &mut diags) {
                    Ok(d) => fp = Some(d),
                    Err(v) => {
                        seen &= !bit;
                        diags.warn(
                            code::VALUE_INVALID,
                            format!("fp={v:?} is not none, quarantine or reject; ignored"),
                        );
                    }
                }
            }
            // "v" is caught by the duplicate check above: it was seen first.
            _ => {}
        }
    }

    if seen & (1 << ix::FO) != 0 && ruf.is_empty() {
        diags.info(
            code::FO_WITHOUT_RUF,
            "fo= has no effect without a valid ruf=",
        );
    }

    // RFC 7489 §6.6.3 / RFC 9989 §4.10.1: a missing or invalid p (or an invalid sp/np) with at
    // least one valid rua URI acts as p=none; without one the record is unusable.
    let mut first_problem: Option<DmarcError> = None;
    for (tag, slot) in [("p", &p_slot), ("sp", &sp_slot), ("np", &np_slot)] {
        if let Slot::Invalid(v) = slot {
            let c = match tag {
                "p" => code::POLICY_INVALID,
                "sp" => code::SP_INVALID,
                _ => code::NP_INVALID,
            };
            diags.error(c, format!("{tag}={v:?} is not none, quarantine or reject"));
            first_problem.get_or_insert(DmarcError::PolicyInvalid {
                tag: Cow::Borrowed(tag),
                value: (*v).to_owned(),
            });
        }
    }
    if matches!(p_slot, Slot::Absent) {
        first_problem.get_or_insert(DmarcError::PolicyMissing);
    }
    let fallback = first_problem.is_some();
    if let Some(problem) = first_problem {
        if rua.is_empty() {
            return Err(Rejected::new(problem, diags));
        }
        let what = match &problem {
            DmarcError::PolicyInvalid { tag, value } => format!("{tag}={value:?} is invalid"),
            _ => "p= is missing".to_owned(),
        };
        diags.warn(
            code::POLICY_FALLBACK,
            format!("{what} but the record has a valid rua=, so it is treated as p=none (RFC 7489 §6.6.3, RFC 9989 §4.10.1)"),
        );
    }

    let valid = |s: &Slot| match s {
        Slot::Valid(d) if !fallback => Some(*d),
        _ => None,
    };
    let mut defaulted = Defaulted(0);
    let p = valid(&p_slot).unwrap_or(Disposition::None);
    defaulted.0 |= u32::from(fallback) << ix::P;
    // sp keeps its value under the fallback only if it was itself valid.
    let sp = match &sp_slot {
        Slot::Valid(d) => *d,
        _ => p,
    };
    defaulted.0 |= u32::from(!matches!(sp_slot, Slot::Valid(_))) << ix::SP;
    let np = match &np_slot {
        Slot::Valid(d) => *d,
        _ => sp,
    };
    defaulted.0 |= u32::from(!matches!(np_slot, Slot::Valid(_))) << ix::NP;
    defaulted.0 |= !seen & PLAIN_TAGS_MASK;
    Ok(Parsed {
        policy: DmarcRecord {
            v: Version,
            p,
            sp,
            np,
            adkim,
            aspf,
            pct,
            rua,
            ruf,
            fo,
            rf,
            ri,
            psd,
            t,
            fp,
            frua,
            fruf,
            defaulted,
        },
        diagnostics: diags,
    })
}

impl fmt::Display for DmarcRecord {
    /// The canonical record text: `v=DMARC1` then every tag that was not defaulted, in a fixed
    /// order. Parsing this text gives back an equal record.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=DMARC1")?;
        let d = self.defaulted;
        let list = |l: &UriList| l.to_string();
        for t in TAGS {
            if t == "v" || d.contains(t) {
                continue;
            }
            let value = match t {
                "p" => self.p.to_string(),
                "sp" => self.sp.to_string(),
                "np" => self.np.to_string(),
                "adkim" => self.adkim.to_string(),
                "aspf" => self.aspf.to_string(),
                "pct" => self.pct.to_string(),
                "rua" => list(&self.rua),
                "ruf" => list(&self.ruf),
                "fo" => self.fo.to_string(),
                "rf" => self.rf.to_string(),
                "ri" => self.ri.to_string(),
                "psd" => self.psd.to_string(),
                "t" => self.t.to_string(),
                "fp" => match self.fp {
                    Some(p) => p.to_string(),
                    None => continue,
                },
                "frua" => list(&self.frua),
                "fruf" => list(&self.fruf),
                _ => continue,
            };
            write!(f, "; {t}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
