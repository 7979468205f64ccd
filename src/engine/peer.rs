//! The Peer actor: one per TCP connection, after the handshake.
//!
//! It owns the socket (read half as a stream of decoded messages, write half as a
//! `FramedWrite`), the choke and interest state of both sides, the requests it has sent and
//! not had answered, and the keep-alive and timeout clocks. It turns wire messages into
//! typed messages to the Coordinator and the PieceManager, and keeps its request pipeline
//! full: the target depth is sized from the measured round trip and grows as TCP's window
//! does while the peer keeps up (see [`super::request_queue`]), with the rate measured once
//! a second (about 1.5 s worth of blocks) as a floor, capped by the peer's `reqq`.
//!
//! Backpressure, by credit: the blocks read in one turn of the socket (until its stream
//! yields, at most half the credit) are handed to the PieceManager together
//! (`StoreBlocks`), whose reply gives their bytes back as credit; the PieceManager holds
//! replies while too much data waits for hash and write. A Peer holding
//! [`STORE_CREDIT`] bytes or more not yet taken asks for no more blocks: the peer runs
//! out of requests to answer, and the flow stops at its source. The socket is still
//! read, so the peer's own requests, cancels, `have`s and keep-alives are heard, uploads
//! go on, and the timers run. No handler here waits on a reply. (Pausing the socket's
//! read half instead would stop uploads to that peer too: its requests would go unread.)
//!
//! Uploads: requests from a peer we have unchoked are checked (piece verified, block inside
//! the piece, at most 16 KiB) and queued, at most [`UPLOAD_QUEUE_LIMIT`]; one window of at
//! most [`READ_WINDOW`] is read at a time by the torrent's FileReader, and the write buffer
//! pauses this actor above [`WRITE_HIGH_WATER`] until the socket drains (see
//! [`PauseOnFullSocket`]). So a peer that requests a lot costs a bounded amount of memory.
//!
//! What it must not do: pick pieces (the Coordinator does), hold piece data (the
//! PieceManager does), or touch the filesystem.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::transport::{PeerStream, PeerWriteHalf};
use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use bytes::Bytes;
use slog::{debug, info, o, warn, Logger};
use tokio::io::AsyncWrite;
use tokio_util::codec::FramedRead;

use super::coordinator::Coordinator;
use super::limiter::RateLimiter;
use super::messages::{
    DhtNodeSeen, Direction, Grant, LeafHashes, Lease, PeerBitfield, PeerChokedUs, PeerHaves,
    PeerInterest, PeerJoined, PeerLeft, PeerListenPort, PeerMisbehaved, PeerSource, PeerStats,
    PeerUnchokedUs, PeersFound, PickBlocks, Picked, ReadBlock, ReceivedBlock, StoreBlocks, ToPeer,
};
use super::metrics::{ActorMetrics, OwnMetrics, Tracked, TrackedRecipient};
use super::piece_manager::PieceManager;
use super::request_queue::RequestQueue;
use super::storage::FileReader;
use super::PeerKey;
use crate::layout::{Layout, PieceIndex, BLOCK_SIZE};
use crate::wire::ext::{self, ExtHandshake, MetadataMessage, PexMessage};
use crate::wire::{Bitfield, BlockRequest, Handshake, Message, MessageCodec, WireError};
use crate::PeerId;

/// Tunables of one connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerConfig {
    /// The fewest requests kept outstanding, whatever the measured rate.
    pub min_queue: usize,
    /// The most requests kept outstanding, whatever the peer advertises.
    pub max_queue: usize,
    /// How many seconds of transfer at the measured rate the queue should hold.
    pub queue_seconds: f64,
    /// With requests outstanding and no block for this long, the peer is dropped.
    pub request_timeout: Duration,
    /// With nothing received at all for this long, the peer is dropped.
    pub idle_timeout: Duration,
    /// A keep-alive goes out after this long without sending anything.
    pub keepalive: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            min_queue: 16,
            max_queue: 1000,
            queue_seconds: 1.5,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(150),
            keepalive: Duration::from_secs(60),
        }
    }
}

/// The request queue limit a peer is assumed to accept until it says otherwise; the
/// usual default of clients that do not send `reqq`.
const DEFAULT_REQQ: usize = 250;

/// Requests from one peer queued for upload; more are dropped. Sent as our `reqq`.
/// BEP 52 hash requests a Peer keeps track of at once (one per failed v2 piece asked
/// about); the oldest is forgotten past it, and its late answer then bans the peer.
const MAX_ASKED_HASHES: usize = 16;

/// BEP 52 hash requests one connection gets answered; the rest are rejected. A peer
/// fetching every piece layer asks about one request per 512 pieces, so this covers
/// any torrent many times over while bounding what one connection can make us send.
const MAX_HASH_ANSWERS: u32 = 4096;

pub const UPLOAD_QUEUE_LIMIT: usize = 500;

/// How much of a piece is read at once for one peer's uploads: the following requests of
/// a peer are usually the next blocks of the same piece, so one read serves many of them.
pub const READ_WINDOW: u32 = 256 * 1024;

/// Bytes of blocks a Peer may have handed to the PieceManager and not yet had taken
/// (the PieceManager's `StoreBlocks` reply gives them back); at this much the Peer asks
/// for no more blocks until some come back. Eight blocks: enough not to starve the
/// pipeline while the PieceManager is merely busy. (The blocks themselves are of pieces
/// in progress, which the Coordinator's budget bounds.)
pub const STORE_CREDIT: u64 = 8 * BLOCK_SIZE as u64;

/// Bytes buffered for one peer's socket above which the actor pauses until they drain to
/// [`WRITE_LOW_WATER`].
pub const WRITE_HIGH_WATER: usize = 256 * 1024;

/// See [`WRITE_HIGH_WATER`].
pub const WRITE_LOW_WATER: usize = 64 * 1024;

/// A peer's `ut_pex` messages are used at most this often (BEP 11 asks for one a
/// minute; a little slack allows for timer drift).
pub const PEX_MIN_INTERVAL: Duration = Duration::from_secs(45);

/// The id under which we ask peers to send us `ut_metadata` messages.
pub const OUR_UT_METADATA: u8 = 1;

/// The id under which we ask peers to send us `ut_pex` messages.
pub const OUR_UT_PEX: u8 = 2;

/// Blocks a peer may send that we never asked for (nor cancelled, nor voided by a choke)
/// before it is dropped and banned.
pub const UNREQUESTED_BLOCKS_LIMIT: u32 = 64;

/// `choke` messages a peer may send in one second; more is a flood, and the peer is
/// dropped and banned. Honest peers rechoke every ten seconds.
pub const CHOKES_PER_SECOND_LIMIT: u32 = 20;

/// Newly announced pieces go to the Coordinator at most once per this interval, as one
/// [`PeerHaves`] batch: a peer flooding `have`s costs the Coordinator at most ten
/// messages a second, and at most its piece count of pieces over the connection.
pub const HAVE_BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// `have`s for pieces the peer had already announced, tolerated per connection (a `have`
/// crossing the peer's own bitfield is an honest race); one more and the peer is dropped
/// and banned. So a peer sends at most its piece count plus this many `have`s.
pub const DUPLICATE_HAVES_LIMIT: u32 = 256;

