//! `torrent-actors serve` as a child process, and a small HTTP/1.1 client to talk to it.
//!
//! The daemon is started on loopback with ports picked by the kernel, and says where it
//! serves on its first stdout line; it is stopped by its PID (SIGTERM, a bounded wait,
//! SIGKILL as a last resort). The client is raw `TcpStream` on purpose: the security tests
//! must send a `Host` header of their choosing, which an HTTP library sets itself. Every
//! connection, read and write has a time bound.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::process::ChildGuard;

/// How long the daemon may take to print where it serves.
const START_LIMIT: Duration = Duration::from_secs(30);

/// How long the daemon may take to stop after SIGTERM: every torrent saves its resume
/// file and announces `stopped` (the daemon gives that 25 s at most), then HTTP closes.
const STOP_LIMIT: Duration = Duration::from_secs(40);

/// How long one HTTP exchange may take, connect to last byte.
const HTTP_LIMIT: Duration = Duration::from_secs(15);

/// How a daemon is started, besides its folders.
#[derive(Debug, Clone)]
pub struct DaemonOpts {
    /// `--listen`.
    pub listen: String,
    /// `--api-key-file`.
    pub api_key_file: Option<PathBuf>,
    /// `--max-torrent-mib`.
    pub max_torrent_mib: Option<u64>,
    /// More arguments, after the others.
    pub args: Vec<String>,
    /// More environment variables (e.g. a fault to inject).
    pub env: Vec<(String, String)>,
    /// Run at the default verbosity (no `-v`), to see what a user sees.
    pub quiet: bool,
}

impl Default for DaemonOpts {
    fn default() -> Self {
        DaemonOpts {
            listen: "127.0.0.1:0".into(),
            api_key_file: None,
            max_torrent_mib: None,
            args: Vec::new(),
            env: Vec::new(),
            quiet: false,
        }
    }
}

/// The command line of `serve` on `dir` and `state`: loopback, kernel-picked ports, no
/// DHT (unless `opts.args` gives `--dht-bootstrap` nodes, which must be loopback ones),
/// and the DHT bootstrap emptied in the environment too.
pub fn serve_command(dir: &Path, state: &Path, opts: &DaemonOpts) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    let dht = opts.args.iter().any(|a| a == "--dht-bootstrap");
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .env_remove("TORRENT_ACTORS_API_KEY")
        .args(["serve", "--listen", &opts.listen])
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args((!dht).then_some("--no-dht"))
        .args((!opts.quiet).then_some("-v"))
        .arg("--dir")
        .arg(dir)
        .arg("--state")
        .arg(state);
    if let Some(file) = &opts.api_key_file {
        cmd.arg("--api-key-file").arg(file);
    }
    if let Some(mib) = opts.max_torrent_mib {
        cmd.args(["--max-torrent-mib", &mib.to_string()]);
    }
    cmd.args(&opts.args);
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// A running `torrent-actors serve`. Dropping it kills the process by its PID.
pub struct Daemon {
    /// Killed by its PID and reaped when dropped.
    child: ChildGuard,
    /// The HTTP port on 127.0.0.1.
    pub port: u16,
    /// The peer port it announced.
    pub peer_port: u16,
    /// The per-run token for state changes, from `GET /api/token` (empty when the daemon
    /// wants a key and none was given to [`Daemon::start`]).
    pub token: String,
    /// A key to send as `Authorization: Bearer` with every request, if any.
    pub bearer: Option<String>,
    // Holds the daemon's stderr; declared last so the process is gone before it goes.
    log_dir: TempDir,
}

impl Daemon {
    /// Starts the daemon on `dir` and `state` and returns once it serves and has given
    /// its token. Panics with its log if it exits or is silent for too long.
    pub fn start(dir: &Path, state: &Path, opts: &DaemonOpts) -> Daemon {
        Daemon::start_with_key(dir, state, opts, None)
    }

    /// A daemon that wants `key`: the key written to `root/key` (with a newline, as an
    /// editor leaves it), the downloads in `root/dl`, the state in `root/state`, the key
    /// sent with every request.
    pub fn start_keyed(root: &Path, key: &str, opts: DaemonOpts) -> Daemon {
        fs::create_dir_all(root).expect("making the daemon's folder");
        let key_file = root.join("key");
        fs::write(&key_file, format!("{key}\n")).expect("writing the key file");
        let opts = DaemonOpts {
            api_key_file: Some(key_file),
            ..opts
        };
        Daemon::start_with_key(&root.join("dl"), &root.join("state"), &opts, Some(key))
    }

