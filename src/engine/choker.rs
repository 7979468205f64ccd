//! The choker: which peers we upload to. Plain data and arithmetic with no actors, sockets
//! or clock; the Coordinator owns the one `Choker` of a torrent, calls
//! [`Choker::rechoke`] every [`ChokerConfig::rechoke_every`] (and when a peer becomes
//! interested while a slot is free) with `now` and the state of every connected peer, and sends the
//! `choke` and `unchoke` messages the decision lists. It must not send anything itself,
//! measure rates or read the clock.
//!
//! Policy while downloading (tit-for-tat, as in BEP 3):
//! - the [`ChokerConfig::upload_slots`] interested peers that upload to us fastest get the
//!   regular slots, ties going to peers already unchoked so equal peers do not flap;
//! - one more interested peer gets the optimistic slot, drawn at random among the rest and
//!   kept for [`ChokerConfig::optimistic_every`]. Peers connected for less than
//!   [`NEW_PEER_AGE`] are [`NEW_PEER_WEIGHT`] times as likely to be drawn, because they
//!   have no piece to trade yet and the optimistic slot is how they get their first ones.
//!   When the optimistic peer leaves, loses interest or earns a regular slot by its own
//!   rate, a new one is drawn at once rather than leaving the slot empty.
//!
//! Policy while seeding: round-robin turns. Every rate that mattered while downloading is
//! meaningless now (peers send us nothing), and serving the fastest downloaders would let
//! them keep our upload for as long as they stay, so instead each interested peer gets a
//! turn of [`ChokerConfig::seed_turn`] in one of the `upload_slots`, and free slots go to
//! the peers that have waited longest (since their last turn ended, or since they
//! connected). With N interested peers and K slots, each waits at most about N / K turns.
//! There is no optimistic slot while seeding: the queue already serves new peers in order.
//!
//! Under both policies, peers that are not interested and peers that are seeds (which can
//! never want our data) stay choked. Unchoking a peer that wants nothing would only reserve
//! a slot it does not use; a peer that becomes interested is served at the next rechoke,
//! which the Coordinator may run at once. `upload_slots == 0` means no limit: every
//! interested peer is unchoked.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::PeerKey;

/// Peers connected for less than this count as new for the optimistic draw: long enough for
/// a peer to get and share its first pieces, short enough that the favour ends.
pub const NEW_PEER_AGE: Duration = Duration::from_secs(60);

/// How many times as likely a new peer is to be drawn for the optimistic slot as a peer
/// connected for longer, the factor the BitTorrent specification suggests.
pub const NEW_PEER_WEIGHT: u64 = 3;

/// How the choker shares our upload capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChokerConfig {
    /// Regular upload slots, not counting the optimistic one; 0 means every interested
    /// peer is unchoked. Few slots give each unchoked peer a useful rate.
    pub upload_slots: usize,
    /// How long an optimistic unchoke lasts before another peer is drawn: long enough for
    /// the peer to receive some data and start reciprocating so its rate can be measured.
    pub optimistic_every: Duration,
    /// How often the Coordinator should rechoke; rates are averaged over about this span,
    /// and choking more often than rates change would only make peers flap.
    pub rechoke_every: Duration,
    /// How long a seeding turn lasts before the slot goes to a peer that waited longer:
    /// long enough that a TCP connection reaches full speed, short enough that a queue of
    /// peers moves.
    pub seed_turn: Duration,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        Self {
            upload_slots: 4,
            optimistic_every: Duration::from_secs(30),
            rechoke_every: Duration::from_secs(10),
            seed_turn: Duration::from_secs(30),
        }
    }
}

/// What the choker needs to know about one connected peer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChokeCandidate {
    /// Which peer this is; the decision names peers by it.
    pub key: PeerKey,
    /// The peer told us it wants our data; only interested peers are unchoked.
    pub interested: bool,
    /// Bytes per second the peer sends us (recent average): the tit-for-tat rank while we
    /// download. Negative or non-finite values count as zero.
    pub download_rate: f64,
    /// How long the peer has been connected: new peers are favoured for the optimistic
    /// slot, and while seeding a peer never served has waited this long.
    pub connected_for: Duration,
    /// The peer has every piece, so it never needs ours and is never unchoked.
    pub is_seed: bool,
    /// We currently unchoke the peer; the decision lists only changes from this state, and
    /// rate ties are broken in favour of unchoked peers.
    pub currently_unchoked: bool,
}

