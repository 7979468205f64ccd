//! The swarm's one source of randomness: SplitMix64, as a stream and as a counter-based
//! hash. Everything random about a swarm (which peer plays which profile, which pieces a
//! partial peer holds, which blocks a liar spoils, when a choker chokes, and the data
//! itself) is drawn from here, keyed by the seed, so one seed gives one swarm on every
//! machine and with every version of the `rand` crate.

/// The golden-ratio increment of SplitMix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijective mix of 64 bits in which every input bit
/// flips about half of the output bits.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A key for a value derived from several numbers (the seed, a peer, a piece, an
/// offset): each part goes through the mix, so nearby inputs give unrelated keys.
pub fn key(parts: &[u64]) -> u64 {
    parts.iter().fold(GOLDEN, |acc, &part| {
        mix(acc ^ mix(part.wrapping_add(GOLDEN)))
    })
}

/// The `i`-th output of the SplitMix64 stream that starts from `state`, without walking
/// the stream: SplitMix64 is a counter passed through [`mix`], so any position can be
/// read directly. The synthetic data uses this to produce any block of any piece.
pub fn nth(state: u64, i: u64) -> u64 {
    mix(state.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// A small seeded generator for the choices made while planning and running a swarm.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// A number in `0..n` (0 when `n` is 0). Multiply-shift keeps the bias below
    /// `n / 2^64`, which no swarm can notice.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// A uniform number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_and_direct_access_agree() {
        let mut rng = SplitMix64::new(42);
        for i in 0..100 {
            assert_eq!(rng.next_u64(), nth(42, i));
        }
    }

    #[test]
    fn known_splitmix64_outputs_pin_the_algorithm() {
        // The first outputs of SplitMix64 seeded with 0, as in its reference code: if
        // these change, every swarm changes with them.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn below_stays_in_range_and_shuffle_is_a_permutation() {
        let mut rng = SplitMix64::new(7);
        assert!((0..1000).all(|_| rng.below(10) < 10));
        assert_eq!(rng.below(0), 0);
        let mut items: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }

    #[test]
    fn keys_differ_for_nearby_inputs() {
        assert_ne!(key(&[1, 2, 3]), key(&[1, 2, 4]));
        assert_ne!(key(&[1, 2]), key(&[2, 1]));
        assert_eq!(key(&[5, 6]), key(&[5, 6]));
    }
}
