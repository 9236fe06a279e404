//! Packet framing: every packet on the wire, handshake or transport, is a 2-byte big-endian
//! length `L` (1 ≤ L ≤ 65535) followed by `L` bytes.
//!
//! [`PacketDecoder`] is a streaming decoder: it accepts input split at any byte boundary, hands
//! out complete packets straight from the caller's buffer when they arrive whole (no copy), and
//! buffers only an incomplete tail. It never allocates more than [`GROWTH_MARGIN`] bytes ahead
//! of the bytes actually received, so a peer that declares a 64 KiB packet and sends one byte
//! costs us one byte plus a small margin, not 64 KiB.

use core::ops::Deref;

/// Largest packet body the 2-byte length prefix can describe.
pub const MAX_PACKET_LEN: usize = 65535;
/// Length of the big-endian length prefix.
pub const LEN_PREFIX: usize = 2;
/// How far ahead of received bytes the decoder may allocate while a packet is incomplete.
/// Growing by at most this much bounds both the over-allocation and the number of
/// reallocations (a packet sent one byte at a time costs a handful of reallocations).
pub const GROWTH_MARGIN: usize = 16 * 1024;

/// Why a packet stream is invalid. Either error is fatal for the connection: after it the
/// stream has no reliable packet boundaries left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix of zero (packets are never empty).
    #[error("packet length prefix is 0")]
    ZeroLength,
    /// A length prefix above what the current state accepts (for example, a large packet
    /// before the handshake authenticated the peer).
    #[error("packet length {len} exceeds the limit {max} for this state")]
    TooLong {
        /// The declared length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
}

/// One complete packet body, either borrowed from the caller's input or owned (when it was
/// assembled from several inputs).
#[derive(Debug)]
pub enum Packet<'a> {
    /// The packet arrived whole inside one input slice.
    Borrowed(&'a [u8]),
    /// The packet was assembled from several inputs; the vector holds prefix and body.
    Owned(Vec<u8>),
}

impl Deref for Packet<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Packet::Borrowed(b) => b,
            Packet::Owned(v) => &v[LEN_PREFIX..],
        }
    }
}

/// Streaming decoder of length-prefixed packets. See the module docs.
#[derive(Debug)]
pub struct PacketDecoder {
    /// The incomplete packet (prefix included); empty, and unallocated, between packets.
    partial: Vec<u8>,
    max_len: usize,
}

impl PacketDecoder {
    /// A decoder that rejects packets longer than `max_len` (clamped to 1..=65535).
    pub fn new(max_len: usize) -> Self {
        PacketDecoder {
            partial: Vec::new(),
            max_len: max_len.clamp(1, MAX_PACKET_LEN),
        }
    }

    /// Changes the accepted maximum, for example when the handshake completes. A packet whose
    /// prefix was already read keeps the limit that was checked against it.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len.clamp(1, MAX_PACKET_LEN);
    }

    /// Bytes of memory this decoder holds (the capacity of its partial-packet buffer).
    pub fn buffered_capacity(&self) -> usize {
        self.partial.capacity()
    }

    /// Bytes of an incomplete packet received so far.
    pub fn buffered_len(&self) -> usize {
        self.partial.len()
    }

    fn check_len(&self, len: usize) -> Result<usize, FrameError> {
        if len == 0 {
            Err(FrameError::ZeroLength)
        } else if len > self.max_len {
            Err(FrameError::TooLong {
                len,
                max: self.max_len,
            })
        } else {
            Ok(len)
        }
    }

    /// Takes bytes from the front of `input` and returns the next complete packet, or `None`
    /// when `input` is used up without completing one (the tail is buffered). Call it in a
    /// loop until it returns `Ok(None)`; after an error, discard the connection.
    pub fn next_packet<'a>(
        &mut self,
        input: &mut &'a [u8],
    ) -> Result<Option<Packet<'a>>, FrameError> {
        if self.partial.is_empty() {
            if input.len() >= LEN_PREFIX {
                let len = self.check_len(u16::from_be_bytes([input[0], input[1]]) as usize)?;
                if input.len() >= LEN_PREFIX + len {
                    let body = &input[LEN_PREFIX..LEN_PREFIX + len];
                    *input = &input[LEN_PREFIX + len..];
                    return Ok(Some(Packet::Borrowed(body)));
                }
            }
            if input.is_empty() {
                return Ok(None);
            }
        }
        // Slow path: accumulate into the partial buffer.
        if self.partial.len() < LEN_PREFIX {
            let take = (LEN_PREFIX - self.partial.len()).min(input.len());
            self.partial.reserve_exact(LEN_PREFIX);
            self.partial.extend_from_slice(&input[..take]);
            *input = &input[take..];
            if self.partial.len() < LEN_PREFIX {
                return Ok(None);
            }
        }
        let len = u16::from_be_bytes([self.partial[0], self.partial[1]]) as usize;
        if let Err(e) = self.check_len(len) {
            self.partial = Vec::new();
            return Err(e);
        }
        let total = LEN_PREFIX + len;
        let missing = total - self.partial.len();
        let take = missing.min(input.len());
        if self.partial.capacity() < self.partial.len() + take {
            let grow = take.max(self.partial.len().min(GROWTH_MARGIN));
            let target = (self.partial.len() + grow).min(total);
            self.partial.reserve_exact(target - self.partial.len());
        }
        self.partial.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if self.partial.len() == total {
            Ok(Some(Packet::Owned(std::mem::take(&mut self.partial))))
        } else {
            Ok(None)
        }
    }
}

