//! `.torrent` files (BEP 3, 12, 27, 47): untrusted bytes in, a validated [`Metainfo`] out.
//!
//! This is the edge where a torrent is checked once: after it, the piece count, piece
//! lengths, file paths and hashes are known good, and the engine does not re-check them.
//! The info-hash is SHA-1 over the original bytes of the `info` dictionary, as decoded,
//! never over a re-encoding. Nothing here reads files or talks to the network.

pub mod merkle;
pub(crate) mod path;
pub mod tree_nodes;
pub mod v2;
pub mod webseed;

pub use path::{dedupe, is_plain_name, PathError, SafePath, MAX_COMPONENT_BYTES, MAX_PATH_BYTES};
pub use webseed::{
    RefusedWebSeed, WebSeedError, WebSeedUrl, MAX_WEB_SEEDS, MAX_WEB_SEED_URL_BYTES,
};

use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::sync::Arc;

use crate::bencode::{self, DecodeError, Dict, Value};
use crate::layout::{Layout, LayoutError, PieceIndex};
use crate::InfoHash;
use merkle::Hash256;
use v2::{V2Error, V2Info};

/// Why a `.torrent` (or an `info` dictionary fetched from peers) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// The bytes are not bencode at all, or break a decoder limit.
    #[error("not valid bencode: {0}")]
    Bencode(#[from] DecodeError),
    /// The top level (or `info`) is not a dictionary.
    #[error("{0} is not a dictionary")]
    NotADictionary(&'static str),
    /// A required key is absent.
    #[error("missing required field {0:?}")]
    MissingField(&'static str),
    /// A key holds the wrong kind of value.
    #[error("field {field:?} at byte {offset} should be {expected}, found {found}")]
    WrongType {
        /// The key.
        field: &'static str,
        /// What it should hold.
        expected: &'static str,
        /// What it held.
        found: &'static str,
        /// Where the value starts in the input.
        offset: usize,
    },
    /// A BitTorrent v2 torrent with no v1 part, given as bare `info` bytes: its piece
    /// layers live outside `info` (a magnet's fetcher gets them from peers and reads the
    /// whole torrent through [`Metainfo::from_bytes`]).
    #[error(
        "this is a BitTorrent v2-only info dictionary without its piece layers; read it with the whole torrent"
    )]
    V2Only,
    /// The v2 part of a v2-only torrent is broken.
    #[error("{0}")]
    V2(#[from] V2Error),
    /// `pieces` is not a whole number of 20-byte hashes.
    #[error("pieces field is {0} bytes, not a multiple of 20")]
    PiecesNotMultipleOf20(usize),
    /// The number of hashes does not match the total length.
    #[error("torrent has {found} piece hashes but its files need {expected}")]
    PieceCountMismatch {
        /// `ceil(total length / piece length)`.
        expected: u32,
        /// Hashes in `pieces`.
        found: usize,
    },
    /// A length or piece length below zero.
    #[error("field {field:?} is negative ({value})")]
    Negative {
        /// The key.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// Both `length` and `files`, so single- and multi-file at once.
    #[error("info has both \"length\" and \"files\"")]
    LengthAndFiles,
    /// A multi-file torrent whose `files` list is empty.
    #[error("files list is empty")]
    NoFiles,
    /// The torrent's name is not a usable file or folder name.
    #[error("torrent name {name:?} is not usable: {reason}")]
    BadName {
        /// The name as found.
        name: String,
        /// What is wrong with it.
        reason: PathError,
    },
    /// A file's path is hostile or broken.
    #[error("file {index} has an unusable path: {reason}")]
    BadPath {
        /// The file's index in `files`.
        index: usize,
        /// What is wrong with it.
        reason: PathError,
    },
    /// Piece length, total length or piece count out of bounds.
    #[error("{0}")]
    Layout(#[from] LayoutError),
}

/// A validated `.torrent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    /// SHA-1 of the raw `info` bytes: the torrent's identity on the wire.
    pub info_hash: InfoHash,
    /// SHA-256 of the raw `info` bytes, for a hybrid or a v2-only torrent: the v2
    /// identity. A v2-only torrent's `info_hash` is its first 20 bytes; a hybrid's
    /// is the SHA-1, and this names its second swarm ([`Metainfo::v2_swarm`]).
    pub info_hash_v2: Option<Hash256>,
    /// The validated `info` dictionary.
    pub info: Info,
    /// Tracker URLs in tiers (BEP 12): `announce-list` if it has any, else `announce`.
    pub trackers: Vec<Vec<String>>,
    /// Web seed URLs (BEP 19 `url-list`), checked: http or https, at most
    /// [`MAX_WEB_SEEDS`], each once.
    pub web_seeds: Vec<WebSeedUrl>,
    /// `url-list` entries that were not usable, and why (a bad entry costs only itself).
    pub web_seeds_refused: Vec<RefusedWebSeed>,
    /// Free text from the creator.
    pub comment: Option<String>,
    /// The program that made the torrent.
    pub created_by: Option<String>,
    /// Creation time in seconds since the Unix epoch.
    pub creation_date: Option<i64>,
    /// The original `info` bytes, served to peers that fetch metadata (BEP 9).
    pub info_bytes: Vec<u8>,
}

/// A validated `info` dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The suggested name: the file name of a single-file torrent, the folder of a
    /// multi-file one.
    pub name: String,
    /// BEP 27: trackers only, no DHT or peer exchange.
    pub private: bool,
    /// Also carries a v2 part (BEP 52), checked to describe the same files as the v1
    /// part; its pieces are checked by SHA-1.
    pub hybrid: bool,
    /// BitTorrent v2 only (BEP 52): pieces are checked by Merkle tree, files start on
    /// piece boundaries with virtual padding between them that is never stored.
    pub v2_only: bool,
    /// Pieces and files.
    pub layout: Layout,
    /// How each piece is checked, one entry per piece of the layout.
    hashes: PieceHashes,
    /// A v2 torrent's trees above its piece layers, built once when the metainfo is read
    /// (off every actor's thread), shared by its Peers to answer `hash request`s.
    trees: Option<Arc<tree_nodes::TreeNodes>>,
}

/// How the pieces of a torrent are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PieceHashes {
    /// One SHA-1 per piece (v1 and hybrid torrents).
    V1(Vec<[u8; 20]>),
    /// One Merkle node per piece (v2-only torrents).
    V2(Vec<MerklePiece>),
    /// A hybrid whose piece layers are known: a SHA-1 per piece and, for each piece
    /// holding file bytes, its Merkle node too; both must pass.
    Hybrid(Vec<[u8; 20]>, Vec<Option<MerklePiece>>),
}

