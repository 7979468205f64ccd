use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::metainfo::SafePath;

const P: PeerKey = PeerKey(1);
const Q: PeerKey = PeerKey(2);

fn layout(piece_length: u64, total: u64) -> Arc<Layout> {
    Arc::new(
        Layout::new(
            piece_length,
            [(SafePath::new(&["f"]).unwrap(), total, false)],
        )
        .unwrap(),
    )
}

fn full(n: u32) -> Bitfield {
    Bitfield::full(n)
}

fn only(n: u32, set: &[u32]) -> Bitfield {
    let mut b = Bitfield::new(n);
    for &i in set {
        b.set(i).unwrap();
    }
    b
}

fn picker(l: &Arc<Layout>, budget: u64) -> Picker {
    let n = l.num_pieces();
    Picker::new(l.clone(), &Bitfield::new(n), &full(n), budget)
}

/// `peer` delivered `r`, handed out in the attempt in progress at its piece.
fn deliver(p: &mut Picker, peer: PeerKey, r: &BlockRequest) -> BlockOutcome {
    let attempt = p.attempt(r.piece);
    p.block_received(peer, r, attempt)
}

/// `peer` gives `r` back, handed out in the attempt in progress at its piece.
fn give_back(p: &mut Picker, peer: PeerKey, r: &BlockRequest) {
    let attempt = p.attempt(r.piece);
    p.release(peer, r, attempt);
}

fn pick(p: &mut Picker, peer: PeerKey, has: &Bitfield, max: usize) -> Vec<BlockRequest> {
    let mut out = Vec::new();
    p.pick(peer, has, max, &mut out);
    out
}

#[test]
fn rarest_piece_is_picked_first() {
    let l = layout(32 * 1024, 10 * 32 * 1024);
    let mut p = picker(&l, u64::MAX);
    p.add_peer_pieces(&full(10));
    p.add_peer_pieces(&full(10));
    p.add_peer_pieces(&only(10, &[7]));
    p.add_peer_pieces(&only(10, &[3, 7]));
    // Piece 7 has 4 holders, piece 3 has 3, the rest 2: the rarest are the 2s.
    let got = pick(&mut p, P, &only(10, &[3, 7, 5]), 2);
    assert!(got.iter().all(|r| r.piece == 5), "{got:?}");
    // Next: piece 3 (3 holders) before piece 7 (4 holders).
    let got = pick(&mut p, P, &only(10, &[3, 7, 5]), 2);
    assert!(got.iter().all(|r| r.piece == 3), "{got:?}");
}

#[test]
fn equally_rare_pieces_are_chosen_at_random() {
    let l = layout(16 * 1024, 64 * 16 * 1024);
    let mut p = picker(&l, u64::MAX);
    p.add_peer_pieces(&full(64));
    let first: HashSet<u32> = (0..20)
        .map(|i| pick(&mut p, PeerKey(i), &full(64), 1)[0].piece)
        .collect();
    assert!(first.len() > 10, "picks converge: {first:?}");
}

#[test]
fn partial_pieces_are_finished_before_new_ones_start() {
    let l = layout(64 * 1024, 8 * 64 * 1024);
    let mut p = picker(&l, u64::MAX);
    p.add_peer_pieces(&full(8));
    let a = pick(&mut p, P, &full(8), 2);
    assert_eq!(a.len(), 2);
    assert!(a.iter().all(|r| r.piece == a[0].piece));
    // Q gets the other two blocks of the same piece before anything new.
    let b = pick(&mut p, Q, &full(8), 2);
    assert!(b.iter().all(|r| r.piece == a[0].piece), "{b:?}");
    assert_eq!(
        p.state(l.piece(a[0].piece).unwrap()),
        PieceState::InProgress
    );
}

#[test]
fn no_block_is_requested_twice_before_endgame() {
    let l = layout(64 * 1024, 4 * 64 * 1024 + 5);
    let mut p = picker(&l, u64::MAX);
    let n = l.num_pieces();
    let mut seen = HashSet::new();
    for round in 0..3 {
        for peer in [P, Q] {
            let max = 3.min(17 - seen.len());
            for r in pick(&mut p, peer, &full(n), max) {
                assert!(
                    seen.insert((r.piece, r.offset)),
                    "round {round}: {r:?} twice"
                );
            }
        }
    }
    assert_eq!(seen.len(), 17);
}

#[test]
fn budget_stops_new_pieces_but_not_partial_ones() {
    let l = layout(32 * 1024, 10 * 32 * 1024);
    // Budget of two pieces.
    let mut p = picker(&l, 64 * 1024);
    let got = pick(&mut p, P, &full(10), 100);
    assert_eq!(got.len(), 4, "two pieces of two blocks");
    assert!(
        pick(&mut p, Q, &full(10), 100).is_empty(),
        "no endgame while pieces are missing"
    );
    // One piece verified frees room for one more.
    for r in got.iter().filter(|r| r.piece == got[0].piece) {
        deliver(&mut p, P, r);
    }
    p.piece_verified(l.piece(got[0].piece).unwrap());
    assert_eq!(pick(&mut p, Q, &full(10), 100).len(), 2);
}

#[test]
fn endgame_duplicates_requests_and_cancels_the_loser() {
    let l = layout(32 * 1024, 32 * 1024);
    let mut p = picker(&l, u64::MAX);
    let a = pick(&mut p, P, &full(1), 10);
    assert_eq!(a.len(), 2);
    // Everything is requested: Q gets the same blocks in endgame.
    let b = pick(&mut p, Q, &full(1), 10);
    assert_eq!(b, a);
    // But P is never asked twice for a block it already holds.
    assert!(pick(&mut p, P, &full(1), 10).is_empty());
    assert_eq!(
        deliver(&mut p, Q, &a[0]),
        BlockOutcome::Accepted {
            cancel: vec![P],
            piece_done: false
        }
    );
    assert_eq!(deliver(&mut p, P, &a[0]), BlockOutcome::Ignored);
    assert_eq!(
        deliver(&mut p, P, &a[1]),
        BlockOutcome::Accepted {
            cancel: vec![Q],
            piece_done: true
        }
    );
    assert_eq!(p.state(l.piece(0).unwrap()), PieceState::Verifying);
}

