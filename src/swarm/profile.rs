//! Behaviour profiles and the plan of a swarm: which peer plays which profile, and every
//! parameter of its behaviour, all drawn from the seed. Pure: no sockets, no clock.

use std::time::Duration;

use super::prng::{self, SplitMix64};
use crate::PeerId;

/// How a swarm peer behaves towards the leechers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Has every piece and serves as fast as loopback goes.
    Fast,
    /// Has every piece and serves each connection at a fixed rate of 16 to 64 KiB/s.
    Slow,
    /// Has every piece, but goes down for 3 to 10 s after 5 to 20 s up: it closes its
    /// connections and turns new ones away while down, then takes them again.
    Flaky,
    /// Has every piece and spoils 10 to 30 % of the blocks it sends (always the same
    /// blocks for the same peer), so the leechers' hash checks fail and must name it.
    Liar,
    /// Accepts connections and never says a word, not even the handshake.
    Silent,
    /// Starts with 10 to 60 % of the pieces and gains one more every 1 to 4 s, announcing
    /// each with `have`.
    Partial,
    /// Has every piece, and chokes for 1 to 5 s after every 2 to 10 s unchoked.
    Choker,
    /// Completes the handshake, has no piece, and only keeps the connection alive: the
    /// cost of a connection that is held but idle. Not part of the mix.
    Idle,
}

impl Profile {
    /// Every profile, in the order reports list them.
    pub const ALL: [Profile; 8] = [
        Profile::Fast,
        Profile::Slow,
        Profile::Flaky,
        Profile::Liar,
        Profile::Silent,
        Profile::Partial,
        Profile::Choker,
        Profile::Idle,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Fast => "fast",
            Profile::Slow => "slow",
            Profile::Flaky => "flaky",
            Profile::Liar => "liar",
            Profile::Silent => "silent",
            Profile::Partial => "partial",
            Profile::Choker => "choker",
            Profile::Idle => "idle",
        }
    }

    /// The profile of that name.
    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether this peer's data can complete a download: it answers and does not lie.
    pub fn is_honest_source(self) -> bool {
        !matches!(self, Profile::Liar | Profile::Silent | Profile::Idle)
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// `--profile mix`: parts per hundred of each profile. Slow peers are the bulk, as on a
/// public swarm; a tenth are fast seeds, a fifth hold only part of the torrent, and the
/// troublemakers (flaky, liar, silent, choker) are a fifth between them.
pub const MIX: [(Profile, u32); 7] = [
    (Profile::Fast, 10),
    (Profile::Slow, 40),
    (Profile::Flaky, 10),
    (Profile::Liar, 4),
    (Profile::Silent, 6),
    (Profile::Partial, 20),
    (Profile::Choker, 10),
];

/// How many peers play each profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileCounts([u32; 8]);

impl ProfileCounts {
    /// `total` peers in the [`MIX`] proportions. Rounding gives the leftover peers to
    /// the profiles with the largest remainders (earlier ones on ties), so the counts
    /// always add up to `total`.
    pub fn mix(total: u32) -> Self {
        let mut counts = [0u32; 8];
        let mut remainders = Vec::with_capacity(MIX.len());
        for (profile, parts) in MIX {
            let exact = u64::from(total) * u64::from(parts);
            counts[profile.slot()] = (exact / 100) as u32;
            remainders.push((exact % 100, profile.slot()));
        }
        let given: u32 = counts.iter().sum();
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, slot) in remainders.iter().take((total - given) as usize) {
            counts[slot] += 1;
        }
        Self(counts)
    }

    /// `total` peers all playing `profile`.
    pub fn only(profile: Profile, total: u32) -> Self {
        let mut counts = Self::default();
        counts.set(profile, total);
        counts
    }

    /// Peers playing `profile`.
    pub fn get(&self, profile: Profile) -> u32 {
        self.0[profile.slot()]
    }

    /// Sets how many peers play `profile`.
    pub fn set(&mut self, profile: Profile, n: u32) {
        self.0[profile.slot()] = n;
    }

    /// Peers in all.
    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }

    /// `fast 5, slow 20, ...`, profiles with no peer left out.
    pub fn describe(&self) -> String {
        Profile::ALL
            .into_iter()
            .filter(|&p| self.get(p) > 0)
            .map(|p| format!("{} {}", p.name(), self.get(p)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// When a flaky peer is up: a cycle of `up` then `down`, shifted by `shift` so flaky
/// peers do not all fail at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlakyCycle {
    pub up: Duration,
    pub down: Duration,
    pub shift: Duration,
}

impl FlakyCycle {
    /// `None` while up at `elapsed` (time since the swarm started), or how long until it
    /// is up again.
    pub fn down_for(&self, elapsed: Duration) -> Option<Duration> {
        let phase = self.phase(elapsed);
        (phase >= self.up).then(|| self.up + self.down - phase)
    }

    /// While up at `elapsed`: how long until it goes down.
    pub fn up_for(&self, elapsed: Duration) -> Option<Duration> {
        let phase = self.phase(elapsed);
        (phase < self.up).then(|| self.up - phase)
    }

    fn phase(&self, elapsed: Duration) -> Duration {
        let cycle = (self.up + self.down).as_millis().max(1) as u64;
        let at = (elapsed + self.shift).as_millis() as u64;
        Duration::from_millis(at % cycle)
    }
}

/// Which pieces a partial peer holds over time: the first `initial` of `order` at the
/// start, one more every `grow_every`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialPieces {
    /// Every piece, in the order the peer comes to hold them.
    pub order: Vec<u32>,
    /// `rank[piece]`: the piece's position in `order`.
    pub rank: Vec<u32>,
    /// How many it holds at the start.
    pub initial: u32,
    /// How often it gains one.
    pub grow_every: Duration,
}

impl PartialPieces {
    /// How many pieces it holds at `elapsed` since the swarm started.
    pub fn count_at(&self, elapsed: Duration) -> u32 {
        let grown = elapsed.as_millis() / self.grow_every.as_millis().max(1);
        (u64::from(self.initial) + grown as u64).min(self.order.len() as u64) as u32
    }

    /// Whether `piece` is among the first `count`.
    pub fn holds(&self, piece: u32, count: u32) -> bool {
        self.rank.get(piece as usize).is_some_and(|&r| r < count)
    }
}

/// One peer's part in the swarm, fixed before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    /// Its place in the swarm, 0-based.
    pub index: u32,
    pub profile: Profile,
    /// The id it sends in its handshake: `-SW0100-` and its index.
    pub peer_id: PeerId,
    /// Bytes per second per connection (slow peers).
    pub rate: Option<u64>,
    /// When it is down (flaky peers).
    pub flaky: Option<FlakyCycle>,
    /// Blocks in a thousand it spoils (liars; 0 otherwise).
    pub lie_permille: u32,
    /// What it holds (partial peers; the others hold every piece).
    pub partial: Option<PartialPieces>,
    /// A key for the choices it makes while running (a choker's timing).
    pub key: u64,
}

