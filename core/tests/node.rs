//! Multi-node tests: 3 to 50 nodes joined by an in-memory router in virtual time.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use std::net::SocketAddr;

use bytes::Bytes;
use common::net::*;
use silver_p2p_core::node::*;
use silver_p2p_core::*;

#[test]
fn discovery_from_one_bootstrap_reaches_the_target_degree_everywhere() {
    let mut net = Net::star(30, |_, c| {
        c.limits.target_outbound = 4;
    });
    net.run_for(Duration::from_secs(120));
    // The bootstrap node's degree is its inbound peers (everyone dialed it first, so it
    // cannot dial them back: one connection per identity); every other node dials 4.
    assert!(net.nodes[0].node.peers().len() >= 4);
    for i in 1..30 {
        assert!(
            net.outbound(i) >= 4,
            "node {i} has {} outbound peers",
            net.outbound(i)
        );
        assert!(net.nodes[i].node.address_book().len() >= 4);
    }
    // The bootstrap node is not everyone's only peer: the graph spread out.
    let boot = net.id(0);
    let through_boot = (1..30)
        .filter(|i| net.nodes[*i].node.peers().iter().all(|p| p.peer == boot))
        .count();
    assert_eq!(through_boot, 0);
}

#[test]
fn occupancy_counts_what_the_node_holds() {
    let mut net = Net::star(12, |_, c| {
        c.limits.target_outbound = 3;
    });
    // Every 50 ms through discovery, so some looks catch connections mid-handshake.
    let mut saw_handshakes = false;
    for _ in 0..60 {
        net.run_for(Duration::from_millis(50));
        for i in 0..12 {
            let n = &net.nodes[i].node;
            let o = n.occupancy();
            saw_handshakes |= o.handshaking > 0;
            // A handshaking connection is not a peer yet; a peer's connection is open.
            assert!(
                o.inbound + o.outbound >= o.peers + o.handshaking,
                "node {i}: {o:?}"
            );
            assert_eq!(o.peers, n.peers().len());
        }
    }
    assert!(saw_handshakes);
    net.run_for(Duration::from_secs(60));
    for i in 0..12 {
        let n = &net.nodes[i].node;
        let o = n.occupancy();
        let peers = n.peers();
        let by = |d: Direction| peers.iter().filter(|p| p.direction == d).count();
        assert_eq!(
            (o.inbound, o.outbound, o.handshaking, o.peers),
            (
                by(Direction::Inbound),
                by(Direction::Outbound),
                0,
                peers.len()
            ),
            "node {i}"
        );
        let tried = n.address_book().iter().filter(|(_, a)| a.in_tried).count();
        assert_eq!(
            (o.address_book_new, o.address_book_tried),
            (n.address_book().len() - tried, tried)
        );
        assert_eq!(
            o.address_book_tried > 0,
            o.outbound > 0,
            "node {i}: dialed peers are tried"
        );
        assert_eq!(o.buffered_bytes, n.buffered_bytes());
        // The cheap listing is the full one without the details.
        let mut full: Vec<_> = peers.iter().map(|p| (p.peer, p.conn)).collect();
        let mut cheap: Vec<_> = n.peer_connections().collect();
        full.sort();
        cheap.sort();
        assert_eq!(cheap, full, "node {i}");
    }
    assert!(net.nodes[0].node.occupancy().inbound >= 3);
    let bans = net.nodes[0].node.occupancy().active_bans;
    let someone = net.id(5);
    net.with(0, |n, now| n.ban(now, someone, Duration::from_secs(60)));
    assert_eq!(net.nodes[0].node.occupancy().active_bans, bans + 1);
}

#[test]
fn a_broadcast_reaches_every_node_exactly_once() {
    let mut net = Net::star(20, |_, c| c.limits.target_outbound = 3);
    net.run_for(Duration::from_secs(60));
    let msg = GossipMessage::Block(Bytes::from_static(b"block 1"));
    let report = net
        .with(7, |n, now| {
            n.broadcast(now, msg.clone(), BroadcastOptions::default())
        })
        .unwrap();
    assert!(report.queued() >= 3);
    net.run_for(Duration::from_secs(5));
    for i in 0..20 {
        let expected = if i == 7 { 0 } else { 1 };
        assert_eq!(net.gossip_count(i, &report.id), expected, "node {i}");
    }
    let dups: u64 = (0..20)
        .map(|i| net.nodes[i].node.stats(net.now).counters.gossip_duplicates)
        .sum();
    assert!(
        dups > 0,
        "flooding sends duplicates that the seen-cache drops"
    );
    // Never echoed to its source: node 7 received no copy.
    assert_eq!(
        net.nodes[7].node.stats(net.now).counters.gossip_duplicates,
        0
    );
}

#[test]
fn a_large_block_broadcast_arrives_whole_everywhere() {
    let mut net = Net::star(6, |_, c| c.limits.target_outbound = 2);
    net.run_for(Duration::from_secs(30));
    let block = GossipMessage::Block(Bytes::from(vec![3u8; 1 << 20]));
    let r = net
        .with(1, |n, now| {
            n.broadcast(now, block.clone(), BroadcastOptions::default())
        })
        .unwrap();
    net.run_for(Duration::from_secs(10));
    for i in [0, 2, 3, 4, 5] {
        assert_eq!(net.gossip_count(i, &r.id), 1);
    }
}

#[test]
fn a_unicast_is_delivered_once_although_its_connection_drops() {
    let mut net = Net::star(3, |_, c| {
        c.limits.target_outbound = 1;
        c.unicast.ack_timeout = Duration::from_millis(500);
    });
    net.run_for(Duration::from_secs(10));
    let (a, b) = (1, 0); // node 1 is connected to the bootstrap node 0 (persistent)
    let peer_b = net.id(b);
    assert!(net.nodes[a].node.is_connected(&peer_b));
    // The Ack from b is lost, then the connection resets.
    net.cut.insert((b, a));
    let id = net
        .with(a, |n, now| {
            n.unicast(now, &peer_b, 9, Bytes::from_static(b"pay 5"))
        })
        .unwrap();
    net.run_for(Duration::from_millis(100));
    net.reset_links(a, b);
    net.cut.clear();
    net.run_for(Duration::from_secs(20));
    let delivered: Vec<_> = net.nodes[b]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Unicast { kind: 9, .. }))
        .collect();
    assert_eq!(
        delivered.len(),
        1,
        "delivered exactly once to the application"
    );
    assert!(net.nodes[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::UnicastDelivered { id: d, .. } if *d == id)));
    let s = net.nodes[b].node.stats(net.now);
    assert!(
        s.counters.unicast_duplicates >= 1,
        "the retry was suppressed at the receiver"
    );
    assert!(net.nodes[a].node.stats(net.now).counters.unicast_retries >= 1);
}

#[test]
fn a_unicast_to_an_unreachable_peer_fails_with_a_reason() {
    let mut net = Net::star(2, |_, c| {
        c.unicast.timeout = Duration::from_secs(5);
        c.unicast.dedup_ttl = Duration::from_secs(5);
    });
    net.run_for(Duration::from_secs(5));
    net.cut.insert((0, 1));
    net.cut.insert((1, 0));
    let peer = net.id(0);
    let id = net
        .with(1, |n, now| {
            n.unicast(now, &peer, 1, Bytes::from_static(b"x"))
        })
        .unwrap();
    net.run_for(Duration::from_secs(10));
    assert!(net.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::UnicastFailed { id: f, reason: UnicastFailure::Timeout | UnicastFailure::AttemptsExhausted(_), .. } if *f == id
    )));
}

#[test]
fn requests_are_answered_matched_and_time_out() {
    let mut net = Net::star(2, |_, _| {});
    net.run_for(Duration::from_secs(5));
    let server = net.id(0);
    let id = net
        .with(1, |n, now| {
            n.request(now, &server, Request::GetBlock(Bytes::from_static(b"h1")))
        })
        .unwrap();
    net.run_for(Duration::from_millis(50));
    let inbound = net.nodes[0]
        .events
        .iter()
        .find_map(|e| match e {
            Event::Request {
                id,
                request: Request::GetBlock(h),
                ..
            } if h == "h1" => Some(*id),
            _ => None,
        })
        .expect("request arrived");
    net.with(0, |n, now| {
        n.respond(now, inbound, Some(Bytes::from_static(b"block h1")))
    })
    .unwrap();
    // Answering twice is a local error.
    assert_eq!(
        net.with(0, |n, now| n.respond(now, inbound, None)),
        Err(CommandError::UnknownId)
    );
    net.run_for(Duration::from_millis(50));
    assert!(net.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::Response { id: r, result: Ok(d), .. } if *r == id && d == "block h1"
    )));
    // A request nobody answers times out.
    let id2 = net
        .with(1, |n, now| {
            n.request(
                now,
                &server,
                Request::App {
                    kind: 3,
                    data: Bytes::new(),
                },
            )
        })
        .unwrap();
    net.run_for(Duration::from_secs(11));
    assert!(net.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::Response { id: r, result: Err(RequestFailure::Timeout), .. } if *r == id2
    )));
}

#[test]
fn the_in_flight_cap_refuses_excess_requests() {
    let mut net = Net::star(2, |_, c| c.requests.max_in_flight_per_peer = 2);
    net.run_for(Duration::from_secs(5));
    let server = net.id(0);
    for _ in 0..2 {
        net.with(1, |n, now| {
            n.request(now, &server, Request::GetTransaction(Bytes::new()))
        })
        .unwrap();
    }
    assert_eq!(
        net.with(1, |n, now| n.request(
            now,
            &server,
            Request::GetTransaction(Bytes::new())
        )),
        Err(CommandError::Full("requests in flight to this peer"))
    );
}

