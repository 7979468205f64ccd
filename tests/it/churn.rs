//! Churn: peers that come and go while blocks are handed out to them (issue 16, item 1).
//!
//! The Coordinator hands blocks to a Peer in answer to its `PickBlocks`. A Peer whose
//! connection ends while that answer is queued or on its way never learns which blocks
//! were its own, so unless the Coordinator takes them back itself they stay assigned to
//! nobody: their pieces are never finished, each holds its share of the in-progress
//! budget, and with 4 MiB pieces and `--max-in-progress-mib 8` two such pieces stall the
//! download for good. Here scripted peers of our own ([`FlakyPeer`]) dial the downloader
//! again and again, announce every piece, unchoke, and close at the worst moments (right
//! after one block, as soon as a request arrives, right after the unchoke), beside an
//! honest libtorrent seeder slowed so that the download lasts long enough to see many
//! such connections. The download must complete byte-identical within a bounded time.
//!
//! On the engine before leases, only the last test stalls, every time it was run:
//! actix drops a queued `PickBlocks` unhandled once its Peer is gone, so the leak needs
//! the Peer to go while the Coordinator is inside the handler, a window the
//! `slow-coordinator` fault widens to 10 ms. The same churn with peers that close before
//! their unchoke (so that nothing is picked for them) completed, so the stall is the
//! stranded blocks', not the busy Coordinator's.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use torrent_actors::wire::{Handshake, Reserved, HANDSHAKE_LEN};
use torrent_actors::PeerId;

use crate::support::{assert_same_files, free_port, run_until, SeededSwarm, Served};

/// 32 MiB in 4 MiB pieces: eight pieces, of which the budget below holds two at a time.
const LEN: u64 = 32 * 1024 * 1024;
const PIECE_EXP: u32 = 22;
/// `--max-in-progress-mib`: room for two pieces in progress.
const IN_PROGRESS_MIB: &str = "8";
/// The honest seeder's upload cap: about ten seconds for the whole torrent.
const SEED_RATE: u64 = 3 * 1024 * 1024;
/// A slower cap, for about thirty seconds.
const SLOW_SEED_RATE: u64 = 1024 * 1024;
/// Far more than the download takes with every block accounted for; a download that has
/// not finished by then has stalled.
const GET_LIMIT: Duration = Duration::from_secs(150);
/// Every scripted peer stops by then, whatever happens.
const PEER_LIMIT: Duration = Duration::from_secs(300);
/// How long the flaky peers churn; then they stop, and the download must still finish.
/// A Coordinator merely slowed by the churn catches up once it ends; pieces stranded by
/// blocks assigned to Peers long gone stay stranded, so a download that does not finish
/// within [`GET_LIMIT`] has lost blocks, not time.
const CHURN_FOR: Duration = Duration::from_secs(60);

/// When a [`FlakyPeer`] closes a connection, once it has sent its bitfield and waited
/// for the downloader's `interested`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flake {
    /// Unchokes, answers the first this many requests with their blocks, and closes.
    AfterBlocks(u32),
    /// Unchokes and closes as soon as a request arrives, answering nothing.
    OnRequest,
    /// Closes right after its `unchoke`.
    AfterUnchoke,
}

/// What a [`FlakyPeer`] did, so a test can tell the script was played.
#[derive(Debug, Default)]
struct Counters {
    /// Connections that got as far as our unchoke.
    unchoked: AtomicU64,
    /// Requests received.
    requests: AtomicU64,
    /// Blocks sent.
    blocks: AtomicU64,
}

/// How hard a [`FlakyPeer`] churns.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Threads dialing the downloader at once, each again as soon as its connection ends.
    dialers: usize,
    /// How long each dialer waits between its connections.
    pause: Duration,
    /// The longest delay, picked at random for each connection, before the close.
    jitter: Duration,
}

impl Pace {
    /// Two dialers, 20 ms apart, closing within 2 ms.
    const BRISK: Pace = Pace {
        dialers: 2,
        pause: Duration::from_millis(20),
        jitter: Duration::from_millis(2),
    };
}

