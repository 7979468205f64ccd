//! The PieceManager: owns the data of pieces being assembled, and the record of which
//! pieces are verified and on disk.
//!
//! Blocks come from Peers and web seeds (`StoreBlocks`). Pieces are put together one of
//! two ways, chosen per torrent by [`PieceMode::for_torrent`]:
//!
//! - **Whole** (pieces the budgets can hold): when a piece has all its blocks it is sent
//!   to the Hasher pool, then, if its hash matches, to the FileWriter.
//! - **Streamed** (pieces too large for the budgets, up to 512 MiB): each block is written
//!   as it arrives (`WriteBlock`) and the piece is hashed incrementally, in block order,
//!   from the blocks kept in a small window or read back from disk (`streamed.rs`).
//!
//! Either way a piece is reported verified to the Coordinator only once its hash matched
//! and all of it is on disk, so a `have` is never announced (nor a resume file written)
//! for data that is not there or not checked.
//!
//! On `DrainPieces` (a stop) it takes no more blocks, drops the pieces still missing
//! some, and answers with its verified pieces once every complete piece is hashed and
//! written (or failed), so the resume file saved next claims all of them and no write
//! comes after the storage closes.
//!
//! Memory is bounded twice. Blocks of pieces still being assembled are bounded by the
//! Coordinator's budget of pieces in progress (a piece is only requested once started; a
//! streamed piece counts its window and block records, not its length). Data waiting for
//! the disk and the hasher is bounded here: while it exceeds `max_pending_bytes` (whole
//! pieces sent to hash and write, blocks of streamed pieces sent to write), the reply to
//! `StoreBlocks` is held back. That reply is the Peer's credit coming back: a Peer with
//! [`STORE_CREDIT`](super::peer::STORE_CREDIT) of blocks not yet answered asks for no
//! more (and only that). A slow disk thus slows the sockets, and TCP slows the
//! senders.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use futures::channel::oneshot;
use futures::FutureExt;
use slog::{debug, warn, Logger};

use super::messages::{
    BadData, CheckPiece, DigestBlocks, DrainPieces, HashBlocks, HashPiece, HashStored,
    HashesDisagree, LeafHashes, MarkDone, PieceFailed, PieceVerified, ReceivedBlock, StorageError,
    StorageFailed, StoreBlocks, WantLeafHashes, WriteBlock, WritePiece,
};
use super::metrics::{ActorMetrics, OwnMetrics, Tracked, TrackedRecipient};
use super::smart_ban::SmartBan;
use super::storage::{FileReader, FileWriter, Hasher};
use super::streamed::{HashStep, PieceMode, StreamedPiece, HASH_WINDOW_BLOCKS};
use super::PeerKey;
use crate::layout::{Layout, PieceIndex, BLOCK_SIZE};
use crate::metainfo::{Info, PieceCheck, Verdict};
use crate::wire::Bitfield;

/// A piece being put together from blocks.
enum Assembly {
    /// Held whole in memory until complete.
    Whole(WholePiece),
    /// Written block by block and hashed as it comes.
    Streamed(Streaming),
}

/// A streamed piece in progress.
struct Streaming {
    /// Its blocks' senders, hash window and running SHA-1.
    piece: StreamedPiece,
    /// Which attempt at the piece this is: replies from the pools for an attempt that was
    /// forgotten (failed, or found on disk) must not touch a newer one.
    attempt: u64,
}

/// A whole piece in progress.
struct WholePiece {
    /// Block data by block index, `None` until it arrives.
    blocks: Vec<Option<Bytes>>,
    /// Who sent each block, for blaming a hash failure.
    senders: Vec<Option<PeerKey>>,
    /// Blocks present.
    received: u32,
}

/// Where the PieceManager reports.
pub struct PieceManagerLinks {
    /// Told of verified pieces.
    pub verified: TrackedRecipient<PieceVerified>,
    /// Told of failed pieces.
    pub failed: TrackedRecipient<PieceFailed>,
    /// Told of peers certainly to blame for bad data.
    pub bad_data: TrackedRecipient<BadData>,
    /// Told of write failures.
    pub storage_failed: TrackedRecipient<StorageFailed>,
    /// Told of a hybrid whose two hashes of a piece disagree.
    pub inconsistent: TrackedRecipient<HashesDisagree>,
    /// Asked to fetch a failed v2 piece's leaf hashes from peers.
    pub want_hashes: TrackedRecipient<WantLeafHashes>,
    /// Where the PieceManager's own counters go (the engine's metrics).
    pub metrics: Arc<ActorMetrics>,
}

