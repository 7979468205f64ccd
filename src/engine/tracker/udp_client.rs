//! The UDP side of a Tracker actor (BEP 15): connect, announce, retransmit.
//!
//! It owns the datagram socket of one tracker URL, the connection id and its minute of
//! validity, the choice of transaction ids and the retransmit clock. It must not encode
//! or parse packets itself: `crate::tracker::udp` does, including the transaction-id and
//! action checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use url::Host;

use super::{error_chain, AnnounceError, TrackerConfig, TrackerError};
use crate::tracker::udp::{
    self, AnnouncePacket, ConnectRequest, Expected, Response, UdpError, CONNECTION_ID_LIFETIME,
};
use crate::tracker::{timeout_for_attempt, AddressFamily, AnnounceRequest, AnnounceResponse};

/// The first retransmit timeout BEP 15 prescribes; `udp_timeout_base` is expressed
/// relative to it so the BEP's doubling schedule is kept at any scale.
const BEP15_FIRST_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest datagram a reply can be: a UDP payload cannot exceed this over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// Where the tracker lives, as written in its URL.
#[derive(Debug, Clone)]
enum TrackerHost {
    /// An address literal: no lookup needed.
    Literal(IpAddr),
    /// A name, looked up before every announce so a moved tracker is followed.
    Name(String),
}

/// A connection id and what it is valid for.
#[derive(Debug, Clone, Copy)]
struct Connection {
    /// The id from the tracker's connect response.
    id: u64,
    /// The address that handed it out; another address will not know it.
    tracker: SocketAddr,
    /// When it stops being valid: a minute after it was received (BEP 15).
    expires: Instant,
}

/// The parts of a UDP session that outlive one announce.
#[derive(Debug, Default)]
struct Session {
    /// The socket, kept between announces because the tracker ties the connection id
    /// to our address and port.
    socket: Option<Arc<UdpSocket>>,
    /// The current connection id, if one is still valid.
    connection: Option<Connection>,
}

/// Announces to one UDP tracker. Cloning is cheap and shares the session, so each
/// announce future can own a copy; the actor runs one announce at a time, and the lock
/// is never held across an await.
#[derive(Clone)]
pub(super) struct UdpTransport {
    /// The tracker's host from the URL.
    host: TrackerHost,
    /// The tracker's port from the URL.
    port: u16,
    /// The wait before the first retransmit; later waits double, as BEP 15 says.
    timeout_base: Duration,
    /// How many times one request is sent before the announce fails.
    max_attempts: u32,
    /// Socket and connection id, shared between the clones.
    session: Arc<Mutex<Session>>,
}

/// What one request/reply exchange ended with, when it did not fail.
enum Exchange {
    /// The tracker answered.
    Reply(Response),
    /// The connection id ran out before a retransmit was due: connect again first.
    ConnectionExpired,
}

impl UdpTransport {
    /// Reads host and port from `config.url`, which must be a `udp://host:port` URL.
    pub(super) fn new(config: &TrackerConfig) -> Result<UdpTransport, TrackerError> {
        let incomplete = || TrackerError::IncompleteUdpUrl(config.url.to_string());
        let host = match config.url.host().ok_or_else(incomplete)? {
            Host::Ipv4(ip) => TrackerHost::Literal(IpAddr::V4(ip)),
            Host::Ipv6(ip) => TrackerHost::Literal(IpAddr::V6(ip)),
            Host::Domain(name) => TrackerHost::Name(name.to_owned()),
        };
        let port = config.url.port().ok_or_else(incomplete)?;
        Ok(UdpTransport {
            host,
            port,
            timeout_base: config.udp_timeout_base,
            max_attempts: config.udp_max_attempts,
            session: Arc::new(Mutex::new(Session::default())),
        })
    }

    /// Connects if needed, then announces, retransmitting on BEP 15's schedule.
    pub(super) async fn announce(
        &self,
        request: &AnnounceRequest,
    ) -> Result<AnnounceResponse, AnnounceError> {
        let tracker = self.resolve().await?;
        let socket = self.socket_for(tracker).await?;
        let family = match tracker {
            SocketAddr::V4(_) => AddressFamily::V4,
            SocketAddr::V6(_) => AddressFamily::V6,
        };
        // One attempt counter for the whole announce, connect included, so the total
        // time spent is bounded by the schedule however often the id has to be renewed.
        let mut attempt = 0;
        loop {
            let connection = match self.live_connection(tracker) {
                Some(connection) => connection,
                None => {
                    let transaction_id = rand::random();
                    let packet = ConnectRequest { transaction_id }.encode();
                    let reply = self
                        .exchange(
                            &socket,
                            tracker,
                            &packet,
                            transaction_id,
                            Expected::Connect,
                            None,
                            &mut attempt,
                        )
                        .await?;
                    let Exchange::Reply(Response::Connect { connection_id }) = reply else {
                        return Err(AnnounceError::WrongReplyKind);
                    };
                    let connection = Connection {
                        id: connection_id,
                        tracker,
                        expires: Instant::now() + CONNECTION_ID_LIFETIME,
                    };
                    self.lock().connection = Some(connection);
                    connection
                }
            };
            let transaction_id = rand::random();
            let packet = AnnouncePacket {
                connection_id: connection.id,
                transaction_id,
                request: request.clone(),
            }
            .encode();
            match self
                .exchange(
                    &socket,
                    tracker,
                    &packet,
                    transaction_id,
                    Expected::Announce(family),
                    Some(connection.expires),
                    &mut attempt,
                )
                .await?
            {
                Exchange::Reply(Response::Announce(response)) => return Ok(response),
                Exchange::Reply(_) => return Err(AnnounceError::WrongReplyKind),
                Exchange::ConnectionExpired => self.lock().connection = None,
            }
        }
    }

