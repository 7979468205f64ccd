//! Every message that crosses between the engine's actors, in one place: this file is the
//! engine's internal API. Each message says who sends it to whom and why.
//!
//! Sends that carry block data (`StoreBlocks`, `HashPiece`, `WritePiece`) are always
//! awaited by their sender, so the receiver's pace bounds the sender; ARCHITECTURE.md
//! lists which sends are bounded and by what.

use super::metrics::TrackedRecipient;
use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use super::resume::{FileRecord, ResumeData};
use super::tracker::TrackerStatus;
use super::PeerKey;
use crate::layout::PieceIndex;
use crate::wire::{Bitfield, BlockRequest, Handshake};
use crate::{InfoHash, PeerId};

// ---------------------------------------------------------------------------------------
// Peer → Coordinator
// ---------------------------------------------------------------------------------------

/// Peer → Coordinator: the handshake succeeded; asks to join the swarm. The reply is our
/// bitfield, to send as the first message. Refused when the
/// torrent has its peer limit, when it is a connection to ourselves, or when the same
/// peer id is already connected.
#[derive(Message)]
#[rtype(result = "Result<Bitfield, JoinRefused>")]
pub struct PeerJoined {
    /// The new connection's key.
    pub key: PeerKey,
    /// Its remote address.
    pub addr: SocketAddr,
    /// The peer id it sent in its handshake.
    pub peer_id: PeerId,
    /// We dialed it, so `addr` is where it listens (incoming peers say so in their
    /// extension handshake, if at all).
    pub outgoing: bool,
    /// How the Coordinator reaches this peer from now on.
    pub peer: TrackedRecipient<ToPeer>,
}

/// Peer → Coordinator: the peer's extension handshake named its listen port, so it can
/// be passed on to others by peer exchange.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerListenPort {
    /// Which peer.
    pub key: PeerKey,
    /// Its TCP listen port (`p`).
    pub port: u16,
}

/// Why the Coordinator would not take a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    /// The torrent already has its maximum of connected peers.
    #[error("peer limit reached")]
    Full,
    /// The connection leads back to this process.
    #[error("connection to ourselves")]
    OurOwnId,
    /// A connection with that peer id already exists.
    #[error("peer id already connected")]
    Duplicate,
    /// The torrent is shutting down.
    #[error("torrent stopping")]
    Stopping,
}

/// Peer → Coordinator: the peer's first word on which pieces it has (a `bitfield`,
/// `have-all` or `have-none`, already checked against the piece count); at most one
/// per connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerBitfield {
    /// Which peer.
    pub key: PeerKey,
    /// Its pieces.
    pub pieces: Bitfield,
}

/// Peer → Coordinator: pieces the peer announced since the last batch (`have`s, and
/// the new pieces of a later bitfield), each new for this peer, coalesced by the Peer
/// into at most one message per `HAVE_BATCH_INTERVAL`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerHaves {
    /// Which peer.
    pub key: PeerKey,
    /// The pieces, range-checked, none of them announced before.
    pub pieces: Vec<PieceIndex>,
}

/// Peer → Coordinator: the peer has room in its request pipeline. Carries the blocks it
/// received since it last asked, so the Coordinator learns of deliveries in batches, and
/// the requests it gave up on (rejected, or choked away). The reply is the blocks to
/// request next, at most `want`.
#[derive(Message)]
#[rtype(result = "Picked")]
pub struct PickBlocks {
    /// Which peer.
    pub key: PeerKey,
    /// Blocks delivered and accepted by the PieceManager since the last `PickBlocks`.
    pub received: Vec<Lease>,
    /// Requests this peer will not deliver.
    pub released: Vec<Lease>,
    /// How many more requests the peer's pipeline can take.
    pub want: usize,
}

/// The Coordinator's answer to [`PickBlocks`].
#[derive(Debug, Default)]
pub struct Picked {
    /// The blocks to request.
    pub blocks: Vec<Lease>,
}

/// A block handed to one peer for one attempt at its piece. The attempt is how many
/// times the piece had failed its hash when the block was handed out. Every report
/// about the block carries it (the store, the delivery, the release), so a late block
/// of a failed attempt is neither kept for the next attempt nor counted for it, even
/// when the same peer holds the same block again in the next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The block.
    pub request: BlockRequest,
    /// The attempt at its piece it was handed out for.
    pub attempt: u32,
}

/// Peer → Coordinator: the peer choked us; its outstanding requests are void (BEP 3
/// without the fast extension), so the Coordinator may hand them to others.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerChokedUs {
    /// Which peer.
    pub key: PeerKey,
    /// Blocks received before the choke and not yet reported.
    pub received: Vec<Lease>,
    /// The requests that will not be answered.
    pub released: Vec<Lease>,
}

