//! The part file's format: where the bytes of unselected files go when a wanted piece
//! holds some of them. Pure arithmetic and header encoding; `storage.rs` does the I/O.
//!
//! A piece at the border between a selected file and an unselected one must be downloaded
//! whole to be verified, but the unselected file must not be created. Its bytes of that
//! piece are kept in one hidden file beside the resume file, `.NAME.parts`, so the piece
//! can still be read back to seed it and hashed again at the next start.
//!
//! Format, all integers big-endian:
//!
//! ```text
//! 0    8 bytes  magic "TAPARTS1"
//! 8    u32      piece length
//! 12   u32      piece count
//! 16   u32      slot count
//! 20   u64      total length of the torrent
//! 28   ...      zeros up to HEADER_LEN (4096), so slots start on a page boundary
//! HEADER_LEN + k * piece_length: slot k, one piece's bytes at their offsets in the piece
//! ```
//!
//! Slot `k` belongs to the `k`-th *shared piece*: a piece touching two or more non-empty,
//! non-padding files (see [`PartSlots::new`]). Only those pieces can ever hold bytes of
//! both a selected and an unselected file, whatever the selection, so the slot map follows
//! from the torrent alone. That is why the file needs no index: there is nothing to read
//! from it but the fixed header, which is checked against the torrent (a foreign or
//! damaged part file is ignored and replaced), and changing the selection between runs
//! never moves a slot. A slot holds only the bytes of files that were absent when the
//! piece was written; the rest of it stays a hole (the file is sparse). There are at most
//! as many shared pieces as files, so for ordinary torrents the file is small; for a
//! torrent of many tiny files its apparent size can approach the torrent's, but only
//! written slots take disk space.

use crate::layout::{Layout, PieceIndex};

/// Bytes before slot 0.
pub const HEADER_LEN: u64 = 4096;

/// The header's magic, with the format version in its last byte.
pub const MAGIC: &[u8; 8] = b"TAPARTS1";

/// Bytes of the header that carry information; the rest is zeros.
pub const HEADER_USED: usize = 28;

/// Why a part file's header was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsHeaderError {
    /// Fewer bytes than a header.
    #[error("part file header is truncated ({0} bytes)")]
    Truncated(usize),
    /// Not our magic, or another version.
    #[error("part file has an unknown format")]
    Magic,
    /// Made for a torrent of another shape.
    #[error("part file belongs to another torrent ({0} differs)")]
    Mismatch(&'static str),
}

/// The slots of a torrent's part file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSlots {
    /// The shared pieces, ascending; slot `k` belongs to `shared[k]`.
    shared: Vec<u32>,
    /// Bytes per slot: the piece length.
    piece_length: u32,
    /// Piece count, for the header.
    num_pieces: u32,
    /// Torrent length, for the header.
    total_length: u64,
}

