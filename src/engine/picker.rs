//! The piece picker: which block to ask which peer for next. Plain data and arithmetic with
//! no actors or I/O; the Coordinator owns the one `Picker` of a torrent and calls it from
//! its message handlers, so rarest-first and endgame happen there.
//!
//! Policy, in order of preference for a peer that has room in its request pipeline:
//! 1. free blocks of pieces already in progress (finishing pieces keeps memory low and
//!    gets pieces verified, announced and uploadable sooner);
//! 2. a new piece, the rarest among the pieces the peer has, ties broken at random so
//!    peers do not all converge on the same piece;
//! 3. endgame: once no block is free anywhere, blocks already requested from other peers,
//!    so one slow peer cannot hold the last pieces hostage. The first copy to arrive wins
//!    and the other holders are told to cancel.
//!
//! Starting new pieces is bounded by a byte budget for pieces in progress, which bounds
//! the memory the PieceManager holds for partial pieces: a whole piece costs its length,
//! a streamed one (too large for the budgets, written as it comes) its hash window and
//! block records ([`PieceMode::cost`]).
//!
//! **Leases.** Every block handed out is a lease held by one peer (more than one only in
//! endgame), indexed by peer: [`Picker::peer_left`] frees all of a peer's leases at once,
//! whether or not the blocks ever reached it (a pick reply to a Peer that died on the way
//! is never delivered, and nobody else could give those blocks back). A piece is thus
//! never stranded in progress by a peer that is gone.
//!
//! **Speed classes.** The Coordinator marks peers that would take long over a piece as
//! slow ([`Picker::set_slow`]). A piece a slow peer starts is a slow piece; slow peers
//! take blocks only of slow pieces and start new ones only while slow pieces cost at most
//! [`SLOW_SHARE`] of the budget, so many slow peers share a few pieces among themselves
//! (each finishes as fast as their sum allows) and the rest of the budget stays with the
//! fast peers, whose pieces no slow peer holds up. A fast peer may take free blocks of
//! any piece, and one with nothing else to do asks again for blocks that only slow peers
//! hold (the first copy in wins, as in endgame): work stuck on slow peers is re-issued
//! early, not only once every piece has started.
//!
//! **Parole.** A piece that failed its hash is fetched again from one peer only (its
//! owner) for as long as that peer holds it: if it fails again, that peer alone sent it
//! and is certainly to blame; if it passes, smart ban compares the blocks of the earlier
//! failures with it. Once every wanted piece has started, endgame may duplicate its
//! blocks too, so a slow owner cannot hold the last pieces hostage.
//!
//! **Suspects.** Every peer that sent a block of a failed piece is a suspect
//! ([`Picker::suspect`]) until that piece passes (then smart ban has judged it: a liar is
//! banned, an honest sender cleared), it leaves, or [`SUSPICION_TICKS`] pass without a
//! verdict. A suspect takes blocks of pieces on parole only, never of a piece shared with
//! others: a liar would spoil every piece it touched until its verdict, and with large
//! pieces a verdict waits for a whole refetch. If it fetches a parole piece alone, that
//! piece's own outcome judges it.
//!
//! **Time-critical pieces.** A stream reader (a media player seeking through a file)
//! needs some pieces by a deadline: the pieces under its read position and a read-ahead
//! window after it. The Coordinator hands them over as one list, most urgent first
//! ([`Picker::set_time_critical`]); the first `urgent` of them are pieces a reader is
//! blocked on now. Before anything else, a fast peer (never a slow peer or a suspect)
//! takes free blocks of time-critical pieces in that order and starts missing ones, even
//! past the budget by up to [`CRITICAL_OVERSHOOT`] pieces; then it is asked again for
//! blocks of urgent pieces that only one other peer holds, as in endgame, so one slow
//! holder does not keep a player waiting. A list is capped at [`MAX_CRITICAL`] pieces.
//!
//! **File priorities.** With [`Picker::with_high_priority`], new pieces of high-priority
//! files start before any other (rarest first among them, or in order in sequential
//! mode); pieces in progress are still finished first. Once every high-priority piece
//! is in, the picker forgets the set.
//!
//! **Sequential mode.** With [`Picker::set_sequential`], new pieces start in the order
//! given first (the first and last piece of each file, where players look for an
//! index), then in ascending order instead of rarest first.

use std::collections::{HashMap, HashSet};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::streamed::PieceMode;
use super::PeerKey;
use crate::layout::{Layout, PieceIndex, BLOCK_SIZE};
use crate::wire::{Bitfield, BlockRequest};

/// Where a piece is in its life. The five states are disjoint; ARCHITECTURE.md lists the
/// transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceState {
    /// Not ours and not started (or started and failed its hash).
    Missing,
    /// Some blocks requested or received; the piece has an entry in `partials`.
    InProgress,
    /// Every block received; waiting for the hash and the write.
    Verifying,
    /// Verified and written.
    Have,
    /// Not wanted (file selection); never picked.
    Skipped,
}

#[derive(Debug, Clone)]
enum BlockState {
    Free,
    /// Asked of these peers; more than one only in endgame.
    Requested(Vec<PeerKey>),
    Received,
}

/// The blocks of one piece in progress.
#[derive(Debug, Clone)]
struct Partial {
    blocks: Vec<BlockState>,
    /// Blocks in `Free`, so a full piece is skipped without scanning it.
    free: u32,
    /// Blocks in `Received`.
    received: u32,
    /// A piece on parole: the one peer its free blocks go to, once one took some.
    parole: bool,
    owner: Option<PeerKey>,
    /// Started by a slow peer: open to slow peers (and fast ones), counted against
    /// [`SLOW_SHARE`].
    slow: bool,
}

/// One ask of [`Picker::pick_as`], as its steps see it.
#[derive(Clone, Copy)]
struct Ask<'a> {
    peer: PeerKey,
    /// The pieces the peer has.
    pieces: &'a Bitfield,
    /// How long `out` may grow.
    target: usize,
    /// Whether the peer may be given a piece on parole.
    parole_ok: bool,
    /// The peer is marked slow.
    slow: bool,
    /// Smart ban suspects the peer.
    suspect: bool,
}

