//! The HTTP tracker protocol (BEP 3, with BEP 7 IPv6 peers, BEP 23 compact lists and
//! BEP 48 scrape): request URLs and bencoded response bodies.
//!
//! This module owns the query string of an announce or scrape, the meaning of the
//! bencoded reply, and the rule for which redirects may be followed ([`check_redirect`]).
//! It must not perform the HTTP request, follow redirects itself or decide when to
//! announce; the engine does, handing the response body to the parsers here.
//!
//! Decisions worth knowing:
//! - A missing `interval` defaults to [`DEFAULT_INTERVAL`]: some trackers leave it out
//!   of otherwise useful replies (often to a `stopped` event), and refusing the peers for
//!   that would help nobody. A present but negative interval, or one longer than
//!   [`MAX_INTERVAL_SECS`], is an error.
//! - In the dictionary form of `peers`, entries that are not dictionaries, lack an `ip`
//!   literal (host names included, as this layer cannot resolve them) or lack a port
//!   from 1 to 65535 are skipped, not fatal: one odd entry should not cost the others.
//!   The compact forms are all-or-nothing, since a length that is not a whole number of
//!   entries means the list itself is corrupt.
//! - Trailing ASCII whitespace after the bencoded body is ignored, because some
//!   trackers end their reply with a newline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use thiserror::Error;
use url::Url;

use super::{
    dedup_peers, encode_compact_peers, parse_compact_peers, tracker_text, AddressFamily,
    AnnounceRequest, AnnounceResponse, ScrapeStats, MAX_INTERVAL_SECS,
};
use crate::bencode::{self, BValue, DecodeError, Dict, Value};
use crate::InfoHash;

/// The re-announce interval assumed when a response does not give one: 30 minutes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);

/// Bytes written literally in query values: the RFC 3986 unreserved characters. Every
/// other byte, including each byte of a binary info-hash, becomes `%XX`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What went wrong building a tracker URL or reading a tracker's reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HttpError {
    /// The tracker URL is not `http` or `https`.
    #[error("unsupported tracker url scheme {0:?}: expected http or https")]
    UnsupportedScheme(String),
    /// The body is not a single bencoded value.
    #[error("response is not valid bencode: {0}")]
    Bencode(#[from] DecodeError),
    /// The body is bencode, but not a dictionary.
    #[error("response is a {0}, expected a dictionary")]
    NotADict(&'static str),
    /// The tracker refused the request and said why (`failure reason`, made printable
    /// and short by [`tracker_text`]).
    #[error("tracker failure: {0}")]
    Failure(String),
    /// A key holds a value of the wrong bencode type.
    #[error("{key} is a {found}, expected {expected}")]
    WrongType {
        /// The key whose value is wrong.
        key: &'static str,
        /// What the protocol calls for there.
        expected: &'static str,
        /// The bencode type actually found.
        found: &'static str,
    },
    /// An interval or count is negative or too large to be believed.
    #[error("{key} value {value} is out of range")]
    OutOfRange {
        /// The key holding the value.
        key: &'static str,
        /// The value as sent.
        value: i64,
    },
    /// A compact peer list whose length is not a whole number of entries.
    #[error("{key} of {len} bytes is not a multiple of {entry_len}")]
    PeersLength {
        /// `peers` or `peers6`.
        key: &'static str,
        /// The list's length in bytes.
        len: usize,
        /// 6 for IPv4, 18 for IPv6.
        entry_len: usize,
    },
    /// A key the response cannot do without is absent.
    #[error("response has no {0} key")]
    MissingKey(&'static str),
}

/// Checks the scheme of a tracker URL.
fn check_scheme(url: &Url) -> Result<(), HttpError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(HttpError::UnsupportedScheme(other.to_owned())),
    }
}

/// Appends `extra` (already encoded) to the query of `url`, keeping whatever query the
/// URL had (private trackers put a passkey there).
fn append_query(url: &mut Url, extra: &str) {
    let query = match url.query() {
        Some(existing) if !existing.is_empty() && !existing.ends_with('&') => {
            format!("{existing}&{extra}")
        }
        Some(existing) => format!("{existing}{extra}"),
        None => extra.to_owned(),
    };
    // `set_query` leaves existing `%XX` escapes alone, and `extra` holds only unreserved
    // characters, `%XX`, `=` and `&`, so nothing gets encoded twice.
    url.set_query(Some(&query));
}

/// Percent-encodes bytes for a query value.
fn encode_value(bytes: &[u8]) -> String {
    percent_encode(bytes, QUERY_VALUE).to_string()
}

