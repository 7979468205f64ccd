//! Scripted peers of our own over real TCP on loopback, for the misbehaviours no honest
//! client will play: each speaks just enough of the wire protocol to reach the point
//! where it misbehaves, counts what it did, and stops when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use torrent_actors::metainfo::tree_nodes::TreeNodes;
use torrent_actors::wire::ext::{self, ExtHandshake, MetadataMessage};
use torrent_actors::wire::{Handshake, HashRequest, Reserved, HANDSHAKE_LEN};
use torrent_actors::{InfoHash, PeerId};

use super::process::POLL;

/// The id under which the fake peer asks for `ut_metadata` messages.
const FAKE_UT_METADATA: u8 = 3;

/// How a [`FakeMetadataPeer`] answers BEP 52 `hash request`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashReply {
    /// Not at all.
    Silent,
    /// With `hash reject`.
    Reject,
    /// With a `hashes` of the right shape whose nodes are made up, so they prove nothing.
    Garbage,
}

/// A peer that offers a torrent's metadata and answers every piece asked with bytes of
/// its choosing: wrong ones of the right size ([`FakeMetadataPeer::start`]), or bytes
/// that do hash to the info-hash but are no valid info dictionary
/// ([`FakeMetadataPeer::serving`]), or a v2 torrent's true info dictionary with lies or
/// nothing for its piece layers ([`FakeMetadataPeer::serving_v2`]).
pub struct FakeMetadataPeer {
    addr: SocketAddr,
    lies: Arc<AtomicUsize>,
    hash_requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeMetadataPeer {
    /// Listens on 127.0.0.1 for connections about `info_hash`, claiming an info
    /// dictionary of `size` bytes and sending `x`s for it.
    pub fn start(info_hash: InfoHash, size: usize) -> FakeMetadataPeer {
        FakeMetadataPeer::serving(info_hash, vec![b'x'; size])
    }

    /// Listens on 127.0.0.1 for connections about `info_hash` and serves `metadata` as
    /// its info dictionary, whatever it is.
    pub fn serving(info_hash: InfoHash, metadata: Vec<u8>) -> FakeMetadataPeer {
        FakeMetadataPeer::serving_v2(info_hash, metadata, HashReply::Silent)
    }

    /// As [`FakeMetadataPeer::serving`], answering hash requests as `hashes` says.
    pub fn serving_v2(
        info_hash: InfoHash,
        metadata: Vec<u8>,
        hashes: HashReply,
    ) -> FakeMetadataPeer {
        FakeMetadataPeer::serving_v2_then_honest(info_hash, metadata, hashes, None)
    }

    /// As [`FakeMetadataPeer::serving_v2`] on its first connection; on later ones, with
    /// `honest` given, hash requests are answered truly from those trees, as a peer that
    /// was only slow once would.
    pub fn serving_v2_then_honest(
        info_hash: InfoHash,
        metadata: Vec<u8>,
        hashes: HashReply,
        honest: Option<Arc<TreeNodes>>,
    ) -> FakeMetadataPeer {
        let metadata = Arc::new(metadata);
        let hash_requests = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake peer");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("fake peer address");
        let lies = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lies, connections, stop) = (lies.clone(), connections.clone(), stop.clone());
            let hash_requests = hash_requests.clone();
            thread::spawn(move || {
                // Bounded: a test lasts minutes at most.
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (lies, stop, connections) =
                                (lies.clone(), stop.clone(), connections.clone());
                            let metadata = metadata.clone();
                            let hash_requests = hash_requests.clone();
                            let honest = honest.clone();
                            thread::spawn(move || {
                                let counters = Counters {
                                    lies: &lies,
                                    connections: &connections,
                                    hash_requests: &hash_requests,
                                };
                                let hashes = Answers {
                                    first: hashes,
                                    honest: honest.as_deref(),
                                };
                                let _ = serve_lies(
                                    stream, info_hash, &metadata, hashes, counters, &stop,
                                );
                            });
                        }
                        Err(_) => thread::sleep(POLL),
                    }
                }
            })
        };
        FakeMetadataPeer {
            addr,
            lies,
            hash_requests,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections that opened with a plaintext handshake so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Hash requests received so far.
    pub fn hash_requests(&self) -> usize {
        self.hash_requests.load(Ordering::Relaxed)
    }

    /// Waits until it has sent at least `n` pieces; false on timeout.
    pub fn wait_for_lies(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.lies.load(Ordering::Relaxed) >= n {
                return true;
            }
            thread::sleep(POLL);
        }
        false
    }
}

impl Drop for FakeMetadataPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 20 {
        return Err(std::io::Error::other("frame too long"));
    }
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame)?;
    Ok(frame)
}

fn write_extended(stream: &mut TcpStream, id: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
    frame.push(20);
    frame.push(id);
    frame.extend_from_slice(payload);
    stream.write_all(&frame)
}

/// What one connection of a fake peer counts.
struct Counters<'a> {
    lies: &'a AtomicUsize,
    connections: &'a AtomicUsize,
    hash_requests: &'a AtomicUsize,
}

/// How a connection answers hash requests: as `first` says on the first connection; on
/// later ones from `honest`, if given.
#[derive(Clone, Copy)]
struct Answers<'a> {
    first: HashReply,
    honest: Option<&'a TreeNodes>,
}

