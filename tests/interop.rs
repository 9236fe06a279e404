//! Cross-runtime interop over real loopback sockets: a tokio, a smol, an async-std and a
//! std-thread node in one network exchange broadcasts and unicasts. Bounded in time.

use std::time::Duration;

use bytes::Bytes;
use silver_p2p::core::TransportSuite;
use silver_p2p::driver::testing::{test_config, wait_for, within};
use silver_p2p::driver::NetworkHandle;
use silver_p2p::node::{Event, GossipMessage, MessageId};

fn listen() -> Vec<std::net::SocketAddr> {
    vec!["127.0.0.1:0".parse().unwrap()]
}

#[test]
fn four_runtimes_one_network() {
    let config = || {
        let mut c = test_config();
        c.limits.target_outbound = 3;
        c
    };
    // tokio needs a runtime that outlives the test body.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt
        .block_on(silver_p2p::tokio::NetworkManager::new(config(), listen()).start())
        .unwrap();
    let s =
        smol::block_on(silver_p2p::smol::NetworkManager::new(config(), listen()).start()).unwrap();
    let a = async_std::task::block_on(
        silver_p2p::async_std::NetworkManager::new(config(), listen()).start(),
    )
    .unwrap();
    // The thread node keeps to ChaCha20-Poly1305, the others ask for what their CPU suits.
    let chacha_only = silver_p2p::node::NodeConfig {
        cipher: silver_p2p::node::CipherPreference::ChaCha20Poly1305,
        ..config()
    };
    let th = silver_p2p::std_thread::NetworkManager::new(chacha_only, listen())
        .start()
        .unwrap()
        .0;
    let nodes: Vec<(&str, NetworkHandle)> = vec![
        ("tokio", t),
        ("smol", s),
        ("async-std", a),
        ("std-thread", th),
    ];
    futures::executor::block_on(async {
        let mut events: Vec<_> = nodes.iter().map(|(_, h)| h.events()).collect();
        // Everyone dials the tokio node; discovery does the rest.
        let boot = nodes[0].1.dial_addr().unwrap();
        for (_, h) in &nodes[1..] {
            h.add_bootstrap_peer(boot).unwrap();
        }
        within("full mesh", async {
            loop {
                let mut done = true;
                for (_, h) in &nodes {
                    done &= h.peers().await.unwrap().len() == 3;
                }
                if done {
                    break;
                }
                silver_p2p::driver::testing::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;

        // Every adapter resolved `cipher = "auto"` for this CPU: AES-256-GCM between two such
        // nodes where the CPU has AES instructions; any link with the thread node is ChaCha.
        let auto = if silver_p2p::driver::has_aes_instructions() {
            TransportSuite::Aes256Gcm
        } else {
            TransportSuite::ChaCha20Poly1305
        };
        let thread_node = nodes[3].1.peer_id();
        for (i, (name, h)) in nodes.iter().enumerate() {
            let stats = h.stats().await.unwrap();
            assert_eq!(stats.per_peer.len(), 3, "{name}");
            for p in &stats.per_peer {
                let expected = if i == 3 || p.peer == thread_node {
                    TransportSuite::ChaCha20Poly1305
                } else {
                    auto
                };
                assert_eq!(p.stats.transport_suite, Some(expected), "{name}");
            }
        }

        // Each node broadcasts once; each other node's application sees each exactly once.
        let mut ids: Vec<MessageId> = Vec::new();
        for (name, h) in &nodes {
            let r = h
                .broadcast(GossipMessage::Transaction(Bytes::from(format!(
                    "tx from {name}"
                ))))
                .await
                .unwrap();
            assert_eq!(r.queued(), 3, "{name}");
            ids.push(r.id);
        }
        for (i, ev) in events.iter_mut().enumerate() {
            let mut seen = Vec::new();
            within("gossip everywhere", async {
                while seen.len() < 3 {
                    let id = wait_for(ev, |e| match e {
                        Event::Gossip { id, .. } => Some(id),
                        _ => None,
                    })
                    .await;
                    assert!(!seen.contains(&id), "delivered twice");
                    seen.push(id);
                }
            })
            .await;
            assert!(!seen.contains(&ids[i]), "a node got its own broadcast");
        }

        // Unicasts around the ring, each acknowledged.
        for i in 0..nodes.len() {
            let to = nodes[(i + 1) % nodes.len()].1.peer_id();
            within(
                "unicast",
                nodes[i].1.unicast(
                    to,
                    1,
                    Bytes::from(format!("to my right from {}", nodes[i].0)),
                ),
            )
            .await
            .unwrap();
        }
        for (_, h) in &nodes {
            within("stop", h.stop(Duration::from_secs(2)))
                .await
                .unwrap();
        }
    });
}
