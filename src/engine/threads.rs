//! The threads the engine's actors run on (ARCHITECTURE.md, "Thread layout").
//!
//! A process starts one [`Threads`] and every torrent it runs shares it, so the thread
//! count depends on the cores, not on the number of torrents:
//!
//! - **protocol** arbiters (`--threads`, default one per core): each torrent's
//!   Coordinator and PieceManager are pinned to one of them (round robin by torrent),
//!   and Peers are spread over all of them (round robin by connection).
//! - **writing** and **reading** arbiters (one per core, at most [`MAX_DISK_THREADS`]
//!   each): every torrent's FileWriter lives on one writing arbiter and its FileReader on
//!   one reading arbiter. They are ordinary actors, so one torrent's writes stay in
//!   order (one mailbox, one thread), and they block only threads that run nothing but
//!   other torrents' disk actors; reads never queue behind writes.
//! - one **Hasher** pool (a SyncArbiter, one thread per core) that takes every torrent's
//!   pieces.
//!
//! A torrent started without shared threads (a library user, a test) gets private ones
//! of the same shape, with no protocol arbiters (its actors run where it was started),
//! stopped when its Coordinator goes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use actix::{Arbiter, ArbiterHandle};

use super::metrics::{ActorKind, ActorMetrics, Metrics, Tracked};
use super::storage::Hasher;

/// The most writing arbiters, and the most reading ones: a disk gains little from more
/// parallel calls, and the thread count must stay near twice the cores.
pub const MAX_DISK_THREADS: usize = 4;

/// How many threads of each kind to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadsConfig {
    /// Arbiters for Peers, Coordinators and PieceManagers; 0 runs them on the arbiter
    /// that starts the torrent.
    pub protocol: usize,
    /// Hasher threads.
    pub hashers: usize,
    /// FileWriter arbiters.
    pub writers: usize,
    /// FileReader arbiters.
    pub readers: usize,
}

impl ThreadsConfig {
    /// A process's threads: `protocol` protocol arbiters (0: one per core), a hasher per
    /// core, and a writing and a reading arbiter per core up to [`MAX_DISK_THREADS`].
    pub fn for_process(protocol: usize) -> Self {
        let cores = cores();
        Self {
            protocol: if protocol == 0 { cores } else { protocol },
            hashers: cores,
            writers: cores.min(MAX_DISK_THREADS),
            readers: cores.min(MAX_DISK_THREADS),
        }
    }

    /// One torrent's private threads: no protocol arbiters, `hashers` hashers, one writer
    /// and one reader.
    pub fn private(hashers: usize) -> Self {
        Self {
            protocol: 0,
            hashers: hashers.max(1),
            writers: 1,
            readers: 1,
        }
    }
}

/// The number of cores, or 2 when it cannot be told.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Where a torrent's actors run; see the module documentation.
pub struct Threads {
    /// Arbiters for Coordinators, PieceManagers and Peers; empty: the starting arbiter.
    protocol: Vec<ArbiterHandle>,
    /// Arbiters for FileWriters.
    writing: Vec<ArbiterHandle>,
    /// Arbiters for FileReaders.
    reading: Vec<ArbiterHandle>,
    /// The Hasher pool every torrent sends its pieces to.
    hasher: Addr<Hasher>,
    /// The pool's counters: senders count their messages in here too, so the mailbox
    /// depth they show is the pool's (a torrent's own table has no Hasher row in a
    /// process whose threads count elsewhere).
    hasher_metrics: Arc<ActorMetrics>,
    /// Torrents placed so far, for the round robin of protocol and disk arbiters.
    next_torrent: AtomicUsize,
    /// Peers placed so far, for the round robin of protocol arbiters.
    next_peer: AtomicUsize,
    /// The arbiters' threads, stopped on drop and joined by [`Threads::join`].
    arbiters: Mutex<Vec<Arbiter>>,
}

