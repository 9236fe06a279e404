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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use silver_p2p_core::message::{AppKind, Message};
use silver_p2p_core::node::{CommandError, Node};
use silver_p2p_core::{PeerId, Timestamp};

use crate::handle::HandleError;

/// The size of the buffers that messages sent from a borrowed slice are copied into.
/// Many messages share one allocation, which is freed once the last of them was encoded.
const SLICE_BUFFER_BYTES: usize = 16 * 1024;

/// The largest spare deque a peer's queue keeps between drains, in messages: beyond it the
/// memory goes back to the allocator rather than sit with an idle peer.
const MAX_SPARE_MESSAGES: usize = 1024;

/// A message's payload as a sender hands it over.
pub(crate) enum Payload<'a> {
    /// Already owned by the caller: queued as it is.
    Owned(Bytes),
    /// Borrowed from the caller: copied into the peer's shared buffer when queued.
    Borrowed(&'a [u8]),
}

impl Payload<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Payload::Owned(b) => b.len(),
            Payload::Borrowed(s) => s.len(),
        }
    }
}

/// One connected peer's messages on their way to the node.
#[derive(Default)]
struct PeerQueue {
    items: VecDeque<(AppKind, Bytes)>,
    /// Payload bytes of `items` and of the batch the loop is moving into the node.
    bytes: usize,
    /// Messages the loop took out to move into the node, still counted against the bounds.
    in_transit: usize,
    /// An empty deque with capacity, swapped in for `items` while the loop moves a batch,
    /// so a busy queue does not grow a new buffer from nothing on every drain.
    spare: VecDeque<(AppKind, Bytes)>,
    /// Senders waiting for room.
    waiters: Vec<Waker>,
    /// Where borrowed payloads are copied to: each message is split off as its own `Bytes`
    /// over the same allocation, so a burst of small messages costs one allocation per
    /// [`SLICE_BUFFER_BYTES`] instead of one each (and no free on the loop's thread each).
    /// Dropped whenever the queue empties, so an idle peer keeps no buffer.
    slices: BytesMut,
}

impl PeerQueue {
    fn take(&mut self, payload: Payload<'_>) -> Bytes {
        match payload {
            Payload::Owned(b) => b,
            Payload::Borrowed(s) => {
                if self.slices.capacity() < s.len() {
                    // Reuses the buffer when every message split off it is gone already.
                    self.slices.reserve(SLICE_BUFFER_BYTES.max(s.len()));
                }
                self.slices.extend_from_slice(s);
                self.slices.split().freeze()
            }
        }
    }

    fn wake_all(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

struct State {
    /// The connected peers, sorted, each with its queue once it has been sent a direct
    /// message: 40 bytes per peer without one (most peers are never sent any), and one
    /// search per send.
    peers: Vec<(PeerId, Option<Box<PeerQueue>>)>,
    /// The loop has been told there is work and has not taken it yet.
    nudged: bool,
    /// The loop is gone: every send fails.
    closed: bool,
}

impl State {
    /// Where `peer` is in `peers`, or where it would go.
    fn find(&self, peer: &PeerId) -> Result<usize, usize> {
        self.peers.binary_search_by(|(p, _)| p.cmp(peer))
    }
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
                peers: Vec::new(),
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
        item: &mut Option<(AppKind, Payload<'_>)>,
    ) -> Poll<Result<Pushed, HandleError>> {
        let mut s = self.lock();
        if s.closed {
            return Poll::Ready(Err(HandleError::Stopped));
        }
        let Ok(at) = s.find(peer) else {
            return Poll::Ready(Err(CommandError::UnknownPeer(*peer).into()));
        };
        let q = s.peers[at].1.get_or_insert_with(Box::default);
        let Some((kind, data)) = item.take() else {
            return Poll::Ready(Ok(Pushed::Queued));
        };
        // An empty queue takes any message that passed `check`, so no message waits forever.
        let held = q.items.len() + q.in_transit;
        let full = q.bytes + data.len() > self.max_bytes || held >= self.max_messages;
        if full && held > 0 {
            if !q.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                q.waiters.push(cx.waker().clone());
            }
            *item = Some((kind, data));
            return Poll::Pending;
        }
        q.bytes += data.len();
        let data = q.take(data);
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
        if let Err(at) = s.find(&peer) {
            s.peers.insert(at, (peer, None));
        }
    }

    /// Drops a disconnected peer's queue; returns how many messages it held. Its waiting
    /// senders wake up and fail.
    pub(crate) fn disconnected(&self, peer: &PeerId) -> u64 {
        let mut s = self.lock();
        let Ok(at) = s.find(peer) else {
            return 0;
        };
        let (_, q) = s.peers.remove(at);
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
        let mut dropped = 0;
        for (_, q) in s.peers.drain(..) {
            if let Some(mut q) = q {
                dropped += q.items.len() as u64;
                q.wake_all();
            }
        }
        dropped
    }

    /// Moves every queued message the node takes into it. Returns whether some had to stay
    /// (a connection's queue was full: call again after bytes were written) and how many
    /// messages were dropped (the node refused them).
    ///
    /// The node's work (which builds and encrypts frames) runs without the lock, so senders
    /// keep queueing meanwhile; the batches it takes stay counted against the bounds until
    /// the node has them.
    pub(crate) fn drain_into(&self, node: &mut Node, now: Timestamp) -> Drained {
        let mut batches = Vec::new();
        {
            let mut s = self.lock();
            s.nudged = false;
            for (peer, q) in s.peers.iter_mut() {
                let Some(q) = q.as_mut().filter(|q| !q.items.is_empty()) else {
                    continue;
                };
                let spare = std::mem::take(&mut q.spare);
                let batch = std::mem::replace(&mut q.items, spare);
                q.in_transit = batch.len();
                batches.push((*peer, batch));
            }
        }
        let mut results = Vec::with_capacity(batches.len());
        for (peer, batch) in &mut batches {
            results.push(node.send_queued(now, peer, batch));
        }
        let mut out = Drained::default();
        let mut s = self.lock();
        for ((peer, mut batch), result) in batches.into_iter().zip(results) {
            // Only this loop removes queues, and it is here: the queue is still present.
            let Some(q) = s.find(&peer).ok().and_then(|at| s.peers[at].1.as_mut()) else {
                continue;
            };
            q.in_transit = 0;
            match result {
                Ok(done) => {
                    q.bytes = q.bytes.saturating_sub(done.bytes);
                    out.dropped += done.refused as u64;
                }
                Err(_) => {
                    // The node has no connection for it (it is closing, or the node is
                    // shutting down): the disconnect event that follows drops the queue.
                    out.dropped += batch.len() as u64;
                    q.bytes = q
                        .bytes
                        .saturating_sub(batch.iter().map(|(_, d)| d.len()).sum::<usize>());
                    batch.clear();
                }
            }
            if batch.is_empty() {
                if batch.capacity() <= MAX_SPARE_MESSAGES {
                    q.spare = batch;
                }
            } else {
                // What the node could not take goes back in front of what came meanwhile.
                batch.extend(q.items.drain(..));
                q.spare = std::mem::replace(&mut q.items, batch);
                if q.spare.capacity() > MAX_SPARE_MESSAGES {
                    q.spare = VecDeque::new();
                }
            }
            if q.items.is_empty() {
                q.slices = BytesMut::new();
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
