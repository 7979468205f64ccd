//! `get --trace`: a real download from a libtorrent seeder on loopback writes a Chrome
//! trace that is valid JSON and stays within its limit, and `trace FILE` reads it back.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{make_torrent, run_ok, LtSeeder, Payload, SeedOpts};

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

#[test]
fn get_writes_a_bounded_chrome_trace_that_trace_summarises() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let payload = Payload::single(&tmp.path().join("seed"), "file.bin", 1024 * 1024 + 7);
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, 15, &[]);
    let seeder = LtSeeder::start(
        &torrent,
        &payload.dir,
        SeedOpts {
            ready_without_announce: true,
            ..SeedOpts::default()
        },
    );

    let full = tmp.path().join("full.json");
    get_traced(&torrent, &tmp.path().join("a"), &seeder, &full, &[]);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&full).expect("trace written")).expect("json");
    let events = v["traceEvents"].as_array().expect("traceEvents");
    assert!(events
        .iter()
        .any(|e| e["ph"] == "X" && e["name"] == "PieceVerified"));

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

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .arg("trace")
        .arg(&full);
    let out = run_ok(cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    for hop in ["received → stored", "written → verified", "busiest"] {
        assert!(text.contains(hop), "no {hop} in {text}");
    }
}
