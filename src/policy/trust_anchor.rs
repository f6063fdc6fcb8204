//! DNSSEC trust anchors from a file's text, as Unbound's `trust-anchor-file`: DNSKEY records in
//! zone-file presentation format (`owner [TTL] [class] DNSKEY flags protocol algorithm key`),
//! comments after `;`, a record continued over lines inside `( … )`.
//!
//! DS records (`owner [TTL] [IN] DS key-tag algorithm digest-type digest`, as Debian's
//! `/usr/share/dns/root.ds`) are kept apart ([`Anchors::ds`]): hickory-proto 0.26's
//! `TrustAnchors` holds keys only, so the resolver fetches the owner's DNSKEY RRset once and
//! anchors the keys a DS matches (`resolve::upstream`).
//!
//! Pure: the caller reads the file.

use std::fmt;

use hickory_resolver::proto::dnssec::rdata::DS;
use hickory_resolver::proto::dnssec::{
    Algorithm, DigestType, PublicKeyBuf, TrustAnchors, Verifier,
};
use hickory_resolver::proto::rr::{LowerName, Name};
use hickory_resolver::proto::serialize::txt::trust_anchor::{Entry, Parser};

/// Why a trust anchor file was refused, with the (1-based) line of the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustAnchorError {
    /// The line the offending record starts on; 0 for the file as a whole.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TrustAnchorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for TrustAnchorError {}

/// The anchors of a file: keys, and DS records whose keys are still to be fetched.
#[derive(Clone)]
pub struct Anchors {
    /// The DNSKEY anchors.
    pub keys: TrustAnchors,
    /// The DS anchors: (owner, DS).
    pub ds: Vec<(Name, DS)>,
    /// Every anchor's owner (the zones whose keys are anchored), each once, in file order.
    pub owners: Vec<Name>,
}

/// The anchors in `text`; at least one record, every record a DNSKEY or a DS.
pub fn parse(text: &str) -> Result<Anchors, TrustAnchorError> {
    let mut anchors = TrustAnchors::empty();
    let mut ds = Vec::new();
    let mut owners: Vec<Name> = Vec::new();
    let mut count = 0usize;
    for (line, record) in records(text)? {
        let err = |message: String| TrustAnchorError { line, message };
        let fields: Vec<&str> = record.split_ascii_whitespace().collect();
        // owner [TTL] [class] TYPE …: the type is the first field after the owner that is not
        // a TTL or a class.
        let rtype = fields
            .iter()
            .skip(1)
            .find(|f| {
                !f.bytes().all(|b| b.is_ascii_digit())
                    && !matches!(f.to_ascii_uppercase().as_str(), "IN" | "CH" | "HS")
            })
            .map(|f| f.to_ascii_uppercase());
        if !fields[0].ends_with('.') {
            return Err(err(format!(
                "owner {:?} must be absolute (end with a dot)",
                fields[0]
            )));
        }
        let owner = Name::from_ascii(fields[0]).map_err(|e| err(e.to_string()))?;
        if !owners.iter().any(|o| o.eq_ignore_root(&owner)) {
            owners.push(owner.clone());
        }
        match rtype.as_deref() {
            Some("DNSKEY") => {}
            Some("DS") => {
                let at = fields
                    .iter()
                    .position(|f| f.eq_ignore_ascii_case("DS"))
                    .unwrap_or(0);
                ds.push((owner, parse_ds(&fields[at + 1..]).map_err(err)?));
                count += 1;
                continue;
            }
            Some(other) => {
                return Err(err(format!(
                    "a {other} record: a trust anchor file holds DNSKEY or DS records"
                )));
            }
            None => return Err(err(format!("not a DNSKEY or DS record: {record:?}"))),
        }
        let entries = Parser::new(record.as_str())
            .parse()
            .map_err(|e| err(e.to_string()))?;
        for entry in entries {
            let Entry::DNSKEY(r) = entry else {
                return Err(err("not a DNSKEY record".into()));
            };
            let dnskey = r.data();
            let key = dnskey.key().map_err(|e| err(e.to_string()))?;
            let key = PublicKeyBuf::new(key.public_bytes().to_vec(), dnskey.algorithm());
            anchors.insert_with_name(&key, LowerName::from(r.name()));
            count += 1;
        }
    }
    if count == 0 {
        return Err(TrustAnchorError {
            line: 0,
            message: "no DNSKEY or DS record in the file".into(),
        });
    }
    Ok(Anchors {
        keys: anchors,
        ds,
        owners,
    })
}