/// Our extension handshake: the extensions we speak (`ut_pex` only where peer exchange
/// is allowed), our client name and request queue, and what we know of the torrent and
/// the peer.
pub fn our_ext_handshake(
    metadata_size: Option<u32>,
    pex: bool,
    listen_port: Option<u16>,
    your_ip: Option<std::net::IpAddr>,
) -> ExtHandshake {
    let mut extensions = std::collections::BTreeMap::new();
    extensions.insert(ext::UT_METADATA.to_string(), OUR_UT_METADATA);
    if pex {
        extensions.insert(ext::UT_PEX.to_string(), OUR_UT_PEX);
    }
    ExtHandshake {
        extensions,
        client: Some(concat!("torrent-actors ", env!("CARGO_PKG_VERSION")).to_string()),
        reqq: Some(UPLOAD_QUEUE_LIMIT as u32),
        metadata_size,
        listen_port,
        your_ip,
    }
}

/// See the module documentation.
pub struct Peer {
    key: PeerKey,
    addr: SocketAddr,
    layout: Arc<Layout>,
    config: PeerConfig,
    coordinator: Tracked<Coordinator>,
    piece_manager: Tracked<PieceManager>,
    reader: Tracked<FileReader>,
    limiter: Option<Tracked<RateLimiter>>,
    /// BEP 52 hash requests we sent and the failed piece each is for, oldest first, at
    /// most [`MAX_ASKED_HASHES`]: a `hashes` answering none of them is a protocol error.
    asked_hashes: Vec<(crate::wire::HashRequest, PieceIndex)>,
    /// The counters of all Peers (see `engine::metrics`), and this one's place in them.
    metrics: OwnMetrics,
    /// The write half; buffered writes, flushed by actix, bounded by the watermarks.
    out: Option<FramedWrite<Message, PauseOnFullSocket, MessageCodec>>,
    /// The peer's handshake, kept for its id and reserved bits.
    handshake: Handshake,
    /// Accepted by the Coordinator; until then nothing but the handshake has been sent.
    joined: bool,
    /// Both sides set the fast-extension bit (BEP 6): `have-all`/`have-none`, explicit
    /// rejects, and a choke that does not void requests by itself.
    fast: bool,
    /// The peer chokes us.
    choked: bool,
    /// We choke the peer (the Coordinator's choker decides).
    choking: bool,
    /// The peer wants our data.
    peer_interested: bool,
    /// Our verified pieces, as told by the Coordinator: requests for others are refused.
    our_pieces: Bitfield,
    /// Pieces this fast peer may fetch from us even while we choke it (BEP 6).
    allowed_fast: Vec<u32>,
    /// The peer's requests waiting to be read and sent, oldest first.
    upload_queue: VecDeque<BlockRequest>,
    /// A read for uploads is under way.
    reading: bool,
    /// An upload waits for the rate limiter.
    granting: bool,
    /// The last window read: piece, offset of its first byte in the piece, data.
    window: Option<(u32, u32, bytes::Bytes)>,
    /// Payload bytes sent, since the last stats report.
    uploaded_window: u64,
    /// Requests that broke the rules (out of range, while choked, not ours); many of them
    /// end the connection.
    bad_requests: u32,
    /// We told the peer we are interested.
    interested: bool,
    /// Requests sent and not yet answered, oldest first, each with the attempt at its
    /// piece it was handed out for (told to the PieceManager with the block).
    outstanding: VecDeque<Lease>,
    /// Requests we cancelled or a choke voided, whose blocks may still be on the way:
    /// such a block is late, not unasked. At most `max_queue` kept, newest last.
    withdrawn: VecDeque<BlockRequest>,
    /// Blocks received that were never asked for.
    unrequested_blocks: u32,
    /// `choke` messages received since the last once-a-second tick.
    chokes_this_second: u32,
    /// The pieces the peer announced (bitfield, `have-all`, `have`s), to refuse repeats
    /// and to pass on only what is new; the Coordinator keeps its own copy for picking.
    peer_pieces: Bitfield,
    /// The peer said something about its pieces already: a later bitfield is a repeat.
    announced: bool,
    /// Newly announced pieces not yet sent to the Coordinator.
    new_haves: Vec<PieceIndex>,
    /// A [`PeerHaves`] batch is due (a timer is set), and when the last one went.
    haves_due: bool,
    haves_sent_at: Option<Instant>,
    /// `have`s for pieces already announced, against [`DUPLICATE_HAVES_LIMIT`].
    duplicate_haves: u32,
    /// `PeerLeft` went to the Coordinator (normally from `stopping`; otherwise the drop
    /// sends it, so even an actor that dies by panic says goodbye).
    left_sent: bool,
    /// Blocks received and accepted since the last report to the Coordinator.
    received: Vec<Lease>,
    /// Requests given up since the last report.
    released: Vec<Lease>,
    /// A `PickBlocks` is in flight; one at a time.
    picking: bool,
    /// A `WakeUp` came while picking: ask again once the reply is in.
    wake_missed: bool,
    /// Bytes of blocks read and not yet taken by the PieceManager, whether still in
    /// `to_store` or sent ([`STORE_CREDIT`]).
    unstored: u64,
    /// Blocks read and not yet sent, sent together as one `StoreBlocks` once the socket's
    /// stream has yielded or they reach half the credit (or by `stopping`).
    to_store: Vec<ReceivedBlock>,
    /// Their leases, in the same order, reported as received once the blocks are taken.
    to_store_leases: Vec<Lease>,
    /// Out of credit since the last block was taken: counted once in the metrics.
    out_of_credit: bool,
    /// The peer's `reqq`, or the default.
    reqq: usize,
    /// Payload bytes received since the last once-a-second tick: the rate's input and
    /// the next stats report.
    downloaded_window: u64,
    /// Bytes per second, smoothed.
    rate: f64,
    /// The request queue's size, from the measured round trip and rate.
    request_queue: RequestQueue,
    last_received: Instant,
    last_block: Instant,
    last_sent: Instant,
    /// Why the connection is closing, for `PeerLeft`.
    close_reason: Option<String>,
    /// The info dictionary, served to peers that ask by `ut_metadata` (BEP 9).
    metadata: Option<Bytes>,
    /// `ut_metadata` requests answered; past a bound, the rest are rejected.
    metadata_served: u32,
    /// The trees of a v2 torrent's files, to answer `hash request`s from (BEP 52).
    trees: Option<Arc<crate::metainfo::tree_nodes::TreeNodes>>,
    /// `hash request`s answered; past [`MAX_HASH_ANSWERS`], the rest are rejected.
    hashes_served: u32,
    /// Whether peer exchange is allowed on this torrent (not private, not switched off).
    pex: bool,
    /// Where we accept peers, told in our extension handshake.
    listen_port: Option<u16>,
    /// The DHT, told about the node in a peer's `port` message; and our DHT port.
    dht: Option<(Recipient<DhtNodeSeen>, u16)>,
    /// We dialed this peer.
    outgoing: bool,
    /// The ids the peer wants our extension messages under.
    their_metadata_id: Option<u8>,
    their_pex_id: Option<u8>,
    /// What our `ut_pex` messages told this peer is connected, so the next says only
    /// what changed.
    pex_told: HashSet<SocketAddr>,
    /// When the peer's last `ut_pex` was used; more often than [`PEX_MIN_INTERVAL`] is
    /// ignored.
    pex_heard: Option<Instant>,
    log: Logger,
}

