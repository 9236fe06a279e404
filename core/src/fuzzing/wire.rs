//! Targets over the wire parsers: packet framing, message CBOR, chunk reassembly.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::chunk::{OutboundChunks, Reassembler, ReassemblyLimits};
use crate::frame::{FrameError, PacketDecoder, GROWTH_MARGIN, LEN_PREFIX, MAX_PACKET_LEN};
use crate::message::{decode_frame_to_vec, Chunk, GoodbyeReason, Message};
use crate::{Hello, PeerAddr, Timestamp};

/// `frame_decoder`: a byte stream split at arbitrary points into reads. The packets, and the
/// error if any, must be exactly those of the stream parsed in one piece by the reference
/// parser below, and the decoder's buffer must stay within its documented bounds (never
/// more than one packet, never more than [`GROWTH_MARGIN`] allocated ahead of the bytes
/// received).
pub fn frame_decoder(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let max_len = usize::from(u.int_in_range(1..=u16::MAX).unwrap_or(1));
    let cuts: Vec<u16> = u.arbitrary().unwrap_or_default();
    let stream = u.take_rest();

    let (expected, expected_err) = reference_packets(stream, max_len);

    let mut cuts: Vec<usize> = cuts
        .into_iter()
        .map(|c| usize::from(c) % (stream.len() + 1))
        .collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut decoder = PacketDecoder::new(max_len);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut got_err = None;
    let mut start = 0;
    'reads: for end in cuts {
        let mut input = &stream[start..end];
        start = end;
        loop {
            match decoder.next_packet(&mut input) {
                Ok(Some(packet)) => got.push(packet.to_vec()),
                Ok(None) => break,
                Err(e) => {
                    got_err = Some(e);
                    break 'reads;
                }
            }
            check_decoder_bounds(&decoder, max_len);
        }
        assert!(input.is_empty(), "Ok(None) leaves no input unread");
        check_decoder_bounds(&decoder, max_len);
    }
    assert_eq!(got, expected, "packets depend on how the stream was split");
    assert_eq!(
        got_err, expected_err,
        "errors depend on how the stream was split"
    );
    if got_err.is_none() {
        let consumed: usize = expected.iter().map(|p| LEN_PREFIX + p.len()).sum();
        assert_eq!(
            decoder.buffered_len(),
            stream.len() - consumed,
            "the unread tail is buffered"
        );
    }
}

fn check_decoder_bounds(decoder: &PacketDecoder, max_len: usize) {
    let cap = decoder.buffered_capacity();
    assert!(
        cap <= LEN_PREFIX + max_len.min(MAX_PACKET_LEN),
        "decoder holds {cap} bytes, more than one packet"
    );
    assert!(
        cap <= decoder.buffered_len() + GROWTH_MARGIN.max(LEN_PREFIX),
        "decoder allocated {cap} bytes for {} received",
        decoder.buffered_len()
    );
}

/// The packet grammar written as plainly as possible: the oracle for [`frame_decoder`].
fn reference_packets(mut s: &[u8], max_len: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut packets = Vec::new();
    while s.len() >= LEN_PREFIX {
        let len = usize::from(u16::from_be_bytes([s[0], s[1]]));
        if len == 0 {
            return (packets, Some(FrameError::ZeroLength));
        }
        if len > max_len {
            return (packets, Some(FrameError::TooLong { len, max: max_len }));
        }
        if s.len() < LEN_PREFIX + len {
            break;
        }
        packets.push(s[LEN_PREFIX..LEN_PREFIX + len].to_vec());
        s = &s[LEN_PREFIX + len..];
    }
    (packets, None)
}

