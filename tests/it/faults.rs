//! Disk and crash faults, against the real `torrent-actors get` and a libtorrent seeder on
//! loopback: a full disk, a data file we may not write, data files deleted or truncated
//! between runs, damaged and foreign resume files, and `kill -9` at random moments.
//!
//! Every test holds the engine to the same two promises. The resume file never claims a
//! piece whose bytes on disk fail their SHA-1 (checked here by hashing the claimed pieces
//! against the torrent's own hashes), and the same command, run again, ends with files
//! byte-identical to the originals, fetching exactly the pieces that were not good on disk.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{chown, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha1::{Digest, Sha1};
use torrent_actors::engine::resume::ResumeData;
use torrent_actors::engine::storage::resume_path;
use torrent_actors::metainfo::Metainfo;

use crate::support::{
    assert_same_files, fetched, make_torrent, read_metainfo, run_within, ChildGuard, LtSeeder,
    Payload, SeedOpts, TinyDisk,
};

const GET_LIMIT: Duration = Duration::from_secs(120);

/// The unprivileged user (`nobody`) the permission test runs `get` as: root ignores file
/// modes, so only another uid gets an honest EACCES.
const NOBODY: u32 = 65534;

// --- running get ---------------------------------------------------------------------------

/// `get` dialing `seeders` directly, as a user would type it; `as_user` runs it under
/// another uid through `setpriv`.
fn get_command(torrent: &Path, out: &Path, seeders: &[&LtSeeder], as_user: Option<u32>) -> Command {
    let bin = env!("CARGO_BIN_EXE_torrent-actors");
    let mut cmd = match as_user {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--"])
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "-o"])
        .arg(out);
    if seeders.is_empty() {
        // Nobody to fetch from: check the data, save the resume file, and stop soon.
        cmd.args(["--peer-timeout", "1"]);
    }
    for s in seeders {
        cmd.arg("--peer").arg(s.addr().to_string());
    }
    cmd.arg(torrent);
    cmd
}

fn run(cmd: Command) -> Output {
    run_within(cmd, GET_LIMIT)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "get exited {} instead of {code}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    );
}

// --- the test's own view of the data: hashing pieces, reading the resume file -------------

/// Whether piece `n`'s bytes under `out` match the torrent's hash. A missing or short file
/// fails the piece.
fn piece_ok(meta: &Metainfo, out: &Path, n: u32) -> bool {
    let layout = &meta.info.layout;
    let piece = layout.piece(n).expect("a piece of the torrent");
    let mut sha = Sha1::new();
    for span in layout.piece_spans(piece) {
        let entry = &layout.files()[span.file];
        let mut buf = vec![0u8; span.len as usize];
        if !entry.padding {
            let read = File::open(entry.path.under(out))
                .and_then(|f| f.read_exact_at(&mut buf, span.file_offset));
            if read.is_err() {
                return false;
            }
        }
        sha.update(&buf);
    }
    torrent_actors::metainfo::PieceCheck::Sha1(sha.finalize().into())
        == meta.info.piece_check(piece)
}

/// Every piece whose bytes under `out` are right.
fn good_pieces(meta: &Metainfo, out: &Path) -> Vec<u32> {
    (0..meta.info.layout.num_pieces())
        .filter(|&n| piece_ok(meta, out, n))
        .collect()
}

/// Total length of `pieces`.
fn bytes_of(meta: &Metainfo, pieces: &[u32]) -> u64 {
    let layout = &meta.info.layout;
    pieces
        .iter()
        .filter_map(|&n| layout.piece(n))
        .map(|p| u64::from(layout.piece_len(p)))
        .sum()
}

fn all_pieces(meta: &Metainfo) -> Vec<u32> {
    (0..meta.info.layout.num_pieces()).collect()
}

fn resume_file(meta: &Metainfo, out: &Path) -> PathBuf {
    resume_path(out, &meta.info.layout, &meta.info_hash)
}

/// The pieces the resume file under `out` calls verified, read straight from its JSON
/// (not through the engine's checks); `None` if there is no resume file. Panics if it is
/// not JSON with a `verified` list of ranges.
fn claimed(meta: &Metainfo, out: &Path) -> Option<Vec<u32>> {
    let path = resume_file(meta, out);
    let bytes = fs::read(&path).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{} is not JSON ({e}):\n{}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    });
    let ranges = json["verified"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no `verified` list", path.display()));
    let mut pieces = Vec::new();
    for r in ranges {
        let (Some(a), Some(b)) = (r[0].as_u64(), r[1].as_u64()) else {
            panic!("{}: bad range {r}", path.display());
        };
        pieces.extend(a as u32..=b as u32);
    }
    Some(pieces)
}