/// Whether `peer` may take the free blocks of piece `index`: anyone, unless the piece is
/// on parole and another peer owns it and still holds a request for one of its blocks.
/// An owner that holds none has stopped fetching the piece (choked, capped as slow, or
/// no longer asking), and a piece it alone could finish would wait for it for good.
fn open_to(
    partial: &Partial,
    index: u32,
    peer: PeerKey,
    leases: &HashMap<PeerKey, HashSet<BlockId>>,
) -> bool {
    match partial.owner {
        Some(owner) if partial.parole && owner != peer => !leases
            .get(&owner)
            .is_some_and(|held| held.iter().any(|(p, _)| *p == index)),
        _ => true,
    }
}

/// A block, by piece index and block index within the piece.
type BlockId = (u32, u32);

/// How many of the Coordinator's ticks ([`Picker::suspicion_tick`], every 500 ms) a peer
/// stays a suspect without a verdict: enough for a parole piece to be fetched again, and
/// a bound on how long a download whose every peer is suspect (the failed piece's only
/// holders gone, say) waits before trusting them again.
pub const SUSPICION_TICKS: u32 = 40;

/// Failed pieces remembered per suspect; a suspect of more is cleared by any of them.
const MAX_SUSPECT_PIECES: usize = 16;

/// Why a peer is a suspect, and for how long yet.
#[derive(Debug, Clone)]
struct Suspicion {
    /// Failed pieces it sent blocks of, not yet verified.
    pieces: Vec<u32>,
    /// Ticks until it is trusted again without a verdict.
    ticks_left: u32,
}

/// The share of the in-progress budget that slow pieces may take (see the module
/// documentation); at least one piece always may.
pub const SLOW_SHARE: f64 = 0.25;

/// Most time-critical pieces the picker keeps; a longer list is cut (the Coordinator caps
/// each stream's window well below it).
pub const MAX_CRITICAL: usize = 512;

/// How many pieces beyond the in-progress budget time-critical pieces may start: a
/// reader waiting for a piece is not kept waiting because other pieces fill the budget,
/// and memory still stays bounded.
pub const CRITICAL_OVERSHOOT: u64 = 4;

/// How many peers may hold a request for a block of an urgent piece at once, before
/// endgame (which may ask every peer).
const URGENT_HOLDERS: usize = 2;

/// The same for an urgent piece a reader has waited on too long ([`Picker::set_stalled`]).
const STALLED_HOLDERS: usize = 4;

/// What became of a reported block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOutcome {
    /// First copy. `cancel` lists other peers that were asked for it (endgame); `piece_done`
    /// says every block of the piece is now in.
    Accepted {
        /// Peers to send `cancel` to.
        cancel: Vec<PeerKey>,
        /// The piece has all its blocks.
        piece_done: bool,
    },
    /// A second copy, or a block of a piece no longer in progress.
    Ignored,
}

/// Picks blocks for peers; see the module documentation for the policy.
#[derive(Debug)]
pub struct Picker {
    /// Block and piece arithmetic of the torrent.
    layout: std::sync::Arc<Layout>,
    /// State of every piece.
    states: Vec<PieceState>,
    /// How many connected peers have each piece.
    availability: Vec<u32>,
    /// Block states of pieces that are `InProgress`.
    partials: HashMap<u32, Partial>,
    /// What pieces `InProgress` or `Verifying` cost ([`PieceMode::cost`]).
    in_progress_bytes: u64,
    /// Above this, no new piece is started.
    max_in_progress_bytes: u64,
    /// The budget as configured, before the floor that lets one piece always start.
    budget: u64,
    /// How the PieceManager assembles pieces, which sets what a piece in progress costs.
    mode: PieceMode,
    /// Wanted pieces not yet `Have`.
    remaining_pieces: u32,
    /// Wanted bytes not yet `Have`.
    remaining_bytes: u64,
    /// Tie-breaking among equally rare pieces.
    rng: SmallRng,
    /// The blocks each peer holds a request for: the Coordinator's record of what it
    /// handed out, so a peer that goes gives all of them back at once.
    leases: HashMap<PeerKey, HashSet<BlockId>>,
    /// Pieces that failed their hash and are not yet verified (fetched from one peer),
    /// with how many times each failed.
    parole: HashMap<u32, u32>,
    /// Peers the Coordinator marked slow.
    slow_peers: HashSet<PeerKey>,
    /// Peers that sent blocks of a failed piece, until its verdict (see the module
    /// documentation); at most the connected peers, as a peer that leaves is dropped.
    suspects: HashMap<PeerKey, Suspicion>,
    /// Pieces stream readers need soon, most urgent first, at most [`MAX_CRITICAL`]: the
    /// union of the readers' windows, set by the Coordinator.
    critical: Vec<u32>,
    /// How many of `critical`, from the front, a reader is blocked on now: these are
    /// also asked of a second peer (see the module documentation).
    urgent: usize,
    /// Urgent pieces a reader has waited on too long, sorted: asked of up to
    /// [`STALLED_HOLDERS`] peers.
    stalled: Vec<u32>,
    /// New pieces start in order rather than rarest first.
    sequential: bool,
    /// In sequential mode, pieces to start before the ascending walk (each file's first
    /// and last piece).
    heads: Vec<u32>,
    /// Pieces of high-priority files, while any of them is not yet `Have`.
    high: Option<Bitfield>,
    /// High-priority pieces not yet `Have`.
    high_left: u32,
    /// Where the ascending walk resumes: no piece below it is `Missing`, unless a piece
    /// failed since (which moves it back).
    seq_cursor: u32,
}

impl Picker {
    /// A picker for `layout` that already has the pieces set in `have` and wants the
    /// pieces set in `wanted` (all of them for a plain download).
    pub fn new(
        layout: std::sync::Arc<Layout>,
        have: &Bitfield,
        wanted: &Bitfield,
        max_in_progress_bytes: u64,
    ) -> Self {
        let n = layout.num_pieces() as usize;
        let mut states = vec![PieceState::Missing; n];
        let mut remaining_pieces = 0;
        let mut remaining_bytes = 0;
        for piece in layout.pieces() {
            let i = piece.as_usize();
            states[i] = if have.has(piece.get()) {
                PieceState::Have
            } else if !wanted.has(piece.get()) {
                PieceState::Skipped
            } else {
                remaining_pieces += 1;
                remaining_bytes += u64::from(layout.piece_len(piece));
                PieceState::Missing
            };
        }
        // Two pieces at least, so a budget smaller than a piece cannot stall the download.
        let floor = 2 * u64::from(layout.piece_length());
        Self {
            states,
            availability: vec![0; n],
            partials: HashMap::new(),
            in_progress_bytes: 0,
            max_in_progress_bytes: max_in_progress_bytes.max(floor),
            budget: max_in_progress_bytes,
            mode: PieceMode::Whole,
            remaining_pieces,
            remaining_bytes,
            rng: SmallRng::seed_from_u64(0x7a11_5eed ^ n as u64),
            leases: HashMap::new(),
            parole: HashMap::new(),
            slow_peers: HashSet::new(),
            suspects: HashMap::new(),
            critical: Vec::new(),
            urgent: 0,
            stalled: Vec::new(),
            sequential: false,
            heads: Vec::new(),
            seq_cursor: 0,
            high: None,
            high_left: 0,
            layout,
        }
    }

