//! Serving: turns socket frames (and DNS questions, and HTTP scrapes) into [`Resolver`] calls
//! and results into frames. [`Service`] is the one place a request becomes resolver calls, for
//! the socket ([`Service::handle`]) and the DNS front-end ([`Service::dns_question`]) alike;
//! DNS wire formats live in [`dns`] only.
//!
//! - [`socket`]: the Unix-socket server (binary and JSON framings, pipelining, limits);
//! - [`dns`]: a DNS front-end on loopback for unmodified filters;
//! - [`postfix`]: Postfix's SMTPD policy delegation protocol (SPF at RCPT time);
//! - [`admin`]: `/live`, `/ready`, `/metrics`;
//! - [`daemon`]: the whole process: configuration → resolver → snapshot → servers → signals.

pub mod admin;
pub mod daemon;
pub mod dns;
pub mod postfix;
pub mod socket;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::proto::ErrorCode;
use crate::proto::frame::Framing;
use crate::proto::{
    self, Op, Outcome, PROTOCOL_MAJOR, PROTOCOL_MINOR, PolicyAnswer, Reply, Request, Response,
    WireError,
};
use crate::resolve::{Kind, Lookup, ResolveError, Resolver};

pub use self::socket::{SocketConfig, run};

/// What every front-end shares: the resolver, the metrics, readiness.
pub struct Service {
    resolver: Resolver,
    /// Request metrics (read by the admin endpoint).
    pub metrics: admin::Metrics,
    ready: AtomicBool,
    /// The socket server's connection slots, once it runs.
    socket_slots: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// When the socket's `accept` last failed (e.g. EMFILE): milliseconds since `origin`, plus
    /// one; 0 when it never did.
    accept_failed_at: AtomicU64,
    origin: Instant,
}

/// How long after a failed `accept` the socket counts as unable to accept.
const ACCEPT_FAILING_FOR_MS: u64 = 1000;

impl Service {
    /// A service over `resolver`.
    pub fn new(resolver: Resolver) -> Arc<Service> {
        Arc::new(Service {
            resolver,
            metrics: admin::Metrics::default(),
            ready: AtomicBool::new(false),
            socket_slots: Mutex::new(None),
            accept_failed_at: AtomicU64::new(0),
            origin: Instant::now(),
        })
    }

