//! Putting an info dictionary together from 16 KiB pieces sent by several peers, and
//! deciding whom to believe when the result does not hash to the info-hash: its SHA-1
//! for a `urn:btih` link, its SHA-256 for a `urn:btmh` one, both for a link with both.
//!
//! Pure state, no actors: the MetadataFetcher asks it which piece to request from which
//! peer and feeds it what arrives. It remembers who sent every piece, so a mismatch can
//! be pinned on a peer without blaming honest ones:
//!
//! - Normally pieces are spread over every peer that has the metadata, fastest path.
//! - If the assembled bytes do not match and one peer sent them all, that peer lied.
//! - If several peers contributed, nobody can be blamed yet: the assembler switches to
//!   *single-source* mode, where all pieces of an attempt come from one peer, so the next
//!   mismatch names its sender exactly. An honest peer is never named.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::super::PeerKey;
use crate::magnet::Magnet;
use crate::metainfo::merkle::Hash256;
use crate::wire::ext::{metadata_piece_count, metadata_piece_len, MAX_METADATA_SIZE};
use crate::InfoHash;

/// A request unanswered for this long may be sent to another peer as well.
pub const METADATA_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the info dictionary must hash to. Each digest given must match; with none given
/// nothing matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDigests {
    /// The v1 info-hash: SHA-1 of the dictionary.
    pub sha1: Option<InfoHash>,
    /// The v2 info-hash: SHA-256 of the dictionary.
    pub sha256: Option<Hash256>,
}

impl InfoDigests {
    /// What a magnet link names: its `urn:btih`, its `urn:btmh`, or both.
    pub fn of(magnet: &Magnet) -> InfoDigests {
        InfoDigests {
            sha1: magnet.has_v1().then_some(magnet.info_hash),
            sha256: magnet.v2_info_hash,
        }
    }

    /// Whether `bytes` hash to every digest given (and at least one is).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        if self.sha1.is_none() && self.sha256.is_none() {
            return false;
        }
        let v1 = self
            .sha1
            .is_none_or(|h| <[u8; 20]>::from(Sha1::digest(bytes)) == h.0);
        let v2 = self
            .sha256
            .is_none_or(|h| <[u8; 32]>::from(Sha256::digest(bytes)) == h);
        v1 && v2
    }
}

impl From<InfoHash> for InfoDigests {
    fn from(sha1: InfoHash) -> Self {
        InfoDigests {
            sha1: Some(sha1),
            sha256: None,
        }
    }
}

/// Where one piece stands.
#[derive(Debug, Clone)]
enum Slot {
    Missing,
    Requested { from: PeerKey, at: Instant },
    Received { from: PeerKey, data: Bytes },
}

/// What a completed attempt gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// The info dictionary, hashing to every digest expected.
    Verified(Bytes),
    /// The bytes did not match. `liar` is the peer that sent every piece, when one did;
    /// otherwise the assembler is now in single-source mode. Either way it starts over.
    Mismatch {
        /// The peer proven to have sent wrong metadata, if the attempt had one source.
        liar: Option<PeerKey>,
    },
}

/// See the module documentation.
#[derive(Debug)]
pub struct MetadataAssembler {
    expected: InfoDigests,
    size: u32,
    slots: Vec<Slot>,
    single_source: bool,
}

impl MetadataAssembler {
    /// An empty assembly of an info dictionary of `size` bytes, as a peer advertised it;
    /// `None` for a size of 0 or above [`MAX_METADATA_SIZE`].
    pub fn new(expected: impl Into<InfoDigests>, size: u32) -> Option<MetadataAssembler> {
        if size == 0 || size > MAX_METADATA_SIZE {
            return None;
        }
        Some(MetadataAssembler {
            expected: expected.into(),
            size,
            slots: vec![Slot::Missing; metadata_piece_count(size) as usize],
            single_source: false,
        })
    }

    /// The size being assembled.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether attempts now come from one peer each.
    pub fn single_source(&self) -> bool {
        self.single_source
    }

    /// The peer that an attempt in single-source mode belongs to, if one has started.
    fn current_source(&self) -> Option<PeerKey> {
        self.slots.iter().find_map(|s| match s {
            Slot::Requested { from, .. } | Slot::Received { from, .. } => Some(*from),
            Slot::Missing => None,
        })
    }

