//! `torrent-actors seed` and `get --seed` against clients nobody on the project wrote, all
//! on 127.0.0.1: libtorrent and aria2c download from our seed and must end with files
//! byte-identical to the originals; three of our own leechers share one seed limited to a
//! single upload slot, and must trade pieces among themselves to finish; a hand-written
//! hostile peer sends requests out of range, oversized and while choked, and must get
//! none of those blocks while an honest libtorrent leecher still completes; a stopped
//! seed exits 0 and reports what it uploaded, and that figure is checked against what a
//! peer received. Tests that show an engine bug are ignored with the exact symptom.
//! Payloads are a few MiB so the file runs in well under a minute; speed is never
//! asserted, only that each step happens within a generous bound.

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tempfile::TempDir;
use tokio_util::codec::Decoder;
use torrent_actors::wire::{BlockRequest, Handshake, Message, MessageCodec, Reserved};
use torrent_actors::{InfoHash, PeerId};

use crate::support::{
    assert_same_files, free_port, http_announce, make_torrent, read_metainfo, run_until,
    with_announce, Announce, ChildGuard, LeechOpts, LtLeecher, Payload, Tracker,
};

/// How long our seed may take to check its data and start listening.
pub(crate) const READY_LIMIT: Duration = Duration::from_secs(60);

/// How long any one download may take; loopback transfers of these sizes take seconds.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(90);

/// How long a stopped process may take to exit (its shutdown waits for `stopped`
/// announces, which are bounded in the engine).
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(20);

/// The binary under test, with DHT bootstrapping off so nothing leaves the machine.
fn ours() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "");
    cmd
}

/// `seed` on 127.0.0.1 with a port the kernel picks; the `seeding ... on ADDR` line says
/// which one, so no port can be taken between choosing and binding it.
pub(crate) fn seed_command(torrent: &Path, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = ours();
    cmd.args(["seed", "--bind", "127.0.0.1", "--port", "0", "--dir"])
        .arg(dir)
        .args(extra)
        .arg(torrent);
    cmd
}

/// `get` on 127.0.0.1 into `out`, with `extra` flags such as `--seed`.
fn get_command(torrent: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = ours();
    cmd.args(["get", "--bind", "127.0.0.1", "--port", "0", "-o"])
        .arg(out)
        .args(extra)
        .arg(torrent);
    cmd
}

/// One of our processes, its output going to files that are read while it runs.
///
/// The guard owns the child privately, so its pipes cannot be taken from it; files serve
/// the same purpose, and Rust's stdout is line-buffered, so each line is there as soon as
/// it is printed.
pub(crate) struct Ours {
    // Declared first so the process is gone before its folder is removed.
    child: ChildGuard,
    what: String,
    logs: TempDir,
}

/// What a seeding run printed when it stopped.
#[derive(Debug, Clone, Copy)]
struct Stopped {
    /// The upload total, as closely as the rounded human-readable figure gives it.
    uploaded: u64,
    ratio: f64,
}

impl Ours {
    pub(crate) fn start(mut cmd: Command, what: &str) -> Ours {
        let logs = tempfile::Builder::new()
            .prefix("ta-seeding-")
            .tempdir()
            .expect("temp folder for a process's output");
        let out = File::create(logs.path().join("stdout")).expect("creating the stdout file");
        let err = File::create(logs.path().join("stderr")).expect("creating the stderr file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        Ours {
            child: ChildGuard::spawn(cmd, what),
            what: what.to_string(),
            logs,
        }
    }

    fn stdout(&self) -> String {
        fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default()
    }

    /// Both outputs, for failure messages.
    pub(crate) fn report(&self) -> String {
        let err = fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default();
        format!(
            "--- {} stdout:\n{}--- stderr:\n{err}",
            self.what,
            self.stdout()
        )
    }

    /// Waits for the `seeding NAME on ADDR` line and returns ADDR; panics with the output
    /// if the process exits first or the line does not come within `limit`.
    pub(crate) fn wait_seeding(&mut self, limit: Duration) -> SocketAddr {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(addr) = seeding_addr(&self.stdout()) {
                return addr;
            }
            if let Some(status) = self.child.try_status() {
                panic!(
                    "{} exited ({status}) before seeding:\n{}",
                    self.what,
                    self.report()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no seeding line within {limit:?}:\n{}",
                self.what,
                self.report()
            );
            thread::sleep(POLL);
        }
    }

    /// Whether the process is still running.
    fn running(&mut self) -> bool {
        self.child.try_status().is_none()
    }

    /// Sends `signal` (`INT`, `TERM`) to this child's PID. The child has not been reaped
    /// (it is checked to be running first), so the PID cannot belong to anyone else.
    fn signal(&mut self, signal: &str) {
        assert!(
            self.running(),
            "{} ended before it was sent SIG{signal}:\n{}",
            self.what,
            self.report()
        );
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.pid().to_string())
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// Waits for the process to exit by itself, panicking with its output after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match self.child.wait_timeout(limit) {
            Some(status) => status,
            None => panic!(
                "{} did not exit within {limit:?}:\n{}",
                self.what,
                self.report()
            ),
        }
    }

    /// Waits for a clean exit (status 0) and returns the `stopped seeding` figures.
    fn wait_stopped(&mut self, limit: Duration) -> Stopped {
        let status = self.wait_exit(limit);
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            self.what,
            self.report()
        );
        stopped_line(&self.stdout()).unwrap_or_else(|| {
            panic!(
                "{} printed no `stopped seeding ...: uploaded ...` line:\n{}",
                self.what,
                self.report()
            )
        })
    }
}

