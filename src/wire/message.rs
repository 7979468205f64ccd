//! The messages peers exchange after the handshake, and their BEP 3 byte layout.
//!
//! This file turns one complete frame (the bytes after the length prefix) into a
//! [`Message`] and a [`Message`] back into a frame. Finding frame boundaries in a stream
//! and bounding the frame size is the codec's job; this file checks everything that
//! depends on the message id.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::hashes::{self, HashRequest, Hashes, HASH_HEADER_LEN};
use super::{WireError, BLOCK_SIZE};

/// The message id byte of each message this crate understands.
pub mod message_id {
    /// `choke` (BEP 3).
    pub const CHOKE: u8 = 0;
    /// `unchoke` (BEP 3).
    pub const UNCHOKE: u8 = 1;
    /// `interested` (BEP 3).
    pub const INTERESTED: u8 = 2;
    /// `not interested` (BEP 3).
    pub const NOT_INTERESTED: u8 = 3;
    /// `have` (BEP 3).
    pub const HAVE: u8 = 4;
    /// `bitfield` (BEP 3).
    pub const BITFIELD: u8 = 5;
    /// `request` (BEP 3).
    pub const REQUEST: u8 = 6;
    /// `piece` (BEP 3).
    pub const PIECE: u8 = 7;
    /// `cancel` (BEP 3).
    pub const CANCEL: u8 = 8;
    /// `port` (BEP 5, DHT).
    pub const PORT: u8 = 9;
    /// `suggest piece` (BEP 6).
    pub const SUGGEST_PIECE: u8 = 0x0D;
    /// `have all` (BEP 6).
    pub const HAVE_ALL: u8 = 0x0E;
    /// `have none` (BEP 6).
    pub const HAVE_NONE: u8 = 0x0F;
    /// `reject request` (BEP 6).
    pub const REJECT_REQUEST: u8 = 0x10;
    /// `allowed fast` (BEP 6).
    pub const ALLOWED_FAST: u8 = 0x11;
    /// `extended` (BEP 10).
    pub const EXTENDED: u8 = 20;
    /// `hash request` (BEP 52).
    pub const HASH_REQUEST: u8 = 21;
    /// `hashes` (BEP 52).
    pub const HASHES: u8 = 22;
    /// `hash reject` (BEP 52).
    pub const HASH_REJECT: u8 = 23;
}

use message_id as id;

/// One block of a piece, named by where it sits; the body of request, cancel and reject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRequest {
    /// Index of the piece the block belongs to.
    pub piece: u32,
    /// Byte offset of the block within its piece.
    pub offset: u32,
    /// Block size in bytes; the decoder guarantees 1 to [`BLOCK_SIZE`].
    pub length: u32,
}

/// A block of piece data as carried by a piece message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Index of the piece the block belongs to.
    pub piece: u32,
    /// Byte offset of the block within its piece.
    pub offset: u32,
    /// The block's bytes, shared with the receive buffer so the hasher and the writer get
    /// them without a copy; the decoder guarantees 1 to [`BLOCK_SIZE`] bytes.
    pub data: Bytes,
}

impl Block {
    /// The request this block answers.
    ///
    /// The length saturates at `u32::MAX` only for blocks built by hand that could not be
    /// sent anyway; decoded blocks always fit.
    pub fn request(&self) -> BlockRequest {
        BlockRequest {
            piece: self.piece,
            offset: self.offset,
            length: u32::try_from(self.data.len()).unwrap_or(u32::MAX),
        }
    }
}

