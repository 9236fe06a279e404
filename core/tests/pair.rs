//! Two connections in memory, virtual time: handshake, every message kind, chunking under
//! load, keepalive, timeouts and every mismatch.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use silver_p2p_core::*;

#[test]
fn handshake_completes_in_both_roles() {
    for a_dials in [true, false] {
        let mut p = PairBuilder {
            a_dials,
            ..Default::default()
        }
        .build();
        p.drive();
        assert_eq!(p.a.conn.state(), ConnectionState::Connected);
        assert_eq!(p.b.conn.state(), ConnectionState::Connected);
        assert_eq!(
            p.a.established(),
            Some((keypair(2).peer_id(), PROTOCOL_VERSION))
        );
        assert_eq!(
            p.b.established(),
            Some((keypair(1).peer_id(), PROTOCOL_VERSION))
        );
        assert_eq!(p.a.conn.peer_hello().unwrap().agent, "b");
        assert_eq!(p.b.conn.peer_hello().unwrap().agent, "a");
        let expected_role = if a_dials {
            Role::Initiator
        } else {
            Role::Responder
        };
        assert_eq!(p.a.conn.role(), expected_role);
        assert!(p.a.conn.stats().connected_since.is_some());
    }
}

#[test]
fn the_transport_cipher_is_aes_gcm_only_when_both_hellos_ask_for_it() {
    let aes = Capabilities::ALL;
    let chacha = Capabilities::ALL.without(Capabilities::AES_GCM);
    let both = SUPPORTED_VERSIONS.to_vec();
    for a_dials in [true, false] {
        for (caps_a, caps_b, versions_b, expected) in [
            (aes, aes, both.clone(), TransportSuite::Aes256Gcm),
            (aes, chacha, both.clone(), TransportSuite::ChaCha20Poly1305),
            (chacha, aes, both.clone(), TransportSuite::ChaCha20Poly1305),
            (
                chacha,
                chacha,
                both.clone(),
                TransportSuite::ChaCha20Poly1305,
            ),
            // A version-1 peer may set the bit, which meant nothing there: it is ignored.
            (aes, aes, vec![1], TransportSuite::ChaCha20Poly1305),
        ] {
            let mut p = PairBuilder {
                a_dials,
                hello_a: Hello {
                    capabilities: caps_a,
                    versions: both.clone(),
                    ..hello("a")
                },
                hello_b: Hello {
                    capabilities: caps_b,
                    versions: versions_b,
                    ..hello("b")
                },
                ..Default::default()
            }
            .build();
            p.drive();
            assert_eq!(p.a.conn.state(), ConnectionState::Connected);
            assert_eq!(p.a.conn.stats().transport_suite, Some(expected));
            assert_eq!(p.b.conn.stats().transport_suite, Some(expected));
            // Both directions carry a near-full frame in the agreed suite.
            let big = Message::Block {
                data: Bytes::from(vec![7u8; 60_000]),
            };
            p.a.conn.send(big.clone()).unwrap();
            p.b.conn.send(big.clone()).unwrap();
            p.drive();
            assert_eq!(
                p.a.messages(),
                vec![big.clone()],
                "{expected} a_dials {a_dials}"
            );
            assert_eq!(p.b.messages(), vec![big], "{expected} a_dials {a_dials}");
            assert_eq!(p.a.conn.stats().errors, 0);
            assert_eq!(p.b.conn.stats().errors, 0);
        }
    }
}

#[test]
fn handshake_is_reproducible_from_seeds() {
    let transcript = || {
        let mut p = Pair::new();
        let mut bytes = Vec::new();
        // Record what each side sends during the handshake.
        for _ in 0..3 {
            while let Some(o) = p.a.conn.poll_output() {
                if let ConnectionOutput::Transmit(t) = o {
                    bytes.extend_from_slice(&t);
                    p.b.conn.handle_bytes(p.now, &t);
                }
            }
            while let Some(o) = p.b.conn.poll_output() {
                if let ConnectionOutput::Transmit(t) = o {
                    bytes.extend_from_slice(&t);
                    p.a.conn.handle_bytes(p.now, &t);
                }
            }
        }
        assert_eq!(p.a.conn.state(), ConnectionState::Connected);
        bytes
    };
    assert_eq!(transcript(), transcript());
}

