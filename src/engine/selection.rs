//! Which files of a torrent to download, and so which pieces are wanted. Pure: the front end
//! checks a user's selection against the torrent with [`check_selection`], the Coordinator
//! turns it into the picker's wanted pieces, and the FileWriter and FileReader ask
//! [`SelectedFiles::is_selected`] where a file's bytes go.
//!
//! Indices are those of BEP 53 (`so=`) and of `torrent-actors info`: every entry of the
//! torrent's file list in order, zero-based, BEP 47 padding files included. BEP 53 only
//! says "file indices, zero-indexed"; libtorrent (whose indices magnet links in the wild
//! are made against) counts padding files too, so an index means the same file here as
//! there. A padding file may be named in a selection but is never selected: it is never
//! written, so selecting it changes nothing.

use crate::layout::Layout;
use crate::magnet::FileSelection;
use crate::wire::Bitfield;

/// A selection that does not fit the torrent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// An index at or past the number of files.
    #[error("file index {index} is out of range: the torrent has {count} files (0 to {last}, as `info` lists them)", last = count.saturating_sub(1))]
    OutOfRange {
        /// The largest index asked for.
        index: u32,
        /// How many files the torrent has.
        count: usize,
    },
}

/// Checks that every index of `selection` names a file of `layout`.
pub fn check_selection(layout: &Layout, selection: &FileSelection) -> Result<(), SelectionError> {
    let count = layout.files().len();
    match selection.ranges().last() {
        Some(r) if *r.end() as usize >= count => Err(SelectionError::OutOfRange {
            index: *r.end(),
            count,
        }),
        _ => Ok(()),
    }
}

/// How much a file is wanted: not at all, as any other, or before the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilePriority {
    /// Not downloaded.
    Skip,
    #[default]
    Normal,
    /// Its pieces start before those of normal files.
    High,
}

impl FilePriority {
    /// The priority of a file that is `selected` or not and named high or not.
    pub fn of(selected: bool, high: bool) -> Self {
        match (selected, high) {
            (false, _) => Self::Skip,
            (true, false) => Self::Normal,
            (true, true) => Self::High,
        }
    }
}

/// Per file of a torrent: whether it is downloaded. Padding files never are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedFiles {
    /// By file index.
    selected: Vec<bool>,
}

impl SelectedFiles {
    /// The files `selection` names (every file for `None`). Indices past the last file are
    /// ignored here: the command line refuses them first with [`check_selection`], and a
    /// magnet's `so=` was written before its author could count the files.
    pub fn new(layout: &Layout, selection: Option<&FileSelection>) -> Self {
        let selected = layout
            .files()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                !f.padding
                    && selection.is_none_or(|s| u32::try_from(i).is_ok_and(|i| s.contains(i)))
            })
            .collect();
        Self { selected }
    }

    /// Whether file `file` is downloaded (false for padding files and out-of-range indices).
    pub fn is_selected(&self, file: usize) -> bool {
        self.selected.get(file).copied().unwrap_or(false)
    }

    /// Whether every file that holds data is selected: a plain download.
    pub fn is_everything(&self, layout: &Layout) -> bool {
        layout
            .files()
            .iter()
            .enumerate()
            .all(|(i, f)| f.padding || f.length == 0 || self.is_selected(i))
    }

    /// The pieces holding any byte of a selected file: the pieces to download. A piece at
    /// the border of a selected and an unselected file is wanted whole, since only whole
    /// pieces can be verified.
    pub fn wanted_pieces(&self, layout: &Layout) -> Bitfield {
        let mut wanted = Bitfield::new(layout.num_pieces());
        for (i, _) in self.selected.iter().enumerate().filter(|(_, s)| **s) {
            for piece in layout.file_pieces(i) {
                let _ = wanted.set(piece);
            }
        }
        wanted
    }

    /// The pieces holding any byte of the selected files among `files` (indices; others
    /// ignored): the pieces of high-priority files.
    pub fn pieces_of(&self, layout: &Layout, files: &[u32]) -> Bitfield {
        let mut pieces = Bitfield::new(layout.num_pieces());
        for &i in files {
            if self.is_selected(i as usize) {
                for piece in layout.file_pieces(i as usize) {
                    let _ = pieces.set(piece);
                }
            }
        }
        pieces
    }

    /// Bytes of the wanted pieces: what progress and the trackers' `left` count.
    pub fn wanted_bytes(&self, layout: &Layout) -> u64 {
        let wanted = self.wanted_pieces(layout);
        layout
            .pieces()
            .filter(|p| wanted.has(p.get()))
            .map(|p| u64::from(layout.piece_len(p)))
            .sum()
    }
}

