//! The Session actor: many torrents in one process, for `torrent-actors serve`.
//!
//! A torrent here is the same actor tree `get` starts (a Coordinator, or a MetadataFetcher
//! for a magnet link until its metadata comes); the Session only decides when each tree
//! runs and keeps what must outlive it. It owns:
//!
//! - the list of torrents and how each was set (folder, paused, file selection, labels,
//!   limits), saved atomically to the state file on every change (`state.rs`), so a
//!   restart brings every torrent back, resumed from its own resume file;
//! - what the trees share: one [`Listener`] (one port; sockets are routed by info-hash),
//!   one [`ConnectionBudget`] across torrents, one global [`RateLimiter`] every
//!   torrent's limiter chains to, and the DHT node;
//! - the latest events of each tree (progress, tracker statuses) and a rate history, so
//!   queries are answered from here without waking the torrents.
//!
//! Pausing stops a tree (its resume file saved) and resuming starts a new one; so do a
//! recheck (the resume file deleted first) and a new file selection. Every tree's events
//! come through an [`EventTap`] stamped with the tree's generation, so a late event from a
//! tree that was replaced is dropped. Front ends (the HTTP API) talk to the Session only
//! through the messages in this module, and no download logic lives in them.

pub mod paths;
pub mod state;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use serde::Serialize;
use slog::{info, o, warn, Logger};

use self::state::{SavedSession, SavedSettings, SavedTorrent, StateDir, STATE_VERSION};
use super::budget::ConnectionBudget;
use super::coordinator::{Coordinator, EngineConfig, TorrentParams};
use super::graph::GraphSnapshot;
use super::jail::Jail;
use super::limiter::RateLimiter;
use super::listener::Listener;
use super::messages::{
    DeleteFiles, DhtLinks, FileProgress, GetFileProgress, GetPeerList, GetPieceMap, GetWebSeedList,
    PeerInfo, Phase, PieceMap, Progress, Route, SetRates, SetTorrentRates, Shutdown, TorrentEvent,
    Unroute,
};
use super::metadata::{MagnetParams, MetadataFetcher};
use super::metrics::{ActorKind, Metrics, MetricsSnapshot};
use super::selection::{check_selection, FilePriority};
use super::storage::{FileWriter, SideFiles};
use super::trace::{TraceSlot, Tracer};
use super::tracker::{TrackerState, TrackerStatus};
use super::webseed::WebSeedStatus;
use crate::layout::Layout;
use crate::magnet::{FileSelection, Magnet};
use crate::metainfo::merkle::Hash256;
use crate::metainfo::Metainfo;
use crate::InfoHash;

/// Rate samples kept per torrent: ten minutes, one a second.
const HISTORY_LEN: usize = 600;

/// How long a tree may take to stop (save its resume file, announce `stopped`).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a query to a running tree may take before it is answered as unavailable.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most labels on a torrent, and longest label in bytes.
pub const MAX_LABELS: usize = 16;
pub const MAX_LABEL_BYTES: usize = 64;

/// Why a request to the Session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No torrent has this id (HTTP 404).
    #[error("no torrent {0}")]
    NotFound(String),
    /// The request does not fit the torrent's state: already there, stopping, no
    /// metadata yet (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong: a bad index, label or limit (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
}

/// What the Session needs to start.
pub struct SessionConfig {
    /// The settings every torrent's tree starts from (peer id, timeouts, per-torrent
    /// peer limit); the Session fills in what it shares.
    pub engine: EngineConfig,
    /// Canonical folder every download goes under.
    pub download_root: PathBuf,
    /// Folder of the state file and kept `.torrent`s.
    pub state_dir: PathBuf,
    /// The shared listener and the address it is bound to.
    pub listener: Addr<Listener>,
    pub listen_addr: SocketAddr,
    /// Most peer connections across all torrents.
    pub max_connections: usize,
    pub dht: Option<DhtLinks>,
    pub log: Logger,
    /// The seeding goal of torrents without one of their own.
    pub seed_goal: SeedGoal,
    /// Most torrents downloading (or checking, or fetching metadata) at once; 0 for no
    /// limit. The others wait `queued` and start in the order they were added.
    pub max_active_downloads: usize,
    /// Where each torrent's events (added, metadata, completed, failed, paused, resumed,
    /// removed) are logged, one line each: a daemon shows these at its default verbosity,
    /// when `log` shows only warnings.
    pub events: Logger,
}

/// When a complete torrent stops seeding: once it uploaded `ratio` times its size, or
/// seeded `time_secs` (over all its runs), whichever comes first; never with neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct SeedGoal {
    pub ratio: Option<f64>,
    pub time_secs: Option<u64>,
}

impl SeedGoal {
    /// Whether a torrent at `ratio` that has seeded `seeded` has met the goal.
    pub fn reached(&self, ratio: f64, seeded: Duration) -> bool {
        self.ratio.is_some_and(|r| ratio >= r)
            || self.time_secs.is_some_and(|t| seeded.as_secs() >= t)
    }
}

/// Where a torrent's metadata comes from.
#[derive(Clone)]
enum Source {
    Torrent(Arc<Metainfo>),
    Magnet(Magnet),
}

/// What a tree showed last before it stopped.
#[derive(Default)]
struct LastViews {
    files: Option<Vec<FileProgress>>,
    pieces: Option<PieceMap>,
    /// The tree did not confirm its stop in time: it may still be writing.
    timed_out: bool,
}

/// The tree running a torrent, if any.
enum Run {
    Coordinator(Addr<Coordinator>),
    Fetcher(Addr<MetadataFetcher>),
}

/// One torrent as the Session holds it.
///
/// The life of a tree, in three fields: `run` is `Some` while a tree runs;
/// `stop_run` takes it (`None`), sets `stopping` and bumps `generation` at once, so the
/// old tree's late events and answers no longer match; `stopped` clears `stopping`
/// when the old tree has confirmed, and only then may `start_run` start the next one
/// (bumping `generation` again). `on_metadata` is the one other place that ends a run:
/// the fetcher stops by itself there, so the run is dropped and the generation bumped.
struct Entry {
    id: InfoHash,
    /// The torrent's name: the magnet's `dn` (or the hash) until the metadata is in.
    name: String,
    source: Source,
    /// The magnet link it was added by, if so: its `x.pe` peers are dialed at every
    /// start, also once the metadata is in.
    magnet_link: Option<String>,
    /// The torrent's folder, relative to the download root (checked by `paths::sub_folder`).
    dir: String,
    /// Kept stopped by the user (and started by nothing but `Resume`).
    paused: bool,
    /// A magnet added with `choose_files`: parked once its metadata is in, until
    /// `SetFiles`.
    awaiting_files: bool,
    /// The files to download, sorted and unique; `None` for every file.
    selection: Option<Vec<u32>>,
    /// Files whose pieces start first, sorted and unique (selected ones count).
    high: Vec<u32>,
    /// Its own seeding goal, if set.
    own_goal: Option<SeedGoal>,
    /// The goal in force: its own or the daemon's.
    goal: SeedGoal,
    /// It met its goal and stopped seeding; `Resume` seeds on, the goal then ignored
    /// until it is set again.
    finished: bool,
    /// Resumed after meeting its goal: seeds until paused.
    goal_waived: bool,
    /// When this run found it complete.
    seeding_since: Option<Instant>,
    /// Seconds seeded in the runs before (kept in the state file).
    seeded_before: u64,
    /// Waiting for a download slot (`max_active_downloads`).
    queued: bool,
    labels: Vec<String>,
    /// This torrent's limits in bytes per second, 0 for none.
    upload_limit: u64,
    download_limit: u64,
    /// Unix seconds when it was added.
    added_at: u64,
    /// Totals of the runs before the current one.
    uploaded_before: u64,
    downloaded_before: u64,
    run: Option<Run>,
    /// A tree is being stopped; nothing else may start one until it is gone.
    stopping: bool,
    /// Counts trees started, so events from a replaced one are recognised.
    generation: u64,
    /// The current tree's latest progress (zeroed, all but what is verified, when it stops).
    last: Progress,
    /// Why the torrent failed, until it next starts.
    error: Option<String>,
    /// Each tracker's latest status, by URL.
    trackers: BTreeMap<String, TrackerStatus>,
    /// One rate sample a second, the last [`HISTORY_LEN`].
    history: VecDeque<RateSample>,
    /// The counters every actor of this torrent's trees records into.
    metrics: Arc<Metrics>,
    /// Its message trace, recording while the API says so; kept across its runs.
    trace: Arc<TraceSlot>,
    /// Per-file progress as last seen, for a torrent not running.
    files: Vec<FileProgress>,
    /// Pieces as last seen, likewise.
    pieces: Option<PieceMap>,
}

/// See the module documentation.
pub struct Session {
    config: SessionConfig,
    state: StateDir,
    torrents: BTreeMap<InfoHash, Entry>,
    settings: SavedSettings,
    budget: Arc<ConnectionBudget>,
    limiter: Addr<RateLimiter>,
    writer: Addr<StateWriter>,
    log: Logger,
}

// ---------------------------------------------------------------------------------------
// What front ends see
// ---------------------------------------------------------------------------------------

/// A torrent's row in a list.
#[derive(Debug, Clone, Serialize)]
pub struct TorrentSummary {
    pub id: String,
    pub name: String,
    pub info_hash: String,
    pub state: &'static str,
    pub total_bytes: u64,
    pub verified_bytes: u64,
    pub progress: f64,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub peers: usize,
    /// Of the peers, those that have every piece.
    pub seeds: usize,
    pub uploaded: u64,
    pub downloaded: u64,
    pub ratio: f64,
    pub eta_secs: Option<u64>,
    pub labels: Vec<String>,
    pub dir: String,
    pub error: Option<String>,
    pub added_at: u64,
    pub upload_limit: u64,
    pub download_limit: u64,
    /// The seeding goal in force: a ratio, a time in seconds, either or neither.
    pub seed_ratio: Option<f64>,
    pub seed_time_secs: Option<u64>,
    /// Seconds seeded over all runs.
    pub seeding_secs: u64,
}

/// One torrent in full.
#[derive(Debug, Clone, Serialize)]
pub struct TorrentDetail {
    #[serde(flatten)]
    pub summary: TorrentSummary,
    pub piece_length: Option<u64>,
    pub pieces: Option<usize>,
    pub private: bool,
    pub comment: Option<String>,
    /// A hybrid's or v2 torrent's SHA-256 info-hash, in hex.
    pub info_hash_v2: Option<String>,
    pub files_count: usize,
    pub hash_failures: u64,
    pub banned: usize,
    pub listen_port: Option<u16>,
    /// The message trace recording now, if any.
    pub trace: Option<TraceStatus>,
}

