//! Fuzzes the v2 part of a `.torrent` (BEP 52): `V2Info::from_torrent` must never
//! panic, and whatever it accepts must keep its promises: file paths of plain names that
//! stay inside the download folder, folders nested no deeper than the limit, a 32-byte
//! root exactly for each non-empty file, and every piece layer kept the right size for
//! its file and hashing up to its root.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use torrent_actors::metainfo::merkle::{self, LEAF_SIZE};
use torrent_actors::metainfo::v2::{V2Info, MAX_TREE_DEPTH, MAX_V2_FILES};
use torrent_actors::metainfo::MAX_COMPONENT_BYTES;

fuzz_target!(|data: &[u8]| {
    let Ok(v2) = V2Info::from_torrent(data) else {
        return;
    };
    assert!(v2.piece_length.is_power_of_two() && v2.piece_length >= LEAF_SIZE as u64);
    assert!(!v2.files.is_empty() && v2.files.len() <= MAX_V2_FILES);
    let root = Path::new("/srv/downloads");
    for file in &v2.files {
        let components = file.path.components();
        assert!(!components.is_empty() && components.len() <= MAX_TREE_DEPTH + 1);
        for c in components {
            assert!(c.len() <= MAX_COMPONENT_BYTES, "{} bytes", c.len());
        }
        let joined = file.path.under(root);
        let inside = joined.strip_prefix(root).expect("a v2 path leaves the root");
        assert!(
            inside
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "{joined:?}"
        );
        assert_eq!(file.pieces_root.is_some(), file.length > 0);
        match file.pieces_root {
            Some(r) if file.length > v2.piece_length => {
                merkle::verify_piece_layer(&file.piece_layer, &r, file.length, v2.piece_length)
                    .expect("a kept piece layer hashes to its root");
            }
            _ => assert!(file.piece_layer.is_empty()),
        }
    }
});
