//! The command line as a user meets it: mistakes that fail fast with their own exit code
//! and one line saying what to do, help with examples, and scriptable output. Every run
//! is bounded in time and talks only to 127.0.0.1; no test measures speed.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{free_port, make_torrent, run_with_timeout, ChildGuard, Payload};

/// The longest a run that should end by itself may take before the test calls it hung.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(20);

/// The binary under test, with DHT bootstrapping off so nothing leaves the machine.
fn ours() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "");
    cmd
}

/// Runs `args` to its end, within [`RUN_LIMIT`].
fn run(args: &[&str]) -> Output {
    let mut cmd = ours();
    cmd.args(args);
    run_with_timeout(cmd, RUN_LIMIT)
}

/// `command` on loopback, on a free port, without the DHT, then `rest`: how most runs
/// here start.
fn on_loopback<'a>(command: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![command, "--bind", "127.0.0.1", "--port", "0", "--no-dht"];
    args.extend_from_slice(rest);
    args
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the exit code and that stderr holds `needle`, showing both outputs otherwise.
fn assert_fails(out: &Output, code: i32, needles: &[&str]) {
    let stderr = stderr_of(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{stderr}",
        stdout_of(out)
    );
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in:\n{stderr}");
    }
}

/// A single-file torrent with no tracker, its payload, and a temporary folder holding both.
struct Fixture {
    tmp: tempfile::TempDir,
    payload: Payload,
    torrent: PathBuf,
}

