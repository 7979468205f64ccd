//! Who hears of our verified pieces, and how often: a seed hears of none, a peer that
//! has some of them hears only of the others, and every peer hears of each piece once,
//! idle ones included (batched, see the Coordinator's `announce_haves`).

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    free_port, make_torrent, read_metainfo, Act, ChildGuard, HostilePeer, Payload, Served,
};
use torrent_actors::InfoHash;

/// 4 MiB in 32 KiB pieces: 128 pieces, fetched at 1 MiB/s, so the download lasts about
/// four seconds and the observers join long before its end.
const LEN: u64 = 4 << 20;
const PIECE_EXP: u32 = 15;
const PIECES: u32 = (LEN >> PIECE_EXP) as u32;

/// How long an observer listens at most.
const LISTEN_LIMIT: Duration = Duration::from_secs(90);

/// What an observer heard: the pieces of our bitfield, and each `have` in order.
#[derive(Debug, Default)]
struct Heard {
    bitfield: HashSet<u32>,
    haves: Vec<u32>,
}

impl Heard {
    fn knows_all(&self) -> bool {
        (0..PIECES).all(|p| self.bitfield.contains(&p) || self.haves.contains(&p))
    }
}

/// Dials the engine at `addr` as a peer that has `pieces` (sent as its bitfield unless
/// empty), never unchokes and never asks for anything, and records what it hears until
/// `done` says it heard enough, the connection ends, or [`LISTEN_LIMIT`] passes.
fn observe(
    addr: SocketAddr,
    info_hash: InfoHash,
    pieces: Vec<u32>,
    done: fn(&Heard, &[u32]) -> bool,
) -> Heard {
    let deadline = Instant::now() + LISTEN_LIMIT;
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the engine never listened on {addr}: {e}"),
        }
    };
    let mut hs = Vec::with_capacity(68);
    hs.push(19u8);
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(info_hash.as_bytes());
    let mut id = [b'-'; 20];
    id[..8].copy_from_slice(b"-OB0001-");
    id[8..12].copy_from_slice(&(pieces.len() as u32).to_be_bytes());
    hs.extend_from_slice(&id);
    stream.write_all(&hs).expect("sending the handshake");
    if !pieces.is_empty() {
        let mut field = vec![0u8; (PIECES as usize).div_ceil(8)];
        for p in &pieces {
            field[*p as usize / 8] |= 0x80 >> (p % 8);
        }
        let mut msg = ((field.len() + 1) as u32).to_be_bytes().to_vec();
        msg.push(5);
        msg.extend_from_slice(&field);
        stream.write_all(&msg).expect("sending the bitfield");
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut theirs = [0u8; 68];
    read_exact_until(&mut stream, &mut theirs, deadline).expect("the engine's handshake");
    let mut heard = Heard::default();
    while Instant::now() < deadline && !done(&heard, &pieces) {
        let mut len = [0u8; 4];
        if read_exact_until(&mut stream, &mut len, deadline).is_none() {
            break;
        }
        let len = u32::from_be_bytes(len) as usize;
        assert!(len <= 1 << 16, "a message of {len} bytes");
        let mut body = vec![0u8; len];
        if read_exact_until(&mut stream, &mut body, deadline).is_none() {
            break;
        }
        match body.first() {
            Some(4) if len == 5 => {
                heard
                    .haves
                    .push(u32::from_be_bytes(body[1..5].try_into().unwrap()));
            }
            Some(5) => {
                for p in 0..PIECES {
                    if body[1 + p as usize / 8] & (0x80 >> (p % 8)) != 0 {
                        heard.bitfield.insert(p);
                    }
                }
            }
            _ => {}
        }
    }
    heard
}

/// Fills `buf` from `stream`, waiting out read timeouts until `deadline`; `None` once
/// the connection ends or the deadline passes.
fn read_exact_until(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Option<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    Some(())
}

#[test]
fn seeds_hear_no_have_partial_peers_only_of_pieces_they_lack_and_idle_peers_of_each_once() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let payload = Payload::single(&tmp.path().join("seed"), "data.bin", LEN);
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, PIECE_EXP, &[]);
    let info_hash = read_metainfo(&torrent).info_hash;
    let served = Served {
        info_hash,
        content: Arc::new(std::fs::read(payload.dir.join("data.bin")).expect("payload")),
        piece_len: 1 << PIECE_EXP,
    };
    let seeder = HostilePeer::start(served, Act::Honest);
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--no-dht", "--no-pex", "--bind", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--download-limit", "1024"])
        .args(["--seed", "--seed-time", "120s"])
        .arg("--peer")
        .arg(seeder.addr().to_string())
        .arg("-o")
        .arg(tmp.path().join("out"))
        .arg(&torrent)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut get = ChildGuard::spawn(cmd, "get");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let all: Vec<u32> = (0..PIECES).collect();
    let even: Vec<u32> = (0..PIECES).filter(|p| p % 2 == 0).collect();
    let seed = thread::spawn(move || {
        // A seed has nothing to learn; it listens until the others are done.
        observe(addr, info_hash, all, |_, _| false)
    });
    let partial = thread::spawn(move || {
        observe(addr, info_hash, even, |h, ours| {
            (0..PIECES)
                .all(|p| ours.contains(&p) || h.bitfield.contains(&p) || h.haves.contains(&p))
        })
    });
    let idle = thread::spawn(move || observe(addr, info_hash, Vec::new(), |h, _| h.knows_all()));

    let idle = idle.join().expect("idle observer");
    let partial = partial.join().expect("partial observer");
    // The seed observer stops when `get` does.
    get.kill();
    let seed = seed.join().expect("seed observer");

    assert!(
        idle.knows_all(),
        "an idle peer never heard of every piece: bitfield {}, haves {}",
        idle.bitfield.len(),
        idle.haves.len()
    );
    assert!(
        !idle.haves.is_empty(),
        "the idle peer joined after the download: the test proves nothing"
    );
    let unique: HashSet<u32> = idle.haves.iter().copied().collect();
    assert_eq!(
        unique.len(),
        idle.haves.len(),
        "an idle peer heard a piece twice"
    );
    assert!(
        idle.haves.iter().all(|p| !idle.bitfield.contains(p)),
        "an idle peer heard of a piece our bitfield had given it"
    );
    assert!(
        !partial.haves.is_empty(),
        "the partial peer heard no have at all"
    );
    assert!(
        partial.haves.iter().all(|p| p % 2 == 1),
        "a peer heard of pieces it has: {:?}",
        partial
            .haves
            .iter()
            .filter(|p| *p % 2 == 0)
            .collect::<Vec<_>>()
    );
    assert!(
        seed.haves.is_empty(),
        "a seed heard of {} of our pieces",
        seed.haves.len()
    );
}
