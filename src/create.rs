//! `torrent-actors create`: files on disk in, a `.torrent` (v1, v2 or hybrid) out.
//!
//! Two steps. [`scan`] walks the folder once into a sorted list of regular files, refusing
//! what cannot be shared safely (a symlink leading out of the folder, a FIFO, a name no
//! downloader would keep). [`create`] then hashes those files on a bounded set of threads
//! and encodes the torrent with the project's bencode encoder. This module reads files
//! but never writes any except through [`write_new`], and knows nothing of actors or the
//! network; the binary draws the progress bar from the callback it passes.
//!
//! The layout follows what libtorrent 2.0 writes, so that the same files and settings
//! give the same info-hash:
//! - v2 and hybrid: files are in byte order of their path components, which is the
//!   order of a v2 file tree's dictionaries (BEP 52) and so the one order a hybrid's
//!   `files` can have.
//! - v1: files are in byte order of their whole path joined with `/`, as mktorrent
//!   sorts them, so that both make the same torrent of the same folder. BEP 3 asks for
//!   no order; the two differ only where a name holds a byte below `/` (`sub.txt`
//!   comes before `sub/k` here, after it in a v2 tree). libtorrent's v1 follows the
//!   order the folder lists its entries in, which no other tool can reproduce.
//! - A hybrid of a folder aligns every file to a piece with a padding file after it
//!   (`attr` `p`, path `.pad/<length>`), the last file included, except after an empty
//!   file or one that already ends on a piece boundary; its v1 pieces then match its v2
//!   pieces one for one. A hybrid of one file has no `files` list and so no padding, and
//!   a v1-only torrent has none.
//! - v2 and hybrid mark a file its owner may execute with `attr` `x` (in the file tree,
//!   and in a hybrid's v1 part too); v1 does not, as mktorrent does not.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::bencode::BValue;
use crate::layout::{Layout, LayoutError};
use crate::metainfo::merkle::{self, Hash256};
use crate::metainfo::{PathError, SafePath, WebSeedError, WebSeedUrl, MAX_WEB_SEEDS};
use crate::InfoHash;

/// The smallest piece size: one 16 KiB block, the least BEP 52 allows.
pub const MIN_PIECE_SIZE: u64 = 16 * 1024;

/// The largest piece size `create` makes: 64 MiB. Each hashing thread holds one piece in
/// memory, so this bounds the memory `create` uses; libtorrent makes none larger by
/// default either.
pub const MAX_PIECE_SIZE: u64 = 64 << 20;

/// The most files one torrent may hold: far beyond real torrents, and small enough that
/// the `.torrent` stays under the 64 MiB that `info` and `get` read.
pub const MAX_FILES: usize = 200_000;

/// The most trackers one torrent may name.
pub const MAX_TRACKERS: usize = 64;

/// The most hashing threads, whatever the machine has.
const MAX_THREADS: usize = 16;

/// What kind of torrent to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// BEP 3 only: SHA-1 pieces, no padding files.
    V1,
    /// BEP 52 only: a file tree with a SHA-256 Merkle root per file.
    V2,
    /// Both at once, pieces aligned to files so that both views hash the same bytes.
    Hybrid,
}

