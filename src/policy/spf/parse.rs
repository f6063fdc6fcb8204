//! The RFC 7208 §4.6 / §12 record grammar: terms, mechanisms, modifiers, CIDR lengths and
//! domain-specs.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::policy::scan::{self, Class, Classes};
use crate::policy::{Diagnostics, ParseResult, Parsed, Rejected};

use super::{
    Directive, MAX_DNS_LOOKUPS, MacroString, Mechanism, Piece, Qualifier, SpfError, SpfRecord,
    UnknownModifier, code, is_candidate,
};

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
    // Built with room for 8 (most records have fewer); a cached record keeps only its own.
    rec.directives.shrink_to_fit();
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
    } else if lower(IP4) || lower(IP6) {
        let net = arg
            .strip_prefix(':')
            .ok_or_else(|| syntax("requires ':' and an address"))?;
        if lower(IP4) {
            let slash = scan::find(net.as_bytes(), b'/');
            let (addr, prefix) = ip_network::<Ipv4Addr>(term, net, slash, "IPv4", 32)?;
            Mechanism::Ip4 { addr, prefix }
        } else {
            let (addr, prefix) = ip_network::<Ipv6Addr>(term, net, net.rfind('/'), "IPv6", 128)?;
            Mechanism::Ip6 { addr, prefix }
        }
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

/// RFC 7208 §5.6 `ip4-network [ ip4-cidr-length ]` or its IPv6 twin: the address before the
/// `/` at `slash` and the prefix length after it (`max` when there is none).
#[inline]
fn ip_network<A: FromStr>(
    term: &str,
    net: &str,
    slash: Option<usize>,
    family: &str,
    max: u8,
) -> Result<(A, u8), SpfError> {
    let (addr, len) = match slash {
        Some(i) => (&net[..i], Some(&net[i + 1..])),
        None => (net, None),
    };
    let addr = addr.parse().map_err(|_| SpfError::Syntax {
        term: term.to_owned(),
        reason: format!("{addr:?} is not an {family} address").into(),
    })?;
    let prefix = match len {
        None => max,
        Some(l) => parse_cidr(term, l, max)?,
    };
    Ok((addr, prefix))
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
