//! check_host() itself (RFC 7208 §4–§6): the evaluation state of one check, its includes and
//! redirects, the §4.6.4 counters, each mechanism's lookups and the `exp=` explanation. Cached
//! records are borrowed from the resolver's answers (`Arc`), never cloned.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{MAX_NAMES_PER_TERM, MAX_VOID_LOOKUPS, SpfResult};
use crate::policy::spf::{MAX_DNS_LOOKUPS, MacroContext, MacroString, Mechanism, SpfRecord};
use crate::resolve::answer::{Data, Found, Kind, Rcode};
use crate::resolve::{Answer, ResolveError, Resolver};

/// The evaluation state shared by one check and its includes and redirects.
pub(super) struct Eval<'a> {
    pub(super) resolver: &'a Resolver,
    pub(super) ip: IpAddr,
    pub(super) sender: String,
    pub(super) local: String,
    pub(super) sender_domain: String,
    pub(super) helo: String,
    pub(super) receiver: String,
    pub(super) now: Instant,
    pub(super) lookups: usize,
    pub(super) voids: usize,
    pub(super) mechanism: Option<String>,
    pub(super) problem: Option<String>,
}

/// A terminal result with its reason.
pub(super) struct Stop(pub(super) SpfResult, pub(super) String);

type Step<T> = Result<T, Stop>;

fn temp(e: &ResolveError, what: &dyn std::fmt::Display) -> Stop {
    Stop(SpfResult::TempError, format!("{what}: {e}"))
}

/// RFC 7208 §4.3: a domain that is not a syntactically valid FQDN gives `none`.
fn checkable(domain: &str) -> bool {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_graphic()))
}

/// The CIDR length that applies to the client's address family (RFC 7208 §5.6 defaults).
fn prefix_for(ip: IpAddr, cidr4: Option<u8>, cidr6: Option<u8>) -> u8 {
    if ip.is_ipv4() {
        cidr4.unwrap_or(32)
    } else {
        cidr6.unwrap_or(128)
    }
}

/// Adds one to an RFC 7208 §4.6.4 counter; past `max` the evaluation is a permerror.
fn bump(count: &mut usize, max: usize, term: &dyn std::fmt::Display, what: &str) -> Step<()> {
    *count += 1;
    if *count > max {
        return Err(Stop(
            SpfResult::PermError,
            format!("{term}: more than {max} {what} (RFC 7208 §4.6.4)"),
        ));
    }
    Ok(())
}

/// Whether `ip` is inside `net/prefix` (addresses of different families never are).
pub(crate) fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The reverse-lookup name of an address (`in-addr.arpa` / `ip6.arpa`).
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

