//! Live updates as server-sent events: the browser opens one stream for the torrent list
//! and one for the torrent it shows, and the daemon pushes a fresh view every second.
//!
//! Each stream asks the Session once per tick; a stream that the client left is dropped by
//! the server on its next write, which frees its slot (at most `max_streams` are open).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures::stream::{self, Stream};
use torrent_actors::engine::session;

use super::api::{parse_id, ApiError, ApiState, PieceMapJson, StreamSlot};

/// How often a stream gets a new view.
const TICK: Duration = Duration::from_secs(1);

/// One event in the wire format: `event: NAME`, `data: JSON`, a blank line.
fn event(name: &str, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

fn streaming(body: impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// `GET /api/events`: the list and total rates, every second.
pub async fn overview_events(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let slot = StreamSlot::take(&state)?;
    let body = stream::unfold((slot, true), |(slot, first)| async move {
        if !first {
            tokio::time::sleep(TICK).await;
        }
        let overview = slot.0.session.send(session::GetOverview {}).await.ok()?;
        Some((Ok(event("torrents", &overview)), (slot, false)))
    });
    Ok(streaming(body))
}

/// `GET /api/torrents/{id}/events`: everything the detail view shows, every second;
/// `removed` once the torrent is gone, and the stream ends.
pub async fn torrent_events(
    state: web::Data<ApiState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    // A stream for a torrent that is not there is a 404, not an empty stream.
    state.session.send(session::GetTorrent { id }).await??;
    let slot = StreamSlot::take(&state)?;
    let body = stream::unfold(
        (slot, true, false),
        move |(slot, first, ended)| async move {
            if ended {
                return None;
            }
            if !first {
                tokio::time::sleep(TICK).await;
            }
            match slot
                .0
                .session
                .send(session::GetDetailBundle { id })
                .await
                .ok()?
            {
                Ok(bundle) => {
                    let data = serde_json::json!({
                        "torrent": bundle.torrent,
                        "peers": bundle.peers,
                        "pieces": PieceMapJson::from(&bundle.pieces),
                        "trackers": bundle.trackers,
                        "metrics": bundle.metrics,
                        "sample": bundle.sample,
                    });
                    Some((Ok(event("detail", &data)), (slot, false, false)))
                }
                Err(_) => Some((
                    Ok(event("removed", &serde_json::json!({}))),
                    (slot, false, true),
                )),
            }
        },
    );
    Ok(streaming(body))
}
