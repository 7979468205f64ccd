//! The 68-byte handshake that opens every peer connection, and a codec that reads it.
//!
//! The handshake is the only unframed part of the protocol, so it gets its own codec; the
//! engine swaps to [`super::MessageCodec`] once it has decoded one. This file only parses
//! and writes the bytes: checking that the info-hash is one we serve, or that the peer id
//! is not our own, is the engine's job.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::WireError;
use crate::{InfoHash, PeerId};

/// The protocol string every BitTorrent v1 handshake carries after its length byte.
pub const PROTOCOL_STRING: &[u8; 19] = b"BitTorrent protocol";

/// The handshake's first byte: the length of [`PROTOCOL_STRING`].
const PROTOCOL_LEN: u8 = 19;

/// Size of a handshake on the wire: 1 + 19 + 8 + 20 + 20 bytes.
pub const HANDSHAKE_LEN: usize = 68;

/// Where the protocol string starts and ends, and where each later field starts.
const PSTR_END: usize = 1 + PROTOCOL_STRING.len();
const RESERVED_AT: usize = PSTR_END;
const INFO_HASH_AT: usize = RESERVED_AT + 8;
const PEER_ID_AT: usize = INFO_HASH_AT + 20;

// The layout constants must agree with each other; a mistake here fails the build.
const _: () = assert!(PROTOCOL_STRING.len() == PROTOCOL_LEN as usize);
const _: () = assert!(PEER_ID_AT + 20 == HANDSHAKE_LEN);

/// The eight reserved handshake bytes, which peers use to advertise protocol extensions.
///
/// Bits we do not know are kept as received, so a handshake decoded and re-encoded is
/// byte-for-byte the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reserved(pub [u8; 8]);

impl Reserved {
    /// Byte and mask of the extension protocol bit (BEP 10).
    const EXTENSION_PROTOCOL: (usize, u8) = (5, 0x10);
    /// Byte and mask of the fast extension bit (BEP 6).
    const FAST: (usize, u8) = (7, 0x04);
    /// Byte and mask of the DHT bit (BEP 5).
    const DHT: (usize, u8) = (7, 0x01);

    /// No extension bits set.
    pub const fn none() -> Self {
        Self([0; 8])
    }

    /// Whether the peer speaks the extension protocol (BEP 10).
    pub fn extension_protocol(&self) -> bool {
        self.get(Self::EXTENSION_PROTOCOL)
    }

    /// Advertises (or withdraws) support for the extension protocol (BEP 10).
    pub fn set_extension_protocol(&mut self, on: bool) {
        self.set(Self::EXTENSION_PROTOCOL, on);
    }

    /// Whether the peer speaks the fast extension (BEP 6).
    pub fn fast_extension(&self) -> bool {
        self.get(Self::FAST)
    }

    /// Advertises (or withdraws) support for the fast extension (BEP 6).
    pub fn set_fast_extension(&mut self, on: bool) {
        self.set(Self::FAST, on);
    }

    /// Whether the peer runs a DHT node (BEP 5) and will send a port message.
    pub fn dht(&self) -> bool {
        self.get(Self::DHT)
    }

    /// Advertises (or withdraws) a DHT node (BEP 5).
    pub fn set_dht(&mut self, on: bool) {
        self.set(Self::DHT, on);
    }

    // The byte positions are constants below 8, so `get`/`get_mut` never miss; they are
    // used anyway so that no indexing can panic.
    fn get(&self, (byte, mask): (usize, u8)) -> bool {
        self.0.get(byte).is_some_and(|b| b & mask != 0)
    }

    fn set(&mut self, (byte, mask): (usize, u8), on: bool) {
        if let Some(b) = self.0.get_mut(byte) {
            if on {
                *b |= mask;
            } else {
                *b &= !mask;
            }
        }
    }
}

/// The handshake each side sends first: which extensions it speaks, which torrent it
/// wants, and who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// Extension bits; tells the engine which optional messages this peer understands.
    pub reserved: Reserved,
    /// The torrent the connection is about; the engine routes the connection by it.
    pub info_hash: InfoHash,
    /// The sender's id; the engine uses it to spot connections to itself and duplicates.
    pub peer_id: PeerId,
}