#[test]
fn released_blocks_go_to_the_next_peer() {
    let l = layout(32 * 1024, 3 * 32 * 1024);
    let mut p = picker(&l, u64::MAX);
    let only_zero = only(3, &[0]);
    let a = pick(&mut p, P, &only_zero, 10);
    assert_eq!(a.len(), 2);
    assert!(
        pick(&mut p, Q, &only_zero, 10)
            .iter()
            .all(|r| a.contains(r)),
        "endgame only"
    );
    give_back(&mut p, P, &a[0]);
    give_back(&mut p, P, &a[1]);
    give_back(&mut p, Q, &a[0]);
    give_back(&mut p, Q, &a[1]);
    let c = pick(&mut p, PeerKey(3), &only_zero, 10);
    assert_eq!(c, a);
}

#[test]
fn failed_piece_is_fetched_again_and_verified_piece_is_done() {
    let l = layout(16 * 1024, 2 * 16 * 1024);
    let mut p = picker(&l, u64::MAX);
    let a = pick(&mut p, P, &only(2, &[0]), 1);
    deliver(&mut p, P, &a[0]);
    let zero = l.piece(0).unwrap();
    p.piece_failed(zero);
    assert_eq!(p.state(zero), PieceState::Missing);
    assert_eq!(pick(&mut p, Q, &only(2, &[0]), 1), a);
    deliver(&mut p, Q, &a[0]);
    p.piece_verified(zero);
    assert_eq!(p.state(zero), PieceState::Have);
    assert_eq!(p.remaining_pieces(), 1);
    assert!(!p.is_interesting(&only(2, &[0])));
    assert!(p.is_interesting(&only(2, &[1])));
    assert_eq!(p.in_progress_bytes(), 0);
}

#[test]
fn skipped_and_owned_pieces_are_never_picked() {
    let l = layout(16 * 1024, 4 * 16 * 1024);
    let mut p = Picker::new(l.clone(), &only(4, &[0]), &only(4, &[0, 1, 2]), u64::MAX);
    assert_eq!(p.remaining_pieces(), 2);
    let got: HashSet<u32> = pick(&mut p, P, &full(4), 10)
        .iter()
        .map(|r| r.piece)
        .collect();
    assert_eq!(got, HashSet::from([1, 2]));
}

proptest! {
    /// Random peers with random pieces come and go, deliver, drop and release blocks; as
    /// long as someone has each piece, the download completes and no block is accepted twice.
    #[test]
    fn random_swarm_always_completes(
        pieces in 1u32..12,
        piece_blocks in 1u32..4,
        tail in 1u32..16384,
        peers in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 12), 1..4),
        script in proptest::collection::vec((0usize..4, 0u8..4, 1usize..6), 1..200),
    ) {
        run_swarm(pieces, piece_blocks, tail, peers, script, None)?;
    }

    /// The same swarm with time-critical pieces (changed as it runs, as readers seek)
    /// and sequential mode: it still completes, no block is accepted twice, and the
    /// bookkeeping holds.
    #[test]
    fn random_swarm_with_streams_always_completes(
        pieces in 1u32..12,
        piece_blocks in 1u32..4,
        tail in 1u32..16384,
        peers in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 12), 1..4),
        script in proptest::collection::vec((0usize..4, 0u8..5, 1usize..6), 1..200),
        critical in proptest::collection::vec(0u32..14, 0..6),
        urgent in 0usize..4,
        sequential in any::<bool>(),
    ) {
        run_swarm(pieces, piece_blocks, tail, peers, script, Some((critical, urgent, sequential)))?;
    }
}

/// The body of the random swarm properties; `streams` sets time-critical pieces (moved
/// along by the script's fifth action) and sequential mode.
#[allow(clippy::type_complexity)]
fn run_swarm(
    pieces: u32,
    piece_blocks: u32,
    tail: u32,
    peers: Vec<Vec<bool>>,
    script: Vec<(usize, u8, usize)>,
    streams: Option<(Vec<u32>, usize, bool)>,
) -> Result<(), TestCaseError> {
    {
        let piece_len = u64::from(piece_blocks) * 16384;
        let total = (u64::from(pieces) - 1) * piece_len + u64::from(tail);
        let l = layout(piece_len, total);
        let n = l.num_pieces();
        let mut p = picker(&l, piece_len * 3);
        let mut bitfields: Vec<Bitfield> = peers
            .iter()
            .map(|bits| {
                let set: Vec<u32> = (0..n).filter(|&i| bits[i as usize]).collect();
                only(n, &set)
            })
            .collect();
        // One seed so the swarm can finish.
        bitfields[0] = full(n);
        for b in &bitfields {
            p.add_peer_pieces(b);
        }
        if let Some((critical, urgent, sequential)) = &streams {
            p.set_time_critical(critical, *urgent);
            p.set_sequential(*sequential, vec![n - 1, 0]);
        }
        let mut outstanding: HashMap<usize, Vec<BlockRequest>> = HashMap::new();
        let mut accepted: HashSet<(u32, u32)> = HashSet::new();
        let mut done: HashMap<u32, u32> = HashMap::new();
        let deliver = |p: &mut Picker,
                       peer: usize,
                       r: BlockRequest,
                       accepted: &mut HashSet<(u32, u32)>,
                       done: &mut HashMap<u32, u32>| {
            if let BlockOutcome::Accepted { piece_done, .. } =
                p.block_received(PeerKey(peer as u64), &r, 0)
            {
                assert!(
                    accepted.insert((r.piece, r.offset)),
                    "accepted twice: {r:?}"
                );
                *done.entry(r.piece).or_default() += 1;
                if piece_done {
                    p.piece_verified(l.piece(r.piece).unwrap());
                }
            }
        };
        for (who, action, k) in script {
            let peer = who % bitfields.len();
            match action {
                0 | 1 => {
                    let mut out = Vec::new();
                    p.pick(PeerKey(peer as u64), &bitfields[peer], k, &mut out);
                    for r in &out {
                        prop_assert!(bitfields[peer].has(r.piece));
                        prop_assert!(l.is_valid_block(
                            l.piece(r.piece).unwrap(),
                            r.offset,
                            r.length
                        ));
                    }
                    outstanding.entry(peer).or_default().extend(out);
                }
                4 => {
                    // A reader seeks: the window moves by `k` pieces.
                    let window: Vec<u32> = (0..3).map(|i| (k as u32 + i) % n).collect();
                    p.set_time_critical(&window, 1);
                }
                2 => {
                    let q = outstanding.entry(peer).or_default();
                    for r in q.drain(..k.min(q.len())).collect::<Vec<_>>() {
                        deliver(&mut p, peer, r, &mut accepted, &mut done);
                    }
                }
                _ => {
                    for r in outstanding.remove(&peer).unwrap_or_default() {
                        p.release(PeerKey(peer as u64), &r, 0);
                    }
                }
            }
        }
        // Drain: the seed keeps picking and delivering until done, bounded in steps.
        for peer in 0..bitfields.len() {
            for r in outstanding.remove(&peer).unwrap_or_default() {
                p.release(PeerKey(peer as u64), &r, 0);
            }
        }
        for _ in 0..10_000 {
            if p.is_complete() {
                break;
            }
            let mut out = Vec::new();
            p.pick(PeerKey(0), &bitfields[0], 8, &mut out);
            prop_assert!(
                !out.is_empty(),
                "stalled with {} pieces left",
                p.remaining_pieces()
            );
            for r in out {
                deliver(&mut p, 0, r, &mut accepted, &mut done);
            }
        }
        prop_assert!(p.is_complete());
        prop_assert_eq!(p.in_progress_bytes(), 0);
        let blocks: u32 = l.pieces().map(|pc| l.num_blocks(pc)).sum();
        prop_assert_eq!(accepted.len() as u32, blocks);
        p.check_invariants();
    }
    Ok(())
}

