//! `[dnssec] mode = "upstream_ad"`: the upstream validates and says so in the AD bit (RFC 4035
//! §3.2.3, RFC 6840 §5.7). hickory's resolver and name-server pool hide the response header
//! for negative answers and turn a SERVFAIL into an error without its EDNS options, so this
//! mode sends its own queries: one message (RD, AD, EDNS with DO, 1232-byte payload) over UDP,
//! over TCP when the answer is truncated, to the configured servers in turn, at most
//! `attempts` sends in all under the query's deadline.
//!
//! An answer is `secure` exactly when the response has AD, `insecure` otherwise (a
//! NXDOMAIN/NODATA as much as records). A SERVFAIL is `dnssec_bogus` when the upstream says
//! so: an Extended DNS Error (RFC 8914) with an INFO-CODE 6–12 (DNSSEC Bogus … No Zone Key Bit
//! Set). A SERVFAIL with another EDE is an ordinary `servfail`. A SERVFAIL without any EDE
//! (Unbound without `ede: yes`, for one) is asked once more with CD (checking disabled, RFC
//! 4035 §3.2.2): if the upstream then answers, its SERVFAIL was its validation failing, and the
//! answer is `dnssec_bogus`; otherwise `servfail`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::opt::EdnsOption;
use hickory_resolver::proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::chain::answer_chain;
use super::forward::{negative, no_records};
use super::{DnssecStatus, RawAnswer, Upstream, UpstreamConfig, query_name, servers_and_options};
use crate::resolve::ResolveError;

/// The EDNS option code of an Extended DNS Error (RFC 8914 §2).
const EDE_CODE: u16 = 15;
/// The EDE INFO-CODEs that mean "DNSSEC validation failed" (RFC 8914 §4.7–4.13: DNSSEC Bogus,
/// Signature Expired, Signature Not Yet Valid, DNSKEY Missing, RRSIGs Missing, No Zone Key Bit
/// Set, NSEC Missing).
const EDE_BOGUS: std::ops::RangeInclusive<u16> = 6..=12;
/// The UDP payload size advertised (DNS flag day 2020).
const PAYLOAD: u16 = 1232;
/// Datagrams read on one socket before giving up on a matching answer.
const MAX_DATAGRAMS: usize = 16;

/// The servers this mode asks: the configured ones, or `/etc/resolv.conf`'s (port of their
/// first connection).
pub(super) fn servers(cfg: &UpstreamConfig) -> Result<Vec<SocketAddr>, ResolveError> {
    if !cfg.servers.is_empty() {
        return Ok(cfg.servers.clone());
    }
    let (config, _) = servers_and_options(cfg, false)?;
    Ok(config
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map_or(53, |c| c.port)))
        .collect())
}

/// What one exchange gave.
enum Reply {
    Message(Box<Message>),
    Failed(ResolveError),
}