/// The arbiters one torrent's actors are pinned to.
#[derive(Clone)]
pub struct Placement {
    /// For its Coordinator and PieceManager; `None`: the arbiter that starts it.
    pub coordinator: Option<ArbiterHandle>,
    /// For its FileWriter.
    pub writer: ArbiterHandle,
    /// For its FileReader.
    pub reader: ArbiterHandle,
}

impl Threads {
    /// Starts the threads; must be called inside a running actix System. The Hasher pool
    /// counts into `metrics` (`get`: its torrent's; `serve`: a table of the process).
    pub fn start(config: ThreadsConfig, metrics: &Metrics) -> Arc<Self> {
        let mut arbiters = Vec::new();
        let mut start = |n: usize, kind: &'static str| -> Vec<ArbiterHandle> {
            (0..n)
                .map(|i| {
                    let arbiter = Arbiter::new();
                    arbiter.spawn_fn(move || name_this_thread(&format!("ta-{kind}-{i}")));
                    let handle = arbiter.handle();
                    arbiters.push(arbiter);
                    handle
                })
                .collect()
        };
        let protocol = start(config.protocol, "proto");
        let writing = start(config.writers.max(1), "write");
        let reading = start(config.readers.max(1), "read");
        let hasher_metrics = metrics.of(ActorKind::Hasher);
        let pool_metrics = hasher_metrics.clone();
        // The factory runs once on each of the pool's threads.
        let hasher = SyncArbiter::start(config.hashers.max(1), move || {
            name_this_thread("ta-hash");
            Hasher::new(pool_metrics.clone())
        });
        Arc::new(Self {
            protocol,
            writing,
            reading,
            hasher,
            hasher_metrics,
            next_torrent: AtomicUsize::new(0),
            next_peer: AtomicUsize::new(0),
            arbiters: Mutex::new(arbiters),
        })
    }

    /// The arbiters for the next torrent.
    pub fn place_torrent(&self) -> Placement {
        let i = self.next_torrent.fetch_add(1, Ordering::Relaxed);
        Placement {
            coordinator: pick(&self.protocol, i).cloned(),
            writer: pick(&self.writing, i)
                .cloned()
                .expect("one writer at least"),
            reader: pick(&self.reading, i)
                .cloned()
                .expect("one reader at least"),
        }
    }

    /// The arbiter for the next Peer; `None`: the Coordinator's own.
    pub fn place_peer(&self) -> Option<ArbiterHandle> {
        let i = self.next_peer.fetch_add(1, Ordering::Relaxed);
        pick(&self.protocol, i).cloned()
    }

    /// The shared Hasher pool, counting into the pool's metrics.
    pub fn hasher(&self) -> Tracked<Hasher> {
        Tracked::new(self.hasher.clone(), self.hasher_metrics.clone())
    }

    /// How many protocol arbiters there are (0: torrents run where they are started).
    pub fn protocol_threads(&self) -> usize {
        self.protocol.len()
    }

    /// Stops every arbiter and waits for its thread to end. Call it from outside the
    /// arbiters (after the System's run), never from an actor on one of them.
    pub fn join(&self) {
        let arbiters =
            std::mem::take(&mut *self.arbiters.lock().unwrap_or_else(|e| e.into_inner()));
        for arbiter in &arbiters {
            arbiter.stop();
        }
        for arbiter in arbiters {
            let _ = arbiter.join();
        }
    }
}

impl Drop for Threads {
    /// The arbiters stop with the last reference (their threads end on their own; the
    /// Hasher threads end when the last address of the pool is gone).
    fn drop(&mut self) {
        let arbiters = self.arbiters.get_mut().unwrap_or_else(|e| e.into_inner());
        for arbiter in arbiters.iter() {
            arbiter.stop();
        }
    }
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads")
            .field("protocol", &self.protocol.len())
            .field("writing", &self.writing.len())
            .field("reading", &self.reading.len())
            .finish()
    }
}