/// Why a torrent could not be made. Each variant names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The path (or something under it) could not be read.
    // The io error is the source, which `{:#}` prints after the colon.
    #[error("cannot read {path}")]
    Unreadable {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A symlink whose target lies outside the folder being shared: following it would
    /// publish files the user did not point at.
    #[error(
        "{link} is a symlink to {target}, outside {root}; copy the file in or remove the link"
    )]
    SymlinkOutside {
        /// The link.
        link: PathBuf,
        /// Where it leads.
        target: PathBuf,
        /// The folder being shared.
        root: PathBuf,
    },
    /// A symlink to a folder: following it could loop or share the same files twice.
    #[error("{0} is a symlink to a folder, which create does not follow; remove it or copy the folder in")]
    SymlinkToFolder(PathBuf),
    /// A FIFO, socket or device, whose reading could block forever or never end.
    #[error("{0} is not a regular file or folder")]
    NotARegularFile(PathBuf),
    /// A file or folder name that is not UTF-8, which torrents carry as text.
    #[error("the name of {0} is not UTF-8; rename it")]
    NotUtf8(PathBuf),
    /// A name downloaders would refuse or rename (e.g. reserved on Windows or too long).
    #[error("{path} cannot be put in a torrent as it is named: {reason}")]
    BadName {
        /// The file.
        path: PathBuf,
        /// What is wrong with the name.
        reason: PathError,
    },
    /// The path has no name to give the torrent (`/`).
    #[error("{0} has no name to give the torrent")]
    NoName(PathBuf),
    /// A folder with no files in it, at any depth.
    #[error("{0} holds no files")]
    NoFiles(PathBuf),
    /// More than [`MAX_FILES`] files.
    #[error("more than {MAX_FILES} files; make several torrents")]
    TooManyFiles,
    /// A piece size that is not a power of two from 16 KiB to 64 MiB.
    #[error("piece size {0} is not a power of two from 16 KiB to 64 MiB")]
    BadPieceSize(u64),
    /// A tracker URL that is not an http, https or udp URL.
    #[error("tracker {0:?} is not an http, https or udp URL")]
    BadTracker(String),
    /// More than [`MAX_TRACKERS`] trackers.
    #[error("more than {MAX_TRACKERS} trackers")]
    TooManyTrackers,
    /// A web seed URL that would be refused by downloaders.
    #[error("web seed {url:?}: {reason}")]
    BadWebSeed {
        /// The URL as given.
        url: String,
        /// Why.
        reason: WebSeedError,
    },
    /// Every file is empty, or the sizes do not fit a torrent.
    #[error("{0}")]
    Layout(#[from] LayoutError),
    /// A file shrank, vanished, or became a symlink, FIFO or device between the scan
    /// and its hashing.
    #[error("{0} changed while it was being hashed; try again once it is still")]
    FileChanged(PathBuf),
    /// The output file already exists.
    #[error("{0} already exists; remove it or choose another name")]
    OutputExists(PathBuf),
    /// The output file could not be written.
    #[error("cannot write {path}")]
    Output {
        /// The output path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl CreateError {
    /// Whether the error comes from the input files (unreadable or changing) rather than
    /// from what was asked or from the output.
    pub fn is_input_io(&self) -> bool {
        matches!(
            self,
            CreateError::Unreadable { .. } | CreateError::FileChanged(_)
        )
    }

    /// Whether the output could not be written.
    pub fn is_output(&self) -> bool {
        matches!(
            self,
            CreateError::Output { .. } | CreateError::OutputExists(_)
        )
    }
}

/// One regular file found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path inside the torrent's folder (for a single-file torrent, its name alone).
    pub components: Vec<String>,
    /// Where to read it: the file itself, or a symlink's target inside the folder.
    pub disk_path: PathBuf,
    /// Its size at the scan; hashing reads exactly this many bytes.
    pub length: u64,
    /// Its owner may execute it (`S_IXUSR`): a v2 or hybrid torrent marks it with
    /// `attr` `x`, as libtorrent does, so that downloaders can restore the bit.
    pub executable: bool,
}

/// What [`scan`] found: the torrent's name and its files in torrent order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The torrent's `name`: the file's or folder's name.
    pub name: String,
    /// A single file (`length`) rather than a folder (`files`).
    pub single_file: bool,
    /// The files, sorted by path components, bytewise.
    pub files: Vec<SourceFile>,
}

impl Source {
    /// The bytes of all files together.
    pub fn total_length(&self) -> u64 {
        self.files.iter().map(|f| f.length).sum()
    }
}

/// The error for an I/O failure on `path`, for `map_err`.
fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> CreateError {
    let path = path.to_path_buf();
    move |source| CreateError::Unreadable { path, source }
}

/// Where a folder entry's bytes are and their metadata: the entry itself, or for a
/// symlink its target, which must be a file inside `root`.
fn follow(
    entry: &std::fs::DirEntry,
    entry_path: &Path,
    kind: std::fs::FileType,
    root: &Path,
) -> Result<(PathBuf, std::fs::Metadata), CreateError> {
    if !kind.is_symlink() {
        let meta = entry.metadata().map_err(unreadable(entry_path))?;
        return Ok((entry_path.to_path_buf(), meta));
    }
    let target = std::fs::canonicalize(entry_path).map_err(unreadable(entry_path))?;
    if !target.starts_with(root) {
        return Err(CreateError::SymlinkOutside {
            link: entry_path.to_path_buf(),
            target,
            root: root.to_path_buf(),
        });
    }
    let meta = std::fs::metadata(&target).map_err(unreadable(&target))?;
    if meta.is_dir() {
        return Err(CreateError::SymlinkToFolder(entry_path.to_path_buf()));
    }
    Ok((target, meta))
}

