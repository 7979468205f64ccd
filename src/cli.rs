//! The command line: raw arguments in, a validated command out. Nothing here downloads or
//! parses torrents; `main.rs` runs what this module describes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use torrent_actors::magnet::FileSelection;
#[cfg(feature = "swarm")]
use torrent_actors::swarm::Profile;

/// A BitTorrent client built as an actor system.
#[derive(Debug, Parser)]
#[command(name = "torrent-actors", version, about, after_help = TOP_EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summarise a message trace written by `get --trace`: per-hop latency of the block
    /// chain and the busiest actor instances; `--svg` draws one block's timeline.
    Trace {
        /// The trace file (Chrome trace-event JSON).
        file: PathBuf,
        /// Also write an SVG timeline of one traced block here.
        #[arg(long, value_name = "OUT")]
        svg: Option<PathBuf>,
    },
    /// Describe a .torrent file (name, info-hash, sizes, pieces, files and trackers), or
    /// what a magnet link says.
    #[command(after_help = INFO_EXAMPLES)]
    Info {
        /// Print JSON, for scripts: the same facts, every string as the torrent has it.
        #[arg(long)]
        json: bool,
        /// The .torrent file, or a magnet link (quote it: `&` is special to the shell).
        #[arg(value_name = "TORRENT_OR_MAGNET")]
        torrent: PathBuf,
    },
    /// Download a torrent: find peers through its trackers, fetch and verify every piece,
    /// write the files, and exit once all of them are complete (or keep seeding).
    #[command(after_help = GET_EXAMPLES)]
    Get {
        /// The folder the torrent's file or folder is written under.
        #[arg(
            short = 'd',
            long = "dir",
            visible_short_alias = 'o',
            visible_alias = "output",
            value_name = "DIR",
            default_value = "."
        )]
        dir: PathBuf,
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
        /// Download pieces in order, each file's first and last piece first (where media
        /// players look for an index), rather than rarest first.
        #[arg(long)]
        sequential: bool,
        /// Serve each file over HTTP while it downloads and print its URL, for a media
        /// player (mpv, VLC) to open and seek in (for a magnet link, once its metadata
        /// has arrived).
        #[arg(long)]
        stream: bool,
        /// With --stream, for benchmarks only: a read waits for its piece without making
        /// it time-critical, so the pieces come as the picker would fetch them anyway.
        #[arg(long, requires = "stream", hide = true)]
        no_stream_deadlines: bool,
        /// With --stream: where to serve the files (0 as the port picks a free one).
        /// Anyone who can reach it and knows a printed URL can read the files.
        #[arg(
            long,
            value_name = "ADDR",
            requires = "stream",
            default_value = "127.0.0.1:0"
        )]
        listen: SocketAddr,
        #[command(flatten)]
        trace: TraceArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Seed a torrent from data already on disk: check it, then serve it until stopped.
    // A magnet link has no data to check, so `seed` names its argument for what it takes.
    #[command(
        after_help = SEED_EXAMPLES,
        mut_arg("torrent", |a| a.value_name("TORRENT").help("The .torrent file"))
    )]
    Seed {
        /// The folder the torrent's file or folder is under.
        #[arg(
            short = 'd',
            long = "dir",
            visible_short_alias = 'o',
            visible_alias = "output",
            value_name = "DIR"
        )]
        dir: PathBuf,
        /// Download whatever of the torrent is missing under --dir, even all of it.
        /// Without it, `seed` refuses a folder that holds none of the torrent's data.
        #[arg(long)]
        fetch_missing: bool,
        #[command(flatten)]
        trace: TraceArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Build a swarm of peers on loopback, each playing a behaviour profile and serving
    /// synthetic data, run real `get` leechers against it, and report how they did.
    #[cfg(feature = "swarm")]
    #[command(after_help = SWARM_EXAMPLES)]
    Swarm(SwarmArgs),
    /// Run as a daemon over many torrents, with a JSON API and a web page at
    /// http://127.0.0.1:9091/. The torrents, their folders and settings are kept in the
    /// state folder, so a restart brings them all back.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeCmd),
    /// Make a .torrent from a file or folder: hybrid (v1 and v2 at once) unless --v1 or
    /// --v2 says otherwise.
    #[command(after_help = CREATE_EXAMPLES)]
    Create(CreateCmd),
}

