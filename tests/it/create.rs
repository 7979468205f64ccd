//! `torrent-actors create` against the tools people make torrents with: for the same files
//! and settings, our info dictionary must be byte for byte libtorrent 2.0's
//! (`create_torrent`: v1-only, v2-only and its default hybrid) and, for v1, mktorrent's.
//! The same bytes mean the same info-hash, so torrents made by either tool join the
//! same swarm. Then a torrent we made, seeded by libtorrent, is downloaded by our `get`,
//! and hostile or impossible inputs get their typed errors.
//!
//! Needs `mktorrent` and `/usr/bin/python3` with `python3-libtorrent` (`.ci/run`
//! installs both).

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use torrent_actors::metainfo::v2::V2Info;
use torrent_actors::metainfo::Metainfo;

use crate::support::{
    assert_same_files, info_bytes, lt_create, mktorrent_create, our_create, our_create_ok,
    run_until, run_within, top_level_raw, write_pattern, ChildGuard, LeechOpts, LtKind, LtLeecher,
    LtSeeder, SeedOpts,
};

const KIB: usize = 1024;

/// A folder with every shape of file that moves piece and block boundaries: nested
/// folders, an empty file between others, a file of exactly one piece, files ending in
/// the middle of a block, a file of several pieces plus a tail (a v2 piece layer whose
/// length is not a power of two), and `sub.txt` beside `sub/` (whole-path order puts it
/// first, v2's component order after). Returns the folder.
fn album(parent: &Path, piece: usize) -> PathBuf {
    let root = parent.join("album");
    write_pattern(&root.join("a b"), 5, 1);
    write_pattern(&root.join("a.txt"), 100, 2);
    write_pattern(&root.join("empty"), 0, 3);
    write_pattern(&root.join("one_piece.bin"), piece, 4);
    write_pattern(&root.join("mid_block.bin"), 3 * 16 * KIB + 5000, 5);
    write_pattern(&root.join("sub/deeper/big.bin"), 5 * piece + 777, 6);
    write_pattern(&root.join("sub/k"), 100, 7);
    write_pattern(&root.join("sub/zero"), 0, 8);
    write_pattern(&root.join("sub.txt"), 3, 9);
    write_pattern(&root.join("zz_last"), 12_345, 10);
    // Executable by its owner: libtorrent's v2 and hybrid mark it `attr` `x`.
    write_pattern(&root.join("sub/run.sh"), 40, 12);
    make_executable(&root.join("sub/run.sh"));
    root
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o750)).unwrap();
}

