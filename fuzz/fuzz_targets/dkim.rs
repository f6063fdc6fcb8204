#![no_main]
//! dkim: never panics on any bytes.
use libfuzzer_sys::fuzz_target;
use mailpolicyd::policy::{join_txt, dkim};

fuzz_target!(|data: &[u8]| {
    let _ = dkim::parse(&join_txt(&[data]));
});
