//! `torrent-actors get` and `seed`: the command-line front end of the engine. It validates the
//! inputs, starts one torrent, shows progress, decides when seeding is over, and turns the
//! engine's events into an exit code. No download logic lives here.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::oneshot;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use torrent_actors::engine::connection::ConnectTimeouts;
use torrent_actors::engine::coordinator::{Coordinator, EngineConfig, TorrentParams};
use torrent_actors::engine::dht::{Bootstrap, BootstrapSource, Dht, DhtConfig};
use torrent_actors::engine::jail::{Access, Jail};
use torrent_actors::engine::messages::{
    DhtLinks, FailureKind, Phase, Progress, Shutdown, TorrentEvent,
};
use torrent_actors::engine::metadata::{MagnetParams, MetadataFetcher};
use torrent_actors::engine::metrics::Metrics;
use torrent_actors::engine::selection::check_selection;
use torrent_actors::engine::storage::SideFiles;
use torrent_actors::engine::stream::StreamSource;
use torrent_actors::engine::threads::{Threads, ThreadsConfig};
use torrent_actors::engine::tracker::{
    status::next_announce_in, TrackerState, TrackerStatus, TrackerTimeouts,
};
use torrent_actors::magnet::{FileSelection, Magnet};
use torrent_actors::metainfo::Metainfo;
use torrent_actors::procstats;
use torrent_actors::stats::StatsRecord;
use torrent_actors::terminal::printable;
use torrent_actors::PeerId;

use crate::progress::{self, RateMeter, StartState};
use crate::{exit, logging, Failure};

/// What `get` or `seed` was asked to do, validated.
pub struct GetArgs {
    pub torrent: PathBuf,
    pub output: PathBuf,
    pub listen: SocketAddr,
    pub max_peers: usize,
    pub upload_slots: usize,
    pub upload_limit: u64,
    pub download_limit: u64,
    pub peers: Vec<SocketAddr>,
    pub peer_timeout: Duration,
    pub request_timeout: Duration,
    pub handshake_timeout: Duration,
    /// `--encryption`.
    pub encryption: torrent_actors::wire::mse::Encryption,
    /// `--utp`.
    pub utp: torrent_actors::engine::utp::UtpMode,
    pub max_in_progress_bytes: u64,
    pub max_pending_bytes: u64,
    pub write_delay: Duration,
    /// Trackers' time limits: the defaults, unless the hidden test options say otherwise.
    pub tracker: TrackerTimeouts,
    pub fsync: bool,
    pub verbosity: u8,
    /// `--stats-every`: a statistics line on stderr this often.
    pub stats_every: Option<Duration>,
    /// `--stats-file`: statistics as JSON lines.
    pub stats_file: Option<PathBuf>,
    pub pex: bool,
    /// Protocol threads (`--threads`); 0 for one per core.
    pub threads: usize,
    /// The DHT's bootstrap nodes and UDP port, unless `--no-dht`.
    pub dht: Option<(Bootstrap, u16)>,
    pub mode: Mode,
    /// `get --files`: only these files (BEP 53 indices); `None` for every file.
    pub selection: Option<FileSelection>,
    /// `get --sequential`: pieces in file order, each file's ends first.
    pub sequential: bool,
    /// `get --stream --listen ADDR`: serve the files over HTTP there while downloading.
    pub stream: Option<SocketAddr>,
    /// Whether a stream's reads make their pieces time-critical (off only to measure
    /// what that is worth: `--no-stream-deadlines`).
    pub stream_deadlines: bool,
}

/// Whether the run ends at completion, seeds for a while after it, or only seeds.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `get`: download, then seed if `seed` is given.
    Download { seed: Option<SeedLimits> },
    /// `seed`: check the data and serve it until stopped.
    Seed {
        /// `--fetch-missing`: a folder holding none of the data is downloaded into rather
        /// than refused.
        fetch_missing: bool,
    },
}

/// When `get --seed` stops seeding; with neither limit, it seeds until stopped.
#[derive(Debug, Clone, Copy)]
pub struct SeedLimits {
    /// Uploaded bytes over the torrent's size.
    pub ratio: Option<f64>,
    /// Time spent seeding.
    pub time: Option<Duration>,
}

impl GetArgs {
    /// Resolves where the DHT bootstraps from, once, at the edge: an unusable list is a
    /// usage error before anything starts.
    pub fn with_dht(mut self, dht: Option<(Option<String>, u16)>) -> Result<Self, Failure> {
        if let Some((cli, port)) = dht {
            let bootstrap = Bootstrap::from_cli_and_env(cli.as_deref()).map_err(|e| Failure {
                code: exit::USAGE,
                error: anyhow::anyhow!("{e}"),
            })?;
            self.dht = Some((bootstrap, port));
        }
        Ok(self)
    }

    pub fn new(engine: crate::cli::EngineArgs, output: PathBuf, mode: Mode) -> Self {
        let tracker = tracker_timeouts(&engine);
        Self {
            torrent: engine.torrent,
            output,
            listen: SocketAddr::new(engine.bind, engine.port),
            max_peers: engine.max_peers,
            upload_slots: engine.upload_slots,
            upload_limit: engine.upload_limit * 1024,
            download_limit: engine.download_limit * 1024,
            peers: engine.peers,
            peer_timeout: Duration::from_secs(engine.peer_timeout),
            request_timeout: Duration::from_secs(engine.request_timeout),
            handshake_timeout: Duration::from_secs(engine.handshake_timeout),
            encryption: engine.encryption,
            utp: engine.utp,
            max_in_progress_bytes: engine.max_in_progress_mib << 20,
            max_pending_bytes: engine.max_pending_mib << 20,
            write_delay: Duration::from_millis(engine.debug_write_delay_ms),
            tracker,
            fsync: engine.fsync,
            verbosity: engine.verbose,
            stats_every: engine.stats_every,
            stats_file: engine.stats_file,
            pex: !engine.no_pex,
            threads: engine.threads.map_or(0, usize::from),
            dht: None,
            mode,
            selection: None,
            sequential: false,
            stream: None,
            stream_deadlines: true,
        }
    }
}

/// The trackers' time limits: BEP 15 and the engine's defaults, or what the hidden
/// `--debug-tracker-timeout-ms` and `--debug-udp-tracker-attempts` ask for.
fn tracker_timeouts(engine: &crate::cli::EngineArgs) -> TrackerTimeouts {
    let mut limits = TrackerTimeouts::default();
    if let Some(ms) = engine.debug_tracker_timeout_ms {
        limits.request = Duration::from_millis(ms);
        limits.udp_first_wait = Duration::from_millis(ms);
    }
    if let Some(attempts) = engine.debug_udp_tracker_attempts {
        limits.udp_attempts = attempts;
    }
    limits
}