/// What a Peer needs besides its socket.
pub struct PeerParts {
    /// Who this peer is to the Coordinator: every message it sends names it.
    pub key: PeerKey,
    /// The torrent's layout, to range-check what the peer says.
    pub layout: Arc<Layout>,
    /// Limits and timeouts: the request pipeline's bounds, request and idle timeouts, keep-alive.
    pub config: PeerConfig,
    /// The torrent's Coordinator.
    pub coordinator: Tracked<Coordinator>,
    /// The torrent's PieceManager.
    pub piece_manager: Tracked<PieceManager>,
    /// The torrent's FileReader, for uploads.
    pub reader: Tracked<FileReader>,
    /// The torrent's rate limits, if any are set.
    pub limiter: Option<Tracked<RateLimiter>>,
    /// The counters of all Peers.
    pub metrics: Arc<ActorMetrics>,
    /// The raw info dictionary, to serve by `ut_metadata`.
    pub metadata: Option<Bytes>,
    /// A v2 torrent's trees, to answer `hash request`s from; `None` rejects them all.
    pub trees: Option<Arc<crate::metainfo::tree_nodes::TreeNodes>>,
    /// Whether peer exchange is allowed.
    pub pex: bool,
    /// Our listen port, if we listen.
    pub listen_port: Option<u16>,
    /// The DHT and our DHT node's port, if it runs for this torrent.
    pub dht: Option<(Recipient<DhtNodeSeen>, u16)>,
    /// We dialed this peer.
    pub outgoing: bool,
    /// The torrent's logger.
    pub log: Logger,
}

impl Peer {
    /// Starts the actor on an open, handshaken connection.
    pub fn start(stream: PeerStream, handshake: Handshake, parts: PeerParts) -> Addr<Peer> {
        let addr = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let num_pieces = parts.layout.num_pieces();
        let codec = MessageCodec::for_piece_count(num_pieces);
        let (read, write) = stream.into_split();
        Peer::create(move |ctx| {
            ctx.add_stream(FramedRead::new(read, codec));
            let mut out = FramedWrite::new(PauseOnFullSocket(write), codec, ctx);
            out.set_buffer_capacity(WRITE_LOW_WATER, WRITE_HIGH_WATER);
            Peer::new(parts, handshake, addr, out)
        })
    }

    /// The Peer's state when its connection starts, all of it: long because the state is
    /// wide (each field is documented where it is declared), not because it decides
    /// anything.
    fn new(
        parts: PeerParts,
        handshake: Handshake,
        addr: SocketAddr,
        out: FramedWrite<Message, PauseOnFullSocket, MessageCodec>,
    ) -> Peer {
        let num_pieces = parts.layout.num_pieces();
        let now = Instant::now();
        let log = parts
            .log
            .new(o!("peer" => addr.to_string(), "key" => parts.key.0));
        Peer {
            key: parts.key,
            addr,
            layout: parts.layout,
            config: parts.config,
            coordinator: parts.coordinator,
            piece_manager: parts.piece_manager,
            reader: parts.reader,
            limiter: parts.limiter,
            asked_hashes: Vec::new(),
            metrics: OwnMetrics::started_as(parts.metrics, parts.key.0).labelled(&addr.to_string()),
            out: Some(out),
            handshake,
            joined: false,
            fast: handshake.reserved.fast_extension(),
            choked: true,
            choking: true,
            peer_interested: false,
            our_pieces: Bitfield::new(num_pieces),
            allowed_fast: Vec::new(),
            upload_queue: VecDeque::new(),
            reading: false,
            granting: false,
            window: None,
            uploaded_window: 0,
            bad_requests: 0,
            interested: false,
            outstanding: VecDeque::new(),
            withdrawn: VecDeque::new(),
            unrequested_blocks: 0,
            chokes_this_second: 0,
            peer_pieces: Bitfield::new(num_pieces),
            announced: false,
            new_haves: Vec::new(),
            haves_due: false,
            haves_sent_at: None,
            duplicate_haves: 0,
            left_sent: false,
            received: Vec::new(),
            released: Vec::new(),
            picking: false,
            wake_missed: false,
            unstored: 0,
            to_store: Vec::new(),
            to_store_leases: Vec::new(),
            out_of_credit: false,
            reqq: DEFAULT_REQQ,
            downloaded_window: 0,
            rate: 0.0,
            request_queue: RequestQueue::new(
                parts.config.min_queue,
                DEFAULT_REQQ.min(parts.config.max_queue),
                parts.config.queue_seconds,
            ),
            last_received: now,
            last_block: now,
            last_sent: now,
            close_reason: None,
            metadata: parts.metadata,
            trees: parts.trees,
            hashes_served: 0,
            metadata_served: 0,
            pex: parts.pex,
            listen_port: parts.listen_port,
            dht: parts.dht,
            outgoing: parts.outgoing,
            their_metadata_id: None,
            their_pex_id: None,
            pex_told: HashSet::new(),
            pex_heard: None,
            log,
        }
    }

    fn send(&mut self, message: Message) {
        if let Some(out) = &mut self.out {
            out.write(message);
            self.last_sent = Instant::now();
        }
    }

    fn close(&mut self, reason: impl Into<String>, ctx: &mut Context<Self>) {
        if self.close_reason.is_none() {
            self.close_reason = Some(reason.into());
        }
        ctx.stop();
    }

    /// Blames the peer and closes: it broke the protocol.
    fn misbehaved(&mut self, what: String, ctx: &mut Context<Self>) {
        self.coordinator.do_send(PeerMisbehaved {
            key: self.key,
            what: what.clone(),
        });
        self.close(what, ctx);
    }

    /// The peer announced `piece` (a `have`, or one new piece of a later bitfield): new
    /// pieces are batched for the Coordinator, repeats counted against
    /// [`DUPLICATE_HAVES_LIMIT`].
    fn peer_has(&mut self, piece: PieceIndex, ctx: &mut Context<Self>) {
        self.announced = true;
        if self.peer_pieces.has(piece.get()) {
            self.duplicate_haves += 1;
            if self.duplicate_haves > DUPLICATE_HAVES_LIMIT {
                self.misbehaved(
                    format!(
                        "more than {DUPLICATE_HAVES_LIMIT} have messages for pieces it had announced"
                    ),
                    ctx,
                );
            }
            return;
        }
        let _ = self.peer_pieces.set(piece.get());
        self.new_haves.push(piece);
        if self.haves_due {
            return;
        }
        let wait = self.haves_sent_at.map_or(Duration::ZERO, |t| {
            HAVE_BATCH_INTERVAL.saturating_sub(t.elapsed())
        });
        if wait.is_zero() {
            self.send_haves();
        } else {
            self.haves_due = true;
            ctx.run_later(wait, |act, _| {
                act.haves_due = false;
                act.send_haves();
            });
        }
    }

    /// Sends the batch of newly announced pieces, if any.
    fn send_haves(&mut self) {
        if self.new_haves.is_empty() || self.close_reason.is_some() {
            return;
        }
        self.haves_sent_at = Some(Instant::now());
        self.coordinator.do_send(PeerHaves {
            key: self.key,
            pieces: std::mem::take(&mut self.new_haves),
        });
    }