fn every_sendable_message() -> Vec<Message> {
    let b = |s: &str| Bytes::from(s.as_bytes().to_vec());
    vec![
        Message::GetPeers { max: 50 },
        Message::Peers {
            addrs: vec![
                "127.0.0.1:1".parse().unwrap(),
                format!("{}@[::1]:2", keypair(5).peer_id()).parse().unwrap(),
            ],
        },
        Message::Transaction { data: b("tx") },
        Message::Block { data: b("block") },
        Message::GetBlock {
            request_id: 1,
            hash: b("h1"),
        },
        Message::GetTransaction {
            request_id: 2,
            hash: b("h2"),
        },
        Message::Response {
            request_id: 1,
            data: b("resp"),
        },
        Message::NotFound { request_id: 2 },
        Message::Request {
            request_id: 3,
            kind: 77,
            data: b("req"),
        },
        Message::Unicast {
            message_id: 4,
            kind: 78,
            data: b("uni"),
        },
        Message::Ack { message_id: 4 },
        Message::App {
            kind: 79,
            data: b("app"),
        },
    ]
}

#[test]
fn every_message_kind_round_trips() {
    let mut p = Pair::new();
    p.drive();
    let sent = every_sendable_message();
    // Application kinds arrive as events, in order, in both directions.
    for m in &sent {
        p.a.conn.send(m.clone()).unwrap();
        p.b.conn.send(m.clone()).unwrap();
    }
    p.drive();
    // Control messages overtake data; each class keeps its order.
    let (mut expected, data): (Vec<_>, Vec<_>) = sent
        .iter()
        .cloned()
        .partition(|m| m.kind().priority() == Priority::Control);
    expected.extend(data);
    assert_eq!(p.b.messages(), expected);
    assert_eq!(p.a.messages(), expected);
    // The coalescing queue put them all in one frame each way.
    assert_eq!(p.a.conn.stats().frames_sent, 1);

    // Ping is answered with a Pong by the core; a Pong nobody asked for is ignored.
    p.a.conn.send(Message::Ping { nonce: 42 }).unwrap();
    p.drive();
    assert_eq!(p.a.conn.stats().pongs_unmatched, 1);
    assert_eq!(p.a.conn.state(), ConnectionState::Connected);

    // Chunk: a message over the chunk size travels as chunks and arrives whole.
    let big = Message::Block {
        data: Bytes::from(vec![9u8; 100_000]),
    };
    p.a.conn.send(big.clone()).unwrap();
    p.drive();
    assert_eq!(p.b.messages().last(), Some(&big));

    // Chunk and Goodbye are the connection's own.
    let chunk = Message::Chunk(Chunk {
        message_id: 0,
        index: 0,
        count: 1,
        total_len: 1,
        data: Bytes::from_static(b"x"),
    });
    assert_eq!(
        p.a.conn.send(chunk),
        Err(SendError::ReservedKind(MessageKind::Chunk))
    );

    // Goodbye: a clean close carries its reason to the peer.
    p.a.conn.close(p.now, GoodbyeReason::Normal);
    p.drive();
    assert_eq!(
        p.a.close_reason(),
        Some(&CloseReason::LocalRequest(GoodbyeReason::Normal))
    );
    assert!(matches!(
        p.b.close_reason(),
        Some(CloseReason::RemoteGoodbye {
            reason: GoodbyeReason::Normal,
            ..
        })
    ));
    assert_eq!(p.a.closed_count(), 1);
    assert_eq!(p.b.closed_count(), 1);
}

