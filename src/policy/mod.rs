//! Pure parsers for the DNS records a mail filter asks about.
//!
//! Text in, typed policy and diagnostics out: nothing here does I/O, nothing here is async, and
//! nothing here imports from the rest of the crate, so the cache can call these parsers when an
//! answer arrives and keep the parsed value instead of the text (the way mail-auth caches
//! `Arc<Dmarc>`).
//!
//! Every parser follows one contract:
//! - it returns [`Parsed`] (the policy plus a list of [`Diagnostic`]s) or [`Rejected`] (a typed
//!   error plus the diagnostics gathered before the record was found invalid);
//! - it is lenient where the RFCs allow and strict where they do not, and every leniency it
//!   takes leaves a diagnostic with a stable [`Diagnostic::code`];
//! - it never panics, whatever the bytes (checked by property tests and `fuzz/`).
//!
//! Which TXT record of a name is "the" record is decided once for every record kind by
//! [`from_txt`] (the kind's [`TxtRecord`] impl says how it is picked), after the strings of each
//! TXT record have been joined ([`join_txt`]). [`orgdomain`] (organizational domains) is pure
//! too and lives here.

pub mod atps;
pub mod dkim;
pub mod dmarc;
pub mod orgdomain;
mod scan;
pub mod spf;
mod tag;
pub mod tlsa;
pub mod trust_anchor;

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How much a diagnostic matters to an operator reading `mailpolicyd parse` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Noted for completeness: legal, or a leniency that cannot change the meaning.
    Info,
    /// The record works, but not as its owner probably meant, or not everywhere.
    Warning,
    /// Part of the record (or all of it) was discarded.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding about a record. `code` is stable (documented in the README) and safe to match
/// on; `message` is for people and may change wording between releases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// How much it matters.
    pub severity: Severity,
    /// A stable dotted code such as `dmarc.p.invalid`.
    pub code: Cow<'static, str>,
    /// A human explanation naming the offending value.
    pub message: Cow<'static, str>,
}

impl Diagnostic {
    /// A new diagnostic with a static code.
    pub fn new(
        severity: Severity,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Diagnostic {
            severity,
            code: Cow::Borrowed(code),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] {}", self.severity, self.code, self.message)
    }
}

/// A diagnostics list with shorthands for the three severities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Records an informational finding. (The three recorders are marked cold: records are
    /// mostly clean, and the parsers' hot loops are laid out without their formatting.)
    #[cold]
    pub fn info(&mut self, code: &'static str, message: impl Into<Cow<'static, str>>) {
        self.0.push(Diagnostic::new(Severity::Info, code, message));
    }
    /// Records a warning.
    #[cold]
    pub fn warn(&mut self, code: &'static str, message: impl Into<Cow<'static, str>>) {
        self.0
            .push(Diagnostic::new(Severity::Warning, code, message));
    }
    /// Records an error (something was discarded).
    #[cold]
    pub fn error(&mut self, code: &'static str, message: impl Into<Cow<'static, str>>) {
        self.0.push(Diagnostic::new(Severity::Error, code, message));
    }
    /// Whether a diagnostic with this code was recorded.
    pub fn has(&self, code: &str) -> bool {
        self.0.iter().any(|d| d.code == code)
    }
    /// The recorded diagnostics.
    pub fn as_slice(&self) -> &[Diagnostic] {
        &self.0
    }
}

/// A successfully parsed record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parsed<T> {
    /// The typed policy.
    pub policy: T,
    /// What the parser noticed on the way.
    pub diagnostics: Diagnostics,
}

/// A record that could not be used, with the reason and everything noticed before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected<E> {
    /// Why the record is unusable.
    pub error: E,
    /// Diagnostics gathered up to the point of rejection, the error's own included.
    pub diagnostics: Diagnostics,
}

impl<E: ErrorCode> Rejected<E> {
    /// Builds a rejection, appending the error itself as the last diagnostic so that a
    /// reader of the diagnostics alone sees why the record was refused.
    pub fn new(error: E, mut diagnostics: Diagnostics) -> Self {
        diagnostics.error(error.code(), error.to_string());
        Rejected { error, diagnostics }
    }
}

/// The outcome of every parser.
pub type ParseResult<T, E> = Result<Parsed<T>, Rejected<E>>;

/// A parser error with a stable code, shared by the per-record error enums.
pub trait ErrorCode: fmt::Display {
    /// The stable dotted code, e.g. `dmarc.version.missing`.
    fn code(&self) -> &'static str;
}

