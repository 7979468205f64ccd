//! The resume file: which pieces were verified, and what the files looked like when that
//! was recorded. JSON, so a user can read it. Pure: the FileWriter reads and writes the
//! bytes; this module turns them into a decision about what to trust.
//!
//! Trust is earned per file: a verified piece is taken as verified again only if every
//! file it touches has the size and modification time the resume file recorded. Anything
//! else that could hold data (a file that existed before this run) is hashed again, so a
//! crash after a write but before the next resume save loses no verified data, and a file
//! changed or truncated between runs is never trusted.
//!
//! The file carries a checksum of its own contents, so a file damaged on disk or edited
//! by hand (valid JSON claiming pieces that were never written, say) is refused as a
//! whole, with a warning, and every piece is checked: the checksum is what keeps the
//! per-file trust above from ever being extended to a record we did not write.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::parts::PartSlots;
use crate::layout::{Layout, PieceIndex};
use crate::wire::Bitfield;
use crate::InfoHash;

/// The format version; a file with another version is ignored with a warning. Version 2
/// added the checksum.
pub const RESUME_VERSION: u32 = 2;

/// A file's size and modification time, as the resume file records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size in bytes; `None` when the file did not exist (or is a padding file).
    pub size: Option<u64>,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: Option<u128>,
}

/// The resume file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeData {
    /// [`RESUME_VERSION`].
    pub version: u32,
    /// Hex info-hash: a resume file of another torrent is ignored.
    pub info_hash: String,
    /// Piece length, as a cross-check.
    pub piece_length: u32,
    /// Piece count, as a cross-check.
    pub num_pieces: u32,
    /// Verified pieces as inclusive `[first, last]` ranges, readable and compact.
    pub verified: Vec<[u32; 2]>,
    /// One record per file of the torrent, in order.
    pub files: Vec<FileRecord>,
    /// The part file (`.NAME.parts`, bytes of unselected files in shared pieces), if there
    /// was one. Absent from files written before file selection existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<FileRecord>,
    /// Hex SHA-1 of the record's compact JSON with this field empty. Filled in by
    /// [`ResumeData::to_json`], checked and cleared by [`ResumeData::parse`]: in memory
    /// it is always empty.
    #[serde(default)]
    checksum: String,
}

/// Why a resume file was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// Not JSON of the expected shape.
    #[error("resume file is not readable: {0}")]
    Malformed(String),
    /// Another format version.
    #[error("resume file has version {0}, expected {RESUME_VERSION}")]
    Version(u32),
    /// It belongs to another torrent, or its shape does not match this one.
    #[error("resume file does not match this torrent ({0})")]
    Mismatch(&'static str),
    /// Its contents do not match its checksum: damaged on disk, or edited.
    #[error("resume file is damaged or was edited (its checksum does not match)")]
    Checksum,
}

impl ResumeData {
    /// A record of `verified` for the torrent; the FileWriter fills in `files`.
    pub fn new(info_hash: InfoHash, layout: &Layout, verified: &Bitfield) -> Self {
        let mut ranges: Vec<[u32; 2]> = Vec::new();
        for i in verified.iter_set() {
            match ranges.last_mut() {
                Some(last) if last[1] + 1 == i => last[1] = i,
                _ => ranges.push([i, i]),
            }
        }
        Self {
            version: RESUME_VERSION,
            info_hash: info_hash.to_hex(),
            piece_length: layout.piece_length(),
            num_pieces: layout.num_pieces(),
            verified: ranges,
            files: Vec::new(),
            parts: None,
            checksum: String::new(),
        }
    }

    /// The JSON bytes, with the checksum.
    pub fn to_json(&self) -> Vec<u8> {
        let mut sealed = self.clone();
        sealed.checksum = self.digest();
        // Serialising plain numbers and strings cannot fail.
        serde_json::to_vec_pretty(&sealed).unwrap_or_default()
    }

