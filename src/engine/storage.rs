//! The FileWriter, the FileReader and the Hasher: the actors that do blocking work, on
//! threads of their own (`threads.rs`), so a protocol arbiter never waits on a disk or
//! burns a core on SHA-1.
//!
//! The FileWriter is the only code in the engine that writes the download: it creates
//! the files at their final size, writes verified pieces at their offsets (`pwrite`, one
//! call per file span), and writes the resume file atomically. There is one per torrent,
//! on a writing arbiter it shares with other torrents' writers, and it handles one
//! message at a time, in order, so its operations are ordered: a resume file saved after
//! a piece's write never claims a piece that is not on disk. After
//! `CloseStorage` it writes no piece or block (they are answered `false`) and opens no
//! file until the next `OpenStorage`, so the sync at close covers everything written.
//!
//! The FileReader reads ranges (blocks for uploads, whole pieces for the start-up
//! check) from read-only handles of its own, on a reading arbiter, so reads never queue
//! behind writes and never block the network arbiter.
//!
//! With a file selection, unselected files are never created. A wanted piece that also
//! holds bytes of an unselected file (a shared piece, at the border of the two) is written
//! in two places: the selected files' spans into those files, the others into the part
//! file (`.NAME.parts`, format in `parts.rs`). Where a span goes depends on the disk, not
//! only on the selection: a selected file is always there (created at open); an unselected
//! one is used if it exists (from an earlier run with another selection) and otherwise
//! its bytes go to the part file. Both actors follow that one rule, so a piece is read
//! from where it was written. When a file absent before becomes selected, `OpenStorage`
//! copies its spans of shared pieces from the part file into the new file, so pieces
//! verified under the old selection stay verified without a download; the copy goes into
//! a file that was just created, so even a slot that was never written costs nothing but
//! a failed check. Once every file is there the part file is deleted.
//!
//! Every file is reached beneath the download folder's handle ([`Jail`]), never through
//! a path string: a symbolic link planted inside the folder is refused, not followed, for
//! reading, writing, truncating and deleting alike.
//!
//! A full disk must not cost the record of what was verified before it filled. So
//! before its first piece write the FileWriter sets aside, in a hidden reserve file
//! beside the resume file, as much space as the largest resume file this torrent can have
//! (`resume::json_size_bound`). When a save fails for want of space, the reserve is
//! deleted and the save tried again; after a save the reserve is put back if it can be,
//! and the last save (after `CloseStorage`) deletes it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use actix::prelude::*;
use bytes::Bytes;
use sha1::{Digest, Sha1};

use super::jail::{check_name, Access, Jail};
use super::messages::{
    CheckPiece, CloseStorage, DeleteFiles, DigestBlocks, HashBlocks, HashOutcome, HashPiece,
    HashStored, OpenReport, OpenStorage, ReadBlock, SaveResume, StorageError, WriteBlock,
    WritePiece,
};
use super::metrics::{ActorKind, ActorMetrics, OwnMetrics};
use super::parts::PartSlots;
use super::resume::{json_size_bound, FileRecord};
use super::selection::SelectedFiles;
use crate::layout::{Layout, PieceIndex, BLOCK_SIZE};
use crate::metainfo::Verdict;
use crate::InfoHash;

/// Hashes pieces; runs as a SyncArbiter pool sized to the cores, one for the process.
pub struct Hasher {
    metrics: OwnMetrics,
}

impl Hasher {
    /// One of the pool's hashers, counting into `metrics`.
    pub fn new(metrics: Arc<ActorMetrics>) -> Self {
        Self {
            metrics: OwnMetrics::started(metrics),
        }
    }
}

impl Actor for Hasher {
    type Context = SyncContext<Self>;
}

impl Handler<HashPiece> for Hasher {
    type Result = MessageResult<HashPiece>;

    fn handle(&mut self, msg: HashPiece, _: &mut SyncContext<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<HashPiece>();
        let mut check = msg.expected.verifier();
        for block in &msg.blocks {
            check.update(block);
        }
        let verdict = check.finish();
        let ok = verdict.passed();
        // Block digests cost a second pass over the data, paid only on failure or when
        // smart ban asks; a failed piece is rare.
        let block_digests = (!ok || msg.block_digests).then(|| {
            msg.blocks
                .iter()
                .map(|b| <[u8; 20]>::from(Sha1::digest(b)))
                .collect()
        });
        let leaf_hashes = if verdict == Verdict::Failed {
            msg.expected.leaf_hashes(&msg.blocks)
        } else {
            None
        };
        MessageResult(HashOutcome {
            verdict,
            block_digests,
            leaf_hashes,
        })
    }
}

impl Handler<HashBlocks> for Hasher {
    type Result = MessageResult<HashBlocks>;

    fn handle(&mut self, msg: HashBlocks, _: &mut SyncContext<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<HashBlocks>();
        let mut state = msg.state;
        for block in &msg.blocks {
            state.update(block);
        }
        MessageResult(state)
    }
}

/// Owns the torrent's files on disk; one per torrent, on a writing arbiter (its handlers
/// block that thread, which runs only other torrents' writers).
pub struct FileWriter {
    /// The download folder, as given: created at open, shown in messages.
    root: PathBuf,
    /// The download folder's handle, from `OpenStorage` on; every file is opened
    /// beneath it.
    jail: Option<Jail>,
    /// The names of the torrent's own files beside the download.
    side: SideFiles,
    /// Where each file and piece lives.
    layout: Arc<Layout>,
    /// Open handles, by file index; `None` until first use and for padding files.
    files: Vec<Option<File>>,
    /// Files written since the last sync, so a sync at close (`--fsync`) touches only those.
    dirty: Vec<bool>,
    /// Which files to download: these are created at open.
    selected: SelectedFiles,
    /// Unselected files found on disk at open: their spans are written there, not to the
    /// part file.
    present: Vec<bool>,
    /// The part file's slots.
    slots: PartSlots,
    /// The part file, once opened with a valid header (or created).
    parts: Option<File>,
    /// The part file was written since the last sync.
    parts_dirty: bool,
    /// Added to every piece write: a slow disk on demand, for tests of backpressure.
    write_delay: std::time::Duration,
    /// The reserve file was made (or found) since the files were opened.
    reserve_held: bool,
    /// `CloseStorage` came: the next save is the last, and takes the reserve away.
    closed: bool,
    /// The FileWriter's counters (detached until [`FileWriter::with_metrics`]).
    metrics: OwnMetrics,
}