/// A torrent's message trace while it records.
#[derive(Debug, Clone, Serialize)]
pub struct TraceStatus {
    /// Events held (at most `limit`) and events dropped, oldest first, to keep the bound.
    pub events: usize,
    pub dropped: u64,
    pub limit: usize,
    /// Every `sample`th block's chain is recorded.
    pub sample: u64,
}

impl TraceStatus {
    fn of(tracer: &Tracer) -> Self {
        let (events, dropped) = tracer.counts();
        let (limit, sample) = tracer.settings();
        Self {
            events,
            dropped,
            limit,
            sample,
        }
    }
}

/// The most events one torrent's trace may hold in `serve`.
pub const MAX_TRACE_LIMIT: usize = 1_000_000;

/// The most torrents whose traces record at once in `serve`: each holds up to
/// [`MAX_TRACE_LIMIT`] events.
pub const MAX_TRACES: usize = 4;

/// A tracker's row.
#[derive(Debug, Clone, Serialize)]
pub struct TrackerInfo {
    pub url: String,
    pub tier: usize,
    pub state: &'static str,
    pub last_error: Option<String>,
    pub peers: Option<usize>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    pub next_announce_secs: Option<u64>,
}

/// One second of a torrent's rates.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RateSample {
    pub t: u64,
    pub down: f64,
    pub up: f64,
}

/// The daemon-wide settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub upload_limit: u64,
    pub download_limit: u64,
    pub download_root: String,
    pub listen_port: u16,
}

/// Every list row and the total rates.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub torrents: Vec<TorrentSummary>,
    pub upload_rate: f64,
    pub download_rate: f64,
}

/// Everything a torrent's detail view shows, in one answer.
#[derive(Debug, Clone, Serialize)]
pub struct DetailBundle {
    pub torrent: TorrentDetail,
    pub peers: Vec<PeerInfo>,
    pub pieces: PieceMap,
    pub trackers: Vec<TrackerInfo>,
    pub metrics: MetricsSnapshot,
    pub sample: Option<RateSample>,
}

/// A torrent's actor metrics, for the daemon-wide list.
#[derive(Debug, Clone, Serialize)]
pub struct TorrentMetrics {
    pub id: String,
    pub name: String,
    pub metrics: MetricsSnapshot,
}

/// A `.torrent`'s description, before adding it.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub name: String,
    pub info_hash: String,
    pub total_bytes: u64,
    pub files: Vec<InspectedFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InspectedFile {
    pub index: usize,
    pub path: String,
    pub length: u64,
}