    /// The checksum of this record: SHA-1 over its compact JSON with the checksum empty.
    /// Whitespace and key order in the file do not matter; every value does.
    fn digest(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.checksum.clear();
        let json = serde_json::to_vec(&unsealed).unwrap_or_default();
        let sha: [u8; 20] = Sha1::digest(&json).into();
        sha.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses and checks a resume file against the torrent it should belong to.
    pub fn parse(bytes: &[u8], info_hash: InfoHash, layout: &Layout) -> Result<Self, ResumeError> {
        let mut data: ResumeData =
            serde_json::from_slice(bytes).map_err(|e| ResumeError::Malformed(e.to_string()))?;
        if data.version != RESUME_VERSION {
            return Err(ResumeError::Version(data.version));
        }
        if data.checksum != data.digest() {
            return Err(ResumeError::Checksum);
        }
        data.checksum.clear();
        if data.info_hash != info_hash.to_hex() {
            return Err(ResumeError::Mismatch("info-hash"));
        }
        if data.piece_length != layout.piece_length() || data.num_pieces != layout.num_pieces() {
            return Err(ResumeError::Mismatch("piece layout"));
        }
        if data.files.len() != layout.files().len() {
            return Err(ResumeError::Mismatch("file count"));
        }
        if data
            .verified
            .iter()
            .any(|[a, b]| a > b || *b >= layout.num_pieces())
        {
            return Err(ResumeError::Mismatch("piece range"));
        }
        // Ascending and disjoint, as `new` writes them: the claims then add up to at most
        // the piece count, so reading them costs one pass over the pieces, however many
        // ranges the file repeats.
        if data.verified.windows(2).any(|w| w[1][0] <= w[0][1]) {
            return Err(ResumeError::Malformed(
                "verified piece ranges overlap or are out of order".into(),
            ));
        }
        Ok(data)
    }

    /// The verified pieces as a bitfield.
    pub fn verified_bitfield(&self) -> Bitfield {
        let mut b = Bitfield::new(self.num_pieces);
        for &[first, last] in &self.verified {
            for i in first..=last {
                let _ = b.set(i);
            }
        }
        b
    }
}

/// An upper bound on the length of this torrent's resume file, whatever is verified: at
/// most every other piece verified (one range per two pieces) and the largest numbers in
/// every field. The FileWriter sets this much disk space aside for the next save.
pub fn json_size_bound(layout: &Layout) -> u64 {
    // A pretty-printed range of two ten-digit numbers takes 48 bytes (24 per piece; 32
    // leaves room), a file record under 128; the other fields, the part file's record
    // and the checksum fit in 4 KiB.
    4096 + 128 * layout.files().len() as u64 + 32 * u64::from(layout.num_pieces())
}

/// What to do with existing data at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    /// Pieces taken as verified without hashing.
    pub trusted: Bitfield,
    /// Pieces to hash, because a file they touch existed before this run.
    pub check: Vec<PieceIndex>,
}

/// Decides which pieces to trust and which to hash, from the resume file (if it parsed),
/// what each file looked like before this run (`before`, from `OpenStorage`) and the
/// part file before this run (`parts_before`, `None` if absent or not ours).
///
/// Where a byte lives follows from the files on disk, not from the selection: a span of
/// a file that exists is in that file; a span of a file that did not exist is in the part
/// file's slot of its piece (a shared piece), or, if the file has just been selected,
/// was copied from that slot into the new file by `OpenStorage`. So a claimed piece is
/// trusted when, for each file it touches, either that file is unchanged since the save,
/// or the file was absent then and now, the piece has a slot, and the part file is
/// unchanged since the save.
pub fn plan_start(
    layout: &Layout,
    resume: Option<&ResumeData>,
    before: &[FileRecord],
    parts_before: Option<&FileRecord>,
) -> StartPlan {
    let files = layout.files();
    let slots = PartSlots::new(layout);
    let absent = |f: usize| before.get(f).is_none_or(|r| r.size.is_none());
    let existed = |f: usize| before.get(f).and_then(|r| r.size).is_some_and(|s| s > 0);
    let parts_unchanged =
        parts_before.is_some_and(|now| resume.is_some_and(|r| r.parts.as_ref() == Some(now)));
    let unchanged = |f: usize, in_slot: bool| {
        files.get(f).is_some_and(|e| e.padding)
            || resume.is_some_and(|r| {
                let recorded = r.files.get(f);
                let now = before.get(f);
                if absent(f) {
                    // Kept in the part file when it was recorded, and still there.
                    in_slot && recorded.is_some_and(|r| r.size.is_none()) && parts_unchanged
                } else {
                    recorded.is_some()
                        && recorded == now
                        && now.and_then(|n| n.size) == files.get(f).map(|e| e.length)
                }
            })
    };
    let claimed = resume.map(ResumeData::verified_bitfield);
    let mut trusted = Bitfield::new(layout.num_pieces());
    let mut check = Vec::new();
    for piece in layout.pieces() {
        let spans = layout.piece_spans(piece);
        let in_slot = slots.slot_offset(piece).is_some();
        let is_claimed = claimed.as_ref().is_some_and(|c| c.has(piece.get()));
        if is_claimed && spans.iter().all(|s| unchanged(s.file, in_slot)) {
            let _ = trusted.set(piece.get());
        } else if spans.iter().any(|s| existed(s.file)) || (in_slot && parts_before.is_some()) {
            check.push(piece);
        }
    }
    StartPlan { trusted, check }
}

