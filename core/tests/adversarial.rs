//! A hostile peer: every malformed input is rejected with its reason, and memory stays within
//! the configured bounds. The hostile side is a raw Noise session driven by hand (snow plus
//! the wire rules of PROTOCOL.md), so it can send anything.

mod common;

use std::time::Duration;

use common::*;
use silver_p2p_core::*;

/// Bytes the victim may hold at most, with the default config, once it has processed input:
/// one partial packet, the reassembly limit, and small slack for the Goodbye.
fn memory_bound(c: &ConnectionConfig) -> usize {
    65_535 + 16 * 1024 + c.max_partial_messages * c.max_message_size + 4096
}

struct Attack {
    victim: Connection,
    events: Vec<ConnectionEvent>,
    raw: RawPeer,
    now: Timestamp,
    config: ConnectionConfig,
}

impl Attack {
    fn new() -> Self {
        Self::with_config(ConnectionConfig::default())
    }

    fn with_config(config: ConnectionConfig) -> Self {
        let mut victim = victim(config.clone());
        let mut events = Vec::new();
        let raw = RawPeer::connect(&mut victim, Timestamp::ZERO, &mut events);
        assert_eq!(victim.state(), ConnectionState::Connected, "{events:?}");
        Attack {
            victim,
            events,
            raw,
            now: Timestamp::ZERO,
            config,
        }
    }

    fn send_plain(&mut self, plaintext: &[u8]) {
        let pkt = self.raw.frame(plaintext);
        self.victim.handle_bytes(self.now, &pkt);
        self.drain();
    }

    fn send_msgs(&mut self, msgs: &[Message]) {
        let mut plain = Vec::new();
        for m in msgs {
            m.encode(&mut plain);
        }
        self.send_plain(&plain);
    }

    fn drain(&mut self) {
        collect(&mut self.victim, &mut self.events);
        assert!(self.victim.buffered_bytes() <= memory_bound(&self.config));
    }

    fn reason(&self) -> Option<&CloseReason> {
        self.events.iter().find_map(|e| match e {
            ConnectionEvent::Closed(r) => Some(r),
            _ => None,
        })
    }

    fn violation(&self) -> &Violation {
        match self.reason() {
            Some(CloseReason::ProtocolViolation(v)) => v,
            other => panic!("expected a protocol violation, got {other:?}"),
        }
    }

    fn delivered(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, ConnectionEvent::Message(_)))
            .count()
    }
}

fn chunk(id: u64, index: u32, count: u32, total: u64, len: usize) -> Message {
    Message::Chunk(Chunk {
        message_id: id,
        index,
        count,
        total_len: total,
        data: vec![0x55; len].into(),
    })
}

#[test]
fn zero_length_prefix_is_a_framing_violation() {
    let mut a = Attack::new();
    a.victim.handle_bytes(a.now, &[0, 0]);
    a.drain();
    assert_eq!(
        a.violation(),
        &Violation::Framing(frame::FrameError::ZeroLength)
    );
    assert_eq!(a.victim.state(), ConnectionState::Closed);
}

#[test]
fn a_max_size_packet_of_garbage_fails_authentication() {
    let mut a = Attack::new();
    let mut pkt = vec![0xff, 0xff];
    pkt.extend(std::iter::repeat_n(0xA5u8, 65_535));
    a.victim.handle_bytes(a.now, &pkt);
    a.drain();
    assert!(matches!(a.violation(), Violation::Noise(_)));
    assert_eq!(a.delivered(), 0);
}

#[test]
fn garbage_before_the_handshake_is_rejected_without_buffering_it() {
    let mut v = victim(ConnectionConfig::default());
    let mut events = Vec::new();
    v.handle_bytes(Timestamp::ZERO, &vec![0xAB; 65_535]);
    collect(&mut v, &mut events);
    assert!(matches!(
        events.last(),
        Some(ConnectionEvent::Closed(CloseReason::ProtocolViolation(
            Violation::Framing(frame::FrameError::TooLong { len: 0xABAB, .. })
        )))
    ));
    assert_eq!(v.buffered_bytes(), 0);
}

