//! Two async-std nodes over real loopback sockets run the shared adapter scenario.

use silver_p2p_async_std::NetworkManager;
use silver_p2p_driver::testing::{
    direct_send_scenario, loopback, test_config, tight_send_config, two_node_scenario,
};

#[test]
fn two_nodes_talk_over_loopback() {
    async_std::task::block_on(async {
        let start = || NetworkManager::new(test_config(), loopback()).start();
        let a = start().await.unwrap();
        let b = start().await.unwrap();
        two_node_scenario(a, b).await;
    })
}

#[test]
fn a_burst_of_direct_messages_meets_back_pressure_and_arrives_whole() {
    async_std::task::block_on(async {
        let start = || NetworkManager::new(tight_send_config(), loopback()).start();
        let a = start().await.unwrap();
        let b = start().await.unwrap();
        direct_send_scenario(a, b).await;
    })
}
