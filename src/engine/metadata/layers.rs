//! The piece layers of a v2 torrent whose info dictionary came by magnet link: BEP 9
//! carries only `info`, and a v2 `info` has each file's `pieces root` but not the piece
//! layer under it, which a piece's data is checked against. They are asked of peers with
//! BEP 52 `hash request`s and each answer is checked against the root before any of it
//! is kept.
//!
//! Pure state, no actors: the MetadataFetcher asks it what to request of which peer and
//! feeds it the answers. Every file longer than one piece is cut into requests of at most
//! [`MAX_NODES_PER_REQUEST`] nodes on its piece layer (a power of two, aligned, within
//! the layer padded to a power of two), each with the proof layers that carry it up to
//! the file's root, so every answer is checked on its own ([`tree_nodes::proves`]). An
//! answer that does not prove names its sender a liar; the fetcher drops it.
//!
//! Bounds: at most [`MAX_PIECE_LAYER_BYTES`] of hashes in all (so the `.torrent` saved
//! with them stays readable), one outstanding request per range, a request unanswered
//! for [`LAYER_REQUEST_TIMEOUT`] may be asked of someone else.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::super::PeerKey;
use crate::metainfo::merkle::{self, Hash256, MerkleError};
use crate::metainfo::tree_nodes;
use crate::metainfo::v2::V2Info;
use crate::wire::{HashRequest, Hashes, MAX_BASE_LAYER};

/// The most piece-layer nodes one request asks for, as other v2 clients do.
pub const MAX_NODES_PER_REQUEST: u32 = 512;

/// The most bytes of piece layers fetched for one torrent: 32 MiB (a million pieces),
/// so the `.torrent` saved with them stays well under the 64 MiB a `.torrent` may be.
pub const MAX_PIECE_LAYER_BYTES: u64 = 32 * 1024 * 1024;

/// A hash request unanswered for this long is the peer's failure: the fetcher drops it
/// and the range is asked of another.
pub const LAYER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the piece layers of a torrent cannot be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    /// The piece length cannot be a v2 piece length.
    #[error("{0}")]
    PieceLength(MerkleError),
    /// More piece-layer hashes than [`MAX_PIECE_LAYER_BYTES`] allows.
    #[error(
        "the piece layers would take {bytes} bytes, over the limit of {MAX_PIECE_LAYER_BYTES}"
    )]
    TooLarge {
        /// What the torrent's files need.
        bytes: u64,
    },
    /// A file's tree is taller than any file of at most 2^64 bytes can make.
    #[error("a file's tree is taller than the wire protocol allows")]
    TreeTooTall,
}

/// One request's worth of one file's piece layer.
#[derive(Debug, Clone)]
struct Chunk {
    /// Index into `files`.
    file: usize,
    request: HashRequest,
    /// The range's nodes that are real pieces (padding left out), once proven.
    nodes: Option<Vec<Hash256>>,
}

/// A request out with a peer.
#[derive(Debug, Clone, Copy)]
struct Asked {
    chunk: usize,
    from: PeerKey,
    at: Instant,
}

/// One file that needs a piece layer.
#[derive(Debug, Clone)]
struct FileLayer {
    root: Hash256,
    /// Its number of pieces: the length of its piece layer.
    pieces: u64,
    /// The height of its root above the leaves.
    root_height: u32,
}

/// What an answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Checked and kept; more ranges are missing.
    Kept,
    /// Checked and kept, and it was the last: [`LayerFetch::layers`] has them all.
    Complete,
    /// Nothing was asked of this peer for that range (or it was answered already).
    Unasked,
    /// The nodes do not hash up to the file's root: the peer lied.
    Refuted,
}

/// See the module documentation. Every operation but [`LayerFetch::new`] and
/// [`LayerFetch::layers`] costs at most the number of requests out, not the number of
/// ranges, so a torrent of many small files costs linear time.
#[derive(Debug, Clone)]
pub struct LayerFetch {
    files: Vec<FileLayer>,
    chunks: Vec<Chunk>,
    /// Ranges neither asked nor answered, next first.
    missing: VecDeque<usize>,
    /// Requests out, by request (each range's request is its own: roots are distinct).
    asked: HashMap<HashRequest, Asked>,
    /// Requests out per peer.
    per_peer: HashMap<PeerKey, usize>,
    done: usize,
}