/// Walks `path` (a file or a folder) into a [`Source`]. Symlinks are followed only to a
/// regular file inside the folder (their target's bytes go in under the link's name, as
/// libtorrent and mktorrent do); a symlink leading out of the folder or to a folder is
/// refused. The walk uses its own stack, so depth costs no recursion; path length is
/// bounded by the torrent path check.
pub fn scan(path: &Path) -> Result<Source, CreateError> {
    let root = std::fs::canonicalize(path).map_err(unreadable(path))?;
    let given_name = path
        .file_name()
        .filter(|n| *n != "." && *n != "..")
        .or(root.file_name())
        .ok_or_else(|| CreateError::NoName(path.to_path_buf()))?;
    let name = utf8(given_name, path)?;
    check_name(std::slice::from_ref(&name), path)?;
    let meta = std::fs::metadata(&root).map_err(unreadable(&root))?;
    if meta.is_file() {
        return Ok(Source {
            single_file: true,
            files: vec![SourceFile {
                components: vec![name.clone()],
                disk_path: root,
                length: meta.len(),
                executable: is_executable(&meta),
            }],
            name,
        });
    }
    if !meta.is_dir() {
        return Err(CreateError::NotARegularFile(path.to_path_buf()));
    }

    let mut files = Vec::new();
    let mut folders: Vec<(PathBuf, Vec<String>)> = vec![(root.clone(), Vec::new())];
    while let Some((folder, prefix)) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(unreadable(&folder))?;
        for entry in entries {
            let entry = entry.map_err(unreadable(&folder))?;
            let entry_path = entry.path();
            let mut components = prefix.clone();
            components.push(utf8(&entry.file_name(), &entry_path)?);
            let kind = entry.file_type().map_err(unreadable(&entry_path))?;
            let (disk_path, meta) = follow(&entry, &entry_path, kind, &root)?;
            if kind.is_dir() {
                check_name(&components, &entry_path)?;
                folders.push((entry_path, components));
            } else if meta.is_file() {
                check_name(&components, &entry_path)?;
                if files.len() == MAX_FILES {
                    return Err(CreateError::TooManyFiles);
                }
                files.push(SourceFile {
                    components,
                    disk_path,
                    length: meta.len(),
                    executable: is_executable(&meta),
                });
            } else {
                return Err(CreateError::NotARegularFile(entry_path));
            }
        }
    }
    if files.is_empty() {
        return Err(CreateError::NoFiles(path.to_path_buf()));
    }
    // Byte order of components: a v2 file tree's dictionary order, level by level.
    files.sort_by(|a, b| a.components.cmp(&b.components));
    Ok(Source {
        name,
        single_file: false,
        files,
    })
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o100 != 0
}

fn utf8(name: &std::ffi::OsStr, path: &Path) -> Result<String, CreateError> {
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| CreateError::NotUtf8(path.to_path_buf()))
}

/// Refuses a path that a downloader's path check would refuse or rename: what we publish
/// must arrive under the same names.
fn check_name(components: &[String], path: &Path) -> Result<(), CreateError> {
    let bad = |reason| CreateError::BadName {
        path: path.to_path_buf(),
        reason,
    };
    let safe = SafePath::new(components).map_err(bad)?;
    if safe.components() != components {
        let renamed = safe.display();
        return Err(bad(PathError::Unrepairable(renamed)));
    }
    Ok(())
}

/// How to make the torrent, beyond its files.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// v1, v2 or hybrid.
    pub format: Format,
    /// Bytes per piece; `None` picks one from the total size ([`default_piece_size`]).
    pub piece_size: Option<u64>,
    /// Tracker URLs, each in a tier of its own (BEP 12), in the order given.
    pub trackers: Vec<String>,
    /// Web seed URLs (BEP 19 `url-list`).
    pub web_seeds: Vec<String>,
    /// BEP 27: trackers only.
    pub private: bool,
    /// Free text, outside the info dictionary.
    pub comment: Option<String>,
    /// `created by`, outside the info dictionary.
    pub created_by: Option<String>,
    /// `creation date` in seconds since the epoch; `None` leaves it out.
    pub creation_date: Option<i64>,
    /// Hashing threads; 0 means one per core (at most 16).
    pub threads: usize,
}

