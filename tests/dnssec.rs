//! DNSSEC status of TLSA answers (RFC 7672 §2.2: DANE needs a secure answer): a zone signed
//! in-process by hickory-server and validated against a trust anchor for that zone gives
//! `secure`; the same zone with a record changed after signing is the error `dnssec_bogus`,
//! never `secure` and never an OK-shaped "no records", cached as briefly as other failures.

mod common;
mod dnsserver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dnsserver::{TestDns, Zone};
use hickory_server::proto::dnssec::crypto::Ed25519SigningKey;
use hickory_server::proto::dnssec::rdata::DNSKEY;
use hickory_server::proto::dnssec::{DnssecSigner, PublicKeyBuf, SigningKey, TrustAnchors};
use hickory_server::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector, TLSA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::zone_handler::ZoneHandler;
use mailpolicyd::proto::WireError;
use mailpolicyd::resolve::{Data, DnssecStatus, ResolveError, Resolver};

const DIGEST: [u8; 32] = [0xab; 32];

fn tlsa(digest: [u8; 32]) -> RData {
    RData::TLSA(TLSA::new(
        CertUsage::DaneEe,
        Selector::Spki,
        Matching::Sha256,
        digest.to_vec(),
    ))
}

/// Serves signed.test., signed with a fresh Ed25519 key; `tamper` changes the TLSA record
/// after signing (its old RRSIG stays, so it no longer verifies).
async fn signed_zone(tamper: bool) -> (TestDns, PublicKeyBuf) {
    let zone = Zone::signable("signed.test.", 300).record("_25._tcp.mx", 3600, tlsa(DIGEST));
    let origin = zone.origin().clone();
    let mut handler = zone.into_handler();
    let key = Ed25519SigningKey::from_pkcs8(&Ed25519SigningKey::generate_pkcs8().unwrap()).unwrap();
    let public = key.to_public_key().unwrap();
    let signer = DnssecSigner::new(
        DNSKEY::from_key(&public),
        Box::new(key),
        origin.clone(),
        Duration::from_secs(7 * 86_400),
    );
    handler.add_zone_signing_key_mut(signer).unwrap();
    handler.secure_zone_mut().unwrap();
    if tamper {
        let name = Name::from_ascii("_25._tcp.mx.signed.test.").unwrap();
        let set = handler
            .records_get_mut()
            .get_mut(&RrKey::new(LowerName::new(&name), RecordType::TLSA))
            .unwrap();
        Arc::make_mut(set).set_records(vec![Record::from_rdata(name, 3600, tlsa([0xcd; 32]))]);
    }
    let dns =
        TestDns::start_handlers(vec![(origin, Arc::new(handler) as Arc<dyn ZoneHandler>)]).await;
    (dns, public)
}

fn resolver(dns: &TestDns, anchor: &PublicKeyBuf) -> Resolver {
    let mut ta = TrustAnchors::empty();
    ta.insert_with_name(
        anchor,
        LowerName::new(&Name::from_ascii("signed.test.").unwrap()),
    );
    let mut cfg = common::resolver_config(dns.addr, Duration::from_secs(2));
    cfg.upstream.trust_anchors = Some(Arc::new(ta));
    Resolver::new(cfg).unwrap()
}

#[tokio::test]
async fn signed_tlsa_is_secure() {
    let (dns, key) = signed_zone(false).await;
    let r = resolver(&dns, &key);
    let l = r.tlsa("mx.signed.test", 25, Instant::now()).await.unwrap();
    assert_eq!(l.answer.dnssec, DnssecStatus::Secure);
    match &l.answer.data {
        Data::Tlsa(t) => {
            assert_eq!(t.len(), 1);
            assert!(t[0].policy.dane_smtp_usable());
            assert_eq!(t[0].policy.data, DIGEST);
        }
        other => panic!("{other:?}"),
    }
    // A secure "no TLSA here": NODATA at a name whose parent exists.
    let none = r.tlsa("signed.test", 25, Instant::now()).await.unwrap();
    assert!(matches!(none.answer.data, Data::None));
    assert_ne!(none.answer.dnssec, DnssecStatus::Bogus);
}