/// Checks that every piece the resume file claims is good on disk, and returns the claims
/// (empty without a resume file). `when` says which moment, for the message.
fn assert_claims_hold(meta: &Metainfo, out: &Path, when: &str) -> Vec<u32> {
    let claims = claimed(meta, out).unwrap_or_default();
    let bad: Vec<u32> = claims
        .iter()
        .copied()
        .filter(|&n| !piece_ok(meta, out, n))
        .collect();
    assert!(
        bad.is_empty(),
        "{when}: the resume file claims pieces {bad:?} whose bytes fail their hash"
    );
    claims
}

/// A finished single-file download leaves the data and the resume file: no temporary
/// copy of a save, no reserve.
fn assert_clean_end(out: &Path) {
    let mut left: Vec<String> = fs::read_dir(out)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".file.bin.resume.json", "file.bin"]);
}

// --- fixtures ------------------------------------------------------------------------------

struct Fixture {
    tmp: tempfile::TempDir,
    payload: Payload,
    torrent: PathBuf,
    meta: Metainfo,
    out: PathBuf,
}

/// A payload (the awkward multi-file one, or one file of `len` bytes) with pieces of
/// `2^piece_exp` bytes, its torrent, and an output folder path under `out_parent` (the
/// fixture's own temp folder when `None`).
fn fixture(multi: bool, len: u64, piece_exp: u32, out_parent: Option<&Path>) -> Fixture {
    let tmp = tempfile::tempdir().expect("temp folder for a fault test");
    let payload = if multi {
        Payload::multi(&tmp.path().join("seed"), "album", 1 << piece_exp)
    } else {
        Payload::single(&tmp.path().join("seed"), "file.bin", len)
    };
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, piece_exp, &[]);
    let meta = read_metainfo(&torrent);
    let out = out_parent.unwrap_or(tmp.path()).join("out");
    Fixture {
        tmp,
        payload,
        torrent,
        meta,
        out,
    }
}

fn direct(upload_limit: Option<u64>) -> SeedOpts {
    SeedOpts {
        ready_without_announce: true,
        upload_limit,
        ..SeedOpts::default()
    }
}

/// Index of the payload file whose path ends with `suffix`.
fn file_index(f: &Fixture, suffix: &str) -> usize {
    f.meta
        .info
        .layout
        .files()
        .iter()
        .position(|e| e.path.under(Path::new("")).ends_with(suffix))
        .unwrap_or_else(|| panic!("no file {suffix} in the torrent"))
}

fn data_path(f: &Fixture, file: usize) -> PathBuf {
    f.meta.info.layout.files()[file].path.under(&f.out)
}

/// Copies the payload into the output folder, as an earlier complete run would have left
/// it.
fn copy_payload(f: &Fixture) {
    for (rel, _) in &f.payload.files {
        let to = f.out.join(rel);
        fs::create_dir_all(to.parent().expect("a file has a folder")).expect("mkdir");
        fs::copy(f.payload.dir.join(rel), &to).expect("copying the payload");
    }
}

/// Spoils one byte in each of `pieces` under `out`, in place: same size, and the file's
/// modification time put back, so only hashing can tell.
fn spoil(f: &Fixture, pieces: &[u32]) {
    let layout = &f.meta.info.layout;
    for &n in pieces {
        let piece = layout.piece(n).expect("a piece of the torrent");
        let span = layout.piece_spans(piece)[0];
        let path = layout.files()[span.file].path.under(&f.out);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("opening a data file to spoil");
        let mtime = file.metadata().and_then(|m| m.modified()).expect("mtime");
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, span.file_offset)
            .expect("read");
        file.write_all_at(&[!byte[0]], span.file_offset)
            .expect("write");
        file.set_modified(mtime).expect("putting the mtime back");
    }
}

/// Gives `path` and everything under it to `uid`.
fn chown_tree(path: &Path, uid: u32) {
    chown(path, Some(uid), Some(uid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&entry.path(), uid);
        }
    }
}

// --- 1. disk full ----------------------------------------------------------------------------

