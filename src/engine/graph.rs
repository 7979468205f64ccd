//! The live actor graph of one torrent: its actor instances as nodes (the Coordinator,
//! the PieceManager, each Peer, each Tracker, ...) and, between them, how many messages
//! per second each sender sends each receiver. `serve`'s actors tab draws it.
//!
//! Pure: no actor code. Instances are named as a trace names them, by [`ActorId`] (the
//! actor type and its number, `OwnMetrics`' instance). The metrics hooks register an
//! instance when its actor starts and remove it when the actor stops, and count one edge
//! per message delivered through a `Tracked` address from a known sender.
//!
//! What it costs, and its bounds:
//! - Edges are counted only while someone watches: a reader of [`InstanceGraph::snapshot`]
//!   keeps the count on for [`WATCH`]; nobody watching, a message costs one atomic load.
//! - At most [`MAX_INSTANCES`] instances are registered (an address label each, at most
//!   [`MAX_LABEL`] bytes) and at most [`MAX_EDGES`] edges counted; past the bound, a new
//!   edge is counted between its endpoints' "other" nodes (one per actor type), so no
//!   message goes uncounted and the memory stays bounded.
//! - An edge whose endpoint stopped is forgotten once a sample window passes without it.
//! - A snapshot shows every instance of a type only up to `top` of them (the busiest);
//!   the rest are folded into one "N other Peers" node, and at most [`MAX_GRAPH_EDGES`]
//!   edges (the busiest) are given, so its JSON stays small with thousands of peers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::metrics::ActorId;

/// How long a snapshot keeps the counting on.
pub const WATCH: Duration = Duration::from_secs(10);
/// The shortest sample window a rate is measured over; snapshots taken more often share
/// the last window's rates.
pub const MIN_WINDOW: Duration = Duration::from_millis(900);
/// Instances registered at most.
pub const MAX_INSTANCES: usize = 16_384;
/// Edges counted at most (past it, between "other" nodes).
pub const MAX_EDGES: usize = 16_384;
/// The longest label kept, in bytes.
pub const MAX_LABEL: usize = 120;
/// Instances of one type a snapshot shows by default, and at most.
pub const DEFAULT_TOP: usize = 12;
pub const MAX_TOP: usize = 64;
/// Edges a snapshot gives at most.
pub const MAX_GRAPH_EDGES: usize = 256;

/// The instance number of a type's "other" node.
const OTHERS: u64 = u64::MAX;

/// Messages from one instance to another.
#[derive(Debug, Clone, Copy)]
struct Edge {
    /// Since counting began.
    total: u64,
    /// In the current window.
    window: u64,
    /// Messages per second in the last complete window.
    rate: f64,
    /// The last message type sent along it.
    message: &'static str,
}

#[derive(Debug)]
struct State {
    /// Live instances, with their label (a peer's address, a tracker's host).
    nodes: HashMap<ActorId, Option<Box<str>>>,
    edges: HashMap<(ActorId, ActorId), Edge>,
    /// Counting is on until then.
    watched_until: Option<Instant>,
    window_start: Instant,
    /// The last complete window's length, in seconds (0 before the first one).
    window_s: f64,
    /// Messages counted between "other" nodes because [`MAX_EDGES`] was reached.
    overflowed: u64,
}

/// One torrent's instance graph; see the module's text.
#[derive(Debug)]
pub struct InstanceGraph {
    /// Whether edges are counted now (someone watched within [`WATCH`]).
    on: AtomicBool,
    state: Mutex<State>,
}

impl Default for InstanceGraph {
    fn default() -> Self {
        Self {
            on: AtomicBool::new(false),
            state: Mutex::new(State {
                nodes: HashMap::new(),
                edges: HashMap::new(),
                watched_until: None,
                window_start: Instant::now(),
                window_s: 0.0,
                overflowed: 0,
            }),
        }
    }
}

