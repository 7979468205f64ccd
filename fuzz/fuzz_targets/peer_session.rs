//! Fuzzes a live peer session: fuzzed bytes go over loopback TCP into a running engine,
//! as a hostile peer would send them.
//!
//! Once per process the target starts a real engine in-process: a Coordinator for a small
//! torrent in a temporary folder, listening on 127.0.0.1, on an actix System in a
//! background thread. The engine has pieces 0, 1, 2 and 7 of 8 on disk and misses 3 to 6,
//! so it both serves and downloads. For each input the target connects from a loopback
//! address of its own (so bans by address never touch the next input), exchanges
//! handshakes, plays the input as a script of wire messages, then shuts its write half and
//! waits for the engine to close the connection: each execution is complete before the
//! next. A reader thread drains and decodes everything the engine sends, so the engine
//! never blocks on a full socket, and the script can answer the engine's requests.
//!
//! Crashes are: any panic anywhere in the process (a panic hook aborts, so a panic inside
//! an actor, which tokio would otherwise catch, is seen), a frame from the engine that
//! does not decode, the engine refusing or dropping a fresh connection before the
//! handshake, a connection the engine does not close within a time limit after ours
//! closed, a piece verified from fuzzed data, or a failed health check. Every
//! [`CHECK_EVERY`] sessions the health check asks the Coordinator for its announce totals
//! (it must answer, and still miss exactly pieces 3 to 6), waits for it to count no
//! connected peer, and checks the process's open files are back near where they started.
//!
//! No address outside loopback is ever dialed: the engine's `max_connecting` is 0, so
//! addresses learned from fuzzed `ut_pex` messages and from closed sessions are queued
//! but never dialed, and it has no tracker and only an inert stand-in for the DHT.
//!
//! Input: byte 0 sets our handshake's reserved bits (bit 0 extension protocol, bit 1 fast
//! extension, bit 2 DHT); then a script of operations, each a tag byte and its operands
//! (see [`Op`] and `seeds/peer_session/`). `PEER_SESSION_LOG=1` prints the engine's log.
#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown as NetShutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sha1::{Digest, Sha1};
use socket2::{Domain, Socket, Type};
use tokio_util::codec::{Decoder, Encoder};
use torrent_actors::bencode::BValue;
use torrent_actors::engine::coordinator::{Coordinator, EngineConfig, TorrentParams};
use torrent_actors::engine::messages::{
    DhtLinks, DhtLookup, DhtNodeSeen, GetAnnounceStats, Phase, Progress, TorrentEvent,
};
use torrent_actors::engine::peer::{OUR_UT_METADATA, OUR_UT_PEX};
use torrent_actors::metainfo::Metainfo;
use torrent_actors::wire::ext::{ExtHandshake, MetadataMessage, PexMessage, HANDSHAKE_ID};
use torrent_actors::wire::{
    Block, BlockRequest, Handshake, Message, MessageCodec, Reserved, HANDSHAKE_LEN,
};
use torrent_actors::{InfoHash, PeerId};

/// The torrent: two files over eight 16 KiB pieces, piece 3 shared by both.
const PIECE_LENGTH: u32 = 16 * 1024;
const FILE_A: u64 = 50_000;
const FILE_B: u64 = 70_000;
const TOTAL: u64 = FILE_A + FILE_B;
const NUM_PIECES: u32 = 8;
/// Pieces the engine finds on disk at start; the others it must download.
const ON_DISK: [u32; 4] = [0, 1, 2, 7];
/// Bytes the engine misses: pieces 3 to 6, all full length.
const MISSING_BYTES: u64 = 4 * PIECE_LENGTH as u64;

/// Sessions between health checks.
const CHECK_EVERY: u64 = 256;
/// How long the engine may take to close a session after ours closed, or to answer.
const ENGINE_DEADLINE: Duration = Duration::from_secs(20);
/// Most time one input may spend waiting for the engine: waits end early as soon as it
/// sends something, but a script of waits for nothing must not slow the fuzzer down.
const MAX_WAITING: Duration = Duration::from_millis(40);