    /// The resolver.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Marks the service ready (socket bound, snapshot loaded).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/ready` should say yes: marked ready, and the socket can take a connection (a
    /// slot is free under `socket.max_connections` and `accept` does not fail).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.socket_accepts()
    }

    /// Whether the socket server can take one more connection now (true when none runs).
    pub fn socket_accepts(&self) -> bool {
        let slots_free = self
            .socket_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|s| s.available_permits() > 0);
        slots_free && !self.accept_failing()
    }

    /// Whether `accept` failed within the last second (nothing to clear it: readiness comes
    /// back by itself once failures stop, even if no client connects).
    fn accept_failing(&self) -> bool {
        match self.accept_failed_at.load(Ordering::SeqCst) {
            0 => false,
            at => self.millis() < at - 1 + ACCEPT_FAILING_FOR_MS,
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The socket server's connection slots (for readiness).
    pub(crate) fn attach_socket(&self, slots: Arc<tokio::sync::Semaphore>) {
        *self.socket_slots.lock().unwrap_or_else(|e| e.into_inner()) = Some(slots);
    }

    /// Records that the socket's `accept` failed: not ready for the next second.
    pub(crate) fn accept_failed(&self) {
        self.accept_failed_at
            .store(self.millis().saturating_add(1), Ordering::SeqCst);
    }

    /// Answers `Hello` here (so the connection can be closed on an unknown major version);
    /// `None` for every other operation. A JSON-lines client may also say major 1
    /// ([`proto::major_accepted`]); a binary one must say [`PROTOCOL_MAJOR`].
    pub fn version_check(&self, req: &Request, framing: Framing) -> Option<Response> {
        let Op::Hello { version } = &req.op else {
            return None;
        };
        let result = match proto::parse_version(version) {
            Some((major, _)) if proto::major_accepted(major, framing) => Outcome::Ok(hello()),
            _ => Outcome::Error(WireError::new(
                "unsupported_version",
                format!(
                    "protocol {version:?} is not supported; this server speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}{}",
                    match framing {
                        Framing::Json => " (and 1.x on JSON lines)",
                        Framing::Binary =>
                            " (binary frames: 2.x only; 1.x clients may use JSON lines)",
                    }
                ),
            )),
        };
        Some(Response { id: req.id, result })
    }

    /// Answers one operation.
    pub async fn handle(&self, op: Op) -> Outcome {
        let started = Instant::now();
        let label = op.label();
        // The same instant is the resolver's logical time (one clock read less per request).
        let outcome = self.dispatch(op, started).await;
        let result = match &outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Error(e) => e.code.as_str(),
        };
        self.metrics.request(label, result, started.elapsed());
        outcome
    }

    async fn dispatch(&self, op: Op, now: Instant) -> Outcome {
        let r = &self.resolver;
        let policy = |l: Result<Lookup, crate::resolve::ResolveError>| match l {
            Ok(l) => Outcome::Ok(Reply::Policy(policy_answer(l))),
            Err(e) => Outcome::Error(WireError::from(&e)),
        };
        match op {
            Op::Hello { .. } => Outcome::Ok(hello()),
            Op::Ping => Outcome::Ok(Reply::Pong),
            Op::Stats => Outcome::Ok(Reply::Stats(Box::new(r.stats().await))),
            Op::Spf { domain } => match proto::normalize_domain_owned(domain) {
                Ok(d) => policy(r.spf(&d, now).await),
                Err(e) => Outcome::Error(e),
            },
            Op::DkimKey { selector, domain } => {
                match (
                    proto::normalize_domain_owned(selector),
                    proto::normalize_domain_owned(domain),
                ) {
                    (Ok(s), Ok(d)) => policy(r.dkim_key(&s, &d, now).await),
                    (Err(e), _) | (_, Err(e)) => Outcome::Error(e),
                }
            }
            Op::Atps {
                signer,
                author,
                hash,
            } => {
                match (
                    proto::normalize_domain_owned(signer),
                    proto::normalize_domain_owned(author),
                ) {
                    (Ok(s), Ok(a)) => policy(r.atps(&s, &a, hash, now).await),
                    (Err(e), _) | (_, Err(e)) => Outcome::Error(e),
                }
            }
            Op::Tlsa { host, port } => match proto::normalize_domain_owned(host) {
                Ok(h) => policy(r.tlsa(&h, port.unwrap_or(25), now).await),
                Err(e) => Outcome::Error(e),
            },
            Op::SpfCheck {
                ip,
                mail_from,
                helo,
            } => match ip.trim().parse::<std::net::IpAddr>() {
                Ok(ip) => Outcome::Ok(Reply::SpfCheck(Box::new(
                    r.spf_check(ip, &mail_from, &helo, now).await,
                ))),
                Err(_) => Outcome::Error(WireError::new(
                    "invalid_ip",
                    format!("{ip:?} is not an IP address"),
                )),
            },
            Op::DmarcEvaluate(input) => match proto::normalize_author_domain(&input.from_domain) {
                Ok(d) => Outcome::Ok(Reply::DmarcVerdict(Box::new(
                    r.dmarc_evaluate_from(&d, &input, now).await,
                ))),
                Err(e) => Outcome::Error(e),
            },
            Op::Dmarc { domain } => match proto::normalize_author_domain(&domain) {
                Ok(d) => match r.dmarc(&d, now).await {
                    Ok(disc) => Outcome::Ok(Reply::Dmarc(Box::new(disc))),
                    Err(e) => Outcome::Error(WireError::from(&e)),
                },
                Err(e) => Outcome::Error(e),
            },
        }
    }
}

/// A DNS front-end question's type (its RR type code): TXT and TLSA answered from the policy
/// entries, any other type forwarded ([`Kind::Forward`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsType(pub u16);

