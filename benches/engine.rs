//! Cost of the engine's per-piece and per-block work, at the scale of a big swarm: a
//! torrent of 10,000 pieces of 256 KiB (2.5 GiB) and 500 connected peers.
//!
//! - `hasher`: SHA-1 verification of a 256 KiB piece through the `Hasher` SyncArbiter pool
//!   from an actix System, as the PieceManager sends it, beside the same hashing done
//!   directly on one thread, so the pool's hand-off cost shows as the difference; and
//!   that hand-off alone, with an empty piece.
//! - `picker`: `Picker::pick` for a peer asking for a batch of blocks, the per-block
//!   bookkeeping (`block_received`, `release`), a peer's bitfield arriving and leaving,
//!   and the whole cycle of one piece.
//! - `smart_ban`: `SmartBan::failed` and `passed` on a 16-block piece sent by two peers,
//!   with the record full, as in a swarm with a liar in it.
//! - `tracked_send`: 1000 messages sent from one actor's handler through a `Tracked`
//!   address and handled, with nobody watching the actor graph and while it is watched
//!   (each message then counted as an edge between the two instances).
//!
//! Several benchmarks time only part of each iteration (`iter_custom`): the picker's state
//! moves on with every pick, so the untimed rest of the iteration delivers the blocks and
//! verifies the pieces that keep it in a steady, mid-download state.
//!
//! `cargo bench --bench engine`

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use actix::{Addr, MailboxError, SyncArbiter, System, SystemRunner};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha1::{Digest, Sha1};
use torrent_actors::engine::messages::{HashOutcome, HashPiece};
use torrent_actors::engine::metrics::{ActorKind, ActorMetrics, Metrics, OwnMetrics, Tracked};
use torrent_actors::engine::picker::{BlockOutcome, Picker};
use torrent_actors::engine::smart_ban::{self, SmartBan};
use torrent_actors::engine::storage::Hasher;
use torrent_actors::engine::PeerKey;
use torrent_actors::layout::{Layout, BLOCK_SIZE};
use torrent_actors::metainfo::SafePath;
use torrent_actors::wire::{Bitfield, BlockRequest};

/// Piece size of the benchmark torrent: 16 blocks, a common size for a torrent of a few GiB.
const PIECE_LEN: u32 = 256 * 1024;
const BLOCKS_PER_PIECE: u32 = PIECE_LEN / BLOCK_SIZE;
const PIECES: u32 = 10_000;
const PEERS: u32 = 500;
/// The engine's default budget of pieces in progress (`EngineConfig::max_in_progress_bytes`).
const IN_PROGRESS_BUDGET: u64 = 32 << 20;

// ---------------------------------------------------------------------------------------
// SHA-1 through the Hasher pool

/// One piece of seeded pseudo-random bytes, cut into blocks as the PieceManager holds it,
/// and its SHA-1.
fn piece_blocks() -> (Vec<Bytes>, [u8; 20]) {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut data = vec![0u8; PIECE_LEN as usize];
    rng.fill(&mut data[..]);
    let blocks = data
        .chunks(BLOCK_SIZE as usize)
        .map(Bytes::copy_from_slice)
        .collect();
    (blocks, Sha1::digest(&data).into())
}

/// Counters for a Hasher outside any torrent, as the engine would give it.
fn detached() -> std::sync::Arc<ActorMetrics> {
    std::sync::Arc::new(ActorMetrics::detached(ActorKind::Hasher))
}

/// What the Hasher does for one piece, without the actor around it.
fn hash_directly(blocks: &[Bytes], expected: &[u8; 20], block_digests: bool) -> bool {
    let mut sha = Sha1::new();
    for block in blocks {
        sha.update(block);
    }
    let ok = <[u8; 20]>::from(sha.finalize()) == *expected;
    if block_digests {
        let digests: Vec<[u8; 20]> = blocks.iter().map(|b| Sha1::digest(b).into()).collect();
        std::hint::black_box(digests);
    }
    ok
}

