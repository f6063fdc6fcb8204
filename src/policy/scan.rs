//! Byte-level scanning shared by the parsers: a byte-class table and word-at-a-time checks.
//!
//! Records are short (a DMARC record is ~200 bytes, an SPF record ~150), so the parsers spend
//! their time in a handful of passes over the bytes. Each pass here either looks a byte up in
//! one 256-entry table (one load and one test per byte instead of a chain of comparisons) or
//! checks eight bytes at once with the "has a byte less than n" word tricks, which need no
//! `unsafe` and no SIMD intrinsics.

/// Folding white space bytes: SP, HTAB, CR, LF (RFC 5234 FWS as records carry it).
pub(crate) const FWS: u8 = 1;
/// `ALPHA / DIGIT`.
pub(crate) const ALNUM: u8 = 2;
/// `ALPHA`.
pub(crate) const ALPHA: u8 = 4;
/// A byte allowed in a DNS label as records write them: letters, digits, `-`, `_`.
pub(crate) const LABEL: u8 = 8;
/// `VCHAR` (%x21-7E).
pub(crate) const VCHAR: u8 = 16;
/// `ALPHA / DIGIT / "_"`: a tag-name byte after the first (RFC 6376 §3.2 `ALNUMPUNC`).
pub(crate) const TAG_NAME: u8 = 32;

