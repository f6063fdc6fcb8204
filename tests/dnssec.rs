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
    shutdown.cancel();
    let _ = task.await;
}
