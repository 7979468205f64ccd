//! Torrent files from outside the crate: every hostile file in `tests/corpus` must be
//! refused with its own exact error, both by `Metainfo::from_bytes` and by the
//! `torrent-actors info` command, and valid torrents built here must come out with the
//! files, pieces and file spans they describe.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use sha1::{Digest, Sha1};
use torrent_actors::bencode::{self, BValue};
use torrent_actors::layout::{FileSpan, BLOCK_SIZE};
use torrent_actors::metainfo::{Info, Metainfo, MetainfoError, MAX_COMPONENT_BYTES};

/// The folder holding the hostile files and `expected.tsv`.
fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// One hostile file and the error text it must produce.
pub(crate) struct Case {
    pub(crate) path: PathBuf,
    pub(crate) expected: String,
}

/// Reads `expected.tsv` and checks that it and the folder list the same files, so a case
/// cannot be added on one side and forgotten on the other.
pub(crate) fn corpus() -> Vec<Case> {
    let dir = corpus_dir();
    let table = fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv is readable");
    let mut expected = BTreeMap::new();
    for (n, line) in table.lines().enumerate() {
        let (name, text) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("expected.tsv line {} has no tab: {line:?}", n + 1));
        assert!(!text.is_empty(), "{name}: empty expected text");
        let previous = expected.insert(name.to_string(), text.to_string());
        assert!(previous.is_none(), "{name} is listed twice in expected.tsv");
    }

    let on_disk: Vec<String> = fs::read_dir(&dir)
        .expect("the corpus folder is readable")
        .map(|e| e.expect("a readable folder entry").file_name())
        .map(|n| n.into_string().expect("corpus file names are UTF-8"))
        .filter(|n| n.ends_with(".torrent"))
        .collect();
    let unlisted: Vec<&String> = on_disk
        .iter()
        .filter(|n| !expected.contains_key(*n))
        .collect();
    assert!(
        unlisted.is_empty(),
        "corpus files missing from expected.tsv: {unlisted:?}"
    );
    let missing: Vec<&String> = expected.keys().filter(|n| !on_disk.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "expected.tsv names files that do not exist: {missing:?}"
    );

    expected
        .into_iter()
        .map(|(name, expected)| Case {
            path: dir.join(name),
            expected,
        })
        .collect()
}

#[test]
fn corpus_is_large_and_every_case_has_its_own_error() {
    let cases = corpus();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut texts: Vec<&str> = cases.iter().map(|c| c.expected.as_str()).collect();
    texts.sort_unstable();
    let before = texts.len();
    texts.dedup();
    assert_eq!(
        texts.len(),
        before,
        "two corpus cases expect the same error"
    );
}

