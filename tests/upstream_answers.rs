//! Issue 12, items 4, 5 and 13 end to end: what the socket and the DNS front-end serve when
//! the upstream answer carries records off the question's CNAME chain, CNAMEs with short TTLs,
//! or fails (SERVFAIL, REFUSED, a dropped query); and the `cache.failure_ttl_s` setting.
//! The upstream is the in-process authority of `tests/dnsserver/`.

mod common;
mod dnsserver;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dnsserver::{TestDns, Zone};
use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use mailpolicyd::client::{Client, ClientError};
use mailpolicyd::resolve::{Data, Found, Resolver, ResolverConfig};
use mailpolicyd::serve::{Service, SocketConfig};
use tokio_util::sync::CancellationToken;

const KEY: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
const DMARC: &str = "v=DMARC1; p=reject; rua=mailto:d@example.test";
/// Another TXT record at the `_dmarc` name, which the front-end must return too.
const OTHER_TXT: &str = "site-verification=abc123";

struct Daemon {
    dns: TestDns,
    service: Arc<Service>,
    client: Client,
    dns_front: std::net::SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Daemon {
    let dns = TestDns::start(vec![
        Zone::new("example.test.", 300)
            .txt("inject", 3600, &["v=spf1 -all"])
            .cname("sel._domainkey", 40, "key.example.test.")
            .txt("key", 3600, &[KEY])
            .txt("sf", 3600, &["v=spf1 -all"])
            .cname("nodata._domainkey", 40, "host.example.test.")
            .record(
                "host",
                3600,
                RData::A(hickory_server::proto::rr::rdata::A::new(192, 0, 2, 1)),
            )
            .cname("gone._domainkey", 45, "missing.example.test.")
            .txt("_dmarc", 3600, &[DMARC])
            .txt("_dmarc", 3600, &[OTHER_TXT])
            .txt("plain._domainkey", 3600, &[KEY]),
    ])
    .await;
    dns.inject_extra(
        "inject.example.test",
        TestDns::txt_record("victim.test.", 3600, &["v=spf1 +all"]),
    );
    let mut cfg = common::resolver_config(dns.addr, Duration::from_millis(200));
    cfg.upstream.attempts = 2;
    let service = Service::new(Resolver::new(cfg).unwrap());
    let sock = common::serve_socket(&service, SocketConfig::default());
    let dns_front = common::serve_dns_front_end(&service, &sock.shutdown).await;
    let client = Client::connect(&sock.path).await.unwrap();
    Daemon {
        dns,
        service,
        client,
        dns_front,
        shutdown: sock.shutdown,
        _dir: sock.dir,
    }
}

/// One TXT question to the DNS front-end over UDP.
async fn ask_front_end(addr: std::net::SocketAddr, name: &str) -> Message {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::TXT,
    ));
    common::udp_exchange(addr, &m).await
}

