//! The JSON API: each handler checks its input once, asks the Session, and turns the
//! answer into JSON. No download logic lives here. The OpenAPI description in
//! `openapi.json` lists the same routes; a test keeps the two in step.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use torrent_actors::engine::session::{self, paths, AddSource, Session, SessionError};
use torrent_actors::magnet::Magnet;
use torrent_actors::metainfo::Metainfo;
use torrent_actors::InfoHash;

use super::security::{Guard, SESSION_COOKIE};

/// An error answer: a status and `{"error": {"code", "message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn unsupported_media_type(m: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            m,
        )
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
    }
    pub fn locked(left: Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!(
                "too many failed attempts; locked out for {} s",
                left.as_secs().max(1)
            ),
        );
        e.retry_after = Some(left);
        e
    }
    fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
    }
    pub fn service_unavailable(m: impl Into<String>) -> Self {
        Self::unavailable(m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    pub fn gateway_timeout(m: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(left) = self.retry_after {
            res.insert_header(("Retry-After", left.as_secs().max(1).to_string()));
        }
        res.json(ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        })
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound(_) => ApiError::not_found(e.to_string()),
            SessionError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            SessionError::BadRequest(_) => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::unavailable(format!("the session is not answering: {e}"))
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// What the handlers share.
pub struct ApiState {
    pub session: Addr<Session>,
    pub guard: Arc<Guard>,
    pub download_root: std::path::PathBuf,
    /// Largest `.torrent` accepted, in bytes.
    pub max_torrent_bytes: usize,
    /// Event streams open now, and the most allowed.
    pub streams: AtomicUsize,
    pub max_streams: usize,
}

type State = web::Data<ApiState>;

pub(crate) fn parse_id(text: &str) -> ApiResult<InfoHash> {
    if text.len() != 40 {
        return Err(ApiError::not_found(format!("no torrent {text}")));
    }
    InfoHash::from_hex(&text.to_ascii_lowercase())
        .ok_or_else(|| ApiError::not_found(format!("no torrent {text}")))
}

/// Registers every route under `/api`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .route("/openapi.json", web::get().to(openapi))
            .route("/token", web::get().to(token))
            .route("/auth", web::get().to(auth))
            .route("/login", web::post().to(login))
            .route("/torrents", web::get().to(list))
            .route("/torrents", web::post().to(add))
            .route("/inspect", web::post().to(inspect))
            .route("/torrents/{id}", web::get().to(detail))
            .route("/torrents/{id}", web::delete().to(remove))
            .route("/torrents/{id}/pause", web::post().to(pause))
            .route("/torrents/{id}/resume", web::post().to(resume))
            .route("/torrents/{id}/recheck", web::post().to(recheck))
            .route("/torrents/{id}/labels", web::put().to(set_labels))
            .route("/torrents/{id}/limits", web::put().to(set_limits))
            .route("/torrents/{id}/seeding", web::put().to(set_seeding))
            .route("/torrents/{id}/files", web::get().to(files))
            .route("/torrents/{id}/files", web::put().to(set_files))
            .route(
                "/torrents/{id}/files/{n}/stream",
                web::get().to(super::stream::stream),
            )
            .route(
                "/torrents/{id}/files/{n}/stream",
                web::head().to(super::stream::stream),
            )
            .route(
                "/torrents/{id}/files/{n}/link",
                web::get().to(super::stream::link),
            )
            .route("/torrents/{id}/peers", web::get().to(peers))
            .route("/torrents/{id}/pieces", web::get().to(pieces))
            .route("/torrents/{id}/trackers", web::get().to(trackers))
            .route("/torrents/{id}/webseeds", web::get().to(web_seeds))
            .route("/torrents/{id}/metrics", web::get().to(metrics))
            .route("/torrents/{id}/graph", web::get().to(graph))
            .route("/torrents/{id}/history", web::get().to(history))
            .route("/torrents/{id}/trace", web::post().to(start_trace))
            .route("/torrents/{id}/trace", web::get().to(read_trace))
            .route("/torrents/{id}/trace", web::delete().to(stop_trace))
            .route(
                "/torrents/{id}/events",
                web::get().to(super::sse::torrent_events),
            )
            .route("/metrics", web::get().to(all_metrics))
            .route("/settings", web::get().to(settings))
            .route("/settings", web::put().to(set_settings))
            .route("/events", web::get().to(super::sse::overview_events))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::not_found("no such API route"))
            })),
    );
}