/// Piece 0 of two blocks, both handed to P in attempt 0. P delivered both; the
/// PieceManager assembled and hashed the piece, which failed, before P reported the
/// second block. Then `next` picks the piece for attempt 1.
fn failed_with_a_report_still_to_come(next: PeerKey) -> (Picker, PieceIndex, Vec<BlockRequest>) {
    let l = layout(32 * 1024, 2 * 32 * 1024);
    let mut p = picker(&l, u64::MAX);
    let zero = l.piece(0).unwrap();
    let a = pick(&mut p, P, &only(2, &[0]), 2);
    assert_eq!(a.len(), 2);
    deliver(&mut p, P, &a[0]);
    p.piece_failed(zero);
    assert_eq!(pick(&mut p, next, &only(2, &[0]), 2), a);
    (p, zero, a)
}

#[test]
fn a_delivery_reported_after_its_piece_failed_does_not_count_for_the_next_attempt() {
    // The piece starts again with Q.
    let (mut p, zero, a) = failed_with_a_report_still_to_come(Q);
    // P's late report of the old attempt's block changes nothing...
    assert_eq!(p.block_received(P, &a[1], 0), BlockOutcome::Ignored);
    // ...so Q's deliveries complete the new attempt.
    assert!(matches!(
        deliver(&mut p, Q, &a[0]),
        BlockOutcome::Accepted {
            piece_done: false,
            ..
        }
    ));
    assert!(matches!(
        deliver(&mut p, Q, &a[1]),
        BlockOutcome::Accepted {
            piece_done: true,
            ..
        }
    ));
    // A late report for a block nobody is asked for now is ignored too.
    p.piece_failed(zero);
    assert_eq!(deliver(&mut p, Q, &a[0]), BlockOutcome::Ignored);
    assert_eq!(p.state(zero), PieceState::Missing);
}

#[test]
fn streamed_pieces_larger_than_the_budget_start_by_their_cost_not_their_length() {
    // 64 MiB pieces and a 4 MiB budget: whole, two would have to fit; streamed, each
    // costs its window and block records (about 0.7 MiB), so five fit and no more.
    let piece = 64 << 20;
    let l = layout(piece, 8 * piece);
    let mode = PieceMode::for_torrent(piece as u32, 4 << 20, 16 << 20);
    assert_eq!(mode, PieceMode::Streamed);
    let n = l.num_pieces();
    let mut p = Picker::new(l.clone(), &Bitfield::new(n), &full(n), 4 << 20).with_mode(mode);
    // Each peer holds one piece of its own, so each pick must start a new piece.
    let mut started = 0;
    for i in 0..8 {
        let has = only(n, &[i]);
        p.add_peer_pieces(&has);
        if !pick(&mut p, PeerKey(u64::from(i)), &has, 4).is_empty() {
            started += 1;
        }
    }
    let cost = mode.cost(piece as u32);
    assert_eq!(started, (4 << 20) / cost);
    assert!(p.in_progress_bytes() <= 4 << 20);
    // A failed piece gives its cost back, and the budget lets another start.
    let first = l.piece(0).unwrap();
    p.piece_failed(first);
    assert_eq!(p.in_progress_bytes(), (started - 1) * cost);
}

#[test]
fn one_streamed_piece_always_starts_even_under_a_tiny_budget() {
    let piece = 512 << 20;
    let l = layout(piece, 2 * piece);
    let mut p =
        Picker::new(l.clone(), &Bitfield::new(2), &full(2), 1).with_mode(PieceMode::Streamed);
    p.add_peer_pieces(&full(2));
    let got = pick(&mut p, P, &full(2), 8);
    assert_eq!(got.len(), 8);
    assert!(got.iter().all(|r| r.piece == got[0].piece));
    // The second piece waits: one piece's cost is the floor.
    let other = only(2, &[1 - got[0].piece]);
    assert!(pick(&mut p, Q, &other, 8).is_empty());
}

#[test]
fn a_streamed_block_costs_no_more_bookkeeping_than_the_budget_counts() {
    let per_block = std::mem::size_of::<BlockState>() + crate::engine::streamed::slot_bytes();
    assert!(
        per_block as u64 <= crate::engine::streamed::BLOCK_RECORD_BYTES,
        "{per_block} bytes per block"
    );
}

/// A block handed out, with the attempt at its piece it was handed out for.
type Leased = (BlockRequest, u32);