/// `create`'s options.
#[derive(Debug, Args)]
pub struct CreateCmd {
    /// A v1-only torrent (BEP 3): read by every client, but no v2 swarm.
    #[arg(long, conflicts_with_all = ["v2", "hybrid"])]
    pub v1: bool,
    /// A v2-only torrent (BEP 52): SHA-256 trees; clients without v2 cannot read it.
    #[arg(long, conflicts_with = "hybrid")]
    pub v2: bool,
    /// A hybrid torrent, both v1 and v2 (the default): padding files align each file to
    /// a piece.
    #[arg(long)]
    pub hybrid: bool,
    /// Bytes per piece: a power of two from 16KiB to 64MiB (default: the smallest that
    /// makes at most 2,000 pieces, up to 16MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub piece_size: Option<u64>,
    /// A tracker URL (http, https or udp); may be repeated, each its own tier.
    #[arg(short = 't', long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// A web seed URL (BEP 19, http or https); may be repeated.
    #[arg(short = 'w', long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// Mark the torrent private (BEP 27): trackers only, no DHT or peer exchange.
    #[arg(long)]
    pub private: bool,
    /// A comment stored in the torrent.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// Leave out the creation date, so the same files make the same .torrent bytes.
    #[arg(long)]
    pub no_date: bool,
    /// The file or folder to share. Symlinks to files inside it are followed; a symlink
    /// out of it, or to a folder, is refused.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The .torrent file to write; it must not exist yet.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

// The examples under each subcommand's help. `DIR` is the one name of the download
// folder everywhere (`-d`/`--dir`; `-o`/`--output` are the same option).

const TOP_EXAMPLES: &str = "\
Examples:
  torrent-actors info movie.torrent
  torrent-actors get -d ~/Downloads movie.torrent
  torrent-actors seed -d ~/Downloads movie.torrent
  torrent-actors serve -d ~/Downloads

Each command has examples of its own: torrent-actors get --help";

const CREATE_EXAMPLES: &str = "\
Examples:
  torrent-actors create -t udp://tracker.example:6969/announce ~/album -o album.torrent
  torrent-actors create --v1 --piece-size 1MiB big.iso -o big.torrent
  torrent-actors create -w https://mirror.example/pub/ --private photos -o photos.torrent";

const INFO_EXAMPLES: &str = "\
Examples:
  torrent-actors info album.torrent
  torrent-actors info --json album.torrent | jq '.files[].path'
  torrent-actors info 'magnet:?xt=urn:btih:HASH&dn=NAME&tr=URL'";

const GET_EXAMPLES: &str = "\
Examples:
  torrent-actors get -d ~/Downloads movie.torrent
  torrent-actors get 'magnet:?xt=urn:btih:HASH&dn=NAME&tr=URL'
  torrent-actors info album.torrent     # lists the file indices
  torrent-actors get --files 0,2-4 album.torrent
  torrent-actors get --seed --seed-ratio 2 movie.torrent
  torrent-actors get --port 0 --peer 10.0.0.2:6881 movie.torrent";

const SEED_EXAMPLES: &str = "\
Examples:
  torrent-actors seed -d ~/Downloads movie.torrent
  torrent-actors seed --port 51413 --upload-limit 500 movie.torrent
  torrent-actors seed --fetch-missing -d /srv/data movie.torrent";

#[cfg(feature = "swarm")]
const SWARM_EXAMPLES: &str = "\
Examples:
  torrent-actors swarm --peers 200 --size 256MiB --plot out.svg
  torrent-actors swarm --fast 4 --slow 20 --liar 2 --leechers 2
  torrent-actors swarm --fast 4 --latency 50ms --link-rate 4MiB/s";

const SERVE_EXAMPLES: &str = "\
Examples:
  torrent-actors serve -d ~/Downloads   # then open http://127.0.0.1:9091/
  torrent-actors serve -d /srv/torrents --port 51413
  torrent-actors serve --listen 0.0.0.0:9091 --api-key-file ~/.ta-key";

/// `serve`'s options, as typed; `main` checks them further.
#[derive(Debug, Args)]
pub struct ServeCmd {
    /// Where the web page and API listen. Anything but a loopback address needs
    /// --api-key-file.
    #[arg(long, default_value = "127.0.0.1:9091", value_name = "IP:PORT")]
    pub listen: SocketAddr,
    /// The download root: every torrent goes in it (or a sub-folder the API names).
    #[arg(
        short = 'd',
        long = "dir",
        visible_short_alias = 'o',
        visible_alias = "output",
        default_value = ".",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
    /// Where the list of torrents and their .torrent files are kept (default:
    /// $XDG_STATE_HOME/torrent-actors/serve, or ~/.local/state/torrent-actors/serve).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// A file whose first line is the API key (at least 16 characters): clients then send
    /// `Authorization: Bearer KEY`, and the page asks for it. Without it, the
    /// TORRENT_ACTORS_API_KEY environment variable, if set.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Let `GET /metrics` (the Prometheus text format) from a loopback address in without
    /// the API key, for a scraper on this machine. Other paths, and other addresses,
    /// still need the key.
    #[arg(long)]
    pub metrics_without_key: bool,
    /// A host name the page may be reached by besides localhost, 127.0.0.1 and [::1]
    /// (requests naming any other host are refused); may be repeated.
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// The TCP port to accept peers on, shared by every torrent (0 picks a free one).
    #[arg(long, default_value_t = 6881)]
    pub port: u16,
    /// The address to accept peers on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub bind: IpAddr,
    /// The most peers per torrent.
    #[arg(long, default_value_t = 50)]
    pub max_peers: usize,
    /// The most peer connections across all torrents.
    #[arg(long, default_value_t = 200)]
    pub max_connections: usize,
    /// At most this many torrents download at once; the others wait, queued, and start
    /// in the order they were added as slots free up (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_active_downloads: usize,
    /// Torrents stop seeding once they uploaded this many times their size (a default;
    /// each torrent can have its own in the API and the page).
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub seed_ratio: Option<f64>,
    /// Torrents stop seeding after seeding this long (e.g. 90s, 30m, 2h; a default).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub seed_time: Option<Duration>,
    /// Message stream encryption: `prefer` dials encrypted, falls back to plaintext, and
    /// accepts both; `require` dials and accepts encrypted (RC4) connections only; `off`
    /// dials plaintext and refuses encrypted ones.
    #[arg(long, default_value = "prefer", value_name = "prefer|require|off")]
    pub encryption: torrent_actors::wire::mse::Encryption,
    /// uTP (BEP 29), on the UDP port of the same number as the TCP one: `on` listens on
    /// both and dials uTP first, TCP when the peer does not answer uTP; `off` is TCP
    /// only; `only` is uTP only.
    #[arg(long, default_value = "on", value_name = "on|off|only")]
    pub utp: torrent_actors::engine::utp::UtpMode,
    /// Threads for peer connections and torrents' bookkeeping (default: one per core);
    /// hashing and disk work have threads of their own, shared by every torrent.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    /// The largest .torrent file the API accepts, in MiB.
    #[arg(long, default_value_t = 16, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub max_torrent_mib: u64,
    /// Do not use the DHT (BEP 5).
    #[arg(long)]
    pub no_dht: bool,
    /// DHT bootstrap nodes (HOST:PORT,...); as for `get`.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub dht_bootstrap: Option<String>,
    /// The DHT's UDP port (default: the number after --port, which uTP takes on UDP; the
    /// same number as --port with --utp off).
    #[arg(long, value_name = "PORT")]
    pub dht_port: Option<u16>,
    /// More log output on stderr (-v information, -vv debugging).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[cfg(feature = "swarm")]
/// `swarm`'s options, as typed; `swarm_cmd` checks them further.
#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// How many peers (with --profile). Replaced by the per-profile counts if any is given.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub peers: u32,
    /// What the peers do: mix (the proportions documented in docs/swarm.md), or one of
    /// fast, slow, flaky, liar, silent, partial, choker for all of them.
    #[arg(long, default_value = "mix", value_parser = parse_profile)]
    pub profile: ProfileChoice,
    /// The torrent's size: a number of bytes, or with a KiB, MiB or GiB suffix.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub size: u64,
    /// The piece size, with the same suffixes.
    #[arg(long, default_value = "512KiB", value_parser = parse_size, value_name = "SIZE")]
    pub piece_size: u64,
    /// Fixes every random choice: the data, the profiles, their timing.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many `get` leechers to run; they trade with each other too.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub leechers: u32,
    /// Stop the run (killing leechers still running) after this long, e.g. 90s or 10m.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration_limit: Duration,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Draw the leechers' rates and each profile's share as an SVG into this file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Fast peers (every piece, no limit).
    #[arg(long, value_name = "N", conflicts_with_all = ["peers", "profile"])]
    pub fast: Option<u32>,
    /// Slow peers (every piece, 16-64 KiB/s per connection).
    #[arg(long, value_name = "N", conflicts_with_all = ["peers", "profile"])]
    pub slow: Option<u32>,
    /// Flaky peers (go down for a while, then come back).
    #[arg(long, value_name = "N", conflicts_with_all = ["peers", "profile"])]
    pub flaky: Option<u32>,
    /// Lying peers (spoil some blocks).
    #[arg(long, value_name = "N", conflicts_with_all = ["peers", "profile"])]
    pub liar: Option<u32>,
    /// Silent peers (accept, never answer).
    #[arg(long, value_name = "N", conflicts_with_all = ["peers", "profile"])]
    pub silent: Option<u32>,
    /// Partial peers (some pieces, gaining more).
    #[arg(long, value_name = "N", conflicts_with_all = ["peers", "profile"])]
    pub partial: Option<u32>,
    /// Choking peers (choke and unchoke at random).
    #[arg(long, value_name = "N", conflicts_with_all = ["peers", "profile"])]
    pub choker: Option<u32>,
    /// Idle peers (handshake, no pieces, keep-alives only): connections held at no
    /// work, for measuring what a connection costs.
    #[arg(long, value_name = "N", conflicts_with_all = ["peers", "profile"])]
    pub idle: Option<u32>,
    /// Plan the swarm and write its torrent and report without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the torrent, the leechers' files, stats and logs go (default: a temporary
    /// folder, removed at the end unless --keep).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the temporary folder.
    #[arg(long)]
    pub keep: bool,
    /// Record each leecher's message trace into this folder, as
    /// `leecher-N.trace.json` (each leecher's `get --trace`).
    #[arg(long, value_name = "DIR")]
    pub trace: Option<PathBuf>,
    /// An extra argument for every leecher's `get` (repeat for more), e.g.
    /// `--leecher-arg=-v` or `--leecher-arg=--max-in-progress-mib=64`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub leecher_arg: Vec<String>,
    /// One-way delay of every peer's link, each direction (e.g. 50ms): applied inside
    /// the swarm's peers, since loopback has none. See also --jitter, --link-rate, --loss.
    #[arg(long, value_name = "DURATION", value_parser = parse_link_duration)]
    pub latency: Option<Duration>,
    /// Each message's delay varies by up to this much either way (at most --latency).
    #[arg(long, value_name = "DURATION", value_parser = parse_link_duration)]
    pub jitter: Option<Duration>,
    /// Every peer's link rate per connection and direction, e.g. 4MiB/s.
    #[arg(long, value_name = "RATE", value_parser = parse_link_rate)]
    pub link_rate: Option<u64>,
    /// Share of TCP segments lost, e.g. 0.5%: each loss stalls the stream for one round
    /// trip (TCP resends; no byte is dropped from the stream).
    #[arg(long, value_name = "PERCENT", value_parser = parse_link_loss)]
    pub loss: Option<u32>,
    /// One profile's own link, over the flags above: PROFILE:KEY=VALUE,... with keys
    /// latency, jitter, rate, loss (repeat for more profiles), e.g.
    /// `--link slow:latency=150ms,rate=256KiB/s,loss=1%`.
    #[arg(long, value_name = "PROFILE:LINK")]
    pub link: Vec<String>,
    /// The peers accept uTP too (BEP 29), on their TCP port number, as most public
    /// clients do; leechers then dial them over uTP first (add
    /// `--leecher-arg=--utp=off` to keep the leechers on TCP).
    #[arg(long)]
    pub utp: bool,
    /// Threads serving the swarm's peers (the leechers are processes of their own).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub swarm_threads: u64,
}

#[cfg(feature = "swarm")]
fn parse_link_duration(value: &str) -> Result<Duration, String> {
    torrent_actors::swarm::link::parse_duration(value).map_err(|e| e.to_string())
}

#[cfg(feature = "swarm")]
fn parse_link_rate(value: &str) -> Result<u64, String> {
    torrent_actors::swarm::link::parse_rate(value).map_err(|e| e.to_string())
}

#[cfg(feature = "swarm")]
fn parse_link_loss(value: &str) -> Result<u32, String> {
    torrent_actors::swarm::link::parse_loss(value).map_err(|e| e.to_string())
}

#[cfg(feature = "swarm")]
/// `--profile`: the mix, or every peer playing one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileChoice {
    Mix,
    Only(Profile),
}

