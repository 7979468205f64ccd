//! `urn:btmh` magnet links (BEP 52) end to end: `get` fetches a v2 torrent's info
//! dictionary by BEP 9 under the truncated v2 info-hash, checks it by SHA-256 against
//! the link, fetches each file's piece layer with `hash request`s checked against the
//! file's root, saves the `.torrent` and downloads, byte-identical. From libtorrent
//! seeders and from our own `seed`; a hybrid link (btih and btmh) checks both hashes.
//! Hostile: a peer that serves the true info dictionary but lies about, rejects or
//! ignores the piece layers, and one whose metadata does not hash to the btmh hash, are
//! dropped and never trusted, and `get` ends on its own with "no peer" (bounded wait).
//!
//! `serve` fetches again by its v2 hash a v2-only torrent whose kept `.torrent` broke.
//!
//! Needs `/usr/bin/python3` with `python3-libtorrent`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use torrent_actors::metainfo::{Metainfo, PieceCheck};

use crate::dht::loopback;
use crate::seeding::{seed_command, Ours, READY_LIMIT};
use crate::support::{
    assert_same_files, free_port, lt_create, our_create_ok, read_metainfo, run_until,
    write_pattern, ChildGuard, Daemon, DaemonOpts, FakeMetadataPeer, HashReply, LtKind, LtSeeder,
    SeedOpts,
};

const KIB: usize = 1024;

const GET_LIMIT: Duration = Duration::from_secs(150);

/// `get`'s exit code when no peer was reachable for `--peer-timeout`.
const EXIT_NO_PEERS: i32 = 7;

/// A folder whose big file needs two 512-node hash requests at 16 KiB pieces (640
/// pieces), beside files of one piece, none, and a few pieces.
fn folder(parent: &Path) -> PathBuf {
    let root = parent.join("v2album");
    write_pattern(&root.join("big.bin"), 640 * 16 * KIB + 5000, 1);
    write_pattern(&root.join("empty"), 0, 2);
    write_pattern(&root.join("small.txt"), 100, 3);
    write_pattern(&root.join("sub/tail.bin"), 3 * 16 * KIB + 7, 5);
    root
}

/// The link for a torrent: `urn:btmh` (and `urn:btih` with `v1`), and `x.pe` peers.
fn link(meta: &Metainfo, v1: bool, peers: &[std::net::SocketAddr]) -> String {
    let v2 = meta.info_hash_v2.expect("a v2 or hybrid torrent");
    let hex: String = v2.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = format!("magnet:?xt=urn:btmh:1220{hex}");
    if v1 {
        out.push_str(&format!("&xt=urn:btih:{}", meta.info_hash.to_hex()));
    }
    for p in peers {
        out.push_str(&format!("&x.pe={p}"));
    }
    out
}

