//! A bounded message trace: which actor handled which message when, and the hops of a
//! block's chain (received → stored → hashed → written → verified), for people
//! studying the engine in a timeline viewer (Chrome trace-event JSON, as Perfetto opens).
//!
//! Pure: no actor code. The recorder keeps at most `limit` events in a ring (the oldest
//! go first, counted in `dropped`), so a long download cannot grow it without bound.
//! Blocks are sampled (every Nth block's chain is recorded) so a trace of a large
//! torrent stays readable; handling of messages is always recorded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// The Coordinator first told a peer it has the piece (`have`, in a `Haves` batch).
    /// Not every piece gets there: a leecher whose peers are all seeds tells nobody.
    Announced,
}

impl Hop {
    /// Every hop, in chain order.
    pub const ALL: [Hop; 6] = [
        Hop::Received,
        Hop::Stored,
        Hop::Hashed,
        Hop::Written,
        Hop::Verified,
        Hop::Announced,
    ];

    /// The hops every verified block passes; [`Hop::Announced`] may follow.
    pub const REQUIRED: usize = 5;

    /// The hop's name as the trace file and summaries spell it.
    pub fn name(self) -> &'static str {
        match self {
            Hop::Received => "received",
            Hop::Stored => "stored",
            Hop::Hashed => "hashed",
            Hop::Written => "written",
            Hop::Verified => "verified",
            Hop::Announced => "announced",
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
    /// A handler ran from `ts_us` for `dur_us`, after its message waited `wait_us` in the
    /// mailbox (known for messages sent through a `Tracked` address while tracing).
    Handled { dur_us: u64, wait_us: Option<u64> },
    /// Block `block` passed `hop`.
    Flow { block: u64, hop: Hop },
    /// The actor sent message `flow` (the start of an arrow to where it is handled).
    Sent { flow: u64 },
    /// Message `flow` reached its handler (the arrow's end).
    Delivered { flow: u64 },
}

/// Message arrows are numbered from here, apart from block ids (a piece and offset).
const FIRST_MESSAGE_FLOW: u64 = 1 << 63;

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
    /// The next message arrow's number.
    next_flow: AtomicU64,
}

