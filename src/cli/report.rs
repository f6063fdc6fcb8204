//! The one renderer of a parsed record. `mailpolicyd parse` prints one JSON object per record,
//! the operator's lint output; `mailpolicyd query` prints a record's policy and diagnostics in
//! words ([`describe`], [`diagnostics`]), taken from the same parse outcome.
//!
//! Valid records print `{"kind", "valid": true, <the policy's fields>, "canonical",
//! "diagnostics"}`; invalid ones `{"kind", "valid": false, "error": {code, message},
//! "diagnostics"}`. Field names are snake_case and stable.

use std::process::ExitCode;

use mailpolicyd::config;
use mailpolicyd::policy::orgdomain::{self, SuffixList};
use mailpolicyd::policy::{self, Diagnostics, ErrorCode, ParseResult};
use mailpolicyd::resolve::{Data, Found};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::ParseWhat;

/// The record kinds `parse` understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `_dmarc` TXT.
    Dmarc,
    /// SPF TXT.
    Spf,
    /// DKIM key TXT.
    Dkim,
    /// ATPS TXT.
    Atps,
    /// TLSA presentation text.
    Tlsa,
}

impl Kind {
    /// The name used on the command line and in the JSON `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dmarc => "dmarc",
            Kind::Spf => "spf",
            Kind::Dkim => "dkim",
            Kind::Atps => "atps",
            Kind::Tlsa => "tlsa",
        }
    }
}

/// A rendered report and whether the record was valid (the exit status).
#[derive(Debug)]
pub struct Report {
    /// The JSON object to print.
    pub json: Value,
    /// Whether the record is usable.
    pub valid: bool,
}

fn render<T: Serialize, E: ErrorCode + Serialize>(
    kind: Kind,
    result: ParseResult<T, E>,
    extra: impl FnOnce(&T) -> Vec<(&'static str, Value)>,
) -> Report {
    let mut obj = Map::new();
    obj.insert("kind".into(), json!(kind.as_str()));
    let (valid, diagnostics) = match result {
        Ok(parsed) => {
            obj.insert("valid".into(), json!(true));
            if let Ok(Value::Object(fields)) = serde_json::to_value(&parsed.policy) {
                obj.extend(fields);
            }
            for (name, value) in extra(&parsed.policy) {
                obj.insert(name.into(), value);
            }
            (true, parsed.diagnostics)
        }
        Err(rejected) => {
            obj.insert("valid".into(), json!(false));
            obj.insert(
                "error".into(),
                json!({"code": rejected.error.code(), "message": rejected.error.to_string()}),
            );
            (false, rejected.diagnostics)
        }
    };
    obj.insert("diagnostics".into(), diagnostics_json(&diagnostics));
    Report {
        json: Value::Object(obj),
        valid,
    }
}

fn diagnostics_json(d: &Diagnostics) -> Value {
    serde_json::to_value(d).unwrap_or(Value::Array(Vec::new()))
}

/// Parses `text` as a `kind` record and renders the report.
pub fn parse_record(kind: Kind, text: &str) -> Report {
    match kind {
        Kind::Dmarc => render(kind, policy::dmarc::parse(text), |p| {
            vec![("canonical", json!(p.to_string()))]
        }),
        Kind::Spf => render(kind, policy::spf::parse(text), |p| {
            vec![("canonical", json!(p.to_string()))]
        }),
        Kind::Dkim => render(kind, policy::dkim::parse(text), |k| {
            vec![("usable_for_email", json!(k.usable_for_email()))]
        }),
        Kind::Atps => render(kind, policy::atps::parse(text), |_| Vec::new()),
        Kind::Tlsa => render(kind, policy::tlsa::parse(text), |t| {
            vec![
                ("canonical", json!(t.to_string())),
                ("dane_smtp_usable", json!(t.dane_smtp_usable())),
            ]
        }),
    }
}

/// The `parse orgdomain` report: the PSL organizational domain and the RFC 9989 tree-walk
/// query names. A `_dmarc` name that cannot be formed (over 253 octets, or a label over 63) is
/// not a query: discovery skips it (RFC 9989 §4.10), and the report lists it under
/// `tree_walk_skipped` with the reason. Valid when the PSL gives an organizational domain.
pub fn org_domain(list: &SuffixList, domain: &str) -> Report {
    let org = list.org_domain(domain);
    let mut walk = Vec::new();
    let mut skipped = Vec::new();
    for d in orgdomain::tree_walk(domain) {
        match orgdomain::dmarc_query_name(&d) {
            Some(q) => walk.push(q),
            None => {
                let name = orgdomain::dmarc_name(&d);
                let reason = if name.split('.').any(|l| l.len() > 63) {
                    "a label is longer than 63 octets"
                } else {
                    "longer than 253 octets"
                };
                skipped.push(json!({
                    "name": name,
                    "octets": name.len(),
                    "reason": reason,
                }));
            }
        }
    }
    Report {
        valid: org.is_some(),
        json: json!({
            "kind": "orgdomain",
            "domain": domain,
            "org_domain": org,
            "tree_walk_queries": walk,
            "tree_walk_skipped": skipped,
        }),
    }
}

/// A value's JSON name in words, as a mail operator reads it: `organizational_domain` →
/// "organizational domain", `np` → "np", `hit` → "hit". (The JSON output keeps the names.)
pub fn words<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s.replace('_', " "),
        Ok(other) => other.to_string(),
        Err(_) => "-".to_owned(),
    }
}