/// Most file indices a request may list: beyond any real torrent, and a bound on what
/// the state file keeps.
const MAX_FILE_INDICES: usize = 1 << 20;

/// The OpenAPI description, embedded.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn token(state: State) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "token": state.guard.token }))
}

async fn auth(state: State, req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "required": state.guard.auth_required(),
        "authenticated": state.guard.is_authenticated(&req),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    key: String,
}

async fn login(
    state: State,
    req: HttpRequest,
    body: web::Json<LoginBody>,
) -> ApiResult<HttpResponse> {
    let ip = req
        .peer_addr()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let session = state.guard.login(ip, &body.key)?;
    let cookie = Cookie::build(SESSION_COOKIE, session)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    Ok(HttpResponse::NoContent().cookie(cookie).finish())
}

async fn list(state: State) -> ApiResult<HttpResponse> {
    let overview = state.session.send(session::GetOverview {}).await?;
    Ok(HttpResponse::Ok().json(overview.torrents))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    magnet: Option<String>,
    torrent_base64: Option<String>,
    path: Option<String>,
    dir: Option<String>,
    paused: Option<bool>,
    files: Option<Vec<u32>>,
    choose_files: Option<bool>,
    labels: Option<Vec<String>>,
}

/// A `.torrent` given inline or by a path on the server, read and parsed.
fn torrent_from(
    state: &ApiState,
    base64: Option<&str>,
    path: Option<&str>,
) -> ApiResult<(Metainfo, Bytes)> {
    let bytes = match (base64, path) {
        (Some(text), None) => {
            if text.len() / 4 * 3 > state.max_torrent_bytes + 3 {
                return Err(ApiError::too_large(format!(
                    "the .torrent is larger than {} bytes",
                    state.max_torrent_bytes
                )));
            }
            data_encoding::BASE64
                .decode(text.trim().as_bytes())
                .map_err(|e| ApiError::bad_request(format!("torrent_base64: {e}")))?
        }
        (None, Some(path)) => {
            let file = paths::existing_file(&state.download_root, path)
                .map_err(|e| ApiError::bad_request(format!("path: {e}")))?;
            read_capped(&file, state.max_torrent_bytes)?
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of magnet, torrent_base64 and path",
            ))
        }
    };
    if bytes.len() > state.max_torrent_bytes {
        return Err(ApiError::too_large(format!(
            "the .torrent is larger than {} bytes",
            state.max_torrent_bytes
        )));
    }
    let metainfo = Metainfo::from_bytes(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid torrent: {e}")))?;
    Ok((metainfo, Bytes::from(bytes)))
}