#[test]
fn pongs_overtake_an_8_mib_block() {
    let mut p = Pair::new();
    p.drive();
    // A link of 64 KiB per 1 ms step: the block takes ~128 steps.
    p.rate = 64 * 1024;
    let block = Message::Block {
        data: Bytes::from(vec![0xB1u8; 8 * 1024 * 1024 - 64]),
    };
    p.a.conn.send(block.clone()).unwrap();
    let mut pings = 0;
    let mut block_done = false;
    let mut pongs_before_block = 0;
    while !block_done {
        // b pings a every step; a's pongs queue behind the block on the a→b link.
        if pings < 50 {
            p.b.conn
                .send(Message::Ping {
                    nonce: 1000 + pings,
                })
                .unwrap();
            pings += 1;
        }
        assert!(p.step(), "stalled");
        block_done = !p.b.messages().is_empty();
        if !block_done {
            pongs_before_block = p.b.conn.stats().pongs_unmatched;
        }
        // The in-flight window keeps the link from holding the whole block.
        assert!(p.pending_a_to_b() <= 1024 * 1024 + 70_000);
    }
    p.drive();
    assert_eq!(p.b.messages(), vec![block]);
    // Every Pong for a Ping sent while the block was in transit arrived before it completed
    // (the last few Pings may be answered after the block's last chunk).
    assert!(
        pongs_before_block >= 45,
        "only {pongs_before_block} pongs before the block"
    );
    assert_eq!(p.b.conn.stats().pongs_unmatched, 50);
}

#[test]
fn keepalive_measures_rtt_and_keeps_a_quiet_link_up() {
    let mut p = Pair::new();
    p.drive();
    p.rate = 1 << 20;
    p.step_time = Duration::from_millis(5);
    let start = p.now;
    p.run_until(start + Duration::from_secs(600));
    assert_eq!(p.a.conn.state(), ConnectionState::Connected);
    let s = p.a.conn.stats();
    assert!(s.pings_sent >= 19, "{}", s.pings_sent);
    assert_eq!(s.pongs_matched, s.pings_sent);
    let rtt = s.srtt.unwrap();
    assert!(
        rtt >= Duration::from_millis(5) && rtt <= Duration::from_millis(20),
        "{rtt:?}"
    );
}

/// Runs a link for ten minutes on which `b` sends `a` a transaction every 5 s (and `a`
/// sends nothing of its own); returns the pings each side sent.
fn pings_on_a_one_way_busy_link(config_a: ConnectionConfig) -> (u64, u64) {
    let mut p = PairBuilder {
        config_a,
        ..Default::default()
    }
    .build();
    p.drive();
    p.rate = 1 << 20;
    p.step_time = Duration::from_millis(5);
    let start = p.now;
    for k in 1..=120u32 {
        p.b.conn
            .send(Message::Transaction {
                data: Bytes::from(k.to_be_bytes().to_vec()),
            })
            .unwrap();
        p.run_until(start + Duration::from_secs(5) * k);
    }
    assert_eq!(p.a.conn.state(), ConnectionState::Connected);
    assert_eq!(p.a.messages().len(), 120);
    for side in [&p.a, &p.b] {
        let s = side.conn.stats();
        assert_eq!(s.pongs_matched, s.pings_sent, "every ping answered");
        assert!(s.srtt.is_some(), "a round-trip sample was taken");
    }
    (p.a.conn.stats().pings_sent, p.b.conn.stats().pings_sent)
}

#[test]
fn a_busy_link_is_pinged_only_to_sample_the_round_trip() {
    // `a` hears from `b` every 5 s, so it needs no keepalive: it pings `b` 30 s after the
    // handshake for a first sample, then every 120 s (at 30, 150, 270, 390 and 510 s).
    // `b` hears only `a`'s pongs and pings: it pings after each 30 s of silence, which
    // `a`'s sample pings break four times (about 15 pings rather than 20).
    let (a, b) = pings_on_a_one_way_busy_link(ConnectionConfig::default());
    assert_eq!(a, 5);
    assert!((14..=16).contains(&b), "{b}");
    // With the sample interval at the ping interval, every link is pinged every 30 s.
    let every_ping = ConnectionConfig {
        rtt_sample_interval: Duration::from_secs(30),
        ..Default::default()
    };
    let (a, _) = pings_on_a_one_way_busy_link(every_ping);
    assert!(a >= 19, "{a}");
}

#[test]
fn silent_peer_is_closed_after_idle_timeout() {
    let mut p = Pair::new();
    p.drive();
    p.blackhole_b_to_a();
    let start = p.now;
    p.run_until(start + Duration::from_secs(200));
    assert_eq!(p.a.close_reason(), Some(&CloseReason::IdleTimeout));
    let closed_at = p.now;
    assert!(closed_at >= start + Duration::from_secs(90));
    // b learns why: a's Goodbye carries the timeout reason.
    assert!(matches!(
        p.b.close_reason(),
        Some(CloseReason::RemoteGoodbye {
            reason: GoodbyeReason::Timeout,
            ..
        })
    ));
}