fn get_magnet(magnet: &str, out: &Path, peer_timeout: u64) -> Output {
    let cmd = get_command(magnet, out, peer_timeout);
    run_until(cmd, GET_LIMIT).unwrap_or_else(|o| {
        panic!(
            "get overran {GET_LIMIT:?}:\n{}",
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `get -v` of `magnet` into `out`, loopback only, no DHT.
fn get_command(magnet: &str, out: &Path, peer_timeout: u64) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args([
            "get",
            "-v",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dht",
        ])
        .args(["--peer-timeout", &peer_timeout.to_string(), "-o"])
        .arg(out)
        .arg(magnet);
    cmd
}

/// `get` succeeded, every file matches the seeder's, and the saved `.torrent` is the
/// torrent itself, piece layers and all.
fn assert_downloaded(output: &Output, meta: &Metainfo, seed_dir: &Path, out: &Path, what: &str) {
    assert!(
        output.status.success(),
        "get failed ({}) {what}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let files: Vec<(PathBuf, u64)> = meta
        .info
        .layout
        .files()
        .iter()
        .filter(|f| !f.padding)
        .map(|f| (PathBuf::from(f.path.display()), f.length))
        .collect();
    assert_same_files(seed_dir, out, &files);
    let saved = read_metainfo(&out.join(format!("{}.torrent", meta.info.name)));
    assert_eq!(saved.info_hash, meta.info_hash);
    assert_eq!(saved.info_hash_v2, meta.info_hash_v2);
    if !meta.info.hybrid {
        assert_eq!(
            saved.info, meta.info,
            "the saved torrent checks pieces differently"
        );
        return;
    }
    // A hybrid's `info` carries no piece layers, and a magnet fetches none for it: its
    // pieces are checked by their SHA-1s alone, the ones the `.torrent` has.
    assert_eq!(saved.info.layout, meta.info.layout);
    for p in meta.info.layout.pieces() {
        assert_eq!(
            saved.info.piece_check(p),
            PieceCheck::Sha1(
                meta.info
                    .piece_check(p)
                    .sha1()
                    .expect("a hybrid has SHA-1s")
            )
        );
    }
}

#[test]
fn v2_magnet_from_libtorrent_fetches_the_piece_layers_and_downloads() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let source = folder(&seed_dir);
    let torrent = tmp.path().join("v2.torrent");
    lt_create(LtKind::V2, &source, &torrent, 16 * 1024, false);
    let meta = read_metainfo(&torrent);
    assert!(meta.info.v2_only);
    let seeder = LtSeeder::start(&torrent, &seed_dir, SeedOpts::direct());
    let out = tmp.path().join("out");
    let output = get_magnet(&link(&meta, false, &[seeder.addr()]), &out, 60);
    assert_downloaded(
        &output,
        &meta,
        &seed_dir,
        &out,
        &format!("\nseeder:\n{}", seeder.log()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("piece layers received"), "{stderr}");
}

#[test]
fn v2_magnet_from_our_own_seed_downloads() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let source = folder(&seed_dir);
    let torrent = tmp.path().join("ours.torrent");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    our_create_ok(&[
        "--v2",
        "--piece-size",
        "16KiB",
        "--no-date",
        &s(&source),
        "-o",
        &s(&torrent),
    ]);
    let meta = read_metainfo(&torrent);
    assert!(meta.info.v2_only);
    let mut seed = Ours::start(seed_command(&torrent, &seed_dir, &["--no-dht"]), "v2 seed");
    let addr = seed.wait_seeding(READY_LIMIT);
    let out = tmp.path().join("out");
    let output = get_magnet(&link(&meta, false, &[addr]), &out, 60);
    assert_downloaded(&output, &meta, &seed_dir, &out, &seed.report());
}

#[test]
fn hybrid_magnet_with_btih_and_btmh_or_btmh_alone_downloads_from_libtorrent() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let source = folder(&seed_dir);
    let torrent = tmp.path().join("hybrid.torrent");
    lt_create(LtKind::Hybrid, &source, &torrent, 16 * 1024, false);
    let meta = read_metainfo(&torrent);
    assert!(meta.info.hybrid);
    let seeder = LtSeeder::start(&torrent, &seed_dir, SeedOpts::direct());
    // Both hashes (the v1 swarm, both checked), then the v2 hash alone (the v2 swarm).
    for (v1, name) in [(true, "out-both"), (false, "out-v2")] {
        let out = tmp.path().join(name);
        let output = get_magnet(&link(&meta, v1, &[seeder.addr()]), &out, 60);
        let seeder_log = format!("\nseeder:\n{}", seeder.log());
        assert_downloaded(&output, &meta, &seed_dir, &out, &seeder_log);
    }
}

/// A v2 torrent of one file of 40 pieces, made by our `create`, and its info bytes.
fn small_v2(tmp: &Path) -> (Metainfo, Vec<u8>) {
    let file = tmp.join("seed").join("layers.bin");
    write_pattern(&file, 40 * 16 * KIB + 3, 9);
    let torrent = tmp.join("layers.torrent");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    our_create_ok(&[
        "--v2",
        "--piece-size",
        "16KiB",
        &s(&file),
        "-o",
        &s(&torrent),
    ]);
    let meta = read_metainfo(&torrent);
    let info = meta.info_bytes.clone();
    (meta, info)
}

/// `get` of the link with `liar` as its only peer: it must end by itself with "no peer",
/// nothing downloaded, the liar dialed once; returns get's stderr.
fn only_a_liar(meta: &Metainfo, liar: &FakeMetadataPeer, out: &Path) -> String {
    let output = get_magnet(&link(meta, false, &[liar.addr()]), out, 10);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(EXIT_NO_PEERS),
        "get did not end for want of an honest peer:\n{stderr}"
    );
    assert!(
        !out.join("layers.bin").exists() && !out.join("layers.bin.torrent").exists(),
        "something was written from untrusted metadata:\n{stderr}"
    );
    assert_eq!(
        liar.connections(),
        1,
        "the peer was dialed again:\n{stderr}"
    );
    stderr
}

#[test]
fn piece_layer_hashes_that_do_not_prove_are_refused_and_the_peer_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (meta, info) = small_v2(tmp.path());
    let liar = FakeMetadataPeer::serving_v2(meta.info_hash, info, HashReply::Garbage);
    let stderr = only_a_liar(&meta, &liar, &tmp.path().join("out"));
    assert!(
        liar.hash_requests() >= 1,
        "no hash request was made:\n{stderr}"
    );
    assert!(
        stderr.contains("piece-layer hashes that do not prove"),
        "no word of the bad hashes:\n{stderr}"
    );
}