fn read_capped(path: &std::path::Path, cap: usize) -> ApiResult<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| ApiError::bad_request(format!("path: cannot read: {e}")))?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(ApiError::bad_request("path: not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ApiError::bad_request(format!("path: cannot read: {e}")))?;
    Ok(bytes)
}

async fn add(state: State, body: web::Json<AddBody>) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let source = match (&body.magnet, &body.torrent_base64, &body.path) {
        (Some(link), None, None) => {
            let magnet = Magnet::parse(link.trim())
                .map_err(|e| ApiError::bad_request(format!("invalid magnet link: {e}")))?;
            AddSource::Magnet {
                magnet,
                link: link.trim().to_string(),
            }
        }
        (None, base64, path) => {
            let (metainfo, bytes) = {
                let state = state.clone();
                let base64 = base64.clone();
                let path = path.clone();
                // Reading and parsing a large torrent is blocking work.
                web::block(move || torrent_from(&state, base64.as_deref(), path.as_deref()))
                    .await
                    .map_err(|e| ApiError::unavailable(e.to_string()))??
            };
            AddSource::Torrent {
                metainfo: Box::new(metainfo),
                bytes,
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of magnet, torrent_base64 and path",
            ))
        }
    };
    if body
        .files
        .as_ref()
        .is_some_and(|f| f.len() > MAX_FILE_INDICES)
    {
        return Err(ApiError::bad_request(format!(
            "files: at most {MAX_FILE_INDICES} indices"
        )));
    }
    if body.choose_files.unwrap_or(false) && !matches!(source, AddSource::Magnet { .. }) {
        return Err(ApiError::bad_request(
            "choose_files is for magnet links; a .torrent's files are chosen with \"files\"",
        ));
    }
    let dir = paths::sub_folder(&state.download_root, body.dir.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("dir: {e}")))?;
    let summary = state
        .session
        .send(session::AddTorrent {
            source,
            dir,
            paused: body.paused.unwrap_or(false),
            selection: body.files,
            choose_files: body.choose_files.unwrap_or(false),
            labels: body.labels.unwrap_or_default(),
        })
        .await??;
    Ok(HttpResponse::Created().json(summary))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InspectBody {
    torrent_base64: Option<String>,
    path: Option<String>,
}

async fn inspect(state: State, body: web::Json<InspectBody>) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let state2 = state.clone();
    let (metainfo, _) = web::block(move || {
        torrent_from(
            &state2,
            body.torrent_base64.as_deref(),
            body.path.as_deref(),
        )
    })
    .await
    .map_err(|e| ApiError::unavailable(e.to_string()))??;
    Ok(HttpResponse::Ok().json(session::inspect(&metainfo)))
}

async fn detail(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let detail = state.session.send(session::GetTorrent { id }).await??;
    Ok(HttpResponse::Ok().json(detail))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    delete_data: Option<bool>,
}

async fn remove(
    state: State,
    id: web::Path<String>,
    query: web::Query<RemoveQuery>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    state
        .session
        .send(session::Remove {
            id,
            delete_data: query.delete_data.unwrap_or(false),
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

async fn pause(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(state.session.send(session::Pause { id }).await??))
}

async fn resume(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(state.session.send(session::Resume { id }).await??))
}

async fn recheck(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(state.session.send(session::Recheck { id }).await??))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsBody {
    labels: Vec<String>,
}

async fn set_labels(
    state: State,
    id: web::Path<String>,
    body: web::Json<LabelsBody>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let labels = body.into_inner().labels;
    Ok(HttpResponse::Ok().json(
        state
            .session
            .send(session::SetLabels { id, labels })
            .await??,
    ))
}

/// A torrent's own seeding goal; both `null` (or absent) return it to the default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedingBody {
    #[serde(default)]
    seed_ratio: Option<f64>,
    #[serde(default)]
    seed_time_secs: Option<u64>,
    /// `true`: use the daemon's default goal (the other fields must be absent).
    #[serde(default)]
    default: bool,
}

