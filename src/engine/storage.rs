//! The FileWriter and the Hasher: the two SyncArbiter actors that do blocking work, so the
//! network arbiter never waits on a disk or burns a core on SHA-1.
//!
//! The FileWriter is the only code in the engine that writes the download: it creates
//! the files at their final size, writes verified pieces at their offsets (`pwrite`, one
//! call per file span), and writes the resume file atomically. It runs on one thread, so its operations are ordered: a resume file
//! saved after a piece's write never claims a piece that is not on disk.
//!
//! The FileReader pool reads ranges (blocks for uploads, whole pieces for the start-up
//! check) from read-only handles of its own, on its own threads, so reads never queue
//! behind writes and never block the network arbiter.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use actix::prelude::*;
use bytes::Bytes;
use sha1::{Digest, Sha1};

use super::messages::{
    CloseStorage, HashPiece, OpenReport, OpenStorage, ReadBlock, SaveResume, StorageError,
    WritePiece,
};
use super::resume::FileRecord;
use crate::layout::Layout;

/// Hashes pieces; runs as a SyncArbiter pool sized to the cores.
pub struct Hasher;

impl Actor for Hasher {
    type Context = SyncContext<Self>;
}

impl Handler<HashPiece> for Hasher {
    type Result = bool;

    fn handle(&mut self, msg: HashPiece, _: &mut SyncContext<Self>) -> bool {
        let mut sha = Sha1::new();
        for block in &msg.blocks {
            sha.update(block);
        }
        <[u8; 20]>::from(sha.finalize()) == msg.expected
    }
}

/// Owns the torrent's files on disk; runs on a SyncArbiter of one thread.
pub struct FileWriter {
    /// The download folder; every path is a `SafePath` under it.
    root: PathBuf,
    /// Where each file and piece lives.
    layout: Arc<Layout>,
    /// Open handles, by file index; `None` until first use and for padding files.
    files: Vec<Option<File>>,
    /// Files written since the last sync, so a sync at close (`--fsync`) touches only those.
    dirty: Vec<bool>,
    /// Added to every piece write: a slow disk on demand, for tests of backpressure.
    write_delay: std::time::Duration,
}

impl FileWriter {
    /// A writer for `layout` under `root`. Nothing is touched until [`OpenStorage`].
    pub fn new(root: PathBuf, layout: Arc<Layout>, write_delay: std::time::Duration) -> Self {
        let n = layout.files().len();
        Self {
            root,
            layout,
            files: (0..n).map(|_| None).collect(),
            dirty: vec![false; n],
            write_delay,
        }
    }

    fn path(&self, file: usize) -> PathBuf {
        self.layout.files()[file].path.under(&self.root)
    }

    fn error(&self, file: usize, e: &io::Error) -> StorageError {
        storage_error(&self.path(file), e)
    }

    /// The open handle of a file, opening it (read-write) on first use.
    fn handle(&mut self, file: usize) -> Result<&File, StorageError> {
        if self.files[file].is_none() {
            let path = self.path(file);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| storage_error(&path, &e))?;
            self.files[file] = Some(f);
        }
        self.files[file]
            .as_ref()
            .ok_or_else(|| self.error(file, &io::Error::other("file not open")))
    }

    fn resume_path(&self) -> PathBuf {
        resume_path(&self.root, &self.layout)
    }

    /// The size and modification time of every file, as recorded in the resume file.
    fn file_records(&self) -> Vec<FileRecord> {
        self.layout
            .files()
            .iter()
            .map(|f| {
                let meta = (!f.padding)
                    .then(|| fs::metadata(f.path.under(&self.root)).ok())
                    .flatten();
                FileRecord {
                    size: meta.as_ref().map(|m| m.len()),
                    mtime_ns: meta.as_ref().and_then(mtime_ns),
                }
            })
            .collect()
    }

    fn sync_dirty(&mut self) -> Result<(), StorageError> {
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

/// The resume file of a torrent: beside the download, named after the torrent.
pub fn resume_path(root: &Path, layout: &Layout) -> PathBuf {
    let name = layout
        .files()
        .first()
        .and_then(|f| f.path.components().first())
        .map_or("torrent", String::as_str);
    root.join(format!(".{name}.resume.json"))
}

fn mtime_ns(meta: &fs::Metadata) -> Option<u128> {
    meta.modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
}

fn storage_error(path: &Path, e: &io::Error) -> StorageError {
    StorageError {
        path: path.display().to_string(),
        message: e.to_string(),
        // ENOSPC (28) and EDQUOT (122) on Linux.
        disk_full: matches!(e.raw_os_error(), Some(28) | Some(122)),
    }
}

impl Actor for FileWriter {
    type Context = SyncContext<Self>;
}

impl Handler<OpenStorage> for FileWriter {
    type Result = Result<OpenReport, StorageError>;

    fn handle(&mut self, _: OpenStorage, _: &mut SyncContext<Self>) -> Self::Result {
        let before = self.file_records();
        let resume = fs::read(self.resume_path()).ok();
        for (i, f) in self.layout.files().iter().enumerate() {
            if f.padding {
                continue;
            }
            let path = self.path(i);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| storage_error(parent, &e))?;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| storage_error(&path, &e))?;
            // Final size up front: sparse on Linux, and a file that was truncated between
            // runs is put back to its length (the lost pieces fail their check).
            let len = file.metadata().map_err(|e| storage_error(&path, &e))?.len();
            if len != f.length {
                file.set_len(f.length)
                    .map_err(|e| storage_error(&path, &e))?;
            }
            self.files[i] = Some(file);
        }
        Ok(OpenReport { before, resume })
    }
}

