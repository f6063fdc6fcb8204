//! A real authoritative DNS server for tests: hickory-server with in-memory zones on
//! 127.0.0.1, UDP and TCP, behind a thin request handler that logs every query (so tests assert
//! exact upstream query counts), can drop queries (an upstream that stopped answering), answer
//! SERVFAIL or REFUSED for a name, append out-of-chain records to the answer section of a
//! name's responses (a poisoning upstream), and lets a test replace a zone while serving.
//! CNAMEs are ordinary zone records (`Zone::cname`), each with its own TTL: the in-memory
//! zone answers a question at a CNAME with the chain (CNAME, then the target's records) in
//! one response when the target is in the same zone.
// Shared by several test crates; each uses a subset.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::dnssec::NxProofKind;
use hickory_server::net::NetError;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{CNAME, NS, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponse, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use tokio::sync::RwLock;

/// Builds one in-memory zone.
pub struct Zone {
    origin: Name,
    handler: InMemoryZoneHandler<TokioRuntimeProvider>,
    serial: u32,
}

impl Zone {
    /// A zone with an SOA (negative TTL `neg_ttl`, SOA record TTL 3600) and an apex NS.
    pub fn new(origin: &str, neg_ttl: u32) -> Zone {
        Self::with_nx_proof(origin, neg_ttl, None)
    }

    /// A zone that can be signed: denial of existence by NSEC.
    pub fn signable(origin: &str, neg_ttl: u32) -> Zone {
        Self::with_nx_proof(origin, neg_ttl, Some(NxProofKind::Nsec))
    }

    fn with_nx_proof(origin: &str, neg_ttl: u32, nx: Option<NxProofKind>) -> Zone {
        let origin = Name::from_str(origin).unwrap();
        let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            nx,
        );
        let ns = Name::from_str("ns.invalid.").unwrap();
        let soa = SOA::new(
            ns.clone(),
            Name::from_str("hostmaster.invalid.").unwrap(),
            1,
            3600,
            600,
            86400,
            neg_ttl,
        );
        handler.upsert_mut(Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)), 1);
        handler.upsert_mut(
            Record::from_rdata(origin.clone(), 3600, RData::NS(NS(ns))),
            1,
        );
        Zone {
            origin,
            handler,
            serial: 1,
        }
    }

    fn name(&self, name: &str) -> Name {
        if name.ends_with('.') {
            Name::from_str(name).unwrap()
        } else if name == "@" {
            self.origin.clone()
        } else {
            Name::from_str(&format!("{name}.{}", self.origin)).unwrap()
        }
    }

    /// Adds a TXT record made of `strings` (a name relative to the origin, `@`, or absolute).
    pub fn txt(mut self, name: &str, ttl: u32, strings: &[&str]) -> Zone {
        let n = self.name(name);
        let rdata = RData::TXT(TXT::new(strings.iter().map(|s| s.to_string()).collect()));
        self.serial += 1;
        self.handler
            .upsert_mut(Record::from_rdata(n, ttl, rdata), self.serial);
        self
    }

    /// Adds a TXT record holding `text` (ASCII) split into character-strings of 255 bytes at
    /// most, as a long record is published.
    pub fn long_txt(self, name: &str, ttl: u32, text: &str) -> Zone {
        let strings: Vec<&str> = text
            .as_bytes()
            .chunks(255)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        self.txt(name, ttl, &strings)
    }

    /// Adds `n` TXT records `n0`, `n1`, … (TTL 3600), the `i`-th holding `text(i)`.
    pub fn numbered(mut self, n: usize, text: impl Fn(usize) -> String) -> Zone {
        for i in 0..n {
            self = self.txt(&format!("n{i}"), 3600, &[&text(i)]);
        }
        self
    }

    /// Adds a CNAME at `name` pointing at `target` (both relative to the origin, `@`, or
    /// absolute), with its own TTL.
    pub fn cname(mut self, name: &str, ttl: u32, target: &str) -> Zone {
        let n = self.name(name);
        let t = self.name(target);
        self.serial += 1;
        self.handler.upsert_mut(
            Record::from_rdata(n, ttl, RData::CNAME(CNAME(t))),
            self.serial,
        );
        self
    }

    /// Adds any record.
    pub fn record(mut self, name: &str, ttl: u32, rdata: RData) -> Zone {
        let n = self.name(name);
        self.serial += 1;
        self.handler
            .upsert_mut(Record::from_rdata(n, ttl, rdata), self.serial);
        self
    }

    /// Adds any record at an already-built owner name (labels may hold any octets).
    pub fn record_at(mut self, owner: Name, ttl: u32, rdata: RData) -> Zone {
        self.serial += 1;
        self.handler
            .upsert_mut(Record::from_rdata(owner, ttl, rdata), self.serial);
        self
    }

    /// The origin.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The built zone handler (for tests that sign it first).
    pub fn into_handler(self) -> InMemoryZoneHandler<TokioRuntimeProvider> {
        self.handler
    }
}

