//! SPF records: RFC 7208 §4.5 (record selection), §4.6 (syntax), §5 (mechanisms), §6
//! (modifiers), §7 (macros) and §12 (the collected ABNF).
//!
//! The whole record is validated at parse time, macros included, so evaluation never meets a
//! syntax error half-way through (RFC 7208 §4.6: a syntax error anywhere is a permerror
//! before any mechanism is evaluated). Macro expansion ([`MacroString::expand`]) is a pure
//! function of a [`MacroContext`]; the `p` macro's validated name is supplied by the caller,
//! which owns the DNS.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use compact_str::CompactString;

use super::scan::{Class, Classes};
use super::{Diagnostics, ErrorCode, ParseResult, Parsed, Rejected, scan, str_enum};

/// Stable diagnostic codes of this parser.
pub mod code {
    #![allow(missing_docs)]
    pub const VERSION: &str = "spf.version.missing";
    pub const MULTIPLE: &str = "spf.record.multiple";
    pub const SYNTAX: &str = "spf.syntax";
    pub const UNKNOWN_MECHANISM: &str = "spf.mechanism.unknown";
    pub const BAD_MACRO: &str = "spf.macro.invalid";
    pub const DUPLICATE_MODIFIER: &str = "spf.modifier.duplicate";
    pub const TOO_MANY_LOOKUPS: &str = "spf.lookups.too_many";
    pub const PTR_USED: &str = "spf.ptr.discouraged";
    pub const PASS_ALL: &str = "spf.all.pass";
    pub const REDIRECT_IGNORED: &str = "spf.redirect.ignored";
    pub const UNKNOWN_MODIFIER: &str = "spf.modifier.unknown";
    pub const VERSION_CASE: &str = "spf.version.case";
    pub const EXTRA_SPACES: &str = "spf.space.extra";
    pub const TERMS_AFTER_ALL: &str = "spf.all.not_last";
}

/// RFC 7208 §4.6.4: the most DNS-querying terms one evaluation may use.
pub const MAX_DNS_LOOKUPS: usize = 10;

str_enum! {
    /// A directive's qualifier (RFC 7208 §4.6.2).
    pub enum Qualifier {
        /// `+`: pass (the default).
        Pass => "+",
        /// `-`: fail.
        Fail => "-",
        /// `~`: softfail.
        SoftFail => "~",
        /// `?`: neutral.
        Neutral => "?",
    }
}

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
    text: CompactString,
    pieces: Box<[Piece]>,
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

/// A mechanism (RFC 7208 §5).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// `all`.
    All,
    /// `include:<domain-spec>`.
    Include {
        /// The domain-spec.
        domain: MacroString,
    },
    /// `a[:<domain-spec>][/<ip4-cidr>][//<ip6-cidr>]`.
    A {
        /// The domain-spec; `None` means the current domain.
        domain: Option<MacroString>,
        /// The IPv4 prefix length (default 32).
        cidr4: Option<u8>,
        /// The IPv6 prefix length (default 128).
        cidr6: Option<u8>,
    },
    /// `mx[:<domain-spec>][/<ip4-cidr>][//<ip6-cidr>]`.
    Mx {
        /// The domain-spec; `None` means the current domain.
        domain: Option<MacroString>,
        /// The IPv4 prefix length (default 32).
        cidr4: Option<u8>,
        /// The IPv6 prefix length (default 128).
        cidr6: Option<u8>,
    },
    /// `ptr[:<domain-spec>]`.
    Ptr {
        /// The domain-spec; `None` means the current domain.
        domain: Option<MacroString>,
    },
    /// `ip4:<network>[/<len>]`.
    Ip4 {
        /// The network address as written.
        addr: Ipv4Addr,
        /// Prefix length, 0..=32.
        prefix: u8,
    },
    /// `ip6:<network>[/<len>]`.
    Ip6 {
        /// The network address as written.
        addr: Ipv6Addr,
        /// Prefix length, 0..=128.
        prefix: u8,
    },
    /// `exists:<domain-spec>`.
    Exists {
        /// The domain-spec.
        domain: MacroString,
    },
}

impl Mechanism {
    /// Whether evaluating this mechanism queries DNS (RFC 7208 §4.6.4).
    pub fn queries_dns(&self) -> bool {
        !matches!(
            self,
            Mechanism::All | Mechanism::Ip4 { .. } | Mechanism::Ip6 { .. }
        )
    }
}

/// A qualified mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Directive {
    /// The result when the mechanism matches.
    pub qualifier: Qualifier,
    /// What to match.
    pub mechanism: Mechanism,
}

