//! One larger scenario: 500 nodes with churn, a light workload, two minutes of faults.

mod common;

use std::time::Duration;

use silver_p2p_sim::{Scenario, Workload};

#[test]
fn five_hundred_nodes_with_churn() {
    let r = Scenario::builtin("churn", 500)
        .unwrap()
        .seed(3)
        .duration(Duration::from_secs(120))
        .liveness_budget(Duration::from_secs(300))
        .workload(Workload {
            broadcast_every: Some(Duration::from_secs(10)),
            ..common::light_workload()
        })
        .run();
    r.assert_ok();
    assert_eq!(r.nodes, 500);
    assert!(r.faults.crashes > 0 && r.faults.joins > 0);
    assert!(
        r.target_degree.reached * 10 >= r.target_degree.nodes * 9,
        "{:?}",
        r.target_degree
    );
    assert!(
        r.broadcasts.coverage.mean > 0.98,
        "{:?}",
        r.broadcasts.coverage
    );
    assert!(r.liveness.converged);
}