    /// The same picker starting the pieces set in `high` (those of high-priority files)
    /// before any other new piece. Pieces not wanted or already had are ignored.
    pub fn with_high_priority(mut self, high: Bitfield) -> Self {
        self.high_left = self
            .states
            .iter()
            .enumerate()
            .filter(|&(i, s)| {
                *s != PieceState::Have && *s != PieceState::Skipped && high.has(i as u32)
            })
            .count() as u32;
        self.high = (self.high_left > 0).then_some(high);
        self
    }

    /// Whether `piece` belongs to a high-priority file not yet complete.
    fn is_high(&self, piece: u32) -> bool {
        self.high.as_ref().is_some_and(|h| h.has(piece))
    }

    /// Sets the time-critical pieces, most urgent first, replacing the last list; the
    /// first `urgent` of them a reader is blocked on now. Pieces out of range are
    /// dropped, repeats kept once, and the list cut at [`MAX_CRITICAL`].
    pub fn set_time_critical(&mut self, pieces: &[u32], urgent: usize) {
        self.critical.clear();
        self.urgent = 0;
        let mut seen = HashSet::new();
        for (k, &piece) in pieces.iter().enumerate() {
            if self.critical.len() >= MAX_CRITICAL {
                break;
            }
            if (piece as usize) < self.states.len() && seen.insert(piece) {
                self.critical.push(piece);
                if k < urgent {
                    self.urgent += 1;
                }
            }
        }
    }

    /// The most urgent time-critical piece not yet started: where a source that fetches
    /// runs of pieces (a web seed, [`Picker::pick_run`]) should start.
    pub fn first_critical_missing(&self) -> Option<u32> {
        self.critical
            .iter()
            .copied()
            .find(|&i| self.states.get(i as usize) == Some(&PieceState::Missing))
    }

    /// The time-critical pieces, most urgent first, and how many of them are urgent.
    pub fn time_critical(&self) -> (&[u32], usize) {
        (&self.critical, self.urgent)
    }

    /// Marks urgent pieces a reader has waited on too long (the Coordinator times the
    /// waits): their blocks may be asked of [`STALLED_HOLDERS`] peers rather than
    /// [`URGENT_HOLDERS`]. Replaces the last list; at most [`MAX_CRITICAL`] are kept, and
    /// only urgent pieces are widened.
    pub fn set_stalled(&mut self, pieces: &[u32]) {
        self.stalled = pieces.iter().copied().take(MAX_CRITICAL).collect();
        self.stalled.sort_unstable();
        self.stalled.dedup();
    }

    /// The pieces [`Picker::set_stalled`] marked, sorted.
    pub fn stalled(&self) -> &[u32] {
        &self.stalled
    }

    /// Starts new pieces in order (`heads` first, then ascending) if `on`, rarest first
    /// if not. Heads out of range are dropped.
    pub fn set_sequential(&mut self, on: bool, heads: Vec<u32>) {
        self.sequential = on;
        let n = self.states.len();
        self.heads = heads.into_iter().filter(|&h| (h as usize) < n).collect();
        self.seq_cursor = 0;
    }

    /// Whether new pieces start in order.
    pub fn is_sequential(&self) -> bool {
        self.sequential
    }

    /// Blocks of time-critical pieces for a fast, trusted `peer` (see the module
    /// documentation): free blocks in order of urgency, missing pieces started, then
    /// blocks of urgent pieces asked of one more peer.
    fn pick_critical(
        &mut self,
        peer: PeerKey,
        pieces: &Bitfield,
        target: usize,
        parole_ok: bool,
        out: &mut Vec<BlockRequest>,
    ) {
        let overshoot = CRITICAL_OVERSHOOT * self.mode.cost(self.layout.piece_length());
        for k in 0..self.critical.len() {
            if out.len() >= target {
                return;
            }
            let index = self.critical[k];
            if !pieces.has(index) || (!parole_ok && self.parole.contains_key(&index)) {
                continue;
            }
            let Some(piece) = self.layout.piece(index) else {
                continue;
            };
            match self.states[index as usize] {
                PieceState::InProgress => {
                    let Some(partial) = self.partials.get_mut(&index) else {
                        continue;
                    };
                    if partial.free == 0 || !open_to(partial, index, peer, &self.leases) {
                        continue;
                    }
                    let leases = self.leases.entry(peer).or_default();
                    take_free_blocks(&self.layout, index, partial, peer, target, leases, out);
                }
                PieceState::Missing => {
                    let cost = self.cost(piece);
                    if self.in_progress_bytes + cost
                        > self.max_in_progress_bytes.saturating_add(overshoot)
                    {
                        continue;
                    }
                    self.start_piece(piece, peer, target, false, out);
                }
                _ => {}
            }
        }
        self.duplicate_urgent(peer, pieces, target, out);
    }

    /// The last step of [`Picker::pick_critical`]: blocks of urgent pieces already asked
    /// of others, asked of `peer` too while they have few holders (more for a stalled
    /// piece). Pieces on parole are left to their owner.
    fn duplicate_urgent(
        &mut self,
        peer: PeerKey,
        pieces: &Bitfield,
        target: usize,
        out: &mut Vec<BlockRequest>,
    ) {
        for k in 0..self.urgent {
            let index = self.critical[k];
            if !pieces.has(index) {
                continue;
            }
            let Some(partial) = self.partials.get_mut(&index) else {
                continue;
            };
            if partial.parole {
                continue;
            }
            let most_holders = if self.stalled.binary_search(&index).is_ok() {
                STALLED_HOLDERS
            } else {
                URGENT_HOLDERS
            };
            for (b, state) in partial.blocks.iter_mut().enumerate() {
                if out.len() >= target {
                    return;
                }
                if let BlockState::Requested(holders) = state {
                    if holders.len() < most_holders && !holders.contains(&peer) {
                        holders.push(peer);
                        self.leases
                            .entry(peer)
                            .or_default()
                            .insert((index, b as u32));
                        out.push(block_request(&self.layout, index, b as u32));
                    }
                }
            }
        }
    }