    /// A bitfield, `have-all` or `have-none` (`what`), already checked against the piece
    /// count. The first word on the peer's pieces goes to the Coordinator whole. BEP 3
    /// and BEP 6 allow no second one, and repeated bitfields cost the Coordinator a pass
    /// over every piece each, so a repeat is refused: the peer is banned. One exception,
    /// because aria2c does it: a later bitfield (or `have-all`) that only adds pieces
    /// stands for that many `have`s, and its new pieces are passed on as such. One that
    /// takes a piece back, or adds nothing, is the violation.
    fn on_bitfield(&mut self, pieces: Bitfield, what: &str, ctx: &mut Context<Self>) {
        if !std::mem::replace(&mut self.announced, true) {
            self.peer_pieces = pieces.clone();
            self.coordinator.do_send(PeerBitfield {
                key: self.key,
                pieces,
            });
            return;
        }
        // Byte by byte: the work is bounded by the bytes the peer sent.
        let mut added = Vec::new();
        for (i, (old, new)) in self
            .peer_pieces
            .as_bytes()
            .iter()
            .zip(pieces.as_bytes())
            .enumerate()
        {
            if old & !new != 0 {
                let bit = (old & !new).leading_zeros();
                return self.misbehaved(
                    format!(
                        "a second {what} takes back piece {} it had announced",
                        i as u32 * 8 + bit
                    ),
                    ctx,
                );
            }
            let mut fresh = new & !old;
            while fresh != 0 {
                let bit = fresh.leading_zeros();
                added.push(i as u32 * 8 + bit);
                fresh &= !(0x80u8 >> bit);
            }
        }
        if added.is_empty() {
            return self.misbehaved(
                format!("a second {what} after its pieces were known, with no new piece"),
                ctx,
            );
        }
        for index in added {
            if let Some(piece) = self.layout.piece(index) {
                self.peer_has(piece, ctx);
            }
        }
    }

    /// How many requests to keep outstanding now.
    fn queue_target(&self) -> usize {
        self.request_queue.target(self.rate)
    }

    /// Asks the Coordinator for more blocks if the pipeline has room. Reports received
    /// and released blocks on the way.
    fn refill(&mut self, ctx: &mut Context<Self>) {
        if self.picking {
            // The Coordinator may have freed blocks since it answered the pick in flight.
            self.wake_missed = true;
            return;
        }
        if !self.joined || self.choked || !self.interested {
            return;
        }
        if self.unstored >= STORE_CREDIT {
            // Out of credit: asked again when the PieceManager takes a batch of blocks.
            if !std::mem::replace(&mut self.out_of_credit, true) {
                self.metrics.held_back();
            }
            return;
        }
        let target = self.queue_target();
        // Ask in batches: waiting for a quarter of the queue to drain keeps the number of
        // PickBlocks messages low without letting the pipeline run dry.
        let room = target.saturating_sub(self.outstanding.len());
        if room == 0 || (room < target / 4 && !self.outstanding.is_empty()) {
            return;
        }
        self.picking = true;
        let msg = PickBlocks {
            key: self.key,
            received: std::mem::take(&mut self.received),
            released: std::mem::take(&mut self.released),
            want: room,
        };
        // With a download limit, the bytes are granted before they are asked for, so
        // what arrives never outruns the limit (a grant for blocks the picker then does
        // not give is spent all the same: the limit errs low).
        let limiter = self.limiter.clone();
        let coordinator = self.coordinator.clone();
        let picked = self.metrics.scoped(async move {
            if let Some(limiter) = limiter {
                let _ = limiter
                    .send(Grant {
                        direction: Direction::Download,
                        bytes: room as u64 * u64::from(BLOCK_SIZE),
                    })
                    .await;
            }
            coordinator.send(msg).await
        });
        ctx.spawn(
            self.metrics
                .id()
                .on(picked.into_actor(self).map(|reply, act, ctx| {
                    act.picking = false;
                    let Ok(Picked { blocks }) = reply else {
                        act.close("coordinator gone", ctx);
                        return;
                    };
                    if act.choked {
                        // Choked while asking: the blocks go straight back.
                        act.released.extend(blocks);
                        return;
                    }
                    let now = Instant::now();
                    for lease in blocks {
                        act.request_queue.on_sent(&[lease.request], now);
                        act.send(Message::Request(lease.request));
                        act.outstanding.push_back(lease);
                    }
                    if std::mem::take(&mut act.wake_missed) {
                        act.refill(ctx);
                    }
                })),
        );
    }

    /// The peer's extension handshake: its request queue, the ids of the extensions
    /// we share, and its listen port for peer exchange. A handshake we cannot parse
    /// leaves the defaults: extensions are optional.
    fn extension_handshake(&mut self, payload: &[u8]) {
        let Ok(hs) = ExtHandshake::decode(payload) else {
            debug!(self.log, "unreadable extension handshake ignored");
            return;
        };
        if let Some(reqq) = hs.reqq {
            self.reqq = (reqq as usize).clamp(1, self.config.max_queue);
            self.request_queue.set_cap(self.reqq);
        }
        self.their_metadata_id = hs.id_of(ext::UT_METADATA);
        self.their_pex_id = hs.id_of(ext::UT_PEX).filter(|_| self.pex);
        if let Some(port) = hs.listen_port {
            if !self.outgoing {
                self.coordinator.do_send(PeerListenPort {
                    key: self.key,
                    port,
                });
            }
        }
        debug!(self.log, "extension handshake"; "client" => hs.client.as_deref().unwrap_or("?"), "ut_metadata" => self.their_metadata_id.is_some(), "ut_pex" => self.their_pex_id.is_some());
    }

    /// A BEP 52 `hash request`: answered from the torrent's trees within
    /// [`MAX_HASH_ANSWERS`], else rejected with the reason logged.
    fn on_hash_request(&mut self, request: crate::wire::HashRequest) {
        let answer = match &self.trees {
            None => Err("not a v2 torrent".to_string()),
            Some(_) if self.hashes_served >= MAX_HASH_ANSWERS => {
                Err(format!("more than {MAX_HASH_ANSWERS} hash requests"))
            }
            Some(trees) => trees.answer(&request).map_err(|e| e.to_string()),
        };
        match answer {
            Ok(hashes) => {
                self.hashes_served += 1;
                debug!(self.log, "hash request answered"; "base_layer" => request.base_layer,
                    "index" => request.index, "length" => request.length,
                    "proof_layers" => request.proof_layers);
                self.send(Message::Hashes(crate::wire::Hashes { request, hashes }));
            }
            Err(reason) => {
                debug!(self.log, "hash request rejected"; "reason" => reason,
                    "base_layer" => request.base_layer, "index" => request.index,
                    "length" => request.length);
                self.send(Message::HashReject(request));
            }
        }
    }

