//! The loopback test harness checked on its own, without the engine: opentracker serves
//! only whitelisted torrents, libtorrent peers trade a payload through it over HTTP and
//! UDP, a seeder told to stop mid-transfer does, and the file comparison and payload
//! layouts are what the engine's tests rely on them to be.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use torrent_actors::InfoHash;

use crate::support::{
    assert_same_files, http_announce, make_torrent, read_metainfo, with_announce, Announce,
    LeechOpts, LtLeecher, LtSeeder, Payload, SeedOpts, Tracker,
};

fn temp_dir() -> TempDir {
    tempfile::tempdir().expect("temp folder for a harness test")
}

#[test]
fn opentracker_serves_a_whitelisted_hash_and_refuses_any_other() {
    let listed = InfoHash([0x11; 20]);
    let unlisted = InfoHash([0x22; 20]);
    let tracker = Tracker::start(&[listed]);

    let first = Announce {
        port: 40_001,
        event: Some("started"),
        ..Announce::new(listed)
    };
    // Seen once under a fully loaded machine: opentracker refused a listed hash right
    // after its readiness probe was accepted. A few retries within a bound keep the test
    // about what it checks (listed served, unlisted refused) and still fail on a tracker
    // that never serves the hash.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let reply = loop {
        let reply = http_announce(tracker.port(), &first).expect("announce of a listed hash");
        if reply.failure.is_none() || std::time::Instant::now() >= deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(reply.failure, None, "log:\n{}", tracker.log());
    assert!(reply.interval.unwrap_or(0) > 0, "no interval in {reply:?}");

    // A second peer must be told about the first: the tracker keeps a swarm, not just
    // answers.
    let second = Announce {
        peer_id: *b"-HARNESS-00000000002",
        port: 40_002,
        left: 1,
        event: Some("started"),
        ..Announce::new(listed)
    };
    let reply = http_announce(tracker.port(), &second).expect("second announce");
    assert!(
        reply
            .peers
            .iter()
            .any(|p| p.port() == 40_001 && p.ip().is_loopback()),
        "the first peer is missing from {reply:?}"
    );

    let refused = http_announce(tracker.port(), &Announce::new(unlisted))
        .expect("announce of an unlisted hash still gets a reply");
    let reason = refused
        .failure
        .expect("a failure reason for an unlisted hash");
    assert!(
        reason.contains("not authorized"),
        "unexpected reason {reason:?}"
    );

    // Dropping the tracker stops it: nothing answers on its port afterwards.
    let port = tracker.port();
    drop(tracker);
    assert!(http_announce(port, &Announce::new(listed)).is_err());
}

#[test]
fn multi_payload_torrent_puts_file_ends_on_the_awkward_boundaries() {
    let tmp = temp_dir();
    let piece = 64 * 1024;
    let payload = Payload::multi(&tmp.path().join("data"), "multi payload", piece);
    let torrent = tmp.path().join("multi.torrent");
    let hash = make_torrent(&payload.root(), &torrent, 16, &[]);

    let meta = read_metainfo(&torrent);
    assert_eq!(meta.info.layout.piece_length() as u64, piece);
    let listed: Vec<(PathBuf, u64)> = meta
        .info
        .layout
        .files()
        .iter()
        .map(|f| (f.path.under(Path::new("")), f.length))
        .collect();
    assert_eq!(
        listed, payload.files,
        "mktorrent's order differs from the payload's"
    );

    let ends: Vec<u64> = meta
        .info
        .layout
        .files()
        .iter()
        .map(|f| f.offset + f.length)
        .collect();
    let empty = payload.files.iter().filter(|(_, len)| *len == 0).count();
    assert!(empty >= 2, "fewer than two empty files");
    assert!(
        payload.files.iter().any(|(_, len)| *len == 1),
        "no 1-byte file"
    );
    assert!(
        ends.contains(&piece),
        "no file ends exactly on a piece boundary"
    );
    assert!(
        ends.contains(&(3 * piece + 1)),
        "no file ends one byte past a boundary"
    );
    assert!(payload
        .files
        .iter()
        .any(|(p, _)| p.components().count() >= 4));
    assert!(payload
        .files
        .iter()
        .any(|(p, _)| p.to_string_lossy().contains(' ')));
    assert!(
        payload.total_len() > 10 * piece,
        "the larger files are missing"
    );

    // Re-pointing the torrent at a tracker keeps its identity.
    let copy = tmp.path().join("copy.torrent");
    assert_eq!(
        with_announce(&torrent, &copy, "udp://127.0.0.1:1/announce"),
        hash
    );
}

