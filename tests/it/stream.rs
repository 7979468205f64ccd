//! Streaming a file while it downloads (`serve`'s `/files/{n}/stream`): range reads at
//! random offsets during a rate-limited download from a libtorrent seeder, `ffprobe`
//! reading a real video over a signed link, and the route's answers to hostile input.
//!
//! Every wait is bounded in time, none on speed. Daemons, seeders and trackers are
//! stopped by their PIDs when a test ends.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use torrent_actors::engine::stream::DEFAULT_WAIT;

use crate::support::{
    http, make_torrent, run_with_timeout, with_announce, Daemon, DaemonOpts, LtSeeder, Payload,
    SeedOpts, Tracker,
};

/// How long one stream read (curl, ffprobe) may take before the test gives up: the
/// reads wait for pieces of a rate-limited download.
const READ_LIMIT: Duration = Duration::from_secs(120);

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ta-stream-")
        .tempdir()
        .expect("temp folder for a stream test")
}

/// A tracker, a libtorrent seeder of `payload` announced there, and the torrent's file.
struct Swarm {
    torrent: PathBuf,
    id: String,
    /// A magnet link to the torrent, naming the tracker.
    magnet: String,
    _tracker: Tracker,
    _seeder: LtSeeder,
}

fn swarm(payload: &Payload, piece_exp: u32, upload_limit: u64) -> Swarm {
    let bare = payload
        .dir
        .with_file_name(format!("{}.bare.torrent", payload.name));
    let hash = make_torrent(&payload.root(), &bare, piece_exp, &[]);
    let tracker = Tracker::start(&[hash]);
    let torrent = payload
        .dir
        .with_file_name(format!("{}.torrent", payload.name));
    with_announce(&bare, &torrent, &tracker.http_url());
    let seeder = LtSeeder::start(
        &torrent,
        &payload.dir,
        SeedOpts {
            upload_limit: Some(upload_limit),
            ..SeedOpts::default()
        },
    );
    Swarm {
        torrent,
        id: hash.to_hex(),
        magnet: format!(
            "magnet:?xt=urn:btih:{}&tr={}",
            hash.to_hex(),
            tracker.http_url().replace(':', "%3A").replace('/', "%2F")
        ),
        _tracker: tracker,
        _seeder: seeder,
    }
}

/// A small deterministic generator, so a failure names offsets that can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// `curl` with a byte range: the status line's code, the headers and the body.
fn curl_range(url: &str, range: Option<(u64, u64)>, dir: &Path) -> (u16, String, Vec<u8>) {
    let body = dir.join("body");
    let head = dir.join("head");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", &READ_LIMIT.as_secs().to_string()])
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body);
    if let Some((a, b)) = range {
        cmd.args(["-r", &format!("{a}-{b}")]);
    }
    cmd.arg(url);
    let out = run_with_timeout(cmd, READ_LIMIT + Duration::from_secs(10));
    assert!(out.status.success(), "curl {url}: {out:?}");
    let head = fs::read_to_string(&head).expect("curl wrote the headers");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (
        status,
        head.to_ascii_lowercase(),
        fs::read(&body).unwrap_or_default(),
    )
}

fn is_complete(daemon: &Daemon, id: &str) -> bool {
    daemon.get_json(&format!("/api/torrents/{id}"))["progress"].as_f64() == Some(1.0)
}

