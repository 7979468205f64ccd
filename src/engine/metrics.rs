//! Actor metrics: what each type of actor is doing, for people studying the engine and
//! for finding where the time goes.
//!
//! For every actor type of a torrent (all Peers together, the Coordinator, the
//! PieceManager, the Hasher pool, ...) the engine counts:
//!
//! - messages handled, by message type, with the time spent in the handler (a
//!   histogram with power-of-two buckets, from which p50 and p99 are read);
//! - the mailbox depth: messages sent through a [`Tracked`] handle and not yet handled,
//!   now and at its peak (summed over the actors of the type: for Peers, all
//!   connections together);
//! - how often backpressure acted: replies held back (the PieceManager's budget of
//!   pieces awaiting hash and write), requests refused (a peer's full upload queue),
//!   connections turned away (the connection caps);
//! - messages sent to an actor of the type that was gone (`undelivered`): a `do_send`
//!   cannot fail otherwise, and every loss of one is counted here, not silent.
//!
//! actix does not expose a mailbox's length, so the depth is counted on both sides:
//! senders go through [`Tracked`] or [`TrackedRecipient`], which count a message in, and
//! the handler's [`ActorMetrics::handling`] guard counts it out. Items an actor reads from
//! its own streams (socket frames, accepted connections, timers) are not mailbox
//! messages; they are timed with [`ActorMetrics::handling_unqueued`]. So are the few
//! messages that come from outside the engine's own handles, at most about once a
//! minute each: peer lists (from trackers, the DHT and peer exchange), tracker reports
//! and announce statistics, `Shutdown` and `GetTrackers` from the front end. Their counts and
//! times are kept; they are left out of the depth.
//!
//! Everything is atomics and one short-held mutex per actor type; the cost per message
//! is two clock reads and a few uncontended atomic operations.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::dev::ToEnvelope;
use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use serde::Serialize;

use super::graph::{GraphSnapshot, InstanceGraph};
use super::trace::{TraceSlot, Tracer};

/// The actor types of a torrent's engine, in the order reports list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ActorKind {
    Coordinator,
    Peer,
    PieceManager,
    Hasher,
    FileWriter,
    FileReader,
    RateLimiter,
    Tracker,
    MetadataFetcher,
    MetadataPeer,
}

impl ActorKind {
    /// Every kind, in report order.
    pub const ALL: [ActorKind; 10] = [
        ActorKind::Coordinator,
        ActorKind::Peer,
        ActorKind::PieceManager,
        ActorKind::Hasher,
        ActorKind::FileWriter,
        ActorKind::FileReader,
        ActorKind::RateLimiter,
        ActorKind::Tracker,
        ActorKind::MetadataFetcher,
        ActorKind::MetadataPeer,
    ];

    /// The actor's name as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            ActorKind::Coordinator => "Coordinator",
            ActorKind::Peer => "Peer",
            ActorKind::PieceManager => "PieceManager",
            ActorKind::Hasher => "Hasher",
            ActorKind::FileWriter => "FileWriter",
            ActorKind::FileReader => "FileReader",
            ActorKind::RateLimiter => "RateLimiter",
            ActorKind::Tracker => "Tracker",
            ActorKind::MetadataFetcher => "MetadataFetcher",
            ActorKind::MetadataPeer => "MetadataPeer",
        }
    }
}

/// Handling-time buckets, log-linear: four per power of two (so a quantile is read to
/// within 25 %), from 1 ns to the largest `u64`.
const BUCKETS: usize = 256;

/// The bucket of a time in ns: below 4 its own; otherwise four per power of two, by the
/// two bits after the leading one.
fn bucket_of(nanos: u64) -> usize {
    if nanos < 4 {
        return nanos as usize;
    }
    let e = 63 - nanos.leading_zeros() as usize;
    let sub = ((nanos >> (e - 2)) & 0b11) as usize;
    4 * (e - 1) + sub
}

/// The smallest time above every time in bucket `i`, in ns.
fn bucket_end(i: usize) -> u64 {
    if i < 4 {
        return i as u64 + 1;
    }
    let (e, sub) = (i / 4 + 1, (i % 4) as u64);
    u64::try_from(u128::from(5 + sub) << (e - 2)).unwrap_or(u64::MAX)
}

/// The upper bounds, in ns, of the coarse handling-time histogram a monitoring system
/// reads (`serve`'s `/metrics`): powers of four from 1 µs to about 4 s, then everything.
pub const HANDLING_BOUNDS_NS: [u64; 12] = [
    1_000,
    4_000,
    16_000,
    64_000,
    256_000,
    1_024_000,
    4_096_000,
    16_384_000,
    65_536_000,
    262_144_000,
    1_048_576_000,
    4_194_304_000,
];

/// Counts for one message type at one actor type.
#[derive(Debug, Clone)]
struct MessageStats {
    handled: u64,
    total_nanos: u64,
    max_nanos: u64,
    buckets: [u64; BUCKETS],
}

impl Default for MessageStats {
    fn default() -> Self {
        Self {
            handled: 0,
            total_nanos: 0,
            max_nanos: 0,
            buckets: [0; BUCKETS],
        }
    }
}

impl MessageStats {
    fn record(&mut self, nanos: u64) {
        self.handled += 1;
        self.total_nanos = self.total_nanos.saturating_add(nanos);
        self.max_nanos = self.max_nanos.max(nanos);
        self.buckets[bucket_of(nanos).min(BUCKETS - 1)] += 1;
    }