/// A 2 MiB tmpfs for a 4 MiB file: `get` fails with exit 6 naming the file, the resume file
/// records the pieces verified until then (and no others), and after the tmpfs is grown the
/// very same command finishes, fetching only the pieces that were not already good.
#[test]
fn a_full_disk_exits_6_keeps_verified_pieces_and_the_same_command_finishes_once_space_is_freed() {
    let f = fixture(false, 4 * 1024 * 1024 + 1234, 15, None);
    // The filesystem could hold the torrent (a torrent larger than the whole filesystem
    // is refused before anything is written), but ballast leaves only 2 MiB free.
    let disk = TinyDisk::mount("8m");
    let ballast = disk.path().join("ballast");
    fs::write(&ballast, vec![1u8; 6 * 1024 * 1024]).expect("writing the ballast");
    let out = disk.path().join("out");
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    let command = || get_command(&f.torrent, &out, &[&seeder], None);

    let first = run(command());
    let err = stderr(&first);
    assert_exit(&first, 6);
    assert!(err.contains("file.bin"), "the error names no file: {err}");
    assert!(err.contains("No space left"), "{err}");
    assert!(err.contains("run the same command"), "{err}");
    // Said once, in the error line: no log line repeats it.
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("No space left")).count(),
        1,
        "{err}"
    );
    let claims = assert_claims_hold(&f.meta, &out, "after the disk filled up");
    assert!(
        !claims.is_empty(),
        "the resume file (present: {}) records no verified piece after a full disk:\n{err}",
        resume_file(&f.meta, &out).exists()
    );
    let good = good_pieces(&f.meta, &out);
    assert!(
        good.len() < all_pieces(&f.meta).len(),
        "the disk never filled"
    );
    eprintln!(
        "disk full: {} of {} pieces good on disk, {} claimed by the resume file",
        good.len(),
        all_pieces(&f.meta).len(),
        claims.len()
    );

    fs::remove_file(&ballast).expect("freeing space");
    let second = run(command());
    assert_exit(&second, 0);
    assert_same_files(&f.payload.dir, &out, &f.payload.files);
    assert_eq!(
        fetched(&second),
        f.payload.total_len() - bytes_of(&f.meta, &good),
        "the second run fetched pieces that were already good on disk ({} of {} claimed)",
        claims.len(),
        good.len()
    );
    assert_clean_end(&out);
}

// --- 2. permission denied ------------------------------------------------------------------

/// Run as an unprivileged user, with one existing data file owned by root and read-only:
/// exit 5 naming that file, the resume file untouched; once the file is given back, the
/// same command finishes and fetches only the pieces that were not good.
#[test]
fn a_data_file_we_may_not_write_exits_5_naming_it_and_loses_nothing_verified() {
    let f = fixture(true, 0, 15, None);
    // The unprivileged user must reach the torrent and the output folder.
    fs::set_permissions(f.tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    copy_payload(&f);
    let spoilt = [1, 5, 9];
    spoil(&f, &spoilt);
    chown_tree(&f.out, NOBODY);

    // An earlier run that stopped with most pieces verified: no peers, so it checks the
    // data, waits a second and saves what it found.
    let earlier = run(get_command(&f.torrent, &f.out, &[], Some(NOBODY)));
    assert_exit(&earlier, 7);
    let claims = assert_claims_hold(&f.meta, &f.out, "after the earlier run");
    assert_eq!(claims.len(), all_pieces(&f.meta).len() - spoilt.len());
    let resume_before = fs::read(resume_file(&f.meta, &f.out)).expect("resume file");

    let locked = data_path(&f, file_index(&f, "b c.bin"));
    chown(&locked, Some(0), Some(0)).expect("chown root");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).expect("chmod");
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    let command = || get_command(&f.torrent, &f.out, &[&seeder], Some(NOBODY));

    let denied = run(command());
    let err = stderr(&denied);
    assert_exit(&denied, 5);
    assert!(err.contains("b c.bin"), "the error names no file: {err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert_eq!(
        claimed(&f.meta, &f.out).unwrap_or_default(),
        claims,
        "the failed run changed what the resume file records"
    );
    assert_eq!(
        fs::read(resume_file(&f.meta, &f.out)).ok(),
        Some(resume_before),
        "the failed run rewrote the resume file"
    );

    chown(&locked, Some(NOBODY), Some(NOBODY)).expect("chown back");
    let done = run(command());
    assert_exit(&done, 0);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert_eq!(fetched(&done), bytes_of(&f.meta, &spoilt));
}

