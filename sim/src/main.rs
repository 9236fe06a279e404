//! `silver-p2p-sim`: runs a built-in scenario and prints its summary.
//!
//! ```text
//! silver-p2p-sim --nodes 1000 --seed 7 --duration 1h --scenario churn
//! silver-p2p-sim --nodes 20 --seed 3 --scenario churn-partition --json
//! ```
//!
//! Exit status: 0 when no invariant was violated, 1 when one was (the seed and the command
//! that replays the run are printed), 2 for bad arguments.
#![forbid(unsafe_code)]

/// A simulation frees and allocates a transmit buffer per message across thousands of
/// nodes; mimalloc does that faster than the system allocator (see the README's figures).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use silver_p2p_core::node::GossipMode;
use silver_p2p_sim::{available_memory, process_peak_rss, Scenario, Workload, BUILTIN_SCENARIOS};

/// Deterministic network simulator for silver-p2p.
#[derive(Parser, Debug)]
#[command(name = "silver-p2p-sim", version, about, long_about = None)]
struct Args {
    /// Scenario to run (see --list).
    #[arg(long, default_value = "steady")]
    scenario: String,
    /// Initial honest nodes (at least 1).
    #[arg(long, default_value_t = 100, value_parser = parse_nodes)]
    nodes: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Length of the safety phase (faults on): 90s, 10m, 1h, 500ms.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Most time the liveness phase may take to converge after faults stop.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    liveness: Duration,
    /// Outbound connections each node keeps.
    #[arg(long)]
    outbound: Option<usize>,
    /// Seed nodes (bootstrap topology, at least 1); default one per 64 nodes.
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<usize>,
    /// Interval between workload broadcasts ("0" for none).
    #[arg(long, value_parser = parse_duration)]
    broadcast_every: Option<Duration>,
    /// Bytes per workload broadcast.
    #[arg(long)]
    broadcast_size: Option<usize>,
    /// Interval between workload unicasts ("0" for none).
    #[arg(long, value_parser = parse_duration)]
    unicast_every: Option<Duration>,
    /// Interval between workload requests ("0" for none).
    #[arg(long, value_parser = parse_duration)]
    request_every: Option<Duration>,
    /// A node configuration (TOML, as `silver-node` reads it) applied to every node; the
    /// simulator still sets the network id, listen address and bootstrap peers.
    #[arg(long)]
    node_config: Option<std::path::PathBuf>,
    /// Link settings (TOML) applied over the scenario's own: latency_ms, jitter_ms,
    /// bandwidth, regions, max_pieces, window, connect_timeout_ms; any subset (see
    /// `LinkConfig::apply_toml`).
    #[arg(long)]
    links: Option<std::path::PathBuf>,
    /// Random faults (TOML) applied over the scenario's own: any of the `Faults` fields,
    /// such as stalls_per_min, resets_per_min, crashes_per_min, partitions (see
    /// `Faults::apply_toml`).
    #[arg(long)]
    faults: Option<std::path::PathBuf>,
    /// Timed commands (TOML `[[command]]` tables: `at_s`, `do` and its keys), run on top of
    /// the scenario's own: partitions, crashes, broadcasts… at chosen times (see the
    /// `schedule` module of the library).
    #[arg(long)]
    schedule: Option<std::path::PathBuf>,
    /// Gossip mode of every node: `flood` or `tree` (applied after --node-config).
    #[arg(long, value_parser = parse_gossip_mode)]
    gossip: Option<GossipMode>,
    /// Memory sampling interval (bounds are checked every ten samples).
    #[arg(long, value_parser = parse_duration)]
    sample_every: Option<Duration>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Show a progress line on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
    /// Never show the progress line.
    #[arg(long)]
    quiet: bool,
    /// Print faults, restarts, joins and violations to stderr as they happen.
    #[arg(long)]
    log: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn parse_nodes(s: &str) -> Result<usize, String> {
    at_least_one(s, "a simulation needs at least one node")
}

fn parse_seeds(s: &str) -> Result<usize, String> {
    at_least_one(s, "the bootstrap topology needs at least one seed node")
}

fn at_least_one(s: &str, why: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err(why.into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Peak resident memory per simulated node, measured in the `steady` scenario: 390 MB
/// (tree gossip) to 443 MB (flooding) for 1,000 nodes, 3.90–3.97 GB for 10,000 (README,
/// Simulator, Scale), rounded up. Workloads with larger messages or histories need more.
const BYTES_PER_NODE: u64 = 450_000;

/// A warning when `nodes` would need more memory than the machine has available: a
/// mistyped node count would otherwise run for minutes before the system kills it.
fn memory_warning(nodes: usize, available: Option<u64>) -> Option<String> {
    let available = available?;
    let need = (nodes as u64).saturating_mul(BYTES_PER_NODE);
    (need > available).then(|| {
        format!(
            "warning: {nodes} nodes need about {:.1} GB (about {} kB each), and this machine \
             has {:.1} GB available: the run may be killed for lack of memory",
            need as f64 / 1e9,
            BYTES_PER_NODE / 1000,
            available as f64 / 1e9
        )
    })
}

fn parse_gossip_mode(s: &str) -> Result<GossipMode, String> {
    match s {
        "flood" => Ok(GossipMode::Flood),
        "tree" => Ok(GossipMode::Tree),
        _ => Err(format!("unknown gossip mode {s:?}: flood or tree")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number and a unit (ms, s, m, h)")
    })?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("invalid duration unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The exact command that replays this run: every option that changes the simulation.
fn replay_command(a: &Args) -> String {
    let mut c = format!(
        "silver-p2p-sim --scenario {} --nodes {} --seed {} --duration {}s --liveness {}s",
        a.scenario,
        a.nodes,
        a.seed,
        a.duration.as_secs_f64(),
        a.liveness.as_secs_f64()
    );
    let d = |x: Duration| format!("{}s", x.as_secs_f64());
    if let Some(p) = &a.node_config {
        c += &format!(" --node-config {}", p.display());
    }
    if let Some(p) = &a.links {
        c += &format!(" --links {}", p.display());
    }
    if let Some(p) = &a.faults {
        c += &format!(" --faults {}", p.display());
    }
    if let Some(p) = &a.schedule {
        c += &format!(" --schedule {}", p.display());
    }
    if let Some(g) = a.gossip {
        c += match g {
            GossipMode::Flood => " --gossip flood",
            GossipMode::Tree => " --gossip tree",
        };
    }
    if let Some(o) = a.outbound {
        c += &format!(" --outbound {o}");
    }
    if let Some(k) = a.seeds {
        c += &format!(" --seeds {k}");
    }
    if let Some(x) = a.broadcast_every {
        c += &format!(" --broadcast-every {}", d(x));
    }
    if let Some(x) = a.broadcast_size {
        c += &format!(" --broadcast-size {x}");
    }
    if let Some(x) = a.unicast_every {
        c += &format!(" --unicast-every {}", d(x));
    }
    if let Some(x) = a.request_every {
        c += &format!(" --request-every {}", d(x));
    }
    if let Some(x) = a.sample_every {
        c += &format!(" --sample-every {}", d(x));
    }
    c
}

/// Reads the settings file at `path` and hands its text to `apply`.
fn apply_file(
    path: &std::path::Path,
    apply: impl FnOnce(&str) -> Result<(), String>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    apply(&text)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for (name, what) in BUILTIN_SCENARIOS {
            println!("{name:16} {what}");
        }
        return ExitCode::SUCCESS;
    }
    let Some(mut scenario) = Scenario::builtin(&args.scenario, args.nodes) else {
        eprintln!(
            "unknown scenario {:?}; known: {}",
            args.scenario,
            BUILTIN_SCENARIOS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    };
    if let Some(warning) = memory_warning(args.nodes, available_memory()) {
        eprintln!("{warning}");
    }
    scenario = scenario
        .seed(args.seed)
        .duration(args.duration)
        .liveness_budget(args.liveness);
    if let Some(k) = args.seeds {
        scenario = scenario.topology(silver_p2p_sim::Topology::Bootstrap { seeds: k });
    }
    if let Some(path) = &args.node_config {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let base = match silver_p2p_core::node::NodeConfig::from_toml(&text) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("invalid node configuration {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        scenario = scenario.configure(move |_, c| {
            let (network, listen, boot) = (
                std::mem::take(&mut c.network_id),
                std::mem::take(&mut c.listen_addrs),
                std::mem::take(&mut c.bootstrap),
            );
            *c = base.clone();
            c.network_id = network;
            c.listen_addrs = listen;
            c.bootstrap = boot;
        });
    }
    if let Some(path) = &args.links {
        let mut links = scenario.link_config().clone();
        if let Err(e) = apply_file(path, |text| links.apply_toml(text)) {
            eprintln!("invalid link settings {}: {e}", path.display());
            return ExitCode::from(2);
        }
        scenario = scenario.links(links);
    }
    if let Some(path) = &args.faults {
        let mut faults = scenario.fault_config().clone();
        if let Err(e) = apply_file(path, |text| faults.apply_toml(text)) {
            eprintln!("invalid fault settings {}: {e}", path.display());
            return ExitCode::from(2);
        }
        scenario = scenario.faults(faults);
    }
    if let Some(path) = &args.schedule {
        let mut commands = Vec::new();
        if let Err(e) = apply_file(path, |text| {
            commands = silver_p2p_sim::parse_schedule(text)?;
            Ok(())
        }) {
            eprintln!("invalid schedule {}: {e}", path.display());
            return ExitCode::from(2);
        }
        for (at, command) in commands {
            scenario = scenario.at(at, command);
        }
    }
    if let Some(g) = args.gossip {
        scenario = scenario.configure(move |_, c| c.gossip.mode = g);
    }
    if let Some(o) = args.outbound {
        scenario = scenario.configure(move |_, c| {
            c.limits.target_outbound = o;
            c.limits.max_outbound = c.limits.max_outbound.max(o);
        });
    }
    let mut w = Workload::default();
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    if let Some(d) = args.broadcast_every {
        w.broadcast_every = nonzero(d);
    }
    if let Some(b) = args.broadcast_size {
        w.broadcast_size = b.max(8);
    }
    if let Some(d) = args.unicast_every {
        w.unicast_every = nonzero(d);
    }
    if let Some(d) = args.request_every {
        w.request_every = nonzero(d);
    }
    scenario = scenario.workload(w);
    if let Some(d) = args.sample_every {
        scenario = scenario.sampling(d, d * 10);
    }
    scenario = scenario.replay_as(replay_command(&args));
    let mut sim = scenario.build();
    sim.set_log(args.log);
    let show = !args.quiet && (args.progress || std::io::stderr().is_terminal());
    if show {
        let started = Instant::now();
        let mut last = Instant::now();
        sim.set_progress(move |p| {
            if last.elapsed() < Duration::from_millis(250) {
                return;
            }
            last = Instant::now();
            let frac = (p.now.as_nanos() as f64 / p.end.as_nanos().max(1) as f64).min(1.0);
            let width = 30;
            let filled = (frac * width as f64) as usize;
            let wall = started.elapsed().as_secs_f64();
            let eta = if frac > 0.0 { wall / frac - wall } else { 0.0 };
            let mut e = std::io::stderr();
            let _ = write!(
                e,
                "\r[{}{}] {:5.1}% sim {:>7.0}s  {:>6} nodes  {:>11} events  {:>9.0} ev/s  eta {:>5.0}s ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                frac * 100.0,
                p.now.as_nanos() as f64 / 1e9,
                p.live_nodes,
                p.events,
                p.events as f64 / wall.max(1e-9),
                eta
            );
            let _ = e.flush();
        });
    }
    sim.run();
    if show {
        eprint!("\r{}\r", " ".repeat(110));
    }
    let mut report = sim.report();
    report.memory.process_peak_rss_bytes = process_peak_rss();
    if let Some(first) = &report.first_refusal {
        eprintln!(
            "warning: the nodes refused {} broadcasts, {} unicasts and {} requests of the \
             workload, so the run tested less than asked (first: {first})",
            report.broadcasts.refused,
            report.delivery.unicasts_refused,
            report.delivery.requests_refused
        );
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", report.failure_text());
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_larger_than_the_available_memory_is_warned_about() {
        let gib = 1u64 << 30;
        assert_eq!(memory_warning(1_000, Some(24 * gib)), None);
        assert_eq!(memory_warning(3_000_000, None), None, "unknown: no guess");
        let w = memory_warning(3_000_000, Some(24 * gib)).expect("1.35 TB > 24 GiB");
        assert!(w.contains("3000000 nodes need about 1350.0 GB"), "{w}");
        assert!(w.contains("25.8 GB available"), "{w}");
    }
}