#[test]
fn bans_disconnect_and_expire() {
    let mut net = Net::star(2, |_, c| {
        c.reconnect.base_ms = 500;
        c.reconnect.cap_ms = 2000;
    });
    net.run_for(Duration::from_secs(5));
    let boot = net.id(0);
    net.with(1, |n, now| n.ban(now, boot, Duration::from_secs(30)));
    net.run_for(Duration::from_secs(10));
    assert!(!net.nodes[1].node.is_connected(&boot));
    assert!(net.nodes[1].node.is_banned(net.now, &boot));
    net.run_for(Duration::from_secs(30));
    assert!(!net.nodes[1].node.is_banned(net.now, &boot));
    assert!(
        net.nodes[1].node.is_connected(&boot),
        "the persistent peer came back"
    );
}

#[test]
fn eviction_keeps_the_protected_peers() {
    // Node 0 has room for 4 inbound peers; 6 try to connect.
    let mut net = Net::star(7, |i, c| {
        if i == 0 {
            c.limits.max_inbound = 4;
            c.limits.protect_by_rtt = 1;
            c.limits.protect_by_usefulness = 0;
            c.limits.protect_by_uptime = 2;
        }
        c.limits.target_outbound = 1;
    });
    // Stagger arrivals so uptimes differ: nodes 1..=4 first.
    for i in 5..7 {
        net.nodes[i].up = false;
    }
    net.run_for(Duration::from_secs(40));
    let oldest: Vec<PeerId> = (1..=4).map(|i| net.id(i)).collect();
    let before: Vec<PeerId> = net.nodes[0]
        .node
        .peers()
        .iter()
        .filter(|p| p.direction == Direction::Inbound)
        .map(|p| p.peer)
        .collect();
    assert_eq!(before.len(), 4);
    for i in 5..7 {
        net.nodes[i].up = true;
    }
    net.run_for(Duration::from_secs(60));
    let after: Vec<PeerInfo> = net.nodes[0]
        .node
        .peers()
        .into_iter()
        .filter(|p| p.direction == Direction::Inbound)
        .collect();
    assert!(after.len() <= 4);
    assert!(net.nodes[0].node.stats(net.now).counters.evicted >= 1);
    // The longest-connected peers are protected by uptime (and one by RTT) and stay.
    let mut protected = 0;
    for p in &oldest {
        if after.iter().any(|a| a.peer == *p) {
            protected += 1;
        }
    }
    assert!(protected >= 2, "protected peers were evicted");
}

#[test]
fn shutdown_completes_within_its_grace_period_and_reports() {
    let mut net = Net::star(5, |_, c| c.limits.target_outbound = 2);
    net.run_for(Duration::from_secs(30));
    let peers = net.nodes[0].node.peers().len();
    assert!(peers >= 2);
    let start = net.now;
    net.with(0, |n, now| n.shutdown(now, Duration::from_secs(3)));
    net.with(0, |n, now| n.shutdown(now, Duration::from_secs(3))); // harmless
    net.run_for(Duration::from_secs(5));
    let reports: Vec<&ShutdownReport> = net.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ShutdownComplete(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].peers_closed, peers);
    assert!(net.now <= start + Duration::from_secs(5));
    assert_eq!(net.nodes[0].node.peers().len(), 0);
    // Peers learned why.
    for i in 1..5 {
        assert!(
            net.nodes[i].events.iter().any(|e| matches!(
                e,
                Event::PeerDisconnected {
                    reason: CloseReason::RemoteGoodbye { .. },
                    ..
                }
            )) || !net.nodes[i]
                .node
                .peers()
                .iter()
                .any(|p| p.peer == net.id(0))
        );
    }
    assert_eq!(
        net.with(0, |n, now| n.broadcast(
            now,
            GossipMessage::Transaction(Bytes::new()),
            BroadcastOptions::default()
        )),
        Err(CommandError::ShuttingDown)
    );
}

#[test]
fn validate_mode_relays_only_accepted_gossip() {
    let mut net = Net::star(4, |_, c| {
        c.gossip.relay = RelayMode::Validate;
        c.limits.target_outbound = 1;
    });
    net.run_for(Duration::from_secs(20));
    // Node 0 (the hub) receives from 1 and must accept before 2 and 3 see it.
    let m = GossipMessage::Transaction(Bytes::from_static(b"tx"));
    let r = net
        .with(1, |n, now| {
            n.broadcast(
                now,
                m.clone(),
                BroadcastOptions {
                    exclude: vec![],
                    ..Default::default()
                },
            )
        })
        .unwrap();
    net.run_for(Duration::from_secs(1));
    let hub_has = net.gossip_count(0, &r.id);
    assert_eq!(hub_has, 1);
    let before: usize = (2..4).map(|i| net.gossip_count(i, &r.id)).sum();
    net.with(0, |n, now| {
        n.validation_result(now, r.id, Validation::Accept)
    })
    .unwrap();
    net.run_for(Duration::from_secs(1));
    let after: usize = (2..4).map(|i| net.gossip_count(i, &r.id)).sum();
    assert!(after > before || before == 2);
}

#[test]
fn a_restarted_node_keeps_its_address_book_and_bans_and_reconnects_without_bootstrap() {
    let mut net = Net::star(6, |_, c| c.limits.target_outbound = 3);
    net.run_for(Duration::from_secs(60));
    let banned = key(99).peer_id();
    net.with(3, |n, now| n.ban(now, banned, Duration::from_secs(3600)));
    let snapshot = net.nodes[3].node.snapshot(net.now);
    let known = net.nodes[3].node.address_book().len();
    assert!(known >= 4);
    // Restart node 3 with no bootstrap at all, and take the bootstrap node down.
    net.nodes[0].up = false;
    let mut config = config_for(3, None);
    config.limits.target_outbound = 3;
    net.restart(3, config, key(3), Some(snapshot));
    assert_eq!(net.nodes[3].node.address_book().len(), known);
    assert!(net.nodes[3].node.is_banned(net.now, &banned));
    net.run_for(Duration::from_secs(60));
    assert!(net.outbound(3) >= 2, "reconnected from its address book");
}

#[test]
fn a_corrupt_snapshot_is_refused_with_a_reason() {
    let mut n = Node::new(config_for(0, None), key(0), [0; 32], Timestamp::ZERO).unwrap();
    assert!(matches!(
        n.restore(Timestamp::ZERO, b"\xff\x00garbage"),
        Err(NodeSnapshotError::Malformed(_))
    ));
    let good = n.snapshot(Timestamp::ZERO);
    let mut bad = good.clone();
    let l = bad.len();
    bad.truncate(l - 3);
    assert!(n.restore(Timestamp::ZERO, &bad).is_err());
    assert!(n.restore(Timestamp::ZERO, &good).is_ok());
}

#[test]
fn simultaneous_dials_leave_exactly_one_connection_on_both_sides() {
    let mut net = Net::new();
    for i in 0..2 {
        let mut c = config_for(i, None);
        c.limits.target_outbound = 0;
        net.add(c, key(i));
    }
    let a0 = PeerAddr::pinned(net.id(0), node_addr(0));
    let a1 = PeerAddr::pinned(net.id(1), node_addr(1));
    net.with(0, |n, now| n.connect(now, a1)).unwrap();
    net.with(1, |n, now| n.connect(now, a0)).unwrap();
    net.run_for(Duration::from_secs(5));
    let p0 = net.nodes[0].node.peers();
    let p1 = net.nodes[1].node.peers();
    assert_eq!(p0.len(), 1);
    assert_eq!(p1.len(), 1);
    // Both kept the same connection: one side's outbound is the other's inbound.
    assert_ne!(p0[0].direction, p1[0].direction);
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.nodes[0].node.peers().len(), 1);
    // The application's view agrees: connects minus disconnects is the peer count.
    for i in 0..2 {
        let ev = &net.nodes[i].events;
        let up = ev
            .iter()
            .filter(|e| matches!(e, Event::PeerConnected { .. }))
            .count();
        let down = ev
            .iter()
            .filter(|e| matches!(e, Event::PeerDisconnected { .. }))
            .count();
        assert_eq!(up - down, net.nodes[i].node.peers().len(), "node {i}");
    }
}

#[test]
fn a_flooding_peer_is_paused_then_banned_for_sustained_abuse() {
    let mut net = Net::star(2, |i, c| {
        if i == 0 {
            c.rate_limit.messages_per_sec = 50;
            c.rate_limit.message_burst = 50;
            c.rate_limit.abuse_threshold = 3;
            c.bans.rate_limit_abuse = 50;
        }
    });
    net.run_for(Duration::from_secs(5));
    let mut i = 0u32;
    for _ in 0..40 {
        for _ in 0..100 {
            i += 1;
            let m = GossipMessage::Transaction(Bytes::from(i.to_be_bytes().to_vec()));
            let _ = net.with(1, |n, now| n.broadcast(now, m, BroadcastOptions::default()));
        }
        net.run_for(Duration::from_millis(200));
    }
    let s = net.nodes[0].node.stats(net.now);
    assert!(s.counters.rate_limit_pauses >= 1);
    assert!(net.nodes[0].node.is_banned(net.now, &net.id(1)));
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::Banned {
            reason: BanReason::Misbehaviour(_),
            ..
        }
    )));
}