/// A torrent made by [`create`].
#[derive(Debug, Clone)]
pub struct Created {
    /// The whole `.torrent`.
    pub torrent: Vec<u8>,
    /// SHA-1 of the info dictionary (v1 and hybrid).
    pub info_hash_v1: Option<InfoHash>,
    /// SHA-256 of the info dictionary (v2 and hybrid).
    pub info_hash_v2: Option<Hash256>,
    /// The piece size used.
    pub piece_size: u64,
    /// Pieces in the torrent (padding included for a hybrid).
    pub num_pieces: u32,
}

/// The piece size for `total` bytes when none is given: the smallest power of two from
/// 16 KiB that makes at most 2,000 pieces, capped at 16 MiB. Few enough pieces keep the
/// `.torrent` and the bitfield small; the cap keeps each piece quick to re-fetch.
pub fn default_piece_size(total: u64) -> u64 {
    let mut size = MIN_PIECE_SIZE;
    while size < (16 << 20) && total.div_ceil(size) > 2000 {
        size *= 2;
    }
    size
}

/// Checks `size` as a piece size.
pub fn check_piece_size(size: u64) -> Result<u64, CreateError> {
    if size.is_power_of_two() && (MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(CreateError::BadPieceSize(size))
    }
}

/// What hashing found for one piece.
#[derive(Debug, Default)]
struct PieceHashes {
    /// SHA-1 of the piece, padding included (v1 and hybrid).
    sha1: Option<[u8; 20]>,
    /// The leaf hashes of the file bytes in the piece (v2 and hybrid).
    leaves: Vec<Hash256>,
}

