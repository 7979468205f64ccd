//! The peer wire protocol seen from outside the crate: a handshake followed by messages on
//! one byte stream, decoded the way the engine will, by swapping codecs on one buffer.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use torrent_actors::wire::{
    Bitfield, BitfieldError, Block, BlockRequest, Handshake, HandshakeCodec, Message, MessageCodec,
    Reserved, WireError, BLOCK_SIZE, DEFAULT_MAX_MESSAGE_LEN, HANDSHAKE_LEN,
};
use torrent_actors::{InfoHash, PeerId};

fn our_handshake() -> Handshake {
    let mut reserved = Reserved::none();
    reserved.set_extension_protocol(true);
    reserved.set_fast_extension(true);
    reserved.set_dht(true);
    Handshake::new(
        reserved,
        InfoHash([0x5A; 20]),
        PeerId(*b"-TA0001-000000000001"),
    )
}

/// What a seeder sends right after connecting: handshake, bitfield, unchoke, one block.
fn seeder_opening(bitfield: &Bitfield) -> (BytesMut, Vec<Message>) {
    let messages = vec![
        Message::Bitfield(bitfield.to_payload()),
        Message::Unchoke,
        Message::Piece(Block {
            piece: 2,
            offset: 0,
            data: Bytes::from(vec![0xC3; BLOCK_SIZE as usize]),
        }),
        Message::KeepAlive,
    ];
    let mut wire = BytesMut::new();
    let handshake_result = HandshakeCodec.encode(our_handshake(), &mut wire);
    assert!(handshake_result.is_ok());
    let mut codec = MessageCodec::default();
    for m in &messages {
        assert!(codec.encode(m, &mut wire).is_ok(), "encoding {m:?}");
    }
    (wire, messages)
}

/// Decodes a handshake and then messages from `chunks`, as a connection would.
fn read_connection<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(Option<Handshake>, Vec<Message>), WireError> {
    let mut buf = BytesMut::new();
    let mut handshake = None;
    let mut codec = MessageCodec::default();
    let mut messages = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        if handshake.is_none() {
            handshake = HandshakeCodec.decode(&mut buf)?;
            if handshake.is_none() {
                continue;
            }
        }
        while let Some(m) = codec.decode(&mut buf)? {
            messages.push(m);
        }
    }
    if handshake.is_some() {
        while let Some(m) = codec.decode_eof(&mut buf)? {
            messages.push(m);
        }
    }
    Ok((handshake, messages))
}

#[test]
fn handshake_then_messages_decode_from_one_stream() {
    let mut bitfield = Bitfield::new(20);
    for i in [0, 2, 19] {
        assert!(bitfield.set(i).is_ok());
    }
    let (wire, expected) = seeder_opening(&bitfield);
    let (handshake, messages) = match read_connection([&wire[..]]) {
        Ok(read) => read,
        Err(e) => panic!("decoding failed: {e}"),
    };
    assert_eq!(handshake, Some(our_handshake()));
    assert_eq!(messages, expected);

    let Some(Message::Bitfield(payload)) = messages.first() else {
        panic!("first message is not a bitfield");
    };
    let theirs = Bitfield::from_payload(payload, 20);
    assert_eq!(
        theirs.as_ref().map(|b| b.iter_set().collect()),
        Ok(vec![0, 2, 19])
    );
}

#[test]
fn connection_split_at_every_byte_decodes_the_same() {
    let (wire, expected) = seeder_opening(&Bitfield::full(9));
    for split in 0..=wire.len() {
        let (a, b) = wire.split_at(split);
        let read = read_connection([a, b]);
        assert!(
            matches!(&read, Ok((Some(h), m)) if *h == our_handshake() && *m == expected),
            "split at {split}: {read:?}"
        );
    }
}

#[test]
fn connection_fed_one_byte_at_a_time_decodes_the_same() {
    let (wire, expected) = seeder_opening(&Bitfield::new(100));
    let read = read_connection(wire.chunks(1));
    assert!(
        matches!(&read, Ok((Some(_), m)) if *m == expected),
        "{read:?}"
    );
}

#[test]
fn peer_speaking_another_protocol_is_rejected_at_the_handshake() {
    let mut bytes = our_handshake().encode();
    bytes[1] = b'b';
    assert!(matches!(
        Handshake::parse(&bytes),
        Err(WireError::WrongProtocolString { .. })
    ));
    let http = b"GET / HTTP/1.1\r\n";
    assert!(matches!(
        read_connection([&http[..]]),
        Err(WireError::WrongProtocolLength { found: b'G' })
    ));
}

#[test]
fn handshake_reserved_bits_survive_the_round_trip() {
    assert_eq!(our_handshake().encode().len(), HANDSHAKE_LEN);
    let parsed = Handshake::parse(&our_handshake().encode());
    let Ok(parsed) = parsed else {
        panic!("parse failed: {parsed:?}");
    };
    assert!(parsed.reserved.extension_protocol());
    assert!(parsed.reserved.fast_extension());
    assert!(parsed.reserved.dht());
    assert_eq!(parsed.reserved.0, [0, 0, 0, 0, 0, 0x10, 0, 0x05]);
}

#[test]
fn request_larger_than_16kib_is_rejected() {
    let mut wire = BytesMut::new();
    wire.put_u32(13);
    wire.put_u8(6);
    wire.put_u32(0);
    wire.put_u32(0);
    wire.put_u32(BLOCK_SIZE + 1);
    assert!(matches!(
        MessageCodec::default().decode(&mut wire),
        Err(WireError::BlockLengthOutOfRange {
            id: 6,
            length: 16385
        })
    ));
}

#[test]
fn oversized_length_prefix_is_rejected() {
    let mut wire = BytesMut::new();
    wire.put_u32(DEFAULT_MAX_MESSAGE_LEN + 1);
    assert!(matches!(
        MessageCodec::default().decode(&mut wire),
        Err(WireError::MessageTooLong { .. })
    ));
}

#[test]
fn unknown_message_is_reported_and_the_stream_continues() {
    let mut wire = BytesMut::new();
    wire.put_u32(4);
    wire.put_u8(0x63);
    wire.put_slice(b"abc");
    let mut codec = MessageCodec::default();
    assert!(codec.encode(Message::Interested, &mut wire).is_ok());
    assert_eq!(
        codec.decode(&mut wire).ok().flatten(),
        Some(Message::Unknown { id: 0x63 })
    );
    assert_eq!(
        codec.decode(&mut wire).ok().flatten(),
        Some(Message::Interested)
    );
}

#[test]
fn block_request_is_recovered_from_a_block() {
    let block = Block {
        piece: 4,
        offset: 32768,
        data: Bytes::from_static(&[1, 2, 3]),
    };
    assert_eq!(
        block.request(),
        BlockRequest {
            piece: 4,
            offset: 32768,
            length: 3
        }
    );
}

#[test]
fn peer_bitfield_with_spare_bits_is_rejected() {
    assert_eq!(
        Bitfield::from_payload(&[0xFF, 0xFF], 12),
        Err(BitfieldError::SpareBitsSet { num_pieces: 12 })
    );
    assert!(matches!(
        Bitfield::from_payload(&[0xFF], 12),
        Err(BitfieldError::WrongLength { .. })
    ));
}
