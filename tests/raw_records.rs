//! Issue 14, item 2: every TXT-based policy answer (dmarc, spf, dkim_key, atps) carries `raw`,
//! the text of the record the parser selected as published (its character-strings joined),
//! over JSON lines and binary frames alike, on a miss and on a hit, and after a snapshot
//! restore. Published at a real authoritative server on loopback (`tests/dnsserver`): records
//! split into several strings (a 2048-bit DKIM key in 255-byte strings), names with several TXT
//! records where the selected one is not the first, invalid records (raw is that record), no
//! record (raw null), and two records where one is allowed (none selected: raw null).

mod common;
mod dnsserver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dnsserver::{TestDns, Zone};
use mailpolicyd::client::Client;
use mailpolicyd::model::answer::Answer;
use mailpolicyd::policy::atps::{AtpsHash, label};
use mailpolicyd::proto::{self, Op, Request};
use mailpolicyd::resolve::{Data, Found, Resolver};
use mailpolicyd::serve::{Service, SocketConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const DKIM_OTHER: &str = "this is not a key record";
const SPF_PARTS: [&str; 3] = ["v=spf1 ip4:192.0.2.0/24", " ip6:2001:db8::/32", " -all"];
const DMARC_PARTS: [&str; 2] = ["v=DMARC1; p=reject; ", "rua=mailto:d@raw.test"];
const ATPS_PARTS: [&str; 2] = ["v=ATPS1; ", "d=raw.test"];

fn dkim_parts() -> (String, Vec<String>) {
    let key = include_str!("data/dkim/rsa2048.spki.b64");
    let text = format!("v=DKIM1; k=rsa; p={key}");
    let parts = text
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    (text, parts)
}

fn atps_at(author: &str) -> String {
    format!("{}._atps", label(author, AtpsHash::Sha256, false))
}

fn zones() -> Vec<Zone> {
    let (_, dkim) = dkim_parts();
    let dkim: Vec<&str> = dkim.iter().map(String::as_str).collect();
    assert!(dkim.len() >= 2, "the key must span several strings");
    vec![
        Zone::new("test.", 300),
        Zone::new("raw.test.", 300)
            // Valid records, each behind another TXT record at the same name.
            .txt("@", 3600, &["google-site-verification=abc123"])
            .txt("@", 3600, &SPF_PARTS)
            .txt("_dmarc", 3600, &["not a dmarc record"])
            .txt("_dmarc", 3600, &DMARC_PARTS)
            .txt("s1._domainkey", 3600, &[DKIM_OTHER])
            .txt("s1._domainkey", 3600, &dkim)
            .txt(&atps_at("author.test"), 3600, &["unrelated"])
            .txt(&atps_at("author.test"), 3600, &ATPS_PARTS)
            // Invalid records: raw is the record that was rejected.
            .txt("bad", 3600, &["v=spf1 ip4:192.0.2.999", " -all"])
            .txt("_dmarc.bad", 3600, &["v=DMARC1; ", "p=bogus"])
            .txt(
                "bad._domainkey",
                3600,
                &["v=DKIM1; k=rsa; p=", "!!!not-base64!!!"],
            )
            .txt(&atps_at("bad.test"), 3600, &["v=ATPS1; d=", "bad..name"])
            // TXT, but no record of the kind.
            .txt("none", 3600, &["just some text"])
            // Two SPF records: an error about both, no record selected.
            .txt("two", 3600, &["v=spf1 -all"])
            .txt("two", 3600, &["v=spf1 +all"]),
        Zone::new("other.test.", 300).txt("@", 3600, &["nothing here"]),
    ]
}

/// One question, the JSON key of its reply, and the `raw` it must carry.
struct Case {
    what: &'static str,
    op: Op,
    want: Option<String>,
}

fn cases() -> Vec<Case> {
    let (dkim, _) = dkim_parts();
    let spf = |d: &str| Op::Spf { domain: d.into() };
    let dmarc = |d: &str| Op::Dmarc { domain: d.into() };
    let dkim_key = |s: &str, d: &str| Op::DkimKey {
        selector: s.into(),
        domain: d.into(),
    };
    let atps = |signer: &str, author: &str| Op::Atps {
        signer: signer.into(),
        author: author.into(),
        hash: AtpsHash::Sha256,
    };
    let some = |s: String| Some(s);
    vec![
        Case {
            what: "spf valid, 3 strings, second of 2 records",
            op: spf("raw.test"),
            want: some(SPF_PARTS.concat()),
        },
        Case {
            what: "dmarc valid, 2 strings, second of 2 records",
            op: dmarc("raw.test"),
            want: some(DMARC_PARTS.concat()),
        },
        Case {
            what: "dkim valid, 255-byte strings, second of 2 records",
            op: dkim_key("s1", "raw.test"),
            want: some(dkim),
        },
        Case {
            what: "atps valid, 2 strings, second of 2 records",
            op: atps("raw.test", "author.test"),
            want: some(ATPS_PARTS.concat()),
        },
        Case {
            what: "spf invalid",
            op: spf("bad.raw.test"),
            want: some("v=spf1 ip4:192.0.2.999 -all".into()),
        },
        Case {
            what: "dkim invalid",
            op: dkim_key("bad", "raw.test"),
            want: some("v=DKIM1; k=rsa; p=!!!not-base64!!!".into()),
        },
        Case {
            what: "atps invalid",
            op: atps("raw.test", "bad.test"),
            want: some("v=ATPS1; d=bad..name".into()),
        },
        Case {
            what: "spf: TXT but no SPF record",
            op: spf("none.raw.test"),
            want: None,
        },
        Case {
            what: "spf: no such name",
            op: spf("missing.raw.test"),
            want: None,
        },
        Case {
            what: "spf: two records",
            op: spf("two.raw.test"),
            want: None,
        },
        Case {
            what: "dmarc: no record anywhere",
            op: dmarc("other.test"),
            want: None,
        },
        Case {
            what: "dkim: no such key",
            op: dkim_key("missing", "raw.test"),
            want: None,
        },
        Case {
            what: "atps: no record",
            op: atps("raw.test", "nobody.test"),
            want: None,
        },
    ]
}

/// The `raw` of a decoded reply, and whether the reply was a parsing kind's answer.
fn raw_of(reply: &proto::Reply) -> Option<String> {
    match reply {
        proto::Reply::Policy(p) => p.answer.raw.clone(),
        proto::Reply::Dmarc(d) => d.record.as_ref().and_then(|r| r.answer.raw.clone()),
        other => panic!("not a policy reply: {other:?}"),
    }
}

/// The `raw` of a JSON reply line, read from the JSON itself (not through the Rust types).
fn json_raw(v: &serde_json::Value) -> serde_json::Value {
    let ok = &v["result"]["ok"];
    let answer = if ok.get("dmarc").is_some() {
        let rec = &ok["dmarc"]["record"];
        if rec.is_null() {
            return serde_json::Value::Null;
        }
        &rec["answer"]
    } else {
        &ok["policy"]["answer"]
    };
    assert!(
        answer.as_object().unwrap().contains_key("raw"),
        "no raw key: {v}"
    );
    answer["raw"].clone()
}

async fn start() -> (TestDns, Arc<Service>, common::Socket) {
    let dns = TestDns::start(zones()).await;
    let mut cfg = common::resolver_config(dns.addr, Duration::from_millis(500));
    common::no_rate_limit(&mut cfg);
    let service = Service::new(Resolver::new(cfg).unwrap());
    let sock = common::serve_socket(&service, SocketConfig::default());
    (dns, service, sock)
}

async fn json_call(s: &mut BufReader<UnixStream>, id: u64, op: Op) -> serde_json::Value {
    let mut line = Vec::new();
    proto::encode_json_line(&Request { id, op }, &mut line).unwrap();
    s.get_mut().write_all(&line).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_line(&mut text))
        .await
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["id"], id, "{text}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_is_the_selected_record_over_json_and_binary() {
    let (_dns, service, sock) = start().await;
    let client = Client::connect(&sock.path).await.unwrap();
    let (version, _) = client.hello().await.unwrap();
    assert_eq!(version, format!("{}.0", proto::PROTOCOL_MAJOR));
    assert_eq!(proto::PROTOCOL_MAJOR, 2);
    let json = UnixStream::connect(&sock.path).await.unwrap();
    let mut json = BufReader::new(json);
    let mut checked = 0;
    for (i, case) in cases().into_iter().enumerate() {
        let id = 100 + i as u64;
        // Binary first (a miss: the answer's encoding spliced behind the header), then JSON (a
        // hit), then binary again (a hit).
        let miss = client.call(case.op.clone()).await.unwrap();
        assert_eq!(raw_of(&miss), case.want, "binary, miss: {}", case.what);
        let v = json_call(&mut json, id, case.op.clone()).await;
        let want_json = case
            .want
            .clone()
            .map_or(serde_json::Value::Null, serde_json::Value::String);
        assert_eq!(json_raw(&v), want_json, "json: {}: {v}", case.what);
        if i == 0 {
            println!("spf answer over JSON lines: {v}");
        }
        let hit = client.call(case.op.clone()).await.unwrap();
        assert_eq!(raw_of(&hit), case.want, "binary, hit: {}", case.what);
        checked += 1;
    }
    println!("raw records: {checked} cases over binary (miss, hit) and JSON lines");

    // The selected records were not the first TXT record at their names, and the parser's
    // verdicts are those the cases name.
    let r = service.resolver();
    let now = Instant::now();
    let first_txt = |a: &Answer| a.txt().unwrap()[0].clone();
    let spf = r.spf("raw.test", now).await.unwrap().answer;
    assert!(matches!(&spf.data, Data::Spf(Found::Valid(_))));
    assert_ne!(Some(first_txt(&spf)), spf.raw);
    assert_eq!(spf.txt().unwrap().len(), 2);
    let key = r.dkim_key("s1", "raw.test", now).await.unwrap().answer;
    assert!(matches!(&key.data, Data::DkimKey(Found::Valid(k)) if k.policy.key_bits == Some(2048)));
    assert_eq!(first_txt(&key), DKIM_OTHER);
    let dm = r
        .lookup(mailpolicyd::model::Kind::Dmarc, "_dmarc.raw.test", now)
        .await;
    let dm = dm.unwrap().answer;
    assert!(matches!(&dm.data, Data::Dmarc(Found::Valid(_))));
    assert_ne!(Some(first_txt(&dm)), dm.raw);
    let atps = r
        .atps("raw.test", "author.test", AtpsHash::Sha256, now)
        .await
        .unwrap()
        .answer;
    assert!(matches!(&atps.data, Data::Atps(Found::Valid(_))));
    assert_ne!(Some(first_txt(&atps)), atps.raw);
    for (what, a) in [
        ("spf", r.spf("bad.raw.test", now).await.unwrap().answer),
        (
            "dkim",
            r.dkim_key("bad", "raw.test", now).await.unwrap().answer,
        ),
        (
            "atps",
            r.atps("raw.test", "bad.test", AtpsHash::Sha256, now)
                .await
                .unwrap()
                .answer,
        ),
    ] {
        let invalid = matches!(
            &a.data,
            Data::Spf(Found::Invalid(_))
                | Data::DkimKey(Found::Invalid(_))
                | Data::Atps(Found::Invalid(_))
        );
        assert!(invalid, "{what}: {:?}", a.data);
        assert!(a.raw.is_some(), "{what}");
    }
    let two = r.spf("two.raw.test", now).await.unwrap().answer;
    assert!(matches!(&two.data, Data::Spf(Found::Invalid(_))));
    assert_eq!(two.raw, None);
    let none = r.spf("none.raw.test", now).await.unwrap().answer;
    assert!(matches!(&none.data, Data::Spf(Found::Absent)));
    // Raw TXT and non-TXT kinds carry no `raw`.
    let txt = r
        .lookup(mailpolicyd::model::Kind::Txt, "raw.test", now)
        .await
        .unwrap()
        .answer;
    assert_eq!(txt.raw, None);
    assert!(matches!(&txt.data, Data::Txt(t) if t.len() == 2));

    // An invalid DMARC record: the answer at its name is the rejected record, raw its text;
    // the `dmarc` op's record (whichever name discovery settled on) carries its own text.
    let bad = r
        .lookup(mailpolicyd::model::Kind::Dmarc, "_dmarc.bad.raw.test", now)
        .await
        .unwrap()
        .answer;
    assert!(
        matches!(&bad.data, Data::Dmarc(Found::Invalid(_))),
        "{:?}",
        bad.data
    );
    assert_eq!(bad.raw.as_deref(), Some("v=DMARC1; p=bogus"));
    let v = json_call(
        &mut json,
        1,
        Op::Dmarc {
            domain: "bad.raw.test".into(),
        },
    )
    .await;
    let rec = &v["result"]["ok"]["dmarc"]["record"]["answer"];
    let want = match rec["name"].as_str() {
        Some("_dmarc.bad.raw.test") => "v=DMARC1; p=bogus".to_owned(),
        Some("_dmarc.raw.test") => DMARC_PARTS.concat(),
        other => panic!("{other:?}: {v}"),
    };
    assert_eq!(rec["raw"], want.as_str(), "{v}");
    println!(
        "dmarc op for an invalid record: {}",
        serde_json::to_string(rec).unwrap()
    );

    // A JSON client of protocol 1 is still served (it only gained a field); 3 is refused.
    let v = json_call(
        &mut json,
        2,
        Op::Hello {
            version: "1.0".into(),
        },
    )
    .await;
    assert_eq!(v["result"]["ok"]["hello"]["version"], "2.0", "{v}");
    let v = json_call(
        &mut json,
        3,
        Op::Hello {
            version: "3.0".into(),
        },
    )
    .await;
    assert_eq!(v["result"]["error"]["code"], "unsupported_version", "{v}");

    sock.shutdown.cancel();
    sock.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_survives_a_snapshot_restore() {
    let (dns, service, sock) = start().await;
    let now = Instant::now();
    let r = service.resolver();
    let (dkim, _) = dkim_parts();
    assert_eq!(
        r.dkim_key("s1", "raw.test", now).await.unwrap().answer.raw,
        Some(dkim.clone())
    );
    assert_eq!(
        r.spf("raw.test", now).await.unwrap().answer.raw.as_deref(),
        Some(SPF_PARTS.concat().as_str())
    );
    let path = sock.dir.path().join("cache.snap");
    assert!(r.save_snapshot(&path).await.unwrap() >= 2);

    let mut cfg = common::resolver_config(dns.addr, Duration::from_millis(500));
    common::no_rate_limit(&mut cfg);
    let restored = Resolver::new(cfg).unwrap();
    assert!(restored.load_snapshot(&path).await.unwrap() >= 2);
    let asked = dns.log.all().len();
    let key = restored
        .dkim_key("s1", "raw.test", Instant::now())
        .await
        .unwrap();
    assert_eq!(key.answer.raw, Some(dkim));
    let spf = restored.spf("raw.test", Instant::now()).await.unwrap();
    assert_eq!(spf.answer.raw.as_deref(), Some(SPF_PARTS.concat().as_str()));
    assert_eq!(dns.log.all().len(), asked, "answered from the snapshot");

    sock.shutdown.cancel();
    sock.task.await.unwrap();
}
