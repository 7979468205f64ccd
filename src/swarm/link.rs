//! A link profile for the swarm's peers: one-way delay, jitter, rate and loss, applied in
//! user space because loopback has none of them and this kernel has no netem.
//!
//! Pure: no sockets and no clock of its own; every call is given the time, so the tests
//! drive it with made-up instants. A [`DelayLine`] stands for one direction of one
//! connection: what enters at `now` leaves when the link would deliver it.
//!
//! TCP never drops bytes from the stream the application sees, so loss cannot be a byte
//! dropped here. What a lost segment does to a TCP stream is hold back everything behind
//! it until it is sent again, about one round trip later (fast retransmit); that stall is
//! what is modelled. The sender's window halving after a loss is not.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::prng::SplitMix64;
use super::profile::Profile;

/// A TCP segment's payload on a 1500-byte Ethernet link: loss is drawn per segment.
const SEGMENT: usize = 1460;

/// Bytes one direction of one connection may hold in the link, whatever the rate and
/// delay: a link without a rate carries at most this much per delay (8 MiB per 50 ms is
/// 160 MiB/s), and memory stays bounded with any number of peers.
pub const MAX_IN_FLIGHT: usize = 8 << 20;

/// Items (messages) one direction may hold, for lines that carry small items.
pub const MAX_ITEMS: usize = 8192;

/// How far ahead of the wire the sender may queue, as a sender's small socket buffer in
/// front of a paced link: more waits in the sender's own buffers.
const SEND_AHEAD: Duration = Duration::from_millis(5);

/// Why a link description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("{0:?} is not a duration (e.g. 50ms, 1s)")]
    Duration(String),
    #[error("{0:?} is not a rate (e.g. 4MiB/s, 512KiB/s)")]
    Rate(String),
    #[error("{0:?} is not a loss (a percentage from 0 to 50, e.g. 0.5%)")]
    Loss(String),
    #[error("{0:?}: expected latency=, jitter=, rate= or loss=")]
    Key(String),
    #[error("{0:?}: expected PROFILE:latency=..,rate=.. with a profile's name")]
    Profile(String),
    #[error("{0:?}: the delay is at most 10 s, the jitter at most the delay")]
    Range(String),
}

/// How one peer's connections behave as a network link, each direction alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkProfile {
    /// One-way delay.
    pub latency: Duration,
    /// Each item's delay varies uniformly by up to this much either way (never below
    /// zero, and the stream stays in order, as TCP delivers it).
    pub jitter: Duration,
    /// Bytes per second in each direction; `None` for no limit.
    pub rate: Option<u64>,
    /// Segments lost in a million.
    pub loss_ppm: u32,
}

impl LinkProfile {
    /// Whether it changes anything: a plain loopback link needs no delay line.
    pub fn is_none(&self) -> bool {
        *self == LinkProfile::default()
    }

    /// The round trip a lost segment costs.
    pub fn stall(&self) -> Duration {
        (self.latency * 2).max(Duration::from_millis(1))
    }

    /// Checks the ranges the delay line relies on.
    pub fn validate(self, text: &str) -> Result<LinkProfile, LinkError> {
        if self.latency > Duration::from_secs(10) || self.jitter > self.latency {
            return Err(LinkError::Range(text.to_string()));
        }
        Ok(self)
    }

    /// Sets one `key=value` item of a link description.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), LinkError> {
        match key {
            "latency" | "delay" => self.latency = parse_duration(value)?,
            "jitter" => self.jitter = parse_duration(value)?,
            "rate" => self.rate = Some(parse_rate(value)?),
            "loss" => self.loss_ppm = parse_loss(value)?,
            _ => return Err(LinkError::Key(format!("{key}={value}"))),
        }
        Ok(())
    }

    /// `latency=50ms,jitter=5ms,rate=4MiB/s,loss=0.5%` (any subset, any order) on top
    /// of `self`.
    pub fn with(mut self, items: &str) -> Result<LinkProfile, LinkError> {
        for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| LinkError::Key(item.to_string()))?;
            self.set(key.trim(), value.trim())?;
        }
        self.validate(items)
    }

    /// `50ms, ±5ms, 4.0 MiB/s, 0.5% loss`, for the summary.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{} ms one way", self.latency.as_millis())];
        if !self.jitter.is_zero() {
            parts.push(format!("±{} ms", self.jitter.as_millis()));
        }
        if let Some(rate) = self.rate {
            parts.push(format!("{:.1} MiB/s", rate as f64 / 1048576.0));
        }
        if self.loss_ppm > 0 {
            parts.push(format!("{}% loss", f64::from(self.loss_ppm) / 10_000.0));
        }
        parts.join(", ")
    }
}

