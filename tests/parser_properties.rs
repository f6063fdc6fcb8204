//! Properties of the pure parsers, checked with proptest (bounded case counts so CI stays fast):
//! - no parser panics, on arbitrary bytes or on soups of record fragments;
//! - DMARC and SPF: parse → display → parse gives the same policy (the canonical form is
//!   stable and loses nothing).

use mailpolicyd::policy::orgdomain;
use mailpolicyd::policy::spf::{MacroContext, MacroString};
use mailpolicyd::policy::{atps, dkim, dmarc, join_txt, spf, tlsa};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Fragments real records are made of, so random soups reach past the version check.
const FRAGMENTS: &[&str] = &[
    "v=DMARC1",
    "v=spf1",
    "v=DKIM1",
    "v=ATPS1",
    ";",
    " ",
    "=",
    "p=",
    "reject",
    "none",
    "sp=",
    "np=",
    "rua=",
    "mailto:",
    "@",
    "!",
    "10m",
    ",",
    "adkim=",
    "rp",
    "pct=",
    "fo=",
    "0:1:d",
    "psd=y",
    "t=y",
    "fp=",
    "include:",
    "a",
    "mx",
    "/",
    "//",
    "24",
    "ip4:",
    "ip6:",
    "::",
    "192.0.2.1",
    "%{",
    "}",
    "%",
    "d",
    "ir",
    "l1r-",
    "exists:",
    "redirect=",
    "exp=",
    "ptr",
    "-all",
    "~",
    "?",
    "+",
    "k=",
    "ed25519",
    "rsa",
    "MIIB",
    "AAAA",
    "==",
    "h=sha256",
    "s=email",
    "t=s",
    "d=",
    "3 1 1 ",
    "ab",
    ".",
    "example.com",
    "\u{e9}",
    "\t",
    "\r\n",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..24).prop_map(|v| v.concat())
}

