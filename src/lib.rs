//! torrent-actors: a BitTorrent engine built as an actor system.
//!
//! The modules here are the pure protocol layers: plain functions and types over bytes,
//! with no actors, sockets or filesystem access. The actor engine builds on them.

pub mod bencode;
pub mod engine;
pub mod ids;
pub mod layout;
pub mod magnet;
pub mod metainfo;
pub mod tracker;
pub mod wire;

pub use ids::{InfoHash, PeerId};