/// The address in a `seeding NAME on ADDR` line. Progress lines start with a percentage,
/// so only the announcement line begins with `seeding `.
fn seeding_addr(stdout: &str) -> Option<SocketAddr> {
    stdout.lines().find_map(|line| {
        let (_, addr) = line.strip_prefix("seeding ")?.rsplit_once(" on ")?;
        addr.trim().parse().ok()
    })
}

/// The figures in `stopped seeding NAME: uploaded 1.50 MiB (ratio 0.37)`.
fn stopped_line(stdout: &str) -> Option<Stopped> {
    stdout.lines().find_map(|line| {
        let rest = line.strip_prefix("stopped seeding ")?;
        let (_, figures) = rest.rsplit_once(": uploaded ")?;
        let (size, ratio) = figures.split_once(" (ratio ")?;
        Some(Stopped {
            uploaded: parse_human_bytes(size)?,
            ratio: ratio.trim_end_matches(')').trim().parse().ok()?,
        })
    })
}

/// Reads a size as the binary-prefixed figures the summary prints: `512 B`, `3.25 MiB`.
fn parse_human_bytes(text: &str) -> Option<u64> {
    let (number, unit) = text.trim().split_once(' ')?;
    let scale: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    let number: f64 = number.parse().ok()?;
    Some((number * scale as f64).round() as u64)
}

/// A payload and its torrent in a fresh folder.
struct Fixture {
    tmp: TempDir,
    payload: Payload,
    torrent: PathBuf,
}

impl Fixture {
    fn single(len: u64, piece_exp: u32) -> Fixture {
        let tmp = tempfile::tempdir().expect("temp folder for a seeding test");
        let payload = Payload::single(&tmp.path().join("data"), "file.bin", len);
        Fixture::finish(tmp, payload, piece_exp)
    }

    fn multi(piece_exp: u32) -> Fixture {
        let tmp = tempfile::tempdir().expect("temp folder for a seeding test");
        let payload = Payload::multi(&tmp.path().join("data"), "album", 1 << piece_exp);
        Fixture::finish(tmp, payload, piece_exp)
    }

    fn finish(tmp: TempDir, payload: Payload, piece_exp: u32) -> Fixture {
        let torrent = tmp.path().join("t.torrent");
        make_torrent(&payload.root(), &torrent, piece_exp, &[]);
        Fixture {
            tmp,
            payload,
            torrent,
        }
    }

    /// A fresh folder under the fixture's, for one downloader.
    fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn info_hash(&self) -> InfoHash {
        read_metainfo(&self.torrent).info_hash
    }

    /// Starts an opentracker for this torrent and writes a copy of the torrent that
    /// announces to it over HTTP (same info-hash).
    fn tracked(&self) -> (Tracker, PathBuf) {
        let tracker = Tracker::start(&[self.info_hash()]);
        let announced = self.tmp.path().join("tracked.torrent");
        with_announce(&self.torrent, &announced, &tracker.http_url());
        (tracker, announced)
    }

    fn assert_downloaded(&self, out: &Path) {
        assert_same_files(&self.payload.dir, out, &self.payload.files);
    }
}

