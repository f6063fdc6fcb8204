//! DNSSEC trust anchors from a file's text, as Unbound's `trust-anchor-file`: DNSKEY records in
//! zone-file presentation format (`owner [TTL] [class] DNSKEY flags protocol algorithm key`),
//! comments after `;`, a record continued over lines inside `( … )`.
//!
//! DS anchors are refused with a clear error (hickory-proto 0.26's trust-anchor parser and
//! `TrustAnchors` hold keys only; matching a DS to a fetched DNSKEY is not done): give the
//! zone's DNSKEY instead (the `.key` file `dnssec-keygen`/`ldns-keygen` wrote, or
//! `dig DNSKEY zone` checked against the DS).
//!
//! Pure: the caller reads the file.

use std::fmt;

use hickory_resolver::proto::dnssec::{PublicKeyBuf, TrustAnchors, Verifier};
use hickory_resolver::proto::rr::LowerName;
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

/// The anchors in `text`; at least one DNSKEY, every record a DNSKEY.
pub fn parse(text: &str) -> Result<TrustAnchors, TrustAnchorError> {
    let mut anchors = TrustAnchors::empty();
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
        match rtype.as_deref() {
            Some("DNSKEY") => {}
            Some("DS") => {
                return Err(err(
                    "DS anchors are not supported (hickory 0.26 validates from keys only): give the zone's DNSKEY record instead".into(),
                ));
            }
            Some(other) => {
                return Err(err(format!(
                    "a {other} record: a trust anchor file holds DNSKEY records"
                )));
            }
            None => return Err(err(format!("not a DNSKEY record: {record:?}"))),
        }
        if !fields[0].ends_with('.') {
            return Err(err(format!(
                "owner {:?} must be absolute (end with a dot)",
                fields[0]
            )));
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
            message: "no DNSKEY record in the file".into(),
        });
    }
    Ok(anchors)
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
        assert_eq!(t.len(), 1);
        let multi = ". 172800 IN DNSKEY ( 257 3 8 ; flags\n AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5emLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF0jLHwVN8efS3rCj/EWgvIWgb9tarpVUDK/b58Da+sqqls3eNbuv7pr+eoZG+SrDK6nWeL3c6H5Apxz7LjVc1uTIdsIXxuOLYA4/ilBmSVIzuDWfdRUfhHdY6+cn8HFRm+2hM8AnXGXws9555KrUB5qihylGa8subX2Nn6UwNR1AkUTV74bU= )\n";
        assert_eq!(parse(multi).unwrap().len(), 1);
    }

    #[test]
    fn a_zone_key_is_kept_under_its_name() {
        let text = ROOT.replacen(". ", "test. ", 1);
        let t = parse(&text).unwrap();
        assert_eq!(t.len(), 0, "not a root key");
    }

    fn refused(text: &str) -> TrustAnchorError {
        match parse(text) {
            Err(e) => e,
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = refused("; anchors\n\nexample. IN DS 1234 8 2 abcd\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("DS anchors"), "{e}");
        let e = refused(&format!("{ROOT}\nexample. IN DNSKEY 257 3 8 !!!\n"));
        assert_eq!(e.line, 2, "{e}");
        assert_eq!(refused("; nothing\n").line, 0);
        assert_eq!(refused("example. IN A 192.0.2.1").line, 1);
        assert_eq!(refused(". IN DNSKEY ( 257 3 8\n").line, 1);
    }
}