/// One file ending in the middle of a block, over several pieces; executable, so that
/// a single file's `attr` is compared too.
fn song(parent: &Path, piece: usize) -> PathBuf {
    let path = parent.join("song.bin");
    write_pattern(&path, 3 * piece + 12_345, 11);
    make_executable(&path);
    path
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Runs our `create` with `flags` on `source` into `dir/NAME`, with no date.
fn ours(flags: &[&str], source: &Path, out: &Path) {
    let mut args = flags.to_vec();
    args.extend(["--no-date", s(source), "-o", s(out)]);
    our_create_ok(&args);
}

fn assert_same_info(ours: &Path, theirs: &Path, what: &str) {
    let (a, b) = (info_bytes(ours), info_bytes(theirs));
    assert!(
        a == b,
        "{what}: our info dictionary differs from the other tool's\nours:   {}\ntheirs: {}",
        String::from_utf8_lossy(&a),
        String::from_utf8_lossy(&b)
    );
}

#[test]
fn v1_single_file_and_folder_match_libtorrent_and_mktorrent() {
    let tmp = tempfile::tempdir().unwrap();
    let piece = 32 * KIB;
    for (source, name) in [
        (song(tmp.path(), piece), "song"),
        (album(tmp.path(), piece), "album"),
    ] {
        let (o, l, m) = (
            tmp.path().join(format!("{name}-ours.torrent")),
            tmp.path().join(format!("{name}-lt.torrent")),
            tmp.path().join(format!("{name}-mk.torrent")),
        );
        ours(&["--v1", "--piece-size", "32KiB"], &source, &o);
        lt_create(LtKind::V1, &source, &l, piece as u64, false);
        mktorrent_create(&source, &m, 15, false);
        assert_same_info(&o, &l, &format!("{name} v1 against libtorrent"));
        assert_same_info(&o, &m, &format!("{name} v1 against mktorrent"));
        assert_eq!(top_level_raw(&o, "piece layers"), None);
    }
}

#[test]
fn v1_private_matches_mktorrent_and_libtorrent() {
    let tmp = tempfile::tempdir().unwrap();
    let source = album(tmp.path(), 64 * KIB);
    let (o, l, m) = (
        tmp.path().join("ours.torrent"),
        tmp.path().join("lt.torrent"),
        tmp.path().join("mk.torrent"),
    );
    ours(&["--v1", "--private", "--piece-size", "64KiB"], &source, &o);
    lt_create(LtKind::V1, &source, &l, 64 * KIB as u64, true);
    mktorrent_create(&source, &m, 16, true);
    assert_same_info(&o, &l, "private v1 against libtorrent");
    assert_same_info(&o, &m, "private v1 against mktorrent");
}

#[test]
fn hybrid_matches_libtorrent_padding_files_and_piece_layers_included() {
    let tmp = tempfile::tempdir().unwrap();
    for piece in [16 * KIB, 64 * KIB] {
        let dir = tmp.path().join(format!("p{piece}"));
        for (source, name) in [(song(&dir, piece), "song"), (album(&dir, piece), "album")] {
            let (o, l) = (
                dir.join(format!("{name}-ours.torrent")),
                dir.join(format!("{name}-lt.torrent")),
            );
            // Hybrid is the default: no format flag.
            ours(&["--piece-size", &piece.to_string()], &source, &o);
            lt_create(LtKind::Hybrid, &source, &l, piece as u64, false);
            let what = format!("{name} hybrid, {piece}-byte pieces");
            assert_same_info(&o, &l, &what);
            assert_eq!(
                top_level_raw(&o, "piece layers"),
                top_level_raw(&l, "piece layers"),
                "{what}: piece layers differ"
            );
        }
    }
    // The folder's hybrid has padding files, and our reader takes them as padding.
    let meta = read(&tmp.path().join("p16384/album-ours.torrent"));
    assert!(meta.info.hybrid);
    assert!(meta.info.layout.files().iter().any(|f| f.padding));
}

#[test]
fn v2_matches_libtorrent_file_tree_and_piece_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let piece = 32 * KIB;
    for (source, name) in [
        (song(tmp.path(), piece), "song"),
        (album(tmp.path(), piece), "album"),
    ] {
        let (o, l) = (
            tmp.path().join(format!("{name}-ours.torrent")),
            tmp.path().join(format!("{name}-lt.torrent")),
        );
        ours(&["--v2", "--piece-size", "32KiB"], &source, &o);
        lt_create(LtKind::V2, &source, &l, piece as u64, false);
        assert_same_info(&o, &l, &format!("{name} v2"));
        let layers = top_level_raw(&o, "piece layers");
        assert!(
            layers.is_some(),
            "{name}: a file of 4+ pieces needs a piece layer"
        );
        assert_eq!(
            layers,
            top_level_raw(&l, "piece layers"),
            "{name} v2: piece layers differ"
        );
        // libtorrent's torrent passes our v2 checks: every layer hashes to its root.
        let theirs = V2Info::from_torrent(&fs::read(&l).unwrap())
            .unwrap_or_else(|e| panic!("{name}: libtorrent's v2 torrent refused: {e}"));
        assert!(theirs.files.iter().any(|f| !f.piece_layer.is_empty()));
    }
}

