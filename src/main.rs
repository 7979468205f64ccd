//! The `torrent-actors` binary: `main` is the only place that prints a fatal error; the
//! front end modules (`info`, `get`, `swarm_cmd`, `create_cmd`) turn failures into the exit codes listed in README.md.
//! The binary alone uses `anyhow`; the library returns typed errors.

/// `print!` for the front ends' standard output, without its panic when a write fails: a
/// reader that closed the pipe early (`info ... | head`) wanted no more, so the rest is
/// dropped and the command goes on (a download keeps downloading) or ends as it would.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = std::io::stdout().lock().write_fmt(format_args!($($arg)*));
    }};
}

/// `println!`, as [`out!`] is `print!`.
macro_rules! outln {
    () => {
        outln!("")
    };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_fmt(format_args!($($arg)*))
            .and_then(|()| stdout.write_all(b"\n"));
    }};
}

mod cli;
mod create_cmd;
mod get;
mod get_stream;
mod info;
mod logging;
mod progress;
mod serve;
#[cfg(feature = "swarm")]
mod swarm_cmd;
mod trace_cmd;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use torrent_actors::engine::utp::default_dht_port;

/// A failure with the exit code that tells scripts which kind it was.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

/// Exit codes: 0 is success; the others are below.
mod exit {
    /// Bad usage: clap's own errors, and arguments that do not fit the torrent (a
    /// `--files` index past its last file). Clap exits with 2 too.
    pub const USAGE: u8 = 2;
    /// The torrent file could not be read.
    pub const UNREADABLE: u8 = 3;
    /// The torrent file was read but is not a valid torrent.
    pub const INVALID_TORRENT: u8 = 4;
    /// The output folder cannot be written (or another filesystem error stopped us).
    pub const OUTPUT_NOT_WRITABLE: u8 = 5;
    /// The disk is full.
    pub const DISK_FULL: u8 = 6;
    /// No peer could be reached within the time limit.
    pub const NO_PEERS: u8 = 7;
    /// `swarm`: a leecher did not complete (it failed, or the duration limit came first).
    #[cfg(feature = "swarm")]
    pub const SWARM_INCOMPLETE: u8 = 8;
    /// `swarm`: a leecher completed with wrong data in its file.
    #[cfg(feature = "swarm")]
    pub const SWARM_WRONG_FILES: u8 = 9;
    /// The peer port (`get`, `seed`, `serve`) or the HTTP port (`serve`) could not be
    /// bound: in use, or an address this machine does not have.
    pub const CANNOT_LISTEN: u8 = 10;
    /// `swarm`: the system allows fewer open files than the swarm needs.
    #[cfg(feature = "swarm")]
    pub const SWARM_OPEN_FILES: u8 = 11;
    /// `get` or `seed`: another process is already downloading or seeding the same
    /// torrent into the same folder (it holds the lock file beside the resume file).
    pub const ALREADY_RUNNING: u8 = 12;
    /// `seed`: none of the torrent's data is in the folder (and no `--fetch-missing`).
    pub const NO_DATA: u8 = 13;
    /// Stopped by Ctrl-C (the shell's convention for SIGINT).
    pub const INTERRUPTED: u8 = 130;
}

/// The largest `.torrent` file read: 64 MiB, twice the largest info dictionary a magnet
/// link may bring (30 MiB) plus room for tracker lists and comments. A path to something
/// endless (`/dev/zero`, a pipe) or to a huge file given by mistake then costs at most
/// this much memory.
const MAX_TORRENT_FILE: u64 = 64 << 20;

