//! DKIM key records: RFC 6376 §3.6.1 (tags), §3.2 (tag lists), RFC 8301 §3.2 (RSA key
//! sizes), RFC 8463 §4.2 (Ed25519 keys).
//!
//! The `p=` key is decoded and, where the type allows, its size derived: the RSA modulus length
//! from the SubjectPublicKeyInfo (or a bare PKCS#1 key, read leniently), 256 bits for a 32-byte
//! Ed25519 key.

use std::fmt;

use pkcs1::der::Decode;
use serde::{Deserialize, Serialize};

use super::scan::Classes;
use super::tag;
use super::{Diagnostics, ErrorCode, ParseResult, Parsed, Rejected, is_fws};

/// Stable diagnostic codes of this parser.
pub mod code {
    #![allow(missing_docs)]
    pub const VERSION_INVALID: &str = "dkim.version.invalid";
    pub const VERSION_NOT_FIRST: &str = "dkim.version.not_first";
    pub const KEY_MISSING: &str = "dkim.p.missing";
    pub const KEY_BASE64: &str = "dkim.p.base64";
    pub const KEY_PADDING: &str = "dkim.p.padding";
    pub const KEY_UNPARSABLE: &str = "dkim.p.unparsable";
    pub const KEY_TYPE_MISMATCH: &str = "dkim.p.type_mismatch";
    pub const KEY_PKCS1: &str = "dkim.p.pkcs1";
    pub const KEY_ED25519_SPKI: &str = "dkim.p.ed25519_spki";
    pub const KEY_TOO_SMALL: &str = "dkim.p.too_small";
    pub const KEY_REVOKED: &str = "dkim.p.revoked";
    pub const KEY_TYPE_UNKNOWN: &str = "dkim.k.unknown";
    pub const HASH_UNKNOWN: &str = "dkim.h.unknown";
    pub const HASH_SHA1_ONLY: &str = "dkim.h.sha1_only";
    pub const SERVICE_NOT_EMAIL: &str = "dkim.s.not_email";
    pub const FLAG_UNKNOWN: &str = "dkim.t.unknown";
    pub const TESTING: &str = "dkim.t.testing";
    pub const TAG_DUPLICATE: &str = "dkim.tag.duplicate";
    pub const TAG_SYNTAX: &str = "dkim.tag.syntax";
    pub const TAG_UNKNOWN: &str = "dkim.tag.unknown";
    pub const TAG_CASE: &str = "dkim.tag.case";
    pub const MULTIPLE: &str = "dkim.record.multiple";
    pub const IGNORED: &str = "dkim.record.ignored";
}

/// The key algorithm (`k=`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// `rsa` (the default).
    Rsa,
    /// `ed25519` (RFC 8463).
    Ed25519,
    /// Anything else, kept as published (lower-cased); verifiers cannot use it.
    Other(String),
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa => f.write_str("rsa"),
            KeyType::Ed25519 => f.write_str("ed25519"),
            KeyType::Other(s) => f.write_str(s),
        }
    }
}

/// How the published key bytes were laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// X.509 SubjectPublicKeyInfo (RFC 6376 for RSA).
    Spki,
    /// A bare PKCS#1 RSAPublicKey (non-standard, widely accepted).
    Pkcs1,
    /// Raw key bytes (RFC 8463 for Ed25519).
    Raw,
    /// Not understood (unknown key type, or undecodable).
    Unknown,
}

/// A parsed DKIM key record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DkimKey {
    /// Key type (`k=`, default `rsa`).
    pub k: KeyType,
    /// The decoded public key bytes (`p=`); empty when revoked. Base64 in JSON.
    #[serde(with = "super::bytes_as::base64")]
    pub p: Vec<u8>,
    /// `p=` was empty: the key is revoked (RFC 6376 §3.6.1).
    pub revoked: bool,
    /// Acceptable hash algorithms (`h=`), lower-cased; empty means any.
    pub h: Vec<String>,
    /// Service types (`s=`), lower-cased; default `*`.
    pub s: Vec<String>,
    /// `t=y`: the domain is testing DKIM.
    pub testing: bool,
    /// `t=s`: the `i=` domain must equal `d=` exactly (no subdomains).
    pub strict_identity: bool,
    /// Notes (`n=`), as published.
    pub n: Option<String>,
    /// Key size in bits where derivable (RSA modulus bits; 256 for Ed25519).
    pub key_bits: Option<u32>,
    /// The layout the key bytes were found in.
    pub key_format: KeyFormat,
}

