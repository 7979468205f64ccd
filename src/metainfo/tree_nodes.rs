//! Answering a peer's BEP 52 `hash request` from the trees a v2 torrent's metainfo proves:
//! each file's piece layer (checked against its `pieces root` when the torrent was read)
//! and every layer above it, computed once. Leaf hashes are not kept, so a request below
//! the piece layer is refused, as is anything the tree does not have: an unknown root, a
//! range past the end of its layer, proof layers reaching the root. The checks mirror
//! those a v2 client applies before asking (the range lies within the padded layer, the
//! base layer is below the root, the proof stops below the root), so an honest request is
//! answered and a hostile one costs a lookup.
//!
//! An answer is the range's nodes, then one uncle per proof layer above the subtree the
//! range spans: `proof_layers` counts layers upwards from the base, the first
//! `log2(length) - 1` of which the receiver computes from the range itself.
//!
//! Pure: no actor code. The Peer holds a shared [`TreeNodes`] and calls
//! [`TreeNodes::answer`].

use std::collections::HashMap;

use super::merkle::{self, Hash256};
use crate::wire::HashRequest;

/// Why a hash request is refused (answered with `hash reject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TreeRequestError {
    /// No file of the torrent has this `pieces root`.
    #[error("no file of this torrent has that pieces root")]
    UnknownRoot,
    /// The file is at most one piece: its root is all the metainfo proves.
    #[error("the file is one piece long: only its root is known")]
    SinglePiece,
    /// Leaf hashes below the piece layer are not kept.
    #[error(
        "layer {base_layer} is below the piece layer ({piece_layer}), which is the lowest kept"
    )]
    BelowPieceLayer { base_layer: u32, piece_layer: u32 },
    /// The base layer is the root's or above it.
    #[error("layer {base_layer} is not below the root (layer {root_layer})")]
    NotBelowRoot { base_layer: u32, root_layer: u32 },
    /// The range runs past the padded width of its layer.
    #[error("nodes {index}..{end} run past layer {base_layer}'s {width} nodes")]
    PastLayer {
        base_layer: u32,
        index: u32,
        end: u64,
        width: u64,
    },
    /// The proof would need uncles at or above the root.
    #[error(
        "{proof_layers} proof layers from layer {base_layer} reach the root (layer {root_layer})"
    )]
    ProofTooHigh {
        proof_layers: u32,
        base_layer: u32,
        root_layer: u32,
    },
}

/// One file's tree from its piece layer up: `layers[k]` holds the real nodes at height
/// `piece_height + k`, the last layer being the root alone; a node past a layer's end is
/// padding, [`merkle::pad_hash`] of its height, kept in `pads`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileTree {
    piece_height: u32,
    root_height: u32,
    layers: Vec<Vec<Hash256>>,
    pads: Vec<Hash256>,
}

impl FileTree {
    /// `None` unless the layer is at least two nodes and hashes up to `root`.
    fn build(root: &Hash256, piece_layer: Vec<Hash256>, piece_height: u32) -> Option<Self> {
        if piece_layer.len() < 2 || piece_height > crate::wire::MAX_BASE_LAYER {
            return None;
        }
        let steps = piece_layer.len().next_power_of_two().trailing_zeros();
        let root_height = piece_height.checked_add(steps)?;
        if root_height > crate::wire::MAX_BASE_LAYER {
            return None;
        }
        let mut pad = merkle::pad_hash(piece_height);
        let mut pads = vec![pad];
        let mut layers = vec![piece_layer];
        for _ in 0..steps {
            let below = layers.last()?;
            let next: Vec<Hash256> = below
                .chunks(2)
                .map(|pair| merkle::parent(&pair[0], pair.get(1).unwrap_or(&pad)))
                .collect();
            pad = merkle::parent(&pad, &pad);
            pads.push(pad);
            layers.push(next);
        }
        (layers.last()?.as_slice() == [*root]).then_some(Self {
            piece_height,
            root_height,
            layers,
            pads,
        })
    }

    /// The node at `height` (at least the piece layer's, at most the root's) and `index`.
    fn node(&self, height: u32, index: u64) -> Hash256 {
        let k = (height - self.piece_height) as usize;
        usize::try_from(index)
            .ok()
            .and_then(|i| self.layers[k].get(i))
            .copied()
            .unwrap_or(self.pads[k])
    }

