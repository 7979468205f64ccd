//! The path jail under `serve`: a torrent added through the API whose names try to climb
//! out of the download root is laid out inside it, and deleting it with its data never
//! follows a link planted in its folder.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::hostile_files::{multi_file_torrent, plant_link};
use crate::support::{read_metainfo, Daemon, DaemonOpts};

/// How long the daemon may take to open a torrent's storage, or to delete it.
const LIMIT: Duration = Duration::from_secs(30);

/// Waits until `done` holds, failing with `what` and the daemon's log after [`LIMIT`].
fn wait(daemon: &Daemon, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {LIMIT:?}; daemon log:\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Adds the `.torrent` `bytes` through the API, paused or not, and returns its id.
fn add(daemon: &Daemon, bytes: &[u8], paused: bool) -> String {
    let added = daemon.post(
        "/api/torrents",
        &json!({"torrent_base64": data_encoding::BASE64.encode(bytes), "paused": paused}),
    );
    assert_eq!(added.status, 201, "{added:?}");
    added.json()["id"].as_str().expect("an id").to_string()
}

#[test]
fn serve_keeps_a_climbing_torrent_inside_its_root_and_deletes_through_no_link() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let root = tmp.path().join("dl");
    // `dl/t/X/X` would be `tmp` if X shortened to `..`, as it once did.
    let victim = tmp.path().join("victim.txt");
    fs::write(&victim, b"precious").expect("the victim");
    let climb = format!("...{}", "a".repeat(300));
    let files: Vec<(Vec<&str>, usize)> = vec![
        (vec![&climb, &climb, "victim.txt"], 0),
        (vec![&climb, "inside.bin"], 3_000),
    ];
    let torrent = tmp.path().join("t.torrent");
    fs::write(&torrent, multi_file_torrent("t", &files)).expect("the torrent");
    let layout = read_metainfo(&torrent).info.layout;
    let jailed_victim = layout.files()[0].path.under(&root);
    let inside = layout.files()[1].path.under(&root);
    assert!(
        jailed_victim.starts_with(root.join("t")),
        "{jailed_victim:?}"
    );

    let mut daemon = Daemon::start(&root, &tmp.path().join("state"), &DaemonOpts::default());
    let id = add(&daemon, &fs::read(&torrent).expect("the torrent"), false);
    // No peer has the data; the files are made when the torrent's storage opens.
    wait(&daemon, "the jailed files", || {
        jailed_victim.exists() && inside.exists()
    });
    assert_eq!(fs::read(&victim).expect("the victim"), b"precious");

    // Links planted where the torrent's folder and file were: deleting with data must
    // remove the links' own names at most, never what they point at.
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).expect("the outside folder");
    fs::write(outside.join("victim.txt"), b"outside").expect("a file outside");
    fs::write(outside.join("secret"), b"secret").expect("a file outside");
    plant_link(jailed_victim.parent().expect("a folder"), &outside);
    plant_link(&inside, &outside.join("secret"));
    let removed = daemon.delete(&format!("/api/torrents/{id}?delete_data=true"));
    assert_eq!(removed.status, 204, "{removed:?}");
    wait(&daemon, "deleting the planted file link", || {
        fs::symlink_metadata(&inside).is_err()
    });
    // The deletion runs off the Session's thread: give it time to do anything it would.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fs::read(outside.join("victim.txt")).expect("outside"),
        b"outside"
    );
    assert_eq!(
        fs::read(outside.join("secret")).expect("outside"),
        b"secret"
    );
    assert_eq!(fs::read(&victim).expect("the victim"), b"precious");
    assert!(daemon.stop().success());
}

#[test]
fn serve_takes_a_250_byte_name_and_names_its_own_files_by_the_info_hash() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let root = tmp.path().join("dl");
    let name = "n".repeat(250);
    let files: Vec<(Vec<&str>, usize)> = vec![(vec!["a.bin"], 20_000)];
    let torrent = tmp.path().join("long.torrent");
    fs::write(&torrent, multi_file_torrent(&name, &files)).expect("the torrent");
    let hex = read_metainfo(&torrent).info_hash.to_hex();

    let mut daemon = Daemon::start(&root, &tmp.path().join("state"), &DaemonOpts::default());
    let id = add(&daemon, &fs::read(&torrent).expect("the torrent"), false);
    let data = root.join(&name).join("a.bin");
    wait(&daemon, "the data file", || data.exists());
    // A pause stops the torrent's tree, which saves its resume file on the way out.
    let paused = daemon.request("POST", &format!("/api/torrents/{id}/pause"), None);
    assert_eq!(paused.status, 200, "{paused:?}");
    let resume = root.join(format!(".{hex}.resume.json"));
    wait(&daemon, "the resume file named by the info-hash", || {
        resume.exists()
    });
    let detail = daemon.get_json(&format!("/api/torrents/{id}"));
    assert!(detail["error"].is_null(), "{detail:#}");
    assert!(daemon.stop().success());
}

#[test]
fn serve_adds_a_torrent_of_300_000_duplicate_names() {
    const COPIES: usize = 300_000;
    let tmp = tempfile::tempdir().expect("temp folder");
    let list: Vec<(Vec<&str>, usize)> = (0..COPIES).map(|_| (vec!["a.txt"], 1)).collect();
    let bytes = multi_file_torrent("dups", &list);
    let mut daemon = Daemon::start(
        &tmp.path().join("dl"),
        &tmp.path().join("state"),
        &DaemonOpts::default(),
    );
    // Paused: the point is the parsing and renaming, not making 300,000 files.
    let id = add(&daemon, &bytes, true);
    let files = daemon.get_json(&format!("/api/torrents/{id}/files"));
    let files = files.as_array().expect("a file list");
    assert_eq!(files.len(), COPIES);
    assert_eq!(
        files[COPIES - 1]["path"],
        format!("dups/a.{}.txt", COPIES - 1)
    );
    assert!(daemon.stop().success());
}

/// A torrent's folder under the root, swapped for a link while the daemon was down, is
/// not followed when the torrent starts again: the torrent reports the folder unusable.
#[test]
fn a_torrents_folder_swapped_for_a_link_between_runs_is_not_followed() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let root = tmp.path().join("dl");
    let state = tmp.path().join("state");
    let files: Vec<(Vec<&str>, usize)> = vec![(vec!["a.bin"], 20_000)];
    let bytes = multi_file_torrent("t", &files);
    let mut daemon = Daemon::start(&root, &state, &DaemonOpts::default());
    let added = daemon.post(
        "/api/torrents",
        &json!({"torrent_base64": data_encoding::BASE64.encode(&bytes), "dir": "films"}),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let id = added.json()["id"].as_str().expect("an id").to_string();
    let data = root.join("films").join("t").join("a.bin");
    wait(&daemon, "the data file", || data.exists());
    assert!(daemon.stop().success());

    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).expect("the outside folder");
    plant_link(&root.join("films"), &outside);
    let mut daemon = Daemon::start(&root, &state, &DaemonOpts::default());
    wait(&daemon, "the folder refused", || {
        daemon.get_json(&format!("/api/torrents/{id}"))["error"]
            .as_str()
            .is_some_and(|e| e.contains("symbolic link"))
    });
    assert_eq!(
        fs::read_dir(&outside).expect("the outside folder").count(),
        0,
        "files were made through the link"
    );
    assert!(daemon.stop().success());
}
