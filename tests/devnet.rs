//! Tokio devnets on loopback: every node finds peers from one bootstrap node, and broadcasts
//! reach every node exactly once, flooded or along a tree. Bounded in time.

use std::time::Duration;

use bytes::Bytes;
use silver_p2p::driver::testing::{test_config, wait_for, within};
use silver_p2p::driver::NetworkHandle;
use silver_p2p::node::{Event, GossipMessage, GossipMode, MessageId, NodeConfig};
use silver_p2p::tokio::NetworkManager;

/// `count` nodes bootstrapping from the first, each with 4 outbound peers and `tweak`
/// applied, once every node has them.
async fn devnet(count: usize, tweak: impl Fn(&mut NodeConfig)) -> Vec<NetworkHandle> {
    let mut nodes: Vec<NetworkHandle> = Vec::new();
    for i in 0..count {
        let mut c = test_config();
        tweak(&mut c);
        c.limits.target_outbound = 4;
        c.limits.max_inbound_per_ip = 64; // everyone is 127.0.0.1
        if i > 0 {
            c.bootstrap = vec![nodes[0].dial_addr().unwrap()];
        }
        nodes.push(
            NetworkManager::new(c, vec!["127.0.0.1:0".parse().unwrap()])
                .start()
                .await
                .unwrap(),
        );
    }
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
    nodes
}

/// Asserts that the next gossip every node but `origin` gets is `id`.
async fn next_gossip_everywhere_but(
    events: &mut [silver_p2p::driver::EventStream],
    origin: usize,
    id: MessageId,
) {
    for (i, ev) in events.iter_mut().enumerate() {
        if i == origin {
            continue;
        }
        let got = within(
            "gossip",
            wait_for(ev, |e| match e {
                Event::Gossip { id, .. } => Some(id),
                _ => None,
            }),
        )
        .await;
        assert_eq!(got, id, "node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_one_broadcast_everywhere() {
    let nodes = devnet(20, |_| {}).await;
    let mut events: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    let r = nodes[7]
        .broadcast(GossipMessage::Block(Bytes::from(vec![1u8; 100_000])))
        .await
        .unwrap();
    next_gossip_everywhere_but(&mut events, 7, r.id).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_gossip_over_sockets_delivers_every_broadcast_once_and_prunes_duplicates() {
    let n = 12;
    let nodes = devnet(n, |c| {
        c.gossip.mode = GossipMode::Tree;
        // A node cut off from the tree while it is being pruned into shape waits for an
        // announcement: with every lazy peer announced to, the first round reaches it.
        c.gossip.announce_peers = n;
        c.gossip.settled_announce_peers = n;
    })
    .await;
    let mut events: Vec<_> = nodes.iter().map(|n| n.events()).collect();
    for round in 0..8 {
        let from = 1 + round % (n - 1);
        let r = nodes[from]
            .broadcast(GossipMessage::Transaction(Bytes::from(format!(
                "tx {round}"
            ))))
            .await
            .unwrap();
        next_gossip_everywhere_but(&mut events, from, r.id).await;
    }
    // Duplicates pruned links: some peers are no longer pushed to.
    let mut lazy = 0;
    for node in &nodes {
        lazy += node
            .peers()
            .await
            .unwrap()
            .iter()
            .filter(|p| !p.gossip_push)
            .count();
    }
    assert!(lazy > 0, "no link was pruned");
    for node in &nodes {
        node.stop(Duration::from_secs(1)).await.unwrap();
    }
}
