//! uTP (BEP 29): the second carrier under [`PeerStream`](super::transport::PeerStream),
//! over one UDP socket on the same port number as the TCP listener.
//!
//! The protocol is the `librqbit-utp` crate's (pinned in Cargo.toml): we parse no uTP
//! packet ourselves. It was chosen over `utp-rs`, the other candidate (which implements
//! LEDBAT but is still alpha), because it is maintained (the uTP of a BitTorrent client
//! in daily use), runs on tokio as we do, has bounded buffers and a bound on live
//! connections, and interoperates with libtorrent 2.0 (tests/it/utp.rs). Its congestion control is CUBIC, as TCP's:
//! it does **not** yield to other traffic as LEDBAT (BEP 29's 100 ms target delay)
//! would, so a uTP transfer here competes with TCP as another TCP flow would. README
//! says so.
//!
//! [`Utp`] is a handle on the socket: cheap to clone, shared by a torrent's dials and
//! its listener (or, in `serve`, by every torrent and the shared Listener). The crate runs
//! a task that reads the UDP socket and one task per connection, on the thread that bound
//! the socket; the last handle dropped stops them all and frees the port. The handle also
//! remembers, in a bounded set, the peers that did not answer a uTP dial, so that later
//! dials to them go straight to TCP.
//!
//! What a stranger can make it hold: at most [`MAX_UTP_CONNECTIONS`] connections (more
//! connection requests are refused by the crate with a reset), each with at most
//! [`UTP_RX_BUFFER`] of received bytes not yet read and a send buffer growing to at most
//! [`UTP_TX_BUFFER_MAX`]; a datagram that is not a valid uTP packet is dropped as it is
//! read. A connection that stalls its handshake is closed by whoever waits for the
//! BitTorrent handshake on it, within the handshake timeout, as over TCP.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use librqbit_utp::{SocketOpts, UtpSocketUdp, UtpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::transport::Carrier;

/// Which carrier a dial tries first. uTP first costs a peer that does not speak it the
/// head start (`connection::UTP_HEAD_START`) in a dial slot; in a swarm where few peers
/// do, that made dialing 2,000 peers take half a minute (a slot per half second) and hid
/// the few fast peers among them. So the outcome of each uTP-first dial is kept, and while
/// uTP carried under an eighth of the recent ones, dials go TCP first (uTP after the head
/// start, or at once if TCP fails), with one uTP-first probe every
/// [`PROBE_INTERVAL`], so a swarm that does speak uTP is noticed again.
///
/// Until there is evidence ([`MIN_OUTCOMES`] outcomes), at most [`UNDECIDED_IN_FLIGHT`]
/// uTP-first dials are within their head start at once, and dials beyond go TCP first. Before this, every first
/// dial went uTP first, so in a large swarm without uTP all of the first 16 dial slots sat
/// out the head start and no peer connected in the first half second. A small swarm (up
/// to eight peers dialed at once) is still dialed uTP first throughout, and in a swarm
/// that does speak uTP its dials finish within a round trip, so few go TCP first.
/// Pure: the caller gives the clock, and says when a uTP-first dial ends
/// ([`DialPreference::finished`]).
#[derive(Debug, Default)]
pub struct DialPreference {
    /// Recent uTP-first dials, oldest first: whether uTP carried each.
    outcomes: VecDeque<bool>,
    /// When the last probe went out, while dialing TCP first.
    last_probe: Option<Instant>,
    /// uTP-first dials not yet finished.
    in_flight: usize,
}

/// uTP-first outcomes kept.
const OUTCOMES_KEPT: usize = 32;

/// Outcomes needed before uTP first is given up.
pub const MIN_OUTCOMES: usize = 16;

/// Most uTP-first dials at once while there is no evidence: half the default dial slots
/// (`coordinator::Config::max_connecting`), so the other half keep connecting over TCP
/// during the head start, and two rounds of these give the evidence.
pub const UNDECIDED_IN_FLIGHT: usize = MIN_OUTCOMES / 2;

/// While dialing TCP first, at most one uTP-first probe per this long.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

impl DialPreference {
    /// Whether the next dial tries uTP first. A `true` counts as in flight until
    /// [`DialPreference::finished`].
    pub fn utp_first(&mut self, now: Instant) -> bool {
        let first = self.decide(now);
        if first {
            self.in_flight += 1;
        }
        first
    }