/// The full announce URL for `request` on the tracker at `base`.
///
/// Parameters are appended after any query `base` already has. `info_hash`, `peer_id`
/// and `trackerid` are percent-encoded byte by byte; `key` is sent as eight hex digits.
pub fn announce_url(base: &Url, request: &AnnounceRequest) -> Result<Url, HttpError> {
    check_scheme(base)?;
    let mut q = format!(
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact={}",
        encode_value(request.info_hash.as_bytes()),
        encode_value(request.peer_id.as_bytes()),
        request.port,
        request.uploaded,
        request.downloaded,
        request.left,
        u8::from(request.compact),
    );
    if let Some(event) = request.event {
        q.push_str("&event=");
        q.push_str(event.as_str());
    }
    if let Some(n) = request.numwant {
        q.push_str(&format!("&numwant={n}"));
    }
    q.push_str(&format!("&key={:08X}", request.key));
    if let Some(id) = &request.tracker_id {
        q.push_str("&trackerid=");
        q.push_str(&encode_value(id));
    }
    let mut url = base.clone();
    append_query(&mut url, &q);
    Ok(url)
}

/// The scrape URL that goes with an announce URL, by the BEP 48 convention: when the
/// last path segment starts with `announce`, that word becomes `scrape` (so
/// `/x/announce.php?passkey=k` gives `/x/scrape.php?passkey=k`). Any other announce URL
/// has no scrape URL, and `None` is returned; so is any non-HTTP URL.
pub fn scrape_url(announce: &Url) -> Option<Url> {
    check_scheme(announce).ok()?;
    let path = announce.path();
    let slash = path.rfind('/')?;
    let (dir, last) = (path.get(..=slash)?, path.get(slash + 1..)?);
    let rest = last.strip_prefix("announce")?;
    let mut url = announce.clone();
    url.set_path(&format!("{dir}scrape{rest}"));
    Some(url)
}

/// The scrape request for `info_hashes` on the scrape URL `scrape` (see [`scrape_url`]):
/// one `info_hash` parameter per torrent, appended after any existing query.
pub fn scrape_request_url(scrape: &Url, info_hashes: &[InfoHash]) -> Result<Url, HttpError> {
    check_scheme(scrape)?;
    let mut url = scrape.clone();
    let q: Vec<String> = info_hashes
        .iter()
        .map(|h| format!("info_hash={}", encode_value(h.as_bytes())))
        .collect();
    if !q.is_empty() {
        append_query(&mut url, &q.join("&"));
    }
    Ok(url)
}

/// Decodes a body into its top-level dictionary, turning `failure reason` into
/// [`HttpError::Failure`].
fn top_level(body: &[u8]) -> Result<Value<'_>, HttpError> {
    let end = body
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let value = bencode::decode(body.get(..end).unwrap_or_default())?;
    let dict = value
        .as_dict()
        .ok_or(HttpError::NotADict(value.type_name()))?;
    if let Some(reason) = dict.get(b"failure reason") {
        let text = bytes_of(reason, "failure reason")?;
        return Err(HttpError::Failure(tracker_text(text)));
    }
    Ok(value)
}

/// The byte string under `key`, or a type error.
fn bytes_of<'a>(value: &Value<'a>, key: &'static str) -> Result<&'a [u8], HttpError> {
    value.as_bytes().ok_or(HttpError::WrongType {
        key,
        expected: "byte string",
        found: value.type_name(),
    })
}

/// The integer under `key` when present, checked to lie in `0..=max`.
fn int_in_range(dict: &Dict<'_>, key: &'static str, max: u32) -> Result<Option<u32>, HttpError> {
    let Some(value) = dict.get(key.as_bytes()) else {
        return Ok(None);
    };
    let n = value.as_int().ok_or(HttpError::WrongType {
        key,
        expected: "integer",
        found: value.type_name(),
    })?;
    match u32::try_from(n) {
        Ok(v) if v <= max => Ok(Some(v)),
        _ => Err(HttpError::OutOfRange { key, value: n }),
    }
}

/// An interval in seconds under `key`, if present.
fn interval(dict: &Dict<'_>, key: &'static str) -> Result<Option<Duration>, HttpError> {
    Ok(int_in_range(dict, key, MAX_INTERVAL_SECS)?.map(|s| Duration::from_secs(u64::from(s))))
}

/// One entry of the dictionary form of `peers`, or `None` when it is unusable.
fn dict_peer(entry: &Value<'_>) -> Option<SocketAddr> {
    let dict = entry.as_dict()?;
    let ip = IpAddr::from_str(dict.get(b"ip")?.as_str()?).ok()?;
    let port = u16::try_from(dict.get(b"port")?.as_int()?).ok()?;
    (port != 0).then_some(SocketAddr::new(ip, port))
}

/// A compact list under `key`, with its length checked.
fn compact(
    value: &Value<'_>,
    key: &'static str,
    family: AddressFamily,
) -> Result<Vec<SocketAddr>, HttpError> {
    let bytes = bytes_of(value, key)?;
    parse_compact_peers(bytes, family).ok_or(HttpError::PeersLength {
        key,
        len: bytes.len(),
        entry_len: family.entry_len(),
    })
}

