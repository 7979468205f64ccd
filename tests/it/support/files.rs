//! Byte-for-byte comparison of a downloaded tree against the payload it came from.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Checks that every `(relative path, length)` in `files` exists under both roots with
/// that length and the same bytes. Lengths are compared first; for differing contents the
/// first differing offset is reported. All problems are listed in one panic.
pub fn assert_same_files(expected_root: &Path, actual_root: &Path, files: &[(PathBuf, u64)]) {
    let problems: Vec<String> = files
        .iter()
        .filter_map(|(rel, len)| compare_one(expected_root, actual_root, rel, *len).err())
        .collect();
    assert!(
        problems.is_empty(),
        "{} of {} files differ between {} (expected) and {} (actual):\n  {}",
        problems.len(),
        files.len(),
        expected_root.display(),
        actual_root.display(),
        problems.join("\n  ")
    );
}

fn compare_one(
    expected_root: &Path,
    actual_root: &Path,
    rel: &Path,
    len: u64,
) -> Result<(), String> {
    let expected = expected_root.join(rel);
    let actual = actual_root.join(rel);
    let expected_len = file_len(&expected)?;
    if expected_len != len {
        return Err(format!(
            "{}: the expected copy has {expected_len} bytes, the list says {len}",
            rel.display()
        ));
    }
    let actual_len = file_len(&actual)?;
    if actual_len != len {
        return Err(format!(
            "{}: {actual_len} bytes, expected {len}",
            rel.display()
        ));
    }
    match first_difference(&expected, &actual)? {
        None => Ok(()),
        Some(offset) => Err(format!(
            "{}: contents differ, first at byte offset {offset} of {len}",
            rel.display()
        )),
    }
}

fn file_len(path: &Path) -> Result<u64, String> {
    let meta = path
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    Ok(meta.len())
}

/// The offset of the first byte where two files of equal length differ.
fn first_difference(a: &Path, b: &Path) -> Result<Option<u64>, String> {
    let open = |p: &Path| {
        File::open(p)
            .map(|f| BufReader::with_capacity(256 * 1024, f))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let (mut ra, mut rb) = (open(a)?, open(b)?);
    let mut buf_a = vec![0u8; 64 * 1024];
    let mut buf_b = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut ra, &mut buf_a).map_err(|e| format!("{}: {e}", a.display()))?;
        let m = read_full(&mut rb, &mut buf_b).map_err(|e| format!("{}: {e}", b.display()))?;
        if let Some(i) = buf_a[..n.min(m)]
            .iter()
            .zip(&buf_b[..n.min(m)])
            .position(|(x, y)| x != y)
        {
            return Ok(Some(offset + i as u64));
        }
        if n != m {
            // The files changed length while being read.
            return Ok(Some(offset + n.min(m) as u64));
        }
        if n == 0 {
            return Ok(None);
        }
        offset += n as u64;
    }
}

/// Reads until `buf` is full or the file ends, so both sides advance in step.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
