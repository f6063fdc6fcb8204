//! The `tag=value` list lexer shared by DMARC, DKIM key and ATPS records (RFC 6376 §3.2,
//! RFC 7489 §6.4, RFC 9989 §4.8, RFC 6541 §4.3).
//!
//! `tag-list = tag-spec *( ";" tag-spec ) [ ";" ]`, with folding white space allowed around
//! names, `=`, values and `;`. The lexer only splits; each record parser decides what an
//! oddity means for it (duplicate tags are fatal in DKIM, a warning in DMARC) and records the
//! diagnostic under its own code.

fn fws_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Byte-wise FWS trims: the char-pattern `trim_matches` decodes UTF-8 per character, and
/// trimming runs several times per tag.
fn trim_fws_start(s: &str) -> &str {
    let n = s.bytes().take_while(|b| fws_byte(*b)).count();
    &s[n..]
}

fn trim_fws_end(s: &str) -> &str {
    let n = s.bytes().rev().take_while(|b| fws_byte(*b)).count();
    &s[..s.len() - n]
}

fn trim_fws(s: &str) -> &str {
    trim_fws_end(trim_fws_start(s))
}

/// One lexical item of a tag list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// A well-formed `name=value` (both trimmed; the value may be empty).
    Tag { name: &'a str, value: &'a str },
    /// An empty segment between two `;` (`a=b;;c=d`); a single trailing `;` is not reported.
    Empty,
    /// A segment without `=`.
    NoEquals(&'a str),
    /// A segment whose name is not `ALPHA *ALNUMPUNC`.
    BadName(&'a str),
}

/// Iterates over the items of a tag list.
pub(crate) fn lex(text: &str) -> Lexer<'_> {
    Lexer { rest: Some(text) }
}

pub(crate) struct Lexer<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let rest = self.rest?;
        // One pass finds both the segment's end and its first '='.
        let bytes = rest.as_bytes();
        let mut end = bytes.len();
        let mut first_eq = None;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b';' {
                end = i;
                break;
            }
            if b == b'=' && first_eq.is_none() {
                first_eq = Some(i);
            }
        }
        let tail = (end < bytes.len()).then(|| &rest[end + 1..]);
        self.rest = tail;
        let raw = &rest[..end];
        let segment = trim_fws(raw);
        if segment.is_empty() {
            // Only the segment after the last ';' may be empty (a trailing ';', or an
            // empty record); any other empty segment is reported.
            tail?;
            return Some(Item::Empty);
        }
        let Some(eq) = first_eq else {
            return Some(Item::NoEquals(segment));
        };
        // Re-base the '=' position from `raw` onto the trimmed segment.
        let eq = eq - (raw.len() - trim_fws_start(raw).len());
        let name = trim_fws_end(&segment[..eq]);
        let value = trim_fws_start(&segment[eq + 1..]);
        let mut bytes = name.bytes();
        let valid_name = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Some(Item::BadName(segment));
        }
        Some(Item::Tag { name, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(s: &str) -> Vec<Item<'_>> {
        lex(s).collect()
    }

    #[test]
    fn plain_and_trailing_semicolon() {
        let want = vec![
            Item::Tag {
                name: "v",
                value: "DMARC1",
            },
            Item::Tag {
                name: "p",
                value: "none",
            },
        ];
        assert_eq!(items("v=DMARC1; p=none"), want);
        assert_eq!(items("v=DMARC1; p=none;"), want);
        assert_eq!(items("v=DMARC1; p=none; "), want);
        assert_eq!(items(" v = DMARC1 ;\tp =none ;"), want);
    }

    #[test]
    fn empty_segments() {
        assert_eq!(
            items("a=b;;c=d"),
            vec![
                Item::Tag {
                    name: "a",
                    value: "b"
                },
                Item::Empty,
                Item::Tag {
                    name: "c",
                    value: "d"
                }
            ]
        );
        assert_eq!(
            items("a=b;;"),
            vec![
                Item::Tag {
                    name: "a",
                    value: "b"
                },
                Item::Empty
            ]
        );
        assert_eq!(items(""), vec![]);
        assert_eq!(items(";"), vec![Item::Empty]);
    }

    #[test]
    fn malformed_segments() {
        assert_eq!(
            items("a=b; junk"),
            vec![
                Item::Tag {
                    name: "a",
                    value: "b"
                },
                Item::NoEquals("junk")
            ]
        );
        assert_eq!(items("1a=b"), vec![Item::BadName("1a=b")]);
        assert_eq!(items("=b"), vec![Item::BadName("=b")]);
        assert_eq!(
            items("p="),
            vec![Item::Tag {
                name: "p",
                value: ""
            }]
        );
    }
}