/// The value of the unlabelled metric `name`.
fn metric(service: &Service, name: &str) -> u64 {
    common::metric(service, &format!("{name} "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_record_is_served_by_neither_socket_nor_dns_front_end() {
    let d = start().await;
    // The socket: the SPF record is the name's own `-all`, one record, not the injected `+all`.
    let spf = d.client.spf("inject.example.test").await.unwrap();
    match &spf.answer.data {
        Data::Spf(Found::Valid(r)) => assert_eq!(r.policy.to_string(), "v=spf1 -all"),
        other => panic!("{other:?}"),
    }
    // The DNS front-end: one TXT record under the question name.
    let reply = ask_front_end(d.dns_front, "inject.example.test.").await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let texts: Vec<(String, String)> = reply
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::TXT(t) => (r.name.to_string(), t.to_string()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        vec![("inject.example.test.".to_owned(), "v=spf1 -all".to_owned())]
    );
    // victim.test was never cached: its question goes upstream.
    let before = d.dns.log.count("victim.test");
    let _ = d.client.spf("victim.test").await;
    assert!(d.dns.log.count("victim.test") > before);
    d.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_ttl_bounds_what_socket_and_dns_front_end_serve() {
    let d = start().await;
    let key = d.client.dkim_key("sel", "example.test").await.unwrap();
    assert_eq!(
        key.answer.ttl, 40,
        "the CNAME's 40 s, not the target's 3600 s"
    );
    let reply = ask_front_end(d.dns_front, "sel._domainkey.example.test.").await;
    // The CNAME and the key record, as the upstream gave them (issue 14), none above 40 s.
    assert_eq!(reply.answers.len(), 2, "{reply:?}");
    assert_eq!(reply.answers[0].record_type(), RecordType::CNAME);
    for r in &reply.answers {
        assert!(r.ttl <= 40, "{r:?}");
    }
    d.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_key_behind_a_cname_is_cached_for_the_cname_ttl_over_the_socket() {
    // The zone's negative TTL is 300 s: a key at a CNAME with TTL 40 (45) pointing at a name
    // without TXT (at no name) is "absent" for 40 s (45 s), not for the SOA's 300 s.
    let d = start().await;
    for (selector, ttl) in [("nodata", 40), ("gone", 45)] {
        let key = d.client.dkim_key(selector, "example.test").await.unwrap();
        assert!(matches!(key.answer.data, Data::None), "{selector}: {key:?}");
        assert_eq!(key.answer.ttl, ttl, "{selector}: the CNAME's TTL");
    }
    d.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_errors_cached_per_name_over_the_socket() {
    let d = start().await;
    d.dns.servfail("sf.example.test");
    for _ in 0..20 {
        match d.client.spf("sf.example.test").await {
            Err(ClientError::Server(e)) => assert_eq!(e.code, "servfail", "{e}"),
            other => panic!("a SERVFAIL is an error, never \"no record\": {other:?}"),
        }
    }
    let asked = d.dns.log.count("sf.example.test");
    assert!(asked <= 2, "20 questions cost {asked} upstream queries");
    assert!(metric(&d.service, "mailpolicyd_failure_cached_total") >= 19);
    // The DNS front-end (a TXT question, where the socket asked SPF) answers SERVFAIL too,
    // from the same remembered failure of the query `sf.example.test TXT`.
    let reply = ask_front_end(d.dns_front, "sf.example.test.").await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(d.dns.log.count("sf.example.test"), asked);
    // A dropped name: `timeout` within timeout × attempts (200 ms × 2).
    d.dns.silence("drop.example.test");
    let started = std::time::Instant::now();
    match d.client.spf("drop.example.test").await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, "timeout", "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    d.shutdown.cancel();
}

#[test]
fn failure_ttl_setting_is_validated() {
    let default = common::cli(&["config", "--print-default"]);
    let text = String::from_utf8_lossy(&default.stdout);
    assert!(text.contains("failure_ttl_s = 5"), "{text}");
    for value in ["0", "301"] {
        let out = Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
            .args(["serve", "--socket", "/nonexistent/x.sock", "--admin", ""])
            .env("MAILPOLICYD_CACHE_FAILURE_TTL_S", value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "failure_ttl_s = {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cache.failure_ttl_s"), "{err}");
    }
}

/// The TXT strings of a front-end reply (the CNAMEs before them left out), sorted
/// (`site-verification…` before `v=…`).
fn txt_answers(reply: &Message) -> Vec<String> {
    let mut texts: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.to_string()),
            RData::CNAME(_) => None,
            other => panic!("{other:?}"),
        })
        .collect();
    texts.sort();
    texts
}

/// The socket's `dmarc` question for example.test: the record at `_dmarc.example.test`.
async fn socket_dmarc(d: &Daemon) {
    let dmarc = d.client.dmarc("example.test").await.unwrap();
    assert_eq!(dmarc.found_at.as_deref(), Some("example.test"), "{dmarc:?}");
    let record = dmarc.record.expect("the record");
    match &record.answer.data {
        Data::Dmarc(Found::Valid(r)) => assert!(r.policy.to_string().contains("p=reject")),
        other => panic!("{other:?}"),
    }
}

/// [`ask_front_end`], asserting that the front-end answered from the cache (no upstream query).
async fn front_end_from_cache(d: &Daemon, name: &str) -> Message {
    let asked = d.dns.log.len();
    let reply = ask_front_end(d.dns_front, name).await;
    assert_eq!(d.dns.log.len(), asked, "the front-end asked upstream");
    reply
}

/// [`assert_requests`] of the daemon's service, then stops the daemon.
fn assert_requests_and_stop(d: &Daemon, counts: &[(&str, u64)]) {
    assert_requests(&d.service, counts);
    d.shutdown.cancel();
}

/// Asserts the `ok` counts of `mailpolicyd_requests_total` by `op`.
fn assert_requests(service: &Service, counts: &[(&str, u64)]) {
    for &(op, n) in counts {
        let name = format!("mailpolicyd_requests_total{{op=\"{op}\",result=\"ok\"}}");
        assert_eq!(metric(service, &name), n, "{name}");
    }
}

/// Issue 13: the front-end's `_dmarc` TXT question is answered from the DMARC entry the
/// socket's `dmarc` discovery filled: no upstream query, every TXT record at the name (the
/// DMARC record and another one), both questions counted in the request metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_front_end_dmarc_txt_shares_the_socket_dmarc_entry() {
    let d = start().await;
    socket_dmarc(&d).await;
    assert_eq!(d.dns.log.count("_dmarc.example.test"), 1);
    // 0x20 case, as a real stub sends it.
    let reply = front_end_from_cache(&d, "_DmArC.eXample.test.").await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(txt_answers(&reply), [OTHER_TXT, DMARC]);
    assert_eq!(reply.answers[0].name.to_ascii(), "_DmArC.eXample.test.");
    assert_requests_and_stop(&d, &[("dmarc", 1), ("dns_txt", 1)]);
}

/// Issue 13, the other way round: the front-end's `_dmarc` TXT question fills the DMARC entry
/// that the socket's `dmarc` question then uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_dmarc_uses_the_entry_the_dns_front_end_filled() {
    let d = start().await;
    let texts = txt_answers(&ask_front_end(d.dns_front, "_dmarc.example.test.").await);
    assert_eq!(texts, [OTHER_TXT, DMARC]);
    let asked = d.dns.log.len();
    assert_eq!(d.dns.log.count("_dmarc.example.test"), 1);
    socket_dmarc(&d).await;
    assert_eq!(d.dns.log.len(), asked, "the socket asked upstream");
    assert_requests_and_stop(&d, &[("dns_txt", 1), ("dmarc", 1)]);
}

