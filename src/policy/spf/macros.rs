//! The RFC 7208 §7 macro language: [`MacroString`] (validated at parse time) and its pure
//! expansion against a [`MacroContext`].

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use compact_str::CompactString;

use crate::policy::scan;

use super::{SpfError, str_enum};

str_enum! {
    /// A macro letter (RFC 7208 §7.2).
    pub enum MacroLetter {
        /// `s`: the sender (`local-part@domain`).
        Sender => "s",
        /// `l`: the sender's local part.
        Local => "l",
        /// `o`: the sender's domain.
        SenderDomain => "o",
        /// `d`: the current domain.
        Domain => "d",
        /// `i`: the client IP (dotted; nibbles for IPv6).
        Ip => "i",
        /// `p`: the validated domain name of the IP (discouraged).
        Ptr => "p",
        /// `v`: `in-addr` or `ip6`.
        IpVersion => "v",
        /// `h`: the HELO/EHLO domain.
        Helo => "h",
        /// `c`: the client IP in its usual text form (exp only).
        ClientIp => "c",
        /// `r`: the receiving host's domain (exp only).
        Receiver => "r",
        /// `t`: the current timestamp (exp only).
        Timestamp => "t",
    }
}

impl MacroLetter {
    /// RFC 7208 §7.2: `c`, `r`, `t` are allowed only in explanation text.
    pub fn exp_only(self) -> bool {
        matches!(
            self,
            MacroLetter::ClientIp | MacroLetter::Receiver | MacroLetter::Timestamp
        )
    }
}

/// One `%{...}` expansion.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Macro {
    /// Which value.
    pub letter: MacroLetter,
    /// Written in upper case: the value is URL-escaped after expansion (RFC 7208 §7.3).
    pub url_escape: bool,
    /// Keep only this many right-hand parts (never zero).
    pub keep: Option<u8>,
    /// Reverse the parts before keeping.
    pub reverse: bool,
    /// Split characters; empty means `.`.
    pub delimiters: String,
}

/// A piece of a macro string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Piece {
    /// Text copied as is.
    Literal(String),
    /// A `%{...}` expansion.
    Macro(Macro),
    /// `%%`.
    Percent,
    /// `%_`: a space.
    Space,
    /// `%-`: `%20`.
    UrlSpace,
}

/// A validated RFC 7208 §7.1 macro-string, kept with its source text.
///
/// Plain domains (no `%`) keep only the text, so parsing a typical record allocates once per
/// term.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MacroString {
    /// Inline when up to 24 bytes long, as most include targets are (`_spf.google.com`).
    pub(super) text: CompactString,
    pub(super) pieces: Box<[Piece]>,
}

