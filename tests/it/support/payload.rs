//! Test payloads: deterministic pseudo-random files on disk, in a single-file layout or a
//! multi-file layout full of the cases engines get wrong.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Files written into a folder, ready to be turned into a torrent.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The folder the payload's name is under: libtorrent's save path, and the folder to
    /// compare a download against.
    pub dir: PathBuf,
    /// The torrent's name: the file of a single-file payload, the top folder of a
    /// multi-file one.
    pub name: String,
    /// Every file, relative to `dir` (so each starts with `name`), with its length, in the
    /// order a torrent made from `root()` lists them.
    pub files: Vec<(PathBuf, u64)>,
}

impl Payload {
    /// One file `dir/name` of `len` bytes.
    pub fn single(dir: &Path, name: &str, len: u64) -> Payload {
        let rel = PathBuf::from(name);
        write_file(&dir.join(&rel), &rel, len);
        Payload {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            files: vec![(rel, len)],
        }
    }

    /// A folder `dir/name` whose file ends fall on the boundaries engines get wrong, for a
    /// torrent with pieces of `piece_len` bytes (at least 32 KiB, mktorrent's minimum).
    ///
    /// In torrent order: an empty first file, a 1-byte file, a file deep in nested folders,
    /// a file ending exactly on the end of piece 0, an empty file right on that boundary, a
    /// file of one block plus one byte, a file ending one byte past the end of piece 2,
    /// then larger files that cross several pieces. Names carry spaces. The numeric
    /// prefixes fix the order, because mktorrent sorts files by path.
    pub fn multi(dir: &Path, name: &str, piece_len: u64) -> Payload {
        assert!(
            piece_len >= 32 * 1024 && piece_len.is_power_of_two(),
            "piece length {piece_len} is not a power of two of at least 32 KiB"
        );
        let p = piece_len;
        let block = 16 * 1024;
        // Each entry's length is chosen from the running offset where a boundary matters.
        let mut layout: Vec<(&str, u64)> = Vec::new();
        let mut offset = 0;
        let mut push = |rel: &'static str, len: u64| {
            layout.push((rel, len));
            offset += len;
            offset
        };
        push("00 empty first.txt", 0);
        push("01 one byte", 1);
        let o = push("02 nested/deeper/deepest/17 bytes.bin", 17);
        let o = push("03 ends on piece 1.bin", p - o);
        debug_assert_eq!(o, p);
        push("04 empty on boundary/empty", 0);
        let o = push("05 block plus one.bin", block + 1);
        let o = push("06 ends one past piece 3.bin", 3 * p + 1 - o);
        debug_assert_eq!(o, 3 * p + 1);
        push("07 large/a.bin", 3 * p + 7);
        push("07 large/b c.bin", 2 * p + 12_345);
        push("07 large/sub/c.bin", 4 * p - 1);

        let mut files = Vec::with_capacity(layout.len());
        for (rel, len) in layout {
            let rel = Path::new(name).join(rel);
            write_file(&dir.join(&rel), &rel, len);
            files.push((rel, len));
        }
        Payload {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            files,
        }
    }

    /// The path to hand to mktorrent: the file or the top folder.
    pub fn root(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The sum of all file lengths.
    pub fn total_len(&self) -> u64 {
        self.files.iter().map(|(_, len)| len).sum()
    }
}

/// Writes `len` bytes derived from `seed_path` into `path`, creating parent folders. The
/// same relative path always gets the same bytes, and different paths get different
/// bytes, so a file written to the wrong place is caught by a comparison.
fn write_file(path: &Path, seed_path: &Path, len: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("creating folder {}: {e}", parent.display()));
    }
    let file = File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let mut rng = SplitMix64::new(fnv1a(seed_path.to_string_lossy().as_bytes()));
    let mut left = len;
    while left > 0 {
        let word = rng.next().to_le_bytes();
        let take = left.min(8) as usize;
        out.write_all(&word[..take])
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        left -= take as u64;
    }
    out.flush()
        .unwrap_or_else(|e| panic!("flushing {}: {e}", path.display()));
}

/// FNV-1a over bytes: a stable seed from a path, the same on every run and machine.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64: a tiny generator whose output does not repeat within a test payload, so
/// pieces differ and a piece delivered at the wrong index fails its hash.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