/// A seeder of our own that has every piece and closes each connection at the moment
/// its [`Flake`] says. It listens (for the downloader's dials) and dials the downloader
/// from `dialers` threads at once, again as soon as each connection ends. Dropping it
/// stops every thread.
struct FlakyPeer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl FlakyPeer {
    fn start(content: Served, flake: Flake, downloader: SocketAddr, pace: Pace) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the flaky peer");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the flaky peer's address");
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + PEER_LIMIT;
        let mut threads = Vec::new();
        {
            let (content, counters, stop) = (content.clone(), counters.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let mut s = Session::new(
                                stream,
                                &content,
                                flake,
                                pace.jitter,
                                &counters,
                                &stop,
                            );
                            let _ = s.run();
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            }));
        }
        for _ in 0..pace.dialers {
            let (content, counters, stop) = (content.clone(), counters.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match TcpStream::connect_timeout(&downloader, Duration::from_secs(2)) {
                        Ok(stream) => {
                            let mut s = Session::new(
                                stream,
                                &content,
                                flake,
                                pace.jitter,
                                &counters,
                                &stop,
                            );
                            let _ = s.run();
                            // A breath between connections, so the churn does not turn
                            // into a connection flood.
                            thread::sleep(pace.pause);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(100)),
                    }
                }
            }));
        }
        FlakyPeer {
            addr,
            counters,
            stop,
            threads,
        }
    }
}

impl Drop for FlakyPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One connection of a [`FlakyPeer`].
struct Session<'a> {
    stream: TcpStream,
    content: &'a Served,
    flake: Flake,
    /// The longest delay before the close.
    jitter: Duration,
    counters: &'a Counters,
    stop: &'a AtomicBool,
}

impl<'a> Session<'a> {
    fn new(
        stream: TcpStream,
        content: &'a Served,
        flake: Flake,
        jitter: Duration,
        counters: &'a Counters,
        stop: &'a AtomicBool,
    ) -> Self {
        Session {
            stream,
            content,
            flake,
            jitter,
            counters,
            stop,
        }
    }

    /// Reads exactly `buf.len()` bytes within 30 s, unless stopped.
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = 0;
        while got < buf.len() {
            if self.stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                return Err(ErrorKind::TimedOut.into());
            }
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next message: its id (`None` for a keep-alive) and payload.
    fn read_frame(&mut self) -> std::io::Result<(Option<u8>, Vec<u8>)> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            return Ok((None, Vec::new()));
        }
        if len > 1 << 20 {
            return Err(ErrorKind::InvalidData.into());
        }
        let mut body = vec![0u8; len];
        self.read_exact(&mut body)?;
        let id = body.remove(0);
        Ok((Some(id), body))
    }

    fn send(&mut self, id: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(5 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
        frame.push(id);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame)
    }

    /// Closes the connection: our side first (a FIN after everything we sent), then
    /// whatever the downloader still sends is read off for a moment, so the close is a
    /// clean one rather than a reset that could throw away our last block.
    fn close(&mut self) {
        // Late by a random delay up to the jitter, so that over many connections the
        // close meets the downloader at every point of its handling of our last message.
        let jitter = self.jitter.as_micros().max(1) as u64;
        thread::sleep(Duration::from_micros(rand::random::<u64>() % jitter));
        let _ = self.stream.shutdown(Shutdown::Write);
        let until = Instant::now() + Duration::from_millis(200);
        let mut sink = [0u8; 16 * 1024];
        while Instant::now() < until {
            match self.stream.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    }

    fn run(&mut self) -> std::io::Result<()> {
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))?;
        self.stream
            .set_write_timeout(Some(Duration::from_secs(10)))?;
        self.stream.set_nodelay(true)?;
        let mut id = *b"-FL0001-000000000000";
        id[8..].copy_from_slice(&rand::random::<[u8; 12]>());
        let ours = Handshake::new(Reserved::none(), self.content.info_hash, PeerId(id));
        self.stream.write_all(&ours.encode())?;
        let mut theirs = [0u8; HANDSHAKE_LEN];
        self.read_exact(&mut theirs)?;
        let theirs = Handshake::parse(&theirs).map_err(|_| ErrorKind::InvalidData)?;
        if theirs.info_hash != self.content.info_hash {
            return Ok(());
        }
        let bits = self.content.full_bitfield();
        self.send(5, &bits)?;
        // The downloader asks for nothing until it is interested and unchoked.
        while self.read_frame()?.0 != Some(2) {}
        self.send(1, &[])?;
        self.counters.unchoked.fetch_add(1, Ordering::Relaxed);
        if self.flake == Flake::AfterUnchoke {
            self.close();
            return Ok(());
        }
        let mut answered = 0;
        loop {
            let (id, payload) = self.read_frame()?;
            if id != Some(6) || payload.len() != 12 {
                continue;
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            if let Flake::AfterBlocks(n) = self.flake {
                let word = |i: usize| {
                    u32::from_be_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
                };
                let (piece, offset, length) = (word(0), word(4), word(8));
                if let Some(data) = self
                    .content
                    .block(piece, offset, length)
                    .map(<[u8]>::to_vec)
                {
                    let mut answer = Vec::with_capacity(8 + data.len());
                    answer.extend_from_slice(&piece.to_be_bytes());
                    answer.extend_from_slice(&offset.to_be_bytes());
                    answer.extend_from_slice(&data);
                    self.send(7, &answer)?;
                    self.counters.blocks.fetch_add(1, Ordering::Relaxed);
                }
                answered += 1;
                if answered < n {
                    continue;
                }
            }
            self.close();
            return Ok(());
        }
    }
}