/// See the module documentation.
pub struct PieceManager {
    /// Piece hashes and layout.
    info: Arc<Info>,
    /// Pieces being assembled.
    assembling: HashMap<u32, Assembly>,
    /// Whole or streamed pieces, for the whole torrent.
    mode: PieceMode,
    /// Verified and written: blocks for these pieces are late duplicates and dropped.
    done: Bitfield,
    /// Complete pieces being hashed or written: late endgame copies of their blocks are
    /// dropped too, or they would open an assembly that nothing ever closes.
    finishing: HashSet<u32>,
    /// Bytes of complete pieces sent to hash or write and not finished, and of streamed
    /// blocks sent to write and not written.
    pending_bytes: u64,
    /// Above this, `StoreBlocks` replies wait.
    max_pending_bytes: u64,
    /// Held `StoreBlocks` replies, released in arrival order as pending bytes drain.
    waiting: VecDeque<oneshot::Sender<()>>,
    hasher: Tracked<Hasher>,
    writer: Tracked<FileWriter>,
    /// Reads streamed pieces back from disk, for their hash and block digests.
    reader: Tracked<FileReader>,
    /// The next streamed attempt's number.
    next_attempt: u64,
    links: PieceManagerLinks,
    metrics: OwnMetrics,
    /// After a write failure nothing more is written: the torrent is stopping.
    broken: bool,
    /// How many times each piece failed its hash: the current attempt at it. A block
    /// requested for an earlier attempt (it was on its way when the piece failed) is
    /// dropped, so it never mixes into the next one: a piece fetched again from one
    /// peer (parole) holds that peer's blocks alone.
    failures: HashMap<u32, u32>,
    /// `DrainPieces` came: the torrent is stopping, and no block is taken any more.
    draining: bool,
    /// `DrainPieces` replies, sent once nothing taken is still on its way to the disk.
    drained: Vec<oneshot::Sender<Bitfield>>,
    /// Who sent which block of pieces that failed, until a good copy names the liar.
    smart_ban: SmartBan,
    /// Failed v2 pieces whose leaves were asked of peers: our leaf hashes and each
    /// block's sender, until a peer's leaves (checked against the piece's node) name the
    /// bad blocks. At most [`MERKLE_BLAME_PIECES`].
    merkle_blame: HashMap<u32, MerkleBlame>,
    log: Logger,
}

/// Failed v2 pieces waiting for their leaves at most; one leaf hash and one key per
/// block each (a 16 MiB piece: 1024 of each).
const MERKLE_BLAME_PIECES: usize = 64;

/// A failed v2 piece waiting for a peer's leaves.
struct MerkleBlame {
    /// The leaf hash of each block of file bytes we got.
    leaves: Vec<[u8; 32]>,
    /// Who sent each of those blocks.
    senders: Vec<PeerKey>,
}

/// Failed pieces remembered for smart ban at most; one digest and key per block each.
const SMART_BAN_PIECES: usize = 256;

/// Block records (digest and sender) smart ban keeps at most, all pieces together: about
/// 4 MiB, two attempts at a 512 MiB piece.
const SMART_BAN_RECORDS: usize = 1 << 16;