    fn decide(&mut self, now: Instant) -> bool {
        if self.outcomes.len() < MIN_OUTCOMES {
            return self.in_flight < UNDECIDED_IN_FLIGHT;
        }
        let wins = self.outcomes.iter().filter(|won| **won).count();
        if wins * 8 >= self.outcomes.len() {
            return true;
        }
        let due = self
            .last_probe
            .is_none_or(|at| now.saturating_duration_since(at) >= PROBE_INTERVAL);
        if due {
            self.last_probe = Some(now);
        }
        due
    }

    /// Records how a uTP-first dial ended.
    pub fn record(&mut self, utp_won: bool) {
        if self.outcomes.len() == OUTCOMES_KEPT {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(utp_won);
    }

    /// A uTP-first dial ended, recorded or not (both carriers failed, or it was dropped).
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

/// A uTP-first dial in progress, from [`Utp::dial_utp_first`]: it counts against
/// [`UNDECIDED_IN_FLIGHT`] until its head start is over
/// ([`UtpFirstDial::head_start_over`]) or it is dropped, whichever comes first, and
/// [`UtpFirstDial::record`] keeps its outcome. A peer that never answers holds its place
/// for the head start, not for the whole dial.
pub struct UtpFirstDial {
    preference: Arc<Mutex<DialPreference>>,
    /// Whether it still counts as in flight.
    holds_place: bool,
}

impl UtpFirstDial {
    /// Whether it still counts as in flight.
    pub fn holds_place(&self) -> bool {
        self.holds_place
    }

    /// The head start is over, or uTP failed: the next dial may go uTP first in its place.
    pub fn head_start_over(&mut self) {
        if std::mem::take(&mut self.holds_place) {
            if let Ok(mut p) = self.preference.lock() {
                p.finished();
            }
        }
    }

    /// Records how the dial ended: `true` when uTP carried it.
    pub fn record(self, utp_won: bool) {
        if let Ok(mut p) = self.preference.lock() {
            p.record(utp_won);
        }
    }
}

impl Drop for UtpFirstDial {
    fn drop(&mut self) {
        self.head_start_over();
    }
}

/// Most uTP connections on one socket at once, in their handshake or established. Past
/// it the crate answers a connection request with a reset, and refuses our dials.
pub const MAX_UTP_CONNECTIONS: usize = 256;

/// Received bytes one uTP connection holds for its reader (in order or waiting for a gap
/// to fill); it is also the window the peer is told.
pub const UTP_RX_BUFFER: usize = 1 << 20;

/// The most bytes one uTP connection holds for sending, unacknowledged included.
pub const UTP_TX_BUFFER_MAX: usize = 1 << 20;

/// How long a uTP dial waits for the peer's answer before TCP is tried (or, with
/// `--utp only`, the dial fails). A peer that speaks uTP answers within a round trip;
/// one that does not never answers, so this is the cost of trying it first.
pub const UTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Connection requests per uTP dial, evenly within its time limit.
pub const UTP_CONNECT_TRIES: u32 = 3;

/// Peers remembered as not answering uTP; past this the memory starts afresh.
pub const MAX_REMEMBERED_WITHOUT_UTP: usize = 4096;

/// Which carriers connections use (`--utp`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum UtpMode {
    /// Listen on both; dial uTP first, TCP when the peer does not answer uTP.
    #[default]
    On,
    /// TCP only: no UDP socket.
    Off,
    /// uTP only: no TCP listener, no TCP dial.
    Only,
}

impl UtpMode {
    /// Whether TCP is used at all.
    pub fn uses_tcp(self) -> bool {
        self != UtpMode::Only
    }

    /// Whether uTP is used at all.
    pub fn uses_utp(self) -> bool {
        self != UtpMode::Off
    }
}

impl FromStr for UtpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(UtpMode::On),
            "off" => Ok(UtpMode::Off),
            "only" => Ok(UtpMode::Only),
            other => Err(format!("unknown uTP mode {other:?}: use on, off or only")),
        }
    }
}

impl fmt::Display for UtpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UtpMode::On => "on",
            UtpMode::Off => "off",
            UtpMode::Only => "only",
        })
    }
}

/// The DHT's UDP port when none is given: the peer port's number, unless uTP takes that
/// number on UDP (`mode` not `off`); then the next one (the one before, for 65535). The
/// DHT and uTP cannot share a socket here (each crate reads its own), and peers learn the
/// DHT's port from the BEP 5 `port` message, not from the peer port. Port 0 stays 0 (any
/// free port).
pub fn default_dht_port(peer_port: u16, mode: UtpMode) -> u16 {
    if peer_port == 0 || !mode.uses_utp() {
        return peer_port;
    }
    peer_port.checked_add(1).unwrap_or(peer_port - 1)
}

