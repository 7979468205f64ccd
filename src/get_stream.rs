//! `get --stream`: each file of the torrent served over HTTP while it downloads, for a
//! media player to open and seek in. The answers are `serve`'s (`serve::stream`): one
//! byte range, read from verified pieces only, waiting for missing ones while the
//! picker fetches them first.
//!
//! There is no key: the URLs carry a random secret drawn at start, so another user of
//! the machine cannot guess them, and the server listens on loopback unless told
//! otherwise. File names (from the torrent, so from a stranger) never go into a URL:
//! only the file index and a sanitised extension, which players use to guess the type.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use torrent_actors::engine::stream::StreamSource;
use torrent_actors::layout::Layout;

/// What the handler needs.
struct StreamState {
    /// The URL secret.
    secret: String,
    /// Where reads go: the torrent's Coordinator.
    source: StreamSource,
}

/// The extension of `path`, if short and alphanumeric, for a URL.
fn safe_extension(path: &str) -> Option<String> {
    let (_, ext) = path.rsplit('/').next()?.rsplit_once('.')?;
    (!ext.is_empty() && ext.len() <= 8 && ext.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| ext.to_ascii_lowercase())
}

/// The path of file `index` (at `path` in its torrent) under `secret`.
pub fn file_url_path(secret: &str, index: usize, path: &str) -> String {
    match safe_extension(path) {
        Some(ext) => format!("/{secret}/{index}/file.{ext}"),
        None => format!("/{secret}/{index}/file"),
    }
}

async fn stream(
    state: web::Data<StreamState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> actix_web::Result<HttpResponse> {
    let (secret, index, _name) = path.into_inner();
    let not_found = || HttpResponse::NotFound().body("no such file\n");
    if !crate::serve::security::secrets_equal(&secret, &state.secret) {
        return Ok(not_found());
    }
    let layout = &state.source.layout;
    let Some((file, entry)) = index
        .parse::<usize>()
        .ok()
        .filter(|_| index.len() <= 10 && index.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|i| layout.files().get(i).map(|f| (i, f)))
        .filter(|(_, f)| !f.padding)
    else {
        return Ok(not_found());
    };
    let path = entry.path.display();
    crate::serve::stream::respond(&req, state.source.clone(), file, &path, entry.length)
        .await
        .map_err(Into::into)
}

/// One file's stream: its index, its path in the torrent and its URL.
pub type FileUrl = (usize, String, String);

/// Serves the files of the torrent `source` reads on `socket`; returns the server's
/// handle (to stop it) and the URL of each file that is not padding.
pub fn start(
    socket: std::net::TcpListener,
    source: StreamSource,
) -> std::io::Result<(ServerHandle, Vec<FileUrl>)> {
    let addr = socket.local_addr()?;
    let secret = crate::serve::security::random_hex(16);
    let layout: Arc<Layout> = source.layout.clone();
    let host = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    let urls = layout
        .files()
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.padding)
        .map(|(i, f)| {
            let path = f.path.display();
            let url = format!("http://{host}{}", file_url_path(&secret, i, &path));
            (i, path, url)
        })
        .collect();
    let state = web::Data::new(StreamState { secret, source });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/{secret}/{n}/{name}", web::get().to(stream))
            .route("/{secret}/{n}/{name}", web::head().to(stream))
    })
    .on_connect(crate::serve::stream::remember_socket)
    .workers(1)
    .max_connections(64)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(socket)?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((handle, urls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_index_and_a_clean_extension_never_the_name() {
        assert_eq!(file_url_path("s", 3, "dir/Film.MKV"), "/s/3/file.mkv");
        assert_eq!(file_url_path("s", 0, "a/b"), "/s/0/file");
        assert_eq!(file_url_path("s", 0, "evil.m\u{202e}p4"), "/s/0/file");
        assert_eq!(file_url_path("s", 0, "x.abcdefghij"), "/s/0/file");
        assert_eq!(file_url_path("s", 0, "../x.mp4?a=b"), "/s/0/file");
    }
}