/// A modifier other than `redirect` and `exp`, kept as published (RFC 7208 §6: unknown
/// modifiers are ignored by evaluation).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UnknownModifier {
    /// The name, as written.
    pub name: String,
    /// The value, a validated macro-string.
    pub value: MacroString,
}

/// A parsed SPF record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpfRecord {
    /// The directives, in evaluation order.
    pub directives: Vec<Directive>,
    /// `redirect=`, if present.
    pub redirect: Option<MacroString>,
    /// `exp=`, if present.
    pub exp: Option<MacroString>,
    /// Other modifiers, in order.
    pub unknown_modifiers: Vec<UnknownModifier>,
    /// DNS-querying terms counted statically (include, a, mx, ptr, exists, redirect).
    pub dns_lookups: usize,
}

/// Why an SPF record is a permerror.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpfError {
    /// The text does not start with `v=spf1` followed by a space or the end.
    Version,
    /// More than one `v=spf1` record at the name (RFC 7208 §4.5: permerror).
    MultipleRecords {
        /// How many.
        count: usize,
    },
    /// A term that is neither a known mechanism nor a `name=value` modifier.
    UnknownMechanism {
        /// The term.
        term: String,
    },
    /// A malformed term.
    Syntax {
        /// The term.
        term: String,
        /// What is wrong.
        reason: Cow<'static, str>,
    },
    /// A malformed macro-string.
    Macro {
        /// The macro-string.
        text: String,
        /// What is wrong.
        reason: Cow<'static, str>,
    },
    /// `redirect=` or `exp=` given twice (RFC 7208 §6).
    DuplicateModifier {
        /// `redirect` or `exp`.
        name: Cow<'static, str>,
    },
}

use std::borrow::Cow;

impl fmt::Display for SpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpfError::Version => f.write_str("the record does not start with v=spf1"),
            SpfError::MultipleRecords { count } => {
                write!(
                    f,
                    "{count} SPF records at one name (RFC 7208 §4.5: permerror)"
                )
            }
            SpfError::UnknownMechanism { term } => write!(f, "unknown mechanism {term:?}"),
            SpfError::Syntax { term, reason } => write!(f, "{term:?}: {reason}"),
            SpfError::Macro { text, reason } => write!(f, "macro-string {text:?}: {reason}"),
            SpfError::DuplicateModifier { name } => {
                write!(f, "{name}= appears more than once (RFC 7208 §6)")
            }
        }
    }
}

impl std::error::Error for SpfError {}

impl ErrorCode for SpfError {
    fn code(&self) -> &'static str {
        match self {
            SpfError::Version => code::VERSION,
            SpfError::MultipleRecords { .. } => code::MULTIPLE,
            SpfError::UnknownMechanism { .. } => code::UNKNOWN_MECHANISM,
            SpfError::Syntax { .. } => code::SYNTAX,
            SpfError::Macro { .. } => code::BAD_MACRO,
            SpfError::DuplicateModifier { .. } => code::DUPLICATE_MODIFIER,
        }
    }
}

/// RFC 7208 §4.5: a record is an SPF record when it starts with `v=spf1` (any case) followed
/// by a space or the end of the record.
pub fn is_candidate(text: &str) -> bool {
    text.get(..6)
        .is_some_and(|v| v.eq_ignore_ascii_case("v=spf1"))
        && matches!(text.as_bytes().get(6), None | Some(b' '))
}

/// Selects and parses the SPF record among a name's joined TXT records. `None` means no SPF
/// record (RFC 7208 §4.5: result `none`).
pub fn from_txt<'a, I>(records: I) -> Option<ParseResult<SpfRecord, SpfError>>
where
    I: IntoIterator<Item = &'a str>,
{
    match super::select(records, is_candidate) {
        super::Selection::None => None,
        super::Selection::One(r) => Some(parse(r)),
        super::Selection::Multiple(count) => Some(Err(Rejected::new(
            SpfError::MultipleRecords { count },
            Diagnostics::default(),
        ))),
    }
}

/// Parses one SPF record (already selected and joined).
pub fn parse(text: &str) -> ParseResult<SpfRecord, SpfError> {
    let mut diags = Diagnostics::default();
    match parse_inner(text, &mut diags) {
        Ok(rec) => Ok(Parsed {
            policy: rec,
            diagnostics: diags,
        }),
        Err(e) => Err(Rejected::new(e, diags)),
    }
}

