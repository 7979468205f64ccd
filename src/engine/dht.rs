//! The Dht actor: finds peers through the mainline DHT (BEP 5) and announces us there.
//!
//! One Dht serves every torrent of a process. It owns the DHT node (a `mainline` node:
//! its UDP socket, routing table and K-RPC state live on mainline's own thread), the
//! bootstrap list, the nodes peers told us about, and the routing-table file kept between
//! runs. Torrents reach it through [`DhtLinks`]: a [`DhtLookup`] runs `get_peers` and
//! forwards every new batch of peers to the asker as [`PeersFound`] with
//! [`PeerSource::Dht`], then announces our port when asked; a [`DhtNodeSeen`] hands it a
//! node from a peer's `port` message.
//!
//! What it must not do: block its arbiter (mainline's calls are made through its async
//! API, which talks to mainline's thread over flume channels and so runs on any
//! executor; name resolution, the node's build and the routing-table file go to tokio's
//! blocking pool), connect to peers, or decide when a torrent looks up (the Coordinator
//! does).
//!
//! Choices worth knowing:
//! - mainline fixes its bootstrap list when a node is built and has no call to add a
//!   node to the routing table later: it adds a node only when that node answers one of
//!   our queries, or, with an empty bootstrap list, when it sends us `find_node`. So
//!   nodes that arrive later (resolved router names, nodes from peers) are used by
//!   building a new node on the same UDP port with them in its bootstrap list. The node
//!   is rebuilt only while its routing table is empty, when it has nothing to lose, and
//!   at most once per [`DhtConfig::rebuild_cooldown`].
//! - Bootstrap names are resolved once, when the actor starts, never on the arbiter.
//!   Until the node is built, lookups wait in a bounded queue.
//! - mainline visits every bootstrap node in each query while its routing table holds
//!   fewer nodes than the bootstrap list, so the list is kept short: at most
//!   [`MAX_SAVED_NODES`] nodes from the last run and [`MAX_SEEN_NODES`] from peers.
//! - mainline 8 reads a K-RPC transaction id as exactly four bytes and drops other
//!   messages unread; libtorrent (most of the DHT) sends two-byte ids. Our node's
//!   queries to libtorrent nodes work (they echo our ids), so lookups and announces do,
//!   but libtorrent nodes get no answer from ours: server mode only serves clients
//!   with four-byte ids. The test `mainline_cannot_answer_libtorrent` pins this.
//! - mainline's `extra_bootstrap()` starts from an empty list, not from its defaults,
//!   and a builder given no list at all resolves mainline's own public routers by name
//!   inside `build()`; so the list is always set whole, with `no_bootstrap()` when empty.
//! - A node bound to loopback can reach nothing else, so it drops every non-loopback
//!   bootstrap node, saved node and peer-given node instead of sending into the void.
//!   Tests rely on this: a node bound to 127.0.0.1 never sends a packet elsewhere.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use mainline::async_dht::AsyncDht;
use mainline::Id;
use slog::{debug, info, o, warn, Logger};

use super::messages::{DhtLinks, DhtLookup, DhtNodeSeen, PeerSource, PeersFound};
use crate::InfoHash;

/// The environment variable that replaces the public bootstrap routers: a
/// comma-separated `HOST:PORT` list, and set but empty means no bootstrap nodes at all
/// (what tests and CI use so nothing leaves the machine). `--dht-bootstrap` wins over it.
pub const BOOTSTRAP_ENV: &str = "TORRENT_ACTORS_DHT_BOOTSTRAP";

/// The public routers used when neither the command line nor [`BOOTSTRAP_ENV`] names
/// any.
pub const DEFAULT_BOOTSTRAP: [&str; 4] = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// The largest routing-table file we read; ours are a few KiB, so a larger one is not
/// ours and is ignored.
pub const MAX_STATE_BYTES: u64 = 64 * 1024;

/// How many nodes of the last run join the bootstrap list (and how many are saved).
pub const MAX_SAVED_NODES: usize = 16;

/// How many nodes from peers' `port` messages are remembered, newest kept.
pub const MAX_SEEN_NODES: usize = 16;

/// How many peers one lookup forwards at most; a hostile node could name many more.
pub const MAX_PEERS_PER_LOOKUP: usize = 1000;

/// How many lookups may wait for the node to be built; older ones are dropped beyond it.
const MAX_WAITING_LOOKUPS: usize = 256;

/// How long one bootstrap name may take to resolve.
const RESOLVE_LIMIT: Duration = Duration::from_secs(10);

/// How long a rebuild waits for the old node's thread to let go of the UDP port.
const REBIND_LIMIT: Duration = Duration::from_secs(5);

/// How long the `announce_peer` after a lookup may take.
const ANNOUNCE_LIMIT: Duration = Duration::from_secs(30);

/// How long a question to mainline's thread (node count, routing table) may take; it
/// answers within one turn of its loop, about 50 ms.
const QUERY_LIMIT: Duration = Duration::from_secs(5);

/// How long to wait before building the node again after a build failed.
const BUILD_RETRY: Duration = Duration::from_secs(10);

