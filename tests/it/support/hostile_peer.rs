//! A scripted seeder of our own over real TCP on loopback that misbehaves on purpose: it
//! speaks the wire protocol well enough to be dialed and to serve a torrent's true bytes,
//! and breaks it in one chosen way ([`Act`]). It counts what it did, so a test can tell
//! the misbehaviour really was played, and stops when dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use torrent_actors::wire::{Handshake, Reserved, HANDSHAKE_LEN};
use torrent_actors::{InfoHash, PeerId};

use super::lt::{LtSeeder, SeedOpts};
use super::payload::Payload;
use super::process::POLL;
use super::torrent::{make_torrent, read_metainfo};
use std::path::PathBuf;

/// The one way the peer misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// No misbehaviour at all: a fast honest seeder, to share pieces with a liar.
    Honest,
    /// A message whose length prefix claims 2 GiB.
    OversizedLength,
    /// A `have` whose length is not the 5 bytes a `have` is.
    WrongFixedSize,
    /// Random bytes right after the handshake.
    GarbageAfterHandshake,
    /// Answers the handshake with another torrent's info-hash.
    WrongInfoHash,
    /// A bitfield one byte too long.
    BitfieldWrongLength,
    /// A bitfield of the right length with the spare bits past the last piece set.
    BitfieldSpareBits,
    /// A `have` for the piece past the last.
    HavePastEnd,
    /// Before each requested block, a block of another piece nobody asked for.
    UnrequestedBlocks,
    /// Answers requests with blocks one byte short.
    WrongSizeBlocks,
    /// Right after its bitfield, `choke` and `unchoke` back to back without end.
    ChokeFlood,
    /// Serves every block with its bytes flipped.
    CorruptData,
    /// Serves honestly except for one block, the eleventh it sends (counted over all
    /// its connections), whose bytes are flipped: one bad block in one piece.
    CorruptOneBlock,
    /// Accepts the connection and never sends a byte.
    Silent,
    /// Serves a few blocks, then keeps the connection open and answers nothing more.
    StopsMidPiece,
    /// Answers the first request one byte a second, and nothing else.
    Trickle,
    /// Serves honestly, and sends an unknown message id after a few blocks (the engine
    /// under test panics on it when told to by its fault injection).
    UnknownMessage,
    /// Sends its full bitfield twice in a row, then serves honestly.
    TwoBitfields,
    /// Announces the first half of the pieces, serves a few blocks, then sends its full
    /// bitfield again (as aria2c does in place of many `have`s) and serves on: not a
    /// misbehaviour.
    GrowingBitfield,
    /// An empty bitfield, then `have` for every piece over and over, as fast as the
    /// socket takes them.
    HaveFlood,
    /// A well-formed BEP 52 `hashes` message (two leaves of a made-up file) that nobody
    /// asked for.
    UnaskedHashes,
    /// A BEP 52 `hash request` for 3 nodes, which is not a power of two.
    HashRequestOfThree,
}

/// What the peer did, for the test to check the script ran.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections that opened with a plaintext handshake (or any, for `Silent`). The
    /// peer speaks no encryption: a client's encrypted attempt before its plaintext
    /// fall-back is not counted.
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub blocks_sent: AtomicU64,
    pub misbehaviours: AtomicU64,
    /// Requests for pieces it announced only in a later message (`GrowingBitfield`).
    pub late_piece_requests: AtomicU64,
}

/// See the module documentation.
pub struct HostilePeer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

/// The torrent as the peer serves it.
#[derive(Clone)]
pub struct Served {
    pub info_hash: InfoHash,
    /// The whole content, files end to end.
    pub content: Arc<Vec<u8>>,
    pub piece_len: u64,
}

impl Served {
    pub fn num_pieces(&self) -> u32 {
        (self.content.len() as u64).div_ceil(self.piece_len) as u32
    }

    /// The bits of every piece, spare bits clear.
    pub fn full_bitfield(&self) -> Vec<u8> {
        let n = self.num_pieces() as usize;
        let mut bits = vec![0xffu8; n.div_ceil(8)];
        if n % 8 != 0 {
            if let Some(last) = bits.last_mut() {
                *last = 0xffu8 << (8 - n % 8);
            }
        }
        bits
    }

    fn bitfield_len(&self) -> usize {
        (self.num_pieces() as usize).div_ceil(8)
    }

