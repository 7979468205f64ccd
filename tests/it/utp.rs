//! uTP (BEP 29) against peers nobody on the project wrote, all on 127.0.0.1: libtorrent
//! seeders that speak only uTP (and force RC4 over it) serve `get` byte-identical files,
//! libtorrent's own peer flags proving the connection was uTP; a uTP-only libtorrent
//! leecher downloads from our `seed`, and two of them (plaintext, then RC4) one torrent
//! each from one `serve` listener; Transmission 3.00's libutp downloads from our `seed
//! --utp only` and serves `get --utp only`, both with encryption required; `--utp off`
//! never reaches a
//! uTP-only seeder and `--utp only` never a TCP-only one; a mixed swarm (TCP and uTP,
//! plaintext and RC4) uses all four kinds. And
//! what a stranger can do to our UDP port: stall connections after the uTP handshake, or
//! send garbage and connection requests by the thousand, without a panic, without
//! memory growing, and with an honest leecher still served.

use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

use crate::encryption::{
    get, get_downloads_from_transmission, run, transmission_downloads_from_our_seed,
    two_torrents_from_one_serve_listener, Fixture, OurSeed, DOWNLOAD_LIMIT,
};
use crate::support::{
    peer_flags, LeechOpts, LtLeecher, LtSeeder, LtTransport, SeedOpts, LT_RC4_ENCRYPTED,
    LT_UTP_SOCKET,
};

/// A libtorrent seeder with `transport`, RC4 forced if `rc4`, slowed so that its
/// once-a-second flags line finds the connection still open.
fn lt_seeder(f: &Fixture, transport: LtTransport, rc4: bool) -> LtSeeder {
    LtSeeder::start(
        &f.torrent,
        &f.payload.dir,
        SeedOpts {
            ready_without_announce: true,
            encryption_forced: rc4,
            transport,
            upload_limit: Some(1024 * 1024),
            ..SeedOpts::default()
        },
    )
}

/// Asserts that `log` (a libtorrent peer's) reported connections and each had all `bits`.
fn assert_every_connection(log: &str, bits: u64, what: &str) {
    let flags = peer_flags(log);
    assert!(
        !flags.is_empty() && flags.iter().all(|(_, f)| f & bits == bits),
        "libtorrent did not report {what} connections only: {flags:?}\n{log}"
    );
}