/// Why the DHT could not be configured or started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    /// A bootstrap entry is not `HOST:PORT` with a port from 1 to 65535.
    #[error("bad dht bootstrap node {node:?} from {origin}: expected HOST:PORT with a port from 1 to 65535")]
    BadBootstrapNode {
        /// The entry as given.
        node: String,
        /// Where the list came from.
        origin: BootstrapSource,
    },
    /// A bootstrap entry is an IPv6 address; the DHT here is IPv4 only.
    #[error("dht bootstrap node {node:?} from {origin} is ipv6, but the dht runs on ipv4 only")]
    Ipv6BootstrapNode {
        /// The entry as given.
        node: String,
        /// Where the list came from.
        origin: BootstrapSource,
    },
    /// The environment variable is set to something that is not UTF-8.
    #[error("{BOOTSTRAP_ENV} is not valid utf-8")]
    EnvNotUnicode,
    /// The UDP socket could not be bound.
    #[error("cannot bind the dht udp socket to {addr}: {reason}; choose another --dht-port")]
    Bind {
        /// The address asked for.
        addr: SocketAddrV4,
        /// What the system said.
        reason: String,
    },
}

/// Where the bootstrap list came from, for the log and for checks that no public router
/// is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapSource {
    /// The `--dht-bootstrap` option.
    CommandLine,
    /// The [`BOOTSTRAP_ENV`] environment variable.
    Environment,
    /// [`DEFAULT_BOOTSTRAP`], the public routers.
    PublicRouters,
}

impl fmt::Display for BootstrapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootstrapSource::CommandLine => f.write_str("--dht-bootstrap"),
            BootstrapSource::Environment => f.write_str(BOOTSTRAP_ENV),
            BootstrapSource::PublicRouters => f.write_str("the public routers"),
        }
    }
}

/// The bootstrap nodes as `HOST:PORT` texts, checked for form but not resolved: names
/// are looked up only when the node is built, off the arbiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// Where the list came from.
    source: BootstrapSource,
    /// The entries, each `HOST:PORT` with a non-zero port.
    nodes: Vec<String>,
}

