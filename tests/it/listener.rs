//! The shared Listener in process: two torrents' Coordinators behind one listening
//! socket, raw TCP clients on loopback playing peers. Each client's handshake must reach
//! the torrent it names (told apart by the peer id each Coordinator answers with), a
//! stranger's must be closed unanswered, and the shared connection budget must hold over
//! both torrents. And through `serve`, a burst of peers at a torrent whose Coordinator is
//! slowed on purpose: refused only by the caps, never for a busy mailbox.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use torrent_actors::bencode::BValue;
use torrent_actors::engine::budget::ConnectionBudget;
use torrent_actors::engine::coordinator::{Coordinator, EngineConfig, TorrentParams};
use torrent_actors::engine::listener::Listener;
use torrent_actors::engine::messages::{
    GetFileProgress, GetPeerList, GetPieceMap, PeerInfo, Phase, Route, Shutdown, TorrentEvent,
    Unroute,
};
use torrent_actors::engine::metrics::{ActorKind, ActorMetrics};
use torrent_actors::metainfo::Metainfo;
use torrent_actors::wire::mse::Encryption;
use torrent_actors::wire::{Handshake, Reserved, HANDSHAKE_LEN};
use torrent_actors::{InfoHash, PeerId};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

/// A torrent of one 20 000-byte file: two pieces whose hashes nothing matches, so the
/// start-up check finds nothing and the torrent goes straight to downloading.
pub(crate) fn torrent(name: &str) -> Metainfo {
    let bytes = BValue::dict([(
        "info",
        BValue::dict([
            ("name", BValue::string(name)),
            ("piece length", BValue::Int(16384)),
            ("length", BValue::Int(20_000)),
            ("pieces", BValue::Bytes(vec![7; 40])),
        ]),
    )])
    .encode();
    Metainfo::from_bytes(&bytes).expect("a valid torrent")
}

/// Forwards each torrent's phase changes to the test.
struct Phases(futures::channel::mpsc::UnboundedSender<Phase>);

impl Actor for Phases {
    type Context = Context<Self>;
}

impl Handler<TorrentEvent> for Phases {
    type Result = ();
    fn handle(&mut self, event: TorrentEvent, _: &mut Self::Context) {
        if let TorrentEvent::Progress(p) = event {
            let _ = self.0.unbounded_send(p.phase);
        }
    }
}

/// Starts a Coordinator taking its peers from the shared listener at `shared`, and waits
/// until its start-up check is done (before that it takes no peers).
pub(crate) async fn start_torrent(
    metainfo: Metainfo,
    peer_id: PeerId,
    shared: SocketAddr,
    budget: &std::sync::Arc<ConnectionBudget>,
    dir: &std::path::Path,
) -> Addr<Coordinator> {
    let mut config = EngineConfig::new(peer_id, SocketAddr::from(([127, 0, 0, 1], 0)));
    config.shared_listener = Some(shared);
    config.budget = Some(budget.clone());
    let (tx, mut phases) = futures::channel::mpsc::unbounded();
    let coordinator = Coordinator::start(TorrentParams {
        metainfo,
        download_dir: dir.to_path_buf(),
        config,
        selection: None,
        high_priority: Vec::new(),
        dht: None,
        events: Phases(tx).start().recipient(),
        log: slog::Logger::root(slog::Discard, slog::o!()),
    });
    tokio::time::timeout(WAIT, async {
        while let Some(phase) = phases.next().await {
            if phase == Phase::Downloading {
                return;
            }
        }
        panic!("the torrent's events ended before it was downloading");
    })
    .await
    .expect("the torrent is downloading within the limit");
    coordinator
}

/// Connects to `to`, sends a handshake for `info_hash` and returns the stream with the
/// handshake that came back, or `None` when the connection was closed unanswered.
async fn handshake_with(
    to: SocketAddr,
    info_hash: InfoHash,
    our_id: PeerId,
) -> (TcpStream, Option<Handshake>) {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(to))
        .await
        .expect("connected within the limit")
        .expect("the listener accepts");
    stream
        .write_all(&Handshake::new(Reserved::none(), info_hash, our_id).encode())
        .await
        .expect("the handshake is sent");
    let mut buf = [0u8; HANDSHAKE_LEN];
    let read = tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("an answer or a close within the limit");
    let answer = read
        .ok()
        .map(|_| Handshake::parse(&buf).expect("a well-formed handshake"));
    (stream, answer)
}

