//! The body of the `sim_scenario` fuzz target, compiled with the `fuzzing` feature.
//!
//! The fuzz input decodes into a small network (2 to 12 nodes, 1 or 2 of them seeds), link
//! behaviour, random fault rates, workload and a list of scheduled faults and commands; the
//! simulator runs it and every invariant it checks (exactly-once delivery, bounds, no honest
//! node banned, convergence and full broadcast coverage after the faults stop) must hold.
//! `cargo test -p silver-p2p-sim --features fuzzing` replays the committed corpus and some
//! generated inputs; `fuzz/fuzz_targets/sim_scenario.rs` runs it under cargo-fuzz.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use crate::{Command, Dist, Faults, LinkConfig, PartitionFaults, Pick, Scenario, Split, Topology};

/// A scheduled command the fuzzer picks.
#[derive(Debug, Arbitrary)]
enum FuzzCommand {
    Broadcast {
        size: u16,
    },
    Unicast {
        size: u16,
    },
    Request {
        size: u8,
    },
    Partition {
        fraction: u8,
        oneway: bool,
        heal_after_s: Option<u8>,
    },
    HealAll,
    Stall {
        node: u8,
        ms: u16,
    },
    Reset {
        node: u8,
    },
    Crash {
        node: u8,
        machine: bool,
        restart_after_s: Option<u8>,
    },
    Leave {
        node: u8,
        graceful: bool,
    },
    Join {
        count: u8,
    },
}

/// Random fault rates, as small integers scaled to per-minute rates and probabilities.
#[derive(Debug, Arbitrary)]
struct FuzzFaults {
    stalls: u8,
    resets: u8,
    half_open: u8,
    crashes: u8,
    machine_crash: u8,
    leaves: u8,
    joins: u8,
    dial_failure: u8,
    dial_refusal: u8,
    partitions: bool,
    seeds_may_fail: bool,
}

impl FuzzFaults {
    fn faults(&self) -> Faults {
        // At most 4 events of each kind per minute and probabilities up to 0.25 (0.5 for
        // half-open): harsh, but a network the protocol is meant to survive.
        let rate = |v: u8| f64::from(v % 17) / 4.0;
        let prob = |v: u8, max: f64| f64::from(v) / 255.0 * max;
        Faults {
            stalls_per_min: rate(self.stalls),
            resets_per_min: rate(self.resets),
            half_open_prob: prob(self.half_open, 0.5),
            crashes_per_min: rate(self.crashes),
            machine_crash_prob: prob(self.machine_crash, 1.0),
            leaves_per_min: rate(self.leaves) / 2.0,
            joins_per_min: rate(self.joins) / 2.0,
            dial_failure_prob: prob(self.dial_failure, 0.25),
            dial_refusal_prob: prob(self.dial_refusal, 0.25),
            partitions: self.partitions.then_some(PartitionFaults {
                gap_s: Dist::Uniform { lo: 10.0, hi: 60.0 },
                length_s: Dist::Uniform { lo: 5.0, hi: 60.0 },
                oneway_prob: 0.3,
                fraction: 0.4,
            }),
            seeds_may_fail: self.seeds_may_fail,
            ..Faults::none()
        }
    }
}

/// `sim_scenario`: a small network with fuzzer-chosen topology, faults and commands must
/// pass every invariant of the simulator. Panics with the report's failure text otherwise.
pub fn sim_scenario(data: &[u8]) {
    let Some(scenario) = scenario_from(data) else {
        return;
    };
    scenario.run().assert_ok();
}

/// The scenario an input decodes to, or `None` when it is too short to name one.
pub fn scenario_from(data: &[u8]) -> Option<Scenario> {
    let mut u = Unstructured::new(data);
    let nodes = usize::from(u.int_in_range(2..=12u8).ok()?);
    let seed: u64 = u.arbitrary().ok()?;
    // Bootstrap topology only: without persistent seed nodes, a network that faults split
    // into islands has no way back once the islands' address books forget each other (the
    // fuzzer found such runs; peer exchange alone does not promise recovery).
    let seeds = usize::from(u.int_in_range(1..=2u8).ok()?);
    let topology = Topology::Bootstrap { seeds };
    let links = if u.arbitrary::<bool>().ok()? {
        LinkConfig::slow()
    } else {
        LinkConfig::default()
    };
    let faults = FuzzFaults::arbitrary(&mut u).ok()?.faults();
    let duration = Duration::from_secs(u64::from(u.int_in_range(30..=180u8).ok()?));
    let mut scenario = Scenario::new(nodes)
        .name("fuzz")
        .seed(seed)
        .duration(duration)
        .liveness_budget(Duration::from_secs(300))
        .topology(topology)
        .links(links)
        .faults(faults)
        .configure(|_, c| c.limits.target_outbound = c.limits.target_outbound.min(4));
    // At most 16 scheduled commands; an exhausted input decodes to defaults, so stop there.
    for _ in 0..16 {
        if u.is_empty() {
            break;
        }
        let Ok((at_s, command)) = <(u8, FuzzCommand)>::arbitrary(&mut u) else {
            break;
        };
        let at = Duration::from_secs(u64::from(at_s)).min(duration);
        if let Some(command) = command.into_command(nodes, seeds) {
            scenario = scenario.at(at, command);
        }
    }
    Some(scenario)
}

impl FuzzCommand {
    /// The command, or `None` for one the network is not meant to survive: a seed node
    /// leaving for good (joiners bootstrap from the seeds, so it would rightly fail the
    /// liveness check).
    fn into_command(self, nodes: usize, seeds: usize) -> Option<Command> {
        let node = |n: u8| Pick::Node(crate::NodeId((usize::from(n) % nodes) as u32));
        let non_seed = |n: u8| {
            (nodes > seeds).then(|| {
                Pick::Node(crate::NodeId(
                    (seeds + usize::from(n) % (nodes - seeds)) as u32,
                ))
            })
        };
        let secs = |s: u8| Duration::from_secs(u64::from(s));
        Some(match self {
            FuzzCommand::Broadcast { size } => Command::Broadcast {
                from: Pick::Random,
                size: usize::from(size).max(8),
            },
            FuzzCommand::Unicast { size } => Command::Unicast {
                from: Pick::Random,
                to: Pick::RandomPeer,
                size: usize::from(size).max(12),
            },
            FuzzCommand::Request { size } => Command::Request {
                from: Pick::Random,
                to: Pick::RandomPeer,
                size: usize::from(size),
            },
            FuzzCommand::Partition {
                fraction,
                oneway,
                heal_after_s,
            } => Command::Partition {
                split: Split::Fraction(f64::from(fraction) / 255.0),
                oneway,
                heal_after: heal_after_s.map(secs),
            },
            FuzzCommand::HealAll => Command::HealAll,
            FuzzCommand::Stall { node: n, ms } => Command::Stall {
                node: node(n),
                duration: Duration::from_millis(u64::from(ms)),
            },
            FuzzCommand::Reset { node: n } => Command::Reset { node: node(n) },
            FuzzCommand::Crash {
                node: n,
                machine,
                restart_after_s,
            } => Command::Crash {
                node: if restart_after_s.is_some() {
                    node(n)
                } else {
                    non_seed(n)?
                },
                machine,
                restart_after: restart_after_s.map(secs),
            },
            FuzzCommand::Leave { node: n, graceful } => Command::Leave {
                node: non_seed(n)?,
                graceful,
            },
            FuzzCommand::Join { count } => Command::Join {
                count: usize::from(count % 4),
            },
        })
    }
}