/// The engine every input talks to.
struct Engine {
    /// Where it accepts peers.
    listen: SocketAddr,
    info_hash: InfoHash,
    coordinator: Addr<Coordinator>,
    /// The System's arbiter, to run the health check's requests on.
    arbiter: actix::ArbiterHandle,
    observed: Arc<Mutex<Observed>>,
    /// Open file descriptors once the engine was ready.
    baseline_fds: usize,
    /// Keeps the download folder until the process ends.
    _dir: tempfile::TempDir,
}

/// What the engine's events said, shared with the fuzzing thread.
#[derive(Default)]
struct Observed {
    latest: Option<Progress>,
    /// Progress events seen so far, to wait for a fresh one.
    events: u64,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();
static SESSIONS: AtomicU64 = AtomicU64::new(0);

fuzz_target!(
    init: {
        // A panic in an actor is caught by tokio and would go unseen; abort instead.
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}\n{}", std::backtrace::Backtrace::force_capture());
            std::process::abort();
        }));
        ENGINE.get_or_init(start_engine);
    },
    |data: &[u8]| {
        let engine = ENGINE.get_or_init(start_engine);
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        run_session(engine, n, data);
        if n % CHECK_EVERY == CHECK_EVERY - 1 {
            health_check(engine);
        }
    }
);

// --- the engine ----------------------------------------------------------------------------

/// The byte at `offset` of the torrent's data.
fn payload_byte(offset: u64) -> u8 {
    (offset % 251) as u8 ^ (offset / 251) as u8
}

fn payload(range: std::ops::Range<u64>) -> Vec<u8> {
    range.map(payload_byte).collect()
}

/// The `.torrent`: no trackers, so the engine only ever meets our sessions.
fn torrent_bytes() -> Vec<u8> {
    let data = payload(0..TOTAL);
    let pieces: Vec<u8> = data
        .chunks(PIECE_LENGTH as usize)
        .flat_map(|p| <[u8; 20]>::from(Sha1::digest(p)))
        .collect();
    let file = |name: &str, length: u64| {
        BValue::dict([
            ("length", BValue::Int(length as i64)),
            ("path", BValue::List(vec![BValue::string(name)])),
        ])
    };
    let info = BValue::dict([
        ("name", BValue::string("fuzz")),
        ("piece length", BValue::Int(i64::from(PIECE_LENGTH))),
        ("pieces", BValue::Bytes(pieces)),
        (
            "files",
            BValue::List(vec![file("a", FILE_A), file("b", FILE_B)]),
        ),
    ]);
    BValue::dict([("info", info)]).encode()
}

/// Receives the torrent's events for the health check.
struct Events(Arc<Mutex<Observed>>);

impl Actor for Events {
    type Context = Context<Self>;
}

impl Handler<TorrentEvent> for Events {
    type Result = ();

    fn handle(&mut self, event: TorrentEvent, _: &mut Context<Self>) {
        match event {
            TorrentEvent::Progress(p) => {
                let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
                seen.latest = Some(p);
                seen.events += 1;
            }
            // Only fuzzed data ever arrives, which cannot hash right.
            TorrentEvent::Completed(_) => panic!("the torrent completed from fuzzed data"),
            TorrentEvent::Failed(kind, why) => panic!("the torrent failed: {kind:?} {why}"),
            TorrentEvent::MetadataReceived { .. }
            | TorrentEvent::Running { .. }
            | TorrentEvent::Tracker(_) => {}
        }
    }
}

/// Stands in for the DHT so `port` messages reach the engine's DHT path; it looks up
/// nothing and sends nothing.
struct InertDht;

impl Actor for InertDht {
    type Context = Context<Self>;
}

impl Handler<DhtLookup> for InertDht {
    type Result = ();

    fn handle(&mut self, _: DhtLookup, _: &mut Context<Self>) {}
}

impl Handler<DhtNodeSeen> for InertDht {
    type Result = ();

    fn handle(&mut self, _: DhtNodeSeen, _: &mut Context<Self>) {}
}

