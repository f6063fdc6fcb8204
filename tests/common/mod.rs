//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The outside conformance suites (`../shared/conformance`, or `MAILPOLICYD_CONFORMANCE_DIR`).
/// Returns `None`, after printing one line saying why, when the folder is absent, unless
/// `MAILPOLICYD_REQUIRE_CONFORMANCE` is set (CI sets it): then absence is a failure.
pub fn conformance_dir(suite: &str) -> Option<PathBuf> {
    let base = std::env::var_os("MAILPOLICYD_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"));
    let dir = base.join(suite);
    if dir.is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "conformance suite {suite:?} skipped: {} not found (set MAILPOLICYD_CONFORMANCE_DIR)",
        dir.display()
    );
    assert!(
        std::env::var_os("MAILPOLICYD_REQUIRE_CONFORMANCE").is_none(),
        "{msg}"
    );
    println!("{msg}");
    None
}
