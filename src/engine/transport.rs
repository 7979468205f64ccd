//! The transport seam: [`PeerStream`], the one byte stream a Peer and its codec see,
//! whatever carries it.
//!
//! A connection is carried by TCP or by uTP (BEP 29, over the UDP socket of
//! [`super::utp`]): the [`Carrier`]. Over either it is plaintext or RC4 after a message
//! stream encryption handshake (`wire::mse`). The stream hides all of it: it reads first
//! the payload bytes the handshake already took off the carrier, then the carrier,
//! decrypting; it encrypts what it writes. With the ciphers `None` it adds nothing but a
//! branch to the carrier. Nothing above this module changes per carrier.
//!
//! It owns the cipher state of a connection; nothing else reads or writes it. It runs no
//! handshake: `connection` does, and builds the stream from the outcome. A uTP carrier's
//! protocol state (sequence numbers, windows, retransmission) lives in the uTP crate's
//! task for the connection, on the thread that owns the UDP socket; the stream holds only
//! the crate's user-side buffers, so it moves between threads as it is.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use librqbit_utp::{UtpStream, UtpStreamReadHalf, UtpStreamWriteHalf};

use crate::wire::mse::{Keystream, Rc4Pair};

/// What carries a connection's bytes.
#[derive(Debug)]
pub enum Carrier {
    /// A TCP socket.
    Tcp(TcpStream),
    /// A uTP connection over the shared UDP socket.
    Utp(UtpOver),
}

/// A uTP connection: the crate's stream, which has no `Debug` of its own.
pub struct UtpOver(pub UtpStream);

impl std::fmt::Debug for UtpOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UtpStream({})", self.0.remote_addr())
    }
}

impl From<TcpStream> for Carrier {
    fn from(tcp: TcpStream) -> Self {
        Carrier::Tcp(tcp)
    }
}

impl From<UtpStream> for Carrier {
    fn from(utp: UtpStream) -> Self {
        Carrier::Utp(UtpOver(utp))
    }
}

impl Carrier {
    /// The peer's address: the TCP peer, or the UDP address of the uTP peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Carrier::Tcp(tcp) => tcp.peer_addr(),
            Carrier::Utp(utp) => Ok(utp.0.remote_addr()),
        }
    }

    /// Whether uTP carries it.
    pub fn is_utp(&self) -> bool {
        matches!(self, Carrier::Utp(_))
    }

    /// Sets `TCP_NODELAY` on a TCP carrier (uTP sends at once: the crate's Nagle is off,
    /// see `utp::socket_opts`).
    pub fn set_nodelay(&self) -> io::Result<()> {
        match self {
            Carrier::Tcp(tcp) => tcp.set_nodelay(true),
            Carrier::Utp(_) => Ok(()),
        }
    }
}

/// Most plaintext bytes encrypted ahead of the socket per write: one block message. The
/// socket may take fewer; the rest waits in [`Sending::pending`] until it drains.
const ENCRYPT_CHUNK: usize = 16 * 1024 + 13;

/// What the reading direction adds to the socket.
#[derive(Debug, Default)]
struct Receiving {
    /// Payload bytes the handshake read past its end, already decrypted; read first.
    early: Vec<u8>,
    /// How many of `early` were read.
    early_read: usize,
    /// Decrypts what comes from the socket; `None` for plaintext.
    cipher: Option<Keystream>,
}

/// What the writing direction adds to the socket.
#[derive(Debug, Default)]
struct Sending {
    /// Encrypts what goes to the socket; `None` for plaintext.
    cipher: Option<Keystream>,
    /// Encrypted bytes accepted from the caller but not yet taken by the socket: RC4
    /// cannot be rewound, so once encrypted they must go out before anything else.
    pending: Vec<u8>,
    /// How many of `pending` were written.
    pending_written: usize,
}

/// A peer connection's byte stream. See the module documentation.
#[derive(Debug)]
pub struct PeerStream {
    carrier: Carrier,
    receiving: Receiving,
    sending: Sending,
}

