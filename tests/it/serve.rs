//! `torrent-actors serve` from outside: the daemon as a child process on loopback, driven
//! through its JSON API only, against libtorrent seeders found through opentracker.
//!
//! Every wait has a time bound and none has an upper bound on speed: a test fails when
//! something never happens, not when it is slow. Daemons, seeders and trackers are killed
//! by their PIDs when a test ends, however it ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use torrent_actors::magnet::{FileSelection, Magnet};
use torrent_actors::InfoHash;

use crate::support::{
    assert_same_files, http, make_torrent, read_events, run_until, serve_command, with_announce,
    Daemon, DaemonOpts, LtSeeder, Payload, SeedOpts, Tracker,
};

/// How long a download from a loopback seeder may take before the test gives up.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(180);

/// How long a state change the API asked for may take to show.
const CHANGE_LIMIT: Duration = Duration::from_secs(30);

/// How often a test asks the daemon again.
const POLL: Duration = Duration::from_millis(150);

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ta-serve-")
        .tempdir()
        .expect("temp folder for a serve test")
}

/// A torrent announced through opentracker and a libtorrent seeder of it.
struct Swarm {
    payload: Payload,
    /// The `.torrent`, announcing to the tracker.
    torrent: PathBuf,
    hash: InfoHash,
    tracker: Tracker,
    seeder: LtSeeder,
}

impl Swarm {
    /// Makes a torrent of `payload` with pieces of `2^piece_exp` bytes, starts a tracker
    /// that knows it, and a seeder announced there.
    fn start(payload: Payload, piece_exp: u32, seed: SeedOpts) -> Swarm {
        let bare = payload
            .dir
            .with_file_name(format!("{}.bare.torrent", payload.name));
        let hash = make_torrent(&payload.root(), &bare, piece_exp, &[]);
        let tracker = Tracker::start(&[hash]);
        let torrent = payload
            .dir
            .with_file_name(format!("{}.torrent", payload.name));
        with_announce(&bare, &torrent, &tracker.http_url());
        let seeder = LtSeeder::start(&torrent, &payload.dir, seed);
        Swarm {
            payload,
            torrent,
            hash,
            tracker,
            seeder,
        }
    }

    fn id(&self) -> String {
        self.hash.to_hex()
    }

    fn base64(&self) -> String {
        base64_of(&self.torrent)
    }

    /// Adds the torrent to `daemon` paused (201 expected); the added torrent.
    fn add_paused(&self, daemon: &Daemon) -> Value {
        let added = daemon.post(
            "/api/torrents",
            &json!({"torrent_base64": self.base64(), "paused": true}),
        );
        assert_eq!(added.status, 201, "{added:?}");
        added.json()
    }
}

fn base64_of(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    data_encoding::BASE64.encode(&bytes)
}

/// The last lines of the daemon's log, for failure messages.
fn tail(daemon: &Daemon) -> String {
    let log = daemon.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Asks for torrent `id` until `done` holds for its detail, and returns that detail.
/// `each` runs on every answer, e.g. to look at peers while the download runs.
fn wait_for_torrent(
    daemon: &Daemon,
    id: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
    mut each: impl FnMut(&Value),
) -> Value {
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let reply = daemon.get(&format!("/api/torrents/{id}"));
        assert_eq!(reply.status, 200, "GET /api/torrents/{id}: {reply:?}");
        last = reply.json();
        each(&last);
        if done(&last) {
            return last;
        }
        thread::sleep(POLL);
    }
    panic!(
        "torrent {id}: {what} did not happen within {limit:?}; last seen:\n{last:#}\ndaemon log:\n{}",
        tail(daemon)
    );
}

fn is_complete(t: &Value) -> bool {
    t["state"] == "seeding" && t["progress"].as_f64() == Some(1.0)
}

/// Every bit of a BEP 3 bitfield of `pieces` pieces is set.
fn all_pieces_set(have: &[u8], pieces: usize) -> bool {
    have.len() == pieces.div_ceil(8) && (0..pieces).all(|i| have[i / 8] & (0x80 >> (i % 8)) != 0)
}

/// The bytes of the pieces that touch any of the `[start, end)` byte ranges.
fn wanted_piece_bytes(ranges: &[(u64, u64)], piece_len: u64, total: u64) -> u64 {
    let pieces = total.div_ceil(piece_len);
    (0..pieces)
        .filter(|p| {
            let (start, end) = (p * piece_len, ((p + 1) * piece_len).min(total));
            ranges.iter().any(|&(a, b)| a < end && start < b)
        })
        .map(|p| ((p + 1) * piece_len).min(total) - p * piece_len)
        .sum()
}

// ---------------------------------------------------------------------------------------
// The API description
// ---------------------------------------------------------------------------------------

/// `(METHOD, path)` of every `.route("/path", web::method()...)` in api.rs, under `/api`.
fn routes_in_api_rs() -> Vec<(String, String)> {
    let source = include_str!("../../src/serve/api.rs");
    let mut routes = Vec::new();
    // rustfmt may break a long `.route(` call after the parenthesis.
    for chunk in source.split(".route(").skip(1) {
        let chunk = chunk
            .trim_start()
            .strip_prefix('"')
            .expect("a quoted route path");
        let (path, rest) = chunk.split_once('"').expect("a quoted route path");
        let method = rest
            .split_once("web::")
            .and_then(|(_, m)| m.split_once("()"))
            .map(|(m, _)| m.to_ascii_uppercase())
            .expect("a web::method() after the path");
        routes.push((method, path.to_string()));
    }
    routes.sort();
    routes
}

#[test]
fn openapi_description_lists_exactly_the_routes_of_api_rs() {
    let doc: Value = serde_json::from_str(include_str!("../../src/serve/openapi.json"))
        .expect("openapi.json is JSON");
    assert_eq!(doc["openapi"], "3.0.3");
    let mut described = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            if method == "parameters" {
                continue;
            }
            described.push((method.to_ascii_uppercase(), path.clone()));
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|c| c.starts_with('2')),
                "{method} {path} has no success answer"
            );
            if let Some(body) = op.get("requestBody") {
                let name = body["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .expect("request bodies name a schema")
                    .rsplit('/')
                    .next()
                    .unwrap();
                // Every body struct in api.rs has `deny_unknown_fields`.
                assert_eq!(
                    doc["components"]["schemas"][name]["additionalProperties"], false,
                    "{name} must say additionalProperties: false"
                );
            }
            if path.contains("{id}") {
                let params = item["parameters"].as_array().expect("the id parameter");
                assert_eq!(params[0]["schema"]["pattern"], "^[0-9a-fA-F]{40}$");
            }
        }
    }
    described.sort();
    assert_eq!(described, routes_in_api_rs());
    assert_eq!(
        doc["components"]["securitySchemes"]["taToken"]["name"],
        "X-TA-Token"
    );
}

// ---------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------