/// Joins the character-strings of one TXT record into the record text (RFC 7208 §3.3,
/// RFC 6376 §3.6.2.2, RFC 7489 §6.6.3: concatenated with no separator).
///
/// Bytes that are not UTF-8 are replaced by U+FFFD, which no record grammar accepts, so they
/// surface as syntax errors at the place they occur instead of being dropped silently.
pub fn join_txt<S: AsRef<[u8]>>(strings: &[S]) -> String {
    let len = strings.iter().map(|s| s.as_ref().len()).sum();
    let mut bytes = Vec::with_capacity(len);
    for s in strings {
        bytes.extend_from_slice(s.as_ref());
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// The result of picking a record among the TXT records of one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection<'a> {
    /// No TXT record has the version prefix: the name publishes no such policy.
    None,
    /// Exactly one record has it.
    One(&'a str),
    /// Two or more records have it: an error for every record kind we serve (RFC 7208 §4.5,
    /// RFC 7489 §6.6.3, RFC 9989 §4.10).
    Multiple(usize),
}

/// Picks the record whose text satisfies `is_candidate` among already-joined TXT records.
pub fn select<'a, I>(records: I, is_candidate: impl Fn(&str) -> bool) -> Selection<'a>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut found = None;
    let mut count = 0usize;
    for r in records {
        if is_candidate(r) {
            count += 1;
            if found.is_none() {
                found = Some(r);
            }
        }
    }
    match (count, found) {
        (1, Some(r)) => Selection::One(r),
        (0, _) | (_, None) => Selection::None,
        (n, Some(_)) => Selection::Multiple(n),
    }
}

/// How the record is picked among a name's TXT records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Only records with the version prefix ([`TxtRecord::is_candidate`]) count, and exactly
    /// one must have it (DMARC, SPF, ATPS).
    Unique,
    /// Every TXT record at the name is a record of this kind, whether or not it parses; the one
    /// valid record is used and the others are named in a diagnostic with code `ignored`; with
    /// none valid, the first rejection is the answer (DKIM keys at a `_domainkey` name).
    OneValid {
        /// The diagnostic code naming the ignored records.
        ignored: &'static str,
        /// What a record is called in that diagnostic (`key`).
        noun: &'static str,
    },
}

/// A record kind that is published as a TXT record and found by [`from_txt`].
pub trait TxtRecord: Sized {
    /// Why a record of this kind is unusable.
    type Error: ErrorCode;
    /// How the record is picked among a name's TXT records.
    const PICK: Pick;
    /// Whether a joined TXT record carries this kind's version prefix (used with
    /// [`Pick::Unique`]).
    fn is_candidate(text: &str) -> bool;
    /// Parses one record (already selected and joined).
    fn parse(text: &str) -> ParseResult<Self, Self::Error>;
    /// The error for `count` (two or more) records where one is allowed.
    fn multiple(count: usize) -> Self::Error;
}

/// Selects and parses the record of kind `R` among a name's joined TXT records, the way
/// [`R::PICK`](TxtRecord::PICK) says. `None` means the name publishes no such record; two or
/// more where one is allowed are an error (RFC 7208 §4.5, RFC 7489 §6.6.3, RFC 9989 §4.10).
pub fn from_txt<'a, R, I>(records: I) -> Option<ParseResult<R, R::Error>>
where
    R: TxtRecord,
    I: IntoIterator<Item = &'a str>,
{
    pick_txt(records).map(|p| p.result)
}

/// What [`pick_txt`] found among a name's TXT records: the parse result, and which record it
/// is the result of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picked<T, E> {
    /// The position, among the records given, of the one record selected and parsed (the
    /// valid one, or the invalid one whose rejection is the result); `None` when the result is
    /// about no single record (two or more where one is allowed).
    pub index: Option<usize>,
    /// The parsed record, or why it cannot be used.
    pub result: ParseResult<T, E>,
}

