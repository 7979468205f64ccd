use super::*;
use crate::bencode::BValue;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn s(x: &str) -> BValue {
    BValue::string(x)
}

fn hashes(n: usize) -> BValue {
    BValue::Bytes((0..n * 20).map(|i| i as u8).collect())
}

fn single(piece_length: i64, length: i64, pieces: usize) -> BValue {
    BValue::dict([
        ("name", s("file.bin")),
        ("piece length", BValue::Int(piece_length)),
        ("length", BValue::Int(length)),
        ("pieces", hashes(pieces)),
    ])
}

fn torrent(info: BValue) -> Vec<u8> {
    BValue::dict([
        ("announce", s("http://127.0.0.1:6969/announce")),
        ("info", info),
    ])
    .encode()
}

fn with(info: BValue, key: &str, value: BValue) -> BValue {
    let BValue::Dict(mut d) = info else {
        unreachable!()
    };
    d.insert(key.as_bytes().to_vec(), value);
    BValue::Dict(d)
}

fn without(info: BValue, key: &str) -> BValue {
    let BValue::Dict(mut d) = info else {
        unreachable!()
    };
    d.remove(key.as_bytes());
    BValue::Dict(d)
}

fn file(length: i64, path: &[&str]) -> BValue {
    BValue::dict([
        ("length", BValue::Int(length)),
        ("path", BValue::List(path.iter().map(|p| s(p)).collect())),
    ])
}

fn multi(files: Vec<BValue>, piece_length: i64, pieces: usize) -> BValue {
    BValue::dict([
        ("name", s("album")),
        ("piece length", BValue::Int(piece_length)),
        ("files", BValue::List(files)),
        ("pieces", hashes(pieces)),
    ])
}

fn parse(info: BValue) -> Result<Metainfo, MetainfoError> {
    Metainfo::from_bytes(&torrent(info))
}

#[test]
fn single_file_torrent_is_parsed() {
    let m = parse(single(16384, 40000, 3)).unwrap();
    assert_eq!(m.info.name, "file.bin");
    assert_eq!(m.info.layout.total_length(), 40000);
    assert_eq!(m.info.layout.num_pieces(), 3);
    assert_eq!(m.info.layout.files()[0].path.display(), "file.bin");
    assert_eq!(m.trackers, [["http://127.0.0.1:6969/announce"]]);
    assert!(!m.info.private);
    let last = m.info.layout.piece(2).unwrap();
    assert!(matches!(m.info.piece_check(last), PieceCheck::Sha1(h) if h[0] == 40));
}

#[test]
fn info_hash_is_sha1_of_the_original_info_bytes() {
    // Unsorted keys: a re-encoding would differ, the hash must not.
    let mut raw = b"d8:announce3:url4:infod".to_vec();
    raw.extend_from_slice(b"4:name1:x12:piece lengthi16384e6:lengthi5e6:pieces20:");
    raw.extend_from_slice(&[7u8; 20]);
    raw.extend_from_slice(b"ee");
    let m = Metainfo::from_bytes(&raw).unwrap();
    let start = b"d8:announce3:url4:info".len();
    let info_raw = &raw[start..raw.len() - 1];
    assert_eq!(m.info_bytes, info_raw);
    assert_eq!(m.info_hash.0, <[u8; 20]>::from(Sha1::digest(info_raw)));
}

#[test]
fn multi_file_torrent_puts_files_under_the_name() {
    let files = vec![
        file(5, &["a", "b.txt"]),
        file(0, &["empty"]),
        file(20, &["c"]),
    ];
    let m = parse(multi(files, 16, 2)).unwrap();
    let paths: Vec<_> = m
        .info
        .layout
        .files()
        .iter()
        .map(|f| f.path.display())
        .collect();
    assert_eq!(paths, ["album/a/b.txt", "album/empty", "album/c"]);
    assert_eq!(m.info.layout.files()[2].offset, 5);
}

#[test]
fn announce_list_tiers_replace_announce() {
    let info = single(16384, 1, 1);
    let bytes = BValue::dict([
        ("announce", s("http://ignored/announce")),
        (
            "announce-list",
            BValue::List(vec![
                BValue::List(vec![s("udp://127.0.0.1:1/a"), s("http://127.0.0.1:2/a")]),
                BValue::List(vec![]),
                BValue::List(vec![
                    s("http://127.0.0.1:2/a"),
                    BValue::Int(3),
                    s("http://127.0.0.1:3/a"),
                ]),
            ]),
        ),
        ("comment", s("hi")),
        ("created by", s("test")),
        ("creation date", BValue::Int(1_700_000_000)),
        ("info", info),
    ])
    .encode();
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(
        m.trackers,
        vec![
            vec![
                "udp://127.0.0.1:1/a".to_string(),
                "http://127.0.0.1:2/a".to_string()
            ],
            vec!["http://127.0.0.1:3/a".to_string()],
        ]
    );
    assert_eq!(m.comment.as_deref(), Some("hi"));
    assert_eq!(m.created_by.as_deref(), Some("test"));
    assert_eq!(m.creation_date, Some(1_700_000_000));
}

