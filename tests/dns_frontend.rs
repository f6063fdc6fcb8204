//! The DNS front-end as a faithful local resolver (issue 14, item 1), against the in-process
//! authoritative server on loopback: with the default configuration every data type is
//! forwarded and cached by TTL, negative answers carry the zone's SOA, CNAME chains come back
//! as the upstream gave them, TXT strings as published, and nothing is made up locally
//! (`1.0.0.127.in-addr.arpa` PTR is asked, not answered `localhost.`).

mod common;
mod dnsserver;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use dnsserver::{TestDns, Zone};
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::rdata::caa::{CAA, KeyValue};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SRV, TXT};
use hickory_server::proto::rr::{Name, RData, RecordType};
use mailpolicyd::resolve::Resolver;
use mailpolicyd::serve::Service;
use tokio_util::sync::CancellationToken;

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// A 300-octet string: the zone publishes it as one 255-octet string and one of 45.
fn long_text() -> String {
    "k".repeat(300)
}

fn zones() -> Vec<Zone> {
    let long = long_text();
    vec![
        Zone::new("test.", 300),
        Zone::new("example.test.", 120)
            .txt("@", 3600, &["v=spf1 ip4:192.0.2.0/24 -all"])
            .txt("multi", 3600, &["part one ", "part two"])
            .txt("long", 3600, &[&long[..255], &long[255..]])
            .txt("_dmarc", 3600, &["v=DMARC1; ", "p=reject"])
            .record("host", 600, RData::A(A::new(192, 0, 2, 10)))
            .record(
                "host",
                600,
                RData::AAAA(AAAA::from_str("2001:db8::10").unwrap()),
            )
            .record("@", 600, RData::MX(MX::new(10, name("host.example.test."))))
            .record(
                "_sip._tcp",
                600,
                RData::SRV(SRV::new(0, 5, 5060, name("host.example.test."))),
            )
            .record(
                "@",
                600,
                RData::CAA(CAA::new_issue(
                    false,
                    Some(name("ca.example.")),
                    Vec::<KeyValue>::new(),
                )),
            )
            .record("sub", 600, RData::NS(NS(name("ns.invalid."))))
            .record("target", 900, RData::A(A::new(192, 0, 2, 20)))
            .txt("target", 900, &["v=spf1 -all"])
            .cname("alias", 300, "target.example.test.")
            .cname("alias2", 200, "alias.example.test.")
            .cname("dangling", 250, "nowhere.example.test."),
        Zone::new("127.in-addr.arpa.", 60).record(
            "1.0.0",
            600,
            RData::PTR(PTR(name("loopback.example.test."))),
        ),
    ]
}

