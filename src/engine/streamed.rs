//! Streamed pieces: how a piece too large for the memory budgets is put together without
//! ever holding it whole.
//!
//! A torrent may have pieces of up to 512 MiB, and the budgets for piece data are a few
//! MiB (`--max-in-progress-mib`, `--max-pending-mib`). When a piece does not fit them
//! ([`PieceMode::for_torrent`]), each block goes to disk as it arrives (the FileWriter
//! writes it at its offset) and the piece's SHA-1 is computed incrementally, in block
//! order, with one running state:
//!
//! - a block at the hash cursor, or within [`HASH_WINDOW_BLOCKS`] after it, is kept in
//!   memory until the cursor reaches it, then hashed from memory (on the Hasher pool);
//! - a block that arrived further ahead is only written; when the cursor reaches it, the
//!   run of such blocks is read back from disk and hashed there (on the FileReader pool),
//!   once their writes are done;
//! - once every block is written and hashed, the digest is compared with the metainfo's.
//!   On failure (and when smart ban wants the good copy's blocks) the block digests are
//!   read back from disk.
//!
//! So a piece in progress holds at most the window in memory, plus one small record per
//! block, whatever its length. A piece's bytes on disk mean nothing until it is verified:
//! only the PieceManager's `PieceVerified`, sent after every write and the hash, makes a
//! piece "have", and only "have" pieces go into the resume file.
//!
//! Pure bookkeeping: [`StreamedPiece`] says what to hash next and keeps the state; the
//! PieceManager sends the work to the pools and reports back.

use std::collections::BTreeMap;

use bytes::Bytes;
use sha1::{Digest, Sha1};

use super::PeerKey;
use crate::layout::BLOCK_SIZE;

/// Blocks past the hash cursor kept in memory (512 KiB): enough for the reordering of a
/// few peers serving the same piece; blocks further ahead are hashed from disk.
pub const HASH_WINDOW_BLOCKS: u32 = 32;

/// The longest run of blocks one disk step reads and hashes (4 MiB), so one step never
/// holds a reader thread for long.
pub const DISK_STEP_BLOCKS: u32 = 256;

/// Bookkeeping bytes per block of a streamed piece in progress, counted against the
/// in-progress budget: the PieceManager's slot (16 bytes) and the picker's block state
/// (24 bytes, plus its requesters), rounded up.
pub const BLOCK_RECORD_BYTES: u64 = 48;

/// How the pieces of a torrent are put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceMode {
    /// Whole in memory, hashed, then written: pieces small enough for the budgets.
    Whole,
    /// Written block by block and hashed as they come: pieces the budgets cannot hold.
    Streamed,
}

impl PieceMode {
    /// Whole pieces when two of them fit the in-progress budget and one fits the pending
    /// budget (the least that keeps a download moving); streamed otherwise.
    pub fn for_torrent(piece_length: u32, max_in_progress: u64, max_pending: u64) -> Self {
        let len = u64::from(piece_length);
        if 2 * len <= max_in_progress && len <= max_pending {
            PieceMode::Whole
        } else {
            PieceMode::Streamed
        }
    }

    /// What a piece of `piece_len` bytes in progress costs against the in-progress budget:
    /// all of it when whole; its hash window and block records when streamed.
    pub fn cost(self, piece_len: u32) -> u64 {
        match self {
            PieceMode::Whole => u64::from(piece_len),
            PieceMode::Streamed => {
                let blocks = u64::from(piece_len.div_ceil(BLOCK_SIZE));
                u64::from(piece_len).min(u64::from(HASH_WINDOW_BLOCKS * BLOCK_SIZE))
                    + blocks * BLOCK_RECORD_BYTES
            }
        }
    }
}

/// One block of a streamed piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not arrived.
    Missing,
    /// Arrived from this peer; its write is not done yet.
    Arrived(PeerKey),
    /// Arrived from this peer and written.
    Written(PeerKey),
}

/// Bytes of one block's slot, for the test that [`BLOCK_RECORD_BYTES`] covers it.
#[cfg(test)]
pub(crate) fn slot_bytes() -> usize {
    std::mem::size_of::<Slot>()
}

