//! Broken trackers end to end: `torrent-actors get` on a torrent whose announce list is
//! mostly trackers that fail in every way the issue lists, plus one working opentracker
//! that knows a libtorrent seeder. The download must complete byte-identical, and stderr
//! must say, once per tracker, how each one failed.
//!
//! The fake trackers here are plain threads on 127.0.0.1 (the `get` under test is a
//! child process), each stopped and joined when dropped. The per-announce failure cases
//! are also pinned one by one at the Tracker actor's level in `tracker_actor.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use torrent_actors::bencode::BValue;
use torrent_actors::engine::coordinator::{Coordinator, EngineConfig, TorrentParams};
use torrent_actors::engine::messages::{GetTrackers, Shutdown, TorrentEvent};
use torrent_actors::engine::tracker::status::next_announce_in;
use torrent_actors::engine::tracker::{TrackerState, TrackerStatus};
use torrent_actors::metainfo::Metainfo;
use torrent_actors::tracker::udp::{self, ConnectRequest, Response};
use torrent_actors::tracker::{encode_compact_peers, AddressFamily};
use torrent_actors::PeerId;

use crate::support::{
    assert_same_files, make_torrent, read_metainfo, run_within, with_announce, ChildGuard,
    LtSeeder, Payload, SeedOpts, Tracker,
};

/// The longest `get` may run before the test counts it as hung.
const GET_LIMIT: Duration = Duration::from_secs(150);

/// How often the fake trackers look at their stop flag.
const POLL: Duration = Duration::from_millis(20);

/// How a fake HTTP tracker answers every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpMode {
    /// `500 Internal Server Error` with an HTML page.
    ServerError,
    /// `200 OK` with a body that is not bencode at all.
    Garbage,
    /// A bencoded `failure reason` that tries to colour the user's terminal.
    FailureReason,
    /// A compact peer list cut in the middle of its third entry.
    TruncatedPeers,
    /// A redirect to itself, for ever.
    RedirectLoop,
    /// `200 OK` without a length, then zeros until the client hangs up.
    HugeBody,
    /// Accepts the connection, reads the request, and says nothing.
    NeverAnswers,
    /// A bencoded `failure reason` made of every kind of character that acts on a
    /// terminal: [`TERMINAL_ATTACK`].
    TerminalAttack,
    /// A working reply with no peers and a `warning message` of [`TERMINAL_ATTACK`].
    WarnsWithEscapes,
    /// A working reply with no peers.
    NoPeers,
    /// `302 Found` to another tracker on 127.0.0.1: `port`, over https when `https`.
    RedirectTo { https: bool, port: u16 },
}

/// How a fake UDP tracker answers every connect request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UdpMode {
    /// A well-formed connect reply, for another transaction.
    WrongTransactionId,
    /// An error packet (action 3).
    ErrorAction,
    /// A datagram too short to hold even the header.
    ShortPackets,
    /// Nothing.
    Silent,
}

/// The failure reason the refusing HTTP tracker sends, escape sequences and all.
const HOSTILE_REASON: &str = "\x1b[31mgo away\x1b[0m\r\nreally";

/// A screen-clearing sequence, a bell, the one-character C1 form of CSI, a
/// right-to-left override and DEL.
const TERMINAL_ATTACK: &str = "\x1b[2Jwiped\x07\u{9b}31m\u{202E}txt.exe\x7f";

/// The bytes of [`TERMINAL_ATTACK`]'s characters, none of which may reach stderr.
const TERMINAL_BYTES: [&str; 5] = ["\x1b", "\x07", "\u{9b}", "\u{202E}", "\x7f"];