#[tokio::test]
async fn bogus_tlsa_is_an_error_never_no_records() {
    let (dns, key) = signed_zone(true).await;
    let r = resolver(&dns, &key);
    let t0 = Instant::now();
    let e = r
        .tlsa("mx.signed.test", 25, t0)
        .await
        .expect_err("a bogus answer is an error, not an OK-shaped answer with no data");
    assert_eq!(e, ResolveError::DnssecBogus);
    assert_eq!(e.label(), "dnssec_bogus");
    assert_eq!(WireError::from(&e).code, "dnssec_bogus");
    assert!(e.is_temporary());
    // Cached as briefly as other failures: no new query inside the failure TTL (5 s), one after.
    let asked = dns.log.count("_25._tcp.mx.signed.test");
    assert!(asked >= 1);
    for _ in 0..5 {
        assert_eq!(
            r.tlsa("mx.signed.test", 25, t0 + Duration::from_secs(4))
                .await
                .unwrap_err(),
            ResolveError::DnssecBogus
        );
    }
    assert_eq!(dns.log.count("_25._tcp.mx.signed.test"), asked);
    let s = r.stats().await;
    assert_eq!(s.failure_cached, 5);
    assert_eq!(s.upstream.iter().find(|(o, _)| o == "bogus").unwrap().1, 1);
    assert_eq!(
        r.tlsa("mx.signed.test", 25, t0 + Duration::from_secs(6))
            .await
            .unwrap_err(),
        ResolveError::DnssecBogus
    );
    assert!(dns.log.count("_25._tcp.mx.signed.test") > asked);
}

#[tokio::test]
async fn wrong_trust_anchor_is_bogus() {
    let (dns, _) = signed_zone(false).await;
    let other =
        Ed25519SigningKey::from_pkcs8(&Ed25519SigningKey::generate_pkcs8().unwrap()).unwrap();
    let r = resolver(&dns, &other.to_public_key().unwrap());
    let e = r
        .tlsa("mx.signed.test", 25, Instant::now())
        .await
        .unwrap_err();
    assert_eq!(e, ResolveError::DnssecBogus);
}

/// The whole path for a bogus TLSA answer: the socket answers the error `dnssec_bogus` (never an
/// OK-shaped answer with no data), the CLI exits non-zero, `/metrics` counts the remembered
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_tlsa_over_the_socket_is_dnssec_bogus_and_the_cli_exits_non_zero() {
    use mailpolicyd::client::{Client, ClientError};
    use mailpolicyd::serve::{self, Service, SocketConfig};
    let (dns, key) = signed_zone(true).await;
    let service = Service::new(resolver(&dns, &key));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mp.sock");
    let socket_cfg = SocketConfig::default();
    let listener = serve::socket::bind(&socket, socket_cfg.mode).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(serve::run(
        listener,
        service.clone(),
        socket_cfg,
        shutdown.clone(),
    ));
    let c = Client::connect(&socket).await.unwrap();
    match c.tlsa("mx.signed.test", 25).await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, "dnssec_bogus", "{e}"),
        other => panic!("a bogus answer must be an error: {other:?}"),
    }
    let sock = socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
            .args(["query", "--socket", sock.to_str().unwrap(), "--json"])
            .args(["tlsa", "mx.signed.test", "25"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the CLI exits non-zero: {stdout}"
    );
    assert!(stdout.contains("dnssec_bogus"), "{stdout}");
    let metrics = serve::admin::render(&service);
    assert!(
        metrics.contains("mailpolicyd_failure_cached_total 1"),
        "the CLI's question was answered from the failure cache:\n{metrics}"
    );
    assert!(
        metrics.contains("op=\"tlsa\",result=\"dnssec_bogus\"} 2"),
        "both questions counted under their error code:\n{metrics}"
    );
    for name in [
        "mailpolicyd_dnssec_upstream_queries_total",
        "mailpolicyd_dnssec_key_cache_hits_total",
        "mailpolicyd_dnssec_budget_exhausted_total 0",
    ] {
        assert!(metrics.contains(name), "{name}:\n{metrics}");
    }
    shutdown.cancel();
    let _ = task.await;
}

// ---------------------------------------------------------------------------------------------
// A signed hierarchy in one process: `test.` signed (its key the trust anchor), and under it
// `signed.test.` (signed, DS in test.), `unsigned.test.` (delegated without DS: provably
// insecure), `broken.test.` (signed, DS in test., its TLSA changed after signing). Every zone
// is served by one hickory-server; `DS <child>` is answered by the parent (as a real
// authoritative server for both would), through `DsFromParent`.
// ---------------------------------------------------------------------------------------------

use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::dnssec::rdata::{DNSSECRData, DS};
use hickory_server::proto::dnssec::{DigestType, PublicKey};
use hickory_server::proto::rr::rdata::NS;
use hickory_server::server::{Request, RequestInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, LookupControlFlow, LookupOptions, Nsec3QueryInfo, ZoneType,
};
use mailpolicyd::resolve::DnssecMode;

type Mem = InMemoryZoneHandler<TokioRuntimeProvider>;

