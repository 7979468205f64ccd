//! Torrents whose pieces are far larger than the memory budgets (the engine accepts
//! pieces up to 512 MiB): they download byte-identical, a bad block in one of them fails
//! the piece and it is fetched again, peak memory stays within the budgets rather than
//! growing with the piece size, and a run stopped mid-piece claims only verified pieces
//! (blocks of a piece on disk before its hash passed are not "have").

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use torrent_actors::engine::storage::resume_path;
use torrent_actors::metainfo::Metainfo;

use crate::support::{
    assert_same_files, make_torrent, read_metainfo, run_until, Act, ChildGuard, HostilePeer,
    LtSeeder, Payload, SeedOpts, Served,
};

const GET_LIMIT: Duration = Duration::from_secs(300);

/// `get` into `out` from `peers` only, with `extra` options.
fn get_command(torrent: &Path, out: &Path, peers: &[String], extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--no-dht", "--port", "0", "--bind", "127.0.0.1"])
        .args(["--peer-timeout", "60"])
        .args(extra);
    for peer in peers {
        cmd.arg("--peer").arg(peer);
    }
    cmd.arg("-o").arg(out).arg(torrent);
    cmd
}

/// `cmd` under `/usr/bin/time -v`: its output and its peak resident set in KiB.
fn run_measured(cmd: Command) -> (Output, u64) {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-v").arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    let output = run_until(timed, GET_LIMIT).expect("get ends in time");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let peak = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time:\n{stderr}"));
    (output, peak)
}

#[test]
fn pieces_of_64_mib_download_from_libtorrent_within_an_8_mib_budget() {
    const PIECE_EXP: u32 = 26;
    let tmp = tempfile::tempdir().expect("temp folder");
    // Two whole 64 MiB pieces and a short last one.
    let payload = Payload::single(
        &tmp.path().join("seed"),
        "big.bin",
        (5 << PIECE_EXP) / 2 + 12_345,
    );
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, PIECE_EXP, &[]);
    let seeder = LtSeeder::start(
        &torrent,
        &payload.dir,
        SeedOpts {
            ready_without_announce: true,
            seed_mode: true,
            ..SeedOpts::default()
        },
    );
    let out = tmp.path().join("out");
    let (output, peak_kib) = run_measured(get_command(
        &torrent,
        &out,
        &[seeder.addr().to_string()],
        &["--max-in-progress-mib", "8"],
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "get failed:\n{stderr}");
    assert_same_files(&payload.dir, &out, &payload.files);
    eprintln!("peak RSS {peak_kib} KiB downloading 64 MiB pieces with an 8 MiB budget");
    // The budgets are 8 MiB in progress and 16 MiB pending; the program itself takes
    // about 10 MiB. One piece is 64 MiB: holding even one would pass this.
    let limit_kib = 64 * 1024;
    assert!(
        peak_kib < limit_kib,
        "peak RSS {peak_kib} KiB for 64 MiB pieces with an 8 MiB in-progress budget"
    );
}

/// A payload in `2^piece_exp`-byte pieces, its torrent, and what scripted peers serve.
fn scripted(tmp: &Path, len: u64, piece_exp: u32) -> (Payload, std::path::PathBuf, Served) {
    let payload = Payload::single(&tmp.join("seed"), "big.bin", len);
    let torrent = tmp.join("t.torrent");
    make_torrent(&payload.root(), &torrent, piece_exp, &[]);
    let served = Served {
        info_hash: read_metainfo(&torrent).info_hash,
        content: Arc::new(std::fs::read(payload.dir.join("big.bin")).expect("payload")),
        piece_len: 1 << piece_exp,
    };
    (payload, torrent, served)
}

#[test]
fn a_corrupt_block_in_a_huge_piece_fails_the_piece_and_it_is_fetched_again() {
    let tmp = tempfile::tempdir().expect("temp folder");
    // 16 MiB pieces with a 4 MiB budget: pieces are streamed to disk.
    let (payload, torrent, served) = scripted(tmp.path(), (5 << 24) / 2 + 777, 24);
    let liar = HostilePeer::start(served, Act::CorruptOneBlock);
    let out = tmp.path().join("out");
    let cmd = get_command(
        &torrent,
        &out,
        &[liar.addr().to_string()],
        &["-v", "--max-in-progress-mib", "4"],
    );
    let output = run_until(cmd, GET_LIMIT).expect("get ends in time");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "get failed:\n{stderr}");
    assert_eq!(
        liar.counters()
            .misbehaviours
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the bad block was not sent"
    );
    assert!(stderr.contains("piece failed its hash"), "{stderr}");
    assert_streamed(&stderr);
    assert!(
        stderr.contains("DigestBlocks"),
        "the failed piece's blocks were not read back for smart ban:\n{stderr}"
    );
    assert_same_files(&payload.dir, &out, &payload.files);
}

