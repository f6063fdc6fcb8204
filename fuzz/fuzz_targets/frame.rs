#![no_main]
//! The frame decoder: never panics, never hands out a frame over the bound, and cutting the
//! input anywhere gives the same frames as feeding it whole.
use libfuzzer_sys::fuzz_target;
use mailpolicyd::proto::frame::{self, FrameBuf, Framing, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let framing = Framing::detect(first);
    // The first byte also picks where the input is cut in two.
    let cut = usize::from(first) * rest.len() / 255;
    let whole = frames(framing, &[rest]);
    let halves = frames(framing, &[&rest[..cut], &rest[cut..]]);
    assert_eq!(whole, halves);
    // The pure splitter agrees with the buffer on the first frame.
    match frame::split(framing, rest, MAX_FRAME) {
        Ok(Some(s)) => {
            assert!(s.payload.len() <= MAX_FRAME && s.consumed <= rest.len());
            assert_eq!(whole.0.first().map(Vec::as_slice), Some(&rest[s.payload]));
        }
        Ok(None) => assert!(whole.0.is_empty()),
        Err(_) => assert!(whole.0.is_empty() && whole.1),
    }
});

/// Every frame of `parts` fed in order, and whether decoding stopped on an error.
fn frames(framing: Framing, parts: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut fb = FrameBuf::new(framing, MAX_FRAME);
    let mut out = Vec::new();
    for part in parts {
        fb.feed(part);
        loop {
            match fb.next_frame() {
                Ok(Some(p)) => {
                    assert!(p.len() <= MAX_FRAME);
                    out.push(p.to_vec());
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}