/// Waits until the tracker names a peer on `port`, i.e. our seed has announced, so
/// clients started afterwards learn of it from their first announce.
///
/// opentracker leaves the peer list out of a `stopped` reply, so the probe announces as a
/// leecher on port 1 and then withdraws with `stopped`; nothing dials the probe's port in
/// between, because the clients under test start only after this returns.
pub(crate) fn wait_until_tracker_lists(tracker: &Tracker, hash: InfoHash, port: u16) {
    let probe = Announce {
        peer_id: *b"-SEEDTEST-PROBE-0001",
        port: 1,
        left: 1,
        ..Announce::new(hash)
    };
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let last = match http_announce(tracker.port(), &probe) {
            Ok(reply) if reply.peers.iter().any(|p| p.port() == port) => break,
            Ok(reply) => format!("{reply:?}"),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "the tracker never listed our seed on port {port}; last reply: {last}\n{}",
            tracker.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let withdraw = Announce {
        event: Some("stopped"),
        ..probe
    };
    http_announce(tracker.port(), &withdraw).expect("withdrawing the tracker probe");
}

/// Starts `seed` for `torrent` from the fixture's data and waits until it serves.
fn start_seed(f: &Fixture, torrent: &Path, extra: &[&str]) -> (Ours, SocketAddr) {
    let mut seed = Ours::start(
        seed_command(torrent, &f.payload.dir, extra),
        "torrent-actors seed",
    );
    let addr = seed.wait_seeding(READY_LIMIT);
    assert!(addr.ip().is_loopback(), "seeding on {addr}, not loopback");
    (seed, addr)
}

/// A libtorrent download from our seed alone, dialled directly.
fn lt_download(f: &Fixture, seed: SocketAddr, out: &Path) {
    let opts = LeechOpts {
        peers: vec![seed],
        ..LeechOpts::new(DOWNLOAD_LIMIT)
    };
    LtLeecher::run(&f.torrent, out, &opts).assert_finished();
}

#[test]
fn libtorrent_downloads_a_single_file_from_our_seed() {
    // An odd length leaves a short last piece and a short last block.
    let f = Fixture::single(5 * 1024 * 1024 + 12_345, 16);
    let (mut seed, addr) = start_seed(&f, &f.torrent, &[]);
    let out = f.out("lt");
    lt_download(&f, addr, &out);
    f.assert_downloaded(&out);
    assert!(seed.running(), "the seed died:\n{}", seed.report());
}

#[test]
fn libtorrent_downloads_a_multi_file_torrent_with_empty_files_from_our_seed() {
    let f = Fixture::multi(15);
    let (mut seed, addr) = start_seed(&f, &f.torrent, &[]);
    let out = f.out("lt");
    lt_download(&f, addr, &out);
    f.assert_downloaded(&out);
    assert!(seed.running(), "the seed died:\n{}", seed.report());
}

#[test]
fn private_torrents_offer_no_peer_exchange_and_public_ones_do() {
    let f = Fixture::single(100_000, 15);
    let private = f.torrent.with_extension("private.torrent");
    let private_hash = crate::support::make_private_torrent(&f.payload.root(), &private, 15);
    assert!(read_metainfo(&private).info.private);
    for (torrent, hash, pex) in [
        (&f.torrent, f.info_hash(), true),
        (&private, private_hash, false),
    ] {
        let (_seed, addr) = start_seed(&f, torrent, &[]);
        let hs = crate::support::ext_handshake_of(addr, hash).expect("an extension handshake");
        assert_eq!(hs.id_of("ut_pex").is_some(), pex, "ut_pex offered: {hs:?}");
        // Metadata is served either way, with its true size.
        assert_eq!(
            hs.metadata_size,
            Some(read_metainfo(torrent).info_bytes.len() as u32)
        );
        assert!(hs.id_of("ut_metadata").is_some());
    }
}

#[test]
fn libtorrent_fetches_the_metadata_of_a_magnet_link_from_our_seed() {
    let f = Fixture::multi(15);
    let (mut seed, addr) = start_seed(&f, &f.torrent, &[]);
    let out = f.out("lt-magnet");
    let opts = LeechOpts {
        peers: vec![addr],
        magnet: Some(format!("magnet:?xt=urn:btih:{}", f.info_hash().to_hex())),
        ..LeechOpts::new(DOWNLOAD_LIMIT)
    };
    LtLeecher::run(&f.torrent, &out, &opts).assert_finished();
    f.assert_downloaded(&out);
    assert!(seed.running(), "the seed died:\n{}", seed.report());
}

#[test]
fn aria2c_finds_our_seed_through_an_http_tracker_and_downloads_from_it() {
    let f = Fixture::multi(15);
    let (tracker, announced) = f.tracked();
    let (mut seed, addr) = start_seed(&f, &announced, &[]);
    wait_until_tracker_lists(&tracker, f.info_hash(), addr.port());

    let out = f.out("aria2");
    let stop_timeout = 30;
    let mut cmd = Command::new("aria2c");
    // Loopback only, nothing but the tracker to find peers, no configuration file from
    // the machine, and an exit as soon as the download is complete.
    cmd.args([
        "--no-conf=true",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--interface=127.0.0.1",
        "--file-allocation=none",
        "--console-log-level=warn",
        "--summary-interval=0",
        "--show-console-readout=false",
        "--download-result=hide",
        "--bt-tracker-connect-timeout=5",
        "--bt-tracker-timeout=10",
        "--seed-time=0",
    ])
    .arg(format!("--listen-port={}", free_port()))
    .arg(format!("--bt-stop-timeout={stop_timeout}"))
    .arg(format!("--dir={}", out.display()))
    .arg(&announced);
    let output = run_until(cmd, DOWNLOAD_LIMIT).unwrap_or_else(|o| {
        panic!(
            "aria2c overran {DOWNLOAD_LIMIT:?}:\n{}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            seed.report()
        )
    });
    assert!(
        output.status.success(),
        "aria2c failed ({}):\n{}{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        seed.report()
    );
    f.assert_downloaded(&out);
    assert!(seed.running(), "the seed died:\n{}", seed.report());
}

/// How long each of our leechers keeps seeding after it completes, so the last to finish
/// can still get pieces from the first.
const LEECHER_SEED_TIME: &str = "8s";

#[test]
fn our_leechers_trade_pieces_with_each_other_when_the_seed_has_one_upload_slot() {
    // 4 MiB in 32 KiB pieces: 128 pieces, many chances to trade.
    let f = Fixture::single(4 * 1024 * 1024 + 777, 15);
    let total = f.payload.total_len();
    let (tracker, announced) = f.tracked();
    let (mut seed, addr) = start_seed(&f, &announced, &["--upload-slots", "1"]);
    wait_until_tracker_lists(&tracker, f.info_hash(), addr.port());

    // Started together: each finds the seed and the leechers that announced before it
    // through the tracker, and is dialled by the ones that announce after it. The seed
    // unchokes one of them for its slot and one optimistically, so the third has to get
    // its pieces from the other two until the seed's next rechoke, 10 s later.
    //
    // Each leecher's disk is slowed (20 ms per piece, at most 1 MiB waiting), which
    // stretches the transfer over a few seconds. Without it everything is over within
    // one of the engine's 1 s statistics ticks, and uploads in a connection's last tick
    // are never counted (see the ignored test below), so every report would read 0 B.
    let outs: Vec<PathBuf> = (0..3).map(|i| f.out(&format!("leecher-{i}"))).collect();
    let mut leechers: Vec<Ours> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            Ours::start(
                get_command(
                    &announced,
                    out,
                    &[
                        "--seed",
                        "--seed-time",
                        LEECHER_SEED_TIME,
                        "--max-pending-mib",
                        "1",
                        "--debug-write-delay-ms",
                        "20",
                        "-v",
                    ],
                ),
                &format!("torrent-actors get --seed (leecher {i})"),
            )
        })
        .collect();
    let leecher_reports: Vec<Stopped> = leechers
        .iter_mut()
        .map(|l| l.wait_stopped(DOWNLOAD_LIMIT))
        .collect();
    for out in &outs {
        f.assert_downloaded(out);
    }
    seed.signal("INT");
    let seed_report = seed.wait_stopped(EXIT_LIMIT);

    let leechers_up: u64 = leecher_reports.iter().map(|r| r.uploaded).sum();
    let figures = format!(
        "payload {total} B; seed uploaded {} B (ratio {:.2}); leechers uploaded {:?} B, \
         {leechers_up} B in all ({:.2} payloads)",
        seed_report.uploaded,
        seed_report.ratio,
        leecher_reports
            .iter()
            .map(|r| r.uploaded)
            .collect::<Vec<_>>(),
        leechers_up as f64 / total as f64
    );
    eprintln!("swarm figures: {figures}");
    // A leecher uploads only to the other leechers (the seed wants nothing), and the
    // reports can only undercount, so a positive sum proves blocks went from leecher to
    // leecher.
    assert!(
        leechers_up > 0,
        "the leechers uploaded nothing to each other: {figures}\n{}",
        leechers.iter().map(Ours::report).collect::<String>()
    );
    // The leecher the seed keeps choked gets a whole copy from the other two, so the
    // sum is normally over one copy; a quarter leaves room for a slow machine and the
    // undercount, and still fails if trading barely happens.
    assert!(
        leechers_up >= total / 4,
        "the leechers traded only a sliver: {figures}"
    );
}