    /// Adds this message type's times to `coarse`, one count per bound of
    /// [`HANDLING_BOUNDS_NS`] and one past the last: each fine bucket counts at the first
    /// bound its whole range fits under, so a count is never placed below its time (a
    /// fine bucket that straddles a bound is counted above it, by at most a quarter).
    fn add_coarse(&self, coarse: &mut [u64]) {
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            // Times in bucket i are below its end: at most end - 1.
            let top = bucket_end(i).saturating_sub(1);
            let j = HANDLING_BOUNDS_NS
                .iter()
                .position(|&b| top <= b)
                .unwrap_or(HANDLING_BOUNDS_NS.len());
            if let Some(c) = coarse.get_mut(j) {
                *c += n;
            }
        }
    }

    /// The end, in ns, of the bucket holding the `q` quantile (no more than the largest
    /// time seen).
    fn quantile_nanos(&self, q: f64) -> u64 {
        if self.handled == 0 {
            return 0;
        }
        let rank = ((self.handled as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_end(i).min(self.max_nanos.max(1));
            }
        }
        self.max_nanos
    }
}

/// How long every Coordinator handler takes at least under the `slow-coordinator` fault
/// (debug builds only, see [`crate::fault`]): a Coordinator this slow is behind on its
/// mailbox whenever a burst arrives, for tests of whoever waits on it.
pub const SLOW_COORDINATOR: std::time::Duration = std::time::Duration::from_millis(10);

/// The counters of one actor type. Shared by every actor of the type and by the handles
/// that send to them.
#[derive(Debug)]
pub struct ActorMetrics {
    kind: ActorKind,
    /// The `slow-coordinator` fault is on and these are a Coordinator's counters: every
    /// handler timed here is held back by [`SLOW_COORDINATOR`]. Read once, at creation.
    slow: bool,
    live: AtomicI64,
    queued: AtomicI64,
    peak: AtomicI64,
    backpressure: AtomicU64,
    undelivered: AtomicU64,
    messages: Mutex<BTreeMap<&'static str, MessageStats>>,
    /// The torrent's trace recorder (shared by every type of its [`Metrics`]).
    trace: Arc<TraceSlot>,
    /// The torrent's instance graph (shared likewise).
    graph: Arc<InstanceGraph>,
    /// Instances numbered so far, so each actor has its own track in a trace.
    instances: AtomicU64,
    /// Messages sent to this type through `Tracked` addresses, by the sending actor
    /// type and the message: the edges of the actor graph.
    senders: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl ActorMetrics {
    /// Counters that belong to no torrent's report: for actors built outside an engine
    /// (tests, benchmarks) until one attaches them.
    pub fn detached(kind: ActorKind) -> Self {
        Self::new(kind, Arc::default(), Arc::default())
    }

    fn new(kind: ActorKind, trace: Arc<TraceSlot>, graph: Arc<InstanceGraph>) -> Self {
        Self {
            trace,
            graph,
            instances: AtomicU64::new(0),
            senders: Mutex::new(BTreeMap::new()),
            kind,
            slow: kind == ActorKind::Coordinator && crate::fault::injected("slow-coordinator"),
            live: AtomicI64::new(0),
            queued: AtomicI64::new(0),
            peak: AtomicI64::new(0),
            backpressure: AtomicU64::new(0),
            undelivered: AtomicU64::new(0),
            messages: Mutex::new(BTreeMap::new()),
        }
    }

    /// An actor of this type started; the returned guard counts it out when dropped
    /// (keep it in the actor).
    pub fn started(self: &Arc<Self>) -> LiveGuard {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self.clone())
    }

    /// Where this actor's trace hooks record, if a trace is on (the torrent's or the
    /// process's); `None` costs an atomic load or two.
    pub fn tracer(&self) -> Option<Arc<Tracer>> {
        self.trace.recorder()
    }