#[test]
fn rate_limiting_pauses_without_losing_messages() {
    let mut net = Net::star(2, |i, c| {
        if i == 0 {
            c.rate_limit.messages_per_sec = 100;
            c.rate_limit.message_burst = 100;
            c.rate_limit.abuse_threshold = 1000;
        }
    });
    net.run_for(Duration::from_secs(5));
    for i in 0..500u32 {
        let m = GossipMessage::Transaction(Bytes::from(i.to_be_bytes().to_vec()));
        net.with(1, |n, now| n.broadcast(now, m, BroadcastOptions::default()))
            .unwrap();
    }
    net.run_for(Duration::from_secs(10));
    let got = net.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Gossip { .. }))
        .count();
    assert_eq!(got, 500);
    assert!(net.nodes[0].node.stats(net.now).counters.rate_limit_pauses >= 1);
    assert!(!net.nodes[0].node.is_banned(net.now, &net.id(1)));
}

#[test]
fn an_unresponsive_outbound_peer_is_replaced() {
    let mut net = Net::star(6, |_, c| {
        c.limits.target_outbound = 2;
        c.health.min_age = Duration::from_secs(10);
        c.connection.ping_interval = Duration::from_secs(2);
        c.connection.idle_timeout = Duration::from_secs(300);
    });
    net.run_for(Duration::from_secs(30));
    let victim = net.nodes[5].node.peers()[0].clone();
    let j = (0..6).find(|j| net.id(*j) == victim.peer).unwrap();
    // j stops answering node 5 (its pongs are lost).
    net.cut.insert((j, 5));
    net.run_for(Duration::from_secs(30));
    assert!(net.nodes[5].node.stats(net.now).counters.replaced_unhealthy >= 1);
    assert!(!net.nodes[5].node.is_connected(&victim.peer));
    assert!(net.outbound(5) >= 2, "replaced by another peer");
}

#[test]
fn no_honest_node_is_banned_for_a_partition() {
    let mut net = Net::star(8, |_, c| c.limits.target_outbound = 3);
    net.run_for(Duration::from_secs(30));
    for a in 0..4 {
        for b in 4..8 {
            net.cut.insert((a, b));
            net.cut.insert((b, a));
        }
    }
    net.run_for(Duration::from_secs(300));
    net.cut.clear();
    net.run_for(Duration::from_secs(300));
    for i in 0..8 {
        let s = net.nodes[i].node.stats(net.now);
        assert_eq!(s.active_bans, 0, "node {i} banned someone");
        assert!(net.outbound(i) >= 1 || i == 0);
    }
    // And after healing a broadcast reaches everyone.
    let r = net
        .with(4, |n, now| {
            n.broadcast(
                now,
                GossipMessage::Block(Bytes::from_static(b"healed")),
                BroadcastOptions::default(),
            )
        })
        .unwrap();
    net.run_for(Duration::from_secs(5));
    for i in 0..8 {
        if i != 4 {
            assert_eq!(net.gossip_count(i, &r.id), 1, "node {i}");
        }
    }
}

#[test]
fn inbound_limits_per_ip_and_handshakes_are_enforced() {
    let mut c = config_for(0, None);
    c.limits.max_inbound_per_ip = 2;
    c.limits.max_pending_handshakes = 3;
    let mut n = Node::new(c, key(0), [0; 32], Timestamp::ZERO).unwrap();
    let ip = |a: u8, port: u16| SocketAddr::from(([10, 9, 9, a], port));
    assert!(n.accept(Timestamp::ZERO, ip(1, 1)).is_ok());
    assert!(n.accept(Timestamp::ZERO, ip(1, 2)).is_ok());
    assert_eq!(
        n.accept(Timestamp::ZERO, ip(1, 3)),
        Err(AcceptError::PerIpLimit)
    );
    assert!(n.accept(Timestamp::ZERO, ip(2, 1)).is_ok());
    assert_eq!(
        n.accept(Timestamp::ZERO, ip(3, 1)),
        Err(AcceptError::TooManyHandshakes)
    );
    n.ban_ip(Timestamp::ZERO, ip(4, 0).ip(), Duration::from_secs(10));
    assert_eq!(
        n.accept(Timestamp::ZERO, ip(4, 1)),
        Err(AcceptError::Banned)
    );
    assert_eq!(n.stats(Timestamp::ZERO).counters.inbound_refused, 3);
}

/// A hand-driven peer connected to a node, sending whatever frames a test wants.
struct RawInto {
    node: Node,
    conn: ConnectionId,
    raw: common::RawPeer,
    now: Timestamp,
}

impl RawInto {
    fn new(mut config: NodeConfig) -> RawInto {
        config.network_id = common::NETWORK.into();
        let now = Timestamp::from_secs(1);
        let mut node = Node::new(config, key(0), [0; 32], now).unwrap();
        let conn = node.accept(now, "10.50.0.1:4000".parse().unwrap()).unwrap();
        let raw = common::RawPeer::connect_with(key(42), |bytes| {
            node.handle_input(now, Input::Received { conn, bytes });
            Self::transmits(&mut node, conn)
        });
        assert!(node.is_connected(&key(42).peer_id()));
        RawInto {
            node,
            conn,
            raw,
            now,
        }
    }

    fn transmits(node: &mut Node, conn: ConnectionId) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(o) = node.poll_output() {
            if let Output::Transmit { conn: c, bytes } = o {
                if c == conn {
                    node.handle_input(
                        Timestamp::from_secs(1),
                        Input::Written {
                            conn,
                            bytes: bytes.len(),
                        },
                    );
                    out.extend_from_slice(&bytes);
                }
            }
        }
        out
    }

    fn send(&mut self, msgs: &[Message]) {
        let mut plain = Vec::new();
        for m in msgs {
            m.encode(&mut plain);
        }
        let pkt = self.raw.frame(&plain);
        self.node.handle_input(
            self.now,
            Input::Received {
                conn: self.conn,
                bytes: &pkt,
            },
        );
        Self::transmits(&mut self.node, self.conn);
    }

    fn misbehaviour(&self) -> u32 {
        self.node
            .peers()
            .first()
            .map(|p| p.misbehaviour)
            .unwrap_or(u32::MAX)
    }
}

#[test]
fn unsolicited_responses_are_penalised_and_late_ones_are_not() {
    let mut c = config_for(0, None);
    c.bans.unsolicited_response = 30;
    let mut r = RawInto::new(c);
    r.send(&[Message::Response {
        request_id: 77,
        data: Bytes::new(),
    }]);
    assert_eq!(r.misbehaviour(), 30);
    assert_eq!(r.node.stats(r.now).counters.unsolicited_responses, 1);
    // An answer that arrives after our timeout is slow, not hostile.
    let peer = key(42).peer_id();
    let id = r
        .node
        .request(r.now, &peer, Request::GetBlock(Bytes::from_static(b"h")))
        .unwrap();
    RawInto::transmits(&mut r.node, r.conn);
    r.now += Duration::from_secs(11);
    r.node.handle_input(r.now, Input::Timeout);
    RawInto::transmits(&mut r.node, r.conn);
    r.send(&[Message::Response {
        request_id: id.0,
        data: Bytes::new(),
    }]);
    assert_eq!(r.misbehaviour(), 30);
    // Four more reach the threshold of 100: banned and disconnected.
    for id in 0..3 {
        r.send(&[Message::NotFound {
            request_id: id + 100,
        }]);
    }
    assert!(r.node.is_banned(r.now, &key(42).peer_id()));
    assert!(!r.node.is_connected(&key(42).peer_id()));
}

#[test]
fn unsolicited_address_floods_are_rate_limited() {
    let mut c = config_for(0, None);
    c.discovery.unsolicited_addrs_burst = 100;
    let mut r = RawInto::new(c);
    let addrs: Vec<PeerAddr> = (0..1000u32)
        .map(|i| {
            format!("11.{}.{}.1:7000", i / 200 + 1, i % 200 + 1)
                .parse()
                .unwrap()
        })
        .collect();
    r.send(&[Message::Peers { addrs }]);
    let s = r.node.stats(r.now);
    assert_eq!(s.counters.addrs_received, 1000);
    assert_eq!(s.counters.addrs_dropped, 900);
    assert!(r.node.address_book().len() <= 100);
    // Not misbehaviour: dropped and counted only.
    assert_eq!(r.misbehaviour(), 0);
}

#[test]
fn get_peers_is_answered_once_per_interval_with_a_bounded_sample() {
    let mut c = config_for(0, None);
    for i in 0..50u8 {
        c.bootstrap
            .push(format!("12.{i}.0.1:7000").parse().unwrap());
    }
    c.limits.target_outbound = 0;
    let mut r = RawInto::new(c);
    r.send(&[Message::GetPeers { max: 10 }]);
    r.send(&[Message::GetPeers { max: 10 }]);
    let s = r.node.stats(r.now);
    assert_eq!(s.counters.get_peers_answered, 1);
    assert_eq!(s.counters.get_peers_ignored, 1);
}

#[test]
fn a_protocol_violation_bans_the_peer() {
    let mut r = RawInto::new(config_for(0, None));
    let pkt = r.raw.frame(&[0x81, 0x18, 200]); // unknown message kind
    r.node.handle_input(
        r.now,
        Input::Received {
            conn: r.conn,
            bytes: &pkt,
        },
    );
    let mut banned = false;
    while let Some(o) = r.node.poll_output() {
        if let Output::Event(Event::Banned { peer: Some(p), .. }) = o {
            banned = p == key(42).peer_id();
        }
    }
    assert!(banned);
    assert!(!r.node.is_connected(&key(42).peer_id()));
}