    /// The bytes of a block, if it lies inside the torrent and its piece and is at most
    /// 128 KiB (what a peer may ask).
    pub fn block(&self, piece: u32, offset: u32, length: u32) -> Option<&[u8]> {
        let start = u64::from(piece) * self.piece_len + u64::from(offset);
        let end = start + u64::from(length);
        if offset as u64 + u64::from(length) > self.piece_len
            || end > self.content.len() as u64
            || length > 1 << 17
        {
            return None;
        }
        Some(&self.content[start as usize..end as usize])
    }
}

/// A one-file torrent, its content as scripted peers serve it, and an honest libtorrent
/// seeder of it capped at a rate, so the scripted peers are part of the download rather
/// than bystanders.
pub struct SeededSwarm {
    /// The folder everything is in, removed on drop.
    pub tmp: tempfile::TempDir,
    pub payload: Payload,
    pub torrent: PathBuf,
    /// Where the download under test goes.
    pub out: PathBuf,
    pub served: Served,
    pub seeder: LtSeeder,
}

impl SeededSwarm {
    /// `len` bytes named `name` in pieces of `2^piece_exp`, seeded at `seed_rate` bytes a
    /// second.
    pub fn start(name: &str, len: u64, piece_exp: u32, seed_rate: u64) -> SeededSwarm {
        let tmp = tempfile::tempdir().expect("temp folder");
        let payload = Payload::single(&tmp.path().join("seed"), name, len);
        let torrent = tmp.path().join("t.torrent");
        make_torrent(&payload.root(), &torrent, piece_exp, &[]);
        let content = std::fs::read(payload.dir.join(name)).expect("reading the payload");
        let served = Served {
            info_hash: read_metainfo(&torrent).info_hash,
            content: Arc::new(content),
            piece_len: 1 << piece_exp,
        };
        let seeder = LtSeeder::start(
            &torrent,
            &payload.dir,
            SeedOpts {
                ready_without_announce: true,
                upload_limit: Some(seed_rate),
                ..SeedOpts::default()
            },
        );
        SeededSwarm {
            out: tmp.path().join("out"),
            tmp,
            payload,
            torrent,
            served,
            seeder,
        }
    }
}