/// Requests as the server saw them.
#[derive(Clone, Default)]
pub struct QueryLog(Arc<Mutex<Vec<(String, RecordType)>>>);

impl QueryLog {
    /// All (name, type) pairs, names lower-case without the final dot.
    pub fn all(&self) -> Vec<(String, RecordType)> {
        self.0.lock().unwrap().clone()
    }
    /// How many queries there were in all.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    /// How many queries for exactly `name`.
    pub fn count(&self, name: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .count()
    }
    /// How many queries whose name satisfies `f`.
    pub fn count_where(&self, f: impl Fn(&str) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|(n, _)| f(n)).count()
    }
    /// Forgets what was logged.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// Names that never answer, each with the record types it still answers.
type Silenced = Arc<Mutex<Vec<(String, Vec<RecordType>)>>>;

/// Names answered with an error response code instead of their data.
type Failing = Arc<Mutex<Vec<(String, ResponseCode)>>>;

/// Records appended to the answer section of every response for a name.
type Injected = Arc<Mutex<Vec<(String, Record)>>>;

/// Names answered only after a delay (a slow upstream path).
type Delayed = Arc<Mutex<Vec<(String, Duration)>>>;

struct Handler {
    catalog: Arc<RwLock<Catalog>>,
    log: QueryLog,
    down: Arc<AtomicBool>,
    silent: Silenced,
    failing: Failing,
    injected: Injected,
    delayed: Delayed,
}

/// The value a test set for `name` in one of the handler's per-name lists, if any.
fn setting_for<T: Copy>(list: &Mutex<Vec<(String, T)>>, name: &str) -> Option<T> {
    list.lock()
        .unwrap()
        .iter()
        .find(|(s, _)| s == name)
        .map(|(_, v)| *v)
}

/// A response handler that keeps the encoded response instead of sending it, so the request
/// handler can change it (append records) before it goes out.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap() = Some(bytes);
        Ok(info)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let query = request.queries.queries().first().map(|q| {
            let name = q
                .name()
                .to_string()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            (name, q.query_type())
        });
        if let Some((name, rtype)) = &query {
            self.log.0.lock().unwrap().push((name.clone(), *rtype));
        }
        let delay = query
            .as_ref()
            .and_then(|(n, _)| setting_for(&self.delayed, n));
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let drop_it = self.down.load(Ordering::SeqCst)
            || query.as_ref().is_some_and(|(n, t)| {
                self.silent
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|(s, answered)| s == n && !answered.contains(t))
            });
        if drop_it {
            // No answer at all: the client times out, as with a dead or filtered upstream.
            let metadata = Metadata::response_from_request(&request.metadata);
            return ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            });
        }
        let failing = query
            .as_ref()
            .and_then(|(n, _)| setting_for(&self.failing, n));
        let mut response_handle = response_handle;
        if let Some(code) = failing {
            let response = MessageResponseBuilder::new(&request.queries, request.edns.as_ref())
                .error_msg(&request.metadata, code);
            return send_or_servfail(&mut response_handle, response, &request.metadata).await;
        }
        let extra: Vec<Record> = query.as_ref().map_or_else(Vec::new, |(n, _)| {
            self.injected
                .lock()
                .unwrap()
                .iter()
                .filter(|(s, _)| s == n)
                .map(|(_, r)| r.clone())
                .collect()
        });
        let catalog = self.catalog.read().await;
        if extra.is_empty() {
            return catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
        }
        // Answer as the zone would, then append the out-of-chain records to the answer
        // section, as a poisoning (or careless) upstream would.
        let capture = Capture::default();
        catalog
            .handle_request::<Capture, T>(request, capture.clone())
            .await;
        drop(catalog);
        let bytes = capture.0.lock().unwrap().take();
        let Some(message) = bytes.and_then(|b| Message::from_vec(&b).ok()) else {
            let response = MessageResponseBuilder::new(&request.queries, request.edns.as_ref())
                .error_msg(&request.metadata, ResponseCode::ServFail);
            return send_or_servfail(&mut response_handle, response, &request.metadata).await;
        };
        let answers: Vec<Record> = message.answers.iter().cloned().chain(extra).collect();
        let response = MessageResponseBuilder::new(&request.queries, request.edns.as_ref()).build(
            message.metadata,
            answers.iter(),
            message.authorities.iter(),
            std::iter::empty(),
            message.additionals.iter(),
        );
        send_or_servfail(&mut response_handle, response, &request.metadata).await
    }
}