/// `message_decode`: the input as one message, as a frame of messages and as a Hello.
/// Whatever decodes must be canonical (re-encoding gives the input back, and the encoder's
/// length prediction agrees), must be valid to send, and must be well-formed CBOR to an
/// independent decoder (ciborium).
pub fn message_decode(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(m) = Message::decode(&bytes) {
        assert_eq!(m.to_bytes(), data, "decoding is not canonical for {m:?}");
        assert_eq!(
            m.encoded_len(),
            data.len(),
            "encoded_len disagrees for {m:?}"
        );
        assert_eq!(
            m.validate(),
            Ok(()),
            "a decoded message fails validation: {m:?}"
        );
        let mut reader = data;
        let value: Result<ciborium::Value, _> = ciborium::from_reader(&mut reader);
        assert!(
            value.is_ok(),
            "ciborium rejects a message we accept: {value:?}"
        );
        assert!(
            reader.is_empty(),
            "ciborium sees trailing bytes after {m:?}"
        );
    }
    if let Ok(messages) = decode_frame_to_vec(&bytes) {
        assert!(!messages.is_empty(), "a frame holds at least one message");
        let mut encoded = Vec::with_capacity(data.len());
        for m in &messages {
            m.encode(&mut encoded);
        }
        assert_eq!(encoded, data, "frame decoding is not canonical");
    }
    if let Ok(hello) = Hello::decode(data) {
        assert_eq!(hello.encode(), data, "Hello decoding is not canonical");
        assert_eq!(hello.encoded_len(), data.len());
        assert_eq!(hello.validate(), Ok(()), "a decoded Hello fails validation");
    }
}

/// Valid encodings of every message kind and a Hello: the seed corpus of `message_decode`.
pub(super) fn message_seeds() -> Vec<Vec<u8>> {
    let addr = PeerAddr::new("192.0.2.1:7000".parse().expect("literal"));
    let v6 = PeerAddr::new("[2001:db8::1]:7000".parse().expect("literal"));
    let data = Bytes::from_static(b"payload");
    let messages = vec![
        Message::Ping { nonce: 7 },
        Message::Pong { nonce: 7 },
        Message::GetPeers { max: 100 },
        Message::Peers {
            addrs: vec![addr, v6],
        },
        Message::Transaction { data: data.clone() },
        Message::Block { data: data.clone() },
        Message::GetBlock {
            request_id: 1,
            hash: Bytes::from_static(&[0xab; 32]),
        },
        Message::GetTransaction {
            request_id: 2,
            hash: Bytes::from_static(&[0xcd; 32]),
        },
        Message::Response {
            request_id: 1,
            data: data.clone(),
        },
        Message::NotFound { request_id: 2 },
        Message::Request {
            request_id: 3,
            kind: 9,
            data: data.clone(),
        },
        Message::Unicast {
            message_id: 4,
            kind: 9,
            data: data.clone(),
        },
        Message::Ack { message_id: 4 },
        Message::App {
            kind: 5,
            data: data.clone(),
        },
        Message::Chunk(Chunk {
            message_id: 1,
            index: 0,
            count: 2,
            total_len: 14,
            data,
        }),
        Message::Goodbye {
            reason: GoodbyeReason::Normal,
            detail: "bye".into(),
        },
        Message::IHave {
            ids: vec![[1; 32], [2; 32]],
        },
        Message::IWant { ids: vec![[1; 32]] },
        Message::Prune,
    ];
    let mut seeds: Vec<Vec<u8>> = messages.iter().map(Message::to_bytes).collect();
    let mut frame = Vec::new();
    for m in &messages[..4] {
        m.encode(&mut frame);
    }
    seeds.push(frame);
    let hello = Hello {
        network_id: "seed".into(),
        versions: vec![crate::PROTOCOL_VERSION],
        capabilities: crate::Capabilities::ALL,
        listen_addrs: vec![addr.socket],
        agent: "fuzz".into(),
    };
    seeds.push(hello.encode());
    seeds
}

/// Most operations one input runs (an exhausted input would otherwise decode to an endless
/// run of default operations).
const MAX_OPS: usize = 512;

/// One operation of the `chunk_reassembly` program.
#[derive(Debug, Arbitrary)]
enum ChunkOp {
    /// A chunk with arbitrary header fields (the message id kept small so chunks collide).
    Push {
        message_id: u8,
        index: u32,
        count: u32,
        total_len: u32,
        len: u16,
    },
    /// A chunk that continues a partial message correctly, if there is one.
    Continue { message_id: u8 },
    /// Time passes.
    Advance { ms: u32 },
    /// The timeout fires.
    Timeout,
    /// A whole message is chunked by the sender and fed to a fresh reassembler: it must come
    /// out unchanged.
    RoundTrip { len: u16, chunk_len: u16 },
}

