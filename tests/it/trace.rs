//! `get --trace`: a real download from a libtorrent seeder on loopback writes a Chrome
//! trace that is valid JSON and stays within its limit, and `trace FILE` reads it back.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{make_torrent, run_ok, LeechOpts, LtLeecher, LtSeeder, Payload, SeedOpts};

const LIMIT: Duration = Duration::from_secs(120);

fn get_traced(torrent: &Path, out: &Path, seeder: &LtSeeder, trace: &Path, extra: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "--peer-timeout", "60", "-o"])
        .arg(out)
        .arg("--peer")
        .arg(seeder.addr().to_string())
        .arg("--trace")
        .arg(trace)
        .args(extra)
        .arg(torrent);
    run_ok(cmd, LIMIT);
}

/// A temporary folder, a torrent of 1 MiB + 7 bytes in 32 KiB pieces, and a libtorrent
/// seeder of it that `--peer` reaches.
fn seeded() -> (tempfile::TempDir, std::path::PathBuf, LtSeeder) {
    seeded_at(None)
}

/// [`seeded`] with the seeder's upload held to `limit` bytes a second.
fn seeded_at(limit: Option<u64>) -> (tempfile::TempDir, std::path::PathBuf, LtSeeder) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let payload = Payload::single(&tmp.path().join("seed"), "file.bin", 1024 * 1024 + 7);
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, 15, &[]);
    let seeder = LtSeeder::start(
        &torrent,
        &payload.dir,
        SeedOpts {
            ready_without_announce: true,
            upload_limit: limit,
            ..SeedOpts::default()
        },
    );
    (tmp, torrent, seeder)
}

#[test]
fn get_writes_a_bounded_chrome_trace_that_trace_summarises() {
    let (tmp, torrent, seeder) = seeded();

    let full = tmp.path().join("full.json");
    get_traced(&torrent, &tmp.path().join("a"), &seeder, &full, &[]);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&full).expect("trace written")).expect("json");
    let events = v["traceEvents"].as_array().expect("traceEvents");
    assert!(events
        .iter()
        .any(|e| e["ph"] == "X" && e["name"] == "PieceVerified"));
    // Messages sent through tracked addresses: an arrow from the sender's track to the
    // handler's, and the wait in the mailbox on the handling slice.
    let arrow_ids = |ph: &str| -> std::collections::BTreeSet<u64> {
        events
            .iter()
            .filter(|e| e["cat"] == "message" && e["ph"] == ph)
            .filter_map(|e| e["id"].as_u64())
            .collect()
    };
    let (starts, ends) = (arrow_ids("s"), arrow_ids("f"));
    assert!(
        starts.intersection(&ends).count() > 10,
        "{} arrow starts, {} ends",
        starts.len(),
        ends.len()
    );
    assert!(events
        .iter()
        .any(|e| e["name"] == "StoreBlocks" && e["args"]["wait_us"].is_u64()));

    let small = tmp.path().join("small.json");
    get_traced(
        &torrent,
        &tmp.path().join("b"),
        &seeder,
        &small,
        &["--trace-limit", "50"],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&small).expect("trace written")).expect("json");
    let non_meta = v["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["ph"] != "M")
        .count();
    assert!(non_meta <= 50, "{non_meta} events over the limit of 50");

    let svg = tmp.path().join("block.svg");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .arg("trace")
        .arg("--svg")
        .arg(&svg)
        .arg(&full);
    let out = run_ok(cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    for hop in [
        "received → stored",
        "written → verified",
        "busiest",
        "longest mailbox waits",
    ] {
        assert!(text.contains(hop), "no {hop} in {text}");
    }
    // One sampled block's path: a dot per hop it reached, the five required at least.
    let drawn = std::fs::read_to_string(&svg).expect("the SVG written");
    assert!(drawn.matches("<circle").count() >= 5, "{drawn}");
}

/// Each block's hops in the trace file: block id → (hop name → first time seen).
pub(crate) fn block_chains(
    events: &[serde_json::Value],
) -> std::collections::BTreeMap<u64, std::collections::HashMap<String, u64>> {
    let mut chains: std::collections::BTreeMap<u64, std::collections::HashMap<String, u64>> =
        Default::default();
    for e in events.iter().filter(|e| e["cat"] == "block") {
        let (Some(id), Some(hop), Some(ts)) = (
            e["id"].as_u64(),
            e["args"]["hop"].as_str(),
            e["ts"].as_u64(),
        ) else {
            panic!("a block event without id, hop or time: {e}");
        };
        let at = chains
            .entry(id)
            .or_default()
            .entry(hop.into())
            .or_insert(ts);
        *at = (*at).min(ts);
    }
    chains
}

#[test]
fn every_sampled_blocks_chain_is_complete_and_in_order() {
    // 33 pieces of 32 KiB, the last of 7 bytes: 65 blocks of at most 16 KiB.
    let (tmp, torrent, seeder) = seeded();
    let hops = ["received", "stored", "hashed", "written", "verified"];
    for (sample, want) in [(1u64, 65usize), (4, 1)] {
        let file = tmp.path().join(format!("sample-{sample}.json"));
        let out = tmp.path().join(format!("out-{sample}"));
        let every = sample.to_string();
        get_traced(&torrent, &out, &seeder, &file, &["--trace-sample", &every]);
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).expect("trace written")).expect("json");
        let chains = block_chains(v["traceEvents"].as_array().expect("traceEvents"));
        assert!(
            chains.len() >= want && chains.len() <= 65,
            "sample {sample}: {} blocks traced",
            chains.len()
        );
        if sample == 1 {
            assert_eq!(chains.len(), 65, "every block traced");
        } else {
            assert!(chains.len() < 65, "sampling traced every block");
        }
        for (id, chain) in &chains {
            let times: Vec<u64> = hops
                .iter()
                .map(|h| {
                    *chain.get(*h).unwrap_or_else(|| {
                        panic!("block {id:#x} (sample {sample}) has no {h} hop: {chain:?}")
                    })
                })
                .collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "block {id:#x}'s hops out of order: {chain:?}"
            );
        }
    }
}

