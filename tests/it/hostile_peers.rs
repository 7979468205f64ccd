//! Hostile peers against a running download. Each test runs `torrent-actors get` against
//! an honest libtorrent seeder and one or more scripted peers of our own
//! (`support::HostilePeer`) that break the protocol in a chosen way. In every case the
//! download completes byte-identical, nothing panics by accident, and the log shows the
//! engine dealt with the peer the way it should (banned it, timed it out, or ignored it).

use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    assert_same_files, free_port, make_torrent, read_metainfo, run_until, run_within, Act,
    HostilePeer, Payload, SeededSwarm, Served,
};

const GET_LIMIT: Duration = Duration::from_secs(120);

/// 3 MiB and a bit in 32 KiB pieces: 97 pieces, so the bitfield has spare bits.
const LEN: u64 = 3 * 1024 * 1024 + 5000;
const PIECE_EXP: u32 = 15;

/// The shared seeded swarm, with this file's way of running `get` against it.
struct Swarm(SeededSwarm);

impl std::ops::Deref for Swarm {
    type Target = SeededSwarm;

    fn deref(&self) -> &SeededSwarm {
        &self.0
    }
}

/// A payload of `LEN` bytes, its torrent and an honest libtorrent seeder capped at
/// `seed_rate` bytes a second.
fn swarm(seed_rate: u64) -> Swarm {
    Swarm(SeededSwarm::start("file.bin", LEN, PIECE_EXP, seed_rate))
}

impl Swarm {
    /// `get -vv` dialing the hostile peers first, then the seeder.
    fn get(&self, hostile: &[&HostilePeer], extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
        cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
            .args([
                "get",
                "-vv",
                "--no-dht",
                "--peer-timeout",
                "60",
                "--request-timeout",
                "2",
                "--handshake-timeout",
                "2",
            ])
            .args(extra);
        if !extra.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        for h in hostile {
            cmd.arg("--peer").arg(h.addr().to_string());
        }
        cmd.arg("--peer")
            .arg(self.seeder.addr().to_string())
            .arg("-o")
            .arg(&self.out)
            .arg(&self.torrent);
        cmd
    }

    /// Runs `cmd` and checks the download completed, byte-identical, without a panic
    /// nobody asked for. Returns stderr.
    fn complete(&self, cmd: Command, panic_expected: bool) -> String {
        let output: Output = run_within(cmd, GET_LIMIT);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "get failed ({}):\n{stderr}",
            output.status
        );
        assert_same_files(&self.payload.dir, &self.out, &self.payload.files);
        if !panic_expected {
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
        stderr
    }
}

/// The log lines that name `addr`.
fn lines_about<'a>(stderr: &'a str, addr: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(addr)).collect()
}

/// Asserts `peer` played its part and was banned for a reason containing `why`.
fn assert_banned(stderr: &str, peer: &HostilePeer, why: &str) {
    let c = peer.counters();
    assert!(
        c.misbehaviours.load(Ordering::Relaxed) > 0,
        "{why}: the hostile peer never got to misbehave"
    );
    let addr = peer.addr().to_string();
    let lines = lines_about(stderr, &addr);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("misbehaved, banned") && l.contains(why)),
        "{addr} not banned for {why:?}; its lines:\n{}",
        lines.join("\n")
    );
    // Loopback peers are banned by address and port: never dialed again.
    assert_eq!(
        c.connections.load(Ordering::Relaxed),
        1,
        "{addr} was dialed again after its ban"
    );
}

#[test]
fn peers_that_break_the_framing_or_lie_about_pieces_are_banned_and_the_download_completes() {
    let s = swarm(1024 * 1024);
    let cases = [
        (Act::OversizedLength, "exceeds the maximum"),
        (Act::WrongFixedSize, "must have length"),
        (Act::BitfieldWrongLength, "bitfield"),
        (Act::BitfieldSpareBits, "bitfield"),
        (Act::HavePastEnd, "past the end"),
        (Act::UnaskedHashes, "hashes for a range never asked for"),
        (Act::HashRequestOfThree, "must be a power of two"),
    ];
    let peers: Vec<HostilePeer> = cases
        .iter()
        .map(|(act, _)| HostilePeer::start(s.served.clone(), *act))
        .collect();
    let garbage = HostilePeer::start(s.served.clone(), Act::GarbageAfterHandshake);
    let mut all: Vec<&HostilePeer> = peers.iter().collect();
    all.push(&garbage);
    let stderr = s.complete(s.get(&all, &[]), false);
    for ((_, why), peer) in cases.iter().zip(&peers) {
        assert_banned(&stderr, peer, why);
    }
    // Random bytes break the protocol one way or another; which way is up to chance.
    assert_banned(&stderr, &garbage, "");
}

