//! The `tag=value` list lexer shared by DMARC, DKIM key and ATPS records (RFC 6376 §3.2,
//! RFC 7489 §6.4, RFC 9989 §4.8, RFC 6541 §4.3).
//!
//! `tag-list = tag-spec *( ";" tag-spec ) [ ";" ]`, with folding white space allowed around
//! names, `=`, values and `;`. The lexer only splits; each record parser decides what an
//! oddity means for it (duplicate tags are fatal in DKIM, a warning in DMARC) and records the
//! diagnostic under its own code.

use super::Diagnostics;
use super::scan::{self, ALPHA, Class, Classes, TAG_NAME, is_fws};

/// One lexical item of a tag list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// A well-formed `name=value` (both trimmed; the value may be empty). `key` is the name
    /// packed by [`key`] (0 when longer than 8 bytes), for dispatch without string compares.
    Tag {
        name: &'a str,
        value: &'a str,
        key: u64,
        /// Where `value` starts in the text, for questions to the text's byte classes.
        at: usize,
        /// The name packed as written (like `key` but not lower-cased): a known name whose `raw`
        /// differs from its `key` was written with capitals.
        raw: u64,
    },
    /// An empty segment between two `;` (`a=b;;c=d`); a single trailing `;` is not reported.
    Empty,
    /// A segment without `=`.
    NoEquals(&'a str),
    /// A segment whose name is not `ALPHA *ALNUMPUNC`.
    BadName(&'a str),
}

/// A well-formed tag's parts: `(name, value, key, at, raw)` as in [`Item::Tag`].
pub(crate) type Tag<'a> = (&'a str, &'a str, u64, usize, u64);

impl<'a> Item<'a> {
    /// The item as a tag, or `None` after noting why it is not one: an empty segment under
    /// `empty_code` (for the record kinds that report it), a segment that is not `name=value`
    /// under `syntax_code`. Inlined into the parsers' tag loops.
    #[inline(always)]
    pub(crate) fn tag(
        self,
        empty_code: Option<&'static str>,
        syntax_code: &'static str,
        diags: &mut Diagnostics,
    ) -> Option<Tag<'a>> {
        match self {
            Item::Tag {
                name,
                value,
                key,
                at,
                raw,
            } => Some((name, value, key, at, raw)),
            Item::Empty => {
                if let Some(code) = empty_code {
                    diags.info(code, "empty tag between two ';'");
                }
                None
            }
            Item::NoEquals(seg) | Item::BadName(seg) => {
                diags.warn(
                    syntax_code,
                    format!("{seg:?} is not a tag=value pair, ignored"),
                );
                None
            }
        }
    }
}

/// A tag name of at most 8 bytes packed into a word, lower-cased; `None` for longer names.
/// Tag names hold only letters, digits and `_`, and `| 0x20` lower-cases the letters without
/// turning anything else into one, so equal keys mean names equal ignoring ASCII case.
pub(crate) const fn key(name: &[u8]) -> Option<u64> {
    if name.is_empty() || name.len() > 8 {
        return None;
    }
    let mut k = 0u64;
    let mut i = 0;
    while i < name.len() {
        k |= ((name[i] | 0x20) as u64) << (8 * i);
        i += 1;
    }
    Some(k)
}

/// [`key`] for a known tag name, in constant position.
pub(crate) const fn known(name: &str) -> u64 {
    match key(name.as_bytes()) {
        Some(k) => k,
        None => panic!("known tag names are 1..=8 bytes"),
    }
}

/// Iterates over the items of a tag list, given its byte classes (built by the caller with
/// `Classes::index` and kept, so parsers that look inside values can use them too).
pub(crate) fn lex<'a, 'c>(text: &'a str, classes: &'c Classes) -> Lexer<'a, 'c> {
    Lexer {
        text,
        classes,
        pos: 0,
    }
}

/// Takes the first item of a tag list that must open with `v=<want>` (RFC 9989 §4.7, RFC 6541
/// §4.3): the name in any case (noted under `case_code` when one is given and the name was
/// written `V`), the value exactly `want`. `Err(Some(value))` for another value, `Err(None)`
/// when the list does not open with a `v=` tag.
#[inline]
pub(crate) fn version<'a>(
    items: &mut Lexer<'a, '_>,
    want: &str,
    case_code: Option<&'static str>,
    diags: &mut Diagnostics,
) -> Result<(), Option<&'a str>> {
    match items.next() {
        Some(Item::Tag { name, value, .. }) if name.eq_ignore_ascii_case("v") => {
            if let Some(code) = case_code.filter(|_| name != "v") {
                diags.info(code, "tag name V= read as v=");
            }
            if value == want {
                Ok(())
            } else {
                Err(Some(value))
            }
        }
        _ => Err(None),
    }
}

