//! Magnet links end to end: `get "magnet:?..."` fetches the info dictionary from
//! libtorrent peers (BEP 9), checks it against the info-hash, saves it as a `.torrent`,
//! and downloads, byte-identical. Also the other way round (a libtorrent leecher fetching
//! metadata from us), peer exchange, and a peer that lies about the metadata.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use torrent_actors::InfoHash;

use crate::support::{
    assert_same_files, make_torrent, read_metainfo, run_ok, run_until, with_announce,
    FakeMetadataPeer, LtSeeder, Payload, SeedOpts, Tracker,
};

const GET_LIMIT: Duration = Duration::from_secs(150);

struct Fixture {
    _tmp: tempfile::TempDir,
    payload: Payload,
    torrent: PathBuf,
    hash: InfoHash,
    out: PathBuf,
}

/// A payload and its torrent, in 32 KiB pieces (mktorrent's smallest): above about 26 MiB
/// the info dictionary takes more than one 16 KiB metadata piece.
fn fixture(multi: bool, len: u64) -> Fixture {
    let tmp = tempfile::tempdir().expect("temp folder");
    let payload = if multi {
        Payload::multi(&tmp.path().join("seed"), "album", 1 << 15)
    } else {
        Payload::single(&tmp.path().join("seed"), "file.bin", len)
    };
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, 15, &[]);
    let hash = read_metainfo(&torrent).info_hash;
    let out = tmp.path().join("out");
    Fixture {
        payload,
        torrent,
        hash,
        out,
        _tmp: tmp,
    }
}

fn get_magnet(magnet: &str, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "-v", "--port", "0", "--peer-timeout", "60", "-o"])
        .arg(out)
        .args(extra)
        .arg(magnet);
    run_ok(cmd, GET_LIMIT)
}

/// The `.torrent` saved beside the download has the same info-hash as the link.
fn assert_saved_torrent(out: &Path, name: &str, hash: InfoHash) {
    let saved = out.join(format!("{name}.torrent"));
    assert_eq!(
        read_metainfo(&saved).info_hash,
        hash,
        "{} names another torrent",
        saved.display()
    );
}

#[test]
fn magnet_with_a_tracker_fetches_multi_piece_metadata_and_downloads() {
    // 27 MiB in 32 KiB pieces: 865 piece hashes, so the info dictionary spans two
    // metadata pieces.
    let f = fixture(false, 27 * 1024 * 1024 + 5);
    let tracker = Tracker::start(&[f.hash]);
    let announced = f.torrent.with_extension("http.torrent");
    with_announce(&f.torrent, &announced, &tracker.http_url());
    assert!(read_metainfo(&announced).info_bytes.len() > 16 * 1024);
    let _seeder = LtSeeder::start(&announced, &f.payload.dir, SeedOpts::default());
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=file.bin&tr={}",
        f.hash.to_hex(),
        tracker.http_url()
    );
    let output = get_magnet(&magnet, &f.out, &[]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert_saved_torrent(&f.out, "file.bin", f.hash);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("metadata received: file.bin"), "{stdout}");
}

#[test]
fn magnet_with_only_a_peer_address_downloads_a_multi_file_torrent() {
    let f = fixture(true, 0);
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, SeedOpts::direct());
    // No tracker, no DHT: the link's x.pe is the only source.
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&x.pe={}",
        f.hash.to_hex(),
        seeder.addr()
    );
    get_magnet(&magnet, &f.out, &[]);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert_saved_torrent(&f.out, "album", f.hash);
}

#[test]
fn metadata_that_does_not_match_the_info_hash_is_not_trusted() {
    let f = fixture(false, 3 * 1024 * 1024);
    let info_len = read_metainfo(&f.torrent).info_bytes.len();
    // The liar is the only source at first: it advertises the right size and answers
    // every request with wrong bytes.
    let liar = FakeMetadataPeer::start(f.hash, info_len);
    let seed_port = crate::support::free_port();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&x.pe={}&x.pe=127.0.0.1:{seed_port}",
        f.hash.to_hex(),
        liar.addr()
    );
    let out = f.out.clone();
    let get = std::thread::spawn(move || get_magnet(&magnet, &out, &[]));
    assert!(
        liar.wait_for_lies(1, Duration::from_secs(60)),
        "the engine never asked the lying peer for metadata"
    );
    // Only then does the honest seeder come up, on the port the link already named.
    let _seeder = LtSeeder::start(
        &f.torrent,
        &f.payload.dir,
        SeedOpts {
            ready_without_announce: true,
            port: Some(seed_port),
            ..SeedOpts::default()
        },
    );
    let output = get.join().expect("get thread");
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert_saved_torrent(&f.out, "file.bin", f.hash);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not match the info-hash"),
        "no word of the bad metadata in the log:\n{stderr}"
    );
    assert_eq!(
        liar.connections(),
        1,
        "the lying peer was dialed again after it was caught"
    );
}