/// What a v2 piece's data must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MerklePiece {
    /// The node over the piece: its entry in the file's piece layer, or the file's
    /// `pieces root` for a file of one piece.
    pub node: Hash256,
    /// How many leaves the node spans (missing ones are zero hashes): a piece's worth,
    /// or for a one-piece file the next power of two above its block count.
    pub width: u32,
    /// The piece's bytes that belong to the file; the rest is virtual padding, outside
    /// the tree.
    pub data_len: u32,
    /// The file's `pieces root`: which tree a hash request for the piece's leaves names.
    pub file_root: Hash256,
    /// The piece's index within its file: its leaves start at `file_piece * width`.
    pub file_piece: u32,
}

impl MerklePiece {
    /// The BEP 52 hash request for this piece's leaves (base layer 0), which the answer
    /// must hash up to [`MerklePiece::node`]; `None` for a piece of one leaf, whose
    /// node is its only leaf.
    pub fn leaf_request(&self) -> Option<crate::wire::HashRequest> {
        (self.width >= 2).then(|| crate::wire::HashRequest {
            pieces_root: self.file_root,
            base_layer: 0,
            index: self.file_piece.saturating_mul(self.width),
            length: self.width,
            proof_layers: 0,
        })
    }

    /// Which blocks of a failed piece were bad: `ours` are the leaf hashes of the blocks
    /// we got, `theirs` the leaves a peer sent. `None` if `theirs` does not hash up to
    /// the piece's node (the peer lied or answered something else), so a made-up answer
    /// can blame nobody.
    pub fn bad_blocks(&self, ours: &[Hash256], theirs: &[Hash256]) -> Option<Vec<usize>> {
        let width = self.width as usize;
        if theirs.len() != width || ours.len() > width {
            return None;
        }
        if merkle::root_of_layer(theirs, 0, width) != self.node {
            return None;
        }
        Some(
            ours.iter()
                .zip(theirs)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, _)| i)
                .collect(),
        )
    }
}

