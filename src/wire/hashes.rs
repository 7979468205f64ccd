//! The BitTorrent v2 hash messages (BEP 52): `hash request` (21), `hashes` (22) and
//! `hash reject` (23), which carry nodes of a file's SHA-256 Merkle tree between peers.
//!
//! Only the byte layout and the bounds that need no knowledge of the torrent live here:
//! a range of at most [`MAX_HASH_COUNT`] nodes, a power of two, aligned on its own size,
//! on a layer a file of at most 2^64 bytes can have, and a `hashes` body that is a whole
//! number of 32-byte nodes no more than the range plus its proof. Whether the range fits
//! the file, and whether a `hashes` answers a request we made and hashes up to the root,
//! is the engine's business (see `crate::metainfo::merkle::verify_hashes`).

use bytes::{Buf, BufMut, BytesMut};

use super::WireError;

/// The most nodes one request may ask for (and one `hashes` may carry beyond its proof):
/// 8192 nodes are 256 KiB, a quarter of the default frame maximum, and cover a 128 MiB
/// piece's leaves or 8192 pieces of a piece layer.
pub const MAX_HASH_COUNT: u32 = 8192;

/// The highest layer a tree can have: a file of 2^64 bytes has 2^50 leaves of 16 KiB, so
/// its root sits at layer 50. Anything above names no node of any file.
pub const MAX_BASE_LAYER: u32 = 50;

/// The most proof layers a request can usefully ask for: one per layer up to the root.
pub const MAX_PROOF_LAYERS: u32 = MAX_BASE_LAYER;

/// Size of the fixed part of the three messages: root, base layer, index, length, proof
/// layers.
pub const HASH_HEADER_LEN: usize = 32 + 4 * 4;

/// A range of nodes of one file's tree: the body of `hash request` and `hash reject`, and
/// the header of `hashes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashRequest {
    /// The file's `pieces root`: which tree.
    pub pieces_root: [u8; 32],
    /// The layer of the nodes asked for: 0 for the 16 KiB leaves, upwards to the root.
    pub base_layer: u32,
    /// The first node's index within its layer; a multiple of `length`.
    pub index: u32,
    /// How many nodes: a power of two, 1 to [`MAX_HASH_COUNT`].
    pub length: u32,
    /// How many layers of uncle nodes above the range to send as proof.
    pub proof_layers: u32,
}

/// A `hashes` message: the nodes of a range, then the uncle nodes that prove them, from
/// the lowest layer up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashes {
    /// The range these nodes answer.
    pub request: HashRequest,
    /// The range's `length` nodes followed by at most `proof_layers` uncles; the decoder
    /// guarantees the count is in that span.
    pub hashes: Vec<[u8; 32]>,
}

impl Hashes {
    /// The nodes of the range itself.
    pub fn base(&self) -> &[[u8; 32]] {
        let n = usize::try_from(self.request.length).unwrap_or(usize::MAX);
        self.hashes.get(..n).unwrap_or(&self.hashes)
    }

    /// The uncle nodes after the range, lowest layer first.
    pub fn proof(&self) -> &[[u8; 32]] {
        let n = usize::try_from(self.request.length).unwrap_or(usize::MAX);
        self.hashes.get(n..).unwrap_or_default()
    }
}

impl HashRequest {
    /// Checks the bounds that hold whatever the torrent: see the module documentation.
    pub fn check(&self, msg_id: u8) -> Result<(), WireError> {
        if self.length == 0 || self.length > MAX_HASH_COUNT || !self.length.is_power_of_two() {
            return Err(WireError::HashLengthOutOfRange {
                id: msg_id,
                length: self.length,
            });
        }
        if self.index % self.length != 0 {
            return Err(WireError::HashIndexNotAligned {
                id: msg_id,
                index: self.index,
                length: self.length,
            });
        }
        if self.base_layer > MAX_BASE_LAYER {
            return Err(WireError::HashBaseLayerTooHigh {
                id: msg_id,
                base_layer: self.base_layer,
            });
        }
        if self.proof_layers > MAX_PROOF_LAYERS {
            return Err(WireError::HashProofLayersTooMany {
                id: msg_id,
                proof_layers: self.proof_layers,
            });
        }
        Ok(())
    }

