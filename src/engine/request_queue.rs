//! How many block requests one connection keeps outstanding: pure sizing, no actor.
//!
//! A peer can send no faster than our requests reach it, so the queue must cover the
//! bandwidth-delay product: the blocks that arrive during one round trip. A rate measured
//! once a second sizes it too late on a far link: for the first seconds the queue's
//! floor, 16 blocks per round trip, is the rate (1.25 MiB/s at 200 ms). So the queue is
//! sized as TCP sizes its window:
//!
//! - **Round trip**: every request is timed, from sent to its block received, smoothed
//!   as TCP's SRTT; the lowest seen is the path's own delay.
//! - **Slow start**: while the measured round trip stays near the lowest (the peer keeps
//!   up: our requests do not wait in a queue there), every block received while the
//!   queue is kept full adds one to the window, so it doubles each round trip.
//! - **Steady**: once the round trip grows (requests queue at the peer), growth slows to
//!   one block per window; a round trip far above the lowest shrinks the window by a
//!   quarter (once per round trip), down to what the rate measured over the last round
//!   trip needs over the lowest round trip.
//!
//! The window never goes below the rate measured once a second times the configured
//! queue seconds (the old rule, kept as a floor), nor below `min_queue`, and never above
//! the peer's `reqq` or `max_queue`. The Coordinator's in-progress budget bounds what
//! is actually given: a queue it leaves short does not grow (the window only grows while
//! the queue is at least half full).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::layout::BLOCK_SIZE;
use crate::wire::BlockRequest;

/// A round trip up to this much above the lowest still counts as keeping up: the
/// slack for the peer's disk, our own actors and the batching of requests.
const SLACK: Duration = Duration::from_millis(10);

/// Send times kept, above any queue a peer may have: the most requests outstanding.
const SENT_LIMIT: usize = 2048;

/// The window's headroom over the bandwidth-delay product when sized from the rate.
const HEADROOM: f64 = 1.25;

/// The request queue's size for one connection.
#[derive(Debug, Clone)]
pub struct RequestQueue {
    /// The fewest requests kept outstanding.
    min: usize,
    /// The most: the peer's `reqq` and our own `max_queue`, whichever is lower.
    cap: usize,
    /// Seconds of the once-a-second rate the queue holds at least.
    queue_seconds: f64,
    /// The window, in blocks (fractional: steady growth adds 1/window per block).
    window: f64,
    /// Still in slow start: no round trip has yet shown the peer falling behind.
    growing: bool,
    /// Requests outstanding and when each went out, oldest first (at most
    /// [`SENT_LIMIT`]).
    sent: VecDeque<(BlockRequest, Instant)>,
    /// When the window last shrank: once per round trip at most.
    shrunk: Option<Instant>,
    /// The last round trip measured.
    latest: Option<Duration>,
    /// The smoothed round trip (TCP's SRTT, gain 1/8).
    srtt: Option<Duration>,
    /// The lowest round trip measured: the path's own delay.
    min_rtt: Option<Duration>,
    /// Bytes received since `rate_since`: the per-round-trip rate's input.
    rate_bytes: u64,
    rate_since: Option<Instant>,
    /// Bytes per second over the last round trip (at least 100 ms).
    rate: f64,
}

impl RequestQueue {
    /// A queue of at least `min`, at most `cap` requests, starting at `min`.
    pub fn new(min: usize, cap: usize, queue_seconds: f64) -> Self {
        let min = min.max(1);
        Self {
            min,
            cap: cap.max(min),
            queue_seconds,
            window: min as f64,
            growing: true,
            sent: VecDeque::new(),
            shrunk: None,
            latest: None,
            srtt: None,
            min_rtt: None,
            rate_bytes: 0,
            rate_since: None,
            rate: 0.0,
        }
    }