/// The PieceManager, as the churn test below sees it: the blocks of each piece's
/// current attempt, who sent each, and how many attempts failed (its own count, which
/// runs ahead of the picker's until the picker hears of the failure).
#[derive(Default)]
struct ModelPieceManager {
    blocks: HashMap<u32, HashMap<u32, u64>>,
    failures: HashMap<u32, u32>,
    done: HashSet<u32>,
}

impl ModelPieceManager {
    /// Takes a block as `StoreBlocks` does: dropped if its piece is done or the block is
    /// of an attempt that failed. Returns the piece's blocks and senders once complete.
    fn store(&mut self, (r, attempt): Leased, from: u64, num_blocks: usize) -> Option<Vec<u64>> {
        let current = self.failures.get(&r.piece).copied().unwrap_or(0);
        if self.done.contains(&r.piece) || attempt < current {
            return None;
        }
        let piece = self.blocks.entry(r.piece).or_default();
        piece.entry(r.offset / BLOCK_SIZE).or_insert(from);
        if piece.len() < num_blocks {
            return None;
        }
        self.blocks
            .remove(&r.piece)
            .map(|b| b.into_values().collect())
    }
}

/// What the Coordinator does when a peer leaves: it reports what it received, gives
/// back what it holds; see `peers_dying_between_pick_and_delivery_strand_nothing`.
fn peer_gone(p: &mut Picker, peer: PeerKey, received: Vec<Leased>, outstanding: Vec<Leased>) {
    for (r, attempt) in received {
        p.block_received(peer, &r, attempt);
    }
    for (r, attempt) in outstanding {
        p.release(peer, &r, attempt);
    }
    p.peer_left(peer);
}

proptest! {
    /// Peers die at random points, including between a pick and its delivery (the reply
    /// to a Peer that is gone is lost with the blocks in it), and pieces fail their hash
    /// at random. Blocks go to a model PieceManager as they arrive, and are reported to
    /// the picker later, with the next pick or the goodbye, as Peers do; the
    /// PieceManager's verdict on a piece reaches the picker at once, before those
    /// reports. Only what reached the peer is known to have been asked of it; the
    /// picker must still free the rest. The bookkeeping holds after every step, no
    /// piece waits on a block the PieceManager does not hold, and the download
    /// completes.
    #[test]
    fn peers_dying_between_pick_and_delivery_strand_nothing(
        pieces in 1u32..10,
        piece_blocks in 1u32..5,
        peers in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 10), 1..5),
        script in proptest::collection::vec((0usize..5, 0u8..10, 1usize..8), 1..300),
    ) {
        let piece_len = u64::from(piece_blocks) * 16384;
        let l = layout(piece_len, u64::from(pieces) * piece_len);
        let n = l.num_pieces();
        // A small budget, as with 4 MiB pieces and `--max-in-progress-mib 8`.
        let mut p = picker(&l, piece_len * 2);
        let bitfields: Vec<Bitfield> = peers
            .iter()
            .map(|bits| only(n, &(0..n).filter(|&i| bits[i as usize]).collect::<Vec<_>>()))
            .collect();
        // Peer ids grow as peers reconnect: each slot's current key.
        let mut keys: Vec<u64> = (0..bitfields.len() as u64).map(|i| 100 + i).collect();
        let mut next_key = 1000;
        for b in &bitfields {
            p.add_peer_pieces(b);
        }
        let lease = |p: &Picker, r: BlockRequest| (r, p.failures(l.piece(r.piece).unwrap()));
        let mut in_flight: HashMap<u64, Vec<Leased>> = HashMap::new();
        let mut outstanding: HashMap<u64, Vec<Leased>> = HashMap::new();
        // Blocks sent to the PieceManager whose `StoreBlocks` reply has not come back,
        // and blocks whose reply came and that are not yet reported, per peer.
        let mut storing: HashMap<u64, Vec<Leased>> = HashMap::new();
        let mut unreported: HashMap<u64, Vec<Leased>> = HashMap::new();
        let mut pm = ModelPieceManager::default();
        // The PieceManager's verdict: a peer whose key is odd lies now and then.
        // Its senders become suspects (the Coordinator names only those still connected;
        // here all of them, a departed key only lapses).
        let verdict = |p: &mut Picker, pm: &mut ModelPieceManager, piece: u32, senders: Vec<u64>, lie: bool| {
            if lie && senders.iter().any(|s| s % 2 == 1) {
                *pm.failures.entry(piece).or_default() += 1;
                p.piece_failed(l.piece(piece).unwrap());
                for s in senders {
                    p.suspect(PeerKey(s), l.piece(piece).unwrap());
                }
            } else {
                pm.done.insert(piece);
                p.piece_verified(l.piece(piece).unwrap());
            }
        };
        for (who, action, k) in script {
            let slot = who % bitfields.len();
            let key = keys[slot];
            match action {
                // Pick, reporting what was stored since the last one: the reply is on
                // its way.
                0 | 1 => {
                    for (r, attempt) in unreported.remove(&key).unwrap_or_default() {
                        if let BlockOutcome::Accepted { cancel, .. } = p.block_received(PeerKey(key), &r, attempt) {
                            for c in cancel {
                                for q in [outstanding.get_mut(&c.0), in_flight.get_mut(&c.0)].into_iter().flatten() {
                                    q.retain(|x| *x != (r, attempt));
                                }
                            }
                        }
                    }
                    let mut out = Vec::new();
                    p.pick(PeerKey(key), &bitfields[slot], k, &mut out);
                    let leased: Vec<Leased> = out.into_iter().map(|r| lease(&p, r)).collect();
                    in_flight.entry(key).or_default().extend(leased);
                }
                // The reply arrives.
                2 => {
                    let arrived = in_flight.remove(&key).unwrap_or_default();
                    outstanding.entry(key).or_default().extend(arrived);
                }
                // Blocks arrive and go to the PieceManager.
                3 | 4 => {
                    let q = outstanding.entry(key).or_default();
                    for leased in q.drain(..k.min(q.len())).collect::<Vec<_>>() {
                        let num_blocks = l.num_blocks(l.piece(leased.0.piece).unwrap()) as usize;
                        if let Some(senders) = pm.store(leased, key, num_blocks) {
                            verdict(&mut p, &mut pm, leased.0.piece, senders, k == 7);
                        }
                        storing.entry(key).or_default().push(leased);
                    }
                }
                // The PieceManager's replies come back: the blocks are reported with the
                // next pick.
                9 => {
                    let stored = storing.remove(&key).unwrap_or_default();
                    unreported.entry(key).or_default().extend(stored);
                }
                // The Coordinator marks it slow, or fast again.
                7 | 8 => p.set_slow(PeerKey(key), action == 7),
                // It dies, with whatever reply was on its way lost; it comes back later
                // under a new key.
                _ => {
                    in_flight.remove(&key);
                    storing.remove(&key);
                    let received = unreported.remove(&key).unwrap_or_default();
                    let held = outstanding.remove(&key).unwrap_or_default();
                    peer_gone(&mut p, PeerKey(key), received, held);
                    keys[slot] = next_key;
                    next_key += 1;
                }
            }
            // The Coordinator's tick.
            let _ = p.suspicion_tick();
            p.check_invariants();
            // A piece the picker counts complete is one the PieceManager completed, and
            // its verdict came at once: none is left waiting for it.
            for piece in l.pieces() {
                prop_assert_ne!(p.state(piece), PieceState::Verifying,
                    "piece {} waits for a verdict the PieceManager cannot give", piece.get());
            }
        }
        // Everyone leaves; a seed joins and finishes the download, bounded in steps.
        for slot in 0..bitfields.len() {
            let key = keys[slot];
            in_flight.remove(&key);
            storing.remove(&key);
            let received = unreported.remove(&key).unwrap_or_default();
            let held = outstanding.remove(&key).unwrap_or_default();
            peer_gone(&mut p, PeerKey(key), received, held);
            p.remove_peer_pieces(&bitfields[slot]);
        }
        p.check_invariants();
        let seed = PeerKey(1);
        p.add_peer_pieces(&full(n));
        for _ in 0..10_000 {
            if p.is_complete() {
                break;
            }
            let mut out = Vec::new();
            p.pick(seed, &full(n), 8, &mut out);
            prop_assert!(!out.is_empty(), "stranded: {} pieces left, {:?} in progress",
                p.remaining_pieces(), p.in_progress_pieces());
            for r in out {
                let leased = lease(&p, r);
                let num_blocks = l.num_blocks(l.piece(r.piece).unwrap()) as usize;
                if let Some(senders) = pm.store(leased, seed.0, num_blocks) {
                    verdict(&mut p, &mut pm, r.piece, senders, false);
                }
                p.block_received(seed, &r, leased.1);
            }
            p.check_invariants();
        }
        prop_assert!(p.is_complete());
        prop_assert_eq!(p.in_progress_bytes(), 0);
        prop_assert_eq!(p.leases_of(seed), 0);
    }
}

