//! Magnet links: the MetadataFetcher actor finds peers for an info-hash, fetches the info
//! dictionary from them (BEP 9), checks it against the info-hash, saves it as a
//! `.torrent` and then starts the torrent's Coordinator, which it fronts from then on.
//!
//! The flow, in order:
//!
//! 1. Peers come from the magnet's `x.pe` addresses, `--peer`, the magnet's `tr`
//!    trackers (Tracker actors announcing to this fetcher), the DHT and `ut_pex`.
//! 2. Each connection is a [`MetadataPeer`](conn::MetadataPeer). When its extension
//!    handshake says it has the metadata, the fetcher assigns it pieces through the pure
//!    [`MetadataAssembler`](assembler::MetadataAssembler), several peers at once.
//! 3. The assembled bytes must hash to the info-hash. A mismatch is pinned on its sender
//!    (single-source retries when several peers contributed); that peer is dropped and
//!    never dialed again, and the fetch goes on with the others.
//! 4. With verified metadata, the fetcher writes `NAME.torrent` beside the download, stops
//!    its trackers and connections, sends `TorrentEvent::MetadataReceived` (with the
//!    `.torrent` bytes) and starts the Coordinator with every address it learned, exactly
//!    as `get file.torrent` would have. `Shutdown` sent to the fetcher is forwarded to the
//!    Coordinator, so the front end holds one address for the whole life of a magnet download.
//!    With `hand_over: false` (the `serve` daemon, which starts torrents itself) it stops
//!    after the event instead.
//!
//! What it must not do: download pieces (nothing is known about them yet) or trust any
//! byte of metadata before the hash check.

pub mod assembler;
pub mod conn;
pub mod layers;
pub mod no_layers;

use std::sync::Arc;

use crate::engine::metrics::{ActorKind, OwnMetrics, Tracked};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use slog::{debug, info, o, warn, Logger};

use self::assembler::{Assembled, InfoDigests, MetadataAssembler};
use self::conn::MetadataPeer;
use self::layers::{Answered, LayerFetch};
use self::no_layers::NoLayers;
use super::address_book::{AddressBook, IpSlot, RETRY_BASE};
use super::connection::{self, ConnectError};
use super::coordinator::{Coordinator, EngineConfig, TorrentParams};
use super::messages::*;
use super::stream::StreamSource;
use super::tracker::{Tiers, Tracker, TrackerBoard, TrackerConfig, TrackerLinks, TrackerStatus};
use super::transport::PeerStream;
use super::PeerKey;
use crate::bencode::BValue;
use crate::magnet::{FileSelection, Magnet};
use crate::metainfo::merkle::Hash256;
use crate::metainfo::v2::{V2Error, V2Info};
use crate::metainfo::{Metainfo, MetainfoError};
use crate::wire::ext::MetadataMessage;
use crate::wire::Handshake;

/// Most connections while fetching metadata: a few good peers are enough.
const MAX_METADATA_PEERS: usize = 30;

/// Requests outstanding per peer.
const REQUESTS_PER_PEER: usize = 4;

/// Hash requests outstanding per peer while a v2 torrent's piece layers are fetched.
const HASH_REQUESTS_PER_PEER: usize = 4;

/// How long a peer that gave no piece layers is left alone while they are fetched; then
/// it may be asked again.
const NO_LAYERS_RETRY: Duration = Duration::from_secs(600);

/// The most addresses remembered as having no piece layers to give (the oldest forgotten
/// first).
const MAX_NO_LAYERS: usize = 4096;

/// How often a DHT lookup is repeated while no metadata has come (a swarm may announce
/// itself after our first lookup).
const DHT_RETRY: Duration = Duration::from_secs(15);

/// What a magnet download needs.
pub struct MagnetParams {
    /// The parsed link.
    pub magnet: Magnet,
    /// The folder the torrent's name goes under; with `hand_over`, the `.torrent` is
    /// saved there too.
    pub download_dir: PathBuf,
    /// Tunables, shared with the Coordinator that takes over.
    pub config: EngineConfig,
    /// The files to download: `--files`, else the link's `so`, else all.
    pub selection: Option<FileSelection>,
    /// The DHT, unless it is off.
    pub dht: Option<DhtLinks>,
    /// Whether peers from `ut_pex` are used.
    pub pex: bool,
    /// Start the torrent's Coordinator once the metadata is in (`get`). When false (a
    /// daemon that starts torrents itself), the fetcher reports
    /// [`TorrentEvent::MetadataReceived`] and stops, its connections closed.
    pub hand_over: bool,
    /// Where events go.
    pub events: Recipient<TorrentEvent>,
    /// The parent logger.
    pub log: Logger,
}

/// One connection while fetching.
struct Conn {
    addr: SocketAddr,
    /// Its place in the per-IP count, given back when it leaves.
    slot: IpSlot,
    /// When it connected: a connection that ends at once counts as a failure.
    since: Instant,
    actor: Tracked<MetadataPeer>,
    /// The metadata size it advertised, once its extension handshake came.
    size: Option<u32>,
    /// Pieces asked of it and not answered.
    in_flight: usize,
    /// Its extension handshake came (with or without metadata to offer).
    ready: bool,
}