#[test]
fn private_flag_is_read() {
    assert!(
        parse(with(single(16384, 1, 1), "private", BValue::Int(1)))
            .unwrap()
            .info
            .private
    );
    assert!(
        !parse(with(single(16384, 1, 1), "private", BValue::Int(0)))
            .unwrap()
            .info
            .private
    );
}

#[test]
fn v2_only_info_alone_is_refused_and_hybrid_is_read_with_its_v2_part_checked() {
    let v2 = BValue::dict([
        ("name", s("x")),
        ("piece length", BValue::Int(16384)),
        ("meta version", BValue::Int(2)),
        ("file tree", BValue::dict([("x", BValue::dict::<&str>([]))])),
    ]);
    // No file in the tree: the v2 part itself is refused.
    assert_eq!(
        parse(v2.clone()),
        Err(MetainfoError::V2(v2::V2Error::EmptyTree))
    );
    // Bare info bytes (a magnet's metadata) cannot carry piece layers.
    assert_eq!(
        Info::from_bytes(&v2.encode()).map(|_| ()),
        Err(MetainfoError::V2Only)
    );
    // A hybrid's v2 part is checked too: an empty tree is refused, a matching one read.
    let hybrid = with(single(16384, 1, 1), "meta version", BValue::Int(2));
    assert_eq!(
        parse(with(hybrid.clone(), "file tree", BValue::dict::<&str>([]))),
        Err(MetainfoError::V2(v2::V2Error::EmptyTree))
    );
    let leaf = BValue::dict([(
        "",
        BValue::dict([
            ("length", BValue::Int(1)),
            ("pieces root", BValue::Bytes(vec![0; 32])),
        ]),
    )]);
    let tree = BValue::dict([("file.bin", leaf)]);
    let m = parse(with(hybrid, "file tree", tree)).unwrap();
    assert!(m.info.hybrid);
}

#[test]
fn padding_files_are_marked() {
    let mut pad = file(11, &[".pad", "11"]);
    if let BValue::Dict(d) = &mut pad {
        d.insert(b"attr".to_vec(), s("p"));
    }
    let m = parse(multi(vec![file(5, &["a"]), pad, file(16, &["b"])], 16, 2)).unwrap();
    let pads: Vec<bool> = m.info.layout.files().iter().map(|f| f.padding).collect();
    assert_eq!(pads, [false, true, false]);
}

#[test]
fn invalid_torrents_give_their_own_errors() {
    use MetainfoError::*;
    assert_eq!(
        parse(single(0, 1, 1)),
        Err(Layout(LayoutError::BadPieceLength(0)))
    );
    assert_eq!(
        parse(single(1 << 30, 1, 1)),
        Err(Layout(LayoutError::BadPieceLength(1 << 30)))
    );
    assert_eq!(
        parse(single(-5, 1, 1)),
        Err(Negative {
            field: "piece length",
            value: -5
        })
    );
    assert_eq!(
        parse(single(16384, -1, 1)),
        Err(Negative {
            field: "length",
            value: -1
        })
    );
    assert_eq!(parse(single(16384, 0, 0)), Err(Layout(LayoutError::Empty)));
    assert_eq!(
        parse(single(16384, 40000, 2)),
        Err(PieceCountMismatch {
            expected: 3,
            found: 2
        })
    );
    assert_eq!(
        parse(with(
            single(16384, 1, 1),
            "pieces",
            BValue::Bytes(vec![0; 21])
        )),
        Err(PiecesNotMultipleOf20(21))
    );
    assert_eq!(
        parse(without(single(16384, 1, 1), "pieces")),
        Err(MissingField("pieces"))
    );
    assert_eq!(
        parse(without(single(16384, 1, 1), "name")),
        Err(MissingField("name"))
    );
    assert_eq!(
        parse(without(single(16384, 1, 1), "length")),
        Err(MissingField("length"))
    );
    assert_eq!(
        parse(with(
            single(16384, 1, 1),
            "files",
            BValue::List(vec![file(1, &["a"])])
        )),
        Err(LengthAndFiles)
    );
    assert_eq!(parse(multi(vec![], 16, 0)), Err(NoFiles));
    assert!(matches!(
        parse(with(single(16384, 1, 1), "piece length", s("big"))),
        Err(WrongType {
            field: "piece length",
            expected: "an integer",
            found: "string",
            ..
        })
    ));
    assert_eq!(Metainfo::from_bytes(b"le"), Err(NotADictionary("torrent")));
    assert_eq!(Metainfo::from_bytes(b"de"), Err(MissingField("info")));
    assert_eq!(
        Metainfo::from_bytes(&BValue::dict([("info", BValue::Int(1))]).encode()),
        Err(NotADictionary("info"))
    );
}

