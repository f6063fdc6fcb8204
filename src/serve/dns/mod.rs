//! A DNS front-end on loopback, a caching resolver for everything an unmodified rspamd,
//! OpenDMARC, OpenDKIM, pyspf or Postfix asks, sharing the socket's cache: every question goes
//! through [`Service::dns_question`]. TXT and TLSA are answered from the same cache entries as
//! the socket's operations (TLSA validated, with the AD bit set only for a secure answer); every
//! other data type of class IN (A, AAAA, MX, PTR, NS, SOA, CNAME, DS, SRV, CAA, ...) is
//! forwarded to the upstream as it is ([`Kind::Forward`](crate::resolve::Kind::Forward)) and
//! cached by TTL with the same machinery (coalescing, negative caching, serve-stale, the
//! organization's limits) — unless `dns.forward_other_types = false`, then REFUSED; meta types
//! (ANY, AXFR, IXFR, OPT, TSIG) are always REFUSED. Answers carry the upstream's records as it
//! gave them: the CNAME chain, TXT strings as published, and for NXDOMAIN and NODATA the SOA in
//! the authority section (RFC 2308); nothing is answered from a hosts file or made up for
//! `localhost` names. Refuses to bind a non-loopback address unless allowed (the configuration
//! checks that), so it is never an open resolver by accident.
//!
//! UDP is served by our own loop: a question answered recently (a tenth of its TTL, at most
//! five seconds) is answered again from its wire form ([`answer_cache`]: one hash lookup and
//! one copy, with the ID, RD bit, question case and TTLs patched); anything else is decoded and
//! encoded by hickory-proto and answered through the service, which also fills the wire cache;
//! [`records`] turns the service's answer into DNS records. TCP is served by hickory-server
//! with the same handler. A UDP answer is at most [`EDNS_PAYLOAD`] bytes whatever size the
//! client offers (the size we advertise; a longer one is sent truncated, TC set, for a retry
//! over TCP), and a question of a class other than IN is REFUSED. (The performance notes
//! measured hickory's stock catalog path at a third of Unbound's rate, and a custom handler
//! still at under half: building records and a message per answer costs more than the cache
//! lookup.)

pub mod answer_cache;
mod records;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_resolver::proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio_util::sync::CancellationToken;

use self::answer_cache::{Query, WireCache, parse_query};
use self::records::Answered;
use super::{DNS_LABELS, DnsType, Service};

/// The EDNS payload size we offer (the DNS flag day 2020 value), and the most any UDP answer
/// carries, whatever the client offers: beyond it the answer is truncated (TC).
pub const EDNS_PAYLOAD: u16 = 1232;

/// The largest UDP query read; a longer one is cut short and answered FORMERR.
const MAX_QUERY: usize = 4096;

struct Handler {
    service: Arc<Service>,
    forward: bool,
    wire: WireCache,
}

/// Serves DNS on `addr` (UDP and TCP) until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    service: Arc<Service>,
    forward: bool,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let (udp, tcp) = bind_pair(addr).await?;
    let udp = Arc::new(udp);
    let bound = udp.local_addr()?;
    // The loop checks for shutdown between datagrams, at least this often.
    udp.set_read_timeout(Some(Duration::from_millis(200)))?;
    let handler = Arc::new(Handler {
        service,
        forward,
        wire: WireCache::default(),
    });
    let mut server = Server::new(TcpHandler(handler.clone()));
    server.register_listener(tcp, Duration::from_secs(5), 4096);
    let runtime = tokio::runtime::Handle::current();
    let stop = shutdown.clone();
    std::thread::Builder::new()
        .name("mailpolicyd-udp".into())
        .spawn(move || udp_loop(&udp, &handler, &runtime, &stop))?;
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = server.shutdown_gracefully().await;
    });
    Ok(bound)
}

/// How often port 0 (any free port) is tried for a UDP and TCP pair before giving up.
const PORT_PAIR_TRIES: usize = 16;

