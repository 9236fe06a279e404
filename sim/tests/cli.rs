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
    for (args, reason) in [
        (["--scenario", "nope"], "unknown scenario"),
        (["--nodes", "0"], "at least one node"),
        (["--seeds", "0"], "at least one seed"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_silver-p2p-sim"))
            .args(args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn a_workload_the_nodes_refuse_is_counted_and_warned_about() {
    // 9 MB broadcasts exceed every node's 8 MiB `max_message_size`: each is refused at its
    // origin, which the summary counts and the front end points out, rather than report a
    // run without broadcasts as if it had them.
    let out = Command::new(env!("CARGO_BIN_EXE_silver-p2p-sim"))
        .args([
            "--scenario",
            "steady",
            "--nodes",
            "4",
            "--duration",
            "10s",
            "--broadcast-every",
            "2s",
            "--broadcast-size",
            "9000000",
            "--json",
            "--quiet",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["broadcasts"]["sent"], 0);
    let refused = v["broadcasts"]["refused"].as_u64().unwrap();
    assert!(refused > 0);
    let first = v["first_refusal"].as_str().expect("a reason");
    assert!(first.contains("exceeds the maximum 8388608"), "{first}");
    assert_eq!(v["delivery"]["unicasts_refused"], 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("refused {refused} broadcasts")),
        "{stderr}"
    );
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

#[test]
fn link_settings_from_a_file_apply_and_bad_ones_are_refused() {
    let dir = std::env::temp_dir().join(format!("silver-sim-links-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_silver-p2p-sim"))
            .args(["--nodes", "8", "--seed", "2", "--duration", "30s"])
            .args(["--broadcast-every", "5s", "--json", "--quiet", "--links"])
            .arg(&path)
            .output()
            .expect("runs");
        (out, path)
    };
    // Every link 200 ms one way, no jitter: no broadcast arrives sooner.
    let (out, path) = run(
        "slow.toml",
        "latency_ms = { const = 200 }\njitter_ms = { const = 0 }\nmax_pieces = 1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let min = v["broadcasts"]["latency_ms"]["min"].as_f64().unwrap();
    assert!(min >= 200.0, "fastest delivery {min} ms");
    let replay = v["replay"].as_str().unwrap();
    assert!(
        replay.contains(&format!(" --links {} ", path.display())),
        "{replay}"
    );

    for (name, text, reason) in [
        ("typo.toml", "max_piece = 1\n", "unknown field `max_piece`"),
        (
            "range.toml",
            "max_pieces = 9\n",
            "max_pieces must be 1 to 8",
        ),
        (
            "reversed.toml",
            "jitter_ms = { uniform = { lo = 5, hi = 1 } }\n",
            "jitter_ms: uniform lo (5) is above hi (1)",
        ),
    ] {
        let (out, _) = run(name, text);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{name}: {stderr}");
    }
    let missing = Command::new(env!("CARGO_BIN_EXE_silver-p2p-sim"))
        .args(["--links", "/nonexistent/links.toml"])
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs 10 nodes for 120 s of `steady` (seed 4) with `option` naming a file that holds
/// `text`.
fn run_with_file(option: &str, name: &str, text: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("silver-sim{option}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_silver-p2p-sim"))
        .args(["--nodes", "10", "--seed", "4", "--duration", "120s"])
        .args(["--json", "--quiet", option])
        .arg(&path)
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Each `(file name, text, reason)` is refused: exit status 2, the reason on stderr.
fn assert_files_refused(option: &str, cases: &[(&str, &str, &str)]) {
    for (name, text, reason) in cases {
        let out = run_with_file(option, name, text);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{name}: {stderr}");
    }
}

#[test]
fn fault_settings_from_a_file_apply_and_bad_ones_are_refused() {
    // `steady` has no faults of its own: the file's are the only ones.
    let out = run_with_file(
        "--faults",
        "some.toml",
        "resets_per_min = 6\ncrashes_per_min = 2\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(
        v["faults"]["resets"].as_u64().unwrap() > 0,
        "{}",
        v["faults"]
    );
    assert!(
        v["faults"]["crashes"].as_u64().unwrap() > 0,
        "{}",
        v["faults"]
    );
    assert_eq!(v["faults"]["stalls"].as_u64(), Some(0));
    assert!(v["replay"].as_str().unwrap().contains(" --faults "));
    assert_files_refused(
        "--faults",
        &[
            (
                "typo.toml",
                "crash_per_min = 1\n",
                "unknown field `crash_per_min`",
            ),
            (
                "prob.toml",
                "half_open_prob = 2\n",
                "half_open_prob must be from 0 to 1",
            ),
        ],
    );
}

#[test]
fn timed_commands_from_a_file_run_and_bad_ones_are_refused() {
    // `steady` has no faults of its own: these are the only ones, each counted once.
    let out = run_with_file(
        "--schedule",
        "some.toml",
        r#"
        [[command]]
        at_s = 30
        do = "partition"
        fraction = 0.5
        heal_after_s = 20

        [[command]]
        at_s = 60
        do = "crash"
        node = 3
        restart_after_s = 10

        [[command]]
        at_s = 90
        do = "join"
        count = 2

        # A node that never existed: nothing to restart, and no harm done.
        [[command]]
        at_s = 95
        do = "restart"
        node = 999
        "#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let f = &v["faults"];
    for (key, n) in [
        ("partitions", 1),
        ("crashes", 1),
        ("restarts", 1),
        ("joins", 2),
        ("resets", 0),
    ] {
        assert_eq!(f[key].as_u64(), Some(n), "{key}: {f}");
    }
    assert!(
        v["violations"].as_array().unwrap().is_empty(),
        "{}",
        v["violations"]
    );
    assert!(v["replay"].as_str().unwrap().contains(" --schedule "));

    assert_files_refused(
        "--schedule",
        &[
            (
                "kind.toml",
                "[[command]]\nat_s = 1\ndo = \"explode\"\n",
                "command 1 (explode): unknown command",
            ),
            (
                "key.toml",
                "[[command]]\nat_s = 1\ndo = \"heal\"\nnode = 2\n",
                "does not take `node`",
            ),
        ],
    );
}