    /// The next piece to start in sequential mode that `pieces` contains: a head first,
    /// then the lowest missing piece (one on parole only if `parole_ok`).
    fn next_in_order(&mut self, pieces: &Bitfield, parole_ok: bool) -> Option<PieceIndex> {
        let usable = |states: &[PieceState], parole: &HashMap<u32, u32>, i: u32| {
            states.get(i as usize) == Some(&PieceState::Missing)
                && pieces.has(i)
                && (parole_ok || !parole.contains_key(&i))
        };
        if let Some(high) = &self.high {
            if let Some(i) = (0..self.states.len() as u32)
                .find(|&i| high.has(i) && usable(&self.states, &self.parole, i))
            {
                return self.layout.piece(i);
            }
        }
        if let Some(&head) = self
            .heads
            .iter()
            .find(|&&h| usable(&self.states, &self.parole, h))
        {
            return self.layout.piece(head);
        }
        let n = self.states.len() as u32;
        while self.seq_cursor < n && self.states[self.seq_cursor as usize] != PieceState::Missing {
            self.seq_cursor += 1;
        }
        (self.seq_cursor..n)
            .find(|&i| usable(&self.states, &self.parole, i))
            .and_then(|i| self.layout.piece(i))
    }

    /// The same picker for pieces assembled the `mode` way. Streamed pieces cost their
    /// window and records, not their length, and at least one may always be in progress.
    pub fn with_mode(mut self, mode: PieceMode) -> Self {
        self.mode = mode;
        if mode == PieceMode::Streamed {
            let floor = mode.cost(self.layout.piece_length());
            self.max_in_progress_bytes = self.budget.max(floor);
        }
        self
    }

    /// What `piece` costs against the budget while in progress.
    fn cost(&self, piece: PieceIndex) -> u64 {
        self.mode.cost(self.layout.piece_len(piece))
    }

    /// The state of a piece.
    pub fn state(&self, piece: PieceIndex) -> PieceState {
        self.states[piece.as_usize()]
    }

    /// Wanted pieces not yet verified.
    pub fn remaining_pieces(&self) -> u32 {
        self.remaining_pieces
    }

    /// Wanted bytes not yet verified.
    pub fn remaining_bytes(&self) -> u64 {
        self.remaining_bytes
    }

    /// Every wanted piece is verified.
    pub fn is_complete(&self) -> bool {
        self.remaining_pieces == 0
    }

    /// Bytes of pieces started but not yet verified.
    pub fn in_progress_bytes(&self) -> u64 {
        self.in_progress_bytes
    }

    /// A peer announced all the pieces in `pieces` (its bitfield, on connect).
    pub fn add_peer_pieces(&mut self, pieces: &Bitfield) {
        for i in pieces.iter_set() {
            if let Some(a) = self.availability.get_mut(i as usize) {
                *a += 1;
            }
        }
    }

    /// A peer with these pieces left.
    pub fn remove_peer_pieces(&mut self, pieces: &Bitfield) {
        for i in pieces.iter_set() {
            if let Some(a) = self.availability.get_mut(i as usize) {
                *a = a.saturating_sub(1);
            }
        }
    }

    /// A peer announced one more piece.
    pub fn add_peer_piece(&mut self, piece: PieceIndex) {
        self.availability[piece.as_usize()] += 1;
    }

    /// How many connected peers have `piece`.
    pub fn availability(&self, piece: PieceIndex) -> u32 {
        self.availability[piece.as_usize()]
    }

    /// Whether `piece` is one we still want.
    pub fn wants(&self, piece: PieceIndex) -> bool {
        matches!(
            self.states[piece.as_usize()],
            PieceState::Missing | PieceState::InProgress
        )
    }

    /// Whether a peer with `pieces` has anything we still want.
    pub fn is_interesting(&self, pieces: &Bitfield) -> bool {
        pieces
            .iter_set()
            .any(|i| self.layout.piece(i).is_some_and(|p| self.wants(p)))
    }

    /// Marks `peer` slow, or fast again (see the module documentation).
    pub fn set_slow(&mut self, peer: PeerKey, slow: bool) {
        if slow {
            self.slow_peers.insert(peer);
        } else {
            self.slow_peers.remove(&peer);
        }
    }

    /// Up to `max` blocks to request from `peer`, which has `pieces`, appended to `out`.
    pub fn pick(
        &mut self,
        peer: PeerKey,
        pieces: &Bitfield,
        max: usize,
        out: &mut Vec<BlockRequest>,
    ) {
        self.pick_as(peer, pieces, max, true, out);
    }

    /// As [`Picker::pick`], for a peer that may be given a piece on parole only if
    /// `parole_ok`: the one peer that fetches such a piece holds it up for as long as it
    /// takes, so the Coordinator offers them to its faster peers alone.
    pub fn pick_as(
        &mut self,
        peer: PeerKey,
        pieces: &Bitfield,
        max: usize,
        parole_ok: bool,
        out: &mut Vec<BlockRequest>,
    ) {
        let ask = Ask {
            peer,
            pieces,
            target: out.len() + max,
            parole_ok,
            slow: self.slow_peers.contains(&peer),
            suspect: self.suspects.contains_key(&peer),
        };

        // 0. Time-critical pieces, for a fast and trusted peer.
        if !ask.slow && !ask.suspect && !self.critical.is_empty() {
            self.pick_critical(peer, pieces, ask.target, parole_ok, out);
            if out.len() >= ask.target {
                return;
            }
        }

        // 1. Free blocks of pieces already in progress.
        let slow_bytes = self.pick_in_progress(&ask, out);
        if out.len() >= ask.target {
            return;
        }

        // 2. New pieces, rarest first (or in order).
        self.pick_new_pieces(&ask, slow_bytes, out);
        // A suspect neither rescues nor duplicates: both mix its blocks into shared pieces.
        if out.len() >= ask.target || ask.suspect {
            return;
        }

        // 2b. A fast peer with nothing else to do: blocks that only slow peers hold, each
        // asked of one more peer at most (see the module documentation).
        if !ask.slow && !self.slow_peers.is_empty() {
            self.rescue_from_slow(peer, pieces, ask.target, out);
            if out.len() >= ask.target {
                return;
            }
        }
        if self.has_free_or_missing(peer, pieces) {
            return;
        }

        // 3. Endgame: every block we could ask this peer for is already asked of someone.
        self.pick_endgame(peer, pieces, ask.target, out);
    }