/// The start-up check as it runs: the pieces the plan left to hash, how many are being
/// hashed, and which passed. The Coordinator owns it until the picker exists.
#[derive(Debug, Default)]
pub struct StartupCheck {
    /// Pieces not yet sent to be hashed, in order.
    queue: VecDeque<PieceIndex>,
    /// Pieces the plan asked to check.
    total: usize,
    /// Pieces sent and not yet answered.
    in_flight: usize,
    /// Pieces that passed.
    found: Vec<PieceIndex>,
}

impl StartupCheck {
    /// A check of `pieces`.
    pub fn new(pieces: Vec<PieceIndex>) -> Self {
        Self {
            total: pieces.len(),
            queue: pieces.into(),
            ..Self::default()
        }
    }

    /// The next piece to hash, while fewer than `max_in_flight` are out.
    pub fn next(&mut self, max_in_flight: usize) -> Option<PieceIndex> {
        if self.in_flight >= max_in_flight {
            return None;
        }
        let piece = self.queue.pop_front()?;
        self.in_flight += 1;
        Some(piece)
    }

    /// A piece's check came back: `good` if it passed.
    pub fn checked(&mut self, piece: PieceIndex, good: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if good {
            self.found.push(piece);
        }
    }

    /// Every piece has been answered.
    pub fn is_done(&self) -> bool {
        self.in_flight == 0 && self.queue.is_empty()
    }

    /// Pieces answered, of all to check.
    pub fn progress(&self) -> (usize, usize) {
        (self.total - self.queue.len() - self.in_flight, self.total)
    }

    /// The pieces that passed, taken out.
    pub fn take_found(&mut self) -> Vec<PieceIndex> {
        std::mem::take(&mut self.found)
    }
}

/// When the resume file is next due: after `every_pieces` newly verified pieces, or
/// `every` after the first piece not yet recorded, whichever comes first. Saving each
/// piece would stall the FileWriter; saving rarely would cost re-checks after a crash.
#[derive(Debug)]
pub struct ResumeSchedule {
    /// Pieces verified since the last save.
    unsaved: u32,
    /// When the oldest of them was verified.
    since: Option<Instant>,
    every_pieces: u32,
    every: Duration,
}

impl ResumeSchedule {
    pub fn new(every_pieces: u32, every: Duration) -> Self {
        Self {
            unsaved: 0,
            since: None,
            every_pieces,
            every,
        }
    }

    /// A piece was verified at `now`.
    pub fn piece_verified(&mut self, now: Instant) {
        self.unsaved = self.unsaved.saturating_add(1);
        self.since.get_or_insert(now);
    }

    /// Makes the next save due at once (pieces found by the start-up check).
    pub fn make_due(&mut self) {
        self.unsaved = self.unsaved.max(self.every_pieces.max(1));
    }

    /// Whether to save now (always with `force`, unless nothing changed); a yes resets
    /// the schedule.
    pub fn take_due(&mut self, now: Instant, force: bool) -> bool {
        if self.unsaved == 0 && !force {
            return false;
        }
        let due = self.unsaved >= self.every_pieces
            || self
                .since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.every);
        if !due && !force {
            return false;
        }
        self.unsaved = 0;
        self.since = None;
        true
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::metainfo::SafePath;

