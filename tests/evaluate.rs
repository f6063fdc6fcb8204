//! SPF check_host() query counts and the DMARC verdict, over zones served by a real
//! authoritative server on loopback: alignment in both modes, `p`/`sp`/`np`, RFC 9989
//! Appendix B.4.3's PSD boundaries, `t=y`, `pct` sampling, must-pass and DKIM2 forwarders.

mod common;
mod dnsserver;

use std::time::{Duration, Instant};

use dnsserver::{TestDns, Zone};
use hickory_server::proto::rr::RData;
use hickory_server::proto::rr::rdata::A;
use mailpolicyd::policy::dmarc::Disposition;
use mailpolicyd::resolve::discover::PolicyTag;
use mailpolicyd::resolve::evaluate::{
    DkimIdentity, DkimResult, DmarcInput, DmarcResult, SpfIdentity,
};
use mailpolicyd::resolve::spf::SpfResult;
use mailpolicyd::resolve::{DiscoveryMode, Resolver, ResolverConfig};

fn a() -> RData {
    RData::A(A("192.0.2.1".parse().unwrap()))
}

fn zones() -> Vec<Zone> {
    let z = |o: &str| Zone::new(o, 300);
    vec![
        z("test."),
        z("example.test.")
            .txt(
                "_dmarc",
                3600,
                &["v=DMARC1; p=reject; sp=quarantine; np=reject"],
            )
            .record("sub", 3600, a()),
        z("strict.test.").txt("_dmarc", 3600, &["v=DMARC1; p=reject; adkim=s; aspf=s"]),
        z("none.test.").txt("_dmarc", 3600, &["v=DMARC1; p=none"]),
        z("testing.test.").txt("_dmarc", 3600, &["v=DMARC1; p=reject; t=y"]),
        z("testq.test.").txt("_dmarc", 3600, &["v=DMARC1; p=quarantine; t=y"]),
        z("pct.test.").txt("_dmarc", 3600, &["v=DMARC1; p=reject; pct=50"]),
        z("mustdkim.test.").txt("_dmarc", 3600, &["v=DMARC1; p=reject; adkim=rp"]),
        z("mustboth.test.").txt("_dmarc", 3600, &["v=DMARC1; p=reject; adkim=rp; aspf=rp"]),
        z("fwd.test.").txt("_dmarc", 3600, &["v=DMARC1; p=none; fp=reject"]),
        z("fwdp.test.").txt("_dmarc", 3600, &["v=DMARC1; p=quarantine"]),
        z("fwdnone.test.").txt("_dmarc", 3600, &["v=DMARC1; p=reject; fp=none"]),
        z("nofwd.test."),
        z("nopolicy.test."),
        z("bank.test.")
            .txt(
                "_dmarc",
                3600,
                &["v=DMARC1; p=reject; psd=y; sp=quarantine; np=reject"],
            )
            .txt("_dmarc.giant", 3600, &["v=DMARC1; p=none"])
            .record("mail.mega", 3600, a()),
        z("split.test.")
            .txt("_dmarc", 3600, &["v=DMARC1; p=reject"])
            .txt("_dmarc.mail", 3600, &["v=DMARC1; p=reject; psd=n"])
            .record("a.mail", 3600, a()),
    ]
}