    /// Appends the 48-byte body.
    pub(super) fn put(&self, dst: &mut BytesMut) {
        dst.put_slice(&self.pieces_root);
        dst.put_u32(self.base_layer);
        dst.put_u32(self.index);
        dst.put_u32(self.length);
        dst.put_u32(self.proof_layers);
    }

    /// Parses and checks the 48-byte header at the front of `body`, consuming it.
    pub(super) fn take(msg_id: u8, len: u32, body: &mut BytesMut) -> Result<Self, WireError> {
        if body.len() < HASH_HEADER_LEN {
            return Err(WireError::WrongMessageLength {
                id: msg_id,
                len,
                expected: HASH_HEADER_LEN as u32 + 1,
            });
        }
        let mut pieces_root = [0u8; 32];
        body.copy_to_slice(&mut pieces_root);
        let request = HashRequest {
            pieces_root,
            base_layer: body.get_u32(),
            index: body.get_u32(),
            length: body.get_u32(),
            proof_layers: body.get_u32(),
        };
        request.check(msg_id)?;
        Ok(request)
    }
}

/// Parses a `hash request` or `hash reject` body, which is exactly the header.
pub(super) fn decode_request(
    msg_id: u8,
    len: u32,
    mut body: BytesMut,
) -> Result<HashRequest, WireError> {
    if body.len() != HASH_HEADER_LEN {
        return Err(WireError::WrongMessageLength {
            id: msg_id,
            len,
            expected: HASH_HEADER_LEN as u32 + 1,
        });
    }
    HashRequest::take(msg_id, len, &mut body)
}

