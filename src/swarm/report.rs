//! The swarm run's report: what `--report` writes as JSON and the summary printed on
//! stdout, and the reading of the leechers' `--stats-file` lines it is built from. Pure:
//! text in, values and text out.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::data::FileCheck;
use super::peer::{PeerCounters, RemoteClose};
use super::profile::Profile;
use crate::stats::{RecordPhase, StatsRecord};

/// The whole report of one `torrent-actors swarm` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The seed every random choice came from.
    pub seed: u64,
    /// The torrent's size and piece size in bytes, and its piece count.
    pub size: u64,
    pub piece_size: u32,
    pub pieces: u32,
    /// The torrent's info-hash in hex.
    pub info_hash: String,
    /// Where the `.torrent` was written.
    pub torrent_file: String,
    /// The peers' links, as the summary describes them (empty: plain loopback).
    #[serde(default)]
    pub links: String,
    /// True for `--dry-run`: the plan only, nothing ran.
    pub dry_run: bool,
    /// The run's bound, and how long it took.
    pub duration_limit_secs: f64,
    pub elapsed_secs: f64,
    /// Whether the bound was reached and leechers were killed.
    pub timed_out: bool,
    /// `complete`, `incomplete`, `wrong files` or `planned`.
    pub outcome: String,
    /// The command's exit code.
    pub exit_code: u8,
    /// Totals per profile, every profile listed.
    pub profiles: Vec<ProfileReport>,
    /// Every peer, in plan order.
    pub peers: Vec<PeerReport>,
    /// Every leecher.
    pub leechers: Vec<LeecherReport>,
    /// Bytes served by each profile so far, sampled once a second.
    pub profile_series: Vec<ProfileSample>,
}

/// What one peer counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTally {
    pub connections: u64,
    /// Of the connections, those uTP carried.
    #[serde(default)]
    pub utp_connections: u64,
    pub handshakes: u64,
    pub bytes_served: u64,
    pub blocks_served: u64,
    pub spoiled_blocks: u64,
    /// Connections the leecher closed while it waited on the peer: its timeouts and bans.
    pub dropped_by_leecher: u64,
    /// Connections the leecher closed with nothing pending: done with this peer.
    pub closed_by_leecher: u64,
    pub closed_by_peer: u64,
    pub ignored_requests: u64,
}

impl PeerTally {
    /// The counters as they are now.
    pub fn of(c: &PeerCounters) -> Self {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Self {
            connections: get(&c.connections),
            utp_connections: get(&c.utp_connections),
            handshakes: get(&c.handshakes),
            bytes_served: get(&c.bytes_served),
            blocks_served: get(&c.blocks_served),
            spoiled_blocks: get(&c.spoiled_blocks),
            // Told apart later by `judge_closes`.
            dropped_by_leecher: 0,
            closed_by_leecher: get(&c.closed_by_leecher),
            closed_by_peer: get(&c.closed_by_peer),
            ignored_requests: get(&c.ignored_requests),
        }
    }

    fn add(&mut self, o: &PeerTally) {
        self.connections += o.connections;
        self.utp_connections += o.utp_connections;
        self.handshakes += o.handshakes;
        self.bytes_served += o.bytes_served;
        self.blocks_served += o.blocks_served;
        self.spoiled_blocks += o.spoiled_blocks;
        self.dropped_by_leecher += o.dropped_by_leecher;
        self.closed_by_leecher += o.closed_by_leecher;
        self.closed_by_peer += o.closed_by_peer;
        self.ignored_requests += o.ignored_requests;
    }
}

/// How long before a leecher's exit its connections may close as part of its leaving:
/// its shutdown disconnects every peer, then it writes its last stats and exits, and the
/// front end notices the exit within a fifth of a second.
pub const LEAVING_WINDOW: std::time::Duration = std::time::Duration::from_secs(3);

/// Splits each peer's connections closed by a leecher into drops (the leecher gave up
/// waiting on the peer: its timeouts and bans) and the rest. A close is a drop when the
/// leecher was waiting on the peer and no leecher exited within [`LEAVING_WINDOW`] after
/// it: a leecher that completes leaves endgame requests queued at slow peers when it
/// closes, and that is leaving, not a timeout. Sets `dropped_by_leecher` and
/// `closed_by_leecher` of `tallies` (indexed by peer).
pub fn judge_closes(
    tallies: &mut [PeerTally],
    closes: &[RemoteClose],
    exits: &[std::time::Instant],
) {
    for t in tallies.iter_mut() {
        t.dropped_by_leecher = 0;
        t.closed_by_leecher = 0;
    }
    for close in closes {
        let Some(t) = tallies.get_mut(close.peer as usize) else {
            continue;
        };
        let leaving = exits
            .iter()
            .any(|&exit| exit >= close.at && exit.duration_since(close.at) <= LEAVING_WINDOW);
        if close.waiting && !leaving {
            t.dropped_by_leecher += 1;
        } else {
            t.closed_by_leecher += 1;
        }
    }
}