/// A fake tracker on 127.0.0.1, on its own thread: stopped and joined when dropped.
struct FakeTracker {
    url: String,
    /// Requests (HTTP) or datagrams (UDP) received.
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for FakeTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FakeTracker {
    fn http(mode: HttpMode) -> FakeTracker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a fake http tracker");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("its address").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (hits, stop) = (hits.clone(), stop.clone());
            thread::spawn(move || {
                let mut workers = Vec::new();
                // Bounded: the test's own limit is shorter.
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            hits.fetch_add(1, Ordering::Relaxed);
                            let stop = stop.clone();
                            workers.push(thread::spawn(move || {
                                let _ = serve_http(stream, mode, &stop);
                            }));
                        }
                        Err(_) => thread::sleep(POLL),
                    }
                }
                for w in workers {
                    let _ = w.join();
                }
            })
        };
        FakeTracker {
            url: format!("http://127.0.0.1:{port}/announce"),
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn udp(mode: UdpMode) -> FakeTracker {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a fake udp tracker");
        socket.set_read_timeout(Some(POLL)).expect("a read timeout");
        let port = socket.local_addr().expect("its address").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (hits, stop) = (hits.clone(), stop.clone());
            thread::spawn(move || {
                let mut buffer = [0u8; 2048];
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok((len, from)) = socket.recv_from(&mut buffer) else {
                        continue;
                    };
                    hits.fetch_add(1, Ordering::Relaxed);
                    let Ok(connect) = ConnectRequest::decode(&buffer[..len]) else {
                        continue;
                    };
                    let txid = connect.transaction_id;
                    let reply = match mode {
                        UdpMode::WrongTransactionId => Response::Connect {
                            connection_id: 0x0BAD_CAFE,
                        }
                        .encode(txid.wrapping_add(1), AddressFamily::V4),
                        UdpMode::ErrorAction => udp::encode_error(txid, "info hash not tracked"),
                        UdpMode::ShortPackets => vec![0, 0, 0, 0, 0],
                        UdpMode::Silent => continue,
                    };
                    let _ = socket.send_to(&reply, from);
                }
            })
        };
        FakeTracker {
            url: format!("udp://127.0.0.1:{port}/announce"),
            hits,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads one request head and answers it as `mode` says.
fn serve_http(mut stream: TcpStream, mode: HttpMode, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let ok = |body: &[u8]| {
        let mut raw = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        raw
    };
    let reply = match mode {
        HttpMode::ServerError => {
            let page = b"<html><body><h1>500 Internal Server Error</h1></body></html>";
            let mut raw = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                page.len()
            )
            .into_bytes();
            raw.extend_from_slice(page);
            raw
        }
        HttpMode::Garbage => ok(b"<html><body>It works!</body></html>"),
        HttpMode::FailureReason => ok(&torrent_actors::tracker::http::encode_failure(
            HOSTILE_REASON,
        )),
        HttpMode::TruncatedPeers => {
            let mut peers = encode_compact_peers(
                &[
                    SocketAddr::from(([127, 0, 0, 1], 1)),
                    SocketAddr::from(([127, 0, 0, 1], 2)),
                    SocketAddr::from(([127, 0, 0, 1], 3)),
                ],
                AddressFamily::V4,
            );
            peers.truncate(16);
            let mut body = b"d8:intervali1800e5:peers16:".to_vec();
            body.extend_from_slice(&peers);
            body.push(b'e');
            ok(&body)
        }
        HttpMode::RedirectLoop => b"HTTP/1.1 302 Found\r\nLocation: /announce\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        HttpMode::HugeBody => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            let chunk = vec![b'0'; 64 * 1024];
            // Stops when the client hangs up; 256 MiB is a bound of its own.
            for _ in 0..4096 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                stream.write_all(&chunk)?;
            }
            return Ok(());
        }
        HttpMode::TerminalAttack => ok(&torrent_actors::tracker::http::encode_failure(
            TERMINAL_ATTACK,
        )),
        HttpMode::WarnsWithEscapes => {
            let mut body = b"d8:intervali1800e5:peers0:15:warning message".to_vec();
            body.extend_from_slice(format!("{}:", TERMINAL_ATTACK.len()).as_bytes());
            body.extend_from_slice(TERMINAL_ATTACK.as_bytes());
            body.push(b'e');
            ok(&body)
        }
        HttpMode::NoPeers => ok(b"d8:intervali1800e5:peers0:e"),
        HttpMode::RedirectTo { https, port } => {
            let scheme = if https { "https" } else { "http" };
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {scheme}://127.0.0.1:{port}/announce\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .into_bytes()
        }
        HttpMode::NeverAnswers => {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(POLL);
            }
            return Ok(());
        }
    };
    stream.write_all(&reply)?;
    stream.flush()
}