impl Tracer {
    pub fn new(limit: usize, sample: u64) -> Self {
        Self {
            ring: Mutex::new(TraceRing::new(limit)),
            sampler: Sampler::new(sample),
            since: Instant::now(),
            next_flow: AtomicU64::new(FIRST_MESSAGE_FLOW),
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

    /// A handler of `name` at `actor`/`instance` ran from `start` until now; its message
    /// was sent at `sent`, if known.
    pub fn handled(
        &self,
        actor: &'static str,
        instance: u64,
        name: &'static str,
        start: Instant,
        sent: Option<Instant>,
    ) {
        let ts_us = self.us_since(start);
        let dur_us = self.us_since(Instant::now()).saturating_sub(ts_us);
        let wait_us = sent.map(|s| ts_us.saturating_sub(self.us_since(s)));
        self.push(TraceEvent {
            actor,
            instance,
            name,
            kind: EventKind::Handled { dur_us, wait_us },
            ts_us,
        });
    }

    /// `actor`/`instance` sends message `name` now: records the arrow's start and
    /// returns its number, for [`Tracer::delivered`].
    pub fn sent(&self, actor: &'static str, instance: u64, name: &'static str) -> u64 {
        let flow = self.next_flow.fetch_add(1, Ordering::Relaxed);
        let ts_us = self.us_since(Instant::now());
        self.push(TraceEvent {
            actor,
            instance,
            name,
            kind: EventKind::Sent { flow },
            ts_us,
        });
        flow
    }

    /// Message arrow `flow` reached its handler at `actor`/`instance` at `at`.
    pub fn delivered(
        &self,
        actor: &'static str,
        instance: u64,
        name: &'static str,
        flow: u64,
        at: Instant,
    ) {
        let ts_us = self.us_since(at);
        self.push(TraceEvent {
            actor,
            instance,
            name,
            kind: EventKind::Delivered { flow },
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

    /// Every block of a piece of `blocks` blocks passed `hop` now (those sampled): the
    /// hops that happen to a whole piece (hashed, written, verified).
    pub fn piece_flow(
        &self,
        actor: &'static str,
        instance: u64,
        piece: u32,
        blocks: u32,
        hop: Hop,
    ) {
        for b in 0..blocks {
            let offset = b.saturating_mul(crate::layout::BLOCK_SIZE);
            self.flow(actor, instance, block_id(piece, offset), hop);
        }
    }

    /// Events held now and events dropped to keep the bound.
    pub fn counts(&self) -> (usize, u64) {
        match self.ring.lock() {
            Ok(r) => (r.len(), r.dropped()),
            Err(_) => (0, 0),
        }
    }

    /// The bound and the sampling it was made with.
    pub fn settings(&self) -> (usize, u64) {
        let limit = self.ring.lock().map_or(0, |r| r.limit);
        (limit, self.sampler.every)
    }

    /// The trace as Chrome trace-event JSON. The events are copied out first, so the
    /// actors recording meanwhile wait for a copy, not for the JSON to be built.
    pub fn to_json(&self) -> Value {
        let (events, dropped) = match self.ring.lock() {
            Ok(r) => (r.events().copied().collect::<Vec<_>>(), r.dropped()),
            Err(_) => (Vec::new(), 0),
        };
        chrome_json(events.iter(), dropped)
    }
}

/// The process's recorder, set once by [`install`]; none means tracing is off, and every
/// hook costs one atomic load.
static TRACER: std::sync::OnceLock<Arc<Tracer>> = std::sync::OnceLock::new();

/// Turns tracing on for this process (`get --trace`); false if it was on already.
pub fn install(limit: usize, sample: u64) -> bool {
    TRACER.set(Arc::new(Tracer::new(limit, sample))).is_ok()
}

/// The process's recorder, when tracing is on for the whole process.
pub fn global() -> Option<&'static Arc<Tracer>> {
    TRACER.get()
}

/// One torrent's recorder, which `serve` starts and stops while the torrent runs (its
/// runs come and go; the slot stays with the torrent). Off, a hook costs one atomic load.
#[derive(Debug, Default)]
pub struct TraceSlot {
    on: AtomicBool,
    tracer: Mutex<Option<Arc<Tracer>>>,
}

impl TraceSlot {
    /// Starts a new recording, replacing any running one, and returns it.
    pub fn start(&self, limit: usize, sample: u64) -> Arc<Tracer> {
        let tracer = Arc::new(Tracer::new(limit, sample));
        let mut slot = self.tracer.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(tracer.clone());
        self.on.store(true, Ordering::Release);
        tracer
    }

    /// Ends the recording, if one runs, and returns what it holds.
    pub fn stop(&self) -> Option<Arc<Tracer>> {
        self.on.store(false, Ordering::Release);
        self.tracer.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The running recording, if any.
    pub fn current(&self) -> Option<Arc<Tracer>> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        self.tracer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where a hook records: this torrent's recording, or the process's.
    pub fn recorder(&self) -> Option<Arc<Tracer>> {
        self.current().or_else(|| global().cloned())
    }
}

/// A small number for the thread running now: the instance of a handler timed without an
/// [`OwnMetrics`](super::metrics::OwnMetrics) of its own (what remains is pool work,
/// one actor per thread).
pub fn thread_instance() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
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
            EventKind::Handled { dur_us, wait_us } => {
                let mut x = json!({
                    "name": e.name, "cat": "handle", "ph": "X", "pid": pid, "tid": e.instance,
                    "ts": e.ts_us, "dur": dur_us,
                });
                if let Some(wait) = wait_us {
                    x["args"] = json!({ "wait_us": wait });
                }
                out.push(x);
            }
            EventKind::Sent { flow } => out.push(json!({
                "name": e.name, "cat": "message", "ph": "s", "id": flow, "pid": pid,
                "tid": e.instance, "ts": e.ts_us,
            })),
            EventKind::Delivered { flow } => out.push(json!({
                "name": e.name, "cat": "message", "ph": "f", "bp": "e", "id": flow, "pid": pid,
                "tid": e.instance, "ts": e.ts_us,
            })),
            EventKind::Flow { block, hop } => {
                // The chain may stop at `verified`, a step then: an arrow to each hop
                // reached is drawn either way.
                let ph = match hop {
                    Hop::Received => "s",
                    Hop::Announced => "f",
                    _ => "t",
                };
                // One output event per recorded event, so the file keeps the limit.
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

/// The largest trace file [`parse_trace`] reads (a file from elsewhere is untrusted).
pub const MAX_TRACE_FILE: usize = 256 * 1024 * 1024;

/// The most events [`parse_trace`] takes from one file.
pub const MAX_TRACE_EVENTS: usize = 4_000_000;

/// Why a trace file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TraceFileError {
    #[error("trace file is {0} bytes, over the limit of {MAX_TRACE_FILE}")]
    TooLarge(usize),
    #[error("trace file is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("trace file has no traceEvents array")]
    NoEvents,
    #[error("trace file has over {MAX_TRACE_EVENTS} events")]
    TooManyEvents,
}

/// One handling slice read back from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceRecord {
    /// "Actor instance", as the file's thread names give it (or "pid/tid").
    pub thread: String,
    pub name: String,
    pub ts_us: u64,
    pub dur_us: u64,
    /// How long its message waited in the mailbox, when the trace knows.
    pub wait_us: Option<u64>,
}

/// One block-chain step read back from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub block: u64,
    pub hop: Hop,
    pub thread: String,
    pub ts_us: u64,
}

/// What a trace file holds, as [`summarise`] needs it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParsedTrace {
    pub slices: Vec<SliceRecord>,
    pub flows: Vec<FlowRecord>,
}

/// Reads Chrome trace-event JSON as [`chrome_json`] writes it. Unknown events and fields
/// are skipped; bad sizes are typed errors; nothing panics.
pub fn parse_trace(bytes: &[u8]) -> Result<ParsedTrace, TraceFileError> {
    if bytes.len() > MAX_TRACE_FILE {
        return Err(TraceFileError::TooLarge(bytes.len()));
    }
    let v: Value = serde_json::from_slice(bytes)?;
    let events = v
        .get("traceEvents")
        .and_then(Value::as_array)
        .ok_or(TraceFileError::NoEvents)?;
    if events.len() > MAX_TRACE_EVENTS {
        return Err(TraceFileError::TooManyEvents);
    }
    let key = |e: &Value| {
        (
            e.get("pid").and_then(Value::as_u64).unwrap_or(0),
            e.get("tid").and_then(Value::as_u64).unwrap_or(0),
        )
    };
    let mut names = std::collections::HashMap::new();
    for e in events {
        if e.get("ph").and_then(Value::as_str) == Some("M")
            && e.get("name").and_then(Value::as_str) == Some("thread_name")
        {
            if let Some(n) = e.pointer("/args/name").and_then(Value::as_str) {
                names.insert(key(e), n.to_string());
            }
        }
    }
    let thread_of = |e: &Value| {
        let k = key(e);
        names
            .get(&k)
            .cloned()
            .unwrap_or_else(|| format!("{}/{}", k.0, k.1))
    };
    let mut out = ParsedTrace::default();
    for e in events {
        let ts_us = e.get("ts").and_then(Value::as_u64).unwrap_or(0);
        match e.get("ph").and_then(Value::as_str) {
            Some("X") if e.get("cat").and_then(Value::as_str) == Some("handle") => {
                out.slices.push(SliceRecord {
                    thread: thread_of(e),
                    name: e
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string(),
                    ts_us,
                    dur_us: e.get("dur").and_then(Value::as_u64).unwrap_or(0),
                    wait_us: e.pointer("/args/wait_us").and_then(Value::as_u64),
                })
            }
            Some("s" | "t" | "f") => {
                let hop = e
                    .pointer("/args/hop")
                    .and_then(Value::as_str)
                    .and_then(Hop::from_name);
                let block = e.get("id").and_then(Value::as_u64);
                if let (Some(hop), Some(block)) = (hop, block) {
                    out.flows.push(FlowRecord {
                        block,
                        hop,
                        thread: thread_of(e),
                        ts_us,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Percentiles of one hop's latency (from the previous hop), in µs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopLatency {
    /// The hop reached, e.g. "received → stored".
    pub hop: String,
    pub count: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// A summary of a trace: per-hop latency of the block chain and the busiest instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    pub hops: Vec<HopLatency>,
    /// (thread, total handling µs, handled), busiest first, at most 10.
    pub busiest: Vec<(String, u64, u64)>,
    /// Blocks whose chain had every hop in time order.
    pub complete_chains: usize,
    pub blocks: usize,
    /// Mailbox waits per message type, the longest waiting first, at most 10 (`hop` is
    /// the message's name).
    pub waits: Vec<HopLatency>,
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Each block's hops, first time seen per hop.
pub fn chains(t: &ParsedTrace) -> std::collections::BTreeMap<u64, [Option<u64>; 6]> {
    let mut by_block: std::collections::BTreeMap<u64, [Option<u64>; 6]> = Default::default();
    for f in &t.flows {
        let slot = &mut by_block.entry(f.block).or_default()[f.hop as usize];
        *slot = Some(slot.map_or(f.ts_us, |t| t.min(f.ts_us)));
    }
    by_block
}

/// Summarises a parsed trace.
pub fn summarise(t: &ParsedTrace) -> TraceSummary {
    let by_block = chains(t);
    let mut gaps: Vec<Vec<u64>> = vec![Vec::new(); Hop::ALL.len() - 1];
    let mut complete = 0;
    for hops in by_block.values() {
        for (i, gap) in gaps.iter_mut().enumerate() {
            if let (Some(a), Some(b)) = (hops[i], hops[i + 1]) {
                gap.push(b.saturating_sub(a));
            }
        }
        // Complete: every required hop, in order, and the announcement (if any) after.
        let all: Option<Vec<u64>> = hops[..Hop::REQUIRED].iter().copied().collect();
        let announced_after = match (hops[Hop::REQUIRED - 1], hops[Hop::REQUIRED]) {
            (Some(v), Some(a)) => v <= a,
            _ => true,
        };
        if announced_after && all.is_some_and(|v| v.windows(2).all(|w| w[0] <= w[1])) {
            complete += 1;
        }
    }
    let hops = gaps
        .into_iter()
        .enumerate()
        .map(|(i, mut g)| {
            g.sort_unstable();
            HopLatency {
                hop: format!("{} → {}", Hop::ALL[i].name(), Hop::ALL[i + 1].name()),
                count: g.len(),
                p50_us: percentile(&g, 0.5),
                p99_us: percentile(&g, 0.99),
                max_us: g.last().copied().unwrap_or(0),
            }
        })
        .collect();
    let mut load: std::collections::HashMap<&str, (u64, u64)> = Default::default();
    for s in &t.slices {
        let e = load.entry(&s.thread).or_default();
        e.0 = e.0.saturating_add(s.dur_us);
        e.1 += 1;
    }
    let mut busiest: Vec<(String, u64, u64)> = load
        .into_iter()
        .map(|(k, (d, n))| (k.to_string(), d, n))
        .collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    busiest.truncate(10);
    TraceSummary {
        hops,
        busiest,
        complete_chains: complete,
        blocks: by_block.len(),
        waits: mailbox_waits(t),
    }
}

/// Mailbox waits per message type, by their longest.
fn mailbox_waits(t: &ParsedTrace) -> Vec<HopLatency> {
    let mut by_name: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    for s in &t.slices {
        if let Some(w) = s.wait_us {
            by_name.entry(&s.name).or_default().push(w);
        }
    }
    let mut waits: Vec<HopLatency> = by_name
        .into_iter()
        .map(|(name, mut w)| {
            w.sort_unstable();
            HopLatency {
                hop: name.to_string(),
                count: w.len(),
                p50_us: percentile(&w, 0.5),
                p99_us: percentile(&w, 0.99),
                max_us: w.last().copied().unwrap_or(0),
            }
        })
        .collect();
    waits.sort_by(|a, b| b.max_us.cmp(&a.max_us).then_with(|| a.hop.cmp(&b.hop)));
    waits.truncate(10);
    waits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64) -> TraceEvent {
        TraceEvent {
            actor: "Peer",
            instance: 1,
            name: "Have",
            kind: EventKind::Handled {
                dur_us: 1,
                wait_us: None,
            },
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
        t.handled("Coordinator", 0, "PieceVerified", Instant::now(), None);
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
    #[test]
    fn a_written_trace_reads_back_and_summarises_its_hops() {
        let t = Tracer::new(1000, 1);
        let b = block_id(2, 16384);
        for hop in Hop::ALL {
            t.flow("Peer", 1, b, hop);
        }
        t.handled("PieceManager", 0, "StoreBlocks", Instant::now(), None);
        let bytes = serde_json::to_vec(&t.to_json()).expect("json");
        let p = parse_trace(&bytes).expect("parses");
        assert_eq!(p.flows.len(), 6);
        assert_eq!(p.slices.len(), 1);
        assert_eq!(p.slices[0].thread, "PieceManager 0");
        let s = summarise(&p);
        assert_eq!((s.blocks, s.complete_chains), (1, 1));
        assert_eq!(s.hops.len(), 5);
        assert_eq!(s.hops[4].hop, "verified → announced");
        assert_eq!(s.hops[0].hop, "received → stored");
        assert_eq!(s.busiest[0].0, "PieceManager 0");
    }

    #[test]
    fn hostile_trace_files_are_typed_errors_not_panics() {
        assert!(matches!(parse_trace(b"{"), Err(TraceFileError::NotJson(_))));
        assert!(matches!(parse_trace(b"[]"), Err(TraceFileError::NoEvents)));
        assert!(matches!(
            parse_trace(br#"{"traceEvents": 5}"#),
            Err(TraceFileError::NoEvents)
        ));
        let odd = br#"{"traceEvents": [{"ph": "s", "id": -1, "args": {"hop": 3}},
            {"ph": "X", "cat": "handle", "ts": "x"}, 7, null,
            {"ph": "t", "id": 1, "args": {"hop": "stored"}, "ts": 1e300}]}"#;
        let p = parse_trace(odd).expect("odd but valid");
        assert_eq!(p.slices.len(), 1);
        assert_eq!(p.flows.len(), 1);
        let _ = summarise(&p);
        let big = vec![b' '; MAX_TRACE_FILE + 1];
        assert!(matches!(
            parse_trace(&big),
            Err(TraceFileError::TooLarge(_))
        ));
    }
}
