//! Two thread-based nodes over real loopback sockets run the shared adapter scenario (the
//! scenario is async; it runs on a minimal executor while the nodes run on threads).

use silver_p2p_driver::testing::{
    direct_send_scenario, loopback, paused_reading_scenario, slow_reader_config, test_config,
    tight_send_config, two_node_scenario,
};
use silver_p2p_std_thread::NetworkManager;

#[test]
fn two_nodes_talk_over_loopback() {
    let start = || NetworkManager::new(test_config(), loopback()).start();
    let a = start().unwrap();
    let b = start().unwrap();
    futures::executor::block_on(two_node_scenario(a.0.clone(), b.0.clone()));
}

#[test]
fn a_burst_of_direct_messages_meets_back_pressure_and_arrives_whole() {
    let start = || NetworkManager::new(tight_send_config(), loopback()).start();
    let a = start().unwrap();
    let b = start().unwrap();
    futures::executor::block_on(direct_send_scenario(a.0.clone(), b.0.clone()));
}

#[test]
fn reading_paused_by_the_rate_limit_loses_nothing() {
    let a = NetworkManager::new(test_config(), loopback())
        .start()
        .unwrap();
    let b = NetworkManager::new(slow_reader_config(), loopback())
        .start()
        .unwrap();
    futures::executor::block_on(paused_reading_scenario(a.0.clone(), b.0.clone()));
}
