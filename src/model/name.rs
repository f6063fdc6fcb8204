//! The one validated domain name. A name is checked once where it enters (the socket, the DNS
//! front-end, the CLI, a name read out of a record or built by SPF macro expansion) and carried
//! everywhere after that as a [`DomainName`]: lower-case ASCII (A-labels), no trailing dot,
//! labels of 1..=63 octets, at most 253 octets (RFC 1035 §2.3.4). Nothing downstream checks it
//! again; a longer name is built from a valid one with [`DomainName::prefixed`], which checks
//! only what the prefix adds.
//!
//! Two spellings are accepted: [`DomainName::host`] for names a client sends (letters, digits,
//! `-` and `_`; internationalized names converted with IDNA) and [`DomainName::dns`] for names
//! that reach DNS through records (any printable ASCII: DNS labels are binary, RFC 2181 §11, and
//! SPF macro expansion can produce spaces and `%`). An author (From) domain for DMARC may be
//! longer than DNS allows: [`AuthorDomain`].

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a name is not a domain name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// No labels at all.
    Empty,
    /// Longer than 253 octets.
    TooLong,
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A label longer than 63 octets.
    LabelTooLong,
    /// Octets the spelling does not allow.
    BadCharacters,
    /// Non-ASCII that IDNA cannot convert.
    NotIdna,
}

impl NameError {
    /// The reason, for error messages.
    pub fn reason(self) -> &'static str {
        match self {
            NameError::Empty => "empty name",
            NameError::TooLong => "longer than 253 octets",
            NameError::EmptyLabel => "empty label",
            NameError::LabelTooLong => "a label is longer than 63 octets",
            NameError::BadCharacters => "characters other than letters, digits, '-' and '_'",
            NameError::NotIdna => "not a valid internationalized domain name",
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for NameError {}

/// Which octets a label may hold.
#[derive(Clone, Copy)]
enum Spelling {
    /// Letters, digits, `-`, `_` (what a client sends).
    Host,
    /// Printable ASCII (what records and macros produce).
    Dns,
}

impl Spelling {
    fn allows(self, b: u8) -> bool {
        match self {
            Spelling::Host => b.is_ascii_alphanumeric() || b == b'-' || b == b'_',
            Spelling::Dns => (0x20..0x7f).contains(&b),
        }
    }
}

/// Checks the labels of an ASCII name without a trailing dot, and with `dns_lengths` its
/// lengths (RFC 1035 §2.3.4).
fn check(name: &str, spelling: Spelling, dns_lengths: bool) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if dns_lengths && name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if dns_lengths && label.len() > 63 {
            return Err(NameError::LabelTooLong);
        }
        if !label.bytes().all(|b| spelling.allows(b)) {
            return Err(NameError::BadCharacters);
        }
    }
    Ok(())
}

/// The longest name DNS can carry, in presentation form without the trailing dot.
pub const MAX_NAME: usize = 253;

/// Strips one trailing dot; converts non-ASCII with IDNA (host spelling only); lower-cases.
/// Borrows when the input is already in its final form (the usual case).
fn canonical(input: &str, spelling: Spelling) -> Result<std::borrow::Cow<'_, str>, NameError> {
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if !trimmed.is_ascii() {
        return match spelling {
            Spelling::Host => idna::domain_to_ascii(trimmed)
                .map(Into::into)
                .map_err(|_| NameError::NotIdna),
            Spelling::Dns => Err(NameError::BadCharacters),
        };
    }
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(trimmed.to_ascii_lowercase().into())
    } else {
        Ok(trimmed.into())
    }
}

/// A validated domain name (see the module documentation). Cloning shares the text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(Arc<str>);

impl DomainName {
    /// A name as a client sends it: letters, digits, `-`, `_`; IDNA for non-ASCII; any case;
    /// one trailing dot allowed.
    pub fn host(input: &str) -> Result<DomainName, NameError> {
        DomainName::new(input, Spelling::Host)
    }

    /// A name as it reaches DNS from records or macro expansion: any printable ASCII; any
    /// case; one trailing dot allowed.
    pub fn dns(input: &str) -> Result<DomainName, NameError> {
        DomainName::new(input, Spelling::Dns)
    }

