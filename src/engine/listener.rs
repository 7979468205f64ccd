//! The shared Listener: one listening socket for every torrent of a process (`serve`),
//! routing each incoming connection to its torrent by the info-hash of its handshake.
//!
//! It accepts sockets as an actor stream, reads the peer's handshake (bounded in time, at
//! most [`MAX_HANDSHAKES_IN_FLIGHT`] at once; more sockets are closed at once), plaintext
//! or encrypted as its [`Encryption`] allows (an encrypted one names its torrent by the
//! SKEY hash, looked up in an [`SkeyTable`] of the routed torrents), looks the
//! info-hash up in its routes and hands the socket, with our answer still unsent, to that
//! torrent's Coordinator as an [`IncomingPeer`]. The Coordinator applies its own limits,
//! answers the handshake and starts the Peer. An unknown info-hash closes the socket
//! without a byte sent, as a torrent's own listener does.
//!
//! It owns the routes (info-hash → Coordinator) and nothing else: it never answers a
//! handshake and never starts a Peer. A hand-off is a bounded wait, not a refusal: the
//! socket is queued for its Coordinator and stays counted against
//! [`MAX_HANDSHAKES_IN_FLIGHT`] until the Coordinator took it, so a Coordinator that is
//! momentarily behind on its mailbox delays the connection instead of costing it. A
//! hand-off not taken within [`HAND_OFF_TIMEOUT`] is refused: the connection is closed
//! (through a second descriptor of the socket, as the socket itself is in the mailbox)
//! and counts as stalled for its torrent until the Coordinator gets to it; a torrent with
//! [`MAX_STALLED_HAND_OFFS`] stalled has its peers closed at once. So the Listener's share
//! of a Coordinator's mailbox stays bounded even when the Coordinator is stuck. Each
//! refusal is counted in the torrent's metrics and logged with its reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connection::{self, Accepted, TcpListenerStream};
use super::messages::{IncomingPeer, Route, Unroute};
use super::metrics::ActorMetrics;
use super::transport::PeerStream;
use super::utp::{Utp, UtpMode};
use crate::wire::mse::{Encryption, SkeyTable};
use crate::InfoHash;
use actix::prelude::*;
use slog::{debug, info, o, Logger};

/// An `IncomingPeer` on its way to a Coordinator's mailbox, still waiting for its reply.
type PendingHandOff = std::pin::Pin<Box<actix::dev::RecipientRequest<IncomingPeer>>>;

/// What the Listener keeps of one hand-off until it ends.
struct HandOff {
    info_hash: InfoHash,
    addr: SocketAddr,
    to: Recipient<IncomingPeer>,
    metrics: Arc<ActorMetrics>,
    /// A second descriptor of the socket, to close it if the hand-off times out.
    spare: Option<std::net::TcpStream>,
}

/// Incoming connections in their handshake or waiting for their Coordinator to take them,
/// over all torrents; more are closed at once, so a flood of connections that never
/// finish their handshake costs a bounded number of sockets for at most the handshake
/// timeout each, and the Listener never has more than this many hand-offs queued.
pub const MAX_HANDSHAKES_IN_FLIGHT: usize = 32;

/// How long a connection whose handshake was read may wait for its Coordinator to take
/// it. The peer is waiting for our answer meanwhile; a Coordinator this far behind is
/// stuck rather than busy, and the connection is closed.
pub const HAND_OFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Hand-offs of one torrent that timed out and are still in its Coordinator's mailbox;
/// past this, its incoming peers are closed at once until the Coordinator catches up.
pub const MAX_STALLED_HAND_OFFS: usize = 8;

/// How often, at most, turned-away connections are logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Why the Listener closed a connection without it reaching a torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnedAway {
    /// [`MAX_HANDSHAKES_IN_FLIGHT`] connections were already in their handshake or
    /// hand-off.
    TooManyHandshakes,
    /// The handshake named a torrent with no route.
    UnknownTorrent,
    /// The Coordinator did not take the connection within [`HAND_OFF_TIMEOUT`].
    HandOffTimedOut,
    /// The Coordinator had stopped (its route is dropped).
    TorrentStopped,
    /// The Coordinator still holds [`MAX_STALLED_HAND_OFFS`] hand-offs that timed out.
    TorrentStuck,
}

