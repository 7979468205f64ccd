//! Tracker formats through the public API: one announce and one scrape over each
//! transport, as the engine will drive them.

use std::net::SocketAddr;
use std::time::Duration;

use torrent_actors::tracker::http::{self, HttpError};
use torrent_actors::tracker::udp::{
    self, AnnouncePacket, ConnectRequest, Expected, Response, ScrapeRequest, UdpError,
};
use torrent_actors::tracker::{
    timeout_for_attempt, AddressFamily, AnnounceRequest, AnnounceResponse, Event, ScrapeStats,
};
use torrent_actors::{InfoHash, PeerId};
use url::Url;

fn request() -> AnnounceRequest {
    let mut r = AnnounceRequest::new(
        InfoHash([7; 20]),
        PeerId(*b"-TA0001-012345678901"),
        51413,
        42,
    );
    r.left = 1 << 30;
    r.event = Some(Event::Started);
    r.numwant = Some(50);
    r
}

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn http_announce_against_a_private_tracker_url() {
    let base = Url::parse("https://tracker.example/u/announce?passkey=0123abcd").unwrap();
    let url = http::announce_url(&base, &request()).unwrap();
    let query = url.query().unwrap();
    assert!(
        query.starts_with("passkey=0123abcd&info_hash=%07%07"),
        "{query}"
    );
    assert!(
        query.contains("&peer_id=-TA0001-012345678901&port=51413&"),
        "{query}"
    );
    assert!(
        query.contains("&compact=1&event=started&numwant=50&key=0000002A"),
        "{query}"
    );
    assert_eq!(
        http::scrape_url(&base).unwrap().as_str(),
        "https://tracker.example/u/scrape?passkey=0123abcd"
    );
}

#[test]
fn http_announce_reply_with_both_peer_families() {
    let sent = AnnounceResponse {
        interval: Duration::from_secs(1800),
        min_interval: Some(Duration::from_secs(60)),
        complete: Some(10),
        incomplete: Some(2),
        tracker_id: Some(b"t-1".to_vec()),
        warning: Some("maintenance tonight".into()),
        peers: vec![peer("203.0.113.5:6881"), peer("[2001:db8::7]:6882")],
    };
    let body = http::encode_announce_response(&sent);
    assert_eq!(http::parse_announce_response(&body), Ok(sent));
}

#[test]
fn http_tracker_refusal_is_a_failure_error() {
    let err =
        http::parse_announce_response(b"d14:failure reason17:torrent not founde").unwrap_err();
    assert_eq!(err, HttpError::Failure("torrent not found".into()));
    assert_eq!(err.to_string(), "tracker failure: torrent not found");
}

#[test]
fn http_scrape_round_trip() {
    let files = vec![(
        InfoHash([7; 20]),
        ScrapeStats {
            complete: 3,
            downloaded: 40,
            incomplete: 1,
        },
    )];
    let scrape = http::scrape_url(&Url::parse("http://t.example/announce").unwrap()).unwrap();
    let url = http::scrape_request_url(&scrape, &[InfoHash([7; 20])]).unwrap();
    assert_eq!(
        url.as_str(),
        format!("http://t.example/scrape?info_hash={}", "%07".repeat(20))
    );
    assert_eq!(
        http::parse_scrape_response(&http::encode_scrape_response(&files)),
        Ok(files)
    );
}

#[test]
fn udp_connect_announce_exchange() {
    // Connect.
    let connect = ConnectRequest { transaction_id: 1 }.encode();
    assert_eq!(connect.len(), 16);
    let reply = Response::Connect {
        connection_id: 0xfeed,
    }
    .encode(1, AddressFamily::V4);
    let Ok(Response::Connect { connection_id }) = udp::parse_response(&reply, 1, Expected::Connect)
    else {
        panic!("connect failed");
    };

    // Announce with that connection id.
    let packet = AnnouncePacket {
        connection_id,
        transaction_id: 2,
        request: request(),
    };
    let bytes = packet.encode();
    assert_eq!(bytes.len(), 98);
    assert_eq!(AnnouncePacket::decode(&bytes), Ok(packet));

    let answer = AnnounceResponse {
        interval: Duration::from_secs(900),
        min_interval: None,
        complete: Some(4),
        incomplete: Some(9),
        tracker_id: None,
        warning: None,
        peers: vec![peer("198.51.100.1:1"), peer("198.51.100.2:2")],
    };
    let reply = Response::Announce(answer.clone()).encode(2, AddressFamily::V4);
    assert_eq!(
        udp::parse_response(&reply, 2, Expected::Announce(AddressFamily::V4)),
        Ok(Response::Announce(answer))
    );
}

#[test]
fn udp_replies_for_other_exchanges_or_with_errors_are_told_apart() {
    let reply = Response::Connect { connection_id: 1 }.encode(5, AddressFamily::V4);
    assert_eq!(
        udp::parse_response(&reply, 6, Expected::Connect),
        Err(UdpError::TransactionMismatch {
            expected: 6,
            got: 5
        })
    );
    assert_eq!(
        udp::parse_response(&reply, 5, Expected::Announce(AddressFamily::V6)),
        Err(UdpError::UnexpectedAction {
            expected: 1,
            got: 0
        })
    );
    assert_eq!(
        udp::parse_response(&udp::encode_error(5, "banned"), 5, Expected::Scrape),
        Err(UdpError::Tracker("banned".into()))
    );
    assert!(matches!(
        udp::parse_response(&reply[..10], 5, Expected::Connect),
        Err(UdpError::TooShort { .. })
    ));
}

#[test]
fn udp_scrape_exchange() {
    let req = ScrapeRequest {
        connection_id: 3,
        transaction_id: 9,
        info_hashes: vec![InfoHash([1; 20])],
    };
    let bytes = req.encode().unwrap();
    assert_eq!(bytes.len(), 36);
    let stats = vec![ScrapeStats {
        complete: 1,
        downloaded: 2,
        incomplete: 3,
    }];
    let reply = Response::Scrape(stats.clone()).encode(9, AddressFamily::V4);
    assert_eq!(
        udp::parse_response(&reply, 9, Expected::Scrape),
        Ok(Response::Scrape(stats))
    );
}

#[test]
fn udp_retransmit_schedule_totals_about_two_hours() {
    let total: Duration = (0..).map_while(timeout_for_attempt).sum();
    assert_eq!(total, Duration::from_secs(15 * 511));
}
