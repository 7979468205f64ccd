//! The shared Listener: one listening socket for every torrent of a process (`serve`),
//! routing each incoming connection to its torrent by the info-hash of its handshake.
//!
//! It accepts sockets as an actor stream, reads the peer's handshake (bounded in time, at
//! most [`MAX_HANDSHAKES_IN_FLIGHT`] at once; more sockets are closed at once), looks the
//! info-hash up in its routes and hands the socket, with our answer still unsent, to that
//! torrent's Coordinator as an [`IncomingPeer`]. The Coordinator applies its own limits,
//! answers the handshake and starts the Peer. An unknown info-hash closes the socket
//! without a byte sent, as a torrent's own listener does.
//!
//! It owns the routes (info-hash → Coordinator) and nothing else: it never answers a
//! handshake, never starts a Peer and never waits on a Coordinator. Hand-offs go by
//! `try_send`, so a Coordinator that is stopped or behind on its mailbox costs the
//! connection (closed), never the Listener's time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{debug, info, o, Logger};
use tokio::net::TcpStream;

use super::connection::{self, TcpListenerStream};
use super::messages::{IncomingPeer, Route, Unroute};
use crate::InfoHash;

/// Incoming connections in their handshake at once, over all torrents; more are closed at
/// once, so a flood of connections that never finish their handshake costs a bounded
/// number of sockets for at most the handshake timeout each.
pub const MAX_HANDSHAKES_IN_FLIGHT: usize = 32;

/// How often, at most, turned-away connections are logged.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// See the module documentation.
pub struct Listener {
    /// Where each torrent's incoming peers go.
    routes: HashMap<InfoHash, Recipient<IncomingPeer>>,
    /// How long a peer has to send its handshake.
    handshake_timeout: Duration,
    /// Connections whose handshake is being read.
    in_flight: usize,
    /// Connections turned away (too many handshakes, unknown torrent, torrent busy) since
    /// the last log line about it, and when that line was written.
    turned_away: u64,
    turned_away_logged: Option<Instant>,
    log: Logger,
}

impl Listener {
    /// Binds `addr` and starts the Listener on the current arbiter. Returns its address
    /// and the bound socket address (the port chosen when `addr` asked for port 0).
    pub async fn bind(
        addr: SocketAddr,
        handshake_timeout: Duration,
        log: Logger,
    ) -> std::io::Result<(Addr<Listener>, SocketAddr)> {
        let socket = connection::listen(addr).await?;
        let local = socket.local_addr()?;
        let log = log.new(o!("listener" => local.to_string()));
        info!(log, "listening for every torrent");
        let listener = Listener::create(move |ctx| {
            ctx.add_stream(TcpListenerStream(socket));
            Listener {
                routes: HashMap::new(),
                handshake_timeout,
                in_flight: 0,
                turned_away: 0,
                turned_away_logged: None,
                log,
            }
        });
        Ok((listener, local))
    }

    /// Counts a connection closed without reaching a torrent, and says so in the log at
    /// most every [`REFUSAL_LOG_INTERVAL`].
    fn turned_away(&mut self, why: &'static str) {
        self.turned_away += 1;
        if self
            .turned_away_logged
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            info!(self.log, "incoming connections turned away";
                "count" => self.turned_away, "last reason" => why,
                "handshaking" => self.in_flight, "torrents" => self.routes.len());
            self.turned_away = 0;
            self.turned_away_logged = Some(Instant::now());
        }
    }

    /// Hands a connection whose handshake was read to its torrent, or closes it.
    fn route(&mut self, stream: TcpStream, addr: SocketAddr, handshake: crate::wire::Handshake) {
        let info_hash = handshake.info_hash;
        let Some(to) = self.routes.get(&info_hash) else {
            debug!(self.log, "incoming peer for an unknown torrent"; "addr" => %addr, "info_hash" => %info_hash);
            return self.turned_away("unknown torrent");
        };
        let peer = IncomingPeer {
            stream,
            addr,
            handshake,
        };
        match to.try_send(peer) {
            Ok(()) => {}
            Err(SendError::Full(_)) => self.turned_away("torrent busy"),
            Err(SendError::Closed(_)) => {
                // The Coordinator stopped without an `Unroute`: forget it.
                self.routes.remove(&info_hash);
                self.turned_away("torrent stopped");
            }
        }
    }
}

impl Actor for Listener {
    type Context = Context<Self>;
}

impl StreamHandler<std::io::Result<(TcpStream, SocketAddr)>> for Listener {
    fn handle(&mut self, item: std::io::Result<(TcpStream, SocketAddr)>, ctx: &mut Context<Self>) {
        let (mut stream, addr) = match item {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, mostly; the next accept may work.
                debug!(self.log, "accept failed"; "error" => %e);
                return;
            }
        };
        if self.in_flight >= MAX_HANDSHAKES_IN_FLIGHT {
            // Dropping the stream closes it at once: a flood costs no lasting socket.
            return self.turned_away("too many handshakes");
        }
        self.in_flight += 1;
        let timeout = self.handshake_timeout;
        let read = async move {
            let handshake = connection::read_incoming_handshake(&mut stream, timeout).await;
            handshake.map(|h| (stream, h))
        };
        ctx.spawn(read.into_actor(self).map(move |res, act, _| {
            act.in_flight -= 1;
            match res {
                Ok((stream, handshake)) => act.route(stream, addr, handshake),
                Err(e) => {
                    debug!(act.log, "incoming handshake failed"; "addr" => %addr, "error" => %e)
                }
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
        self.routes.insert(msg.info_hash, msg.to);
    }
}

impl Handler<Unroute> for Listener {
    type Result = ();

    fn handle(&mut self, msg: Unroute, _: &mut Context<Self>) {
        self.routes.remove(&msg.info_hash);
    }
}
