//! The Dht actor from outside, on 127.0.0.1 only: libtorrent seeders running their DHT
//! on loopback are found through `DhtLookup`, our `announce_peer` is found by another
//! node, the routing table survives a restart through its file, a node from a peer's
//! `port` message bootstraps an empty node, and an empty bootstrap list gives an empty
//! lookup that ends.
//!
//! Nothing here may send a packet beyond 127.0.0.0/8: every Dht is bound to 127.0.0.1
//! (and drops non-loopback nodes), every bootstrap list is loopback literals (no name is
//! resolved), and the libtorrent seeders refuse non-loopback DHT nodes. Every wait is
//! bounded; no test asserts how fast anything is.

use std::collections::HashSet;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::StreamExt;
use tempfile::TempDir;
use torrent_actors::engine::dht::{
    Bootstrap, BootstrapSource, Dht, DhtConfig, DhtStatus, DhtStop, GetDhtStatus, BOOTSTRAP_ENV,
};
use torrent_actors::engine::messages::{DhtLookup, DhtNodeSeen, PeerSource, PeersFound};
use torrent_actors::InfoHash;

use crate::support::{free_port, make_torrent, LtSeeder, Payload, SeedOpts};

/// The longest a whole search (lookups repeated until the expected peers show up) may
/// take: libtorrent announces every two seconds and nodes answer in milliseconds on
/// loopback, so this only bounds a hang.
const SEARCH_LIMIT: Duration = Duration::from_secs(60);

/// The longest one lookup runs in these tests.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node may take to get a first node into its routing table.
const BOOTSTRAP_LIMIT: Duration = Duration::from_secs(30);

/// The longest one question to an actor may take.
const WAIT: Duration = Duration::from_secs(10);