/// Writes `dst`: `src` with `tiers` as its `announce-list` (and the first URL as
/// `announce`), the `info` dictionary copied byte for byte so the info-hash stays.
fn with_announce_list(src: &Path, dst: &Path, tiers: &[Vec<String>]) {
    use torrent_actors::bencode::{self, write_bytes, BValue};
    let bytes = std::fs::read(src).expect("reading the torrent");
    let top = bencode::decode(&bytes).expect("a bencoded torrent");
    let info = top
        .as_dict()
        .and_then(|d| d.get(b"info"))
        .expect("an info dictionary")
        .raw();
    let list = BValue::List(
        tiers
            .iter()
            .map(|tier| BValue::List(tier.iter().map(|u| BValue::string(u)).collect()))
            .collect(),
    )
    .encode();
    let mut out = b"d".to_vec();
    write_bytes(&mut out, b"announce");
    write_bytes(&mut out, tiers[0][0].as_bytes());
    write_bytes(&mut out, b"announce-list");
    out.extend_from_slice(&list);
    write_bytes(&mut out, b"info");
    out.extend_from_slice(info);
    out.push(b'e');
    std::fs::write(dst, &out).expect("writing the torrent");
    let written = read_metainfo(dst);
    assert_eq!(written.info_hash, read_metainfo(src).info_hash);
    assert_eq!(written.trackers, tiers);
}

/// The lines `get` printed about the tracker at `url`.
fn lines_about<'a>(stderr: &'a str, url: &str) -> Vec<&'a str> {
    let prefix = format!("tracker {url}: ");
    stderr.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[test]
