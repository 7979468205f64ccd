//! The `tokio-util` codec that frames peer messages on a byte stream.
//!
//! It finds message boundaries by the 4-byte length prefix, refuses any prefix over its
//! configured maximum before buffering a byte of the payload, and hands complete frames to
//! [`Message`]'s parser. It keeps no state between frames beyond its maximum, so a frame
//! split at any byte boundary decodes the same as one that arrives whole.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{message_id, Message, WireError, BLOCK_SIZE};

/// Size of the big-endian length prefix in front of every message.
const PREFIX_LEN: usize = 4;

/// The default largest frame (length prefix value) the codec accepts: 1 MiB.
///
/// A piece message needs 16 KiB plus 9 bytes, and a bitfield of 1 MiB covers more than
/// eight million pieces, far beyond any real torrent; an extension handshake or metadata
/// block (BEP 9) is a few tens of KiB. Anything bigger is a peer trying to make us buffer.
pub const DEFAULT_MAX_MESSAGE_LEN: u32 = 1 << 20;

/// The smallest maximum the codec allows: one full piece message (id, index, offset and a
/// 16 KiB block), so no setting can make valid block transfers impossible.
pub const MIN_MAX_MESSAGE_LEN: u32 = 1 + 4 + 4 + BLOCK_SIZE;

/// Extra room reserved behind a block (a `piece` message) that has not fully arrived:
/// four more blocks.
const READ_AHEAD: usize = 4 * BLOCK_SIZE as usize;

/// Decodes and encodes length-prefixed peer messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageCodec {
    /// The largest length prefix accepted; it bounds how much a peer can make us buffer.
    max_len: u32,
}

impl MessageCodec {
    /// A codec that accepts frames up to `max_len` bytes (id plus payload).
    ///
    /// Values below [`MIN_MAX_MESSAGE_LEN`] are raised to it so piece messages always fit.
    pub fn new(max_len: u32) -> Self {
        Self {
            max_len: max_len.max(MIN_MAX_MESSAGE_LEN),
        }
    }

    /// A codec sized for a torrent of `num_pieces` pieces: the default maximum, or more if
    /// the torrent's bitfield message would not fit in it.
    pub fn for_piece_count(num_pieces: u32) -> Self {
        let bitfield_frame = num_pieces.div_ceil(8).saturating_add(1);
        Self::new(bitfield_frame.max(DEFAULT_MAX_MESSAGE_LEN))
    }

    /// The largest frame this codec accepts.
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// The length prefix at the front of `src`, or `None` if fewer than 4 bytes are there.
    fn peek_len(src: &[u8]) -> Option<u32> {
        let prefix: [u8; PREFIX_LEN] = src.get(..PREFIX_LEN)?.try_into().ok()?;
        Some(u32::from_be_bytes(prefix))
    }
}

impl Default for MessageCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_LEN)
    }
}

