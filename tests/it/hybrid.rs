//! Hybrid torrents (BEP 52: v1 `pieces` and a v2 `file tree` in one `info`): one whose two
//! views of the data disagree is refused with its reason on one line, exit 4, before
//! anything is written; a good one joins both swarms: it announces under both info-hashes
//! (the v2 one truncated to 20 bytes) and on the DHT under both, takes peers that name
//! either, and greets a peer found only in the v2 swarm with the v2 hash.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use torrent_actors::bencode::{self, BValue};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use torrent_actors::metainfo::Metainfo;
use torrent_actors::wire::{Handshake, Message, Reserved};
use torrent_actors::{InfoHash, PeerId};

use crate::dht::{config, dht_seeder, in_system, loopback, search, start, swarm};
use crate::seeding::{seed_command, wait_until_tracker_lists, Ours, RawPeer, READY_LIMIT};
use crate::support::{
    free_port, http_announce, our_create_ok, run_until, run_within, with_announce, write_pattern,
    Act, Announce, Daemon, DaemonOpts, HostilePeer, LtSeeder, SeedOpts, Served, Tracker,
};

const KIB: usize = 1024;

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A hybrid made by our `create` with `piece_size` pieces from `parent/album`, which it
/// fills with `a.bin` and `b.bin` of the lengths and pattern seeds given: the folder and
/// `parent/album.torrent`.
fn album_hybrid(
    parent: &Path,
    [(a_len, a_seed), (b_len, b_seed)]: [(usize, u8); 2],
    piece_size: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = parent.join("album");
    write_pattern(&root.join("a.bin"), a_len, a_seed);
    write_pattern(&root.join("b.bin"), b_len, b_seed);
    let torrent = parent.join("album.torrent");
    our_create_ok(&[
        "--hybrid",
        "--piece-size",
        piece_size,
        s(&root),
        "-o",
        s(&torrent),
    ]);
    (root, torrent)
}

/// A hybrid made by our `create` from a small folder, with 16 KiB pieces.
fn made_hybrid(parent: &Path) -> std::path::PathBuf {
    album_hybrid(parent, [(40 * KIB + 3, 1), (3 * 16 * KIB + 7, 2)], "16KiB").1
}

/// What a v1-only peer serves of `meta`, the files found under `parent`: the v1 view end
/// to end, the files and zeros for the padding files between them.
fn v1_view(meta: &Metainfo, parent: &Path) -> Served {
    let mut content = Vec::new();
    for file in meta.info.layout.files() {
        if file.padding {
            content.resize(content.len() + file.length as usize, 0);
        } else {
            content.extend(fs::read(parent.join(file.path.display())).unwrap());
        }
    }
    Served {
        info_hash: meta.info_hash,
        content: std::sync::Arc::new(content),
        piece_len: u64::from(meta.info.layout.piece_length()),
    }
}

/// A hybrid whose v1 `pieces` hash one folder's data and whose v2 tree and piece layers
/// hash another's of the same sizes: `create` run on each of `v1/album` and `v2/album`
/// under `parent` (written with two patterns), the v2 torrent given the v1 one's
/// `pieces`. Its file lists agree, so only its data can show the lie.
fn hybrid_of_two_datas(parent: &Path, piece_size: &str) -> std::path::PathBuf {
    let mut made = Vec::new();
    for (side, seed) in [("v1", 21), ("v2", 22)] {
        let parent = parent.join(side);
        let (_, torrent) = album_hybrid(
            &parent,
            [(1500 * KIB + 5, seed), (700 * KIB, seed + 10)],
            piece_size,
        );
        made.push(
            bencode::decode(&fs::read(&torrent).unwrap())
                .unwrap()
                .to_owned_value(),
        );
    }
    fn info(top: &mut BValue) -> &mut std::collections::BTreeMap<Vec<u8>, BValue> {
        let BValue::Dict(top) = top else {
            panic!("a torrent is a dictionary")
        };
        match top.get_mut(&b"info"[..]) {
            Some(BValue::Dict(info)) => info,
            _ => panic!("no info"),
        }
    }
    let v1_pieces = info(&mut made[0])
        .get(&b"pieces"[..])
        .expect("a hybrid has pieces")
        .clone();
    info(&mut made[1]).insert(b"pieces".to_vec(), v1_pieces);
    let torrent = parent.join("two-datas.torrent");
    fs::write(&torrent, made[1].encode()).unwrap();
    torrent
}