fn get_completes_past_a_list_of_broken_trackers_and_says_how_each_failed() {
    let tmp = tempfile::tempdir().expect("temp folder");
    // 4 MiB from a seeder capped at 256 KiB/s: the download lasts several times longer
    // than the slowest broken tracker needs to fail (3 s, the two UDP sends below), so
    // every failure is seen while `get` still runs.
    let payload = Payload::single(&tmp.path().join("seed"), "file.bin", 4 * 1024 * 1024 + 77);
    let bare = tmp.path().join("bare.torrent");
    let hash = make_torrent(&payload.root(), &bare, 15, &[]);
    let opentracker = Tracker::start(&[hash]);
    let seeder_torrent = tmp.path().join("seeder.torrent");
    with_announce(&bare, &seeder_torrent, &opentracker.http_url());
    let _seeder = LtSeeder::start(
        &seeder_torrent,
        &payload.dir,
        SeedOpts {
            upload_limit: Some(256 * 1024),
            ..SeedOpts::default()
        },
    );

    let http_modes = [
        HttpMode::ServerError,
        HttpMode::Garbage,
        HttpMode::FailureReason,
        HttpMode::TruncatedPeers,
        HttpMode::RedirectLoop,
        HttpMode::HugeBody,
        HttpMode::NeverAnswers,
    ];
    let udp_modes = [
        UdpMode::WrongTransactionId,
        UdpMode::ErrorAction,
        UdpMode::ShortPackets,
        UdpMode::Silent,
    ];
    let http: Vec<(HttpMode, FakeTracker)> = http_modes
        .iter()
        .map(|&m| (m, FakeTracker::http(m)))
        .collect();
    let udp: Vec<(UdpMode, FakeTracker)> = udp_modes
        .iter()
        .map(|&m| (m, FakeTracker::udp(m)))
        .collect();
    let unusable = "wss://tracker.invalid/announce".to_string();
    // One tier each, the working tracker in the middle: every tier is announced to at
    // once, so its place must not matter.
    let mut tiers: Vec<Vec<String>> = http.iter().map(|(_, t)| vec![t.url.clone()]).collect();
    tiers.insert(3, vec![opentracker.http_url()]);
    tiers.extend(udp.iter().map(|(_, t)| vec![t.url.clone()]));
    tiers.push(vec![unusable.clone()]);
    let torrent = tmp.path().join("hostile.torrent");
    with_announce_list(&bare, &torrent, &tiers);

    let out = tmp.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "--peer-timeout", "60"])
        // HTTP announces get 1 s, UDP requests are sent twice (1 s, then 2 s): every
        // broken tracker fails within about 3 s instead of BEP 15's hour.
        .args(["--debug-tracker-timeout-ms", "1000"])
        .args(["--debug-udp-tracker-attempts", "2"])
        .arg("-o")
        .arg(&out)
        .arg(&torrent);
    let output = run_within(cmd, GET_LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "get failed ({}):\n{}{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    assert_same_files(&payload.dir, &out, &payload.files);

    // Each tracker is named on exactly one line: its state is shown when it changes,
    // not at every retry.
    let mut wrong = Vec::new();
    let mut expect = |url: &str, want: &dyn Fn(&str) -> bool, what: &str| {
        let lines = lines_about(&stderr, url);
        if lines.len() != 1 || !want(lines[0]) {
            wrong.push(format!("{url} ({what}): {lines:?}"));
        }
    };
    for (mode, tracker) in &http {
        let after = |line: &str, text: &str| {
            line.strip_prefix(&format!("tracker {}: ", tracker.url))
                .is_some_and(|rest| rest.starts_with(text))
        };
        match mode {
            HttpMode::ServerError => expect(
                &tracker.url,
                &|l| after(l, "error: http status 500; retrying in "),
                "500",
            ),
            HttpMode::Garbage => expect(
                &tracker.url,
                &|l| {
                    after(
                        l,
                        "error: bad http reply: response is not valid bencode: unexpected byte 0x3c at byte 0; retrying in ",
                    )
                },
                "garbage",
            ),
            HttpMode::FailureReason => expect(
                &tracker.url,
                &|l| {
                    after(
                        l,
                        "error: \u{FFFD}[31mgo away\u{FFFD}[0m really; retrying in ",
                    )
                },
                "failure reason, defused",
            ),
            HttpMode::TruncatedPeers => expect(
                &tracker.url,
                &|l| {
                    after(
                        l,
                        "error: bad http reply: peers of 16 bytes is not a multiple of 6; retrying in ",
                    )
                },
                "truncated compact list",
            ),
            HttpMode::RedirectLoop => {
                expect(
                    &tracker.url,
                    &|l| {
                        after(l, "error: http redirect not followed: more than 3 redirects; retrying in ")
                    },
                    "redirect loop",
                )
            }
            HttpMode::HugeBody => expect(
                &tracker.url,
                &|l| after(l, "error: reply body exceeds 2097152 bytes; retrying in "),
                "huge body",
            ),
            HttpMode::TerminalAttack
            | HttpMode::WarnsWithEscapes
            | HttpMode::NoPeers
            | HttpMode::RedirectTo { .. } => unreachable!("{mode:?} is not in this list"),
            HttpMode::NeverAnswers => expect(
                &tracker.url,
                &|l| after(l, "error: http request timed out after 1s; retrying in "),
                "never answers",
            ),
        }
        assert!(
            tracker.hits.load(Ordering::Relaxed) >= 1,
            "{mode:?} was never asked"
        );
    }
    for (mode, tracker) in &udp {
        let text = match mode {
            UdpMode::ErrorAction => "error: info hash not tracked; retrying in ",
            _ => "error: no reply from udp tracker after 2 attempts; retrying in ",
        };
        let prefix = format!("tracker {}: {text}", tracker.url);
        expect(
            &tracker.url,
            &|l| l.starts_with(&prefix),
            &format!("{mode:?}"),
        );
        assert!(
            tracker.hits.load(Ordering::Relaxed) >= 1,
            "{mode:?} was never asked"
        );
    }
    expect(
        &unusable,
        &|l| {
            l.ends_with(
                ": unusable: unsupported tracker url scheme \"wss\": expected http, https or udp",
            )
        },
        "unusable scheme",
    );
    expect(
        &opentracker.http_url(),
        &|l| l.contains(": working, ") && l.contains("; next announce in "),
        "the working tracker",
    );
    assert!(wrong.is_empty(), "{}\nstderr:\n{stderr}", wrong.join("\n"));
    assert!(
        !stderr.contains('\x1b'),
        "a tracker's escape sequence reached the terminal:\n{stderr}"
    );
}