    fn answer(&self, req: &HashRequest) -> Result<Vec<Hash256>, TreeRequestError> {
        let base = req.base_layer;
        if base < self.piece_height {
            return Err(TreeRequestError::BelowPieceLayer {
                base_layer: base,
                piece_layer: self.piece_height,
            });
        }
        if base >= self.root_height {
            return Err(TreeRequestError::NotBelowRoot {
                base_layer: base,
                root_layer: self.root_height,
            });
        }
        let width = 1u64 << (self.root_height - base);
        let end = u64::from(req.index) + u64::from(req.length);
        if end > width || req.length == 0 || !req.length.is_power_of_two() {
            return Err(TreeRequestError::PastLayer {
                base_layer: base,
                index: req.index,
                end,
                width,
            });
        }
        let too_high = TreeRequestError::ProofTooHigh {
            proof_layers: req.proof_layers,
            base_layer: base,
            root_layer: self.root_height,
        };
        if req.proof_layers >= self.root_height - base {
            return Err(too_high);
        }
        let span = req.length.trailing_zeros();
        let uncles = req.proof_layers.saturating_sub(span.saturating_sub(1));
        let first_uncle = base + span;
        if first_uncle + uncles > self.root_height {
            return Err(too_high);
        }
        let mut out = Vec::with_capacity(req.length as usize + uncles as usize);
        out.extend((u64::from(req.index)..end).map(|i| self.node(base, i)));
        let mut at = u64::from(req.index) >> span;
        for height in first_uncle..first_uncle + uncles {
            out.push(self.node(height, at ^ 1));
            at >>= 1;
        }
        Ok(out)
    }
}

/// The trees of a v2 torrent's files of more than one piece, by `pieces root`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeNodes {
    files: HashMap<Hash256, FileTree>,
    /// Roots of one-piece files: known, but nothing below the root is.
    single: Vec<Hash256>,
}

impl TreeNodes {
    /// From each file's root, piece layer (empty for a file of one piece) and the height
    /// of the piece layer (log2 of the leaves per piece). A layer that does not hash to
    /// its root is left out, so nothing unproven is ever served.
    pub fn new(files: impl IntoIterator<Item = (Hash256, Vec<Hash256>, u32)>) -> Self {
        let mut out = TreeNodes::default();
        for (root, layer, piece_height) in files {
            if layer.len() < 2 {
                out.add_single(root);
            } else {
                // Left out when it does not prove, as documented.
                let _ = out.add_checked(root, layer, piece_height);
            }
        }
        out
    }

    /// Adds the tree of a file whose piece layer (at least two nodes, at `piece_height`)
    /// is `layer`, built once, and checks that its top is `root`: how a torrent's piece
    /// layers are verified, each hashed once. `RootMismatch` (nothing added) when it is
    /// not, or when no tree of that height can be (a height past
    /// [`crate::wire::MAX_BASE_LAYER`], which a layer of the right length never has).
    pub fn add_checked(
        &mut self,
        root: Hash256,
        layer: Vec<Hash256>,
        piece_height: u32,
    ) -> Result<(), merkle::MerkleError> {
        let tree =
            FileTree::build(&root, layer, piece_height).ok_or(merkle::MerkleError::RootMismatch)?;
        self.files.insert(root, tree);
        Ok(())
    }

    /// Adds the root of a file of one piece, whose tree below the root is not known.
    pub fn add_single(&mut self, root: Hash256) {
        self.single.push(root);
    }

    /// Whether no file has a tree to serve from.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The `hashes` body answering `req`: the range's nodes then its proof, or why it is
    /// refused. At most `length + 50` nodes, all looked up, none computed.
    pub fn answer(&self, req: &HashRequest) -> Result<Vec<Hash256>, TreeRequestError> {
        match self.files.get(&req.pieces_root) {
            Some(tree) => tree.answer(req),
            None if self.single.contains(&req.pieces_root) => Err(TreeRequestError::SinglePiece),
            None => Err(TreeRequestError::UnknownRoot),
        }
    }
}