/// A node of a snapshot: one instance, or a type's folded "others".
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraphNode {
    /// `Peer#12`, or `Peer#others`.
    pub id: String,
    pub actor: &'static str,
    /// The instance's number; none for a folded node.
    pub instance: Option<u64>,
    /// What the page prints: `Peer#12 10.0.0.2:6881`, `40 other Peers`.
    pub label: String,
    /// Messages per second it sent and received, together, in the last window.
    pub rate: f64,
    /// How many instances a folded node stands for (0 for an instance).
    pub folded: usize,
}

/// An edge of a snapshot: messages from one node to another.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    /// The busiest message type along it (the last one sent, of its busiest part).
    pub message: &'static str,
    /// Messages per second in the last window.
    pub rate: f64,
    /// Messages since counting began.
    pub sent: u64,
}

/// The graph at one moment, bounded for a page to draw.
#[derive(Debug, Clone, Serialize)]
pub struct GraphSnapshot {
    /// The sample window the rates are measured over, in seconds (0: no window yet,
    /// counting has only just begun).
    pub window_s: f64,
    /// Live instances known, before folding.
    pub instances: usize,
    pub nodes: Vec<GraphNode>,
    /// The busiest edges, at most [`MAX_GRAPH_EDGES`].
    pub edges: Vec<GraphEdge>,
    /// Edges left out to keep the bound.
    pub edges_left_out: usize,
    /// Messages counted between "other" nodes once the bookkeeping's bound was reached.
    pub overflowed: u64,
}

impl InstanceGraph {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An actor started (labels come with [`InstanceGraph::label`]).
    pub fn register(&self, id: ActorId) {
        let mut s = self.state();
        if s.nodes.len() < MAX_INSTANCES {
            s.nodes.entry(id).or_insert(None);
        }
    }

    /// Names a registered instance (a peer's address, a tracker's host), cut to
    /// [`MAX_LABEL`] bytes.
    pub fn label(&self, id: ActorId, label: &str) {
        let mut cut = label.len().min(MAX_LABEL);
        while !label.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(l) = self.state().nodes.get_mut(&id) {
            *l = Some(label[..cut].into());
        }
    }

    /// An actor stopped: its node goes now, its edges once a window passes without them.
    pub fn remove(&self, id: ActorId) {
        self.state().nodes.remove(&id);
    }