/// [`from_txt`], also saying which record was selected ([`Picked::index`]), so a caller can
/// hand out the selected record's text as published.
pub fn pick_txt<'a, R, I>(records: I) -> Option<Picked<R, R::Error>>
where
    R: TxtRecord,
    I: IntoIterator<Item = &'a str>,
{
    let multiple = |count| {
        Some(Picked {
            index: None,
            result: Err(Rejected::new(R::multiple(count), Diagnostics::default())),
        })
    };
    let (ignored, noun) = match R::PICK {
        Pick::Unique => {
            let mut found = None;
            let mut count = 0usize;
            for (i, r) in records.into_iter().enumerate() {
                if R::is_candidate(r) {
                    count += 1;
                    if found.is_none() {
                        found = Some((i, r));
                    }
                }
            }
            return match (count, found) {
                (1, Some((index, r))) => Some(Picked {
                    index: Some(index),
                    result: R::parse(r),
                }),
                (0, _) | (_, None) => None,
                (count, Some(_)) => multiple(count),
            };
        }
        Pick::OneValid { ignored, noun } => (ignored, noun),
    };
    let mut total = 0usize;
    let mut valid: Option<(usize, Parsed<R>)> = None;
    let mut valid_count = 0usize;
    let mut rejected: Option<(usize, Rejected<R::Error>)> = None;
    for (i, r) in records.into_iter().enumerate() {
        total += 1;
        match R::parse(r) {
            Ok(p) => {
                valid_count += 1;
                valid.get_or_insert((i, p));
            }
            Err(e) => {
                rejected.get_or_insert((i, e));
            }
        }
    }
    let others = |diags: &mut Diagnostics| {
        if total > 1 {
            let n = total - 1;
            diags.warn(
                ignored,
                format!(
                    "{n} other TXT record{} at this name {} not a valid {noun} record, ignored",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "is" } else { "are" }
                ),
            );
        }
    };
    match (valid_count, valid, rejected) {
        (0, _, None) => None,
        (0, _, Some((index, mut e))) => {
            others(&mut e.diagnostics);
            Some(Picked {
                index: Some(index),
                result: Err(e),
            })
        }
        (1, Some((index, mut p)), _) => {
            others(&mut p.diagnostics);
            Some(Picked {
                index: Some(index),
                result: Ok(p),
            })
        }
        (count, _, _) => multiple(count),
    }
}