    /// A message was put in a mailbox of this type.
    pub fn enqueued(&self) {
        let now = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// A mailbox message `message` is being handled: counts it out of the mailbox, and
    /// times the handler until the guard drops. A trace names the thread as the instance
    /// (right for a pool's actors, one per thread); an actor with an [`OwnMetrics`] names
    /// itself.
    pub fn handling(self: &Arc<Self>, message: &'static str) -> HandleGuard {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.handling_unqueued(message)
    }

    /// [`ActorMetrics::handling`] for message type `M`, named by [`message_name`]: the
    /// handler's own type gives the name, so no name is typed by hand.
    pub fn handling_of<M: ?Sized>(self: &Arc<Self>) -> HandleGuard {
        self.handling(message_name::<M>())
    }

    /// Times the handling of something that did not come through the mailbox (a frame
    /// from the actor's socket, an accepted connection, a timer).
    pub fn handling_unqueued(self: &Arc<Self>, message: &'static str) -> HandleGuard {
        self.timed(message, None)
    }

    fn timed(self: &Arc<Self>, message: &'static str, instance: Option<u64>) -> HandleGuard {
        if self.slow {
            // A fault injected on purpose (debug builds only): see `SLOW_COORDINATOR`.
            std::thread::sleep(SLOW_COORDINATOR);
        }
        let start = Instant::now();
        let instance = instance.unwrap_or_else(super::trace::thread_instance);
        let outer = HANDLING.replace(Some((self.kind.name(), instance)));
        let stamp = DELIVERY.take().unwrap_or_default();
        if let Some((actor, from)) = stamp.from {
            self.graph.record(
                ActorId(actor, from),
                ActorId(self.kind.name(), instance),
                message,
                start,
            );
        }
        let traced = self.tracer().map(|tracer| {
            if stamp.flow != 0 {
                tracer.delivered(self.kind.name(), instance, message, stamp.flow, start);
            }
            Traced {
                tracer,
                instance,
                sent: stamp.sent,
            }
        });
        HandleGuard {
            metrics: self.clone(),
            message,
            start,
            outer,
            traced,
        }
    }

    /// The stamp a message sent to this type now carries: when, and the arrow from its
    /// sender (the actor whose handler runs on this thread), if tracing.
    /// Counts the edge from the sending actor's type, if a handler of one runs here, and
    /// names the sending instance for the instance graph while someone watches it.
    fn stamp<M: ?Sized>(&self) -> Stamp {
        let from = HANDLING.get();
        if let Some((actor, _)) = from {
            let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
            *senders.entry((actor, message_name::<M>())).or_default() += 1;
        }
        let watched = if self.graph.watching() { from } else { None };
        let Some(tracer) = self.tracer() else {
            return Stamp {
                from: watched,
                ..Stamp::default()
            };
        };
        let flow = from.map_or(0, |(actor, instance)| {
            tracer.sent(actor, instance, message_name::<M>())
        });
        Stamp {
            sent: Some(Instant::now()),
            flow,
            from: watched,
        }
    }

    /// A number for a new actor of this type, unique among them (from 1).
    fn next_instance(&self) -> u64 {
        self.instances.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Backpressure acted: a reply held back (the PieceManager's budget), a request
    /// refused (a peer's full upload queue), a connection turned away.
    pub fn held_back(&self) {
        self.backpressure.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was sent to an actor of this type that had stopped.
    pub fn undelivered(&self) {
        self.undelivered.fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, message: &'static str, nanos: u64) {
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        messages.entry(message).or_default().record(nanos);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ActorSnapshot {
        let messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        let mut handling_histogram = vec![0; HANDLING_BOUNDS_NS.len() + 1];
        for s in messages.values() {
            s.add_coarse(&mut handling_histogram);
        }
        let messages: Vec<MessageSnapshot> = messages
            .iter()
            .map(|(name, s)| MessageSnapshot {
                message: name,
                handled: s.handled,
                total_ms: s.total_nanos as f64 / 1e6,
                p50_us: s.quantile_nanos(0.5) as f64 / 1e3,
                p99_us: s.quantile_nanos(0.99) as f64 / 1e3,
                max_us: s.max_nanos as f64 / 1e3,
            })
            .collect();
        ActorSnapshot {
            actor: self.kind.name(),
            live: self.live.load(Ordering::Relaxed).max(0),
            handled: messages.iter().map(|m| m.handled).sum(),
            busy_ms: messages.iter().fold(0.0, |sum, m| sum + m.total_ms),
            mailbox: self.queued.load(Ordering::Relaxed).max(0),
            mailbox_peak: self.peak.load(Ordering::Relaxed),
            backpressure: self.backpressure.load(Ordering::Relaxed),
            undelivered: self.undelivered.load(Ordering::Relaxed),
            messages,
            senders: self
                .senders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(&(from, message), &sent)| EdgeSnapshot {
                    from,
                    message,
                    sent,
                })
                .collect(),
            handling_histogram,
        }
    }
}

/// Counts an actor out of its type's live count when dropped.
#[derive(Debug)]
pub struct LiveGuard(Arc<ActorMetrics>);

/// One actor's place in its type's counters: it counts the actor live while held, and
/// gives the actor an instance number, so a trace draws each actor on its own track.
/// Handlers write `self.metrics.handling_of::<M>()`; it derefs to the type's counters.
///
/// An actor built before it is known where it counts (the file actors and the
/// RateLimiter are made, then given their torrent's metrics) starts
/// [`OwnMetrics::detached`] until [`OwnMetrics::attach`].
pub struct OwnMetrics {
    metrics: Arc<ActorMetrics>,
    _live: Option<LiveGuard>,
    instance: u64,
}

impl OwnMetrics {
    /// Counts into `metrics` from now on, as a new instance, live until dropped.
    pub fn started(metrics: Arc<ActorMetrics>) -> Self {
        let instance = metrics.next_instance();
        Self::started_as(metrics, instance)
    }

    /// [`OwnMetrics::started`] under a number the actor has already (a Peer's key, which
    /// its block hops carry too).
    pub fn started_as(metrics: Arc<ActorMetrics>, instance: u64) -> Self {
        metrics
            .graph
            .register(ActorId(metrics.kind.name(), instance));
        Self {
            _live: Some(metrics.started()),
            metrics,
            instance,
        }
    }

    /// Counters that nobody reads, for an actor of `kind` not attached yet.
    pub fn detached(kind: ActorKind) -> Self {
        Self {
            metrics: Arc::new(ActorMetrics::detached(kind)),
            _live: None,
            instance: 0,
        }
    }

    /// Counts into `metrics` from now on, this actor among the live ones.
    pub fn attach(&mut self, metrics: Arc<ActorMetrics>) {
        *self = Self::started(metrics);
    }

    /// This actor's number among its type's.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// `fut`, polled as this actor's own work: what it sends counts as sent by this
    /// actor (a handler's reply future that asks other actors, after the handler
    /// returned).
    pub fn scoped<F: std::future::Future>(&self, fut: F) -> Scoped<F> {
        Scoped {
            fut: Box::pin(fut),
            who: Some((self.metrics.kind.name(), self.instance)),
        }
    }

    /// `fut`, an [`ActorFuture`] this actor spawns on its own context (`ctx.spawn`,
    /// `ctx.wait`), polled as this actor's work: what it and its `map` closures send
    /// counts as sent by this actor, though no handler runs then.
    pub fn scoped_actor<A: Actor, F: ActorFuture<A>>(&self, fut: F) -> ScopedActor<F> {
        self.id().on(fut)
    }

    /// Names this actor in the actor graph (a peer's address, a tracker's host).
    pub fn labelled(self, label: &str) -> Self {
        self.metrics.graph.label(self.id(), label);
        self
    }

    /// This actor's identity (type and number), as a trace and the actor graph name it.
    pub fn id(&self) -> ActorId {
        ActorId(self.metrics.kind.name(), self.instance)
    }

    /// [`ActorMetrics::handling`], this actor named as the handler.
    pub fn handling(&self, message: &'static str) -> HandleGuard {
        self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
        self.handling_unqueued(message)
    }

    /// [`ActorMetrics::handling_of`], this actor named as the handler.
    pub fn handling_of<M: ?Sized>(&self) -> HandleGuard {
        self.handling(message_name::<M>())
    }

    /// [`ActorMetrics::handling_unqueued`], this actor named as the handler.
    pub fn handling_unqueued(&self, message: &'static str) -> HandleGuard {
        self.metrics.timed(message, Some(self.instance))
    }
}

impl Drop for OwnMetrics {
    fn drop(&mut self) {
        if self._live.is_some() {
            self.metrics.graph.remove(self.id());
        }
    }
}

impl std::ops::Deref for OwnMetrics {
    type Target = Arc<ActorMetrics>;

    fn deref(&self) -> &Arc<ActorMetrics> {
        &self.metrics
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The name reports give message type `M`: the last path segment of its type name,
/// generic arguments left off (`engine::messages::PieceVerified` gives `PieceVerified`).
/// The result is a slice of the compiler's `'static` type name, so nothing is allocated;
/// the scan is a few dozen bytes.
pub fn message_name<M: ?Sized>() -> &'static str {
    trim_type_name(std::any::type_name::<M>())
}

/// The last path segment of a type name, generic arguments left off.
fn trim_type_name(full: &'static str) -> &'static str {
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Times one handler; records on drop. It holds its own reference to the counters, so
/// the handler may borrow its actor mutably meanwhile.
pub struct HandleGuard {
    metrics: Arc<ActorMetrics>,
    message: &'static str,
    start: Instant,
    /// The handler this one runs inside of, if any, to restore.
    outer: Option<(&'static str, u64)>,
    /// Set when a trace records this handling.
    traced: Option<Traced>,
}

/// What a traced handling needs at its end.
struct Traced {
    tracer: Arc<Tracer>,
    /// The handling actor's number (the thread's for an actor without one).
    instance: u64,
    /// When its message was sent, if it came stamped.
    sent: Option<Instant>,
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.metrics.record(self.message, nanos);
        HANDLING.set(self.outer);
        if let Some(t) = self.traced.take() {
            t.tracer.handled(
                self.metrics.kind.name(),
                t.instance,
                self.message,
                self.start,
                t.sent,
            );
        }
    }
}

thread_local! {
    /// The actor whose handler (or [`OwnMetrics::scoped`] future) runs on this thread
    /// now: a message it sends is counted as an edge from its type, and while tracing
    /// starts an arrow from its track.
    static HANDLING: Cell<Option<(&'static str, u64)>> = const { Cell::new(None) };
    /// The stamp of the message being delivered on this thread, for the handler's guard.
    static DELIVERY: Cell<Option<Stamp>> = const { Cell::new(None) };
}

/// A future polled as one actor's work; see [`OwnMetrics::scoped`] and [`carried`].
pub struct Scoped<F> {
    fut: std::pin::Pin<Box<F>>,
    who: Option<(&'static str, u64)>,
}

/// `fut`, polled as the work of the actor whose handler runs on this thread now (if
/// any): a future a handler makes and hands to another task still counts its sends as
/// that actor's, in the metrics' edges and the trace's arrows.
pub fn carried<F: std::future::Future>(fut: F) -> Scoped<F> {
    Scoped {
        fut: Box::pin(fut),
        who: HANDLING.get(),
    }
}

/// `actix::spawn` of [`carried`]`(fut)`: a task spawned from a handler sends as the
/// handler's actor.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    actix::spawn(carried(fut))
}

/// An actor instance: its type's name and its number among them (as a trace's tracks
/// and the actor graph's nodes name it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId(pub &'static str, pub u64);

impl ActorId {
    /// `fut`, polled as this actor's work; see [`OwnMetrics::scoped_actor`]. Taking the
    /// id first (`self.metrics.id().on(self.work())`) leaves the actor free to borrow.
    pub fn on<A: Actor, F: ActorFuture<A>>(self, fut: F) -> ScopedActor<F> {
        ScopedActor {
            fut: Box::pin(fut),
            who: (self.0, self.1),
        }
    }
}

/// An [`ActorFuture`] polled as one actor's work; see [`OwnMetrics::scoped_actor`].
pub struct ScopedActor<F> {
    fut: std::pin::Pin<Box<F>>,
    who: (&'static str, u64),
}

impl<A: Actor, F: ActorFuture<A>> ActorFuture<A> for ScopedActor<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        act: &mut A,
        ctx: &mut A::Context,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let outer = HANDLING.replace(Some(self.who));
        let polled = self.fut.as_mut().poll(act, ctx, task);
        HANDLING.set(outer);
        polled
    }
}

impl<F: std::future::Future> std::future::Future for Scoped<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let outer = match self.who {
            Some(who) => HANDLING.replace(Some(who)),
            None => HANDLING.get(),
        };
        let polled = self.fut.as_mut().poll(cx);
        HANDLING.set(outer);
        polled
    }
}

/// When a message was sent and the arrow from its sender (0 for none), while tracing;
/// empty otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamp {
    sent: Option<Instant>,
    flow: u64,
    /// The sending instance, while the instance graph is watched.
    from: Option<(&'static str, u64)>,
}

/// A message as a [`Tracked`] address delivers it: the message and its [`Stamp`]. Each
/// actor reached through `Tracked` takes it (see [`takes_stamped!`]) by handing the
/// message to its own handler for it, so a trace can show how long the message waited
/// in the mailbox and who sent it. Its reply is the message's.
pub struct Stamped<M> {
    msg: M,
    stamp: Stamp,
}

impl<M: Message> Message for Stamped<M> {
    type Result = M::Result;
}

impl<M> Stamped<M> {
    /// The message, its stamp left for the handler's guard on this thread until the
    /// returned guard drops (after the handler returns).
    pub fn open(self) -> (M, Delivery) {
        if self.stamp.sent.is_some() || self.stamp.from.is_some() {
            DELIVERY.set(Some(self.stamp));
        }
        (self.msg, Delivery(()))
    }
}

/// Clears a delivered message's stamp, should its handler not have taken it.
pub struct Delivery(());

impl Drop for Delivery {
    fn drop(&mut self) {
        DELIVERY.set(None);
    }
}

/// The reply of a [`Stamped`] message: the inner handler's reply, passed on.
pub struct Forward<R>(pub R);

impl<A, M, R> MessageResponse<A, Stamped<M>> for Forward<R>
where
    A: Actor,
    M: Message,
    R: MessageResponse<A, M>,
{
    fn handle(self, ctx: &mut A::Context, tx: Option<OneshotSender<M::Result>>) {
        self.0.handle(ctx, tx)
    }
}

/// Lets each actor named take [`Stamped`] messages: every message it handles, it takes
/// stamped too, by opening the stamp and calling its own handler.
#[macro_export]
macro_rules! takes_stamped {
    ($($actor:ty),* $(,)?) => {$(
        impl<M> actix::Handler<$crate::engine::metrics::Stamped<M>> for $actor
        where
            M: actix::Message,
            Self: actix::Handler<M>,
        {
            type Result = $crate::engine::metrics::Forward<<Self as actix::Handler<M>>::Result>;

            fn handle(
                &mut self,
                stamped: $crate::engine::metrics::Stamped<M>,
                ctx: &mut <Self as actix::Actor>::Context,
            ) -> Self::Result {
                let (msg, _delivery) = stamped.open();
                $crate::engine::metrics::Forward(<Self as actix::Handler<M>>::handle(self, msg, ctx))
            }
        }
    )*};
}

/// The metrics of one torrent's engine: one [`ActorMetrics`] per actor type.
#[derive(Debug)]
pub struct Metrics {
    by_kind: BTreeMap<ActorKind, Arc<ActorMetrics>>,
    graph: Arc<InstanceGraph>,
    since: Instant,
}

impl Metrics {
    /// Fresh counters for every actor type.
    pub fn new() -> Arc<Self> {
        Self::with_trace(Arc::default())
    }

    /// Fresh counters whose actors record into `trace` when it is on.
    pub fn with_trace(trace: Arc<TraceSlot>) -> Arc<Self> {
        let graph = Arc::new(InstanceGraph::default());
        Arc::new(Self {
            by_kind: ActorKind::ALL
                .iter()
                .map(|k| {
                    let m = ActorMetrics::new(*k, trace.clone(), graph.clone());
                    (*k, Arc::new(m))
                })
                .collect(),
            graph,
            since: Instant::now(),
        })
    }

    /// The actor instances and the message rates between them now, at most `top`
    /// instances of a type shown (see [`InstanceGraph::snapshot`]). Reading it turns the
    /// counting on for a while; until someone reads it, it costs nothing per message.
    pub fn graph(&self, top: usize) -> GraphSnapshot {
        self.graph.snapshot(top, Instant::now())
    }

    /// The counters of `kind`.
    pub fn of(&self, kind: ActorKind) -> Arc<ActorMetrics> {
        match self.by_kind.get(&kind) {
            Some(m) => m.clone(),
            // Every kind is created in `new`; a fresh one keeps the caller working.
            None => Arc::new(ActorMetrics::detached(kind)),
        }
    }

    /// Every actor type's counters now; types that never ran are left out.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            seconds: self.since.elapsed().as_secs_f64(),
            actors: self
                .by_kind
                .values()
                .map(|m| m.snapshot())
                .filter(|s| s.handled > 0 || s.live > 0 || s.mailbox_peak > 0)
                .collect(),
        }
    }
}

/// One message type's counts, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct MessageSnapshot {
    pub message: &'static str,
    pub handled: u64,
    /// Time spent in the handler, in total.
    pub total_ms: f64,
    /// Handling time quantiles, to the power of two above (bucket bounds).
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// One actor type's counts, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct ActorSnapshot {
    pub actor: &'static str,
    /// Actors of the type alive now.
    pub live: i64,
    /// Messages handled, all types together.
    pub handled: u64,
    /// Time spent in handlers, all types together.
    pub busy_ms: f64,
    /// Messages waiting in the type's mailboxes now, and at most.
    pub mailbox: i64,
    pub mailbox_peak: i64,
    /// Times backpressure acted: replies held back, requests refused, connections
    /// turned away.
    pub backpressure: u64,
    /// Messages sent to an actor of the type that had stopped, and so dropped.
    pub undelivered: u64,
    pub messages: Vec<MessageSnapshot>,
    /// Messages received through tracked addresses, by sending actor type.
    pub senders: Vec<EdgeSnapshot>,
    /// Handling times of every message type together, counted per bound of
    /// [`HANDLING_BOUNDS_NS`] and past the last (not cumulative); for `/metrics` only.
    #[serde(skip)]
    pub handling_histogram: Vec<u64>,
}

/// Messages of one type sent from one actor type to another, so far.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeSnapshot {
    pub from: &'static str,
    pub message: &'static str,
    pub sent: u64,
}

/// Every actor type's counts at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    /// Seconds since the engine started.
    pub seconds: f64,
    pub actors: Vec<ActorSnapshot>,
}