/// The next piece of hashing work, carrying the running state away until
/// [`StreamedPiece::step_done`] brings it back.
#[derive(Debug)]
pub enum HashStep {
    /// Add these blocks, in order, to the state.
    Memory {
        /// The running state.
        state: Sha1,
        /// The blocks from the cursor on.
        blocks: Vec<Bytes>,
    },
    /// Add `count` blocks from block `first` on, read from disk, to the state.
    Disk {
        /// The running state.
        state: Sha1,
        /// The first block.
        first: u32,
        /// How many blocks.
        count: u32,
    },
}

/// One streamed piece in progress; see the module documentation.
#[derive(Debug)]
pub struct StreamedPiece {
    /// Every block's state and sender.
    slots: Vec<Slot>,
    /// Blocks arrived.
    received: u32,
    /// Blocks written.
    written: u32,
    /// Blocks before this one are in the state, or in the step that has it.
    cursor: u32,
    /// Blocks before this one are in the state; the window starts here.
    base: u32,
    /// Blocks in `cursor..base + window` kept until the cursor reaches them.
    held: BTreeMap<u32, Bytes>,
    /// Blocks past `base` that may be kept.
    window: u32,
    /// The running SHA-1 of blocks `0..base`; `None` while a step has it.
    state: Option<Sha1>,
}

impl StreamedPiece {
    /// A piece of `num_blocks` blocks, keeping at most `window` blocks in memory.
    pub fn new(num_blocks: u32, window: u32) -> Self {
        Self {
            slots: vec![Slot::Missing; num_blocks as usize],
            received: 0,
            written: 0,
            cursor: 0,
            base: 0,
            held: BTreeMap::new(),
            window: window.max(1),
            state: Some(Sha1::new()),
        }
    }

    /// Block `block` arrived from `from`. Returns false, keeping nothing, for a block
    /// already here (an endgame copy) or past the piece: the caller drops it unwritten.
    /// Otherwise the caller writes it and calls [`StreamedPiece::written`] when done.
    pub fn receive(&mut self, block: u32, from: PeerKey, data: &Bytes) -> bool {
        match self.slots.get_mut(block as usize) {
            Some(slot @ Slot::Missing) => *slot = Slot::Arrived(from),
            _ => return false,
        }
        self.received += 1;
        if block >= self.cursor && block < self.base + self.window {
            self.held.insert(block, data.clone());
        }
        true
    }

    /// Block `block`'s write is done.
    pub fn written(&mut self, block: u32) {
        if let Some(slot @ Slot::Arrived(_)) = self.slots.get_mut(block as usize) {
            if let Slot::Arrived(from) = *slot {
                *slot = Slot::Written(from);
                self.written += 1;
            }
        }
    }

    /// The next hashing step, if the state is here and the block at the cursor can be
    /// hashed: from memory if it is kept, from disk if it is written and not kept.
    pub fn next_step(&mut self) -> Option<HashStep> {
        let state = self.state.take()?;
        let mut blocks = Vec::new();
        while let Some(data) = self.held.remove(&(self.cursor + blocks.len() as u32)) {
            blocks.push(data);
        }
        if !blocks.is_empty() {
            self.cursor += blocks.len() as u32;
            return Some(HashStep::Memory { state, blocks });
        }
        let first = self.cursor;
        let mut count = 0;
        while count < DISK_STEP_BLOCKS
            && matches!(
                self.slots.get((first + count) as usize),
                Some(Slot::Written(_))
            )
            && !self.held.contains_key(&(first + count))
        {
            count += 1;
        }
        if count > 0 {
            self.cursor += count;
            return Some(HashStep::Disk {
                state,
                first,
                count,
            });
        }
        self.state = Some(state);
        None
    }

    /// The step taken last is done: `state` now covers every block before the cursor.
    pub fn step_done(&mut self, state: Sha1) {
        self.state = Some(state);
        self.base = self.cursor;
    }

    /// Every block is written and in the state: [`StreamedPiece::finish`] may be called.
    pub fn is_complete(&self) -> bool {
        let n = self.slots.len() as u32;
        self.written == n && self.base == n && self.state.is_some()
    }

    /// Every block has arrived (some writes or hashing may still be under way).
    pub fn all_received(&self) -> bool {
        self.received as usize == self.slots.len()
    }

