//! A 20-node tokio devnet on loopback: every node finds peers from one bootstrap node, and a
//! broadcast reaches every node exactly once. Bounded in time.

use std::time::Duration;

use bytes::Bytes;
use silver_p2p::driver::testing::{test_config, wait_for, within};
use silver_p2p::node::{Event, GossipMessage};
use silver_p2p::tokio::NetworkManager;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_one_broadcast_everywhere() {
    let mut nodes = Vec::new();
    for i in 0..20 {
        let mut c = test_config();
        c.limits.target_outbound = 4;
        c.limits.max_inbound_per_ip = 64; // everyone is 127.0.0.1
        if i > 0 {
            let boot: &silver_p2p::driver::NetworkHandle = &nodes[0];
            c.bootstrap = vec![boot.dial_addr().unwrap()];
        }
        nodes.push(
            NetworkManager::new(c, vec!["127.0.0.1:0".parse().unwrap()])
                .start()
                .await
                .unwrap(),
        );
    }
    let mut events: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    within("every node reaches 4 peers", async {
        loop {
            let mut ok = true;
            for n in &nodes {
                ok &= n.peers().await.unwrap().len() >= 4;
            }
            if ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let r = nodes[7]
        .broadcast(GossipMessage::Block(Bytes::from(vec![1u8; 100_000])))
        .await
        .unwrap();
    for (i, ev) in events.iter_mut().enumerate() {
        if i == 7 {
            continue;
        }
        let id = within(
            "gossip",
            wait_for(ev, |e| match e {
                Event::Gossip { id, .. } => Some(id),
                _ => None,
            }),
        )
        .await;
        assert_eq!(id, r.id, "node {i}");
    }
    // Exactly once: no second copy arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, ev) in events.iter_mut().enumerate() {
        while let Some(e) = ev.try_recv() {
            assert!(
                !matches!(e, Event::Gossip { .. }),
                "node {i} got a duplicate"
            );
        }
    }
    for n in &nodes {
        n.stop(Duration::from_secs(1)).await.unwrap();
    }
}