impl<'a> Eval<'a> {
    fn ctx<'c>(&'c self, domain: &'c str, validated: Option<&'c str>) -> MacroContext<'c> {
        MacroContext {
            sender: &self.sender,
            local_part: &self.local,
            sender_domain: &self.sender_domain,
            domain,
            ip: self.ip,
            helo: &self.helo,
            validated_ptr: validated,
            receiver: &self.receiver,
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Counts one DNS-querying term; over the limit is a permerror.
    fn count_lookup(&mut self, term: &dyn std::fmt::Display) -> Step<()> {
        bump(
            &mut self.lookups,
            MAX_DNS_LOOKUPS,
            term,
            "DNS-querying terms",
        )
    }

    /// Counts one void lookup (NXDOMAIN or no answer); over the limit is a permerror.
    fn count_void(&mut self, term: &dyn std::fmt::Display) -> Step<()> {
        bump(&mut self.voids, MAX_VOID_LOOKUPS, term, "void lookups")
    }

    /// Expands a domain-spec, resolving `%{p}` only when the string uses it.
    async fn expand(&mut self, ms: &MacroString, domain: &str) -> String {
        let validated = if ms.uses_ptr() {
            Some(self.validated_name(domain).await)
        } else {
            None
        };
        ms.expand_domain(&self.ctx(domain, validated.as_ref().and_then(Validated::first)))
    }

    /// The domain a mechanism names: its expanded domain-spec, else the current domain.
    async fn target(&mut self, spec: Option<&MacroString>, domain: &str) -> String {
        match spec {
            Some(s) => self.expand(s, domain).await,
            None => domain.to_owned(),
        }
    }

    /// The cached answer holding the addresses of `name` in the client's family (read with
    /// [`addrs`]); NXDOMAIN/NODATA are `None`.
    async fn addresses(&mut self, name: &str) -> Result<Option<Arc<Answer>>, ResolveError> {
        let kind = if self.ip.is_ipv4() {
            Kind::A
        } else {
            Kind::Aaaa
        };
        match self.resolver.lookup(kind, name, self.now).await {
            Ok(l) => Ok(match &l.answer.data {
                Data::Addrs(a) if !a.is_empty() => Some(l.answer),
                _ => None,
            }),
            Err(ResolveError::InvalidName(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// RFC 7208 §5.5: PTR names of the client whose forward lookup contains the client IP, the
    /// ones equal to or under `target` first. At most 10 names are tried.
    async fn validated_names(&mut self, target: Option<&str>) -> Result<Validated, ResolveError> {
        let ptr = match self
            .resolver
            .lookup(Kind::Ptr, &reverse_name(self.ip), self.now)
            .await
        {
            Ok(l) => l.answer,
            Err(ResolveError::InvalidName(_)) => return Ok(Validated::default()),
            Err(e) => return Err(e),
        };
        let mut order = Vec::new();
        for (i, name) in names(&ptr).iter().enumerate().take(MAX_NAMES_PER_TERM) {
            // A failing forward lookup for one name just disqualifies that name.
            if let Ok(Some(a)) = self.addresses(name).await
                && addrs(&a).contains(&self.ip)
            {
                order.push(i);
            }
        }
        if let Some(t) = target {
            order.sort_by_key(|&i| !at_or_under(&names(&ptr)[i], t));
        }
        Ok(Validated {
            ptr: Some(ptr),
            order,
        })
    }

    /// The first validated PTR name of the client, preferring `domain` and names under it.
    async fn validated_name(&mut self, domain: &str) -> Validated {
        self.validated_names(Some(domain)).await.unwrap_or_default()
    }

    /// Evaluates one mechanism: Ok(true) when it matches.
    async fn matches(
        &mut self,
        mech: &Mechanism,
        domain: &str,
        term: &(dyn std::fmt::Display + Sync),
    ) -> Step<bool> {
        let ip = self.ip;
        match mech {
            Mechanism::All => Ok(true),
            Mechanism::Ip4 { addr, prefix } => Ok(in_network(ip, IpAddr::V4(*addr), *prefix)),
            Mechanism::Ip6 { addr, prefix } => Ok(in_network(ip, IpAddr::V6(*addr), *prefix)),
            Mechanism::Include { domain: spec } => {
                self.count_lookup(term)?;
                let target = self.expand(spec, domain).await;
                let r = self.check(target, 1).await;
                match r {
                    Ok(SpfResult::Pass) => Ok(true),
                    Ok(SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral) => Ok(false),
                    Ok(SpfResult::TempError) => Err(Stop(
                        SpfResult::TempError,
                        format!("{term}: the included record gave temperror"),
                    )),
                    Ok(_) => Err(Stop(
                        SpfResult::PermError,
                        format!("{term}: the included domain has no usable SPF record"),
                    )),
                    Err(Stop(SpfResult::TempError, why)) => Err(Stop(SpfResult::TempError, why)),
                    Err(Stop(_, why)) => Err(Stop(SpfResult::PermError, why)),
                }
            }
            Mechanism::A {
                domain: spec,
                cidr4,
                cidr6,
            }
            | Mechanism::Mx {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                self.count_lookup(term)?;
                let target = self.target(spec.as_ref(), domain).await;
                let prefix = prefix_for(ip, *cidr4, *cidr6);
                if let Mechanism::A { .. } = mech {
                    return match self.addresses(&target).await.map_err(|e| temp(&e, term))? {
                        Some(a) => Ok(addrs(&a).iter().any(|a| in_network(ip, *a, prefix))),
                        None => {
                            self.count_void(term)?;
                            Ok(false)
                        }
                    };
                }
                let answer = match self.resolver.lookup(Kind::Mx, &target, self.now).await {
                    Ok(l) => Some(l.answer),
                    Err(ResolveError::InvalidName(_)) => None,
                    Err(e) => return Err(temp(&e, term)),
                };
                // References into the cached answer, sorted by preference (then name).
                let mut mx: Vec<&(u16, String)> = match answer.as_deref().map(|a| &a.data) {
                    Some(Data::Mx(m)) => m.iter().collect(),
                    _ => Vec::new(),
                };
                if mx.is_empty() {
                    self.count_void(term)?;
                    return Ok(false);
                }
                if mx.len() > MAX_NAMES_PER_TERM {
                    return Err(Stop(
                        SpfResult::PermError,
                        format!(
                            "{term}: more than {MAX_NAMES_PER_TERM} MX records (RFC 7208 §4.6.4)"
                        ),
                    ));
                }
                mx.sort();
                for (_, host) in mx {
                    if let Some(a) = self.addresses(host).await.map_err(|e| temp(&e, term))?
                        && addrs(&a).iter().any(|a| in_network(ip, *a, prefix))
                    {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Mechanism::Ptr { domain: spec } => {
                self.count_lookup(term)?;
                let target = self.target(spec.as_ref(), domain).await;
                // RFC 7208 §5.5: DNS errors during ptr are treated as no match.
                let validated = self
                    .validated_names(Some(&target))
                    .await
                    .unwrap_or_default();
                Ok(validated.names().any(|n| at_or_under(n, &target)))
            }
            Mechanism::Exists { domain: spec } => {
                self.count_lookup(term)?;
                let target = self.expand(spec, domain).await;
                // RFC 7208 §5.7: an A query, whatever the client's address family.
                match self.resolver.lookup(Kind::A, &target, self.now).await {
                    Ok(l) => match &l.answer.data {
                        Data::Addrs(a) if !a.is_empty() => Ok(true),
                        _ => {
                            self.count_void(term)?;
                            Ok(false)
                        }
                    },
                    Err(ResolveError::InvalidName(_)) => {
                        self.count_void(term)?;
                        Ok(false)
                    }
                    Err(e) => Err(temp(&e, term)),
                }
            }
        }
    }

    /// The record of `domain`: Ok(None) for "no SPF record".
    async fn record(&mut self, domain: &str) -> Step<Option<Arc<Answer>>> {
        let l = match self.resolver.lookup(Kind::Spf, domain, self.now).await {
            Ok(l) => l,
            Err(ResolveError::InvalidName(_)) => return Ok(None),
            Err(e) => return Err(temp(&e, &format!("SPF record of {domain}"))),
        };
        match &l.answer.data {
            Data::Spf(Found::Valid(_)) => Ok(Some(l.answer.clone())),
            Data::Spf(Found::Invalid(r)) => {
                Err(Stop(SpfResult::PermError, format!("{domain}: {}", r.error)))
            }
            _ if l.answer.rcode == Rcode::ServFail => {
                Err(Stop(SpfResult::TempError, format!("{domain}: SERVFAIL")))
            }
            _ => Ok(None),
        }
    }

    /// check_host() for `domain` (RFC 7208 §4); `depth` > 0 inside include/redirect.
    pub(super) fn check(&mut self, domain: String, depth: usize) -> BoxFuture<'_, Step<SpfResult>> {
        async move {
            if !checkable(&domain) {
                return Ok(SpfResult::None);
            }
            let Some(answer) = self.record(&domain).await? else {
                return Ok(SpfResult::None);
            };
            let Some(record) = spf_of(&answer) else {
                return Ok(SpfResult::None);
            };
            for d in &record.directives {
                if self.matches(&d.mechanism, &domain, d).await? {
                    if depth == 0 {
                        self.mechanism = Some(d.to_string());
                    }
                    return Ok(d.qualifier.into());
                }
            }
            if let Some(redirect) = &record.redirect {
                let term = format!("redirect={redirect}");
                self.count_lookup(&term)?;
                let target = self.expand(redirect, &domain).await;
                return match self.check(target, depth).await? {
                    SpfResult::None => Err(Stop(
                        SpfResult::PermError,
                        format!("{term}: the target has no SPF record"),
                    )),
                    r => Ok(r),
                };
            }
            if depth == 0 {
                self.mechanism = Some("default".to_owned());
            }
            Ok(SpfResult::Neutral)
        }
        .boxed()
    }

    /// The explanation for a fail (RFC 7208 §6.2): the `exp=` of the record that decided.
    pub(super) async fn explanation(&mut self, domain: &str) -> Option<String> {
        let first = self.record(domain).await.ok()??;
        let record = spf_of(&first)?;
        // Follow redirects to the record whose directive matched.
        let redirected;
        let (record, at) = if record
            .directives
            .iter()
            .any(|d| d.mechanism == Mechanism::All)
            || record.redirect.is_none()
        {
            (record, domain.to_owned())
        } else {
            let target = self.expand(record.redirect.as_ref()?, domain).await;
            redirected = self.record(&target).await.ok()??;
            (spf_of(&redirected)?, target)
        };
        let exp = record.exp.as_ref()?;
        let name = self.expand(exp, &at).await;
        let l = self
            .resolver
            .lookup(Kind::Txt, &name, self.now)
            .await
            .ok()?;
        let Data::Txt(txt) = &l.answer.data else {
            return None;
        };
        if txt.len() != 1 {
            return None;
        }
        let ms = MacroString::parse_explanation(&txt[0]).ok()?;
        let validated = if ms.uses_ptr() {
            Some(self.validated_name(&at).await)
        } else {
            None
        };
        let text = ms.expand(&self.ctx(&at, validated.as_ref().and_then(Validated::first)));
        text.is_ascii().then_some(text)
    }
}

/// The client's validated PTR names (RFC 7208 §5.5): positions in the cached PTR answer, in
/// the order they are to be tried.
#[derive(Default)]
struct Validated {
    ptr: Option<Arc<Answer>>,
    order: Vec<usize>,
}

impl Validated {
    /// The names, borrowed from the cached answer.
    fn names(&self) -> impl Iterator<Item = &str> {
        let all = self.ptr.as_deref().map_or(&[][..], names);
        self.order.iter().map(move |&i| all[i].as_str())
    }

    /// The first name, the one `%{p}` expands to.
    fn first(&self) -> Option<&str> {
        self.names().next()
    }
}

/// The addresses an answer holds (none unless an A/AAAA answer).
fn addrs(a: &Answer) -> &[IpAddr] {
    match &a.data {
        Data::Addrs(a) => a,
        _ => &[],
    }
}

/// The names a PTR answer holds.
fn names(a: &Answer) -> &[String] {
    match &a.data {
        Data::Names(n) => n,
        _ => &[],
    }
}

/// Whether `name` is `target` or a name under it, ASCII case ignored.
fn at_or_under(name: &str, target: &str) -> bool {
    let (n, t) = (name.as_bytes(), target.as_bytes());
    n.eq_ignore_ascii_case(t)
        || (n.len() > t.len()
            && n[n.len() - t.len() - 1] == b'.'
            && n[n.len() - t.len()..].eq_ignore_ascii_case(t))
}

/// The SPF record an answer holds, when valid.
fn spf_of(a: &Answer) -> Option<&SpfRecord> {
    match &a.data {
        Data::Spf(Found::Valid(p)) => Some(&p.policy),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let cases = [
            ("192.0.2.9", "192.0.2.0", 24, true),
            ("192.0.3.9", "192.0.2.0", 24, false),
            ("10.0.0.1", "0.0.0.0", 0, true),
            ("2001:db8::1", "2001:db8::", 32, true),
            ("2001:db8::1", "192.0.2.0", 0, false),
        ];
        for (ip, net, prefix, inside) in cases {
            assert_eq!(
                in_network(ip.parse().unwrap(), net.parse().unwrap(), prefix),
                inside,
                "{ip} in {net}/{prefix}"
            );
        }
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.3".parse().unwrap()),
            "3.2.0.192.in-addr.arpa"
        );
        assert!(
            reverse_name("2001:db8::cb01".parse().unwrap()).ends_with(".8.b.d.0.1.0.0.2.ip6.arpa")
        );
        assert!(reverse_name("2001:db8::cb01".parse().unwrap()).starts_with("1.0.b.c.0.0."));
    }
}
