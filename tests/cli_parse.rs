//! The `mailpolicyd parse` command as an operator runs it: a subprocess, JSON on stdout, exit
//! status 0 (valid), 1 (invalid, JSON still printed) or 2 (usage error).

use std::process::Command;

use serde_json::Value;

fn run(args: &[&str]) -> (i32, Option<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).ok();
    (out.status.code().unwrap_or(-1), json)
}

/// Every field of a DMARC report, defaulted or not.
const DMARC_FIELDS: [&str; 19] = [
    "v",
    "p",
    "sp",
    "np",
    "adkim",
    "aspf",
    "pct",
    "rua",
    "ruf",
    "fo",
    "rf",
    "ri",
    "psd",
    "t",
    "fp",
    "frua",
    "fruf",
    "defaulted",
    "diagnostics",
];

/// `parse dmarc RECORD` of a valid record: asserts exit 0 and every field in the report;
/// the report.
fn valid_dmarc_report(record: &str) -> Value {
    let (code, json) = run(&["parse", "dmarc", record]);
    assert_eq!(code, 0);
    let j = json.unwrap();
    for f in DMARC_FIELDS {
        assert!(j.get(f).is_some(), "missing {f}: {j}");
    }
    j
}

/// The DMARC report (once a unit test of `cli::report`, now through the CLI): every field, and
/// an absent `sp` defaulted to `p` and listed as defaulted.
#[test]
fn dmarc_report_fields() {
    let j = valid_dmarc_report("v=DMARC1; p=reject; rua=mailto:a@example.com");
    assert_eq!(j["sp"], "reject");
    assert!(j["defaulted"].as_array().unwrap().iter().any(|v| v == "sp"));
}

#[test]
fn valid_dmarc_prints_every_field() {
    let j = valid_dmarc_report("v=DMARC1; p=quarantine; rua=mailto:d@example.com; adkim=sp");
    assert_eq!(j["p"], "quarantine");
    assert_eq!(j["adkim"], "sp");
    assert!(
        j["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["code"] == "dmarc.ext.must_pass")
    );
}

#[test]
fn invalid_record_exits_1_with_json() {
    let (code, json) = run(&["parse", "dmarc", "v=DMARC1; p=rej"]);
    assert_eq!(code, 1);
    let j = json.unwrap();
    assert_eq!(j["valid"], false);
    assert_eq!(j["error"]["code"], "dmarc.p.invalid");
    assert!(j["error"]["message"].as_str().unwrap().contains("\"rej\""));
}

#[test]
fn every_kind_parses() {
    let key = include_str!("data/dkim/rsa2048.spki.b64");
    let dkim = format!("v=DKIM1; k=rsa; p={key}");
    let sha = "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1";
    let tlsa = format!("3 1 1 {sha}");
    let cases: [(&str, &str, &str); 5] = [
        ("spf", "v=spf1 include:_spf.example.com -all", "dns_lookups"),
        ("dkim", &dkim, "key_bits"),
        ("atps", "v=ATPS1; d=signer.example", "d"),
        ("tlsa", &tlsa, "dane_smtp_usable"),
        ("dmarc", "v=DMARC1; p=none", "p"),
    ];
    for (kind, record, field) in cases {
        let (code, json) = run(&["parse", kind, record]);
        assert_eq!(code, 0, "{kind}");
        let j = json.unwrap();
        assert_eq!(j["kind"], kind);
        assert!(j.get(field).is_some(), "{kind}: missing {field}");
    }
    let (_, j) = run(&["parse", "dkim", &dkim]);
    assert_eq!(j.unwrap()["key_bits"], 2048);
}

#[test]
fn orgdomain() {
    let (code, json) = run(&["parse", "orgdomain", "mail.example.co.uk"]);
    assert_eq!(code, 0);
    assert_eq!(json.unwrap()["org_domain"], "example.co.uk");
    let (code, _) = run(&["parse", "orgdomain", "co.uk"]);
    assert_eq!(code, 1);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["parse", "nonsense", "x"]).0, 2);
    assert_eq!(run(&["parse", "dmarc"]).0, 2);
    assert_eq!(
        run(&[
            "parse",
            "orgdomain",
            "x.example",
            "--psl",
            "/nonexistent/list.dat"
        ])
        .0,
        2
    );
}
