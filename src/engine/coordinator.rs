//! The Coordinator: one per torrent, the owner of the swarm view.
//!
//! It alone knows which peers are connected, which pieces each has (availability), which
//! blocks are requested from whom (through its [`Picker`]), which pieces are verified, and
//! which addresses to dial next. Piece picking (rarest-first, endgame) happens in its
//! `PickBlocks` handler. It starts the torrent (file check, then trackers, listener and
//! dialing), saves the resume file, notices completion and runs the shutdown.
//!
//! It holds no connection and touches no file: its listener accepts sockets and hands them
//! to `connection::accept` for the handshake (or, in `serve`, the shared `Listener` hands
//! it sockets whose handshake it read, as [`IncomingPeer`]), after which a Peer owns each
//! one; the FileWriter owns the disk and the PieceManager owns block data.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{debug, info, o, warn, Logger};

use super::address_book::{AddressBook, IpSlot, RETRY_BASE};
use super::budget::{ConnectionBudget, ConnectionPermit};
use super::choker::{ChokeCandidate, Choker, ChokerConfig};
use super::connection::{self, Accepted, Carriers, ConnectTimeouts, TcpListenerStream};
use super::limiter::RateLimiter;
use super::messages::*;
use super::metrics::{message_name, ActorKind, Metrics, OwnMetrics, Tracked, TrackedRecipient};
use super::peer::{Peer, PeerConfig, PeerParts};
use super::picker::{BlockOutcome, Picker};
use super::piece_manager::{PieceManager, PieceManagerLinks};
use super::resume::{plan_start, FileRecord, ResumeData, ResumeSchedule, StartupCheck};
use super::selection::{verified_bytes_per_file, FilePriority, SelectedFiles};
use super::storage::{FileReader, FileWriter, Hasher};
use super::stream::{critical_order, StreamError, StreamId, MAX_STREAMS, STALL_AFTER};
use super::streamed::PieceMode;
use super::threads::{Threads, ThreadsConfig};
use super::tracker::{
    Tiers, Tracker, TrackerBoard, TrackerConfig, TrackerLinks, TrackerStatus, TrackerTimeouts,
};
use super::transport::PeerStream;
use super::utp::{Utp, UtpMode};
use super::webseed::{ToWebSeed, WebSeed, WebSeedConfig, WebSeedParts, WebSeedStatus};
use super::PeerKey;
use crate::layout::{Layout, PieceIndex, BLOCK_SIZE};
use crate::magnet::FileSelection;
use crate::metainfo::{Info, Metainfo, Verdict, WebSeedUrl};
use crate::wire::mse::Encryption;
use crate::wire::{Bitfield, BlockRequest};
use crate::{InfoHash, PeerId};

/// Times the sole sender of a piece's first attempt may be caught before it is banned:
/// it may be the only peer that has the piece, and one bad piece could be a flipped bit
/// on its disk; a second is not chance. Every other certain blame bans at once.
const BAD_DATA_STRIKES_TO_BAN: u32 = 2;

/// The most addresses a hybrid remembers to greet with its v2 hash: the address book's
/// size, so a tracker cannot grow the set past what could ever be dialed.
const MAX_V2_GREETED: usize = 3000;

/// Pieces of the start-up check hashed at once (by the FileReader, a window at a time).
const STARTUP_CHECKS_IN_FLIGHT: usize = 4;

/// Incoming connections allowed in their handshake at once on the torrent's own listener
/// (the shared `Listener` has a cap of its own); more are closed at once, so
/// a flood of connections that never finish their handshake costs a bounded number of
/// sockets for at most the handshake timeout each.
pub const MAX_INCOMING_HANDSHAKES: usize = 32;

/// How often, at most, refused incoming connections are logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Newly verified pieces are announced to the peers we trade with at most this often,
/// one [`ToPeer::Haves`] per peer per batch: a fast download costs each Peer's mailbox a
/// message per interval, not one per piece.
pub const HAVE_BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// ...and to quiet peers (neither side interested, nobody unchoked, no piece announced
/// by the peer) this often: a
/// thousand idle connections cost a thousand messages a second, not ten thousand, and
/// a quiet peer still learns within a second what it may want from us. The quiet
/// peers are served in [`QUIET_GROUPS`] turns spread over the interval, so their
/// write buffers do not all fill in the same instant.
pub const HAVE_QUIET_INTERVAL: Duration = Duration::from_secs(1);

/// See [`HAVE_QUIET_INTERVAL`].
const QUIET_GROUPS: u64 = 10;

/// A piece on parole is fetched from one peer alone (see `picker`), so it goes only to a
/// peer that would fetch it within about this long at its rate...
const PAROLE_SECONDS: f64 = 10.0;

/// ...or whose rate is at least this share of the fastest peer's: a swarm of slow peers
/// still gets its failed pieces fetched, by the fastest of them.
const PAROLE_SHARE_OF_FASTEST: f64 = 0.5;

/// How long a stop waits for the Peers it disconnected to leave, so their last byte
/// counts make the run's totals.
const PEERS_LEAVE_WAIT: Duration = Duration::from_secs(1);

/// With no piece verified for this long while downloading, the pieces in progress and
/// who holds their blocks are logged (and again every that long).
const STALL_REPORT_AFTER: Duration = Duration::from_secs(20);

/// A peer is slow (see the picker's speed classes) when it would take longer than this
/// over a piece at its rate...
const SLOW_PIECE_SECONDS: f64 = 10.0;

/// ...and sends at less than this share of the fastest peer's rate (in a swarm of slow
/// peers, the fastest of them are not slow)...
const SLOW_SHARE_OF_FASTEST: f64 = 0.25;

/// ...after unchoking us at least this long ago (a rate needs time to show).
const SLOW_GRACE: Duration = Duration::from_secs(3);

/// A slow peer holds at most this many seconds of blocks at its rate (and at least
/// [`SLOW_MIN_BLOCKS`]): the rest of its request queue would only wait on it.
const SLOW_QUEUE_SECONDS: f64 = 4.0;

/// See [`SLOW_QUEUE_SECONDS`].
const SLOW_MIN_BLOCKS: usize = 2;

/// How long a stop waits for the PieceManager to hash and write the complete pieces it
/// holds (`DrainPieces`). A stuck hasher or disk cannot hang the stop past it: the
/// FileWriter is closed anyway, refuses every later write, and a piece not written is
/// not recorded. Well inside the 15 s that `get` and `serve` give a whole stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Peers that left, remembered by key so blame that arrives late (smart ban judges a
/// piece only once a good copy passes) still finds their address.
const DEPARTED_REMEMBERED: usize = 1024;

/// An incoming connection the Coordinator agreed to take, holding its budget permit
/// (none without a shared budget) and its place in the per-IP count until the Peer
/// joins or the handshake fails.
struct Admitted {
    permit: Option<ConnectionPermit>,
    slot: IpSlot,
}

/// A Peer actor started and not yet joined: what it holds until `PeerJoined` moves it
/// into its `PeerEntry` or a refusal gives it back.
struct Joining {
    /// Its slot in the shared connection budget, if there is one.
    permit: Option<ConnectionPermit>,
    /// Its place in the per-IP count.
    slot: IpSlot,
    /// We dialed it; an incoming one counts against the incoming share while it joins.
    outgoing: bool,
}

/// Everything tunable about one torrent's engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Our peer id, sent in handshakes and announces.
    pub peer_id: PeerId,
    /// Where to accept peers; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Most connected peers.
    pub max_peers: usize,
    /// Most connection attempts at once.
    pub max_connecting: usize,
    /// Budget of pieces requested but not verified (bounds partial-piece memory).
    pub max_in_progress_bytes: u64,
    /// Budget of complete pieces waiting for hash and write (bounds memory when the disk
    /// is slow).
    pub max_pending_bytes: u64,
    /// Hasher threads of a torrent started without shared `threads`.
    pub hashers: usize,
    /// Save the resume file after this many newly verified pieces...
    pub resume_every_pieces: u32,
    /// ...or this long after the first unsaved one, whichever comes first.
    pub resume_every: Duration,
    /// Per-connection tunables.
    pub peer: PeerConfig,
    /// Connection set-up limits.
    pub connect: ConnectTimeouts,
    /// Message stream encryption of outgoing and incoming connections.
    pub encryption: Encryption,
    /// Which carriers connections use, TCP and/or uTP (`--utp`).
    pub utp: UtpMode,
    /// With a shared listener, the process's uTP socket (bound beside it), to dial from.
    /// `None`: the Coordinator binds its own beside its TCP listener, if `utp` asks.
    pub shared_utp: Option<Utp>,
    /// Peers to dial from the start, besides the trackers': the user's (`--peer`; in
    /// `serve`, a magnet's `x.pe` too), banned by address and port only and never
    /// dropped from the address book.
    pub initial_peers: Vec<SocketAddr>,
    /// Peers learned before the torrent started (a magnet's metadata phase): dialed
    /// like the trackers' ones, bounded by the address book.
    pub learned_peers: Vec<SocketAddr>,
    /// Shortest re-announce interval accepted from a tracker.
    pub min_announce_interval: Duration,
    /// How long an announce may take and how failed ones are retried, for every tracker.
    pub tracker: TrackerTimeouts,
    /// Added to every piece write, to simulate a slow disk in tests of backpressure.
    pub write_delay: Duration,
    /// Sync the files to disk when the torrent completes or stops.
    pub sync_on_close: bool,
    /// Peers we upload to at once (regular unchoke slots, plus one optimistic); 0 means
    /// every interested peer.
    pub upload_slots: usize,
    /// Upload limit for this torrent in bytes per second; 0 for none.
    pub upload_limit: u64,
    /// Download limit for this torrent in bytes per second; 0 for none.
    pub download_limit: u64,
    /// Peer exchange (BEP 11) with peers that offer it; never on private torrents.
    pub pex: bool,
    /// The counters of this torrent's actors; a front end keeps a clone to show them.
    pub metrics: Arc<Metrics>,
    /// A process-wide [`Listener`](super::listener::Listener) bound here takes this
    /// torrent's incoming peers: the Coordinator binds nothing, announces this port and
    /// takes peers as [`IncomingPeer`]. `None`: it listens on `listen` itself.
    pub shared_listener: Option<SocketAddr>,
    /// Connections shared with other torrents: a permit per dial in flight and per
    /// connected peer. `None`: only `max_peers` and `max_connecting` bound them.
    pub budget: Option<Arc<ConnectionBudget>>,
    /// A process-wide limiter every grant must also pass. With one, the torrent always
    /// has a limiter of its own (chained to it), so its rates can change at run time.
    pub global_limiter: Option<Addr<RateLimiter>>,
    /// The process's threads, shared by every torrent (`engine::threads`). `None`: the
    /// torrent starts private ones (a writer, a reader, `hashers` hashers) and runs its
    /// Coordinator, PieceManager and Peers on the arbiter that starts it.
    pub threads: Option<Arc<Threads>>,
    /// Limits of each web seed (BEP 19): requests in flight, retries, time limits.
    pub web_seed: WebSeedConfig,
    /// Start new pieces in file order from the start (`get --sequential`); a running
    /// torrent changes it with `SetSequential`.
    pub sequential: bool,
    /// A listening socket bound by the caller, taken instead of binding `listen`.
    pub bound_listener: Option<connection::BoundListener>,
    /// Whether streams' reads and windows become time-critical pieces in the picker.
    /// Off only to measure what deadlines are worth (`get --no-stream-deadlines`).
    pub stream_deadlines: bool,
}

impl EngineConfig {
    /// Sensible defaults with the given peer id and listen address.
    pub fn new(peer_id: PeerId, listen: SocketAddr) -> Self {
        Self {
            peer_id,
            listen,
            max_peers: 50,
            max_connecting: 16,
            max_in_progress_bytes: 12 << 20,
            max_pending_bytes: 16 << 20,
            hashers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            resume_every_pieces: 1024,
            resume_every: Duration::from_secs(5),
            peer: PeerConfig::default(),
            connect: ConnectTimeouts::default(),
            encryption: Encryption::default(),
            utp: UtpMode::default(),
            shared_utp: None,
            initial_peers: Vec::new(),
            learned_peers: Vec::new(),
            min_announce_interval: Duration::from_secs(30),
            tracker: TrackerTimeouts::default(),
            write_delay: Duration::ZERO,
            sync_on_close: false,
            upload_slots: 4,
            upload_limit: 0,
            download_limit: 0,
            pex: true,
            metrics: Metrics::new(),
            shared_listener: None,
            budget: None,
            global_limiter: None,
            threads: None,
            web_seed: WebSeedConfig::default(),
            sequential: false,
            stream_deadlines: true,
            bound_listener: None,
        }
    }
}

/// How often peers hear our peer list (BEP 11: at most once a minute).
const PEX_INTERVAL: Duration = Duration::from_secs(60);

/// DHT lookups repeat this often while the torrent has few peers...
const DHT_LOOKUP_SHORT: Duration = Duration::from_secs(60);

/// ...and this often otherwise (BEP 5 announces expire after about 30 minutes).
const DHT_LOOKUP_LONG: Duration = Duration::from_secs(15 * 60);

/// Which quiet peers a round of `announce_haves` includes besides those we trade with.
#[derive(Clone, Copy)]
enum Quiet {
    None,
    /// Those whose key falls in this group of [`QUIET_GROUPS`].
    Group(u64),
    All,
}