impl FileWriter {
    /// Counts this writer and its messages into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ActorMetrics>) -> Self {
        self.metrics.attach(metrics);
        self
    }

    /// A writer for `layout` under `root`. Nothing is touched until [`OpenStorage`].
    pub fn new(
        root: PathBuf,
        layout: Arc<Layout>,
        info_hash: InfoHash,
        selected: SelectedFiles,
        write_delay: std::time::Duration,
    ) -> Self {
        let n = layout.files().len();
        Self {
            root,
            jail: None,
            side: SideFiles::new(&layout, &info_hash),
            slots: PartSlots::new(&layout),
            layout,
            files: (0..n).map(|_| None).collect(),
            dirty: vec![false; n],
            selected,
            present: vec![false; n],
            parts: None,
            parts_dirty: false,
            write_delay,
            reserve_held: false,
            closed: false,
            metrics: OwnMetrics::detached(ActorKind::FileWriter),
        }
    }

    /// A writer that only deletes, for a stopped torrent's folder `jail` (opened by the
    /// caller through no link): see [`DeleteFiles`].
    pub fn for_deletion(jail: Jail, layout: Arc<Layout>, info_hash: InfoHash) -> Self {
        let selected = SelectedFiles::new(&layout, None);
        let mut writer = Self::new(
            jail.root().to_path_buf(),
            layout,
            info_hash,
            selected,
            std::time::Duration::ZERO,
        );
        writer.jail = Some(jail);
        writer
    }

    /// Deletes the torrent's files and side files, then the folders they leave empty,
    /// deepest first. Returns what could not be deleted. A link in a file's place is
    /// removed itself, never what it points to; a link on the way is refused.
    fn delete_everything(&self, jail: &Jail) -> Vec<String> {
        let mut paths: Vec<Vec<String>> = self
            .layout
            .files()
            .iter()
            .filter(|f| !f.padding)
            .map(|f| f.path.components().to_vec())
            .collect();
        let side = &self.side;
        paths.extend([&side.reserve, &side.resume, &side.parts].map(|name| vec![name.clone()]));
        let mut failed = Vec::new();
        for path in &paths {
            if let Err(e) = jail.remove_file(path) {
                failed.push(format!("{}: {e}", jail.display(path).display()));
            }
        }
        let mut dirs: Vec<&[String]> = paths
            .iter()
            .flat_map(|p| (1..p.len()).map(move |n| &p[..n]))
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        dirs.dedup();
        for dir in dirs {
            // A folder still holding something (the user's own files) stays.
            let _ = jail.remove_empty_dir(dir);
        }
        failed
    }

    /// Whether file `file`'s bytes go to the file itself rather than the part file.
    fn in_file(&self, file: usize) -> bool {
        self.selected.is_selected(file) || self.present[file]
    }

    fn parts_path(&self) -> PathBuf {
        self.root.join(&self.side.parts)
    }

    /// The folder's handle; an error before `OpenStorage` opened it.
    fn jail(&self) -> Result<&Jail, StorageError> {
        self.jail
            .as_ref()
            .ok_or_else(|| storage_error(&self.root, &io::Error::other("storage is not open")))
    }

    /// Refuses, before anything is created, a torrent whose selected files add up to
    /// more than the whole filesystem under the download folder: it could never
    /// complete, and its files, made at their final size, would be sparse files of that
    /// size (a hostile torrent can claim a petabyte with 40 MiB of piece hashes). Free
    /// space is not checked: it may be freed while the download runs, and running out
    /// is reported when a write fails.
    fn check_capacity(&self) -> Result<(), StorageError> {
        let needed: u64 = self
            .layout
            .files()
            .iter()
            .enumerate()
            .filter(|(i, f)| !f.padding && self.selected.is_selected(*i))
            .fold(0u64, |sum, (_, f)| sum.saturating_add(f.length));
        match filesystem_capacity(&self.root) {
            Some(capacity) if needed > capacity => {
                let top = self
                    .layout
                    .files()
                    .first()
                    .and_then(|f| f.path.components().first())
                    .map_or_else(|| self.root.clone(), |name| self.root.join(name));
                Err(StorageError {
                    path: top.display().to_string(),
                    message: format!(
                        "the torrent needs {} but the whole filesystem holds {}; \
                         choose another output folder",
                        approximate_size(needed),
                        approximate_size(capacity)
                    ),
                    disk_full: true,
                })
            }
            _ => Ok(()),
        }
    }

    /// Opens an existing part file if its header is this torrent's. A missing, foreign or
    /// damaged one reads as none (it is replaced on the first write); one that is there but
    /// cannot be opened (a link, no permission) is an error.
    fn open_existing_parts(&mut self) -> Result<Option<FileRecord>, StorageError> {
        let opened = self
            .jail()?
            .open_file(&[&self.side.parts], Access::ReadWrite);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Anything else (a link, no permission) is an error, not a missing file: a
            // part file made anew over it would empty the one that is there.
            Err(e) => return Err(storage_error(&self.parts_path(), &e)),
        };
        let mut header = [0u8; super::parts::HEADER_USED];
        let Ok(n) = read_or_zeros(&file, &mut header, 0) else {
            return Ok(None);
        };
        if self.slots.check_header(&header[..n]).is_err() {
            return Ok(None);
        }
        let Ok(meta) = file.metadata() else {
            return Ok(None);
        };
        self.parts = Some(file);
        Ok(Some(FileRecord {
            size: Some(meta.len()),
            mtime_ns: mtime_ns(&meta),
        }))
    }

    /// The part file, created with its header if there is none yet. One whose header is
    /// this torrent's is kept as it is: its slots hold verified bytes that a resume file
    /// may claim, so only a new, foreign or damaged file is started afresh.
    fn parts_handle(&mut self) -> Result<&File, StorageError> {
        if self.parts.is_none() {
            let path = self.parts_path();
            let jail = self.jail()?;
            let create = || -> io::Result<File> {
                let f = jail.open_file(&[&self.side.parts], Access::Create)?;
                let mut header = [0u8; super::parts::HEADER_USED];
                let n = read_or_zeros(&f, &mut header, 0)?;
                if self.slots.check_header(&header[..n]).is_err() {
                    f.set_len(0)?;
                    f.write_all_at(&self.slots.header(), 0)?;
                }
                Ok(f)
            };
            self.parts = Some(create().map_err(|e| storage_error(&path, &e))?);
        }
        let path = self.parts_path();
        self.parts
            .as_ref()
            .ok_or_else(|| storage_error(&path, &io::Error::other("part file not open")))
    }

    /// Copies file `file`'s spans of shared pieces from the part file into the file, which
    /// was just created: pieces verified while it was unselected stay verified.
    fn import_from_parts(&mut self, file: usize) -> Result<(), StorageError> {
        let (Some(parts), Some(target)) = (&self.parts, &self.files[file]) else {
            return Ok(());
        };
        let mut buf = Vec::new();
        let mut wrote = false;
        for n in self.layout.file_pieces(file) {
            let Some(piece) = self.layout.piece(n) else {
                continue;
            };
            let Some(slot) = self.slots.slot_offset(piece) else {
                continue;
            };
            for span in self.layout.piece_spans(piece) {
                if span.file != file {
                    continue;
                }
                buf.clear();
                buf.resize(span.len as usize, 0);
                read_or_zeros(parts, &mut buf, slot + u64::from(span.piece_offset))
                    .map_err(|e| storage_error(&self.parts_path(), &e))?;
                if buf.iter().any(|&b| b != 0) {
                    target
                        .write_all_at(&buf, span.file_offset)
                        .map_err(|e| self.error(file, &e))?;
                    wrote = true;
                }
            }
        }
        if wrote {
            self.dirty[file] = true;
        }
        Ok(())
    }

    /// The part file's record for the resume file, if it exists.
    fn parts_record(&self) -> Option<FileRecord> {
        let meta = self.jail.as_ref()?.metadata(&[&self.side.parts]).ok()??;
        Some(FileRecord {
            size: Some(meta.len()),
            mtime_ns: mtime_ns(&meta),
        })
    }

    fn path(&self, file: usize) -> PathBuf {
        self.layout.files()[file].path.under(&self.root)
    }

    /// The names of file `file`'s path under the folder.
    fn names(&self, file: usize) -> &[String] {
        self.layout.files()[file].path.components()
    }

    fn error(&self, file: usize, e: &io::Error) -> StorageError {
        storage_error(&self.path(file), e)
    }

    /// The open handle of a file, opening it (read-write) on first use.
    fn handle(&mut self, file: usize) -> Result<&File, StorageError> {
        if self.files[file].is_none() {
            let f = self
                .jail()?
                .open_file(self.names(file), Access::ReadWrite)
                .map_err(|e| self.error(file, &e))?;
            self.files[file] = Some(f);
        }
        self.files[file]
            .as_ref()
            .ok_or_else(|| self.error(file, &io::Error::other("file not open")))
    }

    fn resume_path(&self) -> PathBuf {
        self.root.join(&self.side.resume)
    }

    /// Whether the reserve file is there.
    fn reserve_exists(&self) -> bool {
        self.jail
            .as_ref()
            .is_some_and(|j| matches!(j.metadata(&[&self.side.reserve]), Ok(Some(_))))
    }

    /// Deletes the reserve file, if there is one.
    fn drop_reserve(&self) {
        if let Some(jail) = &self.jail {
            let _ = jail.remove_file(&[&self.side.reserve]);
        }
    }

    /// Makes sure the reserve file holds [`json_size_bound`] bytes of real (not sparse)
    /// space. Best effort: on a disk already full it holds what it could get, and a later
    /// save that needs more fails as it would have without it.
    fn hold_reserve(&mut self) {
        self.reserve_held = true;
        let Some(jail) = &self.jail else {
            return;
        };
        let name = [&self.side.reserve];
        let want = json_size_bound(&self.layout);
        if matches!(jail.metadata(&name), Ok(Some(m)) if m.len() >= want) {
            return;
        }
        let fill = || -> io::Result<()> {
            let f = jail.open_file(&name, Access::Create)?;
            // Zeros written, not `set_len`: a hole would reserve nothing.
            let zeros = vec![0u8; 64 * 1024];
            let mut at = 0;
            while at < want {
                let n = (want - at).min(zeros.len() as u64) as usize;
                f.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            Ok(())
        };
        let _ = fill();
    }

    /// Writes the resume file through a temporary file, synced, renamed over the old one:
    /// a crash at any moment leaves the old file or the new one, never a mix. A failed
    /// attempt leaves no temporary file behind.
    fn write_resume(&self, bytes: &[u8]) -> io::Result<()> {
        let jail = self
            .jail
            .as_ref()
            .ok_or_else(|| io::Error::other("storage is not open"))?;
        jail.write_atomically(&[&self.side.resume], &self.side.resume_tmp, bytes)
    }

    /// The size and modification time of every file, as recorded in the resume file.
    fn file_records(&self) -> Vec<FileRecord> {
        self.layout
            .files()
            .iter()
            .map(|f| {
                // A link or a folder where the file should be reads as no file: it is
                // never followed, and opening the name for writing fails.
                let meta = match (&self.jail, f.padding) {
                    (Some(jail), false) => jail.metadata(f.path.components()).ok().flatten(),
                    _ => None,
                };
                FileRecord {
                    size: meta.as_ref().map(|m| m.len()),
                    mtime_ns: meta.as_ref().and_then(mtime_ns),
                }
            })
            .collect()
    }

    fn sync_dirty(&mut self) -> Result<(), StorageError> {
        if self.parts_dirty {
            if let Some(f) = &self.parts {
                f.sync_data()
                    .map_err(|e| storage_error(&self.parts_path(), &e))?;
            }
            self.parts_dirty = false;
        }
        for i in 0..self.files.len() {
            if self.dirty[i] {
                if let Some(f) = &self.files[i] {
                    f.sync_data().map_err(|e| self.error(i, &e))?;
                }
                self.dirty[i] = false;
            }
        }
        Ok(())
    }
}

