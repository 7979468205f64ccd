//! The payloads carried inside BEP 10 `extended` messages: the extension handshake, the
//! metadata exchange (BEP 9, `ut_metadata`) and peer exchange (BEP 11, `ut_pex`).
//!
//! Like the rest of `wire`, this is bytes in, typed values out, and back. Every payload
//! comes from a stranger, so each decoder bounds what it accepts and ends in a typed
//! [`ExtError`]; fields a peer may omit are `Option`s, and unknown keys are ignored, as
//! BEP 10 asks. Which extension ids a connection uses, when to send what and what to do
//! with the answers is the engine's business.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::Bytes;

use crate::bencode::{self, BValue, Value};

/// The extension message id of the extension handshake itself.
pub const HANDSHAKE_ID: u8 = 0;

/// The name of the metadata extension in the handshake's `m` dictionary.
pub const UT_METADATA: &str = "ut_metadata";

/// The name of the peer exchange extension in the handshake's `m` dictionary.
pub const UT_PEX: &str = "ut_pex";

/// The size of one metadata piece (BEP 9); only the last piece may be shorter.
pub const METADATA_PIECE_LEN: u32 = 16 * 1024;

/// The largest info dictionary we fetch or believe a peer about: libtorrent's default
/// limit is of the same order, and no sane torrent comes near it.
pub const MAX_METADATA_SIZE: u32 = 30 * 1024 * 1024;

/// The most peers one PEX message may add before we ignore the rest (BEP 11 asks senders
/// for at most 50).
pub const MAX_PEX_ADDED: usize = 50;

/// The most characters of a client name (`v`) kept.
const MAX_CLIENT_NAME: usize = 64;