/// `get` of `torrent` into `out` from `peer` alone, `-v`, with `extra` arguments: its
/// output, within 120 s.
fn get_from(
    torrent: &Path,
    out: &Path,
    peer: Option<SocketAddr>,
    extra: &[&str],
) -> std::process::Output {
    let mut get = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    get.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--bind", "127.0.0.1", "--port", "0", "--no-dht"])
        .args(["--encryption", "off", "--utp", "off", "-v"])
        .args(extra);
    if let Some(peer) = peer {
        get.args(["--peer", &peer.to_string()]);
    }
    get.arg("-o").arg(out).arg(torrent);
    run_until(get, Duration::from_secs(120)).expect("get ends in time")
}

/// What `get` says of a hybrid of two datas, before the piece it names (the first one
/// checked, which is not always piece 0).
const TWO_DATAS: &str =
    "error: this hybrid torrent's v1 and v2 hashes describe different data: piece ";

#[test]
fn a_hybrid_whose_v2_part_hashes_other_data_stops_at_its_first_piece_and_blames_no_peer() {
    // A peer serves each side's data in turn: the v1 data passes the SHA-1s and fails the
    // Merkle nodes, the v2 data the other way round. Either way the torrent stops, exit
    // 4, naming a piece; the peer is not banned (it sent what one of the hashes asks).
    // Whole pieces (32 KiB) for the v1 data, streamed ones (1 MiB pieces against a 1 MiB
    // budget) for the v2 data, so both checking paths are covered.
    for (side, piece_size, extra) in [
        ("v1", "32KiB", &[][..]),
        ("v2", "1MiB", &["--max-in-progress-mib", "1"][..]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let torrent = hybrid_of_two_datas(tmp.path(), piece_size);
        let meta = Metainfo::from_bytes(&fs::read(&torrent).unwrap()).unwrap();
        let peer = HostilePeer::start(v1_view(&meta, &tmp.path().join(side)), Act::Honest);
        let out = tmp.path().join("out");
        let output = get_from(&torrent, &out, Some(peer.addr()), extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{side} data:\n{stderr}");
        assert!(stderr.contains(TWO_DATAS), "{side} data:\n{stderr}");
        assert!(!stderr.contains("banned"), "{side} data:\n{stderr}");
        assert!(
            peer.counters()
                .blocks_sent
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0,
            "{side} data: the peer sent nothing"
        );
    }
}

#[test]
fn a_peer_sending_garbage_padding_with_the_right_file_bytes_completes_a_hybrid() {
    // BEP 47 padding is zeros by definition and never stored: a peer that sends 0xff
    // there and every file byte right gave us the files. Found by review: each such piece
    // passed its Merkle node and failed its SHA-1, and the torrent stopped as one whose
    // two parts disagree. Whole pieces (32 KiB) and streamed ones (1 MiB pieces against
    // a 1 MiB budget).
    for (piece_size, extra) in [
        ("32KiB", &[][..]),
        ("1MiB", &["--max-in-progress-mib", "1"][..]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (root, torrent) = album_hybrid(
            tmp.path(),
            [(1500 * KIB + 5, 31), (700 * KIB, 32)],
            piece_size,
        );
        let meta = Metainfo::from_bytes(&fs::read(&torrent).unwrap()).unwrap();
        let mut served = v1_view(&meta, tmp.path());
        let mut content = (*served.content).clone();
        for file in meta.info.layout.files().iter().filter(|f| f.padding) {
            let at = file.offset as usize;
            content[at..at + file.length as usize].fill(0xff);
        }
        assert_ne!(
            content, *served.content,
            "{piece_size}: the hybrid has padding"
        );
        served.content = std::sync::Arc::new(content);
        let peer = HostilePeer::start(served, Act::Honest);
        let out = tmp.path().join("out");
        let output = get_from(&torrent, &out, Some(peer.addr()), extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{piece_size}:\n{stderr}");
        for name in ["a.bin", "b.bin"] {
            assert_eq!(
                fs::read(out.join("album").join(name)).unwrap(),
                fs::read(root.join(name)).unwrap(),
                "{piece_size}: {name} differs"
            );
        }
    }
}

#[test]
fn a_hybrid_whose_v2_part_hashes_other_data_is_refused_by_the_check_of_data_on_disk() {
    // The v1 side's files already in place: the start-up check finds a piece matching
    // its SHA-1 and not its Merkle node, and stops there rather than seed it.
    let tmp = tempfile::tempdir().unwrap();
    let torrent = hybrid_of_two_datas(tmp.path(), "32KiB");
    let out = tmp.path().join("v1");
    let output = get_from(&torrent, &out, None, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(TWO_DATAS), "{stderr}");
}

#[test]
fn get_and_info_refuse_a_hybrid_whose_v1_and_v2_parts_disagree() {
    let tmp = tempfile::tempdir().unwrap();
    let good = made_hybrid(tmp.path());
    // The v2 tree says b.bin is one byte shorter than the v1 list does.
    let BValue::Dict(mut top) = bencode::decode(&fs::read(&good).unwrap())
        .unwrap()
        .to_owned_value()
    else {
        panic!("a torrent is a dictionary")
    };
    let Some(BValue::Dict(info)) = top.get_mut(&b"info"[..]) else {
        panic!("no info")
    };
    let Some(BValue::Dict(tree)) = info.get_mut(&b"file tree"[..]) else {
        panic!("no file tree")
    };
    let Some(BValue::Dict(b)) = tree.get_mut(&b"b.bin"[..]) else {
        panic!("no b.bin")
    };
    let Some(BValue::Dict(leaf)) = b.get_mut(&b""[..]) else {
        panic!("b.bin is not a file")
    };
    leaf.insert(b"length".to_vec(), BValue::Int(3 * 16 * 1024 + 6));
    let bad = tmp.path().join("bad.torrent");
    fs::write(&bad, BValue::Dict(top).encode()).unwrap();

    let want = format!(
        "error: invalid torrent {}: the v1 and v2 parts of this hybrid disagree: \
         b.bin (49159 bytes) against b.bin (49158 bytes)\n",
        bad.display()
    );
    let out_dir = tmp.path().join("out");
    let mut get = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    get.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "--no-dht", "-o"])
        .arg(&out_dir)
        .arg(&bad);
    let out = run_within(get, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stderr), want);
    assert!(!out_dir.exists(), "nothing written");

    let mut info = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    info.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .arg("info")
        .arg(&bad);
    let out = run_within(info, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stderr), want);

    // The torrent it was made from is fine.
    let mut info = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    info.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .arg("info")
        .arg(&good);
    assert!(run_within(info, Duration::from_secs(30)).status.success());
}