#[test]
fn an_application_message_before_the_handshake_completes_is_rejected() {
    // In message 1's (unencrypted) payload.
    let mut v = victim(ConnectionConfig::default());
    let mut events = Vec::new();
    let app = Message::App {
        kind: 1,
        data: b"early".to_vec().into(),
    }
    .to_bytes();
    v.handle_bytes(Timestamp::ZERO, &RawPeer::message1_with_payload(&app));
    collect(&mut v, &mut events);
    assert!(matches!(
        events.last(),
        Some(ConnectionEvent::Closed(CloseReason::ProtocolViolation(
            Violation::UnexpectedHandshakePayload
        )))
    ));
    assert!(!events
        .iter()
        .any(|e| matches!(e, ConnectionEvent::Message(_))));

    // As a plain CBOR packet where message 1 should be (too short to be one).
    let mut v = victim(ConnectionConfig::default());
    let mut events = Vec::new();
    v.handle_bytes(Timestamp::ZERO, &packet(&app));
    collect(&mut v, &mut events);
    assert!(matches!(
        events.last(),
        Some(ConnectionEvent::Closed(CloseReason::ProtocolViolation(
            Violation::Noise(_)
        )))
    ));
    assert!(!events
        .iter()
        .any(|e| matches!(e, ConnectionEvent::Message(_))));
}

#[test]
fn a_chunk_declaring_four_gib_is_rejected_on_arrival() {
    let mut a = Attack::new();
    a.send_msgs(&[chunk(1, 0, 262_144, 1 << 32, 16_384)]);
    assert!(matches!(
        a.violation(),
        Violation::Chunk(chunk::ChunkError::TotalTooLarge { declared, .. }) if *declared == 1 << 32
    ));
    assert!(a.victim.buffered_bytes() < 70_000);
}

#[test]
fn a_chunk_stream_that_never_completes_times_out() {
    let mut a = Attack::new();
    a.send_msgs(&[chunk(1, 0, 100, 1_600_000, 16_000)]);
    assert_eq!(a.victim.state(), ConnectionState::Connected);
    // Keep the connection otherwise alive with pings, never finishing the message.
    for _ in 0..30 {
        a.now += Duration::from_secs(5);
        a.send_msgs(&[Message::Ping { nonce: 1 }]);
        a.victim.handle_timeout(a.now);
        a.drain();
    }
    assert_eq!(
        a.violation(),
        &Violation::Chunk(chunk::ChunkError::Timeout(1))
    );
    assert_eq!(a.victim.buffered_bytes(), 0);
}

#[test]
fn more_partial_messages_than_allowed_are_rejected() {
    let mut a = Attack::new();
    let msgs: Vec<Message> = (0..5).map(|id| chunk(id, 0, 4, 4000, 1000)).collect();
    a.send_msgs(&msgs);
    assert_eq!(
        a.violation(),
        &Violation::Chunk(chunk::ChunkError::TooManyPartials { max: 4 })
    );
}

#[test]
fn inconsistent_chunks_are_rejected_with_their_reason() {
    use chunk::ChunkError::*;
    let cases: Vec<(Vec<Message>, chunk::ChunkError)> = vec![
        (
            vec![chunk(1, 0, 4, 4000, 1000), chunk(1, 7, 4, 4000, 1000)],
            IndexBeyondCount { index: 7, count: 4 },
        ),
        (
            vec![chunk(1, 0, 4, 4000, 1000), chunk(1, 1, 5, 4000, 1000)],
            Inconsistent,
        ),
        (
            vec![chunk(1, 0, 2, 1500, 1000), chunk(1, 1, 2, 1500, 400)],
            WrongLength {
                expected: 500,
                got: 400,
            },
        ),
        (vec![chunk(1, 0, 3, 4000, 1000)], Inconsistent),
        (
            vec![chunk(1, 2, 4, 4000, 1000)],
            UnknownMessage {
                message_id: 1,
                index: 2,
            },
        ),
        (
            vec![chunk(1, 0, 4, 4000, 1000), chunk(1, 2, 4, 4000, 1000)],
            OutOfOrder {
                expected: 1,
                got: 2,
            },
        ),
        (vec![chunk(1, 0, 1, 0, 0)], Empty),
    ];
    for (msgs, expected) in cases {
        let mut a = Attack::new();
        a.send_msgs(&msgs);
        assert_eq!(
            a.violation(),
            &Violation::Chunk(expected.clone()),
            "{msgs:?}"
        );
    }
}

