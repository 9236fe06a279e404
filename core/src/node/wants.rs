//! Tree gossip: the announced messages a node asked for and still awaits, and who else
//! announced them.
//!
//! A node that is announced a message it lacks asks the announcer for it (`IWant`) and
//! ignores further announcements of it while the request is pending, so a burst of
//! announcements costs one request. But announcements name each message once per link, so
//! if the asked peer never answers (it went silent, or dropped the message), the ignored
//! announcements would not come again and the message would be lost to this node. So the
//! first other peer that announces a pending message is remembered, and when the request
//! times out without the message, that peer is asked next (as Plumtree's missing-message
//! timer does). Each retry waits `want_timeout` again, and the next announcer after it is
//! remembered the same way.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault};
use std::time::Duration;

use super::cache::{shrink_if_sparse, Fingerprint, KeyedHash};
use super::types::{ConnectionId, MessageId};
use crate::time::Timestamp;

/// One pending request.
#[derive(Debug, Clone, Copy)]
struct Want {
    id: MessageId,
    /// When the request counts as unanswered.
    deadline: Timestamp,
    /// The peer asked.
    asked: ConnectionId,
    /// The first other peer that announced the message since: asked next.
    next: Option<ConnectionId>,
}

/// What to do about an announced message the node lacks ([`PendingWants::announced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announced {
    /// Not pending: ask the announcer now.
    Ask,
    /// Already asked of another peer; this announcer is the one asked next if that request
    /// times out at the given instant (arm a retry then).
    Next(Timestamp),
    /// Already asked, and someone is already lined up to ask next (or this is the peer
    /// asked): nothing to do.
    Pending,
}

/// The requests pending at once, at most `capacity` (the oldest forgotten first), each as a
/// 64-bit fingerprint under the node's secret ([`KeyedHash`]) so an announcer that picks
/// ids cannot make them collide. About 100 bytes per request (entry, table slack and queue).
#[derive(Debug)]
pub(crate) struct PendingWants {
    map: HashMap<u64, Want, BuildHasherDefault<Fingerprint>>,
    /// Fingerprints by deadline, oldest first. A retry pushes its request again with the
    /// new deadline; the entry left behind is recognised as stale by its deadline.
    order: VecDeque<(Timestamp, u64)>,
    hash: KeyedHash,
    capacity: usize,
    timeout: Duration,
}

impl PendingWants {
    /// No pending requests; at most `capacity` at once, each awaited for `timeout`.
    pub(crate) fn new(capacity: usize, timeout: Duration, hash: KeyedHash) -> Self {
        PendingWants {
            map: HashMap::default(),
            order: VecDeque::new(),
            hash,
            capacity: capacity.max(1),
            timeout,
        }
    }

