//! `get --files`: downloading some files of a torrent (BEP 53 indices, as `info` prints
//! them) from a libtorrent seeder on loopback, then the rest, then serving a piece shared
//! with a file we never created to a libtorrent leecher.
//!
//! The payload is `Payload::multi` in 32 KiB pieces (`P`). By index: 0 empty, 1 one byte,
//! 2 17 bytes, 3 to the end of piece 0, 4 empty, 5 a block plus one byte (inside piece
//! 1, which it shares with 6), 6 to one byte past piece 3, 7 to 6P+8, 8 to 8P+12353
//! (sharing piece 6 with 7 and piece 8 with 9), 9 the rest.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    assert_same_files, fetched, make_torrent, read_metainfo, run_ok, ChildGuard, LeechOpts,
    LtLeecher, LtSeeder, Payload, SeedOpts,
};

const GET_LIMIT: Duration = Duration::from_secs(120);

/// The files the partial download selects: one inside a shared piece, one sharing a piece
/// at each end.
const SELECTED: [usize; 2] = [5, 8];

struct Fixture {
    _tmp: tempfile::TempDir,
    payload: Payload,
    torrent: PathBuf,
    out: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("temp folder for a file-selection test");
    let payload = Payload::multi(&tmp.path().join("seed"), "album", 1 << 15);
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, 15, &[]);
    // The indices below are the torrent's order; check it is the payload's.
    let layout = read_metainfo(&torrent).info.layout;
    let listed: Vec<u64> = layout.files().iter().map(|f| f.length).collect();
    let made: Vec<u64> = payload.files.iter().map(|(_, len)| *len).collect();
    assert_eq!(listed, made, "the torrent lists the files in another order");
    let out = tmp.path().join("out");
    Fixture {
        payload,
        torrent,
        out,
        _tmp: tmp,
    }
}

fn ours() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "");
    cmd
}

fn get_command(f: &Fixture, peer: SocketAddr, extra: &[&str]) -> Command {
    let mut cmd = ours();
    cmd.args([
        "get",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--peer-timeout",
        "60",
    ])
    .arg("--peer")
    .arg(peer.to_string())
    .arg("-o")
    .arg(&f.out)
    .args(extra)
    .arg(&f.torrent);
    cmd
}

fn run_get(f: &Fixture, peer: SocketAddr, extra: &[&str]) -> Output {
    run_ok(get_command(f, peer, extra), GET_LIMIT)
}

/// Bytes of the pieces holding any byte of the `selected` files.
fn wanted_bytes(torrent: &Path, selected: &[usize]) -> u64 {
    let layout = read_metainfo(torrent).info.layout;
    let mut pieces: Vec<u32> = selected
        .iter()
        .flat_map(|&i| layout.file_pieces(i))
        .collect();
    pieces.sort_unstable();
    pieces.dedup();
    pieces
        .into_iter()
        .map(|n| u64::from(layout.piece_len(layout.piece(n).unwrap())))
        .sum()
}

fn seeder(f: &Fixture) -> LtSeeder {
    LtSeeder::start(&f.torrent, &f.payload.dir, SeedOpts::direct())
}

fn selected_files(f: &Fixture) -> Vec<(PathBuf, u64)> {
    SELECTED
        .iter()
        .map(|&i| f.payload.files[i].clone())
        .collect()
}

/// Checks the selected files match the source and no other file was created.
fn assert_only_selected(f: &Fixture) {
    assert_same_files(&f.payload.dir, &f.out, &selected_files(f));
    for (i, (path, _)) in f.payload.files.iter().enumerate() {
        if !SELECTED.contains(&i) {
            assert!(
                !f.out.join(path).exists(),
                "file {i} ({}) was not selected but exists",
                path.display()
            );
        }
    }
}