#[test]
fn a_reassembled_message_that_is_itself_a_chunk_is_rejected() {
    let mut a = Attack::new();
    let inner = chunk(5, 0, 1, 10, 10).to_bytes();
    let total = inner.len() as u64;
    a.send_msgs(&[Message::Chunk(Chunk {
        message_id: 1,
        index: 0,
        count: 1,
        total_len: total,
        data: inner.into(),
    })]);
    assert_eq!(a.violation(), &Violation::Decode(DecodeError::NestedChunk));
}

#[test]
fn cbor_nested_ten_thousand_deep_is_rejected() {
    let mut a = Attack::new();
    let mut plain = vec![0x81u8; 10_000];
    plain.push(0);
    a.send_plain(&plain);
    assert!(matches!(
        a.violation(),
        Violation::Decode(DecodeError::Cbor(CborError::UnexpectedType { .. }))
    ));
}

#[test]
fn cbor_declaring_two_to_the_sixty_four_elements_is_rejected() {
    let mut a = Attack::new();
    // A Peers message whose address array declares 2^64 - 1 entries.
    let mut plain = vec![0x82, 0x03, 0x9b];
    plain.extend_from_slice(&[0xff; 8]);
    a.send_plain(&plain);
    assert!(matches!(
        a.violation(),
        Violation::Decode(DecodeError::Cbor(CborError::LengthBeyondInput { .. }))
    ));
    // A byte string declaring 2^64 - 1 bytes.
    let mut a = Attack::new();
    let mut plain = vec![0x82, 0x04, 0x5b];
    plain.extend_from_slice(&[0xff; 8]);
    a.send_plain(&plain);
    assert!(matches!(
        a.violation(),
        Violation::Decode(DecodeError::Cbor(CborError::LengthBeyondInput { .. }))
    ));
}

#[test]
fn valid_messages_before_a_bad_one_are_delivered_and_the_close_has_a_reason() {
    let mut a = Attack::new();
    let mut plain = Message::Transaction {
        data: b"ok".to_vec().into(),
    }
    .to_bytes();
    plain.extend_from_slice(&[0x81, 0x18, 200]); // unknown kind 200
    a.send_plain(&plain);
    assert_eq!(a.delivered(), 1);
    assert_eq!(
        a.violation(),
        &Violation::Decode(DecodeError::UnknownKind(200))
    );
    // Exactly one Closed event, and nothing after it.
    let closes = a
        .events
        .iter()
        .filter(|e| matches!(e, ConnectionEvent::Closed(_)))
        .count();
    assert_eq!(closes, 1);
    assert!(matches!(a.events.last(), Some(ConnectionEvent::Closed(_))));
    // Further input is ignored.
    a.send_msgs(&[Message::Ping { nonce: 1 }]);
    assert_eq!(a.delivered(), 1);
}

#[test]
fn a_replayed_frame_fails_authentication() {
    let mut a = Attack::new();
    let pkt = a.raw.frame(&Message::Ping { nonce: 1 }.to_bytes());
    a.victim.handle_bytes(a.now, &pkt);
    a.drain();
    assert_eq!(a.victim.state(), ConnectionState::Connected);
    a.victim.handle_bytes(a.now, &pkt);
    a.drain();
    assert!(matches!(a.violation(), Violation::Noise(_)));
}

#[test]
fn an_unchunked_message_over_the_configured_maximum_is_rejected() {
    let mut a = Attack::with_config(ConnectionConfig {
        max_message_size: 20_000,
        max_queued_bytes: 20_000,
        ..Default::default()
    });
    a.send_msgs(&[Message::App {
        kind: 1,
        data: vec![0; 30_000].into(),
    }]);
    assert!(matches!(a.violation(), Violation::MessageTooLarge(n) if *n > 30_000));
    assert_eq!(a.delivered(), 0);
}
