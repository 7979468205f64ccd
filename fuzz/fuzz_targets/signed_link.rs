//! Feeds arbitrary paths and queries to the signed stream link check. It must not panic,
//! must never accept a link it did not sign, and must accept the links it signs.
#![no_main]

use torrent_actors::http_stream::{check_link, sign_link, LinkError};

const KEY: [u8; 32] = [7; 32];
const PATH: &str = "/api/torrents/0123456789abcdef0123456789abcdef01234567/files/2/stream";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = text.split_once('?').unwrap_or((PATH, text));
    let now = 1_000;
    if let Ok(Some(())) = check_link(&KEY, path, query, now) {
        // Accepted: then it carries this key's signature for this path.
        let expires = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("expires="))
            .and_then(|e| e.parse::<u64>().ok())
            .expect("an accepted link has an expiry");
        let sig = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("sig="))
            .expect("an accepted link has a signature");
        assert!(sig.eq_ignore_ascii_case(&sign_link(&KEY, path, expires)));
    }
    // What we sign for the fuzzed path is accepted exactly when the path is a stream
    // route, and a signature from another key never is.
    let expires = now + 60;
    let ours = format!("expires={expires}&sig={}", sign_link(&KEY, path, expires));
    let result = check_link(&KEY, path, &ours, now);
    assert!(matches!(result, Ok(Some(())) | Err(LinkError::Malformed)), "{result:?}");
    assert!(check_link(&[8; 32], path, &ours, now) != Ok(Some(())));
});