impl PieceManager {
    /// A PieceManager for `info`, with `done` the pieces already verified on disk,
    /// assembling pieces the `mode` way.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        info: Arc<Info>,
        done: Bitfield,
        mode: PieceMode,
        max_pending_bytes: u64,
        hasher: Tracked<Hasher>,
        writer: Tracked<FileWriter>,
        reader: Tracked<FileReader>,
        links: PieceManagerLinks,
        log: Logger,
    ) -> Self {
        let metrics = links.metrics.clone();
        // At least one piece (whole) or one block (streamed) may always be pending, or a
        // budget below it would stall every peer forever.
        let floor = match mode {
            PieceMode::Whole => u64::from(info.layout.piece_length()),
            PieceMode::Streamed => u64::from(BLOCK_SIZE),
        };
        Self {
            info,
            assembling: HashMap::new(),
            mode,
            done,
            finishing: HashSet::new(),
            pending_bytes: 0,
            max_pending_bytes: max_pending_bytes.max(floor),
            waiting: VecDeque::new(),
            hasher,
            writer,
            reader,
            next_attempt: 0,
            links,
            broken: false,
            failures: HashMap::new(),
            draining: false,
            drained: Vec::new(),
            smart_ban: SmartBan::new(SMART_BAN_PIECES, SMART_BAN_RECORDS),
            merkle_blame: HashMap::new(),
            metrics: OwnMetrics::started(metrics),
            log,
        }
    }

    fn layout(&self) -> &Layout {
        &self.info.layout
    }

    /// Hash, then write, then report one complete piece. Runs concurrently with other
    /// pieces; the hasher pool and the writer's mailbox queue the work.
    fn finish_piece(&mut self, piece: PieceIndex, assembly: WholePiece, ctx: &mut Context<Self>) {
        let len = u64::from(self.layout().piece_len(piece));
        self.pending_bytes += len;
        self.finishing.insert(piece.get());
        let blocks: Vec<Bytes> = assembly.blocks.into_iter().flatten().collect();
        let senders: Vec<PeerKey> = assembly.senders.into_iter().flatten().collect();
        let expected = self.info.piece_check(piece);
        let hasher = self.hasher.clone();
        let writer = self.writer.clone();
        let block_digests = self.smart_ban.remembers(piece.get());
        let tracer = self.metrics.tracer().map(|t| (t, self.metrics.instance()));
        // Polled as this PieceManager's work: the hash and write it asks for are its sends.
        let work = self.metrics.scoped(async move {
            let hashed = hasher
                .send(HashPiece {
                    blocks: blocks.clone(),
                    expected,
                    block_digests,
                })
                .await
                .unwrap_or_default();
            let digests = hashed.block_digests.unwrap_or_default();
            match hashed.verdict {
                Verdict::Passed => {}
                Verdict::Failed => return Outcome::Failed(senders, digests, hashed.leaf_hashes),
                Verdict::Inconsistent => return Outcome::Inconsistent,
            }
            let count = blocks.len() as u32;
            trace_piece(&tracer, piece, count, super::trace::Hop::Hashed);
            match writer.send(WritePiece { piece, blocks }).await {
                Ok(Ok(true)) => {
                    trace_piece(&tracer, piece, count, super::trace::Hop::Written);
                    Outcome::Written(digests)
                }
                // The storage closed first (a stop that gave up waiting): not on disk,
                // so not recorded.
                Ok(Ok(false)) => Outcome::Refused,
                Ok(Err(e)) => Outcome::WriteFailed(e),
                Err(e) => Outcome::WriteFailed(StorageError {
                    path: String::new(),
                    message: format!("file writer unavailable: {e}"),
                    disk_full: false,
                }),
            }
        });
        ctx.spawn(
            self.metrics
                .id()
                .on(work.into_actor(self).map(move |outcome, act, _| {
                    act.pending_bytes -= len;
                    act.piece_finished(piece, outcome);
                })),
        );
    }

    /// Reports how a piece sent to hash (and write) ended, and lets held replies go.
    fn piece_finished(&mut self, piece: PieceIndex, outcome: Outcome) {
        // A future's end, not a message: timed as this actor's work all the same.
        let _timing = self.metrics.handling_unqueued("piece finished");
        self.finishing.remove(&piece.get());
        match outcome {
            Outcome::Written(digests) => {
                let _ = self.done.set(piece.get());
                self.links.verified.do_send(PieceVerified { piece });
                for (from, bad_blocks) in self.smart_ban.passed(piece.get(), &digests) {
                    self.links.bad_data.do_send(BadData {
                        from,
                        piece,
                        bad_blocks,
                    });
                }
            }
            Outcome::Failed(senders, digests, leaves) => {
                warn!(self.log, "piece failed its hash"; "piece" => piece.get());
                if let Some(leaves) = leaves {
                    self.ask_for_leaves(piece, leaves, &senders);
                }
                *self.failures.entry(piece.get()).or_default() += 1;
                let mut distinct = senders.clone();
                distinct.sort_unstable();
                distinct.dedup();
                self.links.failed.do_send(PieceFailed {
                    piece,
                    senders: distinct,
                });
                if let Some(from) = self.smart_ban.failed(piece.get(), &senders, &digests) {
                    self.links.bad_data.do_send(BadData {
                        from,
                        piece,
                        bad_blocks: 0,
                    });
                }
            }
            Outcome::Inconsistent => {
                warn!(self.log, "piece passed one of the hybrid's hashes and failed the other"; "piece" => piece.get());
                self.links.inconsistent.do_send(HashesDisagree { piece });
            }
            Outcome::WriteFailed(error) => self.write_failed(error),
            Outcome::Refused => {
                debug!(self.log, "piece refused by the closed storage"; "piece" => piece.get());
            }
        }
        self.release_waiting();
        self.check_drained();
    }

    /// A v2 piece failed: remember our leaves and their senders, and have the
    /// Coordinator ask peers for the piece's true leaves.
    fn ask_for_leaves(&mut self, piece: PieceIndex, leaves: Vec<[u8; 32]>, senders: &[PeerKey]) {
        let PieceCheck::Merkle(merkle) = self.info.piece_check(piece) else {
            return;
        };
        let Some(request) = merkle.leaf_request() else {
            return;
        };
        if self.merkle_blame.len() >= MERKLE_BLAME_PIECES
            && !self.merkle_blame.contains_key(&piece.get())
        {
            return;
        }
        let senders = senders.iter().copied().take(leaves.len()).collect();
        self.merkle_blame
            .insert(piece.get(), MerkleBlame { leaves, senders });
        self.links
            .want_hashes
            .do_send(WantLeafHashes { piece, request });
    }

    /// A write (or a read back of a streamed piece) failed: the torrent is stopping, and
    /// nothing more is written.
    fn write_failed(&mut self, error: StorageError) {
        if !self.broken {
            self.broken = true;
            self.links.storage_failed.do_send(StorageFailed { error });
        }
        self.assembling.clear();
    }

    /// Takes one block of a [`StoreBlocks`]: kept if its piece is still wanted at this
    /// attempt, into the piece's assembly (whole or streamed).
    fn store_block(&mut self, from: PeerKey, block: ReceivedBlock, ctx: &mut Context<Self>) {
        if let Some(tracer) = self.metrics.tracer() {
            let id = super::trace::block_id(block.piece.get(), block.offset);
            tracer.flow(
                "PieceManager",
                self.metrics.instance(),
                id,
                super::trace::Hop::Stored,
            );
        }
        let piece = block.piece;
        let current = self.failures.get(&piece.get()).copied().unwrap_or(0);
        let wanted = !self.done.has(piece.get())
            && !self.finishing.contains(&piece.get())
            && block.attempt >= current;
        if wanted && !self.broken && self.mode == PieceMode::Streamed {
            self.store_streamed(from, block, ctx);
        } else if wanted && !self.broken {
            self.store_whole(from, block, ctx);
        }
    }

    /// Takes a block of a whole piece: keeps it, and finishes the piece once complete.
    fn store_whole(&mut self, from: PeerKey, msg: ReceivedBlock, ctx: &mut Context<Self>) {
        let piece = msg.piece;
        let num_blocks = self.layout().num_blocks(piece) as usize;
        let b = (msg.offset / BLOCK_SIZE) as usize;
        let entry = self.assembling.entry(piece.get()).or_insert_with(|| {
            Assembly::Whole(WholePiece {
                blocks: vec![None; num_blocks],
                senders: vec![None; num_blocks],
                received: 0,
            })
        });
        let Assembly::Whole(assembly) = entry else {
            return;
        };
        // The Peer checked the block against its own requests, so offset and length are
        // those of a real block; a second copy (endgame) is simply dropped.
        if let Some(slot @ None) = assembly.blocks.get_mut(b) {
            *slot = Some(msg.data);
            assembly.senders[b] = Some(from);
            assembly.received += 1;
            if assembly.received as usize == num_blocks {
                if let Some(Assembly::Whole(assembly)) = self.assembling.remove(&piece.get()) {
                    debug!(self.log, "piece complete"; "piece" => piece.get());
                    self.finish_piece(piece, assembly, ctx);
                }
            }
        }
    }

    /// Takes a block of a streamed piece: records it, writes it, and hashes what can be.
    fn store_streamed(&mut self, from: PeerKey, msg: ReceivedBlock, ctx: &mut Context<Self>) {
        let piece = msg.piece;
        let b = msg.offset / BLOCK_SIZE;
        let num_blocks = self.layout().num_blocks(piece);
        let next_attempt = &mut self.next_attempt;
        let Assembly::Streamed(s) = self.assembling.entry(piece.get()).or_insert_with(|| {
            *next_attempt += 1;
            Assembly::Streamed(Streaming {
                piece: StreamedPiece::new(num_blocks, HASH_WINDOW_BLOCKS),
                attempt: *next_attempt,
            })
        }) else {
            return;
        };
        // A second copy (endgame) is dropped, never written twice.
        if !s.piece.receive(b, from, &msg.data) {
            return;
        }
        let attempt = s.attempt;
        let len = msg.data.len() as u64;
        self.pending_bytes += len;
        let write = self.writer.send(WriteBlock {
            piece,
            offset: msg.offset,
            data: msg.data,
        });
        ctx.spawn(
            self.metrics
                .id()
                .on(write.into_actor(self).map(move |res, act, ctx| {
                    act.pending_bytes -= len;
                    match res {
                        Ok(Ok(true)) => {
                            if let Some(s) = act.streaming(piece, attempt) {
                                s.piece.written(b);
                            }
                            act.advance_streamed(piece, ctx);
                        }
                        // The storage is closed: the run is ending, and this piece cannot be
                        // finished. Nothing of it is claimed.
                        Ok(Ok(false)) => {
                            if act.streaming(piece, attempt).is_some() {
                                act.assembling.remove(&piece.get());
                            }
                        }
                        Ok(Err(e)) => act.write_failed(e),
                        Err(e) => act.write_failed(StorageError {
                            path: String::new(),
                            message: format!("file writer unavailable: {e}"),
                            disk_full: false,
                        }),
                    }
                    act.release_waiting();
                    act.check_drained();
                })),
        );
        self.advance_streamed(piece, ctx);
    }

    /// The streamed attempt `attempt` at `piece`, if it is still the one in progress.
    fn streaming(&mut self, piece: PieceIndex, attempt: u64) -> Option<&mut Streaming> {
        match self.assembling.get_mut(&piece.get()) {
            Some(Assembly::Streamed(s)) if s.attempt == attempt => Some(s),
            _ => None,
        }
    }

    /// Sends a streamed piece's next hashing step, or finishes it once every block is
    /// written and hashed.
    fn advance_streamed(&mut self, piece: PieceIndex, ctx: &mut Context<Self>) {
        let Some(Assembly::Streamed(s)) = self.assembling.get_mut(&piece.get()) else {
            return;
        };
        let attempt = s.attempt;
        if s.piece.is_complete() {
            if let Some(Assembly::Streamed(s)) = self.assembling.remove(&piece.get()) {
                debug!(self.log, "streamed piece complete"; "piece" => piece.get());
                self.finish_streamed(piece, s.piece, ctx);
            }
            return;
        }
        let Some(step) = s.piece.next_step() else {
            return;
        };
        let hashed = match step {
            HashStep::Memory { state, blocks } => {
                let hasher = self.hasher.clone();
                async move {
                    // A closed pool (the run is ending): no error of the storage.
                    hasher
                        .send(HashBlocks { state, blocks })
                        .await
                        .map_err(|_| None)
                }
                .boxed_local()
            }
            HashStep::Disk {
                state,
                first,
                count,
            } => {
                let piece_len = self.layout().piece_len(piece);
                let offset = first * BLOCK_SIZE;
                let length = (count * BLOCK_SIZE).min(piece_len - offset);
                let reader = self.reader.clone();
                async move {
                    let stored = HashStored {
                        piece,
                        offset,
                        length,
                        state,
                    };
                    match reader.send(stored).await {
                        Ok(Ok(state)) => Ok(state),
                        Ok(Err(e)) => Err(Some(e)),
                        Err(_) => Err(None),
                    }
                }
                .boxed_local()
            }
        };
        ctx.spawn(self.metrics.id().on(hashed.into_actor(self).map(move |state, act, ctx| {
            let Some(s) = act.streaming(piece, attempt) else {
                return;
            };
            match state {
                Ok(state) => {
                    s.piece.step_done(state);
                    act.advance_streamed(piece, ctx);
                }
                // Our own data could not be read back: as for a failed write, the
                // torrent stops rather than fetch the piece forever.
                Err(Some(error)) => act.write_failed(error),
                // A closed pool: the piece cannot be checked, so it counts as failed
                // and is fetched again (if the run goes on).
                Err(None) => {
                    act.assembling.remove(&piece.get());
                    warn!(act.log, "streamed piece could not be hashed"; "piece" => piece.get());
                    *act.failures.entry(piece.get()).or_default() += 1;
                    act.links.failed.do_send(PieceFailed {
                        piece,
                        senders: Vec::new(),
                    });
                }
            }
            act.check_drained();
        })));
    }

    /// Compares a streamed piece's digest; reads its block digests back from disk when
    /// it failed or smart ban waits for its good copy; then reports it.
    fn finish_streamed(&mut self, piece: PieceIndex, done: StreamedPiece, ctx: &mut Context<Self>) {
        self.finishing.insert(piece.get());
        let (digest, senders) = done.finish();
        let check = self.info.piece_check(piece);
        // The running SHA-1 serves a v1 check. A Merkle check (a v2 piece's, or both of a
        // hybrid's, whose padding reads back as the zeros it must be) reads the piece
        // back from disk, a window at a time, as the start-up check does.
        let running = match check {
            PieceCheck::Sha1(expected) => Some(digest == expected),
            PieceCheck::Merkle(_) | PieceCheck::Both(..) => None,
        };
        let remembered = self.smart_ban.remembers(piece.get());
        let reader = self.reader.clone();
        let work = async move {
            let verdict = match running {
                Some(true) => Verdict::Passed,
                Some(false) => Verdict::Failed,
                None => match reader
                    .send(CheckPiece {
                        piece,
                        expected: check,
                    })
                    .await
                {
                    Ok(Ok(verdict)) => verdict,
                    // The piece cannot be read back: the storage failed, not the data.
                    Ok(Err(e)) => return Outcome::WriteFailed(e),
                    Err(_) => Verdict::Failed,
                },
            };
            let ok = match verdict {
                Verdict::Passed => true,
                Verdict::Failed => false,
                Verdict::Inconsistent => return Outcome::Inconsistent,
            };
            let digests = if !ok || remembered {
                // Without them smart ban learns nothing from this piece; the verdict on
                // the piece itself stands.
                match reader.send(DigestBlocks { piece }).await {
                    Ok(Ok(d)) => d,
                    _ => Vec::new(),
                }
            } else {
                Vec::new()
            };
            if ok {
                Outcome::Written(digests)
            } else {
                Outcome::Failed(senders, digests, None)
            }
        };
        ctx.spawn(
            self.metrics.id().on(work
                .into_actor(self)
                .map(move |outcome, act, _| act.piece_finished(piece, outcome))),
        );
    }

    /// Answers `DrainPieces` once nothing taken is still on its way to the disk: no whole
    /// piece in hash or write, no streamed block in write, no complete streamed piece
    /// still hashing (the drain dropped the incomplete ones).
    fn check_drained(&mut self) {
        if !self.draining
            || self.drained.is_empty()
            || self.pending_bytes > 0
            || !self.finishing.is_empty()
            || !self.assembling.is_empty()
        {
            return;
        }
        for tx in self.drained.drain(..) {
            let _ = tx.send(self.done.clone());
        }
    }

    /// Lets held `StoreBlocks` replies go while there is room.
    fn release_waiting(&mut self) {
        while self.pending_bytes < self.max_pending_bytes {
            match self.waiting.pop_front() {
                Some(tx) => {
                    let _ = tx.send(());
                }
                None => break,
            }
        }
    }
}