/// A peer speaking the wire protocol by hand, to send what no real client would.
pub(crate) struct RawPeer {
    stream: TcpStream,
    codec: MessageCodec,
    buf: BytesMut,
}

/// What reading from a [`RawPeer`] gave.
#[derive(Debug)]
pub(crate) enum Next {
    Message(Message),
    /// Nothing arrived before the deadline.
    Quiet,
    /// The other side closed the connection (or reset it).
    Closed(String),
}

impl RawPeer {
    /// Connects to `addr` and exchanges handshakes for `hash`, checking the reply.
    pub(crate) fn connect(addr: SocketAddr, hash: InfoHash, id: u8) -> RawPeer {
        RawPeer::connect_with(addr, hash, id, Reserved::none())
    }

    /// As [`RawPeer::connect`], offering the extensions set in `reserved`.
    fn connect_with(addr: SocketAddr, hash: InfoHash, id: u8, reserved: Reserved) -> RawPeer {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to our seed at {addr}: {e}"));
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("setting a write timeout");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("setting a read timeout");
        let mut peer_id = *b"-XX0000-hostile-0000";
        peer_id[19] = b'0' + id;
        let ours = Handshake::new(reserved, hash, PeerId(peer_id));
        stream
            .write_all(&ours.encode())
            .expect("sending our handshake");
        let mut theirs = [0u8; 68];
        stream
            .read_exact(&mut theirs)
            .expect("reading the seed's handshake");
        let theirs = Handshake::parse(&theirs).expect("a valid handshake from the seed");
        assert_eq!(
            theirs.info_hash, hash,
            "the seed answered for another torrent"
        );
        RawPeer {
            stream,
            codec: MessageCodec::default(),
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, message: &Message) {
        let mut out = BytesMut::new();
        message.encode(&mut out).expect("encoding a test message");
        self.stream
            .write_all(&out)
            .unwrap_or_else(|e| panic!("sending {message:?}: {e}"));
    }

    fn request(&mut self, piece: u32, offset: u32, length: u32) {
        self.send(&Message::Request(BlockRequest {
            piece,
            offset,
            length,
        }));
    }

    /// The next message, if one comes before `deadline`.
    pub(crate) fn next(&mut self, deadline: Instant) -> Next {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(message)) => return Next::Message(message),
                Ok(None) => {}
                Err(e) => panic!("the seed sent something undecodable: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Quiet;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("setting a read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return Next::Closed("end of stream".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Next::Quiet
                }
                Err(e) => return Next::Closed(e.to_string()),
            }
        }
    }

    /// Reads until `wanted` matches a message, returning it and every message before it.
    pub(crate) fn read_until(
        &mut self,
        within: Duration,
        what: &str,
        wanted: impl Fn(&Message) -> bool,
    ) -> (Message, Vec<Message>) {
        let deadline = Instant::now() + within;
        let mut before = Vec::new();
        loop {
            match self.next(deadline) {
                Next::Message(m) if wanted(&m) => return (m, before),
                Next::Message(m) => before.push(m),
                other => panic!("waiting for {what}: {other:?} after {before:?}"),
            }
        }
    }

    /// Everything that arrives during `window`, stopping early if the connection closes.
    fn read_for(&mut self, window: Duration) -> (Vec<Message>, Option<String>) {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        loop {
            match self.next(deadline) {
                Next::Message(m) => got.push(m),
                Next::Quiet => return (got, None),
                Next::Closed(why) => return (got, Some(why)),
            }
        }
    }
}

fn is_piece(m: &Message) -> bool {
    matches!(m, Message::Piece(_))
}

/// Bytes `offset..offset + len` of the single file of `f`, the torrent's byte stream.
fn payload_bytes(f: &Fixture, offset: u64, len: usize) -> Vec<u8> {
    let data = fs::read(f.payload.root()).expect("reading the payload");
    data[offset as usize..offset as usize + len].to_vec()
}

/// Connects a raw peer, says it is interested and waits for the seed's unchoke.
fn unchoked_raw_peer(addr: SocketAddr, hash: InfoHash, id: u8) -> RawPeer {
    let mut peer = RawPeer::connect(addr, hash, id);
    peer.send(&Message::Interested);
    peer.read_until(Duration::from_secs(15), "an unchoke", |m| {
        matches!(m, Message::Unchoke)
    });
    peer
}