impl PartSlots {
    /// The slot map of `layout`: a piece is shared when two consecutive non-empty,
    /// non-padding files both touch it. Files are in stream order, so any two files that
    /// touch one piece have every file between them inside that piece too, and checking
    /// consecutive pairs finds every shared piece.
    pub fn new(layout: &Layout) -> Self {
        let mut shared: Vec<u32> = Vec::new();
        let mut previous_last: Option<u32> = None;
        for (i, f) in layout.files().iter().enumerate() {
            if f.padding || f.length == 0 {
                continue;
            }
            let pieces = layout.file_pieces(i);
            if previous_last == Some(pieces.start) && shared.last() != Some(&pieces.start) {
                shared.push(pieces.start);
            }
            previous_last = pieces.end.checked_sub(1);
        }
        Self {
            shared,
            piece_length: layout.piece_length(),
            num_pieces: layout.num_pieces(),
            total_length: layout.total_length(),
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// Whether the torrent has no shared piece (one file, or files aligned by padding).
    pub fn is_empty(&self) -> bool {
        self.shared.is_empty()
    }

    /// Where `piece`'s slot starts in the part file, if it is a shared piece.
    pub fn slot_offset(&self, piece: PieceIndex) -> Option<u64> {
        let k = self.shared.binary_search(&piece.get()).ok()?;
        Some(HEADER_LEN + k as u64 * u64::from(self.piece_length))
    }

    /// The header of a part file for this torrent.
    pub fn header(&self) -> [u8; HEADER_USED] {
        let mut h = [0u8; HEADER_USED];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.piece_length.to_be_bytes());
        h[12..16].copy_from_slice(&self.num_pieces.to_be_bytes());
        h[16..20].copy_from_slice(&(self.shared.len() as u32).to_be_bytes());
        h[20..28].copy_from_slice(&self.total_length.to_be_bytes());
        h
    }

    /// Checks the first bytes of an existing part file (untrusted: any bytes may be there)
    /// against this torrent. Only [`HEADER_USED`] bytes are looked at.
    pub fn check_header(&self, bytes: &[u8]) -> Result<(), PartsHeaderError> {
        let Some(h) = bytes.get(..HEADER_USED) else {
            return Err(PartsHeaderError::Truncated(bytes.len()));
        };
        if &h[0..8] != MAGIC {
            return Err(PartsHeaderError::Magic);
        }
        let expected = self.header();
        for (range, what) in [
            (8..12, "piece length"),
            (12..16, "piece count"),
            (16..20, "slot count"),
            (20..28, "total length"),
        ] {
            if h[range.clone()] != expected[range] {
                return Err(PartsHeaderError::Mismatch(what));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::SafePath;
    use proptest::prelude::*;

    fn layout(files: &[(u64, bool)], piece_length: u64) -> Layout {
        Layout::new(
            piece_length,
            files.iter().enumerate().map(|(i, &(len, pad))| {
                (SafePath::new(&["t", &format!("f{i}")]).unwrap(), len, pad)
            }),
        )
        .unwrap()
    }

    #[test]
    fn shared_pieces_are_those_holding_two_real_files() {
        // 100-byte pieces: a = 0..150, empty, b = 150..170, padding 170..200, c = 200..450,
        // d = 450..460.
        let l = layout(
            &[
                (150, false),
                (0, false),
                (20, false),
                (30, true),
                (250, false),
                (10, false),
            ],
            100,
        );
        let slots = PartSlots::new(&l);
        // Piece 1 holds a and b; piece 2 holds only c (the padding aligned it); piece 4
        // holds c and d.
        assert_eq!(slots.shared, [1, 4]);
        assert_eq!(slots.slot_offset(l.piece(1).unwrap()), Some(HEADER_LEN));
        assert_eq!(
            slots.slot_offset(l.piece(4).unwrap()),
            Some(HEADER_LEN + 100)
        );
        assert_eq!(slots.slot_offset(l.piece(2).unwrap()), None);
        assert!(PartSlots::new(&layout(&[(1000, false)], 100)).is_empty());
    }

    #[test]
    fn a_header_is_accepted_only_for_its_own_torrent() {
        let l = layout(&[(150, false), (250, false)], 100);
        let slots = PartSlots::new(&l);
        let mut file = slots.header().to_vec();
        file.resize(HEADER_LEN as usize, 0);
        assert_eq!(slots.check_header(&file), Ok(()));
        assert_eq!(
            slots.check_header(&file[..10]),
            Err(PartsHeaderError::Truncated(10))
        );
        let mut other = file.clone();
        other[7] = b'9';
        assert_eq!(slots.check_header(&other), Err(PartsHeaderError::Magic));
        let shorter = PartSlots::new(&layout(&[(150, false), (249, false)], 100));
        assert_eq!(
            shorter.check_header(&file),
            Err(PartsHeaderError::Mismatch("total length"))
        );
        let finer = PartSlots::new(&layout(&[(150, false), (250, false)], 50));
        assert_eq!(
            finer.check_header(&file),
            Err(PartsHeaderError::Mismatch("piece length"))
        );
    }

    proptest! {
        /// The slot map is exactly the pieces whose spans name two or more real files.
        #[test]
        fn shared_pieces_match_the_spans(
            files in proptest::collection::vec((0u64..400, any::<bool>()), 1..12),
            piece_length in 1u64..200,
            header in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assume!(files.iter().map(|f| f.0).sum::<u64>() > 0);
            let l = layout(&files, piece_length);
            let slots = PartSlots::new(&l);
            let expected: Vec<u32> = l
                .pieces()
                .filter(|&p| {
                    l.piece_spans(p)
                        .iter()
                        .filter(|s| !l.files()[s.file].padding)
                        .count()
                        >= 2
                })
                .map(|p| p.get())
                .collect();
            prop_assert_eq!(&slots.shared, &expected);
            // Arbitrary bytes never panic the header check.
            let _ = slots.check_header(&header);
        }
    }
}