impl DkimKey {
    /// Whether the key may be used to verify mail signatures at all: not revoked, a known
    /// type, valid for email, and for RSA at least 1024 bits (RFC 8301 §3.2).
    pub fn usable_for_email(&self) -> bool {
        !self.revoked
            && self.key_format != KeyFormat::Unknown
            && self.s.iter().any(|s| s == "*" || s == "email")
            && match self.k {
                KeyType::Rsa => self.key_bits.is_some_and(|b| b >= 1024),
                KeyType::Ed25519 => true,
                KeyType::Other(_) => false,
            }
    }
}

/// Why a DKIM key record is unusable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DkimError {
    /// `v=` is present but not `DKIM1`, or not the first tag.
    Version {
        /// The value found.
        value: String,
    },
    /// No `p=` tag (required, RFC 6376 §3.6.1).
    KeyMissing,
    /// `p=` is not base64.
    Base64,
    /// A tag appears twice: the whole tag list is invalid (RFC 6376 §3.2).
    DuplicateTag {
        /// The tag.
        tag: String,
    },
    /// More than one key record at the name.
    MultipleRecords {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for DkimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DkimError::Version { value } => {
                write!(
                    f,
                    "v={value:?}: a key record's v= must be first and exactly DKIM1"
                )
            }
            DkimError::KeyMissing => f.write_str("no p= tag (required)"),
            DkimError::Base64 => f.write_str("p= is not valid base64"),
            DkimError::DuplicateTag { tag } => {
                write!(
                    f,
                    "{tag}= appears twice: the whole record is invalid (RFC 6376 §3.2)"
                )
            }
            DkimError::MultipleRecords { count } => write!(f, "{count} key records at one name"),
        }
    }
}

impl std::error::Error for DkimError {}

impl ErrorCode for DkimError {
    fn code(&self) -> &'static str {
        match self {
            DkimError::Version { .. } => code::VERSION_INVALID,
            DkimError::KeyMissing => code::KEY_MISSING,
            DkimError::Base64 => code::KEY_BASE64,
            DkimError::DuplicateTag { .. } => code::TAG_DUPLICATE,
            DkimError::MultipleRecords { .. } => code::MULTIPLE,
        }
    }
}

super::txt_record! {
    /// Selects and parses the key record among the joined TXT records at a `_domainkey` name.
    ///
    /// At a key's name every TXT record is a key record, whether or not it parses (`v=` is
    /// optional, RFC 6376 §3.6.1): a malformed one is answered as invalid with its diagnostics,
    /// never as absent, so an operator can tell the domain owner what is wrong. Of several records
    /// the one valid key is used (RFC 6376 §3.6.2.2 lets the verifier pick), the others named in a
    /// diagnostic; several valid keys are an error (which one the signer meant cannot be known);
    /// with none valid, the first record's rejection is the answer. `None` only for no record.
    DkimKey,
    DkimError,
    super::Pick::OneValid {
        ignored: code::IGNORED,
        noun: "key",
    },
    // At a key's name every TXT record is a key record.
    |_: &str| true,
}

const TAGS: [&str; 7] = ["v", "h", "k", "n", "p", "s", "t"];

fn colon_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(':')
        .map(|s| s.trim_matches(is_fws))
        .filter(|s| !s.is_empty())
}

