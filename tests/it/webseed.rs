//! Web seeds (BEP 19), all on 127.0.0.1: `get` downloads torrents made by mktorrent with
//! `-w URL` from HTTP servers, alone, beside a libtorrent seeder, and beside servers that
//! misbehave. Files must come out byte-identical; a server that lies, refuses or ignores
//! `Range` must be given up with its reason in `get`'s output.
//!
//! The servers are a small threaded HTTP/1.1 server written here (one connection per
//! request), so each misbehaviour is exact and the bytes each one served are counted;
//! the server that ignores `Range` is Python's own `http.server`, started and stopped by
//! its PID. Speed is never asserted.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{
    assert_same_files, free_port, read_metainfo, run_until, run_within, ChildGuard, Daemon,
    DaemonOpts, LtSeeder, Payload, SeedOpts,
};

/// How long any one download may take; these are a few MiB over loopback.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(120);

/// How a test server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers ranges right.
    Good,
    /// Answers ranges with one byte of every 16 KiB flipped.
    Lies,
    /// Cycles through: a 503 with `Retry-After: 1`, a connection dropped halfway through
    /// the body, a connection closed before any answer, and a right answer.
    Flaky,
    /// 404 for everything.
    NotFound,
    /// Right answers, a 64 KiB write at a time with a pause between (so a peer beside
    /// it gets work too).
    Slow,
    /// 503 with `Retry-After: 0` for everything.
    Busy,
    /// A 302 to the same path on another server.
    RedirectTo(SocketAddr),
    /// A 302 to itself, for ever.
    RedirectLoop,
    /// The right range, then as much garbage again, with no `Content-Length`: the body
    /// ends when the connection closes.
    Overlong,
    /// A 206 whose `Content-Range` starts one byte later than asked.
    WrongRange,
}

/// What a test server did, shared with its threads.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    body_bytes: AtomicU64,
    /// Requests being answered now, and the most at once.
    active: AtomicU64,
    max_active: AtomicU64,
}