/// `chunk_reassembly`: arbitrary chunk sequences against one reassembler with arbitrary
/// limits. The buffered bytes never exceed `max_partials × max_message_size`, the partial
/// count never exceeds its limit, a completed message has exactly its declared length, and
/// a message chunked by [`OutboundChunks`] is reassembled unchanged.
pub fn chunk_reassembly(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((max_message_size, max_partials, timeout_ms)) = <(u16, u8, u16)>::arbitrary(&mut u)
    else {
        return;
    };
    let limits = ReassemblyLimits {
        max_message_size: usize::from(max_message_size),
        max_partials: usize::from(max_partials % 8) + 1,
        timeout: Duration::from_millis(u64::from(timeout_ms)),
    };
    let mut now = Timestamp::ZERO;
    let mut r = Reassembler::new();
    // The sender's view of each partial message we started correctly: (next index, count,
    // total, chunk length).
    let mut started: std::collections::BTreeMap<u64, (u32, u32, u64, u64)> = Default::default();
    let mut taken = 0;
    while let Some(op) = super::next_step::<ChunkOp>(&mut u, &mut taken, MAX_OPS) {
        match op {
            ChunkOp::Push {
                message_id,
                index,
                count,
                total_len,
                len,
            } => {
                let chunk = Chunk {
                    message_id: u64::from(message_id),
                    index,
                    count,
                    total_len: u64::from(total_len),
                    data: Bytes::from(vec![message_id; usize::from(len)]),
                };
                let before = r.partial_count();
                match r.push(now, &limits, chunk) {
                    Ok(Some(whole)) => {
                        assert_eq!(whole.len() as u64, u64::from(total_len));
                        assert!(whole.len() <= limits.max_message_size);
                    }
                    Ok(None) if r.partial_count() > before => {
                        started.insert(
                            u64::from(message_id),
                            (1, count, u64::from(total_len), u64::from(len)),
                        );
                    }
                    _ => {}
                }
            }
            ChunkOp::Continue { message_id } => {
                let id = u64::from(message_id);
                let Some(&(index, count, total, chunk_len)) = started.get(&id) else {
                    continue;
                };
                let last = index + 1 == count;
                let len = if last {
                    total - chunk_len * u64::from(index)
                } else {
                    chunk_len
                };
                let chunk = Chunk {
                    message_id: id,
                    index,
                    count,
                    total_len: total,
                    data: Bytes::from(vec![message_id; len as usize]),
                };
                match r.push(now, &limits, chunk) {
                    Ok(Some(whole)) => {
                        assert!(last, "completed before the last chunk");
                        assert_eq!(whole.len() as u64, total);
                        started.remove(&id);
                    }
                    Ok(None) => {
                        assert!(!last, "the last chunk did not complete the message");
                        started.insert(id, (index + 1, count, total, chunk_len));
                    }
                    // Expired, or replaced after an error on this id: forget it.
                    Err(_) => {
                        started.remove(&id);
                    }
                }
            }
            ChunkOp::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
            ChunkOp::Timeout => {
                // Expired partials are dropped; `started` learns of it from the next chunk.
                let _ = r.handle_timeout(now);
                if let Some(deadline) = r.poll_timeout() {
                    assert!(deadline > now, "an expired partial survived the timeout");
                }
            }
            ChunkOp::RoundTrip { len, chunk_len } => round_trip(len, chunk_len),
        }
        assert!(r.partial_count() <= limits.max_partials);
        assert!(r.buffered_bytes() <= limits.max_partials * limits.max_message_size);
        if r.partial_count() == 0 {
            assert_eq!(r.buffered_bytes(), 0, "bytes accounted to no partial");
        }
    }
}

fn round_trip(len: u16, chunk_len: u16) {
    // Bounded so one operation stays cheap: at most 8 KiB in chunks of 1 byte or more.
    let len = usize::from(len) % 8192 + 1;
    let chunk_len = usize::from(chunk_len) % 4096 + 1;
    let encoded: Bytes = (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let limits = ReassemblyLimits {
        max_message_size: len,
        max_partials: 1,
        timeout: Duration::from_secs(1),
    };
    let mut sender = OutboundChunks::new(42, encoded.clone(), chunk_len);
    let mut receiver = Reassembler::new();
    let mut out = None;
    while let Some(chunk) = sender.peek() {
        sender.advance();
        assert!(out.is_none(), "a chunk after the message completed");
        out = receiver
            .push(Timestamp::ZERO, &limits, chunk)
            .expect("chunks from OutboundChunks are valid");
    }
    assert!(sender.is_done());
    assert_eq!(out, Some(encoded), "round trip changed the message");
    assert_eq!(receiver.buffered_bytes(), 0);
}