#[test]
fn handshake_times_out_and_incoming_bytes_do_not_extend_it() {
    let mut p = Pair::new();
    // Deliver nothing from a: b's handshake deadline passes.
    p.blackhole_a_to_b();
    p.drive();
    // Meanwhile trickle one byte per second of a never-complete packet into b.
    let mut t = p.now;
    p.b.conn.handle_bytes(t, &[0, 16]);
    for _ in 0..9 {
        t += Duration::from_secs(1);
        p.b.conn.handle_bytes(t, &[0]);
        p.b.conn.handle_timeout(t);
    }
    assert_eq!(p.b.conn.state(), ConnectionState::Handshaking);
    p.run_until(p.now + Duration::from_secs(11));
    assert_eq!(p.b.close_reason(), Some(&CloseReason::HandshakeTimeout));
    assert_eq!(p.a.close_reason(), Some(&CloseReason::HandshakeTimeout));
}

#[test]
fn network_mismatch_closes_both_sides_with_the_reason() {
    let mut b = PairBuilder::default();
    b.hello_b.network_id = "other-net".into();
    let mut p = b.build();
    p.drive();
    let expected = CloseReason::NetworkMismatch {
        ours: NETWORK.into(),
        theirs: "other-net".into(),
    };
    assert_eq!(p.a.close_reason(), Some(&expected));
    assert_eq!(
        p.b.close_reason(),
        Some(&CloseReason::NetworkMismatch {
            ours: "other-net".into(),
            theirs: NETWORK.into(),
        })
    );
    assert!(p.a.messages().is_empty() && p.b.messages().is_empty());
    assert_eq!(p.a.established(), None);
}

#[test]
fn version_mismatch_closes_and_highest_common_version_wins() {
    let mut b = PairBuilder::default();
    b.hello_a.versions = vec![1, 2];
    b.hello_b.versions = vec![3];
    let mut p = b.build();
    p.drive();
    assert!(matches!(
        p.a.close_reason(),
        Some(CloseReason::VersionMismatch { .. })
    ));
    assert!(matches!(
        p.b.close_reason(),
        Some(CloseReason::VersionMismatch { .. })
    ));

    let mut b = PairBuilder::default();
    b.hello_a.versions = vec![1, 2, 5];
    b.hello_b.versions = vec![2, 1, 4];
    let mut p = b.build();
    p.drive();
    assert_eq!(p.a.conn.version(), Some(2));
    assert_eq!(p.b.conn.version(), Some(2));
}

#[test]
fn identity_mismatch_closes_before_revealing_our_identity() {
    let wrong = keypair(3).peer_id();
    let mut p = PairBuilder {
        pin: Some(wrong),
        ..Default::default()
    }
    .build();
    p.drive();
    assert_eq!(
        p.a.close_reason(),
        Some(&CloseReason::IdentityMismatch {
            expected: wrong,
            actual: keypair(2).peer_id(),
        })
    );
    // b never saw message 3, so never learned a's identity.
    assert_eq!(p.b.conn.peer_id(), None);
    assert_eq!(p.b.close_reason(), Some(&CloseReason::RemoteClosed));

    // The right pin connects.
    let mut p = PairBuilder {
        pin: Some(keypair(2).peer_id()),
        ..Default::default()
    }
    .build();
    p.drive();
    assert_eq!(p.a.conn.state(), ConnectionState::Connected);
}

#[test]
fn connecting_to_ourselves_is_detected() {
    let mut p = PairBuilder {
        key_b: keypair(1),
        ..Default::default()
    }
    .build();
    p.drive();
    assert_eq!(p.a.close_reason(), Some(&CloseReason::SelfConnection));
}

