//! The swarm's content: bytes made up on demand from (seed, piece index), the `.torrent`
//! that describes them, and the check of a leecher's file against them.
//!
//! No byte of the content is ever stored. A peer serving a block generates it, the piece
//! hashes are computed once by generating every piece, and a leecher's file is checked
//! by reading it a piece at a time and comparing hashes. A 1 GiB swarm therefore costs
//! 20 bytes per piece of memory, whatever its size.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use sha1::{Digest, Sha1};

use super::prng;
use crate::bencode::BValue;

/// A torrent's worth of synthetic bytes: one file of `total_length` bytes cut into pieces
/// of `piece_length`, each piece's bytes a function of the seed and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticData {
    seed: u64,
    piece_length: u32,
    total_length: u64,
}

impl SyntheticData {
    /// The content of a swarm with this seed and shape. `piece_length` must be positive
    /// (the command line checks it, with the other limits of a torrent).
    pub fn new(seed: u64, piece_length: u32, total_length: u64) -> Self {
        Self {
            seed,
            piece_length: piece_length.max(1),
            total_length,
        }
    }

    /// The seed the bytes are drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Bytes per piece (the last piece may be shorter).
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// Bytes in all.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// How many pieces.
    pub fn num_pieces(&self) -> u32 {
        self.total_length.div_ceil(u64::from(self.piece_length)) as u32
    }

    /// The length of piece `piece`: 0 past the end.
    pub fn piece_len(&self, piece: u32) -> u32 {
        let start = u64::from(piece) * u64::from(self.piece_length);
        self.total_length
            .saturating_sub(start)
            .min(u64::from(self.piece_length)) as u32
    }

    /// Fills `buf` with the bytes of `piece` that start at `offset`. Each piece is its
    /// own SplitMix64 stream, read at the 8-byte word where `offset` falls, so any block
    /// costs only its own length to make.
    pub fn fill(&self, piece: u32, offset: u32, buf: &mut [u8]) {
        let stream = prng::key(&[self.seed, u64::from(piece)]);
        let mut word_index = u64::from(offset / 8);
        let skip = (offset % 8) as usize;
        let mut at = 0;
        let first = prng::nth(stream, word_index).to_le_bytes();
        let take = (8 - skip).min(buf.len());
        buf[..take].copy_from_slice(&first[skip..skip + take]);
        at += take;
        while at < buf.len() {
            word_index += 1;
            let word = prng::nth(stream, word_index).to_le_bytes();
            let take = 8.min(buf.len() - at);
            buf[at..at + take].copy_from_slice(&word[..take]);
            at += take;
        }
    }

    /// The whole of piece `piece`.
    pub fn piece(&self, piece: u32) -> Vec<u8> {
        let mut buf = vec![0; self.piece_len(piece) as usize];
        self.fill(piece, 0, &mut buf);
        buf
    }

    /// SHA-1 of every piece, made on `threads` threads (each generating and hashing one
    /// piece at a time, so memory stays at a piece per thread).
    pub fn piece_hashes(&self, threads: usize) -> Vec<[u8; 20]> {
        let n = self.num_pieces();
        let next = AtomicU32::new(0);
        let mut hashes = vec![[0u8; 20]; n as usize];
        let results: Vec<Vec<(u32, [u8; 20])>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        let mut buf = vec![0u8; self.piece_length as usize];
                        loop {
                            let piece = next.fetch_add(1, Ordering::Relaxed);
                            if piece >= n {
                                return done;
                            }
                            let len = self.piece_len(piece) as usize;
                            self.fill(piece, 0, &mut buf[..len]);
                            done.push((piece, Sha1::digest(&buf[..len]).into()));
                        }
                    })
                })
                .collect();
            // A worker only panics on a bug here; losing its pieces would show as a
            // wrong torrent, so the panic is passed on instead.
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for (piece, hash) in results.into_iter().flatten() {
            hashes[piece as usize] = hash;
        }
        hashes
    }

    /// The name of the swarm's one file, telling its seed and size.
    pub fn file_name(&self) -> String {
        format!("swarm-seed{}-{}.bin", self.seed, self.total_length)
    }

    /// The `.torrent` of this content: one file, no tracker (the leechers are given
    /// their peers), no creation date, so the same seed and shape always give the same
    /// bytes and the same info-hash.
    pub fn torrent(&self, hashes: &[[u8; 20]]) -> Vec<u8> {
        let pieces: Vec<u8> = hashes.iter().flatten().copied().collect();
        let info = BValue::dict([
            ("length", BValue::Int(self.total_length as i64)),
            ("name", BValue::string(&self.file_name())),
            ("piece length", BValue::Int(i64::from(self.piece_length))),
            ("pieces", BValue::Bytes(pieces)),
        ]);
        BValue::dict([
            ("created by", BValue::string("torrent-actors swarm")),
            ("info", info),
        ])
        .encode()
    }
}

