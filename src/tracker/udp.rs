//! The UDP tracker protocol (BEP 15): packet encoding and checked response parsing.
//!
//! This module owns the byte layout of connect, announce, scrape and error packets and
//! the checks a client must make on a reply (length, transaction id, action). It must
//! not send or receive datagrams, pick transaction ids or keep the connection-id clock;
//! the engine does those, using [`crate::tracker::timeout_for_attempt`] for retries and
//! [`CONNECTION_ID_LIFETIME`] to know when to connect again.
//!
//! Requests have both `encode` and `decode`, and responses can be encoded as well as
//! parsed, so that tests (and any in-process fake tracker) can speak both sides.

use std::time::Duration;

use thiserror::Error;

use super::{
    dedup_peers, encode_compact_peers, parse_compact_peers, tracker_text, AddressFamily,
    AnnounceRequest, AnnounceResponse, Event, ScrapeStats, MAX_INTERVAL_SECS,
};
use crate::{InfoHash, PeerId};

/// The magic constant that opens every connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// How long a connection id stays usable after the connect response, per BEP 15.
pub const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);

/// Length of a connect request, and of a connect response.
pub const CONNECT_LEN: usize = 16;

/// Length of an announce request without BEP 41 extensions.
pub const ANNOUNCE_REQUEST_LEN: usize = 98;

/// Length of the fixed part of an announce response, before the peer list.
pub const ANNOUNCE_RESPONSE_HEADER_LEN: usize = 20;

/// Length of the header every response starts with: action and transaction id.
pub const RESPONSE_HEADER_LEN: usize = 8;

/// Length of the fixed part of a scrape request, before the info-hashes.
pub const SCRAPE_REQUEST_HEADER_LEN: usize = 16;

/// Length of one per-torrent entry in a scrape response.
pub const SCRAPE_ENTRY_LEN: usize = 12;

/// The most info-hashes one scrape request may carry. BEP 15 gives about 74 as the
/// number that keeps the request and its reply inside a single datagram.
pub const MAX_SCRAPE_HASHES: usize = 74;

/// What went wrong encoding a request or reading a tracker's datagram.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UdpError {
    /// The packet ends before a field its kind requires.
    #[error("{what} packet too short: need at least {needed} bytes, got {got}")]
    TooShort {
        /// Which kind of packet was being read.
        what: &'static str,
        /// The minimum length for that kind.
        needed: usize,
        /// The length actually received.
        got: usize,
    },
    /// The reply answers some other request; the engine should keep waiting.
    #[error("transaction id mismatch: expected {expected:#010x}, got {got:#010x}")]
    TransactionMismatch {
        /// The id the request was sent with.
        expected: u32,
        /// The id in the reply.
        got: u32,
    },
    /// The packet's action is not the one this exchange calls for.
    #[error("unexpected action {got}: expected {expected}")]
    UnexpectedAction {
        /// The action code that was expected.
        expected: u32,
        /// The action code received.
        got: u32,
    },
    /// The tracker answered with an error packet (action 3) carrying this message, made
    /// printable and short by [`tracker_text`].
    #[error("tracker error: {0}")]
    Tracker(String),
    /// The peer list after the announce header is not a whole number of entries.
    #[error("peer list of {len} bytes is not a multiple of {entry_len}")]
    PeerListLength {
        /// Length of the peer list in bytes.
        len: usize,
        /// Size of one entry for the expected address family.
        entry_len: usize,
    },
    /// The scrape entries after the header are not a whole number of 12-byte entries.
    #[error("scrape list of {len} bytes is not a multiple of 12")]
    ScrapeListLength {
        /// Length of the entry list in bytes.
        len: usize,
    },
    /// A count or interval is negative as a signed 32-bit value, or an interval exceeds
    /// [`MAX_INTERVAL_SECS`].
    #[error("{field} value {value} is out of range")]
    OutOfRange {
        /// Which field held the value.
        field: &'static str,
        /// The value, read as the signed integer BEP 15 declares.
        value: i64,
    },
    /// A connect request did not start with [`PROTOCOL_ID`].
    #[error("bad protocol id {0:#x}: expected 0x41727101980")]
    BadProtocolId(u64),
    /// An announce request carried an event code other than 0 to 3.
    #[error("unknown announce event code {0}")]
    BadEvent(u32),
    /// More info-hashes were given to one scrape request than fit a datagram.
    #[error("scrape of {count} info-hashes exceeds the limit of {max}")]
    TooManyScrapeHashes {
        /// How many hashes were given.
        count: usize,
        /// [`MAX_SCRAPE_HASHES`].
        max: usize,
    },
}

/// The action code that says what a packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// 0: obtain a connection id.
    Connect,
    /// 1: announce and get peers.
    Announce,
    /// 2: get swarm counts for up to [`MAX_SCRAPE_HASHES`] torrents.
    Scrape,
    /// 3: the tracker reports an error (responses only).
    Error,
}