impl Handler<WritePiece> for FileWriter {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: WritePiece, _: &mut SyncContext<Self>) -> Self::Result {
        if !self.write_delay.is_zero() {
            std::thread::sleep(self.write_delay);
        }
        let spans = self.layout.piece_spans(msg.piece);
        let mut blocks = msg.blocks.iter();
        let mut current: &[u8] = &[];
        for span in spans {
            let padding = self.layout.files()[span.file].padding;
            let mut need = span.len as usize;
            let mut file_offset = span.file_offset;
            while need > 0 {
                if current.is_empty() {
                    current = match blocks.next() {
                        Some(b) => b,
                        None => {
                            return Err(self.error(
                                span.file,
                                &io::Error::other("piece shorter than its spans"),
                            ))
                        }
                    };
                }
                let n = need.min(current.len());
                let (chunk, rest) = current.split_at(n);
                if !padding {
                    self.handle(span.file)?
                        .write_all_at(chunk, file_offset)
                        .map_err(|e| self.error(span.file, &e))?;
                }
                current = rest;
                need -= n;
                file_offset += n as u64;
            }
            if !padding {
                self.dirty[span.file] = true;
            }
        }
        Ok(())
    }
}

impl Handler<SaveResume> for FileWriter {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: SaveResume, _: &mut SyncContext<Self>) -> Self::Result {
        let mut data = msg.data;
        data.files = self.file_records();
        let path = self.resume_path();
        let tmp = path.with_extension("json.tmp");
        let bytes = data.to_json();
        let write = || -> io::Result<()> {
            let f = File::create(&tmp)?;
            f.write_all_at(&bytes, 0)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| storage_error(&path, &e))
    }
}

impl Handler<CloseStorage> for FileWriter {
    type Result = Result<(), StorageError>;

    fn handle(&mut self, msg: CloseStorage, _: &mut SyncContext<Self>) -> Self::Result {
        if msg.sync {
            self.sync_dirty()?;
        }
        for f in &mut self.files {
            *f = None;
        }
        Ok(())
    }
}

/// Reads blocks for uploads; a SyncArbiter pool, each instance with its own read-only
/// handles (opened on first use), so readers never wait for each other or the writer.
pub struct FileReader {
    /// The download folder.
    root: PathBuf,
    /// Where each block lives.
    layout: Arc<Layout>,
    /// Read-only handles by file index.
    files: Vec<Option<File>>,
}

impl FileReader {
    /// A reader for `layout` under `root`.
    pub fn new(root: PathBuf, layout: Arc<Layout>) -> Self {
        let n = layout.files().len();
        Self {
            root,
            layout,
            files: (0..n).map(|_| None).collect(),
        }
    }

    fn read_span(&mut self, file: usize, offset: u64, dst: &mut [u8]) -> Result<(), StorageError> {
        let path = self.layout.files()[file].path.under(&self.root);
        if self.files[file].is_none() {
            let f = File::open(&path).map_err(|e| storage_error(&path, &e))?;
            self.files[file] = Some(f);
        }
        match &self.files[file] {
            Some(f) => f
                .read_exact_at(dst, offset)
                .map_err(|e| storage_error(&path, &e)),
            None => Err(storage_error(&path, &io::Error::other("file not open"))),
        }
    }
}

impl Actor for FileReader {
    type Context = SyncContext<Self>;
}

impl Handler<ReadBlock> for FileReader {
    type Result = Result<Bytes, StorageError>;

    fn handle(&mut self, msg: ReadBlock, _: &mut SyncContext<Self>) -> Self::Result {
        let start = self.layout.piece_offset(msg.piece) + u64::from(msg.offset);
        let mut buf = vec![0u8; msg.length as usize];
        for span in self.layout.spans(start, msg.length) {
            if self.layout.files()[span.file].padding {
                continue; // Padding reads as zeros, as `buf` already is.
            }
            let from = span.piece_offset as usize;
            let Some(dst) = buf.get_mut(from..from + span.len as usize) else {
                continue;
            };
            self.read_span(span.file, span.file_offset, dst)?;
        }
        Ok(Bytes::from(buf))
    }
}