#[derive(Clone)]
struct Case {
    name: &'static str,
    from: &'static str,
    spf: Option<(&'static str, SpfResult)>,
    dkim: Vec<(&'static str, DkimResult)>,
    forwarders: Vec<&'static str>,
    seed: Option<u64>,
    mode: DiscoveryMode,
    want: (DmarcResult, Disposition),
    tag: Option<PolicyTag>,
}

fn case(name: &'static str, from: &'static str, want: (DmarcResult, Disposition)) -> Case {
    Case {
        name,
        from,
        spf: None,
        dkim: Vec::new(),
        forwarders: Vec::new(),
        seed: None,
        mode: DiscoveryMode::TreeWalk,
        want,
        tag: None,
    }
}

impl Case {
    fn spf(mut self, d: &'static str, r: SpfResult) -> Case {
        self.spf = Some((d, r));
        self
    }
    fn dkim(mut self, d: &'static str, r: DkimResult) -> Case {
        self.dkim.push((d, r));
        self
    }
    fn fwd(mut self, d: &'static str) -> Case {
        self.forwarders.push(d);
        self
    }
    fn psl(mut self) -> Case {
        self.mode = DiscoveryMode::Psl;
        self
    }
    fn tag(mut self, t: PolicyTag) -> Case {
        self.tag = Some(t);
        self
    }
    fn seed(mut self, s: u64) -> Case {
        self.seed = Some(s);
        self
    }
}

use Disposition::{None as Deliver, Quarantine, Reject};
use DkimResult as K;
use DmarcResult::{Fail, None as NoPolicy, Pass};
use SpfResult as S;

/// Seeds for which the deterministic pct draw falls inside / outside a 50 % sample.
fn pct_seeds() -> (u64, u64) {
    let draw = |seed: u64| {
        let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (x ^ (x >> 31)) % 100
    };
    let inside = (0..).find(|s| draw(*s) < 50).unwrap();
    let outside = (0..).find(|s| draw(*s) >= 50).unwrap();
    (inside, outside)
}

fn cases() -> Vec<Case> {
    let (inside, outside) = pct_seeds();
    vec![
        // Alignment, relaxed (RFC 9989 §4.4).
        case("spf aligned relaxed", "example.test", (Pass, Deliver))
            .spf("bounce.example.test", S::Pass),
        case("dkim aligned relaxed", "example.test", (Pass, Deliver))
            .dkim("mail.example.test", K::Pass),
        case("spf unaligned", "example.test", (Fail, Reject))
            .spf("other.test", S::Pass)
            .tag(PolicyTag::P),
        case("spf aligned but failed", "example.test", (Fail, Reject)).spf("example.test", S::Fail),
        case("dkim aligned but failed", "example.test", (Fail, Reject))
            .dkim("example.test", K::Fail)
            .spf("other.test", S::Pass),
        case("both aligned and passed", "example.test", (Pass, Deliver))
            .spf("example.test", S::Pass)
            .dkim("example.test", K::Pass),
        case(
            "one of two signatures aligned",
            "example.test",
            (Pass, Deliver),
        )
        .dkim("other.test", K::Pass)
        .dkim("example.test", K::Pass),
        case("identifier case ignored", "example.test", (Pass, Deliver))
            .dkim("EXAMPLE.TEST", K::Pass),
        case(
            "spf temperror is not a pass",
            "example.test",
            (Fail, Reject),
        )
        .spf("example.test", S::TempError),
        case("no identifiers at all", "example.test", (Fail, Reject)),
        // Strict.
        case("strict spf subdomain", "strict.test", (Fail, Reject))
            .spf("bounce.strict.test", S::Pass),
        case("strict dkim exact", "strict.test", (Pass, Deliver)).dkim("strict.test", K::Pass),
        case("strict dkim subdomain", "strict.test", (Fail, Reject))
            .dkim("mail.strict.test", K::Pass),
        // p / sp / np (RFC 9989 §4.10.1).
        case(
            "existing subdomain: sp",
            "sub.example.test",
            (Fail, Quarantine),
        )
        .spf("other.test", S::Pass)
        .tag(PolicyTag::Sp),
        case(
            "non-existent subdomain: np",
            "ghost.example.test",
            (Fail, Reject),
        )
        .tag(PolicyTag::Np),
        case(
            "subdomain aligned relaxed",
            "sub.example.test",
            (Pass, Deliver),
        )
        .dkim("example.test", K::Pass),
        case("p=none fails but delivers", "none.test", (Fail, Deliver)).spf("other.test", S::Pass),
        // t=y (RFC 9989 §4.7).
        case("t=y lowers reject", "testing.test", (Fail, Quarantine)),
        case("t=y lowers quarantine", "testq.test", (Fail, Deliver)),
        case("t=y pass", "testing.test", (Pass, Deliver)).dkim("testing.test", K::Pass),
        // pct (RFC 7489 §6.6.4), deterministic draws.
        case("pct sampled", "pct.test", (Fail, Reject)).seed(inside),
        case("pct not sampled", "pct.test", (Fail, Quarantine)).seed(outside),
        // Must-pass (extension).
        case(
            "must-pass dkim: dkim passes",
            "mustdkim.test",
            (Pass, Deliver),
        )
        .dkim("mustdkim.test", K::Pass),
        case(
            "must-pass dkim: only spf passes",
            "mustdkim.test",
            (Fail, Reject),
        )
        .spf("mustdkim.test", S::Pass),
        case(
            "must-pass both: both pass",
            "mustboth.test",
            (Pass, Deliver),
        )
        .spf("mustboth.test", S::Pass)
        .dkim("mustboth.test", K::Pass),
        case("must-pass both: only dkim", "mustboth.test", (Fail, Reject))
            .dkim("mustboth.test", K::Pass),
        case("must-pass both: only spf", "mustboth.test", (Fail, Reject))
            .spf("mustboth.test", S::Pass),
        // DKIM2 forwarders (extension).
        case(
            "forwarder fp=reject beats p=none",
            "none.test",
            (Fail, Reject),
        )
        .fwd("fwd.test"),
        case(
            "forwarder without fp: its p",
            "none.test",
            (Fail, Quarantine),
        )
        .fwd("fwdp.test"),
        case(
            "forwarder laxer than the origin",
            "example.test",
            (Fail, Reject),
        )
        .fwd("fwdnone.test"),
        case("forwarder without a record", "none.test", (Fail, Deliver)).fwd("nofwd.test"),
        case("forwarders ignored on pass", "none.test", (Pass, Deliver))
            .dkim("none.test", K::Pass)
            .fwd("fwd.test"),
        // PSD boundaries (RFC 9989 Appendix B.4.3).
        case(
            "B.4.3 spf under the same org",
            "giant.bank.test",
            (Pass, Deliver),
        )
        .spf("mail.giant.bank.test", S::Pass),
        case(
            "B.4.3 dkim of another org",
            "giant.bank.test",
            (Fail, Deliver),
        )
        .dkim("mail.mega.bank.test", K::Pass),
        case(
            "B.4.3 PSD record: sp",
            "mail.mega.bank.test",
            (Fail, Quarantine),
        )
        .tag(PolicyTag::Sp),
        case(
            "B.4.3 PSD record: np",
            "ghost.mega.bank.test",
            (Fail, Reject),
        )
        .tag(PolicyTag::Np),
        case("PSD siblings do not align", "x.bank.test", (Fail, Reject))
            .dkim("y.bank.test", K::Pass),
        // No policy.
        case("no DMARC record", "nopolicy.test", (NoPolicy, Deliver)).spf("other.test", S::Fail),
        // Tree walk vs PSL for relaxed alignment.
        case(
            "treewalk: psd=n splits the org",
            "a.mail.split.test",
            (Fail, Reject),
        )
        .spf("other.split.test", S::Pass),
        case("psl: one org", "a.mail.split.test", (Pass, Deliver))
            .spf("other.split.test", S::Pass)
            .psl(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_evaluation_table() {
    let dns = TestDns::start(zones()).await;
    let resolver = |mode: DiscoveryMode| {
        let mut cfg = common::resolver_config(dns.addr, Duration::from_millis(500));
        cfg.discovery = mode;
        Resolver::new(cfg).unwrap()
    };
    let (treewalk, psl) = (
        resolver(DiscoveryMode::TreeWalk),
        resolver(DiscoveryMode::Psl),
    );
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for c in &cases {
        let input = DmarcInput {
            from_domain: c.from.into(),
            spf: c.spf.map(|(d, r)| SpfIdentity {
                domain: d.into(),
                result: r,
            }),
            dkim: c
                .dkim
                .iter()
                .map(|(d, r)| DkimIdentity {
                    domain: (*d).into(),
                    selector: "s1".into(),
                    result: *r,
                })
                .collect(),
            forwarders: c.forwarders.iter().map(|s| (*s).to_owned()).collect(),
            seed: c.seed,
        };
        let r = if c.mode == DiscoveryMode::Psl {
            &psl
        } else {
            &treewalk
        };
        let v = r.dmarc_evaluate(&input, Instant::now()).await;
        let mut ok = (v.result, v.disposition) == c.want;
        if let Some(t) = c.tag {
            ok &= v.applied == Some(t);
        }
        if !ok {
            failures.push(format!(
                "{}: got {:?}/{:?} tag {:?}, want {:?} tag {:?}; {:?}",
                c.name, v.result, v.disposition, v.applied, c.want, c.tag, v.notes
            ));
        }
    }
    println!(
        "dmarc evaluation: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_details() {
    let dns = TestDns::start(zones()).await;
    let mut cfg = ResolverConfig::default();
    cfg.upstream.servers = vec![dns.addr];
    let r = Resolver::new(cfg).unwrap();
    let now = Instant::now();
    let v = r
        .dmarc_evaluate(
            &DmarcInput {
                from_domain: "none.test".into(),
                forwarders: vec!["fwd.test".into(), "fwdp.test".into()],
                ..Default::default()
            },
            now,
        )
        .await;
    assert_eq!(v.candidates.len(), 3, "the author's and both forwarders'");
    assert_eq!(v.candidates[v.winner.unwrap()].source, "fwd.test");
    assert_eq!(v.candidates[v.winner.unwrap()].tag, "fp");
    let v = r
        .dmarc_evaluate(
            &DmarcInput {
                from_domain: "testing.test".into(),
                ..Default::default()
            },
            now,
        )
        .await;
    assert!(v.test_mode_downgrade);
    let v = r
        .dmarc_evaluate(
            &DmarcInput {
                from_domain: "mustboth.test".into(),
                dkim: vec![DkimIdentity {
                    domain: "mustboth.test".into(),
                    selector: "s".into(),
                    result: DkimResult::Pass,
                }],
                ..Default::default()
            },
            now,
        )
        .await;
    assert_eq!(v.must_pass, Some((true, true, false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_check_query_counts() {
    let includes: Vec<String> = (1..=5).map(|i| format!("include:i{i}.spf.test")).collect();
    let top = format!("v=spf1 {} -all", includes.join(" "));
    let mut zone = Zone::new("spf.test.", 300)
        .txt("@", 3600, &[&top])
        .txt(
            "direct",
            3600,
            &["v=spf1 ip4:192.0.2.0/24 -all exp=why.spf.test"],
        )
        .txt("why", 3600, &["%{i} is not one of %{d}'s senders"]);
    for i in 1..=5 {
        zone = zone.txt(
            &format!("i{i}"),
            3600,
            &[&format!("v=spf1 ip4:198.51.100.{i} -all")],
        );
    }
    let dns = TestDns::start(vec![zone]).await;
    let mut cfg = ResolverConfig::default();
    cfg.upstream.servers = vec![dns.addr];
    let r = Resolver::new(cfg).unwrap();
    let now = Instant::now();
    let ip = "203.0.113.7".parse().unwrap();

    // Five includes, none matching: 1 + 5 queries cold, 0 warm.
    let cold = r.spf_check(ip, "user@spf.test", "mx.spf.test", now).await;
    assert_eq!(cold.result, SpfResult::Fail);
    assert_eq!(cold.mechanism.as_deref(), Some("-all"));
    assert_eq!(cold.dns_lookups, 5);
    assert_eq!(dns.log.len(), 6, "5-include tree cold: 6 upstream queries");
    let warm = r.spf_check(ip, "user@spf.test", "mx.spf.test", now).await;
    assert_eq!(warm, cold);
    assert_eq!(dns.log.len(), 6, "warm: 0 upstream queries");
    // A match inside an include.
    let hit = r
        .spf_check("198.51.100.3".parse().unwrap(), "user@spf.test", "mx", now)
        .await;
    assert_eq!(hit.result, SpfResult::Pass);
    assert_eq!(hit.mechanism.as_deref(), Some("include:i3.spf.test"));
    assert!(
        hit.received_spf.starts_with(
            "pass (mailpolicyd: domain of spf.test designates 198.51.100.3 as permitted sender)"
        ),
        "{}",
        hit.received_spf
    );
    assert!(hit.received_spf.contains(
        "client-ip=198.51.100.3; envelope-from=\"user@spf.test\"; helo=mx; identity=mailfrom"
    ));
    // Explanations are expanded; the second identical check asks nothing.
    let before = dns.log.len();
    let f = r.spf_check(ip, "user@direct.spf.test", "mx", now).await;
    assert_eq!(
        f.explanation.as_deref(),
        Some("203.0.113.7 is not one of direct.spf.test's senders")
    );
    let queries = dns.log.len() - before;
    assert_eq!(queries, 2);
    r.spf_check(ip, "user@direct.spf.test", "mx", now).await;
    assert_eq!(
        dns.log.len() - before,
        2,
        "a second SpfCheck for the same domain and IP: 0 upstream queries"
    );
    // Null sender: the HELO identity.
    let helo = r.spf_check(ip, "", "direct.spf.test", now).await;
    assert_eq!(
        (helo.identity.as_str(), helo.domain.as_str(), helo.result),
        ("helo", "direct.spf.test", SpfResult::Fail)
    );
}