/// Parses the body of an announce reply.
///
/// `peers` may be compact (a byte string of 6-byte entries) or a list of dictionaries;
/// `peers6` must be compact (18-byte entries). Peers from both are returned together,
/// IPv4 first, without duplicates or port 0. See the module notes for defaults.
pub fn parse_announce_response(body: &[u8]) -> Result<AnnounceResponse, HttpError> {
    let value = top_level(body)?;
    let dict = value
        .as_dict()
        .ok_or(HttpError::NotADict(value.type_name()))?;

    let interval_value = interval(dict, "interval")?.unwrap_or(DEFAULT_INTERVAL);
    let min_interval = interval(dict, "min interval")?;
    let complete = int_in_range(dict, "complete", u32::MAX)?;
    let incomplete = int_in_range(dict, "incomplete", u32::MAX)?;
    let tracker_id = dict
        .get(b"tracker id")
        .map(|v| bytes_of(v, "tracker id").map(<[u8]>::to_vec))
        .transpose()?;
    let warning = dict
        .get(b"warning message")
        .map(|v| bytes_of(v, "warning message").map(tracker_text))
        .transpose()?;

    let mut peers = Vec::new();
    if let Some(list) = dict.get(b"peers") {
        if let Some(entries) = list.as_list() {
            peers.extend(entries.iter().filter_map(dict_peer));
        } else if list.as_bytes().is_some() {
            peers.extend(compact(list, "peers", AddressFamily::V4)?);
        } else {
            return Err(HttpError::WrongType {
                key: "peers",
                expected: "byte string or list",
                found: list.type_name(),
            });
        }
    }
    if let Some(list) = dict.get(b"peers6") {
        peers.extend(compact(list, "peers6", AddressFamily::V6)?);
    }
    dedup_peers(&mut peers);
    // The dictionary form may interleave families; a stable sort puts IPv4 first in
    // every case, so the order does not depend on which form the tracker chose.
    peers.sort_by_key(SocketAddr::is_ipv6);

    Ok(AnnounceResponse {
        interval: interval_value,
        min_interval,
        complete,
        incomplete,
        tracker_id,
        warning,
        peers,
    })
}

/// Parses the body of a scrape reply into `(info-hash, counts)` pairs, in the order the
/// tracker listed them.
///
/// Keys of `files` that are not 20 bytes long cannot be info-hashes and are skipped.
/// For the others, each count must be an integer from 0 to `u32::MAX`; a missing count
/// reads as 0.
pub fn parse_scrape_response(body: &[u8]) -> Result<Vec<(InfoHash, ScrapeStats)>, HttpError> {
    let value = top_level(body)?;
    let dict = value
        .as_dict()
        .ok_or(HttpError::NotADict(value.type_name()))?;
    let files = dict.get(b"files").ok_or(HttpError::MissingKey("files"))?;
    let files = files.as_dict().ok_or(HttpError::WrongType {
        key: "files",
        expected: "dictionary",
        found: files.type_name(),
    })?;
    let mut out = Vec::with_capacity(files.len());
    for (key, entry) in files.iter() {
        let Ok(hash) = <[u8; 20]>::try_from(key) else {
            continue;
        };
        let stats = entry.as_dict().ok_or(HttpError::WrongType {
            key: "files entry",
            expected: "dictionary",
            found: entry.type_name(),
        })?;
        out.push((
            InfoHash(hash),
            ScrapeStats {
                complete: int_in_range(stats, "complete", u32::MAX)?.unwrap_or(0),
                downloaded: int_in_range(stats, "downloaded", u32::MAX)?.unwrap_or(0),
                incomplete: int_in_range(stats, "incomplete", u32::MAX)?.unwrap_or(0),
            },
        ));
    }
    Ok(out)
}

/// Encodes an announce reply as a tracker would, with compact `peers` and `peers6`.
/// Tests and in-process fake trackers use it; absent optional fields are left out.
pub fn encode_announce_response(response: &AnnounceResponse) -> Vec<u8> {
    let secs = |d: Duration| BValue::Int(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut entries = vec![
        ("interval", secs(response.interval)),
        (
            "peers",
            BValue::Bytes(encode_compact_peers(&response.peers, AddressFamily::V4)),
        ),
    ];
    let v6 = encode_compact_peers(&response.peers, AddressFamily::V6);
    if !v6.is_empty() {
        entries.push(("peers6", BValue::Bytes(v6)));
    }
    if let Some(d) = response.min_interval {
        entries.push(("min interval", secs(d)));
    }
    if let Some(n) = response.complete {
        entries.push(("complete", BValue::Int(i64::from(n))));
    }
    if let Some(n) = response.incomplete {
        entries.push(("incomplete", BValue::Int(i64::from(n))));
    }
    if let Some(id) = &response.tracker_id {
        entries.push(("tracker id", BValue::Bytes(id.clone())));
    }
    if let Some(w) = &response.warning {
        entries.push(("warning message", BValue::string(w)));
    }
    BValue::dict(entries).encode()
}

/// Encodes a scrape reply as a tracker would.
pub fn encode_scrape_response(files: &[(InfoHash, ScrapeStats)]) -> Vec<u8> {
    let files = files.iter().map(|(hash, s)| {
        (
            hash.as_bytes().to_vec(),
            BValue::dict([
                ("complete", BValue::Int(i64::from(s.complete))),
                ("downloaded", BValue::Int(i64::from(s.downloaded))),
                ("incomplete", BValue::Int(i64::from(s.incomplete))),
            ]),
        )
    });
    BValue::dict([("files", BValue::dict(files))]).encode()
}

/// Encodes a refusal: a dictionary holding only `failure reason`.
pub fn encode_failure(reason: &str) -> Vec<u8> {
    BValue::dict([("failure reason", BValue::string(reason))]).encode()
}

/// How far inside the user's own network an address reaches, from the outside in. A
/// redirect may keep its reach or go outward, never inward: a tracker on the Internet
/// must not be able to make the client send requests to the user's router or to a
/// service on the user's own machine (request forgery through a redirect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// This machine: loopback, and the unspecified address (which Linux connects to
    /// itself).
    Loopback,
    /// The local network: RFC 1918 private, shared (CGNAT) and link-local IPv4, IPv6
    /// unique-local, link-local and site-local, broadcast and multicast.
    Local,
    /// Anything else: the Internet.
    Public,
}

