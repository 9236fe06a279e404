#![no_main]
//! cargo-fuzz wrapper of `silver_p2p_sim::fuzzing::sim_scenario`, where the target is
//! documented.
libfuzzer_sys::fuzz_target!(|data: &[u8]| silver_p2p_sim::fuzzing::sim_scenario(data));