#[test]
fn get_files_downloads_only_the_selected_files_then_the_rest_without_refetching() {
    let f = fixture();
    let seeder = seeder(&f);
    let list = SELECTED.map(|i| i.to_string()).join(",");
    let first = run_get(&f, seeder.addr(), &["--files", &list]);
    assert_only_selected(&f);
    // Whole pieces: those of the selected files, shared ones included, and no more.
    let partial = wanted_bytes(&f.torrent, &SELECTED);
    assert_eq!(fetched(&first), partial);
    let parts = fs::read_dir(&f.out)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".parts"));
    assert!(parts, "no part file for the shared pieces");

    // Every file now: the pieces verified by the first run are not fetched again, the
    // shared ones included (their other bytes come from the part file).
    let second = run_get(&f, seeder.addr(), &[]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert_eq!(fetched(&second), f.payload.total_len() - partial);
    let leftovers: Vec<String> = fs::read_dir(&f.out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parts"))
        .collect();
    assert!(leftovers.is_empty(), "part file left behind: {leftovers:?}");
}

#[test]
fn info_lists_each_file_with_the_index_get_files_takes() {
    let f = fixture();
    let out = ours().arg("info").arg(&f.torrent).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("files:       10 (by the index get --files takes)"),
        "{stdout}"
    );
    for (i, (path, _)) in f.payload.files.iter().enumerate() {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("[{i}]")))
            .unwrap_or_else(|| panic!("no line for file {i} in:\n{stdout}"));
        assert!(line.ends_with(&*path.to_string_lossy()), "{line}");
    }
}

#[test]
fn get_files_with_an_index_past_the_last_file_is_refused_before_anything_is_written() {
    let f = fixture();
    let out = ours()
        .args(["get", "--port", "0", "--files", "1,8-12", "-o"])
        .arg(&f.out)
        .arg(&f.torrent)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--files 1,8-12: file index 12 is out of range: the torrent has 10 files"),
        "{stderr}"
    );
    assert!(!f.out.join("album").exists());

    // A malformed list is a usage error from the argument parser.
    let out = ours()
        .args(["get", "--files", "3-1"])
        .arg(&f.torrent)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--files"));
}

#[test]
fn libtorrent_fetches_shared_pieces_from_a_partial_download_we_seed() {
    let f = fixture();
    let mut source = seeder(&f);
    let list = SELECTED.map(|i| i.to_string()).join(",");
    let logs = tempfile::tempdir().unwrap();
    let stdout_path = logs.path().join("stdout");
    let mut cmd = get_command(&f, source.addr(), &["--files", &list, "--seed"]);
    cmd.stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(logs.path().join("stderr")).unwrap());
    let _ours = ChildGuard::spawn(cmd, "torrent-actors get --files --seed");
    let report = || {
        format!(
            "{}{}",
            fs::read_to_string(&stdout_path).unwrap_or_default(),
            fs::read_to_string(logs.path().join("stderr")).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + GET_LIMIT;
    let addr: SocketAddr = loop {
        let out = fs::read_to_string(&stdout_path).unwrap_or_default();
        if let Some(addr) = out.lines().find_map(|l| {
            let (_, addr) = l.strip_prefix("seeding ")?.rsplit_once(" on ")?;
            addr.trim().parse().ok()
        }) {
            break addr;
        }
        assert!(Instant::now() < deadline, "never seeding:\n{}", report());
        thread::sleep(Duration::from_millis(50));
    };
    // From now on we are the only source.
    source.kill();
    assert_only_selected(&f);

    let leech_out = logs.path().join("leech");
    let leecher = LtLeecher::spawn(
        &f.torrent,
        &leech_out,
        &LeechOpts {
            peers: vec![addr],
            ..LeechOpts::new(Duration::from_secs(60))
        },
    );
    // libtorrent writes blocks before it verifies their piece, so the files alone prove
    // nothing; its verified bytes must reach exactly the pieces we have: piece 1 (read
    // partly from our part file), 6 and 8 (likewise) and 7.
    let partial = wanted_bytes(&f.torrent, &SELECTED);
    let total = f.payload.total_len();
    let target = partial as f64 * 100.0 / total as f64 - 0.05;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = leecher.log();
        let best = log
            .lines()
            .filter_map(|l| l.split("progress ").nth(1)?.split('%').next()?.parse().ok())
            .fold(0.0_f64, f64::max);
        if best >= target {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leecher did not verify our pieces (best progress {best}%):\n{log}\n{}",
            report()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let term = Command::new("kill")
        .args(["-TERM", &leecher.pid().to_string()])
        .status();
    assert!(term.is_ok_and(|s| s.success()));
    let outcome = leecher.wait();
    let done = outcome
        .summary
        .as_ref()
        .and_then(|s| s["wanted_done"].as_u64());
    assert_eq!(done, Some(partial), "{}", outcome.log);
    // What it wrote of the selected files is the source's.
    assert_same_files(&f.payload.dir, &leech_out, &selected_files(&f));
}