/// The check a piece's data must pass, handed to whoever hashes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceCheck {
    /// SHA-1 of the whole piece.
    Sha1([u8; 20]),
    /// SHA-256 Merkle root of the piece's file bytes.
    Merkle(MerklePiece),
    /// A hybrid's piece: both its SHA-1 and its Merkle node, which must agree (see
    /// [`Verdict::Inconsistent`]).
    Both([u8; 20], MerklePiece),
}

/// How a piece's data fared against its [`PieceCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Every hash it is checked by matches.
    Passed,
    /// Its hash does not match (both, for a hybrid's): bad data from whoever sent it.
    /// Also what a check that could not run comes to.
    #[default]
    Failed,
    /// A hybrid's piece matched one of its two hashes and not the other: the torrent's
    /// v1 and v2 parts describe different data, so no sender is to blame and no copy of
    /// the piece can ever pass both.
    Inconsistent,
}

impl Verdict {
    /// The verdict of a piece checked by SHA-1 (`sha1`), by its Merkle node (`merkle`),
    /// or by both; `None` for a check that does not apply. Neither applying passes
    /// nothing.
    pub fn of(sha1: Option<bool>, merkle: Option<bool>) -> Self {
        match (sha1, merkle) {
            (Some(true), None | Some(true)) | (None, Some(true)) => Verdict::Passed,
            (Some(true), Some(false)) | (Some(false), Some(true)) => Verdict::Inconsistent,
            _ => Verdict::Failed,
        }
    }

    /// Whether the piece passed.
    pub fn passed(self) -> bool {
        self == Verdict::Passed
    }
}

impl PieceCheck {
    /// A hasher that takes the piece's bytes in order, in any chunks.
    pub fn verifier(&self) -> PieceVerifier {
        PieceVerifier {
            sha1: self.sha1().map(|expected| (Sha1::new(), expected)),
            merkle: self.merkle().map(|piece| MerkleVerifier {
                piece,
                seen: 0,
                partial: Vec::new(),
                leaves: Vec::new(),
            }),
        }
    }

    /// The SHA-1 the piece must have, if it is checked by one.
    pub fn sha1(&self) -> Option<[u8; 20]> {
        match self {
            PieceCheck::Sha1(h) | PieceCheck::Both(h, _) => Some(*h),
            PieceCheck::Merkle(_) => None,
        }
    }

    /// The Merkle node the piece must hash to, if it is checked by one.
    pub fn merkle(&self) -> Option<MerklePiece> {
        match self {
            PieceCheck::Merkle(m) | PieceCheck::Both(_, m) => Some(*m),
            PieceCheck::Sha1(_) => None,
        }
    }

    /// The leaf hashes of a v2-only torrent's piece's file bytes given as blocks of
    /// 16 KiB (padding left out); `None` for a v1 or hybrid check, whose swarm may hold
    /// peers that know no `hash request`.
    pub fn leaf_hashes(&self, blocks: &[bytes::Bytes]) -> Option<Vec<Hash256>> {
        let PieceCheck::Merkle(piece) = self else {
            return None;
        };
        let mut left = piece.data_len as usize;
        let mut leaves = Vec::new();
        for block in blocks {
            if left == 0 {
                break;
            }
            let n = block.len().min(left);
            leaves.push(merkle::leaf_hash(&block[..n]));
            left -= n;
        }
        Some(leaves)
    }

    /// How `data`, the whole piece, fares.
    pub fn verdict(&self, data: &[u8]) -> Verdict {
        let mut v = self.verifier();
        v.update(data);
        v.finish()
    }

    /// Whether `data`, the whole piece, passes.
    pub fn matches(&self, data: &[u8]) -> bool {
        self.verdict(data).passed()
    }
}

/// Zeros to hash in place of a hybrid piece's padding.
const ZEROS: [u8; 4096] = [0; 4096];

/// A piece check in progress: see [`PieceCheck::verifier`]. A hybrid's piece runs
/// both hashes over the one pass.
#[derive(Debug, Clone)]
pub struct PieceVerifier {
    /// A running SHA-1 and what it must end as.
    sha1: Option<(Sha1, [u8; 20])>,
    merkle: Option<MerkleVerifier>,
}

