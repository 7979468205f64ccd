//! Malicious torrents and magnet links through `torrent-actors get`: every file of the
//! hostile corpus and every malformed link is refused with its own error and exit code
//! 4 before anything is written; torrents that parse but try to escape the output folder
//! download only inside it; torrents claiming absurd sizes cost memory in proportion to
//! their real size, not their claim, and leave no giant sparse file behind.
//!
//! Each run gets a fresh output folder inside a fresh parent, and the whole parent tree
//! is listed afterwards: nothing may appear beside the output folder, and inside it only
//! what the torrent names.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value as Json;
use sha1::{Digest, Sha1};
use torrent_actors::bencode::BValue;
use torrent_actors::magnet::Magnet;
use torrent_actors::metainfo::Metainfo;
use torrent_actors::InfoHash;

use crate::metainfo::corpus;
use crate::support::{read_metainfo, run_until, run_within, FakeMetadataPeer, LtSeeder, SeedOpts};

/// The longest one `get` may run before the test counts it as hung.
const GET_LIMIT: Duration = Duration::from_secs(120);

/// The peak resident memory allowed to a `get` fed a hostile torrent. Generous: the
/// point is that a claim of petabytes or of half-gigabyte pieces costs nothing like it.
const MEMORY_BOUND_KIB: u64 = 200 * 1024;

const LT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_torrent.py");

/// `get` with the usual test options, on `source` (a path or a magnet link), into `out`.
fn get_command(source: &str, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "--no-dht", "-o"])
        .arg(out)
        .args(extra)
        .arg(source);
    cmd
}

fn run(cmd: Command) -> Output {
    run_within(cmd, GET_LIMIT)
}

/// `cmd` run under `/usr/bin/time -v`: its output and its peak resident set in KiB.
fn run_measured(cmd: Command) -> (Output, u64) {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-v").arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    let output = run(timed);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let peak = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time:\n{stderr}"));
    (output, peak)
}

/// Every entry under `root`, relative to it, sorted; symbolic links are listed, never
/// followed.
fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
            let meta = fs::symlink_metadata(&path).expect("an entry's metadata");
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A fresh parent folder and the (not yet existing) output folder inside it.
fn fresh_output() -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().expect("a temp folder");
    let out = parent.path().join("out");
    (parent, out)
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------
// Refused before anything is written
// ---------------------------------------------------------------------------------------

