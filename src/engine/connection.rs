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
//!
//! The carrier follows [`UtpMode`]: with `on`, a dial tries uTP first, as libtorrent does,
//! and TCP beside it once uTP has had [`UTP_HEAD_START`] to answer; the first to complete
//! its handshakes is the connection (a peer that lost to TCP, or never answered uTP within
//! [`UTP_CONNECT_TIMEOUT`], is remembered by the [`Utp`] handle and dialed over TCP alone
//! after). We know of no
//! peer in advance whether it speaks uTP (peer exchange's flags are not kept), so every
//! peer is tried over uTP first until it fails once. A connection that uTP established
//! is never redialed over TCP: one connection per peer. `only` never touches TCP, `off`
//! never uTP. Incoming connections of either carrier go through the same handshake
//! reading, encryption detection and admission.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::transport::{Carrier, PeerStream};
use super::utp::{Utp, UtpError, UtpMode, UTP_CONNECT_TIMEOUT};

/// How long a dial gives uTP alone before TCP is tried beside it (see [`race`]).
pub const UTP_HEAD_START: Duration = Duration::from_millis(500);
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
    /// The uTP connection could not be opened.
    #[error("uTP: {0}")]
    Utp(#[from] UtpError),
    /// No carrier is allowed to reach the peer: `--utp only` without a uTP socket.
    #[error("no usable transport (uTP only, and no uTP socket)")]
    NoTransport,
}

/// How a connection may be carried, for dialing: the mode and, unless it is `off` or the
/// UDP socket could not be bound, the uTP socket.
#[derive(Debug, Clone, Default)]
pub struct Carriers {
    /// `--utp`.
    pub mode: UtpMode,
    /// The uTP socket to dial from; `None`: TCP only.
    pub utp: Option<Utp>,
}

impl Carriers {
    /// TCP only.
    pub fn tcp_only() -> Self {
        Carriers {
            mode: UtpMode::Off,
            utp: None,
        }
    }
}

/// Which carrier one attempt uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Over {
    Tcp,
    Utp,
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

/// Dials `addr` and exchanges handshakes for `info_hash`, encrypted as `encryption`
/// says, over the carriers `carriers` allows (uTP first; see the module documentation).
#[allow(clippy::too_many_arguments)]
pub async fn connect(
    addr: SocketAddr,
    info_hash: InfoHash,
    our_id: PeerId,
    reserved: Reserved,
    timeouts: ConnectTimeouts,
    encryption: Encryption,
    carriers: Carriers,
) -> Result<(PeerStream, Handshake), ConnectError> {
    let ours = Handshake::new(reserved, info_hash, our_id);
    let utp = carriers.utp.as_ref().filter(|_| carriers.mode.uses_utp());
    let tcp_too = carriers.mode.uses_tcp();
    match utp {
        Some(utp) if !tcp_too => {
            connect_over(Over::Utp, Some(utp), addr, &ours, timeouts, encryption).await
        }
        Some(utp) if !utp.known_without(&addr) => {
            race(utp, addr, &ours, timeouts, encryption).await
        }
        None if !tcp_too => Err(ConnectError::NoTransport),
        _ => connect_over(Over::Tcp, None, addr, &ours, timeouts, encryption).await,
    }
}

