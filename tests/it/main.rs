//! The one integration-test binary: each module tests one face of the crate from outside.

mod bencode;
mod big_pieces;
mod browser;
mod churn;
mod cli;
mod dht;
mod engine;
mod faults;
mod files;
mod harness;
mod hostile_files;
mod hostile_peers;
mod hostile_trackers;
mod listener;
mod magnet;
mod metadata;
mod metainfo;
mod seeding;
mod serve;
mod serve_jail;
mod support;
mod swarm;
mod terminal_output;
mod tracker;
mod tracker_actor;
mod wire;