/// The leaf hashes of a v2 piece's file bytes, 16 KiB at a time.
#[derive(Debug, Clone)]
struct MerkleVerifier {
    /// What the leaves must hash to.
    piece: MerklePiece,
    /// Bytes taken so far (padding included).
    seen: u64,
    /// File bytes of the current leaf not yet hashed (under 16 KiB).
    partial: Vec<u8>,
    /// Leaf hashes so far.
    leaves: Vec<Hash256>,
}

impl MerkleVerifier {
    /// How many of the next `len` bytes are file bytes; the rest are padding.
    fn file_bytes_of(&self, len: usize) -> usize {
        let room = u64::from(self.piece.data_len).saturating_sub(self.seen);
        len.min(usize::try_from(room).unwrap_or(usize::MAX))
    }

    fn update(&mut self, mut data: &[u8]) {
        // Bytes past the file's end are virtual padding, outside the tree.
        let take = self.file_bytes_of(data.len());
        self.seen = self.seen.saturating_add(data.len() as u64);
        data = &data[..take];
        while !data.is_empty() {
            let n = (merkle::LEAF_SIZE - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.partial.len() == merkle::LEAF_SIZE {
                self.leaves.push(merkle::leaf_hash(&self.partial));
                self.partial.clear();
            }
        }
    }

    fn finish(mut self) -> bool {
        if !self.partial.is_empty() {
            self.leaves.push(merkle::leaf_hash(&self.partial));
        }
        let width = self.piece.width as usize;
        self.leaves.len() <= width
            && merkle::root_of_layer(&self.leaves, 0, width) == self.piece.node
    }
}

impl PieceVerifier {
    /// Takes the next bytes of the piece.
    pub fn update(&mut self, data: &[u8]) {
        match (&mut self.sha1, &mut self.merkle) {
            // A hybrid's padding lies outside the v2 tree and is zeros by definition
            // (BEP 47; it is never stored nor read from disk as anything else): its SHA-1
            // takes zeros there, whatever a peer sent, so the right file bytes with
            // garbage padding pass both hashes instead of passing one.
            (Some((sha, _)), Some(merkle)) => {
                let file_bytes = merkle.file_bytes_of(data.len());
                sha.update(&data[..file_bytes]);
                let mut padding = data.len() - file_bytes;
                while padding > 0 {
                    let n = padding.min(ZEROS.len());
                    sha.update(&ZEROS[..n]);
                    padding -= n;
                }
                merkle.update(data);
            }
            (sha1, merkle) => {
                if let Some((sha, _)) = sha1 {
                    sha.update(data);
                }
                if let Some(merkle) = merkle {
                    merkle.update(data);
                }
            }
        }
    }

    /// How the bytes taken fare.
    pub fn finish(self) -> Verdict {
        let sha1 = self
            .sha1
            .map(|(sha, expected)| <[u8; 20]>::from(sha.finalize()) == expected);
        Verdict::of(sha1, self.merkle.map(MerkleVerifier::finish))
    }
}

impl Info {
    /// Parses the raw bytes of an `info` dictionary, e.g. fetched from peers by a magnet
    /// link. The caller checks the info-hash.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, MetainfoError> {
        let value = bencode::decode(raw)?;
        Self::from_value(&value)
    }

    /// A multi-file torrent (`files`), whose files sit under a folder of its name, even
    /// when it lists one file; a single-file torrent's one path is its name alone.
    pub fn is_multi_file(&self) -> bool {
        self.layout
            .files()
            .first()
            .is_some_and(|f| f.path.components().len() > 1)
    }

    /// A v2 torrent's trees, to answer peers' `hash request`s; `None` for v1 and hybrids.
    pub fn tree_nodes(&self) -> Option<Arc<tree_nodes::TreeNodes>> {
        self.trees.clone()
    }

    /// The check a piece's data must pass.
    pub fn piece_check(&self, piece: PieceIndex) -> PieceCheck {
        let i = piece.as_usize();
        match &self.hashes {
            PieceHashes::V1(h) => PieceCheck::Sha1(h[i]),
            PieceHashes::V2(h) => PieceCheck::Merkle(h[i]),
            PieceHashes::Hybrid(sha1, merkle) => match merkle[i] {
                Some(m) => PieceCheck::Both(sha1[i], m),
                None => PieceCheck::Sha1(sha1[i]),
            },
        }
    }