async fn set_seeding(
    state: State,
    id: web::Path<String>,
    body: web::Json<SeedingBody>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let body = body.into_inner();
    let goal = if body.default {
        if body.seed_ratio.is_some() || body.seed_time_secs.is_some() {
            return Err(ApiError::bad_request(
                "default: no seed_ratio or seed_time_secs beside it",
            ));
        }
        None
    } else {
        // The Session checks the ratio.
        Some(session::SeedGoal {
            ratio: body.seed_ratio,
            time_secs: body.seed_time_secs,
        })
    };
    Ok(HttpResponse::Ok().json(
        state
            .session
            .send(session::SetSeedGoal { id, goal })
            .await??,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    upload_limit: u64,
    download_limit: u64,
}

async fn set_limits(
    state: State,
    id: web::Path<String>,
    body: web::Json<LimitsBody>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let summary = state
        .session
        .send(session::SetLimits {
            id,
            upload: body.upload_limit,
            download: body.download_limit,
        })
        .await??;
    Ok(HttpResponse::Ok().json(summary))
}

async fn files(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(state.session.send(session::GetFiles { id }).await??))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesBody {
    selected: Vec<u32>,
    /// High-priority files (among the selected); the selected rest are normal.
    #[serde(default)]
    high: Vec<u32>,
}

async fn set_files(
    state: State,
    id: web::Path<String>,
    body: web::Json<FilesBody>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let FilesBody { selected, high } = body.into_inner();
    if high.len() > MAX_FILE_INDICES {
        return Err(ApiError::bad_request(format!(
            "high: at most {MAX_FILE_INDICES} indices"
        )));
    }
    if selected.len() > MAX_FILE_INDICES {
        return Err(ApiError::bad_request(format!(
            "selected: at most {MAX_FILE_INDICES} indices"
        )));
    }
    if selected.is_empty() {
        return Err(ApiError::bad_request(
            "select at least one file (pause the torrent to download nothing)",
        ));
    }
    Ok(HttpResponse::Ok().json(
        state
            .session
            .send(session::SetFiles { id, selected, high })
            .await??,
    ))
}

async fn peers(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(state.session.send(session::GetPeers { id }).await??))
}

/// The piece map with its bitfield as base64, as the API describes it.
#[derive(Serialize)]
pub struct PieceMapJson {
    pub pieces: usize,
    pub have: String,
    /// Pieces of files to download, base64 like `have`.
    pub wanted: String,
    pub downloading: Vec<u32>,
    /// Each open stream's position and the last piece of its window.
    pub streams: Vec<[u32; 2]>,
}

impl From<&torrent_actors::engine::messages::PieceMap> for PieceMapJson {
    fn from(map: &torrent_actors::engine::messages::PieceMap) -> Self {
        PieceMapJson {
            pieces: map.pieces,
            have: data_encoding::BASE64.encode(&map.have),
            wanted: data_encoding::BASE64.encode(&map.wanted),
            downloading: map.downloading.clone(),
            streams: map.streams.clone(),
        }
    }
}

async fn pieces(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let map = state.session.send(session::GetPieces { id }).await??;
    Ok(HttpResponse::Ok().json(PieceMapJson::from(&map)))
}

async fn trackers(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(state.session.send(session::GetTrackerList { id }).await??))
}

async fn web_seeds(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(state.session.send(session::GetWebSeeds { id }).await??))
}

async fn metrics(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(
        state
            .session
            .send(session::GetTorrentMetrics { id })
            .await??,
    ))
}

/// `?top=N`: how many instances of each actor type the graph shows (the rest folded).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphQuery {
    top: Option<usize>,
}

/// The live actor graph: instances, and message rates between them over the last window.
async fn graph(
    state: State,
    id: web::Path<String>,
    query: web::Query<GraphQuery>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    let top = query
        .top
        .unwrap_or(torrent_actors::engine::graph::DEFAULT_TOP);
    let max = torrent_actors::engine::graph::MAX_TOP;
    if !(1..=max).contains(&top) {
        return Err(ApiError::bad_request(format!("top: from 1 to {max}")));
    }
    Ok(HttpResponse::Ok().json(
        state
            .session
            .send(session::GetActorGraph { id, top })
            .await??,
    ))
}

async fn history(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(state.session.send(session::GetHistory { id }).await??))
}

/// What to record; absent fields take the defaults of `get --trace`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TraceBody {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    sample: Option<u64>,
}

