//! Bencode (BEP 3): the hardened decoder every untrusted input passes through, and the
//! encoder for what we send.
//!
//! This module owns the byte-level format only. It knows nothing of torrents, trackers or
//! peers; the layers above turn a [`Value`] into their own validated types.
//!
//! The decoder is our own rather than a crate's. The `bencode-rs` crate panics on integer
//! overflow and overflows the stack on deep nesting; `bt_bencode` is fast and borrows the
//! raw `info` bytes, but needs a separate iterative guard in front of untrusted input, and
//! that guard (depth, token count, integer range, length prefixes, offsets for every error)
//! is already most of a decoder. docs/hostile-input.md records the choice.

mod decode;
mod encode;

pub use decode::{
    decode, decode_prefix, decode_prefix_with, decode_with, Dict, Kind, Limits, Value,
    DEFAULT_MAX_DEPTH, DEFAULT_MAX_TOKENS,
};
pub use encode::{write_bytes, write_int, BValue};

/// Why a byte string is not acceptable bencode. Every variant names the byte offset where
/// the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("unexpected end of input at byte {offset}")]
    UnexpectedEof {
        /// Where more input was needed.
        offset: usize,
    },
    /// A byte that cannot start or continue a value here.
    #[error("unexpected byte 0x{byte:02x} at byte {offset}")]
    UnexpectedByte {
        /// Where the byte is.
        offset: usize,
        /// The byte itself.
        byte: u8,
    },
    /// An integer with no digits, a leading zero, `-0` or a non-digit inside.
    #[error("malformed integer at byte {offset}")]
    InvalidInteger {
        /// Where the integer's `i` is.
        offset: usize,
    },
    /// An integer outside the range of a signed 64-bit number.
    #[error("integer at byte {offset} does not fit in 64 bits")]
    IntegerOverflow {
        /// Where the integer's `i` is.
        offset: usize,
    },
    /// A string length with a leading zero.
    #[error("malformed string length at byte {offset}")]
    InvalidLength {
        /// Where the length starts.
        offset: usize,
    },
    /// A string length longer than the input that remains.
    #[error("string at byte {offset} claims more than the {remaining} bytes that remain")]
    LengthBeyondInput {
        /// Where the length starts.
        offset: usize,
        /// How many bytes were left after the colon (or after the length's first digit,
        /// when the length is too large to read at all).
        remaining: usize,
    },
    /// Containers nested deeper than the limit.
    #[error("nesting deeper than {limit} levels at byte {offset}")]
    TooDeep {
        /// Where the container that went past the limit opens.
        offset: usize,
        /// The depth limit in force.
        limit: usize,
    },
    /// More values than the token limit.
    #[error("more than {limit} values at byte {offset}")]
    TooManyTokens {
        /// Where the value that went past the limit starts.
        offset: usize,
        /// The token limit in force.
        limit: usize,
    },
    /// A dictionary key that is not a string.
    #[error("dictionary key at byte {offset} is not a string")]
    NonStringKey {
        /// Where the key starts.
        offset: usize,
    },
    /// A key that appears twice in one dictionary.
    #[error("duplicate dictionary key at byte {offset}")]
    DuplicateKey {
        /// Where the second occurrence starts.
        offset: usize,
    },
    /// Bytes left over after a complete value.
    #[error("trailing data after the value at byte {offset}")]
    TrailingData {
        /// Where the extra bytes start.
        offset: usize,
    },
}

impl DecodeError {
    /// The byte offset the error names.
    pub fn offset(&self) -> usize {
        match *self {
            DecodeError::UnexpectedEof { offset }
            | DecodeError::UnexpectedByte { offset, .. }
            | DecodeError::InvalidInteger { offset }
            | DecodeError::IntegerOverflow { offset }
            | DecodeError::InvalidLength { offset }
            | DecodeError::LengthBeyondInput { offset, .. }
            | DecodeError::TooDeep { offset, .. }
            | DecodeError::TooManyTokens { offset, .. }
            | DecodeError::NonStringKey { offset }
            | DecodeError::DuplicateKey { offset }
            | DecodeError::TrailingData { offset } => offset,
        }
    }
}

#[cfg(test)]
mod tests;