/// Both carriers, one after the other: the first at once, the second once the first has
/// had [`UTP_HEAD_START`] to answer, or as soon as the first fails. Whichever completes
/// its handshakes first is the connection (the other attempt is dropped, and closes).
/// Which goes first is the `Utp` handle's call ([`Utp::dial_utp_first`]): uTP, unless
/// recent uTP-first dials found few peers speaking it. A peer that answers uTP does so
/// within a round trip, so uTP first reaches it over uTP; one that does not costs the
/// head start, not the whole uTP timeout, and is remembered as one to dial over TCP alone.
async fn race(
    utp: &Utp,
    addr: SocketAddr,
    ours: &Handshake,
    timeouts: ConnectTimeouts,
    encryption: Encryption,
) -> Result<(PeerStream, Handshake), ConnectError> {
    let mut utp_first_dial = utp.dial_utp_first();
    let utp_first = utp_first_dial.is_some();
    let (first, second) = if utp_first {
        (Over::Utp, Over::Tcp)
    } else {
        (Over::Tcp, Over::Utp)
    };
    let carrier = |over: Over| if over == Over::Utp { Some(utp) } else { None };
    let leading = connect_over(first, carrier(first), addr, ours, timeouts, encryption);
    let (first_failed_tx, first_failed_rx) = tokio::sync::oneshot::channel::<()>();
    let trailing = async {
        // The head start ends early if the first attempt fails.
        let _ = tokio::time::timeout(UTP_HEAD_START, first_failed_rx).await;
        connect_over(second, carrier(second), addr, ours, timeouts, encryption).await
    };
    // When the head start ends, a uTP-first dial gives up its place among the dials
    // going uTP first before there is evidence (see `utp::DialPreference`).
    let head_start = tokio::time::sleep(UTP_HEAD_START);
    tokio::pin!(leading, trailing, head_start);
    let mut first_failed_tx = Some(first_failed_tx);
    let (mut leading_failed, mut trailing_failed) = (None, None);
    loop {
        tokio::select! {
            () = &mut head_start, if utp_first_dial.as_ref().is_some_and(|d| d.holds_place()) => {
                if let Some(dial) = &mut utp_first_dial {
                    dial.head_start_over();
                }
            }
            done = &mut leading, if leading_failed.is_none() => match done {
                Ok(connection) => {
                    if let Some(dial) = utp_first_dial.take() {
                        dial.record(true);
                    }
                    return Ok(connection);
                }
                Err(e) => {
                    if matches!(e, ConnectError::Utp(UtpError::Timeout(_))) {
                        utp.remember_without(addr);
                    }
                    if let Some(tx) = first_failed_tx.take() {
                        let _ = tx.send(());
                    }
                    if let Some(dial) = &mut utp_first_dial {
                        dial.head_start_over();
                    }
                    leading_failed = Some(e);
                }
            },
            done = &mut trailing, if trailing_failed.is_none() => match done {
                Ok(connection) => {
                    if let Some(dial) = utp_first_dial.take() {
                        // uTP had its head start and more, and TCP came first.
                        utp.remember_without(addr);
                        dial.record(false);
                    }
                    return Ok(connection);
                }
                Err(e) => {
                    if matches!(e, ConnectError::Utp(UtpError::Timeout(_))) {
                        utp.remember_without(addr);
                    }
                    trailing_failed = Some(e);
                }
            },
        }
        if let (Some(_), Some(_)) = (&leading_failed, &trailing_failed) {
            // TCP's reason is the one to report: uTP's is most often a timeout.
            let (l, t) = (leading_failed.take(), trailing_failed.take());
            let tcp = if utp_first { t } else { l };
            return Err(tcp.unwrap_or(ConnectError::NoTransport));
        }
    }
}

