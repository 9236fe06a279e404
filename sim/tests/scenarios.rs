//! Each built-in scenario, and the library API a user writes tests with: hooks, commands,
//! step-by-step control, failure reports.

mod common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use silver_p2p_core::node::{Event, GossipMode, NodeConfig, Request};
use silver_p2p_core::{CloseReason, Timestamp};
use silver_p2p_sim::{Command, Faults, HostStatus, NodeId, Pick, Scenario, Split, Workload};

fn builtin(name: &str, nodes: usize, seed: u64, secs: u64) -> Scenario {
    Scenario::builtin(name, nodes)
        .unwrap()
        .seed(seed)
        .duration(Duration::from_secs(secs))
        .workload(common::light_workload())
}

#[test]
fn steady_state_reaches_everyone() {
    let r = builtin("steady", 16, 1, 120).run();
    r.assert_ok();
    assert!(r.broadcasts.measured > 10);
    assert_eq!(
        r.broadcasts.coverage.min, 1.0,
        "every broadcast reached every node"
    );
    assert!(r.broadcasts.latency_ms.p50 > 0.0);
    assert!(r.broadcasts.latency_ms.p99 >= r.broadcasts.latency_ms.p50);
    assert!(
        r.broadcasts.duplicates_per_broadcast > 0.0,
        "flooding sends duplicates"
    );
    // Flooding has no tree to shape or announce along.
    let g = &r.gossip;
    assert_eq!(
        (g.prunes, g.grafts, g.announcements, g.ids_wanted),
        (0, 0, 0, 0)
    );
    assert!(g.duplicates > 0);
    assert_eq!(r.bans, 0);
    assert_eq!(r.delivery.unicasts_delivered, r.delivery.unicasts_sent);
    assert!(r.degree.total.mean >= 8.0, "{:?}", r.degree);
    assert!(r.target_degree.reached > 0);
    assert_eq!(r.liveness.components, 1);
    assert!(r.liveness.converged);
}

#[test]
fn tree_gossip_from_many_origins_at_once_stays_on_the_pushing_links() {
    // Fifty broadcasts a second from random origins over links of 5-50 ms. A message that
    // misses the pushing links arrives only after an announcement: settled for
    // `announce_delay` at the announcer, then asked for and sent, so later than
    // `announce_delay`. A tree that pruned every link a duplicate came over would deliver
    // most messages that way (its p90 was 467 ms here, its duplicates 35 per broadcast).
    let delay = NodeConfig::default().gossip.announce_delay;
    let r = Scenario::builtin("steady", 50)
        .unwrap()
        .seed(7)
        .duration(Duration::from_secs(60))
        .configure(|_, c| c.gossip.mode = GossipMode::Tree)
        .workload(Workload {
            broadcast_every: Some(Duration::from_millis(20)),
            unicast_every: None,
            request_every: None,
            ..common::light_workload()
        })
        .run();
    r.assert_ok();
    assert!(
        r.broadcasts.measured > 1000,
        "{} measured",
        r.broadcasts.measured
    );
    assert_eq!(r.broadcasts.coverage.min, 1.0);
    let p90 = Duration::from_secs_f64(r.broadcasts.latency_ms.p90 / 1000.0);
    assert!(
        p90 < delay,
        "p90 {p90:?}: most messages came by announcement"
    );
    assert!(
        r.broadcasts.duplicates_per_broadcast < 25.0,
        "{} duplicates per broadcast",
        r.broadcasts.duplicates_per_broadcast
    );
    // The control traffic behind it, summed over the nodes: the duplicates pruned links,
    // and every round announced ids to lazy peers, who rarely lacked them.
    let g = &r.gossip;
    assert!(g.prunes > 0 && g.announcements > 0, "{g:?}");
    assert!(g.ids_announced >= g.announcements, "{g:?}");
    assert!(g.ids_wanted < g.ids_announced / 10, "{g:?}");
    assert_eq!(
        g.duplicates as f64 / r.broadcasts.sent as f64,
        r.broadcasts.duplicates_per_broadcast
    );
}

#[test]
fn churn_replaces_nodes_and_the_network_stays_whole() {
    let r = builtin("churn", 20, 2, 300)
        .faults(Faults {
            leaves_per_min: 1.0,
            joins_per_min: 1.0,
            crashes_per_min: 1.0,
            ..Faults::none()
        })
        .run();
    r.assert_ok();
    assert!(r.faults.leaves > 0 && r.faults.joins > 0 && r.faults.crashes > 0);
    assert!(r.hosts > r.nodes, "new identities joined");
    assert!(r.liveness.converged);
}