#[test]
fn get_downloads_from_a_utp_only_libtorrent_seeder() {
    let f = Fixture::new(3 * 1024 * 1024 + 333);
    let seeder = lt_seeder(&f, LtTransport::Utp, false);
    for mode in ["on", "only"] {
        let out = f.out(mode);
        let (code, stderr) = run(
            get(&f, &out, &[seeder.addr()], &["--utp", mode]),
            DOWNLOAD_LIMIT,
        );
        assert_eq!(code, Some(0), "get --utp {mode} failed:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        f.assert_downloaded(&out);
    }
    assert_every_connection(&seeder.log(), LT_UTP_SOCKET, "uTP");
}

/// A magnet link's metadata comes over uTP too: `get --utp only` fetches it from a
/// uTP-only seeder (on a uTP socket of its own, as its listener's is bound only once the
/// metadata is in), then the data.
#[test]
fn get_utp_only_starts_from_a_magnet_link_of_a_utp_only_seeder() {
    let f = Fixture::new(1024 * 1024 + 77);
    let seeder = lt_seeder(&f, LtTransport::Utp, false);
    let out = f.out("magnet");
    let magnet = format!("magnet:?xt=urn:btih:{}", f.info_hash().to_hex());
    let mut cmd = crate::encryption::ours();
    cmd.args(["get", "-vv", "--no-dht", "--no-pex", "--bind", "127.0.0.1"])
        .args(["--port", "0", "--utp", "only", "-o"])
        .arg(&out)
        .arg("--peer")
        .arg(seeder.addr().to_string())
        .arg(&magnet);
    let (code, stderr) = run(cmd, DOWNLOAD_LIMIT);
    assert_eq!(
        code,
        Some(0),
        "get --utp only from a magnet failed:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    f.assert_downloaded(&out);
    assert_every_connection(&seeder.log(), LT_UTP_SOCKET, "uTP");
}

#[test]
fn get_downloads_from_a_libtorrent_seeder_forcing_utp_and_rc4() {
    let f = Fixture::new(3 * 1024 * 1024 + 17);
    let seeder = lt_seeder(&f, LtTransport::Utp, true);
    for mode in ["prefer", "require"] {
        let out = f.out(mode);
        let (code, stderr) = run(
            get(&f, &out, &[seeder.addr()], &["--encryption", mode]),
            DOWNLOAD_LIMIT,
        );
        assert_eq!(code, Some(0), "get --encryption {mode} failed:\n{stderr}");
        f.assert_downloaded(&out);
    }
    assert_every_connection(
        &seeder.log(),
        LT_UTP_SOCKET | LT_RC4_ENCRYPTED,
        "RC4 over uTP",
    );
}

#[test]
fn a_utp_only_libtorrent_leecher_downloads_from_our_seed_encrypted_or_not() {
    let f = Fixture::new(2 * 1024 * 1024 + 5);
    // Slow enough (some four seconds) for the leecher's once-a-second peer flags line.
    let seed = OurSeed::start(&f, &["--upload-limit", "500"]);
    for rc4 in [false, true] {
        let out = f.out(if rc4 { "lt-rc4" } else { "lt" });
        let outcome = LtLeecher::run(
            &f.torrent,
            &out,
            &LeechOpts {
                peers: vec![seed.addr],
                transport: LtTransport::Utp,
                encryption_forced: rc4,
                ..LeechOpts::new(DOWNLOAD_LIMIT)
            },
        );
        outcome.assert_finished();
        f.assert_downloaded(&out);
        let bits = LT_UTP_SOCKET | if rc4 { LT_RC4_ENCRYPTED } else { 0 };
        let flags = peer_flags(&outcome.log);
        assert!(
            flags.iter().any(|(_, f)| f & bits == bits),
            "libtorrent did not report a uTP connection (rc4: {rc4}): {flags:?}\n{}",
            outcome.log
        );
    }
    assert!(!seed.stderr().contains("panicked"), "{}", seed.stderr());
}

/// `serve`'s one UDP socket finds each uTP leecher's torrent among two, in plaintext and
/// with RC4 forced.
#[test]
fn utp_only_libtorrent_leechers_download_two_torrents_from_one_serve_listener() {
    two_torrents_from_one_serve_listener(false, LtTransport::Utp);
}

#[test]
fn utp_only_libtorrent_leechers_forcing_rc4_download_two_torrents_from_one_serve_listener() {
    two_torrents_from_one_serve_listener(true, LtTransport::Utp);
}

#[test]
fn utp_off_never_reaches_a_utp_only_seeder_and_utp_only_never_a_tcp_only_one() {
    let f = Fixture::new(256 * 1024);
    // (our --utp, the seeder's only transport): each pair has no carrier in common.
    for (ours, theirs, name) in [
        ("off", LtTransport::Utp, "a uTP-only"),
        ("only", LtTransport::Tcp, "a TCP-only"),
    ] {
        let seeder = lt_seeder(&f, theirs, false);
        let (code, stderr) = run(
            get(
                &f,
                &f.out(ours),
                &[seeder.addr()],
                &["--utp", ours, "--peer-timeout", "4"],
            ),
            DOWNLOAD_LIMIT,
        );
        assert_eq!(
            code,
            Some(7),
            "get --utp {ours} reached {name} seeder:\n{stderr}"
        );
    }
    // And a seeder speaking both is reached over uTP alone.
    let both = lt_seeder(&f, LtTransport::Both, false);
    let out = f.out("only-both");
    let (code, stderr) = run(
        get(&f, &out, &[both.addr()], &["--utp", "only"]),
        DOWNLOAD_LIMIT,
    );
    assert_eq!(code, Some(0), "{stderr}");
    f.assert_downloaded(&out);
    let flags = peer_flags(&both.log());
    assert!(
        flags.iter().all(|(_, f)| f & LT_UTP_SOCKET != 0),
        "a TCP connection with --utp only: {flags:?}\n{}",
        both.log()
    );
}

/// Four libtorrent seeders, each capped so the download needs them all: TCP and uTP,
/// each plaintext and with RC4 forced. `get`, with its defaults, uses every one, and
/// each seeder's flags prove what its connections were.
#[test]
fn a_mixed_swarm_of_tcp_utp_plaintext_and_encrypted_seeders_serves_get_over_all() {
    let f = Fixture::new(4 * 1024 * 1024 + 99);
    let seeders = [
        ("TCP", lt_seeder(&f, LtTransport::Tcp, false), 0),
        (
            "TCP with RC4",
            lt_seeder(&f, LtTransport::Tcp, true),
            LT_RC4_ENCRYPTED,
        ),
        ("uTP", lt_seeder(&f, LtTransport::Utp, false), LT_UTP_SOCKET),
        (
            "uTP with RC4",
            lt_seeder(&f, LtTransport::Utp, true),
            LT_UTP_SOCKET | LT_RC4_ENCRYPTED,
        ),
    ];
    let out = f.out("mixed");
    let addrs: Vec<_> = seeders.iter().map(|(_, s, _)| s.addr()).collect();
    let (code, stderr) = run(get(&f, &out, &addrs, &[]), DOWNLOAD_LIMIT);
    assert_eq!(code, Some(0), "{stderr}");
    f.assert_downloaded(&out);
    for (what, seeder, bits) in &seeders {
        assert!(seeder.uploaded() > 0, "the {what} seeder served nothing");
        if *bits != 0 {
            assert_every_connection(&seeder.log(), *bits, what);
        }
    }
}

/// A uTP connection request (ST_SYN, version 1) with connection id `id`.
fn syn(id: u16) -> [u8; 20] {
    let mut p = [0u8; 20];
    p[0] = (4 << 4) | 1;
    p[2..4].copy_from_slice(&id.to_be_bytes());
    p[12..16].copy_from_slice(&(1u32 << 20).to_be_bytes());
    p[16..18].copy_from_slice(&id.wrapping_mul(7).to_be_bytes());
    p
}

#[test]
fn connection_requests_that_stall_and_garbage_datagrams_cost_bounded_memory_and_no_service() {
    let f = Fixture::new(1024 * 1024 + 3);
    let seed = OurSeed::start(&f, &["--handshake-timeout", "3"]);
    let pid = seed.pid();
    let before = crate::support::rss_kib(pid);
    let flood = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket for the flood");
    // Past the crate's bound on live connections: every one answered, none followed up,
    // so each stalls before the BitTorrent handshake.
    for id in 0..1000u16 {
        let _ = flood.send_to(&syn(id.wrapping_mul(2)), seed.addr);
    }
    // Then garbage: random lengths and bytes, some with a plausible header.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..30_000usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut d: Vec<u8> = (0..(i % 1400)).map(|k| (x >> (k % 57)) as u8).collect();
        if i % 3 == 0 && d.len() >= 20 {
            d[0] = (((i / 3) % 4) as u8) << 4 | 1;
        }
        let _ = flood.send_to(&d, seed.addr);
        if i % 2000 == 0 {
            // Let the kernel's buffer drain a little: this is about our handling, not
            // about dropped datagrams.
            thread::sleep(Duration::from_millis(5));
        }
    }
    // The stalled connections time out (3 s); an honest uTP leecher is then served.
    thread::sleep(Duration::from_secs(4));
    let out = f.out("honest");
    let outcome = LtLeecher::run(
        &f.torrent,
        &out,
        &LeechOpts {
            peers: vec![seed.addr],
            transport: LtTransport::Utp,
            ..LeechOpts::new(DOWNLOAD_LIMIT)
        },
    );
    outcome.assert_finished();
    f.assert_downloaded(&out);
    let after = crate::support::rss_kib(pid);
    let stderr = seed.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("incoming handshake failed"),
        "no stalled connection was dropped with a reason:\n{stderr}"
    );
    // 256 connections' buffers at most, and they were never filled: a loose bound.
    assert!(
        after < before + 64 * 1024,
        "the seed grew from {before} KiB to {after} KiB under the flood"
    );
}

// ---------------------------------------------------------------------------------------
// Transmission 3.00 over uTP (its libutp), a second implementation
// ---------------------------------------------------------------------------------------

/// `get --utp only` never dials TCP, so its completing proves uTP carried every byte;
/// Transmission requires encryption too, so the uTP connection is RC4 inside.
#[test]
fn get_over_utp_only_downloads_from_transmission_with_utp_and_encryption_required() {
    get_downloads_from_transmission(
        2 * 1024 * 1024 + 17,
        true,
        &["--utp", "only", "--encryption", "require"],
    );
}

/// Our `seed --utp only` dials Transmission (which does not dial loopback peers it hears
/// of) over uTP alone, encrypted, and Transmission downloads the file from it.
#[test]
fn transmission_downloads_from_our_seed_over_utp_only() {
    transmission_downloads_from_our_seed(
        2 * 1024 * 1024 + 19,
        true,
        &["--utp", "only", "--encryption", "require"],
    );
}