impl MacroString {
    /// The source text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the string uses the `p` macro, whose value costs DNS lookups to find.
    pub fn uses_ptr(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Macro(m) if m.letter == MacroLetter::Ptr))
    }

    /// Whether the string contains anything but literal text.
    pub fn has_macros(&self) -> bool {
        !self.pieces.is_empty()
    }

    /// The pieces (empty when the string is plain literal text).
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Parses a macro-string (RFC 7208 §7.1). `exp_letters` allows the `c`, `r`, `t` letters,
    /// which only explanation text may use.
    pub fn parse(text: &str, exp_letters: bool) -> Result<MacroString, SpfError> {
        Self::parse_with(text, exp_letters, false)
    }

    /// Parses explanation text fetched from the `exp=` name (RFC 7208 §6.2:
    /// `explain-string = *( macro-string / SP )`).
    pub fn parse_explanation(text: &str) -> Result<MacroString, SpfError> {
        Self::parse_with(text, true, true)
    }

    #[inline]
    fn parse_with(text: &str, exp_text: bool, spaces: bool) -> Result<MacroString, SpfError> {
        // The common case, a plain domain: one word-at-a-time pass proves every byte is a
        // macro-literal (RFC 7208 §7.1: %x21-24 / %x26-7E, that is VCHAR but '%'). Inlined,
        // so the result is built in the caller's frame rather than returned through memory.
        if scan::all_vchar_except(text.as_bytes(), b'%') {
            return Ok(MacroString {
                text: text.into(),
                pieces: Box::default(),
            });
        }
        Self::parse_pieces(text, exp_text, spaces)
    }

    /// The general case: the text holds a `%` (or a byte that is no macro-literal).
    #[inline(never)]
    fn parse_pieces(text: &str, exp_text: bool, spaces: bool) -> Result<MacroString, SpfError> {
        let is_literal = |c: char| is_macro_literal(c) || (spaces && c == ' ');
        if !text.contains('%') {
            if let Some(c) = text.chars().find(|c| !is_literal(*c)) {
                return Err(SpfError::Macro {
                    text: text.to_owned(),
                    reason: bad_char_reason(c).into(),
                });
            }
            return Ok(MacroString {
                text: text.into(),
                pieces: Box::default(),
            });
        }
        let bad = |reason: &'static str| SpfError::Macro {
            text: text.to_owned(),
            reason: reason.into(),
        };
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c != '%' {
                if !is_literal(c) {
                    return Err(bad(bad_char_reason(c)));
                }
                lit.push(c);
                continue;
            }
            let piece = match chars.next() {
                Some((_, '%')) => Piece::Percent,
                Some((_, '_')) => Piece::Space,
                Some((_, '-')) => Piece::UrlSpace,
                Some((start, '{')) => {
                    let rest = &text[start + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(bad("unterminated %{"));
                    };
                    let body = &rest[..end];
                    for _ in 0..=body.chars().count() {
                        chars.next();
                    }
                    Piece::Macro(parse_macro_body(body, exp_text).map_err(bad)?)
                }
                Some(_) => return Err(bad("'%' must be followed by '{', '%', '_' or '-'")),
                None => return Err(bad("a lone '%' at the end")),
            };
            if !lit.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut lit)));
            }
            pieces.push(piece);
        }
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        Ok(MacroString {
            text: text.into(),
            pieces: pieces.into_boxed_slice(),
        })
    }

    /// Expands the string (RFC 7208 §7.3, §7.4).
    pub fn expand(&self, ctx: &MacroContext<'_>) -> String {
        if self.pieces.is_empty() {
            return self.text.to_string();
        }
        let mut out = String::with_capacity(self.text.len() + 32);
        for p in self.pieces.iter() {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Percent => out.push('%'),
                Piece::Space => out.push(' '),
                Piece::UrlSpace => out.push_str("%20"),
                Piece::Macro(m) => expand_macro(m, ctx, &mut out),
            }
        }
        out
    }

    /// Expands a domain-spec and applies RFC 7208 §7.3's truncation: while the name is longer
    /// than 253 characters, drop labels from the left.
    pub fn expand_domain(&self, ctx: &MacroContext<'_>) -> String {
        let mut s = self.expand(ctx);
        if s.ends_with('.') {
            s.pop();
        }
        while s.len() > 253 {
            match s.find('.') {
                Some(i) => {
                    s.drain(..=i);
                }
                None => break,
            }
        }
        s
    }
}

fn bad_char_reason(c: char) -> &'static str {
    if c.is_whitespace() {
        "white space inside a term"
    } else if c.is_ascii() {
        "a control character"
    } else {
        "a non-ASCII character"
    }
}

/// `macro-literal = %x21-24 / %x26-7E`.
fn is_macro_literal(c: char) -> bool {
    matches!(c, '\x21'..='\x24' | '\x26'..='\x7e')
}

