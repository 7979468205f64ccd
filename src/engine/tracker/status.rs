//! What the user is told about each tracker of a torrent: the [`TrackerBoard`].
//!
//! The actor that owns a torrent's Tracker actors (the Coordinator, or the
//! MetadataFetcher while a magnet link has no metadata yet) owns one board. It feeds the
//! board every `TrackerAnnouncing` and `TrackerReport` it receives and every URL it could
//! not build a Tracker for; the board says whether the tracker's status changed, so the
//! owner emits `TorrentEvent::Tracker` only then, and answers `GetTrackers` with
//! [`TrackerBoard::statuses`].
//!
//! This is a pure structure: no actor, no socket, and the time comes in as an argument.
//! It must not decide anything about announcing; it only records what the Tracker actors
//! and the tier bookkeeping already decided.

use std::time::{Duration, Instant};

use super::super::messages::TrackerReport;

/// Where one tracker stands, as a client's tracker list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerState {
    /// Never announced to: a backup URL of its tier that has not been needed, or one
    /// whose first announce has not begun.
    Idle,
    /// An announce is under way.
    Updating,
    /// The last announce was answered.
    Working,
    /// The last announce failed, for this reason; it is retried on the actor's back-off.
    Failed(String),
    /// The URL can never work (not a URL, a scheme we do not speak), so it is never
    /// announced to.
    Unusable(String),
}

/// One tracker of a torrent, for display: the row of a tracker list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerStatus {
    /// The announce URL as the torrent or magnet link gives it.
    pub url: String,
    /// Its BEP 12 tier, counting from 0.
    pub tier: usize,
    /// Where it stands.
    pub state: TrackerState,
    /// The text of the latest failure, kept while a retry is under way and cleared by a
    /// success, so "updating" can still say what went wrong last time.
    pub last_error: Option<String>,
    /// Announces that failed in a row.
    pub failures: u32,
    /// Peers in the last successful reply.
    pub peers: Option<usize>,
    /// Seeders and leechers in the last successful reply, when the tracker said.
    pub seeders: Option<u32>,
    /// See `seeders`.
    pub leechers: Option<u32>,
    /// The warning of the last successful reply, if it had one.
    pub warning: Option<String>,
    /// When the tracker's actor will announce next; `None` while an announce is under
    /// way, for an idle or unusable URL, and once the torrent has stopped.
    pub next_announce: Option<Instant>,
}

impl TrackerStatus {
    /// A tracker nobody has announced to yet.
    pub fn idle(url: String, tier: usize) -> TrackerStatus {
        TrackerStatus {
            url,
            tier,
            state: TrackerState::Idle,
            last_error: None,
            failures: 0,
            peers: None,
            seeders: None,
            leechers: None,
            warning: None,
            next_announce: None,
        }
    }
}

/// Every tracker of one torrent, in tier order; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct TrackerBoard {
    /// One entry per URL, tier by tier, in the torrent's order.
    trackers: Vec<TrackerStatus>,
}

impl TrackerBoard {
    /// A board listing every URL of `tiers` (as the metainfo gives them, each URL once),
    /// all idle.
    pub fn new(tiers: &[Vec<String>]) -> TrackerBoard {
        let mut trackers: Vec<TrackerStatus> = Vec::new();
        for (tier, urls) in tiers.iter().enumerate() {
            for url in urls {
                if !trackers.iter().any(|t| &t.url == url) {
                    trackers.push(TrackerStatus::idle(url.clone(), tier));
                }
            }
        }
        TrackerBoard { trackers }
    }

    /// Every tracker's status, in tier order.
    pub fn statuses(&self) -> &[TrackerStatus] {
        &self.trackers
    }

    /// The entry for `url`, added in a tier of its own if the board did not list it
    /// (reports only come from actors the owner started for URLs of the torrent, so
    /// this is a safety net, not a path).
    fn entry(&mut self, url: &str) -> &mut TrackerStatus {
        let index = match self.trackers.iter().position(|t| t.url == url) {
            Some(index) => index,
            None => {
                let tier = self.trackers.iter().map(|t| t.tier + 1).max().unwrap_or(0);
                self.trackers
                    .push(TrackerStatus::idle(url.to_string(), tier));
                self.trackers.len() - 1
            }
        };
        &mut self.trackers[index]
    }

    /// Applies `change` to the entry for `url` and returns the new status if anything
    /// in it changed.
    fn update(
        &mut self,
        url: &str,
        change: impl FnOnce(&mut TrackerStatus),
    ) -> Option<TrackerStatus> {
        let entry = self.entry(url);
        let before = entry.clone();
        change(entry);
        (*entry != before).then(|| entry.clone())
    }

    /// An announce to `url` began.
    pub fn announcing(&mut self, url: &str) -> Option<TrackerStatus> {
        self.update(url, |t| {
            t.state = TrackerState::Updating;
            t.next_announce = None;
        })
    }

    /// An announce to `url` ended as `report` says; `now` dates its next announce.
    pub fn reported(&mut self, report: &TrackerReport, now: Instant) -> Option<TrackerStatus> {
        let next = report.next_announce.map(|d| now + d);
        self.update(&report.url, |t| {
            t.next_announce = next;
            match &report.outcome {
                Ok(summary) => {
                    t.state = TrackerState::Working;
                    t.last_error = None;
                    t.failures = 0;
                    t.peers = Some(summary.peers);
                    t.seeders = summary.seeders;
                    t.leechers = summary.leechers;
                    t.warning = summary.warning.clone();
                }
                Err(error) => {
                    t.state = TrackerState::Failed(error.clone());
                    t.last_error = Some(error.clone());
                    t.failures = t.failures.saturating_add(1);
                }
            }
        })
    }