impl Upstream {
    /// Asks `name`/`rtype` with DO and AD and takes the DNSSEC status from the AD bit.
    pub(super) async fn query_ad(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> Result<RawAnswer, ResolveError> {
        let qname = query_name(name)?;
        let started = Instant::now();
        // A SERVFAIL without EDE is asked again with CD: the validating deadline.
        let until = tokio::time::Instant::from_std(started) + self.deadline(true);
        let work = async {
            let response = self.ask(&qname, rtype, false).await?;
            self.classify(&qname, rtype, response, started).await
        };
        tokio::time::timeout_at(until, work)
            .await
            .unwrap_or(Err(ResolveError::Timeout))
    }

    /// Up to `attempts` sends, the servers in turn; the first response that is not a
    /// transport failure.
    async fn ask(
        &self,
        qname: &Name,
        rtype: RecordType,
        cd: bool,
    ) -> Result<Message, ResolveError> {
        if self.ad_servers.is_empty() {
            return Err(ResolveError::Config("no upstream servers".into()));
        }
        let mut last = ResolveError::Timeout;
        for attempt in 0..self.attempts.max(1) {
            let server = self.ad_servers[attempt % self.ad_servers.len()];
            match exchange(server, qname, rtype, cd, self.timeout).await {
                Reply::Message(m) => return Ok(*m),
                Reply::Failed(e) => last = e,
            }
        }
        Err(last)
    }

    async fn classify(
        &self,
        qname: &Name,
        rtype: RecordType,
        m: Message,
        started: Instant,
    ) -> Result<RawAnswer, ResolveError> {
        let dnssec = if m.metadata.authentic_data {
            DnssecStatus::Secure
        } else {
            DnssecStatus::Insecure
        };
        match m.metadata.response_code {
            ResponseCode::NoError if m.answers.iter().any(|r| r.record_type() == rtype) => {
                let chain = answer_chain(qname, rtype, &m.answers)?;
                Ok(RawAnswer::positive(
                    rtype,
                    &chain,
                    &m.authorities,
                    dnssec,
                    started.elapsed(),
                ))
            }
            code @ (ResponseCode::NoError | ResponseCode::NXDomain) => {
                let nr = no_records(qname, rtype, code, &m.authorities);
                let mut a = negative(qname, &nr, &m.answers, started);
                a.dnssec = dnssec;
                Ok(a)
            }
            ResponseCode::ServFail => match ede(&m) {
                Some(code) if EDE_BOGUS.contains(&code) => Err(ResolveError::DnssecBogus),
                Some(_) => Err(ResolveError::ServFail),
                None => {
                    // No word on why: ask once more with checking disabled.
                    match self.ask(qname, rtype, true).await {
                        Ok(m2)
                            if matches!(
                                m2.metadata.response_code,
                                ResponseCode::NoError | ResponseCode::NXDomain
                            ) =>
                        {
                            Err(ResolveError::DnssecBogus)
                        }
                        _ => Err(ResolveError::ServFail),
                    }
                }
            },
            ResponseCode::Refused => Err(ResolveError::Refused),
            other => Err(ResolveError::Rcode(other.to_string().into())),
        }
    }
}

/// The INFO-CODE of the response's first Extended DNS Error, if any.
fn ede(m: &Message) -> Option<u16> {
    let edns = m.edns.as_ref()?;
    edns.options().as_ref().iter().find_map(|(_, o)| match o {
        EdnsOption::Unknown(EDE_CODE, data) if data.len() >= 2 => {
            Some(u16::from_be_bytes([data[0], data[1]]))
        }
        _ => None,
    })
}

/// One query to `server`: UDP, then TCP if the answer is truncated.
async fn exchange(
    server: SocketAddr,
    qname: &Name,
    rtype: RecordType,
    cd: bool,
    timeout: Duration,
) -> Reply {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.metadata.authentic_data = true;
    q.metadata.checking_disabled = cd;
    q.queries.push(Query::query(qname.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(PAYLOAD).set_dnssec_ok(true);
    q.edns = Some(edns);
    let bytes = match q.to_vec() {
        Ok(b) => b,
        Err(e) => return Reply::Failed(ResolveError::InvalidName(e.to_string().into())),
    };
    let sent = Sent {
        bytes: &bytes,
        id: q.metadata.id,
        qname,
        rtype,
    };
    let reply = match within(timeout, sent.udp(server)).await {
        Ok(m) if m.metadata.truncation => within(timeout, sent.tcp(server)).await,
        other => other,
    };
    match reply {
        Ok(m) => Reply::Message(Box::new(m)),
        Err(e) => Reply::Failed(e),
    }
}

/// `exchange` bounded by `timeout`.
async fn within(
    timeout: Duration,
    exchange: impl std::future::Future<Output = Result<Message, ResolveError>>,
) -> Result<Message, ResolveError> {
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(ResolveError::Timeout))
}

fn net(e: std::io::Error) -> ResolveError {
    ResolveError::Network(e.to_string().into())
}

/// One query as sent: its bytes, and what an answer must match.
struct Sent<'a> {
    bytes: &'a [u8],
    id: u16,
    qname: &'a Name,
    rtype: RecordType,
}

impl Sent<'_> {
    /// The response answers this question: same id, a response, the one question we asked.
    fn answered_by(&self, m: &Message) -> bool {
        m.metadata.id == self.id
            && m.metadata.message_type == hickory_resolver::proto::op::MessageType::Response
            && m.queries.len() == 1
            && m.queries[0].query_type == self.rtype
            && super::chain::same_name(&m.queries[0].name, self.qname)
    }

    async fn udp(&self, server: SocketAddr) -> Result<Message, ResolveError> {
        let bind: SocketAddr = if server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind).await.map_err(net)?;
        sock.connect(server).await.map_err(net)?;
        sock.send(self.bytes).await.map_err(net)?;
        let mut buf = vec![0u8; 65_535];
        for _ in 0..MAX_DATAGRAMS {
            let n = sock.recv(&mut buf).await.map_err(net)?;
            if let Ok(m) = Message::from_vec(&buf[..n])
                && self.answered_by(&m)
            {
                return Ok(m);
            }
        }
        Err(ResolveError::Network("no matching UDP answer".into()))
    }

    async fn tcp(&self, server: SocketAddr) -> Result<Message, ResolveError> {
        let mut s = TcpStream::connect(server).await.map_err(net)?;
        let len = u16::try_from(self.bytes.len())
            .map_err(|_| ResolveError::Network("query too long".into()))?;
        let mut framed = Vec::with_capacity(self.bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(self.bytes);
        s.write_all(&framed).await.map_err(net)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.map_err(net)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.map_err(net)?;
        let m = Message::from_vec(&buf)
            .map_err(|e| ResolveError::Network(format!("undecodable answer: {e}").into()))?;
        if self.answered_by(&m) {
            Ok(m)
        } else {
            Err(ResolveError::Network(
                "TCP answer to another question".into(),
            ))
        }
    }
}
