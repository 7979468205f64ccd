//! torrent-actors: a BitTorrent engine built as an actor system.
//!
//! Two layers. The protocol modules (`bencode`, `metainfo`, `layout`, `wire`, `tracker`,
//! `magnet`, `ids`) are pure: plain functions and types over bytes, with no actors, sockets
//! or filesystem access. `engine` is the actix actor system built on them. `create` reads
//! files from disk to make a `.torrent`, outside both.

pub mod bencode;
pub mod create;
pub mod engine;
pub mod fault;
pub mod http_stream;
pub mod ids;
pub mod layout;
pub mod magnet;
pub mod metainfo;
pub mod procstats;
pub mod stats;
/// The loopback swarm bench behind `torrent-actors swarm` (the `swarm` feature, on by
/// default): the engine builds without it and its plotting dependency.
#[cfg(feature = "swarm")]
pub mod swarm;
pub mod terminal;
pub mod tracker;
pub mod wire;

pub use ids::{InfoHash, PeerId};
