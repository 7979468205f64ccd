//! libtorrent peers for tests, driven through `tests/support/lt_peer.py`: a seeder that
//! runs beside a test and a leecher that downloads to completion or a deadline.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{free_port, ChildGuard, POLL};

/// Debian's interpreter: python3-libtorrent is installed for it alone, and a `python3`
/// earlier on PATH (pyenv) cannot import it.
const PYTHON: &str = "/usr/bin/python3";

/// The peer script, found from the crate root so tests run from any folder.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_peer.py");

/// The script's exit code when its listen port was taken.
const EXIT_LISTEN: i32 = 4;

/// Fresh ports tried when a peer cannot bind the first one.
const PORT_ATTEMPTS: usize = 3;

/// How a libtorrent seeder runs.
#[derive(Debug, Clone)]
pub struct SeedOpts {
    /// Upload cap in bytes per second, loopback peers included.
    pub upload_limit: Option<u64>,
    /// Exit abruptly, dropping every connection, once this many payload bytes went out.
    pub stop_after_upload: Option<u64>,
    /// Trust the data instead of hashing it first (pieces are checked when first read).
    pub seed_mode: bool,
    /// Be ready without a tracker reply, for tests where peers dial the seeder directly.
    pub ready_without_announce: bool,
    /// How long to wait for the seeder to be checked, listening and announced.
    pub ready_timeout: Duration,
    /// A fixed listen port; by default a free one is picked (and re-picked if taken).
    pub port: Option<u16>,
    /// Peers to dial and stay connected to, seeds included (loopback only).
    pub connect: Vec<SocketAddr>,
    /// Run libtorrent's DHT on the listen port (UDP, 127.0.0.1 only), bootstrapped from
    /// these nodes (loopback only; the list may be empty), and announce the torrent to
    /// it every two seconds. The seeder is then ready once its DHT runs, without waiting
    /// for a tracker. `None` keeps the DHT off.
    pub dht_bootstrap: Option<Vec<SocketAddr>>,
    /// RC4 message stream encryption forced on every connection, both ways; the seeder
    /// then logs each peer's flags once a second ([`peer_flags`]).
    pub encryption_forced: bool,
    /// The carriers it uses, both ways; with uTP in play it logs each peer's flags once
    /// a second ([`peer_flags`]).
    pub transport: LtTransport,
}

impl SeedOpts {
    /// Ready without a tracker: for peers that dial the seeder directly. The tests' most
    /// common seeder.
    pub fn direct() -> SeedOpts {
        SeedOpts {
            ready_without_announce: true,
            ..SeedOpts::default()
        }
    }
}

/// Which carriers a libtorrent peer uses (`lt_peer.py --transport`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LtTransport {
    /// TCP only: the tests' default.
    #[default]
    Tcp,
    /// uTP only, on the UDP port of the same number.
    Utp,
    /// Both, uTP dialed first (libtorrent's own default).
    Both,
}

impl LtTransport {
    fn arg(self) -> &'static str {
        match self {
            LtTransport::Tcp => "tcp",
            LtTransport::Utp => "utp",
            LtTransport::Both => "both",
        }
    }
}

impl Default for SeedOpts {
    fn default() -> Self {
        SeedOpts {
            upload_limit: None,
            stop_after_upload: None,
            seed_mode: false,
            ready_without_announce: false,
            ready_timeout: Duration::from_secs(30),
            port: None,
            connect: Vec::new(),
            dht_bootstrap: None,
            encryption_forced: false,
            transport: LtTransport::Tcp,
        }
    }
}

