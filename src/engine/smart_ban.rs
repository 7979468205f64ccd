//! Smart ban: naming the peer that sent bad data, and only that peer.
//!
//! A piece that fails its hash says that some block was wrong, not which one. When every
//! block came from one peer, that peer is certainly to blame. When several peers sent
//! blocks, blaming them all would punish the honest ones with the liar, so instead the
//! SHA-1 of each block is remembered with its sender. Once the piece is downloaded again
//! and passes, each remembered block is compared with the good one: a sender whose block
//! differs sent bad data; the others are cleared.
//!
//! Pure bookkeeping: the PieceManager computes the digests (on the Hasher pool, or read
//! back from disk for streamed pieces) and acts on the verdicts. Memory is bounded: at
//! most [`SmartBan::new`]'s `max_pieces` failed pieces and `max_records` block records
//! (one digest and sender each) are remembered, the oldest piece forgotten first, and a
//! piece's record goes when it passes. Pieces can have 32,768 blocks (512 MiB), so the
//! record bound, not the piece bound, is what holds memory for large pieces, and each
//! record is found by hash, never by a scan of the piece's record.

use std::collections::{HashMap, HashSet, VecDeque};

use super::PeerKey;

/// The SHA-1 of one block.
pub type Digest = [u8; 20];

/// One block of a failed attempt: who sent it and what it hashed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Sent {
    block: u32,
    from: PeerKey,
    digest: Digest,
}

/// See the module documentation.
#[derive(Debug)]
pub struct SmartBan {
    /// Failed attempts by piece, every attempt's blocks together.
    pieces: HashMap<u32, HashSet<Sent>>,
    /// Pieces in the order they were first remembered, to forget the oldest.
    order: VecDeque<u32>,
    max_pieces: usize,
    /// Block records in `pieces`, all pieces together.
    records: usize,
    max_records: usize,
}

impl SmartBan {
    /// Remembers at most `max_pieces` failed pieces and `max_records` block records at a
    /// time.
    pub fn new(max_pieces: usize, max_records: usize) -> Self {
        Self {
            pieces: HashMap::new(),
            order: VecDeque::new(),
            max_pieces: max_pieces.max(1),
            records: 0,
            max_records: max_records.max(1),
        }
    }

    /// Forgets the oldest remembered piece.
    fn forget_oldest(&mut self) {
        if let Some(oldest) = self.order.pop_front() {
            if let Some(record) = self.pieces.remove(&oldest) {
                self.records -= record.len();
            }
        }
    }

    /// A piece failed; `senders[i]` sent block `i`, which hashed to `digests[i]`.
    /// Returns the peer certainly to blame: the sender of every block, if there was only
    /// one. Otherwise the blocks are remembered for [`SmartBan::passed`].
    pub fn failed(
        &mut self,
        piece: u32,
        senders: &[PeerKey],
        digests: &[Digest],
    ) -> Option<PeerKey> {
        let first = *senders.first()?;
        if senders.iter().all(|s| *s == first) {
            return Some(first);
        }
        if !self.pieces.contains_key(&piece) {
            if self.order.len() >= self.max_pieces {
                self.forget_oldest();
            }
            self.order.push_back(piece);
        }
        // Room for this attempt, made by forgetting older pieces (never this one).
        let wanted = senders.len().min(digests.len());
        while self.records + wanted > self.max_records
            && self.order.front().is_some_and(|p| *p != piece)
        {
            self.forget_oldest();
        }
        let record = self.pieces.entry(piece).or_default();
        for (block, (from, digest)) in senders.iter().zip(digests).enumerate() {
            if self.records >= self.max_records {
                // This piece alone fills the bound: the rest of the attempt is not kept.
                break;
            }
            // The same peer sending the same bytes again adds nothing.
            if record.insert(Sent {
                block: block as u32,
                from: *from,
                digest: *digest,
            }) {
                self.records += 1;
            }
        }
        None
    }

    /// Whether `piece` has failed attempts waiting for a good copy, so its block digests
    /// are wanted when it passes.
    pub fn remembers(&self, piece: u32) -> bool {
        self.pieces.contains_key(&piece)
    }

    /// `piece` passed, its blocks hashing to `good`. Returns each peer that sent a block
    /// different from the good one in an earlier attempt, with how many such blocks,
    /// and forgets the piece.
    pub fn passed(&mut self, piece: u32, good: &[Digest]) -> Vec<(PeerKey, u32)> {
        let Some(record) = self.pieces.remove(&piece) else {
            return Vec::new();
        };
        self.records -= record.len();
        self.order.retain(|p| *p != piece);
        let mut liars: Vec<(PeerKey, u32)> = Vec::new();
        for sent in record {
            let bad = good
                .get(sent.block as usize)
                .is_some_and(|g| *g != sent.digest);
            if bad {
                match liars.iter_mut().find(|(k, _)| *k == sent.from) {
                    Some((_, n)) => *n += 1,
                    None => liars.push((sent.from, 1)),
                }
            }
        }
        liars
    }

