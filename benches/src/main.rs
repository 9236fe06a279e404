//! `silver-p2p-bench`: the end-to-end scenario runner, a copy of the rust-libp2p anchor
//! harness (`/work/shared/anchors/libp2p-bench`) for silver-p2p, scenario for scenario:
//! the same names, flags and defaults, clock points and JSON fields, with
//! `"impl": "silver-p2p"`.
//!
//! Every scenario runs in ONE process on a multi-thread tokio runtime (2 worker threads by
//! default), with all nodes talking over 127.0.0.1 through the tokio adapter. The scenario is
//! `tokio::spawn`ed, so all benchmark work runs on the worker threads and the main thread
//! only waits. Each invocation prints exactly one JSON line on stdout. Scenarios stop by
//! themselves: loops are bounded in count, a soft budget (80 % of `--timeout-s`) ends them
//! early with `"completed": false`, and a hard timeout aborts the scenario (exit code 2).
//!
//! `all` runs every scenario in turn, each as a child process of this binary, so every
//! line's memory figures describe that scenario alone.
//!
//! Run: `cargo run --release -p silver-p2p-bench -- <scenario> [--option value]...`
#![forbid(unsafe_code)]

mod common;
mod scenarios;

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use scenarios::{broadcast, conn_mem, connect, floor, rtt, streams, Report};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "silver-p2p-bench",
    about = "End-to-end silver-p2p benchmarks on loopback; one JSON line per scenario"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// tokio worker threads.
    #[arg(long, default_value_t = 2, global = true)]
    workers: usize,
    /// Hard limit for the scenario in seconds; the soft budget is 80 % of it.
    #[arg(long = "timeout-s", default_value_t = 150.0, global = true)]
    timeout_s: f64,
    /// The nodes' `cipher` setting: auto (the library default: AES-256-GCM where the CPU
    /// has AES instructions), chacha20-poly1305 (the AEAD rust-libp2p's Noise uses) or
    /// aes-256-gcm.
    #[arg(long, default_value = "auto", global = true)]
    cipher: silver_p2p::node::CipherPreference,
}

/// The scenarios, named as in the anchor.
#[derive(Debug, Clone, Subcommand)]
enum Scenario {
    /// Connection establishment latency.
    Connect(connect::Opts),
    /// Request/response latency (NetworkHandle::request / respond).
    Rtt(rtt::Opts),
    /// One-way bulk transfer as application messages.
    Throughput(streams::ThroughputOpts),
    /// One-way small-message rate.
    Msgrate(streams::MsgRateOpts),
    /// One publisher, P directly connected subscribers.
    Broadcast(broadcast::Opts),
    /// Memory per idle connection.
    ConnMem(conn_mem::Opts),
    /// `connect`'s floor: TCP plus a bare snow handshake, no library code.
    FloorConnect(connect::Opts),
    /// `rtt`'s floor: a TCP ping-pong, no library code.
    FloorRtt(rtt::Opts),
    /// `broadcast`'s floor: one task writing to P sockets, no library code.
    FloorBroadcast(broadcast::Opts),
    /// Every scenario in turn, each in a child process (one JSON line each).
    All,
}

/// The command lines `all` runs: the anchor's run.sh suite with its parameters spelled out
/// (minus `rtt-stream`, which has no counterpart, and gossipsub, covered by the one
/// broadcast this library has).
const SUITE: &[&str] = &[
    "connect --n 200 --warmup 10",
    "rtt --n 10000 --warmup 500 --size 64",
    "throughput --bytes 1073741824 --write-size 65536 --read-size 65536 --repeats 3",
    "msgrate --size 256 --duration-s 5 --writer direct",
    "msgrate --size 256 --duration-s 5 --writer buffered",
    "msgrate --size 256 --duration-s 5 --writer unicast",
    "broadcast --subscribers 100 --rounds 50 --warmup 5 --size 1024",
    "broadcast --subscribers 1000 --rounds 50 --warmup 5 --size 1024",
    "conn-mem --conns 1000 --batch 100 --settle-ms 1000",
    "floor-connect --n 200 --warmup 10",
    "floor-rtt --n 10000 --warmup 500 --size 64",
    "floor-broadcast --subscribers 100 --rounds 50 --warmup 5 --size 1024",
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::set_cipher(cli.cipher);
    match cli.scenario {
        Scenario::All => run_all(cli.workers, cli.timeout_s, &cli.cipher),
        scenario => run_one(scenario, cli.workers, cli.timeout_s),
    }
}