// --- 3. data files deleted or truncated between runs -----------------------------------------

/// Downloads the whole multi-file torrent, lets `damage` change the files, and checks that
/// the next run warns about the damaged file, named in `warning`, and fetches exactly the
/// pieces `refetch` names, though the resume file claimed them all.
fn damage_between_runs(
    damage: impl FnOnce(&Fixture),
    warning: &str,
    refetch: impl FnOnce(&Fixture) -> Vec<u32>,
) {
    let f = fixture(true, 0, 15, None);
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    let first = run(get_command(&f.torrent, &f.out, &[&seeder], None));
    assert_exit(&first, 0);
    assert_eq!(claimed(&f.meta, &f.out), Some(all_pieces(&f.meta)));

    damage(&f);
    let expected = refetch(&f);
    assert!(!expected.is_empty());
    let second = run(get_command(&f.torrent, &f.out, &[&seeder], None));
    assert_exit(&second, 0);
    let err = stderr(&second);
    assert!(
        err.lines()
            .any(|l| l.contains(warning) && l.contains("WARN")),
        "no warning `{warning}` at start:\n{err}"
    );
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert_eq!(
        fetched(&second),
        bytes_of(&f.meta, &expected),
        "expected pieces {expected:?} fetched again:\n{}",
        stderr(&second)
    );
    assert_claims_hold(&f.meta, &f.out, "after the second run");
}

#[test]
fn a_data_file_deleted_between_runs_is_fetched_again_not_trusted_from_the_resume_file() {
    damage_between_runs(
        |f| fs::remove_file(data_path(f, file_index(f, "b c.bin"))).expect("delete"),
        "data file missing since the last run",
        |f| {
            f.meta
                .info
                .layout
                .file_pieces(file_index(f, "b c.bin"))
                .collect()
        },
    );
}

#[test]
fn a_data_file_truncated_between_runs_has_the_lost_pieces_fetched_again() {
    // Cut inside a piece, so the piece across the cut is partly good and must fail too.
    let cut = |f: &Fixture| f.payload.files[file_index(f, "a.bin")].1 / 2 + 100;
    damage_between_runs(
        |f| {
            let file = OpenOptions::new()
                .write(true)
                .open(data_path(f, file_index(f, "a.bin")))
                .expect("open");
            file.set_len(cut(f)).expect("truncate");
        },
        "data file changed size since the last run",
        |f| {
            // Every piece holding a byte of a.bin past the cut.
            let layout = &f.meta.info.layout;
            let a = file_index(f, "a.bin");
            layout
                .pieces()
                .filter(|&p| {
                    layout
                        .piece_spans(p)
                        .iter()
                        .any(|s| s.file == a && s.file_offset + u64::from(s.len) > cut(f))
                })
                .map(|p| p.get())
                .collect()
        },
    );
}

// --- 4. damaged or foreign resume files --------------------------------------------------------

/// Pieces spoilt on disk before each resume-file test.
const SPOILT: [u32; 3] = [0, 6, 11];

/// Sets up data with the pieces in [`SPOILT`] spoilt (sizes and times unchanged) and a
/// genuine resume file from a run that found the rest good; `make_bad` turns the genuine
/// resume file into the bad one. Then `get` must ignore it with a warning, check every
/// piece, fetch exactly the spoilt ones and end byte-identical.
fn bad_resume_file_is_ignored(make_bad: impl FnOnce(&Fixture, Vec<u8>) -> Vec<u8>) {
    let f = fixture(true, 0, 15, None);
    copy_payload(&f);
    spoil(&f, &SPOILT);
    let earlier = run(get_command(&f.torrent, &f.out, &[], None));
    assert_exit(&earlier, 7);
    let claims = assert_claims_hold(&f.meta, &f.out, "after the earlier run");
    assert_eq!(claims.len(), all_pieces(&f.meta).len() - SPOILT.len());

    let path = resume_file(&f.meta, &f.out);
    let genuine = fs::read(&path).expect("resume file");
    fs::write(&path, make_bad(&f, genuine)).expect("writing the bad resume file");

    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    let output = run(get_command(&f.torrent, &f.out, &[&seeder], None));
    let err = stderr(&output);
    assert_exit(&output, 0);
    assert!(
        err.contains("ignoring resume file"),
        "no warning about the resume file:\n{err}"
    );
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert_eq!(
        fetched(&output),
        bytes_of(&f.meta, &SPOILT),
        "not exactly the spoilt pieces were fetched:\n{err}"
    );
    assert_claims_hold(&f.meta, &f.out, "after the run");
}