    /// How many failed pieces are remembered.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether no failed piece is remembered.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HONEST: PeerKey = PeerKey(1);
    const LIAR: PeerKey = PeerKey(2);
    const OTHER: PeerKey = PeerKey(3);

    fn d(n: u8) -> Digest {
        [n; 20]
    }

    #[test]
    fn a_lone_sender_is_blamed_at_once_and_nothing_is_remembered() {
        let mut sb = SmartBan::new(8, 1000);
        assert_eq!(
            sb.failed(4, &[LIAR, LIAR, LIAR], &[d(1), d(2), d(3)]),
            Some(LIAR)
        );
        assert!(sb.is_empty());
    }

    #[test]
    fn only_the_sender_of_the_differing_block_is_named_when_the_piece_passes() {
        let mut sb = SmartBan::new(8, 1000);
        // Blocks 0 and 2 honest, block 1 corrupt from the liar.
        assert_eq!(
            sb.failed(7, &[HONEST, LIAR, HONEST], &[d(10), d(99), d(12)]),
            None
        );
        assert!(sb.remembers(7));
        let verdict = sb.passed(7, &[d(10), d(11), d(12)]);
        assert_eq!(verdict, vec![(LIAR, 1)]);
        assert!(!sb.remembers(7));
    }

    #[test]
    fn several_failed_attempts_are_judged_together() {
        let mut sb = SmartBan::new(8, 1000);
        assert_eq!(sb.failed(0, &[HONEST, LIAR], &[d(1), d(66)]), None);
        assert_eq!(sb.failed(0, &[LIAR, OTHER], &[d(55), d(2)]), None);
        let mut verdict = sb.passed(0, &[d(1), d(2)]);
        verdict.sort_by_key(|(k, _)| k.0);
        assert_eq!(verdict, vec![(LIAR, 2)]);
    }

    #[test]
    fn a_piece_that_passes_without_a_record_blames_nobody() {
        let mut sb = SmartBan::new(8, 1000);
        assert!(sb.passed(3, &[d(1)]).is_empty());
    }

    #[test]
    fn the_oldest_record_is_forgotten_beyond_the_bound() {
        let mut sb = SmartBan::new(2, 1000);
        for piece in 0..3 {
            sb.failed(piece, &[HONEST, LIAR], &[d(1), d(2)]);
        }
        assert_eq!(sb.len(), 2);
        assert!(!sb.remembers(0));
        assert!(sb.remembers(1) && sb.remembers(2));
    }

    #[test]
    fn repeated_identical_blocks_are_kept_once() {
        let mut sb = SmartBan::new(8, 1000);
        for _ in 0..5 {
            sb.failed(1, &[HONEST, LIAR], &[d(1), d(9)]);
        }
        assert_eq!(sb.passed(1, &[d(1), d(2)]), vec![(LIAR, 1)]);
    }

    #[test]
    fn block_records_are_bounded_across_pieces_of_many_blocks() {
        // Pieces of 32,768 blocks (512 MiB) and room for 40,000 records: the second
        // failed piece pushes the first out, and a third attempt at it keeps what fits.
        let blocks = 32_768;
        let senders: Vec<PeerKey> = (0..blocks).map(|i| [HONEST, LIAR][i % 2]).collect();
        let digests: Vec<Digest> = (0..blocks).map(|i| d((i % 251) as u8)).collect();
        let mut sb = SmartBan::new(256, 40_000);
        sb.failed(1, &senders, &digests);
        assert_eq!(sb.records, blocks);
        sb.failed(2, &senders, &digests);
        assert!(!sb.remembers(1) && sb.remembers(2));
        assert_eq!(sb.records, blocks);
        let other: Vec<Digest> = (0..blocks).map(|i| d((i % 13) as u8)).collect();
        sb.failed(2, &senders, &other);
        assert_eq!(sb.records, 40_000);
        assert!(sb
            .passed(2, &digests)
            .iter()
            .all(|(k, _)| *k == HONEST || *k == LIAR));
        assert_eq!(sb.records, 0);
        assert!(sb.is_empty());
    }

    #[test]
    fn an_empty_piece_blames_nobody() {
        let mut sb = SmartBan::new(8, 1000);
        assert_eq!(sb.failed(1, &[], &[]), None);
    }
}
