//! Issue 12, DMARC safety, against a real authoritative server on loopback (hickory-server in
//! process) and the real socket server and CLI:
//! - From domains so long that `_dmarc.<domain>` cannot be formed still get their organization's
//!   policy (RFC 9989 §4.10: the name is skipped, the walk goes on), in every discovery mode and
//!   through every entry point; a From domain beyond DNS's lengths (over 253 octets, a label
//!   over 63) cannot exist: the organization's `np` applies; a garbage From domain (empty
//!   labels, spaces, control characters) is an error, never "none";
//! - an organization's burst over its upstream budget is answered from the organization's cached
//!   record, flagged and counted; an error only when nothing cached can answer.

mod common;
mod dnsserver;

use std::process::Command;
use std::time::{Duration, Instant};

use dnsserver::{TestDns, Zone};
use hickory_server::proto::rr::RData;
use hickory_server::proto::rr::rdata::A;
use mailpolicyd::client::{Client, ClientError};
use mailpolicyd::policy::dmarc::Disposition;
use mailpolicyd::resolve::discover::{FoundAt, PolicyTag};
use mailpolicyd::resolve::evaluate::{
    DkimIdentity, DkimResult, DmarcInput, DmarcResult, DmarcVerdict,
};
use mailpolicyd::resolve::{
    DiscoveryMode, Kind, Rcode, ResolveError, Resolver, ResolverConfig, Source,
};
use mailpolicyd::serve::{self, SocketConfig};

const MODES: [DiscoveryMode; 3] = [
    DiscoveryMode::Psl,
    DiscoveryMode::TreeWalk,
    DiscoveryMode::Both,
];

fn zones() -> Vec<Zone> {
    vec![
        Zone::new("test.", 300),
        Zone::new("reject.test.", 300)
            .txt("_dmarc", 3600, &["v=DMARC1; p=reject"])
            .record("www", 3600, RData::A(A("192.0.2.1".parse().unwrap()))),
        Zone::new("split.test.", 300)
            .txt("_dmarc", 3600, &["v=DMARC1; p=reject; sp=none; np=reject"])
            .record("www", 3600, RData::A(A("192.0.2.2".parse().unwrap()))),
        Zone::new("nopolicy.test.", 300),
    ]
}

fn config(dns: &TestDns, mode: DiscoveryMode) -> ResolverConfig {
    let mut cfg = common::resolver_config(dns.addr, Duration::from_millis(500));
    cfg.upstream.attempts = 1;
    cfg.discovery = mode;
    cfg
}

/// A resolver of `dns` for each of `modes`, configured by `cfg`, made as the loop reaches it.
fn per_mode<'a>(
    dns: &'a TestDns,
    modes: &'a [DiscoveryMode],
    cfg: impl Fn(&TestDns, DiscoveryMode) -> ResolverConfig + 'a,
) -> impl Iterator<Item = (DiscoveryMode, Resolver)> + 'a {
    modes
        .iter()
        .map(move |&mode| (mode, Resolver::new(cfg(dns, mode)).unwrap()))
}

/// Asserts that a message failing DMARC was rejected (`what` and the notes if not).
fn assert_rejected(v: &DmarcVerdict, what: &str) {
    assert_eq!(
        (v.result, v.disposition),
        (DmarcResult::Fail, Disposition::Reject),
        "{what}: {:?}",
        v.notes
    );
}

/// The verdict for a message from `from` failing DMARC but for a DKIM pass of `dkim_domain`.
async fn verdict_with_dkim_pass(
    r: &Resolver,
    from: &str,
    dkim_domain: &str,
    now: Instant,
) -> DmarcVerdict {
    let mut input = failing(from);
    input.dkim[0].domain = dkim_domain.into();
    r.dmarc_evaluate(&input, now).await
}