#[test]
fn magnet_with_broken_trackers_fetches_from_its_peer_and_names_each_tracker_once() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let payload = Payload::single(&tmp.path().join("seed"), "file.bin", 2 * 1024 * 1024 + 5);
    let torrent = tmp.path().join("t.torrent");
    let hash = make_torrent(&payload.root(), &torrent, 15, &[]);
    // Capped so the download outlasts the UDP tracker's 3 s of retransmits.
    let seeder = LtSeeder::start(
        &torrent,
        &payload.dir,
        SeedOpts {
            ready_without_announce: true,
            upload_limit: Some(256 * 1024),
            ..SeedOpts::default()
        },
    );
    let refusing = FakeTracker::http(HttpMode::ServerError);
    let silent = FakeTracker::udp(UdpMode::Silent);
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&tr={}&tr={}&x.pe={}",
        hash.to_hex(),
        refusing.url,
        silent.url,
        seeder.addr()
    );
    let out = tmp.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "--peer-timeout", "60"])
        .args(["--debug-tracker-timeout-ms", "1000"])
        .args(["--debug-udp-tracker-attempts", "2"])
        .arg("-o")
        .arg(&out)
        .arg(&magnet);
    let output = run_within(cmd, GET_LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "get failed:\n{stderr}");
    assert_same_files(&payload.dir, &out, &payload.files);
    // The metadata phase and the download each run their own Tracker actors for the
    // link's trackers; the same failure seen by both is still one line.
    // The retry time is cut off: it counts down from when the tracker reported.
    let gist = |url: &str| -> Vec<String> {
        lines_about(&stderr, url)
            .iter()
            .map(|l| l.split("; retrying in ").next().unwrap_or(l).to_string())
            .collect()
    };
    assert_eq!(
        gist(&refusing.url),
        [format!("tracker {}: error: http status 500", refusing.url)],
        "{stderr}"
    );
    assert_eq!(
        gist(&silent.url),
        [format!(
            "tracker {}: error: no reply from udp tracker after 2 attempts",
            silent.url
        )],
        "{stderr}"
    );
    assert!(
        refusing.hits.load(Ordering::Relaxed) >= 2,
        "both phases announce"
    );
}

/// How many file descriptors the process `pid` has open now, if it still runs.
fn open_files(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|entries| entries.count())
}

#[test]
fn a_torrent_listing_thousands_of_trackers_costs_a_bounded_number_of_sockets() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let payload = Payload::single(&tmp.path().join("seed"), "file.bin", 2 * 1024 * 1024);
    let bare = tmp.path().join("bare.torrent");
    make_torrent(&payload.root(), &bare, 15, &[]);
    // 3000 UDP trackers, one tier each, on loopback addresses where nothing listens
    // (127.0.0.0/8 is all loopback; port 9 is discard). Each Tracker actor would hold a
    // socket for its life.
    let tiers: Vec<Vec<String>> = (0..3000u32)
        .map(|n| {
            vec![format!(
                "udp://127.66.{}.{}:9/announce",
                n / 250,
                n % 250 + 1
            )]
        })
        .collect();
    let torrent = tmp.path().join("crowded.torrent");
    with_announce_list(&bare, &torrent, &tiers);
    // Capped so the download lasts a few seconds of sampling.
    let seeder = LtSeeder::start(
        &bare,
        &payload.dir,
        SeedOpts {
            ready_without_announce: true,
            upload_limit: Some(512 * 1024),
            ..SeedOpts::default()
        },
    );

    let out = tmp.path().join("out");
    let log = tmp.path().join("get.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "--peer-timeout", "60", "--peer"])
        .arg(seeder.addr().to_string())
        .arg("-o")
        .arg(&out)
        .arg(&torrent)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"));
    let mut child = ChildGuard::spawn(cmd, "torrent-actors get");
    let pid = child.pid();
    let deadline = Instant::now() + GET_LIMIT;
    let mut most = 0;
    let status = loop {
        if let Some(n) = open_files(pid) {
            most = most.max(n);
        }
        if let Some(status) = child.try_status() {
            break status;
        }
        assert!(Instant::now() < deadline, "get overran {GET_LIMIT:?}");
        thread::sleep(Duration::from_millis(25));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "get failed ({status}):\n{stderr}");
    assert_same_files(&payload.dir, &out, &payload.files);
    // 200 trackers' sockets, plus the listener, the peer, the files, the runtime's own.
    assert!(
        most < 400,
        "get had {most} files open at once for a torrent listing 3000 trackers"
    );
    assert!(
        stderr.contains("too many trackers") && stderr.contains("left out: 2800"),
        "no word of the trackers left out:\n{stderr}"
    );
}