/// Registered first under a child's name: answers only `DS <child apex>`, from the parent zone
/// (RFC 4035 §3.1.4.1: the DS RRset lives in the parent); everything else is skipped to the
/// child's own handler.
struct DsFromParent {
    child: LowerName,
    parent: Arc<Mem>,
}

#[async_trait::async_trait]
impl ZoneHandler for DsFromParent {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }
    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }
    fn origin(&self) -> &LowerName {
        self.parent.origin()
    }
    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        info: Option<&RequestInfo<'_>>,
        opts: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.parent.lookup(name, rtype, info, opts).await
    }
    async fn search(
        &self,
        request: &Request,
        opts: LookupOptions,
    ) -> (
        LookupControlFlow<AuthLookup>,
        Option<hickory_server::proto::rr::TSigResponseContext>,
    ) {
        let q = request.queries.queries().first();
        match q {
            Some(q) if q.query_type() == RecordType::DS && *q.name() == self.child => {
                self.parent.search(request, opts).await
            }
            _ => (LookupControlFlow::Skip, None),
        }
    }
    async fn nsec_records(
        &self,
        name: &LowerName,
        opts: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.parent.nsec_records(name, opts).await
    }
    async fn nsec3_records(
        &self,
        info: Nsec3QueryInfo<'_>,
        opts: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        self.parent.nsec3_records(info, opts).await
    }
    fn nx_proof_kind(&self) -> Option<&NxProofKind> {
        self.parent.nx_proof_kind()
    }
}

fn new_key() -> (Ed25519SigningKey, PublicKeyBuf) {
    let key = Ed25519SigningKey::from_pkcs8(&Ed25519SigningKey::generate_pkcs8().unwrap()).unwrap();
    let public = key.to_public_key().unwrap();
    (key, public)
}

fn sign(handler: &mut Mem, origin: &Name, key: Ed25519SigningKey, public: &PublicKeyBuf) {
    let signer = DnssecSigner::new(
        DNSKEY::from_key(public),
        Box::new(key),
        origin.clone(),
        Duration::from_secs(7 * 86_400),
    );
    handler.add_zone_signing_key_mut(signer).unwrap();
    handler.secure_zone_mut().unwrap();
}

fn ds_of(owner: &Name, public: &PublicKeyBuf) -> RData {
    let dnskey = DNSKEY::from_key(public);
    let digest = dnskey.to_digest(owner, DigestType::SHA256).unwrap();
    RData::DNSSEC(DNSSECRData::DS(DS::new(
        dnskey.calculate_key_tag().unwrap(),
        public.algorithm(),
        DigestType::SHA256,
        digest.as_ref().to_vec(),
    )))
}

const DMARC: &str = "v=DMARC1; p=reject";
const DKIM: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

/// DKIM key answers carry the DNSSEC status of the mode (OpenDKIM reports "key not secure" /
/// "unprotected" from it): `signed` for signed.test and broken.test (whose DKIM key is signed
/// correctly; only its TLSA was changed), `unsigned` for unsigned.test.
async fn dkim_statuses(r: &Resolver, signed: DnssecStatus, unsigned: DnssecStatus) {
    let now = Instant::now();
    let s = r.dkim_key("sel", "signed.test", now).await.unwrap();
    assert_eq!(s.answer.dnssec, signed);
    let u = r.dkim_key("sel", "unsigned.test", now).await.unwrap();
    assert_eq!(u.answer.dnssec, unsigned);
    let b = r.dkim_key("sel", "broken.test", now).await.unwrap();
    assert_eq!(b.answer.dnssec, signed);
}