fn logger() -> slog::Logger {
    use slog::Drain;
    if std::env::var_os("PEER_SESSION_LOG").is_some() {
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        slog::Logger::root(drain, slog::o!())
    } else {
        slog::Logger::root(slog::Discard, slog::o!())
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn start_engine() -> Engine {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let metainfo = Metainfo::from_bytes(&torrent_bytes()).expect("our torrent parses");
    let info_hash = metainfo.info_hash;
    // File a whole (pieces 0 to 2, and piece 3's head); file b with only its last piece
    // (7) right, zeros before it.
    let folder = dir.path().join("fuzz");
    std::fs::create_dir_all(&folder).expect("the torrent's folder");
    std::fs::write(folder.join("a"), payload(0..FILE_A)).expect("writing file a");
    let last_piece = u64::from(NUM_PIECES - 1) * u64::from(PIECE_LENGTH);
    let mut b = vec![0u8; (last_piece - FILE_A) as usize];
    b.extend(payload(last_piece..TOTAL));
    std::fs::write(folder.join("b"), b).expect("writing file b");

    let observed = Arc::new(Mutex::new(Observed::default()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let download_dir = dir.path().to_path_buf();
    let seen = observed.clone();
    thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let mut config = EngineConfig::new(
                    PeerId(*b"-TA0100-fuzzfuzzfuzz"),
                    "127.0.0.1:0".parse().unwrap(),
                );
                // Never dial: addresses from fuzzed input must not be contacted.
                config.max_connecting = 0;
                // Every interested session is unchoked at once, so uploads are reached.
                config.upload_slots = 0;
                // Limits far above what loopback sessions move, so every block goes
                // through the RateLimiter's grants without being slowed by them.
                config.upload_limit = 1 << 30;
                config.download_limit = 1 << 30;
                config.hashers = 1;
                let dht = InertDht.start();
                let coordinator = Coordinator::start(TorrentParams {
                    metainfo,
                    download_dir,
                    config,
                    selection: None,
                    high_priority: Vec::new(),
                    dht: Some(DhtLinks {
                        lookup: dht.clone().recipient(),
                        node_seen: dht.recipient(),
                        port: 6881,
                    }),
                    events: Events(seen).start().recipient(),
                    log: logger(),
                });
                let arbiter = actix::Arbiter::current();
                let _ = ready_tx.send((coordinator, arbiter));
            });
            system.run()
        })
        .expect("the engine thread");
    let (coordinator, arbiter) = ready_rx
        .recv_timeout(ENGINE_DEADLINE)
        .expect("the engine starts");

    // Ready once the start-up check is done and the listener is bound.
    let deadline = Instant::now() + ENGINE_DEADLINE;
    let listen = loop {
        let progress = observed.lock().unwrap().latest.clone();
        if let Some(p) = progress {
            if p.phase == Phase::Downloading {
                if let Some(addr) = p.listen {
                    assert_eq!(p.total_bytes - p.verified_bytes, MISSING_BYTES);
                    break addr;
                }
            }
        }
        assert!(Instant::now() < deadline, "the engine did not become ready");
        thread::sleep(Duration::from_millis(20));
    };
    Engine {
        listen,
        info_hash,
        coordinator,
        arbiter,
        observed,
        baseline_fds: open_fds(),
        _dir: dir,
    }
}

/// The engine answers, still misses exactly what it missed at start, counts no peer once
/// every session has closed, and holds no more open files than at start, give or take.
fn health_check(engine: &Engine) {
    let (tx, rx) = mpsc::channel();
    let ask = engine.coordinator.send(GetAnnounceStats);
    engine.arbiter.spawn(async move {
        let _ = tx.send(ask.await);
    });
    let stats = rx
        .recv_timeout(ENGINE_DEADLINE)
        .expect("the Coordinator answers within the deadline")
        .expect("the Coordinator is alive");
    assert_eq!(stats.left, MISSING_BYTES, "verified pieces changed");

    let deadline = Instant::now() + ENGINE_DEADLINE;
    let start = engine.observed.lock().unwrap().events;
    loop {
        let (events, peers) = {
            let seen = engine.observed.lock().unwrap();
            (seen.events, seen.latest.as_ref().map_or(0, |p| p.peers))
        };
        if events > start && peers == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine still counts {peers} peers after every session closed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let fds = open_fds();
    assert!(
        fds <= engine.baseline_fds + 32,
        "open files grew from {} to {fds}",
        engine.baseline_fds
    );
}

// --- one session -----------------------------------------------------------------------------

/// What the reader thread saw from the engine.
enum Seen {
    Request(BlockRequest),
    Other,
    Closed,
}

/// A loopback address of its own for session `n`, outside 127.0.0.0/16 where other
/// programs on this machine listen.
fn source_ip(n: u64) -> Ipv4Addr {
    let n = n % (254 << 16);
    Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

fn connect(engine: &Engine, n: u64) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let from = SocketAddr::V4(SocketAddrV4::new(source_ip(n), 0));
    socket
        .bind(&from.into())
        .expect("binding a loopback address");
    socket
        .connect_timeout(&engine.listen.into(), ENGINE_DEADLINE)
        .expect("the engine accepts a connection");
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).expect("nodelay");
    stream
}