    /// Step 1 of [`Picker::pick_as`]: free blocks of pieces already in progress (of slow
    /// pieces only, for a slow peer; of pieces on parole only, for a suspect). Returns
    /// what the slow pieces in progress cost against the budget.
    fn pick_in_progress(&mut self, ask: &Ask, out: &mut Vec<BlockRequest>) -> u64 {
        let peer = ask.peer;
        let mut slow_bytes = 0;
        for (&index, partial) in self.partials.iter_mut() {
            if partial.slow {
                let len = self
                    .layout
                    .piece(index)
                    .map_or(0, |p| self.layout.piece_len(p));
                slow_bytes += self.mode.cost(len);
            }
            if out.len() >= ask.target {
                continue;
            }
            let unowned_parole = partial.parole && partial.owner.is_none_or(|o| o != peer);
            if partial.free == 0
                || !ask.pieces.has(index)
                || !open_to(partial, index, peer, &self.leases)
                || (unowned_parole && !ask.parole_ok)
                || (ask.slow && !partial.slow && partial.owner != Some(peer))
                || (ask.suspect && !partial.parole)
            {
                continue;
            }
            let leases = self.leases.entry(peer).or_default();
            take_free_blocks(&self.layout, index, partial, peer, ask.target, leases, out);
        }
        slow_bytes
    }

    /// Step 2 of [`Picker::pick_as`]: new pieces while the budget allows, a piece on
    /// parole first, then in order or rarest first. `slow_bytes` is what slow pieces in
    /// progress already cost. When not even the shortest piece fits the budget the scan
    /// is skipped: with many peers most asks come while the budget is full, and a scan
    /// of every piece for nothing is the picker's main cost then.
    fn pick_new_pieces(&mut self, ask: &Ask, mut slow_bytes: u64, out: &mut Vec<BlockRequest>) {
        let Ask {
            peer,
            pieces,
            target,
            parole_ok,
            slow,
            suspect,
        } = *ask;
        let slow_limit = ((self.max_in_progress_bytes as f64 * SLOW_SHARE) as u64)
            .max(self.mode.cost(self.layout.piece_length()));
        let shortest = self
            .layout
            .piece(self.layout.num_pieces().saturating_sub(1))
            .map_or(0, |last| self.layout.piece_len(last))
            .min(self.layout.piece_length());
        let cheapest = self.mode.cost(shortest);
        // While a piece on parole waits to start, a peer that may not take it leaves room
        // in the budget for one: otherwise slow peers would take every slot freed.
        let reserve = if !parole_ok
            && self
                .parole
                .keys()
                .any(|&i| self.states.get(i as usize) == Some(&PieceState::Missing))
        {
            self.mode.cost(self.layout.piece_length())
        } else {
            0
        };
        while out.len() < target
            && self.in_progress_bytes + cheapest + reserve <= self.max_in_progress_bytes
        {
            // A piece on parole first: until one passes, smart ban has nothing to judge
            // the liars by, and every new piece they touch fails too.
            let parole = self
                .parole
                .keys()
                .filter(|&&i| parole_ok && pieces.has(i))
                .filter(|&&i| self.states.get(i as usize) == Some(&PieceState::Missing))
                .min()
                .and_then(|&i| self.layout.piece(i));
            let piece = match parole {
                Some(piece) => piece,
                None if suspect => break,
                None if self.sequential => match self.next_in_order(pieces, parole_ok) {
                    Some(piece) => piece,
                    None => break,
                },
                None => match self.rarest_missing(pieces, parole_ok) {
                    Some(piece) => piece,
                    None => break,
                },
            };
            let len = self.cost(piece);
            if self.in_progress_bytes + len + reserve > self.max_in_progress_bytes
                || (slow && slow_bytes + len > slow_limit)
            {
                break;
            }
            if slow {
                slow_bytes += len;
            }
            self.start_piece(piece, peer, target, slow, out);
        }
    }

    /// Marks missing `piece` in progress, its cost counted against the budget, and gives
    /// `peer` its first blocks, up to `target` in `out`.
    fn start_piece(
        &mut self,
        piece: PieceIndex,
        peer: PeerKey,
        target: usize,
        slow: bool,
        out: &mut Vec<BlockRequest>,
    ) {
        let blocks = self.layout.num_blocks(piece);
        let mut partial = Partial {
            blocks: vec![BlockState::Free; blocks as usize],
            free: blocks,
            received: 0,
            parole: self.parole.contains_key(&piece.get()),
            owner: None,
            slow,
        };
        let leases = self.leases.entry(peer).or_default();
        take_free_blocks(
            &self.layout,
            piece.get(),
            &mut partial,
            peer,
            target,
            leases,
            out,
        );
        self.partials.insert(piece.get(), partial);
        self.states[piece.as_usize()] = PieceState::InProgress;
        self.in_progress_bytes += self.cost(piece);
    }

    /// Step 3 of [`Picker::pick_as`], the endgame: asks `peer` again for blocks it does
    /// not hold, fewest holders first. A piece on parole is left to its owner until every
    /// wanted piece has started: only the true end of the download is worth mixing its
    /// senders again.
    fn pick_endgame(
        &mut self,
        peer: PeerKey,
        pieces: &Bitfield,
        target: usize,
        out: &mut Vec<BlockRequest>,
    ) {
        let all_started = !self.states.contains(&PieceState::Missing);
        let mut candidates: Vec<(usize, u32, u32)> = Vec::new();
        for (&index, partial) in &self.partials {
            if !pieces.has(index) || !(all_started || open_to(partial, index, peer, &self.leases)) {
                continue;
            }
            for (b, state) in partial.blocks.iter().enumerate() {
                if let BlockState::Requested(holders) = state {
                    if !holders.contains(&peer) {
                        candidates.push((holders.len(), index, b as u32));
                    }
                }
            }
        }
        candidates.sort_unstable();
        for (_, index, b) in candidates.into_iter().take(target - out.len()) {
            if let Some(BlockState::Requested(holders)) = self
                .partials
                .get_mut(&index)
                .and_then(|p| p.blocks.get_mut(b as usize))
            {
                holders.push(peer);
                self.leases.entry(peer).or_default().insert((index, b));
                out.push(block_request(&self.layout, index, b));
            }
        }
    }