#[test]
fn hostile_paths_are_refused() {
    use MetainfoError::*;
    let cases: [(&[&str], PathError); 5] = [
        (
            &["..", "..", "etc", "passwd"],
            PathError::Traversal("..".into()),
        ),
        (
            &["/etc/passwd"],
            PathError::BadCharacter("/etc/passwd".into()),
        ),
        (&["a", "", "b"], PathError::EmptyComponent),
        (&["a", "."], PathError::Traversal(".".into())),
        (&[], PathError::Empty),
    ];
    for (path, reason) in cases {
        assert_eq!(
            parse(multi(vec![file(1, &["ok"]), file(1, path)], 16, 1)),
            Err(BadPath { index: 1, reason }),
            "{path:?}"
        );
    }
    let bad_name = with(single(16384, 1, 1), "name", s(".."));
    assert!(matches!(parse(bad_name), Err(BadName { .. })));
}

#[test]
fn utf8_variants_are_preferred() {
    let info = with(single(16384, 1, 1), "name.utf-8", s("naïve.bin"));
    assert_eq!(parse(info).unwrap().info.name, "naïve.bin");
}

#[test]
fn duplicate_file_paths_are_renamed_not_overwritten() {
    let m = parse(multi(vec![file(1, &["a"]), file(1, &["a"])], 16, 1)).unwrap();
    let paths: Vec<_> = m
        .info
        .layout
        .files()
        .iter()
        .map(|f| f.path.display())
        .collect();
    assert_eq!(paths, ["album/a", "album/a.1"]);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Metainfo::from_bytes(&bytes);
    }

    /// A torrent whose paths are anything at all either is refused or lands every file
    /// inside the download folder.
    #[test]
    fn accepted_torrents_keep_every_file_inside_the_folder(
        paths in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(".."), Just("."), Just(""), Just("a"), Just("b/c"), Just("\\"), Just("d")], 0..4),
            1..5,
        )
    ) {
        let files = paths.iter().map(|p| file(3, p)).collect::<Vec<_>>();
        let n = paths.len() * 3;
        if let Ok(m) = parse(multi(files, 16, n.div_ceil(16))) {
            let root = std::path::Path::new("/dl");
            for f in m.info.layout.files() {
                let p = f.path.under(root);
                prop_assert!(p.starts_with("/dl/album"));
                prop_assert!(p.components().all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_))));
            }
        }
    }
}

#[test]
fn padding_files_with_the_same_path_are_not_renamed() {
    let pad = |len: i64| {
        let mut f = file(len, &[".pad", &len.to_string()]);
        if let BValue::Dict(d) = &mut f {
            d.insert(b"attr".to_vec(), s("p"));
        }
        f
    };
    let files = vec![
        file(5, &["a"]),
        pad(11),
        file(5, &["b"]),
        pad(11),
        file(16, &["c"]),
    ];
    let m = parse(multi(files, 16, 3)).unwrap();
    let paths: Vec<_> = m
        .info
        .layout
        .files()
        .iter()
        .map(|f| f.path.display())
        .collect();
    assert_eq!(
        paths,
        [
            "album/a",
            "album/.pad/11",
            "album/b",
            "album/.pad/11",
            "album/c"
        ]
    );
}

/// A torrent around `info` whose top level also holds `url-list`.
fn with_url_list(info: BValue, list: BValue) -> Metainfo {
    let bytes = BValue::dict([("info", info), ("url-list", list)]).encode();
    Metainfo::from_bytes(&bytes).unwrap()
}

#[test]
fn url_list_as_a_single_string_or_a_list_gives_checked_web_seeds() {
    let one = with_url_list(single(16, 32, 2), s("http://127.0.0.1:8000/file.bin"));
    assert_eq!(one.web_seeds.len(), 1);
    assert_eq!(one.web_seeds[0].as_str(), "http://127.0.0.1:8000/file.bin");
    let two = with_url_list(
        single(16, 32, 2),
        BValue::List(vec![
            s("https://mirror.example/a/"),
            s("http://127.0.0.1/b"),
        ]),
    );
    assert_eq!(two.web_seeds.len(), 2);
    assert!(two.web_seeds_refused.is_empty());
}

