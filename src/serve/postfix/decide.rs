//! The decision: one Postfix policy request → SPF checks through the service's resolver (`spf_check`, the socket's op)
//! → one [`Action`]. No framing here (that is [`super`] and `proto::postfix_policy`): a later
//! protocol (a socketmap) calls the service the same way.
//!
//! The rules (issue 16): only at the `RCPT` or `MAIL` stage (`protocol_state`); a request with
//! a `sasl_username` (when `skip_sasl`) or from a `skip_networks` address is not checked; the
//! HELO identity is checked first (RFC 7208 §2.3; a HELO that is not a domain name gives
//! `none` without a lookup), then the MAIL FROM (a null sender is `postmaster@<helo>`, RFC
//! 7208 §2.4: the HELO check's result, not a second check); `helo_reject`/`mail_from_reject`
//! say which results are rejected, `temperror`/`permerror` what an error does; otherwise the
//! MAIL FROM identity's `Received-SPF:` is prepended (when `prepend`). The whole request has
//! `timeout_ms`; past it the answer follows `temperror`. The outcome is remembered per message
//! (`instance`, with the client address, HELO and sender), so the RCPTs of one message cost one
//! check and prepend one header.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::DomainName;
use crate::proto::postfix_policy::{Action, PolicyRequest};
use crate::resolve::spf::{SpfCheck, SpfResult, in_network};
use crate::serve::Service;

/// Which SPF results of an identity are rejected (`mail_from_reject`, `helo_reject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectOn {
    /// `fail` only.
    Fail,
    /// `fail` and `softfail`.
    SoftFail,
    /// Nothing.
    Never,
}

impl RejectOn {
    fn rejects(self, r: SpfResult) -> bool {
        match self {
            RejectOn::Fail => r == SpfResult::Fail,
            RejectOn::SoftFail => matches!(r, SpfResult::Fail | SpfResult::SoftFail),
            RejectOn::Never => false,
        }
    }
}

/// What a `temperror` does (`temperror`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTempError {
    /// `451 4.7.24`.
    Defer,
    /// Go on as if there were no result.
    Dunno,
}

/// What a `permerror` does (`permerror`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnPermError {
    /// Go on as if there were no result.
    Dunno,
    /// `550 5.7.24`.
    Reject,
}

/// An address block of `skip_networks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `ADDR/PREFIX` or a bare address (a /32 or /128); `None` when it is neither, or the prefix
    /// is too long for the family.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (a, p) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        in_network(unmapped(ip), self.addr, self.prefix)
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The `[postfix_policy]` settings that decide (the listener's are in [`super::PostfixConfig`]).
#[derive(Clone, Debug)]
pub struct PolicySettings {
    /// `mail_from_reject`.
    pub mail_from_reject: RejectOn,
    /// `helo_reject`.
    pub helo_reject: RejectOn,
    /// `temperror`.
    pub temperror: OnTempError,
    /// `permerror`.
    pub permerror: OnPermError,
    /// `prepend`.
    pub prepend: bool,
    /// `skip_sasl`.
    pub skip_sasl: bool,
    /// `skip_networks`.
    pub skip_networks: Vec<Cidr>,
    /// `timeout_ms`: the budget of one request.
    pub timeout: Duration,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            mail_from_reject: RejectOn::Fail,
            helo_reject: RejectOn::Fail,
            temperror: OnTempError::Defer,
            permerror: OnPermError::Dunno,
            prepend: true,
            skip_sasl: true,
            skip_networks: Vec::new(),
            timeout: Duration::from_millis(10_000),
        }
    }
}

/// Messages remembered at once (the RCPTs of a message follow within its SMTP session).
pub const MEMORY_ENTRIES: u64 = 10_000;
/// How long a message's outcome is remembered.
pub const MEMORY_TTL: Duration = Duration::from_secs(600);

/// The decision logic with its per-message memory.
pub struct Decider {
    settings: PolicySettings,
    /// (instance, client address, HELO, sender) → the action given for the message.
    memory: moka::sync::Cache<Arc<str>, Action>,
}