/// The records of one section of a response (`MessageResponse`'s four iterators).
trait Section<'a>: Iterator<Item = &'a Record> + Send + 'a {}
impl<'a, I: Iterator<Item = &'a Record> + Send + 'a> Section<'a> for I {}

async fn send_or_servfail<'a, R: ResponseHandler>(
    handle: &mut R,
    response: MessageResponse<
        '_,
        'a,
        impl Section<'a>,
        impl Section<'a>,
        impl Section<'a>,
        impl Section<'a>,
    >,
    request: &Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(_) => {
            let mut metadata = Metadata::response_from_request(request);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

/// A running server.
pub struct TestDns {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    /// What it was asked.
    pub log: QueryLog,
    catalog: Arc<RwLock<Catalog>>,
    down: Arc<AtomicBool>,
    silent: Silenced,
    failing: Failing,
    injected: Injected,
    delayed: Delayed,
}

impl TestDns {
    /// A server for one zone, `origin`, holding one TXT record `text` at `name` (relative to
    /// the origin, or `@`) with a TTL of `ttl`.
    pub async fn one_txt(origin: &str, name: &str, ttl: u32, text: &str) -> TestDns {
        TestDns::start(vec![Zone::new(origin, 300).txt(name, ttl, &[text])]).await
    }

    /// Serves `zones` on 127.0.0.1 (an ephemeral port, UDP and TCP).
    pub async fn start(zones: Vec<Zone>) -> TestDns {
        Self::start_handlers(
            zones
                .into_iter()
                .map(|z| {
                    (
                        z.origin.clone(),
                        Arc::new(z.handler) as Arc<dyn ZoneHandler>,
                    )
                })
                .collect(),
        )
        .await
    }

    /// Serves prepared zone handlers (e.g. signed ones).
    pub async fn start_handlers(zones: Vec<(Name, Arc<dyn ZoneHandler>)>) -> TestDns {
        let mut catalog = Catalog::new();
        for (origin, handler) in zones {
            catalog.upsert(LowerName::new(&origin), vec![handler]);
        }
        Self::serve(catalog).await
    }

    /// Serves zone handlers where a name may have several, chained in the order given (the
    /// first that does not skip a question answers it).
    pub async fn start_chains(zones: Vec<(Name, Arc<dyn ZoneHandler>)>) -> TestDns {
        let mut chains: Vec<(LowerName, Vec<Arc<dyn ZoneHandler>>)> = Vec::new();
        for (origin, handler) in zones {
            let origin = LowerName::new(&origin);
            match chains.iter_mut().find(|(o, _)| *o == origin) {
                Some((_, chain)) => chain.push(handler),
                None => chains.push((origin, vec![handler])),
            }
        }
        let mut catalog = Catalog::new();
        for (origin, chain) in chains {
            catalog.upsert(origin, chain);
        }
        Self::serve(catalog).await
    }

    async fn serve(catalog: Catalog) -> TestDns {
        let catalog = Arc::new(RwLock::new(catalog));
        let log = QueryLog::default();
        let down = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(Mutex::new(Vec::new()));
        let injected = Arc::new(Mutex::new(Vec::new()));
        let delayed = Arc::new(Mutex::new(Vec::new()));
        // UDP on an ephemeral port, then TCP on the same port: another process may hold that
        // TCP port, so try a few ephemeral ports (bounded) before giving up.
        let (udp, addr, tcp) = {
            let mut tries = 0;
            loop {
                let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let addr = udp.local_addr().unwrap();
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(tcp) => break (udp, addr, tcp),
                    Err(_) if tries < 20 => tries += 1,
                    Err(e) => panic!("no UDP+TCP port pair on 127.0.0.1 after 20 tries: {e}"),
                }
            }
        };
        let handler = Handler {
            catalog: catalog.clone(),
            log: log.clone(),
            down: down.clone(),
            silent: silent.clone(),
            failing: failing.clone(),
            injected: injected.clone(),
            delayed: delayed.clone(),
        };
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        TestDns {
            addr,
            log,
            catalog,
            down,
            silent,
            failing,
            injected,
            delayed,
        }
    }

    /// Replaces (or adds) a zone while serving.
    pub async fn replace_zone(&self, zone: Zone) {
        let origin = LowerName::new(&zone.origin);
        self.catalog
            .write()
            .await
            .upsert(origin, vec![Arc::new(zone.handler)]);
    }

    /// Stops (true) or resumes (false) answering anything.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Never answers queries for `name` (lower-case, no final dot).
    pub fn silence(&self, name: &str) {
        self.silence_except(name, &[]);
    }

    /// Never answers queries for `name` except those of the `answered` types.
    pub fn silence_except(&self, name: &str, answered: &[RecordType]) {
        self.silent
            .lock()
            .unwrap()
            .push((name.to_owned(), answered.to_vec()));
    }

    /// Answers SERVFAIL to every query for `name` (lower-case, no final dot).
    pub fn servfail(&self, name: &str) {
        self.fail_with(name, ResponseCode::ServFail);
    }

    /// Answers REFUSED to every query for `name` (lower-case, no final dot).
    pub fn refuse(&self, name: &str) {
        self.fail_with(name, ResponseCode::Refused);
    }

    /// Answers `code` (no records) to every query for `name` (lower-case, no final dot).
    pub fn fail_with(&self, name: &str, code: ResponseCode) {
        self.failing.lock().unwrap().push((name.to_owned(), code));
    }

    /// Answers `name` from its zone again (undoes `servfail`, `refuse`, `fail_with`,
    /// `silence`).
    pub fn heal(&self, name: &str) {
        self.failing.lock().unwrap().retain(|(n, _)| n != name);
        self.silent.lock().unwrap().retain(|(n, _)| n != name);
    }

    /// Appends `record` (any owner name, typically one outside the question's CNAME chain)
    /// to the answer section of every response to a query for `qname` (lower-case, no final
    /// dot), after what the zone answers.
    pub fn inject_extra(&self, qname: &str, record: Record) {
        self.injected
            .lock()
            .unwrap()
            .push((qname.to_owned(), record));
    }

    /// Answers every query for `name` (lower-case, no final dot) only after `delay`, each
    /// exchange on its own (a slow but working upstream path).
    pub fn delay(&self, name: &str, delay: Duration) {
        self.delayed.lock().unwrap().push((name.to_owned(), delay));
    }

    /// A TXT record at an absolute `owner` (a helper for `inject_extra`).
    pub fn txt_record(owner: &str, ttl: u32, strings: &[&str]) -> Record {
        let mut n = Name::from_str(owner).unwrap();
        n.set_fqdn(true);
        Record::from_rdata(
            n,
            ttl,
            RData::TXT(TXT::new(strings.iter().map(|s| s.to_string()).collect())),
        )
    }
}