    /// Whether edges are counted now: one atomic load.
    pub fn watching(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// `from` sent `to` a `message`, handled at `now`. Counting stops here once nobody
    /// has watched for [`WATCH`].
    pub fn record(&self, from: ActorId, to: ActorId, message: &'static str, now: Instant) {
        let mut s = self.state();
        if s.watched_until.is_none_or(|until| now > until) {
            self.on.store(false, Ordering::Relaxed);
            return;
        }
        let mut key = (from, to);
        if !s.edges.contains_key(&key) && s.edges.len() >= MAX_EDGES {
            key = (ActorId(from.0, OTHERS), ActorId(to.0, OTHERS));
            s.overflowed += 1;
        }
        let e = s.edges.entry(key).or_insert(Edge {
            total: 0,
            window: 0,
            rate: 0.0,
            message,
        });
        e.total += 1;
        e.window += 1;
        e.message = message;
    }

    /// The graph now, showing at most `top` instances of each type (1 to [`MAX_TOP`]);
    /// keeps the counting on for [`WATCH`] more.
    pub fn snapshot(&self, top: usize, now: Instant) -> GraphSnapshot {
        let top = top.clamp(1, MAX_TOP);
        let mut s = self.state();
        let was_on = s.watched_until.is_some_and(|until| now <= until);
        s.watched_until = Some(now + WATCH);
        self.on.store(true, Ordering::Relaxed);
        if !was_on {
            // Counting (re)starts: what was counted before is no measure of now.
            s.window_start = now;
            s.window_s = 0.0;
            for e in s.edges.values_mut() {
                e.window = 0;
                e.rate = 0.0;
            }
        } else {
            let elapsed = now.saturating_duration_since(s.window_start);
            if elapsed >= MIN_WINDOW {
                let secs = elapsed.as_secs_f64();
                let State { nodes, edges, .. } = &mut *s;
                edges.retain(|(from, to), e| {
                    let live = (nodes.contains_key(from) || from.1 == OTHERS)
                        && (nodes.contains_key(to) || to.1 == OTHERS);
                    // Endpoints never registered (a pool's thread) stay while they talk.
                    e.window > 0 || live
                });
                for e in edges.values_mut() {
                    e.rate = e.window as f64 / secs;
                    e.window = 0;
                }
                s.window_start = now;
                s.window_s = secs;
            }
        }
        build(&s, top)
    }
}

/// Folds and bounds the state into a snapshot.
fn build(s: &State, top: usize) -> GraphSnapshot {
    let (nodes, shown) = fold_nodes(s, rates_by_type(s), top);
    let mut edges = merge_edges(s, &shown);
    let edges_left_out = edges.len().saturating_sub(MAX_GRAPH_EDGES);
    edges.truncate(MAX_GRAPH_EDGES);
    GraphSnapshot {
        window_s: s.window_s,
        instances: s.nodes.len(),
        nodes,
        edges,
        edges_left_out,
        overflowed: s.overflowed,
    }
}

/// Every instance, the live ones and the edges' endpoints, with its traffic (what it
/// sends and receives), by actor type.
fn rates_by_type(s: &State) -> BTreeMap<&'static str, Vec<(ActorId, f64)>> {
    let mut rate: HashMap<ActorId, f64> = s.nodes.keys().map(|&id| (id, 0.0)).collect();
    for (&(from, to), e) in &s.edges {
        *rate.entry(from).or_default() += e.rate;
        *rate.entry(to).or_default() += e.rate;
    }
    let mut by_type: BTreeMap<&'static str, Vec<(ActorId, f64)>> = BTreeMap::new();
    for (&id, &r) in &rate {
        by_type.entry(id.0).or_default().push((id, r));
    }
    by_type
}

/// The nodes shown: of each type, the `top` busiest instances and one node for the rest
/// (if any); and for every instance, the id of the node it is shown as.
fn fold_nodes(
    s: &State,
    by_type: BTreeMap<&'static str, Vec<(ActorId, f64)>>,
    top: usize,
) -> (Vec<GraphNode>, HashMap<ActorId, String>) {
    let mut shown: HashMap<ActorId, String> = HashMap::new();
    let mut nodes = Vec::new();
    for (actor, mut ids) in by_type {
        ids.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0 .1.cmp(&b.0 .1)));
        let others_id = format!("{actor}#others");
        let (mut folded, mut folded_rate) = (0, 0.0);
        let mut kept = 0;
        for (id, r) in ids {
            if id.1 != OTHERS && kept < top {
                kept += 1;
                let name = format!("{actor}#{}", id.1);
                let label = match s.nodes.get(&id).and_then(|l| l.as_deref()) {
                    Some(l) => format!("{name} {l}"),
                    None => name.clone(),
                };
                nodes.push(GraphNode {
                    id: name.clone(),
                    actor,
                    instance: Some(id.1),
                    label,
                    rate: r,
                    folded: 0,
                });
                shown.insert(id, name);
            } else {
                if id.1 != OTHERS {
                    folded += 1;
                }
                folded_rate += r;
                shown.insert(id, others_id.clone());
            }
        }
        if folded > 0 || folded_rate > 0.0 {
            nodes.push(GraphNode {
                id: others_id.clone(),
                actor,
                instance: None,
                label: if folded > 0 {
                    format!("{folded} other {actor}s")
                } else {
                    format!("other {actor}s")
                },
                rate: folded_rate,
                folded,
            });
        }
    }
    (nodes, shown)
}