/// Hashes `source` and encodes the torrent. `progress` is called from the hashing
/// threads with the bytes of each piece done.
pub fn create(
    source: &Source,
    options: &CreateOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Created, CreateError> {
    let trackers = check_trackers(&options.trackers)?;
    let web_seeds = check_web_seeds(&options.web_seeds)?;
    let piece_size = match options.piece_size {
        Some(size) => check_piece_size(size)?,
        None => default_piece_size(source.total_length()),
    };
    let format = options.format;
    let padded = format != Format::V1;
    let mut v1_order;
    let source = if format == Format::V1 {
        v1_order = source.clone();
        v1_order
            .files
            .sort_by_cached_key(|f| f.components.join("/"));
        &v1_order
    } else {
        source
    };

    let (entries, owner) = byte_stream(source, piece_size, padded)?;
    let layout = Layout::new(piece_size, entries)?;
    let pieces = hash_pieces(source, &layout, &owner, format, options.threads, progress)?;

    let (info, layers) = info_dict(source, &layout, &owner, &pieces, format, options.private)?;
    let info_bytes = info.encode();
    let torrent = top_dict(options, &trackers, &web_seeds, layers, info).encode();

    Ok(Created {
        torrent,
        info_hash_v1: (format != Format::V2).then(|| InfoHash(Sha1::digest(&info_bytes).into())),
        info_hash_v2: (format != Format::V1).then(|| Sha256::digest(&info_bytes).into()),
        piece_size,
        num_pieces: layout.num_pieces(),
    })
}

/// One entry of the byte stream, as [`Layout::new`] takes it: path, length, padding.
type StreamEntry = (SafePath, u64, bool);

/// The byte stream the pieces cut: the files, with padding after each for v2 and hybrid
/// (for v2 alone the padding is never hashed, but it aligns pieces to files), as the
/// layout's entries; and for each entry, the index of its file in `source` (`None` for
/// padding).
fn byte_stream(
    source: &Source,
    piece_size: u64,
    padded: bool,
) -> Result<(Vec<StreamEntry>, Vec<Option<usize>>), CreateError> {
    let mut entries = Vec::new();
    let mut owner: Vec<Option<usize>> = Vec::new();
    for (i, file) in source.files.iter().enumerate() {
        // Checked again here: a library caller may build a `Source` without `scan`.
        check_name(&file.components, &file.disk_path)?;
        let path = SafePath::new(&file.components).map_err(|reason| CreateError::BadName {
            path: file.disk_path.clone(),
            reason,
        })?;
        entries.push((path, file.length, false));
        owner.push(Some(i));
        let tail = file.length % piece_size;
        if padded && tail != 0 && !source.single_file {
            let pad = piece_size - tail;
            let path = SafePath::new(&[".pad".to_string(), pad.to_string()]).map_err(|reason| {
                CreateError::BadName {
                    path: PathBuf::from(".pad"),
                    reason,
                }
            })?;
            entries.push((path, pad, true));
            owner.push(None);
        }
    }
    Ok((entries, owner))
}

/// The torrent's top-level dictionary: trackers, web seeds, the optional fields of
/// `options`, the piece layers and `info`.
fn top_dict(
    options: &CreateOptions,
    trackers: &[String],
    web_seeds: &[WebSeedUrl],
    layers: BTreeMap<Vec<u8>, BValue>,
    info: BValue,
) -> BValue {
    let mut top = BTreeMap::new();
    if let Some(first) = trackers.first() {
        top.insert(b"announce".to_vec(), BValue::string(first));
        if trackers.len() > 1 {
            let tiers = trackers
                .iter()
                .map(|t| BValue::List(vec![BValue::string(t)]))
                .collect();
            top.insert(b"announce-list".to_vec(), BValue::List(tiers));
        }
    }
    if !web_seeds.is_empty() {
        let list = web_seeds
            .iter()
            .map(|u| BValue::string(u.as_str()))
            .collect();
        top.insert(b"url-list".to_vec(), BValue::List(list));
    }
    if let Some(comment) = &options.comment {
        top.insert(b"comment".to_vec(), BValue::string(comment));
    }
    if let Some(by) = &options.created_by {
        top.insert(b"created by".to_vec(), BValue::string(by));
    }
    if let Some(date) = options.creation_date {
        top.insert(b"creation date".to_vec(), BValue::Int(date));
    }
    if !layers.is_empty() {
        top.insert(b"piece layers".to_vec(), BValue::Dict(layers));
    }
    top.insert(b"info".to_vec(), info);
    BValue::Dict(top)
}

fn check_trackers(trackers: &[String]) -> Result<Vec<String>, CreateError> {
    if trackers.len() > MAX_TRACKERS {
        return Err(CreateError::TooManyTrackers);
    }
    trackers
        .iter()
        .map(|t| {
            let ok = url::Url::parse(t).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https" | "udp") && u.host_str().is_some()
            });
            if ok {
                Ok(t.clone())
            } else {
                Err(CreateError::BadTracker(t.clone()))
            }
        })
        .collect()
}

fn check_web_seeds(urls: &[String]) -> Result<Vec<WebSeedUrl>, CreateError> {
    if urls.len() > MAX_WEB_SEEDS {
        return Err(CreateError::BadWebSeed {
            url: urls[MAX_WEB_SEEDS].clone(),
            reason: WebSeedError::TooMany {
                limit: MAX_WEB_SEEDS,
            },
        });
    }
    urls.iter()
        .map(|u| {
            WebSeedUrl::parse(u).map_err(|reason| CreateError::BadWebSeed {
                url: u.clone(),
                reason,
            })
        })
        .collect()
}