/// Peer → Coordinator: the peer unchoked us; only the front end's peer list needs to know
/// (picking is driven by the Peer's own `PickBlocks`). Sent once per unchoke, which a
/// peer does at most a few times a minute.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerUnchokedUs {
    /// Which peer.
    pub key: PeerKey,
}

/// Peer → Coordinator: the connection is closing (error, timeout, or told to). The
/// Coordinator drops the peer's pieces from availability and frees its requests.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerLeft {
    /// Which peer.
    pub key: PeerKey,
    /// Blocks received and not yet reported.
    pub received: Vec<Lease>,
    /// Requests still outstanding.
    pub released: Vec<Lease>,
    /// Why it closed, for the log.
    pub reason: String,
}

/// Peer → Coordinator: the peer became interested in our pieces, or stopped being; the
/// choker only unchokes interested peers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerInterest {
    /// Which peer.
    pub key: PeerKey,
    /// Whether it wants our data.
    pub interested: bool,
}

/// Peer → Coordinator, once a second: payload bytes moved since the last report, for the
/// choker's rates and the trackers' totals.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerStats {
    /// Which peer.
    pub key: PeerKey,
    /// Block bytes received from it.
    pub downloaded: u64,
    /// Block bytes sent to it.
    pub uploaded: u64,
}

/// Peer → Coordinator: the peer broke the protocol in a way that is its fault (a bad
/// `have` or bitfield, an undecodable message, too many invalid requests). The peer is
/// banned by address and port and the connection closes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeerMisbehaved {
    /// Which peer.
    pub key: PeerKey,
    /// What it did.
    pub what: String,
}

// ---------------------------------------------------------------------------------------
// Coordinator → Peer
// ---------------------------------------------------------------------------------------

/// Coordinator → Peer: everything the Coordinator tells a connection.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum ToPeer {
    /// Whether we want pieces from this peer (send `interested` / `not interested`).
    SetInterest(bool),
    /// Pieces were verified: send a `have` for each the peer was not told of yet (its
    /// bitfield at joining may hold some). One per batch interval, not one per piece.
    Haves(std::sync::Arc<[PieceIndex]>),
    /// Endgame: another peer delivered this block first; send `cancel`.
    Cancel(Lease),
    /// There are blocks to pick again (a piece failed, a peer left): ask for more.
    WakeUp,
    /// Stop uploading to this peer (send `choke`, drop its queued requests).
    Choke,
    /// Start uploading to this peer (send `unchoke`).
    Unchoke,
    /// Close the connection.
    Disconnect(String),
    /// Peer exchange: the addresses of the torrent's connected peers that accept
    /// connections. The Peer tells its peer what changed since its last `ut_pex`.
    Pex(std::sync::Arc<Vec<SocketAddr>>),
    /// Send this BEP 52 hash request for a failed v2 piece's leaves, and pass the answer
    /// to the PieceManager.
    AskHashes {
        /// The failed piece.
        piece: PieceIndex,
        /// The request to send.
        request: crate::wire::HashRequest,
    },
}

