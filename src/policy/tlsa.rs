//! TLSA records: RFC 6698 §2 (fields, presentation format), RFC 7671 (operational updates),
//! RFC 7672 §3.1 (which records an SMTP client may use for DANE).
//!
//! Usage, selector and matching type are open newtypes over the octet (as NLnet Labs'
//! `domain` does), so an unassigned code point survives a round trip instead of being folded
//! into "unknown". A record is built from hickory's rdata or from presentation text
//! (`3 1 1 <hex>`); either way [`check`] says whether an SMTP client can use it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Diagnostics, ErrorCode, ParseResult, Parsed, Rejected};

/// Stable diagnostic codes of this parser.
pub mod code {
    #![allow(missing_docs)]
    pub const SYNTAX: &str = "tlsa.syntax";
    pub const HEX: &str = "tlsa.data.hex";
    pub const DATA_EMPTY: &str = "tlsa.data.empty";
    pub const DATA_LENGTH: &str = "tlsa.data.length";
    pub const PKIX_USAGE: &str = "tlsa.usage.pkix_in_smtp";
    pub const USAGE_UNKNOWN: &str = "tlsa.usage.unknown";
    pub const SELECTOR_UNKNOWN: &str = "tlsa.selector.unknown";
    pub const MATCHING_UNKNOWN: &str = "tlsa.matching.unknown";
    pub const FULL_DATA: &str = "tlsa.matching.full";
}

/// Certificate usage (RFC 6698 §2.1.1, RFC 7218 acronyms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CertUsage(pub u8);

impl CertUsage {
    /// PKIX-TA(0): CA constraint.
    pub const PKIX_TA: CertUsage = CertUsage(0);
    /// PKIX-EE(1): service certificate constraint.
    pub const PKIX_EE: CertUsage = CertUsage(1);
    /// DANE-TA(2): trust anchor assertion.
    pub const DANE_TA: CertUsage = CertUsage(2);
    /// DANE-EE(3): domain-issued certificate.
    pub const DANE_EE: CertUsage = CertUsage(3);

    /// The RFC 7218 acronym, if assigned.
    pub fn acronym(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "PKIX-TA",
            1 => "PKIX-EE",
            2 => "DANE-TA",
            3 => "DANE-EE",
            255 => "PrivCert",
            _ => return None,
        })
    }
}

/// Selector (RFC 6698 §2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(pub u8);

impl Selector {
    /// Cert(0): the full certificate.
    pub const CERT: Selector = Selector(0);
    /// SPKI(1): the SubjectPublicKeyInfo.
    pub const SPKI: Selector = Selector(1);

    /// The RFC 7218 acronym, if assigned.
    pub fn acronym(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "Cert",
            1 => "SPKI",
            255 => "PrivSel",
            _ => return None,
        })
    }
}

/// Matching type (RFC 6698 §2.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MatchingType(pub u8);

impl MatchingType {
    /// Full(0): exact match.
    pub const FULL: MatchingType = MatchingType(0);
    /// SHA2-256(1).
    pub const SHA2_256: MatchingType = MatchingType(1);
    /// SHA2-512(2).
    pub const SHA2_512: MatchingType = MatchingType(2);

    /// The RFC 7218 acronym, if assigned.
    pub fn acronym(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "Full",
            1 => "SHA2-256",
            2 => "SHA2-512",
            255 => "PrivMatch",
            _ => return None,
        })
    }

    /// The digest length this type requires, when it is a digest.
    pub fn digest_len(self) -> Option<usize> {
        match self.0 {
            1 => Some(32),
            2 => Some(64),
            _ => None,
        }
    }
}

/// One TLSA record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tlsa {
    /// Certificate usage.
    pub usage: CertUsage,
    /// Selector.
    pub selector: Selector,
    /// Matching type.
    pub matching: MatchingType,
    /// Certificate association data; lower-case hex in JSON.
    #[serde(with = "super::bytes_as::hex")]
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Whether an SMTP client doing DANE (RFC 7672 §3.1) can use this record: usage DANE-TA or
    /// DANE-EE, a known selector and matching type, and a digest of the right length. (The
    /// answer must also be DNSSEC-secure; that is the resolver's to say.)
    pub fn dane_smtp_usable(&self) -> bool {
        matches!(self.usage, CertUsage::DANE_TA | CertUsage::DANE_EE)
            && matches!(self.selector, Selector::CERT | Selector::SPKI)
            && matches!(
                self.matching,
                MatchingType::FULL | MatchingType::SHA2_256 | MatchingType::SHA2_512
            )
            && self
                .matching
                .digest_len()
                .is_none_or(|n| n == self.data.len())
            && !self.data.is_empty()
    }
}

impl fmt::Display for Tlsa {
    /// RFC 6698 §2.2 presentation format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.usage.0,
            self.selector.0,
            self.matching.0,
            data_encoding::HEXLOWER.encode(&self.data)
        )
    }
}