/// How the download ended.
enum Outcome {
    /// The download completed; with the time spent fetching (after the start-up check).
    Completed(Progress, Duration),
    /// Seeding ended: stopped by the user (`seed`) or a limit reached (`get --seed`).
    SeedingDone(Progress),
    Failed(FailureKind, String),
    Interrupted,
    NoPeers,
    /// `seed`: the check found no good piece under the folder (no `--fetch-missing`).
    NothingToSeed,
    /// `seed`: the torrent could not listen for peers, so nobody could reach the seeder.
    NoPort,
}

/// What to download: a `.torrent` already read, or a magnet link whose metadata comes
/// from peers.
enum Source {
    Torrent(Metainfo),
    Magnet(Magnet),
}

/// The argument as a magnet link, if it looks like one (`magnet:` in any case); else it
/// is the path of a `.torrent`.
pub(crate) fn magnet_text(arg: &Path) -> Option<&str> {
    arg.to_str().filter(|t| {
        t.get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
    })
}

impl Source {
    /// Reads the argument: a magnet link if it looks like one, else a `.torrent` path.
    fn read(arg: &Path) -> Result<Source, Failure> {
        if let Some(text) = magnet_text(arg) {
            return Magnet::parse(text)
                .map(Source::Magnet)
                .map_err(|e| Failure {
                    code: exit::INVALID_TORRENT,
                    error: anyhow::anyhow!("invalid magnet link: {e}"),
                });
        }
        let bytes = crate::read_torrent_file(arg)?;
        let metainfo = Metainfo::from_bytes(&bytes).map_err(|e| Failure {
            code: exit::INVALID_TORRENT,
            error: anyhow::anyhow!("invalid torrent {}: {e}", arg.display()),
        })?;
        Ok(Source::Torrent(metainfo))
    }

    /// The name to show until the metadata says better.
    fn name(&self) -> String {
        match self {
            Source::Torrent(m) => m.info.name.clone(),
            Source::Magnet(m) => m
                .display_name
                .clone()
                .unwrap_or_else(|| m.info_hash.to_hex()),
        }
    }

    /// The size, unknown (0) for a magnet link until its metadata arrives.
    fn total_bytes(&self) -> u64 {
        match self {
            Source::Torrent(m) => m.info.layout.total_length(),
            Source::Magnet(_) => 0,
        }
    }
}

pub fn run(args: GetArgs) -> Result<(), Failure> {
    let source = Source::read(&args.torrent)?;
    let Prepared {
        peer_socket,
        stream_socket,
        lock: _lock,
    } = prepare(&args, &source)?;
    let log = logging::stderr_logger(args.verbosity);
    let (outcome, name, threads) =
        actix::System::new().block_on(download(source, &args, log, peer_socket, stream_socket));
    // Every actor is done; their threads end here, not at the process's exit.
    threads.join();
    conclude(outcome, &name, &args)
}

/// What the checks before the start hold for the run: the sockets bound (so a port in
/// use ends the run before it starts) and the output folder's lock.
struct Prepared {
    /// The peer port, taken by the Coordinator.
    peer_socket: std::net::TcpListener,
    /// `--stream`'s port, taken by the stream server.
    stream_socket: Option<std::net::TcpListener>,
    /// Held until the process ends; the kernel lets it go however the process ends.
    lock: OutputLock,
}

/// Every mistake that can be found before the engine starts, each failing with its own
/// exit code: a magnet to seed, a bad `--files`, ports in use, `seed` of a folder
/// without the data, an unwritable folder, another run on the same files.
fn prepare(args: &GetArgs, source: &Source) -> Result<Prepared, Failure> {
    if matches!(source, Source::Magnet(_)) && matches!(args.mode, Mode::Seed { .. }) {
        return Err(Failure {
            code: exit::INVALID_TORRENT,
            error: anyhow::anyhow!(
                "seed needs a .torrent file; a magnet link has no data to check"
            ),
        });
    }
    if let (Some(selection), Source::Torrent(metainfo)) = (&args.selection, source) {
        check_selection(&metainfo.info.layout, selection).map_err(|e| Failure {
            code: exit::USAGE,
            error: anyhow::anyhow!("--files {selection}: {e}"),
        })?;
    }
    // Bound now and kept: the Coordinator takes this very socket, so no other process
    // can take the port in between.
    let peer_socket = bind_peer_port(args.listen)?;
    if torrent_actors::fault::injected("pause-after-port-check") {
        eprintln!("fault: pause-after-port-check");
        std::thread::sleep(Duration::from_secs(3));
    }
    let stream_socket = match args.stream {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| Failure {
            code: exit::CANNOT_LISTEN,
            error: anyhow::anyhow!("cannot listen for --stream on {addr}: {e}"),
        })?),
        None => None,
    };
    if let (
        Mode::Seed {
            fetch_missing: false,
        },
        Source::Torrent(metainfo),
    ) = (args.mode, source)
    {
        check_seed_data(&args.output, metainfo)?;
    }
    check_writable(&args.output)?;
    let lock = lock_output(&args.output, source)?;
    Ok(Prepared {
        peer_socket,
        stream_socket,
        lock,
    })
}