impl Handshake {
    /// A handshake for `info_hash` from `peer_id` with the given extension bits.
    pub fn new(reserved: Reserved, info_hash: InfoHash, peer_id: PeerId) -> Self {
        Self {
            reserved,
            info_hash,
            peer_id,
        }
    }

    /// Parses a complete handshake, checking the protocol length byte and string.
    pub fn parse(bytes: &[u8; HANDSHAKE_LEN]) -> Result<Self, WireError> {
        // A full array always yields `Some`; the error arm only keeps this panic-free.
        parse_prefix(bytes)?.ok_or(WireError::TruncatedHandshake {
            buffered: bytes.len(),
        })
    }

    /// The 68 bytes of this handshake as sent on the wire.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        let mut w = &mut out[..];
        w.put_u8(PROTOCOL_LEN);
        w.put_slice(PROTOCOL_STRING);
        w.put_slice(&self.reserved.0);
        w.put_slice(&self.info_hash.0);
        w.put_slice(&self.peer_id.0);
        out
    }
}

/// Checks as much of a handshake as `buf` holds.
///
/// Returns `Ok(None)` while bytes are missing, but fails as soon as the length byte or the
/// protocol string is wrong, so a peer speaking something else is dropped without waiting
/// for 68 bytes that may never come.
fn parse_prefix(buf: &[u8]) -> Result<Option<Handshake>, WireError> {
    let Some(&pstrlen) = buf.first() else {
        return Ok(None);
    };
    if pstrlen != PROTOCOL_LEN {
        return Err(WireError::WrongProtocolLength { found: pstrlen });
    }
    let Some(pstr) = buf.get(1..PSTR_END) else {
        return Ok(None);
    };
    if pstr != PROTOCOL_STRING {
        return Err(WireError::WrongProtocolString {
            found: String::from_utf8_lossy(pstr).into_owned(),
        });
    }
    let (Some(reserved), Some(info_hash), Some(peer_id)) = (
        array_at::<8>(buf, RESERVED_AT),
        array_at::<20>(buf, INFO_HASH_AT),
        array_at::<20>(buf, PEER_ID_AT),
    ) else {
        return Ok(None);
    };
    Ok(Some(Handshake {
        reserved: Reserved(reserved),
        info_hash: InfoHash(info_hash),
        peer_id: PeerId(peer_id),
    }))
}

/// The `N` bytes of `buf` starting at `at`, or `None` if `buf` is too short.
fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Reads one handshake from a byte stream and writes ours.
///
/// Bytes after the 68-byte handshake stay in the buffer for the message codec, since a
/// peer may send its bitfield in the same packet as its handshake.
#[derive(Clone, Copy, Debug, Default)]
pub struct HandshakeCodec;

