//! Two tokio nodes over real loopback sockets: handshake, broadcast, unicast with
//! acknowledgement, request and response, graceful shutdown. Bounded in time.

use std::time::Duration;

use std::future::Future;

use bytes::Bytes;
use silver_p2p_tokio::core::node::*;
use silver_p2p_tokio::{EventStream, NetworkManager, NodeConfig};

fn config() -> NodeConfig {
    NodeConfig {
        network_id: "tokio-test".into(),
        ..Default::default()
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_talk_over_loopback() {
    let a = NetworkManager::new(config(), vec!["127.0.0.1:0".parse().unwrap()])
        .start()
        .await
        .unwrap();
    let b = NetworkManager::new(config(), vec!["127.0.0.1:0".parse().unwrap()])
        .start()
        .await
        .unwrap();
    let mut b_events = b.events();
    let mut a_events = a.events();
    a.connect_to_peer(b.dial_addr().unwrap()).await.unwrap();
    within("handshake", async {
        loop {
            if let Some(Event::PeerConnected { peer, .. }) = next(&mut b_events).await {
                assert_eq!(peer, a.peer_id());
                break;
            }
        }
    })
    .await;

    // Broadcast.
    let report = a
        .broadcast(GossipMessage::Block(Bytes::from_static(b"block 1")))
        .await
        .unwrap();
    assert_eq!(report.queued(), 1);
    within("gossip", async {
        loop {
            if let Some(Event::Gossip { message, .. }) = next(&mut b_events).await {
                assert_eq!(
                    message,
                    GossipMessage::Block(Bytes::from_static(b"block 1"))
                );
                break;
            }
        }
    })
    .await;

    // Unicast resolves once b acknowledged it.
    within(
        "unicast",
        a.unicast(b.peer_id(), 7, Bytes::from_static(b"hi b")),
    )
    .await
    .unwrap();

    // Request and response: b answers from its event stream.
    let b2 = b.clone();
    let server = tokio::spawn(async move {
        loop {
            if let Some(Event::Request { id, request, .. }) = next(&mut b_events).await {
                assert_eq!(request, Request::GetBlock(Bytes::from_static(b"h")));
                b2.respond(id, Some(Bytes::from_static(b"the block")))
                    .await
                    .unwrap();
                return;
            }
        }
    });
    let answer = within(
        "request",
        a.request(b.peer_id(), Request::GetBlock(Bytes::from_static(b"h"))),
    )
    .await
    .unwrap();
    assert_eq!(answer, Bytes::from_static(b"the block"));
    server.await.unwrap();

    // Graceful shutdown: b learns why.
    let report = within("stop", a.stop(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(report.peers_closed, 1);
    // A second stop returns the same report.
    assert_eq!(a.stop(Duration::from_secs(2)).await.unwrap(), report);
    within("a's goodbye", async {
        let mut b_events = b.events();
        loop {
            let peers = b.peers().await.unwrap();
            if peers.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = b_events.try_recv();
        }
    })
    .await;
    drop(a_events.try_recv());
    b.stop(Duration::from_secs(1)).await.unwrap();
}

async fn next(s: &mut EventStream) -> Option<Event> {
    s.next().await
}
