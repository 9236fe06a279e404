//! Scenarios: what to simulate. A [`Scenario`] is a builder holding the topology, the link
//! model, the random faults of the safety phase, the background workload, a schedule of
//! [`Command`]s and user hooks; [`Scenario::run`] plays it and returns a
//! [`crate::Report`], [`Scenario::build`] hands back the [`crate::Sim`] for step-by-step
//! control. [`Scenario::builtin`] knows the named scenarios the CLI offers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use silver_p2p_core::node::{Event, GossipMessage, Node, NodeConfig};
use silver_p2p_core::Timestamp;

use crate::dist::Dist;
use crate::link::{set_given, LinkConfig, NamedOr, MAX_DELAY_MS};
use crate::sim::{NodeId, Sim};
use crate::sybil::SybilConfig;

/// How nodes find each other at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// The first `seeds` nodes are seed nodes. Every other node has one of them (round
    /// robin) as its bootstrap peer; seeds bootstrap from seed 0. Bootstrap peers are
    /// persistent: redialed with backoff for as long as the node runs.
    Bootstrap {
        /// How many seed nodes (at least 1).
        seeds: usize,
    },
    /// No bootstrap: every node dials `peers` random nodes that started before it (manual,
    /// non-persistent connections) and discovers the rest through them.
    Random {
        /// Initial dials per node.
        peers: usize,
    },
}

impl Topology {
    /// One seed node per 64 nodes (at least one, at most 256).
    pub fn default_for(nodes: usize) -> Topology {
        Topology::Bootstrap {
            seeds: nodes.div_ceil(64).clamp(1, 256),
        }
    }
}

/// Background traffic: application commands issued at fixed intervals from random live
/// honest nodes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Workload {
    /// A broadcast (gossip transaction) this often, from a random node. `None`: none.
    pub broadcast_every: Option<Duration>,
    /// Payload bytes per broadcast (at least 8: the first 8 make each payload unique).
    pub broadcast_size: usize,
    /// A unicast this often, from a random node to one of its peers. `None`: none.
    pub unicast_every: Option<Duration>,
    /// Payload bytes per unicast (at least 12).
    pub unicast_size: usize,
    /// A request this often, from a random node to one of its peers. `None`: none.
    pub request_every: Option<Duration>,
    /// Answer every request with its own payload (an echo). Turn off to answer from a
    /// hook.
    pub auto_respond: bool,
}

impl Default for Workload {
    /// A 1 KiB broadcast every second, a 256-byte unicast every 2 s, a request every 5 s.
    fn default() -> Self {
        Workload {
            broadcast_every: Some(Duration::from_secs(1)),
            broadcast_size: 1024,
            unicast_every: Some(Duration::from_secs(2)),
            unicast_size: 256,
            request_every: Some(Duration::from_secs(5)),
            auto_respond: true,
        }
    }
}

impl Workload {
    /// No background traffic at all.
    pub fn none() -> Workload {
        Workload {
            broadcast_every: None,
            unicast_every: None,
            request_every: None,
            ..Workload::default()
        }
    }
}

/// Random network partitions during the safety phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionFaults {
    /// Seconds between the end of one partition and the start of the next.
    pub gap_s: Dist,
    /// Seconds a partition lasts.
    pub length_s: Dist,
    /// Probability that a partition is one-way (side A's bytes do not reach side B, B's
    /// reach A). Otherwise two-way.
    pub oneway_prob: f64,
    /// Share of live nodes put on side A.
    pub fraction: f64,
}

