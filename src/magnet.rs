//! Magnet URIs (BEP 9, with BEP 53 file selection): parsing and writing them back.
//!
//! This module owns the `magnet:?` syntax: the exact topic (`xt=urn:btih:` in hex or
//! base32), display name (`dn`), trackers (`tr`), peer addresses (`x.pe`) and the file
//! selection (`so`). It must not resolve host names, contact trackers or fetch
//! metadata; it only says what the link names. Magnet strings come from users and web
//! pages, so they are treated as hostile: nothing here panics, and every malformed link
//! gets an error naming the offending part.
//!
//! Decisions worth knowing:
//! - Values are decoded as an HTML form would (`application/x-www-form-urlencoded`):
//!   `%XX` escapes are decoded and `+` means a space, which is how most clients write
//!   `dn`. Bytes that are not UTF-8 after decoding are replaced with U+FFFD.
//! - Indexed keys such as `xt.1` and `tr.2` count as `xt` and `tr`. Unknown keys
//!   (`ws`, `xs`, `kt`, ...) are ignored. When `dn` repeats, the first one wins.
//! - `urn:btmh` (BEP 52) must be a SHA2-256 multihash, `1220` and 64 hex digits. A link
//!   with both `urn:btih` and `urn:btmh` (a hybrid torrent) is known to peers by its v1
//!   hash, and its metadata must match both; `urn:btmh` alone (a v2 torrent) is known by
//!   the first 20 bytes of its v2 hash, as on the wire and at trackers.
//! - `x.pe` host names cannot be turned into socket addresses without a resolver, so
//!   they are kept, lowercased, in [`Magnet::peer_hosts`] for the engine to resolve.
//! - Empty `tr` values are ignored; trackers and peers are deduplicated keeping the
//!   first occurrence; `so` ranges are sorted and merged.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use thiserror::Error;

use crate::metainfo::merkle::Hash256;
use crate::metainfo::truncated_v2_hash;
use crate::InfoHash;

/// How many characters of an offending value an error message quotes, so one absurd
/// link cannot produce an absurd message.
const QUOTE_LIMIT: usize = 80;

/// Characters written literally in values by [`Magnet::to_uri`]: the RFC 3986 unreserved
/// set plus `:`, `/` and `,`, which keep tracker URLs and `so` lists readable and are
/// legal in a query.
const VALUE_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'/')
    .remove(b',');

/// Why a string is not a usable magnet link.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MagnetError {
    /// The string does not start with `magnet:?` (any case for the scheme).
    #[error("not a magnet uri: {0:?} does not start with \"magnet:?\"")]
    NotMagnet(String),
    /// No `xt` parameter at all.
    #[error("magnet uri has no xt (exact topic) parameter")]
    MissingExactTopic,
    /// Only exact topics of kinds this client does not know (such as `urn:sha1:`).
    #[error("unsupported exact topic {0:?}: expected urn:btih")]
    UnsupportedExactTopic(String),
    /// A `urn:btmh:` topic that is not a SHA2-256 multihash (`1220` and 64 hex digits).
    #[error("v2 info-hash {0:?} is not 1220 followed by 64 hex digits")]
    BadV2InfoHash(String),
    /// Two different `urn:btmh:` topics.
    #[error("conflicting v2 info-hashes in one magnet uri")]
    ConflictingV2InfoHashes,
    /// The `urn:btih:` hash has a length that is neither 40 (hex) nor 32 (base32).
    #[error("info-hash {value:?} has {len} characters: expected 40 hex or 32 base32")]
    BadInfoHashLength {
        /// The hash as written (possibly shortened).
        value: String,
        /// Its length in characters.
        len: usize,
    },
    /// The `urn:btih:` hash has the right length but characters outside its alphabet.
    #[error("info-hash {value:?} is not valid {encoding}")]
    BadInfoHashChars {
        /// The hash as written.
        value: String,
        /// `"hex"` or `"base32"`, chosen by the length.
        encoding: &'static str,
    },
    /// Two `urn:btih:` topics name different torrents.
    #[error("conflicting info-hashes {first} and {second}")]
    ConflictingInfoHashes {
        /// The hash seen first.
        first: InfoHash,
        /// A later, different hash.
        second: InfoHash,
    },
    /// An `x.pe` value is not `host:port`, `ipv4:port` or `[ipv6]:port` with a port
    /// from 1 to 65535.
    #[error("bad x.pe peer address {0:?}: expected host:port, ipv4:port or [ipv6]:port with a nonzero port")]
    BadPeerAddress(String),
    /// An `so` item is empty or not a decimal number or `a-b` range.
    #[error("bad file index {0:?} in so: expected a decimal index or range such as 4-6")]
    BadFileIndex(String),
    /// An `so` index does not fit in 32 bits.
    #[error("file index {0} in so exceeds 4294967295")]
    FileIndexTooLarge(String),
    /// An `so` range whose end is before its start.
    #[error("reversed so range {first}-{last}: the end must not be before the start")]
    ReversedRange {
        /// The range's start.
        first: u32,
        /// The range's end, smaller than the start.
        last: u32,
    },
}