impl PeerPlan {
    /// Whether it spoils the block of `piece` at `offset`: the same answer every time,
    /// so a liar's lies are part of the swarm's plan.
    pub fn spoils(&self, piece: u32, offset: u32) -> bool {
        self.lie_permille > 0
            && prng::key(&[self.key, u64::from(piece), u64::from(offset)]) % 1000
                < u64::from(self.lie_permille)
    }

    /// A choker's next unchoked and choked spells on connection `connection`, turn
    /// `turn`: 2 to 10 s, then 1 to 5 s.
    pub fn choker_spells(&self, connection: u64, turn: u64) -> (Duration, Duration) {
        let mut rng = SplitMix64::new(prng::key(&[self.key, connection, turn]));
        (
            Duration::from_millis(rng.between(2_000, 10_000)),
            Duration::from_millis(rng.between(1_000, 5_000)),
        )
    }

    /// Pieces it holds at the start.
    pub fn pieces_at_start(&self, num_pieces: u32) -> u32 {
        self.partial.as_ref().map_or(num_pieces, |p| p.initial)
    }
}

/// Tags that keep the seed's uses apart.
const ASSIGN: u64 = 1;
const PEER: u64 = 2;
const COVER: u64 = 3;

/// Plans `counts` peers for a torrent of `num_pieces` pieces. Profiles are dealt out in
/// a shuffled order, then each peer draws its parameters from its own stream, so adding
/// a peer of one profile does not change the others' parameters beyond the shuffle.
///
/// If no peer that holds every piece is honest (only partial peers besides liars and
/// silent ones), pieces no partial peer starts with are added to the starting set of a
/// partial peer chosen by the seed, so the honest peers still cover the torrent.
pub fn plan_peers(seed: u64, counts: &ProfileCounts, num_pieces: u32) -> Vec<PeerPlan> {
    let mut profiles: Vec<Profile> = Profile::ALL
        .into_iter()
        .flat_map(|p| std::iter::repeat_n(p, counts.get(p) as usize))
        .collect();
    SplitMix64::new(prng::key(&[seed, ASSIGN])).shuffle(&mut profiles);
    let mut plans: Vec<PeerPlan> = profiles
        .into_iter()
        .enumerate()
        .map(|(index, profile)| plan_peer(seed, index as u32, profile, num_pieces))
        .collect();
    cover_with_partials(seed, &mut plans, num_pieces);
    plans
}

