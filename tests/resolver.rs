//! The resolver core against a real authoritative server on loopback (hickory-server, in
//! process), counting the queries that server saw: caching, coalescing, TTLs, prefetch,
//! serve-stale, DMARC discovery and its collapse, the RFC 9989 tree walk, abuse controls,
//! truncation and DNSSEC.

mod common;
mod dnsserver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dnsserver::{TestDns, Zone};
use mailpolicyd::policy::dmarc::Disposition;
use mailpolicyd::resolve::Found;
use mailpolicyd::resolve::discover::{DmarcDiscovery, FoundAt, PolicyTag};
use mailpolicyd::resolve::{
    Data, DiscoveryMode, Kind, Rcode, ResolveError, Resolver, ResolverConfig, Source,
};

fn config(dns: &TestDns) -> ResolverConfig {
    let mut cfg = common::resolver_config(dns.addr, Duration::from_millis(500));
    cfg.upstream.attempts = 1;
    cfg
}

fn resolver(dns: &TestDns) -> Resolver {
    Resolver::new(config(dns)).unwrap()
}

/// A resolver of `dns` with [`config`] changed by `edit`.
fn resolver_with(dns: &TestDns, edit: impl FnOnce(&mut ResolverConfig)) -> Resolver {
    let mut cfg = config(dns);
    edit(&mut cfg);
    Resolver::new(cfg).unwrap()
}

/// Where the SPF answer for `name` at `now` came from.
async fn spf_source(r: &Resolver, name: &str, now: Instant) -> Source {
    r.spf(name, now).await.unwrap().source
}

/// A DNS server with the zone `org` (e.g. `example.com.`), holding a TXT record (TTL 3600)
/// for each `"name text"` of `records`, and its parent zone (`com.`) without records.
async fn org_under(org: &str, records: &[&str]) -> TestDns {
    let parent = org.split_once('.').unwrap().1;
    let zone = records.iter().fold(Zone::new(org, 300), |z, record| {
        let (name, text) = record.split_once(' ').unwrap();
        z.txt(name, 3600, &[text])
    });
    TestDns::start(vec![Zone::new(parent, 300), zone]).await
}

/// DMARC discovery for `author` by a fresh resolver, against [`org_under`] the author's last
/// two labels with `records`; the server too, for its query log.
async fn walk(author: &str, records: &[&str]) -> (TestDns, DmarcDiscovery) {
    let labels: Vec<&str> = author.rsplitn(3, '.').collect();
    let dns = org_under(&format!("{}.{}.", labels[1], labels[0]), records).await;
    let d = resolver(&dns).dmarc(author, Instant::now()).await.unwrap();
    (dns, d)
}

/// The organizational domain of `name` by the RFC 9989 tree walk.
async fn org_domain(r: &Resolver, name: &str, now: Instant) -> String {
    r.org_domain_treewalk(name, now).await.unwrap()
}

/// [`org_domain`] of `name`, and the DMARC queries the server saw for it (its log cleared
/// first).
async fn walk_queries(
    r: &Resolver,
    dns: &TestDns,
    name: &str,
    now: Instant,
) -> (String, Vec<String>) {
    dns.log.clear();
    let org = org_domain(r, name, now).await;
    (org, dmarc_queries(dns))
}

/// A DNS server whose only record is `example.test`'s `v=spf1 -all`, with a TTL of `ttl`.
async fn spf_at_apex(ttl: u32) -> TestDns {
    TestDns::one_txt("example.test.", "@", ttl, "v=spf1 -all").await
}

/// [`spf_at_apex`] and a resolver asking it.
async fn apex_and_resolver(ttl: u32) -> (TestDns, Resolver) {
    let dns = spf_at_apex(ttl).await;
    let r = resolver(&dns);
    (dns, r)
}

/// Asserts that `example.test`'s SPF record at `at` comes from the cache, the server having
/// been asked once.
async fn assert_hit_after_one_query(r: &Resolver, dns: &TestDns, at: Instant) {
    assert_eq!(spf_source(r, "example.test", at).await, Source::Hit);
    assert_eq!(dns.log.count("example.test"), 1);
}

/// `example.test`'s SPF answer at `at`.
async fn apex_spf(r: &Resolver, at: Instant) -> mailpolicyd::resolve::Lookup {
    r.spf("example.test", at).await.unwrap()
}

fn spf_text(l: &mailpolicyd::resolve::Lookup) -> String {
    match &l.answer.data {
        Data::Spf(Found::Valid(p)) => p.policy.to_string(),
        other => panic!("not an SPF record: {other:?}"),
    }
}

#[tokio::test]
async fn repeated_question_makes_one_query() {
    let (dns, r) = apex_and_resolver(3600).await;
    let now = Instant::now();
    let first = r.spf("example.test", now).await.unwrap();
    assert_eq!(first.source, Source::Miss);
    for _ in 0..10 {
        let again = r.spf("EXAMPLE.test.", now).await.unwrap();
        assert_eq!(again.source, Source::Hit);
        assert_eq!(spf_text(&again), "v=spf1 -all");
    }
    assert_eq!(dns.log.count("example.test"), 1);
    let s = r.stats().await;
    assert_eq!(s.upstream_total(), 1);
    assert_eq!(s.hits.iter().find(|(k, _)| k == "spf").unwrap().1, 10);
}

#[tokio::test]
async fn concurrent_identical_questions_make_one_query() {
    let (dns, r) = apex_and_resolver(3600).await;
    let now = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.spf("example.test", now).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(spf_text(&t.await.unwrap().unwrap()), "v=spf1 -all");
    }
    assert_eq!(
        dns.log.count("example.test"),
        1,
        "100 concurrent questions, one upstream query"
    );
}

#[tokio::test]
async fn ttl_expiry_refetches() {
    let (dns, r) = apex_and_resolver(60).await;
    let t0 = Instant::now();
    assert_eq!(r.spf("example.test", t0).await.unwrap().ttl_remaining, 60);
    assert_hit_after_one_query(&r, &dns, t0 + Duration::from_secs(59)).await;
    let after = apex_spf(&r, t0 + Duration::from_secs(61)).await;
    assert_eq!(after.source, Source::Miss);
    assert_eq!(dns.log.count("example.test"), 2);
}

#[tokio::test]
async fn ttls_are_clamped() {
    // A 5-second TTL is held for the 30-second minimum.
    let (dns, r) = apex_and_resolver(5).await;
    let t0 = Instant::now();
    r.spf("example.test", t0).await.unwrap();
    assert_hit_after_one_query(&r, &dns, t0 + Duration::from_secs(29)).await;
}

