//! Which pieces a peer (or we) have: one bit per piece, high bit of the first byte first,
//! exactly as the bitfield message carries it.
//!
//! The type checks a peer's bitfield against the torrent's piece count and answers
//! questions about it. It must not decide what to download; piece picking lives in the
//! engine.

use bytes::Bytes;

/// Why a bitfield was refused or a piece index could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    /// A bitfield payload's length is not `ceil(num_pieces / 8)` bytes.
    #[error("bitfield is {len} bytes, a torrent of {num_pieces} pieces needs {expected}")]
    WrongLength {
        /// The payload length the peer sent.
        len: usize,
        /// The length the piece count requires.
        expected: usize,
        /// The torrent's piece count.
        num_pieces: u32,
    },

    /// A bitfield payload has bits set past the last piece, which BEP 3 requires be clear.
    #[error("bitfield has spare bits set after piece {num_pieces}")]
    SpareBitsSet {
        /// The torrent's piece count.
        num_pieces: u32,
    },

    /// A piece index is not below the piece count.
    #[error("piece index {index} is out of range for {num_pieces} pieces")]
    PieceOutOfRange {
        /// The index asked for.
        index: u32,
        /// The torrent's piece count.
        num_pieces: u32,
    },
}

/// A set of piece indices below a fixed piece count, stored as the wire bitfield.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bitfield {
    /// The bits in wire order; always `ceil(num_pieces / 8)` bytes with spare bits clear,
    /// so it can be sent as is.
    bits: Vec<u8>,
    /// The torrent's piece count; indices at or past it are never set.
    num_pieces: u32,
}

impl Bitfield {
    /// An empty bitfield (no pieces) for a torrent of `num_pieces` pieces.
    pub fn new(num_pieces: u32) -> Self {
        Self {
            bits: vec![0; byte_len(num_pieces)],
            num_pieces,
        }
    }

    /// A full bitfield (every piece), as a seeder sends or a have-all message implies.
    pub fn full(num_pieces: u32) -> Self {
        let mut bits = vec![0xFF; byte_len(num_pieces)];
        if let Some(last) = bits.last_mut() {
            *last &= !spare_mask(num_pieces);
        }
        Self { bits, num_pieces }
    }

    /// Checks a peer's bitfield payload against the torrent's piece count.
    pub fn from_payload(payload: &[u8], num_pieces: u32) -> Result<Self, BitfieldError> {
        let expected = byte_len(num_pieces);
        if payload.len() != expected {
            return Err(BitfieldError::WrongLength {
                len: payload.len(),
                expected,
                num_pieces,
            });
        }
        if payload
            .last()
            .is_some_and(|last| last & spare_mask(num_pieces) != 0)
        {
            return Err(BitfieldError::SpareBitsSet { num_pieces });
        }
        Ok(Self {
            bits: payload.to_vec(),
            num_pieces,
        })
    }

    /// The piece count this bitfield was made for.
    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// Whether piece `index` is set; `false` for indices past the piece count.
    pub fn has(&self, index: u32) -> bool {
        if index >= self.num_pieces {
            return false;
        }
        let (byte, mask) = position(index);
        self.bits.get(byte).is_some_and(|b| b & mask != 0)
    }

    /// Marks piece `index` as present.
    pub fn set(&mut self, index: u32) -> Result<(), BitfieldError> {
        let b = self.byte_mut(index)?;
        *b |= position(index).1;
        Ok(())
    }

    /// Marks piece `index` as absent.
    pub fn clear(&mut self, index: u32) -> Result<(), BitfieldError> {
        let b = self.byte_mut(index)?;
        *b &= !position(index).1;
        Ok(())
    }

    /// Whether any piece is set. It looks at 64 bytes at a time (their OR compiles to a
    /// few vector instructions) and stops at the first chunk with a piece: the Coordinator
    /// asks this of every quiet peer ten times a second, and a byte-at-a-time scan of a
    /// peer with no piece was a visible cost with thousands of them.
    pub fn any(&self) -> bool {
        self.bits
            .chunks(64)
            .any(|chunk| chunk.iter().fold(0, |acc, b| acc | b) != 0)
    }

    /// How many pieces are set.
    pub fn count_ones(&self) -> u32 {
        // Spare bits are always clear, so counting whole bytes is exact.
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every piece is set (true for a torrent of zero pieces).
    pub fn all_set(&self) -> bool {
        self.count_ones() == self.num_pieces
    }

    /// Whether no piece is set.
    pub fn none_set(&self) -> bool {
        !self.any()
    }

    /// The bitfield in wire form, ready for a bitfield message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// A copy of the wire form as [`Bytes`], for [`super::Message::Bitfield`].
    pub fn to_payload(&self) -> Bytes {
        Bytes::copy_from_slice(&self.bits)
    }

    /// The set piece indices in increasing order.
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.num_pieces).filter(move |&i| self.has(i))
    }

    /// The byte holding piece `index`, or the out-of-range error.
    fn byte_mut(&mut self, index: u32) -> Result<&mut u8, BitfieldError> {
        let out_of_range = BitfieldError::PieceOutOfRange {
            index,
            num_pieces: self.num_pieces,
        };
        if index >= self.num_pieces {
            return Err(out_of_range);
        }
        self.bits.get_mut(position(index).0).ok_or(out_of_range)
    }
}

