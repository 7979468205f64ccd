//! BEP 6 allowed-fast sets: which pieces a peer may request from us while we choke it.
//!
//! This module owns the canonical set computation and nothing else. It must not decide
//! whether to send `allowed fast` messages, track which requests a choked peer made, or
//! read a socket: the engine does that, and asks here only which piece indices to name.
//!
//! Why the set exists: a peer that has just joined owns no piece, so it has nothing to
//! offer in tit-for-tat and may wait a long time for an optimistic unchoke. The allowed-fast
//! set lets it fetch a few pieces even while choked, so it quickly has something to trade.
//! The set is derived from the peer's address and the torrent, so every client computes the
//! same set for the same peer, and because the low octet of the address is masked away a
//! user who takes many addresses on one network still gets only one set.
//!
//! Only IPv4 peers get a set. BEP 6 defines the computation over a four-byte address and
//! says nothing about IPv6, so for an IPv6 peer the engine sends no `allowed fast`
//! messages at all rather than invent a variant other clients would not reproduce.

use std::net::Ipv4Addr;

use sha1::{Digest, Sha1};

use crate::ids::InfoHash;

/// How many pieces we allow a choked peer to fetch. BEP 6 leaves the number to the
/// implementation; ten is the size widely deployed clients use, large enough for a new peer
/// to complete a piece quickly and small enough that a choked peer cannot take much of our
/// upload capacity.
pub const ALLOWED_FAST_SET_SIZE: usize = 10;

/// The low octet of an IPv4 address is cleared before hashing, so all addresses of one
/// /24 network share a set (see the module documentation for why).
const NETWORK_MASK: u32 = 0xFFFF_FF00;

/// The `k` piece indices a peer at `ip` may request from us while choked, in the order
/// BEP 6's algorithm produces them, for a torrent of `num_pieces` pieces.
///
/// The algorithm: hash the masked address (four bytes, network order) followed by the
/// 20-byte info-hash with SHA-1; read the digest as five big-endian 32-bit numbers, reduce
/// each modulo `num_pieces` and keep the ones not already chosen; hash the previous digest
/// again and repeat until `k` indices are chosen.
///
/// When the torrent has no more than `k` pieces the loop could never find `k` distinct
/// indices, so every piece is returned, in index order. A torrent without pieces yields an
/// empty set. `k` is meant to be our own small constant ([`ALLOWED_FAST_SET_SIZE`]): the
/// number of hashes grows like a coupon collector's as `k` approaches `num_pieces`.
pub fn allowed_fast_set(ip: Ipv4Addr, info_hash: &InfoHash, num_pieces: u32, k: usize) -> Vec<u32> {
    // Both sides are compared as u64 so a `k` beyond u32 cannot wrap on any platform.
    if k as u64 >= u64::from(num_pieces) {
        return (0..num_pieces).collect();
    }

    let masked = u32::from(ip) & NETWORK_MASK;
    let mut seed = [0u8; 24];
    let (address_part, hash_part) = seed.split_at_mut(4);
    address_part.copy_from_slice(&masked.to_be_bytes());
    hash_part.copy_from_slice(info_hash.as_bytes());

    let mut chosen: Vec<u32> = Vec::with_capacity(k);
    let mut digest: [u8; 20] = Sha1::digest(seed).into();
    while chosen.len() < k {
        for chunk in digest.chunks_exact(4) {
            let mut word = [0u8; 4];
            word.copy_from_slice(chunk);
            let index = u32::from_be_bytes(word) % num_pieces;
            if !chosen.contains(&index) {
                chosen.push(index);
                if chosen.len() == k {
                    break;
                }
            }
        }
        digest = Sha1::digest(digest).into();
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The example of BEP 6: a node at 80.4.4.200 and a torrent of 1313 pieces whose
    /// info-hash is twenty 0xaa bytes.
    fn bep6_example(k: usize) -> Vec<u32> {
        allowed_fast_set(Ipv4Addr::new(80, 4, 4, 200), &InfoHash([0xaa; 20]), 1313, k)
    }

    #[test]
    fn seven_piece_set_matches_the_bep6_example() {
        assert_eq!(bep6_example(7), vec![1059, 431, 808, 1217, 287, 376, 1188]);
    }

    #[test]
    fn nine_piece_set_matches_the_bep6_example() {
        assert_eq!(
            bep6_example(9),
            vec![1059, 431, 808, 1217, 287, 376, 1188, 353, 508]
        );
    }

    #[test]
    fn addresses_in_the_same_slash_24_share_a_set() {
        let hash = InfoHash([0x17; 20]);
        let a = allowed_fast_set(Ipv4Addr::new(10, 1, 2, 3), &hash, 5000, 10);
        let b = allowed_fast_set(Ipv4Addr::new(10, 1, 2, 250), &hash, 5000, 10);
        assert_eq!(a, b);
    }

    #[test]
    fn a_neighbouring_network_gets_a_different_set() {
        let hash = InfoHash([0x17; 20]);
        let a = allowed_fast_set(Ipv4Addr::new(10, 1, 2, 3), &hash, 5000, 10);
        let b = allowed_fast_set(Ipv4Addr::new(10, 1, 3, 3), &hash, 5000, 10);
        assert_ne!(a, b);
    }

    #[test]
    fn a_torrent_with_no_more_pieces_than_k_allows_every_piece() {
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let hash = InfoHash([1; 20]);
        assert_eq!(allowed_fast_set(ip, &hash, 4, 10), vec![0, 1, 2, 3]);
        assert_eq!(
            allowed_fast_set(ip, &hash, 10, 10),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_torrent_without_pieces_or_a_zero_k_allows_nothing() {
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        let hash = InfoHash([1; 20]);
        assert!(allowed_fast_set(ip, &hash, 0, 10).is_empty());
        assert!(allowed_fast_set(ip, &hash, 100, 0).is_empty());
    }

    #[test]
    fn the_usual_set_size_is_ten() {
        assert_eq!(ALLOWED_FAST_SET_SIZE, 10);
    }

    proptest! {
        #[test]
        fn the_set_has_min_k_pieces_distinct_indices_all_in_range(
            ip in any::<u32>(),
            hash in any::<[u8; 20]>(),
            num_pieces in 0u32..3000,
            k in 0usize..40,
        ) {
            let set = allowed_fast_set(Ipv4Addr::from(ip), &InfoHash(hash), num_pieces, k);
            prop_assert_eq!(set.len(), k.min(num_pieces as usize));
            prop_assert!(set.iter().all(|&i| i < num_pieces));
            let mut sorted = set.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), set.len());
        }

        #[test]
        fn a_larger_k_extends_the_smaller_set(
            ip in any::<u32>(),
            hash in any::<[u8; 20]>(),
            num_pieces in 30u32..100_000,
            k in 0usize..20,
        ) {
            let ip = Ipv4Addr::from(ip);
            let hash = InfoHash(hash);
            let small = allowed_fast_set(ip, &hash, num_pieces, k);
            let large = allowed_fast_set(ip, &hash, num_pieces, k + 5);
            prop_assert_eq!(large.get(..k), Some(small.as_slice()));
        }
    }
}
