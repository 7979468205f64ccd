//! A token bucket: how long a sender must wait before it may move some bytes.
//!
//! This module owns the arithmetic of one rate limit and nothing else. It must not read the
//! clock, sleep, spawn timers or know about peers or sockets: every call is given `now`, and
//! the caller (a Peer actor, or whoever shares one limit between peers) does the waiting.
//!
//! The bucket holds up to `burst` bytes of credit and earns `rate` bytes of credit per
//! second. [`TokenBucket::take`] reserves bytes whether or not the credit is there yet: the
//! balance may go negative, and the answer is how long until that debt is paid. So callers
//! are served in the order they asked, a request larger than the burst is granted after the
//! time it needs rather than starved, and over any span the bytes granted never exceed
//! `rate × span + burst`.
//!
//! Credit is counted in nanobyte units (bytes × 10⁹) and time in nanoseconds, so refilling
//! is exact integer arithmetic and no rounding drifts the rate over a long run.

use std::time::{Duration, Instant};

/// The smallest burst [`default_burst`] chooses: four 16 KiB blocks, so a slow limit still
/// lets a few whole blocks through at once instead of pacing every write.
pub const MIN_DEFAULT_BURST: u64 = 64 * 1024;

/// Nanobyte units per byte, and nanoseconds per second: a bucket refilled at `rate` bytes
/// per second earns exactly `rate` nanobytes per nanosecond.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// The burst to use for `rate` bytes per second when nobody chose one: a quarter second of
/// traffic, which absorbs the lateness of actor timers without letting a sender run far
/// ahead of the limit, and at least [`MIN_DEFAULT_BURST`].
pub fn default_burst(rate: u64) -> u64 {
    (rate / 4).max(MIN_DEFAULT_BURST)
}

/// One rate limit; see the module documentation for its semantics.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second the bucket refills with; 0 means unlimited, and then nothing is
    /// counted and every request is granted at once.
    rate: u64,
    /// The most credit the bucket holds, in bytes: how far a sender that was idle may run
    /// ahead of the rate.
    burst: u64,
    /// Credit in nanobytes; negative while reservations are waiting for the refill.
    balance: i128,
    /// The time up to which `balance` has been refilled. `None` until the first call, so a
    /// bucket made long before it is used starts full rather than with a stale time.
    refilled_at: Option<Instant>,
}

impl TokenBucket {
    /// A bucket granting `rate` bytes per second (0 for unlimited) that holds up to
    /// `burst` bytes of credit. It starts full.
    pub fn new(rate: u64, burst: u64) -> Self {
        Self {
            rate,
            burst,
            balance: units(burst),
            refilled_at: None,
        }
    }

    /// A bucket for `rate` bytes per second with the burst of [`default_burst`].
    pub fn with_rate(rate: u64) -> Self {
        Self::new(rate, default_burst(rate))
    }