    /// Sends `packet` and waits for the reply to `transaction_id`, sending it again
    /// each time an attempt's timeout passes. Datagrams from other addresses, with
    /// another transaction id or too short to read are ignored: they may be late
    /// replies to earlier requests or noise, and the real reply may still come.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        socket: &UdpSocket,
        tracker: SocketAddr,
        packet: &[u8],
        transaction_id: u32,
        expected: Expected,
        valid_until: Option<Instant>,
        attempt: &mut u32,
    ) -> Result<Exchange, AnnounceError> {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            let Some(wait) = self.attempt_timeout(*attempt) else {
                return Err(AnnounceError::NoReply { attempts: *attempt });
            };
            if valid_until.is_some_and(|expiry| Instant::now() >= expiry) {
                return Ok(Exchange::ConnectionExpired);
            }
            socket
                .send_to(packet, tracker)
                .await
                .map_err(|e| AnnounceError::Socket(error_chain(&e)))?;
            let deadline = Instant::now() + wait;
            loop {
                let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer));
                let Ok(received) = received.await else {
                    break;
                };
                let (length, from) =
                    received.map_err(|e| AnnounceError::Socket(error_chain(&e)))?;
                if from != tracker {
                    continue;
                }
                let datagram = buffer.get(..length).unwrap_or_default();
                match udp::parse_response(datagram, transaction_id, expected) {
                    Ok(response) => return Ok(Exchange::Reply(response)),
                    Err(UdpError::TransactionMismatch { .. } | UdpError::TooShort { .. }) => {
                        continue
                    }
                    Err(UdpError::Tracker(message)) => {
                        return Err(AnnounceError::Refused(if message.is_empty() {
                            "tracker sent an error without a message".to_owned()
                        } else {
                            message
                        }))
                    }
                    Err(other) => return Err(AnnounceError::UdpReply(other)),
                }
            }
            *attempt += 1;
        }
    }

    /// BEP 15's wait for the `attempt`-th transmission, scaled so that the first wait is
    /// `timeout_base`; `None` once the configured number of attempts is used up.
    fn attempt_timeout(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let scale = self.timeout_base.as_secs_f64() / BEP15_FIRST_TIMEOUT.as_secs_f64();
        timeout_for_attempt(attempt).map(|wait| wait.mul_f64(scale))
    }

    /// The tracker's address now. A name is looked up every time; among its addresses,
    /// one of the family our socket already has is preferred so the connection id
    /// stays usable.
    async fn resolve(&self) -> Result<SocketAddr, AnnounceError> {
        let name = match &self.host {
            TrackerHost::Literal(ip) => return Ok(SocketAddr::new(*ip, self.port)),
            TrackerHost::Name(name) => name,
        };
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), self.port))
            .await
            .map_err(|e| AnnounceError::Resolve {
                host: name.clone(),
                reason: error_chain(&e),
            })?
            .collect();
        let preferred = self
            .lock()
            .socket
            .as_ref()
            .and_then(|socket| socket.local_addr().ok())
            .and_then(|local| {
                addresses
                    .iter()
                    .find(|a| a.is_ipv4() == local.is_ipv4())
                    .copied()
            });
        preferred
            .or_else(|| addresses.first().copied())
            .ok_or_else(|| AnnounceError::Resolve {
                host: name.clone(),
                reason: "no address".to_owned(),
            })
    }

    /// The socket to reach `tracker` from: the one we have when it is bound to the right
    /// address, else a new one (which forgets the connection id, since the tracker tied
    /// it to the old socket's address).
    async fn socket_for(&self, tracker: SocketAddr) -> Result<Arc<UdpSocket>, AnnounceError> {
        let local = bind_address_for(tracker);
        if let Some(socket) = &self.lock().socket {
            if socket
                .local_addr()
                .is_ok_and(|bound| bound.ip() == local.ip())
            {
                return Ok(Arc::clone(socket));
            }
        }
        let socket = Arc::new(
            UdpSocket::bind(local)
                .await
                .map_err(|e| AnnounceError::Socket(error_chain(&e)))?,
        );
        let mut session = self.lock();
        session.socket = Some(Arc::clone(&socket));
        session.connection = None;
        Ok(socket)
    }

    /// The connection id for `tracker` if we hold one that is still valid.
    fn live_connection(&self, tracker: SocketAddr) -> Option<Connection> {
        self.lock()
            .connection
            .filter(|c| c.tracker == tracker && Instant::now() < c.expires)
    }

    /// The session, even if a panic elsewhere poisoned the lock: its contents are
    /// always consistent, since every update is a single assignment.
    fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The local address to bind for talking to `tracker`: loopback for a loopback tracker,
/// so tests and local trackers never open a socket beyond the machine, else any address
/// of the tracker's family.
fn bind_address_for(tracker: SocketAddr) -> SocketAddr {
    let ip = match tracker.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_trackers_are_reached_from_a_loopback_socket_of_their_family() {
        let v4: SocketAddr = "127.0.0.1:6969".parse().unwrap();
        let v6: SocketAddr = "[::1]:6969".parse().unwrap();
        let far4: SocketAddr = "192.0.2.1:6969".parse().unwrap();
        let far6: SocketAddr = "[2001:db8::1]:6969".parse().unwrap();
        assert_eq!(bind_address_for(v4), "127.0.0.1:0".parse().unwrap());
        assert_eq!(bind_address_for(v6), "[::1]:0".parse().unwrap());
        assert_eq!(bind_address_for(far4), "0.0.0.0:0".parse().unwrap());
        assert_eq!(bind_address_for(far6), "[::]:0".parse().unwrap());
    }
}