#[test]
fn get_refuses_every_corpus_file_with_exit_4_its_error_and_nothing_written() {
    let mut wrong = Vec::new();
    for case in corpus() {
        let (parent, out) = fresh_output();
        let output = run(get_command(
            case.path.to_str().expect("a UTF-8 corpus path"),
            &out,
            &["--peer-timeout", "1"],
        ));
        let stderr = stderr_of(&output);
        let want = format!(
            "error: invalid torrent {}: {}\n",
            case.path.display(),
            case.expected
        );
        let left = tree(parent.path());
        if output.status.code() != Some(4)
            || stderr != want
            || !output.stdout.is_empty()
            || !left.is_empty()
        {
            wrong.push(format!(
                "{}: status {:?}, left {left:?}\n   got: {stderr:?}\n  want: {want:?}",
                case.path.display(),
                output.status.code()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn get_refuses_malformed_magnet_links_with_exit_4_and_nothing_written() {
    let hex = "dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c";
    let links = [
        "magnet:?".to_string(),
        "magnet:?dn=no+hash+here".to_string(),
        "magnet:?xt=urn:btih:123".to_string(),
        format!("magnet:?xt=urn:btih:{}", "z".repeat(40)),
        // A v2 hash must be a SHA2-256 multihash: 1220 and 64 hex digits.
        format!("magnet:?xt=urn:btmh:1220{}", "a".repeat(63)),
        format!("magnet:?xt=urn:btmh:1114{}", "a".repeat(64)),
        format!("magnet:?xt=urn:btih:{hex}&x.pe=nowhere"),
        format!("magnet:?xt=urn:btih:{hex}&x.pe=127.0.0.1:99999"),
        format!("magnet:?xt=urn:btih:{hex}&so=5-2"),
        format!("magnet:?xt=urn:btih:{hex}&so=99999999999"),
        // An escape sequence where the hash should be must not reach the terminal.
        "magnet:?xt=urn:btih:%1b[2J%1b]0;owned%07".to_string(),
        format!("MAGNET:?xt=urn:btih:{}", "\u{1b}[31m".repeat(8)),
        format!("magnet:?xt=urn:btih:{}", "9".repeat(100_000)),
    ];
    let mut wrong = Vec::new();
    for link in &links {
        let error = Magnet::parse(link)
            .err()
            .unwrap_or_else(|| panic!("{link:?} parses; it is meant to be malformed"));
        let (parent, out) = fresh_output();
        let output = run(get_command(link, &out, &["--peer-timeout", "1"]));
        let stderr = stderr_of(&output);
        let want = format!("error: invalid magnet link: {error}\n");
        let left = tree(parent.path());
        if output.status.code() != Some(4)
            || stderr != want
            || stderr.contains('\u{1b}')
            || !left.is_empty()
        {
            let shown: String = link.chars().take(80).collect();
            wrong.push(format!(
                "{shown:?}: status {:?}, left {left:?}\n   got: {stderr:?}\n  want: {want:?}",
                output.status.code()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Paths that parse but try to leave the folder
// ---------------------------------------------------------------------------------------

/// What libtorrent says about a torrent file.
fn libtorrent_view(torrent: &Path) -> Json {
    let out = Command::new("/usr/bin/python3")
        .args([LT_SCRIPT, "describe"])
        .arg(torrent)
        .output()
        .expect("python3-libtorrent runs");
    assert!(
        out.status.success(),
        "lt_torrent.py describe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("lt_torrent.py prints JSON")
}

/// Deterministic contents for file `n` of a test torrent.
pub(crate) fn file_bytes(n: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + n * 7919) % 251) as u8)
        .collect()
}

/// A multi-file torrent named `name` with `files` (path components, length), in 16 KiB
/// pieces hashed over the contents [`file_bytes`] gives.
pub(crate) fn multi_file_torrent(name: &str, files: &[(Vec<&str>, usize)]) -> Vec<u8> {
    const PIECE: usize = 16 * 1024;
    let data: Vec<u8> = files
        .iter()
        .enumerate()
        .flat_map(|(n, (_, len))| file_bytes(n, *len))
        .collect();
    let pieces: Vec<u8> = data
        .chunks(PIECE)
        .flat_map(|chunk| <[u8; 20]>::from(Sha1::digest(chunk)))
        .collect();
    let list = files
        .iter()
        .map(|(path, len)| {
            BValue::dict([
                ("length", BValue::Int(*len as i64)),
                (
                    "path",
                    BValue::List(path.iter().map(|c| BValue::string(c)).collect()),
                ),
            ])
        })
        .collect();
    BValue::dict([(
        "info",
        BValue::dict([
            ("name", BValue::string(name)),
            ("piece length", BValue::Int(PIECE as i64)),
            ("files", BValue::List(list)),
            ("pieces", BValue::Bytes(pieces)),
        ]),
    )])
    .encode()
}

/// A libtorrent seeder of `torrent`, its data (as [`file_bytes`] makes it) laid under
/// `seed` where libtorrent itself looks for each file.
fn seed_where_libtorrent_looks(
    torrent: &Path,
    seed: &Path,
    files: &[(Vec<&str>, usize)],
) -> LtSeeder {
    let view = libtorrent_view(torrent);
    let lt_files = view["files"].as_array().expect("libtorrent's file list");
    assert_eq!(lt_files.len(), files.len(), "{view}");
    for (n, (file, (_, len))) in lt_files.iter().zip(files).enumerate() {
        let path = seed.join(file["path"].as_str().expect("a path"));
        assert!(path.starts_with(seed), "libtorrent path {path:?}");
        fs::create_dir_all(path.parent().expect("a parent")).expect("seed folders");
        fs::write(&path, file_bytes(n, *len)).expect("seed data");
    }
    LtSeeder::start(torrent, seed, SeedOpts::direct())
}

#[test]
fn a_torrent_whose_names_try_to_escape_downloads_only_inside_the_output_folder() {
    let long = format!("{}.txt", "x".repeat(300));
    // Shortened by dropping its long "extension", this once became `..`: two of them
    // climbed from `out/AUX` to `out`'s parent, where an empty file truncated a victim.
    let climb = format!("...{}", "a".repeat(300));
    let files: Vec<(Vec<&str>, usize)> = vec![
        (vec!["C:", "Windows", "System32", "evil.dll"], 20_000),
        (vec!["E:evil.txt"], 2_500),
        (vec!["CON"], 5_000),
        (vec!["aux.txt"], 7_000),
        (vec!["NUL.tar.gz"], 3_000),
        (vec!["...", "dots.bin"], 9_000),
        (vec![" ..", "space.bin"], 4_000),
        (vec!["..\u{2215}..\u{2215}etc\u{2215}passwd"], 6_000),
        (vec!["\u{ff0e}\u{ff0e}", "fullwidth.bin"], 3_000),
        (vec![&long], 2_000),
        (vec!["dup.txt"], 1_000),
        (vec!["dup.txt"], 1_500),
        (vec!["f"], 500),
        (vec!["f", "g"], 700),
        (vec![&climb, &climb, "victim.txt"], 0),
        (vec![&climb, "inside.bin"], 3_000),
    ];
    let tmp = tempfile::tempdir().expect("temp folder");
    let torrent = tmp.path().join("escape.torrent");
    fs::write(&torrent, multi_file_torrent("AUX", &files)).expect("writing the torrent");
    let ours = read_metainfo(&torrent);
    let seeder = seed_where_libtorrent_looks(&torrent, &tmp.path().join("seed"), &files);

    let parent = tmp.path().join("parent");
    fs::create_dir(&parent).expect("the parent folder");
    let victim = parent.join("victim.txt");
    fs::write(&victim, b"precious").expect("the victim file");
    let out = parent.join("out");
    let mut cmd = get_command(
        torrent.to_str().expect("a UTF-8 path"),
        &out,
        &["--peer-timeout", "60"],
    );
    cmd.arg("--peer").arg(seeder.addr().to_string());
    let output = run(cmd);
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "get failed:\n{stderr}");

    assert_eq!(fs::read(&victim).expect("the victim"), b"precious");
    // Every file is where our layout puts it, with its bytes.
    let mut expected = vec![PathBuf::from("out"), PathBuf::from("victim.txt")];
    for (n, (entry, (_, len))) in ours.info.layout.files().iter().zip(&files).enumerate() {
        let path = entry.path.under(&out);
        assert_eq!(
            fs::read(&path).ok(),
            Some(file_bytes(n, *len)),
            "{} is missing or wrong",
            path.display()
        );
        for ancestor in path.ancestors() {
            if let Ok(rel) = ancestor.strip_prefix(&parent) {
                if !rel.as_os_str().is_empty() {
                    expected.push(rel.to_path_buf());
                }
            }
        }
    }
    expected.sort();
    expected.dedup();
    // Nothing else in the parent's tree but the resume file beside the download.
    let found: Vec<PathBuf> = tree(&parent)
        .into_iter()
        .filter(|p| {
            !(p.parent() == Some(Path::new("out")) && p.to_string_lossy().ends_with(".resume.json"))
        })
        .collect();
    assert_eq!(found, expected, "stderr:\n{stderr}");
    for path in &found {
        let meta = fs::symlink_metadata(parent.join(path)).expect("metadata");
        assert!(
            !meta.file_type().is_symlink(),
            "{} is a link",
            path.display()
        );
    }
    // And nothing was made beside the test's own files, one level up.
    let mut top: Vec<String> = fs::read_dir(tmp.path())
        .expect("the temp folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    top.sort();
    assert_eq!(top, ["escape.torrent", "parent", "seed"]);
    drop(seeder);
}

// ---------------------------------------------------------------------------------------
// Claims out of proportion to the torrent
// ---------------------------------------------------------------------------------------

/// A single-file torrent claiming `length` bytes in pieces of `piece_length`, with the
/// piece count that claim needs (the hashes are all the same: no piece will ever verify,
/// and none needs to).
fn claiming_torrent(name: &str, length: u64, piece_length: u64) -> Vec<u8> {
    let pieces = length.div_ceil(piece_length) as usize;
    BValue::dict([(
        "info",
        BValue::dict([
            ("name", BValue::string(name)),
            ("piece length", BValue::Int(piece_length as i64)),
            ("length", BValue::Int(length as i64)),
            ("pieces", BValue::Bytes(vec![0x5A; pieces * 20])),
        ]),
    )])
    .encode()
}

/// A multi-file torrent whose `files` files of `each` bytes add up to its claim.
fn claiming_multi_torrent(files: usize, each: u64, piece_length: u64) -> Vec<u8> {
    let pieces = (each * files as u64).div_ceil(piece_length) as usize;
    let list = (0..files)
        .map(|n| {
            BValue::dict([
                ("length", BValue::Int(each as i64)),
                (
                    "path",
                    BValue::List(vec![BValue::string(&format!("part{n:04}.bin"))]),
                ),
            ])
        })
        .collect();
    BValue::dict([(
        "info",
        BValue::dict([
            ("name", BValue::string("claims")),
            ("piece length", BValue::Int(piece_length as i64)),
            ("files", BValue::List(list)),
            ("pieces", BValue::Bytes(vec![0xA5; pieces * 20])),
        ]),
    )])
    .encode()
}

#[test]
fn petabyte_claims_are_refused_before_any_file_is_made_and_cost_no_such_memory() {
    const PIECE: u64 = 512 << 20;
    let cases = [
        // 512 TiB in 512 MiB pieces: a million piece hashes, 20 MiB of torrent.
        (
            "single.torrent",
            claiming_torrent("huge.bin", 1 << 49, PIECE),
        ),
        (
            "multi.torrent",
            claiming_multi_torrent(1024, 1 << 39, PIECE),
        ),
    ];
    for (name, bytes) in cases {
        let tmp = tempfile::tempdir().expect("temp folder");
        let torrent = tmp.path().join(name);
        fs::write(&torrent, &bytes).expect("writing the torrent");
        let claimed = Metainfo::from_bytes(&bytes)
            .expect("a consistent torrent")
            .info
            .layout
            .total_length();
        assert_eq!(claimed, 1 << 49);
        let (parent, out) = fresh_output();
        let (output, peak_kib) = run_measured(get_command(
            torrent.to_str().expect("a UTF-8 path"),
            &out,
            &["--peer-timeout", "2"],
        ));
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(6), "{name}:\n{stderr}");
        assert!(
            stderr.contains("the torrent needs 512.0 TiB but the whole filesystem holds"),
            "{name}:\n{stderr}"
        );
        // The output folder was made (it is checked writable first) and left empty.
        assert_eq!(tree(parent.path()), [PathBuf::from("out")], "{name}");
        assert!(
            peak_kib < MEMORY_BOUND_KIB,
            "{name}: peak RSS {peak_kib} KiB for a {} MiB torrent claiming 512 TiB",
            bytes.len() >> 20
        );
    }
}

#[test]
fn pieces_over_512_mib_and_endless_torrent_files_are_refused_with_exit_4() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let torrent = tmp.path().join("two-gib-pieces.torrent");
    fs::write(&torrent, claiming_torrent("big.bin", 4 << 31, 1 << 31)).expect("writing");
    let (parent, out) = fresh_output();
    let output = run(get_command(
        torrent.to_str().expect("a UTF-8 path"),
        &out,
        &["--peer-timeout", "1"],
    ));
    assert_eq!(output.status.code(), Some(4), "{}", stderr_of(&output));
    assert_eq!(
        stderr_of(&output),
        format!(
            "error: invalid torrent {}: piece length 2147483648 is outside 1 byte to 512 MiB\n",
            torrent.display()
        )
    );
    assert!(tree(parent.path()).is_empty());

    // A "torrent" that never ends is read no further than the size limit.
    let (parent, out) = fresh_output();
    let (output, peak_kib) = run_measured(get_command("/dev/zero", &out, &[]));
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("error: invalid torrent /dev/zero: larger than 64 MiB"),
        "{stderr}"
    );
    assert!(tree(parent.path()).is_empty());
    assert!(peak_kib < MEMORY_BOUND_KIB, "peak RSS {peak_kib} KiB");
}

#[test]
fn data_on_disk_in_512_mib_pieces_is_checked_without_holding_a_piece_in_memory() {
    const PIECE: u64 = 512 << 20;
    let tmp = tempfile::tempdir().expect("temp folder");
    let torrent = tmp.path().join("big-pieces.torrent");
    // 1 GiB in two 512 MiB pieces: it fits the disk, so its file is made (sparse).
    fs::write(&torrent, claiming_torrent("big.bin", 2 * PIECE, PIECE)).expect("writing");
    let (parent, out) = fresh_output();
    let source = torrent.to_str().expect("a UTF-8 path");
    let first = run(get_command(source, &out, &["--peer-timeout", "1"]));
    assert_eq!(first.status.code(), Some(7), "{}", stderr_of(&first));
    let file = out.join("big.bin");
    assert_eq!(fs::metadata(&file).map(|m| m.len()).ok(), Some(2 * PIECE));

    // The file is there now, so the second run hashes both pieces before anything else.
    let (second, peak_kib) =
        run_measured(get_command(source, &out, &["-v", "--peer-timeout", "1"]));
    let stderr = stderr_of(&second);
    assert_eq!(second.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("data checked") && stderr.contains("to check: 2"),
        "the two pieces were not checked:\n{stderr}"
    );
    assert!(
        peak_kib < MEMORY_BOUND_KIB,
        "peak RSS {peak_kib} KiB checking two 512 MiB pieces"
    );
    let mut left = tree(parent.path());
    left.retain(|p| !p.to_string_lossy().ends_with(".resume.json"));
    assert_eq!(left, [PathBuf::from("out"), PathBuf::from("out/big.bin")]);
}

// ---------------------------------------------------------------------------------------
// Metadata that hashes right but is no torrent
// ---------------------------------------------------------------------------------------

#[test]
fn magnet_metadata_that_matches_its_hash_but_is_no_valid_info_dictionary_exits_4() {
    let escaping = BValue::dict([
        ("name", BValue::string("../../evil")),
        ("piece length", BValue::Int(16384)),
        ("length", BValue::Int(10)),
        ("pieces", BValue::Bytes(vec![1; 20])),
    ])
    .encode();
    let cases: [(&str, Vec<u8>); 3] = [
        ("missing fields", b"d4:name4:evile".to_vec()),
        (
            "not bencode",
            b"this is not an info dictionary at all".to_vec(),
        ),
        ("escaping name", escaping),
    ];
    for (what, metadata) in cases {
        let hash = InfoHash(<[u8; 20]>::from(Sha1::digest(&metadata)));
        // What our own reader says of such an info dictionary, as a magnet's saved
        // .torrent would hold it.
        let mut as_torrent = b"d4:info".to_vec();
        as_torrent.extend_from_slice(&metadata);
        as_torrent.push(b'e');
        let reason = Metainfo::from_bytes(&as_torrent)
            .err()
            .unwrap_or_else(|| panic!("{what}: the metadata parses"))
            .to_string();
        // A bencode error names a byte offset into the .torrent built around the
        // metadata, which holds more keys than this one; the offset is left out.
        let without_offset =
            |text: &str| text.split(" at byte ").next().unwrap_or(text).to_string();
        let reason = without_offset(&reason);
        let peer = FakeMetadataPeer::serving(hash, metadata);
        let link = format!("magnet:?xt=urn:btih:{}&x.pe={}", hash.to_hex(), peer.addr());
        let (parent, out) = fresh_output();
        let output = run(get_command(&link, &out, &["--peer-timeout", "30"]));
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(4), "{what}:\n{stderr}");
        let line = stderr.lines().last().unwrap_or_default();
        assert_eq!(
            without_offset(line),
            format!(
                "error: the metadata matches the info-hash but is not a usable torrent: {reason}"
            ),
            "{what}:\n{stderr}"
        );
        assert!(
            peer.wait_for_lies(1, Duration::from_secs(1)),
            "{what}: never asked"
        );
        // No .torrent was saved and no file made.
        assert_eq!(tree(parent.path()), [PathBuf::from("out")], "{what}");
    }
}

// ---------------------------------------------------------------------------------------
// The jail: links planted between runs, names at the length limit, many duplicates
// ---------------------------------------------------------------------------------------

/// Replaces `path` (a file or a folder) by a symbolic link to `target`.
pub(crate) fn plant_link(path: &Path, target: &Path) {
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(path).expect("removing the folder");
    } else {
        fs::remove_file(path).expect("removing the file");
    }
    std::os::unix::fs::symlink(target, path).expect("planting the link");
}

#[test]
fn links_planted_in_the_download_between_runs_are_never_followed() {
    let files: Vec<(Vec<&str>, usize)> =
        vec![(vec!["a.bin"], 40_000), (vec!["sub", "b.bin"], 30_000)];
    let tmp = tempfile::tempdir().expect("temp folder");
    let torrent = tmp.path().join("pl.torrent");
    fs::write(&torrent, multi_file_torrent("pl", &files)).expect("writing the torrent");
    let seeder = seed_where_libtorrent_looks(&torrent, &tmp.path().join("seed"), &files);
    let out = tmp.path().join("out");
    let get = || {
        let mut cmd = get_command(
            torrent.to_str().expect("a UTF-8 path"),
            &out,
            &["--peer-timeout", "20"],
        );
        cmd.arg("--peer").arg(seeder.addr().to_string());
        run(cmd)
    };
    let first = get();
    assert!(first.status.success(), "get failed:\n{}", stderr_of(&first));

    // Outside the folder: a file longer than a.bin (a followed link would truncate it),
    // and a folder holding b.bin's true bytes (a followed link would verify and serve it).
    let outside = tmp.path().join("outside");
    fs::create_dir_all(outside.join("sub")).expect("the outside folder");
    let secret = b"precious, and longer than the file it stands in for. ".repeat(2_000);
    fs::write(outside.join("secret"), &secret).expect("the secret");
    fs::write(outside.join("sub").join("b.bin"), file_bytes(1, 30_000)).expect("b outside");
    plant_link(&out.join("pl").join("a.bin"), &outside.join("secret"));
    plant_link(&out.join("pl").join("sub"), &outside.join("sub"));
    let untouched = |what: &str| {
        assert_eq!(
            fs::read(outside.join("secret")).expect("the secret"),
            secret,
            "{what} changed the secret"
        );
        assert_eq!(
            fs::read(outside.join("sub").join("b.bin")).expect("b outside"),
            file_bytes(1, 30_000),
            "{what} changed b.bin outside"
        );
    };

    // Writing and truncating: the resumed download refuses the links.
    let second = get();
    let stderr = stderr_of(&second);
    assert!(!second.status.success(), "get followed a link:\n{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    untouched("get");

    // Reading: `seed` checks the data and must not take what the links point at.
    let mut seed = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    seed.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["seed", "--port", "0", "--no-dht", "--dir"])
        .arg(&out)
        .arg(&torrent);
    let seeding = run_until(seed, Duration::from_secs(20));
    let output = seeding.unwrap_or_else(|o| o);
    let stderr = stderr_of(&output);
    assert!(
        !output.status.success(),
        "seed served through a link:\n{stderr}"
    );
    assert!(stderr.contains("symbolic link"), "{stderr}");
    untouched("seed");
    drop(seeder);
}

#[test]
fn a_name_of_250_bytes_downloads_with_its_own_files_named_by_the_info_hash() {
    let name = "n".repeat(250);
    let files: Vec<(Vec<&str>, usize)> = vec![(vec!["a.bin"], 50_000), (vec!["b.bin"], 9_000)];
    let tmp = tempfile::tempdir().expect("temp folder");
    let torrent = tmp.path().join("long.torrent");
    fs::write(&torrent, multi_file_torrent(&name, &files)).expect("writing the torrent");
    let ours = read_metainfo(&torrent);
    let seeder = seed_where_libtorrent_looks(&torrent, &tmp.path().join("seed"), &files);
    let out = tmp.path().join("out");
    let mut cmd = get_command(
        torrent.to_str().expect("a UTF-8 path"),
        &out,
        &["--peer-timeout", "60", "--files", "0"],
    );
    cmd.arg("--peer").arg(seeder.addr().to_string());
    let output = run(cmd);
    assert!(
        output.status.success(),
        "get failed:\n{}",
        stderr_of(&output)
    );
    assert_eq!(
        fs::read(out.join(&name).join("a.bin")).expect("a.bin"),
        file_bytes(0, 50_000)
    );
    let hex = ours.info_hash.to_hex();
    let mut side: Vec<String> = fs::read_dir(&out)
        .expect("the output folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != &name)
        .collect();
    side.sort();
    // b.bin shares a piece with a.bin: its bytes of that piece wait in the part file.
    assert_eq!(
        side,
        [format!(".{hex}.parts"), format!(".{hex}.resume.json")]
    );
    drop(seeder);
}

#[test]
fn three_hundred_thousand_duplicate_names_are_renamed_in_linear_time() {
    const COPIES: usize = 300_000;
    let tmp = tempfile::tempdir().expect("temp folder");
    let torrent = tmp.path().join("dups.torrent");
    let list: Vec<BValue> = (0..COPIES)
        .map(|_| {
            BValue::dict([
                ("length", BValue::Int(1)),
                ("path", BValue::List(vec![BValue::string("a.txt")])),
            ])
        })
        .collect();
    let pieces = vec![0u8; COPIES.div_ceil(16 * 1024) * 20];
    let bytes = BValue::dict([(
        "info",
        BValue::dict([
            ("name", BValue::string("dups")),
            ("piece length", BValue::Int(16 * 1024)),
            ("files", BValue::List(list)),
            ("pieces", BValue::Bytes(pieces)),
        ]),
    )])
    .encode();
    fs::write(&torrent, bytes).expect("writing the torrent");
    // The bound is for a hang, not a speed target: quadratic renaming took minutes.
    let mut info = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    info.arg("info").arg(&torrent);
    let output = run_until(info, Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("info on {COPIES} duplicate names did not finish"));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let meta = read_metainfo(&torrent);
    let last = meta
        .info
        .layout
        .files()
        .last()
        .expect("a file")
        .path
        .display();
    assert_eq!(last, format!("dups/a.{}.txt", COPIES - 1));
}