/// A connected peer, as the Coordinator sees it.
struct PeerEntry {
    /// How to reach the actor.
    actor: TrackedRecipient<ToPeer>,
    /// Its remote address, for re-dialing and bans.
    addr: SocketAddr,
    /// Where it accepts connections, if known (dialed, or its extension handshake said
    /// so): what peer exchange tells others.
    listen: Option<SocketAddr>,
    /// Its peer id, to refuse duplicates.
    peer_id: PeerId,
    /// We dialed it (rather than it us).
    outgoing: bool,
    /// The pieces it has.
    pieces: Bitfield,
    /// Whether we told it we are interested.
    interested: bool,
    /// It wants our data.
    peer_interested: bool,
    /// We upload to it.
    unchoked: bool,
    /// It refuses to upload to us (true until its `unchoke`), for the front end's peer list.
    peer_choking: bool,
    /// When it last unchoked us, while it does.
    unchoked_us_at: Option<Instant>,
    /// Marked slow (see [`SLOW_PIECE_SECONDS`]), as the picker was told.
    slow: bool,
    /// Bytes per second it sends us, and we send it, smoothed over a few seconds.
    down_rate: f64,
    up_rate: f64,
    /// When it joined, so new peers can be favoured for the optimistic unchoke.
    joined_at: Instant,
    /// A `WakeUp` was sent and the Peer has not asked for blocks since: one is enough,
    /// however many releases happen meanwhile.
    wake_pending: bool,
    /// Its last `PickBlocks` got fewer blocks than it asked for: woken when a piece is
    /// verified (and its budget freed), once. Such peers are also listed in
    /// `Coordinator::short_peers`, so a verified piece costs no pass over every peer.
    short: bool,
    /// How much of `Coordinator::verified_log` it has been told of (in its bitfield at
    /// joining, or in `Haves` since).
    heard: usize,
    /// Its slot in the shared connection budget, given back when the entry goes.
    _permit: Option<ConnectionPermit>,
    /// Its place in the per-IP count, given back when it leaves.
    slot: IpSlot,
}

/// A web seed (BEP 19), as the Coordinator sees it: a source with every piece that asks
/// for work with `PickBlocks` under its own key, as a Peer does.
struct WebSeedEntry {
    /// How to stop it; `None` once it has stopped.
    actor: Option<Addr<WebSeed>>,
    /// The first piece its next run starts looking from: where its last one ended, so
    /// its runs follow each other.
    cursor: u32,
    /// Times its data certainly failed a hash (see [`BAD_DATA_STRIKES_TO_BAN`]).
    strikes: u32,
    /// Its last pick got fewer blocks than it asked for: woken once when a piece is
    /// verified or fails, as short peers are.
    short: bool,
    /// What the source list shows.
    status: WebSeedStatus,
}

/// A stream read waiting for its piece to be verified.
struct StreamWaiter {
    /// The reading stream.
    stream: StreamId,
    /// Since when it waits: past [`STALL_AFTER`] its piece's blocks go to more peers.
    since: Instant,
    /// Fired when the piece is verified.
    wake: futures::channel::oneshot::Sender<()>,
}

/// See the module documentation.
pub struct Coordinator {
    info_hash: InfoHash,
    /// A hybrid's second swarm (its truncated v2 info-hash): announced to trackers and
    /// the DHT beside `info_hash`, and accepted from incoming peers.
    v2_swarm: Option<InfoHash>,
    /// Addresses heard of only in the v2 swarm's tracker replies, dialed with its hash
    /// (at most [`MAX_V2_GREETED`]); hearing of one elsewhere moves it back to v1.
    v2_greeted: HashSet<SocketAddr>,
    info: Arc<Info>,
    layout: Arc<Layout>,
    root: PathBuf,
    config: EngineConfig,
    /// The files to download; the picker wants only their pieces.
    selected: SelectedFiles,
    /// Files (indices) whose pieces start first, sorted.
    high_files: Vec<u32>,
    /// Bytes of the wanted pieces: the total that progress and `left` count against.
    wanted_bytes: u64,
    phase: Phase,
    /// Pieces and blocks; `None` until the start-up check is done.
    picker: Option<Picker>,
    /// Verified pieces, sent as our bitfield to new peers and saved in the resume file.
    have: Bitfield,
    /// The pieces verified this run, in order (at most one entry per piece). Each peer
    /// has heard a prefix of it (`PeerEntry::heard`); the rest goes out in batches, every
    /// [`HAVE_BATCH_INTERVAL`] to peers we trade with and every [`HAVE_QUIET_INTERVAL`]
    /// to quiet ones (see `announce_haves`).
    verified_log: Vec<PieceIndex>,
    /// How much of `verified_log` some peer has been told of (for the trace's
    /// `announced` hop).
    announced: usize,
    /// A batch for the peers we trade with is due (its timer is set).
    haves_due: bool,
    /// Which group of quiet peers hears of new pieces next (see [`QUIET_GROUPS`]).
    quiet_turn: u64,
    /// Peers whose last pick came up short, to wake when a piece is verified.
    short_peers: HashSet<PeerKey>,
    /// Failed v2 pieces whose leaves fewer than [`LEAF_HASH_ASKS`] peers were asked
    /// for, and how many were: a peer joining with the piece is asked too. At most
    /// [`LEAF_HASH_PENDING`], the oldest dropped.
    leaf_asks: VecDeque<(WantLeafHashes, usize)>,
    /// The torrent's web seed URLs, started once the data is checked.
    web_seed_urls: Vec<WebSeedUrl>,
    /// The web seeds started, by key (the same key space as peers'; never in `peers`).
    web_seeds: HashMap<PeerKey, WebSeedEntry>,
    peers: HashMap<PeerKey, PeerEntry>,
    /// The peer ids of `peers`, to refuse a second connection from one peer without a
    /// pass over all of them.
    peer_ids: HashSet<PeerId>,
    /// Addresses to dial (in order, with back-off for failed ones), bans, bad-data
    /// strikes and connections per IP, all bounded (see `address_book`).
    book: AddressBook,
    /// Pieces that failed their hash this run.
    hash_failures: u64,
    /// Addresses of peers that left, newest last, at most [`DEPARTED_REMEMBERED`].
    departed: VecDeque<(PeerKey, SocketAddr)>,
    /// Pieces verified when the count last changed, and when: a stall is logged (see
    /// `report_stall`).
    stall_watch: Option<(u32, Instant)>,
    /// The download rate of the fastest peer, as of the last 500 ms tick (for parole).
    fastest_rate: f64,
    /// Connection attempts in flight.
    connecting: usize,
    /// Connections whose Peer actor was started and has not yet joined, with what they
    /// hold; `PeerJoined` moves each into its `PeerEntry` or gives it back on refusal.
    joining: HashMap<PeerKey, Joining>,
    /// Incoming connections in their handshake (or, from the shared listener, in our
    /// answer to it).
    handshaking_in: usize,
    /// Incoming connections refused for want of room since the last log line about it,
    /// and when that line was written.
    refused_in: u64,
    refusal_logged: Option<Instant>,
    next_key: u64,
    /// The address we listen on, never dialed (trackers list us to ourselves).
    listen_addr: Option<SocketAddr>,
    /// How we dial: `--utp` and the uTP socket, once bound (or the shared one).
    carriers: Carriers,
    hasher: Tracked<Hasher>,
    writer: Tracked<FileWriter>,
    reader: Tracked<FileReader>,
    /// The torrent's rate limits, if any are set.
    limiter: Option<Tracked<RateLimiter>>,
    piece_manager: Option<Tracked<PieceManager>>,
    /// This Coordinator's own counters (the rest are in `config.metrics`).
    metrics: OwnMetrics,
    trackers: HashMap<String, Tracked<Tracker>>,
    tiers: Tiers,
    /// Every tracker's status as last reported, for the front end.
    tracker_board: TrackerBoard,
    events: Recipient<TorrentEvent>,
    /// The start-up check of data on disk, until the picker exists.
    check: StartupCheck,
    /// When the resume file is next saved.
    resume_schedule: ResumeSchedule,
    downloaded_this_run: u64,
    /// Block bytes received and sent this run, for announces and the share ratio.
    payload_downloaded: u64,
    payload_uploaded: u64,
    /// Decides whom we upload to.
    choker: Choker,
    /// (time, verified bytes, uploaded block bytes) samples for the rates.
    rate_samples: VecDeque<(Instant, u64, u64)>,
    stopping: bool,
    /// During a stop, told when the last peer has left (its final byte counts are in).
    peers_gone: Option<futures::channel::oneshot::Sender<()>>,
    /// The raw info dictionary, served to peers by `ut_metadata`.
    info_bytes: bytes::Bytes,
    /// A v2 torrent's trees, shared by its Peers to answer `hash request`s (BEP 52).
    trees: Option<Arc<crate::metainfo::tree_nodes::TreeNodes>>,
    /// The DHT, unless it is off or the torrent is private.
    dht: Option<DhtLinks>,
    /// Peer exchange is on and the torrent is not private.
    pex: bool,
    /// Where this torrent's actors and its Peers run (the process's threads, or private
    /// ones that stop when this Coordinator is dropped).
    threads: Arc<Threads>,
    /// Open streams' windows: each stream's position piece and last window piece, at
    /// most [`MAX_STREAMS`]; the picker's time-critical pieces are made from them.
    streams: HashMap<StreamId, (u32, u32)>,
    /// Stream reads waiting for a piece to be verified, by piece: one per stream at
    /// most, each woken when its piece is verified or dropped when its stream closes.
    stream_waiters: HashMap<u32, Vec<StreamWaiter>>,
    /// New pieces start in file order (`SetSequential`), applied to the picker when it
    /// is made.
    sequential: bool,
    log: Logger,
}

/// Everything a torrent needs to start.
pub struct TorrentParams {
    /// The validated torrent.
    pub metainfo: Metainfo,
    /// The folder the torrent's name goes under.
    pub download_dir: PathBuf,
    /// The engine's settings (peers, budgets, ports, threads), shared by its actors.
    pub config: EngineConfig,
    /// The files to download (BEP 53 indices); `None` means every file.
    pub selection: Option<FileSelection>,
    /// Files (indices) whose pieces start before the others'; only selected ones count.
    pub high_priority: Vec<u32>,
    /// The DHT to find peers through; `None` when it is off or the torrent is private.
    pub dht: Option<DhtLinks>,
    /// Where events go.
    pub events: Recipient<TorrentEvent>,
    /// The parent logger.
    pub log: Logger,
}

/// A torrent's FileWriter and FileReader, started on the arbiters its place names.
struct FileActors {
    writer: Tracked<FileWriter>,
    reader: Tracked<FileReader>,
}

impl FileActors {
    fn start(
        params: &TorrentParams,
        layout: &Arc<Layout>,
        selected: &SelectedFiles,
        place: &super::threads::Placement,
    ) -> FileActors {
        let metrics = &params.config.metrics;
        let info_hash = params.metainfo.info_hash;
        let (root, layout_w, selected_w) = (
            params.download_dir.clone(),
            layout.clone(),
            selected.clone(),
        );
        let delay = params.config.write_delay;
        let m = metrics.of(ActorKind::FileWriter);
        let writer = FileWriter::start_in_arbiter(&place.writer, move |_| {
            FileWriter::new(root, layout_w, info_hash, selected_w, delay).with_metrics(m)
        });
        let (root, layout_r, selected_r) = (
            params.download_dir.clone(),
            layout.clone(),
            selected.clone(),
        );
        let m = metrics.of(ActorKind::FileReader);
        let reader = FileReader::start_in_arbiter(&place.reader, move |_| {
            FileReader::new(root, layout_r, info_hash, selected_r).with_metrics(m)
        });
        FileActors {
            writer: Tracked::new(writer, metrics.of(ActorKind::FileWriter)),
            reader: Tracked::new(reader, metrics.of(ActorKind::FileReader)),
        }
    }
}

/// Says at the start what of the torrent's metainfo the engine will not use, and why.
fn log_what_is_left_out(log: &Logger, metainfo: &Metainfo, tiers: &Tiers) {
    if metainfo.info.private {
        info!(
            log,
            "private torrent: trackers only, no DHT or peer exchange"
        );
    }
    for refused in &metainfo.web_seeds_refused {
        warn!(log, "web seed ignored"; "entry" => crate::terminal::printable(&refused.entry).into_owned(),
              "reason" => %refused.reason);
    }
    if tiers.dropped() > 0 {
        warn!(log, "too many trackers, only the first ones are used";
              "used" => super::tracker::MAX_TRACKERS, "left out" => tiers.dropped());
    }
}

/// The torrent's RateLimiter, if it has limits or the engine has a global one: with a
/// global limiter the torrent always has its own, chained to it, so every grant passes
/// both and `SetTorrentRates` has somewhere to go.
fn start_limiter(config: &EngineConfig) -> Option<Tracked<RateLimiter>> {
    let limited = config.upload_limit > 0 || config.download_limit > 0;
    (limited || config.global_limiter.is_some()).then(|| {
        let m = config.metrics.of(ActorKind::RateLimiter);
        let mut limiter =
            RateLimiter::new(config.upload_limit, config.download_limit).with_metrics(m.clone());
        if let Some(parent) = config.global_limiter.clone() {
            limiter = limiter.with_parent(parent);
        }
        Tracked::new(limiter.start(), m)
    })
}

impl Coordinator {
    /// Starts a torrent's actors: its FileWriter and FileReader and the Coordinator (on
    /// the arbiters `config.threads` places them on), which then checks existing data and
    /// starts everything else.
    pub fn start(params: TorrentParams) -> Addr<Coordinator> {
        let metrics = params.config.metrics.clone();
        // The process's threads, or private ones that go with this Coordinator.
        let threads = params.config.threads.clone().unwrap_or_else(|| {
            Threads::start(ThreadsConfig::private(params.config.hashers), &metrics)
        });
        let place = threads.place_torrent();
        let info = Arc::new(params.metainfo.info.clone());
        let layout = Arc::new(info.layout.clone());
        let selected = SelectedFiles::new(&layout, params.selection.as_ref());
        let files = FileActors::start(&params, &layout, &selected, &place);
        let coordinator = Coordinator::new(params, info, layout, selected, files, threads);
        match place.coordinator {
            Some(arbiter) => Coordinator::start_in_arbiter(&arbiter, move |_| coordinator),
            None => coordinator.start(),
        }
    }

