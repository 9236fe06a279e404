//! Helpers shared by the simulator's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use silver_p2p_sim::{Scenario, Workload};

/// A light workload for debug-build tests: fewer broadcasts keep runs short while every
/// kind of traffic is still exercised.
pub fn light_workload() -> Workload {
    Workload {
        broadcast_every: Some(Duration::from_secs(5)),
        broadcast_size: 1024,
        unicast_every: Some(Duration::from_secs(5)),
        unicast_size: 256,
        request_every: Some(Duration::from_secs(10)),
        auto_respond: true,
    }
}

/// The 20-node churn-and-partition scenario of the seed sweep, with a light workload, five
/// minutes of faults and a liveness budget of ten minutes.
pub fn churn_partition(seed: u64, nodes: usize) -> Scenario {
    Scenario::builtin("churn-partition", nodes)
        .expect("built-in")
        .seed(seed)
        .duration(Duration::from_secs(300))
        .workload(light_workload())
        .replay_as(churn_partition_command(seed, nodes))
}

/// [`churn_partition`] with tree gossip on every node.
pub fn churn_partition_tree(seed: u64, nodes: usize) -> Scenario {
    churn_partition(seed, nodes)
        .configure(|_, c| c.gossip.mode = silver_p2p_core::node::GossipMode::Tree)
        .replay_as(churn_partition_command(seed, nodes) + " --gossip tree")
}

/// The CLI command that runs exactly [`churn_partition`].
pub fn churn_partition_command(seed: u64, nodes: usize) -> String {
    format!(
        "silver-p2p-sim --scenario churn-partition --nodes {nodes} --seed {seed} --duration 300s \
         --liveness 600s --broadcast-every 5s --unicast-every 5s --request-every 10s"
    )
}