impl TurnedAway {
    /// Every reason, in the order the log lists them.
    const ALL: [TurnedAway; 5] = [
        TurnedAway::TooManyHandshakes,
        TurnedAway::UnknownTorrent,
        TurnedAway::HandOffTimedOut,
        TurnedAway::TorrentStopped,
        TurnedAway::TorrentStuck,
    ];

    /// The reason as the log says it.
    fn name(self) -> &'static str {
        match self {
            TurnedAway::TooManyHandshakes => "too many handshakes",
            TurnedAway::UnknownTorrent => "unknown torrent",
            TurnedAway::HandOffTimedOut => "hand-off timed out",
            TurnedAway::TorrentStopped => "torrent stopped",
            TurnedAway::TorrentStuck => "torrent stuck",
        }
    }
}

/// Where one torrent's incoming peers go.
struct RouteTo {
    /// Its Coordinator.
    to: Recipient<IncomingPeer>,
    /// Its Coordinator's counters: a hand-off that fails counts there as backpressure.
    metrics: Arc<ActorMetrics>,
    /// Hand-offs that timed out and are still in the Coordinator's mailbox.
    stalled: usize,
}

/// See the module documentation.
pub struct Listener {
    /// Where each torrent's incoming peers go.
    routes: HashMap<InfoHash, RouteTo>,
    /// How long a peer has to send its handshake.
    handshake_timeout: Duration,
    /// Which incoming handshakes are taken: plaintext, encrypted or both.
    encryption: Encryption,
    /// The routed torrents by their SKEY hash, for encrypted handshakes. Shared with the
    /// handshakes in flight, which keep the table they started with; a change of routes
    /// copies it (rare next to handshakes).
    skeys: Arc<SkeyTable>,
    /// Connections whose handshake is being read or whose hand-off is not yet taken.
    in_flight: usize,
    /// Connections turned away since the last log line about it, by reason (in the order
    /// of [`TurnedAway::ALL`]), and when that line was written.
    turned_away: [u64; TurnedAway::ALL.len()],
    turned_away_logged: Option<Instant>,
    log: Logger,
}

impl Listener {
    /// Binds `addr` (TCP, and uTP on the same port, as `utp` asks) and starts the
    /// Listener on the current arbiter. Returns its address, the bound socket address
    /// (the port chosen when `addr` asked for port 0) and the uTP socket, for the
    /// torrents to dial from. A uTP socket that cannot be bound beside TCP is logged and
    /// left out, unless `utp` is `only`.
    pub async fn bind(
        addr: SocketAddr,
        handshake_timeout: Duration,
        encryption: Encryption,
        utp: UtpMode,
        log: Logger,
    ) -> std::io::Result<(Addr<Listener>, SocketAddr, Option<Utp>)> {
        let (tcp, utp_socket) = connection::listen_all(addr, utp, None).await;
        let tcp = tcp?;
        let utp_socket = match utp_socket {
            Ok(socket) => socket,
            Err(e) if utp == UtpMode::Only => return Err(std::io::Error::other(e)),
            Err(e) => {
                slog::warn!(log, "cannot listen for uTP, TCP only"; "error" => %e);
                None
            }
        };
        let local = match (&tcp, &utp_socket) {
            (Some(tcp), _) => tcp.local_addr()?,
            (None, Some(utp)) => utp.local_addr(),
            (None, None) => return Err(std::io::Error::other("no listening socket")),
        };
        let log = log.new(o!("listener" => local.to_string()));
        info!(log, "listening for every torrent"; "encryption" => %encryption, "utp" => %utp,
            "utp socket" => utp_socket.is_some());
        let incoming_utp = utp_socket.as_ref().map(Utp::incoming);
        let listener = Listener::create(move |ctx| {
            if let Some(tcp) = tcp {
                ctx.add_stream(TcpListenerStream(tcp));
            }
            if let Some(incoming) = incoming_utp {
                ctx.add_stream(incoming);
            }
            Listener {
                routes: HashMap::new(),
                handshake_timeout,
                encryption,
                skeys: Arc::new(SkeyTable::default()),
                in_flight: 0,
                turned_away: [0; TurnedAway::ALL.len()],
                turned_away_logged: None,
                log,
            }
        });
        Ok((listener, local, utp_socket))
    }