/// Random faults of the safety phase. Rates are for the whole network, per simulated
/// minute, as Poisson processes; every decision is drawn from the run's seed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Faults {
    /// Stalls per minute: one connection's bytes (both directions) are held, then released.
    pub stalls_per_min: f64,
    /// Stall length in milliseconds.
    pub stall_ms: Dist,
    /// Resets per minute: one connection dies; each end learns it after its own delay.
    pub resets_per_min: f64,
    /// Delay, in milliseconds, before each end of a reset connection is told.
    pub reset_notify_ms: Dist,
    /// Probability that one end of a reset is never told (a half-open connection its
    /// keepalive must detect).
    pub half_open_prob: f64,
    /// Partitions, if any.
    pub partitions: Option<PartitionFaults>,
    /// Crashes per minute of a random honest node, restarted after `downtime_s` with its
    /// identity and last persisted snapshot.
    pub crashes_per_min: f64,
    /// Seconds a crashed node stays down.
    pub downtime_s: Dist,
    /// Probability that a crash is a machine crash (peers are not told; their connections
    /// go half-open) rather than a process crash (the OS resets the connections).
    pub machine_crash_prob: f64,
    /// Honest nodes leaving for good, per minute.
    pub leaves_per_min: f64,
    /// Probability that a leave is a graceful shutdown (else an abrupt exit).
    pub graceful_leave_prob: f64,
    /// New identities joining, per minute.
    pub joins_per_min: f64,
    /// Probability that a dial fails with a timeout although the target is up.
    pub dial_failure_prob: f64,
    /// Probability that a dial is refused (reset) although the target is up.
    pub dial_refusal_prob: f64,
    /// Whether the seed nodes may crash at random (they never leave at random, since
    /// joiners bootstrap from them; a scheduled [`Command`] can still target them).
    pub seeds_may_fail: bool,
}

impl Default for Faults {
    /// No faults.
    fn default() -> Self {
        Faults {
            stalls_per_min: 0.0,
            stall_ms: Dist::Uniform {
                lo: 500.0,
                hi: 20_000.0,
            },
            resets_per_min: 0.0,
            reset_notify_ms: Dist::Uniform {
                lo: 0.0,
                hi: 2_000.0,
            },
            half_open_prob: 0.2,
            partitions: None,
            crashes_per_min: 0.0,
            downtime_s: Dist::Uniform { lo: 5.0, hi: 60.0 },
            machine_crash_prob: 0.3,
            leaves_per_min: 0.0,
            graceful_leave_prob: 0.5,
            joins_per_min: 0.0,
            dial_failure_prob: 0.0,
            dial_refusal_prob: 0.0,
            seeds_may_fail: false,
        }
    }
}

impl Faults {
    /// No faults.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Whether any random fault is enabled.
    pub fn any(&self) -> bool {
        self.stalls_per_min > 0.0
            || self.resets_per_min > 0.0
            || self.partitions.is_some()
            || self.crashes_per_min > 0.0
            || self.leaves_per_min > 0.0
            || self.joins_per_min > 0.0
            || self.dial_failure_prob > 0.0
            || self.dial_refusal_prob > 0.0
    }