/// See the module documentation.
pub struct MetadataFetcher {
    /// Its counters (the engine's metrics).
    metrics: OwnMetrics,
    params: Option<MagnetParams>,
    info_hash: crate::InfoHash,
    conns: HashMap<PeerKey, Conn>,
    /// Addresses to dial, their back-off, and the peers that sent metadata not matching
    /// the info-hash (banned); bounded (see `address_book`).
    book: AddressBook,
    connecting: usize,
    next_key: u64,
    assembler: Option<MetadataAssembler>,
    /// What the info dictionary must hash to: the link's v1 hash, v2 hash, or both.
    expected: InfoDigests,
    /// The verified info dictionary of a v2 torrent while its piece layers are fetched.
    info: Option<Bytes>,
    /// The piece layers being fetched from peers, after `info` is verified.
    layers: Option<LayerFetch>,
    /// Peers that rejected, left unanswered or lied about a hash request, and when: not
    /// asked for piece layers (nor counted as sources) for `NO_LAYERS_RETRY`.
    no_layers: NoLayers,
    trackers: Vec<Tracked<Tracker>>,
    tiers: Tiers,
    /// The link's trackers as last reported, for the front end, until the Coordinator (with
    /// a board of its own) takes over.
    tracker_board: TrackerBoard,
    /// The torrent's Coordinator, once the metadata is in.
    coordinator: Option<Addr<Coordinator>>,
    handing_over: bool,
    stopping: bool,
    last_dht: Option<Instant>,
    /// The uTP socket dials go out from: `serve`'s shared one, or (in `get`, whose own
    /// uTP socket is bound beside its TCP listener only once the metadata is in) one
    /// bound here on a free port for the fetch, and dropped with this actor. Dials only:
    /// nobody learns this port, so no connection comes in on it.
    utp: Option<super::utp::Utp>,
    log: Logger,
}

impl MetadataFetcher {
    /// Starts fetching. The port to announce is fixed here: with `--port 0`, a free one
    /// is chosen now so that the trackers and DHT hear the port the Coordinator will
    /// listen on.
    pub fn start(params: MagnetParams) -> Addr<MetadataFetcher> {
        Self::new(params).start()
    }

    /// The fetcher, not yet started.
    fn new(mut params: MagnetParams) -> MetadataFetcher {
        if params.config.listen.port() == 0 {
            if let Ok(probe) = std::net::TcpListener::bind(params.config.listen) {
                if let Ok(addr) = probe.local_addr() {
                    params.config.listen = addr;
                }
            }
        }
        let info_hash = params.magnet.info_hash;
        let expected = InfoDigests::of(&params.magnet);
        let log = params.log.new(o!("torrent" => info_hash.to_hex()));
        let tier_list: Vec<Vec<String>> = params
            .magnet
            .trackers
            .iter()
            .map(|t| vec![t.clone()])
            .collect();
        let tiers = Tiers::new(tier_list);
        let tracker_board = TrackerBoard::new(&tiers.urls());
        if tiers.dropped() > 0 {
            warn!(log, "too many trackers, only the first ones are used";
                  "used" => super::tracker::MAX_TRACKERS, "left out" => tiers.dropped());
        }
        let metrics = params.config.metrics.of(ActorKind::MetadataFetcher);
        let mut book = AddressBook::new();
        book.set_own(params.config.listen);
        MetadataFetcher {
            metrics: OwnMetrics::started(metrics),
            params: Some(params),
            info_hash,
            conns: HashMap::new(),
            book,
            connecting: 0,
            next_key: 0,
            assembler: None,
            expected,
            info: None,
            layers: None,
            no_layers: NoLayers::new(no_layers::retry_or_override(NO_LAYERS_RETRY), MAX_NO_LAYERS),
            trackers: Vec::new(),
            tiers,
            tracker_board,
            coordinator: None,
            handing_over: false,
            stopping: false,
            last_dht: None,
            utp: None,
            log,
        }
    }

    fn params(&self) -> &MagnetParams {
        self.params
            .as_ref()
            .expect("params are kept until the hand-over")
    }

    fn fetching(&self) -> bool {
        !self.handing_over && !self.stopping && self.coordinator.is_none()
    }

    /// The addresses an `x.pe` host name resolved to. The name may resolve after the
    /// metadata is in (the parameters handed over): then it is too late, and ignored.
    fn hosts_resolved(&mut self, addrs: Vec<SocketAddr>, ctx: &mut Context<Self>) {
        if !self.fetching() {
            return;
        }
        self.book.take_found(&addrs, &PeerSource::Magnet);
        self.dial(ctx);
    }

    /// Takes `serve`'s shared uTP socket or, when uTP is on and there is none, binds one
    /// for the fetch's dials (on the listening IP, any free port); then dials. Without a
    /// socket (binding failed) the dials go over TCP, or fail with `--utp only`.
    fn bind_utp_then_dial(&mut self, ctx: &mut Context<Self>) {
        let config = &self.params().config;
        let (shared, mode, ip) = (config.shared_utp.clone(), config.utp, config.listen.ip());
        self.utp = shared;
        if self.utp.is_some() || !mode.uses_utp() {
            return self.dial(ctx);
        }
        let addr = SocketAddr::new(ip, 0);
        let bind = async move { super::utp::Utp::bind(addr).await };
        ctx.wait(
            self.metrics
                .id()
                .on(bind.into_actor(self).map(|bound, act, ctx| {
                    match bound {
                        Ok(utp) => act.utp = Some(utp),
                        Err(e) => {
                            warn!(act.log, "no uTP socket for the metadata's dials"; "error" => %e)
                        }
                    }
                    act.dial(ctx);
                })),
        );
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        if !self.fetching() {
            return;
        }
        let Some(params) = &self.params else { return };
        let config = &params.config;
        let (max_connecting, peer_id, timeouts) =
            (config.max_connecting, config.peer_id, config.connect);
        let max_peers = config.max_peers.min(MAX_METADATA_PEERS);
        let now = Instant::now();
        while self.connecting < max_connecting && self.conns.len() + self.connecting < max_peers {
            let Some(addr) = self.book.next_to_dial(now) else {
                break;
            };
            if let Some(wait) = self
                .layers
                .as_ref()
                .and(self.no_layers.left_alone_for(&addr, now))
            {
                // It gave nothing for this phase lately; asked again once its time is up.
                self.book.postpone(addr, wait, now);
                continue;
            }
            let slot = match self.book.take_slot(&addr) {
                Ok(slot) => slot,
                Err(e) => {
                    debug!(self.log, "dial put off"; "addr" => %addr, "why" => %e);
                    self.book.postpone(addr, RETRY_BASE, now);
                    continue;
                }
            };
            self.connecting += 1;
            let reserved = connection::our_reserved(self.params().dht.is_some());
            let encryption = self.params().config.encryption;
            let carriers = connection::Carriers {
                mode: self.params().config.utp,
                utp: self.utp.clone(),
            };
            let fut = connection::connect(
                addr,
                self.info_hash,
                peer_id,
                reserved,
                timeouts,
                encryption,
                carriers,
            );
            ctx.spawn(
                self.metrics
                    .id()
                    .on(fut.into_actor(self).map(move |res, act, ctx| {
                        act.connecting -= 1;
                        act.dialed(addr, slot, res, ctx);
                        act.dial(ctx);
                    })),
            );
        }
    }