/// A libtorrent seeder on 127.0.0.1. Dropping it kills the process by its PID; the
/// script also ends by itself after ten minutes, so nothing outlives a crashed test run
/// for long.
pub struct LtSeeder {
    // Declared first so the process is gone before its folder is removed.
    child: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl LtSeeder {
    /// Starts seeding `torrent` from `data_dir` (the folder the torrent's name is under)
    /// and returns once the seeder has checked its data, listens, and has announced to
    /// the torrent's tracker (with `dht_bootstrap`: runs its DHT). Panics with the seeder's log if it dies or is not ready in
    /// time.
    pub fn start(torrent: &Path, data_dir: &Path, opts: SeedOpts) -> LtSeeder {
        let dir = tempfile::Builder::new()
            .prefix("lt-seeder-")
            .tempdir()
            .expect("temp folder for the seeder");
        let ready = dir.path().join("ready.json");
        let log_path = dir.path().join("seeder.log");
        let attempts = if opts.port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        for node in opts.dht_bootstrap.iter().flatten() {
            assert!(
                node.ip().is_loopback(),
                "dht node {node} is not on loopback; tests stay on 127.0.0.1"
            );
        }
        let mut failures = Vec::new();
        for _ in 0..attempts {
            let port = opts.port.unwrap_or_else(free_port);
            let log = fs::File::create(&log_path).expect("creating the seeder log");
            let mut cmd = Command::new(PYTHON);
            cmd.arg(SCRIPT)
                .arg("seed")
                .arg("--torrent")
                .arg(torrent)
                .arg("--data")
                .arg(data_dir)
                .args(["--port", &port.to_string()])
                .arg("--ready")
                .arg(&ready)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("sharing the seeder log"))
                .stderr(log);
            if let Some(limit) = opts.upload_limit {
                cmd.args(["--upload-limit", &limit.to_string()]);
            }
            if let Some(bytes) = opts.stop_after_upload {
                cmd.args(["--stop-after-upload", &bytes.to_string()]);
            }
            if opts.seed_mode {
                cmd.arg("--seed-mode");
            }
            if opts.ready_without_announce {
                cmd.arg("--ready-without-announce");
            }
            if opts.encryption_forced {
                cmd.arg("--encryption-forced");
            }
            cmd.args(["--transport", opts.transport.arg()]);
            for peer in &opts.connect {
                cmd.args(["--connect", &peer.to_string()]);
            }
            if let Some(nodes) = &opts.dht_bootstrap {
                let list: Vec<String> = nodes.iter().map(SocketAddr::to_string).collect();
                cmd.arg(format!("--dht-bootstrap={}", list.join(",")));
            }
            let mut child = ChildGuard::spawn(cmd, "libtorrent seeder");
            let deadline = Instant::now() + opts.ready_timeout;
            let outcome = loop {
                if ready.exists() {
                    break Ok(());
                }
                if let Some(status) = child.try_status() {
                    break Err(status);
                }
                if Instant::now() >= deadline {
                    child.kill();
                    panic!(
                        "the libtorrent seeder was not ready within {:?}:\n{}",
                        opts.ready_timeout,
                        read_log(&log_path)
                    );
                }
                thread::sleep(POLL);
            };
            match outcome {
                Ok(()) => return LtSeeder { child, port, dir },
                Err(status) if status.code() == Some(EXIT_LISTEN) => {
                    failures.push(format!("port {port} was taken:\n{}", read_log(&log_path)));
                }
                Err(status) => panic!(
                    "the libtorrent seeder exited before it was ready ({status}):\n{}",
                    read_log(&log_path)
                ),
            }
        }
        panic!(
            "the libtorrent seeder could not listen on any of {attempts} ports:\n{}",
            failures.join("\n")
        );
    }

    /// The listen port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, for dialling the seeder directly.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Waits up to `timeout` for the seeder to exit by itself (e.g. after
    /// `stop_after_upload`); `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }

    /// Kills the seeder now, by its PID, e.g. to test a peer vanishing.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.child.kill()
    }

    /// Everything the seeder printed so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("seeder.log"))
    }

    /// Payload bytes uploaded, as of the seeder's latest once-a-second log line.
    pub fn uploaded(&self) -> u64 {
        self.log()
            .lines()
            .filter_map(|l| l.split("uploaded ").nth(1)?.split(' ').next()?.parse().ok())
            .max()
            .unwrap_or(0)
    }
}

/// How a libtorrent leecher runs.
#[derive(Debug, Clone)]
pub struct LeechOpts {
    /// The leecher gives up (exit code 3) when not finished after this long.
    pub timeout: Duration,
    /// Peers to dial directly, besides those the tracker names; loopback only.
    pub peers: Vec<SocketAddr>,
    /// A fixed listen port; by default a free one is picked.
    pub port: Option<u16>,
    /// Fetch this magnet link instead of reading the torrent file (its metadata then
    /// comes from peers).
    pub magnet: Option<String>,
    /// RC4 message stream encryption forced on every connection, both ways; the leecher
    /// then logs each peer's flags once a second ([`peer_flags`]).
    pub encryption_forced: bool,
    /// The carriers it uses, both ways.
    pub transport: LtTransport,
}

impl LeechOpts {
    /// Tracker peers only, giving up after `timeout`.
    pub fn new(timeout: Duration) -> LeechOpts {
        LeechOpts {
            timeout,
            peers: Vec::new(),
            port: None,
            magnet: None,
            encryption_forced: false,
            transport: LtTransport::Tcp,
        }
    }
}

/// How a leecher run ended.
#[derive(Debug)]
pub struct LeechOutcome {
    pub status: ExitStatus,
    /// Every piece downloaded and the session shut down, so the files are complete.
    pub finished: bool,
    /// The script's JSON summary (progress, bytes, seconds), if it got to print it.
    pub summary: Option<serde_json::Value>,
    /// Everything the leecher printed on stderr.
    pub log: String,
    /// Wall time from start to exit.
    pub elapsed: Duration,
}

