//! Two tokio nodes over real loopback sockets run the shared adapter scenario.

use silver_p2p_driver::testing::{
    direct_send_scenario, loopback, paused_reading_scenario, slow_reader_config, test_config,
    tight_send_config, two_node_scenario,
};
use silver_p2p_tokio::NetworkManager;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_talk_over_loopback() {
    let start = || NetworkManager::new(test_config(), loopback()).start();
    let a = start().await.unwrap();
    let b = start().await.unwrap();
    two_node_scenario(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_direct_messages_meets_back_pressure_and_arrives_whole() {
    let start = || NetworkManager::new(tight_send_config(), loopback()).start();
    let a = start().await.unwrap();
    let b = start().await.unwrap();
    direct_send_scenario(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_paused_by_the_rate_limit_loses_nothing() {
    let a = NetworkManager::new(test_config(), loopback())
        .start()
        .await
        .unwrap();
    let b = NetworkManager::new(slow_reader_config(), loopback())
        .start()
        .await
        .unwrap();
    paused_reading_scenario(a, b).await;
}

#[tokio::test]
async fn ipv6_loopback_works_where_the_machine_has_it() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    drop(probe);
    let start = || NetworkManager::new(test_config(), vec!["[::1]:0".parse().unwrap()]).start();
    let a = start().await.unwrap();
    let b = start().await.unwrap();
    two_node_scenario(a, b).await;
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = NetworkManager::new(test_config(), vec![addr])
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
