//! Issue 13, part F: the binary policy-reply splice (`proto::encode_policy_frame`) writes
//! exactly the bytes serde (postcard) writes for the same response, for every policy kind the
//! `spf`, `dkim_key`, `atps`, `tlsa` and `dmarc` ops answer with, every source, and ids and TTLs
//! around the varint boundaries; and the frame decodes back to the same response.

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tlsa;
use mailpolicyd::model::{Answer, DnssecStatus, Kind, PolicyAnswer, Source};
use mailpolicyd::proto::{Outcome, Reply, Response, encode_frame, encode_policy_frame};
use mailpolicyd::resolve::upstream::{RawAnswer, Records};

fn raw(records: Records, rcode: ResponseCode, dnssec: DnssecStatus) -> RawAnswer {
    RawAnswer {
        found_at: Some("example.com".into()),
        negative_at: None,
        rcode,
        ttl: 3600,
        dnssec,
        records,
        wire: None,
        elapsed: Duration::ZERO,
    }
}

fn txt(t: &str) -> Records {
    Records::Txt(vec![t.to_owned(), "unrelated text".to_owned()])
}

/// One answer of each policy kind: valid, invalid and absent records, negative answers.
fn answers() -> Vec<Answer> {
    let ok = ResponseCode::NoError;
    let ins = DnssecStatus::Insecure;
    let tlsa = |usage| {
        tlsa::TLSA::new(
            usage,
            tlsa::Selector::Spki,
            tlsa::Matching::Sha256,
            vec![0xab; 32],
        )
    };
    let txt_answers = [
        (
            Kind::Spf,
            "example.com",
            "v=spf1 include:_spf.example.net ~all",
        ),
        (Kind::Spf, "example.com", "v=spf1 bogus:x"),
        (
            Kind::Dmarc,
            "_dmarc.example.com",
            "v=DMARC1; p=reject; rua=mailto:d@example.com",
        ),
        (Kind::Dmarc, "_dmarc.example.com", "v=DMARC1; p=rej"),
        (
            Kind::DkimKey,
            "s1._domainkey.example.com",
            "v=DKIM1; k=rsa; p=",
        ),
        (Kind::Atps, "x._atps.example.com", "v=ATPS1;"),
        (Kind::Atps, "y._atps.example.com", "not atps"),
    ];
    let mut all: Vec<Answer> = txt_answers
        .into_iter()
        .map(|(kind, name, record)| Answer::from_raw(kind, name, raw(txt(record), ok, ins)))
        .collect();
    all.extend([
        Answer::from_raw(
            Kind::Tlsa,
            "_25._tcp.mx.example.com",
            raw(
                Records::Tlsa(vec![
                    tlsa(tlsa::CertUsage::DaneEe),
                    tlsa(tlsa::CertUsage::DaneTa),
                ]),
                ok,
                DnssecStatus::Secure,
            ),
        ),
        Answer::from_raw(
            Kind::Spf,
            "nx.example.com",
            raw(Records::None, ResponseCode::NXDomain, ins),
        ),
        Answer::nxdomain(Kind::Atps, "z._atps.example.com", 30),
        Answer::nxdomain(Kind::Tlsa, "_25._tcp.nx.example.com", 30),
    ]);
    all
}

