//! A restarted node reloads its identity and address book from its data directory and
//! reconnects without the bootstrap node.

use std::time::Duration;

use silver_p2p::driver::testing::{test_config, within};
use silver_p2p::driver::{NetworkHandle, NodeOptions};
use silver_p2p::tokio::NetworkManager;

/// A data directory that does not exist yet, inside a guard that removes it (even when the
/// test fails).
fn data_dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let guard = tempfile::Builder::new()
        .prefix(&format!("silver-restart-{name}-"))
        .tempdir()
        .unwrap();
    let dir = guard.path().join("data");
    (guard, dir)
}

/// Resolves once `a` lists `b` among its peers.
async fn connected(a: &NetworkHandle, b: &NetworkHandle) {
    while !a
        .peers()
        .await
        .unwrap()
        .iter()
        .any(|p| p.peer == b.peer_id())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_finds_its_peers_without_the_bootstrap() {
    let listen = || vec!["127.0.0.1:0".parse().unwrap()];
    let boot = NetworkManager::new(test_config(), listen())
        .start()
        .await
        .unwrap();
    let mut config = test_config();
    config.bootstrap = vec![boot.dial_addr().unwrap()];
    config.limits.target_outbound = 2;
    let c = NetworkManager::new(config.clone(), listen())
        .start()
        .await
        .unwrap();
    let (_guard, dir) = data_dir("b");
    let b_opts = NodeOptions::new(config, listen()).with_data_dir(&dir);
    let b = NetworkManager::with_options(b_opts.clone())
        .start()
        .await
        .unwrap();
    let b_id = b.peer_id();
    within("b meets c through the bootstrap", connected(&b, &c)).await;
    b.stop(Duration::from_secs(1)).await.unwrap();
    boot.stop(Duration::from_secs(1)).await.unwrap();

    // Restart b with no bootstrap at all.
    let mut opts = b_opts;
    opts.config.bootstrap.clear();
    let b = NetworkManager::with_options(opts).start().await.unwrap();
    assert_eq!(b.peer_id(), b_id, "identity reloaded from the key file");
    assert!(
        b.stats().await.unwrap().address_book.known >= 2,
        "address book reloaded"
    );
    within("b reconnects to c from its address book", connected(&b, &c)).await;
    b.stop(Duration::from_secs(1)).await.unwrap();
    c.stop(Duration::from_secs(1)).await.unwrap();
}