/// A name of exactly `len` octets ending in `.<parent>`, in labels of at most 63 octets.
fn long_name(len: usize, parent: &str) -> String {
    let mut room = len - parent.len() - 1;
    let mut labels = Vec::new();
    let mut c = b'a';
    while room > 0 {
        // A label, and its dot when another label follows (which needs at least one octet).
        let n = if room <= 63 { room } else { 63.min(room - 2) };
        labels.push(String::from_utf8(vec![c; n]).unwrap());
        room -= n.min(room);
        room = room.saturating_sub(1);
        c += 1;
    }
    let name = format!("{}.{parent}", labels.join("."));
    assert_eq!(name.len(), len, "{name}");
    name
}

fn failing(from: &str) -> DmarcInput {
    DmarcInput {
        from_domain: from.into(),
        dkim: vec![DkimIdentity {
            domain: "other.test".into(),
            selector: "s".into(),
            result: DkimResult::Pass,
        }],
        ..Default::default()
    }
}

/// `from`'s discovery finds `reject.test`'s record at the organizational domain, knows the name
/// does not exist and applies np = reject; a message failing DMARC is rejected under np.
/// Returns the discovery's notes. `what` names the case in failure messages.
async fn rejected_under_np(r: &Resolver, from: &str, now: Instant, what: &str) -> Vec<String> {
    let d = r
        .dmarc(from, now)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(d.found_at.as_deref(), Some("reject.test"), "{what}");
    assert_eq!(d.reason, Some(FoundAt::OrganizationalDomain));
    assert_eq!(d.domain_exists, Some(false), "{what}");
    assert_eq!(
        d.applied,
        Some((PolicyTag::Np, Disposition::Reject)),
        "{what}"
    );
    let v = r.dmarc_evaluate(&failing(from), now).await;
    assert_rejected(&v, what);
    assert_eq!(v.applied, Some(PolicyTag::Np));
    d.notes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_long_from_domain_still_rejects() {
    let dns = TestDns::start(zones()).await;
    let now = Instant::now();
    for (mode, r) in per_mode(&dns, &MODES, config) {
        for len in 240..=253 {
            let from = long_name(len, "reject.test");
            // The existence check asks the name itself (an A query needs no prefix).
            let notes = rejected_under_np(&r, &from, now, &format!("{mode:?} {len}")).await;
            if len + 7 > 253 {
                assert!(
                    notes.iter().any(|n| n.contains("longer than 253")),
                    "{mode:?} {len}: {:?}",
                    notes
                );
            }
            // Relaxed alignment of an identifier that long walks the same way.
            let v = verdict_with_dkim_pass(&r, &from, &from, now).await;
            assert_eq!(v.result, DmarcResult::Pass, "{mode:?} {len}: {:?}", v.notes);
        }
        // The name `_dmarc.<253 octets>` was never sent upstream.
        assert_eq!(
            dns.log.count_where(|n| n.len() > 253),
            0,
            "{:?}",
            dns.log.all()
        );
    }
}

/// From domains beyond DNS's lengths, under `reject.test`: 254..=400 octets, a label of 64
/// and more octets (at the author domain, in the middle, with a long name).
fn unformable_names() -> Vec<String> {
    let mut names: Vec<String> = (254..=400)
        .step_by(7)
        .chain([254, 255, 300, 399, 400])
        .map(|len| long_name(len, "reject.test"))
        .collect();
    names.push(format!("{}.reject.test", "l".repeat(64)));
    names.push(format!("{}.reject.test", "m".repeat(200)));
    names.push(format!("x.{}.reject.test", "n".repeat(64)));
    names.push(format!(
        "{}.{}",
        "o".repeat(100),
        long_name(290, "reject.test")
    ));
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_from_domain_beyond_dns_lengths_gets_np_not_permerror() {
    let dns = TestDns::start(zones()).await;
    let now = Instant::now();
    for (mode, r) in per_mode(&dns, &MODES, config) {
        for from in unformable_names() {
            let len = from.len();
            // It cannot exist: np applies, without an existence query.
            let notes = rejected_under_np(&r, &from, now, &format!("{mode:?} {len}")).await;
            assert!(
                notes.iter().any(|n| n.contains("cannot exist in DNS")),
                "{mode:?} {len}: {:?}",
                notes
            );
            // Relaxed alignment against its organization: a DKIM pass for the org aligns.
            let v = verdict_with_dkim_pass(&r, &from, "reject.test", now).await;
            assert_eq!(v.result, DmarcResult::Pass, "{mode:?} {len}: {:?}", v.notes);
            assert_eq!(v.dkim[0].org_domain.as_deref(), Some("reject.test"));
            // And the other way: the long name as the identifier, a sibling as the author.
            let v = verdict_with_dkim_pass(&r, "www.reject.test", &from, now).await;
            assert_eq!(v.result, DmarcResult::Pass, "{mode:?} {len}: {:?}", v.notes);
        }
        // No query name beyond DNS's lengths was ever sent.
        assert_eq!(
            dns.log
                .count_where(|n| n.len() > 253 || n.split('.').any(|l| l.len() > 63)),
            0,
            "{:?}",
            dns.log.all()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_garbage_from_domain_is_permerror_not_none() {
    let dns = TestDns::start(zones()).await;
    let now = Instant::now();
    for (mode, r) in per_mode(&dns, &MODES, config) {
        for bad in [
            "a..reject.test".to_owned(),
            String::new(),
            ".".to_owned(),
            format!("{}..reject.test", "x".repeat(260)),
            format!("has space{}.reject.test", "x".repeat(260)),
            format!("ctl\u{1}{}.reject.test", "x".repeat(260)),
            format!("{} .reject.test", "x".repeat(300)),
        ] {
            let v = r.dmarc_evaluate(&failing(&bad), now).await;
            assert_eq!(v.result, DmarcResult::PermError, "{mode:?} {bad:?}");
            assert!(
                matches!(r.dmarc(&bad, now).await, Err(ResolveError::InvalidName(_))),
                "{mode:?} {bad:?}"
            );
        }
    }
}

type Daemon = common::Daemon<()>;

async fn daemon(cfg: ResolverConfig) -> Daemon {
    common::serve_resolver(cfg, SocketConfig::default(), ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_long_from_domain_rejects_over_the_socket_and_cli() {
    let dns = TestDns::start(zones()).await;
    for mode in MODES {
        let d = daemon(config(&dns, mode)).await;
        let c = Client::connect(&d.socket).await.unwrap();
        let froms = [240, 246, 247, 250, 253, 254, 255, 300, 400]
            .map(|len| long_name(len, "reject.test"))
            .into_iter()
            .chain([
                format!("{}.reject.test", "l".repeat(64)),
                format!("x.{}.Reject.Test.", "n".repeat(70)),
            ]);
        for from in froms {
            let len = from.len();
            let a = c.dmarc(&from).await.unwrap();
            assert_eq!(a.found_at.as_deref(), Some("reject.test"), "{mode:?} {len}");
            assert_eq!(a.applied, Some((PolicyTag::Np, Disposition::Reject)));
            let v = c.dmarc_evaluate(failing(&from)).await.unwrap();
            assert_eq!(
                (v.result, v.disposition),
                (DmarcResult::Fail, Disposition::Reject),
                "{mode:?} {len}"
            );
            let json = common::query_json(&d.socket, &["dmarc", &from]);
            assert_eq!(json["dmarc"]["found_at"], "reject.test", "{json}");
            assert_eq!(json["dmarc"]["applied"][1], "reject", "{json}");
        }
        // A garbage From domain over the socket is an error, never a verdict of "none".
        for garbage in [
            format!("x{}..reject.test", "y".repeat(300)),
            format!("sp ace{}.reject.test", "y".repeat(300)),
            "a..reject.test".to_owned(),
        ] {
            match c.dmarc_evaluate(failing(&garbage)).await {
                Err(ClientError::Server(e)) => assert_eq!(e.code, "invalid_name"),
                other => panic!("{other:?}"),
            }
            match c.dmarc(&garbage).await {
                Err(ClientError::Server(e)) => assert_eq!(e.code, "invalid_name"),
                other => panic!("{other:?}"),
            }
        }
        d.shutdown.cancel();
    }
}

/// A limiter of `burst` queries and 1/s.
fn small_budget(dns: &TestDns, mode: DiscoveryMode, burst: u32) -> ResolverConfig {
    let mut cfg = config(dns, mode);
    cfg.limits.per_second = 1;
    cfg.limits.burst = burst;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_burst_over_budget_answers_from_cached_org_record() {
    let dns = TestDns::start(zones()).await;
    let now = Instant::now();
    for (mode, r) in per_mode(&dns, &MODES, |dns, mode| small_budget(dns, mode, 20)) {
        // The organization's record is cached first.
        let org = r.dmarc("reject.test", now).await.unwrap();
        assert_eq!(org.applied, Some((PolicyTag::P, Disposition::Reject)));
        let mut fallback = 0u64;
        for i in 0..300 {
            let from = format!("host{i}.reject.test");
            let d = r
                .dmarc(&from, now)
                .await
                .unwrap_or_else(|e| panic!("{mode:?} {from}: {e}"));
            assert_eq!(d.found_at.as_deref(), Some("reject.test"));
            assert_eq!(d.applied.map(|a| a.1), Some(Disposition::Reject));
            if d.rate_limited_fallback {
                fallback += 1;
                assert_eq!(d.source(), Source::RateLimitedFallback);
                // Its own `_dmarc` record, or its existence (sp = np here), was not asked.
                assert!(
                    d.queries
                        .contains(&(format!("_dmarc.{from}"), Source::RateLimitedFallback))
                        || d.notes.iter().any(|n| n.contains("existence not asked")),
                    "{:?} {:?}",
                    d.queries,
                    d.notes
                );
                assert!(
                    d.notes
                        .iter()
                        .any(|n| n.contains("rate limited") && n.contains("not asked")),
                    "{:?}",
                    d.notes
                );
            } else {
                assert_ne!(d.source(), Source::RateLimitedFallback);
            }
            let v = r.dmarc_evaluate(&failing(&from), now).await;
            assert_rejected(&v, &format!("{mode:?} {from}"));
        }
        assert!(fallback >= 250, "{mode:?}: only {fallback} fallbacks");
        let s = r.stats().await;
        assert!(s.rate_limited_fallback >= fallback, "{s:?}");
        assert!(s.rate_limited > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_burst_with_nothing_cached_is_still_rate_limited() {
    let dns = TestDns::start(zones()).await;
    let now = Instant::now();
    for (mode, r) in per_mode(&dns, &MODES, |dns, mode| small_budget(dns, mode, 5)) {
        // No record at the organization: nothing to answer from, so over the budget the
        // subdomain's question is an error, not "no policy".
        let mut limited = 0;
        for i in 0..30 {
            match r.dmarc(&format!("h{i}.nopolicy.test"), now).await {
                Ok(d) => assert!(d.applied.is_none() && !d.rate_limited_fallback),
                Err(ResolveError::RateLimited) => limited += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(limited >= 20, "{mode:?}: {limited}");
        let v = r.dmarc_evaluate(&failing("h29.nopolicy.test"), now).await;
        assert_eq!(v.result, DmarcResult::TempError, "{:?}", v.notes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_burst_with_sp_and_np_different_is_rate_limited_not_guessed() {
    let dns = TestDns::start(zones()).await;
    let now = Instant::now();
    for (mode, r) in per_mode(&dns, &MODES, |dns, mode| small_budget(dns, mode, 8)) {
        r.dmarc("split.test", now).await.unwrap();
        // What the cache knows about existence, learnt within the budget: `www` has an
        // address, `gone` does not exist.
        let www = r.lookup(Kind::A, "www.split.test", now).await.unwrap();
        assert_eq!(www.answer.rcode, Rcode::NoError);
        let gone = r
            .lookup(Kind::Exists, "gone.split.test", now)
            .await
            .unwrap();
        assert_eq!(gone.answer.rcode, Rcode::NxDomain);
        // sp=none, np=reject: whether the subdomain exists decides, and over the budget that
        // cannot be asked: the error stands (temperror), never the stricter or laxer guess.
        let mut limited = 0;
        for i in 0..30 {
            let from = format!("h{i}.split.test");
            match r.dmarc(&from, now).await {
                Ok(d) => {
                    assert_eq!(d.domain_exists, Some(false), "{d:?}");
                    assert_eq!(d.applied, Some((PolicyTag::Np, Disposition::Reject)));
                }
                Err(ResolveError::RateLimited) => {
                    limited += 1;
                    let v = r.dmarc_evaluate(&failing(&from), now).await;
                    assert_eq!(v.result, DmarcResult::TempError, "{mode:?} {:?}", v.notes);
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(limited >= 20, "{mode:?}: {limited}");
        // Existence known from the cache decides, flagged and counted once per message.
        let before = r.stats().await.rate_limited_fallback;
        let d = r.dmarc("www.split.test", now).await.unwrap();
        assert_eq!(d.domain_exists, Some(true), "{mode:?} {d:?}");
        assert_eq!(d.applied, Some((PolicyTag::Sp, Disposition::None)));
        assert!(d.rate_limited_fallback);
        assert_eq!(d.source(), Source::RateLimitedFallback);
        assert!(
            d.notes.iter().any(|n| n.contains("known from the cache")),
            "{:?}",
            d.notes
        );
        assert_eq!(r.stats().await.rate_limited_fallback, before + 1);
        // Below a known NXDOMAIN: it cannot exist either.
        let d = r.dmarc("h.gone.split.test", now).await.unwrap();
        assert_eq!(d.domain_exists, Some(false), "{mode:?} {d:?}");
        assert_eq!(d.applied, Some((PolicyTag::Np, Disposition::Reject)));
        assert!(d.rate_limited_fallback);
        let v = r.dmarc_evaluate(&failing("h.gone.split.test"), now).await;
        assert_eq!(
            (v.result, v.disposition),
            (DmarcResult::Fail, Disposition::Reject)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_burst_fallback_is_counted_once_per_message() {
    let dns = TestDns::start(zones()).await;
    let now = Instant::now();
    for (mode, r) in per_mode(
        &dns,
        &[DiscoveryMode::TreeWalk, DiscoveryMode::Both],
        |dns, mode| small_budget(dns, mode, 3),
    ) {
        r.dmarc("reject.test", now).await.unwrap();
        // Spend the budget.
        for i in 0..10 {
            let _ = r.spf(&format!("spend{i}.reject.test"), now).await;
        }
        let mut counted = 0;
        for i in 0..5 {
            // Discovery and both alignment walks (the author's, the identifier's) fall back.
            let (from, dkim) = (format!("m{i}.reject.test"), format!("d{i}.sub.reject.test"));
            let before = r.stats().await.rate_limited_fallback;
            let v = verdict_with_dkim_pass(&r, &from, &dkim, now).await;
            // The DKIM pass of a sibling aligns (relaxed) with the organization's record.
            assert_eq!(v.result, DmarcResult::Pass, "{:?}", v.notes);
            let delta = r.stats().await.rate_limited_fallback - before;
            assert!(delta <= 1, "{mode:?}: counted {delta} times: {:?}", v.notes);
            counted += delta;
        }
        assert!(counted >= 3, "{mode:?}: {counted}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_burst_over_the_socket_gets_no_rate_limited_errors() {
    let dns = TestDns::start(zones()).await;
    let d = daemon(small_budget(&dns, DiscoveryMode::TreeWalk, 40)).await;
    let c = Client::connect(&d.socket).await.unwrap();
    c.dmarc("reject.test").await.unwrap();
    let mut flagged = 0;
    for i in 0..300 {
        let from = format!("burst{i}.reject.test");
        let a = c
            .dmarc(&from)
            .await
            .unwrap_or_else(|e| panic!("{from}: {e}"));
        assert_eq!(a.found_at.as_deref(), Some("reject.test"));
        assert_eq!(a.applied.map(|t| t.1), Some(Disposition::Reject));
        if a.source == Source::RateLimitedFallback {
            flagged += 1;
            assert!(a.notes.iter().any(|n| n.contains("not asked")), "{a:?}");
        }
        assert_rejected(&c.dmarc_evaluate(failing(&from)).await.unwrap(), &from);
    }
    assert!(flagged >= 200, "{flagged}");
    let text = serve::admin::render(&d.service);
    let counted: u64 = text
        .lines()
        .find(|l| l.starts_with("mailpolicyd_rate_limited_fallback_total"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse().unwrap());
    assert!(counted >= flagged, "{counted} < {flagged}\n{text}");
    d.shutdown.cancel();
}

#[test]
fn parse_orgdomain_shows_unformable_dmarc_names_as_skipped() {
    for (from, reason) in [
        (long_name(250, "example.com"), "longer than 253 octets"),
        (long_name(330, "example.com"), "longer than 253 octets"),
        (
            format!("x.{}.example.com", "l".repeat(64)),
            "a label is longer than 63 octets",
        ),
    ] {
        let out = common::run_ok(Command::new(env!("CARGO_BIN_EXE_mailpolicyd")).args([
            "parse",
            "orgdomain",
            &from,
        ]));
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["org_domain"], "example.com", "{json}");
        let queries = json["tree_walk_queries"].as_array().unwrap();
        // Only names discovery really asks: each within DNS's lengths, down to the TLD.
        for q in queries {
            let q = q.as_str().unwrap();
            assert!(q.len() <= 253 && q.split('.').all(|l| l.len() <= 63), "{q}");
        }
        assert!(queries.contains(&serde_json::json!("_dmarc.example.com")));
        let skipped = json["tree_walk_skipped"].as_array().unwrap();
        assert!(!skipped.is_empty(), "{json}");
        assert_eq!(skipped[0]["name"], format!("_dmarc.{from}"), "{json}");
        assert_eq!(skipped[0]["reason"], reason, "{json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_long_from_domain_rejects_over_json_lines() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dns = TestDns::start(zones()).await;
    let d = daemon(config(&dns, DiscoveryMode::TreeWalk)).await;
    let stream = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let from = long_name(320, "reject.test");
    let garbage = format!("sp ace{}.reject.test", "y".repeat(300));
    let requests = [
        serde_json::json!({"id": 1, "op": {"dmarc": {"domain": from}}}),
        serde_json::json!({"id": 2, "op": {"dmarc_evaluate": {"from_domain": from,
            "spf": null, "forwarders": [], "seed": null,
            "dkim": [{"domain": "other.test", "selector": "s", "result": "pass"}]}}}),
        serde_json::json!({"id": 3, "op": {"dmarc_evaluate": {"from_domain": garbage,
            "spf": null, "dkim": [], "forwarders": [], "seed": null}}}),
    ];
    let mut replies = Vec::new();
    for r in requests {
        write.write_all(format!("{r}\n").as_bytes()).await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        replies.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let dmarc = &replies[0]["result"]["ok"]["dmarc"];
    assert_eq!(dmarc["found_at"], "reject.test", "{}", replies[0]);
    assert_eq!(dmarc["applied"], serde_json::json!(["np", "reject"]));
    assert_eq!(dmarc["domain_exists"], false);
    let verdict = &replies[1]["result"]["ok"]["dmarc_verdict"];
    assert_eq!(verdict["result"], "fail", "{}", replies[1]);
    assert_eq!(verdict["disposition"], "reject");
    assert_eq!(
        replies[2]["result"]["error"]["code"], "invalid_name",
        "{}",
        replies[2]
    );
    d.shutdown.cancel();
}