impl From<&hickory_proto::rr::rdata::TLSA> for Tlsa {
    fn from(r: &hickory_proto::rr::rdata::TLSA) -> Self {
        Tlsa {
            usage: CertUsage(r.cert_usage.into()),
            selector: Selector(r.selector.into()),
            matching: MatchingType(r.matching.into()),
            data: r.cert_data.clone(),
        }
    }
}

/// Why presentation text is not a TLSA record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsaError {
    /// Not four fields with three 8-bit integers first.
    Syntax {
        /// What is wrong.
        reason: String,
    },
    /// The association data is not hexadecimal.
    Hex,
    /// The association data is empty.
    EmptyData,
}

impl fmt::Display for TlsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsaError::Syntax { reason } => write!(f, "not a TLSA record: {reason}"),
            TlsaError::Hex => f.write_str("the certificate association data is not hexadecimal"),
            TlsaError::EmptyData => f.write_str("the certificate association data is empty"),
        }
    }
}

impl std::error::Error for TlsaError {}

impl ErrorCode for TlsaError {
    fn code(&self) -> &'static str {
        match self {
            TlsaError::Syntax { .. } => code::SYNTAX,
            TlsaError::Hex => code::HEX,
            TlsaError::EmptyData => code::DATA_EMPTY,
        }
    }
}

/// Diagnostics for a record an SMTP client would meet (RFC 7672 §3.1, RFC 7671 §5).
pub fn check(t: &Tlsa) -> Diagnostics {
    let mut d = Diagnostics::default();
    match t.usage {
        CertUsage::PKIX_TA | CertUsage::PKIX_EE => d.warn(
            code::PKIX_USAGE,
            format!(
                "usage {} ({}) is not for SMTP: RFC 7672 §3.1.3 says SMTP clients treat it as unusable",
                t.usage.0,
                t.usage.acronym().unwrap_or("?")
            ),
        ),
        CertUsage::DANE_TA | CertUsage::DANE_EE => {}
        u => d.warn(code::USAGE_UNKNOWN, format!("usage {} is not assigned: the record is unusable", u.0)),
    }
    if !matches!(t.selector, Selector::CERT | Selector::SPKI) {
        d.warn(
            code::SELECTOR_UNKNOWN,
            format!(
                "selector {} is not assigned: the record is unusable",
                t.selector.0
            ),
        );
    }
    match t.matching {
        MatchingType::FULL => d.info(
            code::FULL_DATA,
            "matching type 0 publishes the full data; RFC 7671 §5 recommends a SHA2-256 digest",
        ),
        MatchingType::SHA2_256 | MatchingType::SHA2_512 => {}
        m => d.warn(
            code::MATCHING_UNKNOWN,
            format!(
                "matching type {} is not assigned: the record is unusable",
                m.0
            ),
        ),
    }
    if let Some(n) = t.matching.digest_len()
        && n != t.data.len()
    {
        d.error(
            code::DATA_LENGTH,
            format!(
                "matching type {} needs {n} bytes of digest, the record has {}: it can never match",
                t.matching.0,
                t.data.len()
            ),
        );
    }
    d
}

/// Builds our record from hickory's rdata, with its diagnostics.
pub fn from_rdata(r: &hickory_proto::rr::rdata::TLSA) -> Parsed<Tlsa> {
    let t = Tlsa::from(r);
    let diagnostics = check(&t);
    Parsed {
        policy: t,
        diagnostics,
    }
}