impl ToPeer {
    /// The message's name, as metrics show it.
    pub fn name(&self) -> &'static str {
        match self {
            ToPeer::SetInterest(_) => "ToPeer::SetInterest",
            ToPeer::Haves(_) => "ToPeer::Haves",
            ToPeer::Cancel(_) => "ToPeer::Cancel",
            ToPeer::WakeUp => "ToPeer::WakeUp",
            ToPeer::Choke => "ToPeer::Choke",
            ToPeer::Unchoke => "ToPeer::Unchoke",
            ToPeer::Disconnect(_) => "ToPeer::Disconnect",
            ToPeer::Pex(_) => "ToPeer::Pex",
            ToPeer::AskHashes { .. } => "ToPeer::AskHashes",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Peer → PieceManager → Hasher / FileWriter → Coordinator
// ---------------------------------------------------------------------------------------

/// Peer → PieceManager: blocks we asked for arrived, those read before the socket's
/// stream yielded together, at most half the Peer's store credit (a web seed sends one
/// at a time). The Peer counts their bytes as spent credit
/// until the reply, and the PieceManager delays the reply while its budget of complete
/// pieces awaiting hash and write is full: a slow disk slows the sockets.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreBlocks {
    /// Who sent them, remembered per block so a hash failure can name the senders.
    pub from: PeerKey,
    /// The blocks, in the order they arrived.
    pub blocks: Vec<ReceivedBlock>,
}

/// One block of a [`StoreBlocks`].
pub struct ReceivedBlock {
    /// The piece, already range-checked.
    pub piece: PieceIndex,
    /// Offset inside the piece, already checked to be a block we requested.
    pub offset: u32,
    /// The attempt at the piece it was requested for (see [`Lease`]).
    pub attempt: u32,
    /// The data, shared with the socket buffer, never copied.
    pub data: Bytes,
}

/// PieceManager or Coordinator → Hasher (SyncArbiter): hash a complete piece off the
/// network thread.
#[derive(Message)]
#[rtype(result = "HashOutcome")]
pub struct HashPiece {
    /// The blocks in order; their concatenation is the piece.
    pub blocks: Vec<Bytes>,
    /// The hash from the metainfo (SHA-1, a v2 piece's Merkle node, or a hybrid's both).
    pub expected: crate::metainfo::PieceCheck,
    /// Hash each block too even if the piece passes (smart ban wants the good blocks of
    /// a piece that failed before). A failed piece's blocks are always hashed.
    pub block_digests: bool,
}

/// The Hasher's answer to [`HashPiece`].
#[derive(Debug, Clone, Default)]
pub struct HashOutcome {
    /// Whether the piece matches its hash (a hybrid's: both of them).
    pub verdict: crate::metainfo::Verdict,
    /// The SHA-1 of each block, when the piece failed or they were asked for.
    pub block_digests: Option<Vec<[u8; 20]>>,
    /// A failed v2 piece's leaf hashes (SHA-256 of each block of file bytes), to compare
    /// with the leaves a peer sends for it.
    pub leaf_hashes: Option<Vec<[u8; 32]>>,
}

/// PieceManager → Coordinator: a v2 piece failed; ask peers that have it for its leaf
/// hashes (BEP 52 `hash request`), so its bad blocks are known exactly.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct WantLeafHashes {
    /// The failed piece.
    pub piece: PieceIndex,
    /// The request for its leaves.
    pub request: crate::wire::HashRequest,
}

/// Peer → PieceManager: a peer answered our hash request for a failed v2 piece's leaves;
/// unchecked, the PieceManager checks them against the piece's node.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct LeafHashes {
    /// The piece asked about.
    pub piece: PieceIndex,
    /// The leaves the peer sent, `width` of them.
    pub leaves: Vec<[u8; 32]>,
}

/// PieceManager → FileWriter (SyncArbiter): write a verified piece across its files.
/// Answers `false`, writing nothing and opening no file, once `CloseStorage` came.
#[derive(Message)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct WritePiece {
    /// Which piece.
    pub piece: PieceIndex,
    /// The blocks in order.
    pub blocks: Vec<Bytes>,
}

/// PieceManager → FileWriter (SyncArbiter): write one block of a streamed piece (one too
/// large for the memory budgets, see `streamed.rs`) at its place, before the piece is
/// verified. Answers `false`, writing nothing, once `CloseStorage` came, so a run that is
/// ending writes no unverified data behind its last resume file.
#[derive(Message)]
#[rtype(result = "Result<bool, StorageError>")]
pub struct WriteBlock {
    /// Which piece.
    pub piece: PieceIndex,
    /// Offset inside the piece.
    pub offset: u32,
    /// The block.
    pub data: Bytes,
}

/// PieceManager → Hasher (SyncArbiter): add blocks of a streamed piece, in order, to its
/// running SHA-1, off the network thread.
#[derive(Message)]
#[rtype(result = "sha1::Sha1")]
pub struct HashBlocks {
    /// The running state, covering every block before these.
    pub state: sha1::Sha1,
    /// The next blocks, in order.
    pub blocks: Vec<Bytes>,
}

/// PieceManager → FileReader (SyncArbiter pool): add a range of a streamed piece, read
/// back from disk, to its running SHA-1: blocks that arrived too far ahead of the hash to
/// be kept in memory. Sent only once their writes are done.
#[derive(Message)]
#[rtype(result = "Result<sha1::Sha1, StorageError>")]
pub struct HashStored {
    /// Which piece.
    pub piece: PieceIndex,
    /// Offset inside the piece.
    pub offset: u32,
    /// Bytes to read and hash.
    pub length: u32,
    /// The running state, covering every byte before `offset`.
    pub state: sha1::Sha1,
}

/// PieceManager → FileReader (SyncArbiter pool): the SHA-1 of each block of a streamed
/// piece as written on disk, for smart ban (a failed piece, or the good copy of one).
#[derive(Message)]
#[rtype(result = "Result<Vec<[u8; 20]>, StorageError>")]
pub struct DigestBlocks {
    /// Which piece.
    pub piece: PieceIndex,
}

