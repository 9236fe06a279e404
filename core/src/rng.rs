//! Injected randomness. Every random choice the core makes (Noise ephemeral keys, ping nonces,
//! jitter, peer selection) comes from a ChaCha20 generator derived from the 32-byte seed the
//! caller passes in, so a run is reproducible from its seed.
//!
//! **A fixed seed in production means key reuse**: adapters must seed from OS entropy. Only
//! tests and simulators should pass fixed seeds.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// A named, seeded ChaCha20 generator.
///
/// Sub-generators are derived with [`SeededRng::derive`], so adding a random draw in one
/// component (say, handshake keys) does not shift the stream another component sees.
#[derive(Clone, Debug)]
pub struct SeededRng {
    inner: ChaCha20Rng,
}

impl SeededRng {
    /// A generator whose whole output is determined by `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SeededRng {
            inner: ChaCha20Rng::from_seed(seed),
        }
    }

    /// A fresh seed for a child generator, mixed with a label so that two children derived
    /// from the same parent state for different purposes never share a stream.
    pub fn derive_seed(&mut self, label: &[u8]) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.inner.fill_bytes(&mut seed);
        mix_label(&mut seed, label);
        seed
    }

    /// A child generator for one component (see [`SeededRng::derive_seed`]).
    pub fn derive(&mut self, label: &[u8]) -> SeededRng {
        SeededRng::from_seed(self.derive_seed(label))
    }

    /// A uniformly random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniformly random `u32`.
    pub fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }

    /// Fills `dest` with random bytes.
    pub fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest)
    }

    /// A uniformly random integer in `0..bound` (`bound` must be non-zero; 0 yields 0).
    /// Uses rejection sampling so there is no modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % bound;
            }
        }
    }
}

/// The `index`-th `u64` of the ChaCha20 stream keyed by `seed`, without keeping a
/// generator: lets a long-lived object that draws rarely hold 32 bytes instead of a full
/// generator's buffer.
pub(crate) fn nth_u64(seed: &[u8; 32], index: u64) -> u64 {
    let mut r = ChaCha20Rng::from_seed(*seed);
    r.set_word_pos(u128::from(index) * 2);
    r.next_u64()
}

/// Two `u64`s determined by `seed` and `label` alone, for a secret a component needs once
/// at construction: drawing it from the node's generator instead would shift every random
/// choice made after it.
pub(crate) fn labelled_u64s(seed: &[u8; 32], label: &[u8]) -> [u64; 2] {
    let mut key = *seed;
    mix_label(&mut key, label);
    [nth_u64(&key, 0), nth_u64(&key, 1)]
}

/// XORs `label` into `seed`, so seeds made for different purposes from the same bytes differ.
fn mix_label(seed: &mut [u8; 32], label: &[u8]) {
    for (i, b) in label.iter().enumerate() {
        seed[i % 32] ^= b.rotate_left((i / 32) as u32);
    }
}

/// snow's entropy hook, backed by our seeded generator so handshakes are reproducible.
pub(crate) struct SnowRng(pub(crate) SeededRng);

impl snow::types::Random for SnowRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// The crypto resolver for snow: ring's ChaCha20-Poly1305 (the fast backend), snow's own
/// BLAKE2s (ring has none), the X25519 of [`crate::x25519`] (ring's takes no caller-supplied
/// key), and entropy from a seeded generator instead of the OS.
pub(crate) struct SeededResolver {
    seed: core::cell::RefCell<SeededRng>,
    ring: snow::resolvers::RingResolver,
    default: snow::resolvers::DefaultResolver,
}

impl SeededResolver {
    pub(crate) fn new(rng: SeededRng) -> Self {
        SeededResolver {
            seed: core::cell::RefCell::new(rng),
            ring: snow::resolvers::RingResolver,
            default: snow::resolvers::DefaultResolver,
        }
    }
}

impl snow::resolvers::CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        // snow asks once per handshake; each request gets its own derived stream.
        Some(Box::new(SnowRng(self.seed.borrow_mut().derive(b"snow"))))
    }

    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        match choice {
            snow::params::DHChoice::Curve25519 => Some(crate::x25519::dh()),
            _ => None,
        }
    }

    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        self.ring
            .resolve_hash(choice)
            .or_else(|| self.default.resolve_hash(choice))
    }

    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        self.ring
            .resolve_cipher(choice)
            .or_else(|| self.default.resolve_cipher(choice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_labels_separate_children() {
        let mut a = SeededRng::from_seed([7; 32]);
        let mut b = SeededRng::from_seed([7; 32]);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut ca = a.clone().derive(b"one");
        let mut cb = a.derive(b"two");
        assert_ne!(ca.next_u64(), cb.next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SeededRng::from_seed([1; 32]);
        let mut seen = [false; 5];
        for _ in 0..200 {
            let v = r.below(5);
            assert!(v < 5);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.below(0), 0);
    }
}