#[test]
fn policy_frame_splice_equals_serde_for_every_policy_kind() {
    // A miss first: its answer has no kept encoding yet and is serialized in place (issue 17);
    // the hit after it keeps the encoding, which the other sources then splice.
    let sources = [
        Source::Miss,
        Source::Hit,
        Source::Stale,
        Source::Prefetched,
        Source::Wildcard,
        Source::RateLimitedFallback,
    ];
    let mut kinds = Vec::new();
    let all = answers();
    // Both forms of `raw` (the selected record's text, and none) go through the splice.
    assert!(all.iter().any(|a| a.raw.is_some()));
    assert!(all.iter().any(|a| a.raw.is_none()));
    assert!(
        all.iter()
            .any(|a| a.raw.as_deref() == Some("v=DMARC1; p=reject; rua=mailto:d@example.com"))
    );
    for answer in all {
        kinds.push(answer.kind);
        let answer = Arc::new(answer);
        for source in sources {
            for (id, ttl) in [(0, 0), (1, 127), (300, 128), (u64::MAX, u32::MAX)] {
                let resp = Response {
                    id,
                    result: Outcome::Ok(Reply::Policy(PolicyAnswer {
                        source,
                        ttl,
                        answer: answer.clone(),
                    })),
                };
                let (mut want, mut got) = (Vec::new(), Vec::new());
                encode_frame(&resp, &mut want).unwrap();
                encode_policy_frame(id, source, ttl, &answer, &mut got);
                assert_eq!(got, want, "{:?} {source:?} id {id} ttl {ttl}", answer.kind);
                let back: Response = postcard::from_bytes(&got[4..]).unwrap();
                assert_eq!(back, resp);
            }
        }
    }
    for k in [
        Kind::Spf,
        Kind::Dmarc,
        Kind::DkimKey,
        Kind::Atps,
        Kind::Tlsa,
    ] {
        assert!(kinds.contains(&k), "{k:?} not covered");
    }
}

#[test]
fn policy_frame_splice_appends_after_what_the_buffer_holds() {
    let answer = Answer::nxdomain(Kind::Spf, "a.example", 30);
    let mut got = b"earlier".to_vec();
    encode_policy_frame(9, Source::Hit, 1, &answer, &mut got);
    let mut want = b"earlier".to_vec();
    let resp = Response {
        id: 9,
        result: Outcome::Ok(Reply::Policy(PolicyAnswer {
            source: Source::Hit,
            ttl: 1,
            answer: Arc::new(answer),
        })),
    };
    encode_frame(&resp, &mut want).unwrap();
    assert_eq!(got, want);
}

/// `proto::DmarcAnswer` is now the resolver's discovery result itself (`model::DmarcDiscovery`):
/// it keeps the wire fields of the old mirror struct, by name (JSON) and in order (postcard is
/// positional, and serde writes both framings in declaration order), and the resolver's own
/// `rate_limited_fallback` flag is not sent.
#[test]
fn dmarc_answer_keeps_its_wire_fields_and_order() {
    use mailpolicyd::model::dmarc::{FoundAt, PolicyTag};
    use mailpolicyd::policy::dmarc::Disposition;
    use mailpolicyd::proto::DmarcAnswer;
    let answer = Arc::new(Answer::nxdomain(Kind::Dmarc, "_dmarc.example.com", 30));
    let d = DmarcAnswer {
        domain: "mail.example.com".into(),
        found_at: Some("example.com".into()),
        reason: Some(FoundAt::OrganizationalDomain),
        org_domain: Some("example.com".into()),
        applied: Some((PolicyTag::Sp, Disposition::Quarantine)),
        domain_exists: Some(true),
        source: Source::Miss,
        record: Some(PolicyAnswer {
            source: Source::Hit,
            ttl: 30,
            answer,
        }),
        queries: vec![("_dmarc.mail.example.com".into(), Source::Miss)],
        notes: vec!["a note".into()],
        rate_limited_fallback: true,
    };
    let json = serde_json::to_string(&d).unwrap();
    let keys: Vec<String> = serde_json::from_str::<serde_json::Value>(&json)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut order: Vec<(usize, &str)> = keys
        .iter()
        .map(|k| (json.find(&format!("\"{k}\":")).unwrap(), k.as_str()))
        .collect();
    order.sort();
    let order: Vec<&str> = order.into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        order,
        [
            "domain",
            "found_at",
            "reason",
            "org_domain",
            "applied",
            "domain_exists",
            "source",
            "record",
            "queries",
            "notes"
        ]
    );
    // Both framings decode to the same value, without the resolver's flag.
    let sent = DmarcAnswer {
        rate_limited_fallback: false,
        ..d.clone()
    };
    let back: DmarcAnswer = serde_json::from_str(&json).unwrap();
    assert_eq!(back, sent);
    let bytes = postcard::to_allocvec(&d).unwrap();
    assert_eq!(postcard::from_bytes::<DmarcAnswer>(&bytes).unwrap(), sent);
}
