//! Issue 13, part F: the wire contract has its own floor. `proto` (requests, responses, the frame
//! codec, the error table) and `model` (the value types both sides share) import nothing from
//! `resolve` or `serve`, so a client can be built without the engine and a change inside the
//! engine cannot move the wire format.

use std::path::Path;

#[path = "common/sources.rs"]
mod sources;

/// The lines of `src/<dir>/**` (or of the file `src/<dir>`; comments excepted) that name one of `banned`.
fn offending(dir: &str, banned: &[&str]) -> Vec<String> {
    sources::lines_naming(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir),
        banned,
    )
}

/// What the wire contract may not import: the engine and the server, and what sits above them.
const ENGINE: [&str; 10] = [
    "crate::resolve",
    "crate::serve",
    "mailpolicyd::resolve",
    "mailpolicyd::serve",
    "super::super::resolve",
    "super::super::serve",
    "crate::client",
    "crate::config",
    "crate::cli",
    "mailpolicyd::config",
];

#[test]
fn proto_and_model_import_nothing_from_resolve_or_serve() {
    // The client too: it is built from proto and model alone, without the engine.
    for dir in ["proto", "model", "client.rs"] {
        let found = offending(dir, &ENGINE);
        assert!(
            found.is_empty(),
            "{dir} imports the engine:\n{}",
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
    let found = sources::lines_naming(&dir, &ENGINE);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].ends_with(":2: use crate::resolve::Kind;"),
        "{found:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
