//! Where each byte of a torrent lives: pieces, blocks and file spans, as pure arithmetic.
//!
//! A torrent is one byte stream cut two ways: into pieces of `piece_length` (the last one
//! shorter) and into files laid end to end (some empty). This module maps between the two.
//! It owns no I/O; the file writer and the piece picker call it. A [`Layout`] is made only
//! by metainfo validation, and [`PieceIndex`] only by a [`Layout`], so the engine never
//! has to check a piece number again.

use std::ops::Range;

use crate::metainfo::SafePath;

/// The size of a block, the unit of `request` and `piece` messages: 16 KiB, what every
/// client asks for and most refuse to exceed.
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// A piece number that is known to be in range for the torrent whose [`Layout`] made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceIndex(u32);

impl PieceIndex {
    /// The number as sent on the wire.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The number as an index into per-piece tables.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One file of the torrent and its place in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Where the file goes, relative to the download folder; includes the torrent's
    /// folder name for multi-file torrents.
    pub path: SafePath,
    /// Its size in bytes.
    pub length: u64,
    /// Where its first byte sits in the torrent's byte stream.
    pub offset: u64,
    /// A BEP 47 padding file: part of the stream (all zeros) but never written to disk.
    pub padding: bool,
}

/// A run of bytes that belongs to one file: where it is in the file and in the piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpan {
    /// Index into [`Layout::files`].
    pub file: usize,
    /// Offset inside that file.
    pub file_offset: u64,
    /// Offset inside the piece (or the range asked for).
    pub piece_offset: u32,
    /// Number of bytes, never zero.
    pub len: u32,
}

/// Why a layout cannot be made; metainfo turns these into its own errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The piece length is zero or too large.
    #[error("piece length {0} is outside 1 byte to 512 MiB")]
    BadPieceLength(u64),
    /// The files add up to more than a u64 can count.
    #[error("file lengths overflow when added up")]
    LengthOverflow,
    /// There is nothing to download.
    #[error("torrent has no data (total length is 0)")]
    Empty,
    /// More pieces than a 32-bit piece number can name.
    #[error("{0} pieces is more than the protocol can number")]
    TooManyPieces(u64),
}

/// The largest piece length accepted, as in libtorrent.
pub const MAX_PIECE_LENGTH: u64 = 512 * 1024 * 1024;

/// Pieces and files of one torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per piece, except the last.
    piece_length: u32,
    /// Sum of all file lengths.
    total_length: u64,
    /// `ceil(total_length / piece_length)`.
    num_pieces: u32,
    /// Files in stream order, offsets increasing.
    files: Vec<FileEntry>,
}

