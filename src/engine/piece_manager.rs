//! The PieceManager: owns the data of pieces being assembled, and the record of which
//! pieces are verified and on disk.
//!
//! Blocks come from Peers (`StoreBlock`). When a piece has all its blocks it is sent to
//! the Hasher pool, then, if its hash matches, to the FileWriter, and only then reported
//! verified to the Coordinator, so a `have` is never announced for data not on disk.
//!
//! Memory is bounded twice. Blocks of pieces still being assembled are bounded by the
//! Coordinator's budget of pieces in progress (a piece is only requested once started).
//! Complete pieces waiting for hash and write are bounded here: while they exceed
//! `max_pending_bytes`, the reply to `StoreBlock` is held back, and the Peer, which awaits
//! that reply before reading its socket again, stops reading. A slow disk thus slows the
//! sockets, and TCP slows the senders.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use futures::channel::oneshot;
use slog::{debug, warn, Logger};

use super::messages::{
    BadData, ForgetPiece, HashPiece, MarkDone, PieceFailed, PieceVerified, StorageError,
    StorageFailed, StoreBlock, WritePiece,
};
use super::metrics::{ActorMetrics, LiveGuard, Tracked, TrackedRecipient};
use super::smart_ban::SmartBan;
use super::storage::{FileWriter, Hasher};
use super::PeerKey;
use crate::layout::{Layout, PieceIndex, BLOCK_SIZE};
use crate::metainfo::Info;
use crate::wire::Bitfield;

/// A piece being put together from blocks.
struct Assembly {
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
    /// Where the PieceManager's own counters go (the engine's metrics).
    pub metrics: Arc<ActorMetrics>,
}

/// See the module documentation.
pub struct PieceManager {
    /// Piece hashes and layout.
    info: Arc<Info>,
    /// Pieces being assembled.
    assembling: HashMap<u32, Assembly>,
    /// Verified and written: blocks for these pieces are late duplicates and dropped.
    done: Bitfield,
    /// Complete pieces being hashed or written: late endgame copies of their blocks are
    /// dropped too, or they would open an assembly that nothing ever closes.
    finishing: HashSet<u32>,
    /// Bytes of complete pieces sent to hash or write and not finished.
    pending_bytes: u64,
    /// Above this, `StoreBlock` replies wait.
    max_pending_bytes: u64,
    /// Held `StoreBlock` replies, released in arrival order as pending bytes drain.
    waiting: VecDeque<oneshot::Sender<()>>,
    hasher: Tracked<Hasher>,
    writer: Tracked<FileWriter>,
    links: PieceManagerLinks,
    metrics: Arc<ActorMetrics>,
    _live: LiveGuard,
    /// After a write failure nothing more is written: the torrent is stopping.
    broken: bool,
    /// Who sent which block of pieces that failed, until a good copy names the liar.
    smart_ban: SmartBan,
    log: Logger,
}

/// Failed pieces remembered for smart ban at most; one digest and key per block each.
const SMART_BAN_PIECES: usize = 256;

impl PieceManager {
    /// A PieceManager for `info`, with `done` the pieces already verified on disk.
    pub fn new(
        info: Arc<Info>,
        done: Bitfield,
        max_pending_bytes: u64,
        hasher: Tracked<Hasher>,
        writer: Tracked<FileWriter>,
        links: PieceManagerLinks,
        log: Logger,
    ) -> Self {
        let metrics = links.metrics.clone();
        // At least one piece may always be pending, or a budget below the piece size
        // would stall every peer forever.
        let floor = u64::from(info.layout.piece_length());
        Self {
            info,
            assembling: HashMap::new(),
            done,
            finishing: HashSet::new(),
            pending_bytes: 0,
            max_pending_bytes: max_pending_bytes.max(floor),
            waiting: VecDeque::new(),
            hasher,
            writer,
            links,
            broken: false,
            smart_ban: SmartBan::new(SMART_BAN_PIECES),
            _live: metrics.started(),
            metrics,
            log,
        }
    }

    fn layout(&self) -> &Layout {
        &self.info.layout
    }