#[test]
fn info_shows_a_hybrids_v2_hash_and_refuses_a_piece_layer_that_does_not_hash_to_its_root() {
    let tmp = tempfile::tempdir().unwrap();
    let source = album(tmp.path(), 16 * KIB);
    let torrent = tmp.path().join("album.torrent");
    let made = our_create_ok(&["--piece-size", "16KiB", s(&source), "-o", s(&torrent)]);
    let made = String::from_utf8_lossy(&made.stdout).to_string();
    let v2_hash = made
        .lines()
        .find_map(|l| l.strip_prefix("info-hash v2: "))
        .unwrap_or_else(|| panic!("no v2 hash in {made}"))
        .to_string();
    let info = |t: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
        cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
            .arg("info")
            .arg(t);
        run_until(cmd, Duration::from_secs(30)).expect("info ends")
    };
    let out = info(&torrent);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains(&format!("v2 hash:     {v2_hash}")), "{text}");
    assert!(
        text.contains("with a piece layer checked against its root"),
        "{text}"
    );

    // `piece layers` sorts last, so the byte before the two closing `e`s is the last
    // layer's last byte; the info dictionary, and so the v1 torrent, is untouched.
    let mut bytes = fs::read(&torrent).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0xff;
    let broken = tmp.path().join("broken.torrent");
    fs::write(&broken, bytes).unwrap();
    // A hybrid joins the v2 swarm too, so a v2 part that does not hold together refuses
    // the torrent, as libtorrent does, with the reason on one line.
    let out = info(&broken);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.starts_with(&format!(
            "error: invalid torrent {}: piece layer of",
            broken.display()
        )) && text.contains("do not add up")
            && text.lines().count() == 1,
        "{text}"
    );
}

#[test]
fn trackers_web_seeds_and_comment_land_outside_the_info_dictionary() {
    let tmp = tempfile::tempdir().unwrap();
    let source = song(tmp.path(), 16 * KIB);
    let (plain, dressed) = (tmp.path().join("a.torrent"), tmp.path().join("b.torrent"));
    ours(&["--v1"], &source, &plain);
    ours(
        &[
            "--v1",
            "-t",
            "http://127.0.0.1:6969/announce",
            "-t",
            "udp://127.0.0.1:6969",
            "-w",
            "http://127.0.0.1:8080/files/",
            "--comment",
            "hello",
        ],
        &source,
        &dressed,
    );
    assert_eq!(info_bytes(&plain), info_bytes(&dressed));
    // Written as any new file is (0666 less the umask), not 0600 like a temporary file.
    use std::os::unix::fs::PermissionsExt;
    let reference = tmp.path().join("reference");
    fs::write(&reference, b"").unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&plain), mode(&reference));
    let meta = read(&dressed);
    assert_eq!(
        meta.all_trackers().collect::<Vec<_>>(),
        ["http://127.0.0.1:6969/announce", "udp://127.0.0.1:6969"]
    );
    assert_eq!(meta.web_seeds.len(), 1);
    assert_eq!(meta.comment.as_deref(), Some("hello"));
    assert!(meta
        .created_by
        .as_deref()
        .is_some_and(|c| c.starts_with("torrent-actors")));
}

fn read(torrent: &Path) -> Metainfo {
    Metainfo::from_bytes(&fs::read(torrent).unwrap()).expect("our own torrent parses")
}