/// Dials `addr` over one carrier and exchanges handshakes. With `prefer`, a peer that
/// refuses the encrypted handshake (closes the connection or answers something else) is
/// dialed again at once in plaintext; one that stays silent is not, as it would stay
/// silent in plaintext too and cost a second timeout.
async fn connect_over(
    over: Over,
    utp: Option<&Utp>,
    addr: SocketAddr,
    ours: &Handshake,
    timeouts: ConnectTimeouts,
    encryption: Encryption,
) -> Result<(PeerStream, Handshake), ConnectError> {
    let info_hash = ours.info_hash;
    if encryption.dials_encrypted() {
        let carrier = dial(over, utp, addr, timeouts).await?;
        let mut past_encryption = false;
        let attempt = tokio::time::timeout(timeouts.handshake, async {
            let mut stream = initiate_encrypted(carrier, ours, encryption).await?;
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
    let mut carrier = dial(over, utp, addr, timeouts).await?;
    let theirs = tokio::time::timeout(timeouts.handshake, async {
        carrier.write_all(&ours.encode()).await?;
        read_handshake(&mut carrier).await
    })
    .await
    .map_err(|_| ConnectError::Timeout("waiting for the handshake"))??;
    checked(PeerStream::plain(carrier), theirs, info_hash)
}

/// A connection to `addr` over `over` within the connect timeout (for uTP, within
/// [`UTP_CONNECT_TIMEOUT`] too).
async fn dial(
    over: Over,
    utp: Option<&Utp>,
    addr: SocketAddr,
    timeouts: ConnectTimeouts,
) -> Result<Carrier, ConnectError> {
    match (over, utp) {
        (Over::Utp, Some(utp)) => {
            let wait = timeouts.connect.min(UTP_CONNECT_TIMEOUT);
            Ok(Carrier::from(utp.connect(addr, wait).await?))
        }
        (Over::Utp, None) => Err(ConnectError::NoTransport),
        (Over::Tcp, _) => {
            let stream = tokio::time::timeout(timeouts.connect, TcpStream::connect(addr))
                .await
                .map_err(|_| ConnectError::Timeout("connecting"))??;
            stream.set_nodelay(true)?;
            Ok(Carrier::Tcp(stream))
        }
    }
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

/// Runs the initiator's side of the encrypted handshake on `carrier`, with our BitTorrent
/// handshake `ours` as its initial payload.
async fn initiate_encrypted(
    mut carrier: Carrier,
    ours: &Handshake,
    encryption: Encryption,
) -> Result<PeerStream, ConnectError> {
    let mut initiator = mse::Initiator::new(
        ours.info_hash,
        encryption.provide(),
        &ours.encode(),
        &mut rand::rng(),
    );
    let done = drive_encrypted(&mut carrier, &mut initiator, &[]).await?;
    Ok(PeerStream::after_handshake(
        carrier,
        done.cipher,
        done.received,
    ))
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

/// Completes the handshake of an accepted connection for a torrent known by the
/// info-hashes `swarms` (a hybrid's v1 and v2 swarms, or one): reads the peer's
/// (encrypted or not, as `encryption` allows), checks the info-hash is one of them, and
/// answers with ours for the one the peer named. The composition of
/// [`read_incoming_handshake`] and [`answer_handshake`], for a listener that serves one
/// torrent.
pub async fn accept(
    stream: Carrier,
    swarms: Vec<InfoHash>,
    our_id: PeerId,
    reserved: Reserved,
    timeout: Duration,
    encryption: Encryption,
) -> Result<(PeerStream, Handshake), ConnectError> {
    let mut skeys = SkeyTable::default();
    for info_hash in &swarms {
        skeys.insert(*info_hash);
    }
    let (mut stream, theirs) = read_incoming_handshake(stream, &skeys, encryption, timeout).await?;
    if !swarms.contains(&theirs.info_hash) {
        return Err(ConnectError::WrongTorrent(theirs.info_hash));
    }
    answer_handshake(&mut stream, &theirs, our_id, reserved, timeout).await?;
    Ok((stream, theirs))
}

/// The first half of accepting, over either carrier: sets `TCP_NODELAY` on TCP and reads
/// the peer's handshake within
/// `timeout`. A plaintext handshake is read as it is; an encrypted one is answered as
/// far as the encryption needs (our public key, then our verification and choice), for a
/// torrent of `skeys`, and the BitTorrent handshake read from inside it. Our BitTorrent
/// handshake is not sent, so whoever reads it (a torrent's own listener, or the shared
/// [`Listener`](super::listener::Listener) routing by info-hash) can still close the
/// socket without answering it.
pub async fn read_incoming_handshake(
    carrier: impl Into<Carrier>,
    skeys: &SkeyTable,
    encryption: Encryption,
    timeout: Duration,
) -> Result<(PeerStream, Handshake), ConnectError> {
    let mut tcp = carrier.into();
    tcp.set_nodelay()?;
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

/// A TCP socket the caller bound and listens on already (`get` and `seed` bind theirs
/// before anything starts, so a port in use ends the run at once, and no other process
/// can take the port before the Coordinator does). The first [`listen_all`] given it
/// takes it; clones share it.
#[derive(Debug, Clone)]
pub struct BoundListener(std::sync::Arc<std::sync::Mutex<Option<std::net::TcpListener>>>);

impl BoundListener {
    /// Wraps a listening socket.
    pub fn new(listener: std::net::TcpListener) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(Some(listener))))
    }

    /// The socket, once.
    pub fn take(&self) -> Option<std::net::TcpListener> {
        self.0.lock().ok()?.take()
    }
}

/// An accepted connection, TCP or uTP, with the peer's address: the item of both
/// listeners' streams, so one handler takes both.
pub type Accepted = std::io::Result<(Carrier, SocketAddr)>;

/// Accepted connections as a `Stream`, so a listener can be an actor stream
/// (`ctx.add_stream`) of the Coordinator or of the shared [`Listener`](super::listener::Listener).
/// The uTP socket's are [`Utp::incoming`].
pub struct TcpListenerStream(pub TcpListener);

impl futures::Stream for TcpListenerStream {
    type Item = Accepted;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_accept(cx)
            .map(|r| Some(r.map(|(tcp, addr)| (Carrier::Tcp(tcp), addr))))
    }
}

/// The listening sockets `mode` asks for: TCP at `addr` unless `only`, and uTP unless
/// `off`, on the TCP socket's port (the one chosen, when `addr` asks for port 0). A
/// uTP socket that cannot be bound beside TCP is an error in the result, not a failure:
/// TCP works without it.
pub async fn listen_all(
    addr: SocketAddr,
    mode: UtpMode,
    bound: Option<&BoundListener>,
) -> (
    std::io::Result<Option<TcpListener>>,
    Result<Option<Utp>, UtpError>,
) {
    let tcp = if mode.uses_tcp() {
        let tcp = match bound.and_then(BoundListener::take) {
            Some(tcp) => tcp
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(tcp)),
            None => listen(addr).await,
        };
        match tcp {
            Ok(tcp) => Some(tcp),
            Err(e) => return (Err(e), Ok(None)),
        }
    } else {
        None
    };
    if !mode.uses_utp() {
        return (Ok(tcp), Ok(None));
    }
    let udp_addr = tcp
        .as_ref()
        .and_then(|t| t.local_addr().ok())
        .unwrap_or(addr);
    let utp = Utp::bind(udp_addr).await.map(Some);
    (Ok(tcp), utp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP-only peer on loopback that answers one BitTorrent handshake per connection.
    async fn tcp_only_peer(info_hash: InfoHash) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut theirs = [0u8; HANDSHAKE_LEN];
                    if tcp.read_exact(&mut theirs).await.is_ok() {
                        let ours = Handshake::new(Reserved::none(), info_hash, PeerId([7; 20]));
                        let _ = tcp.write_all(&ours.encode()).await;
                        // Held open until the dialer is done with it.
                        let _ = tcp.read(&mut theirs).await;
                    }
                });
            }
        });
        addr
    }

    fn quick() -> ConnectTimeouts {
        ConnectTimeouts {
            connect: Duration::from_millis(600),
            handshake: Duration::from_secs(5),
        }
    }

    /// The risk: uTP first holds each dial to a peer without uTP for the head start, so
    /// 2,000 such peers in 16 dial slots took half a minute to reach. Once uTP-first dials
    /// keep failing, dials go TCP first (seen here as a TCP win that does not mark the
    /// peer as one without uTP, which only a uTP-first dial does).
    #[tokio::test]
    async fn dials_go_tcp_first_once_utp_first_dials_keep_finding_no_utp() {
        let info_hash = InfoHash([5; 20]);
        let utp = Utp::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let carriers = Carriers {
            mode: UtpMode::On,
            utp: Some(utp.clone()),
        };
        let dial = |peer: SocketAddr| {
            connect(
                peer,
                info_hash,
                PeerId([1; 20]),
                Reserved::none(),
                quick(),
                Encryption::Off,
                carriers.clone(),
            )
        };
        // Two rounds of sixteen dials at once, as the Coordinator's dial slots make them:
        // before there is evidence at most eight go uTP first at once, so each round
        // gives eight outcomes and connects the other eight over TCP without the head
        // start.
        for _ in 0..2 {
            let mut peers = Vec::new();
            for _ in 0..16 {
                peers.push(tcp_only_peer(info_hash).await);
            }
            let dials = futures::future::join_all(peers.iter().map(|&p| dial(p))).await;
            let mut held = 0;
            for (peer, dialed) in peers.iter().zip(dials) {
                assert!(!dialed.expect("reached over TCP").0.is_utp());
                held += usize::from(utp.known_without(peer));
            }
            assert_eq!(held, 8, "uTP-first dials, each held for the head start");
        }
        // The first TCP-first decision is a uTP probe; the one after it is not.
        assert!(utp.dial_utp_first().is_some());
        let fresh = tcp_only_peer(info_hash).await;
        let (stream, _) = dial(fresh).await.expect("reached over TCP");
        assert!(!stream.is_utp());
        assert!(
            !utp.known_without(&fresh),
            "the dial went uTP first: the head start was spent again"
        );
    }

    /// Found by review: a uTP-first dial held its place among the eight until the whole
    /// dial ended, so eight peers that accept TCP and never answer kept every later dial
    /// off uTP for their handshake timeout. The place now goes back when the head start
    /// ends, while the dials are still waiting.
    #[tokio::test]
    async fn a_utp_first_dial_gives_up_its_place_when_its_head_start_ends() {
        let info_hash = InfoHash([6; 20]);
        let utp = Utp::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let carriers = Carriers {
            mode: UtpMode::On,
            utp: Some(utp.clone()),
        };
        let slow = ConnectTimeouts {
            connect: Duration::from_millis(600),
            handshake: Duration::from_secs(30),
        };
        let mut dials = Vec::new();
        let mut mute = Vec::new();
        for _ in 0..crate::engine::utp::UNDECIDED_IN_FLIGHT {
            // Accepts TCP and never answers; no uTP.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let peer = listener.local_addr().unwrap();
            mute.push(tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    held.push(tcp);
                }
            }));
            let carriers = carriers.clone();
            dials.push(tokio::spawn(async move {
                let ours = (PeerId([1; 20]), Reserved::none());
                connect(
                    peer,
                    info_hash,
                    ours.0,
                    ours.1,
                    slow,
                    Encryption::Off,
                    carriers,
                )
                .await
            }));
        }
        tokio::task::yield_now().await;
        assert!(utp.dial_utp_first().is_none(), "all eight places taken");
        let freed = run_until(Duration::from_secs(10), || utp.dial_utp_first().is_some()).await;
        assert!(freed, "the places were still held after the head start");
        assert!(
            dials.iter().all(|d| !d.is_finished()),
            "the dials still wait"
        );
        dials.iter().for_each(|d| d.abort());
        mute.iter().for_each(|m| m.abort());
    }

    /// Polls `done` every 20 ms until it holds or `limit` passes.
    async fn run_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < end {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done()
    }

    #[tokio::test]
    async fn a_peer_without_utp_is_reached_over_tcp_and_remembered() {
        let info_hash = InfoHash([9; 20]);
        let peer = tcp_only_peer(info_hash).await;
        let utp = Utp::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let carriers = Carriers {
            mode: UtpMode::On,
            utp: Some(utp.clone()),
        };
        let dial = || {
            connect(
                peer,
                info_hash,
                PeerId([1; 20]),
                Reserved::none(),
                quick(),
                Encryption::Off,
                carriers.clone(),
            )
        };
        let (stream, theirs) = dial().await.expect("reached over TCP");
        assert!(!stream.is_utp());
        assert_eq!(theirs.info_hash, info_hash);
        assert!(utp.known_without(&peer), "the uTP failure is remembered");
        // The next dial goes straight to TCP: no uTP wait.
        let started = std::time::Instant::now();
        let (stream, _) = dial().await.expect("reached over TCP again");
        assert!(!stream.is_utp());
        assert!(started.elapsed() < Duration::from_millis(600));
    }

    /// A hybrid's listener takes peers of either swarm, encrypted (the info-hash is then
    /// the encryption's SKEY) or not, and answers with the hash each peer named; a third
    /// torrent's peer is refused.
    #[tokio::test]
    async fn accept_takes_either_swarm_of_a_hybrid_and_answers_with_the_one_named() {
        let (v1, v2, other) = (InfoHash([1; 20]), InfoHash([2; 20]), InfoHash([3; 20]));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let accepted = accept(
                        Carrier::Tcp(tcp),
                        vec![v1, v2],
                        PeerId([8; 20]),
                        Reserved::none(),
                        Duration::from_secs(5),
                        Encryption::Prefer,
                    )
                    .await;
                    if let Ok((mut stream, _)) = accepted {
                        // Held open until the dialer is done with it.
                        let mut buf = [0u8; 1];
                        let _ = stream.read(&mut buf).await;
                    }
                });
            }
        });
        let tcp = Carriers {
            mode: UtpMode::Off,
            utp: None,
        };
        for encryption in [Encryption::Require, Encryption::Off] {
            for hash in [v1, v2] {
                let (_, theirs) = connect(
                    addr,
                    hash,
                    PeerId([1; 20]),
                    Reserved::none(),
                    quick(),
                    encryption,
                    tcp.clone(),
                )
                .await
                .unwrap_or_else(|e| panic!("{hash} {encryption:?}: {e}"));
                assert_eq!(theirs.info_hash, hash, "{encryption:?}");
            }
            let refused = connect(
                addr,
                other,
                PeerId([1; 20]),
                Reserved::none(),
                quick(),
                encryption,
                tcp.clone(),
            )
            .await;
            assert!(refused.is_err(), "{encryption:?}");
        }
    }

    #[tokio::test]
    async fn utp_only_never_dials_tcp() {
        let info_hash = InfoHash([9; 20]);
        let peer = tcp_only_peer(info_hash).await;
        let utp = Utp::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let only = |utp: Option<Utp>| Carriers {
            mode: UtpMode::Only,
            utp,
        };
        let dial = |carriers| {
            connect(
                peer,
                info_hash,
                PeerId([1; 20]),
                Reserved::none(),
                quick(),
                Encryption::Off,
                carriers,
            )
        };
        assert!(matches!(
            dial(only(Some(utp))).await,
            Err(ConnectError::Utp(UtpError::Timeout(_)))
        ));
        assert!(matches!(
            dial(only(None)).await,
            Err(ConnectError::NoTransport)
        ));
    }
}
