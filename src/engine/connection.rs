//! Opening peer connections: dialing out, accepting, and the handshake, each bounded in
//! time. A connection only becomes a Peer actor once both handshakes are done and the
//! info-hash matched, so the actor never sees a stranger. With `peer.rs` (and the shared
//! `listener.rs`, which only passes accepted sockets on), this is the only code that
//! touches peer sockets.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::wire::{Handshake, Reserved, HANDSHAKE_LEN};
use crate::{InfoHash, PeerId};

/// Time limits for opening a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectTimeouts {
    /// From `connect()` to an established TCP connection.
    pub connect: Duration,
    /// From the TCP connection to the peer's complete handshake.
    pub handshake: Duration,
}

impl Default for ConnectTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            handshake: Duration::from_secs(10),
        }
    }
}

/// Why a connection did not get past the handshake.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// A time limit passed.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// The peer's handshake was malformed.
    #[error("bad handshake: {0}")]
    BadHandshake(String),
    /// The peer is on another torrent.
    #[error("peer is on another torrent ({0})")]
    WrongTorrent(InfoHash),
}

/// The reserved bits we send: the extension protocol (BEP 10: metadata, peer exchange,
/// request queue limits), the fast extension (BEP 6), and the DHT bit (BEP 5) when we
/// run a DHT node that peers may tell about theirs.
pub fn our_reserved(dht: bool) -> Reserved {
    let mut r = Reserved::none();
    r.set_extension_protocol(true);
    r.set_fast_extension(true);
    r.set_dht(dht);
    r
}

/// Dials `addr` and exchanges handshakes for `info_hash`.
pub async fn connect(
    addr: SocketAddr,
    info_hash: InfoHash,
    our_id: PeerId,
    reserved: Reserved,
    timeouts: ConnectTimeouts,
) -> Result<(TcpStream, Handshake), ConnectError> {
    let mut stream = tokio::time::timeout(timeouts.connect, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout("connecting"))??;
    stream.set_nodelay(true)?;
    let ours = Handshake::new(reserved, info_hash, our_id);
    let theirs = tokio::time::timeout(timeouts.handshake, async {
        stream.write_all(&ours.encode()).await?;
        read_handshake(&mut stream).await
    })
    .await
    .map_err(|_| ConnectError::Timeout("waiting for the handshake"))??;
    if theirs.info_hash != info_hash {
        return Err(ConnectError::WrongTorrent(theirs.info_hash));
    }
    Ok((stream, theirs))
}

/// Completes the handshake of an accepted connection: reads the peer's, checks the
/// info-hash with `accepts`, and answers with ours. The composition of
/// [`read_incoming_handshake`] and [`answer_handshake`], for a listener that serves one
/// torrent.
pub async fn accept(
    mut stream: TcpStream,
    accepts: impl Fn(&InfoHash) -> bool,
    our_id: PeerId,
    reserved: Reserved,
    timeout: Duration,
) -> Result<(TcpStream, Handshake), ConnectError> {
    let theirs = read_incoming_handshake(&mut stream, timeout).await?;
    if !accepts(&theirs.info_hash) {
        return Err(ConnectError::WrongTorrent(theirs.info_hash));
    }
    answer_handshake(&mut stream, &theirs, our_id, reserved, timeout).await?;
    Ok((stream, theirs))
}

/// The first half of accepting: sets `TCP_NODELAY` and reads the peer's handshake within
/// `timeout`. Nothing is sent, so whoever reads it (a torrent's own listener, or the
/// shared [`Listener`](super::listener::Listener) routing by info-hash) can still close
/// the socket without a word.
pub async fn read_incoming_handshake(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Handshake, ConnectError> {
    stream.set_nodelay(true)?;
    tokio::time::timeout(timeout, read_handshake(stream))
        .await
        .map_err(|_| ConnectError::Timeout("waiting for the handshake"))?
}

/// The second half of accepting: answers the peer's handshake `theirs` with ours for the
/// same info-hash, within `timeout`. The caller has decided that the torrent takes it.
pub async fn answer_handshake(
    stream: &mut TcpStream,
    theirs: &Handshake,
    our_id: PeerId,
    reserved: Reserved,
    timeout: Duration,
) -> Result<(), ConnectError> {
    let ours = Handshake::new(reserved, theirs.info_hash, our_id);
    tokio::time::timeout(timeout, stream.write_all(&ours.encode()))
        .await
        .map_err(|_| ConnectError::Timeout("sending the handshake"))??;
    Ok(())
}

async fn read_handshake(stream: &mut TcpStream) -> Result<Handshake, ConnectError> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut buf).await?;
    Handshake::parse(&buf).map_err(|e| ConnectError::BadHandshake(e.to_string()))
}

/// Binds the listening socket for incoming peers.
pub async fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepted connections as a `Stream`, so a listener can be an actor stream
/// (`ctx.add_stream`) of the Coordinator or of the shared [`Listener`](super::listener::Listener).
pub struct TcpListenerStream(pub TcpListener);

impl futures::Stream for TcpListenerStream {
    type Item = std::io::Result<(TcpStream, SocketAddr)>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_accept(cx).map(Some)
    }
}