    /// A dial of `addr` (holding its address-book `slot`) ended: a connection becomes a
    /// MetadataPeer while metadata is still wanted; a failure is retried by the book.
    fn dialed(
        &mut self,
        addr: SocketAddr,
        slot: IpSlot,
        res: Result<(PeerStream, Handshake), ConnectError>,
        ctx: &mut Context<Self>,
    ) {
        match res {
            Ok((stream, handshake)) if self.fetching() => {
                self.next_key += 1;
                let key = PeerKey(self.next_key);
                let pex = self.params().pex;
                let actor = MetadataPeer::start(
                    key,
                    stream,
                    handshake,
                    Tracked::new(ctx.address(), self.metrics.clone()),
                    pex,
                    self.params().config.metrics.of(ActorKind::MetadataPeer),
                    &self.log,
                );
                self.book.connected(addr);
                self.conns.insert(
                    key,
                    Conn {
                        addr,
                        slot,
                        since: Instant::now(),
                        actor,
                        size: None,
                        in_flight: 0,
                        ready: false,
                    },
                );
            }
            Ok(_) => self.book.release_slot(slot),
            Err(e) => {
                self.book.release_slot(slot);
                // A peer that is not up yet may be later: the book redials it
                // with back-off, from the once-a-second tick.
                let retry = self.book.dial_failed(addr, Instant::now());
                debug!(self.log, "dial failed"; "addr" => %addr, "error" => %e, "retry" => ?retry);
            }
        }
    }

    fn start_trackers(&mut self, ctx: &mut Context<Self>) {
        let key: u32 = rand::random();
        for url in self.tiers.initial() {
            self.start_tracker(&url, key, ctx);
        }
    }