#[test]
fn messages_queued_before_the_handshake_leave_after_it() {
    let mut p = Pair::new();
    p.a.conn
        .send(Message::Transaction {
            data: Bytes::from_static(b"early"),
        })
        .unwrap();
    p.drive();
    assert_eq!(
        p.b.messages(),
        vec![Message::Transaction {
            data: Bytes::from_static(b"early")
        }]
    );
}

#[test]
fn graceful_close_flushes_the_queue_then_says_goodbye() {
    let mut p = Pair::new();
    p.drive();
    p.rate = 10_000;
    for i in 0..100u32 {
        p.a.conn
            .send(Message::App {
                kind: i,
                data: Bytes::from(vec![0; 1000]),
            })
            .unwrap();
    }
    p.a.conn
        .close_gracefully(p.now, p.now + Duration::from_secs(5));
    assert_eq!(
        p.a.conn.send(Message::Ack { message_id: 1 }),
        Err(SendError::Closed)
    );
    p.run_until(p.now + Duration::from_secs(10));
    assert_eq!(p.b.messages().len(), 100);
    assert!(matches!(
        p.b.close_reason(),
        Some(CloseReason::RemoteGoodbye { .. })
    ));
    assert_eq!(p.a.conn.stats().messages_dropped, 0);
}

#[test]
fn graceful_close_drops_what_the_deadline_does_not_allow() {
    let mut p = Pair::new();
    p.drive();
    p.blackhole_a_to_b();
    p.rate = 1000;
    for i in 0..10_000u32 {
        p.a.conn
            .send(Message::App {
                kind: i,
                data: Bytes::from(vec![0; 1000]),
            })
            .unwrap();
    }
    let deadline = p.now + Duration::from_secs(1);
    p.a.conn.close_gracefully(p.now, deadline);
    p.run_until(p.now + Duration::from_secs(3));
    assert_eq!(
        p.a.close_reason(),
        Some(&CloseReason::LocalRequest(GoodbyeReason::Normal))
    );
    assert!(p.a.conn.stats().messages_dropped > 0);
}

#[test]
fn sends_beyond_the_queue_bound_are_refused_not_buffered() {
    let mut p = PairBuilder {
        config_a: ConnectionConfig {
            max_queued_bytes: 8 << 20,
            ..Default::default()
        },
        ..Default::default()
    }
    .build();
    p.drive();
    p.stall_a_to_b();
    let mut refused = 0;
    for _ in 0..10_000 {
        match p.a.conn.send(Message::Transaction {
            data: Bytes::from(vec![0; 10_000]),
        }) {
            Ok(()) => {}
            Err(SendError::QueueFull) => refused += 1,
            Err(e) => panic!("{e}"),
        }
        p.step();
    }
    assert!(refused > 0);
    // Memory: the queue bound plus the in-flight window plus one frame of slack.
    assert!(p.a.conn.buffered_bytes() <= (8 << 20) + (1 << 20) + 70_000 * 2);
    assert_eq!(
        p.a.conn.send(Message::Block {
            data: Bytes::from(vec![0; 9 << 20])
        }),
        Err(SendError::TooLarge {
            len: (9 << 20) + 7,
            max: 8 << 20
        })
    );
}

#[test]
fn a_peer_that_does_not_read_its_pongs_is_paused() {
    // b floods a with pings but never reads a's answers: a stops reading b.
    let mut p = PairBuilder {
        config_a: ConnectionConfig {
            reply_backlog_limit: 4096,
            max_in_flight_bytes: 1024,
            ..Default::default()
        },
        ..Default::default()
    }
    .build();
    p.drive();
    p.stall_a_to_b();
    p.rate = 100;
    // Stop a's writes from completing: a's transmits pile up undelivered.
    let mut paused_seen = false;
    for i in 0..20_000u64 {
        let _ = p.b.conn.send(Message::Ping { nonce: i });
        p.step();
        if p.a.paused {
            paused_seen = true;
            break;
        }
    }
    assert!(paused_seen);
    assert!(p.a.conn.is_read_paused());
    // Once b reads again, a's backlog drains and a resumes reading b.
    p.unstall_a_to_b();
    p.rate = 1 << 20;
    p.drive();
    assert!(!p.a.paused);
    assert!(!p.a.conn.is_read_paused());
    assert_eq!(p.a.conn.state(), ConnectionState::Connected);
}