    /// A `ut_metadata` message: requests are served from the info dictionary, within a
    /// bound per connection; data and rejects are not expected once we have the
    /// metadata and are ignored.
    fn on_metadata_message(&mut self, payload: Bytes, ctx: &mut Context<Self>) {
        let message = match MetadataMessage::decode(&payload) {
            Ok(m) => m,
            Err(e) => return self.misbehaved(format!("bad ut_metadata message: {e}"), ctx),
        };
        let (MetadataMessage::Request { piece }, Some(id)) = (message, self.their_metadata_id)
        else {
            return;
        };
        let answer = self.metadata.as_ref().and_then(|info| {
            let total = u32::try_from(info.len()).ok()?;
            let count = ext::metadata_piece_count(total);
            // Every piece a few times over is plenty for an honest peer.
            if self.metadata_served >= 4 * count + 8 {
                return None;
            }
            let len = ext::metadata_piece_len(total, piece)?;
            let start = (piece * ext::METADATA_PIECE_LEN) as usize;
            Some(MetadataMessage::Data {
                piece,
                total_size: total,
                data: info.slice(start..start + len),
            })
        });
        let reply = match answer {
            Some(data) => {
                self.metadata_served += 1;
                data
            }
            None => MetadataMessage::Reject { piece },
        };
        self.send(Message::Extended {
            id,
            payload: reply.encode().into(),
        });
    }

    /// A `ut_pex` message: its new peers go to the Coordinator, at most one message's
    /// worth per [`PEX_MIN_INTERVAL`].
    fn on_pex_message(&mut self, payload: &[u8]) {
        if !self.pex {
            return;
        }
        if self
            .pex_heard
            .is_some_and(|t| t.elapsed() < PEX_MIN_INTERVAL)
        {
            debug!(self.log, "ut_pex too soon after the last; ignored");
            return;
        }
        match PexMessage::decode(payload) {
            Ok(pex) => {
                self.pex_heard = Some(Instant::now());
                if !pex.added.is_empty() {
                    debug!(self.log, "peers from ut_pex"; "added" => pex.added.len());
                    // Peer lists come from trackers, the DHT and peer exchange alike, at
                    // most about once a minute each; they are timed, not counted in the
                    // mailbox depth (see `engine::metrics`).
                    self.coordinator.addr().do_send(PeersFound {
                        peers: pex.added,
                        source: PeerSource::Pex,
                    });
                }
            }
            Err(e) => debug!(self.log, "bad ut_pex ignored"; "error" => %e),
        }
    }

    /// Tells the peer which of `peers` are new since our last `ut_pex` and which are
    /// gone, at most [`ext::MAX_PEX_ADDED`] of each; the rest wait for the next round.
    fn send_pex(&mut self, peers: &[SocketAddr]) {
        let Some(id) = self.their_pex_id else {
            return;
        };
        let current: HashSet<SocketAddr> =
            peers.iter().copied().filter(|a| *a != self.addr).collect();
        let added: Vec<SocketAddr> = current
            .difference(&self.pex_told)
            .copied()
            .take(ext::MAX_PEX_ADDED)
            .collect();
        let dropped: Vec<SocketAddr> = self
            .pex_told
            .difference(&current)
            .copied()
            .take(ext::MAX_PEX_ADDED)
            .collect();
        if added.is_empty() && dropped.is_empty() {
            return;
        }
        for a in &added {
            self.pex_told.insert(*a);
        }
        for d in &dropped {
            self.pex_told.remove(d);
        }
        let payload = PexMessage { added, dropped }.encode();
        self.send(Message::Extended {
            id,
            payload: payload.into(),
        });
    }

    /// Remembers requests given up on, so their blocks arriving late are not taken for
    /// blocks never asked for.
    fn withdraw(&mut self, requests: impl IntoIterator<Item = BlockRequest>) {
        for request in requests {
            if self.withdrawn.len() >= self.config.max_queue {
                self.withdrawn.pop_front();
            }
            self.withdrawn.push_back(request);
        }
    }

    fn on_block(&mut self, block: crate::wire::Block, ctx: &mut Context<Self>) {
        if let Some(tracer) = self.metrics.tracer() {
            let id = super::trace::block_id(block.piece, block.offset);
            tracer.flow("Peer", self.key.0, id, super::trace::Hop::Received);
        }
        let request = block.request();
        let Some(pos) = self.outstanding.iter().position(|l| l.request == request) else {
            if let Some(asked) = self
                .outstanding
                .iter()
                .find(|l| l.request.piece == request.piece && l.request.offset == request.offset)
            {
                let what = format!(
                    "block of {} bytes where {} were asked for",
                    request.length, asked.request.length
                );
                return self.misbehaved(what, ctx);
            }
            if let Some(pos) = self.withdrawn.iter().position(|r| *r == request) {
                // Sent before our `cancel` or its `choke` reached the other side.
                self.withdrawn.remove(pos);
                return;
            }
            self.unrequested_blocks += 1;
            debug!(self.log, "block not requested"; "piece" => request.piece, "offset" => request.offset);
            if self.unrequested_blocks > UNREQUESTED_BLOCKS_LIMIT {
                self.misbehaved("too many blocks never asked for".into(), ctx);
            }
            return;
        };
        let waiting = self.outstanding.len();
        // Blocks mostly come in the order asked, so `pos` is near the front: a deque
        // removes it without moving the hundreds of requests behind it.
        let Some(lease) = self.outstanding.remove(pos) else {
            return;
        };
        let Some(piece) = self.layout.piece(request.piece) else {
            return;
        };
        let len = block.data.len() as u64;
        self.downloaded_window += len;
        self.last_block = Instant::now();
        self.request_queue
            .on_block(request, len, waiting, self.last_block);
        // The bytes are credit until the PieceManager has taken the block; out of
        // credit, no more blocks are asked for until some comes back. The actor itself
        // goes on. (A download limit was paid before the blocks were asked for.) The
        // blocks of one turn of the socket go together, up to half the credit: the first
        // of them schedules the send, which runs once the socket's stream has yielded.
        self.unstored += len;
        if self.to_store.is_empty() {
            ctx.spawn(fut::ready(()).map(|(), act: &mut Self, ctx| act.store_blocks(ctx)));
        }
        self.to_store.push(ReceivedBlock {
            piece,
            offset: request.offset,
            attempt: lease.attempt,
            data: block.data,
        });
        self.to_store_leases.push(lease);
        // Half the credit at most waits here, so the credit still measures what the
        // PieceManager has not taken rather than how long a turn of the socket is.
        let waiting: u64 = self.to_store.iter().map(|b| b.data.len() as u64).sum();
        if waiting >= STORE_CREDIT / 2 {
            self.store_blocks(ctx);
        }
    }

    /// Hands the blocks read so far to the PieceManager in one `StoreBlocks`; its reply
    /// gives their bytes back as credit and their leases to the next report.
    fn store_blocks(&mut self, ctx: &mut Context<Self>) {
        if self.to_store.is_empty() {
            return;
        }
        let blocks = std::mem::take(&mut self.to_store);
        let leases = std::mem::take(&mut self.to_store_leases);
        let len: u64 = blocks.iter().map(|b| b.data.len() as u64).sum();
        let accepted = self.piece_manager.send(StoreBlocks {
            from: self.key,
            blocks,
        });
        ctx.spawn(
            self.metrics
                .id()
                .on(accepted.into_actor(self).map(move |res, act, ctx| {
                    act.unstored -= len;
                    if res.is_err() {
                        act.close("piece manager gone", ctx);
                        return;
                    }
                    act.received.extend(leases);
                    if act.unstored < STORE_CREDIT {
                        act.out_of_credit = false;
                    }
                    act.refill(ctx);
                })),
        );
    }