#[test]
fn each_message_class_has_its_own_rate() {
    // Requests limited to 5/s (burst 10): a burst of 40 requests pauses reading the peer,
    // while its gossip class is untouched.
    let mut net = Net::star(2, |i, c| {
        if i == 0 {
            c.rate_limit.per_class.requests = 5;
            c.requests.max_inbound_per_peer = 1000;
        }
        c.requests.max_in_flight_per_peer = 1000;
    });
    net.run_for(Duration::from_secs(5));
    let server = net.id(0);
    for _ in 0..40 {
        net.with(1, |n, now| {
            n.request(now, &server, Request::GetTransaction(Bytes::new()))
        })
        .unwrap();
    }
    net.run_for(Duration::from_millis(100));
    let s = net.nodes[0].node.stats(net.now);
    assert!(s.counters.rate_limit_pauses >= 1);
    // Reading resumes: every request arrives in the end.
    net.run_for(Duration::from_secs(10));
    let got = net.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Request { .. }))
        .count();
    assert_eq!(got, 40);
}

#[test]
fn each_broadcast_copy_is_tracked_until_written_or_failed() {
    let mut net = Net::star(4, |_, c| c.limits.target_outbound = 3);
    net.run_for(Duration::from_secs(30));
    let r = net
        .with(1, |n, now| {
            n.broadcast(
                now,
                GossipMessage::Transaction(Bytes::from_static(b"t1")),
                BroadcastOptions::default(),
            )
        })
        .unwrap();
    let n = r.queued();
    assert!(n >= 2);
    net.run_for(Duration::from_secs(1));
    let status = net.nodes[1].node.broadcast_status(&r.id).unwrap();
    assert!(
        status.iter().all(|(_, s)| *s == BroadcastStatus::Written),
        "{status:?}"
    );
    let complete: Vec<_> = net.nodes[1]
        .events
        .iter()
        .filter(|e| matches!(e, Event::BroadcastComplete { id, .. } if *id == r.id))
        .collect();
    assert!(
        matches!(
            complete.as_slice(),
            [Event::BroadcastComplete { written, dropped: 0, failed: 0, .. }] if *written == n
        ),
        "exactly one completion with every copy written: {complete:?}"
    );
}

#[test]
fn a_broadcast_copy_not_written_before_the_connection_closes_is_failed() {
    let mut r = RawInto::new(config_for(0, None));
    let b = r
        .node
        .broadcast(
            r.now,
            GossipMessage::Block(Bytes::from_static(b"b")),
            BroadcastOptions::default(),
        )
        .unwrap();
    // Take the transmit but never report it written, then the socket dies.
    while r.node.poll_output().is_some() {}
    assert_eq!(
        r.node.broadcast_status(&b.id).unwrap(),
        vec![(key(42).peer_id(), BroadcastStatus::Queued)]
    );
    r.node.handle_input(
        r.now,
        Input::Closed {
            conn: r.conn,
            error: Some("reset".into()),
        },
    );
    assert_eq!(
        r.node.broadcast_status(&b.id).unwrap(),
        vec![(key(42).peer_id(), BroadcastStatus::Failed)]
    );
    let mut complete = None;
    while let Some(o) = r.node.poll_output() {
        if let Output::Event(Event::BroadcastComplete {
            failed, written, ..
        }) = o
        {
            complete = Some((written, failed));
        }
    }
    assert_eq!(complete, Some((0, 1)));
    assert_eq!(r.node.stats(r.now).counters.broadcast_copies_failed, 1);
}

/// Times at which node 1 (re)connected to its bootstrap node 0, when every connection is
/// reset `hold` after it comes up, over `cycles` cycles.
fn reconnect_times(stable_after_ms: u64, hold: Duration, cycles: usize) -> Vec<Timestamp> {
    let mut net = Net::star(2, |i, c| {
        c.reconnect.stable_after_ms = stable_after_ms;
        if i == 0 {
            // The bootstrap node never dials back: only node 1's redials are measured.
            c.limits.target_outbound = 0;
        }
    });
    let boot = net.id(0);
    let mut times = Vec::new();
    let deadline = net.now + Duration::from_secs(3600);
    while times.len() < cycles && net.now < deadline {
        net.run_for(Duration::from_millis(50));
        if net.nodes[1].node.is_connected(&boot) {
            times.push(net.now);
            net.run_for(hold);
            net.reset_links(1, 0);
            net.reset_links(0, 1);
        }
    }
    assert_eq!(times.len(), cycles, "node 1 kept reconnecting");
    times
}

#[test]
fn a_persistent_peer_that_keeps_dropping_us_is_redialed_ever_more_slowly() {
    let gaps = |t: &[Timestamp]| -> Vec<Duration> {
        t.windows(2)
            .map(|w| w[1].saturating_duration_since(w[0]))
            .collect()
    };
    // Dropped a second after each handshake: never stable, so failures accumulate
    // (ceilings 1, 2, 4, 8, 16, 32 s with full jitter).
    let flapping = gaps(&reconnect_times(60_000, Duration::from_secs(1), 8));
    let flapping_total: Duration = flapping.iter().sum();
    // With the backoff reset on every handshake, each redial comes within the base delay.
    let resetting = gaps(&reconnect_times(0, Duration::from_secs(1), 8));
    let resetting_total: Duration = resetting.iter().sum();
    assert!(
        resetting.iter().all(|g| *g <= Duration::from_millis(2500)),
        "{resetting:?}"
    );
    assert!(
        flapping_total > resetting_total * 3,
        "flapping {flapping:?} vs resetting {resetting:?}"
    );
    // Connections that last longer than stable_after_ms reset the backoff every time.
    let stable = gaps(&reconnect_times(60_000, Duration::from_secs(61), 8));
    assert!(
        stable
            .iter()
            .all(|g| g.saturating_sub(Duration::from_secs(61)) <= Duration::from_millis(2500)),
        "{stable:?}"
    );
}

/// A bootstrap node with room for three inbound peers, and six nodes that bootstrap from it
/// and then keep two outbound connections among themselves.
fn full_bootstrap() -> Net {
    Net::star(7, |i, c| {
        if i == 0 {
            c.limits.max_inbound = 3;
            c.limits.target_outbound = 0;
            // Nobody protected, so a newcomer always finds a peer to evict.
            c.limits.protect_by_rtt = 0;
            c.limits.protect_by_usefulness = 0;
            c.limits.protect_by_uptime = 0;
        } else {
            c.limits.target_outbound = 2;
        }
    })
}

#[test]
fn a_full_persistent_peer_is_left_alone_while_the_node_has_its_outbound_peers() {
    let mut net = full_bootstrap();
    net.run_for(Duration::from_secs(120));
    let boot = net.id(0);
    // Six nodes want three slots: each comeback sends another node away. The evictions must
    // stop once the evicted nodes have their outbound peers without the bootstrap node.
    let evicted = |net: &Net| net.nodes[0].node.stats(net.now).counters.evicted;
    let early = evicted(&net);
    assert!(early >= 3, "the later dialers made room");
    net.run_for(Duration::from_secs(1800));
    assert_eq!(
        evicted(&net),
        early,
        "no eviction after the first two minutes"
    );
    for i in 1..7 {
        assert!(net.outbound(i) >= 2, "n{i} found its own peers");
    }
    let outside: Vec<usize> = (1..7)
        .filter(|&i| !net.nodes[i].node.is_connected(&boot))
        .collect();
    assert_eq!(outside.len(), 3, "three hold the bootstrap node's slots");
    let out = outside[0];
    assert!(net.outbound(out) >= 2, "n{out} is at its target without it");

    // Once its other peers are gone for good, the node needs the bootstrap node again.
    for j in (1..7).filter(|&j| j != out) {
        net.nodes[j].up = false;
        for k in 0..7 {
            net.reset_links(j, k);
            net.reset_links(k, j);
        }
    }
    net.run_for(Duration::from_secs(600));
    assert!(
        net.nodes[out].node.is_connected(&boot),
        "below target, n{out} dials the bootstrap node that once sent it away"
    );
}

#[test]
fn a_node_that_dials_only_its_persistent_peers_returns_to_one_that_evicted_it() {
    // Nodes 1 and 2 keep no outbound peers of their own (`target_outbound = 0`): node 0,
    // with room for one of them, is all they dial. Each evicts the other in turn; each must
    // keep coming back, ever more slowly, rather than stay away for good.
    let mut net = Net::star(3, |i, c| {
        c.limits.target_outbound = 0;
        if i == 0 {
            c.limits.max_inbound = 1;
            c.limits.protect_by_rtt = 0;
            c.limits.protect_by_usefulness = 0;
            c.limits.protect_by_uptime = 0;
        }
    });
    let boot = net.id(0);
    let mut connects = [0usize; 3];
    let mut was = [false; 3];
    let deadline = net.now + Duration::from_secs(1800);
    while net.now < deadline {
        net.run_for(Duration::from_millis(100));
        for i in 1..3 {
            let now = net.nodes[i].node.is_connected(&boot);
            if now && !was[i] {
                connects[i] += 1;
            }
            was[i] = now;
        }
    }
    assert!(
        connects[1] >= 3 && connects[2] >= 3,
        "both came back after being evicted: {connects:?}"
    );
    let evicted = net.nodes[0].node.stats(net.now).counters.evicted;
    // The backoff grows with each eviction (ceilings 1, 2, 4, … 300 s): far fewer than one
    // a second.
    assert!(evicted < 60, "{evicted} evictions in 30 minutes");
}