impl Action {
    /// The wire value of this action.
    pub fn code(self) -> u32 {
        match self {
            Action::Connect => 0,
            Action::Announce => 1,
            Action::Scrape => 2,
            Action::Error => 3,
        }
    }
}

/// A checked, big-endian reader over a packet; every read is bounds-checked and a read
/// past the end yields `None` rather than panicking.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.rest.split_at_checked(N)?;
        self.rest = tail;
        head.try_into().ok()
    }

    fn u16(&mut self) -> Option<u16> {
        self.take::<2>().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_be_bytes)
    }

    fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

/// Checks `len >= needed`, naming the packet kind on failure.
fn need(what: &'static str, needed: usize, got: usize) -> Result<(), UdpError> {
    if got < needed {
        Err(UdpError::TooShort { what, needed, got })
    } else {
        Ok(())
    }
}

/// Maps a read past the end (which the length checks should already rule out) to the
/// same error a short packet gets.
fn short(what: &'static str, needed: usize, got: usize) -> UdpError {
    UdpError::TooShort { what, needed, got }
}

/// Checks that a request starts with the action this decoder handles.
fn expect_action(expected: Action, got: u32) -> Result<(), UdpError> {
    if got == expected.code() {
        Ok(())
    } else {
        Err(UdpError::UnexpectedAction {
            expected: expected.code(),
            got,
        })
    }
}

/// The first packet of every exchange: asks the tracker for a connection id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// A random id the client will match the reply against.
    pub transaction_id: u32,
}

impl ConnectRequest {
    /// The 16-byte packet: protocol id, action 0, transaction id.
    pub fn encode(&self) -> [u8; CONNECT_LEN] {
        let mut out = [0u8; CONNECT_LEN];
        out[0..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
        out[8..12].copy_from_slice(&Action::Connect.code().to_be_bytes());
        out[12..16].copy_from_slice(&self.transaction_id.to_be_bytes());
        out
    }

    /// Reads a connect request, checking the protocol id and the action.
    pub fn decode(packet: &[u8]) -> Result<Self, UdpError> {
        const WHAT: &str = "connect request";
        need(WHAT, CONNECT_LEN, packet.len())?;
        let err = || short(WHAT, CONNECT_LEN, packet.len());
        let mut r = Reader::new(packet);
        let protocol = r.u64().ok_or_else(err)?;
        if protocol != PROTOCOL_ID {
            return Err(UdpError::BadProtocolId(protocol));
        }
        expect_action(Action::Connect, r.u32().ok_or_else(err)?)?;
        let transaction_id = r.u32().ok_or_else(err)?;
        Ok(ConnectRequest { transaction_id })
    }
}

/// An announce over UDP: the shared request plus the connection and transaction ids.
///
/// The UDP form has no `compact` flag (peer lists are always compact) and no tracker id;
/// `numwant` values above `i32::MAX` are sent as `i32::MAX`, and `None` as -1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnouncePacket {
    /// The id from the connect response, valid for [`CONNECTION_ID_LIFETIME`].
    pub connection_id: u64,
    /// A fresh random id for this request.
    pub transaction_id: u32,
    /// What is being announced.
    pub request: AnnounceRequest,
}

impl AnnouncePacket {
    /// The 98-byte announce packet. The IP field is always 0: the tracker uses the
    /// datagram's source address.
    pub fn encode(&self) -> [u8; ANNOUNCE_REQUEST_LEN] {
        let req = &self.request;
        let num_want: i32 = match req.numwant {
            None => -1,
            Some(n) => i32::try_from(n).unwrap_or(i32::MAX),
        };
        let mut out = Vec::with_capacity(ANNOUNCE_REQUEST_LEN);
        out.extend_from_slice(&self.connection_id.to_be_bytes());
        out.extend_from_slice(&Action::Announce.code().to_be_bytes());
        out.extend_from_slice(&self.transaction_id.to_be_bytes());
        out.extend_from_slice(req.info_hash.as_bytes());
        out.extend_from_slice(req.peer_id.as_bytes());
        out.extend_from_slice(&req.downloaded.to_be_bytes());
        out.extend_from_slice(&req.left.to_be_bytes());
        out.extend_from_slice(&req.uploaded.to_be_bytes());
        out.extend_from_slice(&req.event.map_or(0, Event::udp_code).to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&req.key.to_be_bytes());
        out.extend_from_slice(&num_want.to_be_bytes());
        out.extend_from_slice(&req.port.to_be_bytes());
        // The field widths above add up to exactly 98 bytes (a unit test pins the
        // layout), and none of them depends on input, so the copy cannot mismatch.
        let mut fixed = [0u8; ANNOUNCE_REQUEST_LEN];
        fixed.copy_from_slice(&out);
        fixed
    }