/// Starts recording the torrent's message trace (the Session checks the bounds).
async fn start_trace(state: State, id: web::Path<String>, body: Bytes) -> ApiResult<HttpResponse> {
    let id = parse_id(&id)?;
    // No body at all takes the defaults; a body must be a valid one.
    let body: TraceBody = if body.is_empty() {
        TraceBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let status = state
        .session
        .send(session::StartTrace {
            id,
            limit: body
                .limit
                .unwrap_or(torrent_actors::engine::trace::DEFAULT_TRACE_LIMIT),
            sample: body.sample.unwrap_or(1),
        })
        .await??;
    Ok(HttpResponse::Ok().json(status))
}

/// The trace recorded so far, as a file to download; recording goes on.
async fn read_trace(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    trace_file(state, &id, false).await
}

/// Stops recording and hands over the trace as a file to download.
async fn stop_trace(state: State, id: web::Path<String>) -> ApiResult<HttpResponse> {
    trace_file(state, &id, true).await
}

/// The trace as Chrome trace-event JSON, written on a blocking thread: a full trace is
/// tens of megabytes.
async fn trace_file(state: State, id: &str, stop: bool) -> ApiResult<HttpResponse> {
    let id = parse_id(id)?;
    let tracer = state
        .session
        .send(session::TakeTrace { id, stop })
        .await??;
    let body = web::block(move || serde_json::to_vec(&tracer.to_json()))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{}.trace.json\"", id.to_hex()),
        ))
        .body(body))
}

/// `GET /metrics` (outside `/api`, where scrapers look): every torrent and its actors'
/// counters in the Prometheus text format.
pub async fn prometheus(state: State) -> ApiResult<HttpResponse> {
    let overview = state.session.send(session::GetOverview {}).await?;
    let metrics = state.session.send(session::GetAllMetrics {}).await?;
    Ok(HttpResponse::Ok()
        .content_type(super::prometheus::CONTENT_TYPE)
        .body(super::prometheus::render(&overview.torrents, &metrics)))
}

async fn all_metrics(state: State) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.session.send(session::GetAllMetrics {}).await?))
}

async fn settings(state: State) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(state.session.send(session::GetSettings {}).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    upload_limit: u64,
    download_limit: u64,
}

async fn set_settings(state: State, body: web::Json<SettingsBody>) -> ApiResult<HttpResponse> {
    let settings = state
        .session
        .send(session::SetSettings {
            upload_limit: body.upload_limit,
            download_limit: body.download_limit,
        })
        .await?;
    Ok(HttpResponse::Ok().json(settings))
}

/// JSON, query and path extraction failures as JSON errors with the right status.
pub fn extractor_config(cfg: &mut web::ServiceConfig, json_limit: usize) {
    use actix_web::error::{JsonPayloadError, QueryPayloadError};
    cfg.app_data(
        web::JsonConfig::default()
            .limit(json_limit)
            .error_handler(|err, _| {
                let e = match &err {
                    JsonPayloadError::Overflow { .. }
                    | JsonPayloadError::OverflowKnownLength { .. } => {
                        ApiError::too_large(err.to_string())
                    }
                    JsonPayloadError::ContentType => {
                        ApiError::unsupported_media_type("request bodies must be application/json")
                    }
                    _ => ApiError::bad_request(format!("body: {err}")),
                };
                e.into()
            }),
    )
    .app_data(
        web::QueryConfig::default().error_handler(|err: QueryPayloadError, _| {
            ApiError::bad_request(format!("query: {err}")).into()
        }),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::not_found(format!("path: {err}")).into()),
    );
}

/// An open event stream's slot, given back when the stream ends.
pub struct StreamSlot(pub web::Data<ApiState>);

impl StreamSlot {
    pub fn take(state: &web::Data<ApiState>) -> ApiResult<StreamSlot> {
        let open = state.streams.fetch_add(1, Ordering::SeqCst);
        if open >= state.max_streams {
            state.streams.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::unavailable(format!(
                "{} event streams are open; close one",
                state.max_streams
            )));
        }
        Ok(StreamSlot(state.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}
