//! The core's pseudo-random generators, the only ones in the crate. proto reads no entropy
//! source: the shell draws a seed from the OS, and the core derives Digest nonces and cnonces
//! (and the shell per-session seeds) from it with [`Rng`]; [`SplitMix64`] spreads seeds and
//! counters (session ids, backoff jitter, [`Rng`]'s own seeding).

/// Weyl increment of SplitMix64: the golden ratio in 64 bits.
pub const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64 (Steele, Lea and Flood, 2014): a counter stepped by [`GOLDEN_GAMMA`] through a
/// bijective mixer. Any seed is valid; neighbouring seeds and counters give unrelated values,
/// which is what seeding and jitter need. Not a cryptographic generator.
#[derive(Clone)]
pub struct SplitMix64(u64);

impl std::fmt::Debug for SplitMix64 {
    // The state predicts every later value: kept out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SplitMix64(..)")
    }
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix(self.0)
    }

    /// The `n`-th value (from 1) of the stream seeded with `seed`, without stepping through
    /// the ones before it.
    pub fn nth(seed: u64, n: u64) -> u64 {
        mix(seed.wrapping_add(n.wrapping_mul(GOLDEN_GAMMA)))
    }
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64* (Vigna, 2016): a few instructions per draw, period 2^64 − 1. Values are
/// unpredictable to an observer who does not know the seed, which is what nonces need; it is
/// not a cryptographic generator and never makes keys.
#[derive(Clone)]
pub struct Rng(u64);

impl std::fmt::Debug for Rng {
    // The state predicts every later nonce: kept out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rng(..)")
    }
}

impl Rng {
    /// A generator whose stream depends on every bit of `seed`: seeds that differ in one bit
    /// (or a counter) start unrelated streams. Any seed is valid, zero included.
    pub fn new(seed: u64) -> Rng {
        // One SplitMix64 step spreads the seed; xorshift's state must be non-zero.
        let z = SplitMix64::new(seed).next_u64();
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_seed_and_never_stick() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..4).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7), "deterministic for a seed");
        let (zero, one, two) = (draw(0), draw(1), draw(2));
        assert!(zero.iter().all(|v| *v != 0), "a zero seed does not stick at zero: {zero:x?}");
        assert_ne!(one, two);
        // Neighbouring seeds do not give neighbouring first values.
        assert!((one[0] ^ two[0]).count_ones() > 8, "{:x} {:x}", one[0], two[0]);
        let mut r = Rng::new(42);
        let v: std::collections::HashSet<u64> = (0..10_000).map(|_| r.next_u64()).collect();
        assert_eq!(v.len(), 10_000);
    }

    /// The reference values of SplitMix64 (seed 1234567, as in Vigna's splitmix64.c test
    /// vectors): the generator the old hand-written copies implemented.
    #[test]
    fn splitmix64_is_the_reference_generator() {
        let mut s = SplitMix64::new(1234567);
        let first: Vec<u64> = (0..3).map(|_| s.next_u64()).collect();
        assert_eq!(first, [6457827717110365317, 3203168211198807973, 9817491932198370423]);
        assert_eq!(SplitMix64::nth(1234567, 3), first[2]);
        // The copies this replaced: shared_viewer's `mix(seed, n)` and Backoff's inline step.
        let old_mix = |seed: u64, n: u64| {
            let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        for (seed, n) in [(0, 0), (0, 1), (u64::MAX, 7), (42, u64::MAX)] {
            assert_eq!(SplitMix64::nth(seed, n), old_mix(seed, n));
        }
    }
}