/// Sends `iters` pieces to the pool, keeping `in_flight` of them outstanding, and returns
/// the time from the first send to the last answer.
fn hash_through_pool(
    system: &SystemRunner,
    pool: &Addr<Hasher>,
    blocks: &[Bytes],
    expected: [u8; 20],
    in_flight: usize,
    iters: u64,
) -> Duration {
    system.block_on(async {
        let start = Instant::now();
        let mut pending = FuturesUnordered::new();
        for _ in 0..iters {
            if pending.len() >= in_flight {
                check_hashed(pending.next().await);
            }
            // Cloning the block list copies 16 `Bytes` handles, not the data, as the
            // PieceManager's send does.
            pending.push(pool.send(HashPiece {
                blocks: blocks.to_vec(),
                expected: torrent_actors::metainfo::PieceCheck::Sha1(expected),
                block_digests: false,
            }));
        }
        while let Some(reply) = pending.next().await {
            check_hashed(Some(reply));
        }
        start.elapsed()
    })
}

fn check_hashed(reply: Option<Result<HashOutcome, MailboxError>>) {
    match reply {
        Some(Ok(outcome)) if outcome.verdict.passed() => {}
        other => panic!("hasher answered {other:?}"),
    }
}

fn hasher(c: &mut Criterion) {
    let (blocks, expected) = piece_blocks();
    let mut group = c.benchmark_group("hasher_256k_piece");
    group.throughput(Throughput::Bytes(u64::from(PIECE_LEN)));

    group.bench_function("direct", |b| {
        b.iter(|| hash_directly(&blocks, &expected, false))
    });
    // The second pass smart ban asks for when a piece failed before.
    group.bench_function("direct_with_block_digests", |b| {
        b.iter(|| hash_directly(&blocks, &expected, true))
    });

    let system = System::new();
    // (threads, pieces in flight): one at a time shows the round trip; two threads with
    // four in flight is the engine on this two-core machine with pieces queueing up.
    for (threads, in_flight) in [(1, 1), (2, 1), (2, 4)] {
        let pool =
            system.block_on(async move { SyncArbiter::start(threads, || Hasher::new(detached())) });
        group.bench_function(
            BenchmarkId::new("pool", format!("{threads}_threads_{in_flight}_in_flight")),
            |b| {
                b.iter_custom(|iters| {
                    hash_through_pool(&system, &pool, &blocks, expected, in_flight, iters)
                })
            },
        );
    }
    group.finish();

    // The hand-off alone: an empty piece through a one-thread pool and back, the fixed
    // cost the pool adds to every piece whatever its size.
    let mut group = c.benchmark_group("hasher_round_trip");
    let empty: [u8; 20] = Sha1::digest([]).into();
    let pool = system.block_on(async { SyncArbiter::start(1, || Hasher::new(detached())) });
    group.bench_function("empty_piece", |b| {
        b.iter_custom(|iters| hash_through_pool(&system, &pool, &[], empty, 1, iters))
    });
    group.finish();
}

