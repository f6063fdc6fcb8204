//! Authorized Third-Party Signatures: RFC 6541 §4 (the query name) and §4.3 (the record).
//!
//! An author domain authorizes a third-party DKIM signer by publishing a TXT record at
//! `<label>._atps.<signer domain>`, where the label is the author domain hashed with the
//! algorithm the signature names in `atpsh=` and base32-encoded (RFC 4648), or the plain
//! author domain for `atpsh=none`. Implementations disagree on base32 padding (OpenDKIM's test
//! data publishes padded labels), so [`query_name`] builds either form and
//! [`query_names`] both.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha1::Digest;

use super::scan::Classes;
use super::tag::{self, Item};
use super::{Diagnostics, ErrorCode, ParseResult, Parsed, Rejected, is_domain_name, str_enum};

/// Stable diagnostic codes of this parser.
pub mod code {
    #![allow(missing_docs)]
    pub const VERSION_MISSING: &str = "atps.version.missing";
    pub const VERSION_INVALID: &str = "atps.version.invalid";
    pub const DOMAIN_INVALID: &str = "atps.d.invalid";
    pub const TAG_DUPLICATE: &str = "atps.tag.duplicate";
    pub const TAG_SYNTAX: &str = "atps.tag.syntax";
    pub const TAG_UNKNOWN: &str = "atps.tag.unknown";
    pub const MULTIPLE: &str = "atps.record.multiple";
}

str_enum! {
    /// The `atpsh=` hash of a DKIM signature (RFC 6541 §4.2).
    pub enum AtpsHash {
        /// The author domain unhashed.
        None => "none",
        /// SHA-1.
        Sha1 => "sha1",
        /// SHA-256.
        Sha256 => "sha256",
    }
}

/// A parsed ATPS record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AtpsRecord {
    /// `d=`: the authorized signing domain, when the record names it (lower-cased).
    pub d: Option<String>,
}

/// Why an ATPS record is unusable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtpsError {
    /// The record does not start with `v=`.
    VersionMissing,
    /// `v=` is not `ATPS1`.
    VersionInvalid {
        /// The value found.
        value: String,
    },
    /// `d=` is not a domain name.
    DomainInvalid {
        /// The value found.
        value: String,
    },
    /// A tag appears twice (RFC 6376 §3.2 tag-list rules).
    DuplicateTag {
        /// The tag.
        tag: String,
    },
    /// More than one ATPS record at the name.
    MultipleRecords {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for AtpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtpsError::VersionMissing => f.write_str("the record does not start with v=ATPS1"),
            AtpsError::VersionInvalid { value } => write!(f, "v={value:?} is not ATPS1"),
            AtpsError::DomainInvalid { value } => write!(f, "d={value:?} is not a domain name"),
            AtpsError::DuplicateTag { tag } => write!(f, "{tag}= appears twice"),
            AtpsError::MultipleRecords { count } => write!(f, "{count} ATPS records at one name"),
        }
    }
}

impl std::error::Error for AtpsError {}

impl ErrorCode for AtpsError {
    fn code(&self) -> &'static str {
        match self {
            AtpsError::VersionMissing => code::VERSION_MISSING,
            AtpsError::VersionInvalid { .. } => code::VERSION_INVALID,
            AtpsError::DomainInvalid { .. } => code::DOMAIN_INVALID,
            AtpsError::DuplicateTag { .. } => code::TAG_DUPLICATE,
            AtpsError::MultipleRecords { .. } => code::MULTIPLE,
        }
    }
}

/// Whether a joined TXT record is an ATPS record (first tag `v=ATPS1`).
pub fn is_candidate(text: &str) -> bool {
    let mut classes = Classes::empty();
    classes.index(text.as_bytes());
    matches!(tag::lex(text, &classes).next(), Some(Item::Tag { name, value, .. }) if name.eq_ignore_ascii_case("v") && value == "ATPS1")
}

