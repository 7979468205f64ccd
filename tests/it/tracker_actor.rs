//! The Tracker actor from outside: against a real opentracker on 127.0.0.1 over HTTP and
//! UDP, and against small misbehaving trackers written here, with a test actor playing
//! the Coordinator. Every socket is on 127.0.0.1 and every wait is bounded.

use std::cell::RefCell;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use torrent_actors::engine::messages::{
    AnnounceStats, GetAnnounceStats, PeerSource, PeersFound, TrackerAnnouncing, TrackerCompleted,
    TrackerReport, TrackerStart, TrackerStop,
};
use torrent_actors::engine::tracker::{Tracker, TrackerConfig, TrackerLinks};
use torrent_actors::tracker::http;
use torrent_actors::tracker::udp::{self, AnnouncePacket, ConnectRequest, Response};
use torrent_actors::tracker::{AddressFamily, AnnounceResponse, Event};
use torrent_actors::{InfoHash, PeerId};
use url::Url;

use crate::support::{http_announce, Announce, Tracker as OpenTracker};

/// The longest any single step of a test may take before it counts as hung.
const WAIT: Duration = Duration::from_secs(5);

/// The totals the stand-in Coordinator announces, distinct so a tracker can check them.
const STATS: AnnounceStats = AnnounceStats {
    uploaded: 11,
    downloaded: 22,
    left: 33,
};

/// The connection id the fake UDP trackers hand out.
const CONNECTION_ID: u64 = 0x00C0_FFEE_0000_0001;

/// What the stand-in Coordinator was told.
#[derive(Debug)]
enum Seen {
    /// A `PeersFound`: the addresses and who named them.
    Peers(Vec<SocketAddr>, PeerSource),
    /// A `TrackerAnnouncing`: an announce began.
    Announcing(String),
    /// A `TrackerReport`, as sent.
    Report(TrackerReport),
}

/// Plays the Coordinator: answers the totals and records every message it gets.
struct Recorder {
    /// Where every message goes, in arrival order, for the test to read.
    seen: UnboundedSender<Seen>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<PeersFound> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: PeersFound, _: &mut Self::Context) {
        let _ = self.seen.unbounded_send(Seen::Peers(msg.peers, msg.source));
    }
}

impl Handler<TrackerReport> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: TrackerReport, _: &mut Self::Context) {
        let _ = self.seen.unbounded_send(Seen::Report(msg));
    }
}

impl Handler<TrackerAnnouncing> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: TrackerAnnouncing, _: &mut Self::Context) {
        let _ = self.seen.unbounded_send(Seen::Announcing(msg.url));
    }
}

impl Handler<GetAnnounceStats> for Recorder {
    type Result = MessageResult<GetAnnounceStats>;
    fn handle(&mut self, _: GetAnnounceStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(STATS)
    }
}

/// A running Tracker actor and what its Coordinator saw.
struct Subject {
    /// The actor under test.
    tracker: Addr<Tracker>,
    /// What its Coordinator stand-in received, in order.
    seen: UnboundedReceiver<Seen>,
    /// Its URL, which every report and peer source must name.
    url: String,
    /// `TrackerAnnouncing` messages seen so far.
    announcing: usize,
    /// Reports seen so far.
    reports: usize,
}

impl Subject {
    /// Starts a Tracker for `config` (not yet told to announce) next to a Recorder.
    fn spawn(config: TrackerConfig) -> Subject {
        let (tx, seen) = unbounded();
        let recorder = Recorder { seen: tx }.start();
        let links = TrackerLinks {
            peers: recorder.clone().recipient(),
            stats: recorder.clone().recipient(),
            announcing: recorder.clone().recipient(),
            report: recorder.recipient(),
        };
        let url = config.url.to_string();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let tracker = Tracker::new(config, links, log)
            .expect("a tracker for a loopback url")
            .start();
        Subject {
            tracker,
            seen,
            url,
            announcing: 0,
            reports: 0,
        }
    }

    /// The next report, and the peers announced before it.
    async fn next_report(&mut self) -> (Vec<SocketAddr>, Result<String, String>) {
        let (peers, report) = self.next_full_report().await;
        let outcome = report
            .outcome
            .map(|summary| format!("{summary:?}"))
            .map_err(|e| e.to_string());
        (peers, outcome)
    }

