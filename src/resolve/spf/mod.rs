//! SPF `check_host()` (RFC 7208 §4–§6, §8, §9.1) over the resolver's cache, so a filter asks one
//! question instead of chasing `include:`, `a`, `mx`, `ptr`, `exists` and `redirect=` itself.
//!
//! Limits of RFC 7208 §4.6.4: at most 10 DNS-querying terms per evaluation (includes and
//! redirects count, and share the budget), at most 2 void lookups, at most 10 names from one
//! `mx` or `ptr`. Every lookup goes through [`Resolver::lookup`], so a second check for the
//! same domain and address costs no upstream query.

mod check;
mod received;

use std::net::IpAddr;
use std::time::Instant;

pub(crate) use self::check::in_network;
use self::check::{Eval, Stop};
use self::received::received_spf;
use super::Resolver;
pub use crate::model::spf::{SpfCheck, SpfResult};

/// RFC 7208 §4.6.4: at most this many void lookups.
pub const MAX_VOID_LOOKUPS: usize = 2;
/// RFC 7208 §4.6.4: at most this many names from one `mx` or `ptr`.
pub const MAX_NAMES_PER_TERM: usize = 10;

/// Splits a MAIL FROM into (sender, local part, domain); an empty or domainless one uses
/// `postmaster@<helo>` (RFC 7208 §2.4, §4.3).
fn identity(mail_from: &str, helo: &str) -> (String, String, String, &'static str) {
    let mf = mail_from
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    match mf.rsplit_once('@') {
        Some((local, domain)) if !domain.is_empty() => {
            let local = if local.is_empty() {
                "postmaster"
            } else {
                local
            };
            (
                format!("{local}@{domain}"),
                local.to_owned(),
                domain.to_owned(),
                "mailfrom",
            )
        }
        _ if !mf.is_empty() && !mf.contains('@') => (
            format!("postmaster@{mf}"),
            "postmaster".to_owned(),
            mf.to_owned(),
            "mailfrom",
        ),
        _ => (
            format!("postmaster@{helo}"),
            "postmaster".to_owned(),
            helo.to_owned(),
            "helo",
        ),
    }
}

impl Resolver {
    /// The SPF verdict for a connection from `ip` with envelope sender `mail_from` (empty for
    /// the null sender, which checks the HELO name) and HELO name `helo`.
    pub async fn spf_check(
        &self,
        ip: IpAddr,
        mail_from: &str,
        helo: &str,
        now: Instant,
    ) -> SpfCheck {
        // An IPv4-mapped IPv6 client is the IPv4 client.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (sender, local, domain, ident) = identity(mail_from, helo);
        let mut ev = Eval {
            resolver: self,
            ip,
            sender: sender.clone(),
            local,
            sender_domain: domain.clone(),
            helo: helo.to_owned(),
            receiver: "unknown".to_owned(),
            now,
            lookups: 0,
            voids: 0,
            mechanism: None,
            problem: None,
        };
        let result = match ev.check(domain.clone(), 0).await {
            Ok(r) => r,
            Err(Stop(r, why)) => {
                ev.problem = Some(why);
                r
            }
        };
        let explanation = if result == SpfResult::Fail {
            ev.explanation(&domain).await
        } else {
            None
        };
        let received_spf = received_spf(
            result,
            &domain,
            ip,
            &sender,
            helo,
            ident,
            ev.mechanism.as_deref(),
            ev.problem.as_deref(),
        );
        SpfCheck {
            result,
            domain,
            identity: ident.to_owned(),
            mechanism: ev.mechanism,
            explanation,
            problem: ev.problem,
            dns_lookups: ev.lookups,
            void_lookups: ev.voids,
            received_spf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        assert_eq!(
            identity("user@example.com", "h"),
            (
                "user@example.com".into(),
                "user".into(),
                "example.com".into(),
                "mailfrom"
            )
        );
        assert_eq!(identity("", "mail.example.com").2, "mail.example.com");
        assert_eq!(identity("", "mail.example.com").3, "helo");
        assert_eq!(identity("@example.com", "h").0, "postmaster@example.com");
        assert_eq!(identity("<user@example.com>", "h").2, "example.com");
    }
}