enum Outcome {
    /// Verified and on disk; the block digests if smart ban asked for them.
    Written(Vec<[u8; 20]>),
    /// Failed its hash: each block's sender and digest, and for a v2 piece held whole
    /// the leaf hash of each block of file bytes.
    Failed(Vec<PeerKey>, Vec<[u8; 20]>, Option<Vec<[u8; 32]>>),
    /// A hybrid's piece passed one of its hashes and failed the other.
    Inconsistent,
    WriteFailed(StorageError),
    /// Verified, but the storage was closed before it could be written.
    Refused,
}

impl Actor for PieceManager {
    type Context = Context<Self>;
}

/// Records, when tracing, that every block of `piece` passed `hop` (at the PieceManager,
/// which awaits the hash and the write).
fn trace_piece(
    tracer: &Option<(Arc<super::trace::Tracer>, u64)>,
    piece: PieceIndex,
    blocks: u32,
    hop: super::trace::Hop,
) {
    if let Some((tracer, instance)) = tracer {
        tracer.piece_flow("PieceManager", *instance, piece.get(), blocks, hop);
    }
}

impl Handler<StoreBlocks> for PieceManager {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StoreBlocks, ctx: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<StoreBlocks>();
        // Stopping: the blocks are dropped, and their Peer is not held back.
        if self.draining {
            return Box::pin(async {});
        }
        let from = msg.from;
        for block in msg.blocks {
            self.store_block(from, block, ctx);
        }
        if self.pending_bytes < self.max_pending_bytes {
            Box::pin(async {})
        } else {
            let (tx, rx) = oneshot::channel();
            self.metrics.held_back();
            self.waiting.push_back(tx);
            Box::pin(async move {
                let _ = rx.await;
            })
        }
    }
}