/// The names of a torrent's own files in its download folder, beside the download:
/// `.NAME.resume.json` (and its temporary `.tmp` and `.reserve`) and `.NAME.parts`, where
/// NAME is the torrent's name. A name too long for those to fit the 255-byte limit of a
/// file name (a torrent's name may use all 255) is replaced by the info-hash in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideFiles {
    /// The resume file.
    pub resume: String,
    /// The resume file while it is written, renamed over `resume` when complete.
    pub resume_tmp: String,
    /// The space held for the resume file on a full disk.
    pub reserve: String,
    /// The part file: bytes of unselected files that share a wanted piece.
    pub parts: String,
}

impl SideFiles {
    /// The names for the torrent laid out as `layout`, whose info-hash is `info_hash`.
    pub fn new(layout: &Layout, info_hash: &InfoHash) -> Self {
        let names = |base: &str| Self {
            resume: format!(".{base}.resume.json"),
            resume_tmp: format!(".{base}.resume.json.tmp"),
            reserve: format!(".{base}.resume.reserve"),
            parts: format!(".{base}.parts"),
        };
        let name = layout
            .files()
            .first()
            .and_then(|f| f.path.components().first())
            .map_or("torrent", String::as_str);
        let by_name = names(name);
        // The longest is the temporary resume file; every name is checked as the jail
        // will check it.
        if [
            &by_name.resume,
            &by_name.resume_tmp,
            &by_name.reserve,
            &by_name.parts,
        ]
        .iter()
        .all(|n| check_name(n).is_ok())
        {
            by_name
        } else {
            names(&info_hash.to_hex())
        }
    }
}

/// The resume file of a torrent: beside the download, named after the torrent.
pub fn resume_path(root: &Path, layout: &Layout, info_hash: &InfoHash) -> PathBuf {
    root.join(SideFiles::new(layout, info_hash).resume)
}

/// Reads into `buf` from `offset`, leaving zeros past the end of the file (a part file's
/// slots past its last write are holes that were never extended). Returns the bytes read.
fn read_or_zeros(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn mtime_ns(meta: &fs::Metadata) -> Option<u128> {
    meta.modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
}

/// ENOSPC (28) and EDQUOT (122) on Linux.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122))
}

fn storage_error(path: &Path, e: &io::Error) -> StorageError {
    StorageError {
        path: path.display().to_string(),
        message: e.to_string(),
        disk_full: is_disk_full(e),
    }
}

impl Actor for FileWriter {
    type Context = Context<Self>;
}

impl Handler<OpenStorage> for FileWriter {
    type Result = Result<OpenReport, StorageError>;