#[test]
fn out_of_range_and_choked_requests_get_no_data_while_an_honest_leecher_completes() {
    // 2 MiB and a bit in 32 KiB pieces: 65 pieces, the last one short.
    let f = Fixture::single(2 * 1024 * 1024 + 5_000, 15);
    let meta = read_metainfo(&f.torrent);
    let hash = meta.info_hash;
    let layout = &meta.info.layout;
    let pieces = layout.num_pieces();
    let piece_len = layout.piece_length();
    let last = pieces - 1;
    let last_len = (layout.total_length() - u64::from(last) * u64::from(piece_len)) as u32;
    assert!(
        last_len < piece_len,
        "the payload must end in a short piece"
    );
    let (mut seed, addr) = start_seed(&f, &f.torrent, &[]);

    // The honest leecher starts first, so it downloads while the hostile peers work.
    let out = f.out("lt");
    let honest = LtLeecher::spawn(
        &f.torrent,
        &out,
        &LeechOpts {
            peers: vec![addr],
            ..LeechOpts::new(DOWNLOAD_LIMIT)
        },
    );

    // A peer that behaves until it is unchoked, then asks for blocks that do not exist.
    // Each request is well-formed on the wire; only its place in the torrent is wrong.
    let mut hostile = unchoked_raw_peer(addr, hash, 1);
    let bad = [
        // A piece index one past the end, and the largest there is.
        (pieces, 0),
        (u32::MAX, 0),
        // A block that starts inside piece 0 and runs past its end.
        (0, piece_len - 8 * 1024),
        // A block that starts at the end of piece 0.
        (0, piece_len),
        // An offset whose sum with the length overflows 32 bits.
        (0, u32::MAX - 100),
        // Inside the nominal piece length, past the end of the short last piece.
        (last, last_len - 1),
        (last, last_len),
    ];
    for &(piece, offset) in &bad {
        hostile.request(piece, offset, 16 * 1024);
    }
    // Requests are answered in order, so the reply to this valid one comes after any
    // reply to the invalid ones sent before it; none of those may come.
    let marker = BlockRequest {
        piece: 1,
        offset: 16 * 1024,
        length: 16 * 1024,
    };
    hostile.send(&Message::Request(marker));
    let (reply, before) = hostile.read_until(Duration::from_secs(15), "the valid block", is_piece);
    let sent_before: Vec<_> = before.iter().filter(|m| is_piece(m)).collect();
    assert!(
        sent_before.is_empty(),
        "the seed answered invalid requests: {sent_before:?}"
    );
    let Message::Piece(block) = reply else {
        unreachable!("read_until returns a piece")
    };
    assert_eq!(
        block.request(),
        marker,
        "the seed sent a block nobody asked for"
    );
    let offset = u64::from(piece_len) + u64::from(marker.offset);
    assert!(
        block.data[..] == payload_bytes(&f, offset, marker.length as usize)[..],
        "the valid block's bytes are wrong"
    );
    let (later, closed) = hostile.read_for(Duration::from_secs(1));
    let late_pieces: Vec<_> = later.iter().filter(|m| is_piece(m)).collect();
    assert!(
        late_pieces.is_empty(),
        "blocks for invalid requests came late: {late_pieces:?}"
    );
    assert_eq!(
        closed, None,
        "a handful of out-of-range requests closed the connection"
    );

    // A peer that never says it is interested stays choked, and a request while choked
    // is ignored (BEP 3 lets a choking peer drop it).
    let mut choked = RawPeer::connect(addr, hash, 2);
    choked.request(0, 0, 16 * 1024);
    choked.request(3, 16 * 1024, 16 * 1024);
    let (got, closed) = choked.read_for(Duration::from_secs(3));
    assert!(
        !got.iter()
            .any(|m| is_piece(m) || matches!(m, Message::Unchoke)),
        "a choked, uninterested peer got {got:?}"
    );
    assert_eq!(
        closed, None,
        "two requests while choked closed the connection"
    );

    // Lengths no client asks for (over 16 KiB, or nothing) are refused by the wire codec
    // as protocol errors, which ends the connection without a block.
    for (id, length) in [(3, 32 * 1024), (4, 0)] {
        let mut odd = unchoked_raw_peer(addr, hash, id);
        odd.request(0, 0, length);
        let (got, closed) = odd.read_for(Duration::from_secs(10));
        assert!(
            !got.iter().any(is_piece),
            "a request for {length} bytes got {got:?}"
        );
        assert!(
            closed.is_some(),
            "a request for {length} bytes left the connection open; got {got:?}"
        );
    }

    // A flood of out-of-range requests: the seed drops the peer (peer.rs allows 100),
    // and sends none of the blocks on the way.
    let mut flooder = unchoked_raw_peer(addr, hash, 5);
    for i in 0..150 {
        flooder.request(pieces + i, 0, 16 * 1024);
    }
    let (got, closed) = flooder.read_for(Duration::from_secs(15));
    assert!(!got.iter().any(is_piece), "the flooder got blocks: {got:?}");
    assert!(
        closed.is_some(),
        "150 invalid requests did not end the connection; got {got:?}"
    );

    let outcome = honest.wait();
    outcome.assert_finished();
    f.assert_downloaded(&out);
    // The hostile peer that stayed within the limit is still served after all this.
    hostile.send(&Message::Request(marker));
    let (reply, _) = hostile.read_until(Duration::from_secs(15), "the valid block again", is_piece);
    assert!(matches!(reply, Message::Piece(b) if b.request() == marker));

    assert!(seed.running(), "the seed died:\n{}", seed.report());
    seed.signal("INT");
    seed.wait_stopped(EXIT_LIMIT);
}

#[test]
fn seed_stopped_by_sigint_exits_0_and_prints_the_stopped_seeding_line() {
    let f = Fixture::single(3 * 1024 * 1024 + 1, 15);
    let (mut seed, addr) = start_seed(&f, &f.torrent, &[]);
    let out = f.out("lt");
    lt_download(&f, addr, &out);
    f.assert_downloaded(&out);
    seed.signal("INT");
    // Exit status 0 and a parsable line; the amount is checked by the tests below.
    seed.wait_stopped(EXIT_LIMIT);
}