/// Parses presentation text: `usage selector matching hex...` (whitespace allowed in the hex,
/// RFC 6698 §2.2).
pub fn parse(text: &str) -> ParseResult<Tlsa, TlsaError> {
    let syntax =
        |reason: String| Rejected::new(TlsaError::Syntax { reason }, Diagnostics::default());
    let mut fields = text.split_ascii_whitespace();
    let mut octet = |what: &str| -> Result<u8, Rejected<TlsaError>> {
        let f = fields
            .next()
            .ok_or_else(|| syntax(format!("the {what} field is missing")))?;
        f.parse::<u8>()
            .map_err(|_| syntax(format!("the {what} field {f:?} is not an integer 0..255")))
    };
    let usage = CertUsage(octet("usage")?);
    let selector = Selector(octet("selector")?);
    let matching = MatchingType(octet("matching type")?);
    let hex: String = fields.collect();
    if hex.is_empty() {
        return Err(Rejected::new(TlsaError::EmptyData, Diagnostics::default()));
    }
    let data = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .map_err(|_| Rejected::new(TlsaError::Hex, Diagnostics::default()))?;
    let t = Tlsa {
        usage,
        selector,
        matching,
        data,
    };
    let diagnostics = check(&t);
    Ok(Parsed {
        policy: t,
        diagnostics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::tlsa;

    const SHA256: &str = "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1";

    #[test]
    fn table() {
        let sha512 = "ab".repeat(64);
        // (section, text, Ok((usable, codes)) | Err(code))
        type Case = (
            &'static str,
            String,
            Result<(bool, &'static [&'static str]), &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "7672 §3.1.1 DANE-EE SPKI SHA-256",
                format!("3 1 1 {SHA256}"),
                Ok((true, &[])),
            ),
            (
                "7672 §3.1.2 DANE-TA",
                format!("2 0 1 {SHA256}"),
                Ok((true, &[])),
            ),
            (
                "6698 §2.1.3 SHA-512",
                format!("3 1 2 {sha512}"),
                Ok((true, &[])),
            ),
            (
                "6698 §2.2 hex split by spaces, upper case",
                format!("3 1 1 {} {}", &SHA256[..32].to_uppercase(), &SHA256[32..]),
                Ok((true, &[])),
            ),
            (
                "7671 §5 full data",
                "3 0 0 308201a2".to_owned(),
                Ok((true, &[code::FULL_DATA])),
            ),
            (
                "7672 §3.1.3 PKIX-TA unusable",
                format!("0 0 1 {SHA256}"),
                Ok((false, &[code::PKIX_USAGE])),
            ),
            (
                "7672 §3.1.3 PKIX-EE unusable",
                format!("1 1 1 {SHA256}"),
                Ok((false, &[code::PKIX_USAGE])),
            ),
            (
                "6698 unassigned usage kept",
                format!("7 1 1 {SHA256}"),
                Ok((false, &[code::USAGE_UNKNOWN])),
            ),
            (
                "6698 unassigned selector",
                format!("3 9 1 {SHA256}"),
                Ok((false, &[code::SELECTOR_UNKNOWN])),
            ),
            (
                "6698 unassigned matching",
                format!("3 1 9 {SHA256}"),
                Ok((false, &[code::MATCHING_UNKNOWN])),
            ),
            (
                "7671 digest length",
                "3 1 1 abcd".to_owned(),
                Ok((false, &[code::DATA_LENGTH])),
            ),
            (
                "6698 §2.2 missing data",
                "3 1 1".to_owned(),
                Err(code::DATA_EMPTY),
            ),
            (
                "6698 §2.2 usage > 255",
                format!("256 1 1 {SHA256}"),
                Err(code::SYNTAX),
            ),
            ("6698 §2.2 not hex", "3 1 1 xyz0".to_owned(), Err(code::HEX)),
            ("6698 §2.2 odd hex", "3 1 1 abc".to_owned(), Err(code::HEX)),
        ];
        println!("tlsa table: {} cases", cases.len());
        for (section, input, want) in &cases {
            match (parse(input), want) {
                (Ok(p), Ok((usable, codes))) => {
                    assert_eq!(p.policy.dane_smtp_usable(), *usable, "[{section}]");
                    for c in *codes {
                        assert!(
                            p.diagnostics.has(c),
                            "[{section}] missing {c}: {:?}",
                            p.diagnostics
                        );
                    }
                }
                (Err(r), Err(c)) => assert_eq!(r.error.code(), *c, "[{section}]"),
                (got, _) => panic!("[{section}] {input:?}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn from_hickory_rdata_keeps_unknown_code_points() {
        let data = data_encoding::HEXLOWER.decode(SHA256.as_bytes()).unwrap();
        let r = tlsa::TLSA::new(
            tlsa::CertUsage::DaneEe,
            tlsa::Selector::Spki,
            tlsa::Matching::Sha256,
            data.clone(),
        );
        let p = from_rdata(&r);
        assert!(p.policy.dane_smtp_usable());
        assert_eq!(p.policy.to_string(), format!("3 1 1 {SHA256}"));
        let odd = tlsa::TLSA::new(
            tlsa::CertUsage::Unassigned(42),
            tlsa::Selector::Unassigned(7),
            tlsa::Matching::Private,
            data,
        );
        let p = from_rdata(&odd);
        assert_eq!(
            (p.policy.usage, p.policy.selector, p.policy.matching),
            (CertUsage(42), Selector(7), MatchingType(255))
        );
        assert!(!p.policy.dane_smtp_usable());
    }

    #[test]
    fn display_round_trip_and_serde() {
        let t = parse(&format!("3 1 1 {SHA256}")).unwrap().policy;
        assert_eq!(parse(&t.to_string()).unwrap().policy, t);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["usage"], 3);
        assert_eq!(json["data"], SHA256);
        assert_eq!(
            postcard::from_bytes::<Tlsa>(&postcard::to_stdvec(&t).unwrap()).unwrap(),
            t
        );
        assert_eq!(serde_json::from_value::<Tlsa>(json).unwrap(), t);
    }
}
