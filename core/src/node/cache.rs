//! A bounded set with expiry, used for the gossip seen-cache, unicast de-duplication and
//! late-response tolerance: one structure, one set of bounds. Its keyed fingerprints also
//! index tree gossip's pending requests (`wants`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::marker::PhantomData;
use std::time::Duration;

use crate::time::Timestamp;

/// Fingerprints keys with SipHash after a secret the node draws from its seed, so a peer
/// that chooses the keys (message ids it announces, say) cannot make them collide, and the
/// node's behaviour stays a function of its seed. The secret is absorbed before the key, in
/// place of SipHash's own key, which the standard library sets only from OS entropy.
/// Fingerprints are never stored or sent, so they may differ between Rust releases.
#[derive(Debug, Clone)]
pub(crate) struct KeyedHash([u64; 2]);

impl KeyedHash {
    /// A hasher keyed with `secret`.
    pub(crate) fn new(secret: [u64; 2]) -> Self {
        KeyedHash(secret)
    }
}

impl BuildHasher for KeyedHash {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        let mut h = DefaultHasher::new();
        h.write_u64(self.0[0]);
        h.write_u64(self.0[1]);
        h
    }
}

/// A fingerprint is already a uniformly random `u64`: a table keyed by fingerprints uses it
/// as its own hash.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is ever called (the keys are `u64`); fold anything else in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Remembers up to `capacity` keys, each for `ttl`; the oldest key is forgotten first when
/// full. Memory is bounded by `capacity` whatever is inserted.
///
/// A key is remembered as its 64-bit fingerprint under the node's secret ([`KeyedHash`]):
/// about 50 bytes an entry (table, its slack and the expiry queue) whatever the key, and one
/// hash and about one cache miss a lookup however many keys are held (the seen-cache of a
/// busy node holds tens of thousands, and every message received is looked up in it). Two
/// keys share a fingerprint with probability 2^-64, so a new key is taken for a remembered
/// one with probability below n × 2^-64 with n keys held (under 4 × 10^-15 for a full
/// 65,536-key seen-cache); without the secret, a peer cannot pick keys that collide.
#[derive(Debug)]
pub(crate) struct ExpiringSet<K: Hash> {
    map: HashMap<u64, Timestamp, BuildHasherDefault<Fingerprint>>,
    order: VecDeque<(Timestamp, u64)>,
    hash: KeyedHash,
    capacity: usize,
    ttl: Duration,
    keys: PhantomData<fn(&K)>,
}

impl<K: Hash> ExpiringSet<K> {
    /// An empty set; `hash` keys its fingerprints (see [`KeyedHash`]).
    pub(crate) fn new(capacity: usize, ttl: Duration, hash: KeyedHash) -> Self {
        ExpiringSet {
            map: HashMap::default(),
            order: VecDeque::new(),
            hash,
            capacity: capacity.max(1),
            ttl,
            keys: PhantomData,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether `key` is remembered and not expired at `now`.
    pub(crate) fn contains(&self, now: Timestamp, key: &K) -> bool {
        self.live(now, self.hash.hash_one(key))
    }

    fn live(&self, now: Timestamp, fingerprint: u64) -> bool {
        self.map.get(&fingerprint).is_some_and(|exp| *exp > now)
    }

    /// Remembers `key` until `now + ttl`. Returns false if it was already present.
    pub(crate) fn insert(&mut self, now: Timestamp, key: K) -> bool {
        self.expire(now);
        let fingerprint = self.hash.hash_one(&key);
        if self.live(now, fingerprint) {
            return false;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        let exp = now + self.ttl;
        self.map.insert(fingerprint, exp);
        self.order.push_back((exp, fingerprint));
        true
    }

    /// Forgets expired keys, and gives back the table's memory once it holds far fewer
    /// keys than it has room for (a burst's worth of keys expires as a block).
    pub(crate) fn expire(&mut self, now: Timestamp) {
        let mut expired = false;
        while let Some((exp, _)) = self.order.front() {
            if *exp > now {
                break;
            }
            let (exp, key) = self.order.pop_front().expect("front exists");
            if self.map.get(&key) == Some(&exp) {
                self.map.remove(&key);
            }
            expired = true;
        }
        if expired {
            shrink_if_sparse(&mut self.map, &mut self.order);
        }
    }
}

/// Gives back a fingerprint table's memory, and its expiry queue's, once the table holds far
/// fewer entries than it has room for: call it after expiring entries, since a burst's
/// worth of them expires as a block.
pub(crate) fn shrink_if_sparse<V, T>(
    map: &mut HashMap<u64, V, BuildHasherDefault<Fingerprint>>,
    order: &mut VecDeque<T>,
) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
        order.shrink_to(order.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let mut s = ExpiringSet::new(3, Duration::from_secs(10), KeyedHash::new([1, 2]));
        let t = Timestamp::from_secs(1);
        assert!(s.insert(t, 1));
        assert!(!s.insert(t, 1));
        for k in 2..10 {
            s.insert(t, k);
        }
        assert_eq!(s.len(), 3);
        assert!(s.contains(t, &9) && !s.contains(t, &1));
        assert!(!s.contains(Timestamp::from_secs(11), &9));
        s.expire(Timestamp::from_secs(11));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn memory_returns_once_a_burst_expires() {
        let mut s = ExpiringSet::new(100_000, Duration::from_secs(10), KeyedHash::new([1, 2]));
        let t = Timestamp::from_secs(1);
        for k in 0..50_000u64 {
            s.insert(t, k);
        }
        let burst = s.map.capacity();
        assert!(burst >= 50_000);
        assert!(
            s.insert(Timestamp::from_secs(20), 7),
            "expired keys are new again"
        );
        assert_eq!(s.len(), 1);
        assert!(s.map.capacity() < 100, "{} after {burst}", s.map.capacity());
    }

    #[test]
    fn the_table_is_keyed_by_the_secret() {
        let hash = |secret| KeyedHash::new(secret).hash_one([7u8; 32]);
        assert_eq!(hash([1, 2]), hash([1, 2]), "the same seed, the same table");
        assert_ne!(hash([1, 2]), hash([1, 3]), "a peer cannot know the layout");
    }
}
