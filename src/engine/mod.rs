//! The download engine: actix actors built on the pure protocol layers.
//!
//! See ARCHITECTURE.md for the actor roster, who owns which state, and how load is
//! bounded. The picker, the resume plan, the file selection and the part-file format are
//! pure; the rest are actors.

pub mod address_book;
pub mod budget;
pub mod choker;
pub mod connection;
pub mod coordinator;
pub mod dht;
pub mod graph;
pub mod jail;
pub mod limiter;
pub mod listener;
pub mod messages;
pub mod metadata;
pub mod metrics;
pub mod parts;
pub mod peer;
pub mod picker;
pub mod piece_manager;
pub mod ratelimit;
pub mod redirect;
pub mod request_queue;
pub mod resume;
pub mod selection;
pub mod session;
pub mod smart_ban;
pub mod storage;
pub mod stream;
pub mod streamed;
pub mod threads;
pub mod trace;
pub mod tracker;
pub mod transport;
pub mod utp;
pub mod webseed;

/// Names one peer connection for the life of a torrent: its identity in the Coordinator's
/// tables and in every message about that peer. Never reused within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub u64);

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

// Every actor that a `Tracked` address reaches takes its messages `Stamped` (when and
// from whom, while tracing), unwrapping them into its own handlers.
crate::takes_stamped!(
    coordinator::Coordinator,
    peer::Peer,
    piece_manager::PieceManager,
    storage::Hasher,
    storage::FileWriter,
    storage::FileReader,
    limiter::RateLimiter,
    tracker::Tracker,
    metadata::MetadataFetcher,
    metadata::conn::MetadataPeer,
);
