#![no_main]
//! DMARC: never panics; a parsed record's canonical text parses back to the same record.
use libfuzzer_sys::fuzz_target;
use mailpolicyd::policy::{dmarc, join_txt};

fuzz_target!(|data: &[u8]| {
    let text = join_txt(&[data]);
    if let Ok(p) = dmarc::parse(&text) {
        let again = dmarc::parse(&p.policy.to_string()).expect("canonical DMARC text must parse");
        assert_eq!(again.policy, p.policy);
    }
});