/// One peer in the report: its plan and what it counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerReport {
    pub index: u32,
    /// Where it listened (empty in a dry run).
    pub addr: String,
    pub profile: Profile,
    /// Bytes per second per connection, for slow peers.
    pub rate: Option<u64>,
    pub pieces_at_start: u32,
    /// Blocks in a thousand it spoils, for liars.
    pub lie_permille: u32,
    /// A flaky peer's seconds up and down.
    pub flaky_up_secs: Option<f64>,
    pub flaky_down_secs: Option<f64>,
    #[serde(flatten)]
    pub tally: PeerTally,
}

/// A profile's totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileReport {
    pub profile: Profile,
    pub peers: u32,
    #[serde(flatten)]
    pub tally: PeerTally,
}

/// Sums the peers' tallies by profile, every profile listed.
pub fn profile_totals(peers: &[PeerReport]) -> Vec<ProfileReport> {
    Profile::ALL
        .into_iter()
        .map(|profile| {
            let mut total = ProfileReport {
                profile,
                peers: 0,
                tally: PeerTally::default(),
            };
            for p in peers.iter().filter(|p| p.profile == profile) {
                total.peers += 1;
                total.tally.add(&p.tally);
            }
            total
        })
        .collect()
}

/// Bytes served by each profile up to second `t` of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSample {
    pub t: f64,
    /// Profile name → bytes served so far.
    pub bytes: BTreeMap<String, u64>,
}

/// One leecher in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeecherReport {
    pub index: u32,
    /// The port it listened on (127.0.0.1).
    pub port: u16,
    pub pid: u32,
    /// Its exit code; `None` if it was killed by a signal.
    pub exit_code: Option<i32>,
    /// Killed at the duration limit.
    pub killed: bool,
    /// It said it completed (exit 0) and its file is right.
    pub completed: bool,
    /// Seconds from its start to its first stats record with every byte verified.
    pub completion_secs: Option<f64>,
    /// Seconds from its start to its exit.
    pub exited_after_secs: Option<f64>,
    /// Bytes per second from start to completion.
    pub average_rate: Option<f64>,
    /// The check of its file against the content, if it completed.
    pub files: Option<FileCheck>,
    pub files_right: bool,
    /// From its last stats record.
    pub hash_failures: u64,
    pub banned: u64,
    pub received: u64,
    pub uploaded: u64,
    /// Bytes it verified in this run (pieces it already had are not counted).
    #[serde(default)]
    pub verified_this_run: u64,
    /// Bytes received per byte verified in this run, see [`waste_ratio`]; `None` while
    /// nothing was verified.
    #[serde(default)]
    pub waste_ratio: Option<f64>,
    /// The most over all records.
    pub peak_rss_bytes: u64,
    pub max_open_files: u64,
    pub max_peers: u64,
    /// Its stats records, one a second.
    pub throughput: Vec<LeecherSample>,
    /// The actors' metrics of its last stats record, as it wrote them.
    pub actors: serde_json::Value,
    /// Where its stats file and log are.
    pub stats_file: String,
    pub log_file: String,
}

/// One second of a leecher's run, from its stats file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LeecherSample {
    pub t: f64,
    pub verified_bytes: u64,
    pub received: u64,
    pub uploaded: u64,
    /// Its own download rate estimate, bytes per second.
    pub rate: f64,
    pub peers: u64,
    pub rss_bytes: u64,
    pub open_files: u64,
}

/// What a leecher's stats file says, summed up.
#[derive(Debug, Clone, Default)]
pub struct StatsSummary {
    pub samples: Vec<LeecherSample>,
    /// `t` of the first record with every wanted byte verified. A `get` without
    /// `--seed` exits at completion, and its last record, written after its shutdown,
    /// is that one.
    pub completed_at: Option<f64>,
    pub total_bytes: u64,
    pub hash_failures: u64,
    pub banned: u64,
    pub received: u64,
    pub uploaded: u64,
    /// Bytes verified by this run, from the last record.
    pub verified_this_run: u64,
    pub peak_rss_bytes: u64,
    pub max_open_files: u64,
    pub max_peers: u64,
    pub actors: serde_json::Value,
    /// Lines that were not a stats record (a line cut by a kill, say).
    pub unreadable_lines: usize,
}