    /// Requests pending.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Connection `from` announced `id`, which the node lacks. Records a new request to
    /// `from` when none is pending ([`Announced::Ask`]: the caller sends the IWant), or
    /// lines `from` up as the peer to ask next.
    pub(crate) fn announced(
        &mut self,
        now: Timestamp,
        id: MessageId,
        from: ConnectionId,
    ) -> Announced {
        self.expire(now);
        let key = self.hash.hash_one(id);
        if let Some(w) = self.map.get_mut(&key) {
            if w.deadline > now {
                if w.asked == from || w.next.is_some() {
                    return Announced::Pending;
                }
                w.next = Some(from);
                return Announced::Next(w.deadline);
            }
            // Timed out at this very instant, its retry not yet run: asking this announcer
            // now is that retry.
        }
        // Full: the oldest request goes (a queue entry a retry left behind is skipped).
        while self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            let Some((deadline, old)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|w| w.deadline == deadline) {
                self.map.remove(&old);
            }
        }
        self.push(
            key,
            Want {
                id,
                deadline: now + self.timeout,
                asked: from,
                next: None,
            },
        );
        Announced::Ask
    }

    fn push(&mut self, key: u64, want: Want) {
        self.order.push_back((want.deadline, key));
        self.map.insert(key, want);
        // Retries leave stale entries behind; a queue much longer than the table sheds them.
        if self.order.len() > 2 * self.capacity {
            let map = &self.map;
            self.order
                .retain(|(deadline, k)| map.get(k).is_some_and(|w| w.deadline == *deadline));
        }
    }

    /// The requests that timed out by `now` with another announcer lined up: each is made
    /// again to that peer (returned as `(peer, id)`, in deadline order) and awaited another
    /// `timeout`. Requests for messages `have` says arrived are dropped, as are timed-out
    /// ones with no one to ask next (a later announcer is asked at once).
    pub(crate) fn retry_due(
        &mut self,
        now: Timestamp,
        mut have: impl FnMut(&MessageId) -> bool,
    ) -> Vec<(ConnectionId, MessageId)> {
        let mut retries = Vec::new();
        while let Some(&(deadline, key)) = self.order.front() {
            if deadline > now {
                break;
            }
            self.order.pop_front();
            let Some(w) = self.map.get(&key).copied() else {
                continue;
            };
            if w.deadline != deadline {
                continue;
            }
            self.map.remove(&key);
            let Some(next) = w.next else { continue };
            if have(&w.id) {
                continue;
            }
            retries.push((next, w.id));
            self.push(
                key,
                Want {
                    id: w.id,
                    deadline: now + self.timeout,
                    asked: next,
                    next: None,
                },
            );
        }
        retries
    }

    /// Forgets the request for `id` (its retry went nowhere): the next announcer is asked
    /// at once.
    pub(crate) fn forget(&mut self, id: &MessageId) {
        let key = self.hash.hash_one(id);
        self.map.remove(&key);
    }

    /// Forgets expired requests with no one lined up to ask next (those wait for
    /// [`PendingWants::retry_due`]), and gives back the table's memory after a burst.
    fn expire(&mut self, now: Timestamp) {
        let mut expired = false;
        while let Some(&(deadline, key)) = self.order.front() {
            if deadline > now {
                break;
            }
            match self.map.get(&key) {
                Some(w) if w.deadline == deadline && w.next.is_some() => break,
                Some(w) if w.deadline == deadline => {
                    self.map.remove(&key);
                }
                _ => {}
            }
            self.order.pop_front();
            expired = true;
        }
        if expired {
            shrink_if_sparse(&mut self.map, &mut self.order);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MessageId {
        MessageId([n; 32])
    }

    fn wants(capacity: usize) -> PendingWants {
        PendingWants::new(capacity, Duration::from_secs(1), KeyedHash::new([1, 2]))
    }

    #[test]
    fn the_first_other_announcer_is_asked_when_the_request_times_out() {
        let mut w = wants(16);
        let (a, b, c) = (ConnectionId(1), ConnectionId(2), ConnectionId(3));
        let t = Timestamp::from_secs(10);
        assert_eq!(w.announced(t, id(1), a), Announced::Ask);
        assert_eq!(
            w.announced(t, id(1), a),
            Announced::Pending,
            "the peer asked"
        );
        let deadline = t + Duration::from_secs(1);
        assert_eq!(
            w.announced(t + Duration::from_millis(100), id(1), b),
            Announced::Next(deadline)
        );
        assert_eq!(
            w.announced(t + Duration::from_millis(200), id(1), c),
            Announced::Pending,
            "one peer is lined up at a time"
        );
        assert!(w
            .retry_due(t + Duration::from_millis(999), |_| false)
            .is_empty());
        assert_eq!(w.retry_due(deadline, |_| false), vec![(b, id(1))]);
        // The retry is pending in turn: c, announcing again, is lined up behind it.
        assert_eq!(
            w.announced(deadline, id(1), c),
            Announced::Next(deadline + Duration::from_secs(1))
        );
        assert_eq!(
            w.retry_due(deadline + Duration::from_secs(1), |_| false),
            vec![(c, id(1))]
        );
        // No one lined up: the request lapses, and the next announcer is asked at once.
        assert!(w
            .retry_due(deadline + Duration::from_secs(2), |_| false)
            .is_empty());
        assert_eq!(w.len(), 0);
        assert_eq!(
            w.announced(deadline + Duration::from_secs(2), id(1), a),
            Announced::Ask
        );
    }

    #[test]
    fn a_message_that_arrived_is_not_asked_for_again() {
        let mut w = wants(16);
        let t = Timestamp::from_secs(10);
        w.announced(t, id(1), ConnectionId(1));
        w.announced(t, id(1), ConnectionId(2));
        assert!(w.retry_due(t + Duration::from_secs(1), |_| true).is_empty());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_forgotten_request_is_made_to_the_next_announcer_at_once() {
        let mut w = wants(16);
        let t = Timestamp::from_secs(10);
        w.announced(t, id(1), ConnectionId(1));
        w.forget(&id(1));
        assert_eq!(w.announced(t, id(1), ConnectionId(2)), Announced::Ask);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn the_oldest_live_request_makes_room_not_one_just_made_again() {
        let mut w = wants(2);
        let ms = |m: u64| Timestamp::from_secs(10) + Duration::from_millis(m);
        let [a, c, d] = [1, 3, 4].map(ConnectionId);
        w.announced(ms(0), id(1), a);
        w.announced(ms(100), id(2), a);
        // The request for id 1 went nowhere and is made again, to c: now the younger one.
        w.forget(&id(1));
        assert_eq!(w.announced(ms(200), id(1), c), Announced::Ask);
        // Full: id 2 is the oldest request, so it makes room.
        assert_eq!(w.announced(ms(300), id(3), a), Announced::Ask);
        assert_eq!(w.len(), 2);
        assert_eq!(
            w.announced(ms(300), id(1), d),
            Announced::Next(ms(1200)),
            "the request to c is still pending"
        );
        assert_eq!(w.announced(ms(300), id(2), d), Announced::Ask);
    }

    #[test]
    fn requests_are_bounded_and_lapse_without_an_announcer_lined_up() {
        let mut w = wants(3);
        let t = Timestamp::from_secs(10);
        for n in 0..10 {
            assert_eq!(w.announced(t, id(n), ConnectionId(1)), Announced::Ask);
            w.announced(t, id(n), ConnectionId(2));
        }
        assert_eq!(w.len(), 3, "the oldest are forgotten first");
        assert_eq!(
            w.announced(t, id(0), ConnectionId(3)),
            Announced::Ask,
            "a forgotten request is made again"
        );
        let later = t + Duration::from_secs(1);
        let retried: Vec<MessageId> = w
            .retry_due(later, |_| false)
            .into_iter()
            .map(|r| r.1)
            .collect();
        assert_eq!(retried, vec![id(8), id(9)], "id 0 had no one lined up");
        // Stale queue entries from retries never outgrow the bound.
        for round in 2..50 {
            let now = t + Duration::from_secs(round);
            let before = t + Duration::from_millis(round * 1000 - 500);
            for n in 8..10 {
                w.announced(before, id(n), ConnectionId(round));
            }
            w.retry_due(now, |_| false);
            assert!(w.order.len() <= 2 * 3 + 1, "{}", w.order.len());
        }
    }
}