/// Declares a record module's `from_txt` (the doc comment given), `pick_txt`, and its record type's
/// [`TxtRecord`] impl over the module's `parse`, so each module states only what differs: the
/// record and error types, the [`Pick`] rule and the candidate test.
macro_rules! txt_record {
    ($(#[$m:meta])* $rec:ident, $err:ident, $pick:expr, $candidate:expr $(,)?) => {
        $(#[$m])*
        pub fn from_txt<'a, I>(records: I) -> Option<$crate::policy::ParseResult<$rec, $err>>
        where
            I: IntoIterator<Item = &'a str>,
        {
            $crate::policy::from_txt(records)
        }

        /// [`from_txt`], also saying which of the records was selected (see
        /// [`Picked`](crate::policy::Picked)).
        pub fn pick_txt<'a, I>(records: I) -> Option<$crate::policy::Picked<$rec, $err>>
        where
            I: IntoIterator<Item = &'a str>,
        {
            $crate::policy::pick_txt(records)
        }

        impl $crate::policy::TxtRecord for $rec {
            type Error = $err;
            const PICK: $crate::policy::Pick = $pick;
            fn is_candidate(text: &str) -> bool {
                ($candidate)(text)
            }
            fn parse(text: &str) -> $crate::policy::ParseResult<Self, $err> {
                parse(text)
            }
            fn multiple(count: usize) -> $err {
                $err::MultipleRecords { count }
            }
        }
    };
}
pub(crate) use txt_record;

/// Declares a closed enum of record tokens (`none`, `quarantine`, ...) with `as_str`,
/// `from_token` (exact match), `Display`, and serde as the token string, so JSON and postcard
/// carry the same words the records use.
macro_rules! str_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident { $( $(#[$vm:meta])* $var:ident => $s:literal ),+ $(,)? }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vm])* $var ),+ }

        impl $name {
            /// The token as written in records and JSON.
            pub const fn as_str(self) -> &'static str {
                match self { $( $name::$var => $s ),+ }
            }
            /// Parses the exact, case-sensitive token.
            pub fn from_token(s: &str) -> Option<Self> {
                match s { $( $s => Some($name::$var), )+ _ => None }
            }
            /// Parses the token ignoring ASCII case; the flag says whether the case differed.
            pub fn from_token_lenient(s: &str) -> Option<(Self, bool)> {
                if let Some(v) = Self::from_token(s) {
                    return Some((v, false));
                }
                $( if s.eq_ignore_ascii_case($s) { return Some(($name::$var, true)); } )+
                None
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::from_token(&s)
                    .ok_or_else(|| serde::de::Error::unknown_variant(&s, &[$($s),+]))
            }
        }
    };
}
pub(crate) use str_enum;

/// Serde for byte strings: base64 (DKIM keys) or lower-case hex (TLSA data) in
/// human-readable formats such as JSON, raw bytes in binary ones such as postcard.
pub(crate) mod bytes_as {
    use data_encoding::Encoding;
    use serde::{Deserialize, Deserializer, Serializer};

    fn ser<S: Serializer>(enc: &Encoding, v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&enc.encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    fn de<'de, D: Deserializer<'de>>(enc: &Encoding, d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            enc.decode(s.as_bytes()).map_err(serde::de::Error::custom)
        } else {
            Ok(serde_bytes_vec(d)?)
        }
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }

    /// Base64 in JSON.
    pub mod base64 {
        use super::*;
        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            ser(&data_encoding::BASE64, v, s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            de(&data_encoding::BASE64, d)
        }
    }

    /// Lower-case hex in JSON.
    pub mod hex {
        use super::*;
        pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            ser(&data_encoding::HEXLOWER_PERMISSIVE, v, s)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            de(&data_encoding::HEXLOWER_PERMISSIVE, d)
        }
    }
}

/// RFC 5234 WSP.
pub(crate) fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 6376 FWS, taken leniently: WSP and bare CR/LF.
pub(crate) fn is_fws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Whether `s` is a syntactically plausible DNS domain name as published in a record: one or
/// more dot-separated labels of letters, digits, `-` and `_`, each 1..=63 octets, at most 253
/// octets in all, an optional trailing dot.
pub fn is_domain_name(s: &str) -> bool {
    scan::is_domain_name(s.as_bytes())
}

/// Reports a table test: how many of `cases` rows passed, then fails naming every failure.
#[cfg(test)]
pub(crate) fn assert_table(name: &str, cases: usize, failures: &[String]) {
    println!(
        "{name} table: {} passed, {} failed",
        cases - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_concatenates_without_separator() {
        // RFC 7208 §3.3: strings are concatenated with no spaces added.
        assert_eq!(
            join_txt(&["v=spf1 ip4:192.0.2.0/24", " -all"]),
            "v=spf1 ip4:192.0.2.0/24 -all"
        );
        assert_eq!(join_txt(&["v=DKIM1; p=AB", "CD"]), "v=DKIM1; p=ABCD");
        assert_eq!(join_txt::<&str>(&[]), "");
    }

    #[test]
    fn join_marks_invalid_utf8() {
        let s = join_txt(&[&b"v=spf1 \xff"[..]]);
        assert!(s.contains('\u{FFFD}'));
    }

    #[test]
    fn select_one_none_multiple() {
        let is_spf = |s: &str| s.starts_with("v=spf1");
        assert_eq!(
            select(["a", "v=spf1 -all"], is_spf),
            Selection::One("v=spf1 -all")
        );
        assert_eq!(select(["a", "b"], is_spf), Selection::None);
        assert_eq!(
            select(["v=spf1 a", "v=spf1 -all"], is_spf),
            Selection::Multiple(2)
        );
    }

    #[test]
    fn pick_txt_names_the_selected_record() {
        use crate::policy::{dkim, spf};
        // Unique: the one candidate, wherever it is; none; two (no record selected).
        let p = spf::pick_txt(["x=1", "v=spf1 -all", "y"]).unwrap();
        assert_eq!((p.index, p.result.is_ok()), (Some(1), true));
        let p = spf::pick_txt(["a", "v=spf1 ip4:999.0.0.1 -all"]).unwrap();
        assert_eq!((p.index, p.result.is_ok()), (Some(1), false));
        assert!(spf::pick_txt(["a", "b"]).is_none());
        let p = spf::pick_txt(["v=spf1 a", "v=spf1 -all"]).unwrap();
        assert_eq!((p.index, p.result.is_ok()), (None, false));
        // OneValid: the valid key after an invalid one; with none valid, the first rejected.
        let key = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
        let p = dkim::pick_txt(["junk", key]).unwrap();
        assert_eq!((p.index, p.result.is_ok()), (Some(1), true));
        let p = dkim::pick_txt(["junk", "more junk"]).unwrap();
        assert_eq!((p.index, p.result.is_ok()), (Some(0), false));
        let p = dkim::pick_txt([key, key]).unwrap();
        assert_eq!(p.index, None);
        // from_txt is pick_txt's result.
        assert_eq!(
            spf::from_txt(["x", "v=spf1 -all"]),
            spf::pick_txt(["x", "v=spf1 -all"]).map(|p| p.result)
        );
    }

    #[test]
    fn domain_names() {
        assert!(is_domain_name("example.com"));
        assert!(is_domain_name("_dmarc.example.com."));
        assert!(!is_domain_name(""));
        assert!(!is_domain_name("a..b"));
        assert!(!is_domain_name(&format!("{}.com", "a".repeat(64))));
        assert!(!is_domain_name("exa mple.com"));
    }
}