    /// Reads an announce request. Trailing bytes (BEP 41 options) are ignored, a negative
    /// `num_want` becomes `None`, and `compact` is reported as `true`.
    pub fn decode(packet: &[u8]) -> Result<Self, UdpError> {
        const WHAT: &str = "announce request";
        need(WHAT, ANNOUNCE_REQUEST_LEN, packet.len())?;
        let err = || short(WHAT, ANNOUNCE_REQUEST_LEN, packet.len());
        let mut r = Reader::new(packet);
        let connection_id = r.u64().ok_or_else(err)?;
        expect_action(Action::Announce, r.u32().ok_or_else(err)?)?;
        let transaction_id = r.u32().ok_or_else(err)?;
        let info_hash = InfoHash(r.take::<20>().ok_or_else(err)?);
        let peer_id = PeerId(r.take::<20>().ok_or_else(err)?);
        let downloaded = r.u64().ok_or_else(err)?;
        let left = r.u64().ok_or_else(err)?;
        let uploaded = r.u64().ok_or_else(err)?;
        let event = Event::from_udp_code(r.u32().ok_or_else(err)?).map_err(UdpError::BadEvent)?;
        let _ip = r.u32().ok_or_else(err)?;
        let key = r.u32().ok_or_else(err)?;
        let num_want = r.u32().ok_or_else(err)? as i32;
        let port = r.u16().ok_or_else(err)?;
        Ok(AnnouncePacket {
            connection_id,
            transaction_id,
            request: AnnounceRequest {
                info_hash,
                peer_id,
                port,
                uploaded,
                downloaded,
                left,
                event,
                numwant: u32::try_from(num_want).ok(),
                key,
                compact: true,
                tracker_id: None,
            },
        })
    }
}

/// A scrape over UDP: swarm counts for several torrents at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeRequest {
    /// The id from the connect response.
    pub connection_id: u64,
    /// A fresh random id for this request.
    pub transaction_id: u32,
    /// The torrents to ask about; the reply lists them in the same order.
    pub info_hashes: Vec<InfoHash>,
}

impl ScrapeRequest {
    /// The packet: connection id, action 2, transaction id, then 20 bytes per hash.
    /// Fails when more than [`MAX_SCRAPE_HASHES`] hashes are given.
    pub fn encode(&self) -> Result<Vec<u8>, UdpError> {
        if self.info_hashes.len() > MAX_SCRAPE_HASHES {
            return Err(UdpError::TooManyScrapeHashes {
                count: self.info_hashes.len(),
                max: MAX_SCRAPE_HASHES,
            });
        }
        let mut out = Vec::with_capacity(SCRAPE_REQUEST_HEADER_LEN + 20 * self.info_hashes.len());
        out.extend_from_slice(&self.connection_id.to_be_bytes());
        out.extend_from_slice(&Action::Scrape.code().to_be_bytes());
        out.extend_from_slice(&self.transaction_id.to_be_bytes());
        for hash in &self.info_hashes {
            out.extend_from_slice(hash.as_bytes());
        }
        Ok(out)
    }

    /// Reads a scrape request. A trailing partial hash is ignored, as is anything past
    /// [`MAX_SCRAPE_HASHES`] hashes.
    pub fn decode(packet: &[u8]) -> Result<Self, UdpError> {
        const WHAT: &str = "scrape request";
        need(WHAT, SCRAPE_REQUEST_HEADER_LEN, packet.len())?;
        let err = || short(WHAT, SCRAPE_REQUEST_HEADER_LEN, packet.len());
        let mut r = Reader::new(packet);
        let connection_id = r.u64().ok_or_else(err)?;
        expect_action(Action::Scrape, r.u32().ok_or_else(err)?)?;
        let transaction_id = r.u32().ok_or_else(err)?;
        let info_hashes = r
            .remaining()
            .chunks_exact(20)
            .take(MAX_SCRAPE_HASHES)
            .filter_map(|c| <[u8; 20]>::try_from(c).ok().map(InfoHash))
            .collect();
        Ok(ScrapeRequest {
            connection_id,
            transaction_id,
            info_hashes,
        })
    }
}

/// Which reply the client is waiting for, and for announces how wide peer entries are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expected {
    /// A connect response.
    Connect,
    /// An announce response whose peers are of this family. BEP 15's IPv6 rule makes the
    /// entry size follow the family of the socket the tracker was reached over: use
    /// [`AddressFamily::V6`] when talking to the tracker over IPv6.
    Announce(AddressFamily),
    /// A scrape response.
    Scrape,
}

impl Expected {
    fn action(self) -> Action {
        match self {
            Expected::Connect => Action::Connect,
            Expected::Announce(_) => Action::Announce,
            Expected::Scrape => Action::Scrape,
        }
    }
}

/// A successful tracker reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The connection id to use for the next [`CONNECTION_ID_LIFETIME`].
    Connect {
        /// The id to put at the start of announce and scrape requests.
        connection_id: u64,
    },
    /// Interval, counts and peers. `complete` and `incomplete` are always `Some` here;
    /// `min_interval`, `tracker_id` and `warning` are always `None`.
    Announce(AnnounceResponse),
    /// One entry per requested info-hash, in request order. A tracker may send fewer
    /// entries than were asked for; the caller pairs them up by position.
    Scrape(Vec<ScrapeStats>),
}