/// Shortens a value for quoting in an error message.
fn quote(value: &str) -> String {
    if value.chars().count() <= QUOTE_LIMIT {
        value.to_owned()
    } else {
        let mut s: String = value.chars().take(QUOTE_LIMIT).collect();
        s.push_str("...");
        s
    }
}

/// The files a BEP 53 `so` parameter selects: sorted, non-overlapping index ranges.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileSelection {
    ranges: Vec<RangeInclusive<u32>>,
}

impl FileSelection {
    /// A selection of the given inclusive ranges, sorted and merged. Reversed ranges are
    /// rejected rather than silently treated as empty.
    pub fn new(ranges: impl IntoIterator<Item = RangeInclusive<u32>>) -> Result<Self, MagnetError> {
        let mut ranges: Vec<RangeInclusive<u32>> = ranges.into_iter().collect();
        for r in &ranges {
            if r.end() < r.start() {
                return Err(MagnetError::ReversedRange {
                    first: *r.start(),
                    last: *r.end(),
                });
            }
        }
        ranges.sort_by_key(|r| (*r.start(), *r.end()));
        let mut merged: Vec<RangeInclusive<u32>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                // Overlapping or touching ranges become one, so every selection has a
                // single canonical form and `to_uri` round-trips.
                Some(last) if *r.start() <= last.end().saturating_add(1) => {
                    if r.end() > last.end() {
                        *last = *last.start()..=*r.end();
                    }
                }
                _ => merged.push(r),
            }
        }
        Ok(FileSelection { ranges: merged })
    }

    /// Parses the value of an `so` parameter, such as `0,2,4-6`.
    pub fn parse(value: &str) -> Result<Self, MagnetError> {
        let mut ranges = Vec::new();
        for item in value.split(',') {
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (parse_index(a, item)?, parse_index(b, item)?),
                None => {
                    let i = parse_index(item, item)?;
                    (i, i)
                }
            };
            if last < first {
                return Err(MagnetError::ReversedRange { first, last });
            }
            ranges.push(first..=last);
        }
        FileSelection::new(ranges)
    }

    /// The merged ranges, in ascending order.
    pub fn ranges(&self) -> &[RangeInclusive<u32>] {
        &self.ranges
    }

    /// Whether the file with this index is selected (a binary search: the ranges are
    /// merged and ascending).
    pub fn contains(&self, index: u32) -> bool {
        let after = self.ranges.partition_point(|r| *r.end() < index);
        self.ranges.get(after).is_some_and(|r| r.contains(&index))
    }
}

impl fmt::Display for FileSelection {
    /// The `so` form: comma-separated indices and `a-b` ranges.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

/// Parses one decimal file index; `item` is the whole `so` item, for the error.
fn parse_index(digits: &str, item: &str) -> Result<u32, MagnetError> {
    // `u32::from_str` would also take a leading `+`; an index is digits only.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MagnetError::BadFileIndex(quote(item)));
    }
    digits
        .parse::<u32>()
        .map_err(|_| MagnetError::FileIndexTooLarge(quote(digits)))
}