    /// Counts a connection closed without reaching a torrent, and says so in the log, with
    /// the count for each reason since the last line, at most every
    /// [`REFUSAL_LOG_INTERVAL`].
    fn turned_away(&mut self, why: TurnedAway) {
        let i = TurnedAway::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.turned_away[i] += 1;
        if self
            .turned_away_logged
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            let counts: Vec<String> = TurnedAway::ALL
                .iter()
                .zip(self.turned_away)
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| format!("{}: {n}", r.name()))
                .collect();
            info!(self.log, "incoming connections turned away";
                "count" => self.turned_away.iter().sum::<u64>(),
                "reasons" => counts.join(", "), "last reason" => why.name(),
                "handshaking" => self.in_flight, "torrents" => self.routes.len());
            self.turned_away = [0; TurnedAway::ALL.len()];
            self.turned_away_logged = Some(Instant::now());
        }
    }

    /// Hands a connection whose handshake was read to its torrent, or closes it. The
    /// connection stays in [`Listener::in_flight`] until its Coordinator took it or the
    /// hand-off failed.
    fn hand_off(
        &mut self,
        stream: PeerStream,
        addr: SocketAddr,
        handshake: crate::wire::Handshake,
        ctx: &mut Context<Self>,
    ) {
        let info_hash = handshake.info_hash;
        let Some(route) = self.routes.get(&info_hash) else {
            self.in_flight -= 1;
            debug!(self.log, "incoming peer for an unknown torrent"; "addr" => %addr, "info_hash" => %info_hash);
            return self.turned_away(TurnedAway::UnknownTorrent);
        };
        if route.stalled >= MAX_STALLED_HAND_OFFS {
            // Its Coordinator has not taken the last ones in a long while: more would
            // only pile up sockets in its mailbox.
            self.in_flight -= 1;
            route.metrics.held_back();
            return self.turned_away(TurnedAway::TorrentStuck);
        }
        let (to, metrics) = (route.to.clone(), route.metrics.clone());
        // A second descriptor of the socket, to close the connection if the hand-off
        // times out while the socket itself sits in the Coordinator's mailbox. Without
        // one (out of descriptors, or a uTP connection, which has no descriptor of its
        // own) such a connection closes only once the Coordinator gets to it.
        let spare = stream
            .tcp()
            .and_then(|tcp| tcp.as_fd().try_clone_to_owned().ok())
            .map(std::net::TcpStream::from);
        let peer = IncomingPeer {
            stream,
            addr,
            handshake,
        };
        // `send` from a fresh clone of the recipient queues the message at once, whatever
        // the mailbox holds: in actix 0.13 each clone has its own "parked" flag, and only
        // a sender that already overfilled the mailbox is refused (`try_send`) or left
        // waiting with no wake-up (`send`). The mailbox stays bounded all the same: the
        // Listener has at most MAX_HANDSHAKES_IN_FLIGHT hand-offs waiting at once, and a
        // torrent at most MAX_STALLED_HAND_OFFS that timed out. The reply comes once the
        // Coordinator handled the message.
        let mut request: PendingHandOff = Box::pin(to.clone().send(peer));
        let waited = async move {
            match tokio::time::timeout(HAND_OFF_TIMEOUT, &mut request).await {
                Ok(taken) => Ok(taken),
                Err(_) => Err(request),
            }
        };
        let hand_off = HandOff {
            info_hash,
            addr,
            to,
            metrics,
            spare,
        };
        ctx.spawn(
            waited
                .into_actor(self)
                .map(move |res, act, ctx| act.handed_off(hand_off, res, ctx)),
        );
    }

    /// How a hand-off ended: taken, or the torrent gone, or not taken in time (then the
    /// connection is closed and the torrent's route counts it as stalled until its
    /// Coordinator gets to the message).
    fn handed_off(
        &mut self,
        hand_off: HandOff,
        res: Result<Result<(), MailboxError>, PendingHandOff>,
        ctx: &mut Context<Self>,
    ) {
        let HandOff {
            info_hash,
            addr,
            to,
            metrics,
            spare,
        } = hand_off;
        self.in_flight -= 1;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(MailboxError::Closed)) => {
                // The Coordinator stopped without an `Unroute`: forget it, unless the
                // torrent was routed to a new Coordinator meanwhile.
                if self.routes.get(&info_hash).is_some_and(|r| r.to == to) {
                    self.routes.remove(&info_hash);
                    Arc::make_mut(&mut self.skeys).remove(&info_hash);
                }
                metrics.held_back();
                self.turned_away(TurnedAway::TorrentStopped);
            }
            Ok(Err(MailboxError::Timeout)) => {
                // `send` sets no time limit of its own; counted as one all the same.
                metrics.held_back();
                self.turned_away(TurnedAway::HandOffTimedOut);
            }
            Err(request) => {
                // The peer has waited long enough for our answer: close the connection
                // now. The message stays queued, and the Coordinator meets a closed
                // socket when it gets to it; until then it counts as stalled for this
                // torrent, which bounds what a stuck Coordinator holds.
                if let Some(spare) = spare {
                    let _ = spare.shutdown(std::net::Shutdown::Both);
                }
                debug!(self.log, "incoming peer not taken in time, closed"; "addr" => %addr,
                    "info_hash" => %info_hash, "waited" => ?HAND_OFF_TIMEOUT);
                metrics.held_back();
                self.turned_away(TurnedAway::HandOffTimedOut);
                self.stalled(info_hash, &to, 1);
                ctx.spawn(request.into_actor(self).map(move |_, act, _| {
                    act.stalled(info_hash, &to, -1);
                }));
            }
        }
    }

    /// Adds `by` to the stalled hand-offs of `info_hash`'s route, if it still goes to `to`.
    fn stalled(&mut self, info_hash: InfoHash, to: &Recipient<IncomingPeer>, by: isize) {
        if let Some(route) = self.routes.get_mut(&info_hash).filter(|r| r.to == *to) {
            route.stalled = route.stalled.saturating_add_signed(by);
        }
    }
}