    /// Checks the configuration: rates finite and not negative, probabilities and the
    /// partition share from 0 to 1, durations valid distributions of at most a day
    /// ([`MAX_DELAY_MS`]).
    pub fn validate(&self) -> Result<(), String> {
        for (what, rate) in [
            ("stalls_per_min", self.stalls_per_min),
            ("resets_per_min", self.resets_per_min),
            ("crashes_per_min", self.crashes_per_min),
            ("leaves_per_min", self.leaves_per_min),
            ("joins_per_min", self.joins_per_min),
        ] {
            if !rate.is_finite() || rate < 0.0 {
                return Err(format!("faults: {what} must be finite and not negative"));
            }
        }
        let mut shares = vec![
            ("half_open_prob", self.half_open_prob),
            ("machine_crash_prob", self.machine_crash_prob),
            ("graceful_leave_prob", self.graceful_leave_prob),
            ("dial_failure_prob", self.dial_failure_prob),
            ("dial_refusal_prob", self.dial_refusal_prob),
        ];
        if let Some(p) = &self.partitions {
            shares.push(("partitions.oneway_prob", p.oneway_prob));
            shares.push(("partitions.fraction", p.fraction));
            p.gap_s
                .validate("faults: partitions.gap_s", MAX_DELAY_MS / 1000.0)?;
            p.length_s
                .validate("faults: partitions.length_s", MAX_DELAY_MS / 1000.0)?;
        }
        for (what, share) in shares {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("faults: {what} must be from 0 to 1"));
            }
        }
        self.stall_ms.validate("faults: stall_ms", MAX_DELAY_MS)?;
        self.reset_notify_ms
            .validate("faults: reset_notify_ms", MAX_DELAY_MS)?;
        self.downtime_s
            .validate("faults: downtime_s", MAX_DELAY_MS / 1000.0)
    }

    /// Applies the settings of a TOML text on top of this configuration, as
    /// `silver-p2p-sim --faults FILE` does. Every key is optional and named as the field
    /// it sets (`stalls_per_min = 2.0`, `stall_ms = { uniform = { lo = 500, hi = 5000 } }`,
    /// `partitions = { gap_s = { const = 60 }, length_s = { const = 30 }, oneway_prob =
    /// 0.3, fraction = 0.4 }` or `partitions = "none"`, `seeds_may_fail = true`, …). An
    /// unknown key, a wrong type or a result that fails [`Faults::validate`] is an error
    /// that names it, and leaves `self` unchanged.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let o: FaultOverrides = toml::from_str(text).map_err(|e| format!("faults: {e}"))?;
        let mut next = self.clone();
        set_given(&mut next.stalls_per_min, o.stalls_per_min);
        set_given(&mut next.resets_per_min, o.resets_per_min);
        set_given(&mut next.half_open_prob, o.half_open_prob);
        set_given(&mut next.crashes_per_min, o.crashes_per_min);
        set_given(&mut next.machine_crash_prob, o.machine_crash_prob);
        set_given(&mut next.leaves_per_min, o.leaves_per_min);
        set_given(&mut next.graceful_leave_prob, o.graceful_leave_prob);
        set_given(&mut next.joins_per_min, o.joins_per_min);
        set_given(&mut next.dial_failure_prob, o.dial_failure_prob);
        set_given(&mut next.dial_refusal_prob, o.dial_refusal_prob);
        set_given(&mut next.stall_ms, o.stall_ms);
        set_given(&mut next.reset_notify_ms, o.reset_notify_ms);
        set_given(&mut next.downtime_s, o.downtime_s);
        if let Some(p) = o.partitions {
            next.partitions = p.resolve("faults: partitions", &[("none", None)])?;
        }
        set_given(&mut next.seeds_may_fail, o.seeds_may_fail);
        next.validate()?;
        *self = next;
        Ok(())
    }
}

/// The keys [`Faults::apply_toml`] reads, each optional.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultOverrides {
    stalls_per_min: Option<f64>,
    stall_ms: Option<Dist>,
    resets_per_min: Option<f64>,
    reset_notify_ms: Option<Dist>,
    half_open_prob: Option<f64>,
    partitions: Option<NamedOr<PartitionFaults>>,
    crashes_per_min: Option<f64>,
    downtime_s: Option<Dist>,
    machine_crash_prob: Option<f64>,
    leaves_per_min: Option<f64>,
    graceful_leave_prob: Option<f64>,
    joins_per_min: Option<f64>,
    dial_failure_prob: Option<f64>,
    dial_refusal_prob: Option<f64>,
    seeds_may_fail: Option<bool>,
}

/// Which node a command applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// This node.
    Node(NodeId),
    /// A random live honest node.
    Random,
    /// A random established peer of the command's source node (for `to` fields only).
    RandomPeer,
    /// Seed node `i` (see [`Topology::Bootstrap`]).
    Seed(usize),
}

/// How a partition splits the nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// A random share of the live nodes on side A (the rest, and later joiners, on B).
    Fraction(f64),
    /// Exactly these nodes on side A.
    Nodes(Vec<NodeId>),
}

/// Code run against one live node by [`Command::WithNode`].
pub type NodeFn = Box<dyn FnOnce(&mut Node, Timestamp)>;

