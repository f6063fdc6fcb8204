//! The Rust sources of a tree, for the tests that check the crate's layering.

use std::path::{Path, PathBuf};

/// Appends every `.rs` file below `dir` (or `dir` itself, when it is one) to `out`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_owned());
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of the sources below `root` (comments excepted) that name one of `banned`.
pub fn lines_naming(root: &Path, banned: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
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