impl Bootstrap {
    /// Chooses the bootstrap list: the `--dht-bootstrap` value when given, else the
    /// [`BOOTSTRAP_ENV`] value when set (empty meaning no nodes), else the public
    /// routers. Each is a comma-separated `HOST:PORT` list; spaces around entries are
    /// ignored.
    pub fn resolve(cli: Option<&str>, env: Option<&str>) -> Result<Bootstrap, DhtError> {
        match (cli, env) {
            (Some(list), _) => Bootstrap::parse(list, BootstrapSource::CommandLine),
            (None, Some(list)) => Bootstrap::parse(list, BootstrapSource::Environment),
            (None, None) => Ok(Bootstrap {
                source: BootstrapSource::PublicRouters,
                nodes: DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    /// [`Bootstrap::resolve`] with the environment variable read from this process.
    pub fn from_cli_and_env(cli: Option<&str>) -> Result<Bootstrap, DhtError> {
        match std::env::var(BOOTSTRAP_ENV) {
            Ok(value) => Bootstrap::resolve(cli, Some(&value)),
            Err(std::env::VarError::NotPresent) => Bootstrap::resolve(cli, None),
            Err(std::env::VarError::NotUnicode(_)) if cli.is_some() => {
                Bootstrap::resolve(cli, None)
            }
            Err(std::env::VarError::NotUnicode(_)) => Err(DhtError::EnvNotUnicode),
        }
    }

    /// A list given directly, e.g. by a test; checked like the command line's.
    pub fn from_nodes<S: AsRef<str>>(
        source: BootstrapSource,
        nodes: &[S],
    ) -> Result<Bootstrap, DhtError> {
        let list: Vec<&str> = nodes.iter().map(AsRef::as_ref).collect();
        Bootstrap::parse(&list.join(","), source)
    }

    fn parse(list: &str, source: BootstrapSource) -> Result<Bootstrap, DhtError> {
        let mut nodes = Vec::new();
        if list.trim().is_empty() {
            return Ok(Bootstrap { source, nodes });
        }
        for entry in list.split(',').map(str::trim) {
            check_node(entry, source)?;
            if !nodes.iter().any(|n| n == entry) {
                nodes.push(entry.to_owned());
            }
        }
        Ok(Bootstrap { source, nodes })
    }

    /// Where the list came from.
    pub fn source(&self) -> BootstrapSource {
        self.source
    }

    /// The `HOST:PORT` entries.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// True when every entry is an IPv4 literal in 127.0.0.0/8, so using the list cannot
    /// send a packet off the machine; also true for an empty list. Names are not
    /// resolved, so `localhost:6881` counts as not loopback.
    pub fn is_loopback_only(&self) -> bool {
        self.nodes.iter().all(|node| {
            node.parse::<SocketAddrV4>()
                .map(|addr| addr.ip().is_loopback())
                .unwrap_or(false)
        })
    }
}

/// Checks one `HOST:PORT` entry's form.
fn check_node(entry: &str, origin: BootstrapSource) -> Result<(), DhtError> {
    let bad = || DhtError::BadBootstrapNode {
        node: entry.to_owned(),
        origin,
    };
    if let Ok(SocketAddr::V6(_)) = entry.parse::<SocketAddr>() {
        return Err(DhtError::Ipv6BootstrapNode {
            node: entry.to_owned(),
            origin,
        });
    }
    let (host, port) = entry.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(':') || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(()),
        _ => Err(bad()),
    }
}

/// Everything the Dht needs to know, with the timing knobs tests shrink.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// The address to bind the UDP socket to; 127.0.0.1 keeps the node on loopback.
    pub bind: Ipv4Addr,
    /// The UDP port; 0 lets the system choose. Rebuilt nodes keep the port first bound.
    pub port: u16,
    /// Where to start.
    pub bootstrap: Bootstrap,
    /// Where the routing table is kept between runs; `None` keeps nothing.
    pub state_file: Option<PathBuf>,
    /// The longest one lookup runs before it ends with what it found.
    pub lookup_timeout: Duration,
    /// How often the routing table is saved while running.
    pub save_interval: Duration,
    /// The shortest time between two rebuilds of the node.
    pub rebuild_cooldown: Duration,
}

impl DhtConfig {
    /// A configuration with the defaults meant for the real DHT.
    pub fn new(bind: Ipv4Addr, port: u16, bootstrap: Bootstrap) -> DhtConfig {
        DhtConfig {
            bind,
            port,
            bootstrap,
            state_file: None,
            lookup_timeout: Duration::from_secs(60),
            save_interval: Duration::from_secs(5 * 60),
            rebuild_cooldown: Duration::from_secs(60),
        }
    }
}

/// Anyone → Dht: how the node is doing.
#[derive(Message)]
#[rtype(result = "DhtStatus")]
pub struct GetDhtStatus;

/// The answer to [`GetDhtStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtStatus {
    /// Non-stale nodes in the routing table.
    pub nodes: usize,
    /// The routing table holds at least one node, so lookups can get anywhere.
    pub bootstrapped: bool,
    /// The UDP port the node listens on.
    pub local_port: u16,
    /// Where the configured bootstrap list came from.
    pub bootstrap_source: BootstrapSource,
    /// The bootstrap list the current node was built with, names resolved: configured
    /// nodes, saved nodes and nodes from peers.
    pub bootstrap_nodes: Vec<SocketAddrV4>,
    /// The node is built (false while names resolve or during a rebuild).
    pub running: bool,
    /// How many times the node was rebuilt.
    pub rebuilds: u32,
    /// Lookups under way or waiting for the node.
    pub lookups: usize,
}

/// Session or `get` → Dht: save the routing table, then stop. The reply comes once the file is
/// written (or the save failed and was logged).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DhtStop;

/// A lookup under way, kept so a rebuild can restart it on the new node.
struct RunningLookup {
    /// Cancels it.
    handle: SpawnHandle,
    /// The request, to run again.
    info_hash: InfoHash,
    announce_port: Option<u16>,
    reply: Recipient<PeersFound>,
}

/// How a lookup ended, for the log.
struct LookupOutcome {
    id: u64,
    peers: usize,
    timed_out: bool,
    announced: Option<Result<(), String>>,
}

/// See the module documentation.
pub struct Dht {
    /// Bind address, bootstrap list, state file and timing.
    config: DhtConfig,
    /// Tagged with `dht`.
    log: Logger,
    /// The UDP port, fixed at start so rebuilt nodes keep it (peers learn it from our
    /// `port` messages).
    port: u16,
    /// The node, once built; `None` while names resolve or during a rebuild.
    node: Option<AsyncDht>,
    /// A build is under way.
    building: bool,
    /// The configured bootstrap nodes, resolved; `None` until resolution ran once.
    resolved: Option<Vec<SocketAddrV4>>,
    /// Nodes from the routing-table file of the last run.
    saved: Vec<SocketAddrV4>,
    /// Nodes from peers' `port` messages, newest last.
    seen: VecDeque<SocketAddrV4>,
    /// The bootstrap list the current node was built with.
    built_with: Vec<SocketAddrV4>,
    /// Lookups that came while no node was built, oldest first.
    waiting: VecDeque<DhtLookup>,
    /// Lookups under way, by their number.
    running: HashMap<u64, RunningLookup>,
    /// Numbers lookups for the log and for `running`.
    next_lookup: u64,
    /// When the node was last built, for the rebuild cooldown.
    built_at: Option<Instant>,
    /// A check of the routing table after a `DhtNodeSeen` is under way.
    checking: bool,
    /// How many rebuilds happened.
    rebuilds: u32,
    /// The routing table as last read, saved by `stopping()` if no `DhtStop` came.
    snapshot: Vec<SocketAddrV4>,
    /// The routing table was saved by `DhtStop`; `stopping()` need not.
    saved_on_stop: bool,
}

impl Dht {
    /// Binds the UDP port (so a taken port is reported here), then starts the actor,
    /// which resolves the bootstrap names, reads the routing-table file and builds the
    /// node off the arbiter. Lookups sent meanwhile wait for the node.
    pub fn start(config: DhtConfig, log: Logger) -> Result<Addr<Dht>, DhtError> {
        Dht::start_with_port(config, log).map(|(addr, _)| addr)
    }

