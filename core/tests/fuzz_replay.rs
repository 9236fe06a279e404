//! Replays every fuzz target on stable, so CI exercises them without nightly or cargo-fuzz:
//! the committed corpus (`fuzz/corpus/<target>/`), the regression inputs of every fault the
//! fuzzer found (`fuzz/regressions/<target>/`), the built-in seeds, and a few thousand
//! generated inputs per target (random bytes and mutations of the corpus, from a fixed seed
//! so a failure reproduces). `FUZZ_REPLAY_INPUTS` sets the number generated (default 2000).
//!
//! Every target asserts its properties itself (see `silver_p2p_core::fuzzing`); a failure
//! here names the input file or the generated input's index.

mod fuzz_support;

use fuzz_support::{committed_inputs, files_in, fuzz_dir, generated_count, seed_for};
use silver_p2p_core::fuzzing::{replay as replay_inputs, seed_inputs, TARGETS};

fn replay(name: &str) {
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .expect("the target exists");
    let mut known = committed_inputs(name);
    known.extend(
        seed_inputs(name)
            .into_iter()
            .enumerate()
            .map(|(i, input)| (format!("built-in seed {i}"), input)),
    );
    replay_inputs(target, &known, generated_count(2000), seed_for(name));
}

#[test]
fn every_target_has_a_cargo_fuzz_wrapper_and_back() {
    let wrappers: Vec<String> = files_in(&fuzz_dir().join("fuzz_targets"))
        .into_iter()
        .filter_map(|(p, _)| Some(std::path::Path::new(&p).file_stem()?.to_str()?.to_string()))
        .collect();
    for t in TARGETS {
        assert!(
            wrappers.contains(&t.name.to_string()),
            "fuzz/fuzz_targets/{}.rs is missing",
            t.name
        );
    }
    // The simulator's target lives in its own crate.
    for w in &wrappers {
        assert!(
            w == "sim_scenario" || TARGETS.iter().any(|t| t.name == w),
            "fuzz/fuzz_targets/{w}.rs has no body in silver_p2p_core::fuzzing"
        );
    }
}

#[test]
fn frame_decoder() {
    replay("frame_decoder");
}

#[test]
fn message_decode() {
    replay("message_decode");
}

#[test]
fn chunk_reassembly() {
    replay("chunk_reassembly");
}

#[test]
fn handshake_initiator() {
    replay("handshake_initiator");
}

#[test]
fn handshake_responder() {
    replay("handshake_responder");
}

#[test]
fn connection_inputs() {
    replay("connection_inputs");
}

#[test]
fn node_inputs() {
    replay("node_inputs");
}

#[test]
fn address_book() {
    replay("address_book");
}

#[test]
fn config() {
    replay("config");
}

/// Writes the built-in seeds into `fuzz/corpus/<target>/seed-<n>` so a cargo-fuzz run starts
/// from valid examples. Run by `fuzz/run.sh`; ignored in normal test runs because it writes
/// into the source tree.
#[test]
#[ignore = "writes the seed corpus into the source tree; run by fuzz/run.sh"]
fn write_seed_corpus() {
    for t in TARGETS {
        let dir = fuzz_dir().join("corpus").join(t.name);
        for (i, input) in seed_inputs(t.name).into_iter().enumerate() {
            std::fs::create_dir_all(&dir).expect("corpus directory can be created");
            std::fs::write(dir.join(format!("seed-{i}")), input).expect("seed can be written");
        }
    }
}