impl Response {
    /// Encodes the reply as a tracker would send it. For announces only peers of
    /// `family` are written, and missing counts are sent as 0; counts and the interval
    /// are written as-is, so values past `i32::MAX` will not parse back.
    pub fn encode(&self, transaction_id: u32, family: AddressFamily) -> Vec<u8> {
        let mut out = Vec::new();
        let action = match self {
            Response::Connect { .. } => Action::Connect,
            Response::Announce(_) => Action::Announce,
            Response::Scrape(_) => Action::Scrape,
        };
        out.extend_from_slice(&action.code().to_be_bytes());
        out.extend_from_slice(&transaction_id.to_be_bytes());
        match self {
            Response::Connect { connection_id } => {
                out.extend_from_slice(&connection_id.to_be_bytes());
            }
            Response::Announce(a) => {
                let interval = u32::try_from(a.interval.as_secs()).unwrap_or(u32::MAX);
                out.extend_from_slice(&interval.to_be_bytes());
                out.extend_from_slice(&a.incomplete.unwrap_or(0).to_be_bytes());
                out.extend_from_slice(&a.complete.unwrap_or(0).to_be_bytes());
                out.extend_from_slice(&encode_compact_peers(&a.peers, family));
            }
            Response::Scrape(entries) => {
                for e in entries {
                    out.extend_from_slice(&e.complete.to_be_bytes());
                    out.extend_from_slice(&e.downloaded.to_be_bytes());
                    out.extend_from_slice(&e.incomplete.to_be_bytes());
                }
            }
        }
        out
    }
}

