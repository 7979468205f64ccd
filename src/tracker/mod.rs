//! Tracker message formats: what a client sends to a tracker and what it reads back.
//!
//! This module owns the shared announce and scrape types, the HTTP form (BEP 3, 7, 23,
//! 48) in [`http`] and the UDP form (BEP 15) in [`udp`]. It is a pure layer: it turns
//! requests into bytes or URLs and bytes into typed responses. It must not open sockets,
//! resolve names, keep timers or retry; the engine that owns the network does that, and
//! asks this module only for the packets and for the BEP 15 retransmit schedule.
//!
//! Every parser here reads hostile bytes: none of them may panic, and every malformed
//! input comes back as a typed error naming what was wrong.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::{InfoHash, PeerId};

pub mod http;
pub mod udp;

/// The longest re-announce interval, in seconds, that a response may ask for: one week.
///
/// A tracker asking for more is broken or hostile; the engine could otherwise stop
/// announcing for years on one bad response, so parsers reject such values outright.
pub const MAX_INTERVAL_SECS: u32 = 7 * 24 * 60 * 60;

/// Size of one compact IPv4 peer entry: four address bytes and a big-endian port.
pub const COMPACT_V4_LEN: usize = 6;

/// Size of one compact IPv6 peer entry: sixteen address bytes and a big-endian port.
pub const COMPACT_V6_LEN: usize = 18;

/// The most bytes of a tracker's free text (a `failure reason`, a `warning message`, a
/// UDP error message) that are kept. Such text is shown to the user on one line; a
/// tracker could otherwise send megabytes of it.
pub const MAX_TRACKER_TEXT: usize = 256;

/// A tracker's free text, made fit to keep and to print: invalid UTF-8 becomes U+FFFD,
/// every run of whitespace (newlines included) becomes one space, the characters
/// [`crate::terminal::is_unsafe`] names (controls, and the Unicode controls that reorder
/// text) become U+FFFD (so a hostile tracker cannot send terminal escapes or make a line
/// read backwards), and text over
/// [`MAX_TRACKER_TEXT`] bytes is cut at a character boundary and ends with `…`.
pub fn tracker_text(bytes: &[u8]) -> String {
    // A character is at most four bytes, so this prefix holds everything that is kept
    // and the memory spent does not depend on what the tracker sent.
    let window = MAX_TRACKER_TEXT * 4;
    let mut cut = bytes.len() > window;
    let lossy = String::from_utf8_lossy(bytes.get(..window).unwrap_or(bytes));
    let mut out = String::new();
    let mut pending_space = false;
    for c in lossy.trim().chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        let c = if crate::terminal::is_unsafe(c) {
            '\u{FFFD}'
        } else {
            c
        };
        let space = usize::from(pending_space);
        if out.len() + space + c.len_utf8() > MAX_TRACKER_TEXT {
            cut = true;
            break;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    if cut {
        out.push('…');
    }
    out
}

/// Why the client is announcing, when it is not a plain periodic re-announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The first announce for this torrent in this session.
    Started,
    /// The download has just finished; sent once, not when starting already complete.
    Completed,
    /// The client is leaving the swarm.
    Stopped,
}

impl Event {
    /// The value of the HTTP `event` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Completed => "completed",
            Event::Stopped => "stopped",
        }
    }

    /// The BEP 15 event code: 1 completed, 2 started, 3 stopped (0 means no event).
    pub fn udp_code(self) -> u32 {
        match self {
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }

    /// The event for a BEP 15 event code; `Ok(None)` for 0, `Err(code)` for unknown codes.
    pub fn from_udp_code(code: u32) -> Result<Option<Event>, u32> {
        match code {
            0 => Ok(None),
            1 => Ok(Some(Event::Completed)),
            2 => Ok(Some(Event::Started)),
            3 => Ok(Some(Event::Stopped)),
            other => Err(other),
        }
    }
}

/// One announce, independent of whether it travels over HTTP or UDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// The torrent being announced.
    pub info_hash: InfoHash,
    /// This client's peer id.
    pub peer_id: PeerId,
    /// The port this client accepts peer connections on.
    pub port: u16,
    /// Payload bytes uploaded since the `started` event.
    pub uploaded: u64,
    /// Payload bytes downloaded since the `started` event.
    pub downloaded: u64,
    /// Payload bytes still missing.
    pub left: u64,
    /// Why this announce is sent; `None` for a periodic re-announce.
    pub event: Option<Event>,
    /// How many peers the client would like; `None` lets the tracker choose.
    pub numwant: Option<u32>,
    /// A random value the client keeps for its lifetime, so the tracker can recognise it
    /// across address changes.
    pub key: u32,
    /// Ask for the compact peer list (BEP 23). Only the HTTP form uses this; UDP peer
    /// lists are always compact.
    pub compact: bool,
    /// The `tracker id` an earlier HTTP response asked to be echoed back, if any.
    pub tracker_id: Option<Vec<u8>>,
}