impl PeerStream {
    /// A plaintext connection.
    pub fn plain(carrier: impl Into<Carrier>) -> Self {
        PeerStream {
            carrier: carrier.into(),
            receiving: Receiving::default(),
            sending: Sending::default(),
        }
    }

    /// A connection after an encrypted handshake: `early` bytes already received (and
    /// decrypted), then the socket under `cipher` (`None` when plaintext was selected).
    pub fn after_handshake(
        carrier: impl Into<Carrier>,
        cipher: Option<Rc4Pair>,
        early: Vec<u8>,
    ) -> Self {
        let (encrypt, decrypt) = match cipher {
            Some(pair) => (Some(pair.encrypt), Some(pair.decrypt)),
            None => (None, None),
        };
        PeerStream {
            carrier: carrier.into(),
            receiving: Receiving {
                early,
                early_read: 0,
                cipher: decrypt,
            },
            sending: Sending {
                cipher: encrypt,
                pending: Vec::new(),
                pending_written: 0,
            },
        }
    }

    /// Whether the stream is RC4-encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.sending.cipher.is_some()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.carrier.peer_addr()
    }

    /// Whether uTP carries it.
    pub fn is_utp(&self) -> bool {
        self.carrier.is_utp()
    }

    /// The TCP socket underneath, for its descriptor or options; `None` over uTP.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match &self.carrier {
            Carrier::Tcp(tcp) => Some(tcp),
            Carrier::Utp(_) => None,
        }
    }

    /// Splits into a read half and a write half, each with its own cipher.
    pub fn into_split(self) -> (PeerReadHalf, PeerWriteHalf) {
        let (read, write) = match self.carrier {
            Carrier::Tcp(tcp) => {
                let (read, write) = tcp.into_split();
                (ReadCarrier::Tcp(read), WriteCarrier::Tcp(write))
            }
            Carrier::Utp(utp) => {
                let (read, write) = utp.0.split();
                (ReadCarrier::Utp(read), WriteCarrier::Utp(write))
            }
        };
        (
            PeerReadHalf {
                carrier: read,
                receiving: self.receiving,
            },
            PeerWriteHalf {
                carrier: write,
                sending: self.sending,
            },
        )
    }

    /// Takes the stream off this thread's event loop, to move it to another arbiter. A
    /// uTP stream is registered with no event loop (its protocol task stays with the UDP
    /// socket's thread) and moves as it is.
    pub fn detach(self) -> io::Result<DetachedStream> {
        let carrier = match self.carrier {
            Carrier::Tcp(tcp) => Detached::Tcp(tcp.into_std()?),
            Carrier::Utp(utp) => Detached::Utp(utp),
        };
        Ok(DetachedStream {
            carrier,
            receiving: self.receiving,
            sending: self.sending,
        })
    }
}

/// A carrier between two threads.
#[derive(Debug)]
enum Detached {
    Tcp(std::net::TcpStream),
    Utp(UtpOver),
}

/// A [`PeerStream`] between two threads: the socket deregistered, the ciphers kept.
#[derive(Debug)]
pub struct DetachedStream {
    carrier: Detached,
    receiving: Receiving,
    sending: Sending,
}

impl DetachedStream {
    /// Registers the socket with the current thread's event loop.
    pub fn attach(self) -> io::Result<PeerStream> {
        let carrier = match self.carrier {
            Detached::Tcp(tcp) => Carrier::Tcp(TcpStream::from_std(tcp)?),
            Detached::Utp(utp) => Carrier::Utp(utp),
        };
        Ok(PeerStream {
            carrier,
            receiving: self.receiving,
            sending: self.sending,
        })
    }
}

/// The reading half of a carrier.
enum ReadCarrier {
    Tcp(OwnedReadHalf),
    Utp(UtpStreamReadHalf),
}

/// The writing half of a carrier.
enum WriteCarrier {
    Tcp(OwnedWriteHalf),
    Utp(UtpStreamWriteHalf),
}

/// The read half of a [`PeerStream`].
pub struct PeerReadHalf {
    carrier: ReadCarrier,
    receiving: Receiving,
}