/// The payloads of the direct messages of `kind` node `i` received, as sequence numbers.
fn directs_received(net: &Net, i: usize, kind: u32) -> Vec<u32> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Direct { kind: k, data, .. } if *k == kind => {
                Some(u32::from_be_bytes(data[..4].try_into().unwrap()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn direct_messages_arrive_once_in_order_and_a_full_queue_keeps_the_rest() {
    let mut net = Net::star(2, |_, c| {
        // A small queue, so a batch of 1000 cannot go in at once.
        c.connection.max_queued_messages = 64;
    });
    net.run_for(Duration::from_secs(5));
    let (a, b) = (1, 0);
    let peer_b = net.id(b);
    assert!(net.nodes[a].node.is_connected(&peer_b));

    let mut pending: VecDeque<(u32, Bytes)> = (0..1000u32)
        .map(|i| (5, Bytes::from(i.to_be_bytes().to_vec())))
        .collect();
    let first = net
        .with(a, |n, now| n.send_queued(now, &peer_b, &mut pending))
        .unwrap();
    assert!(
        first.messages > 0 && first.messages < 1000,
        "the queue bound stops the batch: {first:?}"
    );
    assert_eq!(first.refused, 0);
    assert_eq!(first.bytes, first.messages * 4, "4 payload bytes each");
    assert_eq!(
        pending.len(),
        1000 - first.messages,
        "the rest stays queued"
    );
    assert_eq!(
        pending.front().unwrap().1[..],
        (first.messages as u32).to_be_bytes()
    );
    let mut calls = 1;
    while !pending.is_empty() {
        net.run_for(Duration::from_millis(20));
        net.with(a, |n, now| n.send_queued(now, &peer_b, &mut pending))
            .unwrap();
        calls += 1;
        assert!(calls < 1000, "the queue drains as the peer reads");
    }
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        directs_received(&net, b, 5),
        (0..1000).collect::<Vec<_>>(),
        "each message once, in order"
    );
    assert_eq!(net.nodes[a].node.stats(net.now).counters.directs_sent, 1000);
    assert_eq!(
        net.nodes[b].node.stats(net.now).counters.directs_received,
        1000
    );
    // Direct messages are not acknowledged.
    assert!(!net.nodes[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::UnicastDelivered { .. })));
}

#[test]
fn direct_messages_are_refused_with_a_reason() {
    let mut net = Net::star(2, |_, _| {});
    net.run_for(Duration::from_secs(5));
    let (a, b) = (1, 0);
    let (peer_a, peer_b, stranger) = (net.id(a), net.id(b), key(9).peer_id());
    let max = net.nodes[a].node.config().connection.max_message_size;
    let too_large = Bytes::from(vec![0u8; max]);
    net.with(a, |n, now| {
        assert_eq!(
            n.send(now, &stranger, 1, Bytes::new()),
            Err(CommandError::UnknownPeer(stranger))
        );
        assert_eq!(
            n.send(now, &peer_a, 1, Bytes::new()),
            Err(CommandError::SelfTarget)
        );
        assert!(matches!(
            n.send(now, &peer_b, 1, too_large.clone()),
            Err(CommandError::TooLarge { .. })
        ));
        // In a batch, the oversized message is removed and counted; the others go.
        let mut pending: VecDeque<(u32, Bytes)> = VecDeque::from(vec![
            (6, Bytes::from(0u32.to_be_bytes().to_vec())),
            (6, too_large.clone()),
            (6, Bytes::from(1u32.to_be_bytes().to_vec())),
        ]);
        let done = n.send_queued(now, &peer_b, &mut pending).unwrap();
        assert_eq!((done.messages, done.refused), (2, 1));
        assert_eq!(done.bytes, 8 + max);
        assert!(pending.is_empty());
        assert_eq!(
            n.send_queued(now, &stranger, &mut pending),
            Err(CommandError::UnknownPeer(stranger))
        );
    });
    net.run_for(Duration::from_secs(1));
    assert_eq!(directs_received(&net, b, 6), vec![0, 1]);
}

#[test]
fn the_peak_of_buffered_bytes_outlives_the_burst_that_caused_it() {
    let mut net = Net::star(2, |_, _| {});
    net.run_for(Duration::from_secs(5));
    let (a, b) = (1, 0);
    let peer_b = net.id(b);
    let mut pending: VecDeque<(u32, Bytes)> = (0..100)
        .map(|_| (5, Bytes::from(vec![7u8; 10_000])))
        .collect();
    net.with(a, |n, now| {
        n.send_queued(now, &peer_b, &mut pending).unwrap();
        assert!(
            n.buffered_bytes() >= 1_000_000,
            "the burst is queued or framed, not yet handed over: {}",
            n.buffered_bytes()
        );
    });
    net.run_for(Duration::from_secs(1));
    let node = &net.nodes[a].node;
    assert!(
        node.buffered_bytes() < 100_000,
        "drained: {}",
        node.buffered_bytes()
    );
    let peak = node.peak_buffered_bytes();
    assert!(peak >= 1_000_000, "the peak remembers the burst: {peak}");
    assert_eq!(node.stats(net.now).peak_buffered_bytes, peak);
    assert_eq!(directs_received(&net, b, 5).len(), 100);
}

/// Frames are built as outputs are polled, one transmit per connection in turn: a node
/// sending to many peers hands its caller the first peer's bytes before encrypting the
/// rest, and one busy connection cannot hold the others back.
#[test]
fn transmits_to_several_peers_are_built_in_turn_as_they_are_polled() {
    let mut net = Net::star(3, |_, _| {});
    net.run_for(Duration::from_secs(5));
    let peers = [net.id(1), net.id(2)];
    let transmits = net.with(0, |n, now| {
        for peer in &peers {
            // 600 kB each: three transmits of at most 256 KiB per connection.
            let mut pending: VecDeque<(u32, Bytes)> = (0..60)
                .map(|_| (5, Bytes::from(vec![7u8; 10_000])))
                .collect();
            n.send_queued(now, peer, &mut pending).unwrap();
            assert!(pending.is_empty());
        }
        let mut transmits = Vec::new();
        while let Some(out) = n.poll_output() {
            if let Output::Transmit { conn, bytes } = out {
                transmits.push((conn, bytes.len()));
            }
        }
        transmits
    });
    let conns: Vec<_> = transmits.iter().map(|(c, _)| *c).collect();
    assert_eq!(conns.len(), 6, "three transmits each: {transmits:?}");
    assert_ne!(conns[0], conns[1]);
    for (i, c) in conns.iter().enumerate() {
        assert_eq!(*c, conns[i % 2], "the connections alternate: {conns:?}");
    }
    let total: usize = transmits.iter().map(|(_, len)| len).sum();
    assert!(total >= 1_200_000, "every byte was built: {total}");
}

/// Deadlines of the nodes' connections (keepalive checks, idle timeouts) wait for the node's
/// timer grid, as does its periodic maintenance run: however traffic moves them, a node's
/// deadline wakes it only on a whole step from its creation, so once a step at most for all
/// of them. With a zero granularity the same traffic wakes the nodes at keepalive checks all
/// over the clock, more often: that is what the grid saves.
#[test]
fn connection_deadlines_share_the_node_wake_ups_on_its_timer_grid() {
    // (wake-ups, wake-ups off the whole seconds) over every node, and the traffic's span.
    let wakeups = |granularity: Duration| {
        let mut net = Net::star(6, |_, c| c.timer_granularity = granularity);
        let origin = net.now; // every node was created now
        net.run_for(Duration::from_secs(20));
        for n in &mut net.nodes {
            n.wakeups.clear();
        }
        let start = net.now;
        for k in 0..300u32 {
            // Traffic at instants unrelated to the grid keeps moving the keepalive checks.
            let data = Bytes::from(k.to_le_bytes().repeat(16));
            net.with(1 + k as usize % 5, |n, now| {
                n.broadcast(
                    now,
                    GossipMessage::Transaction(data),
                    BroadcastOptions::default(),
                )
            })
            .unwrap();
            net.run_for(Duration::from_millis(737));
        }
        let span_s = (net.now.as_nanos() - start.as_nanos()) / 1_000_000_000;
        assert_eq!(
            net.nodes[0].node.stats(net.now).peers,
            5,
            "no connection was lost"
        );
        let all: Vec<Timestamp> = net.nodes.iter().flat_map(|n| n.wakeups.clone()).collect();
        let off = all
            .iter()
            .filter(|t| (t.as_nanos() - origin.as_nanos()) % 1_000_000_000 != 0)
            .count();
        (all.len() as u64, off, span_s)
    };
    let (gridded, off, span_s) = wakeups(Duration::from_secs(1));
    assert_eq!(off, 0, "every deadline waited for the grid");
    assert!(
        gridded <= 6 * (span_s + 1),
        "at most one wake-up per node and step: {gridded} in {span_s} s"
    );
    let (exact, off, _) = wakeups(Duration::ZERO);
    assert!(
        off > 0 && exact > gridded,
        "exact deadlines: {exact} wake-ups, {off} off the grid; gridded: {gridded}"
    );
}

fn tree(c: &mut NodeConfig) {
    c.gossip.mode = GossipMode::Tree;
}

/// Sum of one counter over every node.
fn total(net: &Net, f: impl Fn(&NodeCounters) -> u64) -> u64 {
    (0..net.nodes.len())
        .map(|i| f(&net.nodes[i].node.stats(net.now).counters))
        .sum()
}

/// `count` broadcasts from nodes chosen in turn (never node 0), `gap` apart; their
/// origins and ids.
fn broadcasts(net: &mut Net, count: usize, gap: Duration) -> Vec<(usize, MessageId)> {
    let n = net.nodes.len();
    (0..count)
        .map(|k| {
            let from = 1 + (k * 7 + 2) % (n - 1);
            let msg = GossipMessage::Transaction(Bytes::from(format!("tx {k} {}", net.now)));
            let r = net
                .with(from, |node, now| {
                    node.broadcast(now, msg, BroadcastOptions::default())
                })
                .unwrap();
            net.run_for(gap);
            (from, r.id)
        })
        .collect()
}

/// Asserts that every node in `nodes` but each broadcast's origin delivered it exactly once.
fn assert_each_delivered_once(
    net: &Net,
    nodes: std::ops::Range<usize>,
    broadcasts: &[(usize, MessageId)],
) {
    for (from, id) in broadcasts {
        for i in nodes.clone().filter(|i| i != from) {
            assert_eq!(net.gossip_count(i, id), 1, "node {i}, message {id}");
        }
    }
}

/// A tree-gossip network of `n` nodes whose announcement rounds (the first at 5 min) are
/// too rare to matter within a test, after `warmup` broadcasts shaped its tree.
fn tree_without_announcements(n: usize, warmup: usize) -> Net {
    let mut net = Net::star(n, |_, c| {
        c.limits.target_outbound = 3;
        tree(c);
        c.gossip.announce_interval = Duration::from_secs(300);
        c.gossip.history = Duration::from_secs(600);
        // Nor the announcement across a pruned link.
        c.gossip.announce_delay = Duration::from_secs(250);
    });
    net.run_for(Duration::from_secs(60));
    broadcasts(&mut net, warmup, Duration::from_secs(2));
    net
}

/// A tree-gossip network of `n` nodes with 3 outbound connections each, a minute after
/// start; `shift` varies the discovery timing, and so the shape of the graph.
fn sparse_tree(n: usize, shift: u64, tweak: impl Fn(&mut NodeConfig)) -> Net {
    let mut net = Net::star(n, |i, c| {
        c.limits.target_outbound = 3;
        tree(c);
        c.discovery.interval = Duration::from_millis(900 + 50 * shift + i as u64);
        tweak(c);
    });
    net.run_for(Duration::from_secs(60));
    net
}

/// A tree-gossip network of `n` nodes (4 outbound each) with default announcements, its
/// tree shaped by 10 broadcasts.
fn shaped_tree(n: usize) -> Net {
    let mut net = Net::star(n, |_, c| {
        c.limits.target_outbound = 4;
        tree(c);
    });
    net.run_for(Duration::from_secs(60));
    broadcasts(&mut net, 10, Duration::from_secs(2));
    net
}

/// An announcement round names to each lazy peer only the messages earlier rounds did not
/// name to it: once every lazy peer has heard of a burst, later rounds name nothing more,
/// however many rounds fall within the history.
#[test]
fn announcement_rounds_name_each_message_to_a_peer_once() {
    let n = 20;
    let mut net = Net::star(n, |_, c| {
        c.limits.target_outbound = 4;
        tree(c);
        // Every lazy peer in every round.
        c.gossip.announce_peers = 64;
        c.gossip.settled_announce_peers = 64;
    });
    net.run_for(Duration::from_secs(60));
    broadcasts(&mut net, 10, Duration::from_secs(2));
    net.run_for(Duration::from_secs(12)); // the shaping burst leaves the history
    let start = total(&net, |c| c.gossip_ids_announced);
    let ids = broadcasts(&mut net, 5, Duration::from_millis(100));
    // Settled and announced: a round every second, `announce_delay` after arrival.
    net.run_for(Duration::from_secs(3));
    assert_each_delivered_once(&net, 0..n, &ids);
    let named = total(&net, |c| c.gossip_ids_announced) - start;
    let links: usize = (0..n)
        .map(|i| net.nodes[i].node.peer_connections().count())
        .sum();
    // Rounds name each id to each lazy peer once; so do the announcements after a Prune.
    assert!(
        named > 0 && named as usize <= 2 * 5 * links,
        "{named} ids named over {links} link ends"
    );
    // Five more rounds while the burst is still in the history: nothing new to name.
    let before = total(&net, |c| c.gossip_ids_announced);
    net.run_for(Duration::from_secs(5));
    assert_eq!(total(&net, |c| c.gossip_ids_announced), before);
}

/// Announcement rounds go to `announce_peers` lazy peers while a node's links change and to
/// `settled_announce_peers` once none has changed for `history`.
#[test]
fn announcement_rounds_go_to_fewer_peers_once_the_links_have_settled() {
    let n = 20;
    // Announcements sent in 10 rounds of a second's broadcast each, once the network had
    // 40 s to settle; and whether any link changed meanwhile (a Prune, a graft, a pull or
    // a new connection).
    let changes = |net: &Net| {
        total(net, |c| {
            c.gossip_prunes_sent
                + c.gossip_grafts_sent
                + c.gossip_ids_wanted
                + c.inbound_accepted
                + c.dials_succeeded
        })
    };
    let window = |settled_peers: usize| {
        let mut net = Net::star(n, |_, c| {
            c.limits.target_outbound = 4;
            tree(c);
            c.gossip.announce_peers = 4;
            c.gossip.settled_announce_peers = settled_peers;
        });
        net.run_for(Duration::from_secs(60));
        broadcasts(&mut net, 40, Duration::from_secs(1));
        let (sent, changed) = (total(&net, |c| c.gossip_announcements_sent), changes(&net));
        broadcasts(&mut net, 10, Duration::from_secs(1));
        let sent = total(&net, |c| c.gossip_announcements_sent) - sent;
        let changed = changes(&net) != changed;
        (net, sent, changed)
    };
    let (_, all, changed) = window(4);
    assert!(
        !changed,
        "the test needs a network whose links stopped changing"
    );
    let (mut net, settled, changed) = window(1);
    assert!(
        !changed,
        "the test needs a network whose links stopped changing"
    );
    // One announcement per node and round at most (each names a second's message or two).
    assert!(
        settled > 0 && settled as usize <= n * 10,
        "{settled} announcements from {n} settled nodes in 10 rounds"
    );
    assert!(
        all > 2 * settled,
        "{all} announcements to 4 peers, {settled} to 1"
    );

    // A link closes: both its ends announce to `announce_peers` again, for `history`. The
    // rounds are measured once three broadcasts have pruned the links the close grafted
    // (and the announcements after those prunes are out), while no link changes.
    let k = 5;
    let peer = net.linked(k)[0];
    net.reset_links(k, peer);
    broadcasts(&mut net, 3, Duration::from_secs(1));
    let sent_by_k = |net: &Net| {
        net.nodes[k]
            .node
            .stats(net.now)
            .counters
            .gossip_announcements_sent
    };
    let (before, changed) = (sent_by_k(&net), changes(&net));
    broadcasts(&mut net, 4, Duration::from_secs(1));
    assert_eq!(changes(&net), changed, "a link changed while measuring");
    let rounds = sent_by_k(&net) - before;
    assert!(
        rounds > 4,
        "node {k} sent {rounds} announcements in 4 rounds within `history` of a link closing"
    );
}

#[test]
fn announcements_never_make_a_healthy_tree_ask_for_copies_already_on_their_way() {
    // Broadcasts every 30 ms: every announcement round falls while some message is still
    // travelling the pushing links (10 ms a hop). Announcing it would make the peer ask
    // for it and graft a link the tree had pruned, and the grafts feed more duplicates
    // and prunes; only messages older than `announce_delay` are announced.
    let n = 30;
    let mut net = shaped_tree(n);
    let before = total(&net, |c| c.gossip_announcements_sent);
    let ids = broadcasts(&mut net, 100, Duration::from_millis(30));
    net.run_for(Duration::from_secs(2));
    assert_each_delivered_once(&net, 0..n, &ids);
    assert!(
        total(&net, |c| c.gossip_announcements_sent) > before,
        "announcement rounds ran"
    );
    assert_eq!(
        total(&net, |c| c.gossip_ids_wanted),
        0,
        "a node asked for a message pushed to it anyway"
    );
}

#[test]
fn a_tree_split_by_crossing_prunes_during_a_burst_is_joined_by_the_pruned_links() {
    // Concurrent broadcasts from many origins prune links at both ends of cycles at once,
    // which can split the pushing links in two while messages are still travelling. With
    // no announcement round within the test, only the announcement across the pruned
    // links (`announce_delay` to twice that after each Prune) can bring the messages
    // across the split. The same bursts with that announcement pushed out of the test's
    // reach leave some node without some message: the splits are real.
    let mut missed_without = 0;
    for shift in 0..6u64 {
        for delay in [Duration::from_millis(200), Duration::from_secs(250)] {
            let n = 30;
            let mut net = sparse_tree(n, shift, |c| {
                c.gossip.announce_interval = Duration::from_secs(300);
                c.gossip.history = Duration::from_secs(600);
                c.gossip.announce_delay = delay;
            });
            let ids = broadcasts(&mut net, 60, Duration::from_millis(3));
            net.run_for(Duration::from_secs(1));
            if delay < Duration::from_secs(1) {
                assert_each_delivered_once(&net, 0..n, &ids);
            } else {
                missed_without += ids
                    .iter()
                    .flat_map(|(from, id)| (0..n).filter(move |i| i != from).map(move |i| (i, id)))
                    .filter(|(i, id)| net.gossip_count(*i, id) == 0)
                    .count();
            }
        }
    }
    assert!(
        missed_without > 0,
        "no burst split the tree: the test shows nothing"
    );
}

#[test]
fn tree_gossip_prunes_to_about_one_copy_per_node_and_still_reaches_everyone() {
    let n = 30;
    let mut flood = Net::star(n, |_, c| c.limits.target_outbound = 4);
    let mut treed = Net::star(n, |_, c| {
        c.limits.target_outbound = 4;
        tree(c);
    });
    for net in [&mut flood, &mut treed] {
        net.run_for(Duration::from_secs(60));
        // The first broadcasts shape the tree.
        broadcasts(net, 10, Duration::from_secs(2));
    }
    let dups_before = [&flood, &treed].map(|net| total(net, |c| c.gossip_duplicates));
    let ids_flood = broadcasts(&mut flood, 10, Duration::from_secs(2));
    let ids_tree = broadcasts(&mut treed, 10, Duration::from_secs(2));
    assert_each_delivered_once(&flood, 0..n, &ids_flood);
    assert_each_delivered_once(&treed, 0..n, &ids_tree);
    let dups_flood = total(&flood, |c| c.gossip_duplicates) - dups_before[0];
    let dups_tree = total(&treed, |c| c.gossip_duplicates) - dups_before[1];
    // Flooding: every connection carries each message (both ways but one), so tens of
    // duplicates per broadcast. The tree: close to none once pruned.
    assert!(dups_flood >= 10 * 30, "flood duplicates {dups_flood}");
    assert!(
        dups_tree * 10 < dups_flood,
        "tree duplicates {dups_tree} against flood {dups_flood}"
    );
    assert!(total(&treed, |c| c.gossip_prunes_sent) > 0);
    assert!(total(&treed, |c| c.gossip_announcements_sent) > 0);
    // Flood nodes push to every peer; tree nodes stopped pushing on some links.
    let lazy_links = |net: &Net| {
        (0..n)
            .map(|i| {
                let peers = net.nodes[i].node.peers();
                peers.iter().filter(|p| !p.gossip_push).count()
            })
            .sum::<usize>()
    };
    assert_eq!(lazy_links(&flood), 0);
    assert!(lazy_links(&treed) > 0);
}

#[test]
fn every_tree_node_keeps_a_pushing_link_so_its_broadcasts_leave_at_once() {
    // Prunes crossing each other at both ends of cycles can take every link of a node;
    // it keeps its last one, or grafts one back when a Prune takes it. Otherwise its own
    // broadcasts would reach no peer until an announcement round.
    for shift in 0..4u64 {
        let n = 30;
        let mut net = sparse_tree(n, shift, |_| {});
        // Many broadcasts close together: the prunes they cause cross each other.
        broadcasts(&mut net, 60, Duration::from_millis(3));
        net.run_for(Duration::from_millis(100));
        for i in 0..n {
            let peers = net.nodes[i].node.peers();
            assert!(
                peers.iter().any(|p| p.gossip_push),
                "shift {shift}: node {i} pushes to none of its {} peers",
                peers.len()
            );
            let msg = GossipMessage::Transaction(Bytes::from(format!("from {i}")));
            let report = net
                .with(i, |node, now| {
                    node.broadcast(now, msg, BroadcastOptions::default())
                })
                .unwrap();
            assert!(
                report.queued() > 0,
                "shift {shift}: node {i} reached no peer"
            );
        }
        assert!(total(&net, |c| c.gossip_prunes_sent) > 0);
    }
}

#[test]
fn tree_gossip_reaches_nodes_behind_a_silent_relay_through_announcements() {
    let n = 30;
    let mut net = shaped_tree(n);
    // Node 0, the bootstrap node every other node dialed first, goes silent: it still
    // receives but nothing it sends arrives. Its connections stay open (the idle timeout is
    // far off), so no graft is triggered: only announcements can reach the nodes whose
    // tree path ran through it.
    for j in 1..n {
        net.cut.insert((0, j));
    }
    let wanted_before = total(&net, |c| c.gossip_ids_wanted);
    let ids = broadcasts(&mut net, 5, Duration::from_secs(5));
    assert_each_delivered_once(&net, 1..n, &ids);
    assert!(
        total(&net, |c| c.gossip_ids_wanted) > wanted_before,
        "some node had to ask for a message it was announced"
    );
}

#[test]
fn tree_gossip_grafts_when_a_pushing_peer_is_lost() {
    let n = 20;
    // Announcements cannot explain the deliveries checked below.
    let mut net = tree_without_announcements(n, 10);
    let grafts_before = total(&net, |c| c.gossip_grafts_sent);
    // The bootstrap node crashes: its peers see resets, and those it pushed to graft
    // their lazy peers at once.
    let config = config_for(0, None);
    net.nodes[0].up = false;
    net.restart(0, config, key(0), None);
    net.nodes[0].up = false;
    assert!(total(&net, |c| c.gossip_grafts_sent) > grafts_before);
    let ids = broadcasts(&mut net, 3, Duration::from_millis(500));
    assert_each_delivered_once(&net, 1..n, &ids);
}

#[test]
fn a_flood_node_among_tree_nodes_keeps_receiving_everything() {
    let n = 12;
    let mut net = Net::star(n, |i, c| {
        c.limits.target_outbound = 3;
        if i != 5 {
            tree(c);
        }
    });
    net.run_for(Duration::from_secs(60));
    let ids = broadcasts(&mut net, 15, Duration::from_secs(2));
    assert_each_delivered_once(&net, 0..n, &ids);
    // Node 5 never advertised lazy gossip: every tree node connected to it still pushes
    // to it, although tree nodes pruned links among themselves.
    let flood_peer = net.id(5);
    let mut pushing_to_5 = 0;
    let mut pruned = 0;
    for i in (0..n).filter(|i| *i != 5) {
        for p in net.nodes[i].node.peers() {
            if p.peer == flood_peer {
                assert!(p.gossip_push, "node {i} stopped pushing to the flood node");
                pushing_to_5 += 1;
            } else if !p.gossip_push {
                pruned += 1;
            }
        }
    }
    assert!(pushing_to_5 > 0 && pruned > 0, "{pushing_to_5} {pruned}");
}

#[test]
fn tree_mode_rejects_a_history_shorter_than_its_announcement_interval() {
    let mut c = config_for(0, None);
    tree(&mut c);
    c.gossip.history = Duration::from_millis(500);
    let e = c.validate().unwrap_err();
    assert!(e.to_string().contains("history"), "{e}");
    c.gossip.history = Duration::from_secs(3);
    c.gossip.announce_peers = 0;
    assert!(c.validate().is_err());
    c.gossip.announce_peers = 2;
    for bad in [0, 3] {
        c.gossip.settled_announce_peers = bad;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("settled_announce_peers"), "{e}");
    }
    c.gossip.settled_announce_peers = 2;
    assert!(c.validate().is_ok());
    c.gossip.relay_fanout = 3;
    let e = c.validate().unwrap_err();
    assert!(e.to_string().contains("relay_fanout"), "{e}");
    c.gossip.relay_fanout = 0;
    c.gossip.max_history_bytes = c.connection.max_message_size - 1;
    let e = c.validate().unwrap_err();
    assert!(e.to_string().contains("max_history_bytes"), "{e}");
    c.gossip.max_history_bytes = c.connection.max_message_size;
    c.gossip.announce_delay = c.gossip.history;
    let e = c.validate().unwrap_err();
    assert!(e.to_string().contains("announce_delay"), "{e}");
    // The same values are fine in flood mode, which does not use them.
    c.gossip.relay_fanout = 3;
    c.gossip.announce_peers = 0;
    c.gossip.mode = GossipMode::Flood;
    assert!(c.validate().is_ok());
}