fn run_session(engine: &Engine, n: u64, data: &[u8]) {
    let Some((&flags, script)) = data.split_first() else {
        return;
    };
    let mut reserved = Reserved::none();
    reserved.set_extension_protocol(flags & 1 != 0);
    reserved.set_fast_extension(flags & 2 != 0);
    reserved.set_dht(flags & 4 != 0);
    let mut id = *b"-FZ0001-000000000000";
    id[8..].copy_from_slice(format!("{n:012}").as_bytes());

    let mut stream = connect(engine, n);
    stream
        .set_read_timeout(Some(ENGINE_DEADLINE))
        .expect("read timeout");
    // A write that cannot go through in this time means the engine stopped reading.
    stream
        .set_write_timeout(Some(ENGINE_DEADLINE))
        .expect("write timeout");
    let ours = Handshake::new(reserved, engine.info_hash, PeerId(id));
    stream
        .write_all(&ours.encode())
        .expect("sending our handshake");
    let mut theirs = [0u8; HANDSHAKE_LEN];
    stream
        .read_exact(&mut theirs)
        .expect("the engine answers a fresh handshake");
    let theirs = Handshake::parse(&theirs).expect("the engine's handshake parses");
    assert_eq!(theirs.info_hash, engine.info_hash);

    let (seen_tx, seen_rx) = mpsc::channel();
    let reader = {
        let stream = stream.try_clone().expect("cloning the socket");
        thread::spawn(move || read_engine(stream, seen_tx))
    };
    let mut session = Session {
        stream,
        seen: seen_rx,
        requests: Vec::new(),
        waited: Duration::ZERO,
        closed: false,
        broken: false,
    };
    session.play(script);

    // Our side is done: the engine must notice and close the connection.
    let _ = session.stream.shutdown(NetShutdown::Write);
    let deadline = Instant::now() + ENGINE_DEADLINE;
    while !session.closed {
        let left = deadline.saturating_duration_since(Instant::now());
        match session.seen.recv_timeout(left) {
            Ok(Seen::Closed) | Err(RecvTimeoutError::Disconnected) => session.closed = true,
            Ok(Seen::Request(_) | Seen::Other) => {}
            Err(RecvTimeoutError::Timeout) => {
                panic!("the engine kept session {n} open after it closed")
            }
        }
    }
    reader.join().expect("the reader thread");
}

/// Reads and decodes everything the engine sends until it closes the connection.
fn read_engine(mut stream: TcpStream, seen: Sender<Seen>) {
    let show = std::env::var_os("PEER_SESSION_LOG").is_some();
    let mut codec = MessageCodec::for_piece_count(NUM_PIECES);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            // A reset after we sent garbage is the engine closing on us.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading from the engine: {e}"),
        }
        loop {
            let message = codec.decode(&mut buf);
            if let (true, Ok(Some(m))) = (show, &message) {
                match m {
                    Message::Piece(b) => eprintln!(
                        "engine sent piece {} +{} ({} bytes)",
                        b.piece,
                        b.offset,
                        b.data.len()
                    ),
                    other => eprintln!("engine sent {other:?}"),
                }
            }
            match message {
                Ok(Some(Message::Request(r))) => {
                    let _ = seen.send(Seen::Request(r));
                }
                Ok(Some(Message::Piece(block))) => {
                    check_served(&block);
                    let _ = seen.send(Seen::Other);
                }
                Ok(Some(_)) => {
                    let _ = seen.send(Seen::Other);
                }
                Ok(None) => break,
                Err(e) => panic!("the engine sent a frame that does not decode: {e}"),
            }
        }
    }
    let _ = seen.send(Seen::Closed);
}

