//! `torrent-actors get` against real peers: libtorrent seeders on loopback, nobody's code
//! but libtorrent's on the other side. Every run must end with files byte-identical to
//! the originals. Payloads are small (a few MiB) so the suite stays quick; speed is
//! measured by the benchmark harness, never here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{
    assert_same_files, fetched, free_port, make_torrent, read_metainfo, run_ok, run_until,
    with_announce, ChildGuard, LtSeeder, Payload, SeedOpts, Tracker,
};

const GET_LIMIT: Duration = Duration::from_secs(120);

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp folder for an engine test")
}

/// Seeder options for direct dialing (no tracker in these tests).
fn direct(upload_limit: Option<u64>) -> SeedOpts {
    SeedOpts {
        ready_without_announce: true,
        upload_limit,
        ..SeedOpts::default()
    }
}

fn get_command(torrent: &Path, out: &Path, seeders: &[&LtSeeder]) -> Command {
    get_command_with_timeout(torrent, out, seeders, 60)
}

fn get_command_with_timeout(
    torrent: &Path,
    out: &Path,
    seeders: &[&LtSeeder],
    peer_timeout: u32,
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args([
            "get",
            "--port",
            "0",
            "--peer-timeout",
            &peer_timeout.to_string(),
            "-o",
        ])
        .arg(out);
    for s in seeders {
        cmd.arg("--peer").arg(s.addr().to_string());
    }
    cmd.arg(torrent);
    cmd
}

fn run_get(torrent: &Path, out: &Path, seeders: &[&LtSeeder]) -> Output {
    run_ok(get_command(torrent, out, seeders), GET_LIMIT)
}

/// Verified pieces recorded in the resume file under `out`, if there is one yet.
fn resume_verified(out: &Path) -> Option<u64> {
    let entry = std::fs::read_dir(out)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".resume.json"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
    let ranges = json["verified"].as_array()?;
    Some(
        ranges
            .iter()
            .filter_map(|r| Some(r[1].as_u64()? - r[0].as_u64()? + 1))
            .sum(),
    )
}

struct Fixture {
    _tmp: tempfile::TempDir,
    payload: Payload,
    torrent: PathBuf,
    out: PathBuf,
}

fn fixture(multi: bool, len: u64, piece_exp: u32) -> Fixture {
    let tmp = temp_dir();
    let payload = if multi {
        Payload::multi(&tmp.path().join("seed"), "album", 1 << piece_exp)
    } else {
        Payload::single(&tmp.path().join("seed"), "file.bin", len)
    };
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, piece_exp, &[]);
    let out = tmp.path().join("out");
    Fixture {
        payload,
        torrent,
        out,
        _tmp: tmp,
    }
}