    /// The piece's SHA-1 and each block's sender. Call once [`is_complete`] is true;
    /// before, the digest is of the blocks hashed so far.
    ///
    /// [`is_complete`]: StreamedPiece::is_complete
    pub fn finish(self) -> ([u8; 20], Vec<PeerKey>) {
        let digest = self.state.unwrap_or_default().finalize();
        let senders = self
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Arrived(k) | Slot::Written(k) => Some(*k),
                Slot::Missing => None,
            })
            .collect();
        (<[u8; 20]>::from(digest), senders)
    }

    /// Bytes of blocks kept in memory now (not counting a step's blocks away).
    pub fn held_bytes(&self) -> usize {
        self.held.values().map(Bytes::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerKey = PeerKey(1);
    const B: PeerKey = PeerKey(2);

    /// A piece of `blocks` blocks, the last `last` bytes long, with distinct contents.
    fn piece(blocks: u32, last: usize) -> Vec<Bytes> {
        (0..blocks)
            .map(|b| {
                let len = if b + 1 == blocks {
                    last
                } else {
                    BLOCK_SIZE as usize
                };
                Bytes::from(
                    (0..len)
                        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(b * 7) as u8)
                        .collect::<Vec<u8>>(),
                )
            })
            .collect()
    }

    fn whole_digest(blocks: &[Bytes]) -> [u8; 20] {
        let mut sha = Sha1::new();
        for b in blocks {
            sha.update(b);
        }
        sha.finalize().into()
    }

    /// Plays the PieceManager with an instant hasher and a disk (`disk`, which holds what
    /// was written): runs every step there is, counting blocks hashed from memory and
    /// from disk.
    fn pump(p: &mut StreamedPiece, disk: &[Option<Bytes>], counts: &mut (u32, u32)) {
        while let Some(step) = p.next_step() {
            match step {
                HashStep::Memory { mut state, blocks } => {
                    counts.0 += blocks.len() as u32;
                    for b in &blocks {
                        state.update(b);
                    }
                    p.step_done(state);
                }
                HashStep::Disk {
                    mut state,
                    first,
                    count,
                } => {
                    counts.1 += count;
                    for b in first..first + count {
                        state.update(disk[b as usize].as_ref().expect("read before written"));
                    }
                    p.step_done(state);
                }
            }
        }
    }

    /// Delivers `order` (block, sender, data) and writes each one `lag` deliveries later;
    /// returns the digest and senders, and the blocks hashed from memory and from disk.
    fn run(
        data: &[Bytes],
        order: &[(u32, PeerKey)],
        lag: usize,
        window: u32,
    ) -> ([u8; 20], Vec<PeerKey>, (u32, u32)) {
        let mut p = StreamedPiece::new(data.len() as u32, window);
        let mut disk: Vec<Option<Bytes>> = vec![None; data.len()];
        let mut counts = (0, 0);
        let mut unwritten = std::collections::VecDeque::new();
        for &(b, from) in order {
            let block = data[b as usize].clone();
            assert!(p.receive(b, from, &block));
            unwritten.push_back((b, block));
            if unwritten.len() > lag {
                let (b, block) = unwritten.pop_front().unwrap();
                disk[b as usize] = Some(block);
                p.written(b);
            }
            pump(&mut p, &disk, &mut counts);
            assert!(p.held.len() as u32 <= window, "more held than the window");
        }
        while let Some((b, block)) = unwritten.pop_front() {
            disk[b as usize] = Some(block);
            p.written(b);
            pump(&mut p, &disk, &mut counts);
        }
        assert!(p.is_complete());
        let (digest, senders) = p.finish();
        (digest, senders, counts)
    }

    #[test]
    fn in_order_blocks_are_hashed_from_memory_and_match_the_whole_piece() {
        let data = piece(100, 1234);
        let order: Vec<_> = (0..100).map(|b| (b, A)).collect();
        let (digest, senders, counts) = run(&data, &order, 3, 8);
        assert_eq!(digest, whole_digest(&data));
        assert_eq!(senders, vec![A; 100]);
        assert_eq!(counts, (100, 0), "nothing read back from disk");
    }

    #[test]
    fn out_of_order_blocks_within_the_window_stay_in_memory() {
        let data = piece(40, BLOCK_SIZE as usize);
        // Pairs swapped, and each group of four reversed: never more than 4 ahead.
        let order: Vec<_> = (0..40u32)
            .map(|i| ((i / 4) * 4 + 3 - i % 4, if i % 2 == 0 { A } else { B }))
            .collect();
        let (digest, senders, counts) = run(&data, &order, 0, 8);
        assert_eq!(digest, whole_digest(&data));
        assert_eq!(counts, (40, 0));
        assert_eq!(senders.len(), 40);
    }

    #[test]
    fn blocks_far_ahead_are_hashed_back_from_disk_in_order() {
        let data = piece(64, 999);
        // Two peers on the same piece: one serves the second half first.
        let mut order: Vec<_> = (32..64).map(|b| (b, B)).collect();
        order.extend((0..32).map(|b| (b, A)));
        let (digest, senders, counts) = run(&data, &order, 2, 4);
        assert_eq!(digest, whole_digest(&data));
        assert_eq!(counts.0 + counts.1, 64, "every block hashed once");
        assert!(counts.1 >= 28, "the far blocks came from disk: {counts:?}");
        assert_eq!(senders[0], A);
        assert_eq!(senders[63], B);
    }

    #[test]
    fn a_block_is_read_from_disk_only_after_its_write_is_done() {
        let data = piece(8, 100);
        let mut p = StreamedPiece::new(8, 1);
        // Block 1 arrives first, outside a window of one: not kept.
        assert!(p.receive(1, A, &data[1]));
        assert!(p.receive(0, A, &data[0]));
        let Some(HashStep::Memory { state, blocks }) = p.next_step() else {
            panic!("block 0 is kept and at the cursor");
        };
        assert_eq!(blocks.len(), 1);
        // The state is away: no second step meanwhile.
        assert!(p.next_step().is_none());
        p.step_done(state);
        // Block 1 is neither kept nor written: wait.
        assert!(p.next_step().is_none());
        p.written(1);
        assert!(matches!(
            p.next_step(),
            Some(HashStep::Disk {
                first: 1,
                count: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_bad_block_gives_a_digest_that_does_not_match() {
        let data = piece(20, 5000);
        let mut bad = data.clone();
        let mut spoiled = bad[7].to_vec();
        spoiled[100] ^= 0xff;
        bad[7] = Bytes::from(spoiled);
        let order: Vec<_> = (0..20)
            .rev()
            .map(|b| (b, if b == 7 { B } else { A }))
            .collect();
        let (digest, senders, _) = run(&bad, &order, 1, 4);
        assert_ne!(digest, whole_digest(&data));
        assert_eq!(senders[7], B);
        assert_eq!(senders.iter().filter(|s| **s == A).count(), 19);
    }

    #[test]
    fn a_second_copy_of_a_block_is_refused_and_a_new_attempt_starts_clean() {
        let data = piece(4, 10);
        let mut p = StreamedPiece::new(4, 4);
        assert!(p.receive(2, A, &data[2]));
        assert!(!p.receive(2, B, &data[2]), "an endgame copy is dropped");
        assert!(!p.receive(4, B, &data[0]), "past the piece");
        assert!(!p.all_received());
        // The piece failed and is fetched again: a fresh record, nothing carried over.
        let again = StreamedPiece::new(4, 4);
        assert_eq!(again.held_bytes(), 0);
        let order: Vec<_> = (0..4).map(|b| (b, B)).collect();
        let (digest, senders, _) = run(&data, &order, 0, 4);
        assert_eq!(digest, whole_digest(&data));
        assert_eq!(senders, vec![B; 4]);
    }

    #[test]
    fn a_piece_whose_budgets_hold_two_of_it_is_assembled_whole() {
        assert_eq!(
            PieceMode::for_torrent(1 << 18, 32 << 20, 16 << 20),
            PieceMode::Whole
        );
        assert_eq!(
            PieceMode::for_torrent(16 << 20, 32 << 20, 16 << 20),
            PieceMode::Whole
        );
        assert_eq!(
            PieceMode::for_torrent(32 << 20, 32 << 20, 16 << 20),
            PieceMode::Streamed
        );
        assert_eq!(
            PieceMode::for_torrent(8 << 20, 8 << 20, 16 << 20),
            PieceMode::Streamed
        );
        assert_eq!(
            PieceMode::for_torrent(8 << 20, 64 << 20, 4 << 20),
            PieceMode::Streamed
        );
    }

    #[test]
    fn a_streamed_piece_costs_its_window_and_records_not_its_length() {
        assert_eq!(PieceMode::Whole.cost(1 << 20), 1 << 20);
        let big = PieceMode::Streamed.cost(512 << 20);
        assert_eq!(big, (512 << 10) + 32768 * BLOCK_RECORD_BYTES);
        assert!(big < 3 << 20, "{big}");
        // A short last piece costs no more than its length plus its records.
        assert_eq!(PieceMode::Streamed.cost(100), 100 + BLOCK_RECORD_BYTES);
    }
}