/// The links of a swarm: one for every peer, and any profile's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// Every peer's link, unless its profile has its own.
    pub all: LinkProfile,
    /// Profiles with a link of their own (the last one given wins).
    pub per_profile: Vec<(Profile, LinkProfile)>,
}

impl Links {
    /// The link of a peer playing `profile`.
    pub fn of(&self, profile: Profile) -> LinkProfile {
        self.per_profile
            .iter()
            .rev()
            .find(|(p, _)| *p == profile)
            .map_or(self.all, |(_, link)| *link)
    }

    /// `--link PROFILE:latency=..,rate=..`: that profile's link, the fields not named
    /// taken from every peer's link.
    pub fn add(&mut self, text: &str) -> Result<(), LinkError> {
        let (name, items) = text
            .split_once(':')
            .ok_or_else(|| LinkError::Profile(text.to_string()))?;
        let profile =
            Profile::from_name(name.trim()).ok_or_else(|| LinkError::Profile(text.to_string()))?;
        let link = self.all.with(items)?;
        self.per_profile.push((profile, link));
        Ok(())
    }

    /// Whether no peer has a link.
    pub fn is_none(&self) -> bool {
        self.all.is_none() && self.per_profile.iter().all(|(_, l)| l.is_none())
    }

    /// For the summary: `all: 50 ms one way; slow: 100 ms one way, 0.5 MiB/s`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.all.is_none() {
            parts.push(format!("all: {}", self.all.describe()));
        }
        for (profile, link) in &self.per_profile {
            parts.push(format!("{}: {}", profile.name(), link.describe()));
        }
        parts.join("; ")
    }
}

/// `50ms`, `1s`, `0`.
pub fn parse_duration(value: &str) -> Result<Duration, LinkError> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value.trim()).map_err(|_| LinkError::Duration(value.to_string()))
}

/// `4MiB/s`, `512KiB/s`, `1000000/s` (bytes per second; the `/s` may be left out).
pub fn parse_rate(value: &str) -> Result<u64, LinkError> {
    let text = value.trim();
    let text = text.strip_suffix("/s").unwrap_or(text);
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(LinkError::Rate(value.to_string())),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&r| r > 0)
        .ok_or_else(|| LinkError::Rate(value.to_string()))
}

/// `0.5%` or `0.005`: at most half of all segments.
pub fn parse_loss(value: &str) -> Result<u32, LinkError> {
    let text = value.trim();
    let share = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| LinkError::Loss(value.to_string()))?;
    if !(0.0..=0.5).contains(&share) {
        return Err(LinkError::Loss(value.to_string()));
    }
    Ok((share * 1_000_000.0).round() as u32)
}

/// One direction of one connection through the link: items go in when sent and come out
/// when they would arrive. Items are bytes to write, or messages read, with their size.
#[derive(Debug)]
pub struct DelayLine<T> {
    link: LinkProfile,
    rng: SplitMix64,
    /// Items and when each arrives, in order.
    queue: VecDeque<(Instant, T, usize)>,
    /// Bytes in `queue`.
    bytes: usize,
    /// When the last item has left the sender at the link's rate.
    departed: Option<Instant>,
    /// When the last item arrives: nothing overtakes it.
    arrives: Option<Instant>,
}

