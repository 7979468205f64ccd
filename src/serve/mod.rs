//! `torrent-actors serve`: the engine as a daemon over many torrents, with a JSON API
//! and a web page. This module is the HTTP front end: it checks its arguments, starts the
//! shared parts (peer listener, DHT) and the Session, and serves HTTP in front of it.
//! Downloads are the Session's business; nothing here knows about pieces or peers.
//!
//! - `security.rs`: the checks every request passes (Host, auth, token, origin) and the
//!   headers every answer carries;
//! - `api.rs`: the JSON routes, each a thin translation to one Session message;
//! - `sse.rs`: live updates as server-sent events;
//! - `stream.rs`: a file as a seekable HTTP resource for media players, and its signed link;
//! - `ui.rs`: the embedded page.

mod api;
mod prometheus;
pub(crate) mod security;
mod sse;
pub(crate) mod stream;
mod ui;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};
use slog::info;
use torrent_actors::engine::connection::ConnectTimeouts;
use torrent_actors::engine::coordinator::EngineConfig;
use torrent_actors::engine::dht::Bootstrap;
use torrent_actors::engine::listener::Listener;
use torrent_actors::engine::metrics::Metrics;
use torrent_actors::engine::session::{Session, SessionConfig, StopSession};
use torrent_actors::engine::threads::{Threads, ThreadsConfig};

use crate::{exit, logging, Failure};

/// What `serve` was asked to do, validated.
pub struct ServeArgs {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The download root: every torrent's folder is inside it.
    pub dir: PathBuf,
    /// The state folder.
    pub state: PathBuf,
    /// Where peers connect.
    pub peer_listen: SocketAddr,
    pub max_peers: usize,
    pub max_connections: usize,
    /// `--encryption`, for every torrent and the shared listener.
    pub encryption: torrent_actors::wire::mse::Encryption,
    /// `--utp`, for every torrent and the shared listener.
    pub utp: torrent_actors::engine::utp::UtpMode,
    /// Protocol threads (`--threads`); 0 for one per core.
    pub threads: usize,
    /// The key API clients must present, if any.
    pub api_key: Option<String>,
    /// Host names allowed besides the loopback ones.
    pub allowed_hosts: Vec<String>,
    /// `--metrics-without-key`: `GET /metrics` from a loopback address needs no key.
    pub metrics_without_key: bool,
    pub max_torrent_bytes: usize,
    pub dht: Option<(Bootstrap, u16)>,
    pub verbosity: u8,
    /// `--seed-ratio` and `--seed-time`: when complete torrents stop seeding by default.
    pub seed_goal: torrent_actors::engine::session::SeedGoal,
    /// `--max-active-downloads`; 0 for no limit.
    pub max_active_downloads: usize,
}

/// Shortest API key accepted: a guessable key would make the lock-out the only defence.
const MIN_KEY_LEN: usize = 16;

/// Most event streams open at once.
const MAX_STREAMS: usize = 64;

/// Reads the API key from a file (first line, trimmed) or the environment variable.
pub fn load_api_key(file: Option<&Path>) -> Result<Option<String>, Failure> {
    let key = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Failure {
                code: exit::USAGE,
                error: anyhow::anyhow!("cannot read the API key file {}: {e}", path.display()),
            })?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        None => std::env::var("TORRENT_ACTORS_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
    };
    if let Some(key) = &key {
        if key.len() < MIN_KEY_LEN {
            return Err(Failure {
                code: exit::USAGE,
                error: anyhow::anyhow!("the API key must be at least {MIN_KEY_LEN} characters"),
            });
        }
    }
    Ok(key)
}

fn usage(error: anyhow::Error) -> Failure {
    Failure {
        code: exit::USAGE,
        error,
    }
}

pub fn run(args: ServeArgs) -> Result<(), Failure> {
    if !args.listen.ip().is_loopback() && args.api_key.is_none() {
        return Err(usage(anyhow::anyhow!(
            "refusing to serve on {} without authentication: anyone who can reach it could \
             control the daemon; give --api-key-file (or TORRENT_ACTORS_API_KEY), or listen \
             on 127.0.0.1",
            args.listen
        )));
    }
    let not_writable = |what: &str, dir: &Path, e: std::io::Error| Failure {
        code: exit::OUTPUT_NOT_WRITABLE,
        error: anyhow::anyhow!("{what} {} is not usable: {e}", dir.display()),
    };
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| not_writable("download folder", &args.dir, e))?;
    std::fs::create_dir_all(&args.state)
        .map_err(|e| not_writable("state folder", &args.state, e))?;
    let root = args
        .dir
        .canonicalize()
        .map_err(|e| not_writable("download folder", &args.dir, e))?;
    let log = logging::stderr_logger(args.verbosity);
    let system = actix::System::new();
    // One set of threads for every torrent the daemon will run (its hashers count into
    // a process-wide table: each torrent has its own).
    let threads = system.block_on(async {
        Threads::start(ThreadsConfig::for_process(args.threads), &Metrics::new())
    });
    let result = system.block_on(serve(args, root, threads.clone(), log));
    threads.join();
    result
}

