//! Byte-level scanning shared by the parsers: a byte-class table, word-at-a-time checks, and
//! [`Classes`], bitmaps of a whole record's structural bytes built sixteen bytes at a time.
//!
//! Records are short (a DMARC record is ~200 bytes, an SPF record ~150), so the parsers spend
//! their time in a handful of passes over the bytes. [`Classes`] makes it one pass: SIMD
//! compares (the `wide` crate: SSE2 on x86-64, NEON on AArch64, plain code elsewhere; no
//! `unsafe` here) turn each 16-byte chunk into one bit per byte for each class, and every later
//! question ("where is the next `;`", "is there anything but letters, digits, `.`, `-`, `_`
//! between here and there") is a few word operations instead of a loop over bytes. The
//! byte-class table and the word tricks remain for the short pieces that are cheaper to look at
//! directly.

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

/// A byte class of [`Classes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `;`: the tag-list separator.
    Semi = 0,
    /// SP: the SPF term separator.
    Space = 1,
    /// Anything but ASCII letters, digits, `.`, `-` and `_`: every byte a parser must look at
    /// (separators, `=`, `:`, `@`, `%`, white space, controls, non-ASCII). A run without such
    /// bytes is a plain name or token.
    Odd = 2,
    /// `.`: label boundaries of domain names.
    Dot = 3,
}

/// The bitmaps of 64 bytes: one `u64` per [`Class`], bit `i` for byte `i`.
type Block = [u64; 4];

/// Records up to this many 64-byte blocks (512 bytes) are indexed without a heap allocation
/// (a 2048-bit DKIM key record fits; a 4096-bit one does not).
const INLINE_BLOCKS: usize = 8;

/// One bit per byte of a record for each [`Class`], built in one SIMD pass. Positions are byte
/// offsets into the text; a range `[from, end)` must lie within it.
pub(crate) struct Classes {
    len: usize,
    inline: [Block; INLINE_BLOCKS],
    heap: Vec<Block>,
}

impl Classes {
    /// No text yet: [`Classes::index`] fills it in place (a value this size returned from a
    /// constructor was copied into the caller's frame, measurably, at parsing rates).
    pub(crate) fn empty() -> Classes {
        Classes {
            len: 0,
            inline: [[0; 4]; INLINE_BLOCKS],
            heap: Vec::new(),
        }
    }

    /// The classes of `text` (for tests and one-off uses; parsers build theirs in place).
    #[cfg(test)]
    pub(crate) fn new(text: &[u8]) -> Classes {
        let mut c = Classes::empty();
        c.index(text);
        c
    }

    /// Classifies every byte of `text`, replacing what was indexed before.
    pub(crate) fn index(&mut self, text: &[u8]) {
        let n = text.len();
        let blocks = n.div_ceil(64);
        self.len = n;
        self.heap.clear();
        if blocks > INLINE_BLOCKS {
            self.heap.resize(blocks, [0; 4]);
        }
        let c = self;
        let out: &mut [Block] = if blocks > INLINE_BLOCKS {
            &mut c.heap
        } else {
            &mut c.inline
        };
        let mut whole = text.chunks_exact(64);
        for (block, bytes) in out.iter_mut().zip(&mut whole) {
            *block = block_bits(bytes);
        }
        let rest = whole.remainder();
        if rest.is_empty() {
            return;
        }
        let block = &mut out[n / 64];
        if n < 16 {
            // Too short for one load: padded with a plain byte, which sets no bit.
            let mut a = [b'a'; 16];
            for (d, s) in a.iter_mut().zip(text) {
                *d = *s;
            }
            *block = chunk_bits(a).map(u64::from);
            return;
        }
        // The last partial block sixteen bytes at a time; a last partial chunk is read as the
        // final sixteen bytes of the text (a copy into a padded buffer would stall the load
        // behind the stores), and the bits of bytes already classified are shifted out.
        let base = n - rest.len();
        *block = [0; 4];
        let mut at = 0;
        while at < rest.len() {
            let (start, drop) = match rest.len() - at {
                16.. => (base + at, 0),
                left => (n - 16, 16 - left),
            };
            let chunk: [u8; 16] = text[start..start + 16].try_into().unwrap_or([b'a'; 16]);
            for (w, m) in block.iter_mut().zip(chunk_bits(chunk)) {
                *w |= u64::from(m >> drop) << at;
            }
            at += 16;
        }
    }