    /// A hybrid's pieces are checked by both hashes from now on, given its v2 part with
    /// the piece layers (checked against the roots). Its files were matched with the v1
    /// files when the `info` was read, each starting a piece, so a file's pieces are
    /// its v2 pieces in order; a piece of padding alone keeps its SHA-1 only.
    fn check_both_ways(&mut self, v2: &V2Info) -> Result<(), MetainfoError> {
        let PieceHashes::V1(sha1) = &self.hashes else {
            return Ok(());
        };
        let piece_length = u64::from(self.layout.piece_length());
        let mut merkle = vec![None; sha1.len()];
        let v1_files = self.layout.files().iter().filter(|f| !f.padding);
        for (file, v2_file) in v1_files.zip(&v2.files) {
            let first = file.offset / piece_length;
            for (k, piece) in Self::file_merkle_pieces(v2_file, piece_length)?
                .into_iter()
                .enumerate()
            {
                let slot = usize::try_from(first + k as u64)
                    .ok()
                    .and_then(|i| merkle.get_mut(i))
                    .ok_or_else(|| V2Error::HybridMismatch(file.path.display()))?;
                *slot = Some(piece);
            }
        }
        // The SHA-1 list moves over, not copied: a big torrent has millions of them.
        if let PieceHashes::V1(sha1) =
            std::mem::replace(&mut self.hashes, PieceHashes::V1(Vec::new()))
        {
            self.hashes = PieceHashes::Hybrid(sha1, merkle);
        }
        Ok(())
    }

    /// A v2-only torrent's `info`, from its checked v2 part (whose piece layers came
    /// with the `.torrent`) and the trees they were checked by: the files laid out each
    /// from a piece boundary, with virtual padding between them, and one Merkle node per
    /// piece.
    fn from_v2(
        info: &Dict<'_>,
        v2: &V2Info,
        trees: tree_nodes::TreeNodes,
    ) -> Result<Self, MetainfoError> {
        let (name, root) = torrent_name(info)?;
        let layout = Self::v2_layout(&root, v2)?;
        let pieces = Self::merkle_pieces(v2)?;
        if pieces.len() != layout.num_pieces() as usize {
            return Err(MetainfoError::PieceCountMismatch {
                expected: layout.num_pieces(),
                found: pieces.len(),
            });
        }
        Ok(Self {
            name,
            private: opt_int(info, "private")?.is_some_and(|p| p == 1),
            hybrid: false,
            v2_only: true,
            layout,
            hashes: PieceHashes::V2(pieces),
            trees: Some(Arc::new(trees)),
        })
    }

    /// A v2 torrent's files as the engine lays them out: each file starts a piece and is
    /// followed by virtual padding, under the torrent's folder `root` unless the tree
    /// holds one file at its top.
    fn v2_layout(root: &SafePath, v2: &V2Info) -> Result<Layout, MetainfoError> {
        let piece_length = v2.piece_length;
        // One file at the top of the tree is a single-file torrent, stored as its own
        // name; otherwise the files go under the torrent's folder.
        let single = v2.files.len() == 1 && v2.files[0].path.components().len() == 1;
        let mut entries = Vec::with_capacity(v2.files.len() * 2);
        let mut pads = 0usize;
        for (i, file) in v2.files.iter().enumerate() {
            let path = if single {
                file.path.clone()
            } else {
                let mut full = root.components().to_vec();
                full.extend(file.path.components().iter().cloned());
                SafePath::new(&full)
                    .map_err(|reason| MetainfoError::BadPath { index: i, reason })?
            };
            entries.push((path, file.length, false));
            // The last file is padded too, as libtorrent lays v2 torrents out: its peers
            // ask for the last piece's blocks as if it were whole.
            let tail = file.length % piece_length;
            if tail != 0 {
                pads += 1;
                let pad = SafePath::new(&[".pad".to_string(), pads.to_string()])
                    .map_err(|reason| MetainfoError::BadPath { index: i, reason })?;
                entries.push((pad, piece_length - tail, true));
            }
        }
        Ok(Layout::new(piece_length, entries)?)
    }

    /// What each v2 piece must hash to, file by file: its node in the file's piece layer,
    /// or the file's root for a file of one piece.
    fn merkle_pieces(v2: &V2Info) -> Result<Vec<MerklePiece>, MetainfoError> {
        let mut pieces = Vec::new();
        for file in &v2.files {
            pieces.extend(Self::file_merkle_pieces(file, v2.piece_length)?);
        }
        Ok(pieces)
    }