#[test]
fn serve_downloads_a_torrent_added_through_the_api_and_reports_on_it() {
    let tmp = temp_dir();
    let payload = Payload::single(&tmp.path().join("seed"), "film.bin", 3 * 1024 * 1024 + 123);
    // A rate-limited seeder keeps the download going long enough to see its peer.
    let swarm = Swarm::start(
        payload,
        15,
        SeedOpts {
            upload_limit: Some(512 * 1024),
            ..SeedOpts::default()
        },
    );
    let dl = tmp.path().join("dl");
    let daemon = Daemon::start(&dl, &tmp.path().join("state"), &DaemonOpts::default());
    let id = swarm.id();

    let added = daemon.post(
        "/api/torrents",
        &json!({"torrent_base64": swarm.base64(), "labels": ["films"]}),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let added = added.json();
    assert_eq!(added["id"], id);
    assert_eq!(added["info_hash"], id);
    assert_eq!(added["name"], "film.bin");
    assert_eq!(added["labels"], json!(["films"]));

    // Its peer and actors are looked at while the download runs: once both sides are
    // seeds, libtorrent closes the connection.
    let mut seeder_seen: Option<Value> = None;
    let mut peer_actors_seen = false;
    let done = wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "completion",
        is_complete,
        |_| {
            if seeder_seen.is_none() {
                let peers = daemon.get_json(&format!("/api/torrents/{id}/peers"));
                seeder_seen = peers
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| {
                        p["addr"]
                            .as_str()
                            .is_some_and(|a| a.starts_with("127.0.0.1:"))
                            && p["client"].as_str().is_some_and(|c| !c.is_empty())
                    })
                    .cloned();
            }
            if !peer_actors_seen {
                let metrics = daemon.get_json(&format!("/api/torrents/{id}/metrics"));
                peer_actors_seen = metrics["actors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["actor"] == "Peer");
            }
        },
    );
    assert_eq!(done["total_bytes"], swarm.payload.total_len());
    assert_eq!(done["verified_bytes"], swarm.payload.total_len());
    assert_same_files(&swarm.payload.dir, &dl, &swarm.payload.files);

    // The list shows it too.
    let list = daemon.get_json("/api/torrents");
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the list {list:#}"));
    assert!(is_complete(row), "{row:#}");

    let seeder = seeder_seen.unwrap_or_else(|| {
        panic!(
            "the seeder was never in the peer list; daemon log:\n{}",
            tail(&daemon)
        )
    });
    eprintln!("the seeder as a peer: {seeder}");
    assert!(peer_actors_seen, "no Peer actors in the torrent's metrics");

    let pieces = daemon.get_json(&format!("/api/torrents/{id}/pieces"));
    let count = pieces["pieces"].as_u64().unwrap() as usize;
    assert_eq!(count as u64, swarm.payload.total_len().div_ceil(1 << 15));
    let have = data_encoding::BASE64
        .decode(pieces["have"].as_str().unwrap().as_bytes())
        .expect("`have` is base64");
    assert!(all_pieces_set(&have, count), "{pieces:#}");

    let detail = daemon.get_json(&format!("/api/torrents/{id}"));
    assert_eq!(detail["pieces"], count);
    assert_eq!(detail["piece_length"], 1 << 15);
    assert_eq!(detail["files_count"], 1);

    let files = daemon.get_json(&format!("/api/torrents/{id}/files"));
    assert_eq!(files[0]["path"], "film.bin");
    assert_eq!(files[0]["verified_bytes"], swarm.payload.total_len());

    // The tracker answered, maybe only after a moment.
    let deadline = Instant::now() + CHANGE_LIMIT;
    loop {
        let trackers = daemon.get_json(&format!("/api/torrents/{id}/trackers"));
        let ours = trackers
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["url"] == swarm.tracker.http_url())
            .unwrap_or_else(|| panic!("{} not in {trackers:#}", swarm.tracker.http_url()))
            .clone();
        if ours["state"] == "working" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tracker never worked: {ours:#}"
        );
        thread::sleep(POLL);
    }

    let metrics = daemon.get_json(&format!("/api/torrents/{id}/metrics"));
    let actors: Vec<&str> = metrics["actors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["actor"].as_str())
        .collect();
    assert!(actors.contains(&"Coordinator"), "{actors:?}");
    assert!(actors.contains(&"Peer"), "{actors:?}");
    let all = daemon.get_json("/api/metrics");
    assert!(
        all.as_array().unwrap().iter().any(|m| m["id"] == id),
        "{all:#}"
    );

    let history = daemon.get_json(&format!("/api/torrents/{id}/history"));
    assert!(!history.as_array().unwrap().is_empty(), "no rate samples");

    // Live updates: the list every second, and the torrent's own stream.
    let (status, headers, events) = read_events(&daemon, "/api/events", CHANGE_LIMIT, |e| {
        e.iter().filter(|e| e.name == "torrents").count() >= 2
    });
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream")));
    let torrents: Vec<Value> = events
        .iter()
        .filter(|e| e.name == "torrents")
        .map(|e| serde_json::from_str(&e.data).expect("event data is JSON"))
        .collect();
    assert!(torrents.len() >= 2, "{events:?}");
    assert!(torrents[0]["torrents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == id));
    let (status, _, events) = read_events(
        &daemon,
        &format!("/api/torrents/{id}/events"),
        CHANGE_LIMIT,
        |e| e.iter().any(|e| e.name == "detail"),
    );
    assert_eq!(status, 200);
    let detail_event = events
        .iter()
        .find(|e| e.name == "detail")
        .expect("a detail event");
    let data: Value = serde_json::from_str(&detail_event.data).expect("event data is JSON");
    assert_eq!(data["torrent"]["id"], id);
    assert!(data["pieces"]["have"].is_string());

    // The same torrent again is a conflict.
    let again = daemon.post("/api/torrents", &json!({"torrent_base64": swarm.base64()}));
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.error_code(), "conflict");

    let paused = daemon.post(&format!("/api/torrents/{id}/pause"), &json!({}));
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!(paused.json()["state"], "paused");
    assert_eq!(
        daemon.get_json(&format!("/api/torrents/{id}"))["state"],
        "paused"
    );
    let resumed = daemon.request("POST", &format!("/api/torrents/{id}/resume"), None);
    assert_eq!(resumed.status, 200, "{resumed:?}");
    wait_for_torrent(
        &daemon,
        &id,
        CHANGE_LIMIT,
        "seeding again",
        is_complete,
        |_| {},
    );

    let labelled = daemon.put(
        &format!("/api/torrents/{id}/labels"),
        &json!({"labels": ["films", "to watch"]}),
    );
    assert_eq!(labelled.status, 200, "{labelled:?}");
    assert_eq!(labelled.json()["labels"], json!(["films", "to watch"]));
    assert_eq!(
        daemon.get_json(&format!("/api/torrents/{id}"))["labels"],
        json!(["films", "to watch"])
    );
    let limited = daemon.put(
        &format!("/api/torrents/{id}/limits"),
        &json!({"upload_limit": 100_000, "download_limit": 200_000}),
    );
    assert_eq!(limited.status, 200, "{limited:?}");
    let detail = daemon.get_json(&format!("/api/torrents/{id}"));
    assert_eq!(detail["upload_limit"], 100_000);
    assert_eq!(detail["download_limit"], 200_000);

    // A recheck drops the resume file (through a FileWriter) and checks the data again.
    let rechecked = daemon.post(&format!("/api/torrents/{id}/recheck"), &json!({}));
    assert_eq!(rechecked.status, 200, "{rechecked:?}");
    wait_for_torrent(
        &daemon,
        &id,
        CHANGE_LIMIT,
        "seeding after a recheck",
        is_complete,
        |_| {},
    );

    let removed = daemon.delete(&format!("/api/torrents/{id}?delete_data=true"));
    assert_eq!(removed.status, 204, "{removed:?}");
    let file = dl.join("film.bin");
    let deadline = Instant::now() + CHANGE_LIMIT;
    // The data and the side files (resume, reserve) all go.
    let torrent_files_left = || {
        std::fs::read_dir(&dl)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().contains("film"))
                    .count()
            })
            .unwrap_or(0)
    };
    while file.exists() || torrent_files_left() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} was not deleted",
            file.display()
        );
        thread::sleep(POLL);
    }
    let gone = daemon.get(&format!("/api/torrents/{id}"));
    assert_eq!(gone.status, 404, "{gone:?}");
    assert_eq!(gone.error_code(), "not_found");
    assert!(daemon
        .get_json("/api/torrents")
        .as_array()
        .unwrap()
        .is_empty());
}

/// A libtorrent seeder of a three-file torrent (`three/a.bin`, `b.bin`, `c.bin`) behind
/// opentracker, and a magnet link to it with `so` as its BEP 53 selection.
fn three_file_swarm(tmp: &Path, so: Option<FileSelection>) -> (Swarm, String) {
    let seed_dir = tmp.join("seed");
    // Lengths that do not fall on piece boundaries, so the unselected middle file shares
    // pieces with both of its neighbours.
    let files: Vec<(PathBuf, u64)> = [("a.bin", 300_001), ("b.bin", 200_003), ("c.bin", 250_007)]
        .iter()
        .map(|(name, len)| {
            let rel = format!("three/{name}");
            Payload::single(&seed_dir, &rel, *len).files.remove(0)
        })
        .collect();
    let payload = Payload {
        dir: seed_dir,
        name: "three".into(),
        files,
    };
    let swarm = Swarm::start(payload, 15, SeedOpts::default());
    let link = Magnet {
        info_hash: swarm.hash,
        v2_info_hash: None,
        display_name: Some("three".into()),
        trackers: vec![swarm.tracker.http_url()],
        peers: vec![swarm.seeder.addr()],
        peer_hosts: Vec::new(),
        select_only: so,
    }
    .to_uri();
    (swarm, link)
}

/// Files 0 and 2 of [`three_file_swarm`] are on disk, byte for byte; file 1 is not.
fn assert_only_the_outer_files(swarm: &Swarm, dl: &Path) {
    let wanted: Vec<(PathBuf, u64)> = [0, 2]
        .iter()
        .map(|&i| swarm.payload.files[i].clone())
        .collect();
    assert_same_files(&swarm.payload.dir, dl, &wanted);
    let skipped = dl.join(&swarm.payload.files[1].0);
    assert!(!skipped.exists(), "{} was created", skipped.display());
}