    fn start_tracker(&mut self, url: &str, key: u32, ctx: &mut Context<Self>) {
        let config = &self.params().config;
        let (peer_id, port, floor) = (
            config.peer_id,
            config.listen.port(),
            config.min_announce_interval,
        );
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(e) => {
                info!(self.log, "unusable tracker URL"; "url" => url);
                let change = self.tracker_board.unusable(url, format!("not a url: {e}"));
                self.tracker_changed(change);
                return;
            }
        };
        let mut tracker_config = TrackerConfig::new(parsed, self.info_hash, peer_id, port, key)
            .with_timeouts(&self.params().config.tracker);
        tracker_config.interval_floor = floor;
        tracker_config.metrics = self.params().config.metrics.of(ActorKind::Tracker);
        let me = ctx.address();
        let links = TrackerLinks {
            peers: me.clone().recipient(),
            stats: me.clone().recipient(),
            announcing: me.clone().recipient(),
            report: me.recipient(),
        };
        match Tracker::new(tracker_config, links, self.log.clone()) {
            Ok(tracker) => {
                let tracker = Tracked::new(
                    tracker.start(),
                    self.params().config.metrics.of(ActorKind::Tracker),
                );
                tracker.do_send(TrackerStart);
                self.trackers.push(tracker);
            }
            Err(e) => {
                info!(self.log, "unusable tracker"; "url" => url, "error" => %e);
                let change = self.tracker_board.unusable(url, e.to_string());
                self.tracker_changed(change);
            }
        }
    }

    /// Tells the front end about a tracker whose status changed, while fetching; once the
    /// Coordinator takes over, its own trackers are the ones to show.
    fn tracker_changed(&self, change: Option<TrackerStatus>) {
        if let (Some(status), Some(params), true) = (change, &self.params, self.fetching()) {
            params.events.do_send(TorrentEvent::Tracker(status));
        }
    }

    fn lookup_dht(&mut self, ctx: &mut Context<Self>) {
        let Some(dht) = self.params().dht.clone() else {
            return;
        };
        self.last_dht = Some(Instant::now());
        dht.lookup.do_send(DhtLookup {
            info_hash: self.info_hash,
            // Nothing to serve until the metadata is in; the Coordinator announces.
            announce_port: None,
            reply: ctx.address().recipient(),
        });
    }

    /// Gives every ready peer requests up to its share.
    fn assign(&mut self) {
        if !self.fetching() {
            return;
        }
        if self.layers.is_some() {
            return self.assign_hashes();
        }
        if self.assembler.is_none() {
            // Believe the size most peers advertise; a liar's size costs one attempt.
            let mut counts: HashMap<u32, usize> = HashMap::new();
            for c in self.conns.values() {
                if let Some(size) = c.size {
                    *counts.entry(size).or_default() += 1;
                }
            }
            let best = counts.into_iter().max_by_key(|&(size, n)| (n, size));
            self.assembler = best.and_then(|(size, _)| MetadataAssembler::new(self.expected, size));
        }
        let Some(assembler) = self.assembler.as_mut() else {
            return;
        };
        let now = Instant::now();
        let mut keys: Vec<PeerKey> = self.conns.keys().copied().collect();
        keys.sort();
        for key in keys {
            let conn = self.conns.get_mut(&key).expect("key from the map");
            if conn.size != Some(assembler.size()) {
                continue;
            }
            while conn.in_flight < REQUESTS_PER_PEER {
                let Some(piece) = assembler.next_request(key, now) else {
                    break;
                };
                conn.in_flight += 1;
                conn.actor.do_send(ToMetadataPeer::Request(piece));
            }
        }
    }

    fn ban(&mut self, key: PeerKey, why: &str) {
        if let Some(conn) = self.conns.get(&key) {
            warn!(self.log, "peer sent metadata that does not match the torrent; dropped"; "addr" => %conn.addr, "why" => why);
            self.book.ban(conn.addr);
            conn.actor
                .do_send(ToMetadataPeer::Disconnect(why.to_string()));
        }
        if let Some(a) = self.assembler.as_mut() {
            a.forget(key);
        }
        if let Some(l) = self.layers.as_mut() {
            l.forget(key);
        }
    }

    fn progress(&self) -> Progress {
        // While piece layers are fetched, a source is a ready peer not yet found unable
        // to give them.
        let peers = if self.layers.is_some() {
            let now = Instant::now();
            self.conns
                .values()
                .filter(|c| c.ready && !self.no_layers.contains(&c.addr, now))
                .count()
        } else {
            self.conns.values().filter(|c| c.size.is_some()).count()
        };
        Progress {
            phase: Phase::Metadata,
            peers,
            ..Progress::default()
        }
    }

    /// Gives every ready peer that may have them hash requests for the piece layers, up
    /// to its share.
    fn assign_hashes(&mut self) {
        let Some(layers) = self.layers.as_mut() else {
            return;
        };
        let now = Instant::now();
        let mut keys: Vec<PeerKey> = self.conns.keys().copied().collect();
        keys.sort();
        for key in keys {
            let Some(conn) = self.conns.get(&key) else {
                continue;
            };
            if !conn.ready || self.no_layers.contains(&conn.addr, now) {
                continue;
            }
            while layers.asked_of(key) < HASH_REQUESTS_PER_PEER {
                let Some(request) = layers.next_request(key, now) else {
                    break;
                };
                conn.actor.do_send(ToMetadataPeer::AskHashes(request));
            }
        }
    }

    /// A peer that cannot or will not give the piece layers: closed, its ranges asked of
    /// others, and not asked again. With `lied`, it sent nodes that do not hash up to
    /// the root: banned, as a peer that lies about the metadata is.
    fn drop_for_layers(&mut self, key: PeerKey, why: &str, lied: bool) {
        if let Some(l) = self.layers.as_mut() {
            l.forget(key);
        }
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        self.no_layers.record(conn.addr, Instant::now());
        if lied {
            warn!(self.log, "peer sent piece-layer hashes that do not prove; dropped"; "addr" => %conn.addr, "why" => why);
            self.book.ban(conn.addr);
        } else {
            info!(self.log, "peer gives no piece layers; dropped"; "addr" => %conn.addr, "why" => why);
        }
        conn.actor
            .do_send(ToMetadataPeer::Disconnect(why.to_string()));
    }

    /// The info dictionary hashes right. A v1 or hybrid torrent, or a v2 one whose files
    /// are at most a piece each, is complete: hand it over. A v2 one with longer files
    /// needs their piece layers first, from peers.
    fn metadata_verified(&mut self, info: Bytes, ctx: &mut Context<Self>) {
        let trackers = self.params().magnet.trackers.clone();
        let torrent = Bytes::from(torrent_file_bytes(&info, &trackers, &[]));
        let missing_layer = matches!(
            Metainfo::from_bytes(&torrent),
            Err(MetainfoError::V2(V2Error::MissingPieceLayer(_)))
        );
        if !missing_layer {
            return self.hand_over(torrent, ctx);
        }
        let fetch = V2Info::from_info_bytes(&info)
            .map_err(|e| e.to_string())
            .and_then(|v2| LayerFetch::new(&v2).map_err(|e| e.to_string()));
        match fetch {
            Ok(Some(layers)) => {
                let (_, ranges) = layers.progress();
                info!(self.log, "metadata verified; fetching the piece layers"; "bytes" => info.len(), "requests" => ranges);
                self.info = Some(info);
                self.layers = Some(layers);
                self.assembler = None;
                for conn in self.conns.values_mut() {
                    conn.in_flight = 0;
                }
                self.assign();
            }
            // Not reached: a missing layer means a file longer than a piece.
            Ok(None) => self.hand_over(torrent, ctx),
            Err(e) => self.fail(
                format!("the metadata matches the info-hash but its piece layers cannot be fetched: {e}"),
                ctx,
            ),
        }
    }

    /// Every piece layer is in and proven: the `.torrent` gets them and is handed over.
    fn layers_complete(&mut self, ctx: &mut Context<Self>) {
        let (Some(info), Some(layers)) = (
            self.info.take(),
            self.layers.as_ref().and_then(LayerFetch::layers),
        ) else {
            return;
        };
        info!(self.log, "piece layers received"; "files" => layers.len());
        let trackers = self.params().magnet.trackers.clone();
        let torrent = Bytes::from(torrent_file_bytes(&info, &trackers, &layers));
        self.layers = None;
        self.hand_over(torrent, ctx);
    }

    /// The magnet cannot become a torrent: the front end hears why, and fetching stops.
    fn fail(&mut self, why: String, ctx: &mut Context<Self>) {
        if let Some(params) = &self.params {
            params
                .events
                .do_send(TorrentEvent::Failed(FailureKind::InvalidTorrent, why));
        }
        self.stopping = true;
        let stops = self.stop_fetching(ctx);
        ctx.spawn(self.metrics.id().on(actix::fut::wrap_future(stops)));
    }

    /// Verified metadata (with a v2 torrent's piece layers): checked as any `.torrent`
    /// is, then saved, fetching stopped, the torrent started.
    fn hand_over(&mut self, torrent: Bytes, ctx: &mut Context<Self>) {
        let metainfo = match Metainfo::from_bytes(&torrent) {
            Ok(m) => m,
            Err(e) => {
                return self.fail(
                    format!("the metadata matches the info-hash but is not a usable torrent: {e}"),
                    ctx,
                )
            }
        };
        // Handed over once: a second call (none is expected) finds nothing to hand over.
        let Some(params) = self.params.take() else {
            return;
        };
        self.handing_over = true;
        info!(self.log, "metadata verified"; "name" => &metainfo.info.name, "bytes" => metainfo.info_bytes.len());
        let peers = self.handover_peers(&params.config.initial_peers);
        // A daemon keeps the metadata in its own state folder: nothing beside the download.
        let save = params.hand_over.then(|| {
            save_torrent(
                params.download_dir.clone(),
                torrent_file_name(&metainfo.info.name, &self.info_hash),
                torrent.clone(),
            )
        });
        let stops = self.stop_fetching(ctx);
        ctx.wait(
            self.metrics.id().on(async move {
                let saved = match save {
                    Some(save) => save.await.map(Some),
                    None => Ok(None),
                };
                // Trackers say `stopped` before the Coordinator's trackers say `started`.
                let _ = tokio::time::timeout(Duration::from_secs(5), stops).await;
                saved
            }
            .into_actor(self)
            .map(move |saved, act, ctx| {
                let torrent_file = saved.unwrap_or_else(|e| {
                    warn!(act.log, "cannot save the .torrent"; "error" => e);
                    None
                });
                act.handed_over(params, metainfo, torrent, torrent_file, peers, ctx);
            })),
        );
    }

    /// The end of [`Self::hand_over`], fetching stopped and the `.torrent` saved (at
    /// `torrent_file`, if it was): a daemon is sent the metadata and this fetcher stops;
    /// `get` is told of it and the torrent's Coordinator starts, with `peers` learned here.
    fn handed_over(
        &mut self,
        params: MagnetParams,
        metainfo: Metainfo,
        torrent: Bytes,
        torrent_file: Option<PathBuf>,
        peers: Vec<SocketAddr>,
        ctx: &mut Context<Self>,
    ) {
        let name = metainfo.info.name.clone();
        let total_bytes = metainfo.info.layout.total_length();
        if !params.hand_over {
            // The daemon starts the torrent itself, from the metadata sent here.
            params.events.do_send(TorrentEvent::MetadataReceived {
                name,
                total_bytes,
                torrent_file,
                torrent,
                metainfo: Some(std::sync::Arc::new(metainfo)),
            });
            self.stopping = true;
            self.handing_over = false;
            ctx.stop();
            return;
        }
        params.events.do_send(TorrentEvent::MetadataReceived {
            name,
            total_bytes,
            torrent_file,
            torrent,
            metainfo: None,
        });
        let mut config = params.config;
        config.learned_peers = peers;
        let selection = params.selection.or(params.magnet.select_only.clone());
        let layout = Arc::new(metainfo.info.layout.clone());
        let events = params.events.clone();
        let coordinator = Coordinator::start(TorrentParams {
            metainfo,
            download_dir: params.download_dir,
            config,
            selection,
            high_priority: Vec::new(),
            dht: params.dht,
            events: params.events,
            log: params.log,
        });
        events.do_send(TorrentEvent::Running {
            source: StreamSource {
                read: coordinator.clone().recipient(),
                close: coordinator.clone().recipient(),
                layout,
            },
        });
        self.coordinator = Some(coordinator);
        self.handing_over = false;
    }

    /// Every address learned and not banned, for the Coordinator: the ones that answered
    /// first, the user's own (`initial_peers`, which the Coordinator dials anyway) left
    /// out. Linear in the book, which is bounded.
    fn handover_peers(&self, initial: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut seen: HashSet<SocketAddr> = initial.iter().copied().collect();
        let connected = self.conns.values().map(|c| c.addr);
        connected
            .chain(self.book.known())
            .filter(|a| !self.book.is_banned(a) && seen.insert(*a))
            .collect()
    }

    /// Closes every fetch connection and stops the trackers; the returned future ends
    /// when their `stopped` announces are done.
    fn stop_fetching(&mut self, _: &mut Context<Self>) -> impl std::future::Future<Output = ()> {
        for conn in self.conns.values() {
            conn.actor
                .do_send(ToMetadataPeer::Disconnect("metadata phase over".into()));
        }
        let stops: Vec<_> = self
            .trackers
            .drain(..)
            .map(|t| t.send(TrackerStop))
            .collect();
        async move {
            futures::future::join_all(stops).await;
        }
    }
}

