//! A subscriber that stops reading its event stream loses events, never stalls the node,
//! and every lost event is counted in the node's statistics.

use std::time::Duration;

use silver_p2p::driver::testing::{test_config, within};
use silver_p2p::driver::NodeOptions;
use silver_p2p::tokio::NetworkManager;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_slow_subscriber_misses_are_counted_in_stats() {
    let listen = || vec!["127.0.0.1:0".parse().unwrap()];
    let mut options = NodeOptions::new(test_config(), listen());
    options.event_capacity = 1;
    let a = NetworkManager::with_options(options).start().await.unwrap();
    // Subscribed, never read: it holds at most its capacity (plus one per sender).
    let _stalled = a.events();
    let b = NetworkManager::new(test_config(), listen())
        .start()
        .await
        .unwrap();
    within("connect", b.connect_to_peer(a.dial_addr().unwrap()))
        .await
        .unwrap();
    // Both sides must list each other before gossip can flow.
    within("both sides connected", async {
        while b.peers().await.unwrap().is_empty() || a.peers().await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // Every gossip message from b is one more event at a.
    for i in 0..20u8 {
        let tx = silver_p2p::core::node::GossipMessage::Transaction(vec![i; 16].into());
        let _ = within("broadcast", b.broadcast(tx)).await;
    }
    let dropped = within("dropped events counted", async {
        loop {
            let s = a.stats().await.unwrap();
            if s.events_dropped >= 10 {
                break s.events_dropped;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(dropped >= 10, "{dropped}");
    // The node still answers: nothing blocked on the stalled stream.
    assert_eq!(a.peers().await.unwrap().len(), 1);
    b.stop(Duration::from_secs(1)).await.unwrap();
    a.stop(Duration::from_secs(1)).await.unwrap();
}
