//! BitTorrent v2 hash trees (BEP 52): the per-file SHA-256 Merkle tree, its root (the
//! file's `pieces root`), its piece layer, and the checks that tie a piece's data to them.
//!
//! Pure arithmetic over hashes and bytes: no files, no actors. `create` builds trees with
//! it, and v2 metainfo validation checks a torrent's `piece layers` against its roots.
//!
//! The shape of a file's tree: one leaf per 16 KiB block of the file (the last block may
//! be shorter and is hashed as it is), and as many more leaves as it takes to reach a
//! power of two. Those extra leaves are 32 zero bytes, and every node above only extra
//! leaves is therefore the hash of zeros hashed together, [`pad_hash`] of its height. An
//! empty file has no tree and no root.
//!
//! The piece layer is the layer whose nodes each cover one piece: `piece length / 16 KiB`
//! leaves. A file no longer than one piece has no piece layer in the torrent (its root
//! covers it), so [`piece_layer`] gives none for it.

use sha2::{Digest, Sha256};

/// The bytes under one leaf: 16 KiB, the block size of the wire protocol.
pub const LEAF_SIZE: usize = 16 * 1024;

/// One node of a tree: a SHA-256 digest.
pub type Hash256 = [u8; 32];

/// Why a piece layer, or a set of leaf hashes, does not belong to a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The piece length is not a power of two of at least 16 KiB, so leaves do not
    /// group evenly into pieces.
    #[error("piece length {0} is not a power of two of at least 16 KiB")]
    BadPieceLength(u64),
    /// A piece layer with the wrong number of hashes for its file.
    #[error("piece layer has {found} hashes but the file needs {expected}")]
    WrongLayerLength {
        /// `ceil(file length / piece length)`.
        expected: usize,
        /// Hashes given.
        found: usize,
    },
    /// A piece layer (or a piece's leaves) that does not hash up to the root (or the
    /// piece's node) it should.
    #[error("hashes do not add up to the expected root")]
    RootMismatch,
    /// A piece's data has a different number of blocks than the leaf hashes given for it.
    #[error("piece has {found} blocks but {expected} leaf hashes were given")]
    WrongLeafCount {
        /// Leaf hashes given.
        expected: usize,
        /// Blocks in the data.
        found: usize,
    },
}

/// The hash of one leaf: SHA-256 of up to 16 KiB of data.
pub fn leaf_hash(block: &[u8]) -> Hash256 {
    debug_assert!(block.len() <= LEAF_SIZE);
    Sha256::digest(block).into()
}

/// The leaf hashes of `data`, one per 16 KiB block (the last may be shorter).
pub fn leaf_hashes(data: &[u8]) -> Vec<Hash256> {
    data.chunks(LEAF_SIZE).map(leaf_hash).collect()
}