#[test]
fn a_peer_that_rejects_or_ignores_hash_requests_is_dropped_and_get_ends() {
    for reply in [HashReply::Reject, HashReply::Silent] {
        let tmp = tempfile::tempdir().unwrap();
        let (meta, info) = small_v2(tmp.path());
        let peer = FakeMetadataPeer::serving_v2(meta.info_hash, info, reply);
        let stderr = only_a_liar(&meta, &peer, &tmp.path().join("out"));
        assert!(
            peer.hash_requests() >= 1,
            "{reply:?}: no hash request:\n{stderr}"
        );
        let why = match reply {
            HashReply::Reject => "rejected a hash request",
            _ => "left a hash request unanswered",
        };
        assert!(stderr.contains(why), "{reply:?}: no word of it:\n{stderr}");
    }
}

#[test]
fn metadata_that_does_not_hash_to_the_btmh_hash_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (meta, _) = small_v2(tmp.path());
    // A true v2 info dictionary of the same name and size, other content: a plausible
    // forgery, served under this torrent's swarm.
    let other = tmp.path().join("other");
    let file = other.join("layers.bin");
    write_pattern(&file, 40 * 16 * KIB + 3, 10);
    let forged = other.join("forged.torrent");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    our_create_ok(&[
        "--v2",
        "--piece-size",
        "16KiB",
        &s(&file),
        "-o",
        &s(&forged),
    ]);
    let forged_info = read_metainfo(&forged).info_bytes;
    assert_ne!(forged_info, meta.info_bytes);
    let liar = FakeMetadataPeer::serving_v2(meta.info_hash, forged_info, HashReply::Garbage);
    let stderr = only_a_liar(&meta, &liar, &tmp.path().join("out"));
    assert!(
        stderr.contains("does not match the info-hash"),
        "no word of the bad metadata:\n{stderr}"
    );
    assert_eq!(
        liar.hash_requests(),
        0,
        "piece layers were asked on unverified metadata"
    );
}

/// Regression: a peer that once rejected (or sat on) a hash request was remembered for the
/// whole fetch and never asked again, so a swarm whose peers had each failed once could
/// never give the piece layers. Here the only peer rejects on its first connection and
/// answers truly on later ones; with the retry shortened (a debug-build variable) it must
/// be asked again and the `.torrent` saved with its piece layers.
#[test]
fn a_peer_that_gave_no_piece_layers_once_is_asked_again_later() {
    let tmp = tempfile::tempdir().unwrap();
    let (meta, info) = small_v2(tmp.path());
    let trees = meta.info.tree_nodes().expect("a v2 torrent has trees");
    let peer = FakeMetadataPeer::serving_v2_then_honest(
        meta.info_hash,
        info,
        HashReply::Reject,
        Some(trees),
    );
    let out = tmp.path().join("out");
    let saved = out.join("layers.bin.torrent");
    let log_path = tmp.path().join("get.log");
    let mut cmd = get_command(&link(&meta, false, &[peer.addr()]), &out, 60);
    cmd.env("TORRENT_ACTORS_NO_LAYERS_RETRY_MS", "1000")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log_path).unwrap());
    let mut get = ChildGuard::spawn(cmd, "get");
    // The peer has no pieces to give: once the .torrent is saved, get is stopped.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !saved.exists() && Instant::now() < deadline && get.try_status().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    get.kill();
    let stderr = fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        stderr.contains("rejected a hash request"),
        "the first connection did not reject:\n{stderr}"
    );
    assert!(
        saved.exists() && stderr.contains("piece layers received"),
        "the peer was not asked again ({} connections, {} hash requests):\n{stderr}",
        peer.connections(),
        peer.hash_requests()
    );
    assert!(peer.connections() >= 2);
    assert_eq!(read_metainfo(&saved).info, meta.info);
}

