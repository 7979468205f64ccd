//! Opening peer connections: dialing out, accepting, and the handshake, each bounded in
//! time. A connection only becomes a Peer actor once both handshakes are done and the
//! info-hash matched, so the actor never sees a stranger. With `peer.rs`, this is the only
//! code that touches peer sockets.

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
/// info-hash with `accepts`, and answers with ours.
pub async fn accept(
    mut stream: TcpStream,
    accepts: impl Fn(&InfoHash) -> bool,
    our_id: PeerId,
    reserved: Reserved,
    timeout: Duration,
) -> Result<(TcpStream, Handshake), ConnectError> {
    stream.set_nodelay(true)?;
    let theirs = tokio::time::timeout(timeout, read_handshake(&mut stream))
        .await
        .map_err(|_| ConnectError::Timeout("waiting for the handshake"))??;
    if !accepts(&theirs.info_hash) {
        return Err(ConnectError::WrongTorrent(theirs.info_hash));
    }
    let ours = Handshake::new(reserved, theirs.info_hash, our_id);
    tokio::time::timeout(timeout, stream.write_all(&ours.encode()))
        .await
        .map_err(|_| ConnectError::Timeout("sending the handshake"))??;
    Ok((stream, theirs))
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
