//! SPF `check_host()` (RFC 7208 §4–§6, §8, §9.1) over the resolver's cache, so a filter asks one
//! question instead of chasing `include:`, `a`, `mx`, `ptr`, `exists` and `redirect=` itself.
//!
//! Limits of RFC 7208 §4.6.4: at most 10 DNS-querying terms per evaluation (includes and
//! redirects count, and share the budget), at most 2 void lookups, at most 10 names from one
//! `mx` or `ptr`. Every lookup goes through [`Resolver::lookup`], so a second check for the
//! same domain and address costs no upstream query.

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::answer::{Data, Found, Kind, Rcode};
use super::{ResolveError, Resolver};
use crate::policy::spf::{
    MAX_DNS_LOOKUPS, MacroContext, MacroString, Mechanism, Qualifier, SpfRecord,
};

/// RFC 7208 §4.6.4: at most this many void lookups.
pub const MAX_VOID_LOOKUPS: usize = 2;
/// RFC 7208 §4.6.4: at most this many names from one `mx` or `ptr`.
pub const MAX_NAMES_PER_TERM: usize = 10;

crate::policy::str_enum! {
    /// An SPF result (RFC 7208 §2.6, §8).
    pub enum SpfResult {
        /// The client is authorized.
        Pass => "pass",
        /// The client is not authorized.
        Fail => "fail",
        /// Probably not authorized.
        SoftFail => "softfail",
        /// No assertion.
        Neutral => "neutral",
        /// No SPF record, or no checkable domain.
        None => "none",
        /// A transient DNS error.
        TempError => "temperror",
        /// The record could not be interpreted.
        PermError => "permerror",
    }
}

impl From<Qualifier> for SpfResult {
    fn from(q: Qualifier) -> Self {
        match q {
            Qualifier::Pass => SpfResult::Pass,
            Qualifier::Fail => SpfResult::Fail,
            Qualifier::SoftFail => SpfResult::SoftFail,
            Qualifier::Neutral => SpfResult::Neutral,
        }
    }
}

/// The outcome of an SPF check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfCheck {
    /// The verdict.
    pub result: SpfResult,
    /// The domain checked (the MAIL FROM domain, or the HELO name for a null sender).
    pub domain: String,
    /// `mailfrom` or `helo`.
    pub identity: String,
    /// The directive that decided (e.g. `-all`, `include:_spf.example.net`), `default` when
    /// none matched, or where a temperror/permerror arose.
    pub mechanism: Option<String>,
    /// The expanded `exp=` explanation, for a fail.
    pub explanation: Option<String>,
    /// Why the result is temperror or permerror.
    pub problem: Option<String>,
    /// DNS-querying terms used (≤ 10 unless permerror).
    pub dns_lookups: usize,
    /// Void lookups (NXDOMAIN or empty answers).
    pub void_lookups: usize,
    /// The `Received-SPF:` header field value (RFC 7208 §9.1), without the field name.
    pub received_spf: String,
}

/// The evaluation state shared by one check and its includes and redirects.
struct Eval<'a> {
    resolver: &'a Resolver,
    ip: IpAddr,
    sender: String,
    local: String,
    sender_domain: String,
    helo: String,
    receiver: String,
    now: Instant,
    lookups: usize,
    voids: usize,
    mechanism: Option<String>,
    problem: Option<String>,
}

/// A terminal result with its reason.
struct Stop(SpfResult, String);

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