#[cfg(feature = "swarm")]
fn parse_profile(value: &str) -> Result<ProfileChoice, String> {
    if value == "mix" {
        return Ok(ProfileChoice::Mix);
    }
    Profile::from_name(value).map(ProfileChoice::Only).ok_or_else(|| {
        format!("{value:?} is not a profile: mix, fast, slow, flaky, liar, silent, partial or choker")
    })
}

/// A size: bytes, or a whole number with a KiB, MiB, GiB or TiB suffix (K, M, G, T and
/// KB, MB, GB, TB are read as the same binary units).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let text = value.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a size (e.g. 1GiB, 512KiB, 1048576)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{value:?} has an unknown unit; use KiB, MiB or GiB"
            ))
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{value:?} is too large"))
}

/// `--files`: a BEP 53 style list of indices and inclusive ranges. The parser is the one
/// a magnet link's `so=` uses, whose errors speak of `so`; here they are said again in
/// the option's own words (clap names the option in front of them).
fn parse_files(value: &str) -> Result<FileSelection, String> {
    use torrent_actors::magnet::MagnetError;
    const EXAMPLE: &str = "give file indices as `info` lists them, e.g. 0,2,5-7";
    FileSelection::parse(value).map_err(|e| match e {
        MagnetError::BadFileIndex(item) => {
            format!("{item:?} is not a file index or range; {EXAMPLE}")
        }
        MagnetError::FileIndexTooLarge(item) => {
            format!("file index {item} is too large; {EXAMPLE}")
        }
        MagnetError::ReversedRange { first, last } => {
            format!("the range {first}-{last} ends before it starts; write it as {last}-{first}")
        }
        other => format!("{other}; {EXAMPLE}"),
    })
}