/// Appends the 2-byte length prefix for a packet body of `len` bytes (1..=65535).
pub fn put_len_prefix(out: &mut Vec<u8>, len: usize) {
    debug_assert!((1..=MAX_PACKET_LEN).contains(&len));
    out.extend_from_slice(&(len as u16).to_be_bytes());
}

/// Encodes one packet (prefix and body) into a new vector. Convenience for tests and tools.
pub fn encode_packet(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEN_PREFIX + body.len());
    put_len_prefix(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(dec: &mut PacketDecoder, mut input: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = Vec::new();
        while let Some(p) = dec.next_packet(&mut input)? {
            out.push(p.to_vec());
        }
        assert!(input.is_empty());
        Ok(out)
    }

    #[test]
    fn zero_length_prefix_is_rejected() {
        let mut dec = PacketDecoder::new(MAX_PACKET_LEN);
        assert_eq!(
            decode_all(&mut dec, &[0, 0, 1]),
            Err(FrameError::ZeroLength)
        );
        let mut dec = PacketDecoder::new(MAX_PACKET_LEN);
        assert_eq!(decode_all(&mut dec, &[0]), Ok(vec![]));
        assert_eq!(decode_all(&mut dec, &[0]), Err(FrameError::ZeroLength));
    }

    #[test]
    fn over_limit_prefix_is_rejected_before_buffering() {
        let mut dec = PacketDecoder::new(100);
        assert_eq!(
            decode_all(&mut dec, &[0, 101]),
            Err(FrameError::TooLong { len: 101, max: 100 })
        );
        assert_eq!(dec.buffered_capacity(), 0);
    }

    #[test]
    fn partial_packet_allocates_only_near_received_bytes() {
        let mut dec = PacketDecoder::new(MAX_PACKET_LEN);
        // Declare 65535 bytes, send 10.
        let mut input: &[u8] = &[0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert!(dec.next_packet(&mut input).unwrap().is_none());
        assert!(dec.buffered_capacity() <= 12 + GROWTH_MARGIN);
        assert!(
            dec.buffered_capacity() < 1024,
            "{}",
            dec.buffered_capacity()
        );
        // One byte at a time: capacity stays within the margin of what arrived.
        for i in 0..40_000usize {
            let b = [i as u8];
            let mut inp: &[u8] = &b;
            assert!(dec.next_packet(&mut inp).unwrap().is_none());
            assert!(dec.buffered_capacity() <= dec.buffered_len() + GROWTH_MARGIN);
        }
    }

    #[test]
    fn garbage_of_max_length_is_one_packet_then_needs_more() {
        let mut dec = PacketDecoder::new(MAX_PACKET_LEN);
        let garbage = vec![0xAB; 65535];
        // 65535 bytes of garbage read as a prefix 0xABAB = 43947 and its body, then a partial.
        let packets = decode_all(&mut dec, &garbage).unwrap();
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].len(), 0xABAB);
        assert!(dec.buffered_len() < 65535);
    }

    proptest! {
        #[test]
        fn decoding_does_not_depend_on_split_points(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..20),
            splits in prop::collection::vec(any::<usize>(), 0..30),
        ) {
            let mut stream = Vec::new();
            for b in &bodies {
                stream.extend_from_slice(&encode_packet(b));
            }
            let mut cuts: Vec<usize> = splits.iter().map(|s| s % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut dec = PacketDecoder::new(MAX_PACKET_LEN);
            let mut got = Vec::new();
            let mut last = 0;
            for cut in cuts.into_iter().chain(std::iter::once(stream.len())) {
                got.extend(decode_all(&mut dec, &stream[last..cut]).unwrap());
                last = cut;
            }
            prop_assert_eq!(got, bodies);
            prop_assert_eq!(dec.buffered_capacity(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..2000), max in 1usize..70000) {
            let mut dec = PacketDecoder::new(max);
            let _ = decode_all(&mut dec, &input);
        }
    }
}