    fn blocks(&self) -> &[Block] {
        if self.heap.is_empty() {
            &self.inline
        } else {
            &self.heap
        }
    }

    /// The first position of a `class` byte in `[from, end)`, or `end`.
    #[inline(always)]
    pub(crate) fn next(&self, class: Class, from: usize, end: usize) -> usize {
        debug_assert!(end <= self.len);
        let blocks = self.blocks();
        let mut i = from;
        while i < end {
            let w = blocks[i / 64][class as usize] >> (i % 64);
            if w != 0 {
                return (i + w.trailing_zeros() as usize).min(end);
            }
            i = (i / 64 + 1) * 64;
        }
        end
    }

    /// Whether any byte in `[from, end)` is in `class`.
    #[inline]
    pub(crate) fn any(&self, class: Class, from: usize, end: usize) -> bool {
        self.next(class, from, end) < end
    }

    /// The position of the last `class` byte in `[from, end)`.
    #[inline]
    pub(crate) fn last(&self, class: Class, from: usize, end: usize) -> Option<usize> {
        let blocks = self.blocks();
        let mut e = end;
        while e > from {
            let last = e - 1;
            let w = blocks[last / 64][class as usize] & (u64::MAX >> (63 - last % 64));
            if w != 0 {
                let p = (last / 64) * 64 + 63 - w.leading_zeros() as usize;
                return (p >= from).then_some(p);
            }
            e = (last / 64) * 64;
        }
        None
    }

    /// The positions of `class` bytes in `[from, end)`, in order.
    #[inline]
    pub(crate) fn positions(&self, class: Class, from: usize, end: usize) -> Bits<'_> {
        let blocks = self.blocks();
        let word = from / 64;
        let mask = if from < end {
            blocks[word][class as usize] & (u64::MAX << (from % 64))
        } else {
            0
        };
        Bits {
            blocks,
            class: class as usize,
            word,
            mask,
            end,
        }
    }
}

/// The set bits of one class over a range: a word and the bits of it not yet returned.
pub(crate) struct Bits<'c> {
    blocks: &'c [Block],
    class: usize,
    word: usize,
    mask: u64,
    end: usize,
}

impl Iterator for Bits<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.word += 1;
            if self.word * 64 >= self.end {
                return None;
            }
            self.mask = self.blocks[self.word][self.class];
        }
        let p = self.word * 64 + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        if p >= self.end {
            self.mask = 0;
            self.end = 0;
            return None;
        }
        Some(p)
    }
}

/// The class bitmaps of 64 bytes: four chunks, their bits put side by side.
#[inline]
fn block_bits(bytes: &[u8]) -> Block {
    let chunk =
        |j: usize| -> [u8; 16] { bytes[16 * j..16 * j + 16].try_into().unwrap_or([b'a'; 16]) };
    let (b0, b1, b2, b3) = (
        chunk_bits(chunk(0)),
        chunk_bits(chunk(1)),
        chunk_bits(chunk(2)),
        chunk_bits(chunk(3)),
    );
    std::array::from_fn(|k| {
        u64::from(b0[k]) | u64::from(b1[k]) << 16 | u64::from(b2[k]) << 32 | u64::from(b3[k]) << 48
    })
}

