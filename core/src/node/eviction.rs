//! Choosing an inbound peer to evict when inbound slots are full, after Bitcoin Core's
//! `SelectNodeToEvict`: protect the peers an attacker finds hardest to imitate (lowest
//! latency, most recently useful, longest connected), then evict the youngest peer of the
//! netgroup with the most connections, so an attacker who floods us from one network range
//! evicts only itself.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::node::addrbook::NetGroup;
use crate::node::ConnectionId;
use crate::time::Timestamp;

/// An evictable inbound peer.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub id: ConnectionId,
    pub netgroup: NetGroup,
    pub connected_at: Timestamp,
    pub rtt: Option<Duration>,
    pub useful_at: Option<Timestamp>,
}

/// How many peers each rule protects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Protection {
    pub by_rtt: usize,
    pub by_usefulness: usize,
    pub by_uptime: usize,
}

/// Removes the `n` best candidates by `key` (smallest first) from `c`.
fn protect<K: Ord>(c: &mut Vec<Candidate>, n: usize, key: impl Fn(&Candidate) -> K) {
    c.sort_by(|a, b| key(a).cmp(&key(b)).then(a.id.cmp(&b.id)));
    let n = n.min(c.len());
    c.drain(..n);
}

/// The connection to evict, or `None` when every candidate is protected.
pub(crate) fn select(mut c: Vec<Candidate>, p: Protection) -> Option<ConnectionId> {
    // Unknown RTT sorts last: it protects nobody.
    protect(&mut c, p.by_rtt, |x| x.rtt.unwrap_or(Duration::MAX));
    protect(&mut c, p.by_usefulness, |x| {
        std::cmp::Reverse(x.useful_at.unwrap_or(Timestamp::ZERO))
    });
    protect(&mut c, p.by_uptime, |x| x.connected_at);
    if c.is_empty() {
        return None;
    }
    let mut groups: BTreeMap<NetGroup, Vec<&Candidate>> = BTreeMap::new();
    for x in &c {
        groups.entry(x.netgroup).or_default().push(x);
    }
    // The most crowded group; among equals, the one holding the youngest connection.
    let youngest = |g: &Vec<&Candidate>| g.iter().map(|x| x.connected_at).max();
    let (_, group) = groups.iter().max_by(|a, b| {
        a.1.len()
            .cmp(&b.1.len())
            .then(youngest(a.1).cmp(&youngest(b.1)))
    })?;
    group
        .iter()
        .max_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)))
        .map(|x| x.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::addrbook::netgroup;

    fn cand(id: u64, ip: &str, age: u64, rtt_ms: Option<u64>, useful: Option<u64>) -> Candidate {
        Candidate {
            id: ConnectionId(id),
            netgroup: netgroup(ip.parse().unwrap()),
            connected_at: Timestamp::from_secs(1000 - age),
            rtt: rtt_ms.map(Duration::from_millis),
            useful_at: useful.map(Timestamp::from_secs),
        }
    }

    #[test]
    fn protected_peers_survive_and_the_crowded_group_pays() {
        let p = Protection {
            by_rtt: 1,
            by_usefulness: 1,
            by_uptime: 1,
        };
        let c = vec![
            cand(1, "1.1.0.1", 10, Some(5), None),   // fastest: protected
            cand(2, "2.2.0.1", 10, None, Some(900)), // most useful: protected
            cand(3, "3.3.0.1", 500, None, None),     // oldest: protected
            cand(4, "9.9.0.1", 30, None, None),      // crowded group
            cand(5, "9.9.0.2", 20, None, None),      // crowded group, youngest
            cand(6, "4.4.0.1", 1, None, None),       // youngest overall but alone
        ];
        assert_eq!(select(c, p), Some(ConnectionId(5)));
    }

    #[test]
    fn nobody_is_evicted_when_all_are_protected() {
        let p = Protection {
            by_rtt: 8,
            by_usefulness: 4,
            by_uptime: 8,
        };
        let c = vec![cand(1, "1.1.0.1", 10, Some(5), None)];
        assert_eq!(select(c, p), None);
    }
}