/// Names the calling thread (as `top -H` and `/proc/PID/task/*/comm` show it), so each
/// thread's CPU can be told apart; a name the kernel refuses changes nothing else.
fn name_this_thread(name: &str) {
    if let Ok(name) = std::ffi::CString::new(name) {
        let _ = rustix::thread::set_name(&name);
    }
}

/// Round robin: the `i`-th pick from `handles`, or `None` when it is empty.
fn pick(handles: &[ArbiterHandle], i: usize) -> Option<&ArbiterHandle> {
    (!handles.is_empty()).then(|| &handles[i % handles.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_cores_not_the_torrents() {
        let c = ThreadsConfig::for_process(0);
        assert_eq!(c.protocol, cores());
        assert_eq!(c.hashers, cores());
        assert!(c.writers >= 1 && c.writers <= MAX_DISK_THREADS);
        assert_eq!(ThreadsConfig::for_process(3).protocol, 3);
        assert_eq!(ThreadsConfig::private(0).hashers, 1);
    }

    /// The thread `handle` runs on.
    fn thread_of(handle: &ArbiterHandle) -> std::thread::ThreadId {
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(handle.spawn_fn(move || {
            let _ = tx.send(std::thread::current().id());
        }));
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the arbiter runs")
    }

    #[test]
    fn round_robin_over_each_kind_and_join_ends_the_threads() {
        actix::System::new().block_on(async {
            let threads = Threads::start(
                ThreadsConfig {
                    protocol: 2,
                    hashers: 1,
                    writers: 2,
                    readers: 1,
                },
                &Metrics::new(),
            );
            let a = threads.place_torrent();
            let b = threads.place_torrent();
            let c = threads.place_torrent();
            let home = std::thread::current().id();
            let (a_c, b_c) = (a.coordinator.unwrap(), b.coordinator.unwrap());
            assert_ne!(thread_of(&a_c), thread_of(&b_c));
            assert_eq!(thread_of(&a_c), thread_of(&c.coordinator.unwrap()));
            assert_ne!(thread_of(&a_c), home);
            assert_ne!(thread_of(&a.writer), thread_of(&b.writer));
            assert_ne!(thread_of(&a.writer), thread_of(&a.reader));
            assert_eq!(thread_of(&a.reader), thread_of(&b.reader));
            let (p, q) = (threads.place_peer().unwrap(), threads.place_peer().unwrap());
            assert_ne!(thread_of(&p), thread_of(&q));
            threads.join();
            // Joined: the threads are gone, so nothing more runs there.
            assert!(!a.writer.spawn(async {}) || !a.writer.alive());
        });
    }

    #[test]
    fn torrents_sharing_the_hasher_pool_leave_its_mailbox_empty() {
        use crate::engine::messages::HashPiece;
        use sha1::{Digest, Sha1};
        actix::System::new().block_on(async {
            let metrics = Metrics::new();
            let threads = Threads::start(ThreadsConfig::private(2), &metrics);
            let data = bytes::Bytes::from_static(b"a piece");
            let expected = crate::metainfo::PieceCheck::Sha1(Sha1::digest(&data).into());
            // Two torrents' handles on the one pool, as two Coordinators hold them.
            for hasher in [threads.hasher(), threads.hasher()] {
                let outcome = hasher
                    .send(HashPiece {
                        blocks: vec![data.clone()],
                        expected,
                        block_digests: false,
                    })
                    .await
                    .expect("the pool answers");
                assert!(outcome.verdict.passed());
            }
            let pool = metrics.of(ActorKind::Hasher).snapshot();
            assert_eq!((pool.handled, pool.mailbox), (2, 0), "{pool:?}");
            threads.join();
        });
    }

    #[test]
    fn private_threads_run_peers_where_the_torrent_starts() {
        actix::System::new().block_on(async {
            let threads = Threads::start(ThreadsConfig::private(1), &Metrics::new());
            assert_eq!(threads.protocol_threads(), 0);
            assert!(threads.place_torrent().coordinator.is_none());
            assert!(threads.place_peer().is_none());
            threads.join();
        });
    }
}