/// The tag-list lexer: the text's byte classes and a position, so each item costs a few bit
/// operations to find its `;`, a byte loop over the tag name (which it packs into a key on the
/// way) and byte tests for the rare white space around the name and the value.
pub(crate) struct Lexer<'a, 'c> {
    text: &'a str,
    classes: &'c Classes,
    /// Where the next segment starts; past the end once the last segment was returned.
    pos: usize,
}

impl<'a> Iterator for Lexer<'a, '_> {
    type Item = Item<'a>;

    // Inlined into each parser's loop, so an item's fields stay in registers.
    #[inline(always)]
    fn next(&mut self) -> Option<Item<'a>> {
        let text = self.text;
        let b = text.as_bytes();
        let c = self.classes;
        let mut i = self.pos;
        if i > b.len() {
            return None;
        }
        // `min` lets the compiler see that every `i < end` below is in bounds.
        let end = c.next(Class::Semi, i, b.len()).min(b.len());
        let last = end == b.len();
        self.pos = end + 1;
        // White space around names and values is rare and short (one space after a ';'), so
        // it is stepped over byte by byte.
        while i < end && is_fws(b[i]) {
            i += 1;
        }
        if i == end {
            // Only the segment after the last ';' may be empty (a trailing ';', or an
            // empty record); any other empty segment is reported.
            return (!last).then_some(Item::Empty);
        }
        let start = i;
        if scan::is(b[i], ALPHA) {
            // The name is read once, packing its key on the way.
            let mut raw = u64::from(b[i]);
            i += 1;
            while i < end && scan::is(b[i], TAG_NAME) {
                if i - start < 8 {
                    raw |= u64::from(b[i]) << (8 * (i - start));
                }
                i += 1;
            }
            // `| 0x20` on every byte of the name lower-cases its letters.
            let mut key =
                raw | (0x2020_2020_2020_2020 & (u64::MAX >> (8 * (8 - (i - start).min(8)))));
            if i - start > 8 {
                key = 0;
            }
            let name_end = i;
            while i < end && is_fws(b[i]) {
                i += 1;
            }
            if i < end && b[i] == b'=' {
                let mut v_start = i + 1;
                while v_start < end && is_fws(b[v_start]) {
                    v_start += 1;
                }
                let mut v_end = end;
                while v_end > v_start && is_fws(b[v_end - 1]) {
                    v_end -= 1;
                }
                // Slices by `split_at`, whose boundary checks inline (those of `&text[a..b]`
                // are an out-of-line call each, measurable at this rate).
                let (head, value) = text.split_at(v_end).0.split_at(v_start);
                return Some(Item::Tag {
                    name: head.split_at(name_end).0.split_at(start).1,
                    value,
                    key,
                    at: v_start,
                    raw,
                });
            }
        }
        let segment = scan::trim_fws(&text[start..end]);
        Some(match scan::find(segment.as_bytes(), b'=') {
            None => Item::NoEquals(segment),
            Some(_) => Item::BadName(segment),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The items, with each value's offset and packed name checked and then zeroed, so the
    /// tables below can compare the same items under different spacing.
    fn items(s: &str) -> Vec<Item<'_>> {
        let classes = Classes::new(s.as_bytes());
        lex(s, &classes)
            .map(|item| match item {
                Item::Tag {
                    name,
                    value,
                    key,
                    at,
                    raw,
                } => {
                    assert_eq!(
                        &s[at..at + value.len()],
                        value,
                        "offset of {name}= in {s:?}"
                    );
                    let len = name.len().min(8);
                    let mut bytes = [0u8; 8];
                    bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
                    assert_eq!(raw, u64::from_le_bytes(bytes), "raw of {name}=");
                    Item::Tag {
                        name,
                        value,
                        key,
                        at: 0,
                        raw: 0,
                    }
                }
                other => other,
            })
            .collect()
    }

    #[test]
    fn plain_and_trailing_semicolon() {
        let want = vec![
            Item::Tag {
                name: "v",
                value: "DMARC1",
                key: known("v"),
                at: 0,
                raw: 0,
            },
            Item::Tag {
                name: "p",
                value: "none",
                key: known("p"),
                at: 0,
                raw: 0,
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
                    value: "b",
                    key: known("a"),
                    at: 0,
                    raw: 0,
                },
                Item::Empty,
                Item::Tag {
                    name: "c",
                    value: "d",
                    key: known("c"),
                    at: 0,
                    raw: 0,
                }
            ]
        );
        assert_eq!(
            items("a=b;;"),
            vec![
                Item::Tag {
                    name: "a",
                    value: "b",
                    key: known("a"),
                    at: 0,
                    raw: 0,
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
                    value: "b",
                    key: known("a"),
                    at: 0,
                    raw: 0,
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
                value: "",
                key: known("p"),
                at: 0,
                raw: 0,
            }]
        );
    }
}