    /// Hash, then write, then report one complete piece. Runs concurrently with other
    /// pieces; the hasher pool and the writer thread queue the work.
    fn finish_piece(&mut self, piece: PieceIndex, assembly: Assembly, ctx: &mut Context<Self>) {
        let len = u64::from(self.layout().piece_len(piece));
        self.pending_bytes += len;
        self.finishing.insert(piece.get());
        let blocks: Vec<Bytes> = assembly.blocks.into_iter().flatten().collect();
        let senders: Vec<PeerKey> = assembly.senders.into_iter().flatten().collect();
        let expected = *self.info.piece_hash(piece);
        let hasher = self.hasher.clone();
        let writer = self.writer.clone();
        let block_digests = self.smart_ban.remembers(piece.get());
        let work = async move {
            let hashed = hasher
                .send(HashPiece {
                    blocks: blocks.clone(),
                    expected,
                    block_digests,
                })
                .await
                .unwrap_or_default();
            let digests = hashed.block_digests.unwrap_or_default();
            if !hashed.ok {
                return Outcome::Failed(senders, digests);
            }
            match writer.send(WritePiece { piece, blocks }).await {
                Ok(Ok(())) => Outcome::Written(digests),
                Ok(Err(e)) => Outcome::WriteFailed(e),
                Err(e) => Outcome::WriteFailed(StorageError {
                    path: String::new(),
                    message: format!("file writer unavailable: {e}"),
                    disk_full: false,
                }),
            }
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, act, _| {
            act.pending_bytes -= len;
            act.finishing.remove(&piece.get());
            match outcome {
                Outcome::Written(digests) => {
                    let _ = act.done.set(piece.get());
                    act.links.verified.do_send(PieceVerified { piece });
                    for (from, bad_blocks) in act.smart_ban.passed(piece.get(), &digests) {
                        act.links.bad_data.do_send(BadData {
                            from,
                            piece,
                            bad_blocks,
                        });
                    }
                }
                Outcome::Failed(senders, digests) => {
                    warn!(act.log, "piece failed its hash"; "piece" => piece.get());
                    act.links.failed.do_send(PieceFailed { piece });
                    if let Some(from) = act.smart_ban.failed(piece.get(), &senders, &digests) {
                        act.links.bad_data.do_send(BadData {
                            from,
                            piece,
                            bad_blocks: 0,
                        });
                    }
                }
                Outcome::WriteFailed(error) => {
                    act.broken = true;
                    act.links.storage_failed.do_send(StorageFailed { error });
                }
            }
            act.release_waiting();
        }));
    }

    /// Lets held `StoreBlock` replies go while there is room.
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
    /// Failed its hash: each block's sender and digest.
    Failed(Vec<PeerKey>, Vec<[u8; 20]>),
    WriteFailed(StorageError),
}

impl Actor for PieceManager {
    type Context = Context<Self>;
}

impl Handler<StoreBlock> for PieceManager {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StoreBlock, ctx: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling("StoreBlock");
        let piece = msg.piece;
        let wanted = !self.done.has(piece.get()) && !self.finishing.contains(&piece.get());
        if wanted && !self.broken {
            let num_blocks = self.layout().num_blocks(piece) as usize;
            let b = (msg.offset / BLOCK_SIZE) as usize;
            let assembly = self
                .assembling
                .entry(piece.get())
                .or_insert_with(|| Assembly {
                    blocks: vec![None; num_blocks],
                    senders: vec![None; num_blocks],
                    received: 0,
                });
            // The Peer checked the block against its own requests, so offset and length
            // are those of a real block; a second copy (endgame) is simply dropped.
            if let Some(slot @ None) = assembly.blocks.get_mut(b) {
                *slot = Some(msg.data);
                assembly.senders[b] = Some(msg.from);
                assembly.received += 1;
                if assembly.received as usize == num_blocks {
                    if let Some(assembly) = self.assembling.remove(&piece.get()) {
                        debug!(self.log, "piece complete"; "piece" => piece.get());
                        self.finish_piece(piece, assembly, ctx);
                    }
                }
            }
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

impl Handler<ForgetPiece> for PieceManager {
    type Result = ();

    fn handle(&mut self, msg: ForgetPiece, _: &mut Context<Self>) {
        let _timing = self.metrics.handling("ForgetPiece");
        self.assembling.remove(&msg.piece.get());
    }
}

impl Handler<MarkDone> for PieceManager {
    type Result = ();

    fn handle(&mut self, msg: MarkDone, _: &mut Context<Self>) {
        let _timing = self.metrics.handling("MarkDone");
        for p in msg.pieces {
            let _ = self.done.set(p.get());
            self.assembling.remove(&p.get());
        }
    }
}