    /// The Coordinator's state at the start, all of it: long because the state is wide
    /// (each field is documented where it is declared), not because it decides anything.
    fn new(
        params: TorrentParams,
        info: Arc<Info>,
        layout: Arc<Layout>,
        selected: SelectedFiles,
        files: FileActors,
        threads: Arc<Threads>,
    ) -> Coordinator {
        let metrics = params.config.metrics.clone();
        let wanted_bytes = selected.wanted_bytes(&layout);
        let hasher = threads.hasher();
        let limiter = start_limiter(&params.config);
        let upload_slots = params.config.upload_slots;
        let log = params
            .log
            .new(o!("torrent" => params.metainfo.info_hash.to_hex()));
        let tiers = Tiers::new(params.metainfo.trackers.clone());
        let tracker_board = TrackerBoard::new(&tiers.urls());
        // BEP 27: a private torrent's peers come from its trackers alone.
        let private = params.metainfo.info.private;
        let dht = params.dht.filter(|_| !private);
        let pex = params.config.pex && !private;
        let sequential = params.config.sequential;
        log_what_is_left_out(&log, &params.metainfo, &tiers);
        let resume_schedule = ResumeSchedule::new(
            params.config.resume_every_pieces,
            params.config.resume_every,
        );
        let v2_swarm = params.metainfo.v2_swarm();
        Coordinator {
            info_bytes: bytes::Bytes::from(params.metainfo.info_bytes),
            trees: info.tree_nodes(),
            dht,
            pex,
            info_hash: params.metainfo.info_hash,
            v2_swarm,
            v2_greeted: HashSet::new(),
            have: Bitfield::new(layout.num_pieces()),
            verified_log: Vec::new(),
            announced: 0,
            haves_due: false,
            quiet_turn: 0,
            short_peers: HashSet::new(),
            leaf_asks: VecDeque::new(),
            web_seed_urls: params.metainfo.web_seeds.clone(),
            web_seeds: HashMap::new(),
            info,
            layout,
            root: params.download_dir,
            config: params.config,
            selected,
            high_files: {
                let mut high = params.high_priority;
                high.sort_unstable();
                high.dedup();
                high
            },
            wanted_bytes,
            phase: Phase::Checking,
            picker: None,
            peers: HashMap::new(),
            peer_ids: HashSet::new(),
            book: AddressBook::new(),
            hash_failures: 0,
            departed: VecDeque::new(),
            fastest_rate: 0.0,
            stall_watch: None,
            connecting: 0,
            joining: HashMap::new(),
            handshaking_in: 0,
            refused_in: 0,
            refusal_logged: None,
            next_key: 0,
            listen_addr: None,
            carriers: Carriers::tcp_only(),
            hasher,
            writer: files.writer,
            reader: files.reader,
            limiter,
            metrics: OwnMetrics::started(metrics.of(ActorKind::Coordinator)),
            piece_manager: None,
            trackers: HashMap::new(),
            tiers,
            tracker_board,
            events: params.events,
            check: StartupCheck::default(),
            resume_schedule,
            downloaded_this_run: 0,
            payload_downloaded: 0,
            payload_uploaded: 0,
            choker: Choker::new(
                ChokerConfig {
                    upload_slots,
                    ..ChokerConfig::default()
                },
                rand::random(),
            ),
            rate_samples: VecDeque::new(),
            stopping: false,
            peers_gone: None,
            threads,
            streams: HashMap::new(),
            stream_waiters: HashMap::new(),
            sequential,
            log,
        }
    }

    /// A hybrid's piece passed one of its two hashes and failed the other: the
    /// torrent's v1 and v2 parts describe different data, which no peer can mend.
    fn fail_inconsistent(&mut self, piece: PieceIndex, ctx: &mut Context<Self>) {
        let files = self.layout.files();
        let file = (self.layout.piece_spans(piece).into_iter())
            .map(|span| &files[span.file])
            .find(|f| !f.padding)
            .map(|f| f.path.display())
            .unwrap_or_default();
        let error = format!(
            "this hybrid torrent's v1 and v2 hashes describe different data: piece {} ({file}) \
             matches one and not the other",
            piece.get()
        );
        self.fail_with(FailureKind::InvalidTorrent, error, ctx);
    }

    /// A write or an open failed: the torrent stops (see [`Coordinator::fail_with`]).
    fn fail(&mut self, error: StorageError, ctx: &mut Context<Self>) {
        self.fail_with(error.kind(), error.to_string(), ctx);
    }

    /// Stops the torrent for good: `error` goes to the front end as the reason.
    fn fail_with(&mut self, kind: FailureKind, error: String, ctx: &mut Context<Self>) {
        // Reported once, by the front end the event reaches (`get`'s error line, the
        // daemon's event log), so only a debug line here.
        debug!(self.log, "torrent failed"; "error" => &error);
        self.events.do_send(TorrentEvent::Failed(kind, error));
        self.stopping = true;
        let reason = match kind {
            FailureKind::InvalidTorrent => "torrent is invalid",
            FailureKind::DiskFull | FailureKind::Storage => "storage failed",
        };
        for peer in self.peers.values() {
            peer.actor.do_send(ToPeer::Disconnect(reason.into()));
        }
        // Save what is verified so far: a retry after freeing space resumes from here.
        // Before the start-up check is done (the files could not be opened) nothing is
        // known yet, and the resume file from the last run is left as it is.
        if self.picker.is_none() {
            return;
        }
        // Drained first, so pieces already hashed are claimed and none is written behind
        // the save; the files stay open for the `Shutdown` that follows.
        ctx.wait(
            self.metrics.id().on(self
                .drain_and_save(false)
                .map(|res, act, _| act.log_save_failure(res))),
        );
    }

    /// Steps 2 to 4 of a stop (ARCHITECTURE.md, "Shutdown order"): drains the
    /// PieceManager (at most [`DRAIN_TIMEOUT`]) and adds the pieces it verified to `have`,
    /// closes the FileWriter if `close`, and saves the resume file. The answer to
    /// `DrainPieces` carries the PieceManager's own record because `PieceVerified`s may
    /// still sit in our mailbox. Callers run it under `ctx.wait`, so no piece is picked or
    /// verified here meanwhile.
    fn drain_and_save(
        &mut self,
        close: bool,
    ) -> impl ActorFuture<Self, Output = Result<(), StorageError>> {
        let drain = self.piece_manager.as_ref().map(|pm| pm.send(DrainPieces));
        let drained = async move {
            match drain {
                Some(drain) => match tokio::time::timeout(DRAIN_TIMEOUT, drain).await {
                    Ok(Ok(done)) => Ok(Some(done)),
                    Ok(Err(_)) => Ok(None),
                    Err(_) => Err(()),
                },
                None => Ok(None),
            }
        };
        drained.into_actor(self).then(move |drained, act, _| {
            match drained {
                Ok(Some(done)) => {
                    for piece in done.iter_set() {
                        let _ = act.have.set(piece);
                    }
                }
                Ok(None) => {}
                Err(()) => warn!(act.log, "pieces still hashing or writing were not waited for";
                                 "after" => ?DRAIN_TIMEOUT),
            }
            let data = ResumeData::new(act.info_hash, &act.layout, &act.have);
            let writer = act.writer.clone();
            let sync = act.config.sync_on_close;
            let unavailable = |e: MailboxError| StorageError {
                path: String::new(),
                message: format!("file writer unavailable: {e}"),
                disk_full: false,
            };
            async move {
                if close {
                    writer
                        .send(CloseStorage { sync })
                        .await
                        .map_err(unavailable)??;
                }
                writer
                    .send(SaveResume { data })
                    .await
                    .map_err(unavailable)?
            }
            .into_actor(act)
        })
    }

    /// A stop's last save failed: said in the log, as the run is ending anyway.
    fn log_save_failure(&self, res: Result<(), StorageError>) {
        if let Err(e) = res {
            warn!(self.log, "could not save the resume file at the stop"; "error" => %e);
        }
    }

    // --- start-up ---------------------------------------------------------------------

