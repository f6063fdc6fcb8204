//! A cached lookup through `Resolver` (target ≤ 1 µs per hit on the 2-core reference machine),
//! next to baselines measured in the same run: a bare quick_cache `get` on an `Arc` value (the
//! floor under our cache, the store it uses) and the same on moka (the store it used before
//! issue 17). Also: a cached DMARC discovery (`_dmarc.<sub>`, `_dmarc.<org>`, the
//! existence check) and a warm SPF `check_host()` over a record with five includes (target
//! ≤ 5 µs in process): six cache reads and the evaluation. And a hit on an entry in compact
//! form, whose record is parsed again (`resolve::cache`'s hot list has released it).

#[path = "../tests/dnsserver/mod.rs"]
mod dnsserver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dnsserver::{TestDns, Zone};
use mailpolicyd::resolve::{DiscoveryMode, Resolver, ResolverConfig, Source};

fn cache(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (resolver, now, _dns) = rt.block_on(async {
        let dns = TestDns::start(vec![
            Zone::new("test.", 300),
            Zone::new("example.test.", 300)
                .txt(
                    "@",
                    86_400,
                    &["v=spf1 ip4:192.0.2.0/24 include:_spf.example.net -all"],
                )
                .txt(
                    "_dmarc",
                    86_400,
                    &["v=DMARC1; p=reject; rua=mailto:d@example.test"],
                )
                .record(
                    "sub",
                    86_400,
                    hickory_server::proto::rr::RData::A(hickory_server::proto::rr::rdata::A(
                        "192.0.2.1".parse().unwrap(),
                    )),
                ),
            (1..=5).fold(
                Zone::new("spf.test.", 300).txt(
                    "@",
                    86_400,
                    &["v=spf1 include:i1.spf.test include:i2.spf.test include:i3.spf.test include:i4.spf.test include:i5.spf.test -all"],
                ),
                |z, i| z.txt(&format!("i{i}"), 86_400, &[&format!("v=spf1 ip4:198.51.100.{i} -all")]),
            ),
        ])
        .await;
        let mut cfg = ResolverConfig::default();
        cfg.upstream.servers = vec![dns.addr];
        cfg.discovery = DiscoveryMode::Psl;
        let r = Resolver::new(cfg).unwrap();
        let now = Instant::now();
        assert_eq!(
            r.spf("example.test", now).await.unwrap().source,
            Source::Miss
        );
        assert_eq!(
            r.spf("example.test", now).await.unwrap().source,
            Source::Hit
        );
        r.dmarc("sub.example.test", now).await.unwrap();
        let warm = r
            .spf_check(
                "203.0.113.7".parse().unwrap(),
                "user@spf.test",
                "mx.spf.test",
                now,
            )
            .await;
        assert_eq!(warm.dns_lookups, 5, "{warm:?}");
        (r, now, dns)
    });
    let later = now + Duration::from_secs(60);

    // The same kind of store the resolver's cache uses (quick_cache's synchronous cache), and
    // the one it used before (moka's).
    let key: (u8, Arc<str>) = (1, Arc::from("example.test"));
    let store: quick_cache::sync::Cache<(u8, Arc<str>), Arc<String>> =
        quick_cache::sync::Cache::new(1000);
    store.insert(key.clone(), Arc::new("v=spf1 -all".to_owned()));
    let moka: moka::sync::Cache<(u8, Arc<str>), Arc<String>> = moka::sync::Cache::new(1000);
    moka.insert(key.clone(), Arc::new("v=spf1 -all".to_owned()));

    let mut g = c.benchmark_group("cache");
    g.bench_function("baseline_store_get", |b| b.iter(|| store.get(&key)));
    g.bench_function("baseline_moka_get", |b| b.iter(|| moka.get(&key)));
    g.bench_function("resolver_spf_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let l = resolver.spf("example.test", later).await.unwrap();
            debug_assert_eq!(l.source, Source::Hit);
            l
        })
    });
    g.bench_function("resolver_dmarc_discovery_cached", |b| {
        b.to_async(&rt)
            .iter(|| resolver.dmarc("sub.example.test", later))
    });
    let ip: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    g.bench_function("spf_check_5_includes_warm", |b| {
        b.to_async(&rt)
            .iter(|| resolver.spf_check(ip, "user@spf.test", "mx.spf.test", later))
    });
    // Hits on entries in compact form (their parsed answer released from the hot list): a
    // resolver whose hot list holds a few dozen SPF answers, asked 2,000 names in turn.
    // One organization per name (n<i>.test): one organization's budget would refuse most.
    let names: Vec<String> = (0..2_000).map(|i| format!("n{i}.test")).collect();
    let (cold, _cold_dns) = rt.block_on(async {
        let zone = names
            .iter()
            .enumerate()
            .fold(Zone::new("test.", 300), |z, (i, _)| {
                z.txt(
                    &format!("n{i}"),
                    86_400,
                    &[&format!(
                        "v=spf1 ip4:192.0.2.{} include:_spf.example.net -all",
                        i % 250
                    )],
                )
            });
        let dns = TestDns::start(vec![zone]).await;
        let mut cfg = ResolverConfig::default();
        cfg.upstream.servers = vec![dns.addr];
        cfg.cache.max_bytes = 2 << 20;
        let r = Resolver::new(cfg).unwrap();
        for n in &names {
            r.spf(n.as_str(), now).await.unwrap();
        }
        (r, dns)
    });
    let mut i = 0;
    g.bench_function("resolver_spf_hit_rebuilt", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % names.len();
            let name = names[i].as_str();
            let cold = &cold;
            async move {
                let l = cold.spf(name, later).await.unwrap();
                debug_assert_eq!(l.source, Source::Hit);
                l
            }
        })
    });
    g.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