/// The `op` label of `mailpolicyd_requests_total` for each DNS front-end type with its own,
/// by RR type code; every other type counts as `dns_other` (the last row).
pub const DNS_LABELS: [(u16, &str); 14] = [
    (16, "dns_txt"),
    (52, "dns_tlsa"),
    (1, "dns_a"),
    (28, "dns_aaaa"),
    (15, "dns_mx"),
    (12, "dns_ptr"),
    (2, "dns_ns"),
    (6, "dns_soa"),
    (5, "dns_cname"),
    (33, "dns_srv"),
    (257, "dns_caa"),
    (43, "dns_ds"),
    (48, "dns_dnskey"),
    (0, "dns_other"),
];

impl DnsType {
    /// TXT.
    pub const TXT: DnsType = DnsType(16);
    /// TLSA.
    pub const TLSA: DnsType = DnsType(52);

    /// The row of [`DNS_LABELS`] this type counts under.
    pub fn index(self) -> usize {
        DNS_LABELS
            .iter()
            .position(|(code, _)| *code == self.0)
            .unwrap_or(DNS_LABELS.len() - 1)
    }

    /// The `op` label of `mailpolicyd_requests_total` for a question of this type.
    pub fn label(self) -> &'static str {
        DNS_LABELS[self.index()].1
    }

    /// The cache kind that answers a question of this type at `name`: TXT by the name
    /// ([`txt_kind`]), TLSA validated, anything else forwarded as it is.
    pub fn kind(self, name: &str) -> Kind {
        match self {
            DnsType::TXT => txt_kind(name),
            DnsType::TLSA => Kind::Tlsa,
            DnsType(code) => Kind::Forward(code),
        }
    }
}

/// The cache entry that answers a TXT question at `name` (labels compared without case, a
/// trailing dot allowed): `_dmarc.<d>` the DMARC entry that the socket's `dmarc` discovery asks,
/// `<sel>._domainkey.<d>` the DKIM key entry of `dkim_key`, `<label>._atps.<d>` the ATPS entry
/// of `atps`, any other name the SPF entry of `spf` and `spf_check`. Each of these keeps every TXT record at its name
/// ([`crate::resolve::Answer::txt`]), so the kind never filters what the front-end returns.
pub fn txt_kind(name: &str) -> Kind {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut labels = name.split('.');
    let first = labels.next().unwrap_or_default();
    let mut rest = labels.peekable();
    if rest.peek().is_none() {
        return Kind::Spf;
    }
    if first.eq_ignore_ascii_case("_dmarc") {
        return Kind::Dmarc;
    }
    while let Some(label) = rest.next() {
        if rest.peek().is_none() {
            break;
        }
        if label.eq_ignore_ascii_case("_domainkey") {
            return Kind::DkimKey;
        }
        if label.eq_ignore_ascii_case("_atps") {
            return Kind::Atps;
        }
    }
    Kind::Spf
}

