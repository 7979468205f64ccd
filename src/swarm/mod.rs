//! A swarm on loopback to test an engine against: lightweight peers that speak the real
//! wire protocol over real TCP on 127.0.0.1, each playing a behaviour profile, serving
//! bytes made up from the seed. `torrent-actors swarm` runs real engines against it.
//!
//! What lives here: the plan (`profile.rs`, pure: who plays what, drawn from the seed),
//! the content (`data.rs`: synthetic bytes, the `.torrent`, the check of a leecher's
//! file), the running peers (`peer.rs`: tokio tasks on a runtime of their own, apart
//! from any engine), and the report and its plot (`report.rs`, `plot.rs`). What does not:
//! the leechers, which are `get` processes started by the command-line front end, and any
//! engine code; nothing here is an actor, and the engine does not know this module.
//! Peers listen on 127.0.0.1 only.

pub mod data;
pub mod link;
mod peer;
pub mod plot;
pub mod prng;
pub mod profile;
pub mod report;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use data::{check_file, FileCheck, SyntheticData};
pub use link::{LinkError, LinkProfile, Links};
pub use peer::{PeerCounters, RemoteClose};
pub use profile::{honest_peers_cover, plan_peers, PeerPlan, Profile, ProfileCounts, MIX};

use crate::engine::utp::Utp;
use crate::metainfo::{Metainfo, MetainfoError};
use crate::InfoHash;

/// Why a swarm could not be planned or started.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// The size and piece size make no valid torrent (too many pieces, say).
    #[error("the swarm's torrent is not valid: {0}")]
    Torrent(#[from] MetainfoError),
    /// The peers' runtime could not start.
    #[error("cannot start the swarm's runtime: {0}")]
    Runtime(std::io::Error),
    /// The system allows fewer open files than the swarm needs, even with the soft
    /// limit raised to the hard one.
    #[error("this swarm needs {needed} open files (a listener per peer and a socket per peer and leecher), and the system allows {allowed}; raise the hard limit (ulimit -Hn, or LimitNOFILE for a service) or use fewer peers")]
    OpenFiles {
        /// Descriptors the swarm's own process may hold.
        needed: u64,
        /// The limit after raising the soft limit as far as the hard one allows.
        allowed: u64,
    },
    /// A peer could not listen on 127.0.0.1 (out of descriptors, most likely).
    #[error("swarm peer {index} cannot listen on 127.0.0.1: {source}; raise the open-files limit or use fewer peers")]
    Listen {
        /// The peer.
        index: u32,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Descriptors the swarm's process holds besides its peers' sockets: the runtime, the
/// leechers' pipes and logs, the standard streams.
const SPARE_FILES: u64 = 64;

/// Descriptors a swarm of `peers` peers and `leechers` leechers holds in its own
/// process: a listener per peer (two with uTP: TCP and UDP) and a TCP socket per peer and
/// leecher (uTP connections share the UDP socket).
pub fn open_files_needed(peers: u32, leechers: u32, utp: bool) -> u64 {
    let listeners = 1 + u64::from(utp);
    u64::from(peers) * (listeners + u64::from(leechers)) + SPARE_FILES
}

/// Raises this process's open-files soft limit up to the hard limit when `needed` is
/// more than it allows, and says how many it allows; an error when even the hard limit
/// is too low. The leechers, started later, inherit the raised limit.
pub fn ensure_open_files(needed: u64) -> Result<u64, SwarmError> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map_err(|_| SwarmError::OpenFiles { needed, allowed: 0 })?;
    if soft >= needed {
        return Ok(soft);
    }
    let allowed = rlimit::increase_nofile_limit(hard.max(needed)).unwrap_or(soft);
    if allowed < needed {
        return Err(SwarmError::OpenFiles { needed, allowed });
    }
    Ok(allowed)
}

/// What a swarm is made of: the command line's choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmSpec {
    /// Fixes every random choice, the content included.
    pub seed: u64,
    /// The torrent's size in bytes.
    pub total_length: u64,
    /// Its piece size in bytes.
    pub piece_length: u32,
    /// How many peers play each profile.
    pub counts: ProfileCounts,
    /// The network link each peer's connections go through.
    pub links: Links,
    /// Whether the peers also accept uTP (BEP 29), on their TCP port number, as most
    /// clients on the public network do. Without it they speak TCP only.
    pub utp: bool,
}