/// The outcome of one rechoke.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RechokeDecision {
    /// Every peer that should be unchoked after this round: while downloading the regular
    /// slots fastest first, then the optimistic peer; while seeding the running turns in
    /// the order they began (turns begun together by key), then the turns begun now.
    pub unchoked: Vec<PeerKey>,
    /// Peers in `unchoked` that are currently choked: send them `unchoke`.
    pub unchoke: Vec<PeerKey>,
    /// Peers currently unchoked that are not in `unchoked`: send them `choke`.
    pub choke: Vec<PeerKey>,
    /// The peer holding the optimistic slot, if any (never while seeding or unlimited).
    pub optimistic: Option<PeerKey>,
}

/// Decides who we upload to; see the module documentation for the policy.
#[derive(Debug)]
pub struct Choker {
    /// Slot counts and timings.
    config: ChokerConfig,
    /// The optimistic draw; seeded by the caller so a run can be replayed.
    rng: SmallRng,
    /// The optimistic peer and when its slot began, so it is kept for `optimistic_every`.
    optimistic: Option<(PeerKey, Instant)>,
    /// When `rechoke` last ran, to tell the caller when the next one is due.
    last_rechoke: Option<Instant>,
    /// Seeding: peers holding a turn, and when it began.
    turns: HashMap<PeerKey, Instant>,
    /// Seeding: when each peer's last turn ended, the start of its wait for the next one.
    /// Peers never served have no entry and count as waiting since they connected.
    turn_ended: HashMap<PeerKey, Instant>,
}

impl Choker {
    /// A choker with `config` whose optimistic draws come from a generator seeded with
    /// `seed`.
    pub fn new(config: ChokerConfig, seed: u64) -> Self {
        Self {
            config,
            rng: SmallRng::seed_from_u64(seed),
            optimistic: None,
            last_rechoke: None,
            turns: HashMap::new(),
            turn_ended: HashMap::new(),
        }
    }

    /// The configuration this choker runs with.
    pub fn config(&self) -> &ChokerConfig {
        &self.config
    }