#[test]
fn a_failed_piece_is_fetched_again_from_one_peer_until_it_leaves() {
    let l = layout(4 * 16384, 2 * 4 * 16384);
    let mut p = picker(&l, 8 * 16384);
    let both = full(2);
    p.add_peer_pieces(&both);
    p.add_peer_pieces(&both);
    let first = pick(&mut p, P, &only(2, &[0]), 4);
    for r in &first {
        deliver(&mut p, P, r);
    }
    p.piece_failed(l.piece(0).unwrap());
    assert_eq!(p.on_parole(), 1);
    // Q takes two blocks of the failed piece and owns it: P gets none of it, only the
    // other piece, even though blocks of piece 0 are free.
    let q = pick(&mut p, Q, &only(2, &[0]), 2);
    assert_eq!(q.len(), 2);
    assert!(pick(&mut p, P, &only(2, &[0]), 4).is_empty());
    assert!(pick(&mut p, P, &both, 4).iter().all(|r| r.piece == 1));
    // Q goes: the piece is open again, all four of its blocks.
    assert_eq!(p.peer_left(Q), 2);
    let again = pick(&mut p, P, &only(2, &[0]), 8);
    assert_eq!(again.len(), 4);
    p.check_invariants();
    for r in &again {
        deliver(&mut p, P, r);
    }
    p.piece_verified(l.piece(0).unwrap());
    assert_eq!(p.on_parole(), 0);
    p.check_invariants();
}

#[test]
fn a_parole_piece_whose_owner_stopped_asking_goes_to_the_next_peer() {
    let l = layout(4 * 16384, 2 * 4 * 16384);
    let mut p = picker(&l, 8 * 16384);
    let both = full(2);
    p.add_peer_pieces(&both);
    p.add_peer_pieces(&both);
    let first = pick(&mut p, P, &only(2, &[0]), 4);
    for r in &first {
        deliver(&mut p, P, r);
    }
    p.piece_failed(l.piece(0).unwrap());
    // Q takes two blocks of the failed piece, delivers them and asks for no more (it
    // choked us, or no longer picks): it owns the piece but holds no request on it.
    let q = pick(&mut p, Q, &only(2, &[0]), 2);
    for r in &q {
        deliver(&mut p, Q, r);
    }
    // The other two blocks go to P rather than waiting on Q for ever.
    let rest = pick(&mut p, P, &only(2, &[0]), 4);
    assert_eq!(
        rest.len(),
        2,
        "the piece waits on an owner that asks no more"
    );
    for r in &rest {
        deliver(&mut p, P, r);
    }
    p.piece_verified(l.piece(0).unwrap());
    p.check_invariants();
}

/// Slow peer keys, apart from `P` and `Q`.
const S1: PeerKey = PeerKey(11);
const S2: PeerKey = PeerKey(12);
const S3: PeerKey = PeerKey(13);