impl Fixture {
    /// `movie.bin` of 300,000 bytes in 32 KiB pieces (10 pieces).
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("temp folder");
        let payload = Payload::single(&tmp.path().join("data"), "movie.bin", 300_000);
        let torrent = tmp.path().join("movie.torrent");
        make_torrent(&payload.root(), &torrent, 15, &[]);
        Fixture {
            tmp,
            payload,
            torrent,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn torrent(&self) -> &str {
        self.torrent.to_str().expect("a UTF-8 path")
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// One of our processes in the background, its output going to files read while it runs.
struct Background {
    // Declared first so the process is gone before its folder is removed.
    child: ChildGuard,
    logs: tempfile::TempDir,
}

impl Background {
    fn start(args: &[&str]) -> Background {
        Background::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Background {
        let logs = tempfile::tempdir().expect("a folder for the output");
        let mut cmd = ours();
        cmd.envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(logs.path().join("stdout")).expect("stdout file"))
            .stderr(File::create(logs.path().join("stderr")).expect("stderr file"));
        Background {
            child: ChildGuard::spawn(cmd, "torrent-actors"),
            logs,
        }
    }

    fn output(&self) -> String {
        let read = |n: &str| fs::read_to_string(self.logs.path().join(n)).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{}", read("stdout"), read("stderr"))
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// Waits until `ready` holds, panicking with the output if the process ends first or
    /// [`RUN_LIMIT`] passes.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + RUN_LIMIT;
        while !ready(self) {
            if let Some(status) = self.child.try_status() {
                panic!("ended ({status}) before {what}:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {RUN_LIMIT:?}:\n{}",
                self.output()
            );
            thread::sleep(POLL);
        }
    }
}

/// Whether another process holds an exclusive `flock` on `path`.
fn locked_by_another(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let held = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared);
    held == Err(rustix::io::Errno::WOULDBLOCK)
}

// ---------------------------------------------------------------------------------------
// Mistakes fail fast
// ---------------------------------------------------------------------------------------

#[test]
fn get_on_a_port_in_use_exits_10_naming_the_port() {
    let f = Fixture::new();
    let taken = TcpListener::bind(("127.0.0.1", free_port())).expect("a port of our own");
    let port = taken.local_addr().expect("its address").port().to_string();
    let out_dir = f.path("out");
    let out = run(&[
        "get",
        "--bind",
        "127.0.0.1",
        "--port",
        &port,
        "--no-dht",
        "-o",
        s(&out_dir),
        f.torrent(),
    ]);
    assert_fails(
        &out,
        10,
        &[
            &format!("cannot listen for peers on 127.0.0.1:{port}"),
            "choose another --port",
        ],
    );
    assert_eq!(stderr_of(&out).lines().count(), 1, "{}", stderr_of(&out));
    assert!(!out_dir.exists(), "get created its folder before failing");
}

#[test]
fn seed_on_a_port_in_use_exits_10_and_never_says_it_is_seeding() {
    let f = Fixture::new();
    let taken = TcpListener::bind(("127.0.0.1", free_port())).expect("a port of our own");
    let port = taken.local_addr().expect("its address").port().to_string();
    let out = run(&[
        "seed",
        "--bind",
        "127.0.0.1",
        "--port",
        &port,
        "--no-dht",
        "--dir",
        s(&f.payload.dir),
        f.torrent(),
    ]);
    assert_fails(
        &out,
        10,
        &[&format!("cannot listen for peers on 127.0.0.1:{port}")],
    );
    assert!(!stdout_of(&out).contains("seeding"), "{}", stdout_of(&out));
}

#[test]
fn seed_holds_its_port_from_the_check_on_so_no_other_program_can_take_it() {
    let f = Fixture::new();
    let port = free_port().to_string();
    // The fault point pauses for 3 s after the port check, before any actor starts:
    // the window in which another program could once take the port.
    let mut seed = Background::start_with_env(
        &[
            "seed",
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--no-dht",
            "--peer-timeout",
            "60",
            "--dir",
            s(&f.payload.dir),
            f.torrent(),
        ],
        &[(torrent_actors::fault::FAULT_ENV, "pause-after-port-check")],
    );
    seed.wait_until("the pause after the port check", |b| {
        b.stderr().contains("fault: pause-after-port-check")
    });
    let other = TcpListener::bind(format!("127.0.0.1:{port}"));
    assert!(
        other.is_err(),
        "another program took port {port} between the check and the start"
    );
    seed.wait_until("seeding", |b| {
        fs::read_to_string(b.logs.path().join("stdout"))
            .unwrap_or_default()
            .contains(&format!("on 127.0.0.1:{port}"))
    });
    assert!(seed.child.try_status().is_none(), "{}", seed.output());
}

#[test]
fn get_on_an_address_this_machine_lacks_exits_10_pointing_at_bind() {
    let f = Fixture::new();
    // TEST-NET-1 (RFC 5737): never an address of this machine, and binding it sends
    // nothing anywhere.
    let out = run(&[
        "get",
        "--bind",
        "192.0.2.1",
        "--port",
        "0",
        "--no-dht",
        "-o",
        s(&f.path("out")),
        f.torrent(),
    ]);
    assert_fails(
        &out,
        10,
        &[
            "cannot listen for peers on 192.0.2.1:0",
            "--bind takes an address",
        ],
    );
}

#[test]
fn seed_of_a_folder_with_none_of_the_data_exits_13_and_creates_nothing() {
    let f = Fixture::new();
    let missing = f.path("nonexistent");
    let out = run(&on_loopback("seed", &["--dir", s(&missing), f.torrent()]));
    assert_fails(
        &out,
        13,
        &["nothing to seed: no movie.bin under", "--fetch-missing"],
    );
    assert!(!missing.exists(), "seed created the folder it refused");
}

#[test]
fn seed_of_a_file_with_no_good_piece_exits_13_after_the_check() {
    let f = Fixture::new();
    let wrong = f.path("wrong");
    fs::create_dir_all(&wrong).expect("a folder");
    fs::write(wrong.join("movie.bin"), vec![0u8; 300_000]).expect("a file of zeros");
    let out = run(&on_loopback("seed", &["--dir", s(&wrong), f.torrent()]));
    assert_fails(
        &out,
        13,
        &[
            "nothing to seed: no piece of movie.bin under",
            "--fetch-missing",
        ],
    );
    assert!(!stdout_of(&out).contains("seeding"), "{}", stdout_of(&out));
}

#[test]
fn seed_of_part_of_the_data_warns_how_much_is_good_and_goes_on() {
    let f = Fixture::new();
    let part = f.path("part");
    fs::create_dir_all(&part).expect("a folder");
    let data = fs::read(f.payload.dir.join("movie.bin")).expect("the payload");
    // Three whole 32 KiB pieces and a little of the fourth.
    fs::write(part.join("movie.bin"), &data[..100_000]).expect("part of the file");
    let mut seed = Background::start(&on_loopback(
        "seed",
        &["--peer-timeout", "60", "--dir", s(&part), f.torrent()],
    ));
    seed.wait_until("the warning", |b| b.stderr().contains("warning: only"));
    let stderr = seed.stderr();
    assert!(
        stderr.contains("warning: only 96.00 KiB of movie.bin's 292.97 KiB is here and good"),
        "{stderr}"
    );
    assert!(seed.child.try_status().is_none(), "{}", seed.output());
}

#[test]
fn seed_with_fetch_missing_takes_an_empty_folder_as_a_download() {
    let f = Fixture::new();
    let empty = f.path("empty");
    // No peer: past the refusal, it gives up for want of peers (exit 7), not data.
    let out = run(&on_loopback(
        "seed",
        &[
            "--fetch-missing",
            "--peer-timeout",
            "1",
            "--dir",
            s(&empty),
            f.torrent(),
        ],
    ));
    assert_fails(&out, 7, &["no peer reachable"]);
}

#[test]
fn a_second_get_on_the_same_output_exits_12_and_a_killed_one_leaves_no_lock() {
    let f = Fixture::new();
    let out_dir = f.path("out");
    let dead_peer = free_port().to_string();
    let peer = format!("127.0.0.1:{dead_peer}");
    // The first one waits for a peer that never answers.
    let mut first = Background::start(&on_loopback(
        "get",
        &[
            "--peer",
            &peer,
            "--peer-timeout",
            "60",
            "-o",
            s(&out_dir),
            f.torrent(),
        ],
    ));
    let lock = out_dir.join(".movie.bin.lock");
    first.wait_until("the lock", |_| locked_by_another(&lock));

    let second = run(&on_loopback(
        "get",
        &["--peer-timeout", "1", "-o", s(&out_dir), f.torrent()],
    ));
    assert_fails(
        &second,
        12,
        &[
            "another torrent-actors process is already working on movie.bin",
            ".movie.bin.lock",
        ],
    );
    // `seed` on the same folder is the same torrent's files: refused too.
    let seed = run(&on_loopback(
        "seed",
        &["--fetch-missing", "--dir", s(&out_dir), f.torrent()],
    ));
    assert_fails(&seed, 12, &["already working on movie.bin"]);
    assert!(first.child.try_status().is_none(), "{}", first.output());

    // A crash (SIGKILL) leaves the file but not the lock.
    first.child.kill();
    assert!(lock.exists());
    let third = run(&on_loopback(
        "get",
        &["--peer-timeout", "1", "-o", s(&out_dir), f.torrent()],
    ));
    assert_fails(&third, 7, &["no peer reachable"]);
    // A run that ends normally takes its lock files with it.
    assert!(!lock.exists(), "the lock file outlived its run");
    let left: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "lock files left: {left:?}");
}

#[test]
fn files_errors_speak_of_the_files_option_not_of_magnet_links() {
    let f = Fixture::new();
    for (value, needle) in [
        (
            "3-1",
            "the range 3-1 ends before it starts; write it as 1-3",
        ),
        ("a", "\"a\" is not a file index or range"),
        ("1,,2", "\"\" is not a file index or range"),
        ("99999999999", "file index 99999999999 is too large"),
    ] {
        let out = run(&[
            "get",
            "--files",
            value,
            "-o",
            s(&f.path("out")),
            f.torrent(),
        ]);
        assert_fails(&out, 2, &["--files", needle]);
        let stderr = stderr_of(&out);
        assert!(!stderr.contains(" so"), "{value}: {stderr}");
    }
    // Past the last file: the torrent has one, index 0.
    let out = run(&[
        "get",
        "--files",
        "0,4",
        "-o",
        s(&f.path("out")),
        f.torrent(),
    ]);
    assert_fails(&out, 2, &["--files"]);
}

// ---------------------------------------------------------------------------------------
// Help and conventions
// ---------------------------------------------------------------------------------------

/// `--help` of `command` (none for the top level) on a terminal `columns` wide: clap
/// takes the width from `COLUMNS` when stdout is not a terminal.
fn help(command: Option<&str>, columns: u16) -> String {
    let mut cmd = ours();
    cmd.args(command)
        .arg("--help")
        .env("COLUMNS", columns.to_string());
    let out = run_with_timeout(cmd, RUN_LIMIT);
    assert!(out.status.success(), "{}", stderr_of(&out));
    stdout_of(&out)
}

#[test]
fn every_help_has_examples_and_wraps_to_the_terminal_width() {
    for command in [
        None,
        Some("info"),
        Some("get"),
        Some("seed"),
        Some("serve"),
        Some("swarm"),
    ] {
        for columns in [60, 80] {
            let text = help(command, columns);
            let examples = text
                .split_once("\nExamples:\n")
                .unwrap_or_else(|| panic!("{command:?}: no examples:\n{text}"))
                .1;
            let shown = format!("  torrent-actors {}", command.unwrap_or(""));
            assert!(
                examples.lines().filter(|l| l.starts_with(&shown)).count() >= 1,
                "{command:?}: no example of the command:\n{examples}"
            );
            // The usage line is the one clap never wraps.
            for line in text.lines().filter(|l| !l.starts_with("Usage:")) {
                assert!(
                    line.chars().count() <= usize::from(columns),
                    "{command:?} at {columns} columns: {line:?}"
                );
            }
        }
    }
    // Each command names its argument for what it takes: `seed` has no use for a magnet.
    let usage = |command| {
        let text = help(Some(command), 100);
        let line = text
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_default();
        line.to_string()
    };
    assert!(
        usage("get").ends_with(" <TORRENT_OR_MAGNET>"),
        "{}",
        usage("get")
    );
    assert!(
        usage("info").ends_with(" <TORRENT_OR_MAGNET>"),
        "{}",
        usage("info")
    );
    assert!(usage("seed").ends_with(" <TORRENT>"), "{}", usage("seed"));
    // Wide enough, an example is one line.
    let text = help(Some("get"), 100);
    assert!(
        text.contains("\n  torrent-actors get 'magnet:?xt=urn:btih:HASH&dn=NAME&tr=URL'\n"),
        "{text}"
    );
    assert!(
        text.contains("torrent-actors get --files 0,2-4 album.torrent"),
        "{text}"
    );
    assert!(help(Some("seed"), 100).contains("seed --fetch-missing"));
}

#[test]
fn the_download_folder_is_dir_everywhere_with_output_as_an_alias() {
    for command in ["get", "seed", "serve"] {
        // Words only: where clap wraps depends on the longest option of the command.
        let text = help(Some(command), 100);
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains("-d, --dir <DIR>"), "{command}:\n{text}");
        assert!(
            words.contains("[aliases: -o, --output]"),
            "{command}:\n{text}"
        );
    }
    let f = Fixture::new();
    // `seed` names the folder it refused, whichever spelling gave it.
    for flag in ["-d", "--dir", "-o", "--output"] {
        let missing = f.path(&format!("missing{flag}"));
        let out = run(&["seed", "--port", "0", flag, s(&missing), f.torrent()]);
        assert_fails(&out, 13, &[s(&missing)]);
    }
    // `get` writes where any spelling says (its resume file is saved there at the end).
    for flag in ["-d", "--dir", "-o", "--output"] {
        let dir = f.path(&format!("out{flag}"));
        let out = run(&on_loopback(
            "get",
            &["--peer-timeout", "1", flag, s(&dir), f.torrent()],
        ));
        assert_fails(&out, 7, &["no peer reachable"]);
        assert!(dir.join(".movie.bin.resume.json").exists(), "{flag}");
    }
}

#[test]
fn info_json_gives_scripts_the_same_facts_as_the_text() {
    let f = Fixture::new();
    let out = run(&["info", "--json", f.torrent()]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let m = crate::support::read_metainfo(&f.torrent);
    assert_eq!(json["kind"], "torrent");
    assert_eq!(json["name"], "movie.bin");
    assert_eq!(json["info_hash"], m.info_hash.to_hex());
    assert_eq!(json["total_size"], 300_000);
    assert_eq!(json["piece_length"], 32_768);
    assert_eq!(json["pieces"], 10);
    assert_eq!(json["private"], false);
    assert_eq!(json["trackers"], serde_json::json!([]));
    assert_eq!(
        json["files"],
        serde_json::json!([{"index": 0, "path": "movie.bin", "length": 300_000, "padding": false}])
    );
    // The text says the same.
    let text = stdout_of(&run(&["info", f.torrent()]));
    assert!(
        text.contains(&format!("info-hash:   {}", m.info_hash.to_hex())),
        "{text}"
    );
}

#[test]
fn info_on_a_magnet_link_prints_what_the_link_says() {
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let link = format!(
        "magnet:?xt=urn:btih:{hash}&dn=My%20Show&tr=udp%3A%2F%2Ft.example%3A6969\
         &tr=http://t2.example/announce&x.pe=127.0.0.1:6881&x.pe=peer.example:51413&so=0,2-4"
    );
    let out = run(&["info", &link]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    for needle in [
        "name:        My Show",
        &format!("info-hash:   {hash}"),
        "  tier 1   udp://t.example:6969",
        "  tier 2   http://t2.example/announce",
        "  127.0.0.1:6881",
        "  peer.example:51413",
        "files:       only 0,2-4",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    let out = run(&["info", "--json", &link]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({
            "kind": "magnet",
            "name": "My Show",
            "info_hash": hash,
            "info_hash_v2": null,
            "trackers": [["udp://t.example:6969"], ["http://t2.example/announce"]],
            "peers": ["127.0.0.1:6881", "peer.example:51413"],
            "select_only": "0,2-4",
        })
    );

    // A v2 link: known by its truncated v2 hash, and the whole one shown too.
    let v2 = format!("{hash}{}", "ab".repeat(12));
    let out = run(&["info", &format!("magnet:?xt=urn:btmh:1220{v2}")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    for needle in [format!("info-hash:   {hash}"), format!("v2 hash:     {v2}")] {
        assert!(text.contains(&needle), "{needle:?} not in:\n{text}");
    }

    // A link that is not one: exit 4, as for a broken .torrent.
    let out = run(&["info", "magnet:?xt=urn:btih:nothex"]);
    assert_fails(&out, 4, &["invalid magnet link"]);
}

// ---------------------------------------------------------------------------------------
// The progress line tells the truth
// ---------------------------------------------------------------------------------------

/// Runs our binary with `args` on a pseudo-terminal (util-linux `script`; the terminal
/// is 80 columns when `script` itself has none), within [`RUN_LIMIT`]. Returns the exit
/// code `script -e` passes on and everything the terminal received.
fn on_a_terminal(args: &[&str]) -> (Option<i32>, String) {
    let mut line = String::from(env!("CARGO_BIN_EXE_torrent-actors"));
    for arg in args {
        // Single quotes for the shell `script -c` runs; no argument here has one.
        assert!(!arg.contains('\''), "{arg}");
        line.push_str(&format!(" '{arg}'"));
    }
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-f", "-c", &line, "/dev/null"])
        .env("TORRENT_ACTORS_DHT_BOOTSTRAP", "");
    let out = run_with_timeout(cmd, RUN_LIMIT);
    (out.status.code(), stdout_of(&out))
}

/// What an 80-column terminal showed, screen line by screen line: the text between
/// carriage returns and newlines, with the line-clearing escape (`ESC [ 2 K`) taken out,
/// cut where the terminal wraps (the progress bar pads a line it prints above itself to
/// the full width, and lets the terminal wrap it).
fn screen_lines(raw: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for segment in raw.replace("\u{1b}[2K", "").split(['\r', '\n']) {
        let chars: Vec<char> = segment.chars().collect();
        for row in chars.chunks(80) {
            let row: String = row.iter().collect::<String>().trim_end().to_string();
            if !row.is_empty() {
                lines.push(row);
            }
        }
    }
    lines
}

/// `movie.bin` under `dir` with only its first `pieces` 32 KiB pieces, as a download
/// stopped part way leaves it.
fn partial_copy(f: &Fixture, dir: &Path, pieces: usize) {
    fs::create_dir_all(dir).expect("a folder");
    let data = fs::read(f.payload.dir.join("movie.bin")).expect("the payload");
    fs::write(dir.join("movie.bin"), &data[..pieces * 32_768]).expect("part of the file");
}

#[test]
fn a_resumed_run_with_nothing_coming_in_shows_no_rate_and_no_eta() {
    let f = Fixture::new();
    let out_dir = f.path("out");
    partial_copy(&f, &out_dir, 5);
    let args = on_loopback(
        "get",
        &["--peer-timeout", "2", "-d", s(&out_dir), f.torrent()],
    );
    // First from the files alone, then (the first run saved it) from the resume file.
    for (run, start) in [
        ("first", "existing data: 5/10 pieces (160.00 KiB) good"),
        ("second", "resuming: 5/10 pieces (160.00 KiB) verified"),
    ] {
        let (code, raw) = on_a_terminal(&args);
        let lines = screen_lines(&raw);
        assert_eq!(code, Some(7), "{run}: {lines:#?}");
        assert!(
            lines.iter().any(|l| l.starts_with(start)),
            "{run}: {lines:#?}"
        );
        let bars: Vec<&String> = lines
            .iter()
            // The downloading lines (a check drawn on the way has a bar too).
            .filter(|l| l.starts_with("movie.bin [") && l.contains('↓'))
            .collect();
        assert!(!bars.is_empty(), "{run}: no progress line in {lines:#?}");
        for bar in bars {
            // Half the file was there before: none of it is this run's download.
            assert!(
                bar.contains(" 54% 160/293 KiB ↓ 0 B/s eta --"),
                "{run}: {bar:?}"
            );
            assert!(
                bar.chars().count() < 80,
                "{run}: wider than the terminal: {bar:?}"
            );
        }
    }
}

#[test]
fn a_complete_download_run_again_says_so_in_human_units() {
    let f = Fixture::new();
    let (code, raw) = on_a_terminal(&on_loopback("get", &["-d", s(&f.payload.dir), f.torrent()]));
    let lines = screen_lines(&raw);
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l == "movie.bin was already complete (292.97 KiB); 0 bytes fetched this run"),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("0.0 s")), "{lines:#?}");
}

#[test]
fn a_download_on_a_terminal_fits_its_width_and_ends_with_a_human_summary() {
    let f = Fixture::new();
    let seeder = crate::support::LtSeeder::start(
        &f.torrent,
        &f.payload.dir,
        crate::support::SeedOpts::direct(),
    );
    let out_dir = f.path("out");
    partial_copy(&f, &out_dir, 3);
    let peer = seeder.addr().to_string();
    let (code, raw) = on_a_terminal(&on_loopback(
        "get",
        &["--peer", &peer, "-d", s(&out_dir), f.torrent()],
    ));
    let lines = screen_lines(&raw);
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l == "existing data: 3/10 pieces (96.00 KiB) good"),
        "{lines:#?}"
    );
    for line in lines.iter().filter(|l| l.starts_with("movie.bin [")) {
        if line.contains("checking") {
            assert!(
                line.chars().count() < 80,
                "wider than the terminal: {line:?}"
            );
            continue;
        }
        assert!(
            line.chars().count() < 80,
            "wider than the terminal: {line:?}"
        );
        assert!(line.contains(" eta "), "{line:?}");
    }
    // The summary counts this run's bytes only: the seven pieces fetched.
    let fetched = 300_000 - 3 * 32_768;
    // Printed after the bar is gone (a full-width line above it may run into it, as
    // the terminal wraps that one).
    let at = raw
        .find("downloaded movie.bin: 292.97 KiB in ")
        .unwrap_or_else(|| panic!("no summary in {raw:?}"));
    let summary = raw[at..].split(['\r', '\n']).next().unwrap_or_default();
    assert!(summary.contains("(196.97 KiB at "), "{summary:?}");
    assert!(
        summary.ends_with(&format!("average; {fetched} bytes fetched this run)")),
        "{summary:?}"
    );
    crate::support::assert_same_files(&f.payload.dir, &out_dir, &f.payload.files);
}

#[test]
fn off_a_terminal_the_periodic_line_carries_the_eta() {
    let f = Fixture::new();
    let out_dir = f.path("out");
    partial_copy(&f, &out_dir, 5);
    // Lines come every 5 s; no peer for 7 s ends the run after the first.
    let out = run(&on_loopback(
        "get",
        &["--peer-timeout", "7", "-d", s(&out_dir), f.torrent()],
    ));
    assert_fails(&out, 7, &["no peer reachable"]);
    let stdout = stdout_of(&out);
    assert!(
        stdout.contains("existing data: 5/10 pieces (160.00 KiB) good"),
        "{stdout}"
    );
    assert!(
        stdout.contains("movie.bin  54% 160/293 KiB ↓ 0 B/s eta -- ↑ 0 B/s 0 peers"),
        "{stdout}"
    );
    assert!(!stdout.contains('\r'), "{stdout:?}");
}

#[test]
fn log_lines_are_whole_lines_with_their_level_and_no_indent() {
    let f = Fixture::new();
    let out_dir = f.path("out");
    partial_copy(&f, &out_dir, 5);
    let out = run(&on_loopback(
        "get",
        &["-v", "--peer-timeout", "1", "-d", s(&out_dir), f.torrent()],
    ));
    assert_fails(&out, 7, &["no peer reachable"]);
    let stderr = stderr_of(&out);
    // The log comes before the table of actors `-v` prints at the end.
    let logged: Vec<&str> = stderr
        .lines()
        .take_while(|l| *l != "actors:")
        .filter(|l| !l.starts_with("error: "))
        .collect();
    assert!(logged.len() > 2, "{stderr}");
    for line in logged {
        assert!(
            !line.starts_with(' '),
            "an indented log line: {line:?}\n{stderr}"
        );
        assert!(
            [" INFO ", " WARN ", " DEBG ", " ERRO ", " CRIT "]
                .iter()
                .any(|level| line.contains(level)),
            "a log line without its level (a bare context line?): {line:?}\n{stderr}"
        );
    }
    // The torrent's context key is on the lines it belongs to.
    assert!(stderr.contains("torrent: "), "{stderr}");
}

#[test]
fn a_magnet_link_and_its_torrent_file_exclude_each_other_in_one_folder() {
    let f = Fixture::new();
    let out_dir = f.path("out");
    let hash = crate::support::read_metainfo(&f.torrent).info_hash.to_hex();
    let magnet = format!("magnet:?xt=urn:btih:{hash}&dn=movie.bin");
    let hash_lock = out_dir.join(format!(".{hash}.lock"));
    // The magnet link first: it waits for metadata nobody has.
    let mut first = Background::start(&on_loopback(
        "get",
        &["--peer-timeout", "60", "-d", s(&out_dir), &magnet],
    ));
    first.wait_until("the lock", |_| locked_by_another(&hash_lock));
    let second = run(&on_loopback(
        "get",
        &["--peer-timeout", "1", "-d", s(&out_dir), f.torrent()],
    ));
    assert_fails(&second, 12, &[&format!(".{hash}.lock")]);
    first.child.kill();

    // The .torrent first: the magnet link is refused at once.
    let mut first = Background::start(&on_loopback(
        "get",
        &["--peer-timeout", "60", "-d", s(&out_dir), f.torrent()],
    ));
    first.wait_until("the lock", |_| locked_by_another(&hash_lock));
    let second = run(&on_loopback(
        "get",
        &["--peer-timeout", "1", "-d", s(&out_dir), &magnet],
    ));
    assert_fails(&second, 12, &["already working on movie.bin"]);
}

/// `info` piped into a reader that stops early (`| head -1`): the rest of its output has
/// nowhere to go, which ends the command quietly, never in a panic.
#[test]
fn info_into_a_pipe_closed_early_ends_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("many");
    fs::create_dir_all(&data).unwrap();
    // Far more text than a pipe holds (64 KiB), so `info` is still writing when the
    // reader goes.
    for i in 0..3000 {
        fs::write(
            data.join(format!("file-with-a-longish-name-{i:05}.txt")),
            [b'x'],
        )
        .unwrap();
    }
    let torrent = dir.path().join("many.torrent");
    make_torrent(&data, &torrent, 15, &[]);
    for json in [false, true] {
        let mut cmd = ours();
        cmd.arg("info");
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .arg(&torrent)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 16];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
        drop(child.stdout.take());
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "info did not end");
            thread::sleep(POLL);
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!stderr.contains("panicked"), "json {json}: {stderr}");
        assert_ne!(status.code(), Some(101), "json {json}: {stderr}");
    }
}