impl StatsSummary {
    /// Reads a stats file's text, a JSON record per line.
    pub fn from_lines(text: &str) -> Self {
        let mut s = StatsSummary::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(r) = serde_json::from_str::<StatsRecord>(line) else {
                s.unreadable_lines += 1;
                continue;
            };
            let process = r.process.unwrap_or_default();
            s.samples.push(LeecherSample {
                t: r.t,
                verified_bytes: r.verified_bytes,
                received: r.received,
                uploaded: r.uploaded,
                rate: r.rate,
                peers: r.peers,
                rss_bytes: process.rss_bytes,
                open_files: process.open_files,
            });
            let done = r.phase == RecordPhase::Complete
                || (r.total_bytes > 0 && r.verified_bytes == r.total_bytes);
            if done && s.completed_at.is_none() {
                s.completed_at = Some(r.t);
            }
            s.total_bytes = r.total_bytes;
            s.hash_failures = r.hash_failures;
            s.banned = r.banned;
            s.received = r.received;
            s.uploaded = r.uploaded;
            s.verified_this_run = r.downloaded_this_run;
            s.peak_rss_bytes = s
                .peak_rss_bytes
                .max(process.peak_rss_bytes)
                .max(process.rss_bytes);
            s.max_open_files = s.max_open_files.max(process.open_files);
            s.max_peers = s.max_peers.max(r.peers);
            if !r.actors.is_null() {
                s.actors = r.actors;
            }
        }
        s
    }
}

/// Bytes received per byte verified: 1.0 is a download without waste; what is above it
/// was thrown away (blocks of pieces that failed their hash, endgame duplicates, blocks
/// that came after their piece was done). `None` while nothing was verified, since any
/// bytes received then are all waste and no ratio says how much.
pub fn waste_ratio(received: u64, verified: u64) -> Option<f64> {
    (verified > 0).then(|| received as f64 / verified as f64)
}

/// `1.5 GiB`, `12.0 MiB`, `300 B`.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} {}", UNITS[0])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl Report {
    /// The readable summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "swarm: {} peers, {} in {} pieces of {}, seed {}, info-hash {}",
            self.peers.len(),
            human_bytes(self.size as f64),
            self.pieces,
            human_bytes(f64::from(self.piece_size)),
            self.seed,
            self.info_hash
        );
        let _ = writeln!(
            s,
            "\n{:<8} {:>5} {:>10} {:>8} {:>7} {:>6} {:>8} {:>7} {:>7} {:>7}",
            "profile",
            "peers",
            "served",
            "blocks",
            "spoiled",
            "conns",
            "dropped",
            "left",
            "closed",
            "ignored"
        );
        for p in self.profiles.iter().filter(|p| p.peers > 0) {
            let t = &p.tally;
            let _ = writeln!(
                s,
                "{:<8} {:>5} {:>10} {:>8} {:>7} {:>6} {:>8} {:>7} {:>7} {:>7}",
                p.profile.name(),
                p.peers,
                human_bytes(t.bytes_served as f64),
                t.blocks_served,
                t.spoiled_blocks,
                t.connections,
                t.dropped_by_leecher,
                t.closed_by_leecher,
                t.closed_by_peer,
                t.ignored_requests
            );
        }
        let _ = writeln!(
            s,
            "(dropped: connections a leecher closed while it waited on the peer, its timeouts \
             and bans; left: closed by a leecher done with the peer; closed: by the peer)"
        );
        let (utp, all) = self.profiles.iter().fold((0, 0), |(u, a), p| {
            (u + p.tally.utp_connections, a + p.tally.connections)
        });
        if utp > 0 {
            let _ = writeln!(s, "(uTP carried {utp} of the {all} connections)");
        }
        for l in &self.leechers {
            let _ = writeln!(s);
            self.leecher_summary(&mut s, l);
        }
        let _ = writeln!(
            s,
            "\n{} in {:.1} s (exit {})",
            self.outcome, self.elapsed_secs, self.exit_code
        );
        s
    }
}