/// Why an extension payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtError {
    /// The payload is not bencode.
    #[error("extension payload is not bencode: {0}")]
    Bencode(#[from] bencode::DecodeError),
    /// The payload is bencode but not a dictionary.
    #[error("extension payload is a {0}, expected a dictionary")]
    NotADict(&'static str),
    /// A required key is missing or has the wrong type.
    #[error("extension message has no valid {0:?}")]
    MissingKey(&'static str),
    /// A compact peer list whose length is not a multiple of the entry size.
    #[error("pex {0} list has a length that is not a whole number of entries")]
    RaggedPeerList(&'static str),
    /// `ut_metadata` message type other than request (0), data (1) or reject (2).
    #[error("unknown ut_metadata msg_type {0}")]
    UnknownMetadataType(i64),
    /// A metadata piece index or size out of range.
    #[error("metadata {what} {value} out of range")]
    MetadataOutOfRange {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: i64,
    },
    /// A metadata data message whose bytes do not fit the piece it claims to be.
    #[error("metadata piece {piece} has {len} bytes, expected {expected}")]
    MetadataPieceLength {
        /// The piece.
        piece: u32,
        /// The bytes that came.
        len: usize,
        /// The bytes that piece has.
        expected: usize,
    },
}

/// A BEP 10 extension handshake, either side's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Extension name → the id the sender wants to receive it under; id 0 means the
    /// sender disabled that extension.
    pub extensions: BTreeMap<String, u8>,
    /// The client's name and version (`v`), shortened.
    pub client: Option<String>,
    /// How many outstanding requests the sender accepts (`reqq`).
    pub reqq: Option<u32>,
    /// The size of the info dictionary, if the sender has it (`metadata_size`, BEP 9).
    pub metadata_size: Option<u32>,
    /// The sender's TCP listen port (`p`).
    pub listen_port: Option<u16>,
    /// Our address as the sender sees it (`yourip`).
    pub your_ip: Option<IpAddr>,
}

impl ExtHandshake {
    /// The id the sender wants `name` messages sent under, if it supports it.
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.extensions.get(name).copied().filter(|&id| id != 0)
    }

    /// Parses a handshake payload. Fields of the wrong type are treated as absent rather
    /// than failing the handshake: clients disagree on details, and a bad `v` should not
    /// cost a connection.
    pub fn decode(payload: &[u8]) -> Result<ExtHandshake, ExtError> {
        let value = bencode::decode(payload)?;
        let dict = value
            .as_dict()
            .ok_or_else(|| ExtError::NotADict(value.type_name()))?;
        let mut hs = ExtHandshake::default();
        if let Some(m) = dict.get(b"m").and_then(Value::as_dict) {
            for (name, id) in m.iter() {
                let (Ok(name), Some(id)) = (std::str::from_utf8(name), id.as_int()) else {
                    continue;
                };
                if let Ok(id) = u8::try_from(id) {
                    hs.extensions.insert(name.to_owned(), id);
                }
            }
        }
        hs.client = dict.get(b"v").and_then(Value::as_bytes).map(|v| {
            String::from_utf8_lossy(v)
                .chars()
                .take(MAX_CLIENT_NAME)
                .collect()
        });
        let int = |key: &[u8]| dict.get(key).and_then(Value::as_int);
        hs.reqq = int(b"reqq").and_then(|n| u32::try_from(n).ok());
        hs.metadata_size = int(b"metadata_size").and_then(|n| u32::try_from(n).ok());
        hs.listen_port = int(b"p")
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&p| p != 0);
        hs.your_ip = dict
            .get(b"yourip")
            .and_then(Value::as_bytes)
            .and_then(ip_from_bytes);
        Ok(hs)
    }

    /// The bencoded payload.
    pub fn encode(&self) -> Vec<u8> {
        let m = BValue::dict(
            self.extensions
                .iter()
                .map(|(name, id)| (name.as_bytes(), BValue::Int(i64::from(*id)))),
        );
        let mut entries = vec![("m", m)];
        if let Some(client) = &self.client {
            entries.push(("v", BValue::string(client)));
        }
        if let Some(reqq) = self.reqq {
            entries.push(("reqq", BValue::Int(i64::from(reqq))));
        }
        if let Some(size) = self.metadata_size {
            entries.push(("metadata_size", BValue::Int(i64::from(size))));
        }
        if let Some(port) = self.listen_port {
            entries.push(("p", BValue::Int(i64::from(port))));
        }
        if let Some(ip) = self.your_ip {
            let bytes = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            entries.push(("yourip", BValue::Bytes(bytes)));
        }
        BValue::dict(entries).encode()
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

/// How many 16 KiB pieces an info dictionary of `size` bytes has.
pub fn metadata_piece_count(size: u32) -> u32 {
    size.div_ceil(METADATA_PIECE_LEN)
}

/// The length of metadata piece `piece` of an info dictionary of `size` bytes, or `None`
/// past the end.
pub fn metadata_piece_len(size: u32, piece: u32) -> Option<usize> {
    let start = piece.checked_mul(METADATA_PIECE_LEN)?;
    (start < size).then(|| (size - start).min(METADATA_PIECE_LEN) as usize)
}

/// A `ut_metadata` message (BEP 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMessage {
    /// Asks for one piece.
    Request {
        /// Piece index.
        piece: u32,
    },
    /// One piece: a dictionary, then the piece's bytes.
    Data {
        /// Piece index.
        piece: u32,
        /// The whole info dictionary's size.
        total_size: u32,
        /// The piece's bytes.
        data: Bytes,
    },
    /// The sender will not send this piece.
    Reject {
        /// Piece index.
        piece: u32,
    },
}

impl MetadataMessage {
    /// Parses a `ut_metadata` payload. A data message is checked against its own
    /// `total_size`: the piece must exist and the bytes must be exactly its length.
    pub fn decode(payload: &Bytes) -> Result<MetadataMessage, ExtError> {
        let (value, used) = bencode::decode_prefix(payload)?;
        let dict = value
            .as_dict()
            .ok_or_else(|| ExtError::NotADict(value.type_name()))?;
        let msg_type = dict
            .get(b"msg_type")
            .and_then(Value::as_int)
            .ok_or(ExtError::MissingKey("msg_type"))?;
        let piece = dict
            .get(b"piece")
            .and_then(Value::as_int)
            .ok_or(ExtError::MissingKey("piece"))?;
        let piece = u32::try_from(piece)
            .ok()
            .filter(|&p| p < metadata_piece_count(MAX_METADATA_SIZE))
            .ok_or(ExtError::MetadataOutOfRange {
                what: "piece",
                value: piece,
            })?;
        match msg_type {
            0 => Ok(MetadataMessage::Request { piece }),
            2 => Ok(MetadataMessage::Reject { piece }),
            1 => {
                let size = dict
                    .get(b"total_size")
                    .and_then(Value::as_int)
                    .ok_or(ExtError::MissingKey("total_size"))?;
                let total_size = u32::try_from(size)
                    .ok()
                    .filter(|&s| s > 0 && s <= MAX_METADATA_SIZE)
                    .ok_or(ExtError::MetadataOutOfRange {
                        what: "total_size",
                        value: size,
                    })?;
                let expected =
                    metadata_piece_len(total_size, piece).ok_or(ExtError::MetadataOutOfRange {
                        what: "piece",
                        value: i64::from(piece),
                    })?;
                let data = payload.slice(used..);
                if data.len() != expected {
                    return Err(ExtError::MetadataPieceLength {
                        piece,
                        len: data.len(),
                        expected,
                    });
                }
                Ok(MetadataMessage::Data {
                    piece,
                    total_size,
                    data,
                })
            }
            other => Err(ExtError::UnknownMetadataType(other)),
        }
    }

    /// The payload: the dictionary, then the data for a data message.
    pub fn encode(&self) -> Vec<u8> {
        let head = |t: i64, piece: u32| {
            vec![
                ("msg_type", BValue::Int(t)),
                ("piece", BValue::Int(i64::from(piece))),
            ]
        };
        match self {
            MetadataMessage::Request { piece } => BValue::dict(head(0, *piece)).encode(),
            MetadataMessage::Reject { piece } => BValue::dict(head(2, *piece)).encode(),
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => {
                let mut entries = head(1, *piece);
                entries.push(("total_size", BValue::Int(i64::from(*total_size))));
                let mut out = BValue::dict(entries).encode();
                out.extend_from_slice(data);
                out
            }
        }
    }
}

/// A `ut_pex` message (BEP 11): peers the sender connected to and dropped since its last
/// message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Newly connected peers (IPv4 from `added`, IPv6 from `added6`), at most
    /// [`MAX_PEX_ADDED`] kept when decoding.
    pub added: Vec<SocketAddr>,
    /// Peers the sender disconnected from.
    pub dropped: Vec<SocketAddr>,
}