/// Describes a torrent for an add dialog: its name and files.
pub fn inspect(metainfo: &Metainfo) -> Inspection {
    let layout = &metainfo.info.layout;
    Inspection {
        name: metainfo.info.name.clone(),
        info_hash: metainfo.info_hash.to_hex(),
        total_bytes: layout.total_length(),
        files: layout
            .files()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.padding)
            .map(|(index, f)| InspectedFile {
                index,
                path: f.path.components().join("/"),
                length: f.length,
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// Messages: the Session's API
// ---------------------------------------------------------------------------------------

/// What to add: a parsed `.torrent` (with its bytes, kept in the state folder) or a
/// parsed magnet link (with its text, saved until the metadata comes).
pub enum AddSource {
    Torrent {
        metainfo: Box<Metainfo>,
        bytes: Bytes,
    },
    Magnet {
        magnet: Magnet,
        link: String,
    },
}

/// HTTP API → Session: add a torrent. Its fields are validated by the front end (the folder is
/// inside the root); the Session checks what only it knows (duplicates, file indices).
#[derive(Message)]
#[rtype(result = "Result<TorrentSummary, SessionError>")]
pub struct AddTorrent {
    pub source: AddSource,
    /// Relative sub-folder, from [`paths::sub_folder`].
    pub dir: String,
    pub paused: bool,
    pub selection: Option<Vec<u32>>,
    /// A magnet link: stop after the metadata, until files are chosen.
    pub choose_files: bool,
    pub labels: Vec<String>,
}

/// HTTP API → Session: every torrent's row and the total rates.
#[derive(Message)]
#[rtype(result = "Overview")]
pub struct GetOverview {}

/// HTTP API → Session: one torrent in full.
#[derive(Message)]
#[rtype(result = "Result<TorrentDetail, SessionError>")]
pub struct GetTorrent {
    pub id: InfoHash,
}

/// HTTP API → Session: stop a torrent, keeping it.
#[derive(Message)]
#[rtype(result = "Result<TorrentSummary, SessionError>")]
pub struct Pause {
    pub id: InfoHash,
}

/// HTTP API → Session: start a paused torrent (or one waiting for its files).
#[derive(Message)]
#[rtype(result = "Result<TorrentSummary, SessionError>")]
pub struct Resume {
    pub id: InfoHash,
}

/// HTTP API → Session: forget the resume data and hash everything on disk again.
#[derive(Message)]
#[rtype(result = "Result<TorrentSummary, SessionError>")]
pub struct Recheck {
    pub id: InfoHash,
}

/// HTTP API → Session: drop a torrent, and its files if asked.
#[derive(Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct Remove {
    pub id: InfoHash,
    pub delete_data: bool,
}

/// HTTP API → Session: replace a torrent's labels.
#[derive(Message)]
#[rtype(result = "Result<TorrentSummary, SessionError>")]
pub struct SetLabels {
    pub id: InfoHash,
    pub labels: Vec<String>,
}

/// HTTP API → Session: a torrent's limits in bytes per second, 0 for none.
#[derive(Message)]
#[rtype(result = "Result<TorrentSummary, SessionError>")]
pub struct SetLimits {
    pub id: InfoHash,
    pub upload: u64,
    pub download: u64,
}

/// HTTP API → Session: a torrent's files and their progress.
#[derive(Message)]
#[rtype(result = "Result<Vec<FileProgress>, SessionError>")]
pub struct GetFiles {
    pub id: InfoHash,
}

/// HTTP API → Session: a torrent's own seeding goal (`None`: the daemon's default).
#[derive(Message)]
#[rtype(result = "Result<TorrentSummary, SessionError>")]
pub struct SetSeedGoal {
    pub id: InfoHash,
    pub goal: Option<SeedGoal>,
}

/// HTTP API → Session: choose which files to download, and which of them first.
#[derive(Message)]
#[rtype(result = "Result<Vec<FileProgress>, SessionError>")]
pub struct SetFiles {
    pub id: InfoHash,
    pub selected: Vec<u32>,
    /// Files whose pieces start before the others' (only selected ones count).
    pub high: Vec<u32>,
}

/// HTTP API → Session: a torrent's connected peers.
#[derive(Message)]
#[rtype(result = "Result<Vec<PeerInfo>, SessionError>")]
pub struct GetPeers {
    pub id: InfoHash,
}

/// HTTP API → Session: a torrent's piece map.
#[derive(Message)]
#[rtype(result = "Result<PieceMap, SessionError>")]
pub struct GetPieces {
    pub id: InfoHash,
}

/// HTTP API → Session: a torrent's trackers.
#[derive(Message)]
#[rtype(result = "Result<Vec<TrackerInfo>, SessionError>")]
pub struct GetTrackerList {
    pub id: InfoHash,
}

/// HTTP API → Session: a torrent's web seeds (BEP 19), beside its trackers.
#[derive(Message)]
#[rtype(result = "Result<Vec<WebSeedStatus>, SessionError>")]
pub struct GetWebSeeds {
    pub id: InfoHash,
}

/// HTTP API → Session: a torrent's actor metrics.
#[derive(Message)]
#[rtype(result = "Result<MetricsSnapshot, SessionError>")]
pub struct GetTorrentMetrics {
    pub id: InfoHash,
}

/// HTTP API → Session: start recording a torrent's message trace (a running one is
/// replaced): at most `limit` events, every `sample`th block's chain.
#[derive(Message)]
#[rtype(result = "Result<TraceStatus, SessionError>")]
pub struct StartTrace {
    pub id: InfoHash,
    pub limit: usize,
    pub sample: u64,
}

/// HTTP API → Session: the torrent's recording trace, to be written out by the caller
/// (off the Session's thread); `stop` ends the recording too.
#[derive(Message)]
#[rtype(result = "Result<Arc<Tracer>, SessionError>")]
pub struct TakeTrace {
    pub id: InfoHash,
    pub stop: bool,
}

/// HTTP API → Session: a torrent's live actor graph (its instances and the message rates
/// between them), at most `top` instances of a type shown; asking keeps it counting.
#[derive(Message)]
#[rtype(result = "Result<GraphSnapshot, SessionError>")]
pub struct GetActorGraph {
    pub id: InfoHash,
    pub top: usize,
}

/// HTTP API → Session: every torrent's actor metrics.
#[derive(Message)]
#[rtype(result = "Vec<TorrentMetrics>")]
pub struct GetAllMetrics {}

/// HTTP API → Session: a torrent's rates over the last ten minutes.
#[derive(Message)]
#[rtype(result = "Result<Vec<RateSample>, SessionError>")]
pub struct GetHistory {
    pub id: InfoHash,
}

/// HTTP API → Session: the detail view's data in one answer.
#[derive(Message)]
#[rtype(result = "Result<DetailBundle, SessionError>")]
pub struct GetDetailBundle {
    pub id: InfoHash,
}

/// HTTP API → Session: the daemon-wide settings.
#[derive(Message)]
#[rtype(result = "Settings")]
pub struct GetSettings {}

/// HTTP API → Session: the daemon-wide limits, bytes per second, 0 for none.
#[derive(Message)]
#[rtype(result = "Settings")]
pub struct SetSettings {
    pub upload_limit: u64,
    pub download_limit: u64,
}

/// HTTP API → Session: stop every torrent and save the state; replies when done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopSession {}

/// HTTP API → Session: where to read file `file` of a running torrent from, for a
/// stream (`engine::stream`).
#[derive(Message)]
#[rtype(result = "Result<OpenedStream, SessionError>")]
pub struct OpenStream {
    pub id: InfoHash,
    pub file: usize,
}

/// The answer to [`OpenStream`]: the source a `StreamReader` reads through, and the
/// file's path in the torrent (for its media type).
pub struct OpenedStream {
    /// The running torrent's Coordinator, as the reader sees it.
    pub source: super::stream::StreamSource,
    /// The file's path inside the torrent, components joined with `/`.
    pub path: String,
    /// The file's length in bytes.
    pub length: u64,
}

/// EventTap → Session: an event of one torrent's tree.
#[derive(Message)]
#[rtype(result = "()")]
struct FromTorrent {
    id: InfoHash,
    generation: u64,
    event: TorrentEvent,
}

/// Receives one tree's events and passes them on stamped with the tree's identity.
pub struct EventTap {
    id: InfoHash,
    generation: u64,
    session: Addr<Session>,
}

impl Actor for EventTap {
    type Context = Context<Self>;
}

impl Handler<TorrentEvent> for EventTap {
    type Result = ();

    fn handle(&mut self, event: TorrentEvent, _: &mut Context<Self>) {
        self.session.do_send(FromTorrent {
            id: self.id,
            generation: self.generation,
            event,
        });
    }
}

// ---------------------------------------------------------------------------------------
// The state writer: the state file is written off the Session's thread, in order
// ---------------------------------------------------------------------------------------

/// Writes state files on its own thread, one at a time, so a slow disk never stalls the
/// Session and two saves never race.
pub struct StateWriter {
    log: Logger,
}

impl Actor for StateWriter {
    type Context = SyncContext<Self>;
}

/// Session → StateWriter: write these bytes to this path atomically.
#[derive(Message)]
#[rtype(result = "()")]
struct WriteFile {
    path: PathBuf,
    bytes: Bytes,
}

impl Handler<WriteFile> for StateWriter {
    type Result = ();

    fn handle(&mut self, msg: WriteFile, _: &mut SyncContext<Self>) {
        if let Err(e) = state::write_atomically(&msg.path, &msg.bytes) {
            warn!(self.log, "cannot write state"; "path" => %msg.path.display(), "error" => %e);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The Session
// ---------------------------------------------------------------------------------------

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs one event of a torrent, naming it by its name and a short info-hash.
fn log_event(events: &Logger, what: &str, entry: &Entry) {
    info!(events, "{}", what; "info_hash" => short_hash(&entry.id), "torrent" => &entry.name);
}

/// A SHA-256 hash from 64 hex digits (either case), as the state file keeps a v2
/// info-hash; `None` for anything else.
fn hash256_from_hex(s: &str) -> Option<Hash256> {
    if s.len() != 64 {
        return None;
    }
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .ok()?;
    bytes.try_into().ok()
}

/// The first 8 hex digits of an info-hash: enough to tell torrents of one name apart.
fn short_hash(id: &InfoHash) -> String {
    id.to_hex()[..8].to_string()
}

fn selection_of(indices: &Option<Vec<u32>>) -> Option<FileSelection> {
    indices.as_deref().map(selection_from)
}

/// File indices as a BEP 53 selection.
fn selection_from(indices: &[u32]) -> FileSelection {
    FileSelection::new(indices.iter().map(|&i| i..=i))
        .expect("single-index ranges are never reversed")
}

impl Session {
    /// Reads the saved state and starts the Session, which starts every torrent that was
    /// not paused. A state file that cannot be read is an error: starting empty would
    /// overwrite it with nothing.
    pub fn start(config: SessionConfig) -> Result<Addr<Session>, state::StateError> {
        let state = StateDir(config.state_dir.clone());
        let saved = state.load()?;
        let log = config.log.new(o!("actor" => "session"));
        let writer_log = log.clone();
        let writer = SyncArbiter::start(1, move || StateWriter {
            log: writer_log.clone(),
        });
        let limiter =
            RateLimiter::new(saved.settings.upload_limit, saved.settings.download_limit).start();
        let budget = ConnectionBudget::new(config.max_connections);
        let mut torrents = BTreeMap::new();
        for t in &saved.torrents {
            match Self::restore(&state, t, &log) {
                Ok(mut entry) => {
                    entry.goal = entry.own_goal.unwrap_or(config.seed_goal);
                    torrents.insert(entry.id, entry);
                }
                Err(e) => {
                    warn!(log, "saved torrent dropped"; "info_hash" => &t.info_hash, "error" => e)
                }
            }
        }
        Ok(Session {
            config,
            state,
            torrents,
            settings: saved.settings,
            budget,
            limiter,
            writer,
            log,
        }
        .start())
    }

    /// One saved torrent back as an entry, not yet running. A kept `.torrent` that
    /// cannot be read does not lose the torrent: its metadata is fetched again, as for
    /// a magnet link (the saved one, or one made of the info-hash and name), and the
    /// entry says why until it next starts.
    fn restore(state: &StateDir, t: &SavedTorrent, log: &Logger) -> Result<Entry, String> {
        let id = InfoHash::from_hex(&t.info_hash).ok_or("bad info-hash")?;
        let kept = t.has_torrent_file.then(|| {
            let path = state.torrent_file(&t.info_hash);
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let metainfo = Metainfo::from_bytes(&bytes).map_err(|e| e.to_string())?;
            // A hybrid added by its `urn:btmh` link alone is known by its v2 swarm.
            if !metainfo.swarms().any(|h| h == id) {
                return Err("the kept .torrent has another info-hash".to_string());
            }
            Ok(metainfo)
        });
        let mut problem = None;
        let source = match kept {
            Some(Ok(metainfo)) => Source::Torrent(Arc::new(metainfo)),
            other => {
                if let Some(Err(e)) = other {
                    warn!(log, "kept .torrent unusable; fetching its metadata again";
                          "info_hash" => &t.info_hash, "error" => &e);
                    problem = Some(format!(
                        "the kept .torrent could not be used ({e}); its metadata is fetched from peers again"
                    ));
                }
                let mut magnet = match &t.magnet {
                    Some(link) => Magnet::parse(link).map_err(|e| e.to_string())?,
                    None => Magnet {
                        info_hash: id,
                        v2_info_hash: None,
                        display_name: Some(t.name.clone()),
                        trackers: Vec::new(),
                        peers: Vec::new(),
                        peer_hosts: Vec::new(),
                        select_only: None,
                    },
                };
                // A v2 torrent's metadata can only be checked (and a v2-only one's swarm
                // only joined) with its v2 hash: the link gets it when the state has it.
                if magnet.v2_info_hash.is_none() {
                    magnet.v2_info_hash = t.info_hash_v2.as_deref().and_then(hash256_from_hex);
                }
                Source::Magnet(magnet)
            }
        };
        let mut entry = Entry::new(id, t.name.clone(), source, t.dir.clone());
        entry.error = problem;
        entry.magnet_link = t.magnet.clone();
        entry.paused = t.paused;
        entry.awaiting_files = t.awaiting_files;
        entry.selection = t.selection.clone();
        entry.high = t.high_priority.clone();
        entry.own_goal = t.seed_goal;
        entry.finished = t.finished;
        entry.labels = t.labels.clone();
        entry.upload_limit = t.upload_limit;
        entry.download_limit = t.download_limit;
        entry.added_at = t.added_at;
        entry.uploaded_before = t.uploaded;
        entry.downloaded_before = t.downloaded;
        entry.seeded_before = t.seeded_secs;
        Ok(entry)
    }

    fn saved(&self) -> SavedSession {
        SavedSession {
            version: STATE_VERSION,
            settings: self.settings,
            torrents: self
                .torrents
                .values()
                .map(|e| SavedTorrent {
                    info_hash: e.id.to_hex(),
                    name: e.name.clone(),
                    magnet: e.magnet_link.clone(),
                    has_torrent_file: matches!(e.source, Source::Torrent(_)),
                    info_hash_v2: match &e.source {
                        Source::Torrent(m) => m.info_hash_v2,
                        Source::Magnet(m) => m.v2_info_hash,
                    }
                    .map(|h| data_encoding::HEXLOWER.encode(&h)),
                    dir: e.dir.clone(),
                    paused: e.paused,
                    awaiting_files: e.awaiting_files,
                    selection: e.selection.clone(),
                    high_priority: e.high.clone(),
                    seed_goal: e.own_goal,
                    finished: e.finished,
                    labels: e.labels.clone(),
                    upload_limit: e.upload_limit,
                    download_limit: e.download_limit,
                    added_at: e.added_at,
                    uploaded: e.uploaded_before + e.last.uploaded,
                    downloaded: e.downloaded_before + e.last.downloaded_this_run,
                    seeded_secs: e.seeded_secs(),
                })
                .collect(),
        }
    }

    /// Queues a write of the state file.
    fn save(&self) {
        match serde_json::to_vec_pretty(&self.saved()) {
            Ok(bytes) => self.writer.do_send(WriteFile {
                path: self.state.session_file(),
                bytes: bytes.into(),
            }),
            Err(e) => warn!(self.log, "cannot encode state"; "error" => %e),
        }
    }

    fn entry(&self, id: &InfoHash) -> Result<&Entry, SessionError> {
        self.torrents
            .get(id)
            .ok_or_else(|| SessionError::NotFound(id.to_hex()))
    }

    fn entry_mut(&mut self, id: &InfoHash) -> Result<&mut Entry, SessionError> {
        self.torrents
            .get_mut(id)
            .ok_or_else(|| SessionError::NotFound(id.to_hex()))
    }

    /// Starts the torrent's tree: a Coordinator, or a MetadataFetcher for a magnet link.
    fn start_run(&mut self, id: InfoHash, ctx: &mut Context<Self>) {
        if !self.may_start(id) {
            return;
        }
        let mut config = self.config.engine.clone();
        config.shared_listener = Some(self.config.listen_addr);
        config.budget = Some(self.budget.clone());
        config.global_limiter = Some(self.limiter.clone());
        let dht = self.config.dht.clone();
        let listener = self.config.listener.clone();
        let root = self.config.download_root.clone();
        let log = self.log.clone();
        let me = ctx.address();
        let Some(entry) = self.torrents.get_mut(&id) else {
            return;
        };
        entry.begin_run(&mut config);
        let events = EventTap {
            id,
            generation: entry.generation,
            session: me,
        }
        .start()
        .recipient();
        let download_dir = root.join(&entry.dir);
        let log = log.new(o!("torrent" => entry.name.clone()));
        match &entry.source {
            Source::Torrent(metainfo) => {
                let coordinator = Coordinator::start(TorrentParams {
                    metainfo: (**metainfo).clone(),
                    download_dir,
                    config,
                    selection: selection_of(&entry.selection),
                    high_priority: entry.high.clone(),
                    dht,
                    events,
                    log,
                });
                // A hybrid's peers may name either of its swarms.
                for info_hash in routed_hashes(id, metainfo) {
                    listener.do_send(Route {
                        info_hash,
                        to: coordinator.clone().recipient(),
                        metrics: entry.metrics.of(ActorKind::Coordinator),
                    });
                }
                entry.run = Some(Run::Coordinator(coordinator));
            }
            Source::Magnet(magnet) => {
                let fetcher = MetadataFetcher::start(MagnetParams {
                    magnet: magnet.clone(),
                    download_dir,
                    config,
                    selection: selection_of(&entry.selection),
                    dht,
                    pex: true,
                    events,
                    log,
                    hand_over: false,
                });
                entry.run = Some(Run::Fetcher(fetcher));
            }
        }
    }

    /// Whether the torrent's tree may start now: none runs or is stopping, a download
    /// slot is free (else it waits `queued`), and its folder is reached from the root
    /// through no link (one swapped in since the torrent was added would otherwise take
    /// every file elsewhere).
    fn may_start(&mut self, id: InfoHash) -> bool {
        let active = self.active_downloads();
        let limit = self.config.max_active_downloads;
        let root = &self.config.download_root;
        let Some(entry) = self.torrents.get_mut(&id) else {
            return false;
        };
        if entry.run.is_some() || entry.stopping {
            return false;
        }
        // A torrent known complete only seeds: it takes no download slot.
        let complete =
            entry.last.total_bytes > 0 && entry.last.verified_bytes >= entry.last.total_bytes;
        if limit > 0 && !complete && active >= limit {
            if !entry.queued {
                entry.queued = true;
                log_event(&self.config.events, "torrent queued", entry);
            }
            return false;
        }
        entry.queued = false;
        if let Err(e) = torrent_folder(root, &entry.dir, true) {
            warn!(self.log, "the torrent's folder is unusable"; "torrent" => &entry.name, "error" => %e);
            entry.error = Some(format!("{}: {e}", root.join(&entry.dir).display()));
            return false;
        }
        true
    }

    /// Stops the torrent's tree, if one runs; the future ends when it has stopped (or
    /// the time limit passed), with the tree's last file progress and piece map, which
    /// [`Session::stopped`] keeps for while it is not running. Its counters join the
    /// totals.
    fn stop_run(&mut self, id: InfoHash) -> impl Future<Output = LastViews> + 'static {
        let listener = self.config.listener.clone();
        let routed = match self.torrents.get(&id).map(|entry| &entry.source) {
            Some(Source::Torrent(m)) => routed_hashes(id, m),
            _ => vec![id],
        };
        let run = self.torrents.get_mut(&id).and_then(|entry| {
            let run = entry.run.take()?;
            entry.stopping = true;
            entry.generation += 1;
            entry.uploaded_before += entry.last.uploaded;
            entry.downloaded_before += entry.last.downloaded_this_run;
            entry.end_seeding();
            entry.last = Progress {
                total_bytes: entry.last.total_bytes,
                verified_bytes: entry.last.verified_bytes,
                phase: entry.last.phase,
                ..Progress::default()
            };
            Some(run)
        });
        async move {
            let Some(run) = run else {
                return LastViews::default();
            };
            for info_hash in routed {
                listener.do_send(Unroute { info_hash });
            }
            let stop = async {
                match run {
                    Run::Coordinator(c) => {
                        let files = ask_tree(Some(c.clone()), GetFileProgress).await;
                        let pieces = ask_tree(Some(c.clone()), GetPieceMap).await;
                        let _ = c.send(Shutdown).await;
                        LastViews {
                            files,
                            pieces,
                            timed_out: false,
                        }
                    }
                    Run::Fetcher(f) => {
                        let _ = f.send(Shutdown).await;
                        LastViews::default()
                    }
                }
            };
            tokio::time::timeout(STOP_TIMEOUT, stop)
                .await
                .unwrap_or_else(|_| LastViews {
                    timed_out: true,
                    ..LastViews::default()
                })
        }
    }

    /// A tree has stopped: others may start, and its last views are kept.
    /// A tree that did not confirm its stop may still be writing its files and resume
    /// file: the torrent stays `stopping` (so nothing starts a second tree on the same
    /// files) and says why, until the daemon restarts.
    fn stopped(&mut self, id: InfoHash, views: LastViews) {
        if let Some(entry) = self.torrents.get_mut(&id) {
            if views.timed_out {
                warn!(self.log, "a torrent's actors did not stop in time"; "torrent" => &entry.name);
                entry.error = Some(format!(
                    "its actors did not stop within {} s; restart the daemon to use it again",
                    STOP_TIMEOUT.as_secs()
                ));
                return;
            }
            entry.stopping = false;
            if let Some(files) = views.files {
                entry.files = files;
            }
            if let Some(pieces) = views.pieces {
                entry.pieces = Some(pieces);
            }
        }
    }

    /// Stops a tree and then runs `then`, answering the caller from it.
    fn stop_then<T: 'static>(
        &mut self,
        id: InfoHash,
        then: impl FnOnce(&mut Self, &mut Context<Self>) -> Result<T, SessionError> + 'static,
    ) -> ResponseActFuture<Self, Result<T, SessionError>> {
        let stopped = self.stop_run(id);
        Box::pin(stopped.into_actor(self).map(move |views, act, ctx| {
            act.stopped(id, views);
            then(act, ctx)
        }))
    }

    /// The generation of a torrent's tree: an answer from a tree asked at another
    /// generation is from a tree since replaced, and is not kept.
    fn generation(&self, id: &InfoHash) -> u64 {
        self.torrents.get(id).map_or(0, |e| e.generation)
    }

    fn busy(&self, id: &InfoHash) -> Result<(), SessionError> {
        if self.entry(id)?.stopping {
            return Err(SessionError::Conflict(
                "the torrent is stopping; try again in a moment".into(),
            ));
        }
        Ok(())
    }

    fn summary(&self, entry: &Entry) -> TorrentSummary {
        entry.summary()
    }

    fn tick(&mut self) {
        let t = unix_now();
        for entry in self.torrents.values_mut() {
            let running = entry.run.is_some();
            let sample = RateSample {
                t,
                down: if running { entry.last.rate } else { 0.0 },
                up: if running { entry.last.upload_rate } else { 0.0 },
            };
            if entry.history.len() == HISTORY_LEN {
                entry.history.pop_front();
            }
            entry.history.push_back(sample);
        }
    }

    /// Torrents running and not complete: those holding a download slot.
    fn active_downloads(&self) -> usize {
        self.torrents
            .values()
            .filter(|e| e.run.is_some() && e.last.phase != Phase::Complete)
            .count()
    }

    /// Starts queued torrents, oldest first, while download slots are free.
    fn start_queued(&mut self, ctx: &mut Context<Self>) {
        let limit = self.config.max_active_downloads;
        if limit == 0 {
            return;
        }
        let mut waiting: Vec<(u64, InfoHash)> = self
            .torrents
            .values()
            .filter(|e| {
                e.queued
                    && e.run.is_none()
                    && !e.stopping
                    && !e.paused
                    && !e.finished
                    && e.error.is_none()
            })
            .map(|e| (e.added_at, e.id))
            .collect();
        waiting.sort_unstable();
        for (_, id) in waiting {
            if self.active_downloads() >= limit {
                break;
            }
            self.start_run(id, ctx);
        }
    }

    /// Stops every seeding torrent that met its goal, with a log line.
    fn check_seed_goals(&mut self, ctx: &mut Context<Self>) {
        let mut done = Vec::new();
        for entry in self.torrents.values_mut() {
            let seeding = entry.run.is_some()
                && !entry.stopping
                && entry.last.phase == Phase::Complete
                && entry.error.is_none();
            if !seeding {
                entry.end_seeding();
                continue;
            }
            entry.seeding_since.get_or_insert_with(Instant::now);
            let seeded = Duration::from_secs(entry.seeded_secs());
            if !entry.goal_waived && entry.goal.reached(entry.ratio(), seeded) {
                done.push(entry.id);
            }
        }
        for id in done {
            if let Ok(entry) = self.entry_mut(&id) {
                entry.finished = true;
                let summary = entry.summary();
                info!(self.config.events, "seeding goal reached, stopped seeding";
                      "info_hash" => short_hash(&id), "torrent" => &summary.name,
                      "ratio" => format!("{:.2}", summary.ratio),
                      "seeded_secs" => summary.seeding_secs);
            }
            self.save();
            ctx.spawn(
                self.stop_then(id, |act, _| {
                    act.save();
                    Ok(())
                })
                .map(|_: Result<(), SessionError>, _, _| ()),
            );
        }
    }

    fn overview(&self) -> Overview {
        let torrents: Vec<TorrentSummary> =
            self.torrents.values().map(|e| self.summary(e)).collect();
        Overview {
            upload_rate: torrents.iter().map(|t| t.upload_rate).sum(),
            download_rate: torrents.iter().map(|t| t.download_rate).sum(),
            torrents,
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            upload_limit: self.settings.upload_limit,
            download_limit: self.settings.download_limit,
            download_root: self.config.download_root.display().to_string(),
            listen_port: self.config.listen_addr.port(),
        }
    }

    /// The Coordinator of a running torrent, for queries.
    fn coordinator(&self, id: &InfoHash) -> Result<Option<Addr<Coordinator>>, SessionError> {
        Ok(match &self.entry(id)?.run {
            Some(Run::Coordinator(c)) => Some(c.clone()),
            _ => None,
        })
    }

    fn on_metadata(
        &mut self,
        id: InfoHash,
        torrent: Bytes,
        metainfo: Arc<Metainfo>,
        ctx: &mut Context<Self>,
    ) {
        self.writer.do_send(WriteFile {
            path: self.state.torrent_file(&id.to_hex()),
            bytes: torrent,
        });
        let Some(entry) = self.torrents.get_mut(&id) else {
            return;
        };
        entry.name = metainfo.info.name.clone();
        log_event(&self.config.events, "metadata received", entry);
        // A magnet's BEP 53 `so=`, now that the files can be counted, unless files were
        // chosen already (or are to be chosen).
        if let Source::Magnet(magnet) = &entry.source {
            if let (None, false, Some(so)) =
                (&entry.selection, entry.awaiting_files, &magnet.select_only)
            {
                let chosen: Vec<u32> = (metainfo.info.layout.files().iter().enumerate())
                    .filter(|(_, f)| !f.padding)
                    .filter_map(|(i, _)| u32::try_from(i).ok())
                    .filter(|&i| so.contains(i))
                    .collect();
                // A `so=` naming no file of this torrent selects nothing: ignored.
                if !chosen.is_empty() {
                    entry.selection = Some(chosen);
                }
            }
        }
        entry.last.total_bytes = entry.wanted_bytes_of(&metainfo);
        entry.last.phase = Phase::Checking;
        entry.files = entry.files_at_rest(&metainfo.info.layout);
        entry.source = Source::Torrent(metainfo);
        // The fetcher stops by itself; the torrent proper starts unless files are to
        // be chosen first.
        entry.run = None;
        entry.generation += 1;
        let start = !entry.awaiting_files && !entry.paused;
        self.save();
        if start {
            self.start_run(id, ctx);
        }
    }
}

impl Entry {
    fn new(id: InfoHash, name: String, source: Source, dir: String) -> Entry {
        let mut entry = Entry {
            id,
            name,
            magnet_link: None,
            source,
            dir,
            paused: false,
            awaiting_files: false,
            selection: None,
            high: Vec::new(),
            own_goal: None,
            goal: SeedGoal::default(),
            finished: false,
            goal_waived: false,
            seeding_since: None,
            seeded_before: 0,
            queued: false,
            labels: Vec::new(),
            upload_limit: 0,
            download_limit: 0,
            added_at: unix_now(),
            uploaded_before: 0,
            downloaded_before: 0,
            run: None,
            stopping: false,
            generation: 0,
            last: Progress::default(),
            error: None,
            trackers: BTreeMap::new(),
            history: VecDeque::new(),
            metrics: Metrics::new(),
            trace: Arc::default(),
            files: Vec::new(),
            pieces: None,
        };
        if let Source::Torrent(m) = &entry.source {
            let m = m.clone();
            entry.last.total_bytes = entry.wanted_bytes_of(&m);
            entry.files = entry.files_at_rest(&m.info.layout);
        } else {
            entry.last.phase = Phase::Metadata;
        }
        entry
    }

    fn wanted_bytes_of(&self, metainfo: &Metainfo) -> u64 {
        let layout = &metainfo.info.layout;
        super::selection::SelectedFiles::new(layout, selection_of(&self.selection).as_ref())
            .wanted_bytes(layout)
    }

    /// The file list with no progress known.
    fn files_at_rest(&self, layout: &Layout) -> Vec<FileProgress> {
        let selection = selection_of(&self.selection);
        layout
            .files()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.padding)
            .map(|(index, f)| FileProgress {
                index,
                path: f.path.components().join("/"),
                length: f.length,
                selected: selection.as_ref().is_none_or(|s| s.contains(index as u32)),
                priority: FilePriority::of(
                    selection.as_ref().is_none_or(|s| s.contains(index as u32)),
                    self.high.binary_search(&(index as u32)).is_ok(),
                ),
                verified_bytes: 0,
            })
            .collect()
    }

    fn state(&self) -> &'static str {
        let fetching = matches!(self.run, Some(Run::Fetcher(_)));
        if self.error.is_some() {
            "error"
        } else if fetching {
            "metadata"
        } else if self.awaiting_files {
            "awaiting_files"
        } else if self.paused {
            "paused"
        } else if self.finished && self.run.is_none() {
            "finished"
        } else if self.queued && self.run.is_none() {
            "queued"
        } else {
            match (&self.run, self.last.phase) {
                (Some(Run::Fetcher(_)), _) | (_, Phase::Metadata) => "metadata",
                (_, Phase::Checking) => "checking",
                (_, Phase::Downloading) => "downloading",
                (_, Phase::Complete) => "seeding",
            }
        }
    }

    /// Bytes uploaded over the wanted size, every run counted.
    /// A new run's generation, cleared status and fresh counters (recording into the
    /// torrent's trace slot), and its part of `config`: limits and the magnet's peers.
    fn begin_run(&mut self, config: &mut EngineConfig) {
        self.generation += 1;
        self.error = None;
        self.trackers.clear();
        self.last = Progress {
            total_bytes: self.last.total_bytes,
            verified_bytes: self.last.verified_bytes,
            ..Progress::default()
        };
        config.metrics = Metrics::with_trace(self.trace.clone());
        self.metrics = config.metrics.clone();
        config.upload_limit = self.upload_limit;
        config.download_limit = self.download_limit;
        if let Some(magnet) = self
            .magnet_link
            .as_deref()
            .and_then(|l| Magnet::parse(l).ok())
        {
            config.initial_peers.extend(magnet.peers.iter().copied());
        }
    }

    /// Seconds seeded over all runs, this one included.
    fn seeded_secs(&self) -> u64 {
        let now = self.seeding_since.map_or(0, |t| t.elapsed().as_secs());
        self.seeded_before.saturating_add(now)
    }

    /// Folds this run's seeding time into the total, if it was seeding.
    fn end_seeding(&mut self) {
        self.seeded_before = self.seeded_secs();
        self.seeding_since = None;
    }

    fn ratio(&self) -> f64 {
        let uploaded = self.uploaded_before + self.last.uploaded;
        match self.last.total_bytes {
            0 => 0.0,
            total => uploaded as f64 / total as f64,
        }
    }

    fn summary(&self) -> TorrentSummary {
        let p = &self.last;
        let running = self.run.is_some();
        let (down, up) = if running {
            (p.rate, p.upload_rate)
        } else {
            (0.0, 0.0)
        };
        let left = p.total_bytes.saturating_sub(p.verified_bytes);
        let uploaded = self.uploaded_before + p.uploaded;
        let downloaded = self.downloaded_before + p.downloaded_this_run;
        let state = self.state();
        TorrentSummary {
            id: self.id.to_hex(),
            name: self.name.clone(),
            info_hash: self.id.to_hex(),
            state,
            total_bytes: p.total_bytes,
            verified_bytes: p.verified_bytes,
            progress: if p.total_bytes == 0 {
                0.0
            } else {
                p.verified_bytes as f64 / p.total_bytes as f64
            },
            download_rate: down,
            upload_rate: up,
            peers: if running { p.peers } else { 0 },
            seeds: if running { p.seeds } else { 0 },
            uploaded,
            downloaded,
            ratio: self.ratio(),
            eta_secs: (state == "downloading" && down > 1.0)
                .then(|| (left as f64 / down).ceil() as u64),
            labels: self.labels.clone(),
            dir: self.dir.clone(),
            error: self.error.clone(),
            added_at: self.added_at,
            upload_limit: self.upload_limit,
            download_limit: self.download_limit,
            seed_ratio: self.goal.ratio,
            seed_time_secs: self.goal.time_secs,
            seeding_secs: self.seeded_secs(),
        }
    }

    fn detail(&self, listen_port: u16) -> TorrentDetail {
        let meta = match &self.source {
            Source::Torrent(m) => Some(m),
            Source::Magnet(_) => None,
        };
        TorrentDetail {
            summary: self.summary(),
            piece_length: meta.map(|m| u64::from(m.info.layout.piece_length())),
            pieces: meta.map(|m| m.info.layout.num_pieces() as usize),
            private: meta.is_some_and(|m| m.info.private),
            comment: meta.and_then(|m| m.comment.clone()),
            info_hash_v2: meta
                .and_then(|m| m.info_hash_v2)
                .map(|h| h.iter().map(|b| format!("{b:02x}")).collect()),
            files_count: meta.map_or(0, |m| {
                m.info.layout.files().iter().filter(|f| !f.padding).count()
            }),
            hash_failures: self.last.hash_failures,
            banned: self.last.banned,
            listen_port: Some(listen_port),
            trace: self.trace.current().map(|t| TraceStatus::of(&t)),
        }
    }

    /// The torrent's trackers. While it runs, as its tracker actors last said; while it
    /// does not, every tracker of the torrent (one never started since the daemon did has
    /// no status yet), idle, with what its last run learnt.
    fn tracker_rows(&self) -> Vec<TrackerInfo> {
        let now = Instant::now();
        let mut rows: Vec<TrackerInfo> = self
            .trackers
            .values()
            .map(|s| {
                let (state, error) = match &s.state {
                    TrackerState::Idle => ("idle", None),
                    TrackerState::Updating => ("updating", None),
                    TrackerState::Working => ("working", None),
                    TrackerState::Failed(e) => ("error", Some(e.clone())),
                    TrackerState::Unusable(e) => ("unusable", Some(e.clone())),
                };
                TrackerInfo {
                    url: s.url.clone(),
                    // Counted from 1 on the page, as `info` does.
                    tier: s.tier + 1,
                    state,
                    last_error: error.or_else(|| s.last_error.clone()),
                    peers: s.peers,
                    seeders: s.seeders,
                    leechers: s.leechers,
                    next_announce_secs: super::tracker::status::next_announce_in(s, now)
                        .map(|d| d.as_secs()),
                }
            })
            .collect();
        if self.run.is_none() {
            for row in &mut rows {
                if row.state != "unusable" {
                    row.state = "idle";
                }
                row.next_announce_secs = None;
            }
            let tiers = match &self.source {
                Source::Torrent(m) => m.trackers.clone(),
                // A magnet's trackers become one tier each (as its `.torrent` says).
                Source::Magnet(m) => m.trackers.iter().map(|t| vec![t.clone()]).collect(),
            };
            for (tier, urls) in tiers.iter().enumerate() {
                for url in urls {
                    if !rows.iter().any(|r| &r.url == url) {
                        rows.push(TrackerInfo {
                            url: url.clone(),
                            tier: tier + 1,
                            state: "idle",
                            last_error: None,
                            peers: None,
                            seeders: None,
                            leechers: None,
                            next_announce_secs: None,
                        });
                    }
                }
            }
            rows.sort_by_key(|r| r.tier);
        }
        rows
    }

    /// What a torrent that is not started has verified, from its resume file: its
    /// progress, file progress and piece map show that, not nothing. Display only: the
    /// start-up check of the next run decides what is trusted.
    fn load_resume(&mut self, root: &Path) {
        let Source::Torrent(m) = &self.source else {
            return;
        };
        let m = m.clone();
        let layout = &m.info.layout;
        let resume = SideFiles::new(layout, &self.id).resume;
        let bound = super::resume::json_size_bound(layout);
        let bytes = torrent_folder(root, &self.dir, false).and_then(|jail| {
            use std::io::Read;
            let file = jail.open_file(&[resume], super::jail::Access::Read)?;
            let mut bytes = Vec::new();
            file.take(bound).read_to_end(&mut bytes)?;
            Ok(bytes)
        });
        let Ok(bytes) = bytes else {
            return;
        };
        let Ok(data) = super::resume::ResumeData::parse(&bytes, self.id, layout) else {
            return;
        };
        let have = data.verified_bitfield();
        let selection = selection_of(&self.selection);
        let wanted =
            super::selection::SelectedFiles::new(layout, selection.as_ref()).wanted_pieces(layout);
        self.last.verified_bytes = layout
            .pieces()
            .filter(|p| wanted.has(p.get()) && have.has(p.get()))
            .map(|p| u64::from(layout.piece_len(p)))
            .sum();
        let per_file = super::selection::verified_bytes_per_file(layout, &have);
        for file in &mut self.files {
            file.verified_bytes = per_file.get(file.index).copied().unwrap_or(0);
        }
        self.pieces = Some(PieceMap {
            pieces: layout.num_pieces() as usize,
            have: have.as_bytes().to_vec(),
            wanted: wanted.as_bytes().to_vec(),
            downloading: Vec::new(),
            streams: Vec::new(),
        });
    }

    /// The last piece map known (an empty one before any), its wanted pieces those of the
    /// files chosen now: a choice made while stopped shows at once.
    fn empty_pieces(&self) -> PieceMap {
        let mut map = self.pieces.clone().unwrap_or_else(|| {
            let pieces = match &self.source {
                Source::Torrent(m) => m.info.layout.num_pieces() as usize,
                Source::Magnet(_) => 0,
            };
            PieceMap {
                pieces,
                have: vec![0; pieces.div_ceil(8)],
                wanted: Vec::new(),
                downloading: Vec::new(),
                streams: Vec::new(),
            }
        });
        map.wanted = match &self.source {
            Source::Torrent(m) => {
                let layout = &m.info.layout;
                super::selection::SelectedFiles::new(layout, selection_of(&self.selection).as_ref())
                    .wanted_pieces(layout)
                    .as_bytes()
                    .to_vec()
            }
            Source::Magnet(_) => Vec::new(),
        };
        map
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.log, "session started"; "torrents" => self.torrents.len(),
              "root" => %self.config.download_root.display());
        let ids: Vec<InfoHash> = self
            .torrents
            .values()
            // A torrent awaiting a file choice runs only while its metadata is still
            // to come (the fetcher parks it once the metadata is in).
            .filter(|e| {
                !(e.paused
                    || e.finished
                    || e.awaiting_files && matches!(e.source, Source::Torrent(_)))
            })
            .map(|e| e.id)
            .collect();
        let root = self.config.download_root.clone();
        for entry in self.torrents.values_mut() {
            if !ids.contains(&entry.id) {
                entry.load_resume(&root);
            }
        }
        for id in ids {
            self.start_run(id, ctx);
        }
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            act.tick();
            act.check_seed_goals(ctx);
            act.start_queued(ctx);
        });
        // The totals move while torrents run; keep them on disk now and then.
        ctx.run_interval(Duration::from_secs(30), |act, _| act.save());
    }
}