#[test]
fn hostile_url_list_entries_are_refused_one_by_one_and_the_torrent_still_loads() {
    let long = format!("http://127.0.0.1/{}", "a".repeat(MAX_WEB_SEED_URL_BYTES));
    let list = BValue::List(vec![
        s("ftp://127.0.0.1/file.bin"),
        s("file:///etc/passwd"),
        s("javascript:alert(1)"),
        s("not a url"),
        s("http://"),
        BValue::Int(7),
        BValue::Bytes(vec![0xff, 0xfe, b'h']),
        s(&long),
        s("http://127.0.0.1/good"),
        s("http://127.0.0.1/good"),
        s(""),
    ]);
    let m = with_url_list(single(16, 32, 2), list);
    assert_eq!(m.web_seeds.len(), 1);
    assert_eq!(m.web_seeds[0].as_str(), "http://127.0.0.1/good");
    let reasons: Vec<WebSeedError> = m
        .web_seeds_refused
        .iter()
        .map(|r| r.reason.clone())
        .collect();
    assert_eq!(reasons[0], WebSeedError::Scheme("ftp".into()));
    assert_eq!(reasons[1], WebSeedError::Scheme("file".into()));
    assert_eq!(reasons[2], WebSeedError::Scheme("javascript".into()));
    assert!(matches!(reasons[3], WebSeedError::NotAUrl(_)));
    assert!(matches!(
        reasons[4],
        WebSeedError::NotAUrl(_) | WebSeedError::NoHost
    ));
    assert_eq!(reasons[5], WebSeedError::NotText);
    assert!(matches!(reasons[6], WebSeedError::NotAUrl(_)));
    assert!(matches!(reasons[7], WebSeedError::TooLong { .. }));
    assert_eq!(reasons[8], WebSeedError::Duplicate);
    assert_eq!(reasons.len(), 9, "the empty entry is skipped silently");
    // The refused entry is kept cut to the limit, never whole.
    assert!(m.web_seeds_refused[7].entry.len() <= MAX_WEB_SEED_URL_BYTES);
}

#[test]
fn url_list_of_the_wrong_type_is_refused_without_refusing_the_torrent() {
    let m = with_url_list(single(16, 32, 2), BValue::Int(3));
    assert!(m.web_seeds.is_empty());
    assert_eq!(m.web_seeds_refused[0].reason, WebSeedError::NotText);
}

#[test]
fn a_huge_url_list_keeps_the_first_web_seeds_and_sums_up_the_rest() {
    let list: Vec<BValue> = (0..100_000)
        .map(|i| s(&format!("http://127.0.0.1/{i}")))
        .collect();
    let m = with_url_list(single(16, 32, 2), BValue::List(list));
    assert_eq!(m.web_seeds.len(), MAX_WEB_SEEDS);
    assert!(m.web_seeds_refused.len() <= MAX_WEB_SEEDS + 1);
    assert!(m.web_seeds_refused.iter().all(|r| r.reason
        == WebSeedError::TooMany {
            limit: MAX_WEB_SEEDS
        }));
}

#[test]
fn web_seed_file_urls_follow_bep_19_and_escape_each_component() {
    let seed = WebSeedUrl::parse("http://127.0.0.1:8000/pub").unwrap();
    let folder = WebSeedUrl::parse("http://127.0.0.1:8000/pub/").unwrap();
    let one = parse(single(16, 32, 2)).unwrap();
    let f = &one.info.layout.files()[0];
    assert_eq!(
        seed.file_url(f, false).as_str(),
        "http://127.0.0.1:8000/pub"
    );
    assert_eq!(
        folder.file_url(f, false).as_str(),
        "http://127.0.0.1:8000/pub/file.bin"
    );
    let m = parse(multi(
        vec![file(16, &["disc 1", "a?b#c%.flac"]), file(16, &["b"])],
        16,
        2,
    ))
    .unwrap();
    let f = &m.info.layout.files()[0];
    let want = "http://127.0.0.1:8000/pub/album/disc%201/a%3Fb%23c%25.flac";
    assert_eq!(seed.file_url(f, true).as_str(), want);
    assert_eq!(folder.file_url(f, true).as_str(), want);
}

/// A v2-only torrent made by `create` from `files` (name, length, seed byte) with
/// `piece` bytes per piece, and the files' bytes.
fn made_v2(files: &[(&str, usize, u8)], piece: u64) -> (Metainfo, Vec<Vec<u8>>, tempfile::TempDir) {
    let (made, datas, tmp) = made_as(crate::create::Format::V2, files, piece);
    let meta = Metainfo::from_bytes(&made.torrent).unwrap();
    assert_eq!(
        meta.info_hash.0[..],
        made.info_hash_v2.unwrap()[..20],
        "the wire info-hash is the v2 hash truncated"
    );
    (meta, datas, tmp)
}