    /// The next report as sent, and the peers announced before it. Every announce
    /// must have been said to begin before it ends.
    async fn next_full_report(&mut self) -> (Vec<SocketAddr>, TrackerReport) {
        let mut peers = Vec::new();
        loop {
            match bounded("a tracker report", self.seen.next()).await {
                Some(Seen::Announcing(url)) => {
                    assert_eq!(url, self.url);
                    self.announcing += 1;
                }
                Some(Seen::Peers(list, source)) => {
                    assert_eq!(source, PeerSource::Tracker(self.url.clone()));
                    assert!(!list.is_empty(), "an empty PeersFound was sent");
                    peers.extend(list);
                }
                Some(Seen::Report(report)) => {
                    assert_eq!(report.url, self.url);
                    self.reports += 1;
                    // The `stopped` announce is not reported as beginning: the owner is
                    // stopping and shows nothing more.
                    if report.next_announce.is_some() {
                        assert_eq!(
                            self.announcing, self.reports,
                            "a report without its TrackerAnnouncing first"
                        );
                    }
                    return (peers, report);
                }
                None => panic!("the recorder went away"),
            }
        }
    }

    /// The next report, which must be a success; returns its summary text and peers.
    async fn expect_ok(&mut self) -> (Vec<SocketAddr>, String) {
        let (peers, outcome) = self.next_report().await;
        match outcome {
            Ok(summary) => (peers, summary),
            Err(e) => panic!("announce to {} failed: {e}", self.url),
        }
    }

    /// The next report, which must be a failure; returns its text.
    async fn expect_err(&mut self) -> String {
        let (peers, outcome) = self.next_report().await;
        assert!(peers.is_empty(), "peers {peers:?} before a failed announce");
        match outcome {
            Ok(summary) => panic!("announce to {} should have failed: {summary}", self.url),
            Err(e) => e,
        }
    }