    /// [`DomainName::host`] for a string the caller owns: kept without a copy when it is
    /// already canonical; on error the input comes back with the reason.
    pub fn host_owned(input: String) -> Result<DomainName, (String, NameError)> {
        let plain = !input.ends_with('.')
            && input.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
            });
        let checked = if plain {
            check(&input, Spelling::Host, true).map(|()| DomainName(Arc::from(input.as_str())))
        } else {
            DomainName::host(&input)
        };
        checked.map_err(|e| (input, e))
    }

    fn new(input: &str, spelling: Spelling) -> Result<DomainName, NameError> {
        let name = canonical(input, spelling)?;
        check(&name, spelling, true)?;
        Ok(DomainName(Arc::from(name.as_ref())))
    }

    /// The name: lower-case, no trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// `<prefix>.<self>`, e.g. `_dmarc.example.com` or `s1._domainkey.example.com`: only the
    /// prefix's labels and the total length are checked. `None` when the result would be
    /// longer than DNS allows (RFC 9989 §4.10 skips such names) or the prefix is not a valid
    /// sequence of labels.
    pub fn prefixed(&self, prefix: &str) -> Option<DomainName> {
        let prefix = canonical(prefix, Spelling::Dns).ok()?;
        if prefix.len() + 1 + self.0.len() > MAX_NAME {
            return None;
        }
        check(&prefix, Spelling::Dns, true).ok()?;
        let mut s = String::with_capacity(prefix.len() + 1 + self.0.len());
        s.push_str(&prefix);
        s.push('.');
        s.push_str(&self.0);
        Some(DomainName(Arc::from(s)))
    }

    /// The name one label up (`None` for a single label).
    pub fn parent(&self) -> Option<DomainName> {
        self.0
            .split_once('.')
            .map(|(_, rest)| DomainName(Arc::from(rest)))
    }

    /// The number of labels.
    pub fn label_count(&self) -> usize {
        self.0.split('.').count()
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for DomainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for DomainName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for DomainName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for DomainName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DomainName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DomainName::dns(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// The author (RFC5322.From) domain DMARC is asked about. Usually a [`DomainName`]; a name
/// beyond DNS's lengths (over 253 octets, or a label over 63) that is otherwise a plausible
/// host name is kept too: it cannot exist, so its organization's `np` applies (RFC 9989 §4.10
/// skips the query names that cannot be formed). Garbage is still an error.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuthorDomain {
    /// A name DNS can carry.
    Dns(DomainName),
    /// A name too long for DNS (lower-case ASCII, labels of letters, digits, `-`, `_`).
    Unformable(Arc<str>),
}

impl AuthorDomain {
    /// Validates a From domain as a client sends it (see [`DomainName::host`]).
    pub fn parse(input: &str) -> Result<AuthorDomain, NameError> {
        let err = match DomainName::host(input) {
            Ok(d) => return Ok(AuthorDomain::Dns(d)),
            Err(e) => e,
        };
        if !matches!(err, NameError::TooLong | NameError::LabelTooLong) {
            return Err(err);
        }
        let name = canonical(input, Spelling::Host)?;
        check(&name, Spelling::Host, false).map_err(|_| err)?;
        Ok(AuthorDomain::Unformable(Arc::from(name.as_ref())))
    }

    /// The name's text.
    pub fn as_str(&self) -> &str {
        match self {
            AuthorDomain::Dns(d) => d.as_str(),
            AuthorDomain::Unformable(s) => s,
        }
    }

    /// `_dmarc.<suffix>` for `suffix`, this domain or a shorter name of it at a label boundary
    /// (what a tree walk asks), when DNS can carry it: only lengths are checked, the labels
    /// were checked once when this domain was. `None` when the name cannot be formed (over 253
    /// octets, or a label over 63: RFC 9989 §4.10 skips it) or `suffix` is not a suffix.
    pub fn dmarc_query(&self, suffix: &str) -> Option<DomainName> {
        const PREFIX: &str = "_dmarc.";
        let whole = self.as_str();
        let at_boundary = whole.len() == suffix.len()
            || (whole.ends_with(suffix)
                && whole.as_bytes()[whole.len() - suffix.len() - 1] == b'.');
        if !at_boundary
            || suffix.is_empty()
            || PREFIX.len() + suffix.len() > MAX_NAME
            || suffix.split('.').any(|l| l.len() > 63)
        {
            return None;
        }
        let mut s = String::with_capacity(PREFIX.len() + suffix.len());
        s.push_str(PREFIX);
        s.push_str(suffix);
        Some(DomainName(Arc::from(s)))
    }

    /// The name when DNS can carry it.
    pub fn dns(&self) -> Option<&DomainName> {
        match self {
            AuthorDomain::Dns(d) => Some(d),
            AuthorDomain::Unformable(_) => None,
        }
    }
}

impl fmt::Display for AuthorDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_lower_cased_and_trimmed_once() {
        assert_eq!(
            DomainName::host("Example.COM.").unwrap().as_str(),
            "example.com"
        );
        assert_eq!(
            DomainName::host("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(DomainName::host("a..b").unwrap_err(), NameError::EmptyLabel);
        assert_eq!(DomainName::host("").unwrap_err(), NameError::Empty);
        assert_eq!(DomainName::host(".").unwrap_err(), NameError::Empty);
        assert_eq!(
            DomainName::host("a b.c").unwrap_err(),
            NameError::BadCharacters
        );
        assert_eq!(
            DomainName::host(&"a".repeat(64)).unwrap_err(),
            NameError::LabelTooLong
        );
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(DomainName::host(&long).unwrap_err(), NameError::TooLong);
        assert!(DomainName::host(&long[..253]).is_ok());
    }

    #[test]
    fn dns_names_allow_printable_ascii_only() {
        assert_eq!(
            DomainName::dns("A%20b.Example").unwrap().as_str(),
            "a%20b.example"
        );
        assert_eq!(
            DomainName::dns("a\tb.c").unwrap_err(),
            NameError::BadCharacters
        );
        assert_eq!(
            DomainName::dns("é.c").unwrap_err(),
            NameError::BadCharacters
        );
    }

    #[test]
    fn host_owned_keeps_canonical_text_and_checks_the_rest() {
        let n = DomainName::host_owned("mail.example.com".to_string()).unwrap();
        assert_eq!(n.as_str(), "mail.example.com");
        assert_eq!(
            DomainName::host_owned("MAIL.example.com.".to_string())
                .unwrap()
                .as_str(),
            "mail.example.com"
        );
        assert!(DomainName::host_owned("a..b".to_string()).is_err());
    }

    #[test]
    fn prefixed_checks_only_what_the_prefix_adds() {
        let d = DomainName::host("example.com").unwrap();
        assert_eq!(d.prefixed("_dmarc").unwrap().as_str(), "_dmarc.example.com");
        assert_eq!(
            d.prefixed("S1._domainkey").unwrap().as_str(),
            "s1._domainkey.example.com"
        );
        assert!(d.prefixed("a..b").is_none());
        let near = DomainName::host(&vec!["a".repeat(49); 5].join(".")).unwrap();
        assert_eq!(near.len(), 249);
        assert!(near.prefixed("_dm").is_some());
        assert!(near.prefixed("_dmarc").is_none());
        assert_eq!(
            d.prefixed("_dmarc").unwrap().parent().unwrap().as_str(),
            "example.com"
        );
    }

    #[test]
    fn dmarc_query_names_of_suffixes_check_lengths_only() {
        let label = "a".repeat(63);
        let ok = format!("{label}.{label}.{label}.{}.com", "b".repeat(50));
        assert_eq!(ok.len(), 246);
        let long = format!("x{ok}");
        let author = AuthorDomain::parse(&format!("{}.{long}", "c".repeat(70))).unwrap();
        assert!(author.dns().is_none());
        assert!(author.dmarc_query(author.as_str()).is_none());
        assert!(author.dmarc_query(&long).is_none());
        let tail = &ok[64..];
        assert_eq!(
            author.dmarc_query(tail).unwrap().as_str(),
            format!("_dmarc.{tail}")
        );
        assert!(author.dmarc_query("com").is_some());
        assert!(author.dmarc_query("om").is_none());
        assert!(author.dmarc_query("example.org").is_none());
    }

    #[test]
    fn author_domains_beyond_dns_lengths_are_kept_garbage_is_not() {
        let long = vec!["a".repeat(60); 5].join(".");
        assert_eq!(
            AuthorDomain::parse(&long).unwrap(),
            AuthorDomain::Unformable(Arc::from(long.as_str()))
        );
        let label = format!("{}.example.com", "b".repeat(70));
        assert!(AuthorDomain::parse(&label).unwrap().dns().is_none());
        assert!(AuthorDomain::parse("Example.COM").unwrap().dns().is_some());
        for bad in [format!("{long}..x"), format!("{long} x"), String::new()] {
            assert!(AuthorDomain::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