fn parse_inner(text: &str, diags: &mut Diagnostics) -> Result<SpfRecord, SpfError> {
    if !is_candidate(text) {
        return Err(SpfError::Version);
    }
    if &text[..6] != "v=spf1" {
        diags.info(
            code::VERSION_CASE,
            format!("version {:?} read as v=spf1", &text[..6]),
        );
    }
    let mut rec = SpfRecord {
        directives: Vec::with_capacity(8),
        redirect: None,
        exp: None,
        unknown_modifiers: Vec::new(),
        dns_lookups: 0,
    };
    // Terms are found from the byte classes: spaces split them, and the first odd byte (not a
    // letter, digit, '.', '-', '_') ends a term's name.
    let mut c = Classes::empty();
    c.index(text.as_bytes());
    let mut spaces = c.positions(Class::Space, 6, text.len());
    let mut all_seen = false;
    let mut extra_spaces = false;
    let mut first = true;
    let mut start = 6;
    let mut more = true;
    while more {
        let end = spaces.next().unwrap_or(text.len());
        more = end < text.len();
        let at = start;
        let term = text.split_at(end).0.split_at(at).1;
        start = end + 1;
        let was_first = std::mem::replace(&mut first, false);
        if term.is_empty() {
            // The body starts with the space after "v=spf1", and one space may end it; any
            // other empty term is a second space between two terms.
            if !was_first && more && !extra_spaces {
                extra_spaces = true;
                diags.info(code::EXTRA_SPACES, "more than one space between terms");
            }
            continue;
        }
        // One scan for the leading name serves both term kinds: a modifier's name ends at
        // its '=', a mechanism's at ':', '/' or the end.
        let name_end = c.next(Class::Odd, at, end) - at;
        if term.as_bytes().get(name_end) == Some(&b'=') {
            let m = parse_modifier(term, name_end)?;
            match m {
                Modifier::Redirect(d) => {
                    if rec.redirect.replace(d).is_some() {
                        return Err(SpfError::DuplicateModifier {
                            name: "redirect".into(),
                        });
                    }
                    rec.dns_lookups += 1;
                }
                Modifier::Exp(d) => {
                    if rec.exp.replace(d).is_some() {
                        return Err(SpfError::DuplicateModifier { name: "exp".into() });
                    }
                }
                Modifier::Unknown(u) => {
                    diags.info(
                        code::UNKNOWN_MODIFIER,
                        format!("unknown modifier {}= ignored", u.name),
                    );
                    rec.unknown_modifiers.push(u);
                }
            }
            continue;
        }
        let d = parse_directive(term, name_end, &c, at)?;
        if all_seen {
            diags.warn(
                code::TERMS_AFTER_ALL,
                format!("{term:?} comes after 'all' and is never evaluated"),
            );
        }
        match &d.mechanism {
            Mechanism::All => {
                all_seen = true;
                if d.qualifier == Qualifier::Pass {
                    diags.warn(code::PASS_ALL, "+all authorizes every host on the Internet");
                }
            }
            Mechanism::Ptr { .. } => {
                diags.warn(
                    code::PTR_USED,
                    "ptr is slow and unreliable; RFC 7208 §5.5 says do not use it",
                );
            }
            _ => {}
        }
        if d.mechanism.queries_dns() {
            rec.dns_lookups += 1;
        }
        rec.directives.push(d);
    }
    if all_seen && rec.redirect.is_some() {
        diags.info(
            code::REDIRECT_IGNORED,
            "redirect= is ignored because the record has 'all' (RFC 7208 §6.1)",
        );
    }
    if rec.dns_lookups > MAX_DNS_LOOKUPS {
        diags.warn(
            code::TOO_MANY_LOOKUPS,
            format!(
                "{} DNS-querying terms: more than {MAX_DNS_LOOKUPS} makes evaluation a permerror when they are reached (RFC 7208 §4.6.4)",
                rec.dns_lookups
            ),
        );
    }
    Ok(rec)
}

enum Modifier {
    Redirect(MacroString),
    Exp(MacroString),
    Unknown(UnknownModifier),
}