/// A 32 MiB torrent in 4 MiB pieces, its content, and an honest libtorrent seeder of it
/// capped at `seed_rate` bytes a second.
fn swarm(seed_rate: u64) -> SeededSwarm {
    SeededSwarm::start("churn.bin", LEN, PIECE_EXP, seed_rate)
}

/// `get` on `swarm`'s torrent listening on `port`, dialing the seeder and `peers`, with
/// the in-progress budget of two pieces.
fn get(swarm: &SeededSwarm, port: u16, peers: &[SocketAddr]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "-v", "--no-dht", "--bind", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--max-in-progress-mib", IN_PROGRESS_MIB]);
    for p in peers {
        cmd.arg("--peer").arg(p.to_string());
    }
    cmd.arg("--peer")
        .arg(swarm.seeder.addr().to_string())
        .arg("-o")
        .arg(&swarm.out)
        .arg(&swarm.torrent);
    cmd
}

/// Runs the download from a seeder capped at `seed_rate` beside flaky peers of each
/// kind in `flakes`, churning at `pace`, with the faults named in `faults` injected into
/// the downloader (see `torrent_actors::fault`), and checks it completes byte-identical
/// within [`GET_LIMIT`]. Returns each flaky peer's counters for the caller to check.
/// When the download stalls and `CHURN_LOG` names a file, its whole log is written there.
fn download_through_churn(
    seed_rate: u64,
    flakes: &[Flake],
    pace: Pace,
    faults: &str,
) -> Vec<Arc<Counters>> {
    let swarm = swarm(seed_rate);
    let port = free_port();
    let downloader = SocketAddr::from(([127, 0, 0, 1], port));
    let peers: Vec<FlakyPeer> = flakes
        .iter()
        .map(|f| FlakyPeer::start(swarm.served.clone(), *f, downloader, pace))
        .collect();
    let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
    let counters: Vec<Arc<Counters>> = peers.iter().map(|p| p.counters.clone()).collect();
    // The flaky peers stop after CHURN_FOR, or when the download ends if sooner.
    let (done, ended) = std::sync::mpsc::channel::<()>();
    let stopper = thread::spawn(move || {
        let _ = ended.recv_timeout(CHURN_FOR);
        drop(peers);
    });
    let started = Instant::now();
    let mut cmd = get(&swarm, port, &addrs);
    cmd.env(torrent_actors::fault::FAULT_ENV, faults);
    let result = run_until(cmd, GET_LIMIT);
    let took = started.elapsed();
    let _ = done.send(());
    let _ = stopper.join();
    let report = |c: &[Arc<Counters>]| {
        c.iter()
            .zip(flakes)
            .map(|(c, f)| {
                format!(
                    "{f:?}: {} connections unchoked, {} requests, {} blocks",
                    c.unchoked.load(Ordering::Relaxed),
                    c.requests.load(Ordering::Relaxed),
                    c.blocks.load(Ordering::Relaxed)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let output = result.unwrap_or_else(|o| {
        let stderr = String::from_utf8_lossy(&o.stderr);
        // The whole log of a stalled run, for whoever looks into it.
        if let Ok(path) = std::env::var("CHURN_LOG") {
            let _ = std::fs::write(path, stderr.as_bytes());
        }
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        panic!(
            "the download stalled: not done in {GET_LIMIT:?} ({}); last log lines:\n{}",
            report(&counters),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "get failed ({}):\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_same_files(&swarm.payload.dir, &swarm.out, &swarm.payload.files);
    eprintln!("done in {took:?} beside {}", report(&counters));
    counters
}

/// Issue 16's churn test: a peer that has every piece, answers one request with one
/// block and closes, and dials again at once, beside a slow honest seeder; 4 MiB pieces
/// and room for two in progress.
#[test]
fn a_peer_closing_after_every_block_does_not_strand_pieces() {
    let counters = download_through_churn(SEED_RATE, &[Flake::AfterBlocks(1)], Pace::BRISK, "");
    let c = &counters[0];
    assert!(
        c.blocks.load(Ordering::Relaxed) >= 5,
        "the flaky peer hardly played its part: {c:?}"
    );
}

/// The same with more churn: three flaky peers, one closing after a block, one as soon
/// as a request arrives, one right after its unchoke, each dialing from three threads.
#[test]
fn peers_closing_on_unchoke_on_request_or_after_a_block_do_not_strand_pieces() {
    let counters = download_through_churn(
        SEED_RATE,
        &[Flake::AfterBlocks(1), Flake::OnRequest, Flake::AfterUnchoke],
        Pace {
            dialers: 3,
            ..Pace::BRISK
        },
        "",
    );
    for c in &counters {
        assert!(
            c.unchoked.load(Ordering::Relaxed) >= 5,
            "a flaky peer hardly played its part: {c:?}"
        );
    }
}

/// Closing after four blocks: with the Peer's queue of 16, the fourth block is the one
/// after which it asks the Coordinator for more, so the close meets that `PickBlocks` in
/// flight. Such peers (and some closing one block sooner or later), and two closing right
/// after their unchoke, each dialing from two threads.
#[test]
fn peers_closing_while_their_next_blocks_are_being_picked_do_not_strand_pieces() {
    let flakes = [
        Flake::AfterBlocks(4),
        Flake::AfterUnchoke,
        Flake::AfterBlocks(4),
        Flake::AfterUnchoke,
        Flake::AfterBlocks(5),
        Flake::AfterBlocks(3),
    ];
    // Paced, so that the honest seeder still brings most of the torrent and the
    // download lasts long enough for many such closes.
    let pace = Pace {
        pause: Duration::from_millis(250),
        ..Pace::BRISK
    };
    let counters = download_through_churn(SEED_RATE, &flakes, pace, "");
    for c in &counters {
        assert!(
            c.unchoked.load(Ordering::Relaxed) >= 5,
            "a flaky peer hardly played its part: {c:?}"
        );
    }
}

/// With the Coordinator busy (every handler held 10 ms by the `slow-coordinator` fault),
/// a `PickBlocks` is handled long enough for its Peer to be gone before the answer: peers
/// that close right after their unchoke (when the Peer has just asked for blocks) or
/// after four blocks (when it asks for more), within 30 ms at random, so that many
/// closes fall while the Coordinator is picking. (Without the fault, actix drops a
/// queued `PickBlocks` whose Peer is gone unhandled, and the window is too narrow to hit
/// in the runs above.) On the engine before leases this stalls: the picks answered to
/// Peers already gone strand both pieces the budget allows in progress.
#[test]
fn peers_leaving_while_a_busy_coordinator_picks_for_them_do_not_strand_pieces() {
    // The churn keeps the slowed Coordinator busy, so the seeder's own asks wait and
    // leave free blocks for the flaky peers. The Coordinator catches up once the churn
    // stops after CHURN_FOR, and the slower seeder keeps the download going until then:
    // a download still unfinished long after has pieces stranded, not merely delayed.
    let pace = Pace {
        dialers: 3,
        pause: Duration::from_millis(20),
        jitter: Duration::from_millis(30),
    };
    let counters = download_through_churn(
        SLOW_SEED_RATE,
        &[
            Flake::AfterUnchoke,
            Flake::AfterBlocks(4),
            Flake::AfterUnchoke,
        ],
        pace,
        "slow-coordinator",
    );
    for c in &counters {
        assert!(
            c.unchoked.load(Ordering::Relaxed) >= 5,
            "a flaky peer hardly played its part: {c:?}"
        );
    }
}
