//! What a media player sends to a stream, parsed before anything else looks at it: the
//! HTTP `Range` header ([`parse_range`]) and a signed stream link's query
//! ([`check_link`]). Pure and bounded, so the fuzz targets `http_range` and
//! `signed_link` run them on any bytes; `serve` and `get --stream` use them.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Longest `Range` header read; a real one is a few dozen bytes.
const MAX_RANGE_HEADER: usize = 200;

/// Why a `Range` header is not served; each is answered 416 with the file's length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Not `bytes=FIRST-[LAST]` or `bytes=-SUFFIX` with decimal numbers that fit.
    #[error("the Range header is not bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX")]
    Malformed,
    /// Longer than [`MAX_RANGE_HEADER`].
    #[error("the Range header is longer than {MAX_RANGE_HEADER} bytes")]
    TooLong,
    /// More than one range: only single ranges are served.
    #[error("only one byte range per request is served")]
    MultipleRanges,
    /// The last byte comes before the first.
    #[error("the range ends before it starts")]
    Reversed,
    /// The range starts at or past the end of the file (or asks for no bytes).
    #[error("the range starts past the end of the file")]
    Unsatisfiable,
}

/// The bytes `start..end` (end exclusive) of a file of `length` bytes that `range` (the
/// `Range` header, if any) asks for: `Ok(None)` without a header (the whole file).
pub fn parse_range(range: Option<&str>, length: u64) -> Result<Option<(u64, u64)>, RangeError> {
    let Some(text) = range else {
        return Ok(None);
    };
    if text.len() > MAX_RANGE_HEADER {
        return Err(RangeError::TooLong);
    }
    let spec = text
        .trim()
        .strip_prefix("bytes=")
        .ok_or(RangeError::Malformed)?;
    if spec.contains(',') {
        return Err(RangeError::MultipleRanges);
    }
    let (first, last) = spec.trim().split_once('-').ok_or(RangeError::Malformed)?;
    let number = |t: &str| -> Result<u64, RangeError> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RangeError::Malformed);
        }
        t.parse().map_err(|_| RangeError::Malformed)
    };
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n = number(suffix)?;
            if n == 0 || length == 0 {
                return Err(RangeError::Unsatisfiable);
            }
            (length - n.min(length), length)
        }
        (first, "") => (number(first)?, length),
        (first, last) => {
            let (a, b) = (number(first)?, number(last)?);
            if b < a {
                return Err(RangeError::Reversed);
            }
            (a, b.saturating_add(1).min(length))
        }
    };
    if start >= length {
        return Err(RangeError::Unsatisfiable);
    }
    Ok(Some((start, end)))
}

/// The media type of a file, by its extension; `application/octet-stream` otherwise.
pub fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mov" => "video/quicktime",
        "ts" | "m2ts" => "video/mp2t",
        "mpg" | "mpeg" => "video/mpeg",
        "ogv" => "video/ogg",
        "nut" => "video/x-nut",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "flac" => "audio/flac",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "aac" => "audio/aac",
        "srt" | "txt" | "nfo" => "text/plain; charset=utf-8",
        "vtt" => "text/vtt",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// The longest a signed link may live.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest query string a signed link is looked for in.
const MAX_LINK_QUERY: usize = 256;

/// Why a signed link does not open its route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// `expires` or `sig` is missing, repeated or not well formed.
    #[error("a stream link needs one expires (Unix seconds) and one sig (64 hex digits)")]
    Malformed,
    /// `expires` is in the past.
    #[error("the stream link has expired; ask for a new one")]
    Expired,
    /// `expires` is further ahead than any link this daemon makes.
    #[error("the stream link's expiry is too far ahead")]
    TooFarAhead,
    /// The signature is not this daemon's for this path and expiry.
    #[error("the stream link's signature is wrong")]
    Forged,
}

/// Whether `raw_path` is a file's stream route, the only one a link opens:
/// `/api/torrents/{40 hex}/files/{decimal}/stream`, spelled exactly.
pub fn is_stream_path(raw_path: &str) -> bool {
    let parts: Vec<&str> = raw_path.split('/').collect();
    matches!(
        parts.as_slice(),
        ["", "api", "torrents", id, "files", n, "stream"]
            if id.len() == 40
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && !n.is_empty()
                && n.len() <= 10
                && n.bytes().all(|b| b.is_ascii_digit())
    )
}