/// Parses one DKIM key record.
pub fn parse(text: &str) -> ParseResult<DkimKey, DkimError> {
    let mut diags = Diagnostics::default();
    let mut seen = [false; TAGS.len()];
    let mut key = DkimKey {
        k: KeyType::Rsa,
        p: Vec::new(),
        revoked: false,
        h: Vec::new(),
        s: vec!["*".to_owned()],
        testing: false,
        strict_identity: false,
        n: None,
        key_bits: None,
        key_format: KeyFormat::Unknown,
    };
    let mut p_text: Option<&str> = None;
    let mut classes = Classes::empty();
    classes.index(text.as_bytes());
    for (index, item) in tag::lex(text, &classes).enumerate() {
        let Some((name, value, ..)) = item.tag(None, code::TAG_SYNTAX, &mut diags) else {
            continue;
        };
        let Some(slot) = TAGS.iter().position(|t| t.eq_ignore_ascii_case(name)) else {
            diags.info(code::TAG_UNKNOWN, format!("unknown tag {name}= ignored"));
            continue;
        };
        let canon = TAGS[slot];
        if canon != name {
            // RFC 6376 §3.2: tag names are case-sensitive; read leniently.
            diags.info(code::TAG_CASE, format!("tag name {name}= read as {canon}="));
        }
        if std::mem::replace(&mut seen[slot], true) {
            return Err(Rejected::new(
                DkimError::DuplicateTag {
                    tag: canon.to_owned(),
                },
                diags,
            ));
        }
        match canon {
            "v" => {
                if index != 0 {
                    diags.error(code::VERSION_NOT_FIRST, "v= must be the first tag");
                    return Err(Rejected::new(
                        DkimError::Version {
                            value: value.to_owned(),
                        },
                        diags,
                    ));
                }
                if value != "DKIM1" {
                    return Err(Rejected::new(
                        DkimError::Version {
                            value: value.to_owned(),
                        },
                        diags,
                    ));
                }
            }
            "h" => {
                key.h = colon_list(value).map(str::to_ascii_lowercase).collect();
                for h in &key.h {
                    if h != "sha1" && h != "sha256" {
                        diags.info(
                            code::HASH_UNKNOWN,
                            format!("h={h} is not a known hash, ignored by verifiers"),
                        );
                    }
                }
                if !key.h.is_empty() && key.h.iter().all(|h| h == "sha1") {
                    diags.warn(
                        code::HASH_SHA1_ONLY,
                        "h=sha1 only: RFC 8301 forbids sha1 signatures, so no signature can verify",
                    );
                }
            }
            "k" => {
                key.k = match value.to_ascii_lowercase().as_str() {
                    "rsa" => KeyType::Rsa,
                    "ed25519" => KeyType::Ed25519,
                    other => {
                        diags.warn(
                            code::KEY_TYPE_UNKNOWN,
                            format!("k={other} is not a known key type"),
                        );
                        KeyType::Other(other.to_owned())
                    }
                };
            }
            "n" => key.n = Some(value.to_owned()),
            "p" => p_text = Some(value),
            "s" => {
                key.s = colon_list(value).map(str::to_ascii_lowercase).collect();
                if !key.s.iter().any(|s| s == "*" || s == "email") {
                    diags.warn(
                        code::SERVICE_NOT_EMAIL,
                        format!("s={value} does not include email or *"),
                    );
                }
            }
            "t" => {
                for flag in colon_list(value) {
                    match flag {
                        "y" | "Y" => {
                            key.testing = true;
                            diags.info(code::TESTING, "t=y: the domain is testing DKIM");
                        }
                        "s" | "S" => key.strict_identity = true,
                        other => diags.info(
                            code::FLAG_UNKNOWN,
                            format!("t={other} is not a known flag, ignored"),
                        ),
                    }
                }
            }
            _ => {}
        }
    }
    let Some(p_text) = p_text else {
        return Err(Rejected::new(DkimError::KeyMissing, diags));
    };
    decode_key(&mut key, p_text, &mut diags)?;
    Ok(Parsed {
        policy: key,
        diagnostics: diags,
    })
}

fn decode_key(
    key: &mut DkimKey,
    p_text: &str,
    diags: &mut Diagnostics,
) -> Result<(), Rejected<DkimError>> {
    // RFC 6376 §3.6.1: base64 with FWS allowed anywhere inside.
    let compact: String;
    let b64 = if p_text.contains(is_fws) {
        compact = p_text.chars().filter(|c| !is_fws(*c)).collect();
        compact.as_str()
    } else {
        p_text
    };
    if b64.is_empty() {
        key.revoked = true;
        diags.info(code::KEY_REVOKED, "p= is empty: the key is revoked");
        return Ok(());
    }
    key.p = match data_encoding::BASE64.decode(b64.as_bytes()) {
        Ok(bytes) => bytes,
        Err(_) => match data_encoding::BASE64_NOPAD.decode(b64.trim_end_matches('=').as_bytes()) {
            Ok(bytes) => {
                diags.info(code::KEY_PADDING, "p= has missing or extra '=' padding");
                bytes
            }
            Err(_) => return Err(Rejected::new(DkimError::Base64, std::mem::take(diags))),
        },
    };
    match key.k {
        KeyType::Rsa => rsa_key_info(key, diags),
        KeyType::Ed25519 => ed25519_key_info(key, diags),
        KeyType::Other(_) => {}
    }
    if key.k == KeyType::Rsa && key.key_bits.is_some_and(|b| b < 1024) {
        diags.error(
            code::KEY_TOO_SMALL,
            format!(
                "RSA key of {} bits: RFC 8301 §3.2 forbids verifying with keys under 1024 bits",
                key.key_bits.unwrap_or(0)
            ),
        );
    }
    Ok(())
}

