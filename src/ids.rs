//! The 20-byte identifiers every layer shares: the torrent's info-hash and a peer's id.
//!
//! Both are plain byte arrays with a hex form for people; neither knows how it was made.

use std::fmt;

/// SHA-1 of the raw bencoded `info` dictionary (BitTorrent v1): the torrent's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// The 20 bytes a peer names itself with in the handshake and in tracker announces.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 20]);

macro_rules! twenty_byte_id {
    ($name:ident) => {
        impl $name {
            /// The 40-character lowercase hex form.
            pub fn to_hex(&self) -> String {
                data_encoding::HEXLOWER.encode(&self.0)
            }

            /// Parses 40 hex digits (either case); `None` for anything else.
            pub fn from_hex(s: &str) -> Option<Self> {
                if s.len() != 40 {
                    return None;
                }
                let bytes = data_encoding::HEXLOWER_PERMISSIVE
                    .decode(s.as_bytes())
                    .ok()?;
                Some(Self(bytes.try_into().ok()?))
            }

            /// The raw 20 bytes.
            pub fn as_bytes(&self) -> &[u8; 20] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

twenty_byte_id!(InfoHash);
twenty_byte_id!(PeerId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_wrong_lengths() {
        let h = InfoHash([0xab; 20]);
        assert_eq!(InfoHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(InfoHash::from_hex(&h.to_hex().to_uppercase()), Some(h));
        assert_eq!(InfoHash::from_hex("abcd"), None);
        assert_eq!(InfoHash::from_hex(&"zz".repeat(20)), None);
    }
}