/// One 256 KiB piece checked as a v1 torrent does (SHA-1), as a v2 one does (16 SHA-256
/// leaves and the tree above them) and as a hybrid with its piece layers does (both, in
/// one pass): what checking a hybrid costs against either alone.
fn piece_checks(c: &mut Criterion) {
    use torrent_actors::metainfo::{merkle, MerklePiece, PieceCheck, Verdict};
    let (blocks, sha1) = piece_blocks();
    let data: Vec<u8> = blocks.iter().flat_map(|b| b.iter().copied()).collect();
    let leaves = merkle::leaf_hashes(&data);
    let node = merkle::root_of_layer(&leaves, 0, leaves.len());
    let merkle = MerklePiece {
        node,
        width: leaves.len() as u32,
        data_len: PIECE_LEN,
        file_root: node,
        file_piece: 0,
    };
    let mut group = c.benchmark_group("piece_check_256k");
    group.throughput(Throughput::Bytes(u64::from(PIECE_LEN)));
    for (name, check) in [
        ("v1_sha1", PieceCheck::Sha1(sha1)),
        ("v2_merkle", PieceCheck::Merkle(merkle)),
        ("hybrid_both", PieceCheck::Both(sha1, merkle)),
    ] {
        assert_eq!(check.verdict(&data), Verdict::Passed, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut v = check.verifier();
                for block in &blocks {
                    v.update(block);
                }
                v.finish()
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// Piece picking and block bookkeeping

/// A swarm's bitfields, the same for every run: a tenth of the peers are seeds, the rest
/// hold each piece with their own probability, spread evenly between none and all. Pieces
/// are thus held by about 275 peers each, so no piece is rare enough to end the picker's
/// rarest-first scan early.
fn swarm() -> Vec<Bitfield> {
    let mut rng = SmallRng::seed_from_u64(7);
    (0..PEERS)
        .map(|p| {
            if p % 10 == 0 {
                return Bitfield::full(PIECES);
            }
            let share: f64 = rng.random();
            let mut bits = Bitfield::new(PIECES);
            for i in 0..PIECES {
                if rng.random_bool(share) {
                    let _ = bits.set(i);
                }
            }
            bits
        })
        .collect()
}

fn layout() -> Arc<Layout> {
    let path = match SafePath::new(&["big.iso"]) {
        Ok(p) => p,
        Err(e) => panic!("benchmark path refused: {e}"),
    };
    let total = u64::from(PIECES) * u64::from(PIECE_LEN);
    match Layout::new(u64::from(PIECE_LEN), [(path, total, false)]) {
        Ok(l) => Arc::new(l),
        Err(e) => panic!("benchmark layout refused: {e}"),
    }
}

/// A torrent being downloaded from the swarm: the picker, the peers' bitfields, the
/// requests in flight in the order they were sent, and whose turn it is to ask.
struct Download {
    layout: Arc<Layout>,
    peers: Vec<Bitfield>,
    picker: Picker,
    in_flight: VecDeque<(PeerKey, BlockRequest)>,
    /// Blocks left requested after each pick, the oldest delivered first: how far the
    /// network lags behind the picker.
    max_in_flight: usize,
    next_peer: usize,
}

impl Download {
    fn new(layout: Arc<Layout>, peers: Vec<Bitfield>, max_in_flight: usize) -> Self {
        let picker = Self::fresh_picker(&layout, &peers);
        Self {
            layout,
            peers,
            picker,
            in_flight: VecDeque::new(),
            max_in_flight,
            next_peer: 0,
        }
    }

    /// A picker with nothing downloaded and every peer's bitfield counted.
    fn fresh_picker(layout: &Arc<Layout>, peers: &[Bitfield]) -> Picker {
        let none = Bitfield::new(PIECES);
        let all = Bitfield::full(PIECES);
        let mut picker = Picker::new(layout.clone(), &none, &all, IN_PROGRESS_BUDGET);
        for bits in peers {
            picker.add_peer_pieces(bits);
        }
        picker
    }

    /// Starts over once half the torrent is in, so every measurement sees the first half
    /// of a download and never the endgame.
    fn restart_if_half_done(&mut self) {
        if self.picker.remaining_pieces() < PIECES / 2 {
            self.picker = Self::fresh_picker(&self.layout, &self.peers);
            self.in_flight.clear();
        }
    }

    /// The next peer in turn and its key.
    fn next_peer(&mut self) -> (PeerKey, usize) {
        let p = self.next_peer;
        self.next_peer = (p + 1) % self.peers.len();
        (PeerKey(p as u64), p)
    }

    /// One timed pick of `batch` blocks by the next peer; the blocks join those in flight.
    fn timed_pick(&mut self, batch: usize, out: &mut Vec<BlockRequest>) -> Duration {
        let (key, p) = self.next_peer();
        out.clear();
        let start = Instant::now();
        self.picker.pick(key, &self.peers[p], batch, out);
        let spent = start.elapsed();
        self.in_flight.extend(out.iter().map(|r| (key, *r)));
        spent
    }

    /// Delivers the oldest requests until no more than `max_in_flight` remain, verifying
    /// each piece as it completes (the hash and the write are not the picker's business).
    fn deliver_down_to_limit(&mut self) {
        while self.in_flight.len() > self.max_in_flight {
            let Some((key, req)) = self.in_flight.pop_front() else {
                break;
            };
            self.receive(key, &req);
        }
    }

    fn receive(&mut self, key: PeerKey, req: &BlockRequest) {
        let outcome = self.picker.block_received(key, req, 0);
        if let BlockOutcome::Accepted {
            piece_done: true, ..
        } = outcome
        {
            if let Some(piece) = self.layout.piece(req.piece) {
                self.picker.piece_verified(piece);
            }
        }
    }
}

fn picker(c: &mut Criterion) {
    let layout = layout();
    let peers = swarm();
    let mut group = c.benchmark_group("picker_10k_pieces_500_peers");

    // `pick` as the Coordinator runs it for a Peer whose pipeline has room, peers taking
    // turns. With 1,024 blocks kept in flight (16 MiB, half the budget) every pick of 16
    // starts a new piece, so it pays the rarest-first scan. With nothing ever delivered
    // the 32 MiB budget fills within the first 128 pieces and every later pick comes back
    // empty: the cost of asking in vain, which is what most asks are when 500 peers with
    // 16-block pipelines share one budget of 2,048 blocks.
    for (label, max_in_flight) in [("budget_free", 1024), ("budget_full", usize::MAX)] {
        for batch in [4usize, 16, 64] {
            let mut download = Download::new(layout.clone(), peers.clone(), max_in_flight);
            let mut out = Vec::with_capacity(batch);
            group.bench_function(BenchmarkId::new(format!("pick_{label}"), batch), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        download.restart_if_half_done();
                        spent += download.timed_pick(batch, &mut out);
                        download.deliver_down_to_limit();
                    }
                    spent
                })
            });
        }
    }

    // One piece's whole life in the picker: a peer's pick of its 16 blocks, their
    // arrival, and the verification. Counted in blocks.
    group.throughput(Throughput::Elements(u64::from(BLOCKS_PER_PIECE)));
    let mut download = Download::new(layout.clone(), peers.clone(), 0);
    let mut out = Vec::with_capacity(BLOCKS_PER_PIECE as usize);
    group.bench_function("piece_cycle", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                download.restart_if_half_done();
                let start = Instant::now();
                download.timed_pick(BLOCKS_PER_PIECE as usize, &mut out);
                download.deliver_down_to_limit();
                spent += start.elapsed();
            }
            spent
        })
    });

    // The per-block calls alone, 16 to an iteration, for blocks a seed was asked for
    // (a seed, so every pick is a whole piece): `block_received` for each block of a new
    // piece, the last one completing it; and `release` for blocks a peer will not send,
    // which the next pick takes again from the same piece, so the state stays the same.
    let seed = Bitfield::full(PIECES);
    let mut download = Download::new(layout.clone(), peers.clone(), usize::MAX);
    group.bench_function("block_received", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                download.restart_if_half_done();
                out.clear();
                download
                    .picker
                    .pick(PeerKey(0), &seed, BLOCKS_PER_PIECE as usize, &mut out);
                assert_eq!(out.len(), BLOCKS_PER_PIECE as usize);
                let start = Instant::now();
                for req in &out {
                    std::hint::black_box(download.picker.block_received(PeerKey(0), req, 0));
                }
                spent += start.elapsed();
                if let Some(piece) = layout.piece(out[0].piece) {
                    download.picker.piece_verified(piece);
                }
            }
            spent
        })
    });
    let mut download = Download::new(layout.clone(), peers.clone(), usize::MAX);
    group.bench_function("release", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                out.clear();
                download
                    .picker
                    .pick(PeerKey(0), &seed, BLOCKS_PER_PIECE as usize, &mut out);
                assert_eq!(out.len(), BLOCKS_PER_PIECE as usize);
                let start = Instant::now();
                for req in &out {
                    download.picker.release(PeerKey(0), req, 0);
                }
                spent += start.elapsed();
            }
            spent
        })
    });

    // A peer's bitfield counted on connect and uncounted on leaving; a peer holding about
    // half the torrent, the swarm's average.
    group.throughput(Throughput::Elements(1));
    let mut download = Download::new(layout.clone(), peers.clone(), 0);
    let typical = peers
        .iter()
        .min_by_key(|b| b.count_ones().abs_diff(PIECES / 2))
        .cloned()
        .unwrap_or_else(|| Bitfield::new(PIECES));
    group.bench_function("peer_joins_and_leaves", |b| {
        b.iter(|| {
            download.picker.add_peer_pieces(&typical);
            download.picker.remove_peer_pieces(&typical);
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// Smart ban

/// Failed pieces the PieceManager remembers (its `SMART_BAN_PIECES`).
const SMART_BAN_PIECES: usize = 256;

fn smart_ban(c: &mut Criterion) {
    const HONEST: PeerKey = PeerKey(1);
    const LIAR: PeerKey = PeerKey(2);
    // The blocks of one 16-block piece alternate between the two senders; the liar's
    // block 5 is corrupt.
    let senders: Vec<PeerKey> = (0..BLOCKS_PER_PIECE)
        .map(|b| if b % 2 == 0 { HONEST } else { LIAR })
        .collect();
    let good: Vec<smart_ban::Digest> = (0..BLOCKS_PER_PIECE).map(|b| [b as u8; 20]).collect();
    let mut bad = good.clone();
    bad[5] = [0xee; 20];

    let mut group = c.benchmark_group("smart_ban_16_blocks");
    // The record is full from the start, so every `failed` of a new piece also forgets
    // the oldest one: the steady state of a swarm that keeps sending bad data.
    let mut ban = SmartBan::new(
        SMART_BAN_PIECES,
        SMART_BAN_PIECES * BLOCKS_PER_PIECE as usize,
    );
    for piece in 0..SMART_BAN_PIECES as u32 {
        ban.failed(piece, &senders, &bad);
    }
    let mut next = SMART_BAN_PIECES as u32;
    group.bench_function("failed", |b| {
        b.iter(|| {
            next = (next + 1) % PIECES;
            ban.failed(next, &senders, &bad)
        })
    });

    // `passed` for a remembered piece, with the record full; the piece fails again,
    // untimed, so the record stays full.
    let mut ban = SmartBan::new(
        SMART_BAN_PIECES,
        SMART_BAN_PIECES * BLOCKS_PER_PIECE as usize,
    );
    for piece in 0..SMART_BAN_PIECES as u32 {
        ban.failed(piece, &senders, &bad);
    }
    let mut piece = 0u32;
    group.bench_function("passed", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                piece = (piece + 1) % SMART_BAN_PIECES as u32;
                let start = Instant::now();
                let liars = ban.passed(piece, &good);
                spent += start.elapsed();
                assert_eq!(liars, [(LIAR, 1)]);
                ban.failed(piece, &senders, &bad);
            }
            spent
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// Messages through Tracked addresses

struct Sink(OwnMetrics);
impl actix::Actor for Sink {
    type Context = actix::Context<Self>;
}
torrent_actors::takes_stamped!(Sink);
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Note;
impl actix::Handler<Note> for Sink {
    type Result = ();
    fn handle(&mut self, _: Note, _: &mut actix::Context<Self>) {
        let _g = self.0.handling_of::<Note>();
    }
}

fn tracked_send(c: &mut Criterion) {
    const BATCH: u64 = 1000;
    let mut group = c.benchmark_group("tracked_send");
    group.throughput(Throughput::Elements(BATCH));
    for watched in [false, true] {
        let sys = System::new();
        let metrics = Metrics::new();
        let sender = OwnMetrics::started(metrics.of(ActorKind::Peer));
        let sink_metrics = metrics.of(ActorKind::PieceManager);
        let to_sink = sys.block_on(async {
            let sink = Sink(OwnMetrics::started(sink_metrics.clone())).start();
            Tracked::new(sink, sink_metrics)
        });
        let name = if watched { "watched" } else { "unwatched" };
        group.bench_function(name, |b| {
            b.iter(|| {
                if watched {
                    // The page asks about once a second; here, every batch.
                    metrics.graph(12);
                }
                sys.block_on(async {
                    {
                        let _g = sender.handling_unqueued("Tick");
                        for _ in 0..BATCH {
                            to_sink.do_send(Note);
                        }
                    }
                    to_sink.send(Note).await.expect("the sink answers");
                })
            });
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    hasher,
    piece_checks,
    picker,
    smart_ban,
    tracked_send
);
criterion_main!(benches);