impl Handler<FromTorrent> for Session {
    type Result = ();

    fn handle(&mut self, msg: FromTorrent, ctx: &mut Context<Self>) {
        let Some(entry) = self.torrents.get_mut(&msg.id) else {
            return;
        };
        if entry.generation != msg.generation {
            return;
        }
        match msg.event {
            TorrentEvent::Progress(p) => entry.last = p,
            TorrentEvent::Completed(p) => {
                // A torrent complete when it starts says so too, but fetched nothing.
                let what = if p.downloaded_this_run > 0 {
                    "torrent completed"
                } else {
                    "torrent complete, seeding"
                };
                entry.last = p;
                log_event(&self.config.events, what, entry);
            }
            TorrentEvent::Failed(_, message) => {
                warn!(self.config.events, "torrent failed"; "error" => &message,
                      "info_hash" => short_hash(&entry.id), "torrent" => &entry.name);
                entry.error = Some(message);
                let stop = self.stop_run(msg.id);
                ctx.spawn(
                    stop.into_actor(self)
                        .map(move |views, act, _| act.stopped(msg.id, views)),
                );
            }
            TorrentEvent::MetadataReceived {
                torrent,
                metainfo: Some(metainfo),
                ..
            } => self.on_metadata(msg.id, torrent, metainfo, ctx),
            // Only a fetcher that starts the Coordinator itself leaves the metadata out;
            // the Session never starts one so.
            TorrentEvent::MetadataReceived { metainfo: None, .. }
            | TorrentEvent::Running { .. } => {}
            TorrentEvent::Tracker(status) => {
                entry.trackers.insert(status.url.clone(), status);
            }
        }
    }
}

