//! Two smol nodes over real loopback sockets run the shared adapter scenario.

use silver_p2p_driver::testing::{
    direct_send_scenario, loopback, paused_reading_scenario, slow_reader_config, test_config,
    tight_send_config, two_node_scenario,
};
use silver_p2p_smol::NetworkManager;

#[test]
fn two_nodes_talk_over_loopback() {
    smol::block_on(async {
        let start = || NetworkManager::new(test_config(), loopback()).start();
        let a = start().await.unwrap();
        let b = start().await.unwrap();
        two_node_scenario(a, b).await;
    })
}

#[test]
fn a_burst_of_direct_messages_meets_back_pressure_and_arrives_whole() {
    smol::block_on(async {
        let start = || NetworkManager::new(tight_send_config(), loopback()).start();
        let a = start().await.unwrap();
        let b = start().await.unwrap();
        direct_send_scenario(a, b).await;
    })
}

#[test]
fn reading_paused_by_the_rate_limit_loses_nothing() {
    smol::block_on(async {
        let a = NetworkManager::new(test_config(), loopback())
            .start()
            .await
            .unwrap();
        let b = NetworkManager::new(slow_reader_config(), loopback())
            .start()
            .await
            .unwrap();
        paused_reading_scenario(a, b).await;
    })
}