/// Something to do at a point of simulated time: an application command, a fault, or any
/// code with access to the simulator.
pub enum Command {
    /// Broadcast `size` bytes (a gossip transaction, unique payload) from a node.
    Broadcast {
        /// The origin.
        from: Pick,
        /// Payload bytes.
        size: usize,
    },
    /// Broadcast a given message from a node.
    Gossip {
        /// The origin.
        from: Pick,
        /// The message.
        message: GossipMessage,
    },
    /// A unicast with delivery confirmation (tracked by the exactly-once checks).
    Unicast {
        /// The sender.
        from: Pick,
        /// The receiver (must be connected to the sender).
        to: Pick,
        /// Payload bytes.
        size: usize,
    },
    /// A request (tracked: exactly one answer per request).
    Request {
        /// The asker.
        from: Pick,
        /// The peer asked (must be connected).
        to: Pick,
        /// Payload bytes.
        size: usize,
    },
    /// Starts a partition; heals it after `heal_after` if given.
    Partition {
        /// Who is on side A.
        split: Split,
        /// One-way: A's bytes do not reach B, B's still reach A.
        oneway: bool,
        /// Heal automatically after this long.
        heal_after: Option<Duration>,
    },
    /// Heals every partition.
    HealAll,
    /// Holds every byte of every connection of a node for `duration`, then releases them.
    Stall {
        /// The node.
        node: Pick,
        /// How long.
        duration: Duration,
    },
    /// Resets one random connection of a node (both ends told after a random delay, or one
    /// never, as the fault configuration says).
    Reset {
        /// The node.
        node: Pick,
    },
    /// Crashes a node; restarts it (same identity, last persisted snapshot) after
    /// `restart_after` if given.
    Crash {
        /// The node.
        node: Pick,
        /// Machine crash (peers not told) rather than process crash (peers see resets).
        machine: bool,
        /// Restart after this long.
        restart_after: Option<Duration>,
    },
    /// Restarts a crashed node.
    Restart {
        /// The node.
        node: NodeId,
    },
    /// A node leaves for good.
    Leave {
        /// The node.
        node: Pick,
        /// Graceful shutdown (Goodbyes, flushed queues) rather than an abrupt exit.
        graceful: bool,
    },
    /// New honest nodes with fresh identities join.
    Join {
        /// How many.
        count: usize,
    },
    /// Runs code against one live node (any of its commands). Its outputs are routed.
    WithNode {
        /// The node.
        node: NodeId,
        /// What to do.
        f: NodeFn,
    },
    /// Runs code against the whole simulator.
    WithSim(Box<dyn FnOnce(&mut Sim)>),
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Broadcast { from, size } => write!(f, "Broadcast({from:?}, {size})"),
            Command::Gossip { from, .. } => write!(f, "Gossip({from:?})"),
            Command::Unicast { from, to, size } => write!(f, "Unicast({from:?}->{to:?}, {size})"),
            Command::Request { from, to, size } => write!(f, "Request({from:?}->{to:?}, {size})"),
            Command::Partition { split, oneway, .. } => {
                write!(f, "Partition({split:?}, oneway={oneway})")
            }
            Command::HealAll => write!(f, "HealAll"),
            Command::Stall { node, duration } => write!(f, "Stall({node:?}, {duration:?})"),
            Command::Reset { node } => write!(f, "Reset({node:?})"),
            Command::Crash { node, machine, .. } => write!(f, "Crash({node:?}, machine={machine})"),
            Command::Restart { node } => write!(f, "Restart({node:?})"),
            Command::Leave { node, graceful } => write!(f, "Leave({node:?}, {graceful})"),
            Command::Join { count } => write!(f, "Join({count})"),
            Command::WithNode { node, .. } => write!(f, "WithNode({node:?})"),
            Command::WithSim(_) => write!(f, "WithSim"),
        }
    }
}

/// What a hook sees and may do when a node emits an event.
pub struct HookCtx<'a> {
    pub(crate) now: Timestamp,
    pub(crate) node_id: NodeId,
    pub(crate) node: Option<&'a Node>,
    pub(crate) commands: &'a mut Vec<(Duration, Command)>,
}