super::txt_record! {
    /// Selects and parses the ATPS record among a name's joined TXT records.
    AtpsRecord,
    AtpsError,
    super::Pick::Unique,
    is_candidate,
}

/// Parses one ATPS record.
pub fn parse(text: &str) -> ParseResult<AtpsRecord, AtpsError> {
    let mut diags = Diagnostics::default();
    let mut classes = Classes::empty();
    classes.index(text.as_bytes());
    let mut items = tag::lex(text, &classes);
    if let Err(found) = tag::version(&mut items, "ATPS1", None, &mut diags) {
        let error = match found {
            Some(value) => AtpsError::VersionInvalid {
                value: value.to_owned(),
            },
            None => AtpsError::VersionMissing,
        };
        return Err(Rejected::new(error, diags));
    }
    let mut rec = AtpsRecord { d: None };
    for item in items {
        let Some((name, value, ..)) = item.tag(None, code::TAG_SYNTAX, &mut diags) else {
            continue;
        };
        if name.eq_ignore_ascii_case("v") {
            return Err(Rejected::new(
                AtpsError::DuplicateTag { tag: "v".into() },
                diags,
            ));
        }
        if !name.eq_ignore_ascii_case("d") {
            diags.info(code::TAG_UNKNOWN, format!("unknown tag {name}= ignored"));
            continue;
        }
        if rec.d.is_some() {
            return Err(Rejected::new(
                AtpsError::DuplicateTag { tag: "d".into() },
                diags,
            ));
        }
        if !is_domain_name(value) {
            return Err(Rejected::new(
                AtpsError::DomainInvalid {
                    value: value.to_owned(),
                },
                diags,
            ));
        }
        rec.d = Some(value.trim_end_matches('.').to_ascii_lowercase());
    }
    Ok(Parsed {
        policy: rec,
        diagnostics: diags,
    })
}

/// Why an ATPS query name cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryNameError {
    /// The signer domain is not a domain name.
    Signer,
    /// The author domain is not a domain name.
    Author,
    /// The result would exceed 253 octets (or `none` gives a label over 63).
    TooLong,
}

impl fmt::Display for QueryNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryNameError::Signer => "the signer domain is not a domain name",
            QueryNameError::Author => "the author domain is not a domain name",
            QueryNameError::TooLong => "the ATPS query name would be too long",
        })
    }
}

impl std::error::Error for QueryNameError {}

/// The base32 label of RFC 6541 §4.2 for `author` (lower-cased, no trailing dot), or the
/// author domain itself for [`AtpsHash::None`].
pub fn label(author: &str, hash: AtpsHash, padded: bool) -> String {
    let author = author.trim_end_matches('.').to_ascii_lowercase();
    let enc = if padded {
        &data_encoding::BASE32
    } else {
        &data_encoding::BASE32_NOPAD
    };
    match hash {
        AtpsHash::None => author,
        AtpsHash::Sha1 => enc.encode(&sha1::Sha1::digest(author.as_bytes())),
        AtpsHash::Sha256 => enc.encode(&sha2::Sha256::digest(author.as_bytes())),
    }
}

/// `<label>._atps.<signer>` (RFC 6541 §4.2), without a trailing dot.
pub fn query_name(
    signer: &str,
    author: &str,
    hash: AtpsHash,
    padded: bool,
) -> Result<String, QueryNameError> {
    if !is_domain_name(signer) {
        return Err(QueryNameError::Signer);
    }
    if !is_domain_name(author) {
        return Err(QueryNameError::Author);
    }
    let name = format!(
        "{}._atps.{}",
        label(author, hash, padded),
        signer.trim_end_matches('.').to_ascii_lowercase()
    );
    if name.len() > 253 || (hash != AtpsHash::None && name.split('.').any(|l| l.len() > 63)) {
        return Err(QueryNameError::TooLong);
    }
    Ok(name)
}

