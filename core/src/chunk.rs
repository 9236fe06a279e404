//! Chunking: a message whose encoding is larger than the chunk size travels as a sequence of
//! [`Chunk`] messages that interleave with other traffic, and is reassembled by the receiver.
//!
//! Sender rules: one id per large message, unique among the sender's unfinished messages on
//! the connection; every chunk but the last carries exactly `chunk_len` bytes, the last the
//! rest (1..=`chunk_len`); `count = ceil(total_len / chunk_len)`; chunks of one message go in
//! index order (chunks of different messages may interleave).
//!
//! Receiver checks, each a protocol violation with its own reason: the declared total is at
//! most the configured maximum message size (checked on the first chunk, before anything is
//! buffered); at most K messages are partial at once; index 0 starts a message and its id must
//! not be partial already; later chunks continue a partial message in order with the same count
//! and total; lengths add up exactly; a partial message completes within the timeout.
//! Memory held is exactly the chunk bytes received (never the declared total).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::message::Chunk;
use crate::time::Timestamp;

/// Why a chunk was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The declared total exceeds the maximum message size.
    #[error("declared message size {declared} exceeds the maximum {max}")]
    TotalTooLarge {
        /// Declared total.
        declared: u64,
        /// Configured maximum.
        max: usize,
    },
    /// Starting another partial message would exceed the limit.
    #[error("more than {max} partial messages")]
    TooManyPartials {
        /// Configured maximum.
        max: usize,
    },
    /// Index 0 for a message id that is already partial.
    #[error("message {0} restarted while partial")]
    DuplicateStart(u64),
    /// A continuation chunk for a message id that is not partial.
    #[error("chunk {index} of unknown message {message_id}")]
    UnknownMessage {
        /// The id.
        message_id: u64,
        /// The chunk's index.
        index: u32,
    },
    /// An index at or beyond the count.
    #[error("chunk index {index} beyond count {count}")]
    IndexBeyondCount {
        /// The index.
        index: u32,
        /// The count.
        count: u32,
    },
    /// A chunk out of order.
    #[error("chunk index {got}, expected {expected}")]
    OutOfOrder {
        /// The next index due.
        expected: u32,
        /// The index received.
        got: u32,
    },
    /// The count or total differs from the first chunk's, or does not match the chunk length.
    #[error("chunk count or total inconsistent with the first chunk")]
    Inconsistent,
    /// An empty chunk.
    #[error("empty chunk")]
    Empty,
    /// A chunk whose length is not what its position requires.
    #[error("chunk length {got}, expected {expected}")]
    WrongLength {
        /// The length required.
        expected: u64,
        /// The length received.
        got: u64,
    },
    /// A partial message did not complete in time.
    #[error("message {0} did not complete within the reassembly timeout")]
    Timeout(u64),
}

/// Limits the [`Reassembler`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct ReassemblyLimits {
    /// Largest total a chunked message may declare.
    pub max_message_size: usize,
    /// Most messages partial at once.
    pub max_partials: usize,
    /// Time from a message's first chunk to its last.
    pub timeout: Duration,
}

#[derive(Debug)]
struct Partial {
    count: u32,
    total: u64,
    chunk_len: u64,
    next_index: u32,
    received: u64,
    pieces: Vec<Bytes>,
    deadline: Timestamp,
}

/// Inbound reassembly of chunked messages for one connection.
#[derive(Debug, Default)]
pub struct Reassembler {
    partials: BTreeMap<u64, Partial>,
    buffered: usize,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of chunk data held for partial messages.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Messages currently partial.
    pub fn partial_count(&self) -> usize {
        self.partials.len()
    }

