//! Issue 12, smaller safety items, each against the real thing: the in-process loopback
//! authority (`tests/dnsserver/`), the real socket server, the real DNS front-end and the real
//! binary. Received-SPF header injection (item 6), malformed DKIM key records (item 8), the DNS
//! front-end's UDP size cap and classes (item 15), DMARC report-URI amplification (item 18) and
//! the CLI's human output (item 19).

mod common;
mod dnsserver;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::metric;
use dnsserver::{TestDns, Zone};
use mailpolicyd::client::Client;
use mailpolicyd::resolve::{Data, Found, Resolver, ResolverConfig};
use mailpolicyd::serve::{Service, SocketConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn resolver(zones: Vec<Zone>) -> (TestDns, Resolver) {
    let dns = TestDns::start(zones).await;
    let mut cfg = ResolverConfig::default();
    cfg.upstream.servers = vec![dns.addr];
    common::no_rate_limit(&mut cfg);
    (dns, Resolver::new(cfg).unwrap())
}

/// A record's text as TXT character-strings of at most 255 bytes.
fn chunks(t: &str) -> Vec<String> {
    t.as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The socket server in process over a resolver whose upstream is the loopback authority.
struct Daemon {
    socket: PathBuf,
    dns: TestDns,
    service: Arc<Service>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn daemon(zones: Vec<Zone>) -> Daemon {
    let dns = TestDns::start(zones).await;
    let mut cfg = common::resolver_config(dns.addr, Duration::from_millis(500));
    common::no_rate_limit(&mut cfg);
    let service = Service::new(Resolver::new(cfg).unwrap());
    let sock = common::serve_socket(&service, SocketConfig::default());
    Daemon {
        socket: sock.path,
        dns,
        service,
        shutdown: sock.shutdown,
        _dir: sock.dir,
    }
}

/// One JSON-line request on a fresh connection; the reply as JSON.
async fn json_request(socket: &PathBuf, line: &str) -> serde_json::Value {
    let s = tokio::net::UnixStream::connect(socket).await.unwrap();
    let mut s = tokio::io::BufReader::new(s);
    s.get_mut().write_all(line.as_bytes()).await.unwrap();
    s.get_mut().write_all(b"\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut reply))
        .await
        .expect("a reply within 5 s")
        .unwrap();
    serde_json::from_str(&reply).unwrap()
}

/// Every `"code"` string anywhere in a JSON value.
fn codes(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("code", serde_json::Value::String(c)) => out.push(c.clone()),
                    _ => codes(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| codes(v, out)),
        _ => {}
    }
}

/// A `Received-SPF` field body read as RFC 7208 §9.1 over RFC 5322 would: a result word, one
/// comment (nesting and quoted pairs honoured), then `key=value` pairs separated by `;`, each value
/// a dot-atom or a quoted-string. Returns the pairs (quoted values unescaped); panics on
/// anything else.
fn parse_received_spf(v: &str) -> Vec<(String, String)> {
    assert!(
        v.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
        "only printable ASCII and spaces in a header field body: {v:?}"
    );
    let b = v.as_bytes();
    let mut i = b.iter().position(|&c| c == b' ').expect("a result word");
    assert!(b[..i].iter().all(u8::is_ascii_alphabetic));
    while b[i] == b' ' {
        i += 1;
    }
    assert_eq!(b[i], b'(', "a comment after the result: {v}");
    let mut depth = 0;
    loop {
        match b[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    i += 1;
                    break;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let atext = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&c);
    let mut pairs = Vec::new();
    loop {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let k0 = i;
        while b[i] != b'=' {
            assert!(
                b[i].is_ascii_alphanumeric() || b[i] == b'-',
                "key byte in {v}"
            );
            i += 1;
        }
        let key = v[k0..i].to_owned();
        i += 1;
        let mut value = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            loop {
                match b[i] {
                    b'"' => break,
                    b'\\' => {
                        value.push(b[i + 1] as char);
                        i += 2;
                    }
                    c => {
                        value.push(c as char);
                        i += 1;
                    }
                }
            }
            i += 1;
        } else {
            let v0 = i;
            while i < b.len() && atext(b[i]) {
                i += 1;
            }
            value = v[v0..i].to_owned();
            assert!(!value.is_empty(), "a bare value is a dot-atom: {v}");
        }
        pairs.push((key, value));
        if i == b.len() {
            break;
        }
        assert_eq!(b[i], b';', "pairs are separated by ';': {v}");
        i += 1;
    }
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_spf_input_never_adds_a_field() {
    let zone = Zone::new("spf.test.", 300).txt("@", 3600, &["v=spf1 ip4:192.0.2.0/24 -all"]);
    let (_dns, r) = resolver(vec![zone]).await;
    let now = Instant::now();
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    let attacks: &[(&str, &str)] = &[
        ("user@spf.test", "x; client-ip=192.0.2.1"),
        ("user@spf.test", "x\r\nX-Injected: yes"),
        ("us\"er\r\nX-Injected: 1@spf.test", "mx.spf.test"),
        ("a\\\"; client-ip=192.0.2.1; x=\"@spf.test", "mx"),
        ("", "h\u{e9}lo\tx"),
        ("user@x); client-ip=192.0.2.1 (", "mx"),
        ("user@x\\); client-ip=192.0.2.1; y=(", "mx"),
        ("user@spf.test", ""),
    ];
    for (mail_from, helo) in attacks {
        let c = r.spf_check(ip, mail_from, helo, now).await;
        let pairs = parse_received_spf(&c.received_spf);
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            &keys[..4],
            ["client-ip", "envelope-from", "helo", "identity"],
            "{mail_from:?} {helo:?}: {}",
            c.received_spf
        );
        assert!(
            keys[4..]
                .iter()
                .all(|k| ["mechanism", "problem"].contains(k)),
            "{keys:?}"
        );
        assert_eq!(pairs[0].1, "203.0.113.7", "{}", c.received_spf);
        assert_eq!(
            keys.iter().filter(|k| **k == "client-ip").count(),
            1,
            "{}",
            c.received_spf
        );
        // Printable input comes back exactly, inside its own value.
        if helo.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            assert_eq!(pairs[2].1, *helo, "{}", c.received_spf);
        }
    }
    // A plain check keeps its plain form: bare dot-atoms, quoted otherwise.
    let ok = r
        .spf_check(
            "192.0.2.9".parse().unwrap(),
            "user@spf.test",
            "mx.spf.test",
            now,
        )
        .await;
    assert_eq!(
        ok.received_spf,
        "pass (mailpolicyd: domain of spf.test designates 192.0.2.9 as permitted sender) \
         client-ip=192.0.2.9; envelope-from=\"user@spf.test\"; helo=mx.spf.test; \
         identity=mailfrom; mechanism=\"ip4:192.0.2.0/24\""
    );
    // An IPv6 client is not a dot-atom (':'): quoted.
    let v6 = r
        .spf_check("2001:db8::1".parse().unwrap(), "user@spf.test", "mx", now)
        .await;
    assert!(
        v6.received_spf.contains("client-ip=\"2001:db8::1\";"),
        "{}",
        v6.received_spf
    );
    parse_received_spf(&v6.received_spf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_dkim_key_is_answered_invalid_not_absent() {
    let key = include_str!("data/dkim/rsa2048.spki.b64").trim();
    let bare = chunks(key);
    let good = chunks(&format!("v=DKIM1; k=rsa; p={key}"));
    let zone = Zone::new("keys.test.", 300)
        // Bare base64, no p=: the operator's case.
        .txt("bare._domainkey", 3600, &refs(&bare))
        // A version that is not DKIM1.
        .txt("v2._domainkey", 3600, &["v=DKIM2; p=AAAA"])
        // A valid key next to a stray TXT: the key is used, the stray one named.
        .txt("mixed._domainkey", 3600, &refs(&good))
        .txt("mixed._domainkey", 3600, &["google-site-verification=abc"])
        .txt("good._domainkey", 3600, &refs(&good));
    let d = daemon(vec![zone]).await;
    let c = Client::connect(&d.socket).await.unwrap();

    let bare = c.dkim_key("bare", "keys.test").await.unwrap();
    match &bare.answer.data {
        Data::DkimKey(Found::Invalid(r)) => {
            assert_eq!(r.error, mailpolicyd::policy::dkim::DkimError::KeyMissing);
            assert!(r.diagnostics.has("dkim.p.missing"), "{:?}", r.diagnostics);
        }
        other => panic!("bare base64 at a key's name must be invalid, got {other:?}"),
    }
    // The same over JSON lines, as a filter written in another language sees it.
    let json = json_request(
        &d.socket,
        r#"{"id": 1, "op": {"dkim_key": {"selector": "bare", "domain": "keys.test"}}}"#,
    )
    .await;
    let text = json.to_string();
    assert!(text.contains("\"invalid\""), "{text}");
    assert!(!text.contains("\"absent\""), "{text}");
    let mut found = Vec::new();
    codes(&json, &mut found);
    assert!(found.iter().any(|c| c == "dkim.p.missing"), "{text}");

    let v2 = c.dkim_key("v2", "keys.test").await.unwrap();
    assert!(
        matches!(&v2.answer.data, Data::DkimKey(Found::Invalid(r)) if r.diagnostics.has("dkim.version.invalid")),
        "{:?}",
        v2.answer.data
    );
    let mixed = c.dkim_key("mixed", "keys.test").await.unwrap();
    match &mixed.answer.data {
        Data::DkimKey(Found::Valid(k)) => {
            assert_eq!(k.policy.key_bits, Some(2048));
            assert!(k.diagnostics.has("dkim.record.ignored"));
        }
        other => panic!("{other:?}"),
    }
    let good = c.dkim_key("good", "keys.test").await.unwrap();
    assert!(
        matches!(&good.answer.data, Data::DkimKey(Found::Valid(k)) if k.diagnostics.as_slice().is_empty()),
        "{:?}",
        good.answer.data
    );
    // No record at all is still "no key" (NXDOMAIN), not invalid.
    let none = c.dkim_key("none", "keys.test").await.unwrap();
    assert!(
        matches!(none.answer.data, Data::None),
        "{:?}",
        none.answer.data
    );
    assert_eq!(d.dns.log.count("bare._domainkey.keys.test"), 1);
    let _ = &d.service;
}

/// A TXT question as a DNS message: `payload` is the EDNS size offered (`None`: no EDNS).
fn txt_query(
    id: u16,
    name: &str,
    class: hickory_server::proto::rr::DNSClass,
    payload: Option<u16>,
) -> Vec<u8> {
    use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_server::proto::rr::{Name, RecordType};
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let mut q = Query::query(Name::from_ascii(name).unwrap(), RecordType::TXT);
    q.query_class = class;
    m.add_query(q);
    if let Some(p) = payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// One UDP exchange; the raw reply.
async fn udp_raw(addr: std::net::SocketAddr, query: &[u8]) -> Vec<u8> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(query, addr).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("a UDP answer within 5 s")
        .unwrap();
    buf.truncate(n);
    buf
}

/// One TCP exchange (two-byte length prefix, RFC 1035 §4.2.2); the raw reply.
async fn tcp_raw(addr: std::net::SocketAddr, query: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut framed = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    s.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
        .await
        .expect("a TCP answer within 5 s")
        .unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.unwrap();
    buf
}

fn decode(b: &[u8]) -> hickory_server::proto::op::Message {
    hickory_server::proto::op::Message::from_vec(b).unwrap()
}

fn txt_len(m: &hickory_server::proto::op::Message) -> usize {
    use hickory_server::proto::rr::RData;
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::TXT(t) => t.txt_data.iter().map(|s| s.len()).sum::<usize>(),
            other => panic!("{other:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_udp_answers_are_capped_at_1232_and_other_classes_refused() {
    use hickory_server::proto::op::ResponseCode;
    use hickory_server::proto::rr::DNSClass;
    // 14 strings of 255 bytes: a 3,570-byte record, an answer of about 3,700 bytes.
    let big: Vec<String> = (0..14)
        .map(|i| char::from(b'a' + i).to_string().repeat(255))
        .collect();
    // About 900 bytes: fits the cap.
    let medium: Vec<String> = (0..3).map(|_| "m".repeat(255)).collect();
    let zone = Zone::new("size.test.", 300)
        .txt("big", 3600, &refs(&big))
        .txt("medium", 3600, &refs(&medium))
        .txt("version", 3600, &["IN data, not the server's version"]);
    let d = daemon(vec![zone]).await;
    let shutdown = CancellationToken::new();
    let addr = common::serve_dns_front_end(&d.service, &shutdown).await;

    // A client offering 4096 gets at most the 1232 we advertise: TC set, for a retry over TCP.
    // Asked twice, so the second ask goes wherever a kept answer would be served from.
    for id in [1, 2] {
        let raw = udp_raw(
            addr,
            &txt_query(id, "big.size.test.", DNSClass::IN, Some(4096)),
        )
        .await;
        assert!(raw.len() <= 1232, "{} bytes over UDP", raw.len());
        let m = decode(&raw);
        assert!(m.metadata.truncation, "TC set beyond 1232");
        assert_eq!(m.metadata.id, id);
        assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    }
    // Over TCP the whole answer.
    let tcp = decode(
        &tcp_raw(
            addr,
            &txt_query(3, "big.size.test.", DNSClass::IN, Some(4096)),
        )
        .await,
    );
    assert!(!tcp.metadata.truncation);
    assert_eq!(txt_len(&tcp), 14 * 255);
    // An answer under the cap comes whole, and the second time from the fast path, still whole.
    let wire = "mailpolicyd_dns_answers_total{path=\"wire\"}";
    for id in [4, 5] {
        let raw = udp_raw(
            addr,
            &txt_query(id, "medium.size.test.", DNSClass::IN, Some(4096)),
        )
        .await;
        assert!(raw.len() <= 1232);
        let m = decode(&raw);
        assert!(!m.metadata.truncation);
        assert_eq!(txt_len(&m), 3 * 255);
    }
    assert_eq!(
        metric(&d.service, wire),
        1,
        "the second medium answer was a wire hit"
    );
    // Without EDNS: 512.
    let plain = udp_raw(addr, &txt_query(6, "medium.size.test.", DNSClass::IN, None)).await;
    assert!(plain.len() <= 512 && decode(&plain).metadata.truncation);

    // dig, when installed: +bufsize=4096 over UDP is truncated (dig says so and retries TCP
    // unless told not to).
    match std::process::Command::new("dig")
        .args([
            "+bufsize=4096",
            "+ignore",
            "+noall",
            "+comments",
            "-p",
            &addr.port().to_string(),
            "@127.0.0.1",
            "TXT",
            "big.size.test",
        ])
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(" tc"), "dig shows the TC flag: {text}");
        }
        Err(_) => assert!(
            std::env::var_os("MAILPOLICYD_REQUIRE_TOOLS").is_none(),
            "dig is required here"
        ),
    }

    // Another class is refused, over UDP and TCP, even for a name with IN data, and nothing
    // is asked upstream for it.
    let before = d.dns.log.count("version.size.test");
    for class in [DNSClass::CH, DNSClass::HS, DNSClass::ANY] {
        let u =
            decode(&udp_raw(addr, &txt_query(7, "version.size.test.", class, Some(1232))).await);
        assert_eq!(u.metadata.response_code, ResponseCode::Refused, "{class:?}");
        assert!(u.answers.is_empty());
        let t = decode(&tcp_raw(addr, &txt_query(8, "version.size.test.", class, None)).await);
        assert_eq!(
            t.metadata.response_code,
            ResponseCode::Refused,
            "{class:?} over TCP"
        );
        assert!(t.answers.is_empty());
    }
    let bind = decode(&udp_raw(addr, &txt_query(9, "version.bind.", DNSClass::CH, None)).await);
    assert_eq!(bind.metadata.response_code, ResponseCode::Refused);
    assert_eq!(d.dns.log.count("version.size.test"), before);
    assert_eq!(d.dns.log.count("version.bind"), 0);
    // IN still answered.
    let inn = decode(
        &udp_raw(
            addr,
            &txt_query(10, "version.size.test.", DNSClass::IN, None),
        )
        .await,
    );
    assert_eq!(inn.metadata.response_code, ResponseCode::NoError);
    assert_eq!(inn.answers.len(), 1);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_with_many_report_uris_is_flagged_and_still_applies() {
    let uris = |n: usize| {
        (0..n)
            .map(|i| format!("mailto:dmarc@r{i}.example"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let many = format!("v=DMARC1; p=reject; rua={}; ruf={}", uris(30), uris(2));
    let few = format!("v=DMARC1; p=reject; rua={}", uris(5));
    let many = chunks(&many);
    let zone = Zone::new("amp.test.", 300)
        .txt("_dmarc", 3600, &refs(&many))
        .txt("_dmarc.few", 3600, &[&few]);
    let d = daemon(vec![Zone::new("test.", 300), zone]).await;
    let c = Client::connect(&d.socket).await.unwrap();
    let a = c.dmarc("amp.test").await.unwrap();
    assert_eq!(
        a.applied,
        Some((
            mailpolicyd::resolve::discover::PolicyTag::P,
            mailpolicyd::policy::dmarc::Disposition::Reject
        )),
        "the record stays valid"
    );
    match &a.record.as_ref().unwrap().answer.data {
        Data::Dmarc(Found::Valid(r)) => {
            assert_eq!(r.policy.rua.len(), 30);
            let d = r
                .diagnostics
                .as_slice()
                .iter()
                .find(|d| d.code == "dmarc.uri.too_many_uris")
                .expect("a too_many_uris diagnostic");
            assert_eq!(d.severity, mailpolicyd::policy::Severity::Warning);
            assert!(d.message.contains("rua"), "{}", d.message);
        }
        other => panic!("{other:?}"),
    }
    // Over JSON lines the code is there for any filter to read.
    let json = json_request(
        &d.socket,
        r#"{"id": 1, "op": {"dmarc": {"domain": "amp.test"}}}"#,
    )
    .await;
    let mut found = Vec::new();
    codes(&json, &mut found);
    assert!(
        found.iter().any(|c| c == "dmarc.uri.too_many_uris"),
        "{json}"
    );
    // Five is not flagged.
    let few = c.dmarc("few.amp.test").await.unwrap();
    match &few.record.as_ref().unwrap().answer.data {
        Data::Dmarc(Found::Valid(r)) => {
            assert!(!r.diagnostics.has("dmarc.uri.too_many_uris"))
        }
        other => panic!("{other:?}"),
    }
}

/// Runs `mailpolicyd query --socket SOCKET ARGS...`; its stdout.
async fn cli_query(socket: &std::path::Path, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mailpolicyd"));
    cmd.arg("query").arg("--socket").arg(socket).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_human_output_speaks_words_not_rust() {
    let key = include_str!("data/dkim/rsa2048.spki.b64").trim();
    let key = chunks(&format!("v=DMARC1; k=rsa; p={key}").replace("v=DMARC1", "v=DKIM1"));
    let zone = Zone::new("org.test.", 300)
        .txt(
            "_dmarc",
            3600,
            &["v=DMARC1; p=reject; sp=none; np=quarantine"],
        )
        .txt("@", 3600, &["v=spf1 ip4:192.0.2.0/24 -all"])
        .txt("s1._domainkey", 3600, &refs(&key))
        .record(
            "mail",
            3600,
            hickory_server::proto::rr::RData::A(hickory_server::proto::rr::rdata::A(
                "192.0.2.1".parse().unwrap(),
            )),
        );
    let d = daemon(vec![Zone::new("test.", 300), zone]).await;
    // Rust's names for our types, as `{:?}` would print them.
    let internals = [
        "Some(",
        "None",
        "NoError",
        "NxDomain",
        "OrganizationalDomain",
        "AuthorDomain",
        "Np ",
        "Sp ",
        "Hit",
        "Miss",
        "Indeterminate",
        "Insecure",
    ];
    let clean = |out: &str| {
        for w in internals {
            assert!(!out.contains(w), "{w:?} in the human output:\n{out}");
        }
    };

    // A non-existent subdomain: the org's np applies.
    let np = cli_query(&d.socket, &["dmarc", "nothere.org.test"]).await;
    clean(&np);
    assert!(np.contains("(organizational domain)"), "{np}");
    assert!(np.contains("applies: np = quarantine"), "{np}");
    assert!(np.contains("source miss"), "{np}");
    // An existing one: sp.
    let sp = cli_query(&d.socket, &["dmarc", "mail.org.test"]).await;
    clean(&sp);
    assert!(sp.contains("applies: sp = none"), "{sp}");
    // The org itself, asked twice: its own record, then from the cache.
    cli_query(&d.socket, &["dmarc", "org.test"]).await;
    let own = cli_query(&d.socket, &["dmarc", "org.test"]).await;
    clean(&own);
    assert!(own.contains("(author domain)"), "{own}");
    assert!(own.contains("applies: p = reject"), "{own}");
    assert!(own.contains("source hit"), "{own}");

    for args in [
        &["spf", "org.test"][..],
        &["dkim", "s1", "org.test"],
        &["spf", "nothere.org.test"],
    ] {
        cli_query(&d.socket, args).await;
        let out = cli_query(&d.socket, args).await;
        clean(&out);
        assert!(out.contains("source hit"), "{out}");
        assert!(
            out.contains("dnssec indeterminate") || out.contains("dnssec insecure"),
            "{out}"
        );
        if args[1] == "nothere.org.test" {
            assert!(out.contains("rcode no such domain (NXDOMAIN)"), "{out}");
        } else {
            assert!(out.contains("rcode no error"), "{out}");
        }
    }
    let verdict = cli_query(
        &d.socket,
        &[
            "dmarc-eval",
            "nothere.org.test",
            "--spf",
            "nothere.org.test:fail",
        ],
    )
    .await;
    clean(&verdict);
    assert!(
        verdict.contains("(organizational domain), tag np"),
        "{verdict}"
    );

    // --json keeps the machine names.
    let json = cli_query(&d.socket, &["--json", "dmarc", "nothere.org.test"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["dmarc"]["reason"], "organizational_domain", "{json}");
    assert_eq!(v["dmarc"]["applied"][0], "np", "{json}");
    assert_eq!(v["dmarc"]["source"], "hit", "{json}");
}