/// A test HTTP server serving the files under `root`.
struct WebServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl WebServer {
    fn start(root: &Path, behaviour: Behaviour) -> WebServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("its address");
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let root = root.to_path_buf();
        let (c, s) = (counters.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let n = c.requests.fetch_add(1, Ordering::Relaxed);
                        let (root, c) = (root.clone(), c.clone());
                        thread::spawn(move || {
                            let now = c.active.fetch_add(1, Ordering::SeqCst) + 1;
                            c.max_active.fetch_max(now, Ordering::SeqCst);
                            let _ = serve_one(stream, &root, behaviour, n, &c);
                            c.active.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        WebServer {
            addr,
            counters,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::Relaxed)
    }

    fn body_bytes(&self) -> u64 {
        self.counters.body_bytes.load(Ordering::Relaxed)
    }

    /// The most requests it was answering at once.
    fn max_active(&self) -> u64 {
        self.counters.max_active.load(Ordering::SeqCst)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers one request on `stream`, then closes it.
fn serve_one(
    stream: TcpStream,
    root: &Path,
    behaviour: Behaviour,
    n: u64,
    counters: &Counters,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(value) = line
            .split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("range"))
            .map(|(_, v)| v.trim().to_string())
        {
            range = Some(value);
        }
    }
    let mut out = stream;
    let raw_path = request_line.split(' ').nth(1).unwrap_or("/");
    let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
    let rel: PathBuf = decoded
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect();
    let flaky_turn = n % 4;
    let reply = |out: &mut TcpStream, head: String| out.write_all(head.as_bytes());
    match behaviour {
        Behaviour::Busy => {
            return reply(
                &mut out,
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            )
        }
        Behaviour::RedirectTo(to) => {
            return reply(
                &mut out,
                format!("HTTP/1.1 302 Found\r\nLocation: http://{to}{raw_path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            )
        }
        Behaviour::RedirectLoop => {
            return reply(
                &mut out,
                format!("HTTP/1.1 302 Found\r\nLocation: {raw_path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            )
        }
        _ => {}
    }
    if behaviour == Behaviour::NotFound {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    if behaviour == Behaviour::Flaky && flaky_turn == 0 {
        return out.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    if behaviour == Behaviour::Flaky && flaky_turn == 2 {
        return Ok(()); // closed before any answer
    }
    let Ok(data) = fs::read(root.join(&rel)) else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let (start, end) = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .filter(|&(a, b)| a <= b && b < data.len())
        .unwrap_or((0, data.len().saturating_sub(1)));
    let mut body = data[start..=end.max(start).min(data.len().saturating_sub(1))].to_vec();
    if data.is_empty() {
        body.clear();
    }
    if behaviour == Behaviour::Lies {
        for i in (0..body.len()).step_by(16 * 1024) {
            body[i] ^= 0x5a;
        }
    }
    let shown_start = start + usize::from(behaviour == Behaviour::WrongRange);
    let head = if behaviour == Behaviour::Overlong {
        let garbage = vec![0xee; body.len()];
        body.extend(garbage);
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{end}/{}\r\nConnection: close\r\n\r\n",
            data.len()
        )
    } else {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {shown_start}-{end}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data.len(),
            body.len()
        )
    };
    out.write_all(head.as_bytes())?;
    if behaviour == Behaviour::Flaky && flaky_turn == 1 {
        let half = &body[..body.len() / 2];
        out.write_all(half)?;
        counters
            .body_bytes
            .fetch_add(half.len() as u64, Ordering::Relaxed);
        return Ok(()); // dropped mid-body
    }
    for chunk in body.chunks(64 * 1024) {
        out.write_all(chunk)?;
        counters
            .body_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if behaviour == Behaviour::Slow {
            thread::sleep(Duration::from_millis(60));
        }
    }
    Ok(())
}

/// Makes `out` from `root` with mktorrent: pieces of `2^piece_exp` bytes, no tracker, the
/// given web seeds (`-w`, in order).
fn make_web_seed_torrent(root: &Path, out: &Path, piece_exp: u32, seeds: &[String]) {
    let mut cmd = Command::new("mktorrent");
    cmd.arg("--no-date")
        .arg(format!("--piece-length={piece_exp}"))
        .arg("--output")
        .arg(out);
    for seed in seeds {
        cmd.arg(format!("--web-seed={seed}"));
    }
    cmd.arg(root);
    let done = run_until(cmd, Duration::from_secs(60)).expect("mktorrent finishes");
    assert!(
        done.status.success(),
        "mktorrent failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(read_metainfo(out).web_seeds.len(), seeds.len());
}

/// `get` on 127.0.0.1 into `out`, no DHT, with `extra` flags; its output once it exits.
fn get(torrent: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args([
            "get",
            "--no-dht",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "-o",
        ])
        .arg(out)
        .args(extra)
        .arg(torrent);
    run_within(cmd, DOWNLOAD_LIMIT)
}

fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout:\n{}--- stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_downloaded(o: &Output, payload: &Payload, out: &Path) {
    assert!(o.status.success(), "get failed:\n{}", text(o));
    assert_same_files(&payload.dir, out, &payload.files);
}

fn tmp(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

#[test]
fn web_seed_only_single_file_download_is_byte_identical() {
    let dir = tmp("ta-ws-single-");
    let payload = Payload::single(
        &dir.path().join("src"),
        "file one.bin",
        5 * 1024 * 1024 + 77,
    );
    let server = WebServer::start(&payload.dir, Behaviour::Good);
    let torrent = dir.path().join("t.torrent");
    // The file's own URL (BEP 19 single-file form), its space escaped by mktorrent's user.
    make_web_seed_torrent(
        &payload.root(),
        &torrent,
        18,
        &[server.url("file%20one.bin")],
    );
    let out = dir.path().join("out");
    let o = get(&torrent, &out, &[]);
    assert_downloaded(&o, &payload, &out);
    assert!(server.body_bytes() >= payload.total_len());
    // At most three runs in flight (`WebSeedConfig::max_runs`), one request each.
    assert!(
        (1..=3).contains(&server.max_active()),
        "{} requests at once",
        server.max_active()
    );
}

#[test]
fn web_seed_only_multi_file_download_is_byte_identical() {
    let dir = tmp("ta-ws-multi-");
    let payload = Payload::multi(&dir.path().join("src"), "an album", 32 * 1024);
    let server = WebServer::start(&payload.dir, Behaviour::Good);
    let torrent = dir.path().join("t.torrent");
    // A folder URL: each file is under it, then the torrent's name and the file's path.
    make_web_seed_torrent(&payload.root(), &torrent, 15, &[server.url("")]);
    let out = dir.path().join("out");
    let o = get(&torrent, &out, &[]);
    assert_downloaded(&o, &payload, &out);
}

/// A web seed behaving as `bad` listed before a good (slowed) one, serving a file of
/// `size` bytes in pieces of `2^piece_exp`: `get` (with `extra`) must still download it
/// byte-identical. Returns the bad server, to count its requests, and `get`'s output.
fn beside_a_good_seed(
    prefix: &str,
    size: u64,
    piece_exp: u32,
    bad: Behaviour,
    extra: &[&str],
) -> (WebServer, Output) {
    let dir = tmp(prefix);
    let payload = Payload::single(&dir.path().join("src"), "f.bin", size);
    let bad = WebServer::start(&payload.dir, bad);
    let good = WebServer::start(&payload.dir, Behaviour::Slow);
    let torrent = dir.path().join("t.torrent");
    make_web_seed_torrent(
        &payload.root(),
        &torrent,
        piece_exp,
        &[bad.url("f.bin"), good.url("f.bin")],
    );
    let out = dir.path().join("out");
    let o = get(&torrent, &out, extra);
    assert_downloaded(&o, &payload, &out);
    (bad, o)
}

#[test]
fn flaky_web_seed_beside_a_good_one_still_completes() {
    let (flaky, o) = beside_a_good_seed(
        "ta-ws-flaky-",
        6 * 1024 * 1024,
        17,
        Behaviour::Flaky,
        &["-v"],
    );
    assert!(
        flaky.requests() >= 3,
        "the flaky seed was asked {} times",
        flaky.requests()
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("retrying"),
        "no retry was logged:\n{}",
        text(&o)
    );
}

#[test]
fn lying_web_seed_is_dropped_with_its_reason_and_the_download_completes() {
    let (liar, o) = beside_a_good_seed("ta-ws-liar-", 4 * 1024 * 1024, 17, Behaviour::Lies, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("web seed dropped") && stderr.contains("failed its hash"),
        "the liar was not dropped with its reason:\n{}",
        text(&o)
    );
    assert!(liar.requests() >= 1);
}

#[test]
fn web_seed_answering_404_is_given_up_with_the_reason() {
    let (_, o) = beside_a_good_seed("ta-ws-404-", 1024 * 1024, 16, Behaviour::NotFound, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("web seed given up") && stderr.contains("not found (404)"),
        "no reason for the 404 seed:\n{}",
        text(&o)
    );
}

/// Python's `http.server` answers every GET with the whole file (200), whatever the
/// `Range`: the web seed must give up at once, read no further than it asked, and say why.
#[test]
fn server_ignoring_range_is_given_up_with_the_reason() {
    let dir = tmp("ta-ws-norange-");
    let payload = Payload::single(&dir.path().join("src"), "f.bin", 3 * 1024 * 1024);
    let port = free_port();
    let mut py = Command::new("/usr/bin/python3");
    py.args(["-m", "http.server", "--bind", "127.0.0.1"])
        .arg(port.to_string())
        .current_dir(&payload.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut server = ChildGuard::spawn(py, "python3 -m http.server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not listen");
        thread::sleep(Duration::from_millis(50));
    }
    let torrent = dir.path().join("t.torrent");
    make_web_seed_torrent(
        &payload.root(),
        &torrent,
        18,
        &[format!("http://127.0.0.1:{port}/f.bin")],
    );
    let out = dir.path().join("out");
    let o = get(&torrent, &out, &["--peer-timeout", "3"]);
    server.kill();
    assert!(
        !o.status.success(),
        "nothing could be downloaded:\n{}",
        text(&o)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("web seed given up") && stderr.contains("ignores Range"),
        "no reason for the server that ignores Range:\n{}",
        text(&o)
    );
}

#[test]
fn web_seed_and_libtorrent_seeder_are_both_used() {
    let dir = tmp("ta-ws-lt-");
    let payload = Payload::single(&dir.path().join("src"), "f.bin", 8 * 1024 * 1024);
    let server = WebServer::start(&payload.dir, Behaviour::Slow);
    let torrent = dir.path().join("t.torrent");
    make_web_seed_torrent(&payload.root(), &torrent, 17, &[server.url("f.bin")]);
    let lt = LtSeeder::start(
        &torrent,
        &payload.dir,
        SeedOpts {
            upload_limit: Some(1024 * 1024),
            ready_without_announce: true,
            ..SeedOpts::default()
        },
    );
    let out = dir.path().join("out");
    let peer = lt.addr().to_string();
    let o = get(&torrent, &out, &["--peer", &peer]);
    assert_downloaded(&o, &payload, &out);
    // The seeder's count comes once a second; give it a moment to report the end.
    let deadline = Instant::now() + Duration::from_secs(5);
    while lt.uploaded() == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let (web, peer) = (server.body_bytes(), lt.uploaded());
    assert!(
        web > 0 && peer > 0,
        "web seed served {web} bytes, libtorrent {peer}:\n{}",
        text(&o)
    );
}

/// `serve`'s source list: each web seed with where it stands, the 404 one given up with
/// its reason, the good one with the bytes it gave.
#[test]
fn serve_lists_web_seeds_with_the_reason_one_was_given_up() {
    let dir = tmp("ta-ws-serve-");
    let payload = Payload::single(&dir.path().join("src"), "f.bin", 2 * 1024 * 1024);
    let missing = WebServer::start(&payload.dir, Behaviour::NotFound);
    let good = WebServer::start(&payload.dir, Behaviour::Slow);
    let torrent = dir.path().join("t.torrent");
    let seeds = [missing.url("f.bin"), good.url("f.bin")];
    make_web_seed_torrent(&payload.root(), &torrent, 16, &seeds);
    let id = read_metainfo(&torrent).info_hash.to_hex();
    let daemon = Daemon::start(
        &dir.path().join("dl"),
        &dir.path().join("state"),
        &DaemonOpts::default(),
    );
    let bytes = fs::read(&torrent).unwrap();
    let added = daemon.post(
        "/api/torrents",
        &serde_json::json!({"torrent_base64": data_encoding::BASE64.encode(&bytes)}),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let deadline = Instant::now() + DOWNLOAD_LIMIT;
    let list = loop {
        let list = daemon.get_json(&format!("/api/torrents/{id}/webseeds"));
        let rows = list.as_array().expect("a list").clone();
        let given_up = rows.iter().any(|r| {
            r["url"] == seeds[0].as_str()
                && r["state"] == "stopped"
                && r["reason"]
                    .as_str()
                    .is_some_and(|t| t.contains("not found (404)"))
        });
        // The good seed's bytes are counted as the PieceManager takes them and reported
        // when its run ends (or it stops): they may show a moment after the completion,
        // but they must show.
        let good_counted = rows
            .iter()
            .any(|r| r["url"] == seeds[1].as_str() && r["downloaded"].as_u64().unwrap_or(0) > 0);
        let torrent = daemon.get_json(&format!("/api/torrents/{id}"));
        if given_up && good_counted && torrent["progress"].as_f64() == Some(1.0) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "no given-up row, no bytes counted for the good seed, or no completion: \
             {list}\n{torrent}\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(list.len(), 2, "{list:?}");
    assert_same_files(&payload.dir, &dir.path().join("dl"), &payload.files);
}

#[test]
fn web_seed_follows_a_redirect_to_another_loopback_server() {
    let dir = tmp("ta-ws-redirect-");
    let payload = Payload::single(&dir.path().join("src"), "f.bin", 1024 * 1024 + 5);
    let target = WebServer::start(&payload.dir, Behaviour::Good);
    let redirecting = WebServer::start(&payload.dir, Behaviour::RedirectTo(target.addr));
    let torrent = dir.path().join("t.torrent");
    make_web_seed_torrent(&payload.root(), &torrent, 16, &[redirecting.url("f.bin")]);
    let out = dir.path().join("out");
    let o = get(&torrent, &out, &[]);
    assert_downloaded(&o, &payload, &out);
    assert!(target.body_bytes() >= payload.total_len());
}

#[test]
fn web_seed_redirecting_for_ever_is_given_up_with_the_reason() {
    let dir = tmp("ta-ws-loop-");
    let payload = Payload::single(&dir.path().join("src"), "f.bin", 1024 * 1024);
    let looping = WebServer::start(&payload.dir, Behaviour::RedirectLoop);
    let torrent = dir.path().join("t.torrent");
    make_web_seed_torrent(&payload.root(), &torrent, 16, &[looping.url("f.bin")]);
    let o = get(&torrent, &dir.path().join("out"), &["--peer-timeout", "3"]);
    assert!(!o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("web seed given up") && stderr.contains("more than 5 redirects"),
        "{}",
        text(&o)
    );
    // Five redirects followed, the sixth refused, for each run in flight (three).
    assert!(
        looping.requests() <= 3 * 6,
        "{} requests",
        looping.requests()
    );
}

#[test]
fn an_overlong_body_is_read_only_as_far_as_the_range_asked() {
    let dir = tmp("ta-ws-overlong-");
    let payload = Payload::single(&dir.path().join("src"), "f.bin", 3 * 1024 * 1024);
    let server = WebServer::start(&payload.dir, Behaviour::Overlong);
    let torrent = dir.path().join("t.torrent");
    make_web_seed_torrent(&payload.root(), &torrent, 17, &[server.url("f.bin")]);
    let out = dir.path().join("out");
    let o = get(&torrent, &out, &[]);
    assert_downloaded(&o, &payload, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("failed its hash"), "{}", text(&o));
}

#[test]
fn web_seed_answering_another_range_than_asked_is_given_up() {
    let (_, o) = beside_a_good_seed(
        "ta-ws-wrongrange-",
        3 * 1024 * 1024,
        17,
        Behaviour::WrongRange,
        &[],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("web seed given up") && stderr.contains("answered range"),
        "{}",
        text(&o)
    );
}

/// A server that is always busy is retried, a bounded number of times, then given up
/// with the reason; in-process, so the back-off can be made short.
#[test]
fn an_always_busy_web_seed_is_given_up_after_its_retries() {
    use actix::Actor;
    use torrent_actors::engine::coordinator::{Coordinator, EngineConfig, TorrentParams};
    use torrent_actors::engine::messages::{GetWebSeedList, Shutdown, TorrentEvent};
    use torrent_actors::PeerId;

    struct Quiet;
    impl actix::Actor for Quiet {
        type Context = actix::Context<Self>;
    }
    impl actix::Handler<TorrentEvent> for Quiet {
        type Result = ();
        fn handle(&mut self, _: TorrentEvent, _: &mut actix::Context<Self>) {}
    }

    let dir = tmp("ta-ws-busy-");
    let payload = Payload::single(&dir.path().join("src"), "f.bin", 1024 * 1024);
    let busy = WebServer::start(&payload.dir, Behaviour::Busy);
    let torrent = dir.path().join("t.torrent");
    make_web_seed_torrent(&payload.root(), &torrent, 16, &[busy.url("f.bin")]);
    let metainfo = read_metainfo(&torrent);
    let out = dir.path().join("out");
    let reason = actix::System::new().block_on(async move {
        let mut config = EngineConfig::new(
            PeerId(*b"-TA0001-webseed-busy"),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        );
        config.web_seed.backoff = Duration::from_millis(10);
        config.web_seed.max_backoff = Duration::from_millis(50);
        config.web_seed.max_failures = 3;
        let torrent = Coordinator::start(TorrentParams {
            metainfo,
            download_dir: out,
            config,
            selection: None,
            high_priority: Vec::new(),
            dht: None,
            events: Quiet.start().recipient(),
            log: slog::Logger::root(slog::Discard, slog::o!()),
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let reason = loop {
            let list = torrent.send(GetWebSeedList).await.expect("an answer");
            if let Some(reason) = list.first().and_then(|w| w.reason.clone()) {
                assert_eq!(list[0].state, "stopped");
                break reason;
            }
            assert!(Instant::now() < deadline, "still not given up: {list:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        torrent.send(Shutdown).await.expect("a clean stop");
        reason
    });
    assert!(
        reason.contains("gave up after 4 failures in a row") && reason.contains("busy (503)"),
        "{reason}"
    );
    // Each failure is one bad spell: at most the runs in flight each time.
    assert!(busy.requests() <= 4 * 3, "{} requests", busy.requests());
}

#[test]
fn info_shows_web_seeds_and_the_ignored_ones_with_the_reason() {
    let dir = tmp("ta-ws-info-");
    let payload = Payload::single(&dir.path().join("src"), "f.bin", 100_000);
    let torrent = dir.path().join("t.torrent");
    let mut cmd = Command::new("mktorrent");
    cmd.args([
        "--no-date",
        "--piece-length=15",
        "-w",
        "http://127.0.0.1:1/f.bin",
    ])
    .args(["-w", "ftp://127.0.0.1/f.bin", "--output"])
    .arg(&torrent)
    .arg(payload.root());
    assert!(run_until(cmd, Duration::from_secs(60))
        .unwrap()
        .status
        .success());
    let mut info = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    info.arg("info").arg(&torrent);
    let o = run_until(info, Duration::from_secs(30)).expect("info finishes");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout.contains("web seed:    http://127.0.0.1:1/f.bin\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "web seed:    ftp://127.0.0.1/f.bin (ignored: web seed scheme \"ftp\" is not supported (only http and https are))"
        ),
        "{stdout}"
    );
}
