//! The node's deadlines in one ordered set, with the earliest one kept beside it.
//!
//! An embedding loop asks for the next deadline after every input (`Node::poll_timeout`),
//! far more often than the set changes; the copy answers without walking the set, which in
//! a simulation of thousands of nodes is a cache miss or two per question.

use std::collections::BTreeSet;

use crate::time::Timestamp;

/// Deadlines ordered by time, then by `T` (so equal times fire in a fixed order).
#[derive(Debug)]
pub(crate) struct TimerQueue<T: Ord + Copy> {
    set: BTreeSet<(Timestamp, T)>,
    /// The time of `set`'s first entry, kept by every method that changes the set.
    earliest: Option<Timestamp>,
}

impl<T: Ord + Copy> TimerQueue<T> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        TimerQueue {
            set: BTreeSet::new(),
            earliest: None,
        }
    }

    /// The earliest deadline, if any.
    pub(crate) fn earliest(&self) -> Option<Timestamp> {
        self.earliest
    }

    /// Adds `timer` at `at`; false if exactly that entry was already there.
    pub(crate) fn insert(&mut self, (at, timer): (Timestamp, T)) -> bool {
        if self.earliest.is_none_or(|e| at < e) {
            self.earliest = Some(at);
        }
        self.set.insert((at, timer))
    }

    /// Removes `entry`; false if it was not there.
    pub(crate) fn remove(&mut self, entry: &(Timestamp, T)) -> bool {
        let removed = self.set.remove(entry);
        if removed && self.earliest == Some(entry.0) {
            self.sync();
        }
        removed
    }

    /// Removes and returns the earliest entry if it is due (at or before `now`). Entries
    /// inserted meanwhile are seen by the next call, so a loop over it also fires what its
    /// handlers schedule for `now`.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, T)> {
        if self.earliest.is_none_or(|e| e > now) {
            return None;
        }
        let first = self.set.pop_first();
        self.sync();
        first
    }

    /// Keeps only the entries `keep` accepts.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&(Timestamp, T)) -> bool) {
        self.set.retain(keep);
        self.sync();
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) {
        self.set.clear();
        self.earliest = None;
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// Re-reads the earliest time from the set, after a change that may have taken it.
    fn sync(&mut self) {
        self.earliest = self.set.first().map(|(t, _)| *t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is inserted, removed, popped, filtered or cleared, the kept earliest
        /// time is the set's first, and due entries come out in order.
        #[test]
        fn earliest_is_always_the_sets_first(ops in proptest::collection::vec((0u8..12, 0u64..50, 0u8..4), 0..200)) {
            let mut q = TimerQueue::new();
            let mut model = BTreeSet::new();
            for (op, t, k) in ops {
                let at = Timestamp::from_millis(t);
                match op {
                    0..=4 => prop_assert_eq!(q.insert((at, k)), model.insert((at, k))),
                    5 | 6 => prop_assert_eq!(q.remove(&(at, k)), model.remove(&(at, k))),
                    7 | 8 => {
                        let due = model.first().copied().filter(|(f, _)| *f <= at);
                        if due.is_some() {
                            model.pop_first();
                        }
                        prop_assert_eq!(q.pop_due(at), due);
                    }
                    9 | 10 => {
                        q.retain(|(_, x)| *x != k);
                        model.retain(|(_, x)| *x != k);
                    }
                    _ => {
                        q.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(q.earliest(), model.first().map(|(t, _)| *t));
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