#[test]
fn a_peer_naming_the_v2_swarm_gets_our_handshake_for_that_swarm_and_our_bitfield() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = made_hybrid(tmp.path());
    let meta = Metainfo::from_bytes(&fs::read(&torrent).unwrap()).unwrap();
    let v2 = meta.v2_swarm().expect("a hybrid has a v2 swarm");
    let mut seed = Ours::start(seed_command(&torrent, tmp.path(), &[]), "hybrid seed");
    let addr = seed.wait_seeding(READY_LIMIT);
    let pieces = meta.info.layout.num_pieces();
    // `RawPeer::connect` checks that the answer names the hash the peer sent.
    for (id, hash) in [(1, v2), (2, meta.info_hash)] {
        let mut peer = RawPeer::connect(addr, hash, id);
        let (bitfield, _) = peer.read_until(Duration::from_secs(20), "the bitfield", |m| {
            matches!(m, Message::Bitfield(_))
        });
        let Message::Bitfield(bits) = bitfield else {
            unreachable!()
        };
        let whole = torrent_actors::wire::Bitfield::from_payload(&bits, pieces)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", hash, seed.report()));
        assert!(whole.all_set(), "the seed has every piece");
    }
}

#[test]
fn a_hybrid_announces_under_both_info_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let made = made_hybrid(tmp.path());
    let meta = Metainfo::from_bytes(&fs::read(&made).unwrap()).unwrap();
    let v2 = meta.v2_swarm().expect("a hybrid has a v2 swarm");
    let tracker = Tracker::start(&[meta.info_hash, v2]);
    let torrent = tmp.path().join("tracked.torrent");
    with_announce(&made, &torrent, &tracker.http_url());
    let mut seed = Ours::start(seed_command(&torrent, tmp.path(), &[]), "hybrid seed");
    let port = seed.wait_seeding(READY_LIMIT).port();
    // A client that knows only the v2 swarm finds us there, and so does a v1 one.
    wait_until_tracker_lists(&tracker, v2, port);
    wait_until_tracker_lists(&tracker, meta.info_hash, port);
}

