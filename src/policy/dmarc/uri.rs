//! DMARC reporting URI lists (`rua`, `ruf`, `frua`, `fruf`): RFC 7489 §6.4, RFC 9989 §4.8.
//! The list type keeps its URIs in one buffer; the parser visits only each list's odd bytes.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::code;
use crate::policy::Diagnostics;
use crate::policy::scan::{self, Class, Classes};

/// A reporting URI, with the RFC 7489 `!size` limit in bytes when one was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ReportUri<'a> {
    /// The URI as published.
    pub uri: &'a str,
    /// The RFC 7489 maximum report size in bytes (obsolete in RFC 9989).
    pub max_size: Option<u64>,
}

impl fmt::Display for ReportUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uri)?;
        if let Some(n) = self.max_size {
            write!(f, "!{n}")?;
        }
        Ok(())
    }
}

/// A list of reporting URIs (`rua`, `ruf`, `frua`, `fruf`), kept in one buffer: the valid URIs
/// joined by `,`, which cannot occur inside one (RFC 7489 §6.4 and RFC 9989 §4.8 require it to
/// be percent-encoded). A typical list costs one allocation however many URIs it holds, and
/// the `!size` limits take a second one only when some URI has one. Boxed slices rather than
/// growable buffers keep the record small (it is moved into the cache and the answers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UriList {
    joined: Box<str>,
    /// One entry per URI when any URI has a size limit.
    sizes: Option<Box<[Option<u64>]>>,
}

/// A [`UriList`] being built.
#[derive(Default)]
struct UriListBuilder {
    joined: String,
    sizes: Vec<Option<u64>>,
    count: usize,
}

impl UriListBuilder {
    fn with_capacity(bytes: usize) -> Self {
        UriListBuilder {
            joined: String::with_capacity(bytes),
            sizes: Vec::new(),
            count: 0,
        }
    }

    /// Appends a URI, which must hold no `,` (the parser has checked it is a valid URI).
    fn push(&mut self, uri: &str, max_size: Option<u64>) {
        debug_assert!(!uri.is_empty() && !uri.contains(','));
        if max_size.is_some() || !self.sizes.is_empty() {
            // The first limit fills in `None` for the URIs before it.
            self.sizes.resize(self.count, None);
            self.sizes.push(max_size);
        }
        if !self.joined.is_empty() {
            self.joined.push(',');
        }
        self.joined.push_str(uri);
        self.count += 1;
    }

    /// The list. When every entry of the value was a valid URI without white space or size
    /// limit, the buffer was sized exactly and is kept as it is.
    fn finish(self) -> UriList {
        UriList {
            joined: self.joined.into_boxed_str(),
            sizes: (!self.sizes.is_empty()).then(|| self.sizes.into_boxed_slice()),
        }
    }
}

impl UriList {
    /// The number of URIs.
    pub fn len(&self) -> usize {
        if self.joined.is_empty() {
            0
        } else {
            self.joined.bytes().filter(|&b| b == b',').count() + 1
        }
    }

    /// Whether the list holds no URI.
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty()
    }

    /// The URIs in published order.
    pub fn iter(&self) -> impl Iterator<Item = ReportUri<'_>> {
        let uris = (!self.joined.is_empty()).then(|| scan::split(&self.joined, b','));
        uris.into_iter()
            .flatten()
            .enumerate()
            .map(|(i, uri)| ReportUri {
                uri,
                max_size: self
                    .sizes
                    .as_ref()
                    .and_then(|s| s.get(i).copied().flatten()),
            })
    }

    /// The `i`th URI.
    pub fn get(&self, i: usize) -> Option<ReportUri<'_>> {
        self.iter().nth(i)
    }
}

impl fmt::Display for UriList {
    /// The list as a record writes it (`uri[!size],...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, u) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{u}")?;
        }
        Ok(())
    }
}

impl Serialize for UriList {
    /// A sequence of `{uri, max_size}` objects.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // The length up front: postcard's sequences need it.
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for u in self.iter() {
            seq.serialize_element(&u)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for UriList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Owned {
            uri: String,
            max_size: Option<u64>,
        }
        let mut list = UriListBuilder::default();
        for u in Vec::<Owned>::deserialize(d)? {
            if scan_uri(u.uri.as_bytes()).is_none_or(|s| s.bang.is_some()) {
                return Err(serde::de::Error::invalid_value(
                    serde::de::Unexpected::Str(&u.uri),
                    &"a reporting URI",
                ));
            }
            list.push(&u.uri, u.max_size);
        }
        Ok(list.finish())
    }
}