/// A parent node: SHA-256 of its two children, left then right.
pub fn parent(left: &Hash256, right: &Hash256) -> Hash256 {
    #[cfg(test)]
    PARENTS_HASHED.with(|n| n.set(n.get() + 1));
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

#[cfg(test)]
thread_local! {
    /// Parent nodes hashed on this thread: lets a test count the hashing a parse does.
    pub(crate) static PARENTS_HASHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The node over `2^height` padding leaves: zeros at height 0, and each level above the
/// hash of two of the level below.
pub fn pad_hash(height: u32) -> Hash256 {
    let mut node = [0u8; 32];
    for _ in 0..height {
        node = parent(&node, &node);
    }
    node
}

/// The root of a tree whose nodes at `height` (0 for leaves) are `layer`, padded to
/// `width` nodes with [`pad_hash`] of that height. `width` is rounded up to a power of
/// two no smaller than the layer.
pub fn root_of_layer(layer: &[Hash256], height: u32, width: usize) -> Hash256 {
    let width = width.max(layer.len()).max(1).next_power_of_two();
    let mut pad = pad_hash(height);
    let mut level: Vec<Hash256> = layer.to_vec();
    let mut level_width = width;
    if level.is_empty() {
        level.push(pad);
    }
    while level_width > 1 {
        let next: Vec<Hash256> = level
            .chunks(2)
            .map(|pair| parent(&pair[0], pair.get(1).unwrap_or(&pad)))
            .collect();
        pad = parent(&pad, &pad);
        level = next;
        level_width /= 2;
    }
    level[0]
}

/// How many leaves one piece covers, or an error if `piece_length` cannot be a v2 piece
/// length.
pub fn leaves_per_piece(piece_length: u64) -> Result<usize, MerkleError> {
    if piece_length < LEAF_SIZE as u64 || !piece_length.is_power_of_two() {
        return Err(MerkleError::BadPieceLength(piece_length));
    }
    usize::try_from(piece_length / LEAF_SIZE as u64)
        .map_err(|_| MerkleError::BadPieceLength(piece_length))
}

/// The `pieces root` of a file from its leaf hashes; `None` for an empty file, which has
/// no tree.
pub fn file_root(leaves: &[Hash256]) -> Option<Hash256> {
    (!leaves.is_empty()).then(|| root_of_layer(leaves, 0, leaves.len()))
}

/// The piece layer of a file from its leaf hashes: one node per piece, the last piece's
/// node padded with zero leaves. Empty for a file of at most one piece, which BEP 52
/// leaves out of `piece layers`.
pub fn piece_layer(leaves: &[Hash256], piece_length: u64) -> Result<Vec<Hash256>, MerkleError> {
    let per_piece = leaves_per_piece(piece_length)?;
    if leaves.len() <= per_piece {
        return Ok(Vec::new());
    }
    Ok(leaves
        .chunks(per_piece)
        .map(|chunk| root_of_layer(chunk, 0, per_piece))
        .collect())
}

/// Checks a file's piece layer, as a torrent or a peer gave it, against the file's root:
/// the right number of hashes for `file_length`, and hashing up to `root`. A file of at
/// most one piece must have an empty layer.
pub fn verify_piece_layer(
    layer: &[Hash256],
    root: &Hash256,
    file_length: u64,
    piece_length: u64,
) -> Result<(), MerkleError> {
    let height = check_layer_length(layer.len(), file_length, piece_length)?;
    if layer.is_empty() {
        return Ok(());
    }
    if root_of_layer(layer, height, layer.len()) != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// The first half of [`verify_piece_layer`], hashing nothing: whether a piece layer of
/// `found` hashes is the right size for a file of `file_length` bytes (none for a file of
/// at most one piece). Returns the piece layer's height (log2 of the leaves per piece).
pub fn check_layer_length(
    found: usize,
    file_length: u64,
    piece_length: u64,
) -> Result<u32, MerkleError> {
    let per_piece = leaves_per_piece(piece_length)?;
    let pieces = usize::try_from(file_length.div_ceil(piece_length)).unwrap_or(usize::MAX);
    let expected = if pieces <= 1 { 0 } else { pieces };
    if found != expected {
        return Err(MerkleError::WrongLayerLength { expected, found });
    }
    Ok(per_piece.trailing_zeros())
}

/// The node a piece's data must hash to: the piece's entry in the piece layer, or the
/// file's root for a file of one piece. The result is how many leaves that node
/// spans: a whole piece's worth, except for a one-piece file, whose tree is only as wide
/// as the next power of two above its block count.
pub fn node_width(file_length: u64, piece_length: u64) -> Result<usize, MerkleError> {
    let per_piece = leaves_per_piece(piece_length)?;
    if file_length > piece_length {
        Ok(per_piece)
    } else {
        let blocks = usize::try_from(file_length.div_ceil(LEAF_SIZE as u64)).unwrap_or(1);
        Ok(blocks.max(1).next_power_of_two())
    }
}

/// Whether a piece's data hashes to its node (see [`node_width`] for `width`).
pub fn piece_matches(data: &[u8], node: &Hash256, width: usize) -> bool {
    root_of_layer(&leaf_hashes(data), 0, width) == *node
}

/// Which 16 KiB blocks of a piece are bad, given the leaf hashes a peer sent for the
/// piece. The leaves are checked against the piece's trusted `node` first, so a peer
/// cannot blame good blocks with made-up leaves; then each block is compared with its
/// leaf. Returns the indices (within the piece) of the blocks that differ, empty if the
/// piece is good.
pub fn bad_blocks(
    data: &[u8],
    leaves: &[Hash256],
    node: &Hash256,
    width: usize,
) -> Result<Vec<u32>, MerkleError> {
    let blocks = data.len().div_ceil(LEAF_SIZE);
    if leaves.len() != blocks {
        return Err(MerkleError::WrongLeafCount {
            expected: leaves.len(),
            found: blocks,
        });
    }
    if root_of_layer(leaves, 0, width) != *node {
        return Err(MerkleError::RootMismatch);
    }
    Ok(data
        .chunks(LEAF_SIZE)
        .zip(leaves)
        .enumerate()
        .filter(|(_, (block, leaf))| leaf_hash(block) != **leaf)
        .map(|(i, _)| i as u32)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The tree written out the slow way: leaves padded with zeros to a power of two, then
    /// halved level by level. The fast functions must agree with it.
    fn naive_root(leaves: &[Hash256], width: usize) -> Hash256 {
        let mut level = leaves.to_vec();
        level.resize(width.next_power_of_two(), [0; 32]);
        while level.len() > 1 {
            level = level.chunks(2).map(|p| parent(&p[0], &p[1])).collect();
        }
        level[0]
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn one_block_file_root_is_the_hash_of_its_bytes() {
        let d = data(100, 1);
        let root = file_root(&leaf_hashes(&d)).unwrap();
        assert_eq!(root, <[u8; 32]>::from(Sha256::digest(&d)));
    }

    #[test]
    fn empty_file_has_no_root() {
        assert_eq!(file_root(&leaf_hashes(&[])), None);
    }

    #[test]
    fn pad_hash_of_height_one_is_hash_of_64_zero_bytes() {
        assert_eq!(pad_hash(0), [0; 32]);
        assert_eq!(pad_hash(1), <[u8; 32]>::from(Sha256::digest([0u8; 64])));
    }

    #[test]
    fn three_block_file_pads_with_one_zero_leaf() {
        let d = data(2 * LEAF_SIZE + 5, 2);
        let l = leaf_hashes(&d);
        assert_eq!(l.len(), 3);
        let expected = parent(&parent(&l[0], &l[1]), &parent(&l[2], &[0; 32]));
        assert_eq!(file_root(&l), Some(expected));
    }

    #[test]
    fn piece_layer_root_equals_file_root() {
        // 5 pieces of 32 KiB (2 leaves each), the last piece one short block.
        let d = data(4 * 2 * LEAF_SIZE + 1000, 3);
        let l = leaf_hashes(&d);
        let layer = piece_layer(&l, 2 * LEAF_SIZE as u64).unwrap();
        assert_eq!(layer.len(), 5);
        let root = file_root(&l).unwrap();
        verify_piece_layer(&layer, &root, d.len() as u64, 2 * LEAF_SIZE as u64).unwrap();
    }

    #[test]
    fn file_of_one_piece_has_no_piece_layer() {
        let d = data(LEAF_SIZE * 4, 4);
        assert!(piece_layer(&leaf_hashes(&d), 4 * LEAF_SIZE as u64)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn tampered_piece_layer_is_refused() {
        let d = data(10 * LEAF_SIZE, 5);
        let l = leaf_hashes(&d);
        let root = file_root(&l).unwrap();
        let mut layer = piece_layer(&l, LEAF_SIZE as u64 * 2).unwrap();
        layer[3][0] ^= 1;
        assert_eq!(
            verify_piece_layer(&layer, &root, d.len() as u64, LEAF_SIZE as u64 * 2),
            Err(MerkleError::RootMismatch)
        );
    }

    #[test]
    fn piece_layer_of_wrong_length_is_refused() {
        let d = data(10 * LEAF_SIZE, 6);
        let l = leaf_hashes(&d);
        let root = file_root(&l).unwrap();
        let mut layer = piece_layer(&l, LEAF_SIZE as u64 * 2).unwrap();
        layer.push([0; 32]);
        assert_eq!(
            verify_piece_layer(&layer, &root, d.len() as u64, LEAF_SIZE as u64 * 2),
            Err(MerkleError::WrongLayerLength {
                expected: 5,
                found: 6
            })
        );
    }

    #[test]
    fn piece_length_must_be_a_power_of_two_of_at_least_a_block() {
        assert_eq!(
            leaves_per_piece(8192),
            Err(MerkleError::BadPieceLength(8192))
        );
        assert_eq!(
            leaves_per_piece(3 * LEAF_SIZE as u64),
            Err(MerkleError::BadPieceLength(3 * LEAF_SIZE as u64))
        );
        assert_eq!(leaves_per_piece(1 << 20), Ok(64));
    }

    #[test]
    fn bad_blocks_names_exactly_the_spoiled_blocks() {
        let piece_length = 8 * LEAF_SIZE as u64;
        let d = data(3 * piece_length as usize, 7);
        let l = leaf_hashes(&d);
        let layer = piece_layer(&l, piece_length).unwrap();
        let width = node_width(d.len() as u64, piece_length).unwrap();
        let piece = &d[piece_length as usize..2 * piece_length as usize];
        let leaves = &l[8..16];
        let mut spoiled = piece.to_vec();
        spoiled[2 * LEAF_SIZE + 7] ^= 0xff;
        spoiled[5 * LEAF_SIZE] ^= 0xff;
        assert!(piece_matches(piece, &layer[1], width));
        assert!(!piece_matches(&spoiled, &layer[1], width));
        assert_eq!(bad_blocks(piece, leaves, &layer[1], width), Ok(vec![]));
        assert_eq!(
            bad_blocks(&spoiled, leaves, &layer[1], width),
            Ok(vec![2, 5])
        );
    }

    #[test]
    fn lying_leaves_cannot_blame_good_blocks() {
        let piece_length = 4 * LEAF_SIZE as u64;
        let d = data(2 * piece_length as usize, 8);
        let l = leaf_hashes(&d);
        let layer = piece_layer(&l, piece_length).unwrap();
        let mut lies = l[0..4].to_vec();
        lies[1][0] ^= 1;
        assert_eq!(
            bad_blocks(&d[..piece_length as usize], &lies, &layer[0], 4),
            Err(MerkleError::RootMismatch)
        );
    }

    proptest! {
        #[test]
        fn layers_agree_with_the_naive_tree(
            len in 0usize..40 * LEAF_SIZE,
            piece_shift in 0u32..4,
            seed in any::<u8>(),
        ) {
            let piece_length = (LEAF_SIZE as u64) << piece_shift;
            let d = data(len, seed);
            let l = leaf_hashes(&d);
            match file_root(&l) {
                None => prop_assert_eq!(len, 0),
                Some(root) => {
                    prop_assert_eq!(root, naive_root(&l, l.len()));
                    let layer = piece_layer(&l, piece_length).unwrap();
                    let width = node_width(len as u64, piece_length).unwrap();
                    if layer.is_empty() {
                        prop_assert!(len as u64 <= piece_length);
                        prop_assert!(piece_matches(&d, &root, width));
                    } else {
                        prop_assert!(verify_piece_layer(&layer, &root, len as u64, piece_length).is_ok());
                        for (i, node) in layer.iter().enumerate() {
                            let start = i * piece_length as usize;
                            let end = (start + piece_length as usize).min(len);
                            prop_assert_eq!(*node, naive_root(&l[start / LEAF_SIZE..end.div_ceil(LEAF_SIZE)], width));
                            prop_assert!(piece_matches(&d[start..end], node, width));
                        }
                    }
                }
            }
        }
    }
}