    /// Bytes per second, 0 meaning unlimited.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The most credit the bucket holds, in bytes.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Whether this bucket limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.rate == 0
    }

    /// Reserves `n` bytes and returns how long the caller must wait before moving them:
    /// zero when the credit is there now. The bytes are reserved either way, so the caller
    /// waits the returned time and then sends without asking again; later callers queue
    /// behind it.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        if self.is_unlimited() {
            return Duration::ZERO;
        }
        self.refill(now);
        self.balance = self.balance.saturating_sub(units(n));
        let wait = self.wait_for_debt();
        if wait.is_zero() {
            return wait;
        }
        // The debt is paid counting from the latest refill; a caller whose clock reading is
        // older than that waits the difference too.
        let lag = self
            .refilled_at
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        wait.saturating_add(lag)
    }

    /// Takes `n` bytes only if the credit is there now; returns whether it did. Nothing is
    /// reserved on refusal, so a caller that can do something else meanwhile loses no place
    /// it held (it held none).
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        if self.is_unlimited() {
            return true;
        }
        self.refill(now);
        let after = self.balance.saturating_sub(units(n));
        if after >= 0 {
            self.balance = after;
            true
        } else {
            false
        }
    }

    /// Whole bytes of credit available at `now` without waiting: 0 while in debt,
    /// `u64::MAX` when unlimited.
    pub fn available(&mut self, now: Instant) -> u64 {
        if self.is_unlimited() {
            return u64::MAX;
        }
        self.refill(now);
        u64::try_from(self.balance / NANOS_PER_UNIT).unwrap_or(0)
    }

    /// Changes the rate from `now` on. Credit earned until `now` is counted at the old rate;
    /// outstanding debt is then paid at the new one (delays already handed out are not
    /// revised). Lifting the limit forgets any debt; setting one on an unlimited bucket
    /// starts it full, as a new bucket would.
    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        if self.is_unlimited() || rate == 0 {
            self.balance = units(self.burst);
        } else {
            self.refill(now);
        }
        self.rate = rate;
        self.refilled_at = Some(self.refilled_at.map_or(now, |at| at.max(now)));
    }

    /// Changes the burst; credit above the new burst is dropped at once.
    pub fn set_burst(&mut self, burst: u64, now: Instant) {
        self.refill(now);
        self.burst = burst;
        self.balance = self.balance.min(units(burst));
    }

    /// Adds the credit earned between the last refill and `now`, up to the burst. A `now`
    /// earlier than the last refill (callers read clocks at slightly different moments)
    /// adds nothing and does not move the refill time back.
    fn refill(&mut self, now: Instant) {
        let Some(at) = self.refilled_at else {
            self.refilled_at = Some(now);
            return;
        };
        if now <= at {
            return;
        }
        let elapsed = i128::try_from(now.duration_since(at).as_nanos()).unwrap_or(i128::MAX);
        let earned = elapsed.saturating_mul(i128::from(self.rate));
        self.balance = self.balance.saturating_add(earned).min(units(self.burst));
        self.refilled_at = Some(now);
    }

    /// How long until a negative balance has been refilled back to zero, rounded up to the
    /// nanosecond so a caller that waits it never runs ahead of the rate.
    fn wait_for_debt(&self) -> Duration {
        if self.balance >= 0 || self.rate == 0 {
            return Duration::ZERO;
        }
        let debt = self.balance.unsigned_abs();
        let rate = u128::from(self.rate);
        let nanos = debt.div_ceil(rate);
        let secs = u64::try_from(nanos / NANOS_PER_UNIT as u128).unwrap_or(u64::MAX);
        let sub_nanos = u32::try_from(nanos % NANOS_PER_UNIT as u128).unwrap_or(0);
        Duration::new(secs, sub_nanos)
    }
}