/// Parses an RFC 7489 / RFC 9989 reporting URI list, the value at `text[from..to]`. Invalid
/// entries are dropped with a diagnostic; the caller learns how many valid ones remain from the
/// list length.
///
/// One pass over the list's odd bytes ([`for_each_entry`]): in
/// `mailto:a@example.com,mailto:b@example.net` those are the two `:`, the two `@` and the `,`,
/// and they are all a URI's structure that [`check_uri`] needs.
pub(super) fn parse_uri_list(
    tag: &'static str,
    text: &str,
    (from, to): (usize, usize),
    c: &Classes,
    diags: &mut Diagnostics,
    list: &mut UriList,
) {
    let b = text.as_bytes();
    let mut entries = 0usize;
    if clean_uri_list(b, c, from, to, &mut entries) {
        list.joined = text.split_at(to).0.split_at(from).1.into();
        list.sizes = None;
        too_many_uris(tag, entries, diags);
        return;
    }
    let mut out = UriListBuilder::with_capacity(to - from);
    for_each_entry(b, c, from, to, |marks, end| {
        add_uri(tag, text, c, marks, end, &mut out, diags);
        true
    });
    if out.joined.is_empty() {
        diags.warn(code::URI_NONE_VALID, format!("{tag} holds no valid URI"));
    }
    too_many_uris(tag, out.count, diags);
    *list = out.finish();
}

/// The most report URIs one list (`rua`, `ruf`, `frua`, `fruf`) holds before it is flagged: every
/// report is sent to each of them, and domains have been seen accepting aggregate reports for
/// tens of thousands of other domains (report amplification). The record stays valid.
pub const MAX_REPORT_URIS: usize = 5;

/// Warns when a list holds more than [`MAX_REPORT_URIS`] valid URIs.
fn too_many_uris(tag: &str, count: usize, diags: &mut Diagnostics) {
    if count > MAX_REPORT_URIS {
        diags.warn(
            code::URI_TOO_MANY,
            format!(
                "{tag} lists {count} URIs (more than {MAX_REPORT_URIS}): every report is sent to \
                 each of them (report amplification)"
            ),
        );
    }
}

/// Whether `b[from..to]` is a list of valid URIs with nothing to report: no white space, no
/// size limits, no empty entries. Then the list is the value as it stands (the common case:
/// one copy, no diagnostics); otherwise [`parse_uri_list`] takes it entry by entry. `entries`
/// counts the entries visited (all of them when the list is clean).
#[inline]
fn clean_uri_list(b: &[u8], c: &Classes, from: usize, to: usize, entries: &mut usize) -> bool {
    for_each_entry(b, c, from, to, |m, end| {
        *entries += 1;
        !m.wsp && m.bang.is_none() && check_uri(b, c, m, m.start, end)
    })
}

/// Walks the entries of the URI list `b[from..to]`, visiting only its odd bytes (the class
/// bitmaps' bytes that are not letters, digits, `.`, `-`, `_`): each entry's marks and end go
/// to `entry`, which returns whether to go on. A URI cannot hold an unencoded `,`, so one always
/// ends an entry. Whether every entry was visited.
#[inline(always)]
fn for_each_entry(
    b: &[u8],
    c: &Classes,
    from: usize,
    to: usize,
    mut entry: impl FnMut(&UriMarks, usize) -> bool,
) -> bool {
    // `min` lets the compiler see that the positions below are in bounds.
    let to = to.min(b.len());
    let mut marks = UriMarks::new(from);
    for p in c.positions(Class::Odd, from, to) {
        let x = b[p];
        if x == b',' {
            if !entry(&marks, p) {
                return false;
            }
            marks = UriMarks::new(p + 1);
        } else {
            marks.note(x, p);
        }
    }
    entry(&marks, to)
}

/// Where the structural bytes of one URI list entry are (absolute positions).
struct UriMarks {
    start: usize,
    /// The first `:`.
    colon: Option<usize>,
    /// The first `!` (the obsolete size suffix follows it).
    bang: Option<usize>,
    /// The first `?` and `@` before the `!`.
    query: Option<usize>,
    at: Option<usize>,
    /// A byte that is not a VCHAR before the `!`.
    bad: bool,
    /// White space somewhere in the entry (only allowed at its ends).
    wsp: bool,
}

impl UriMarks {
    fn new(start: usize) -> UriMarks {
        UriMarks {
            start,
            colon: None,
            bang: None,
            query: None,
            at: None,
            bad: false,
            wsp: false,
        }
    }

    #[inline]
    fn note(&mut self, x: u8, p: usize) {
        if self.bang.is_some() {
            return;
        }
        match x {
            b':' => {
                self.colon.get_or_insert(p);
            }
            b'!' => self.bang = Some(p),
            b'?' => {
                self.query.get_or_insert(p);
            }
            b'@' => {
                self.at.get_or_insert(p);
            }
            b' ' | b'\t' => self.wsp = true,
            x if !scan::is(x, scan::VCHAR) => self.bad = true,
            _ => {}
        }
    }
}