    /// Up to `max` blocks for a source that has every piece and is fastest over long
    /// stretches of bytes (a web seed): whole missing pieces, one after another from the
    /// first missing piece at or after `from`, so one range request fetches them all. At
    /// least one piece when any can start, however large. With no piece to start (none
    /// left, or no budget), what [`Picker::pick_as`] would give it instead: free blocks
    /// of pieces in progress, then endgame.
    pub fn pick_run(
        &mut self,
        peer: PeerKey,
        pieces: &Bitfield,
        from: u32,
        max: usize,
        out: &mut Vec<BlockRequest>,
    ) {
        let n = self.states.len();
        let target = out.len() + max;
        let missing = |states: &[PieceState], i: usize| states.get(i) == Some(&PieceState::Missing);
        let start = (0..n)
            .map(|k| (from as usize + k) % n)
            .find(|&i| missing(&self.states, i));
        if let Some(mut i) = start {
            while i < n && missing(&self.states, i) && out.len() < target {
                let Some(piece) = self.layout.piece(i as u32) else {
                    break;
                };
                let blocks = self.layout.num_blocks(piece) as usize;
                let cost = self.cost(piece);
                if (!out.is_empty() && out.len() + blocks > target)
                    || self.in_progress_bytes + cost > self.max_in_progress_bytes
                {
                    break;
                }
                let mut partial = Partial {
                    blocks: vec![BlockState::Free; blocks],
                    free: blocks as u32,
                    received: 0,
                    parole: self.parole.contains_key(&piece.get()),
                    owner: None,
                    slow: false,
                };
                let leases = self.leases.entry(peer).or_default();
                take_free_blocks(
                    &self.layout,
                    piece.get(),
                    &mut partial,
                    peer,
                    usize::MAX,
                    leases,
                    out,
                );
                self.partials.insert(piece.get(), partial);
                self.states[i] = PieceState::InProgress;
                self.in_progress_bytes += cost;
                i += 1;
            }
        }
        if out.len() < target && start.is_none_or(|_| out.is_empty()) {
            self.pick_as(peer, pieces, target - out.len(), true, out);
        }
    }

    /// Asks `peer` too for blocks, of pieces it has, that only one peer holds and that
    /// one slow, until `out` holds `target`. Pieces nearest completion first.
    fn rescue_from_slow(
        &mut self,
        peer: PeerKey,
        pieces: &Bitfield,
        target: usize,
        out: &mut Vec<BlockRequest>,
    ) {
        let mut order: Vec<(u32, u32)> = self
            .partials
            .iter()
            .filter(|(&i, p)| pieces.has(i) && open_to(p, i, peer, &self.leases))
            .map(|(&i, p)| (u32::MAX - p.received, i))
            .collect();
        order.sort_unstable();
        for (_, index) in order {
            let Some(partial) = self.partials.get_mut(&index) else {
                continue;
            };
            for (b, state) in partial.blocks.iter_mut().enumerate() {
                if out.len() >= target {
                    return;
                }
                if let BlockState::Requested(holders) = state {
                    if holders.len() == 1 && self.slow_peers.contains(&holders[0]) {
                        holders.push(peer);
                        self.leases
                            .entry(peer)
                            .or_default()
                            .insert((index, b as u32));
                        out.push(block_request(&self.layout, index, b as u32));
                    }
                }
            }
        }
    }

    /// Whether any block could be asked of `peer`, which has `pieces`, without duplicating
    /// a request: a free block in progress open to it, or a missing piece not started for
    /// lack of budget.
    fn has_free_or_missing(&self, peer: PeerKey, pieces: &Bitfield) -> bool {
        self.partials
            .iter()
            .any(|(&i, p)| p.free > 0 && pieces.has(i) && open_to(p, i, peer, &self.leases))
            || pieces
                .iter_set()
                .any(|i| self.states.get(i as usize) == Some(&PieceState::Missing))
    }

    /// The rarest missing piece `pieces` contains (one on parole only if `parole_ok`),
    /// starting the scan at a random place so equally rare pieces are chosen at random.
    fn rarest_missing(&mut self, pieces: &Bitfield, parole_ok: bool) -> Option<PieceIndex> {
        let n = self.states.len();
        if n == 0 {
            return None;
        }
        let start = self.rng.random_range(0..n);
        // Ranked by (not high priority, availability): any high-priority piece first.
        let mut best: Option<((bool, u32), usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if self.states[i] != PieceState::Missing
                || !pieces.has(i as u32)
                || (!parole_ok && self.parole.contains_key(&(i as u32)))
            {
                continue;
            }
            let high = self.is_high(i as u32);
            let rank = (!high, self.availability[i]);
            if best.is_none_or(|(b, _)| rank < b) {
                best = Some((rank, i));
                // Nothing is rarer than a piece only this peer has, and nothing comes
                // before a high-priority piece (or any piece, with none left).
                if rank.1 <= 1 && (high || self.high.is_none()) {
                    break;
                }
            }
        }
        best.and_then(|(_, i)| self.layout.piece(i as u32))
    }