    fn layout() -> Layout {
        // Two files of 3 and 2 pieces' worth at 16 KiB pieces; piece 2 spans both.
        let p = |n: &str| SafePath::new(&["t", n]).unwrap();
        Layout::new(16384, [(p("a"), 40_000, false), (p("b"), 30_000, false)]).unwrap()
    }

    fn hash() -> InfoHash {
        InfoHash([7; 20])
    }

    fn rec(size: u64, t: u128) -> FileRecord {
        FileRecord {
            size: Some(size),
            mtime_ns: Some(t),
        }
    }

    fn saved(verified: &[u32], files: Vec<FileRecord>) -> ResumeData {
        let l = layout();
        let mut b = Bitfield::new(l.num_pieces());
        for &i in verified {
            b.set(i).unwrap();
        }
        let mut d = ResumeData::new(hash(), &l, &b);
        d.files = files;
        d
    }

    #[test]
    fn json_round_trips_with_readable_ranges() {
        let d = saved(&[0, 1, 2, 4], vec![rec(40_000, 1), rec(30_000, 2)]);
        assert_eq!(d.verified, vec![[0, 2], [4, 4]]);
        let back = ResumeData::parse(&d.to_json(), hash(), &layout()).unwrap();
        assert_eq!(back, d);
        assert!(String::from_utf8(d.to_json())
            .unwrap()
            .contains("\"verified\""));
    }

    #[test]
    fn foreign_or_broken_resume_files_are_refused() {
        let l = layout();
        let d = saved(&[0], vec![rec(1, 1), rec(1, 1)]);
        assert_eq!(
            ResumeData::parse(&d.to_json(), InfoHash([8; 20]), &l),
            Err(ResumeError::Mismatch("info-hash"))
        );
        assert!(matches!(
            ResumeData::parse(b"{not json", hash(), &l),
            Err(ResumeError::Malformed(_))
        ));
        let mut bad = d.clone();
        bad.verified = vec![[0, 99]];
        assert_eq!(
            ResumeData::parse(&bad.to_json(), hash(), &l),
            Err(ResumeError::Mismatch("piece range"))
        );
        let mut bad = d.clone();
        bad.version = 9;
        assert_eq!(
            ResumeData::parse(&bad.to_json(), hash(), &l),
            Err(ResumeError::Version(9))
        );
        let mut bad = d;
        bad.files.pop();
        assert_eq!(
            ResumeData::parse(&bad.to_json(), hash(), &l),
            Err(ResumeError::Mismatch("file count"))
        );
    }

    #[test]
    fn overlapping_or_unordered_piece_ranges_are_refused() {
        // Found by the `resume` fuzz target: one range repeated was accepted, so a file of
        // N copies of `[0, last]` cost N passes over the pieces to read.
        let l = layout();
        for verified in [
            vec![[0, 4], [0, 4]],
            vec![[0, 2], [2, 3]],
            vec![[3, 4], [0, 1]],
        ] {
            let mut d = saved(&[], vec![rec(1, 1), rec(1, 1)]);
            d.verified = verified.clone();
            assert!(
                matches!(
                    ResumeData::parse(&d.to_json(), hash(), &l),
                    Err(ResumeError::Malformed(_))
                ),
                "{verified:?} accepted"
            );
        }
        // Adjacent ranges are disjoint, and fine.
        let mut d = saved(&[], vec![rec(1, 1), rec(1, 1)]);
        d.verified = vec![[0, 1], [2, 2], [4, 4]];
        let back = ResumeData::parse(&d.to_json(), hash(), &l).unwrap();
        assert_eq!(back.verified_bitfield().count_ones(), 4);
    }

    #[test]
    fn unchanged_files_keep_their_verified_pieces() {
        let files = vec![rec(40_000, 1), rec(30_000, 2)];
        let d = saved(&[0, 1, 2, 3, 4], files.clone());
        let plan = plan_start(&layout(), Some(&d), &files, None);
        assert_eq!(plan.trusted.count_ones(), 5);
        assert!(plan.check.is_empty());
    }

