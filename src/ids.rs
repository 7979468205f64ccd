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

/// A readable client name from a peer id, for a peer list: the Azureus-style ids most
/// clients send (`-LT2080-…` is "libtorrent (Rasterbar) 2.0.8") and aria2's `A2-1-37-0-`.
/// An id of an unknown shape becomes its printable prefix (up to eight characters), or
/// "unknown". Pure and total: any 20 bytes give some name.
pub fn client_name(id: &PeerId) -> String {
    let b = &id.0;
    if let Some(version) = aria2_version(b) {
        return format!("aria2 {version}");
    }
    if b[0] == b'-' && b[7] == b'-' && b[1..7].iter().all(u8::is_ascii_alphanumeric) {
        let code = [b[1], b[2]];
        let v: Vec<u32> = b[3..7].iter().map(|&c| azureus_digit(c)).collect();
        let three = format!("{}.{}.{}", v[0], v[1], v[2]);
        let named = match &code {
            b"LT" => Some(format!("libtorrent (Rasterbar) {three}")),
            b"lt" => Some(format!("libTorrent (rakshasa) {three}")),
            b"qB" => Some(format!("qBittorrent {three}")),
            b"DE" => Some(format!("Deluge {three}")),
            b"UT" => Some(format!("\u{b5}Torrent {three}")),
            b"AZ" => Some(format!("Vuze {three}.{}", v[3])),
            b"BT" => Some(format!("BitTorrent {three}")),
            b"RQ" | b"rQ" => Some(format!("rqbit {three}")),
            b"TA" => Some(format!("torrent-actors {three}")),
            // Transmission 1 to 3 count minor versions in two digits ("-TR2940-" is
            // 2.94); from 4 on it is major.minor.patch.
            b"TR" if v[0] >= 4 => Some(format!("Transmission {three}")),
            b"TR" => Some(format!("Transmission {}.{}{}", v[0], v[1], v[2])),
            _ => None,
        };
        if let Some(name) = named {
            return name;
        }
    }
    let prefix: String = b
        .iter()
        .take(8)
        .take_while(|c| c.is_ascii_graphic())
        .map(|&c| char::from(c))
        .collect();
    if prefix.is_empty() {
        "unknown".to_string()
    } else {
        prefix
    }
}

/// One version character of an Azureus-style id: `0`-`9`, then `A`-`Z` (or `a`-`z`) for
/// 10 to 35, as libtorrent writes versions past 9.
fn azureus_digit(c: u8) -> u32 {
    match c {
        b'0'..=b'9' => u32::from(c - b'0'),
        b'A'..=b'Z' => u32::from(c - b'A') + 10,
        b'a'..=b'z' => u32::from(c - b'a') + 10,
        _ => 0,
    }
}

/// aria2's `A2-MAJOR-MINOR-PATCH-` form, numbers in decimal.
fn aria2_version(b: &[u8; 20]) -> Option<String> {
    let rest = b.strip_prefix(b"A2-")?;
    let mut parts = rest.split(|&c| c == b'-');
    let mut numbers = Vec::new();
    for _ in 0..3 {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        numbers.push(std::str::from_utf8(part).ok()?.to_string());
    }
    // A fourth `-` must close the version.
    parts.next()?;
    Some(numbers.join("."))
}

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

    fn id(prefix: &[u8]) -> PeerId {
        let mut b = *b"--------------------";
        b[..prefix.len()].copy_from_slice(prefix);
        for c in b.iter_mut().skip(prefix.len()) {
            *c = 0xa7;
        }
        PeerId(b)
    }

    #[test]
    fn common_azureus_style_ids_get_client_names() {
        for (prefix, name) in [
            (&b"-LT2080-"[..], "libtorrent (Rasterbar) 2.0.8"),
            (b"-LT12A0-", "libtorrent (Rasterbar) 1.2.10"),
            (b"-lt0D80-", "libTorrent (rakshasa) 0.13.8"),
            (b"-qB4630-", "qBittorrent 4.6.3"),
            (b"-DE13F0-", "Deluge 1.3.15"),
            (b"-UT355W-", "\u{b5}Torrent 3.5.5"),
            (b"-AZ5770-", "Vuze 5.7.7.0"),
            (b"-BT7A00-", "BitTorrent 7.10.0"),
            (b"-rQ0700-", "rqbit 0.7.0"),
            (b"-RQ0600-", "rqbit 0.6.0"),
            (b"-TA0001-", "torrent-actors 0.0.0"),
            (b"-TR2940-", "Transmission 2.94"),
            (b"-TR3000-", "Transmission 3.00"),
            (b"-TR4050-", "Transmission 4.0.5"),
        ] {
            assert_eq!(
                client_name(&id(prefix)),
                name,
                "{}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    #[test]
    fn aria2_ids_get_their_version() {
        assert_eq!(client_name(&id(b"A2-1-37-0-")), "aria2 1.37.0");
        // Not closed by a dash: not aria2's form.
        assert_eq!(client_name(&id(b"A2-1-37")), "A2-1-37");
    }

    #[test]
    fn unknown_ids_show_their_printable_prefix() {
        assert_eq!(client_name(&id(b"-ZZ1234-")), "-ZZ1234-");
        assert_eq!(client_name(&id(b"M7-2-2--")), "M7-2-2--");
        assert_eq!(client_name(&id(b"ab")), "ab");
        assert_eq!(client_name(&PeerId([0; 20])), "unknown");
        assert_eq!(client_name(&PeerId([0xff; 20])), "unknown");
        // Spaces and control bytes end the prefix.
        assert_eq!(client_name(&id(b"Sx \x01")), "Sx");
    }
}