/// The true reply to a 48-byte `hash request` body from `trees`: `hashes`, or `hash
/// reject` for what the trees refuse; the whole frame.
fn honest_reply(body: &[u8], trees: &TreeNodes) -> Option<Vec<u8>> {
    let word = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().unwrap());
    if body.len() != 48 {
        return None;
    }
    let req = HashRequest {
        pieces_root: body[..32].try_into().unwrap(),
        base_layer: word(32),
        index: word(36),
        length: word(40),
        proof_layers: word(44),
    };
    let (id, nodes) = match trees.answer(&req) {
        Ok(nodes) => (22u8, nodes),
        Err(_) => (23u8, Vec::new()),
    };
    let mut frame = ((1 + 48 + 32 * nodes.len()) as u32).to_be_bytes().to_vec();
    frame.push(id);
    frame.extend_from_slice(body);
    frame.extend(nodes.iter().flatten());
    Some(frame)
}

/// The reply to a 48-byte `hash request` body, as `reply` says: the whole frame.
fn hash_reply(body: &[u8], reply: HashReply) -> Option<Vec<u8>> {
    let word = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().unwrap());
    if body.len() != 48 {
        return None;
    }
    let (length, proof_layers) = (word(40), word(44));
    let (id, nodes) = match reply {
        HashReply::Silent => return None,
        HashReply::Reject => (23u8, 0),
        HashReply::Garbage => {
            let span = length.max(1).trailing_zeros();
            (
                22u8,
                length + proof_layers.saturating_sub(span.saturating_sub(1)),
            )
        }
    };
    let mut frame = ((1 + 48 + 32 * nodes as usize) as u32)
        .to_be_bytes()
        .to_vec();
    frame.push(id);
    frame.extend_from_slice(body);
    frame.extend(std::iter::repeat_n(0x5a, 32 * nodes as usize));
    Some(frame)
}

fn serve_lies(
    mut stream: TcpStream,
    info_hash: InfoHash,
    metadata: &[u8],
    hashes: Answers<'_>,
    counters: Counters<'_>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let Counters {
        lies,
        connections,
        hash_requests,
    } = counters;
    let size = metadata.len();
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut theirs = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut theirs)?;
    // It speaks no encryption: a client's encrypted attempt (before its plaintext
    // fall-back) is not a connection to count.
    if Handshake::parse(&theirs).is_err() {
        return Ok(());
    }
    let earlier = connections.fetch_add(1, Ordering::Relaxed);
    let mut reserved = Reserved::none();
    reserved.set_extension_protocol(true);
    stream.write_all(
        &Handshake::new(reserved, info_hash, PeerId(*b"-FAKE01-liarliarliar")).encode(),
    )?;
    let mut hs = ExtHandshake {
        metadata_size: Some(size as u32),
        ..ExtHandshake::default()
    };
    hs.extensions
        .insert(ext::UT_METADATA.into(), FAKE_UT_METADATA);
    write_extended(&mut stream, ext::HANDSHAKE_ID, &hs.encode())?;
    let mut their_id = None;
    while !stop.load(Ordering::Relaxed) {
        let frame = match read_frame(&mut stream) {
            Ok(f) => f,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        if frame.first() == Some(&21) {
            hash_requests.fetch_add(1, Ordering::Relaxed);
            let reply = match hashes.honest {
                Some(trees) if earlier > 0 => honest_reply(&frame[1..], trees),
                _ => hash_reply(&frame[1..], hashes.first),
            };
            if let Some(reply) = reply {
                stream.write_all(&reply)?;
            }
            continue;
        }
        if frame.len() < 2 || frame[0] != 20 {
            continue;
        }
        let payload = Bytes::copy_from_slice(&frame[2..]);
        if frame[1] == ext::HANDSHAKE_ID {
            their_id = ExtHandshake::decode(&payload)
                .ok()
                .and_then(|h| h.id_of(ext::UT_METADATA));
        } else if frame[1] == FAKE_UT_METADATA {
            if let (Ok(MetadataMessage::Request { piece }), Some(id)) =
                (MetadataMessage::decode(&payload), their_id)
            {
                let len = ext::metadata_piece_len(size as u32, piece).unwrap_or(0);
                let start = piece as usize * 16 * 1024;
                let data = MetadataMessage::Data {
                    piece,
                    total_size: size as u32,
                    data: Bytes::copy_from_slice(metadata.get(start..start + len).unwrap_or(&[])),
                };
                write_extended(&mut stream, id, &data.encode())?;
                lies.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Connects to `addr` as a peer of `info_hash` offering the extension protocol and
/// returns the extension handshake it sends, or why there was none.
pub fn ext_handshake_of(addr: SocketAddr, info_hash: InfoHash) -> Result<ExtHandshake, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut reserved = Reserved::none();
    reserved.set_extension_protocol(true);
    stream
        .write_all(&Handshake::new(reserved, info_hash, PeerId(*b"-FAKE01-probeprobepr")).encode())
        .map_err(|e| e.to_string())?;
    let mut theirs = [0u8; HANDSHAKE_LEN];
    stream
        .read_exact(&mut theirs)
        .map_err(|e| format!("reading the handshake: {e}"))?;
    // The extension handshake comes among the first few messages.
    for _ in 0..20 {
        let frame = read_frame(&mut stream).map_err(|e| format!("reading a message: {e}"))?;
        if frame.len() >= 2 && frame[0] == 20 && frame[1] == ext::HANDSHAKE_ID {
            return ExtHandshake::decode(&frame[2..]).map_err(|e| e.to_string());
        }
    }
    Err("no extension handshake among the first 20 messages".into())
}