/// Encodes an error reply (action 3) carrying `message`.
pub fn encode_error(transaction_id: u32, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(RESPONSE_HEADER_LEN + message.len());
    out.extend_from_slice(&Action::Error.code().to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

/// Reads a BEP 15 signed 32-bit count or interval, rejecting negative values.
fn non_negative(field: &'static str, raw: u32) -> Result<u32, UdpError> {
    let signed = raw as i32;
    if signed < 0 {
        Err(UdpError::OutOfRange {
            field,
            value: i64::from(signed),
        })
    } else {
        Ok(raw)
    }
}

/// Parses a tracker's reply to the request sent with `transaction_id`.
///
/// The checks run in this order: the 8-byte header must be there; the transaction id
/// must match (a mismatch means the datagram belongs to another exchange); an error
/// packet becomes [`UdpError::Tracker`]; any other action than the expected one is
/// [`UdpError::UnexpectedAction`]; then the body is checked for its kind. Trailing bytes
/// after a connect response are ignored, as BEP 15 allows.
pub fn parse_response(
    packet: &[u8],
    transaction_id: u32,
    expected: Expected,
) -> Result<Response, UdpError> {
    need("response", RESPONSE_HEADER_LEN, packet.len())?;
    let header_err = || short("response", RESPONSE_HEADER_LEN, packet.len());
    let mut r = Reader::new(packet);
    let action = r.u32().ok_or_else(header_err)?;
    let got_txid = r.u32().ok_or_else(header_err)?;
    if got_txid != transaction_id {
        return Err(UdpError::TransactionMismatch {
            expected: transaction_id,
            got: got_txid,
        });
    }
    if action == Action::Error.code() {
        let body = r.remaining();
        // Some trackers NUL-terminate the message; the terminator is not part of it.
        let end = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let message = body.get(..end).unwrap_or_default();
        return Err(UdpError::Tracker(tracker_text(message)));
    }
    expect_action(expected.action(), action)?;
    match expected {
        Expected::Connect => parse_connect(r, packet.len()),
        Expected::Announce(family) => parse_announce(r, packet.len(), family),
        Expected::Scrape => parse_scrape(r),
    }
}

/// A connect response's body: the connection id.
fn parse_connect(mut r: Reader<'_>, packet_len: usize) -> Result<Response, UdpError> {
    const WHAT: &str = "connect response";
    need(WHAT, CONNECT_LEN, packet_len)?;
    let connection_id = r
        .u64()
        .ok_or_else(|| short(WHAT, CONNECT_LEN, packet_len))?;
    Ok(Response::Connect { connection_id })
}

/// An announce response's body: interval, leechers, seeders and the peers of `family`.
fn parse_announce(
    mut r: Reader<'_>,
    packet_len: usize,
    family: AddressFamily,
) -> Result<Response, UdpError> {
    const WHAT: &str = "announce response";
    need(WHAT, ANNOUNCE_RESPONSE_HEADER_LEN, packet_len)?;
    let err = || short(WHAT, ANNOUNCE_RESPONSE_HEADER_LEN, packet_len);
    let interval = non_negative("interval", r.u32().ok_or_else(err)?)?;
    if interval > MAX_INTERVAL_SECS {
        return Err(UdpError::OutOfRange {
            field: "interval",
            value: i64::from(interval),
        });
    }
    let leechers = non_negative("leechers", r.u32().ok_or_else(err)?)?;
    let seeders = non_negative("seeders", r.u32().ok_or_else(err)?)?;
    let list = r.remaining();
    let mut peers = parse_compact_peers(list, family).ok_or(UdpError::PeerListLength {
        len: list.len(),
        entry_len: family.entry_len(),
    })?;
    dedup_peers(&mut peers);
    Ok(Response::Announce(AnnounceResponse {
        peers,
        interval: Duration::from_secs(u64::from(interval)),
        complete: Some(seeders),
        incomplete: Some(leechers),
        // BEP 15 carries none of these.
        min_interval: None,
        tracker_id: None,
        warning: None,
    }))
}

/// A scrape response's body: one entry of seeders, completed and leechers per hash asked.
fn parse_scrape(r: Reader<'_>) -> Result<Response, UdpError> {
    let list = r.remaining();
    if list.len() % SCRAPE_ENTRY_LEN != 0 {
        return Err(UdpError::ScrapeListLength { len: list.len() });
    }
    let mut entries = Vec::with_capacity(list.len() / SCRAPE_ENTRY_LEN);
    for chunk in list.chunks_exact(SCRAPE_ENTRY_LEN) {
        let mut e = Reader::new(chunk);
        let err = || UdpError::ScrapeListLength { len: list.len() };
        let complete = non_negative("seeders", e.u32().ok_or_else(err)?)?;
        let downloaded = non_negative("completed", e.u32().ok_or_else(err)?)?;
        let incomplete = non_negative("leechers", e.u32().ok_or_else(err)?)?;
        entries.push(ScrapeStats {
            complete,
            downloaded,
            incomplete,
        });
    }
    Ok(Response::Scrape(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::AddressFamily::{V4, V6};
    use proptest::prelude::*;
    use std::net::{IpAddr, SocketAddr};

    const TX: u32 = 0xdead_beef;

    fn request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([0x11; 20]),
            peer_id: PeerId(*b"-TA0001-abcdefghijkl"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Some(Event::Started),
            numwant: Some(50),
            key: 0x0102_0304,
            compact: true,
            tracker_id: None,
        }
    }

    fn header(action: u32, txid: u32) -> Vec<u8> {
        let mut v = action.to_be_bytes().to_vec();
        v.extend_from_slice(&txid.to_be_bytes());
        v
    }

    #[test]
    fn connect_request_has_magic_action_zero_and_txid() {
        let bytes = ConnectRequest { transaction_id: TX }.encode();
        assert_eq!(
            bytes,
            [0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(
            ConnectRequest::decode(&bytes),
            Ok(ConnectRequest { transaction_id: TX })
        );
    }

    #[test]
    fn connect_request_with_wrong_magic_or_action_is_rejected() {
        let mut bytes = ConnectRequest { transaction_id: 1 }.encode();
        bytes[0] = 1;
        assert!(matches!(
            ConnectRequest::decode(&bytes),
            Err(UdpError::BadProtocolId(_))
        ));
        let mut bytes = ConnectRequest { transaction_id: 1 }.encode();
        bytes[11] = 1;
        assert_eq!(
            ConnectRequest::decode(&bytes),
            Err(UdpError::UnexpectedAction {
                expected: 0,
                got: 1
            })
        );
        assert!(matches!(
            ConnectRequest::decode(&bytes[..15]),
            Err(UdpError::TooShort {
                needed: 16,
                got: 15,
                ..
            })
        ));
    }

    #[test]
    fn connect_response_yields_connection_id() {
        let mut p = header(0, TX);
        p.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
        assert_eq!(
            parse_response(&p, TX, Expected::Connect),
            Ok(Response::Connect {
                connection_id: 0x0123_4567_89ab_cdef
            })
        );
    }

    #[test]
    fn connect_response_with_trailing_bytes_is_accepted() {
        let mut p = header(0, TX);
        p.extend_from_slice(&[7; 8]);
        p.extend_from_slice(b"extra");
        assert!(parse_response(&p, TX, Expected::Connect).is_ok());
    }

    #[test]
    fn short_packets_are_rejected_with_lengths() {
        assert_eq!(
            parse_response(&[0, 0, 0], TX, Expected::Connect),
            Err(UdpError::TooShort {
                what: "response",
                needed: 8,
                got: 3
            })
        );
        let p = header(0, TX);
        assert_eq!(
            parse_response(&p, TX, Expected::Connect),
            Err(UdpError::TooShort {
                what: "connect response",
                needed: 16,
                got: 8
            })
        );
        let mut p = header(1, TX);
        p.extend_from_slice(&[0; 11]);
        assert_eq!(
            parse_response(&p, TX, Expected::Announce(V4)),
            Err(UdpError::TooShort {
                what: "announce response",
                needed: 20,
                got: 19
            })
        );
    }

    #[test]
    fn wrong_transaction_id_is_rejected_before_anything_else() {
        let p = encode_error(1, "boom");
        assert_eq!(
            parse_response(&p, 2, Expected::Connect),
            Err(UdpError::TransactionMismatch {
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn unexpected_action_is_rejected() {
        let p = Response::Connect { connection_id: 5 }.encode(TX, V4);
        assert_eq!(
            parse_response(&p, TX, Expected::Scrape),
            Err(UdpError::UnexpectedAction {
                expected: 2,
                got: 0
            })
        );
        let mut p = header(9, TX);
        p.extend_from_slice(&[0; 20]);
        assert_eq!(
            parse_response(&p, TX, Expected::Announce(V4)),
            Err(UdpError::UnexpectedAction {
                expected: 1,
                got: 9
            })
        );
    }

    #[test]
    fn error_packet_becomes_tracker_error_with_message() {
        let mut p = encode_error(TX, "torrent not registered");
        p.push(0);
        assert_eq!(
            parse_response(&p, TX, Expected::Announce(V4)),
            Err(UdpError::Tracker("torrent not registered".into()))
        );
        assert_eq!(
            parse_response(&header(3, TX), TX, Expected::Connect),
            Err(UdpError::Tracker(String::new()))
        );
    }

    #[test]
    fn error_message_with_invalid_utf8_is_replaced_not_rejected() {
        let mut p = header(3, TX);
        p.extend_from_slice(&[b'o', 0xff, b'k']);
        assert_eq!(
            parse_response(&p, TX, Expected::Scrape),
            Err(UdpError::Tracker("o\u{fffd}k".into()))
        );
    }

    #[test]
    fn announce_request_is_98_bytes_in_bep15_layout() {
        let bytes = AnnouncePacket {
            connection_id: 0x0102_0304_0506_0708,
            transaction_id: TX,
            request: request(),
        }
        .encode();
        assert_eq!(bytes.len(), 98);
        assert_eq!(bytes[0..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(bytes[8..12], [0, 0, 0, 1]);
        assert_eq!(bytes[12..16], TX.to_be_bytes());
        assert_eq!(bytes[16..36], [0x11; 20]);
        assert_eq!(&bytes[36..56], b"-TA0001-abcdefghijkl");
        assert_eq!(bytes[56..64], 2u64.to_be_bytes()); // downloaded
        assert_eq!(bytes[64..72], 3u64.to_be_bytes()); // left
        assert_eq!(bytes[72..80], 1u64.to_be_bytes()); // uploaded
        assert_eq!(bytes[80..84], 2u32.to_be_bytes()); // started
        assert_eq!(bytes[84..88], [0; 4]); // ip
        assert_eq!(bytes[88..92], [1, 2, 3, 4]); // key
        assert_eq!(bytes[92..96], 50i32.to_be_bytes());
        assert_eq!(bytes[96..98], 6881u16.to_be_bytes());
    }

    #[test]
    fn announce_request_without_numwant_sends_minus_one_and_caps_large_values() {
        let mut req = request();
        req.numwant = None;
        let p = AnnouncePacket {
            connection_id: 0,
            transaction_id: 0,
            request: req.clone(),
        };
        assert_eq!(p.encode()[92..96], (-1i32).to_be_bytes());
        req.numwant = Some(u32::MAX);
        let p = AnnouncePacket {
            connection_id: 0,
            transaction_id: 0,
            request: req,
        };
        assert_eq!(p.encode()[92..96], i32::MAX.to_be_bytes());
    }

    #[test]
    fn announce_request_decode_rejects_short_wrong_action_and_bad_event() {
        let p = AnnouncePacket {
            connection_id: 0,
            transaction_id: 0,
            request: request(),
        };
        let bytes = p.encode();
        assert!(matches!(
            AnnouncePacket::decode(&bytes[..97]),
            Err(UdpError::TooShort {
                needed: 98,
                got: 97,
                ..
            })
        ));
        let mut bad = bytes;
        bad[11] = 2;
        assert_eq!(
            AnnouncePacket::decode(&bad),
            Err(UdpError::UnexpectedAction {
                expected: 1,
                got: 2
            })
        );
        let mut bad = bytes;
        bad[83] = 4;
        assert_eq!(AnnouncePacket::decode(&bad), Err(UdpError::BadEvent(4)));
    }

    #[test]
    fn announce_response_with_v4_and_v6_peers() {
        let mut p = header(1, TX);
        p.extend_from_slice(&1800u32.to_be_bytes());
        p.extend_from_slice(&3u32.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(&[192, 168, 1, 2, 0x1a, 0xe1]);
        let Ok(Response::Announce(a)) = parse_response(&p, TX, Expected::Announce(V4)) else {
            panic!("expected an announce response");
        };
        assert_eq!(a.interval, Duration::from_secs(1800));
        assert_eq!(a.incomplete, Some(3));
        assert_eq!(a.complete, Some(7));
        assert_eq!(
            a.peers,
            vec!["192.168.1.2:6881".parse::<SocketAddr>().unwrap()]
        );

        // The same six bytes are not a whole IPv6 entry.
        assert_eq!(
            parse_response(&p, TX, Expected::Announce(V6)),
            Err(UdpError::PeerListLength {
                len: 6,
                entry_len: 18
            })
        );
    }

    #[test]
    fn announce_response_with_partial_peer_entry_is_rejected() {
        let mut p = header(1, TX);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            parse_response(&p, TX, Expected::Announce(V4)),
            Err(UdpError::PeerListLength {
                len: 7,
                entry_len: 6
            })
        );
    }

    #[test]
    fn announce_response_with_negative_or_absurd_values_is_rejected() {
        let body = |interval: u32, leechers: u32, seeders: u32| {
            let mut p = header(1, TX);
            for v in [interval, leechers, seeders] {
                p.extend_from_slice(&v.to_be_bytes());
            }
            parse_response(&p, TX, Expected::Announce(V4))
        };
        assert_eq!(
            body(u32::MAX, 0, 0),
            Err(UdpError::OutOfRange {
                field: "interval",
                value: -1
            })
        );
        assert_eq!(
            body(MAX_INTERVAL_SECS + 1, 0, 0),
            Err(UdpError::OutOfRange {
                field: "interval",
                value: i64::from(MAX_INTERVAL_SECS) + 1
            })
        );
        assert_eq!(
            body(60, 0x8000_0000, 0),
            Err(UdpError::OutOfRange {
                field: "leechers",
                value: i64::from(i32::MIN)
            })
        );
        assert_eq!(
            body(60, 0, 0xffff_fffe),
            Err(UdpError::OutOfRange {
                field: "seeders",
                value: -2
            })
        );
        assert!(body(MAX_INTERVAL_SECS, 0, 0).is_ok());
    }

    #[test]
    fn announce_response_drops_port_zero_and_duplicate_peers() {
        let mut p = header(1, TX);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&[1, 1, 1, 1, 0, 0]);
        p.extend_from_slice(&[2, 2, 2, 2, 0, 80]);
        p.extend_from_slice(&[2, 2, 2, 2, 0, 80]);
        let Ok(Response::Announce(a)) = parse_response(&p, TX, Expected::Announce(V4)) else {
            panic!("expected an announce response");
        };
        assert_eq!(a.peers, vec!["2.2.2.2:80".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn scrape_request_layout_and_hash_limit() {
        let req = ScrapeRequest {
            connection_id: 9,
            transaction_id: TX,
            info_hashes: vec![InfoHash([1; 20]), InfoHash([2; 20])],
        };
        let bytes = req.encode().unwrap();
        assert_eq!(bytes.len(), 16 + 40);
        assert_eq!(bytes[8..12], [0, 0, 0, 2]);
        assert_eq!(ScrapeRequest::decode(&bytes), Ok(req));

        let too_many = ScrapeRequest {
            connection_id: 9,
            transaction_id: TX,
            info_hashes: vec![InfoHash([0; 20]); MAX_SCRAPE_HASHES + 1],
        };
        assert_eq!(
            too_many.encode(),
            Err(UdpError::TooManyScrapeHashes { count: 75, max: 74 })
        );
        assert!(matches!(
            ScrapeRequest::decode(&bytes[..15]),
            Err(UdpError::TooShort {
                needed: 16,
                got: 15,
                ..
            })
        ));
    }

    #[test]
    fn scrape_response_entries_are_seeders_completed_leechers() {
        let mut p = header(2, TX);
        for v in [5u32, 100, 2, 0, 0, 0] {
            p.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(
            parse_response(&p, TX, Expected::Scrape),
            Ok(Response::Scrape(vec![
                ScrapeStats {
                    complete: 5,
                    downloaded: 100,
                    incomplete: 2
                },
                ScrapeStats::default(),
            ]))
        );
    }

    #[test]
    fn scrape_response_with_partial_entry_or_negative_count_is_rejected() {
        let mut p = header(2, TX);
        p.extend_from_slice(&[0; 13]);
        assert_eq!(
            parse_response(&p, TX, Expected::Scrape),
            Err(UdpError::ScrapeListLength { len: 13 })
        );
        let mut p = header(2, TX);
        for v in [0u32, u32::MAX, 0] {
            p.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(
            parse_response(&p, TX, Expected::Scrape),
            Err(UdpError::OutOfRange {
                field: "completed",
                value: -1
            })
        );
    }

    #[test]
    fn error_messages_are_lowercase_and_name_values() {
        let e = UdpError::TransactionMismatch {
            expected: 1,
            got: 2,
        };
        assert_eq!(
            e.to_string(),
            "transaction id mismatch: expected 0x00000001, got 0x00000002"
        );
        let e = UdpError::PeerListLength {
            len: 7,
            entry_len: 6,
        };
        assert_eq!(e.to_string(), "peer list of 7 bytes is not a multiple of 6");
    }

    fn arb_request() -> impl Strategy<Value = AnnounceRequest> {
        (
            any::<[u8; 20]>(),
            any::<[u8; 20]>(),
            any::<u16>(),
            any::<(u64, u64, u64)>(),
            prop_oneof![
                Just(None),
                Just(Some(Event::Started)),
                Just(Some(Event::Completed)),
                Just(Some(Event::Stopped))
            ],
            proptest::option::of(0..=i32::MAX as u32),
            any::<u32>(),
        )
            .prop_map(|(ih, pid, port, (up, down, left), event, numwant, key)| {
                AnnounceRequest {
                    info_hash: InfoHash(ih),
                    peer_id: PeerId(pid),
                    port,
                    uploaded: up,
                    downloaded: down,
                    left,
                    event,
                    numwant,
                    key,
                    compact: true,
                    tracker_id: None,
                }
            })
    }

    fn arb_peers(family: AddressFamily) -> impl Strategy<Value = Vec<SocketAddr>> {
        let ip = match family {
            V4 => any::<[u8; 4]>().prop_map(IpAddr::from).boxed(),
            V6 => any::<[u8; 16]>().prop_map(IpAddr::from).boxed(),
        };
        proptest::collection::vec((ip, 1..=u16::MAX), 0..40).prop_map(|v| {
            let mut peers: Vec<SocketAddr> = v
                .into_iter()
                .map(|(ip, port)| SocketAddr::new(ip, port))
                .collect();
            dedup_peers(&mut peers);
            peers
        })
    }

    fn count() -> impl Strategy<Value = u32> {
        0..=i32::MAX as u32
    }

    proptest! {
        #[test]
        fn connect_request_round_trips(txid in any::<u32>()) {
            let req = ConnectRequest { transaction_id: txid };
            prop_assert_eq!(ConnectRequest::decode(&req.encode()), Ok(req));
        }

        #[test]
        fn announce_packet_round_trips(cid in any::<u64>(), txid in any::<u32>(), request in arb_request()) {
            let p = AnnouncePacket { connection_id: cid, transaction_id: txid, request };
            prop_assert_eq!(AnnouncePacket::decode(&p.encode()), Ok(p));
        }

        #[test]
        fn scrape_request_round_trips(cid in any::<u64>(), txid in any::<u32>(),
                                      hashes in proptest::collection::vec(any::<[u8; 20]>(), 0..=MAX_SCRAPE_HASHES)) {
            let req = ScrapeRequest { connection_id: cid, transaction_id: txid,
                                      info_hashes: hashes.into_iter().map(InfoHash).collect() };
            let bytes = req.encode().unwrap();
            prop_assert_eq!(ScrapeRequest::decode(&bytes), Ok(req));
        }

        #[test]
        fn connect_response_round_trips(txid in any::<u32>(), cid in any::<u64>()) {
            let r = Response::Connect { connection_id: cid };
            prop_assert_eq!(parse_response(&r.encode(txid, V4), txid, Expected::Connect), Ok(r));
        }

        #[test]
        fn announce_response_round_trips(txid in any::<u32>(), interval in 0..=MAX_INTERVAL_SECS,
                                         seeders in count(), leechers in count(),
                                         v6 in any::<bool>(),
                                         peers4 in arb_peers(V4), peers6 in arb_peers(V6)) {
            let (family, peers) = if v6 { (V6, peers6) } else { (V4, peers4) };
            let r = Response::Announce(AnnounceResponse {
                interval: Duration::from_secs(u64::from(interval)),
                min_interval: None,
                complete: Some(seeders),
                incomplete: Some(leechers),
                tracker_id: None,
                warning: None,
                peers,
            });
            prop_assert_eq!(parse_response(&r.encode(txid, family), txid, Expected::Announce(family)), Ok(r));
        }

        #[test]
        fn scrape_response_round_trips(txid in any::<u32>(),
                                       entries in proptest::collection::vec((count(), count(), count()), 0..80)) {
            let r = Response::Scrape(entries.into_iter().map(|(c, d, i)| ScrapeStats {
                complete: c, downloaded: d, incomplete: i }).collect());
            prop_assert_eq!(parse_response(&r.encode(txid, V4), txid, Expected::Scrape), Ok(r));
        }

        #[test]
        fn error_response_round_trips(txid in any::<u32>(), msg in "[!-~]{1,10}( [!-~]{1,10}){0,5}") {
            prop_assert_eq!(parse_response(&encode_error(txid, &msg), txid, Expected::Connect),
                            Err(UdpError::Tracker(msg)));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), txid in any::<u32>()) {
            for e in [Expected::Connect, Expected::Announce(V4), Expected::Announce(V6), Expected::Scrape] {
                let _ = parse_response(&bytes, txid, e);
            }
            let _ = ConnectRequest::decode(&bytes);
            let _ = AnnouncePacket::decode(&bytes);
            let _ = ScrapeRequest::decode(&bytes);
        }
    }
}
