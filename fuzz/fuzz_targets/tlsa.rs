#![no_main]
//! tlsa: never panics on any bytes.
use libfuzzer_sys::fuzz_target;
use mailpolicyd::policy::{join_txt, tlsa};

fuzz_target!(|data: &[u8]| {
    let _ = tlsa::parse(&join_txt(&[data]));
});
