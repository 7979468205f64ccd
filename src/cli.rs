//! The command line: raw arguments in, a validated command out. Nothing here downloads or
//! parses torrents; `main.rs` runs what this module describes.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A BitTorrent client built as an actor system.
#[derive(Debug, Parser)]
#[command(name = "torrent-actors", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a .torrent file: name, info-hash, sizes, pieces, files and trackers.
    Info {
        /// The .torrent file to describe.
        torrent: PathBuf,
    },
}
