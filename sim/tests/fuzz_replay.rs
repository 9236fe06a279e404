//! Replays the `sim_scenario` fuzz target on stable: the committed corpus and regressions
//! (`fuzz/corpus/sim_scenario/`, `fuzz/regressions/sim_scenario/`) and a few generated
//! inputs (`FUZZ_REPLAY_INPUTS`, default 6: each is a whole simulated run).

#[path = "../../core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use silver_p2p_core::fuzzing::{replay, Target};

const TARGET: Target = Target {
    name: "sim_scenario",
    run: silver_p2p_sim::fuzzing::sim_scenario,
};

#[test]
fn sim_scenario() {
    let known = fuzz_support::committed_inputs(TARGET.name);
    replay(
        &TARGET,
        &known,
        fuzz_support::generated_count(6),
        fuzz_support::seed_for(TARGET.name),
    );
}

#[test]
fn a_decoded_scenario_runs_every_invariant() {
    // 64 bytes of a fixed pattern always name a scenario; it must pass.
    let input: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    let scenario = silver_p2p_sim::fuzzing::scenario_from(&input).expect("long enough");
    let report = scenario.run();
    report.assert_ok();
    assert!(report.nodes >= 2, "the decoded network has nodes");
}