/// Bytes needed for `num_pieces` bits.
fn byte_len(num_pieces: u32) -> usize {
    // A u32 divided by 8 fits a usize on every platform with at least 32-bit pointers.
    usize::try_from(num_pieces.div_ceil(8)).unwrap_or(usize::MAX)
}

/// Byte index and bit mask of piece `index`; bit 7 of byte 0 is piece 0.
fn position(index: u32) -> (usize, u8) {
    let byte = usize::try_from(index / 8).unwrap_or(usize::MAX);
    (byte, 0x80 >> (index % 8))
}

/// The bits of the last byte that lie past the last piece.
fn spare_mask(num_pieces: u32) -> u8 {
    match num_pieces % 8 {
        0 => 0,
        used => 0xFF >> used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn piece_zero_is_the_high_bit_of_the_first_byte() {
        let mut bf = Bitfield::new(10);
        assert_eq!(bf.set(0), Ok(()));
        assert_eq!(bf.set(9), Ok(()));
        assert_eq!(bf.as_bytes(), &[0x80, 0x40]);
        assert!(bf.has(0) && bf.has(9) && !bf.has(1));
        assert_eq!(bf.iter_set().collect::<Vec<_>>(), vec![0, 9]);
    }

    #[test]
    fn payload_of_the_wrong_length_is_rejected() {
        assert_eq!(
            Bitfield::from_payload(&[0, 0], 17),
            Err(BitfieldError::WrongLength {
                len: 2,
                expected: 3,
                num_pieces: 17
            })
        );
        assert!(Bitfield::from_payload(&[0, 0, 0, 0], 17).is_err());
        assert!(Bitfield::from_payload(&[0, 0, 0], 17).is_ok());
    }

    #[test]
    fn spare_bits_set_are_rejected() {
        assert_eq!(
            Bitfield::from_payload(&[0xFF, 0x40], 9),
            Err(BitfieldError::SpareBitsSet { num_pieces: 9 })
        );
        assert!(Bitfield::from_payload(&[0xFF, 0x80], 9).is_ok());
    }

    #[test]
    fn indices_past_the_piece_count_do_not_panic() {
        let mut bf = Bitfield::full(9);
        assert!(!bf.has(9));
        assert!(!bf.has(u32::MAX));
        assert_eq!(
            bf.set(9),
            Err(BitfieldError::PieceOutOfRange {
                index: 9,
                num_pieces: 9
            })
        );
        assert!(bf.set(u32::MAX).is_err());
        assert!(bf.clear(u32::MAX).is_err());
        assert_eq!(bf.as_bytes(), &[0xFF, 0x80]);
    }

    #[test]
    fn full_and_empty_bitfields_report_themselves() {
        let full = Bitfield::full(13);
        assert!(full.all_set() && !full.none_set());
        assert_eq!(full.count_ones(), 13);
        let empty = Bitfield::new(13);
        assert!(empty.none_set() && !empty.all_set());
        let zero = Bitfield::new(0);
        assert!(zero.as_bytes().is_empty() && zero.all_set() && zero.none_set());
        assert_eq!(Bitfield::from_payload(&[], 0), Ok(zero));
    }

    proptest! {
        #[test]
        fn set_pieces_are_exactly_those_reported(
            num_pieces in 0u32..2000,
            picks in proptest::collection::btree_set(0u32..2200, 0..50),
        ) {
            let mut bf = Bitfield::new(num_pieces);
            for &i in &picks {
                prop_assert_eq!(bf.set(i).is_ok(), i < num_pieces);
            }
            let expected: Vec<u32> = picks.iter().copied().filter(|&i| i < num_pieces).collect();
            prop_assert_eq!(bf.iter_set().collect::<Vec<_>>(), expected.clone());
            prop_assert_eq!(bf.count_ones() as usize, expected.len());
            // Past the first 64-byte chunk too.
            prop_assert_eq!(bf.any(), !expected.is_empty());
            let reparsed = Bitfield::from_payload(&bf.to_payload(), num_pieces);
            prop_assert_eq!(reparsed, Ok(bf.clone()));
            for &i in &expected {
                prop_assert_eq!(bf.clear(i), Ok(()));
            }
            prop_assert!(bf.none_set());
        }

        #[test]
        fn from_payload_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            num_pieces in any::<u32>(),
        ) {
            let _ = Bitfield::from_payload(&payload, num_pieces % 400);
            let _ = Bitfield::from_payload(&payload, num_pieces);
        }
    }
}