    /// One v2 file's pieces: none for an empty file, its root for a file of one piece,
    /// else its piece layer's nodes.
    fn file_merkle_pieces(
        file: &v2::V2File,
        piece_length: u64,
    ) -> Result<Vec<MerklePiece>, MetainfoError> {
        let per_piece = merkle::leaves_per_piece(piece_length).map_err(V2Error::PieceLength)?;
        let Some(root_hash) = file.pieces_root else {
            return Ok(Vec::new());
        };
        let count = file.length.div_ceil(piece_length);
        let mut pieces = Vec::new();
        for k in 0..count {
            let data_len = (file.length - k * piece_length).min(piece_length) as u32;
            pieces.push(if count == 1 {
                let width =
                    merkle::node_width(file.length, piece_length).map_err(V2Error::PieceLength)?;
                MerklePiece {
                    node: root_hash,
                    width: width as u32,
                    data_len,
                    file_root: root_hash,
                    file_piece: 0,
                }
            } else {
                let node = *file
                    .piece_layer
                    .get(k as usize)
                    .ok_or_else(|| V2Error::MissingPieceLayer(file.path.display()))?;
                MerklePiece {
                    node,
                    width: per_piece as u32,
                    data_len,
                    file_root: root_hash,
                    file_piece: k as u32,
                }
            });
        }
        Ok(pieces)
    }

    fn from_value(value: &Value<'_>) -> Result<Self, MetainfoError> {
        let info = value
            .as_dict()
            .ok_or(MetainfoError::NotADictionary("info"))?;

        let meta_version = opt_int(info, "meta version")?;
        let pieces = opt_bytes(info, "pieces")?;
        if meta_version == Some(2) && pieces.is_none() {
            return Err(MetainfoError::V2Only);
        }
        let hybrid = meta_version == Some(2);
        let pieces = pieces.ok_or(MetainfoError::MissingField("pieces"))?;

        let piece_length = non_negative(
            "piece length",
            opt_int(info, "piece length")?.ok_or(MetainfoError::MissingField("piece length"))?,
        )?;
        if pieces.len() % 20 != 0 {
            return Err(MetainfoError::PiecesNotMultipleOf20(pieces.len()));
        }

        let (name, root) = torrent_name(info)?;

        let length = opt_int(info, "length")?;
        let files = info.get(b"files");
        let entries = match (length, files) {
            (Some(_), Some(_)) => return Err(MetainfoError::LengthAndFiles),
            (Some(length), None) => vec![(root, non_negative("length", length)?, false)],
            (None, Some(files)) => multi_file_entries(&root, files)?,
            (None, None) => return Err(MetainfoError::MissingField("length")),
        };

        let layout = Layout::new(piece_length, entries)?;
        let piece_hashes: Vec<[u8; 20]> = pieces
            .chunks_exact(20)
            .filter_map(|c| c.try_into().ok())
            .collect();
        if piece_hashes.len() != layout.num_pieces() as usize {
            return Err(MetainfoError::PieceCountMismatch {
                expected: layout.num_pieces(),
                found: piece_hashes.len(),
            });
        }

        let mut info = Self {
            name,
            private: opt_int(info, "private")?.is_some_and(|p| p == 1),
            hybrid,
            v2_only: false,
            layout,
            hashes: PieceHashes::V1(piece_hashes),
            trees: None,
        };
        // A hybrid's two views must describe the same data, or its v1 and v2 swarms
        // would be sharing different files under one torrent. Where no file is longer
        // than a piece, the roots alone give every piece's Merkle node (no piece layer
        // is needed), so its pieces are checked by both hashes from the `info` alone.
        if hybrid {
            let v2 = V2Info::from_info_value(value)?;
            v2.check_hybrid(&info)?;
            if v2.files.iter().all(|f| f.length <= v2.piece_length) {
                info.check_both_ways(&v2)?;
            }
        }
        Ok(info)
    }
}

/// The torrent's name (`name.utf-8`, else `name`) and the folder or file it names,
/// checked as a path component.
fn torrent_name(info: &Dict<'_>) -> Result<(String, SafePath), MetainfoError> {
    let name = utf8_field(info, "name.utf-8")?
        .or(utf8_field(info, "name")?)
        .ok_or(MetainfoError::MissingField("name"))?;
    let root = SafePath::new(&[name.as_str()]).map_err(|reason| MetainfoError::BadName {
        name: name.clone(),
        reason,
    })?;
    Ok((name, root))
}

