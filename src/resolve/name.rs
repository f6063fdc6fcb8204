//! Question names as the resolver takes them: lower-cased, one trailing dot stripped, RFC 1035
//! lengths checked; and the DMARC author domain, which may be longer than DNS allows.

use std::sync::Arc;

use super::ResolveError;

/// Lower-cases, strips one trailing dot, and checks RFC 1035 lengths (labels 1..=63 octets,
/// name ≤ 253) and characters (printable ASCII). The serving layer does IDNA, and the stricter
/// host-name checks, before this.
pub fn normalize_name(name: &str) -> Result<Arc<str>, ResolveError> {
    let n = name.strip_suffix('.').unwrap_or(name);
    let bad = |why: &str| ResolveError::InvalidName(format!("{name:?}: {why}").into());
    if n.is_empty() {
        return Err(bad("empty"));
    }
    if n.len() > 253 {
        return Err(bad("longer than 253 octets"));
    }
    for label in n.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("label longer than 63 octets"));
        }
        // Any octet but control characters: DNS labels are binary (RFC 2181 §11), and SPF
        // macro expansion can produce spaces and '%'. Non-ASCII must arrive as A-labels.
        if !label.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(bad("control or non-ASCII characters (use A-labels)"));
        }
    }
    // Names arrive lower-cased (the serving layer normalizes them): then one allocation.
    if n.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Arc::from(n.to_ascii_lowercase()))
    } else {
        Ok(Arc::from(n))
    }
}

/// Whether `name` (normalized) can be a DNS name at all: at most 253 octets, labels of at most
/// 63 (RFC 1035 §2.3.4). A longer name cannot exist, nor can any name below it.
pub fn dns_formable(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(|l| l.len() <= 63)
}

/// An author (From) domain for DMARC: [`normalize_name`], except that a name beyond DNS's
/// lengths (over 253 octets, or a label over 63) that is otherwise a plausible domain (labels
/// of letters, digits, `-` and `_`, none empty) is accepted as it is: such a name cannot exist
/// (see [`dns_formable`]), so its organization's `np` applies (RFC 9989 §4.10 skips the query
/// names that cannot be formed). Garbage (empty labels, spaces, control characters) is still
/// `invalid_name`.
pub fn normalize_author_domain(name: &str) -> Result<Arc<str>, ResolveError> {
    match normalize_name(name) {
        Ok(n) => Ok(n),
        Err(e) => {
            let n = name.strip_suffix('.').unwrap_or(name);
            let plausible = !n.is_empty()
                && !dns_formable(n)
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if plausible {
                Ok(Arc::from(n.to_ascii_lowercase()))
            } else {
                Err(e)
            }
        }
    }
}
