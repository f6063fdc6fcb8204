//! The answer cache's byte bound (issue 17): filled with several times `cache.max_bytes` of
//! real parsed answers (SPF, DMARC, 2048-bit DKIM keys, parsed by `policy` as the resolver does),
//! its weighed total stays within the bound, and an answer is charged at least its buffers'
//! allocator chunks (the RSS side is `loadtest/memory`'s check).

use std::sync::Arc;
use std::time::Instant;

use mailpolicyd::model::answer::alloc_size;
use mailpolicyd::model::{Answer, Data, Kind, Rcode};
use mailpolicyd::policy;
use mailpolicyd::resolve::DomainName;
use mailpolicyd::resolve::cache::{Cache, CacheConfig, Entry, Key, Origin};

fn dkim_text() -> String {
    let key = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dkim/rsa2048.spki.b64"),
    )
    .unwrap();
    format!("v=DKIM1; k=rsa; p={}", key.trim())
}

/// An answer for `kind` at `name` holding `text`, parsed as the resolver parses it.
fn answer(kind: Kind, name: &str, text: &str) -> Answer {
    let mut a = Answer::nxdomain(kind, name, 3600);
    a.rcode = Rcode::NoError;
    a.raw = Some(text.to_owned());
    let one = [text];
    a.data = match kind {
        Kind::Spf => Data::Spf(policy::spf::pick_txt(one).map(|p| p.result).into()),
        Kind::Dmarc => Data::Dmarc(policy::dmarc::pick_txt(one).map(|p| p.result).into()),
        _ => Data::DkimKey(policy::dkim::pick_txt(one).map(|p| p.result).into()),
    };
    a
}

fn answers(i: usize, dkim: &str) -> [(Kind, String, Answer); 3] {
    let d = format!("d{i}.example");
    let spf = format!("v=spf1 ip4:192.0.2.{} include:_spf.{d} -all", i % 250);
    let dmarc = format!("v=DMARC1; p=reject; rua=mailto:dmarc@{d}");
    [
        (Kind::Spf, d.clone(), answer(Kind::Spf, &d, &spf)),
        (
            Kind::Dmarc,
            format!("_dmarc.{d}"),
            answer(Kind::Dmarc, &format!("_dmarc.{d}"), &dmarc),
        ),
        (
            Kind::DkimKey,
            format!("s1._domainkey.{d}"),
            answer(Kind::DkimKey, &format!("s1._domainkey.{d}"), dkim),
        ),
    ]
}

/// A cache bounded at `max_bytes`, its other settings the defaults.
fn cache_of(max_bytes: u64) -> (Cache, CacheConfig) {
    let cfg = CacheConfig {
        max_bytes,
        ..CacheConfig::default()
    };
    (Cache::new(cfg.clone()), cfg)
}

/// The key of `kind` at `name`.
fn key(kind: Kind, name: &str) -> Key {
    Key {
        kind,
        name: DomainName::host(name).unwrap(),
    }
}

/// Stores `answer` under `key`, fetched at `now`.
fn put(cache: &Cache, cfg: &CacheConfig, key: Key, answer: Arc<Answer>, now: Instant) {
    cache.insert(key, Arc::new(Entry::new(answer, now, Origin::Fetched, cfg)));
}

#[test]
fn a_cache_filled_past_max_bytes_keeps_its_weighed_total_within_it() {
    let max_bytes = 1 << 20;
    let (cache, cfg) = cache_of(max_bytes);
    let dkim = dkim_text();
    let now = Instant::now();
    let mut charged = 0u64;
    let mut inserted = 0u64;
    for i in 0..2_000 {
        for (kind, name, a) in answers(i, &dkim) {
            assert!(a.is_positive(), "{kind:?} {name}");
            charged += u64::from(a.weight());
            put(&cache, &cfg, key(kind, &name), Arc::new(a), now);
            inserted += 1;
        }
        if i % 100 == 99 {
            let (_, weighed) = cache.usage();
            assert!(
                weighed <= max_bytes,
                "{weighed} weighed > {max_bytes} after {inserted} inserts"
            );
        }
    }
    let (entries, weighed) = cache.usage();
    assert!(
        charged > 4 * max_bytes,
        "the fill is several times the bound: {charged}"
    );
    assert!(weighed <= max_bytes, "{weighed} > {max_bytes}");
    assert!(
        weighed > max_bytes / 2,
        "the bound is used, not emptied: {weighed}"
    );
    assert!(entries > 0 && entries < inserted, "{entries} of {inserted}");
}

#[test]
fn an_answer_is_charged_at_least_its_buffers() {
    let dkim = dkim_text();
    for (kind, name, a) in answers(7, &dkim) {
        let buffers = alloc_size(std::mem::size_of::<Answer>() + 16)
            + alloc_size(a.name.capacity())
            + a.raw.as_ref().map_or(0, |r| alloc_size(r.capacity()));
        let key_bytes = match &a.data {
            Data::DkimKey(f) => f.valid().map_or(0, |p| alloc_size(p.policy.p.len())),
            _ => 0,
        };
        let w = a.weight() as usize;
        assert!(
            w >= buffers + key_bytes,
            "{kind:?} {name}: weight {w} < buffers {}",
            buffers + key_bytes
        );
        // And not wildly more (the cap is meant to be used).
        assert!(
            w <= 3 * (buffers + key_bytes) + 512,
            "{kind:?} {name}: weight {w}"
        );
    }
}

