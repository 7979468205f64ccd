//! BEP 12 tier bookkeeping: which tracker URL of each tier is the one in use.
//!
//! This is a pure structure with no sockets and no clock. The Coordinator owns one per
//! torrent, runs one Tracker actor per URL that [`Tiers::initial`] or
//! [`Tiers::on_result`] names, and feeds every `TrackerReport` back into
//! [`Tiers::on_result`]. It must not decide *when* to retry: each Tracker actor paces its
//! own retries with its back-off.
//!
//! We announce to every tier at once, one URL per tier, rather than only to the first
//! tier as BEP 12 literally describes; most clients do the same, since a torrent's tiers
//! are usually independent trackers and each of them knows different peers.

use rand::seq::SliceRandom;
use rand::Rng;

/// The most tracker URLs of one torrent that are ever announced to, in tier order. Every
/// tier is announced to at once and each UDP tracker holds a socket, so a torrent (or a
/// magnet link) listing thousands of trackers would otherwise cost thousands of sockets
/// and announces; real torrents list tens.
pub const MAX_TRACKERS: usize = 200;

/// One tier: its URLs in preference order and which one is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tier {
    /// The URLs, best first; a URL that worked moves to the front.
    urls: Vec<String>,
    /// Index into `urls` of the URL being announced to.
    active: usize,
    /// How many URLs of this tier have failed in a row since the last success, so a
    /// tier whose every URL fails stops switching and lets the active tracker's own
    /// back-off set the pace.
    failed_in_a_row: usize,
}

/// The tiers of a torrent's `announce-list`, as BEP 12 orders and rotates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    /// Non-empty tiers in metainfo order; no URL appears twice across all of them.
    tiers: Vec<Tier>,
    /// URLs left out because the torrent lists more than [`MAX_TRACKERS`].
    dropped: usize,
}