/// The write half of a [`PeerStream`].
pub struct PeerWriteHalf {
    carrier: WriteCarrier,
    sending: Sending,
}

impl std::fmt::Debug for PeerReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerReadHalf").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PeerWriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerWriteHalf").finish_non_exhaustive()
    }
}

impl PeerWriteHalf {
    /// Whether encrypted bytes wait for the socket. A write reports its bytes taken once
    /// they are encrypted (RC4 cannot take them back), so they may still sit here: a
    /// writer that does not flush after writing (actix's and tokio-util's framed writers
    /// do) must flush while this holds.
    pub fn has_pending(&self) -> bool {
        self.sending.pending_written < self.sending.pending.len()
    }
}

/// Reads from `early`, else from `socket`, decrypting.
fn poll_read_via<R: AsyncRead + Unpin>(
    socket: &mut R,
    receiving: &mut Receiving,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if receiving.early_read < receiving.early.len() {
        let rest = &receiving.early[receiving.early_read..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        receiving.early_read += n;
        if receiving.early_read == receiving.early.len() {
            receiving.early = Vec::new();
            receiving.early_read = 0;
        }
        return Poll::Ready(Ok(()));
    }
    let before = buf.filled().len();
    let polled = Pin::new(socket).poll_read(cx, buf);
    if let (Poll::Ready(Ok(())), Some(cipher)) = (&polled, receiving.cipher.as_mut()) {
        cipher.apply(&mut buf.filled_mut()[before..]);
    }
    polled
}

/// Writes what is pending to `socket`; `Ready(Ok)` once nothing is.
fn poll_drain<W: AsyncWrite + Unpin>(
    socket: &mut W,
    sending: &mut Sending,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while sending.pending_written < sending.pending.len() {
        match Pin::new(&mut *socket).poll_write(cx, &sending.pending[sending.pending_written..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => sending.pending_written += n,
            other => return other.map(|r| r.map(|_| ())),
        }
    }
    sending.pending.clear();
    sending.pending_written = 0;
    Poll::Ready(Ok(()))
}

/// Writes `buf` to `socket`, encrypting it first when there is a cipher.
fn poll_write_via<W: AsyncWrite + Unpin>(
    socket: &mut W,
    sending: &mut Sending,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    if sending.cipher.is_none() {
        return Pin::new(socket).poll_write(cx, buf);
    }
    // Bytes encrypted earlier go first; only then is more accepted.
    match poll_drain(socket, sending, cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Pending => return Poll::Pending,
    }
    let n = buf.len().min(ENCRYPT_CHUNK);
    sending.pending.extend_from_slice(&buf[..n]);
    if let Some(cipher) = sending.cipher.as_mut() {
        cipher.apply(&mut sending.pending);
    }
    // The bytes are ours now: report them taken whatever the socket does with them. A
    // socket that is full has registered the waker; the next write or flush goes on.
    match poll_drain(socket, sending, cx) {
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        _ => Poll::Ready(Ok(n)),
    }
}

fn poll_flush_via<W: AsyncWrite + Unpin>(
    socket: &mut W,
    sending: &mut Sending,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    match poll_drain(socket, sending, cx) {
        Poll::Ready(Ok(())) => Pin::new(socket).poll_flush(cx),
        other => other,
    }
}

fn poll_shutdown_via<W: AsyncWrite + Unpin>(
    socket: &mut W,
    sending: &mut Sending,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    match poll_drain(socket, sending, cx) {
        Poll::Ready(Ok(())) => Pin::new(socket).poll_shutdown(cx),
        other => other,
    }
}

impl AsyncRead for Carrier {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Carrier::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Carrier::Utp(utp) => Pin::new(&mut utp.0).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Carrier {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Carrier::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Carrier::Utp(utp) => Pin::new(&mut utp.0).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Carrier::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            // See `WriteCarrier`'s flush.
            Carrier::Utp(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Carrier::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Carrier::Utp(utp) => Pin::new(&mut utp.0).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for ReadCarrier {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadCarrier::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            ReadCarrier::Utp(utp) => Pin::new(utp).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteCarrier {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteCarrier::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            WriteCarrier::Utp(utp) => Pin::new(utp).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteCarrier::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            // The crate's flush waits until the peer acknowledged every byte written: a
            // writer that flushes after each batch (actix's framed writer does) would
            // send one window per round trip. What is written is sent anyway; a closing
            // Peer drops the stream, and the crate's task sends what is left.
            WriteCarrier::Utp(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteCarrier::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            WriteCarrier::Utp(utp) => Pin::new(utp).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_read_via(&mut this.carrier, &mut this.receiving, cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_via(&mut this.carrier, &mut this.sending, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_flush_via(&mut this.carrier, &mut this.sending, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_shutdown_via(&mut this.carrier, &mut this.sending, cx)
    }
}

impl AsyncRead for PeerReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_read_via(&mut this.carrier, &mut this.receiving, cx, buf)
    }
}

impl AsyncWrite for PeerWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        poll_write_via(&mut this.carrier, &mut this.sending, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_flush_via(&mut this.carrier, &mut this.sending, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        poll_shutdown_via(&mut this.carrier, &mut this.sending, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::connection::drive_encrypted;
    use crate::wire::mse::{Initiator, Receiver, SkeyTable, CRYPTO_RC4};
    use crate::InfoHash;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two ends of a loopback connection after an encrypted handshake selecting RC4.
    async fn encrypted_pair() -> (PeerStream, PeerStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dialing = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let mut initiator =
                Initiator::new(InfoHash([3; 20]), CRYPTO_RC4, b"early", &mut rand::rng());
            let done = drive_encrypted(&mut tcp, &mut initiator, &[])
                .await
                .unwrap();
            PeerStream::after_handshake(tcp, done.cipher, done.received)
        });
        let (mut tcp, _) = listener.accept().await.unwrap();
        let table = SkeyTable::single(InfoHash([3; 20]));
        let mut receiver = Receiver::new(&table, CRYPTO_RC4, &mut rand::rng());
        let done = drive_encrypted(&mut tcp, &mut receiver, &[]).await.unwrap();
        let accepted = PeerStream::after_handshake(tcp, done.cipher, done.received);
        (dialing.await.unwrap(), accepted)
    }

    #[tokio::test]
    async fn an_encrypted_stream_carries_bytes_both_ways_through_its_halves() {
        let (dialed, mut accepted) = encrypted_pair().await;
        assert!(dialed.is_encrypted() && accepted.is_encrypted());
        // The initial payload comes first, from the handshake's own buffer.
        let mut early = [0u8; 5];
        accepted.read_exact(&mut early).await.unwrap();
        assert_eq!(&early, b"early");
        let (mut read, mut write) = dialed.into_split();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            write.write_all(&sent).await.unwrap();
            write.flush().await.unwrap();
            write
        });
        let mut got = vec![0u8; big.len()];
        accepted.read_exact(&mut got).await.unwrap();
        assert!(got == big, "the bytes arrive as sent");
        let _write = writer.await.unwrap();
        accepted.write_all(b"answer").await.unwrap();
        accepted.flush().await.unwrap();
        let mut answer = [0u8; 6];
        read.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
    }

    #[tokio::test]
    async fn an_encrypted_stream_survives_a_move_between_threads() {
        let (dialed, mut accepted) = encrypted_pair().await;
        let mut early = [0u8; 5];
        accepted.read_exact(&mut early).await.unwrap();
        let detached = dialed.detach().unwrap();
        let mut dialed = std::thread::spawn(move || {
            // Attached on another thread's runtime, then moved back: cipher state intact.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut s = detached.attach().unwrap();
                s.write_all(b"from afar").await.unwrap();
                s.flush().await.unwrap();
                s.detach().unwrap()
            })
        })
        .join()
        .unwrap()
        .attach()
        .unwrap();
        let mut got = [0u8; 9];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"from afar");
        dialed.write_all(b"home").await.unwrap();
        dialed.flush().await.unwrap();
        let mut got = [0u8; 4];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"home");
    }
}