impl PexMessage {
    /// Parses a `ut_pex` payload; malformed compact lists (a length that is not a
    /// multiple of 6 or 18) are refused, port 0 entries skipped, and anything past
    /// [`MAX_PEX_ADDED`] added peers ignored.
    pub fn decode(payload: &[u8]) -> Result<PexMessage, ExtError> {
        let value = bencode::decode(payload)?;
        let dict = value
            .as_dict()
            .ok_or_else(|| ExtError::NotADict(value.type_name()))?;
        let list = |v4: &'static str, v6: &'static str| -> Result<Vec<SocketAddr>, ExtError> {
            let mut out = Vec::new();
            if let Some(bytes) = dict.get(v4.as_bytes()).and_then(Value::as_bytes) {
                if bytes.len() % 6 != 0 {
                    return Err(ExtError::RaggedPeerList(v4));
                }
                out.extend(bytes.chunks_exact(6).map(|c| {
                    let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                    SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be_bytes([c[4], c[5]])))
                }));
            }
            if let Some(bytes) = dict.get(v6.as_bytes()).and_then(Value::as_bytes) {
                if bytes.len() % 18 != 0 {
                    return Err(ExtError::RaggedPeerList(v6));
                }
                out.extend(bytes.chunks_exact(18).map(|c| {
                    let mut ip = [0u8; 16];
                    ip.copy_from_slice(&c[..16]);
                    let port = u16::from_be_bytes([c[16], c[17]]);
                    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
                }));
            }
            out.retain(|a| a.port() != 0);
            Ok(out)
        };
        let mut added = list("added", "added6")?;
        added.truncate(MAX_PEX_ADDED);
        let mut dropped = list("dropped", "dropped6")?;
        dropped.truncate(MAX_PEX_ADDED);
        Ok(PexMessage { added, dropped })
    }

    /// The payload, with compact IPv4 and IPv6 lists and no flags.
    pub fn encode(&self) -> Vec<u8> {
        let compact = |addrs: &[SocketAddr], v6: bool| -> Vec<u8> {
            let mut out = Vec::new();
            for a in addrs {
                match (a, v6) {
                    (SocketAddr::V4(a), false) => {
                        out.extend_from_slice(&a.ip().octets());
                        out.extend_from_slice(&a.port().to_be_bytes());
                    }
                    (SocketAddr::V6(a), true) => {
                        out.extend_from_slice(&a.ip().octets());
                        out.extend_from_slice(&a.port().to_be_bytes());
                    }
                    _ => {}
                }
            }
            out
        };
        let flags = |addrs: &[SocketAddr], v6: bool| -> Vec<u8> {
            vec![0u8; addrs.iter().filter(|a| a.is_ipv6() == v6).count()]
        };
        BValue::dict([
            ("added", BValue::Bytes(compact(&self.added, false))),
            ("added.f", BValue::Bytes(flags(&self.added, false))),
            ("added6", BValue::Bytes(compact(&self.added, true))),
            ("added6.f", BValue::Bytes(flags(&self.added, true))),
            ("dropped", BValue::Bytes(compact(&self.dropped, false))),
            ("dropped6", BValue::Bytes(compact(&self.dropped, true))),
        ])
        .encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_round_trips_every_field() {
        let mut hs = ExtHandshake {
            client: Some("torrent-actors 0.1".into()),
            reqq: Some(500),
            metadata_size: Some(31_234),
            listen_port: Some(6881),
            your_ip: Some("127.0.0.1".parse().unwrap()),
            ..ExtHandshake::default()
        };
        hs.extensions.insert(UT_METADATA.into(), 3);
        hs.extensions.insert(UT_PEX.into(), 1);
        let back = ExtHandshake::decode(&hs.encode()).unwrap();
        assert_eq!(back, hs);
        assert_eq!(back.id_of(UT_METADATA), Some(3));
        assert_eq!(back.id_of("lt_donthave"), None);
    }

    #[test]
    fn handshake_ignores_unknown_keys_and_ill_typed_fields() {
        let payload = b"d1:md11:ut_metadatai2e6:ut_pexi0e5:weirdi999ee1:pi70000e4:reqq3:abc1:v3:xyz6:yourip3:abc5:extrali1eee";
        let hs = ExtHandshake::decode(payload).unwrap();
        assert_eq!(hs.id_of(UT_METADATA), Some(2));
        // Id 0 disables an extension; an id above 255 is not an id at all.
        assert_eq!(hs.id_of(UT_PEX), None);
        assert!(!hs.extensions.contains_key("weird"));
        assert_eq!(hs.listen_port, None);
        assert_eq!(hs.reqq, None);
        assert_eq!(hs.your_ip, None);
        assert_eq!(hs.client.as_deref(), Some("xyz"));
    }

    #[test]
    fn handshake_that_is_not_a_dict_is_refused() {
        assert_eq!(
            ExtHandshake::decode(b"li1ee"),
            Err(ExtError::NotADict("list"))
        );
        assert!(matches!(
            ExtHandshake::decode(b"d1:m"),
            Err(ExtError::Bencode(_))
        ));
    }

    #[test]
    fn metadata_messages_round_trip() {
        let data = Bytes::from(vec![7u8; 100]);
        for msg in [
            MetadataMessage::Request { piece: 3 },
            MetadataMessage::Reject { piece: 0 },
            MetadataMessage::Data {
                piece: 1,
                total_size: METADATA_PIECE_LEN + 100,
                data,
            },
        ] {
            let payload = Bytes::from(msg.encode());
            assert_eq!(MetadataMessage::decode(&payload).unwrap(), msg);
        }
    }

    #[test]
    fn metadata_data_must_fit_its_piece() {
        // A middle piece must be exactly 16 KiB.
        let msg = MetadataMessage::Data {
            piece: 0,
            total_size: 2 * METADATA_PIECE_LEN,
            data: Bytes::from(vec![0u8; 100]),
        };
        let err = MetadataMessage::decode(&Bytes::from(msg.encode())).unwrap_err();
        assert!(matches!(
            err,
            ExtError::MetadataPieceLength {
                piece: 0,
                len: 100,
                ..
            }
        ));
        // A piece past the end of the claimed size.
        let msg = MetadataMessage::Data {
            piece: 5,
            total_size: 100,
            data: Bytes::new(),
        };
        assert!(matches!(
            MetadataMessage::decode(&Bytes::from(msg.encode())),
            Err(ExtError::MetadataOutOfRange { what: "piece", .. })
        ));
    }

    #[test]
    fn oversized_or_negative_metadata_claims_are_refused() {
        let raw = |s: &str| Bytes::from(s.as_bytes().to_vec());
        assert!(matches!(
            MetadataMessage::decode(&raw("d8:msg_typei1e5:piecei0e10:total_sizei999999999ee")),
            Err(ExtError::MetadataOutOfRange {
                what: "total_size",
                ..
            })
        ));
        assert!(matches!(
            MetadataMessage::decode(&raw("d8:msg_typei0e5:piecei-1ee")),
            Err(ExtError::MetadataOutOfRange { what: "piece", .. })
        ));
        assert_eq!(
            MetadataMessage::decode(&raw("d8:msg_typei7e5:piecei0ee")),
            Err(ExtError::UnknownMetadataType(7))
        );
        assert_eq!(
            MetadataMessage::decode(&raw("d5:piecei0ee")),
            Err(ExtError::MissingKey("msg_type"))
        );
    }

    #[test]
    fn piece_arithmetic() {
        assert_eq!(metadata_piece_count(1), 1);
        assert_eq!(metadata_piece_count(METADATA_PIECE_LEN), 1);
        assert_eq!(metadata_piece_count(METADATA_PIECE_LEN + 1), 2);
        assert_eq!(metadata_piece_len(METADATA_PIECE_LEN + 1, 1), Some(1));
        assert_eq!(metadata_piece_len(METADATA_PIECE_LEN + 1, 2), None);
        assert_eq!(metadata_piece_len(10, u32::MAX), None);
    }

    #[test]
    fn pex_round_trips_v4_and_v6_and_caps_added() {
        let msg = PexMessage {
            added: vec![
                "127.0.0.1:6881".parse().unwrap(),
                "[::1]:6882".parse().unwrap(),
            ],
            dropped: vec!["10.0.0.1:1".parse().unwrap()],
        };
        assert_eq!(PexMessage::decode(&msg.encode()).unwrap(), msg);

        let many = PexMessage {
            added: (1..=200u16)
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect(),
            dropped: vec![],
        };
        assert_eq!(
            PexMessage::decode(&many.encode()).unwrap().added.len(),
            MAX_PEX_ADDED
        );
    }

    #[test]
    fn pex_with_ragged_compact_list_is_refused() {
        assert_eq!(
            PexMessage::decode(b"d5:added5:abcdee"),
            Err(ExtError::RaggedPeerList("added"))
        );
        // Port 0 is no address to dial.
        let zero = PexMessage::decode(b"d5:added6:\x7f\x00\x00\x01\x00\x00e").unwrap();
        assert!(zero.added.is_empty());
    }
}