    fn on_message(&mut self, message: Message, ctx: &mut Context<Self>) {
        match message {
            Message::KeepAlive => {}
            Message::Choke => self.on_choke(ctx),
            Message::Unchoke => self.on_unchoke(ctx),
            Message::Interested | Message::NotInterested => {
                let interested = matches!(message, Message::Interested);
                if interested != self.peer_interested {
                    self.peer_interested = interested;
                    self.coordinator.do_send(PeerInterest {
                        key: self.key,
                        interested,
                    });
                }
            }
            Message::Request(request) => self.on_request(request, ctx),
            Message::Cancel(request) => self.on_cancel(request),
            Message::Have(index) => match self.layout.piece(index) {
                Some(piece) => self.peer_has(piece, ctx),
                None => self.misbehaved(format!("have for piece {index} past the end"), ctx),
            },
            Message::Bitfield(payload) => {
                match Bitfield::from_payload(&payload, self.layout.num_pieces()) {
                    Ok(pieces) => self.on_bitfield(pieces, "bitfield", ctx),
                    Err(e) => self.misbehaved(format!("bad bitfield: {e}"), ctx),
                }
            }
            Message::HaveAll
            | Message::HaveNone
            | Message::RejectRequest(_)
            | Message::SuggestPiece(_)
            | Message::AllowedFast(_)
                if !self.fast =>
            {
                self.misbehaved("fast-extension message without negotiation".into(), ctx);
            }
            Message::HaveAll | Message::HaveNone => {
                let n = self.layout.num_pieces();
                let (pieces, what) = if matches!(message, Message::HaveAll) {
                    (Bitfield::full(n), "have-all")
                } else {
                    (Bitfield::new(n), "have-none")
                };
                self.on_bitfield(pieces, what, ctx);
            }
            Message::RejectRequest(request) => self.on_reject(request, ctx),
            // A hint we may ignore (BEP 6), and permission to ask for some pieces while
            // choked, which we do not use: the unchoked path is how we download.
            Message::SuggestPiece(_) | Message::AllowedFast(_) => {}
            Message::Piece(block) => self.on_block(block, ctx),
            Message::Extended { id, payload } => match id {
                ext::HANDSHAKE_ID => self.extension_handshake(&payload),
                OUR_UT_METADATA => self.on_metadata_message(payload, ctx),
                OUR_UT_PEX => self.on_pex_message(&payload),
                // Extensions we did not offer are ignored (BEP 10).
                _ => {}
            },
            Message::Port(port) => {
                if let (Some((dht, _)), true) = (&self.dht, port != 0) {
                    dht.do_send(DhtNodeSeen {
                        addr: SocketAddr::new(self.addr.ip(), port),
                    });
                }
            }
            // BEP 52: nodes of the trees the metainfo proves are served (piece layer
            // and up); anything else is rejected. We ask for the leaves of failed v2
            // pieces only; a `hashes` answering nothing we asked breaks the protocol.
            Message::HashRequest(request) => self.on_hash_request(request),
            Message::Hashes(hashes) => self.on_hashes(hashes, ctx),
            Message::HashReject(request) => self.asked_hashes.retain(|(r, _)| *r != request),
            Message::Unknown { id, .. } => {
                if crate::fault::injected("peer-panic-on-unknown-message") {
                    panic!("fault injected: peer actor panics on unknown message {id}");
                }
            }
        }
    }

    /// The peer choked us: without the fast extension every outstanding request is void
    /// and handed back at once; with it, after a grace period for its rejects.
    fn on_choke(&mut self, ctx: &mut Context<Self>) {
        self.chokes_this_second += 1;
        if self.chokes_this_second > CHOKES_PER_SECOND_LIMIT {
            return self.misbehaved("choke flood".into(), ctx);
        }
        if !self.choked {
            self.choked = true;
            // Without the fast extension, a choke voids every outstanding request;
            // with it, the peer rejects each one it will not serve.
            let mut released = std::mem::take(&mut self.released);
            if !self.fast {
                let voided: Vec<BlockRequest> =
                    self.outstanding.iter().map(|l| l.request).collect();
                self.withdraw(voided);
                released.extend(self.outstanding.drain(..));
            } else {
                // A fast peer should reject what it will not serve; if it stays
                // choked and silent, the requests go back after a while anyway.
                ctx.run_later(Duration::from_secs(5), |act, ctx| {
                    if act.choked && !act.outstanding.is_empty() {
                        let gone = std::mem::take(&mut act.outstanding);
                        act.withdraw(gone.iter().map(|l| l.request));
                        act.released.extend(gone);
                        act.coordinator.do_send(PeerChokedUs {
                            key: act.key,
                            received: std::mem::take(&mut act.received),
                            released: std::mem::take(&mut act.released),
                        });
                    }
                    let _ = ctx;
                });
            }
            self.coordinator.do_send(PeerChokedUs {
                key: self.key,
                received: std::mem::take(&mut self.received),
                released,
            });
        }
    }

    /// The peer unchoked us: requests may go out again.
    fn on_unchoke(&mut self, ctx: &mut Context<Self>) {
        if self.choked {
            self.choked = false;
            self.coordinator.do_send(PeerUnchokedUs { key: self.key });
            self.last_block = Instant::now();
            self.refill(ctx);
        }
    }

    /// The peer withdrew a request of its own.
    fn on_cancel(&mut self, request: BlockRequest) {
        let before = self.upload_queue.len();
        self.upload_queue.retain(|r| *r != request);
        // BEP 6: a cancelled request is answered with the block or a reject.
        if self.upload_queue.len() < before {
            self.reject(request);
        }
    }

    /// The peer rejected one of our requests (fast extension).
    fn on_reject(&mut self, request: BlockRequest, ctx: &mut Context<Self>) {
        // The peer will not serve this one: hand it back to be picked again.
        if let Some(pos) = self.outstanding.iter().position(|l| l.request == request) {
            let Some(lease) = self.outstanding.remove(pos) else {
                return;
            };
            self.released.push(lease);
            self.refill(ctx);
        }
    }

    /// A BEP 52 `hashes` answer: it must answer a request we sent; its leaves go to the
    /// PieceManager, which checks them against the failed piece's node.
    fn on_hashes(&mut self, hashes: crate::wire::Hashes, ctx: &mut Context<Self>) {
        match self
            .asked_hashes
            .iter()
            .position(|(r, _)| *r == hashes.request)
        {
            Some(at) => {
                let (_, piece) = self.asked_hashes.remove(at);
                self.piece_manager.do_send(LeafHashes {
                    piece,
                    leaves: hashes.base().to_vec(),
                });
            }
            None => self.misbehaved("hashes for a range never asked for".into(), ctx),
        }
    }

