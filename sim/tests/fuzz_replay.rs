//! Replays the `sim_scenario` fuzz target on stable: every regression input
//! (`fuzz/regressions/sim_scenario/`), an evenly spread sample of the committed corpus
//! (`fuzz/corpus/sim_scenario/`, `SIM_FUZZ_CORPUS` entries, default 24: each input is a whole
//! simulated run, so all of them would take minutes in a debug build) and a few generated
//! inputs (`FUZZ_REPLAY_INPUTS`, default 6).

#[path = "../../core/tests/fuzz_support/mod.rs"]
#[allow(dead_code)] // shared with the core's replay test, which uses every helper
mod fuzz_support;

use silver_p2p_core::fuzzing::{replay, Target};

const TARGET: Target = Target {
    name: "sim_scenario",
    run: silver_p2p_sim::fuzzing::sim_scenario,
};

#[test]
fn sim_scenario() {
    let dir = fuzz_support::fuzz_dir();
    let mut known = fuzz_support::files_in(&dir.join("regressions").join(TARGET.name));
    let corpus = fuzz_support::files_in(&dir.join("corpus").join(TARGET.name));
    let sample: usize = std::env::var("SIM_FUZZ_CORPUS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let step = corpus.len().div_ceil(sample.max(1)).max(1);
    known.extend(corpus.into_iter().step_by(step));
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