#[test]
fn blocks_of_the_wrong_size_and_choke_floods_get_a_peer_banned() {
    // A slow seeder: the run outlasts both misbehaviours even on a loaded machine.
    let s = swarm(512 * 1024);
    let wrong_size = HostilePeer::start(s.served.clone(), Act::WrongSizeBlocks);
    let flood = HostilePeer::start(s.served.clone(), Act::ChokeFlood);
    let stderr = s.complete(s.get(&[&wrong_size, &flood], &[]), false);
    assert_banned(&stderr, &wrong_size, "were asked for");
    assert_banned(&stderr, &flood, "choke flood");
}

#[test]
fn a_peer_sending_blocks_nobody_asked_for_is_banned_past_the_limit() {
    // A slow seeder, so the hostile peer serves most blocks and keeps adding strays.
    let s = swarm(256 * 1024);
    let strays = HostilePeer::start(s.served.clone(), Act::UnrequestedBlocks);
    let stderr = s.complete(s.get(&[&strays], &[]), false);
    assert_banned(&stderr, &strays, "never asked for");
    assert!(strays.counters().misbehaviours.load(Ordering::Relaxed) > 64);
}

#[test]
fn wrong_info_hash_silence_and_a_connection_to_ourselves_cost_nothing() {
    // Slow enough (about 12 s; libtorrent may burst above its limit at first) that the
    // silent peer's 2 s handshake timeout fires before the download ends.
    let s = swarm(256 * 1024);
    let wrong = HostilePeer::start(s.served.clone(), Act::WrongInfoHash);
    let silent = HostilePeer::start(s.served.clone(), Act::Silent);
    let port = free_port().to_string();
    let ourselves = format!("127.0.0.1:{port}");
    let stderr = s.complete(
        s.get(&[&wrong, &silent], &["--port", &port, "--peer", &ourselves]),
        false,
    );
    assert!(wrong.counters().misbehaviours.load(Ordering::Relaxed) > 0);
    assert!(silent.counters().connections.load(Ordering::Relaxed) > 0);
    let silent_lines = lines_about(&stderr, &silent.addr().to_string());
    assert!(
        silent_lines
            .iter()
            .any(|l| l.contains("timed out while waiting for the handshake")),
        "the silent peer's handshake never timed out:\n{}",
        silent_lines.join("\n")
    );
    assert!(
        stderr.contains("connection to ourselves"),
        "our own connection was not recognised:\n{stderr}"
    );
    let wrong_lines = lines_about(&stderr, &wrong.addr().to_string());
    assert!(
        wrong_lines.iter().any(|l| l.contains("another torrent")),
        "the wrong info-hash went unnoticed:\n{}",
        wrong_lines.join("\n")
    );
}

#[test]
fn stalled_and_trickling_peers_time_out_and_their_blocks_go_to_the_seeder() {
    // Slow enough (about 12 s; libtorrent may burst above its limit at first) that the
    // download outlasts the 2 s request timeout by far.
    let s = swarm(256 * 1024);
    let stalls = HostilePeer::start(s.served.clone(), Act::StopsMidPiece);
    let trickles = HostilePeer::start(s.served.clone(), Act::Trickle);
    let stderr = s.complete(s.get(&[&stalls, &trickles], &[]), false);
    for peer in [&stalls, &trickles] {
        assert!(peer.counters().misbehaviours.load(Ordering::Relaxed) > 0);
        let lines = lines_about(&stderr, &peer.addr().to_string());
        assert!(
            lines
                .iter()
                .any(|l| l.contains("no data for outstanding requests")),
            "{} was never timed out:\n{}",
            peer.addr(),
            lines.join("\n")
        );
    }
}