    fn begin_check(&mut self, report: OpenReport, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_unqueued("storage opened");
        let resume = report.resume.as_deref().and_then(|bytes| {
            match ResumeData::parse(bytes, self.info_hash, &self.layout) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(self.log, "ignoring resume file, checking all data"; "reason" => %e);
                    None
                }
            }
        });
        if let Some(resume) = &resume {
            self.warn_of_lost_files(resume, &report.before);
        }
        let plan = plan_start(
            &self.layout,
            resume.as_ref(),
            &report.before,
            report.parts_before.as_ref(),
        );
        info!(self.log, "start plan"; "trusted" => plan.trusted.count_ones(), "to check" => plan.check.len());
        self.have = plan.trusted;
        self.check = StartupCheck::new(plan.check);
        self.pump_checks(ctx);
    }

    /// Tells the user of data files that disappeared or changed size since the resume
    /// file was saved: `plan_start` distrusts their pieces, which are checked or fetched
    /// again. A file changed only in its time is left quiet; that is what a crash after
    /// the last save looks like.
    fn warn_of_lost_files(&self, resume: &ResumeData, before: &[FileRecord]) {
        for ((entry, recorded), now) in self.layout.files().iter().zip(&resume.files).zip(before) {
            let Some(recorded) = recorded.size else {
                continue;
            };
            let file = entry.path.under(&self.root).display().to_string();
            match now.size {
                None => {
                    warn!(self.log, "data file missing since the last run, fetching its pieces again"; "file" => file)
                }
                Some(size) if size != recorded => {
                    warn!(self.log, "data file changed size since the last run, checking its pieces again"; "file" => file, "recorded" => recorded, "found" => size)
                }
                Some(_) => {}
            }
        }
    }

    /// Keeps a few piece checks in flight on the FileReader, which reads and hashes
    /// each piece a window at a time: a torrent claiming huge pieces costs no more memory
    /// here than one with small ones.
    fn pump_checks(&mut self, ctx: &mut Context<Self>) {
        while let Some(piece) = self.check.next(STARTUP_CHECKS_IN_FLIGHT) {
            let reader = self.reader.clone();
            let expected = self.info.piece_check(piece);
            let check = async move { reader.send(CheckPiece { piece, expected }).await.ok()?.ok() };
            ctx.spawn(self.metrics.id().on(check.into_actor(self).map(
                move |verdict, act, ctx| {
                    let _timing = act.metrics.handling_unqueued("piece checked");
                    act.check.checked(piece, verdict == Some(Verdict::Passed));
                    if verdict == Some(Verdict::Inconsistent) && !act.stopping {
                        act.fail_inconsistent(piece, ctx);
                    }
                    // A stop (or a failure) during the check starts nothing after it.
                    if !act.stopping {
                        act.pump_checks(ctx);
                    }
                },
            )));
        }
        if self.check.is_done() && self.picker.is_none() {
            self.finish_start(ctx);
        }
    }

    fn finish_start(&mut self, ctx: &mut Context<Self>) {
        let found = self.check.take_found();
        for p in &found {
            let _ = self.have.set(p.get());
        }
        // Only the pieces of selected files; the rest stay `Skipped`. Pieces verified in an
        // earlier run stay `Have` whatever the selection, and are seeded.
        let wanted = self.selected.wanted_pieces(&self.layout);
        // Pieces the budgets cannot hold are streamed to disk; both the picker (what a
        // piece in progress costs) and the PieceManager (how it is put together) follow.
        let mode = PieceMode::for_torrent(
            self.layout.piece_length(),
            self.config.max_in_progress_bytes,
            self.config.max_pending_bytes,
        );
        let picker = Picker::new(
            self.layout.clone(),
            &self.have,
            &wanted,
            self.config.max_in_progress_bytes,
        )
        .with_mode(mode)
        .with_high_priority(self.selected.pieces_of(&self.layout, &self.high_files));
        info!(self.log, "data checked"; "verified pieces" => self.have.count_ones(), "remaining" => picker.remaining_pieces());
        let pm = self.start_piece_manager(mode, ctx);
        if !found.is_empty() {
            pm.do_send(MarkDone { pieces: found });
            // Verified by the check: record it so a crash now does not cost a re-check.
            self.resume_schedule.make_due();
        }
        self.piece_manager = Some(pm);
        let complete_at_start = picker.is_complete();
        self.picker = Some(picker);
        self.apply_sequential();
        self.wake_stream_readers();
        self.phase = if complete_at_start {
            Phase::Complete
        } else {
            Phase::Downloading
        };
        // Trackers are told our port, so they start once the listener is bound.
        self.start_listener(ctx, move |act, ctx| {
            for addr in act.config.initial_peers.clone() {
                let _ = act.book.allow(addr);
            }
            for addr in std::mem::take(&mut act.config.learned_peers) {
                act.add_candidate(addr);
            }
            act.start_trackers(ctx);
            act.lookup_dht(ctx);
            act.dial(ctx);
            if !complete_at_start {
                act.start_web_seeds(ctx);
            }
            if complete_at_start {
                // Nothing was downloaded, so no `completed` announce: the trackers' first
                // announce already says `left=0`.
                act.events.do_send(TorrentEvent::Completed(act.progress()));
            }
        });
    }

    /// The torrent's PieceManager, reporting to this Coordinator.
    fn start_piece_manager(
        &self,
        mode: PieceMode,
        ctx: &mut Context<Self>,
    ) -> Tracked<PieceManager> {
        let me = Tracked::new(ctx.address(), self.metrics.clone());
        let metrics = self.config.metrics.of(ActorKind::PieceManager);
        let pm = PieceManager::new(
            self.info.clone(),
            self.have.clone(),
            mode,
            self.config.max_pending_bytes,
            self.hasher.clone(),
            self.writer.clone(),
            self.reader.clone(),
            PieceManagerLinks {
                verified: me.recipient(),
                failed: me.recipient(),
                bad_data: me.recipient(),
                storage_failed: me.recipient(),
                inconsistent: me.recipient(),
                want_hashes: me.recipient(),
                metrics: metrics.clone(),
            },
            self.log.new(o!("actor" => "piece-manager")),
        )
        .start();
        Tracked::new(pm, metrics)
    }

    /// Binds the listening socket, then runs `then` (also when binding failed: outgoing
    /// connections still work). With a shared listener nothing is bound: its address is
    /// ours, and its peers come as [`IncomingPeer`].
    fn start_listener(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        self.carriers = Carriers {
            mode: self.config.utp,
            utp: self.config.shared_utp.clone(),
        };
        if let Some(shared) = self.config.shared_listener {
            self.listen_addr = Some(shared);
            self.book.set_own(shared);
            info!(self.log, "taking peers from the shared listener"; "addr" => %shared);
            return then(self, ctx);
        }
        let (listen, mode) = (self.config.listen, self.config.utp);
        let bound = self.config.bound_listener.clone();
        let bind = async move { connection::listen_all(listen, mode, bound.as_ref()).await };
        ctx.wait(
            self.metrics
                .id()
                .on(bind.into_actor(self).map(move |(tcp, utp), act, ctx| {
                match tcp {
                    Ok(Some(listener)) => {
                        act.listen_addr = listener.local_addr().ok();
                        ctx.add_stream(TcpListenerStream(listener));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(act.log, "cannot listen, outgoing connections only"; "error" => %e)
                    }
                }
                match utp {
                    Ok(Some(utp)) => {
                        act.listen_addr.get_or_insert(utp.local_addr());
                        ctx.add_stream(utp.incoming());
                        act.carriers.utp = Some(utp);
                    }
                    Ok(None) => {}
                    Err(e) => warn!(act.log, "cannot listen for uTP, TCP only"; "error" => %e),
                }
                if let Some(own) = act.listen_addr {
                    act.book.set_own(own);
                }
                info!(act.log, "listening"; "addr" => ?act.listen_addr, "utp" => %act.config.utp,
                "utp socket" => act.carriers.utp.is_some());
                then(act, ctx);
            })),
        );
    }

    fn start_trackers(&mut self, ctx: &mut Context<Self>) {
        let port = self
            .listen_addr
            .map_or(self.config.listen.port(), |a| a.port());
        let key: u32 = rand::random();
        for url in self.tiers.initial() {
            self.start_tracker(&url, port, key, ctx);
        }
    }

    fn start_tracker(&mut self, url: &str, port: u16, key: u32, ctx: &mut Context<Self>) {
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                info!(self.log, "unusable tracker URL"; "url" => url);
                let change = self.tracker_board.unusable(url, format!("not a url: {e}"));
                self.tracker_changed(change);
                None
            }
        };
        let Some(parsed) = parsed else {
            if let Some(next) = self.tiers.on_result(url, false) {
                if !self.trackers.contains_key(&next) && next != url {
                    self.start_tracker(&next, port, key, ctx);
                }
            }
            return;
        };
        let mut config = TrackerConfig::new(parsed, self.info_hash, self.config.peer_id, port, key)
            .with_timeouts(&self.config.tracker);
        config.interval_floor = self.config.min_announce_interval;
        config.second_swarm = self.v2_swarm;
        config.metrics = self.config.metrics.of(ActorKind::Tracker);
        let me = ctx.address();
        let links = TrackerLinks {
            peers: me.clone().recipient(),
            stats: me.clone().recipient(),
            announcing: me.clone().recipient(),
            report: me.recipient(),
        };
        match Tracker::new(config, links, self.log.clone()) {
            Ok(tracker) => {
                let tracker =
                    Tracked::new(tracker.start(), self.config.metrics.of(ActorKind::Tracker));
                tracker.do_send(TrackerStart);
                self.trackers.insert(url.to_string(), tracker);
            }
            Err(e) => {
                info!(self.log, "unusable tracker"; "url" => url, "error" => %e);
                let change = self.tracker_board.unusable(url, e.to_string());
                self.tracker_changed(change);
                // Each URL fails at most once here, so this ends.
                if let Some(next) = self.tiers.on_result(url, false) {
                    if !self.trackers.contains_key(&next) {
                        self.start_tracker(&next, port, key, ctx);
                    }
                }
            }
        }
    }

    /// Starts a WebSeed actor per web seed URL, on the Peers' arbiters.
    fn start_web_seeds(&mut self, ctx: &mut Context<Self>) {
        let Some(pm) = self.piece_manager.clone() else {
            return;
        };
        let me = Tracked::new(ctx.address(), self.metrics.clone());
        let multi_file = self.info.is_multi_file();
        for url in self.web_seed_urls.clone() {
            self.next_key += 1;
            let key = PeerKey(self.next_key);
            info!(self.log, "using web seed"; "url" => url.as_str(), "key" => key.0);
            let parts = WebSeedParts {
                key,
                url: url.clone(),
                layout: self.layout.clone(),
                multi_file,
                config: self.config.web_seed,
                pick: me.recipient(),
                stats: me.recipient(),
                left: me.recipient(),
                piece_manager: pm.clone(),
                log: self.log.clone(),
            };
            let actor = WebSeed::spawn(parts);
            self.web_seeds.insert(
                key,
                WebSeedEntry {
                    actor: Some(actor),
                    cursor: 0,
                    strikes: 0,
                    short: false,
                    status: WebSeedStatus {
                        url: url.as_str().to_string(),
                        state: "active",
                        reason: None,
                        downloaded: 0,
                    },
                },
            );
        }
    }

    /// Web seeds still running: sources as good as a connected seed, for the progress
    /// line and `get`'s no-peers clock.
    fn active_web_seeds(&self) -> usize {
        self.web_seeds
            .values()
            .filter(|w| w.actor.is_some())
            .count()
    }

    /// Wakes the web seeds whose last pick came up short, once each.
    fn wake_web_seeds(&mut self) {
        for entry in self.web_seeds.values_mut() {
            if let Some(actor) = entry.actor.as_ref().filter(|_| entry.short) {
                entry.short = false;
                actor.do_send(ToWebSeed::WakeUp);
            }
        }
    }

    /// Stops every web seed still running, for `reason`.
    fn stop_web_seeds(&mut self, reason: &str) {
        for entry in self.web_seeds.values_mut() {
            if let Some(actor) = entry.actor.take() {
                actor.do_send(ToWebSeed::Stop(reason.to_string()));
            }
        }
    }

    /// A web seed's `PickBlocks`: whole pieces in a run from where its last one ended.
    fn pick_for_web_seed(&mut self, msg: PickBlocks) -> Picked {
        self.apply_received(msg.key, &msg.received, &msg.released);
        if self.stopping || self.phase != Phase::Downloading || msg.want == 0 {
            return Picked::default();
        }
        let (Some(picker), Some(entry)) = (&mut self.picker, self.web_seeds.get_mut(&msg.key))
        else {
            return Picked::default();
        };
        if entry.actor.is_none() {
            return Picked::default();
        }
        let all = Bitfield::full(self.layout.num_pieces());
        let mut out = Vec::new();
        // A stream's window first: a web seed fetches runs, and a window is one.
        let from = picker.first_critical_missing().unwrap_or(entry.cursor);
        picker.pick_run(msg.key, &all, from, msg.want, &mut out);
        entry.short = out.len() < msg.want;
        if let Some(last) = out.iter().map(|r| r.piece).max() {
            entry.cursor = last + 1;
        }
        Picked {
            blocks: leases(&self.layout, picker, out),
        }
    }

    /// Data from web seed `key` failed its hash: judged as a peer would be, stopped at
    /// once for a smart-ban verdict or a piece on parole, and otherwise (the sole sender
    /// of a first attempt) at [`BAD_DATA_STRIKES_TO_BAN`], so a lying server cannot keep
    /// poisoning pieces.
    fn web_seed_bad_data(&mut self, msg: &BadData) {
        let failures = self.picker.as_ref().map_or(0, |p| p.failures(msg.piece));
        let Some(entry) = self.web_seeds.get_mut(&msg.from) else {
            return;
        };
        if entry.actor.is_none() {
            // Dropped already: the rest of what it had sent is failing now.
            debug!(self.log, "dropped web seed's data failed its hash"; "url" => &entry.status.url, "piece" => msg.piece.get());
            return;
        }
        entry.strikes += 1;
        if (msg.bad_blocks == 0 && failures >= 2) || msg.bad_blocks >= 1 {
            entry.strikes = entry.strikes.max(BAD_DATA_STRIKES_TO_BAN);
        }
        warn!(self.log, "web seed sent data that failed its hash"; "url" => &entry.status.url,
              "piece" => msg.piece.get(), "bad_blocks" => msg.bad_blocks, "strikes" => entry.strikes);
        if entry.strikes >= BAD_DATA_STRIKES_TO_BAN {
            if let Some(actor) = entry.actor.take() {
                let reason = format!("sent data that failed its hash ({} strikes)", entry.strikes);
                warn!(self.log, "web seed dropped"; "url" => &entry.status.url, "reason" => &reason);
                entry.status.state = "stopped";
                entry.status.reason = Some(reason.clone());
                actor.do_send(ToWebSeed::Stop(reason));
            }
        }
    }

    /// Tells the front end about a tracker whose status changed, unless the torrent is
    /// stopping (the `stopped` announces are nobody's concern by then).
    fn tracker_changed(&self, change: Option<TrackerStatus>) {
        if let Some(status) = change.filter(|_| !self.stopping) {
            self.events.do_send(TorrentEvent::Tracker(status));
        }
    }

    /// Asks the DHT for peers and announces us, then again after a while: often while
    /// short of peers, rarely once the swarm is found.
    fn lookup_dht(&mut self, ctx: &mut Context<Self>) {
        let Some(dht) = &self.dht else { return };
        if self.stopping {
            return;
        }
        let port = self.listen_addr.map(|a| a.port());
        for info_hash in std::iter::once(self.info_hash).chain(self.v2_swarm) {
            dht.lookup.do_send(DhtLookup {
                info_hash,
                announce_port: port,
                reply: ctx.address().recipient(),
            });
        }
        let again = if self.peers.len() < 5 && self.phase != Phase::Complete {
            DHT_LOOKUP_SHORT
        } else {
            DHT_LOOKUP_LONG
        };
        ctx.run_later(again, |act, ctx| act.lookup_dht(ctx));
    }

    /// Peer exchange: every peer hears which connectable peers we have now.
    fn share_peers(&mut self) {
        if !self.pex || self.stopping {
            return;
        }
        let list: Vec<SocketAddr> = self.peers.values().filter_map(|p| p.listen).collect();
        if list.is_empty() {
            return;
        }
        let list = Arc::new(list);
        for peer in self.peers.values() {
            peer.actor.do_send(ToPeer::Pex(list.clone()));
        }
    }

    // --- peers --------------------------------------------------------------------------

    /// Connected peers that dialed us.
    fn incoming_peers(&self) -> usize {
        self.peers.values().filter(|p| !p.outgoing).count()
    }

    /// Peers that dial us may fill at most four fifths of the slots: the rest stay for
    /// the peers we choose to dial, so a flood of incoming connections cannot lock out
    /// the seeders the trackers found.
    fn max_incoming_peers(&self) -> usize {
        let max = self.config.max_peers;
        if max <= 1 {
            max
        } else {
            max - (max / 5).max(1)
        }
    }

    /// Counts an incoming connection turned away for want of room, and says so in the
    /// log at most every [`REFUSAL_LOG_INTERVAL`].
    fn refused_incoming(&mut self) {
        self.metrics.held_back();
        self.refused_in += 1;
        if self
            .refusal_logged
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            info!(self.log, "connection limit reached, refusing incoming connections";
                "refused" => self.refused_in,
                "peers" => self.peers.len(),
                "max_peers" => self.config.max_peers,
                "max_incoming" => self.max_incoming_peers(),
                "handshaking" => self.handshaking_in,
                "max_handshaking" => MAX_INCOMING_HANDSHAKES);
            self.refused_in = 0;
            self.refusal_logged = Some(Instant::now());
        }
    }

    /// Whether an incoming connection from `addr` may go on to its Peer, by the same
    /// rules for our own listener and the shared one: not while stopping or before the
    /// start-up check is done, never from a banned address, and only with room under
    /// `max_peers`, the incoming share, our own handshake cap (`handshakes_full`, our
    /// listener only) and the shared budget. Refusals for want of room are counted.
    fn admit_incoming(&mut self, addr: SocketAddr, handshakes_full: bool) -> Option<Admitted> {
        if self.stopping || self.piece_manager.is_none() {
            return None;
        }
        if self.book.is_banned(&addr) {
            debug!(self.log, "incoming connection refused"; "addr" => %addr, "why" => "banned");
            self.metrics.held_back();
            return None;
        }
        // Connections admitted and not yet joined count too: with Peers on other
        // threads, one admitted a moment ago may not have joined when the next knocks.
        let pending_in =
            self.handshaking_in + self.joining.values().filter(|j| !j.outgoing).count();
        if self.peers.len() + pending_in >= self.config.max_peers
            || self.incoming_peers() + pending_in >= self.max_incoming_peers()
            || handshakes_full
        {
            self.refused_incoming();
            return None;
        }
        let slot = match self.book.take_slot(&addr) {
            Ok(slot) => slot,
            Err(e) => {
                debug!(self.log, "incoming connection refused"; "addr" => %addr, "why" => %e);
                self.metrics.held_back();
                return None;
            }
        };
        let permit = match &self.config.budget {
            None => None,
            Some(budget) => match budget.try_take() {
                Some(permit) => Some(permit),
                None => {
                    self.book.release_slot(slot);
                    self.refused_incoming();
                    return None;
                }
            },
        };
        Some(Admitted { permit, slot })
    }

    /// Runs the rest of an admitted incoming connection's handshake (`handshake`, bounded
    /// in time by its maker), then starts its Peer.
    fn finish_incoming(
        &mut self,
        addr: SocketAddr,
        admitted: Admitted,
        handshake: impl std::future::Future<
                Output = Result<(PeerStream, crate::wire::Handshake), connection::ConnectError>,
            > + 'static,
        ctx: &mut Context<Self>,
    ) {
        self.handshaking_in += 1;
        ctx.spawn(
            self.metrics
                .id()
                .on(handshake.into_actor(self).map(move |res, act, ctx| {
                act.handshaking_in -= 1;
                let joining = Joining {
                    permit: admitted.permit,
                    slot: admitted.slot,
                    outgoing: false,
                };
                match res {
                    Ok((stream, handshake)) => {
                        act.spawn_peer(stream, handshake, false, joining, ctx)
                    }
                    Err(e) => {
                        act.book.release_slot(joining.slot);
                        debug!(act.log, "incoming handshake failed"; "addr" => %addr, "error" => %e)
                    }
                }
            })),
        );
    }

    fn add_candidate(&mut self, addr: SocketAddr) {
        let _ = self.book.add(addr);
    }

    /// Bans the peer at `addr` (by IP, or by address and port for loopback and the
    /// user's peers; see `address_book`) and drops every connection the ban covers.
    fn ban(&mut self, addr: SocketAddr, also: Option<SocketAddr>, why: &str) -> bool {
        let new = self.book.ban(addr);
        if let Some(listen) = also.filter(|l| *l != addr) {
            self.book.ban(listen);
        }
        for peer in self.peers.values() {
            if self.book.is_banned(&peer.addr) {
                peer.actor.do_send(ToPeer::Disconnect(why.to_string()));
            }
        }
        new
    }

    /// Dials candidates while there is room.
    fn dial(&mut self, ctx: &mut Context<Self>) {
        if self.stopping || self.phase == Phase::Checking {
            return;
        }
        let now = Instant::now();
        while self.connecting < self.config.max_connecting
            && self.peers.len() + self.connecting < self.config.max_peers
        {
            let Some(addr) = self.book.next_to_dial(now) else {
                break;
            };
            let slot = match self.book.take_slot(&addr) {
                Ok(slot) => slot,
                Err(e) => {
                    debug!(self.log, "dial put off"; "addr" => %addr, "why" => %e);
                    self.book.postpone(addr, RETRY_BASE, now);
                    continue;
                }
            };
            let permit = match &self.config.budget {
                None => None,
                Some(budget) => match budget.try_take() {
                    Some(permit) => Some(permit),
                    None => {
                        // Other torrents hold every connection: try again at the next
                        // dial tick (every 500 ms) or when a peer of ours leaves.
                        self.book.release_slot(slot);
                        self.book.undial(addr);
                        break;
                    }
                },
            };
            self.connecting += 1;
            // A hybrid's peer known only from its v2 swarm is greeted in that swarm.
            let info_hash = match self.v2_swarm {
                Some(v2) if self.v2_greeted.contains(&addr) => v2,
                _ => self.info_hash,
            };
            let fut = connection::connect(
                addr,
                info_hash,
                self.config.peer_id,
                connection::our_reserved(self.dht.is_some()),
                self.config.connect,
                self.config.encryption,
                self.carriers.clone(),
            );
            ctx.spawn(self.metrics.id().on(fut.into_actor(self).map(move |res, act, ctx| {
                act.connecting -= 1;
                match res {
                    Ok((stream, handshake)) => {
                        act.spawn_peer(
                            stream,
                            handshake,
                            true,
                            Joining {
                                permit,
                                slot,
                                outgoing: true,
                            },
                            ctx,
                        )
                    }
                    Err(e) => {
                        // The permit goes back with the failed dial, and the slot.
                        drop(permit);
                        act.book.release_slot(slot);
                        let retry = act.book.dial_failed(addr, Instant::now());
                        debug!(act.log, "dial failed"; "addr" => %addr, "error" => %e, "retry" => ?retry);
                    }
                }
                act.dial(ctx);
            })));
        }
    }

    fn spawn_peer(
        &mut self,
        stream: PeerStream,
        handshake: crate::wire::Handshake,
        outgoing: bool,
        joining: Joining,
        ctx: &mut Context<Self>,
    ) {
        let Some(pm) = self.piece_manager.clone() else {
            self.book.release_slot(joining.slot);
            return;
        };
        self.next_key += 1;
        self.joining.insert(PeerKey(self.next_key), joining);
        let parts = PeerParts {
            key: PeerKey(self.next_key),
            layout: self.layout.clone(),
            config: self.config.peer,
            coordinator: Tracked::new(ctx.address(), self.metrics.clone()),
            piece_manager: pm,
            reader: self.reader.clone(),
            limiter: self.limiter.clone(),
            metrics: self.config.metrics.of(ActorKind::Peer),
            metadata: Some(self.info_bytes.clone()),
            trees: self.trees.clone(),
            pex: self.pex,
            listen_port: self.listen_addr.map(|a| a.port()),
            dht: self.dht.as_ref().map(|d| (d.node_seen.clone(), d.port)),
            outgoing,
            log: self.log.clone(),
        };
        let Some(arbiter) = self.threads.place_peer() else {
            Peer::start(stream, handshake, parts);
            return;
        };
        // The socket moves to the Peer's arbiter and registers with its event loop there,
        // so that thread alone polls it.
        let key = parts.key;
        let coordinator = parts.coordinator.clone();
        let moved = stream.detach().and_then(|detached| {
            let started = arbiter.spawn(async move {
                match detached.attach() {
                    Ok(stream) => {
                        Peer::start(stream, handshake, parts);
                    }
                    Err(e) => coordinator.do_send(PeerLeft {
                        key,
                        received: Vec::new(),
                        released: Vec::new(),
                        reason: format!("socket could not move to its thread: {e}"),
                    }),
                }
            });
            started
                .then_some(())
                .ok_or_else(|| std::io::Error::other("the peer's thread has stopped"))
        });
        if let Err(e) = moved {
            // As for a refused join: the permit is dropped, the slot goes back.
            debug!(self.log, "peer not started"; "key" => key.0, "error" => %e);
            if let Some(joining) = self.joining.remove(&key) {
                self.book.release_slot(joining.slot);
            }
        }
    }

    fn update_interest(&mut self, key: PeerKey) {
        let Some(picker) = &self.picker else { return };
        if let Some(peer) = self.peers.get_mut(&key) {
            let want = picker.is_interesting(&peer.pieces);
            if want != peer.interested {
                peer.interested = want;
                peer.actor.do_send(ToPeer::SetInterest(want));
            }
        }
    }

    fn apply_received(&mut self, key: PeerKey, received: &[Lease], released: &[Lease]) {
        let Some(picker) = &mut self.picker else {
            return;
        };
        for r in received {
            let outcome = picker.block_received(key, &r.request, r.attempt);
            if let BlockOutcome::Accepted { cancel, .. } = outcome {
                for other in cancel {
                    if let Some(p) = self.peers.get(&other) {
                        p.actor.do_send(ToPeer::Cancel(*r));
                    }
                }
            }
        }
        for r in released {
            picker.release(key, &r.request, r.attempt);
        }
        if !released.is_empty() {
            self.wake_all(Some(key));
        }
    }

    /// Counts a tick off the picker's suspicions and wakes the peers trusted again for
    /// want of a verdict: their last pick may have come up empty.
    fn clear_suspects(&mut self) {
        let Some(picker) = &mut self.picker else {
            return;
        };
        for key in picker.suspicion_tick() {
            if let Some(p) = self.peers.get_mut(&key) {
                if p.interested && !p.wake_pending {
                    p.wake_pending = true;
                    p.actor.do_send(ToPeer::WakeUp);
                }
            }
        }
    }

    /// Tells every interested peer (but `except`) that blocks may be available again,
    /// unless it was told already and has not asked since.
    fn wake_all(&mut self, except: Option<PeerKey>) {
        for (k, p) in &mut self.peers {
            if Some(*k) != except && p.interested && !p.wake_pending {
                p.wake_pending = true;
                p.actor.do_send(ToPeer::WakeUp);
            }
        }
    }

    /// Logs what holds the download up when no piece was verified for
    /// [`STALL_REPORT_AFTER`] (again every that long while it lasts).
    fn report_stall(&mut self, now: Instant) {
        let Some(picker) = &self.picker else { return };
        if self.phase != Phase::Downloading || picker.is_complete() {
            return;
        }
        let verified = self.have.count_ones();
        match self.stall_watch {
            Some((count, since)) if count == verified => {
                if now.duration_since(since) >= STALL_REPORT_AFTER {
                    warn!(self.log, "no piece verified lately";
                          "seconds" => now.duration_since(since).as_secs(),
                          "suspects" => picker.suspects(),
                          "in progress" => picker.describe_in_progress(8));
                    self.stall_watch = Some((count, now));
                }
            }
            _ => self.stall_watch = Some((verified, now)),
        }
    }

    /// Marks peers slow or fast for the picker (see [`SLOW_PIECE_SECONDS`]).
    fn classify_peers(&mut self, now: Instant) {
        let Some(picker) = &mut self.picker else {
            return;
        };
        let piece_length = f64::from(self.layout.piece_length());
        for (key, peer) in &mut self.peers {
            let slow = peer
                .unchoked_us_at
                .is_some_and(|t| now.duration_since(t) >= SLOW_GRACE)
                && peer.down_rate * SLOW_PIECE_SECONDS < piece_length
                && peer.down_rate < SLOW_SHARE_OF_FASTEST * self.fastest_rate;
            if slow != peer.slow {
                peer.slow = slow;
                picker.set_slow(*key, slow);
            }
        }
    }

    /// Tells peers of the pieces verified since they last heard, one `Haves` each: those
    /// we trade with, the quiet ones of group `quiet` (see [`QUIET_GROUPS`]), or all of
    /// them with [`Quiet::All`]. A seed hears nothing (it has every piece), and a Peer
    /// skips pieces its remote already has. Peers that heard the same prefix share one
    /// list.
    fn announce_haves(&mut self, quiet: Quiet) {
        let len = self.verified_log.len();
        let mut lists: HashMap<usize, Arc<[PieceIndex]>> = HashMap::new();
        for (key, peer) in &mut self.peers {
            if peer.heard >= len {
                continue;
            }
            // Quiet: nothing asked either way, and no piece announced (an idle
            // connection, or a peer that has not begun); a peer that has pieces is
            // trading, or about to, and hears at once. The cheap tests go first: this
            // runs over every peer twenty times a second.
            let due = match quiet {
                Quiet::All => true,
                Quiet::Group(g) if key.0 % QUIET_GROUPS == g => true,
                Quiet::None | Quiet::Group(_) => {
                    peer.interested
                        || peer.peer_interested
                        || peer.unchoked
                        || !peer.peer_choking
                        || peer.pieces.any()
                }
            };
            if !due {
                continue;
            }
            let from = peer.heard;
            peer.heard = len;
            if peer.pieces.all_set() {
                continue;
            }
            let list = lists
                .entry(from)
                .or_insert_with(|| self.verified_log[from..].into());
            peer.actor.do_send(ToPeer::Haves(list.clone()));
        }
        if let Some(&from) = lists.keys().min() {
            self.trace_announced(from, len);
        }
    }

    /// Records, when tracing, that the pieces `verified_log[from..len]` went to a peer,
    /// those not told to any before now.
    fn trace_announced(&mut self, from: usize, len: usize) {
        let first = std::mem::replace(&mut self.announced, len).max(from);
        let Some(tracer) = self.metrics.tracer() else {
            return;
        };
        for &piece in self.verified_log.get(first..len).unwrap_or_default() {
            tracer.piece_flow(
                "Coordinator",
                self.metrics.instance(),
                piece.get(),
                self.layout.num_blocks(piece),
                super::trace::Hop::Announced,
            );
        }
    }

    // --- pieces, resume, completion -----------------------------------------------------

    fn maybe_save_resume(&mut self, force: bool, ctx: &mut Context<Self>) {
        if !self.resume_schedule.take_due(Instant::now(), force) {
            return;
        }
        let data = ResumeData::new(self.info_hash, &self.layout, &self.have);
        ctx.spawn(
            self.metrics
                .id()
                .on(self
                    .writer
                    .send(SaveResume { data })
                    .into_actor(self)
                    .map(|res, act, ctx| {
                        if let Ok(Err(e)) = res {
                            act.fail(e, ctx);
                        }
                    })),
        );
    }

    fn progress(&self) -> Progress {
        // Wanted bytes only: with a file selection, the run is complete when the selected
        // files are, and the bar and the trackers count toward that.
        let total = self.wanted_bytes;
        let remaining = self.picker.as_ref().map_or(total, Picker::remaining_bytes);
        let (rate, upload_rate) = match (self.rate_samples.front(), self.rate_samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let secs = (b.0 - a.0).as_secs_f64();
                (
                    b.1.saturating_sub(a.1) as f64 / secs,
                    b.2.saturating_sub(a.2) as f64 / secs,
                )
            }
            _ => (0.0, 0.0),
        };
        Progress {
            phase: self.phase,
            total_bytes: total,
            verified_bytes: total - remaining,
            checked: self.check.progress(),
            peers: self.peers.len() + self.active_web_seeds(),
            seeds: self.peers.values().filter(|p| p.pieces.all_set()).count()
                + self.active_web_seeds(),
            rate,
            upload_rate,
            downloaded_this_run: self.downloaded_this_run,
            uploaded: self.payload_uploaded,
            listen: self.listen_addr,
            // Peers report their bytes once a second, so the sum lags; what was
            // verified this run was certainly received, and the figure is never less.
            received: self.payload_downloaded.max(self.downloaded_this_run),
            hash_failures: self.hash_failures,
            banned: self.book.banned_count(),
        }
    }

    /// Decides whom we upload to, through the [`Choker`]: tit-for-tat with one optimistic
    /// slot while downloading, turns for every interested peer while seeding.
    fn rechoke(&mut self) {
        let now = Instant::now();
        let stats: Vec<ChokeCandidate> = self
            .peers
            .iter()
            .map(|(key, p)| ChokeCandidate {
                key: *key,
                interested: p.peer_interested,
                download_rate: p.down_rate,
                connected_for: now.duration_since(p.joined_at),
                is_seed: p.pieces.all_set(),
                currently_unchoked: p.unchoked,
            })
            .collect();
        let decision = self
            .choker
            .rechoke(&stats, self.phase == Phase::Complete, now);
        for (keys, unchoke) in [(decision.unchoke, true), (decision.choke, false)] {
            for key in keys {
                if let Some(peer) = self.peers.get_mut(&key) {
                    peer.unchoked = unchoke;
                    peer.actor.do_send(if unchoke {
                        ToPeer::Unchoke
                    } else {
                        ToPeer::Choke
                    });
                }
            }
        }
    }

    /// Gives the picker the streams' time-critical pieces (see `engine::stream`), and
    /// wakes idle peers when the list changed so they pick them now.
    fn update_critical(&mut self) {
        for waiters in self.stream_waiters.values_mut() {
            waiters.retain(|w| !w.wake.is_canceled());
        }
        self.stream_waiters.retain(|_, w| !w.is_empty());
        let mut waiting: Vec<(StreamId, u32)> = self
            .stream_waiters
            .iter()
            .flat_map(|(&piece, w)| w.iter().map(move |w| (w.stream, piece)))
            .collect();
        waiting.sort_unstable();
        let waiting: Vec<u32> = waiting.into_iter().map(|(_, p)| p).collect();
        let mut windows: Vec<(StreamId, (u32, u32))> =
            self.streams.iter().map(|(&k, &w)| (k, w)).collect();
        windows.sort_unstable();
        let windows: Vec<(u32, u32)> = windows.into_iter().map(|(_, w)| w).collect();
        // Pieces a read has waited on past STALL_AFTER: short of the read's deadline,
        // their blocks are asked of more peers, as endgame does.
        let mut stalled: Vec<u32> = Vec::new();
        let (order, urgent) = if self.config.stream_deadlines {
            stalled.extend(
                self.stream_waiters
                    .iter()
                    .filter(|(_, w)| w.iter().any(|w| w.since.elapsed() >= STALL_AFTER))
                    .map(|(&piece, _)| piece),
            );
            stalled.sort_unstable();
            critical_order(&waiting, &windows)
        } else {
            (Vec::new(), 0)
        };
        let Some(picker) = &mut self.picker else {
            return;
        };
        if picker.time_critical() == (&order[..], urgent.min(order.len()))
            && picker.stalled() == &stalled[..]
        {
            return;
        }
        picker.set_time_critical(&order, urgent);
        picker.set_stalled(&stalled);
        if !order.is_empty() {
            self.wake_short_peers();
        }
    }

    /// Peers whose last pick came up short (mostly for want of budget or of anything to
    /// ask) may pick again now rather than at their next tick.
    fn wake_short_peers(&mut self) {
        for key in std::mem::take(&mut self.short_peers) {
            if let Some(peer) = self.peers.get_mut(&key) {
                if std::mem::take(&mut peer.short) && peer.interested && !peer.wake_pending {
                    peer.wake_pending = true;
                    peer.actor.do_send(ToPeer::WakeUp);
                }
            }
        }
    }

    /// Wakes the stream reads whose piece is verified now.
    fn wake_stream_readers(&mut self) {
        let have = &self.have;
        let ready: Vec<u32> = self
            .stream_waiters
            .keys()
            .copied()
            .filter(|&p| have.has(p))
            .collect();
        for piece in &ready {
            for waiter in self.stream_waiters.remove(piece).unwrap_or_default() {
                let _ = waiter.wake.send(());
            }
        }
        if !ready.is_empty() {
            self.update_critical();
        }
    }

    /// Tells the picker whether to start pieces in order; in order, each selected
    /// file's first and last piece go first.
    fn apply_sequential(&mut self) {
        let Some(picker) = &mut self.picker else {
            return;
        };
        let mut heads = Vec::new();
        if self.sequential {
            for (index, file) in self.layout.files().iter().enumerate() {
                let pieces = self.layout.file_pieces(index);
                if file.padding || !self.selected.is_selected(index) || pieces.is_empty() {
                    continue;
                }
                heads.push(pieces.start);
                heads.push(pieces.end - 1);
            }
        }
        picker.set_sequential(self.sequential, heads);
    }

    fn complete(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Complete;
        info!(self.log, "download complete");
        for entry in self.web_seeds.values() {
            info!(self.log, "web seed"; "url" => &entry.status.url, "downloaded" => entry.status.downloaded);
        }
        self.stop_web_seeds("download complete");
        for peer in self.peers.values_mut() {
            if peer.pieces.all_set() {
                // Two seeds have nothing to give each other.
                peer.actor
                    .do_send(ToPeer::Disconnect("both seeding".into()));
            } else if peer.interested {
                peer.interested = false;
                peer.actor.do_send(ToPeer::SetInterest(false));
            }
        }
        // `completed` means a seed: not sent when some files were left out.
        if self.have.all_set() {
            for tracker in self.trackers.values() {
                tracker.do_send(TrackerCompleted);
            }
        }
        // Nothing wanted is left in the PieceManager now, so the drain only makes sure no
        // block is taken and no write follows the close.
        ctx.wait(
            self.metrics
                .id()
                .on(self.drain_and_save(true).map(|res, act, _| match res {
                    Ok(()) => act.events.do_send(TorrentEvent::Completed(act.progress())),
                    Err(e) => act
                        .events
                        .do_send(TorrentEvent::Failed(e.kind(), e.to_string())),
                })),
        );
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Start-up is this actor's work too: timed, and its sends are its own.
        let _timing = self.metrics.handling_unqueued("started");
        ctx.wait(
            self.metrics
                .id()
                .on(self.writer.send(OpenStorage).into_actor(self).map(
                    |res, act, ctx| match res {
                        Ok(Ok(report)) => act.begin_check(report, ctx),
                        Ok(Err(e)) => act.fail(e, ctx),
                        Err(e) => act.fail(
                            StorageError {
                                path: act.root.display().to_string(),
                                message: e.to_string(),
                                disk_full: false,
                            },
                            ctx,
                        ),
                    },
                )),
        );
        ctx.run_interval(Duration::from_secs(10), |act, _| act.rechoke());
        ctx.run_interval(PEX_INTERVAL, |act, _| act.share_peers());
        ctx.run_interval(HAVE_QUIET_INTERVAL / QUIET_GROUPS as u32, |act, _| {
            act.quiet_turn = (act.quiet_turn + 1) % QUIET_GROUPS;
            act.announce_haves(Quiet::Group(act.quiet_turn));
        });
        ctx.run_interval(Duration::from_millis(500), |act, ctx| {
            let now = Instant::now();
            act.fastest_rate = act.peers.values().map(|p| p.down_rate).fold(0.0, f64::max);
            act.classify_peers(now);
            act.clear_suspects();
            act.report_stall(now);
            if !act.stream_waiters.is_empty() {
                // A read waiting past STALL_AFTER widens its piece's requests.
                act.update_critical();
            }
            let verified = act.progress().verified_bytes;
            act.rate_samples
                .push_back((now, verified, act.payload_uploaded));
            while act
                .rate_samples
                .front()
                .is_some_and(|(t, _, _)| now.duration_since(*t) > Duration::from_secs(5))
            {
                act.rate_samples.pop_front();
            }
            if !act.stopping {
                act.events.do_send(TorrentEvent::Progress(act.progress()));
            }
            act.maybe_save_resume(false, ctx);
            act.dial(ctx);
        });
    }
}