#[test]
fn slow_peers_share_a_few_pieces_and_leave_the_rest_of_the_budget_to_fast_ones() {
    // Eight pieces of four blocks and a budget of eight pieces: slow pieces may take two.
    let l = layout(4 * 16384, 16 * 4 * 16384);
    let mut p = picker(&l, 8 * 4 * 16384);
    for s in [S1, S2, S3] {
        p.set_slow(s, true);
    }
    let mut slow_pieces = HashSet::new();
    for s in [S1, S2, S3] {
        for r in pick(&mut p, s, &full(16), 16) {
            slow_pieces.insert(r.piece);
        }
    }
    assert_eq!(slow_pieces.len(), 2, "slow peers started {slow_pieces:?}");
    p.check_invariants();
    // The fast peer starts pieces of its own with the rest of the budget, six of them
    // (and, with nothing else to do, asks again for the slow peers' blocks).
    let fast = pick(&mut p, P, &full(16), 100);
    let fast_pieces: HashSet<u32> = fast.iter().map(|r| r.piece).collect();
    assert_eq!(fast_pieces.difference(&slow_pieces).count(), 6);
    p.check_invariants();
}

#[test]
fn slow_peers_take_no_free_block_of_a_fast_peers_piece_but_fast_peers_take_theirs() {
    let l = layout(4 * 16384, 2 * 4 * 16384);
    let mut p = picker(&l, 2 * 4 * 16384);
    p.set_slow(S1, true);
    // P starts piece 0 and takes half of it; S1 starts piece 1 and takes half of it.
    let a = pick(&mut p, P, &only(2, &[0]), 2);
    assert!(a.iter().all(|r| r.piece == 0));
    let s = pick(&mut p, S1, &full(2), 2);
    assert!(s.iter().all(|r| r.piece == 1), "a slow peer took {s:?}");
    // With the budget full, S1 gets nothing of piece 0's free half...
    assert!(pick(&mut p, S1, &full(2), 4).iter().all(|r| r.piece == 1));
    assert!(pick(&mut p, S1, &only(2, &[0]), 4).is_empty());
    // ...while P may finish the slow piece's free blocks.
    let b = pick(&mut p, P, &only(2, &[1]), 4);
    assert!(b.iter().all(|r| r.piece == 1) && !b.is_empty());
    p.check_invariants();
}

#[test]
fn a_fast_peer_with_nothing_else_to_do_asks_again_for_blocks_only_slow_peers_hold() {
    let l = layout(4 * 16384, 4 * 4 * 16384);
    let mut p = picker(&l, 2 * 4 * 16384);
    p.set_slow(S1, true);
    p.set_slow(S2, true);
    // S1 holds all of piece 0; the fast Q holds all of piece 1; the budget is full.
    let slow = pick(&mut p, S1, &only(4, &[0]), 4);
    assert_eq!(slow.len(), 4);
    let q = pick(&mut p, Q, &only(4, &[1]), 4);
    assert_eq!(q.len(), 4);
    // P has both and piece 2, which the budget keeps it from starting (so this is no
    // endgame): it is given S1's blocks, not Q's, and each only once.
    let has = only(4, &[0, 1, 2]);
    let rescue = pick(&mut p, P, &has, 16);
    assert_eq!(rescue, slow);
    assert!(pick(&mut p, P, &has, 16).is_empty());
    // Another slow peer is no rescuer: with a piece it could start, it waits.
    assert!(pick(&mut p, S2, &has, 16).is_empty());
    // The first copy wins and the slow holder is told to cancel.
    assert_eq!(
        deliver(&mut p, P, &slow[0]),
        BlockOutcome::Accepted {
            cancel: vec![S1],
            piece_done: false
        }
    );
    p.check_invariants();
    // S1 leaves: P still holds the rest, and nothing is stranded.
    p.peer_left(S1);
    p.check_invariants();
    for r in &slow[1..] {
        assert!(matches!(
            deliver(&mut p, P, r),
            BlockOutcome::Accepted { .. }
        ));
    }
    assert_eq!(p.state(l.piece(0).unwrap()), PieceState::Verifying);
}

/// The same peer can be given a block again in the next attempt (a piece on parole goes
/// to one peer, which may be the one that sent it before). Its late report of the old
/// attempt's copy must not count for the new one: the PieceManager dropped that copy
/// with the failed attempt, so the piece would wait for the block forever (seen in CI
/// as a piece left `Verifying` after a hash failure).
#[test]
fn a_late_delivery_by_the_peer_that_holds_the_block_again_does_not_count_for_the_next_attempt() {
    // The piece starts again with P.
    let (mut p, _, a) = failed_with_a_report_still_to_come(P);
    // P's late report of the old attempt's copy changes nothing...
    assert_eq!(p.block_received(P, &a[1], 0), BlockOutcome::Ignored);
    // ...nor does a release of it: P still holds the block for the new attempt.
    p.release(P, &a[1], 0);
    assert_eq!(p.leases_of(P), 2);
    assert!(matches!(
        p.block_received(P, &a[1], 1),
        BlockOutcome::Accepted { .. }
    ));
    p.check_invariants();
}

/// A third peer key, apart from `P` and `Q`.
const R: PeerKey = PeerKey(3);

/// Pieces 0 and 1 in progress shared by `P` and `Q`; piece 0 fails with both among its
/// senders, and both are suspects of it.
fn shared_piece_failed() -> (Arc<Layout>, Picker) {
    let l = layout(4 * 16384, 4 * 4 * 16384);
    let mut p = picker(&l, 16 * 16384);
    for _ in 0..3 {
        p.add_peer_pieces(&full(4));
    }
    let a = pick(&mut p, P, &only(4, &[0]), 2);
    let b = pick(&mut p, Q, &only(4, &[0]), 2);
    for r in &a {
        deliver(&mut p, P, r);
    }
    for r in &b {
        deliver(&mut p, Q, r);
    }
    p.piece_failed(l.piece(0).unwrap());
    p.suspect(P, l.piece(0).unwrap());
    p.suspect(Q, l.piece(0).unwrap());
    (l, p)
}