/// The end-of-run table of `get -v` shows the streamed path at work: blocks written one
/// by one and hashed as they came, no whole piece hashed or written.
fn assert_streamed(stderr: &str) {
    assert!(
        stderr.contains("WriteBlock") && stderr.contains("HashBlocks"),
        "the pieces were not streamed:\n{stderr}"
    );
    assert!(
        !stderr.contains("WritePiece") && !stderr.contains("HashPiece"),
        "a whole piece was held:\n{stderr}"
    );
}

#[test]
fn smart_ban_names_the_sender_of_one_bad_block_in_a_huge_shared_piece() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let (payload, torrent, served) = scripted(tmp.path(), (5 << 24) / 2 + 777, 24);
    let honest = HostilePeer::start(served.clone(), Act::Honest);
    let liar = HostilePeer::start(served, Act::CorruptOneBlock);
    let out = tmp.path().join("out");
    let cmd = get_command(
        &torrent,
        &out,
        &[liar.addr().to_string(), honest.addr().to_string()],
        &["-v", "--max-in-progress-mib", "4"],
    );
    let output = run_until(cmd, GET_LIMIT).expect("get ends in time");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "get failed:\n{stderr}");
    assert_same_files(&payload.dir, &out, &payload.files);
    let about =
        |addr: String| -> Vec<&str> { stderr.lines().filter(|l| l.contains(&addr)).collect() };
    // Both peers sent blocks of the 1024-block piece the bad block was in, so only a
    // block-by-block comparison (digests read back from disk) can name the liar.
    let liar_lines = about(liar.addr().to_string());
    assert!(
        liar_lines
            .iter()
            .any(|l| l.contains("failed its hash") && l.contains("bad_blocks: 1")),
        "the liar was not named by its one bad block:\n{stderr}"
    );
    // A smart-ban verdict is certain, and there is another peer to fetch from: banned at
    // once, not forgiven as a flipped bit (which let liars spoil pieces until a second
    // verdict).
    assert!(
        liar_lines
            .iter()
            .any(|l| l.contains("peer banned for sending bad data")),
        "the liar was not banned at its first verdict:\n{stderr}"
    );
    assert_streamed(&stderr);
    let honest_lines = about(honest.addr().to_string());
    assert!(
        !honest_lines.iter().any(|l| l.contains("failed its hash")),
        "the honest peer was blamed:\n{}",
        honest_lines.join("\n")
    );
}

/// Whether piece `n`'s bytes under `out` match the torrent's hash (one file).
fn piece_ok(meta: &Metainfo, out: &Path, n: u32) -> bool {
    let layout = &meta.info.layout;
    let piece = layout.piece(n).expect("a piece of the torrent");
    let mut buf = vec![0u8; layout.piece_len(piece) as usize];
    let path = layout.files()[0].path.under(out);
    let read =
        fs::File::open(path).and_then(|f| f.read_exact_at(&mut buf, layout.piece_offset(piece)));
    read.is_ok() && meta.info.piece_check(piece).matches(&buf)
}

/// Whether piece `n` has any byte that is not zero on disk (a file made at its size is
/// zeros until written).
fn piece_written_at_all(meta: &Metainfo, out: &Path, n: u32) -> bool {
    let layout = &meta.info.layout;
    let piece = layout.piece(n).expect("a piece of the torrent");
    let mut buf = vec![0u8; layout.piece_len(piece) as usize];
    let path = layout.files()[0].path.under(out);
    fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut buf, layout.piece_offset(piece)))
        .is_ok()
        && buf.iter().any(|&b| b != 0)
}