#[test]
fn a_garbage_resume_file_is_ignored_with_a_warning_and_the_data_rechecked() {
    bad_resume_file_is_ignored(|_, _| {
        let mut rng = SmallRng::seed_from_u64(6);
        (0..4096).map(|_| rng.random()).collect()
    });
}

#[test]
fn a_truncated_resume_file_is_ignored_with_a_warning_and_the_data_rechecked() {
    bad_resume_file_is_ignored(|_, genuine| genuine[..genuine.len() / 2].to_vec());
}

/// Valid JSON of the right shape, with the file sizes and times of the disk as they are,
/// claiming every piece: the three spoilt ones are not on disk.
#[test]
fn a_resume_file_edited_to_claim_pieces_not_on_disk_is_ignored_and_the_data_rechecked() {
    bad_resume_file_is_ignored(|f, genuine| {
        let mut json: serde_json::Value = serde_json::from_slice(&genuine).expect("JSON");
        let last = f.meta.info.layout.num_pieces() - 1;
        json["verified"] = serde_json::json!([[0, last]]);
        serde_json::to_vec_pretty(&json).expect("JSON")
    });
}

/// A genuine resume file, but of another torrent of the same folder (other piece size,
/// so another info-hash and piece count), found under the name this one uses.
#[test]
fn a_resume_file_of_another_torrent_is_ignored_and_the_data_rechecked() {
    bad_resume_file_is_ignored(|f, _| {
        let other = f.tmp.path().join("other.torrent");
        make_torrent(&f.payload.root(), &other, 16, &[]);
        assert_ne!(read_metainfo(&other).info_hash, f.meta.info_hash);
        let path = resume_file(&f.meta, &f.out);
        let ours = fs::read(&path).expect("resume file");
        let run_other = run(get_command(&other, &f.out, &[], None));
        assert_exit(&run_other, 7);
        let theirs = fs::read(&path).expect("the other torrent's resume file");
        assert_ne!(
            theirs, ours,
            "the other torrent wrote no resume file of its own"
        );
        theirs
    });
}

// --- 5. kill -9 at random moments ----------------------------------------------------------

/// How a round of the kill test picks its moment.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the start: start-up (open, check) for short delays, download after.
    Delay(Duration),
    /// The moment the resume file's temporary copy appears: inside a save, between its
    /// creation and the rename over the old file.
    ResumeWrite,
}

