//! The framing watch never panics and gives the same verdict however the bytes are split.
#![no_main]
use libfuzzer_sys::fuzz_target;
use varco::server::framing::FramingWatch;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = data[0] as usize % data.len();
    let mut whole = FramingWatch::new();
    whole.feed(&data[1..]);
    let mut split = FramingWatch::new();
    let body = &data[1..];
    let cut = cut.min(body.len());
    split.feed(&body[..cut]);
    split.feed(&body[cut..]);
    assert_eq!(whole.violation(), split.violation());
});