/// The wire records a parsed answer no longer keeps are rebuilt from its selected record
/// (`model::answer::txt_wire`): byte for byte what hickory encodes for the same TXT record (the
/// form `resolve::upstream` keeps), for a short record, a 2048-bit DKIM key (two strings), one
/// of exactly 255 octets, and an empty one.
#[test]
fn a_rebuilt_txt_record_is_what_the_upstream_encoding_is() {
    use hickory_server::proto::rr::rdata::TXT;
    use hickory_server::proto::rr::{Name, RData, Record};
    use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
    use mailpolicyd::model::answer::txt_wire;

    let dkim = dkim_text();
    let long = "a".repeat(255);
    for (owner, text) in [
        ("d1.example", "v=spf1 include:_spf1.prov.example -all"),
        ("s1._domainkey.d1.example", dkim.as_str()),
        ("_dmarc.d1.example", long.as_str()),
        ("x.example", ""),
    ] {
        let chunks: Vec<&[u8]> = if text.is_empty() {
            vec![&b""[..]]
        } else {
            text.as_bytes().chunks(255).collect()
        };
        let record = Record::from_rdata(
            Name::from_ascii(format!("{owner}.")).unwrap(),
            3600,
            RData::TXT(TXT::from_bytes(chunks)),
        );
        let mut want = Vec::new();
        record.emit(&mut BinEncoder::new(&mut want)).unwrap();
        let got = txt_wire(owner, 3600, text).unwrap();
        assert_eq!((got.answers, got.authorities), (1, 0), "{owner}");
        assert_eq!(&got.bytes[..], &want[..], "{owner}: {text:.40}");
    }
    // No such owner: nothing rebuilt (the answer then keeps what the upstream gave).
    assert!(txt_wire(&format!("{}.example", "x".repeat(64)), 1, "t").is_none());
    assert!(txt_wire("a..example", 1, "t").is_none());
}

/// The cached answer's inline size (every entry pays it, whatever its record): printed, and
/// bounded so that a large policy type inlined again shows here.
#[test]
fn the_answer_struct_stays_small() {
    use mailpolicyd::model::answer::Found;
    use std::mem::size_of;
    type Dm = Found<policy::dmarc::DmarcRecord, policy::dmarc::DmarcError>;
    type Sp = Found<policy::spf::SpfRecord, policy::spf::SpfError>;
    type Dk = Found<policy::dkim::DkimKey, policy::dkim::DkimError>;
    type At = Found<policy::atps::AtpsRecord, policy::atps::AtpsError>;
    println!(
        "size_of: Answer {}, Data {}, DMARC {}, SPF {}, DKIM {}, ATPS {}, DmarcRecord {}, SpfRecord {}, DkimKey {}, DmarcError {}, SpfError {}, DkimError {}",
        size_of::<Answer>(),
        size_of::<Data>(),
        size_of::<Dm>(),
        size_of::<Sp>(),
        size_of::<Dk>(),
        size_of::<At>(),
        size_of::<policy::dmarc::DmarcRecord>(),
        size_of::<policy::spf::SpfRecord>(),
        size_of::<policy::dkim::DkimKey>(),
        size_of::<policy::dmarc::DmarcError>(),
        size_of::<policy::spf::SpfError>(),
        size_of::<policy::dkim::DkimError>(),
    );
    // 376 bytes before the parsed records and the kept records were boxed (issue 17, round
    // 2): the largest record type (DMARC's, 200 bytes) was paid by every answer.
    assert!(size_of::<Answer>() <= 184, "{}", size_of::<Answer>());
    assert!(size_of::<Data>() <= 32, "{}", size_of::<Data>());
    for found in [
        size_of::<Dm>(),
        size_of::<Sp>(),
        size_of::<Dk>(),
        size_of::<At>(),
    ] {
        assert!(found <= 16, "{found}");
    }
}

/// An answer parsed from upstream TXT records, as the resolver makes it (its records kept, so
/// the cache can hold it in compact form).
fn fetched(kind: Kind, name: &str, text: &str) -> Answer {
    use mailpolicyd::resolve::upstream::{RawAnswer, Records};
    Answer::from_raw(
        kind,
        name,
        RawAnswer {
            found_at: Some(name.to_owned()),
            negative_at: None,
            rcode: hickory_server::proto::op::ResponseCode::NoError,
            ttl: 3600,
            dnssec: mailpolicyd::model::DnssecStatus::Indeterminate,
            records: Records::Txt(vec![text.to_owned()]),
            wire: mailpolicyd::model::answer::txt_wire(name, 3600, text),
            elapsed: std::time::Duration::ZERO,
        },
    )
}

