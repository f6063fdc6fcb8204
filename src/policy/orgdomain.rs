//! Organizational domains, both ways DMARC defines them. Pure: no I/O here (a list file given at
//! run time is read by the caller and handed over as text).
//!
//! - RFC 7489 §3.2: the registrable domain under the Public Suffix List. The list is compiled
//!   in (the `psl` crate) and can be replaced by a list file ([`SuffixList::parse`]).
//! - RFC 9989 §4.10: the DNS tree walk. [`tree_walk`] gives the ordered names to query (at most
//!   eight), and [`select_org_domain`] picks the organizational domain from the records the walk
//!   found (§4.10.2). The resolver does the querying.

use std::fmt;

use publicsuffix::Psl as _;

use super::dmarc::Psd;

/// RFC 9989 §4.10: a tree walk never makes more than this many queries.
pub const MAX_TREE_WALK_QUERIES: usize = 8;

/// Where public suffixes come from.
pub enum SuffixList {
    /// The list compiled into this binary (the `psl` crate's snapshot).
    Builtin,
    /// A list parsed from a `public_suffix_list.dat` given at run time.
    Loaded(Box<publicsuffix::List>),
}

impl fmt::Debug for SuffixList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SuffixList::Builtin => "SuffixList::Builtin",
            SuffixList::Loaded(_) => "SuffixList::Loaded",
        })
    }
}

/// A list file that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuffixListError {
    /// The text is not a public suffix list.
    Invalid(String),
    /// The text parsed but holds no rules.
    Empty,
}

impl fmt::Display for SuffixListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuffixListError::Invalid(e) => write!(f, "not a public suffix list: {e}"),
            SuffixListError::Empty => f.write_str("the public suffix list holds no rules"),
        }
    }
}

impl std::error::Error for SuffixListError {}

impl SuffixList {
    /// The compiled-in list.
    pub fn builtin() -> Self {
        SuffixList::Builtin
    }

    /// Parses the text of a `public_suffix_list.dat`.
    pub fn parse(text: &str) -> Result<Self, SuffixListError> {
        let list: publicsuffix::List = text
            .parse()
            .map_err(|e: publicsuffix::Error| SuffixListError::Invalid(e.to_string()))?;
        if list.is_empty() {
            return Err(SuffixListError::Empty);
        }
        Ok(SuffixList::Loaded(Box::new(list)))
    }

    /// The RFC 7489 organizational domain of `domain`: its registrable domain, lower-cased and
    /// without a trailing dot. `None` when the name is itself a public suffix, or malformed.
    pub fn org_domain(&self, domain: &str) -> Option<String> {
        let name = normalize(domain)?;
        let found = match self {
            SuffixList::Builtin => psl::domain(name.as_bytes()).map(|d| d.as_bytes().to_vec()),
            SuffixList::Loaded(list) => list.domain(name.as_bytes()).map(|d| d.as_bytes().to_vec()),
        }?;
        String::from_utf8(found).ok()
    }
}

/// Lower-cases and strips one trailing dot; refuses empty names and empty labels.
fn normalize(domain: &str) -> Option<String> {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_empty() || d.split('.').any(str::is_empty) {
        return None;
    }
    Some(d.to_lowercase())
}

/// The domains an RFC 9989 §4.10 tree walk queries `_dmarc.` under, in order: the domain
/// itself, then, for eight labels or more, the name shortened to seven labels, then one label
/// fewer each time down to the top-level domain. At most [`MAX_TREE_WALK_QUERIES`] names.
pub fn tree_walk(domain: &str) -> Vec<String> {
    let Some(name) = normalize(domain) else {
        return Vec::new();
    };
    let labels: Vec<&str> = name.split('.').collect();
    let mut out = Vec::with_capacity(labels.len().min(MAX_TREE_WALK_QUERIES));
    out.push(name.clone());
    // Step 4: fewer than 8 labels drop one; 8 or more drop to 7.
    let start = if labels.len() >= 8 {
        labels.len() - 7
    } else {
        1
    };
    for i in start..labels.len() {
        out.push(labels[i..].join("."));
    }
    out
}

/// `_dmarc.<domain>`.
pub fn dmarc_name(domain: &str) -> String {
    format!("_dmarc.{}", domain.strip_suffix('.').unwrap_or(domain))
}

/// `_dmarc.<domain>` when that query name can be formed: at most 253 octets (RFC 1035 §2.3.4)
/// with labels of 1..=63 octets. `None` when it cannot: RFC 9989 §4.10 skips such a name and
/// the walk goes on with the shorter ones (a From domain of 247 octets or more has no
/// `_dmarc` name of its own, but its organizational domain still has one).
pub fn dmarc_query_name(domain: &str) -> Option<String> {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_empty() || d.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return None;
    }
    let q = dmarc_name(d);
    (q.len() <= 253).then_some(q)
}