impl StreamHandler<Accepted> for Coordinator {
    fn handle(&mut self, item: Accepted, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_unqueued("accepted connection");
        let Ok((stream, addr)) = item else { return };
        // Refused, the stream is dropped here, which closes it at once: a flood costs no
        // lasting socket.
        let handshakes_full = self.handshaking_in >= MAX_INCOMING_HANDSHAKES;
        let Some(admitted) = self.admit_incoming(addr, handshakes_full) else {
            return;
        };
        let swarms = std::iter::once(self.info_hash)
            .chain(self.v2_swarm)
            .collect();
        let fut = connection::accept(
            stream,
            swarms,
            self.config.peer_id,
            connection::our_reserved(self.dht.is_some()),
            self.config.connect.handshake,
            self.config.encryption,
        );
        self.finish_incoming(addr, admitted, fut, ctx);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The listener closing does not end the torrent; outgoing connections go on.
    }
}

impl Handler<IncomingPeer> for Coordinator {
    type Result = ();

    /// A connection from the shared listener, its handshake read: the same rules as our
    /// own listener's, then our answer and the Peer.
    fn handle(&mut self, msg: IncomingPeer, ctx: &mut Context<Self>) {
        let _timing = self
            .metrics
            .handling_unqueued(message_name::<IncomingPeer>());
        if msg.handshake.info_hash != self.info_hash
            && Some(msg.handshake.info_hash) != self.v2_swarm
        {
            debug!(self.log, "listener routed a peer of another torrent"; "addr" => %msg.addr);
            return;
        }
        let Some(admitted) = self.admit_incoming(msg.addr, false) else {
            return;
        };
        let (our_id, reserved, timeout) = (
            self.config.peer_id,
            connection::our_reserved(self.dht.is_some()),
            self.config.connect.handshake,
        );
        let IncomingPeer {
            mut stream,
            handshake,
            ..
        } = msg;
        let answer = async move {
            connection::answer_handshake(&mut stream, &handshake, our_id, reserved, timeout)
                .await?;
            Ok((stream, handshake))
        };
        self.finish_incoming(msg.addr, admitted, answer, ctx);
    }
}

