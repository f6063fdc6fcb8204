//! SPF records: RFC 7208 §4.5 (record selection), §4.6 (syntax), §5 (mechanisms), §6
//! (modifiers), §7 (macros) and §12 (the collected ABNF).
//!
//! The whole record is validated at parse time, macros included, so evaluation never meets a
//! syntax error half-way through (RFC 7208 §4.6: a syntax error anywhere is a permerror
//! before any mechanism is evaluated). Macro expansion ([`MacroString::expand`]) is a pure
//! function of a [`MacroContext`]; the `p` macro's validated name is supplied by the caller,
//! which owns the DNS.

mod macros;
mod parse;

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{ErrorCode, str_enum};

pub use macros::{Macro, MacroContext, MacroLetter, MacroString, Piece};
pub use parse::parse;

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

super::txt_record! {
    /// Selects and parses the SPF record among a name's joined TXT records. `None` means no SPF
    /// record (RFC 7208 §4.5: result `none`).
    SpfRecord,
    SpfError,
    super::Pick::Unique,
    is_candidate,
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
