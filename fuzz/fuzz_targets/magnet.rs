//! Feeds arbitrary text to the magnet parser. It must not panic, and any link it accepts
//! must be written back by `to_uri` as a link that parses to the same magnet.
#![no_main]

use torrent_actors::magnet::{FileSelection, Magnet};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Magnet::parse(text) {
        assert_eq!(Magnet::parse(&m.to_uri()), Ok(m));
    }
    // Also try the text as the query of a link, so the fuzzer need not discover the
    // prefix before exploring parameters.
    if let Ok(m) = Magnet::parse(&format!("magnet:?{text}")) {
        assert_eq!(Magnet::parse(&m.to_uri()), Ok(m));
    }
    if let Ok(s) = FileSelection::parse(text) {
        assert_eq!(FileSelection::parse(&s.to_string()), Ok(s));
    }
});