/// What `create` makes in `format` from `files` (name, length, seed byte) with `piece`
/// bytes per piece, and the files' bytes.
fn made_as(
    format: crate::create::Format,
    files: &[(&str, usize, u8)],
    piece: u64,
) -> (crate::create::Created, Vec<Vec<u8>>, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("t");
    std::fs::create_dir_all(&root).unwrap();
    let mut datas = Vec::new();
    for (name, len, seed) in files {
        let data: Vec<u8> = (0..*len)
            .map(|i| (i as u8).wrapping_mul(13).wrapping_add(*seed))
            .collect();
        std::fs::write(root.join(name), &data).unwrap();
        datas.push(data);
    }
    let source = if files.len() == 1 {
        crate::create::scan(&root.join(files[0].0)).unwrap()
    } else {
        crate::create::scan(&root).unwrap()
    };
    let options = crate::create::CreateOptions {
        format,
        piece_size: Some(piece),
        trackers: Vec::new(),
        web_seeds: Vec::new(),
        private: false,
        comment: None,
        created_by: None,
        creation_date: None,
        threads: 1,
    };
    let made = crate::create::create(&source, &options, &|_| {}).unwrap();
    (made, datas, tmp)
}

/// The torrent's byte stream: each file, then zeros up to the next piece boundary.
fn stream(meta: &Metainfo, datas: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut real = datas.iter();
    for f in meta.info.layout.files() {
        if f.padding {
            out.resize(out.len() + f.length as usize, 0);
        } else {
            out.extend_from_slice(real.next().unwrap());
        }
    }
    out
}

#[test]
fn v2_only_torrent_lays_files_on_piece_boundaries_and_checks_pieces_by_merkle() {
    let piece = 32 * 1024;
    // A file of several pieces with a tail, one shorter than a block, one of exactly a
    // piece, one of one piece and a half-block.
    let files = [
        ("a", 3 * 32 * 1024 + 5000, 1u8),
        ("b", 100, 2),
        ("c", 32 * 1024, 3),
        ("d", 16 * 1024 + 10, 4),
    ];
    let (meta, datas, _tmp) = made_v2(&files, piece);
    assert!(meta.info.v2_only && !meta.info.hybrid);
    let layout = &meta.info.layout;
    let real: Vec<_> = layout.files().iter().filter(|f| !f.padding).collect();
    assert_eq!(real.len(), 4);
    for f in &real {
        assert_eq!(f.offset % piece, 0, "{} starts a piece", f.path.display());
        assert_eq!(f.path.components()[0], "t");
    }
    assert_eq!(layout.num_pieces(), 4 + 1 + 1 + 1);
    let data = stream(&meta, &datas);
    for p in layout.pieces() {
        let start = layout.piece_offset(p) as usize;
        let bytes = &data[start..start + layout.piece_len(p) as usize];
        let check = meta.info.piece_check(p);
        assert!(check.matches(bytes), "piece {p} passes");
        // Fed in odd chunks, the same.
        let mut v = check.verifier();
        for chunk in bytes.chunks(7000) {
            v.update(chunk);
        }
        assert_eq!(v.finish(), Verdict::Passed, "piece {p} in chunks");
        let mut bad = bytes.to_vec();
        bad[0] ^= 1;
        assert!(!check.matches(&bad), "piece {p} with a flipped byte fails");
    }
}

#[test]
fn v2_only_single_file_is_stored_under_its_name() {
    let (meta, datas, _tmp) = made_v2(&[("song.bin", 70_000, 9)], 16 * 1024);
    let files = meta.info.layout.files();
    // The file, then virtual padding to the piece boundary, as libtorrent lays it out.
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].path.display(), "song.bin");
    assert!(files[1].padding);
    assert_eq!(meta.info.layout.total_length(), 5 * 16 * 1024);
    assert!(!meta.info.is_multi_file());
    let data = stream(&meta, &datas);
    for p in meta.info.layout.pieces() {
        let start = meta.info.layout.piece_offset(p) as usize;
        let end = start + meta.info.layout.piece_len(p) as usize;
        assert!(meta.info.piece_check(p).matches(&data[start..end]));
    }
}

#[test]
fn v2_only_torrent_whose_piece_layer_does_not_hash_to_its_root_is_refused() {
    // Build the torrent with one byte of the piece layer changed.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("x");
    std::fs::write(&root, vec![5u8; 100_000]).unwrap();
    let options = crate::create::CreateOptions {
        format: crate::create::Format::V2,
        piece_size: Some(16 * 1024),
        trackers: Vec::new(),
        web_seeds: Vec::new(),
        private: false,
        comment: None,
        created_by: None,
        creation_date: None,
        threads: 1,
    };
    let made =
        crate::create::create(&crate::create::scan(&root).unwrap(), &options, &|_| {}).unwrap();
    let mut bytes = made.torrent.clone();
    let at = bytes
        .windows(12)
        .position(|w| w == b"piece layers")
        .unwrap();
    // Past the key, the dictionary's first key (a root, 32 bytes), then the layer.
    let layer_start = at + 12 + 1 + 3 + 32 + 4;
    bytes[layer_start + 40] ^= 0xFF;
    assert!(matches!(
        Metainfo::from_bytes(&bytes),
        Err(MetainfoError::V2(v2::V2Error::BadPieceLayer { .. }))
    ));
}