/// The UDP socket and TCP listener on `addr`. Port 0 asks for any free port: the UDP socket
/// gets one from the kernel, and the TCP listener must get the same number, which another TCP
/// socket (an outgoing connection's ephemeral port) may hold; then a new UDP port is drawn, at
/// most [`PORT_PAIR_TRIES`] times. A fixed port is tried once.
async fn bind_pair(
    addr: SocketAddr,
) -> std::io::Result<(std::net::UdpSocket, tokio::net::TcpListener)> {
    let tries = if addr.port() == 0 { PORT_PAIR_TRIES } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let udp = std::net::UdpSocket::bind(addr)?;
        match tokio::net::TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse)))
}

/// Reads UDP questions on its own thread until `shutdown`: wire-cache hits are answered right
/// there (one blocking `recv_from`, one `send_to`, no event loop in between, as Unbound's and
/// NSD's workers do), everything else in a task on the runtime, so a slow upstream never holds
/// up the loop.
fn udp_loop(
    sock: &Arc<std::net::UdpSocket>,
    h: &Arc<Handler>,
    runtime: &tokio::runtime::Handle,
    shutdown: &CancellationToken,
) {
    let mut buf = vec![0u8; MAX_QUERY];
    let mut out = Vec::with_capacity(MAX_QUERY);
    let wire_answers = h.service.metrics.dns_counter("wire");
    // A hit is a request answered `ok`: one counter per question type, fetched once.
    let requests = DNS_LABELS.map(|(_, label)| h.service.metrics.ok_counter(label));
    while !shutdown.is_cancelled() {
        let (len, peer) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems.
                tracing::debug!(error = %e, "dns: recv");
                continue;
            }
        };
        let msg = &buf[..len];
        let fast = parse_query(msg);
        if let Some(q) = &fast
            && h.wire.answer(msg, q, Instant::now(), &mut out)
        {
            wire_answers.inc();
            if let Some(t) = dns_type(RecordType::from(q.qtype()), h.forward) {
                requests[t.index()].inc();
            }
            if let Err(e) = sock.send_to(&out, peer) {
                tracing::debug!(error = %e, "dns: send");
            }
            continue;
        }
        let query = msg.to_vec();
        let (reply, h) = (sock.clone(), h.clone());
        runtime.spawn(async move {
            if let Some(resp) = h.full_answer(&query, fast.as_ref()).await {
                h.service.metrics.dns_answered("full");
                // A UDP send does not wait for the peer.
                if let Err(e) = reply.send_to(&resp, peer) {
                    tracing::debug!(error = %e, "dns: send");
                }
            }
        });
    }
}

impl Handler {
    /// The answer records and response code for one question. Only class IN is answered: the
    /// resolver asks IN, so another class (`CH version.bind`, ANY) is REFUSED, never answered
    /// with IN data.
    /// `dnssec_ok`: the client set DO (RFC 4035 §3.2.1): signatures and denial proofs go with
    /// the records.
    async fn answer(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        dnssec_ok: bool,
    ) -> Answered {
        if qclass != DNSClass::IN {
            return Answered::refused(ResponseCode::Refused);
        }
        let Some(dns_type) = dns_type(qtype, self.forward) else {
            return Answered::refused(ResponseCode::Refused);
        };
        match self
            .service
            .dns_question(&name.to_ascii(), dns_type, dnssec_ok)
            .await
        {
            Ok(lookup) => Answered::from_lookup(name, qtype, &lookup, dnssec_ok),
            Err(_) => Answered::refused(ResponseCode::ServFail),
        }
    }