impl Reach {
    /// The reach of `ip`; an IPv4 address carried in IPv6 (mapped, compatible or NAT64)
    /// counts as that IPv4 address, so `::ffff:127.0.0.1` is loopback.
    pub fn of(ip: IpAddr) -> Reach {
        match ip {
            IpAddr::V4(v4) => Reach::of_v4(v4),
            IpAddr::V6(v6) => {
                if let Some(v4) = embedded_v4(v6) {
                    return Reach::of_v4(v4);
                }
                let first = v6.segments()[0];
                if v6.is_loopback() || v6.is_unspecified() {
                    Reach::Loopback
                } else if (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                    || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                    || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                    || v6.is_multicast()
                {
                    Reach::Local
                } else {
                    Reach::Public
                }
            }
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Reach {
        let [a, b, ..] = ip.octets();
        if ip.is_loopback() || ip.is_unspecified() || a == 0 {
            Reach::Loopback
        } else if ip.is_private()
            || ip.is_link_local()
            || ip.is_broadcast()
            || ip.is_multicast()
            || (a == 100 && (64..128).contains(&b))
        {
            Reach::Local
        } else {
            Reach::Public
        }
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`, not `::` or `::1`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail()),
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail()),
        _ => None,
    }
}

/// Why a tracker's redirect is not followed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RedirectError {
    /// More redirects in a row than one announce may follow.
    #[error("more than {limit} redirects")]
    TooMany {
        /// The most redirects followed.
        limit: usize,
    },
    /// The redirect changes the scheme (http to https or back): https must not fall
    /// back to plain text, and plain text has no business pretending to be secure.
    #[error("redirect from {from} to {to} refused: the scheme may not change")]
    SchemeChange {
        /// The scheme of the URL that redirected.
        from: String,
        /// The scheme of the target.
        to: String,
    },
    /// The `Location` is not a URL with a host (or cannot be joined to the current one).
    #[error("redirect to an unusable location")]
    BadLocation,
    /// The target's name resolved to no address.
    #[error("redirect target {host} has no address")]
    NoAddress {
        /// The target's host.
        host: String,
    },
    /// The target reaches further inside the user's network than the tracker that
    /// redirected: an Internet host pointing at a private or loopback address.
    #[error("redirect from {from} ({from_reach:?}) to {to} ({to_reach:?}) refused: a tracker may not redirect into a more local network")]
    Inward {
        /// The address of the tracker that redirected.
        from: IpAddr,
        /// Its reach.
        from_reach: Reach,
        /// The first address of the target that reaches further in.
        to: IpAddr,
        /// That address's reach.
        to_reach: Reach,
    },
}

/// Whether a redirect to `to` may be followed before anything is resolved: `hops` is
/// how many redirects this one makes (1 for the first), `max_hops` the limit, and the
/// scheme must stay the same. Checked first, so a refused target is never even looked up.
pub fn check_redirect_url(
    from: &Url,
    to: &Url,
    hops: usize,
    max_hops: usize,
) -> Result<(), RedirectError> {
    if hops > max_hops {
        return Err(RedirectError::TooMany { limit: max_hops });
    }
    if from.scheme() != to.scheme() {
        return Err(RedirectError::SchemeChange {
            from: from.scheme().to_string(),
            to: to.scheme().to_string(),
        });
    }
    if to.host_str().is_none_or(str::is_empty) {
        return Err(RedirectError::BadLocation);
    }
    Ok(())
}

/// Whether a tracker's redirect may be followed: [`check_redirect_url`], then every
/// address `to`'s host resolved to (`to_addrs`; an IP literal is its own single
/// address) must reach no further in than `from_addr`, the address the redirecting
/// reply came from ([`Reach`]). Every address is checked, not only the first, because
/// the connection may use any of them. Loopback to loopback is allowed (a tracker on
/// this machine may move), as is anything outward.
pub fn check_redirect(
    from: &Url,
    from_addr: IpAddr,
    to: &Url,
    to_addrs: &[IpAddr],
    hops: usize,
    max_hops: usize,
) -> Result<(), RedirectError> {
    check_redirect_url(from, to, hops, max_hops)?;
    if to_addrs.is_empty() {
        return Err(RedirectError::NoAddress {
            host: to.host_str().unwrap_or_default().to_string(),
        });
    }
    let from_reach = Reach::of(from_addr);
    match to_addrs.iter().find(|&&a| Reach::of(a) < from_reach) {
        Some(&to) => Err(RedirectError::Inward {
            from: from_addr,
            from_reach,
            to,
            to_reach: Reach::of(to),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Event;
    use crate::PeerId;
    use proptest::prelude::*;

    fn request() -> AnnounceRequest {
        let mut r = AnnounceRequest::new(
            InfoHash(*b"\x12\x34\x56\x78\x9a\xbc\xde\xf1\x23\x45\x67\x89\xab\xcd\xef\x12\x34\x56\x78\x9a"),
            PeerId(*b"-TA0001-a b~c.d_e-f/"),
            6881,
            0xdead_beef,
        );
        r.left = 1000;
        r
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn announce_url_encodes_binary_fields_byte_by_byte() {
        let u = announce_url(&url("http://t.example/announce"), &request()).unwrap();
        assert_eq!(
            u.as_str(),
            "http://t.example/announce?info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A\
             &peer_id=-TA0001-a%20b~c.d_e-f%2F&port=6881&uploaded=0&downloaded=0&left=1000\
             &compact=1&key=DEADBEEF"
        );
    }

    #[test]
    fn announce_url_appends_to_an_existing_passkey_query() {
        let mut req = request();
        req.event = Some(Event::Started);
        req.numwant = Some(80);
        req.tracker_id = Some(b"id 1".to_vec());
        req.compact = false;
        let u = announce_url(
            &url("https://t.example/a/announce.php?passkey=ab%2Fc"),
            &req,
        )
        .unwrap();
        let q = u.query().unwrap();
        assert!(q.starts_with("passkey=ab%2Fc&info_hash="), "{q}");
        assert!(
            q.ends_with("&compact=0&event=started&numwant=80&key=DEADBEEF&trackerid=id%201"),
            "{q}"
        );
        let trailing_amp = announce_url(&url("http://t.example/ann?pk=1&"), &req).unwrap();
        assert!(trailing_amp.query().unwrap().starts_with("pk=1&info_hash="));
        let empty = announce_url(&url("http://t.example/ann?"), &req).unwrap();
        assert!(empty.query().unwrap().starts_with("info_hash="));
    }

    #[test]
    fn announce_url_keeps_fragment_out_of_the_query() {
        let u = announce_url(&url("http://t.example/announce#frag"), &request()).unwrap();
        assert!(u.query().unwrap().starts_with("info_hash="));
        assert_eq!(u.fragment(), Some("frag"));
    }

    #[test]
    fn announce_url_rejects_non_http_schemes() {
        assert_eq!(
            announce_url(&url("udp://t.example:80"), &request()),
            Err(HttpError::UnsupportedScheme("udp".into()))
        );
    }

    #[test]
    fn scrape_url_follows_the_announce_convention() {
        let cases = [
            ("http://t.example/announce", Some("http://t.example/scrape")),
            (
                "http://t.example/x/announce",
                Some("http://t.example/x/scrape"),
            ),
            (
                "http://t.example/announce.php",
                Some("http://t.example/scrape.php"),
            ),
            (
                "http://t.example/announce?x2%0644",
                Some("http://t.example/scrape?x2%0644"),
            ),
            (
                "http://t.example/announce?passkey=k",
                Some("http://t.example/scrape?passkey=k"),
            ),
            ("http://t.example/x%064announce", None),
            ("http://t.example/a", None),
            ("http://t.example/announce/", None),
            ("http://t.example/", None),
            ("http://t.example/announce/x", None),
            ("udp://t.example:80/announce", None),
        ];
        for (announce, expected) in cases {
            assert_eq!(
                scrape_url(&url(announce)).map(String::from).as_deref(),
                expected,
                "{announce}"
            );
        }
    }

    #[test]
    fn scrape_request_url_repeats_info_hash() {
        let u = scrape_request_url(
            &url("http://t.example/scrape?pk=1"),
            &[InfoHash([0xaa; 20]), InfoHash([b'a'; 20])],
        )
        .unwrap();
        assert_eq!(
            u.query().unwrap(),
            format!(
                "pk=1&info_hash={}&info_hash={}",
                "%AA".repeat(20),
                "a".repeat(20)
            )
        );
        let bare = scrape_request_url(&url("http://t.example/scrape"), &[]).unwrap();
        assert_eq!(bare.query(), None);
        assert!(scrape_request_url(&url("ftp://t.example/scrape"), &[]).is_err());
    }

    #[test]
    fn compact_announce_response_is_parsed() {
        let body = b"d8:completei5e10:incompletei3e8:intervali1800e12:min intervali900e\
                     5:peers12:\x0a\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x1a\xe2\
                     6:peers618:\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x50\
                     10:tracker id3:xyz15:warning message4:slowe";
        let r = parse_announce_response(body).unwrap();
        assert_eq!(r.interval, Duration::from_secs(1800));
        assert_eq!(r.min_interval, Some(Duration::from_secs(900)));
        assert_eq!(r.complete, Some(5));
        assert_eq!(r.incomplete, Some(3));
        assert_eq!(r.tracker_id.as_deref(), Some(&b"xyz"[..]));
        assert_eq!(r.warning.as_deref(), Some("slow"));
        assert_eq!(
            r.peers,
            vec![
                peer("10.0.0.1:6881"),
                peer("10.0.0.2:6882"),
                peer("[2001:db8::1]:80")
            ]
        );
    }

    #[test]
    fn dictionary_peers_are_parsed_and_bad_entries_skipped() {
        let body = b"d8:intervali60e5:peersl\
            d2:ip8:10.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee\
            d2:ip3:::14:porti80ee\
            d2:ip11:example.com4:porti80ee\
            d2:ip8:10.0.0.24:porti0ee\
            d2:ip8:10.0.0.24:porti70000ee\
            d2:ip8:10.0.0.24:porti-1ee\
            d2:ip8:10.0.0.2e\
            d4:porti1ee\
            i5e\
            d2:ipi5e4:porti1ee\
            ee";
        let r = parse_announce_response(body).unwrap();
        assert_eq!(r.peers, vec![peer("10.0.0.1:6881"), peer("[::1]:80")]);
    }

    #[test]
    fn dictionary_peers_are_listed_ipv4_first() {
        let body = b"d5:peersld2:ip3:::24:porti2eed2:ip7:1.1.1.14:porti1eeee";
        let r = parse_announce_response(body).unwrap();
        assert_eq!(r.peers, vec![peer("1.1.1.1:1"), peer("[::2]:2")]);
    }

    #[test]
    fn failure_reason_is_a_typed_error() {
        assert_eq!(
            parse_announce_response(b"d14:failure reason12:unregisterede"),
            Err(HttpError::Failure("unregistered".into()))
        );
        assert_eq!(
            parse_scrape_response(&encode_failure("nope")),
            Err(HttpError::Failure("nope".into()))
        );
        assert_eq!(
            parse_announce_response(b"d14:failure reasoni1ee"),
            Err(HttpError::WrongType {
                key: "failure reason",
                expected: "byte string",
                found: "integer"
            })
        );
    }

    #[test]
    fn compact_lists_with_partial_entries_are_rejected() {
        assert_eq!(
            parse_announce_response(b"d8:intervali60e5:peers7:abcdefge"),
            Err(HttpError::PeersLength {
                key: "peers",
                len: 7,
                entry_len: 6
            })
        );
        assert_eq!(
            parse_announce_response(b"d8:intervali60e6:peers66:abcdefe"),
            Err(HttpError::PeersLength {
                key: "peers6",
                len: 6,
                entry_len: 18
            })
        );
    }

    #[test]
    fn missing_interval_defaults_and_missing_peers_mean_none() {
        let r = parse_announce_response(b"de").unwrap();
        assert_eq!(r.interval, DEFAULT_INTERVAL);
        assert!(r.peers.is_empty());
        assert_eq!(r.min_interval, None);
        assert_eq!(r.complete, None);
    }

    #[test]
    fn negative_or_absurd_values_are_rejected() {
        let cases: [(&[u8], &str, i64); 5] = [
            (b"d8:intervali-1ee", "interval", -1),
            (b"d8:intervali604801ee", "interval", 604_801),
            (b"d12:min intervali-5ee", "min interval", -5),
            (b"d8:completei-1ee", "complete", -1),
            (b"d10:incompletei4294967296ee", "incomplete", 4_294_967_296),
        ];
        for (body, key, value) in cases {
            assert_eq!(
                parse_announce_response(body),
                Err(HttpError::OutOfRange { key, value }),
                "{key}"
            );
        }
    }

    #[test]
    fn wrong_types_are_named() {
        let cases: [(&[u8], &str, &str); 5] = [
            (b"d8:interval2:60e", "interval", "integer"),
            (b"d5:peersi1ee", "peers", "byte string or list"),
            (b"d6:peers6lee", "peers6", "byte string"),
            (b"d10:tracker idi1ee", "tracker id", "byte string"),
            (
                b"d15:warning messageli1eee",
                "warning message",
                "byte string",
            ),
        ];
        for (body, key, expected) in cases {
            let Err(HttpError::WrongType {
                key: k,
                expected: e,
                ..
            }) = parse_announce_response(body)
            else {
                panic!("{key}: expected a type error");
            };
            assert_eq!((k, e), (key, expected));
        }
    }

    #[test]
    fn non_dictionary_and_invalid_bodies_are_rejected() {
        assert_eq!(
            parse_announce_response(b"le"),
            Err(HttpError::NotADict("list"))
        );
        assert!(matches!(
            parse_announce_response(b"d8:interval"),
            Err(HttpError::Bencode(_))
        ));
        assert!(matches!(
            parse_announce_response(b"dexx"),
            Err(HttpError::Bencode(_))
        ));
        assert!(matches!(
            parse_announce_response(b""),
            Err(HttpError::Bencode(_))
        ));
        assert!(parse_announce_response(b"de\r\n").is_ok());
    }

    #[test]
    fn duplicate_peers_across_forms_are_reported_once() {
        let body = b"d5:peers12:\x01\x02\x03\x04\x00\x50\x01\x02\x03\x04\x00\x50e";
        assert_eq!(
            parse_announce_response(body).unwrap().peers,
            vec![peer("1.2.3.4:80")]
        );
    }

    #[test]
    fn scrape_response_is_parsed_and_odd_keys_skipped() {
        let mut body = b"d5:filesd20:".to_vec();
        body.extend_from_slice(&[0xab; 20]);
        body.extend_from_slice(b"d8:completei4e10:downloadedi9e10:incompletei1ee");
        body.extend_from_slice(b"3:abcd8:completei1ee");
        body.extend_from_slice(b"20:bbbbbbbbbbbbbbbbbbbbdeee");
        assert_eq!(
            parse_scrape_response(&body),
            Ok(vec![
                (
                    InfoHash([0xab; 20]),
                    ScrapeStats {
                        complete: 4,
                        downloaded: 9,
                        incomplete: 1
                    }
                ),
                (InfoHash([b'b'; 20]), ScrapeStats::default()),
            ])
        );
    }

    #[test]
    fn scrape_response_errors() {
        assert_eq!(
            parse_scrape_response(b"de"),
            Err(HttpError::MissingKey("files"))
        );
        assert!(matches!(
            parse_scrape_response(b"d5:filesi1ee"),
            Err(HttpError::WrongType { key: "files", .. })
        ));
        assert!(matches!(
            parse_scrape_response(b"d5:filesd20:bbbbbbbbbbbbbbbbbbbbi1eee"),
            Err(HttpError::WrongType {
                key: "files entry",
                ..
            })
        ));
        assert_eq!(
            parse_scrape_response(b"d5:filesd20:bbbbbbbbbbbbbbbbbbbbd8:completei-3eeee"),
            Err(HttpError::OutOfRange {
                key: "complete",
                value: -3
            })
        );
        assert_eq!(
            parse_scrape_response(b"i1e"),
            Err(HttpError::NotADict("integer"))
        );
    }

    #[test]
    fn error_messages_are_lowercase_and_name_values() {
        assert_eq!(
            HttpError::PeersLength {
                key: "peers",
                len: 7,
                entry_len: 6
            }
            .to_string(),
            "peers of 7 bytes is not a multiple of 6"
        );
        assert_eq!(
            HttpError::OutOfRange {
                key: "interval",
                value: -1
            }
            .to_string(),
            "interval value -1 is out of range"
        );
    }

    fn arb_response() -> impl Strategy<Value = AnnounceResponse> {
        let v4 = (any::<[u8; 4]>(), 1..=u16::MAX).prop_map(|(ip, p)| SocketAddr::from((ip, p)));
        let v6 = (any::<[u8; 16]>(), 1..=u16::MAX).prop_map(|(ip, p)| SocketAddr::from((ip, p)));
        let secs = (0..=MAX_INTERVAL_SECS).prop_map(|s| Duration::from_secs(u64::from(s)));
        (
            secs.clone(),
            proptest::option::of(secs),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            proptest::option::of("[!-~]{1,10}( [!-~]{1,10}){0,5}"),
            proptest::collection::vec(v4, 0..20),
            proptest::collection::vec(v6, 0..20),
        )
            .prop_map(
                |(interval, min_interval, complete, incomplete, tracker_id, warning, p4, p6)| {
                    // Parsing lists IPv4 peers before IPv6 ones, without duplicates.
                    let mut peers: Vec<SocketAddr> = p4.into_iter().chain(p6).collect();
                    dedup_peers(&mut peers);
                    AnnounceResponse {
                        interval,
                        min_interval,
                        complete,
                        incomplete,
                        tracker_id,
                        warning,
                        peers,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn announce_response_round_trips(r in arb_response()) {
            prop_assert_eq!(parse_announce_response(&encode_announce_response(&r)), Ok(r));
        }

        #[test]
        fn scrape_response_round_trips(entries in proptest::collection::btree_map(any::<[u8; 20]>(), any::<(u32, u32, u32)>(), 0..10)) {
            // The encoder sorts keys, so generate them sorted to compare in order.
            let files: Vec<(InfoHash, ScrapeStats)> = entries.into_iter()
                .map(|(h, (c, d, i))| (InfoHash(h), ScrapeStats { complete: c, downloaded: d, incomplete: i }))
                .collect();
            prop_assert_eq!(parse_scrape_response(&encode_scrape_response(&files)), Ok(files));
        }

        #[test]
        fn failure_round_trips(reason in "[!-~]{1,10}( [!-~]{1,10}){0,5}") {
            prop_assert_eq!(parse_announce_response(&encode_failure(&reason)), Err(HttpError::Failure(reason)));
        }

        #[test]
        fn announce_url_query_decodes_back_to_the_raw_bytes(ih in any::<[u8; 20]>(), pid in any::<[u8; 20]>()) {
            let mut req = request();
            req.info_hash = InfoHash(ih);
            req.peer_id = PeerId(pid);
            let u = announce_url(&url("http://t.example/announce?pk=x"), &req).unwrap();
            let pairs: Vec<(String, Vec<u8>)> = u.query().unwrap().split('&').map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), percent_encoding::percent_decode_str(v).collect())
            }).collect();
            prop_assert_eq!(&pairs[1], &("info_hash".to_owned(), ih.to_vec()));
            prop_assert_eq!(&pairs[2], &("peer_id".to_owned(), pid.to_vec()));
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_announce_response(&body);
            let _ = parse_scrape_response(&body);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_public_tracker_may_not_redirect_to_a_private_or_loopback_address() {
        let from = url("http://tracker.example/announce");
        let to = url("http://innocent.example/announce");
        for inner in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.9",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let refused = check_redirect(&from, ip("203.0.113.7"), &to, &[ip(inner)], 1, 3);
            assert!(
                matches!(refused, Err(RedirectError::Inward { .. })),
                "{inner}: {refused:?}"
            );
        }
        // A name that resolves to a public and a private address is refused too: the
        // connection could use either.
        let both = [ip("198.51.100.1"), ip("127.0.0.1")];
        assert!(check_redirect(&from, ip("203.0.113.7"), &to, &both, 1, 3).is_err());
        // A private tracker may not send us to this machine either.
        assert!(check_redirect(&from, ip("192.168.1.5"), &to, &[ip("127.0.0.1")], 1, 3).is_err());
    }

    #[test]
    fn public_to_public_and_loopback_to_loopback_redirects_are_followed() {
        let from = url("https://tracker.example/announce");
        let to = url("https://mirror.example/announce?x=1");
        assert_eq!(
            check_redirect(
                &from,
                ip("203.0.113.7"),
                &to,
                &[ip("198.51.100.1"), ip("2001:db8::1")],
                1,
                3
            ),
            Ok(())
        );
        let from = url("http://127.0.0.1:6969/announce");
        let to = url("http://127.0.0.1:7070/announce");
        assert_eq!(
            check_redirect(&from, ip("127.0.0.1"), &to, &[ip("127.0.0.1")], 3, 3),
            Ok(())
        );
        // Outward is always allowed.
        assert_eq!(
            check_redirect(
                &from,
                ip("127.0.0.1"),
                &to,
                &[ip("10.0.0.1"), ip("198.51.100.1")],
                1,
                3
            ),
            Ok(())
        );
    }

    #[test]
    fn a_scheme_change_is_refused_in_both_directions() {
        let https = url("https://tracker.example/announce");
        let http = url("http://tracker.example/announce");
        let public = [ip("203.0.113.7")];
        assert_eq!(
            check_redirect(&https, ip("203.0.113.7"), &http, &public, 1, 3),
            Err(RedirectError::SchemeChange {
                from: "https".into(),
                to: "http".into()
            })
        );
        assert!(matches!(
            check_redirect(&http, ip("203.0.113.7"), &https, &public, 1, 3),
            Err(RedirectError::SchemeChange { .. })
        ));
        assert!(matches!(
            check_redirect_url(&http, &url("ftp://tracker.example/"), 1, 3),
            Err(RedirectError::SchemeChange { .. })
        ));
    }

    #[test]
    fn too_many_hops_are_refused() {
        let a = url("http://127.0.0.1:1/announce");
        let lo = [ip("127.0.0.1")];
        assert_eq!(check_redirect(&a, ip("127.0.0.1"), &a, &lo, 3, 3), Ok(()));
        assert_eq!(
            check_redirect(&a, ip("127.0.0.1"), &a, &lo, 4, 3),
            Err(RedirectError::TooMany { limit: 3 })
        );
        assert_eq!(
            check_redirect_url(&a, &a, 1, 0),
            Err(RedirectError::TooMany { limit: 0 })
        );
    }

    #[test]
    fn a_target_without_addresses_is_refused() {
        let a = url("http://tracker.example/announce");
        assert!(matches!(
            check_redirect(&a, ip("203.0.113.7"), &a, &[], 1, 3),
            Err(RedirectError::NoAddress { .. })
        ));
    }

    #[test]
    fn reach_orders_loopback_inside_local_inside_public() {
        assert_eq!(Reach::of(ip("127.8.9.10")), Reach::Loopback);
        assert_eq!(Reach::of(ip("::")), Reach::Loopback);
        assert_eq!(Reach::of(ip("::ffff:10.0.0.1")), Reach::Local);
        assert_eq!(Reach::of(ip("ff02::1")), Reach::Local);
        assert_eq!(Reach::of(ip("8.8.8.8")), Reach::Public);
        assert_eq!(Reach::of(ip("2606:4700::1111")), Reach::Public);
        assert!(Reach::Loopback < Reach::Local && Reach::Local < Reach::Public);
    }
}