/// The files of a multi-file torrent, under the torrent's folder, renamed where two
/// would collide.
fn multi_file_entries(
    root: &SafePath,
    files: &Value<'_>,
) -> Result<Vec<(SafePath, u64, bool)>, MetainfoError> {
    let list = files
        .as_list()
        .ok_or_else(|| wrong_type("files", "a list", files))?;
    if list.is_empty() {
        return Err(MetainfoError::NoFiles);
    }
    let mut paths = Vec::with_capacity(list.len());
    let mut lengths = Vec::with_capacity(list.len());
    for (index, file) in list.iter().enumerate() {
        let file = file
            .as_dict()
            .ok_or_else(|| wrong_type("files", "a list of dictionaries", file))?;
        let length = opt_int(file, "length")?.ok_or(MetainfoError::MissingField("length"))?;
        let padding = opt_bytes(file, "attr")?.is_some_and(|a| a.contains(&b'p'));
        let components = match file.get(b"path.utf-8") {
            Some(v) if v.as_list().is_some() => path_components(v)?,
            _ => path_components(
                file.get(b"path")
                    .ok_or(MetainfoError::MissingField("path"))?,
            )?,
        };
        // Checked before the folder name goes in front, or an empty path would name the
        // torrent's folder itself as a file.
        if components.is_empty() {
            return Err(MetainfoError::BadPath {
                index,
                reason: PathError::Empty,
            });
        }
        let mut full = root.components().to_vec();
        full.extend(components);
        let path =
            SafePath::new(&full).map_err(|reason| MetainfoError::BadPath { index, reason })?;
        paths.push(path);
        lengths.push((non_negative("length", length)?, padding));
    }
    // Padding files are never written and BEP 47 names many of them alike, so only real
    // files take part in the renaming of duplicates.
    let (real_index, mut real): (Vec<usize>, Vec<SafePath>) = paths
        .iter()
        .zip(&lengths)
        .enumerate()
        .filter(|(_, (_, (_, padding)))| !padding)
        .map(|(i, (p, _))| (i, p.clone()))
        .unzip();
    dedupe(&mut real).map_err(|(i, reason)| MetainfoError::BadPath {
        index: real_index.get(i).copied().unwrap_or(i),
        reason,
    })?;
    let mut renamed = real.into_iter();
    for (path, (_, padding)) in paths.iter_mut().zip(&lengths) {
        if !padding {
            if let Some(new) = renamed.next() {
                *path = new;
            }
        }
    }
    Ok(paths
        .into_iter()
        .zip(lengths)
        .map(|(p, (len, pad))| (p, len, pad))
        .collect())
}

/// A `path` list as strings; bytes that are not UTF-8 become U+FFFD rather than
/// refusing the torrent, as other clients do.
fn path_components(value: &Value<'_>) -> Result<Vec<String>, MetainfoError> {
    let list = value
        .as_list()
        .ok_or_else(|| wrong_type("path", "a list", value))?;
    list.iter()
        .map(|c| {
            c.as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or_else(|| wrong_type("path", "a list of strings", c))
        })
        .collect()
}

impl Metainfo {
    /// Parses and validates a whole `.torrent` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetainfoError> {
        let top = bencode::decode(bytes)?;
        let dict = top
            .as_dict()
            .ok_or(MetainfoError::NotADictionary("torrent"))?;
        let info_value = dict
            .get(b"info")
            .ok_or(MetainfoError::MissingField("info"))?;
        let info_bytes = info_value.raw().to_vec();
        let (info, info_hash, info_hash_v2) = match Info::from_value(info_value) {
            Err(MetainfoError::V2Only) => {
                let (v2, trees) = V2Info::with_trees(dict)?;
                let dict = info_value
                    .as_dict()
                    .ok_or(MetainfoError::NotADictionary("info"))?;
                let info = Info::from_v2(dict, &v2, trees)?;
                (info, truncated_v2_hash(&v2.info_hash), Some(v2.info_hash))
            }
            other => {
                let mut info = other?;
                // The file tree was checked against the v1 files by `Info::from_value`;
                // piece layers, when given, must hash up to the tree's roots too, and
                // then check every piece beside its SHA-1.
                let v2_hash = info.hybrid.then(|| Sha256::digest(&info_bytes).into());
                if info.hybrid && dict.get(b"piece layers").is_some() {
                    info.check_both_ways(&V2Info::from_torrent_dict(dict)?)?;
                }
                (info, InfoHash(Sha1::digest(&info_bytes).into()), v2_hash)
            }
        };
        let (web_seeds, web_seeds_refused) = webseed::web_seeds(dict.get(b"url-list"));