/// PieceManager → Coordinator: a piece passed its hash and is on disk.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PieceVerified {
    /// Which piece.
    pub piece: PieceIndex,
}

/// PieceManager → Coordinator: a piece failed its hash and is to be downloaded again.
/// Who is to blame comes separately, as [`BadData`], once it is certain.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PieceFailed {
    /// Which piece.
    pub piece: PieceIndex,
    /// Who sent its blocks, each once (at most one per block): the picker's suspects
    /// until the piece passes.
    pub senders: Vec<PeerKey>,
}

/// PieceManager → Coordinator: a peer certainly sent data that failed its hash, either as
/// the only sender of a failed piece or, by smart ban, as the sender of a block that
/// differs from the block of the same piece that later passed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BadData {
    /// The peer to blame (it may have left since).
    pub from: PeerKey,
    /// The piece its bad data was in.
    pub piece: PieceIndex,
    /// How many of its blocks were bad, when known by smart ban; 0 when it sent the
    /// whole failed piece.
    pub bad_blocks: u32,
}

/// PieceManager → Coordinator: a write failed; the torrent cannot go on (disk full,
/// permission denied). The piece stays unverified.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StorageFailed {
    /// What went wrong, naming the file.
    pub error: StorageError,
}

/// PieceManager → Coordinator: a hybrid's piece passed one of its two hashes (v1's SHA-1,
/// v2's Merkle node) and failed the other. The torrent's two parts describe different
/// data: no peer is to blame, no copy can pass, and the torrent cannot go on.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct HashesDisagree {
    /// The piece.
    pub piece: PieceIndex,
}

/// A filesystem failure, naming the file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StorageError {
    /// The file involved.
    pub path: String,
    /// The operating system's message.
    pub message: String,
    /// The disk is full (ENOSPC or EDQUOT), which the command line reports distinctly.
    pub disk_full: bool,
}

impl StorageError {
    /// The class of failure it ends a torrent with.
    pub fn kind(&self) -> FailureKind {
        if self.disk_full {
            FailureKind::DiskFull
        } else {
            FailureKind::Storage
        }
    }
}

/// Stream reader → Coordinator: the bytes `plan` names, once their piece is verified
/// (waiting up to `wait` for it, the piece and the window after it made time-critical
/// meanwhile); also moves the stream's window to `plan`'s.
#[derive(Message)]
#[rtype(result = "Result<Bytes, super::stream::StreamError>")]
pub struct StreamRead {
    /// The stream reading, whose window this read moves.
    pub stream: super::stream::StreamId,
    /// Which bytes, and the window after them.
    pub plan: super::stream::ReadPlan,
    /// How long to wait for a piece not yet verified.
    pub wait: std::time::Duration,
}

/// Stream reader → Coordinator: the stream is closed; its window is no longer
/// time-critical and its waiting read, if any, is dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamClosed {
    /// The stream that closed.
    pub stream: super::stream::StreamId,
}

/// Session → Coordinator: start new pieces in file order (each file's first and last
/// piece first, where players look for an index) instead of rarest first, or back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSequential {
    /// In order if true.
    pub on: bool,
}

// ---------------------------------------------------------------------------------------
// Coordinator, Peer ↔ Dht
// ---------------------------------------------------------------------------------------

/// Coordinator → Dht: find peers for a torrent (`get_peers`), send them to `reply` as
/// [`PeersFound`] with [`PeerSource::Dht`], then announce us (`announce_peer`) on
/// `announce_port` when it is given.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DhtLookup {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our listening TCP port, to announce; `None` looks up without announcing.
    pub announce_port: Option<u16>,
    /// Where the peers go.
    pub reply: Recipient<PeersFound>,
}

/// Peer → Dht: a DHT node learned from a peer's `port` message (BEP 5), worth adding to
/// the routing table.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DhtNodeSeen {
    /// The node's UDP address: the peer's IP with the port it sent.
    pub addr: SocketAddr,
}

/// The DHT as a torrent sees it: where to ask for peers and where to report nodes.
#[derive(Clone)]
pub struct DhtLinks {
    /// Lookups and announces.
    pub lookup: Recipient<DhtLookup>,
    /// Nodes from peers' `port` messages.
    pub node_seen: Recipient<DhtNodeSeen>,
    /// Our DHT node's UDP port, sent to peers in `port` messages.
    pub port: u16,
}

// ---------------------------------------------------------------------------------------
// MetadataPeer ↔ MetadataFetcher (magnet links, before the info dictionary is known)
// ---------------------------------------------------------------------------------------