/// Seeds `torrent` (ours) from `data` with libtorrent and downloads it with our `get`.
fn lt_seeds_our_torrent_to_get(format_flag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let source = album(&seed_dir, 32 * KIB);
    let torrent = tmp.path().join("album.torrent");
    ours(&[format_flag, "--piece-size", "32KiB"], &source, &torrent);
    let seeder = LtSeeder::start(&torrent, &seed_dir, SeedOpts::direct());
    let out = tmp.path().join("out");
    let mut get = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    get.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--bind", "127.0.0.1", "--port", "0", "--no-dht"])
        .args(["--peer-timeout", "60", "--peer"])
        .arg(seeder.addr().to_string())
        .arg("-o")
        .arg(&out)
        .arg(&torrent);
    let limit = Duration::from_secs(120);
    let output = run_within(get, limit);
    assert!(
        output.status.success(),
        "get failed ({}):\n{}{}\nseeder:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        seeder.log()
    );
    let files: Vec<(PathBuf, u64)> = read(&torrent)
        .info
        .layout
        .files()
        .iter()
        .filter(|f| !f.padding)
        .map(|f| (PathBuf::from(f.path.display()), f.length))
        .collect();
    assert_same_files(&seed_dir, &out, &files);
}

#[test]
fn our_v1_torrent_seeded_by_libtorrent_downloads_with_get() {
    lt_seeds_our_torrent_to_get("--v1");
}

#[test]
fn our_hybrid_torrent_seeded_by_libtorrent_downloads_with_get() {
    lt_seeds_our_torrent_to_get("--hybrid");
}

/// Our `seed` serves a torrent we made from the folder we made it of, and a libtorrent
/// leecher downloads it all.
fn libtorrent_leeches_our_torrent_from_our_seed(format_flag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let source = album(&seed_dir, 32 * KIB);
    let torrent = tmp.path().join("album.torrent");
    ours(&[format_flag, "--piece-size", "32KiB"], &source, &torrent);
    let stdout_path = tmp.path().join("seed.out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args([
            "seed",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dht",
            "-d",
        ])
        .arg(&seed_dir)
        .arg(&torrent)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(tmp.path().join("seed.err")).unwrap());
    let _seed = ChildGuard::spawn(cmd, "torrent-actors seed");
    let report = || {
        format!(
            "{}{}",
            fs::read_to_string(&stdout_path).unwrap_or_default(),
            fs::read_to_string(tmp.path().join("seed.err")).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr: SocketAddr = loop {
        let out = fs::read_to_string(&stdout_path).unwrap_or_default();
        if let Some(addr) = out.lines().find_map(|l| {
            let (_, addr) = l.strip_prefix("seeding ")?.rsplit_once(" on ")?;
            addr.trim().parse().ok()
        }) {
            break addr;
        }
        assert!(Instant::now() < deadline, "never seeding:\n{}", report());
        thread::sleep(Duration::from_millis(50));
    };
    let out = tmp.path().join("leech");
    let outcome = LtLeecher::run(
        &torrent,
        &out,
        &LeechOpts {
            peers: vec![addr],
            ..LeechOpts::new(Duration::from_secs(90))
        },
    );
    if !outcome.finished {
        panic!("{outcome:?}\nour seed:\n{}", report());
    }
    let files: Vec<(PathBuf, u64)> = read(&torrent)
        .info
        .layout
        .files()
        .iter()
        .filter(|f| !f.padding)
        .map(|f| (PathBuf::from(f.path.display()), f.length))
        .collect();
    assert_same_files(&seed_dir, &out, &files);
}

#[test]
fn libtorrent_leeches_our_v1_torrent_from_our_seed() {
    libtorrent_leeches_our_torrent_from_our_seed("--v1");
}

#[test]
fn libtorrent_leeches_our_hybrid_torrent_from_our_seed() {
    libtorrent_leeches_our_torrent_from_our_seed("--hybrid");
}

#[test]
fn libtorrent_leeches_our_v2_torrent_from_our_seed() {
    libtorrent_leeches_our_torrent_from_our_seed("--v2");
}

#[test]
fn symlink_out_of_the_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let source = album(tmp.path(), 16 * KIB);
    write_pattern(&tmp.path().join("secret"), 10, 1);
    symlink(tmp.path().join("secret"), source.join("sub/innocent")).unwrap();
    let out = tmp.path().join("x.torrent");
    let result = our_create(&[s(&source), "-o", s(&out)]);
    assert_eq!(result.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("outside"), "{stderr}");
    assert!(!out.exists(), "no torrent is written");
    // A relative link climbing out with `..` is the same escape.
    fs::remove_file(source.join("sub/innocent")).unwrap();
    symlink("../../secret", source.join("sub/innocent")).unwrap();
    let result = our_create(&[s(&source), "-o", s(&out)]);
    assert_eq!(result.status.code(), Some(2), "{result:?}");
}

