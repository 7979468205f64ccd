//! `torrent-actors info` against torrents made by tools nobody here wrote: mktorrent and
//! libtorrent (the reference engine). For each, our info-hash, sizes, pieces and files
//! must be what libtorrent itself reports for the same file.
//!
//! Needs `mktorrent` and `/usr/bin/python3` with `python3-libtorrent`; `.ci/run`
//! installs both. A missing tool fails the test with a message saying so, rather than
//! skipping it silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use torrent_actors::metainfo::Metainfo;

const LT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_torrent.py");

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_torrent-actors"))
}

fn run_tool(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what} could not start ({e}); run .ci/run's apt-get line to install it")
    });
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// What libtorrent says about a torrent file.
fn libtorrent_view(torrent: &Path) -> Json {
    let out = run_tool(
        Command::new("/usr/bin/python3")
            .args([LT_SCRIPT, "describe"])
            .arg(torrent),
        "python3-libtorrent",
    );
    serde_json::from_str(&out).expect("lt_torrent.py prints JSON")
}

fn libtorrent_create(kind: &str, source: &Path, out: &Path, piece_length: u32) -> Json {
    let out = run_tool(
        Command::new("/usr/bin/python3")
            .args([LT_SCRIPT, "create", kind])
            .arg(source)
            .arg(out)
            .arg(piece_length.to_string()),
        "python3-libtorrent",
    );
    serde_json::from_str(&out).expect("lt_torrent.py prints JSON")
}

fn mktorrent(source: &Path, out: &Path, piece_exp: u32, extra: &[&str]) {
    run_tool(
        Command::new("mktorrent")
            .args([
                "-a",
                "http://127.0.0.1:6969/announce",
                "-a",
                "udp://127.0.0.1:6969/announce",
            ])
            .arg("-l")
            .arg(piece_exp.to_string())
            .args(extra)
            .arg("-o")
            .arg(out)
            .arg(source),
        "mktorrent",
    );
}

/// Deterministic bytes, different for every file.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// A multi-file payload with the awkward cases: empty files, a 1-byte file, files ending
/// exactly on and one byte past a piece boundary, nested folders, a space in a name.
fn multi_payload(root: &Path, piece: usize) -> PathBuf {
    let dir = root.join("album");
    let files: [(&str, usize); 7] = [
        ("a.bin", 3 * piece + 7),
        ("empty-1", 0),
        ("one byte", 1),
        ("nested/exact", piece),
        ("nested/deeper/plus-one", piece + 1),
        ("nested/deeper/empty-2", 0),
        ("z.bin", piece - 1),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, payload(*len, i as u8)).unwrap();
    }
    dir
}

/// Our parse of `torrent` agrees with libtorrent's in every field both report, and the
/// `info` command prints the same info-hash and every file.
fn assert_matches_libtorrent(torrent: &Path) {
    let lt = libtorrent_view(torrent);
    let ours = Metainfo::from_bytes(&std::fs::read(torrent).unwrap()).expect("we accept it");
    let layout = &ours.info.layout;

    assert_eq!(
        lt["info_hash_v1"].as_str(),
        Some(ours.info_hash.to_hex().as_str())
    );
    assert_eq!(lt["name"].as_str(), Some(ours.info.name.as_str()));
    assert_eq!(lt["total_size"].as_u64(), Some(layout.total_length()));
    assert_eq!(
        lt["piece_length"].as_u64(),
        Some(u64::from(layout.piece_length()))
    );
    assert_eq!(
        lt["num_pieces"].as_u64(),
        Some(u64::from(layout.num_pieces()))
    );
    assert_eq!(lt["private"].as_bool(), Some(ours.info.private));
    let lt_files: Vec<(String, u64, bool)> = lt["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
                f["pad"].as_bool().unwrap(),
            )
        })
        .collect();
    let our_files: Vec<(String, u64, bool)> = layout
        .files()
        .iter()
        .map(|f| (f.path.display(), f.length, f.padding))
        .collect();
    assert_eq!(our_files, lt_files);
    let lt_trackers: Vec<&str> = lt["trackers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert_eq!(ours.all_trackers().collect::<Vec<_>>(), lt_trackers);

    let out = bin().arg("info").arg(torrent).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("info-hash:   {}\n", ours.info_hash)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} bytes", layout.total_length())),
        "{stdout}"
    );
    for (path, _, _) in &our_files {
        assert!(
            stdout.contains(path.as_str()),
            "{path} missing from:\n{stdout}"
        );
    }
}

#[test]
fn info_agrees_with_libtorrent_on_a_mktorrent_single_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("single file.bin");
    std::fs::write(&file, payload(1_000_003, 9)).unwrap();
    let torrent = tmp.path().join("single.torrent");
    mktorrent(&file, &torrent, 16, &["-c", "made by mktorrent"]);
    assert_matches_libtorrent(&torrent);
    let ours = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    assert_eq!(ours.comment.as_deref(), Some("made by mktorrent"));
    assert!(ours.created_by.unwrap().starts_with("mktorrent"));
}

#[test]
fn info_agrees_with_libtorrent_on_a_mktorrent_multi_file_private_torrent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = multi_payload(tmp.path(), 32 * 1024);
    let torrent = tmp.path().join("multi.torrent");
    mktorrent(&dir, &torrent, 15, &["-p"]);
    assert_matches_libtorrent(&torrent);
    let ours = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    assert!(ours.info.private);
}

#[test]
fn info_agrees_with_libtorrent_on_its_own_v1_torrents() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = multi_payload(tmp.path(), 32 * 1024);
    let torrent = tmp.path().join("lt-v1.torrent");
    libtorrent_create("v1", &dir, &torrent, 32 * 1024);
    assert_matches_libtorrent(&torrent);

    let single = tmp.path().join("lone.bin");
    std::fs::write(&single, payload(100_000, 3)).unwrap();
    let torrent = tmp.path().join("lt-single.torrent");
    libtorrent_create("v1", &single, &torrent, 16 * 1024);
    assert_matches_libtorrent(&torrent);
}

#[test]
fn hybrid_torrents_from_libtorrent_are_read_as_v1_with_padding_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = multi_payload(tmp.path(), 16 * 1024);
    let torrent = tmp.path().join("hybrid.torrent");
    libtorrent_create("hybrid", &dir, &torrent, 16 * 1024);
    assert_matches_libtorrent(&torrent);
    let ours = Metainfo::from_bytes(&std::fs::read(&torrent).unwrap()).unwrap();
    assert!(ours.info.hybrid);
    assert!(ours.info.layout.files().iter().any(|f| f.padding));
}

#[test]
fn v2_only_torrent_from_libtorrent_is_read_and_shows_its_v2_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = multi_payload(tmp.path(), 16 * 1024);
    let torrent = tmp.path().join("v2.torrent");
    libtorrent_create("v2", &dir, &torrent, 16 * 1024);
    let out = bin().arg("info").arg(&torrent).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("v2 hash"), "{stdout}");
}

#[test]
fn missing_torrent_file_exits_3_with_one_line() {
    let out = bin()
        .args(["info", "/nonexistent/x.torrent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1);
    assert!(
        stderr.starts_with("error: cannot read /nonexistent/x.torrent"),
        "{stderr}"
    );
}