/// The distinct query names to try, padded form first (OpenDKIM's), then unpadded. SHA-1
/// digests need no padding, so they give one name.
pub fn query_names(
    signer: &str,
    author: &str,
    hash: AtpsHash,
) -> Result<Vec<String>, QueryNameError> {
    let padded = query_name(signer, author, hash, true)?;
    let unpadded = query_name(signer, author, hash, false)?;
    Ok(if padded == unpadded {
        vec![padded]
    } else {
        vec![padded, unpadded]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // (section, record, Ok(d) | Err(code))
        type Case = (
            &'static str,
            &'static str,
            Result<Option<&'static str>, &'static str>,
        );
        let cases: &[Case] = &[
            ("6541 §4.3 minimal", "v=ATPS1", Ok(None)),
            (
                "6541 §4.3 with d",
                "v=ATPS1; d=Signer.Example.NET",
                Ok(Some("signer.example.net")),
            ),
            ("6541 §4.3 trailing ;", "v=ATPS1;", Ok(None)),
            ("unknown tag ignored", "v=ATPS1; x=y", Ok(None)),
            (
                "6541 §4.3 v missing",
                "d=example.net",
                Err(code::VERSION_MISSING),
            ),
            ("6541 §4.3 v wrong", "v=ATPS2", Err(code::VERSION_INVALID)),
            (
                "bad d",
                "v=ATPS1; d=not a domain",
                Err(code::DOMAIN_INVALID),
            ),
            (
                "duplicate d",
                "v=ATPS1; d=a.example; d=b.example",
                Err(code::TAG_DUPLICATE),
            ),
        ];
        println!("atps table: {} cases", cases.len());
        for (section, input, want) in cases {
            match (parse(input), want) {
                (Ok(p), Ok(d)) => assert_eq!(p.policy.d.as_deref(), *d, "[{section}]"),
                (Err(r), Err(c)) => assert_eq!(r.error.code(), *c, "[{section}]"),
                (got, _) => panic!("[{section}] {input:?}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn query_names_both_hashes_and_padding() {
        // OpenDKIM's test data: SHA-256 of example.com, padded, under example.net.
        assert_eq!(
            query_name("example.net", "example.com", AtpsHash::Sha256, true).unwrap(),
            "UN42N5XOV642KXRXRQIYANHCOUPGQL5LT4WTBKYT2IJFLBWODFDQ====._atps.example.net"
        );
        assert_eq!(
            query_name("example.net", "Example.COM.", AtpsHash::Sha256, false).unwrap(),
            "UN42N5XOV642KXRXRQIYANHCOUPGQL5LT4WTBKYT2IJFLBWODFDQ._atps.example.net"
        );
        // A SHA-1 digest (20 bytes) is a multiple of 5 bytes: base32 has no padding.
        let sha1 = query_names("example.net", "example.com", AtpsHash::Sha1).unwrap();
        assert_eq!(
            sha1,
            vec!["BSVPESVRUDBTIQGANL7JTX4YMNS3A6A7._atps.example.net".to_owned()]
        );
        assert_eq!(
            query_names("example.net", "example.com", AtpsHash::Sha256)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            query_name("example.net", "example.com", AtpsHash::None, true).unwrap(),
            "example.com._atps.example.net"
        );
        assert_eq!(
            query_name("bad..net", "example.com", AtpsHash::Sha1, true),
            Err(QueryNameError::Signer)
        );
        assert_eq!(
            query_name("example.net", "", AtpsHash::Sha1, true),
            Err(QueryNameError::Author)
        );
        assert_eq!(AtpsHash::from_token("sha256"), Some(AtpsHash::Sha256));
    }

    #[test]
    fn selection() {
        assert!(
            from_txt(["v=spf1 -all", "v=ATPS1; d=example.net"])
                .unwrap()
                .is_ok()
        );
        assert!(from_txt(["v=spf1 -all"]).is_none());
        assert!(from_txt(["v=ATPS1", "v=ATPS1"]).unwrap().is_err());
    }
}