impl LayerFetch {
    /// The requests a torrent's files need; `None` when no file is longer than a piece
    /// (the roots are all there is). Files of the same content share a root, and so one
    /// piece layer, fetched once.
    pub fn new(v2: &V2Info) -> Result<Option<LayerFetch>, LayerError> {
        let per_piece =
            merkle::leaves_per_piece(v2.piece_length).map_err(LayerError::PieceLength)?;
        let piece_height = per_piece.trailing_zeros();
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        let mut total: u64 = 0;
        for file in &v2.files {
            let Some(root) = file.pieces_root else {
                continue;
            };
            if file.length <= v2.piece_length || !seen.insert(root) {
                continue;
            }
            let pieces = file.length.div_ceil(v2.piece_length);
            total = total.saturating_add(pieces.saturating_mul(32));
            if total > MAX_PIECE_LAYER_BYTES {
                return Err(LayerError::TooLarge { bytes: total });
            }
            let steps = pieces.next_power_of_two().trailing_zeros();
            let root_height = piece_height + steps;
            if root_height > MAX_BASE_LAYER {
                return Err(LayerError::TreeTooTall);
            }
            files.push(FileLayer {
                root,
                pieces,
                root_height,
            });
        }
        if files.is_empty() {
            return Ok(None);
        }
        let mut chunks = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let steps = f.root_height - piece_height;
            let width = 1u64 << steps;
            let length = width.min(u64::from(MAX_NODES_PER_REQUEST));
            let mut index = 0u64;
            while index < f.pieces {
                chunks.push(Chunk {
                    file: i,
                    request: HashRequest {
                        pieces_root: f.root,
                        base_layer: piece_height,
                        // Below 2^32: the layer has at most 2^20 pieces (the byte bound).
                        index: u32::try_from(index).map_err(|_| LayerError::TreeTooTall)?,
                        length: length as u32,
                        // Up to just below the root; the first log2(length) - 1 of them
                        // are computed from the range, the rest come as uncles.
                        proof_layers: steps - 1,
                    },
                    nodes: None,
                });
                index += length;
            }
        }
        Ok(Some(LayerFetch {
            missing: (0..chunks.len()).collect(),
            files,
            chunks,
            asked: HashMap::new(),
            per_peer: HashMap::new(),
            done: 0,
        }))
    }

    /// The next request for `peer`, marking it asked. `None` when every range is asked
    /// or answered.
    pub fn next_request(&mut self, peer: PeerKey, now: Instant) -> Option<HashRequest> {
        let chunk = self.missing.pop_front()?;
        let request = self.chunks.get(chunk)?.request;
        self.asked.insert(
            request,
            Asked {
                chunk,
                from: peer,
                at: now,
            },
        );
        *self.per_peer.entry(peer).or_default() += 1;
        Some(request)
    }

    /// Takes back the request `request` if it is out with `peer`: its chunk.
    fn take_asked(&mut self, peer: PeerKey, request: &HashRequest) -> Option<usize> {
        let asked = self.asked.get(request).filter(|a| a.from == peer)?.chunk;
        self.asked.remove(request);
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
        Some(asked)
    }

    /// An answer from `peer`: kept if it answers a range asked of that peer and hashes up
    /// to the file's root.
    pub fn received(&mut self, peer: PeerKey, answer: &Hashes) -> Answered {
        let Some(chunk) = self.take_asked(peer, &answer.request) else {
            return Answered::Unasked;
        };
        let Some(file) = self.chunks.get(chunk).and_then(|c| self.files.get(c.file)) else {
            return Answered::Unasked;
        };
        if !tree_nodes::proves(
            &file.root,
            file.root_height,
            &answer.request,
            &answer.hashes,
        ) {
            // Asked again first, of someone else.
            self.missing.push_front(chunk);
            return Answered::Refuted;
        }
        let index = u64::from(answer.request.index);
        let real = file
            .pieces
            .saturating_sub(index)
            .min(u64::from(answer.request.length));
        let real = usize::try_from(real).unwrap_or(0);
        if let Some(c) = self.chunks.get_mut(chunk) {
            c.nodes = Some(answer.base().iter().take(real).copied().collect());
            self.done += 1;
        }
        if self.done == self.chunks.len() {
            Answered::Complete
        } else {
            Answered::Kept
        }
    }

    /// `peer` rejected `request`: the range may be asked of someone else. False if it
    /// was not asked of that peer.
    pub fn rejected(&mut self, peer: PeerKey, request: &HashRequest) -> bool {
        match self.take_asked(peer, request) {
            Some(chunk) => {
                self.missing.push_front(chunk);
                true
            }
            None => false,
        }
    }

    /// The peer left or was dropped: its ranges go back to the pool.
    pub fn forget(&mut self, peer: PeerKey) {
        if !self.per_peer.contains_key(&peer) {
            return;
        }
        let theirs: Vec<HashRequest> = self
            .asked
            .iter()
            .filter(|(_, a)| a.from == peer)
            .map(|(r, _)| *r)
            .collect();
        for request in theirs {
            if let Some(chunk) = self.take_asked(peer, &request) {
                self.missing.push_front(chunk);
            }
        }
    }

    /// Peers with a request unanswered for [`LAYER_REQUEST_TIMEOUT`] at `now`.
    pub fn overdue(&self, now: Instant) -> Vec<PeerKey> {
        let mut late: Vec<PeerKey> = self
            .asked
            .values()
            .filter(|a| now.duration_since(a.at) >= LAYER_REQUEST_TIMEOUT)
            .map(|a| a.from)
            .collect();
        late.sort();
        late.dedup();
        late
    }

    /// Requests outstanding with `peer`.
    pub fn asked_of(&self, peer: PeerKey) -> usize {
        self.per_peer.get(&peer).copied().unwrap_or(0)
    }

    /// Ranges answered so far, and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.chunks.len())
    }

    /// Every file's root and checked piece layer, once all ranges are in.
    pub fn layers(&self) -> Option<Vec<(Hash256, Vec<Hash256>)>> {
        let mut out: Vec<(Hash256, Vec<Hash256>)> = self
            .files
            .iter()
            .map(|f| {
                let cap = usize::try_from(f.pieces).unwrap_or(0);
                (f.root, Vec::with_capacity(cap))
            })
            .collect();
        for chunk in &self.chunks {
            out.get_mut(chunk.file)?
                .1
                .extend_from_slice(chunk.nodes.as_ref()?);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::merkle::LEAF_SIZE;
    use crate::metainfo::tree_nodes::TreeNodes;
    use crate::metainfo::v2::V2File;
    use crate::metainfo::SafePath;

    const KIB: u64 = 1024;

    /// A file of `blocks` leaves: its root and piece layer at `per_piece` leaves a piece.
    fn file(blocks: usize, per_piece: usize, seed: u8) -> (Hash256, Vec<Hash256>) {
        let leaves: Vec<Hash256> = (0..blocks)
            .map(|i| merkle::leaf_hash(&[seed, (i % 251) as u8, (i / 251) as u8]))
            .collect();
        let root = merkle::file_root(&leaves).unwrap();
        let layer = merkle::piece_layer(&leaves, (per_piece * LEAF_SIZE) as u64).unwrap();
        (root, layer)
    }

    fn v2(piece_length: u64, files: &[(u64, Option<Hash256>)]) -> V2Info {
        V2Info {
            info_hash: [0; 32],
            piece_length,
            files: files
                .iter()
                .enumerate()
                .map(|(i, (length, root))| V2File {
                    path: SafePath::new(&[format!("f{i}")]).unwrap(),
                    length: *length,
                    pieces_root: *root,
                    piece_layer: Vec::new(),
                })
                .collect(),
        }
    }

    /// Asks everything of a seed holding `trees` and feeds the answers back.
    fn fetch_all(fetch: &mut LayerFetch, trees: &TreeNodes) -> Answered {
        let peer = PeerKey(1);
        let now = Instant::now();
        let mut last = Answered::Unasked;
        while let Some(req) = fetch.next_request(peer, now) {
            let hashes = trees.answer(&req).expect("the seed answers our requests");
            last = fetch.received(
                peer,
                &Hashes {
                    request: req,
                    hashes,
                },
            );
            assert_ne!(last, Answered::Refuted, "{req:?}");
        }
        last
    }

    #[test]
    fn layers_of_small_and_large_files_are_fetched_and_proven() {
        // 64 KiB pieces (4 leaves, piece layer at height 2). A file of 11 pieces (one
        // request, padded to 16) and one of 1100 pieces (three requests of 512, proven
        // by uncles); a one-piece file and an empty one need nothing.
        let (r1, l1) = file(43, 4, 1);
        let (r2, l2) = file(4398, 4, 2);
        let (r3, _) = file(3, 4, 3);
        let info = v2(
            64 * KIB,
            &[
                (43 * 16 * KIB - 5, Some(r1)),
                (4398 * 16 * KIB, Some(r2)),
                (3 * 16 * KIB, Some(r3)),
                (0, None),
            ],
        );
        let mut fetch = LayerFetch::new(&info)
            .unwrap()
            .expect("two files need layers");
        assert_eq!(fetch.progress(), (0, 1 + 3));
        let trees = TreeNodes::new([(r1, l1.clone(), 2), (r2, l2.clone(), 2)]);
        assert_eq!(fetch_all(&mut fetch, &trees), Answered::Complete);
        assert_eq!(fetch.layers(), Some(vec![(r1, l1), (r2, l2)]));
    }

    #[test]
    fn requests_look_like_other_clients_ones() {
        let (root, _) = file(43, 4, 1);
        let info = v2(64 * KIB, &[(43 * 16 * KIB, Some(root))]);
        let mut fetch = LayerFetch::new(&info).unwrap().unwrap();
        let req = fetch.next_request(PeerKey(1), Instant::now()).unwrap();
        // 11 pieces padded to 16: the whole layer, its span less one as proof layers.
        assert_eq!(
            req,
            HashRequest {
                pieces_root: root,
                base_layer: 2,
                index: 0,
                length: 16,
                proof_layers: 3,
            }
        );
        assert!(req.check(21).is_ok());
        assert_eq!(fetch.next_request(PeerKey(2), Instant::now()), None);
    }

    #[test]
    fn a_wrong_answer_is_refuted_and_the_range_asked_again() {
        let (root, layer) = file(4398, 4, 2);
        let info = v2(64 * KIB, &[(4398 * 16 * KIB, Some(root))]);
        let trees = TreeNodes::new([(root, layer, 2)]);
        let mut fetch = LayerFetch::new(&info).unwrap().unwrap();
        let (liar, honest, stranger) = (PeerKey(1), PeerKey(2), PeerKey(3));
        let now = Instant::now();
        let req = fetch.next_request(liar, now).unwrap();
        let hashes = trees.answer(&req).unwrap();
        // A flipped node, a flipped uncle, a missing uncle, an extra node: none proves.
        for tamper in 0..4 {
            let mut bad = hashes.clone();
            match tamper {
                0 => bad[3][0] ^= 1,
                1 => *bad.last_mut().unwrap() = [9; 32],
                2 => {
                    bad.pop();
                }
                _ => bad.push([0; 32]),
            }
            let answer = Hashes {
                request: req,
                hashes: bad,
            };
            assert_eq!(fetch.received(liar, &answer), Answered::Refuted);
            assert_eq!(fetch.next_request(liar, now), Some(req), "asked again");
        }
        // Answers nobody asked for are not taken, even true ones.
        let answer = Hashes {
            request: req,
            hashes: hashes.clone(),
        };
        assert_eq!(fetch.received(stranger, &answer), Answered::Unasked);
        fetch.forget(liar);
        assert_eq!(fetch.next_request(honest, now), Some(req));
        assert_eq!(fetch.received(honest, &answer), Answered::Kept);
        assert_eq!(
            fetch.received(honest, &answer),
            Answered::Unasked,
            "only once"
        );
    }

    #[test]
    fn rejects_and_silence_free_the_range() {
        let (root, _) = file(43, 4, 1);
        let info = v2(64 * KIB, &[(43 * 16 * KIB, Some(root))]);
        let mut fetch = LayerFetch::new(&info).unwrap().unwrap();
        let t0 = Instant::now();
        let req = fetch.next_request(PeerKey(1), t0).unwrap();
        assert!(!fetch.rejected(PeerKey(2), &req), "not asked of it");
        assert!(fetch.rejected(PeerKey(1), &req));
        assert_eq!(fetch.next_request(PeerKey(2), t0), Some(req));
        assert_eq!(fetch.asked_of(PeerKey(2)), 1);
        assert!(fetch.overdue(t0).is_empty());
        assert_eq!(fetch.overdue(t0 + LAYER_REQUEST_TIMEOUT), vec![PeerKey(2)]);
    }

    #[test]
    fn files_of_one_content_share_one_layer_and_many_small_files_stay_linear() {
        let (root, layer) = file(8, 4, 1);
        let twins = v2(
            64 * KIB,
            &[(8 * 16 * KIB, Some(root)), (8 * 16 * KIB, Some(root))],
        );
        let mut fetch = LayerFetch::new(&twins).unwrap().unwrap();
        assert_eq!(fetch.progress(), (0, 1));
        let trees = TreeNodes::new([(root, layer.clone(), 2)]);
        assert_eq!(fetch_all(&mut fetch, &trees), Answered::Complete);
        assert_eq!(fetch.layers(), Some(vec![(root, layer)]));
        // 100,000 files of two 16 KiB pieces: asked of one peer that leaves, then of
        // another that answers each; each step costs the requests out, not a scan of
        // every range (which made this quadratic).
        const N: u32 = 100_000;
        let mut pairs = HashMap::new();
        let mut files = Vec::new();
        for i in 0..N {
            let (a, b) = (
                merkle::leaf_hash(&i.to_le_bytes()),
                merkle::leaf_hash(&(i + N).to_le_bytes()),
            );
            let root = merkle::parent(&a, &b);
            pairs.insert(root, vec![a, b]);
            files.push((32 * KIB, Some(root)));
        }
        let mut many = LayerFetch::new(&v2(16 * KIB, &files)).unwrap().unwrap();
        let (gone, stays, now) = (PeerKey(7), PeerKey(8), Instant::now());
        let mut asked = 0;
        while many.next_request(gone, now).is_some() {
            asked += 1;
        }
        assert_eq!((asked, many.asked_of(gone)), (N, N as usize));
        many.forget(gone);
        assert_eq!(many.asked_of(gone), 0);
        let mut last = Answered::Unasked;
        while let Some(request) = many.next_request(stays, now) {
            let hashes = pairs[&request.pieces_root].clone();
            last = many.received(stays, &Hashes { request, hashes });
            assert_ne!(last, Answered::Refuted);
        }
        assert_eq!(last, Answered::Complete);
        assert_eq!(many.layers().map(|l| l.len()), Some(N as usize));
    }

    #[test]
    fn absurd_torrents_are_refused() {
        // A million and one 16 KiB pieces: over the byte bound.
        let huge = v2(16 * KIB, &[((1 << 20) * 16 * KIB + 1, Some([1; 32]))]);
        assert!(matches!(
            LayerFetch::new(&huge),
            Err(LayerError::TooLarge { .. })
        ));
        let odd = v2(3 * 16 * KIB, &[(1 << 30, Some([1; 32]))]);
        assert!(matches!(
            LayerFetch::new(&odd),
            Err(LayerError::PieceLength(_))
        ));
        let small = v2(64 * KIB, &[(64 * KIB, Some([1; 32])), (0, None)]);
        assert!(LayerFetch::new(&small).unwrap().is_none());
    }
}