/// RFC 9989 §4.10.2: the organizational domain of `start` given the valid DMARC records a tree
/// walk from `start` found, as `(domain, psd)` from longest to shortest name.
///
/// 1. a record with `psd=n` names the organizational domain;
/// 2. a record with `psd=y` (other than at `start`) makes the name one label below it the
///    organizational domain;
/// 3. otherwise the record with the fewest labels does; with no record, `start` itself.
pub fn select_org_domain(start: &str, found: &[(&str, Psd)]) -> String {
    let start = normalize(start).unwrap_or_else(|| start.to_owned());
    for (domain, psd) in found {
        let domain = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
        match psd {
            Psd::No => return domain,
            Psd::Yes if domain != start => {
                let depth = domain.split('.').count() + 1;
                let labels: Vec<&str> = start.split('.').collect();
                if labels.len() >= depth {
                    return labels[labels.len() - depth..].join(".");
                }
            }
            _ => {}
        }
    }
    found
        .iter()
        .min_by_key(|(d, _)| d.split('.').count())
        .map(|(d, _)| d.strip_suffix('.').unwrap_or(d).to_lowercase())
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9989_4_10_long_name_sequence() {
        // RFC 9989 §4.10: the eight queries for a.b.c.d.e.f.g.h.i.j.mail.example.com.
        let want = [
            "a.b.c.d.e.f.g.h.i.j.mail.example.com",
            "g.h.i.j.mail.example.com",
            "h.i.j.mail.example.com",
            "i.j.mail.example.com",
            "j.mail.example.com",
            "mail.example.com",
            "example.com",
            "com",
        ];
        assert_eq!(tree_walk("a.b.c.d.e.f.g.h.i.j.mail.example.com"), want);
        assert_eq!(
            dmarc_name(&tree_walk("A.B.C.D.E.F.G.H.I.J.MAIL.EXAMPLE.COM.")[1]),
            "_dmarc.g.h.i.j.mail.example.com"
        );
    }

    #[test]
    fn tree_walk_short_and_boundaries() {
        assert_eq!(
            tree_walk("a.mail.example.com"),
            [
                "a.mail.example.com",
                "mail.example.com",
                "example.com",
                "com"
            ]
        );
        assert_eq!(tree_walk("com"), ["com"]);
        assert!(tree_walk("").is_empty());
        assert!(tree_walk("a..com").is_empty());
        for n in 1..20 {
            let name = (0..n)
                .map(|i| format!("l{i}"))
                .collect::<Vec<_>>()
                .join(".");
            let walk = tree_walk(&name);
            assert!(
                walk.len() <= MAX_TREE_WALK_QUERIES,
                "{n} labels: {} queries",
                walk.len()
            );
            assert_eq!(walk.len(), n.min(MAX_TREE_WALK_QUERIES));
            assert_eq!(walk.last().unwrap(), &format!("l{}", n - 1));
        }
    }

    #[test]
    fn dmarc_query_name_only_when_it_can_be_formed() {
        let label = "a".repeat(63);
        // 246 octets: `_dmarc.` makes 253, the limit.
        let ok = format!("{label}.{label}.{label}.{}.com", "b".repeat(50));
        assert_eq!(ok.len(), 246);
        assert_eq!(dmarc_query_name(&ok).unwrap().len(), 253);
        let long = format!("x{ok}");
        assert_eq!(dmarc_query_name(&long), None);
        assert_eq!(dmarc_query_name(&format!("{}.com", "c".repeat(64))), None);
        assert_eq!(dmarc_query_name("a..com"), None);
        assert_eq!(
            dmarc_query_name("Example.com.").as_deref(),
            Some("_dmarc.Example.com")
        );
    }

    #[test]
    fn rfc9989_4_10_2_selection_examples() {
        // Records at mail.example.com and example.com, none with psd: the fewest labels wins.
        assert_eq!(
            select_org_domain(
                "a.mail.example.com",
                &[
                    ("mail.example.com", Psd::Unknown),
                    ("example.com", Psd::Unknown)
                ]
            ),
            "example.com"
        );
        // psd=n at mail.example.com.
        assert_eq!(
            select_org_domain("a.mail.example.com", &[("mail.example.com", Psd::No)]),
            "mail.example.com"
        );
        // Only _dmarc.com, with psd=y: one label below com.
        assert_eq!(
            select_org_domain("a.mail.example.com", &[("com", Psd::Yes)]),
            "example.com"
        );
        // §4.10.2 rule 2's own example: psd=y at example.com, walk from mail.example.com.
        assert_eq!(
            select_org_domain("mail.example.com", &[("example.com", Psd::Yes)]),
            "mail.example.com"
        );
        // psd=y at the start itself does not count; no records at all: the start.
        assert_eq!(
            select_org_domain("example.com", &[("example.com", Psd::Yes)]),
            "example.com"
        );
        assert_eq!(select_org_domain("x.example.com", &[]), "x.example.com");
    }

    #[test]
    fn builtin_list() {
        let l = SuffixList::builtin();
        assert_eq!(
            l.org_domain("mail.example.co.uk").as_deref(),
            Some("example.co.uk")
        );
        assert_eq!(
            l.org_domain("WWW.Example.COM.").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            l.org_domain("foo.bar.github.io").as_deref(),
            Some("bar.github.io")
        );
        assert_eq!(l.org_domain("co.uk"), None);
        assert_eq!(l.org_domain(""), None);
        assert_eq!(l.org_domain(".example.com"), None);
    }

    #[test]
    fn loaded_list_overrides() {
        let l = SuffixList::parse(
            "// ===BEGIN ICANN DOMAINS===\ncom\nexample.com\n// ===END ICANN DOMAINS===\n",
        )
        .unwrap();
        assert_eq!(
            l.org_domain("a.b.example.com").as_deref(),
            Some("b.example.com")
        );
        assert!(SuffixList::parse("").is_err());
    }
}