#[test]
fn leaves_from_a_peer_name_the_bad_block_only_if_they_hash_to_the_piece() {
    let piece = 64 * 1024;
    let (meta, datas, _tmp) = made_v2(&[("x", 3 * piece as usize, 1)], piece);
    let p = meta.info.layout.piece(1).unwrap();
    let PieceCheck::Merkle(m) = meta.info.piece_check(p) else {
        panic!("a v2 piece");
    };
    let request = m.leaf_request().unwrap();
    assert_eq!(
        (request.base_layer, request.index, request.length),
        (0, 4, 4)
    );
    let start = piece as usize;
    let good = merkle::leaf_hashes(&datas[0][start..start + piece as usize]);
    let mut ours = good.clone();
    ours[2] = [9; 32];
    assert_eq!(m.bad_blocks(&ours, &good), Some(vec![2]));
    // A made-up answer that would blame block 0 hashes to nothing we trust.
    let mut lie = ours.clone();
    lie[0] = [1; 32];
    assert_eq!(m.bad_blocks(&ours, &lie), None);
    assert_eq!(m.bad_blocks(&ours, &good[..3]), None);
}

/// `torrent` with `edit` applied to its `info` dictionary.
fn edit_info(torrent: &[u8], edit: impl FnOnce(&mut BTreeMap<Vec<u8>, BValue>)) -> Vec<u8> {
    let BValue::Dict(mut top) = bencode::decode(torrent).unwrap().to_owned_value() else {
        panic!("a torrent is a dictionary")
    };
    let Some(BValue::Dict(info)) = top.get_mut(&b"info"[..]) else {
        panic!("no info")
    };
    edit(info);
    BValue::Dict(top).encode()
}

/// The leaf dictionary of `file` at the top of a v2 file tree.
fn tree_leaf<'a>(
    info: &'a mut BTreeMap<Vec<u8>, BValue>,
    file: &str,
) -> &'a mut BTreeMap<Vec<u8>, BValue> {
    let Some(BValue::Dict(tree)) = info.get_mut(&b"file tree"[..]) else {
        panic!("no file tree")
    };
    let Some(BValue::Dict(node)) = tree.get_mut(file.as_bytes()) else {
        panic!("no {file}")
    };
    let Some(BValue::Dict(leaf)) = node.get_mut(&b""[..]) else {
        panic!("{file} is not a file")
    };
    leaf
}

/// The raw `info` bytes of a torrent, as a magnet would fetch them.
fn info_of(torrent: &[u8]) -> Vec<u8> {
    let top = bencode::decode(torrent).unwrap();
    top.as_dict().unwrap().get(b"info").unwrap().raw().to_vec()
}

const HYBRID_FILES: [(&str, usize, u8); 3] =
    [("a", 40_000, 1), ("b", 3 * 16384 + 7, 2), ("c", 100, 3)];

#[test]
fn a_hybrid_with_its_piece_layers_checks_every_piece_by_both_hashes() {
    let (made, datas, _tmp) = made_as(crate::create::Format::Hybrid, &HYBRID_FILES, 16384);
    let meta = Metainfo::from_bytes(&made.torrent).unwrap();
    assert!(meta.info.hybrid);
    let data = stream(&meta, &datas);
    let layout = &meta.info.layout;
    for p in layout.pieces() {
        let start = layout.piece_offset(p) as usize;
        let bytes = &data[start..start + layout.piece_len(p) as usize];
        let check = meta.info.piece_check(p);
        assert!(
            matches!(check, PieceCheck::Both(..)),
            "piece {p}: {check:?}"
        );
        assert_eq!(check.verdict(bytes), Verdict::Passed, "piece {p}");
        let mut bad = bytes.to_vec();
        bad[0] ^= 1;
        assert_eq!(check.verdict(&bad), Verdict::Failed, "piece {p} flipped");
        // Right for one hash only: the torrent's two parts disagree.
        let (sha1, merkle) = (check.sha1().unwrap(), check.merkle().unwrap());
        let v1_lies = PieceCheck::Both(Sha1::digest(&bad).into(), merkle);
        assert_eq!(v1_lies.verdict(&bad), Verdict::Inconsistent, "piece {p}");
        assert_eq!(
            PieceCheck::Both(sha1, merkle).verdict(&bad),
            Verdict::Failed
        );
    }
    // The same `info` from a magnet, without its piece layers: SHA-1 alone.
    let info = Info::from_bytes(&info_of(&made.torrent)).unwrap();
    assert!(matches!(
        info.piece_check(info.layout.piece(0).unwrap()),
        PieceCheck::Sha1(_)
    ));
}