/// MetadataPeer → MetadataFetcher: the peer's extension handshake arrived.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MetadataPeerReady {
    /// Which connection.
    pub key: PeerKey,
    /// The info dictionary's size, if the peer offers `ut_metadata` and said it.
    pub metadata_size: Option<u32>,
}

/// MetadataPeer → MetadataFetcher: a `ut_metadata` data or reject message.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MetadataFromPeer {
    /// Which connection.
    pub key: PeerKey,
    /// The message, already checked against its own sizes.
    pub message: crate::wire::ext::MetadataMessage,
}

/// MetadataPeer → MetadataFetcher: a BEP 52 `hashes` or `hash reject`, the answer to a
/// [`ToMetadataPeer::AskHashes`] while a v2 torrent's piece layers are fetched. Nothing
/// in it is trusted until the fetcher checks it against the file's root.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HashesFromPeer {
    /// Which connection.
    pub key: PeerKey,
    /// The message, checked against the wire's bounds only.
    pub answer: HashAnswer,
}

/// What a peer answered a hash request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashAnswer {
    /// The nodes of a range and their proof.
    Hashes(crate::wire::Hashes),
    /// It will not send that range.
    Reject(crate::wire::HashRequest),
}

/// MetadataPeer → MetadataFetcher: the connection closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MetadataPeerLeft {
    /// Which connection.
    pub key: PeerKey,
    /// Why, for the log.
    pub reason: String,
}

/// MetadataFetcher → MetadataPeer: what to do.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum ToMetadataPeer {
    /// Ask for this metadata piece.
    Request(u32),
    /// Send this BEP 52 `hash request` (nodes of a piece layer).
    AskHashes(crate::wire::HashRequest),
    /// Close the connection.
    Disconnect(String),
}

// ---------------------------------------------------------------------------------------
// Tracker ↔ Coordinator
// ---------------------------------------------------------------------------------------

/// Where a peer address came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSource {
    /// A tracker's announce reply, with its URL.
    Tracker(String),
    /// A tracker's reply to a hybrid's announce under its v2 swarm, with its URL: the
    /// addresses that were not in the v1 swarm's reply, greeted with the v2 hash.
    TrackerV2Swarm(String),
    /// Given by the user.
    Manual,
    /// Connected to us.
    Incoming,
    /// The DHT's `get_peers` answers.
    Dht,
    /// A connected peer's peer-exchange (BEP 11) message.
    Pex,
    /// A magnet link's `x.pe` parameter.
    Magnet,
}

/// Tracker → Coordinator: addresses to try.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PeersFound {
    /// The addresses.
    pub peers: Vec<SocketAddr>,
    /// Who told us.
    pub source: PeerSource,
}

/// Tracker → Coordinator: the totals to announce, asked just before each announce.
#[derive(Message)]
#[rtype(result = "AnnounceStats")]
pub struct GetAnnounceStats;

/// The `uploaded`, `downloaded` and `left` of an announce, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnnounceStats {
    /// Payload bytes sent to peers.
    pub uploaded: u64,
    /// Payload bytes received and verified.
    pub downloaded: u64,
    /// Wanted bytes not yet verified.
    pub left: u64,
}

/// Tracker → Coordinator: how the last announce went, for the user (the tracker's
/// status) and for BEP 12 tier fallback.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TrackerReport {
    /// The tracker's URL.
    pub url: String,
    /// What happened.
    pub outcome: Result<AnnounceSummary, String>,
    /// How long until the tracker announces again: the interval after a success, the
    /// back-off after a failure, zero when an event is still owed; `None` after the
    /// `stopped` announce, which is the last.
    pub next_announce: Option<Duration>,
}

impl TrackerReport {
    /// Logs the outcome as the tracker's owner sees it: an answer at debug level, a
    /// failure at info (the front end shows it once, not at every retry; the log keeps each).
    pub fn log(&self, log: &slog::Logger) {
        match &self.outcome {
            Ok(summary) => {
                slog::debug!(log, "tracker answered"; "url" => &self.url, "peers" => summary.peers)
            }
            Err(e) => slog::info!(log, "tracker failed"; "url" => &self.url, "error" => e),
        }
    }
}

/// Tracker → Coordinator: an announce began, so the tracker's status reads "updating"
/// until its `TrackerReport`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TrackerAnnouncing {
    /// The tracker's URL.
    pub url: String,
}

/// Session → Coordinator (or MetadataFetcher): the status of every tracker of the torrent,
/// in tier order, for a front end that shows a tracker list.
#[derive(Message)]
#[rtype(result = "Vec<TrackerStatus>")]
pub struct GetTrackers;