/// A `.torrent` of the fetched info dictionary (its original bytes, so the info-hash is
/// unchanged), the magnet's trackers, one tier each, and for a v2 torrent the `piece
/// layers` fetched from peers, by `pieces root`.
fn torrent_file_bytes(
    info: &[u8],
    trackers: &[String],
    layers: &[(Hash256, Vec<Hash256>)],
) -> Vec<u8> {
    let mut entries = Vec::new();
    if let Some(first) = trackers.first() {
        entries.push(("announce", BValue::string(first)));
        entries.push((
            "announce-list",
            BValue::List(
                trackers
                    .iter()
                    .map(|t| BValue::List(vec![BValue::string(t)]))
                    .collect(),
            ),
        ));
    }
    entries.push((
        "created by",
        BValue::string("torrent-actors (from a magnet link)"),
    ));
    let mut out = BValue::dict(entries).encode();
    // Keys are sorted: "info" sorts after the others, and "piece layers" after it.
    out.pop();
    out.extend_from_slice(b"4:info");
    out.extend_from_slice(info);
    if !layers.is_empty() {
        let dict = BValue::dict(
            layers
                .iter()
                .map(|(root, layer)| (root.to_vec(), BValue::Bytes(layer.concat()))),
        );
        out.extend_from_slice(b"12:piece layers");
        out.extend_from_slice(&dict.encode());
    }
    out.push(b'e');
    out
}