    #[test]
    fn a_changed_file_is_rechecked_and_pieces_spanning_it_too() {
        let d = saved(&[0, 1, 2, 3, 4], vec![rec(40_000, 1), rec(30_000, 2)]);
        // File b was written after the save (a crash), so its time differs.
        let now = vec![rec(40_000, 1), rec(30_000, 3)];
        let plan = plan_start(&layout(), Some(&d), &now, None);
        let trusted: Vec<u32> = plan.trusted.iter_set().collect();
        assert_eq!(trusted, [0, 1]);
        let check: Vec<u32> = plan.check.iter().map(|p| p.get()).collect();
        assert_eq!(check, [2, 3, 4]);
    }

    #[test]
    fn a_truncated_or_deleted_file_is_never_trusted() {
        let d = saved(&[0, 1, 2, 3, 4], vec![rec(40_000, 1), rec(30_000, 2)]);
        let deleted = vec![
            rec(40_000, 1),
            FileRecord {
                size: None,
                mtime_ns: None,
            },
        ];
        let plan = plan_start(&layout(), Some(&d), &deleted, None);
        assert_eq!(plan.trusted.iter_set().collect::<Vec<_>>(), [0, 1]);
        // Piece 2 touches file a, which exists: hash it. Pieces 3 and 4 live only in b.
        assert_eq!(plan.check.iter().map(|p| p.get()).collect::<Vec<_>>(), [2]);
        let truncated = vec![rec(10_000, 1), rec(30_000, 2)];
        let plan = plan_start(&layout(), Some(&d), &truncated, None);
        assert_eq!(plan.trusted.iter_set().collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn without_a_resume_file_existing_data_is_hashed_and_fresh_files_are_not() {
        let before = vec![
            rec(40_000, 1),
            FileRecord {
                size: None,
                mtime_ns: None,
            },
        ];
        let plan = plan_start(&layout(), None, &before, None);
        assert_eq!(plan.trusted.count_ones(), 0);
        assert_eq!(
            plan.check.iter().map(|p| p.get()).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    const ABSENT: FileRecord = FileRecord {
        size: None,
        mtime_ns: None,
    };

    #[test]
    fn a_shared_piece_is_trusted_through_an_unchanged_part_file() {
        // `get --files 0`: a downloaded, b absent; piece 2's bytes of b in the part file.
        let files = vec![rec(40_000, 1), ABSENT];
        let mut d = saved(&[0, 1, 2], files.clone());
        d.parts = Some(rec(4096 + 16384, 5));
        let back = ResumeData::parse(&d.to_json(), hash(), &layout()).unwrap();
        assert_eq!(back.parts, d.parts);
        let plan = plan_start(&layout(), Some(&back), &files, Some(&rec(4096 + 16384, 5)));
        assert_eq!(plan.trusted.iter_set().collect::<Vec<_>>(), [0, 1, 2]);
        assert!(plan.check.is_empty());

        // The part file changed after the save (a crash mid-write): piece 2 is hashed.
        let plan = plan_start(&layout(), Some(&back), &files, Some(&rec(4096 + 16384, 6)));
        assert_eq!(plan.trusted.iter_set().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(plan.check.iter().map(|p| p.get()).collect::<Vec<_>>(), [2]);

        // The part file is gone: piece 2 cannot be trusted, and is hashed because a exists.
        let plan = plan_start(&layout(), Some(&back), &files, None);
        assert_eq!(plan.trusted.iter_set().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(plan.check.iter().map(|p| p.get()).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_resume_file_without_a_part_file_record_still_parses() {
        let d = saved(&[0, 1, 2, 3, 4], vec![rec(40_000, 1), rec(30_000, 2)]);
        let json = d.to_json();
        assert!(!String::from_utf8_lossy(&json).contains("parts"));
        assert_eq!(
            ResumeData::parse(&json, hash(), &layout()).unwrap().parts,
            None
        );
    }

    #[test]
    fn an_edited_resume_file_fails_its_checksum_but_reformatting_does_not() {
        let l = layout();
        let d = saved(&[0, 1], vec![rec(40_000, 1), rec(30_000, 2)]);
        let mut json: serde_json::Value = serde_json::from_slice(&d.to_json()).unwrap();
        // Compact and with keys reordered by `Value`: still the same record.
        let compact = serde_json::to_vec(&json).unwrap();
        assert_eq!(ResumeData::parse(&compact, hash(), &l), Ok(d.clone()));
        // Claiming a piece more, or the same pieces for files of other times, is refused.
        json["verified"] = serde_json::json!([[0, 4]]);
        assert_eq!(
            ResumeData::parse(&serde_json::to_vec(&json).unwrap(), hash(), &l),
            Err(ResumeError::Checksum)
        );
        let mut json: serde_json::Value = serde_json::from_slice(&d.to_json()).unwrap();
        json["files"][1]["mtime_ns"] = serde_json::json!(3);
        assert_eq!(
            ResumeData::parse(&serde_json::to_vec(&json).unwrap(), hash(), &l),
            Err(ResumeError::Checksum)
        );
        // A file without a checksum, as version 1 wrote them, is refused by its version.
        let v1 = br#"{"version":1,"info_hash":"0707070707070707070707070707070707070707",
            "piece_length":16384,"num_pieces":5,"verified":[[0,4]],
            "files":[{"size":40000,"mtime_ns":1},{"size":30000,"mtime_ns":2}]}"#;
        assert_eq!(
            ResumeData::parse(v1, hash(), &l),
            Err(ResumeError::Version(1))
        );
    }

    #[test]
    fn the_size_bound_holds_for_the_largest_record_a_torrent_can_have() {
        // Many pieces, every other one verified (the most ranges), the largest numbers.
        let p = |n: &str| SafePath::new(&["t", n]).unwrap();
        let l = Layout::new(
            16384,
            [
                (p("a"), 16384 * 9_999, false),
                (p("b"), 16384 * 1_001, false),
            ],
        )
        .unwrap();
        let mut b = Bitfield::new(l.num_pieces());
        for i in (0..l.num_pieces()).step_by(2) {
            b.set(i).unwrap();
        }
        let mut d = ResumeData::new(hash(), &l, &b);
        let big = FileRecord {
            size: Some(u64::MAX),
            mtime_ns: Some(u128::MAX),
        };
        d.files = vec![big, big];
        d.parts = Some(big);
        let len = d.to_json().len() as u64;
        let bound = json_size_bound(&l);
        assert!(len <= bound, "{len} bytes over the bound of {bound}");
    }

    #[test]
    fn a_startup_check_keeps_its_in_flight_bound_and_counts_what_passed() {
        let pieces: Vec<PieceIndex> = (0..5).map(|n| layout().piece(n).unwrap()).collect();
        let mut check = StartupCheck::new(pieces.clone());
        let first: Vec<_> = std::iter::from_fn(|| check.next(2)).collect();
        assert_eq!(first, &pieces[..2]);
        assert_eq!(check.progress(), (0, 5));
        check.checked(first[0], true);
        check.checked(first[1], false);
        assert_eq!(check.progress(), (2, 5));
        while let Some(p) = check.next(2) {
            check.checked(p, p.get() % 2 == 0);
        }
        assert!(check.is_done());
        assert_eq!(check.progress(), (5, 5));
        let found: Vec<u32> = check.take_found().iter().map(|p| p.get()).collect();
        assert_eq!(found, [0, 2, 4]);
    }

    #[test]
    fn the_resume_file_is_due_after_enough_pieces_or_enough_time_and_at_once_when_forced() {
        let t0 = Instant::now();
        let mut s = ResumeSchedule::new(3, Duration::from_secs(5));
        assert!(!s.take_due(t0, false), "nothing to save");
        assert!(
            s.take_due(t0, true),
            "forced saves go out even with nothing new"
        );
        s.piece_verified(t0);
        s.piece_verified(t0);
        assert!(!s.take_due(t0 + Duration::from_secs(1), false));
        assert!(
            s.take_due(t0 + Duration::from_secs(5), false),
            "due by time"
        );
        for _ in 0..3 {
            s.piece_verified(t0);
        }
        assert!(s.take_due(t0, false), "due by count");
        s.make_due();
        assert!(s.take_due(t0, false));
        assert!(!s.take_due(t0, false));
    }
}