    /// [`Dht::start`], also returning the UDP port bound (the one to send peers in `port`
    /// messages, chosen by the system when the configured port is 0).
    pub fn start_with_port(config: DhtConfig, log: Logger) -> Result<(Addr<Dht>, u16), DhtError> {
        let want = SocketAddrV4::new(config.bind, config.port);
        let port = UdpSocket::bind(want)
            .and_then(|socket| socket.local_addr())
            .map(|addr| addr.port())
            .map_err(|e| DhtError::Bind {
                addr: want,
                reason: e.to_string(),
            })?;
        let log = log.new(o!("dht" => format!("{}:{}", config.bind, port)));
        info!(log, "dht starting";
            "bootstrap" => %config.bootstrap.source(),
            "nodes" => config.bootstrap.nodes().join(","),
            "state_file" => config.state_file.as_ref().map(|p| p.display().to_string()));
        Ok((
            Dht {
                config,
                log,
                port,
                node: None,
                building: false,
                resolved: None,
                saved: Vec::new(),
                seen: VecDeque::new(),
                built_with: Vec::new(),
                waiting: VecDeque::new(),
                running: HashMap::new(),
                next_lookup: 0,
                built_at: None,
                checking: false,
                rebuilds: 0,
                snapshot: Vec::new(),
                saved_on_stop: false,
            }
            .start(),
            port,
        ))
    }

    /// The recipients a torrent needs, and our node's UDP `port` for `port` messages.
    pub fn links(addr: &Addr<Dht>, port: u16) -> DhtLinks {
        DhtLinks {
            lookup: addr.clone().recipient(),
            node_seen: addr.clone().recipient(),
            port,
        }
    }

    /// True when `addr` may be sent to from our bind address.
    fn reachable(&self, addr: &SocketAddrV4) -> bool {
        usable_node(addr) && (!self.config.bind.is_loopback() || addr.ip().is_loopback())
    }

    /// Resolves the configured names (first build only), reads the routing-table file
    /// (first build only) and builds a node on our port, all off the arbiter.
    fn build_node(&mut self, ctx: &mut Context<Self>) {
        if self.building {
            return;
        }
        self.building = true;
        let first = self.resolved.is_none();
        let names = self.config.bootstrap.nodes().to_vec();
        let state_file = self.config.state_file.clone();
        let log = self.log.clone();
        let prepare = async move {
            if !first {
                return None;
            }
            let resolved = resolve_all(names, &log).await;
            let saved = match state_file {
                Some(path) => {
                    let log = log.clone();
                    tokio::task::spawn_blocking(move || load_saved_nodes(&path, &log))
                        .await
                        .unwrap_or_default()
                }
                None => Vec::new(),
            };
            Some((resolved, saved))
        };
        ctx.spawn(
            prepare
                .into_actor(self)
                .then(|prepared, act, _| {
                    if let Some((resolved, saved)) = prepared {
                        act.accept_resolved(resolved, saved);
                    }
                    let bootstrap = act.bootstrap_list();
                    act.built_with = bootstrap.clone();
                    let (bind, port) = (act.config.bind, act.port);
                    async move {
                        tokio::task::spawn_blocking(move || build_mainline(bind, port, &bootstrap))
                            .await
                            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
                    }
                    .into_actor(act)
                })
                .map(|built, act, ctx| act.node_built(built, ctx)),
        );
    }

    /// Keeps the resolved configured nodes and the saved ones we can reach.
    fn accept_resolved(&mut self, resolved: Vec<SocketAddrV4>, saved: Vec<SocketAddrV4>) {
        let (resolved, dropped): (Vec<_>, Vec<_>) =
            resolved.into_iter().partition(|a| self.reachable(a));
        if !dropped.is_empty() {
            warn!(self.log, "bootstrap nodes unreachable from the bind address, skipped";
                "nodes" => format!("{dropped:?}"));
        }
        let saved: Vec<_> = saved.into_iter().filter(|a| self.reachable(a)).collect();
        debug!(self.log, "bootstrap resolved";
            "configured" => resolved.len(), "saved" => saved.len());
        self.resolved = Some(resolved);
        self.saved = saved;
    }

    /// Configured, saved and peer-given nodes, without repeats.
    fn bootstrap_list(&self) -> Vec<SocketAddrV4> {
        let mut list = Vec::new();
        let configured = self.resolved.iter().flatten();
        for addr in configured.chain(&self.saved).chain(&self.seen) {
            if !list.contains(addr) {
                list.push(*addr);
            }
        }
        list
    }

    /// A build finished: start the waiting lookups, or try again later.
    fn node_built(&mut self, built: io::Result<mainline::Dht>, ctx: &mut Context<Self>) {
        self.building = false;
        self.built_at = Some(Instant::now());
        match built {
            Ok(node) => {
                info!(self.log, "dht node running";
                    "bootstrap_nodes" => self.built_with.len(), "rebuilds" => self.rebuilds);
                self.node = Some(node.as_async());
                while let Some(lookup) = self.waiting.pop_front() {
                    self.run_lookup(lookup, ctx);
                }
            }
            Err(e) => {
                warn!(self.log, "cannot build the dht node, trying again";
                    "error" => %e, "in" => ?BUILD_RETRY);
                ctx.run_later(BUILD_RETRY, |act, ctx| act.build_node(ctx));
            }
        }
    }