/// `macro-letter transformers *delimiter`, the inside of `%{...}`.
fn parse_macro_body(body: &str, exp_text: bool) -> Result<Macro, &'static str> {
    let mut chars = body.chars();
    let letter_char = chars.next().ok_or("empty %{}")?;
    let url_escape = letter_char.is_ascii_uppercase();
    let lower = letter_char.to_ascii_lowercase();
    let letter =
        MacroLetter::from_token(lower.encode_utf8(&mut [0; 4])).ok_or("unknown macro letter")?;
    if letter.exp_only() && !exp_text {
        return Err("macro letters c, r and t are allowed only in exp= text");
    }
    let rest = chars.as_str();
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let keep = if digits_end == 0 {
        None
    } else {
        let n: u32 = rest[..digits_end]
            .parse()
            .map_err(|_| "transformer number too large")?;
        if n == 0 {
            return Err("a transformer number must be non-zero");
        }
        // RFC 7208 §7.3: implementations must support at least 128 parts; more means all.
        Some(n.min(128) as u8)
    };
    let rest = &rest[digits_end..];
    let (reverse, delims) = match rest.strip_prefix(['r', 'R']) {
        Some(d) => (true, d),
        None => (false, rest),
    };
    if !delims
        .chars()
        .all(|c| matches!(c, '.' | '-' | '+' | ',' | '/' | '_' | '='))
    {
        return Err("invalid delimiter or transformer");
    }
    Ok(Macro {
        letter,
        url_escape,
        keep,
        reverse,
        delimiters: delims.to_owned(),
    })
}

/// The values macros expand to (RFC 7208 §7.2).
#[derive(Clone, Debug)]
pub struct MacroContext<'a> {
    /// `s`: `local-part@domain` of the sender (MAIL FROM, or `postmaster@helo`).
    pub sender: &'a str,
    /// `l`.
    pub local_part: &'a str,
    /// `o`.
    pub sender_domain: &'a str,
    /// `d`: the domain being evaluated.
    pub domain: &'a str,
    /// `i`, `c`, `v`.
    pub ip: IpAddr,
    /// `h`.
    pub helo: &'a str,
    /// `p`: the validated name, found by the caller; `None` expands to `unknown`.
    pub validated_ptr: Option<&'a str>,
    /// `r`: the receiving host's domain.
    pub receiver: &'a str,
    /// `t`: seconds since the epoch.
    pub timestamp: u64,
}

fn expand_macro(m: &Macro, ctx: &MacroContext<'_>, out: &mut String) {
    let owned;
    let value: &str = match m.letter {
        MacroLetter::Sender => ctx.sender,
        MacroLetter::Local => ctx.local_part,
        MacroLetter::SenderDomain => ctx.sender_domain,
        MacroLetter::Domain => ctx.domain,
        MacroLetter::Helo => ctx.helo,
        MacroLetter::Ptr => ctx.validated_ptr.unwrap_or("unknown"),
        MacroLetter::Receiver => ctx.receiver,
        MacroLetter::IpVersion => match ctx.ip {
            IpAddr::V4(_) => "in-addr",
            IpAddr::V6(_) => "ip6",
        },
        MacroLetter::Ip => {
            owned = dotted_ip(ctx.ip);
            &owned
        }
        MacroLetter::ClientIp => {
            owned = ctx.ip.to_string();
            &owned
        }
        MacroLetter::Timestamp => {
            owned = ctx.timestamp.to_string();
            &owned
        }
    };
    let transformed;
    let value = if m.keep.is_none() && !m.reverse && m.delimiters.is_empty() {
        value
    } else {
        let delims: &[char] = &m.delimiters.chars().collect::<Vec<_>>();
        let is_delim = |c: char| {
            if delims.is_empty() {
                c == '.'
            } else {
                delims.contains(&c)
            }
        };
        let mut parts: Vec<&str> = value.split(is_delim).collect();
        if m.reverse {
            parts.reverse();
        }
        if let Some(n) = m.keep {
            let n = n as usize;
            if n < parts.len() {
                parts.drain(..parts.len() - n);
            }
        }
        transformed = parts.join(".");
        &transformed
    };
    if m.url_escape {
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    } else {
        out.push_str(value);
    }
}

/// `i`: dotted decimal for IPv4, dot-separated nibbles for IPv6 (RFC 7208 §7.3).
fn dotted_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(63);
            for (i, b) in v6.octets().iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
            }
            s
        }
    }
}

impl fmt::Display for MacroString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for MacroString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for MacroString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // Explanation text is the most permissive form; domain-specs were checked when the
        // value was first parsed.
        MacroString::parse_explanation(&s).map_err(serde::de::Error::custom)
    }
}