/// A successful announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceSummary {
    /// Peers in the reply.
    pub peers: usize,
    /// Seeders, if the tracker said.
    pub seeders: Option<u32>,
    /// Leechers, if the tracker said.
    pub leechers: Option<u32>,
    /// When the tracker wants the next announce.
    pub interval: Duration,
    /// The tracker's warning message, if any.
    pub warning: Option<String>,
}

/// Coordinator → Tracker: start announcing (`started`, then every interval).
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrackerStart;

/// Coordinator → Tracker: the download completed; announce `completed` now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrackerCompleted;

/// Coordinator → Tracker: announce `stopped` (bounded in time) and stop. The reply comes
/// once the announce finished or timed out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TrackerStop;

// ---------------------------------------------------------------------------------------
// PieceManager housekeeping (Coordinator → PieceManager)
// ---------------------------------------------------------------------------------------

/// Coordinator → PieceManager: the torrent is stopping; take no more blocks, drop pieces
/// still missing blocks, and answer with the verified pieces once every complete piece is
/// hashed and written (or has failed).
#[derive(Message)]
#[rtype(result = "Bitfield")]
pub struct DrainPieces;

/// Coordinator → PieceManager: pieces found good on disk at start (hash check), so their
/// blocks are never assembled again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MarkDone {
    /// The pieces.
    pub pieces: Vec<PieceIndex>,
}

// ---------------------------------------------------------------------------------------
// Coordinator → FileWriter
// ---------------------------------------------------------------------------------------

/// Coordinator → FileWriter: create the folders and files (at their final size) and say
/// what was there before, for the resume check.
#[derive(Message)]
#[rtype(result = "Result<OpenReport, StorageError>")]
pub struct OpenStorage;

/// What [`OpenStorage`] found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Per file: its size and time before we touched it, `None` if it did not exist.
    pub before: Vec<FileRecord>,
    /// The resume file's bytes, if there was one.
    pub resume: Option<Vec<u8>>,
    /// The part file's size and time before this run; `None` if there was none, or it
    /// belonged to another torrent.
    pub parts_before: Option<FileRecord>,
}

/// Coordinator → FileWriter: record which pieces are verified. The file is written to a
/// temporary name, synced and renamed over the old one, so a crash at any moment leaves
/// the old or the new file. Data files are not synced here: the FileWriter's single thread
/// has already written every piece the record names, and a process crash does not lose
/// the page cache. Syncing them on every save would stall the writer (and, through
/// backpressure, the peers) for the whole writeback. They are synced by [`CloseStorage`].
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct SaveResume {
    /// The state to record; the writer fills in the file sizes and times.
    pub data: ResumeData,
}

/// Coordinator → FileWriter: close every file (end of download or shutdown), syncing the
/// written ones to disk first if asked. Without the sync the data is in the page cache,
/// which a process crash does not lose; syncing 1 GiB takes about 1.4 s here, so it is the
/// user's choice (`get --fsync`).
#[derive(Message)]
#[rtype(result = "Result<(), StorageError>")]
pub struct CloseStorage {
    /// Sync written files before closing them.
    pub sync: bool,
}

/// Session → FileWriter: delete what a stopped torrent left in its folder, beneath the
/// folder's handle. The reply lists what could not be deleted, each with its reason.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub enum DeleteFiles {
    /// The resume file only, so the next start checks every piece on disk (a recheck).
    Resume,
    /// Every file of the torrent, its resume, reserve and part files, and the folders
    /// they leave empty; never the torrent's folder itself (a removal with its data).
    Everything,
}

// ---------------------------------------------------------------------------------------
// Peer → FileReader
// ---------------------------------------------------------------------------------------

/// Peer or Coordinator → FileReader (SyncArbiter pool): read a range of one piece, a
/// window of blocks to upload or a whole piece to check. The sender has checked that the
/// range is inside the piece.
#[derive(Message)]
#[rtype(result = "Result<Bytes, StorageError>")]
pub struct ReadBlock {
    /// Which piece.
    pub piece: PieceIndex,
    /// Offset inside the piece.
    pub offset: u32,
    /// Bytes to read.
    pub length: u32,
}

/// Coordinator → FileReader (SyncArbiter pool): does a piece on disk match its hash? The
/// start-up check of data found on disk. The reader hashes the piece as it reads it, a
/// window at a time, so a check costs one window of memory however long the torrent
/// says its pieces are.
#[derive(Message)]
#[rtype(result = "Result<crate::metainfo::Verdict, StorageError>")]
pub struct CheckPiece {
    /// Which piece.
    pub piece: PieceIndex,
    /// The hash from the metainfo (SHA-1, a v2 piece's Merkle node, or a hybrid's both).
    pub expected: crate::metainfo::PieceCheck,
}