#[test]
fn a_node_that_loses_its_pushing_peers_pulls_what_it_missed_from_the_peers_it_grafts() {
    let n = 20;
    // No announcement round within the test: only the graft can explain a repair.
    let mut net = tree_without_announcements(n, 15);
    // A node with pushing and announcing peers both.
    let (x, pushing) = (1..n)
        .find_map(|x| {
            let peers = net.nodes[x].node.peers();
            let pushing: Vec<usize> = peers
                .iter()
                .filter(|p| p.gossip_push)
                .map(|p| (0..n).find(|j| net.id(*j) == p.peer).unwrap())
                .collect();
            (!pushing.is_empty() && pushing.len() < peers.len()).then_some((x, pushing))
        })
        .expect("a node with lazy peers");
    let origin = (1..n).find(|o| *o != x && !pushing.contains(o)).unwrap();
    // Everything its pushing peers send it is lost while a broadcast goes by...
    for j in &pushing {
        net.cut.insert((*j, x));
    }
    let msg = GossipMessage::Transaction(Bytes::from_static(b"missed"));
    let id = net
        .with(origin, |node, now| {
            node.broadcast(now, msg, BroadcastOptions::default())
        })
        .unwrap()
        .id;
    net.run_for(Duration::from_millis(300));
    assert_eq!(net.gossip_count(x, &id), 0, "the push was lost");
    // ... then those connections reset. The node grafts its lazy peers, which answer the
    // graft with what they hold, and it pulls the message.
    for j in &pushing {
        net.reset_links(x, *j);
        net.reset_links(*j, x);
    }
    net.cut.clear();
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.gossip_count(x, &id), 1);
    assert!(net.nodes[x].node.stats(net.now).counters.gossip_grafts_sent > 0);
}