    /// The peer holding the optimistic slot after the last rechoke.
    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic.map(|(key, _)| key)
    }

    /// Whether `rechoke_every` has passed since the last rechoke (or none has run yet).
    pub fn is_rechoke_due(&self, now: Instant) -> bool {
        self.last_rechoke
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.rechoke_every)
    }

    /// Decides who is unchoked from `now` on. `peers` lists every connected peer (a peer
    /// missing from it is taken to have left); if a key appears twice only the first entry
    /// counts. `seeding` says we have every piece we want.
    pub fn rechoke(
        &mut self,
        peers: &[ChokeCandidate],
        seeding: bool,
        now: Instant,
    ) -> RechokeDecision {
        let mut seen = HashSet::with_capacity(peers.len());
        let peers: Vec<&ChokeCandidate> = peers.iter().filter(|p| seen.insert(p.key)).collect();
        let candidates: Vec<&ChokeCandidate> = peers
            .iter()
            .copied()
            .filter(|p| p.interested && !p.is_seed)
            .collect();

        // Forget the turns of peers that left, so the tables stay as large as the swarm.
        self.turns.retain(|key, _| seen.contains(key));
        self.turn_ended.retain(|key, _| seen.contains(key));

        let unchoked = if seeding {
            self.optimistic = None;
            self.seeding_round(&candidates, now)
        } else {
            // Seeding turns mean nothing to tit-for-tat; a later return to seeding (more
            // files selected, then completed) starts a fresh queue.
            self.turns.clear();
            self.turn_ended.clear();
            self.downloading_round(&candidates, now)
        };
        self.last_rechoke = Some(now);

        let unchoked_set: HashSet<PeerKey> = unchoked.iter().copied().collect();
        let was_unchoked: HashSet<PeerKey> = peers
            .iter()
            .filter(|p| p.currently_unchoked)
            .map(|p| p.key)
            .collect();
        RechokeDecision {
            unchoke: unchoked
                .iter()
                .copied()
                .filter(|key| !was_unchoked.contains(key))
                .collect(),
            choke: peers
                .iter()
                .filter(|p| p.currently_unchoked && !unchoked_set.contains(&p.key))
                .map(|p| p.key)
                .collect(),
            optimistic: self.optimistic(),
            unchoked,
        }
    }

    /// Tit-for-tat: the fastest uploaders to us, plus the optimistic peer.
    fn downloading_round(&mut self, candidates: &[&ChokeCandidate], now: Instant) -> Vec<PeerKey> {
        let slots = self.config.upload_slots;
        if slots == 0 {
            self.optimistic = None;
            return candidates.iter().map(|p| p.key).collect();
        }

        let mut ranked = candidates.to_vec();
        ranked.sort_by(|a, b| {
            clean_rate(b.download_rate)
                .total_cmp(&clean_rate(a.download_rate))
                .then(b.currently_unchoked.cmp(&a.currently_unchoked))
                .then(a.key.cmp(&b.key))
        });
        let rest = ranked.split_off(slots.min(ranked.len()));
        let mut unchoked: Vec<PeerKey> = ranked.iter().map(|p| p.key).collect();

        let kept = self.optimistic.filter(|&(key, since)| {
            now.saturating_duration_since(since) < self.config.optimistic_every
                && rest.iter().any(|p| p.key == key)
        });
        self.optimistic = match kept {
            Some(slot) => Some(slot),
            None => {
                let previous = self.optimistic.map(|(key, _)| key);
                self.draw_optimistic(&rest, previous).map(|key| (key, now))
            }
        };
        unchoked.extend(self.optimistic());
        unchoked
    }

    /// Draws the optimistic peer from `pool`, new peers weighted up. The `previous` holder
    /// is drawn again only when nobody else is eligible, so the slot really rotates.
    fn draw_optimistic(
        &mut self,
        pool: &[&ChokeCandidate],
        previous: Option<PeerKey>,
    ) -> Option<PeerKey> {
        let others: Vec<&ChokeCandidate> = pool
            .iter()
            .copied()
            .filter(|p| Some(p.key) != previous)
            .collect();
        let eligible = if others.is_empty() {
            pool.to_vec()
        } else {
            others
        };
        let total: u64 = eligible.iter().map(|p| optimistic_weight(p)).sum();
        if total == 0 {
            return None;
        }
        let mut ticket = self.rng.random_range(0..total);
        for peer in eligible {
            let weight = optimistic_weight(peer);
            if ticket < weight {
                return Some(peer.key);
            }
            ticket -= weight;
        }
        None
    }

    /// Round-robin turns while seeding.
    fn seeding_round(&mut self, candidates: &[&ChokeCandidate], now: Instant) -> Vec<PeerKey> {
        let slots = self.config.upload_slots;
        if slots == 0 {
            return candidates.iter().map(|p| p.key).collect();
        }

        // End the turns that are over, and those of peers that stopped being interested.
        let candidate_keys: HashSet<PeerKey> = candidates.iter().map(|p| p.key).collect();
        let turn = self.config.seed_turn;
        let ended: Vec<PeerKey> = self
            .turns
            .iter()
            .filter(|&(key, &began)| {
                !candidate_keys.contains(key) || now.saturating_duration_since(began) >= turn
            })
            .map(|(&key, _)| key)
            .collect();
        for key in ended {
            self.end_turn(key, now);
        }

        // Turns still running keep their slot. Should there be more than slots, the turns
        // begun most recently are kept, since they have the most of their time left.
        let mut running: Vec<(Instant, PeerKey)> = self
            .turns
            .iter()
            .map(|(&key, &began)| (began, key))
            .collect();
        running.sort_unstable();
        let excess = running.len().saturating_sub(slots);
        for (_, key) in running.drain(..excess) {
            self.end_turn(key, now);
        }
        let mut unchoked: Vec<PeerKey> = running.into_iter().map(|(_, key)| key).collect();

        // Free slots go to the peers that have waited longest.
        let mut waiting: Vec<(Duration, PeerKey)> = candidates
            .iter()
            .filter(|p| !self.turns.contains_key(&p.key))
            .map(|p| {
                let waited = self
                    .turn_ended
                    .get(&p.key)
                    .map_or(p.connected_for, |&ended| {
                        now.saturating_duration_since(ended)
                    });
                (waited, p.key)
            })
            .collect();
        waiting.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, key) in waiting
            .into_iter()
            .take(slots.saturating_sub(unchoked.len()))
        {
            self.turns.insert(key, now);
            self.turn_ended.remove(&key);
            unchoked.push(key);
        }
        unchoked
    }

    /// Ends `key`'s seeding turn at `now`; its wait for the next turn starts.
    fn end_turn(&mut self, key: PeerKey, now: Instant) {
        self.turns.remove(&key);
        self.turn_ended.insert(key, now);
    }
}