#[test]
fn seed_stopped_by_sigterm_with_nothing_uploaded_exits_0_and_reports_zero() {
    let f = Fixture::single(1024 * 1024, 15);
    let (mut seed, _) = start_seed(&f, &f.torrent, &[]);
    seed.signal("TERM");
    let stopped = seed.wait_stopped(EXIT_LIMIT);
    assert_eq!(stopped.uploaded, 0, "{stopped:?}");
    assert_eq!(stopped.ratio, 0.0, "{stopped:?}");
}

#[test]
fn get_seed_stopped_by_sigint_after_completing_exits_0_and_prints_the_stopped_seeding_line() {
    let f = Fixture::single(1024 * 1024 + 3, 15);
    let (_seed, addr) = start_seed(&f, &f.torrent, &[]);
    let out = f.out("get");
    let peer = addr.to_string();
    let mut get = Ours::start(
        get_command(&f.torrent, &out, &["--seed", "--peer", &peer]),
        "torrent-actors get --seed",
    );
    get.wait_seeding(DOWNLOAD_LIMIT);
    f.assert_downloaded(&out);
    get.signal("INT");
    get.wait_stopped(EXIT_LIMIT);
}

/// How long to wait before stopping a seed whose upload total is checked: more than the
/// engine's 1 s statistics tick and its 0.5 s progress events together.
const STATS_SETTLE: Duration = Duration::from_millis(2500);

#[test]
fn seed_counts_the_blocks_it_sent_to_a_peer_that_stays_connected() {
    let f = Fixture::single(2 * 1024 * 1024, 15);
    let hash = f.info_hash();
    let (mut seed, addr) = start_seed(&f, &f.torrent, &[]);
    let mut peer = unchoked_raw_peer(addr, hash, 1);
    // 64 blocks of 16 KiB: the first MiB.
    let blocks = 64u32;
    for i in 0..blocks {
        peer.request(i / 2, (i % 2) * 16 * 1024, 16 * 1024);
    }
    for i in 0..blocks {
        peer.read_until(Duration::from_secs(15), &format!("block {i}"), is_piece);
    }
    // The connection stays open while the statistics catch up.
    let (_, closed) = peer.read_for(STATS_SETTLE);
    assert_eq!(closed, None);
    seed.signal("INT");
    let stopped = seed.wait_stopped(EXIT_LIMIT);
    assert_eq!(
        stopped.uploaded,
        u64::from(blocks) * 16 * 1024,
        "{stopped:?}:\n{}",
        seed.report()
    );
}

#[test]
fn seed_counts_what_it_uploaded_to_a_leecher_that_disconnects_at_once() {
    let f = Fixture::single(3 * 1024 * 1024 + 1, 15);
    let total = f.payload.total_len();
    let (mut seed, addr) = start_seed(&f, &f.torrent, &[]);
    let out = f.out("lt");
    // libtorrent closes its connections the moment it has every piece.
    lt_download(&f, addr, &out);
    f.assert_downloaded(&out);
    thread::sleep(STATS_SETTLE);
    seed.signal("INT");
    let stopped = seed.wait_stopped(EXIT_LIMIT);
    // The printed size is rounded to two decimals of its unit.
    assert!(
        stopped.uploaded as f64 >= 0.99 * total as f64,
        "the seed reports {stopped:?} after serving a whole copy of {total} B:\n{}",
        seed.report()
    );
    assert!(stopped.ratio >= 0.99, "{stopped:?}");
}

/// An upload limit holds the seed's rate down. Only a lower bound on the time is checked:
/// a busy machine can make the transfer slower, never faster than the limit allows.
#[test]
fn upload_limit_keeps_the_seed_under_the_limit() {
    let f = Fixture::single(4 * 1024 * 1024, 15);
    // 1 MiB/s for 4 MiB: at least about 3 s, allowing for the bucket's initial burst.
    let (mut seed, addr) = start_seed(&f, &f.torrent, &["--upload-limit", "1024"]);
    let out = f.out("lt");
    let started = Instant::now();
    lt_download(&f, addr, &out);
    let elapsed = started.elapsed();
    f.assert_downloaded(&out);
    assert!(seed.running(), "the seed died:\n{}", seed.report());
    assert!(
        elapsed >= Duration::from_millis(2500),
        "4 MiB at 1 MiB/s took only {elapsed:?}"
    );
}

/// BEP 6 with a peer that offers it: our complete seed says `have-all`, gives the peer its
/// allowed-fast set (the BEP's algorithm over 127.0.0.1 and the info-hash), answers a
/// request it will not serve while choking with `reject-request`, and serves a block of
/// an allowed-fast piece even while choking.
#[test]
fn fast_peer_gets_have_all_its_allowed_fast_set_rejects_and_allowed_blocks_while_choked() {
    let f = Fixture::single(2 * 1024 * 1024 + 5, 15);
    let (mut seed, addr) = start_seed(&f, &f.torrent, &[]);
    let mut reserved = Reserved::none();
    reserved.set_fast_extension(true);
    let mut peer = RawPeer::connect_with(addr, f.info_hash(), 7, reserved);

    let (_, before) = peer.read_until(Duration::from_secs(10), "have-all", |m| {
        matches!(m, Message::HaveAll)
    });
    assert!(
        !before
            .iter()
            .any(|m| matches!(m, Message::Bitfield(_) | Message::HaveNone)),
        "a bitfield or have-none before have-all: {before:?}"
    );
    let num_pieces = read_metainfo(&f.torrent).info.layout.num_pieces();
    let expected = torrent_actors::wire::fast::allowed_fast_set(
        std::net::Ipv4Addr::LOCALHOST,
        &f.info_hash(),
        num_pieces,
        torrent_actors::wire::fast::ALLOWED_FAST_SET_SIZE,
    );
    let mut allowed = Vec::new();
    while allowed.len() < expected.len() {
        let (m, _) = peer.read_until(Duration::from_secs(10), "allowed-fast", |m| {
            matches!(m, Message::AllowedFast(_))
        });
        if let Message::AllowedFast(p) = m {
            allowed.push(p);
        }
    }
    assert_eq!(allowed, expected);

    // Not interested, so choked: a piece outside the set is refused out loud.
    let outside = (0..num_pieces)
        .find(|p| !allowed.contains(p))
        .expect("a piece outside the set");
    let refused = BlockRequest {
        piece: outside,
        offset: 0,
        length: 16384,
    };
    peer.send(&Message::Request(refused));
    peer.read_until(
        Duration::from_secs(10),
        "a reject",
        |m| matches!(m, Message::RejectRequest(r) if *r == refused),
    );

    // An allowed-fast piece is served anyway, with the right bytes.
    let inside = BlockRequest {
        piece: allowed[0],
        offset: 16384,
        length: 16384,
    };
    peer.send(&Message::Request(inside));
    let (block, _) = peer.read_until(
        Duration::from_secs(10),
        "an allowed-fast block",
        |m| matches!(m, Message::Piece(b) if b.piece == inside.piece && b.offset == inside.offset),
    );
    let Message::Piece(block) = block else {
        unreachable!()
    };
    let offset = u64::from(inside.piece) * 32 * 1024 + u64::from(inside.offset);
    assert!(
        block.data[..] == payload_bytes(&f, offset, 16384)[..],
        "wrong bytes for the allowed-fast block"
    );
    assert!(seed.running(), "the seed died:\n{}", seed.report());
}