#[test]
fn symlink_to_a_file_inside_is_followed_like_a_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let linked = album(&tmp.path().join("l"), 16 * KIB);
    let copied = album(&tmp.path().join("c"), 16 * KIB);
    symlink("../a.txt", linked.join("sub/link")).unwrap();
    fs::copy(copied.join("a.txt"), copied.join("sub/link")).unwrap();
    let (a, b) = (tmp.path().join("l.torrent"), tmp.path().join("c.torrent"));
    ours(&[], &linked, &a);
    ours(&[], &copied, &b);
    assert_eq!(info_bytes(&a), info_bytes(&b));
}

#[test]
fn symlink_to_a_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let source = album(tmp.path(), 16 * KIB);
    // A loop: following it would never end.
    symlink("..", source.join("sub/loop")).unwrap();
    let result = our_create(&[s(&source), "-o", s(&tmp.path().join("x.torrent"))]);
    assert_eq!(result.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&result.stderr).contains("symlink to a folder"));
}

#[test]
fn fifo_is_refused_rather_than_read_forever() {
    let tmp = tempfile::tempdir().unwrap();
    let source = album(tmp.path(), 16 * KIB);
    let made = Command::new("mkfifo")
        .arg(source.join("pipe"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let result = our_create(&[s(&source), "-o", s(&tmp.path().join("x.torrent"))]);
    assert_eq!(result.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&result.stderr).contains("not a regular file"));
}

#[test]
fn empty_folder_and_folder_of_empty_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    fs::create_dir_all(empty.join("nested/deeper")).unwrap();
    let out = tmp.path().join("x.torrent");
    let result = our_create(&[s(&empty), "-o", s(&out)]);
    assert_eq!(result.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&result.stderr).contains("holds no files"));
    write_pattern(&empty.join("nested/zero"), 0, 0);
    let result = our_create(&[s(&empty), "-o", s(&out)]);
    assert_eq!(result.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&result.stderr).contains("no data"));
    assert!(!out.exists());
}

#[test]
fn piece_sizes_that_are_not_powers_of_two_from_16_kib_to_64_mib_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let source = song(tmp.path(), 16 * KIB);
    let out = tmp.path().join("x.torrent");
    for size in ["8KiB", "48KiB", "100000", "128MiB", "0"] {
        let result = our_create(&["--piece-size", size, s(&source), "-o", s(&out)]);
        assert_eq!(result.status.code(), Some(2), "{size}: {result:?}");
        assert!(
            String::from_utf8_lossy(&result.stderr).contains("not a power of two"),
            "{size}: {result:?}"
        );
    }
    assert!(!out.exists());
}

#[test]
fn existing_output_is_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let source = song(tmp.path(), 16 * KIB);
    let out = tmp.path().join("x.torrent");
    fs::write(&out, b"precious").unwrap();
    let result = our_create(&[s(&source), "-o", s(&out)]);
    assert_eq!(result.status.code(), Some(5));
    assert_eq!(fs::read(&out).unwrap(), b"precious");
}

#[test]
fn missing_input_exits_3_and_an_unwritable_output_exits_5_each_said_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let result = our_create(&[s(&missing), "-o", s(&tmp.path().join("x.torrent"))]);
    assert_eq!(result.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
    let source = song(tmp.path(), 16 * KIB);
    let out = tmp.path().join("no-such-folder/x.torrent");
    let result = our_create(&[s(&source), "-o", s(&out)]);
    assert_eq!(result.status.code(), Some(5), "{result:?}");
}