#[test]
fn trace_prints_a_strangers_names_without_control_characters() {
    // A trace file from elsewhere whose thread and message names carry terminal escapes.
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("hostile.json");
    let evil = "\u{1b}]0;owned\u{7}\u{1b}[2J";
    let trace = serde_json::json!({"traceEvents": [
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": format!("Peer{evil}")}},
        {"name": format!("Have{evil}"), "cat": "handle", "ph": "X", "pid": 1, "tid": 1,
         "ts": 10, "dur": 5, "args": {"wait_us": 3}},
    ]});
    std::fs::write(&file, trace.to_string()).expect("writing the trace");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.arg("trace").arg(&file);
    let out = run_ok(cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control characters reached the terminal: {text:?}"
    );
    assert!(
        text.contains("Peer\\u{1b}"),
        "the escape is shown escaped: {text}"
    );
}

#[test]
fn pieces_told_to_a_leecher_record_the_announced_hop_after_verified() {
    // A slow seeder, and a libtorrent leecher that has nothing: our `have`s go to it.
    let (tmp, torrent, seeder) = seeded_at(Some(256 * 1024));
    let leecher = LtLeecher::spawn(&torrent, &tmp.path().join("lt"), &LeechOpts::new(LIMIT));
    let file = tmp.path().join("announced.json");
    let leecher_addr = format!("127.0.0.1:{}", leecher.port());
    get_traced(
        &torrent,
        &tmp.path().join("out"),
        &seeder,
        &file,
        &["--peer", &leecher_addr],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("trace written")).expect("json");
    let chains = block_chains(v["traceEvents"].as_array().expect("traceEvents"));
    let announced: Vec<_> = chains
        .values()
        .filter_map(|c| Some((c.get("verified")?, c.get("announced")?)))
        .collect();
    assert!(
        !announced.is_empty(),
        "no block's piece was announced, of {} traced",
        chains.len()
    );
    for (verified, told) in announced {
        assert!(
            verified <= told,
            "announced at {told} before verified at {verified}"
        );
    }
}