/// The name of the `.torrent` the fetcher saves beside a download: `NAME.torrent`, or
/// `INFOHASH.torrent` when that is not a plain file name (a name with a separator, a
/// name of dots, one too long to take the extension).
pub(crate) fn torrent_file_name(name: &str, info_hash: &crate::InfoHash) -> String {
    let by_name = format!("{name}.torrent");
    if crate::metainfo::is_plain_name(name) && crate::metainfo::is_plain_name(&by_name) {
        by_name
    } else {
        format!("{}.torrent", info_hash.to_hex())
    }
}

/// Saves the fetched `.torrent` as `file_name` in `dir`, off the actor's thread, and
/// says where.
async fn save_torrent(dir: PathBuf, file_name: String, torrent: Bytes) -> Result<PathBuf, String> {
    let path = dir.join(&file_name);
    let write = tokio::task::spawn_blocking(move || save_atomically(&dir, &file_name, &torrent));
    match write.await {
        Ok(Ok(())) => Ok(path),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `bytes` as `file_name` in `dir` (made if need be) through a temporary file,
/// beneath the folder's handle: a link planted under that name is replaced, never
/// followed.
fn save_atomically(dir: &Path, file_name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let jail = crate::engine::jail::Jail::create(dir)?;
    let tmp = format!(".{:016x}.torrent.tmp", rand::random::<u64>());
    jail.write_atomically(&[file_name], &tmp, bytes)
}

impl Actor for MetadataFetcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.log, "fetching metadata"; "trackers" => self.params().magnet.trackers.len(), "peers" => self.params().magnet.peers.len());
        let magnet_peers = self.params().magnet.peers.clone();
        self.book.take_found(&magnet_peers, &PeerSource::Magnet);
        for addr in self.params().config.initial_peers.clone() {
            let _ = self.book.allow(addr);
        }
        // `x.pe` host names are resolved here, off the front end, without blocking the arbiter.
        let hosts = self.params().magnet.peer_hosts.clone();
        for (host, port) in hosts {
            let lookup = async move {
                tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(|addrs| addrs.collect::<Vec<_>>())
            };
            ctx.spawn(
                self.metrics
                    .id()
                    .on(lookup.into_actor(self).map(|res, act, ctx| {
                        if let Ok(addrs) = res {
                            act.hosts_resolved(addrs, ctx);
                        }
                    })),
            );
        }
        self.start_trackers(ctx);
        self.lookup_dht(ctx);
        self.bind_utp_then_dial(ctx);
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            if !act.fetching() {
                return;
            }
            act.params()
                .events
                .do_send(TorrentEvent::Progress(act.progress()));
            if act.last_dht.is_some_and(|t| t.elapsed() >= DHT_RETRY) {
                act.lookup_dht(ctx);
            }
            // A peer sitting on a hash request is dropped and its ranges asked of others.
            if let Some(layers) = &act.layers {
                for key in layers.overdue(Instant::now()) {
                    act.drop_for_layers(key, "left a hash request unanswered", false);
                }
            }
            // Late requests may go to other peers now.
            act.assign();
            act.dial(ctx);
        });
    }
}

impl Handler<PeersFound> for MetadataFetcher {
    type Result = ();

    fn handle(&mut self, msg: PeersFound, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_unqueued("PeersFound");
        if !self.fetching() {
            return;
        }
        let taken = self.book.take_found(&msg.peers, &msg.source);
        debug!(self.log, "peers found"; "count" => msg.peers.len(), "source" => ?msg.source,
               "new" => taken.added, "over_cap" => taken.over_cap, "refused" => taken.refused);
        self.dial(ctx);
    }
}

impl Handler<MetadataPeerReady> for MetadataFetcher {
    type Result = ();

    fn handle(&mut self, msg: MetadataPeerReady, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<MetadataPeerReady>();
        let Some(conn) = self.conns.get_mut(&msg.key) else {
            return;
        };
        conn.ready = true;
        if self.layers.is_some() {
            // The metadata is in; any v2 peer may have the piece layers.
            if self.no_layers.contains(&conn.addr, Instant::now()) {
                conn.actor.do_send(ToMetadataPeer::Disconnect(
                    "gave no piece layers before".into(),
                ));
            } else {
                conn.size = msg.metadata_size;
                self.assign();
            }
            return;
        }
        match msg.metadata_size {
            Some(size) if MetadataAssembler::new(self.expected, size).is_some() => {
                debug!(self.log, "peer offers metadata"; "addr" => %conn.addr, "size" => size);
                conn.size = Some(size);
                self.assign();
            }
            Some(size) => {
                conn.actor.do_send(ToMetadataPeer::Disconnect(format!(
                    "metadata size {size} out of range"
                )));
            }
            // It may have the torrent but not the metadata extension; the Coordinator will
            // dial it again once we know the pieces.
            None => conn
                .actor
                .do_send(ToMetadataPeer::Disconnect("no metadata to offer".into())),
        }
    }
}

impl Handler<MetadataFromPeer> for MetadataFetcher {
    type Result = ();

    fn handle(&mut self, msg: MetadataFromPeer, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<MetadataFromPeer>();
        if !self.fetching() {
            return;
        }
        let Some(conn) = self.conns.get_mut(&msg.key) else {
            return;
        };
        conn.in_flight = conn.in_flight.saturating_sub(1);
        if self.layers.is_some() {
            return;
        }
        let Some(assembler) = self.assembler.as_mut() else {
            return;
        };
        let outcome = match msg.message {
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => {
                if total_size != assembler.size() {
                    self.ban(msg.key, "metadata size changed mid-fetch");
                    return self.assign();
                }
                assembler.received(msg.key, piece, data)
            }
            MetadataMessage::Reject { piece } => {
                assembler.rejected(msg.key, piece);
                // A peer that rejects does not have it (BEP 9); ask the others.
                conn.size = None;
                conn.actor.do_send(ToMetadataPeer::Disconnect(
                    "rejected a metadata request".into(),
                ));
                None
            }
            MetadataMessage::Request { .. } => None,
        };
        match outcome {
            Some(Assembled::Verified(bytes)) => self.metadata_verified(bytes, ctx),
            Some(Assembled::Mismatch { liar }) => {
                match liar {
                    Some(key) => self.ban(key, "metadata does not match the info-hash"),
                    None => {
                        warn!(self.log, "metadata from several peers does not match the info-hash; asking one peer at a time")
                    }
                }
                for conn in self.conns.values_mut() {
                    conn.in_flight = 0;
                }
                // The liar's size may have been the one believed: decide again.
                if !self.conns.iter().any(|(k, c)| {
                    Some(*k) != liar && c.size == self.assembler.as_ref().map(|a| a.size())
                }) {
                    self.assembler = None;
                }
                self.assign();
            }
            None => self.assign(),
        }
    }
}