/// A record's policy in words: the canonical text, "invalid: <why>", or that there is none.
pub fn describe(d: &Data) -> String {
    fn found<T: std::fmt::Display, E: std::fmt::Display>(f: &Found<T, E>) -> String {
        match f {
            Found::Absent => "no record".to_owned(),
            Found::Valid(p) => p.policy.to_string(),
            Found::Invalid(r) => format!("invalid: {}", r.error),
        }
    }
    match d {
        Data::None => "no records".to_owned(),
        Data::Dmarc(f) => found(f),
        Data::Spf(f) => found(f),
        Data::DkimKey(Found::Valid(p)) => format!(
            "{} key, {} bits{}",
            p.policy.k,
            p.policy.key_bits.map_or("?".to_owned(), |b| b.to_string()),
            if p.policy.revoked { " (revoked)" } else { "" }
        ),
        Data::DkimKey(Found::Invalid(r)) => format!("invalid: {}", r.error),
        Data::DkimKey(Found::Absent) => "no key record".to_owned(),
        Data::Atps(Found::Valid(p)) => format!(
            "authorized{}",
            p.policy
                .d
                .as_ref()
                .map(|d| format!(" (d={d})"))
                .unwrap_or_default()
        ),
        Data::Atps(Found::Invalid(r)) => format!("invalid: {}", r.error),
        Data::Atps(Found::Absent) => "no ATPS record".to_owned(),
        Data::Tlsa(t) => t
            .iter()
            .map(|p| p.policy.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        Data::Txt(t) => t
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        Data::Addrs(a) => a
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        Data::Mx(m) => m
            .iter()
            .map(|(pref, host)| format!("{pref} {host}"))
            .collect::<Vec<_>>()
            .join(", "),
        Data::Names(n) => n.join(", "),
        #[allow(unreachable_patterns)]
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// A record's diagnostics, one line each (valid and invalid records alike; none when absent).
pub fn diagnostics(d: &Data) -> Vec<String> {
    fn lines(d: &Diagnostics) -> impl Iterator<Item = String> + '_ {
        d.as_slice().iter().map(ToString::to_string)
    }
    fn of<T, E>(f: &Found<T, E>) -> Vec<String> {
        match f {
            Found::Valid(p) => lines(&p.diagnostics).collect(),
            Found::Invalid(r) => lines(&r.diagnostics).collect(),
            Found::Absent => Vec::new(),
        }
    }
    match d {
        Data::Dmarc(f) => of(f),
        Data::Spf(f) => of(f),
        Data::DkimKey(f) => of(f),
        Data::Atps(f) => of(f),
        Data::Tlsa(t) => t.iter().flat_map(|p| lines(&p.diagnostics)).collect(),
        _ => Vec::new(),
    }
}

/// `mailpolicyd parse ...`: prints the report; exit 0 valid, 1 invalid, 2 usage error.
pub fn parse(what: ParseWhat) -> ExitCode {
    let report = match what {
        ParseWhat::Dmarc { record } => parse_record(Kind::Dmarc, &record),
        ParseWhat::Spf { record } => parse_record(Kind::Spf, &record),
        ParseWhat::Dkim { record } => parse_record(Kind::Dkim, &record),
        ParseWhat::Atps { record } => parse_record(Kind::Atps, &record),
        ParseWhat::Tlsa { record } => parse_record(Kind::Tlsa, &record),
        ParseWhat::Orgdomain { domain, psl } => {
            let list = match psl {
                None => SuffixList::builtin(),
                Some(path) => match config::read_suffix_list(&path) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("mailpolicyd: --psl {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                },
            };
            org_domain(&list, &domain)
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&report.json).unwrap_or_default()
    );
    if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_report_has_error() {
        let r = parse_record(Kind::Dmarc, "v=DMARC1; p=rej");
        assert!(!r.valid);
        assert_eq!(r.json["error"]["code"], "dmarc.p.invalid");
        assert!(
            r.json["diagnostics"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
        );
    }

    #[test]
    fn tlsa_and_dkim_flags() {
        let r = parse_record(Kind::Tlsa, "1 1 1 00");
        assert_eq!(r.json["dane_smtp_usable"], false);
        let r = parse_record(Kind::Dkim, "v=DKIM1; p=");
        assert_eq!(r.json["usable_for_email"], false);
        assert_eq!(r.json["revoked"], true);
    }

    #[test]
    fn org_domain_report() {
        let r = org_domain(&SuffixList::builtin(), "a.mail.example.co.uk");
        assert!(r.valid);
        assert_eq!(r.json["org_domain"], "example.co.uk");
        assert_eq!(
            r.json["tree_walk_queries"][0],
            "_dmarc.a.mail.example.co.uk"
        );
        assert!(!org_domain(&SuffixList::builtin(), "co.uk").valid);
        assert_eq!(r.json["tree_walk_skipped"], json!([]));
    }

    #[test]
    fn org_domain_report_shows_unformable_names_as_skipped() {
        let long = format!("{}.{}.example.com", "a".repeat(63), "b".repeat(63));
        let long = format!("{}.{long}", "c".repeat(63));
        // 63 * 3 + 3 + 11 = 203 octets; one more 50-octet label: 254.
        let long = format!("{}.{long}", "d".repeat(50));
        assert_eq!(long.len(), 254);
        let r = org_domain(&SuffixList::builtin(), &long);
        assert_eq!(r.json["org_domain"], "example.com");
        let walk = r.json["tree_walk_queries"].as_array().unwrap();
        assert!(
            walk.iter().all(|q| q.as_str().unwrap().len() <= 253),
            "{walk:?}"
        );
        assert!(!walk.iter().any(|q| q == &json!(format!("_dmarc.{long}"))));
        assert_eq!(walk.last().unwrap(), "_dmarc.com");
        let skipped = r.json["tree_walk_skipped"].as_array().unwrap();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0]["name"], format!("_dmarc.{long}"));
        assert_eq!(skipped[0]["reason"], "longer than 253 octets");
        let label = format!("x.{}.example.com", "l".repeat(64));
        let r = org_domain(&SuffixList::builtin(), &label);
        let skipped = r.json["tree_walk_skipped"].as_array().unwrap();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert_eq!(skipped[0]["reason"], "a label is longer than 63 octets");
    }
}
