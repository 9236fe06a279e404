//! Node-level benchmarks of the core alone (no sockets): broadcasting one 1 KiB message to
//! 100 and 1000 connected peers until every Transmit is out, and the heap the core keeps per
//! idle connected peer (measured with a counting allocator).
//!
//! Run: `cargo bench -p silver-p2p-bench --bench node`

use std::alloc::System;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use silver_p2p_core::node::*;
use silver_p2p_core::*;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i / 250) as u8, (i % 250) as u8, 1], 7000))
}

fn config(i: usize) -> NodeConfig {
    let mut c = NodeConfig {
        network_id: "bench".into(),
        listen_addrs: vec![addr(i)],
        ..Default::default()
    };
    c.limits.max_connections = 2000;
    c.limits.max_inbound = 2000;
    c.limits.max_inbound_per_ip = 2000;
    c.limits.max_pending_handshakes = 2000;
    c.limits.target_outbound = 0;
    c
}

fn node(i: usize) -> Node {
    let key = Keypair::generate(&mut SeededRng::from_seed([(i % 250) as u8 + 1; 32]));
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Node::new(config(i), key, seed, Timestamp::from_secs(1)).unwrap()
}

/// A hub with `n` leaves connected to it, all handshakes complete, everything drained.
/// Leaves get distinct identities by mixing the index into the key seed.
fn star(n: usize) -> (Node, Vec<Node>) {
    let now = Timestamp::from_secs(1);
    let mut hub = node(0);
    let mut leaves: Vec<Node> = (1..=n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 * 7919).to_le_bytes());
            let key = Keypair::generate(&mut SeededRng::from_seed(seed));
            Node::new(config(i), key, seed, now).unwrap()
        })
        .collect();
    // (leaf index, leaf conn, hub conn)
    let mut links: Vec<(usize, ConnectionId, ConnectionId)> = Vec::new();
    for (i, leaf) in leaves.iter_mut().enumerate() {
        let lc = leaf.connect(now, PeerAddr::new(addr(0))).unwrap();
        let hc = hub.accept(now, addr(i + 1)).unwrap();
        links.push((i, lc, hc));
        leaf.handle_input(now, Input::Connected { conn: lc });
    }
    // Pump bytes until quiet.
    let mut to_hub: VecDeque<(ConnectionId, Vec<u8>)> = VecDeque::new();
    let mut to_leaf: VecDeque<(usize, ConnectionId, Vec<u8>)> = VecDeque::new();
    loop {
        for (i, leaf) in leaves.iter_mut().enumerate() {
            while let Some(o) = leaf.poll_output() {
                if let Output::Transmit { conn, bytes } = o {
                    leaf.handle_input(
                        now,
                        Input::Written {
                            conn,
                            bytes: bytes.len(),
                        },
                    );
                    let hc = links[i].2;
                    to_hub.push_back((hc, bytes));
                }
            }
        }
        while let Some(o) = hub.poll_output() {
            if let Output::Transmit { conn, bytes } = o {
                hub.handle_input(
                    now,
                    Input::Written {
                        conn,
                        bytes: bytes.len(),
                    },
                );
                let l = links.iter().find(|l| l.2 == conn).unwrap();
                to_leaf.push_back((l.0, l.1, bytes));
            }
        }
        if to_hub.is_empty() && to_leaf.is_empty() {
            break;
        }
        while let Some((hc, b)) = to_hub.pop_front() {
            hub.handle_input(
                now,
                Input::Received {
                    conn: hc,
                    bytes: &b,
                },
            );
        }
        while let Some((i, lc, b)) = to_leaf.pop_front() {
            leaves[i].handle_input(
                now,
                Input::Received {
                    conn: lc,
                    bytes: &b,
                },
            );
        }
    }
    assert_eq!(hub.peers().len(), n, "every leaf connected");
    (hub, leaves)
}

fn broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("broadcast_1KiB");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for n in [100usize, 1000] {
        let (mut hub, _leaves) = star(n);
        let now = Timestamp::from_secs(2);
        let mut i = 0u64;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            // Timed: from the broadcast call until every Transmit has been taken from the
            // node. Untimed: reporting the writes back (the adapter's later work), which
            // keeps every connection's send window open for the next round.
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut written = Vec::with_capacity(n);
                for _ in 0..iters {
                    i += 1;
                    let mut data = vec![0u8; 1024];
                    data[..8].copy_from_slice(&i.to_le_bytes());
                    let start = std::time::Instant::now();
                    hub.broadcast(
                        now,
                        GossipMessage::Transaction(Bytes::from(data)),
                        BroadcastOptions::default(),
                    )
                    .unwrap();
                    while let Some(o) = hub.poll_output() {
                        if let Output::Transmit { conn, bytes } = o {
                            written.push((conn, bytes));
                        }
                    }
                    total += start.elapsed();
                    assert_eq!(written.len(), n);
                    for (conn, bytes) in written.drain(..) {
                        hub.handle_input(
                            now,
                            Input::Written {
                                conn,
                                bytes: bytes.len(),
                            },
                        );
                    }
                    while hub.poll_output().is_some() {}
                }
                total
            })
        });
    }
    group.finish();
}

/// Heap bytes the hub keeps per idle connected peer: (hub with n peers − empty hub) / n.
fn memory_per_peer() {
    for n in [100usize, 1000] {
        let (hub, leaves) = star(n);
        drop(leaves);
        let region = Region::new(GLOBAL);
        drop(hub);
        let freed = region.change();
        let with_peers = freed.bytes_deallocated as f64;
        let empty = node(0);
        let region = Region::new(GLOBAL);
        drop(empty);
        let base = region.change().bytes_deallocated as f64;
        println!(
            "memory_per_idle_peer n={n}: {:.0} bytes per peer (hub heap {:.0} KiB, empty node {:.0} KiB)",
            (with_peers - base) / n as f64,
            with_peers / 1024.0,
            base / 1024.0
        );
    }
}

criterion_group!(benches, broadcast);

fn main() {
    memory_per_peer();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