/// A block the engine uploads must be one of the pieces it has, and hold the torrent's
/// bytes: whatever a peer sent, it never serves what it did not verify.
fn check_served(block: &Block) {
    assert!(
        ON_DISK.contains(&block.piece),
        "the engine served piece {} it does not have",
        block.piece
    );
    let start = u64::from(block.piece) * u64::from(PIECE_LENGTH) + u64::from(block.offset);
    let end = start + block.data.len() as u64;
    assert!(
        u64::from(block.offset) + block.data.len() as u64 <= u64::from(PIECE_LENGTH)
            && end <= TOTAL,
        "the engine served a block past its piece"
    );
    assert!(
        block.data[..] == payload(start..end)[..],
        "the engine served wrong bytes for piece {} at {}",
        block.piece,
        block.offset
    );
}

/// One script operation. Tags are taken modulo the number of operations, so every byte is
/// some operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    /// piece
    Have,
    /// shape, fill
    Bitfield,
    /// piece, block, length
    Request,
    /// piece, block, length, fill
    Piece,
    /// piece, block, length
    Cancel,
    /// port (2 bytes)
    Port,
    HaveAll,
    HaveNone,
    /// piece
    Suggest,
    /// piece, block, length
    Reject,
    /// piece
    AllowedFast,
    /// flags, ut_metadata id, ut_pex id, reqq (2 bytes), port (2 bytes)
    ExtHandshake,
    /// kind, piece, total size (2 bytes)
    Metadata,
    /// added, dropped
    Pex,
    /// extension id, length, payload
    ExtendedRaw,
    /// length, bytes: anything at all, framing included
    Raw,
    /// message id, payload length
    Unknown,
    /// how many, shape, fill: wait for the engine's requests and answer them
    Answer,
    /// milliseconds (mod 4): wait for the engine's next message, at most that long
    Wait,
}

const OPS: [Op; 24] = [
    Op::KeepAlive,
    Op::Choke,
    Op::Unchoke,
    Op::Interested,
    Op::NotInterested,
    Op::Have,
    Op::Bitfield,
    Op::Request,
    Op::Piece,
    Op::Cancel,
    Op::Port,
    Op::HaveAll,
    Op::HaveNone,
    Op::Suggest,
    Op::Reject,
    Op::AllowedFast,
    Op::ExtHandshake,
    Op::Metadata,
    Op::Pex,
    Op::ExtendedRaw,
    Op::Raw,
    Op::Unknown,
    Op::Answer,
    Op::Wait,
];

/// Operand bytes, zero once the input runs out.
struct Operands<'a>(&'a [u8]);

impl Operands<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    /// A piece index: mostly in range or just past it, sometimes far past.
    fn piece(&mut self) -> u32 {
        match self.byte() {
            b @ 0..=239 => u32::from(b) % (NUM_PIECES + 2),
            240..=247 => NUM_PIECES,
            248..=251 => u32::MAX,
            252 | 253 => 1 << 31,
            _ => u32::from(self.u16()) << 8,
        }
    }

    /// A block offset in a piece: mostly on a block boundary.
    fn offset(&mut self) -> u32 {
        let b = self.byte();
        if b < 200 {
            u32::from(b % 2) * PIECE_LENGTH / 2
        } else {
            match b {
                200..=219 => PIECE_LENGTH,
                220..=239 => u32::from(self.byte()),
                _ => u32::MAX - u32::from(self.byte()),
            }
        }
    }

    /// A block length: mostly a real one.
    fn length(&mut self) -> u32 {
        match self.byte() {
            0..=99 => PIECE_LENGTH,
            100..=159 => PIECE_LENGTH / 2,
            // The last piece's length.
            160..=199 => (TOTAL % u64::from(PIECE_LENGTH)) as u32,
            200..=219 => 1,
            220..=229 => PIECE_LENGTH + 1,
            230..=239 => 0,
            b => u32::from(b) * u32::from(self.byte()),
        }
    }

    fn request(&mut self) -> BlockRequest {
        BlockRequest {
            piece: self.piece(),
            offset: self.offset(),
            length: self.length(),
        }
    }
}

/// A frame with any id and payload, its length prefix true.
fn frame(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    out.push(id);
    out.extend_from_slice(payload);
    out
}