// ---------------------------------------------------------------------------------------
// Peer → RateLimiter
// ---------------------------------------------------------------------------------------

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bytes we send.
    Upload,
    /// Bytes we receive.
    Download,
}

/// Peer → RateLimiter: may `bytes` move now? The reply comes when the torrent's limit
/// allows them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Grant {
    /// Which bucket.
    pub direction: Direction,
    /// How many bytes.
    pub bytes: u64,
}

/// Session → RateLimiter, or Coordinator → its RateLimiter: new limits in bytes per second
/// (0 for none), from now on. Grants already handed out keep their delays.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetRates {
    /// Upload limit.
    pub upload: u64,
    /// Download limit.
    pub download: u64,
}

// ---------------------------------------------------------------------------------------
// Listener ↔ Coordinator (one listening socket for many torrents)
// ---------------------------------------------------------------------------------------

/// Session → Listener: hand incoming peers whose handshake names `info_hash` to `to` (a
/// Coordinator). Replaces an earlier route for the same info-hash.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Route {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Where its incoming peers go.
    pub to: Recipient<IncomingPeer>,
    /// That Coordinator's counters, where hand-offs that fail count as backpressure.
    pub metrics: std::sync::Arc<super::metrics::ActorMetrics>,
}

/// Session → Listener: the torrent is gone; its incoming peers are closed from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unroute {
    /// The torrent.
    pub info_hash: InfoHash,
}

/// Listener → Coordinator: a connection whose handshake named this torrent. Our answer
/// is not sent yet: the Coordinator applies its limits first, then answers and starts a
/// Peer, or drops the stream (which closes it). Sent with `send` and a bounded wait (see
/// `engine/listener.rs`), so a Coordinator momentarily behind on its mailbox delays the
/// connection instead of costing it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct IncomingPeer {
    /// The connection, with the peer's handshake read from it and our answer not yet
    /// written (an encrypted handshake is already done).
    pub stream: super::transport::PeerStream,
    /// The peer's address.
    pub addr: SocketAddr,
    /// The handshake it sent.
    pub handshake: Handshake,
}

// ---------------------------------------------------------------------------------------
// Session → Coordinator queries and controls (the `serve` daemon's pages)
// ---------------------------------------------------------------------------------------

/// Session → Coordinator: change the torrent's own rate limits (bytes per second, 0 for
/// none). Forwarded to its RateLimiter as [`SetRates`]; a torrent started with no limiter
/// (no limits and no global limiter) logs the request and ignores it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetTorrentRates {
    /// Upload limit.
    pub upload: u64,
    /// Download limit.
    pub download: u64,
}

/// Session → Coordinator: the connected peers, for a peer table.
#[derive(Message)]
#[rtype(result = "Vec<PeerInfo>")]
pub struct GetPeerList;

/// One connected peer, as [`GetPeerList`] shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerInfo {
    /// Its remote address.
    pub addr: SocketAddr,
    /// Its client, read from its peer id (`ids::client_name`).
    pub client: String,
    /// We dialed it.
    pub outgoing: bool,
    /// Block bytes per second it sends us, smoothed.
    pub down_rate: f64,
    /// Block bytes per second we send it, smoothed.
    pub up_rate: f64,
    /// The share of the torrent's pieces it has, 0 to 1.
    pub progress: f64,
    /// We refuse to upload to it.
    pub am_choking: bool,
    /// We want its pieces.
    pub am_interested: bool,
    /// It refuses to upload to us.
    pub peer_choking: bool,
    /// It wants our pieces.
    pub peer_interested: bool,
}

/// Session → Coordinator: the torrent's web seeds (BEP 19) and where each stands, for a
/// source list.
#[derive(Message)]
#[rtype(result = "Vec<super::webseed::WebSeedStatus>")]
pub struct GetWebSeedList;

/// Session → Coordinator: which pieces we have and which are being fetched, for a piece map.
#[derive(Message)]
#[rtype(result = "PieceMap")]
pub struct GetPieceMap;

/// The answer to [`GetPieceMap`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct PieceMap {
    /// Pieces in the torrent.
    pub pieces: usize,
    /// Verified pieces as bitfield bytes, BEP 3 order (piece 0 is the high bit of byte 0).
    pub have: Vec<u8>,
    /// Pieces holding a byte of a file to download, in the same bit order: a piece
    /// neither had nor wanted is "not wanted" (only in skipped files), not missing.
    pub wanted: Vec<u8>,
    /// Pieces with blocks requested or received and not yet complete, ascending; empty
    /// until the start-up check is done.
    pub downloading: Vec<u32>,
    /// Each open stream's read position and the last piece of its read-ahead window
    /// (both piece indices), so a piece map can show where players read.
    pub streams: Vec<[u32; 2]>,
}

