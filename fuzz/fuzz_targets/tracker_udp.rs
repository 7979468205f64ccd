//! Feeds arbitrary datagrams to the UDP tracker parsers. None may panic, and a reply
//! that parses must encode back to a packet that parses to the same reply.
#![no_main]

use torrent_actors::tracker::udp::{self, AnnouncePacket, ConnectRequest, Expected, ScrapeRequest};
use torrent_actors::tracker::AddressFamily;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Use the packet's own transaction id when it has one, so the fuzzer reaches the
    // body checks instead of stopping at the mismatch every time.
    let txid = data
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    for (expected, family) in [
        (Expected::Connect, AddressFamily::V4),
        (Expected::Announce(AddressFamily::V4), AddressFamily::V4),
        (Expected::Announce(AddressFamily::V6), AddressFamily::V6),
        (Expected::Scrape, AddressFamily::V4),
    ] {
        if let Ok(reply) = udp::parse_response(data, txid, expected) {
            let again = udp::parse_response(&reply.encode(txid, family), txid, expected);
            assert_eq!(again, Ok(reply));
        }
    }
    let _ = udp::parse_response(data, txid.wrapping_add(1), Expected::Connect);
    if let Ok(p) = ConnectRequest::decode(data) {
        assert_eq!(ConnectRequest::decode(&p.encode()), Ok(p));
    }
    if let Ok(p) = AnnouncePacket::decode(data) {
        assert_eq!(AnnouncePacket::decode(&p.encode()), Ok(p));
    }
    if let Ok(p) = ScrapeRequest::decode(data) {
        if let Ok(bytes) = p.encode() {
            assert_eq!(ScrapeRequest::decode(&bytes), Ok(p));
        }
    }
});
