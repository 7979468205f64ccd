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
use torrent_actors::wire::ext::{self, ExtHandshake, MetadataMessage};
use torrent_actors::wire::{Handshake, Reserved, HANDSHAKE_LEN};
use torrent_actors::{InfoHash, PeerId};

use super::process::POLL;

/// The id under which the fake peer asks for `ut_metadata` messages.
const FAKE_UT_METADATA: u8 = 3;

/// A peer that offers a torrent's metadata and answers every piece asked with bytes of
/// its choosing: wrong ones of the right size ([`FakeMetadataPeer::start`]), or bytes
/// that do hash to the info-hash but are no valid info dictionary
/// ([`FakeMetadataPeer::serving`]).
pub struct FakeMetadataPeer {
    addr: SocketAddr,
    lies: Arc<AtomicUsize>,
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
        let metadata = Arc::new(metadata);
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
            thread::spawn(move || {
                // Bounded: a test lasts minutes at most.
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (lies, stop, connections) =
                                (lies.clone(), stop.clone(), connections.clone());
                            let metadata = metadata.clone();
                            thread::spawn(move || {
                                let _ = serve_lies(
                                    stream,
                                    info_hash,
                                    &metadata,
                                    &lies,
                                    &connections,
                                    &stop,
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

fn serve_lies(
    mut stream: TcpStream,
    info_hash: InfoHash,
    metadata: &[u8],
    lies: &AtomicUsize,
    connections: &AtomicUsize,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let size = metadata.len();
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut theirs = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut theirs)?;
    // It speaks no encryption: a client's encrypted attempt (before its plaintext
    // fall-back) is not a connection to count.
    if Handshake::parse(&theirs).is_err() {
        return Ok(());
    }
    connections.fetch_add(1, Ordering::Relaxed);
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