/// `name "=" macro-string`, where `name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )`; the
/// caller found the `=` at `name_end`.
fn parse_modifier(term: &str, name_end: usize) -> Result<Modifier, SpfError> {
    let name = &term[..name_end];
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(SpfError::Syntax {
            term: term.to_owned(),
            reason: "a modifier name must start with a letter".into(),
        });
    }
    let value = &term[name_end + 1..];
    if name.eq_ignore_ascii_case("redirect") || name.eq_ignore_ascii_case("exp") {
        let spec = parse_domain_spec(term, value)?;
        return Ok(if name.eq_ignore_ascii_case("exp") {
            Modifier::Exp(spec)
        } else {
            Modifier::Redirect(spec)
        });
    }
    let value = MacroString::parse(value, true)?;
    Ok(Modifier::Unknown(UnknownModifier {
        name: name.to_owned(),
        value,
    }))
}

/// `[qualifier] mechanism`; `name_end` is where the caller's scan of leading name bytes
/// (letters, digits, `-`, `_`, `.`) stopped, which is where an unqualified or `-`-qualified
/// mechanism name ends when a `:`, `/` or the end follows.
// Inlined into the term loop: a directive returned through memory and pushed at once was
// reloaded before its stores had landed (a measurable stall at this rate).
#[inline(always)]
fn parse_directive(
    term: &str,
    name_end: usize,
    c: &Classes,
    at: usize,
) -> Result<Directive, SpfError> {
    let (qualifier, rest) = match term.as_bytes()[0] {
        b'+' => (Qualifier::Pass, &term[1..]),
        b'-' => (Qualifier::Fail, &term[1..]),
        b'~' => (Qualifier::SoftFail, &term[1..]),
        b'?' => (Qualifier::Neutral, &term[1..]),
        _ => (Qualifier::Pass, term),
    };
    let offset = term.len() - rest.len();
    let name_end = match term.as_bytes().get(name_end) {
        None | Some(b':' | b'/') if name_end >= offset => name_end - offset,
        _ => rest
            .bytes()
            .position(|c| c == b':' || c == b'/')
            .unwrap_or(rest.len()),
    };
    let (name, arg) = rest.split_at(name_end);
    let key = mechanism_key(name.as_bytes());
    let unknown = || SpfError::UnknownMechanism {
        term: term.to_owned(),
    };
    let syntax = |reason: &'static str| SpfError::Syntax {
        term: term.to_owned(),
        reason: reason.into(),
    };
    // The known names' keys are constants, so each test below is one word comparison.
    const ALL: u64 = mechanism_key(b"all");
    const INCLUDE: u64 = mechanism_key(b"include");
    const EXISTS: u64 = mechanism_key(b"exists");
    const A: u64 = mechanism_key(b"a");
    const MX: u64 = mechanism_key(b"mx");
    const PTR: u64 = mechanism_key(b"ptr");
    const IP4: u64 = mechanism_key(b"ip4");
    const IP6: u64 = mechanism_key(b"ip6");
    let lower = |k: u64| key == k;
    let mechanism = if lower(ALL) {
        if !arg.is_empty() {
            return Err(syntax("'all' takes no argument"));
        }
        Mechanism::All
    } else if lower(INCLUDE) || lower(EXISTS) {
        let spec = arg
            .strip_prefix(':')
            .ok_or_else(|| syntax("requires ':' and a domain"))?;
        // The spec ends the term.
        let domain = parse_domain_spec_at(term, spec, c, at + term.len() - spec.len())?;
        if lower(INCLUDE) {
            Mechanism::Include { domain }
        } else {
            Mechanism::Exists { domain }
        }
    } else if lower(A) || lower(MX) {
        let (spec, cidr) = split_cidr(arg);
        let domain = match spec {
            "" => None,
            s => Some(parse_domain_spec(
                term,
                s.strip_prefix(':').ok_or_else(|| syntax("expected ':'"))?,
            )?),
        };
        let (cidr4, cidr6) = parse_dual_cidr(term, cidr)?;
        if lower(A) {
            Mechanism::A {
                domain,
                cidr4,
                cidr6,
            }
        } else {
            Mechanism::Mx {
                domain,
                cidr4,
                cidr6,
            }
        }
    } else if lower(PTR) {
        let domain = match arg {
            "" => None,
            s => match s.strip_prefix(':') {
                Some(spec) => Some(parse_domain_spec(term, spec)?),
                None => return Err(syntax("ptr takes no CIDR length")),
            },
        };
        Mechanism::Ptr { domain }
    } else if lower(IP4) {
        let net = arg
            .strip_prefix(':')
            .ok_or_else(|| syntax("requires ':' and an address"))?;
        let (addr, len) = match scan::find(net.as_bytes(), b'/') {
            Some(i) => (&net[..i], Some(&net[i + 1..])),
            None => (net, None),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| SpfError::Syntax {
            term: term.to_owned(),
            reason: format!("{addr:?} is not an IPv4 address").into(),
        })?;
        let prefix = match len {
            None => 32,
            Some(l) => parse_cidr(term, l, 32)?,
        };
        Mechanism::Ip4 { addr, prefix }
    } else if lower(IP6) {
        let net = arg
            .strip_prefix(':')
            .ok_or_else(|| syntax("requires ':' and an address"))?;
        let (addr, len) = match net.rfind('/') {
            Some(i) => (&net[..i], Some(&net[i + 1..])),
            None => (net, None),
        };
        let addr: Ipv6Addr = addr.parse().map_err(|_| SpfError::Syntax {
            term: term.to_owned(),
            reason: format!("{addr:?} is not an IPv6 address").into(),
        })?;
        let prefix = match len {
            None => 128,
            Some(l) => parse_cidr(term, l, 128)?,
        };
        Mechanism::Ip6 { addr, prefix }
    } else {
        return Err(unknown());
    };
    Ok(Directive {
        qualifier,
        mechanism,
    })
}