/// Records every `PeersFound` the Dht sends.
struct Collector {
    found: UnboundedSender<PeersFound>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<PeersFound> for Collector {
    type Result = ();
    fn handle(&mut self, msg: PeersFound, _: &mut Self::Context) {
        let _ = self.found.unbounded_send(msg);
    }
}

/// A collector and the stream of what it receives.
fn collector() -> (Recipient<PeersFound>, UnboundedReceiver<PeersFound>) {
    let (tx, rx) = unbounded();
    (Collector { found: tx }.start().recipient(), rx)
}

/// Runs `test` in a fresh actix System, as the engine runs.
pub(crate) fn in_system(test: impl Future<Output = ()>) {
    actix_rt::System::new().block_on(test);
}

/// The engine's log, on stderr when `TEST_LOG` is set, else discarded.
fn test_log() -> slog::Logger {
    use slog::Drain;
    if std::env::var_os("TEST_LOG").is_none() {
        return slog::Logger::root(slog::Discard, slog::o!());
    }
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    slog::Logger::root(drain, slog::o!())
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A Dht configuration on 127.0.0.1 with a port the system picks, bootstrapped from
/// `nodes` (loopback literals).
pub(crate) fn config(nodes: &[SocketAddr]) -> DhtConfig {
    for node in nodes {
        assert!(node.ip().is_loopback(), "{node} is not loopback");
    }
    let texts: Vec<String> = nodes.iter().map(SocketAddr::to_string).collect();
    let bootstrap = Bootstrap::from_nodes(BootstrapSource::CommandLine, &texts)
        .expect("loopback bootstrap nodes");
    let mut config = DhtConfig::new(Ipv4Addr::LOCALHOST, 0, bootstrap);
    config.lookup_timeout = LOOKUP_TIMEOUT;
    config
}

pub(crate) fn start(config: DhtConfig) -> Addr<Dht> {
    Dht::start(config, test_log()).expect("a dht on 127.0.0.1")
}

async fn status(dht: &Addr<Dht>) -> DhtStatus {
    tokio::time::timeout(WAIT, dht.send(GetDhtStatus))
        .await
        .expect("the dht answers its status in time")
        .expect("the dht is running")
}

/// The node's UDP address.
async fn node_addr(dht: &Addr<Dht>) -> SocketAddr {
    loopback(status(dht).await.local_port)
}

/// Waits until the node has a routing table entry and is running; returns its status.
async fn until_bootstrapped(dht: &Addr<Dht>, what: &str) -> DhtStatus {
    let deadline = Instant::now() + BOOTSTRAP_LIMIT;
    loop {
        let status = status(dht).await;
        if status.running && status.bootstrapped {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} had no routing table entry after {BOOTSTRAP_LIMIT:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Looks up `info_hash` again and again (announcing `announce_port` each time, if
/// given) until every address of `want` was found; gives up after [`SEARCH_LIMIT`].
/// Returns everything found, as an error when something was missing.
pub(crate) async fn search(
    dht: &Addr<Dht>,
    info_hash: InfoHash,
    announce_port: Option<u16>,
    want: &[SocketAddr],
) -> Result<HashSet<SocketAddr>, HashSet<SocketAddr>> {
    let (reply, mut found) = collector();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + SEARCH_LIMIT;
    loop {
        dht.do_send(DhtLookup {
            info_hash,
            announce_port,
            reply: reply.clone(),
        });
        // Read what comes until this lookup has ended, then look again.
        let round_end = Instant::now() + LOOKUP_TIMEOUT + Duration::from_secs(2);
        loop {
            if want.iter().all(|w| seen.contains(w)) {
                return Ok(seen);
            }
            match tokio::time::timeout(Duration::from_millis(500), found.next()).await {
                Ok(Some(batch)) => {
                    assert_eq!(batch.source, PeerSource::Dht);
                    assert!(!batch.peers.is_empty(), "an empty PeersFound was sent");
                    seen.extend(batch.peers);
                }
                Ok(None) => panic!("the collector went away"),
                Err(_) => {
                    if status(dht).await.lookups == 0 || Instant::now() > round_end {
                        break;
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(seen);
        }
        // Gives the seeders time to announce, and keeps our requests well under
        // libtorrent's rate limit for one node.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs one lookup (announcing `announce_port`, if given) to its end and returns the
/// peers it found.
async fn lookup_once(
    dht: &Addr<Dht>,
    info_hash: InfoHash,
    announce_port: Option<u16>,
) -> HashSet<SocketAddr> {
    let (reply, mut found) = collector();
    dht.do_send(DhtLookup {
        info_hash,
        announce_port,
        reply,
    });
    let deadline = Instant::now() + LOOKUP_TIMEOUT + WAIT;
    let mut seen = HashSet::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), found.next()).await {
            Ok(Some(batch)) => {
                assert_eq!(batch.source, PeerSource::Dht);
                seen.extend(batch.peers);
            }
            // The Dht dropped the reply: the lookup is over and all it found arrived.
            Ok(None) => return seen,
            Err(_) => {
                if status(dht).await.lookups == 0 {
                    return seen;
                }
                assert!(Instant::now() < deadline, "the lookup did not end");
            }
        }
    }
}

/// A small torrent without trackers (peers come from the DHT alone) and its data.
pub(crate) struct Swarm {
    _dir: TempDir,
    torrent: std::path::PathBuf,
    data: std::path::PathBuf,
    info_hash: InfoHash,
}

pub(crate) fn swarm() -> Swarm {
    let dir = tempfile::tempdir().expect("temp folder");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data folder");
    let payload = Payload::single(&data, "dht-payload.bin", 64 * 1024);
    let torrent = dir.path().join("dht.torrent");
    let info_hash = make_torrent(&payload.root(), &torrent, 15, &[]);
    Swarm {
        _dir: dir,
        torrent,
        data,
        info_hash,
    }
}

/// A libtorrent seeder with its DHT on `port`, bootstrapped from `nodes`.
pub(crate) fn dht_seeder(swarm: &Swarm, port: u16, nodes: &[SocketAddr]) -> LtSeeder {
    LtSeeder::start(
        &swarm.torrent,
        &swarm.data,
        SeedOpts {
            port: Some(port),
            seed_mode: true,
            dht_bootstrap: Some(nodes.to_vec()),
            ..SeedOpts::default()
        },
    )
}

fn read_saved(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("the routing table file is a json list of strings")
}

#[test]
fn lookup_finds_libtorrent_seeders_on_loopback() {
    let swarm = swarm();
    let (p1, p2) = (free_port(), free_port());
    in_system(async move {
        // The seeders bootstrap from each other only: mainline cannot answer
        // libtorrent's requests (see `mainline_cannot_answer_libtorrent`), so a
        // libtorrent announce that waited for our node would stall until its timeout.
        // Our node asks them; they answer.
        let dht = start(config(&[loopback(p1), loopback(p2)]));
        let s1 = dht_seeder(&swarm, p1, &[loopback(p2)]);
        let s2 = dht_seeder(&swarm, p2, &[loopback(p1)]);
        let want = [s1.addr(), s2.addr()];
        let found = match search(&dht, swarm.info_hash, None, &want).await {
            Ok(found) => found,
            Err(found) => panic!(
                "after {SEARCH_LIMIT:?} the lookups found {found:?}, not all of {want:?}\n\
                 our node: {:?}\nseeder 1:\n{}\nseeder 2:\n{}",
                status(&dht).await,
                s1.log(),
                s2.log()
            ),
        };
        assert!(found.iter().all(|a| a.ip().is_loopback()), "{found:?}");
        dht.send(DhtStop).await.expect("the dht stops");
        drop((s1, s2));
    });
}

#[test]
fn our_announce_is_found_by_another_node() {
    let swarm = swarm();
    let hub_port = free_port();
    let announced = free_port();
    in_system(async move {
        // A libtorrent node stores the announce; a second Dht of ours finds it there.
        let hub = dht_seeder(&swarm, hub_port, &[]);
        let announcer = start(config(&[hub.addr()]));
        let finder = start(config(&[hub.addr()]));
        until_bootstrapped(&announcer, "the announcing node").await;
        let want = loopback(announced);
        let deadline = Instant::now() + SEARCH_LIMIT;
        loop {
            lookup_once(&announcer, swarm.info_hash, Some(announced)).await;
            let found = lookup_once(&finder, swarm.info_hash, None).await;
            if found.contains(&want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after {SEARCH_LIMIT:?} the second node found {found:?}, not {want}"
            );
        }
        drop(hub);
    });
}

#[test]
fn routing_table_is_saved_on_stop_and_reloaded_on_start() {
    let dir = tempfile::tempdir().expect("temp folder");
    let state = dir.path().join("dht-nodes.json");
    in_system(async move {
        // A node without bootstrap nodes adds whoever asks it `find_node`: the seed of a
        // new network.
        let root = start(config(&[]));
        let root_addr = node_addr(&root).await;
        let mut first = config(&[root_addr]);
        first.state_file = Some(state.clone());
        let first = start(first);
        until_bootstrapped(&first, "the first node").await;
        tokio::time::timeout(WAIT, first.send(DhtStop))
            .await
            .expect("DhtStop answered in time")
            .expect("the dht was running");
        let saved = read_saved(&state);
        assert!(saved.contains(&root_addr.to_string()), "{saved:?}");

        // No configured node at all: only the file can bootstrap the second run.
        let empty = Bootstrap::resolve(None, Some("")).expect("an empty list");
        let mut second = DhtConfig::new(Ipv4Addr::LOCALHOST, 0, empty);
        second.state_file = Some(state.clone());
        let second = start(second);
        let status = until_bootstrapped(&second, "the node restarted from its file").await;
        let root_v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, root_addr.port());
        assert!(status.bootstrap_nodes.contains(&root_v4), "{status:?}");
        assert_eq!(status.bootstrap_source, BootstrapSource::Environment);
    });
}

#[test]
fn malformed_routing_table_file_is_ignored() {
    let dir = tempfile::tempdir().expect("temp folder");
    let state = dir.path().join("dht-nodes.json");
    std::fs::write(&state, b"{\"not\": \"a list\"}").expect("writing the file");
    in_system(async move {
        let mut config = config(&[]);
        config.state_file = Some(state);
        let dht = start(config);
        let deadline = Instant::now() + WAIT;
        let status = loop {
            let status = status(&dht).await;
            if status.running {
                break status;
            }
            assert!(Instant::now() < deadline, "the node was never built");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.bootstrap_nodes.is_empty(), "{status:?}");
    });
}

#[test]
fn empty_bootstrap_gives_an_empty_lookup_that_ends() {
    in_system(async {
        let empty = Bootstrap::resolve(None, Some("")).expect("an empty list");
        assert!(empty.nodes().is_empty());
        let mut config = DhtConfig::new(Ipv4Addr::LOCALHOST, 0, empty);
        config.lookup_timeout = LOOKUP_TIMEOUT;
        let dht = start(config);
        let (reply, mut found) = collector();
        dht.do_send(DhtLookup {
            info_hash: InfoHash([7; 20]),
            announce_port: Some(6881),
            reply,
        });
        let deadline = Instant::now() + LOOKUP_TIMEOUT + WAIT;
        loop {
            let status = status(&dht).await;
            if status.running && status.lookups == 0 {
                assert_eq!(status.nodes, 0);
                assert!(!status.bootstrapped);
                assert!(status.bootstrap_nodes.is_empty());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the lookup had not ended: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            found.try_recv().is_err(),
            "peers were found with no node to ask"
        );
    });
}

#[test]
fn node_from_a_peer_bootstraps_an_empty_node() {
    in_system(async {
        let root = start(config(&[]));
        let root_addr = node_addr(&root).await;
        let mut lonely = config(&[]);
        lonely.rebuild_cooldown = Duration::ZERO;
        let lonely = start(lonely);
        // Built once, with nothing to bootstrap from.
        let deadline = Instant::now() + WAIT;
        while !status(&lonely).await.running {
            assert!(Instant::now() < deadline, "the node was never built");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lonely.do_send(DhtNodeSeen { addr: root_addr });
        let status = until_bootstrapped(&lonely, "the node told of a peer's node").await;
        assert_eq!(status.rebuilds, 1, "{status:?}");
        let root_v4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, root_addr.port());
        assert_eq!(status.bootstrap_nodes, [root_v4]);
    });
}

#[test]
fn loopback_node_drops_bootstrap_nodes_beyond_loopback() {
    in_system(async {
        // 192.0.2.1 is TEST-NET-1; a node bound to 127.0.0.1 could not reach it anyway,
        // and must not even try.
        let bootstrap = Bootstrap::from_nodes(
            BootstrapSource::CommandLine,
            &["192.0.2.1:6881", "127.0.0.1:9"],
        )
        .expect("a valid list");
        assert!(!bootstrap.is_loopback_only());
        let dht = start(DhtConfig::new(Ipv4Addr::LOCALHOST, 0, bootstrap));
        let deadline = Instant::now() + WAIT;
        let status = loop {
            let status = status(&dht).await;
            if status.running {
                break status;
            }
            assert!(Instant::now() < deadline, "the node was never built");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            status.bootstrap_nodes,
            [SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9)]
        );
    });
}

/// The test environment must turn the public routers off, as `.ci/run` does with
/// `export TORRENT_ACTORS_DHT_BOOTSTRAP=`; a Dht built from it uses no public name.
#[test]
fn test_environment_keeps_the_dht_off_the_public_routers() {
    let value = std::env::var(BOOTSTRAP_ENV).unwrap_or_else(|_| {
        panic!(
            "{BOOTSTRAP_ENV} is not set: export it empty (or to loopback nodes) before \
             running the tests, as .ci/run does, so no test reaches the public DHT routers"
        )
    });
    let bootstrap = Bootstrap::from_cli_and_env(None).expect("a valid variable");
    assert_eq!(bootstrap.source(), BootstrapSource::Environment);
    assert!(
        bootstrap.is_loopback_only(),
        "{BOOTSTRAP_ENV}={value:?} names nodes beyond loopback"
    );
    in_system(async move {
        let dht = start(DhtConfig::new(Ipv4Addr::LOCALHOST, 0, bootstrap));
        let status = status(&dht).await;
        assert_eq!(status.bootstrap_source, BootstrapSource::Environment);
        assert!(status.bootstrap_nodes.iter().all(|n| n.ip().is_loopback()));
    });
}

/// mainline 8 reads a K-RPC transaction id as exactly four bytes and drops any other
/// message unread; libtorrent sends two-byte ids. So libtorrent nodes get no answer
/// from ours (our queries to them work: they echo our four-byte ids). This pins the
/// quirk the seeders' bootstrap lists work around: a ping with a two-byte id sent first
/// must not be answered before a ping with a four-byte id sent after it.
#[test]
fn mainline_cannot_answer_libtorrent() {
    in_system(async {
        let dht = start(config(&[]));
        let deadline = Instant::now() + WAIT;
        while !status(&dht).await.running {
            assert!(Instant::now() < deadline, "the node was never built");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let node = node_addr(&dht).await;
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("a loopback udp socket");
        let ping = |tid: &str| {
            format!(
                "d1:ad2:id20:{}e1:q4:ping1:t{}:{}1:y1:qe",
                "L".repeat(20),
                tid.len(),
                tid
            )
        };
        socket
            .send_to(ping("lt").as_bytes(), node)
            .await
            .expect("sending the two-byte ping");
        socket
            .send_to(ping("RS01").as_bytes(), node)
            .await
            .expect("sending the four-byte ping");
        let mut buf = [0u8; 1500];
        let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("an answer to the four-byte ping")
            .expect("reading the answer");
        let reply = String::from_utf8_lossy(&buf[..len]);
        assert!(
            reply.contains("1:t4:RS01"),
            "the first answer was not to the four-byte ping: mainline now answers \
             two-byte transaction ids, so libtorrent can use our node and the seeders in \
             lookup_finds_libtorrent_seeders_on_loopback may bootstrap from it: {reply}"
        );
    });
}