    /// No Tracker actor can be built for `url`, for the reason given.
    pub fn unusable(&mut self, url: &str, reason: String) -> Option<TrackerStatus> {
        self.update(url, |t| {
            t.state = TrackerState::Unusable(reason.clone());
            t.last_error = Some(reason);
            t.next_announce = None;
        })
    }
}

/// How long from `now` until `status` announces next, if it is scheduled: for display,
/// which wants "retrying in 15 s" rather than an instant.
pub fn next_announce_in(status: &TrackerStatus, now: Instant) -> Option<Duration> {
    status
        .next_announce
        .map(|at| at.saturating_duration_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::messages::AnnounceSummary;

    fn board() -> TrackerBoard {
        TrackerBoard::new(&[
            vec!["http://a/announce".into(), "http://b/announce".into()],
            vec!["udp://c:1/announce".into(), "http://a/announce".into()],
        ])
    }

    fn ok(url: &str, peers: usize, next: u64) -> TrackerReport {
        TrackerReport {
            url: url.into(),
            outcome: Ok(AnnounceSummary {
                peers,
                seeders: Some(1),
                leechers: Some(2),
                interval: Duration::from_secs(next),
                warning: None,
            }),
            next_announce: Some(Duration::from_secs(next)),
        }
    }

    fn failed(url: &str, error: &str, retry: u64) -> TrackerReport {
        TrackerReport {
            url: url.into(),
            outcome: Err(error.into()),
            next_announce: Some(Duration::from_secs(retry)),
        }
    }

    #[test]
    fn every_url_is_listed_once_in_its_first_tier_and_idle() {
        let b = board();
        let rows: Vec<(&str, usize)> = b
            .statuses()
            .iter()
            .map(|t| (t.url.as_str(), t.tier))
            .collect();
        assert_eq!(
            rows,
            [
                ("http://a/announce", 0),
                ("http://b/announce", 0),
                ("udp://c:1/announce", 1)
            ]
        );
        assert!(b.statuses().iter().all(|t| t.state == TrackerState::Idle));
    }

    #[test]
    fn a_failure_then_a_success_go_through_updating_and_clear_the_error() {
        let mut b = board();
        let now = Instant::now();
        let url = "udp://c:1/announce";
        assert_eq!(b.announcing(url).unwrap().state, TrackerState::Updating);
        let t = b.reported(&failed(url, "no reply", 15), now).unwrap();
        assert_eq!(t.state, TrackerState::Failed("no reply".into()));
        assert_eq!(t.failures, 1);
        assert_eq!(next_announce_in(&t, now), Some(Duration::from_secs(15)));
        let t = b.announcing(url).unwrap();
        assert_eq!(t.state, TrackerState::Updating);
        assert_eq!(t.last_error.as_deref(), Some("no reply"));
        assert_eq!(t.next_announce, None);
        let t = b.reported(&ok(url, 7, 1800), now).unwrap();
        assert_eq!(t.state, TrackerState::Working);
        assert_eq!((t.last_error, t.failures, t.peers), (None, 0, Some(7)));
        assert_eq!((t.seeders, t.leechers), (Some(1), Some(2)));
        // The other trackers are untouched.
        assert!(b.statuses()[..2]
            .iter()
            .all(|t| t.state == TrackerState::Idle));
    }

    #[test]
    fn nothing_is_reported_changed_when_nothing_changed() {
        let mut b = board();
        let now = Instant::now();
        let url = "http://b/announce";
        assert!(b.announcing(url).is_some());
        assert!(b.announcing(url).is_none());
        assert!(b.reported(&ok(url, 3, 60), now).is_some());
        assert!(b.reported(&ok(url, 3, 60), now).is_none());
        assert!(b.reported(&ok(url, 4, 60), now).is_some());
        assert!(b.unusable("http://a/announce", "bad".into()).is_some());
        assert!(b.unusable("http://a/announce", "bad".into()).is_none());
    }

    #[test]
    fn repeated_failures_count_up_and_keep_the_latest_text() {
        let mut b = board();
        let now = Instant::now();
        let url = "http://a/announce";
        b.reported(&failed(url, "http status 500", 15), now);
        let t = b
            .reported(&failed(url, "http status 502", 30), now)
            .unwrap();
        assert_eq!(t.failures, 2);
        assert_eq!(t.state, TrackerState::Failed("http status 502".into()));
        assert_eq!(next_announce_in(&t, now), Some(Duration::from_secs(30)));
    }

    #[test]
    fn an_unknown_url_gets_a_tier_of_its_own() {
        let mut b = board();
        let t = b.announcing("http://elsewhere/announce").unwrap();
        assert_eq!(t.tier, 2);
        assert_eq!(b.statuses().len(), 4);
    }

    #[test]
    fn an_unusable_url_is_never_scheduled() {
        let mut b = board();
        let t = b
            .unusable("http://b/announce", "unsupported scheme".into())
            .unwrap();
        assert_eq!(t.state, TrackerState::Unusable("unsupported scheme".into()));
        assert_eq!(t.next_announce, None);
    }
}