impl MetricsSnapshot {
    /// One line per actor type: a compact live view.
    pub fn summary_lines(&self) -> Vec<String> {
        self.actors
            .iter()
            .map(|a| {
                let top = a
                    .messages
                    .iter()
                    .max_by_key(|m| m.handled)
                    .map(|m| format!(", most {} ×{}", m.message, m.handled))
                    .unwrap_or_default();
                format!(
                    "{:<15} live {:>4}  handled {:>9}  busy {:>9.1} ms  mailbox {:>4} (peak {:>5})  held back {:>6}{top}",
                    a.actor, a.live, a.handled, a.busy_ms, a.mailbox, a.mailbox_peak, a.backpressure
                )
            })
            .collect()
    }

    /// A table by actor and message type, for the end of a run.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<15} {:<18} {:>10} {:>11} {:>9} {:>9} {:>9}\n",
            "actor", "message", "handled", "total ms", "p50 µs", "p99 µs", "max µs"
        );
        for a in &self.actors {
            out.push_str(&format!(
                "{:<15} mailbox now {}, peak {}; held back {}; undelivered {}; live {}\n",
                a.actor, a.mailbox, a.mailbox_peak, a.backpressure, a.undelivered, a.live
            ));
            for m in &a.messages {
                out.push_str(&format!(
                    "{:<15} {:<18} {:>10} {:>11.1} {:>9.1} {:>9.1} {:>9.1}\n",
                    "", m.message, m.handled, m.total_ms, m.p50_us, m.p99_us, m.max_us
                ));
            }
        }
        out
    }
}