impl Report {
    /// One leecher's lines of the summary: its outcome, its counts, its actors.
    fn leecher_summary(&self, s: &mut String, l: &LeecherReport) {
        let state = match (l.completed, l.killed, l.completion_secs) {
            (true, _, Some(t)) => format!(
                "complete in {t:.1} s ({}/s)",
                human_bytes(l.average_rate.unwrap_or(0.0))
            ),
            (true, _, None) => "complete".to_string(),
            (false, true, _) if self.timed_out => "killed at the duration limit".to_string(),
            (false, true, _) => "killed when the run was stopped".to_string(),
            (false, false, _) => format!(
                "did not complete (exit {})",
                l.exit_code
                    .map_or_else(|| "by signal".to_string(), |c| c.to_string())
            ),
        };
        let files = match &l.files {
            Some(_) if l.files_right => "files right".to_string(),
            Some(f) => format!("FILES WRONG: {} bad pieces", f.bad_count),
            None => "files not checked".to_string(),
        };
        let _ = writeln!(s, "leecher {} (pid {}): {state}, {files}", l.index, l.pid);
        let _ = writeln!(
            s,
            "  peak RSS {}, at most {} open files and {} peers, {} hash failures, {} banned, \
             {} received, {} uploaded",
            human_bytes(l.peak_rss_bytes as f64),
            l.max_open_files,
            l.max_peers,
            l.hash_failures,
            l.banned,
            human_bytes(l.received as f64),
            human_bytes(l.uploaded as f64)
        );
        let _ = writeln!(
            s,
            "  waste {}: {} received for {} verified",
            l.waste_ratio
                .map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}x")),
            human_bytes(l.received as f64),
            human_bytes(l.verified_this_run as f64)
        );
        if let Some(actors) = l.actors.get("actors").and_then(|a| a.as_array()) {
            for a in actors {
                let field = |k: &str| a.get(k).cloned().unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  {:<16} handled {:>9} busy {:>9} ms mailbox peak {:>5} held back {}",
                    field("actor").as_str().unwrap_or("?"),
                    field("handled"),
                    format!("{:.0}", field("busy_ms").as_f64().unwrap_or(0.0)),
                    field("mailbox_peak"),
                    field("backpressure")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as `get` writes it.
    fn record(
        t: f64,
        phase: RecordPhase,
        verified: u64,
        this_run: u64,
        received: u64,
    ) -> StatsRecord {
        StatsRecord {
            t,
            phase,
            total_bytes: 100,
            verified_bytes: verified,
            downloaded_this_run: this_run,
            received,
            uploaded: 0,
            peers: 3,
            hash_failures: 0,
            banned: 0,
            rate: 0.0,
            process: None,
            actors: serde_json::Value::Null,
            last: false,
        }
    }

    fn lines(records: &[StatsRecord]) -> String {
        records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect()
    }

    #[test]
    fn stats_lines_are_summed_up_and_bad_lines_counted() {
        let mut first = record(1.0, RecordPhase::Downloading, 10, 10, 10);
        first.process = Some(crate::procstats::ProcStats {
            rss_bytes: 5,
            peak_rss_bytes: 7,
            open_files: 9,
        });
        first.actors = serde_json::json!({ "actors": [] });
        let mut second = record(2.0, RecordPhase::Complete, 100, 100, 100);
        second.peers = 2;
        (second.hash_failures, second.banned) = (2, 1);
        second.process = Some(crate::procstats::ProcStats {
            rss_bytes: 6,
            peak_rss_bytes: 8,
            open_files: 4,
        });
        second.last = true;
        let text = lines(&[first, second]) + r#"{"t":3.0,"pha"#;
        let s = StatsSummary::from_lines(&text);
        assert_eq!(s.samples.len(), 2);
        assert_eq!(s.completed_at, Some(2.0));
        assert_eq!((s.hash_failures, s.banned), (2, 1));
        assert_eq!((s.peak_rss_bytes, s.max_open_files, s.max_peers), (8, 9, 3));
        assert_eq!(s.unreadable_lines, 1);
        assert!(s.actors.get("actors").is_some());
    }

    #[test]
    fn a_record_missing_a_field_is_unreadable_not_zeros() {
        // A writer and reader that drift apart: the reader once took a missing field as
        // zero, and a renamed counter read as nothing received.
        let mut value =
            serde_json::to_value(record(1.0, RecordPhase::Complete, 100, 100, 90)).unwrap();
        value.as_object_mut().unwrap().remove("received");
        let s = StatsSummary::from_lines(&value.to_string());
        assert_eq!((s.samples.len(), s.unreadable_lines), (0, 1));
    }

    #[test]
    fn profile_totals_list_every_profile() {
        let peer = |profile, bytes| PeerReport {
            index: 0,
            addr: String::new(),
            profile,
            rate: None,
            pieces_at_start: 1,
            lie_permille: 0,
            flaky_up_secs: None,
            flaky_down_secs: None,
            tally: PeerTally {
                bytes_served: bytes,
                ..PeerTally::default()
            },
        };
        let totals = profile_totals(&[
            peer(Profile::Fast, 10),
            peer(Profile::Fast, 5),
            peer(Profile::Liar, 1),
        ]);
        assert_eq!(totals.len(), Profile::ALL.len());
        assert_eq!((totals[0].peers, totals[0].tally.bytes_served), (2, 15));
        assert_eq!(totals[1].peers, 0);
    }

    #[test]
    fn closes_just_before_a_leecher_exit_are_leaving_and_others_while_waiting_are_drops() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + std::time::Duration::from_secs(s);
        let close = |peer, s, waiting| RemoteClose {
            peer,
            at: at(s),
            waiting,
        };
        let mut tallies = vec![PeerTally::default(); 3];
        let closes = [
            close(0, 10, true),  // waiting, long before the exit: a drop
            close(0, 99, true),  // waiting, just before the exit: leaving
            close(1, 50, false), // not waiting: leaving whenever
            close(2, 101, true), // after the only exit: a drop
            close(9, 1, true),   // no such peer: ignored
        ];
        judge_closes(&mut tallies, &closes, &[at(100)]);
        let got: Vec<(u64, u64)> = tallies
            .iter()
            .map(|t| (t.dropped_by_leecher, t.closed_by_leecher))
            .collect();
        assert_eq!(got, vec![(1, 1), (0, 1), (1, 0)]);
    }

    #[test]
    fn waste_ratio_is_bytes_received_per_byte_verified() {
        assert_eq!(waste_ratio(100, 100), Some(1.0));
        assert_eq!(waste_ratio(150, 100), Some(1.5));
        // 562 MiB received for a 128 MiB torrent, as issue 16 measured.
        let r = waste_ratio(562 << 20, 128 << 20).unwrap();
        assert!((r - 4.390625).abs() < 1e-9, "{r}");
        // Received less than verified cannot happen for one run, but the ratio still
        // reads right rather than failing.
        assert_eq!(waste_ratio(50, 100), Some(0.5));
        assert_eq!(waste_ratio(0, 0), None);
        assert_eq!(waste_ratio(4096, 0), None);
    }

    #[test]
    fn the_last_record_gives_the_bytes_verified_this_run() {
        let text = lines(&[
            record(1.0, RecordPhase::Downloading, 40, 0, 16),
            record(2.0, RecordPhase::Complete, 100, 60, 90),
        ]);
        let s = StatsSummary::from_lines(&text);
        assert_eq!((s.received, s.verified_this_run), (90, 60));
        assert_eq!(waste_ratio(s.received, s.verified_this_run), Some(1.5));
    }

    #[test]
    fn the_summary_prints_each_leechers_waste() {
        let leecher = |index, received, verified| LeecherReport {
            index,
            port: 1,
            pid: 2,
            exit_code: Some(0),
            killed: false,
            completed: true,
            completion_secs: Some(1.0),
            exited_after_secs: Some(1.0),
            average_rate: Some(1.0),
            files: None,
            files_right: true,
            hash_failures: 0,
            banned: 0,
            received,
            uploaded: 0,
            verified_this_run: verified,
            waste_ratio: waste_ratio(received, verified),
            peak_rss_bytes: 0,
            max_open_files: 0,
            max_peers: 0,
            throughput: Vec::new(),
            actors: serde_json::Value::Null,
            stats_file: String::new(),
            log_file: String::new(),
        };
        let report = Report {
            seed: 1,
            size: 4 << 20,
            piece_size: 1 << 20,
            pieces: 4,
            info_hash: String::new(),
            torrent_file: String::new(),
            links: String::new(),
            dry_run: false,
            duration_limit_secs: 1.0,
            elapsed_secs: 1.0,
            timed_out: false,
            outcome: "complete".into(),
            exit_code: 0,
            profiles: Vec::new(),
            peers: Vec::new(),
            leechers: vec![leecher(0, 6 << 20, 4 << 20), leecher(1, 1 << 20, 0)],
            profile_series: Vec::new(),
        };
        let text = report.summary();
        assert!(
            text.contains("waste 1.50x: 6.0 MiB received for 4.0 MiB verified"),
            "{text}"
        );
        assert!(
            text.contains("waste n/a: 1.0 MiB received for 0 B verified"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["leechers"][0]["waste_ratio"], 1.5);
        assert_eq!(json["leechers"][0]["verified_this_run"], 4 << 20);
        assert!(json["leechers"][1]["waste_ratio"].is_null());
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(300.0), "300 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(1024.0 * 1024.0 * 1024.0), "1.0 GiB");
    }
}