#[test]
fn magnet_added_with_choose_files_downloads_only_the_files_chosen_later() {
    let tmp = temp_dir();
    let (swarm, link) = three_file_swarm(tmp.path(), None);
    let dl = tmp.path().join("dl");
    let daemon = Daemon::start(&dl, &tmp.path().join("state"), &DaemonOpts::default());
    let id = swarm.id();

    let added = daemon.post(
        "/api/torrents",
        &json!({"magnet": link, "choose_files": true}),
    );
    assert_eq!(added.status, 201, "{added:?}");
    assert_eq!(added.json()["id"], id);
    wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "awaiting_files after the metadata",
        |t| t["state"] == "awaiting_files",
        |_| {},
    );
    let files = daemon.get_json(&format!("/api/torrents/{id}/files"));
    let paths: Vec<&str> = files
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    // Paths are the torrent's own: a multi-file torrent's start with its folder's name.
    assert_eq!(
        paths,
        ["three/a.bin", "three/b.bin", "three/c.bin"],
        "{files:#}"
    );

    let chosen = daemon.put(
        &format!("/api/torrents/{id}/files"),
        &json!({"selected": [0, 2]}),
    );
    assert_eq!(chosen.status, 200, "{chosen:?}");
    let selected: Vec<bool> = chosen
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["selected"].as_bool().unwrap())
        .collect();
    assert_eq!(selected, [true, false, true]);
    let resumed = daemon.request("POST", &format!("/api/torrents/{id}/resume"), None);
    assert_eq!(resumed.status, 200, "{resumed:?}");
    let done = wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "completion",
        is_complete,
        |_| {},
    );
    // `total_bytes` counts whole wanted pieces, as progress and the tracker's `left` do:
    // more than the two files, less than the torrent.
    assert_eq!(
        done["total_bytes"],
        wanted_piece_bytes(&[(0, 300_001), (500_004, 750_011)], 1 << 15, 750_011)
    );

    assert_only_the_outer_files(&swarm, &dl);

    // The piece map tells the pieces only the skipped file holds (not wanted) from
    // missing ones: every piece is had or not wanted.
    let map = daemon.get_json(&format!("/api/torrents/{id}/pieces"));
    let pieces = map["pieces"].as_u64().unwrap() as usize;
    let bits = |field: &str| {
        let bytes = data_encoding::BASE64
            .decode(map[field].as_str().unwrap().as_bytes())
            .unwrap();
        (0..pieces)
            .map(|i| bytes.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0))
            .collect::<Vec<bool>>()
    };
    let (have, wanted) = (bits("have"), bits("wanted"));
    let not_wanted = wanted.iter().filter(|w| !**w).count() as u64;
    let wanted_bytes = wanted_piece_bytes(&[(0, 300_001), (500_004, 750_011)], 1 << 15, 750_011);
    assert_eq!(
        not_wanted,
        pieces as u64 - wanted_bytes.div_ceil(1 << 15),
        "{map}"
    );
    assert!(not_wanted > 0, "{map}");
    assert!(have.iter().zip(&wanted).all(|(h, w)| h == w), "{map}");

    // The metadata is kept in the state folder, not beside the download; deleting the
    // torrent with its data leaves the download root empty.
    assert!(
        !dl.join("three.torrent").exists(),
        "three.torrent saved in {}",
        dl.display()
    );
    let removed = daemon.delete(&format!("/api/torrents/{id}?delete_data=true"));
    assert_eq!(removed.status, 204, "{removed:?}");
    let deadline = Instant::now() + CHANGE_LIMIT;
    loop {
        let left: Vec<_> = std::fs::read_dir(&dl)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind in {}: {left:?}",
            dl.display()
        );
        thread::sleep(POLL);
    }
}

#[test]
fn a_high_priority_file_completes_before_a_normal_one() {
    let tmp = temp_dir();
    let seed_dir = tmp.path().join("seed");
    // The normal file first in the torrent, the high one after it; equal sizes.
    let files: Vec<(PathBuf, u64)> = [("first.bin", 1_500_007), ("urgent.bin", 1_500_011)]
        .iter()
        .map(|(name, len)| {
            Payload::single(&seed_dir, &format!("pair/{name}"), *len)
                .files
                .remove(0)
        })
        .collect();
    let payload = Payload {
        dir: seed_dir,
        name: "pair".into(),
        files,
    };
    // A rate-limited seeder: the picker's order, not luck, decides what is in first.
    let swarm = Swarm::start(
        payload,
        15,
        SeedOpts {
            upload_limit: Some(256 * 1024),
            ..SeedOpts::default()
        },
    );
    let dl = tmp.path().join("dl");
    let daemon = Daemon::start(&dl, &tmp.path().join("state"), &DaemonOpts::default());
    let id = swarm.id();
    swarm.add_paused(&daemon);

    let set = daemon.put(
        &format!("/api/torrents/{id}/files"),
        &json!({"selected": [0, 1], "high": [1]}),
    );
    assert_eq!(set.status, 200, "{set:?}");
    let priorities: Vec<String> = set
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["priority"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(priorities, ["normal", "high"]);
    let resumed = daemon.request("POST", &format!("/api/torrents/{id}/resume"), None);
    assert_eq!(resumed.status, 200, "{resumed:?}");

    // Poll the files until the high one is complete; the normal one is not yet.
    let deadline = Instant::now() + DOWNLOAD_LIMIT;
    let (normal_then, files) = loop {
        let files = daemon.get_json(&format!("/api/torrents/{id}/files"));
        let f = files.as_array().unwrap();
        let done = |i: usize| f[i]["verified_bytes"] == f[i]["length"];
        if done(1) {
            break (done(0), files);
        }
        assert!(
            Instant::now() < deadline,
            "the high-priority file did not complete: {files:#}\n{}",
            tail(&daemon)
        );
        thread::sleep(POLL);
    };
    assert!(
        !normal_then,
        "the normal file was complete no later than the high one: {files:#}"
    );
    wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "completion",
        is_complete,
        |_| {},
    );
    assert_same_files(&swarm.payload.dir, &dl, &swarm.payload.files);
    // The file list still says which file was high.
    let files = daemon.get_json(&format!("/api/torrents/{id}/files"));
    assert_eq!(files[1]["priority"], "high", "{files:#}");
}

#[test]
fn a_torrent_that_meets_its_seeding_goal_stops_seeding_across_restarts() {
    let tmp = temp_dir();
    let payload = Payload::single(&tmp.path().join("seed"), "goal.bin", 300_007);
    let swarm = Swarm::start(payload, 15, SeedOpts::default());
    let dl = tmp.path().join("dl");
    // A daemon-wide default: stop after an hour of seeding.
    let daemon_opts = DaemonOpts {
        args: vec!["--seed-time".into(), "1h".into()],
        ..DaemonOpts::default()
    };
    let mut daemon = Daemon::start(&dl, &tmp.path().join("state"), &daemon_opts);
    let id = swarm.id();
    let added = swarm.add_paused(&daemon);
    assert_eq!(added["seed_time_secs"], 3600, "{added}");
    assert_eq!(added["seed_ratio"], Value::Null, "{added}");

    // Its own goal: one second of seeding.
    let set = daemon.put(
        &format!("/api/torrents/{id}/seeding"),
        &json!({"seed_time_secs": 1}),
    );
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(set.json()["seed_time_secs"], 1);
    let bad = daemon.put(
        &format!("/api/torrents/{id}/seeding"),
        &json!({"seed_ratio": -1.0}),
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    let resumed = daemon.request("POST", &format!("/api/torrents/{id}/resume"), None);
    assert_eq!(resumed.status, 200, "{resumed:?}");

    let finished = wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "finished after meeting its goal",
        |t| t["state"] == "finished",
        |_| {},
    );
    assert_eq!(finished["progress"], 1.0, "{finished}");
    assert_same_files(&swarm.payload.dir, &dl, &swarm.payload.files);
    wait_for_log_line(&daemon, &["seeding goal reached", "goal.bin"]);
    // No peers while finished: the tree is stopped.
    assert_eq!(
        daemon.get_json(&format!("/api/torrents/{id}/peers")),
        json!([])
    );
    let seeded = finished["seeding_secs"].as_u64().unwrap();
    assert!(seeded >= 1, "{finished}");

    // A restart keeps it finished, not seeding, with the time it seeded.
    let status = daemon.stop();
    assert!(status.success(), "{status}\n{}", tail(&daemon));
    drop(daemon);
    let daemon = Daemon::start(&dl, &tmp.path().join("state"), &daemon_opts);
    let after = daemon.get_json(&format!("/api/torrents/{id}"));
    assert_eq!(after["state"], "finished", "{after:#}");
    assert_eq!(after["progress"], 1.0, "{after:#}");
    assert_eq!(after["seeding_secs"], seeded, "{after:#}");
    assert_eq!(
        daemon.get_json(&format!("/api/torrents/{id}/peers")),
        json!([])
    );

    // Resumed, it seeds on past the goal.
    let resumed = daemon.request("POST", &format!("/api/torrents/{id}/resume"), None);
    assert_eq!(resumed.status, 200, "{resumed:?}");
    wait_for_torrent(
        &daemon,
        &id,
        CHANGE_LIMIT,
        "seeding again",
        is_complete,
        |_| {},
    );
    // Back to the default goal.
    let back = daemon.put(
        &format!("/api/torrents/{id}/seeding"),
        &json!({"default": true}),
    );
    assert_eq!(back.status, 200, "{back:?}");
    assert_eq!(back.json()["seed_time_secs"], 3600);
}

