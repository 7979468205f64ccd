//! Fuzzes what a v2 magnet's fetcher does with peers' answers to its piece-layer `hash
//! request`s (`engine::metadata::layers`): a file of a length the input picks, answers of
//! any shape for the ranges asked, and a true answer from the file's real tree mixed in
//! where the input says. It must never panic, and must never keep an answer that does
//! not hash up to the root: once complete, the layers it gives are the true ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use torrent_actors::engine::metadata::layers::{Answered, LayerFetch};
use torrent_actors::engine::PeerKey;
use torrent_actors::metainfo::merkle::{self, Hash256, LEAF_SIZE};
use torrent_actors::metainfo::tree_nodes::TreeNodes;
use torrent_actors::metainfo::v2::{V2File, V2Info};
use torrent_actors::metainfo::SafePath;
use torrent_actors::wire::Hashes;

fuzz_target!(|data: &[u8]| {
    let Some((&[blocks_lo, blocks_hi, per_piece_exp], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    // Up to 4096 blocks of 16 KiB, 1 to 8 leaves a piece.
    let blocks = usize::from(u16::from_le_bytes([blocks_lo, blocks_hi]) % 4096) + 1;
    let per_piece = 1usize << (per_piece_exp % 4);
    let leaves: Vec<Hash256> = (0..blocks)
        .map(|i| merkle::leaf_hash(&(i as u64).to_le_bytes()))
        .collect();
    let piece_length = (per_piece * LEAF_SIZE) as u64;
    let Some(root) = merkle::file_root(&leaves) else {
        return;
    };
    let Ok(layer) = merkle::piece_layer(&leaves, piece_length) else {
        return;
    };
    let v2 = V2Info {
        info_hash: [0; 32],
        piece_length,
        files: vec![V2File {
            path: SafePath::new(&["f"]).expect("a plain name"),
            length: (blocks * LEAF_SIZE) as u64,
            pieces_root: Some(root),
            piece_layer: Vec::new(),
        }],
    };
    let Ok(Some(mut fetch)) = LayerFetch::new(&v2) else {
        return;
    };
    let trees = TreeNodes::new([(root, layer.clone(), per_piece.trailing_zeros())]);
    let peer = PeerKey(1);
    let now = Instant::now();
    let mut input = rest.iter();
    while let Some(request) = fetch.next_request(peer, now) {
        let Some(&choice) = input.next() else {
            return;
        };
        let hashes: Vec<Hash256> = match choice % 4 {
            0 => trees
                .answer(&request)
                .expect("the real tree answers our requests"),
            1 => {
                let mut h = trees.answer(&request).expect("answers");
                let at = usize::from(choice) % h.len();
                h[at][usize::from(choice) % 32] ^= 1 | choice;
                h
            }
            2 => {
                let mut h = trees.answer(&request).expect("answers");
                h.truncate(usize::from(choice) % (h.len() + 1));
                h
            }
            _ => (0..usize::from(choice) % 64)
                .map(|i| [i as u8; 32])
                .collect(),
        };
        let truthful = trees.answer(&request).ok().as_ref() == Some(&hashes);
        match fetch.received(peer, &Hashes { request, hashes }) {
            Answered::Kept | Answered::Complete => assert!(truthful, "a false answer was kept"),
            Answered::Refuted => assert!(!truthful, "a true answer was refuted"),
            Answered::Unasked => panic!("the range was asked of this peer"),
        }
    }
    assert_eq!(fetch.layers(), Some(vec![(root, layer)]));
});
