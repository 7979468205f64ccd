//! A bounded message trace: which actor handled which message when, and the hops of a
//! block's chain (received → stored → hashed → written → verified), for people
//! studying the engine in a timeline viewer (Chrome trace-event JSON, as Perfetto opens).
//!
//! Pure: no actor code. The recorder keeps at most `limit` events in a ring (the oldest
//! go first, counted in `dropped`), so a long download cannot grow it without bound.
//! Blocks are sampled (every Nth block's chain is recorded) so a trace of a large
//! torrent stays readable; handling of messages is always recorded.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

/// The default bound on a trace's events.
pub const DEFAULT_TRACE_LIMIT: usize = 200_000;

/// The hops of a block's chain, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hop {
    /// A Peer read the block's `piece` message.
    Received,
    /// The PieceManager stored it.
    Stored,
    /// Its piece's hash was checked.
    Hashed,
    /// Its piece was written.
    Written,
    /// The Coordinator took the piece as verified.
    Verified,
}

impl Hop {
    /// Every hop, in chain order.
    pub const ALL: [Hop; 5] = [
        Hop::Received,
        Hop::Stored,
        Hop::Hashed,
        Hop::Written,
        Hop::Verified,
    ];

    /// The hop's name as the trace file and summaries spell it.
    pub fn name(self) -> &'static str {
        match self {
            Hop::Received => "received",
            Hop::Stored => "stored",
            Hop::Hashed => "hashed",
            Hop::Written => "written",
            Hop::Verified => "verified",
        }
    }

    /// The hop a name spells, if any.
    pub fn from_name(name: &str) -> Option<Hop> {
        Hop::ALL.into_iter().find(|h| h.name() == name)
    }
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A handler ran from `ts_us` for `dur_us`.
    Handled { dur_us: u64 },
    /// Block `block` passed `hop`.
    Flow { block: u64, hop: Hop },
}

/// One recorded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEvent {
    /// The actor type (a pid in the viewer).
    pub actor: &'static str,
    /// The instance of that type (a tid in the viewer).
    pub instance: u64,
    /// The message handled, or the hop's message.
    pub name: &'static str,
    pub kind: EventKind,
    /// Microseconds since the recorder started.
    pub ts_us: u64,
}

/// The id of a block in a trace: its piece index and block offset together.
pub fn block_id(piece: u32, offset: u32) -> u64 {
    (u64::from(piece) << 32) | u64::from(offset)
}

/// A ring of at most `limit` events; the oldest are dropped first.
#[derive(Debug)]
pub struct TraceRing {
    limit: usize,
    events: VecDeque<TraceEvent>,
    /// Events dropped to keep the bound, so a summary can say the trace is partial.
    dropped: u64,
}

impl TraceRing {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            events: VecDeque::with_capacity(limit.min(4096)),
            dropped: 0,
        }
    }

    pub fn push(&mut self, e: TraceEvent) {
        if self.limit == 0 {
            self.dropped += 1;
            return;
        }
        if self.events.len() >= self.limit {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(e);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn events(&self) -> impl Iterator<Item = &TraceEvent> {
        self.events.iter()
    }
}

/// Which blocks' chains are recorded: every `every`th, decided by the block's id alone so
/// that every hop of one block decides the same.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    every: u64,
}

impl Sampler {
    /// `every` of 0 is taken as 1 (every block).
    pub fn new(every: u64) -> Self {
        Self {
            every: every.max(1),
        }
    }

    pub fn sampled(self, block: u64) -> bool {
        // Mix the piece (high half) with the block number within it (offset / 16 KiB).
        let n = (block >> 32).wrapping_add((block & 0xffff_ffff) >> 14);
        n % self.every == 0
    }
}

/// The recorder the engine shares: a ring behind a short-held mutex, the sampler and the
/// clock every timestamp counts from.
#[derive(Debug)]
pub struct Tracer {
    ring: Mutex<TraceRing>,
    sampler: Sampler,
    since: Instant,
}

impl Tracer {
    pub fn new(limit: usize, sample: u64) -> Self {
        Self {
            ring: Mutex::new(TraceRing::new(limit)),
            sampler: Sampler::new(sample),
            since: Instant::now(),
        }
    }

    fn us_since(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.since).as_micros()).unwrap_or(u64::MAX)
    }

    fn push(&self, e: TraceEvent) {
        if let Ok(mut r) = self.ring.lock() {
            r.push(e);
        }
    }

    /// A handler of `name` at `actor`/`instance` ran from `start` until now.
    pub fn handled(&self, actor: &'static str, instance: u64, name: &'static str, start: Instant) {
        let ts_us = self.us_since(start);
        let dur_us = self.us_since(Instant::now()).saturating_sub(ts_us);
        self.push(TraceEvent {
            actor,
            instance,
            name,
            kind: EventKind::Handled { dur_us },
            ts_us,
        });
    }

    /// Block `block` passed `hop` at `actor`/`instance` now, if the block is sampled.
    pub fn flow(&self, actor: &'static str, instance: u64, block: u64, hop: Hop) {
        if !self.sampler.sampled(block) {
            return;
        }
        let ts_us = self.us_since(Instant::now());
        self.push(TraceEvent {
            actor,
            instance,
            name: hop.name(),
            kind: EventKind::Flow { block, hop },
            ts_us,
        });
    }

    /// The trace as Chrome trace-event JSON.
    pub fn to_json(&self) -> Value {
        match self.ring.lock() {
            Ok(r) => chrome_json(r.events(), r.dropped()),
            Err(_) => chrome_json(std::iter::empty(), 0),
        }
    }
}