    /// Sends `TrackerStop`, waits for its reply, then for the actor to end.
    async fn stop(&self) {
        bounded("the TrackerStop reply", self.tracker.send(TrackerStop))
            .await
            .expect("the tracker answers TrackerStop");
        let deadline = Instant::now() + WAIT;
        while self.tracker.connected() {
            assert!(Instant::now() < deadline, "the tracker actor did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Awaits `future` for at most [`WAIT`], naming what was awaited when it hangs.
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

/// Runs `test` in a fresh actix System, as the engine runs.
fn in_system(test: impl Future<Output = ()>) {
    actix_rt::System::new().block_on(test);
}

/// A configuration for `url` with every timer shrunk so failures show in milliseconds.
fn quick_config(url: &str, info_hash: InfoHash, port: u16) -> TrackerConfig {
    let mut config = TrackerConfig::new(
        Url::parse(url).expect("a valid test url"),
        info_hash,
        PeerId(*b"-TA0001-trackeractor"),
        port,
        0x5EED,
    );
    config.request_timeout = Duration::from_secs(5);
    config.stop_timeout = Duration::from_secs(5);
    config.stats_timeout = Duration::from_secs(1);
    config.interval_floor = Duration::from_millis(300);
    config.retry_base = Duration::from_millis(100);
    config.retry_cap = Duration::from_millis(400);
    // Long enough that a loaded machine never causes a retransmit the tests would
    // count; the tests about retransmits shrink it further.
    config.udp_timeout_base = Duration::from_secs(1);
    config.udp_max_attempts = 3;
    config
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

// ---------------------------------------------------------------------------------------
// Against opentracker
// ---------------------------------------------------------------------------------------

/// A leecher announced straight to opentracker, so the actor has a swarm to learn about.
fn announce_fake_peer(tracker: &OpenTracker, info_hash: InfoHash, port: u16, id: u8) {
    let mut peer_id = *b"-HARNESS-00000000000";
    peer_id[19] = id;
    let announce = Announce {
        peer_id,
        port,
        left: 1,
        event: Some("started"),
        ..Announce::new(info_hash)
    };
    // opentracker can answer before it has loaded its whitelist, refusing the hash for
    // a moment after it starts; once this announce is accepted, the list is in place for
    // the actor's announces too.
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = http_announce(tracker.port(), &announce).expect("the fake peer's announce");
        match reply.failure {
            None => return,
            Some(reason) if Instant::now() >= deadline => {
                panic!(
                    "opentracker kept refusing: {reason}; log:\n{}",
                    tracker.log()
                )
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The ports opentracker lists to a fresh probing peer.
fn ports_in_swarm(tracker: &OpenTracker, info_hash: InfoHash, probe_port: u16) -> Vec<u16> {
    let reply = http_announce(
        tracker.port(),
        &Announce {
            peer_id: *b"-HARNESS-PROBE-00000",
            port: probe_port,
            left: 1,
            ..Announce::new(info_hash)
        },
    )
    .expect("the probe's announce");
    reply.peers.iter().map(|p| p.port()).collect()
}

/// Starts the actor on `url`, checks it learns of a peer already in the swarm, then
/// stops it and checks opentracker forgot it.
fn announce_then_stop_against_opentracker(use_udp: bool) {
    let info_hash = InfoHash([if use_udp { 0x51 } else { 0x52 }; 20]);
    let tracker = OpenTracker::start(&[info_hash]);
    let (fake_peer, our_port, probe) = (41_001, 41_002, 41_003);
    announce_fake_peer(&tracker, info_hash, fake_peer, 1);
    let url = if use_udp {
        tracker.udp_url()
    } else {
        tracker.http_url()
    };
    in_system(async {
        let mut subject = Subject::spawn(quick_config(&url, info_hash, our_port));
        subject.tracker.do_send(TrackerStart);
        let (peers, _summary) = subject.expect_ok().await;
        assert!(
            peers.contains(&loopback(fake_peer)),
            "fake peer missing from {peers:?}; log:\n{}",
            tracker.log()
        );

        assert!(
            ports_in_swarm(&tracker, info_hash, probe).contains(&our_port),
            "opentracker does not list us after `started`"
        );
        subject.stop().await;
        let (_, stopped) = subject.next_report().await;
        assert!(stopped.is_ok(), "stopped announce failed: {stopped:?}");
        let ports = ports_in_swarm(&tracker, info_hash, probe);
        assert!(
            !ports.contains(&our_port),
            "opentracker still lists us after `stopped`: {ports:?}"
        );
        assert!(ports.contains(&fake_peer), "the fake peer vanished too");
    });
}

#[test]
fn http_announce_to_opentracker_reports_ok_finds_the_swarm_and_stop_leaves_it() {
    announce_then_stop_against_opentracker(false);
}

#[test]
fn udp_announce_to_opentracker_reports_ok_finds_the_swarm_and_stop_leaves_it() {
    announce_then_stop_against_opentracker(true);
}

// ---------------------------------------------------------------------------------------
// Fake HTTP trackers
// ---------------------------------------------------------------------------------------

/// How a fake HTTP tracker answers one request.
enum HttpReply {
    /// These bytes, status line and headers included, then close.
    Raw(Vec<u8>),
    /// Nothing, holding the connection open.
    Silence,
    /// A 200 without a length, then zeros until the client hangs up.
    EndlessBody,
    /// These bytes (a reply that does not say `Connection: close`), then the connection
    /// kept until the client sends anything more on it, and closed unanswered: a server
    /// whose idle timeout meets the client's next request.
    ClosedOnReuse(Vec<u8>),
}

/// A 200 reply carrying `body`.
fn ok_with(body: &[u8]) -> HttpReply {
    let mut raw = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    HttpReply::Raw(raw)
}

/// A fake HTTP tracker on 127.0.0.1: `respond` picks the reply from the request's path
/// and query. Returns the announce URL and the request targets it received.
async fn fake_http_tracker(
    respond: impl Fn(&str) -> HttpReply + 'static,
) -> (String, Rc<RefCell<Vec<String>>>) {
    let listener = TcpListener::bind(loopback(0))
        .await
        .expect("binding a fake http tracker");
    let port = listener.local_addr().expect("its address").port();
    let requests = Rc::new(RefCell::new(Vec::new()));
    let respond = Rc::new(respond);
    let log = Rc::clone(&requests);
    actix_rt::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let respond = Rc::clone(&respond);
            let log = Rc::clone(&log);
            actix_rt::spawn(async move {
                let _ = serve_http_request(stream, &*respond, &log).await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}/announce"), requests)
}

async fn serve_http_request(
    mut stream: TcpStream,
    respond: &dyn Fn(&str) -> HttpReply,
    log: &RefCell<Vec<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if stream.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    log.borrow_mut().push(target.clone());
    match respond(&target) {
        HttpReply::Raw(bytes) => {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        }
        HttpReply::ClosedOnReuse(bytes) => {
            stream.write_all(&bytes).await?;
            let mut more = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut more)).await;
            Ok(())
        }
        HttpReply::Silence => {
            // Hold the connection; the System's end drops this task.
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
        HttpReply::EndlessBody => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .await?;
            let chunk = vec![b'0'; 64 * 1024];
            // A bound of its own, in case the client never hung up.
            for _ in 0..(256 * 1024 * 1024 / chunk.len()) {
                stream.write_all(&chunk).await?;
            }
            Ok(())
        }
    }
}

#[test]
fn http_error_status_is_reported_and_retried() {
    in_system(async {
        let (url, requests) = fake_http_tracker(|_| {
            HttpReply::Raw(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops!"
                    .to_vec(),
            )
        })
        .await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([1; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        let error = subject.expect_err().await;
        assert_eq!(error, "http status 500");
        assert_eq!(subject.expect_err().await, "http status 500");
        // The retry carried `started` again: the tracker never accepted it.
        let sent = requests.borrow().clone();
        assert!(
            sent.len() >= 2 && sent.iter().all(|r| r.contains("event=started")),
            "{sent:?}"
        );
        subject.stop().await;
    });
}

#[test]
fn http_failure_reason_becomes_the_report_text() {
    in_system(async {
        let (url, _) =
            fake_http_tracker(|_| ok_with(&http::encode_failure("torrent not registered"))).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([2; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        assert_eq!(subject.expect_err().await, "torrent not registered");
        subject.stop().await;
    });
}

#[test]
fn http_tracker_that_never_answers_times_out_and_is_retried() {
    in_system(async {
        let (url, requests) = fake_http_tracker(|_| HttpReply::Silence).await;
        let mut config = quick_config(&url, InfoHash([3; 20]), 6881);
        config.request_timeout = Duration::from_millis(300);
        let mut subject = Subject::spawn(config);
        subject.tracker.do_send(TrackerStart);
        let first = subject.expect_err().await;
        assert!(first.contains("timed out"), "{first}");
        let second = subject.expect_err().await;
        assert!(second.contains("timed out"), "{second}");
        assert!(requests.borrow().len() >= 2);
        // Nothing was ever accepted, so stopping sends no `stopped`.
        subject.stop().await;
    });
}

#[test]
fn http_body_larger_than_the_cap_fails_without_being_buffered() {
    in_system(async {
        let (url, _) = fake_http_tracker(|_| HttpReply::EndlessBody).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([4; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        let error = subject.expect_err().await;
        assert_eq!(
            error,
            format!("reply body exceeds {} bytes", 2 * 1024 * 1024)
        );
        subject.stop().await;
    });
}

#[test]
fn http_body_announced_larger_than_the_cap_fails_before_reading() {
    in_system(async {
        let (url, _) = fake_http_tracker(|_| {
            HttpReply::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\nd"
                    .to_vec(),
            )
        })
        .await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([5; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        let error = subject.expect_err().await;
        assert!(error.starts_with("reply body exceeds"), "{error}");
        subject.stop().await;
    });
}

#[test]
fn http_garbage_body_is_reported_as_a_bad_reply_and_retried() {
    in_system(async {
        let (url, requests) =
            fake_http_tracker(|_| ok_with(b"<html><body>It works!</body></html>")).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([15; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        let error = subject.expect_err().await;
        assert_eq!(
            error,
            "bad http reply: response is not valid bencode: unexpected byte 0x3c at byte 0"
        );
        subject.expect_err().await;
        assert!(requests.borrow().len() >= 2);
        subject.stop().await;
    });
}

#[test]
fn http_truncated_compact_peer_list_fails_the_announce_and_forwards_no_peer() {
    in_system(async {
        // Two whole entries and a third cut after its address: the list is corrupt, so
        // not even the whole entries are trusted.
        let mut peers = torrent_actors::tracker::encode_compact_peers(
            &[loopback(42_101), loopback(42_102), loopback(42_103)],
            AddressFamily::V4,
        );
        peers.truncate(16);
        let mut body = b"d8:intervali1800e5:peers16:".to_vec();
        body.extend_from_slice(&peers);
        body.push(b'e');
        let (url, _) = fake_http_tracker(move |_| ok_with(&body)).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([16; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        // `expect_err` also checks that no peer was forwarded before the report.
        assert_eq!(
            subject.expect_err().await,
            "bad http reply: peers of 16 bytes is not a multiple of 6"
        );
        subject.stop().await;
    });
}

#[test]
fn failed_announces_report_a_retry_that_doubles_up_to_the_cap() {
    in_system(async {
        let (url, _) = fake_http_tracker(|_| {
            HttpReply::Raw(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            )
        })
        .await;
        let mut config = quick_config(&url, InfoHash([17; 20]), 6881);
        config.retry_base = Duration::from_millis(50);
        config.retry_cap = Duration::from_millis(200);
        let mut subject = Subject::spawn(config);
        subject.tracker.do_send(TrackerStart);
        let mut retries = Vec::new();
        for _ in 0..5 {
            let (_, report) = subject.next_full_report().await;
            assert_eq!(report.outcome, Err("http status 503".to_string()));
            retries.push(report.next_announce.map(|d| d.as_millis()));
        }
        assert_eq!(
            retries,
            [Some(50), Some(100), Some(200), Some(200), Some(200)]
        );
        subject.stop().await;
    });
}

#[test]
fn a_successful_announce_reports_when_the_next_one_comes() {
    in_system(async {
        let reply = http::encode_announce_response(&AnnounceResponse {
            interval: Duration::from_secs(900),
            min_interval: Some(Duration::from_secs(1200)),
            complete: None,
            incomplete: None,
            tracker_id: None,
            warning: None,
            peers: Vec::new(),
        });
        let (url, _) = fake_http_tracker(move |_| ok_with(&reply)).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([18; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        let (_, report) = subject.next_full_report().await;
        assert!(report.outcome.is_ok(), "{:?}", report.outcome);
        assert_eq!(report.next_announce, Some(Duration::from_secs(1200)));
        // `completed` goes out at once; its reply schedules the next periodic announce.
        subject.tracker.do_send(TrackerCompleted);
        let (_, report) = subject.next_full_report().await;
        assert_eq!(report.next_announce, Some(Duration::from_secs(1200)));
        subject.stop().await;
        let (_, stopped) = subject.next_full_report().await;
        assert_eq!(
            stopped.next_announce, None,
            "the stopped announce is the last"
        );
    });
}

#[test]
fn a_hybrids_second_announce_does_not_ride_a_connection_the_tracker_may_close() {
    // Each reply keeps its connection open and the tracker closes it, unanswered, when a
    // second request comes on it. Both of a hybrid's announces must still be answered:
    // each goes on a connection of its own.
    in_system(async {
        let (v1, v2) = (InfoHash([7; 20]), InfoHash([8; 20]));
        let (v1_peer, v2_peer) = (loopback(42_101), loopback(42_102));
        let reply = move |peer| {
            let body = http::encode_announce_response(&AnnounceResponse {
                interval: Duration::from_secs(1800),
                min_interval: None,
                complete: None,
                incomplete: None,
                tracker_id: None,
                warning: None,
                peers: vec![peer],
            });
            let mut raw = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            raw.extend_from_slice(&body);
            HttpReply::ClosedOnReuse(raw)
        };
        let v2_query = format!("info_hash={}", percent(&v2.0));
        let (url, requests) = fake_http_tracker(move |target| {
            reply(if target.contains(&v2_query) {
                v2_peer
            } else {
                v1_peer
            })
        })
        .await;
        let mut config = quick_config(&url, v1, 6881);
        config.second_swarm = Some(v2);
        let mut subject = Subject::spawn(config);
        subject.tracker.do_send(TrackerStart);
        let mut v2_found = Vec::new();
        let report = loop {
            match bounded("a tracker report", subject.seen.next()).await {
                Some(Seen::Peers(list, PeerSource::TrackerV2Swarm(_))) => v2_found.extend(list),
                Some(Seen::Report(report)) => break report,
                Some(_) => {}
                None => panic!("the recorder went away"),
            }
        };
        assert!(report.outcome.is_ok(), "{:?}", report.outcome.err());
        assert_eq!(
            v2_found,
            vec![v2_peer],
            "the v2 swarm's announce was lost; requests: {:?}",
            requests.borrow()
        );
        subject.stop().await;
    });
}

/// `bytes` percent-encoded byte by byte, as an announce's query carries an info-hash.
fn percent(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn http_reply_peers_warning_and_tracker_id_are_used() {
    in_system(async {
        let peer = loopback(42_001);
        let reply = http::encode_announce_response(&AnnounceResponse {
            interval: Duration::ZERO,
            min_interval: None,
            complete: Some(3),
            incomplete: Some(4),
            tracker_id: Some(b"tid-7".to_vec()),
            warning: Some("slow down".into()),
            peers: vec![peer],
        });
        let (url, requests) = fake_http_tracker(move |_| ok_with(&reply)).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([6; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        let (peers, summary) = subject.expect_ok().await;
        assert_eq!(peers, vec![peer]);
        assert!(
            summary.contains("warning: Some(\"slow down\")"),
            "{summary}"
        );
        assert!(summary.contains("seeders: Some(3)"), "{summary}");
        // The zero interval is raised to the floor, and the re-announce comes then,
        // without an event and echoing the tracker id.
        assert!(summary.contains("interval: 300ms"), "{summary}");
        subject.expect_ok().await;
        let sent = requests.borrow().clone();
        assert!(sent[0].contains("event=started") && !sent[0].contains("trackerid"));
        assert!(!sent[1].contains("event=") && sent[1].contains("trackerid=tid-7"));
        assert!(
            sent[0].contains("uploaded=11&downloaded=22&left=33"),
            "{}",
            sent[0]
        );
        assert!(sent[0].contains("numwant=200") && sent[0].contains("port=6881"));
        subject.stop().await;
    });
}

#[test]
fn http_redirect_is_followed_but_a_redirect_loop_fails() {
    in_system(async {
        let reply = http::encode_announce_response(&AnnounceResponse {
            interval: Duration::from_secs(1800),
            min_interval: None,
            complete: None,
            incomplete: None,
            tracker_id: None,
            warning: None,
            peers: vec![loopback(42_002)],
        });
        let (url, _) = fake_http_tracker(move |target| {
            if target.starts_with("/announce") {
                HttpReply::Raw(
                    b"HTTP/1.1 302 Found\r\nLocation: /moved\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec(),
                )
            } else if target.starts_with("/loop") {
                HttpReply::Raw(
                    b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec(),
                )
            } else {
                ok_with(&reply)
            }
        })
        .await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([7; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        let (peers, _) = subject.expect_ok().await;
        assert_eq!(peers, vec![loopback(42_002)]);
        subject.stop().await;

        let looping = url.replace("/announce", "/loop");
        let mut subject = Subject::spawn(quick_config(&looping, InfoHash([7; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        let error = subject.expect_err().await;
        assert!(error.contains("redirect"), "{error}");
        subject.stop().await;
    });
}

// ---------------------------------------------------------------------------------------
// Fake UDP trackers
// ---------------------------------------------------------------------------------------

/// How a fake UDP tracker behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UdpMode {
    /// Answers connects and announces properly.
    Honest,
    /// Answers an announce first with another transaction id, then with a runt packet,
    /// then properly.
    StrayRepliesFirst,
    /// Answers connects, and announces with an error packet.
    Refuses,
    /// Never answers anything.
    Mute,
    /// Answers every connect with a reply carrying another transaction id.
    WrongTransactionOnly,
    /// Answers every connect with a packet too short to read.
    RuntsOnly,
    /// Honest, except that it never answers a `stopped` announce.
    IgnoresStopped,
}

/// What a fake UDP tracker received.
#[derive(Default)]
struct UdpLog {
    /// Connect requests, retransmits included.
    connects: usize,
    /// When each connect request arrived.
    connect_times: Vec<Instant>,
    /// Announce packets, decoded, in arrival order.
    announces: Vec<AnnouncePacket>,
}

/// The peer every honest fake UDP tracker hands out.
const UDP_PEER: u16 = 43_001;

/// A fake UDP tracker on 127.0.0.1. Returns the announce URL and what it received.
async fn fake_udp_tracker(mode: UdpMode) -> (String, Rc<RefCell<UdpLog>>) {
    let socket = UdpSocket::bind(loopback(0))
        .await
        .expect("binding a fake udp tracker");
    let port = socket.local_addr().expect("its address").port();
    let log = Rc::new(RefCell::new(UdpLog::default()));
    let record = Rc::clone(&log);
    actix_rt::spawn(async move {
        let mut buffer = vec![0u8; 2048];
        while let Ok((length, from)) = socket.recv_from(&mut buffer).await {
            let packet = &buffer[..length];
            if let Ok(connect) = ConnectRequest::decode(packet) {
                record.borrow_mut().connects += 1;
                record.borrow_mut().connect_times.push(Instant::now());
                let txid = match mode {
                    UdpMode::WrongTransactionOnly => connect.transaction_id ^ 0x5A5A,
                    _ => connect.transaction_id,
                };
                let reply = match mode {
                    UdpMode::Mute => continue,
                    UdpMode::RuntsOnly => vec![0, 0, 0, 0, 1, 2, 3],
                    _ => Response::Connect {
                        connection_id: CONNECTION_ID,
                    }
                    .encode(txid, AddressFamily::V4),
                };
                let _ = socket.send_to(&reply, from).await;
                continue;
            }
            let Ok(announce) = AnnouncePacket::decode(packet) else {
                continue;
            };
            let txid = announce.transaction_id;
            let stopped = announce.request.event == Some(Event::Stopped);
            record.borrow_mut().announces.push(announce);
            let honest = Response::Announce(AnnounceResponse {
                interval: Duration::ZERO,
                min_interval: None,
                complete: Some(1),
                incomplete: Some(2),
                tracker_id: None,
                warning: None,
                peers: vec![loopback(UDP_PEER)],
            })
            .encode(txid, AddressFamily::V4);
            let replies = match mode {
                UdpMode::Honest => vec![honest],
                UdpMode::IgnoresStopped if stopped => vec![],
                UdpMode::IgnoresStopped => vec![honest],
                UdpMode::StrayRepliesFirst => {
                    let stray = Response::Announce(AnnounceResponse {
                        interval: Duration::from_secs(60),
                        min_interval: None,
                        complete: Some(0),
                        incomplete: Some(0),
                        tracker_id: None,
                        warning: None,
                        peers: vec![loopback(43_999)],
                    })
                    .encode(txid.wrapping_add(1), AddressFamily::V4);
                    vec![stray, vec![0, 0, 0, 1, 0], honest]
                }
                UdpMode::Refuses => vec![udp::encode_error(txid, "info hash not tracked")],
                UdpMode::Mute | UdpMode::WrongTransactionOnly | UdpMode::RuntsOnly => vec![],
            };
            for reply in replies {
                let _ = socket.send_to(&reply, from).await;
            }
        }
    });
    (format!("udp://127.0.0.1:{port}/announce"), log)
}

#[test]
fn udp_reply_with_a_wrong_transaction_id_or_too_short_is_skipped_for_the_right_one() {
    in_system(async {
        let (url, log) = fake_udp_tracker(UdpMode::StrayRepliesFirst).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([8; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        let (peers, _) = subject.expect_ok().await;
        assert_eq!(peers, vec![loopback(UDP_PEER)]);
        // Skipping the strays happened within the first attempt: nothing was resent.
        assert_eq!(log.borrow().announces.len(), 1);
        subject.stop().await;
    });
}

#[test]
fn udp_error_action_becomes_the_report_text() {
    in_system(async {
        let (url, _) = fake_udp_tracker(UdpMode::Refuses).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([9; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        assert_eq!(subject.expect_err().await, "info hash not tracked");
        subject.stop().await;
    });
}

#[test]
fn udp_tracker_that_never_answers_fails_after_the_configured_attempts() {
    in_system(async {
        let (url, log) = fake_udp_tracker(UdpMode::Mute).await;
        let mut config = quick_config(&url, InfoHash([10; 20]), 6881);
        config.udp_timeout_base = Duration::from_millis(100);
        let mut subject = Subject::spawn(config);
        subject.tracker.do_send(TrackerStart);
        let started = Instant::now();
        let error = subject.expect_err().await;
        assert_eq!(error, "no reply from udp tracker after 3 attempts");
        // 100 + 200 + 400 ms: BEP 15's doubling at the test's scale.
        assert!(started.elapsed() >= Duration::from_millis(700));
        assert_eq!(log.borrow().connects, 3);
        subject.stop().await;
    });
}

#[test]
fn udp_retransmits_to_a_silent_tracker_follow_the_doubling_bep15_schedule() {
    in_system(async {
        let (url, log) = fake_udp_tracker(UdpMode::Mute).await;
        let mut config = quick_config(&url, InfoHash([19; 20]), 6881);
        config.udp_timeout_base = Duration::from_millis(60);
        config.udp_max_attempts = 5;
        let mut subject = Subject::spawn(config);
        subject.tracker.do_send(TrackerStart);
        let (_, report) = subject.next_full_report().await;
        assert_eq!(
            report.outcome,
            Err("no reply from udp tracker after 5 attempts".to_string())
        );
        // The connect request was sent five times, each wait twice the one before:
        // 60, 120, 240, 480 ms between sends (lower bounds only: a busy machine may
        // stretch a wait, never shorten it).
        let sent = log.borrow().connect_times.clone();
        assert_eq!(sent.len(), 5, "{sent:?}");
        for (n, pair) in sent.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let want = Duration::from_millis(60 << n);
            assert!(gap >= want, "wait {n} was {gap:?}, less than {want:?}");
        }
        subject.stop().await;
    });
}

#[test]
fn udp_tracker_answering_only_with_wrong_transaction_ids_or_runts_is_a_silent_one() {
    in_system(async {
        for mode in [UdpMode::WrongTransactionOnly, UdpMode::RuntsOnly] {
            let (url, log) = fake_udp_tracker(mode).await;
            let mut config = quick_config(&url, InfoHash([20; 20]), 6881);
            config.udp_timeout_base = Duration::from_millis(50);
            config.udp_max_attempts = 3;
            let mut subject = Subject::spawn(config);
            subject.tracker.do_send(TrackerStart);
            assert_eq!(
                subject.expect_err().await,
                "no reply from udp tracker after 3 attempts"
            );
            // Every stray datagram was skipped and the request sent again on schedule.
            assert_eq!(log.borrow().connects, 3);
            subject.stop().await;
        }
    });
}

#[test]
fn udp_announces_carry_started_completed_none_then_stopped_on_one_connection() {
    in_system(async {
        let (url, log) = fake_udp_tracker(UdpMode::Honest).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([11; 20]), 6999));
        subject.tracker.do_send(TrackerStart);
        subject.expect_ok().await;
        subject.tracker.do_send(TrackerCompleted);
        subject.expect_ok().await;
        // The periodic announce, after the floor since the tracker asked for 0 s.
        subject.expect_ok().await;
        subject.stop().await;
        let (peers, stopped) = subject.next_report().await;
        assert!(stopped.is_ok(), "{stopped:?}");
        assert!(
            peers.is_empty(),
            "peers from the stopped reply were forwarded"
        );

        let log = log.borrow();
        let events: Vec<_> = log.announces.iter().map(|a| a.request.event).collect();
        assert_eq!(
            events,
            [
                Some(Event::Started),
                Some(Event::Completed),
                None,
                Some(Event::Stopped)
            ]
        );
        // The connection id of the first connect served every announce.
        assert_eq!(log.connects, 1);
        for announce in &log.announces {
            assert_eq!(announce.connection_id, CONNECTION_ID);
            let r = &announce.request;
            assert_eq!((r.uploaded, r.downloaded, r.left), (11, 22, 33));
            assert_eq!((r.port, r.key, r.numwant), (6999, 0x5EED, Some(200)));
            assert_eq!(r.info_hash, InfoHash([11; 20]));
        }
    });
}

#[test]
fn stop_after_a_refused_start_sends_no_stopped_announce() {
    in_system(async {
        let (url, log) = fake_udp_tracker(UdpMode::Refuses).await;
        let mut subject = Subject::spawn(quick_config(&url, InfoHash([12; 20]), 6881));
        subject.tracker.do_send(TrackerStart);
        subject.expect_err().await;
        subject.stop().await;
        let log = log.borrow();
        assert!(log
            .announces
            .iter()
            .all(|a| a.request.event == Some(Event::Started)));
    });
}

#[test]
fn stop_gives_up_on_an_unanswered_stopped_announce_within_the_stop_timeout() {
    in_system(async {
        let (url, log) = fake_udp_tracker(UdpMode::IgnoresStopped).await;
        let mut config = quick_config(&url, InfoHash([13; 20]), 6881);
        config.stop_timeout = Duration::from_millis(250);
        config.udp_timeout_base = Duration::from_millis(100);
        config.udp_max_attempts = 8;
        let mut subject = Subject::spawn(config);
        subject.tracker.do_send(TrackerStart);
        subject.expect_ok().await;
        let asked = Instant::now();
        subject.stop().await;
        assert!(asked.elapsed() < Duration::from_secs(2));
        let error = subject.expect_err().await;
        assert!(error.contains("no answer within 250ms"), "{error}");
        let last = log.borrow().announces.last().map(|a| a.request.event);
        assert_eq!(last, Some(Some(Event::Stopped)));
    });
}

#[test]
fn dormant_tracker_sends_nothing_and_stops_quietly() {
    in_system(async {
        let (url, log) = fake_udp_tracker(UdpMode::Honest).await;
        let subject = Subject::spawn(quick_config(&url, InfoHash([14; 20]), 6881));
        subject.tracker.do_send(TrackerCompleted);
        tokio::time::sleep(Duration::from_millis(200)).await;
        subject.stop().await;
        let log = log.borrow();
        assert_eq!((log.connects, log.announces.len()), (0, 0));
    });
}