struct FrontEnd {
    dns: TestDns,
    service: Arc<Service>,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

/// The service over the test server and its front-end with the default configuration
/// (forwarding on).
async fn start() -> FrontEnd {
    let dns = TestDns::start(zones()).await;
    let mut cfg = common::resolver_config(dns.addr, Duration::from_secs(2));
    common::no_rate_limit(&mut cfg);
    let service = Service::new(Resolver::new(cfg).unwrap());
    let shutdown = CancellationToken::new();
    let defaults = mailpolicyd::config::load(
        None,
        &std::collections::BTreeMap::new(),
        &mailpolicyd::config::Flags::default(),
    )
    .unwrap();
    let forward = defaults.daemon.dns_forward;
    assert!(forward, "forwarding is the default");
    let addr = common::serve_dns_front_end_forwarding(&service, &shutdown, forward).await;
    FrontEnd {
        dns,
        service,
        addr,
        shutdown,
    }
}

/// One question to the front-end ([`ask_server`]), answered as a recursive resolver answers:
/// RA set, RD copied.
async fn ask(addr: SocketAddr, qname: &str, rtype: RecordType) -> Message {
    let resp = ask_server(addr, qname, rtype).await;
    assert!(
        resp.metadata.recursion_available,
        "RA set as a resolver sets it: {resp:?}"
    );
    assert!(resp.metadata.recursion_desired, "RD copied");
    resp
}

/// One question over UDP (EDNS, 1232 octets offered, RD set), the response decoded.
async fn ask_server(addr: SocketAddr, qname: &str, rtype: RecordType) -> Message {
    let mut m = Message::new(0x4d50, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), rtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    let resp = common::udp_exchange(addr, &m).await;
    assert_eq!(resp.metadata.id, 0x4d50);
    resp
}

fn upstream_count(dns: &TestDns, qname: &str, rtype: RecordType) -> usize {
    dns.log
        .all()
        .iter()
        .filter(|(n, t)| n == qname && *t == rtype)
        .count()
}

fn soa_owner(m: &Message) -> Option<String> {
    m.authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.name.to_ascii())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_and_nodata_answers_carry_the_soa() {
    let f = start().await;
    // NXDOMAIN, for a policy kind (TXT: the SPF entry and the DMARC entry) and a forwarded one.
    for (qname, rtype) in [
        ("nope.example.test.", RecordType::TXT),
        ("_dmarc.nope.example.test.", RecordType::TXT),
        ("nope.example.test.", RecordType::MX),
        ("nope.example.test.", RecordType::A),
    ] {
        let m = ask(f.addr, qname, rtype).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{qname} {rtype}"
        );
        assert!(m.answers.is_empty());
        assert_eq!(
            soa_owner(&m).as_deref(),
            Some("example.test."),
            "{qname} {rtype}: {m:?}"
        );
        let soa = m
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .unwrap();
        assert!(
            soa.ttl <= 120,
            "the SOA's TTL is the negative TTL (RFC 2308 §3): {}",
            soa.ttl
        );
    }
    // NODATA: the name exists, without records of the type.
    for (qname, rtype) in [
        ("host.example.test.", RecordType::TXT),
        ("host.example.test.", RecordType::MX),
        ("multi.example.test.", RecordType::AAAA),
    ] {
        let m = ask(f.addr, qname, rtype).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{qname} {rtype}"
        );
        assert!(m.answers.is_empty(), "{qname} {rtype}: {m:?}");
        assert_eq!(
            soa_owner(&m).as_deref(),
            Some("example.test."),
            "{qname} {rtype}"
        );
    }
    // Asked again: from the cache, SOA and all, no upstream query.
    let before = f.dns.log.len();
    let m = ask(f.addr, "nope.example.test.", RecordType::MX).await;
    assert_eq!(soa_owner(&m).as_deref(), Some("example.test."));
    let m = ask(f.addr, "host.example.test.", RecordType::TXT).await;
    assert_eq!(soa_owner(&m).as_deref(), Some("example.test."));
    assert_eq!(f.dns.log.len(), before, "negative answers are cached");
    f.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_chains_are_returned_as_the_upstream_gave_them() {
    let f = start().await;
    for rtype in [RecordType::TXT, RecordType::A] {
        let m = ask(f.addr, "alias2.example.test.", rtype).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let got: Vec<(String, RecordType)> = m
            .answers
            .iter()
            .map(|r| (r.name.to_ascii(), r.record_type()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("alias2.example.test.".to_owned(), RecordType::CNAME),
                ("alias.example.test.".to_owned(), RecordType::CNAME),
                ("target.example.test.".to_owned(), rtype),
            ],
            "{rtype}"
        );
        assert_eq!(
            m.answers[0].data,
            RData::CNAME(CNAME(name("alias.example.test.")))
        );
    }
    // A chain to a name that does not exist: what the upstream itself answers (asked
    // directly), CNAME and SOA included.
    let direct = ask_server(f.dns.addr, "dangling.example.test.", RecordType::MX).await;
    let via = ask(f.addr, "dangling.example.test.", RecordType::MX).await;
    assert_eq!(via.metadata.response_code, direct.metadata.response_code);
    let shape = |m: &Message| -> Vec<(String, RecordType)> {
        m.answers
            .iter()
            .chain(&m.authorities)
            .map(|r| (r.name.to_ascii(), r.record_type()))
            .collect()
    };
    assert_eq!(shape(&via), shape(&direct));
    assert_eq!(via.answers[0].record_type(), RecordType::CNAME, "{via:?}");
    f.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txt_strings_are_returned_as_published() {
    let f = start().await;
    let long = long_text();
    for (qname, want) in [
        ("multi.example.test.", vec!["part one ", "part two"]),
        ("long.example.test.", vec![&long[..255], &long[255..]]),
        ("_dmarc.example.test.", vec!["v=DMARC1; ", "p=reject"]),
        ("example.test.", vec!["v=spf1 ip4:192.0.2.0/24 -all"]),
    ] {
        let m = ask(f.addr, qname, RecordType::TXT).await;
        assert_eq!(m.answers.len(), 1, "{qname}");
        let RData::TXT(TXT { txt_data, .. }) = &m.answers[0].data else {
            panic!("{qname}: not TXT: {:?}", m.answers[0]);
        };
        let strings: Vec<&[u8]> = txt_data.iter().map(|s| &s[..]).collect();
        let want: Vec<&[u8]> = want.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(strings, want, "{qname}");
    }
    f.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_ptr_is_asked_not_made_up() {
    let f = start().await;
    let m = ask(f.addr, "1.0.0.127.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "{m:?}");
    assert_eq!(
        m.answers[0].data,
        RData::PTR(PTR(name("loopback.example.test."))),
        "the upstream's PTR, not a local `localhost.`"
    );
    assert!(m.answers[0].ttl <= 600);
    assert_eq!(
        upstream_count(&f.dns, "1.0.0.127.in-addr.arpa", RecordType::PTR),
        1,
        "asked upstream"
    );
    // `localhost.` is asked too (the test server does not serve it: REFUSED → SERVFAIL),
    // never answered 127.0.0.1 from a built-in table.
    let m = ask(f.addr, "localhost.", RecordType::A).await;
    assert!(m.answers.is_empty(), "{m:?}");
    assert_eq!(upstream_count(&f.dns, "localhost", RecordType::A), 1);
    f.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_is_forwarded_and_cached() {
    let f = start().await;
    let cases: [(&str, RecordType, RData); 9] = [
        (
            "host.example.test.",
            RecordType::A,
            RData::A(A::new(192, 0, 2, 10)),
        ),
        (
            "host.example.test.",
            RecordType::AAAA,
            RData::AAAA(AAAA::from_str("2001:db8::10").unwrap()),
        ),
        (
            "example.test.",
            RecordType::MX,
            RData::MX(MX::new(10, name("host.example.test."))),
        ),
        (
            "1.0.0.127.in-addr.arpa.",
            RecordType::PTR,
            RData::PTR(PTR(name("loopback.example.test."))),
        ),
        (
            "example.test.",
            RecordType::NS,
            RData::NS(NS(name("ns.invalid."))),
        ),
        (
            "alias.example.test.",
            RecordType::CNAME,
            RData::CNAME(CNAME(name("target.example.test."))),
        ),
        (
            "_sip._tcp.example.test.",
            RecordType::SRV,
            RData::SRV(SRV::new(0, 5, 5060, name("host.example.test."))),
        ),
        (
            "example.test.",
            RecordType::CAA,
            RData::CAA(CAA::new_issue(
                false,
                Some(name("ca.example.")),
                Vec::<KeyValue>::new(),
            )),
        ),
        (
            "sub.example.test.",
            RecordType::NS,
            RData::NS(NS(name("ns.invalid."))),
        ),
    ];
    for (qname, rtype, want) in &cases {
        let first = ask(f.addr, qname, *rtype).await;
        let second = ask(f.addr, qname, *rtype).await;
        for m in [&first, &second] {
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{qname} {rtype}"
            );
            let data: Vec<&RData> = m
                .answers
                .iter()
                .filter(|r| r.record_type() == *rtype)
                .map(|r| &r.data)
                .collect();
            assert_eq!(data, vec![want], "{qname} {rtype}: {m:?}");
        }
        let asked = qname.trim_end_matches('.');
        assert_eq!(
            upstream_count(&f.dns, asked, *rtype),
            1,
            "{qname} {rtype}: a repeat costs no upstream query"
        );
    }
    // SOA and DS: an answer (the apex SOA) and a negative one (no DS at a name without one),
    // each asked once upstream however often a client asks.
    for _ in 0..3 {
        let m = ask(f.addr, "example.test.", RecordType::SOA).await;
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].record_type(), RecordType::SOA);
        let m = ask(f.addr, "host.example.test.", RecordType::DS).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }
    assert_eq!(upstream_count(&f.dns, "example.test", RecordType::SOA), 1);
    assert_eq!(
        upstream_count(&f.dns, "host.example.test", RecordType::DS),
        1
    );
    // Each type is counted in the request metrics under its own label.
    for label in [
        "dns_a",
        "dns_aaaa",
        "dns_mx",
        "dns_ptr",
        "dns_ns",
        "dns_soa",
        "dns_cname",
        "dns_srv",
        "dns_caa",
        "dns_ds",
    ] {
        let n = common::metric(
            &f.service,
            &format!("mailpolicyd_requests_total{{op=\"{label}\",result=\"ok\"}}"),
        );
        assert!(n >= 1, "{label}: {n}");
    }
    // Meta types are refused.
    let m = ask(f.addr, "example.test.", RecordType::ANY).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    f.shutdown.cancel();
}
