//! Message stream encryption against peers nobody on the project wrote, all on 127.0.0.1:
//! a libtorrent seeder that forces RC4 serves `get` byte-identical files, and libtorrent's
//! own peer flags prove the connection was RC4; a libtorrent leecher that forces RC4
//! downloads from our `seed`; `--encryption require` and `off` never meet; and scripted
//! hostile peers (a garbage or truncated key, a wrong verification constant, padding over
//! 512 bytes, a stall) are each dropped with their reason logged while an honest peer
//! completes the transfer. The hostile scripts do their own key exchange with the same
//! crates the engine uses, so they can break the handshake at exactly one point.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use num_bigint::BigUint;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};
use tempfile::TempDir;
use torrent_actors::wire::mse::{CRYPTO_RC4, DH_KEY_LEN, PRIME};
use torrent_actors::InfoHash;

use crate::support::{
    assert_same_files, free_port, make_torrent, peer_flags, read_metainfo, run_until, run_within,
    ChildGuard, LeechOpts, LtLeecher, LtSeeder, LtTransport, Payload, SeedOpts, LT_RC4_ENCRYPTED,
};

/// How long any one download may take; loopback transfers of these sizes take seconds.
pub(crate) const DOWNLOAD_LIMIT: Duration = Duration::from_secs(90);

/// How long our seed may take to check its data and start listening.
pub(crate) const READY_LIMIT: Duration = Duration::from_secs(60);

/// A payload and its torrent in a fresh folder.
pub(crate) struct Fixture {
    pub(crate) tmp: TempDir,
    pub(crate) payload: Payload,
    pub(crate) torrent: PathBuf,
}

impl Fixture {
    pub(crate) fn new(len: u64) -> Fixture {
        let tmp = tempfile::tempdir().expect("temp folder for an encryption test");
        let payload = Payload::single(&tmp.path().join("data"), "file.bin", len);
        let torrent = tmp.path().join("t.torrent");
        make_torrent(&payload.root(), &torrent, 16, &[]);
        Fixture {
            tmp,
            payload,
            torrent,
        }
    }

    pub(crate) fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub(crate) fn info_hash(&self) -> InfoHash {
        read_metainfo(&self.torrent).info_hash
    }

    pub(crate) fn assert_downloaded(&self, out: &Path) {
        assert_same_files(&self.payload.dir, out, &self.payload.files);
    }
}

/// The binary under test, with DHT bootstrapping off so nothing leaves the machine.
pub(crate) fn ours() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "");
    cmd
}

/// `get -vv` on 127.0.0.1 from `peers` only, with `extra` flags.
pub(crate) fn get(f: &Fixture, out: &Path, peers: &[SocketAddr], extra: &[&str]) -> Command {
    let mut cmd = ours();
    cmd.args([
        "get",
        "-vv",
        "--no-dht",
        "--no-pex",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "-o",
    ])
    .arg(out)
    .args(extra);
    for p in peers {
        cmd.arg("--peer").arg(p.to_string());
    }
    cmd.arg(&f.torrent);
    cmd
}

/// Our `seed` with its output in files read while it runs.
pub(crate) struct OurSeed {
    // Declared first so the process is gone before its folder is removed.
    child: ChildGuard,
    logs: TempDir,
    pub(crate) addr: SocketAddr,
}

impl OurSeed {
    /// Starts `seed -vv` with `extra` flags and waits for its `seeding NAME on ADDR` line.
    pub(crate) fn start(f: &Fixture, extra: &[&str]) -> OurSeed {
        OurSeed::start_torrent(f, &f.torrent, extra)
    }

