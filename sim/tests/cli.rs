//! The command-line front end: `--json` prints the summary as one JSON object.

mod common;

use std::process::Command;

#[test]
fn json_summary_has_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_silver-p2p-sim"))
        .args([
            "--scenario",
            "steady",
            "--nodes",
            "6",
            "--seed",
            "3",
            "--duration",
            "40s",
            "--broadcast-every",
            "5s",
            "--json",
            "--quiet",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "trace_hash",
        "violations",
        "target_degree",
        "degree",
        "broadcasts",
        "traffic",
        "bans",
        "reconnects",
        "memory",
        "events_per_sec",
        "wall_time_s",
        "replay",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["trace_hash"].as_str().unwrap().len(), 32);
    assert!(v["violations"].as_array().unwrap().is_empty());
    assert!(v["broadcasts"]["latency_ms"]["p99"].is_number());
    assert_eq!(
        v["replay"].as_str().unwrap(),
        "silver-p2p-sim --scenario steady --nodes 6 --seed 3 --duration 40s --liveness 600s --broadcast-every 5s"
    );
}

#[test]
fn bad_arguments_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_silver-p2p-sim"))
        .args(["--scenario", "nope"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario"));
}

#[test]
fn the_printed_replay_command_reproduces_the_library_run() {
    let lib = common::churn_partition(1007, 8).run();
    let cmd = common::churn_partition_command(1007, 8);
    assert_eq!(lib.replay, cmd);
    let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_silver-p2p-sim"))
        .args(&args)
        .args(["--json", "--quiet"])
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["trace_hash"].as_str().unwrap(), lib.trace_hash);
}