/// One peer wire message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A zero-length frame that only keeps the connection from timing out.
    KeepAlive,
    /// The sender will not answer our requests until it unchokes us.
    Choke,
    /// The sender will answer our requests.
    Unchoke,
    /// The sender wants pieces we have.
    Interested,
    /// The sender wants nothing we have.
    NotInterested,
    /// The sender has just completed and verified this piece.
    Have(u32),
    /// The sender's pieces, one bit per piece, high bit first; check it with
    /// [`super::Bitfield::from_payload`] once the piece count is known.
    Bitfield(Bytes),
    /// The sender asks us for a block.
    Request(BlockRequest),
    /// The sender delivers a block.
    Piece(Block),
    /// The sender withdraws an earlier request.
    Cancel(BlockRequest),
    /// The UDP port of the sender's DHT node (BEP 5).
    Port(u16),
    /// The sender has every piece, in place of a full bitfield (BEP 6).
    HaveAll,
    /// The sender has no pieces, in place of an empty bitfield (BEP 6).
    HaveNone,
    /// The sender suggests we download this piece, often one it has cached (BEP 6).
    SuggestPiece(u32),
    /// The sender will not serve this request (BEP 6).
    RejectRequest(BlockRequest),
    /// We may request this piece even while choked (BEP 6).
    AllowedFast(u32),
    /// A BEP 10 extension message: extension id 0 is the extension handshake, others are
    /// the ids the receiver assigned in its own extension handshake.
    Extended {
        /// Which extension the payload belongs to.
        id: u8,
        /// The extension's payload, usually bencoded, left to the extension to parse.
        payload: Bytes,
    },
    /// The sender asks for a range of nodes of a file's Merkle tree (BEP 52).
    HashRequest(HashRequest),
    /// The sender delivers a range of tree nodes and their proof (BEP 52).
    Hashes(Hashes),
    /// The sender will not answer this hash request (BEP 52).
    HashReject(HashRequest),
    /// A message id this crate does not know. Its payload was skipped; it is reported so the
    /// engine can log it, and newer extensions do not break the connection.
    Unknown {
        /// The message id the peer sent.
        id: u8,
    },
}