#[test]
fn partition_and_heal() {
    let r = builtin("partition", 20, 3, 300).run();
    r.assert_ok();
    assert_eq!(r.faults.partitions, 2);
    // Connections across a partition shorter than the idle timeout survive it: bytes are
    // held (TCP retransmits) and delivered at the heal, so coverage stays whole but some
    // deliveries are late.
    assert!(
        r.broadcasts.latency_ms.max > 5_000.0,
        "broadcasts during the partition were held: {:?}",
        r.broadcasts.latency_ms
    );
    assert!(r.liveness.converged, "the graph healed");
    assert_eq!(r.bans, 0, "timeouts a partition caused are never punished");
}

#[test]
fn crash_and_restart_of_the_bootstrap_node_restores_its_snapshot() {
    let book_after_restart = Rc::new(Cell::new(0usize));
    let seen = book_after_restart.clone();
    // crash-bootstrap crashes seed 0 at duration/3 and restarts it duration/4 later.
    let r = builtin("crash-bootstrap", 16, 4, 240)
        .at(
            Duration::from_secs(80 + 60) + Duration::from_millis(1),
            Command::WithSim(Box::new(move |sim| {
                assert_eq!(sim.status(NodeId(0)), Some(HostStatus::Up));
                seen.set(sim.node(NodeId(0)).unwrap().address_book().len());
            })),
        )
        .run();
    r.assert_ok();
    assert_eq!((r.faults.crashes, r.faults.restarts), (1, 1));
    assert!(
        book_after_restart.get() > 5,
        "the restarted bootstrap node starts from its persisted address book ({})",
        book_after_restart.get()
    );
    assert!(r.liveness.converged);
}

#[test]
fn slow_links_with_stalls() {
    let r = builtin("slow-links", 16, 5, 180).run();
    r.assert_ok();
    assert!(r.faults.stalls > 0);
    assert!(r.broadcasts.latency_ms.p50 > 20.0, "region latencies apply");
    assert!(r.broadcasts.coverage.mean > 0.99);
}

#[test]
fn sybil_flooding_addresses_does_not_break_the_network() {
    let r = builtin("sybil", 16, 6, 180).run();
    r.assert_ok();
    let s = r.sybil.as_ref().expect("sybil figures");
    assert!(s.fake_addrs_sent > 10_000);
    assert!(
        s.honest_addrs_dropped > 0,
        "the unsolicited-address rate limit engaged"
    );
    assert_eq!(
        s.fake_in_tried, 0,
        "a fake address never completes a handshake"
    );
    assert_eq!(r.broadcasts.coverage.min, 1.0);
    assert!(r.liveness.converged);
}

#[test]
fn hooks_run_application_logic() {
    // The application answers requests itself with a payload of its own.
    let answers = Rc::new(RefCell::new(Vec::<Bytes>::new()));
    let got = answers.clone();
    let r = Scenario::new(8)
        .seed(7)
        .duration(Duration::from_secs(90))
        .workload(Workload {
            auto_respond: false,
            ..common::light_workload()
        })
        .on_event(move |ctx, e| match e {
            Event::Request { id, .. } => {
                let id = *id;
                let node = ctx.node_id();
                ctx.command(Command::WithNode {
                    node,
                    f: Box::new(move |n, now| {
                        n.respond(now, id, Some(Bytes::from_static(b"app answer")))
                            .unwrap();
                    }),
                });
            }
            Event::Response {
                result: Ok(data), ..
            } => got.borrow_mut().push(data.clone()),
            _ => {}
        })
        .at(
            Duration::from_secs(60),
            Command::Request {
                from: Pick::Node(NodeId(1)),
                to: Pick::RandomPeer,
                size: 10,
            },
        )
        .run();
    r.assert_ok();
    let answers = answers.borrow();
    assert!(!answers.is_empty());
    assert!(answers.iter().all(|a| a.as_ref() == b"app answer"));
    assert_eq!(r.delivery.requests_answered as usize, answers.len());
}