/// The run's last word: the summary line, or the failure with its exit code and one
/// piece of advice.
fn conclude(outcome: Outcome, name: &str, args: &GetArgs) -> Result<(), Failure> {
    let fail = |code, error| Err(Failure { code, error });
    match outcome {
        Outcome::Completed(p, fetching) => {
            outln!(
                "{}",
                progress::summary(name, p.total_bytes, p.downloaded_this_run, fetching)
            );
            Ok(())
        }
        Outcome::SeedingDone(p) => {
            outln!(
                "stopped seeding {name}: uploaded {} (ratio {:.2})",
                HumanBytes(p.uploaded),
                p.uploaded as f64 / p.total_bytes.max(1) as f64
            );
            Ok(())
        }
        Outcome::Failed(FailureKind::DiskFull, message) => fail(
            exit::DISK_FULL,
            anyhow::anyhow!(
                "{message}; what was verified is kept, free some space and run the same \
                 command to continue"
            ),
        ),
        Outcome::Failed(FailureKind::Storage, message) => {
            fail(exit::OUTPUT_NOT_WRITABLE, anyhow::anyhow!("{message}"))
        }
        Outcome::Failed(FailureKind::InvalidTorrent, message) => {
            fail(exit::INVALID_TORRENT, anyhow::anyhow!("{message}"))
        }
        Outcome::Interrupted => fail(
            exit::INTERRUPTED,
            anyhow::anyhow!("interrupted; progress saved, run the same command to resume"),
        ),
        Outcome::NothingToSeed => fail(
            exit::NO_DATA,
            anyhow::anyhow!(
                "nothing to seed: no piece of {name} under {} is good; point --dir at the \
                 folder that holds it, or add --fetch-missing to download it",
                args.output.display()
            ),
        ),
        Outcome::NoPort => fail(
            exit::CANNOT_LISTEN,
            anyhow::anyhow!(
                "cannot listen for peers on {}, so no peer could reach this seeder; choose \
                 another --port (0 picks a free one)",
                args.listen
            ),
        ),
        Outcome::NoPeers => fail(
            exit::NO_PEERS,
            anyhow::anyhow!(
                "no peer reachable for {} s; check the trackers, or add peers with --peer",
                args.peer_timeout.as_secs()
            ),
        ),
    }
}

/// The peer port's listening socket, or a failure with its own exit code if it cannot be
/// listened on (in use, or an address this machine does not have): a `get` or `seed`
/// that went on without it would announce a port nobody can reach. The torrent's
/// Coordinator takes this socket (`EngineConfig::bound_listener`); uTP binds the same
/// port beside it.
fn bind_peer_port(addr: SocketAddr) -> Result<std::net::TcpListener, Failure> {
    std::net::TcpListener::bind(addr).map_err(|e| Failure {
        code: exit::CANNOT_LISTEN,
        error: anyhow::anyhow!(
            "cannot listen for peers on {addr}: {e}; {}",
            listen_advice(&e)
        ),
    })
}

/// The one thing to do about a port that cannot be bound.
fn listen_advice(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrNotAvailable => {
            "--bind takes an address of this machine (0.0.0.0 for all of them)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges; choose another --port"
        }
        _ => "choose another --port (0 picks a free one)",
    }
}

/// `seed` without `--fetch-missing`: refuses, before anything is created, a folder where
/// none of the torrent's files exists (a mistyped `--dir` would otherwise become a full
/// download). A folder with some of them goes on: the check then says how much is good.
fn check_seed_data(dir: &Path, metainfo: &Metainfo) -> Result<(), Failure> {
    let files = metainfo.info.layout.files();
    let with_data: Vec<_> = files
        .iter()
        .filter(|f| !f.padding && f.length > 0)
        .collect();
    // Whatever is at a file's path counts, a link included: the engine refuses links with
    // its own message, which says more than "no data" would.
    let found = with_data
        .iter()
        .any(|f| std::fs::symlink_metadata(f.path.under(dir)).is_ok());
    if with_data.is_empty() || found {
        return Ok(());
    }
    let missing = match with_data.as_slice() {
        [one] => format!("no {}", printable(&one.path.display())),
        many => format!(
            "none of the {} files of {}",
            many.len(),
            printable(&metainfo.info.name)
        ),
    };
    Err(Failure {
        code: exit::NO_DATA,
        error: anyhow::anyhow!(
            "nothing to seed: {missing} under {}; point --dir at the folder that holds it, \
             or add --fetch-missing to download it",
            dir.display()
        ),
    })
}

/// The locks that keep a second `get` or `seed` off the same torrent in the same folder,
/// held for the run: exclusive advisory locks (`flock`) on files beside the resume
/// file. The kernel drops a lock when the process ends, however it ends, so a crash
/// leaves no stale lock (only an empty file, which the next run takes); a run that ends
/// normally also removes its files, so the folder holds the download and its resume
/// file, nothing more.
struct OutputLock {
    jail: Jail,
    /// Each lock file's name in the folder, and the open file that holds its lock.
    held: Vec<(String, std::fs::File)>,
}

impl Drop for OutputLock {
    /// The names go while the locks are still held (the files close after this body):
    /// a process that opens a name meanwhile finds it gone after locking, and starts over.
    fn drop(&mut self) {
        for (name, _) in &self.held {
            let _ = self.jail.remove_file(&[name]);
        }
    }
}

/// How many times a lock file that vanished while being locked is opened again.
const LOCK_ATTEMPTS: usize = 3;

/// Takes the locks: `.NAME.lock`, named like the resume file (two torrents of one name
/// would write the same files), and `.INFOHASH.lock` (the same torrent from a magnet
/// link, whose name comes only with its metadata, takes this one alone). Opened beneath
/// the folder's handle, never through a link, like every file of the download.
fn lock_output(dir: &Path, source: &Source) -> Result<OutputLock, Failure> {
    let by_hash = |hash: &torrent_actors::InfoHash| format!(".{}.lock", hash.to_hex());
    let mut names = match source {
        Source::Torrent(m) => {
            let resume = SideFiles::new(&m.info.layout, &m.info_hash).resume;
            let base = resume.strip_suffix(".resume.json").unwrap_or(&resume);
            vec![format!("{base}.lock"), by_hash(&m.info_hash)]
        }
        Source::Magnet(m) => vec![by_hash(&m.info_hash)],
    };
    // A name too long for the side files gives the info-hash's name already; a second
    // lock on the same file from this process would refuse this process.
    names.dedup();
    let jail = Jail::open(dir).map_err(|e| Failure {
        code: exit::OUTPUT_NOT_WRITABLE,
        error: anyhow::anyhow!("cannot open the folder {}: {e}", dir.display()),
    })?;
    let mut lock = OutputLock {
        jail,
        held: Vec::new(),
    };
    for name in names {
        let file = lock_file(&lock.jail, &name, dir, source)?;
        lock.held.push((name, file));
    }
    Ok(lock)
}