impl HookCtx<'_> {
    /// The simulated time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The node that emitted the event.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The node that emitted the event (read-only; act on it with
    /// [`Command::WithNode`]).
    pub fn node(&self) -> Option<&Node> {
        self.node
    }

    /// Runs `command` once the current step is done, at the same simulated time.
    pub fn command(&mut self, command: Command) {
        self.commands.push((Duration::ZERO, command));
    }

    /// Runs `command` after `delay` of simulated time.
    pub fn schedule(&mut self, delay: Duration, command: Command) {
        self.commands.push((delay, command));
    }
}

/// A user hook: called for every event every honest node emits, in order.
pub type Hook = Box<dyn FnMut(&mut HookCtx<'_>, &Event)>;

/// Adjusts one node's configuration (after the simulator filled in the network id, listen
/// address and bootstrap peers).
pub type ConfigFn = Arc<dyn Fn(NodeId, &mut NodeConfig)>;

/// Everything about a run. Build with the methods, then [`Scenario::run`].
pub struct Scenario {
    pub(crate) name: String,
    pub(crate) nodes: usize,
    pub(crate) seed: u64,
    pub(crate) duration: Duration,
    pub(crate) liveness_budget: Duration,
    pub(crate) topology: Topology,
    pub(crate) links: LinkConfig,
    pub(crate) faults: Faults,
    pub(crate) workload: Workload,
    pub(crate) sybils: Option<SybilConfig>,
    pub(crate) start_window: Duration,
    pub(crate) sample_interval: Duration,
    pub(crate) check_interval: Duration,
    pub(crate) persist_interval: Duration,
    pub(crate) schedule: Vec<(Duration, Command)>,
    pub(crate) config_fn: Option<ConfigFn>,
    pub(crate) hooks: Vec<Hook>,
    pub(crate) builtin: bool,
    pub(crate) persist_forced: bool,
    pub(crate) replay: Option<String>,
}

/// The names [`Scenario::builtin`] accepts, with one line each.
pub const BUILTIN_SCENARIOS: &[(&str, &str)] = &[
    (
        "steady",
        "no faults: bootstrap, discovery and a steady broadcast workload",
    ),
    (
        "churn",
        "nodes leave and new identities join; crashes and restarts",
    ),
    (
        "partition",
        "a two-way partition of 40% of the nodes, then a one-way one, each healed",
    ),
    (
        "churn-partition",
        "churn, crashes, random partitions, stalls, resets and dial faults",
    ),
    (
        "crash-bootstrap",
        "the only bootstrap node crashes and later restarts",
    ),
    (
        "slow-links",
        "world region latencies, heavy-tailed jitter, low bandwidth, stalls",
    ),
    (
        "sybil",
        "a sybil node floods honest nodes with fake addresses",
    ),
];

impl Scenario {
    /// A scenario of `nodes` honest nodes with defaults: seed 0, 10 simulated minutes of
    /// safety phase, a liveness budget of 10 minutes, [`Topology::default_for`], the
    /// default link model, no faults and the default workload.
    pub fn new(nodes: usize) -> Scenario {
        Scenario {
            name: "custom".into(),
            nodes,
            seed: 0,
            duration: Duration::from_secs(600),
            liveness_budget: Duration::from_secs(600),
            topology: Topology::default_for(nodes),
            links: LinkConfig::default(),
            faults: Faults::none(),
            workload: Workload::default(),
            sybils: None,
            start_window: Duration::from_secs(10),
            sample_interval: Duration::from_secs(1),
            check_interval: Duration::from_secs(10),
            persist_interval: Duration::from_secs(60),
            schedule: Vec::new(),
            config_fn: None,
            hooks: Vec::new(),
            builtin: false,
            persist_forced: false,
            replay: None,
        }
    }

    /// A named scenario (see [`BUILTIN_SCENARIOS`]) with `nodes` nodes, or `None` for an
    /// unknown name. Its rates scale with the number of nodes; a failing run of it is
    /// replayed by the command [`crate::Report::replay`] prints.
    pub fn builtin(name: &str, nodes: usize) -> Option<Scenario> {
        let mut s = Scenario::new(nodes);
        s.name = name.into();
        let n = nodes as f64;
        match name {
            "steady" => {}
            "churn" => {
                s.faults = Faults {
                    // About 1% of the nodes leave, and as many join, per minute.
                    leaves_per_min: (n / 100.0).max(0.5),
                    joins_per_min: (n / 100.0).max(0.5),
                    crashes_per_min: (n / 200.0).max(0.25),
                    ..Faults::none()
                };
            }
            "partition" => {
                s.faults = Faults::none();
                let d = s.duration;
                s.schedule_partitions(d);
            }
            "churn-partition" => {
                s.faults = Faults {
                    leaves_per_min: (n / 50.0).max(0.5),
                    joins_per_min: (n / 50.0).max(0.5),
                    crashes_per_min: (n / 50.0).max(0.5),
                    stalls_per_min: (n / 10.0).max(1.0),
                    resets_per_min: (n / 10.0).max(1.0),
                    partitions: Some(PartitionFaults {
                        gap_s: Dist::Uniform {
                            lo: 30.0,
                            hi: 120.0,
                        },
                        length_s: Dist::Uniform {
                            lo: 10.0,
                            hi: 180.0,
                        },
                        oneway_prob: 0.3,
                        fraction: 0.4,
                    }),
                    dial_failure_prob: 0.05,
                    dial_refusal_prob: 0.05,
                    seeds_may_fail: true,
                    ..Faults::none()
                };
            }
            "crash-bootstrap" => {
                s.topology = Topology::Bootstrap { seeds: 1 };
                s.push_crash_bootstrap();
            }
            "slow-links" => {
                s.links = LinkConfig::slow();
                s.faults = Faults {
                    stalls_per_min: (n / 10.0).max(1.0),
                    ..Faults::none()
                };
            }
            "sybil" => {
                s.sybils = Some(SybilConfig::default());
            }
            _ => return None,
        }
        s.builtin = true;
        Some(s)
    }

    fn schedule_partitions(&mut self, d: Duration) {
        self.schedule
            .retain(|(_, c)| !matches!(c, Command::Partition { .. } | Command::HealAll));
        self.schedule.push((
            d / 5,
            Command::Partition {
                split: Split::Fraction(0.4),
                oneway: false,
                heal_after: Some(d / 5),
            },
        ));
        self.schedule.push((
            d * 3 / 5,
            Command::Partition {
                split: Split::Fraction(0.3),
                oneway: true,
                heal_after: Some(d / 5),
            },
        ));
    }

    fn push_crash_bootstrap(&mut self) {
        let d = self.duration;
        self.schedule
            .retain(|(_, c)| !matches!(c, Command::Crash { .. }));
        self.schedule.push((
            d / 3,
            Command::Crash {
                node: Pick::Seed(0),
                machine: true,
                restart_after: Some(d / 4),
            },
        ));
    }

    /// The scenario's name (reports and the replay command use it).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.into();
        self.builtin = false;
        self
    }

    /// The seed every random choice derives from.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Length of the safety phase (faults on). Scheduled partitions and crashes of the
    /// built-in scenarios follow it.
    pub fn duration(mut self, d: Duration) -> Self {
        self.duration = d;
        if self.builtin && self.name == "partition" {
            self.schedule_partitions(d);
        }
        if self.builtin && self.name == "crash-bootstrap" {
            self.push_crash_bootstrap();
        }
        self
    }

    /// Most simulated time the liveness phase (faults off) may take to converge: a
    /// connected graph, then a broadcast that reaches every live node.
    pub fn liveness_budget(mut self, d: Duration) -> Self {
        self.liveness_budget = d;
        self
    }

    /// How nodes find each other.
    pub fn topology(mut self, t: Topology) -> Self {
        self.builtin = false;
        self.topology = t;
        self
    }

    /// The link model this scenario runs with (a built-in scenario's own, or the last set
    /// with [`Scenario::links`]): a starting point for changing a few settings.
    pub fn link_config(&self) -> &LinkConfig {
        &self.links
    }

    /// The link model.
    pub fn links(mut self, l: LinkConfig) -> Self {
        self.builtin = false;
        self.links = l;
        self
    }

    /// The random faults of the safety phase this scenario runs with (a built-in
    /// scenario's own, or the last set with [`Scenario::faults`]): a starting point for
    /// changing a few settings.
    pub fn fault_config(&self) -> &Faults {
        &self.faults
    }

    /// The random faults of the safety phase.
    pub fn faults(mut self, f: Faults) -> Self {
        self.builtin = false;
        self.faults = f;
        self
    }

    /// The background workload.
    pub fn workload(mut self, w: Workload) -> Self {
        self.builtin = false;
        self.workload = w;
        self
    }

    /// Adds sybil nodes.
    pub fn sybils(mut self, s: SybilConfig) -> Self {
        self.builtin = false;
        self.sybils = Some(s);
        self
    }

    /// Nodes start one after another over this window (seed nodes first).
    pub fn start_window(mut self, d: Duration) -> Self {
        self.builtin = false;
        self.start_window = d;
        self
    }

    /// How often memory is sampled (default 1 s) and bounds are checked (default 10 s).
    pub fn sampling(mut self, sample: Duration, check: Duration) -> Self {
        self.builtin = false;
        self.sample_interval = sample.max(Duration::from_millis(1));
        self.check_interval = check.max(self.sample_interval);
        self
    }

    /// How often each node persists its snapshot (address book and bans) for a restart
    /// after a crash (default 60 s, as an adapter would). Nodes persist only when the
    /// scenario can crash them, unless this is called.
    pub fn persist_interval(mut self, d: Duration) -> Self {
        self.builtin = false;
        self.persist_interval = d.max(Duration::from_millis(1));
        self.persist_forced = true;
        self
    }

    /// Adjusts every node's configuration. Several calls compose: each adjustment runs
    /// after the ones given before it.
    pub fn configure(mut self, f: impl Fn(NodeId, &mut NodeConfig) + 'static) -> Self {
        self.builtin = false;
        let f: ConfigFn = Arc::new(f);
        self.config_fn = Some(match self.config_fn.take() {
            Some(before) => Arc::new(move |id, c: &mut NodeConfig| {
                before(id, c);
                f(id, c);
            }),
            None => f,
        });
        self
    }

    /// Runs `command` at simulated time `at` (from the start of the run).
    pub fn at(mut self, at: Duration, command: Command) -> Self {
        self.builtin = false;
        self.schedule.push((at, command));
        self
    }

    /// Calls `hook` for every event any honest node emits.
    pub fn on_event(mut self, hook: impl FnMut(&mut HookCtx<'_>, &Event) + 'static) -> Self {
        self.builtin = false;
        self.hooks.push(Box::new(hook));
        self
    }

    /// The number of initial honest nodes.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Sets the text [`crate::Report::replay`] shows (a front end that built the scenario
    /// from its own arguments knows the exact command).
    pub fn replay_as(mut self, command: impl Into<String>) -> Self {
        self.replay = Some(command.into());
        self
    }

    /// The command line that replays this scenario: the one set with
    /// [`Scenario::replay_as`], or for an unmodified built-in scenario the CLI command.
    /// Modifying a built-in scenario (hooks, schedule, configuration, links, faults,
    /// workload, topology) makes it a library scenario, replayed by running the same code
    /// with the same seed.
    pub fn replay_command(&self) -> Option<String> {
        if let Some(r) = &self.replay {
            return Some(r.clone());
        }
        self.builtin.then(|| {
            format!(
                "silver-p2p-sim --scenario {} --nodes {} --seed {} --duration {}s --liveness {}s",
                self.name,
                self.nodes,
                self.seed,
                self.duration.as_secs_f64(),
                self.liveness_budget.as_secs_f64()
            )
        })
    }

    /// Builds the simulator without running it.
    pub fn build(self) -> Sim {
        Sim::new(self)
    }

    /// Runs the safety phase, then the liveness phase, and reports.
    pub fn run(self) -> crate::Report {
        let mut sim = self.build();
        sim.run();
        sim.report()
    }
}

/// A unique broadcast payload of `size` bytes (at least 8) for sequence number `seq`.
pub(crate) fn payload(seq: u64, size: usize) -> Bytes {
    let mut v = vec![0u8; size.max(8)];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    Bytes::from(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_has_valid_faults_and_links() {
        for (name, _) in BUILTIN_SCENARIOS {
            for nodes in [1, 20, 1_000, 100_000] {
                let s = Scenario::builtin(name, nodes).unwrap();
                assert_eq!(s.fault_config().validate(), Ok(()), "{name} {nodes}");
                assert_eq!(s.link_config().validate(), Ok(()), "{name} {nodes}");
            }
        }
    }

    #[test]
    fn toml_fault_settings_override_only_what_they_name() {
        let base = Scenario::builtin("churn-partition", 20).unwrap();
        let mut f = base.fault_config().clone();
        f.apply_toml("stalls_per_min = 0\ncrashes_per_min = 3.5\nseeds_may_fail = false\n")
            .unwrap();
        assert_eq!((f.stalls_per_min, f.crashes_per_min), (0.0, 3.5));
        assert!(!f.seeds_may_fail);
        assert_eq!(f.partitions, base.fault_config().partitions);
        assert_eq!(f.resets_per_min, base.fault_config().resets_per_min);
        f.apply_toml("partitions = \"none\"\ndowntime_s = { const = 30 }\n")
            .unwrap();
        assert_eq!(f.partitions, None);
        assert_eq!(f.downtime_s, Dist::Const(30.0));
        f.apply_toml(
            "partitions = { gap_s = { const = 9 }, length_s = { const = 3 }, oneway_prob = 1, fraction = 0.5 }\n",
        )
        .unwrap();
        assert_eq!(f.partitions.as_ref().unwrap().fraction, 0.5);
    }

    #[test]
    fn bad_toml_fault_settings_are_refused_and_change_nothing() {
        let before = Faults::none();
        for (text, reason) in [
            ("resets_per_min = -2\n", "resets_per_min must be finite"),
            ("joins_per_min = nan\n", "joins_per_min must be finite"),
            ("dial_failure_prob = 1.01\n", "dial_failure_prob must be from 0 to 1"),
            ("stall_ms = { const = 1e9 }\n", "stall_ms: values must be at most"),
            ("downtime_s = { uniform = { lo = 9, hi = 1 } }\n", "downtime_s: uniform lo"),
            (
                "partitions = { gap_s = { const = 1 }, length_s = { const = 1 }, oneway_prob = 0, fraction = 2 }\n",
                "partitions.fraction must be from 0 to 1",
            ),
            ("partitions = \"some\"\n", "neither \"none\""),
            ("stall_per_min = 1\n", "unknown field `stall_per_min`"),
            ("seeds_may_fail = 1\n", "faults:"),
        ] {
            let mut f = before.clone();
            let e = f.apply_toml(text).expect_err(text);
            assert!(e.contains(reason), "{text}: {e}");
            assert_eq!(f, before, "{text}");
        }
    }

    #[test]
    fn a_rate_too_small_to_ever_fire_is_waited_out_not_overflowed() {
        // The wait before the first fault is drawn with a mean of 60 / rate minutes:
        // astronomically long here, cut to a day rather than overflowing a duration.
        let mut f = Faults::none();
        f.apply_toml("stalls_per_min = 1e-300\nresets_per_min = 1e-300\n")
            .unwrap();
        let panics = panics_in_a_short_run(LinkConfig::default(), f);
        assert!(panics.is_empty(), "{panics:?}");
    }

    /// Runs four nodes of `steady` for 20 simulated seconds on `links` with `faults`, and
    /// returns the panics the run caught (each becomes a violation).
    pub(crate) fn panics_in_a_short_run(
        links: LinkConfig,
        faults: Faults,
    ) -> Vec<crate::sim::Violation> {
        let mut sim = Scenario::builtin("steady", 4)
            .expect("built in")
            .duration(Duration::from_secs(20))
            .liveness_budget(Duration::from_secs(5))
            .links(links)
            .faults(faults)
            .build();
        sim.run();
        sim.violations()
            .iter()
            .filter(|v| v.kind == "panic")
            .cloned()
            .collect()
    }
}