impl Decider {
    /// A decider with `settings` and an empty memory.
    pub fn new(settings: PolicySettings) -> Decider {
        Decider {
            settings,
            memory: moka::sync::Cache::builder()
                .max_capacity(MEMORY_ENTRIES)
                .time_to_live(MEMORY_TTL)
                .build(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// The action for `req`.
    pub async fn decide(&self, service: &Service, req: &PolicyRequest) -> Action {
        let s = &self.settings;
        let state = req.value("protocol_state");
        if !state.eq_ignore_ascii_case("RCPT") && !state.eq_ignore_ascii_case("MAIL") {
            return Action::Dunno;
        }
        if s.skip_sasl && !req.value("sasl_username").is_empty() {
            return Action::Dunno;
        }
        let Ok(ip) = req.value("client_address").parse::<IpAddr>() else {
            // Postfix says `unknown` only for a client it could not tell: nothing to check.
            return Action::Dunno;
        };
        if s.skip_networks.iter().any(|n| n.contains(ip)) {
            return Action::Dunno;
        }
        let (helo, sender) = (req.value("helo_name"), req.value("sender"));
        let instance = req.value("instance");
        let key: Option<Arc<str>> =
            (!instance.is_empty()).then(|| format!("{instance}\n{ip}\n{helo}\n{sender}").into());
        if let Some(k) = &key
            && let Some(earlier) = self.memory.get(k)
        {
            // The header is already on the message; a reject or defer stands for every RCPT.
            return match earlier {
                Action::PrependReceivedSpf(_) => Action::Dunno,
                a => a,
            };
        }
        let action =
            match tokio::time::timeout(s.timeout, self.check(service, ip, helo, sender)).await {
                Ok(a) => a,
                Err(_) => match s.temperror {
                    OnTempError::Defer => Action::Defer(format!(
                        "SPF temperror: the check took longer than {} ms",
                        s.timeout.as_millis()
                    )),
                    OnTempError::Dunno => Action::Dunno,
                },
            };
        if let Some(k) = key {
            self.memory.insert(k, action.clone());
        }
        action
    }

    async fn check(&self, service: &Service, ip: IpAddr, helo: &str, sender: &str) -> Action {
        let s = &self.settings;
        let now = Instant::now();
        let helo_check = if helo_is_domain(helo) {
            Some(service.resolver().spf_check(ip, "", helo, now).await)
        } else {
            None
        };
        if let Some(h) = &helo_check
            && let Some(a) = self.verdict(h, s.helo_reject, ip)
        {
            return a;
        }
        let mail = if sender.is_empty() {
            // RFC 7208 §2.4: the null sender's identity is postmaster@<helo>, which is the
            // HELO check already made (none when the HELO is not a domain name).
            match helo_check {
                Some(h) => h,
                None => return Action::Dunno,
            }
        } else {
            service.resolver().spf_check(ip, sender, helo, now).await
        };
        if let Some(a) = self.verdict(&mail, s.mail_from_reject, ip) {
            return a;
        }
        if s.prepend {
            Action::PrependReceivedSpf(mail.received_spf)
        } else {
            Action::Dunno
        }
    }

    /// A reject or defer for `c` under `reject_on` and the error settings; `None` to go on.
    fn verdict(&self, c: &SpfCheck, reject_on: RejectOn, ip: IpAddr) -> Option<Action> {
        let s = &self.settings;
        // The text is made only for an answer that carries it (most checks pass).
        let text = |why: &str| {
            format!(
                "SPF {} (identity {}, domain {}): {why}",
                c.result, c.identity, c.domain
            )
        };
        match c.result {
            r if reject_on.rejects(r) => Some(Action::Reject(match &c.explanation {
                Some(exp) => text(exp),
                None => text(&format!("{ip} is not a permitted sender of {}", c.domain)),
            })),
            SpfResult::TempError if s.temperror == OnTempError::Defer => {
                Some(Action::Defer(text(problem(c))))
            }
            SpfResult::PermError if s.permerror == OnPermError::Reject => {
                Some(Action::RejectError(text(problem(c))))
            }
            _ => None,
        }
    }
}

fn problem(c: &SpfCheck) -> &str {
    c.problem.as_deref().unwrap_or("error in processing")
}

/// Whether a HELO name is a domain name to check (RFC 7208 §2.3): a valid host name of two
/// labels or more whose last label is not numeric (an address, or `[…]`, is not a domain).
pub fn helo_is_domain(helo: &str) -> bool {
    match DomainName::host(helo) {
        Ok(d) => {
            d.label_count() >= 2
                && d.as_str()
                    .rsplit('.')
                    .next()
                    .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let n = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(n.contains("192.0.2.200".parse().unwrap()));
        assert!(n.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!n.contains("192.0.3.1".parse().unwrap()));
        assert!(!n.contains("2001:db8::1".parse().unwrap()));
        let one = Cidr::parse("198.51.100.7").unwrap();
        assert!(one.contains("198.51.100.7".parse().unwrap()));
        assert!(!one.contains("198.51.100.8".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in [
            "192.0.2.0/33",
            "2001:db8::/129",
            "x/8",
            "192.0.2.0/",
            "1.2.3.4/+1",
            "",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn helo_names() {
        assert!(helo_is_domain("mail.example.test"));
        assert!(helo_is_domain("Mail.Example.Test."));
        for not in [
            "localhost",
            "[192.0.2.1]",
            "192.0.2.1",
            "",
            "bad name.test",
            "a..b",
        ] {
            assert!(!helo_is_domain(not), "{not}");
        }
    }

    #[test]
    fn reject_sets() {
        use SpfResult::*;
        assert!(RejectOn::Fail.rejects(Fail) && !RejectOn::Fail.rejects(SoftFail));
        assert!(RejectOn::SoftFail.rejects(Fail) && RejectOn::SoftFail.rejects(SoftFail));
        assert!(!RejectOn::SoftFail.rejects(Neutral));
        assert!(!RejectOn::Never.rejects(Fail));
    }
}