/// An actor's address that counts what it sends into the actor's mailbox metrics.
pub struct Tracked<A: Actor> {
    addr: Addr<A>,
    metrics: Arc<ActorMetrics>,
}

impl<A: Actor> Clone for Tracked<A> {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<A: Actor> Tracked<A> {
    /// Wraps `addr`, counting into `metrics`.
    pub fn new(addr: Addr<A>, metrics: Arc<ActorMetrics>) -> Self {
        Self { addr, metrics }
    }

    /// Sends without waiting for the reply. It cannot fail but for an actor that has
    /// stopped, and that loss is counted (`undelivered`).
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Stamped<M>>,
        A::Context: ToEnvelope<A, Stamped<M>>,
    {
        if !self.addr.connected() {
            return self.metrics.undelivered();
        }
        self.metrics.enqueued();
        let stamp = self.metrics.stamp::<M>();
        self.addr.do_send(Stamped { msg, stamp });
    }

    /// Sends and returns the reply's future.
    pub fn send<M>(&self, msg: M) -> actix::dev::Request<A, Stamped<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Stamped<M>>,
        A::Context: ToEnvelope<A, Stamped<M>>,
    {
        self.metrics.enqueued();
        let stamp = self.metrics.stamp::<M>();
        self.addr.send(Stamped { msg, stamp })
    }