fn plan_peer(seed: u64, index: u32, profile: Profile, num_pieces: u32) -> PeerPlan {
    let key = prng::key(&[seed, PEER, u64::from(index)]);
    let mut rng = SplitMix64::new(key);
    let mut id = *b"-SW0100-000000000000";
    let digits = format!("{index:012}");
    id[8..].copy_from_slice(&digits.as_bytes()[digits.len() - 12..]);
    let mut plan = PeerPlan {
        index,
        profile,
        peer_id: PeerId(id),
        rate: None,
        flaky: None,
        lie_permille: 0,
        partial: None,
        key,
    };
    match profile {
        Profile::Fast | Profile::Silent | Profile::Choker | Profile::Idle => {}
        Profile::Slow => plan.rate = Some(rng.between(16, 64) * 1024),
        Profile::Flaky => {
            let up = Duration::from_millis(rng.between(5_000, 20_000));
            let down = Duration::from_millis(rng.between(3_000, 10_000));
            let shift = Duration::from_millis(rng.below((up + down).as_millis() as u64));
            plan.flaky = Some(FlakyCycle { up, down, shift });
        }
        Profile::Liar => plan.lie_permille = rng.between(100, 300) as u32,
        Profile::Partial => {
            let mut order: Vec<u32> = (0..num_pieces).collect();
            rng.shuffle(&mut order);
            let low = (num_pieces / 10).max(1);
            let high = (num_pieces * 6 / 10).max(low);
            let initial = (rng.between(u64::from(low), u64::from(high)) as u32).min(num_pieces);
            let grow_every = Duration::from_millis(rng.between(1_000, 4_000));
            plan.partial = Some(PartialPieces {
                rank: ranks(&order),
                order,
                initial,
                grow_every,
            });
        }
    }
    plan
}

fn ranks(order: &[u32]) -> Vec<u32> {
    let mut rank = vec![0; order.len()];
    for (at, &piece) in order.iter().enumerate() {
        rank[piece as usize] = at as u32;
    }
    rank
}

fn cover_with_partials(seed: u64, plans: &mut [PeerPlan], num_pieces: u32) {
    let whole_honest = plans
        .iter()
        .any(|p| p.profile.is_honest_source() && p.partial.is_none());
    let partials: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].partial.is_some())
        .collect();
    if whole_honest || partials.is_empty() {
        return;
    }
    let mut covered = vec![false; num_pieces as usize];
    for &i in &partials {
        if let Some(p) = &plans[i].partial {
            for &piece in &p.order[..p.initial as usize] {
                covered[piece as usize] = true;
            }
        }
    }
    for piece in 0..num_pieces {
        if covered[piece as usize] {
            continue;
        }
        let pick = prng::key(&[seed, COVER, u64::from(piece)]) % partials.len() as u64;
        if let Some(p) = &mut plans[partials[pick as usize]].partial {
            // Move the piece to the end of the starting set and grow the set by one, so
            // nothing it held before is lost.
            let at = p.rank[piece as usize] as usize;
            let edge = p.initial as usize;
            p.order.swap(at, edge);
            p.rank[p.order[at] as usize] = at as u32;
            p.rank[p.order[edge] as usize] = edge as u32;
            p.initial += 1;
        }
    }
}