/// A rate usable for ranking: negative, NaN and infinite rates (a measurement gone wrong)
/// count as zero rather than winning or losing every comparison.
fn clean_rate(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        0.0
    }
}

/// Tickets a peer holds in the optimistic draw.
fn optimistic_weight(peer: &ChokeCandidate) -> u64 {
    if peer.connected_for < NEW_PEER_AGE {
        NEW_PEER_WEIGHT
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// An interested leecher connected long ago that sends us `rate` bytes per second.
    fn peer(key: u64, rate: f64) -> ChokeCandidate {
        ChokeCandidate {
            key: PeerKey(key),
            interested: true,
            download_rate: rate,
            connected_for: 600 * SECOND,
            is_seed: false,
            currently_unchoked: false,
        }
    }

    /// Records a decision in the peers' state, as the Coordinator would after sending it.
    fn apply(peers: &mut [ChokeCandidate], decision: &RechokeDecision) {
        for p in peers {
            p.currently_unchoked = decision.unchoked.contains(&p.key);
        }
    }

    fn keys(list: &[u64]) -> Vec<PeerKey> {
        list.iter().copied().map(PeerKey).collect()
    }

    fn sorted(mut list: Vec<PeerKey>) -> Vec<PeerKey> {
        list.sort();
        list
    }

    /// Four fast uploaders (1 to 4) and four that send nothing (5 to 8).
    fn four_fast_four_idle() -> Vec<ChokeCandidate> {
        (1..=8)
            .map(|k| peer(k, if k <= 4 { 1000.0 * k as f64 } else { 0.0 }))
            .collect()
    }

    #[test]
    fn the_fastest_uploaders_win_the_regular_slots() {
        let t0 = Instant::now();
        let mut choker = Choker::new(ChokerConfig::default(), 1);
        let peers: Vec<ChokeCandidate> = (1..=7).map(|k| peer(k, 100.0 * k as f64)).collect();
        let decision = choker.rechoke(&peers, false, t0);
        assert_eq!(
            decision.unchoked.get(..4),
            Some(keys(&[7, 6, 5, 4]).as_slice())
        );
        assert_eq!(decision.unchoked.len(), 5);
        let optimistic = decision.optimistic.map(|k| k.0);
        assert!(matches!(optimistic, Some(1..=3)), "{optimistic:?}");
        assert_eq!(decision.unchoked.last().copied(), decision.optimistic);
    }

    #[test]
    fn a_faster_peer_takes_the_slot_of_the_slowest_regular() {
        let t0 = Instant::now();
        let mut choker = Choker::new(ChokerConfig::default(), 1);
        let mut peers = four_fast_four_idle();
        let first = choker.rechoke(&peers, false, t0);
        apply(&mut peers, &first);
        let optimistic = first.optimistic;
        // Peer 8 starts uploading faster than anybody, and peer 1 is the slowest regular.
        if let Some(p) = peers.iter_mut().find(|p| p.key == PeerKey(8)) {
            p.download_rate = 10_000.0;
        }
        let second = choker.rechoke(&peers, false, t0 + 10 * SECOND);
        assert_eq!(
            second.unchoked.get(..4),
            Some(keys(&[8, 4, 3, 2]).as_slice())
        );
        // Peer 1 keeps an unchoke only if it is drawn for the optimistic slot, which can
        // happen only when peer 8 held that slot and left it for a regular one.
        assert!(second.choke.contains(&PeerKey(1)) || second.optimistic == Some(PeerKey(1)));
        if optimistic != Some(PeerKey(8)) {
            assert_eq!(second.optimistic, optimistic);
        }
    }

    #[test]
    fn the_optimistic_slot_rotates_after_its_period_and_not_before() {
        let t0 = Instant::now();
        let mut choker = Choker::new(ChokerConfig::default(), 7);
        let mut peers = four_fast_four_idle();
        let first = choker.rechoke(&peers, false, t0);
        apply(&mut peers, &first);
        let optimistic = first.optimistic;
        assert!(matches!(optimistic.map(|k| k.0), Some(5..=8)));

        for at in [
            10 * SECOND,
            20 * SECOND,
            29 * SECOND,
            30 * SECOND - Duration::from_nanos(1),
        ] {
            let decision = choker.rechoke(&peers, false, t0 + at);
            assert_eq!(decision.optimistic, optimistic, "rotated early at {at:?}");
            assert!(decision.unchoke.is_empty() && decision.choke.is_empty());
            apply(&mut peers, &decision);
        }

        let rotated = choker.rechoke(&peers, false, t0 + 30 * SECOND);
        assert_ne!(rotated.optimistic, optimistic);
        assert!(matches!(rotated.optimistic.map(|k| k.0), Some(5..=8)));
        assert_eq!(
            rotated.unchoke,
            rotated.optimistic.into_iter().collect::<Vec<_>>()
        );
        assert_eq!(rotated.choke, optimistic.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn new_peers_are_three_times_as_likely_to_get_the_optimistic_slot() {
        let t0 = Instant::now();
        let mut peers = four_fast_four_idle();
        // Peer 5 joined ten seconds ago; 6, 7 and 8 have been around for ten minutes.
        if let Some(p) = peers.iter_mut().find(|p| p.key == PeerKey(5)) {
            p.connected_for = 10 * SECOND;
        }
        let draws = 4000;
        let mut new_peer_drawn = 0;
        for seed in 0..draws {
            let mut choker = Choker::new(ChokerConfig::default(), seed);
            if choker.rechoke(&peers, false, t0).optimistic == Some(PeerKey(5)) {
                new_peer_drawn += 1;
            }
        }
        // Three tickets of six: one half, where an unweighted draw would give one quarter.
        let share = f64::from(new_peer_drawn) / draws as f64;
        assert!((0.45..0.55).contains(&share), "new peer drawn {share}");
    }

    #[test]
    fn the_same_seed_replays_the_same_decisions() {
        let t0 = Instant::now();
        let run = |seed| {
            let mut choker = Choker::new(ChokerConfig::default(), seed);
            let mut peers = four_fast_four_idle();
            let mut picks = Vec::new();
            for round in 0..30 {
                let decision = choker.rechoke(&peers, false, t0 + round * 10 * SECOND);
                apply(&mut peers, &decision);
                picks.push(decision.optimistic);
            }
            picks
        };
        assert_eq!(run(42), run(42));
    }

    #[test]
    fn a_new_optimistic_peer_is_drawn_at_once_when_the_holder_leaves_or_loses_interest() {
        let t0 = Instant::now();
        let mut choker = Choker::new(ChokerConfig::default(), 3);
        let mut peers = four_fast_four_idle();
        let first = choker.rechoke(&peers, false, t0);
        apply(&mut peers, &first);
        let Some(holder) = first.optimistic else {
            panic!("no optimistic peer among four idle candidates");
        };

        if let Some(p) = peers.iter_mut().find(|p| p.key == holder) {
            p.interested = false;
        }
        let second = choker.rechoke(&peers, false, t0 + SECOND);
        assert!(second.optimistic.is_some_and(|k| k != holder));
        assert_eq!(second.choke, vec![holder]);
        apply(&mut peers, &second);

        let Some(next) = second.optimistic else {
            panic!("no optimistic peer after the first lost interest");
        };
        peers.retain(|p| p.key != next);
        let third = choker.rechoke(&peers, false, t0 + 2 * SECOND);
        assert!(third.optimistic.is_some_and(|k| k != holder && k != next));
    }

    #[test]
    fn an_optimistic_peer_that_earns_a_regular_slot_frees_the_optimistic_one() {
        let t0 = Instant::now();
        let mut choker = Choker::new(ChokerConfig::default(), 5);
        let mut peers = four_fast_four_idle();
        let first = choker.rechoke(&peers, false, t0);
        apply(&mut peers, &first);
        let holder = first.optimistic;
        if let Some(p) = peers.iter_mut().find(|p| Some(p.key) == holder) {
            p.download_rate = 50_000.0;
        }
        let second = choker.rechoke(&peers, false, t0 + 10 * SECOND);
        assert_eq!(second.unchoked.first().copied(), holder);
        assert!(second.optimistic.is_some());
        assert_ne!(second.optimistic, holder);
        assert_eq!(second.unchoked.len(), 5);
    }

    #[test]
    fn peers_not_interested_and_seeds_are_never_unchoked_and_lose_their_slot() {
        let t0 = Instant::now();
        let mut peers = vec![peer(1, 500.0), peer(2, 900.0), peer(3, 800.0)];
        peers[1].interested = false;
        peers[1].currently_unchoked = true;
        peers[2].is_seed = true;
        peers[2].interested = true; // Contradictory, but a seed must still stay choked.
        peers[2].currently_unchoked = true;
        for seeding in [false, true] {
            let mut choker = Choker::new(ChokerConfig::default(), 9);
            let decision = choker.rechoke(&peers, seeding, t0);
            assert_eq!(decision.unchoked, keys(&[1]));
            assert_eq!(decision.unchoke, keys(&[1]));
            assert_eq!(decision.choke, keys(&[2, 3]));
        }
    }

    #[test]
    fn equal_rates_keep_the_peers_already_unchoked() {
        let t0 = Instant::now();
        let config = ChokerConfig {
            upload_slots: 2,
            ..ChokerConfig::default()
        };
        let mut choker = Choker::new(config, 11);
        let mut peers: Vec<ChokeCandidate> = (1..=6).map(|k| peer(k, 100.0)).collect();
        peers[4].currently_unchoked = true;
        peers[5].currently_unchoked = true;
        let decision = choker.rechoke(&peers, false, t0);
        assert_eq!(decision.unchoked.get(..2), Some(keys(&[5, 6]).as_slice()));
    }

    #[test]
    fn broken_rates_count_as_zero() {
        let t0 = Instant::now();
        let config = ChokerConfig {
            upload_slots: 1,
            ..ChokerConfig::default()
        };
        let peers = vec![
            peer(1, f64::NAN),
            peer(2, f64::INFINITY),
            peer(3, -5.0),
            peer(4, 1.0),
        ];
        let mut choker = Choker::new(config, 13);
        let decision = choker.rechoke(&peers, false, t0);
        assert_eq!(decision.unchoked.first().copied(), Some(PeerKey(4)));
    }

    #[test]
    fn a_key_listed_twice_counts_once() {
        let t0 = Instant::now();
        let config = ChokerConfig {
            upload_slots: 0,
            ..ChokerConfig::default()
        };
        let mut second_entry = peer(1, 0.0);
        second_entry.interested = false;
        let peers = vec![peer(1, 10.0), second_entry, peer(2, 5.0)];
        let mut choker = Choker::new(config, 17);
        let decision = choker.rechoke(&peers, false, t0);
        assert_eq!(decision.unchoked, keys(&[1, 2]));
    }

    #[test]
    fn zero_slots_unchoke_every_interested_peer() {
        let t0 = Instant::now();
        let config = ChokerConfig {
            upload_slots: 0,
            ..ChokerConfig::default()
        };
        let mut peers: Vec<ChokeCandidate> = (1..=50).map(|k| peer(k, k as f64)).collect();
        peers[9].interested = false;
        for seeding in [false, true] {
            let mut choker = Choker::new(config.clone(), 19);
            let decision = choker.rechoke(&peers, seeding, t0);
            let expected: Vec<PeerKey> = (1..=50).filter(|&k| k != 10).map(PeerKey).collect();
            assert_eq!(sorted(decision.unchoked), expected);
            assert_eq!(decision.optimistic, None);
        }
    }

    #[test]
    fn seeding_serves_every_interested_peer_in_turn() {
        let t0 = Instant::now();
        let config = ChokerConfig {
            upload_slots: 3,
            ..ChokerConfig::default()
        };
        let mut choker = Choker::new(config, 23);
        let mut peers: Vec<ChokeCandidate> = (1..=10).map(|k| peer(k, 0.0)).collect();
        let mut served = HashSet::new();
        // Ten peers, three slots, 30 s turns, a rechoke every 10 s: four turns, 12 rounds.
        for round in 0..12 {
            let decision = choker.rechoke(&peers, true, t0 + round * 10 * SECOND);
            assert_eq!(decision.unchoked.len(), 3);
            assert_eq!(decision.optimistic, None);
            served.extend(decision.unchoked.iter().copied());
            apply(&mut peers, &decision);
        }
        assert_eq!(served.len(), 10);
    }

    #[test]
    fn a_seeding_turn_lasts_its_full_time_however_often_rechoke_runs() {
        let t0 = Instant::now();
        let config = ChokerConfig {
            upload_slots: 2,
            ..ChokerConfig::default()
        };
        let mut choker = Choker::new(config, 29);
        let mut peers: Vec<ChokeCandidate> = (1..=5).map(|k| peer(k, 0.0)).collect();
        let first = choker.rechoke(&peers, true, t0);
        apply(&mut peers, &first);
        for second in 1..30 {
            peers.push(peer(100 + second, 0.0)); // Peers join and trigger rechokes.
            let decision = choker.rechoke(&peers, true, t0 + Duration::from_secs(second));
            assert_eq!(sorted(decision.unchoked), sorted(first.unchoked.clone()));
        }
        let next = choker.rechoke(&peers, true, t0 + 30 * SECOND);
        assert!(next.unchoked.iter().all(|k| !first.unchoked.contains(k)));
    }

    #[test]
    fn seeding_serves_the_longest_waiting_peer_first() {
        let t0 = Instant::now();
        let config = ChokerConfig {
            upload_slots: 1,
            ..ChokerConfig::default()
        };
        let mut choker = Choker::new(config, 31);
        let mut peers = vec![peer(1, 0.0), peer(2, 0.0), peer(3, 0.0)];
        peers[0].connected_for = 5 * SECOND;
        peers[1].connected_for = 50 * SECOND;
        peers[2].connected_for = 20 * SECOND;
        let decision = choker.rechoke(&peers, true, t0);
        assert_eq!(decision.unchoked, keys(&[2]));
    }

    #[test]
    fn a_rechoke_is_due_once_its_period_has_passed() {
        let t0 = Instant::now();
        let mut choker = Choker::new(ChokerConfig::default(), 37);
        assert!(choker.is_rechoke_due(t0));
        choker.rechoke(&[], false, t0);
        assert!(!choker.is_rechoke_due(t0 + 9 * SECOND));
        assert!(choker.is_rechoke_due(t0 + 10 * SECOND));
    }

    #[test]
    fn no_peers_means_an_empty_decision() {
        let mut choker = Choker::new(ChokerConfig::default(), 41);
        assert_eq!(
            choker.rechoke(&[], false, Instant::now()),
            RechokeDecision::default()
        );
    }

    fn arbitrary_rate() -> impl Strategy<Value = f64> {
        prop_oneof![
            8 => 0.0..1.0e6,
            1 => Just(0.0),
            1 => Just(f64::NAN),
            1 => Just(-1.0),
        ]
    }

    fn arbitrary_peer(key: u64) -> impl Strategy<Value = ChokeCandidate> {
        (
            any::<bool>(),
            arbitrary_rate(),
            0u64..200,
            prop::bool::weighted(0.1),
            any::<bool>(),
        )
            .prop_map(
                move |(interested, rate, secs, is_seed, unchoked)| ChokeCandidate {
                    key: PeerKey(key),
                    interested: interested || is_seed,
                    download_rate: rate,
                    connected_for: Duration::from_secs(secs),
                    is_seed,
                    currently_unchoked: unchoked,
                },
            )
    }

    fn arbitrary_swarm() -> impl Strategy<Value = Vec<ChokeCandidate>> {
        (0u64..30).prop_flat_map(|n| (0..n).map(arbitrary_peer).collect::<Vec<_>>())
    }

    proptest! {
        #[test]
        fn every_decision_respects_interest_slots_and_rank(
            swarm in arbitrary_swarm(),
            slots in 0usize..6,
            seeding in any::<bool>(),
            seed in any::<u64>(),
            steps in prop::collection::vec((0u64..40_000, any::<bool>()), 1..20),
        ) {
            let config = ChokerConfig { upload_slots: slots, ..ChokerConfig::default() };
            let mut choker = Choker::new(config, seed);
            let mut peers = swarm;
            let mut now = Instant::now();
            for (gap_ms, flip_interest) in steps {
                now += Duration::from_millis(gap_ms);
                if flip_interest {
                    if let Some(p) = peers.first_mut() {
                        p.interested = !p.interested;
                    }
                }
                let decision = choker.rechoke(&peers, seeding, now);

                let candidates: Vec<&ChokeCandidate> =
                    peers.iter().filter(|p| p.interested && !p.is_seed).collect();
                let unchoked: HashSet<PeerKey> = decision.unchoked.iter().copied().collect();
                prop_assert_eq!(unchoked.len(), decision.unchoked.len(), "listed twice");
                prop_assert!(candidates.iter().filter(|p| unchoked.contains(&p.key)).count()
                    == unchoked.len(), "unchoked a peer that is not an interested leecher");

                // No slot stays empty while an interested peer waits, and none is added.
                let capacity = match (slots, seeding) {
                    (0, _) => candidates.len(),
                    (k, true) => k,
                    (k, false) => k + 1,
                };
                prop_assert_eq!(unchoked.len(), candidates.len().min(capacity));

                // The regular slots hold the fastest uploaders.
                if slots > 0 && !seeding {
                    let slowest_regular = candidates
                        .iter()
                        .filter(|p| unchoked.contains(&p.key) && Some(p.key) != decision.optimistic)
                        .map(|p| clean_rate(p.download_rate))
                        .fold(f64::INFINITY, f64::min);
                    let fastest_choked = candidates
                        .iter()
                        .filter(|p| !unchoked.contains(&p.key) || Some(p.key) == decision.optimistic)
                        .map(|p| clean_rate(p.download_rate))
                        .fold(0.0, f64::max);
                    prop_assert!(candidates.len() <= slots || slowest_regular >= fastest_choked);
                }

                // The messages to send are exactly the changes.
                for p in &peers {
                    let now_unchoked = unchoked.contains(&p.key);
                    prop_assert_eq!(decision.unchoke.contains(&p.key), now_unchoked && !p.currently_unchoked);
                    prop_assert_eq!(decision.choke.contains(&p.key), !now_unchoked && p.currently_unchoked);
                }
                apply(&mut peers, &decision);
            }
        }

        #[test]
        fn seeding_serves_every_interested_peer_within_a_bounded_number_of_rounds(
            joined_secs in prop::collection::vec(0u64..1000, 1..25),
            slots in 1usize..6,
            seed in any::<u64>(),
        ) {
            let config = ChokerConfig { upload_slots: slots, ..ChokerConfig::default() };
            let turn_rounds = 3; // 30 s turns, a rechoke every 10 s.
            let mut choker = Choker::new(config, seed);
            let mut peers: Vec<ChokeCandidate> = joined_secs
                .iter()
                .zip(1..)
                .map(|(&secs, key)| ChokeCandidate {
                    connected_for: Duration::from_secs(secs),
                    ..peer(key, 0.0)
                })
                .collect();
            let t0 = Instant::now();
            let rounds = turn_rounds * peers.len().div_ceil(slots) + 1;
            let mut served = HashSet::new();
            for round in 0..rounds {
                let elapsed = Duration::from_secs(10 * round as u64);
                let decision = choker.rechoke(&peers, true, t0 + elapsed);
                served.extend(decision.unchoked.iter().copied());
                apply(&mut peers, &decision);
                for (p, &secs) in peers.iter_mut().zip(&joined_secs) {
                    p.connected_for = Duration::from_secs(secs) + elapsed + Duration::from_secs(10);
                }
            }
            prop_assert_eq!(served.len(), peers.len());
        }
    }
}