    /// A recipient for one message type that counts the same way.
    pub fn recipient<M>(&self) -> TrackedRecipient<M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Stamped<M>>,
        A::Context: ToEnvelope<A, Stamped<M>>,
    {
        TrackedRecipient {
            recipient: self.addr.clone().recipient(),
            metrics: self.metrics.clone(),
        }
    }

    /// The untracked address (for identity and `connected()`).
    pub fn addr(&self) -> &Addr<A> {
        &self.addr
    }
}

/// A [`Recipient`] that counts what it sends into the receiving actor's mailbox metrics.
pub struct TrackedRecipient<M: Message + Send>
where
    M::Result: Send,
{
    recipient: Recipient<Stamped<M>>,
    metrics: Arc<ActorMetrics>,
}

impl<M: Message + Send> Clone for TrackedRecipient<M>
where
    M::Result: Send,
{
    fn clone(&self) -> Self {
        Self {
            recipient: self.recipient.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<M: Message + Send + 'static> TrackedRecipient<M>
where
    M::Result: Send,
{
    /// Wraps `recipient`, counting into `metrics`.
    pub fn new(recipient: Recipient<Stamped<M>>, metrics: Arc<ActorMetrics>) -> Self {
        Self { recipient, metrics }
    }

    /// Sends without waiting for the reply.
    pub fn do_send(&self, msg: M) {
        if !self.recipient.connected() {
            return self.metrics.undelivered();
        }
        self.metrics.enqueued();
        let stamp = self.metrics.stamp::<M>();
        self.recipient.do_send(Stamped { msg, stamp });
    }

    /// Sends and returns the reply's future.
    pub fn send(&self, msg: M) -> actix::dev::RecipientRequest<Stamped<M>> {
        self.metrics.enqueued();
        let stamp = self.metrics.stamp::<M>();
        self.recipient.send(Stamped { msg, stamp })
    }

    /// Whether the receiving actor is still there.
    pub fn connected(&self) -> bool {
        self.recipient.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An actor that takes `Note`s, counting them into its own metrics.
    struct Sink(OwnMetrics);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    crate::takes_stamped!(Sink);
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Note;
    impl Handler<Note> for Sink {
        type Result = ();
        fn handle(&mut self, _: Note, _: &mut Context<Self>) {
            let _g = self.0.handling_of::<Note>();
        }
    }

    #[test]
    fn each_actor_has_its_own_track_in_its_torrents_trace() {
        let slot = Arc::new(TraceSlot::default());
        let metrics = Metrics::with_trace(slot.clone());
        let a = OwnMetrics::started(metrics.of(ActorKind::PieceManager));
        let b = OwnMetrics::started(metrics.of(ActorKind::PieceManager));
        let peer = OwnMetrics::started_as(metrics.of(ActorKind::Peer), 42);
        assert_ne!(a.instance(), b.instance());
        assert_eq!(metrics.of(ActorKind::PieceManager).snapshot().live, 2);
        let tracer = slot.start(100, 1);
        drop(a.handling_unqueued("First"));
        drop(b.handling_unqueued("Second"));
        drop(peer.handling_unqueued("Third"));
        let json = tracer.to_json();
        let tids: Vec<(String, u64)> = json["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["tid"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            tids,
            [
                ("First".to_string(), a.instance()),
                ("Second".to_string(), b.instance()),
                ("Third".to_string(), 42)
            ]
        );
        // Stopped, the torrent's trace records nothing more.
        assert!(slot.stop().is_some());
        drop(a.handling_unqueued("Late"));
        assert_eq!(tracer.counts().0, 3);
    }

    #[test]
    fn the_coarse_histogram_never_counts_a_time_below_its_bound() {
        let mut s = MessageStats::default();
        for nanos in [0, 999, 1_000, 1_001, 3_999, 70_000, 5_000_000_000] {
            s.record(nanos);
        }
        let mut coarse = vec![0; HANDLING_BOUNDS_NS.len() + 1];
        s.add_coarse(&mut coarse);
        assert_eq!(coarse.iter().sum::<u64>(), 7);
        // Cumulative counts at each bound never exceed the times truly at or below it.
        let times = [0u64, 999, 1_000, 1_001, 3_999, 70_000, 5_000_000_000];
        let mut cumulative = 0;
        for (j, &bound) in HANDLING_BOUNDS_NS.iter().enumerate() {
            cumulative += coarse[j];
            let truly = times.iter().filter(|&&t| t <= bound).count() as u64;
            assert!(cumulative <= truly, "bound {bound}: {cumulative} > {truly}");
        }
        assert_eq!(
            coarse[HANDLING_BOUNDS_NS.len()],
            1,
            "5 s is past the last bound"
        );
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut s = MessageStats::default();
        for _ in 0..98 {
            s.record(1_000); // below 1024 ns
        }
        s.record(1_000_000);
        s.record(2_000_000);
        assert_eq!(s.handled, 100);
        // 1000 ns lies in [896, 1024); 1_000_000 in [917_504, 1_048_576).
        assert_eq!(s.quantile_nanos(0.5), 1024);
        assert_eq!(s.quantile_nanos(0.99), 1_048_576);
        assert_eq!(s.quantile_nanos(1.0), 2_000_000);
    }

    #[test]
    fn buckets_are_contiguous_and_each_time_falls_inside_its_own() {
        for i in 0..BUCKETS - 1 {
            let end = bucket_end(i);
            if end == u64::MAX {
                break;
            }
            assert_eq!(bucket_of(end), i + 1, "bucket {i} ends at {end}");
            assert_eq!(bucket_of(end - 1), i, "bucket {i} holds {}", end - 1);
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn the_mailbox_counts_in_and_out_and_keeps_its_peak() {
        let m = Metrics::new();
        let peer = m.of(ActorKind::Peer);
        for _ in 0..5 {
            peer.enqueued();
        }
        for _ in 0..3 {
            drop(peer.handling("Have"));
        }
        let s = m.snapshot();
        let p = s
            .actors
            .iter()
            .find(|a| a.actor == "Peer")
            .expect("peer row");
        assert_eq!((p.mailbox, p.mailbox_peak, p.handled), (2, 5, 3));
        assert!(!s.actors.iter().any(|a| a.actor == "Hasher"));
    }

    #[test]
    fn a_message_is_named_by_the_last_segment_of_its_type() {
        struct Outer<T>(T);
        assert_eq!(message_name::<Metrics>(), "Metrics");
        assert_eq!(message_name::<Outer<Vec<u8>>>(), "Outer");
        assert_eq!(message_name::<u32>(), "u32");
        assert_eq!(
            message_name::<crate::engine::messages::PieceVerified>(),
            "PieceVerified"
        );
        assert_eq!(trim_type_name("a::b<c::D>"), "b");
        assert_eq!(trim_type_name(""), "");
    }

    #[test]
    fn live_actors_are_counted_while_their_guard_lives() {
        let m = Metrics::new();
        let hasher = m.of(ActorKind::Hasher);
        let a = hasher.started();
        let b = hasher.started();
        drop(a);
        assert_eq!(hasher.snapshot().live, 1);
        drop(b);
        assert_eq!(hasher.snapshot().live, 0);
    }

    #[test]
    fn tracked_sends_are_counted_in_and_handlers_count_them_out() {
        struct Echo(Arc<ActorMetrics>);
        impl Actor for Echo {
            type Context = Context<Self>;
        }
        crate::takes_stamped!(Echo);
        #[derive(Message)]
        #[rtype(result = "u32")]
        struct Ping(u32);
        impl Handler<Ping> for Echo {
            type Result = u32;
            fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> u32 {
                let _g = self.0.handling_of::<Ping>();
                msg.0
            }
        }
        let m = Metrics::new();
        let echo_metrics = m.of(ActorKind::Coordinator);
        let sys = System::new();
        let answer = sys.block_on(async move {
            let addr = Echo(echo_metrics.clone()).start();
            let tracked = Tracked::new(addr, echo_metrics);
            tracked.do_send(Ping(1));
            tracked.recipient::<Ping>().do_send(Ping(2));
            tracked.send(Ping(3)).await.unwrap_or(0)
        });
        assert_eq!(answer, 3);
        let s = m.of(ActorKind::Coordinator).snapshot();
        assert_eq!((s.handled, s.mailbox), (3, 0));
        assert!(s.mailbox_peak >= 1);
    }

    #[test]
    fn a_traced_message_shows_its_sender_and_how_long_it_waited() {
        let slot = Arc::new(TraceSlot::default());
        let m = Metrics::with_trace(slot.clone());
        let tracer = slot.start(1000, 1);
        let sender = OwnMetrics::started(m.of(ActorKind::Coordinator));
        let sink_metrics = m.of(ActorKind::FileWriter);
        let sys = System::new();
        let sink = sys.block_on(async {
            let sink = OwnMetrics::started(sink_metrics.clone());
            let instance = sink.instance();
            let to_sink = Tracked::new(Sink(sink).start(), sink_metrics);
            {
                // Sent from inside a Coordinator's handler, then kept waiting 20 ms: the
                // sink runs only once this task yields.
                let _handling = sender.handling_unqueued("Tick");
                to_sink.do_send(Note);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // Sent from no handler: a wait, but no arrow.
            to_sink.send(Note).await.expect("the sink answers");
            instance
        });
        let json = tracer.to_json();
        let events = json["traceEvents"].as_array().unwrap();
        let pid_of = |actor: &str| {
            events
                .iter()
                .find(|e| e["name"] == "process_name" && e["args"]["name"] == actor)
                .map(|e| e["pid"].clone())
                .unwrap()
        };
        let of = |ph: &str| -> Vec<&serde_json::Value> {
            events
                .iter()
                .filter(|e| e["ph"] == ph && e["name"] == "Note")
                .collect()
        };
        let (starts, ends, slices) = (of("s"), of("f"), of("X"));
        assert_eq!(
            (starts.len(), ends.len(), slices.len()),
            (1, 1, 2),
            "{json}"
        );
        assert_eq!(starts[0]["pid"], pid_of("Coordinator"));
        assert_eq!(starts[0]["tid"], sender.instance());
        assert_eq!(ends[0]["pid"], pid_of("FileWriter"));
        assert_eq!(ends[0]["tid"], sink);
        assert_eq!(starts[0]["id"], ends[0]["id"]);
        let waits: Vec<u64> = slices
            .iter()
            .map(|x| x["args"]["wait_us"].as_u64().expect("a wait"))
            .collect();
        assert!(waits[0] >= 20_000, "{waits:?}");
    }

    #[test]
    fn sends_from_a_handler_or_its_scoped_future_are_edges_from_its_type() {
        let m = Metrics::new();
        let sender = OwnMetrics::started(m.of(ActorKind::Coordinator));
        let sink_metrics = m.of(ActorKind::FileWriter);
        let sys = System::new();
        sys.block_on(async {
            let to_sink = Tracked::new(
                Sink(OwnMetrics::started(sink_metrics.clone())).start(),
                sink_metrics.clone(),
            );
            {
                let _handling = sender.handling_unqueued("Tick");
                to_sink.do_send(Note);
            }
            let later = to_sink.clone();
            sender
                .scoped(async move { later.send(Note).await })
                .await
                .expect("the sink answers");
            // From no actor at all: no edge.
            to_sink.send(Note).await.expect("the sink answers");
        });
        let edges: Vec<_> = sink_metrics
            .snapshot()
            .senders
            .iter()
            .map(|e| (e.from, e.message, e.sent))
            .collect();
        assert_eq!(edges, [("Coordinator", "Note", 2)]);
    }

    #[test]
    fn sends_from_an_unscoped_future_are_edges_from_the_actor_that_spawned_it() {
        /// An actor whose handler spawns futures that send after it returned: one on the
        /// actor's context (its reply comes back in a closure), one as a task of its own.
        struct Spawner {
            metrics: OwnMetrics,
            to_sink: Tracked<Sink>,
        }
        impl Actor for Spawner {
            type Context = Context<Self>;
        }
        #[derive(Message)]
        #[rtype(result = "()")]
        struct Go;
        impl Handler<Go> for Spawner {
            type Result = ();
            fn handle(&mut self, _: Go, ctx: &mut Context<Self>) {
                let _g = self.metrics.handling_of::<Go>();
                let task = self.to_sink.clone();
                spawn(async move {
                    let _ = task.send(Note).await;
                });
                let fut = async {};
                ctx.spawn(
                    self.metrics.scoped_actor(
                        fut.into_actor(self)
                            .map(|_, act, _| act.to_sink.do_send(Note)),
                    ),
                );
            }
        }
        let slot = Arc::new(TraceSlot::default());
        let m = Metrics::with_trace(slot.clone());
        let tracer = slot.start(1000, 1);
        let sink_metrics = m.of(ActorKind::FileWriter);
        let spawner_metrics = OwnMetrics::started(m.of(ActorKind::Coordinator));
        let spawner_instance = spawner_metrics.instance();
        let sys = System::new();
        sys.block_on(async {
            let to_sink = Tracked::new(
                Sink(OwnMetrics::started(sink_metrics.clone())).start(),
                sink_metrics.clone(),
            );
            let spawner = Spawner {
                metrics: spawner_metrics,
                to_sink: to_sink.clone(),
            }
            .start();
            spawner.send(Go).await.expect("the spawner runs");
            // Both of its futures have sent once the sink has handled two Notes.
            for _ in 0..1000 {
                if sink_metrics.snapshot().handled >= 2 {
                    break;
                }
                actix::clock::sleep(std::time::Duration::from_millis(2)).await;
            }
        });
        let edges: Vec<_> = sink_metrics
            .snapshot()
            .senders
            .iter()
            .map(|e| (e.from, e.message, e.sent))
            .collect();
        assert_eq!(edges, [("Coordinator", "Note", 2)]);
        // And the trace draws both arrows from the spawner's track.
        let json = tracer.to_json();
        let starts: Vec<_> = json["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "s" && e["name"] == "Note")
            .map(|e| e["tid"].as_u64())
            .collect();
        assert_eq!(starts, [Some(spawner_instance); 2], "{json}");
    }

    #[test]
    fn a_watched_graph_counts_edges_between_instances_and_forgets_stopped_ones() {
        let m = Metrics::new();
        let sink_metrics = m.of(ActorKind::FileWriter);
        let a = OwnMetrics::started_as(m.of(ActorKind::Peer), 7).labelled("10.0.0.7:6881");
        let b = OwnMetrics::started_as(m.of(ActorKind::Peer), 8);
        let sys = System::new();
        let sink = sys.block_on(async {
            let sink = OwnMetrics::started(sink_metrics.clone());
            let id = sink.id();
            let to_sink = Tracked::new(Sink(sink).start(), sink_metrics.clone());
            // Not watched yet: the sends carry no sender for the graph.
            {
                let _g = a.handling_unqueued("Tick");
                to_sink.do_send(Note);
            }
            assert!(m.graph(4).edges.is_empty());
            // Watched: two from Peer#7, one from Peer#8.
            for (peer, n) in [(&a, 2), (&b, 1)] {
                for _ in 0..n {
                    let _g = peer.handling_unqueued("Tick");
                    to_sink.do_send(Note);
                }
            }
            to_sink.send(Note).await.expect("the sink answers");
            id
        });
        let g = m.graph(4);
        let edges: Vec<_> = g
            .edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str(), e.message, e.sent))
            .collect();
        let to = format!("FileWriter#{}", sink.1);
        assert_eq!(
            edges,
            [
                ("Peer#7", to.as_str(), "Note", 2),
                ("Peer#8", to.as_str(), "Note", 1)
            ]
        );
        let labels: Vec<_> = g.nodes.iter().map(|n| n.label.as_str()).collect();
        assert!(labels.contains(&"Peer#7 10.0.0.7:6881"), "{labels:?}");
        // A stopped actor's node goes at once (its edge after a quiet window).
        let before = g.instances;
        drop(b);
        assert_eq!(m.graph(4).instances, before - 1);
    }
}