/// Whether the honest peers (not liars, not silent) hold every piece at the start, so
/// the leechers can complete.
pub fn honest_peers_cover(plans: &[PeerPlan], num_pieces: u32) -> bool {
    let mut covered = vec![false; num_pieces as usize];
    for plan in plans.iter().filter(|p| p.profile.is_honest_source()) {
        match &plan.partial {
            None => return true,
            Some(p) => {
                for &piece in &p.order[..p.initial as usize] {
                    covered[piece as usize] = true;
                }
            }
        }
    }
    covered.iter().all(|&c| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_for_any_total() {
        for total in [0, 1, 7, 50, 99, 500, 1000, 2001] {
            assert_eq!(ProfileCounts::mix(total).total(), total, "{total}");
        }
        let fifty = ProfileCounts::mix(50);
        assert_eq!(
            Profile::ALL.map(|p| fifty.get(p)),
            [5, 20, 5, 2, 3, 10, 5, 0],
            "the 50-peer mix the CI test runs"
        );
        assert_eq!(MIX.iter().map(|&(_, parts)| parts).sum::<u32>(), 100);
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        let counts = ProfileCounts::mix(60);
        let a = plan_peers(7, &counts, 300);
        assert_eq!(a, plan_peers(7, &counts, 300));
        let b = plan_peers(8, &counts, 300);
        let profiles = |plans: &[PeerPlan]| plans.iter().map(|p| p.profile).collect::<Vec<_>>();
        assert_ne!(profiles(&a), profiles(&b));
        for profile in Profile::ALL {
            let n = a.iter().filter(|p| p.profile == profile).count() as u32;
            assert_eq!(n, counts.get(profile));
        }
    }

    #[test]
    fn parameters_stay_within_the_documented_ranges() {
        let plans = plan_peers(1, &ProfileCounts::mix(400), 1000);
        for p in &plans {
            match p.profile {
                Profile::Slow => assert!((16 * 1024..=64 * 1024).contains(&p.rate.unwrap())),
                Profile::Liar => assert!((100..=300).contains(&p.lie_permille)),
                Profile::Flaky => {
                    let f = p.flaky.unwrap();
                    assert!(f.up >= Duration::from_secs(5) && f.up <= Duration::from_secs(20));
                    assert!(f.down >= Duration::from_secs(3) && f.down <= Duration::from_secs(10));
                }
                Profile::Partial => {
                    let part = p.partial.as_ref().unwrap();
                    assert!((100..=600).contains(&part.initial));
                    assert_eq!(ranks(&part.order), part.rank);
                }
                _ => assert!(p.rate.is_none() && p.partial.is_none() && p.lie_permille == 0),
            }
        }
        assert!(honest_peers_cover(&plans, 1000));
    }

    #[test]
    fn a_liar_spoils_a_fixed_share_of_blocks() {
        let plans = plan_peers(3, &ProfileCounts::only(Profile::Liar, 1), 10);
        let liar = &plans[0];
        let spoiled = (0..10_000u32).filter(|&i| liar.spoils(i / 32, i % 32 * 16384));
        let share = spoiled.count() as f64 / 10_000.0;
        let want = f64::from(liar.lie_permille) / 1000.0;
        assert!((share - want).abs() < 0.03, "{share} vs {want}");
        assert_eq!(liar.spoils(4, 0), liar.spoils(4, 0));
        let honest = &plan_peers(3, &ProfileCounts::only(Profile::Fast, 1), 10)[0];
        assert!(!(0..1000).any(|i| honest.spoils(i, 0)));
    }

    #[test]
    fn partial_peers_alone_are_made_to_cover_every_piece() {
        let mut counts = ProfileCounts::only(Profile::Partial, 3);
        counts.set(Profile::Liar, 2);
        for seed in 0..20 {
            let plans = plan_peers(seed, &counts, 500);
            assert!(honest_peers_cover(&plans, 500), "seed {seed}");
            for p in plans.iter().filter_map(|p| p.partial.as_ref()) {
                assert_eq!(ranks(&p.order), p.rank);
            }
        }
        let liars_only = plan_peers(1, &ProfileCounts::only(Profile::Liar, 4), 10);
        assert!(!honest_peers_cover(&liars_only, 10));
    }

    #[test]
    fn a_partial_peer_grows_and_a_flaky_one_cycles() {
        let p = PartialPieces {
            order: vec![2, 0, 1],
            rank: ranks(&[2, 0, 1]),
            initial: 1,
            grow_every: Duration::from_secs(2),
        };
        assert_eq!(p.count_at(Duration::ZERO), 1);
        assert!(p.holds(2, 1) && !p.holds(0, 1));
        assert_eq!(p.count_at(Duration::from_secs(3)), 2);
        assert_eq!(p.count_at(Duration::from_secs(60)), 3);

        let f = FlakyCycle {
            up: Duration::from_secs(5),
            down: Duration::from_secs(3),
            shift: Duration::from_secs(1),
        };
        assert_eq!(f.up_for(Duration::ZERO), Some(Duration::from_secs(4)));
        assert_eq!(
            f.down_for(Duration::from_secs(4)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            f.up_for(Duration::from_secs(7)),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn profile_names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(Profile::from_name(p.name()), Some(p));
        }
        assert_eq!(Profile::from_name("mix"), None);
    }
}
