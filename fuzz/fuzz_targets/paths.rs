//! Drives the whole path pipeline of a torrent's files, with the escape assertion. The
//! input is cut into the torrent's name and up to 64 file paths (0xFF ends a path, 0xFE
//! a component; every other byte, valid UTF-8 or not, belongs to the component), made
//! into an info dictionary and parsed as one, so the checks, repairs (reserved names,
//! shortening) and the renaming of duplicates all run. Whatever parses must hold only
//! plain names that the jail itself accepts, no two files alike, no file where another
//! needs a folder, and every path joined under a root must stay under it.
#![no_main]

use std::collections::HashSet;
use std::path::{Component, Path};

use torrent_actors::bencode::BValue;
use torrent_actors::engine::jail::check_name;
use torrent_actors::metainfo::{is_plain_name, Info, MAX_PATH_BYTES};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xFF);
    let name = parts.next().unwrap_or_default().to_vec();
    let files: Vec<BValue> = parts
        .take(64)
        .map(|path| {
            let components = path
                .split(|&b| b == 0xFE)
                .map(|c| BValue::Bytes(c.to_vec()))
                .collect();
            BValue::dict([
                ("length", BValue::Int(1)),
                ("path", BValue::List(components)),
            ])
        })
        .collect();
    let count = files.len().max(1);
    let mut info = vec![
        ("name", BValue::Bytes(name)),
        ("piece length", BValue::Int(16 * 1024)),
        ("pieces", BValue::Bytes(vec![0; 20])),
    ];
    if files.is_empty() {
        info.push(("length", BValue::Int(count as i64)));
    } else {
        info.push(("files", BValue::List(files)));
    }
    let Ok(info) = Info::from_bytes(&BValue::dict(info).encode()) else {
        return;
    };
    let root = Path::new("/srv/downloads");
    let mut paths: HashSet<&[String]> = HashSet::new();
    for file in info.layout.files() {
        let names = file.path.components();
        for name in names {
            assert!(is_plain_name(name), "{name:?}");
            assert!(check_name(name).is_ok(), "{name:?}");
        }
        assert!(file.path.display().len() <= MAX_PATH_BYTES + 21);
        let joined = file.path.under(root);
        assert!(joined.starts_with(root), "{joined:?}");
        let rel = joined.strip_prefix(root).expect("under the root");
        assert_eq!(rel.components().count(), names.len(), "{joined:?}");
        for c in rel.components() {
            assert!(matches!(c, Component::Normal(_)), "{joined:?}");
        }
        assert!(paths.insert(names), "two files at {joined:?}");
    }
    for path in &paths {
        for n in 1..path.len() {
            assert!(!paths.contains(&path[..n]), "a file where a folder must be");
        }
    }
});