    /// [`Daemon::start`], sending `bearer` with every request (the token too needs it).
    pub fn start_with_key(
        dir: &Path,
        state: &Path,
        opts: &DaemonOpts,
        bearer: Option<&str>,
    ) -> Daemon {
        let log_dir = tempfile::Builder::new()
            .prefix("ta-serve-log-")
            .tempdir()
            .expect("temp folder for the daemon log");
        let log_path = log_dir.path().join("daemon.log");
        let log = fs::File::create(&log_path).expect("creating the daemon log");
        let mut cmd = serve_command(dir, state, opts);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = ChildGuard::spawn(cmd, "the daemon");
        let stdout = child.take_stdout().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // The reader keeps draining stdout after the first line, so the daemon never
        // blocks on a full pipe; it ends when the daemon closes its stdout.
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if line.starts_with("serving ") {
                    let _ = tx.send(line);
                    break;
                }
            }
            drop(tx);
            for _ in lines {}
        });
        let mut daemon = Daemon {
            child,
            port: 0,
            peer_port: 0,
            token: String::new(),
            bearer: bearer.map(str::to_string),
            log_dir,
        };
        let line = match rx.recv_timeout(START_LIMIT) {
            Ok(line) => line,
            Err(_) => {
                daemon.kill();
                panic!(
                    "the daemon did not say where it serves within {START_LIMIT:?}:\n{}",
                    daemon.log()
                );
            }
        };
        let (port, peer_port) = parse_serving_line(&line)
            .unwrap_or_else(|| panic!("unexpected first line from the daemon: {line:?}"));
        daemon.port = port;
        daemon.peer_port = peer_port;
        if bearer.is_some() || opts.api_key_file.is_none() {
            let reply = daemon.get("/api/token");
            assert_eq!(reply.status, 200, "GET /api/token: {reply:?}");
            daemon.token = reply.json()["token"]
                .as_str()
                .expect("a token string")
                .to_string();
            assert!(!daemon.token.is_empty());
        }
        daemon
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the daemon wrote on stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Stops the daemon the way a service manager does: SIGTERM to its PID, then a
    /// bounded wait. Panics (after SIGKILL) if it does not stop in time.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.child.try_status() {
            return status;
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "kill -TERM {}: {sent:?}",
            self.pid()
        );
        match self.child.wait_timeout(STOP_LIMIT) {
            Some(status) => status,
            None => {
                self.kill();
                panic!(
                    "the daemon did not stop within {STOP_LIMIT:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
        }
    }

    /// SIGKILL to the daemon's PID if it still runs, and a bounded reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.child.kill()
    }

    /// One request with the daemon's own `Host`, its bearer key if any, and the token on
    /// anything but GET; `body` is sent as JSON.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let mut headers: Vec<(&str, String)> = Vec::new();
        if method != "GET" {
            headers.push(("X-TA-Token", self.token.clone()));
        }
        if let Some(key) = &self.bearer {
            headers.push(("Authorization", format!("Bearer {key}")));
        }
        let bytes = body.map(|b| serde_json::to_vec(b).expect("encoding a JSON body"));
        if bytes.is_some() {
            headers.push(("Content-Type", "application/json".into()));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        http(self.port, method, path, &headers, bytes.as_deref())
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> Reply {
        self.request("PUT", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None)
    }

    /// Adds the `.torrent` at `torrent`, which must answer 201; its id.
    pub fn add_torrent_file(&self, torrent: &Path) -> String {
        let bytes = fs::read(torrent).expect("reading the .torrent");
        let b64 = data_encoding::BASE64.encode(&bytes);
        let added = self.post(
            "/api/torrents",
            &serde_json::json!({ "torrent_base64": b64 }),
        );
        assert_eq!(added.status, 201, "{added:?}");
        added.json()["id"].as_str().expect("an id").to_string()
    }

    /// `GET path`, which must answer 200, as JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let reply = self.get(path);
        assert_eq!(reply.status, 200, "GET {path}: {reply:?}");
        reply.json()
    }
}

/// `serving http://127.0.0.1:PORT/ (peers on port N)` → (PORT, N).
pub fn parse_serving_line(line: &str) -> Option<(u16, u16)> {
    let rest = line.strip_prefix("serving http://127.0.0.1:")?;
    let (port, rest) = rest.split_once("/ (peers on port ")?;
    let peers = rest.strip_suffix(')')?;
    Some((port.parse().ok()?, peers.parse().ok()?))
}

/// An HTTP answer.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header of that name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name (any case).
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:?}"))
    }

    /// The `error.code` of an error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {self:?}"))
            .to_string()
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let cut: String = body.chars().take(2000).collect();
        write!(f, "HTTP {} {:?} {cut}", self.status, self.headers)
    }
}