#[test]
fn a_hybrid_piece_with_garbage_padding_is_judged_by_its_file_bytes() {
    // Piece 2 (16 KiB pieces) holds the tail of `a` (40 000 bytes), then padding. The
    // padding is zeros by definition and never stored: a peer that sends the right file
    // bytes and anything as padding gave the right data (found by review: this was
    // `Inconsistent`, failing the torrent).
    let (made, datas, _tmp) = made_as(crate::create::Format::Hybrid, &HYBRID_FILES, 16384);
    let meta = Metainfo::from_bytes(&made.torrent).unwrap();
    let data = stream(&meta, &datas);
    let layout = &meta.info.layout;
    let p = layout.piece(2).unwrap();
    let start = layout.piece_offset(p) as usize;
    let mut bytes = data[start..start + layout.piece_len(p) as usize].to_vec();
    let check = meta.info.piece_check(p);
    assert_eq!(check.verdict(&bytes), Verdict::Passed);
    let file_bytes = 40_000 - 2 * 16384;
    bytes[file_bytes..].fill(0xff);
    assert_eq!(check.verdict(&bytes), Verdict::Passed, "garbage padding");
    // In odd chunks across the boundary, the same.
    let mut v = check.verifier();
    for chunk in bytes.chunks(5000) {
        v.update(chunk);
    }
    assert_eq!(v.finish(), Verdict::Passed);
    bytes[file_bytes - 1] ^= 1;
    assert_eq!(
        check.verdict(&bytes),
        Verdict::Failed,
        "a file byte flipped"
    );
    // A v1 torrent's check still takes the padding as sent.
    let sha1 = PieceCheck::Sha1(check.sha1().unwrap());
    bytes[file_bytes - 1] ^= 1;
    assert_eq!(sha1.verdict(&bytes), Verdict::Failed);
}

#[test]
fn a_hybrid_of_files_no_longer_than_a_piece_is_checked_by_both_hashes_from_its_info_alone() {
    // 64 KiB pieces: every file fits in one, so no file has a piece layer (`create`
    // writes no `piece layers`) and the roots give every piece's node; a magnet's
    // `info` alone does too (found by review: these kept SHA-1 only).
    let (made, datas, _tmp) = made_as(crate::create::Format::Hybrid, &HYBRID_FILES, 65536);
    let meta = Metainfo::from_bytes(&made.torrent).unwrap();
    let alone = Info::from_bytes(&info_of(&made.torrent)).unwrap();
    let data = stream(&meta, &datas);
    for info in [&meta.info, &alone] {
        assert!(info.hybrid);
        for p in info.layout.pieces() {
            let check = info.piece_check(p);
            assert!(matches!(check, PieceCheck::Both(..)), "{p}: {check:?}");
            let start = info.layout.piece_offset(p) as usize;
            let bytes = &data[start..start + info.layout.piece_len(p) as usize];
            assert_eq!(check.verdict(bytes), Verdict::Passed, "{p}");
        }
    }
}

#[test]
fn a_verdict_is_inconsistent_only_when_one_hash_passes_and_the_other_fails() {
    use Verdict::*;
    let cases = [
        ((Some(true), None), Passed),
        ((None, Some(true)), Passed),
        ((Some(true), Some(true)), Passed),
        ((Some(false), None), Failed),
        ((None, Some(false)), Failed),
        ((Some(false), Some(false)), Failed),
        ((None, None), Failed),
        ((Some(true), Some(false)), Inconsistent),
        ((Some(false), Some(true)), Inconsistent),
    ];
    for ((sha1, merkle), want) in cases {
        assert_eq!(Verdict::of(sha1, merkle), want, "{sha1:?} {merkle:?}");
    }
}