#[tokio::test]
async fn prefetch_refreshes_in_the_background_once() {
    let (dns, r) = apex_and_resolver(100).await;
    let t0 = Instant::now();
    r.spf("example.test", t0).await.unwrap();
    // The record changes upstream.
    dns.replace_zone(Zone::new("example.test.", 300).txt("@", 100, &["v=spf1 ip4:192.0.2.1 -all"]))
        .await;
    // 85 s in: 15 % left, no prefetch.
    assert_hit_after_one_query(&r, &dns, t0 + Duration::from_secs(85)).await;
    // 95 s in: 5 % left. Answered at once from the old entry; one refresh starts.
    let hit = apex_spf(&r, t0 + Duration::from_secs(95)).await;
    assert_eq!(hit.source, Source::Hit);
    assert_eq!(spf_text(&hit), "v=spf1 -all");
    for _ in 0..5 {
        apex_spf(&r, t0 + Duration::from_secs(95)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while dns.log.count("example.test") < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the prefetch's insertion land.
    let mut next = apex_spf(&r, t0 + Duration::from_secs(96)).await;
    while next.source != Source::Prefetched && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        next = apex_spf(&r, t0 + Duration::from_secs(96)).await;
    }
    assert_eq!(next.source, Source::Prefetched);
    assert_eq!(spf_text(&next), "v=spf1 ip4:192.0.2.1 -all");
    assert_eq!(
        dns.log.count("example.test"),
        2,
        "one prefetch, however many hits"
    );
    assert_eq!(r.stats().await.prefetches, 1);
}

#[tokio::test]
async fn negative_answers_are_cached_for_the_soa_ttl() {
    // SOA MINIMUM 120, SOA TTL 3600: RFC 2308 negative TTL = 120.
    let dns = TestDns::start(vec![Zone::new("example.test.", 120)]).await;
    let r = resolver(&dns);
    let t0 = Instant::now();
    let nx = r.spf("nope.example.test", t0).await.unwrap();
    assert_eq!(nx.answer.rcode, Rcode::NxDomain);
    assert_eq!(nx.ttl_remaining, 120);
    let nodata = r.spf("example.test", t0).await.unwrap();
    assert_eq!(nodata.answer.rcode, Rcode::NoError);
    assert!(matches!(nodata.answer.data, Data::None));
    assert_eq!(
        spf_source(&r, "nope.example.test", t0 + Duration::from_secs(119)).await,
        Source::Hit
    );
    assert_eq!(dns.log.count("nope.example.test"), 1);
    assert_eq!(
        spf_source(&r, "nope.example.test", t0 + Duration::from_secs(121)).await,
        Source::Miss
    );
    assert_eq!(dns.log.count("nope.example.test"), 2);
}

#[tokio::test]
async fn stale_answers_for_the_whole_window_when_upstream_stops() {
    let mut zone = Zone::new("example.test.", 300);
    for i in 0..20 {
        zone = zone.txt(&format!("d{i}"), 300, &["v=spf1 -all"]);
    }
    let dns = TestDns::start(vec![zone]).await;
    let r = resolver_with(&dns, |cfg| {
        cfg.upstream.timeout = Duration::from_millis(100);
    });
    let t0 = Instant::now();
    for i in 0..20 {
        r.spf(&format!("d{i}.example.test"), t0).await.unwrap();
    }
    dns.set_down(true);
    let mut failures = 0;
    for hours in [1u64, 6, 12, 23] {
        let now = t0 + Duration::from_secs(300 + hours * 3600);
        for i in 0..20 {
            match r.spf(&format!("d{i}.example.test"), now).await {
                Ok(l) => {
                    assert_eq!(l.source, Source::Stale);
                    assert_eq!(spf_text(&l), "v=spf1 -all");
                }
                Err(_) => failures += 1,
            }
        }
    }
    assert_eq!(
        failures, 0,
        "cached names answered stale throughout the window"
    );
    // One refresh attempt per name per 30 s: asking again at once adds no upstream query.
    let before = dns.log.len();
    let now = t0 + Duration::from_secs(300 + 23 * 3600);
    r.spf("d0.example.test", now + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(dns.log.len(), before);
    // Past the one-day window the entry is gone: the failure shows.
    let gone = r
        .spf(
            "d0.example.test",
            t0 + Duration::from_secs(300 + 86_400 + 60),
        )
        .await;
    assert!(matches!(gone, Err(ResolveError::Timeout)), "{gone:?}");
    assert!(r.stats().await.stale_served >= 80);
}

#[tokio::test]
async fn a_slow_refresh_serves_stale_within_the_client_timeout() {
    let dns = spf_at_apex(60).await;
    let r = resolver_with(&dns, |cfg| {
        cfg.upstream.timeout = Duration::from_secs(3);
        cfg.cache.client_timeout = Duration::from_millis(100);
    });
    let t0 = Instant::now();
    r.spf("example.test", t0).await.unwrap();
    dns.set_down(true);
    let started = Instant::now();
    let l = apex_spf(&r, t0 + Duration::from_secs(120)).await;
    assert_eq!(l.source, Source::Stale);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after the 100 ms client timeout, not the 3 s upstream one"
    );
}

fn org_zone() -> Vec<Zone> {
    vec![
        Zone::new("test.", 300),
        Zone::new("example.test.", 300).txt("_dmarc", 3600, &["v=DMARC1; p=reject; sp=quarantine"]),
    ]
}

async fn thousand_subdomains(mode: DiscoveryMode) {
    let dns = TestDns::start(org_zone()).await;
    let mut cfg = config(&dns);
    cfg.discovery = mode;
    common::no_rate_limit(&mut cfg);
    let r = Resolver::new(cfg).unwrap();
    let now = Instant::now();
    for pass in 0..2 {
        let before = dns.log.count_where(|n| n.starts_with("_dmarc."));
        // 100 questions in flight at a time: enough to race on the org-level entry.
        for chunk in 0..10 {
            let tasks: Vec<_> = (0..100)
                .map(|i| {
                    let r = r.clone();
                    let name = format!("s{}.example.test", chunk * 100 + i);
                    tokio::spawn(async move { r.dmarc(&name, now).await })
                })
                .collect();
            for t in tasks {
                let d = t.await.unwrap().unwrap();
                assert_eq!(d.found_at.as_deref(), Some("example.test"));
                assert_eq!(d.reason, Some(FoundAt::OrganizationalDomain));
            }
        }
        let after = dns.log.count_where(|n| n.starts_with("_dmarc."));
        if pass == 0 {
            assert_eq!(
                dns.log.count("_dmarc.example.test"),
                1,
                "{mode:?}: exactly one org-level query"
            );
            assert_eq!(
                dns.log
                    .count_where(|n| n.starts_with("_dmarc.s") && n.ends_with(".example.test")),
                1000
            );
        } else {
            assert_eq!(after, before, "{mode:?}: the second pass makes no query");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_subdomains_one_org_query_psl() {
    thousand_subdomains(DiscoveryMode::Psl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_subdomains_one_org_query_treewalk() {
    thousand_subdomains(DiscoveryMode::TreeWalk).await;
}

fn dmarc_queries(dns: &TestDns) -> Vec<String> {
    dns.log
        .all()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("_dmarc."))
        .collect()
}

#[tokio::test]
async fn rfc9989_4_10_eight_query_walk() {
    // §4.10: a.b.c.d.e.f.g.h.i.j.mail.example.com takes exactly these eight queries.
    let (dns, d) = walk(
        "a.b.c.d.e.f.g.h.i.j.mail.example.com",
        &["_dmarc v=DMARC1; p=reject"],
    )
    .await;
    assert_eq!(
        dmarc_queries(&dns),
        [
            "_dmarc.a.b.c.d.e.f.g.h.i.j.mail.example.com",
            "_dmarc.g.h.i.j.mail.example.com",
            "_dmarc.h.i.j.mail.example.com",
            "_dmarc.i.j.mail.example.com",
            "_dmarc.j.mail.example.com",
            "_dmarc.mail.example.com",
            "_dmarc.example.com",
            "_dmarc.com",
        ]
    );
    assert_eq!(d.found_at.as_deref(), Some("example.com"));
    assert_eq!(d.org_domain.as_deref(), Some("example.com"));
}

#[tokio::test]
async fn rfc9989_b4_1_and_b4_2_org_domains() {
    let dns = org_under(
        "example.com.",
        &[
            "_dmarc v=DMARC1; p=reject",
            "_dmarc.signing v=DMARC1; p=none",
        ],
    )
    .await;
    let r = resolver(&dns);
    let now = Instant::now();
    // B.4.1: the author domain's own record applies; the DKIM identifier's org domain.
    let d = r.dmarc("example.com", now).await.unwrap();
    assert_eq!(
        (d.reason, d.applied),
        (
            Some(FoundAt::AuthorDomain),
            Some((PolicyTag::P, Disposition::Reject))
        )
    );
    // A fresh resolver, so every name of the walk is asked, as the RFC lists them.
    let r = resolver(&dns);
    let (org, asked) = walk_queries(&r, &dns, "signing.example.com", now).await;
    assert_eq!(org, "example.com");
    let expected = [
        "_dmarc.signing.example.com",
        "_dmarc.example.com",
        "_dmarc.com",
    ];
    assert_eq!(asked, expected);
    assert_eq!(org_domain(&r, "example.com", now).await, "example.com");
    // B.4.2: the deep author domain skips to seven labels; example.com is the policy domain.
    dns.log.clear();
    let d = r
        .dmarc("a.b.c.d.e.f.g.h.i.j.k.example.com", now)
        .await
        .unwrap();
    assert_eq!(
        dmarc_queries(&dns),
        [
            "_dmarc.a.b.c.d.e.f.g.h.i.j.k.example.com",
            "_dmarc.g.h.i.j.k.example.com",
            "_dmarc.h.i.j.k.example.com",
            "_dmarc.i.j.k.example.com",
            "_dmarc.j.k.example.com",
            "_dmarc.k.example.com",
        ],
        "example.com and com answers are already cached"
    );
    assert_eq!(d.found_at.as_deref(), Some("example.com"));
    assert_eq!(d.reason, Some(FoundAt::OrganizationalDomain));
}

#[tokio::test]
async fn rfc9989_b4_3_psd_record() {
    let psd = "v=DMARC1; p=reject; psd=y; np=reject; sp=quarantine";
    let dns = TestDns::start(vec![
        Zone::new("example.", 300),
        Zone::new("bank.example.", 300)
            .txt("_dmarc", 3600, &[psd])
            .txt("_dmarc.giant", 3600, &["v=DMARC1; p=none"])
            .record("mail.mega", 300, mailpolicyd_a()),
    ])
    .await;
    let r = resolver(&dns);
    let now = Instant::now();
    assert_eq!(
        org_domain(&r, "giant.bank.example", now).await,
        "giant.bank.example"
    );
    let (org, asked) = walk_queries(&r, &dns, "mail.giant.bank.example", now).await;
    assert_eq!(org, "giant.bank.example");
    let why = "the rest is cached; the walk stopped at psd=y";
    assert_eq!(asked, ["_dmarc.mail.giant.bank.example"], "{why}");
    let (org, asked) = walk_queries(&r, &dns, "mail.mega.bank.example", now).await;
    assert_eq!(org, "mega.bank.example");
    let expected = ["_dmarc.mail.mega.bank.example", "_dmarc.mega.bank.example"];
    assert_eq!(asked, expected);
    // Policy for an author under the PSD with no org record: the PSD record, sp (it exists).
    let d = r.dmarc("mail.mega.bank.example", now).await.unwrap();
    assert_eq!(d.reason, Some(FoundAt::PublicSuffixDomain));
    assert_eq!(d.found_at.as_deref(), Some("bank.example"));
    assert_eq!(d.org_domain.as_deref(), Some("mega.bank.example"));
    assert_eq!(d.applied, Some((PolicyTag::Sp, Disposition::Quarantine)));
    // A non-existent domain under it: np.
    let d = r.dmarc("ghost.mega.bank.example", now).await.unwrap();
    assert_eq!(d.domain_exists, Some(false));
    assert_eq!(d.applied, Some((PolicyTag::Np, Disposition::Reject)));
}

fn mailpolicyd_a() -> hickory_server::proto::rr::RData {
    hickory_server::proto::rr::RData::A(hickory_server::proto::rr::rdata::A(
        "192.0.2.1".parse().unwrap(),
    ))
}

#[tokio::test]
async fn rfc9989_psd_n_stops_the_walk() {
    let (dns, d) = walk(
        "a.mail.example.com",
        &[
            "_dmarc v=DMARC1; p=none",
            "_dmarc.mail v=DMARC1; p=reject; psd=n",
        ],
    )
    .await;
    assert_eq!(
        dmarc_queries(&dns),
        ["_dmarc.a.mail.example.com", "_dmarc.mail.example.com"]
    );
    assert_eq!(d.org_domain.as_deref(), Some("mail.example.com"));
    assert_eq!(d.found_at.as_deref(), Some("mail.example.com"));
}

#[tokio::test]
async fn psl_mode_and_both_mode() {
    let records = [
        "_dmarc v=DMARC1; p=reject",
        "_dmarc.mail v=DMARC1; p=quarantine; psd=n",
    ];
    let dns = org_under("example.com.", &records).await;
    let mut cfg = config(&dns);
    cfg.discovery = DiscoveryMode::Psl;
    let r = Resolver::new(cfg.clone()).unwrap();
    let d = r.dmarc("a.mail.example.com", Instant::now()).await.unwrap();
    assert_eq!(
        dmarc_queries(&dns),
        ["_dmarc.a.mail.example.com", "_dmarc.example.com"]
    );
    assert_eq!(d.found_at.as_deref(), Some("example.com"));
    cfg.discovery = DiscoveryMode::Both;
    let r = Resolver::new(cfg).unwrap();
    let d = r.dmarc("a.mail.example.com", Instant::now()).await.unwrap();
    assert_eq!(d.found_at.as_deref(), Some("mail.example.com"));
    assert!(
        d.notes.iter().any(|n| n.contains("Public Suffix List")),
        "{:?}",
        d.notes
    );
}

#[tokio::test]
async fn invalid_record_is_discarded_with_a_note() {
    let records = ["_dmarc v=DMARC1; p=reject", "_dmarc.sub v=DMARC1; p=rej"];
    let (_dns, d) = walk("sub.example.test", &records).await;
    assert_eq!(d.found_at.as_deref(), Some("example.test"));
    assert!(d.notes.iter().any(|n| n.contains("rej")));
}

#[tokio::test]
async fn nxdomain_cut_answers_below_a_known_nxdomain() {
    let dns = TestDns::start(vec![Zone::new("example.test.", 300)]).await;
    let r = resolver_with(&dns, |cfg| {
        cfg.nxdomain_cut = true;
    });
    let now = Instant::now();
    assert_eq!(
        r.lookup(Kind::Exists, "gone.example.test", now)
            .await
            .unwrap()
            .answer
            .rcode,
        Rcode::NxDomain
    );
    let below = r
        .lookup(Kind::Dmarc, "_dmarc.x.gone.example.test", now)
        .await
        .unwrap();
    assert_eq!(below.answer.rcode, Rcode::NxDomain);
    assert_eq!(
        dns.log.len(),
        1,
        "the name under the NXDOMAIN was not asked"
    );
    assert_eq!(r.stats().await.nxdomain_cut, 1);
}

#[tokio::test]
async fn other_questions() {
    let key = include_str!("data/dkim/rsa2048.spki.b64");
    let dkim = format!("v=DKIM1; k=rsa; p={key}");
    let atps_label = mailpolicyd::policy::atps::label(
        "author.test",
        mailpolicyd::policy::atps::AtpsHash::Sha256,
        false,
    );
    let dns = TestDns::start(vec![
        Zone::new("signer.test.", 300)
            .long_txt("s1._domainkey", 3600, &dkim)
            .txt(
                &format!("{atps_label}._atps"),
                3600,
                &["v=ATPS1; d=signer.test"],
            ),
    ])
    .await;
    let r = resolver(&dns);
    let now = Instant::now();
    let k = r.dkim_key("s1", "signer.test", now).await.unwrap();
    match &k.answer.data {
        Data::DkimKey(Found::Valid(p)) => assert_eq!(p.policy.key_bits, Some(2048)),
        other => panic!("{other:?}"),
    }
    // Only the unpadded label is published: the padded one is tried first, then this.
    let a = r
        .atps(
            "signer.test",
            "author.test",
            mailpolicyd::policy::atps::AtpsHash::Sha256,
            now,
        )
        .await
        .unwrap();
    match &a.answer.data {
        Data::Atps(Found::Valid(p)) => assert_eq!(p.policy.d.as_deref(), Some("signer.test")),
        other => panic!("{other:?}"),
    }
    assert_eq!(dns.log.count_where(|n| n.contains("._atps.")), 2);
}

#[tokio::test]
async fn invalid_names_are_refused_without_a_query() {
    let dns = TestDns::start(vec![Zone::new("example.test.", 300)]).await;
    let r = resolver(&dns);
    let now = Instant::now();
    for bad in [
        "",
        "a..b",
        &format!("{}.test", "x".repeat(64)),
        &format!("{}.test", "a.".repeat(130)),
    ] {
        assert!(
            matches!(r.spf(bad, now).await, Err(ResolveError::InvalidName(_))),
            "{bad:?}"
        );
    }
    assert_eq!(dns.log.len(), 0);
}

#[tokio::test]
async fn truncated_udp_answer_falls_back_to_tcp() {
    // A TXT record of ~2,000 bytes: over the 1,232-byte EDNS payload, so UDP is truncated.
    let big: Vec<String> = (0..8).map(|i| format!("{i}{}", "k".repeat(250))).collect();
    let parts: Vec<&str> = big.iter().map(String::as_str).collect();
    let dns = TestDns::start(vec![
        Zone::new("example.test.", 300).txt("big", 3600, &parts),
    ])
    .await;
    let r = resolver(&dns);
    let l = r
        .lookup(Kind::Txt, "big.example.test", Instant::now())
        .await
        .unwrap();
    match &l.answer.data {
        Data::Txt(t) => assert_eq!(t[0], big.concat()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        dns.log.count("big.example.test"),
        2,
        "one truncated UDP query, one TCP retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_flood_is_bounded() {
    let dns = TestDns::start(vec![
        Zone::new("wild.test.", 300).txt("*", 3600, &["v=spf1 -all"]),
        Zone::new("other.test.", 300).txt("@", 3600, &["v=spf1 a -all"]),
    ])
    .await;
    let r = resolver(&dns);
    let started = Instant::now();
    let now = Instant::now();
    let mut sources = std::collections::HashMap::new();
    for i in 0..10_000u32 {
        let name = format!("r{:08x}.wild.test", i.wrapping_mul(2_654_435_761));
        match r.spf(&name, now).await {
            Ok(l) => *sources.entry(format!("{:?}", l.source)).or_insert(0) += 1,
            Err(e) => *sources.entry(e.label().to_owned()).or_insert(0) += 1,
        }
    }
    let marked = wait_for(&r, |s| s.wildcard_marked >= 1).await;
    let elapsed = started.elapsed().as_secs_f64();
    let upstream = dns.log.count_where(|n| n.ends_with("wild.test"));
    // The bound, exactly: the limiter's burst (100) plus its rate (50/s) over the run, the
    // probe included (it takes a token of the budget like any query); in fact the wildcard
    // mark after 100 identical subdomains stops upstream queries earlier.
    let bound = 100 + (50.0 * elapsed).ceil() as usize;
    println!(
        "wildcard flood: {upstream} upstream queries in {elapsed:.2}s (bound {bound}); {sources:?}"
    );
    assert!(upstream <= bound, "{upstream} > {bound}");
    let s = marked;
    // 100 names, one random-label probe (in the background: the names asked while it waits
    // for its token are refused, the organization's budget being reserved for it, or asked
    // within the budget), then only the verification sample (a tenth of the organization's
    // rate).
    assert_eq!(s.wildcard_probed, 1, "{s:?}");
    assert!(
        upstream as u64 <= 101 + 10 + s.wildcard_verified,
        "marked wildcard after 100 names and one probe: {upstream}, {s:?}"
    );
    assert_eq!(s.wildcard_marked, 1);
    assert_eq!(s.wildcard_unmarked, 0);
    assert!(
        s.wildcard_synthesized + s.wildcard_verified >= 9_800,
        "{s:?}"
    );
    // Another organization is unaffected.
    let other = r.spf("other.test", now).await.unwrap();
    assert_eq!(other.source, Source::Miss);
    assert_eq!(spf_text(&other), "v=spf1 a -all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refuses_at_once_when_nothing_is_cached() {
    let dns = TestDns::start(vec![Zone::new("varied.test.", 300)]).await;
    let r = resolver_with(&dns, |cfg| {
        cfg.limits.per_second = 1;
        cfg.limits.burst = 5;
    });
    let now = Instant::now();
    let mut limited = 0;
    for i in 0..20 {
        if let Err(ResolveError::RateLimited) = r.spf(&format!("n{i}.varied.test"), now).await {
            limited += 1;
        }
    }
    assert!(
        dns.log.len() <= 6,
        "{} upstream queries for a budget of 5 (+1/s)",
        dns.log.len()
    );
    assert!(limited >= 14);
    assert_eq!(r.stats().await.rate_limited, limited);
    let _ = Arc::new(());
}

// ---- Issue 12, items 4, 5, 13: what an upstream answer may be believed for, and failures. ----

fn dkim_p(l: &mailpolicyd::resolve::Lookup) -> String {
    match &l.answer.data {
        Data::DkimKey(Found::Valid(k)) => format!("{:?}", k.policy),
        other => panic!("not a DKIM key: {other:?}"),
    }
}

#[tokio::test]
async fn cname_ttl_caps_the_answer_ttl() {
    // A DKIM key at a CNAME with TTL 40 pointing at a TXT with TTL 3600 (same zone: one
    // response carries the chain), and a CNAME with TTL 50 into another zone (two queries).
    let key_v1 = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    let key_v2 = "v=DKIM1; k=ed25519; p=22qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    let zones = |key: &str| {
        vec![
            Zone::new("example.test.", 300)
                .cname("sel._domainkey", 40, "key.example.test.")
                .txt("key", 3600, &[key])
                .cname("far._domainkey", 50, "key.provider.test.")
                .cname("long._domainkey", 3600, "short.example.test.")
                .txt("short", 60, &[key]),
            Zone::new("provider.test.", 300).txt("key", 3000, &[key]),
        ]
    };
    let dns = TestDns::start(zones(key_v1)).await;
    let r = resolver(&dns);
    let t0 = Instant::now();
    let first = r.dkim_key("sel", "example.test", t0).await.unwrap();
    assert_eq!(
        first.answer.ttl, 40,
        "min over the CNAME (40) and the TXT (3600)"
    );
    assert_eq!(first.ttl_remaining, 40);
    assert_eq!(first.answer.found_at.as_deref(), Some("key.example.test"));
    let far = r.dkim_key("far", "example.test", t0).await.unwrap();
    assert_eq!(far.answer.ttl, 50, "a chain across zones: min(50, 3000)");
    assert_eq!(far.answer.found_at.as_deref(), Some("key.provider.test"));
    let long = r.dkim_key("long", "example.test", t0).await.unwrap();
    assert_eq!(long.answer.ttl, 60, "min(3600, 60)");
    // Fresh for 40 s, then asked again: the rotated key is served, not the old one for 3600 s.
    dns.replace_zone(zones(key_v2).remove(0)).await;
    let hit = r
        .dkim_key("sel", "example.test", t0 + Duration::from_secs(39))
        .await
        .unwrap();
    assert_eq!(hit.source, Source::Hit);
    assert_eq!(dkim_p(&hit), dkim_p(&first));
    let after = r
        .dkim_key("sel", "example.test", t0 + Duration::from_secs(41))
        .await
        .unwrap();
    assert_eq!(after.source, Source::Miss);
    assert_ne!(
        dkim_p(&after),
        dkim_p(&first),
        "the rotated key after the CNAME's TTL"
    );
    assert_eq!(dns.log.count("sel._domainkey.example.test"), 2);
}

#[tokio::test]
async fn out_of_chain_records_are_never_believed() {
    let dns = TestDns::start(vec![
        Zone::new("example.test.", 300)
            .txt("inject", 3600, &["v=spf1 -all"])
            .cname("alias", 3600, "inject.example.test.")
            .txt("bare", 3600, &["v=spf1 -all"]),
    ])
    .await;
    // An upstream that appends a record of another name to the answer section.
    let poison = || TestDns::txt_record("victim.test.", 3600, &["v=spf1 +all"]);
    dns.inject_extra("inject.example.test", poison());
    dns.inject_extra("alias.example.test", poison());
    // ... and a different type at the question name itself, and a CNAME off the chain.
    dns.inject_extra(
        "bare.example.test",
        hickory_server::proto::rr::Record::from_rdata(
            hickory_server::proto::rr::Name::from_ascii("elsewhere.test.").unwrap(),
            3600,
            hickory_server::proto::rr::RData::CNAME(hickory_server::proto::rr::rdata::CNAME(
                hickory_server::proto::rr::Name::from_ascii("victim.test.").unwrap(),
            )),
        ),
    );
    dns.inject_extra("bare.example.test", poison());
    let r = resolver(&dns);
    let now = Instant::now();
    for (name, owner) in [
        ("inject.example.test", "inject.example.test"),
        ("alias.example.test", "inject.example.test"),
        ("bare.example.test", "bare.example.test"),
    ] {
        let spf = r.spf(name, now).await.unwrap();
        assert_eq!(
            spf_text(&spf),
            "v=spf1 -all",
            "{name}: the injected +all is ignored"
        );
        assert_eq!(spf.answer.found_at.as_deref(), Some(owner));
        let txt = ask_txt(&r, name, now).await;
        assert_eq!(
            txt.answer.data,
            Data::Txt(vec!["v=spf1 -all".to_owned()]),
            "{name}: one record, the name's own"
        );
    }
    // The name that was not asked was never cached: asking it goes upstream.
    dns.log.clear();
    let victim = r.lookup(Kind::Txt, "victim.test", now).await;
    assert_eq!(dns.log.count("victim.test"), 1, "{victim:?}");
    assert!(!matches!(victim, Ok(l) if l.answer.is_positive()));
    // And the SPF verdict for a sender at the poisoned name is the name's own `-all`.
    let check = r
        .spf_check(
            "192.0.2.1".parse().unwrap(),
            "a@inject.example.test",
            "mx.example.test",
            now,
        )
        .await;
    assert_eq!(check.result, mailpolicyd::resolve::spf::SpfResult::Fail);
}

fn failing_config(dns: &TestDns) -> ResolverConfig {
    let mut cfg = config(dns);
    cfg.upstream.timeout = Duration::from_millis(200);
    cfg.upstream.attempts = 2;
    cfg.cache.failure_ttl = Duration::from_secs(5);
    cfg
}

/// A server for `example.test.` with one TXT record `text` at `name`, failing for that name as
/// `fail` makes it, and a resolver of it with [`failing_config`].
async fn failing_server(name: &str, text: &str, fail: fn(&TestDns, &str)) -> (TestDns, Resolver) {
    let dns = TestDns::one_txt("example.test.", name, 3600, text).await;
    fail(&dns, &format!("{name}.example.test"));
    let r = Resolver::new(failing_config(&dns)).unwrap();
    (dns, r)
}

/// Heals `name` upstream and asks its SPF record at `at`: the record's text.
async fn healed_spf(r: &Resolver, dns: &TestDns, name: &str, at: Instant) -> String {
    dns.heal(name);
    spf_text(&r.spf(name, at).await.unwrap())
}

/// 10 concurrent then 10 sequential questions for `name`, each answered `expect`; how many
/// queries the server saw for `name` by then.
async fn twenty_questions(
    r: &Resolver,
    dns: &TestDns,
    name: &str,
    now: Instant,
    expect: &ResolveError,
) -> usize {
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let r = r.clone();
            let name = name.to_owned();
            tokio::spawn(async move { r.spf(&name, now).await })
        })
        .collect();
    for t in tasks {
        let e = t
            .await
            .unwrap()
            .expect_err("a failure is an error, never \"no record\"");
        assert_eq!(&e, expect);
    }
    for _ in 0..10 {
        let started = Instant::now();
        let e = r.spf(name, now).await.expect_err("still an error");
        assert_eq!(&e, expect);
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "from the failure cache"
        );
    }
    dns.log.count(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_is_cached_briefly_and_coalesced() {
    let (dns, r) = failing_server("sf", "v=spf1 -all", TestDns::servfail).await;
    let t0 = Instant::now();
    let asked = twenty_questions(&r, &dns, "sf.example.test", t0, &ResolveError::ServFail).await;
    assert!(
        (1..=2).contains(&asked),
        "20 questions, {asked} upstream queries (attempts = 2)"
    );
    let s = r.stats().await;
    assert!(s.failure_cached >= 10, "{s:?}");
    assert_eq!(
        s.upstream.iter().find(|(o, _)| o == "servfail").unwrap().1,
        1
    );
    // Inside the failure TTL: still no query. After it: asked again, and the healed name answers.
    assert_eq!(
        r.spf("sf.example.test", t0 + Duration::from_secs(4))
            .await
            .unwrap_err(),
        ResolveError::ServFail
    );
    assert_eq!(dns.log.count("sf.example.test"), asked);
    let healed = healed_spf(&r, &dns, "sf.example.test", t0 + Duration::from_secs(6)).await;
    assert_eq!(healed, "v=spf1 -all");
    assert_eq!(dns.log.count("sf.example.test"), asked + 1);
    // A failing SPF lookup is temperror, never "none".
    dns.servfail("sf2.example.test");
    let check = r
        .spf_check(
            "192.0.2.1".parse().unwrap(),
            "a@sf2.example.test",
            "mx.example.test",
            t0,
        )
        .await;
    assert_eq!(
        check.result,
        mailpolicyd::resolve::spf::SpfResult::TempError
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_is_cached_briefly() {
    let dns = TestDns::start(vec![Zone::new("example.test.", 300)]).await;
    dns.refuse("rf.example.test");
    let r = Resolver::new(failing_config(&dns)).unwrap();
    let t0 = Instant::now();
    let asked = twenty_questions(&r, &dns, "rf.example.test", t0, &ResolveError::Refused).await;
    assert!(
        asked <= 2,
        "20 questions, {asked} upstream queries (attempts = 2)"
    );
    r.spf("rf.example.test", t0 + Duration::from_secs(6))
        .await
        .unwrap_err();
    assert!(
        dns.log.count("rf.example.test") > asked,
        "asked again after the failure TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_costs_timeout_times_attempts_and_is_cached() {
    let (dns, r) = failing_server("drop", "v=spf1 -all", TestDns::silence).await;
    let t0 = Instant::now();
    let started = Instant::now();
    let e = r.spf("drop.example.test", t0).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e, ResolveError::Timeout);
    // 200 ms × 2 attempts: the documented bound, not 3 sends × 200 ms.
    assert!(
        took < Duration::from_millis(560),
        "one question took {took:?}"
    );
    assert!(dns.log.count("drop.example.test") <= 2);
    twenty_questions(&r, &dns, "drop.example.test", t0, &ResolveError::Timeout).await;
    assert!(
        dns.log.count("drop.example.test") <= 2,
        "21 questions in the failure TTL cost ≤ attempts upstream queries: {}",
        dns.log.count("drop.example.test")
    );
    assert!(r.stats().await.failure_cached >= 10);
    let later = healed_spf(&r, &dns, "drop.example.test", t0 + Duration::from_secs(6)).await;
    assert_eq!(later, "v=spf1 -all");
}

#[tokio::test]
async fn failure_ttl_defaults_to_five_seconds() {
    assert_eq!(
        mailpolicyd::resolve::CacheConfig::default().failure_ttl,
        Duration::from_secs(5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_failure_is_temperror_never_none() {
    use mailpolicyd::resolve::evaluate::{DmarcInput, DmarcResult};
    let (dns, r) = failing_server("_dmarc", "v=DMARC1; p=reject", TestDns::servfail).await;
    let input = DmarcInput {
        from_domain: "example.test".into(),
        spf: None,
        dkim: Vec::new(),
        forwarders: Vec::new(),
        seed: Some(1),
    };
    let now = Instant::now();
    for _ in 0..5 {
        let v = r.dmarc_evaluate(&input, now).await;
        assert_eq!(v.result, DmarcResult::TempError, "{v:?}");
    }
    assert!(dns.log.count("_dmarc.example.test") <= 2);
    // The healed name after the failure TTL: the p=reject policy applies again.
    dns.heal("_dmarc.example.test");
    let v = r.dmarc_evaluate(&input, now + Duration::from_secs(6)).await;
    assert_eq!(v.result, DmarcResult::Fail, "{v:?}");
}

fn roomy(dns: &TestDns) -> ResolverConfig {
    let mut cfg = config(dns);
    common::no_rate_limit(&mut cfg);
    cfg
}

/// The counters once `done` holds for them (polled every 10 ms, at most 5 s: the wildcard
/// probe runs in the background).
async fn wait_for(
    r: &Resolver,
    done: impl Fn(&mailpolicyd::resolve::StatsSnapshot) -> bool,
) -> mailpolicyd::resolve::StatsSnapshot {
    for _ in 0..500 {
        let s = r.stats().await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r.stats().await
}

/// The first label of a wildcard probe: 20 letters and digits.
fn is_probe(name: &str, org: &str) -> bool {
    name.strip_suffix(org).is_some_and(|rest| {
        let first = rest.trim_start_matches("_dmarc.").trim_end_matches('.');
        first.len() == 20 && first.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// A resolver of `dns` without a rate limit whose wildcard marks last three days.
fn long_mark(dns: &TestDns) -> Resolver {
    let mut cfg = roomy(dns);
    cfg.limits.wildcard_mark = Duration::from_secs(3 * 86_400);
    Resolver::new(cfg).unwrap()
}

/// A wildcard zone `origin` (`*`: `v=spf1 -all`) with one name, `special`, of its own record
/// (both with a TTL of 60).
async fn wildcard_with_special(origin: &str) -> TestDns {
    TestDns::start(vec![
        Zone::new(origin, 300).txt("*", 60, &["v=spf1 -all"]).txt(
            "special",
            60,
            &["v=spf1 ip4:192.0.2.0/24 -all"],
        ),
    ])
    .await
}

/// Asks the SPF record of `names` random-looking subdomains `r{i}` of `org` and waits for the
/// wildcard mark; the counters then.
async fn mark_spf(
    r: &Resolver,
    org: &str,
    names: u32,
    now: Instant,
) -> mailpolicyd::resolve::StatsSnapshot {
    for i in 0..names {
        r.spf(&format!("r{i}.{org}"), now).await.unwrap();
    }
    wait_for(r, |s| s.wildcard_marked >= 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_subdomains_without_a_dns_wildcard_are_not_marked() {
    let mut zone = Zone::new("same.test.", 300)
        .txt("special", 3600, &["v=spf1 ip4:192.0.2.0/24 -all"])
        .txt("_dmarc.special", 3600, &["v=DMARC1; p=reject"]);
    for i in 0..120 {
        zone = zone
            .txt(
                &format!("s{i}"),
                3600,
                &["v=spf1 include:_spf.same.test -all"],
            )
            .txt(&format!("_dmarc.s{i}"), 3600, &["v=DMARC1; p=none"]);
    }
    let dns = TestDns::start(vec![zone]).await;
    let r = Resolver::new(roomy(&dns)).unwrap();
    let now = Instant::now();
    for i in 0..120 {
        r.spf(&format!("s{i}.same.test"), now).await.unwrap();
        let d = r.dmarc(&format!("s{i}.same.test"), now).await.unwrap();
        assert_eq!(d.applied, Some((PolicyTag::P, Disposition::None)));
    }
    // The probes run in the background: wait until both were asked and answered.
    for _ in 0..500 {
        if dns.log.count_where(|n| is_probe(n, ".same.test")) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = wait_for(&r, |s| s.upstream_total() >= 242).await;
    // 120 identical subdomains made each kind a candidate; one random label each said NXDOMAIN.
    assert_eq!(s.wildcard_probed, 2, "{s:?}");
    assert_eq!(s.wildcard_marked, 0, "{s:?}");
    assert_eq!(
        dns.log.count_where(|n| is_probe(n, ".same.test")),
        2,
        "{:?}",
        dns.log.all()
    );
    // The subdomain with records of its own gets them.
    let special = r.spf("special.same.test", now).await.unwrap();
    assert_eq!(special.source, Source::Miss);
    assert_eq!(spf_text(&special), "v=spf1 ip4:192.0.2.0/24 -all");
    let d = r.dmarc("special.same.test", now).await.unwrap();
    assert_eq!(d.applied, Some((PolicyTag::P, Disposition::Reject)));
    // A subdomain that does not exist is NXDOMAIN, not a made-up record.
    let ghost = r.spf("ghost.same.test", now).await.unwrap();
    assert_eq!(ghost.answer.rcode, Rcode::NxDomain);
    assert!(!ghost.answer.is_positive());
    assert_eq!(r.stats().await.wildcard_synthesized, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_mark_never_synthesizes_a_name_seen_with_its_own_record() {
    let dns = wildcard_with_special("wild2.test.").await;
    let r = long_mark(&dns);
    let now = Instant::now();
    let special = r.spf("special.wild2.test", now).await.unwrap();
    assert_eq!(spf_text(&special), "v=spf1 ip4:192.0.2.0/24 -all");
    let s = mark_spf(&r, "wild2.test", 120, now).await;
    assert_eq!((s.wildcard_probed, s.wildcard_marked), (1, 1), "{s:?}");
    // Two days on: every entry is gone (past the stale window), the mark still stands.
    let later = now + Duration::from_secs(2 * 86_400);
    let synthesized = r.spf("never-seen.wild2.test", later).await.unwrap();
    assert_eq!(spf_text(&synthesized), "v=spf1 -all");
    let verified = r.stats().await.wildcard_verified;
    let again = r.spf("special.wild2.test", later).await.unwrap();
    assert_eq!(
        again.source,
        Source::Miss,
        "asked upstream, not synthesized"
    );
    assert_eq!(spf_text(&again), "v=spf1 ip4:192.0.2.0/24 -all");
    let s = r.stats().await;
    assert_eq!(
        s.wildcard_verified, verified,
        "excluded from synthesis, not merely verified: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_mark_ends_when_a_verified_name_answers_differently() {
    let dns = TestDns::one_txt("wild3.test.", "*", 3600, "v=spf1 -all").await;
    let r = resolver(&dns);
    let now = Instant::now();
    assert_eq!(
        mark_spf(&r, "wild3.test", 110, now).await.wildcard_marked,
        1
    );
    // The wildcard is removed upstream: a synthesized answer would now be made up.
    dns.replace_zone(Zone::new("wild3.test.", 300)).await;
    let mut asked = 0;
    while r.stats().await.wildcard_unmarked == 0 {
        asked += 1;
        assert!(asked < 300, "the verification sample never ran");
        let _ = r.spf(&format!("n{asked}.wild3.test"), now).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = r.stats().await;
    assert_eq!(s.wildcard_unmarked, 1, "{s:?}");
    let after = r.spf("after.wild3.test", now).await.unwrap();
    assert_eq!(after.source, Source::Miss);
    assert_eq!(after.answer.rcode, Rcode::NxDomain);
    assert!(!after.answer.is_positive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_flood_from_many_tasks_is_bounded_and_marked() {
    let dns = TestDns::one_txt("wild4.test.", "*", 3600, "v=spf1 -all").await;
    let r = resolver(&dns);
    let started = Instant::now();
    let tasks: Vec<_> = (0..16u32)
        .map(|t| {
            let r = r.clone();
            tokio::spawn(async move {
                let now = Instant::now();
                for i in 0..1_000u32 {
                    let _ = r.spf(&format!("t{t}r{i}.wild4.test"), now).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = wait_for(&r, |s| s.wildcard_marked >= 1).await;
    let elapsed = started.elapsed().as_secs_f64();
    let upstream = dns.log.count_where(|n| n.ends_with("wild4.test"));
    // The budget (burst 100, 50/s), exactly: the probe takes a token like any query (the
    // organization is reserved for it, so a flood that keeps the budget empty cannot starve
    // it).
    let bound = 100 + (50.0 * elapsed).ceil() as usize;
    println!(
        "concurrent wildcard flood: {upstream} upstream in {elapsed:.2}s (bound {bound}); \
         rate limited {}, synthesized {}",
        s.rate_limited, s.wildcard_synthesized
    );
    assert!(upstream <= bound, "{upstream} > {bound}");
    assert_eq!((s.wildcard_probed, s.wildcard_marked), (1, 1));
    // Once marked, the flood is answered (from the sample), not refused.
    let now = Instant::now();
    for i in 0..200 {
        let l = r.spf(&format!("late{i}.wild4.test"), now).await.unwrap();
        assert_eq!(spf_text(&l), "v=spf1 -all");
    }
}

// ---- Issue 12 item 2 (review): windows by name shape, every answer recorded, the probe in
// the background and within the budget. ----

/// The raw TXT answer for `name` (the DNS front-end's question kind).
async fn ask_txt(r: &Resolver, name: &str, now: Instant) -> mailpolicyd::resolve::Lookup {
    r.lookup(Kind::Txt, name, now).await.unwrap()
}

/// A common SPF-hardening wildcard zone `origin` (`*`: `v=spf1 -all`), with a DKIM key
/// (`sel`) and a subdomain's own DMARC record (`_dmarc.special`: `p=reject`).
fn hardened(origin: &str) -> Zone {
    Zone::new(origin, 300)
        .txt("*", 3600, &["v=spf1 -all"])
        .txt("sel._domainkey", 3600, &[DKIM_KEY])
        .txt("_dmarc.special", 3600, &["v=DMARC1; p=reject"])
}

/// Asks `r` the raw TXT record of 120 random-looking subdomains `r{i}` of `org`, each answered
/// by the wildcard.
async fn txt_flood(r: &Resolver, org: &str, now: Instant) {
    for i in 0..120 {
        let l = ask_txt(r, &format!("r{i}.{org}"), now).await;
        assert_eq!(txt_of(&l), ["v=spf1 -all"]);
    }
}

fn txt_of(l: &mailpolicyd::resolve::Lookup) -> Vec<String> {
    match &l.answer.data {
        Data::Txt(t) => t.clone(),
        Data::None => Vec::new(),
        other => panic!("not raw TXT: {other:?}"),
    }
}

const DKIM_KEY: &str = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_txt_mark_never_answers_names_of_another_shape() {
    // A common SPF-hardening wildcard, with a DKIM key and a subdomain's own DMARC record.
    let zone = hardened("harden.test.").txt("special", 3600, &["v=spf1 ip4:192.0.2.0/24 -all"]);
    let dns = TestDns::start(vec![zone]).await;
    let r = Resolver::new(roomy(&dns)).unwrap();
    let now = Instant::now();
    // ~100 random names through the DNS front-end's question kind (raw TXT) mark the plain
    // names' window.
    txt_flood(&r, "harden.test", now).await;
    let s = wait_for(&r, |s| s.wildcard_marked >= 1).await;
    assert_eq!((s.wildcard_probed, s.wildcard_marked), (1, 1), "{s:?}");
    // The probe had the plain names' shape.
    let probes: Vec<String> = dns
        .log
        .all()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| is_probe(n, ".harden.test"))
        .collect();
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert!(!probes[0].starts_with('_'), "{probes:?}");
    // A plain name never seen is synthesized (a real wildcard answers it so).
    let plain = ask_txt(&r, "never-seen.harden.test", now).await;
    assert_eq!(txt_of(&plain), ["v=spf1 -all"]);
    let synthesized = r.stats().await.wildcard_synthesized;
    // Names with `_` labels are another shape: asked upstream, their own records.
    let key = ask_txt(&r, "sel._domainkey.harden.test", now).await;
    assert_eq!(key.source, Source::Miss);
    assert_eq!(txt_of(&key), [DKIM_KEY]);
    let dmarc = ask_txt(&r, "_dmarc.special.harden.test", now).await;
    assert_eq!(dmarc.source, Source::Miss);
    assert_eq!(txt_of(&dmarc), ["v=DMARC1; p=reject"]);
    // And through the parsing kinds too.
    let k = r.dkim_key("sel", "harden.test", now).await.unwrap();
    assert_eq!(k.source, Source::Miss);
    let d = r.dmarc("special.harden.test", now).await.unwrap();
    assert_eq!(d.applied, Some((PolicyTag::P, Disposition::Reject)));
    assert_eq!(r.stats().await.wildcard_synthesized, synthesized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_mark_never_synthesizes_a_name_known_as_another_kind() {
    let dns = wildcard_with_special("wild5.test.").await;
    let r = long_mark(&dns);
    let now = Instant::now();
    let s = mark_spf(&r, "wild5.test", 120, now).await;
    assert_eq!((s.wildcard_probed, s.wildcard_marked), (1, 1), "{s:?}");
    // `special` is known only as raw TXT (the DNS front-end's question), never as SPF.
    let txt = ask_txt(&r, "special.wild5.test", now).await;
    assert_eq!(txt_of(&txt), ["v=spf1 ip4:192.0.2.0/24 -all"]);
    let verified = r.stats().await.wildcard_verified;
    // Its SPF question is not synthesized from the SPF window's sample: cached as TXT with
    // another record.
    let spf = r.spf("special.wild5.test", now).await.unwrap();
    assert_eq!(spf.source, Source::Miss);
    assert_eq!(spf_text(&spf), "v=spf1 ip4:192.0.2.0/24 -all");
    // Two days on, every cache entry is gone; the name was seen (as TXT) with its own record.
    let later = now + Duration::from_secs(2 * 86_400);
    let txt = ask_txt(&r, "special.wild5.test", later).await;
    assert_eq!(txt.source, Source::Miss);
    dns.log.clear();
    let later = later + Duration::from_secs(86_400 / 2);
    let spf = r.spf("special.wild5.test", later).await.unwrap();
    assert_eq!(spf.source, Source::Miss, "asked upstream, not synthesized");
    assert_eq!(spf_text(&spf), "v=spf1 ip4:192.0.2.0/24 -all");
    assert_eq!(dns.log.count("special.wild5.test"), 1);
    assert_eq!(r.stats().await.wildcard_verified, verified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_mark_never_synthesizes_a_name_seen_without_records() {
    use hickory_server::proto::op::ResponseCode;
    let dns = TestDns::one_txt("wild6.test.", "*", 60, "v=spf1 -all").await;
    // Two names answer negatively (NODATA, NXDOMAIN), as an upstream may.
    dns.fail_with("nodata.wild6.test", ResponseCode::NoError);
    dns.fail_with("gone.wild6.test", ResponseCode::NXDomain);
    let r = long_mark(&dns);
    let now = Instant::now();
    for name in ["nodata.wild6.test", "gone.wild6.test"] {
        let l = r.spf(name, now).await.unwrap();
        assert!(!l.answer.is_positive(), "{:?}", l.answer);
    }
    let s = mark_spf(&r, "wild6.test", 120, now).await;
    assert_eq!(s.wildcard_marked, 1, "{s:?}");
    // Two days on the negative entries are gone; the names were seen answering no record.
    let later = now + Duration::from_secs(2 * 86_400);
    for (name, rcode) in [
        ("nodata.wild6.test", Rcode::NoError),
        ("gone.wild6.test", Rcode::NxDomain),
    ] {
        let again = r.spf(name, later).await.unwrap();
        assert_eq!(again.source, Source::Miss, "{name}: asked, not synthesized");
        assert!(!again.answer.is_positive(), "{:?}", again.answer);
        assert_eq!(again.answer.rcode, rcode);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_probe_never_delays_the_question_that_triggers_it() {
    let dns = TestDns::one_txt("wild7.test.", "*", 3600, "v=spf1 -all").await;
    // A budget of exactly the marking threshold and one query a second: the probe needs the
    // next token, a second away.
    let r = resolver_with(&dns, |cfg| {
        cfg.limits.per_second = 1;
        cfg.limits.burst = 100;
    });
    let started = Instant::now();
    let now = Instant::now();
    for i in 0..99 {
        r.spf(&format!("r{i}.wild7.test"), now).await.unwrap();
    }
    // The hundredth name makes the window a candidate: answered at once, the probe waits for
    // its token in the background.
    let t = Instant::now();
    let l = r.spf("r99.wild7.test", now).await.unwrap();
    let took = t.elapsed();
    assert_eq!(spf_text(&l), "v=spf1 -all");
    assert!(took < Duration::from_millis(300), "{took:?}");
    // While the probe waits, the organization's budget is reserved for it: other questions
    // are refused (nothing cached), never sent.
    let refused = r.spf("r100.wild7.test", now).await;
    assert!(
        matches!(refused, Err(ResolveError::RateLimited)) || started.elapsed().as_millis() > 900,
        "{refused:?}"
    );
    let s = wait_for(&r, |s| s.wildcard_marked >= 1).await;
    assert_eq!((s.wildcard_probed, s.wildcard_marked), (1, 1), "{s:?}");
    let elapsed = started.elapsed().as_secs_f64();
    let upstream = dns.log.count_where(|n| n.ends_with("wild7.test"));
    assert!(
        upstream <= 100 + elapsed.ceil() as usize,
        "{upstream} upstream queries in {elapsed:.2}s, budget 100 + 1/s"
    );
    assert!(
        dns.log.count_where(|n| is_probe(n, ".wild7.test")) == 1 && upstream >= 101,
        "100 names and the probe: {:?}",
        dns.log.all()
    );
    // Marked: the flood is answered from the sample.
    let l = r.spf("r101.wild7.test", now).await.unwrap();
    assert_eq!(l.source, Source::Wildcard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_mark_via_dns_front_end_never_answers_other_shapes() {
    use mailpolicyd::serve::Service;
    let dns = TestDns::start(vec![hardened("harden2.test.")]).await;
    let service = Service::new(Resolver::new(roomy(&dns)).unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let addr = common::serve_dns_front_end(&service, &shutdown).await;
    // A plain DNS client of the front-end (its own wildcard watch out of the way).
    let mut cfg = ResolverConfig::default();
    cfg.upstream.servers = vec![addr];
    cfg.limits.wildcard_min_names = 1_000_000;
    common::no_rate_limit(&mut cfg);
    let client = Resolver::new(cfg).unwrap();
    let now = Instant::now();
    txt_flood(&client, "harden2.test", now).await;
    let s = wait_for(service.resolver(), |s| s.wildcard_marked >= 1).await;
    assert_eq!(s.wildcard_marked, 1, "{s:?}");
    // Uncached names of another shape, asked through the front-end, get their own records.
    let key = ask_txt(&client, "sel._domainkey.harden2.test", now).await;
    assert_eq!(txt_of(&key), [DKIM_KEY]);
    let dmarc = ask_txt(&client, "_dmarc.special.harden2.test", now).await;
    assert_eq!(txt_of(&dmarc), ["v=DMARC1; p=reject"]);
    assert_eq!(dns.log.count("sel._domainkey.harden2.test"), 1);
    assert_eq!(dns.log.count("_dmarc.special.harden2.test"), 1);
    shutdown.cancel();
}

#[tokio::test]
async fn negative_answer_through_a_cname_keeps_the_cname_ttl() {
    // SOA minimum 3600 (the clamp's ceiling): a DKIM key at a CNAME with TTL 40 pointing at a
    // name without TXT (NODATA) or at no name at all (NXDOMAIN), and a two-hop chain.
    let dns = TestDns::start(vec![
        Zone::new("example.test.", 3600)
            .cname("sel._domainkey", 40, "nokey.example.test.")
            .record("nokey", 3600, mailpolicyd_a())
            .cname("gone._domainkey", 45, "missing.example.test.")
            .cname("two._domainkey", 3600, "hop.example.test.")
            .cname("hop", 50, "nokey.example.test."),
    ])
    .await;
    let r = resolver_with(&dns, |cfg| {
        cfg.cache.negative_ttl = (Duration::from_secs(1), Duration::from_secs(3600));
    });
    let t0 = Instant::now();
    for (selector, rcode, ttl) in [
        ("sel", Rcode::NoError, 40),
        ("gone", Rcode::NxDomain, 45),
        ("two", Rcode::NoError, 50),
    ] {
        let l = r.dkim_key(selector, "example.test", t0).await.unwrap();
        assert!(!l.answer.is_positive(), "{selector}: {l:?}");
        assert_eq!(l.answer.rcode, rcode, "{selector}");
        assert_eq!(
            l.answer.ttl, ttl,
            "{selector}: min over the chain's CNAMEs and the negative TTL, not the SOA's 3600"
        );
        assert_eq!(l.ttl_remaining, ttl, "{selector}");
    }
    // Published after the CNAME's TTL: the key is seen then, not an hour later.
    dns.replace_zone(
        Zone::new("example.test.", 3600)
            .cname("sel._domainkey", 40, "nokey.example.test.")
            .txt(
                "nokey",
                3600,
                &["v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
            ),
    )
    .await;
    let later = r
        .dkim_key("sel", "example.test", t0 + Duration::from_secs(41))
        .await
        .unwrap();
    assert_eq!(later.source, Source::Miss);
    assert!(later.answer.is_positive(), "{later:?}");
}

#[tokio::test]
async fn nxdomain_through_a_cname_cuts_below_the_missing_target_not_the_question() {
    // `alias` is a CNAME to a name that does not exist: the NXDOMAIN is about `missing`, and
    // `alias` exists (it is a CNAME), so a name below it is asked, never cut (RFC 8020).
    let dns = TestDns::start(vec![
        Zone::new("example.test.", 300)
            .cname("alias", 3600, "missing.example.test.")
            .txt("sub.alias", 3600, &["v=spf1 -all"]),
    ])
    .await;
    let r = resolver_with(&dns, |cfg| {
        cfg.nxdomain_cut = true;
    });
    let now = Instant::now();
    let alias = r.spf("alias.example.test", now).await.unwrap();
    assert_eq!(alias.answer.rcode, Rcode::NxDomain);
    let below = r.spf("sub.alias.example.test", now).await.unwrap();
    assert_eq!(below.source, Source::Miss, "asked upstream, not cut");
    assert_eq!(spf_text(&below), "v=spf1 -all");
    assert_eq!(r.stats().await.nxdomain_cut, 0);
    // The name that does not exist is the one cut below.
    let before = dns.log.len();
    let cut = r.spf("x.missing.example.test", now).await.unwrap();
    assert_eq!(cut.answer.rcode, Rcode::NxDomain);
    assert_eq!(dns.log.len(), before, "below the missing target: not asked");
    assert_eq!(r.stats().await.nxdomain_cut, 1);
}

/// signed.test. with a TLSA at `_25._tcp.mx`, signed with a fresh key; the resolver's trust
/// anchor is that key.
async fn signed_tlsa_zone() -> (TestDns, hickory_server::proto::dnssec::PublicKeyBuf) {
    use hickory_server::proto::dnssec::crypto::Ed25519SigningKey;
    use hickory_server::proto::dnssec::rdata::DNSKEY;
    use hickory_server::proto::dnssec::{DnssecSigner, SigningKey};
    use hickory_server::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector, TLSA};
    let tlsa = hickory_server::proto::rr::RData::TLSA(TLSA::new(
        CertUsage::DaneEe,
        Selector::Spki,
        Matching::Sha256,
        vec![0xab; 32],
    ));
    let zone = Zone::signable("signed.test.", 300).record("_25._tcp.mx", 3600, tlsa);
    let origin = zone.origin().clone();
    let mut handler = zone.into_handler();
    let key = Ed25519SigningKey::from_pkcs8(&Ed25519SigningKey::generate_pkcs8().unwrap()).unwrap();
    let public = key.to_public_key().unwrap();
    handler
        .add_zone_signing_key_mut(DnssecSigner::new(
            DNSKEY::from_key(&public),
            Box::new(key),
            origin.clone(),
            Duration::from_secs(7 * 86_400),
        ))
        .unwrap();
    handler.secure_zone_mut().unwrap();
    let handler: Arc<dyn hickory_server::zone_handler::ZoneHandler> = Arc::new(handler);
    (
        TestDns::start_handlers(vec![(origin, handler)]).await,
        public,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_lookup_gets_time_for_its_chain_of_trust() {
    // Every exchange takes 150 ms, under the 200 ms per-exchange timeout; a cold validated
    // TLSA lookup is the TLSA exchange and the zone's DNSKEY exchange (≥ 300 ms), more than
    // timeout × attempts (200 ms) but within its validation bound (3 × 200 ms).
    let (dns, anchor) = signed_tlsa_zone().await;
    dns.delay("_25._tcp.mx.signed.test", Duration::from_millis(150));
    dns.delay("signed.test", Duration::from_millis(150));
    let mut ta = hickory_server::proto::dnssec::TrustAnchors::empty();
    ta.insert_with_name(
        &anchor,
        hickory_server::proto::rr::LowerName::new(
            &hickory_server::proto::rr::Name::from_ascii("signed.test.").unwrap(),
        ),
    );
    let r = resolver_with(&dns, |cfg| {
        cfg.upstream.timeout = Duration::from_millis(200);
        cfg.upstream.attempts = 1;
        cfg.upstream.trust_anchors = Some(Arc::new(ta));
    });
    let started = Instant::now();
    let l = r
        .tlsa("mx.signed.test", 25, Instant::now())
        .await
        .expect("a slow but working chain of trust is not a timeout");
    let took = started.elapsed();
    assert_eq!(l.answer.dnssec, mailpolicyd::resolve::DnssecStatus::Secure);
    assert!(
        took >= Duration::from_millis(300),
        "{took:?}: two exchanges"
    );
    // A plain question at the same speed still has timeout × attempts: a name that never
    // answers costs at most that, and a validating one at most three times that.
    dns.silence("_25._tcp.dead.signed.test");
    let started = Instant::now();
    let e = r
        .tlsa("dead.signed.test", 25, Instant::now())
        .await
        .unwrap_err();
    assert_eq!(e, ResolveError::Timeout);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(800), "{took:?}");
    dns.silence("dead.signed.test");
    let started = Instant::now();
    let e = r.spf("dead.signed.test", Instant::now()).await.unwrap_err();
    assert_eq!(e, ResolveError::Timeout);
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_and_txt_questions_share_one_failing_query() {
    // A SERVFAIL that takes 150 ms to come: 40 questions, SPF and raw TXT for the same name
    // alternately, started over ~320 ms (before, while and after the query fails), cost one
    // upstream query: they join the one in flight whatever their kind, or find its failure
    // remembered, never slipping between the two.
    let dns = TestDns::one_txt("example.test.", "mixed", 3600, "v=spf1 -all").await;
    dns.servfail("mixed.example.test");
    dns.delay("mixed.example.test", Duration::from_millis(150));
    let mut cfg = failing_config(&dns);
    cfg.upstream.timeout = Duration::from_secs(1);
    cfg.upstream.attempts = 1;
    let r = Resolver::new(cfg).unwrap();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                r.spf("mixed.example.test", t0).await.map(|_| ())
            } else {
                r.lookup(Kind::Txt, "mixed.example.test", t0)
                    .await
                    .map(|_| ())
            }
        }));
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), ResolveError::ServFail);
    }
    let asked = dns.log.count("mixed.example.test");
    let s = r.stats().await;
    assert_eq!(
        s.upstream.iter().find(|(o, _)| o == "servfail").unwrap().1,
        1,
        "{:?}",
        s.upstream
    );
    assert_eq!(
        asked, 1,
        "40 questions of two kinds, {asked} upstream queries"
    );
    assert!(
        s.coalesced + s.failure_cached >= 39,
        "coalesced {}, failure_cached {}",
        s.coalesced,
        s.failure_cached
    );
    // After the failure TTL, asked again (one query for both kinds again).
    dns.heal("mixed.example.test");
    let (spf, txt) = tokio::join!(
        r.spf("mixed.example.test", t0 + Duration::from_secs(6)),
        r.lookup(Kind::Txt, "mixed.example.test", t0 + Duration::from_secs(6))
    );
    assert_eq!(spf_text(&spf.unwrap()), "v=spf1 -all");
    assert_eq!(
        txt.unwrap().answer.data,
        Data::Txt(vec!["v=spf1 -all".to_owned()])
    );
    assert_eq!(dns.log.count("mixed.example.test"), 2);
}

#[tokio::test]
async fn negative_answer_through_an_unconfirmed_cname_gets_the_floor_ttl() {
    // The CNAME itself cannot be had (its CNAME question is dropped): the negative answer is
    // still an answer, cached for the negative clamp's floor, never the target's 3600 s.
    let dns = TestDns::start(vec![
        Zone::new("example.test.", 3600)
            .cname("mute._domainkey", 40, "nokey.example.test.")
            .record("nokey", 3600, mailpolicyd_a()),
    ])
    .await;
    dns.silence_except(
        "mute._domainkey.example.test",
        &[hickory_server::proto::rr::RecordType::TXT],
    );
    let r = resolver_with(&dns, |cfg| {
        cfg.upstream.timeout = Duration::from_millis(200);
        cfg.cache.negative_ttl = (Duration::from_secs(2), Duration::from_secs(3600));
    });
    let t0 = Instant::now();
    let l = r.dkim_key("mute", "example.test", t0).await.unwrap();
    assert!(!l.answer.is_positive(), "{l:?}");
    assert_eq!(l.answer.ttl, 0);
    assert_eq!(l.ttl_remaining, 2, "the negative clamp's floor");
}

/// Issue 13: `ResolveError` lives in `resolve/error.rs` now; its path, variants, labels and
/// temporary/permanent split are what the wire error table maps from, and must not move.
#[test]
fn resolve_error_keeps_its_path_variants_and_labels() {
    use mailpolicyd::resolve::ResolveError as E;
    let table: [(E, &str, bool, bool); 10] = [
        (E::Timeout, "timeout", true, true),
        (E::ServFail, "servfail", true, true),
        (E::Refused, "refused", true, true),
        (E::DnssecBogus, "dnssec_bogus", true, true),
        (E::Rcode("NOTIMP".into()), "rcode", true, true),
        (E::Network("reset".into()), "network", true, true),
        (E::RateLimited, "rate_limited", true, false),
        (E::InvalidName("x".into()), "invalid_name", false, false),
        (E::Config("x".into()), "config", false, false),
        (E::Internal("x".into()), "internal", true, false),
    ];
    for (e, label, temporary, upstream) in table {
        assert_eq!(e.label(), label, "{e:?}");
        assert_eq!(e.is_temporary(), temporary, "{e:?}");
        assert_eq!(e.is_upstream_failure(), upstream, "{e:?}");
    }
}