const OID_RSA: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.3.101.112");

fn rsa_key_info(key: &mut DkimKey, diags: &mut Diagnostics) {
    let modulus_bits = |der: &[u8]| {
        pkcs1::RsaPublicKey::from_der(der).ok().map(|k| {
            let m = k.modulus.as_bytes();
            m.first()
                .map_or(0, |b| (m.len() as u32 - 1) * 8 + (8 - b.leading_zeros()))
        })
    };
    match spki::SubjectPublicKeyInfoRef::from_der(&key.p) {
        Ok(info) => {
            let oid = info.algorithm.oid;
            if oid != OID_RSA {
                let what = if oid == OID_ED25519 {
                    "an Ed25519 key"
                } else {
                    "not an RSA key"
                };
                diags.error(
                    code::KEY_TYPE_MISMATCH,
                    format!("k=rsa but p= holds {what} (algorithm {oid})"),
                );
                return;
            }
            match info.subject_public_key.as_bytes().and_then(modulus_bits) {
                Some(bits) => {
                    key.key_bits = Some(bits);
                    key.key_format = KeyFormat::Spki;
                }
                None => diags.error(
                    code::KEY_UNPARSABLE,
                    "p= is an RSA SubjectPublicKeyInfo whose key cannot be read",
                ),
            }
        }
        Err(_) => match modulus_bits(&key.p) {
            Some(bits) => {
                key.key_bits = Some(bits);
                key.key_format = KeyFormat::Pkcs1;
                diags.warn(code::KEY_PKCS1, "p= is a bare PKCS#1 RSAPublicKey, not SubjectPublicKeyInfo (RFC 6376 §3.6.1); many verifiers accept it");
            }
            None => diags.error(
                code::KEY_UNPARSABLE,
                "p= is neither an RSA SubjectPublicKeyInfo nor a PKCS#1 key",
            ),
        },
    }
}

