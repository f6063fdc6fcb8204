//! The Public Suffix List's own registrable-domain vectors (`../shared/conformance/psl/tests.txt`,
//! 78 of them) against the list file beside them, loaded at run time as an operator would.
//! RFC 7489 §3.2: the organizational domain is the registrable domain under the PSL.

mod common;

use mailpolicyd::policy::orgdomain::SuffixList;

fn null(s: &str) -> Option<&str> {
    (s != "null").then_some(s)
}

fn vectors(text: &str) -> Vec<(Option<&str>, Option<&str>)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| {
            let mut f = l.split_whitespace();
            let input = f.next().unwrap_or("null");
            let expected = f.next().unwrap_or("null");
            (null(input), null(expected))
        })
        .collect()
}

#[test]
fn psl_test_vectors() {
    let Some(dir) = common::conformance_dir("psl") else {
        return;
    };
    let list_text = std::fs::read_to_string(dir.join("public_suffix_list.dat")).unwrap();
    let tests = std::fs::read_to_string(dir.join("tests.txt")).unwrap();
    let list = SuffixList::parse(&list_text).unwrap();
    let vectors = vectors(&tests);
    assert_eq!(vectors.len(), 78, "tests.txt should hold 78 vectors");
    let mut failed = Vec::new();
    for (input, expected) in &vectors {
        let got = input.and_then(|i| list.org_domain(i));
        if got.as_deref() != *expected {
            failed.push(format!("{input:?}: got {got:?}, want {expected:?}"));
        }
    }
    println!(
        "psl: {} passed, {} failed",
        vectors.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn builtin_list_agrees_on_the_vectors() {
    // The compiled-in list is a different snapshot, but these vectors exercise rules that
    // have not changed in years; a disagreement means the builtin path is broken.
    let Some(dir) = common::conformance_dir("psl") else {
        return;
    };
    let tests = std::fs::read_to_string(dir.join("tests.txt")).unwrap();
    let list = SuffixList::builtin();
    let mut failed = Vec::new();
    for (input, expected) in vectors(&tests) {
        let got = input.and_then(|i| list.org_domain(i));
        if got.as_deref() != expected {
            failed.push(format!("{input:?}: got {got:?}, want {expected:?}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