/// A parsed magnet link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    /// The hash peers and trackers know the torrent by: the v1 info-hash from
    /// `xt=urn:btih:`, or for a link with only `urn:btmh:` the first 20 bytes of the v2
    /// one.
    pub info_hash: InfoHash,
    /// The whole v2 info-hash (SHA-256 of the info dictionary) from `xt=urn:btmh:`.
    pub v2_info_hash: Option<Hash256>,
    /// The suggested name from `dn`, if any.
    pub display_name: Option<String>,
    /// Tracker URLs from `tr`, in order, without duplicates or empty values. They are
    /// not validated as URLs here; the tracker layer rejects what it cannot use.
    pub trackers: Vec<String>,
    /// Peers from `x.pe` given as IP literals, in order, without duplicates.
    pub peers: Vec<SocketAddr>,
    /// Peers from `x.pe` given as host names (lowercased) and ports, left for the engine
    /// to resolve.
    pub peer_hosts: Vec<(String, u16)>,
    /// The BEP 53 file selection from `so`; `None` means every file.
    pub select_only: Option<FileSelection>,
}

/// An `x.pe` value, sorted by kind.
enum PeerAddress {
    Ip(SocketAddr),
    Host(String, u16),
}

/// Parses an `x.pe` value: `[ipv6]:port`, `ipv4:port` or `hostname:port`.
fn parse_peer(value: &str) -> Result<PeerAddress, MagnetError> {
    let bad = || MagnetError::BadPeerAddress(quote(value));
    if let Ok(addr) = SocketAddr::from_str(value) {
        if addr.port() == 0 {
            return Err(bad());
        }
        return Ok(PeerAddress::Ip(addr));
    }
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || !is_hostname(host) {
        return Err(bad());
    }
    Ok(PeerAddress::Host(host.to_ascii_lowercase(), port))
}

/// Whether `host` is a plausible DNS name: dot-separated labels of letters, digits and
/// inner hyphens, at most 253 characters. A name whose last label is all digits is
/// refused, since it can only be a mistyped IPv4 address such as `1.2.3.400`.
fn is_hostname(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_numeric
}