/// Hashes every piece on up to [`MAX_THREADS`] threads, each taking the next piece
/// number from a shared counter and holding one piece's bytes at a time.
fn hash_pieces(
    source: &Source,
    layout: &Layout,
    owner: &[Option<usize>],
    format: Format,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<PieceHashes>, CreateError> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
    .clamp(1, MAX_THREADS)
    .min(layout.num_pieces() as usize);
    // 64 bits, so that threads counting past the last piece can never wrap back to 0.
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Result<Vec<(u32, PieceHashes)>, CreateError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    let mut buf = vec![0u8; layout.piece_length() as usize];
                    let mut open: Option<(usize, File)> = None;
                    while !failed.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some(piece) = u32::try_from(n).ok().and_then(|n| layout.piece(n))
                        else {
                            break;
                        };
                        let len = layout.piece_len(piece) as usize;
                        let result = hash_one(
                            source,
                            layout,
                            owner,
                            format,
                            piece,
                            &mut buf[..len],
                            &mut open,
                        );
                        match result {
                            Ok(h) => {
                                progress(len as u64);
                                done.push((piece.get(), h));
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                    Ok(done)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut all = Vec::with_capacity(layout.num_pieces() as usize);
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(n, _)| *n);
    Ok(all.into_iter().map(|(_, h)| h).collect())
}

/// Reads one piece into `buf` (zeros for padding) and hashes it.
fn hash_one(
    source: &Source,
    layout: &Layout,
    owner: &[Option<usize>],
    format: Format,
    piece: crate::layout::PieceIndex,
    buf: &mut [u8],
    open: &mut Option<(usize, File)>,
) -> Result<PieceHashes, CreateError> {
    let mut file_bytes = 0..0;
    for span in layout.piece_spans(piece) {
        let at = span.piece_offset as usize;
        let out = &mut buf[at..at + span.len as usize];
        let Some(index) = owner[span.file] else {
            out.fill(0);
            continue;
        };
        let file = &source.files[index];
        if open.as_ref().is_none_or(|(i, _)| *i != index) {
            *open = Some((index, open_scanned(file)?));
        }
        if let Some((_, f)) = open.as_ref() {
            f.read_exact_at(out, span.file_offset)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        CreateError::FileChanged(file.disk_path.clone())
                    }
                    _ => CreateError::Unreadable {
                        path: file.disk_path.clone(),
                        source: e,
                    },
                })?;
        }
        // With padding, a piece holds bytes of at most one file, from its start.
        if file_bytes.is_empty() {
            file_bytes = at..at + span.len as usize;
        } else {
            file_bytes.end = at + span.len as usize;
        }
    }
    Ok(PieceHashes {
        sha1: (format != Format::V2).then(|| Sha1::digest(&*buf).into()),
        leaves: if format == Format::V1 {
            Vec::new()
        } else {
            merkle::leaf_hashes(&buf[file_bytes])
        },
    })
}

/// Opens a file [`scan`] found, refusing what took its place since: the last name
/// swapped for a symlink (`O_NOFOLLOW`), or for a FIFO or device (`O_NONBLOCK` keeps
/// the open from waiting on a FIFO; the file must still be a regular file once open).
fn open_scanned(file: &SourceFile) -> Result<File, CreateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let unreadable = |source| CreateError::Unreadable {
        path: file.disk_path.clone(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(&file.disk_path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                CreateError::FileChanged(file.disk_path.clone())
            }
            _ => unreadable(e),
        })?;
    if !f.metadata().map_err(unreadable)?.is_file() {
        return Err(CreateError::FileChanged(file.disk_path.clone()));
    }
    Ok(f)
}

/// The info dictionary and the `piece layers` dictionary (built with the v2 file tree,
/// whose `pieces root`s are the layers' keys).
fn info_dict(
    source: &Source,
    layout: &Layout,
    owner: &[Option<usize>],
    pieces: &[PieceHashes],
    format: Format,
    private: bool,
) -> Result<(BValue, BTreeMap<Vec<u8>, BValue>), CreateError> {
    let piece_size = u64::from(layout.piece_length());
    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), BValue::string(&source.name));
    info.insert(b"piece length".to_vec(), BValue::Int(piece_size as i64));
    if private {
        info.insert(b"private".to_vec(), BValue::Int(1));
    }
    if format != Format::V2 {
        let hashes = pieces.iter().filter_map(|p| p.sha1).flatten().collect();
        info.insert(b"pieces".to_vec(), BValue::Bytes(hashes));
        if source.single_file {
            info.insert(
                b"length".to_vec(),
                BValue::Int(source.files[0].length as i64),
            );
            if format == Format::Hybrid && source.files[0].executable {
                info.insert(b"attr".to_vec(), BValue::string("x"));
            }
        } else {
            let files = v1_files(source, layout, owner, format);
            info.insert(b"files".to_vec(), BValue::List(files));
        }
    }
    let mut layers = BTreeMap::new();
    if format != Format::V1 {
        info.insert(b"meta version".to_vec(), BValue::Int(2));
        let tree = v2_file_tree(source, layout, owner, pieces, &mut layers)?;
        info.insert(b"file tree".to_vec(), BValue::Dict(tree));
    }
    Ok((BValue::Dict(info), layers))
}