impl Message {
    /// The message's name, as logs and metrics show it.
    pub fn name(&self) -> &'static str {
        match self {
            Message::KeepAlive => "keep-alive",
            Message::Choke => "choke",
            Message::Unchoke => "unchoke",
            Message::Interested => "interested",
            Message::NotInterested => "not-interested",
            Message::Have(_) => "have",
            Message::Bitfield(_) => "bitfield",
            Message::Request(_) => "request",
            Message::Piece(_) => "piece",
            Message::Cancel(_) => "cancel",
            Message::Port(_) => "port",
            Message::HaveAll => "have-all",
            Message::HaveNone => "have-none",
            Message::SuggestPiece(_) => "suggest-piece",
            Message::RejectRequest(_) => "reject-request",
            Message::AllowedFast(_) => "allowed-fast",
            Message::Extended { .. } => "extended",
            Message::HashRequest(_) => "hash-request",
            Message::Hashes(_) => "hashes",
            Message::HashReject(_) => "hash-reject",
            Message::Unknown { .. } => "unknown",
        }
    }

    /// The message id byte, or `None` for a keep-alive, which has none.
    pub fn id(&self) -> Option<u8> {
        Some(match self {
            Message::KeepAlive => return None,
            Message::Choke => id::CHOKE,
            Message::Unchoke => id::UNCHOKE,
            Message::Interested => id::INTERESTED,
            Message::NotInterested => id::NOT_INTERESTED,
            Message::Have(_) => id::HAVE,
            Message::Bitfield(_) => id::BITFIELD,
            Message::Request(_) => id::REQUEST,
            Message::Piece(_) => id::PIECE,
            Message::Cancel(_) => id::CANCEL,
            Message::Port(_) => id::PORT,
            Message::HaveAll => id::HAVE_ALL,
            Message::HaveNone => id::HAVE_NONE,
            Message::SuggestPiece(_) => id::SUGGEST_PIECE,
            Message::RejectRequest(_) => id::REJECT_REQUEST,
            Message::AllowedFast(_) => id::ALLOWED_FAST,
            Message::Extended { .. } => id::EXTENDED,
            Message::HashRequest(_) => id::HASH_REQUEST,
            Message::Hashes(_) => id::HASHES,
            Message::HashReject(_) => id::HASH_REJECT,
            Message::Unknown { id } => *id,
        })
    }

    /// Size of the payload after the id byte.
    fn payload_len(&self) -> usize {
        match self {
            Message::KeepAlive
            | Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone
            | Message::Unknown { .. } => 0,
            Message::Have(_) | Message::SuggestPiece(_) | Message::AllowedFast(_) => 4,
            Message::Port(_) => 2,
            Message::Request(_) | Message::Cancel(_) | Message::RejectRequest(_) => 12,
            Message::Bitfield(bits) => bits.len(),
            Message::Piece(block) => block.data.len().saturating_add(8),
            Message::Extended { payload, .. } => payload.len().saturating_add(1),
            Message::HashRequest(_) | Message::HashReject(_) => HASH_HEADER_LEN,
            Message::Hashes(h) => h
                .hashes
                .len()
                .saturating_mul(32)
                .saturating_add(HASH_HEADER_LEN),
        }
    }

    /// Appends this message with its 4-byte big-endian length prefix to `dst`.
    ///
    /// Fails only for [`Message::Unknown`] and for payloads too large for the length prefix;
    /// it does not enforce the receive-side bounds, which are the caller's to respect.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), WireError> {
        if let Message::Unknown { id } = self {
            return Err(WireError::UnknownNotEncodable { id: *id });
        }
        let Some(id) = self.id() else {
            dst.put_u32(0);
            return Ok(());
        };
        let payload_len = self.payload_len();
        let too_large = || WireError::PayloadTooLargeToEncode { payload_len };
        let frame_len = payload_len.checked_add(1).ok_or_else(too_large)?;
        let prefix = u32::try_from(frame_len).map_err(|_| too_large())?;
        dst.reserve(frame_len.saturating_add(4));
        dst.put_u32(prefix);
        dst.put_u8(id);
        match self {
            Message::Have(piece) | Message::SuggestPiece(piece) | Message::AllowedFast(piece) => {
                dst.put_u32(*piece)
            }
            Message::Bitfield(bits) => dst.put_slice(bits),
            Message::Request(r) | Message::Cancel(r) | Message::RejectRequest(r) => {
                dst.put_u32(r.piece);
                dst.put_u32(r.offset);
                dst.put_u32(r.length);
            }
            Message::Piece(block) => {
                dst.put_u32(block.piece);
                dst.put_u32(block.offset);
                dst.put_slice(&block.data);
            }
            Message::Port(port) => dst.put_u16(*port),
            Message::Extended { id, payload } => {
                dst.put_u8(*id);
                dst.put_slice(payload);
            }
            Message::HashRequest(r) | Message::HashReject(r) => r.put(dst),
            Message::Hashes(h) => {
                h.request.put(dst);
                for node in &h.hashes {
                    dst.put_slice(node);
                }
            }
            Message::KeepAlive
            | Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone
            | Message::Unknown { .. } => {}
        }
        Ok(())
    }

    /// Parses one complete frame: `frame` holds the bytes after the length prefix, which
    /// the codec has already checked against its maximum.
    ///
    /// Payloads of variable size (bitfield, piece data, extended) are frozen out of `frame`
    /// rather than copied, so they share the receive buffer's allocation.
    pub(super) fn decode_frame(mut frame: BytesMut) -> Result<Message, WireError> {
        // The codec caps frames at a `u32` maximum, so this conversion is exact; saturating
        // keeps it panic-free if this function is ever called with something else.
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        if frame.is_empty() {
            return Ok(Message::KeepAlive);
        }
        let msg_id = frame.get_u8();
        let body = &frame[..];
        let message = match msg_id {
            id::CHOKE => fixed::<0>(msg_id, len, body).map(|_| Message::Choke)?,
            id::UNCHOKE => fixed::<0>(msg_id, len, body).map(|_| Message::Unchoke)?,
            id::INTERESTED => fixed::<0>(msg_id, len, body).map(|_| Message::Interested)?,
            id::NOT_INTERESTED => fixed::<0>(msg_id, len, body).map(|_| Message::NotInterested)?,
            id::HAVE_ALL => fixed::<0>(msg_id, len, body).map(|_| Message::HaveAll)?,
            id::HAVE_NONE => fixed::<0>(msg_id, len, body).map(|_| Message::HaveNone)?,
            id::HAVE => Message::Have(u32::from_be_bytes(fixed(msg_id, len, body)?)),
            id::SUGGEST_PIECE => {
                Message::SuggestPiece(u32::from_be_bytes(fixed(msg_id, len, body)?))
            }
            id::ALLOWED_FAST => Message::AllowedFast(u32::from_be_bytes(fixed(msg_id, len, body)?)),
            id::PORT => Message::Port(u16::from_be_bytes(fixed(msg_id, len, body)?)),
            id::REQUEST => Message::Request(block_request(msg_id, len, body)?),
            id::CANCEL => Message::Cancel(block_request(msg_id, len, body)?),
            id::REJECT_REQUEST => Message::RejectRequest(block_request(msg_id, len, body)?),
            id::BITFIELD => Message::Bitfield(frame.freeze()),
            id::PIECE => Message::Piece(block(len, frame)?),
            id::EXTENDED => {
                if frame.is_empty() {
                    return Err(WireError::ExtendedMissingId);
                }
                let ext_id = frame.get_u8();
                Message::Extended {
                    id: ext_id,
                    payload: frame.freeze(),
                }
            }
            id::HASH_REQUEST => Message::HashRequest(hashes::decode_request(msg_id, len, frame)?),
            id::HASH_REJECT => Message::HashReject(hashes::decode_request(msg_id, len, frame)?),
            id::HASHES => Message::Hashes(hashes::decode_hashes(msg_id, len, frame)?),
            unknown => Message::Unknown { id: unknown },
        };
        Ok(message)
    }
}