/// The info-hashes the shared listener routes to torrent `id`: its own, and each swarm
/// of its metainfo (a hybrid has two; one added by `urn:btmh` alone is known by its v2
/// swarm, and v1 peers name the other).
fn routed_hashes(id: InfoHash, metainfo: &Metainfo) -> Vec<InfoHash> {
    let mut hashes = vec![id];
    for swarm in metainfo.swarms() {
        if !hashes.contains(&swarm) {
            hashes.push(swarm);
        }
    }
    hashes
}

impl Handler<AddTorrent> for Session {
    type Result = Result<TorrentSummary, SessionError>;

    fn handle(&mut self, msg: AddTorrent, ctx: &mut Context<Self>) -> Self::Result {
        let mut torrent_bytes = None;
        let (id, name, source, magnet_link) = match msg.source {
            AddSource::Torrent { metainfo, bytes } => {
                if let Some(indices) = &msg.selection {
                    check_selection(&metainfo.info.layout, &selection_from(indices))
                        .map_err(|e| SessionError::BadRequest(format!("files: {e}")))?;
                }
                torrent_bytes = Some(bytes);
                (
                    metainfo.info_hash,
                    metainfo.info.name.clone(),
                    Source::Torrent(Arc::new(*metainfo)),
                    None,
                )
            }
            AddSource::Magnet { magnet, link } => (
                magnet.info_hash,
                magnet
                    .display_name
                    .clone()
                    .unwrap_or_else(|| magnet.info_hash.to_hex()),
                Source::Magnet(magnet),
                Some(link),
            ),
        };
        if let Some(existing) = self.torrents.get(&id) {
            return Err(SessionError::Conflict(format!(
                "{} is already added",
                existing.name
            )));
        }
        check_labels(&msg.labels)?;
        let mut entry = Entry::new(id, name, source, msg.dir);
        entry.goal = self.config.seed_goal;
        entry.magnet_link = magnet_link;
        entry.paused = msg.paused;
        entry.awaiting_files = msg.choose_files && matches!(entry.source, Source::Magnet(_));
        entry.selection = msg.selection;
        entry.labels = msg.labels;
        if let Source::Torrent(m) = &entry.source {
            let m = m.clone();
            entry.last.total_bytes = entry.wanted_bytes_of(&m);
            entry.files = entry.files_at_rest(&m.info.layout);
        }
        if let Some(bytes) = torrent_bytes {
            self.writer.do_send(WriteFile {
                path: self.state.torrent_file(&id.to_hex()),
                bytes,
            });
        }
        let start = !entry.paused;
        log_event(
            &self.config.events,
            if entry.paused {
                "torrent added, paused"
            } else {
                "torrent added"
            },
            &entry,
        );
        self.torrents.insert(id, entry);
        self.save();
        if start {
            // A magnet waiting for its files still fetches the metadata.
            self.start_run(id, ctx);
        }
        Ok(self.summary(self.entry(&id)?))
    }
}