/// Reads a `.torrent` file for `info` and `get`, at most [`MAX_TORRENT_FILE`] bytes.
fn read_torrent_file(path: &Path) -> Result<Vec<u8>, Failure> {
    let unreadable = |e: std::io::Error| Failure {
        code: exit::UNREADABLE,
        error: anyhow::anyhow!("cannot read {}: {e}", path.display()),
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_TORRENT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_TORRENT_FILE {
        return Err(Failure {
            code: exit::INVALID_TORRENT,
            error: anyhow::anyhow!(
                "invalid torrent {}: larger than {} MiB, more than any torrent needs",
                path.display(),
                MAX_TORRENT_FILE >> 20
            ),
        });
    }
    Ok(bytes)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            // Errors quote what strangers sent (a torrent's name, a file name, a
            // tracker's words), so the line goes through the shared terminal rule.
            eprintln!(
                "error: {}",
                torrent_actors::terminal::printable(&format!("{error:#}"))
            );
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Info { json, torrent } => info::run(&torrent, json),
        Command::Get {
            dir,
            seed,
            seed_ratio,
            seed_time,
            files,
            sequential,
            stream,
            no_stream_deadlines,
            listen,
            trace,
            engine,
        } => traced(&trace, || {
            let dht = dht_options(&engine);
            let mut args = get::GetArgs::new(
                engine,
                dir,
                get::Mode::Download {
                    seed: seed.then_some(get::SeedLimits {
                        ratio: seed_ratio,
                        time: seed_time,
                    }),
                },
            );
            args.selection = files;
            args.sequential = sequential;
            args.stream = stream.then_some(listen);
            args.stream_deadlines = !no_stream_deadlines;
            get::run(args.with_dht(dht)?)
        }),
        Command::Seed {
            dir,
            fetch_missing,
            trace,
            engine,
        } => traced(&trace, || {
            let dht = dht_options(&engine);
            let mode = get::Mode::Seed { fetch_missing };
            get::run(get::GetArgs::new(engine, dir, mode).with_dht(dht)?)
        }),
        #[cfg(feature = "swarm")]
        Command::Swarm(args) => swarm_cmd::run(args),
        Command::Serve(args) => serve::run(serve_args(args)?),
        Command::Create(cmd) => create_cmd::run(cmd),
        Command::Trace { file, svg } => trace_cmd::run(&file, svg.as_deref()),
    }
}

/// Runs `run` with the message trace recording when `--trace` asks for it, and writes
/// the trace at the end, whatever the run's outcome (an interrupted run's trace is the
/// one worth reading). A trace that cannot be written fails a run that succeeded.
fn traced(args: &cli::TraceArgs, run: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    if args.trace.is_some() {
        torrent_actors::engine::trace::install(args.trace_limit, args.trace_sample);
    }
    let result = run();
    if let (Some(path), Some(tracer)) = (&args.trace, torrent_actors::engine::trace::global()) {
        let json = tracer.to_json().to_string();
        std::fs::write(path, json).map_err(|e| Failure {
            code: exit::OUTPUT_NOT_WRITABLE,
            error: anyhow::anyhow!("{}: {e}", path.display()),
        })?;
    }
    result
}

/// The DHT's bootstrap option and UDP port, or `None` with `--no-dht`.
fn dht_options(engine: &cli::EngineArgs) -> Option<(Option<String>, u16)> {
    (!engine.no_dht).then(|| {
        (
            engine.dht_bootstrap.clone(),
            engine
                .dht_port
                .unwrap_or(default_dht_port(engine.port, engine.utp)),
        )
    })
}

/// `serve`'s options, validated: the API key read, the DHT's bootstrap resolved.
fn serve_args(args: cli::ServeCmd) -> Result<serve::ServeArgs, Failure> {
    let api_key = serve::load_api_key(args.api_key_file.as_deref())?;
    let dht = if args.no_dht {
        None
    } else {
        let bootstrap =
            torrent_actors::engine::dht::Bootstrap::from_cli_and_env(args.dht_bootstrap.as_deref())
                .map_err(|e| Failure {
                    code: exit::USAGE,
                    error: anyhow::anyhow!("{e}"),
                })?;
        Some((
            bootstrap,
            args.dht_port
                .unwrap_or(default_dht_port(args.port, args.utp)),
        ))
    };
    let state = match args.state {
        Some(state) => state,
        None => get::client_state_dir()
            .map(|d| d.join("serve"))
            .ok_or_else(|| Failure {
                code: exit::USAGE,
                error: anyhow::anyhow!("no --state given and no HOME to put it under"),
            })?,
    };
    Ok(serve::ServeArgs {
        listen: args.listen,
        dir: args.dir,
        state,
        peer_listen: std::net::SocketAddr::new(args.bind, args.port),
        max_peers: args.max_peers,
        max_connections: args.max_connections,
        encryption: args.encryption,
        utp: args.utp,
        threads: args.threads.map_or(0, usize::from),
        api_key,
        metrics_without_key: args.metrics_without_key,
        allowed_hosts: args.allow_host,
        max_torrent_bytes: (args.max_torrent_mib << 20) as usize,
        dht,
        verbosity: args.verbose,
        max_active_downloads: args.max_active_downloads,
        seed_goal: torrent_actors::engine::session::SeedGoal {
            ratio: args.seed_ratio,
            time_secs: args.seed_time.map(|t| t.as_secs()),
        },
    })
}