/// The cache keeps parsed answers of the compact kinds only on its hot list, whose answers
/// weigh at most its share of `max_bytes` (`hot_budget`): after a fill and after every entry
/// was asked again, the parsed answers held weigh no more than that share, the weighed total
/// (hot list included) stays within `max_bytes`, and every answer given back, rebuilt or
/// held, is the one first parsed.
#[test]
fn parsed_answers_are_held_only_within_the_hot_share() {
    use mailpolicyd::resolve::cache::hot_budget;
    use std::collections::HashMap;

    let max_bytes = 2 << 20;
    let (cache, cfg) = cache_of(max_bytes);
    let dkim = dkim_text();
    let now = Instant::now();
    let mut first: HashMap<(Kind, String), Answer> = HashMap::new();
    for i in 0..1_000 {
        for (kind, name, a) in answers(i, &dkim) {
            let a = fetched(kind, &name, a.raw.as_deref().unwrap());
            first.insert((kind, name.clone()), a.clone());
            put(&cache, &cfg, key(kind, &name), Arc::new(a), now);
        }
    }
    let held = |cache: &Cache| -> (usize, u64) {
        let parsed: Vec<u64> = cache
            .entries()
            .iter()
            .filter(|(_, e)| e.is_parsed())
            .map(|(k, e)| u64::from(cache.peek_answer(k, e).weight()))
            .collect();
        (parsed.len(), parsed.iter().sum())
    };
    for round in ["after the fill", "after every entry was asked again"] {
        let (entries, weighed) = cache.usage();
        let (parsed, parsed_bytes) = held(&cache);
        assert!(weighed <= max_bytes, "{round}: {weighed} > {max_bytes}");
        assert!(
            parsed_bytes <= hot_budget(max_bytes),
            "{round}: {parsed} parsed answers weigh {parsed_bytes} > {}",
            hot_budget(max_bytes)
        );
        assert!(
            parsed > 0 && (parsed as u64) < entries,
            "{round}: {parsed} of {entries}"
        );
        for (key, entry) in cache.entries() {
            let answer = cache.answer(&key, &entry);
            let want = &first[&(key.kind, key.name.to_string())];
            assert_eq!(*answer, *want, "{round}: {:?} {}", key.kind, key.name);
            assert_eq!(
                answer.encoded(),
                want.encoded(),
                "{:?} {}",
                key.kind,
                key.name
            );
        }
    }
}

/// The smallest bound the configuration accepts still caches: its ghost and hot shares are
/// proportional, so a 4 KiB cache holds an SPF answer and a DKIM key.
#[test]
fn a_small_cache_still_holds_its_entries() {
    use mailpolicyd::resolve::cache::State;
    let (cache, cfg) = cache_of(4096);
    let now = Instant::now();
    let dkim = dkim_text();
    for (kind, name, text) in [
        (Kind::Spf, "a.example", "v=spf1 include:_spf.a.example -all"),
        (Kind::DkimKey, "s1._domainkey.a.example", dkim.as_str()),
    ] {
        let a = Arc::new(fetched(kind, name, text));
        put(&cache, &cfg, key(kind, name), a.clone(), now);
        match cache.state(&key(kind, name), now) {
            State::Fresh { answer, .. } => assert_eq!(*answer, *a, "{name}"),
            _ => panic!("{name}: not cached in a {}-byte cache", cfg.max_bytes),
        }
    }
    assert!(cache.usage().1 <= cfg.max_bytes);
}

/// An entry stored under a key other than its answer's name is kept parsed (a compact form is
/// rebuilt with the key's name), and an entry past its TTL and stale window leaves the cache when
/// looked at.
#[test]
fn entries_answer_for_their_own_key_and_leave_when_past_serving() {
    use mailpolicyd::resolve::cache::State;
    use std::time::Duration;
    let (cache, cfg) = cache_of(1 << 20);
    let now = Instant::now();
    let spf = |name: &str| key(Kind::Spf, name);
    let other = Arc::new(fetched(Kind::Spf, "b.example", "v=spf1 -all"));
    put(&cache, &cfg, spf("a.example"), other.clone(), now);
    // Enough other answers to push it off the hot list were it there (~200 fit on it), and few
    // enough for the store (~350 KB of ~850 KB) to keep it.
    for i in 0..1_000 {
        let name = format!("n{i}.example");
        let a = Arc::new(fetched(
            Kind::Spf,
            &name,
            &format!("v=spf1 ip4:192.0.2.{} -all", i % 250),
        ));
        put(&cache, &cfg, spf(&name), a, now);
    }
    match cache.state(&spf("a.example"), now) {
        State::Fresh { entry, answer, .. } => {
            assert!(entry.is_parsed());
            assert_eq!(*answer, *other);
        }
        _ => panic!("not cached"),
    }
    let (before, _) = cache.usage();
    let past = now + cfg.positive_ttl.1 + cfg.stale_window + Duration::from_secs(1);
    assert!(matches!(
        cache.state(&spf("a.example"), past),
        State::Absent
    ));
    assert_eq!(
        cache.usage().0,
        before - 1,
        "the entry past serving left the cache"
    );
}