#[test]
fn our_v2_seed_serves_tree_nodes_that_prove_the_root_and_rejects_what_it_cannot_prove() {
    use torrent_actors::metainfo::merkle;
    use torrent_actors::metainfo::tree_nodes::proves;
    use torrent_actors::wire::HashRequest;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = dir.join("tree.bin");
    // 11 pieces of 64 KiB and a short twelfth: the piece layer (4 leaves a piece, height
    // 2) is padded to 16 nodes, so the root is at height 6.
    let piece = 64 * 1024;
    let torrent = one_file_v2_torrent(tmp.path(), &file, 11 * piece + 5000, "64KiB");
    let data = fs::read(&file).unwrap();
    let leaves = merkle::leaf_hashes(&data);
    let root = merkle::file_root(&leaves).unwrap();
    let layer = merkle::piece_layer(&leaves, piece as u64).unwrap();
    assert_eq!(layer.len(), 12);
    let hash = read_metainfo(&torrent).info_hash;
    let mut seed = Ours::start(seed_command(&torrent, &dir, &[]), "torrent-actors seed");
    let addr = seed.wait_seeding(READY_LIMIT);
    let mut reserved = Reserved::none();
    reserved.set_fast_extension(true);
    let mut peer = RawPeer::connect_with(addr, hash, 1, reserved);
    let ask = |base_layer, index, length, proof_layers| HashRequest {
        pieces_root: root,
        base_layer,
        index,
        length,
        proof_layers,
    };
    let answer_only = |peer: &mut RawPeer| {
        let (m, _) = peer.read_until(Duration::from_secs(10), "a hash answer", |m| {
            matches!(m, Message::Hashes(_) | Message::HashReject(_))
        });
        m
    };
    let answer = |peer: &mut RawPeer, req: HashRequest| {
        peer.send(&Message::HashRequest(req));
        answer_only(peer)
    };
    // The whole piece layer, which is its own proof; then half of it with its uncle.
    for (req, uncles) in [
        (ask(2, 0, 16, 3), 0),
        (ask(2, 8, 8, 3), 1),
        (ask(3, 2, 2, 2), 2),
    ] {
        match answer(&mut peer, req) {
            Message::Hashes(h) => {
                assert_eq!(h.request, req);
                assert_eq!(h.hashes.len(), req.length as usize + uncles, "{req:?}");
                assert!(proves(&root, 6, &req, &h.hashes), "{req:?} does not prove");
                if req.base_layer == 2 {
                    let at = req.index as usize;
                    let real = layer.len().saturating_sub(at).min(req.length as usize);
                    assert_eq!(&h.hashes[..real], &layer[at..at + real]);
                }
            }
            other => panic!("{req:?} answered with {other:?}:\n{}", seed.report()),
        }
    }
    // What the seed cannot prove (leaves it does not keep), ranges past the layer, the
    // root itself, proofs above the root and trees of no file are all rejected.
    let mut unknown = ask(2, 0, 4, 0);
    unknown.pieces_root = [9; 32];
    for req in [
        ask(0, 0, 4, 0),
        ask(2, 16, 16, 0),
        ask(6, 0, 1, 0),
        ask(2, 0, 4, 4),
        unknown,
    ] {
        assert_eq!(
            answer(&mut peer, req),
            Message::HashReject(req),
            "{req:?} was not rejected"
        );
    }
    // The connection is still fine: an honest request is answered after them.
    assert!(matches!(
        answer(&mut peer, ask(2, 0, 16, 3)),
        Message::Hashes(_)
    ));
    // One connection gets 4096 answers (four so far); past that, honest requests too are
    // rejected, and the connection stays up.
    let (mut answered, mut rejected) = (4, 0);
    for _ in 0..41 {
        for _ in 0..100 {
            peer.send(&Message::HashRequest(ask(2, 0, 1, 0)));
        }
        for _ in 0..100 {
            match answer_only(&mut peer) {
                Message::Hashes(_) => answered += 1,
                _ => rejected += 1,
            }
        }
    }
    assert_eq!((answered, rejected), (4096, 4104 - 4096));
    assert!(seed.running(), "the seed died:\n{}", seed.report());
}