impl AnnounceRequest {
    /// A request with the usual defaults: no event, tracker-chosen `numwant`, compact
    /// peers and no tracker id.
    pub fn new(info_hash: InfoHash, peer_id: PeerId, port: u16, key: u32) -> Self {
        AnnounceRequest {
            info_hash,
            peer_id,
            port,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: None,
            numwant: None,
            key,
            compact: true,
            tracker_id: None,
        }
    }
}

/// What a tracker answered to an announce, over either transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// How long to wait before the next periodic announce.
    pub interval: Duration,
    /// The shortest wait the tracker tolerates between announces, if it said so.
    pub min_interval: Option<Duration>,
    /// Seeders in the swarm, if reported.
    pub complete: Option<u32>,
    /// Leechers in the swarm, if reported.
    pub incomplete: Option<u32>,
    /// A value to echo back as `trackerid` in later HTTP announces.
    pub tracker_id: Option<Vec<u8>>,
    /// A non-fatal message the tracker wants shown to the user.
    pub warning: Option<String>,
    /// Peers to try, IPv4 and IPv6 together, without duplicates and without port 0.
    pub peers: Vec<SocketAddr>,
}

/// Swarm counts for one torrent, as reported by a scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScrapeStats {
    /// Seeders: peers with the whole torrent.
    pub complete: u32,
    /// How many times the tracker has seen the torrent completed.
    pub downloaded: u32,
    /// Leechers: peers still downloading.
    pub incomplete: u32,
}

/// Which address family a compact peer list is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// Six-byte entries: an IPv4 address and a port.
    V4,
    /// Eighteen-byte entries: an IPv6 address and a port.
    V6,
}

impl AddressFamily {
    /// The size of one compact peer entry in this family.
    pub fn entry_len(self) -> usize {
        match self {
            AddressFamily::V4 => COMPACT_V4_LEN,
            AddressFamily::V6 => COMPACT_V6_LEN,
        }
    }
}

/// Decodes a compact peer list, or returns `None` when its length is not a whole number
/// of entries. Entries with port 0 are dropped: nobody can connect to them.
pub fn parse_compact_peers(bytes: &[u8], family: AddressFamily) -> Option<Vec<SocketAddr>> {
    let entry = family.entry_len();
    if bytes.len() % entry != 0 {
        return None;
    }
    let mut peers = Vec::with_capacity(bytes.len() / entry);
    for chunk in bytes.chunks_exact(entry) {
        // `chunks_exact` guarantees the length, so the split points below are in range;
        // the conversions still go through checked `try_into` to keep the code obviously
        // panic-free.
        let (addr, port) = chunk.split_at(entry - 2);
        let port = u16::from_be_bytes(port.try_into().ok()?);
        if port == 0 {
            continue;
        }
        let ip = match family {
            AddressFamily::V4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(addr).ok()?)),
            AddressFamily::V6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?)),
        };
        peers.push(SocketAddr::new(ip, port));
    }
    Some(peers)
}

/// Encodes the peers of one family as a compact list, skipping peers of the other
/// family. Trackers and tests use it; the client itself only parses such lists.
pub fn encode_compact_peers(peers: &[SocketAddr], family: AddressFamily) -> Vec<u8> {
    let mut out = Vec::with_capacity(peers.len() * family.entry_len());
    for peer in peers {
        match (peer.ip(), family) {
            (IpAddr::V4(ip), AddressFamily::V4) => out.extend_from_slice(&ip.octets()),
            (IpAddr::V6(ip), AddressFamily::V6) => out.extend_from_slice(&ip.octets()),
            _ => continue,
        }
        out.extend_from_slice(&peer.port().to_be_bytes());
    }
    out
}

/// Removes repeated peers, keeping the first occurrence of each, so the engine does not
/// dial the same address twice because a tracker listed it twice.
pub(crate) fn dedup_peers(peers: &mut Vec<SocketAddr>) {
    let mut seen = HashSet::with_capacity(peers.len());
    peers.retain(|p| seen.insert(*p));
}

/// How many times a BEP 15 request is sent before the client gives up on the tracker.
pub const UDP_MAX_ATTEMPTS: u32 = 9;