/// Asks `coordinator` for its peers until `done` holds for them, within the limit.
pub(crate) async fn peers_until(
    coordinator: &Addr<Coordinator>,
    done: impl Fn(&[PeerInfo]) -> bool,
) -> Vec<PeerInfo> {
    tokio::time::timeout(WAIT, async {
        loop {
            let peers = coordinator
                .send(GetPeerList)
                .await
                .expect("the coordinator answers");
            if done(&peers) {
                return peers;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the peer list settles within the limit")
}

#[test]
fn one_listener_routes_each_incoming_peer_to_its_torrent_and_closes_strangers() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let dir = tmp.path().to_path_buf();
    System::new().block_on(async move {
        let (listener, shared, _) = Listener::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Duration::from_secs(5),
            Encryption::default(),
            torrent_actors::engine::utp::UtpMode::Off,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .await
        .expect("the shared listener binds");
        // Room for the two peers that are let in, not for a third.
        let budget = ConnectionBudget::new(2);
        let (alpha, beta) = (torrent("alpha.bin"), torrent("beta.bin"));
        let (alpha_hash, beta_hash) = (alpha.info_hash, beta.info_hash);
        let alpha_id = PeerId(*b"-TA0001-alphaalphaal");
        let beta_id = PeerId(*b"-TA0001-betabetabeta");
        let a = start_torrent(alpha, alpha_id, shared, &budget, &dir).await;
        let b = start_torrent(beta, beta_id, shared, &budget, &dir).await;
        for (info_hash, coordinator) in [(alpha_hash, &a), (beta_hash, &b)] {
            listener
                .send(Route {
                    info_hash,
                    to: coordinator.clone().recipient(),
                    metrics: std::sync::Arc::new(ActorMetrics::detached(ActorKind::Coordinator)),
                })
                .await
                .expect("the listener answers");
        }

        // Each torrent answers the peer that named it, with its own peer id.
        let (to_alpha, answer) =
            handshake_with(shared, alpha_hash, PeerId(*b"-qB4630-clientalpha1")).await;
        let answer = answer.expect("alpha answers its peer");
        assert_eq!((answer.info_hash, answer.peer_id), (alpha_hash, alpha_id));
        let (to_beta, answer) =
            handshake_with(shared, beta_hash, PeerId(*b"-TR2940-clientbeta01")).await;
        let answer = answer.expect("beta answers its peer");
        assert_eq!((answer.info_hash, answer.peer_id), (beta_hash, beta_id));

        // And each has exactly its own peer.
        let alpha_peers = peers_until(&a, |p| !p.is_empty()).await;
        assert_eq!(alpha_peers.len(), 1, "{alpha_peers:?}");
        assert_eq!(alpha_peers[0].addr, to_alpha.local_addr().unwrap());
        assert_eq!(alpha_peers[0].client, "qBittorrent 4.6.3");
        assert!(!alpha_peers[0].outgoing);
        assert!(alpha_peers[0].peer_choking && alpha_peers[0].am_choking);
        let beta_peers = peers_until(&b, |p| !p.is_empty()).await;
        assert_eq!(beta_peers.len(), 1, "{beta_peers:?}");
        assert_eq!(beta_peers[0].addr, to_beta.local_addr().unwrap());
        assert_eq!(beta_peers[0].client, "Transmission 2.94");
        assert_eq!(budget.in_use(), 2);

        // A torrent nobody routed: closed without a byte.
        let (_, answer) = handshake_with(
            shared,
            InfoHash([0x5a; 20]),
            PeerId(*b"-qB4630-stranger0001"),
        )
        .await;
        assert!(answer.is_none(), "a stranger was answered: {answer:?}");

        // The budget is full: a second peer of alpha is refused, unanswered.
        let (_, answer) =
            handshake_with(shared, alpha_hash, PeerId(*b"-qB4630-clientalpha2")).await;
        assert!(answer.is_none(), "a peer past the budget was answered");

        // A peer leaving gives its slot back, and the slot takes the next peer.
        drop(to_beta);
        peers_until(&b, |p| p.is_empty()).await;
        assert_eq!(budget.in_use(), 1);
        let (_to_alpha2, answer) =
            handshake_with(shared, alpha_hash, PeerId(*b"-qB4630-clientalpha3")).await;
        assert_eq!(answer.map(|h| h.peer_id), Some(alpha_id));
        peers_until(&a, |p| p.len() == 2).await;

        // Unrouted, beta's peers are closed at the door.
        listener
            .send(Unroute {
                info_hash: beta_hash,
            })
            .await
            .expect("the listener answers");
        let (_, answer) = handshake_with(shared, beta_hash, PeerId(*b"-TR2940-clientbeta02")).await;
        assert!(answer.is_none(), "an unrouted torrent's peer was answered");

        // The other pages answer too: two pieces, none verified, one file.
        let map = a.send(GetPieceMap).await.expect("the coordinator answers");
        assert_eq!((map.pieces, map.have.as_slice()), (2, &[0u8][..]));
        let files = a
            .send(GetFileProgress)
            .await
            .expect("the coordinator answers");
        assert_eq!(files.len(), 1);
        assert_eq!(
            (
                files[0].path.as_str(),
                files[0].length,
                files[0].verified_bytes
            ),
            ("alpha.bin", 20_000, 0)
        );
        assert!(files[0].selected);

        drop(to_alpha);
        for coordinator in [a, b] {
            tokio::time::timeout(WAIT, coordinator.send(Shutdown))
                .await
                .expect("a stop within the limit")
                .expect("a clean stop");
        }
    });
}

/// Connects to `to`, sends a handshake for `info_hash` and returns the stream if the
/// daemon answered, `None` if it closed the connection unanswered. Bounded in time.
async fn knock(to: SocketAddr, info_hash: InfoHash, n: usize) -> Option<TcpStream> {
    let mut id = *b"-qB4630-000000000000";
    id[8..].copy_from_slice(format!("{n:012}").as_bytes());
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(to))
        .await
        .expect("connected within the limit")
        .expect("the listener accepts");
    let hello = Handshake::new(Reserved::none(), info_hash, PeerId(id)).encode();
    if stream.write_all(&hello).await.is_err() {
        return None;
    }
    let mut buf = [0u8; HANDSHAKE_LEN];
    // Longer than the Listener's hand-off wait, so a hand-off that timed out shows as a
    // close, not as a test timeout.
    let read = tokio::time::timeout(Duration::from_secs(40), stream.read_exact(&mut buf))
        .await
        .expect("an answer or a close within the limit");
    read.ok()?;
    let answer = Handshake::parse(&buf).expect("a well-formed handshake");
    assert_eq!(answer.info_hash, info_hash);
    Some(stream)
}

/// `count` peers knocking, at most `at_once` in their handshake at a time (under the
/// Listener's cap of 32, so that cap turns none away). Returns the streams let in and
/// how many were closed unanswered.
fn knock_many(
    rt: &tokio::runtime::Runtime,
    to: SocketAddr,
    info_hash: InfoHash,
    first: usize,
    count: usize,
    at_once: usize,
) -> (Vec<TcpStream>, usize) {
    rt.block_on(async {
        let answers: Vec<Option<TcpStream>> = futures::stream::iter(first..first + count)
            .map(|n| knock(to, info_hash, n))
            .buffer_unordered(at_once)
            .collect()
            .await;
        let refused = answers.iter().filter(|a| a.is_none()).count();
        (answers.into_iter().flatten().collect(), refused)
    })
}

/// The Coordinator's backpressure count (connections it refused, among others).
fn coordinator_backpressure(daemon: &crate::support::Daemon, id: &str) -> u64 {
    let metrics = daemon.get_json(&format!("/api/torrents/{id}/metrics"));
    metrics["actors"]
        .as_array()
        .expect("an actor list")
        .iter()
        .find(|a| a["actor"] == "Coordinator")
        .and_then(|a| a["backpressure"].as_u64())
        .unwrap_or(0)
}

/// Issue 16, item 4: the shared Listener handed connections on with `try_send`, which
/// refuses whenever the Coordinator's 16-slot mailbox is momentarily full, so a burst
/// of peers at a busy torrent lost connections that no cap refused. Here `serve` runs
/// with every Coordinator handler slowed (the `slow-coordinator` fault), and 200 peers
/// knock, 24 in their handshake at a time: all must be let in (the caps leave room for
/// 240). Then 60 more, one at a time: exactly the 40 the incoming share leaves room for
/// are let in, the rest refused by that cap, logged with its reason and counted.
#[test]
fn a_burst_of_peers_at_a_busy_torrent_is_refused_only_by_the_caps() {
    use crate::support::{make_torrent, read_metainfo, Daemon, DaemonOpts, Payload};
    use torrent_actors::fault::FAULT_ENV;

    let tmp = tempfile::tempdir().expect("temp folder");
    let payload = Payload::single(&tmp.path().join("seed"), "burst.bin", 1 << 20);
    let torrent = tmp.path().join("burst.torrent");
    make_torrent(&payload.root(), &torrent, 15, &[]);
    let info_hash = read_metainfo(&torrent).info_hash;
    let id = info_hash.to_hex();
    let daemon = Daemon::start(
        &tmp.path().join("dl"),
        &tmp.path().join("state"),
        &DaemonOpts {
            // 300 peers: 240 of them may dial us.
            args: ["--max-peers", "300", "--max-connections", "400"]
                .map(String::from)
                .to_vec(),
            env: vec![(FAULT_ENV.to_string(), "slow-coordinator".to_string())],
            ..DaemonOpts::default()
        },
    );
    let bytes = std::fs::read(&torrent).expect("reading the torrent");
    let added = daemon.post(
        "/api/torrents",
        &serde_json::json!({ "torrent_base64": data_encoding::BASE64.encode(&bytes) }),
    );
    assert_eq!(added.status, 201, "{added:?}");
    // Before its start-up check is done a torrent takes no peers.
    let deadline = std::time::Instant::now() + WAIT;
    while daemon.get_json(&format!("/api/torrents/{id}"))["state"] != "downloading" {
        assert!(
            std::time::Instant::now() < deadline,
            "the torrent is not downloading within {WAIT:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let to = SocketAddr::from(([127, 0, 0, 1], daemon.peer_port));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");

    let (mut kept, refused) = knock_many(&rt, to, info_hash, 0, 200, 24);
    let log = daemon.log();
    assert_eq!(
        (kept.len(), refused),
        (200, 0),
        "peers refused with room under every cap; daemon log:\n{log}"
    );
    assert_eq!(coordinator_backpressure(&daemon, &id), 0);

    // Wait for the 200 to be peers (a handshake answered is a Peer starting).
    let deadline = std::time::Instant::now() + WAIT;
    let connected = loop {
        let peers = daemon.get_json(&format!("/api/torrents/{id}/peers"));
        let n = peers.as_array().map_or(0, Vec::len);
        if n >= 200 || std::time::Instant::now() >= deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(connected, 200, "the peers let in are not all connected");

    // Past the incoming share: one at a time, so each sees the last one counted.
    let (more, refused) = knock_many(&rt, to, info_hash, 200, 60, 1);
    let log = daemon.log();
    assert_eq!(
        (more.len(), refused),
        (40, 20),
        "the incoming share (240 of 300) did not hold exactly; daemon log:\n{log}"
    );
    kept.extend(more);
    assert!(
        log.contains("connection limit reached, refusing incoming connections"),
        "the cap's refusals were not logged:\n{log}"
    );
    assert_eq!(coordinator_backpressure(&daemon, &id), 20);
    // Nothing was turned away by the Listener itself: no mailbox, no time-out, no cap of
    // its own (it logs every reason it has on one line).
    assert!(
        !log.contains("incoming connections turned away"),
        "the Listener turned peers away:\n{log}"
    );
    drop(kept);
}

/// Waits (within the limit) for `metrics` to have counted `n` refusals, and checks it
/// counted no more. The count follows the close the peer sees, by a little.
async fn backpressure_reaches(metrics: &ActorMetrics, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.snapshot().backpressure < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.snapshot().backpressure, n);
}

/// A stand-in for a Coordinator that takes no message for its first `frozen_for` (its
/// mailbox fills up meanwhile) and then counts the incoming peers it is handed, and
/// which of them were closed already.
struct Stuck {
    frozen_for: Duration,
    taken: usize,
    closed: usize,
}

impl Stuck {
    fn new(frozen_for: Duration) -> Stuck {
        Stuck {
            frozen_for,
            taken: 0,
            closed: 0,
        }
    }
}

impl Actor for Stuck {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.wait(actix::clock::sleep(self.frozen_for).into_actor(self));
    }
}

impl Handler<torrent_actors::engine::messages::IncomingPeer> for Stuck {
    type Result = ();
    fn handle(
        &mut self,
        peer: torrent_actors::engine::messages::IncomingPeer,
        _: &mut Self::Context,
    ) {
        self.taken += 1;
        // A socket shut down for writing refuses the write (rather than would-block).
        if matches!(peer.stream.tcp().expect("a TCP peer").try_write(b"x"), Err(e) if e.kind() != std::io::ErrorKind::WouldBlock)
        {
            self.closed += 1;
        }
    }
}

/// Asks a [`Stuck`] how many peers it took, and how many of those were closed.
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
struct Taken;

impl Handler<Taken> for Stuck {
    type Result = MessageResult<Taken>;
    fn handle(&mut self, _: Taken, _: &mut Self::Context) -> Self::Result {
        MessageResult((self.taken, self.closed))
    }
}

/// Stops a [`Stuck`].
#[derive(Message)]
#[rtype(result = "()")]
struct StopNow;

impl Handler<StopNow> for Stuck {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A hand-off its Coordinator does not take within the Listener's limit is refused: the
/// peer is closed unanswered and the torrent's metrics count it. The Coordinator, once
/// it wakes, meets those sockets closed. While it holds the most such stalled hand-offs
/// the Listener allows, more peers of the torrent are closed at once, and counted; once
/// it caught up, peers reach it again.
#[test]
fn a_hand_off_not_taken_in_time_is_refused_counted_and_bounded() {
    use torrent_actors::engine::listener::{HAND_OFF_TIMEOUT, MAX_STALLED_HAND_OFFS};
    System::new().block_on(async move {
        let (listener, shared, _) = Listener::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Duration::from_secs(5),
            Encryption::default(),
            torrent_actors::engine::utp::UtpMode::Off,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .await
        .expect("the shared listener binds");
        let stuck = Stuck::new(HAND_OFF_TIMEOUT + Duration::from_secs(6)).start();
        let metrics = std::sync::Arc::new(ActorMetrics::detached(ActorKind::Coordinator));
        let info_hash = InfoHash([0x42; 20]);
        listener
            .send(Route {
                info_hash,
                to: stuck.clone().recipient(),
                metrics: metrics.clone(),
            })
            .await
            .expect("the listener answers");

        // As many peers as may stall: each is closed after the hand-off limit.
        let peer_id = |n: usize| {
            let mut id = *b"-qB4630-000000000000";
            id[8..].copy_from_slice(format!("{n:012}").as_bytes());
            PeerId(id)
        };
        let knocks: Vec<_> = (0..MAX_STALLED_HAND_OFFS)
            .map(|n| handshake_with(shared, info_hash, peer_id(n)))
            .collect();
        let answers = futures::future::join_all(knocks).await;
        let kept: Vec<TcpStream> = answers
            .into_iter()
            .map(|(stream, answer)| {
                assert!(answer.is_none(), "a peer nobody took was answered");
                stream
            })
            .collect();
        let stalled = MAX_STALLED_HAND_OFFS as u64;
        backpressure_reaches(&metrics, stalled).await;

        // The Coordinator still sleeps on them: the next peer is closed at once.
        let (_, answer) = handshake_with(shared, info_hash, peer_id(100)).await;
        assert!(answer.is_none(), "a peer of a stuck torrent was answered");
        backpressure_reaches(&metrics, stalled + 1).await;

        // Awake, the stand-in gets the stalled ones, closed; then peers reach it again.
        let (taken, closed) = tokio::time::timeout(WAIT, stuck.send(Taken))
            .await
            .expect("the stand-in wakes within the limit")
            .expect("the stand-in answers");
        assert_eq!(
            (taken, closed),
            (MAX_STALLED_HAND_OFFS, MAX_STALLED_HAND_OFFS)
        );
        drop(kept);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, answer) = handshake_with(shared, info_hash, peer_id(101)).await;
        assert!(answer.is_none(), "the stand-in answers no one");
        let taken = stuck.send(Taken).await.expect("the stand-in answers");
        assert_eq!(
            taken.0,
            MAX_STALLED_HAND_OFFS + 1,
            "the peer did not reach it"
        );
        assert_eq!(metrics.snapshot().backpressure, stalled + 1);
    });
}

/// A torrent whose Coordinator stopped without an `Unroute` costs the peer (closed,
/// counted in its metrics) and its route: the next peer meets an unknown torrent.
#[test]
fn a_stopped_torrent_loses_its_route_and_its_peers_are_closed() {
    System::new().block_on(async move {
        let (listener, shared, _) = Listener::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Duration::from_secs(5),
            Encryption::default(),
            torrent_actors::engine::utp::UtpMode::Off,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .await
        .expect("the shared listener binds");
        let gone = Stuck::new(Duration::ZERO).start();
        let metrics = std::sync::Arc::new(ActorMetrics::detached(ActorKind::Coordinator));
        let info_hash = InfoHash([0x43; 20]);
        listener
            .send(Route {
                info_hash,
                to: gone.clone().recipient(),
                metrics: metrics.clone(),
            })
            .await
            .expect("the listener answers");
        gone.send(StopNow).await.expect("the stand-in stops");
        drop(gone);
        // Let it finish stopping.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let (_, answer) = handshake_with(shared, info_hash, PeerId(*b"-qB4630-latecomer001")).await;
        assert!(answer.is_none());
        backpressure_reaches(&metrics, 1).await;
        let (_, answer) = handshake_with(shared, info_hash, PeerId(*b"-qB4630-latecomer002")).await;
        assert!(answer.is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            metrics.snapshot().backpressure,
            1,
            "the route of a stopped torrent was kept"
        );
    });
}