/// Checks the list entry `text[marks.start..end]` and appends it to `out` when it is a valid
/// URI, or records why not.
fn add_uri(
    tag: &'static str,
    text: &str,
    c: &Classes,
    marks: &UriMarks,
    end: usize,
    out: &mut UriListBuilder,
    diags: &mut Diagnostics,
) {
    let b = text.as_bytes();
    let (s, e) = trim_wsp(b, marks.start, end);
    let bang = if marks.wsp {
        // White space inside the entry, or only around it: decide on the trimmed text.
        let rescanned = scan_uri(&b[s..e]);
        rescanned.map(|r| r.bang.map(|i| s + i))
    } else {
        check_uri(b, c, marks, s, e).then_some(marks.bang)
    };
    let raw = &text[s..e];
    let Some(bang) = bang else {
        diags.warn(
            code::URI_INVALID,
            format!("{tag}: {raw:?} is not a valid URI, ignored"),
        );
        return;
    };
    let (uri, size) = match bang {
        Some(i) => (&text[s..i], Some(&text[i + 1..e])),
        None => (raw, None),
    };
    let max_size = size.and_then(|s| {
        let n = parse_size(s);
        match n {
            Some(_) => diags.info(
                code::URI_SIZE_OBSOLETE,
                format!("{tag}: size limit !{s} is obsolete in RFC 9989 and ignored by reporters"),
            ),
            None => diags.warn(
                code::URI_SIZE_INVALID,
                format!(
                    "{tag}: size limit !{s} is not a number with an optional k/m/g/t unit, ignored"
                ),
            ),
        }
        n
    });
    out.push(uri, max_size);
}

/// Whether `b[s..e]`, whose odd bytes `marks` has noted (no white space among them), is a
/// valid URI: RFC 3986 `scheme ":" hier-part`, with the RFC 7489 rule that `,` and `!` must be
/// encoded (the first `!` starts the obsolete size suffix), and for `mailto:` an address with a
/// local part and a domain.
#[inline(always)]
fn check_uri(b: &[u8], c: &Classes, marks: &UriMarks, s: usize, e: usize) -> bool {
    // "mailto" in any case, as one word comparison: `| 0x20` lower-cases the six letters (and
    // turns nothing else into a letter).
    const MAILTO: u64 = u64::from_le_bytes(*b"mailto\0\0");
    const CASE: u64 = u64::from_le_bytes([0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0, 0]);
    let Some(colon) = marks.colon else {
        return false;
    };
    let scheme = &b[s..colon];
    let mailto = match *scheme {
        [a, b, c, d, e, f] => u64::from_le_bytes([a, b, c, d, e, f, 0, 0]) | CASE == MAILTO,
        _ => false,
    };
    if marks.bad || !(mailto || is_scheme(scheme)) {
        return false;
    }
    let end = marks.bang.unwrap_or(e);
    if end == colon + 1 {
        return false;
    }
    if !mailto {
        return true;
    }
    let addr_end = marks.query.map_or(end, |q| q.min(end));
    match marks.at {
        Some(at) if at < addr_end && at > colon + 1 => is_domain_at(b, c, at + 1, addr_end),
        _ => false,
    }
}

/// RFC 3986 `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &[u8]) -> bool {
    match s.split_first() {
        Some((first, rest)) => {
            scan::is(*first, scan::ALPHA)
                && rest
                    .iter()
                    .all(|&c| scan::is(c, scan::ALNUM) || matches!(c, b'+' | b'-' | b'.'))
        }
        None => false,
    }
}

/// `[start, end)` without leading and trailing WSP (SP, HTAB).
pub(super) fn trim_wsp(b: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && matches!(b[start], b' ' | b'\t') {
        start += 1;
    }
    while end > start && matches!(b[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    (start, end)
}

/// Where a valid URI's optional `!size` suffix starts.
struct UriScan {
    bang: Option<usize>,
}

/// [`check_uri`] for a URI on its own (deserialized lists, entries with white space inside):
/// its classes are computed here.
fn scan_uri(uri: &[u8]) -> Option<UriScan> {
    let mut c = Classes::empty();
    c.index(uri);
    let mut marks = UriMarks::new(0);
    for p in c.positions(Class::Odd, 0, uri.len()) {
        marks.note(uri[p], p);
    }
    (!marks.wsp && check_uri(uri, &c, &marks, 0, uri.len())).then_some(UriScan { bang: marks.bang })
}

/// [`scan::is_domain_name`] for `b[s..e]`, from the class bitmaps: no odd byte at all, then
/// only the dots are looked at.
#[inline(always)]
fn is_domain_at(b: &[u8], c: &Classes, s: usize, e: usize) -> bool {
    let e = if e > s && b[e - 1] == b'.' { e - 1 } else { e };
    if e == s || e - s > 253 || c.any(Class::Odd, s, e) {
        return false;
    }
    let mut label = s;
    for dot in c.positions(Class::Dot, s, e) {
        if dot == label || dot - label > 63 {
            return false;
        }
        label = dot + 1;
    }
    label < e && e - label <= 63
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
