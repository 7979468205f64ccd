//! Feeds arbitrary text to the HTTP `Range` parser with file lengths taken from the
//! input. It must not panic, and a range it accepts must lie inside the file and hold at
//! least one byte.
#![no_main]

use torrent_actors::http_stream::parse_range;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (length, text) = match data.split_first_chunk::<8>() {
        Some((len, rest)) => (u64::from_le_bytes(*len), rest),
        None => (100, data),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    for length in [length, 0, 1, 100, u64::MAX] {
        if let Ok(Some((start, end))) = parse_range(Some(text), length) {
            assert!(start < end && end <= length, "{text:?} on {length}: {start}..{end}");
        }
    }
});