    /// [`OurSeed::start`] with another copy of the fixture's torrent (e.g. one that
    /// announces to a tracker).
    fn start_torrent(f: &Fixture, torrent: &Path, extra: &[&str]) -> OurSeed {
        let logs = tempfile::Builder::new()
            .prefix("ta-encryption-")
            .tempdir()
            .expect("temp folder for the seed's output");
        let mut cmd = ours();
        cmd.args([
            "seed",
            "-vv",
            "--no-dht",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--dir",
        ])
        .arg(&f.payload.dir)
        .args(extra)
        .arg(torrent)
        .stdin(Stdio::null())
        .stdout(File::create(logs.path().join("stdout")).expect("seed stdout file"))
        .stderr(File::create(logs.path().join("stderr")).expect("seed stderr file"));
        let mut child = ChildGuard::spawn(cmd, "torrent-actors seed");
        let deadline = Instant::now() + READY_LIMIT;
        let addr = loop {
            let stdout = fs::read_to_string(logs.path().join("stdout")).unwrap_or_default();
            let addr = stdout.lines().find_map(|line| {
                let (_, addr) = line.strip_prefix("seeding ")?.rsplit_once(" on ")?;
                addr.trim().parse::<SocketAddr>().ok()
            });
            if let Some(addr) = addr {
                break addr;
            }
            assert!(
                child.try_status().is_none() && Instant::now() < deadline,
                "our seed did not start:\n{}",
                fs::read_to_string(logs.path().join("stderr")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        };
        OurSeed { child, logs, addr }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub(crate) fn stderr(&self) -> String {
        fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for OurSeed {
    fn drop(&mut self) {
        self.child.kill();
    }
}

/// Runs `cmd` and returns (exit code, stderr), panicking if it overran.
pub(crate) fn run(cmd: Command, limit: Duration) -> (Option<i32>, String) {
    let output = run_within(cmd, limit);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn get_downloads_from_a_libtorrent_seeder_that_forces_rc4() {
    let f = Fixture::new(3 * 1024 * 1024 + 777);
    let seeder = LtSeeder::start(
        &f.torrent,
        &f.payload.dir,
        SeedOpts {
            ready_without_announce: true,
            encryption_forced: true,
            // Some three seconds a download, so the seeder's flags line (written when its
            // upload total moves) finds the connection still open.
            upload_limit: Some(1024 * 1024),
            ..SeedOpts::default()
        },
    );
    for mode in ["prefer", "require"] {
        let out = f.out(mode);
        let (code, stderr) = run(
            get(&f, &out, &[seeder.addr()], &["--encryption", mode]),
            DOWNLOAD_LIMIT,
        );
        assert_eq!(code, Some(0), "get --encryption {mode} failed:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        f.assert_downloaded(&out);
    }
    // libtorrent's own word on the connections it served.
    let flags = peer_flags(&seeder.log());
    assert!(
        !flags.is_empty() && flags.iter().all(|(_, f)| f & LT_RC4_ENCRYPTED != 0),
        "libtorrent did not report RC4 connections: {flags:?}\n{}",
        seeder.log()
    );
}

#[test]
fn a_libtorrent_leecher_that_forces_rc4_downloads_from_our_seed() {
    let f = Fixture::new(2 * 1024 * 1024 + 5);
    // Slow enough (some four seconds) for the leecher's once-a-second peer flags line.
    let seed = OurSeed::start(&f, &["--upload-limit", "500"]);
    let out = f.out("lt");
    let outcome = LtLeecher::run(
        &f.torrent,
        &out,
        &LeechOpts {
            peers: vec![seed.addr],
            encryption_forced: true,
            ..LeechOpts::new(DOWNLOAD_LIMIT)
        },
    );
    outcome.assert_finished();
    f.assert_downloaded(&out);
    assert!(!seed.stderr().contains("panicked"), "{}", seed.stderr());
    let flags = peer_flags(&outcome.log);
    assert!(
        flags.iter().any(|(_, f)| f & LT_RC4_ENCRYPTED != 0),
        "libtorrent did not report an RC4 connection: {flags:?}\n{}",
        outcome.log
    );
}

#[test]
fn require_and_off_never_meet_and_each_side_says_why() {
    let f = Fixture::new(256 * 1024);
    let seed = OurSeed::start(&f, &["--encryption", "require", "--handshake-timeout", "3"]);
    // A plaintext-only leecher finds no peer it can talk to: exit 7 after the peer timeout.
    let (code, stderr) = run(
        get(
            &f,
            &f.out("off"),
            &[seed.addr],
            &["--encryption", "off", "--peer-timeout", "4"],
        ),
        DOWNLOAD_LIMIT,
    );
    assert_eq!(
        code,
        Some(7),
        "a plaintext get reached a seed requiring RC4:\n{stderr}"
    );
    assert!(
        seed.stderr().contains("plaintext handshake refused"),
        "the seed did not say why it refused:\n{}",
        seed.stderr()
    );
    // Our own encrypted leecher is served.
    let out = f.out("require");
    let (code, stderr) = run(
        get(&f, &out, &[seed.addr], &["--encryption", "require"]),
        DOWNLOAD_LIMIT,
    );
    assert_eq!(code, Some(0), "{stderr}");
    f.assert_downloaded(&out);
    drop(seed);

    // And the other way round: a seed with encryption off refuses an encrypted handshake.
    let seed = OurSeed::start(&f, &["--encryption", "off", "--handshake-timeout", "3"]);
    let (code, stderr) = run(
        get(
            &f,
            &f.out("require-to-off"),
            &[seed.addr],
            &["--encryption", "require", "--peer-timeout", "4"],
        ),
        DOWNLOAD_LIMIT,
    );
    assert_eq!(
        code,
        Some(7),
        "an encrypted get reached a seed with it off:\n{stderr}"
    );
    assert!(
        seed.stderr()
            .contains("not a plaintext handshake, and encryption is off"),
        "the seed did not say why it refused:\n{}",
        seed.stderr()
    );
    // `prefer` falls back to plaintext and is served.
    let out = f.out("prefer-to-off");
    let (code, stderr) = run(get(&f, &out, &[seed.addr], &[]), DOWNLOAD_LIMIT);
    assert_eq!(code, Some(0), "{stderr}");
    f.assert_downloaded(&out);
}

// ---------------------------------------------------------------------------------------
// Scripted hostile peers
// ---------------------------------------------------------------------------------------

/// SHA-1 of the concatenated parts.
fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A key pair of the exchange, and the secret and ciphers it leads to.
struct Keys {
    private: BigUint,
    public: Vec<u8>,
}

impl Keys {
    fn new() -> Keys {
        let private = BigUint::from_bytes_be(&rand::random::<[u8; 20]>());
        let public = BigUint::from(2u32).modpow(&private, &BigUint::from_bytes_be(&PRIME));
        Keys {
            private,
            public: pad96(&public),
        }
    }

    fn secret(&self, theirs: &[u8]) -> Vec<u8> {
        let y = BigUint::from_bytes_be(theirs);
        pad96(&y.modpow(&self.private, &BigUint::from_bytes_be(&PRIME)))
    }
}

fn pad96(n: &BigUint) -> Vec<u8> {
    let bytes = n.to_bytes_be();
    let mut out = vec![0u8; DH_KEY_LEN - bytes.len()];
    out.extend_from_slice(&bytes);
    out
}

/// The RC4 cipher of one direction ("keyA" or "keyB"), past its first 1024 bytes.
fn cipher(which: &[u8], secret: &[u8], skey: &InfoHash) -> Rc4 {
    let mut rc4 = Rc4::new_from_slice(&sha1(&[which, secret, &skey.0])).expect("RC4 key");
    rc4.apply_keystream(&mut [0u8; 1024]);
    rc4
}

/// How a hostile peer breaks the encrypted handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    /// Random bytes where the public key and what follows belong.
    GarbageKey,
    /// 50 bytes of a key, then silence with the connection open.
    TruncatedKey,
    /// A correct key, then a verification constant that is not zeros.
    WrongVc,
    /// A correct key and constant, then a padding length of 1000.
    PadTooLong,
}

/// Plays `how` as the initiator (it dials `target`) or the receiver (it is dialed, at the
/// returned address), once per connection, until the test ends.
struct HostileMse {
    addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl HostileMse {
    /// A receiver listening on 127.0.0.1.
    fn receiver(how: Break, skey: InfoHash) -> HostileMse {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a hostile peer");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            // Bounded: a test lasts minutes at most.
            let deadline = Instant::now() + Duration::from_secs(300);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let flag = flag.clone();
                        thread::spawn(move || {
                            let _ = play_receiver(stream, how, skey, &flag);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HostileMse {
            addr: Some(addr),
            stop,
            threads: vec![thread],
        }
    }

    /// An initiator dialing `target` once.
    fn initiator(how: Break, skey: InfoHash, target: SocketAddr) -> HostileMse {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            if let Ok(stream) = TcpStream::connect(target) {
                let _ = play_initiator(stream, how, skey, &flag);
            }
        });
        HostileMse {
            addr: None,
            stop,
            threads: vec![thread],
        }
    }
}

impl Drop for HostileMse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Keeps a connection open and silent until the test ends (or five minutes pass).
fn stall(stream: &mut TcpStream, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut sink = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => return,
            _ => continue,
        }
    }
}

/// Answers a client that dialed us, breaking the handshake as `how` says.
fn play_receiver(
    mut stream: TcpStream,
    how: Break,
    skey: InfoHash,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut ya = [0u8; DH_KEY_LEN];
    stream.read_exact(&mut ya)?;
    match how {
        Break::GarbageKey => {
            let garbage: Vec<u8> = (0..DH_KEY_LEN + 700).map(|_| rand::random()).collect();
            stream.write_all(&garbage)?;
        }
        Break::TruncatedKey => {
            stream.write_all(&Keys::new().public[..50])?;
        }
        Break::WrongVc | Break::PadTooLong => {
            let keys = Keys::new();
            let secret = keys.secret(&ya);
            let mut to_a = cipher(b"keyB", &secret, &skey);
            let mut reply = keys.public.clone();
            let (vc, pad) = match how {
                Break::WrongVc => ([9u8; 8], 0u16),
                _ => ([0u8; 8], 1000u16),
            };
            let mut step4 = vc.to_vec();
            step4.extend_from_slice(&CRYPTO_RC4.to_be_bytes());
            step4.extend_from_slice(&pad.to_be_bytes());
            // Enough after the key that a search for the constant runs out of room.
            step4.extend(std::iter::repeat_n(0u8, 600));
            to_a.apply_keystream(&mut step4);
            reply.extend_from_slice(&step4);
            stream.write_all(&reply)?;
        }
    }
    stall(&mut stream, stop);
    Ok(())
}

/// Dials a client, breaking the handshake as `how` says.
fn play_initiator(
    mut stream: TcpStream,
    how: Break,
    skey: InfoHash,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    match how {
        Break::GarbageKey => {
            let garbage: Vec<u8> = (0..DH_KEY_LEN + 700).map(|_| rand::random()).collect();
            stream.write_all(&garbage)?;
        }
        Break::TruncatedKey => {
            stream.write_all(&Keys::new().public[..50])?;
        }
        Break::WrongVc | Break::PadTooLong => {
            let keys = Keys::new();
            stream.write_all(&keys.public)?;
            let mut yb = [0u8; DH_KEY_LEN];
            stream.read_exact(&mut yb)?;
            let secret = keys.secret(&yb);
            let mut to_b = cipher(b"keyA", &secret, &skey);
            let mut step3 = sha1(&[b"req1", &secret]).to_vec();
            let req2 = sha1(&[b"req2", &skey.0]);
            let req3 = sha1(&[b"req3", &secret]);
            step3.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
            let (vc, pad) = match how {
                Break::WrongVc => ([9u8; 8], 0u16),
                _ => ([0u8; 8], 1000u16),
            };
            let mut rest = vc.to_vec();
            rest.extend_from_slice(&CRYPTO_RC4.to_be_bytes());
            rest.extend_from_slice(&pad.to_be_bytes());
            to_b.apply_keystream(&mut rest);
            step3.extend_from_slice(&rest);
            stream.write_all(&step3)?;
        }
    }
    stall(&mut stream, stop);
    Ok(())
}

const ALL_BREAKS: [Break; 4] = [
    Break::GarbageKey,
    Break::TruncatedKey,
    Break::WrongVc,
    Break::PadTooLong,
];

#[test]
fn hostile_encrypted_peers_we_dial_are_dropped_with_a_reason_and_the_honest_one_serves() {
    let f = Fixture::new(1024 * 1024 + 3);
    // Slow enough (some seven seconds) that the stalled peer's 3 s handshake timeout
    // passes during the download.
    let seed = OurSeed::start(&f, &["--encryption", "require", "--upload-limit", "150"]);
    let hostile: Vec<HostileMse> = ALL_BREAKS
        .iter()
        .map(|how| HostileMse::receiver(*how, f.info_hash()))
        .collect();
    let mut peers: Vec<SocketAddr> = hostile.iter().filter_map(|h| h.addr).collect();
    peers.push(seed.addr);
    let out = f.out("dialing");
    let (code, stderr) = run(
        get(
            &f,
            &out,
            &peers,
            &["--encryption", "require", "--handshake-timeout", "3"],
        ),
        DOWNLOAD_LIMIT,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    f.assert_downloaded(&out);
    // Each hostile peer's dial failed for its own reason.
    let reason_of = |addr: SocketAddr| -> String {
        stderr
            .lines()
            .filter(|l| l.contains("dial failed") && l.contains(&addr.to_string()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let expected = [
        (Break::GarbageKey, "no synchronisation mark"),
        (Break::TruncatedKey, "timed out"),
        (Break::WrongVc, "no synchronisation mark"),
        (Break::PadTooLong, "padding of 1000 bytes"),
    ];
    for ((how, why), h) in expected.iter().zip(&hostile) {
        let lines = reason_of(h.addr.expect("a receiver's address"));
        assert!(
            lines.contains(why),
            "{how:?}: no dial failure saying {why:?}; its lines:\n{lines}\n--- all:\n{stderr}"
        );
    }
}

#[test]
fn hostile_encrypted_peers_that_dial_us_are_dropped_with_a_reason_and_an_honest_leecher_completes()
{
    let f = Fixture::new(2 * 1024 * 1024 + 9);
    let seed = OurSeed::start(&f, &["--handshake-timeout", "3"]);
    let hostile: Vec<HostileMse> = ALL_BREAKS
        .iter()
        .map(|how| HostileMse::initiator(*how, f.info_hash(), seed.addr))
        .collect();
    let out = f.out("lt");
    let outcome = LtLeecher::run(
        &f.torrent,
        &out,
        &LeechOpts {
            peers: vec![seed.addr],
            encryption_forced: true,
            ..LeechOpts::new(DOWNLOAD_LIMIT)
        },
    );
    outcome.assert_finished();
    f.assert_downloaded(&out);
    // The stalled one is dropped within the handshake timeout (3 s); leave it time.
    let deadline = Instant::now() + Duration::from_secs(20);
    let whys = [
        "no synchronisation mark",
        "timed out",
        "wrong verification constant",
        "padding of 1000 bytes",
    ];
    loop {
        let stderr = seed.stderr();
        let missing: Vec<&&str> = whys
            .iter()
            .filter(|why| {
                !stderr
                    .lines()
                    .any(|l| l.contains("incoming handshake failed") && l.contains(**why))
            })
            .collect();
        if missing.is_empty() {
            assert!(!stderr.contains("panicked"), "{stderr}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no incoming handshake failure saying {missing:?}:\n{stderr}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    drop(hostile);
}

#[test]
fn one_shared_listener_finds_each_encrypted_peers_torrent_by_its_skey() {
    use actix::prelude::*;
    use torrent_actors::engine::budget::ConnectionBudget;
    use torrent_actors::engine::connection::{self, ConnectError, ConnectTimeouts};
    use torrent_actors::engine::listener::Listener;
    use torrent_actors::engine::messages::Route;
    use torrent_actors::engine::metrics::{ActorKind, ActorMetrics};
    use torrent_actors::wire::mse::Encryption;
    use torrent_actors::wire::Reserved;
    use torrent_actors::PeerId;

    use crate::listener::{peers_until, start_torrent, torrent};

    let tmp = tempfile::tempdir().expect("temp folder");
    let dir = tmp.path().to_path_buf();
    System::new().block_on(async move {
        let (listener, shared, _) = Listener::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Duration::from_secs(5),
            Encryption::Require,
            torrent_actors::engine::utp::UtpMode::Off,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .await
        .expect("the shared listener binds");
        let budget = ConnectionBudget::new(8);
        let (alpha, beta) = (torrent("alpha.bin"), torrent("beta.bin"));
        let (alpha_hash, beta_hash) = (alpha.info_hash, beta.info_hash);
        let alpha_id = PeerId(*b"-TA0001-alphaalphaal");
        let beta_id = PeerId(*b"-TA0001-betabetabeta");
        let a = start_torrent(alpha, alpha_id, shared, &budget, &dir).await;
        let b = start_torrent(beta, beta_id, shared, &budget, &dir).await;
        for (info_hash, coordinator) in [(alpha_hash, &a), (beta_hash, &b)] {
            listener
                .send(Route {
                    info_hash,
                    to: coordinator.clone().recipient(),
                    metrics: Arc::new(ActorMetrics::detached(ActorKind::Coordinator)),
                })
                .await
                .expect("the listener answers");
        }
        let dial = |info_hash, encryption| {
            connection::connect(
                shared,
                info_hash,
                PeerId(*b"-qB4630-encryptedpe1"),
                Reserved::none(),
                ConnectTimeouts::default(),
                encryption,
                connection::Carriers::tcp_only(),
            )
        };
        // Each encrypted peer reaches its own torrent, answered in RC4.
        let mut held = Vec::new();
        for (info_hash, id, coordinator) in [(alpha_hash, alpha_id, &a), (beta_hash, beta_id, &b)] {
            let (stream, answer) = dial(info_hash, Encryption::Require)
                .await
                .expect("the encrypted handshake completes");
            assert!(stream.is_encrypted());
            assert_eq!((answer.info_hash, answer.peer_id), (info_hash, id));
            let peers = peers_until(coordinator, |p| !p.is_empty()).await;
            assert_eq!(peers.len(), 1, "{peers:?}");
            held.push(stream);
        }
        // A torrent nobody routed: the encrypted handshake ends at the SKEY.
        let stranger = dial(InfoHash([0x5a; 20]), Encryption::Require).await;
        assert!(
            matches!(stranger, Err(ConnectError::Io(_))),
            "a stranger was answered: {:?}",
            stranger.map(|(_, h)| h)
        );
        // Encryption is required: a plaintext handshake is closed unanswered.
        let plain = dial(alpha_hash, Encryption::Off).await;
        assert!(plain.is_err(), "a plaintext peer was answered");
        drop(held);
    });
}

/// `swarm` with leechers given `--encryption MODE`: its simulated peers take encrypted
/// handshakes too (selecting plaintext when offered, RC4 when required), and every byte
/// is checked by the leechers' piece hashes.
#[test]
fn swarm_peers_serve_leechers_that_prefer_or_require_encryption() {
    for mode in ["prefer", "require"] {
        let work = tempfile::tempdir().expect("temp folder");
        let report = work.path().join("report.json");
        let mut cmd = ours();
        cmd.arg("swarm")
            .arg("--work-dir")
            .arg(work.path())
            .args(["--fast", "4", "--slow", "4", "--leechers", "2"])
            .args(["--size", "8MiB", "--piece-size", "256KiB"])
            .args(["--duration-limit", "60s"])
            .arg(format!("--leecher-arg=--encryption={mode}"))
            .arg("--report")
            .arg(&report);
        let out = run_until(cmd, Duration::from_secs(120))
            .unwrap_or_else(|o| panic!("swarm overran:\n{}", String::from_utf8_lossy(&o.stderr)));
        assert!(
            out.status.success(),
            "swarm with --encryption={mode} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_slice(&fs::read(&report).expect("the report")).expect("JSON");
        // Each connection a leecher made was served: none was an encrypted attempt the
        // peers refused (which would show as closed by the peer).
        for p in r["profiles"].as_array().expect("profiles") {
            assert_eq!(p["closed_by_peer"].as_u64(), Some(0), "{mode}: {p}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Transmission 3.00, a second implementation
// ---------------------------------------------------------------------------------------

/// `transmission-cli -er` (encryption required) on 127.0.0.1 with its own config folder:
/// no DHT, local discovery, peer exchange or port mapping, so it meets only the peers a
/// test makes dial it; over TCP, and over uTP too (its libutp) when started with it. It
/// runs until killed (by its PID, when dropped).
struct Transmission {
    // Held for its drop, which kills the process by PID; declared first so the process
    // is gone before its folder is removed.
    _child: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl Transmission {
    /// Downloads (or, with the data already in `data_dir`, seeds) `torrent` into
    /// `data_dir`, over TCP, and over uTP too if `utp`.
    fn start_with(torrent: &Path, data_dir: &Path, utp: bool) -> Transmission {
        let dir = tempfile::Builder::new()
            .prefix("transmission-")
            .tempdir()
            .expect("temp folder for transmission");
        let config = dir.path().join("config");
        fs::create_dir_all(&config).expect("transmission config folder");
        let port = free_port();
        let settings = serde_json::json!({
            "bind-address-ipv4": "127.0.0.1",
            "bind-address-ipv6": "::1",
            "dht-enabled": false,
            "lpd-enabled": false,
            "pex-enabled": false,
            "utp-enabled": utp,
            "port-forwarding-enabled": false,
            "peer-port": port,
            "encryption": 2,
            "rpc-enabled": false,
            "speed-limit-up-enabled": false,
            "speed-limit-down-enabled": false,
        });
        fs::write(config.join("settings.json"), settings.to_string()).expect("settings.json");
        let mut cmd = Command::new("transmission-cli");
        cmd.arg("-er")
            .arg("-M")
            .arg("-g")
            .arg(&config)
            .arg("-w")
            .arg(data_dir)
            .args(["-p", &port.to_string()])
            .arg(torrent)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("out.log")).expect("transmission log"))
            .stderr(File::create(dir.path().join("err.log")).expect("transmission log"));
        Transmission {
            _child: ChildGuard::spawn(cmd, "transmission-cli"),
            port,
            dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        let read = |name| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        // Its progress line is rewritten with carriage returns; keep the last few lines.
        let out = read("out.log").replace('\r', "\n");
        let tail: Vec<&str> = out.lines().rev().take(20).collect();
        format!(
            "{}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            read("err.log")
        )
    }
}

#[test]
fn transmission_requiring_encryption_downloads_from_our_seed() {
    transmission_downloads_from_our_seed(2 * 1024 * 1024 + 11, false, &["--encryption", "require"]);
}

#[test]
fn get_requiring_encryption_downloads_from_transmission_requiring_it_too() {
    get_downloads_from_transmission(2 * 1024 * 1024 + 13, false, &["--encryption", "require"]);
}

/// Transmission (encryption required; uTP beside TCP if `utp`) downloads a file of `len`
/// bytes from our `seed` started with `seed_args`.
pub(crate) fn transmission_downloads_from_our_seed(len: u64, utp: bool, seed_args: &[&str]) {
    // Transmission 3.00 does not dial loopback addresses it hears of (given our seed by a
    // tracker, it dialed nothing), so our seed dials it; it takes incoming loopback
    // connections.
    let f = Fixture::new(len);
    let out = f.out("transmission");
    fs::create_dir_all(&out).expect("output folder");
    let transmission = Transmission::start_with(&f.torrent, &out, utp);
    let peer = transmission.addr().to_string();
    let mut args = seed_args.to_vec();
    args.extend(["--peer", &peer]);
    let seed = OurSeed::start(&f, &args);
    let file = out.join("file.bin");
    let original = fs::read(f.payload.dir.join("file.bin")).expect("the payload");
    let deadline = Instant::now() + DOWNLOAD_LIMIT;
    // Transmission writes `file.bin.part` and renames it once complete.
    while !fs::read(&file).is_ok_and(|got| got == original) {
        assert!(
            Instant::now() < deadline,
            "transmission did not complete within {DOWNLOAD_LIMIT:?}:\n{}\n--- our seed:\n{}",
            transmission.log(),
            seed.stderr()
        );
        thread::sleep(Duration::from_millis(200));
    }
    f.assert_downloaded(&out);
    assert!(!seed.stderr().contains("panicked"), "{}", seed.stderr());
}

/// Our `get` with `get_args` downloads a file of `len` bytes from Transmission
/// (encryption required; uTP beside TCP if `utp`).
pub(crate) fn get_downloads_from_transmission(len: u64, utp: bool, get_args: &[&str]) {
    let f = Fixture::new(len);
    // Transmission seeds from the payload's own folder once it has checked it.
    let transmission = Transmission::start_with(&f.torrent, &f.payload.dir, utp);
    let out = f.out("ours");
    let mut args = get_args.to_vec();
    args.extend(["--peer-timeout", "60"]);
    let (code, stderr) = run(get(&f, &out, &[transmission.addr()], &args), DOWNLOAD_LIMIT);
    assert_eq!(
        code,
        Some(0),
        "get failed:\n{stderr}\n--- transmission:\n{}",
        transmission.log()
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    f.assert_downloaded(&out);
}

// ---------------------------------------------------------------------------------------
// `serve`: two torrents on one listener
// ---------------------------------------------------------------------------------------

// These stalled about one run in five under load (one in fourteen alone): a libtorrent
// leecher waited for good on its one connection to `serve`, at 95-98 % with nothing more
// coming. The Peer had read a block of an allowed-fast piece, asked for while it choked
// the leecher, and dropped it when the upload limiter's grant came, since it still
// choked: no block and no reject, where BEP 6 wants one or the other. It now sends such a
// block, and rejects any other that a choke overtook.
#[test]
fn libtorrent_leechers_forcing_rc4_download_two_torrents_from_one_serve_listener() {
    two_torrents_from_one_serve_listener(true, LtTransport::Tcp);
}

/// The same with libtorrent's and our defaults (an obfuscated handshake, plaintext after
/// it), to tell an engine stall from an encryption one.
#[test]
fn libtorrent_leechers_download_two_torrents_from_one_serve_listener_by_default() {
    two_torrents_from_one_serve_listener(false, LtTransport::Tcp);
}

/// libtorrent leechers (forcing RC4 if `forced`) download two torrents at once from one
/// `serve` listener (requiring encryption if `forced`, with its defaults otherwise).
/// Two libtorrent leechers, forcing RC4 if `forced` and over `transport`, download one
/// torrent each at once from one `serve` listener; with uTP, libtorrent's connection
/// alert proves each connection was uTP.
pub(crate) fn two_torrents_from_one_serve_listener(forced: bool, transport: LtTransport) {
    use crate::support::{Daemon, DaemonOpts};

    let tmp = tempfile::tempdir().expect("temp folder");
    let dl = tmp.path().join("dl");
    // Both payloads already in the download root: `serve` checks them and seeds.
    let payloads = [
        Payload::single(&dl, "alpha.bin", 1024 * 1024 + 1),
        Payload::single(&dl, "beta.bin", 1536 * 1024 + 7),
    ];
    let torrents: Vec<PathBuf> = payloads
        .iter()
        .map(|p| {
            let t = tmp.path().join(format!("{}.torrent", p.name));
            make_torrent(&p.root(), &t, 16, &[]);
            t
        })
        .collect();
    let daemon = Daemon::start(
        &dl,
        &tmp.path().join("state"),
        &DaemonOpts {
            args: if forced {
                vec!["--encryption".into(), "require".into(), "-v".into()]
            } else {
                vec!["-v".into()]
            },
            ..DaemonOpts::default()
        },
    );
    let mut ids = Vec::new();
    for t in &torrents {
        let bytes = fs::read(t).expect("the torrent");
        let added = daemon.post(
            "/api/torrents",
            &serde_json::json!({"torrent_base64": data_encoding::BASE64.encode(&bytes)}),
        );
        assert_eq!(added.status, 201, "{added:?}");
        ids.push(read_metainfo(t).info_hash.to_hex());
    }
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let list = daemon.get_json("/api/torrents");
        let seeding = ids.iter().all(|id| {
            list.as_array().into_iter().flatten().any(|t| {
                t["id"] == id.as_str()
                    && t["state"] == "seeding"
                    && t["progress"].as_f64() == Some(1.0)
            })
        });
        if seeding {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not seed both torrents: {list}\n{}",
            daemon.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let listener = SocketAddr::from(([127, 0, 0, 1], daemon.peer_port));
    let outs: Vec<PathBuf> = ["a", "b"].iter().map(|n| tmp.path().join(n)).collect();
    // Both at once, each on a port retried if another test took it.
    let leechers: Vec<thread::JoinHandle<_>> = torrents
        .iter()
        .zip(&outs)
        .map(|(t, out)| {
            let (t, out) = (t.clone(), out.clone());
            thread::spawn(move || {
                let opts = LeechOpts {
                    peers: vec![listener],
                    encryption_forced: forced,
                    transport,
                    ..LeechOpts::new(DOWNLOAD_LIMIT)
                };
                LtLeecher::run(&t, &out, &opts)
            })
        })
        .collect();
    for ((leecher, payload), out) in leechers.into_iter().zip(&payloads).zip(&outs) {
        let outcome = leecher.join().expect("a leecher thread");
        assert!(
            outcome.finished,
            "a libtorrent leecher did not finish ({}) after {:?}:\n{}\n--- serve:\n{}",
            outcome.status,
            outcome.elapsed,
            outcome.log,
            daemon.log()
        );
        assert_same_files(&payload.dir, out, &payload.files);
        if transport == LtTransport::Utp {
            // Too fast for the once-a-second flags line: libtorrent's connection alert
            // names the socket type.
            assert!(
                outcome
                    .log
                    .lines()
                    .any(|l| l.contains("outgoing connection to peer (uTP)")),
                "libtorrent did not report a uTP connection:\n{}",
                outcome.log
            );
        }
    }
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}
