//! Issue 13, part F: the wire contract has its own floor. `proto` (requests, responses, the frame
//! codec, the error table) and `model` (the value types both sides share) import nothing from
//! `resolve` or `serve`, so a client can be built without the engine and a change inside the
//! engine cannot move the wire format.

use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `src/<dir>/**` (comments excepted) that name one of `banned`.
fn offending(dir: &str, banned: &[&str]) -> Vec<String> {
    offending_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir),
        banned,
    )
}

/// The lines of the sources below `root` (comments excepted) that name one of `banned`.
fn offending_in(root: &Path, banned: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    sources(root, &mut files);
    assert!(!files.is_empty(), "{} has no sources", root.display());
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if banned.iter().any(|b| code.contains(b)) {
                found.push(format!("{}:{}: {line}", f.display(), n + 1));
            }
        }
    }
    found
}

const ENGINE: [&str; 6] = [
    "crate::resolve",
    "crate::serve",
    "mailpolicyd::resolve",
    "mailpolicyd::serve",
    "super::super::resolve",
    "super::super::serve",
];

#[test]
fn proto_imports_nothing_from_resolve_or_serve() {
    let found = offending("proto", &ENGINE);
    assert!(
        found.is_empty(),
        "proto imports the engine:\n{}",
        found.join("\n")
    );
}

#[test]
fn model_imports_nothing_from_resolve_or_serve() {
    let found = offending("model", &ENGINE);
    assert!(
        found.is_empty(),
        "model imports the engine:\n{}",
        found.join("\n")
    );
}

#[test]
fn model_and_proto_use_only_model_policy_and_each_other_from_the_crate() {
    for dir in ["model", "proto"] {
        let found = offending(dir, &["crate::client", "crate::config", "crate::cli"]);
        assert!(
            found.is_empty(),
            "{dir} imports above its floor:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_scan_sees_an_import() {
    // The scanner itself: a line naming the engine is found, a comment is not.
    let dir = std::env::temp_dir().join(format!("layering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("x.rs");
    std::fs::write(
        &f,
        "// crate::resolve in a comment\nuse crate::resolve::Kind;\n",
    )
    .unwrap();
    let found = offending_in(&dir, &ENGINE);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].ends_with(":2: use crate::resolve::Kind;"),
        "{found:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
