#![no_main]
//! atps: never panics on any bytes.
use libfuzzer_sys::fuzz_target;
use mailpolicyd::policy::{join_txt, atps};

fuzz_target!(|data: &[u8]| {
    let _ = atps::parse(&join_txt(&[data]));
});