fn check_labels(labels: &[String]) -> Result<(), SessionError> {
    if labels.len() > MAX_LABELS {
        return Err(SessionError::BadRequest(format!(
            "at most {MAX_LABELS} labels"
        )));
    }
    if let Some(bad) = labels
        .iter()
        .find(|l| l.is_empty() || l.len() > MAX_LABEL_BYTES || l.chars().any(char::is_control))
    {
        return Err(SessionError::BadRequest(format!(
            "label {bad:?}: 1 to {MAX_LABEL_BYTES} bytes, no control characters"
        )));
    }
    Ok(())
}

impl Handler<GetOverview> for Session {
    type Result = MessageResult<GetOverview>;

    fn handle(&mut self, _: GetOverview, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.overview())
    }
}

impl Handler<GetTorrent> for Session {
    type Result = Result<TorrentDetail, SessionError>;

    fn handle(&mut self, msg: GetTorrent, _: &mut Context<Self>) -> Self::Result {
        Ok(self.entry(&msg.id)?.detail(self.config.listen_addr.port()))
    }
}

impl Handler<Pause> for Session {
    type Result = ResponseActFuture<Self, Result<TorrentSummary, SessionError>>;

    fn handle(&mut self, msg: Pause, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        if let Err(e) = self.busy(&id) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        if let Ok(entry) = self.entry_mut(&id) {
            entry.paused = true;
            entry.queued = false;
        }
        self.save();
        self.stop_then(id, move |act, _| {
            act.save();
            let entry = act.entry(&id)?;
            log_event(&act.config.events, "torrent paused", entry);
            Ok(entry.summary())
        })
    }
}

impl Handler<Resume> for Session {
    type Result = Result<TorrentSummary, SessionError>;

    fn handle(&mut self, msg: Resume, ctx: &mut Context<Self>) -> Self::Result {
        self.busy(&msg.id)?;
        let entry = self.entry_mut(&msg.id)?;
        entry.paused = false;
        entry.error = None;
        if entry.finished {
            // Seeding on past the goal, as asked.
            entry.finished = false;
            entry.goal_waived = true;
        }
        let metadata_in = matches!(entry.source, Source::Torrent(_));
        if metadata_in {
            entry.awaiting_files = false;
        }
        self.save();
        self.start_run(msg.id, ctx);
        let entry = self.entry(&msg.id)?;
        log_event(&self.config.events, "torrent resumed", entry);
        Ok(entry.summary())
    }
}

impl Handler<Recheck> for Session {
    type Result = ResponseActFuture<Self, Result<TorrentSummary, SessionError>>;

    fn handle(&mut self, msg: Recheck, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        let checked = self.busy(&id).and_then(|()| {
            let entry = self.entry(&id)?;
            match &entry.source {
                Source::Torrent(m) => Ok((m.clone(), entry.dir.clone())),
                Source::Magnet(_) => Err(SessionError::Conflict(
                    "no metadata yet, nothing to check".into(),
                )),
            }
        });
        let (metainfo, dir) = match checked {
            Ok(v) => v,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let stopped = self.stop_run(id);
        let layout = Arc::new(metainfo.info.layout.clone());
        Box::pin(
            stopped
                .into_actor(self)
                .then(move |views, act, _| {
                    act.stopped(id, views);
                    // Without a resume file the start-up check hashes every piece on disk.
                    act.delete_files(id, &dir, layout, DeleteFiles::Resume)
                        .into_actor(act)
                })
                .map(move |failed, act, ctx| act.rechecked(id, &metainfo, &failed, ctx)),
        )
    }
}

impl Session {
    /// The rest of a recheck, once the old tree is stopped and its resume file deleted.
    fn rechecked(
        &mut self,
        id: InfoHash,
        metainfo: &Metainfo,
        failed: &[String],
        ctx: &mut Context<Self>,
    ) -> Result<TorrentSummary, SessionError> {
        for failure in failed {
            warn!(self.log, "cannot delete the resume file"; "error" => %failure);
        }
        let act = self;
        {
            let entry = act.entry_mut(&id)?;
            entry.last.verified_bytes = 0;
            entry.error = None;
            // What the old tree had verified is not known any more.
            entry.pieces = None;
            entry.files = entry.files_at_rest(&metainfo.info.layout);
            if !entry.paused && !entry.awaiting_files {
                act.start_run(id, ctx);
            }
        }
        Ok(act.entry(&id)?.summary())
    }