    /// Answers one UDP message through hickory-proto and the resolver (the full path), and
    /// keeps the encoded answer for the fast path when `fast` says the query qualifies.
    /// `None` when nothing should be sent (a response, or bytes without a DNS header).
    async fn full_answer(&self, query: &[u8], fast: Option<&Query>) -> Option<Vec<u8>> {
        let req = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => {
                // Undecodable: FORMERR if there is a header to answer, else silence.
                if query.len() < 12 || query[2] & 0x80 != 0 {
                    return None;
                }
                let id = u16::from_be_bytes([query[0], query[1]]);
                let resp = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return resp.to_vec().ok();
            }
        };
        if req.metadata.message_type == MessageType::Response {
            return None;
        }
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.metadata.checking_disabled = req.metadata.checking_disabled;
        resp.add_queries(req.queries.iter().cloned());
        let mut reuse = None;
        if let Some(e) = &req.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(EDNS_PAYLOAD);
            ours.set_dnssec_ok(e.flags().dnssec_ok);
            resp.set_edns(ours);
        }
        if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
            resp.metadata.response_code = ResponseCode::BADVERS;
        } else if req.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
        } else if req.queries.len() != 1 {
            resp.metadata.response_code = ResponseCode::FormErr;
        } else {
            let q = &req.queries[0];
            let name: Name = q.name().clone();
            let dnssec_ok = req.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
            let a = self
                .answer(&name, q.query_type(), q.query_class(), dnssec_ok)
                .await;
            resp.metadata.response_code = a.rcode;
            // AD only to a client that asked for it with DO or AD (RFC 6840 §5.7, RFC 4035
            // §3.2.3).
            let asked = req.metadata.authentic_data || dnssec_ok;
            resp.metadata.authentic_data = a.secure && asked;
            resp.add_answers(a.records);
            resp.add_authorities(a.authority);
            reuse = a.ttl;
        }
        let bytes = resp.to_vec().ok()?;
        let max = udp_limit(req.edns.as_ref().map(Edns::max_payload));
        if bytes.len() > max {
            return resp.truncate().to_vec().ok();
        }
        if let (Some(q), Some(ttl)) = (fast, reuse) {
            self.wire.store(q, &bytes, ttl, Instant::now());
        }
        Some(bytes)
    }
}

/// The service's question type for a `qtype` question: TXT and TLSA always, every other
/// data type when forwarding (the default); `None` is REFUSED: the meta types (zone
/// transfers, ANY, OPT, TSIG, TKEY, MAILA/MAILB), which a caching resolver does not forward.
fn dns_type(qtype: RecordType, forward: bool) -> Option<DnsType> {
    match qtype {
        RecordType::TXT => Some(DnsType::TXT),
        RecordType::TLSA => Some(DnsType::TLSA),
        RecordType::AXFR
        | RecordType::IXFR
        | RecordType::ANY
        | RecordType::OPT
        | RecordType::TSIG
        | RecordType::Unknown(249 | 253 | 254) => None,
        other if forward => Some(DnsType(u16::from(other))),
        _ => None,
    }
}

/// The most a UDP answer may carry for a client offering `offered` (its EDNS payload size;
/// `None` without EDNS): 512 without EDNS (RFC 1035), else the offer within 512..=1232 (RFC 6891
/// §6.2.5; we advertise 1232 and never send more, whatever the client offers).
pub fn udp_limit(offered: Option<u16>) -> usize {
    offered.map_or(512, |p| usize::from(p.clamp(512, EDNS_PAYLOAD)))
}

/// hickory-server's view of the handler, for TCP.
struct TcpHandler(Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for TcpHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let Some(q) = request.queries.queries().first() else {
            let resp = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return match response_handle.send_response(resp).await {
                Ok(info) => info,
                Err(_) => ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                }),
            };
        };
        let name: Name = q.name().into();
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let a = self
            .0
            .answer(&name, q.query_type(), q.query_class(), dnssec_ok)
            .await;
        metadata.response_code = a.rcode;
        let asked = request.metadata.authentic_data || dnssec_ok;
        metadata.authentic_data = a.secure && asked;
        let resp = builder.build(
            metadata,
            a.records.iter(),
            a.authority.iter(),
            None::<&Record>,
            None::<&Record>,
        );
        match response_handle.send_response(resp).await {
            Ok(info) => info,
            Err(_) => ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            }),
        }
    }
}