impl<T> DelayLine<T> {
    /// A line for `link`, its jitter and loss drawn from `seed`.
    pub fn new(link: LinkProfile, seed: u64) -> Self {
        Self {
            link,
            rng: SplitMix64::new(seed),
            queue: VecDeque::new(),
            bytes: 0,
            departed: None,
            arrives: None,
        }
    }

    /// Whether the sender may put more in at `now`: the line is under its bounds and
    /// what waits for the link's rate is under a few milliseconds' worth.
    pub fn has_room(&self, now: Instant) -> bool {
        self.bytes < MAX_IN_FLIGHT
            && self.queue.len() < MAX_ITEMS
            && (self.link.rate.is_none() || self.departed.is_none_or(|d| d <= now + SEND_AHEAD))
    }

    /// Bytes in the line.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is in the line.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Puts `item` of `size` bytes in at `now`.
    pub fn push(&mut self, item: T, size: usize, now: Instant) {
        let link = self.link;
        // Serialised at the rate after whatever went before.
        let start = self.departed.map_or(now, |d| d.max(now));
        let departed = match link.rate {
            Some(rate) => start + Duration::from_secs_f64(size as f64 / rate as f64),
            None => start,
        };
        self.departed = Some(departed);
        let mut delay = link.latency;
        if !link.jitter.is_zero() {
            let span = link.jitter.as_nanos() as u64;
            let draw = self.rng.below(2 * span + 1);
            delay = (delay + Duration::from_nanos(draw)).saturating_sub(link.jitter);
        }
        if link.loss_ppm > 0 {
            let segments = size.div_ceil(SEGMENT).max(1);
            let kept = (1.0 - f64::from(link.loss_ppm) / 1e6).powi(segments as i32);
            if self.rng.unit() >= kept {
                delay += link.stall();
            }
        }
        let arrives = (departed + delay).max(self.arrives.unwrap_or(departed));
        self.arrives = Some(arrives);
        self.queue.push_back((arrives, item, size));
        self.bytes += size;
    }