/// The full v2 info-hash in hex.
fn v2_hex(meta: &Metainfo) -> String {
    let v2 = meta.info_hash_v2.expect("a hybrid has a v2 info-hash");
    v2.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn info_shows_both_info_hashes_and_the_v2_swarm() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = made_hybrid(tmp.path());
    let meta = Metainfo::from_bytes(&fs::read(&torrent).unwrap()).unwrap();
    let v2 = meta.v2_swarm().unwrap();
    let run = |json: bool| {
        let mut info = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
        info.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
            .arg("info")
            .args(json.then_some("--json"))
            .arg(&torrent);
        let out = run_within(info, Duration::from_secs(30));
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(false);
    for want in [
        format!("info-hash:   {}", meta.info_hash),
        format!("v2 hash:     {}", v2_hex(&meta)),
        format!("v2 swarm:    {v2}"),
        "format:      hybrid v1+v2 (joins both swarms".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} in\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    assert_eq!(json["info_hash"], meta.info_hash.to_hex());
    assert_eq!(json["info_hash_v2"], v2_hex(&meta));
    assert_eq!(json["v2_swarm"], v2.to_hex());
    assert_eq!(json["v2"]["info_hash"], v2_hex(&meta));
}

/// Sends a plaintext handshake for `hash` to `addr` and returns the answer's info-hash,
/// retrying until `limit` (the torrent may still be starting).
fn answered_hash(addr: SocketAddr, hash: InfoHash, limit: Duration) -> InfoHash {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = (|| -> std::io::Result<[u8; 68]> {
            let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
            let ours = Handshake::new(Reserved::none(), hash, PeerId(*b"-XX0000-hybrid-00001"));
            tcp.write_all(&ours.encode())?;
            let mut theirs = [0u8; 68];
            tcp.read_exact(&mut theirs)?;
            Ok(theirs)
        })();
        match attempt {
            Ok(bytes) => {
                return Handshake::parse(&bytes)
                    .expect("a valid handshake")
                    .info_hash
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no handshake for {hash} from {addr} within {limit:?}: {last}");
}

#[test]
fn serve_routes_a_hybrids_v2_swarm_to_it_and_shows_its_v2_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = made_hybrid(tmp.path());
    let meta = Metainfo::from_bytes(&fs::read(&torrent).unwrap()).unwrap();
    let v2 = meta.v2_swarm().unwrap();
    let daemon = Daemon::start(
        &tmp.path().join("dl"),
        &tmp.path().join("state"),
        &DaemonOpts::default(),
    );
    let id = daemon.add_torrent_file(&torrent);
    let detail = daemon.get_json(&format!("/api/torrents/{id}"));
    assert_eq!(detail["info_hash"], meta.info_hash.to_hex());
    assert_eq!(detail["info_hash_v2"], v2_hex(&meta), "{detail}");
    let peers = SocketAddr::from(([127, 0, 0, 1], daemon.peer_port));
    // The shared listener hands a peer of either swarm to the torrent, which answers
    // with the hash the peer named.
    assert_eq!(answered_hash(peers, v2, Duration::from_secs(30)), v2);
    assert_eq!(
        answered_hash(peers, meta.info_hash, Duration::from_secs(30)),
        meta.info_hash
    );
}

#[test]
fn a_peer_listed_only_in_the_v2_swarm_is_greeted_with_the_v2_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let made = made_hybrid(tmp.path());
    let meta = Metainfo::from_bytes(&fs::read(&made).unwrap()).unwrap();
    let v2 = meta.v2_swarm().unwrap();
    let tracker = Tracker::start(&[meta.info_hash, v2]);
    let torrent = tmp.path().join("tracked.torrent");
    with_announce(&made, &torrent, &tracker.http_url());
    // A peer that the tracker lists under the v2 hash alone, and the v1 swarm empty.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    http_announce(
        tracker.port(),
        &Announce {
            port,
            event: Some("started"),
            ..Announce::new(v2)
        },
    )
    .expect("announcing the v2 peer");

    let mut get = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    get.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--bind", "127.0.0.1", "--port", "0", "--no-dht"])
        // TCP only and plaintext: the listener below reads a plain handshake, and a uTP
        // dial could reach another test's UDP socket on the same port number.
        .args(["--encryption", "off", "--utp", "off", "-vv", "-o"])
        .arg(tmp.path().join("out"))
        .arg(&torrent);
    let leecher = Ours::start(get, "hybrid leecher");
    let deadline = Instant::now() + Duration::from_secs(60);
    let greeting = loop {
        if Instant::now() > deadline {
            let mut probe = Announce::new(v2);
            probe.peer_id = *b"-PROBE-0000000000000";
            probe.port = 2;
            probe.left = 1;
            panic!(
                "no dial within 60 s; the v2 swarm now: {:?}, listener port {port}, tracker pid alive: {}\n{}",
                http_announce(tracker.port(), &probe),
                Path::new(&format!("/proc/{}", tracker.pid())).exists(),
                leecher.report()
            );
        }
        match listener.accept() {
            Ok((mut tcp, _)) => {
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut theirs = [0u8; 68];
                if tcp.read_exact(&mut theirs).is_ok() {
                    break Handshake::parse(&theirs).expect("a plaintext handshake");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("accepting: {e}"),
        }
    };
    assert_eq!(
        greeting.info_hash, v2,
        "greeted in the swarm it was found in"
    );
}

#[test]
fn a_hybrid_is_found_on_the_dht_under_both_info_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let torrent = made_hybrid(tmp.path());
    let meta = Metainfo::from_bytes(&fs::read(&torrent).unwrap()).unwrap();
    let v2 = meta.v2_swarm().unwrap();
    let other = swarm();
    let hub_port = free_port();
    in_system(async move {
        // A libtorrent node (seeding another torrent) stores the announces; a Dht of
        // ours finds our seed there.
        let hub = dht_seeder(&other, hub_port, &[]);
        let bootstrap = hub.addr().to_string();
        let mut seed = Ours::start(
            seed_command(&torrent, tmp.path(), &["--dht-bootstrap", &bootstrap]),
            "hybrid seed",
        );
        let port = seed.wait_seeding(READY_LIMIT).port();
        let finder = start(config(&[hub.addr()]));
        let want = [loopback(port)];
        for hash in [v2, meta.info_hash] {
            if let Err(found) = search(&finder, hash, None, &want).await {
                panic!("{hash}: found {found:?}, not {want:?}\n{}", seed.report());
            }
        }
        drop(hub);
    });
}

#[test]
fn a_hybrid_downloads_from_a_v1_only_peer_and_from_libtorrent_at_once() {
    // The v1-only peer is the scripted honest seeder of tests/it/support: it knows the
    // torrent only by its v1 info-hash and pieces, and speaks no v2. (aria2 1.36 reads a
    // hybrid's info-hash wrongly and so is in another swarm; Transmission 3.00 cannot
    // read a hybrid at all.) libtorrent reads both parts.
    let tmp = tempfile::tempdir().unwrap();
    let (root, torrent) =
        album_hybrid(tmp.path(), [(1024 * KIB + 3, 11), (700 * KIB, 12)], "32KiB");
    let meta = Metainfo::from_bytes(&fs::read(&torrent).unwrap()).unwrap();
    let v1_only = HostilePeer::start(v1_view(&meta, tmp.path()), Act::Honest);
    let lt = LtSeeder::start(&torrent, tmp.path(), SeedOpts::direct());
    let out = tmp.path().join("out");
    let mut get = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    get.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--bind", "127.0.0.1", "--port", "0", "--no-dht"])
        // Slow enough that both peers are asked for pieces before the end.
        .args([
            "--download-limit",
            "512",
            "--encryption",
            "off",
            "--utp",
            "off",
        ])
        .args(["--peer", &v1_only.addr().to_string()])
        .args(["--peer", &lt.addr().to_string(), "-v", "-o"])
        .arg(&out)
        .arg(&torrent);
    let output = run_until(get, Duration::from_secs(120)).expect("get ends in time");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "get failed:\n{stderr}");
    for name in ["a.bin", "b.bin"] {
        assert_eq!(
            fs::read(out.join("album").join(name)).unwrap(),
            fs::read(root.join(name)).unwrap(),
            "{name} differs"
        );
    }
    let sent = v1_only
        .counters()
        .blocks_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent > 0, "the v1-only peer sent nothing:\n{stderr}");
    // libtorrent logs its total once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lt.uploaded() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lt.uploaded() > 0, "libtorrent sent nothing:\n{}", lt.log());
}

