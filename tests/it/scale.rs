//! The process's threads (`engine::threads`): their number follows the cores, not the
//! torrents, and a download is the same with one protocol thread or several. Counts, not
//! times: the figures for speed and idle CPU are in README's Scale section.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use sha1::{Digest, Sha1};
use torrent_actors::bencode::BValue;

use crate::support::{
    assert_same_files, make_torrent, run_within, Daemon, DaemonOpts, LtSeeder, Payload, SeedOpts,
};

const GET_LIMIT: Duration = Duration::from_secs(120);

/// Torrents the thread-count test seeds: the count `serve` once needed a thousand
/// threads for.
const TORRENTS: usize = 200;

/// How long the daemon may take to check and start seeding all of them.
const SEED_LIMIT: Duration = Duration::from_secs(120);

fn cores() -> usize {
    thread::available_parallelism().map_or(2, |n| n.get())
}

/// Threads of process `pid`, from `/proc/PID/task`.
fn threads_of(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"))
}

/// Content of seeding torrent `n`: 20,000 bytes, different for each.
fn content(n: usize) -> Vec<u8> {
    (0..20_000)
        .map(|i| ((i * 13 + n * 101) % 253) as u8)
        .collect()
}

/// A single-file torrent named `name` over `data`, in 16 KiB pieces, with no tracker.
fn single_file_torrent(name: &str, data: &[u8]) -> Vec<u8> {
    const PIECE: usize = 16 * 1024;
    let pieces: Vec<u8> = data
        .chunks(PIECE)
        .flat_map(|chunk| <[u8; 20]>::from(Sha1::digest(chunk)))
        .collect();
    BValue::dict([(
        "info",
        BValue::dict([
            ("name", BValue::string(name)),
            ("length", BValue::Int(data.len() as i64)),
            ("piece length", BValue::Int(PIECE as i64)),
            ("pieces", BValue::Bytes(pieces)),
        ]),
    )])
    .encode()
}

#[test]
fn serve_seeding_200_torrents_runs_at_most_twice_the_cores_plus_16_threads() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let (dl, state) = (tmp.path().join("dl"), tmp.path().join("state"));
    fs::create_dir_all(&dl).expect("download folder");
    // The data is there before the torrents are added, so each checks it and seeds.
    let torrents: Vec<Vec<u8>> = (0..TORRENTS)
        .map(|n| {
            let name = format!("seed-{n}.bin");
            let data = content(n);
            fs::write(dl.join(&name), &data).expect("a torrent's data");
            single_file_torrent(&name, &data)
        })
        .collect();
    let daemon = Daemon::start(&dl, &state, &DaemonOpts::default());
    for torrent in &torrents {
        let added = daemon.post(
            "/api/torrents",
            &json!({"torrent_base64": data_encoding::BASE64.encode(torrent)}),
        );
        assert_eq!(added.status, 201, "{added:?}");
    }
    let deadline = Instant::now() + SEED_LIMIT;
    let mut most = 0;
    loop {
        most = most.max(threads_of(daemon.pid()));
        let list = daemon.get_json("/api/torrents");
        let list = list.as_array().expect("a list of torrents");
        let seeding = list.iter().filter(|t| t["state"] == "seeding").count();
        if list.len() == TORRENTS && seeding == TORRENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{seeding} of {TORRENTS} torrents seeding after {SEED_LIMIT:?}; log:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    // Seeding and idle for a moment: tracker-less torrents still tick.
    for _ in 0..10 {
        most = most.max(threads_of(daemon.pid()));
        thread::sleep(Duration::from_millis(100));
    }
    let limit = 2 * cores() + 16;
    eprintln!("{most} threads at most with {TORRENTS} torrents seeding");
    assert!(
        most <= limit,
        "{most} threads with {TORRENTS} torrents seeding; at most {limit} wanted on {} cores",
        cores()
    );
}

/// `get --threads N` from two libtorrent seeders (so that with two threads the two peers
/// land on different ones) into `out`; the files must match.
fn get_with_threads(threads: u32, torrent: &Path, out: &Path, seeders: &[&LtSeeder]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "--no-dht", "--peer-timeout", "60"])
        .args(["--threads", &threads.to_string(), "-o"])
        .arg(out);
    for s in seeders {
        cmd.arg("--peer").arg(s.addr().to_string());
    }
    cmd.arg(torrent);
    let output = run_within(cmd, GET_LIMIT);
    assert!(
        output.status.success(),
        "get --threads {threads} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn get_downloads_the_same_files_with_one_and_with_two_protocol_threads() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let payload = Payload::multi(&tmp.path().join("seed"), "album", 1 << 15);
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, 15, &[]);
    let opts = || SeedOpts::direct();
    let a = LtSeeder::start(&torrent, &payload.dir, opts());
    let b = LtSeeder::start(&torrent, &payload.dir, opts());
    for threads in [1, 2] {
        let out = tmp.path().join(format!("out-{threads}"));
        get_with_threads(threads, &torrent, &out, &[&a, &b]);
        assert_same_files(&payload.dir, &out, &payload.files);
    }
}

#[test]
fn threads_outside_1_to_256_are_refused_with_exit_2() {
    for (command, n) in [("get", "0"), ("seed", "257"), ("serve", "0")] {
        let out = Command::new(env!("CARGO_BIN_EXE_torrent-actors"))
            .env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
            .args([command, "--threads", n])
            .args((command != "serve").then_some("x.torrent"))
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command} --threads {n}: {stderr}"
        );
        assert!(stderr.contains("--threads"), "{stderr}");
    }
}
