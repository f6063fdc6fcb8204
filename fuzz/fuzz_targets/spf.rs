#![no_main]
//! SPF: never panics; canonical text round-trips; macro expansion never panics.
use libfuzzer_sys::fuzz_target;
use mailpolicyd::policy::spf::{self, MacroContext, MacroString};
use mailpolicyd::policy::join_txt;

fuzz_target!(|data: &[u8]| {
    let text = join_txt(&[data]);
    if let Ok(p) = spf::parse(&text) {
        let again = spf::parse(&p.policy.to_string()).expect("canonical SPF text must parse");
        assert_eq!(again.policy, p.policy);
    }
    if let Ok(ms) = MacroString::parse_explanation(&text) {
        let ctx = MacroContext {
            sender: &text,
            local_part: &text,
            sender_domain: "example.com",
            domain: &text,
            ip: "2001:db8::1".parse().unwrap(),
            helo: "helo.example",
            validated_ptr: None,
            receiver: "receiver.example",
            timestamp: 0,
        };
        let _ = ms.expand_domain(&ctx);
    }
});
