//! Opening peer connections: dialing out, accepting, and the handshakes (message stream
//! encryption when it applies, then BitTorrent's), each bounded in time. A connection only
//! becomes a Peer actor once both handshakes are done and the info-hash matched, so the
//! actor never sees a stranger. With `peer.rs` (and the shared `listener.rs`, which only
//! passes accepted sockets on), this is the only code that touches peer sockets; what it
//! hands on is a [`PeerStream`], plaintext or encrypted alike.
//!
//! Encryption follows [`Encryption`]: `prefer` dials encrypted and, when the peer does not
//! complete the encrypted handshake, dials again in plaintext; incoming connections are told
//! apart by their first 20 bytes (a plaintext handshake starts with 19 and
//! "BitTorrent protocol", an encrypted one with a random public key). The encrypted
//! handshake itself is the pure `wire::mse`, driven here.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::transport::PeerStream;
use crate::wire::mse::{self, Encryption, Established, MseError, MseHandshake, SkeyTable};
use crate::wire::{Handshake, Reserved, HANDSHAKE_LEN, PROTOCOL_STRING};
use crate::{InfoHash, PeerId};

/// Time limits for opening a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectTimeouts {
    /// From `connect()` to an established TCP connection.
    pub connect: Duration,
    /// From the TCP connection to the peer's complete handshake (the encrypted handshake
    /// included).
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
    /// The peer broke the encrypted handshake.
    #[error("encrypted handshake failed: {0}")]
    Encryption(#[from] MseError),
    /// A plaintext handshake came while encryption is required.
    #[error("plaintext handshake refused: encryption is required")]
    PlaintextRefused,
    /// Something other than a plaintext handshake came while encryption is off.
    #[error("not a plaintext handshake, and encryption is off")]
    EncryptedRefused,
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

/// Dials `addr` and exchanges handshakes for `info_hash`, encrypted as `encryption` says.
/// With `prefer`, a peer that refuses the encrypted handshake (closes the connection or
/// answers something else) is dialed again at once in plaintext; one that stays silent
/// is not, as it would stay silent in plaintext too and cost a second timeout.
pub async fn connect(
    addr: SocketAddr,
    info_hash: InfoHash,
    our_id: PeerId,
    reserved: Reserved,
    timeouts: ConnectTimeouts,
    encryption: Encryption,
) -> Result<(PeerStream, Handshake), ConnectError> {
    let ours = Handshake::new(reserved, info_hash, our_id);
    if encryption.dials_encrypted() {
        let tcp = dial(addr, timeouts).await?;
        let mut past_encryption = false;
        let attempt = tokio::time::timeout(timeouts.handshake, async {
            let mut stream = initiate_encrypted(tcp, &ours, encryption).await?;
            past_encryption = true;
            let theirs = read_handshake(&mut stream).await?;
            Ok::<_, ConnectError>((stream, theirs))
        })
        .await;
        let failed = match attempt {
            Ok(Ok((stream, theirs))) => return checked(stream, theirs, info_hash),
            Ok(Err(e)) => e,
            Err(_) => ConnectError::Timeout("waiting for the handshake"),
        };
        let refused = matches!(failed, ConnectError::Io(_) | ConnectError::Encryption(_));
        if past_encryption || encryption == Encryption::Require || !refused {
            return Err(failed);
        }
        // The peer does not speak the encrypted handshake (most such peers close the
        // connection on our public key): try again in plaintext.
    }
    let mut tcp = dial(addr, timeouts).await?;
    let theirs = tokio::time::timeout(timeouts.handshake, async {
        tcp.write_all(&ours.encode()).await?;
        read_handshake(&mut tcp).await
    })
    .await
    .map_err(|_| ConnectError::Timeout("waiting for the handshake"))??;
    checked(PeerStream::plain(tcp), theirs, info_hash)
}

/// A TCP connection to `addr` within the connect timeout.
async fn dial(addr: SocketAddr, timeouts: ConnectTimeouts) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeouts.connect, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout("connecting"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The peer's handshake `theirs` if it is for `info_hash`.
fn checked(
    stream: PeerStream,
    theirs: Handshake,
    info_hash: InfoHash,
) -> Result<(PeerStream, Handshake), ConnectError> {
    if theirs.info_hash != info_hash {
        return Err(ConnectError::WrongTorrent(theirs.info_hash));
    }
    Ok((stream, theirs))
}

/// Runs the initiator's side of the encrypted handshake on `tcp`, with our BitTorrent
/// handshake `ours` as its initial payload.
async fn initiate_encrypted(
    mut tcp: TcpStream,
    ours: &Handshake,
    encryption: Encryption,
) -> Result<PeerStream, ConnectError> {
    let mut initiator = mse::Initiator::new(
        ours.info_hash,
        encryption.provide(),
        &ours.encode(),
        &mut rand::rng(),
    );
    let done = drive_encrypted(&mut tcp, &mut initiator, &[]).await?;
    Ok(PeerStream::after_handshake(tcp, done.cipher, done.received))
}

/// Runs an encrypted handshake over `io` until it is done: sends what it asks, feeds it
/// what comes (`first`, bytes already read, before the rest). It reads in chunks, so it
/// may take payload bytes past the handshake's end; they are in [`Established::received`].
/// Bounded by the caller's timeout; the machine bounds the bytes.
pub async fn drive_encrypted<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    machine: &mut impl MseHandshake,
    first: &[u8],
) -> Result<Established, ConnectError> {
    let mut done = if first.is_empty() {
        None
    } else {
        machine.input(first)?
    };
    let mut buf = [0u8; 2048];
    loop {
        let out = machine.take_output();
        if !out.is_empty() {
            io.write_all(&out).await?;
        }
        if let Some(done) = done {
            return Ok(done);
        }
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        done = machine.input(&buf[..n])?;
    }
}

/// Completes the handshake of an accepted connection for the torrent `info_hash`: reads
/// the peer's (encrypted or not, as `encryption` allows), checks the info-hash, and
/// answers with ours. The composition of [`read_incoming_handshake`] and
/// [`answer_handshake`], for a listener that serves one torrent.
pub async fn accept(
    stream: TcpStream,
    info_hash: InfoHash,
    our_id: PeerId,
    reserved: Reserved,
    timeout: Duration,
    encryption: Encryption,
) -> Result<(PeerStream, Handshake), ConnectError> {
    let skeys = SkeyTable::single(info_hash);
    let (mut stream, theirs) = read_incoming_handshake(stream, &skeys, encryption, timeout).await?;
    if theirs.info_hash != info_hash {
        return Err(ConnectError::WrongTorrent(theirs.info_hash));
    }
    answer_handshake(&mut stream, &theirs, our_id, reserved, timeout).await?;
    Ok((stream, theirs))
}

/// The first half of accepting: sets `TCP_NODELAY` and reads the peer's handshake within
/// `timeout`. A plaintext handshake is read as it is; an encrypted one is answered as
/// far as the encryption needs (our public key, then our verification and choice), for a
/// torrent of `skeys`, and the BitTorrent handshake read from inside it. Our BitTorrent
/// handshake is not sent, so whoever reads it (a torrent's own listener, or the shared
/// [`Listener`](super::listener::Listener) routing by info-hash) can still close the
/// socket without answering it.
pub async fn read_incoming_handshake(
    mut tcp: TcpStream,
    skeys: &SkeyTable,
    encryption: Encryption,
    timeout: Duration,
) -> Result<(PeerStream, Handshake), ConnectError> {
    tcp.set_nodelay(true)?;
    let read = async move {
        let mut first = [0u8; 1 + PROTOCOL_STRING.len()];
        tcp.read_exact(&mut first).await?;
        if first[0] as usize == PROTOCOL_STRING.len() && first[1..] == PROTOCOL_STRING[..] {
            if !encryption.accepts_plaintext() {
                return Err(ConnectError::PlaintextRefused);
            }
            let mut buf = [0u8; HANDSHAKE_LEN];
            buf[..first.len()].copy_from_slice(&first);
            tcp.read_exact(&mut buf[first.len()..]).await?;
            let theirs =
                Handshake::parse(&buf).map_err(|e| ConnectError::BadHandshake(e.to_string()))?;
            return Ok((PeerStream::plain(tcp), theirs));
        }
        if !encryption.accepts_encrypted() {
            return Err(ConnectError::EncryptedRefused);
        }
        // Plaintext when the peer offers both, as libtorrent does by default: the
        // handshake is hidden either way, and RC4 costs both sides (over loopback, 3.5
        // times the time of a plaintext transfer); a peer that wants RC4 offers only RC4.
        let mut receiver =
            mse::Receiver::new(skeys, encryption.accepted_methods(), &mut rand::rng())
                .preferring_plaintext();
        let done = drive_encrypted(&mut tcp, &mut receiver, &first).await?;
        let skey = done.info_hash;
        let mut stream = PeerStream::after_handshake(tcp, done.cipher, done.received);
        let theirs = read_handshake(&mut stream).await?;
        if theirs.info_hash != skey {
            return Err(ConnectError::WrongTorrent(theirs.info_hash));
        }
        Ok((stream, theirs))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ConnectError::Timeout("waiting for the handshake"))?
}

/// The second half of accepting: answers the peer's handshake `theirs` with ours for the
/// same info-hash, within `timeout`. The caller has decided that the torrent takes it.
pub async fn answer_handshake(
    stream: &mut PeerStream,
    theirs: &Handshake,
    our_id: PeerId,
    reserved: Reserved,
    timeout: Duration,
) -> Result<(), ConnectError> {
    let ours = Handshake::new(reserved, theirs.info_hash, our_id);
    tokio::time::timeout(timeout, async {
        stream.write_all(&ours.encode()).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| ConnectError::Timeout("sending the handshake"))??;
    Ok(())
}

async fn read_handshake<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Handshake, ConnectError> {
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
