#![no_main]
//! Organizational domain and tree walk: never panic; the walk never exceeds eight queries.
use libfuzzer_sys::fuzz_target;
use mailpolicyd::policy::orgdomain::{self, SuffixList};
use mailpolicyd::policy::join_txt;

fuzz_target!(|data: &[u8]| {
    let name = join_txt(&[data]);
    let _ = SuffixList::builtin().org_domain(&name);
    assert!(orgdomain::tree_walk(&name).len() <= orgdomain::MAX_TREE_WALK_QUERIES);
});