/// Bytes as nanobyte units.
fn units(bytes: u64) -> i128 {
    i128::from(bytes) * NANOS_PER_UNIT
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KIB: u64 = 1024;

    #[test]
    fn a_full_bucket_grants_its_burst_at_once() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100 * KIB, 64 * KIB);
        assert_eq!(bucket.take(64 * KIB, t0), Duration::ZERO);
        assert_eq!(bucket.available(t0), 0);
    }

    #[test]
    fn bytes_beyond_the_burst_wait_for_the_refill() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 1000);
        assert_eq!(bucket.take(1000, t0), Duration::ZERO);
        assert_eq!(bucket.take(500, t0), Duration::from_millis(500));
    }

    #[test]
    fn waiting_callers_queue_in_the_order_they_asked() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 0);
        assert_eq!(bucket.take(1000, t0), Duration::from_secs(1));
        assert_eq!(bucket.take(1000, t0), Duration::from_secs(2));
        // Half a second later the first reservation is half paid.
        let later = t0 + Duration::from_millis(500);
        assert_eq!(bucket.take(1000, later), Duration::from_millis(2500));
    }

    #[test]
    fn a_request_larger_than_the_burst_is_granted_after_its_time() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10 * KIB, 16 * KIB);
        // 16 KiB come from the burst; the other 84 KiB take 8.4 s at 10 KiB/s.
        assert_eq!(bucket.take(100 * KIB, t0), Duration::from_millis(8400));
        // Once that time has passed, the bucket is square again.
        assert_eq!(
            bucket.take(0, t0 + Duration::from_millis(8400)),
            Duration::ZERO
        );
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_its_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 2000);
        assert_eq!(bucket.take(2000, t0), Duration::ZERO);
        let much_later = t0 + Duration::from_secs(3600);
        assert_eq!(bucket.available(much_later), 2000);
        assert_eq!(bucket.take(3000, much_later), Duration::from_secs(1));
    }

    #[test]
    fn an_unlimited_bucket_never_delays() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(bucket.take(u64::MAX, t0), Duration::ZERO);
            assert!(bucket.try_take(u64::MAX, t0));
        }
        assert!(bucket.is_unlimited());
    }

    #[test]
    fn try_take_refuses_without_reserving() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 1000);
        assert!(bucket.try_take(600, t0));
        assert!(!bucket.try_take(600, t0));
        // The refusal left the remaining 400 bytes in place.
        assert!(bucket.try_take(400, t0));
        assert!(bucket.try_take(100, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn a_clock_reading_from_the_past_earns_nothing() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(1000, 1000);
        assert_eq!(bucket.take(1000, t1), Duration::ZERO);
        // The debt is paid one second after t1, which is two seconds after t0.
        assert_eq!(bucket.take(1000, t0), Duration::from_secs(2));
    }

    #[test]
    fn a_new_rate_applies_from_the_moment_it_is_set() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 1000);
        assert_eq!(bucket.take(3000, t0), Duration::from_secs(2));
        // One second at 1000 B/s pays half the debt; the rest is paid at 500 B/s.
        let t1 = t0 + Duration::from_secs(1);
        bucket.set_rate(500, t1);
        assert_eq!(bucket.take(0, t1), Duration::from_secs(2));
    }

    #[test]
    fn lifting_the_limit_forgets_debt_and_setting_one_starts_full() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 1000);
        assert!(bucket.take(10_000, t0) > Duration::ZERO);
        bucket.set_rate(0, t0);
        assert_eq!(bucket.take(1_000_000, t0), Duration::ZERO);
        bucket.set_rate(1000, t0);
        assert_eq!(bucket.available(t0), 1000);
    }

    #[test]
    fn a_smaller_burst_drops_the_excess_credit() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, 5000);
        bucket.set_burst(1000, t0);
        assert_eq!(bucket.available(t0), 1000);
    }

    #[test]
    fn the_default_burst_is_a_quarter_second_but_at_least_64_kib() {
        assert_eq!(default_burst(0), 64 * KIB);
        assert_eq!(default_burst(100 * KIB), 64 * KIB);
        assert_eq!(default_burst(4 * 1024 * KIB), 1024 * KIB);
        assert_eq!(TokenBucket::with_rate(4 * 1024 * KIB).burst(), 1024 * KIB);
    }

    #[test]
    fn huge_requests_saturate_instead_of_overflowing() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1, 0);
        for _ in 0..4 {
            let wait = bucket.take(u64::MAX, t0);
            assert!(wait >= Duration::from_secs(u64::MAX / 2));
        }
    }

    /// Nanoseconds from `t0` to `t`.
    fn nanos_since(t0: Instant, t: Instant) -> u128 {
        t.duration_since(t0).as_nanos()
    }

    proptest! {
        /// Requests arrive at random times; each is granted at `arrival + take()`. At every
        /// grant, the bytes granted so far must fit `rate × elapsed + burst`.
        #[test]
        fn granted_bytes_never_exceed_rate_times_time_plus_burst(
            rate in 1u64..10_000_000,
            burst in 0u64..1_000_000,
            requests in prop::collection::vec((0u64..2_000_000, 0u64..500_000), 1..200),
        ) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(rate, burst);
            let mut now = t0;
            let mut granted: u128 = 0;
            for (gap_micros, n) in requests {
                now += Duration::from_micros(gap_micros);
                let grant_at = now + bucket.take(n, now);
                granted += u128::from(n);
                let allowed = u128::from(rate) * nanos_since(t0, grant_at)
                    + u128::from(burst) * 1_000_000_000;
                prop_assert!(granted * 1_000_000_000 <= allowed);
            }
        }

        /// The bucket wastes no capacity: back-to-back requests from a full bucket are
        /// granted exactly when the rate allows, to the nanosecond.
        #[test]
        fn back_to_back_requests_are_granted_as_soon_as_the_rate_allows(
            rate in 1u64..10_000_000,
            burst in 0u64..1_000_000,
            sizes in prop::collection::vec(0u64..500_000, 1..100),
        ) {
            let t0 = Instant::now();
            let mut bucket = TokenBucket::new(rate, burst);
            let mut total: u128 = 0;
            for n in sizes {
                total += u128::from(n);
                let wait = bucket.take(n, t0).as_nanos();
                let debt = (total * 1_000_000_000).saturating_sub(u128::from(burst) * 1_000_000_000);
                prop_assert_eq!(wait, debt.div_ceil(u128::from(rate)));
            }
        }

        #[test]
        fn an_unlimited_bucket_never_delays_any_request(
            requests in prop::collection::vec((0u64..1_000_000, any::<u64>()), 1..100),
        ) {
            let mut now = Instant::now();
            let mut bucket = TokenBucket::with_rate(0);
            for (gap_micros, n) in requests {
                now += Duration::from_micros(gap_micros);
                prop_assert_eq!(bucket.take(n, now), Duration::ZERO);
            }
        }
    }
}
