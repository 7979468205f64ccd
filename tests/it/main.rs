//! The one integration-test binary: each module tests one face of the crate from outside.

mod bencode;
mod cli;
mod dht;
mod engine;
mod harness;
mod magnet;
mod metainfo;
mod seeding;
mod support;
mod tracker;
mod tracker_actor;
mod wire;
