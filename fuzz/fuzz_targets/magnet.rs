//! Feeds arbitrary text to the magnet parser. It must not panic, and any link it accepts
//! must be written back by `to_uri` as a link that parses to the same magnet. A link with
//! a `urn:btmh` (v2) hash and no `urn:btih` must be known by the v2 hash's first 20 bytes.
#![no_main]

use torrent_actors::magnet::{FileSelection, Magnet};
use torrent_actors::metainfo::truncated_v2_hash;

/// The promises of an accepted link.
fn check(m: Magnet) {
    if let Some(v2) = &m.v2_info_hash {
        if !m.has_v1() {
            assert_eq!(m.info_hash, truncated_v2_hash(v2));
        }
    }
    assert_eq!(Magnet::parse(&m.to_uri()), Ok(m));
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Magnet::parse(text) {
        check(m);
    }
    // Also try the text as the query of a link, so the fuzzer need not discover the
    // prefix before exploring parameters.
    if let Ok(m) = Magnet::parse(&format!("magnet:?{text}")) {
        check(m);
    }
    if let Ok(s) = FileSelection::parse(text) {
        assert_eq!(FileSelection::parse(&s.to_string()), Ok(s));
    }
});
