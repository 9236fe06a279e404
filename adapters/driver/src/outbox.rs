//! The direct-message path from the handle to the loop ([`crate::NetworkHandle::send`]).
//!
//! A handle call puts its message in the peer's queue here under one short lock; the loop is
//! told only when the outbox goes from idle to busy, and then moves every peer's whole queue
//! into the node at once ([`Node::send_queued`]), which packs the messages into shared
//! frames. So one call per message costs a lock and a push, not a channel message, a reply
//! channel and a loop wake-up each.
//!
//! Bounds and back-pressure: a peer's queue here holds at most the connection's
//! `max_queued_bytes` of payload and `max_queued_messages` messages (the node's own queue
//! holds as much again). A sender to a full queue waits until the loop has moved messages
//! on, which happens as the socket drains. Only connected peers have a queue: sending to
//! any other peer fails at once, and a peer's queue is dropped (its messages counted in
//! [`NetworkStats::sends_dropped`]) when it disconnects.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use silver_p2p_core::message::{AppKind, Message};
use silver_p2p_core::node::{CommandError, Node};
use silver_p2p_core::{PeerId, Timestamp};

use crate::handle::HandleError;

/// One connected peer's messages on their way to the node.
#[derive(Default)]
struct PeerQueue {
    items: VecDeque<(AppKind, Bytes)>,
    bytes: usize,
    /// Senders waiting for room.
    waiters: Vec<Waker>,
}

impl PeerQueue {
    fn wake_all(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

struct State {
    /// The connected peers, sorted: 32 bytes each, where a map entry would cost a tree node
    /// per peer in a node with few peers, and most peers are never sent a direct message.
    connected: Vec<PeerId>,
    /// A queue per connected peer that has been sent a direct message.
    queues: BTreeMap<PeerId, PeerQueue>,
    /// The loop has been told there is work and has not taken it yet.
    nudged: bool,
    /// The loop is gone: every send fails.
    closed: bool,
}

/// The queues between the handles and the loop. Shared by both; see the module docs.
pub(crate) struct Outbox {
    state: Mutex<State>,
    max_message_size: usize,
    max_bytes: usize,
    max_messages: usize,
}

/// A message accepted into the outbox.
pub(crate) enum Pushed {
    /// The loop already knows there is work.
    Queued,
    /// The loop must be told (the outbox was idle).
    NudgeLoop,
}

impl Outbox {
    /// An outbox with the node's message size limit and per-connection queue bounds.
    pub(crate) fn new(node: &Node) -> Arc<Self> {
        let c = &node.config().connection;
        Arc::new(Outbox {
            state: Mutex::new(State {
                connected: Vec::new(),
                queues: BTreeMap::new(),
                nudged: false,
                closed: false,
            }),
            max_message_size: c.max_message_size,
            max_bytes: c.max_queued_bytes,
            max_messages: c.max_queued_messages,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed in a way that
        // matters (every change is a push, a pop or a flag), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks what can be checked before queueing: the message's size.
    pub(crate) fn check(&self, kind: AppKind, len: usize) -> Result<(), HandleError> {
        let len = Message::direct_len(kind, len);
        if len > self.max_message_size {
            return Err(CommandError::TooLarge {
                len,
                max: self.max_message_size,
            }
            .into());
        }
        Ok(())
    }

    /// Queues `item` for `peer` (taking it out of the option), or registers the task to be
    /// woken when the peer's queue has room.
    pub(crate) fn poll_push(
        &self,
        cx: &mut Context<'_>,
        peer: &PeerId,
        item: &mut Option<(AppKind, Bytes)>,
    ) -> Poll<Result<Pushed, HandleError>> {
        let mut s = self.lock();
        if s.closed {
            return Poll::Ready(Err(HandleError::Stopped));
        }
        if s.connected.binary_search(peer).is_err() {
            return Poll::Ready(Err(CommandError::UnknownPeer(*peer).into()));
        }
        let q = s.queues.entry(*peer).or_default();
        let Some((kind, data)) = item.take() else {
            return Poll::Ready(Ok(Pushed::Queued));
        };
        // An empty queue takes any message that passed `check`, so no message waits forever.
        let full = q.bytes + data.len() > self.max_bytes || q.items.len() >= self.max_messages;
        if full && !q.items.is_empty() {
            if !q.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                q.waiters.push(cx.waker().clone());
            }
            *item = Some((kind, data));
            return Poll::Pending;
        }
        q.bytes += data.len();
        q.items.push_back((kind, data));
        Poll::Ready(Ok(if std::mem::replace(&mut s.nudged, true) {
            Pushed::Queued
        } else {
            Pushed::NudgeLoop
        }))
    }

    /// Lets senders queue messages for a peer that just connected.
    pub(crate) fn connected(&self, peer: PeerId) {
        let mut s = self.lock();
        if let Err(at) = s.connected.binary_search(&peer) {
            s.connected.insert(at, peer);
        }
    }

    /// Drops a disconnected peer's queue; returns how many messages it held. Its waiting
    /// senders wake up and fail.
    pub(crate) fn disconnected(&self, peer: &PeerId) -> u64 {
        let mut s = self.lock();
        if let Ok(at) = s.connected.binary_search(peer) {
            s.connected.remove(at);
        }
        let q = s.queues.remove(peer);
        q.map_or(0, |mut q| {
            q.wake_all();
            q.items.len() as u64
        })
    }

    /// Fails every later send and wakes every waiting sender; returns how many messages
    /// were still queued.
    pub(crate) fn close(&self) -> u64 {
        let mut s = self.lock();
        s.closed = true;
        s.connected.clear();
        let mut dropped = 0;
        for q in s.queues.values_mut() {
            dropped += q.items.len() as u64;
            q.items.clear();
            q.bytes = 0;
            q.wake_all();
        }
        dropped
    }

    /// Moves every queued message the node takes into it. Returns whether some had to stay
    /// (a connection's queue was full: call again after bytes were written) and how many
    /// messages were dropped (the node refused them).
    pub(crate) fn drain_into(&self, node: &mut Node, now: Timestamp) -> Drained {
        let mut s = self.lock();
        s.nudged = false;
        let mut out = Drained::default();
        for (peer, q) in s.queues.iter_mut() {
            if q.items.is_empty() {
                continue;
            }
            match node.send_queued(now, peer, &mut q.items) {
                Ok(done) => {
                    q.bytes -= done.bytes;
                    out.dropped += done.refused as u64;
                }
                Err(_) => {
                    // The node has no connection for it (it is closing, or the node is
                    // shutting down): the disconnect event that follows drops the queue.
                    out.dropped += q.items.len() as u64;
                    q.items.clear();
                    q.bytes = 0;
                }
            }
            out.blocked |= !q.items.is_empty();
            if !q.waiters.is_empty()
                && q.bytes < self.max_bytes
                && q.items.len() < self.max_messages
            {
                q.wake_all();
            }
        }
        out
    }
}

/// What [`Outbox::drain_into`] left behind.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Drained {
    /// Some messages stay queued because their connection's queue is full.
    pub blocked: bool,
    /// Messages the node refused.
    pub dropped: u64,
}
