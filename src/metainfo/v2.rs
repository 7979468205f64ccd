//! The BitTorrent v2 part of a `.torrent` (BEP 52): the `file tree`, each file's
//! `pieces root`, and the top-level `piece layers`, checked into a [`V2Info`].
//!
//! Untrusted bytes in, validated values or a [`V2Error`] out, once: every path is a
//! [`SafePath`] of plain names, the tree nests at most [`MAX_TREE_DEPTH`] folders and
//! holds at most [`MAX_V2_FILES`] files, every root is 32 bytes, and every file longer
//! than a piece has a piece layer of the right size that hashes up to its root. Nothing
//! here reads files or talks to the network.
//!
//! A v2-only `.torrent` downloads through it: [`super::Metainfo`] lays its files out on
//! piece boundaries and checks each piece by its Merkle node. A hybrid's v2 part is
//! checked against its v1 part ([`V2Info::check_hybrid`]) and its pieces by SHA-1; a
//! v2-only `info` fetched by magnet is read once its piece layers have come from peers
//! (`engine::metadata::layers`). `info` shows what it finds.

use sha2::{Digest, Sha256};

use super::merkle::{self, Hash256, MerkleError};
use super::tree_nodes::TreeNodes;
use super::{Info, PathError, SafePath};
use crate::bencode::{self, DecodeError, Dict, Value};

/// The deepest a file tree may nest folders: far beyond real torrents, and a bound on
/// the walk's stack whatever the bencode decoder allows.
pub const MAX_TREE_DEPTH: usize = 64;

/// The most files a v2 file tree may hold.
pub const MAX_V2_FILES: usize = 1_000_000;