/// Collects the `TorrentEvent::Tracker` a torrent sends its front end.
struct TrackerEvents(futures::channel::mpsc::UnboundedSender<TrackerStatus>);

impl actix::Actor for TrackerEvents {
    type Context = actix::Context<Self>;
}

impl actix::Handler<TorrentEvent> for TrackerEvents {
    type Result = ();
    fn handle(&mut self, event: TorrentEvent, _: &mut Self::Context) {
        if let TorrentEvent::Tracker(status) = event {
            let _ = self.0.unbounded_send(status);
        }
    }
}

#[test]
fn the_coordinator_reports_each_tracker_change_and_answers_for_all_of_them() {
    use actix::Actor as _;
    use futures::StreamExt as _;

    let refusing = FakeTracker::http(HttpMode::ServerError);
    let garbled = FakeTracker::http(HttpMode::Garbage);
    let unusable = "wss://tracker.invalid/announce".to_string();
    let tiers = [
        vec![refusing.url.clone()],
        vec![garbled.url.clone(), unusable.clone()],
    ];
    let torrent = BValue::dict([
        ("announce", BValue::string(&refusing.url)),
        (
            "announce-list",
            BValue::List(
                tiers
                    .iter()
                    .map(|t| BValue::List(t.iter().map(|u| BValue::string(u)).collect()))
                    .collect(),
            ),
        ),
        (
            "info",
            BValue::dict([
                ("name", BValue::string("t.bin")),
                ("piece length", BValue::Int(16384)),
                ("length", BValue::Int(20_000)),
                ("pieces", BValue::Bytes(vec![7; 40])),
            ]),
        ),
    ])
    .encode();
    let metainfo = Metainfo::from_bytes(&torrent).expect("a valid torrent");
    let tmp = tempfile::tempdir().expect("temp folder");
    let dir = tmp.path().to_path_buf();
    actix::System::new().block_on(async move {
        let (tx, mut events) = futures::channel::mpsc::unbounded();
        let sink = TrackerEvents(tx).start();
        let config = EngineConfig::new(
            PeerId(*b"-TA0001-coordinator-"),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        );
        let torrent = Coordinator::start(TorrentParams {
            metainfo,
            download_dir: dir,
            config,
            selection: None,
            high_priority: Vec::new(),
            dht: None,
            events: sink.recipient(),
            log: slog::Logger::root(slog::Discard, slog::o!()),
        });
        // Each announce is seen to begin, then to fail; nothing else is said.
        let mut seen: Vec<(String, TrackerState)> = Vec::new();
        let failed = |seen: &[(String, TrackerState)], url: &str| {
            seen.iter()
                .any(|(u, s)| u == url && matches!(s, TrackerState::Failed(_)))
        };
        while !(failed(&seen, &refusing.url) && failed(&seen, &garbled.url)) {
            let status = tokio::time::timeout(Duration::from_secs(20), events.next())
                .await
                .expect("tracker events within 20 s")
                .expect("the event sink is alive");
            seen.push((status.url, status.state));
        }
        for url in [&refusing.url, &garbled.url] {
            let states: Vec<&TrackerState> = seen
                .iter()
                .filter(|(u, _)| u == url)
                .map(|(_, s)| s)
                .collect();
            assert!(
                matches!(
                    states[..],
                    [TrackerState::Updating, TrackerState::Failed(_)]
                ),
                "{url}: {states:?}"
            );
        }
        // The whole board, tier by tier, backup URLs included.
        let board = torrent
            .send(GetTrackers)
            .await
            .expect("the coordinator answers");
        let now = Instant::now();
        let rows: Vec<(&str, usize)> = board.iter().map(|t| (t.url.as_str(), t.tier)).collect();
        assert_eq!(
            rows,
            [
                (refusing.url.as_str(), 0),
                (garbled.url.as_str(), 1),
                (unusable.as_str(), 1)
            ]
        );
        assert_eq!(
            board[0].state,
            TrackerState::Failed("http status 500".into())
        );
        assert_eq!(board[0].last_error.as_deref(), Some("http status 500"));
        assert_eq!(board[0].failures, 1);
        let retry = next_announce_in(&board[0], now).expect("a retry is scheduled");
        assert!(retry <= Duration::from_secs(15), "{retry:?}");
        assert!(
            matches!(&board[1].state, TrackerState::Failed(e) if e.starts_with("bad http reply"))
        );
        // The second tier's first URL failed, so BEP 12 tried its backup, in the same
        // step: a URL no Tracker can be built for.
        assert_eq!(
            board[2].state,
            TrackerState::Unusable(
                "unsupported tracker url scheme \"wss\": expected http, https or udp".into()
            )
        );
        assert_eq!(board[2].next_announce, None);
        torrent.send(Shutdown).await.expect("a clean stop");
    });
}