/// Why the uTP socket could not be bound or a uTP dial failed.
#[derive(Debug, thiserror::Error)]
pub enum UtpError {
    /// The crate refused: binding, a full socket, a reset, or its task gone.
    #[error("{0}")]
    Utp(#[from] librqbit_utp::Error),
    /// The peer did not answer within [`UTP_CONNECT_TIMEOUT`].
    #[error("no uTP answer within {0:?}")]
    Timeout(Duration),
}

/// A handle on the uTP socket. See the module documentation.
#[derive(Clone)]
pub struct Utp {
    socket: Arc<UtpSocketUdp>,
    /// Peers that did not answer a uTP dial (bounded by [`MAX_REMEMBERED_WITHOUT_UTP`]).
    without: Arc<Mutex<HashSet<SocketAddr>>>,
    /// Which carrier new dials try first, from how recent uTP-first dials ended.
    preference: Arc<Mutex<DialPreference>>,
    /// Stops the crate's tasks when the last handle goes.
    _stop: Arc<DropGuard>,
}

impl fmt::Debug for Utp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Utp({})", self.socket.bind_addr())
    }
}

/// The crate's options: our limits, and Nagle off (the codec writes whole messages).
fn socket_opts(stop: CancellationToken) -> SocketOpts {
    SocketOpts {
        vsock_rx_bufsize_bytes: NonZeroUsize::new(UTP_RX_BUFFER),
        vsock_tx_bufsize_bytes_max: NonZeroUsize::new(UTP_TX_BUFFER_MAX),
        max_live_vsocks: NonZeroUsize::new(MAX_UTP_CONNECTIONS),
        disable_nagle: true,
        // A closing connection does not wait for its FIN to be acknowledged.
        dont_wait_for_lastack: true,
        cancellation_token: stop,
        ..SocketOpts::default()
    }
}

impl Utp {
    /// Binds the UDP socket at `addr` and starts the crate's reading task on the current
    /// thread's event loop.
    pub async fn bind(addr: SocketAddr) -> Result<Utp, UtpError> {
        let stop = CancellationToken::new();
        let socket =
            UtpSocketUdp::new_udp_with_opts(addr, socket_opts(stop.clone()), Default::default())
                .await?;
        Ok(Utp {
            socket,
            without: Arc::default(),
            preference: Arc::default(),
            _stop: Arc::new(stop.drop_guard()),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.bind_addr()
    }

    /// Opens a uTP connection to `addr`, waiting at most `timeout` for the answer. The
    /// crate sends its connection request (SYN) once; a lost one would cost the whole
    /// wait (and, with `--utp on`, send the peer to TCP for good), so the request is
    /// made [`UTP_CONNECT_TRIES`] times within `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<UtpStream, UtpError> {
        let each = timeout / UTP_CONNECT_TRIES;
        for _ in 0..UTP_CONNECT_TRIES {
            if let Ok(connected) = tokio::time::timeout(each, self.socket.connect(addr)).await {
                return Ok(connected?);
            }
        }
        Err(UtpError::Timeout(timeout))
    }

    /// Whether a dial now should try uTP first (see [`DialPreference`]): `Some` when it
    /// should, to be told how the dial ended.
    pub fn dial_utp_first(&self) -> Option<UtpFirstDial> {
        let first = self
            .preference
            .lock()
            .map_or(true, |mut p| p.utp_first(Instant::now()));
        first.then(|| UtpFirstDial {
            preference: self.preference.clone(),
            holds_place: true,
        })
    }

    /// Whether `addr` did not answer a uTP dial before.
    pub fn known_without(&self, addr: &SocketAddr) -> bool {
        self.without.lock().is_ok_and(|w| w.contains(addr))
    }

    /// Remembers that `addr` did not answer a uTP dial.
    pub fn remember_without(&self, addr: SocketAddr) {
        if let Ok(mut without) = self.without.lock() {
            if without.len() >= MAX_REMEMBERED_WITHOUT_UTP {
                without.clear();
            }
            without.insert(addr);
        }
    }

    /// Forgets that `addr` did not answer uTP (it connected to us over uTP).
    pub fn forget_without(&self, addr: &SocketAddr) {
        if let Ok(mut without) = self.without.lock() {
            without.remove(addr);
        }
    }

    /// Incoming uTP connections as a `Stream` of the same items as the TCP listener's,
    /// for an actor stream (`ctx.add_stream`). It ends when the socket's task has.
    pub fn incoming(&self) -> UtpIncoming {
        UtpIncoming {
            utp: self.clone(),
            accepting: None,
        }
    }
}

/// See [`Utp::incoming`].
pub struct UtpIncoming {
    utp: Utp,
    /// The accept in progress.
    accepting: Option<BoxFuture<'static, librqbit_utp::Result<UtpStream>>>,
}

impl futures::Stream for UtpIncoming {
    type Item = std::io::Result<(Carrier, SocketAddr)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let accepting = this.accepting.get_or_insert_with(|| {
            let socket = this.utp.socket.clone();
            Box::pin(async move { socket.accept().await })
        });
        let accepted = match accepting.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(accepted) => accepted,
        };
        this.accepting = None;
        Poll::Ready(match accepted {
            Ok(stream) => {
                let addr = stream.remote_addr();
                this.utp.forget_without(&addr);
                Some(Ok((Carrier::from(stream), addr)))
            }
            Err(librqbit_utp::Error::DispatcherDead) => None,
            Err(e) => Some(Err(std::io::Error::other(e))),
        })
    }
}

