//! A DNS front-end on loopback, so an unmodified OpenDMARC, rspamd or Postfix pointed at it gets
//! the same cache: TXT and TLSA questions are answered through the resolver (TLSA validated,
//! with the AD bit set only for a secure answer); A, AAAA, MX and PTR only when forwarding is
//! enabled; anything else REFUSED. Refuses to bind a non-loopback address unless allowed
//! (the configuration checks that), so it is never an open resolver by accident.
//!
//! A custom hickory-server `RequestHandler` answering from our cache, not a zone `Catalog`:
//! the performance notes measured the stock catalog path at a third of Unbound's rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR, TXT, tlsa};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio_util::sync::CancellationToken;

use super::Service;
use crate::resolve::{Data, DnssecStatus, Kind, Rcode};

struct Handler {
    service: Arc<Service>,
    forward: bool,
}

/// Serves DNS on `addr` (UDP and TCP) until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    service: Arc<Service>,
    forward: bool,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    let bound = udp.local_addr()?;
    let tcp = tokio::net::TcpListener::bind(bound).await?;
    let mut server = Server::new(Handler { service, forward });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 4096);
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = server.shutdown_gracefully().await;
    });
    Ok(bound)
}

fn txt_rdata(joined: &str) -> RData {
    // Character-strings hold at most 255 octets; the joined record is split back into them.
    let chunks: Vec<&[u8]> = joined.as_bytes().chunks(255).collect();
    RData::TXT(TXT::from_bytes(if chunks.is_empty() {
        vec![&b""[..]]
    } else {
        chunks
    }))
}

fn tlsa_rdata(t: &crate::policy::tlsa::Tlsa) -> RData {
    RData::TLSA(tlsa::TLSA::new(
        tlsa::CertUsage::from(t.usage.0),
        tlsa::Selector::from(t.selector.0),
        tlsa::Matching::from(t.matching.0),
        t.data.clone(),
    ))
}

impl Handler {
    /// The answer records and response code for one question.
    async fn answer(&self, name: &Name, qtype: RecordType) -> (ResponseCode, Vec<Record>, bool) {
        let kind = match qtype {
            RecordType::TXT => Kind::Txt,
            RecordType::TLSA => Kind::Tlsa,
            RecordType::A if self.forward => Kind::A,
            RecordType::AAAA if self.forward => Kind::Aaaa,
            RecordType::MX if self.forward => Kind::Mx,
            RecordType::PTR if self.forward => Kind::Ptr,
            _ => return (ResponseCode::Refused, Vec::new(), false),
        };
        let text = name.to_ascii();
        let lookup = match self
            .service
            .resolver()
            .lookup(kind, &text, Instant::now())
            .await
        {
            Ok(l) => l,
            Err(_) => return (ResponseCode::ServFail, Vec::new(), false),
        };
        let a = &lookup.answer;
        if a.dnssec == DnssecStatus::Bogus || a.rcode == Rcode::ServFail {
            return (ResponseCode::ServFail, Vec::new(), false);
        }
        let ttl = lookup.ttl_remaining.max(1);
        let owner = name.clone();
        let rdatas: Vec<RData> = match &a.data {
            Data::Txt(t) => t.iter().map(|s| txt_rdata(s)).collect(),
            Data::Tlsa(t) => t.iter().map(|p| tlsa_rdata(&p.policy)).collect(),
            Data::Addrs(ips) => ips
                .iter()
                .filter_map(|ip| match (ip, qtype) {
                    (std::net::IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (std::net::IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                })
                .collect(),
            Data::Mx(m) => m
                .iter()
                .filter_map(|(pref, host)| {
                    Name::from_ascii(format!("{host}."))
                        .ok()
                        .map(|n| RData::MX(MX::new(*pref, n)))
                })
                .collect(),
            Data::Names(n) => n
                .iter()
                .filter_map(|h| {
                    Name::from_ascii(format!("{h}."))
                        .ok()
                        .map(|n| RData::PTR(PTR(n)))
                })
                .collect(),
            _ => Vec::new(),
        };
        let rcode = if a.rcode == Rcode::NxDomain {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        };
        let records = rdatas
            .into_iter()
            .map(|rd| Record::from_rdata(owner.clone(), ttl, rd))
            .collect();
        (rcode, records, a.dnssec == DnssecStatus::Secure)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
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
        let (rcode, records, secure) = self.answer(&name, q.query_type()).await;
        metadata.response_code = rcode;
        metadata.authentic_data = secure;
        let resp = builder.build(
            metadata,
            records.iter(),
            None::<&Record>,
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