    /// A request from the peer: checked, then queued for upload, or dropped. BEP 3 lets a
    /// peer we choke be ignored; the other cases are the peer's mistake, and too many of
    /// them end the connection.
    fn on_request(&mut self, request: BlockRequest, ctx: &mut Context<Self>) {
        let valid = self.layout.piece(request.piece).is_some_and(|piece| {
            self.layout
                .is_valid_block(piece, request.offset, request.length)
                && self.our_pieces.has(piece.get())
        });
        if !valid {
            self.reject(request);
            self.bad_requests += 1;
            debug!(self.log, "invalid request dropped"; "piece" => request.piece, "offset" => request.offset, "length" => request.length);
            if self.bad_requests > 100 {
                self.misbehaved("too many invalid requests".into(), ctx);
            }
            return;
        }
        let allowed = !self.choking || self.allowed_fast.contains(&request.piece);
        if !allowed || self.upload_queue.len() >= UPLOAD_QUEUE_LIMIT {
            self.metrics.held_back();
            return self.reject(request);
        }
        if !self.upload_queue.contains(&request) {
            self.upload_queue.push_back(request);
        }
        self.pump_uploads(ctx);
    }

    /// Tells a fast peer we will not serve `request`; without the fast extension, not
    /// answering is the only way to say it.
    fn reject(&mut self, request: BlockRequest) {
        if self.fast {
            self.send(Message::RejectRequest(request));
        }
    }

    /// Sends the queued requests that the last window covers, and reads the next window
    /// when the oldest request falls outside it.
    fn pump_uploads(&mut self, ctx: &mut Context<Self>) {
        while !self.granting {
            let Some(&request) = self.upload_queue.front() else {
                break;
            };
            if self.choking && !self.allowed_fast.contains(&request.piece) {
                self.upload_queue.pop_front();
                self.reject(request);
                continue;
            }
            if let Some(data) = self.window_slice(&request) {
                self.upload_queue.pop_front();
                let block = crate::wire::Block {
                    piece: request.piece,
                    offset: request.offset,
                    data,
                };
                match self.limiter.clone() {
                    None => self.send_block(block),
                    Some(limiter) => {
                        self.send_when_granted(block, limiter, ctx);
                        break;
                    }
                }
                continue;
            }
            if self.reading {
                break;
            }
            let Some(piece) = self.layout.piece(request.piece) else {
                self.upload_queue.pop_front();
                continue;
            };
            self.read_window(piece, request, ctx);
            break;
        }
    }

    /// With an upload limit, one block at a time waits for its grant, then goes out (or
    /// is rejected if a choke overtook it), and the pump goes on.
    fn send_when_granted(
        &mut self,
        block: crate::wire::Block,
        limiter: Tracked<RateLimiter>,
        ctx: &mut Context<Self>,
    ) {
        self.granting = true;
        let grant = Grant {
            direction: Direction::Upload,
            bytes: block.data.len() as u64,
        };
        let granted = limiter
            .send(grant)
            .into_actor(self)
            .map(move |_, act, ctx| {
                act.granting = false;
                // A block of an allowed-fast piece goes out while we choke too: it
                // was asked for while choked. Any other block that a choke overtook
                // is rejected, never dropped in silence: a fast peer waits for an
                // answer to every request (BEP 6), and libtorrent waited for good on
                // one dropped block.
                if !act.choking || act.allowed_fast.contains(&block.piece) {
                    act.send_block(block);
                } else {
                    act.reject(BlockRequest {
                        piece: block.piece,
                        offset: block.offset,
                        length: block.data.len() as u32,
                    });
                }
                act.pump_uploads(ctx);
            });
        ctx.spawn(self.metrics.id().on(granted));
    }

    /// Reads the window of `piece` that starts at `request` (at most [`READ_WINDOW`])
    /// from the FileReader; the pump goes on when it is here.
    fn read_window(&mut self, piece: PieceIndex, request: BlockRequest, ctx: &mut Context<Self>) {
        let length = (self.layout.piece_len(piece) - request.offset).min(READ_WINDOW);
        self.reading = true;
        let read = ReadBlock {
            piece,
            offset: request.offset,
            length,
        };
        let read = self
            .reader
            .send(read)
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.reading = false;
                match res {
                    Ok(Ok(data)) => act.window = Some((request.piece, request.offset, data)),
                    Ok(Err(e)) => {
                        warn!(act.log, "cannot read blocks to upload"; "error" => %e);
                        act.upload_queue.retain(|r| r.piece != request.piece);
                    }
                    Err(_) => return act.close("file reader gone", ctx),
                }
                act.pump_uploads(ctx);
            });
        ctx.spawn(self.metrics.id().on(read));
    }

    fn send_block(&mut self, block: crate::wire::Block) {
        self.uploaded_window += block.data.len() as u64;
        self.send(Message::Piece(block));
    }

    /// The bytes of `request` if the last window holds all of them: a slice of the shared
    /// buffer, not a copy.
    fn window_slice(&self, request: &BlockRequest) -> Option<bytes::Bytes> {
        let (piece, start, data) = self.window.as_ref()?;
        let from = request.offset.checked_sub(*start)? as usize;
        let to = from + request.length as usize;
        (*piece == request.piece && to <= data.len()).then(|| data.slice(from..to))
    }

    /// Tells the Coordinator the bytes moved since the last report, if any.
    fn report_stats(&mut self) {
        if self.downloaded_window > 0 || self.uploaded_window > 0 {
            self.coordinator.do_send(PeerStats {
                key: self.key,
                downloaded: std::mem::take(&mut self.downloaded_window),
                uploaded: std::mem::take(&mut self.uploaded_window),
            });
        }
    }

    /// Once a second: rate, timeouts, keep-alive.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.chokes_this_second = 0;
        // Smooth over about two seconds so one burst does not swing the queue.
        self.rate = 0.5 * self.rate + 0.5 * self.downloaded_window as f64;
        self.report_stats();
        if !self.outstanding.is_empty()
            && !self.choked
            && now.duration_since(self.last_block) > self.config.request_timeout
        {
            return self.close("no data for outstanding requests", ctx);
        }
        if now.duration_since(self.last_received) > self.config.idle_timeout {
            return self.close("silent for too long", ctx);
        }
        if now.duration_since(self.last_sent) > self.config.keepalive {
            self.send(Message::KeepAlive);
        }
        self.refill(ctx);
    }
}