#[cfg(test)]
mod tests {
    /// Gives `p` its [`MIN_OUTCOMES`] outcomes, all `utp_won`, dialing as the engine
    /// does: a uTP-first dial records and finishes, a TCP-first one records nothing.
    fn decide(p: &mut DialPreference, now: Instant, utp_won: bool) {
        let mut dials = 0;
        while p.outcomes.len() < MIN_OUTCOMES {
            if p.utp_first(now) {
                p.record(utp_won);
                p.finished();
            }
            dials += 1;
        }
        assert_eq!(
            dials, MIN_OUTCOMES,
            "one at a time, every dial went uTP first"
        );
    }

    #[test]
    fn dials_go_tcp_first_once_utp_carries_under_an_eighth_and_probe_it_every_interval() {
        let mut p = DialPreference::default();
        let t0 = Instant::now();
        decide(&mut p, t0, false);
        // The first TCP-first decision is also the first probe; the next waits.
        assert!(p.utp_first(t0));
        assert!(!p.utp_first(t0));
        assert!(!p.utp_first(t0 + PROBE_INTERVAL / 2));
        assert!(p.utp_first(t0 + PROBE_INTERVAL * 2));
        // Probes that find uTP bring uTP first back: three wins in nineteen.
        for _ in 0..3 {
            p.record(true);
        }
        assert!(p.utp_first(t0 + PROBE_INTERVAL * 2));
        assert!(p.utp_first(t0 + PROBE_INTERVAL * 2));
    }

    #[test]
    fn a_swarm_that_speaks_utp_keeps_utp_first() {
        let mut p = DialPreference::default();
        let t0 = Instant::now();
        decide(&mut p, t0, true);
        for i in 0..100 {
            assert!(p.utp_first(t0));
            p.record(i % 4 == 0);
            p.finished();
        }
    }

    /// The risk: with no evidence yet, every dial went uTP first, so in a large swarm
    /// without uTP the first 16 dial slots all sat out the head start and nothing
    /// connected for half a second. Now at most [`UNDECIDED_IN_FLIGHT`] do at once.
    #[test]
    fn before_there_is_evidence_at_most_eight_dials_at_once_go_utp_first() {
        let mut p = DialPreference::default();
        let t0 = Instant::now();
        let first: Vec<bool> = (0..16).map(|_| p.utp_first(t0)).collect();
        assert_eq!(first.iter().filter(|f| **f).count(), UNDECIDED_IN_FLIGHT);
        assert!(first[..UNDECIDED_IN_FLIGHT].iter().all(|f| *f));
        // One ends: the next dial goes uTP first again, and only that one.
        p.record(false);
        p.finished();
        assert!(p.utp_first(t0));
        assert!(!p.utp_first(t0));
        // A dial that ends without an outcome (both carriers failed) frees its place too.
        p.finished();
        assert!(p.utp_first(t0));
    }

    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn the_dht_port_moves_off_the_utp_port() {
        assert_eq!(default_dht_port(6881, UtpMode::On), 6882);
        assert_eq!(default_dht_port(6881, UtpMode::Only), 6882);
        assert_eq!(default_dht_port(6881, UtpMode::Off), 6881);
        assert_eq!(default_dht_port(65535, UtpMode::On), 65534);
        assert_eq!(default_dht_port(0, UtpMode::On), 0);
    }

