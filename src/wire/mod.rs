//! The peer wire protocol: the handshake, the length-prefixed messages of BEP 3 with the
//! fast extension (BEP 6) and the extension protocol envelope (BEP 10), and the bitfield
//! a peer uses to say which pieces it has, and the v2 hash messages (BEP 52).
//!
//! This module owns the byte format only. It turns bytes into typed values and back, and
//! it bounds every length a peer can claim so that hostile input costs at most one bounded
//! frame of memory and ends in a typed [`WireError`], never a panic. It must not open
//! sockets, touch the filesystem, keep per-connection protocol state (who is choked, which
//! requests are pending) or know about actors: those belong to the engine, which drives the
//! codecs here through `tokio_util::codec::Framed`.

mod bitfield;
mod codec;
pub mod ext;
pub mod fast;
mod handshake;
mod hashes;
mod message;
pub mod mse;

pub use bitfield::{Bitfield, BitfieldError};
pub use codec::{MessageCodec, DEFAULT_MAX_MESSAGE_LEN, MIN_MAX_MESSAGE_LEN};
pub use handshake::{Handshake, HandshakeCodec, Reserved, HANDSHAKE_LEN, PROTOCOL_STRING};
pub use hashes::{
    HashRequest, Hashes, HASH_HEADER_LEN, MAX_BASE_LAYER, MAX_HASH_COUNT, MAX_PROOF_LAYERS,
};
pub use message::{message_id, Block, BlockRequest, Message};

/// The largest block a peer may request or send (16 KiB): every current client requests
/// 16 KiB blocks and closes connections that ask for more, so anything larger is hostile.
/// Defined once, with the rest of the piece arithmetic, in [`crate::layout`].
pub use crate::layout::BLOCK_SIZE;

/// Everything that can go wrong while reading or writing the peer wire format.
///
/// Every variant except [`WireError::Io`] means the remote peer sent bytes that break the
/// protocol; the engine should drop the connection. Lengths named `len` are the message
/// length prefix as sent, which counts the one-byte message id and the payload.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The underlying transport failed; `tokio_util` codecs must be able to carry this.
    #[error("i/o error on the peer connection: {0}")]
    Io(#[from] std::io::Error),

    /// The handshake's first byte, the protocol string length, was not 19.
    #[error("handshake protocol string length is {found}, expected 19")]
    WrongProtocolLength {
        /// The length byte the peer sent.
        found: u8,
    },

    /// The handshake's protocol string was not `BitTorrent protocol`.
    #[error("handshake protocol string is {found:?}, expected \"BitTorrent protocol\"")]
    WrongProtocolString {
        /// The 19 bytes the peer sent, lossily decoded for the log.
        found: String,
    },

    /// The stream ended in the middle of a handshake.
    #[error("stream ended after {buffered} of the 68 handshake bytes")]
    TruncatedHandshake {
        /// How many handshake bytes had arrived.
        buffered: usize,
    },

    /// A message's length prefix is larger than the codec's configured maximum.
    #[error("message length {len} exceeds the maximum of {max} bytes")]
    MessageTooLong {
        /// The length prefix the peer sent.
        len: u32,
        /// The codec's configured maximum.
        max: u32,
    },

    /// A message whose size the protocol fixes arrived with a different length.
    #[error("message id {id} must have length {expected}, got {len}")]
    WrongMessageLength {
        /// The message id.
        id: u8,
        /// The length prefix the peer sent.
        len: u32,
        /// The only length this message id may have.
        expected: u32,
    },

    /// A request, cancel or reject named a block of 0 bytes or more than [`BLOCK_SIZE`].
    #[error("message id {id} names a block of {length} bytes, blocks must be 1 to 16384 bytes")]
    BlockLengthOutOfRange {
        /// The message id (request, cancel or reject).
        id: u8,
        /// The block length field the peer sent.
        length: u32,
    },

    /// A piece message was too short to hold its piece index and offset.
    #[error("piece message length {len} is shorter than its 9-byte header")]
    PieceTooShort {
        /// The length prefix the peer sent.
        len: u32,
    },

    /// A piece message carried an empty block or one larger than [`BLOCK_SIZE`].
    #[error("piece message carries a block of {block_len} bytes, blocks must be 1 to 16384 bytes")]
    PieceBlockOutOfRange {
        /// The size of the block data in the message.
        block_len: u32,
    },

    /// An extended (BEP 10) message had no extension id byte after its message id.
    #[error("extended message has no extension id byte")]
    ExtendedMissingId,

    /// A hash request, hashes or hash reject asked for no nodes, more than
    /// [`MAX_HASH_COUNT`], or a count that is not a power of two.
    #[error("message id {id} names {length} hashes, which must be a power of two from 1 to 8192")]
    HashLengthOutOfRange {
        /// The message id.
        id: u8,
        /// The length field the peer sent.
        length: u32,
    },

    /// A hash range whose first index is not a multiple of its length.
    #[error(
        "message id {id} names hashes from index {index}, not a multiple of its length {length}"
    )]
    HashIndexNotAligned {
        /// The message id.
        id: u8,
        /// The index field the peer sent.
        index: u32,
        /// The length field the peer sent.
        length: u32,
    },

    /// A hash range on a layer above any tree's root.
    #[error("message id {id} names base layer {base_layer}, above the highest possible ({MAX_BASE_LAYER})")]
    HashBaseLayerTooHigh {
        /// The message id.
        id: u8,
        /// The base layer field the peer sent.
        base_layer: u32,
    },

    /// A hash range asking for more proof layers than any tree has.
    #[error("message id {id} names {proof_layers} proof layers, more than the {MAX_PROOF_LAYERS} any tree has")]
    HashProofLayersTooMany {
        /// The message id.
        id: u8,
        /// The proof layers field the peer sent.
        proof_layers: u32,
    },

    /// A hashes message whose nodes are not a whole number of 32-byte hashes.
    #[error("hashes message carries {bytes} bytes of nodes, not a multiple of 32")]
    HashesNotMultipleOf32 {
        /// The bytes after the header.
        bytes: usize,
    },

    /// A hashes message with fewer nodes than its range or more than the range and one
    /// uncle per proof layer.
    #[error("hashes message carries {count} nodes for a range of {length} with {proof_layers} proof layers")]
    HashesCountOutOfRange {
        /// Nodes carried.
        count: usize,
        /// The range's length.
        length: u32,
        /// The proof layers asked for.
        proof_layers: u32,
    },

    /// The stream ended in the middle of a message.
    #[error("stream ended with {buffered} bytes of a {needed}-byte frame")]
    TruncatedMessage {
        /// How many bytes of the frame had arrived.
        buffered: usize,
        /// How many bytes the frame needs (4 when even the length prefix is incomplete).
        needed: usize,
    },

    /// A message to send is too large for the 32-bit length prefix.
    #[error("message payload of {payload_len} bytes does not fit a 32-bit length prefix")]
    PayloadTooLargeToEncode {
        /// The payload size the caller asked to send.
        payload_len: usize,
    },

    /// [`Message::Unknown`] was given to the encoder; its payload was discarded on decode,
    /// so it cannot be sent faithfully.
    #[error("message id {id} is unknown and cannot be encoded")]
    UnknownNotEncodable {
        /// The unknown message id.
        id: u8,
    },
}