const fn build_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0usize;
    while i < 256 {
        let b = i as u8;
        let mut c = 0u8;
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            c |= FWS;
        }
        if b.is_ascii_alphabetic() {
            c |= ALPHA | ALNUM | LABEL | TAG_NAME;
        }
        if b.is_ascii_digit() {
            c |= ALNUM | LABEL | TAG_NAME;
        }
        if b == b'-' {
            c |= LABEL;
        }
        if b == b'_' {
            c |= LABEL | TAG_NAME;
        }
        if b >= 0x21 && b <= 0x7e {
            c |= VCHAR;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// The class bits of every byte.
pub(crate) static CLASS: [u8; 256] = build_classes();

/// Whether `b` has any of the class bits in `mask`.
#[inline]
pub(crate) fn is(b: u8, mask: u8) -> bool {
    CLASS[b as usize] & mask != 0
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Whether some byte of `w` is below `n` (exact for `n <= 0x80`).
#[inline]
const fn has_less(w: u64, n: u8) -> bool {
    w.wrapping_sub(ONES * n as u64) & !w & HIGHS != 0
}

/// Whether some byte of `w` is above `n` (exact for `n < 0x80`).
#[inline]
const fn has_more(w: u64, n: u8) -> bool {
    (w.wrapping_add(ONES * (127 - n) as u64) | w) & HIGHS != 0
}

/// Whether some byte of `w` equals `b`.
#[inline]
const fn has_byte(w: u64, b: u8) -> bool {
    has_less(w ^ (ONES * b as u64), 1)
}

fn word(chunk: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(chunk);
    u64::from_le_bytes(a)
}

/// The index of the first `needle` in `s`, eight bytes at a time.
///
/// Unlike a SIMD `memchr`, this has no set-up cost, which matters because most of what the
/// parsers search is under 32 bytes long (a tag value, a mechanism, a URI).
#[inline]
pub(crate) fn find(s: &[u8], needle: u8) -> Option<usize> {
    let pattern = ONES * needle as u64;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0usize;
    for c in &mut chunks {
        let w = word(c) ^ pattern;
        // Zero bytes of `w` are the matches. The lowest flagged lane is exact (a borrow only
        // propagates upwards), and the words are little-endian, so it is the first match.
        let zeros = w.wrapping_sub(ONES) & !w & HIGHS;
        if zeros != 0 {
            return Some(at + (zeros.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|p| at + p)
}

/// Splits `s` at every `sep` (an ASCII byte), like `str::split` but searching with [`find`].
pub(crate) fn split(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    debug_assert!(sep.is_ascii());
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match find(r.as_bytes(), sep) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Whether every byte of `s` is a `VCHAR` other than `except` (eight bytes at a time).
pub(crate) fn all_vchar_except(s: &[u8], except: u8) -> bool {
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let w = word(c);
        if has_less(w, 0x21) || has_more(w, 0x7e) || has_byte(w, except) {
            return false;
        }
    }
    // The tail, padded with a plain byte, is checked as one more word.
    let tail = chunks.remainder();
    if tail.is_empty() {
        return true;
    }
    let pad = if except == b'a' { b'b' } else { b'a' };
    let mut last = [pad; 8];
    last[..tail.len()].copy_from_slice(tail);
    let w = u64::from_le_bytes(last);
    !(has_less(w, 0x21) || has_more(w, 0x7e) || has_byte(w, except))
}

/// Scans `s` up to the first `marks[0]`, checking that every byte before it is a `VCHAR`, and
/// returns where the first of each mark byte is (`marks[1]` and `marks[2]` only before the
/// first `marks[0]`). `None` when a byte that is not a `VCHAR` comes first.
///
/// Words of eight plain bytes (no mark, nothing outside `VCHAR`) are passed over whole; only a
/// word holding something of interest is looked at byte by byte.
pub(crate) fn uri_marks(s: &[u8], marks: [u8; 3]) -> Option<[Option<usize>; 3]> {
    let mut found = [None; 3];
    // Some(true) when the terminating mark was reached.
    let mut step = |b: u8, i: usize| -> Option<bool> {
        if b == marks[0] {
            found[0] = Some(i);
            return Some(true);
        }
        if !is(b, VCHAR) {
            return None;
        }
        for k in 1..3 {
            if b == marks[k] && found[k].is_none() {
                found[k] = Some(i);
            }
        }
        Some(false)
    };
    let mut chunks = s.chunks_exact(8);
    let mut at = 0usize;
    for c in &mut chunks {
        let w = word(c);
        let plain = !(has_less(w, 0x21)
            || has_more(w, 0x7e)
            || has_byte(w, marks[0])
            || has_byte(w, marks[1])
            || has_byte(w, marks[2]));
        if !plain {
            for (j, &b) in c.iter().enumerate() {
                if step(b, at + j)? {
                    return Some(found);
                }
            }
        }
        at += 8;
    }
    for (j, &b) in chunks.remainder().iter().enumerate() {
        if step(b, at + j)? {
            break;
        }
    }
    Some(found)
}

/// Whether `s` is a DNS name as mail records write them: dot-separated labels of letters,
/// digits, `-` and `_`, each 1..=63 bytes, at most 253 bytes, one optional trailing dot.
pub(crate) fn is_domain_name(s: &[u8]) -> bool {
    let s = s.strip_suffix(b".").unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let mut label_start = 0usize;
    for (i, &b) in s.iter().enumerate() {
        if CLASS[b as usize] & LABEL != 0 {
            continue;
        }
        if b != b'.' || i == label_start || i - label_start > 63 {
            return false;
        }
        label_start = i + 1;
    }
    label_start < s.len() && s.len() - label_start <= 63
}

/// The index of the first byte of `s` that is not FWS.
#[inline]
pub(crate) fn skip_fws(s: &[u8]) -> usize {
    s.iter().position(|&b| !is(b, FWS)).unwrap_or(s.len())
}

/// `s` without leading and trailing FWS.
#[inline]
pub(crate) fn trim_fws(s: &str) -> &str {
    let b = s.as_bytes();
    let start = skip_fws(b);
    let end = b
        .iter()
        .rposition(|&b| !is(b, FWS))
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_tricks_agree_with_bytewise() {
        // Every byte value in every lane position, against the obvious byte-wise test.
        for b in 0..=255u8 {
            for lane in 0..8 {
                let mut a = [b'a'; 8];
                a[lane] = b;
                let want = a.iter().all(|&x| (0x21..=0x7e).contains(&x) && x != b'%');
                assert_eq!(all_vchar_except(&a, b'%'), want, "byte {b:#x} lane {lane}");
            }
        }
        assert!(all_vchar_except(b"", b'%'));
        assert!(all_vchar_except(b"_spf.google.com", b'%'));
        assert!(!all_vchar_except(b"_spf.google.com %", b'%'));
    }

    #[test]
    fn uri_marks_agree_with_bytewise() {
        fn slow(s: &[u8], marks: [u8; 3]) -> Option<[Option<usize>; 3]> {
            let end = s.iter().position(|&b| b == marks[0]);
            let head = &s[..end.unwrap_or(s.len())];
            if !head.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
                return None;
            }
            let first = |m: u8| head.iter().position(|&b| b == m);
            Some([end, first(marks[1]), first(marks[2])])
        }
        let samples: [&[u8]; 6] = [
            b"mailto:dmarc-agg@example.com",
            b"mailto:a@b.example?subject=x@y!10m",
            b"https://example.com/report?x=1",
            b"mailto:a b@example.com",
            b"mailto:abcdefgh@example.com!\x80",
            b"",
        ];
        for s in samples {
            for cut in 0..=s.len() {
                let s = &s[..cut];
                assert_eq!(uri_marks(s, *b"!?@"), slow(s, *b"!?@"), "{s:?}");
            }
        }
    }

    #[test]
    fn split_agrees_with_str_split() {
        for s in [
            "",
            ",",
            "a",
            "a,b",
            ",a,,b,",
            "mailto:a@example.com,mailto:b@example.net",
        ] {
            assert_eq!(
                split(s, b',').collect::<Vec<_>>(),
                s.split(',').collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn find_agrees_with_position() {
        let hay = b"v=DMARC1; p=reject;; rua=mailto:a@example.com;\x80;";
        for start in 0..hay.len() {
            for end in start..=hay.len() {
                let s = &hay[start..end];
                for needle in [b';', b'=', b'@', 0x80, b'z'] {
                    let want = s.iter().position(|&b| b == needle);
                    assert_eq!(find(s, needle), want, "{s:?} {needle}");
                }
            }
        }
    }

    #[test]
    fn classes_and_domains() {
        assert!(b"abc_1".iter().all(|&b| is(b, TAG_NAME)));
        assert!(!is(b'-', TAG_NAME) && is(b'-', LABEL) && !is(b'.', LABEL));
        assert!(is(b' ', FWS) && is(b'\n', FWS) && !is(b'\x0b', FWS));
        assert!(is_domain_name(b"example.com"));
        assert!(is_domain_name(b"example.com."));
        assert!(is_domain_name(b"_dmarc.x-y.example"));
        assert!(!is_domain_name(b"example..com"));
        assert!(!is_domain_name(b".example.com"));
        assert!(!is_domain_name(b"example.com.."));
        assert!(!is_domain_name(b""));
        assert!(!is_domain_name(b"exa mple.com"));
        let long = "a".repeat(63);
        assert!(is_domain_name(format!("{long}.com").as_bytes()));
        assert!(!is_domain_name(format!("{long}a.com").as_bytes()));
        assert!(!is_domain_name(format!("com.{long}a").as_bytes()));
        assert_eq!(trim_fws(" \t a b \r\n"), "a b");
        assert_eq!(trim_fws("   "), "");
    }
}
