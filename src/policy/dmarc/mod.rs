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

mod parse;
mod uri;

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ErrorCode, scan, str_enum};
use parse::{TAGS, tag_bit};
use uri::trim_wsp;

pub use parse::parse;
pub use uri::{MAX_REPORT_URIS, ReportUri, UriList};

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

super::txt_record! {
    /// Selects and parses the DMARC record among a name's joined TXT records. `None` means the
    /// name publishes no DMARC record.
    DmarcRecord,
    DmarcError,
    super::Pick::Unique,
    is_candidate,
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