impl Tiers {
    /// Builds the tiers from the metainfo's `announce-list`, keeping its order. Empty
    /// tiers are dropped, and a URL that already appeared (in this tier or an earlier
    /// one) is dropped too, because the engine runs one Tracker actor per URL. Past the
    /// first [`MAX_TRACKERS`] distinct URLs the rest are left out ([`Tiers::dropped`]
    /// counts them).
    pub fn new(tiers: Vec<Vec<String>>) -> Tiers {
        let mut seen = std::collections::HashSet::new();
        let mut dropped = 0;
        let tiers = tiers
            .into_iter()
            .map(|urls| {
                urls.into_iter()
                    .filter(|url| {
                        if seen.contains(url) {
                            false
                        } else if seen.len() < MAX_TRACKERS {
                            seen.insert(url.clone())
                        } else {
                            dropped += 1;
                            false
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|urls| !urls.is_empty())
            .map(|urls| Tier {
                urls,
                active: 0,
                failed_in_a_row: 0,
            })
            .collect();
        Tiers { tiers, dropped }
    }

    /// How many URLs were left out for being past the first [`MAX_TRACKERS`].
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Shuffles the URLs inside each tier, as BEP 12 asks a client to do once when it
    /// loads the torrent, so that every client does not hammer the same first URL. The
    /// order of the tiers themselves is kept.
    pub fn shuffle(&mut self, rng: &mut impl Rng) {
        for tier in &mut self.tiers {
            tier.urls.shuffle(rng);
            tier.active = 0;
            tier.failed_in_a_row = 0;
        }
    }

    /// The URL to start announcing to in every tier: the first of each.
    pub fn initial(&self) -> Vec<String> {
        self.active()
    }

    /// The URL currently in use in every tier, in tier order.
    pub fn active(&self) -> Vec<String> {
        self.tiers
            .iter()
            .filter_map(|tier| tier.urls.get(tier.active).cloned())
            .collect()
    }

    /// The URLs of every tier in their current preference order, for display and tests.
    pub fn urls(&self) -> Vec<Vec<String>> {
        self.tiers.iter().map(|tier| tier.urls.clone()).collect()
    }

    /// Records how an announce to `url` went and says which URL, if any, should take
    /// over in its tier.
    ///
    /// On success the URL moves to the front of its tier (BEP 12) and `None` is returned.
    /// On failure of a tier's active URL, the next URL of that tier becomes active and is
    /// returned, so the caller stops the failing tracker and starts that one. Once every
    /// URL of the tier has failed in a row, `None` is returned instead and the failing
    /// tracker stays in charge, retrying on its own back-off; its next failure starts a
    /// new round with the following URL. Reports about a URL that is not the active one
    /// of its tier (a late report from a tracker being stopped) change nothing.
    pub fn on_result(&mut self, url: &str, ok: bool) -> Option<String> {
        let tier = self.tiers.iter_mut().find(|tier| {
            tier.urls
                .get(tier.active)
                .is_some_and(|active| active == url)
        })?;
        if ok {
            let working = tier.urls.remove(tier.active);
            tier.urls.insert(0, working);
            tier.active = 0;
            tier.failed_in_a_row = 0;
            return None;
        }
        tier.failed_in_a_row += 1;
        if tier.failed_in_a_row >= tier.urls.len() {
            tier.failed_in_a_row = 0;
            return None;
        }
        tier.active = (tier.active + 1) % tier.urls.len();
        tier.urls.get(tier.active).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn tiers(spec: &[&[&str]]) -> Tiers {
        Tiers::new(
            spec.iter()
                .map(|tier| tier.iter().map(|s| s.to_string()).collect())
                .collect(),
        )
    }

    #[test]
    fn initial_names_the_first_url_of_every_tier() {
        let t = tiers(&[&["a1", "a2"], &["b1"], &["c1", "c2", "c3"]]);
        assert_eq!(t.initial(), vec!["a1", "b1", "c1"]);
    }

    #[test]
    fn empty_tiers_and_repeated_urls_are_dropped() {
        let t = tiers(&[&[], &["a", "b", "a"], &["b"], &["c"]]);
        assert_eq!(t.urls(), vec![vec!["a", "b"], vec!["c"]]);
        assert_eq!(t.initial(), vec!["a", "c"]);
        assert!(Tiers::new(Vec::new()).initial().is_empty());
    }

    #[test]
    fn only_the_first_urls_up_to_the_cap_are_kept() {
        let many: Vec<Vec<String>> = (0..MAX_TRACKERS + 50)
            .map(|n| {
                vec![
                    format!("udp://t{n}:1/announce"),
                    "udp://same:1/a".to_string(),
                ]
            })
            .collect();
        let t = Tiers::new(many);
        let kept: usize = t.urls().iter().map(Vec::len).sum();
        assert_eq!(kept, MAX_TRACKERS);
        // The repeated URL counts once: t0, it and t1 to t198 are kept, t199 to t249
        // dropped.
        assert_eq!(t.dropped(), 51);
        assert_eq!(t.urls()[0], ["udp://t0:1/announce", "udp://same:1/a"]);
        assert_eq!(t.initial().len(), MAX_TRACKERS - 1);
    }

    #[test]
    fn failure_of_the_active_url_hands_over_to_the_next_in_its_tier() {
        let mut t = tiers(&[&["a1", "a2", "a3"], &["b1"]]);
        assert_eq!(t.on_result("a1", false), Some("a2".to_string()));
        assert_eq!(t.active(), vec!["a2", "b1"]);
        assert_eq!(t.on_result("a2", false), Some("a3".to_string()));
        assert_eq!(t.active(), vec!["a3", "b1"]);
    }

    #[test]
    fn a_tier_whose_every_url_failed_keeps_its_last_url_for_one_back_off() {
        let mut t = tiers(&[&["a1", "a2"]]);
        assert_eq!(t.on_result("a1", false), Some("a2".to_string()));
        // Both have now failed in a row: stay with a2 and let its back-off pace the retry.
        assert_eq!(t.on_result("a2", false), None);
        assert_eq!(t.active(), vec!["a2"]);
        // Its next failure starts a new round from the following URL.
        assert_eq!(t.on_result("a2", false), Some("a1".to_string()));
        assert_eq!(t.active(), vec!["a1"]);
    }

    #[test]
    fn a_single_url_tier_never_switches() {
        let mut t = tiers(&[&["only"]]);
        for _ in 0..3 {
            assert_eq!(t.on_result("only", false), None);
        }
        assert_eq!(t.active(), vec!["only"]);
    }

    #[test]
    fn success_moves_the_url_to_the_front_of_its_tier() {
        let mut t = tiers(&[&["a1", "a2", "a3"], &["b1", "b2"]]);
        assert_eq!(t.on_result("a1", false), Some("a2".to_string()));
        assert_eq!(t.on_result("a2", false), Some("a3".to_string()));
        assert_eq!(t.on_result("a3", true), None);
        assert_eq!(t.urls()[0], vec!["a3", "a1", "a2"]);
        assert_eq!(t.active(), vec!["a3", "b1"]);
        // The other tier is untouched.
        assert_eq!(t.urls()[1], vec!["b1", "b2"]);
    }

    #[test]
    fn success_resets_the_failure_round() {
        let mut t = tiers(&[&["a1", "a2"]]);
        assert_eq!(t.on_result("a1", false), Some("a2".to_string()));
        assert_eq!(t.on_result("a2", true), None);
        // a2 now leads; one failure must hand over to a1 again, not count as a full round.
        assert_eq!(t.on_result("a2", false), Some("a1".to_string()));
    }

    #[test]
    fn reports_about_inactive_or_unknown_urls_change_nothing() {
        let mut t = tiers(&[&["a1", "a2"]]);
        let before = t.clone();
        assert_eq!(t.on_result("a2", false), None);
        assert_eq!(t.on_result("a2", true), None);
        assert_eq!(t.on_result("elsewhere", false), None);
        assert_eq!(t, before);
    }

    #[test]
    fn shuffle_keeps_every_url_in_its_own_tier() {
        let mut t = tiers(&[&["a1", "a2", "a3", "a4"], &["b1", "b2"]]);
        t.shuffle(&mut SmallRng::seed_from_u64(7));
        let urls = t.urls();
        let mut first = urls[0].clone();
        first.sort();
        assert_eq!(first, vec!["a1", "a2", "a3", "a4"]);
        let mut second = urls[1].clone();
        second.sort();
        assert_eq!(second, vec!["b1", "b2"]);
        assert_eq!(t.initial(), vec![urls[0][0].clone(), urls[1][0].clone()]);
    }
}