/// Creates the file `name` in the folder if need be and locks it, or says who holds it.
/// A process that ended meanwhile may have removed the name after this one opened it:
/// the lock is good only on the file the name still names.
fn lock_file(
    jail: &Jail,
    name: &str,
    dir: &Path,
    source: &Source,
) -> Result<std::fs::File, Failure> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(name);
    let failed = |what: &str, e: &dyn std::fmt::Display| Failure {
        code: exit::OUTPUT_NOT_WRITABLE,
        error: anyhow::anyhow!("cannot {what} the lock file {}: {e}", path.display()),
    };
    for _ in 0..LOCK_ATTEMPTS {
        let file = jail
            .open_file(&[name], Access::Create)
            .map_err(|e| failed("create", &e))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(Failure {
                    code: exit::ALREADY_RUNNING,
                    error: anyhow::anyhow!(
                        "another torrent-actors process is already working on {} in {} (it \
                         holds {}); wait for it to end, or use another folder",
                        printable(&source.name()),
                        dir.display(),
                        path.display()
                    ),
                })
            }
            Err(e) => return Err(failed("lock", &e)),
        }
        let locked = file.metadata().map_err(|e| failed("read", &e))?;
        let named = jail.metadata(&[name]).map_err(|e| failed("read", &e))?;
        if named.is_some_and(|m| m.ino() == locked.ino() && m.dev() == locked.dev()) {
            return Ok(file);
        }
    }
    Err(failed("keep", &"it was removed each time it was locked"))
}

/// Fails early, with its own exit code, if files cannot be created in the output folder.
fn check_writable(dir: &Path) -> Result<(), Failure> {
    let not_writable = |e: std::io::Error| Failure {
        code: exit::OUTPUT_NOT_WRITABLE,
        error: anyhow::anyhow!("output folder {} is not writable: {e}", dir.display()),
    };
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    tempfile::tempfile_in(dir).map(drop).map_err(not_writable)
}

async fn download(
    source: Source,
    args: &GetArgs,
    log: slog::Logger,
    peer_socket: std::net::TcpListener,
    stream_socket: Option<std::net::TcpListener>,
) -> (Outcome, String, Arc<Threads>) {
    let mut config = engine_config(args, peer_socket);
    let threads = Threads::start(ThreadsConfig::for_process(args.threads), &config.metrics);
    config.threads = Some(threads.clone());
    let (done_tx, done_rx) = oneshot::channel();
    let stats = Stats::new(args, config.metrics.clone(), &log);
    let metrics = config.metrics.clone();
    let mut console = Console::new(
        source.name(),
        source.total_bytes(),
        args.peer_timeout,
        args.mode,
        stats,
        done_tx,
    );
    console.dir = args.output.clone();
    console.stream_socket = stream_socket;
    if let Source::Torrent(metainfo) = &source {
        console.learn_layout(metainfo);
    }
    let console = console.start();
    let torrent = start_torrent(source, args, config, &console, log);
    let (outcome, name) = wait_for_end(done_rx, &console, args.mode).await;
    // Whatever happened, stop cleanly: resume file, `stopped` announces, files closed.
    // Streams first, so no read waits on a torrent that is stopping.
    let _ = tokio::time::timeout(Duration::from_secs(4), console.send(StopStreams)).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), torrent.send(Shutdown)).await;
    let (last_tx, last_rx) = oneshot::channel();
    console.do_send(FinalStats(last_tx));
    let _ = tokio::time::timeout(Duration::from_secs(2), last_rx).await;
    if args.verbosity >= 1 {
        eprintln!("actors:\n{}", metrics.snapshot().table());
    }
    System::current().stop();
    (outcome, name, threads)
}

/// The engine's settings from the command line's, with the peer port bound already.
fn engine_config(args: &GetArgs, peer_socket: std::net::TcpListener) -> EngineConfig {
    let mut config = EngineConfig::new(our_peer_id(), args.listen);
    config.max_peers = args.max_peers;
    config.upload_slots = args.upload_slots;
    config.upload_limit = args.upload_limit;
    config.download_limit = args.download_limit;
    config.initial_peers = args.peers.clone();
    config.max_in_progress_bytes = args.max_in_progress_bytes;
    config.max_pending_bytes = args.max_pending_bytes;
    config.write_delay = args.write_delay;
    config.tracker = args.tracker;
    config.sync_on_close = args.fsync;
    config.pex = args.pex;
    config.peer.request_timeout = args.request_timeout;
    config.connect = ConnectTimeouts {
        connect: args.handshake_timeout,
        handshake: args.handshake_timeout,
    };
    config.encryption = args.encryption;
    config.utp = args.utp;
    config.sequential = args.sequential;
    config.stream_deadlines = args.stream_deadlines;
    // With uTP only, the TCP socket was the port check alone, and is let go here.
    config.bound_listener = args
        .utp
        .uses_tcp()
        .then(|| torrent_actors::engine::connection::BoundListener::new(peer_socket));
    config
}

/// Starts the torrent's tree (a `.torrent`'s Coordinator, or a magnet's
/// MetadataFetcher, which starts the Coordinator once the metadata is in), reporting to
/// `console`; returns where `Shutdown` goes.
fn start_torrent(
    source: Source,
    args: &GetArgs,
    config: EngineConfig,
    console: &Addr<Console>,
    log: slog::Logger,
) -> Recipient<Shutdown> {
    let dht = start_dht(args.dht.clone(), args.listen, &log);
    match source {
        Source::Torrent(metainfo) => {
            let layout = Arc::new(metainfo.info.layout.clone());
            let coordinator = Coordinator::start(TorrentParams {
                selection: args.selection.clone(),
                high_priority: Vec::new(),
                dht,
                metainfo,
                download_dir: args.output.clone(),
                config,
                events: console.clone().recipient(),
                log,
            });
            // As a magnet's fetcher says once it has started the Coordinator.
            console.do_send(TorrentEvent::Running {
                source: StreamSource {
                    read: coordinator.clone().recipient(),
                    close: coordinator.clone().recipient(),
                    layout,
                },
            });
            coordinator.recipient()
        }
        Source::Magnet(magnet) => MetadataFetcher::start(MagnetParams {
            magnet,
            download_dir: args.output.clone(),
            config,
            selection: args.selection.clone(),
            dht,
            pex: args.pex,
            hand_over: true,
            events: console.clone().recipient(),
            log,
        })
        .recipient(),
    }
}

/// Waits for the Console's outcome, Ctrl-C or SIGTERM; the outcome and the torrent's
/// name. Stopping a seeder (`seed`, or a `get --seed` whose download is complete) is how
/// it normally ends; stopping a download is an interruption.
async fn wait_for_end(
    done: oneshot::Receiver<(Outcome, String)>,
    console: &Addr<Console>,
    mode: Mode,
) -> (Outcome, String) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    let (outcome, name) = tokio::select! {
        outcome = done => outcome.unwrap_or((Outcome::Interrupted, String::new())),
        _ = tokio::signal::ctrl_c() => (Outcome::Interrupted, String::new()),
        _ = terminate => (Outcome::Interrupted, String::new()),
    };
    if !matches!(outcome, Outcome::Interrupted) {
        return (outcome, name);
    }
    let (stats_tx, stats_rx) = oneshot::channel();
    console.do_send(Report(stats_tx));
    let (last, name) = stats_rx.await.unwrap_or_default();
    if matches!(mode, Mode::Seed { .. }) || last.phase == Phase::Complete {
        (Outcome::SeedingDone(last), name)
    } else {
        (Outcome::Interrupted, name)
    }
}