#[test]
fn a_peer_that_asks_for_wide_hash_answers_and_never_reads_them_costs_bounded_memory() {
    use torrent_actors::metainfo::merkle;
    use torrent_actors::wire::HashRequest;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let file = dir.join("wide.bin");
    // 8192 pieces of 16 KiB: the piece layer is the leaf layer, and one request for all
    // of it is answered with 8192 hashes, 256 KiB.
    let torrent = one_file_v2_torrent(tmp.path(), &file, 8192 * 16 * 1024, "16KiB");
    let leaves = merkle::leaf_hashes(&fs::read(&file).unwrap());
    let root = merkle::file_root(&leaves).unwrap();
    drop(leaves);
    let hash = read_metainfo(&torrent).info_hash;
    let mut seed = Ours::start(seed_command(&torrent, &dir, &[]), "torrent-actors seed");
    let addr = seed.wait_seeding(READY_LIMIT);
    let mut reserved = Reserved::none();
    reserved.set_fast_extension(true);
    let mut peer = RawPeer::connect_with(addr, hash, 1, reserved);
    let before = crate::support::rss_kib(seed.child.pid());
    // 4096 requests for the whole layer (1 GiB of answers), sent from a thread since the
    // seed may stop reading them; this side never reads.
    let wide = Message::HashRequest(HashRequest {
        pieces_root: root,
        base_layer: 0,
        index: 0,
        length: 8192,
        proof_layers: 0,
    });
    let mut burst = BytesMut::new();
    for _ in 0..4096 {
        wide.encode(&mut burst).unwrap();
    }
    let mut writer = peer.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&burst);
    });
    // However long the seed is left with them, its memory stays near where it was.
    let mut peak = before;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        peak = peak.max(crate::support::rss_kib(seed.child.pid()));
    }
    assert!(seed.running(), "the seed died:\n{}", seed.report());
    eprintln!("seed memory: {before} KiB before, {peak} KiB at most after");
    assert!(
        peak < before + 64 * 1024,
        "the seed grew from {before} KiB to {peak} KiB for one peer that does not read"
    );
    // It was answering them all along.
    let (first, _) = peer.read_until(Duration::from_secs(10), "a hash answer", |m| {
        matches!(m, Message::Hashes(_) | Message::HashReject(_))
    });
    assert!(
        matches!(&first, Message::Hashes(h) if h.hashes.len() == 8192),
        "the first request was answered with {first:?}"
    );
    drop(peer);
    let _ = sender.join();
}

/// `file` of `len` patterned bytes and a v2 torrent of it alone (pieces of `piece`,
/// our `create`'s spelling), written beside it in `parent`.
fn one_file_v2_torrent(parent: &Path, file: &Path, len: usize, piece: &str) -> PathBuf {
    crate::support::write_pattern(file, len, 21);
    let torrent = parent.join("v2.torrent");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    crate::support::our_create_ok(&[
        "--v2",
        "--piece-size",
        piece,
        "--no-date",
        &s(file),
        "-o",
        &s(&torrent),
    ]);
    torrent
}

#[test]
fn libtorrent_fetches_a_v2_magnet_from_our_seed_metadata_piece_layers_and_data() {
    // libtorrent has only the `urn:btmh` link: the info dictionary comes by `ut_metadata`
    // and each file's piece layer by `hash request`s, both from our seed alone (its debug
    // log, `-vv`, names each request it answers), and libtorrent checks every layer
    // against its file's root before it uses it.
    use sha2::{Digest, Sha256};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let root = dir.join("v2set");
    let piece = 32 * 1024;
    // Files of many pieces (one past a power of two, so the layer is padded), one of a
    // single piece (its root is all there is) and an empty one.
    crate::support::write_pattern(&root.join("a.bin"), 17 * piece + 777, 31);
    crate::support::write_pattern(&root.join("b/c.bin"), 40 * piece, 32);
    crate::support::write_pattern(&root.join("one.txt"), 1000, 33);
    crate::support::write_pattern(&root.join("empty"), 0, 34);
    let torrent = tmp.path().join("v2set.torrent");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    crate::support::our_create_ok(&[
        "--v2",
        "--piece-size",
        "32KiB",
        "--no-date",
        &s(&root),
        "-o",
        &s(&torrent),
    ]);
    let meta = read_metainfo(&torrent);
    let full: [u8; 32] = Sha256::digest(&meta.info_bytes).into();
    let hex: String = full.iter().map(|b| format!("{b:02x}")).collect();
    let magnet = format!("magnet:?xt=urn:btmh:1220{hex}&dn=v2set");
    let mut seed = Ours::start(
        seed_command(&torrent, &dir, &["-vv"]),
        "torrent-actors seed",
    );
    let addr = seed.wait_seeding(READY_LIMIT);
    let out = tmp.path().join("out");
    let opts = LeechOpts {
        peers: vec![addr],
        magnet: Some(magnet),
        ..LeechOpts::new(DOWNLOAD_LIMIT)
    };
    let outcome = LtLeecher::run(&torrent, &out, &opts);
    assert!(
        outcome.finished,
        "libtorrent did not finish the v2 magnet ({}):\n{}\nour seed:\n{}",
        outcome.status,
        outcome.log,
        seed.report()
    );
    for file in ["a.bin", "b/c.bin", "one.txt", "empty"] {
        assert_eq!(
            fs::read(out.join("v2set").join(file)).unwrap(),
            fs::read(root.join(file)).unwrap(),
            "{file} differs"
        );
    }
    assert!(seed.running(), "the seed died:\n{}", seed.report());
    // libtorrent would also finish with no piece layer at all, checking each file against
    // its root once the file is whole; the seed's log shows that it asked for the two
    // layers and got them.
    let log = seed.report();
    let answered = log.matches("hash request answered").count();
    assert!(
        answered >= 2 && !log.contains("hash request rejected"),
        "libtorrent's hash requests were not all answered ({answered} were):\n{log}"
    );
}
