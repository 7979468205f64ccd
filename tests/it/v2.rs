//! BitTorrent v2-only torrents (BEP 52) downloaded by `get`: made by libtorrent 2.0's
//! `create_torrent` (v2_only) or by our `create --v2`, seeded by libtorrent on
//! 127.0.0.1, every piece checked by its SHA-256 Merkle node, and the files compared byte
//! for byte with the seeder's.
//!
//! Needs `/usr/bin/python3` with `python3-libtorrent` (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use torrent_actors::metainfo::Metainfo;

use crate::support::{
    assert_same_files, lt_create, our_create_ok, run_until, write_pattern, Act, HostilePeer,
    LtKind, LtSeeder, SeedOpts, Served,
};

const KIB: usize = 1024;

/// Files that move piece, block and file boundaries: a file of several pieces with a
/// tail mid-block, an empty one, one shorter than a block, one of exactly a piece, and a
/// nested one; v2 pieces start each file afresh.
fn folder(parent: &Path, piece: usize) -> PathBuf {
    let root = parent.join("v2album");
    write_pattern(&root.join("big.bin"), 4 * piece + 5000, 1);
    write_pattern(&root.join("empty"), 0, 2);
    write_pattern(&root.join("small.txt"), 100, 3);
    write_pattern(&root.join("exact.bin"), piece, 4);
    write_pattern(&root.join("sub/deep/tail.bin"), piece + 16 * KIB + 7, 5);
    root
}

/// Seeds `torrent` from `seed_dir` with libtorrent, downloads it with `get`, and
/// compares every file.
fn lt_seeds_v2_to_get(torrent: &Path, seed_dir: &Path, tmp: &Path) -> PathBuf {
    lt_seeds_v2_to_get_with(torrent, seed_dir, tmp, &[]).0
}