    /// Deletes through a FileWriter (the one owner of a torrent's files) started for the
    /// purpose on a writing thread, so no file is deleted by a path or on the Session's
    /// thread. `dir` is the torrent's folder, reached from the root through no link.
    /// Resolves to what could not be deleted.
    fn delete_files(
        &self,
        id: InfoHash,
        dir: &str,
        layout: Arc<Layout>,
        what: DeleteFiles,
    ) -> impl Future<Output = Vec<String>> + 'static {
        let root = self.config.download_root.clone();
        let folder = torrent_folder(&root, dir, false);
        let display = root.join(dir);
        let arbiter = self
            .config
            .engine
            .threads
            .as_ref()
            .map_or_else(Arbiter::current, |t| t.place_torrent().writer);
        async move {
            let jail = match folder {
                Ok(jail) => jail,
                // Nothing was ever written: nothing to delete.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
                Err(e) => return vec![format!("{}: {e}", display.display())],
            };
            let writer = FileWriter::start_in_arbiter(&arbiter, move |_| {
                FileWriter::for_deletion(jail, layout, id)
            });
            writer
                .send(what)
                .await
                .unwrap_or_else(|e| vec![format!("{}: {e}", display.display())])
        }
    }
}

impl Handler<Remove> for Session {
    type Result = ResponseActFuture<Self, Result<(), SessionError>>;

    fn handle(&mut self, msg: Remove, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        if let Err(e) = self.busy(&id) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let stopped = self.stop_run(id);
        Box::pin(stopped.into_actor(self).map(move |_, act, ctx| {
            let entry = act
                .torrents
                .remove(&id)
                .ok_or_else(|| SessionError::NotFound(id.to_hex()))?;
            let _ = std::fs::remove_file(act.state.torrent_file(&id.to_hex()));
            if msg.delete_data {
                if let Source::Torrent(m) = &entry.source {
                    let layout = Arc::new(m.info.layout.clone());
                    let log = act.log.clone();
                    let deleted = act.delete_files(id, &entry.dir, layout, DeleteFiles::Everything);
                    ctx.spawn(
                        async move {
                            for failure in deleted.await {
                                warn!(log, "cannot delete"; "error" => %failure);
                            }
                        }
                        .into_actor(act),
                    );
                }
            }
            log_event(
                &act.config.events,
                if msg.delete_data {
                    "torrent removed, its data deleted"
                } else {
                    "torrent removed"
                },
                &entry,
            );
            act.save();
            Ok(())
        }))
    }
}

/// The torrent's folder `dir` (relative, checked when the torrent was added) beneath the
/// download root, made if `create`, reached through no link.
fn torrent_folder(root: &Path, dir: &str, create: bool) -> std::io::Result<Jail> {
    let names = Path::new(dir)
        .components()
        .map(|c| match c {
            std::path::Component::Normal(name) => name.to_str().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "a folder name not UTF-8")
            }),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a folder that is not a plain relative path",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let jail = if create {
        Jail::create(root)?
    } else {
        Jail::open(root)?
    };
    jail.subdir(&names, create)
}

impl Handler<SetLabels> for Session {
    type Result = Result<TorrentSummary, SessionError>;

    fn handle(&mut self, msg: SetLabels, _: &mut Context<Self>) -> Self::Result {
        check_labels(&msg.labels)?;
        self.entry_mut(&msg.id)?.labels = msg.labels;
        self.save();
        Ok(self.entry(&msg.id)?.summary())
    }
}

impl Handler<SetLimits> for Session {
    type Result = Result<TorrentSummary, SessionError>;

    fn handle(&mut self, msg: SetLimits, _: &mut Context<Self>) -> Self::Result {
        let coordinator = self.coordinator(&msg.id)?;
        let entry = self.entry_mut(&msg.id)?;
        entry.upload_limit = msg.upload;
        entry.download_limit = msg.download;
        if let Some(c) = coordinator {
            c.do_send(SetTorrentRates {
                upload: msg.upload,
                download: msg.download,
            });
        }
        self.save();
        Ok(self.entry(&msg.id)?.summary())
    }
}

impl Handler<SetSeedGoal> for Session {
    type Result = Result<TorrentSummary, SessionError>;

    /// A new goal is judged afresh: a torrent resumed past its old goal stops at the new
    /// one. A finished torrent stays stopped until resumed.
    fn handle(&mut self, msg: SetSeedGoal, _: &mut Context<Self>) -> Self::Result {
        if let Some(r) = msg.goal.and_then(|g| g.ratio) {
            if !(r.is_finite() && r >= 0.0) {
                return Err(SessionError::BadRequest(
                    "seed_ratio: a number of at least 0".into(),
                ));
            }
        }
        let default = self.config.seed_goal;
        let entry = self.entry_mut(&msg.id)?;
        entry.own_goal = msg.goal;
        entry.goal = msg.goal.unwrap_or(default);
        entry.goal_waived = false;
        self.save();
        Ok(self.entry(&msg.id)?.summary())
    }
}

impl Handler<OpenStream> for Session {
    type Result = Result<OpenedStream, SessionError>;

    fn handle(&mut self, msg: OpenStream, _: &mut Context<Self>) -> Self::Result {
        let entry = self.entry(&msg.id)?;
        let Source::Torrent(m) = &entry.source else {
            return Err(SessionError::Conflict(
                "the torrent's metadata is not in yet".into(),
            ));
        };
        let layout = &m.info.layout;
        let file = layout
            .files()
            .get(msg.file)
            .filter(|f| !f.padding)
            .ok_or_else(|| SessionError::NotFound(format!("file {} of {}", msg.file, msg.id)))?;
        let (path, length) = (file.path.display(), file.length);
        let Some(coordinator) = self.coordinator(&msg.id)? else {
            return Err(SessionError::Conflict(
                "the torrent is not running; resume it to stream".into(),
            ));
        };
        Ok(OpenedStream {
            source: super::stream::StreamSource {
                read: coordinator.clone().recipient(),
                close: coordinator.recipient(),
                layout: Arc::new(layout.clone()),
            },
            path,
            length,
        })
    }
}

impl Handler<GetFiles> for Session {
    type Result = ResponseActFuture<Self, Result<Vec<FileProgress>, SessionError>>;

    fn handle(&mut self, msg: GetFiles, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        let coordinator = match self.coordinator(&id) {
            Ok(c) => c,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let asked = self.generation(&id);
        let ask = ask_tree(coordinator, GetFileProgress);
        Box::pin(ask.into_actor(self).map(move |fresh, act, _| {
            let entry = act.entry_mut(&id)?;
            if let Some(files) = fresh.filter(|_| entry.generation == asked) {
                entry.files = files;
            }
            Ok(entry.files.clone())
        }))
    }
}

impl Handler<SetFiles> for Session {
    type Result = ResponseActFuture<Self, Result<Vec<FileProgress>, SessionError>>;

    fn handle(&mut self, msg: SetFiles, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        let checked = self
            .busy(&id)
            .and_then(|()| match &self.entry(&id)?.source {
                Source::Torrent(m) => {
                    let mut selected = msg.selected.clone();
                    selected.sort_unstable();
                    selected.dedup();
                    check_selection(&m.info.layout, &selection_from(&selected))
                        .map_err(|e| SessionError::BadRequest(format!("files: {e}")))?;
                    // High among the selected only: a skipped file is not fetched at all.
                    let mut high: Vec<u32> = msg
                        .high
                        .iter()
                        .copied()
                        .filter(|i| selected.binary_search(i).is_ok())
                        .collect();
                    high.sort_unstable();
                    high.dedup();
                    Ok((m.clone(), selected, high))
                }
                Source::Magnet(_) => Err(SessionError::Conflict(
                    "no metadata yet: the files are not known".into(),
                )),
            });
        let (metainfo, selected, high) = match checked {
            Ok(v) => v,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let was_running = self.entry(&id).is_ok_and(|e| e.run.is_some());
        self.stop_then(id, move |act, ctx| {
            let entry = act.entry_mut(&id)?;
            // Every real file chosen (padding indices, if named, count for nothing).
            let every = metainfo
                .info
                .layout
                .files()
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.padding)
                .all(|(i, _)| u32::try_from(i).is_ok_and(|i| selected.binary_search(&i).is_ok()));
            entry.selection = (!every).then_some(selected);
            entry.high = high;
            entry.last.total_bytes = entry.wanted_bytes_of(&metainfo);
            entry.files = entry.files_at_rest(&metainfo.info.layout);
            if entry.awaiting_files {
                // Files chosen: the torrent waits, paused, for the word to start.
                entry.awaiting_files = false;
                entry.paused = true;
            }
            let files = entry.files.clone();
            act.save();
            if was_running {
                act.start_run(id, ctx);
            }
            Ok(files)
        })
    }
}

impl Handler<GetPeers> for Session {
    type Result = ResponseFuture<Result<Vec<PeerInfo>, SessionError>>;

    fn handle(&mut self, msg: GetPeers, _: &mut Context<Self>) -> Self::Result {
        let coordinator = self.coordinator(&msg.id);
        Box::pin(async move {
            Ok(ask_tree(coordinator?, GetPeerList)
                .await
                .unwrap_or_default())
        })
    }
}

impl Handler<GetWebSeeds> for Session {
    type Result = ResponseFuture<Result<Vec<WebSeedStatus>, SessionError>>;

    /// While the torrent runs, as its Coordinator says; otherwise its web seeds, idle.
    fn handle(&mut self, msg: GetWebSeeds, _: &mut Context<Self>) -> Self::Result {
        let coordinator = self.coordinator(&msg.id);
        let idle: Vec<WebSeedStatus> = match self.entry(&msg.id).map(|e| &e.source) {
            Ok(Source::Torrent(m)) => m
                .web_seeds
                .iter()
                .map(|url| WebSeedStatus {
                    url: url.as_str().to_string(),
                    state: "idle",
                    reason: None,
                    downloaded: 0,
                })
                .collect(),
            _ => Vec::new(),
        };
        Box::pin(async move {
            let running = match coordinator? {
                Some(c) => ask_tree(Some(c), GetWebSeedList).await,
                None => None,
            };
            Ok(running.unwrap_or(idle))
        })
    }
}

impl Handler<GetPieces> for Session {
    type Result = ResponseActFuture<Self, Result<PieceMap, SessionError>>;

