//! Feeds arbitrary bytes to the HTTP tracker response parsers. Neither may panic, and a
//! reply that parses must survive being encoded and parsed again.
#![no_main]

use torrent_actors::tracker::http;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = http::parse_announce_response(data) {
        let again = http::parse_announce_response(&http::encode_announce_response(&parsed));
        assert_eq!(again, Ok(parsed));
    }
    if let Ok(files) = http::parse_scrape_response(data) {
        // Re-encoding sorts and deduplicates keys, so only the set of entries is
        // compared.
        let mut files = files;
        files.sort_by_key(|(h, _)| *h);
        files.dedup_by_key(|(h, _)| *h);
        let mut again =
            http::parse_scrape_response(&http::encode_scrape_response(&files)).unwrap_or_default();
        again.sort_by_key(|(h, _)| *h);
        assert_eq!(again, files);
    }
});
