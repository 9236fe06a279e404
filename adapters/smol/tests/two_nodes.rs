//! Two smol nodes over real loopback sockets run the shared adapter scenario.

use silver_p2p_driver::testing::{test_config, two_node_scenario};
use silver_p2p_smol::NetworkManager;

#[test]
fn two_nodes_talk_over_loopback() {
    smol::block_on(async {
        let start =
            || NetworkManager::new(test_config(), vec!["127.0.0.1:0".parse().unwrap()]).start();
        let a = start().await.unwrap();
        let b = start().await.unwrap();
        two_node_scenario(a, b).await;
    })
}