/// Why the v2 part of a torrent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V2Error {
    /// The bytes are not bencode, or break a decoder limit.
    #[error("not valid bencode: {0}")]
    Bencode(#[from] DecodeError),
    /// The torrent, its `info` or a node of the file tree is not a dictionary.
    #[error("{0} is not a dictionary")]
    NotADictionary(&'static str),
    /// A required key is absent.
    #[error("missing required field {0:?}")]
    MissingField(&'static str),
    /// `meta version` is not 2.
    #[error("meta version is not 2")]
    NotV2,
    /// A field holds the wrong kind of value, or a negative number.
    #[error("field {0:?} has the wrong type or value")]
    BadField(&'static str),
    /// The piece length cannot be a v2 piece length.
    #[error("{0}")]
    PieceLength(MerkleError),
    /// The file tree holds no file.
    #[error("file tree is empty")]
    EmptyTree,
    /// Folders nested deeper than [`MAX_TREE_DEPTH`].
    #[error("file tree nests deeper than {MAX_TREE_DEPTH} folders")]
    TooDeep,
    /// More files than [`MAX_V2_FILES`].
    #[error("file tree holds more than {MAX_V2_FILES} files")]
    TooManyFiles,
    /// A path in the tree that is not a safe relative path (`..`, a separator, ...).
    #[error("file tree path {path:?} is not usable: {reason}")]
    BadPath {
        /// The components as found.
        path: String,
        /// What is wrong with them.
        reason: PathError,
    },
    /// A node that is a file (has the `""` key) and a folder at once.
    #[error("file tree entry {0:?} is both a file and a folder")]
    FileAndFolder(String),
    /// A `pieces root` that is not 32 bytes.
    #[error("file {0:?} has a pieces root that is not 32 bytes")]
    BadRoot(String),
    /// A non-empty file without a `pieces root`, or an empty one with a root.
    #[error("file {0:?}: a pieces root must be given exactly when the file is not empty")]
    RootPresence(String),
    /// A file longer than a piece with no entry in `piece layers`.
    #[error("file {0:?} has no piece layer")]
    MissingPieceLayer(String),
    /// A piece layer whose length is not a whole number of hashes.
    #[error("piece layer of {0:?} is not a multiple of 32 bytes")]
    LayerNotMultipleOf32(String),
    /// A hybrid whose v1 `files` and v2 `file tree` describe different data.
    #[error("the v1 and v2 parts of this hybrid disagree: {0}")]
    HybridMismatch(String),
    /// A piece layer of the wrong size, or one that does not hash up to its root.
    #[error("piece layer of {path:?}: {reason}")]
    BadPieceLayer {
        /// The file.
        path: String,
        /// What is wrong with its layer.
        reason: MerkleError,
    },
}

/// One file of a v2 torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2File {
    /// Its path under the torrent's folder (for a single-file torrent, its name).
    pub path: SafePath,
    /// Its size in bytes.
    pub length: u64,
    /// The root of its Merkle tree; `None` for an empty file.
    pub pieces_root: Option<Hash256>,
    /// Its piece layer, checked against the root; empty for a file of at most one piece
    /// or when the torrent carried no `piece layers` (an `info` from a magnet).
    pub piece_layer: Vec<Hash256>,
}

/// The checked v2 part of a torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Info {
    /// SHA-256 of the raw `info` bytes: the v2 identity (truncated to 20 bytes on the
    /// wire and at trackers).
    pub info_hash: Hash256,
    /// Bytes per piece, a power of two of at least 16 KiB.
    pub piece_length: u64,
    /// The files in file-tree order.
    pub files: Vec<V2File>,
}

impl V2Info {
    /// Parses and checks the v2 part of a whole `.torrent`: its file tree, and the piece
    /// layers, which must be present for every file longer than a piece.
    pub fn from_torrent(bytes: &[u8]) -> Result<Self, V2Error> {
        let top = bencode::decode(bytes)?;
        let dict = top.as_dict().ok_or(V2Error::NotADictionary("torrent"))?;
        Self::from_torrent_dict(dict)
    }

    /// [`V2Info::from_torrent`] on an already decoded torrent.
    pub(crate) fn from_torrent_dict(dict: &Dict<'_>) -> Result<Self, V2Error> {
        Ok(Self::with_trees(dict)?.0)
    }

    /// [`V2Info::from_torrent_dict`], with the trees that answer peers' `hash request`s:
    /// each piece layer is hashed once, into its file's tree, whose top must be the
    /// file's root.
    pub(crate) fn with_trees(dict: &Dict<'_>) -> Result<(Self, TreeNodes), V2Error> {
        let info = dict.get(b"info").ok_or(V2Error::MissingField("info"))?;
        let layers = match dict.get(b"piece layers") {
            Some(v) => Some(v.as_dict().ok_or(V2Error::NotADictionary("piece layers"))?),
            None => None,
        };
        let mut v2 = Self::from_info_value(info)?;
        let mut trees = TreeNodes::default();
        for file in &mut v2.files {
            let Some(root) = file.pieces_root else {
                continue;
            };
            if file.length <= v2.piece_length {
                trees.add_single(root);
                continue;
            }
            let name = file.path.display();
            let raw = layers
                .and_then(|l| l.get(&root))
                .ok_or_else(|| V2Error::MissingPieceLayer(name.clone()))?
                .as_bytes()
                .ok_or(V2Error::BadField("piece layers"))?;
            if raw.len() % 32 != 0 {
                return Err(V2Error::LayerNotMultipleOf32(name));
            }
            let layer: Vec<Hash256> = raw
                .chunks_exact(32)
                .filter_map(|c| c.try_into().ok())
                .collect();
            let bad = |reason| V2Error::BadPieceLayer {
                path: name.clone(),
                reason,
            };
            let height = merkle::check_layer_length(layer.len(), file.length, v2.piece_length)
                .map_err(bad)?;
            trees
                .add_checked(root, layer.clone(), height)
                .map_err(bad)?;
            file.piece_layer = layer;
        }
        Ok((v2, trees))
    }

    /// Checks that a hybrid's v1 view describes the same data as this v2 view: the same
    /// piece length, the same files (padding aside) in the same order with the same
    /// paths and lengths, and every non-empty file starting on a piece boundary, so that
    /// each piece holds the same bytes in both. The hashes themselves can only be
    /// compared against the data.
    pub fn check_hybrid(&self, info: &Info) -> Result<(), V2Error> {
        let mismatch = |what: String| Err(V2Error::HybridMismatch(what));
        let layout = &info.layout;
        if u64::from(layout.piece_length()) != self.piece_length {
            return mismatch(format!(
                "piece length {} against {}",
                layout.piece_length(),
                self.piece_length
            ));
        }
        // A multi-file torrent's v1 paths start with its folder, which v2 leaves out.
        let skip = usize::from(info.is_multi_file());
        let v1: Vec<_> = layout.files().iter().filter(|f| !f.padding).collect();
        if v1.len() != self.files.len() {
            return mismatch(format!("{} files against {}", v1.len(), self.files.len()));
        }
        for (one, two) in v1.iter().zip(&self.files) {
            let one_path = one.path.components().get(skip..).unwrap_or_default();
            if one_path != two.path.components() || one.length != two.length {
                return mismatch(format!(
                    "{} ({} bytes) against {} ({} bytes)",
                    one_path.join("/"),
                    one.length,
                    two.path.display(),
                    two.length
                ));
            }
            if one.length > 0 && one.offset % self.piece_length != 0 {
                return mismatch(format!("{} does not start a piece", two.path.display()));
            }
        }
        Ok(())
    }

    /// Parses and checks the v2 part of raw `info` bytes (as fetched by a magnet): the
    /// file tree only, since piece layers live outside `info`.
    pub fn from_info_bytes(raw: &[u8]) -> Result<Self, V2Error> {
        Self::from_info_value(&bencode::decode(raw)?)
    }

    pub(crate) fn from_info_value(info: &Value<'_>) -> Result<Self, V2Error> {
        let dict = info.as_dict().ok_or(V2Error::NotADictionary("info"))?;
        if int(dict, "meta version")? != Some(2) {
            return Err(V2Error::NotV2);
        }
        let piece_length =
            int(dict, "piece length")?.ok_or(V2Error::MissingField("piece length"))?;
        merkle::leaves_per_piece(piece_length).map_err(V2Error::PieceLength)?;
        let tree = dict
            .get(b"file tree")
            .ok_or(V2Error::MissingField("file tree"))?;
        let files = walk_tree(tree)?;
        if files.is_empty() {
            return Err(V2Error::EmptyTree);
        }
        Ok(Self {
            info_hash: Sha256::digest(info.raw()).into(),
            piece_length,
            files,
        })
    }
}

/// A non-negative integer field, if present.
fn int(dict: &Dict<'_>, field: &'static str) -> Result<Option<u64>, V2Error> {
    dict.get(field.as_bytes())
        .map(|v| {
            v.as_int()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or(V2Error::BadField(field))
        })
        .transpose()
}

/// One folder being walked: its entries still to visit (reversed, so `pop` gives them
/// in order) and the path to it.
type Frame<'a, 'v> = (Vec<(&'a [u8], &'v Value<'a>)>, Vec<String>);

/// Walks the file tree depth first with its own stack, in the order the dictionaries
/// list their keys, so depth costs no recursion.
fn walk_tree(tree: &Value<'_>) -> Result<Vec<V2File>, V2Error> {
    let mut files = Vec::new();
    let root = tree.as_dict().ok_or(V2Error::NotADictionary("file tree"))?;
    let mut stack: Vec<Frame<'_, '_>> = vec![(reversed(root), Vec::new())];
    while let Some((entries, prefix)) = stack.last_mut() {
        let Some((key, node)) = entries.pop() else {
            stack.pop();
            continue;
        };
        let mut path = prefix.clone();
        path.push(String::from_utf8_lossy(key).into_owned());
        let shown = path.join("/");
        let node = node
            .as_dict()
            .ok_or(V2Error::NotADictionary("a file tree entry"))?;
        if let Some(leaf) = node.get(b"") {
            if node.iter().count() != 1 {
                return Err(V2Error::FileAndFolder(shown));
            }
            if files.len() == MAX_V2_FILES {
                return Err(V2Error::TooManyFiles);
            }
            files.push(file(leaf, path, shown)?);
        } else {
            if path.len() > MAX_TREE_DEPTH {
                return Err(V2Error::TooDeep);
            }
            // A folder's name is checked as the path it makes, before going in.
            SafePath::new(&path).map_err(|reason| V2Error::BadPath {
                path: shown,
                reason,
            })?;
            stack.push((reversed(node), path));
        }
    }
    Ok(files)
}

/// A dictionary's entries, last first, for popping in order.
fn reversed<'a, 'v>(dict: &'v Dict<'a>) -> Vec<(&'a [u8], &'v Value<'a>)> {
    let mut entries: Vec<_> = dict.iter().collect();
    entries.reverse();
    entries
}

/// One file's `{length, pieces root}`.
fn file(leaf: &Value<'_>, path: Vec<String>, shown: String) -> Result<V2File, V2Error> {
    let leaf = leaf
        .as_dict()
        .ok_or(V2Error::NotADictionary("a file tree file"))?;
    let length = int(leaf, "length")?.ok_or(V2Error::MissingField("length"))?;
    let pieces_root = match leaf.get(b"pieces root") {
        None => None,
        Some(v) => {
            let bytes = v.as_bytes().ok_or(V2Error::BadField("pieces root"))?;
            Some(Hash256::try_from(bytes).map_err(|_| V2Error::BadRoot(shown.clone()))?)
        }
    };
    if pieces_root.is_some() != (length > 0) {
        return Err(V2Error::RootPresence(shown));
    }
    let path = SafePath::new(&path).map_err(|reason| V2Error::BadPath {
        path: shown,
        reason,
    })?;
    Ok(V2File {
        path,
        length,
        pieces_root,
        piece_layer: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bencode::BValue;

    const PIECE: u64 = 32 * 1024;

    /// A torrent of one file of `len` bytes called `name`, and its correct piece layer.
    fn torrent(tree: BValue, layers: Vec<(Hash256, Vec<u8>)>) -> Vec<u8> {
        let info = BValue::dict([
            ("file tree", tree),
            ("meta version", BValue::Int(2)),
            ("name", BValue::string("t")),
            ("piece length", BValue::Int(PIECE as i64)),
        ]);
        let layers = BValue::Dict(
            layers
                .into_iter()
                .map(|(r, l)| (r.to_vec(), BValue::Bytes(l)))
                .collect(),
        );
        BValue::dict([("info", info), ("piece layers", layers)]).encode()
    }

    fn leaf(len: u64, root: Option<Hash256>) -> BValue {
        let mut d = vec![("length", BValue::Int(len as i64))];
        if let Some(r) = root {
            d.push(("pieces root", BValue::Bytes(r.to_vec())));
        }
        BValue::dict([("", BValue::dict(d))])
    }

    fn file_of(len: usize) -> (Hash256, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let leaves = merkle::leaf_hashes(&data);
        let root = merkle::file_root(&leaves).unwrap();
        let layer = merkle::piece_layer(&leaves, PIECE).unwrap().concat();
        (root, layer)
    }

    fn nested(depth: usize, inner: BValue) -> BValue {
        (0..depth).fold(inner, |acc, i| BValue::dict([(format!("d{i}"), acc)]))
    }

    #[test]
    fn good_torrent_parses_with_checked_layers() {
        let (root, layer) = file_of(5 * PIECE as usize + 3);
        let tree = BValue::dict([
            ("big", leaf(5 * PIECE + 3, Some(root))),
            ("dir", BValue::dict([("empty", leaf(0, None))])),
        ]);
        let v2 = V2Info::from_torrent(&torrent(tree, vec![(root, layer)])).unwrap();
        assert_eq!(v2.files.len(), 2);
        assert_eq!(v2.files[0].piece_layer.len(), 6);
        assert_eq!(v2.files[1].path.display(), "dir/empty");
    }

    /// Regression: a v2-only torrent's piece layers were hashed up to their roots twice
    /// when it was read, once to check them and once for the trees kept to answer peers.
    #[test]
    fn a_v2_torrents_piece_layers_are_hashed_once_when_it_is_read() {
        // 100 pieces: 50 + 25 + 13 + 7 + 4 + 2 + 1 = 102 parents up to the root, and a
        // padding node per height (9 here).
        let (root, layer) = file_of(100 * PIECE as usize);
        let tree = BValue::dict([("f", leaf(100 * PIECE, Some(root)))]);
        let bytes = torrent(tree, vec![(root, layer.clone())]);
        let before = merkle::PARENTS_HASHED.with(|n| n.get());
        let m = crate::metainfo::Metainfo::from_bytes(&bytes).unwrap();
        let hashed = merkle::PARENTS_HASHED.with(|n| n.get()) - before;
        assert!(
            (102..=120).contains(&hashed),
            "{hashed} parent hashes for a piece layer of 100"
        );
        // The trees kept are those the layers alone make.
        let nodes: Vec<Hash256> = layer
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap())
            .collect();
        let height = (PIECE / merkle::LEAF_SIZE as u64).trailing_zeros();
        assert_eq!(
            m.info.tree_nodes().as_deref(),
            Some(&TreeNodes::new([(root, nodes, height)]))
        );
    }

    #[test]
    fn piece_layer_that_does_not_hash_to_the_root_is_refused() {
        let (root, mut layer) = file_of(3 * PIECE as usize);
        layer[40] ^= 1;
        let tree = BValue::dict([("f", leaf(3 * PIECE, Some(root)))]);
        assert!(matches!(
            V2Info::from_torrent(&torrent(tree, vec![(root, layer)])),
            Err(V2Error::BadPieceLayer {
                reason: MerkleError::RootMismatch,
                ..
            })
        ));
    }

    #[test]
    fn piece_layer_of_the_wrong_size_is_refused() {
        let (root, mut layer) = file_of(3 * PIECE as usize);
        layer.extend([0u8; 32]);
        let tree = BValue::dict([("f", leaf(3 * PIECE, Some(root)))]);
        assert!(matches!(
            V2Info::from_torrent(&torrent(tree.clone(), vec![(root, layer.clone())])),
            Err(V2Error::BadPieceLayer {
                reason: MerkleError::WrongLayerLength {
                    expected: 3,
                    found: 4
                },
                ..
            })
        ));
        layer.pop();
        assert!(matches!(
            V2Info::from_torrent(&torrent(tree.clone(), vec![(root, layer)])),
            Err(V2Error::LayerNotMultipleOf32(_))
        ));
        assert!(matches!(
            V2Info::from_torrent(&torrent(tree, vec![])),
            Err(V2Error::MissingPieceLayer(_))
        ));
    }

    #[test]
    fn file_tree_escaping_the_folder_is_refused() {
        for bad in ["..", ".", "a/b", "a\\..\\b", ""] {
            let tree = BValue::dict([(bad, BValue::dict([("f", leaf(1, Some([1; 32])))]))]);
            assert!(
                matches!(
                    V2Info::from_torrent(&torrent(tree, vec![])),
                    Err(V2Error::BadPath { .. })
                ),
                "{bad:?}"
            );
            let tree = BValue::dict([(bad, leaf(1, Some([1; 32])))]);
            assert!(
                matches!(
                    V2Info::from_torrent(&torrent(tree, vec![])),
                    Err(V2Error::BadPath { .. })
                ),
                "{bad:?} as a file"
            );
        }
    }

    /// A hybrid made by `create`, as bytes, from files of these lengths.
    fn hybrid(lengths: &[usize]) -> Vec<u8> {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir_all(&root).unwrap();
        for (i, len) in lengths.iter().enumerate() {
            std::fs::write(root.join(format!("f{i}")), vec![i as u8; *len]).unwrap();
        }
        let source = crate::create::scan(&root).unwrap();
        let options = crate::create::CreateOptions {
            format: crate::create::Format::Hybrid,
            piece_size: Some(PIECE),
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            private: false,
            comment: None,
            created_by: None,
            creation_date: None,
            threads: 1,
        };
        crate::create::create(&source, &options, &|_| {})
            .unwrap()
            .torrent
    }

    #[test]
    fn a_hybrid_whose_views_agree_passes() {
        let bytes = hybrid(&[100, 3 * PIECE as usize + 5, 0, 7]);
        let meta = super::super::Metainfo::from_bytes(&bytes).unwrap();
        let v2 = V2Info::from_torrent(&bytes).unwrap();
        assert_eq!(v2.check_hybrid(&meta.info), Ok(()));
    }

    #[test]
    fn a_hybrid_whose_v2_tree_lists_another_length_is_refused() {
        let bytes = hybrid(&[100, 3 * PIECE as usize + 5]);
        let top = bencode::decode(&bytes).unwrap().to_owned_value();
        let BValue::Dict(mut top) = top else {
            panic!("a torrent is a dictionary")
        };
        // The v2 tree says f0 has 99 bytes; the v1 list still says 100.
        let Some(BValue::Dict(info)) = top.get_mut(&b"info"[..]) else {
            panic!("no info")
        };
        let Some(BValue::Dict(tree)) = info.get_mut(&b"file tree"[..]) else {
            panic!("no file tree")
        };
        let Some(BValue::Dict(f0)) = tree.get_mut(&b"f0"[..]) else {
            panic!("no f0")
        };
        let Some(BValue::Dict(leaf)) = f0.get_mut(&b""[..]) else {
            panic!("no leaf")
        };
        leaf.insert(b"length".to_vec(), BValue::Int(99));
        let bytes = BValue::Dict(top).encode();
        // Each part is fine on its own; together they are refused.
        assert!(V2Info::from_torrent(&bytes).is_ok());
        assert!(matches!(
            super::super::Metainfo::from_bytes(&bytes),
            Err(super::super::MetainfoError::V2(V2Error::HybridMismatch(_)))
        ));
    }

    #[test]
    fn absurd_nesting_is_refused_without_recursion() {
        let tree = nested(MAX_TREE_DEPTH + 1, BValue::dict([("f", leaf(0, None))]));
        assert_eq!(
            V2Info::from_torrent(&torrent(tree, vec![])),
            Err(V2Error::TooDeep)
        );
        let tree = nested(MAX_TREE_DEPTH - 1, BValue::dict([("f", leaf(0, None))]));
        assert!(V2Info::from_torrent(&torrent(tree, vec![])).is_ok());
    }

    #[test]
    fn malformed_file_entries_are_refused() {
        let both = BValue::dict([(
            "x",
            BValue::Dict(BTreeMap::from([
                (Vec::new(), BValue::dict([("length", BValue::Int(0))])),
                (b"y".to_vec(), leaf(0, None)),
            ])),
        )]);
        assert!(matches!(
            V2Info::from_torrent(&torrent(both, vec![])),
            Err(V2Error::FileAndFolder(_))
        ));
        let short_root = BValue::dict([(
            "x",
            BValue::dict([(
                "",
                BValue::dict([
                    ("length", BValue::Int(5)),
                    ("pieces root", BValue::Bytes(vec![0; 31])),
                ]),
            )]),
        )]);
        assert!(matches!(
            V2Info::from_torrent(&torrent(short_root, vec![])),
            Err(V2Error::BadRoot(_))
        ));
        let no_root = BValue::dict([("x", leaf(5, None))]);
        assert!(matches!(
            V2Info::from_torrent(&torrent(no_root, vec![])),
            Err(V2Error::RootPresence(_))
        ));
        let negative = BValue::dict([(
            "x",
            BValue::dict([("", BValue::dict([("length", BValue::Int(-1))]))]),
        )]);
        assert_eq!(
            V2Info::from_torrent(&torrent(negative, vec![])),
            Err(V2Error::BadField("length"))
        );
        assert_eq!(
            V2Info::from_torrent(&torrent(BValue::dict::<&str>([]), vec![])),
            Err(V2Error::EmptyTree)
        );
    }
}
