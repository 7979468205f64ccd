//! A file of a torrent as an HTTP resource a media player can open and seek in:
//! `GET /api/torrents/{id}/files/{n}/stream` with one byte range (206), or none (200),
//! served from verified pieces only by an `engine::stream::StreamReader`, which waits
//! for the pieces it reaches while the picker fetches them first. `GET .../link` gives a
//! signed link to it (security.rs) for players that cannot send a key.
//!
//! The `Range` header is parsed here, once, into a typed range or a typed error; the
//! file index is checked by the Session. Nothing here knows about pieces.

use std::any::Any;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::dev::Extensions;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use torrent_actors::engine::session;
use torrent_actors::engine::stream::{StreamError, StreamReader, StreamSource, DEFAULT_WAIT};
pub use torrent_actors::http_stream::{content_type, parse_range, RangeError};

use super::api::{parse_id, ApiError, ApiState};

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
    // there yet is waited for in the body, not before the answer: the body watches the
    // connection while it waits (`until_client_leaves`), and the stream's window must
    // go with the player.
    let first = match reader.read_within(start, end, Duration::ZERO).await {
        Ok(bytes) => bytes,
        Err(StreamError::TimedOut { .. }) => bytes::Bytes::new(),
        Err(e) => return Err(stream_error(e)),
    };
    let next = start + first.len() as u64;
    let body = futures::stream::once(async move { Ok::<_, StreamError>(first) })
        .filter(|b| futures::future::ready(b.as_ref().map_or(true, |b| !b.is_empty())))
        .chain(reader.into_stream(next, end));
    let client = req.conn_data::<ClientSocket>().cloned();
    Ok(res.body(SizedStream::new(
        end - start,
        until_client_leaves(body, client),
    )))
}

/// How often a body waiting for a piece looks whether its client is still there.
const CLIENT_CHECK: Duration = Duration::from_millis(250);

/// A second handle on an HTTP connection's socket, kept in the connection's data
/// (`HttpServer::on_connect` with [`remember_socket`]), so that a stream's body can tell
/// that its player went away while it waits for a piece. The HTTP server itself notices
/// a closed connection only when a write fails, and a waiting body writes nothing: the
/// stream's window would stay in the picker until the read's own wait ends.
#[derive(Clone)]
pub struct ClientSocket(Arc<OwnedFd>);

/// The `on_connect` callback that keeps a [`ClientSocket`] for plain TCP connections.
/// Without one (a socket that cannot be duplicated) a stream falls back to the read's
/// own bounded wait.
pub fn remember_socket(connection: &dyn Any, data: &mut Extensions) {
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
            data.insert(ClientSocket(Arc::new(fd)));
        }
    }
}

impl ClientSocket {
    /// Whether the client closed the connection or reset it. Bytes waiting to be read (a
    /// pipelined request) mean it is still there; so does a socket with nothing to say.
    /// A client that half-closes its side and still reads is taken for gone: players do
    /// not do that.
    pub fn is_gone(&self) -> bool {
        let mut byte = [0u8; 1];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        match rustix::net::recv(&*self.0, &mut byte[..], flags) {
            Ok((0, _)) => true,
            Ok(_) => false,
            Err(e) => e != rustix::io::Errno::AGAIN && e != rustix::io::Errno::INTR,
        }
    }
}

/// Why a stream's body ended early.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error(transparent)]
    Read(#[from] StreamError),
    #[error("the client closed the connection")]
    ClientGone,
}

/// `body`, ended with an error as soon as `client` is seen gone while the body waits
/// (looked at every [`CLIENT_CHECK`]); the HTTP server then drops the body, and with it
/// the stream's reader, whose drop tells the Coordinator to forget its window.
fn until_client_leaves(
    body: impl futures::Stream<Item = Result<bytes::Bytes, StreamError>> + 'static,
    client: Option<ClientSocket>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, BodyError>> {
    let mut body: Pin<Box<_>> = Box::pin(body);
    let mut checks = tokio::time::interval(CLIENT_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ended = false;
    futures::stream::poll_fn(move |cx| {
        if ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = body.as_mut().poll_next(cx) {
            return Poll::Ready(item.map(|r| r.map_err(BodyError::from)));
        }
        let Some(client) = &client else {
            return Poll::Pending;
        };
        while checks.poll_tick(cx).is_ready() {
            if client.is_gone() {
                ended = true;
                return Poll::Ready(Some(Err(BodyError::ClientGone)));
            }
        }
        Poll::Pending
    })
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