#[test]
fn serve_takes_v1_peers_of_a_hybrid_added_by_its_btmh_link_and_keeps_it_across_a_restart() {
    // Added by `urn:btmh` alone, the torrent is known by its v2 swarm; once its metadata
    // shows a hybrid, peers naming the v1 hash must reach it too, and its kept .torrent
    // must be taken back after a restart rather than fetched again.
    let tmp = tempfile::tempdir().unwrap();
    let torrent = made_hybrid(tmp.path());
    let meta = Metainfo::from_bytes(&fs::read(&torrent).unwrap()).unwrap();
    let mut seed = Ours::start(
        seed_command(&torrent, tmp.path(), &[]),
        "torrent-actors seed",
    );
    let seed_addr = seed.wait_seeding(READY_LIMIT);
    let link = format!("magnet:?xt=urn:btmh:1220{}&x.pe={seed_addr}", v2_hex(&meta));
    let (dl, state) = (tmp.path().join("dl"), tmp.path().join("state"));
    let mut daemon = Daemon::start(&dl, &state, &DaemonOpts::default());
    let added = daemon.post("/api/torrents", &serde_json::json!({ "magnet": link }));
    assert_eq!(added.status, 201, "{added:?}");
    let id = added.json()["id"].as_str().expect("an id").to_string();
    let seeding = |daemon: &Daemon| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let detail = daemon.get_json(&format!("/api/torrents/{id}"));
            if detail["state"] == "seeding" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not seeding within 60 s: {detail}\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    seeding(&daemon);
    let peers = SocketAddr::from(([127, 0, 0, 1], daemon.peer_port));
    assert_eq!(
        answered_hash(peers, meta.info_hash, Duration::from_secs(30)),
        meta.info_hash,
        "a v1 peer was not taken"
    );
    daemon.stop();
    let daemon = Daemon::start(&dl, &state, &DaemonOpts::default());
    seeding(&daemon);
    assert!(
        !daemon.log().contains("another info-hash"),
        "the kept .torrent was refused:\n{}",
        daemon.log()
    );
    drop(seed);
}