impl Service {
    /// Answers one DNS front-end question of type `qtype` at `name` (as asked, any case, a
    /// trailing dot allowed), counted in the request metrics under [`DnsType::label`] (the
    /// front-end counts its wire-cache hits itself, `ok`, without a duration). A TXT
    /// answer's records are [`crate::resolve::Answer::txt`] of the returned answer: a TXT
    /// question shares its cache entry with the socket's operation on that name
    /// ([`txt_kind`]), costing no upstream query when the socket asked first, and the other way
    /// round. An entry restored from a snapshot does not keep its TXT records: then the name's
    /// TXT records are asked as raw TXT (cached apart, once).
    ///
    /// `dnssec_ok`: the client set DO and wants the signatures and denial proofs with the
    /// records. The TLSA and DKIM key entries keep them (they are asked with DNSSEC), and every
    /// other type is forwarded with DO; a TXT question at any other name is then forwarded
    /// too (`Kind::Forward`, cached apart from the policy entry, which is asked without DO).
    /// With `[dnssec] mode = "off"` nothing is asked with DO.
    pub async fn dns_question(
        &self,
        name: &str,
        qtype: DnsType,
        dnssec_ok: bool,
    ) -> Result<Lookup, ResolveError> {
        let started = Instant::now();
        let r = &self.resolver;
        let mut kind = qtype.kind(name);
        let signed_txt = dnssec_ok
            && r.dnssec_mode() != crate::resolve::DnssecMode::Off
            && matches!(kind, Kind::Spf | Kind::Dmarc | Kind::Atps);
        if signed_txt {
            kind = Kind::Forward(qtype.0);
        }
        let mut result = r.lookup(kind, name, started).await;
        if let Ok(l) = &result
            && qtype == DnsType::TXT
            && !signed_txt
            && l.answer.txt().is_none()
        {
            result = r.lookup(Kind::Txt, name, started).await;
        }
        let error = result.as_ref().err().map(WireError::from);
        let code = error.as_ref().map_or("ok", |e| e.code.as_str());
        self.metrics.request(qtype.label(), code, started.elapsed());
        result
    }
}

fn hello() -> Reply {
    Reply::Hello {
        version: format!("{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"),
        server: format!("mailpolicyd {}", env!("CARGO_PKG_VERSION")),
    }
}

fn policy_answer(l: Lookup) -> PolicyAnswer {
    PolicyAnswer {
        source: l.source,
        ttl: l.ttl_remaining,
        answer: l.answer,
    }
}

/// A resolver error as the wire tells it: its row of `proto::error`'s table (the table stays in
/// `proto`; this mapping lives here, where both sides are visible).
impl From<&ResolveError> for WireError {
    fn from(e: &ResolveError) -> WireError {
        let code = match e {
            ResolveError::Timeout => ErrorCode::Timeout,
            ResolveError::ServFail => ErrorCode::ServFail,
            ResolveError::Refused => ErrorCode::Refused,
            ResolveError::DnssecBogus => ErrorCode::DnssecBogus,
            ResolveError::RateLimited => ErrorCode::RateLimited,
            ResolveError::InvalidName(_) => ErrorCode::InvalidName,
            ResolveError::Rcode(_) | ResolveError::Network(_) => ErrorCode::Upstream,
            _ => ErrorCode::Internal,
        };
        WireError::of(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::{Service, txt_kind};
    use crate::resolve::{Kind, Resolver, ResolverConfig};

    /// Which entry answers a front-end TXT question: the labels, in any case, decide.
    #[test]
    fn txt_questions_map_to_the_socket_operations_entries() {
        for (name, kind) in [
            ("_dmarc.example.test.", Kind::Dmarc),
            ("_DMARC.Example.Test", Kind::Dmarc),
            ("_dmarc.sub.example.test", Kind::Dmarc),
            ("sel._domainkey.example.test.", Kind::DkimKey),
            ("a.b._DomainKey.example.test", Kind::DkimKey),
            ("abc._atps.signer.test.", Kind::Atps),
            ("abc._atps", Kind::Spf),
            ("example.test.", Kind::Spf),
            ("_dmarc", Kind::Spf),
            ("_dmarc.", Kind::Spf),
            ("_domainkey.example.test", Kind::Spf),
            ("sel._domainkey", Kind::Spf),
            ("x._dmarc.example.test", Kind::Spf),
            ("", Kind::Spf),
        ] {
            assert_eq!(txt_kind(name), kind, "{name:?}");
        }
    }

    /// A failed `accept` makes `/ready` say no for a second, then it comes back by itself,
    /// although no connection was accepted since.
    #[tokio::test]
    async fn readiness_comes_back_a_second_after_the_last_failed_accept() {
        let mut cfg = ResolverConfig::default();
        cfg.upstream.servers = vec!["127.0.0.1:9".parse().unwrap()];
        let service = Service::new(Resolver::new(cfg).unwrap());
        service.set_ready(true);
        assert!(service.is_ready());
        service.accept_failed();
        assert!(!service.is_ready());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(service.is_ready());
    }
}