/// A DS record's RDATA: key tag, algorithm, digest type (SHA-1, SHA-256 or SHA-384), digest in
/// hexadecimal (possibly split by blanks).
fn parse_ds(fields: &[&str]) -> Result<DS, String> {
    let [tag, alg, dtype, digest @ ..] = fields else {
        return Err("a DS record needs key tag, algorithm, digest type and digest".into());
    };
    let tag: u16 = tag
        .parse()
        .map_err(|_| format!("DS key tag {tag:?} is not a number"))?;
    let alg: u8 = alg
        .parse()
        .map_err(|_| format!("DS algorithm {alg:?} is not a number"))?;
    let dtype: u8 = dtype
        .parse()
        .map_err(|_| format!("DS digest type {dtype:?} is not a number"))?;
    let digest_type = DigestType::from(dtype);
    let want = match digest_type {
        DigestType::SHA1 => 20,
        DigestType::SHA256 => 32,
        DigestType::SHA384 => 48,
        _ => {
            return Err(format!(
                "DS digest type {dtype} is not supported (1, 2 or 4)"
            ));
        }
    };
    let hex: String = digest.concat();
    if hex.len() != want * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "DS digest must be {want} bytes of hexadecimal for digest type {dtype}"
        ));
    }
    let bytes = (0..want)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(DS::new(tag, Algorithm::from_u8(alg), digest_type, bytes))
}

/// The records of `text` with the line each starts on: comments dropped, parenthesized
/// continuations joined, blank lines and `$`-directives other than none refused.
fn records(text: &str) -> Result<Vec<(usize, String)>, TrustAnchorError> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = strip_comment(raw);
        let depth_change = body.matches('(').count() as isize - body.matches(')').count() as isize;
        let cleaned = body.replace(['(', ')'], " ");
        match open.take() {
            Some((start, mut acc)) => {
                acc.push(' ');
                acc.push_str(&cleaned);
                if depth_change < 0 {
                    out.push((start, acc));
                } else {
                    open = Some((start, acc));
                }
            }
            None => {
                if cleaned.trim().is_empty() {
                    continue;
                }
                if cleaned.trim_start().starts_with('$') {
                    return Err(TrustAnchorError {
                        line,
                        message: "directives ($ORIGIN, $TTL) are not supported: write each record in full".into(),
                    });
                }
                if raw.starts_with(char::is_whitespace) {
                    return Err(TrustAnchorError {
                        line,
                        message: "a record must start with its owner name".into(),
                    });
                }
                if depth_change > 0 {
                    open = Some((line, cleaned));
                } else {
                    out.push((line, cleaned));
                }
            }
        }
    }
    if let Some((start, _)) = open {
        return Err(TrustAnchorError {
            line: start,
            message: "unclosed parenthesis".into(),
        });
    }
    Ok(out)
}

fn strip_comment(line: &str) -> &str {
    line.split_once(';').map_or(line, |(a, _)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = ". 172800 IN DNSKEY 257 3 8 AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU= ; KSK 20326";

    #[test]
    fn a_root_key_with_comments_and_parentheses() {
        let t = parse(ROOT).unwrap();
        assert_eq!(t.keys.len(), 1);
        let multi = ". 172800 IN DNSKEY ( 257 3 8 ; flags\n AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU= )\n";
        assert_eq!(parse(multi).unwrap().keys.len(), 1);
    }

    #[test]
    fn a_zone_key_is_kept_under_its_name() {
        let text = ROOT.replacen(". ", "test. ", 1);
        let t = parse(&text).unwrap();
        assert_eq!(t.keys.len(), 0, "not a root key");
    }

    fn refused(text: &str) -> TrustAnchorError {
        match parse(text) {
            Err(e) => e,
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn ds_records_are_kept_for_the_resolver() {
        let a = parse(
            ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n",
        )
        .unwrap();
        assert_eq!(a.keys.len(), 0);
        assert_eq!(a.ds.len(), 1);
        assert_eq!(a.ds[0].1.key_tag(), 20326);
        assert!(a.ds[0].0.is_root());
    }

    #[test]
    fn errors_name_the_line() {
        let e = refused("; anchors\n\nexample. IN DS 1234 8 2 abcd\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("32 bytes"), "{e}");
        let e = refused(&format!("{ROOT}\nexample. IN DNSKEY 257 3 8 !!!\n"));
        assert_eq!(e.line, 2, "{e}");
        assert_eq!(refused("; nothing\n").line, 0);
        assert_eq!(refused("example. IN A 192.0.2.1").line, 1);
        assert_eq!(refused(". IN DNSKEY ( 257 3 8\n").line, 1);
    }
}