/// `--trace` and its bounds, for `get` and `seed`.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Record a message trace (which actor handled what, when, and sampled blocks'
    /// chains) and write it here at exit, as Chrome trace-event JSON (Perfetto).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// At most this many trace events are kept (the oldest go first).
    #[arg(long, value_name = "N", default_value_t = torrent_actors::engine::trace::DEFAULT_TRACE_LIMIT)]
    pub trace_limit: usize,
    /// Trace every Nth block's chain (handling is always traced).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub trace_sample: u64,
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
    /// Message stream encryption: `prefer` dials encrypted, falls back to plaintext, and
    /// accepts both; `require` dials and accepts encrypted (RC4) connections only; `off`
    /// dials plaintext and refuses encrypted ones.
    #[arg(long, default_value = "prefer", value_name = "prefer|require|off")]
    pub encryption: torrent_actors::wire::mse::Encryption,
    /// uTP (BEP 29), on the UDP port of the same number as the TCP one: `on` listens on
    /// both and dials uTP first, TCP when the peer does not answer uTP; `off` is TCP
    /// only; `only` is uTP only.
    #[arg(long, default_value = "on", value_name = "on|off|only")]
    pub utp: torrent_actors::engine::utp::UtpMode,
    /// Give up on a peer that does not complete its TCP connection, or then its
    /// handshake, within this many seconds each.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout: u64,
    /// Drop a peer that leaves our requests unanswered this many seconds (its blocks go
    /// to other peers).
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Memory for pieces requested but not yet verified, in MiB.
    #[arg(long, default_value_t = 12, value_name = "MIB")]
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
    /// Threads for peer connections and torrents' bookkeeping (default: one per core);
    /// hashing and disk work have threads of their own, shared by every torrent.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
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
    /// The DHT's UDP port (default: the number after --port, which uTP takes on UDP; the
    /// same number as --port with --utp off).
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

/// A seeding ratio: a finite number of at least 0.
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{text:?} is not a ratio (a number of at least 0, e.g. 1.5)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::peer_address;

    #[cfg(feature = "swarm")]
    #[test]
    fn sizes_take_binary_suffixes() {
        use super::parse_size;
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("3PiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

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