/// Parses a `hashes` body: the header, then the range's nodes and at most one uncle per
/// proof layer.
pub(super) fn decode_hashes(msg_id: u8, len: u32, mut body: BytesMut) -> Result<Hashes, WireError> {
    let request = HashRequest::take(msg_id, len, &mut body)?;
    if body.len() % 32 != 0 {
        return Err(WireError::HashesNotMultipleOf32 { bytes: body.len() });
    }
    let count = body.len() / 32;
    let min = request.length as usize;
    let max = min.saturating_add(request.proof_layers as usize);
    if count < min || count > max {
        return Err(WireError::HashesCountOutOfRange {
            count,
            length: request.length,
            proof_layers: request.proof_layers,
        });
    }
    let hashes = body
        .chunks_exact(32)
        .filter_map(|c| <[u8; 32]>::try_from(c).ok())
        .collect();
    Ok(Hashes { request, hashes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{message_id, Message, MessageCodec};
    use tokio_util::codec::{Decoder, Encoder};

    fn request(base_layer: u32, index: u32, length: u32, proof_layers: u32) -> HashRequest {
        HashRequest {
            pieces_root: [7; 32],
            base_layer,
            index,
            length,
            proof_layers,
        }
    }

    fn frame(id: u8, body: &[u8]) -> BytesMut {
        let mut v = BytesMut::new();
        v.put_u32(body.len() as u32 + 1);
        v.put_u8(id);
        v.put_slice(body);
        v
    }

    fn body(r: &HashRequest) -> BytesMut {
        let mut b = BytesMut::new();
        r.put(&mut b);
        b
    }

    fn decode(mut bytes: BytesMut) -> Result<Option<Message>, WireError> {
        MessageCodec::default().decode(&mut bytes)
    }

    #[test]
    fn hash_request_has_the_bep52_layout() {
        let mut out = BytesMut::new();
        MessageCodec::default()
            .encode(Message::HashRequest(request(0, 4, 4, 2)), &mut out)
            .unwrap();
        let mut expected = vec![0, 0, 0, 49, 21];
        expected.extend([7; 32]);
        expected.extend([0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 2]);
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn the_three_hash_messages_round_trip() {
        let r = request(1, 8, 8, 3);
        let messages = [
            Message::HashRequest(r),
            Message::HashReject(r),
            Message::Hashes(Hashes {
                request: r,
                hashes: (0..10u8).map(|i| [i; 32]).collect(),
            }),
        ];
        for m in messages {
            let mut out = BytesMut::new();
            MessageCodec::default().encode(&m, &mut out).unwrap();
            // Split in two halves, as a socket might deliver it.
            let half = out.len() / 2;
            let mut buf = BytesMut::from(&out[..half]);
            let mut codec = MessageCodec::default();
            assert!(matches!(codec.decode(&mut buf), Ok(None)));
            buf.extend_from_slice(&out[half..]);
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(m));
        }
    }

    #[test]
    fn hashes_splits_base_and_proof() {
        let h = Hashes {
            request: request(0, 0, 2, 2),
            hashes: vec![[1; 32], [2; 32], [3; 32]],
        };
        assert_eq!(h.base(), &[[1; 32], [2; 32]]);
        assert_eq!(h.proof(), &[[3; 32]]);
    }

    #[test]
    fn absurd_lengths_are_rejected() {
        for length in [0, 3, 6, MAX_HASH_COUNT * 2, u32::MAX] {
            let b = body(&request(0, 0, length, 0));
            for id in [message_id::HASH_REQUEST, message_id::HASH_REJECT] {
                assert!(matches!(
                    decode(frame(id, &b)),
                    Err(WireError::HashLengthOutOfRange { length: l, .. }) if l == length
                ));
            }
        }
        assert!(decode(frame(
            message_id::HASH_REQUEST,
            &body(&request(0, 0, MAX_HASH_COUNT, 0))
        ))
        .is_ok());
    }

    #[test]
    fn unaligned_index_is_rejected() {
        let b = body(&request(0, 6, 4, 0));
        assert!(matches!(
            decode(frame(message_id::HASH_REQUEST, &b)),
            Err(WireError::HashIndexNotAligned {
                index: 6,
                length: 4,
                ..
            })
        ));
    }

    #[test]
    fn base_and_proof_layers_beyond_any_tree_are_rejected() {
        let b = body(&request(MAX_BASE_LAYER + 1, 0, 1, 0));
        assert!(matches!(
            decode(frame(message_id::HASH_REQUEST, &b)),
            Err(WireError::HashBaseLayerTooHigh { base_layer: 51, .. })
        ));
        let b = body(&request(0, 0, 1, u32::MAX));
        assert!(matches!(
            decode(frame(message_id::HASHES, &b)),
            Err(WireError::HashProofLayersTooMany {
                proof_layers: u32::MAX,
                ..
            })
        ));
    }

    #[test]
    fn request_of_the_wrong_size_is_rejected() {
        let mut b = body(&request(0, 0, 1, 0));
        b.put_u8(0);
        assert!(matches!(
            decode(frame(message_id::HASH_REQUEST, &b)),
            Err(WireError::WrongMessageLength {
                len: 50,
                expected: 49,
                ..
            })
        ));
        assert!(matches!(
            decode(frame(message_id::HASHES, &[0; 47])),
            Err(WireError::WrongMessageLength {
                len: 48,
                expected: 49,
                ..
            })
        ));
    }

    #[test]
    fn hashes_with_a_ragged_or_wrong_count_of_nodes_are_rejected() {
        let mut b = body(&request(0, 0, 2, 1));
        b.put_slice(&[0; 33]);
        assert!(matches!(
            decode(frame(message_id::HASHES, &b)),
            Err(WireError::HashesNotMultipleOf32 { bytes: 33 })
        ));
        for count in [0usize, 1, 4] {
            let mut b = body(&request(0, 0, 2, 1));
            b.put_slice(&vec![0; 32 * count]);
            assert!(matches!(
                decode(frame(message_id::HASHES, &b)),
                Err(WireError::HashesCountOutOfRange { count: c, .. }) if c == count
            ));
        }
    }
}