    #[test]
    fn modes_parse_and_print() {
        for mode in [UtpMode::On, UtpMode::Off, UtpMode::Only] {
            assert_eq!(mode.to_string().parse::<UtpMode>(), Ok(mode));
        }
        assert!("maybe".parse::<UtpMode>().is_err());
        assert_eq!(UtpMode::default(), UtpMode::On);
    }

    #[tokio::test]
    async fn a_connection_carries_bytes_both_ways() {
        let server = Utp::bind(loopback()).await.unwrap();
        let client = Utp::bind(loopback()).await.unwrap();
        let mut incoming = server.incoming();
        let to = server.local_addr();
        let dialing = tokio::spawn(async move {
            let mut s = client.connect(to, UTP_CONNECT_TIMEOUT).await.unwrap();
            let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            s.write_all(&big).await.unwrap();
            let mut answer = [0u8; 2];
            s.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"ok");
            client
        });
        let (mut carrier, from) = incoming.next().await.unwrap().unwrap();
        assert!(carrier.is_utp());
        assert_eq!(carrier.peer_addr().unwrap(), from);
        let mut got = vec![0u8; 300_000];
        carrier.read_exact(&mut got).await.unwrap();
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        carrier.write_all(b"ok").await.unwrap();
        let _client = dialing.await.unwrap();
    }

    #[tokio::test]
    async fn a_dial_to_a_silent_port_times_out() {
        let client = Utp::bind(loopback()).await.unwrap();
        // A UDP socket that reads nothing: the SYN goes unanswered.
        let silent = std::net::UdpSocket::bind(loopback()).unwrap();
        let dialed = client
            .connect(silent.local_addr().unwrap(), Duration::from_millis(300))
            .await;
        assert!(matches!(dialed, Err(UtpError::Timeout(_))));
    }

    #[test]
    fn the_memory_of_peers_without_utp_is_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let utp = Utp::bind(loopback()).await.unwrap();
            for port in 0..(MAX_REMEMBERED_WITHOUT_UTP as u16 + 10) {
                utp.remember_without(SocketAddr::from(([10, 0, 0, 1], port)));
            }
            assert!(utp.without.lock().unwrap().len() <= MAX_REMEMBERED_WITHOUT_UTP);
            let last = SocketAddr::from(([10, 0, 0, 1], MAX_REMEMBERED_WITHOUT_UTP as u16 + 9));
            assert!(utp.known_without(&last));
            utp.forget_without(&last);
            assert!(!utp.known_without(&last));
        });
    }

    #[tokio::test]
    async fn garbage_datagrams_are_dropped_and_the_socket_still_serves() {
        let server = Utp::bind(loopback()).await.unwrap();
        let to = server.local_addr();
        let mut incoming = server.incoming();
        let junk = std::net::UdpSocket::bind(loopback()).unwrap();
        let mut rng_state = 0x2545_f491_4f6c_dd1du64;
        for i in 0..20_000usize {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            let len = i % 1500;
            let mut datagram: Vec<u8> = (0..len).map(|k| (rng_state >> (k % 56)) as u8).collect();
            // Every fifth a well-formed-looking header, version 1, of each type but SYN
            // (a connection request: bounded by MAX_UTP_CONNECTIONS, tested apart).
            if i % 5 == 0 && len >= 20 {
                datagram[0] = (((i / 5) % 4) as u8) << 4 | 1;
                datagram[1] = 0;
            }
            let _ = junk.send_to(&datagram, to);
        }
        // Still answers an honest connection. The flood may have overrun the kernel's
        // receive buffer, and the crate does not repeat a SYN: a few tries.
        let client = Utp::bind(loopback()).await.unwrap();
        let dialing = tokio::spawn(async move {
            for _ in 0..5 {
                if let Ok(mut s) = client.connect(to, Duration::from_secs(1)).await {
                    s.write_all(b"hello").await.unwrap();
                    return (client, s);
                }
            }
            panic!("no uTP connection after the garbage");
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let next = tokio::time::timeout_at(deadline, incoming.next())
                .await
                .expect("an honest connection within 20 s");
            let (mut carrier, _) = next.unwrap().unwrap();
            let mut got = [0u8; 5];
            // A random datagram that happened to be a SYN was accepted too: it sends nothing.
            let read =
                tokio::time::timeout(Duration::from_millis(200), carrier.read_exact(&mut got));
            if let Ok(Ok(_)) = read.await {
                assert_eq!(&got, b"hello");
                break;
            }
        }
        let _ = dialing.await.unwrap();
    }
}