impl Handler<PeerJoined> for Coordinator {
    type Result = Result<Bitfield, JoinRefused>;

    fn handle(&mut self, msg: PeerJoined, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<PeerJoined>();
        // Refused, the permit is dropped here and its slot is free again; the per-IP
        // place goes back by hand.
        let Joining { permit, slot, .. } = self.joining.remove(&msg.key).unwrap_or(Joining {
            permit: None,
            slot: IpSlot::UNCOUNTED,
            outgoing: msg.outgoing,
        });
        let refused = if self.stopping {
            Some(JoinRefused::Stopping)
        } else if msg.peer_id == self.config.peer_id {
            // Our own address and port only: other peers may share our public IP.
            self.book.ban_endpoint(msg.addr);
            Some(JoinRefused::OurOwnId)
        } else if self.peer_ids.contains(&msg.peer_id) {
            Some(JoinRefused::Duplicate)
        } else if self.peers.len() >= self.config.max_peers
            || (!msg.outgoing && self.incoming_peers() >= self.max_incoming_peers())
        {
            if !msg.outgoing {
                self.refused_incoming();
            }
            Some(JoinRefused::Full)
        } else {
            None
        };
        if let Some(refused) = refused {
            self.book.release_slot(slot);
            if msg.outgoing {
                // Dialed and refused: it waits its back-off like a failed dial.
                self.book.dial_failed(msg.addr, Instant::now());
            }
            return Err(refused);
        }
        if msg.outgoing {
            self.book.connected(msg.addr);
        }
        self.peer_ids.insert(msg.peer_id);
        self.peers.insert(
            msg.key,
            PeerEntry {
                actor: msg.peer,
                addr: msg.addr,
                listen: msg.outgoing.then_some(msg.addr),
                peer_id: msg.peer_id,
                outgoing: msg.outgoing,
                pieces: Bitfield::new(self.layout.num_pieces()),
                interested: false,
                peer_interested: false,
                unchoked: false,
                peer_choking: true,
                unchoked_us_at: None,
                slow: false,
                down_rate: 0.0,
                up_rate: 0.0,
                joined_at: Instant::now(),
                wake_pending: false,
                short: false,
                heard: self.verified_log.len(),
                _permit: permit,
                slot,
            },
        );
        Ok(self.have.clone())
    }
}

impl Handler<PeerListenPort> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PeerListenPort, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PeerListenPort>();
        if let Some(peer) = self.peers.get_mut(&msg.key).filter(|p| !p.outgoing) {
            let listen = SocketAddr::new(peer.addr.ip(), msg.port);
            peer.listen = Some(listen);
            // Connected already: not to be dialed while it is.
            self.book.connected(listen);
        }
    }
}

