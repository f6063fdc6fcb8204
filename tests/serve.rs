//! The sidecar end to end, on real sockets: the socket server started in process
//! (`serve::run(listener, ...)`) over a resolver whose upstream is a real authoritative server on
//! loopback (hickory-server, `tests/dnsserver/`); the async client, the blocking client, the CLI
//! (a subprocess), the Python client and DNS clients (hickory, and `dig` when installed) all get
//! the same answers; pipelining, many connections, the bad-input suite, access control, the
//! admin endpoint, and a warm restart of the real daemon binary.

mod common;
mod dnsserver;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{metric, udp_exchange};
use dnsserver::{TestDns, Zone};
use mailpolicyd::client::{BlockingClient, Client, ClientError};
use mailpolicyd::policy::dmarc::Disposition;
use mailpolicyd::proto::frame::{FrameBuf, Framing, MAX_RESPONSE_FRAME};
use mailpolicyd::proto::{self, Op, Outcome, Reply, Request, Response};
use mailpolicyd::resolve::discover::PolicyTag;
use mailpolicyd::resolve::{Data, Found, Kind, Resolver, ResolverConfig, Source};
use mailpolicyd::serve::{self, Service, SocketConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

const SPF: &str = "v=spf1 ip4:192.0.2.0/24 include:_spf.example.net -all";

fn zones() -> Vec<Zone> {
    let key = include_str!("data/dkim/rsa2048.spki.b64");
    let dkim = format!("v=DKIM1; k=rsa; p={key}");
    let a = hickory_server::proto::rr::RData::A(hickory_server::proto::rr::rdata::A(
        "192.0.2.1".parse().unwrap(),
    ));
    vec![
        Zone::new("test.", 300),
        Zone::new("example.test.", 300)
            .txt("@", 3600, &[SPF])
            .txt(
                "_dmarc",
                3600,
                &["v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test"],
            )
            .long_txt("s1._domainkey", 3600, &dkim)
            .txt("xn--bcher-kva", 3600, &["v=spf1 -all"])
            .txt(
                "big",
                3600,
                &[&"a".repeat(250), &"b".repeat(250), &"c".repeat(250)],
            )
            .record("sub", 3600, a),
    ]
}

type Daemon = common::Daemon<TestDns>;

async fn start_with(socket_cfg: SocketConfig) -> Daemon {
    let dns = TestDns::start(zones()).await;
    let mut cfg = common::resolver_config(dns.addr, Duration::from_millis(500));
    common::no_rate_limit(&mut cfg);
    common::serve_resolver(cfg, socket_cfg, dns)
}

async fn start() -> Daemon {
    start_with(SocketConfig::default()).await
}

fn spf_json(p: &proto::PolicyAnswer) -> serde_json::Value {
    match &p.answer.data {
        Data::Spf(Found::Valid(r)) => serde_json::to_value(&r.policy).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_the_same_answers() {
    let d = start().await;
    // Async client.
    let c = Client::connect(&d.socket).await.unwrap();
    let spf = c.spf("example.test").await.unwrap();
    assert_eq!(spf.source, Source::Miss);
    let want = spf_json(&spf);
    assert_eq!(c.spf("example.test").await.unwrap().source, Source::Hit);
    let dm = c.dmarc("sub.example.test").await.unwrap();
    assert_eq!(dm.found_at.as_deref(), Some("example.test"));
    assert_eq!(dm.applied, Some((PolicyTag::Sp, Disposition::Quarantine)));
    let key = c.dkim_key("s1", "example.test").await.unwrap();
    assert!(
        matches!(&key.answer.data, Data::DkimKey(Found::Valid(k)) if k.policy.key_bits == Some(2048))
    );

    // Blocking client.
    let path = d.socket.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        let mut b = BlockingClient::connect(&path, Duration::from_secs(5)).unwrap();
        match b
            .call(Op::Spf {
                domain: "EXAMPLE.test.".into(),
            })
            .unwrap()
        {
            Reply::Policy(p) => spf_json(&p),
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap();
    assert_eq!(blocking, want);

    // The CLI, as a subprocess.
    let cli = common::query_json(&d.socket, &["spf", "example.test"]);
    assert_eq!(
        cli["policy"]["answer"]["data"]["spf"]["valid"]["policy"],
        want
    );
    let sock = d.socket.to_str().unwrap();
    let human = common::cli(&["query", "--socket", sock, "dmarc", "sub.example.test"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("applies: sp = quarantine"), "{text}");
    // The selected record's text: in --json as `raw`, in words as `record:`.
    assert_eq!(cli["policy"]["answer"]["raw"], SPF);
    assert!(
        text.contains("record: v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test"),
        "{text}"
    );
    let words = common::cli(&["query", "--socket", sock, "spf", "example.test"]);
    let words = String::from_utf8_lossy(&words.stdout);
    assert!(words.contains(&format!("record: {SPF}")), "{words}");
    let stats = common::cli(&["stats", "--socket", sock, "--json"]);
    assert!(stats.status.success());
    let bad = common::cli(&["query", "--socket", sock, "spf", "a..b"]);
    assert_eq!(bad.status.code(), Some(1));
    let gone = common::cli(&["stats", "--socket", "/nonexistent/mp.sock"]);
    assert_eq!(gone.status.code(), Some(69));

    // The Python client (stdlib only), speaking JSON lines.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/check_client.py");
    let py = common::run_ok(Command::new("python3").arg(&script).arg(&d.socket));
    let py: serde_json::Value = serde_json::from_slice(&py).unwrap();
    assert_eq!(py["spf"], want);
    assert_eq!(py["dmarc_found_at"], "example.test");
    assert_eq!(py["dmarc_applied"], serde_json::json!(["sp", "quarantine"]));
    assert_eq!(py["dkim_bits"], 2048);
    assert_eq!(py["bad_name"], "invalid_name");
    // `raw`: the selected record's text as published (the DKIM key's 255-byte strings joined).
    let dkim_raw = format!(
        "v=DKIM1; k=rsa; p={}",
        include_str!("data/dkim/rsa2048.spki.b64")
    );
    assert_eq!(py["spf_raw"], SPF);
    assert_eq!(
        py["dmarc_raw"],
        "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test"
    );
    assert_eq!(py["dkim_raw"], dkim_raw.as_str());
    assert_eq!(key.answer.raw.as_deref(), Some(dkim_raw.as_str()));
    assert_eq!(py["no_record_raw"], serde_json::Value::Null);

    // All of the above asked upstream for the SPF record once.
    assert_eq!(d.dns.log.count("example.test"), 1);
    d.shutdown.cancel();
    d.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_front_end_answers_from_the_same_cache() {
    let d = start().await;
    let shutdown = CancellationToken::new();
    let addr = common::serve_dns_front_end(&d.service, &shutdown).await;
    // hickory as the DNS client.
    let mut cfg = ResolverConfig::default();
    cfg.upstream.servers = vec![addr];
    let via_dns = Resolver::new(cfg).unwrap();
    let l = ask(&via_dns, Kind::Txt, "example.test").await.unwrap();
    assert!(matches!(&l.answer.data, Data::Txt(t) if t == &vec![SPF.to_owned()]));
    // A 400-byte DKIM record comes back whole (split into 255-byte strings on the wire).
    let key = ask(&via_dns, Kind::DkimKey, "s1._domainkey.example.test")
        .await
        .unwrap();
    assert!(
        matches!(&key.answer.data, Data::DkimKey(Found::Valid(k)) if k.policy.key_bits == Some(2048))
    );
    // NXDOMAIN passes through; other types are refused.
    let nx = ask(&via_dns, Kind::Txt, "nope.example.test").await.unwrap();
    assert_eq!(nx.answer.rcode, mailpolicyd::resolve::Rcode::NxDomain);
    let refused = ask(&via_dns, Kind::A, "sub.example.test").await;
    assert!(
        matches!(refused, Err(mailpolicyd::resolve::ResolveError::Refused)),
        "{refused:?}"
    );
    // The socket clients see the DNS front-end's fill as a hit.
    let upstream_before = d.dns.log.count("example.test");
    assert_eq!(upstream_before, 1);

    // dig, when installed (CI installs it).
    match dig_txt(addr, false) {
        Some(text) => assert_eq!(text, format!("\"{SPF}\"")),
        None => println!("dig not installed: the dig half of this test was skipped"),
    }
    assert_eq!(
        d.dns.log.count("example.test"),
        1,
        "every DNS client was answered from the cache"
    );
    shutdown.cancel();
    d.shutdown.cancel();
}

/// `r`'s answer, now, to a question of `kind` about `name`.
async fn ask(
    r: &Resolver,
    kind: Kind,
    name: &str,
) -> Result<mailpolicyd::resolve::Lookup, mailpolicyd::resolve::ResolveError> {
    r.lookup(kind, name, Instant::now()).await
}

/// `dig +short TXT example.test` (over TCP with `tcp`) against the DNS front-end at `addr`:
/// its output, or `None` where dig is not installed (allowed unless `MAILPOLICYD_REQUIRE_TOOLS`
/// is set).
fn dig_txt(addr: std::net::SocketAddr, tcp: bool) -> Option<String> {
    let port = addr.port().to_string();
    let mut args = vec!["+short", "-p", &port, "@127.0.0.1", "TXT", "example.test"];
    if tcp {
        args.insert(0, "+tcp");
    }
    match Command::new("dig").args(args).output() {
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        Err(_) => {
            assert!(
                std::env::var_os("MAILPOLICYD_REQUIRE_TOOLS").is_none(),
                "dig is required here"
            );
            None
        }
    }
}

fn dns_query(id: u16, name: &str, edns: Option<(u8, bool)>) -> hickory_server::proto::op::Message {
    use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_server::proto::rr::{Name, RecordType};
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::TXT,
    ));
    if let Some((version, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_version(version);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m
}

fn wire_answers(service: &Service) -> u64 {
    let metrics = serve::admin::render(service);
    metrics
        .lines()
        .find(|l| l.starts_with("mailpolicyd_dns_answers_total{path=\"wire\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_front_end_wire_cache_and_edge_cases() {
    use hickory_server::proto::op::ResponseCode;
    let d = start().await;
    let shutdown = CancellationToken::new();
    let addr = common::serve_dns_front_end(&d.service, &shutdown).await;

    // First ask fills the wire cache through the resolver; the second, with another ID and
    // other letter case (0x20), is answered from it: same records, the asker's ID and case.
    let first = udp_exchange(addr, &dns_query(1, "example.test.", Some((0, false)))).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert_eq!(wire_answers(&d.service), 0);
    let second = udp_exchange(addr, &dns_query(0xBEEF, "ExAmPlE.tEsT.", Some((0, false)))).await;
    assert_eq!(
        wire_answers(&d.service),
        1,
        "the second answer came from the wire cache"
    );
    assert_eq!(second.metadata.id, 0xBEEF);
    assert_eq!(second.queries[0].name().to_ascii(), "ExAmPlE.tEsT.");
    assert_eq!(second.answers, first.answers);
    assert!(second.metadata.recursion_desired && second.metadata.recursion_available);
    assert_eq!(
        d.dns.log.count("example.test"),
        1,
        "one upstream query in all"
    );

    // 750 bytes of TXT: without EDNS the answer is truncated (TC, nothing half-sent), and a
    // truncated answer is never kept; with EDNS it arrives whole.
    let plain = udp_exchange(addr, &dns_query(2, "big.example.test.", None)).await;
    assert!(plain.metadata.truncation && plain.answers.is_empty());
    let again = udp_exchange(addr, &dns_query(3, "big.example.test.", None)).await;
    assert!(again.metadata.truncation);
    let whole = udp_exchange(addr, &dns_query(4, "big.example.test.", Some((0, false)))).await;
    assert!(!whole.metadata.truncation);
    assert_eq!(whole.answers.len(), 1);

    // EDNS version 1 gets BADVERS; a message that is not DNS gets FORMERR or nothing.
    let badvers = udp_exchange(addr, &dns_query(5, "example.test.", Some((1, false)))).await;
    // RCODE 16 (BADVERS; hickory's decoder names the shared code point BADSIG).
    assert_eq!(u16::from(badvers.metadata.response_code), 16);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&[0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0xff], addr)
        .await
        .unwrap();
    // Still serving after the junk.
    let after = udp_exchange(addr, &dns_query(6, "example.test.", Some((0, true)))).await;
    assert_eq!(after.metadata.response_code, ResponseCode::NoError);
    assert_eq!(after.answers, first.answers);

    // TCP goes through hickory-server with the same handler.
    if let Some(text) = dig_txt(addr, true) {
        assert_eq!(text, format!("\"{SPF}\""));
    }
    shutdown.cancel();
    d.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_and_many_connections() {
    let d = start().await;
    // 1,000 requests written at once on one raw connection; every id answered once.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    let mut frames = Vec::new();
    for id in 1..=1000u64 {
        let op = if id % 2 == 0 {
            Op::Spf {
                domain: "example.test".into(),
            }
        } else {
            Op::Spf {
                domain: format!("n{id}.example.test"),
            }
        };
        proto::encode_frame(&Request { id, op }, &mut frames).unwrap();
    }
    s.write_all(&frames).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let resp = read_frame(&mut s).await.unwrap();
        let Outcome::Ok(Reply::Policy(p)) = &resp.result else {
            panic!("{resp:?}")
        };
        let want = if resp.id % 2 == 0 {
            "example.test".to_owned()
        } else {
            format!("n{}.example.test", resp.id)
        };
        assert_eq!(
            p.answer.name, want,
            "response {} matches its request",
            resp.id
        );
        assert!(seen.insert(resp.id));
    }
    assert_eq!(seen.len(), 1000);

    // The async client: 1,000 calls in flight on its one connection.
    let c = Arc::new(Client::connect(&d.socket).await.unwrap());
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { (i, c.spf(&format!("m{i}.example.test")).await) })
        })
        .collect();
    for t in calls {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.unwrap().answer.name, format!("m{i}.example.test"));
    }

    // 64 connections at once, 50 requests each.
    let conns: Vec<_> = (0..64)
        .map(|_| {
            let path = d.socket.clone();
            tokio::spawn(async move {
                let c = Client::connect(&path).await.unwrap();
                for _ in 0..50 {
                    assert_eq!(
                        spf_json(&c.spf("example.test").await.unwrap())["dns_lookups"],
                        1
                    );
                }
            })
        })
        .collect();
    for t in conns {
        t.await.unwrap();
    }
    d.shutdown.cancel();
}

/// The nice values of this process's connection threads (the server runs in the test).
fn connection_thread_nices() -> Vec<i64> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != "mailpolicyd-con" {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesized name; nice is field 19 overall.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        if let Some(n) = rest.split_whitespace().nth(16) {
            out.push(n.parse().unwrap());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_requests_in_flight_then_returns() {
    let d = start_with(SocketConfig {
        drain_timeout: Duration::from_secs(10),
        ..SocketConfig::default()
    })
    .await;
    // Upstream stops answering: a miss waits for the resolver's timeouts (2 × 500 ms).
    d.dns.set_down(true);
    let c = Client::connect(&d.socket).await.unwrap();
    let asked = tokio::spawn(async move { c.spf("in-flight.example.test").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    d.shutdown.cancel();
    // The request read before the shutdown is answered on its own connection (here with the
    // upstream's failure), not cut off; then the server returns, well inside the drain timeout.
    let answer = tokio::time::timeout(Duration::from_secs(10), asked)
        .await
        .expect("answered")
        .unwrap();
    match answer {
        Err(ClientError::Server(e)) => assert_eq!(e.code, "timeout", "{e}"),
        other => panic!("expected the upstream timeout, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), d.task)
        .await
        .expect("serve::run returns after the drain")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The listener is gone.
    assert!(UnixStream::connect(&d.socket).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_connections_are_demoted_interactive_ones_are_not() {
    let d = start().await;
    let demoted = |d: &Daemon| metric(&d.service, "mailpolicyd_connections_demoted_total");
    // Interactive: 5,000 questions one at a time.
    let interactive = Client::connect(&d.socket).await.unwrap();
    for _ in 0..5000 {
        interactive.spf("example.test").await.unwrap();
    }
    assert_eq!(demoted(&d), 0, "a one-at-a-time connection is not bulk");
    // Bulk: 5,000 questions written 100 at a time while the answers are read.
    let s = UnixStream::connect(&d.socket).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        let mut frames = FrameBuf::new(Framing::Binary, MAX_RESPONSE_FRAME);
        let mut chunk = vec![0u8; 64 * 1024];
        while n < 5000 {
            if frames.next_frame().unwrap().is_some() {
                n += 1;
                continue;
            }
            let got = rd.read(&mut chunk).await.unwrap();
            assert!(got > 0, "server closed");
            frames.feed(&chunk[..got]);
        }
        rd
    });
    for chunk in 0..50u64 {
        let mut frames = Vec::new();
        for i in 0..100 {
            let op = Op::Spf {
                domain: "example.test".into(),
            };
            proto::encode_frame(
                &Request {
                    id: chunk * 100 + i,
                    op,
                },
                &mut frames,
            )
            .unwrap();
        }
        wr.write_all(&frames).await.unwrap();
    }
    let _rd = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(demoted(&d), 1, "the pipelining connection is bulk");
    // Both connections are open: one thread demoted, the other untouched (other tests running
    // in this process have connection threads too, none of them bulk).
    let nices = connection_thread_nices();
    assert_eq!(nices.iter().filter(|&&n| n == 10).count(), 1, "{nices:?}");
    assert!(nices.contains(&0), "{nices:?}");
    drop(interactive);
    d.shutdown.cancel();
}

/// One response, read through the frame codec without reading past it.
async fn read_frame(s: &mut UnixStream) -> Option<Response> {
    let mut frames = FrameBuf::new(Framing::Binary, MAX_RESPONSE_FRAME);
    loop {
        if let Some(payload) = frames.next_frame().ok()? {
            return postcard::from_bytes(payload).ok();
        }
        let mut more = vec![0u8; frames.wanted()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut more))
            .await
            .ok()?
            .ok()?;
        frames.feed(&more);
    }
}

async fn read_line(s: &mut tokio::io::BufReader<UnixStream>) -> Option<Response> {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut line))
        .await
        .ok()?
        .ok()?;
    if n == 0 {
        return None;
    }
    serde_json::from_str(&line).ok()
}

async fn closed(s: &mut UnixStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn code(r: &Response) -> &str {
    match &r.result {
        Outcome::Error(e) => &e.code,
        Outcome::Ok(_) => "ok",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_closes_only_the_offending_connection() {
    let d = start().await;
    let bystander = Client::connect(&d.socket).await.unwrap();
    let still_fine = || async {
        assert!(matches!(
            bystander.call(Op::Ping).await.unwrap(),
            Reply::Pong
        ))
    };

    // A frame over 64 KiB: one error, then closed.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(&(70_000u32).to_be_bytes()).await.unwrap();
    let r = read_frame(&mut s).await.unwrap();
    assert_eq!(code(&r), "frame_too_large");
    assert!(closed(&mut s).await);
    still_fine().await;

    // A truncated frame: the peer stops writing mid-frame.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(&[0, 0, 0, 100, 1, 2, 3]).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(code(&read_frame(&mut s).await.unwrap()), "bad_frame");
    still_fine().await;

    // Garbage bytes in a well-sized frame.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    let mut garbage = vec![0, 0, 0, 12];
    garbage.extend_from_slice(&[0xff; 12]);
    s.write_all(&garbage).await.unwrap();
    assert_eq!(code(&read_frame(&mut s).await.unwrap()), "bad_frame");
    assert!(closed(&mut s).await);
    still_fine().await;

    // Unknown op (a newer client's): answered, connection kept.
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(&[0, 0, 0, 3, 9, 200, 1]).await.unwrap();
    let r = read_frame(&mut s).await.unwrap();
    assert_eq!((r.id, code(&r)), (9, "unknown_op"));
    let mut ping = Vec::new();
    proto::encode_frame(
        &Request {
            id: 10,
            op: Op::Ping,
        },
        &mut ping,
    )
    .unwrap();
    s.write_all(&ping).await.unwrap();
    assert_eq!(code(&read_frame(&mut s).await.unwrap()), "ok");

    // Invalid names: errors, connection kept; a U-label becomes its A-label.
    for (id, name) in [
        (11u64, "a..example.test".to_owned()),
        (12, format!("{}.example.test", "x".repeat(64))),
        (13, "a.".repeat(150)),
    ] {
        let mut f = Vec::new();
        proto::encode_frame(
            &Request {
                id,
                op: Op::Spf { domain: name },
            },
            &mut f,
        )
        .unwrap();
        s.write_all(&f).await.unwrap();
        let r = read_frame(&mut s).await.unwrap();
        assert_eq!((r.id, code(&r)), (id, "invalid_name"));
    }
    let mut f = Vec::new();
    proto::encode_frame(
        &Request {
            id: 14,
            op: Op::Spf {
                domain: "bücher.example.test".into(),
            },
        },
        &mut f,
    )
    .unwrap();
    s.write_all(&f).await.unwrap();
    let r = read_frame(&mut s).await.unwrap();
    let Outcome::Ok(Reply::Policy(p)) = r.result else {
        panic!()
    };
    assert_eq!(p.answer.name, "xn--bcher-kva.example.test");
    assert!(matches!(&p.answer.data, Data::Spf(Found::Valid(_))));

    // Wrong major version: one error, then closed. Binary frames take only major 2 (1.x
    // binary clients would misread the answers that gained `raw`); a newer major is refused.
    for (n, version) in ["3.0", "1.0"].into_iter().enumerate() {
        let mut s = UnixStream::connect(&d.socket).await.unwrap();
        let mut f = Vec::new();
        proto::encode_frame(
            &Request {
                id: 15 + n as u64,
                op: Op::Hello {
                    version: version.into(),
                },
            },
            &mut f,
        )
        .unwrap();
        s.write_all(&f).await.unwrap();
        assert_eq!(
            code(&read_frame(&mut s).await.unwrap()),
            "unsupported_version",
            "{version}"
        );
        assert!(closed(&mut s).await, "{version}");
        still_fine().await;
    }

    // JSON: bad JSON and an unknown op are answered and the connection stays; an oversized
    // line closes it.
    let s = UnixStream::connect(&d.socket).await.unwrap();
    let mut s = tokio::io::BufReader::new(s);
    s.get_mut().write_all(b"{not json}\n").await.unwrap();
    assert_eq!(code(&read_line(&mut s).await.unwrap()), "bad_json");
    s.get_mut()
        .write_all(b"{\"id\": 3, \"op\": {\"teleport\": {}}}\n")
        .await
        .unwrap();
    let r = read_line(&mut s).await.unwrap();
    assert_eq!((r.id, code(&r)), (3, "unknown_op"));
    s.get_mut()
        .write_all(b"{\"id\": 4, \"op\": {\"spf\": {\"domain\": \"\"}}}\n")
        .await
        .unwrap();
    assert_eq!(code(&read_line(&mut s).await.unwrap()), "invalid_name");
    s.get_mut()
        .write_all(b"{\"id\": 5, \"op\": \"ping\"}\n")
        .await
        .unwrap();
    assert_eq!(code(&read_line(&mut s).await.unwrap()), "ok");
    let mut big = b"{\"id\": 6, \"op\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 70_000));
    s.get_mut().write_all(&big).await.unwrap();
    assert_eq!(code(&read_line(&mut s).await.unwrap()), "frame_too_large");
    still_fine().await;
    d.shutdown.cancel();
}

#[tokio::test]
async fn socket_file_mode_and_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/mp.sock");
    let l = serve::socket::bind(&path, 0o660).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o660
    );
    drop(l);
    // A stale socket file is replaced.
    let l = serve::socket::bind(&path, 0o600).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(l);
    // Anything else is refused, and left alone.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"precious").unwrap();
    assert!(matches!(
        serve::socket::bind(&file, 0o660),
        Err(serve::socket::BindError::NotASocket(_))
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_credential_allow_list() {
    let probe = tempfile::NamedTempFile::new().unwrap();
    let uid = std::fs::metadata(probe.path()).unwrap().uid();
    let gid = std::fs::metadata(probe.path()).unwrap().gid();
    // An allow-list that excludes this process's uid and gid.
    let d = start_with(SocketConfig {
        allow_uids: vec![uid.wrapping_add(1)],
        allow_gids: vec![gid.wrapping_add(1)],
        ..SocketConfig::default()
    })
    .await;
    let c = Client::connect(&d.socket).await.unwrap();
    match c.call(Op::Ping).await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, "forbidden"),
        other => panic!("{other:?}"),
    }
    d.shutdown.cancel();
    // One that includes it.
    let d = start_with(SocketConfig {
        allow_uids: vec![uid],
        ..SocketConfig::default()
    })
    .await;
    let c = Client::connect(&d.socket).await.unwrap();
    assert!(matches!(c.call(Op::Ping).await.unwrap(), Reply::Pong));
    d.shutdown.cancel();
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint() {
    let d = start().await;
    let (addr, stop) = common::serve_admin(&d.service).await;
    assert_eq!(http_get(addr, "/live").await.0, 200);
    assert_eq!(
        http_get(addr, "/ready").await.0,
        503,
        "not ready until the daemon says so"
    );
    d.service.set_ready(true);
    assert_eq!(http_get(addr, "/ready").await.0, 200);
    let c = Client::connect(&d.socket).await.unwrap();
    c.spf("example.test").await.unwrap();
    c.spf("example.test").await.unwrap();
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for m in [
        "mailpolicyd_cache_hits_total{kind=\"spf\"} 1",
        "mailpolicyd_cache_requests_total{kind=\"spf\"} 2",
        "mailpolicyd_cache_entries",
        "mailpolicyd_cache_bytes",
        "mailpolicyd_prefetch_total",
        "mailpolicyd_served_stale_total",
        "mailpolicyd_coalesced_total",
        "mailpolicyd_rate_limited_total",
        "mailpolicyd_wildcard_marked_total",
        "mailpolicyd_upstream_request_duration_seconds_bucket{le=\"+Inf\",rcode=\"noerror\"} 1",
        "mailpolicyd_requests_total{op=\"spf\",result=\"ok\"} 2",
        "mailpolicyd_request_duration_seconds_count",
    ] {
        assert!(body.contains(m), "missing {m} in\n{body}");
    }
    stop.cancel();
    d.shutdown.cancel();
}

fn daemon(socket: &Path, dns: &TestDns, snapshot: &Path) -> std::process::Child {
    common::daemon_command(socket, dns.addr)
        .args(["--admin", ""])
        .args(["--snapshot", snapshot.to_str().unwrap()])
        .spawn()
        .unwrap()
}

async fn wait_for_socket(path: &Path) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(c) = Client::connect(path).await
            && c.call(Op::Ping).await.is_ok()
        {
            return c;
        }
        assert!(Instant::now() < deadline, "the daemon did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    common::wait_exit(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_is_warm() {
    let zone = Zone::new("warm.test.", 300).numbered(1000, |i| {
        format!("v=spf1 ip4:10.{}.{}.0/24 -all", i / 256, i % 256)
    });
    let dns = TestDns::start(vec![zone]).await;
    let dir = tempfile::tempdir().unwrap();
    let (socket, snapshot) = (dir.path().join("mp.sock"), dir.path().join("cache.snap"));

    let mut child = daemon(&socket, &dns, &snapshot);
    let c = wait_for_socket(&socket).await;
    for i in 0..1000 {
        c.spf(&format!("n{i}.warm.test")).await.unwrap();
    }
    assert_eq!(dns.log.len(), 1000);
    let status = sigterm(&mut child);
    assert_eq!(status.code(), Some(0), "SIGTERM drains and exits 0");
    assert!(snapshot.exists());
    assert!(!socket.exists(), "the socket file is removed on exit");

    let mut child = daemon(&socket, &dns, &snapshot);
    wait_for_socket(&socket).await;
    // The client from before the restart reconnects by itself.
    for i in 0..1000 {
        let p = c.spf(&format!("n{i}.warm.test")).await.unwrap();
        assert_eq!(p.source, Source::Hit);
    }
    assert_eq!(
        dns.log.len(),
        1000,
        "the same 1,000 questions after a restart: 0 upstream queries"
    );
    drop(c);
    assert_eq!(sigterm(&mut child).code(), Some(0));

    // A corrupt snapshot is logged and ignored: the daemon still starts.
    std::fs::write(&snapshot, b"garbage").unwrap();
    let mut child = daemon(&socket, &dns, &snapshot);
    let c = wait_for_socket(&socket).await;
    assert_eq!(c.spf("n1.warm.test").await.unwrap().source, Source::Miss);
    drop(c);
    assert_eq!(sigterm(&mut child).code(), Some(0));
}

#[test]
fn bad_configuration_exits_64_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[socket]\nmode = \"9\"\n[upstream]\nservers = [\"nowhere\"]\n[cache]\nbogus = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
        .args([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--dns-listen",
            "192.0.2.1:53",
        ])
        .env("MAILPOLICYD_LIMITS_BURST", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "socket.mode",
        "\"nowhere\"",
        "cache.bogus",
        "loopback",
        "MAILPOLICYD_LIMITS_BURST",
    ] {
        assert!(err.contains(want), "missing {want}: {err}");
    }
    let out = common::cli(&["config", "--print-default"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("[upstream]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_ops_over_the_socket() {
    use mailpolicyd::resolve::evaluate::{DkimIdentity, DkimResult, DmarcInput, DmarcResult};
    use mailpolicyd::resolve::spf::SpfResult;
    let d = start().await;
    let c = Client::connect(&d.socket).await.unwrap();
    let spf = c
        .spf_check("192.0.2.5", "user@example.test", "mx.example.test")
        .await
        .unwrap();
    assert_eq!(spf.result, SpfResult::Pass);
    assert_eq!(spf.mechanism.as_deref(), Some("ip4:192.0.2.0/24"));
    let before = d.dns.log.len();
    assert_eq!(
        c.spf_check("192.0.2.5", "user@example.test", "mx.example.test")
            .await
            .unwrap(),
        spf
    );
    assert_eq!(
        d.dns.log.len(),
        before,
        "the second SpfCheck asks nothing upstream"
    );
    match c
        .call(Op::SpfCheck {
            ip: "not-an-ip".into(),
            mail_from: "a@example.test".into(),
            helo: "h".into(),
        })
        .await
    {
        Err(ClientError::Server(e)) => assert_eq!(e.code, "invalid_ip"),
        other => panic!("{other:?}"),
    }
    let v = c
        .dmarc_evaluate(DmarcInput {
            from_domain: "sub.example.test".into(),
            dkim: vec![DkimIdentity {
                domain: "other.test".into(),
                selector: "s".into(),
                result: DkimResult::Pass,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (v.result, v.disposition),
        (DmarcResult::Fail, Disposition::Quarantine)
    );

    let cli = |args: &[&str]| {
        let out = common::run_ok(
            Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
                .args(["query", "--socket", d.socket.to_str().unwrap()])
                .args(args),
        );
        String::from_utf8_lossy(&out).into_owned()
    };
    let text = cli(&[
        "spf-check",
        "192.0.2.5",
        "user@example.test",
        "mx.example.test",
    ]);
    assert!(
        text.contains("spf mailfrom for example.test: pass"),
        "{text}"
    );
    assert!(text.contains("Received-SPF: pass"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&cli(&[
        "--json",
        "dmarc-eval",
        "sub.example.test",
        "--spf",
        "example.test:pass",
    ]))
    .unwrap();
    assert_eq!(json["dmarc_verdict"]["result"], "pass");
    // No np= in the record: a non-existent subdomain gets sp (RFC 9989 §4.7).
    let text = cli(&[
        "dmarc-eval",
        "ghost.example.test",
        "--dkim",
        "other.test:s1:pass",
    ]);
    assert!(
        text.contains("fail → quarantine") && text.contains("np=quarantine"),
        "{text}"
    );
    d.shutdown.cancel();
}