#[test]
fn with_one_download_slot_the_second_torrent_waits_queued_then_completes() {
    let tmp = temp_dir();
    // The first download is slow, so the second is seen waiting.
    let first = Swarm::start(
        Payload::single(&tmp.path().join("seed1"), "first.bin", 1_000_003),
        15,
        SeedOpts {
            upload_limit: Some(200 * 1024),
            ..SeedOpts::default()
        },
    );
    let second = Swarm::start(
        Payload::single(&tmp.path().join("seed2"), "second.bin", 300_007),
        15,
        SeedOpts::default(),
    );
    let dl = tmp.path().join("dl");
    let daemon = Daemon::start(
        &dl,
        &tmp.path().join("state"),
        &DaemonOpts {
            args: vec!["--max-active-downloads".into(), "1".into()],
            ..DaemonOpts::default()
        },
    );
    let a = daemon.post("/api/torrents", &json!({"torrent_base64": first.base64()}));
    assert_eq!(a.status, 201, "{a:?}");
    let b = daemon.post("/api/torrents", &json!({"torrent_base64": second.base64()}));
    assert_eq!(b.status, 201, "{b:?}");
    assert_eq!(b.json()["state"], "queued", "{b:?}");
    // While the first is not complete, the second stays queued.
    let first_done = wait_for_torrent(
        &daemon,
        &first.id(),
        DOWNLOAD_LIMIT,
        "the first completing",
        is_complete,
        |_| {
            let t = daemon.get_json(&format!("/api/torrents/{}", second.id()));
            let first_now = daemon.get_json(&format!("/api/torrents/{}", first.id()));
            if !is_complete(&first_now) {
                assert!(
                    t["state"] == "queued" || first_now["progress"].as_f64() == Some(1.0),
                    "the second left the queue early: {t}"
                );
            }
        },
    );
    assert!(is_complete(&first_done));
    // Then it starts by itself and completes.
    wait_for_torrent(
        &daemon,
        &second.id(),
        DOWNLOAD_LIMIT,
        "the queued one completing",
        is_complete,
        |_| {},
    );
    assert_same_files(&second.payload.dir, &dl, &second.payload.files);
    wait_for_log_line(&daemon, &["torrent queued", "second.bin"]);
}

#[test]
fn a_magnets_so_selection_is_honoured_once_the_files_are_known() {
    let tmp = temp_dir();
    let so = FileSelection::new([0..=0, 2..=2]).unwrap();
    let (swarm, link) = three_file_swarm(tmp.path(), Some(so));
    let dl = tmp.path().join("dl");
    let daemon = Daemon::start(&dl, &tmp.path().join("state"), &DaemonOpts::default());
    let id = swarm.id();
    let added = daemon.post("/api/torrents", &json!({ "magnet": link }));
    assert_eq!(added.status, 201, "{added:?}");
    wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "completion",
        is_complete,
        |_| {},
    );
    let files = daemon.get_json(&format!("/api/torrents/{id}/files"));
    let selected: Vec<bool> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["selected"].as_bool().unwrap())
        .collect();
    assert_eq!(selected, [true, false, true], "{files:#}");
    assert_only_the_outer_files(&swarm, &dl);
}

/// Waits until the daemon's log has a line holding every one of `parts`, and returns it.
fn wait_for_log_line(daemon: &Daemon, parts: &[&str]) -> String {
    let deadline = Instant::now() + CHANGE_LIMIT;
    while Instant::now() < deadline {
        let log = daemon.log();
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        thread::sleep(POLL);
    }
    panic!(
        "no log line with all of {parts:?} within {CHANGE_LIMIT:?}; log:\n{}",
        tail(daemon)
    );
}

/// The torrent's trackers as the API lists them.
fn trackers_of(daemon: &Daemon, id: &str) -> Vec<Value> {
    let reply = daemon.get_json(&format!("/api/torrents/{id}/trackers"));
    reply.as_array().cloned().unwrap_or_default()
}

#[test]
fn a_paused_torrent_shows_its_trackers_idle_and_its_verified_progress_after_a_restart() {
    let tmp = temp_dir();
    let payload = Payload::single(&tmp.path().join("seed"), "half.bin", 2 * 1024 * 1024);
    let swarm = Swarm::start(
        payload,
        15,
        SeedOpts {
            upload_limit: Some(256 * 1024),
            ..SeedOpts::default()
        },
    );
    let dl = tmp.path().join("dl");
    let state = tmp.path().join("state");
    let id = swarm.id();
    let tracker_url = swarm.tracker.http_url();

    let mut first = Daemon::start(&dl, &state, &DaemonOpts::default());
    // Added paused: its tracker is listed (tiers count from 1, as `info` does), idle.
    swarm.add_paused(&first);
    let rows = trackers_of(&first, &id);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["url"], tracker_url.as_str(), "{rows:#?}");
    assert_eq!(rows[0]["tier"], 1, "{rows:#?}");
    assert_eq!(rows[0]["state"], "idle", "{rows:#?}");

    let resumed = first.post(&format!("/api/torrents/{id}/resume"), &json!({}));
    assert_eq!(resumed.status, 200, "{resumed:?}");
    let midway = wait_for_torrent(
        &first,
        &id,
        DOWNLOAD_LIMIT,
        "some verified progress",
        |t| t["progress"].as_f64().is_some_and(|p| p > 0.1),
        |_| {},
    );
    let paused = first.post(&format!("/api/torrents/{id}/pause"), &json!({}));
    assert_eq!(paused.status, 200, "{paused:?}");
    let verified = paused.json()["verified_bytes"].as_u64().unwrap();
    assert!(verified > 0, "{midway:#}");
    // Paused: nothing announces, so no tracker says it works nor when it announces next.
    for row in trackers_of(&first, &id) {
        assert_eq!(row["state"], "idle", "{row:#}");
        assert!(row["next_announce_secs"].is_null(), "{row:#}");
        assert_eq!(row["tier"], 1, "{row:#}");
    }
    let status = first.stop();
    assert!(status.success(), "{status}\n{}", tail(&first));
    drop(first);

    // After a restart the paused torrent shows what its resume file says is verified.
    let second = Daemon::start(&dl, &state, &DaemonOpts::default());
    let after = second.get_json(&format!("/api/torrents/{id}"));
    assert_eq!(after["state"], "paused", "{after:#}");
    assert_eq!(after["verified_bytes"], verified, "{after:#}");
    let rows = trackers_of(&second, &id);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["state"], "idle", "{rows:#?}");
}