/// Edges between shown nodes, the parts of a folded one summed and named by the busiest
/// message; busiest first.
fn merge_edges(s: &State, shown: &HashMap<ActorId, String>) -> Vec<GraphEdge> {
    let mut merged: HashMap<(&str, &str), (GraphEdge, f64)> = HashMap::new();
    for ((from, to), e) in &s.edges {
        let (Some(f), Some(t)) = (shown.get(from), shown.get(to)) else {
            continue;
        };
        let slot = merged.entry((f, t)).or_insert_with(|| {
            (
                GraphEdge {
                    from: f.clone(),
                    to: t.clone(),
                    message: e.message,
                    rate: 0.0,
                    sent: 0,
                },
                -1.0,
            )
        });
        slot.0.rate += e.rate;
        slot.0.sent += e.total;
        if e.rate > slot.1 {
            slot.0.message = e.message;
            slot.1 = e.rate;
        }
    }
    let mut edges: Vec<GraphEdge> = merged.into_values().map(|(e, _)| e).collect();
    edges.sort_by(|a, b| {
        b.rate
            .total_cmp(&a.rate)
            .then(b.sent.cmp(&a.sent))
            .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    const COORD: ActorId = ActorId("Coordinator", 1);

    fn peer(n: u64) -> ActorId {
        ActorId("Peer", n)
    }

    /// A graph being watched, with `peers` peers registered.
    fn watched(peers: u64) -> (InstanceGraph, Instant) {
        let g = InstanceGraph::default();
        g.register(COORD);
        for n in 1..=peers {
            g.register(peer(n));
            g.label(peer(n), &format!("10.0.0.{n}:6881"));
        }
        let t0 = Instant::now();
        g.snapshot(DEFAULT_TOP, t0);
        (g, t0)
    }

    #[test]
    fn nothing_is_counted_until_someone_watches_and_after_they_stop() {
        let g = InstanceGraph::default();
        g.register(COORD);
        g.register(peer(1));
        let t0 = Instant::now();
        assert!(!g.watching());
        g.record(peer(1), COORD, "Have", t0);
        assert!(g.state().edges.is_empty());
        g.snapshot(4, t0);
        assert!(g.watching());
        g.record(peer(1), COORD, "Have", t0 + Duration::from_secs(1));
        assert_eq!(g.state().edges.len(), 1);
        // Nobody asked for WATCH: the next message turns the counting off.
        g.record(peer(1), COORD, "Have", t0 + WATCH + Duration::from_secs(1));
        assert!(!g.watching());
        assert_eq!(g.state().edges[&(peer(1), COORD)].total, 1);
    }

    #[test]
    fn edges_carry_the_rate_of_the_last_window() {
        let (g, t0) = watched(2);
        for _ in 0..30 {
            g.record(peer(1), COORD, "Have", t0 + Duration::from_millis(100));
        }
        g.record(COORD, peer(2), "Haves", t0 + Duration::from_millis(100));
        let s = g.snapshot(DEFAULT_TOP, t0 + Duration::from_secs(2));
        assert_eq!(s.window_s, 2.0);
        let e = s.edges.iter().find(|e| e.from == "Peer#1").expect("edge");
        assert_eq!(
            (e.to.as_str(), e.message, e.rate, e.sent),
            ("Coordinator#1", "Have", 15.0, 30)
        );
        assert_eq!(s.edges[1].rate, 0.5);
        let p1 = s.nodes.iter().find(|n| n.id == "Peer#1").expect("node");
        assert_eq!(p1.label, "Peer#1 10.0.0.1:6881");
        // A quiet window: the rate falls to 0; the total stays.
        let s = g.snapshot(DEFAULT_TOP, t0 + Duration::from_secs(4));
        let e = s.edges.iter().find(|e| e.from == "Peer#1").expect("edge");
        assert_eq!((e.rate, e.sent), (0.0, 30));
    }

    #[test]
    fn the_busiest_peers_are_shown_and_the_rest_folded_into_one_node() {
        let (g, t0) = watched(1000);
        let at = t0 + Duration::from_millis(10);
        for n in 1..=1000 {
            // Peer n sends n messages: the busiest have the highest numbers.
            for _ in 0..n {
                g.record(peer(n), COORD, "Have", at);
            }
            g.record(COORD, peer(n), "Haves", at);
        }
        let s = g.snapshot(5, t0 + Duration::from_secs(1));
        let peers: Vec<&str> = s
            .nodes
            .iter()
            .filter(|n| n.actor == "Peer")
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(
            peers,
            [
                "Peer#1000",
                "Peer#999",
                "Peer#998",
                "Peer#997",
                "Peer#996",
                "Peer#others"
            ]
        );
        let others = s
            .nodes
            .iter()
            .find(|n| n.id == "Peer#others")
            .expect("folded");
        assert_eq!(
            (others.folded, others.label.as_str()),
            (995, "995 other Peers")
        );
        assert_eq!(s.instances, 1001);
        // The folded peers' edges are summed into one each way.
        let from_others = s
            .edges
            .iter()
            .find(|e| e.from == "Peer#others")
            .expect("edge");
        let expected: u64 = (1..=995).sum();
        assert_eq!(
            (from_others.to.as_str(), from_others.sent),
            ("Coordinator#1", expected)
        );
        let to_others = s
            .edges
            .iter()
            .find(|e| e.to == "Peer#others")
            .expect("edge");
        assert_eq!(to_others.sent, 995);
        // 6 peer nodes and the Coordinator; 12 edges: the JSON does not grow with peers.
        assert_eq!((s.nodes.len(), s.edges.len()), (7, 12));
        assert!(serde_json::to_vec(&s).expect("json").len() < 4096);
    }

    #[test]
    fn the_bookkeeping_is_bounded_and_overflow_counts_between_other_nodes() {
        let (g, t0) = watched(0);
        let at = t0 + Duration::from_millis(10);
        for n in 0..(MAX_EDGES as u64 + 10) {
            g.register(peer(n));
            g.record(peer(n), COORD, "Have", at);
        }
        {
            let st = g.state();
            assert_eq!(st.edges.len(), MAX_EDGES + 1);
            assert_eq!(st.overflowed, 10);
            assert_eq!(st.nodes.len(), MAX_INSTANCES);
            assert_eq!(
                st.edges[&(ActorId("Peer", OTHERS), ActorId("Coordinator", OTHERS))].total,
                10
            );
        }
        let s = g.snapshot(MAX_TOP + 100, t0 + Duration::from_secs(1));
        assert!(s.nodes.len() <= MAX_TOP + 3, "{}", s.nodes.len());
        assert!(s.edges.len() <= MAX_GRAPH_EDGES);
        // A label is cut to its bound, on a character boundary.
        g.label(peer(1), &"é".repeat(MAX_LABEL));
        let label = g.state().nodes[&peer(1)].clone().expect("label");
        assert!(label.len() <= MAX_LABEL && label.len() >= MAX_LABEL - 1);
    }

    #[test]
    fn a_stopped_actor_leaves_the_graph() {
        let (g, t0) = watched(2);
        g.record(peer(1), COORD, "Have", t0 + Duration::from_millis(10));
        g.record(peer(2), COORD, "Have", t0 + Duration::from_millis(10));
        g.remove(peer(1));
        // Its last messages are still this window's traffic...
        let s = g.snapshot(DEFAULT_TOP, t0 + Duration::from_secs(1));
        assert!(s.edges.iter().any(|e| e.from == "Peer#1"));
        assert_eq!(s.instances, 2);
        // ...and gone after a window without it.
        let s = g.snapshot(DEFAULT_TOP, t0 + Duration::from_secs(2));
        assert!(!s.edges.iter().any(|e| e.from == "Peer#1"));
        assert!(!s.nodes.iter().any(|n| n.id == "Peer#1"));
        assert!(s.edges.iter().any(|e| e.from == "Peer#2"));
        assert_eq!(g.state().edges.len(), 1);
    }
}