/// Runs one scenario on a fresh runtime and prints its line.
fn run_one(scenario: Scenario, workers: usize, timeout_s: f64) -> ExitCode {
    let timeout = Duration::from_secs_f64(timeout_s);
    let budget = timeout.mul_f64(0.8);
    let name = scenario_name(&scenario);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fut: Pin<Box<dyn Future<Output = Report> + Send>> = match scenario {
        Scenario::Connect(o) => Box::pin(connect::run(o, budget)),
        Scenario::Rtt(o) => Box::pin(rtt::run(o, budget)),
        Scenario::Throughput(o) => Box::pin(streams::run_throughput(o, budget)),
        Scenario::Msgrate(o) => Box::pin(streams::run_msgrate(o, budget)),
        Scenario::Broadcast(o) => Box::pin(broadcast::run(o, budget)),
        Scenario::ConnMem(o) => Box::pin(conn_mem::run(o, budget)),
        Scenario::FloorConnect(o) => Box::pin(floor::run_connect(o, budget)),
        Scenario::FloorRtt(o) => Box::pin(floor::run_rtt(o, budget)),
        Scenario::FloorBroadcast(o) => Box::pin(floor::run_broadcast(o, budget)),
        Scenario::All => unreachable!("handled by run_all"),
    };

    let started = Instant::now();
    let cpu_before = common::CpuSnapshot::now();
    // Spawned rather than run inside `block_on` so that ALL benchmark work executes on the
    // worker threads, as in the anchor.
    let outcome =
        runtime.block_on(async move { tokio::time::timeout(timeout, tokio::spawn(fut)).await });
    let (report, code) = match outcome {
        Ok(Ok(report)) => {
            let code = if report.failure.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
            (report, code)
        }
        Ok(Err(join_err)) => (
            failed(name, format!("scenario panicked: {join_err}")),
            ExitCode::from(3),
        ),
        Err(_) => (
            failed(name, format!("hard timeout after {timeout:?}")),
            ExitCode::from(2),
        ),
    };

    print_line(report, workers, Some((started, cpu_before)));

    // Node loops are still parked on the runtime; don't wait for them.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// The line body of a scenario that produced no report.
fn failed(scenario: &'static str, failure: String) -> Report {
    Report {
        scenario,
        params: Value::Null,
        completed: false,
        failure: Some(failure),
        results: Value::Null,
    }
}

/// Prints one result line: the scenario, the run metadata, what the process measured since
/// `since` (wall time, peak RSS, host CPU) when it ran the scenario itself, then the
/// report's body (the anchor's field order).
fn print_line(report: Report, workers: usize, since: Option<(Instant, common::CpuSnapshot)>) {
    let mut line: Vec<(&str, Value)> = vec![("scenario", json!(report.scenario))];
    line.extend(common::metadata(workers));
    if let Some((started, cpu_before)) = since {
        line.push((
            "wall_s",
            json!(common::round3(started.elapsed().as_secs_f64())),
        ));
        // Peak RSS (VmHWM) of the whole process over the scenario's lifetime.
        line.push(("process_peak_rss_kib", json!(common::rss_kib().1)));
        line.push((
            "host_cpu_during",
            cpu_before.report(&common::CpuSnapshot::now()),
        ));
    }
    line.push(("params", report.params));
    line.push(("completed", json!(report.completed)));
    if let Some(f) = report.failure {
        line.push(("failure", json!(f)));
    }
    line.push(("results", report.results));
    println!("{}", common::ordered_object(&line));
}

/// The command-line name of a scenario.
fn scenario_name(s: &Scenario) -> &'static str {
    match s {
        Scenario::Connect(_) => "connect",
        Scenario::Rtt(_) => "rtt",
        Scenario::Throughput(_) => "throughput",
        Scenario::Msgrate(_) => "msgrate",
        Scenario::Broadcast(_) => "broadcast",
        Scenario::ConnMem(_) => "conn-mem",
        Scenario::FloorConnect(_) => "floor-connect",
        Scenario::FloorRtt(_) => "floor-rtt",
        Scenario::FloorBroadcast(_) => "floor-broadcast",
        Scenario::All => "all",
    }
}

/// Runs [`SUITE`], each scenario as a child process of this binary with the same
/// `--workers` and `--timeout-s`, and forwards each child's line. A child that prints no
/// line (crashed, or killed at the timeout plus a grace period) gets a failure line here.
fn run_all(
    workers: usize,
    timeout_s: f64,
    cipher: &silver_p2p::node::CipherPreference,
) -> ExitCode {
    let exe = std::env::current_exe().expect("own executable path");
    // The child enforces its own hard timeout; this is the last resort if it cannot.
    let kill_after = Duration::from_secs_f64(timeout_s) + Duration::from_secs(15);
    let mut all_ok = true;
    for command_line in SUITE {
        let args: Vec<&str> = command_line.split_whitespace().collect();
        let name = args[0];
        let spawned = Command::new(&exe)
            .args(&args)
            .args(["--workers", &workers.to_string()])
            .args(["--timeout-s", &timeout_s.to_string()])
            .args(["--cipher", cipher.name()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                all_ok = false;
                print_line(failed(name, format!("could not start: {e}")), workers, None);
                continue;
            }
        };
        // Read stdout on a thread so a full pipe can never block the child.
        let mut stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() > kill_after => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => break None,
            }
        };
        let out = reader.join().unwrap_or_default();
        let line = out.lines().find(|l| l.starts_with('{'));
        match line {
            Some(l) => println!("{l}"),
            None => print_line(
                failed(name, format!("no result line (exit status {status:?})")),
                workers,
                None,
            ),
        }
        all_ok &= status.is_some_and(|s| s.success());
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