/// A `urn:btmh:` value: the SHA2-256 multihash prefix `1220` and 64 hex digits.
fn parse_btmh(value: &str) -> Result<Hash256, MagnetError> {
    let bad = || MagnetError::BadV2InfoHash(quote(value));
    let digits = strip_prefix_ignore_case(value, "1220").ok_or_else(bad)?;
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = digits.get(2 * i..2 * i + 2).ok_or_else(bad)?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Decodes the hash part of `urn:btih:`: 40 hex or 32 base32 characters, any case.
fn parse_btih(hash: &str) -> Result<InfoHash, MagnetError> {
    let len = hash.chars().count();
    let decoded = match len {
        40 => InfoHash::from_hex(hash).ok_or_else(|| MagnetError::BadInfoHashChars {
            value: quote(hash),
            encoding: "hex",
        })?,
        32 => {
            let upper = hash.to_ascii_uppercase();
            let bytes = data_encoding::BASE32
                .decode(upper.as_bytes())
                .map_err(|_| MagnetError::BadInfoHashChars {
                    value: quote(hash),
                    encoding: "base32",
                })?;
            let array: [u8; 20] = bytes
                .try_into()
                .map_err(|_| MagnetError::BadInfoHashChars {
                    value: quote(hash),
                    encoding: "base32",
                })?;
            InfoHash(array)
        }
        _ => {
            return Err(MagnetError::BadInfoHashLength {
                value: quote(hash),
                len,
            })
        }
    };
    Ok(decoded)
}

/// Whether `key` is `name` or an indexed form of it such as `name.1`.
fn key_is(key: &str, name: &str) -> bool {
    match key.strip_prefix(name) {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

/// Strips a case-insensitive ASCII prefix.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// The exact topics (`xt`) of one link, gathered across its parameters.
#[derive(Default)]
struct ExactTopics {
    /// The v1 info-hash (`urn:btih`).
    v1: Option<InfoHash>,
    /// The v2 info-hash (`urn:btmh`).
    v2: Option<Hash256>,
    /// The first topic of another kind, quoted for the error if no info-hash comes.
    other: Option<String>,
}

impl ExactTopics {
    /// Takes one `xt` value; a second v1 or v2 info-hash must equal the first.
    fn add(&mut self, value: &str) -> Result<(), MagnetError> {
        if let Some(hash) = strip_prefix_ignore_case(value, "urn:btih:") {
            let hash = parse_btih(hash)?;
            match self.v1 {
                Some(first) if first != hash => {
                    return Err(MagnetError::ConflictingInfoHashes {
                        first,
                        second: hash,
                    })
                }
                _ => self.v1 = Some(hash),
            }
        } else if let Some(hash) = strip_prefix_ignore_case(value, "urn:btmh:") {
            let hash = parse_btmh(hash)?;
            if self.v2.is_some_and(|first| first != hash) {
                return Err(MagnetError::ConflictingV2InfoHashes);
            }
            self.v2 = Some(hash);
        } else {
            self.other.get_or_insert_with(|| quote(value));
        }
        Ok(())
    }

    /// The swarm's info-hash: the v1 one, else the v2 one truncated.
    fn info_hash(self) -> Result<InfoHash, MagnetError> {
        match (self.v1, self.v2, self.other) {
            (Some(hash), _, _) => Ok(hash),
            (None, Some(v2), _) => Ok(truncated_v2_hash(&v2)),
            (None, None, Some(other)) => Err(MagnetError::UnsupportedExactTopic(other)),
            (None, None, None) => Err(MagnetError::MissingExactTopic),
        }
    }
}

impl Magnet {
    /// Parses a magnet link. Surrounding whitespace is ignored.
    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        let uri = uri.trim();
        let query = strip_prefix_ignore_case(uri, "magnet:")
            .and_then(|rest| rest.strip_prefix('?'))
            .ok_or_else(|| MagnetError::NotMagnet(quote(uri)))?;

        let mut topics = ExactTopics::default();
        let mut display_name = None;
        let mut trackers = Vec::new();
        let mut seen_trackers = HashSet::new();
        let mut peers = Vec::new();
        let mut seen_peers = HashSet::new();
        let mut peer_hosts = Vec::new();
        let mut seen_hosts = HashSet::new();
        let mut ranges: Vec<RangeInclusive<u32>> = Vec::new();
        let mut has_selection = false;

        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key_is(&key, "xt") {
                topics.add(&value)?;
            } else if key == "dn" {
                if display_name.is_none() {
                    display_name = Some(value.into_owned());
                }
            } else if key_is(&key, "tr") {
                if !value.is_empty() && seen_trackers.insert(value.clone()) {
                    trackers.push(value.into_owned());
                }
            } else if key == "x.pe" {
                match parse_peer(&value)? {
                    PeerAddress::Ip(addr) => {
                        if seen_peers.insert(addr) {
                            peers.push(addr);
                        }
                    }
                    PeerAddress::Host(host, port) => {
                        if seen_hosts.insert((host.clone(), port)) {
                            peer_hosts.push((host, port));
                        }
                    }
                }
            } else if key == "so" {
                // Several `so` parameters select the union of their files.
                has_selection = true;
                ranges.extend(FileSelection::parse(&value)?.ranges);
            }
        }

        let v2_hash = topics.v2;
        let info_hash = topics.info_hash()?;
        let select_only = if has_selection {
            Some(FileSelection::new(ranges)?)
        } else {
            None
        };
        Ok(Magnet {
            info_hash,
            v2_info_hash: v2_hash,
            display_name,
            trackers,
            peers,
            peer_hosts,
            select_only,
        })
    }

    /// Whether the link names a v1 info-hash (`urn:btih`): not for a v2 torrent, whose
    /// `info_hash` is its truncated v2 hash.
    pub fn has_v1(&self) -> bool {
        self.v2_info_hash
            .is_none_or(|v2| truncated_v2_hash(&v2) != self.info_hash)
    }

    /// Writes the link back as a `magnet:?` URI with a lowercase hex `urn:btih` and
    /// `urn:btmh`, each if the link has it. Parsing the result gives back an equal
    /// `Magnet` as long as the fields keep the invariants [`Magnet::parse`] establishes
    /// (no empty or repeated trackers, no repeated peers, valid lowercase host names,
    /// nonzero ports).
    pub fn to_uri(&self) -> String {
        let mut out = String::from("magnet:?");
        let mut topics = Vec::new();
        if self.has_v1() {
            topics.push(format!("xt=urn:btih:{}", self.info_hash.to_hex()));
        }
        if let Some(v2) = &self.v2_info_hash {
            let hex: String = v2.iter().map(|b| format!("{b:02x}")).collect();
            topics.push(format!("xt=urn:btmh:1220{hex}"));
        }
        out.push_str(&topics.join("&"));
        let mut param = |key: &str, value: &str| {
            out.push('&');
            out.push_str(key);
            out.push('=');
            out.extend(utf8_percent_encode(value, VALUE_ENCODE_SET));
        };
        if let Some(name) = &self.display_name {
            param("dn", name);
        }
        for tracker in &self.trackers {
            param("tr", tracker);
        }
        for peer in &self.peers {
            param("x.pe", &peer.to_string());
        }
        for (host, port) in &self.peer_hosts {
            param("x.pe", &format!("{host}:{port}"));
        }
        if let Some(selection) = &self.select_only {
            param("so", &selection.to_string());
        }
        out
    }
}

impl FromStr for Magnet {
    type Err = MagnetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Magnet::parse(s)
    }
}