/// The hierarchy; returns the server and the trust anchor (test.'s key).
async fn hierarchy() -> (TestDns, PublicKeyBuf) {
    let (tk, tpub) = new_key();
    let (sk, spub) = new_key();
    let (bk, bpub) = new_key();
    let ns = || RData::NS(NS(Name::from_ascii("ns.invalid.").unwrap()));
    let signed = Name::from_ascii("signed.test.").unwrap();
    let broken = Name::from_ascii("broken.test.").unwrap();
    let parent = Zone::signable("test.", 300)
        .record("signed", 3600, ns())
        .record("signed", 3600, ds_of(&signed, &spub))
        .record("broken", 3600, ns())
        .record("broken", 3600, ds_of(&broken, &bpub))
        .record("unsigned", 3600, ns());
    let test = parent.origin().clone();
    let mut parent = parent.into_handler();
    sign(&mut parent, &test, tk, &tpub);
    let parent = Arc::new(parent);

    let child = |origin: &str| {
        Zone::signable(origin, 300)
            .record("_25._tcp.mx", 3600, tlsa(DIGEST))
            .txt("_dmarc", 3600, &[DMARC])
            .txt("@", 3600, &["v=spf1 -all"])
            .txt("sel._domainkey", 3600, &[DKIM])
    };
    let mut s = child("signed.test.").into_handler();
    sign(&mut s, &signed, sk, &spub);
    let mut b = child("broken.test.").into_handler();
    sign(&mut b, &broken, bk, &bpub);
    let name = Name::from_ascii("_25._tcp.mx.broken.test.").unwrap();
    Arc::make_mut(
        b.records_get_mut()
            .get_mut(&RrKey::new(LowerName::new(&name), RecordType::TLSA))
            .unwrap(),
    )
    .set_records(vec![Record::from_rdata(name, 3600, tlsa([0xcd; 32]))]);
    let u = Zone::new("unsigned.test.", 300)
        .record("_25._tcp.mx", 3600, tlsa(DIGEST))
        .txt("_dmarc", 3600, &[DMARC])
        .txt("@", 3600, &["v=spf1 -all"])
        .txt("sel._domainkey", 3600, &[DKIM])
        .into_handler();

    let mut zones: Vec<(Name, Arc<dyn ZoneHandler>)> = vec![(test, parent.clone())];
    for (origin, h) in [
        ("signed.test.", Arc::new(s) as Arc<dyn ZoneHandler>),
        ("broken.test.", Arc::new(b)),
        ("unsigned.test.", Arc::new(u)),
    ] {
        let origin = Name::from_ascii(origin).unwrap();
        let ds = Arc::new(DsFromParent {
            child: LowerName::new(&origin),
            parent: parent.clone(),
        }) as Arc<dyn ZoneHandler>;
        zones.push((origin.clone(), ds));
        zones.push((origin, h));
    }
    (TestDns::start_chains(zones).await, tpub)
}

fn hierarchy_resolver(dns: &TestDns, anchor: &PublicKeyBuf, mode: DnssecMode) -> Resolver {
    let mut ta = TrustAnchors::empty();
    ta.insert_with_name(anchor, LowerName::new(&Name::from_ascii("test.").unwrap()));
    let mut cfg = common::resolver_config(dns.addr, Duration::from_secs(2));
    common::no_rate_limit(&mut cfg);
    cfg.upstream.trust_anchors = Some(Arc::new(ta));
    cfg.upstream.dnssec = mode;
    Resolver::new(cfg).unwrap()
}

fn tlsa_count(d: &Data) -> usize {
    match d {
        Data::Tlsa(t) => t.len(),
        Data::None => 0,
        other => panic!("{other:?}"),
    }
}

/// The most upstream queries one validation may cost (cold cache, three-level chain).
const MAX_VALIDATION_QUERIES: usize = 30;

#[tokio::test]
async fn validate_mode_in_a_signed_hierarchy() {
    let (dns, anchor) = hierarchy().await;
    let r = hierarchy_resolver(&dns, &anchor, DnssecMode::Validate);
    let now = Instant::now();

    // The unsigned zone first, on a cold cache: insecure, with its records, bounded.
    let u = r.tlsa("mx.unsigned.test", 25, now).await.unwrap();
    let cold = dns.log.len();
    eprintln!("cold insecure TLSA: {cold} queries: {:?}", dns.log.all());
    assert_eq!(u.answer.dnssec, DnssecStatus::Insecure);
    assert_eq!(tlsa_count(&u.answer.data), 1);
    assert!(
        cold <= MAX_VALIDATION_QUERIES,
        "{cold} upstream queries for one TLSA question"
    );
    let again = r.tlsa("mx.unsigned.test", 25, now).await.unwrap();
    assert_eq!(again.answer.dnssec, DnssecStatus::Insecure);
    assert_eq!(dns.log.len(), cold, "a repeat costs no query");
    let d = r.dnssec_stats();
    assert_eq!(d.upstream_queries, cold as u64, "{d:?}");
    assert_eq!(d.budget_exhausted, 0);

    let s = r.tlsa("mx.signed.test", 25, now).await.unwrap();
    assert!(
        r.dnssec_stats().key_cache_hits > 0,
        "test.'s DNSKEY answered from memory: {:?}",
        r.dnssec_stats()
    );
    assert_eq!(s.answer.dnssec, DnssecStatus::Secure);
    assert_eq!(tlsa_count(&s.answer.data), 1);

    // Authenticated denial: no TLSA at a name whose parent exists (`_26._tcp.mx`, under the
    // empty non-terminal `_tcp.mx`), secure. (hickory-server leaves out the NSEC covering the
    // wildcard in a deeper NXDOMAIN, which then is rightly bogus: not asked here.)
    let before = dns.log.len();
    let none = r.tlsa("mx.signed.test", 26, now).await;
    eprintln!("denial: {:?}", &dns.log.all()[before..]);
    let none = none.unwrap();
    assert_eq!(tlsa_count(&none.answer.data), 0);
    assert_eq!(none.answer.dnssec, DnssecStatus::Secure);

    let e = r.tlsa("mx.broken.test", 25, now).await.unwrap_err();
    assert_eq!(e, ResolveError::DnssecBogus);

    // DKIM keys are not validated in this mode (their status comes from the upstream's AD bit
    // in `upstream_ad`).
    dkim_statuses(&r, DnssecStatus::Indeterminate, DnssecStatus::Indeterminate).await;

    // DMARC and SPF in all three zones still work.
    for zone in ["signed.test", "unsigned.test", "broken.test"] {
        let d = r.dmarc(zone, now).await;
        assert!(d.is_ok(), "{zone}: {d:?}");
        let spf = r.spf(zone, now).await;
        assert!(spf.is_ok(), "{zone}: {spf:?}");
    }
}

