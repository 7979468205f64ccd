//! The command line: raw arguments in, a validated command out. Nothing here downloads or
//! parses torrents; `main.rs` runs what this module describes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use torrent_actors::magnet::FileSelection;

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
    /// write the files, and exit once all of them are complete (or keep seeding).
    Get {
        /// The folder the torrent's file or folder is written under.
        #[arg(short = 'o', long = "output", default_value = ".")]
        output: PathBuf,
        /// Keep seeding after the download completes, until stopped or a limit is reached.
        #[arg(long)]
        seed: bool,
        /// With --seed: stop once we have uploaded this many times the torrent's size.
        #[arg(long, value_name = "RATIO", requires = "seed")]
        seed_ratio: Option<f64>,
        /// With --seed: stop after seeding this long (e.g. 90s, 30m, 2h).
        #[arg(long, value_name = "DURATION", requires = "seed", value_parser = humantime::parse_duration)]
        seed_time: Option<Duration>,
        /// Download only these files, by the indices `info` prints (e.g. 0,2,5-7). The
        /// other files are not created; pieces they share with selected files are kept
        /// in a hidden part file beside the resume file.
        #[arg(long, value_name = "LIST", value_parser = parse_files)]
        files: Option<FileSelection>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Seed a torrent from data already on disk: check it, then serve it until stopped.
    Seed {
        /// The folder the torrent's file or folder is under.
        #[arg(short = 'd', long = "dir")]
        dir: PathBuf,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

/// `--files`: a BEP 53 style list of indices and inclusive ranges.
fn parse_files(value: &str) -> Result<FileSelection, String> {
    FileSelection::parse(value).map_err(|e| e.to_string())
}

/// Options shared by the commands that run the engine.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// The TCP port to accept peers on (0 picks a free one).
    #[arg(long, default_value_t = 6881)]
    pub port: u16,
    /// The address to accept peers on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub bind: IpAddr,
    /// The most peers to be connected to at once.
    #[arg(long, default_value_t = 50)]
    pub max_peers: usize,
    /// Peers we upload to at once, besides one optimistic unchoke (0 for no limit).
    #[arg(long, default_value_t = 4)]
    pub upload_slots: usize,
    /// Upload limit in KiB/s (0 for none).
    #[arg(long, default_value_t = 0, value_name = "KIB_PER_S")]
    pub upload_limit: u64,
    /// Download limit in KiB/s (0 for none).
    #[arg(long, default_value_t = 0, value_name = "KIB_PER_S")]
    pub download_limit: u64,
    /// A peer to connect to besides the trackers' (HOST:PORT, IP:PORT or [IPv6]:PORT);
    /// may be repeated.
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = peer_address)]
    pub peers: Vec<SocketAddr>,
    /// Give up after this many seconds with no peer connected while downloading.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub peer_timeout: u64,
    /// Give up on a peer that does not complete its TCP connection, or then its
    /// handshake, within this many seconds each.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout: u64,
    /// Drop a peer that leaves our requests unanswered this many seconds (its blocks go
    /// to other peers).
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Memory for pieces requested but not yet verified, in MiB.
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    pub max_in_progress_mib: u64,
    /// Memory for complete pieces waiting for their hash and write, in MiB.
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub max_pending_mib: u64,
    /// Sync the files to disk before exiting (slower; guards against a power loss right
    /// after the download, which the page cache alone does not survive).
    #[arg(long)]
    pub fsync: bool,
    /// Slow every piece write by this many milliseconds (for testing backpressure).
    #[arg(long, default_value_t = 0, hide = true)]
    pub debug_write_delay_ms: u64,
    /// Give each HTTP tracker announce this many milliseconds, and wait this long before
    /// the first UDP tracker retransmit instead of BEP 15's 15 s (for testing broken
    /// trackers without waiting minutes).
    #[arg(long, hide = true, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub debug_tracker_timeout_ms: Option<u64>,
    /// Send each UDP tracker request this many times, not 8, before the announce fails
    /// (for testing).
    #[arg(long, hide = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=9))]
    pub debug_udp_tracker_attempts: Option<u32>,
    /// Do not exchange peers with peers (BEP 11 peer exchange); private torrents never do.
    #[arg(long)]
    pub no_pex: bool,
    /// Do not use the DHT (BEP 5); private torrents never do.
    #[arg(long)]
    pub no_dht: bool,
    /// DHT bootstrap nodes (HOST:PORT,...). Without it, the TORRENT_ACTORS_DHT_BOOTSTRAP
    /// environment variable is used (set and empty means none), else the public routers.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub dht_bootstrap: Option<String>,
    /// The DHT's UDP port (default: the same number as --port).
    #[arg(long, value_name = "PORT")]
    pub dht_port: Option<u16>,
    /// Print a line of statistics (progress, memory, files, and every actor type's
    /// messages, handling time and mailbox depth) on stderr this often, e.g. `5s`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stats_every: Option<Duration>,
    /// Append the same statistics as one JSON object per line to this file, every
    /// second (or every `--stats-every`), and once more at the end.
    #[arg(long, value_name = "FILE")]
    pub stats_file: Option<std::path::PathBuf>,
    /// More log output on stderr (-v information, -vv debugging); -v also prints the
    /// actors' statistics at the end.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The .torrent file, or a magnet link (quote it: `&` is special to the shell).
    #[arg(value_name = "TORRENT_OR_MAGNET")]
    pub torrent: PathBuf,
}

/// Resolves a `--peer` value: an address, or a host name looked up once, here.
fn peer_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("{text:?} has no valid port (1-65535)"))?;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} has no address"))
}

#[cfg(test)]
mod tests {
    use super::peer_address;

    #[test]
    fn peers_are_addresses_or_host_names() {
        assert_eq!(peer_address("127.0.0.1:6881").unwrap().port(), 6881);
        assert_eq!(peer_address("[::1]:7000").unwrap().port(), 7000);
        let local = peer_address("localhost:6881").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 6881);
        assert!(peer_address("localhost").is_err());
        assert!(peer_address("localhost:0").is_err());
        assert!(peer_address("127.0.0.1:99999").is_err());
    }
}