#[test]
fn a_hybrid_whose_v1_and_v2_views_disagree_is_refused_from_a_file_and_from_a_magnet() {
    let (made, _, _tmp) = made_as(crate::create::Format::Hybrid, &HYBRID_FILES, 16384);
    type Edit = Box<dyn Fn(&mut BTreeMap<Vec<u8>, BValue>)>;
    let cases: [(&str, Edit); 3] = [
        (
            "the tree gives a file another length",
            Box::new(|info| {
                tree_leaf(info, "b").insert(b"length".to_vec(), BValue::Int(3 * 16384 + 6));
            }),
        ),
        (
            "the tree names a file the v1 list does not",
            Box::new(|info| {
                let Some(BValue::Dict(tree)) = info.get_mut(&b"file tree"[..]) else {
                    panic!("no file tree")
                };
                let c = tree.remove(&b"c"[..]).unwrap();
                tree.insert(b"d".to_vec(), c);
            }),
        ),
        (
            "the v1 list drops its padding, so files no longer start pieces",
            Box::new(|info| {
                let Some(BValue::List(files)) = info.get_mut(&b"files"[..]) else {
                    panic!("no files")
                };
                files.retain(
                    |f| !matches!(f, BValue::Dict(d) if d.get(&b"attr"[..]) == Some(&s("p"))),
                );
                let total: i64 = 40_000 + 3 * 16384 + 7 + 100;
                let pieces = (total as usize).div_ceil(16384);
                info.insert(b"pieces".to_vec(), hashes(pieces));
            }),
        ),
    ];
    for (what, edit) in cases {
        let bad = edit_info(&made.torrent, edit);
        let refused = Metainfo::from_bytes(&bad);
        assert!(
            matches!(
                refused,
                Err(MetainfoError::V2(v2::V2Error::HybridMismatch(_)))
            ),
            "{what}: {refused:?}"
        );
        let text = refused.unwrap_err().to_string();
        assert!(
            text.starts_with("the v1 and v2 parts of this hybrid disagree: "),
            "{what}: {text}"
        );
        // The same `info` fetched by a magnet link is refused the same way.
        assert_eq!(
            Info::from_bytes(&info_of(&bad)).map(|_| ()),
            Err(MetainfoError::V2(v2::V2Error::HybridMismatch(
                text.trim_start_matches("the v1 and v2 parts of this hybrid disagree: ")
                    .to_string()
            ))),
            "{what}"
        );
    }
}

#[test]
fn a_hybrid_whose_piece_layer_does_not_hash_to_its_root_is_refused() {
    let (made, _, _tmp) = made_as(crate::create::Format::Hybrid, &HYBRID_FILES, 16384);
    // `piece layers` sorts last: the byte before the two closing `e`s is the last
    // layer's last byte, outside `info`.
    let mut bad = made.torrent.clone();
    let at = bad.len() - 3;
    bad[at] ^= 0xff;
    assert!(matches!(
        Metainfo::from_bytes(&bad),
        Err(MetainfoError::V2(v2::V2Error::BadPieceLayer { .. }))
    ));
    // Without piece layers (as a magnet's `info`), the tree alone is checked.
    assert!(Info::from_bytes(&info_of(&bad)).unwrap().hybrid);
}

#[test]
fn hybrids_made_by_create_and_by_libtorrent_are_accepted_with_both_info_hashes() {
    let (made, _, _tmp) = made_as(crate::create::Format::Hybrid, &HYBRID_FILES, 16384);
    let libtorrent = include_bytes!("../../tests/fixtures/libtorrent_hybrid.torrent");
    for (who, bytes) in [
        ("create", &made.torrent[..]),
        ("libtorrent", &libtorrent[..]),
    ] {
        let meta = Metainfo::from_bytes(bytes).unwrap_or_else(|e| panic!("{who}: {e}"));
        assert!(meta.info.hybrid && !meta.info.v2_only, "{who}");
        let sha256: Hash256 = Sha256::digest(&meta.info_bytes).into();
        assert_eq!(meta.info_hash_v2, Some(sha256), "{who}");
        assert_eq!(
            meta.info_hash.0,
            <[u8; 20]>::from(Sha1::digest(&meta.info_bytes))
        );
        let v2 = meta.v2_swarm().unwrap();
        assert_eq!(v2.0[..], sha256[..20], "{who}");
        assert_eq!(meta.swarms().collect::<Vec<_>>(), [meta.info_hash, v2]);
        // The `info` alone, as a magnet fetches it: the same files, checked by the
        // SHA-1s alone without the piece layers.
        let alone = Info::from_bytes(&meta.info_bytes).unwrap();
        assert_eq!(alone.layout, meta.info.layout, "{who}");
        for p in alone.layout.pieces() {
            let both = meta.info.piece_check(p);
            assert!(matches!(both, PieceCheck::Both(..)), "{who}: piece {p}");
            assert_eq!(alone.piece_check(p), PieceCheck::Sha1(both.sha1().unwrap()));
        }
    }
    assert_eq!(
        Metainfo::from_bytes(&made.torrent).unwrap().info_hash_v2,
        made.info_hash_v2
    );
    // A v1 torrent has one swarm; so has a v2-only one, named by its truncated v2 hash.
    let v1 = parse(single(16384, 40000, 3)).unwrap();
    assert_eq!((v1.info_hash_v2, v1.v2_swarm()), (None, None));
    let (v2_only, _, _tmp) = made_v2(&[("a", 40_000, 1)], 16384);
    assert!(v2_only.info_hash_v2.is_some() && v2_only.v2_swarm().is_none());
    assert_eq!(v2_only.swarms().count(), 1);
}