impl fmt::Display for Magnet {
    /// The same text as [`Magnet::to_uri`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    fn hash() -> InfoHash {
        InfoHash::from_hex(HEX).unwrap()
    }

    fn parse(s: &str) -> Result<Magnet, MagnetError> {
        Magnet::parse(s)
    }

    #[test]
    fn hex_btih_with_name_and_trackers() {
        let m = parse(&format!(
            "magnet:?xt=urn:btih:{}&dn=Some+Name%21&tr=udp%3A%2F%2Ft.example%3A80&tr=http://b.example/announce",
            HEX.to_uppercase()
        ))
        .unwrap();
        assert_eq!(m.info_hash, hash());
        assert_eq!(m.display_name.as_deref(), Some("Some Name!"));
        assert_eq!(
            m.trackers,
            vec!["udp://t.example:80", "http://b.example/announce"]
        );
        assert!(m.peers.is_empty());
        assert_eq!(m.select_only, None);
    }

    #[test]
    fn base32_btih_in_either_case() {
        let b32 = data_encoding::BASE32.encode(hash().as_bytes());
        assert_eq!(b32.len(), 32);
        for v in [b32.clone(), b32.to_lowercase()] {
            let m = parse(&format!("magnet:?xt=urn:btih:{v}")).unwrap();
            assert_eq!(m.info_hash, hash());
        }
    }

    #[test]
    fn scheme_and_urn_prefix_are_case_insensitive_and_whitespace_is_trimmed() {
        let m = parse(&format!("  MAGNET:?xt=URN:BTIH:{HEX}\n")).unwrap();
        assert_eq!(m.info_hash, hash());
    }

    #[test]
    fn repeated_trackers_are_deduplicated_in_order_and_empty_ones_ignored() {
        let m = parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&tr=a&tr=b&tr=a&tr=&tr.1=c&tr.2=b"
        ))
        .unwrap();
        assert_eq!(m.trackers, vec!["a", "b", "c"]);
    }

    #[test]
    fn peers_of_every_form_are_sorted_into_ips_and_hosts() {
        let m = parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&x.pe=1.2.3.4:6881&x.pe=%5B2001:db8::1%5D:51413\
             &x.pe=Peer.Example.COM:7000&x.pe=1.2.3.4:6881"
        ))
        .unwrap();
        assert_eq!(
            m.peers,
            vec![
                "1.2.3.4:6881".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:51413".parse().unwrap()
            ]
        );
        assert_eq!(m.peer_hosts, vec![("peer.example.com".to_owned(), 7000)]);
    }

    #[test]
    fn bad_peer_addresses_are_rejected_by_value() {
        for bad in [
            "1.2.3.4",
            "1.2.3.4:0",
            "1.2.3.4:65536",
            "1.2.3.400:80",
            "2001:db8::1:80",
            "[2001:db8::1]",
            "host:+80",
            ":80",
            "bad_host:80",
            "-lead.example:80",
            "a..b:80",
            "[::1]:0",
        ] {
            let enc = utf8_percent_encode(bad, NON_ALPHANUMERIC).to_string();
            assert_eq!(
                parse(&format!("magnet:?xt=urn:btih:{HEX}&x.pe={enc}")),
                Err(MagnetError::BadPeerAddress(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn select_only_ranges_are_parsed_sorted_and_merged() {
        let m = parse(&format!("magnet:?xt=urn:btih:{HEX}&so=7,0,2,4-6,3")).unwrap();
        let sel = m.select_only.unwrap();
        assert_eq!(sel.ranges(), &[0..=0, 2..=7]);
        assert!(sel.contains(5) && sel.contains(0) && !sel.contains(1) && !sel.contains(8));
        assert_eq!(sel.to_string(), "0,2-7");
    }

    #[test]
    fn bad_select_only_values_are_rejected() {
        let so = |v: &str| parse(&format!("magnet:?xt=urn:btih:{HEX}&so={v}"));
        assert_eq!(
            so("6-4"),
            Err(MagnetError::ReversedRange { first: 6, last: 4 })
        );
        assert_eq!(so("1,,2"), Err(MagnetError::BadFileIndex(String::new())));
        assert_eq!(so(""), Err(MagnetError::BadFileIndex(String::new())));
        assert_eq!(so("1-"), Err(MagnetError::BadFileIndex("1-".into())));
        assert_eq!(so("a"), Err(MagnetError::BadFileIndex("a".into())));
        assert_eq!(so("%2B3"), Err(MagnetError::BadFileIndex("+3".into())));
        assert_eq!(so("1-2-3"), Err(MagnetError::BadFileIndex("1-2-3".into())));
        assert_eq!(
            so("4294967296"),
            Err(MagnetError::FileIndexTooLarge("4294967296".into()))
        );
        assert!(so("4294967295").is_ok());
    }

    #[test]
    fn file_selection_new_rejects_reversed_ranges() {
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 3..=1;
        assert_eq!(
            FileSelection::new([reversed]),
            Err(MagnetError::ReversedRange { first: 3, last: 1 })
        );
        assert_eq!(
            FileSelection::new([0..=u32::MAX, 5..=6]).unwrap().ranges(),
            &[0..=u32::MAX]
        );
    }

    #[test]
    fn non_magnet_strings_are_rejected() {
        for s in [
            "",
            "http://example.com/?xt=urn:btih:x",
            "magnet:",
            "magnet:xt=1",
            "magnet",
        ] {
            assert!(matches!(parse(s), Err(MagnetError::NotMagnet(_))), "{s}");
        }
    }

    #[test]
    fn missing_or_unknown_topics_are_rejected() {
        assert_eq!(parse("magnet:?dn=x"), Err(MagnetError::MissingExactTopic));
        assert_eq!(parse("magnet:?"), Err(MagnetError::MissingExactTopic));
        assert_eq!(
            parse("magnet:?xt=urn:sha1:abc"),
            Err(MagnetError::UnsupportedExactTopic("urn:sha1:abc".into()))
        );
    }

    #[test]
    fn v2_links_are_known_by_the_truncated_v2_hash_and_hybrids_by_btih() {
        let v2 = [0xab; 32];
        let btmh = format!("urn:btmh:1220{}", "AB".repeat(32));
        let m = parse(&format!("magnet:?xt={btmh}")).unwrap();
        assert_eq!(m.v2_info_hash, Some(v2));
        assert_eq!(m.info_hash, InfoHash([0xab; 20]));
        assert!(!m.has_v1());
        assert_eq!(
            m.to_uri(),
            format!("magnet:?xt=urn:btmh:1220{}", "ab".repeat(32))
        );
        let m = parse(&format!("magnet:?xt={btmh}&xt=urn:btih:{HEX}")).unwrap();
        assert_eq!((m.info_hash, m.v2_info_hash), (hash(), Some(v2)));
        assert!(m.has_v1());
        let m = parse(&format!("magnet:?xt.1=urn:btih:{HEX}&xt.2={btmh}")).unwrap();
        assert_eq!((m.info_hash, m.v2_info_hash), (hash(), Some(v2)));
        assert_eq!(parse(&m.to_uri()), Ok(m));
    }

    #[test]
    fn bad_and_conflicting_v2_hashes_are_rejected() {
        for bad in [
            format!("1120{}", "ab".repeat(32)),
            format!("1220{}", "ab".repeat(31)),
            format!("1220{}", "ab".repeat(33)),
            format!("1220{}zz", "ab".repeat(31)),
            "1220".to_string(),
            format!("1220{}é", "a".repeat(63)),
        ] {
            assert_eq!(
                parse(&format!("magnet:?xt=urn:btmh:{bad}")),
                Err(MagnetError::BadV2InfoHash(quote(&bad))),
                "{bad}"
            );
        }
        assert_eq!(
            parse(&format!(
                "magnet:?xt=urn:btmh:1220{}&xt=urn:btmh:1220{}",
                "ab".repeat(32),
                "cd".repeat(32)
            )),
            Err(MagnetError::ConflictingV2InfoHashes)
        );
    }

    #[test]
    fn bad_hash_lengths_and_characters_are_rejected() {
        assert_eq!(
            parse("magnet:?xt=urn:btih:abcd"),
            Err(MagnetError::BadInfoHashLength {
                value: "abcd".into(),
                len: 4
            })
        );
        let bad_hex = "g".repeat(40);
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btih:{bad_hex}")),
            Err(MagnetError::BadInfoHashChars {
                value: bad_hex,
                encoding: "hex"
            })
        );
        let bad_b32 = "1".repeat(32);
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btih:{bad_b32}")),
            Err(MagnetError::BadInfoHashChars {
                value: bad_b32,
                encoding: "base32"
            })
        );
        // Forty characters, but one of them is two bytes wide.
        let wide = format!("{}é", "a".repeat(39));
        assert!(matches!(
            parse(&format!("magnet:?xt=urn:btih:{wide}")),
            Err(MagnetError::BadInfoHashChars {
                encoding: "hex",
                ..
            })
        ));
    }

    #[test]
    fn conflicting_hashes_are_rejected_but_repeats_are_fine() {
        let other = "0".repeat(40);
        assert!(matches!(
            parse(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{other}")),
            Err(MagnetError::ConflictingInfoHashes { .. })
        ));
        let b32 = data_encoding::BASE32.encode(hash().as_bytes());
        assert!(parse(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{b32}")).is_ok());
    }

    #[test]
    fn long_offending_values_are_shortened_in_errors() {
        let long = "x".repeat(1000);
        let Err(MagnetError::NotMagnet(quoted)) = parse(&long) else {
            panic!("expected NotMagnet");
        };
        assert_eq!(quoted.len(), QUOTE_LIMIT + 3);
    }

    #[test]
    fn first_display_name_wins_and_invalid_utf8_is_replaced() {
        let m = parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=a%FFb&dn=second")).unwrap();
        assert_eq!(m.display_name.as_deref(), Some("a\u{fffd}b"));
    }

    #[test]
    fn to_uri_writes_everything_and_escapes_values() {
        let m = Magnet {
            info_hash: hash(),
            v2_info_hash: None,
            display_name: Some("a b&c=d+e".into()),
            trackers: vec!["http://t.example/announce?x=1".into()],
            peers: vec!["[::1]:80".parse().unwrap()],
            peer_hosts: vec![("h.example".into(), 9)],
            select_only: Some(FileSelection::new([1..=1, 3..=4]).unwrap()),
        };
        let uri = m.to_uri();
        assert_eq!(
            uri,
            format!(
                "magnet:?xt=urn:btih:{HEX}&dn=a%20b%26c%3Dd%2Be\
                 &tr=http://t.example/announce%3Fx%3D1&x.pe=%5B::1%5D:80&x.pe=h.example:9&so=1,3-4"
            )
        );
        assert_eq!(parse(&uri), Ok(m.clone()));
        assert_eq!(m.to_string(), uri);
        assert_eq!(uri.parse::<Magnet>(), Ok(m));
    }

    #[test]
    fn error_messages_name_the_offending_value() {
        assert_eq!(
            MagnetError::BadPeerAddress("x".into()).to_string(),
            "bad x.pe peer address \"x\": expected host:port, ipv4:port or [ipv6]:port with a nonzero port"
        );
        assert_eq!(
            MagnetError::ReversedRange { first: 6, last: 4 }.to_string(),
            "reversed so range 6-4: the end must not be before the start"
        );
    }

    fn arb_magnet() -> impl Strategy<Value = Magnet> {
        let peer = prop_oneof![
            (any::<[u8; 4]>(), 1..=u16::MAX).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), 1..=u16::MAX).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ];
        (
            (any::<[u8; 20]>(), proptest::option::of(any::<[u8; 32]>())),
            proptest::option::of(any::<String>()),
            proptest::collection::vec(".+", 0..4),
            proptest::collection::vec(peer, 0..4),
            proptest::collection::vec(
                ("[a-z][a-z0-9-]{0,8}[a-z]\\.[a-z]{2,5}", 1..=u16::MAX),
                0..3,
            ),
            proptest::option::of(proptest::collection::vec((0u32..100, 0u32..5), 1..5)),
        )
            .prop_map(|((h, v2), dn, trackers, peers, hosts, so)| {
                let mut seen = HashSet::new();
                let trackers = trackers
                    .into_iter()
                    .filter(|t| seen.insert(t.clone()))
                    .collect();
                let mut seen = HashSet::new();
                let peers = peers.into_iter().filter(|p| seen.insert(*p)).collect();
                let mut seen = HashSet::new();
                let peer_hosts = hosts
                    .into_iter()
                    .filter(|p| seen.insert(p.clone()))
                    .collect();
                let select_only = so.map(|v| {
                    FileSelection::new(v.into_iter().map(|(a, len)| a..=a + len)).unwrap()
                });
                Magnet {
                    info_hash: InfoHash(h),
                    v2_info_hash: v2,
                    display_name: dn,
                    trackers,
                    peers,
                    peer_hosts,
                    select_only,
                }
            })
    }

    proptest! {
        #[test]
        fn to_uri_then_parse_round_trips(m in arb_magnet()) {
            prop_assert_eq!(Magnet::parse(&m.to_uri()), Ok(m));
        }

        #[test]
        fn parse_never_panics_and_parsed_links_round_trip(s in "magnet:\\?(xt=urn:btih:[0-9a-fA-F]{40}&)?[a-z.=&%0-9A-F:\\[\\]+-]{0,60}") {
            if let Ok(m) = Magnet::parse(&s) {
                prop_assert_eq!(Magnet::parse(&m.to_uri()), Ok(m));
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let _ = Magnet::parse(&s);
            let _ = FileSelection::parse(&s);
        }

        #[test]
        fn selection_membership_matches_the_ranges_it_was_built_from(
            v in proptest::collection::vec((0u32..50, 0u32..5), 1..6), probe in 0u32..60) {
            let sel = FileSelection::new(v.iter().map(|&(a, l)| a..=a + l)).unwrap();
            let expected = v.iter().any(|&(a, l)| (a..=a + l).contains(&probe));
            prop_assert_eq!(sel.contains(probe), expected);
            prop_assert_eq!(FileSelection::parse(&sel.to_string()), Ok(sel));
        }
    }
}