impl HostilePeer {
    /// Listens on 127.0.0.1 and plays `act` on every connection.
    pub fn start(served: Served, act: Act) -> HostilePeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the hostile peer");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("hostile peer address");
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counters, stop) = (counters.clone(), stop.clone());
            thread::spawn(move || {
                // Bounded: a test lasts minutes at most.
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (counters, stop, served) =
                                (counters.clone(), stop.clone(), served.clone());
                            thread::spawn(move || {
                                let mut session = Session {
                                    stream,
                                    served,
                                    act,
                                    counters,
                                    stop,
                                };
                                let _ = session.run();
                            });
                        }
                        Err(_) => thread::sleep(POLL),
                    }
                }
            })
        };
        HostilePeer {
            addr,
            counters,
            stop,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it did so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection.
struct Session {
    stream: TcpStream,
    served: Served,
    act: Act,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

/// A message read off the wire: id and payload (`None` id for a keep-alive).
type Frame = (Option<u8>, Vec<u8>);

impl Session {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn misbehaved(&self) {
        self.counters.misbehaviours.fetch_add(1, Ordering::Relaxed);
    }

    /// Sleeps in short steps until stopped or `d` passed.
    fn idle(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            thread::sleep(POLL);
        }
    }

    /// Reads exactly `buf.len()` bytes, giving up when stopped or after 60 s.
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = 0;
        while got < buf.len() {
            if self.stopped() || Instant::now() > deadline {
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

    fn read_frame(&mut self) -> std::io::Result<Frame> {
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
        let id = body[0];
        body.remove(0);
        Ok((Some(id), body))
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn send(&mut self, id: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(5 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
        frame.push(id);
        frame.extend_from_slice(payload);
        self.write(&frame)
    }

    fn send_piece(&mut self, piece: u32, offset: u32, data: &[u8]) -> std::io::Result<()> {
        let mut payload = Vec::with_capacity(8 + data.len());
        payload.extend_from_slice(&piece.to_be_bytes());
        payload.extend_from_slice(&offset.to_be_bytes());
        payload.extend_from_slice(data);
        self.send(7, &payload)?;
        self.counters.blocks_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A bitfield of the first half of the pieces.
    fn half_bitfield(&self) -> Vec<u8> {
        let half = self.served.num_pieces() / 2;
        let mut bits = vec![0u8; self.served.bitfield_len()];
        for p in 0..half {
            bits[p as usize / 8] |= 0x80 >> (p % 8);
        }
        bits
    }

    fn full_bitfield(&self) -> Vec<u8> {
        let n = self.served.num_pieces() as usize;
        let mut bits = vec![0xffu8; self.served.bitfield_len()];
        if n % 8 != 0 {
            if let Some(last) = bits.last_mut() {
                *last = 0xffu8 << (8 - n % 8);
            }
        }
        bits
    }

    fn run(&mut self) -> std::io::Result<()> {
        self.stream
            .set_read_timeout(Some(Duration::from_millis(200)))?;
        self.stream
            .set_write_timeout(Some(Duration::from_secs(30)))?;
        if self.act == Act::Silent {
            self.counters.connections.fetch_add(1, Ordering::Relaxed);
            self.misbehaved();
            self.idle(Duration::from_secs(300));
            return Ok(());
        }
        let mut theirs = [0u8; HANDSHAKE_LEN];
        self.read_exact(&mut theirs)?;
        let theirs = Handshake::parse(&theirs).map_err(|_| ErrorKind::InvalidData)?;
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        if theirs.info_hash != self.served.info_hash {
            return Ok(());
        }
        let mut info_hash = self.served.info_hash;
        if self.act == Act::WrongInfoHash {
            info_hash.0[0] ^= 0xff;
            self.misbehaved();
        }
        let mut id = *b"-HP0001-000000000000";
        id[8..].copy_from_slice(&rand::random::<[u8; 12]>());
        let ours = Handshake::new(Reserved::none(), info_hash, PeerId(id));
        self.write(&ours.encode())?;
        if self.act == Act::WrongInfoHash {
            self.idle(Duration::from_secs(5));
            return Ok(());
        }
        match self.act {
            Act::OversizedLength => {
                self.send(5, &self.full_bitfield())?;
                self.misbehaved();
                self.write(&[0x7f, 0xff, 0xff, 0xff, 7])?;
                return self.drain();
            }
            Act::WrongFixedSize => {
                self.send(5, &self.full_bitfield())?;
                self.misbehaved();
                self.send(4, &[0, 0, 0, 1, 0, 0, 0, 0])?;
                return self.drain();
            }
            Act::GarbageAfterHandshake => {
                self.misbehaved();
                let mut garbage = Vec::new();
                while garbage.len() < 4096 {
                    garbage.extend_from_slice(&rand::random::<[u8; 32]>());
                }
                self.write(&garbage)?;
                return self.drain();
            }
            Act::BitfieldWrongLength => {
                let mut bits = self.full_bitfield();
                bits.push(0);
                self.misbehaved();
                self.send(5, &bits)?;
                return self.drain();
            }
            Act::BitfieldSpareBits => {
                let bits = vec![0xffu8; self.served.bitfield_len()];
                self.misbehaved();
                self.send(5, &bits)?;
                return self.drain();
            }
            Act::UnaskedHashes | Act::HashRequestOfThree => {
                self.send(5, &self.full_bitfield())?;
                self.misbehaved();
                // pieces root, base layer 0, index 0, length, proof layers 0.
                let length: u32 = if self.act == Act::UnaskedHashes { 2 } else { 3 };
                let mut body = vec![7u8; 32];
                for field in [0u32, 0, length, 0] {
                    body.extend_from_slice(&field.to_be_bytes());
                }
                let id = if self.act == Act::UnaskedHashes {
                    body.extend_from_slice(&[1u8; 64]);
                    22
                } else {
                    21
                };
                self.send(id, &body)?;
                return self.drain();
            }
            Act::HavePastEnd => {
                self.send(5, &self.full_bitfield())?;
                self.misbehaved();
                let past = self.served.num_pieces();
                self.send(4, &past.to_be_bytes())?;
                return self.drain();
            }
            Act::HaveFlood => {
                self.send(5, &vec![0u8; self.served.bitfield_len()])?;
                self.send(1, &[])?;
                self.misbehaved();
                let mut round = Vec::new();
                for piece in 0..self.served.num_pieces() {
                    round.extend_from_slice(&5u32.to_be_bytes());
                    round.push(4);
                    round.extend_from_slice(&piece.to_be_bytes());
                }
                // Bounded: about 20 MB of `have`s, far past any sane limit; the engine is
                // expected to hang up long before (then the write fails).
                for _ in 0..25_000 {
                    if self.stopped() {
                        break;
                    }
                    self.write(&round)?;
                }
                return self.drain();
            }
            Act::GrowingBitfield => {
                self.send(5, &self.half_bitfield())?;
                self.send(1, &[])?;
                return self.serve();
            }
            _ => {}
        }
        self.send(5, &self.full_bitfield())?;
        if self.act == Act::TwoBitfields {
            self.misbehaved();
            self.send(5, &self.full_bitfield())?;
        }
        self.send(1, &[])?;
        if self.act == Act::ChokeFlood {
            self.misbehaved();
            // Bounded: the engine is expected to give up on us long before.
            for _ in 0..200_000 {
                if self.stopped() {
                    break;
                }
                self.send(0, &[])?;
                self.send(1, &[])?;
            }
            return self.drain();
        }
        self.serve()
    }

    /// Reads and discards until the other side closes (or the test ends).
    fn drain(&mut self) -> std::io::Result<()> {
        loop {
            self.read_frame()?;
        }
    }

    /// Answers requests the way `act` says.
    fn serve(&mut self) -> std::io::Result<()> {
        let mut answered = 0u64;
        loop {
            let (id, payload) = self.read_frame()?;
            if id != Some(6) || payload.len() != 12 {
                continue;
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let word = |i: usize| {
                u32::from_be_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
            };
            let (piece, offset, length) = (word(0), word(4), word(8));
            let Some(data) = self.served.block(piece, offset, length).map(<[u8]>::to_vec) else {
                continue;
            };
            if self.act == Act::GrowingBitfield && piece >= self.served.num_pieces() / 2 {
                self.counters
                    .late_piece_requests
                    .fetch_add(1, Ordering::Relaxed);
            }
            match self.act {
                Act::UnrequestedBlocks => {
                    let other = (piece + 1) % self.served.num_pieces();
                    let len = 16 * 1024.min(self.served.piece_len as u32);
                    if let Some(extra) = self.served.block(other, 0, len).map(<[u8]>::to_vec) {
                        self.misbehaved();
                        self.send_piece(other, 0, &extra)?;
                    }
                    self.send_piece(piece, offset, &data)?;
                }
                Act::WrongSizeBlocks => {
                    self.misbehaved();
                    self.send_piece(piece, offset, &data[..data.len() - 1])?;
                }
                Act::CorruptData => {
                    self.misbehaved();
                    let bad: Vec<u8> = data.iter().map(|b| !b).collect();
                    self.send_piece(piece, offset, &bad)?;
                }
                Act::CorruptOneBlock
                    if self.counters.blocks_sent.load(Ordering::Relaxed) == 10
                        && self
                            .counters
                            .misbehaviours
                            .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok() =>
                {
                    let bad: Vec<u8> = data.iter().map(|b| !b).collect();
                    self.send_piece(piece, offset, &bad)?;
                }
                Act::StopsMidPiece if answered >= 3 => {
                    self.misbehaved();
                    return self.drain();
                }
                Act::Trickle => {
                    self.misbehaved();
                    let mut frame = Vec::new();
                    frame.extend_from_slice(&(9 + data.len() as u32).to_be_bytes());
                    frame.push(7);
                    frame.extend_from_slice(&piece.to_be_bytes());
                    frame.extend_from_slice(&offset.to_be_bytes());
                    frame.extend_from_slice(&data);
                    for byte in frame {
                        if self.stopped() {
                            break;
                        }
                        self.write(&[byte])?;
                        self.idle(Duration::from_secs(1));
                    }
                    return Ok(());
                }
                Act::GrowingBitfield if answered == 8 => {
                    self.send(5, &self.full_bitfield())?;
                    self.send_piece(piece, offset, &data)?;
                }
                Act::UnknownMessage if answered == 3 => {
                    self.misbehaved();
                    self.send(0xee, b"surprise")?;
                    self.send_piece(piece, offset, &data)?;
                }
                _ => self.send_piece(piece, offset, &data)?,
            }
            answered += 1;
        }
    }
}