/// Issue 13: a `dkim_key` socket question and the same `_domainkey` TXT over the front-end
/// share one entry, whichever comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_key_and_dns_front_end_domainkey_txt_share_one_entry() {
    let d = start().await;
    let key = d.client.dkim_key("plain", "example.test").await.unwrap();
    assert!(matches!(&key.answer.data, Data::DkimKey(Found::Valid(_))));
    let reply = front_end_from_cache(&d, "plain._DOMAINKEY.example.test.").await;
    assert_eq!(txt_answers(&reply), [KEY]);
    // The other way round, on another name.
    let texts = txt_answers(&ask_front_end(d.dns_front, "sel._domainkey.example.test.").await);
    assert_eq!(texts, [KEY]);
    let asked = d.dns.log.len();
    let key = d.client.dkim_key("sel", "example.test").await.unwrap();
    assert_eq!(key.source, mailpolicyd::resolve::Source::Hit);
    assert_eq!(d.dns.log.len(), asked, "the socket asked upstream");
    assert_requests_and_stop(&d, &[("dkim_key", 2), ("dns_txt", 2)]);
}

/// Issue 13: a TXT question at a plain name shares the SPF entry of the socket's `spf`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_and_dns_front_end_plain_txt_share_one_entry() {
    let d = start().await;
    d.client.spf("sf.example.test").await.unwrap();
    let reply = front_end_from_cache(&d, "sf.example.test.").await;
    assert_eq!(txt_answers(&reply), ["v=spf1 -all"]);
    assert_requests_and_stop(&d, &[("spf", 1), ("dns_txt", 1)]);
}

/// Issue 13: an entry restored from a snapshot keeps its parsed record but not the TXT records
/// behind it (the snapshot format is unchanged); the front-end then asks the name's TXT
/// records once, and still returns every one of them, never only the parsed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_front_end_txt_after_a_snapshot_restore_returns_every_record() {
    let d = start().await;
    socket_dmarc(&d).await;
    let snap = d._dir.path().join("cache.snap");
    d.service.resolver().save_snapshot(&snap).await.unwrap();

    let mut cfg = ResolverConfig::default();
    cfg.upstream.servers = vec![d.dns.addr];
    let restored = Service::new(Resolver::new(cfg).unwrap());
    assert!(restored.resolver().load_snapshot(&snap).await.unwrap() > 0);
    let front = common::serve_dns_front_end(&restored, &d.shutdown).await;
    let asked = d.dns.log.count("_dmarc.example.test");
    let reply = ask_front_end(front, "_dmarc.example.test.").await;
    assert_eq!(txt_answers(&reply), [OTHER_TXT, DMARC]);
    assert_eq!(d.dns.log.count("_dmarc.example.test"), asked + 1);
    // Asked again: a wire-cache hit, no upstream query, counted in the request metrics too.
    let reply = ask_front_end(front, "_dmarc.EXAMPLE.test.").await;
    assert_eq!(txt_answers(&reply), [OTHER_TXT, DMARC]);
    assert_eq!(d.dns.log.count("_dmarc.example.test"), asked + 1);
    assert_requests(&restored, &[("dns_txt", 2)]);
    d.shutdown.cancel();
}