impl Decoder for HandshakeCodec {
    type Item = Handshake;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Handshake>, WireError> {
        match parse_prefix(src)? {
            Some(handshake) => {
                src.advance(HANDSHAKE_LEN);
                Ok(Some(handshake))
            }
            None => {
                src.reserve(HANDSHAKE_LEN.saturating_sub(src.len()));
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Handshake>, WireError> {
        match self.decode(src)? {
            Some(handshake) => Ok(Some(handshake)),
            None if src.is_empty() => Ok(None),
            None => Err(WireError::TruncatedHandshake {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Handshake> for HandshakeCodec {
    type Error = WireError;

    fn encode(&mut self, item: Handshake, dst: &mut BytesMut) -> Result<(), WireError> {
        dst.extend_from_slice(&item.encode());
        Ok(())
    }
}

impl Encoder<&Handshake> for HandshakeCodec {
    type Error = WireError;

    fn encode(&mut self, item: &Handshake, dst: &mut BytesMut) -> Result<(), WireError> {
        dst.extend_from_slice(&item.encode());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Handshake {
        let mut reserved = Reserved::none();
        reserved.set_extension_protocol(true);
        reserved.set_fast_extension(true);
        Handshake::new(
            reserved,
            InfoHash([0x11; 20]),
            PeerId(*b"-TA0001-abcdefghijkl"),
        )
    }

    #[test]
    fn encoded_handshake_has_the_bep3_layout() {
        let bytes = sample().encode();
        assert_eq!(bytes.len(), 68);
        assert_eq!(bytes.first(), Some(&19));
        assert_eq!(bytes.get(1..20), Some(&b"BitTorrent protocol"[..]));
        assert_eq!(bytes.get(20..28), Some(&[0, 0, 0, 0, 0, 0x10, 0, 0x04][..]));
        assert_eq!(bytes.get(28..48), Some(&[0x11; 20][..]));
        assert_eq!(bytes.get(48..68), Some(&b"-TA0001-abcdefghijkl"[..]));
    }

    #[test]
    fn handshake_round_trips_through_parse() {
        let hs = sample();
        assert_eq!(Handshake::parse(&hs.encode()).ok(), Some(hs));
    }

    #[test]
    fn reserved_bits_set_and_clear_independently() {
        let mut r = Reserved::none();
        assert!(!r.extension_protocol() && !r.fast_extension() && !r.dht());
        r.set_dht(true);
        assert!(r.dht() && !r.fast_extension());
        r.set_fast_extension(true);
        assert_eq!(r.0, [0, 0, 0, 0, 0, 0, 0, 0x05]);
        r.set_dht(false);
        assert_eq!(r.0, [0, 0, 0, 0, 0, 0, 0, 0x04]);
        r.set_extension_protocol(true);
        assert_eq!(r.0, [0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        assert!(r.extension_protocol());
    }

    #[test]
    fn wrong_protocol_length_is_rejected_from_the_first_byte() {
        let mut buf = BytesMut::from(&[18u8][..]);
        assert!(matches!(
            HandshakeCodec.decode(&mut buf),
            Err(WireError::WrongProtocolLength { found: 18 })
        ));
    }

    #[test]
    fn wrong_protocol_string_is_rejected_before_the_rest_arrives() {
        let mut buf = BytesMut::new();
        buf.put_u8(19);
        buf.put_slice(b"BitTorrent protocoX");
        match HandshakeCodec.decode(&mut buf) {
            Err(WireError::WrongProtocolString { found }) => {
                assert_eq!(found, "BitTorrent protocoX")
            }
            other => panic!("expected a protocol string error, got {other:?}"),
        }
    }

    #[test]
    fn parse_rejects_a_bad_protocol_string() {
        let mut bytes = sample().encode();
        bytes[5] = b'!';
        assert!(matches!(
            Handshake::parse(&bytes),
            Err(WireError::WrongProtocolString { .. })
        ));
    }

    #[test]
    fn codec_leaves_bytes_after_the_handshake_in_the_buffer() {
        let mut buf = BytesMut::from(&sample().encode()[..]);
        buf.put_slice(&[0, 0, 0, 1, 2]);
        assert_eq!(
            HandshakeCodec.decode(&mut buf).ok().flatten(),
            Some(sample())
        );
        assert_eq!(&buf[..], &[0, 0, 0, 1, 2]);
    }

    #[test]
    fn stream_ending_mid_handshake_is_a_truncation_error() {
        let bytes = sample().encode();
        let mut buf = BytesMut::from(&bytes[..40]);
        assert!(matches!(
            HandshakeCodec.decode_eof(&mut buf),
            Err(WireError::TruncatedHandshake { buffered: 40 })
        ));
        assert!(matches!(
            HandshakeCodec.decode_eof(&mut BytesMut::new()),
            Ok(None)
        ));
    }

    proptest! {
        #[test]
        fn handshake_split_anywhere_decodes_the_same(
            reserved in any::<[u8; 8]>(),
            info_hash in any::<[u8; 20]>(),
            peer_id in any::<[u8; 20]>(),
            split in 0usize..=HANDSHAKE_LEN,
        ) {
            let hs = Handshake::new(Reserved(reserved), InfoHash(info_hash), PeerId(peer_id));
            let bytes = hs.encode();
            let (a, b) = bytes.split_at(split);
            let mut buf = BytesMut::new();
            let mut codec = HandshakeCodec;
            buf.extend_from_slice(a);
            let first = codec.decode(&mut buf).ok().flatten();
            buf.extend_from_slice(b);
            let decoded = match first {
                Some(h) => Some(h),
                None => codec.decode(&mut buf).ok().flatten(),
            };
            prop_assert_eq!(decoded, Some(hs));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn handshake_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = HandshakeCodec.decode_eof(&mut buf);
        }
    }
}
