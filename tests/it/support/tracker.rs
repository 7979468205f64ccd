//! A real tracker for tests: Debian's opentracker on 127.0.0.1, serving HTTP and UDP on
//! one port, plus a small HTTP announce client to probe it with.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use torrent_actors::bencode;
use torrent_actors::InfoHash;

use super::process::{free_port, ChildGuard, POLL};

/// How long opentracker may take to answer its first announce.
const START_LIMIT: Duration = Duration::from_secs(10);

/// Fresh ports tried when opentracker cannot bind the first one.
const PORT_ATTEMPTS: usize = 3;

/// A running opentracker that knows only the info-hashes it was started with. Dropping it
/// kills the process by its PID.
pub struct Tracker {
    // Declared first so the process is gone before its folder is removed.
    child: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl Tracker {
    /// Starts opentracker on 127.0.0.1 (HTTP and UDP on the same port) with `info_hashes`
    /// as its whitelist, and returns once it has accepted an announce for the first of
    /// them (or, with none, once it answers HTTP at all).
    pub fn start(info_hashes: &[InfoHash]) -> Tracker {
        let dir = tempfile::Builder::new()
            .prefix("opentracker-")
            .tempdir()
            .expect("temp folder for opentracker");
        // Debian's opentracker only serves whitelisted hashes. Run as root it chroots into
        // `-d` and drops to `nobody`, so the whitelist is named relative to that folder,
        // and both must be readable by anyone.
        let root = dir.path().join("root");
        fs::create_dir(&root).expect("creating the tracker's root folder");
        let whitelist: String = info_hashes.iter().map(|h| h.to_hex() + "\n").collect();
        let list_path = root.join("whitelist.txt");
        fs::write(&list_path, whitelist).expect("writing the tracker whitelist");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
            .expect("making the tracker folder world-readable");
        fs::set_permissions(&list_path, fs::Permissions::from_mode(0o644))
            .expect("making the whitelist world-readable");

        let log_path = dir.path().join("opentracker.log");
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let log = fs::File::create(&log_path).expect("creating the tracker log");
            let mut cmd = Command::new("opentracker");
            // `-i` comes first: it sets the address the following `-p` (TCP) and `-P`
            // (UDP) bind, so nothing listens beyond loopback.
            cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .args(["-P", &port.to_string(), "-d"])
                .arg(&root)
                .args(["-w", "whitelist.txt"])
                // Without root there is no chroot, and the relative whitelist name is
                // then resolved against the working folder.
                .current_dir(&root)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("sharing the tracker log"))
                .stderr(log);
            let mut child = ChildGuard::spawn(cmd, "opentracker");
            match wait_until_serving(&mut child, port, info_hashes.first()) {
                Ok(()) => return Tracker { child, port, dir },
                Err(why) => {
                    child.kill();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    failures.push(format!("port {port}: {why}\n{log}"));
                }
            }
        }
        panic!(
            "opentracker did not start on any of {PORT_ATTEMPTS} ports:\n{}",
            failures.join("\n")
        );
    }

    /// The port, for HTTP and UDP alike.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/announce`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    /// `udp://127.0.0.1:PORT/announce`.
    pub fn udp_url(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.port)
    }

    /// The process id, e.g. to check it is gone after a drop.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// What opentracker printed so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("opentracker.log")).unwrap_or_default()
    }

    /// The folder opentracker runs in (its chroot when run as root).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

fn wait_until_serving(
    child: &mut ChildGuard,
    port: u16,
    probe_hash: Option<&InfoHash>,
) -> Result<(), String> {
    let deadline = Instant::now() + START_LIMIT;
    // Any hash will do to see that HTTP is up when there is no whitelisted one.
    let hash = probe_hash.copied().unwrap_or(InfoHash([0; 20]));
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(status) = child.try_status() {
            return Err(format!("opentracker exited early ({status})"));
        }
        // `stopped` with port 1 asks the tracker to forget this peer, so the probe leaves
        // no trace in the swarm the test builds next.
        let probe = Announce {
            event: Some("stopped"),
            port: 1,
            ..Announce::new(hash)
        };
        match http_announce(port, &probe) {
            Ok(reply) if probe_hash.is_none() || reply.failure.is_none() => return Ok(()),
            Ok(reply) => last = format!("refused: {:?}", reply.failure),
            Err(e) => last = e,
        }
        thread::sleep(POLL * 5);
    }
    Err(format!(
        "not serving within {START_LIMIT:?}; last probe: {last}"
    ))
}

/// The parameters of one HTTP announce.
#[derive(Debug, Clone)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    /// The port the announcing peer says it listens on.
    pub port: u16,
    pub left: u64,
    /// `started`, `completed`, `stopped`, or none for a regular announce.
    pub event: Option<&'static str>,
}

impl Announce {
    /// A regular announce of a seeder (nothing left) on port 6881 with a fixed peer id.
    pub fn new(info_hash: InfoHash) -> Announce {
        Announce {
            info_hash,
            peer_id: *b"-HARNESS-00000000000",
            port: 6881,
            left: 0,
            event: None,
        }
    }
}

/// What a tracker answered to an announce.
#[derive(Debug, Clone)]
pub struct AnnounceReply {
    /// `failure reason`: the tracker refused the announce.
    pub failure: Option<String>,
    pub interval: Option<i64>,
    /// The compact peer list.
    pub peers: Vec<SocketAddrV4>,
}

/// Sends `announce` to the tracker at `http://127.0.0.1:PORT/announce` over plain HTTP and
/// decodes the reply. `Err` says what went wrong on the way (connect, HTTP status,
/// bencode).
pub fn http_announce(port: u16, announce: &Announce) -> Result<AnnounceReply, String> {
    let mut query = format!(
        "/announce?info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left={}&compact=1",
        percent_encode(announce.info_hash.as_bytes()),
        percent_encode(&announce.peer_id),
        announce.port,
        announce.left
    );
    if let Some(event) = announce.event {
        query.push_str("&event=");
        query.push_str(event);
    }
    let (status, body) = http_get(port, &query)?;
    if status != 200 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let value = bencode::decode(&body).map_err(|e| format!("bad bencode ({e}): {body:?}"))?;
    let dict = value
        .as_dict()
        .ok_or_else(|| format!("reply is not a dictionary: {body:?}"))?;
    let failure = dict
        .get(b"failure reason")
        .map(|v| String::from_utf8_lossy(v.as_bytes().unwrap_or(b"?")).into_owned());
    let interval = dict.get(b"interval").and_then(|v| v.as_int());
    let peers = dict
        .get(b"peers")
        .and_then(|v| v.as_bytes())
        .unwrap_or(&[])
        .chunks_exact(6)
        .map(|c| {
            SocketAddrV4::new(
                Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                u16::from_be_bytes([c[4], c[5]]),
            )
        })
        .collect();
    Ok(AnnounceReply {
        failure,
        interval,
        peers,
    })
}

/// One HTTP/1.0 GET to 127.0.0.1:`port`, every step bounded in time. Returns the status
/// code and the body.
fn http_get(port: u16, path_and_query: &str) -> Result<(u16, Vec<u8>), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let limit = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    // HTTP/1.0 makes the server close the connection after the reply, which marks the
    // end of the body without parsing lengths or chunks.
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// Percent-encodes every byte, which any tracker must accept.
fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}