/// How long to wait for a reply to the `attempt`-th transmission of a UDP tracker request
/// (counting from 0): `15 * 2^attempt` seconds, per BEP 15. Returns `None` once
/// `attempt` exceeds 8, meaning the client should stop retrying.
pub fn timeout_for_attempt(attempt: u32) -> Option<Duration> {
    if attempt >= UDP_MAX_ATTEMPTS {
        return None;
    }
    Some(Duration::from_secs(15u64 << attempt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn retransmit_schedule_doubles_from_fifteen_seconds_and_stops_after_eight() {
        assert_eq!(timeout_for_attempt(0), Some(Duration::from_secs(15)));
        assert_eq!(timeout_for_attempt(1), Some(Duration::from_secs(30)));
        assert_eq!(timeout_for_attempt(8), Some(Duration::from_secs(3840)));
        assert_eq!(timeout_for_attempt(9), None);
        assert_eq!(timeout_for_attempt(u32::MAX), None);
    }

    #[test]
    fn compact_peers_with_partial_entry_are_rejected() {
        assert_eq!(
            parse_compact_peers(&[1, 2, 3, 4, 5], AddressFamily::V4),
            None
        );
        assert_eq!(parse_compact_peers(&[0; 17], AddressFamily::V6), None);
        assert_eq!(parse_compact_peers(&[0; 6], AddressFamily::V6), None);
    }

    #[test]
    fn compact_peers_with_port_zero_are_dropped() {
        let bytes = [10, 0, 0, 1, 0, 0, 10, 0, 0, 2, 0x1a, 0xe1];
        let peers = parse_compact_peers(&bytes, AddressFamily::V4);
        assert_eq!(peers, Some(vec!["10.0.0.2:6881".parse().unwrap()]));
    }

    #[test]
    fn event_udp_codes_round_trip_and_unknown_codes_are_reported() {
        for e in [Event::Started, Event::Completed, Event::Stopped] {
            assert_eq!(Event::from_udp_code(e.udp_code()), Ok(Some(e)));
        }
        assert_eq!(Event::from_udp_code(0), Ok(None));
        assert_eq!(Event::from_udp_code(4), Err(4));
    }

    #[test]
    fn dedup_keeps_first_occurrence_order() {
        let a: SocketAddr = "1.1.1.1:1".parse().unwrap();
        let b: SocketAddr = "[::1]:2".parse().unwrap();
        let mut v = vec![a, b, a, b, a];
        dedup_peers(&mut v);
        assert_eq!(v, vec![a, b]);
    }

    #[test]
    fn tracker_text_keeps_plain_text_as_it_is() {
        assert_eq!(
            tracker_text(b"torrent not registered"),
            "torrent not registered"
        );
        assert_eq!(
            tracker_text("d\u{e9}j\u{e0} vu".as_bytes()),
            "d\u{e9}j\u{e0} vu"
        );
        assert_eq!(tracker_text(b""), "");
    }

    #[test]
    fn tracker_text_defuses_escapes_newlines_and_reordering() {
        assert_eq!(
            tracker_text(b"\x1b[2J\x1b]0;owned\x07gone"),
            "\u{FFFD}[2J\u{FFFD}]0;owned\u{FFFD}gone"
        );
        assert_eq!(
            tracker_text(b"  line one\r\n\r\nline\ttwo\n"),
            "line one line two"
        );
        assert_eq!(tracker_text("abc\u{202E}fed".as_bytes()), "abc\u{FFFD}fed");
        assert_eq!(tracker_text(&[b'o', 0xff, b'k']), "o\u{FFFD}k");
    }

    #[test]
    fn tracker_text_is_cut_at_the_limit_on_a_character_boundary() {
        let long = "\u{e9}".repeat(1000);
        let kept = tracker_text(long.as_bytes());
        assert!(kept.ends_with('…'));
        let body = kept.trim_end_matches('…');
        assert!(body.len() <= MAX_TRACKER_TEXT && body.len() > MAX_TRACKER_TEXT - 2);
        assert!(body.chars().all(|c| c == '\u{e9}'));
        let huge = vec![b'x'; 10 << 20];
        assert_eq!(tracker_text(&huge).len(), MAX_TRACKER_TEXT + '…'.len_utf8());
        let exact = "y".repeat(MAX_TRACKER_TEXT);
        assert_eq!(tracker_text(exact.as_bytes()), exact);
    }

    fn arb_peer(family: AddressFamily) -> impl Strategy<Value = SocketAddr> {
        let ip = match family {
            AddressFamily::V4 => any::<[u8; 4]>().prop_map(IpAddr::from).boxed(),
            AddressFamily::V6 => any::<[u8; 16]>().prop_map(IpAddr::from).boxed(),
        };
        (ip, 1..=u16::MAX).prop_map(|(ip, port)| SocketAddr::new(ip, port))
    }

    proptest! {
        #[test]
        fn compact_v4_peers_round_trip(peers in proptest::collection::vec(arb_peer(AddressFamily::V4), 0..50)) {
            let bytes = encode_compact_peers(&peers, AddressFamily::V4);
            prop_assert_eq!(bytes.len(), peers.len() * 6);
            prop_assert_eq!(parse_compact_peers(&bytes, AddressFamily::V4), Some(peers));
        }

        #[test]
        fn compact_v6_peers_round_trip(peers in proptest::collection::vec(arb_peer(AddressFamily::V6), 0..50)) {
            let bytes = encode_compact_peers(&peers, AddressFamily::V6);
            prop_assert_eq!(parse_compact_peers(&bytes, AddressFamily::V6), Some(peers));
        }

        #[test]
        fn tracker_text_is_short_and_free_of_controls(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let text = tracker_text(&bytes);
            prop_assert!(text.len() <= MAX_TRACKER_TEXT + '…'.len_utf8());
            prop_assert!(!text.chars().any(crate::terminal::is_unsafe));
            prop_assert!(!text.contains("  ") && text.trim() == text);
        }

        #[test]
        fn compact_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_compact_peers(&bytes, AddressFamily::V4);
            let _ = parse_compact_peers(&bytes, AddressFamily::V6);
        }
    }
}