    /// The peer told its `reqq` (already clamped to `max_queue`).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        self.min = self.min.min(self.cap);
    }

    /// `requests` went out at `now`. Each is timed; the oldest times are given up past
    /// the cap (requests cancelled or voided by a choke, whose blocks never come).
    pub fn on_sent(&mut self, requests: &[BlockRequest], now: Instant) {
        for &request in requests {
            if self.sent.len() >= SENT_LIMIT {
                self.sent.pop_front();
            }
            self.sent.push_back((request, now));
        }
        self.rate_since.get_or_insert(now);
    }

    /// A block of `len` bytes arrived at `now` for `request`; `outstanding` requests
    /// were waiting, this one among them.
    pub fn on_block(&mut self, request: BlockRequest, len: u64, outstanding: usize, now: Instant) {
        // Blocks mostly come in the order asked: the search ends near the front.
        if let Some(at) = self.sent.iter().position(|(r, _)| *r == request) {
            if let Some((_, sent)) = self.sent.remove(at) {
                self.sample(now.saturating_duration_since(sent), now);
            }
        }
        self.rate_bytes += len;
        let since = *self.rate_since.get_or_insert(now);
        let span = now.saturating_duration_since(since);
        if span
            >= self
                .srtt
                .unwrap_or_default()
                .max(Duration::from_millis(100))
        {
            self.rate = self.rate_bytes as f64 / span.as_secs_f64();
            self.rate_bytes = 0;
            self.rate_since = Some(now);
        }
        // Grow only while the window is what limits: the queue kept at least half full.
        if 2 * (outstanding + 1) < self.window as usize || !self.keeps_up() {
            return;
        }
        if self.growing {
            self.window += 1.0;
        } else {
            self.window += 1.0 / self.window;
        }
        self.window = self.window.min(self.cap as f64);
    }

    /// How many requests to keep outstanding, with `slow_rate` the rate measured once a
    /// second (bytes per second).
    pub fn target(&self, slow_rate: f64) -> usize {
        let by_rate = (slow_rate * self.queue_seconds / f64::from(BLOCK_SIZE)) as usize;
        (self.window as usize)
            .max(by_rate)
            .max(self.min)
            .min(self.cap)
    }

    /// The smoothed round trip, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The lowest round trip measured.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Whether the last round trip was near the lowest: our requests do not queue at
    /// the peer. True before the first sample.
    fn keeps_up(&self) -> bool {
        match (self.latest, self.min_rtt) {
            (Some(latest), Some(min)) => latest <= min + min / 2 + SLACK,
            _ => true,
        }
    }

    fn sample(&mut self, rtt: Duration, now: Instant) {
        self.latest = Some(rtt);
        let min = self.min_rtt.map_or(rtt, |m| m.min(rtt));
        self.min_rtt = Some(min);
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
        if self.keeps_up() {
            return;
        }
        // Requests wait at the peer: stop doubling.
        self.growing = false;
        let srtt = self.srtt.unwrap_or(rtt);
        if rtt > (min + min / 2 + SLACK) * 2 && self.shrunk.is_none_or(|at| now >= at + srtt) {
            self.shrunk = Some(now);
            // Far behind: shrink towards what the rate over the path's own delay needs.
            let needed = self.rate * (min + SLACK).as_secs_f64() * HEADROOM / f64::from(BLOCK_SIZE);
            self.window = (self.window * 0.75).max(needed).max(self.min as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn req(i: u32) -> BlockRequest {
        BlockRequest {
            piece: i / 16,
            offset: (i % 16) * BLOCK_SIZE,
            length: BLOCK_SIZE,
        }
    }

    /// Drives `queue` against a peer at `rtt` and `rate` blocks per second for `secs`,
    /// keeping the queue full as the Peer does; returns the targets seen, per round trip.
    fn simulate(
        queue: &mut RequestQueue,
        rtt: Duration,
        blocks_per_sec: f64,
        secs: f64,
    ) -> Vec<usize> {
        let t0 = Instant::now();
        let mut now = t0;
        let mut next: u32 = 0;
        // (request, when its block arrives)
        let mut in_flight: std::collections::VecDeque<(BlockRequest, Instant)> = Default::default();
        let mut peer_free = t0;
        let mut targets = Vec::new();
        let mut last_mark = t0;
        let step = Duration::from_secs_f64(1.0 / blocks_per_sec);
        while now.duration_since(t0).as_secs_f64() < secs {
            let target = queue.target(0.0);
            if in_flight.len() < target {
                let mut batch = Vec::new();
                while in_flight.len() < target {
                    batch.push(req(next));
                    // Half the round trip there, served in order at the rate, half back.
                    let at_peer = (now + rtt / 2).max(peer_free);
                    peer_free = at_peer + step;
                    in_flight.push_back((req(next), peer_free + rtt / 2));
                    next += 1;
                }
                queue.on_sent(&batch, now);
            }
            now += MS;
            while in_flight.front().is_some_and(|(_, at)| *at <= now) {
                let (r, _) = in_flight.pop_front().unwrap();
                queue.on_block(r, u64::from(BLOCK_SIZE), in_flight.len() + 1, now);
            }
            if now.duration_since(last_mark) >= rtt {
                last_mark = now;
                targets.push(queue.target(0.0));
            }
        }
        targets
    }

    #[test]
    fn the_window_doubles_each_round_trip_while_the_peer_keeps_up() {
        // 200 ms round trip, 2048 blocks/s (32 MiB/s): a bandwidth-delay product of 410.
        let mut q = RequestQueue::new(16, 1000, 1.5);
        let targets = simulate(&mut q, 200 * MS, 2048.0, 2.0);
        assert!(targets[0] <= 40, "{targets:?}");
        // After four round trips it is past 128 (16 doubled three times).
        assert!(targets[3] >= 128, "{targets:?}");
        let end = *targets.last().unwrap();
        assert!(
            end >= 410,
            "covers the bandwidth-delay product: {targets:?}"
        );
        let srtt = q.srtt().unwrap();
        assert!(srtt >= 200 * MS && srtt < 600 * MS, "{srtt:?}");
        assert!(q.min_rtt().unwrap() >= 200 * MS);
    }

    #[test]
    fn a_slow_peer_keeps_the_floor() {
        // 20 ms round trip, 2 blocks/s (32 KiB/s): 16 requests wait 8 s there.
        let mut q = RequestQueue::new(16, 1000, 1.5);
        let targets = simulate(&mut q, 20 * MS, 2.0, 20.0);
        assert!(targets.iter().all(|&t| t <= 24), "{:?}", &targets[..20]);
        assert_eq!(*targets.last().unwrap(), 16);
    }

    #[test]
    fn growth_stops_soon_after_the_bandwidth_delay_product() {
        // 50 ms round trip, 2048 blocks/s: a product of about 102 blocks.
        let mut q = RequestQueue::new(16, 1000, 1.5);
        let targets = simulate(&mut q, 50 * MS, 2048.0, 10.0);
        let end = *targets.last().unwrap();
        assert!((102..=400).contains(&end), "{end}: {:?}", &targets[..20]);
    }

    #[test]
    fn the_window_stays_within_reqq_and_the_floor_of_the_once_a_second_rate() {
        let mut q = RequestQueue::new(16, 1000, 1.5);
        q.set_cap(250);
        let targets = simulate(&mut q, 200 * MS, 2048.0, 2.0);
        assert!(targets.iter().all(|&t| t <= 250), "{targets:?}");
        assert_eq!(*targets.last().unwrap(), 250);
        // The old rule is a floor: 2 MiB/s for 1.5 s is 192 blocks.
        let fresh = RequestQueue::new(16, 1000, 1.5);
        assert_eq!(fresh.target(0.0), 16);
        assert_eq!(fresh.target(2.0 * 1048576.0), 192);
        assert_eq!(fresh.target(1e12), 1000);
    }

    #[test]
    fn a_queue_left_short_does_not_grow() {
        // The Coordinator gives 4 blocks where 16 are wanted (the budget is spent).
        let mut q = RequestQueue::new(16, 1000, 1.5);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let sent = t0 + MS * i;
            q.on_sent(&[req(i)], sent);
            q.on_block(req(i), u64::from(BLOCK_SIZE), 4, sent + MS);
        }
        assert_eq!(q.target(0.0), 16);
    }

    #[test]
    fn send_times_are_bounded_and_a_block_never_asked_is_no_sample() {
        let mut q = RequestQueue::new(16, 1000, 1.5);
        let t0 = Instant::now();
        let many: Vec<BlockRequest> = (0..5000).map(req).collect();
        q.on_sent(&many, t0);
        assert_eq!(q.sent.len(), SENT_LIMIT);
        // The oldest were given up: no sample for them.
        q.on_block(req(0), 16384, 16, t0 + 10 * MS);
        assert_eq!(q.srtt(), None);
        q.on_block(req(4999), 16384, 16, t0 + 50 * MS);
        assert_eq!(q.srtt(), Some(50 * MS));
        q.on_block(req(4999), 16384, 16, t0 + 90 * MS);
        assert_eq!(q.srtt(), Some(50 * MS), "a repeat is no sample");
    }
}