    fn handle(&mut self, _: OpenStorage, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<OpenStorage>();
        self.closed = false;
        self.reserve_held = false;
        self.check_capacity()?;
        if self.jail.is_none() {
            self.jail = Some(Jail::create(&self.root).map_err(|e| storage_error(&self.root, &e))?);
        }
        let before = self.file_records();
        // Twice the largest this torrent's resume file can be: a larger one is not ours.
        let limit = json_size_bound(&self.layout).saturating_mul(2);
        let resume = self
            .jail()?
            .read(&[&self.side.resume], limit)
            .ok()
            .flatten();
        let parts_before = self.open_existing_parts()?;
        let layout = self.layout.clone();
        for (i, f) in layout.files().iter().enumerate() {
            if f.padding {
                continue;
            }
            let path = self.path(i);
            if !self.selected.is_selected(i) {
                // Never created; used if an earlier run left it there.
                self.present[i] = before[i].size.is_some();
                continue;
            }
            let names = f.path.components();
            let folders = names.split_last().map_or(&[][..], |(_, folders)| folders);
            let jail = self.jail()?;
            jail.create_dirs(folders)
                .map_err(|e| storage_error(path.parent().unwrap_or(&self.root), &e))?;
            let file = jail
                .open_file(names, Access::Create)
                .map_err(|e| storage_error(&path, &e))?;
            // Final size up front, and a file that was truncated between runs is put back to
            // its length (the lost pieces fail their check).
            let len = file.metadata().map_err(|e| storage_error(&path, &e))?.len();
            // Sparse: a torrent whose data never comes reserves no disk space.
            if len != f.length {
                file.set_len(f.length)
                    .map_err(|e| storage_error(&path, &e))?;
            }
            self.files[i] = Some(file);
            self.present[i] = true;
            if before[i].size.is_none() {
                self.import_from_parts(i)?;
            }
        }
        // Every file is on disk: nothing will be read from the part file again.
        if (0..self.present.len()).all(|i| {
            let f = &self.layout.files()[i];
            f.padding || f.length == 0 || self.present[i]
        }) {
            self.parts = None;
            let path = self.parts_path();
            self.jail()?
                .remove_file(&[&self.side.parts])
                .map_err(|e| storage_error(&path, &e))?;
        }
        Ok(OpenReport {
            before,
            resume,
            parts_before,
        })
    }
}

impl FileWriter {
    /// Before a write: the reserve on the first write of a run (so a torrent complete at
    /// start, seeding, never leaves one behind), and the test's slow disk.
    fn before_write(&mut self) {
        if !self.reserve_held {
            self.hold_reserve();
        }
        if !self.write_delay.is_zero() {
            std::thread::sleep(self.write_delay);
        }
    }

    /// Writes `data` at `offset` in `piece`: each span into its file, or, for an
    /// unselected file that is not on disk, into the piece's part-file slot. Padding is
    /// skipped.
    fn write_range(
        &mut self,
        piece: PieceIndex,
        offset: u32,
        blocks: &[&[u8]],
    ) -> Result<(), StorageError> {
        let slot = self.slots.slot_offset(piece);
        let start = self.layout.piece_offset(piece) + u64::from(offset);
        let total: usize = blocks.iter().map(|b| b.len()).sum();
        let length = u32::try_from(total).unwrap_or(u32::MAX);
        for span in self.layout.spans(start, length) {
            if self.layout.files()[span.file].padding {
                continue;
            }
            // `piece_offset` counts from `offset` here.
            let from = span.piece_offset as usize;
            let chunk = slices_of(blocks, from, span.len as usize);
            if self.in_file(span.file) {
                write_all_vectored_at(self.handle(span.file)?, chunk, span.file_offset)
                    .map_err(|e| self.error(span.file, &e))?;
                self.dirty[span.file] = true;
            } else {
                let Some(slot) = slot else {
                    return Err(self.error(
                        span.file,
                        &io::Error::other("no place for bytes of an unselected file"),
                    ));
                };
                let at = slot + u64::from(offset) + u64::from(span.piece_offset);
                let path = self.parts_path();
                write_all_vectored_at(self.parts_handle()?, chunk, at)
                    .map_err(|e| storage_error(&path, &e))?;
                self.parts_dirty = true;
            }
        }
        Ok(())
    }
}

/// The parts of `blocks` (laid end to end) from byte `from` for `len` bytes.
fn slices_of<'a>(blocks: &[&'a [u8]], from: usize, len: usize) -> Vec<io::IoSlice<'a>> {
    let end = from + len;
    let mut at = 0;
    let mut slices = Vec::new();
    for block in blocks {
        let (start, stop) = (at, at + block.len());
        at = stop;
        if stop <= from || start >= end {
            continue;
        }
        let lo = from.max(start) - start;
        let hi = end.min(stop) - start;
        if hi > lo {
            slices.push(io::IoSlice::new(&block[lo..hi]));
        }
    }
    slices
}

/// The most slices one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