fn request_frame(id: u8, r: BlockRequest) -> Vec<u8> {
    let mut payload = Vec::with_capacity(12);
    for n in [r.piece, r.offset, r.length] {
        payload.extend_from_slice(&n.to_be_bytes());
    }
    frame(id, &payload)
}

fn piece_frame(piece: u32, offset: u32, len: usize, fill: u8) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + len);
    payload.extend_from_slice(&piece.to_be_bytes());
    payload.extend_from_slice(&offset.to_be_bytes());
    payload.resize(8 + len, fill);
    frame(7, &payload)
}

fn encode(message: Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    match MessageCodec::default().encode(message, &mut out) {
        Ok(()) => out.to_vec(),
        Err(_) => Vec::new(),
    }
}

fn extended(id: u8, payload: Vec<u8>) -> Vec<u8> {
    encode(Message::Extended {
        id,
        payload: Bytes::from(payload),
    })
}

/// The state of one session on our side.
struct Session {
    stream: TcpStream,
    seen: Receiver<Seen>,
    /// Requests from the engine not yet answered, oldest first.
    requests: Vec<BlockRequest>,
    /// Time spent waiting for the engine so far.
    waited: Duration,
    closed: bool,
    /// A write failed: the engine closed on us, nothing more can be sent.
    broken: bool,
}