    /// Accepts one chunk. Returns the whole encoded message when this chunk completes it.
    /// On error the message's partial state is dropped (the caller closes the connection).
    pub fn push(
        &mut self,
        now: Timestamp,
        limits: &ReassemblyLimits,
        chunk: Chunk,
    ) -> Result<Option<Bytes>, ChunkError> {
        let len = chunk.data.len() as u64;
        if len == 0 {
            self.remove(chunk.message_id);
            return Err(ChunkError::Empty);
        }
        if chunk.index >= chunk.count {
            self.remove(chunk.message_id);
            return Err(ChunkError::IndexBeyondCount {
                index: chunk.index,
                count: chunk.count,
            });
        }
        if chunk.index == 0 {
            if chunk.total_len > limits.max_message_size as u64 {
                return Err(ChunkError::TotalTooLarge {
                    declared: chunk.total_len,
                    max: limits.max_message_size,
                });
            }
            if self.partials.contains_key(&chunk.message_id) {
                return Err(ChunkError::DuplicateStart(chunk.message_id));
            }
            // The count must be exactly what this chunk length implies for the total.
            if chunk.total_len.div_ceil(len) != u64::from(chunk.count) || len > chunk.total_len {
                return Err(ChunkError::Inconsistent);
            }
            if chunk.count == 1 {
                return Ok(Some(chunk.data));
            }
            if self.partials.len() >= limits.max_partials {
                return Err(ChunkError::TooManyPartials {
                    max: limits.max_partials,
                });
            }
            self.buffered += len as usize;
            self.partials.insert(
                chunk.message_id,
                Partial {
                    count: chunk.count,
                    total: chunk.total_len,
                    chunk_len: len,
                    next_index: 1,
                    received: len,
                    pieces: vec![chunk.data],
                    deadline: now + limits.timeout,
                },
            );
            return Ok(None);
        }
        let Some(p) = self.partials.get_mut(&chunk.message_id) else {
            return Err(ChunkError::UnknownMessage {
                message_id: chunk.message_id,
                index: chunk.index,
            });
        };
        let result = (|| {
            if chunk.count != p.count || chunk.total_len != p.total {
                return Err(ChunkError::Inconsistent);
            }
            if chunk.index != p.next_index {
                return Err(ChunkError::OutOfOrder {
                    expected: p.next_index,
                    got: chunk.index,
                });
            }
            let last = chunk.index + 1 == p.count;
            let expected = if last {
                p.total - p.received
            } else {
                p.chunk_len
            };
            if len != expected {
                return Err(ChunkError::WrongLength { expected, got: len });
            }
            Ok(last)
        })();
        match result {
            Err(e) => {
                self.remove(chunk.message_id);
                Err(e)
            }
            Ok(last) => {
                p.received += len;
                p.next_index += 1;
                p.pieces.push(chunk.data);
                self.buffered += len as usize;
                if !last {
                    return Ok(None);
                }
                let p = self.remove(chunk.message_id).expect("present");
                let mut whole = BytesMut::with_capacity(p.total as usize);
                for piece in &p.pieces {
                    whole.extend_from_slice(piece);
                }
                Ok(Some(whole.freeze()))
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<Partial> {
        let p = self.partials.remove(&id)?;
        self.buffered -= p.received as usize;
        Some(p)
    }

    /// The earliest reassembly deadline.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.partials.values().map(|p| p.deadline).min()
    }

    /// Drops partial messages whose deadline passed; returns the first such id as an error.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<(), ChunkError> {
        let expired: Vec<u64> = self
            .partials
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.remove(*id);
        }
        match expired.first() {
            Some(id) => Err(ChunkError::Timeout(*id)),
            None => Ok(()),
        }
    }
}

/// A large outbound message being cut into chunks.
#[derive(Debug)]
pub struct OutboundChunks {
    message_id: u64,
    encoded: Bytes,
    body: Bytes,
    chunk_len: usize,
    next_index: u32,
    count: u32,
}

impl OutboundChunks {
    /// Prepares `encoded` (one whole encoded message) for sending as chunks of `chunk_len`.
    pub fn new(message_id: u64, encoded: Bytes, chunk_len: usize) -> Self {
        let chunk_len = chunk_len.max(1);
        let count = encoded.len().div_ceil(chunk_len).max(1) as u32;
        OutboundChunks {
            message_id,
            encoded,
            body: Bytes::new(),
            chunk_len,
            next_index: 0,
            count,
        }
    }

    /// Like [`OutboundChunks::new`] for an encoding given as `head` followed by `body`.
    pub fn from_parts(message_id: u64, head: Bytes, body: Bytes, chunk_len: usize) -> Self {
        let mut c = Self::new(message_id, head, chunk_len);
        let total = c.encoded.len() + body.len();
        c.count = total.div_ceil(c.chunk_len).max(1) as u32;
        c.body = body;
        c
    }

    fn total(&self) -> usize {
        self.encoded.len() + self.body.len()
    }

    fn range(&self, start: usize, end: usize) -> Bytes {
        let h = self.encoded.len();
        if end <= h {
            self.encoded.slice(start..end)
        } else if start >= h {
            self.body.slice(start - h..end - h)
        } else {
            let mut v = Vec::with_capacity(end - start);
            v.extend_from_slice(&self.encoded[start..]);
            v.extend_from_slice(&self.body[..end - h]);
            Bytes::from(v)
        }
    }