/// Writes every byte of `slices` at `offset`: a piece's blocks in one system call per
/// file it covers, where one `pwrite` per 16 KiB block cost a syscall and a pass through
/// the filesystem's write path each (65,536 per GiB).
fn write_all_vectored_at(
    file: &File,
    mut slices: Vec<io::IoSlice<'_>>,
    mut offset: u64,
) -> io::Result<()> {
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let batch = slices.len().min(MAX_SLICES);
        match rustix::io::pwritev(file, &slices[..batch], offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                offset += n as u64;
                io::IoSlice::advance_slices(&mut slices, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Handler<WritePiece> for FileWriter {
    type Result = Result<bool, StorageError>;

    fn handle(&mut self, msg: WritePiece, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<WritePiece>();
        // Closed: the resume file may already be saved, and `--fsync` has run. A write
        // now would reopen files behind both.
        if self.closed {
            return Ok(false);
        }
        let length: usize = msg.blocks.iter().map(|b| b.len()).sum();
        if length != self.layout.piece_len(msg.piece) as usize {
            return Err(storage_error(
                &self.root,
                &io::Error::other(format!("piece {} of the wrong length", msg.piece)),
            ));
        }
        self.before_write();
        let blocks: Vec<&[u8]> = msg.blocks.iter().map(|b| &b[..]).collect();
        self.write_range(msg.piece, 0, &blocks)?;
        Ok(true)
    }
}

/// Streamed pieces: one block written at its place before the piece is verified. Its
/// bytes go where `WritePiece` would put them (the file, or the part-file slot).
impl Handler<WriteBlock> for FileWriter {
    type Result = Result<bool, StorageError>;

    fn handle(&mut self, msg: WriteBlock, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<WriteBlock>();
        if self.closed {
            return Ok(false);
        }
        self.before_write();
        self.write_range(msg.piece, msg.offset, &[&msg.data[..]])?;
        Ok(true)
    }
}

impl Handler<SaveResume> for FileWriter {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: SaveResume, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<SaveResume>();
        let mut data = msg.data;
        data.files = self.file_records();
        data.parts = self.parts_record();
        let bytes = data.to_json();
        let saved = match self.write_resume(&bytes) {
            Err(e) if is_disk_full(&e) && self.reserve_exists() => {
                // The space set aside for exactly this moment.
                self.drop_reserve();
                let retried = self.write_resume(&bytes);
                if retried.is_ok() && !self.closed {
                    self.hold_reserve();
                }
                retried
            }
            other => other,
        };
        if saved.is_ok() && self.closed {
            self.drop_reserve();
        }
        saved.map_err(|e| storage_error(&self.resume_path(), &e))
    }
}

impl Handler<CloseStorage> for FileWriter {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: CloseStorage, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<CloseStorage>();
        self.closed = true;
        if msg.sync {
            self.sync_dirty()?;
        }
        for f in &mut self.files {
            *f = None;
        }
        self.parts = None;
        Ok(())
    }
}

impl Handler<DeleteFiles> for FileWriter {
    type Result = Vec<String>;

    fn handle(&mut self, msg: DeleteFiles, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<DeleteFiles>();
        // Nothing of the torrent may be open while its files go.
        for f in &mut self.files {
            *f = None;
        }
        self.parts = None;
        let jail = match self.jail() {
            Ok(jail) => jail.clone(),
            Err(e) => return vec![e.to_string()],
        };
        match msg {
            DeleteFiles::Resume => match jail.remove_file(&[&self.side.resume]) {
                Ok(_) => Vec::new(),
                Err(e) => vec![format!(
                    "{}: {e}",
                    jail.display(&[&self.side.resume]).display()
                )],
            },
            DeleteFiles::Everything => self.delete_everything(&jail),
        }
    }
}

/// Reads blocks for uploads and pieces for checks; one per torrent, on a reading arbiter,
/// with its own read-only handles (opened on first use), so reads never wait for the
/// writer.
pub struct FileReader {
    /// The download folder, as given, for messages.
    root: PathBuf,
    /// The download folder's handle, opened on first use; every file is opened
    /// beneath it.
    jail: Option<Jail>,
    /// The names of the torrent's own files beside the download.
    side: SideFiles,
    /// Where each block lives.
    layout: Arc<Layout>,
    /// Read-only handles by file index.
    files: Vec<Option<File>>,
    /// Which files are downloaded: a selected file missing on disk is an error, an
    /// unselected one is read from the part file.
    selected: SelectedFiles,
    /// Unselected files found missing, whose bytes are in the part file.
    in_parts: Vec<bool>,
    /// The part file's slots.
    slots: PartSlots,
    /// The part file, opened on first use.
    parts: Option<File>,
    /// The FileReaders' counters (detached until [`FileReader::with_metrics`]).
    metrics: OwnMetrics,
}

impl FileReader {
    /// Counts this reader and its messages into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ActorMetrics>) -> Self {
        self.metrics.attach(metrics);
        self
    }

    /// A reader for `layout` under `root`.
    pub fn new(
        root: PathBuf,
        layout: Arc<Layout>,
        info_hash: InfoHash,
        selected: SelectedFiles,
    ) -> Self {
        let n = layout.files().len();
        Self {
            root,
            jail: None,
            side: SideFiles::new(&layout, &info_hash),
            slots: PartSlots::new(&layout),
            layout,
            files: (0..n).map(|_| None).collect(),
            selected,
            in_parts: vec![false; n],
            parts: None,
            metrics: OwnMetrics::detached(ActorKind::FileReader),
        }
    }

    /// Reads `dst` from file `file` at `offset`, or, for an unselected file that is not on
    /// disk, from the part-file slot of `piece` at `piece_offset`.
    fn read_span(
        &mut self,
        file: usize,
        offset: u64,
        piece: PieceIndex,
        piece_offset: u64,
        dst: &mut [u8],
    ) -> Result<(), StorageError> {
        let path = self.layout.files()[file].path.under(&self.root);
        if self.files[file].is_none() && !self.in_parts[file] {
            let opened = self
                .jail()?
                .open_file(self.layout.files()[file].path.components(), Access::Read);
            match opened {
                Ok(f) => self.files[file] = Some(f),
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound && !self.selected.is_selected(file) =>
                {
                    self.in_parts[file] = true;
                }
                Err(e) => return Err(storage_error(&path, &e)),
            }
        }
        if self.in_parts[file] {
            return self.read_parts(piece, piece_offset, dst);
        }
        match &self.files[file] {
            Some(f) => f
                .read_exact_at(dst, offset)
                .map_err(|e| storage_error(&path, &e)),
            None => Err(storage_error(&path, &io::Error::other("file not open"))),
        }
    }

    /// Reads from `piece`'s slot of the part file.
    fn read_parts(
        &mut self,
        piece: PieceIndex,
        piece_offset: u64,
        dst: &mut [u8],
    ) -> Result<(), StorageError> {
        let path = self.root.join(&self.side.parts);
        let Some(slot) = self.slots.slot_offset(piece) else {
            return Err(storage_error(
                &path,
                &io::Error::other(format!("piece {piece} has no part-file slot")),
            ));
        };
        if self.parts.is_none() {
            let opened = self.jail()?.open_file(&[&self.side.parts], Access::Read);
            self.parts = Some(opened.map_err(|e| storage_error(&path, &e))?);
        }
        match &self.parts {
            Some(f) => f
                .read_exact_at(dst, slot + piece_offset)
                .map_err(|e| storage_error(&path, &e)),
            None => Err(storage_error(
                &path,
                &io::Error::other("part file not open"),
            )),
        }
    }
}

impl Actor for FileReader {
    type Context = Context<Self>;
}

impl FileReader {
    /// The folder's handle (a clone: they share one descriptor), opened on first use;
    /// the FileWriter made the folder.
    fn jail(&mut self) -> Result<Jail, StorageError> {
        if let Some(jail) = &self.jail {
            return Ok(jail.clone());
        }
        let jail = Jail::open(&self.root).map_err(|e| storage_error(&self.root, &e))?;
        self.jail = Some(jail.clone());
        Ok(jail)
    }
}

impl FileReader {
    /// Fills `buf` with the bytes of `piece` from `offset`, across its files; the caller
    /// has checked the range lies inside the piece. Padding reads as zeros, so `buf` must
    /// come zeroed.
    fn read_range(
        &mut self,
        piece: PieceIndex,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<(), StorageError> {
        let start = self.layout.piece_offset(piece) + u64::from(offset);
        let length = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        for span in self.layout.spans(start, length) {
            if self.layout.files()[span.file].padding {
                continue;
            }
            let from = span.piece_offset as usize;
            let Some(dst) = buf.get_mut(from..from + span.len as usize) else {
                continue;
            };
            let in_piece = u64::from(offset) + u64::from(span.piece_offset);
            self.read_span(span.file, span.file_offset, piece, in_piece, dst)?;
        }
        Ok(())
    }
}

impl Handler<ReadBlock> for FileReader {
    type Result = Result<Bytes, StorageError>;

    fn handle(&mut self, msg: ReadBlock, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<ReadBlock>();
        let mut buf = vec![0u8; msg.length as usize];
        self.read_range(msg.piece, msg.offset, &mut buf)?;
        Ok(Bytes::from(buf))
    }
}

/// How much of a piece [`CheckPiece`] reads at a time: the memory one check costs,
/// whatever piece length the torrent claims (up to 512 MiB).
pub const CHECK_WINDOW: u32 = 1 << 20;

impl Handler<CheckPiece> for FileReader {
    type Result = Result<Verdict, StorageError>;

    fn handle(&mut self, msg: CheckPiece, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<CheckPiece>();
        let length = self.layout.piece_len(msg.piece);
        let mut check = msg.expected.verifier();
        self.read_in_windows(msg.piece, 0, length, |buf| check.update(buf))?;
        Ok(check.finish())
    }
}

impl FileReader {
    /// Reads `length` bytes of `piece` from `offset`, [`CHECK_WINDOW`] at a time (a
    /// whole number of blocks, so no block straddles two windows), handing each window
    /// to `take`; bytes of files not on disk read as zeros.
    fn read_in_windows(
        &mut self,
        piece: PieceIndex,
        offset: u32,
        length: u32,
        mut take: impl FnMut(&[u8]),
    ) -> Result<(), StorageError> {
        let mut window = vec![0u8; length.min(CHECK_WINDOW) as usize];
        let mut done = 0;
        while done < length {
            let n = (length - done).min(CHECK_WINDOW) as usize;
            let buf = &mut window[..n];
            buf.fill(0);
            self.read_range(piece, offset + done, buf)?;
            take(buf);
            done += n as u32;
        }
        Ok(())
    }
}

/// Streamed pieces: blocks hashed back from disk, a window at a time.
impl Handler<HashStored> for FileReader {
    type Result = Result<Sha1, StorageError>;