#[test]
fn range_reads_at_random_offsets_during_a_rate_limited_download_return_the_right_bytes() {
    let tmp = temp_dir();
    let len = 4 * 1024 * 1024 + 321;
    let payload = Payload::single(&tmp.path().join("seed"), "film.bin", len);
    let data = fs::read(payload.dir.join("film.bin")).unwrap();
    let swarm = swarm(&payload, 15, 384 * 1024);
    let daemon = Daemon::start(
        &tmp.path().join("dl"),
        &tmp.path().join("state"),
        &DaemonOpts::default(),
    );
    daemon.add_torrent_file(&swarm.torrent);
    let url = format!(
        "http://127.0.0.1:{}/api/torrents/{}/files/0/stream",
        daemon.port, swarm.id
    );
    let mut rng = Lcg(0x5eed);
    let mut during = 0;
    for k in 0..10 {
        let start = if k == 0 { len - 1000 } else { rng.below(len) };
        let end = (start + 1 + rng.below(200 * 1024)).min(len);
        let complete_before = is_complete(&daemon, &swarm.id);
        let (status, head, body) = curl_range(&url, Some((start, end - 1)), tmp.path());
        assert_eq!(status, 206, "bytes {start}-{}: {head}", end - 1);
        assert!(head.contains("accept-ranges: bytes"), "{head}");
        assert!(
            head.contains(&format!("content-range: bytes {start}-{}/{len}", end - 1)),
            "{head}"
        );
        assert!(
            head.contains("content-type: application/octet-stream"),
            "{head}"
        );
        assert_eq!(body.len() as u64, end - start, "bytes {start}..{end}");
        assert!(
            body == data[start as usize..end as usize],
            "bytes {start}..{end} differ from the seeder's"
        );
        if !complete_before {
            during += 1;
        }
    }
    // The reads are meant to overlap the download; at least the first one must have (a
    // 4 MiB download at 384 KiB/s takes about ten seconds).
    assert!(during > 0, "every read came after the download completed");
    // The whole file, without a range: 200 and every byte.
    let (status, head, body) = curl_range(&url, None, tmp.path());
    assert_eq!(status, 200, "{head}");
    assert!(head.contains(&format!("content-length: {len}")), "{head}");
    assert!(body == data, "the whole file differs from the seeder's");
    // Every stream ended with its answer, so none keeps a window.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let map = daemon.get_json(&format!("/api/torrents/{}/pieces", swarm.id));
        if map["streams"] == json!([]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "finished streams kept their windows: {}",
            map["streams"]
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Makes a 20 s test video (MPEG-4 in MP4, its index at the end as ffmpeg writes it by
/// default, so a player must seek to the end first).
fn make_video(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let out = dir.join("clip.mp4");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=duration=20:size=320x240:rate=25")
        .args(["-c:v", "mpeg4", "-q:v", "4"])
        .arg(&out);
    let result = run_with_timeout(cmd, Duration::from_secs(120));
    assert!(result.status.success(), "ffmpeg: {result:?}");
    out
}

#[test]
fn ffprobe_reads_a_video_over_a_signed_stream_link_while_it_downloads() {
    let tmp = temp_dir();
    let seed = tmp.path().join("seed");
    let video = make_video(&seed);
    let len = fs::metadata(&video).unwrap().len();
    let payload = Payload {
        dir: seed.clone(),
        name: "clip.mp4".into(),
        files: vec![(PathBuf::from("clip.mp4"), len)],
    };
    // Slow enough that the index at the end would come last without streaming.
    let swarm = swarm(&payload, 15, 128 * 1024);
    let key = "stream-test-key-0123456789";
    let daemon = Daemon::start_keyed(tmp.path(), key, DaemonOpts::default());
    daemon.add_torrent_file(&swarm.torrent);
    let link = daemon.get_json(&format!("/api/torrents/{}/files/0/link", swarm.id));
    let url = format!(
        "http://127.0.0.1:{}{}",
        daemon.port,
        link["url"].as_str().expect("a link")
    );
    let complete_before = is_complete(&daemon, &swarm.id);
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-show_entries", "format=duration"])
        .args(["-of", "default=noprint_wrappers=1:nokey=1"])
        .args(["-rw_timeout", "100000000"])
        .arg(&url);
    let out = run_with_timeout(cmd, READ_LIMIT);
    assert!(
        out.status.success(),
        "ffprobe: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let duration: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("ffprobe's duration {:?}: {e}", out.stdout));
    assert!((duration - 20.0).abs() < 0.5, "duration {duration}");
    assert!(
        !complete_before,
        "the download completed before ffprobe started; the test proves nothing"
    );
}

#[test]
fn the_stream_route_refuses_hostile_ranges_indices_and_links() {
    let tmp = temp_dir();
    let len = 300 * 1024;
    let payload = Payload::single(&tmp.path().join("seed"), "song.mp3", len);
    let hash = make_torrent(&payload.root(), &tmp.path().join("t.torrent"), 15, &[]);
    let id = hash.to_hex();
    let key = "stream-test-key-0123456789";
    let daemon = Daemon::start_keyed(tmp.path(), key, DaemonOpts::default());
    // No seeder: nothing is verified, so only answers that need no data come back.
    daemon.add_torrent_file(&tmp.path().join("t.torrent"));
    let path = format!("/api/torrents/{id}/files/0/stream");
    let bearer = format!("Bearer {key}");
    let auth = [("Authorization", bearer.as_str())];

    for range in [
        "bytes=a-b",
        "bytes=0-1,4-5",
        "bytes=9-3",
        "bytes=0-99999999999999999999999",
        &format!("bytes={len}-"),
        "items=0-1",
        &format!("bytes=0-{}", "9".repeat(300)),
    ] {
        let reply = http(
            daemon.port,
            "GET",
            &path,
            &[auth[0], ("Range", range)],
            None,
        );
        assert_eq!(reply.status, 416, "{range}: {reply:?}");
        assert_eq!(
            reply.header("content-range"),
            Some(format!("bytes */{len}").as_str()),
            "{range}"
        );
    }
    // A read that waits (no seeder: it cannot be served) shows its window in the piece
    // map. The player giving up releases the window at once, long before the read's
    // own wait (DEFAULT_WAIT) would have ended it.
    // Two players at once, each with its own window.
    let waiting: Vec<_> = ["40000-40099", "200000-200099"]
        .into_iter()
        .map(|range| {
            let url = format!("http://127.0.0.1:{}{path}", daemon.port);
            let bearer = bearer.clone();
            thread::spawn(move || {
                let mut cmd = Command::new("curl");
                cmd.args(["-s", "-o", "/dev/null", "--max-time", "4", "-r", range])
                    .args(["-H", &format!("Authorization: {bearer}")])
                    .arg(url);
                run_with_timeout(cmd, Duration::from_secs(20))
            })
        })
        .collect();
    let streams =
        |daemon: &Daemon| daemon.get_json(&format!("/api/torrents/{id}/pieces"))["streams"].clone();
    let windows = |daemon: &Daemon| {
        let mut w: Vec<String> = streams(daemon)
            .as_array()
            .map(|a| a.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default();
        w.sort();
        w
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while windows(&daemon).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the waiting reads' windows never showed: {}",
            streams(&daemon)
        );
        thread::sleep(Duration::from_millis(100));
    }
    // Bytes 40000 and 200000 are in pieces 1 and 6 of 32 KiB pieces; each window runs
    // to the file's last piece (9), 8 MiB being more than the file.
    assert_eq!(windows(&daemon), vec!["[1,9]", "[6,9]"]);
    let asked = Instant::now();
    for w in waiting {
        w.join().unwrap();
    }
    // curl gave up after 4 s, while each read still had DEFAULT_WAIT to go.
    let gone = Instant::now();
    assert!(gone - asked + Duration::from_secs(5) < DEFAULT_WAIT);
    while streams(&daemon) != json!([]) {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "a closed stream kept its window after its player left: {}",
            streams(&daemon)
        );
        thread::sleep(Duration::from_millis(100));
    }

    // HEAD needs no data: the length, the type by extension, ranges accepted.
    let reply = http(daemon.port, "HEAD", &path, &auth, None);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("content-length"),
        Some(len.to_string().as_str())
    );
    assert_eq!(reply.header("content-type"), Some("audio/mpeg"));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    for bad in ["1", "99999999999", "x", "-1"] {
        let reply = http(
            daemon.port,
            "HEAD",
            &format!("/api/torrents/{id}/files/{bad}/stream"),
            &auth,
            None,
        );
        assert_eq!(reply.status, 404, "file {bad}: {reply:?}");
        let reply = daemon.get(&format!("/api/torrents/{id}/files/{bad}/link"));
        assert_eq!(reply.status, 404, "link to file {bad}: {reply:?}");
    }

    // Without the key: refused, unless by a link signed for this very path.
    let reply = http(daemon.port, "HEAD", &path, &[], None);
    assert_eq!(reply.status, 401, "{reply:?}");
    let link = daemon.get_json(&format!("/api/torrents/{id}/files/0/link?ttl=3"));
    let url = link["url"].as_str().unwrap().to_string();
    let query = url.split_once('?').unwrap().1.to_string();
    let reply = http(daemon.port, "HEAD", &url, &[], None);
    assert_eq!(reply.status, 200, "a fresh link: {reply:?}");
    // The same signature on another route, another file, or changed: refused.
    for other in [
        format!("/api/torrents?{query}"),
        format!("/api/torrents/{id}/files/1/stream?{query}"),
        format!("/api/torrents/{id}/files/00/stream?{query}"),
        format!("{url}0"),
        url.replace("sig=", "sig=0"),
    ] {
        let reply = http(daemon.port, "HEAD", &other, &[], None);
        assert_eq!(reply.status, 401, "{other}: {reply:?}");
    }
    let mut forged = url.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let reply = http(daemon.port, "GET", &forged, &[], None);
    assert_eq!(reply.status, 401, "{reply:?}");
    assert!(
        String::from_utf8_lossy(&reply.body).contains("signature"),
        "{reply:?}"
    );
    // A link for three seconds expires (HEAD: a GET of a valid link would wait for data).
    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let reply = http(daemon.port, "HEAD", &url, &[], None);
        if reply.status == 401 || Instant::now() > deadline {
            break reply;
        }
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(expired.status, 401, "{expired:?}");
    // HEAD answers carry no body: GET says why.
    let expired = http(daemon.port, "GET", &url, &[], None);
    assert_eq!(expired.status, 401, "{expired:?}");
    assert!(
        String::from_utf8_lossy(&expired.body).contains("expired"),
        "{expired:?}"
    );
}

#[test]
fn get_stream_prints_each_files_url_and_serves_ranges_while_it_downloads_in_order() {
    get_stream_serves_ranges(false);
}

#[test]
fn get_stream_of_a_magnet_link_serves_ranges_once_the_metadata_arrives() {
    get_stream_serves_ranges(true);
}

/// `get --sequential --stream` of a rate-limited libtorrent seeder's torrent, named by
/// its `.torrent` file or (`magnet`) by a magnet link: the stream URL is printed, range
/// reads return the right bytes, and the download completes.
fn get_stream_serves_ranges(magnet: bool) {
    use std::io::{BufRead, BufReader};
    let tmp = temp_dir();
    let len = 3 * 1024 * 1024 + 77;
    let payload = Payload::single(&tmp.path().join("seed"), "movie.mkv", len);
    let data = fs::read(payload.dir.join("movie.mkv")).unwrap();
    let swarm = swarm(&payload, 15, 384 * 1024);
    let out = tmp.path().join("dl");
    fs::create_dir_all(&out).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_torrent-actors"));
    cmd.env("TORRENT_ACTORS_DHT_BOOTSTRAP", "")
        .args(["get", "--port", "0", "--no-dht", "--sequential", "--stream"])
        .args(["--listen", "127.0.0.1:0", "-o"])
        .arg(&out);
    if magnet {
        cmd.arg(&swarm.magnet);
    } else {
        cmd.arg(&swarm.torrent);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = crate::support::ChildGuard::spawn(cmd, "get --stream");
    let stdout = child.take_stdout().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("get --stream printed no stream URL within 30 s");
        if let Some(rest) = line.strip_prefix("stream 0 movie.mkv: ") {
            break rest.to_string();
        }
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(url.ends_with("/0/file.mkv"), "{url}");
    // The end first, as a player looking for an index does; then a few places.
    for (start, end) in [(len - 5000, len), (1_000_000, 1_100_000), (0, 1000)] {
        let (status, head, body) = curl_range(&url, Some((start, end - 1)), tmp.path());
        assert_eq!(status, 206, "{head}");
        assert!(head.contains("content-type: video/x-matroska"), "{head}");
        assert!(
            body == data[start as usize..end as usize],
            "bytes {start}..{end} differ"
        );
    }
    // A wrong secret finds nothing.
    let (base, tail) = url.rsplit_once("/0/").unwrap();
    let (host, _) = base.rsplit_once('/').unwrap();
    let (status, _, _) = curl_range(&format!("{host}/0000/0/{tail}"), None, tmp.path());
    assert_eq!(status, 404);
    // The download completes (in order) and `get` ends by itself.
    let status = child
        .wait_timeout(Duration::from_secs(120))
        .expect("get --stream did not finish the download within 120 s");
    assert!(status.success(), "{status:?}");
    assert!(fs::read(out.join("movie.mkv")).unwrap() == data);
}

#[test]
fn a_file_left_out_of_the_download_is_refused_not_waited_for() {
    let tmp = temp_dir();
    let payload = Payload::multi(&tmp.path().join("seed"), "album", 32 * 1024);
    let torrent = tmp.path().join("album.torrent");
    let hash = make_torrent(&payload.root(), &torrent, 15, &[]);
    let id = hash.to_hex();
    let daemon = Daemon::start(
        &tmp.path().join("dl"),
        &tmp.path().join("state"),
        &DaemonOpts::default(),
    );
    let b64 = data_encoding::BASE64.encode(&fs::read(&torrent).unwrap());
    // Only file 1 (one byte, in piece 0); file 9, the last, shares no piece with it.
    let added = daemon.post(
        "/api/torrents",
        &json!({ "torrent_base64": b64, "files": [1] }),
    );
    assert_eq!(added.status, 201, "{added:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.get_json(&format!("/api/torrents/{id}"))["state"] != "downloading" {
        assert!(
            Instant::now() < deadline,
            "the torrent never started downloading"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let len = payload.files[9].1;
    let range = format!("bytes={}-{}", len - 10, len - 1);
    let reply = http(
        daemon.port,
        "GET",
        &format!("/api/torrents/{id}/files/9/stream"),
        &[("Range", range.as_str())],
        None,
    );
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(
        String::from_utf8_lossy(&reply.body).contains("not selected"),
        "{reply:?}"
    );
}