/// The v1 `files` list: each entry of `layout`, padding files marked `p`, and in a
/// hybrid the executable ones `x`.
fn v1_files(
    source: &Source,
    layout: &Layout,
    owner: &[Option<usize>],
    format: Format,
) -> Vec<BValue> {
    layout
        .files()
        .iter()
        .zip(owner)
        .map(|(entry, owner)| {
            let file = (*owner).map(|i| &source.files[i]);
            let components = file.map_or(entry.path.components(), |f| &f.components);
            let path = components.iter().map(|c| BValue::string(c)).collect();
            let mut d = vec![
                ("length", BValue::Int(entry.length as i64)),
                ("path", BValue::List(path)),
            ];
            if entry.padding {
                d.push(("attr", BValue::string("p")));
            } else if format == Format::Hybrid && file.is_some_and(|f| f.executable) {
                d.push(("attr", BValue::string("x")));
            }
            BValue::dict(d)
        })
        .collect()
}

/// The v2 `file tree`, adding each file's piece layer to `layers`.
fn v2_file_tree(
    source: &Source,
    layout: &Layout,
    owner: &[Option<usize>],
    pieces: &[PieceHashes],
    layers: &mut BTreeMap<Vec<u8>, BValue>,
) -> Result<BTreeMap<Vec<u8>, BValue>, CreateError> {
    let piece_size = u64::from(layout.piece_length());
    let mut tree = BTreeMap::new();
    for (entry, owner) in owner.iter().enumerate() {
        let Some(index) = owner else { continue };
        let file = &source.files[*index];
        let range = layout.file_pieces(entry);
        let leaves: Vec<Hash256> = if file.length == 0 {
            Vec::new()
        } else {
            pieces[range.start as usize..range.end as usize]
                .iter()
                .flat_map(|p| p.leaves.iter().copied())
                .collect()
        };
        let mut node = vec![("length", BValue::Int(file.length as i64))];
        if file.executable {
            node.push(("attr", BValue::string("x")));
        }
        if let Some(root) = merkle::file_root(&leaves) {
            node.push(("pieces root", BValue::Bytes(root.to_vec())));
            let layer = merkle::piece_layer(&leaves, piece_size)
                .map_err(|_| CreateError::BadPieceSize(piece_size))?;
            if !layer.is_empty() {
                layers.insert(root.to_vec(), BValue::Bytes(layer.concat()));
            }
        }
        insert_tree(&mut tree, &file.components, BValue::dict(node));
    }
    Ok(tree)
}

/// Puts a file's `{"": {length, pieces root}}` at its path in a v2 file tree.
fn insert_tree(tree: &mut BTreeMap<Vec<u8>, BValue>, components: &[String], leaf: BValue) {
    let Some((first, rest)) = components.split_first() else {
        return;
    };
    let child = tree
        .entry(first.as_bytes().to_vec())
        .or_insert_with(|| BValue::Dict(BTreeMap::new()));
    if let BValue::Dict(child) = child {
        if rest.is_empty() {
            child.insert(Vec::new(), leaf);
        } else {
            insert_tree(child, rest, leaf);
        }
    }
}