    /// The next item that has arrived by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.queue.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, item, size) = self.queue.pop_front()?;
            self.bytes -= size;
            return Some(item);
        }
        None
    }

    /// When the next item arrives, or when the sender has room again: the time to wake.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let room = self
            .departed
            .filter(|d| self.link.rate.is_some() && *d > now + SEND_AHEAD)
            .map(|d| d - SEND_AHEAD);
        [self.queue.front().map(|(at, _, _)| *at), room]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_plain_delay_holds_each_item_for_the_one_way_delay_in_order() {
        let link = LinkProfile {
            latency: 50 * MS,
            ..LinkProfile::default()
        };
        let t0 = Instant::now();
        let mut line = DelayLine::new(link, 1);
        line.push("a", 100, t0);
        line.push("b", 100, t0 + 10 * MS);
        assert_eq!(line.pop_due(t0 + 49 * MS), None);
        assert_eq!(line.next_wake(t0), Some(t0 + 50 * MS));
        assert_eq!(line.pop_due(t0 + 50 * MS), Some("a"));
        assert_eq!(line.pop_due(t0 + 50 * MS), None);
        assert_eq!(line.pop_due(t0 + 60 * MS), Some("b"));
        assert!(line.is_empty() && line.bytes() == 0);
    }

    #[test]
    fn the_rate_paces_items_and_the_sender_waits_while_it_is_ahead() {
        // 1 MB/s: 10,000 bytes take 10 ms to send.
        let link = LinkProfile {
            latency: 20 * MS,
            rate: Some(1_000_000),
            ..LinkProfile::default()
        };
        let t0 = Instant::now();
        let mut line = DelayLine::new(link, 1);
        assert!(line.has_room(t0));
        line.push(1, 10_000, t0);
        assert!(!line.has_room(t0), "10 ms queued is past the send-ahead");
        assert_eq!(line.next_wake(t0), Some(t0 + 5 * MS));
        assert!(line.has_room(t0 + 5 * MS));
        line.push(2, 10_000, t0 + 5 * MS);
        assert_eq!(line.pop_due(t0 + 29 * MS), None);
        assert_eq!(line.pop_due(t0 + 30 * MS), Some(1));
        // The second starts sending when the first is done, at 10 ms.
        assert_eq!(line.pop_due(t0 + 39 * MS), None);
        assert_eq!(line.pop_due(t0 + 40 * MS), Some(2));
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_never_reorders() {
        let link = LinkProfile {
            latency: 10 * MS,
            jitter: 5 * MS,
            ..LinkProfile::default()
        };
        let t0 = Instant::now();
        let mut line = DelayLine::new(link, 7);
        for i in 0..1000u32 {
            line.push(i, 10, t0 + MS * i);
        }
        let mut next = 0;
        for step in 0..1100u32 {
            let now = t0 + MS * step;
            while let Some(i) = line.pop_due(now) {
                assert_eq!(i, next, "in order");
                assert!(now >= t0 + MS * i + 5 * MS, "at least latency - jitter");
                next += 1;
            }
            // Nothing sent by `now - 15 ms` is still in the line.
            assert!(next as u64 >= u64::from(step.saturating_sub(15)).min(1000));
        }
        assert_eq!(next, 1000);
    }

    #[test]
    fn loss_stalls_the_stream_for_a_round_trip_and_drops_nothing() {
        let link = LinkProfile {
            latency: 10 * MS,
            loss_ppm: 100_000, // 10 % of segments
            ..LinkProfile::default()
        };
        let t0 = Instant::now();
        let mut line = DelayLine::new(link, 3);
        for i in 0..1000u32 {
            line.push(i, 1000, t0 + MS * i);
        }
        let mut late = 0;
        let mut got = 0;
        for step in 0..2000u32 {
            let now = t0 + MS * step;
            while let Some(i) = line.pop_due(now) {
                assert_eq!(i, got);
                got += 1;
                if now > t0 + MS * i + 10 * MS {
                    late += 1;
                }
                assert!(now <= t0 + MS * (i + 1000), "a bounded stall");
            }
        }
        assert_eq!(got, 1000, "every item arrives");
        assert!(late > 50, "some items were held back by a stall: {late}");
    }

    #[test]
    fn the_line_is_bounded_in_bytes_and_items() {
        let link = LinkProfile {
            latency: Duration::from_secs(1),
            ..LinkProfile::default()
        };
        let t0 = Instant::now();
        let mut line = DelayLine::new(link, 1);
        let mut pushed = 0;
        while line.has_room(t0) {
            line.push((), 16 * 1024, t0);
            pushed += 1;
        }
        assert_eq!(pushed, MAX_IN_FLIGHT / (16 * 1024));
        let mut small = DelayLine::new(link, 1);
        while small.has_room(t0) {
            small.push((), 17, t0);
        }
        assert_eq!(small.queue.len(), MAX_ITEMS);
    }

    #[test]
    fn link_descriptions_parse_and_bad_ones_say_why() {
        let link = LinkProfile::default()
            .with("latency=50ms, jitter=5ms,rate=4MiB/s,loss=0.5%")
            .unwrap();
        assert_eq!(
            link,
            LinkProfile {
                latency: 50 * MS,
                jitter: 5 * MS,
                rate: Some(4 << 20),
                loss_ppm: 5000,
            }
        );
        assert_eq!(parse_loss("0.01").unwrap(), 10_000);
        assert_eq!(parse_rate("512KiB").unwrap(), 512 * 1024);
        assert!(matches!(parse_loss("60%"), Err(LinkError::Loss(_))));
        assert!(matches!(parse_rate("fast"), Err(LinkError::Rate(_))));
        assert!(matches!(parse_rate("0/s"), Err(LinkError::Rate(_))));
        assert!(matches!(
            LinkProfile::default().with("speed=1"),
            Err(LinkError::Key(_))
        ));
        assert!(matches!(
            LinkProfile::default().with("latency=5ms,jitter=6ms"),
            Err(LinkError::Range(_))
        ));
        assert!(matches!(
            LinkProfile::default().with("latency=1min"),
            Err(LinkError::Range(_))
        ));
        assert!(LinkProfile::default().is_none());
    }
}