    /// Drops the node and builds a new one with the current bootstrap list. Lookups
    /// under way are cancelled and run again on the new node.
    fn rebuild(&mut self, ctx: &mut Context<Self>) {
        if self.building {
            return;
        }
        self.rebuilds += 1;
        info!(self.log, "rebuilding the dht node with new bootstrap nodes";
            "seen" => self.seen.len());
        self.node = None;
        let running: Vec<_> = self.running.drain().collect();
        for (_, lookup) in running {
            ctx.cancel_future(lookup.handle);
            self.waiting.push_back(DhtLookup {
                info_hash: lookup.info_hash,
                announce_port: lookup.announce_port,
                reply: lookup.reply,
            });
        }
        self.build_node(ctx);
    }

    /// Starts one lookup on the built node.
    fn run_lookup(&mut self, lookup: DhtLookup, ctx: &mut Context<Self>) {
        let Some(node) = self.node.clone() else {
            self.queue_lookup(lookup);
            return;
        };
        let id = self.next_lookup;
        self.next_lookup += 1;
        let target = Id::from(lookup.info_hash.as_bytes());
        // Only an announcing lookup keeps a handle on the node: a rebuild needs every
        // handle gone before the old node's thread frees the port.
        let announcer = lookup.announce_port.map(|port| (node.clone(), port));
        let stream = node.get_peers(target);
        drop(node);
        let reply = lookup.reply.clone();
        let timeout = self.config.lookup_timeout;
        let log = self
            .log
            .new(o!("lookup" => id, "info_hash" => lookup.info_hash.to_hex()));
        debug!(log, "lookup started"; "announce_port" => ?lookup.announce_port);
        let work = async move {
            let (peers, timed_out) = collect_peers(stream, &reply, timeout).await;
            let announced = match announcer {
                Some((node, port)) => Some(
                    match tokio::time::timeout(
                        ANNOUNCE_LIMIT,
                        node.announce_peer(target, Some(port)),
                    )
                    .await
                    {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {ANNOUNCE_LIMIT:?}")),
                    },
                ),
                None => None,
            };
            LookupOutcome {
                id,
                peers,
                timed_out,
                announced,
            }
        };
        let handle = ctx.spawn(work.into_actor(self).map(move |outcome, act, _| {
            act.running.remove(&outcome.id);
            info!(log, "lookup done";
            "peers" => outcome.peers,
            "timed_out" => outcome.timed_out,
            "announced" => match &outcome.announced {
                None => "not asked".to_owned(),
                Some(Ok(())) => "yes".to_owned(),
                Some(Err(e)) => format!("failed: {e}"),
            });
        }));
        self.running.insert(
            id,
            RunningLookup {
                handle,
                info_hash: lookup.info_hash,
                announce_port: lookup.announce_port,
                reply: lookup.reply,
            },
        );
    }

    /// Keeps a lookup until the node is built, dropping the oldest beyond the bound.
    fn queue_lookup(&mut self, lookup: DhtLookup) {
        if self.waiting.len() >= MAX_WAITING_LOOKUPS {
            if let Some(old) = self.waiting.pop_front() {
                warn!(self.log, "too many lookups waiting for the dht node, dropping one";
                    "info_hash" => old.info_hash.to_hex());
            }
        }
        self.waiting.push_back(lookup);
    }

    /// Reads the routing table into `snapshot`, then runs `then`.
    fn refresh_snapshot(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        let Some(node) = self.node.clone() else {
            then(self, ctx);
            return;
        };
        ctx.spawn(
            async move { tokio::time::timeout(QUERY_LIMIT, node.to_bootstrap()).await }
                .into_actor(self)
                .map(move |table, act, ctx| {
                    if let Ok(table) = table {
                        let nodes = parse_node_list(&table);
                        if !nodes.is_empty() {
                            act.snapshot = nodes;
                        }
                    }
                    then(act, ctx);
                }),
        );
    }

    /// Writes the snapshot to the state file off the arbiter.
    fn save_snapshot(&self) -> impl std::future::Future<Output = ()> + 'static {
        let path = self.config.state_file.clone();
        let nodes = self.snapshot.clone();
        let log = self.log.clone();
        async move {
            let Some(path) = path else { return };
            if nodes.is_empty() {
                // An empty table would overwrite the last good list with nothing.
                debug!(log, "routing table empty, state file left as it was");
                return;
            }
            let count = nodes.len();
            let written = tokio::task::spawn_blocking(move || write_saved_nodes(&path, &nodes))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
            match written {
                Ok(()) => debug!(log, "routing table saved"; "nodes" => count),
                Err(e) => warn!(log, "cannot save the dht routing table"; "error" => %e),
            }
        }
    }
}