impl Handler<MetadataPeerLeft> for MetadataFetcher {
    type Result = ();

    fn handle(&mut self, msg: MetadataPeerLeft, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<MetadataPeerLeft>();
        let Some(conn) = self.conns.remove(&msg.key) else {
            return;
        };
        debug!(self.log, "metadata peer left"; "addr" => %conn.addr, "reason" => &msg.reason);
        self.book.release_slot(conn.slot);
        if self.fetching() {
            self.book
                .disconnected(conn.addr, conn.since.elapsed(), Instant::now());
        }
        if let Some(a) = self.assembler.as_mut() {
            a.forget(msg.key);
        }
        if let Some(l) = self.layers.as_mut() {
            l.forget(msg.key);
        }
        self.assign();
        self.dial(ctx);
    }
}

impl Handler<HashesFromPeer> for MetadataFetcher {
    type Result = ();

    fn handle(&mut self, msg: HashesFromPeer, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<HashesFromPeer>();
        if !self.fetching() || !self.conns.contains_key(&msg.key) {
            return;
        }
        let Some(layers) = self.layers.as_mut() else {
            // Nothing was asked: a `hashes` out of the blue breaks the protocol.
            if matches!(msg.answer, HashAnswer::Hashes(_)) {
                if let Some(conn) = self.conns.get(&msg.key) {
                    conn.actor.do_send(ToMetadataPeer::Disconnect(
                        "hashes for a range never asked for".into(),
                    ));
                }
            }
            return;
        };
        match msg.answer {
            HashAnswer::Reject(request) => {
                if layers.rejected(msg.key, &request) {
                    self.drop_for_layers(msg.key, "rejected a hash request", false);
                }
            }
            HashAnswer::Hashes(hashes) => match layers.received(msg.key, &hashes) {
                Answered::Kept => {}
                Answered::Complete => return self.layers_complete(ctx),
                Answered::Unasked => {
                    if let Some(conn) = self.conns.get(&msg.key) {
                        conn.actor.do_send(ToMetadataPeer::Disconnect(
                            "hashes for a range never asked for".into(),
                        ));
                    }
                    if let Some(l) = self.layers.as_mut() {
                        l.forget(msg.key);
                    }
                }
                Answered::Refuted => self.drop_for_layers(
                    msg.key,
                    "piece-layer hashes that do not hash up to the file's root",
                    true,
                ),
            },
        }
        self.assign();
    }
}

impl Handler<GetAnnounceStats> for MetadataFetcher {
    type Result = MessageResult<GetAnnounceStats>;

    fn handle(&mut self, _: GetAnnounceStats, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_unqueued("GetAnnounceStats");
        // The size is unknown; a nonzero `left` keeps us a leecher in the tracker's eyes.
        MessageResult(AnnounceStats {
            uploaded: 0,
            downloaded: 0,
            left: 1,
        })
    }
}

impl Handler<TrackerReport> for MetadataFetcher {
    type Result = ();

    fn handle(&mut self, msg: TrackerReport, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_unqueued("TrackerReport");
        msg.log(&self.log);
        let change = self.tracker_board.reported(&msg, Instant::now());
        self.tracker_changed(change);
    }
}

impl Handler<TrackerAnnouncing> for MetadataFetcher {
    type Result = ();

    fn handle(&mut self, msg: TrackerAnnouncing, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_unqueued("TrackerAnnouncing");
        let change = self.tracker_board.announcing(&msg.url);
        self.tracker_changed(change);
    }
}

impl Handler<GetTrackers> for MetadataFetcher {
    type Result = ResponseFuture<Vec<TrackerStatus>>;

    fn handle(&mut self, _: GetTrackers, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_unqueued("GetTrackers");
        let ours = self.tracker_board.statuses().to_vec();
        let coordinator = self.coordinator.clone();
        Box::pin(async move {
            match coordinator {
                Some(coordinator) => coordinator.send(GetTrackers).await.unwrap_or(ours),
                None => ours,
            }
        })
    }
}