#[test]
fn suspects_take_only_pieces_on_parole_until_the_failed_piece_passes() {
    let (l, mut p) = shared_piece_failed();
    assert_eq!(p.suspects(), 2);
    // A trusted peer starts piece 1: no suspect may mix its blocks into it.
    let trusted = pick(&mut p, R, &only(4, &[1]), 2);
    assert_eq!(trusted.len(), 2);
    assert!(pick(&mut p, Q, &only(4, &[1, 2, 3]), 8).is_empty());
    // A suspect may fetch the failed piece alone; the other suspect gets nothing.
    let parole = pick(&mut p, P, &full(4), 8);
    assert!(!parole.is_empty() && parole.iter().all(|r| r.piece == 0));
    assert!(pick(&mut p, Q, &full(4), 8).is_empty());
    // Neither duplicates the trusted peer's blocks in endgame.
    assert!(pick(&mut p, Q, &only(4, &[1]), 8).is_empty());
    for r in &parole {
        deliver(&mut p, P, r);
    }
    p.piece_verified(l.piece(0).unwrap());
    // The verdict is in: both pick as before.
    assert_eq!(p.suspects(), 0);
    assert!(!pick(&mut p, Q, &full(4), 8).is_empty());
    p.check_invariants();
}

#[test]
fn a_suspect_is_trusted_again_when_it_leaves_or_after_its_ticks() {
    let (_, mut p) = shared_piece_failed();
    p.peer_left(P);
    assert!(!p.is_suspect(P));
    for _ in 1..SUSPICION_TICKS {
        assert!(p.suspicion_tick().is_empty());
    }
    assert!(p.is_suspect(Q));
    assert_eq!(p.suspicion_tick(), vec![Q]);
    assert_eq!(p.suspects(), 0);
    assert!(!pick(&mut p, Q, &only(4, &[1, 2, 3]), 8).is_empty());
}

#[test]
fn a_download_whose_every_peer_is_suspect_still_completes() {
    // The failed piece's only holder left: the one peer left is a suspect that cannot
    // fetch the failed piece, so it could fetch nothing; its suspicion lapses after its
    // ticks rather than stalling the download. A trusted peer with piece 0 comes later.
    let l = layout(4 * 16384, 4 * 4 * 16384);
    let mut p = picker(&l, 8 * 16384);
    let all = full(4);
    let rest = only(4, &[1, 2, 3]);
    p.add_peer_pieces(&all);
    p.add_peer_pieces(&rest);
    for r in pick(&mut p, P, &only(4, &[0]), 4) {
        deliver(&mut p, P, &r);
    }
    p.piece_failed(l.piece(0).unwrap());
    p.suspect(P, l.piece(0).unwrap());
    p.suspect(Q, l.piece(0).unwrap());
    p.peer_left(P);
    p.remove_peer_pieces(&all);
    let r_joins = 2 * SUSPICION_TICKS;
    for step in 0..4 * SUSPICION_TICKS {
        if p.is_complete() {
            break;
        }
        if step == r_joins {
            assert_eq!(
                p.remaining_pieces(),
                1,
                "the suspect fetched nothing once trusted"
            );
            p.add_peer_pieces(&all);
        }
        let _ = p.suspicion_tick();
        for (peer, has) in [(Q, &rest), (R, &all)] {
            if peer == R && step < r_joins {
                continue;
            }
            let picked = pick(&mut p, peer, has, 8);
            if peer == Q && step + 1 < SUSPICION_TICKS {
                assert!(picked.is_empty(), "a suspect took a shared piece");
            }
            for r in picked {
                if let BlockOutcome::Accepted {
                    piece_done: true, ..
                } = deliver(&mut p, peer, &r)
                {
                    p.piece_verified(l.piece(r.piece).unwrap());
                }
            }
        }
        p.check_invariants();
    }
    assert!(
        p.is_complete(),
        "stalled: {} pieces left",
        p.remaining_pieces()
    );
}

#[test]
fn time_critical_pieces_go_first_in_their_order_over_rarer_ones() {
    let l = layout(32 * 1024, 10 * 32 * 1024);
    let mut p = picker(&l, u64::MAX);
    // Piece 3 is the rarest; without a stream it would go first.
    for _ in 0..3 {
        p.add_peer_pieces(&only(10, &[0, 1, 2, 4, 5, 6, 7, 8, 9]));
    }
    p.set_time_critical(&[7, 6], 0);
    let out = pick(&mut p, P, &full(10), 4);
    let order: Vec<u32> = out.iter().map(|r| r.piece).collect();
    assert_eq!(order, vec![7, 7, 6, 6]);
    p.check_invariants();
}

#[test]
fn a_time_critical_piece_starts_past_a_full_budget_but_only_within_the_overshoot() {
    let piece = 32 * 1024;
    let l = layout(piece, 20 * piece);
    let mut p = picker(&l, 2 * piece);
    // The budget (two pieces) is full.
    let out = pick(&mut p, Q, &full(20), 4);
    assert_eq!(out.len(), 4);
    assert!(pick(&mut p, Q, &full(20), 2).is_empty());
    let window: Vec<u32> = (10..20).collect();
    p.set_time_critical(&window, 0);
    let out = pick(&mut p, P, &full(20), 40);
    let started: HashSet<u32> = out.iter().map(|r| r.piece).collect();
    assert_eq!(started.len() as u64, CRITICAL_OVERSHOOT);
    assert!(started.iter().all(|i| (10..14).contains(i)), "{started:?}");
    p.check_invariants();
}

#[test]
fn urgent_blocks_are_asked_of_a_second_peer_but_not_a_third() {
    let l = layout(32 * 1024, 4 * 32 * 1024);
    let mut p = picker(&l, u64::MAX);
    p.set_time_critical(&[2], 1);
    let first = pick(&mut p, P, &full(4), 2);
    assert!(first.iter().all(|r| r.piece == 2));
    // Q is asked for the same two blocks, before any other piece.
    let second = pick(&mut p, Q, &full(4), 2);
    assert_eq!(second, first);
    // A third peer gets other pieces.
    let third = pick(&mut p, PeerKey(3), &full(4), 2);
    assert!(third.iter().all(|r| r.piece != 2), "{third:?}");
    // The first copy in wins; the other holder is told to cancel.
    assert_eq!(
        deliver(&mut p, Q, &first[0]),
        BlockOutcome::Accepted {
            cancel: vec![P],
            piece_done: false
        }
    );
    p.check_invariants();
}