/// Reads batches from the `get_peers` stream until it ends, the time is up, the asker
/// is gone or [`MAX_PEERS_PER_LOOKUP`] peers went out; forwards each batch's new peers.
/// Returns how many peers were forwarded and whether the time ran out.
async fn collect_peers(
    mut stream: mainline::async_dht::GetStream<Vec<SocketAddrV4>>,
    reply: &Recipient<PeersFound>,
    timeout: Duration,
) -> (usize, bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = HashSet::new();
    loop {
        let batch = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(batch)) => batch,
            Ok(None) => return (seen.len(), false),
            Err(_) => return (seen.len(), true),
        };
        let mut fresh = Vec::new();
        for peer in batch {
            if seen.len() >= MAX_PEERS_PER_LOOKUP {
                break;
            }
            if peer.port() != 0 && !peer.ip().is_unspecified() && seen.insert(peer) {
                fresh.push(SocketAddr::V4(peer));
            }
        }
        if !fresh.is_empty() {
            reply.do_send(PeersFound {
                peers: fresh,
                source: PeerSource::Dht,
            });
        }
        if seen.len() >= MAX_PEERS_PER_LOOKUP || !reply.connected() {
            return (seen.len(), false);
        }
    }
}

/// Resolves `HOST:PORT` entries concurrently, each bounded in time, keeping IPv4
/// addresses. A name that does not resolve is logged and skipped.
async fn resolve_all(names: Vec<String>, log: &Logger) -> Vec<SocketAddrV4> {
    let lookups = names.into_iter().map(|name| async move {
        let result = tokio::time::timeout(RESOLVE_LIMIT, tokio::net::lookup_host(name.clone()))
            .await
            .map_err(|_| format!("no answer within {RESOLVE_LIMIT:?}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        (name, result.map(|addrs| addrs.collect::<Vec<_>>()))
    });
    let mut out = Vec::new();
    for (name, result) in futures::future::join_all(lookups).await {
        match result {
            Ok(addrs) => {
                for addr in addrs {
                    if let SocketAddr::V4(v4) = addr {
                        if !out.contains(&v4) {
                            out.push(v4);
                        }
                    }
                }
            }
            Err(e) => {
                warn!(log, "cannot resolve a dht bootstrap node"; "node" => name, "error" => e)
            }
        }
    }
    out
}

/// Builds a server-mode mainline node on `bind:port` with exactly `bootstrap`, waiting
/// up to [`REBIND_LIMIT`] for a previous node's thread to free the port. Blocking.
fn build_mainline(
    bind: Ipv4Addr,
    port: u16,
    bootstrap: &[SocketAddrV4],
) -> io::Result<mainline::Dht> {
    let mut builder = mainline::Dht::builder();
    builder.server_mode().bind_address(bind).port(port);
    // Always set explicitly: a builder without a bootstrap list uses mainline's own
    // public defaults, resolved by name.
    if bootstrap.is_empty() {
        builder.no_bootstrap();
    } else {
        builder.bootstrap(bootstrap);
    }
    let deadline = Instant::now() + REBIND_LIMIT;
    loop {
        match builder.build() {
            Ok(node) => return Ok(node),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// True for an address a DHT node could have: not unspecified, broadcast or multicast,
/// and a non-zero port.
fn usable_node(addr: &SocketAddrV4) -> bool {
    let ip = addr.ip();
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast()
}

/// `IP:PORT` texts to addresses, skipping anything else.
fn parse_node_list<S: AsRef<str>>(texts: &[S]) -> Vec<SocketAddrV4> {
    texts
        .iter()
        .filter_map(|t| t.as_ref().parse::<SocketAddrV4>().ok())
        .filter(usable_node)
        .collect()
}

/// Why a routing-table file was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SavedNodesError {
    /// Larger than [`MAX_STATE_BYTES`].
    #[error("routing table file is {0} bytes, more than the {MAX_STATE_BYTES} we read")]
    TooLarge(u64),
    /// Not a JSON list.
    #[error("routing table file is not a json list: {0}")]
    Malformed(String),
}

/// Reads a routing-table file: a JSON list of `"IP:PORT"` strings. The file is untrusted
/// input: anything over [`MAX_STATE_BYTES`] or not a JSON list is refused, entries that
/// are not IPv4 `IP:PORT` strings are skipped, and at most [`MAX_SAVED_NODES`] are kept.
pub fn parse_saved_nodes(bytes: &[u8]) -> Result<Vec<SocketAddrV4>, SavedNodesError> {
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(SavedNodesError::TooLarge(bytes.len() as u64));
    }
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| SavedNodesError::Malformed(e.to_string()))?;
    let mut nodes = Vec::new();
    for entry in entries {
        let Some(addr) = entry.as_str().and_then(|s| s.parse::<SocketAddrV4>().ok()) else {
            continue;
        };
        if usable_node(&addr) && !nodes.contains(&addr) {
            nodes.push(addr);
            if nodes.len() == MAX_SAVED_NODES {
                break;
            }
        }
    }
    Ok(nodes)
}

/// Reads the routing-table file at `path`; a missing file is an empty list, anything
/// wrong with it a warning and an empty list. Blocking.
fn load_saved_nodes(path: &Path, log: &Logger) -> Vec<SocketAddrV4> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(log, "cannot read the dht routing table file, ignoring it";
                "path" => %path.display(), "error" => %e);
            return Vec::new();
        }
    };
    // One byte over the limit is enough to tell the file is too large.
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes) {
        warn!(log, "cannot read the dht routing table file, ignoring it";
            "path" => %path.display(), "error" => %e);
        return Vec::new();
    }
    match parse_saved_nodes(&bytes) {
        Ok(nodes) => {
            debug!(log, "routing table file read"; "nodes" => nodes.len());
            nodes
        }
        Err(e) => {
            warn!(log, "ignoring the dht routing table file";
                "path" => %path.display(), "error" => %e);
            Vec::new()
        }
    }
}