impl LeechOutcome {
    /// Panics with the leecher's log unless it finished.
    pub fn assert_finished(&self) {
        assert!(
            self.finished,
            "the libtorrent leecher did not finish ({}) after {:?}; summary {:?}\n{}",
            self.status, self.elapsed, self.summary, self.log
        );
    }
}

/// A libtorrent leecher on 127.0.0.1. Dropping it kills the process by its PID.
pub struct LtLeecher {
    // Declared first so the process is gone before its folder is removed.
    child: ChildGuard,
    port: u16,
    dir: TempDir,
    timeout: Duration,
    started: Instant,
}

impl LtLeecher {
    /// Starts downloading `torrent` into `out_dir` (the torrent's name goes under it) and
    /// returns at once, for tests that must act while the download runs.
    pub fn spawn(torrent: &Path, out_dir: &Path, opts: &LeechOpts) -> LtLeecher {
        for peer in &opts.peers {
            assert!(
                peer.ip().is_loopback(),
                "peer {peer} is not on loopback; tests stay on 127.0.0.1"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("lt-leecher-")
            .tempdir()
            .expect("temp folder for the leecher");
        let port = opts.port.unwrap_or_else(free_port);
        let stdout = fs::File::create(dir.path().join("summary.json"))
            .expect("creating the leecher summary file");
        let stderr =
            fs::File::create(dir.path().join("leecher.log")).expect("creating the leecher log");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(SCRIPT).arg("leech");
        match &opts.magnet {
            Some(magnet) => cmd.args(["--magnet", magnet]),
            None => cmd.arg("--torrent").arg(torrent),
        };
        cmd.arg("--out")
            .arg(out_dir)
            .args(["--port", &port.to_string()])
            .args(["--timeout", &format!("{:.3}", opts.timeout.as_secs_f64())])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for peer in &opts.peers {
            cmd.args(["--peer", &peer.to_string()]);
        }
        if opts.encryption_forced {
            cmd.arg("--encryption-forced");
        }
        cmd.args(["--transport", opts.transport.arg()]);
        LtLeecher {
            child: ChildGuard::spawn(cmd, "libtorrent leecher"),
            port,
            dir,
            timeout: opts.timeout,
            started: Instant::now(),
        }
    }

    /// Downloads `torrent` into `out_dir` and returns how it ended; a taken listen port
    /// is retried on a fresh one.
    pub fn run(torrent: &Path, out_dir: &Path, opts: &LeechOpts) -> LeechOutcome {
        let attempts = if opts.port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        let mut outcome = None;
        for _ in 0..attempts {
            let done = LtLeecher::spawn(torrent, out_dir, opts).wait();
            if done.status.code() != Some(EXIT_LISTEN) {
                return done;
            }
            outcome = Some(done);
        }
        outcome.expect("at least one leecher attempt")
    }

    /// The listen port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, for sending it a signal (SIGTERM stops it with a summary) while it
    /// runs; the guard still owns the process.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `127.0.0.1:port`, for dialling the leecher directly.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Waits for the leecher to exit. It stops itself at its timeout; this wait allows
    /// that plus time for a session shutdown, then kills it by PID and panics.
    pub fn wait(mut self) -> LeechOutcome {
        let backstop = self.timeout + Duration::from_secs(20);
        let status = match self
            .child
            .wait_timeout(backstop.saturating_sub(self.started.elapsed()))
        {
            Some(status) => status,
            None => {
                self.child.kill();
                panic!(
                    "the libtorrent leecher overran its own timeout of {:?} and was killed:\n{}",
                    self.timeout,
                    self.log()
                );
            }
        };
        let summary = fs::read_to_string(self.dir.path().join("summary.json"))
            .ok()
            .and_then(|s| serde_json::from_str(s.trim()).ok());
        LeechOutcome {
            status,
            finished: status.success(),
            summary,
            log: self.log(),
            elapsed: self.started.elapsed(),
        }
    }

    /// Everything the leecher printed on stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("leecher.log"))
    }
}

/// libtorrent's `peer_info` flag of an RC4-encrypted connection.
pub const LT_RC4_ENCRYPTED: u64 = 0x80000;

/// libtorrent's `peer_info::utp_socket` flag: the connection is carried by uTP.
pub const LT_UTP_SOCKET: u64 = 0x20000;

/// Every `(peer, flags)` a libtorrent log with encryption forced reported.
pub fn peer_flags(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("] peer ").nth(1)?;
            let (peer, flags) = rest.split_once(" flags 0x")?;
            Some((
                peer.to_string(),
                u64::from_str_radix(flags.trim(), 16).ok()?,
            ))
        })
        .collect()
}

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("<no log at {}: {e}>", path.display()))
}