async fn serve(
    args: ServeArgs,
    root: PathBuf,
    threads: std::sync::Arc<Threads>,
    log: slog::Logger,
) -> Result<(), Failure> {
    // The HTTP socket first: a port in use must end the run before any actor starts.
    let http_socket = std::net::TcpListener::bind(args.listen)
        .map_err(|e| cannot_listen("HTTP", args.listen, e))?;
    let (session, peer_addr) = start_session(&args, root.clone(), threads, &log).await?;
    let (server, http_addr) = http_server(&args, session.clone(), root, http_socket)?;
    let handle = server.handle();
    let url = match http_addr {
        SocketAddr::V4(a) => format!("http://{a}/"),
        SocketAddr::V6(a) => format!("http://[{}]:{}/", a.ip(), a.port()),
    };
    outln!("serving {url} (peers on port {})", peer_addr.port());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    info!(log, "serving"; "url" => &url, "peers" => %peer_addr);

    let server_task = actix_web::rt::spawn(server);
    stop_signal().await;
    info!(log, "stopping");
    // HTTP first, so no request starts a torrent while the Session stops them all (event
    // streams are cut after the server's shutdown timeout).
    handle.stop(true).await;
    let _ = server_task.await;
    // Every torrent saves its resume file and announces `stopped`; the state is written.
    let _ = tokio::time::timeout(Duration::from_secs(25), session.send(StopSession {})).await;
    actix::System::current().stop();
    Ok(())
}

fn cannot_listen(what: &str, addr: SocketAddr, e: std::io::Error) -> Failure {
    Failure {
        code: exit::CANNOT_LISTEN,
        error: anyhow::anyhow!("cannot listen for {what} on {addr}: {e}"),
    }
}

/// The engine's side: the shared peer listener, the DHT and the Session with the saved
/// torrents; the Session's address and the peer address bound.
async fn start_session(
    args: &ServeArgs,
    root: PathBuf,
    threads: std::sync::Arc<Threads>,
    log: &slog::Logger,
) -> Result<(actix::Addr<Session>, SocketAddr), Failure> {
    let mut engine = EngineConfig::new(crate::get::our_peer_id(), args.peer_listen);
    engine.max_peers = args.max_peers;
    engine.connect = ConnectTimeouts::default();
    engine.encryption = args.encryption;
    engine.threads = Some(threads);
    engine.utp = args.utp;
    let (listener, peer_addr, utp) = Listener::bind(
        args.peer_listen,
        engine.connect.handshake,
        engine.encryption,
        engine.utp,
        log.clone(),
    )
    .await
    .map_err(|e| cannot_listen("peers", args.peer_listen, e))?;
    engine.shared_utp = utp;
    let dht = crate::get::start_dht(args.dht.clone(), peer_addr, log);
    let session = Session::start(SessionConfig {
        engine,
        download_root: root,
        state_dir: args.state.clone(),
        listener,
        listen_addr: peer_addr,
        max_connections: args.max_connections,
        dht,
        log: log.clone(),
        // Torrents' events are worth a line even when the rest shows only warnings.
        events: logging::stderr_logger(args.verbosity.max(1)),
        seed_goal: args.seed_goal,
        max_active_downloads: args.max_active_downloads,
    })
    .map_err(|e| Failure {
        code: exit::OUTPUT_NOT_WRITABLE,
        error: anyhow::anyhow!("cannot read the saved session: {e}"),
    })?;
    Ok((session, peer_addr))
}

/// The HTTP side, on `socket`: the API, `/metrics`, the page and the streams, behind the
/// guard (host allowlist, token, key). Running once polled; its address.
fn http_server(
    args: &ServeArgs,
    session: actix::Addr<Session>,
    root: PathBuf,
    socket: std::net::TcpListener,
) -> Result<(actix_web::dev::Server, SocketAddr), Failure> {
    let guard = security::Guard::new(
        security::HostAllowlist::new(args.listen.ip(), &args.allowed_hosts),
        security::random_hex(16),
        args.api_key.clone(),
        args.metrics_without_key,
    );
    let state = web::Data::new(api::ApiState {
        session,
        guard: guard.clone(),
        download_root: root,
        max_torrent_bytes: args.max_torrent_bytes,
        streams: AtomicUsize::new(0),
        max_streams: MAX_STREAMS,
    });
    // Base64 grows a .torrent by a third; the rest of the body is small.
    let json_limit = args.max_torrent_bytes / 3 * 4 + 64 * 1024;
    let guard_data = web::Data::new(guard);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(guard_data.clone())
            .configure(|cfg| api::extractor_config(cfg, json_limit))
            .wrap(middleware::from_fn(security::guard))
            .configure(api::routes)
            .route("/metrics", web::get().to(api::prometheus))
            .configure(ui::routes)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(api::ApiError::not_found("no such page"))
            }))
    })
    .on_connect(stream::remember_socket)
    .workers(2)
    .max_connections(256)
    .client_request_timeout(Duration::from_secs(10))
    .shutdown_timeout(2)
    .disable_signals()
    .listen(socket)
    .map_err(|e| cannot_listen("HTTP", args.listen, e))?;
    let addr = server.addrs().first().copied().unwrap_or(args.listen);
    Ok((server.run(), addr))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
}