/// Step 2 of a stop (ARCHITECTURE.md, "Shutdown order").
impl Handler<DrainPieces> for PieceManager {
    type Result = ResponseFuture<Bitfield>;

    fn handle(&mut self, _: DrainPieces, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<DrainPieces>();
        self.draining = true;
        // A piece still missing blocks is never finished, and nothing of it was recorded.
        // A streamed piece whose blocks all came is complete: it is hashed to the end.
        self.assembling
            .retain(|_, a| matches!(a, Assembly::Streamed(s) if s.piece.all_received()));
        // No block is kept from now on, so no Peer need wait for room.
        for tx in self.waiting.drain(..) {
            let _ = tx.send(());
        }
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        self.check_drained();
        let pieces = self.done.num_pieces();
        // Only a PieceManager that stopped drops the sender: nothing known, nothing claimed.
        Box::pin(async move { rx.await.unwrap_or_else(|_| Bitfield::new(pieces)) })
    }
}

impl Handler<LeafHashes> for PieceManager {
    type Result = ();

    /// A peer's leaves for a failed v2 piece: checked against the piece's node, then
    /// each of our blocks whose leaf differs names its sender, who is blamed for exactly
    /// those blocks. Leaves that do not hash to the node blame nobody (another peer's
    /// answer may still come).
    fn handle(&mut self, msg: LeafHashes, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<LeafHashes>();
        let PieceCheck::Merkle(merkle) = self.info.piece_check(msg.piece) else {
            return;
        };
        let Some(blame) = self.merkle_blame.get(&msg.piece.get()) else {
            return;
        };
        let Some(bad) = merkle.bad_blocks(&blame.leaves, &msg.leaves) else {
            debug!(self.log, "leaf hashes do not hash to the piece's node"; "piece" => msg.piece.get());
            return;
        };
        let Some(blame) = self.merkle_blame.remove(&msg.piece.get()) else {
            return;
        };
        let mut by_sender: HashMap<PeerKey, u32> = HashMap::new();
        for b in &bad {
            if let Some(from) = blame.senders.get(*b) {
                *by_sender.entry(*from).or_default() += 1;
            }
        }
        for (from, bad_blocks) in by_sender {
            warn!(self.log, "bad blocks blamed by the merkle tree"; "piece" => msg.piece.get(), "from" => from.0, "bad_blocks" => bad_blocks);
            self.links.bad_data.do_send(BadData {
                from,
                piece: msg.piece,
                bad_blocks,
            });
        }
    }
}

