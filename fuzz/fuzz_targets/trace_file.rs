//! Fuzzes the trace-file reader (`torrent-actors trace FILE` reads files from anywhere):
//! it must never panic, and whatever it accepts must summarise without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torrent_actors::engine::trace::{parse_trace, summarise};

fuzz_target!(|data: &[u8]| {
    if let Ok(trace) = parse_trace(data) {
        let _ = summarise(&trace);
    }
});