    /// `peer` delivered the block `req`, handed to it for attempt `attempt` at the piece
    /// (see [`Picker::failures`]).
    ///
    /// Only a delivery by a current holder of the request, for the attempt in progress,
    /// counts. Peers report deliveries in batches, so a report can come after its piece
    /// failed its hash and was started again, even from a peer that holds the same block
    /// again in the new attempt. That copy went into the failed attempt (the
    /// PieceManager drops it from the next), and counting it for the new one would mark
    /// a block received that the PieceManager never gets: the piece would wait for it
    /// forever.
    pub fn block_received(
        &mut self,
        peer: PeerKey,
        req: &BlockRequest,
        attempt: u32,
    ) -> BlockOutcome {
        if attempt != self.attempt(req.piece) {
            return BlockOutcome::Ignored;
        }
        let Some(partial) = self.partials.get_mut(&req.piece) else {
            return BlockOutcome::Ignored;
        };
        let b = (req.offset / BLOCK_SIZE) as usize;
        let Some(state) = partial.blocks.get_mut(b) else {
            return BlockOutcome::Ignored;
        };
        let cancel = match state {
            BlockState::Received | BlockState::Free => return BlockOutcome::Ignored,
            BlockState::Requested(holders) if !holders.contains(&peer) => {
                return BlockOutcome::Ignored
            }
            BlockState::Requested(holders) => {
                holders.retain(|h| *h != peer);
                std::mem::take(holders)
            }
        };
        // The block is in: no one holds it any more, and the others are told to cancel.
        for holder in std::iter::once(&peer).chain(&cancel) {
            unlease(&mut self.leases, *holder, (req.piece, b as u32));
        }
        *state = BlockState::Received;
        partial.received += 1;
        let piece_done = partial.received as usize == partial.blocks.len();
        if piece_done {
            self.partials.remove(&req.piece);
            if let Some(s) = self.states.get_mut(req.piece as usize) {
                *s = PieceState::Verifying;
            }
        }
        BlockOutcome::Accepted { cancel, piece_done }
    }

    /// `peer` will not deliver `req`, handed to it for attempt `attempt` (it choked us,
    /// rejected it, timed out or left). A request of an attempt that is over is no lease
    /// any more, even where the peer holds the same block again in the new attempt.
    pub fn release(&mut self, peer: PeerKey, req: &BlockRequest, attempt: u32) {
        if attempt != self.attempt(req.piece) {
            return;
        }
        let Some(partial) = self.partials.get_mut(&req.piece) else {
            return;
        };
        let b = req.offset / BLOCK_SIZE;
        if release_block(partial, peer, b) {
            unlease(&mut self.leases, peer, (req.piece, b));
        }
    }

    /// `peer` is gone: every block it holds a request for is free again (or left to its
    /// other holders in endgame), delivered to it or not, and a piece on parole it owned
    /// may go to another peer. Returns how many leases it held.
    pub fn peer_left(&mut self, peer: PeerKey) -> usize {
        self.slow_peers.remove(&peer);
        self.suspects.remove(&peer);
        // A piece on parole it owned is open again even where it holds no lease (every
        // block it was given is in, and the rest are free).
        for partial in self.partials.values_mut() {
            if partial.owner == Some(peer) {
                partial.owner = None;
            }
        }
        let Some(leases) = self.leases.remove(&peer) else {
            return 0;
        };
        for &(piece, b) in &leases {
            if let Some(partial) = self.partials.get_mut(&piece) {
                release_block(partial, peer, b);
            }
        }
        leases.len()
    }

    /// How many blocks `peer` holds a request for.
    pub fn leases_of(&self, peer: PeerKey) -> usize {
        self.leases.get(&peer).map_or(0, HashSet::len)
    }

    /// Pieces on parole (failed their hash, not yet verified).
    pub fn on_parole(&self) -> usize {
        self.parole.len()
    }

    /// How many times `piece` failed its hash since it was last verified: the attempt at
    /// it in progress, which blocks handed out now belong to.
    pub fn failures(&self, piece: PieceIndex) -> u32 {
        self.attempt(piece.get())
    }

    fn attempt(&self, piece: u32) -> u32 {
        self.parole.get(&piece).copied().unwrap_or(0)
    }

    /// Ends the piece's attempt in progress, if any: its outstanding requests are no
    /// one's lease any more (replies to them are ignored, as the attempt is gone).
    fn end_attempt(&mut self, piece: u32) {
        let Some(partial) = self.partials.remove(&piece) else {
            return;
        };
        for (b, state) in partial.blocks.iter().enumerate() {
            if let BlockState::Requested(holders) = state {
                for holder in holders {
                    unlease(&mut self.leases, *holder, (piece, b as u32));
                }
            }
        }
    }