impl Handler<Shutdown> for MetadataFetcher {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_unqueued("Shutdown");
        self.stopping = true;
        if let Some(coordinator) = self.coordinator.clone() {
            return Box::pin(
                async move {
                    let _ = coordinator.send(Shutdown).await;
                }
                .into_actor(self)
                .map(|(), _, ctx: &mut Context<Self>| ctx.stop()),
            );
        }
        let stops = self.stop_fetching(ctx);
        Box::pin(
            async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), stops).await;
            }
            .into_actor(self)
            .map(|(), _, ctx: &mut Context<Self>| ctx.stop()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode;

    #[test]
    fn the_saved_torrent_keeps_the_info_bytes_and_lists_the_trackers() {
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let bytes = torrent_file_bytes(info, &["udp://127.0.0.1:1/announce".to_string()], &[]);
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info_bytes, info.to_vec());
        assert_eq!(
            m.trackers,
            vec![vec!["udp://127.0.0.1:1/announce".to_string()]]
        );
        // Canonical: sorted keys, so re-encoding is byte-identical.
        assert!(bencode::decode(&bytes).is_ok());
        let no_trackers = torrent_file_bytes(info, &[], &[]);
        assert!(Metainfo::from_bytes(&no_trackers)
            .unwrap()
            .trackers
            .is_empty());
    }

    #[test]
    fn piece_layers_go_after_info_and_the_torrent_reads_as_a_v2_torrent() {
        use crate::metainfo::merkle;
        // One file of three 16 KiB pieces: its leaves are its piece layer.
        let data: Vec<u8> = (0..3 * 16384 + 100).map(|i| (i % 253) as u8).collect();
        let leaves = merkle::leaf_hashes(&data);
        let root = merkle::file_root(&leaves).unwrap();
        let layer = merkle::piece_layer(&leaves, 16384).unwrap();
        let mut info = b"d9:file treed1:ad0:d6:lengthi".to_vec();
        info.extend_from_slice(format!("{}e11:pieces root32:", data.len()).as_bytes());
        info.extend_from_slice(&root);
        info.extend_from_slice(b"eee12:meta versioni2e4:name1:a12:piece lengthi16384ee");
        assert!(matches!(
            Metainfo::from_bytes(&torrent_file_bytes(&info, &[], &[])),
            Err(MetainfoError::V2(V2Error::MissingPieceLayer(_)))
        ));
        let bytes = torrent_file_bytes(&info, &[], &[(root, layer.clone())]);
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert!(m.info.v2_only);
        assert_eq!(m.info_bytes, info);
        let mut wrong = layer;
        wrong[1][0] ^= 1;
        assert!(Metainfo::from_bytes(&torrent_file_bytes(&info, &[], &[(root, wrong)])).is_err());
    }

    /// Swallows a fetcher's events.
    struct Sink;

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<TorrentEvent> for Sink {
        type Result = ();

        fn handle(&mut self, _: TorrentEvent, _: &mut Context<Self>) {}
    }

    fn test_params(events: Recipient<TorrentEvent>) -> MagnetParams {
        let magnet = Magnet::parse(
            "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&x.pe=localhost:6881",
        )
        .expect("a valid magnet");
        MagnetParams {
            magnet,
            download_dir: PathBuf::from("/nonexistent"),
            config: EngineConfig::new(
                crate::PeerId(*b"-TA0000-000000000000"),
                SocketAddr::from(([127, 0, 0, 1], 1)),
            ),
            selection: None,
            dht: None,
            pex: false,
            hand_over: true,
            events,
            log: Logger::root(slog::Discard, o!()),
        }
    }

    /// Regression: an `x.pe` host name that resolved after the metadata was in reached
    /// `add_candidate`, whose `params()` panicked on the parameters the hand-over took.
    #[test]
    fn an_x_pe_name_resolved_after_the_hand_over_is_ignored() {
        let system = actix::System::new();
        system.block_on(async {
            let sink = Sink.start().recipient();
            let late = vec![SocketAddr::from(([127, 0, 0, 1], 6881))];
            // During the hand-over (the `.torrent` being saved) and after it (the daemon's
            // fetcher, stopped after its event): the parameters are gone in both.
            for stopped in [false, true] {
                let mut fetcher = MetadataFetcher::new(test_params(sink.clone()));
                let mut ctx = Context::new();
                fetcher.params = None;
                fetcher.handing_over = !stopped;
                fetcher.stopping = stopped;
                fetcher.hosts_resolved(late.clone(), &mut ctx);
                assert_eq!(fetcher.book.known_count(), 0);
            }
        });
    }

    /// Regression: one tracker reply can list about 350,000 peers (a 2 MiB compact
    /// body); every one was kept, and the hand-over then checked each against a list of
    /// the others (quadratic).
    #[test]
    fn a_huge_tracker_reply_is_cut_to_the_per_reply_cap() {
        let system = actix::System::new();
        system.block_on(async {
            let sink = Sink.start().recipient();
            let mut fetcher = MetadataFetcher::new(test_params(sink));
            let mut ctx = Context::new();
            let peers: Vec<SocketAddr> = (1..=350_000u32)
                .map(|i| SocketAddr::from(((10 << 24 | i).to_be_bytes(), 6881)))
                .collect();
            let found = PeersFound {
                peers,
                source: PeerSource::Tracker("http://127.0.0.1:1/announce".into()),
            };
            Handler::handle(&mut fetcher, found, &mut ctx);
            let kept = fetcher.book.known_count();
            assert!(
                kept <= crate::engine::address_book::MAX_PEERS_PER_TRACKER_REPLY,
                "{kept} addresses kept from one reply"
            );
            // More replies fill the book to its bound, no further, and the hand-over
            // list stays within it.
            for round in 0..30u32 {
                let peers: Vec<SocketAddr> = (1..=1000u32)
                    .map(|i| SocketAddr::from(((11 << 24 | round << 12 | i).to_be_bytes(), 6881)))
                    .collect();
                let found = PeersFound {
                    peers,
                    source: PeerSource::Tracker("http://127.0.0.1:1/announce".into()),
                };
                Handler::handle(&mut fetcher, found, &mut ctx);
            }
            let handed = fetcher.handover_peers(&[]);
            assert!(handed.len() <= crate::engine::address_book::MAX_KNOWN);
            assert_eq!(
                handed.len(),
                handed.iter().collect::<HashSet<_>>().len(),
                "the hand-over list repeats addresses"
            );
        });
    }

    #[test]
    fn torrent_file_names_never_leave_the_folder() {
        let h = crate::InfoHash([0xab; 20]);
        assert_eq!(torrent_file_name("movie", &h), "movie.torrent");
        let long = "a".repeat(250);
        for bad in ["", ".", "..", "a/b", "/etc", long.as_str()] {
            assert_eq!(
                torrent_file_name(bad, &h),
                format!("{}.torrent", h.to_hex())
            );
        }
    }
}
