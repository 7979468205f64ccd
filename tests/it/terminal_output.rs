//! What a stranger's bytes may do to the user's terminal: nothing. A torrent whose name
//! carries a screen-clearing escape sequence, a bell, a C1 control and a bidirectional
//! override is downloaded by `get` (from a `.torrent` and from a magnet link) from a
//! libtorrent seeder and then seeded with `seed`; none of those characters may appear
//! on stdout or stderr, logs (`-v`) included.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    assert_same_files, make_torrent, run_until, run_with_timeout, ChildGuard, LtSeeder, Payload,
    SeedOpts,
};

/// The longest a download may run before the test counts it as hung.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A name made to attack a terminal: clear the screen (CSI 2 J), ring the bell, the
/// one-character C1 form of CSI, a right-to-left override that makes `exe.jpg` read as
/// `gpj.exe`, and DEL.
const HOSTILE_NAME: &str = "evil\u{1b}[2J\u{7}\u{9b}31m\u{202E}gpj.exe\u{7f}";

/// What must never reach the terminal, as the bytes that would carry it.
const FORBIDDEN: [(&str, &[u8]); 5] = [
    ("ESC", b"\x1b"),
    ("BEL", b"\x07"),
    ("C1 CSI (U+009B)", "\u{9b}".as_bytes()),
    ("RIGHT-TO-LEFT OVERRIDE (U+202E)", "\u{202E}".as_bytes()),
    ("DEL", b"\x7f"),
];

/// The binary under test, with DHT bootstrapping off so nothing leaves the machine.
fn ours() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "");
    cmd
}

/// Panics naming the first forbidden character found in `output`.
fn assert_clean(what: &str, output: &[u8]) {
    for (name, bytes) in FORBIDDEN {
        assert!(
            !output.windows(bytes.len()).any(|w| w == bytes),
            "{what} carries {name}:\n{}",
            String::from_utf8_lossy(output).escape_debug()
        );
    }
}

/// The payload's file copied under `dir` by the path libtorrent gives it: libtorrent
/// rewrites the control characters of file names, so it would not find the file under
/// its true name. Returns `dir`.
fn libtorrent_copy(torrent: &Path, payload: &Payload, dir: &Path) -> PathBuf {
    let out = run_with_timeout(
        {
            let mut cmd = Command::new("/usr/bin/python3");
            cmd.arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/lt_torrent.py"
            ))
            .arg("describe")
            .arg(torrent);
            cmd
        },
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "lt_torrent.py describe failed");
    let view: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("JSON from libtorrent");
    let path = view["files"][0]["path"]
        .as_str()
        .expect("libtorrent's path of the file");
    let target = dir.join(path);
    fs::create_dir_all(target.parent().expect("a parent folder")).expect("the copy's folder");
    fs::copy(payload.dir.join(&payload.files[0].0), &target).expect("copying the payload");
    dir.to_path_buf()
}

/// Runs `get` to completion and checks both of its outputs.
fn get_cleanly(what: &str, source: &str, out: &Path, seeder: &LtSeeder) -> String {
    let mut cmd = ours();
    cmd.args([
        "get",
        "-v",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--no-dht",
    ])
    .args(["--peer", &seeder.addr().to_string(), "--peer-timeout", "60"])
    .arg("-o")
    .arg(out)
    .arg(source);
    let output = run_until(cmd, RUN_LIMIT).unwrap_or_else(|o| {
        panic!(
            "{what} overran {RUN_LIMIT:?}:\n{}",
            String::from_utf8_lossy(&o.stderr).escape_debug()
        )
    });
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout).escape_debug(),
        String::from_utf8_lossy(&output.stderr).escape_debug()
    );
    assert_clean(&format!("{what}'s stdout"), &output.stdout);
    assert_clean(&format!("{what}'s stderr"), &output.stderr);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_hostile_torrent_name_reaches_no_terminal_from_get_or_seed() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let payload = Payload::single(&tmp.path().join("data"), HOSTILE_NAME, 200 * 1024 + 3);
    let torrent = tmp.path().join("hostile.torrent");
    let hash = make_torrent(&payload.root(), &torrent, 15, &[]);
    let seeder = LtSeeder::start(
        &torrent,
        &libtorrent_copy(&torrent, &payload, &tmp.path().join("lt-data")),
        SeedOpts::direct(),
    );

    // From the .torrent: the name is shown escaped, so the user still sees it.
    let out = tmp.path().join("out");
    let stdout = get_cleanly(
        "get FILE.torrent",
        torrent.to_str().expect("a UTF-8 temp path"),
        &out,
        &seeder,
    );
    assert!(
        stdout.contains("downloaded evil\\u{1b}[2J\\u{7}\\u{9b}31m\\u{202e}gpj.exe\\u{7f}: "),
        "the name is not shown escaped:\n{}",
        stdout.escape_debug()
    );
    assert_same_files(&payload.dir, &out, &payload.files);

    // From a magnet link naming it too: the `dn` shown before the metadata, then the
    // metadata's name and the path it is saved under.
    let dn =
        percent_encoding::utf8_percent_encode(HOSTILE_NAME, percent_encoding::NON_ALPHANUMERIC);
    let magnet = format!("magnet:?xt=urn:btih:{}&dn={dn}", hash.to_hex());
    let out_magnet = tmp.path().join("out-magnet");
    let stdout = get_cleanly("get MAGNET", &magnet, &out_magnet, &seeder);
    assert!(
        stdout.contains("metadata received: evil\\u{1b}"),
        "no metadata line:\n{}",
        stdout.escape_debug()
    );
    assert_same_files(&payload.dir, &out_magnet, &payload.files);
    drop(seeder);

    // Seeding what was downloaded: the check, the `seeding NAME on ADDR` line, the logs
    // and the report when stopped.
    let logs = tmp.path().join("seed-logs");
    fs::create_dir_all(&logs).expect("a folder for seed's output");
    let mut cmd = ours();
    cmd.args([
        "seed",
        "-v",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--no-dht",
    ])
    .arg("--dir")
    .arg(&out)
    .arg(&torrent)
    .stdin(Stdio::null())
    .stdout(File::create(logs.join("stdout")).expect("seed's stdout file"))
    .stderr(File::create(logs.join("stderr")).expect("seed's stderr file"));
    let mut seed = ChildGuard::spawn(cmd, "torrent-actors seed");
    let read = |name: &str| fs::read(logs.join(name)).unwrap_or_default();
    let deadline = Instant::now() + RUN_LIMIT;
    while !String::from_utf8_lossy(&read("stdout")).contains("seeding ") {
        assert!(
            seed.try_status().is_none() && Instant::now() < deadline,
            "seed did not start seeding:\n{}\n{}",
            String::from_utf8_lossy(&read("stdout")).escape_debug(),
            String::from_utf8_lossy(&read("stderr")).escape_debug()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM to our own child, which has not been reaped (it was running just above),
    // so the PID is still its own.
    let sent = Command::new("kill")
        .args(["-TERM", &seed.pid().to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -TERM failed");
    let status = seed.wait_timeout(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "seed did not stop cleanly ({status:?}):\n{}",
        String::from_utf8_lossy(&read("stderr")).escape_debug()
    );
    let stdout = read("stdout");
    assert_clean("seed's stdout", &stdout);
    assert_clean("seed's stderr", &read("stderr"));
    assert!(
        String::from_utf8_lossy(&stdout).contains("seeding evil\\u{1b}[2J"),
        "the seeding line does not show the name escaped:\n{}",
        String::from_utf8_lossy(&stdout).escape_debug()
    );
}