impl Handler<PeerBitfield> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PeerBitfield, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PeerBitfield>();
        let Some(peer) = self.peers.get_mut(&msg.key) else {
            return;
        };
        if let Some(picker) = &mut self.picker {
            picker.remove_peer_pieces(&peer.pieces);
            picker.add_peer_pieces(&msg.pieces);
        }
        peer.pieces = msg.pieces;
        self.ask_pending_leaves(msg.key);
        let Some(peer) = self.peers.get(&msg.key) else {
            return;
        };
        if self.phase == Phase::Complete && peer.pieces.all_set() {
            peer.actor
                .do_send(ToPeer::Disconnect("both seeding".into()));
            return;
        }
        self.update_interest(msg.key);
    }
}

impl Handler<PeerHaves> for Coordinator {
    type Result = ();

    /// A batch of newly announced pieces: each costs O(1) here, and the Peer sends each
    /// piece at most once per connection, so a peer can make us do at most its piece
    /// count of this work, in at most one message per batch interval.
    fn handle(&mut self, msg: PeerHaves, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PeerHaves>();
        let Some(peer) = self.peers.get_mut(&msg.key) else {
            return;
        };
        let mut wanted = false;
        for piece in msg.pieces {
            if peer.pieces.has(piece.get()) {
                continue;
            }
            let _ = peer.pieces.set(piece.get());
            if let Some(picker) = &mut self.picker {
                picker.add_peer_piece(piece);
                wanted |= picker.wants(piece);
            }
        }
        if wanted {
            if peer.interested {
                if !peer.wake_pending {
                    peer.wake_pending = true;
                    peer.actor.do_send(ToPeer::WakeUp);
                }
            } else {
                peer.interested = true;
                peer.actor.do_send(ToPeer::SetInterest(true));
            }
        }
    }
}

/// The blocks just picked, each stamped with the attempt at its piece in progress: what
/// a Peer or a web seed is handed (see [`Lease`]).
fn leases(layout: &Layout, picker: &Picker, picked: Vec<BlockRequest>) -> Vec<Lease> {
    picked
        .into_iter()
        .filter_map(|request| {
            let piece = layout.piece(request.piece)?;
            Some(Lease {
                request,
                attempt: picker.failures(piece),
            })
        })
        .collect()
}

impl Handler<PickBlocks> for Coordinator {
    type Result = MessageResult<PickBlocks>;

    fn handle(&mut self, msg: PickBlocks, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<PickBlocks>();
        if self.web_seeds.contains_key(&msg.key) {
            return MessageResult(self.pick_for_web_seed(msg));
        }
        if let Some(peer) = self.peers.get_mut(&msg.key) {
            peer.wake_pending = false;
        }
        self.apply_received(msg.key, &msg.received, &msg.released);
        let mut out = Vec::new();
        if self.stopping || self.phase != Phase::Downloading {
            return MessageResult(Picked::default());
        }
        if let (Some(picker), Some(peer)) = (&mut self.picker, self.peers.get(&msg.key)) {
            let piece_length = f64::from(self.layout.piece_length());
            let parole_ok = peer.down_rate * PAROLE_SECONDS >= piece_length
                || peer.down_rate >= PAROLE_SHARE_OF_FASTEST * self.fastest_rate;
            let want = if peer.slow {
                let cap = ((peer.down_rate * SLOW_QUEUE_SECONDS / f64::from(BLOCK_SIZE)) as usize)
                    .max(SLOW_MIN_BLOCKS);
                msg.want.min(cap.saturating_sub(picker.leases_of(msg.key)))
            } else {
                msg.want
            };
            picker.pick_as(msg.key, &peer.pieces, want, parole_ok, &mut out);
            // Held back by its cap, a slow peer is not short: it asks again at its tick.
            let short = out.len() < want;
            if let Some(peer) = self.peers.get_mut(&msg.key) {
                if short {
                    self.short_peers.insert(msg.key);
                }
                peer.short = short;
            }
            return MessageResult(Picked {
                blocks: leases(&self.layout, picker, out),
            });
        }
        MessageResult(Picked::default())
    }
}

impl Handler<PeerChokedUs> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PeerChokedUs, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PeerChokedUs>();
        if let Some(peer) = self.peers.get_mut(&msg.key) {
            peer.peer_choking = true;
            peer.unchoked_us_at = None;
        }
        self.apply_received(msg.key, &msg.received, &msg.released);
    }
}

impl Handler<PeerUnchokedUs> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PeerUnchokedUs, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PeerUnchokedUs>();
        if let Some(peer) = self.peers.get_mut(&msg.key) {
            if peer.peer_choking {
                peer.unchoked_us_at = Some(Instant::now());
            }
            peer.peer_choking = false;
        }
    }
}

impl Handler<PeerLeft> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PeerLeft, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PeerLeft>();
        self.apply_received(msg.key, &msg.received, &msg.released);
        if let Some(entry) = self.web_seeds.get_mut(&msg.key) {
            entry.actor = None;
            if entry.status.reason.is_none() {
                entry.status.state = "stopped";
                entry.status.reason = Some(msg.reason.clone());
                // A web seed given up while the download goes on is the user's concern.
                if self.phase == Phase::Downloading && !self.stopping {
                    warn!(self.log, "web seed given up"; "url" => &entry.status.url, "reason" => &msg.reason);
                }
            }
        }
        // Every block it still holds goes back, including those of a pick reply that
        // never reached it (see `Picker::peer_left`).
        let freed = self.picker.as_mut().map_or(0, |p| p.peer_left(msg.key));
        if freed > 0 {
            self.wake_all(Some(msg.key));
        }
        self.short_peers.remove(&msg.key);
        if let Some(peer) = self.peers.remove(&msg.key) {
            self.peer_ids.remove(&peer.peer_id);
            debug!(self.log, "peer left"; "addr" => %peer.addr, "reason" => &msg.reason);
            if self.departed.len() >= DEPARTED_REMEMBERED {
                self.departed.pop_front();
            }
            self.departed.push_back((msg.key, peer.addr));
            if let Some(picker) = &mut self.picker {
                picker.remove_peer_pieces(&peer.pieces);
            }
            self.book.release_slot(peer.slot);
            // Dialed again later where it listens (for a peer that dialed us, if it said),
            // after a pause that grows if it keeps leaving soon after joining.
            if let Some(listen) = peer.listen {
                let retry =
                    self.book
                        .disconnected(listen, peer.joined_at.elapsed(), Instant::now());
                debug!(self.log, "peer may be dialed again"; "addr" => %listen, "retry" => ?retry);
            }
        }
        if self.stopping && self.peers.is_empty() {
            if let Some(tx) = self.peers_gone.take() {
                let _ = tx.send(());
            }
        }
        self.dial(ctx);
    }
}

impl Handler<PeerInterest> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PeerInterest, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PeerInterest>();
        let Some(peer) = self.peers.get_mut(&msg.key) else {
            return;
        };
        peer.peer_interested = msg.interested;
        let unchoked = self.peers.values().filter(|p| p.unchoked).count();
        // A free slot is filled at once rather than at the next 10 s rechoke.
        if msg.interested && (self.config.upload_slots == 0 || unchoked <= self.config.upload_slots)
        {
            self.rechoke();
        }
    }
}

impl Handler<PeerStats> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PeerStats, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PeerStats>();
        self.payload_downloaded += msg.downloaded;
        self.payload_uploaded += msg.uploaded;
        if let Some(entry) = self.web_seeds.get_mut(&msg.key) {
            entry.status.downloaded += msg.downloaded;
        }
        if let Some(peer) = self.peers.get_mut(&msg.key) {
            // Reports come once a second while bytes move; smoothing keeps one burst from
            // deciding a slot.
            peer.down_rate = 0.7 * peer.down_rate + 0.3 * msg.downloaded as f64;
            peer.up_rate = 0.7 * peer.up_rate + 0.3 * msg.uploaded as f64;
        }
    }
}

impl Handler<PeerMisbehaved> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PeerMisbehaved, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PeerMisbehaved>();
        if let Some(peer) = self.peers.get(&msg.key) {
            // Banned by IP, so it cannot come back from another port; loopback and the
            // user's peers by address and port (see `address_book`).
            let (addr, listen) = (peer.addr, peer.listen);
            warn!(self.log, "peer misbehaved, banned"; "addr" => %addr, "what" => &msg.what,
                  "ban" => ?self.book.ban_key(&addr));
            self.ban(addr, listen, &msg.what);
        }
    }
}

impl Handler<PieceVerified> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PieceVerified, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PieceVerified>();
        let Some(picker) = &mut self.picker else {
            return;
        };
        if self.have.has(msg.piece.get()) {
            return;
        }
        picker.piece_verified(msg.piece);
        let _ = self.have.set(msg.piece.get());
        if let Some(tracer) = self.metrics.tracer() {
            let blocks = self.layout.num_blocks(msg.piece);
            tracer.piece_flow(
                "Coordinator",
                self.metrics.instance(),
                msg.piece.get(),
                blocks,
                super::trace::Hop::Verified,
            );
        }
        self.downloaded_this_run += u64::from(self.layout.piece_len(msg.piece));
        self.resume_schedule.piece_verified(Instant::now());
        self.verified_log.push(msg.piece);
        if !self.haves_due {
            self.haves_due = true;
            ctx.run_later(HAVE_BATCH_INTERVAL, |act, _| {
                act.haves_due = false;
                act.announce_haves(Quiet::None);
            });
        }
        let complete = picker.is_complete();
        if self.stream_waiters.contains_key(&msg.piece.get()) {
            self.wake_stream_readers();
        }
        if complete {
            self.announce_haves(Quiet::All);
            self.complete(ctx);
        } else {
            // The piece's budget is free again: peers whose last pick came up short
            // (mostly for want of budget) may start a piece now, not at their next tick.
            self.wake_web_seeds();
            self.wake_short_peers();
            self.maybe_save_resume(false, ctx);
        }
    }
}

impl Handler<PieceFailed> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PieceFailed, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<PieceFailed>();
        self.hash_failures += 1;
        if let Some(picker) = &mut self.picker {
            picker.piece_failed(msg.piece);
            // Suspects until the piece passes: they fetch only pieces on parole.
            for key in msg.senders.iter().filter(|k| self.peers.contains_key(k)) {
                picker.suspect(*key, msg.piece);
            }
        }
        // The PieceManager dropped the failed attempt itself; late blocks of it, and
        // reports about them, carry their attempt and are dropped (see `Lease`).
        self.wake_all(None);
        self.wake_web_seeds();
    }
}

impl Handler<WantLeafHashes> for Coordinator {
    type Result = ();

    /// A v2 piece failed: its leaves are asked of a few peers that have it; the first
    /// answer that hashes to the piece's node names the bad blocks (see the PieceManager).
    fn handle(&mut self, msg: WantLeafHashes, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<WantLeafHashes>();
        let asked: Vec<_> = self
            .peers
            .values()
            .filter(|p| p.pieces.has(msg.piece.get()))
            .take(LEAF_HASH_ASKS)
            .collect();
        debug!(self.log, "asking peers for a failed v2 piece's leaves"; "piece" => msg.piece.get(), "peers" => asked.len());
        for peer in &asked {
            peer.actor.do_send(ToPeer::AskHashes {
                piece: msg.piece,
                request: msg.request,
            });
        }
        if asked.len() < LEAF_HASH_ASKS {
            if self.leaf_asks.len() >= LEAF_HASH_PENDING {
                self.leaf_asks.pop_front();
            }
            let count = asked.len();
            self.leaf_asks.push_back((msg, count));
        }
    }
}

impl Coordinator {
    /// A peer's pieces are known: ask it for the leaves of failed v2 pieces it has that
    /// too few peers were asked about.
    fn ask_pending_leaves(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        for (want, asked) in &mut self.leaf_asks {
            if peer.pieces.has(want.piece.get()) {
                *asked += 1;
                peer.actor.do_send(ToPeer::AskHashes {
                    piece: want.piece,
                    request: want.request,
                });
            }
        }
        self.leaf_asks.retain(|(_, asked)| *asked < LEAF_HASH_ASKS);
    }
}

/// Failed v2 pieces the Coordinator keeps asking joining peers about, at most.
const LEAF_HASH_PENDING: usize = 64;

/// How many peers that have a failed v2 piece are asked for its leaves.
const LEAF_HASH_ASKS: usize = 3;

impl Handler<BadData> for Coordinator {
    type Result = ();

    /// Blame is certain here (see [`BadData`]), so no honest peer that merely shared a
    /// failed piece is ever blamed. Smart ban's verdict (a block that differs from the
    /// copy that passed) bans at once (see `address_book` for by what) and drops the
    /// peer, with every connection the ban covers; so does failing a piece on parole.
    /// Forgiving one smart-ban verdict, for a flipped bit on an honest disk, let each
    /// liar spoil pieces until a second one: with 4 MiB pieces every verdict waits for a
    /// refetch to pass, and stress-swarm leechers threw away up to 22 pieces (88 MiB of
    /// 128) to five liars. Only the sole sender of a piece's first attempt is forgiven
    /// once ([`BAD_DATA_STRIKES_TO_BAN`]): it may be the only peer that has the piece.
    fn handle(&mut self, msg: BadData, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<BadData>();
        if self.web_seeds.contains_key(&msg.from) {
            return self.web_seed_bad_data(&msg);
        }
        let addr = match self.peers.get(&msg.from) {
            Some(peer) => peer.addr,
            None => match self.departed.iter().rev().find(|(k, _)| *k == msg.from) {
                Some((_, addr)) => *addr,
                None => return,
            },
        };
        // (`PieceFailed` comes before this, so the failures counted include this one.)
        let failures = self.picker.as_ref().map_or(0, |p| p.failures(msg.piece));
        let parole = msg.bad_blocks == 0 && failures >= 2;
        let by_smart_ban = msg.bad_blocks > 0;
        let strikes = self.book.strike(addr);
        warn!(self.log, "peer sent data that failed its hash"; "addr" => %addr, "piece" => msg.piece.get(), "bad_blocks" => msg.bad_blocks, "failed on parole" => parole, "strikes" => strikes);
        let ban = by_smart_ban || parole || strikes >= BAD_DATA_STRIKES_TO_BAN;
        if ban && !self.book.is_banned(&addr) {
            let listen = self.peers.get(&msg.from).and_then(|p| p.listen);
            self.ban(addr, listen, "sent bad data");
            warn!(self.log, "peer banned for sending bad data"; "addr" => %addr);
        }
    }
}