/// The signature of a link to `raw_path` valid until `expires`, as hex.
pub fn sign_link(key: &[u8], raw_path: &str, expires: u64) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(raw_path.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a signed link: `Ok(None)` when `query` carries no `sig` (not a link),
/// `Ok(Some(()))` when it is a valid link to `raw_path` at `now` (Unix seconds).
pub fn check_link(
    key: &[u8],
    raw_path: &str,
    query: &str,
    now: u64,
) -> Result<Option<()>, LinkError> {
    if !query.split('&').any(|kv| kv.starts_with("sig=")) {
        return Ok(None);
    }
    if query.len() > MAX_LINK_QUERY || !is_stream_path(raw_path) {
        return Err(LinkError::Malformed);
    }
    let (mut expires, mut sig) = (None, None);
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').ok_or(LinkError::Malformed)?;
        let slot = match k {
            "expires" => &mut expires,
            "sig" => &mut sig,
            _ => return Err(LinkError::Malformed),
        };
        if slot.replace(v).is_some() {
            return Err(LinkError::Malformed);
        }
    }
    let (Some(expires), Some(sig)) = (expires, sig) else {
        return Err(LinkError::Malformed);
    };
    if expires.is_empty() || expires.len() > 20 || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LinkError::Malformed);
    }
    let expires: u64 = expires.parse().map_err(|_| LinkError::Malformed)?;
    if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LinkError::Malformed);
    }
    let ours = sign_link(key, raw_path, expires);
    if !bool::from(ours.as_bytes().ct_eq(sig.to_ascii_lowercase().as_bytes())) {
        return Err(LinkError::Forged);
    }
    if expires <= now {
        return Err(LinkError::Expired);
    }
    if expires - now > MAX_LINK_TTL.as_secs() {
        return Err(LinkError::TooFarAhead);
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/api/torrents/0123456789abcdef0123456789abcdef01234567/files/2/stream";

    #[test]
    fn single_ranges_of_each_form_are_read() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 10))));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 100))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 100))));
        assert_eq!(parse_range(Some("bytes=-1000"), 100), Ok(Some((0, 100))));
        // A last byte past the end is cut to the file, as HTTP allows.
        assert_eq!(parse_range(Some("bytes=50-1000"), 100), Ok(Some((50, 100))));
        assert_eq!(parse_range(Some("bytes=99-99"), 100), Ok(Some((99, 100))));
    }

    #[test]
    fn hostile_ranges_are_each_a_typed_error() {
        let cases = [
            ("bytes=", RangeError::Malformed),
            ("bytes=a-b", RangeError::Malformed),
            ("bytes=-", RangeError::Malformed),
            ("bytes=+1-2", RangeError::Malformed),
            ("items=0-1", RangeError::Malformed),
            ("bytes=0-99999999999999999999999999", RangeError::Malformed),
            ("bytes=0-1,5-6", RangeError::MultipleRanges),
            ("bytes=9-3", RangeError::Reversed),
            ("bytes=100-", RangeError::Unsatisfiable),
            ("bytes=18446744073709551615-", RangeError::Unsatisfiable),
            ("bytes=-0", RangeError::Unsatisfiable),
        ];
        for (header, error) in cases {
            assert_eq!(parse_range(Some(header), 100), Err(error), "{header}");
        }
        let long = format!("bytes=0-{}", "1".repeat(300));
        assert_eq!(parse_range(Some(&long), 100), Err(RangeError::TooLong));
        assert_eq!(
            parse_range(Some("bytes=0-"), 0),
            Err(RangeError::Unsatisfiable)
        );
    }

    #[test]
    fn media_types_follow_the_extension() {
        assert_eq!(content_type("dir/Film.MKV"), "video/x-matroska");
        assert_eq!(content_type("a.mp4"), "video/mp4");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("dir.mp4/noext"), "application/octet-stream");
    }

    #[test]
    fn a_signed_link_opens_its_own_stream_path_until_it_expires() {
        let key = [7u8; 32];
        let sig = sign_link(&key, PATH, 1000);
        let query = format!("expires=1000&sig={sig}");
        assert_eq!(check_link(&key, PATH, &query, 999), Ok(Some(())));
        assert_eq!(
            check_link(&key, PATH, &query, 1000),
            Err(LinkError::Expired)
        );
        // Another file, another torrent, another key, another expiry: forged.
        let other = PATH.replace("/2/", "/3/");
        assert_eq!(
            check_link(&key, &other, &query, 999),
            Err(LinkError::Forged)
        );
        assert_eq!(
            check_link(&[8u8; 32], PATH, &query, 999),
            Err(LinkError::Forged)
        );
        let later = format!("expires=2000&sig={sig}");
        assert_eq!(check_link(&key, PATH, &later, 999), Err(LinkError::Forged));
        // Not a link at all: the usual authentication applies.
        assert_eq!(check_link(&key, PATH, "", 999), Ok(None));
    }

    #[test]
    fn a_link_to_any_other_route_or_with_a_bent_query_is_refused() {
        let key = [7u8; 32];
        let sig = sign_link(&key, "/api/torrents", 1000);
        assert_eq!(
            check_link(&key, "/api/torrents", &format!("expires=1000&sig={sig}"), 1),
            Err(LinkError::Malformed)
        );
        let sig = sign_link(&key, PATH, 1000);
        for query in [
            format!("sig={sig}"),
            format!("expires=1000&sig={sig}&sig={sig}"),
            format!("expires=1000&expires=1000&sig={sig}"),
            format!("expires=1e3&sig={sig}"),
            format!("expires=99999999999999999999999&sig={sig}"),
            format!("expires=1000&sig={}", &sig[..63]),
            format!("expires=1000&sig={sig}&x=1"),
            format!("expires=1000&sig={sig}{}", "0".repeat(300)),
        ] {
            assert_eq!(
                check_link(&key, PATH, &query, 1),
                Err(LinkError::Malformed),
                "{query}"
            );
        }
        assert!(!is_stream_path(&PATH.replace("/2/", "/02x/")));
        assert!(!is_stream_path(&PATH.replace("stream", "stream/")));
        assert!(!is_stream_path("/api/torrents/abc/files/2/stream"));
    }
}