/// Writes `bytes` to `path`, which must not exist yet: to a temporary file in the same
/// folder first, then moved into place without replacing anything, so a failure leaves
/// no half-written torrent.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), CreateError> {
    let output = |source| CreateError::Output {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        return Err(CreateError::OutputExists(path.to_path_buf()));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Made as any new file is (0666 less the umask), not with a temporary file's 0600:
    // a torrent is meant to be handed on.
    let mut tmp = tempfile::Builder::new()
        .prefix(".torrent-actors-create-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(folder)
        .map_err(output)?;
    tmp.write_all(bytes).map_err(output)?;
    tmp.as_file().sync_all().map_err(output)?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            CreateError::OutputExists(path.to_path_buf())
        } else {
            output(e.error)
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(format: Format, piece_size: u64) -> CreateOptions {
        CreateOptions {
            format,
            piece_size: Some(piece_size),
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            private: false,
            comment: None,
            created_by: None,
            creation_date: None,
            threads: 2,
        }
    }

    #[test]
    fn scan_sorts_by_components_and_create_v1_by_whole_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/k"), b"k").unwrap();
        std::fs::write(root.join("sub.txt"), b"txt").unwrap();
        let source = scan(&root).unwrap();
        let order: Vec<_> = source
            .files
            .iter()
            .map(|f| f.components.join("/"))
            .collect();
        assert_eq!(order, ["sub/k", "sub.txt"]);
        let made = create(&source, &options(Format::V1, 16384), &|_| {}).unwrap();
        let meta = crate::metainfo::Metainfo::from_bytes(&made.torrent).unwrap();
        let listed: Vec<_> = meta
            .info
            .layout
            .files()
            .iter()
            .map(|f| f.path.display())
            .collect();
        assert_eq!(listed, ["t/sub.txt", "t/sub/k"]);
    }

    #[test]
    fn hybrid_pieces_align_to_files_and_v1_hashes_cover_the_padding() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a"), vec![7u8; 20_000]).unwrap();
        std::fs::write(root.join("b"), vec![9u8; 100]).unwrap();
        let source = scan(&root).unwrap();
        let made = create(&source, &options(Format::Hybrid, 16384), &|_| {}).unwrap();
        let meta = crate::metainfo::Metainfo::from_bytes(&made.torrent).unwrap();
        let layout = &meta.info.layout;
        // a (2 pieces), its padding, b (1 piece), its padding.
        assert_eq!(layout.num_pieces(), 3);
        assert_eq!(layout.files()[2].offset, 2 * 16384);
        let mut second = vec![7u8; 20_000 - 16384];
        second.resize(16384, 0);
        let piece = layout.piece(1).unwrap();
        assert_eq!(
            meta.info.piece_check(piece).sha1(),
            Some(Sha1::digest(&second).into())
        );
        assert_eq!(made.info_hash_v1, Some(meta.info_hash));
    }

    #[test]
    fn progress_counts_every_byte_once() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, vec![1u8; 300_000]).unwrap();
        let source = scan(&file).unwrap();
        assert!(source.single_file);
        let done = std::sync::atomic::AtomicU64::new(0);
        create(&source, &options(Format::V2, 32768), &|n| {
            done.fetch_add(n, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(done.into_inner(), 300_000);
    }

    #[test]
    fn default_piece_size_keeps_pieces_few_and_within_bounds() {
        assert_eq!(default_piece_size(1), MIN_PIECE_SIZE);
        assert_eq!(default_piece_size(1 << 30), 1 << 20);
        assert_eq!(default_piece_size(u64::MAX), 16 << 20);
        for total in [0, 1, 1 << 20, 5 << 30, 1 << 40] {
            assert!(check_piece_size(default_piece_size(total)).is_ok());
        }
    }

    #[test]
    fn piece_size_must_be_a_power_of_two_in_range() {
        for bad in [0, 1, 8192, 3 << 14, 128 << 20] {
            assert!(matches!(
                check_piece_size(bad),
                Err(CreateError::BadPieceSize(b)) if b == bad
            ));
        }
        assert_eq!(check_piece_size(64 << 20).unwrap(), 64 << 20);
    }

    #[test]
    fn bad_tracker_and_web_seed_urls_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let source = scan(&file).unwrap();
        let mut o = options(Format::V1, 16384);
        o.trackers = vec!["file:///etc/passwd".into()];
        assert!(matches!(
            create(&source, &o, &|_| {}),
            Err(CreateError::BadTracker(_))
        ));
        o.trackers.clear();
        o.web_seeds = vec!["ftp://mirror.example/".into()];
        assert!(matches!(
            create(&source, &o, &|_| {}),
            Err(CreateError::BadWebSeed { .. })
        ));
    }

    #[test]
    fn a_file_swapped_for_a_symlink_after_the_scan_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("a"), b"harmless").unwrap();
        std::fs::write(tmp.path().join("secret"), b"do not share").unwrap();
        let source = scan(&root).unwrap();
        std::fs::remove_file(root.join("a")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("a")).unwrap();
        assert!(matches!(
            create(&source, &options(Format::V1, 16384), &|_| {}),
            Err(CreateError::FileChanged(_))
        ));
    }

    #[test]
    fn a_file_shrinking_after_the_scan_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, vec![1u8; 50_000]).unwrap();
        let source = scan(&file).unwrap();
        std::fs::write(&file, vec![1u8; 10]).unwrap();
        assert!(matches!(
            create(&source, &options(Format::Hybrid, 16384), &|_| {}),
            Err(CreateError::FileChanged(_))
        ));
    }

    #[test]
    fn a_name_a_downloader_would_rename_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("back\\slash"), b"x").unwrap();
        assert!(matches!(scan(&root), Err(CreateError::BadName { .. })));
    }
}