impl Handler<StorageFailed> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: StorageFailed, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<StorageFailed>();
        if !self.stopping {
            self.fail(msg.error, ctx);
        }
    }
}

impl Handler<HashesDisagree> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: HashesDisagree, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<HashesDisagree>();
        if !self.stopping {
            self.fail_inconsistent(msg.piece, ctx);
        }
    }
}

impl Handler<PeersFound> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: PeersFound, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_unqueued(message_name::<PeersFound>());
        if matches!(msg.source, PeerSource::TrackerV2Swarm(_)) {
            let room = MAX_V2_GREETED.saturating_sub(self.v2_greeted.len());
            self.v2_greeted.extend(msg.peers.iter().take(room));
        } else if !self.v2_greeted.is_empty() {
            for addr in &msg.peers {
                self.v2_greeted.remove(addr);
            }
        }
        let taken = self.book.take_found(&msg.peers, &msg.source);
        debug!(self.log, "peers found"; "source" => ?msg.source, "listed" => msg.peers.len(),
               "new" => taken.added, "refused" => taken.refused);
        if taken.over_cap > 0 {
            debug!(self.log, "peer list cut to its cap"; "source" => ?msg.source,
                   "listed" => msg.peers.len(), "left out" => taken.over_cap);
        }
        self.dial(ctx);
    }
}

impl Handler<GetAnnounceStats> for Coordinator {
    type Result = MessageResult<GetAnnounceStats>;

    fn handle(&mut self, _: GetAnnounceStats, _: &mut Context<Self>) -> Self::Result {
        let _timing = self
            .metrics
            .handling_unqueued(message_name::<GetAnnounceStats>());
        // `left` counts the whole torrent, as libtorrent's does: with some files
        // deselected we are not a seed, and a tracker must not list us as one.
        let have: u64 = (0..self.layout.num_pieces())
            .filter(|&p| self.have.has(p))
            .filter_map(|p| self.layout.piece(p))
            .map(|p| u64::from(self.layout.piece_len(p)))
            .sum();
        let left = self.layout.total_length().saturating_sub(have);
        MessageResult(AnnounceStats {
            uploaded: self.payload_uploaded,
            downloaded: self.payload_downloaded,
            left,
        })
    }
}

impl Handler<TrackerReport> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: TrackerReport, ctx: &mut Context<Self>) {
        let _timing = self
            .metrics
            .handling_unqueued(message_name::<TrackerReport>());
        msg.log(&self.log);
        let change = self.tracker_board.reported(&msg, Instant::now());
        self.tracker_changed(change);
        if let Some(next) = self.tiers.on_result(&msg.url, msg.outcome.is_ok()) {
            if !self.trackers.contains_key(&next) && !self.stopping {
                let port = self
                    .listen_addr
                    .map_or(self.config.listen.port(), |a| a.port());
                self.start_tracker(&next, port, rand::random(), ctx);
            }
        }
    }
}

impl Handler<TrackerAnnouncing> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: TrackerAnnouncing, _: &mut Context<Self>) {
        let _timing = self
            .metrics
            .handling_unqueued(message_name::<TrackerAnnouncing>());
        let change = self.tracker_board.announcing(&msg.url);
        self.tracker_changed(change);
    }
}

impl Handler<GetTrackers> for Coordinator {
    type Result = MessageResult<GetTrackers>;

    fn handle(&mut self, _: GetTrackers, _: &mut Context<Self>) -> Self::Result {
        let _timing = self
            .metrics
            .handling_unqueued(message_name::<GetTrackers>());
        MessageResult(self.tracker_board.statuses().to_vec())
    }
}

impl Handler<SetTorrentRates> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: SetTorrentRates, _: &mut Context<Self>) {
        let _timing = self
            .metrics
            .handling_unqueued(message_name::<SetTorrentRates>());
        match &self.limiter {
            Some(limiter) => limiter.do_send(SetRates {
                upload: msg.upload,
                download: msg.download,
            }),
            // Peers were started without a limiter and would not ask a new one.
            None if msg.upload > 0 || msg.download > 0 => {
                warn!(self.log, "rate limits ignored: this torrent was started without a rate limiter";
                    "upload" => msg.upload, "download" => msg.download)
            }
            None => {}
        }
    }
}

impl Handler<GetPeerList> for Coordinator {
    type Result = MessageResult<GetPeerList>;

    fn handle(&mut self, _: GetPeerList, _: &mut Context<Self>) -> Self::Result {
        let _timing = self
            .metrics
            .handling_unqueued(message_name::<GetPeerList>());
        let pieces = f64::from(self.layout.num_pieces().max(1));
        let mut list: Vec<PeerInfo> = self
            .peers
            .values()
            .map(|p| PeerInfo {
                addr: p.addr,
                client: crate::ids::client_name(&p.peer_id),
                outgoing: p.outgoing,
                down_rate: p.down_rate,
                up_rate: p.up_rate,
                progress: f64::from(p.pieces.count_ones()) / pieces,
                am_choking: !p.unchoked,
                am_interested: p.interested,
                peer_choking: p.peer_choking,
                peer_interested: p.peer_interested,
            })
            .collect();
        list.sort_by_key(|p| p.addr);
        MessageResult(list)
    }
}

impl Handler<GetWebSeedList> for Coordinator {
    type Result = MessageResult<GetWebSeedList>;

    fn handle(&mut self, _: GetWebSeedList, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<GetWebSeedList>();
        let mut list: Vec<(PeerKey, WebSeedStatus)> = self
            .web_seeds
            .iter()
            .map(|(k, w)| (*k, w.status.clone()))
            .collect();
        list.sort_by_key(|(k, _)| *k);
        MessageResult(list.into_iter().map(|(_, s)| s).collect())
    }
}

impl Handler<GetPieceMap> for Coordinator {
    type Result = MessageResult<GetPieceMap>;

    fn handle(&mut self, _: GetPieceMap, _: &mut Context<Self>) -> Self::Result {
        let _timing = self
            .metrics
            .handling_unqueued(message_name::<GetPieceMap>());
        MessageResult(PieceMap {
            pieces: self.layout.num_pieces() as usize,
            have: self.have.as_bytes().to_vec(),
            wanted: self
                .selected
                .wanted_pieces(&self.layout)
                .as_bytes()
                .to_vec(),
            downloading: self
                .picker
                .as_ref()
                .map_or_else(Vec::new, Picker::in_progress_pieces),
            streams: {
                let mut windows: Vec<(StreamId, (u32, u32))> =
                    self.streams.iter().map(|(&k, &w)| (k, w)).collect();
                windows.sort_unstable();
                windows.into_iter().map(|(_, (a, b))| [a, b]).collect()
            },
        })
    }
}

impl Handler<GetFileProgress> for Coordinator {
    type Result = MessageResult<GetFileProgress>;

    fn handle(&mut self, _: GetFileProgress, _: &mut Context<Self>) -> Self::Result {
        let _timing = self
            .metrics
            .handling_unqueued(message_name::<GetFileProgress>());
        let verified = verified_bytes_per_file(&self.layout, &self.have);
        let files = self
            .layout
            .files()
            .iter()
            .zip(verified)
            .enumerate()
            .map(|(index, (file, verified_bytes))| FileProgress {
                index,
                path: file.path.display(),
                length: file.length,
                selected: self.selected.is_selected(index),
                priority: FilePriority::of(
                    self.selected.is_selected(index),
                    self.high_files.contains(&(index as u32)),
                ),
                verified_bytes,
            })
            .collect();
        MessageResult(files)
    }
}

impl Handler<StreamRead> for Coordinator {
    type Result = ResponseFuture<Result<bytes::Bytes, StreamError>>;

    fn handle(&mut self, msg: StreamRead, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_unqueued(message_name::<StreamRead>());
        let plan = msg.plan;
        let fail = |e| -> Self::Result { Box::pin(futures::future::ready(Err(e))) };
        if self.stopping {
            return fail(StreamError::Stopped);
        }
        let Some(piece) = self.layout.piece(plan.piece) else {
            return fail(StreamError::Stopped);
        };
        if !self.streams.contains_key(&msg.stream) && self.streams.len() >= MAX_STREAMS {
            return fail(StreamError::TooManyStreams(MAX_STREAMS));
        }
        self.streams
            .insert(msg.stream, (plan.piece, plan.window_end.max(plan.piece)));
        // A stream has one read at a time: an earlier one still listed was given up.
        for waiters in self.stream_waiters.values_mut() {
            waiters.retain(|w| w.stream != msg.stream);
        }
        let reader = self.reader.clone();
        let read = ReadBlock {
            piece,
            offset: plan.offset,
            length: plan.length,
        };
        let read = async move {
            match reader.send(read).await {
                Ok(result) => result.map_err(StreamError::Storage),
                Err(_) => Err(StreamError::Stopped),
            }
        };
        if self.have.has(plan.piece) {
            self.update_critical();
            return Box::pin(read);
        }
        if self
            .picker
            .as_ref()
            .is_some_and(|p| p.state(piece) == super::picker::PieceState::Skipped)
        {
            return fail(StreamError::NotSelected);
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        self.stream_waiters
            .entry(plan.piece)
            .or_default()
            .push(StreamWaiter {
                stream: msg.stream,
                since: Instant::now(),
                wake: tx,
            });
        self.update_critical();
        let wait = msg.wait;
        Box::pin(async move {
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(())) => read.await,
                Ok(Err(_)) => Err(StreamError::Stopped),
                Err(_) => Err(StreamError::TimedOut {
                    piece: plan.piece,
                    wait,
                }),
            }
        })
    }
}

impl Handler<StreamClosed> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: StreamClosed, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<StreamClosed>();
        self.streams.remove(&msg.stream);
        for waiters in self.stream_waiters.values_mut() {
            waiters.retain(|w| w.stream != msg.stream);
        }
        self.update_critical();
    }
}

impl Handler<SetSequential> for Coordinator {
    type Result = ();

    fn handle(&mut self, msg: SetSequential, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<SetSequential>();
        self.sequential = msg.on;
        self.apply_sequential();
    }
}

impl Handler<Shutdown> for Coordinator {
    type Result = ResponseActFuture<Self, ()>;

    /// The stop, in order (ARCHITECTURE.md, "Shutdown order"): 1. refuse new peers and
    /// disconnect the Peers; 2. drain the PieceManager; 3. close the FileWriter; 4. save
    /// the resume file; 5. announce `stopped`, then reply. A complete torrent closed its
    /// files and saved already (`complete`).
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_unqueued(message_name::<Shutdown>());
        self.stopping = true;
        // Waiting stream reads end now (as `Stopped`), not at their time limit.
        self.stream_waiters.clear();
        for peer in self.peers.values() {
            peer.actor
                .do_send(ToPeer::Disconnect("shutting down".into()));
        }
        self.stop_web_seeds("shutting down");
        let trackers: Vec<Tracked<Tracker>> = self.trackers.drain().map(|(_, a)| a).collect();
        // Steps 2 to 4 hold the mailbox (nothing is verified or picked behind them); the
        // trackers' `stopped` comes after, outside the wait, as a Tracker asks us for its
        // totals.
        let (saved_tx, saved) = futures::channel::oneshot::channel::<()>();
        // The Peers' last byte counts come with their leaving: the final progress waits
        // for them, a bounded while.
        let (gone_tx, gone) = futures::channel::oneshot::channel::<()>();
        let peers_at_stop = self.peers.len();
        if self.peers.is_empty() {
            let _ = gone_tx.send(());
        } else {
            self.peers_gone = Some(gone_tx);
        }
        if self.picker.is_some() && self.phase != Phase::Complete {
            ctx.wait(
                self.metrics
                    .id()
                    .on(self.drain_and_save(true).map(move |res, act, _| {
                        act.log_save_failure(res);
                        let _ = saved_tx.send(());
                    })),
            );
        }
        let work = async move {
            // Sent, or dropped when there was nothing to save: either way the save is over.
            let _ = saved.await;
            let stops = trackers.into_iter().map(|t| t.send(TrackerStop));
            // Each tracker bounds its own `stopped` announce; this bounds them all.
            let _ = tokio::time::timeout(Duration::from_secs(6), futures::future::join_all(stops))
                .await;
            let _ = tokio::time::timeout(PEERS_LEAVE_WAIT, gone).await;
        };
        Box::pin(work.into_actor(self).map(move |_, act, ctx| {
            debug!(act.log, "torrent stopped");
            // The totals of the run, with every Peer's last report; its peer count is
            // the one the stop found, as the Peers have just been let go.
            let mut last = act.progress();
            last.peers = last.peers.max(peers_at_stop);
            act.events.do_send(TorrentEvent::Progress(last));
            ctx.stop();
        }))
    }
}