fn exercise(text: &str) {
    let _ = dmarc::parse(text);
    let _ = dmarc::from_txt([text, text]);
    let _ = spf::parse(text);
    let _ = dkim::parse(text);
    let _ = atps::parse(text);
    let _ = tlsa::parse(text);
    let _ = orgdomain::tree_walk(text);
    let _ = orgdomain::SuffixList::builtin().org_domain(text);
    let _ = atps::query_names("example.net", text, atps::AtpsHash::Sha256);
    for exp in [false, true] {
        if let Ok(ms) = MacroString::parse(text, exp) {
            let ctx = MacroContext {
                sender: text,
                local_part: text,
                sender_domain: "example.com",
                domain: text,
                ip: "2001:db8::1".parse().unwrap(),
                helo: text,
                validated_ptr: None,
                receiver: "r.example",
                timestamp: 0,
            };
            let _ = ms.expand_domain(&ctx);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_parser_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise(&join_txt(&[bytes]));
    }

    #[test]
    fn no_parser_panics_on_fragment_soup(s in soup()) {
        exercise(&s);
    }
}

fn dmarc_record() -> impl Strategy<Value = String> {
    let disp = prop::sample::select(&["none", "quarantine", "reject", "Reject", "rej"][..]);
    let align = prop::sample::select(&["r", "s", "p", "rp", "sp", "x"][..]);
    let uri = prop::sample::select(
        &[
            "mailto:a@example.com",
            "mailto:b@example.net!10m",
            "https://r.example/x",
            "bad",
            "mailto:c@example.org!5k",
        ][..],
    );
    let uris = prop::collection::vec(uri, 1..3).prop_map(|v| v.join(","));
    let tag = prop_oneof![
        disp.clone().prop_map(|d| format!("p={d}")),
        disp.clone().prop_map(|d| format!("sp={d}")),
        disp.clone().prop_map(|d| format!("np={d}")),
        disp.prop_map(|d| format!("fp={d}")),
        align.clone().prop_map(|a| format!("adkim={a}")),
        align.prop_map(|a| format!("aspf={a}")),
        (0u16..120).prop_map(|n| format!("pct={n}")),
        uris.clone().prop_map(|u| format!("rua={u}")),
        uris.clone().prop_map(|u| format!("ruf={u}")),
        uris.clone().prop_map(|u| format!("frua={u}")),
        uris.prop_map(|u| format!("fruf={u}")),
        prop::sample::select(&["0", "1", "d", "s", "0:d", "1:s:d", "0:1", "x"][..])
            .prop_map(|f| format!("fo={f}")),
        prop::sample::select(&["afrf", "iodef", "afrf:iodef", "!"][..])
            .prop_map(|f| format!("rf={f}")),
        (0u64..100_000).prop_map(|n| format!("ri={n}")),
        prop::sample::select(&["y", "n", "u", "q"][..]).prop_map(|f| format!("psd={f}")),
        prop::sample::select(&["y", "n", "Y", "maybe"][..]).prop_map(|f| format!("t={f}")),
        Just("x-unknown=1".to_owned()),
    ];
    prop::collection::vec(tag, 0..10).prop_map(|tags| {
        let mut s = "v=DMARC1".to_owned();
        for t in tags {
            s.push_str("; ");
            s.push_str(&t);
        }
        s
    })
}

fn spf_record() -> impl Strategy<Value = String> {
    let q = prop::sample::select(&["", "+", "-", "~", "?"][..]);
    let domain = prop::sample::select(
        &[
            "example.com",
            "_spf.example.net",
            "%{d}",
            "%{ir}.%{v}._spf.%{d2}",
            "%{l1r-}.x.example",
            "a%%b%_c%-.example.org",
        ][..],
    );
    let mech = prop_oneof![
        Just("all".to_owned()),
        domain.clone().prop_map(|d| format!("include:{d}")),
        domain.clone().prop_map(|d| format!("exists:{d}")),
        (
            prop::option::of(domain.clone()),
            prop::option::of(0u8..=32),
            prop::option::of(0u8..=128)
        )
            .prop_map(|(d, c4, c6)| {
                let mut s = "a".to_owned();
                if let Some(d) = d {
                    s += &format!(":{d}");
                }
                if let Some(c) = c4 {
                    s += &format!("/{c}");
                }
                if let Some(c) = c6 {
                    s += &format!("//{c}");
                }
                s
            }),
        (prop::option::of(domain.clone()), prop::option::of(0u8..=32)).prop_map(|(d, c4)| {
            let mut s = "mx".to_owned();
            if let Some(d) = d {
                s += &format!(":{d}");
            }
            if let Some(c) = c4 {
                s += &format!("/{c}");
            }
            s
        }),
        prop::option::of(domain.clone())
            .prop_map(|d| d.map_or("ptr".to_owned(), |d| format!("ptr:{d}"))),
        (any::<[u8; 4]>(), 0u8..=32)
            .prop_map(|(a, p)| format!("ip4:{}/{p}", std::net::Ipv4Addr::from(a))),
        (any::<[u8; 16]>(), 0u8..=128)
            .prop_map(|(a, p)| format!("ip6:{}/{p}", std::net::Ipv6Addr::from(a))),
    ];
    let directive = (q, mech).prop_map(|(q, m)| format!("{q}{m}"));
    let modifier = prop_oneof![
        domain.clone().prop_map(|d| format!("redirect={d}")),
        domain.prop_map(|d| format!("exp={d}")),
        Just("foo=bar".to_owned()),
    ];
    (
        prop::collection::vec(directive, 0..8),
        prop::collection::vec(modifier, 0..2),
    )
        .prop_map(|(ds, ms)| format!("v=spf1 {} {}", ds.join(" "), ms.join(" ")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn dmarc_display_then_parse_round_trips(text in dmarc_record()) {
        if let Ok(first) = dmarc::parse(&text) {
            let canonical = first.policy.to_string();
            let second = dmarc::parse(&canonical).map_err(|e| TestCaseError::fail(format!("{canonical:?}: {:?}", e.error)))?;
            prop_assert_eq!(&second.policy, &first.policy, "text {:?} canonical {:?}", text, canonical);
            prop_assert_eq!(second.policy.to_string(), canonical);
        }
    }

    #[test]
    fn spf_display_then_parse_round_trips(text in spf_record()) {
        if let Ok(first) = spf::parse(&text) {
            let canonical = first.policy.to_string();
            let second = spf::parse(&canonical).map_err(|e| TestCaseError::fail(format!("{canonical:?}: {:?}", e.error)))?;
            prop_assert_eq!(&second.policy, &first.policy, "text {:?}", text);
        }
    }
}

#[test]
fn generators_mostly_produce_valid_records() {
    // Guards the round-trip properties against vacuity: most generated records must parse.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut dmarc_ok, mut spf_ok) = (0, 0);
    for _ in 0..200 {
        let d = dmarc_record().new_tree(&mut runner).unwrap().current();
        dmarc_ok += usize::from(dmarc::parse(&d).is_ok());
        let s = spf_record().new_tree(&mut runner).unwrap().current();
        spf_ok += usize::from(spf::parse(&s).is_ok());
    }
    assert!(dmarc_ok >= 60, "only {dmarc_ok}/200 DMARC records parsed");
    assert!(spf_ok >= 100, "only {spf_ok}/200 SPF records parsed");
}
