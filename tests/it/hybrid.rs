//! Hybrid torrents (BEP 52: v1 `pieces` and a v2 `file tree` in one `info`): one whose two
//! views of the data disagree is refused with its reason on one line, exit 4, before
//! anything is written.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use torrent_actors::bencode::{self, BValue};

use crate::support::{our_create_ok, run_within, write_pattern};

const KIB: usize = 1024;

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A hybrid made by our `create` from a small folder, with 16 KiB pieces.
fn made_hybrid(parent: &Path) -> std::path::PathBuf {
    let root = parent.join("album");
    write_pattern(&root.join("a.bin"), 40 * KIB + 3, 1);
    write_pattern(&root.join("b.bin"), 3 * 16 * KIB + 7, 2);
    let torrent = parent.join("album.torrent");
    our_create_ok(&[
        "--hybrid",
        "--piece-size",
        "16KiB",
        s(&root),
        "-o",
        s(&torrent),
    ]);
    torrent
}

#[test]
fn get_and_info_refuse_a_hybrid_whose_v1_and_v2_parts_disagree() {
    let tmp = tempfile::tempdir().unwrap();
    let good = made_hybrid(tmp.path());
    // The v2 tree says b.bin is one byte shorter than the v1 list does.
    let BValue::Dict(mut top) = bencode::decode(&fs::read(&good).unwrap())
        .unwrap()
        .to_owned_value()
    else {
        panic!("a torrent is a dictionary")
    };
    let Some(BValue::Dict(info)) = top.get_mut(&b"info"[..]) else {
        panic!("no info")
    };
    let Some(BValue::Dict(tree)) = info.get_mut(&b"file tree"[..]) else {
        panic!("no file tree")
    };
    let Some(BValue::Dict(b)) = tree.get_mut(&b"b.bin"[..]) else {
        panic!("no b.bin")
    };
    let Some(BValue::Dict(leaf)) = b.get_mut(&b""[..]) else {
        panic!("b.bin is not a file")
    };
    leaf.insert(b"length".to_vec(), BValue::Int(3 * 16 * 1024 + 6));
    let bad = tmp.path().join("bad.torrent");
    fs::write(&bad, BValue::Dict(top).encode()).unwrap();

    let want = format!(
        "error: invalid torrent {}: the v1 and v2 parts of this hybrid disagree: \
         b.bin (49159 bytes) against b.bin (49158 bytes)\n",
        bad.display()
    );
    let out_dir = tmp.path().join("out");
    let mut get = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    get.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "--no-dht", "-o"])
        .arg(&out_dir)
        .arg(&bad);
    let out = run_within(get, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stderr), want);
    assert!(!out_dir.exists(), "nothing written");

    let mut info = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    info.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .arg("info")
        .arg(&bad);
    let out = run_within(info, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stderr), want);

    // The torrent it was made from is fine.
    let mut info = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    info.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .arg("info")
        .arg(&good);
    assert!(run_within(info, Duration::from_secs(30)).status.success());
}