impl Session {
    fn play(&mut self, script: &[u8]) {
        let mut input = Operands(script);
        while !input.0.is_empty() && !self.broken {
            let op = OPS[usize::from(input.byte()) % OPS.len()];
            let bytes = match op {
                Op::KeepAlive => vec![0, 0, 0, 0],
                Op::Choke => frame(0, &[]),
                Op::Unchoke => frame(1, &[]),
                Op::Interested => frame(2, &[]),
                Op::NotInterested => frame(3, &[]),
                Op::Have => frame(4, &input.piece().to_be_bytes()),
                Op::Bitfield => {
                    let shape = input.byte();
                    let fill = input.byte();
                    // One byte covers eight pieces; other lengths are wrong.
                    let len = match shape % 4 {
                        0 | 1 => 1,
                        2 => 0,
                        _ => usize::from(shape / 4),
                    };
                    frame(5, &vec![fill; len])
                }
                Op::Request => request_frame(6, input.request()),
                Op::Piece => {
                    let (piece, offset, length, fill) =
                        (input.piece(), input.offset(), input.length(), input.byte());
                    piece_frame(
                        piece,
                        offset,
                        (length as usize).min(PIECE_LENGTH as usize + 1),
                        fill,
                    )
                }
                Op::Cancel => request_frame(8, input.request()),
                Op::Port => frame(9, &input.u16().to_be_bytes()),
                Op::HaveAll => frame(0x0E, &[]),
                Op::HaveNone => frame(0x0F, &[]),
                Op::Suggest => frame(0x0D, &input.piece().to_be_bytes()),
                Op::Reject => request_frame(0x10, input.request()),
                Op::AllowedFast => frame(0x11, &input.piece().to_be_bytes()),
                Op::ExtHandshake => {
                    let flags = input.byte();
                    let mut hs = ExtHandshake::default();
                    hs.extensions.insert("ut_metadata".into(), input.byte());
                    hs.extensions.insert("ut_pex".into(), input.byte());
                    let reqq = input.u16();
                    let port = input.u16();
                    hs.reqq = (flags & 1 != 0).then_some(u32::from(reqq));
                    hs.listen_port = (flags & 2 != 0).then_some(port);
                    hs.metadata_size = (flags & 4 != 0).then_some(u32::from(reqq) << 4);
                    hs.client = (flags & 8 != 0).then(|| "fuzz".repeat(usize::from(flags >> 4)));
                    extended(HANDSHAKE_ID, hs.encode())
                }
                Op::Metadata => {
                    let kind = input.byte();
                    let piece = match input.byte() {
                        b @ 0..=250 => u32::from(b % 3),
                        _ => u32::MAX / 16_384 + 1,
                    };
                    let total = u32::from(input.u16());
                    let message = match kind % 3 {
                        0 => MetadataMessage::Request { piece },
                        1 => MetadataMessage::Reject { piece },
                        _ => MetadataMessage::Data {
                            piece,
                            total_size: total,
                            data: Bytes::from(vec![kind; (total % 100) as usize]),
                        },
                    };
                    extended(OUR_UT_METADATA, message.encode())
                }
                Op::Pex => {
                    // Loopback addresses only, though the engine dials none of them.
                    let added = usize::from(input.byte() % 64);
                    let dropped = usize::from(input.byte() % 8);
                    let addr = |i: usize| SocketAddr::from(([127, 0, 9, i as u8], 6881 + i as u16));
                    let pex = PexMessage {
                        added: (0..added).map(addr).collect(),
                        dropped: (0..dropped).map(addr).collect(),
                    };
                    extended(OUR_UT_PEX, pex.encode())
                }
                Op::ExtendedRaw => {
                    let id = input.byte();
                    let len = usize::from(input.byte());
                    let payload = input.bytes(len).to_vec();
                    extended(id, payload)
                }
                Op::Raw => {
                    let len = usize::from(input.byte());
                    input.bytes(len).to_vec()
                }
                Op::Unknown => {
                    // Past the last id we know (20), or in the gap between 9 and 13.
                    let id = match input.byte() {
                        b @ 0..=127 => 10 + b % 3,
                        b => 21 + (b - 128),
                    };
                    let len = usize::from(input.byte());
                    frame(id, &vec![0xAB; len])
                }
                Op::Answer => {
                    let count = usize::from(input.byte() % 16) + 1;
                    let shape = input.byte();
                    let fill = input.byte();
                    self.answer(count, shape, fill)
                }
                Op::Wait => {
                    let ms = u64::from(input.byte() % 4);
                    self.wait(Duration::from_millis(ms));
                    Vec::new()
                }
            };
            self.send(&bytes);
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.broken {
            return;
        }
        if self.stream.write_all(bytes).is_err() {
            self.broken = true;
        }
    }

    /// Waits for the engine's next message, at most `time` and within the input's
    /// budget, and collects the requests it sent meanwhile.
    fn wait(&mut self, time: Duration) {
        let started = Instant::now();
        let time = time.min(MAX_WAITING.saturating_sub(self.waited));
        match self.seen.recv_timeout(time) {
            Ok(Seen::Request(r)) => self.requests.push(r),
            Ok(Seen::Other) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Seen::Closed) | Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                self.broken = true;
            }
        }
        self.drain_seen();
        self.waited += started.elapsed();
    }

    /// Collects what the engine sent without waiting.
    fn drain_seen(&mut self) {
        loop {
            match self.seen.try_recv() {
                Ok(Seen::Request(r)) => self.requests.push(r),
                Ok(Seen::Other) => {}
                Ok(Seen::Closed) | Err(mpsc::TryRecvError::Disconnected) => {
                    self.closed = true;
                    self.broken = true;
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => return,
            }
        }
    }

    /// Answers up to `count` of the engine's requests, waiting a little for the first if
    /// none is in yet. `shape` picks how each answer is wrong, if at all; the data is
    /// `fill` bytes, which never hash right.
    fn answer(&mut self, count: usize, shape: u8, fill: u8) -> Vec<u8> {
        self.drain_seen();
        let until = Instant::now() + Duration::from_millis(10);
        while self.requests.is_empty() && !self.closed && Instant::now() < until {
            self.wait(until.saturating_duration_since(Instant::now()));
            if self.waited >= MAX_WAITING {
                break;
            }
        }
        let mut out = Vec::new();
        let take = count.min(self.requests.len());
        for r in self.requests.drain(..take).collect::<Vec<_>>() {
            let len = r.length as usize;
            let bytes = match shape % 8 {
                0..=2 => piece_frame(r.piece, r.offset, len, fill),
                3 => piece_frame(r.piece, r.offset, len.saturating_sub(1).max(1), fill),
                4 => piece_frame(r.piece, r.offset.wrapping_add(1), len, fill),
                5 => encode(Message::RejectRequest(r)),
                6 => {
                    let mut twice = piece_frame(r.piece, r.offset, len, fill);
                    twice.extend(piece_frame(r.piece, r.offset, len, fill ^ 1));
                    twice
                }
                _ => encode(Message::Piece(Block {
                    piece: r.piece,
                    offset: r.offset,
                    data: Bytes::from(vec![fill; len]),
                })),
            };
            out.put_slice(&bytes);
        }
        out
    }
}
