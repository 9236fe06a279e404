//! The same seed and scenario give the same trace; different seeds give different traces.

mod common;

#[test]
fn same_seed_same_trace_different_seed_different_trace() {
    let a = common::churn_partition(11, 12).run();
    let b = common::churn_partition(11, 12).run();
    a.assert_ok();
    assert_eq!(a.trace_hash, b.trace_hash, "same seed, different traces");
    assert_eq!(a.events, b.events);
    assert_eq!(a.trace_len, b.trace_len);
    // Everything deterministic in the report matches too.
    assert_eq!(a.broadcasts.latency_ms, b.broadcasts.latency_ms);
    assert_eq!(a.faults.crashes, b.faults.crashes);
    assert_eq!(a.delivery.unicasts_received, b.delivery.unicasts_received);
    assert!(
        a.faults.resets + a.faults.stalls + a.faults.crashes > 0,
        "faults were injected"
    );

    let c = common::churn_partition(12, 12).run();
    c.assert_ok();
    assert_ne!(a.trace_hash, c.trace_hash, "different seeds, same trace");
}

#[test]
fn the_trace_covers_what_nodes_do() {
    // Identical set-ups that differ only in one node's configuration diverge.
    use std::time::Duration;
    let run = |target: usize| {
        silver_p2p_sim::Scenario::new(8)
            .seed(1)
            .duration(Duration::from_secs(60))
            .workload(common::light_workload())
            .configure(move |id, c| {
                if id.0 == 3 {
                    c.limits.target_outbound = target;
                }
            })
            .run()
    };
    let (a, b) = (run(8), run(3));
    a.assert_ok();
    b.assert_ok();
    assert_ne!(a.trace_hash, b.trace_hash);
}

#[test]
fn auto_cipher_is_aes_gcm_on_every_machine() {
    // A seed must replay the same trace on any machine, and the cipher bit changes the
    // Hello's length: so `auto` resolves to one fixed suite in the simulator, not by this
    // CPU, while a scenario that names a cipher keeps it.
    use silver_p2p_core::node::CipherPreference;
    use silver_p2p_core::{Timestamp, TransportSuite};
    use silver_p2p_sim::{NodeId, Scenario, Sim};
    use std::time::Duration;
    let suites = |scenario: Scenario| {
        let mut sim = Sim::new(scenario.seed(5).duration(Duration::from_secs(30)));
        sim.run_until(Timestamp::from_secs(20));
        let suites: Vec<_> = (0..6)
            .filter_map(|i| sim.node(NodeId(i)))
            .flat_map(|n| n.stats(sim.now()).per_peer)
            .map(|p| p.stats.transport_suite)
            .collect();
        sim.run();
        sim.report().assert_ok();
        assert!(!suites.is_empty(), "nodes connected");
        suites
    };
    let auto = suites(Scenario::new(6));
    assert!(auto.iter().all(|s| *s == Some(TransportSuite::Aes256Gcm)));
    let chacha =
        suites(Scenario::new(6).configure(|_, c| c.cipher = CipherPreference::ChaCha20Poly1305));
    assert!(chacha
        .iter()
        .all(|s| *s == Some(TransportSuite::ChaCha20Poly1305)));
}