#[test]
fn a_dial_closed_as_a_duplicate_still_proves_the_address() {
    // Two nodes dial each other at the same moment: one of the two connections is closed
    // as a duplicate. The address it dialed reached the right identity, so the address
    // book must not count the dial as a failed attempt, which `select` would skip for
    // `retry_interval_secs`: a node restarted from its book would not find the peer again.
    let mut net = Net::new();
    for i in 0..2 {
        net.add(config_for(i, None), key(i));
    }
    let (a0, a1) = (
        PeerAddr::pinned(net.id(0), node_addr(0)),
        PeerAddr::pinned(net.id(1), node_addr(1)),
    );
    // Node 1 dials first; node 0 dials while node 1's handshake is under way, so node 0
    // registers the inbound connection before its own dial completes (10 ms links: the
    // responder is established after 30 ms, the initiator after 20).
    net.with(1, |n, now| n.add_persistent_peer(now, a0));
    net.run_for(Duration::from_millis(15));
    net.with(0, |n, now| n.add_persistent_peer(now, a1));
    net.run_for(Duration::from_secs(5));
    assert!(net.nodes[0].node.is_connected(&net.id(1)));
    let dups: u64 = (0..2)
        .map(|i| net.nodes[i].node.stats(net.now).counters.duplicates_closed)
        .sum();
    assert!(dups > 0, "the two dials did not cross");
    for (i, j) in [(0, 1), (1, 0)] {
        let info = net.nodes[i]
            .node
            .address_book()
            .get(&node_addr(j))
            .cloned()
            .expect("a persistent peer's address is in the book");
        assert!(
            info.last_success.is_some() && info.last_success >= info.last_tried,
            "node {i} dialed node {j}: {info:?}"
        );
    }
}