impl Actor for Peer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let join = PeerJoined {
            key: self.key,
            addr: self.addr,
            peer_id: PeerId(self.handshake.peer_id.0),
            outgoing: self.outgoing,
            peer: TrackedRecipient::new(ctx.address().recipient(), self.metrics.clone()),
        };
        // Nothing is read or sent until the Coordinator has taken us in.
        ctx.wait(
            self.metrics
                .id()
                .on(self.coordinator.send(join).into_actor(self).map(
                    |reply, act, ctx| match reply {
                        Ok(Ok(our_pieces)) => {
                            act.joined = true;
                            act.our_pieces = our_pieces.clone();
                            if act.handshake.reserved.extension_protocol() {
                                let size = act
                                    .metadata
                                    .as_ref()
                                    .and_then(|m| u32::try_from(m.len()).ok());
                                let ours = our_ext_handshake(
                                    size,
                                    act.pex,
                                    act.listen_port,
                                    Some(act.addr.ip()),
                                );
                                act.send(Message::Extended {
                                    id: ext::HANDSHAKE_ID,
                                    payload: ours.encode().into(),
                                });
                            }
                            if let (Some((_, port)), true) =
                                (&act.dht, act.handshake.reserved.dht())
                            {
                                let port = *port;
                                act.send(Message::Port(port));
                            }
                            if let (true, std::net::IpAddr::V4(ip)) = (act.fast, act.addr.ip()) {
                                act.allowed_fast = crate::wire::fast::allowed_fast_set(
                                    ip,
                                    &act.handshake.info_hash,
                                    act.layout.num_pieces(),
                                    crate::wire::fast::ALLOWED_FAST_SET_SIZE,
                                );
                            }
                            if act.fast && our_pieces.all_set() {
                                act.send(Message::HaveAll);
                            } else if our_pieces.count_ones() > 0 {
                                act.send(Message::Bitfield(our_pieces.to_payload()));
                            } else if act.fast {
                                act.send(Message::HaveNone);
                            }
                            for piece in act.allowed_fast.clone() {
                                act.send(Message::AllowedFast(piece));
                            }
                            info!(act.log, "peer joined");
                        }
                        Ok(Err(refused)) => act.close(format!("refused: {refused}"), ctx),
                        Err(_) => act.close("coordinator gone", ctx),
                    },
                )),
        );
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.tick(ctx));
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // Bytes moved since the last once-a-second report still count.
        if self.joined {
            self.report_stats();
        }
        // Blocks read in the last turn of the socket still go to the PieceManager, queued
        // even if its mailbox is full (a spawned send would never run now). Their leases
        // go back with the outstanding ones, since no reply will come: another peer may
        // fetch them again, and the PieceManager keeps the first copy.
        if !self.to_store.is_empty() {
            self.piece_manager.do_send(StoreBlocks {
                from: self.key,
                blocks: std::mem::take(&mut self.to_store),
            });
        }
        let mut released = std::mem::take(&mut self.to_store_leases);
        released.extend(std::mem::take(&mut self.released));
        released.extend(self.outstanding.drain(..));
        // A panicking actor is stopped by actix as its task unwinds: say so.
        let reason = self.close_reason.take().unwrap_or_else(|| {
            if std::thread::panicking() {
                "peer actor failed".into()
            } else {
                "closed".into()
            }
        });
        debug!(self.log, "peer leaving"; "reason" => &reason);
        if self.joined && !self.left_sent {
            self.left_sent = true;
            self.coordinator.do_send(PeerLeft {
                key: self.key,
                received: std::mem::take(&mut self.received),
                released,
                reason,
            });
        }
        if let Some(mut out) = self.out.take() {
            out.close();
        }
        Running::Stop
    }
}

impl Drop for Peer {
    /// The actor says goodbye in `stopping`, which actix runs even while a panic unwinds
    /// its task. Should that ever be skipped (a panic inside `stopping` itself), telling
    /// the Coordinator here still gives its requests back and frees its slot, so a panic
    /// costs one connection, nothing more.
    fn drop(&mut self) {
        if self.joined && !self.left_sent {
            self.left_sent = true;
            let mut released = std::mem::take(&mut self.released);
            released.extend(self.outstanding.drain(..));
            self.coordinator.do_send(PeerLeft {
                key: self.key,
                received: std::mem::take(&mut self.received),
                released,
                reason: "peer actor failed".into(),
            });
        }
    }
}

impl StreamHandler<Result<Message, WireError>> for Peer {
    fn handle(&mut self, item: Result<Message, WireError>, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling_unqueued(match &item {
            Ok(message) => message.name(),
            Err(_) => "wire error",
        });
        self.last_received = Instant::now();
        match item {
            Ok(message) => self.on_message(message, ctx),
            Err(WireError::Io(e)) => self.close(format!("read failed: {e}"), ctx),
            Err(e) => self.misbehaved(format!("protocol error: {e}"), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.close("connection closed by peer", ctx);
    }
}

impl WriteHandler<WireError> for Peer {
    fn error(&mut self, err: WireError, ctx: &mut Context<Self>) -> Running {
        self.close_reason
            .get_or_insert_with(|| format!("write failed: {err}"));
        let _ = ctx;
        Running::Stop
    }
}

impl Handler<ToPeer> for Peer {
    type Result = ();

    fn handle(&mut self, msg: ToPeer, ctx: &mut Context<Self>) {
        let _timing = self.metrics.handling(msg.name());
        match msg {
            ToPeer::SetInterest(yes) => {
                if yes != self.interested {
                    self.interested = yes;
                    self.send(if yes {
                        Message::Interested
                    } else {
                        Message::NotInterested
                    });
                    self.refill(ctx);
                }
            }
            ToPeer::Haves(pieces) => {
                let mut sent = false;
                for piece in pieces.iter() {
                    // Pieces verified before we joined were in our bitfield already, and
                    // a peer that has the piece has no use for hearing of ours.
                    if !self.our_pieces.has(piece.get()) {
                        let _ = self.our_pieces.set(piece.get());
                        if let Some(out) = &mut self.out {
                            if !self.peer_pieces.has(piece.get()) {
                                out.write(Message::Have(piece.get()));
                                sent = true;
                            }
                        }
                    }
                }
                // One clock read for the batch: an idle peer hears a thousand at once.
                if sent {
                    self.last_sent = Instant::now();
                }
            }
            ToPeer::Choke => {
                if !self.choking {
                    debug!(self.log, "choking"; "queued" => self.upload_queue.len());
                    self.choking = true;
                    self.send(Message::Choke);
                    let queue = std::mem::take(&mut self.upload_queue);
                    for request in queue {
                        if self.allowed_fast.contains(&request.piece) {
                            self.upload_queue.push_back(request);
                        } else {
                            self.reject(request);
                        }
                    }
                }
            }
            ToPeer::Unchoke => {
                if self.choking {
                    debug!(self.log, "unchoking"; "queued" => self.upload_queue.len());
                    self.choking = false;
                    self.send(Message::Unchoke);
                }
            }
            ToPeer::Cancel(lease) => {
                if let Some(pos) = self.outstanding.iter().position(|l| *l == lease) {
                    self.outstanding.remove(pos);
                    self.withdraw([lease.request]);
                    self.send(Message::Cancel(lease.request));
                }
            }
            ToPeer::WakeUp => self.refill(ctx),
            ToPeer::Disconnect(reason) => self.close(reason, ctx),
            ToPeer::Pex(peers) => self.send_pex(&peers),
            ToPeer::AskHashes { piece, request } => {
                if self.asked_hashes.len() >= MAX_ASKED_HASHES {
                    self.asked_hashes.remove(0);
                }
                self.asked_hashes.push((request, piece));
                self.send(Message::HashRequest(request));
            }
        }
    }
}

/// The socket's write half, reporting "would block" where tokio reports `Pending`.
///
/// actix's `FramedWrite` pauses its actor while its buffer is above the high watermark,
/// but only when a write fails with `WouldBlock`; tokio's sockets never fail that way,
/// they return `Pending`, so without this adapter the buffer would grow without bound
/// when a peer reads slowly. The inner `poll_write` has registered the waker before
/// `Pending`, so the writer is woken when the socket drains.
pub struct PauseOnFullSocket(PeerWriteHalf);

impl PauseOnFullSocket {
    /// Wraps a socket's write half.
    pub fn new(write: PeerWriteHalf) -> Self {
        PauseOnFullSocket(write)
    }
}

impl AsyncWrite for PauseOnFullSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.0).poll_write(cx, buf) {
            Poll::Pending => Poll::Ready(Err(std::io::ErrorKind::WouldBlock.into())),
            ready => ready,
        }
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
