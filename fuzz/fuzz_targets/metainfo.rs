//! Fuzzes `.torrent` validation: `Metainfo::from_bytes` must never panic, and whatever it
//! accepts must keep the promises the engine relies on without checking again: file paths
//! that stay inside the download folder, one hash per piece, files that tile the byte
//! stream, an `info` that parses the same from its kept raw bytes, and for a hybrid a v2
//! part that agrees with the v1 part and names the second swarm.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use torrent_actors::bencode::decode;
use torrent_actors::metainfo::v2::V2Info;
use torrent_actors::metainfo::{
    Info, Metainfo, MAX_COMPONENT_BYTES, MAX_WEB_SEEDS, MAX_WEB_SEED_URL_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Metainfo::from_bytes(data) else {
        return;
    };
    let layout = &m.info.layout;

    // A hybrid's two parts describe the same files, and it names its second swarm by the
    // first 20 bytes of the SHA-256 of its info bytes.
    if m.info.hybrid {
        let v2 = V2Info::from_info_bytes(&m.info_bytes).expect("an accepted hybrid's v2 part");
        v2.check_hybrid(&m.info)
            .expect("an accepted hybrid's parts agree");
        assert_eq!(m.info_hash_v2, Some(v2.info_hash));
        let second = m.v2_swarm().expect("a hybrid has a second swarm");
        assert_eq!(second.0[..], v2.info_hash[..20]);
    } else {
        assert!(m.v2_swarm().is_none());
    }

    // Paths: joined under any root, each stays strictly inside it, made of plain names no
    // longer than a filesystem allows.
    let root = Path::new("/srv/downloads");
    for file in layout.files() {
        let joined = file.path.under(root);
        let inside = joined
            .strip_prefix(root)
            .expect("a file path leaves the root");
        assert!(inside.components().count() >= 1);
        assert!(
            inside
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "{joined:?}"
        );
        for c in file.path.components() {
            assert!(c.len() <= MAX_COMPONENT_BYTES, "{} bytes", c.len());
        }
    }

    // Files lie end to end, and their lengths add up to the total.
    let mut offset = 0u64;
    for file in layout.files() {
        assert_eq!(file.offset, offset);
        offset += file.length;
    }
    assert_eq!(offset, layout.total_length());
    assert!(layout.total_length() > 0);

    // One 20-byte hash per piece, in order, taken from the `pieces` field as written.
    let piece_length = u64::from(layout.piece_length());
    assert_eq!(
        u64::from(layout.num_pieces()),
        layout.total_length().div_ceil(piece_length)
    );
    let info = decode(&m.info_bytes).expect("the kept info bytes decode");
    let Some(pieces) = info
        .as_dict()
        .and_then(|d| d.get(b"pieces"))
        .and_then(|p| p.as_bytes())
    else {
        // A v2-only torrent's pieces are checked by Merkle tree (the metainfo_v2 target).
        assert!(m.info.v2_only, "an accepted v1 info has pieces");
        return;
    };
    assert_eq!(pieces.len(), layout.num_pieces() as usize * 20);
    let mut covered = 0u64;
    for (piece, hash) in layout.pieces().zip(pieces.chunks_exact(20)) {
        let expected: [u8; 20] = hash.try_into().expect("20-byte chunks");
        assert_eq!(
            m.info.piece_check(piece),
            torrent_actors::metainfo::PieceCheck::Sha1(expected)
        );
        let len = layout.piece_len(piece);
        assert!(len > 0 && u64::from(len) <= piece_length);
        let spanned: u64 = layout
            .piece_spans(piece)
            .iter()
            .map(|s| u64::from(s.len))
            .sum();
        assert_eq!(spanned, u64::from(len));
        covered += u64::from(len);
    }
    assert_eq!(covered, layout.total_length());

    // Web seeds: few, short, http or https with a host, and each file's URL built from
    // them stays on that host (BEP 19).
    assert!(m.web_seeds.len() <= MAX_WEB_SEEDS);
    assert!(m.web_seeds_refused.len() <= MAX_WEB_SEEDS * 2 + 1);
    let multi_file = m.info.is_multi_file();
    for seed in &m.web_seeds {
        assert!(seed.len() <= MAX_WEB_SEED_URL_BYTES);
        assert!(matches!(seed.url().scheme(), "http" | "https"));
        for file in layout.files() {
            let url = seed.file_url(file, multi_file);
            assert_eq!(url.host_str(), seed.url().host_str());
            assert_eq!(url.scheme(), seed.url().scheme());
        }
    }

    // The `info` served to peers parses to the same thing.
    assert_eq!(
        Info::from_bytes(&m.info_bytes).expect("the kept info bytes parse"),
        m.info
    );
});
