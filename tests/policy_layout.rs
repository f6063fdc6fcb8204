//! Issue 13, part B: the pure parsers' layout. One generic `from_txt` picks the record of every
//! kind (each kind keeping its own rule), the organizational-domain code lives in `policy`, and
//! `policy` stays a floor of its own: it imports nothing from the rest of the crate and no file
//! in it holds more than 600 lines of non-test code.

use std::path::{Path, PathBuf};

use mailpolicyd::policy::orgdomain::{self, SuffixList};
use mailpolicyd::policy::{self, ErrorCode, atps, dkim, dmarc, spf};

const DKIM_KEY: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

#[test]
fn generic_from_txt_keeps_each_kinds_selection() {
    // Unique: only records with the version prefix count; two of them are an error.
    let one = policy::from_txt::<dmarc::DmarcRecord, _>(["v=spf1 -all", "v=DMARC1; p=reject"])
        .unwrap()
        .unwrap();
    assert_eq!(one.policy.p, dmarc::Disposition::Reject);
    assert_eq!(
        dmarc::from_txt(["v=spf1 -all", "v=DMARC1; p=reject"]),
        Some(Ok(one))
    );
    assert!(policy::from_txt::<dmarc::DmarcRecord, _>(["v=spf1 -all", "hello"]).is_none());
    let two = dmarc::from_txt(["v=DMARC1; p=none", "v=DMARC1; p=reject"])
        .unwrap()
        .unwrap_err();
    assert_eq!(two.error.code(), dmarc::code::MULTIPLE);
    assert_eq!(two.error, dmarc::DmarcError::MultipleRecords { count: 2 });

    let spf_two = spf::from_txt(["v=spf1 -all", "v=spf1 ~all", "v=DMARC1; p=none"])
        .unwrap()
        .unwrap_err();
    assert_eq!(spf_two.error.code(), spf::code::MULTIPLE);
    assert!(spf::from_txt(["v=DMARC1; p=none"]).is_none());
    assert!(
        spf::from_txt(["google-site-verification=x", "v=spf1 -all"])
            .unwrap()
            .is_ok()
    );

    let atps_two = atps::from_txt(["v=ATPS1;", "v=ATPS1; d=example.com"])
        .unwrap()
        .unwrap_err();
    assert_eq!(atps_two.error.code(), atps::code::MULTIPLE);
    assert!(atps::from_txt(["v=spf1 -all"]).is_none());

    // OneValid (DKIM since issue 12): at a key's name every TXT record is a key record. The one
    // valid key wins and the others are named; no valid key answers the first rejection.
    let picked = dkim::from_txt(["v=spf1 -all", DKIM_KEY]).unwrap().unwrap();
    assert!(picked.diagnostics.has(dkim::code::IGNORED));
    let misplaced = dkim::from_txt(["v=spf1 -all"]).unwrap().unwrap_err();
    assert!(matches!(misplaced.error, dkim::DkimError::Version { .. }));
    let both = dkim::from_txt([DKIM_KEY, DKIM_KEY]).unwrap().unwrap_err();
    assert_eq!(both.error.code(), dkim::code::MULTIPLE);
    assert!(dkim::from_txt(std::iter::empty::<&str>()).is_none());
}

#[test]
fn orgdomain_lives_in_policy() {
    let org = SuffixList::builtin().org_domain("mail.example.co.uk");
    assert_eq!(org.as_deref(), Some("example.co.uk"));
    let walk = orgdomain::tree_walk("a.b.c.d.e.f.g.h.i.j.example.com");
    assert!(!walk.is_empty() && walk.len() <= orgdomain::MAX_TREE_WALK_QUERIES);
}

#[allow(dead_code)] // each test crate uses part of it
#[path = "common/sources.rs"]
mod sources;

fn policy_sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    sources::rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/policy"),
        &mut files,
    );
    files.sort();
    assert!(files.len() >= 10, "src/policy holds {} files", files.len());
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn policy_imports_nothing_from_the_rest_of_the_crate() {
    for (path, text) in policy_sources() {
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                let after = &rest[i + "crate::".len()..];
                assert!(
                    after.starts_with("policy"),
                    "{}:{}: {line}",
                    path.display(),
                    n + 1
                );
                rest = after;
            }
        }
    }
}

/// Lines of non-test code: up to the `#[cfg(test)]` tests module, none in a `tests.rs`.
fn non_test_lines(path: &Path, text: &str) -> usize {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return 0;
    }
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end].lines().count()
}

#[test]
fn policy_files_hold_at_most_600_lines_of_non_test_code() {
    for (path, text) in policy_sources() {
        let code = non_test_lines(&path, &text);
        assert!(code <= 600, "{}: {code} lines", path.display());
    }
}

/// Issue 13: no source file of the crate (library and binary) over 600 lines of non-test code.
#[test]
fn no_source_file_holds_more_than_600_lines_of_non_test_code() {
    let mut files = Vec::new();
    sources::rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() >= 40, "src holds {} files", files.len());
    let over: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let code = non_test_lines(p, &text);
            (code > 600).then(|| format!("{}: {code} lines", p.display()))
        })
        .collect();
    assert!(over.is_empty(), "{over:#?}");
}