    /// Bytes not yet cut into chunks.
    pub fn remaining_bytes(&self) -> usize {
        self.total() - (self.next_index as usize * self.chunk_len).min(self.total())
    }

    /// Whether every chunk was taken.
    pub fn is_done(&self) -> bool {
        self.next_index >= self.count
    }

    /// The next chunk, without taking it.
    pub fn peek(&self) -> Option<Chunk> {
        if self.is_done() {
            return None;
        }
        let start = self.next_index as usize * self.chunk_len;
        let end = (start + self.chunk_len).min(self.total());
        Some(Chunk {
            message_id: self.message_id,
            index: self.next_index,
            count: self.count,
            total_len: self.total() as u64,
            data: self.range(start, end),
        })
    }

    /// Marks the peeked chunk as taken.
    pub fn advance(&mut self) {
        self.next_index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> ReassemblyLimits {
        ReassemblyLimits {
            max_message_size: 8 << 20,
            max_partials: 4,
            timeout: Duration::from_secs(60),
        }
    }

    fn chunk(id: u64, index: u32, count: u32, total: u64, len: usize) -> Chunk {
        Chunk {
            message_id: id,
            index,
            count,
            total_len: total,
            data: Bytes::from(vec![7u8; len]),
        }
    }

    #[test]
    fn declared_total_beyond_maximum_is_rejected_on_first_chunk() {
        let mut r = Reassembler::new();
        let err = r.push(
            Timestamp::ZERO,
            &limits(),
            chunk(1, 0, 262_144, 1 << 32, 16384),
        );
        assert!(
            matches!(err, Err(ChunkError::TotalTooLarge { declared, .. }) if declared == 1 << 32)
        );
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn partial_limit_and_inconsistencies_are_rejected() {
        let l = limits();
        let mut r = Reassembler::new();
        for id in 0..4 {
            assert_eq!(
                r.push(Timestamp::ZERO, &l, chunk(id, 0, 3, 30, 10)),
                Ok(None)
            );
        }
        assert_eq!(
            r.push(Timestamp::ZERO, &l, chunk(9, 0, 3, 30, 10)),
            Err(ChunkError::TooManyPartials { max: 4 })
        );
        assert_eq!(
            r.push(Timestamp::ZERO, &l, chunk(0, 5, 3, 30, 10)),
            Err(ChunkError::IndexBeyondCount { index: 5, count: 3 })
        );
        assert_eq!(
            r.push(Timestamp::ZERO, &l, chunk(1, 1, 4, 30, 10)),
            Err(ChunkError::Inconsistent)
        );
        assert_eq!(
            r.push(Timestamp::ZERO, &l, chunk(2, 2, 3, 30, 10)),
            Err(ChunkError::OutOfOrder {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(
            r.push(Timestamp::ZERO, &l, chunk(3, 1, 3, 30, 10)),
            Ok(None)
        );
        assert_eq!(
            r.push(Timestamp::ZERO, &l, chunk(3, 2, 3, 30, 9)),
            Err(ChunkError::WrongLength {
                expected: 10,
                got: 9
            })
        );
        assert_eq!(r.partial_count(), 0);
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn a_stream_that_never_completes_times_out_and_frees_memory() {
        let l = limits();
        let mut r = Reassembler::new();
        r.push(Timestamp::ZERO, &l, chunk(1, 0, 100, 1000, 10))
            .unwrap();
        assert_eq!(r.buffered_bytes(), 10);
        assert_eq!(r.poll_timeout(), Some(Timestamp::from_secs(60)));
        assert_eq!(r.handle_timeout(Timestamp::from_secs(59)), Ok(()));
        assert_eq!(
            r.handle_timeout(Timestamp::from_secs(60)),
            Err(ChunkError::Timeout(1))
        );
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.poll_timeout(), None);
    }

    proptest! {
        #[test]
        fn chunk_then_reassemble_is_identity(len in 1usize..200_000, chunk_len in 1usize..70_000, seed in any::<u8>()) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let mut out = OutboundChunks::new(5, Bytes::from(data.clone()), chunk_len);
            let mut r = Reassembler::new();
            let mut whole = None;
            while let Some(c) = out.peek() {
                out.advance();
                prop_assert!(whole.is_none());
                whole = r.push(Timestamp::ZERO, &limits(), c).unwrap();
            }
            prop_assert_eq!(whole.unwrap().to_vec(), data);
            prop_assert_eq!(r.buffered_bytes(), 0);
        }
    }
}