impl Layout {
    /// Lays `files` (path, length, padding) end to end and cuts the stream into pieces.
    pub fn new(
        piece_length: u64,
        files: impl IntoIterator<Item = (SafePath, u64, bool)>,
    ) -> Result<Self, LayoutError> {
        if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
            return Err(LayoutError::BadPieceLength(piece_length));
        }
        let mut offset: u64 = 0;
        let mut entries = Vec::new();
        for (path, length, padding) in files {
            entries.push(FileEntry {
                path,
                length,
                offset,
                padding,
            });
            offset = offset
                .checked_add(length)
                .ok_or(LayoutError::LengthOverflow)?;
        }
        if offset == 0 {
            return Err(LayoutError::Empty);
        }
        let pieces = offset.div_ceil(piece_length);
        let num_pieces = u32::try_from(pieces).map_err(|_| LayoutError::TooManyPieces(pieces))?;
        Ok(Self {
            piece_length: piece_length as u32,
            total_length: offset,
            num_pieces,
            files: entries,
        })
    }

    /// Bytes per piece, except the last.
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// Sum of all file lengths.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// Number of pieces.
    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// The files, in stream order.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// The piece number `n`, if the torrent has that many pieces. This is how a number
    /// from a peer becomes a [`PieceIndex`].
    pub fn piece(&self, n: u32) -> Option<PieceIndex> {
        (n < self.num_pieces).then_some(PieceIndex(n))
    }

    /// Every piece, in order.
    pub fn pieces(&self) -> impl Iterator<Item = PieceIndex> {
        (0..self.num_pieces).map(PieceIndex)
    }

    /// The length of a piece: `piece_length`, or less for the last one.
    pub fn piece_len(&self, piece: PieceIndex) -> u32 {
        let start = self.piece_offset(piece);
        let len = (self.total_length - start).min(u64::from(self.piece_length));
        len as u32
    }

    /// Where a piece starts in the byte stream.
    pub fn piece_offset(&self, piece: PieceIndex) -> u64 {
        u64::from(piece.0) * u64::from(self.piece_length)
    }

    /// The blocks of a piece as (offset, length): 16 KiB each, the last one shorter.
    pub fn blocks(&self, piece: PieceIndex) -> impl Iterator<Item = (u32, u32)> {
        let len = self.piece_len(piece);
        (0..len.div_ceil(BLOCK_SIZE)).map(move |i| {
            let offset = i * BLOCK_SIZE;
            (offset, (len - offset).min(BLOCK_SIZE))
        })
    }

    /// Number of blocks in a piece.
    pub fn num_blocks(&self, piece: PieceIndex) -> u32 {
        self.piece_len(piece).div_ceil(BLOCK_SIZE)
    }

    /// Whether `(offset, len)` is a well-formed block request inside `piece`: non-empty,
    /// at most [`BLOCK_SIZE`], and not past the piece's end.
    pub fn is_valid_block(&self, piece: PieceIndex, offset: u32, len: u32) -> bool {
        len > 0
            && len <= BLOCK_SIZE
            && u64::from(offset) + u64::from(len) <= u64::from(self.piece_len(piece))
    }

    /// The file spans that hold the whole of `piece`, in order, skipping empty files.
    pub fn piece_spans(&self, piece: PieceIndex) -> Vec<FileSpan> {
        self.spans(self.piece_offset(piece), self.piece_len(piece))
    }

    /// The file spans holding `len` bytes from stream offset `start`, in order, skipping
    /// empty files. `piece_offset` in each span counts from `start`. Bytes past the end of
    /// the torrent are not covered.
    pub fn spans(&self, start: u64, len: u32) -> Vec<FileSpan> {
        let end = start.saturating_add(u64::from(len)).min(self.total_length);
        let mut spans = Vec::new();
        // The first file whose end is past `start`; files are sorted by offset.
        let first = self.files.partition_point(|f| f.offset + f.length <= start);
        for (index, file) in self.files.iter().enumerate().skip(first) {
            if file.offset >= end {
                break;
            }
            if file.length == 0 {
                continue;
            }
            let from = start.max(file.offset);
            let to = end.min(file.offset + file.length);
            spans.push(FileSpan {
                file: index,
                file_offset: from - file.offset,
                piece_offset: (from - start) as u32,
                len: (to - from) as u32,
            });
        }
        spans
    }

    /// The pieces that hold any byte of file `file` (empty for an empty file or an index
    /// out of range). For downloading only some files.
    pub fn file_pieces(&self, file: usize) -> Range<u32> {
        match self.files.get(file) {
            Some(f) if f.length > 0 => {
                let pl = u64::from(self.piece_length);
                let first = f.offset / pl;
                let last = (f.offset + f.length - 1) / pl;
                first as u32..last as u32 + 1
            }
            _ => 0..0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(piece_length: u64, lengths: &[u64]) -> Layout {
        Layout::new(
            piece_length,
            lengths
                .iter()
                .enumerate()
                .map(|(i, &len)| (SafePath::new(&[format!("f{i}")]).unwrap(), len, false)),
        )
        .unwrap()
    }

    #[test]
    fn last_piece_is_shorter_and_blocks_cover_it() {
        let l = layout(32 * 1024, &[70_000]);
        assert_eq!(l.num_pieces(), 3);
        let last = l.piece(2).unwrap();
        assert_eq!(l.piece_len(last), 70_000 - 65_536);
        assert_eq!(l.blocks(last).collect::<Vec<_>>(), [(0, 4464)]);
        assert_eq!(
            l.blocks(l.piece(0).unwrap()).collect::<Vec<_>>(),
            [(0, BLOCK_SIZE), (BLOCK_SIZE, BLOCK_SIZE)]
        );
        assert!(l.piece(3).is_none());
    }

    #[test]
    fn piece_spanning_several_files_skips_empty_ones() {
        // Files: 10 bytes, empty, 3 bytes, empty, 20 bytes; pieces of 16.
        let l = layout(16, &[10, 0, 3, 0, 20]);
        let spans = l.piece_spans(l.piece(0).unwrap());
        assert_eq!(
            spans,
            [
                FileSpan {
                    file: 0,
                    file_offset: 0,
                    piece_offset: 0,
                    len: 10
                },
                FileSpan {
                    file: 2,
                    file_offset: 0,
                    piece_offset: 10,
                    len: 3
                },
                FileSpan {
                    file: 4,
                    file_offset: 0,
                    piece_offset: 13,
                    len: 3
                },
            ]
        );
        assert_eq!(
            l.piece_spans(l.piece(1).unwrap()),
            [FileSpan {
                file: 4,
                file_offset: 3,
                piece_offset: 0,
                len: 16
            }]
        );
        assert_eq!(l.file_pieces(1), 0..0);
        assert_eq!(l.file_pieces(4), 0..3);
        assert_eq!(l.file_pieces(99), 0..0);
    }

    #[test]
    fn invalid_layouts_are_refused() {
        let p = || SafePath::new(&["a"]).unwrap();
        assert_eq!(
            Layout::new(0, [(p(), 1, false)]),
            Err(LayoutError::BadPieceLength(0))
        );
        assert_eq!(
            Layout::new(MAX_PIECE_LENGTH + 1, [(p(), 1, false)]),
            Err(LayoutError::BadPieceLength(MAX_PIECE_LENGTH + 1))
        );
        assert_eq!(Layout::new(16, [(p(), 0, false)]), Err(LayoutError::Empty));
        assert_eq!(
            Layout::new(16, [(p(), u64::MAX, false), (p(), 1, false)]),
            Err(LayoutError::LengthOverflow)
        );
        assert_eq!(
            Layout::new(1, [(p(), 1 << 40, false)]),
            Err(LayoutError::TooManyPieces(1 << 40))
        );
    }

    #[test]
    fn block_validity_follows_the_piece_end() {
        let l = layout(32 * 1024, &[40_000]);
        let last = l.piece(1).unwrap();
        assert!(l.is_valid_block(last, 0, 40_000 - 32_768));
        assert!(!l.is_valid_block(last, 0, 40_000 - 32_768 + 1));
        assert!(!l.is_valid_block(last, 0, 0));
        assert!(!l.is_valid_block(l.piece(0).unwrap(), 0, BLOCK_SIZE + 1));
        assert!(!l.is_valid_block(l.piece(0).unwrap(), u32::MAX, 1));
    }

    proptest! {
        /// Every byte of every piece lands in exactly one file, at the right place, and
        /// the spans of all pieces together cover every file exactly once.
        #[test]
        fn piece_spans_tile_the_files_exactly(
            piece_length in 1u64..70_000,
            lengths in proptest::collection::vec(prop_oneof![Just(0u64), 1u64..100_000], 1..8),
        ) {
            prop_assume!(lengths.iter().sum::<u64>() > 0);
            let l = layout(piece_length, &lengths);
            let mut covered = vec![0u64; lengths.len()];
            let mut next_stream_offset = 0u64;
            for piece in l.pieces() {
                let mut next_in_piece = 0u32;
                for s in l.piece_spans(piece) {
                    prop_assert!(s.len > 0);
                    prop_assert_eq!(s.piece_offset, next_in_piece);
                    let f = &l.files()[s.file];
                    prop_assert_eq!(f.offset + s.file_offset, next_stream_offset);
                    prop_assert!(s.file_offset + u64::from(s.len) <= f.length);
                    covered[s.file] += u64::from(s.len);
                    next_in_piece += s.len;
                    next_stream_offset += u64::from(s.len);
                }
                prop_assert_eq!(next_in_piece, l.piece_len(piece));
            }
            prop_assert_eq!(covered, lengths.clone());
            prop_assert_eq!(next_stream_offset, l.total_length());
        }

        #[test]
        fn file_pieces_are_exactly_the_pieces_touching_the_file(
            piece_length in 1u64..5_000,
            lengths in proptest::collection::vec(0u64..20_000, 1..6),
        ) {
            prop_assume!(lengths.iter().sum::<u64>() > 0);
            let l = layout(piece_length, &lengths);
            for file in 0..lengths.len() {
                let expected: Vec<u32> = l.pieces()
                    .filter(|&p| l.piece_spans(p).iter().any(|s| s.file == file))
                    .map(PieceIndex::get)
                    .collect();
                prop_assert_eq!(l.file_pieces(file).collect::<Vec<_>>(), expected);
            }
        }

        #[test]
        fn blocks_tile_each_piece(piece_length in 1u64..200_000, total in 1u64..1_000_000) {
            let l = layout(piece_length, &[total]);
            for piece in l.pieces() {
                let mut next = 0;
                for (offset, len) in l.blocks(piece) {
                    prop_assert_eq!(offset, next);
                    prop_assert!(len > 0 && len <= BLOCK_SIZE);
                    prop_assert!(l.is_valid_block(piece, offset, len));
                    next += len;
                }
                prop_assert_eq!(next, l.piece_len(piece));
                prop_assert_eq!(l.num_blocks(piece) as usize, l.blocks(piece).count());
            }
        }
    }
}