/// A mechanism name of at most 8 bytes packed into a word, lower-cased (0 for longer names,
/// which name no mechanism), so recognising it costs word comparisons, not string compares.
const fn mechanism_key(name: &[u8]) -> u64 {
    if name.len() > 8 {
        return 0;
    }
    let mut k = 0u64;
    let mut i = 0;
    while i < name.len() {
        k |= (name[i].to_ascii_lowercase() as u64) << (8 * i);
        i += 1;
    }
    k
}

/// Splits `[:domain-spec][dual-cidr]`: the CIDR part is a trailing `/digits`, `//digits` or
/// `/digits//digits`. A `/` followed by anything else belongs to the domain-spec (macro
/// literals may hold `/` and `:`), so `a:foo:bar/baz.example.com` names that domain.
fn split_cidr(arg: &str) -> (&str, &str) {
    fn strip_num<'s>(s: &'s str, sep: &str) -> Option<&'s str> {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        s[..s.len() - digits].strip_suffix(sep)
    }
    let mut end = arg;
    if let Some(rest) = strip_num(end, "//") {
        end = rest;
    }
    if let Some(rest) = strip_num(end, "/")
        && !rest.ends_with('/')
    {
        end = rest;
    }
    arg.split_at(end.len())
}

/// `dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ]`.
fn parse_dual_cidr(term: &str, s: &str) -> Result<(Option<u8>, Option<u8>), SpfError> {
    if s.is_empty() {
        return Ok((None, None));
    }
    let bad = || SpfError::Syntax {
        term: term.to_owned(),
        reason: "malformed CIDR length".into(),
    };
    let s = s.strip_prefix('/').ok_or_else(bad)?;
    if let Some(v6) = s.strip_prefix('/') {
        return Ok((None, Some(parse_cidr(term, v6, 128)?)));
    }
    match s.split_once("//") {
        Some((v4, v6)) => Ok((
            Some(parse_cidr(term, v4, 32)?),
            Some(parse_cidr(term, v6, 128)?),
        )),
        None => Ok((Some(parse_cidr(term, s, 32)?), None)),
    }
}

/// `"0" / %x31-39 0*2DIGIT`, at most `max`.
fn parse_cidr(term: &str, s: &str, max: u8) -> Result<u8, SpfError> {
    let bad = |why: String| SpfError::Syntax {
        term: term.to_owned(),
        reason: why.into(),
    };
    if s.is_empty()
        || s.len() > 3
        || !s.bytes().all(|b| b.is_ascii_digit())
        || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(bad(format!("CIDR length {s:?} is not a plain number")));
    }
    let n: u16 = s
        .parse()
        .map_err(|_| bad(format!("CIDR length {s:?} is not a number")))?;
    if n > u16::from(max) {
        return Err(bad(format!("CIDR length /{n} is over {max}")));
    }
    Ok(n as u8)
}

/// [`parse_domain_spec`] for a spec at `text[s..]` of a record whose classes are `c`. A spec
/// without odd bytes (only letters, digits, '.', '-', '_': every plain domain) is a valid
/// macro-string as it stands, and its top label is found from the dot bitmap.
#[inline]
fn parse_domain_spec_at(
    term: &str,
    spec: &str,
    c: &Classes,
    s: usize,
) -> Result<MacroString, SpfError> {
    let e = s + spec.len();
    if spec.is_empty() || c.any(Class::Odd, s, e) {
        return parse_domain_spec(term, spec);
    }
    let tail_end = if spec.ends_with('.') { e - 1 } else { e };
    let top = match c.last(Class::Dot, s, tail_end) {
        Some(dot) => spec.split_at(tail_end - s).0.split_at(dot + 1 - s).1,
        None => "",
    };
    if top.is_empty() || !is_toplabel(top) {
        // Let the general path name the problem.
        return parse_domain_spec(term, spec);
    }
    Ok(MacroString {
        text: spec.into(),
        pieces: Box::default(),
    })
}