/// Writes at most [`MAX_SAVED_NODES`] nodes to `path` as a JSON list, through a
/// temporary file renamed over the old one, so a crash leaves the old or the new list.
/// Blocking.
pub fn write_saved_nodes(path: &Path, nodes: &[SocketAddrV4]) -> io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let texts: Vec<String> = nodes
        .iter()
        .take(MAX_SAVED_NODES)
        .map(|n| n.to_string())
        .collect();
    let json = serde_json::to_vec(&texts).map_err(io::Error::other)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&json)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl Actor for Dht {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.build_node(ctx);
        let every = self.config.save_interval;
        ctx.run_interval(every, |act, ctx| {
            act.refresh_snapshot(ctx, |act, ctx| {
                ctx.spawn(act.save_snapshot().into_actor(act));
            });
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // Without a `DhtStop` (the System is going down), the last snapshot is written
        // here, on the arbiter: it is a few hundred bytes, once, at shutdown, and
        // there is no later moment to write it.
        if !self.saved_on_stop && !self.snapshot.is_empty() {
            if let Some(path) = &self.config.state_file {
                if let Err(e) = write_saved_nodes(path, &self.snapshot) {
                    warn!(self.log, "cannot save the dht routing table"; "error" => %e);
                }
            }
        }
        info!(self.log, "dht stopping");
        Running::Stop
    }
}

impl Handler<DhtLookup> for Dht {
    type Result = ();

    fn handle(&mut self, msg: DhtLookup, ctx: &mut Context<Self>) {
        if self.node.is_some() {
            self.run_lookup(msg, ctx);
        } else {
            self.queue_lookup(msg);
        }
    }
}

impl Handler<DhtNodeSeen> for Dht {
    type Result = ();

    /// Remembers the node; if the routing table is empty, rebuilds the node with it.
    fn handle(&mut self, msg: DhtNodeSeen, ctx: &mut Context<Self>) {
        let addr = match msg.addr {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(ip) => SocketAddrV4::new(ip, v6.port()),
                None => return,
            },
        };
        if !self.reachable(&addr) || self.seen.contains(&addr) {
            return;
        }
        if self.seen.len() >= MAX_SEEN_NODES {
            self.seen.pop_front();
        }
        self.seen.push_back(addr);
        debug!(self.log, "node from a peer"; "node" => %addr);
        let cooled = self
            .built_at
            .is_none_or(|at| at.elapsed() >= self.config.rebuild_cooldown);
        let Some(node) = self.node.clone() else {
            return;
        };
        if self.checking || !cooled {
            return;
        }
        self.checking = true;
        ctx.spawn(
            async move { tokio::time::timeout(QUERY_LIMIT, node.to_bootstrap()).await }
                .into_actor(self)
                .map(|table, act, ctx| {
                    act.checking = false;
                    if matches!(table, Ok(ref t) if t.is_empty()) && act.node.is_some() {
                        act.rebuild(ctx);
                    }
                }),
        );
    }
}

impl Handler<GetDhtStatus> for Dht {
    type Result = ResponseActFuture<Self, DhtStatus>;

    fn handle(&mut self, _: GetDhtStatus, _: &mut Context<Self>) -> Self::Result {
        let node = self.node.clone();
        let mut status = DhtStatus {
            nodes: 0,
            bootstrapped: false,
            local_port: self.port,
            bootstrap_source: self.config.bootstrap.source(),
            bootstrap_nodes: self.built_with.clone(),
            running: node.is_some(),
            rebuilds: self.rebuilds,
            lookups: self.running.len() + self.waiting.len(),
        };
        Box::pin(
            async move {
                if let Some(node) = node {
                    if let Ok(table) = tokio::time::timeout(QUERY_LIMIT, node.to_bootstrap()).await
                    {
                        status.nodes = table.len();
                        status.bootstrapped = !table.is_empty();
                    }
                }
                status
            }
            .into_actor(self),
        )
    }
}