/// The body of a fixed-size message as an array, or the typed error for a wrong length.
///
/// Converting to an array both checks the length and gives the parser infallible access
/// to the fields.
fn fixed<const N: usize>(msg_id: u8, len: u32, body: &[u8]) -> Result<[u8; N], WireError> {
    body.try_into().map_err(|_| WireError::WrongMessageLength {
        id: msg_id,
        len,
        // N is at most 12, so the saturation never happens; it only keeps this panic-free.
        expected: u32::try_from(N).map_or(u32::MAX, |n| n.saturating_add(1)),
    })
}

/// Parses the 12-byte body shared by request, cancel and reject, bounding the block size.
fn block_request(msg_id: u8, len: u32, body: &[u8]) -> Result<BlockRequest, WireError> {
    let [p0, p1, p2, p3, o0, o1, o2, o3, l0, l1, l2, l3] = fixed::<12>(msg_id, len, body)?;
    let request = BlockRequest {
        piece: u32::from_be_bytes([p0, p1, p2, p3]),
        offset: u32::from_be_bytes([o0, o1, o2, o3]),
        length: u32::from_be_bytes([l0, l1, l2, l3]),
    };
    if request.length == 0 || request.length > BLOCK_SIZE {
        return Err(WireError::BlockLengthOutOfRange {
            id: msg_id,
            length: request.length,
        });
    }
    Ok(request)
}

/// Parses a piece message body (after the id byte), keeping the data zero-copy.
fn block(len: u32, mut body: BytesMut) -> Result<Block, WireError> {
    const HEADER: usize = 8;
    if body.len() < HEADER {
        return Err(WireError::PieceTooShort { len });
    }
    let header = body.split_to(HEADER);
    let [p0, p1, p2, p3, o0, o1, o2, o3] = fixed::<8>(id::PIECE, len, &header)?;
    let block_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    if block_len == 0 || block_len > BLOCK_SIZE {
        return Err(WireError::PieceBlockOutOfRange { block_len });
    }
    Ok(Block {
        piece: u32::from_be_bytes([p0, p1, p2, p3]),
        offset: u32::from_be_bytes([o0, o1, o2, o3]),
        data: body.freeze(),
    })
}