/// Starts the process's DHT node, if it is on. A node that cannot start (its port
/// taken) is logged and the download goes on with trackers and peer exchange.
pub(crate) fn start_dht(
    dht: Option<(Bootstrap, u16)>,
    listen: SocketAddr,
    log: &slog::Logger,
) -> Option<DhtLinks> {
    let (bootstrap, port) = dht?;
    let bind = match listen.ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
    };
    let mut config = DhtConfig::new(bind, port, bootstrap.clone());
    // The routing table is kept between runs only on the real DHT: a run told where to
    // bootstrap (a test, a private network) must not wander off to saved public nodes.
    if bootstrap.source() == BootstrapSource::PublicRouters {
        config.state_file = client_state_dir().map(|d| d.join("dht-nodes.json"));
    }
    slog::info!(log, "dht"; "bootstrap" => %bootstrap.source(), "nodes" => bootstrap.nodes().join(","));
    match Dht::start_with_port(config, log.clone()) {
        Ok((dht, port)) => Some(Dht::links(&dht, port)),
        Err(e) => {
            slog::warn!(log, "dht not started"; "error" => %e);
            None
        }
    }
}

/// This client's state folder: `$XDG_STATE_HOME/torrent-actors`, or
/// `~/.local/state/torrent-actors`; `None` with neither variable set. The DHT's node file
/// and `serve`'s state live under it.
pub(crate) fn client_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))?;
    Some(base.join("torrent-actors"))
}

/// An Azureus-style peer id: client tag and version, then random bytes.
pub(crate) fn our_peer_id() -> PeerId {
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(b"-TA0100-");
    for b in &mut id[8..] {
        *b = rand::random::<u8>() % 62;
        *b = match *b {
            n @ 0..=9 => b'0' + n,
            n @ 10..=35 => b'a' + n - 10,
            n => b'A' + n - 36,
        };
    }
    PeerId(id)
}

/// Receives the torrent's events, shows them, and decides when the run is over.
struct Console {
    name: String,
    total: u64,
    bar: Option<ProgressBar>,
    last_line: Instant,
    peer_timeout: Duration,
    mode: Mode,
    /// Since when no peer has been connected while downloading.
    alone_since: Option<Instant>,
    /// When the download completed and seeding began.
    seeding_since: Option<Instant>,
    /// The latest progress, for the final report.
    last: Progress,
    /// Whether the first progress after the start-up check was judged (`seed` refuses a
    /// folder with no good piece, and warns about one with some) and the start line said.
    start_judged: bool,
    /// The download folder, where the resume file is looked for.
    dir: PathBuf,
    /// The piece length, once the torrent is known, for the start line's piece counts.
    piece_length: Option<u64>,
    /// Whether a resume file was there before the torrent started.
    resume_existed: bool,
    /// This run's download rate, from its own bytes only.
    meter: RateMeter,
    /// The last moment known to be before fetching began (the Console's start, then each
    /// progress of the metadata or checking phase), for the summary's average: at most
    /// one progress interval early.
    fetch_started: Instant,
    /// Progress events shown, to turn the metadata spinner.
    ticks: usize,
    /// `--stats-every` and `--stats-file`.
    stats: Stats,
    /// Per tracker URL, what its last printed line said (state and message, not counts
    /// or times), so a tracker that keeps failing the same way is shown once.
    tracker_lines: HashMap<String, String>,
    /// `--stream`: the socket to serve the files on, bound at start, until the
    /// Coordinator runs (at once for a `.torrent`, after the metadata for a magnet).
    stream_socket: Option<std::net::TcpListener>,
    /// The stream server, once started; stopped before the torrent is.
    stream_server: Option<actix_web::dev::ServerHandle>,
    done: Option<oneshot::Sender<(Outcome, String)>>,
}

/// Periodic statistics: progress, the process's memory and files, and the actors'
/// metrics, as lines on stderr and JSON lines in a file.
struct Stats {
    every: Option<Duration>,
    file: Option<std::fs::File>,
    metrics: Arc<Metrics>,
    started: Instant,
    last_line: Option<Instant>,
    last_json: Option<Instant>,
}

impl Stats {
    fn new(args: &GetArgs, metrics: Arc<Metrics>, log: &slog::Logger) -> Self {
        let file = args.stats_file.as_ref().and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| slog::warn!(log, "cannot write the stats file"; "path" => %path.display(), "error" => %e))
                .ok()
        });
        Self {
            every: args.stats_every,
            file,
            metrics,
            started: Instant::now(),
            last_line: None,
            last_json: None,
        }
    }

    /// Writes whatever is due for `p`; `last` forces a JSON record.
    fn tick(&mut self, p: &Progress, bar: Option<&ProgressBar>, last: bool) {
        self.tick_or_record(p, bar, last, false);
    }

    /// As `tick`, and with `record` a JSON record whether due or not (the moment of
    /// completion, whose peers the final record, written after they left, no longer has).
    fn tick_or_record(
        &mut self,
        p: &Progress,
        bar: Option<&ProgressBar>,
        last: bool,
        record: bool,
    ) {
        let due = |at: Option<Instant>, every: Duration| at.is_none_or(|t| t.elapsed() >= every);
        let line_due = self.every.is_some_and(|e| due(self.last_line, e)) && !last;
        let json_due = self.file.is_some()
            && (last
                || record
                || due(self.last_json, self.every.unwrap_or(Duration::from_secs(1))));
        if !line_due && !json_due {
            return;
        }
        let snapshot = self.metrics.snapshot();
        let process = procstats::current();
        if line_due {
            self.last_line = Some(Instant::now());
            let mut text = format!(
                "stats {:.0}s: {} of {} verified, {} peers, {}/s, {} received, {} up, {} hash failures, {} banned",
                self.started.elapsed().as_secs_f64(),
                HumanBytes(p.verified_bytes),
                HumanBytes(p.total_bytes),
                p.peers,
                HumanBytes(p.rate as u64),
                HumanBytes(p.received),
                HumanBytes(p.uploaded),
                p.hash_failures,
                p.banned,
            );
            if let Some(proc) = process {
                text.push_str(&format!(
                    ", rss {} (peak {}), {} open files",
                    HumanBytes(proc.rss_bytes),
                    HumanBytes(proc.peak_rss_bytes),
                    proc.open_files
                ));
            }
            for line in snapshot.summary_lines() {
                text.push_str("\n  ");
                text.push_str(&line);
            }
            match bar {
                Some(bar) => bar.suspend(|| eprintln!("{text}")),
                None => eprintln!("{text}"),
            }
        }
        if json_due {
            self.last_json = Some(Instant::now());
            let record = StatsRecord {
                t: self.started.elapsed().as_secs_f64(),
                phase: p.phase.into(),
                total_bytes: p.total_bytes,
                verified_bytes: p.verified_bytes,
                downloaded_this_run: p.downloaded_this_run,
                received: p.received,
                uploaded: p.uploaded,
                peers: p.peers as u64,
                hash_failures: p.hash_failures,
                banned: p.banned as u64,
                rate: p.rate,
                process,
                actors: &snapshot,
                last,
            };
            if let (Some(file), Ok(mut json)) = (&mut self.file, serde_json::to_vec(&record)) {
                use std::io::Write;
                json.push(b'\n');
                let _ = file.write_all(&json);
            }
        }
    }
}