/// `domain-spec = macro-string domain-end`, `domain-end = ( "." toplabel [ "." ] ) /
/// macro-expand` (RFC 7208 §7.1).
#[inline]
fn parse_domain_spec(term: &str, spec: &str) -> Result<MacroString, SpfError> {
    let ms = MacroString::parse(spec, false)?;
    let bad = |reason: &'static str| SpfError::Syntax {
        term: term.to_owned(),
        reason: reason.into(),
    };
    if spec.is_empty() {
        return Err(bad("empty domain-spec"));
    }
    // Ends with a macro-expand: any of %{..}, %%, %_, %-.
    let ends_with_expand = match ms.pieces.last() {
        Some(Piece::Literal(_)) | None => false,
        Some(_) => true,
    };
    if ends_with_expand {
        return Ok(ms);
    }
    let tail = match ms.pieces.last() {
        Some(Piece::Literal(s)) => s.as_str(),
        _ => &ms.text,
    };
    let tail = tail.strip_suffix('.').unwrap_or(tail);
    let Some(dot) = tail.bytes().rposition(|c| c == b'.') else {
        return Err(bad(
            "a domain-spec must end in '.' and a top label (RFC 7208 §7.1)",
        ));
    };
    if !is_toplabel(&tail[dot + 1..]) {
        return Err(bad(
            "the top label must be alphanumeric with at least one letter (RFC 7208 §7.1)",
        ));
    }
    Ok(ms)
}

/// `toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )`.
fn is_toplabel(l: &str) -> bool {
    let b = l.as_bytes();
    if b.is_empty() || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return false;
    }
    if b.contains(&b'-') {
        b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric()
    } else {
        b.iter().any(|c| c.is_ascii_alphabetic())
    }
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.qualifier != Qualifier::Pass {
            f.write_str(self.qualifier.as_str())?;
        }
        let dual = |f: &mut fmt::Formatter<'_>,
                    d: &Option<MacroString>,
                    c4: &Option<u8>,
                    c6: &Option<u8>| {
            if let Some(d) = d {
                write!(f, ":{d}")?;
            }
            if let Some(c) = c4 {
                write!(f, "/{c}")?;
            }
            if let Some(c) = c6 {
                write!(f, "//{c}")?;
            }
            Ok(())
        };
        match &self.mechanism {
            Mechanism::All => f.write_str("all"),
            Mechanism::Include { domain } => write!(f, "include:{domain}"),
            Mechanism::Exists { domain } => write!(f, "exists:{domain}"),
            Mechanism::A {
                domain,
                cidr4,
                cidr6,
            } => {
                f.write_str("a")?;
                dual(f, domain, cidr4, cidr6)
            }
            Mechanism::Mx {
                domain,
                cidr4,
                cidr6,
            } => {
                f.write_str("mx")?;
                dual(f, domain, cidr4, cidr6)
            }
            Mechanism::Ptr { domain: None } => f.write_str("ptr"),
            Mechanism::Ptr { domain: Some(d) } => write!(f, "ptr:{d}"),
            Mechanism::Ip4 { addr, prefix } if *prefix == 32 => write!(f, "ip4:{addr}"),
            Mechanism::Ip4 { addr, prefix } => write!(f, "ip4:{addr}/{prefix}"),
            Mechanism::Ip6 { addr, prefix } if *prefix == 128 => write!(f, "ip6:{addr}"),
            Mechanism::Ip6 { addr, prefix } => write!(f, "ip6:{addr}/{prefix}"),
        }
    }
}

impl fmt::Display for SpfRecord {
    /// The canonical record: directives in order, then `redirect=`, `exp=` and the unknown
    /// modifiers. Parsing it gives back an equal record.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=spf1")?;
        for d in &self.directives {
            write!(f, " {d}")?;
        }
        if let Some(r) = &self.redirect {
            write!(f, " redirect={r}")?;
        }
        if let Some(e) = &self.exp {
            write!(f, " exp={e}")?;
        }
        for m in &self.unknown_modifiers {
            write!(f, " {}={}", m.name, m.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