#[tokio::test]
async fn off_mode_is_indeterminate_and_asks_no_dnssec_records() {
    let (dns, anchor) = hierarchy().await;
    let r = hierarchy_resolver(&dns, &anchor, DnssecMode::Off);
    let now = Instant::now();
    for zone in ["signed", "unsigned", "broken"] {
        let l = r
            .tlsa(&format!("mx.{zone}.test"), 25, now)
            .await
            .unwrap_or_else(|e| panic!("{zone}: {e:?}"));
        assert_eq!(l.answer.dnssec, DnssecStatus::Indeterminate, "{zone}");
        assert_eq!(tlsa_count(&l.answer.data), 1, "{zone}");
    }
    let none = r.tlsa("signed.test", 25, now).await.unwrap();
    assert_eq!(none.answer.dnssec, DnssecStatus::Indeterminate);
    dkim_statuses(&r, DnssecStatus::Indeterminate, DnssecStatus::Indeterminate).await;
    let asked = dns.log.all();
    assert!(
        asked
            .iter()
            .all(|(_, t)| !matches!(t, RecordType::DNSKEY | RecordType::DS | RecordType::NS)),
        "no validating queries: {asked:?}"
    );
    assert_eq!(asked.len(), 7, "{asked:?}");
}

/// One TLSA question to the DNS front-end over UDP, with DO and AD as given.
async fn ask_front(addr: std::net::SocketAddr, qname: &str, dnssec_ok: bool, ad: bool) -> Message {
    use hickory_server::proto::op::{Edns, MessageType, OpCode, Query};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut m = Message::new(0x4d51, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.authentic_data = ad;
    m.add_query(Query::query(
        Name::from_ascii(qname).unwrap(),
        RecordType::TLSA,
    ));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.set_dnssec_ok(dnssec_ok);
    m.set_edns(e);
    sock.send_to(&m.to_vec().unwrap(), addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

use hickory_server::proto::op::{Message, ResponseCode};

/// The DNS front-end: AD on a secure answer only for a client that asked with DO or AD (RFC
/// 6840 §5.7), never on an insecure one; SERVFAIL for a bogus one; the RRSIG only with DO. Asked twice each, so the
/// second answer comes from the front-end's wire cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_end_sets_ad_only_when_asked_and_only_for_secure() {
    use mailpolicyd::serve::Service;
    let (dns, anchor) = hierarchy().await;
    let service = Service::new(hierarchy_resolver(&dns, &anchor, DnssecMode::Validate));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let addr = common::serve_dns_front_end_forwarding(&service, &shutdown, true).await;
    for _ in 0..2 {
        for (dnssec_ok, ad, want) in [
            (true, false, true),
            (false, true, true),
            (false, false, false),
        ] {
            let r = ask_front(addr, "_25._tcp.mx.signed.test.", dnssec_ok, ad).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            // The TLSA record, and its RRSIG for a client that set DO (RFC 4035 §3.2.1).
            let types: Vec<RecordType> = r.answers.iter().map(|a| a.record_type()).collect();
            let want_types: &[RecordType] = if dnssec_ok {
                &[RecordType::TLSA, RecordType::RRSIG]
            } else {
                &[RecordType::TLSA]
            };
            assert_eq!(types, want_types, "DO={dnssec_ok}: {r:?}");
            assert_eq!(
                r.metadata.authentic_data, want,
                "secure answer, DO={dnssec_ok} AD={ad}"
            );
            let u = ask_front(addr, "_25._tcp.mx.unsigned.test.", dnssec_ok, ad).await;
            assert_eq!(u.answers.len(), 1, "{u:?}");
            assert!(!u.metadata.authentic_data, "insecure: never AD");
        }
    }
    let b = ask_front(addr, "_25._tcp.mx.broken.test.", true, true).await;
    assert_eq!(b.metadata.response_code, ResponseCode::ServFail);
    shutdown.cancel();
}

/// A chain the validator cannot settle (the unsigned child answers `DS` itself, unsigned, so
/// no proof of insecurity can be had) costs at most the stated budget of upstream queries and
/// ends bogus; the failure is remembered, so a repeat inside the failure TTL costs none.
#[tokio::test]
async fn an_unsettled_chain_is_bounded() {
    assert_eq!(
        mailpolicyd::resolve::upstream::MAX_VALIDATION_QUERIES,
        MAX_VALIDATION_QUERIES
    );
    let (tk, tpub) = new_key();
    let parent = Zone::signable("test.", 300).record(
        "unsigned",
        3600,
        RData::NS(NS(Name::from_ascii("ns.invalid.").unwrap())),
    );
    let test = parent.origin().clone();
    let mut parent = parent.into_handler();
    sign(&mut parent, &test, tk, &tpub);
    let child = Zone::new("unsigned.test.", 300).record("_25._tcp.mx", 3600, tlsa(DIGEST));
    let dns = TestDns::start_handlers(vec![
        (test, Arc::new(parent) as Arc<dyn ZoneHandler>),
        (
            child.origin().clone(),
            Arc::new(child.into_handler()) as Arc<dyn ZoneHandler>,
        ),
    ])
    .await;
    let r = hierarchy_resolver(&dns, &tpub, DnssecMode::Validate);
    let now = Instant::now();
    let first = r.tlsa("mx.unsigned.test", 25, now).await;
    let cold = dns.log.len();
    eprintln!(
        "unsettled: {first:?} after {cold} queries: {:?}",
        dns.log.all()
    );
    assert!(cold <= MAX_VALIDATION_QUERIES, "{cold} queries");
    assert_ne!(
        first.as_ref().map(|l| l.answer.dnssec).ok(),
        Some(DnssecStatus::Secure)
    );
    let again = r.tlsa("mx.unsigned.test", 25, now).await;
    assert_eq!(first.is_ok(), again.is_ok());
    assert_eq!(dns.log.len(), cold, "a repeat costs no query");
}

/// `[dnssec]` settings: the defaults printed, a bad mode and an unreadable or unparsable trust
/// anchor file refuse to start (exit 64) naming the key (and the line).
#[test]
fn dnssec_settings_are_validated() {
    use std::process::Command;
    let default = common::cli(&["config", "--print-default"]);
    let text = String::from_utf8_lossy(&default.stdout);
    assert!(text.contains("[dnssec]"), "{text}");
    assert!(text.contains("mode = \"validate\""), "{text}");
    assert!(text.contains("trust_anchor = \"\""), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let bad_anchor = dir.path().join("anchor.key");
    std::fs::write(
        &bad_anchor,
        "; a DS anchor with a short digest\n\ntest. 3600 IN DS 12345 15 2 0123456789abcdef\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.key");
    let serve = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailpolicyd"));
        c.args(["serve", "--socket", "/nonexistent/x.sock", "--admin", ""]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    for (env, want) in [
        (
            vec![("MAILPOLICYD_DNSSEC_MODE", "strict")],
            vec!["dnssec.mode", "strict"],
        ),
        (
            vec![("MAILPOLICYD_DNSSEC_TRUST_ANCHOR", missing.to_str().unwrap())],
            vec!["dnssec.trust_anchor", "cannot be read"],
        ),
        (
            vec![(
                "MAILPOLICYD_DNSSEC_TRUST_ANCHOR",
                bad_anchor.to_str().unwrap(),
            )],
            vec!["dnssec.trust_anchor", "line 3", "32 bytes"],
        ),
    ] {
        let out = serve(&env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{env:?}: {err}");
        for w in want {
            assert!(err.contains(w), "{env:?}: missing {w:?} in {err}");
        }
    }
}

/// A trust anchor file of DNSKEY records (a zone's key, as `dnssec-keygen` writes it) is the
/// anchor validation starts from: the signed zone is secure with it, and the configuration
/// loads it through `[dnssec] trust_anchor`.
/// The configuration the daemon would load with `dnssec.trust_anchor = file` and `upstream`
/// (everything else default).
fn anchored_config(
    file: &std::path::Path,
    upstream: std::net::SocketAddr,
) -> mailpolicyd::config::Config {
    let env: std::collections::BTreeMap<String, String> = [
        ("XDG_RUNTIME_DIR", "/tmp/x"),
        ("MAILPOLICYD_DNSSEC_TRUST_ANCHOR", file.to_str().unwrap()),
        ("MAILPOLICYD_UPSTREAM", &upstream.to_string()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    mailpolicyd::config::load(None, &env, &mailpolicyd::config::Flags::default())
        .unwrap_or_else(|p| panic!("{p:?}"))
}

#[tokio::test]
async fn a_trust_anchor_file_is_the_anchor() {
    let (dns, anchor) = hierarchy().await;
    let dnskey = DNSKEY::from_key(&anchor);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test.key");
    std::fs::write(
        &file,
        format!("; test.'s key\ntest. 3600 IN DNSKEY {dnskey}\n"),
    )
    .unwrap();
    let cfg = anchored_config(&file, dns.addr);
    assert_eq!(cfg.daemon.resolver.upstream.dnssec, DnssecMode::Validate);
    assert!(cfg.daemon.resolver.upstream.trust_anchors.is_some());
    let r = Resolver::new(cfg.daemon.resolver).unwrap();
    let l = r.tlsa("mx.signed.test", 25, Instant::now()).await.unwrap();
    assert_eq!(l.answer.dnssec, DnssecStatus::Secure);
}

// ---------------------------------------------------------------------------------------------
// upstream_ad: the same hierarchy behind a real validating Unbound (its trust anchor test.'s
// key, `ede: yes`), mailpolicyd taking the status from Unbound's AD bit and EDE.
// ---------------------------------------------------------------------------------------------

/// An Unbound started for one test, stopped by its PID when dropped.
struct Unbound {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unbound_binary() -> Option<std::path::PathBuf> {
    [
        "/usr/sbin/unbound",
        "/usr/local/sbin/unbound",
        "/usr/bin/unbound",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// Starts a validating Unbound in front of `dns` (stub zones for test. and its children),
/// anchored at `anchor` for test.; `None` (after one line saying so) when Unbound is not
/// installed and MAILPOLICYD_REQUIRE_TOOLS is unset.
async fn validating_unbound(dns: &TestDns, anchor: &PublicKeyBuf, ede: bool) -> Option<Unbound> {
    let Some(bin) = unbound_binary() else {
        assert!(
            std::env::var_os("MAILPOLICYD_REQUIRE_TOOLS").is_none(),
            "unbound is not installed (MAILPOLICYD_REQUIRE_TOOLS is set)"
        );
        println!("skipped: unbound is not installed");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let key = dir.path().join("test.key");
    std::fs::write(
        &key,
        format!("test. 3600 IN DNSKEY {}\n", DNSKEY::from_key(anchor)),
    )
    .unwrap();
    let stub = |zone: &str| {
        format!(
            "stub-zone:\n  name: \"{zone}\"\n  stub-addr: 127.0.0.1@{}\n",
            dns.addr.port()
        )
    };
    let conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  num-threads: 1\n  \
         username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  \
         use-syslog: no\n  logfile: \"{d}/unbound.log\"\n  verbosity: 1\n  \
         do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n  \
         module-config: \"validator iterator\"\n  trust-anchor-file: \"{k}\"\n  \
         qname-minimisation: no\n  target-fetch-policy: \"0 0 0 0 0\"\n  \
         ede: {ede}\n  val-log-level: 2\n  access-control: 127.0.0.0/8 allow\n\
         remote-control:\n  control-enable: no\n{}{}{}{}",
        stub("test."),
        stub("signed.test."),
        stub("unsigned.test."),
        stub("broken.test."),
        d = dir.path().display(),
        k = key.display(),
        ede = if ede { "yes" } else { "no" },
    );
    let conf_path = dir.path().join("unbound.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = std::process::Command::new(bin)
        .args(["-d", "-c"])
        .arg(&conf_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let u = Unbound {
        child,
        addr: ([127, 0, 0, 1], port).into(),
        _dir: dir,
    };
    // Ready when it answers (at most 10 s).
    for _ in 0..100 {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut m = Message::new(
            7,
            hickory_server::proto::op::MessageType::Query,
            hickory_server::proto::op::OpCode::Query,
        );
        m.metadata.recursion_desired = true;
        m.add_query(hickory_server::proto::op::Query::query(
            Name::from_ascii("test.").unwrap(),
            RecordType::SOA,
        ));
        let _ = s.send_to(&m.to_vec().unwrap(), u.addr).await;
        let mut buf = [0u8; 2048];
        if tokio::time::timeout(Duration::from_millis(100), s.recv_from(&mut buf))
            .await
            .is_ok()
        {
            dns.log.clear();
            return Some(u);
        }
    }
    let log = std::fs::read_to_string(u._dir.path().join("unbound.log")).unwrap_or_default();
    panic!("unbound did not answer within 10 s: {log}");
}

async fn upstream_ad_statuses(ede: bool) {
    let (dns, anchor) = hierarchy().await;
    let Some(unbound) = validating_unbound(&dns, &anchor, ede).await else {
        return;
    };
    let mut cfg = common::resolver_config(unbound.addr, Duration::from_secs(2));
    common::no_rate_limit(&mut cfg);
    cfg.upstream.dnssec = DnssecMode::UpstreamAd;
    let r = Resolver::new(cfg).unwrap();
    let now = Instant::now();

    let u = r.tlsa("mx.unsigned.test", 25, now).await.unwrap();
    assert_eq!(u.answer.dnssec, DnssecStatus::Insecure);
    assert_eq!(tlsa_count(&u.answer.data), 1);
    let cold = dns.log.len();
    assert!(
        cold <= MAX_VALIDATION_QUERIES,
        "{cold}: {:?}",
        dns.log.all()
    );
    let _ = r.tlsa("mx.unsigned.test", 25, now).await.unwrap();
    assert_eq!(dns.log.len(), cold, "a repeat costs no query");
    // No validating resolver at work in this mode.
    assert_eq!(
        r.dnssec_stats(),
        mailpolicyd::resolve::upstream::DnssecStats::default()
    );

    let s = r.tlsa("mx.signed.test", 25, now).await.unwrap();
    assert_eq!(s.answer.dnssec, DnssecStatus::Secure);
    assert_eq!(tlsa_count(&s.answer.data), 1);
    let none = r.tlsa("mx.signed.test", 26, now).await.unwrap();
    assert_eq!(tlsa_count(&none.answer.data), 0);
    assert_eq!(none.answer.dnssec, DnssecStatus::Secure);
    let e = r.tlsa("mx.broken.test", 25, now).await.unwrap_err();
    assert_eq!(e, ResolveError::DnssecBogus, "ede: {ede}");
    // DKIM keys carry the same status.
    dkim_statuses(&r, DnssecStatus::Secure, DnssecStatus::Insecure).await;
    for zone in ["signed.test", "unsigned.test", "broken.test"] {
        let d = r.dmarc(zone, now).await;
        assert!(d.is_ok(), "{zone}: {d:?}");
        let spf = r.spf(zone, now).await;
        assert!(spf.is_ok(), "{zone}: {spf:?}");
    }
    drop(unbound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_ad_mode_through_a_validating_unbound_with_ede() {
    upstream_ad_statuses(true).await;
}

/// Without `ede: yes` Unbound's SERVFAIL says nothing: asked again with CD, it answers, so the
/// failure was its validation and the answer is still `dnssec_bogus`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_ad_mode_through_a_validating_unbound_without_ede() {
    upstream_ad_statuses(false).await;
}

/// A DS anchor (as Debian's root.ds): the owner's DNSKEY RRset is fetched once and the key the
/// DS matches anchors validation; a DS that matches no key makes validating questions fail
/// (never secure).
#[tokio::test]
async fn a_ds_trust_anchor_is_matched_to_its_key() {
    let (dns, anchor) = hierarchy().await;
    let test = Name::from_ascii("test.").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("test.ds");
    std::fs::write(
        &good,
        format!("test. 3600 IN DS {}\n", ds_of(&test, &anchor)),
    )
    .unwrap();
    let (_, other) = new_key();
    let wrong = dir.path().join("other.ds");
    std::fs::write(&wrong, format!("test. IN DS {}\n", ds_of(&test, &other))).unwrap();
    let load = |file: &std::path::Path| {
        let cfg = anchored_config(file, dns.addr);
        assert_eq!(cfg.daemon.resolver.upstream.trust_anchor_ds.len(), 1);
        Resolver::new(cfg.daemon.resolver).unwrap()
    };
    let now = Instant::now();
    let r = load(&good);
    let l = r.tlsa("mx.signed.test", 25, now).await.unwrap();
    assert_eq!(l.answer.dnssec, DnssecStatus::Secure);
    let u = r.tlsa("mx.unsigned.test", 25, now).await.unwrap();
    assert_eq!(u.answer.dnssec, DnssecStatus::Insecure);
    assert_eq!(
        r.tlsa("mx.broken.test", 25, now).await.unwrap_err(),
        ResolveError::DnssecBogus
    );
    let r = load(&wrong);
    let e = r.tlsa("mx.signed.test", 25, now).await.unwrap_err();
    assert_ne!(e, ResolveError::Timeout, "{e:?}");
}