/// As [`lt_seeds_v2_to_get`], with more arguments for `get`; returns its stderr too.
fn lt_seeds_v2_to_get_with(
    torrent: &Path,
    seed_dir: &Path,
    tmp: &Path,
    extra: &[&str],
) -> (PathBuf, String) {
    let meta = Metainfo::from_bytes(&std::fs::read(torrent).unwrap()).expect("v2 torrent reads");
    assert!(meta.info.v2_only, "the torrent is v2-only");
    let seeder = LtSeeder::start(torrent, seed_dir, SeedOpts::direct());
    let out = tmp.join("out");
    let mut get = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    get.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--bind", "127.0.0.1", "--port", "0", "--no-dht"])
        .args(["--peer-timeout", "60", "--peer"])
        .arg(seeder.addr().to_string())
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(torrent);
    let limit = Duration::from_secs(120);
    let output = run_until(get, limit).unwrap_or_else(|o| {
        panic!(
            "get overran {limit:?}:\n{}\nseeder:\n{}",
            String::from_utf8_lossy(&o.stderr),
            seeder.log()
        )
    });
    assert!(
        output.status.success(),
        "get failed ({}):\n{}{}\nseeder:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        seeder.log()
    );
    let files: Vec<(PathBuf, u64)> = meta
        .info
        .layout
        .files()
        .iter()
        .filter(|f| !f.padding)
        .map(|f| (PathBuf::from(f.path.display()), f.length))
        .collect();
    assert_same_files(seed_dir, &out, &files);
    // Virtual padding is never stored.
    assert!(!out.join(".pad").exists());
    (out, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A second `get` into the same folder, with no peer at all, finds every piece there
/// (its resume file, or the Merkle check of the data on disk) and finishes.
fn get_again_finds_everything(torrent: &Path, out: &Path) {
    let mut get = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    get.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--bind", "127.0.0.1", "--port", "0", "--no-dht"])
        .arg("-o")
        .arg(out)
        .arg(torrent);
    let output = run_until(get, Duration::from_secs(60)).unwrap_or_else(|o| {
        panic!(
            "second get overran:\n{}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert!(
        output.status.success(),
        "second get failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn v2_only_single_file_from_libtorrent_downloads_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let file = seed_dir.join("single.bin");
    write_pattern(&file, 5 * 32 * KIB + 1234, 7);
    let torrent = tmp.path().join("single.torrent");
    lt_create(LtKind::V2, &file, &torrent, 32 * 1024, false);
    let _ = lt_seeds_v2_to_get(&torrent, &seed_dir, tmp.path());
}

#[test]
fn v2_only_multi_file_from_libtorrent_downloads_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let source = folder(&seed_dir, 32 * KIB);
    let torrent = tmp.path().join("multi.torrent");
    lt_create(LtKind::V2, &source, &torrent, 32 * 1024, false);
    let out = lt_seeds_v2_to_get(&torrent, &seed_dir, tmp.path());
    get_again_finds_everything(&torrent, &out);
}

#[test]
fn our_v2_torrent_seeded_by_libtorrent_downloads_with_get() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let source = folder(&seed_dir, 64 * KIB);
    let torrent = tmp.path().join("ours.torrent");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    our_create_ok(&[
        "--v2",
        "--piece-size",
        "64KiB",
        "--no-date",
        &s(&source),
        "-o",
        &s(&torrent),
    ]);
    let _ = lt_seeds_v2_to_get(&torrent, &seed_dir, tmp.path());
}

#[test]
fn v2_pieces_over_the_memory_budget_are_streamed_and_checked_by_reading_them_back() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let file = seed_dir.join("huge.bin");
    // Two and a half 8 MiB pieces under a 4 MiB budget: streamed to disk.
    write_pattern(&file, 5 * 4 * 1024 * KIB + 777, 11);
    let torrent = tmp.path().join("huge.torrent");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    our_create_ok(&[
        "--v2",
        "--piece-size",
        "8MiB",
        "--no-date",
        &s(&file),
        "-o",
        &s(&torrent),
    ]);
    let (_, stderr) = lt_seeds_v2_to_get_with(
        &torrent,
        &seed_dir,
        tmp.path(),
        &["-v", "--max-in-progress-mib", "4"],
    );
    assert!(
        stderr.contains("WriteBlock") && !stderr.contains("WritePiece"),
        "the pieces were not streamed:\n{stderr}"
    );
    assert!(
        stderr.contains("CheckPiece"),
        "no streamed v2 piece was checked by reading it back:\n{stderr}"
    );
}

#[test]
fn a_failed_v2_piece_is_blamed_on_the_exact_block_by_leaf_hashes_from_an_honest_peer() {
    const PIECES: usize = 1024;
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let file = seed_dir.join("blame.bin");
    // Whole pieces only (no padding), so the scripted liar serves the file as it is.
    let piece = 64 * KIB;
    // Large enough that the download outlasts the seeder's joining: the liar's bad
    // block comes early, and a peer that joins later with the piece is asked too.
    write_pattern(&file, PIECES * piece, 13);
    let torrent = tmp.path().join("blame.torrent");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    our_create_ok(&[
        "--v2",
        "--piece-size",
        "64KiB",
        "--no-date",
        &s(&file),
        "-o",
        &s(&torrent),
    ]);
    let meta = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    // Flips one block, the eleventh it sends.
    let liar = HostilePeer::start(
        Served {
            info_hash: meta.info_hash,
            content: std::sync::Arc::new(std::fs::read(&file).unwrap()),
            piece_len: piece as u64,
        },
        Act::CorruptOneBlock,
    );
    // An honest libtorrent seeder answers the hash request for the failed piece's
    // leaves.
    let seeder = LtSeeder::start(&torrent, &seed_dir, SeedOpts::direct());
    let out = tmp.path().join("out");
    let mut get = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    get.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args([
            "get",
            "-v",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dht",
        ])
        .args(["--peer-timeout", "60", "--peer"])
        .arg(seeder.addr().to_string())
        .arg("--peer")
        .arg(liar.addr().to_string())
        .arg("-o")
        .arg(&out)
        .arg(&torrent);
    let output = run_until(get, Duration::from_secs(120)).expect("get ends in time");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "get failed:\n{stderr}\nseeder:\n{}",
        seeder.log()
    );
    assert_eq!(
        liar.counters()
            .misbehaviours
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the bad block was not sent"
    );
    let blamed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("bad blocks blamed by the merkle tree"))
        .collect();
    assert_eq!(blamed.len(), 1, "{stderr}");
    assert!(blamed[0].contains("bad_blocks: 1"), "{}", blamed[0]);
    let liar_addr = liar.addr().to_string();
    assert!(
        stderr.lines().any(
            |l| l.contains("misbehaved, banned") && l.contains(&liar_addr)
                || l.contains("failed its hash") && l.contains(&liar_addr)
        ),
        "the liar {liar_addr} was not struck:\n{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("banned") && l.contains(&seeder.addr().to_string())),
        "the honest seeder was banned:\n{stderr}"
    );
    assert_same_files(
        &seed_dir,
        &out,
        &[(PathBuf::from("blame.bin"), (PIECES * piece) as u64)],
    );
}