/// Waits up to `limit` for torrent `id` of `daemon` to be seeding.
fn wait_seeding(daemon: &Daemon, id: &str, limit: Duration, when: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let detail = daemon.get_json(&format!("/api/torrents/{id}"));
        if detail["state"] == "seeding" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: not seeding within {limit:?}: {detail}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Regression: when a v2-only torrent's kept `.torrent` could not be read at a restart,
/// `serve` fetched its metadata again by a link of the info-hash and name alone: the
/// truncated v2 hash taken for a v1 one, whose SHA-1 check no v2 info dictionary passes.
/// The state now keeps the v2 hash and the rebuilt link names it. The torrent has no
/// tracker: its two libtorrent seeders are found on a loopback DHT, both times.
#[test]
fn serve_fetches_a_v2_torrent_whose_kept_torrent_broke_again_by_its_v2_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let source = seed_dir.join("v2one");
    write_pattern(&source.join("layers.bin"), 40 * 16 * KIB + 3, 11);
    write_pattern(&source.join("small.txt"), 100, 12);
    let torrent = tmp.path().join("v2one.torrent");
    lt_create(LtKind::V2, &source, &torrent, 16 * 1024, false);
    let meta = read_metainfo(&torrent);
    assert!(meta.info.v2_only);
    // Two seeders that bootstrap from each other, as in the DHT tests: each keeps the
    // other's announce; the daemon asks them both.
    let (p1, p2) = (free_port(), free_port());
    let seeder = |port: u16, other: u16| {
        LtSeeder::start(
            &torrent,
            &seed_dir,
            SeedOpts {
                port: Some(port),
                seed_mode: true,
                dht_bootstrap: Some(vec![loopback(other)]),
                ..SeedOpts::default()
            },
        )
    };
    let (s1, s2) = (seeder(p1, p2), seeder(p2, p1));
    let opts = DaemonOpts {
        args: vec![
            "--dht-bootstrap".into(),
            format!("{},{}", loopback(p1), loopback(p2)),
        ],
        ..DaemonOpts::default()
    };
    let (dl, state) = (tmp.path().join("dl"), tmp.path().join("state"));
    let mut daemon = Daemon::start(&dl, &state, &opts);
    let id = daemon.add_torrent_file(&torrent);
    assert_eq!(id, meta.info_hash.to_hex());
    wait_seeding(&daemon, &id, Duration::from_secs(120), "first run");
    daemon.stop();
    // The kept copy breaks while the daemon is down.
    let kept = state.join("torrents").join(format!("{id}.torrent"));
    assert!(kept.exists(), "no kept .torrent at {}", kept.display());
    fs::write(&kept, b"d4:infoi1ee").unwrap();
    let daemon = Daemon::start(&dl, &state, &opts);
    wait_seeding(&daemon, &id, Duration::from_secs(120), "after the restart");
    let log = daemon.log();
    assert!(log.contains("kept .torrent unusable"), "{log}");
    assert!(log.contains("piece layers received"), "{log}");
    let detail = daemon.get_json(&format!("/api/torrents/{id}"));
    let v2 = meta.info_hash_v2.expect("a v2 hash");
    let v2_hex: String = v2.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(detail["info_hash_v2"], v2_hex.as_str(), "{detail}");
    assert_eq!(read_metainfo(&kept).info, meta.info, "the kept .torrent");
    assert_same_files(
        &seed_dir,
        &dl,
        &[
            (PathBuf::from("v2one/layers.bin"), 40 * 16 * KIB as u64 + 3),
            (PathBuf::from("v2one/small.txt"), 100),
        ],
    );
    drop((s1, s2));
}
