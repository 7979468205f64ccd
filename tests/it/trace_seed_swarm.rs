//! `--trace` beyond `get`: `seed` writes the trace of its serving when it is stopped, and
//! `swarm --trace DIR` has every leecher write its own.

use std::process::Command;
use std::time::Duration;

use crate::support::{
    free_port, make_torrent, run_with_timeout, ChildGuard, LeechOpts, LtLeecher, Payload,
};

/// The trace file's events, parsed.
fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("the trace is JSON");
    v["traceEvents"].as_array().expect("traceEvents").clone()
}

/// Whether some event is the handling of message `name`.
fn handled(events: &[serde_json::Value], name: &str) -> bool {
    events.iter().any(|e| e["ph"] == "X" && e["name"] == name)
}

#[test]
fn seed_writes_the_trace_of_its_serving_when_stopped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let payload = Payload::single(&tmp.path().join("seed"), "file.bin", 512 * 1024 + 3);
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, 15, &[]);
    let trace = tmp.path().join("seed.trace.json");
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args([
            "seed",
            "--bind",
            "127.0.0.1",
            "--no-dht",
            "--peer-timeout",
            "120",
        ])
        .args(["--port", &port.to_string(), "--dir"])
        .arg(&payload.dir)
        .arg("--trace")
        .arg(&trace)
        .arg(&torrent)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut seed = ChildGuard::spawn(cmd, "seed --trace");
    let mut opts = LeechOpts::new(Duration::from_secs(90));
    opts.peers = vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))];
    LtLeecher::run(&torrent, &tmp.path().join("leech"), &opts).assert_finished();
    // Stopping a seeder is how it ends; the trace is written on the way out.
    let stopped = Command::new("kill")
        .args(["-INT", &seed.pid().to_string()])
        .status()
        .expect("kill -INT");
    assert!(stopped.success());
    let status = seed
        .wait_timeout(Duration::from_secs(30))
        .expect("seed stopped within 30 s of SIGINT");
    assert!(status.success(), "{status:?}");
    let events = events(&trace);
    for name in ["ReadBlock", "PeerJoined", "Shutdown"] {
        assert!(
            handled(&events, name),
            "no {name} handled in the seed's trace"
        );
    }
}

#[test]
fn swarm_trace_has_each_leecher_write_its_own() {
    let work = tempfile::tempdir().expect("tempdir");
    let traces = work.path().join("traces");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .arg("swarm")
        .arg("--work-dir")
        .arg(work.path())
        .args(["--fast", "2", "--size", "4MiB", "--piece-size", "256KiB"])
        .args(["--seed", "5", "--leechers", "2", "--duration-limit", "90s"])
        .arg("--trace")
        .arg(&traces);
    let out = run_with_timeout(cmd, Duration::from_secs(150));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..2 {
        let events = events(&traces.join(format!("leecher-{i}.trace.json")));
        assert!(
            handled(&events, "PieceVerified"),
            "leecher {i}'s trace has no PieceVerified"
        );
    }
}