impl Handler<MarkDone> for PieceManager {
    type Result = ();

    fn handle(&mut self, msg: MarkDone, _: &mut Context<Self>) {
        let _timing = self.metrics.handling_of::<MarkDone>();
        for p in msg.pieces {
            let _ = self.done.set(p.get());
            self.assembling.remove(&p.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use sha1::{Digest, Sha1};

    use super::*;
    use crate::engine::messages::{CloseStorage, OpenStorage};
    use crate::engine::metrics::{ActorKind, ActorMetrics};
    use crate::engine::selection::SelectedFiles;
    use crate::InfoHash;

    /// Two blocks a piece, four pieces, one file `t`.
    const PIECE: usize = 2 * BLOCK_SIZE as usize;
    const PIECES: usize = 4;

    fn data() -> Vec<u8> {
        (0..PIECE * PIECES).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn info(data: &[u8]) -> Arc<Info> {
        let hashes: Vec<u8> = data.chunks(PIECE).flat_map(Sha1::digest).collect();
        let mut raw = format!(
            "d6:lengthi{}e4:name1:t12:piece lengthi{PIECE}e6:pieces{}:",
            data.len(),
            hashes.len()
        )
        .into_bytes();
        raw.extend_from_slice(&hashes);
        raw.push(b'e');
        Arc::new(Info::from_bytes(&raw).unwrap())
    }

    /// Takes the PieceManager's reports; with no log, only verified pieces are expected,
    /// and with one, verified and failed pieces are written down there.
    struct Reports(Option<ReportLog>);
    crate::takes_stamped!(Reports);

    /// (verified, piece) for each report, in order.
    type ReportLog = Arc<std::sync::Mutex<Vec<(bool, u32)>>>;

    impl Actor for Reports {
        type Context = Context<Self>;
    }

    impl Handler<PieceVerified> for Reports {
        type Result = ();
        fn handle(&mut self, msg: PieceVerified, _: &mut Context<Self>) {
            if let Some(log) = &self.0 {
                log.lock().unwrap().push((true, msg.piece.get()));
            }
        }
    }

    impl Handler<PieceFailed> for Reports {
        type Result = ();
        fn handle(&mut self, msg: PieceFailed, _: &mut Context<Self>) {
            match &self.0 {
                Some(log) => log.lock().unwrap().push((false, msg.piece.get())),
                None => panic!("piece {} failed", msg.piece),
            }
        }
    }

    impl Handler<BadData> for Reports {
        type Result = ();
        fn handle(&mut self, _: BadData, _: &mut Context<Self>) {}
    }

    impl Handler<WantLeafHashes> for Reports {
        type Result = ();
        fn handle(&mut self, _: WantLeafHashes, _: &mut Context<Self>) {}
    }

    impl Handler<HashesDisagree> for Reports {
        type Result = ();
        fn handle(&mut self, msg: HashesDisagree, _: &mut Context<Self>) {
            panic!("a v1 torrent's piece {} was called inconsistent", msg.piece);
        }
    }

    impl Handler<StorageFailed> for Reports {
        type Result = ();
        fn handle(&mut self, msg: StorageFailed, _: &mut Context<Self>) {
            panic!("storage failed: {}", msg.error);
        }
    }

    /// Block `b` of `piece`, alone in a `StoreBlocks` from peer 1.
    fn block(layout: &Layout, data: &[u8], piece: u32, b: u32) -> StoreBlocks {
        let start = piece as usize * PIECE + (b * BLOCK_SIZE) as usize;
        StoreBlocks {
            from: PeerKey(1),
            blocks: vec![ReceivedBlock {
                piece: layout.piece(piece).unwrap(),
                offset: b * BLOCK_SIZE,
                attempt: 0,
                data: Bytes::copy_from_slice(&data[start..start + BLOCK_SIZE as usize]),
            }],
        }
    }

    /// Starts a PieceManager over a FileWriter (every write slowed by 100 ms), a
    /// FileReader and a Hasher under `root`, reporting to `reports`.
    async fn start_pieces(
        root: &Path,
        info: Arc<Info>,
        mode: PieceMode,
        reports: Addr<Reports>,
    ) -> (Addr<PieceManager>, Addr<FileWriter>) {
        let root = root.to_path_buf();
        let m = |kind| Arc::new(ActorMetrics::detached(kind));
        let layout = Arc::new(info.layout.clone());
        let sel = SelectedFiles::new(&layout, None);
        let hash = InfoHash([3; 20]);
        let (r, l, s) = (root.clone(), layout.clone(), sel.clone());
        let writer = crate::engine::storage::start_here(move || {
            FileWriter::new(
                r.clone(),
                l.clone(),
                hash,
                s.clone(),
                Duration::from_millis(100),
            )
        });
        let (r, l) = (root.clone(), layout.clone());
        let reader = crate::engine::storage::start_here(move || {
            FileReader::new(r.clone(), l.clone(), hash, sel.clone())
        });
        let hm = m(ActorKind::Hasher);
        let hasher = SyncArbiter::start(1, move || Hasher::new(hm.clone()));
        writer.send(OpenStorage).await.unwrap().unwrap();
        let pm_metrics = m(ActorKind::PieceManager);
        let links = PieceManagerLinks {
            verified: TrackedRecipient::new(reports.clone().recipient(), pm_metrics.clone()),
            failed: TrackedRecipient::new(reports.clone().recipient(), pm_metrics.clone()),
            bad_data: TrackedRecipient::new(reports.clone().recipient(), pm_metrics.clone()),
            storage_failed: TrackedRecipient::new(reports.clone().recipient(), pm_metrics.clone()),
            inconsistent: TrackedRecipient::new(reports.clone().recipient(), pm_metrics.clone()),
            want_hashes: TrackedRecipient::new(reports.recipient(), pm_metrics.clone()),
            metrics: pm_metrics,
        };
        let logger = Logger::root(slog::Discard, slog::o!());
        let pm = PieceManager::new(
            info.clone(),
            Bitfield::new(PIECES as u32),
            mode,
            1 << 20,
            Tracked::new(hasher, m(ActorKind::Hasher)),
            Tracked::new(writer.clone(), m(ActorKind::FileWriter)),
            Tracked::new(reader, m(ActorKind::FileReader)),
            links,
            logger,
        )
        .start();
        (pm, writer)
    }

    /// Runs: pieces 0 and 1 complete and piece 2 half there, on a slow disk; then
    /// `DrainPieces`; then the rest of the blocks. Returns the drain's answer and the
    /// file as it was when the answer came, and as it is at the end.
    fn drain_run(root: &Path, mode: PieceMode) -> (Bitfield, Vec<u8>, Vec<u8>) {
        let data = data();
        let info = info(&data);
        let root = root.to_path_buf();
        actix::System::new().block_on(async move {
            let layout = Arc::new(info.layout.clone());
            let (pm, writer) = start_pieces(&root, info, mode, Reports(None).start()).await;
            for (piece, b) in [(0, 0), (0, 1), (1, 1), (1, 0), (2, 0)] {
                pm.send(block(&layout, &data, piece, b)).await.unwrap();
            }
            let drained = pm.send(DrainPieces).await.unwrap();
            let file = root.join("t");
            let at_drain = std::fs::read(&file).unwrap();
            for (piece, b) in [(2, 1), (3, 0), (3, 1)] {
                pm.send(block(&layout, &data, piece, b)).await.unwrap();
            }
            // Anything the late blocks set off would be queued before this.
            writer
                .send(CloseStorage { sync: false })
                .await
                .unwrap()
                .unwrap();
            (drained, at_drain, std::fs::read(&file).unwrap())
        })
    }

    /// A block requested for an attempt that failed, arriving after the failure, is
    /// dropped: were it kept, the next attempt would hold its bad bytes and fail again,
    /// and a piece fetched again from one peer would have two senders.
    #[test]
    fn a_late_block_of_a_failed_attempt_never_joins_the_next() {
        let data = data();
        for mode in [PieceMode::Whole, PieceMode::Streamed] {
            let tmp = tempfile::tempdir().unwrap();
            let info = info(&data);
            let root = tmp.path().to_path_buf();
            let d = data.clone();
            let log = Arc::new(std::sync::Mutex::new(Vec::new()));
            let reports = log.clone();
            let seen = log.clone();
            actix::System::new().block_on(async move {
                let log = seen;
                let layout = Arc::new(info.layout.clone());
                let (pm, _writer) =
                    start_pieces(&root, info, mode, Reports(Some(reports)).start()).await;
                let bad = |mut b: StoreBlocks| {
                    b.blocks[0].data = Bytes::from(vec![0xee; BLOCK_SIZE as usize]);
                    b
                };
                let wait_for = |n: usize| {
                    let log = log.clone();
                    async move {
                        for _ in 0..500 {
                            if log.lock().unwrap().len() >= n {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        panic!("no report in 5 s");
                    }
                };
                // Attempt 0 of piece 0: a bad block 0 and a good block 1.
                pm.send(bad(block(&layout, &d, 0, 0))).await.unwrap();
                pm.send(block(&layout, &d, 0, 1)).await.unwrap();
                wait_for(1).await;
                // A late bad copy of block 0, asked for in attempt 0; then attempt 1.
                pm.send(bad(block(&layout, &d, 0, 0))).await.unwrap();
                for b in 0..2 {
                    let mut good = block(&layout, &d, 0, b);
                    good.blocks[0].attempt = 1;
                    good.from = PeerKey(2);
                    pm.send(good).await.unwrap();
                }
                wait_for(2).await;
            });
            assert_eq!(*log.lock().unwrap(), [(false, 0), (true, 0)], "{mode:?}");
        }
    }

    #[test]
    fn drain_answers_once_complete_pieces_are_written_and_takes_no_more_blocks() {
        let data = data();
        for mode in [PieceMode::Whole, PieceMode::Streamed] {
            let tmp = tempfile::tempdir().unwrap();
            let (drained, at_drain, at_end) = drain_run(tmp.path(), mode);
            let claimed: Vec<u32> = drained.iter_set().collect();
            assert_eq!(claimed, [0, 1], "{mode:?}");
            assert!(
                at_drain[..2 * PIECE] == data[..2 * PIECE],
                "{mode:?}: the drain answered before pieces 0 and 1 were on disk"
            );
            // Piece 3 came whole after the drain: never written.
            assert!(
                at_end[3 * PIECE..].iter().all(|&b| b == 0),
                "{mode:?}: a block taken after the drain was written"
            );
        }
    }
}
