//! Parser throughput on realistic records: a typical DMARC record with rua/ruf, an SPF record
//! with five includes, a 2048-bit RSA DKIM key, plus ATPS and TLSA. Targets on the 2-core
//! reference machine: DMARC ≤ 150 ns, SPF ≤ 300 ns, DKIM key ≤ 1 µs. The `baseline` group
//! measures copying the record text into a `String`, so each figure can be read as a ratio to
//! the cheapest possible "parse" measured in the same run.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mailpolicyd::policy::{atps, dkim, dmarc, spf, tlsa};

const DMARC: &str = "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r; \
    rua=mailto:dmarc-agg@example.com,mailto:agg@thirdparty.example.net; \
    ruf=mailto:dmarc-fail@example.com; fo=1";
const SPF: &str = "v=spf1 ip4:192.0.2.0/24 include:_spf.google.com include:spf.protection.outlook.com \
    include:servers.mcsv.net include:_spf.salesforce.com include:sendgrid.net ~all";
const ATPS: &str = "v=ATPS1; d=signer.example.net";
const TLSA: &str = "3 1 1 8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1";

fn parsers(c: &mut Criterion) {
    let dkim_record = format!(
        "v=DKIM1; k=rsa; p={}",
        include_str!("../tests/data/dkim/rsa2048.spki.b64")
    );
    // Make sure every benchmarked record is valid, so the figures are for the full path.
    assert!(dmarc::parse(DMARC).is_ok() && spf::parse(SPF).is_ok() && atps::parse(ATPS).is_ok());
    assert_eq!(
        dkim::parse(&dkim_record).unwrap().policy.key_bits,
        Some(2048)
    );
    assert!(tlsa::parse(TLSA).unwrap().policy.dane_smtp_usable());

    let mut g = c.benchmark_group("parse");
    g.bench_function("baseline_copy_dmarc_text", |b| {
        b.iter(|| black_box(DMARC).to_owned())
    });
    g.bench_function("dmarc", |b| b.iter(|| dmarc::parse(black_box(DMARC))));
    g.bench_function("dmarc_no_uris", |b| {
        b.iter(|| {
            dmarc::parse(black_box(
                "v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r; fo=1",
            ))
        })
    });
    g.bench_function("spf_5_includes", |b| b.iter(|| spf::parse(black_box(SPF))));
    g.bench_function("dkim_rsa2048", |b| {
        b.iter(|| dkim::parse(black_box(&dkim_record)))
    });
    g.bench_function("atps", |b| b.iter(|| atps::parse(black_box(ATPS))));
    g.bench_function("tlsa", |b| b.iter(|| tlsa::parse(black_box(TLSA))));
    g.bench_function("atps_query_name_sha256", |b| {
        b.iter(|| {
            atps::query_name(
                black_box("example.net"),
                black_box("example.com"),
                atps::AtpsHash::Sha256,
                true,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