#[test]
fn corrupt_data_is_refetched_and_only_the_liar_is_banned() {
    let s = swarm(1024 * 1024);
    let liar = HostilePeer::start(s.served.clone(), Act::CorruptData);
    let stderr = s.complete(s.get(&[&liar], &[]), false);
    assert!(liar.counters().blocks_sent.load(Ordering::Relaxed) > 0);
    let liar_lines = lines_about(&stderr, &liar.addr().to_string());
    assert!(
        liar_lines
            .iter()
            .any(|l| l.contains("banned for sending bad data")),
        "the liar was not banned:\n{}",
        liar_lines.join("\n")
    );
    assert!(stderr.contains("piece failed its hash"), "{stderr}");
    let seeder_lines = lines_about(&stderr, &s.seeder.addr().to_string());
    assert!(
        !seeder_lines
            .iter()
            .any(|l| l.contains("bad data") || l.contains("banned")),
        "the honest seeder was blamed:\n{}",
        seeder_lines.join("\n")
    );
    assert!(s.seeder.uploaded() > 0, "the seeder sent nothing");
}

#[test]
fn smart_ban_blames_the_liar_alone_in_pieces_it_shared_with_an_honest_peer() {
    // Pieces of 16 blocks, two fast scripted peers and no other source: the two share
    // pieces, so failed pieces have blocks from both and only smart ban can tell which
    // sender spoiled them. Whether a shared piece fails before the liar is banned for
    // pieces it sent alone is up to timing, so the download is repeated (at most eight
    // times) until one was judged block by block; every run in which the liar's data
    // reached a piece must ban the liar alone. (On a busy machine the honest peer can
    // deliver all 8 MiB before the liar's first block lands: such a run proves nothing.)
    let tmp = tempfile::tempdir().expect("temp folder");
    let payload = Payload::single(&tmp.path().join("seed"), "file.bin", 8 * 1024 * 1024);
    let torrent = tmp.path().join("t.torrent");
    make_torrent(&payload.root(), &torrent, 18, &[]);
    let served = Served {
        info_hash: read_metainfo(&torrent).info_hash,
        content: Arc::new(std::fs::read(payload.dir.join("file.bin")).expect("payload")),
        piece_len: 1 << 18,
    };
    let mut judged_by_block = false;
    let mut liar_runs = 0;
    for run in 0..8 {
        let honest = HostilePeer::start(served.clone(), Act::Honest);
        let liar = HostilePeer::start(served.clone(), Act::CorruptData);
        let out = tmp.path().join(format!("out{run}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
        cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
            .args(["get", "-vv", "--no-dht", "--port", "0", "--peer"])
            .arg(liar.addr().to_string())
            .arg("--peer")
            .arg(honest.addr().to_string())
            .arg("-o")
            .arg(&out)
            .arg(&torrent);
        let output = run_until(cmd, GET_LIMIT).expect("get ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "get failed:\n{stderr}");
        assert_same_files(&payload.dir, &out, &payload.files);
        let liar_lines = lines_about(&stderr, &liar.addr().to_string());
        if !stderr.contains("piece failed its hash") {
            continue;
        }
        liar_runs += 1;
        assert!(
            liar_lines
                .iter()
                .any(|l| l.contains("banned for sending bad data")),
            "the liar was not banned:\n{}",
            liar_lines.join("\n")
        );
        let honest_lines = lines_about(&stderr, &honest.addr().to_string());
        assert!(
            !honest_lines
                .iter()
                .any(|l| l.contains("bad data") || l.contains("banned")),
            "the honest peer was blamed:\n{}",
            honest_lines.join("\n")
        );
        // A verdict by block comparison names how many blocks were bad; blame for a
        // piece the liar sent alone says 0.
        if liar_lines
            .iter()
            .any(|l| l.contains("failed its hash") && !l.contains("bad_blocks: 0"))
        {
            judged_by_block = true;
            break;
        }
    }
    assert!(
        judged_by_block,
        "in {liar_runs} downloads the liar took part in, no piece shared with the honest peer \
         was judged block by block"
    );
}

#[test]
fn a_peer_actor_that_panics_costs_only_its_own_connection() {
    let s = swarm(1024 * 1024);
    let trigger = HostilePeer::start(s.served.clone(), Act::UnknownMessage);
    let mut cmd = s.get(&[&trigger], &[]);
    cmd.env(
        torrent_actors::fault::FAULT_ENV,
        "peer-panic-on-unknown-message",
    );
    let stderr = s.complete(cmd, true);
    assert!(
        stderr.contains("fault injected"),
        "the injected panic never happened:\n{stderr}"
    );
    let lines = lines_about(&stderr, &trigger.addr().to_string());
    assert!(
        lines.iter().any(|l| l.contains("peer actor failed")),
        "the Coordinator never heard the panicked peer leave:\n{}",
        lines.join("\n")
    );
}

#[test]
fn a_second_bitfield_gets_a_peer_banned_but_one_that_only_adds_pieces_is_taken_as_haves() {
    // A slow seeder, so the growing peer has time to announce its second half.
    let s = swarm(512 * 1024);
    let twice = HostilePeer::start(s.served.clone(), Act::TwoBitfields);
    let growing = HostilePeer::start(s.served.clone(), Act::GrowingBitfield);
    let stderr = s.complete(s.get(&[&twice, &growing], &[]), false);
    assert_banned(&stderr, &twice, "bitfield");
    let lines = lines_about(&stderr, &growing.addr().to_string());
    assert!(
        !lines.iter().any(|l| l.contains("misbehaved")),
        "a bitfield that only adds pieces got the peer banned:\n{}",
        lines.join("\n")
    );
    assert!(
        growing
            .counters()
            .late_piece_requests
            .load(Ordering::Relaxed)
            > 0,
        "the pieces of the second bitfield were never asked for:\n{}",
        lines.join("\n")
    );
}

/// The Coordinator's mailbox under a flood of `have`s from several peers at once: each
/// peer's reach it coalesced, so it stays near what a few honest peers cause.
const COORDINATOR_MAILBOX_BOUND: i64 = 64;

/// Flooding peers in the `have` flood test.
const HAVE_FLOODERS: usize = 6;

/// `have` batches the Coordinator may handle per flooding peer: each is banned after
/// `DUPLICATE_HAVES_LIMIT` repeats, long before ten batches' worth of time.
const HAVE_BATCHES_PER_FLOODER: u64 = 20;

#[test]
fn a_flood_of_haves_is_coalesced_and_the_flooding_peers_are_banned() {
    let s = swarm(512 * 1024);
    let floods: Vec<HostilePeer> = (0..HAVE_FLOODERS)
        .map(|_| HostilePeer::start(s.served.clone(), Act::HaveFlood))
        .collect();
    let stats = s.tmp.path().join("stats.jsonl");
    let mut cmd = s.get(&floods.iter().collect::<Vec<_>>(), &[]);
    cmd.arg("--stats-file").arg(&stats);
    let stderr = s.complete(cmd, false);
    let text = std::fs::read_to_string(&stats).expect("stats file");
    let last: serde_json::Value = text
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .expect("a stats record");
    let coordinator = last["actors"]["actors"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["actor"] == "Coordinator"))
        .unwrap_or_else(|| panic!("no Coordinator in {last}"));
    let peak = coordinator["mailbox_peak"].as_i64().unwrap_or(i64::MAX);
    let have_messages: u64 = coordinator["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| {
                    m["message"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("PeerHave"))
                })
                .filter_map(|m| m["handled"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    eprintln!(
        "under the have flood the Coordinator's mailbox peaked at {peak} and it handled \
         {have_messages} have messages"
    );
    assert!(
        have_messages <= HAVE_BATCHES_PER_FLOODER * HAVE_FLOODERS as u64,
        "the Coordinator handled {have_messages} have messages: {coordinator}"
    );
    assert!(
        peak <= COORDINATOR_MAILBOX_BOUND,
        "Coordinator mailbox peaked at {peak}: {coordinator}"
    );
    for flood in &floods {
        assert_banned(&stderr, flood, "have");
    }
}

/// Connections held open against one listening engine: most never send a byte, some
/// send their handshake one byte at a time, and some complete it and then say nothing.
struct Flood {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(target: std::net::SocketAddr, info_hash: torrent_actors::InfoHash) -> Flood {
        use std::io::{Read, Write};
        use std::net::TcpStream;
        use torrent_actors::wire::{Handshake, Reserved, HANDSHAKE_LEN};
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handshake = |n: u32| {
            let mut id = *b"-FL0001-000000000000";
            id[8..12].copy_from_slice(&n.to_be_bytes());
            Handshake::new(Reserved::none(), info_hash, torrent_actors::PeerId(id)).encode()
        };
        let mut threads = Vec::new();
        // 700 silent, 200 slow, 100 complete: spread over a few threads so they run side
        // by side, each holding its sockets until the test drops the flood.
        for (kind, count) in [("silent", 700u32), ("slow", 200), ("idle", 100)] {
            let stop = stop.clone();
            let hs: Vec<Vec<u8>> = (0..count).map(|n| handshake(n).to_vec()).collect();
            threads.push(std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                let mut open: Vec<(TcpStream, usize)> = Vec::new();
                for _ in 0..count {
                    if let Ok(s) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                        let _ = s.set_write_timeout(Some(Duration::from_millis(50)));
                        open.push((s, 0));
                    }
                }
                if kind == "idle" {
                    for (i, (s, _)) in open.iter_mut().enumerate() {
                        let _ = s.write_all(&hs[i]);
                        let mut theirs = [0u8; HANDSHAKE_LEN];
                        let _ = s.read_exact(&mut theirs);
                    }
                }
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    if kind == "slow" {
                        for (i, (s, sent)) in open.iter_mut().enumerate() {
                            if *sent < HANDSHAKE_LEN
                                && s.write_all(&hs[i][*sent..*sent + 1]).is_ok()
                            {
                                *sent += 1;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }));
        }
        Flood { stop, threads }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Open files and resident memory of a process, or `None` once it is gone.
fn fds_and_rss(pid: u32) -> Option<(usize, u64)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some((fds, rss_kib * 1024))
}

/// The bound on open files under a flood: every peer slot, every incoming handshake in
/// progress, and a fixed allowance for the listener, the data file, the runtime's and
/// the standard streams.
const FLOOD_FD_BOUND: usize =
    50 + torrent_actors::engine::coordinator::MAX_INCOMING_HANDSHAKES + 64;

/// A generous bound on resident memory under the flood: far above the engine's budgets
/// for a 3 MiB torrent, far below what a thousand connections would cost if each kept
/// buffers.
const FLOOD_RSS_BOUND: u64 = 160 << 20;

#[test]
fn a_thousand_silent_or_slow_connections_are_capped_and_the_download_completes() {
    use crate::support::ChildGuard;
    let s = swarm(1024 * 1024);
    let port = free_port();
    let log = s.tmp.path().join("get.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "-v", "--no-dht", "--max-peers", "50", "--port"])
        .arg(port.to_string())
        .arg("--peer")
        .arg(s.seeder.addr().to_string())
        .arg("-o")
        .arg(&s.out)
        .arg(&s.torrent)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut child = ChildGuard::spawn(cmd, "get under a flood");
    let target: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(target).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let flood = Flood::start(target, s.served.info_hash);
    let (mut max_fds, mut max_rss) = (0, 0);
    let status = loop {
        if let Some(status) = child.try_status() {
            break status;
        }
        if let Some((fds, rss)) = fds_and_rss(child.pid()) {
            max_fds = max_fds.max(fds);
            max_rss = max_rss.max(rss);
        }
        if std::time::Instant::now() > deadline + GET_LIMIT {
            panic!("get did not finish under the flood");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(flood);
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "get failed ({status}):\n{stderr}");
    assert_same_files(&s.payload.dir, &s.out, &s.payload.files);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("connection limit reached, refusing incoming connections"),
        "no word of the connection cap:\n{stderr}"
    );
    eprintln!(
        "under the flood: at most {max_fds} open files, {} MiB resident",
        max_rss >> 20
    );
    assert!(max_fds > 0, "the engine was never sampled");
    assert!(
        max_fds <= FLOOD_FD_BOUND,
        "{max_fds} open files, bound {FLOOD_FD_BOUND}"
    );
    assert!(max_rss <= FLOOD_RSS_BOUND, "{} MiB resident", max_rss >> 20);
}
