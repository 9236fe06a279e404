//! A bounded set with expiry, used for the gossip seen-cache, tree gossip's requested ids,
//! unicast de-duplication and late-response tolerance: one structure, one set of bounds.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::time::Timestamp;

/// Remembers up to `capacity` keys, each for `ttl`; the oldest key is forgotten first when
/// full. Memory is bounded by `capacity` whatever is inserted.
#[derive(Debug)]
pub(crate) struct ExpiringSet<K: Ord + Clone> {
    map: BTreeMap<K, Timestamp>,
    order: VecDeque<(Timestamp, K)>,
    capacity: usize,
    ttl: Duration,
}

impl<K: Ord + Clone> ExpiringSet<K> {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        ExpiringSet {
            map: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether `key` is remembered and not expired at `now`.
    pub(crate) fn contains(&self, now: Timestamp, key: &K) -> bool {
        self.map.get(key).is_some_and(|exp| *exp > now)
    }

    /// Remembers `key` until `now + ttl`. Returns false if it was already present.
    pub(crate) fn insert(&mut self, now: Timestamp, key: K) -> bool {
        self.expire(now);
        if self.contains(now, &key) {
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
        self.map.insert(key.clone(), exp);
        self.order.push_back((exp, key));
        true
    }

    /// Forgets expired keys.
    pub(crate) fn expire(&mut self, now: Timestamp) {
        while let Some((exp, _)) = self.order.front() {
            if *exp > now {
                break;
            }
            let (exp, key) = self.order.pop_front().expect("front exists");
            if self.map.get(&key) == Some(&exp) {
                self.map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let mut s = ExpiringSet::new(3, Duration::from_secs(10));
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
}
