//! Magnet links through the public API: what a user pastes and what the engine gets.

use std::net::SocketAddr;

use torrent_actors::magnet::{FileSelection, Magnet, MagnetError};
use torrent_actors::InfoHash;

const HEX: &str = "dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c";

#[test]
fn typical_link_from_a_web_page_parses_fully() {
    let uri = format!(
        "magnet:?xt=urn:btih:{HEX}&dn=Big+Buck+Bunny\
         &tr=udp%3A%2F%2Fexplodie.org%3A6969&tr=wss%3A%2F%2Ftracker.example%3A443%2Fannounce\
         &ws=https%3A%2F%2Fseed.example%2F&x.pe=10.0.0.7:6881&so=0,2-3"
    );
    let m = Magnet::parse(&uri).unwrap();
    assert_eq!(m.info_hash, InfoHash::from_hex(HEX).unwrap());
    assert_eq!(m.display_name.as_deref(), Some("Big Buck Bunny"));
    assert_eq!(
        m.trackers,
        vec![
            "udp://explodie.org:6969",
            "wss://tracker.example:443/announce"
        ]
    );
    assert_eq!(
        m.peers,
        vec!["10.0.0.7:6881".parse::<SocketAddr>().unwrap()]
    );
    let sel = m.select_only.clone().unwrap();
    assert!(sel.contains(0) && !sel.contains(1) && sel.contains(3));
}

#[test]
fn written_link_parses_back_to_the_same_magnet() {
    let m = Magnet {
        info_hash: InfoHash([0x5a; 20]),
        v2_info_hash: None,
        display_name: Some("naïve & «quoted»".into()),
        trackers: vec!["http://a.example/announce?passkey=x y".into()],
        peers: vec![
            "[2001:db8::2]:1".parse().unwrap(),
            "8.8.8.8:65535".parse().unwrap(),
        ],
        peer_hosts: vec![("seed.example".into(), 51413)],
        select_only: Some(FileSelection::new([9..=12, 0..=0]).unwrap()),
    };
    assert_eq!(Magnet::parse(&m.to_uri()), Ok(m));
}

#[test]
fn base32_and_hex_name_the_same_torrent() {
    let b32 = "3WBFL3G4PSSV7MF37AJSHWDQMLNR63I4";
    let a = Magnet::parse(&format!("magnet:?xt=urn:btih:{b32}")).unwrap();
    let b = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
    assert_eq!(a.info_hash, b.info_hash);
}

#[test]
fn malformed_links_give_errors_that_say_what_is_wrong() {
    let cases: [(&str, &str); 7] = [
        ("https://example.com", "not a magnet uri"),
        ("magnet:?dn=x", "no xt"),
        (
            "magnet:?xt=urn:btmh:1220aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "is not 1220 followed by 64 hex digits",
        ),
        ("magnet:?xt=urn:btih:123", "has 3 characters"),
        (
            "magnet:?xt=urn:btih:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "not valid hex",
        ),
        (
            "magnet:?xt=urn:btih:dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c&x.pe=nowhere",
            "bad x.pe peer address \"nowhere\"",
        ),
        (
            "magnet:?xt=urn:btih:dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c&so=5-2",
            "reversed so range 5-2",
        ),
    ];
    for (uri, needle) in cases {
        let err = Magnet::parse(uri).unwrap_err().to_string();
        assert!(err.contains(needle), "{uri}: {err}");
    }
}

#[test]
fn file_index_overflow_is_its_own_error() {
    assert_eq!(
        Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&so=99999999999")),
        Err(MagnetError::FileIndexTooLarge("99999999999".into()))
    );
}