/// A swarm planned and its torrent made, before any socket is opened.
#[derive(Debug, Clone)]
pub struct SwarmPlan {
    pub spec: SwarmSpec,
    pub data: SyntheticData,
    /// SHA-1 of every piece.
    pub hashes: Vec<[u8; 20]>,
    /// The `.torrent` bytes.
    pub torrent: Vec<u8>,
    pub info_hash: InfoHash,
    /// One plan per peer.
    pub peers: Vec<PeerPlan>,
}

impl SwarmPlan {
    /// Plans the peers and makes the torrent, hashing the content on `threads` threads.
    /// The torrent goes through the same validation as any `.torrent`, so a size the
    /// engine would refuse is refused here first.
    pub fn new(spec: SwarmSpec, threads: usize) -> Result<SwarmPlan, SwarmError> {
        let data = SyntheticData::new(spec.seed, spec.piece_length, spec.total_length);
        // Validate the shape before spending time on hashes: a torrent with the right
        // number of placeholder hashes parses exactly when the real one will.
        let placeholder = vec![[0u8; 20]; data.num_pieces() as usize];
        Metainfo::from_bytes(&data.torrent(&placeholder))?;
        let hashes = data.piece_hashes(threads);
        let torrent = data.torrent(&hashes);
        let info_hash = Metainfo::from_bytes(&torrent)?.info_hash;
        let peers = plan_peers(spec.seed, &spec.counts, data.num_pieces());
        Ok(SwarmPlan {
            spec,
            data,
            hashes,
            torrent,
            info_hash,
            peers,
        })
    }
}

/// One peer of a running swarm, as the front end sees it.
pub struct RunningPeer {
    pub addr: SocketAddr,
    pub profile: Profile,
    pub counters: Arc<PeerCounters>,
}

/// A running swarm: its peers listening on loopback, served by a runtime of their own.
/// Dropping it stops the peers.
pub struct Swarm {
    runtime: Option<tokio::runtime::Runtime>,
    cancel: CancellationToken,
    peers: Vec<RunningPeer>,
    closes: std::sync::mpsc::Receiver<RemoteClose>,
}

impl Swarm {
    /// Binds a listener on 127.0.0.1 for every planned peer and starts them on a
    /// runtime of `threads` worker threads.
    pub fn start(plan: &SwarmPlan, threads: usize) -> Result<Swarm, SwarmError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("swarm-peer")
            .enable_all()
            .build()
            .map_err(SwarmError::Runtime)?;
        let cancel = CancellationToken::new();
        let (closes_tx, closes) = std::sync::mpsc::channel();
        let shared = Arc::new(peer::SwarmShared {
            info_hash: plan.info_hash,
            data: plan.data,
            started: tokio::time::Instant::now(),
        });
        let mut peers = Vec::with_capacity(plan.peers.len());
        {
            let _in_runtime = runtime.enter();
            for p in &plan.peers {
                let listen = |source| SwarmError::Listen {
                    index: p.index,
                    source,
                };
                let std_listener =
                    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(listen)?;
                std_listener.set_nonblocking(true).map_err(listen)?;
                let addr = std_listener.local_addr().map_err(listen)?;
                let listener = tokio::net::TcpListener::from_std(std_listener).map_err(listen)?;
                let utp = if plan.spec.utp {
                    let bound = runtime.block_on(Utp::bind(addr));
                    Some(bound.map_err(|e| listen(std::io::Error::other(e)))?)
                } else {
                    None
                };
                let counters = Arc::new(PeerCounters::default());
                let task = peer::PeerTask {
                    plan: Arc::new(p.clone()),
                    shared: shared.clone(),
                    counters: counters.clone(),
                    cancel: cancel.clone(),
                    closes: closes_tx.clone(),
                    link: plan.spec.links.of(p.profile),
                };
                runtime.spawn(peer::run(listener, utp, task));
                peers.push(RunningPeer {
                    addr,
                    profile: p.profile,
                    counters,
                });
            }
        }
        Ok(Swarm {
            runtime: Some(runtime),
            cancel,
            peers,
            closes,
        })
    }

    /// The peers, in plan order.
    pub fn peers(&self) -> &[RunningPeer] {
        &self.peers
    }

    /// The connections leechers closed since the last call.
    pub fn take_closes(&self) -> Vec<RemoteClose> {
        self.closes.try_iter().collect()
    }

    /// Stops every peer and closes their sockets, waiting at most two seconds.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.cancel.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.shutdown();
    }
}
