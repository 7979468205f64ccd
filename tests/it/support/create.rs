//! Helpers for `create`'s tests: the same files made into torrents by libtorrent's
//! `create_torrent` (through `tests/support/lt_create.py`) and by mktorrent, our own
//! `create` run as a child process, and the raw bytes of a torrent's `info` dictionary,
//! which is what an info-hash covers.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use torrent_actors::bencode;

use super::process::run_with_timeout;

/// Debian's interpreter, the one python3-libtorrent is installed for.
const PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_create.py");

/// Any tool here gets this long; the payloads are a few hundred KiB.
const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// Which kind of torrent libtorrent makes.
#[derive(Debug, Clone, Copy)]
pub enum LtKind {
    /// `create_torrent.v1_only`.
    V1,
    /// `create_torrent.v2_only`.
    V2,
    /// Neither flag: libtorrent 2.0's default, a hybrid.
    Hybrid,
}

fn check(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Makes `out` from `source` with libtorrent's `create_torrent`.
pub fn lt_create(kind: LtKind, source: &Path, out: &Path, piece_length: u64, private: bool) {
    let kind = match kind {
        LtKind::V1 => "v1",
        LtKind::V2 => "v2",
        LtKind::Hybrid => "hybrid",
    };
    let mut cmd = Command::new(PYTHON);
    cmd.arg(SCRIPT)
        .arg(kind)
        .arg(source)
        .arg(out)
        .arg(piece_length.to_string());
    if private {
        cmd.arg("private");
    }
    check(
        run_with_timeout(cmd, TOOL_LIMIT),
        "libtorrent's create_torrent",
    );
}

/// Makes `out` from `source` with mktorrent (v1), pieces of `2^piece_exp` bytes.
pub fn mktorrent_create(source: &Path, out: &Path, piece_exp: u32, private: bool) {
    let mut cmd = Command::new("mktorrent");
    cmd.arg("--no-date")
        .arg(format!("--piece-length={piece_exp}"))
        .arg("--output")
        .arg(out);
    if private {
        cmd.arg("--private");
    }
    cmd.arg(source);
    check(run_with_timeout(cmd, TOOL_LIMIT), "mktorrent");
}

/// Runs our `torrent-actors create ARGS`, whatever its exit status.
pub fn our_create(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "").arg("create");
    cmd.args(args);
    run_with_timeout(cmd, TOOL_LIMIT)
}

/// Runs our `create` and panics with its output unless it succeeds.
pub fn our_create_ok(args: &[&str]) -> Output {
    check(our_create(args), "torrent-actors create")
}

/// The raw bytes of top-level `key` in a `.torrent`, as written.
pub fn top_level_raw(torrent: &Path, key: &str) -> Option<Vec<u8>> {
    let bytes = fs::read(torrent).unwrap_or_else(|e| panic!("reading {}: {e}", torrent.display()));
    let top =
        bencode::decode(&bytes).unwrap_or_else(|e| panic!("decoding {}: {e}", torrent.display()));
    let dict = top
        .as_dict()
        .unwrap_or_else(|| panic!("{} is not a dictionary", torrent.display()));
    dict.get(key.as_bytes()).map(|v| v.raw().to_vec())
}

/// The raw bytes of a `.torrent`'s `info` dictionary.
pub fn info_bytes(torrent: &Path) -> Vec<u8> {
    top_level_raw(torrent, "info")
        .unwrap_or_else(|| panic!("{} has no info dictionary", torrent.display()))
}

/// Deterministic bytes, different for every seed.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// Writes `len` pattern bytes to `path`, making its folders.
pub fn write_pattern(path: &Path, len: usize, seed: u8) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("making a payload folder");
    }
    fs::write(path, pattern(len, seed)).expect("writing a payload file");
}