/// Runs `get` on a torrent announcing to `trackers` only, with no peer anywhere, until it
/// gives up for want of peers (exit 7), and returns its stderr. One-second HTTP
/// timeouts, so every tracker has answered or failed long before that.
fn get_until_no_peers(tmp: &Path, trackers: &[String]) -> String {
    let payload = Payload::single(&tmp.join("seed"), "file.bin", 100_000);
    let bare = tmp.join("bare.torrent");
    make_torrent(&payload.root(), &bare, 15, &[]);
    let torrent = tmp.join("trackers.torrent");
    let tiers: Vec<Vec<String>> = trackers.iter().map(|t| vec![t.clone()]).collect();
    with_announce_list(&bare, &torrent, &tiers);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--bind", "127.0.0.1", "--port", "0", "--no-dht"])
        .args(["--peer-timeout", "4", "--debug-tracker-timeout-ms", "1000"])
        .arg("-o")
        .arg(tmp.join("out"))
        .arg(&torrent);
    let output = run_within(cmd, GET_LIMIT);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(7),
        "get should give up for want of peers:\n{}",
        stderr.escape_debug()
    );
    stderr
}

#[test]
fn a_trackers_escape_sequences_never_reach_the_terminal() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let refusing = FakeTracker::http(HttpMode::TerminalAttack);
    let warning = FakeTracker::http(HttpMode::WarnsWithEscapes);
    let stderr = get_until_no_peers(tmp.path(), &[refusing.url.clone(), warning.url.clone()]);
    for bytes in TERMINAL_BYTES {
        assert!(
            !stderr.contains(bytes),
            "{:?} reached the terminal:\n{}",
            bytes,
            stderr.escape_debug()
        );
    }
    let refused = lines_about(&stderr, &refusing.url);
    assert!(
        refused.len() == 1 && refused[0].contains("error: \u{FFFD}[2Jwiped"),
        "the refusal, defused: {refused:?}\n{}",
        stderr.escape_debug()
    );
    let warned = lines_about(&stderr, &warning.url);
    assert!(
        warned.len() == 1 && warned[0].contains("warning: \u{FFFD}[2Jwiped"),
        "the warning, defused: {warned:?}\n{}",
        stderr.escape_debug()
    );
}

#[test]
fn a_redirect_is_followed_on_the_same_scheme_and_refused_across_schemes() {
    let tmp = tempfile::tempdir().expect("temp folder");
    let target = FakeTracker::http(HttpMode::NoPeers);
    let target_port: u16 = target
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/announce")
        .parse()
        .expect("the target's port");
    let same_scheme = FakeTracker::http(HttpMode::RedirectTo {
        https: false,
        port: target_port,
    });
    let to_https = FakeTracker::http(HttpMode::RedirectTo {
        https: true,
        port: target_port,
    });
    let stderr = get_until_no_peers(tmp.path(), &[same_scheme.url.clone(), to_https.url.clone()]);
    let followed = lines_about(&stderr, &same_scheme.url);
    assert!(
        followed.len() == 1 && followed[0].contains(": working, 0 peers"),
        "the same-scheme loopback redirect was not followed: {followed:?}\n{stderr}"
    );
    let refused = lines_about(&stderr, &to_https.url);
    assert!(
        refused.len() == 1
            && refused[0].contains(
                "error: http redirect not followed: redirect from http to https refused: the scheme may not change"
            ),
        "the scheme change was not refused by name: {refused:?}\n{stderr}"
    );
    assert!(target.hits.load(Ordering::Relaxed) >= 1, "{stderr}");
    assert!(to_https.hits.load(Ordering::Relaxed) >= 1, "{stderr}");
}