/// Whether `ip` is inside `net/prefix`.
fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
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
            self.validated_name(domain).await
        } else {
            None
        };
        ms.expand_domain(&self.ctx(domain, validated.as_deref()))
    }

    /// The domain a mechanism names: its expanded domain-spec, else the current domain.
    async fn target(&mut self, spec: Option<&MacroString>, domain: &str) -> String {
        match spec {
            Some(s) => self.expand(s, domain).await,
            None => domain.to_owned(),
        }
    }

    /// Addresses of `name` in the client's family; NXDOMAIN/NODATA are empty.
    async fn addresses(&mut self, name: &str) -> Result<Option<Vec<IpAddr>>, ResolveError> {
        let kind = if self.ip.is_ipv4() {
            Kind::A
        } else {
            Kind::Aaaa
        };
        match self.resolver.lookup(kind, name, self.now).await {
            Ok(l) => Ok(match &l.answer.data {
                Data::Addrs(a) if !a.is_empty() => Some(a.clone()),
                _ => None,
            }),
            Err(ResolveError::InvalidName(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// RFC 7208 §5.5: PTR names of the client whose forward lookup contains the client IP, the
    /// ones equal to or under `target` first. At most 10 names are tried.
    async fn validated_names(&mut self, target: Option<&str>) -> Result<Vec<String>, ResolveError> {
        let names = match self
            .resolver
            .lookup(Kind::Ptr, &reverse_name(self.ip), self.now)
            .await
        {
            Ok(l) => match &l.answer.data {
                Data::Names(n) => n.clone(),
                _ => Vec::new(),
            },
            Err(ResolveError::InvalidName(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for name in names.into_iter().take(MAX_NAMES_PER_TERM) {
            // A failing forward lookup for one name just disqualifies that name.
            if let Ok(Some(addrs)) = self.addresses(&name).await
                && addrs.contains(&self.ip)
            {
                out.push(name);
            }
        }
        if let Some(t) = target {
            out.sort_by_key(|n| {
                !(n.eq_ignore_ascii_case(t)
                    || n.to_ascii_lowercase()
                        .ends_with(&format!(".{}", t.to_ascii_lowercase())))
            });
        }
        Ok(out)
    }

    async fn validated_name(&mut self, domain: &str) -> Option<String> {
        self.validated_names(Some(domain))
            .await
            .ok()
            .and_then(|v| v.into_iter().next())
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
            } => {
                self.count_lookup(term)?;
                let target = self.target(spec.as_ref(), domain).await;
                let prefix = prefix_for(ip, *cidr4, *cidr6);
                match self.addresses(&target).await.map_err(|e| temp(&e, term))? {
                    Some(addrs) => Ok(addrs.iter().any(|a| in_network(ip, *a, prefix))),
                    None => {
                        self.count_void(term)?;
                        Ok(false)
                    }
                }
            }
            Mechanism::Mx {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                self.count_lookup(term)?;
                let target = self.target(spec.as_ref(), domain).await;
                let prefix = prefix_for(ip, *cidr4, *cidr6);
                let mut mx = match self.resolver.lookup(Kind::Mx, &target, self.now).await {
                    Ok(l) => match &l.answer.data {
                        Data::Mx(m) => m.clone(),
                        _ => Vec::new(),
                    },
                    Err(ResolveError::InvalidName(_)) => Vec::new(),
                    Err(e) => return Err(temp(&e, term)),
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
                    if let Some(addrs) = self.addresses(&host).await.map_err(|e| temp(&e, term))?
                        && addrs.iter().any(|a| in_network(ip, *a, prefix))
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
                let names = self
                    .validated_names(Some(&target))
                    .await
                    .unwrap_or_default();
                let t = target.to_ascii_lowercase();
                Ok(names.iter().any(|n| {
                    let n = n.to_ascii_lowercase();
                    n == t || n.ends_with(&format!(".{t}"))
                }))
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
    async fn record(&mut self, domain: &str) -> Step<Option<std::sync::Arc<super::Answer>>> {
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
    fn check(&mut self, domain: String, depth: usize) -> BoxFuture<'_, Step<SpfResult>> {
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
    async fn explanation(&mut self, domain: &str) -> Option<String> {
        let answer = self.record(domain).await.ok()??;
        let record = spf_of(&answer)?.clone();
        // Follow redirects to the record whose directive matched.
        let (record, at) = if record
            .directives
            .iter()
            .any(|d| d.mechanism == Mechanism::All)
            || record.redirect.is_none()
        {
            (record, domain.to_owned())
        } else {
            let target = self.expand(record.redirect.as_ref()?, domain).await;
            let answer = self.record(&target).await.ok()??;
            (spf_of(&answer)?.clone(), target)
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
            self.validated_name(&at).await
        } else {
            None
        };
        let text = ms.expand(&self.ctx(&at, validated.as_deref()));
        text.is_ascii().then_some(text)
    }
}

/// The SPF record an answer holds, when valid.
fn spf_of(a: &super::Answer) -> Option<&SpfRecord> {
    match &a.data {
        Data::Spf(Found::Valid(p)) => Some(&p.policy),
        _ => None,
    }
}

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

/// RFC 7208 §9.1: `result (comment) key=value; ...`.
#[allow(clippy::too_many_arguments)]
fn received_spf(
    result: SpfResult,
    domain: &str,
    ip: IpAddr,
    sender: &str,
    helo: &str,
    identity: &str,
    mechanism: Option<&str>,
    problem: Option<&str>,
) -> String {
    let comment = match result {
        SpfResult::Pass => format!("domain of {domain} designates {ip} as permitted sender"),
        SpfResult::Fail => {
            format!("domain of {domain} does not designate {ip} as permitted sender")
        }
        SpfResult::SoftFail => {
            format!("domain of transitioning {domain} does not designate {ip} as permitted sender")
        }
        SpfResult::Neutral => format!("{ip} is neither permitted nor denied by domain of {domain}"),
        SpfResult::None => format!("domain of {domain} does not designate permitted sender hosts"),
        SpfResult::TempError | SpfResult::PermError => {
            problem.unwrap_or("error in processing").to_owned()
        }
    };
    // RFC 7208 §9.1 over RFC 5322: the comment is ctext only (no `(`, `)`, `\`), every value a
    // dot-atom or a quoted-string; nothing from the input can end the comment or add a field.
    let mut v = format!("{result} (mailpolicyd: {})", comment_text(&comment));
    let mut sep = " ";
    let mut pair = |key: &str, value: &str| {
        v.push_str(sep);
        sep = "; ";
        v.push_str(key);
        v.push('=');
        push_value(&mut v, value);
    };
    pair("client-ip", &ip.to_string());
    pair("envelope-from", sender);
    pair("helo", helo);
    pair("identity", identity);
    if let Some(m) = mechanism {
        pair("mechanism", m);
    }
    if let Some(p) = problem {
        pair("problem", p);
    }
    v
}

/// A byte a header field body can carry as itself: printable ASCII or space (RFC 5322 VCHAR / SP).
fn header_safe(c: char) -> bool {
    c == ' ' || c.is_ascii_graphic()
}

/// The comment's text: a character that could end or nest the comment (`(`, `)`, `\`), a control
/// character or a non-ASCII one is written `?`.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if header_safe(c) && !matches!(c, '(' | ')' | '\\') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// RFC 5322 atext.
fn atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// RFC 5322 §3.2.3 dot-atom-text: atoms of atext joined by single dots.
fn dot_atom(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|a| !a.is_empty() && a.chars().all(atext))
}

/// A `key=value` value: as itself if a dot-atom, else a quoted-string (`"` and `\` as quoted
/// pairs; a control or non-ASCII character, which no header value may carry, as `?`).
fn push_value(out: &mut String, value: &str) {
    if dot_atom(value) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if header_safe(c) => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        assert!(in_network(
            "192.0.2.9".parse().unwrap(),
            "192.0.2.0".parse().unwrap(),
            24
        ));
        assert!(!in_network(
            "192.0.3.9".parse().unwrap(),
            "192.0.2.0".parse().unwrap(),
            24
        ));
        assert!(in_network(
            "10.0.0.1".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            0
        ));
        assert!(in_network(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::".parse().unwrap(),
            32
        ));
        assert!(!in_network(
            "2001:db8::1".parse().unwrap(),
            "192.0.2.0".parse().unwrap(),
            0
        ));
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