/// The pieces the resume file under `out` calls verified, straight from its JSON.
fn claimed(meta: &Metainfo, out: &Path) -> Vec<u32> {
    let Ok(bytes) = fs::read(resume_path(out, &meta.info.layout, &meta.info_hash)) else {
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("resume file is JSON");
    let mut pieces = Vec::new();
    for r in json["verified"].as_array().expect("a `verified` list") {
        let (a, b) = (r[0].as_u64().expect("range"), r[1].as_u64().expect("range"));
        pieces.extend(a as u32..=b as u32);
    }
    pieces
}

/// Starts `cmd`, lets it run until `ready()` (60 s at most) and then for `after`, sends
/// it `signal` by its PID and waits for it.
fn interrupt(
    cmd: Command,
    ready: &dyn Fn() -> bool,
    after: Duration,
    signal: &str,
) -> Option<std::process::ExitStatus> {
    let mut child = ChildGuard::spawn(cmd, "torrent-actors get");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready_at = None;
    while ready_at.is_none_or(|at: Instant| at.elapsed() < after) {
        assert!(
            child.try_status().is_none(),
            "get ended before it was stopped"
        );
        assert!(
            Instant::now() < deadline,
            "get was never ready to be stopped"
        );
        if ready_at.is_none() && ready() {
            ready_at = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.pid().to_string())
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} failed");
    child.wait_timeout(Duration::from_secs(30))
}

#[test]
fn stopped_mid_piece_the_resume_file_claims_only_verified_pieces_and_is_trusted_next_time() {
    const PIECE_EXP: u32 = 23;
    let tmp = tempfile::tempdir().expect("temp folder");
    // Six 8 MiB pieces and a short one, streamed under a 4 MiB budget, from a seeder held
    // to 4 MiB/s: stopped a second after the first piece is verified (however long that
    // took on a busy machine), the next is part-way on disk.
    let payload = Payload::single(&tmp.path().join("seed"), "big.bin", (6 << PIECE_EXP) + 777);
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, PIECE_EXP, &[]);
    let meta = read_metainfo(&torrent);
    let seeder = LtSeeder::start(
        &torrent,
        &payload.dir,
        SeedOpts {
            ready_without_announce: true,
            seed_mode: true,
            upload_limit: Some(4 << 20),
            ..SeedOpts::default()
        },
    );
    let out = tmp.path().join("out");
    let peers = [seeder.addr().to_string()];
    let args = ["-v", "--max-in-progress-mib", "4"];

    // Ctrl-C: the resume file is saved after the storage is closed.
    let stats = tmp.path().join("first.stats");
    let stats_arg = stats.to_str().expect("a UTF-8 path").to_string();
    let first_args = [&args[..], &["--stats-file", &stats_arg]].concat();
    let mut cmd = get_command(&torrent, &out, &peers, &first_args);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let one_piece_verified = || {
        fs::read_to_string(&stats)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|r| r["verified_bytes"].as_u64())
            .any(|v| v >= 1 << PIECE_EXP)
    };
    let status = interrupt(cmd, &one_piece_verified, Duration::from_secs(1), "INT")
        .expect("get stops on SIGINT");
    assert_eq!(status.code(), Some(130), "{status}");
    let claims = claimed(&meta, &out);
    let bad: Vec<u32> = claims
        .iter()
        .copied()
        .filter(|&n| !piece_ok(&meta, &out, n))
        .collect();
    assert!(bad.is_empty(), "claimed but failing their hash: {bad:?}");
    let unclaimed_on_disk: Vec<u32> = (0..meta.info.layout.num_pieces())
        .filter(|n| !claims.contains(n) && piece_written_at_all(&meta, &out, *n))
        .collect();
    assert!(
        !unclaimed_on_disk.is_empty(),
        "no piece was part-way on disk when stopped (claims {claims:?})"
    );

    // The next run trusts the claims without hashing them again: nothing was written
    // behind the last save (blocks that came after `CloseStorage` were refused), so the
    // file is as the resume file recorded it.
    let log = tmp.path().join("second.log");
    let mut cmd = get_command(&torrent, &out, &peers, &args);
    cmd.stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"));
    let mut child = ChildGuard::spawn(cmd, "torrent-actors get");
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_status().is_none(), "the second run ended early");
    assert!(child.kill().is_some(), "get could not be reaped");
    let stderr = fs::read_to_string(&log).unwrap_or_default();
    // (The pieces not claimed are hashed, as always for a file that exists: a piece
    // whose every block was written before the stop may be found good that way.)
    let trusted = stderr
        .lines()
        .find(|l| l.contains("start plan"))
        .and_then(|l| l.split("trusted: ").nth(1))
        .and_then(|n| n.split(',').next())
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert!(
        !claims.is_empty() && trusted == Some(claims.len()),
        "the {} claims of a clean stop were not all trusted:\n{stderr}",
        claims.len()
    );
    // Killed with SIGKILL mid-piece: still nothing unverified is claimed.
    let claims = claimed(&meta, &out);
    let bad: Vec<u32> = claims
        .iter()
        .copied()
        .filter(|&n| !piece_ok(&meta, &out, n))
        .collect();
    assert!(
        bad.is_empty(),
        "after SIGKILL, claimed but failing: {bad:?}"
    );

    // And the same command finishes the download.
    let output =
        run_until(get_command(&torrent, &out, &peers, &args), GET_LIMIT).expect("get ends in time");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_same_files(&payload.dir, &out, &payload.files);
}
