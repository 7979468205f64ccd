//! The command line: raw arguments in, a validated command out. Nothing here downloads or
//! parses torrents; `main.rs` runs what this module describes.

use std::net::SocketAddr;
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
    /// Download a torrent: find peers through its trackers, fetch and verify every piece,
    /// write the files, and exit once all of them are complete.
    Get {
        /// The folder the torrent's file or folder is written under.
        #[arg(short = 'o', long = "output", default_value = ".")]
        output: PathBuf,
        /// The TCP port to accept peers on (0 picks a free one).
        #[arg(long, default_value_t = 6881)]
        port: u16,
        /// The address to accept peers on.
        #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
        bind: std::net::IpAddr,
        /// The most peers to be connected to at once.
        #[arg(long, default_value_t = 50)]
        max_peers: usize,
        /// A peer to connect to besides the trackers' (HOST:PORT); may be repeated.
        #[arg(long = "peer", value_name = "HOST:PORT")]
        peers: Vec<SocketAddr>,
        /// Give up after this many seconds with no peer connected.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        peer_timeout: u64,
        /// Memory for pieces requested but not yet verified, in MiB.
        #[arg(long, default_value_t = 32, value_name = "MIB")]
        max_in_progress_mib: u64,
        /// Memory for complete pieces waiting for their hash and write, in MiB.
        #[arg(long, default_value_t = 16, value_name = "MIB")]
        max_pending_mib: u64,
        /// Sync the files to disk before exiting (slower; guards against a power loss
        /// right after the download, which the page cache alone does not survive).
        #[arg(long)]
        fsync: bool,
        /// Slow every piece write by this many milliseconds (for testing backpressure).
        #[arg(long, default_value_t = 0, hide = true)]
        debug_write_delay_ms: u64,
        /// More log output on stderr (-v information, -vv debugging).
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
        /// The .torrent file.
        torrent: PathBuf,
    },
}