#[test]
fn assert_same_files_names_the_first_differing_offset_and_wrong_sizes() {
    let tmp = temp_dir();
    let expected = Payload::multi(&tmp.path().join("a"), "p", 32 * 1024);
    let actual = Payload::multi(&tmp.path().join("b"), "p", 32 * 1024);
    assert_same_files(&expected.dir, &actual.dir, &expected.files);

    let (victim, len) = expected
        .files
        .iter()
        .find(|(_, len)| *len > 40_000)
        .expect("a file larger than 40 000 bytes")
        .clone();
    let path = actual.dir.join(&victim);
    let mut bytes = fs::read(&path).expect("reading the copy");
    bytes[39_999] ^= 0xff;
    fs::write(&path, &bytes).expect("damaging the copy");
    let message = panic_message(|| assert_same_files(&expected.dir, &actual.dir, &expected.files));
    assert!(message.contains("offset 39999"), "{message}");

    bytes.truncate(len as usize - 1);
    fs::write(&path, &bytes).expect("shortening the copy");
    let message = panic_message(|| assert_same_files(&expected.dir, &actual.dir, &expected.files));
    assert!(
        message.contains(&format!("{} bytes, expected {len}", len - 1)),
        "{message}"
    );
}

fn panic_message(f: impl FnOnce() + panic::UnwindSafe) -> String {
    let err = panic::catch_unwind(f).expect_err("the comparison should have failed");
    err.downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "<a panic without a message>".to_string())
}

/// Which of opentracker's two faces the peers announce to.
enum Via {
    Http,
    Udp,
}

/// A libtorrent seeder and a libtorrent leecher find each other through opentracker and
/// move a multi-file payload; the copy must match byte for byte.
fn lt_swarm_through_tracker(via: Via, piece_exp: u32) {
    let tmp = temp_dir();
    let payload = Payload::multi(&tmp.path().join("seed"), "swarm payload", 1 << piece_exp);
    let bare = tmp.path().join("bare.torrent");
    let hash = make_torrent(&payload.root(), &bare, piece_exp, &[]);
    let tracker = Tracker::start(&[hash]);
    let url = match via {
        Via::Http => tracker.http_url(),
        Via::Udp => tracker.udp_url(),
    };
    let torrent = tmp.path().join("swarm.torrent");
    with_announce(&bare, &torrent, &url);

    let seeder = LtSeeder::start(&torrent, &payload.dir, SeedOpts::default());
    let out = tmp.path().join("leech");
    let outcome = LtLeecher::run(&torrent, &out, &LeechOpts::new(Duration::from_secs(30)));
    if !outcome.finished {
        panic!(
            "{outcome:#?}\nseeder log:\n{}\ntracker log:\n{}",
            seeder.log(),
            tracker.log()
        );
    }
    assert_same_files(&payload.dir, &out, &payload.files);
}

#[test]
fn lt_leecher_gets_multi_file_payload_from_lt_seeder_via_http_tracker() {
    lt_swarm_through_tracker(Via::Http, 18);
}

#[test]
fn lt_leecher_gets_multi_file_payload_from_lt_seeder_via_udp_tracker() {
    lt_swarm_through_tracker(Via::Udp, 17);
}

#[test]
fn lt_seeder_told_to_stop_after_upload_exits_mid_transfer_and_leecher_cannot_finish() {
    let tmp = temp_dir();
    let len = 4 << 20;
    let payload = Payload::single(&tmp.path().join("seed"), "four mib.bin", len);
    // No tracker: the leecher dials the seeder directly, so it is the only source.
    let torrent = tmp.path().join("single.torrent");
    make_torrent(&payload.root(), &torrent, 16, &[]);
    let stop_after = 512 * 1024;
    let mut seeder = LtSeeder::start(
        &torrent,
        &payload.dir,
        SeedOpts {
            upload_limit: Some(512 * 1024),
            stop_after_upload: Some(stop_after),
            ..SeedOpts::default()
        },
    );

    let out = tmp.path().join("leech");
    let opts = LeechOpts {
        peers: vec![seeder.addr()],
        // Generous, so a loaded machine still lets the seeder reach its limit first; the
        // leecher can never finish because its only source is gone.
        ..LeechOpts::new(Duration::from_secs(8))
    };
    let leecher = LtLeecher::spawn(&torrent, &out, &opts);

    let status = seeder
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the seeder kept running:\n{}", seeder.log()));
    assert!(
        status.success(),
        "seeder ended with {status}:\n{}",
        seeder.log()
    );
    assert!(
        seeder.log().contains("stopping abruptly"),
        "{}",
        seeder.log()
    );

    let outcome = leecher.wait();
    assert!(!outcome.finished, "finished without a seeder: {outcome:#?}");
    assert_eq!(
        outcome.status.code(),
        Some(3),
        "not the timeout exit: {outcome:#?}"
    );
    let summary = outcome.summary.as_ref().expect("the leecher's summary");
    let got = summary["payload_downloaded"]
        .as_u64()
        .expect("a byte count");
    assert!(
        got >= stop_after / 2 && got < len,
        "expected part of the payload, got {got} bytes: {outcome:#?}"
    );
}