    /// The next piece to ask `peer` for, marking it requested; `None` when there is
    /// nothing for this peer now.
    pub fn next_request(&mut self, peer: PeerKey, now: Instant) -> Option<u32> {
        if self.single_source && self.current_source().is_some_and(|p| p != peer) {
            return None;
        }
        let index = self
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Missing))
            .or_else(|| {
                // Everything is asked for: a request that is long unanswered goes to a
                // second peer too (the first answer wins).
                self.slots.iter().position(|s| {
                    matches!(s, Slot::Requested { from, at }
                        if *from != peer && now.duration_since(*at) >= METADATA_REQUEST_TIMEOUT)
                })
            })?;
        self.slots[index] = Slot::Requested {
            from: peer,
            at: now,
        };
        Some(index as u32)
    }

    /// A piece arrived from `peer`. Returns the outcome once every piece is in. Pieces
    /// not asked of anybody, already received, or of the wrong length are ignored.
    pub fn received(&mut self, peer: PeerKey, piece: u32, data: Bytes) -> Option<Assembled> {
        let expected = metadata_piece_len(self.size, piece)?;
        if self.single_source && self.current_source().is_some_and(|p| p != peer) {
            return None;
        }
        let slot = self.slots.get_mut(piece as usize)?;
        if data.len() != expected || matches!(slot, Slot::Received { .. } | Slot::Missing) {
            return None;
        }
        *slot = Slot::Received { from: peer, data };
        if !self
            .slots
            .iter()
            .all(|s| matches!(s, Slot::Received { .. }))
        {
            return None;
        }
        Some(self.finish())
    }

    fn finish(&mut self) -> Assembled {
        let mut whole = BytesMut::with_capacity(self.size as usize);
        let mut sources = Vec::new();
        for slot in &self.slots {
            if let Slot::Received { from, data } = slot {
                whole.extend_from_slice(data);
                if !sources.contains(from) {
                    sources.push(*from);
                }
            }
        }
        if self.expected.matches(&whole) {
            return Assembled::Verified(whole.freeze());
        }
        self.slots.fill(Slot::Missing);
        let liar = match sources.as_slice() {
            [only] => Some(*only),
            _ => {
                self.single_source = true;
                None
            }
        };
        Assembled::Mismatch { liar }
    }

    /// The peer will not send `piece`: it may be asked of someone else.
    pub fn rejected(&mut self, peer: PeerKey, piece: u32) {
        if let Some(slot) = self.slots.get_mut(piece as usize) {
            if matches!(slot, Slot::Requested { from, .. } if *from == peer) {
                *slot = Slot::Missing;
            }
        }
        if self.single_source {
            self.forget(peer);
        }
    }

    /// The peer left: its requests go back to the pool. In single-source mode what it
    /// sent goes too, since an attempt must not mix sources.
    pub fn forget(&mut self, peer: PeerKey) {
        for slot in &mut self.slots {
            let drop = match slot {
                Slot::Requested { from, .. } => *from == peer,
                Slot::Received { from, .. } => self.single_source && *from == peer,
                Slot::Missing => false,
            };
            if drop {
                *slot = Slot::Missing;
            }
        }
    }

    /// Pieces received so far, for progress.
    pub fn received_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Received { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ext::METADATA_PIECE_LEN;

    fn info_of(len: usize) -> (InfoHash, Bytes) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        (InfoHash(Sha1::digest(&data).into()), Bytes::from(data))
    }

    fn piece(data: &Bytes, i: u32) -> Bytes {
        let start = (i * METADATA_PIECE_LEN) as usize;
        data.slice(start..(start + METADATA_PIECE_LEN as usize).min(data.len()))
    }

    #[test]
    fn pieces_from_several_peers_assemble_and_verify() {
        let (hash, info) = info_of(40_000);
        let mut a = MetadataAssembler::new(hash, info.len() as u32).unwrap();
        let now = Instant::now();
        let (p1, p2) = (PeerKey(1), PeerKey(2));
        assert_eq!(a.next_request(p1, now), Some(0));
        assert_eq!(a.next_request(p2, now), Some(1));
        assert_eq!(a.next_request(p2, now), Some(2));
        assert_eq!(a.next_request(p1, now), None, "all asked, none late yet");
        assert_eq!(a.received(p2, 1, piece(&info, 1)), None);
        assert_eq!(a.received(p2, 2, piece(&info, 2)), None);
        assert_eq!(
            a.received(p1, 0, piece(&info, 0)),
            Some(Assembled::Verified(info.clone()))
        );
    }

    #[test]
    fn a_lone_liar_is_named() {
        let (hash, info) = info_of(20_000);
        let mut a = MetadataAssembler::new(hash, info.len() as u32).unwrap();
        let liar = PeerKey(9);
        let now = Instant::now();
        a.next_request(liar, now);
        a.next_request(liar, now);
        a.received(liar, 0, Bytes::from(vec![0u8; METADATA_PIECE_LEN as usize]));
        let out = a.received(liar, 1, piece(&info, 1));
        assert_eq!(out, Some(Assembled::Mismatch { liar: Some(liar) }));
        assert_eq!(a.received_count(), 0, "starts over");
    }

    #[test]
    fn a_mixed_mismatch_switches_to_single_source_and_never_blames_the_honest_peer() {
        let (hash, info) = info_of(20_000);
        let mut a = MetadataAssembler::new(hash, info.len() as u32).unwrap();
        let (honest, liar) = (PeerKey(1), PeerKey(2));
        let now = Instant::now();
        assert_eq!(a.next_request(honest, now), Some(0));
        assert_eq!(a.next_request(liar, now), Some(1));
        a.received(honest, 0, piece(&info, 0));
        let bad = Bytes::from(vec![1u8; piece(&info, 1).len()]);
        assert_eq!(
            a.received(liar, 1, bad.clone()),
            Some(Assembled::Mismatch { liar: None })
        );
        assert!(a.single_source());
        // The liar's attempt: everything from it, nothing for the honest peer meanwhile.
        assert_eq!(a.next_request(liar, now), Some(0));
        assert_eq!(a.next_request(honest, now), None);
        assert_eq!(a.next_request(liar, now), Some(1));
        a.received(liar, 0, Bytes::from(vec![1u8; METADATA_PIECE_LEN as usize]));
        assert_eq!(
            a.received(liar, 1, bad),
            Some(Assembled::Mismatch { liar: Some(liar) })
        );
        // Then the honest peer's attempt succeeds.
        assert_eq!(a.next_request(honest, now), Some(0));
        assert_eq!(a.next_request(honest, now), Some(1));
        a.received(honest, 0, piece(&info, 0));
        assert_eq!(
            a.received(honest, 1, piece(&info, 1)),
            Some(Assembled::Verified(info))
        );
    }

    #[test]
    fn rejects_and_departures_free_pieces_and_late_requests_are_reassigned() {
        let (hash, info) = info_of(20_000);
        let mut a = MetadataAssembler::new(hash, info.len() as u32).unwrap();
        let t0 = Instant::now();
        let (p1, p2) = (PeerKey(1), PeerKey(2));
        assert_eq!(a.next_request(p1, t0), Some(0));
        a.rejected(p1, 0);
        assert_eq!(a.next_request(p2, t0), Some(0));
        assert_eq!(a.next_request(p1, t0), Some(1));
        a.forget(p1);
        assert_eq!(a.next_request(p2, t0), Some(1));
        let later = t0 + METADATA_REQUEST_TIMEOUT;
        assert_eq!(a.next_request(p1, later), Some(0), "p2 was too slow");
        // Unasked pieces and wrong lengths are ignored.
        let mut b = MetadataAssembler::new(hash, info.len() as u32).unwrap();
        assert_eq!(b.received(p1, 0, piece(&info, 0)), None);
        assert_eq!(b.received_count(), 0);
        b.next_request(p1, t0);
        assert_eq!(b.received(p1, 0, Bytes::from_static(b"short")), None);
        assert_eq!(b.received_count(), 0);
    }

    #[test]
    fn a_v2_link_checks_sha256_and_a_hybrid_link_checks_both() {
        let (sha1, info) = info_of(20_000);
        let sha256: Hash256 = Sha256::digest(&info).into();
        let p = PeerKey(1);
        let attempt = |expected: InfoDigests| {
            let mut a = MetadataAssembler::new(expected, info.len() as u32).unwrap();
            let now = Instant::now();
            a.next_request(p, now);
            a.next_request(p, now);
            a.received(p, 0, piece(&info, 0));
            a.received(p, 1, piece(&info, 1))
        };
        let verified = Some(Assembled::Verified(info.clone()));
        let lied = Some(Assembled::Mismatch { liar: Some(p) });
        let both = |sha1, sha256| InfoDigests {
            sha1: Some(sha1),
            sha256: Some(sha256),
        };
        let v2_only = |sha256| InfoDigests {
            sha1: None,
            sha256: Some(sha256),
        };
        assert_eq!(attempt(v2_only(sha256)), verified);
        assert_eq!(attempt(both(sha1, sha256)), verified);
        let mut wrong = sha256;
        wrong[31] ^= 1;
        assert_eq!(attempt(v2_only(wrong)), lied);
        assert_eq!(
            attempt(both(sha1, wrong)),
            lied,
            "the SHA-1 alone is not enough"
        );
        assert_eq!(
            attempt(both(InfoHash([0; 20]), sha256)),
            lied,
            "the SHA-256 alone is not enough"
        );
        let nothing = InfoDigests {
            sha1: None,
            sha256: None,
        };
        assert_eq!(attempt(nothing), lied);
    }

    #[test]
    fn absurd_sizes_are_refused() {
        let (hash, _) = info_of(1);
        assert!(MetadataAssembler::new(hash, 0).is_none());
        assert!(MetadataAssembler::new(hash, MAX_METADATA_SIZE + 1).is_none());
        assert!(MetadataAssembler::new(hash, MAX_METADATA_SIZE).is_some());
    }
}