impl Handler<DhtStop> for Dht {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: DhtStop, _: &mut Context<Self>) -> Self::Result {
        let node = self.node.clone();
        Box::pin(
            async move {
                match node {
                    Some(node) => tokio::time::timeout(QUERY_LIMIT, node.to_bootstrap())
                        .await
                        .ok(),
                    None => None,
                }
            }
            .into_actor(self)
            .then(|table, act, _| {
                let nodes = parse_node_list(table.as_deref().unwrap_or_default());
                if !nodes.is_empty() {
                    act.snapshot = nodes;
                }
                act.save_snapshot().into_actor(act)
            })
            // The reply goes out as this future ends, before the actor stops.
            .map(|(), act, ctx| {
                act.saved_on_stop = true;
                ctx.stop();
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_wins_over_environment() {
        let b = Bootstrap::resolve(Some("127.0.0.1:6881"), Some("10.0.0.1:1")).unwrap();
        assert_eq!(b.source(), BootstrapSource::CommandLine);
        assert_eq!(b.nodes(), ["127.0.0.1:6881"]);
    }

    #[test]
    fn environment_list_is_used_without_command_line() {
        let b = Bootstrap::resolve(None, Some(" 127.0.0.1:1 , host.example:2")).unwrap();
        assert_eq!(b.source(), BootstrapSource::Environment);
        assert_eq!(b.nodes(), ["127.0.0.1:1", "host.example:2"]);
    }

    #[test]
    fn empty_environment_means_no_nodes_not_the_public_routers() {
        let b = Bootstrap::resolve(None, Some("")).unwrap();
        assert_eq!(b.source(), BootstrapSource::Environment);
        assert!(b.nodes().is_empty());
        assert!(b.is_loopback_only());
        let spaces = Bootstrap::resolve(None, Some("  ")).unwrap();
        assert!(spaces.nodes().is_empty());
    }

    #[test]
    fn nothing_set_gives_the_public_routers() {
        let b = Bootstrap::resolve(None, None).unwrap();
        assert_eq!(b.source(), BootstrapSource::PublicRouters);
        assert_eq!(b.nodes(), DEFAULT_BOOTSTRAP);
        assert!(!b.is_loopback_only());
    }

    #[test]
    fn repeated_entries_are_kept_once() {
        let b = Bootstrap::resolve(Some("127.0.0.1:5,127.0.0.1:5"), None).unwrap();
        assert_eq!(b.nodes(), ["127.0.0.1:5"]);
    }

    #[test]
    fn malformed_entries_are_refused_with_their_origin() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:port",
            ":6881",
            "a:1,,b:2",
            "a:1,",
            "two words:1",
        ] {
            let err = Bootstrap::resolve(None, Some(bad)).unwrap_err();
            assert!(
                matches!(
                    err,
                    DhtError::BadBootstrapNode {
                        origin: BootstrapSource::Environment,
                        ..
                    }
                ),
                "{bad:?} gave {err:?}"
            );
            let text = err.to_string();
            assert!(text.starts_with("bad dht bootstrap node"), "{text}");
            assert!(text.contains(BOOTSTRAP_ENV), "{text}");
        }
        let err = Bootstrap::resolve(Some("[::1]:6881"), None).unwrap_err();
        assert!(matches!(err, DhtError::Ipv6BootstrapNode { .. }), "{err:?}");
    }

    #[test]
    fn loopback_only_needs_every_entry_to_be_a_loopback_literal() {
        let ok = Bootstrap::resolve(Some("127.0.0.1:1,127.5.6.7:2"), None).unwrap();
        assert!(ok.is_loopback_only());
        for mixed in ["127.0.0.1:1,10.0.0.1:2", "localhost:6881", "8.8.8.8:53"] {
            let b = Bootstrap::resolve(Some(mixed), None).unwrap();
            assert!(!b.is_loopback_only(), "{mixed}");
        }
    }

    #[test]
    fn saved_nodes_keep_ipv4_entries_and_skip_the_rest() {
        let json = br#"["1.2.3.4:6881", "[::1]:6881", 7, "junk", "0.0.0.0:1",
            "5.6.7.8:0", "224.0.0.1:5", "1.2.3.4:6881", "9.9.9.9:9", null]"#;
        let nodes = parse_saved_nodes(json).unwrap();
        assert_eq!(
            nodes,
            [
                "1.2.3.4:6881".parse::<SocketAddrV4>().unwrap(),
                "9.9.9.9:9".parse().unwrap()
            ]
        );
    }

    #[test]
    fn saved_nodes_file_that_is_not_a_list_is_refused() {
        for bad in [
            &b"{}"[..],
            b"",
            b"[\"1.2.3.4:1\"",
            b"\xff\xfe",
            b"\"1.2.3.4:1\"",
        ] {
            assert!(
                matches!(parse_saved_nodes(bad), Err(SavedNodesError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn oversized_saved_nodes_file_is_refused_before_parsing() {
        let mut big = b"[".to_vec();
        big.resize(MAX_STATE_BYTES as usize + 1, b' ');
        assert_eq!(
            parse_saved_nodes(&big),
            Err(SavedNodesError::TooLarge(MAX_STATE_BYTES + 1))
        );
    }

    #[test]
    fn saved_nodes_are_capped() {
        let list: Vec<String> = (1..=100).map(|i| format!("\"10.0.0.{i}:1\"")).collect();
        let json = format!("[{}]", list.join(","));
        assert_eq!(
            parse_saved_nodes(json.as_bytes()).unwrap().len(),
            MAX_SAVED_NODES
        );
    }

    #[test]
    fn saved_nodes_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("dht.json");
        let nodes: Vec<SocketAddrV4> =
            vec!["127.0.0.1:7".parse().unwrap(), "1.2.3.4:5".parse().unwrap()];
        write_saved_nodes(&path, &nodes).unwrap();
        let log = Logger::root(slog::Discard, o!());
        assert_eq!(load_saved_nodes(&path, &log), nodes);
        assert!(load_saved_nodes(&dir.path().join("missing.json"), &log).is_empty());
    }
}