#[test]
fn every_corpus_file_is_refused_with_its_exact_error() {
    let mut wrong = Vec::new();
    for case in corpus() {
        let bytes = fs::read(&case.path).expect("corpus file is readable");
        match Metainfo::from_bytes(&bytes) {
            Ok(m) => wrong.push(format!(
                "{}: accepted as {:?}",
                case.path.display(),
                m.info.name
            )),
            Err(e) if e.to_string() != case.expected => wrong.push(format!(
                "{}:\n   got: {e}\n  want: {}",
                case.path.display(),
                case.expected
            )),
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn info_command_reports_each_corpus_file_as_invalid_on_one_line_with_exit_code_4() {
    let mut wrong = Vec::new();
    for case in corpus() {
        let out = Command::new(env!("CARGO_BIN_EXE_torrent-actors"))
            .arg("info")
            .arg(&case.path)
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!(
            "error: invalid torrent {}: {}\n",
            case.path.display(),
            case.expected
        );
        if out.status.code() != Some(4) || stderr != want || !out.stdout.is_empty() {
            wrong.push(format!(
                "{}: status {:?}, stdout {} bytes\n   got: {stderr:?}\n  want: {want:?}",
                case.path.display(),
                out.status.code(),
                out.stdout.len()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// Valid torrents, built here so each test shows exactly what it feeds in.

fn s(text: &str) -> BValue {
    BValue::string(text)
}

/// `n` distinct fake piece hashes.
fn hashes(n: usize) -> BValue {
    BValue::Bytes((0..n * 20).map(|i| (i % 251) as u8).collect())
}

fn file(length: i64, path: &[&str]) -> BValue {
    BValue::dict([
        ("length", BValue::Int(length)),
        ("path", BValue::List(path.iter().map(|p| s(p)).collect())),
    ])
}

fn multi_info(name: &str, piece_length: i64, files: Vec<BValue>, pieces: usize) -> BValue {
    BValue::dict([
        ("name", s(name)),
        ("piece length", BValue::Int(piece_length)),
        ("files", BValue::List(files)),
        ("pieces", hashes(pieces)),
    ])
}

fn torrent(info: BValue) -> Vec<u8> {
    BValue::dict([
        ("announce", s("http://tracker.invalid/announce")),
        ("info", info),
    ])
    .encode()
}

#[test]
fn single_file_torrent_is_one_file_named_after_the_torrent() {
    let info = BValue::dict([
        ("name", s("disk.img")),
        ("piece length", BValue::Int(32 * 1024)),
        ("length", BValue::Int(100_000)),
        ("pieces", hashes(4)),
    ]);
    let m = Metainfo::from_bytes(&torrent(info)).expect("a valid torrent");
    let layout = &m.info.layout;
    assert_eq!(m.info.name, "disk.img");
    assert_eq!(layout.total_length(), 100_000);
    assert_eq!(layout.piece_length(), 32 * 1024);
    assert_eq!(layout.num_pieces(), 4);
    assert_eq!(layout.files().len(), 1);
    assert_eq!(layout.files()[0].path.display(), "disk.img");
    assert_eq!(layout.files()[0].offset, 0);
    let last = layout.piece(3).expect("piece 3 exists");
    assert_eq!(layout.piece_len(last), 100_000 - 3 * 32 * 1024);
    assert!(layout.piece(4).is_none());
    assert_eq!(m.trackers, [["http://tracker.invalid/announce"]]);
}

#[test]
fn multi_file_torrent_lays_files_end_to_end_under_its_folder() {
    let files = vec![
        file(30_000, &["disc1", "track01.flac"]),
        file(0, &["empty.txt"]),
        file(10_000, &["cover.jpg"]),
    ];
    let m = Metainfo::from_bytes(&torrent(multi_info("album", 16384, files, 3))).unwrap();
    let shown: Vec<(String, u64, u64)> = m
        .info
        .layout
        .files()
        .iter()
        .map(|f| (f.path.display(), f.offset, f.length))
        .collect();
    assert_eq!(
        shown,
        [
            ("album/disc1/track01.flac".to_string(), 0, 30_000),
            ("album/empty.txt".to_string(), 30_000, 0),
            ("album/cover.jpg".to_string(), 30_000, 10_000),
        ]
    );
    assert_eq!(m.info.layout.total_length(), 40_000);
}

#[test]
fn piece_across_a_file_boundary_splits_into_spans_that_skip_empty_files() {
    let files = vec![
        file(30_000, &["a"]),
        file(0, &["empty"]),
        file(10_000, &["b"]),
    ];
    let m = Metainfo::from_bytes(&torrent(multi_info("x", 16384, files, 3))).unwrap();
    let layout = &m.info.layout;
    let second = layout.piece(1).unwrap();
    assert_eq!(
        layout.piece_spans(second),
        [
            FileSpan {
                file: 0,
                file_offset: 16384,
                piece_offset: 0,
                len: 30_000 - 16384,
            },
            FileSpan {
                file: 2,
                file_offset: 0,
                piece_offset: 30_000 - 16384,
                len: 2 * 16384 - 30_000,
            },
        ]
    );
    assert_eq!(layout.file_pieces(0), 0..2);
    assert_eq!(layout.file_pieces(1), 0..0);
    assert_eq!(layout.file_pieces(2), 1..3);
    let last = layout.piece(2).unwrap();
    assert_eq!(
        layout.blocks(last).collect::<Vec<_>>(),
        [(0, 40_000 - 2 * 16384)]
    );
    assert_eq!(layout.blocks(second).collect::<Vec<_>>(), [(0, BLOCK_SIZE)]);
}

#[test]
fn info_hash_is_sha1_of_the_info_bytes_as_written_even_when_keys_are_unsorted() {
    // Keys out of order: a re-encoding would sort them and change the hash.
    let info: &[u8] =
        b"d4:name3:abc6:lengthi5e12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    let mut bytes = b"d4:info".to_vec();
    bytes.extend_from_slice(info);
    bytes.push(b'e');
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.info_bytes, info);
    let digest: [u8; 20] = Sha1::digest(info).into();
    assert_eq!(m.info_hash.0, digest);
    assert_ne!(
        bencode::decode(info).unwrap().to_owned_value().encode(),
        info,
        "the sample must really be non-canonical"
    );
}

#[test]
fn info_parsed_from_the_kept_info_bytes_equals_the_torrents_info() {
    let files = vec![file(30_000, &["a"]), file(10_000, &["b"])];
    let m = Metainfo::from_bytes(&torrent(multi_info("x", 16384, files, 3))).unwrap();
    assert_eq!(Info::from_bytes(&m.info_bytes).unwrap(), m.info);
}

#[test]
fn duplicate_file_paths_are_renamed_rather_than_overwritten() {
    let files = vec![
        file(10, &["same.txt"]),
        file(10, &["same.txt"]),
        file(10, &["dir"]),
        file(10, &["dir", "inner"]),
    ];
    let m = Metainfo::from_bytes(&torrent(multi_info("x", 16384, files, 1))).unwrap();
    let shown: Vec<String> = m
        .info
        .layout
        .files()
        .iter()
        .map(|f| f.path.display())
        .collect();
    assert_eq!(
        shown,
        ["x/same.txt", "x/same.1.txt", "x/dir.1", "x/dir/inner"]
    );
}

#[test]
fn accepted_paths_joined_under_a_root_stay_inside_it() {
    let files = vec![
        file(10, &["CON"]),
        file(10, &["...", "a"]),
        file(10, &["..x"]),
        file(10, &[&"é".repeat(300)]),
    ];
    let m = Metainfo::from_bytes(&torrent(multi_info("x", 16384, files, 1))).unwrap();
    let root = Path::new("/srv/downloads");
    for f in m.info.layout.files() {
        let joined = f.path.under(root);
        let rest = joined.strip_prefix(root).expect("stays under the root");
        assert!(rest.components().all(|c| matches!(c, Component::Normal(_))));
        assert!(f
            .path
            .components()
            .iter()
            .all(|c| c.len() <= MAX_COMPONENT_BYTES));
    }
}

/// Two files with the same 255-byte name whose extension is 254 bytes long. Renaming the
/// second one computes `255 - suffix - extension` in `SafePath::with_suffix`, which
/// underflows: a panic in debug builds (and in the fuzzer), and in release a renamed
/// component of 257 bytes, over the 255-byte limit the module promises.
#[test]
fn duplicate_names_with_very_long_extensions_are_renamed_within_the_length_limit() {
    let name = format!("a.{}", "b".repeat(253));
    assert_eq!(name.len(), MAX_COMPONENT_BYTES);
    let files = vec![file(10, &[&name]), file(10, &[&name])];
    let bytes = torrent(multi_info("x", 16384, files, 1));
    let m = Metainfo::from_bytes(&bytes).expect("a valid torrent");
    let files = m.info.layout.files();
    assert_ne!(files[0].path, files[1].path);
    for f in files {
        for c in f.path.components() {
            assert!(c.len() <= MAX_COMPONENT_BYTES, "{} bytes", c.len());
        }
    }
}

#[test]
fn refusals_are_typed_errors_not_just_text() {
    let info = BValue::dict([
        ("name", s("a")),
        ("piece length", BValue::Int(16384)),
        ("length", BValue::Int(1)),
        ("pieces", hashes(2)),
    ]);
    assert_eq!(
        Metainfo::from_bytes(&torrent(info)),
        Err(MetainfoError::PieceCountMismatch {
            expected: 1,
            found: 2
        })
    );
}

/// A 255-byte name whose stem is a Windows device name (`CON.xxx...`) passes the length
/// check, then gets its `_` suffix in `check_component`, ending up 256 bytes long: the
/// repair runs after the shortening instead of before it.
#[test]
fn reserved_device_names_at_the_length_limit_stay_within_it() {
    let name = format!("CON.{}", "x".repeat(251));
    assert_eq!(name.len(), MAX_COMPONENT_BYTES);
    let files = vec![file(10, &[&name])];
    let m = Metainfo::from_bytes(&torrent(multi_info("x", 16384, files, 1))).unwrap();
    let last = m.info.layout.files()[0].path.components()[1].clone();
    assert!(last.len() <= MAX_COMPONENT_BYTES, "{} bytes", last.len());
}