/// Chrome trace-event JSON of `events`: a pid per actor type and a tid per instance
/// (named by metadata events), "X" events for handling, and "s"/"t"/"f" flow events
/// with the block's id for a block's chain.
pub fn chrome_json<'a>(events: impl Iterator<Item = &'a TraceEvent>, dropped: u64) -> Value {
    let mut pids: Vec<&'static str> = Vec::new();
    let mut threads: Vec<(usize, u64)> = Vec::new();
    let mut out = Vec::new();
    for e in events {
        let pid = match pids.iter().position(|a| *a == e.actor) {
            Some(p) => p + 1,
            None => {
                pids.push(e.actor);
                pids.len()
            }
        };
        if !threads.contains(&(pid, e.instance)) {
            threads.push((pid, e.instance));
        }
        match e.kind {
            EventKind::Handled { dur_us } => out.push(json!({
                "name": e.name, "cat": "handle", "ph": "X", "pid": pid, "tid": e.instance,
                "ts": e.ts_us, "dur": dur_us,
            })),
            EventKind::Flow { block, hop } => {
                let ph = match hop {
                    Hop::Received => "s",
                    Hop::Verified => "f",
                    _ => "t",
                };
                // A tiny slice for the flow arrow to bind to, then the flow step.
                out.push(json!({
                    "name": hop.name(), "cat": "block", "ph": "X", "pid": pid,
                    "tid": e.instance, "ts": e.ts_us, "dur": 0,
                    "args": {"block": block},
                }));
                let mut f = json!({
                    "name": "block", "cat": "block", "ph": ph, "id": block, "pid": pid,
                    "tid": e.instance, "ts": e.ts_us, "args": {"hop": hop.name()},
                });
                if ph == "f" {
                    f["bp"] = json!("e");
                }
                out.push(f);
            }
        }
    }
    let mut meta = Vec::new();
    for (i, a) in pids.iter().enumerate() {
        meta.push(json!({"name": "process_name", "ph": "M", "pid": i + 1, "args": {"name": a}}));
    }
    for (pid, tid) in threads {
        let actor = pids.get(pid - 1).copied().unwrap_or("?");
        meta.push(
            json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
            "args": {"name": format!("{actor} {tid}")}}),
        );
    }
    meta.extend(out);
    json!({"traceEvents": meta, "otherData": {"dropped": dropped}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64) -> TraceEvent {
        TraceEvent {
            actor: "Peer",
            instance: 1,
            name: "Have",
            kind: EventKind::Handled { dur_us: 1 },
            ts_us: ts,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_events_within_its_limit() {
        let mut r = TraceRing::new(3);
        for ts in 0..10 {
            r.push(ev(ts));
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.dropped(), 7);
        let kept: Vec<u64> = r.events().map(|e| e.ts_us).collect();
        assert_eq!(kept, vec![7, 8, 9]);
    }

    #[test]
    fn a_ring_of_limit_zero_keeps_nothing() {
        let mut r = TraceRing::new(0);
        r.push(ev(1));
        assert!(r.is_empty());
        assert_eq!(r.dropped(), 1);
    }

    #[test]
    fn sampling_keeps_every_nth_block_and_all_hops_of_it() {
        let s = Sampler::new(4);
        let ids: Vec<u64> = (0..8u32).map(|b| block_id(0, b * 16384)).collect();
        let kept = ids.iter().filter(|id| s.sampled(**id)).count();
        assert_eq!(kept, 2);
        assert!(Sampler::new(0).sampled(block_id(3, 16384)));
        assert!(Sampler::new(1).sampled(block_id(7, 0)));
    }

    #[test]
    fn the_tracer_records_handling_always_and_flows_only_when_sampled() {
        let t = Tracer::new(100, 2);
        t.handled("Coordinator", 0, "PieceVerified", Instant::now());
        t.flow("Peer", 5, block_id(0, 0), Hop::Received);
        t.flow("Peer", 5, block_id(0, 16384), Hop::Received);
        let v = t.to_json();
        let evs = v["traceEvents"].as_array().expect("array");
        assert!(evs
            .iter()
            .any(|e| e["ph"] == "X" && e["name"] == "PieceVerified"));
        assert_eq!(evs.iter().filter(|e| e["ph"] == "s").count(), 1);
        assert!(evs
            .iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"] == "Peer 5"));
    }
}
