#![no_main]
//! The Postfix policy request parser: never panics, never hands out a request over its bounds
//! (100 attributes, 64 KiB), and cutting the input anywhere gives the same requests as feeding
//! it whole (the connection loop appends each read to what is left and splits again).
use libfuzzer_sys::fuzz_target;
use mailpolicyd::proto::postfix_policy::{self, MAX_ATTRIBUTES, PolicyRequest};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(first) * rest.len() / 255;
    let whole = requests(&[rest]);
    let halves = requests(&[&rest[..cut], &rest[cut..]]);
    assert_eq!(whole, halves);
    for r in &whole.0 {
        assert!(r.attributes().len() <= MAX_ATTRIBUTES);
        for (name, value) in r.attributes() {
            assert!(!name.is_empty() && !name.contains('='));
            assert!(!name.chars().chain(value.chars()).any(char::is_control));
        }
    }
    // An action's answer is one line whatever its text, and ends with the empty line.
    let text = String::from_utf8_lossy(rest);
    for a in [
        postfix_policy::Action::Reject(text.to_string()),
        postfix_policy::Action::Defer(text.to_string()),
        postfix_policy::Action::PrependReceivedSpf(text.to_string()),
    ] {
        let e = a.encode();
        assert!(e.ends_with(b"\n\n") && e.iter().filter(|&&b| b == b'\n').count() == 2);
    }
});

/// Every request of `parts` fed in order, and whether parsing stopped on an error.
fn requests(parts: &[&[u8]]) -> (Vec<PolicyRequest>, bool) {
    let (reqs, err) = postfix_policy::requests_of(parts);
    (reqs, err.is_some())
}