fn connect(port: u16) -> TcpStream {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, HTTP_LIMIT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .set_write_timeout(Some(HTTP_LIMIT))
        .expect("setting a write timeout");
    stream
        .set_read_timeout(Some(HTTP_LIMIT))
        .expect("setting a read timeout");
    stream
}

/// Writes one HTTP/1.1 request with `Connection: close`. A `Host` in `headers` replaces
/// the default `127.0.0.1:PORT`.
fn send_request(
    stream: &mut TcpStream,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if body.is_some() || !matches!(method, "GET" | "HEAD") {
        head.push_str(&format!(
            "Content-Length: {}\r\n",
            body.map_or(0, <[u8]>::len)
        ));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    stream
        .write_all(&out)
        .unwrap_or_else(|e| panic!("sending {method} {path}: {e}"));
}

/// One request to 127.0.0.1:`port`, answered in full.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut stream = connect(port);
    send_request(&mut stream, port, method, path, headers, body);
    let mut raw = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // The server may reset a connection whose request body it did not read (a
            // refused upload); what arrived before the reset is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => panic!("reading the answer to {method} {path}: {e}"),
        }
        assert!(
            started.elapsed() < HTTP_LIMIT,
            "the answer to {method} {path} took over {HTTP_LIMIT:?}"
        );
    }
    let (status, headers, rest) = parse_head(&raw).unwrap_or_else(|| {
        panic!(
            "no HTTP answer to {method} {path}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    });
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut decoder = Dechunker::default();
        decoder.push(rest);
        decoder.data
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// The status, the headers (names lower-cased) and the bytes after them.
type Head<'a> = (u16, Vec<(String, String)>, &'a [u8]);

fn parse_head(raw: &[u8]) -> Option<Head<'_>> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, &raw[split + 4..]))
}

/// Decodes `Transfer-Encoding: chunked` as bytes arrive.
#[derive(Default)]
struct Dechunker {
    pending: Vec<u8>,
    data: Vec<u8>,
    done: bool,
}

impl Dechunker {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while !self.done {
            let Some(eol) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.pending[..eol]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|e| panic!("bad chunk size {size_text:?}: {e}"));
            if size == 0 {
                self.done = true;
                return;
            }
            if self.pending.len() < eol + 2 + size + 2 {
                return;
            }
            self.data
                .extend_from_slice(&self.pending[eol + 2..eol + 2 + size]);
            self.pending.drain(..eol + 2 + size + 2);
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: String,
}

/// Opens the event stream at `path` and collects events until `enough` says the list is
/// enough or `limit` passes; returns the answer's status, headers and the events.
pub fn read_events(
    daemon: &Daemon,
    path: &str,
    limit: Duration,
    enough: impl Fn(&[Event]) -> bool,
) -> (u16, Vec<(String, String)>, Vec<Event>) {
    let mut stream = connect(daemon.port);
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("setting a read timeout");
    let bearer = daemon.bearer.as_ref().map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Accept", "text/event-stream")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    send_request(&mut stream, daemon.port, "GET", path, &headers, None);
    let deadline = Instant::now() + limit;
    let mut raw = Vec::new();
    let mut head: Option<(u16, Vec<(String, String)>)> = None;
    let mut chunked = false;
    let mut decoder = Dechunker::default();
    let mut events = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("reading the event stream {path}: {e}"),
        };
        if head.is_none() {
            raw.extend_from_slice(&buf[..n]);
            let Some((status, hs, rest)) = parse_head(&raw) else {
                continue;
            };
            chunked = hs
                .iter()
                .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
            let rest = rest.to_vec();
            head = Some((status, hs));
            if status != 200 {
                decoder.data = rest;
                break;
            }
            if chunked {
                decoder.push(&rest);
            } else {
                decoder.data.extend_from_slice(&rest);
            }
        } else if chunked {
            decoder.push(&buf[..n]);
        } else {
            decoder.data.extend_from_slice(&buf[..n]);
        }
        // Complete events end with a blank line.
        while let Some(end) = decoder.data.windows(2).position(|w| w == b"\n\n") {
            let text = String::from_utf8_lossy(&decoder.data[..end]).into_owned();
            decoder.data.drain(..end + 2);
            let mut event = Event {
                name: "message".into(),
                data: String::new(),
            };
            for line in text.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event.name = name.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:") {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(data.trim_start());
                }
            }
            events.push(event);
        }
        if enough(&events) {
            break;
        }
    }
    let (status, headers) = head.unwrap_or_else(|| panic!("no answer on the event stream {path}"));
    (status, headers, events)
}