#[test]
fn the_cipher_setting_picks_the_transport_suite_with_peers_that_agree() {
    use silver_p2p_core::node::CipherPreference as C;
    // Node 0 is the hub; each spoke's preference against the hub's decides its link.
    for (hub, spoke, expected) in [
        (C::Aes256Gcm, C::Aes256Gcm, TransportSuite::Aes256Gcm),
        (
            C::Aes256Gcm,
            C::ChaCha20Poly1305,
            TransportSuite::ChaCha20Poly1305,
        ),
        (
            C::ChaCha20Poly1305,
            C::Aes256Gcm,
            TransportSuite::ChaCha20Poly1305,
        ),
        // Unresolved, `Auto` asks for nothing: the same on every machine.
        (C::Auto, C::Aes256Gcm, TransportSuite::ChaCha20Poly1305),
        (C::Aes256Gcm, C::Auto, TransportSuite::ChaCha20Poly1305),
    ] {
        let mut net = Net::star(2, |i, c| c.cipher = if i == 0 { hub } else { spoke });
        net.run_for(Duration::from_secs(5));
        for (i, other) in [(0, 1), (1, 0)] {
            let stats = net.nodes[i].node.stats(net.now);
            let peer = stats
                .per_peer
                .iter()
                .find(|p| p.peer == net.id(other))
                .expect("connected");
            assert_eq!(
                peer.stats.transport_suite,
                Some(expected),
                "{hub:?} hub, {spoke:?} spoke, seen by node {i}"
            );
        }
    }
}

/// A tree-gossip node with hand-driven peers connected to it; every byte the node sends
/// each of them is kept, so a peer can read what it was sent.
struct RawPeers {
    node: Node,
    now: Timestamp,
    peers: Vec<(ConnectionId, common::RawPeer, Vec<u8>)>,
    /// The node's events so far.
    events: Vec<Event>,
}

impl RawPeers {
    fn new(count: usize, tweak: impl Fn(&mut NodeConfig)) -> RawPeers {
        let mut config = config_for(0, None);
        config.network_id = common::NETWORK.into();
        tweak(&mut config);
        let now = Timestamp::from_secs(1);
        let node = Node::new(config, key(0), [0; 32], now).unwrap();
        let mut r = RawPeers {
            node,
            now,
            peers: Vec::new(),
            events: Vec::new(),
        };
        for k in 0..count {
            let remote = format!("10.{}.0.1:4000", 60 + k).parse().unwrap();
            let conn = r.node.accept(now, remote).unwrap();
            let mut sent = std::collections::HashMap::new();
            let node = &mut r.node;
            let raw = common::RawPeer::connect_with(key(42 + k), |bytes| {
                node.handle_input(now, Input::Received { conn, bytes });
                Self::drain(node, now, &mut sent, &mut Vec::new());
                sent.remove(&conn).unwrap_or_default()
            });
            r.peers.push((conn, raw, Vec::new()));
        }
        r
    }

    /// Takes every output, acknowledging transmits as written.
    fn drain(
        node: &mut Node,
        now: Timestamp,
        sent: &mut std::collections::HashMap<ConnectionId, Vec<u8>>,
        events: &mut Vec<Event>,
    ) {
        while let Some(o) = node.poll_output() {
            if let Output::Event(e) = o {
                events.push(e);
            } else if let Output::Transmit { conn, bytes } = o {
                node.handle_input(
                    now,
                    Input::Written {
                        conn,
                        bytes: bytes.len(),
                    },
                );
                sent.entry(conn).or_default().extend_from_slice(&bytes);
            }
        }
    }

    fn pump(&mut self) {
        let mut sent = std::collections::HashMap::new();
        Self::drain(&mut self.node, self.now, &mut sent, &mut self.events);
        for (conn, _, stream) in &mut self.peers {
            stream.extend(sent.remove(conn).unwrap_or_default());
        }
    }

    /// Peer `k` sends `msgs` in one frame.
    fn send(&mut self, k: usize, msgs: &[Message]) {
        let mut plain = Vec::new();
        for m in msgs {
            m.encode(&mut plain);
        }
        let (conn, raw, _) = &mut self.peers[k];
        let pkt = raw.frame(&plain);
        let conn = *conn;
        self.node
            .handle_input(self.now, Input::Received { conn, bytes: &pkt });
        self.pump();
    }

    /// Moves time to `at`, running the node's timers on the way.
    fn advance_to(&mut self, at: Timestamp) {
        while let Some(t) = self.node.poll_timeout().filter(|t| *t <= at) {
            self.now = t.max(self.now);
            self.node.handle_input(self.now, Input::Timeout);
            self.pump();
        }
        self.now = at;
    }

    /// The messages peer `k` was sent since the last call.
    fn received(&mut self, k: usize) -> Vec<Message> {
        let (_, raw, stream) = &mut self.peers[k];
        let transport = raw.transport.as_mut().unwrap();
        let mut out = Vec::new();
        let mut rest = &stream[..];
        while rest.len() >= 2 {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            let mut plain = vec![0u8; len];
            let n = transport
                .read_message(&rest[2..2 + len], &mut plain)
                .unwrap();
            let frame = Bytes::copy_from_slice(&plain[..n]);
            out.extend(silver_p2p_core::message::decode_frame_to_vec(&frame).unwrap());
            rest = &rest[2 + len..];
        }
        stream.clear();
        out
    }
}

/// Tree gossip with no announcement round of the node's own within a test.
fn tree_without_rounds(c: &mut NodeConfig) {
    tree(c);
    c.gossip.announce_interval = Duration::from_secs(300);
    c.gossip.history = Duration::from_secs(600);
}

/// Whether `msgs` hold an IWant for exactly `id`.
fn asks_for(msgs: &[Message], id: MessageId) -> bool {
    msgs.iter()
        .any(|m| matches!(m, Message::IWant { ids } if ids == &vec![id.0]))
}

#[test]
fn an_unanswered_request_is_made_again_to_the_next_peer_that_announced_the_message() {
    let mut r = RawPeers::new(2, tree_without_rounds);
    let msg = GossipMessage::Transaction(Bytes::from_static(b"announced twice"));
    let id = message_id(&msg);
    let ihave = Message::IHave { ids: vec![id.0] };
    let asked = |msgs: Vec<Message>| asks_for(&msgs, id);
    r.received(0);
    r.received(1);
    // Peer 0 announces first and is asked; peer 1's announcement, while that request is
    // pending, is not answered with a second request.
    r.send(0, std::slice::from_ref(&ihave));
    assert!(asked(r.received(0)));
    r.advance_to(r.now + Duration::from_millis(100));
    r.send(1, std::slice::from_ref(&ihave));
    assert!(!asked(r.received(1)));
    // Peer 0 never delivers. When the request times out, peer 1 is asked.
    let timeout = r.node.config().gossip.want_timeout;
    r.advance_to(r.now + (timeout - Duration::from_millis(110)));
    assert!(!asked(r.received(1)), "not before the request timed out");
    r.advance_to(r.now + Duration::from_millis(20));
    assert!(asked(r.received(1)), "asked when it timed out");
    assert!(!asked(r.received(0)));
    let counters = r.node.stats(r.now).counters;
    assert_eq!(
        (counters.gossip_ids_wanted, counters.gossip_want_retries),
        (2, 1)
    );
    // Its answer is delivered once; a late answer from peer 0 is a duplicate.
    let payload = Message::Transaction {
        data: Bytes::from_static(b"announced twice"),
    };
    r.send(1, std::slice::from_ref(&payload));
    r.send(0, &[payload]);
    let delivered = r
        .events
        .iter()
        .filter(|e| matches!(e, Event::Gossip { id: got, .. } if *got == id))
        .count();
    assert_eq!(delivered, 1);
    // Nothing is asked again once the message is here.
    r.advance_to(r.now + timeout * 3);
    assert!(!asked(r.received(0)) && !asked(r.received(1)));
}

#[test]
fn a_request_whose_next_announcer_left_goes_to_the_following_one_at_once() {
    let mut r = RawPeers::new(3, tree_without_rounds);
    let id = message_id(&GossipMessage::Transaction(Bytes::from_static(b"m")));
    let ihave = Message::IHave { ids: vec![id.0] };
    let asked = |msgs: Vec<Message>| asks_for(&msgs, id);
    for k in 0..3 {
        r.received(k);
    }
    r.send(0, std::slice::from_ref(&ihave));
    assert!(asked(r.received(0)));
    r.send(1, std::slice::from_ref(&ihave));
    // Peer 1, lined up next, disconnects before the request to peer 0 times out.
    let conn = r.peers[1].0;
    r.node
        .handle_input(r.now, Input::Closed { conn, error: None });
    r.pump();
    let timeout = r.node.config().gossip.want_timeout;
    r.advance_to(r.now + timeout);
    assert_eq!(r.node.stats(r.now).counters.gossip_want_retries, 0);
    // So the request is forgotten, and the next announcer is asked as it announces.
    r.advance_to(r.now + Duration::from_millis(10));
    r.send(2, std::slice::from_ref(&ihave));
    assert!(asked(r.received(2)));
}