        Ok(Self {
            info_hash,
            info_hash_v2,
            info,
            trackers: tracker_tiers(dict),
            web_seeds,
            web_seeds_refused,
            comment: lenient_str(dict, "comment.utf-8").or_else(|| lenient_str(dict, "comment")),
            created_by: lenient_str(dict, "created by"),
            creation_date: dict.get(b"creation date").and_then(Value::as_int),
            info_bytes,
        })
    }

    /// A hybrid's second swarm: its v2 info-hash truncated to 20 bytes, as the wire, the
    /// trackers and the DHT carry it. `None` for a v1 or v2-only torrent, which has one.
    pub fn v2_swarm(&self) -> Option<InfoHash> {
        self.info
            .hybrid
            .then_some(self.info_hash_v2.as_ref())
            .flatten()
            .map(truncated_v2_hash)
    }

    /// Every swarm the torrent joins: `info_hash`, then a hybrid's v2 swarm.
    pub fn swarms(&self) -> impl Iterator<Item = InfoHash> {
        std::iter::once(self.info_hash).chain(self.v2_swarm())
    }

    /// Every tracker URL once, tier by tier.
    pub fn all_trackers(&self) -> impl Iterator<Item = &str> {
        self.trackers.iter().flatten().map(String::as_str)
    }
}

/// The v2 info-hash as the wire and trackers carry it: its first 20 bytes (BEP 52).
pub fn truncated_v2_hash(hash: &Hash256) -> InfoHash {
    let mut out = [0u8; 20];
    out.copy_from_slice(&hash[..20]);
    InfoHash(out)
}

/// BEP 12: `announce-list` replaces `announce` when it has any usable URL. Entries that are
/// not strings are skipped: a malformed optional field should not make a good torrent
/// unusable. Each URL appears once, in its first tier.
fn tracker_tiers(dict: &Dict<'_>) -> Vec<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut tiers: Vec<Vec<String>> = dict
        .get(b"announce-list")
        .and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_list)
        .map(|tier| {
            tier.iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|url| !url.is_empty() && seen.insert(url.to_string()))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|tier| !tier.is_empty())
        .collect();
    if tiers.is_empty() {
        if let Some(url) = lenient_str(dict, "announce").filter(|u| !u.trim().is_empty()) {
            tiers.push(vec![url.trim().to_string()]);
        }
    }
    tiers
}

fn wrong_type(field: &'static str, expected: &'static str, found: &Value<'_>) -> MetainfoError {
    MetainfoError::WrongType {
        field,
        expected,
        found: found.type_name(),
        offset: found.offset(),
    }
}

fn opt_int(dict: &Dict<'_>, field: &'static str) -> Result<Option<i64>, MetainfoError> {
    dict.get(field.as_bytes())
        .map(|v| v.as_int().ok_or_else(|| wrong_type(field, "an integer", v)))
        .transpose()
}

fn opt_bytes<'a>(dict: &Dict<'a>, field: &'static str) -> Result<Option<&'a [u8]>, MetainfoError> {
    dict.get(field.as_bytes())
        .map(|v| v.as_bytes().ok_or_else(|| wrong_type(field, "a string", v)))
        .transpose()
}

/// A required-to-be-text field; bytes that are not UTF-8 are replaced, not refused.
fn utf8_field(dict: &Dict<'_>, field: &'static str) -> Result<Option<String>, MetainfoError> {
    Ok(opt_bytes(dict, field)?.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// An optional descriptive field: ignored if it has the wrong type.
fn lenient_str(dict: &Dict<'_>, field: &str) -> Option<String> {
    dict.get(field.as_bytes())
        .and_then(Value::as_bytes)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn non_negative(field: &'static str, value: i64) -> Result<u64, MetainfoError> {
    u64::try_from(value).map_err(|_| MetainfoError::Negative { field, value })
}

#[cfg(test)]
mod tests;