    /// Checks the picker's bookkeeping against itself; for tests. Every request is a
    /// lease and every lease a request; free and received counts match the blocks; the
    /// budget counts exactly the pieces in progress or verifying.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut requested: HashSet<(PeerKey, BlockId)> = HashSet::new();
        for (&piece, partial) in &self.partials {
            assert_eq!(self.states[piece as usize], PieceState::InProgress);
            let (mut free, mut received) = (0, 0);
            for (b, state) in partial.blocks.iter().enumerate() {
                match state {
                    BlockState::Free => free += 1,
                    BlockState::Received => received += 1,
                    BlockState::Requested(holders) => {
                        assert!(!holders.is_empty(), "a request without a holder");
                        for h in holders {
                            assert!(requested.insert((*h, (piece, b as u32))), "held twice");
                        }
                    }
                }
            }
            assert_eq!((free, received), (partial.free, partial.received));
        }
        let leased: HashSet<(PeerKey, BlockId)> = self
            .leases
            .iter()
            .flat_map(|(p, set)| set.iter().map(move |id| (*p, *id)))
            .collect();
        assert_eq!(leased, requested, "leases and requests disagree");
        let cost: u64 = (0..self.states.len() as u32)
            .filter_map(|i| self.layout.piece(i))
            .filter(|p| {
                matches!(
                    self.states[p.as_usize()],
                    PieceState::InProgress | PieceState::Verifying
                )
            })
            .map(|p| self.cost(p))
            .sum();
        assert_eq!(cost, self.in_progress_bytes, "budget out of step");
    }

    /// Up to `max` pieces in progress, each with its blocks free, received and held (by
    /// which peers, slow ones marked `s`), and parole: what a log line shows when the
    /// download makes no progress.
    pub fn describe_in_progress(&self, max: usize) -> String {
        let mut out = String::new();
        for index in self.in_progress_pieces().into_iter().take(max) {
            let partial = &self.partials[&index];
            let held: Vec<String> = partial
                .blocks
                .iter()
                .filter_map(|b| match b {
                    BlockState::Requested(h) => Some(
                        h.iter()
                            .map(|k| {
                                let mark = if self.slow_peers.contains(k) { "s" } else { "" };
                                format!("{}{mark}", k.0)
                            })
                            .collect::<Vec<_>>()
                            .join("+"),
                    ),
                    _ => None,
                })
                .collect();
            out.push_str(&format!(
                "piece {index}: {} free, {} in, held by [{}]{}{}; ",
                partial.free,
                partial.received,
                held.join(" "),
                if partial.slow { ", slow" } else { "" },
                if partial.parole { ", parole" } else { "" },
            ));
        }
        let missing = self
            .states
            .iter()
            .filter(|s| **s == PieceState::Missing)
            .count();
        let verifying = self
            .states
            .iter()
            .filter(|s| **s == PieceState::Verifying)
            .count();
        out.push_str(&format!(
            "{missing} missing, {verifying} verifying, {} of {} budget bytes used",
            self.in_progress_bytes, self.max_in_progress_bytes
        ));
        out
    }

    /// Pieces with blocks requested or received and not all of them in yet, ascending.
    pub fn in_progress_pieces(&self) -> Vec<u32> {
        let mut pieces: Vec<u32> = self.partials.keys().copied().collect();
        pieces.sort_unstable();
        pieces
    }

    /// The piece passed its hash and is on disk. Also accepted for a piece still
    /// `InProgress`, since the PieceManager can finish a piece before the Coordinator
    /// has heard of its last block.
    pub fn piece_verified(&mut self, piece: PieceIndex) {
        let cost = self.cost(piece);
        let state = &mut self.states[piece.as_usize()];
        if matches!(*state, PieceState::InProgress | PieceState::Verifying) {
            *state = PieceState::Have;
            self.in_progress_bytes -= cost;
            self.remaining_pieces -= 1;
            if self.is_high(piece.get()) {
                self.high_left = self.high_left.saturating_sub(1);
                if self.high_left == 0 {
                    self.high = None;
                }
            }
            self.remaining_bytes -= u64::from(self.layout.piece_len(piece));
            self.end_attempt(piece.get());
            self.parole.remove(&piece.get());
        }
        // Its verdict is in (smart ban judges its earlier senders now).
        self.suspects.retain(|_, s| {
            s.pieces.retain(|&p| p != piece.get());
            !s.pieces.is_empty()
        });
    }

    /// `peer` sent blocks of `piece`, which failed its hash: it takes blocks of pieces on
    /// parole only until that piece passes, it leaves or [`SUSPICION_TICKS`] pass (see the
    /// module documentation). The Coordinator names only connected peers.
    pub fn suspect(&mut self, peer: PeerKey, piece: PieceIndex) {
        let s = self.suspects.entry(peer).or_insert(Suspicion {
            pieces: Vec::new(),
            ticks_left: SUSPICION_TICKS,
        });
        s.ticks_left = SUSPICION_TICKS;
        if !s.pieces.contains(&piece.get()) && s.pieces.len() < MAX_SUSPECT_PIECES {
            s.pieces.push(piece.get());
        }
    }

    /// Counts one tick (500 ms) off every suspicion; returns the peers trusted again
    /// for want of a verdict, which may pick as before.
    pub fn suspicion_tick(&mut self) -> Vec<PeerKey> {
        let mut cleared = Vec::new();
        self.suspects.retain(|&k, s| {
            s.ticks_left = s.ticks_left.saturating_sub(1);
            if s.ticks_left == 0 {
                cleared.push(k);
            }
            s.ticks_left > 0
        });
        cleared
    }

    /// Whether `peer` is a suspect.
    pub fn is_suspect(&self, peer: PeerKey) -> bool {
        self.suspects.contains_key(&peer)
    }

    /// How many peers are suspects.
    pub fn suspects(&self) -> usize {
        self.suspects.len()
    }

    /// The piece failed its hash: every block must be fetched again, from one peer (see
    /// the module documentation on parole).
    pub fn piece_failed(&mut self, piece: PieceIndex) {
        let cost = self.cost(piece);
        let state = &mut self.states[piece.as_usize()];
        if matches!(*state, PieceState::InProgress | PieceState::Verifying) {
            *state = PieceState::Missing;
            self.in_progress_bytes -= cost;
            self.end_attempt(piece.get());
            *self.parole.entry(piece.get()).or_default() += 1;
            self.seq_cursor = self.seq_cursor.min(piece.get());
        }
    }
}

fn block_request(layout: &Layout, piece: u32, block: u32) -> BlockRequest {
    let offset = block * BLOCK_SIZE;
    let piece_len = layout.piece(piece).map_or(0, |p| layout.piece_len(p));
    BlockRequest {
        piece,
        offset,
        length: piece_len.saturating_sub(offset).min(BLOCK_SIZE),
    }
}

/// Moves free blocks of one piece to `Requested(peer)` until `out` holds `target`,
/// recording each in `leases` (the peer's); a piece on parole becomes the peer's.
fn take_free_blocks(
    layout: &Layout,
    index: u32,
    partial: &mut Partial,
    peer: PeerKey,
    target: usize,
    leases: &mut HashSet<BlockId>,
    out: &mut Vec<BlockRequest>,
) {
    if partial.parole && out.len() < target && partial.free > 0 {
        partial.owner = Some(peer);
    }
    for (b, state) in partial.blocks.iter_mut().enumerate() {
        if out.len() >= target || partial.free == 0 {
            return;
        }
        if matches!(state, BlockState::Free) {
            *state = BlockState::Requested(vec![peer]);
            partial.free -= 1;
            leases.insert((index, b as u32));
            out.push(block_request(layout, index, b as u32));
        }
    }
}

/// `peer` gives up its request for block `b`: the block is free again once no one else
/// holds it, and a piece on parole it owned is open to the next peer. Returns whether
/// `peer` held it.
fn release_block(partial: &mut Partial, peer: PeerKey, b: u32) -> bool {
    if partial.owner == Some(peer) {
        partial.owner = None;
    }
    let Some(BlockState::Requested(holders)) = partial.blocks.get_mut(b as usize) else {
        return false;
    };
    let before = holders.len();
    holders.retain(|h| *h != peer);
    let held = holders.len() < before;
    if holders.is_empty() {
        partial.blocks[b as usize] = BlockState::Free;
        partial.free += 1;
    }
    held
}

/// Forgets `peer`'s lease on `block`.
fn unlease(leases: &mut HashMap<PeerKey, HashSet<BlockId>>, peer: PeerKey, block: BlockId) {
    if let Some(set) = leases.get_mut(&peer) {
        set.remove(&block);
        if set.is_empty() {
            leases.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests;