/// Whether `hashes` (a range's nodes then uncles, as [`TreeNodes::answer`] sends them)
/// hash up to `root` for `req`, in a tree whose root is at `root_height`: the check a
/// receiver makes before trusting any of them.
pub fn proves(root: &Hash256, root_height: u32, req: &HashRequest, hashes: &[Hash256]) -> bool {
    let n = req.length as usize;
    if n == 0 || !req.length.is_power_of_two() || hashes.len() < n {
        return false;
    }
    let span = req.length.trailing_zeros();
    let (base, uncles) = hashes.split_at(n);
    let Some(first_uncle) = req.base_layer.checked_add(span) else {
        return false;
    };
    if first_uncle.checked_add(uncles.len() as u32) != Some(root_height) {
        return false;
    }
    let mut node = merkle::root_of_layer(base, req.base_layer, n);
    let mut at = u64::from(req.index) >> span;
    for uncle in uncles {
        node = if at & 1 == 0 {
            merkle::parent(&node, uncle)
        } else {
            merkle::parent(uncle, &node)
        };
        at >>= 1;
    }
    node == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `blocks` leaves with `per_piece` leaves a piece: its root, piece layer
    /// and the piece layer's height.
    fn file(blocks: usize, per_piece: usize) -> (Hash256, Vec<Hash256>, u32, Vec<Hash256>) {
        let leaves: Vec<Hash256> = (0..blocks)
            .map(|i| merkle::leaf_hash(&i.to_le_bytes()))
            .collect();
        let root = merkle::file_root(&leaves).unwrap();
        let layer = merkle::piece_layer(&leaves, (per_piece * merkle::LEAF_SIZE) as u64).unwrap();
        (root, layer, per_piece.trailing_zeros(), leaves)
    }

    fn req(root: Hash256, base: u32, index: u32, length: u32, proof: u32) -> HashRequest {
        HashRequest {
            pieces_root: root,
            base_layer: base,
            index,
            length,
            proof_layers: proof,
        }
    }

    #[test]
    fn whole_piece_layer_with_full_proof_hashes_to_the_root() {
        // 11 pieces of 4 leaves: piece layer at height 2, padded to 16, root at 6.
        let (root, layer, ph, _) = file(43, 4);
        let trees = TreeNodes::new([(root, layer.clone(), ph)]);
        let r = req(root, 2, 0, 16, 3);
        let got = trees.answer(&r).unwrap();
        assert_eq!(got.len(), 16);
        assert_eq!(&got[..11], layer.as_slice());
        assert!(got[11..].iter().all(|h| *h == merkle::pad_hash(2)));
        assert!(proves(&root, 6, &r, &got));
    }

    #[test]
    fn every_aligned_range_with_its_full_proof_proves() {
        let (root, layer, ph, _) = file(43, 4);
        let trees = TreeNodes::new([(root, layer, ph)]);
        for base in 2..6u32 {
            let width = 1u32 << (6 - base);
            let mut length = 1;
            while length <= width {
                for index in (0..width).step_by(length as usize) {
                    let span = length.trailing_zeros();
                    // The most proof layers allowed: up to just below the root.
                    let proof = 6 - base - 1;
                    let r = req(root, base, index, length, proof);
                    let got = trees.answer(&r).unwrap();
                    let uncles = proof.saturating_sub(span.saturating_sub(1));
                    assert_eq!(got.len() as u32, length + uncles, "{r:?}");
                    if base + span + uncles == 6 {
                        assert!(proves(&root, 6, &r, &got), "{r:?}");
                    }
                }
                length *= 2;
            }
        }
    }

    #[test]
    fn a_tampered_answer_does_not_prove() {
        let (root, layer, ph, _) = file(43, 4);
        let trees = TreeNodes::new([(root, layer, ph)]);
        let r = req(root, 2, 4, 4, 3);
        let mut got = trees.answer(&r).unwrap();
        assert!(proves(&root, 6, &r, &got));
        let last = got.len() - 1;
        got[last][0] ^= 1;
        assert!(!proves(&root, 6, &r, &got));
    }

    #[test]
    fn hostile_requests_are_refused_with_the_reason() {
        let (root, layer, ph, _) = file(43, 4);
        let (one_root, one_layer, _, _) = file(3, 4);
        let trees = TreeNodes::new([(root, layer, ph), (one_root, one_layer, ph)]);
        assert_eq!(
            trees.answer(&req([7; 32], 2, 0, 1, 0)),
            Err(TreeRequestError::UnknownRoot)
        );
        assert_eq!(
            trees.answer(&req(one_root, 0, 0, 4, 0)),
            Err(TreeRequestError::SinglePiece)
        );
        assert_eq!(
            trees.answer(&req(root, 0, 0, 4, 0)),
            Err(TreeRequestError::BelowPieceLayer {
                base_layer: 0,
                piece_layer: 2
            })
        );
        assert_eq!(
            trees.answer(&req(root, 6, 0, 1, 0)),
            Err(TreeRequestError::NotBelowRoot {
                base_layer: 6,
                root_layer: 6
            })
        );
        assert_eq!(
            trees.answer(&req(root, 50, 0, 1, 0)),
            Err(TreeRequestError::NotBelowRoot {
                base_layer: 50,
                root_layer: 6
            })
        );
        assert_eq!(
            trees.answer(&req(root, 2, 16, 16, 0)),
            Err(TreeRequestError::PastLayer {
                base_layer: 2,
                index: 16,
                end: 32,
                width: 16
            })
        );
        assert_eq!(
            trees.answer(&req(root, 2, u32::MAX - 7, 8, 0)).unwrap_err(),
            TreeRequestError::PastLayer {
                base_layer: 2,
                index: u32::MAX - 7,
                end: u64::from(u32::MAX) + 1,
                width: 16
            }
        );
        assert_eq!(
            trees.answer(&req(root, 2, 0, 4, 4)),
            Err(TreeRequestError::ProofTooHigh {
                proof_layers: 4,
                base_layer: 2,
                root_layer: 6
            })
        );
    }

    #[test]
    fn a_layer_that_does_not_hash_to_its_root_is_never_served() {
        let (root, mut layer, ph, _) = file(43, 4);
        layer[3][5] ^= 1;
        let trees = TreeNodes::new([(root, layer, ph)]);
        assert!(trees.is_empty());
        assert_eq!(
            trees.answer(&req(root, 2, 0, 16, 0)),
            Err(TreeRequestError::UnknownRoot)
        );
    }
}
