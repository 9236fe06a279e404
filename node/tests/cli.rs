//! The built `silver-node` binary, run as a user would: bad configuration, a port in use,
//! keygen and id, a small devnet, and nodes run by hand with a graceful Ctrl-C. Every child
//! runs under a timeout that kills it, so a hang fails the test instead of blocking CI.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_silver-node");

/// A finished run: exit code (`None` when killed by the timeout), stdout, stderr.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Waits for `child` until `timeout`, killing it then. Returns its exit code, if it exited.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary with `args`, killing it after `timeout`.
fn run(args: &[&str], timeout: Duration) -> Outcome {
    let mut child = command(args).spawn().expect("the binary starts");
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let code = wait_or_kill(&mut child, timeout);
    let o = Outcome {
        code,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        o.code.is_some(),
        "silver-node {args:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
    o
}

/// A fresh directory, removed with everything in it when the guard drops.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("silver-node-cli-{name}-"))
        .tempdir()
        .unwrap()
}

const QUICK: Duration = Duration::from_secs(10);

#[test]
fn an_invalid_config_exits_2_naming_the_file_the_key_and_the_rule() {
    let tmp = temp_dir("invalid");
    let dir = tmp.path();
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        "[limits]\nmax_connections = 10\nmax_inbound = 10\nmax_outbound = 12\n",
    )
    .unwrap();
    let o = run(&["run", "--config", path.to_str().unwrap()], QUICK);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains(path.to_str().unwrap()), "{}", o.stderr);
    assert!(o.stderr.contains("limits.max_outbound"), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("max_outbound (12) exceeds max_connections (10)"),
        "{}",
        o.stderr
    );
}

#[test]
fn an_unknown_key_or_unreadable_file_exits_2() {
    let tmp = temp_dir("unknown");
    let dir = tmp.path();
    let path = dir.join("node.toml");
    std::fs::write(&path, "network_id = \"x\"\n\n[limits]\nmax_peers = 3\n").unwrap();
    let o = run(&["run", "--config", path.to_str().unwrap()], QUICK);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("{}:4:1: ", path.to_str().unwrap())),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("`limits.max_peers`"), "{}", o.stderr);
    assert!(o.stderr.contains("unknown field"), "{}", o.stderr);

    let missing = dir.join("missing.toml");
    let o = run(&["run", "--config", missing.to_str().unwrap()], QUICK);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains(missing.to_str().unwrap()), "{}", o.stderr);
    assert!(o.stderr.contains("cannot read"), "{}", o.stderr);
}

#[test]
fn a_port_in_use_exits_2_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = temp_dir("port");
    let dir = tmp.path();
    let o = run(
        &[
            "run",
            "--listen",
            &addr,
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        QUICK,
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("cannot listen on {addr}")),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("another port"), "{}", o.stderr);
}

#[test]
fn keygen_then_id_print_the_same_peer_id() {
    let tmp = temp_dir("keys");
    let dir = tmp.path();
    let d = dir.join("data");
    let o = run(&["id", "--data-dir", d.to_str().unwrap()], QUICK);
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert!(o.stderr.contains("no key"), "{}", o.stderr);
    assert!(!d.exists(), "id must not create the data directory");

    let made = run(&["keygen", "--data-dir", d.to_str().unwrap()], QUICK);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let id = made.stdout.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    let shown = run(&["id", "--data-dir", d.to_str().unwrap()], QUICK);
    assert_eq!(shown.code, Some(0), "{}", shown.stderr);
    assert_eq!(shown.stdout.trim(), id);
    // keygen again keeps the key.
    let again = run(&["keygen", "--data-dir", d.to_str().unwrap()], QUICK);
    assert_eq!(again.stdout.trim(), id);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
}

#[test]
fn a_small_devnet_prints_json_with_full_coverage() {
    let o = run(
        &[
            "devnet",
            "--nodes",
            "5",
            "--broadcasts",
            "6",
            "--block-every",
            "3",
            "--unicasts",
            "5",
            "--burst",
            "20",
            "--discovery-timeout",
            "10",
            "--broadcast-timeout",
            "3",
            "--unicast-timeout",
            "3",
            "--seed",
            "1",
            "--json",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(
        o.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| {
        panic!("not one JSON object ({e}):\n{}", o.stdout);
    });
    assert_eq!(v["nodes"], 5);
    assert_eq!(v["ok"], true);
    assert_eq!(v["coverage"], 1.0, "{v}");
    assert_eq!(v["unicast_failed"], 0, "{v}");
    assert_eq!(v["unicast_delivered"], 5, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["discovery_s"].as_f64().unwrap() > 0.0, "{v}");
    for p in ["p50", "p99", "max"] {
        assert!(v["propagation_ms"][p].as_f64().unwrap() > 0.0, "{v}");
    }
    assert_eq!(v["throughput"]["coverage"], 1.0, "{v}");
    // Progress went to stderr, not into the JSON.
    assert!(o.stderr.contains("discovery"), "{}", o.stderr);
}

/// A running node whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Taken by `interrupt`; `None` afterwards.
    stdout: Option<thread::JoinHandle<String>>,
}

/// A node a test leaves behind (its assertion failed first) is killed, so it does not
/// outlive the test or its deleted data directory.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = command(args).spawn().expect("the binary starts");
        let stdout = drain(child.stdout.take().expect("stdout"));
        let err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Waits for a stderr line containing `what`; returns it. Kills the node on timeout.
    fn wait_for(&mut self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(what) {
                        return l;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line with {what:?} within {timeout:?}; stderr so far:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit: (code, stdout).
    fn interrupt(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "could not send SIGINT");
        let code = wait_or_kill(&mut self.child, QUICK);
        let stdout = self.stdout.take().expect("interrupted once");
        (code, stdout.join().expect("stdout reader"))
    }
}

#[cfg(unix)]
#[test]
fn an_unreachable_bootstrap_is_retried_while_the_node_runs_and_ctrl_c_reports() {
    // A port that was free a moment ago: nothing listens there.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let tmp = temp_dir("unreachable");
    let dir = tmp.path();
    let mut node = Running::start(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--bootstrap",
        &gone,
        "--stats-interval",
        "1",
    ]);
    node.wait_for(
        &format!("bootstrap peer {gone} unreachable (attempt 1)"),
        QUICK,
    );
    node.wait_for(
        &format!("bootstrap peer {gone} unreachable (attempt 2)"),
        QUICK,
    );
    node.wait_for("peers 0 (in 0, out 0", QUICK);
    let (code, stdout) = node.interrupt();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("shutdown report: 0 peers closed"),
        "{stdout}"
    );
}

#[cfg(unix)]
#[test]
fn two_nodes_run_by_hand_connect_and_shut_down_gracefully() {
    let tmp = temp_dir("pair");
    let dir = tmp.path();
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    let mut a = Running::start(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        a_dir.to_str().unwrap(),
        "--network",
        "cli-test",
    ]);
    let hint = a.wait_for("can bootstrap from it with: --bootstrap ", QUICK);
    let addr = hint.rsplit(' ').next().unwrap().to_string();
    let mut b = Running::start(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        b_dir.to_str().unwrap(),
        "--network",
        "cli-test",
        "--bootstrap",
        &addr,
    ]);
    b.wait_for("peer connected", QUICK);
    a.wait_for("peer connected", QUICK);
    let (code, stdout) = b.interrupt();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("shutdown report: 1 peers closed"),
        "{stdout}"
    );
    // b's Goodbye reaches a before b exits.
    a.wait_for("peer said goodbye", QUICK);
    let (code, stdout) = a.interrupt();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("shutdown report"), "{stdout}");
}