#[test]
fn a_violation_fails_the_run_with_seed_and_replay() {
    // An application that blames an honest peer twice gets it banned: the simulator flags
    // it as an honest node banned.
    let done = Rc::new(Cell::new(false));
    let r = Scenario::new(6)
        .seed(5)
        .duration(Duration::from_secs(60))
        .workload(Workload::none())
        .on_event(move |ctx, e| {
            if let Event::PeerConnected { peer, .. } = e {
                if ctx.node_id() == NodeId(2) && !done.replace(true) {
                    let peer = *peer;
                    ctx.command(Command::WithNode {
                        node: NodeId(2),
                        f: Box::new(move |n, now| {
                            let _ = n.report_invalid_payload(now, &peer);
                            let _ = n.report_invalid_payload(now, &peer);
                        }),
                    });
                }
            }
        })
        .run();
    assert!(!r.passed);
    assert!(r.violations.iter().any(|v| v.kind == "honest-node-banned"));
    let text = r.failure_text();
    assert!(text.contains("seed 5"), "{text}");
    assert!(text.contains("replay:"), "{text}");
    let unmodified = Scenario::builtin("churn", 20).unwrap().seed(9);
    assert_eq!(
        unmodified.replay_command().unwrap(),
        "silver-p2p-sim --scenario churn --nodes 20 --seed 9 --duration 600s --liveness 600s"
    );
}

#[test]
fn half_open_connections_are_detected_by_keepalive() {
    let idle_closes = Rc::new(Cell::new(0));
    let n = idle_closes.clone();
    let r = Scenario::new(10)
        .seed(8)
        .duration(Duration::from_secs(300))
        .workload(common::light_workload())
        .faults(Faults {
            resets_per_min: 4.0,
            half_open_prob: 1.0,
            ..Faults::none()
        })
        .on_event(move |_, e| {
            if let Event::PeerDisconnected {
                reason: CloseReason::IdleTimeout,
                ..
            } = e
            {
                n.set(n.get() + 1);
            }
        })
        .run();
    r.assert_ok();
    assert!(r.faults.half_open > 0);
    assert!(
        idle_closes.get() > 0,
        "the end never told closed on its idle timeout"
    );
    assert_eq!(r.bans, 0);
}

#[test]
fn links_reorder_nothing_under_heavy_jitter_and_resplitting() {
    // Tiny bandwidth, heavy-tailed jitter, writes cut into up to 8 pieces: any reordering
    // would break Noise decryption and ban the peer; any loss would show in the
    // per-connection counters.
    let r = Scenario::new(6)
        .seed(9)
        .duration(Duration::from_secs(120))
        .workload(Workload {
            // 24 KiB a second into 16 KB/s links: chunked messages and a growing backlog.
            broadcast_every: Some(Duration::from_secs(1)),
            broadcast_size: 24 << 10,
            ..common::light_workload()
        })
        .links(silver_p2p_sim::LinkConfig {
            jitter_ms: silver_p2p_sim::Dist::Pareto {
                scale: 1.0,
                shape: 1.1,
            },
            bandwidth: Some(silver_p2p_sim::Dist::Const(16_000.0)),
            max_pieces: 8,
            window: 16 << 10,
            ..Default::default()
        })
        .run();
    r.assert_ok();
    assert_eq!(r.bans, 0);
    assert!(r.delivery.unicasts_delivered > 0);
    assert!(
        r.memory.peak_buffered_bytes_node > 24 << 10,
        "back-pressure kept the backlog in the cores' queues: {:?}",
        r.memory
    );
}

#[test]
fn step_by_step_control() {
    let mut sim = Scenario::new(8).seed(10).workload(Workload::none()).build();
    sim.run_until(Timestamp::from_secs(60));
    assert_eq!(sim.live_nodes().len(), 8);
    assert!(sim.peers_of(NodeId(0)).len() >= 4);
    // Cut node 7 off: after the idle timeout it has no peers.
    sim.command(Command::Partition {
        split: Split::Nodes(vec![NodeId(7)]),
        oneway: false,
        heal_after: None,
    });
    sim.run_until(Timestamp::from_secs(200));
    assert!(sim.peers_of(NodeId(7)).is_empty());
    sim.command(Command::HealAll);
    sim.run_until(Timestamp::from_secs(600));
    assert!(
        !sim.peers_of(NodeId(7)).is_empty(),
        "node 7 reconnected after healing"
    );
    // A command on one node, its outputs routed.
    let id = sim
        .with_node(NodeId(0), |n, now| {
            n.broadcast(
                now,
                silver_p2p_core::node::GossipMessage::Block(Bytes::from_static(b"blk")),
                Default::default(),
            )
            .unwrap()
            .id
        })
        .unwrap();
    sim.run_until(Timestamp::from_secs(601));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    let _ = id;
    let _ = Request::GetBlock(Bytes::new());
}