#[test]
fn serve_logs_each_torrent_event_and_keeps_a_magnets_metadata_in_the_state_folder() {
    let tmp = temp_dir();
    let (swarm, link) = three_file_swarm(tmp.path(), None);
    let dl = tmp.path().join("dl");
    let state = tmp.path().join("state");
    let quiet = DaemonOpts {
        quiet: true,
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start(&dl, &state, &quiet);
    let id = swarm.id();
    let short = &id[..8];

    let added = daemon.post("/api/torrents", &json!({ "magnet": link }));
    assert_eq!(added.status, 201, "{added:?}");
    wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "completion",
        is_complete,
        |_| {},
    );
    // At the default verbosity, one line per event, each naming the torrent.
    for event in ["torrent added", "metadata received", "torrent completed"] {
        let line = wait_for_log_line(&daemon, &[event, "three", short]);
        eprintln!("{line}");
        assert!(!line.starts_with(' '), "{line:?}");
    }

    // A second add of the same torrent is refused, naming it.
    let again = daemon.post("/api/torrents", &json!({ "magnet": link }));
    assert_eq!(again.status, 409, "{again:?}");
    let message = again.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("three") && !message.contains(&id),
        "the conflict should name the torrent, not its info-hash: {message:?}"
    );

    // The metadata is kept in the state folder only, not beside the download.
    let stray: Vec<String> = fs::read_dir(&dl)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".torrent"))
        .collect();
    assert!(
        stray.is_empty(),
        "metadata saved in the download folder: {stray:?}"
    );
    let kept = state.join("torrents").join(format!("{id}.torrent"));
    assert!(kept.is_file(), "{} is not kept", kept.display());

    let paused = daemon.post(&format!("/api/torrents/{id}/pause"), &json!({}));
    assert_eq!(paused.status, 200, "{paused:?}");
    wait_for_log_line(&daemon, &["torrent paused", "three", short]);
    let removed = daemon.delete(&format!("/api/torrents/{id}"));
    assert!(removed.status < 300, "{removed:?}");
    wait_for_log_line(&daemon, &["torrent removed", "three", short]);
}

// ---------------------------------------------------------------------------------------
// Security
// ---------------------------------------------------------------------------------------

/// The headers every answer must carry, and the one none may.
fn assert_hardened(reply: &crate::support::Reply, what: &str) {
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{what}: {reply:?}"
    );
    assert_eq!(
        reply.header("x-frame-options"),
        Some("DENY"),
        "{what}: {reply:?}"
    );
    let csp = reply
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP: {reply:?}"));
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert_eq!(
        reply.header("referrer-policy"),
        Some("no-referrer"),
        "{what}: {reply:?}"
    );
    assert!(
        reply.header("access-control-allow-origin").is_none(),
        "{what}: {reply:?}"
    );
}