/// The class bitmaps of one 16-byte chunk, in [`Class`] order.
#[inline]
fn chunk_bits(a: [u8; 16]) -> [u16; 4] {
    use wide::u8x16;
    let v = u8x16::from(a);
    let is = |b: u8| v.simd_eq(u8x16::splat(b));
    // Unsigned range tests: x - lo (wrapping) is at most hi - lo exactly for bytes in range.
    let within = |lo: u8, hi: u8, x: u8x16| {
        let d = x - u8x16::splat(lo);
        d.min(u8x16::splat(hi - lo)).simd_eq(d)
    };
    let dot = is(b'.');
    let plain = within(b'a', b'z', v | u8x16::splat(0x20))
        | within(b'0', b'9', v)
        | dot
        | is(b'-')
        | is(b'_');
    let mask = |m: u8x16| m.to_bitmask() as u16;
    [mask(is(b';')), mask(is(b' ')), !mask(plain), mask(dot)]
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

/// Whether `b` is folding white space (SP, HTAB, CR, LF): one compare and a bit test, no table
/// load, since the lexer asks this of nearly every name and value end and the answer is nearly
/// always no.
#[inline(always)]
pub(crate) fn is_fws(b: u8) -> bool {
    const SET: u64 = 1 << b' ' | 1 << b'\t' | 1 << b'\r' | 1 << b'\n';
    b <= b' ' && SET >> b & 1 != 0
}

/// The index of the first byte of `s` that is not FWS.
#[inline]
pub(crate) fn skip_fws(s: &[u8]) -> usize {
    s.iter().position(|&b| !is_fws(b)).unwrap_or(s.len())
}

/// `s` without leading and trailing FWS.
#[inline]
pub(crate) fn trim_fws(s: &str) -> &str {
    let b = s.as_bytes();
    let start = skip_fws(b);
    let end = b.iter().rposition(|&b| !is_fws(b)).map_or(start, |i| i + 1);
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
        // FWS exactly: SP, HTAB, CR, LF (RFC 5234 FWS as records carry it).
        let fws: Vec<u8> = (0..=255u8).filter(|&b| is_fws(b)).collect();
        assert_eq!(fws, vec![b'\t', b'\n', b'\r', b' ']);
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

    #[test]
    fn classes_agree_with_bytewise() {
        fn class_of(b: u8, c: Class) -> bool {
            match c {
                Class::Semi => b == b';',
                Class::Space => b == b' ',
                Class::Odd => !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')),
                Class::Dot => b == b'.',
            }
        }
        let base = b"v=DMARC1; p=reject;\trua=mailto:a@b.example,mailto:c@d.example!10m; \
            fo=1:d\r\n; x_y-z.w=\x80\xff\x00 \x7f{|}~`@[\\]^ ";
        // Every length crosses the 16-byte and 64-byte chunk edges somewhere; long texts go
        // past the inline blocks to the heap.
        let mut long = Vec::new();
        while long.len() < 64 * INLINE_BLOCKS + 100 {
            long.extend_from_slice(base);
        }
        for len in (0..base.len()).chain([long.len()]) {
            let text = if len < base.len() {
                &base[..len]
            } else {
                &long[..]
            };
            // Fresh, and reused after a longer text (stale blocks must not show through).
            let fresh = Classes::new(text);
            let mut reused = Classes::new(&long[..400]);
            reused.index(text);
            for c in [&fresh, &reused] {
                check(c, text);
            }
        }
        fn check(c: &Classes, text: &[u8]) {
            let n = text.len();
            for class in [Class::Semi, Class::Space, Class::Odd, Class::Dot] {
                let want: Vec<usize> = (0..n).filter(|&i| class_of(text[i], class)).collect();
                assert_eq!(
                    c.positions(class, 0, n).collect::<Vec<_>>(),
                    want,
                    "{n} {class:?}"
                );
                for from in (0..n).step_by(7) {
                    for end in (from..=n).step_by(5) {
                        let next = (from..end)
                            .find(|&i| class_of(text[i], class))
                            .unwrap_or(end);
                        let last = (from..end).rev().find(|&i| class_of(text[i], class));
                        let at = format!("{n} {class:?} {from}..{end}");
                        assert_eq!(c.next(class, from, end), next, "next {at}");
                        assert_eq!(c.any(class, from, end), next < end, "any {at}");
                        assert_eq!(c.last(class, from, end), last, "last {at}");
                        let within: Vec<usize> = want
                            .iter()
                            .copied()
                            .filter(|&p| p >= from && p < end)
                            .collect();
                        assert_eq!(
                            c.positions(class, from, end).collect::<Vec<_>>(),
                            within,
                            "positions {at}"
                        );
                    }
                }
            }
        }
    }
}