/// The bytes of each file (by index) that lie in pieces set in `have`: a file's share of
/// the verified data. A piece spanning several files counts toward each only its overlap
/// with it, so the sum over files is exactly the verified pieces' bytes. Empty files count
/// nothing. Walks each file's pieces once: pieces plus files steps in all.
pub fn verified_bytes_per_file(layout: &Layout, have: &Bitfield) -> Vec<u64> {
    let piece_length = u64::from(layout.piece_length());
    layout
        .files()
        .iter()
        .enumerate()
        .map(|(index, file)| {
            let (start, end) = (file.offset, file.offset + file.length);
            layout
                .file_pieces(index)
                .filter(|&piece| have.has(piece))
                .map(|piece| {
                    let piece_start = u64::from(piece) * piece_length;
                    let piece_end = (piece_start + piece_length).min(layout.total_length());
                    piece_end.min(end) - piece_start.max(start)
                })
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::SafePath;

    /// Files of 40 000, 0, 30 000 bytes, a padding file, then 10 000 bytes, in 16 KiB
    /// pieces: piece 2 holds the end of `a` and the start of `c`; the padding file aligns
    /// `d` to piece 5.
    fn layout() -> Layout {
        let p = |n: &str| SafePath::new(&["t", n]).unwrap();
        Layout::new(
            16384,
            [
                (p("a"), 40_000, false),
                (p("empty"), 0, false),
                (p("c"), 30_000, false),
                (p("pad"), 5 * 16384 - 70_000, true),
                (p("d"), 10_000, false),
            ],
        )
        .unwrap()
    }

    fn pieces(b: &Bitfield) -> Vec<u32> {
        b.iter_set().collect()
    }

    #[test]
    fn every_file_is_selected_without_a_selection_except_padding() {
        let l = layout();
        let all = SelectedFiles::new(&l, None);
        assert!(all.is_everything(&l));
        assert!(!all.is_selected(3), "padding is never selected");
        assert_eq!(pieces(&all.wanted_pieces(&l)), [0, 1, 2, 3, 4, 5]);
        assert_eq!(all.wanted_bytes(&l), l.total_length());
    }

    #[test]
    fn wanted_pieces_include_the_pieces_shared_with_unselected_neighbours() {
        let l = layout();
        let sel = FileSelection::parse("0").unwrap();
        let a = SelectedFiles::new(&l, Some(&sel));
        assert!(!a.is_everything(&l));
        // `a` ends inside piece 2, which it shares with `c`.
        assert_eq!(pieces(&a.wanted_pieces(&l)), [0, 1, 2]);
        assert_eq!(a.wanted_bytes(&l), 3 * 16384);

        let sel = FileSelection::parse("2").unwrap();
        let c = SelectedFiles::new(&l, Some(&sel));
        assert_eq!(pieces(&c.wanted_pieces(&l)), [2, 3, 4]);

        // The padding file's index selects nothing; `d` is alone in the last piece.
        let sel = FileSelection::parse("3-4").unwrap();
        let d = SelectedFiles::new(&l, Some(&sel));
        assert!(!d.is_selected(3));
        assert_eq!(pieces(&d.wanted_pieces(&l)), [5]);
        assert_eq!(d.wanted_bytes(&l), 10_000);

        // An empty file has no pieces.
        let sel = FileSelection::parse("1").unwrap();
        let e = SelectedFiles::new(&l, Some(&sel));
        assert!(e.is_selected(1));
        assert!(pieces(&e.wanted_pieces(&l)).is_empty());
    }

    #[test]
    fn indices_past_the_last_file_are_refused_by_the_check() {
        let l = layout();
        assert_eq!(
            check_selection(&l, &FileSelection::parse("0,3-5").unwrap()),
            Err(SelectionError::OutOfRange { index: 5, count: 5 })
        );
        assert_eq!(
            check_selection(&l, &FileSelection::parse("0-4").unwrap()),
            Ok(())
        );
        // The engine itself ignores them.
        let sel = FileSelection::parse("4,9").unwrap();
        assert_eq!(
            pieces(&SelectedFiles::new(&l, Some(&sel)).wanted_pieces(&l)),
            [5]
        );
    }

    fn have(l: &Layout, pieces: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(l.num_pieces());
        for &p in pieces {
            b.set(p).unwrap();
        }
        b
    }

    #[test]
    fn file_progress_counts_each_file_its_overlap_with_verified_pieces() {
        let l = layout();
        // Piece 2 is split between `a` (32 768..40 000) and `c` (40 000..49 152).
        assert_eq!(
            verified_bytes_per_file(&l, &have(&l, &[1, 2, 5])),
            [16_384 + 7_232, 0, 9_152, 0, 10_000]
        );
        assert_eq!(verified_bytes_per_file(&l, &have(&l, &[])), [0, 0, 0, 0, 0]);
        // Piece 4 holds the end of `c` and the start of the padding file.
        assert_eq!(
            verified_bytes_per_file(&l, &have(&l, &[4])),
            [0, 0, 70_000 - 65_536, 81_920 - 70_000, 0]
        );
    }

    #[test]
    fn file_progress_of_every_piece_is_every_file_whole() {
        let l = layout();
        let all = Bitfield::full(l.num_pieces());
        let lengths: Vec<u64> = l.files().iter().map(|f| f.length).collect();
        assert_eq!(verified_bytes_per_file(&l, &all), lengths);
    }

    proptest::proptest! {
        #[test]
        fn file_progress_adds_up_to_the_verified_pieces(
            lengths in proptest::collection::vec(0u64..100_000, 1..8),
            piece_exp in 10u32..16,
            seed in proptest::prelude::any::<u64>(),
        ) {
            proptest::prop_assume!(lengths.iter().sum::<u64>() > 0);
            let l = Layout::new(
                1 << piece_exp,
                lengths.iter().enumerate().map(|(i, &n)| {
                    (SafePath::new(&[format!("f{i}")]).unwrap(), n, false)
                }),
            )
            .unwrap();
            let mut have = Bitfield::new(l.num_pieces());
            for p in 0..l.num_pieces() {
                if (seed >> (p % 64)) & 1 == 1 {
                    have.set(p).unwrap();
                }
            }
            let per_file = verified_bytes_per_file(&l, &have);
            let verified: u64 = l
                .pieces()
                .filter(|p| have.has(p.get()))
                .map(|p| u64::from(l.piece_len(p)))
                .sum();
            proptest::prop_assert_eq!(per_file.iter().sum::<u64>(), verified);
            for (got, file) in per_file.iter().zip(l.files()) {
                proptest::prop_assert!(*got <= file.length);
            }
        }
    }
}
