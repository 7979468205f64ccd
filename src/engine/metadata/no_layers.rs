//! The peers that gave no piece layers when a `urn:btmh` magnet's fetcher asked them (a
//! `hash reject`, a request left unanswered, hashes that prove nothing), each with when:
//! such a peer is left alone for a while, then may be asked again, since a peer that was
//! slow once (or a swarm whose every peer once timed out) may answer the next time.
//!
//! Bounded: at the bound, entries whose time is up go first, then the oldest. Pure: the
//! time is passed in, so no test waits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// In debug builds only (the ones `cargo test` runs), milliseconds to use instead of the
/// retry given to [`NoLayers::new`], so an end-to-end test can see a peer asked again; a
/// release build ignores it, as it ignores `crate::fault`'s variable.
pub const RETRY_ENV: &str = "TORRENT_ACTORS_NO_LAYERS_RETRY_MS";

/// `retry`, or in a debug build the [`RETRY_ENV`] variable's value when it is a number.
pub fn retry_or_override(retry: Duration) -> Duration {
    if !cfg!(debug_assertions) {
        return retry;
    }
    std::env::var(RETRY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(retry, Duration::from_millis)
}

/// See the module documentation.
#[derive(Debug)]
pub struct NoLayers {
    since: HashMap<SocketAddr, Instant>,
    retry: Duration,
    cap: usize,
}

impl NoLayers {
    /// Peers left alone for `retry` after they gave nothing, `cap` of them at most (at
    /// least one).
    pub fn new(retry: Duration, cap: usize) -> NoLayers {
        NoLayers {
            since: HashMap::new(),
            retry,
            cap: cap.max(1),
        }
    }

    /// `addr` gave no piece layers at `now`: left alone until `now + retry`. At the bound,
    /// entries whose time is up are forgotten first, then the oldest.
    pub fn record(&mut self, addr: SocketAddr, now: Instant) {
        if !self.since.contains_key(&addr) && self.since.len() >= self.cap {
            self.forget_expired(now);
            if self.since.len() >= self.cap {
                let oldest = self.since.iter().min_by_key(|(_, &at)| at).map(|(a, _)| *a);
                if let Some(oldest) = oldest {
                    self.since.remove(&oldest);
                }
            }
        }
        self.since.insert(addr, now);
    }

    /// How much longer `addr` is to be left alone at `now`; `None` when it may be asked.
    pub fn left_alone_for(&self, addr: &SocketAddr, now: Instant) -> Option<Duration> {
        let at = self.since.get(addr)?;
        let waited = now.saturating_duration_since(*at);
        self.retry.checked_sub(waited).filter(|d| !d.is_zero())
    }

    /// Whether `addr` is not to be asked at `now`.
    pub fn contains(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.left_alone_for(addr, now).is_some()
    }

    /// Forgets every peer whose time is up at `now`.
    pub fn forget_expired(&mut self, now: Instant) {
        let retry = self.retry;
        self.since
            .retain(|_, at| now.saturating_duration_since(*at) < retry);
    }

    /// Peers remembered (some may be past their time until the next `forget_expired`).
    pub fn len(&self) -> usize {
        self.since.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], n))
    }

    const RETRY: Duration = Duration::from_secs(600);

    #[test]
    fn a_peer_is_left_alone_for_the_retry_then_asked_again() {
        let t0 = Instant::now();
        let mut set = NoLayers::new(RETRY, 16);
        assert!(!set.contains(&addr(1), t0));
        set.record(addr(1), t0);
        assert!(set.contains(&addr(1), t0));
        assert_eq!(set.left_alone_for(&addr(1), t0), Some(RETRY));
        let later = t0 + Duration::from_secs(200);
        assert_eq!(
            set.left_alone_for(&addr(1), later),
            Some(Duration::from_secs(400))
        );
        assert!(!set.contains(&addr(2), later));
        // Its time is up: it may be asked again, and is then forgotten.
        assert!(!set.contains(&addr(1), t0 + RETRY));
        set.forget_expired(t0 + RETRY);
        assert!(set.is_empty());
    }

    #[test]
    fn a_peer_that_fails_again_is_left_alone_again_from_then() {
        let t0 = Instant::now();
        let mut set = NoLayers::new(RETRY, 16);
        set.record(addr(1), t0);
        let again = t0 + RETRY + Duration::from_secs(5);
        assert!(!set.contains(&addr(1), again));
        set.record(addr(1), again);
        assert_eq!(set.left_alone_for(&addr(1), again), Some(RETRY));
        assert!(set.contains(&addr(1), again + RETRY - Duration::from_secs(1)));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn at_the_bound_the_oldest_goes_not_the_newest() {
        let t0 = Instant::now();
        let mut set = NoLayers::new(RETRY, 3);
        for n in 0..3u16 {
            set.record(addr(n), t0 + Duration::from_secs(u64::from(n)));
        }
        let now = t0 + Duration::from_secs(10);
        set.record(addr(9), now);
        assert_eq!(set.len(), 3);
        assert!(set.contains(&addr(9), now), "the newest was not recorded");
        assert!(!set.contains(&addr(0), now), "the oldest was kept");
        assert!(set.contains(&addr(1), now) && set.contains(&addr(2), now));
        // Recording one already there takes no room.
        set.record(addr(2), now);
        assert!(set.contains(&addr(1), now));
    }

    #[test]
    fn at_the_bound_peers_whose_time_is_up_go_and_it_never_grows_past_it() {
        let t0 = Instant::now();
        let mut set = NoLayers::new(Duration::from_secs(10), 3);
        set.record(addr(1), t0 + Duration::from_secs(5));
        set.record(addr(2), t0);
        set.record(addr(3), t0 + Duration::from_secs(6));
        let now = t0 + Duration::from_secs(12);
        set.record(addr(4), now);
        assert_eq!(set.len(), 3);
        assert!(set.contains(&addr(1), now) && set.contains(&addr(3), now));
        assert!(set.contains(&addr(4), now));
        // Many more than the bound: it never grows past it.
        for n in 100..5000u16 {
            set.record(addr(n), now);
        }
        assert_eq!(set.len(), 3);
    }
}