impl Actor for Listener {
    type Context = Context<Self>;
}

impl StreamHandler<Accepted> for Listener {
    fn handle(&mut self, item: Accepted, ctx: &mut Context<Self>) {
        let (stream, addr) = match item {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, mostly; the next accept may work.
                debug!(self.log, "accept failed"; "error" => %e);
                return;
            }
        };
        if self.in_flight >= MAX_HANDSHAKES_IN_FLIGHT {
            // Dropping the stream closes it at once: a flood costs no lasting socket.
            return self.turned_away(TurnedAway::TooManyHandshakes);
        }
        self.in_flight += 1;
        let (timeout, encryption, skeys) =
            (self.handshake_timeout, self.encryption, self.skeys.clone());
        let read = async move {
            connection::read_incoming_handshake(stream, &skeys, encryption, timeout).await
        };
        ctx.spawn(read.into_actor(self).map(move |res, act, ctx| match res {
            Ok((stream, handshake)) => act.hand_off(stream, addr, handshake, ctx),
            Err(e) => {
                act.in_flight -= 1;
                debug!(act.log, "incoming handshake failed"; "addr" => %addr, "error" => %e)
            }
        }));
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // An accept stream never ends by itself; keep the routes for whoever asks.
    }
}

impl Handler<Route> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Route, _: &mut Context<Self>) {
        let route = RouteTo {
            to: msg.to,
            metrics: msg.metrics,
            stalled: 0,
        };
        Arc::make_mut(&mut self.skeys).insert(msg.info_hash);
        self.routes.insert(msg.info_hash, route);
    }
}

impl Handler<Unroute> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Unroute, _: &mut Context<Self>) {
        Arc::make_mut(&mut self.skeys).remove(&msg.info_hash);
        self.routes.remove(&msg.info_hash);
    }
}