#[test]
fn a_peer_learned_by_peer_exchange_is_dialed_and_serves_too() {
    let f = fixture(false, 8 * 1024 * 1024);
    // Rate-limited so the download lasts long enough for both to serve.
    let limited = |connect: Vec<std::net::SocketAddr>| SeedOpts {
        ready_without_announce: true,
        upload_limit: Some(1024 * 1024),
        connect,
        ..SeedOpts::default()
    };
    let first = LtSeeder::start(&f.torrent, &f.payload.dir, limited(vec![]));
    // The second dials the first, so it knows where the first listens and can tell us.
    let second = LtSeeder::start(&f.torrent, &f.payload.dir, limited(vec![first.addr()]));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "-vv", "--port", "0", "--peer-timeout", "60", "-o"])
        .arg(&f.out)
        .args(["--peer", &second.addr().to_string()])
        .arg(&f.torrent);
    let output = run_until(cmd, GET_LIMIT).expect("get within its time limit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "get failed:\n{stderr}");
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert!(
        stderr.contains("peers from ut_pex"),
        "no ut_pex peers:\n{stderr}"
    );
    // Both served: the one we were told about by peer exchange too. The seeders log
    // their totals once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (first.uploaded() == 0 || second.uploaded() == 0) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        first.uploaded() > 0,
        "the peer from ut_pex sent nothing:\n{}",
        first.log()
    );
    assert!(
        second.uploaded() > 0,
        "the dialed peer sent nothing:\n{}",
        second.log()
    );
}

#[test]
fn peer_exchange_off_means_only_the_given_peer_is_used() {
    let f = fixture(false, 2 * 1024 * 1024);
    let opts = |connect| SeedOpts {
        ready_without_announce: true,
        connect,
        ..SeedOpts::default()
    };
    let first = LtSeeder::start(&f.torrent, &f.payload.dir, opts(vec![]));
    let second = LtSeeder::start(&f.torrent, &f.payload.dir, opts(vec![first.addr()]));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args([
            "get",
            "-vv",
            "--no-pex",
            "--port",
            "0",
            "--peer-timeout",
            "60",
            "-o",
        ])
        .arg(&f.out)
        .args(["--peer", &second.addr().to_string()])
        .arg(&f.torrent);
    let output = run_until(cmd, GET_LIMIT).expect("get within its time limit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "get failed:\n{stderr}");
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert!(
        !stderr.contains("peers from ut_pex"),
        "ut_pex used although off:\n{stderr}"
    );
    assert!(
        !stderr.contains(&first.addr().to_string()),
        "dialed a peer nobody named:\n{stderr}"
    );
}

#[test]
fn magnet_with_no_tracker_finds_libtorrent_seeders_through_the_dht() {
    let f = fixture(false, 3 * 1024 * 1024);
    // Two libtorrent seeders with their DHT on 127.0.0.1, the second bootstrapped from
    // the first; both announce the torrent there. Our node bootstraps from the first.
    let dht = |nodes| SeedOpts {
        ready_without_announce: true,
        dht_bootstrap: Some(nodes),
        ..SeedOpts::default()
    };
    let first = LtSeeder::start(&f.torrent, &f.payload.dir, dht(vec![]));
    let _second = LtSeeder::start(&f.torrent, &f.payload.dir, dht(vec![first.addr()]));
    // No tr, no x.pe: the DHT is the only way to the seeders.
    let magnet = format!("magnet:?xt=urn:btih:{}", f.hash.to_hex());
    let output = get_magnet(
        &magnet,
        &f.out,
        &[
            "--dht-bootstrap",
            &first.addr().to_string(),
            "--dht-port",
            "0",
        ],
    );
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bootstrap") && !stderr.contains("router."),
        "the DHT was not bootstrapped from loopback only:\n{stderr}"
    );
}

#[test]
fn magnet_so_downloads_only_the_files_it_selects() {
    let f = fixture(true, 0);
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, SeedOpts::direct());
    // Files 1 and 3, by the order `info` lists (the torrent's own order).
    let chosen = [1usize, 3];
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&x.pe={}&so=1,3",
        f.hash.to_hex(),
        seeder.addr()
    );
    get_magnet(&magnet, &f.out, &[]);
    let layout = read_metainfo(&f.torrent).info.layout;
    let selected: Vec<(PathBuf, u64)> =
        chosen.iter().map(|&i| f.payload.files[i].clone()).collect();
    assert_same_files(&f.payload.dir, &f.out, &selected);
    for (i, file) in layout.files().iter().enumerate() {
        if !chosen.contains(&i) && file.length > 0 {
            let path = file.path.under(&f.out);
            assert!(
                !path.exists(),
                "file {i} was not selected but exists: {}",
                path.display()
            );
        }
    }
}