/// What a check of a leecher's file found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileCheck {
    /// Pieces whose hash matched.
    pub good_pieces: u32,
    /// Pieces whose hash did not match, or that the file was too short to hold (at most
    /// the first 20 are listed).
    pub bad_pieces: Vec<u32>,
    /// How many pieces were bad in all.
    pub bad_count: u32,
    /// The file's length, if it could be opened.
    pub length: Option<u64>,
    /// Why the file could not be read, if it could not.
    pub error: Option<String>,
}

impl FileCheck {
    /// Whether every piece is right and the file has exactly the torrent's length.
    pub fn is_right(&self, data: &SyntheticData) -> bool {
        self.error.is_none()
            && self.bad_count == 0
            && self.good_pieces == data.num_pieces()
            && self.length == Some(data.total_length())
    }
}

/// Reads the file at `path` a piece at a time and compares each piece's SHA-1 with
/// `hashes`. Memory is one piece, whatever the file's size.
pub fn check_file(path: &Path, data: &SyntheticData, hashes: &[[u8; 20]]) -> FileCheck {
    let mut check = FileCheck {
        good_pieces: 0,
        bad_pieces: Vec::new(),
        bad_count: 0,
        length: None,
        error: None,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => {
            check.error = Some(format!("cannot open {}: {e}", path.display()));
            return check;
        }
    };
    check.length = file.metadata().ok().map(|m| m.len());
    let mut buf = vec![0u8; data.piece_length() as usize];
    for piece in 0..data.num_pieces() {
        let len = data.piece_len(piece) as usize;
        let right = match file.read_exact(&mut buf[..len]) {
            Ok(()) => hashes
                .get(piece as usize)
                .is_some_and(|h| Sha1::digest(&buf[..len]).as_slice() == h),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => {
                check.error = Some(format!("cannot read {}: {e}", path.display()));
                return check;
            }
        };
        if right {
            check.good_pieces += 1;
        } else {
            check.bad_count += 1;
            if check.bad_pieces.len() < 20 {
                check.bad_pieces.push(piece);
            }
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Metainfo;

    #[test]
    fn a_block_is_the_same_bytes_as_that_part_of_its_piece() {
        let data = SyntheticData::new(9, 64 * 1024 + 5, 300_000);
        for piece in 0..data.num_pieces() {
            let whole = data.piece(piece);
            for (offset, len) in [(0, 16384), (3, 100), (16384, 16384), (7, 1), (8, 9)] {
                let end = (offset + len).min(whole.len());
                let mut block = vec![0u8; end - offset];
                data.fill(piece, offset as u32, &mut block);
                assert_eq!(block, whole[offset..end], "piece {piece} at {offset}");
            }
        }
    }

    #[test]
    fn pieces_differ_by_index_and_by_seed() {
        let a = SyntheticData::new(1, 1024, 4096);
        let b = SyntheticData::new(2, 1024, 4096);
        assert_ne!(a.piece(0), a.piece(1));
        assert_ne!(a.piece(0), b.piece(0));
        assert_eq!(a.piece(3), SyntheticData::new(1, 1024, 4096).piece(3));
    }

    #[test]
    fn the_last_piece_is_short_and_counts_add_up() {
        let data = SyntheticData::new(1, 1000, 2500);
        assert_eq!(data.num_pieces(), 3);
        assert_eq!(data.piece_len(2), 500);
        assert_eq!(data.piece_len(3), 0);
    }

    #[test]
    fn the_torrent_parses_and_its_hashes_match_the_pieces() {
        let data = SyntheticData::new(5, 16384, 100_000);
        let hashes = data.piece_hashes(3);
        let torrent = data.torrent(&hashes);
        let meta = Metainfo::from_bytes(&torrent).expect("our own torrent is valid");
        assert_eq!(meta.info.layout.total_length(), 100_000);
        assert_eq!(meta.info.layout.num_pieces(), data.num_pieces());
        for piece in 0..data.num_pieces() {
            let want: [u8; 20] = Sha1::digest(data.piece(piece)).into();
            assert_eq!(hashes[piece as usize], want);
        }
        // The same seed and shape give the same torrent, so the same info-hash.
        let again = Metainfo::from_bytes(&data.torrent(&data.piece_hashes(1))).unwrap();
        assert_eq!(again.info_hash, meta.info_hash);
    }

    #[test]
    fn a_file_check_finds_right_short_and_spoiled_files() {
        let data = SyntheticData::new(3, 4096, 10_000);
        let hashes = data.piece_hashes(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..data.num_pieces()).flat_map(|p| data.piece(p)).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert!(check_file(&path, &data, &hashes).is_right(&data));

        let mut spoiled = bytes.clone();
        spoiled[5000] ^= 1;
        std::fs::write(&path, &spoiled).unwrap();
        let check = check_file(&path, &data, &hashes);
        assert_eq!((check.bad_pieces.clone(), check.good_pieces), (vec![1], 2));
        assert!(!check.is_right(&data));

        std::fs::write(&path, &bytes[..9000]).unwrap();
        let check = check_file(&path, &data, &hashes);
        assert_eq!(check.bad_pieces, vec![2]);

        let missing = check_file(&dir.path().join("none"), &data, &hashes);
        assert!(missing.error.is_some() && !missing.is_right(&data));
    }
}