/// Kills `get` with SIGKILL over and over at random moments (a seeded RNG; the seed is
/// printed and can be replayed with `FAULTS_KILL_SEED`), each round restarting the same
/// command on what the last one left. After every kill the resume file, if there is one,
/// must be accepted by the engine's own reader and claim only pieces that pass their hash;
/// the final run must finish byte-identical. Some rounds are aimed at the resume-file
/// write itself; a temporary file left behind by the kill shows the aim was good.
#[test]
fn kill_9_at_random_moments_never_leaves_a_resume_file_claiming_a_bad_piece() {
    const ROUNDS: usize = 20;
    let seed = std::env::var("FAULTS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("kill -9 test: seed {seed} (replay with FAULTS_KILL_SEED={seed})");
    let mut rng = SmallRng::seed_from_u64(seed);

    // Small pieces, so a run is killed with pieces in every state; a rate-limited seeder,
    // so the download outlasts the rounds and a run can be killed at every stage.
    let f = fixture(false, 8 * 1024 * 1024, 15, None);
    let seeder = LtSeeder::start(&f.torrent, &f.payload.dir, direct(Some(256 * 1024)));
    let tmp_copy = {
        let mut name = resume_file(&f.meta, &f.out).into_os_string();
        name.push(".tmp");
        PathBuf::from(name)
    };
    let logs = f.tmp.path().join("logs");
    fs::create_dir_all(&logs).expect("mkdir logs");

    // Rounds aimed at a save that saw one begin, and kills that left a save unfinished.
    let (mut aimed, mut mid_write, mut finished) = (0, 0, 0);
    for round in 0..ROUNDS {
        // Every fourth round is aimed at a save; the others fall where the RNG says.
        let at = if round % 4 == 1 {
            KillAt::ResumeWrite
        } else if rng.random_bool(0.4) {
            KillAt::Delay(Duration::from_millis(rng.random_range(0..300)))
        } else {
            KillAt::Delay(Duration::from_millis(rng.random_range(300..2000)))
        };
        let mut cmd = get_command(&f.torrent, &f.out, &[&seeder], None);
        let log = File::create(logs.join(format!("round-{round}.log"))).expect("log file");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        // A temporary file an earlier round left is not this round's evidence.
        let tmp_stamp = || fs::metadata(&tmp_copy).and_then(|m| m.modified()).ok();
        let tmp_before = tmp_stamp();
        let mut child = ChildGuard::spawn(cmd, "torrent-actors get");
        let started = Instant::now();
        match at {
            KillAt::Delay(delay) => {
                while started.elapsed() < delay && child.try_status().is_none() {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            KillAt::ResumeWrite => {
                // A save comes soon after start-up (pieces found by the check are
                // recorded at once) and then every few seconds while pieces arrive.
                while tmp_stamp() == tmp_before
                    && started.elapsed() < Duration::from_secs(8)
                    && child.try_status().is_none()
                {
                    // The save's temporary file lives for its write, sync and rename:
                    // milliseconds on a real disk, so a fine poll sees it.
                    std::thread::sleep(Duration::from_micros(100));
                }
                if tmp_stamp() != tmp_before {
                    aimed += 1;
                }
            }
        }
        let ended_by_itself = child.try_status();
        let status = child.kill();
        let killed_mid_save = ended_by_itself.is_none() && {
            let after = tmp_stamp();
            after.is_some() && after != tmp_before
        };
        let context = || {
            format!(
                "seed {seed}, round {round} ({at:?}), get's log:\n{}",
                fs::read_to_string(logs.join(format!("round-{round}.log"))).unwrap_or_default()
            )
        };
        if let Some(status) = ended_by_itself {
            assert!(
                status.success(),
                "get failed on its own ({status}); {}",
                context()
            );
            finished += 1;
        } else {
            assert!(status.is_some(), "get could not be reaped; {}", context());
            if killed_mid_save {
                mid_write += 1;
            }
        }
        if let Ok(bytes) = fs::read(resume_file(&f.meta, &f.out)) {
            if let Err(e) = ResumeData::parse(&bytes, f.meta.info_hash, &f.meta.info.layout) {
                panic!(
                    "the resume file is not readable after a kill ({e}); {}",
                    context()
                );
            }
        }
        let claims = claimed(&f.meta, &f.out).unwrap_or_default();
        let bad: Vec<u32> = claims
            .iter()
            .copied()
            .filter(|&n| !piece_ok(&f.meta, &f.out, n))
            .collect();
        assert!(
            bad.is_empty(),
            "after the kill the resume file claims pieces {bad:?} that fail their hash; {}",
            context()
        );
        eprintln!(
            "round {round}: {at:?}, {} pieces claimed{}",
            claims.len(),
            match ended_by_itself {
                Some(_) => ", finished before the kill".to_string(),
                None if killed_mid_save => ", killed inside a resume-file save".to_string(),
                None => String::new(),
            }
        );
    }
    eprintln!(
        "kill -9 test: {ROUNDS} rounds, {aimed} aimed at a resume-file save as it began, \
         {mid_write} killed inside one, {finished} finished first"
    );

    // The rest comes from an unlimited seeder, so the test does not wait on the slow one.
    let fast = LtSeeder::start(&f.torrent, &f.payload.dir, direct(None));
    let last = run(get_command(&f.torrent, &f.out, &[&seeder, &fast], None));
    assert_exit(&last, 0);
    assert_same_files(&f.payload.dir, &f.out, &f.payload.files);
    assert_eq!(
        claimed(&f.meta, &f.out),
        Some(all_pieces(&f.meta)),
        "the finished download's resume file does not claim every piece"
    );
    assert_clean_end(&f.out);
    // The aim is what makes "during the resume-file write" a tested moment rather than
    // a hope; a kill is sent within a fraction of a millisecond of the save's start.
    assert!(
        aimed > 0 && mid_write > 0,
        "seed {seed}: {aimed} rounds saw a save begin, {mid_write} kills landed inside one"
    );
}