#[test]
fn a_stalled_urgent_piece_is_asked_of_up_to_four_peers() {
    let l = layout(32 * 1024, 4 * 32 * 1024);
    let mut p = picker(&l, u64::MAX);
    p.set_time_critical(&[2], 1);
    p.set_stalled(&[2, 2]);
    assert_eq!(p.stalled(), &[2]);
    let first = pick(&mut p, P, &full(4), 2);
    assert!(first.iter().all(|r| r.piece == 2), "{first:?}");
    for k in 1..4u64 {
        let more = pick(&mut p, PeerKey(10 + k), &full(4), 2);
        assert_eq!(more, first, "holder {}", k + 1);
    }
    // A fifth peer gets other blocks.
    let fifth = pick(&mut p, PeerKey(20), &full(4), 2);
    assert!(fifth.iter().all(|r| r.piece != 2), "{fifth:?}");
    // Once the wait is over, the limit is two again for new holders.
    p.set_stalled(&[]);
    assert!(p.stalled().is_empty());
    p.check_invariants();
}

#[test]
fn slow_peers_and_suspects_are_not_given_time_critical_pieces_first() {
    let piece = 32 * 1024;
    let l = layout(piece, 8 * piece);
    let mut p = picker(&l, 2 * piece);
    let r = PeerKey(3);
    // R fills the budget; only a time-critical piece may start now.
    assert_eq!(pick(&mut p, r, &only(8, &[0, 1]), 4).len(), 4);
    p.set_slow(Q, true);
    p.suspect(PeerKey(4), l.piece(7).unwrap());
    p.set_time_critical(&[5], 1);
    assert!(pick(&mut p, Q, &full(8), 2).is_empty());
    assert!(pick(&mut p, PeerKey(4), &full(8), 2).is_empty());
    let fast = pick(&mut p, P, &full(8), 2);
    assert_eq!(fast.iter().map(|r| r.piece).collect::<Vec<_>>(), vec![5, 5]);
    p.check_invariants();
}

#[test]
fn a_new_list_replaces_the_last_so_a_closed_stream_releases_its_pieces() {
    let l = layout(32 * 1024, 8 * 32 * 1024);
    let mut p = picker(&l, u64::MAX);
    p.set_time_critical(&[5, 6, 5, 99], 3);
    assert_eq!(p.time_critical(), (&[5u32, 6][..], 2));
    p.set_time_critical(&[], 0);
    assert_eq!(p.time_critical(), (&[][..], 0));
    let many: Vec<u32> = (0..10_000).map(|i| i % 8).collect();
    p.set_time_critical(&many, 10_000);
    assert!(p.time_critical().0.len() <= MAX_CRITICAL);
}

#[test]
fn sequential_mode_starts_the_heads_then_ascends() {
    let l = layout(16 * 1024, 8 * 16 * 1024);
    let mut p = picker(&l, u64::MAX);
    p.set_sequential(true, vec![0, 7, 100]);
    let out = pick(&mut p, P, &full(8), 5);
    let order: Vec<u32> = out.iter().map(|r| r.piece).collect();
    assert_eq!(order, vec![0, 7, 1, 2, 3]);
    // A piece that fails is started again before later ones.
    p.piece_failed(l.piece(1).unwrap());
    let out = pick(&mut p, P, &full(8), 2);
    let order: Vec<u32> = out.iter().map(|r| r.piece).collect();
    assert_eq!(order, vec![1, 4]);
    p.check_invariants();
}

#[test]
fn a_run_for_a_web_seed_starts_at_the_most_urgent_missing_time_critical_piece() {
    let l = layout(16 * 1024, 16 * 16 * 1024);
    let mut p = picker(&l, u64::MAX);
    assert_eq!(p.first_critical_missing(), None);
    p.set_time_critical(&[9, 10, 11], 1);
    // Piece 9 is taken by a peer; the run starts at 10.
    let _ = pick(&mut p, Q, &only(16, &[9]), 1);
    assert_eq!(p.first_critical_missing(), Some(10));
    let mut out = Vec::new();
    p.pick_run(
        P,
        &full(16),
        p.first_critical_missing().unwrap(),
        3,
        &mut out,
    );
    let order: Vec<u32> = out.iter().map(|r| r.piece).collect();
    assert_eq!(order, vec![10, 11, 12]);
    p.check_invariants();
}

#[test]
fn high_priority_pieces_start_before_rarer_ones() {
    let l = layout(32 * 1024, 10 * 32 * 1024);
    let mut p = picker(&l, u64::MAX).with_high_priority(only(10, &[6, 7, 8]));
    p.add_peer_pieces(&full(10));
    p.add_peer_pieces(&only(10, &[0, 1, 3, 4, 5, 6, 7, 8, 9]));
    // Piece 2 is rarer than the rest, yet the high-priority pieces start first.
    let mut started = Vec::new();
    for peer in 0..3 {
        let got = pick(&mut p, PeerKey(10 + peer), &full(10), 2);
        assert!(got.iter().all(|r| r.piece == got[0].piece), "{got:?}");
        started.push(got[0].piece);
    }
    started.sort_unstable();
    assert_eq!(started, vec![6, 7, 8]);
    for &piece in &started {
        p.piece_verified(l.piece(piece).unwrap());
    }
    // With them in, rarest first again.
    let got = pick(&mut p, P, &full(10), 2);
    assert!(got.iter().all(|r| r.piece == 2), "{got:?}");
}

#[test]
fn high_priority_pieces_start_first_in_sequential_mode() {
    let l = layout(32 * 1024, 10 * 32 * 1024);
    let mut p = picker(&l, u64::MAX).with_high_priority(only(10, &[5, 9]));
    p.set_sequential(true, vec![0]);
    p.add_peer_pieces(&full(10));
    let order: Vec<u32> = (0..4)
        .map(|k| pick(&mut p, PeerKey(20 + k), &full(10), 2)[0].piece)
        .collect();
    assert_eq!(order, vec![5, 9, 0, 1]);
}

#[test]
fn high_priority_pieces_already_had_or_skipped_count_for_nothing() {
    let l = layout(32 * 1024, 4 * 32 * 1024);
    let p = Picker::new(l.clone(), &only(4, &[0]), &only(4, &[0, 2, 3]), u64::MAX)
        .with_high_priority(only(4, &[0, 1]));
    assert!(
        !p.is_high(0) && !p.is_high(1),
        "nothing high is left to fetch"
    );
}