fn ed25519_key_info(key: &mut DkimKey, diags: &mut Diagnostics) {
    if key.p.len() == 32 {
        key.key_bits = Some(256);
        key.key_format = KeyFormat::Raw;
        return;
    }
    if let Ok(info) = spki::SubjectPublicKeyInfoRef::from_der(&key.p)
        && info.algorithm.oid == OID_ED25519
        && let Some(raw) = info.subject_public_key.as_bytes().filter(|r| r.len() == 32)
    {
        diags.warn(code::KEY_ED25519_SPKI, "p= wraps the Ed25519 key in SubjectPublicKeyInfo; RFC 8463 §4.2 publishes the raw 32 bytes");
        key.p = raw.to_vec();
        key.key_bits = Some(256);
        key.key_format = KeyFormat::Raw;
        return;
    }
    diags.error(
        code::KEY_UNPARSABLE,
        format!(
            "k=ed25519 but p= is {} bytes, not a 32-byte key",
            key.p.len()
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA512: &str = include_str!("../../tests/data/dkim/rsa512.spki.b64");
    const RSA1024: &str = include_str!("../../tests/data/dkim/rsa1024.spki.b64");
    const RSA2048: &str = include_str!("../../tests/data/dkim/rsa2048.spki.b64");
    const RSA4096: &str = include_str!("../../tests/data/dkim/rsa4096.spki.b64");
    const PKCS1_1024: &str = include_str!("../../tests/data/dkim/rsa1024.pkcs1.b64");
    const ED_RAW: &str = include_str!("../../tests/data/dkim/ed25519.raw.b64");
    const ED_SPKI: &str = include_str!("../../tests/data/dkim/ed25519.spki.b64");

    /// (section, record, Ok((type, bits, format, codes)) | Err(code))
    type Want = Result<
        (
            &'static str,
            Option<u32>,
            KeyFormat,
            &'static [&'static str],
        ),
        &'static str,
    >;

    fn cases() -> Vec<(&'static str, String, Want)> {
        let split = |s: &str| {
            s.as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(" \r\n\t")
        };
        vec![
            (
                "6376 §3.6.1 rsa 2048",
                format!("v=DKIM1; k=rsa; p={RSA2048}"),
                Ok(("rsa", Some(2048), KeyFormat::Spki, &[])),
            ),
            (
                "6376 §3.6.1 k defaults to rsa",
                format!("p={RSA1024}"),
                Ok(("rsa", Some(1024), KeyFormat::Spki, &[])),
            ),
            (
                "6376 §3.6.1 4096",
                format!("v=DKIM1; p={RSA4096}"),
                Ok(("rsa", Some(4096), KeyFormat::Spki, &[])),
            ),
            (
                "6376 §3.6.1 FWS inside p",
                format!("v=DKIM1; k=rsa; p={}", split(RSA2048)),
                Ok(("rsa", Some(2048), KeyFormat::Spki, &[])),
            ),
            (
                "8301 §3.2 512-bit key",
                format!("v=DKIM1; p={RSA512}"),
                Ok(("rsa", Some(512), KeyFormat::Spki, &[code::KEY_TOO_SMALL])),
            ),
            (
                "6376 §3.6.1 bare PKCS#1",
                format!("v=DKIM1; p={PKCS1_1024}"),
                Ok(("rsa", Some(1024), KeyFormat::Pkcs1, &[code::KEY_PKCS1])),
            ),
            (
                "8463 §4.2 ed25519",
                format!("v=DKIM1; k=ed25519; p={ED_RAW}"),
                Ok(("ed25519", Some(256), KeyFormat::Raw, &[])),
            ),
            (
                "8463 §4.2 ed25519 in SPKI",
                format!("v=DKIM1; k=ed25519; p={ED_SPKI}"),
                Ok((
                    "ed25519",
                    Some(256),
                    KeyFormat::Raw,
                    &[code::KEY_ED25519_SPKI],
                )),
            ),
            (
                "k=rsa holding ed25519",
                format!("v=DKIM1; k=rsa; p={ED_SPKI}"),
                Ok(("rsa", None, KeyFormat::Unknown, &[code::KEY_TYPE_MISMATCH])),
            ),
            (
                "6376 §3.6.1 revoked",
                "v=DKIM1; p=".to_owned(),
                Ok(("rsa", None, KeyFormat::Unknown, &[code::KEY_REVOKED])),
            ),
            (
                "6376 §3.6.1 unknown k",
                format!("v=DKIM1; k=dsa; p={RSA1024}"),
                Ok(("dsa", None, KeyFormat::Unknown, &[code::KEY_TYPE_UNKNOWN])),
            ),
            (
                "6376 §3.6.1 h, s, t, n",
                format!("v=DKIM1; h=sha256:sha1; s=email; t=y:s; n=hello; p={RSA1024}"),
                Ok(("rsa", Some(1024), KeyFormat::Spki, &[code::TESTING])),
            ),
            (
                "6376 §3.6.1 s not email",
                format!("s=tlsrpt; p={RSA1024}"),
                Ok((
                    "rsa",
                    Some(1024),
                    KeyFormat::Spki,
                    &[code::SERVICE_NOT_EMAIL],
                )),
            ),
            (
                "8301 h=sha1 only",
                format!("h=sha1; p={RSA1024}"),
                Ok(("rsa", Some(1024), KeyFormat::Spki, &[code::HASH_SHA1_ONLY])),
            ),
            (
                "6376 §3.2 unknown tag",
                format!("v=DKIM1; x=1; p={RSA1024}"),
                Ok(("rsa", Some(1024), KeyFormat::Spki, &[code::TAG_UNKNOWN])),
            ),
            (
                "missing padding",
                format!("k=ed25519; p={}", ED_RAW.trim_end_matches('=')),
                Ok(("ed25519", Some(256), KeyFormat::Raw, &[code::KEY_PADDING])),
            ),
            (
                "6376 §3.6.1 p missing",
                "v=DKIM1; k=rsa".to_owned(),
                Err(code::KEY_MISSING),
            ),
            (
                "6376 §3.6.1 v not DKIM1",
                format!("v=DKIM2; p={RSA1024}"),
                Err(code::VERSION_INVALID),
            ),
            (
                "6376 §3.6.1 v not first",
                format!("k=rsa; v=DKIM1; p={RSA1024}"),
                Err(code::VERSION_INVALID),
            ),
            (
                "6376 §3.2 duplicate tag",
                format!("p={RSA1024}; p={RSA1024}"),
                Err(code::TAG_DUPLICATE),
            ),
            (
                "bad base64",
                "v=DKIM1; p=@@@@".to_owned(),
                Err(code::KEY_BASE64),
            ),
            (
                "garbage key bytes",
                "v=DKIM1; p=AAAA".to_owned(),
                Ok(("rsa", None, KeyFormat::Unknown, &[code::KEY_UNPARSABLE])),
            ),
        ]
    }

    #[test]
    fn table() {
        let cases = cases();
        assert!(
            cases.len() >= 15,
            "the issue asks for at least 15 DKIM key cases"
        );
        let mut failures = Vec::new();
        for (section, input, want) in &cases {
            match (parse(input), want) {
                (Ok(p), Ok((k, bits, format, codes))) => {
                    let got = (
                        p.policy.k.to_string(),
                        p.policy.key_bits,
                        p.policy.key_format,
                    );
                    if got != (k.to_string(), *bits, *format) {
                        failures.push(format!(
                            "[{section}] got {got:?}, want {:?}",
                            (k, bits, format)
                        ));
                    }
                    for c in *codes {
                        if !p.diagnostics.has(c) {
                            failures.push(format!("[{section}] missing {c}: {:?}", p.diagnostics));
                        }
                    }
                }
                (Err(r), Err(c)) if r.error.code() == *c => {}
                (got, _) => failures.push(format!("[{section}] unexpected {got:?}")),
            }
        }
        crate::policy::assert_table("dkim", cases.len(), &failures);
    }

    #[test]
    fn flags_and_usability() {
        let k = parse(&format!(
            "v=DKIM1; h=sha256; s=email:*; t=y:s; n=note; p={RSA2048}"
        ))
        .unwrap()
        .policy;
        assert!(k.testing && k.strict_identity);
        assert_eq!(k.h, vec!["sha256"]);
        assert_eq!(k.n.as_deref(), Some("note"));
        assert!(k.usable_for_email());
        assert!(!parse("v=DKIM1; p=").unwrap().policy.usable_for_email());
        assert!(
            !parse(&format!("p={RSA512}"))
                .unwrap()
                .policy
                .usable_for_email()
        );
        assert!(
            !parse(&format!("s=other; p={RSA2048}"))
                .unwrap()
                .policy
                .usable_for_email()
        );
    }

    #[test]
    fn selection_and_serde() {
        let rec = format!("v=DKIM1; p={RSA1024}");
        // The one valid key among other TXT records is used; the others are named.
        let picked = from_txt(["v=spf1 -all", rec.as_str()]).unwrap().unwrap();
        assert!(picked.diagnostics.has(code::IGNORED));
        // At a key's name a TXT record is a key record whether or not it parses.
        let misplaced = from_txt(["v=spf1 -all"]).unwrap().unwrap_err();
        assert!(matches!(misplaced.error, DkimError::Version { .. }));
        let bare = RSA1024.trim();
        let bare = from_txt([bare]).unwrap().unwrap_err();
        assert_eq!(bare.error, DkimError::KeyMissing);
        assert!(bare.diagnostics.has(code::KEY_MISSING));
        assert!(
            from_txt(["junk", "more junk"])
                .unwrap()
                .unwrap_err()
                .diagnostics
                .has(code::IGNORED)
        );
        assert!(from_txt(std::iter::empty::<&str>()).is_none());
        assert!(matches!(
            from_txt([rec.as_str(), rec.as_str()]),
            Some(Err(_))
        ));
        let k = parse(&rec).unwrap().policy;
        let json = serde_json::to_value(&k).unwrap();
        assert_eq!(json["p"], RSA1024.trim());
        assert_eq!(serde_json::from_value::<DkimKey>(json).unwrap(), k);
        let bytes = postcard::to_stdvec(&k).unwrap();
        assert_eq!(postcard::from_bytes::<DkimKey>(&bytes).unwrap(), k);
    }
}
