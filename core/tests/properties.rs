//! Property tests over whole connections: split-independence of the byte stream, message
//! sizes from 0 to the maximum, and arbitrary bytes from a peer.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use silver_p2p_core::*;

/// Runs a handshake plus `msgs` from an initiator, capturing its whole output stream.
fn initiator_stream(msgs: &[Message]) -> (Vec<u8>, Connection) {
    let now = Timestamp::ZERO;
    let config = Arc::new(ConnectionConfig::default());
    let mut a = Connection::new(
        Role::Initiator,
        config.clone(),
        Arc::new(hello("a")),
        &keypair(1),
        None,
        [1; 32],
        now,
    );
    let mut b = victim(ConnectionConfig::default());
    a.handle_connected(now);
    for m in msgs {
        a.send(m.clone()).unwrap();
    }
    let mut stream = Vec::new();
    let mut ev = Vec::new();
    loop {
        let out = collect(&mut a, &mut ev);
        if out.is_empty() {
            break;
        }
        stream.extend_from_slice(&out);
        b.handle_bytes(now, &out);
        let back = collect(&mut b, &mut Vec::new());
        a.handle_bytes(now, &back);
    }
    (stream, victim(ConnectionConfig::default()))
}

fn received(conn: &mut Connection, stream: &[u8], cuts: &[usize]) -> Vec<Message> {
    let mut events = Vec::new();
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain(std::iter::once(stream.len())) {
        conn.handle_bytes(Timestamp::ZERO, &stream[last..cut]);
        last = cut;
        collect(conn, &mut events);
    }
    events
        .into_iter()
        .filter_map(|e| match e {
            ConnectionEvent::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn app(len: usize) -> Message {
    Message::App {
        kind: 3,
        data: Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn delivery_does_not_depend_on_how_the_stream_is_split(
        sizes in prop::collection::vec(0usize..40_000, 1..12),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let msgs: Vec<Message> = sizes.iter().map(|s| app(*s)).collect();
        let (stream, _) = initiator_stream(&msgs);
        let (_, mut b) = initiator_stream(&[]);
        let whole = received(&mut b, &stream, &[]);
        let (_, mut b2) = initiator_stream(&[]);
        let split = received(&mut b2, &stream, &cuts);
        // Order holds within a class; messages larger than a chunk (bulk) come after the
        // small ones queued with them.
        let chunk = ConnectionConfig::default().chunk_size;
        let (mut expected, bulk): (Vec<_>, Vec<_>) =
            msgs.iter().cloned().partition(|m| m.encoded_len() <= chunk);
        expected.extend(bulk);
        prop_assert!(whole == expected, "whole stream: wrong messages");
        prop_assert!(split == expected, "split stream: wrong messages");
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 0..8),
        after_handshake in any::<bool>(),
    ) {
        let config = ConnectionConfig::default();
        let bound = 65_535 + 16 * 1024 + 4096;
        let mut v = victim(config);
        let mut events = Vec::new();
        let mut raw = after_handshake.then(|| RawPeer::connect(&mut v, Timestamp::ZERO, &mut events));
        for c in &chunks {
            match raw.as_mut() {
                // Authenticated garbage: valid Noise frames with arbitrary plaintext.
                Some(r) if !c.is_empty() => v.handle_bytes(Timestamp::ZERO, &r.frame(c)),
                _ => v.handle_bytes(Timestamp::ZERO, c),
            }
            collect(&mut v, &mut events);
            prop_assert!(v.buffered_bytes() <= bound, "{}", v.buffered_bytes());
        }
        // If it closed, it said why, exactly once.
        let closes = events.iter().filter(|e| matches!(e, ConnectionEvent::Closed(_))).count();
        prop_assert!(closes <= 1);
        prop_assert_eq!(closes == 1, v.state() == ConnectionState::Closed);
    }
}

#[test]
fn every_size_from_zero_to_the_maximum_arrives_intact() {
    let config = ConnectionConfig::default();
    // Payload sizes whose encoded message (kind + kind-field + bytes head) crosses every
    // boundary: empty, tiny, around the chunk size, around a frame, and the maximum.
    let max_payload = config.max_message_size - 8;
    let mut sizes = vec![0, 1, 23, 24, 255, 256];
    for edge in [config.chunk_size, MAX_FRAME_PLAINTEXT, 1 << 20] {
        sizes.extend([edge - 8, edge - 7, edge - 6, edge - 5, edge, edge + 1]);
    }
    sizes.extend([max_payload - 1, max_payload]);
    let mut p = Pair::new();
    p.drive();
    for s in &sizes {
        p.a.conn.send(app(*s)).unwrap();
        p.drive();
    }
    let got = p.b.messages();
    assert_eq!(got.len(), sizes.len());
    for (m, s) in got.iter().zip(&sizes) {
        assert!(m == &app(*s), "size {s} arrived altered");
    }
    // One byte more does not fit.
    assert!(matches!(
        p.a.conn.send(app(max_payload + 1)),
        Err(SendError::TooLarge { .. })
    ));
}
