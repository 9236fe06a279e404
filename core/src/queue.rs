//! The bounded, prioritised outbound queue of one connection, and coalescing of queued
//! messages into frames.
//!
//! Three classes leave in strict order inside every frame: control (Ping, Pong, Ack, Goodbye,
//! GetPeers, GetBlock, GetTransaction, NotFound), then data (everything else up to the chunk size), then chunks of large
//! messages. A frame is filled with as many messages as fit, so many small messages share one
//! encryption and one packet, and a Pong queued behind an 8 MiB block leaves in the very next
//! frame.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::chunk::OutboundChunks;
use crate::message::{EncodedMessage, Message, MessageKind, Priority};

/// A queued message: as given, or already encoded (shared between connections).
#[derive(Debug)]
pub(crate) enum Outgoing {
    Message(Message),
    Encoded(EncodedMessage),
    /// Encoded, and the owner wants to learn (by this token) when it has been written.
    Tracked(EncodedMessage, u64),
}

impl Outgoing {
    fn kind(&self) -> MessageKind {
        match self {
            Outgoing::Message(m) => m.kind(),
            Outgoing::Encoded(e) | Outgoing::Tracked(e, _) => e.kind(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Outgoing::Message(m) => m.encode(out),
            Outgoing::Encoded(e) | Outgoing::Tracked(e, _) => out.extend_from_slice(e.bytes()),
        }
    }

    fn token(&self) -> Option<u64> {
        match self {
            Outgoing::Tracked(_, t) => Some(*t),
            _ => None,
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueFull {
    Bytes,
    Messages,
}

/// Limits of the queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub max_bytes: usize,
    pub max_messages: usize,
    pub chunk_len: usize,
}

#[derive(Debug, Default)]
pub(crate) struct OutboundQueue {
    control: VecDeque<(Outgoing, usize)>,
    data: VecDeque<(Outgoing, usize)>,
    bulk: VecDeque<(OutboundChunks, Option<u64>)>,
    /// Encoded bytes queued (chunk headers excluded).
    bytes: usize,
    messages: usize,
    /// Encoded bytes of queued replies (Pong, Response, NotFound, Peers, Ack): work the peer
    /// asked of us. Used for inbound back-pressure.
    reply_bytes: usize,
    next_chunked_id: u64,
}

/// Whether a kind answers something the peer sent.
pub(crate) fn is_reply(kind: MessageKind) -> bool {
    matches!(
        kind,
        MessageKind::Pong
            | MessageKind::Response
            | MessageKind::NotFound
            | MessageKind::Peers
            | MessageKind::Ack
    )
}

impl OutboundQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn messages(&self) -> usize {
        self.messages
    }

    pub(crate) fn reply_bytes(&self) -> usize {
        self.reply_bytes
    }

    /// Whether a message whose encoding is `len` bytes fits within `limits` now (what
    /// [`OutboundQueue::push`] would refuse otherwise).
    pub(crate) fn room_for(&self, len: usize, limits: &QueueLimits) -> Result<(), QueueFull> {
        if self.messages >= limits.max_messages {
            return Err(QueueFull::Messages);
        }
        if self.bytes + len > limits.max_bytes {
            return Err(QueueFull::Bytes);
        }
        Ok(())
    }

    /// Queues `msg` whose encoding is `len` bytes.
    pub(crate) fn push(
        &mut self,
        msg: Outgoing,
        len: usize,
        limits: &QueueLimits,
    ) -> Result<(), QueueFull> {
        self.room_for(len, limits)?;
        self.bytes += len;
        self.messages += 1;
        let reply = is_reply(msg.kind());
        if reply {
            self.reply_bytes += len;
        }
        if len > limits.chunk_len {
            // Large: encode once now, cut into chunks as frames have room. Replies sent as
            // chunks stop counting as reply backlog here; their bytes are in `bytes`.
            if reply {
                self.reply_bytes -= len;
            }
            let id = self.next_chunked_id;
            self.next_chunked_id = self.next_chunked_id.wrapping_add(1);
            let token = msg.token();
            let chunks = match msg {
                Outgoing::Encoded(e) | Outgoing::Tracked(e, _) => {
                    OutboundChunks::new(id, e.bytes().clone(), limits.chunk_len)
                }
                Outgoing::Message(m) => match m.split_tail() {
                    Some((head, body)) => {
                        OutboundChunks::from_parts(id, Bytes::from(head), body, limits.chunk_len)
                    }
                    None => OutboundChunks::new(id, Bytes::from(m.to_bytes()), limits.chunk_len),
                },
            };
            self.bulk.push_back((chunks, token));
        } else {
            match msg.kind().priority() {
                Priority::Control => self.control.push_back((msg, len)),
                Priority::Data => self.data.push_back((msg, len)),
            }
        }
        Ok(())
    }

    fn take_small(&mut self, len: usize, kind: MessageKind) {
        self.bytes -= len;
        self.messages -= 1;
        if is_reply(kind) {
            self.reply_bytes -= len;
        }
    }

    /// Appends messages to `frame` (a frame's plaintext, possibly after other bytes already
    /// in the buffer) while its total length stays within `max` bytes.
    /// Returns the number of whole messages completed (a message sent as chunks counts when
    /// its last chunk is framed).
    /// Tokens of tracked messages completed in this frame are appended to `tokens`.
    pub(crate) fn fill_frame(
        &mut self,
        frame: &mut Vec<u8>,
        max: usize,
        tokens: &mut Vec<u64>,
    ) -> u64 {
        let mut completed = 0;
        for class in 0..2 {
            loop {
                let q = if class == 0 {
                    &mut self.control
                } else {
                    &mut self.data
                };
                let Some((_, len)) = q.front() else { break };
                let len = *len;
                if frame.len() + len > max {
                    // Keep order within a class: the rest waits for the next frame.
                    return completed;
                }
                let (msg, _) = q.pop_front().expect("front exists");
                msg.encode(frame);
                self.take_small(len, msg.kind());
                tokens.extend(msg.token());
                completed += 1;
            }
        }
        while let Some((large, token)) = self.bulk.front_mut() {
            let Some(chunk) = large.peek() else {
                self.bulk.pop_front();
                continue;
            };
            let data_len = chunk.data.len();
            let msg = Message::Chunk(chunk);
            if frame.len() + msg.encoded_len() > max {
                break;
            }
            msg.encode(frame);
            large.advance();
            self.bytes -= data_len;
            if large.is_done() {
                tokens.extend(*token);
                self.bulk.pop_front();
                self.messages -= 1;
                completed += 1;
            }
        }
        completed
    }

    /// Frees the queues' spare capacity once they are empty (idle connections hold nothing).
    pub(crate) fn release_memory(&mut self) {
        if self.messages == 0 {
            self.control = VecDeque::new();
            self.data = VecDeque::new();
            self.bulk = VecDeque::new();
        }
    }

    /// Drops everything queued; returns how many messages were dropped.
    pub(crate) fn clear(&mut self) -> u64 {
        let n = self.messages as u64;
        *self = OutboundQueue {
            next_chunked_id: self.next_chunked_id,
            ..Default::default()
        };
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueueLimits = QueueLimits {
        max_bytes: 100_000,
        max_messages: 10,
        chunk_len: 1000,
    };

    fn tx(n: usize) -> Message {
        Message::Transaction {
            data: Bytes::from(vec![1; n]),
        }
    }

    #[test]
    fn control_overtakes_data_and_chunks_come_last() {
        let mut q = OutboundQueue::default();
        for m in [tx(5000), tx(10), Message::Ping { nonce: 1 }] {
            let len = m.encoded_len();
            q.push(Outgoing::Message(m), len, &LIMITS).unwrap();
        }
        let mut frame = Vec::new();
        let done = q.fill_frame(&mut frame, 1020, &mut Vec::new());
        assert_eq!(done, 2);
        let frame = Bytes::from(frame);
        let msgs = crate::message::decode_frame_to_vec(&frame).unwrap();
        assert_eq!(msgs[0].kind(), MessageKind::Ping);
        assert_eq!(msgs[1].kind(), MessageKind::Transaction);
        assert!(msgs.len() == 2, "the 1000-byte chunk does not fit the rest");
        // The large message completes across later frames.
        let mut total = 0;
        while !q.is_empty() {
            let mut f = Vec::new();
            total += q.fill_frame(&mut f, 1020, &mut Vec::new());
            assert!(!f.is_empty());
        }
        assert_eq!(total, 1);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn bounds_are_enforced_and_reply_bytes_tracked() {
        let mut q = OutboundQueue::default();
        let m = tx(200_000);
        let len = m.encoded_len();
        assert_eq!(
            q.push(Outgoing::Message(m), len, &LIMITS),
            Err(QueueFull::Bytes)
        );
        for i in 0..10 {
            let m = Message::Pong { nonce: i };
            let len = m.encoded_len();
            q.push(Outgoing::Message(m), len, &LIMITS).unwrap();
        }
        assert!(q.reply_bytes() > 0);
        let m = Message::Ping { nonce: 0 };
        assert_eq!(
            q.push(Outgoing::Message(m), 2, &LIMITS),
            Err(QueueFull::Messages)
        );
        assert_eq!(q.clear(), 10);
        assert_eq!((q.bytes(), q.reply_bytes(), q.messages()), (0, 0, 0));
    }
}