/// Session → Coordinator: each file's verified bytes, for a file list.
#[derive(Message)]
#[rtype(result = "Vec<FileProgress>")]
pub struct GetFileProgress;

/// One file of the torrent, as [`GetFileProgress`] shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileProgress {
    /// Its index (BEP 53, padding files counted).
    pub index: usize,
    /// Its path inside the torrent, components joined with `/`.
    pub path: String,
    /// Its size in bytes.
    pub length: u64,
    /// It is downloaded (padding files never are).
    pub selected: bool,
    /// Skip (not selected), normal or high (its pieces start first).
    pub priority: super::selection::FilePriority,
    /// Its bytes inside verified pieces.
    pub verified_bytes: u64,
}

// ---------------------------------------------------------------------------------------
// Torrent → front end (`get`'s Console, the daemon's EventTap)
// ---------------------------------------------------------------------------------------

/// What a torrent tells its front end (`get`'s Console, the daemon's EventTap).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum TorrentEvent {
    /// Periodic status.
    Progress(Progress),
    /// Every wanted piece is verified and written; files are closed (synced with
    /// `--fsync`).
    Completed(Progress),
    /// The torrent cannot continue (disk full, unwritable folder).
    Failed(FailureKind, String),
    /// A magnet link's metadata arrived and matched its info-hash; the download starts
    /// (unless the fetcher was started with `hand_over: false`, which stops here).
    MetadataReceived {
        /// The torrent's name.
        name: String,
        /// Its wanted size in bytes.
        total_bytes: u64,
        /// Where the `.torrent` was saved for reuse, if saving worked.
        torrent_file: Option<std::path::PathBuf>,
        /// The complete `.torrent` file, as saved (or as it would have been).
        torrent: Bytes,
        /// The same, parsed, when the fetcher hands the torrent to the front end
        /// (`hand_over: false`) instead of starting the Coordinator itself, so the front end
        /// does not parse it again.
        metainfo: Option<std::sync::Arc<crate::metainfo::Metainfo>>,
    },
    /// A tracker's status changed: an announce began or ended, or its URL proved
    /// unusable. Sent on every change, so a front end decides what is worth showing.
    Tracker(TrackerStatus),
    /// The Coordinator a magnet's fetcher started (`hand_over: true`) is running; its
    /// files can be streamed through `source`. Sent once, after `MetadataReceived`.
    Running {
        /// The new Coordinator's stream recipients and layout.
        source: crate::engine::stream::StreamSource,
    },
}

/// Classes of fatal failure, so the front end can choose an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The disk is full.
    DiskFull,
    /// Another filesystem error (permission denied, folder not writable).
    Storage,
    /// The torrent itself is unusable, e.g. metadata from a magnet link that matches its
    /// info-hash but is not a valid info dictionary.
    InvalidTorrent,
}

/// A snapshot for display.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Checking existing data, downloading, or complete.
    pub phase: Phase,
    /// Wanted bytes in total.
    pub total_bytes: u64,
    /// Wanted bytes verified.
    pub verified_bytes: u64,
    /// Pieces checked so far at start, and how many to check.
    pub checked: (usize, usize),
    /// Connected peers, and web seeds in use.
    pub peers: usize,
    /// Connected peers that have every piece, and web seeds in use.
    pub seeds: usize,
    /// Verified bytes per second over the last few seconds.
    pub rate: f64,
    /// Block bytes per second uploaded over the last few seconds.
    pub upload_rate: f64,
    /// Bytes verified by this run (not counting what was on disk before).
    pub downloaded_this_run: u64,
    /// Block bytes uploaded this run.
    pub uploaded: u64,
    /// Where we accept peers, once listening.
    pub listen: Option<SocketAddr>,
    /// Block bytes received this run, wasted ones included (failed pieces, endgame
    /// duplicates), as the Peers last reported them (once a second each), and never
    /// less than `downloaded_this_run`.
    pub received: u64,
    /// Pieces that failed their hash this run.
    pub hash_failures: u64,
    /// Addresses banned this run.
    pub banned: usize,
}

/// Where a torrent is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// A magnet link: fetching the info dictionary from peers.
    Metadata,
    /// Opening files and checking existing data.
    #[default]
    Checking,
    /// Fetching pieces.
    Downloading,
    /// Everything wanted is verified.
    Complete,
}

/// `get` or Session → Coordinator: stop the torrent cleanly. Replies once the PieceManager is drained,
/// the files closed and the resume file saved, then `stopped` announced (bounded in time).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;