    fn handle(&mut self, msg: GetPieces, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        let coordinator = match self.coordinator(&id) {
            Ok(c) => c,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let asked = self.generation(&id);
        Box::pin(
            ask_tree(coordinator, GetPieceMap)
                .into_actor(self)
                .map(move |fresh, act, _| {
                    let entry = act.entry_mut(&id)?;
                    if let Some(map) = fresh.filter(|_| entry.generation == asked) {
                        entry.pieces = Some(map);
                    }
                    Ok(entry.empty_pieces())
                }),
        )
    }
}

/// Asks a torrent's running Coordinator, if there is one, within [`QUERY_TIMEOUT`]:
/// `None` without a tree, or without an answer in time.
async fn ask_tree<M>(coordinator: Option<Addr<Coordinator>>, msg: M) -> Option<M::Result>
where
    M: Message + Send + 'static,
    M::Result: Send,
    Coordinator: Handler<M>,
{
    tokio::time::timeout(QUERY_TIMEOUT, coordinator?.send(msg))
        .await
        .ok()
        .and_then(Result::ok)
}

impl Handler<GetTrackerList> for Session {
    type Result = Result<Vec<TrackerInfo>, SessionError>;

    fn handle(&mut self, msg: GetTrackerList, _: &mut Context<Self>) -> Self::Result {
        Ok(self.entry(&msg.id)?.tracker_rows())
    }
}

impl Handler<GetTorrentMetrics> for Session {
    type Result = Result<MetricsSnapshot, SessionError>;

    fn handle(&mut self, msg: GetTorrentMetrics, _: &mut Context<Self>) -> Self::Result {
        Ok(self.entry(&msg.id)?.metrics.snapshot())
    }
}

impl Handler<GetActorGraph> for Session {
    type Result = Result<GraphSnapshot, SessionError>;

    fn handle(&mut self, msg: GetActorGraph, _: &mut Context<Self>) -> Self::Result {
        Ok(self.entry(&msg.id)?.metrics.graph(msg.top))
    }
}

impl Handler<StartTrace> for Session {
    type Result = Result<TraceStatus, SessionError>;

    fn handle(&mut self, msg: StartTrace, _: &mut Context<Self>) -> Self::Result {
        if !(1..=MAX_TRACE_LIMIT).contains(&msg.limit) {
            return Err(SessionError::BadRequest(format!(
                "limit: from 1 to {MAX_TRACE_LIMIT} events"
            )));
        }
        if !(1..=1_000_000).contains(&msg.sample) {
            return Err(SessionError::BadRequest("sample: from 1 to 1000000".into()));
        }
        let recording = self
            .torrents
            .values()
            .filter(|e| e.id != msg.id && e.trace.current().is_some())
            .count();
        if recording >= MAX_TRACES {
            return Err(SessionError::Conflict(format!(
                "{MAX_TRACES} traces are recording already; stop one first"
            )));
        }
        let entry = self.entry(&msg.id)?;
        let tracer = entry.trace.start(msg.limit, msg.sample);
        info!(self.config.events, "trace started"; "info_hash" => short_hash(&entry.id),
              "torrent" => &entry.name, "limit" => msg.limit, "sample" => msg.sample);
        Ok(TraceStatus::of(&tracer))
    }
}

impl Handler<TakeTrace> for Session {
    type Result = Result<Arc<Tracer>, SessionError>;

    fn handle(&mut self, msg: TakeTrace, _: &mut Context<Self>) -> Self::Result {
        let entry = self.entry(&msg.id)?;
        let tracer = if msg.stop {
            entry.trace.stop()
        } else {
            entry.trace.current()
        };
        let tracer = tracer.ok_or_else(|| {
            SessionError::Conflict(format!("no trace of {} is recording", entry.name))
        })?;
        if msg.stop {
            info!(self.config.events, "trace stopped"; "info_hash" => short_hash(&entry.id),
                  "torrent" => &entry.name);
        }
        Ok(tracer)
    }
}

impl Handler<GetAllMetrics> for Session {
    type Result = MessageResult<GetAllMetrics>;

    fn handle(&mut self, _: GetAllMetrics, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.torrents
                .values()
                .map(|e| TorrentMetrics {
                    id: e.id.to_hex(),
                    name: e.name.clone(),
                    metrics: e.metrics.snapshot(),
                })
                .collect(),
        )
    }
}

impl Handler<GetHistory> for Session {
    type Result = Result<Vec<RateSample>, SessionError>;

    fn handle(&mut self, msg: GetHistory, _: &mut Context<Self>) -> Self::Result {
        Ok(self.entry(&msg.id)?.history.iter().copied().collect())
    }
}

impl Handler<GetDetailBundle> for Session {
    type Result = ResponseActFuture<Self, Result<DetailBundle, SessionError>>;

    fn handle(&mut self, msg: GetDetailBundle, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        let coordinator = match self.coordinator(&id) {
            Ok(c) => c,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let asked = self.generation(&id);
        let ask = async move {
            let peers = ask_tree(coordinator.clone(), GetPeerList).await;
            (
                peers.unwrap_or_default(),
                ask_tree(coordinator, GetPieceMap).await,
            )
        };
        Box::pin(ask.into_actor(self).map(move |(peers, pieces), act, _| {
            let port = act.config.listen_addr.port();
            let entry = act.entry_mut(&id)?;
            if let Some(map) = pieces.filter(|_| entry.generation == asked) {
                entry.pieces = Some(map);
            }
            Ok(DetailBundle {
                torrent: entry.detail(port),
                peers,
                pieces: entry.empty_pieces(),
                trackers: entry.tracker_rows(),
                metrics: entry.metrics.snapshot(),
                sample: entry.history.back().copied(),
            })
        }))
    }
}

impl Handler<GetSettings> for Session {
    type Result = MessageResult<GetSettings>;

    fn handle(&mut self, _: GetSettings, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.settings())
    }
}

impl Handler<SetSettings> for Session {
    type Result = MessageResult<SetSettings>;

    fn handle(&mut self, msg: SetSettings, _: &mut Context<Self>) -> Self::Result {
        self.settings.upload_limit = msg.upload_limit;
        self.settings.download_limit = msg.download_limit;
        self.limiter.do_send(SetRates {
            upload: msg.upload_limit,
            download: msg.download_limit,
        });
        self.save();
        MessageResult(self.settings())
    }
}

impl Handler<StopSession> for Session {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopSession, _: &mut Context<Self>) -> Self::Result {
        let ids: Vec<InfoHash> = self.torrents.keys().copied().collect();
        // The totals are folded in as each run stops; the last state is written here,
        // on this thread, so it is on disk when the reply goes out.
        let stops: Vec<_> = ids.into_iter().map(|id| self.stop_run(id)).collect();
        Box::pin(
            futures::future::join_all(stops)
                .into_actor(self)
                .then(|_, act, _| {
                    // Through the writer, behind any write still queued there, so the
                    // last state is the one left on disk; awaited, so it is there when
                    // the reply goes out.
                    let write = serde_json::to_vec_pretty(&act.saved())
                        .map_err(|e| warn!(act.log, "cannot encode state"; "error" => %e))
                        .ok()
                        .map(|bytes| {
                            act.writer.send(WriteFile {
                                path: act.state.session_file(),
                                bytes: bytes.into(),
                            })
                        });
                    async move {
                        if let Some(write) = write {
                            let _ = write.await;
                        }
                    }
                    .into_actor(act)
                })
                .map(|_, act, ctx| {
                    info!(act.log, "session stopped");
                    ctx.stop();
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_printable() {
        assert!(check_labels(&["a".into(), "films 2026".into()]).is_ok());
        assert!(check_labels(&[String::new()]).is_err());
        assert!(check_labels(&["a\nb".into()]).is_err());
        assert!(check_labels(&["x".repeat(65)]).is_err());
        assert!(check_labels(&vec!["a".to_string(); 17]).is_err());
    }

    #[test]
    fn a_kept_torrent_that_cannot_be_read_is_fetched_again_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir(dir.path().to_path_buf());
        let saved = state::sample_torrent();
        let hash = saved.info_hash.as_str();
        let log = Logger::root(slog::Discard, o!());
        // No STATE/torrents/HASH.torrent at all.
        let entry = Session::restore(&state, &saved, &log).expect("kept, not dropped");
        assert!(matches!(&entry.source, Source::Magnet(m)
            if m.info_hash.to_hex() == hash && m.display_name.as_deref() == Some("film")));
        assert!(entry
            .error
            .as_deref()
            .is_some_and(|e| e.contains("fetched from peers again")));
        assert_eq!((entry.dir.as_str(), entry.paused), ("films", true));
        assert_eq!(entry.selection, Some(vec![0, 2]));
        // A kept file that is garbage is no better, and no worse.
        std::fs::create_dir_all(dir.path().join("torrents")).unwrap();
        std::fs::write(state.torrent_file(hash), b"not bencode").unwrap();
        let entry = Session::restore(&state, &saved, &log).expect("kept, not dropped");
        assert!(matches!(entry.source, Source::Magnet(_)));
    }

    #[test]
    fn a_v2_torrent_fetched_again_is_fetched_by_its_v2_hash() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir(dir.path().to_path_buf());
        let log = Logger::root(slog::Discard, o!());
        let v2 = [0x5cu8; 32];
        let v2_hex = data_encoding::HEXLOWER.encode(&v2);
        // v2-only: its id is the v2 hash's first 20 bytes; the link names only the v2 hash.
        let mut saved = state::sample_torrent();
        saved.info_hash = v2_hex[..40].to_string();
        saved.info_hash_v2 = Some(v2_hex.to_uppercase());
        let entry = Session::restore(&state, &saved, &log).expect("kept, not dropped");
        let Source::Magnet(m) = &entry.source else {
            panic!("not fetched again")
        };
        assert_eq!(m.v2_info_hash, Some(v2));
        assert!(!m.has_v1());
        let uri = m.to_uri();
        assert!(uri.contains(&format!("urn:btmh:1220{v2_hex}")) && !uri.contains("btih"));
        // A hybrid known by its v1 hash: both, so both are checked.
        saved.info_hash = "ab".repeat(20);
        let entry = Session::restore(&state, &saved, &log).expect("kept, not dropped");
        let Source::Magnet(m) = &entry.source else {
            panic!("not fetched again")
        };
        assert!(m.has_v1() && m.v2_info_hash == Some(v2));
        // A v2 hash that is not 64 hex digits is no hash.
        for bad in ["5c".repeat(31), "zz".repeat(32), "5c".repeat(33)] {
            saved.info_hash_v2 = Some(bad);
            let entry = Session::restore(&state, &saved, &log).expect("kept, not dropped");
            assert!(matches!(&entry.source, Source::Magnet(m) if m.v2_info_hash.is_none()));
        }
    }

    #[test]
    fn a_selection_of_indices_is_a_bep53_selection() {
        let s = selection_of(&Some(vec![0, 2, 3])).unwrap();
        assert!(s.contains(0) && !s.contains(1) && s.contains(2) && s.contains(3));
        assert!(selection_of(&None).is_none());
    }
}