#[test]
fn get_downloads_a_single_file_from_a_libtorrent_seeder() {
    let f = fixture(false, 5 * 1024 * 1024 + 123, 16);
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    let output = run_get(&f.torrent, &f.out, &[&seeder]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert_eq!(fetched(&output), f.payload.total_len());
}

#[test]
fn get_downloads_a_multi_file_torrent_with_awkward_boundaries_from_two_seeders() {
    let f = fixture(true, 0, 15);
    let a = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    let b = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    run_get(&f.torrent, &f.out, &[&a, &b]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    // Empty files are created too.
    for (path, len) in &f.payload.files {
        assert_eq!(
            std::fs::metadata(f.out.join(path)).map(|m| m.len()).ok(),
            Some(*len),
            "{}",
            path.display()
        );
    }
}

#[test]
fn get_finishes_when_a_seeder_disconnects_mid_download() {
    let f = fixture(false, 6 * 1024 * 1024, 15);
    let quitter = LtSeeder::start(
        &f.torrent,
        &f.payload.dir,
        SeedOpts {
            stop_after_upload: Some(1024 * 1024),
            ..direct(Some(2 * 1024 * 1024))
        },
    );
    let stayer = LtSeeder::start(&f.torrent, &f.payload.dir, direct(Some(2 * 1024 * 1024)));
    run_get(&f.torrent, &f.out, &[&quitter, &stayer]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert!(
        quitter.log().contains("stopping abruptly"),
        "the quitter never quit:\n{}",
        quitter.log()
    );
}

/// Starts `get` against a slow seeder, waits until the resume file records some pieces,
/// stops it with `signal`, and returns the pieces recorded at that moment.
fn interrupt_midway(f: &Fixture, seeder: &LtSeeder, signal: &str) -> (u64, Option<i32>) {
    let mut child = ChildGuard::spawn(
        get_command(&f.torrent, &f.out, &[seeder]),
        "torrent-actors get",
    );
    let deadline = Instant::now() + GET_LIMIT;
    let recorded = loop {
        if let Some(n) = resume_verified(&f.out).filter(|&n| n > 0) {
            break n;
        }
        assert!(
            child.try_status().is_none(),
            "get ended before it could be interrupted"
        );
        assert!(
            Instant::now() < deadline,
            "no resume file within {GET_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = if signal == "KILL" {
        child.kill()
    } else {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.pid().to_string())
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} failed");
        child.wait_timeout(Duration::from_secs(30))
    };
    (recorded, status.and_then(|s| s.code()))
}

#[test]
fn get_resumes_after_kill_9_without_refetching_verified_pieces() {
    let f = fixture(false, 8 * 1024 * 1024, 15);
    let meta = read_metainfo(&f.torrent);
    let piece = u64::from(meta.info.layout.piece_length());
    // Slow enough that the download is surely unfinished when the kill comes.
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(Some(1024 * 1024)));
    let (recorded, _) = interrupt_midway(&f, &seeder, "KILL");
    let output = run_get(&f.torrent, &f.out, &[&seeder]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    let second = fetched(&output);
    assert!(
        second <= f.payload.total_len() - recorded * piece,
        "fetched {second} bytes again though {recorded} pieces of {piece} were recorded"
    );
}

#[test]
fn get_stopped_by_sigint_exits_130_and_resumes_where_it_stopped() {
    let f = fixture(false, 8 * 1024 * 1024, 15);
    let meta = read_metainfo(&f.torrent);
    let piece = u64::from(meta.info.layout.piece_length());
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(Some(1024 * 1024)));
    let (recorded, code) = interrupt_midway(&f, &seeder, "INT");
    assert_eq!(code, Some(130), "an interrupted get exits 130");
    // A clean stop saves every verified piece, so at least what was recorded is kept.
    let saved = resume_verified(&f.out).unwrap_or(0);
    assert!(saved >= recorded);
    let output = run_get(&f.torrent, &f.out, &[&seeder]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert!(fetched(&output) <= f.payload.total_len() - saved * piece);
}

#[test]
fn get_into_an_unwritable_folder_exits_5() {
    let f = fixture(false, 100_000, 15);
    std::fs::create_dir_all(f.out.parent().unwrap()).unwrap();
    std::fs::write(&f.out, b"a file, not a folder").unwrap();
    let output = run_until(get_command(&f.torrent, &f.out, &[]), GET_LIMIT).expect("get ends");
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("not writable"));
}

#[test]
fn get_without_peers_gives_up_after_the_time_limit_with_exit_7() {
    let f = fixture(false, 100_000, 15);
    let cmd = get_command_with_timeout(&f.torrent, &f.out, &[], 1);
    let output = run_until(cmd, GET_LIMIT).expect("get ends");
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// With the disk slowed down, memory must not grow with the torrent: a Peer stops reading
/// its socket while the PieceManager holds its reply, so TCP slows the seeder. The payload
/// is several times the memory budget, so a leak of unwritten pieces would show as a peak
/// far above it.
#[test]
fn slow_disk_slows_the_peers_instead_of_growing_memory() {
    let f = fixture(false, 64 * 1024 * 1024, 18);
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.args([
        "get",
        "--port",
        "0",
        "--max-in-progress-mib",
        "8",
        "--max-pending-mib",
        "4",
    ])
    .args(["--debug-write-delay-ms", "10", "--peer"])
    .arg(seeder.addr().to_string())
    .arg("-o")
    .arg(&f.out)
    .arg(&f.torrent);
    let output = run_until(cmd, GET_LIMIT).expect("get ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    let peak_kib: u64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time:\n{stderr}"));
    // Budget 12 MiB of piece data, plus the program itself (about 10 MiB) and slack.
    let limit_kib = 40 * 1024;
    assert!(
        peak_kib < limit_kib,
        "peak RSS {peak_kib} KiB for a 64 MiB download with a 12 MiB budget"
    );
}

/// A torrent announced at `urls` (one tier each) for a payload whose info-hash the
/// tracker must whitelist before it starts: the torrent is made without trackers first,
/// then again with them (no creation date, so the info-hash is the same).
fn tracked_fixture(multi: bool, len: u64, piece_exp: u32) -> (Fixture, Tracker) {
    let f = fixture(multi, len, piece_exp);
    let hash = read_metainfo(&f.torrent).info_hash;
    let tracker = Tracker::start(&[hash]);
    (f, tracker)
}

#[test]
fn get_finds_two_seeders_through_an_http_tracker() {
    let (f, tracker) = tracked_fixture(true, 0, 15);
    let announced = f.torrent.with_extension("http.torrent");
    with_announce(&f.torrent, &announced, &tracker.http_url());
    let a = LtSeeder::start(&announced, &f.payload.dir, SeedOpts::default());
    let b = LtSeeder::start(&announced, &f.payload.dir, SeedOpts::default());
    run_get(&announced, &f.out, &[]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    drop((a, b));
}

#[test]
fn get_finds_a_seeder_through_a_udp_tracker() {
    let (f, tracker) = tracked_fixture(false, 3 * 1024 * 1024 + 7, 15);
    let announced = f.torrent.with_extension("udp.torrent");
    with_announce(&f.torrent, &announced, &tracker.udp_url());
    let seeder = LtSeeder::start(&announced, &f.payload.dir, SeedOpts::default());
    run_get(&announced, &f.out, &[]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    drop(seeder);
}

#[test]
fn a_dead_tracker_tier_does_not_stop_the_download_while_another_works() {
    let (f, tracker) = tracked_fixture(false, 2 * 1024 * 1024, 15);
    // Nothing listens on this port: the first tier fails, the second works.
    let dead = format!("http://127.0.0.1:{}/announce", free_port());
    let announced = f.torrent.with_extension("tiers.torrent");
    let hash = make_torrent(
        &f.payload.root(),
        &announced,
        15,
        &[dead, tracker.http_url()],
    );
    assert_eq!(hash, read_metainfo(&f.torrent).info_hash);
    let seeder = LtSeeder::start(&announced, &f.payload.dir, SeedOpts::default());
    run_get(&announced, &f.out, &[]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    drop(seeder);
}

/// A download limit holds the rate down. Only a lower bound on the time is checked: a
/// busy machine can make the download slower, never faster than the limit allows.
#[test]
fn download_limit_keeps_the_rate_under_the_limit() {
    let f = fixture(false, 4 * 1024 * 1024, 15);
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    let mut cmd = get_command(&f.torrent, &f.out, &[&seeder]);
    // 1 MiB/s for 4 MiB: at least about 3 s, allowing for the bucket's initial burst.
    cmd.args(["--download-limit", "1024"]);
    let started = Instant::now();
    let output = run_until(cmd, GET_LIMIT).expect("get ends");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert!(
        elapsed >= Duration::from_millis(2500),
        "4 MiB at 1 MiB/s took only {elapsed:?}"
    );
}

#[test]
fn stats_lines_and_records_show_progress_memory_and_every_actor_type() {
    // 2 MiB at 1 MiB/s: a few seconds, so several once-a-second records.
    let f = fixture(false, 2 * 1024 * 1024, 15);
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(Some(1024 * 1024)));
    let stats = f._tmp.path().join("stats.jsonl");
    let mut cmd = get_command(&f.torrent, &f.out, &[&seeder]);
    cmd.args(["-v", "--stats-every", "1s", "--stats-file"])
        .arg(&stats);
    let output = run_until(cmd, GET_LIMIT).expect("get ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);

    // Live lines on stderr, each with the actor types under it.
    let line = stderr
        .lines()
        .find(|l| l.starts_with("stats "))
        .unwrap_or_else(|| panic!("no stats line:\n{stderr}"));
    assert!(line.contains("peers") && line.contains("rss"), "{line}");
    assert!(stderr.contains("  Peer "), "{stderr}");
    // The table at the end of a -v run.
    let table = stderr
        .split("actors:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no actor table:\n{stderr}"));
    for actor in [
        "Coordinator",
        "Peer",
        "PieceManager",
        "Hasher",
        "FileWriter",
    ] {
        assert!(table.contains(actor), "{actor} missing from:\n{table}");
    }

    // JSON records: several, the last marked and complete, every actor type counted.
    let text = std::fs::read_to_string(&stats).expect("stats file");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
        .collect();
    assert!(records.len() >= 2, "{text}");
    let last = records.last().expect("a record");
    assert_eq!(last["last"], true);
    assert_eq!(last["verified_bytes"], last["total_bytes"]);
    assert!(last["process"]["peak_rss_bytes"].as_u64().unwrap_or(0) > 0);
    let actors = last["actors"]["actors"].as_array().expect("actors");
    let handled = |name: &str, message: &str| -> u64 {
        actors
            .iter()
            .find(|a| a["actor"] == name)
            .and_then(|a| {
                a["messages"]
                    .as_array()?
                    .iter()
                    .find(|m| m["message"] == message)
            })
            .and_then(|m| m["handled"].as_u64())
            .unwrap_or(0)
    };
    // Every 16 KiB block was read, and went to the PieceManager with the others of its
    // turn of the socket (so fewer messages than blocks: a loopback socket hands over
    // several at a time); every piece was hashed and written.
    let blocks = 2 * 1024 * 1024 / (16 * 1024);
    let pieces = 2 * 1024 * 1024 / (32 * 1024);
    let stores = handled("PieceManager", "StoreBlocks");
    assert!(stores > 0 && stores < handled("Peer", "piece"), "{last}");
    assert!(handled("Hasher", "HashPiece") >= pieces, "{last}");
    assert!(handled("FileWriter", "WritePiece") >= pieces, "{last}");
    assert!(handled("Peer", "piece") >= blocks, "{last}");
    assert!(handled("Coordinator", "PickBlocks") > 0, "{last}");
    for a in actors {
        assert!(
            a["mailbox_peak"].as_i64().unwrap_or(-1) >= a["mailbox"].as_i64().unwrap_or(0),
            "{a}"
        );
    }
}