#[test]
fn serve_refuses_foreign_hosts_cross_site_writes_and_paths_outside_its_root() {
    let tmp = temp_dir();
    let dl = tmp.path().join("dl");
    fs::create_dir_all(&dl).unwrap();
    let payload = Payload::single(&tmp.path().join("seed"), "small.bin", 100_000);
    let torrent = tmp.path().join("x.torrent");
    make_torrent(&payload.root(), &torrent, 15, &[]);
    fs::copy(&torrent, dl.join("inside.torrent")).unwrap();
    let daemon = Daemon::start(
        &dl,
        &tmp.path().join("state"),
        &DaemonOpts {
            max_torrent_mib: Some(1),
            ..DaemonOpts::default()
        },
    );
    let port = daemon.port;
    let token = daemon.token.clone();
    let own_origin = format!("http://127.0.0.1:{port}");
    let add = serde_json::to_vec(&json!({"magnet": "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567", "paused": true})).unwrap();

    // DNS rebinding: a page of another name pointed at 127.0.0.1.
    let foreign_host = format!("attacker.example:{port}");
    let reply = http(
        port,
        "GET",
        "/api/torrents",
        &[("Host", &foreign_host)],
        None,
    );
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.error_code(), "forbidden");
    assert_hardened(&reply, "a refused Host");
    let reply = http(port, "GET", "/", &[("Host", &foreign_host)], None);
    assert_eq!(reply.status, 403, "the page itself: {reply:?}");

    let json_type = ("Content-Type", "application/json");
    let reply = http(port, "POST", "/api/torrents", &[json_type], Some(&add));
    assert_eq!(reply.status, 403, "no token: {reply:?}");
    let reply = http(
        port,
        "POST",
        "/api/torrents",
        &[
            json_type,
            ("X-TA-Token", "0123456789abcdef0123456789abcdef"),
        ],
        Some(&add),
    );
    assert_eq!(reply.status, 403, "a wrong token: {reply:?}");
    let reply = http(
        port,
        "POST",
        "/api/torrents",
        &[
            json_type,
            ("X-TA-Token", &token),
            ("Origin", "http://evil.example"),
        ],
        Some(&add),
    );
    assert_eq!(reply.status, 403, "a foreign Origin: {reply:?}");
    assert_hardened(&reply, "a foreign Origin");
    let reply = http(
        port,
        "POST",
        "/api/torrents",
        &[
            json_type,
            ("X-TA-Token", &token),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        Some(&add),
    );
    assert_eq!(reply.status, 403, "Sec-Fetch-Site cross-site: {reply:?}");
    let reply = http(
        port,
        "POST",
        "/api/torrents",
        &[("Content-Type", "text/plain"), ("X-TA-Token", &token)],
        Some(&add),
    );
    assert_eq!(reply.status, 415, "a text/plain body: {reply:?}");
    assert_eq!(reply.error_code(), "unsupported_media_type");
    // Nothing of the above was added.
    assert!(daemon
        .get_json("/api/torrents")
        .as_array()
        .unwrap()
        .is_empty());

    // Our own page's requests pass.
    let settings = serde_json::to_vec(&json!({"upload_limit": 0, "download_limit": 0})).unwrap();
    let reply = http(
        port,
        "PUT",
        "/api/settings",
        &[
            json_type,
            ("X-TA-Token", &token),
            ("Origin", &own_origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        Some(&settings),
    );
    assert_eq!(reply.status, 200, "a same-origin write: {reply:?}");

    // A read from a foreign page gets no CORS permission to read the answer.
    let reply = http(
        port,
        "GET",
        "/api/torrents",
        &[("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_hardened(&reply, "a read with a foreign Origin");
    let page = http(port, "GET", "/", &[], None);
    assert_eq!(page.status, 200);
    assert_hardened(&page, "the page");
    assert!(
        String::from_utf8_lossy(&page.body).contains(&token),
        "the page carries the token"
    );

    // Paths from callers stay inside the download root.
    for path in [
        "../x.torrent",
        "/etc/passwd",
        &torrent.display().to_string(),
    ] {
        let reply = daemon.post("/api/torrents", &json!({ "path": path }));
        assert_eq!(reply.status, 400, "path {path:?}: {reply:?}");
        assert_eq!(reply.error_code(), "bad_request");
        let reply = daemon.post("/api/inspect", &json!({ "path": path }));
        assert_eq!(reply.status, 400, "inspect path {path:?}: {reply:?}");
    }
    let inside = daemon.post("/api/inspect", &json!({"path": "inside.torrent"}));
    assert_eq!(inside.status, 200, "{inside:?}");
    assert_eq!(inside.json()["files"][0]["length"], 100_000);
    for dir in ["../out", "/tmp", "a/../../out"] {
        let reply = daemon.post(
            "/api/torrents",
            &json!({"torrent_base64": base64_of(&torrent), "dir": dir}),
        );
        assert_eq!(reply.status, 400, "dir {dir:?}: {reply:?}");
    }
    assert!(!tmp.path().join("out").exists());
    assert!(daemon
        .get_json("/api/torrents")
        .as_array()
        .unwrap()
        .is_empty());

    // Larger than --max-torrent-mib 1: just over it (the handler's check), and far over
    // it (the body limit).
    for len in [(1 << 20) + 12_000, 3 << 20] {
        let big = data_encoding::BASE64.encode(&vec![b'd'; len]);
        let reply = daemon.post("/api/torrents", &json!({ "torrent_base64": big }));
        assert_eq!(reply.status, 413, "a {len}-byte torrent: {reply:?}");
        assert_eq!(reply.error_code(), "payload_too_large");
    }

    // Malformed input is a 400 with the error shape, never a 5xx.
    for body in [
        json!({}),
        json!({"magnet": "magnet:?xt=urn:btih:zz"}),
        json!({"torrent_base64": "not base64!"}),
        json!({"torrent_base64": "AAAA"}),
        json!({"magnet": "x", "path": "y"}),
        json!({"magnet": "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567", "unknown": 1}),
        json!({"magnet": "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567", "files": [-1]}),
    ] {
        let reply = daemon.post("/api/torrents", &body);
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.error_code(), "bad_request");
    }
    let reply = daemon.put(
        "/api/settings",
        &json!({"upload_limit": 18_446_744_073_709_551_615u64 as f64 * 2.0, "download_limit": 0}),
    );
    assert_eq!(reply.status, 400, "a limit beyond u64: {reply:?}");
    let reply = daemon.get("/api/torrents/not-a-hash");
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.error_code(), "not_found");
}

#[test]
fn serve_on_a_wildcard_address_without_a_key_refuses_to_start() {
    let tmp = temp_dir();
    let cmd = serve_command(
        &tmp.path().join("dl"),
        &tmp.path().join("state"),
        &DaemonOpts {
            listen: "0.0.0.0:0".into(),
            ..DaemonOpts::default()
        },
    );
    let out = run_until(cmd, Duration::from_secs(20)).unwrap_or_else(|o| {
        panic!(
            "serve on 0.0.0.0 without a key kept running:\n{}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("authentication"), "{stderr}");
}

#[test]
fn serve_with_an_api_key_wants_it_and_locks_out_guessers() {
    let tmp = temp_dir();
    let key = "correct-horse-battery-staple-42";
    let daemon = Daemon::start_keyed(tmp.path(), key, DaemonOpts::default());
    let port = daemon.port;
    let token = daemon.token.clone();

    let reply = http(port, "GET", "/api/torrents", &[], None);
    assert_eq!(reply.status, 401, "no key: {reply:?}");
    assert_eq!(reply.error_code(), "unauthorized");
    let reply = http(port, "GET", "/api/token", &[], None);
    assert_eq!(reply.status, 401, "the token needs the key too: {reply:?}");
    // The router decodes `%61` to `a`; the key check must not be fooled by the spelling.
    for spelled in ["/%61pi/torrents", "/api/%74orrents", "/api//torrents"] {
        let reply = http(port, "GET", spelled, &[], None);
        assert_eq!(reply.status, 401, "{spelled} without the key: {reply:?}");
    }
    let body = serde_json::to_vec(&json!({"labels": ["x"]})).unwrap();
    let reply = http(
        port,
        "POST",
        "/%61pi/torrents",
        &[("Content-Type", "application/json"), ("X-TA-Token", &token)],
        Some(&body),
    );
    assert_eq!(
        reply.status, 401,
        "an encoded write without the key: {reply:?}"
    );
    // Login bodies are read before anyone is authenticated: small ones only.
    let big = serde_json::to_vec(&json!({ "key": "k".repeat(10_000) })).unwrap();
    let reply = http(
        port,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json"), ("X-TA-Token", &token)],
        Some(&big),
    );
    assert_eq!(reply.status, 413, "a large login body: {reply:?}");
    let auth = http(port, "GET", "/api/auth", &[], None);
    assert_eq!(auth.status, 200, "{auth:?}");
    assert_eq!(
        auth.json(),
        json!({"required": true, "authenticated": false})
    );
    let bearer = format!("Bearer {key}");
    let reply = http(
        port,
        "GET",
        "/api/torrents",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(reply.status, 200, "with the key: {reply:?}");

    let login = |key: &str| {
        let body = serde_json::to_vec(&json!({ "key": key })).unwrap();
        http(
            port,
            "POST",
            "/api/login",
            &[("Content-Type", "application/json"), ("X-TA-Token", &token)],
            Some(&body),
        )
    };
    let reply = login(key);
    assert_eq!(reply.status, 204, "login: {reply:?}");
    let set_cookie = reply
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("ta_session="))
        .unwrap_or_else(|| panic!("no ta_session cookie: {reply:?}"))
        .to_string();
    assert!(
        set_cookie.to_ascii_lowercase().contains("httponly"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let reply = http(port, "GET", "/api/torrents", &[("Cookie", &cookie)], None);
    assert_eq!(reply.status, 200, "with the cookie: {reply:?}");
    let auth = http(port, "GET", "/api/auth", &[("Cookie", &cookie)], None);
    assert_eq!(
        auth.json(),
        json!({"required": true, "authenticated": true})
    );
    let body = serde_json::to_vec(&json!({"upload_limit": 0, "download_limit": 0})).unwrap();
    let reply = http(
        port,
        "PUT",
        "/api/settings",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/json"),
            ("X-TA-Token", &token),
        ],
        Some(&body),
    );
    assert_eq!(reply.status, 200, "a write with the cookie: {reply:?}");
    let reply = http(
        port,
        "GET",
        "/api/torrents",
        &[("Cookie", "ta_session=0123456789abcdef0123456789abcdef")],
        None,
    );
    assert_eq!(reply.status, 401, "a made-up cookie: {reply:?}");

    // Five wrong keys lock this address out, and then even the right key is refused;
    // a login made before stays good, so a guesser sharing the owner's address cannot
    // lock the owner out.
    for attempt in 1..=5 {
        let reply = http(
            port,
            "GET",
            "/api/torrents",
            &[("Authorization", "Bearer wrong-key-wrong-key")],
            None,
        );
        assert_eq!(reply.status, 401, "wrong key #{attempt}: {reply:?}");
    }
    let reply = http(
        port,
        "GET",
        "/api/torrents",
        &[("Authorization", &bearer)],
        None,
    );
    assert_eq!(reply.status, 429, "the key while locked out: {reply:?}");
    assert_eq!(reply.error_code(), "too_many_requests");
    let retry: u64 = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {reply:?}"))
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "{reply:?}");
    let reply = http(port, "GET", "/api/torrents", &[("Cookie", &cookie)], None);
    assert_eq!(
        reply.status, 200,
        "the earlier login while locked out: {reply:?}"
    );
    let reply = login(key);
    assert_eq!(reply.status, 429, "login while locked out: {reply:?}");
}

#[test]
fn the_page_logs_in_without_the_token_but_only_same_origin_and_as_json() {
    let tmp = temp_dir();
    let key = "correct-horse-battery-staple-42";
    let daemon = Daemon::start_keyed(tmp.path(), key, DaemonOpts::default());
    let port = daemon.port;
    let token = daemon.token.clone();
    let origin = format!("http://127.0.0.1:{port}");

    // The page a visitor gets before logging in does not carry the token: only someone
    // who proved the key may have it.
    let page = http(port, "GET", "/", &[], None);
    assert_eq!(page.status, 200, "{page:?}");
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(
        !html.contains(&token),
        "the page gives the token to a visitor who has not logged in"
    );

    let login = |headers: &[(&str, &str)], body: &[u8]| {
        http(port, "POST", "/api/login", headers, Some(body))
    };
    let right = serde_json::to_vec(&json!({ "key": key })).unwrap();
    let wrong = serde_json::to_vec(&json!({ "key": "not-the-key-not-the-key" })).unwrap();
    let page_headers = [
        ("Content-Type", "application/json"),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];

    // Another site cannot log in through the visitor's browser, nor can a form.
    let reply = login(
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        &right,
    );
    assert_eq!(reply.status, 403, "a cross-origin login: {reply:?}");
    let reply = login(
        &[
            ("Content-Type", "application/json"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        &right,
    );
    assert_eq!(reply.status, 403, "a cross-site login: {reply:?}");
    let reply = login(
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", origin.as_str()),
        ],
        b"key=correct-horse-battery-staple-42",
    );
    assert_eq!(reply.status, 415, "a form login: {reply:?}");
    let reply = login(&[("Origin", origin.as_str())], &right);
    assert_eq!(
        reply.status, 415,
        "a login without a content type: {reply:?}"
    );

    // The page's own login, as a browser sends it: no token, same origin, JSON.
    let reply = login(&page_headers, &right);
    assert_eq!(reply.status, 204, "the page's login: {reply:?}");
    let cookie = reply
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("ta_session="))
        .unwrap_or_else(|| panic!("no ta_session cookie: {reply:?}"))
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // Logged in, the page and /api/token give the token, and writes work with it.
    let page = http(port, "GET", "/", &[("Cookie", &cookie)], None);
    assert!(
        String::from_utf8_lossy(&page.body).contains(&token),
        "the logged-in page has no token"
    );
    let reply = http(port, "GET", "/api/token", &[("Cookie", &cookie)], None);
    assert_eq!(reply.json()["token"], json!(token), "{reply:?}");

    // Without the token, a wrong key still counts towards the lock-out.
    for attempt in 1..=5 {
        let reply = login(&page_headers, &wrong);
        assert_eq!(reply.status, 401, "wrong key #{attempt}: {reply:?}");
    }
    let reply = login(&page_headers, &right);
    assert_eq!(
        reply.status, 429,
        "the right key while locked out: {reply:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------------------

#[test]
fn serve_restarted_mid_download_resumes_where_it_stopped() {
    let tmp = temp_dir();
    let payload = Payload::single(&tmp.path().join("seed"), "slow.bin", 4 * 1024 * 1024);
    let total = payload.total_len();
    let swarm = Swarm::start(
        payload,
        15,
        SeedOpts {
            upload_limit: Some(256 * 1024),
            ..SeedOpts::default()
        },
    );
    let dl = tmp.path().join("dl");
    let state = tmp.path().join("state");
    let id = swarm.id();

    let mut first = Daemon::start(&dl, &state, &DaemonOpts::default());
    let added = first.post(
        "/api/torrents",
        &json!({"torrent_base64": swarm.base64(), "labels": ["keep me"]}),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let midway = wait_for_torrent(
        &first,
        &id,
        DOWNLOAD_LIMIT,
        "20% to 80% progress",
        |t| {
            t["progress"]
                .as_f64()
                .is_some_and(|p| (0.2..=0.8).contains(&p))
        },
        |t| {
            let p = t["progress"].as_f64().unwrap_or(0.0);
            assert!(p <= 0.8, "the download passed 80% between two looks: {t:#}");
        },
    );
    eprintln!("stopping the daemon at {}", midway["progress"]);
    let status = first.stop();
    assert!(
        status.success(),
        "SIGTERM should stop the daemon cleanly: {status}\n{}",
        tail(&first)
    );
    assert!(
        state.join("session.json").is_file(),
        "no state file in {}",
        state.display()
    );
    drop(first);

    let second = Daemon::start(&dl, &state, &DaemonOpts::default());
    let list = second.get_json("/api/torrents");
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed after the restart: {list:#}"))
        .clone();
    assert_eq!(row["labels"], json!(["keep me"]));
    let downloaded_before = row["downloaded"].as_u64().unwrap();
    assert!(
        downloaded_before >= midway["downloaded"].as_u64().unwrap(),
        "the first run's downloaded bytes were not kept: {row:#} after {midway:#}"
    );
    let done = wait_for_torrent(
        &second,
        &id,
        DOWNLOAD_LIMIT,
        "completion",
        is_complete,
        |_| {},
    );
    let this_run = done["downloaded"].as_u64().unwrap() - downloaded_before;
    eprintln!("{this_run} of {total} bytes downloaded after the restart");
    assert!(
        this_run < total,
        "the second run downloaded {this_run} of {total} bytes: it started over\n{done:#}"
    );
    assert_same_files(&swarm.payload.dir, &dl, &swarm.payload.files);
}

// ---------------------------------------------------------------------------------------
// Schemathesis
// ---------------------------------------------------------------------------------------

/// Whether the environment says this is a CI run.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

#[test]
fn schemathesis_finds_no_server_error_in_any_operation() {
    let Some(st) = std::env::var_os("SCHEMATHESIS").filter(|s| !s.is_empty()) else {
        assert!(
            !in_ci(),
            "CI is set but SCHEMATHESIS is not: .ci/run must install schemathesis and name it"
        );
        eprintln!("schemathesis_finds_no_server_error_in_any_operation: skipped, set SCHEMATHESIS=/path/to/schemathesis to run it");
        return;
    };
    let mut cmd = Command::new("bash");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schemathesis.sh"
    ))
    .arg(env!("CARGO_BIN_EXE_torrent-actors"))
    .env("SCHEMATHESIS", st);
    let out = run_until(cmd, Duration::from_secs(480)).unwrap_or_else(|o| {
        panic!(
            "schemathesis overran its bound:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon's peak resident set so far, in KiB, from `/proc`.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn serve_downloads_64_mib_pieces_without_holding_one_in_memory() {
    const PIECE_EXP: u32 = 26;
    let tmp = temp_dir();
    // Two whole 64 MiB pieces and a short last one; the default budgets (32 and 16 MiB)
    // cannot hold two of them, so they are streamed to disk.
    let payload = Payload::single(
        &tmp.path().join("seed"),
        "big.bin",
        (5 << PIECE_EXP) / 2 + 12_345,
    );
    let swarm = Swarm::start(
        payload,
        PIECE_EXP,
        SeedOpts {
            seed_mode: true,
            ..SeedOpts::default()
        },
    );
    let dl = tmp.path().join("dl");
    let daemon = Daemon::start(&dl, &tmp.path().join("state"), &DaemonOpts::default());
    let added = daemon.post("/api/torrents", &json!({"torrent_base64": swarm.base64()}));
    assert_eq!(added.status, 201, "{added:?}");
    wait_for_torrent(
        &daemon,
        &swarm.id(),
        DOWNLOAD_LIMIT,
        "the download",
        is_complete,
        |_| {},
    );
    assert_same_files(&swarm.payload.dir, &dl, &swarm.payload.files);
    let peak = peak_rss_kib(daemon.pid());
    assert!(
        peak < 64 * 1024,
        "the daemon peaked at {peak} KiB, as much as a whole 64 MiB piece"
    );
}

/// What the Prometheus project's own parser (Debian's python3-prometheus-client) reads
/// from a `/metrics` text: per sample, its name, labels and value.
fn prometheus_samples(text: &str) -> Vec<Value> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 for the Prometheus parser");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn serve_metrics_are_prometheus_text_that_a_real_parser_reads() {
    let tmp = temp_dir();
    // A name with a double quote: a stranger's text, escaped in its label.
    let payload = Payload::single(&tmp.path().join("seed"), "film \"cut\".bin", 1 << 20);
    let swarm = Swarm::start(payload, 15, SeedOpts::default());
    let key = "correct-horse-battery-staple-42";
    let opts = DaemonOpts {
        args: vec!["--metrics-without-key".into()],
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_keyed(tmp.path(), key, opts.clone());
    let id = swarm.id();
    let added = daemon.post("/api/torrents", &json!({"torrent_base64": swarm.base64()}));
    assert_eq!(added.status, 201, "{added:?}");
    wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "completion",
        is_complete,
        |_| {},
    );

    // Loopback, no key: allowed for /metrics alone.
    let reply = http(daemon.port, "GET", "/metrics", &[], None);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{reply:?}"
    );
    assert_eq!(
        http(daemon.port, "GET", "/api/torrents", &[], None).status,
        401,
        "the flag opened more than /metrics"
    );
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let samples = prometheus_samples(&text);
    let find = |name: &str, extra: &[(&str, &str)]| -> Vec<&Value> {
        samples
            .iter()
            .filter(|s| {
                s["name"] == name
                    && s["labels"]["torrent"] == id.as_str()
                    && extra.iter().all(|(k, v)| s["labels"][*k] == *v)
            })
            .collect()
    };
    let info = find("torrent_actors_torrent_info", &[]);
    assert_eq!(info.len(), 1, "{text}");
    assert_eq!(info[0]["labels"]["name"], "film \"cut\".bin");
    let verified = find("torrent_actors_torrent_verified_bytes", &[]);
    assert_eq!(verified[0]["value"], json!(f64::from(1u32 << 20)), "{text}");
    assert_eq!(
        find("torrent_actors_torrent_state", &[])[0]["labels"]["state"],
        "seeding"
    );
    // Seeds are counted among the peers.
    let gauge = |name: &str| {
        let found = find(name, &[]);
        assert_eq!(found.len(), 1, "{name}: {text}");
        found[0]["value"].as_f64().unwrap()
    };
    let seeds = gauge("torrent_actors_torrent_seeds");
    assert!(
        seeds >= 0.0 && seeds <= gauge("torrent_actors_torrent_peers"),
        "{text}"
    );
    // The Peers' handling-time histogram: cumulative buckets ending in the count.
    let buckets = find(
        "torrent_actors_actor_handling_seconds_bucket",
        &[("actor", "Peer")],
    );
    let count = find(
        "torrent_actors_actor_handling_seconds_count",
        &[("actor", "Peer")],
    );
    assert!(buckets.len() > 2 && count.len() == 1, "{text}");
    let values: Vec<f64> = buckets
        .iter()
        .map(|b| b["value"].as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "buckets not cumulative: {values:?}"
    );
    assert_eq!(values.last().copied(), count[0]["value"].as_f64());
    assert!(
        values.last().copied().unwrap_or(0.0) > 0.0,
        "no Peer message counted"
    );
    let handled = find(
        "torrent_actors_actor_messages_handled_total",
        &[("actor", "Coordinator")],
    );
    assert!(handled[0]["value"].as_f64().unwrap() > 0.0, "{text}");

    // Without the flag, /metrics wants the key like the API.
    let closed = Daemon::start_keyed(
        &tmp.path().join("second"),
        key,
        DaemonOpts {
            args: Vec::new(),
            ..opts
        },
    );
    assert_eq!(http(closed.port, "GET", "/metrics", &[], None).status, 401);
    let auth = format!("Bearer {key}");
    let reply = http(
        closed.port,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn serve_records_a_torrents_message_trace_started_and_stopped_through_the_api() {
    let tmp = temp_dir();
    // 33 pieces of 32 KiB, the last of 7 bytes: 65 blocks of at most 16 KiB.
    let payload = Payload::single(&tmp.path().join("seed"), "traced.bin", 1024 * 1024 + 7);
    let swarm = Swarm::start(payload, 15, SeedOpts::default());
    let dl = tmp.path().join("dl");
    let daemon = Daemon::start(&dl, &tmp.path().join("state"), &DaemonOpts::default());
    let id = swarm.id();
    swarm.add_paused(&daemon);
    let trace_path = format!("/api/torrents/{id}/trace");

    // Bounds and malformed bodies are refused; nothing records then.
    for bad in [
        json!({"limit": 0}),
        json!({"limit": 1_000_001}),
        json!({"sample": 0}),
    ] {
        let reply = daemon.post(&trace_path, &bad);
        assert_eq!(reply.status, 400, "{bad}: {reply:?}");
    }
    let reply = daemon.post(&trace_path, &json!({"limits": 5}));
    assert_eq!(reply.status, 400, "an unknown field: {reply:?}");
    let reply = daemon.request("GET", &trace_path, None);
    assert_eq!(reply.status, 409, "no trace yet: {reply:?}");
    assert_eq!(
        daemon.get_json(&format!("/api/torrents/{id}"))["trace"],
        Value::Null
    );

    let started = daemon.post(&trace_path, &json!({"limit": 200000, "sample": 1}));
    assert_eq!(started.status, 200, "{started:?}");
    assert_eq!(
        started.json(),
        json!({"events": 0, "dropped": 0, "limit": 200000, "sample": 1})
    );
    let resumed = daemon.request("POST", &format!("/api/torrents/{id}/resume"), None);
    assert_eq!(resumed.status, 200, "{resumed:?}");
    wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "completion",
        is_complete,
        |_| {},
    );
    let detail = daemon.get_json(&format!("/api/torrents/{id}"));
    assert!(
        detail["trace"]["events"].as_u64().unwrap() > 0,
        "{detail:#}"
    );

    // Read while recording: a file to download, and the recording goes on.
    let so_far = daemon.request("GET", &trace_path, None);
    assert_eq!(so_far.status, 200, "{so_far:?}");
    assert_eq!(
        so_far.header("content-disposition"),
        Some(format!("attachment; filename=\"{id}.trace.json\"").as_str())
    );
    assert!(so_far.json()["traceEvents"].as_array().unwrap().len() > 10);
    assert!(!daemon.get_json(&format!("/api/torrents/{id}"))["trace"].is_null());

    // Stopped: the whole download's trace, every block's chain complete and in order.
    let stopped = daemon.request("DELETE", &trace_path, None);
    assert_eq!(stopped.status, 200, "{stopped:?}");
    let trace = stopped.json();
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let handled_by = |actor: &str| {
        let pid = events
            .iter()
            .find(|e| e["name"] == "process_name" && e["args"]["name"] == actor)
            .map(|e| e["pid"].clone());
        pid.is_some_and(|pid| events.iter().any(|e| e["ph"] == "X" && e["pid"] == pid))
    };
    for actor in ["Peer", "Coordinator", "PieceManager"] {
        assert!(
            handled_by(actor),
            "no message handled by a {actor} in the trace"
        );
    }
    let chains = crate::trace::block_chains(events);
    assert_eq!(chains.len(), 65, "every block traced");
    let hops = ["received", "stored", "hashed", "written", "verified"];
    for (block, chain) in &chains {
        let times: Vec<u64> = hops
            .iter()
            .map(|h| {
                *chain
                    .get(*h)
                    .unwrap_or_else(|| panic!("block {block:#x}: no {h}"))
            })
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{block:#x}: {chain:?}"
        );
    }
    assert_eq!(daemon.request("GET", &trace_path, None).status, 409);
    assert_eq!(
        daemon.get_json(&format!("/api/torrents/{id}"))["trace"],
        Value::Null
    );
    wait_for_log_line(&daemon, &["trace stopped", "traced.bin"]);

    // At most four torrents record at once.
    let mut ids = Vec::new();
    for n in 0..5u8 {
        let hash = format!("{:02x}", n + 1).repeat(20);
        let reply = daemon.post(
            "/api/torrents",
            &json!({"magnet": format!("magnet:?xt=urn:btih:{hash}"), "paused": true}),
        );
        assert_eq!(reply.status, 201, "{reply:?}");
        ids.push(hash);
    }
    for (n, hash) in ids.iter().enumerate() {
        let reply = daemon.post(&format!("/api/torrents/{hash}/trace"), &json!({}));
        let want = if n < 4 { 200 } else { 409 };
        assert_eq!(reply.status, want, "trace {n}: {reply:?}");
    }
}

#[test]
fn serve_draws_a_live_graph_of_actor_instances_with_message_rates() {
    let tmp = temp_dir();
    // 2 MiB from a seeder capped at 256 KiB/s: several seconds of steady traffic.
    let payload = Payload::single(&tmp.path().join("seed"), "graphed.bin", 2 * 1024 * 1024);
    let seed = SeedOpts {
        upload_limit: Some(256 * 1024),
        ..SeedOpts::default()
    };
    let swarm = Swarm::start(payload, 15, seed);
    let dl = tmp.path().join("dl");
    let daemon = Daemon::start(&dl, &tmp.path().join("state"), &DaemonOpts::default());
    let id = swarm.id();
    swarm.add_paused(&daemon);
    let graph_path = format!("/api/torrents/{id}/graph");

    for bad in ["?top=0", "?top=65", "?top=many", "?tops=3"] {
        let reply = daemon.request("GET", &format!("{graph_path}{bad}"), None);
        assert_eq!(reply.status, 400, "{bad}: {reply:?}");
    }
    // Paused: no actor runs, and the counting has only begun.
    let idle = daemon.get_json(&graph_path);
    assert_eq!(idle["window_s"], 0.0, "{idle:#}");
    assert_eq!(idle["edges"], json!([]), "{idle:#}");

    let resumed = daemon.request("POST", &format!("/api/torrents/{id}/resume"), None);
    assert_eq!(resumed.status, 200, "{resumed:?}");
    // Read as the page does, about once a second, until the download shows: the
    // Coordinator, a Peer by its number and address, and messages flowing between them.
    let deadline = Instant::now() + DOWNLOAD_LIMIT;
    let graph = loop {
        let g = daemon.get_json(&format!("{graph_path}?top=4"));
        let nodes = g["nodes"].as_array().expect("nodes");
        let has = |prefix: &str| {
            nodes.iter().any(|n| {
                n["id"].as_str().is_some_and(|id| {
                    id.strip_prefix(prefix)
                        .is_some_and(|n| n.parse::<u64>().is_ok())
                })
            })
        };
        let flowing = g["edges"].as_array().expect("edges").iter().any(|e| {
            e["rate"].as_f64().unwrap_or(0.0) > 0.0
                && e["from"].as_str().is_some_and(|f| f.starts_with("Peer#"))
        });
        if has("Coordinator#") && has("Peer#") && flowing {
            break g;
        }
        let t = daemon.get_json(&format!("/api/torrents/{id}"));
        assert!(
            Instant::now() < deadline && !is_complete(&t),
            "no live graph while downloading; last: {g:#}"
        );
        thread::sleep(Duration::from_millis(800));
    };
    eprintln!("actor graph: {graph:#}");
    assert!(graph["window_s"].as_f64().unwrap() > 0.5, "{graph:#}");
    let nodes = graph["nodes"].as_array().unwrap();
    let peer = nodes
        .iter()
        .find(|n| n["actor"] == "Peer" && !n["instance"].is_null())
        .expect("a peer instance");
    let label = peer["label"].as_str().unwrap();
    assert!(
        label.starts_with(&format!("{} 127.0.0.1:", peer["id"].as_str().unwrap())),
        "{label}"
    );
    // The graph names instances as the trace does: one node per instance, each edge
    // between drawn nodes.
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    for e in graph["edges"].as_array().unwrap() {
        assert!(ids.contains(&e["from"].as_str().unwrap()), "{e}");
        assert!(ids.contains(&e["to"].as_str().unwrap()), "{e}");
    }
    assert!(
        nodes.iter().filter(|n| n["actor"] == "Peer").count() <= 5,
        "top=4 shows at most 4 peers and the folded rest: {graph:#}"
    );
    wait_for_torrent(
        &daemon,
        &id,
        DOWNLOAD_LIMIT,
        "completion",
        is_complete,
        |_| {},
    );
}
