//! Loading the committed fuzz inputs, shared by the replay tests of the core and the
//! simulator (the simulator's test includes this file by path).

use std::path::{Path, PathBuf};

/// The cargo-fuzz project at the repository root.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, named by path,
/// in a stable order.
pub fn committed_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut inputs = Vec::new();
    for dir in ["corpus", "regressions"] {
        inputs.extend(files_in(&fuzz_dir().join(dir).join(target)));
    }
    inputs
}

/// The files directly in `dir` (none if it does not exist), sorted by path.
pub fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("fuzz input is readable");
            (p.display().to_string(), bytes)
        })
        .collect()
}

/// Inputs to generate per target: `FUZZ_REPLAY_INPUTS`, else `default`.
pub fn generated_count(default: usize) -> usize {
    std::env::var("FUZZ_REPLAY_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A generator seed derived from the target's name, so each target gets its own inputs and
/// a failure reproduces.
pub fn seed_for(target: &str) -> [u8; 32] {
    let mut seed = [0u8; 32];
    let n = target.len().min(32);
    seed[..n].copy_from_slice(&target.as_bytes()[..n]);
    seed
}