    fn handle(&mut self, msg: HashStored, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<HashStored>();
        let mut state = msg.state;
        self.read_in_windows(msg.piece, msg.offset, msg.length, |buf| state.update(buf))?;
        Ok(state)
    }
}

/// Streamed pieces: each block's digest as on disk, for smart ban.
impl Handler<DigestBlocks> for FileReader {
    type Result = Result<Vec<[u8; 20]>, StorageError>;

    fn handle(&mut self, msg: DigestBlocks, _: &mut Context<Self>) -> Self::Result {
        let _timing = self.metrics.handling_of::<DigestBlocks>();
        let length = self.layout.piece_len(msg.piece);
        let mut digests = Vec::with_capacity(self.layout.num_blocks(msg.piece) as usize);
        self.read_in_windows(msg.piece, 0, length, |buf| {
            digests.extend(
                buf.chunks(BLOCK_SIZE as usize)
                    .map(|b| <[u8; 20]>::from(Sha1::digest(b))),
            )
        })?;
        Ok(digests)
    }
}

/// `bytes` in the largest binary unit that keeps it at least 1, to one decimal: for
/// messages, where the exact count would only be noise.
fn approximate_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The size of the filesystem that holds `dir` (or, if `dir` does not exist yet, its
/// nearest existing ancestor), in bytes; `None` when the system cannot say (some network
/// and FUSE filesystems report no size at all).
pub fn filesystem_capacity(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|a| a.exists())?;
    let existing = if existing.as_os_str().is_empty() {
        Path::new(".")
    } else {
        existing
    };
    let stats = rustix::fs::statvfs(existing).ok()?;
    let capacity = stats.f_blocks.checked_mul(stats.f_frsize)?;
    (capacity > 0).then_some(capacity)
}

/// Starts a FileWriter or FileReader on the current arbiter, for tests that need no
/// thread of their own for it.
#[cfg(test)]
pub(crate) fn start_here<A>(make: impl FnOnce() -> A) -> Addr<A>
where
    A: Actor<Context = Context<A>>,
{
    make().start()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::magnet::FileSelection;
    use crate::metainfo::SafePath;

    #[test]
    fn slices_of_cuts_blocks_laid_end_to_end_at_any_range() {
        let blocks: [&[u8]; 3] = [b"abcd", b"efgh", b"ij"];
        let text = |from, len| -> Vec<u8> {
            slices_of(&blocks, from, len)
                .iter()
                .flat_map(|s| s.to_vec())
                .collect()
        };
        assert_eq!(text(0, 10), b"abcdefghij");
        assert_eq!(text(2, 5), b"cdefg");
        assert_eq!(text(4, 4), b"efgh");
        assert_eq!(text(9, 1), b"j");
        assert!(slices_of(&blocks, 3, 0).is_empty());
    }

    #[test]
    fn a_vectored_write_of_more_slices_than_one_call_takes_writes_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let data: Vec<u8> = (0..3 * MAX_SLICES + 7).map(|i| (i % 251) as u8).collect();
        let blocks: Vec<&[u8]> = data.chunks(1).collect();
        write_all_vectored_at(&file, slices_of(&blocks, 0, data.len()), 5).unwrap();
        let mut back = vec![0u8; data.len() + 5];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back[5..], &data[..]);
        assert_eq!(&back[..5], &[0; 5]);
    }

    /// The info-hash the test torrents go by.
    const HASH: InfoHash = InfoHash([7; 20]);

    fn parts_path(root: &Path, layout: &Layout) -> PathBuf {
        root.join(SideFiles::new(layout, &HASH).parts)
    }

    /// Files a (40 000 bytes), b (30 000) and c (10 000) in 16 KiB pieces: piece 2 holds
    /// the end of a and the start of b, piece 4 the end of b and all of c.
    fn layout() -> Arc<Layout> {
        let p = |n: &str| SafePath::new(&["t", n]).unwrap();
        Arc::new(
            Layout::new(
                16384,
                [
                    (p("a"), 40_000, false),
                    (p("b"), 30_000, false),
                    (p("c"), 10_000, false),
                ],
            )
            .unwrap(),
        )
    }

    fn data(layout: &Layout) -> Vec<u8> {
        (0..layout.total_length())
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect()
    }

    fn piece_bytes(layout: &Layout, data: &[u8], piece: PieceIndex) -> Vec<u8> {
        let start = layout.piece_offset(piece) as usize;
        data[start..start + layout.piece_len(piece) as usize].to_vec()
    }

    fn selected(layout: &Layout, files: Option<&str>) -> SelectedFiles {
        let sel = files.map(|f| FileSelection::parse(f).unwrap());
        SelectedFiles::new(layout, sel.as_ref())
    }

    /// Opens the storage for `files`, writes `pieces`, and returns every piece as the
    /// FileReader reads it back (`None` where the read fails), with the open report.
    fn run(root: &Path, files: Option<&str>, pieces: &[u32]) -> (Vec<Option<Vec<u8>>>, OpenReport) {
        let layout = layout();
        let data = data(&layout);
        let root = root.to_path_buf();
        let pieces = pieces.to_vec();
        let sel = selected(&layout, files);
        actix::System::new().block_on(async move {
            let (l, r, s) = (layout.clone(), root.clone(), sel.clone());
            let writer = start_here(move || {
                FileWriter::new(r.clone(), l.clone(), HASH, s.clone(), Default::default())
            });
            let (l, r) = (layout.clone(), root.clone());
            let reader =
                start_here(move || FileReader::new(r.clone(), l.clone(), HASH, sel.clone()));
            let report = writer.send(OpenStorage).await.unwrap().unwrap();
            for n in pieces {
                let piece = layout.piece(n).unwrap();
                let bytes = piece_bytes(&layout, &data, piece);
                let blocks = bytes.chunks(16384).map(Bytes::copy_from_slice).collect();
                writer
                    .send(WritePiece { piece, blocks })
                    .await
                    .unwrap()
                    .unwrap();
            }
            let mut read = Vec::new();
            for piece in layout.pieces() {
                let got = reader
                    .send(ReadBlock {
                        piece,
                        offset: 0,
                        length: layout.piece_len(piece),
                    })
                    .await
                    .unwrap();
                read.push(got.ok().map(|b| b.to_vec()));
            }
            writer
                .send(CloseStorage { sync: true })
                .await
                .unwrap()
                .unwrap();
            (read, report)
        })
    }

    #[test]
    fn sizes_in_messages_are_rounded_to_the_largest_binary_unit() {
        assert_eq!(approximate_size(1000), "1000 bytes");
        assert_eq!(approximate_size(4 << 20), "4.0 MiB");
        assert_eq!(approximate_size(1 << 49), "512.0 TiB");
        assert_eq!(approximate_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn capacity_is_that_of_the_nearest_existing_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let here = filesystem_capacity(tmp.path()).expect("a local filesystem has a size");
        assert_eq!(
            filesystem_capacity(&tmp.path().join("not/yet/made")),
            Some(here)
        );
    }

    #[test]
    fn check_piece_hashes_pieces_larger_than_its_window_across_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let p = |n: &str| SafePath::new(&["big", n]).unwrap();
        let piece_len = 3 * CHECK_WINDOW + 1234;
        let layout = Arc::new(
            Layout::new(
                u64::from(piece_len),
                [
                    (p("a"), u64::from(piece_len) - 5000, false),
                    (p("b"), 2 * u64::from(piece_len), false),
                ],
            )
            .unwrap(),
        );
        let data = data(&layout);
        fs::create_dir_all(root.join("big")).unwrap();
        let split = (u64::from(piece_len) - 5000) as usize;
        fs::write(root.join("big/a"), &data[..split]).unwrap();
        let mut b = data[split..].to_vec();
        // One byte wrong in the last piece.
        let last = b.len() - 10;
        b[last] ^= 0xFF;
        fs::write(root.join("big/b"), &b).unwrap();
        let expected: Vec<[u8; 20]> = layout
            .pieces()
            .map(|piece| <[u8; 20]>::from(Sha1::digest(piece_bytes(&layout, &data, piece))))
            .collect();
        let sel = selected(&layout, None);
        let outcome = actix::System::new().block_on(async move {
            let start = || {
                let (l, r, s) = (layout.clone(), root.clone(), sel.clone());
                start_here(move || FileReader::new(r.clone(), l.clone(), HASH, s.clone()))
            };
            let reader = start();
            let mut outcome = Vec::new();
            for (piece, expected) in layout.pieces().zip(expected) {
                let expected = crate::metainfo::PieceCheck::Sha1(expected);
                let ok = reader.send(CheckPiece { piece, expected }).await.unwrap();
                outcome.push(ok.ok().map(Verdict::passed));
            }
            // A reader that finds the file gone (this one kept its handle open).
            fs::remove_file(root.join("big/b")).unwrap();
            let piece = layout.piece(1).unwrap();
            let missing = start()
                .send(CheckPiece {
                    piece,
                    expected: crate::metainfo::PieceCheck::Sha1([0; 20]),
                })
                .await
                .unwrap();
            (outcome, missing.is_err())
        });
        assert_eq!(outcome.0, [Some(true), Some(true), Some(false)]);
        assert!(
            outcome.1,
            "a missing file must be an error, not a failed hash"
        );
    }

    #[test]
    fn unselected_files_stay_absent_and_shared_pieces_read_back_through_the_part_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let l = layout();
        let data = data(&l);
        let (read, report) = run(root, Some("0"), &[0, 1, 2]);
        assert!(report.parts_before.is_none());
        assert!(!root.join("t/b").exists() && !root.join("t/c").exists());
        assert_eq!(fs::read(root.join("t/a")).unwrap(), data[..40_000]);
        assert!(parts_path(root, &l).exists());
        for n in 0..3 {
            let piece = l.piece(n).unwrap();
            assert_eq!(
                read[n as usize].as_deref(),
                Some(&piece_bytes(&l, &data, piece)[..]),
                "piece {n}"
            );
        }
        // Piece 4 lives only in unselected files and was never written: unreadable.
        assert_eq!(read[4], None);

        // Now every file: b is created and piece 2's bytes of it come from the part
        // file, which is then no longer needed.
        let (read, report) = run(root, None, &[3, 4]);
        assert!(report.parts_before.is_some());
        assert!(!parts_path(root, &l).exists());
        for (n, got) in read.iter().enumerate() {
            let piece = l.piece(n as u32).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(&piece_bytes(&l, &data, piece)[..]),
                "piece {n}"
            );
        }
        assert_eq!(fs::read(root.join("t/b")).unwrap(), data[40_000..70_000]);
    }

    #[test]
    fn an_unselected_file_left_by_an_earlier_run_is_used_and_not_the_part_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let l = layout();
        let data = data(&l);
        run(root, None, &[0, 1, 2, 3, 4]);
        // Only c now: b is there from the first run, so piece 4 reads from it.
        let (read, _) = run(root, Some("2"), &[]);
        assert!(!parts_path(root, &l).exists());
        let piece = l.piece(4).unwrap();
        assert_eq!(read[4].as_deref(), Some(&piece_bytes(&l, &data, piece)[..]));
    }

    #[test]
    fn blocks_written_one_by_one_in_any_order_read_back_as_whole_pieces_write_them() {
        for files in [None, Some("0")] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().to_path_buf();
            let layout = layout();
            let l = layout.clone();
            let data = data(&layout);
            let expected = data.clone();
            let sel = selected(&layout, files);
            let (read, refused) = actix::System::new().block_on(async move {
                let (l, r, s) = (layout.clone(), root.clone(), sel.clone());
                let writer = start_here(move || {
                    FileWriter::new(r.clone(), l.clone(), HASH, s.clone(), Default::default())
                });
                let (l, r) = (layout.clone(), root.clone());
                let reader =
                    start_here(move || FileReader::new(r.clone(), l.clone(), HASH, sel.clone()));
                writer.send(OpenStorage).await.unwrap().unwrap();
                // Pieces 0 to 2 (2 is shared by a and b), in 5000-byte pieces of
                // pieces, last first, so every offset and part-file slot is exercised.
                for n in [2, 1, 0] {
                    let piece = layout.piece(n).unwrap();
                    let bytes = piece_bytes(&layout, &data, piece);
                    let chunks: Vec<_> = bytes.chunks(5000).enumerate().collect();
                    for (i, chunk) in chunks.into_iter().rev() {
                        let wrote = writer
                            .send(WriteBlock {
                                piece,
                                offset: i as u32 * 5000,
                                data: Bytes::copy_from_slice(chunk),
                            })
                            .await
                            .unwrap()
                            .unwrap();
                        assert!(wrote);
                    }
                }
                let mut read = Vec::new();
                for n in 0..3 {
                    let piece = layout.piece(n).unwrap();
                    let length = layout.piece_len(piece);
                    let got = reader
                        .send(ReadBlock {
                            piece,
                            offset: 0,
                            length,
                        })
                        .await;
                    read.push(got.unwrap().unwrap().to_vec());
                }
                writer
                    .send(CloseStorage { sync: false })
                    .await
                    .unwrap()
                    .unwrap();
                let piece = layout.piece(3).unwrap();
                let after_close = writer
                    .send(WriteBlock {
                        piece,
                        offset: 0,
                        data: Bytes::from_static(b"late"),
                    })
                    .await
                    .unwrap()
                    .unwrap();
                (read, !after_close)
            });
            for (n, got) in read.iter().enumerate() {
                let piece = l.piece(n as u32).unwrap();
                assert_eq!(
                    got,
                    &piece_bytes(&l, &expected, piece),
                    "{files:?}: piece {n}"
                );
            }
            assert!(refused, "a block after CloseStorage must not be written");
            assert_eq!(parts_path(tmp.path(), &l).exists(), files.is_some());
        }
    }

    #[test]
    fn stored_ranges_and_block_digests_hash_what_is_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let layout = layout();
        let data = data(&layout);
        fs::create_dir_all(root.join("t")).unwrap();
        fs::write(root.join("t/a"), &data[..40_000]).unwrap();
        fs::write(root.join("t/b"), &data[40_000..70_000]).unwrap();
        fs::write(root.join("t/c"), &data[70_000..]).unwrap();
        let sel = selected(&layout, None);
        let piece = layout.piece(2).unwrap();
        let bytes = piece_bytes(&layout, &data, piece);
        let layout_again = layout.clone();
        let (l, r) = (layout.clone(), root.clone());
        let (state, digests) = actix::System::new().block_on(async move {
            let reader =
                start_here(move || FileReader::new(r.clone(), l.clone(), HASH, sel.clone()));
            // The first 1000 bytes hashed in memory, the rest read back.
            let mut state = Sha1::new();
            state.update(&bytes[..1000]);
            let length = layout.piece_len(piece) - 1000;
            let msg = HashStored {
                piece,
                offset: 1000,
                length,
                state,
            };
            let state = reader.send(msg).await.unwrap().unwrap();
            let digests = reader.send(DigestBlocks { piece }).await.unwrap().unwrap();
            (state, digests)
        });
        let whole = piece_bytes(&layout_again, &data, piece);
        assert_eq!(
            <[u8; 20]>::from(state.finalize()),
            <[u8; 20]>::from(Sha1::digest(&whole))
        );
        assert_eq!(digests, vec![<[u8; 20]>::from(Sha1::digest(&whole))]);
    }

    /// Starts a FileWriter for `files` of [`layout`] under `root`.
    fn start_writer(root: &Path, files: Option<&str>) -> Addr<FileWriter> {
        let layout = layout();
        let sel = selected(&layout, files);
        let root = root.to_path_buf();
        start_here(move || {
            FileWriter::new(
                root.clone(),
                layout.clone(),
                HASH,
                sel.clone(),
                Default::default(),
            )
        })
    }

    /// `piece` of [`data`] as a `WritePiece` in two blocks.
    fn write_of(layout: &Layout, data: &[u8], n: u32) -> WritePiece {
        let piece = layout.piece(n).unwrap();
        let bytes = piece_bytes(layout, data, piece);
        let blocks = bytes.chunks(10_000).map(Bytes::copy_from_slice).collect();
        WritePiece { piece, blocks }
    }

    /// A piece still being hashed at shutdown reaches the writer after `CloseStorage`:
    /// it must be refused, and neither reopen a file nor make the part file anew.
    #[test]
    fn write_piece_after_close_storage_is_refused_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let l = layout();
        let data = data(&l);
        let parts = parts_path(&root, &l);
        let a = root.join("t/a");
        let (before, late) = actix::System::new().block_on(async move {
            let writer = start_writer(&root, Some("0"));
            writer.send(OpenStorage).await.unwrap().unwrap();
            // Piece 2 is shared by a (selected) and b (not): it makes the part file.
            writer.send(write_of(&l, &data, 2)).await.unwrap().unwrap();
            writer
                .send(CloseStorage { sync: true })
                .await
                .unwrap()
                .unwrap();
            let before = (fs::read(&a).unwrap(), fs::read(&parts).unwrap());
            // Piece 1 lies in a alone; piece 4 in b and c, whose bytes go to the part file.
            let mut late = Vec::new();
            for n in [1, 4] {
                late.push(writer.send(write_of(&l, &data, n)).await.unwrap());
            }
            (before, late)
        });
        let l = layout();
        let a_now = fs::read(tmp.path().join("t/a")).unwrap();
        assert!(a_now == before.0, "a file was written after CloseStorage");
        let parts_now = fs::read(parts_path(tmp.path(), &l)).unwrap();
        assert!(
            parts_now == before.1,
            "the part file was written after CloseStorage"
        );
        for refused in late {
            assert!(
                matches!(refused, Ok(false)),
                "a piece after CloseStorage must be refused"
            );
        }
    }

    /// The part file a run wrote must survive a write that comes after the storage was
    /// closed (refused) and one after it was opened again (kept, not made anew).
    #[test]
    fn part_file_is_not_truncated_by_writes_after_close_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let l = layout();
        let data = data(&l);
        let expected = data.clone();
        let read = actix::System::new().block_on(async move {
            let writer = start_writer(&root, Some("0"));
            writer.send(OpenStorage).await.unwrap().unwrap();
            writer.send(write_of(&l, &data, 2)).await.unwrap().unwrap();
            writer
                .send(CloseStorage { sync: false })
                .await
                .unwrap()
                .unwrap();
            let _ = writer.send(write_of(&l, &data, 4)).await.unwrap();
            writer.send(OpenStorage).await.unwrap().unwrap();
            writer.send(write_of(&l, &data, 4)).await.unwrap().unwrap();
            writer
                .send(CloseStorage { sync: false })
                .await
                .unwrap()
                .unwrap();
            let sel = selected(&l, Some("0"));
            let (r, l2) = (root.clone(), l.clone());
            let reader =
                start_here(move || FileReader::new(r.clone(), l2.clone(), HASH, sel.clone()));
            let mut read = Vec::new();
            for n in [2, 4] {
                let piece = l.piece(n).unwrap();
                let length = l.piece_len(piece);
                let got = reader.send(ReadBlock {
                    piece,
                    offset: 0,
                    length,
                });
                read.push(got.await.unwrap().unwrap().to_vec());
            }
            read
        });
        let l = layout();
        for (got, n) in read.iter().zip([2, 4]) {
            let piece = l.piece(n).unwrap();
            assert!(
                got == &piece_bytes(&l, &expected, piece),
                "piece {n} does not read back as written"
            );
        }
    }

    /// Opening the part file for a write keeps what it holds when its header is ours.
    #[test]
    fn parts_handle_keeps_a_part_file_whose_header_is_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let l = layout();
        let slots = PartSlots::new(&l);
        let mut file = vec![0u8; super::super::parts::HEADER_LEN as usize + 100];
        file[..super::super::parts::HEADER_USED].copy_from_slice(&slots.header());
        file[super::super::parts::HEADER_LEN as usize..].fill(0xAB);
        fs::write(parts_path(tmp.path(), &l), &file).unwrap();
        let mut writer = FileWriter::new(
            tmp.path().to_path_buf(),
            l.clone(),
            HASH,
            selected(&l, Some("0")),
            Default::default(),
        );
        writer.jail = Some(Jail::create(tmp.path()).unwrap());
        writer.parts_handle().unwrap();
        let now = fs::read(parts_path(tmp.path(), &l)).unwrap();
        assert!(
            now == file,
            "the part file was emptied ({} bytes)",
            now.len()
        );
    }

    #[test]
    fn a_foreign_part_file_is_ignored_and_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let l = layout();
        let data = data(&l);
        fs::write(parts_path(root, &l), b"not a part file").unwrap();
        let (read, report) = run(root, Some("0"), &[2]);
        assert!(report.parts_before.is_none());
        let piece = l.piece(2).unwrap();
        assert_eq!(read[2].as_deref(), Some(&piece_bytes(&l, &data, piece)[..]));
        let head = fs::read(parts_path(root, &l)).unwrap();
        assert_eq!(PartSlots::new(&l).check_header(&head), Ok(()));
    }
}
