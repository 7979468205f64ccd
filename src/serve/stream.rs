//! A file of a torrent as an HTTP resource a media player can open and seek in:
//! `GET /api/torrents/{id}/files/{n}/stream` with one byte range (206), or none (200),
//! served from verified pieces only by an `engine::stream::StreamReader`, which waits
//! for the pieces it reaches while the picker fetches them first. `GET .../link` gives a
//! signed link to it (security.rs) for players that cannot send a key.
//!
//! The `Range` header is parsed here, once, into a typed range or a typed error; the
//! file index is checked by the Session. Nothing here knows about pieces.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use torrent_actors::engine::session;
use torrent_actors::engine::stream::{StreamError, StreamReader, StreamSource, DEFAULT_WAIT};

use super::api::{parse_id, ApiError, ApiState};

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

fn stream_error(e: StreamError) -> ApiError {
    match e {
        StreamError::NoSuchFile(_) | StreamError::OutOfRange { .. } => {
            ApiError::not_found(e.to_string())
        }
        StreamError::NotSelected => ApiError::conflict(e.to_string()),
        StreamError::TimedOut { .. } => ApiError::gateway_timeout(e.to_string()),
        StreamError::TooManyStreams(_) | StreamError::Stopped => {
            ApiError::service_unavailable(e.to_string())
        }
        StreamError::Storage(_) => ApiError::internal(e.to_string()),
    }
}

/// The path part of a stream route: the torrent id, then the file index.
fn parse_path(path: &(String, String)) -> Result<(torrent_actors::InfoHash, usize), ApiError> {
    let id = parse_id(&path.0)?;
    let file = path
        .1
        .parse::<usize>()
        .ok()
        .filter(|_| path.1.len() <= 10 && path.1.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| ApiError::not_found(format!("no file {}", path.1)))?;
    Ok((id, file))
}

/// `GET` (and `HEAD`) `/api/torrents/{id}/files/{n}/stream`.
pub async fn stream(
    state: web::Data<ApiState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, file) = parse_path(&path)?;
    let opened = state
        .session
        .send(session::OpenStream { id, file })
        .await??;
    respond(&req, opened.source, file, &opened.path, opened.length).await
}

/// The answer to a stream request for `file` (at `path` in its torrent, `length`
/// bytes) of the torrent `source` reads: the range asked for, or the whole file, or why
/// not. Shared by `serve` and `get --stream`.
pub async fn respond(
    req: &HttpRequest,
    source: StreamSource,
    file: usize,
    path: &str,
    length: u64,
) -> Result<HttpResponse, ApiError> {
    let range = req
        .headers()
        .get(header::RANGE)
        .map(|v| v.to_str().map_err(|_| RangeError::Malformed))
        .transpose()
        .and_then(|r| parse_range(r, length));
    let range = match range {
        Ok(r) => r,
        Err(e) => {
            return Ok(HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
                .insert_header((header::CONTENT_RANGE, format!("bytes */{length}")))
                .insert_header((header::ACCEPT_RANGES, "bytes"))
                .json(serde_json::json!({
                    "error": { "code": "range_not_satisfiable", "message": e.to_string() }
                })));
        }
    };
    let (start, end) = range.unwrap_or((0, length));
    let mut res = match range {
        Some(_) => {
            let mut res = HttpResponse::build(StatusCode::PARTIAL_CONTENT);
            res.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{length}", end - 1),
            ));
            res
        }
        None => HttpResponse::Ok(),
    };
    res.insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_TYPE, content_type(path)))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if req.method() == Method::HEAD || start == end {
        // The length without the bytes: HTTP sends no body for HEAD.
        let nothing = futures::stream::empty::<Result<bytes::Bytes, StreamError>>();
        return Ok(res.body(SizedStream::new(end - start, nothing)));
    }
    let reader = StreamReader::new(source, file, DEFAULT_WAIT).map_err(stream_error)?;
    // A first read that does not wait: a file that cannot be streamed (not selected,
    // the torrent stopping) gets an error status rather than a cut-off body. A piece not
    // there yet is waited for in the body, not before the answer: the HTTP server
    // notices a player that gave up only while it sends a body, and the stream's
    // window must go with the player.
    let first = match reader.read_within(start, end, Duration::ZERO).await {
        Ok(bytes) => bytes,
        Err(StreamError::TimedOut { .. }) => bytes::Bytes::new(),
        Err(e) => return Err(stream_error(e)),
    };
    let next = start + first.len() as u64;
    let body = futures::stream::once(async move { Ok::<_, StreamError>(first) })
        .filter(|b| futures::future::ready(b.as_ref().map_or(true, |b| !b.is_empty())))
        .chain(reader.into_stream(next, end));
    Ok(res.body(SizedStream::new(end - start, body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkQuery {
    /// How long the link stays valid, in seconds (default a day, at most a week).
    ttl: Option<u64>,
}

/// `GET /api/torrents/{id}/files/{n}/link`: a signed link to the file's stream.
pub async fn link(
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
    query: web::Query<LinkQuery>,
) -> Result<HttpResponse, ApiError> {
    let (id, file) = parse_path(&path)?;
    // The file must exist (and the torrent run) for the link to lead anywhere.
    state
        .session
        .send(session::OpenStream { id, file })
        .await??;
    let raw = format!("/api/torrents/{}/files/{file}/stream", id.to_hex());
    let ttl = Duration::from_secs(query.ttl.unwrap_or(24 * 3600).max(1));
    let (query, expires) = state.guard.link_query(&raw, ttl);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "url": format!("{raw}?{query}"),
        "expires": expires,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