impl Decoder for MessageCodec {
    type Item = Message;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, WireError> {
        let Some(len) = Self::peek_len(src) else {
            return Ok(None);
        };
        if len > self.max_len {
            return Err(WireError::MessageTooLong {
                len,
                max: self.max_len,
            });
        }
        // `len` is bounded by `max_len`, a `u32`, so the sum cannot overflow a `usize` on
        // any platform tokio supports; saturating keeps that an assumption, not a panic.
        let frame_len = usize::try_from(len).unwrap_or(usize::MAX);
        let needed = frame_len.saturating_add(PREFIX_LEN);
        if src.len() < needed {
            // Reserving the rest of the frame now lets the next read fill it in one go;
            // the amount is bounded by `max_len`, whatever the peer claims. Behind a block
            // more usually follow, so room for [`READ_AHEAD`] more is reserved with it:
            // the buffer then grows once to a size that holds several blocks, instead of
            // growing and copying its contents at every block (a sixth of the protocol
            // thread's time in a 1 GiB download). Other frames reserve only what they
            // need, so a peer that sends no blocks (a big bitfield, then nothing) keeps no
            // read-ahead.
            let mut more = needed.saturating_sub(src.len());
            if src.get(PREFIX_LEN) == Some(&message_id::PIECE) {
                more = more.saturating_add(READ_AHEAD);
            }
            src.reserve(more);
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        let frame = src.split_to(frame_len);
        Message::decode_frame(frame).map(Some)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, WireError> {
        if let Some(message) = self.decode(src)? {
            return Ok(Some(message));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let needed = match Self::peek_len(src) {
            Some(len) => usize::try_from(len)
                .unwrap_or(usize::MAX)
                .saturating_add(PREFIX_LEN),
            None => PREFIX_LEN,
        };
        Err(WireError::TruncatedMessage {
            buffered: src.len(),
            needed,
        })
    }
}

impl Encoder<&Message> for MessageCodec {
    type Error = WireError;

    fn encode(&mut self, item: &Message, dst: &mut BytesMut) -> Result<(), WireError> {
        item.encode(dst)
    }
}

impl Encoder<Message> for MessageCodec {
    type Error = WireError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), WireError> {
        item.encode(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{message_id, Block, BlockRequest};
    use bytes::{BufMut, Bytes};
    use proptest::prelude::*;

    fn encode_all(messages: &[Message]) -> BytesMut {
        let mut buf = BytesMut::new();
        for m in messages {
            if let Err(e) = MessageCodec::default().encode(m, &mut buf) {
                panic!("encoding {m:?} failed: {e}");
            }
        }
        buf
    }

    /// Feeds `chunks` one after another, decoding after each, then decodes to end of stream.
    fn decode_chunks<'a>(
        codec: &mut MessageCodec,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<Message>, WireError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(m) = codec.decode(&mut buf)? {
                out.push(m);
            }
        }
        while let Some(m) = codec.decode_eof(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    fn decode_one(bytes: &[u8]) -> Result<Option<Message>, WireError> {
        MessageCodec::default().decode(&mut BytesMut::from(bytes))
    }

    /// A frame with the given id and payload, prefix computed.
    fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.put_u32(payload.len() as u32 + 1);
        v.put_u8(id);
        v.put_slice(payload);
        v
    }

    fn sample_messages() -> Vec<Message> {
        let req = BlockRequest {
            piece: 3,
            offset: 16384,
            length: 16384,
        };
        vec![
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(0xDEAD_BEEF),
            Message::Bitfield(Bytes::from_static(&[0xF0, 0x01])),
            Message::Request(req),
            Message::Piece(Block {
                piece: 3,
                offset: 0,
                data: Bytes::from_static(b"hello block"),
            }),
            Message::Cancel(req),
            Message::Port(6881),
            Message::HaveAll,
            Message::HaveNone,
            Message::SuggestPiece(7),
            Message::RejectRequest(req),
            Message::AllowedFast(9),
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"d1:md11:ut_metadatai1eee"),
            },
        ]
    }

    #[test]
    fn encoding_writes_bep3_framing() {
        assert_eq!(&encode_all(&[Message::KeepAlive])[..], &[0, 0, 0, 0]);
        assert_eq!(&encode_all(&[Message::Interested])[..], &[0, 0, 0, 1, 2]);
        assert_eq!(
            &encode_all(&[Message::Have(5)])[..],
            &[0, 0, 0, 5, 4, 0, 0, 0, 5]
        );
        assert_eq!(
            &encode_all(&[Message::Port(0x1AE1)])[..],
            &[0, 0, 0, 3, 9, 0x1A, 0xE1]
        );
        assert_eq!(
            &encode_all(&[Message::Request(BlockRequest {
                piece: 1,
                offset: 2,
                length: 3
            })])[..],
            &[0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        assert_eq!(
            &encode_all(&[Message::Piece(Block {
                piece: 1,
                offset: 2,
                data: Bytes::from_static(&[0xAA, 0xBB]),
            })])[..],
            &[0, 0, 0, 11, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0xAA, 0xBB]
        );
        assert_eq!(
            &encode_all(&[Message::Extended {
                id: 3,
                payload: Bytes::from_static(b"x"),
            }])[..],
            &[0, 0, 0, 3, 20, 3, b'x']
        );
    }

    #[test]
    fn every_sample_message_round_trips() {
        let messages = sample_messages();
        let bytes = encode_all(&messages);
        let decoded = decode_chunks(&mut MessageCodec::default(), [&bytes[..]]);
        assert_eq!(decoded.ok(), Some(messages));
    }

    #[test]
    fn stream_split_at_every_byte_boundary_decodes_the_same() {
        let messages = sample_messages();
        let bytes = encode_all(&messages);
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            let decoded = decode_chunks(&mut MessageCodec::default(), [a, b]);
            assert_eq!(decoded.ok().as_ref(), Some(&messages), "split at {split}");
        }
    }

    #[test]
    fn stream_fed_byte_by_byte_decodes_the_same() {
        let messages = sample_messages();
        let bytes = encode_all(&messages);
        let decoded = decode_chunks(&mut MessageCodec::default(), bytes.chunks(1));
        assert_eq!(decoded.ok(), Some(messages));
    }

    #[test]
    fn piece_data_shares_the_receive_buffer() {
        let bytes = encode_all(&[Message::Piece(Block {
            piece: 0,
            offset: 0,
            data: Bytes::from(vec![7u8; 100]),
        })]);
        let mut buf = bytes;
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        match MessageCodec::default().decode(&mut buf) {
            Ok(Some(Message::Piece(block))) => {
                let at = block.data.as_ptr() as usize;
                assert!(at >= start && at < end, "block data was copied");
                assert_eq!(at - start, 13);
            }
            other => panic!("expected a piece, got {other:?}"),
        }
    }

    /// A block that has not fully arrived reserves itself and [`READ_AHEAD`] behind it,
    /// so the buffer grows once for a run of blocks (it grew and copied at every block);
    /// any other frame reserves only itself, so an idle peer's buffer stays small.
    #[test]
    fn incomplete_frame_reserves_what_the_frame_needs_and_a_block_some_more() {
        let mut buf = BytesMut::from(&[0u8, 0, 0x40, 0x09, 7][..]);
        assert!(matches!(MessageCodec::default().decode(&mut buf), Ok(None)));
        assert!(buf.capacity() >= 0x4009 + 4 + READ_AHEAD);
        assert!(buf.capacity() < 2 * (0x4009 + 4 + READ_AHEAD));
        // A bitfield as long as a block.
        let mut buf = BytesMut::from(&[0u8, 0, 0x40, 0x09, 5][..]);
        assert!(matches!(MessageCodec::default().decode(&mut buf), Ok(None)));
        assert!(buf.capacity() >= 0x4009 + 4);
        assert!(buf.capacity() < 2 * (0x4009 + 4));
    }

    #[test]
    fn length_prefix_over_the_maximum_is_rejected_before_buffering() {
        let mut buf = BytesMut::from(&[0xFFu8, 0xFF, 0xFF, 0xFF][..]);
        let result = MessageCodec::default().decode(&mut buf);
        assert!(matches!(
            result,
            Err(WireError::MessageTooLong {
                len: u32::MAX,
                max: DEFAULT_MAX_MESSAGE_LEN
            })
        ));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn maximum_is_configurable_but_never_below_one_piece_message() {
        assert_eq!(MessageCodec::new(0).max_len(), MIN_MAX_MESSAGE_LEN);
        assert_eq!(MessageCodec::new(100_000).max_len(), 100_000);
        let mut buf = BytesMut::new();
        buf.put_u32(100_001);
        assert!(matches!(
            MessageCodec::new(100_000).decode(&mut buf),
            Err(WireError::MessageTooLong {
                len: 100_001,
                max: 100_000
            })
        ));
    }

    #[test]
    fn codec_for_a_huge_torrent_fits_its_bitfield() {
        let pieces = 20_000_000;
        let codec = MessageCodec::for_piece_count(pieces);
        assert_eq!(codec.max_len(), pieces / 8 + 1);
        assert_eq!(
            MessageCodec::for_piece_count(1000).max_len(),
            DEFAULT_MAX_MESSAGE_LEN
        );
        assert_eq!(
            MessageCodec::for_piece_count(u32::MAX).max_len(),
            u32::MAX.div_ceil(8) + 1
        );
    }

    #[test]
    fn fixed_size_messages_of_the_wrong_size_are_rejected() {
        let cases: [(u8, u32); 13] = [
            (message_id::CHOKE, 1),
            (message_id::UNCHOKE, 1),
            (message_id::INTERESTED, 1),
            (message_id::NOT_INTERESTED, 1),
            (message_id::HAVE_ALL, 1),
            (message_id::HAVE_NONE, 1),
            (message_id::HAVE, 5),
            (message_id::SUGGEST_PIECE, 5),
            (message_id::ALLOWED_FAST, 5),
            (message_id::REQUEST, 13),
            (message_id::CANCEL, 13),
            (message_id::REJECT_REQUEST, 13),
            (message_id::PORT, 3),
        ];
        for (id, expected) in cases {
            // A length of 0 is a keep-alive, not a short message, so 1-byte messages are
            // only tested too long.
            for wrong in [expected - 1, expected + 1, expected + 100] {
                if wrong == 0 {
                    continue;
                }
                let bytes = frame(id, &vec![0; wrong as usize - 1]);
                match decode_one(&bytes) {
                    Err(WireError::WrongMessageLength {
                        id: got_id,
                        len,
                        expected: got_expected,
                    }) => {
                        assert_eq!((got_id, len, got_expected), (id, wrong, expected));
                    }
                    other => panic!("id {id} with length {wrong}: got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn request_larger_than_16kib_is_rejected() {
        for id in [
            message_id::REQUEST,
            message_id::CANCEL,
            message_id::REJECT_REQUEST,
        ] {
            let bytes = frame(id, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0x01]);
            assert!(matches!(
                decode_one(&bytes),
                Err(WireError::BlockLengthOutOfRange { id: got, length: 16385 }) if got == id
            ));
        }
    }

    #[test]
    fn request_of_zero_bytes_is_rejected() {
        let bytes = frame(message_id::REQUEST, &[0; 12]);
        assert!(matches!(
            decode_one(&bytes),
            Err(WireError::BlockLengthOutOfRange { length: 0, .. })
        ));
    }

    #[test]
    fn request_of_exactly_16kib_is_accepted() {
        let bytes = frame(
            message_id::REQUEST,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0x00],
        );
        assert!(matches!(
            decode_one(&bytes),
            Ok(Some(Message::Request(BlockRequest {
                length: BLOCK_SIZE,
                ..
            })))
        ));
    }

    #[test]
    fn piece_shorter_than_its_header_is_rejected() {
        for header_bytes in 0..8 {
            let bytes = frame(message_id::PIECE, &vec![0; header_bytes]);
            assert!(matches!(
                decode_one(&bytes),
                Err(WireError::PieceTooShort { len }) if len == header_bytes as u32 + 1
            ));
        }
    }

    #[test]
    fn piece_with_an_empty_block_is_rejected() {
        let bytes = frame(message_id::PIECE, &[0; 8]);
        assert!(matches!(
            decode_one(&bytes),
            Err(WireError::PieceBlockOutOfRange { block_len: 0 })
        ));
    }

    #[test]
    fn piece_with_a_block_larger_than_16kib_is_rejected() {
        let bytes = frame(message_id::PIECE, &vec![0; 8 + 16385]);
        assert!(matches!(
            decode_one(&bytes),
            Err(WireError::PieceBlockOutOfRange { block_len: 16385 })
        ));
        let bytes = frame(message_id::PIECE, &vec![0; 8 + 16384]);
        assert!(matches!(decode_one(&bytes), Ok(Some(Message::Piece(_)))));
    }

    #[test]
    fn extended_message_without_an_id_is_rejected() {
        assert!(matches!(
            decode_one(&frame(message_id::EXTENDED, &[])),
            Err(WireError::ExtendedMissingId)
        ));
        assert_eq!(
            decode_one(&frame(message_id::EXTENDED, &[1]))
                .ok()
                .flatten(),
            Some(Message::Extended {
                id: 1,
                payload: Bytes::new()
            })
        );
    }

    #[test]
    fn unknown_ids_are_skipped_and_the_next_message_decodes() {
        let mut bytes = frame(0x42, b"some future payload");
        bytes.extend(frame(0xFF, &[]));
        bytes.extend_from_slice(&encode_all(&[Message::Have(1)]));
        let decoded = decode_chunks(&mut MessageCodec::default(), [&bytes[..]]);
        assert_eq!(
            decoded.ok(),
            Some(vec![
                Message::Unknown { id: 0x42 },
                Message::Unknown { id: 0xFF },
                Message::Have(1)
            ])
        );
    }

    #[test]
    fn unknown_messages_cannot_be_encoded() {
        let mut buf = BytesMut::new();
        assert!(matches!(
            MessageCodec::default().encode(Message::Unknown { id: 0x42 }, &mut buf),
            Err(WireError::UnknownNotEncodable { id: 0x42 })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn stream_ending_mid_message_is_a_truncation_error() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 5, 4, 0][..]);
        assert!(matches!(
            MessageCodec::default().decode_eof(&mut buf),
            Err(WireError::TruncatedMessage {
                buffered: 6,
                needed: 9
            })
        ));
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert!(matches!(
            MessageCodec::default().decode_eof(&mut buf),
            Err(WireError::TruncatedMessage {
                buffered: 2,
                needed: 4
            })
        ));
    }

    #[test]
    fn error_messages_name_the_offending_values() {
        let e = WireError::MessageTooLong {
            len: 5_000_000,
            max: 1_048_576,
        };
        assert_eq!(
            e.to_string(),
            "message length 5000000 exceeds the maximum of 1048576 bytes"
        );
        let e = WireError::BlockLengthOutOfRange {
            id: 6,
            length: 32768,
        };
        assert!(e.to_string().contains("32768"));
    }

    /// Any message the decoder could produce (everything but `Unknown`), within bounds.
    pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
        let req =
            (any::<u32>(), any::<u32>(), 1..=BLOCK_SIZE).prop_map(|(piece, offset, length)| {
                BlockRequest {
                    piece,
                    offset,
                    length,
                }
            });
        let bytes =
            |max: usize| proptest::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from);
        prop_oneof![
            Just(Message::KeepAlive),
            Just(Message::Choke),
            Just(Message::Unchoke),
            Just(Message::Interested),
            Just(Message::NotInterested),
            Just(Message::HaveAll),
            Just(Message::HaveNone),
            any::<u32>().prop_map(Message::Have),
            any::<u32>().prop_map(Message::SuggestPiece),
            any::<u32>().prop_map(Message::AllowedFast),
            any::<u16>().prop_map(Message::Port),
            bytes(64).prop_map(Message::Bitfield),
            req.clone().prop_map(Message::Request),
            req.clone().prop_map(Message::Cancel),
            req.prop_map(Message::RejectRequest),
            (
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 1..300)
            )
                .prop_map(|(piece, offset, data)| Message::Piece(Block {
                    piece,
                    offset,
                    data: Bytes::from(data)
                })),
            (any::<u8>(), bytes(64)).prop_map(|(id, payload)| Message::Extended { id, payload }),
            arb_hash_request().prop_map(Message::HashRequest),
            arb_hash_request().prop_map(Message::HashReject),
            (arb_hash_request(), 0u32..4).prop_flat_map(|(request, extra)| {
                let n = (request.length + extra.min(request.proof_layers)) as usize;
                proptest::collection::vec(any::<[u8; 32]>(), n..=n).prop_map(move |hashes| {
                    Message::Hashes(crate::wire::Hashes { request, hashes })
                })
            }),
        ]
    }

    /// Any hash range the decoder accepts (kept short so `hashes` stay small).
    fn arb_hash_request() -> impl Strategy<Value = crate::wire::HashRequest> {
        (
            any::<[u8; 32]>(),
            0..=crate::wire::MAX_BASE_LAYER,
            0u32..1000,
            0u32..4,
            0..=crate::wire::MAX_PROOF_LAYERS,
        )
            .prop_map(|(pieces_root, base_layer, slot, log_len, proof_layers)| {
                let length = 1 << log_len;
                crate::wire::HashRequest {
                    pieces_root,
                    base_layer,
                    index: slot * length,
                    length,
                    proof_layers,
                }
            })
    }

    proptest! {
        #[test]
        fn any_message_round_trips(message in arb_message()) {
            let bytes = encode_all(std::slice::from_ref(&message));
            let decoded = decode_chunks(&mut MessageCodec::default(), [&bytes[..]]);
            prop_assert_eq!(decoded.ok(), Some(vec![message]));
        }

        #[test]
        fn message_stream_in_random_chunks_decodes_the_same(
            messages in proptest::collection::vec(arb_message(), 0..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let bytes = encode_all(&messages);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            let chunks = points.windows(2).filter_map(|w| bytes.get(w[0]..w[1]));
            let decoded = decode_chunks(&mut MessageCodec::default(), chunks);
            prop_assert_eq!(decoded.ok(), Some(messages));
        }

        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            chunk in 1usize..20,
        ) {
            let _ = decode_chunks(&mut MessageCodec::default(), bytes.chunks(chunk));
        }
    }
}
