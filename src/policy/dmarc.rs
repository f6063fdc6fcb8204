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

use super::tag::{self, Item};
use super::{Diagnostics, ErrorCode, ParseResult, Parsed, Rejected, is_wsp, str_enum};

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
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReportUri {
    /// The URI as published.
    pub uri: String,
    /// The RFC 7489 maximum report size in bytes (obsolete in RFC 9989).
    pub max_size: Option<u64>,
}

impl fmt::Display for ReportUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)?;
        if let Some(n) = self.max_size {
            write!(f, "!{n}")?;
        }
        Ok(())
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
        for item in value.split(':') {
            let slot = match item.trim_matches(is_wsp) {
                "0" => &mut fo.all,
                "1" => &mut fo.any,
                "d" | "D" => &mut fo.dkim,
                "s" | "S" => &mut fo.spf,
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

/// The index in [`TAGS`] of a tag name, ignoring ASCII case. Dispatches on length first: this
/// runs once per tag of every record parsed.
fn tag_index(name: &str) -> Option<usize> {
    let candidates: &[usize] = match name.len() {
        1 => &[0, 12, 16],
        2 => &[1, 2, 8, 9, 10, 13],
        3 => &[5, 6, 7, 11],
        4 => &[4, 14, 15],
        5 => &[3],
        _ => return None,
    };
    candidates
        .iter()
        .copied()
        .find(|&i| TAGS[i].eq_ignore_ascii_case(name))
}

/// Bits of the tags whose absence is recorded directly (`p`, `sp`, `np` are decided with the
/// p=none fallback, and `v` is always present).
const PLAIN_TAGS_MASK: u32 = ((1 << 16) - 1) & !0b111;

impl Defaulted {
    /// Whether `tag` holds its default.
    pub fn contains(self, tag: &str) -> bool {
        tag_bit(tag).is_some_and(|b| self.0 & b != 0)
    }
    fn set(&mut self, tag: &str, on: bool) {
        if let Some(b) = tag_bit(tag) {
            if on {
                self.0 |= b;
            } else {
                self.0 &= !b;
            }
        }
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
    pub rua: Vec<ReportUri>,
    /// Failure report URIs.
    pub ruf: Vec<ReportUri>,
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
    pub frua: Vec<ReportUri>,
    /// DKIM2 forwarder failure report URIs (extension).
    pub fruf: Vec<ReportUri>,
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

fn parse_disposition(
    tag: &'static str,
    value: &str,
    diags: &mut Diagnostics,
) -> Result<Disposition, String> {
    match Disposition::from_token_lenient(value) {
        Some((d, case_differs)) => {
            if case_differs {
                diags.info(code::VALUE_CASE, format!("{tag}={value} read as {tag}={d}"));
            }
            Ok(d)
        }
        None => Err(value.to_owned()),
    }
}

/// Parses an RFC 7489 / RFC 9989 reporting URI list. Invalid entries are dropped with a
/// diagnostic; the caller learns how many valid ones remain from the list length.
fn parse_uri_list(tag: &'static str, value: &str, diags: &mut Diagnostics) -> Vec<ReportUri> {
    let mut out = Vec::new();
    for raw in value.split(',') {
        let raw = trim_wsp(raw);
        let Some(scan) = scan_uri(raw) else {
            diags.warn(
                code::URI_INVALID,
                format!("{tag}: {raw:?} is not a valid URI, ignored"),
            );
            continue;
        };
        let (uri, size) = match scan.bang {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        let max_size = match size {
            None => None,
            Some(s) => match parse_size(s) {
                Some(n) => {
                    diags.info(
                        code::URI_SIZE_OBSOLETE,
                        format!("{tag}: size limit !{s} is obsolete in RFC 9989 and ignored by reporters"),
                    );
                    Some(n)
                }
                None => {
                    diags.warn(
                        code::URI_SIZE_INVALID,
                        format!("{tag}: size limit !{s} is not a number with an optional k/m/g/t unit, ignored"),
                    );
                    None
                }
            },
        };
        out.push(ReportUri {
            uri: uri.to_owned(),
            max_size,
        });
    }
    if out.is_empty() {
        diags.warn(code::URI_NONE_VALID, format!("{tag} holds no valid URI"));
    }
    out
}

fn trim_wsp(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b.iter().take_while(|c| matches!(c, b' ' | b'\t')).count();
    let end = b.len()
        - b[start..]
            .iter()
            .rev()
            .take_while(|c| matches!(c, b' ' | b'\t'))
            .count();
    &s[start..end]
}

/// Where a valid URI's optional `!size` suffix starts.
struct UriScan {
    bang: Option<usize>,
}

/// RFC 3986 `scheme ":" hier-part`, with the RFC 7489 rule that `,` and `!` must be encoded (the
/// first `!` starts the obsolete size suffix), and for `mailto:` an address with a local part
/// and a domain. One pass over the bytes; `None` when not a valid URI.
fn scan_uri(s: &str) -> Option<UriScan> {
    let b = s.as_bytes();
    let (mut colon, mut query, mut at, mut bang) = (None, None, None, None);
    for (i, &c) in b.iter().enumerate() {
        match colon {
            None => match c {
                b':' if i > 0 => colon = Some(i),
                c if i == 0 && c.is_ascii_alphabetic() => {}
                c if i > 0 && (c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) => {}
                _ => return None,
            },
            Some(_) => match c {
                b'!' => {
                    bang = Some(i);
                    break;
                }
                b'?' if query.is_none() => query = Some(i),
                b'@' if query.is_none() => at = Some(i),
                b';' => return None,
                c if !c.is_ascii_graphic() => return None,
                _ => {}
            },
        }
    }
    let colon = colon?;
    let end = bang.unwrap_or(b.len());
    if end == colon + 1 {
        return None;
    }
    if s[..colon].eq_ignore_ascii_case("mailto") {
        let at = at?;
        let addr_end = query.unwrap_or(end);
        if at == colon + 1 || !super::is_domain_name(&s[at + 1..addr_end]) {
            return None;
        }
    }
    Some(UriScan { bang })
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
enum Slot {
    Absent,
    Valid(Disposition),
    Invalid(String),
}

/// Parses one DMARC record (already selected and joined).
pub fn parse(text: &str) -> ParseResult<DmarcRecord, DmarcError> {
    let mut diags = Diagnostics::default();
    let mut items = tag::lex(text);

    // RFC 9989 §4.7: v must be the first tag, value exactly "DMARC1".
    match items.next() {
        Some(Item::Tag { name, value }) if name.eq_ignore_ascii_case("v") => {
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

    let mut rec = DmarcRecord {
        v: Version,
        p: Disposition::None,
        sp: Disposition::None,
        np: Disposition::None,
        adkim: Alignment::Relaxed,
        aspf: Alignment::Relaxed,
        pct: 100,
        rua: Vec::new(),
        ruf: Vec::new(),
        fo: FailureOptions::default(),
        rf: Cow::Borrowed("afrf"),
        ri: 86400,
        psd: Psd::Unknown,
        t: TestMode::No,
        fp: None,
        frua: Vec::new(),
        fruf: Vec::new(),
        defaulted: Defaulted(0),
    };
    let (mut p, mut sp, mut np) = (Slot::Absent, Slot::Absent, Slot::Absent);
    let mut seen: u32 = tag_bit("v").unwrap_or(0);

    for item in items {
        let (name, value) = match item {
            Item::Tag { name, value } => (name, value),
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
        let Some(index) = tag_index(name) else {
            diags.info(code::TAG_UNKNOWN, format!("unknown tag {name}= ignored"));
            continue;
        };
        let canon = TAGS[index];
        if canon != name {
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
        match canon {
            "p" | "sp" | "np" => {
                let slot = match parse_disposition(canon, value, &mut diags) {
                    Ok(d) => Slot::Valid(d),
                    Err(v) => Slot::Invalid(v),
                };
                match canon {
                    "p" => p = slot,
                    "sp" => sp = slot,
                    _ => np = slot,
                }
            }
            "adkim" | "aspf" => {
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
                        if canon == "adkim" {
                            rec.adkim = a;
                        } else {
                            rec.aspf = a;
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
            "pct" => match value.parse::<u8>() {
                Ok(n) if n <= 100 && value.bytes().all(|b| b.is_ascii_digit()) => {
                    rec.pct = n;
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
            "rua" | "ruf" | "frua" | "fruf" => {
                let list = parse_uri_list(canon, value, &mut diags);
                if list.is_empty() {
                    seen &= !bit;
                }
                match canon {
                    "rua" => rec.rua = list,
                    "ruf" => rec.ruf = list,
                    "frua" => rec.frua = list,
                    _ => rec.fruf = list,
                }
                if canon.starts_with('f') {
                    diags.info(
                        code::EXT_FORWARDER,
                        format!("{canon}=: non-standard DKIM2 forwarder tag"),
                    );
                }
            }
            "fo" => match FailureOptions::parse(value) {
                Some(fo) => rec.fo = fo,
                None => {
                    seen &= !bit;
                    diags.warn(
                        code::VALUE_INVALID,
                        format!("fo={value:?} is not a colon list of 0, 1, d, s; default 0 used"),
                    );
                }
            },
            "rf" => {
                let items_ok = !value.is_empty()
                    && value.split(':').all(|f| {
                        let f = f.trim_matches(is_wsp);
                        !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if items_ok {
                    rec.rf = if value == "afrf" {
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
            "ri" => match value.parse::<u32>() {
                Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => {
                    rec.ri = n;
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
            "psd" => match Psd::from_token_lenient(value) {
                Some((v, case_differs)) => {
                    if case_differs {
                        diags.info(code::VALUE_CASE, format!("psd={value} read as psd={v}"));
                    }
                    rec.psd = v;
                }
                None => {
                    seen &= !bit;
                    diags.warn(
                        code::VALUE_INVALID,
                        format!("psd={value:?} is not y, n or u; default u used"),
                    );
                }
            },
            "t" => match TestMode::from_token_lenient(value) {
                Some((v, case_differs)) => {
                    if case_differs {
                        diags.info(code::VALUE_CASE, format!("t={value} read as t={v}"));
                    }
                    rec.t = v;
                }
                None => {
                    seen &= !bit;
                    diags.warn(
                        code::VALUE_INVALID,
                        format!("t={value:?} is not y or n; default n used"),
                    );
                }
            },
            "fp" => {
                diags.info(
                    code::EXT_FORWARDER,
                    "fp=: non-standard DKIM2 forwarder policy",
                );
                match parse_disposition("fp", value, &mut diags) {
                    Ok(d) => rec.fp = Some(d),
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

    if seen & tag_bit("fo").unwrap_or(0) != 0 && rec.ruf.is_empty() {
        diags.info(
            code::FO_WITHOUT_RUF,
            "fo= has no effect without a valid ruf=",
        );
    }

    // RFC 7489 §6.6.3 / RFC 9989 §4.10.1: a missing or invalid p (or an invalid sp/np) with at
    // least one valid rua URI acts as p=none; without one the record is unusable.
    let mut first_problem: Option<DmarcError> = None;
    for (tag, slot) in [("p", &p), ("sp", &sp), ("np", &np)] {
        if let Slot::Invalid(v) = slot {
            let c = match tag {
                "p" => code::POLICY_INVALID,
                "sp" => code::SP_INVALID,
                _ => code::NP_INVALID,
            };
            diags.error(c, format!("{tag}={v:?} is not none, quarantine or reject"));
            first_problem.get_or_insert(DmarcError::PolicyInvalid {
                tag: Cow::Borrowed(tag),
                value: v.clone(),
            });
        }
    }
    if matches!(p, Slot::Absent) {
        first_problem.get_or_insert(DmarcError::PolicyMissing);
    }
    let fallback = first_problem.is_some();
    if let Some(problem) = first_problem {
        if rec.rua.is_empty() {
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
    rec.p = valid(&p).unwrap_or(Disposition::None);
    defaulted.set("p", fallback);
    // sp keeps its value under the fallback only if it was itself valid.
    rec.sp = match &sp {
        Slot::Valid(d) => *d,
        _ => rec.p,
    };
    defaulted.set("sp", !matches!(sp, Slot::Valid(_)));
    rec.np = match &np {
        Slot::Valid(d) => *d,
        _ => rec.sp,
    };
    defaulted.set("np", !matches!(np, Slot::Valid(_)));
    defaulted.0 |= !seen & PLAIN_TAGS_MASK;
    rec.defaulted = defaulted;
    Ok(Parsed {
        policy: rec,
        diagnostics: diags,
    })
}

impl fmt::Display for DmarcRecord {
    /// The canonical record text: `v=DMARC1` then every tag that was not defaulted, in a fixed
    /// order. Parsing this text gives back an equal record.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=DMARC1")?;
        let d = self.defaulted;
        let list = |l: &[ReportUri]| {
            l.iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
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