/// get → Console: write the last statistics record, then reply.
#[derive(Message)]
#[rtype(result = "()")]
struct FinalStats(oneshot::Sender<()>);

/// Stop serving streams (at the end of the run, before the torrent stops, so no read
/// waits on a torrent that is stopping).
#[derive(Message)]
#[rtype(result = "()")]
struct StopStreams;

impl Handler<StopStreams> for Console {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopStreams, _: &mut Context<Self>) -> Self::Result {
        let server = self.stream_server.take();
        Box::pin(async move {
            if let Some(server) = server {
                server.stop(false).await;
            }
        })
    }
}

impl Handler<FinalStats> for Console {
    type Result = ();

    fn handle(&mut self, msg: FinalStats, _: &mut Context<Self>) {
        let last = self.last.clone();
        self.stats.tick(&last, None, true);
        let _ = msg.0.send(());
    }
}

impl Console {
    fn new(
        name: String,
        total: u64,
        peer_timeout: Duration,
        mode: Mode,
        stats: Stats,
        done: oneshot::Sender<(Outcome, String)>,
    ) -> Self {
        // A bar on a terminal; plain lines every few seconds when stdout is a file or pipe.
        // The whole line is drawn by `progress::fit`, to the terminal's width; the bar
        // only redraws it in place and keeps other output above it.
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            name: printable(&name).into_owned(),
            total,
            bar,
            last_line: Instant::now(),
            peer_timeout,
            mode,
            alone_since: None,
            seeding_since: None,
            last: Progress::default(),
            start_judged: false,
            dir: PathBuf::new(),
            piece_length: None,
            resume_existed: false,
            meter: RateMeter::default(),
            fetch_started: Instant::now(),
            ticks: 0,
            stats,
            tracker_lines: HashMap::new(),
            stream_socket: None,
            stream_server: None,
            done: Some(done),
        }
    }

    /// With `--stream`, serve the files of the torrent `source` reads and print their
    /// URLs.
    fn serve_streams(&mut self, source: StreamSource) {
        let Some(socket) = self.stream_socket.take() else {
            return;
        };
        match crate::get_stream::start(socket, source) {
            Ok((handle, urls)) => {
                let lines: Vec<String> = urls
                    .into_iter()
                    .map(|(index, path, url)| format!("stream {index} {}: {url}", printable(&path)))
                    .collect();
                for line in lines {
                    match &self.bar {
                        Some(bar) => bar.println(line),
                        None => outln!("{line}"),
                    }
                }
                self.stream_server = Some(handle);
            }
            // The socket is bound already; the download goes on without streams.
            Err(e) => eprintln!("warning: cannot serve the streams: {e}"),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(done) = self.done.take() {
            let _ = done.send((outcome, self.name.clone()));
        }
    }

    /// What the torrent's layout tells the Console: the piece length, for the start line,
    /// and whether a resume file is already there (the start is then a resume).
    fn learn_layout(&mut self, metainfo: &Metainfo) {
        self.piece_length = Some(u64::from(metainfo.info.layout.piece_length()));
        self.resume_existed = torrent_actors::engine::storage::resume_path(
            &self.dir,
            &metainfo.info.layout,
            &metainfo.info_hash,
        )
        .exists();
    }

    fn show(&mut self, p: &Progress) {
        // The engine's total counts only wanted pieces (`get --files`); while fetching
        // metadata it is not known yet.
        if p.phase != Phase::Metadata {
            self.total = p.total_bytes;
        }
        let now = Instant::now();
        if matches!(p.phase, Phase::Downloading | Phase::Complete) {
            self.meter.push(now, p.downloaded_this_run);
        }
        self.ticks = self.ticks.wrapping_add(1);
        let name = short_name(&self.name);
        let parts = match p.phase {
            Phase::Metadata => progress::metadata_parts(&name, self.ticks, p.peers),
            Phase::Checking => progress::checking_parts(&name, p.checked.0, p.checked.1),
            Phase::Downloading => progress::downloading_parts(
                &name,
                p.verified_bytes,
                self.total,
                self.meter.rate(),
                p.upload_rate,
                p.peers,
                p.seeds,
            ),
            Phase::Complete => {
                progress::seeding_parts(&name, self.total, p.upload_rate, p.uploaded, p.peers)
            }
        };
        if let Some(bar) = &self.bar {
            // One column short of the width: a line that fills the last column makes
            // some terminals wrap, and the redraw would then leave a stale line behind.
            bar.set_message(progress::fit(&parts, terminal_width().saturating_sub(1)));
        } else if self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = now;
            let whole = progress::LineParts { bar: None, ..parts };
            outln!("{}", progress::fit(&whole, usize::MAX));
        }
    }

    /// Prints a line on stdout above the bar (or as it is, off a terminal).
    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => outln!("{line}"),
        }
    }

    /// Prints a tracker's new status on stderr, if it differs in substance from what was
    /// last printed about that tracker: its state and message, not its counts or times.
    fn show_tracker(&mut self, status: &TrackerStatus) {
        let Some((gist, line)) = tracker_line(status, Instant::now()) else {
            return;
        };
        if self.tracker_lines.get(&status.url) == Some(&gist) {
            return;
        }
        self.tracker_lines.insert(status.url.clone(), gist);
        // The URL and the tracker's own text are defused where they are parsed; the
        // whole line goes through the shared rule too, so an error that quotes anything
        // else a stranger sent cannot reach the terminal as it is.
        let line = printable(&line);
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Once the start-up check is over (the first progress after it, or the completion
    /// if that comes first): says what the check found, and for `seed` refuses a folder
    /// with no good piece (unless `--fetch-missing`) and warns about one with some, since
    /// the rest is then downloaded before seeding begins. Returns the outcome that ends
    /// the run, if any.
    fn judge_start(&mut self, p: &Progress) -> Option<Outcome> {
        if self.start_judged || !matches!(p.phase, Phase::Downloading | Phase::Complete) {
            return None;
        }
        self.start_judged = true;
        // What was verified before this run fetched anything: by the first progress
        // after the check some pieces may have come already, or (a small download) all.
        let found = p.verified_bytes.saturating_sub(p.downloaded_this_run);
        let total = p.total_bytes;
        let state = StartState {
            verified: found,
            total,
            piece_length: self.piece_length,
            resumed: self.resume_existed,
        };
        let refused = matches!(self.mode, Mode::Seed { fetch_missing }
            if !fetch_missing && found == 0 && total > 0);
        if refused {
            return Some(Outcome::NothingToSeed);
        }
        // A plain `get` of a complete download ends at once, and its summary says so.
        let ends_now = found >= total && matches!(self.mode, Mode::Download { seed: None });
        if let Some(line) = progress::start_line(&self.name, state).filter(|_| !ends_now) {
            self.say(&line);
        }
        if matches!(self.mode, Mode::Seed { .. }) && found > 0 && found < total {
            let line = format!(
                "warning: only {} of {}'s {} is here and good; downloading the rest from \
                 peers before seeding",
                HumanBytes(found),
                self.name,
                HumanBytes(total)
            );
            match &self.bar {
                Some(bar) => bar.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
        None
    }

    /// Whether `get --seed` has seeded enough.
    fn seeding_limit_reached(&self, p: &Progress) -> bool {
        let Mode::Download { seed: Some(limits) } = self.mode else {
            return false;
        };
        let ratio = limits
            .ratio
            .is_some_and(|r| p.uploaded as f64 >= r * self.total as f64);
        let time = limits
            .time
            .zip(self.seeding_since)
            .is_some_and(|(t, since)| since.elapsed() >= t);
        ratio || time
    }
}

/// get → Console: the latest progress and the torrent's name, for the final report.
#[derive(Message)]
#[rtype(result = "()")]
struct Report(oneshot::Sender<(Progress, String)>);

impl Handler<Report> for Console {
    type Result = ();

    fn handle(&mut self, msg: Report, _: &mut Context<Self>) {
        let _ = msg.0.send((self.last.clone(), self.name.clone()));
    }
}

impl Actor for Console {
    type Context = Context<Self>;
}

impl Handler<TorrentEvent> for Console {
    type Result = ();

    fn handle(&mut self, event: TorrentEvent, _: &mut Context<Self>) {
        match event {
            TorrentEvent::Progress(p) => self.on_progress(p),
            TorrentEvent::Completed(p) => self.on_completed(p),
            TorrentEvent::Failed(kind, message) => self.finish(Outcome::Failed(kind, message)),
            TorrentEvent::Tracker(status) => self.show_tracker(&status),
            TorrentEvent::Running { source } => self.serve_streams(source),
            TorrentEvent::MetadataReceived {
                name,
                total_bytes,
                torrent_file,
                torrent,
                ..
            } => self.on_metadata(&name, total_bytes, torrent_file, &torrent),
        }
    }
}

impl Console {
    /// Periodic progress: the line, the stats, the no-peers clock, the seeding limits.
    fn on_progress(&mut self, p: Progress) {
        if matches!(p.phase, Phase::Metadata | Phase::Checking) {
            self.fetch_started = Instant::now();
        }
        if let Some(outcome) = self.judge_start(&p) {
            return self.finish(outcome);
        }
        self.show(&p);
        self.stats.tick(&p, self.bar.as_ref(), false);
        if matches!(p.phase, Phase::Downloading | Phase::Metadata) && p.peers == 0 {
            let since = *self.alone_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.peer_timeout {
                self.finish(Outcome::NoPeers);
            }
        } else {
            self.alone_since = None;
        }
        if p.phase == Phase::Complete && self.seeding_limit_reached(&p) {
            self.finish(Outcome::SeedingDone(p.clone()));
        }
        self.last = p;
    }

    /// Every wanted piece is in: the run ends, or seeding begins.
    fn on_completed(&mut self, p: Progress) {
        if let Some(outcome) = self.judge_start(&p) {
            return self.finish(outcome);
        }
        self.stats.tick_or_record(&p, None, false, true);
        // The last stats record is written from `last`: it must show the completion, not
        // the progress half a second before it.
        self.last = p.clone();
        let seeding = matches!(
            self.mode,
            Mode::Seed { .. } | Mode::Download { seed: Some(_) }
        );
        if !seeding {
            let fetching = self.fetch_started.elapsed();
            return self.finish(Outcome::Completed(p, fetching));
        }
        if let Some(bar) = &self.bar {
            bar.suspend(|| {});
        }
        // A seeder nobody can reach is no seeder. The port was bound at start and handed
        // to the Coordinator; this is the last guard (uTP only, whose UDP socket is bound
        // by the Coordinator itself).
        let Some(listen) = p.listen else {
            return self.finish(Outcome::NoPort);
        };
        outln!("seeding {} on {listen}", self.name);
        self.seeding_since = Some(Instant::now());
        if self.seeding_limit_reached(&p) {
            self.finish(Outcome::SeedingDone(p.clone()));
        }
        self.last = p;
    }

    /// A magnet's metadata is in: the name, the size and where the `.torrent` went.
    fn on_metadata(
        &mut self,
        name: &str,
        total_bytes: u64,
        torrent_file: Option<PathBuf>,
        torrent: &[u8],
    ) {
        // Verified against the info-hash already; read again here only for the piece
        // length and the resume file's name.
        if let Ok(metainfo) = Metainfo::from_bytes(torrent) {
            self.learn_layout(&metainfo);
        }
        // The name is the torrent's, and the saved path is made from it.
        let name = printable(name).into_owned();
        let saved = torrent_file
            .map(|p| format!("; saved {}", printable(&p.display().to_string())))
            .unwrap_or_default();
        let line = format!(
            "metadata received: {name}, {}{saved}",
            HumanBytes(total_bytes)
        );
        match &self.bar {
            Some(bar) => {
                bar.set_length(total_bytes);
                bar.println(line);
            }
            None => outln!("{line}"),
        }
        self.name = name;
        self.total = total_bytes;
    }
}

/// The terminal's width in columns, from stdout; 80 when it does not say.
fn terminal_width() -> usize {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|size| usize::from(size.ws_col))
        .filter(|&cols| cols > 0)
        .unwrap_or(80)
}

/// The torrent's name shortened for the line: at most 24 characters, so the rest has
/// room on an ordinary terminal before the fitting has to cut it further.
fn short_name(name: &str) -> String {
    progress::cut(name, 24)
}

/// What `get` says about a tracker: the gist (state and message, which must change for
/// the line to be printed again) and the line itself, or `None` for states not worth a
/// line (idle, or an announce under way).
///
/// The URL is shown without its query, where private trackers put the user's passkey,
/// and, like the tracker's own text, with control characters defused.
fn tracker_line(status: &TrackerStatus, now: Instant) -> Option<(String, String)> {
    let url = torrent_actors::tracker::tracker_text(
        status
            .url
            .split_once('?')
            .map_or(status.url.as_str(), |(path, _)| path)
            .as_bytes(),
    );
    let next = next_announce_in(status, now).map(format_wait);
    let (gist, detail) = match &status.state {
        TrackerState::Idle | TrackerState::Updating => return None,
        TrackerState::Working => {
            let mut gist = "working".to_string();
            if let Some(warning) = &status.warning {
                gist.push_str(&format!("; warning: {warning}"));
            }
            let peers = status.peers.unwrap_or(0);
            let mut detail = format!("working, {peers} peer{}", plural(peers));
            if let (Some(seeders), Some(leechers)) = (status.seeders, status.leechers) {
                detail.push_str(&format!(
                    " ({seeders} seeder{}, {leechers} leecher{})",
                    plural(seeders as usize),
                    plural(leechers as usize)
                ));
            }
            if let Some(warning) = &status.warning {
                detail.push_str(&format!("; warning: {warning}"));
            }
            if let Some(next) = next {
                detail.push_str(&format!("; next announce in {next}"));
            }
            (gist, detail)
        }
        TrackerState::Failed(error) => {
            let gist = format!("error: {error}");
            let detail = match next {
                Some(next) => format!("{gist}; retrying in {next}"),
                None => gist.clone(),
            };
            (gist, detail)
        }
        TrackerState::Unusable(reason) => {
            let gist = format!("unusable: {reason}");
            (gist.clone(), gist)
        }
    };
    Some((gist, format!("tracker {url}: {detail}")))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A wait as a person reads it: seconds under two minutes, then minutes, then hours and
/// minutes; a part second counts as a whole one, so nothing scheduled reads "0 s".
fn format_wait(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    match secs {
        0 => "a moment".to_string(),
        1..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min", secs.div_ceil(60)),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(url: &str, state: TrackerState) -> TrackerStatus {
        TrackerStatus {
            state,
            ..TrackerStatus::idle(url.to_string(), 0)
        }
    }

    #[test]
    fn a_failing_tracker_line_names_the_error_and_the_retry() {
        let now = Instant::now();
        let mut s = status(
            "udp://t.example:6969/announce",
            TrackerState::Failed("no reply from udp tracker after 8 attempts".into()),
        );
        s.next_announce = Some(now + Duration::from_secs(15));
        let (gist, line) = tracker_line(&s, now).unwrap();
        assert_eq!(gist, "error: no reply from udp tracker after 8 attempts");
        assert_eq!(
            line,
            "tracker udp://t.example:6969/announce: error: no reply from udp tracker after 8 attempts; retrying in 15 s"
        );
    }

    #[test]
    fn a_working_tracker_line_counts_peers_and_says_when_it_announces_again() {
        let now = Instant::now();
        let mut s = status("http://t.example/announce", TrackerState::Working);
        s.peers = Some(1);
        s.seeders = Some(3);
        s.leechers = Some(1);
        s.next_announce = Some(now + Duration::from_secs(1800));
        let (gist, line) = tracker_line(&s, now).unwrap();
        assert_eq!(gist, "working");
        assert_eq!(
            line,
            "tracker http://t.example/announce: working, 1 peer (3 seeders, 1 leecher); next announce in 30 min"
        );
        s.warning = Some("slow down".into());
        let (gist, line) = tracker_line(&s, now).unwrap();
        assert_eq!(gist, "working; warning: slow down");
        assert!(line.contains("1 leecher); warning: slow down; next announce in 30 min"));
    }

    #[test]
    fn idle_and_updating_trackers_get_no_line() {
        let now = Instant::now();
        assert!(tracker_line(&status("http://a/", TrackerState::Idle), now).is_none());
        assert!(tracker_line(&status("http://a/", TrackerState::Updating), now).is_none());
    }

    #[test]
    fn the_url_is_shown_without_its_passkey_and_without_control_characters() {
        let now = Instant::now();
        let s = status(
            "http://t.example/announce?passkey=SECRET",
            TrackerState::Unusable("bad".into()),
        );
        let (_, line) = tracker_line(&s, now).unwrap();
        assert_eq!(line, "tracker http://t.example/announce: unusable: bad");
        let s = status(
            "wss://a\x1b[2J/announce",
            TrackerState::Unusable("bad".into()),
        );
        let (_, line) = tracker_line(&s, now).unwrap();
        assert!(!line.contains('\x1b'), "{line:?}");
    }

    #[test]
    fn waits_read_as_seconds_minutes_or_hours() {
        let wait = |ms| format_wait(Duration::from_millis(ms));
        assert_eq!(wait(0), "a moment");
        assert_eq!(wait(200), "1 s");
        assert_eq!(wait(15_000), "15 s");
        assert_eq!(wait(119_000), "119 s");
        assert_eq!(wait(120_000), "2 min");
        assert_eq!(wait(1_800_000), "30 min");
        assert_eq!(wait(5_400_000), "90 min");
        assert_eq!(wait(7_200_000), "2 h 0 min");
        assert_eq!(wait(3_825_000 * 2), "2 h 7 min");
    }
}
