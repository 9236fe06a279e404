//! The simulation engine: hosts running unmodified cores, TCP-like links between them, an
//! event heap in virtual time, faults, the workload and the invariant checks.
//!
//! One thread, no wall clock in any decision: the clock jumps to the next event; ties are
//! broken by a sequence number; every random choice comes from generators derived from the
//! run's seed. The engine plays the adapter's role for every node, following the core's
//! run-loop contract: apply one input, drain the outputs, re-read the deadline.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use silver_p2p_core::node::{
    AcceptError, BanReason, BroadcastOptions, ConnectionId, Direction, Event, GossipMessage, Input,
    Node, NodeConfig, Output, Request,
};
use silver_p2p_core::{ConnectionState, Keypair, PeerAddr, PeerId, SeededRng, Timestamp};

use crate::dist::{chance, Dist};
use crate::ledger::{Ledger, Refusable};
use crate::scenario::{Command, HookCtx, Pick, Scenario, Split, Topology};
use crate::sybil::Sybil;
use crate::trace::TraceHash;

/// Identifies a simulated host for the whole run. Hosts are numbered in creation order;
/// a restarted node keeps its id, a node that joins later gets a new one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NodeId(pub u32);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Where a host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum HostStatus {
    /// Created, not started yet.
    Pending,
    /// Running.
    Up,
    /// Crashed; may be restarted.
    Down,
    /// Left for good.
    Left,
}

/// An invariant the run broke.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Violation {
    /// Simulated seconds since the start.
    pub at_s: f64,
    /// Which invariant.
    pub kind: String,
    /// The node concerned, if one.
    pub node: Option<u32>,
    /// What happened.
    pub detail: String,
}

/// The node implementation a host runs.
#[derive(Debug)]
pub(crate) enum Actor {
    Node(Box<Node>),
    Sybil(Box<Sybil>),
}

impl Actor {
    fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        match self {
            Actor::Node(n) => n.handle_input(now, input),
            Actor::Sybil(s) => s.handle_input(now, input),
        }
    }
    fn poll_output(&mut self) -> Option<Output> {
        match self {
            Actor::Node(n) => n.poll_output(),
            Actor::Sybil(s) => s.poll_output(),
        }
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        match self {
            Actor::Node(n) => n.poll_timeout(),
            Actor::Sybil(s) => s.poll_timeout(),
        }
    }
    fn accept(&mut self, now: Timestamp, remote: SocketAddr) -> Result<ConnectionId, AcceptError> {
        match self {
            Actor::Node(n) => n.accept(now, remote),
            Actor::Sybil(s) => s.accept(now, remote),
        }
    }
    pub(crate) fn buffered_bytes(&self) -> usize {
        match self {
            Actor::Node(n) => n.buffered_bytes(),
            Actor::Sybil(s) => s.buffered_bytes(),
        }
    }

    /// The most this actor ever buffered at once: the node's own high-water mark (which
    /// catches the transients between samples), a sybil's current figure.
    pub(crate) fn peak_buffered_bytes(&self) -> usize {
        match self {
            Actor::Node(n) => n.peak_buffered_bytes(),
            Actor::Sybil(s) => s.buffered_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnSlot {
    Dialing,
    Sock(u32, u8),
}

/// Node-wide counters of finished incarnations, so totals survive crashes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub bans: u64,
    pub reconnects: u64,
    pub dials: u64,
    pub dials_failed: u64,
    pub addrs_dropped: u64,
    pub evicted: u64,
    pub replaced_unhealthy: u64,
    pub gossip: crate::report::GossipTotals,
}

impl Totals {
    pub(crate) fn add_node(&mut self, node: &Node, now: Timestamp) {
        let s = node.stats(now);
        self.bytes_sent += s.bytes_sent;
        self.bytes_received += s.bytes_received;
        self.messages_sent += s.messages_sent;
        self.messages_received += s.messages_received;
        self.bans += s.counters.bans;
        self.reconnects += s.counters.reconnects;
        self.dials += s.counters.dials;
        self.dials_failed += s.counters.dials_failed;
        self.addrs_dropped += s.counters.addrs_dropped;
        self.evicted += s.counters.evicted;
        self.replaced_unhealthy += s.counters.replaced_unhealthy;
        self.gossip.add(&(&s.counters).into());
    }
}

/// A simulated machine and the node (or sybil) on it.
//
// The fields every event reads (`repr(C)`, in this order) share the first two cache lines:
// with thousands of hosts a host is cold at each event, and the compiler's order put its
// configuration (about 1 KB) between them.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Host {
    // Every event.
    pub actor: Option<Actor>,
    pub timer_at: Option<Timestamp>,
    pub inc: u32,
    pub status: HostStatus,
    pub machine_down: bool,
    pub sybil: bool,
    pub leaving: bool,
    pub conns: HashMap<ConnectionId, ConnSlot>,
    pub started_at: Timestamp,
    timer_spin: (Timestamp, u32),
    // Peer events.
    /// Established peers by connection, from the node's events.
    pub peers: BTreeMap<ConnectionId, (PeerId, Direction)>,
    pub peer_conn: HashMap<PeerId, ConnectionId>,
    pub outbound: usize,
    pub reached_target_at: Option<Timestamp>,
    // The rest.
    pub seed_index: Option<usize>,
    pub ip: IpAddr,
    pub addr: SocketAddr,
    pub region: usize,
    pub first_start: Option<Timestamp>,
    pub snapshot: Option<Vec<u8>>,
    pub totals: Totals,
    next_port: u16,
    /// Whether this host was part of the initial population.
    pub initial: bool,
    pub keypair: Keypair,
    pub config: NodeConfig,
}

#[derive(Debug, Clone, Copy)]
struct End {
    node: u32,
    inc: u32,
    conn: ConnectionId,
    open: bool,
    paused: bool,
}

/// Most pieces one write is re-split into.
pub const MAX_PIECES: u32 = 8;

/// One write on its way: the bytes, and where and when each of its pieces arrives. A FIN
/// (end of stream) is a segment with no bytes.
#[derive(Debug)]
struct Segment {
    data: Vec<u8>,
    /// (arrival time, end offset) of each piece, in order.
    pieces: [(Timestamp, u32); MAX_PIECES as usize],
    count: u8,
    next: u8,
    fin: bool,
}

impl Segment {
    fn front_at(&self) -> Timestamp {
        self.pieces[self.next as usize].0
    }
    fn start(&self) -> usize {
        if self.next == 0 {
            0
        } else {
            self.pieces[self.next as usize - 1].1 as usize
        }
    }
}

#[derive(Debug, Default)]
struct Pipe {
    q: VecDeque<Segment>,
    buffered: usize,
    debt: usize,
    last_at: Timestamp,
    tx_free: Timestamp,
    stalled_until: Timestamp,
    scheduled: Option<Timestamp>,
    dead: bool,
}

#[derive(Debug)]
struct Socket {
    ends: [End; 2],
    pipes: [Pipe; 2],
    latency: u64,
    bw: Option<f64>,
}

#[derive(Debug)]
struct Partition {
    /// Side per host index: 0 = A, 1 = B; hosts beyond the vector are on B.
    side: Vec<u8>,
    oneway: bool,
}

impl Partition {
    fn side(&self, n: u32) -> u8 {
        self.side.get(n as usize).copied().unwrap_or(1)
    }
}

fn blocked(parts: &BTreeMap<u32, Partition>, a: u32, b: u32) -> bool {
    parts.values().any(|p| {
        let (sa, sb) = (p.side(a), p.side(b));
        sa != sb && (!p.oneway || sa == 0)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Stall,
    Reset,
    Crash,
    Leave,
    Join,
    Partition,
}

#[derive(Debug)]
enum Ev {
    Start(u32),
    Timer(u32, u32),
    Pipe(u32, u8),
    Syn {
        from: u32,
        inc: u32,
        conn: ConnectionId,
        to: u32,
        lat: u64,
    },
    Connected(u32),
    DialFailed {
        node: u32,
        inc: u32,
        conn: ConnectionId,
        error: &'static str,
    },
    Notify {
        sock: u32,
        side: u8,
        error: &'static str,
    },
    Command(u32),
    Broadcast,
    Unicast,
    Request,
    Fault(FaultKind),
    Heal(u32),
    Restart(u32),
    Persist(u32, u32),
    LeaveDeadline(u32, u32),
    Sample,
    SafetyEnd,
    LivenessCheck,
    End,
}

impl Ev {
    fn code(&self) -> u64 {
        match self {
            Ev::Start(n) => 1 | (*n as u64) << 8,
            Ev::Timer(n, i) => 2 | (*n as u64) << 8 | (*i as u64) << 40,
            Ev::Pipe(s, d) => 3 | (*s as u64) << 8 | (*d as u64) << 40,
            Ev::Syn { from, to, .. } => 4 | (*from as u64) << 8 | (*to as u64) << 36,
            Ev::Connected(s) => 5 | (*s as u64) << 8,
            Ev::DialFailed { node, conn, .. } => 6 | (*node as u64) << 8 | conn.0 << 36,
            Ev::Notify { sock, side, .. } => 7 | (*sock as u64) << 8 | (*side as u64) << 40,
            Ev::Command(i) => 8 | (*i as u64) << 8,
            Ev::Broadcast => 9,
            Ev::Unicast => 10,
            Ev::Request => 11,
            Ev::Fault(k) => 12 | (*k as u64) << 8,
            Ev::Heal(p) => 13 | (*p as u64) << 8,
            Ev::Restart(n) => 14 | (*n as u64) << 8,
            Ev::Persist(n, _) => 15 | (*n as u64) << 8,
            Ev::LeaveDeadline(n, _) => 16 | (*n as u64) << 8,
            Ev::Sample => 17,
            Ev::SafetyEnd => 18,
            Ev::LivenessCheck => 19,
            Ev::End => 20,
        }
    }
}

struct Entry {
    at: Timestamp,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Where a run stands, for progress displays.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Simulated time now.
    pub now: Timestamp,
    /// Simulated time at which the run ends at the latest.
    pub end: Timestamp,
    /// Events processed so far.
    pub events: u64,
    /// Live honest nodes.
    pub live_nodes: usize,
}

type ProgressFn = Box<dyn FnMut(&Progress)>;

/// Counts of faults injected.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FaultCounts {
    /// Connections stalled.
    pub stalls: u64,
    /// Connections reset.
    pub resets: u64,
    /// Resets with one end never told (half-open).
    pub half_open: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restarts.
    pub restarts: u64,
    /// Nodes that left.
    pub leaves: u64,
    /// Nodes that joined after the start.
    pub joins: u64,
    /// Dials failed or refused on purpose.
    pub dial_faults: u64,
}

/// The simulator. Build it from a [`Scenario`]; drive it with [`Sim::run`] (both phases) or
/// step by step with [`Sim::run_until`] and the fault and command methods.
pub struct Sim {
    pub(crate) scenario: Scenario,
    pub(crate) now: Timestamp,
    seq: u64,
    heap: BinaryHeap<Reverse<Entry>>,
    pub(crate) hosts: Vec<Host>,
    by_addr: HashMap<SocketAddr, u32>,
    by_ip: HashMap<IpAddr, u32>,
    by_peer: HashMap<PeerId, u32>,
    sockets: Vec<Option<Box<Socket>>>,
    partitions: BTreeMap<u32, Partition>,
    next_partition: u32,
    rng_net: SeededRng,
    rng_faults: SeededRng,
    rng_work: SeededRng,
    rng_nodes: SeededRng,
    rng_keys: SeededRng,
    commands: Vec<Option<Command>>,
    pending: Vec<(Duration, Command)>,
    pending_respond: Vec<(u32, silver_p2p_core::node::InboundRequestId, Bytes)>,
    pending_finish: Vec<u32>,
    written: Vec<(ConnectionId, usize)>,
    hooks: Vec<crate::scenario::Hook>,
    pub(crate) ledger: Ledger,
    pub(crate) trace: TraceHash,
    pub(crate) violations: Vec<Violation>,
    pub(crate) violation_count: u64,
    pub(crate) faults_on: bool,
    pub(crate) events: u64,
    pub(crate) wall: Duration,
    pub(crate) counts: FaultCounts,
    pub(crate) safety_end: Timestamp,
    pub(crate) end: Timestamp,
    pub(crate) converged_at: Option<Timestamp>,
    pub(crate) liveness_detail: Option<String>,
    pub(crate) peak_buffered_total: u64,
    pub(crate) peak_buffered_node: u64,
    pub(crate) peak_buffered_node_sum: u64,
    pub(crate) peak_addrbook_node: u64,
    stopped: bool,
    started: bool,
    broadcast_seq: u64,
    partition_active: bool,
    samples: u64,
    seeds: Vec<u32>,
    progress: Option<ProgressFn>,
    persist: bool,
    log: bool,
    /// Context for a panic: what the engine was doing.
    pub(crate) doing: (u32, &'static str),
}

const NANOS: f64 = 1e9;

/// Seconds as a duration, at most [`crate::link::MAX_DELAY_MS`] (a sampled wait can be
/// arbitrarily long; a day is longer than any run waits for one).
fn secs(x: f64) -> Duration {
    Duration::from_secs_f64(x.min(crate::link::MAX_DELAY_MS / 1000.0))
}

/// Milliseconds to nanoseconds, at most [`crate::link::MAX_DELAY_MS`].
fn ms(x: f64) -> u64 {
    (x.min(crate::link::MAX_DELAY_MS) * 1e6) as u64
}

/// The address of host `i`: every host gets its own IP, each in its own /16 netgroup for the
/// first 29,696 hosts (first octets 11–126), never loopback or private-looking 10/8.
pub fn host_ip(i: u32) -> IpAddr {
    let groups = 116 * 256;
    let g = i % groups;
    let rest = i / groups;
    IpAddr::V4(Ipv4Addr::new(
        11 + (g / 256) as u8,
        (g % 256) as u8,
        (rest % 256) as u8,
        1 + ((rest / 256) % 254) as u8,
    ))
}

impl Sim {
    /// Builds the simulator for `scenario`: creates the initial hosts and schedules their
    /// starts, the workload, the faults and the scheduled commands. Nothing runs yet.
    pub fn new(mut scenario: Scenario) -> Sim {
        if let Err(e) = scenario.links.validate() {
            panic!("invalid link configuration: {e}");
        }
        if let Err(e) = scenario.faults.validate() {
            panic!("invalid fault configuration: {e}");
        }
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&scenario.seed.to_le_bytes());
        seed[8..16].copy_from_slice(b"silversi");
        let mut master = SeededRng::from_seed(seed);
        let hooks = std::mem::take(&mut scenario.hooks);
        let schedule = std::mem::take(&mut scenario.schedule);
        let mut sim = Sim {
            now: Timestamp::ZERO,
            seq: 0,
            heap: BinaryHeap::new(),
            hosts: Vec::new(),
            by_addr: HashMap::new(),
            by_ip: HashMap::new(),
            by_peer: HashMap::new(),
            sockets: Vec::new(),
            partitions: BTreeMap::new(),
            next_partition: 0,
            rng_net: master.derive(b"net"),
            rng_faults: master.derive(b"faults"),
            rng_work: master.derive(b"workload"),
            rng_nodes: master.derive(b"nodes"),
            rng_keys: master.derive(b"keys"),
            commands: Vec::new(),
            pending: Vec::new(),
            pending_respond: Vec::new(),
            pending_finish: Vec::new(),
            written: Vec::new(),
            hooks,
            ledger: Ledger::default(),
            trace: TraceHash::default(),
            violations: Vec::new(),
            violation_count: 0,
            faults_on: true,
            events: 0,
            wall: Duration::ZERO,
            counts: FaultCounts::default(),
            safety_end: Timestamp::ZERO + scenario.duration,
            end: Timestamp::ZERO + scenario.duration + scenario.liveness_budget,
            converged_at: None,
            liveness_detail: None,
            peak_buffered_total: 0,
            peak_buffered_node: 0,
            peak_buffered_node_sum: 0,
            peak_addrbook_node: 0,
            stopped: false,
            started: false,
            broadcast_seq: 0,
            partition_active: false,
            samples: 0,
            seeds: Vec::new(),
            progress: None,
            log: false,
            persist: scenario.persist_forced
                || scenario.faults.crashes_per_min > 0.0
                || schedule
                    .iter()
                    .any(|(_, c)| matches!(c, Command::Crash { .. } | Command::WithSim(_))),
            doing: (u32::MAX, "setup"),
            scenario,
        };
        sim.trace.word(sim.scenario.seed);
        let n = sim.scenario.nodes as u32;
        let window = sim.scenario.start_window;
        for i in 0..n {
            let id = sim.add_host(false, true);
            let at = Timestamp::ZERO + window.mul_f64(i as f64 / n.max(1) as f64);
            sim.push(at, Ev::Start(id));
        }
        if let Some(sy) = sim.scenario.sybils.clone() {
            for _ in 0..sy.count {
                let id = sim.add_host(true, true);
                sim.push(Timestamp::ZERO + window, Ev::Start(id));
            }
        }
        for (at, c) in schedule {
            sim.schedule(at, c);
        }
        let w = sim.scenario.workload.clone();
        let start = Timestamp::ZERO + window;
        if let Some(e) = w.broadcast_every {
            sim.push(start + e, Ev::Broadcast);
        }
        if let Some(e) = w.unicast_every {
            sim.push(start + e, Ev::Unicast);
        }
        if let Some(e) = w.request_every {
            sim.push(start + e, Ev::Request);
        }
        let f = sim.scenario.faults.clone();
        for (rate, kind) in [
            (f.stalls_per_min, FaultKind::Stall),
            (f.resets_per_min, FaultKind::Reset),
            (f.crashes_per_min, FaultKind::Crash),
            (f.leaves_per_min, FaultKind::Leave),
            (f.joins_per_min, FaultKind::Join),
        ] {
            if rate > 0.0 {
                let d = Dist::Exp { mean: 60.0 / rate }.sample(&mut sim.rng_faults);
                sim.push(start + secs(d), Ev::Fault(kind));
            }
        }
        if let Some(p) = &f.partitions {
            let d = p.gap_s.sample(&mut sim.rng_faults);
            sim.push(start + secs(d), Ev::Fault(FaultKind::Partition));
        }
        sim.push(Timestamp::ZERO + sim.scenario.sample_interval, Ev::Sample);
        sim.push(sim.safety_end, Ev::SafetyEnd);
        sim.push(sim.end, Ev::End);
        sim
    }

    // ----- public accessors -----

    /// The simulated time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Hosts created so far (live or not), honest and sybil.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// The core node running on host `id`, if it is an honest node and up.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        match self.hosts.get(id.0 as usize)?.actor.as_ref()? {
            Actor::Node(n) => Some(n),
            Actor::Sybil(_) => None,
        }
    }

    /// Host `id`'s status.
    pub fn status(&self, id: NodeId) -> Option<HostStatus> {
        self.hosts.get(id.0 as usize).map(|h| h.status)
    }

    /// Host `id`'s listen address.
    pub fn addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.hosts.get(id.0 as usize).map(|h| h.addr)
    }

    /// The host whose identity is `peer`.
    pub fn host_of(&self, peer: &PeerId) -> Option<NodeId> {
        self.by_peer.get(peer).map(|i| NodeId(*i))
    }

    /// Live honest nodes.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.live_honest().into_iter().map(NodeId).collect()
    }

    /// Established peers of host `id`, as the simulator saw them in its events.
    pub fn peers_of(&self, id: NodeId) -> Vec<NodeId> {
        self.hosts
            .get(id.0 as usize)
            .map(|h| {
                h.peers
                    .values()
                    .filter_map(|(p, _)| self.by_peer.get(p).map(|i| NodeId(*i)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Invariant violations so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The trace hash so far.
    pub fn trace_hash(&self) -> String {
        self.trace.hex()
    }

    /// Calls `f` about every 65,536 events with where the run stands (for progress bars).
    pub fn set_progress(&mut self, f: impl FnMut(&Progress) + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// Prints every fault, restart, join and violation to stderr as it happens.
    pub fn set_log(&mut self, on: bool) {
        self.log = on;
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.log {
            eprintln!("[{:>10.3}s] {what}", self.now.as_nanos() as f64 / NANOS);
        }
    }

    /// Applies `f` to live honest node `id` now and routes what it produces. Returns `None`
    /// if the node is not up.
    pub fn with_node<R>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut Node, Timestamp) -> R,
    ) -> Option<R> {
        let now = self.now;
        let r = match self.hosts.get_mut(id.0 as usize)?.actor.as_mut()? {
            Actor::Node(n) => f(n, now),
            Actor::Sybil(_) => return None,
        };
        self.drain(id.0);
        self.after_step();
        Some(r)
    }

    /// Queues `command` to run at simulated time `at` (now if `at` has passed).
    pub fn schedule(&mut self, at: Duration, command: Command) {
        let i = self.commands.len() as u32;
        self.commands.push(Some(command));
        let at = (Timestamp::ZERO + at).max(self.now);
        self.push(at, Ev::Command(i));
    }

    /// Runs a command now.
    pub fn command(&mut self, command: Command) {
        self.exec(command);
        self.after_step();
    }

    // ----- running -----

    /// Runs both phases to the end: the safety phase (faults on) for the scenario's
    /// duration, then the liveness phase (faults off) until the network converged or the
    /// budget ran out. A panic inside a node is caught and reported as a violation.
    pub fn run(&mut self) {
        let end = self.end;
        self.run_until(end);
        self.finish();
    }

    /// Processes every event up to simulated time `until` (or until the run is over).
    pub fn run_until(&mut self, until: Timestamp) {
        let wall = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_inner(until)));
        self.wall += wall.elapsed();
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            let (node, what) = self.doing;
            self.violation(
                "panic",
                (node != u32::MAX).then_some(node),
                format!("panic while {what}: {msg}"),
            );
            self.stopped = true;
        }
    }

    fn run_inner(&mut self, until: Timestamp) {
        self.started = true;
        while !self.stopped {
            let Some(Reverse(top)) = self.heap.peek() else {
                break;
            };
            if top.at > until {
                break;
            }
            let Reverse(Entry { at, ev, .. }) = self.heap.pop().expect("peeked");
            self.now = self.now.max(at);
            self.trace.word(at.as_nanos());
            self.trace.word(ev.code());
            self.events += 1;
            self.process(ev, at);
            self.after_step();
            if self.events & 0xFFFF == 0 {
                if let Some(mut p) = self.progress.take() {
                    p(&Progress {
                        now: self.now,
                        end: self.end,
                        events: self.events,
                        live_nodes: self.live_honest().len(),
                    });
                    self.progress = Some(p);
                }
            }
        }
        if !self.stopped {
            self.now = self.now.max(until);
        }
    }

    fn push(&mut self, at: Timestamp, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn after_step(&mut self) {
        while !self.pending.is_empty()
            || !self.pending_respond.is_empty()
            || !self.pending_finish.is_empty()
        {
            for (node, id, data) in std::mem::take(&mut self.pending_respond) {
                let now = self.now;
                if let Some(Actor::Node(n)) = self.hosts[node as usize].actor.as_mut() {
                    let _ = n.respond(now, id, Some(data));
                    self.drain(node);
                }
            }
            for node in std::mem::take(&mut self.pending_finish) {
                self.finish_leave(node);
            }
            for (delay, c) in std::mem::take(&mut self.pending) {
                if delay.is_zero() {
                    self.exec(c);
                } else {
                    let at = self.now + delay;
                    let i = self.commands.len() as u32;
                    self.commands.push(Some(c));
                    self.push(at, Ev::Command(i));
                }
            }
        }
    }

    pub(crate) fn violation(&mut self, kind: &str, node: Option<u32>, detail: String) {
        self.log(format_args!("VIOLATION [{kind}] {node:?} {detail}"));
        self.violation_count += 1;
        if self.violations.len() < 200 {
            self.violations.push(Violation {
                at_s: self.now.as_nanos() as f64 / NANOS,
                kind: kind.into(),
                node,
                detail,
            });
        }
    }

    // ----- hosts -----

    fn add_host(&mut self, sybil: bool, initial: bool) -> u32 {
        let i = self.hosts.len() as u32;
        let ip = if sybil {
            IpAddr::V4(Ipv4Addr::new(9, 9, (i / 256 % 256) as u8, (i % 256) as u8))
        } else {
            host_ip(i)
        };
        let addr = SocketAddr::new(ip, 7000);
        let keypair = Keypair::generate(&mut self.rng_keys);
        let region = match &self.scenario.links.regions {
            Some(r) => {
                let total: u64 = r.weights.iter().map(|w| *w as u64).sum();
                let mut x = self.rng_net.below(total);
                let mut k = 0;
                for (j, w) in r.weights.iter().enumerate() {
                    if x < *w as u64 {
                        k = j;
                        break;
                    }
                    x -= *w as u64;
                }
                k
            }
            None => 0,
        };
        let seed_index = match self.scenario.topology {
            Topology::Bootstrap { seeds } if !sybil && (i as usize) < seeds.max(1) && initial => {
                self.seeds.push(i);
                Some(i as usize)
            }
            _ => None,
        };
        let mut config = NodeConfig {
            network_id: "silver-sim".into(),
            listen_addrs: vec![addr],
            ..NodeConfig::default()
        };
        if let Topology::Bootstrap { .. } = self.scenario.topology {
            if !self.seeds.is_empty() && !sybil {
                let boot = match seed_index {
                    Some(0) => None,
                    Some(_) => Some(self.seeds[0]),
                    None => Some(self.seeds[i as usize % self.seeds.len()]),
                };
                if let Some(b) = boot {
                    let h = &self.hosts[b as usize];
                    config.bootstrap = vec![PeerAddr::pinned(h.keypair.peer_id(), h.addr)];
                }
            }
        }
        if let Some(f) = &self.scenario.config_fn {
            f(NodeId(i), &mut config);
        }
        // `auto` becomes AES-256-GCM, as the adapters resolve it on every CPU with AES
        // instructions (nearly every x86-64 and 64-bit Arm machine), where it costs about
        // half the CPU of ChaCha20-Poly1305. Resolved the same on every machine, never by
        // this one's CPU: the cipher bit changes the Hello's length, so a machine-dependent
        // choice would make a seed replay differently elsewhere. A scenario that sets the
        // cipher keeps it.
        config.cipher = config.cipher.resolve(true);
        if let Err(e) = config.validate() {
            panic!("invalid node configuration for n{i}: {e}");
        }
        self.by_addr.insert(addr, i);
        self.by_ip.insert(ip, i);
        self.by_peer.insert(keypair.peer_id(), i);
        self.hosts.push(Host {
            sybil,
            seed_index,
            ip,
            addr,
            keypair,
            config,
            region,
            actor: None,
            status: HostStatus::Pending,
            machine_down: false,
            inc: 0,
            started_at: Timestamp::ZERO,
            first_start: None,
            timer_at: None,
            conns: HashMap::new(),
            peers: BTreeMap::new(),
            peer_conn: HashMap::new(),
            outbound: 0,
            reached_target_at: None,
            snapshot: None,
            totals: Totals::default(),
            leaving: false,
            next_port: 40_000,
            timer_spin: (Timestamp::ZERO, 0),
            initial,
        });
        i
    }

    fn start_host(&mut self, i: u32) {
        let now = self.now;
        let seed = self.rng_nodes.derive_seed(b"node");
        let h = &mut self.hosts[i as usize];
        if matches!(h.status, HostStatus::Up | HostStatus::Left) {
            return;
        }
        h.inc += 1;
        h.started_at = now;
        h.first_start.get_or_insert(now);
        h.status = HostStatus::Up;
        h.machine_down = false;
        h.timer_at = None;
        h.timer_spin = (now, 0);
        h.outbound = 0;
        h.peers.clear();
        h.peer_conn.clear();
        h.conns.clear();
        self.doing = (i, "starting a node");
        if h.sybil {
            let targets: Vec<SocketAddr> = self
                .hosts
                .iter()
                .filter(|x| !x.sybil)
                .map(|x| x.addr)
                .collect();
            let h = &mut self.hosts[i as usize];
            let sy = Sybil::new(
                &h.config.network_id,
                h.addr,
                h.keypair.clone(),
                seed,
                self.scenario.sybils.clone().unwrap_or_default(),
                targets,
                now,
            );
            h.actor = Some(Actor::Sybil(Box::new(sy)));
        } else {
            let mut node = Node::new(h.config.clone(), h.keypair.clone(), seed, now)
                .expect("configuration validated at creation");
            if let Some(s) = &h.snapshot {
                if let Err(e) = node.restore(now, s) {
                    let detail = format!("snapshot did not restore: {e}");
                    self.violation("snapshot", Some(i), detail);
                }
            }
            self.hosts[i as usize].actor = Some(Actor::Node(Box::new(node)));
            if let Topology::Random { peers } = self.scenario.topology {
                for _ in 0..peers.min(i as usize) {
                    let j = self.rng_net.below(i as u64) as usize;
                    let a = PeerAddr::pinned(self.hosts[j].keypair.peer_id(), self.hosts[j].addr);
                    if let Some(Actor::Node(n)) = self.hosts[i as usize].actor.as_mut() {
                        let _ = n.connect(now, a);
                    }
                }
            }
            if self.persist {
                let jitter = self
                    .rng_nodes
                    .below(self.scenario.persist_interval.as_nanos() as u64);
                let inc = self.hosts[i as usize].inc;
                self.push(now + Duration::from_nanos(jitter), Ev::Persist(i, inc));
            }
        }
        self.drain(i);
    }

    /// Drops a host's node: every socket end of it closes without the node's involvement.
    /// Peers are told after the link latency (process crash) or never (machine crash).
    fn kill_host(&mut self, i: u32, machine: bool, status: HostStatus) {
        self.log(format_args!("n{i} {status:?} (machine crash: {machine})"));
        let now = self.now;
        let h = &mut self.hosts[i as usize];
        if h.status != HostStatus::Up {
            if status == HostStatus::Left {
                h.status = HostStatus::Left;
                self.by_addr.remove(&self.hosts[i as usize].addr.clone());
            }
            return;
        }
        if let Some(Actor::Node(n)) = &h.actor {
            h.totals.add_node(n, now);
        }
        h.actor = None;
        h.status = status;
        h.machine_down = machine;
        h.timer_at = None;
        h.leaving = false;
        h.peers.clear();
        h.peer_conn.clear();
        h.outbound = 0;
        let mut slots: Vec<(ConnectionId, ConnSlot)> = h.conns.drain().collect();
        slots.sort_by_key(|(c, _)| *c);
        for (_, slot) in slots {
            let ConnSlot::Sock(s, side) = slot else {
                continue;
            };
            let side = side as usize;
            let Some(sock) = self.sockets[s as usize].as_mut() else {
                continue;
            };
            sock.ends[side].open = false;
            let lat = sock.latency;
            if machine {
                // Nothing reaches a dead machine, and nothing leaves it.
                for p in sock.pipes.iter_mut() {
                    p.q.clear();
                    p.buffered = 0;
                    p.dead = true;
                }
            } else {
                sock.pipes[side].q.clear();
                sock.pipes[side].dead = true;
                if sock.ends[1 - side].open {
                    self.push(
                        now + Duration::from_nanos(lat),
                        Ev::Notify {
                            sock: s,
                            side: (1 - side) as u8,
                            error: "connection reset by peer",
                        },
                    );
                }
            }
            self.maybe_free(s);
        }
        if status == HostStatus::Left {
            let addr = self.hosts[i as usize].addr;
            self.by_addr.remove(&addr);
        }
        self.ledger.forget_node(i);
    }

    fn finish_leave(&mut self, i: u32) {
        if self.hosts[i as usize].status == HostStatus::Up && self.hosts[i as usize].leaving {
            self.kill_host(i, false, HostStatus::Left);
        }
    }

    fn live_honest(&self) -> Vec<u32> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.sybil && h.status == HostStatus::Up && !h.leaving)
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn pick(&mut self, p: Pick, from: Option<u32>) -> Option<u32> {
        match p {
            Pick::Node(id) => Some(id.0).filter(|i| (*i as usize) < self.hosts.len()),
            Pick::Seed(k) => self.seeds.get(k).copied(),
            Pick::Random => {
                let live = self.live_honest();
                if live.is_empty() {
                    return None;
                }
                Some(live[self.rng_work.below(live.len() as u64) as usize])
            }
            Pick::RandomPeer => {
                let f = from?;
                let peers: Vec<u32> = self.hosts[f as usize]
                    .peers
                    .values()
                    .filter_map(|(p, _)| self.by_peer.get(p).copied())
                    .filter(|j| !self.hosts[*j as usize].sybil)
                    .collect();
                if peers.is_empty() {
                    return None;
                }
                Some(peers[self.rng_work.below(peers.len() as u64) as usize])
            }
        }
    }

    // ----- the adapter's loop for one node -----

    fn input(&mut self, i: u32, inc: u32, input: Input<'_>) {
        let now = self.now;
        let h = &mut self.hosts[i as usize];
        if h.inc != inc || h.status != HostStatus::Up {
            return;
        }
        let Some(a) = h.actor.as_mut() else { return };
        self.doing = (i, "handling an input");
        a.handle_input(now, input);
        self.drain(i);
    }

    fn drain(&mut self, i: u32) {
        let now = self.now;
        self.doing = (i, "draining outputs");
        loop {
            let out = match self.hosts[i as usize].actor.as_mut() {
                Some(a) => a.poll_output(),
                None => {
                    self.written.clear();
                    return;
                }
            };
            match out {
                Some(o) => self.route(i, o),
                None => {
                    if self.written.is_empty() {
                        break;
                    }
                    let w = std::mem::take(&mut self.written);
                    if let Some(a) = self.hosts[i as usize].actor.as_mut() {
                        for (conn, bytes) in &w {
                            a.handle_input(
                                now,
                                Input::Written {
                                    conn: *conn,
                                    bytes: *bytes,
                                },
                            );
                        }
                    }
                    self.written = w;
                    self.written.clear();
                }
            }
        }
        self.rearm(i);
    }

    /// Makes sure the node has a timer event no later than its deadline. A deadline that
    /// moved later keeps the earlier event, which re-arms when it fires: far fewer heap
    /// entries than one per change (every received byte moves the idle deadline).
    fn rearm(&mut self, i: u32) {
        let now = self.now;
        let h = &mut self.hosts[i as usize];
        let Some(a) = h.actor.as_ref() else { return };
        let Some(t) = a.poll_timeout().map(|t| t.max(now)) else {
            return;
        };
        if h.timer_at.is_some_and(|x| x <= t) {
            return;
        }
        h.timer_at = Some(t);
        let inc = h.inc;
        self.push(t, Ev::Timer(i, inc));
    }

    fn route(&mut self, i: u32, out: Output) {
        match out {
            Output::Transmit { conn, bytes } => self.transmit(i, conn, bytes),
            Output::Dial { conn, addr } => self.dial(i, conn, addr),
            Output::Close { conn } => self.close_local(i, conn),
            Output::PauseRead { conn } => self.set_paused(i, conn, true),
            Output::ResumeRead { conn } => self.set_paused(i, conn, false),
            Output::Event(e) => self.on_event(i, e),
            _ => {}
        }
    }

    fn set_paused(&mut self, i: u32, conn: ConnectionId, paused: bool) {
        self.trace.word(0x50 | paused as u64 | conn.0 << 8);
        if let Some(ConnSlot::Sock(s, side)) = self.hosts[i as usize].conns.get(&conn).copied() {
            if let Some(sock) = self.sockets[s as usize].as_mut() {
                sock.ends[side as usize].paused = paused;
            }
            if !paused {
                self.kick(s, 1 - side);
            }
        }
    }

    fn transmit(&mut self, i: u32, conn: ConnectionId, bytes: Vec<u8>) {
        let n = bytes.len();
        self.trace.word(0x70 | (n as u64) << 8 | conn.0 << 40);
        let slot = self.hosts[i as usize].conns.get(&conn).copied();
        let Some(ConnSlot::Sock(s, side)) = slot else {
            self.written.push((conn, n));
            return;
        };
        let now = self.now;
        let links = &self.scenario.links;
        let Some(sock) = self.sockets[s as usize].as_mut() else {
            self.written.push((conn, n));
            return;
        };
        let dst_open = sock.ends[1 - side as usize].open;
        let (lat, bw) = (sock.latency, sock.bw);
        let pipe = &mut sock.pipes[side as usize];
        if pipe.dead || !dst_open || n == 0 {
            self.written.push((conn, n));
            return;
        }
        let rng = &mut self.rng_net;
        let jitter = if links.jitter_ms.is_zero() {
            0
        } else {
            ms(links.jitter_ms.sample(rng))
        };
        let pieces = if links.max_pieces <= 1 || n < 2 {
            1
        } else {
            1 + rng.below(links.max_pieces.min(MAX_PIECES).min(n as u32) as u64) as usize
        };
        let start = now.max(pipe.tx_free);
        let mut cuts = [0usize; MAX_PIECES as usize + 1];
        for c in cuts.iter_mut().take(pieces).skip(1) {
            *c = 1 + rng.below(n as u64 - 1) as usize;
        }
        cuts[pieces] = n;
        cuts[1..pieces].sort_unstable();
        let mut seg = Segment {
            data: bytes,
            pieces: [(Timestamp::ZERO, 0); MAX_PIECES as usize],
            count: 0,
            next: 0,
            fin: false,
        };
        for k in 1..=pieces {
            let b = cuts[k];
            if b == cuts[k - 1] {
                continue;
            }
            let tx = match bw {
                Some(bw) => start + Duration::from_nanos((b as f64 / bw * NANOS) as u64),
                None => start,
            };
            let at = (tx + Duration::from_nanos(lat + jitter)).max(pipe.last_at);
            pipe.last_at = at;
            seg.pieces[seg.count as usize] = (at, b as u32);
            seg.count += 1;
        }
        pipe.q.push_back(seg);
        if let Some(bw) = bw {
            pipe.tx_free = start + Duration::from_nanos((n as f64 / bw * NANOS) as u64);
        }
        pipe.buffered += n;
        let room = links.window.saturating_sub(pipe.buffered - n);
        let credit = n.min(room);
        pipe.debt += n - credit;
        if credit > 0 {
            self.written.push((conn, credit));
        }
        self.kick(s, side);
    }

    /// Makes sure pipe `dir` of socket `s` has an event at the time it can next deliver.
    fn kick(&mut self, s: u32, dir: u8) {
        let now = self.now;
        let Some(sock) = self.sockets[s as usize].as_mut() else {
            return;
        };
        let (src, dst) = (sock.ends[dir as usize], sock.ends[1 - dir as usize]);
        let p = &mut sock.pipes[dir as usize];
        if p.dead {
            return;
        }
        let Some(front) = p.q.front() else { return };
        if dst.open && (dst.paused || blocked(&self.partitions, src.node, dst.node)) {
            return;
        }
        let t = front.front_at().max(p.stalled_until).max(now);
        if p.scheduled.is_some_and(|x| x <= t) {
            return;
        }
        p.scheduled = Some(t);
        self.push(t, Ev::Pipe(s, dir));
    }

    fn pipe_event(&mut self, s: u32, dir: u8, at: Timestamp) {
        let now = self.now;
        let window = self.scenario.links.window;
        match self.sockets[s as usize].as_mut() {
            Some(sock) if sock.pipes[dir as usize].scheduled == Some(at) => {
                sock.pipes[dir as usize].scheduled = None;
            }
            _ => return,
        }
        loop {
            let Some(sock) = self.sockets[s as usize].as_mut() else {
                return;
            };
            let (src, dst) = (sock.ends[dir as usize], sock.ends[1 - dir as usize]);
            let p = &mut sock.pipes[dir as usize];
            if p.dead {
                return;
            }
            if !dst.open {
                // The reader is gone: the bytes are lost, the writer's writes complete.
                p.q.clear();
                p.buffered = 0;
                let debt = std::mem::take(&mut p.debt);
                if src.open && debt > 0 {
                    self.input(
                        src.node,
                        src.inc,
                        Input::Written {
                            conn: src.conn,
                            bytes: debt,
                        },
                    );
                }
                return;
            }
            if dst.paused || p.stalled_until > now || blocked(&self.partitions, src.node, dst.node)
            {
                break;
            }
            let due = p.q.front().is_some_and(|f| f.front_at() <= now);
            if !due {
                break;
            }
            let seg = p.q.front_mut().expect("checked");
            if seg.fin {
                p.q.pop_front();
                sock.ends[1 - dir as usize].open = false;
                self.hosts[dst.node as usize].conns.remove(&dst.conn);
                self.input(
                    dst.node,
                    dst.inc,
                    Input::Closed {
                        conn: dst.conn,
                        error: None,
                    },
                );
                self.maybe_free(s);
                return;
            }
            let (a, b) = (seg.start(), seg.pieces[seg.next as usize].1 as usize);
            seg.next += 1;
            let more = seg.next < seg.count;
            let seg = p.q.pop_front().expect("checked");
            p.buffered -= b - a;
            let credit = self.credit(s, dir, window);
            self.deliver(src, dst, &seg.data[a..b], credit);
            if more {
                // The rest of the write stays first in line.
                match self.sockets[s as usize].as_mut() {
                    Some(sock) if !sock.pipes[dir as usize].dead => {
                        sock.pipes[dir as usize].q.push_front(seg)
                    }
                    _ => return,
                }
            }
        }
        self.kick(s, dir);
    }

    fn credit(&mut self, s: u32, dir: u8, window: usize) -> usize {
        let Some(sock) = self.sockets[s as usize].as_mut() else {
            return 0;
        };
        let p = &mut sock.pipes[dir as usize];
        let credit = if p.debt > 0 {
            p.debt.min(window.saturating_sub(p.buffered))
        } else {
            0
        };
        p.debt -= credit;
        credit
    }

    fn deliver(&mut self, src: End, dst: End, data: &[u8], credit: usize) {
        if credit > 0 && src.open {
            self.input(
                src.node,
                src.inc,
                Input::Written {
                    conn: src.conn,
                    bytes: credit,
                },
            );
        }
        self.trace
            .word(0x80 | (data.len() as u64) << 8 | dst.conn.0 << 40);
        self.input(
            dst.node,
            dst.inc,
            Input::Received {
                conn: dst.conn,
                bytes: data,
            },
        );
    }

    fn maybe_free(&mut self, s: u32) {
        if let Some(sock) = &self.sockets[s as usize] {
            if !sock.ends[0].open && !sock.ends[1].open {
                self.sockets[s as usize] = None;
            }
        }
    }

    fn latency(&mut self, a: u32, b: u32) -> u64 {
        let links = &self.scenario.links;
        match &links.regions {
            Some(r) => {
                let (ra, rb) = (self.hosts[a as usize].region, self.hosts[b as usize].region);
                ms(r.latency_ms[ra][rb])
            }
            None => ms(links.latency_ms.sample(&mut self.rng_net)),
        }
    }

    fn dial(&mut self, i: u32, conn: ConnectionId, addr: SocketAddr) {
        let now = self.now;
        let inc = self.hosts[i as usize].inc;
        self.hosts[i as usize].conns.insert(conn, ConnSlot::Dialing);
        let timeout = self.scenario.links.connect_timeout;
        let fail = |sim: &mut Sim, after: Duration, error: &'static str| {
            sim.push(
                now + after,
                Ev::DialFailed {
                    node: i,
                    inc,
                    conn,
                    error,
                },
            );
        };
        let target = self.by_addr.get(&addr).copied();
        let rtt_guess = Duration::from_millis(20);
        if self.faults_on {
            let (pf, pr) = (
                self.scenario.faults.dial_failure_prob,
                self.scenario.faults.dial_refusal_prob,
            );
            if chance(&mut self.rng_faults, pf) {
                self.counts.dial_faults += 1;
                return fail(self, timeout, "connection timed out");
            }
            if chance(&mut self.rng_faults, pr) {
                self.counts.dial_faults += 1;
                return fail(self, rtt_guess, "connection refused");
            }
        }
        let Some(t) = target else {
            return fail(self, timeout, "connection timed out");
        };
        let lat = self.latency(i, t);
        match self.hosts[t as usize].status {
            HostStatus::Up => {}
            HostStatus::Down if self.hosts[t as usize].machine_down => {
                return fail(self, timeout, "connection timed out");
            }
            _ => return fail(self, Duration::from_nanos(2 * lat), "connection refused"),
        }
        if blocked(&self.partitions, i, t) || blocked(&self.partitions, t, i) {
            return fail(self, timeout, "connection timed out");
        }
        self.push(
            now + Duration::from_nanos(lat),
            Ev::Syn {
                from: i,
                inc,
                conn,
                to: t,
                lat,
            },
        );
    }

    fn syn(&mut self, from: u32, inc: u32, conn: ConnectionId, to: u32, lat: u64) {
        let now = self.now;
        let d = &self.hosts[from as usize];
        if d.inc != inc || d.conns.get(&conn) != Some(&ConnSlot::Dialing) {
            return;
        }
        let timeout = self.scenario.links.connect_timeout;
        let back = now + Duration::from_nanos(lat);
        let t = &self.hosts[to as usize];
        if t.status != HostStatus::Up {
            let (after, error) = if t.machine_down {
                (now + timeout, "connection timed out")
            } else {
                (back, "connection refused")
            };
            self.push(
                after,
                Ev::DialFailed {
                    node: from,
                    inc,
                    conn,
                    error,
                },
            );
            return;
        }
        if blocked(&self.partitions, from, to) || blocked(&self.partitions, to, from) {
            self.push(
                now + timeout,
                Ev::DialFailed {
                    node: from,
                    inc,
                    conn,
                    error: "connection timed out",
                },
            );
            return;
        }
        let port = {
            let h = &mut self.hosts[from as usize];
            h.next_port = if h.next_port >= 60_000 {
                40_000
            } else {
                h.next_port + 1
            };
            h.next_port
        };
        let remote = SocketAddr::new(self.hosts[from as usize].ip, port);
        let tinc = self.hosts[to as usize].inc;
        self.doing = (to, "accepting");
        let r = self.hosts[to as usize]
            .actor
            .as_mut()
            .expect("up hosts have an actor")
            .accept(now, remote);
        self.trace.word(0x90 | (r.is_ok() as u64) << 8);
        match r {
            Ok(c2) => {
                let bw = self
                    .scenario
                    .links
                    .bandwidth
                    .clone()
                    .map(|d| d.sample(&mut self.rng_net).max(1.0));
                let s = self.sockets.len() as u32;
                self.sockets.push(Some(Box::new(Socket {
                    ends: [
                        End {
                            node: from,
                            inc,
                            conn,
                            open: true,
                            paused: false,
                        },
                        End {
                            node: to,
                            inc: tinc,
                            conn: c2,
                            open: true,
                            paused: false,
                        },
                    ],
                    pipes: [Pipe::default(), Pipe::default()],
                    latency: lat,
                    bw,
                })));
                self.hosts[from as usize]
                    .conns
                    .insert(conn, ConnSlot::Sock(s, 0));
                self.hosts[to as usize]
                    .conns
                    .insert(c2, ConnSlot::Sock(s, 1));
                self.push(back, Ev::Connected(s));
            }
            Err(_) => {
                self.push(
                    back,
                    Ev::DialFailed {
                        node: from,
                        inc,
                        conn,
                        error: "connection reset by peer",
                    },
                );
            }
        }
        self.drain(to);
    }

    fn close_local(&mut self, i: u32, conn: ConnectionId) {
        self.trace.word(0xA0 | conn.0 << 8);
        let now = self.now;
        let Some(slot) = self.hosts[i as usize].conns.remove(&conn) else {
            return;
        };
        let ConnSlot::Sock(s, side) = slot else {
            return;
        };
        let Some(sock) = self.sockets[s as usize].as_mut() else {
            return;
        };
        let side_u = side as usize;
        sock.ends[side_u].open = false;
        let lat = sock.latency;
        if sock.ends[1 - side_u].open && !sock.pipes[side_u].dead {
            let p = &mut sock.pipes[side_u];
            let at = (now + Duration::from_nanos(lat)).max(p.last_at);
            p.last_at = at;
            let mut pieces = [(Timestamp::ZERO, 0); MAX_PIECES as usize];
            pieces[0] = (at, 0);
            p.q.push_back(Segment {
                data: Vec::new(),
                pieces,
                count: 1,
                next: 0,
                fin: true,
            });
            self.kick(s, side);
            self.kick(s, 1 - side);
        } else {
            self.maybe_free(s);
        }
    }

    fn notify(&mut self, s: u32, side: u8, error: &'static str) {
        let Some(sock) = self.sockets[s as usize].as_mut() else {
            return;
        };
        let e = sock.ends[side as usize];
        if !e.open {
            return;
        }
        sock.ends[side as usize].open = false;
        self.hosts[e.node as usize].conns.remove(&e.conn);
        self.input(
            e.node,
            e.inc,
            Input::Closed {
                conn: e.conn,
                error: Some(error.into()),
            },
        );
        self.maybe_free(s);
    }

    fn on_event(&mut self, i: u32, e: Event) {
        let now = self.now;
        crate::ledger::hash_event(&mut self.trace, i, &e);
        let inc = self.hosts[i as usize].inc;
        match &e {
            Event::PeerConnected {
                peer,
                conn,
                direction,
                ..
            } => {
                let h = &mut self.hosts[i as usize];
                // The core replaces a duplicate connection to one identity without a
                // PeerDisconnected for the old one: drop it here.
                if let Some(old) = h.peer_conn.insert(*peer, *conn) {
                    if old != *conn {
                        if let Some((_, Direction::Outbound)) = h.peers.remove(&old) {
                            h.outbound = h.outbound.saturating_sub(1);
                        }
                    }
                }
                h.peers.insert(*conn, (*peer, *direction));
                if *direction == Direction::Outbound {
                    h.outbound += 1;
                    if h.reached_target_at.is_none()
                        && h.outbound >= h.config.limits.target_outbound
                        && h.initial
                    {
                        h.reached_target_at = Some(now);
                    }
                }
            }
            Event::PeerDisconnected { peer, conn, .. } => {
                let h = &mut self.hosts[i as usize];
                if let Some((_, d)) = h.peers.remove(conn) {
                    if d == Direction::Outbound {
                        h.outbound = h.outbound.saturating_sub(1);
                    }
                }
                if h.peer_conn.get(peer) == Some(conn) {
                    h.peer_conn.remove(peer);
                }
            }
            Event::Banned {
                peer, ip, reason, ..
            } if *reason != BanReason::Manual => {
                let honest_peer = peer
                    .and_then(|p| self.by_peer.get(&p))
                    .is_some_and(|j| !self.hosts[*j as usize].sybil);
                let honest_ip = ip
                    .and_then(|p| self.by_ip.get(&p))
                    .is_some_and(|j| !self.hosts[*j as usize].sybil);
                if honest_peer || honest_ip {
                    let who = peer
                        .and_then(|p| self.by_peer.get(&p).copied())
                        .or_else(|| ip.and_then(|p| self.by_ip.get(&p).copied()));
                    self.violation(
                        "honest-node-banned",
                        Some(i),
                        format!("n{i} banned honest node n{} ({reason:?})", who.unwrap_or(0)),
                    );
                }
            }
            Event::Request { id, request, .. } if self.scenario.workload.auto_respond => {
                let data = match request {
                    Request::App { data, .. } => data.clone(),
                    Request::GetBlock(h) | Request::GetTransaction(h) => h.clone(),
                };
                self.pending_respond.push((i, *id, data));
            }
            Event::ShutdownComplete(_) if self.hosts[i as usize].leaving => {
                self.pending_finish.push(i);
            }
            _ => {}
        }
        let started_at = self.hosts[i as usize].started_at;
        let usock = match &e {
            Event::Unicast { from, .. } => {
                let h = &self.hosts[i as usize];
                h.peer_conn
                    .get(from)
                    .and_then(|c| h.conns.get(c))
                    .and_then(|s| match s {
                        ConnSlot::Sock(s, _) => Some(*s),
                        ConnSlot::Dialing => None,
                    })
            }
            _ => None,
        };
        let probe_done = self.ledger.on_event(now, i, inc, started_at, usock, &e);
        if let Some(v) = self.ledger.take_violations() {
            for (kind, detail) in v {
                self.violation(kind, Some(i), detail);
            }
        }
        if probe_done && self.converged_at.is_none() && !self.faults_on {
            self.converged_at = Some(now);
            self.stopped = true;
        }
        if !self.hooks.is_empty() && !self.hosts[i as usize].sybil {
            let mut hooks = std::mem::take(&mut self.hooks);
            let mut cmds = std::mem::take(&mut self.pending);
            {
                let node = match self.hosts[i as usize].actor.as_ref() {
                    Some(Actor::Node(n)) => Some(&**n),
                    _ => None,
                };
                let mut ctx = HookCtx {
                    now,
                    node_id: NodeId(i),
                    node,
                    commands: &mut cmds,
                };
                for h in hooks.iter_mut() {
                    h(&mut ctx, &e);
                }
            }
            self.pending = cmds;
            self.hooks = hooks;
        }
    }

    // ----- events -----

    fn process(&mut self, ev: Ev, at: Timestamp) {
        let now = self.now;
        match ev {
            Ev::Start(i) => self.start_host(i),
            Ev::Timer(i, inc) => {
                let h = &mut self.hosts[i as usize];
                if h.inc != inc || h.timer_at != Some(at) || h.status != HostStatus::Up {
                    return;
                }
                h.timer_at = None;
                let due = h
                    .actor
                    .as_ref()
                    .and_then(|a| a.poll_timeout())
                    .is_some_and(|t| t <= now);
                if !due {
                    self.rearm(i);
                    return;
                }
                if h.timer_spin.0 == now {
                    h.timer_spin.1 += 1;
                } else {
                    h.timer_spin = (now, 0);
                }
                if h.timer_spin.1 > 10_000 {
                    self.violation(
                        "timer-stuck",
                        Some(i),
                        "the node's deadline does not advance past now".into(),
                    );
                    self.stopped = true;
                    return;
                }
                self.input(i, inc, Input::Timeout);
            }
            Ev::Pipe(s, d) => self.pipe_event(s, d, at),
            Ev::Syn {
                from,
                inc,
                conn,
                to,
                lat,
            } => self.syn(from, inc, conn, to, lat),
            Ev::Connected(s) => {
                let Some(sock) = self.sockets[s as usize].as_ref() else {
                    return;
                };
                let e = sock.ends[0];
                if e.open {
                    self.input(e.node, e.inc, Input::Connected { conn: e.conn });
                }
            }
            Ev::DialFailed {
                node,
                inc,
                conn,
                error,
            } => {
                let h = &mut self.hosts[node as usize];
                if h.inc == inc && h.conns.get(&conn) == Some(&ConnSlot::Dialing) {
                    h.conns.remove(&conn);
                    self.input(
                        node,
                        inc,
                        Input::Closed {
                            conn,
                            error: Some(error.into()),
                        },
                    );
                }
            }
            Ev::Notify { sock, side, error } => self.notify(sock, side, error),
            Ev::Command(k) => {
                if let Some(c) = self.commands.get_mut(k as usize).and_then(|c| c.take()) {
                    self.exec(c);
                }
            }
            Ev::Broadcast => {
                let size = self.scenario.workload.broadcast_size;
                self.exec(Command::Broadcast {
                    from: Pick::Random,
                    size,
                });
                if let Some(e) = self.scenario.workload.broadcast_every {
                    self.push(now + e, Ev::Broadcast);
                }
            }
            Ev::Unicast => {
                let size = self.scenario.workload.unicast_size;
                self.exec(Command::Unicast {
                    from: Pick::Random,
                    to: Pick::RandomPeer,
                    size,
                });
                if let Some(e) = self.scenario.workload.unicast_every {
                    self.push(now + e, Ev::Unicast);
                }
            }
            Ev::Request => {
                let size = 64;
                self.exec(Command::Request {
                    from: Pick::Random,
                    to: Pick::RandomPeer,
                    size,
                });
                if let Some(e) = self.scenario.workload.request_every {
                    self.push(now + e, Ev::Request);
                }
            }
            Ev::Fault(k) => self.random_fault(k),
            Ev::Heal(p) => {
                if self.partitions.remove(&p).is_some() {
                    self.log(format_args!("partition {p} healed"));
                    self.partition_active = false;
                    self.kick_all();
                    if self.faults_on {
                        if let Some(pf) = self.scenario.faults.partitions.clone() {
                            let d = pf.gap_s.sample(&mut self.rng_faults);
                            self.push(now + secs(d), Ev::Fault(FaultKind::Partition));
                        }
                    }
                }
            }
            Ev::Restart(i) => self.restart(i),
            Ev::Persist(i, inc) => {
                let h = &mut self.hosts[i as usize];
                if h.inc != inc || h.status != HostStatus::Up {
                    return;
                }
                if let Some(Actor::Node(n)) = &h.actor {
                    h.snapshot = Some(n.snapshot(now));
                }
                let d = self.scenario.persist_interval;
                self.push(now + d, Ev::Persist(i, inc));
            }
            Ev::LeaveDeadline(i, inc) => {
                if self.hosts[i as usize].inc == inc {
                    self.finish_leave(i);
                }
            }
            Ev::Sample => {
                self.sample();
                let d = self.scenario.sample_interval;
                self.push(now + d, Ev::Sample);
            }
            Ev::SafetyEnd => self.begin_liveness(),
            Ev::LivenessCheck => self.liveness_check(),
            Ev::End => {
                self.stopped = true;
            }
        }
    }

    fn kick_all(&mut self) {
        for s in 0..self.sockets.len() as u32 {
            if self.sockets[s as usize].is_some() {
                self.kick(s, 0);
                self.kick(s, 1);
            }
        }
    }

    fn exec(&mut self, c: Command) {
        let now = self.now;
        match c {
            Command::Broadcast { from, size } => {
                self.broadcast_seq += 1;
                let data = crate::scenario::payload(self.broadcast_seq, size);
                self.gossip(from, GossipMessage::Transaction(data), false);
            }
            Command::Gossip { from, message } => {
                self.gossip(from, message, false);
            }
            Command::Unicast { from, to, size } => {
                let Some(f) = self.pick(from, None) else {
                    return;
                };
                let Some(t) = self.pick(to, Some(f)) else {
                    return;
                };
                let peer = self.hosts[t as usize].keypair.peer_id();
                let seq = self.ledger.next_unicast_seq();
                let mut data = vec![0u8; size.max(12)];
                data[..4].copy_from_slice(b"SIMU");
                data[4..12].copy_from_slice(&seq.to_le_bytes());
                let sock = self.hosts[f as usize]
                    .peer_conn
                    .get(&peer)
                    .and_then(|c| self.hosts[f as usize].conns.get(c))
                    .and_then(|s| match s {
                        ConnSlot::Sock(s, _) => Some(*s),
                        ConnSlot::Dialing => None,
                    });
                let Some(Actor::Node(n)) = self.hosts[f as usize].actor.as_mut() else {
                    return;
                };
                match n.unicast(now, &peer, 1, Bytes::from(data)) {
                    Ok(id) => {
                        let timeout = n.config().unicast.timeout;
                        self.ledger.sent_unicast(
                            f,
                            self.hosts[f as usize].inc,
                            id.0,
                            seq,
                            t,
                            sock,
                            now,
                            timeout,
                        );
                    }
                    Err(e) => self.ledger.refused.note(Refusable::Unicast, &e),
                }
                self.drain(f);
            }
            Command::Request { from, to, size } => {
                let Some(f) = self.pick(from, None) else {
                    return;
                };
                let Some(t) = self.pick(to, Some(f)) else {
                    return;
                };
                let peer = self.hosts[t as usize].keypair.peer_id();
                let Some(Actor::Node(n)) = self.hosts[f as usize].actor.as_mut() else {
                    return;
                };
                let req = Request::App {
                    kind: 1,
                    data: Bytes::from(vec![7u8; size]),
                };
                match n.request(now, &peer, req) {
                    Ok(id) => {
                        let timeout = n.config().requests.timeout;
                        self.ledger.sent_request(f, id.0, now, timeout);
                    }
                    Err(e) => self.ledger.refused.note(Refusable::Request, &e),
                }
                self.drain(f);
            }
            Command::Partition {
                split,
                oneway,
                heal_after,
            } => self.partition(split, oneway, heal_after),
            Command::HealAll => {
                self.partitions.clear();
                self.partition_active = false;
                self.kick_all();
            }
            Command::Stall { node, duration } => {
                if let Some(i) = self.pick(node, None) {
                    let socks: Vec<u32> = self.sockets_of(i);
                    for s in socks {
                        self.stall(s, duration);
                    }
                }
            }
            Command::Reset { node } => {
                if let Some(i) = self.pick(node, None) {
                    let socks = self.sockets_of(i);
                    if !socks.is_empty() {
                        let s = socks[self.rng_faults.below(socks.len() as u64) as usize];
                        self.reset(s);
                    }
                }
            }
            Command::Crash {
                node,
                machine,
                restart_after,
            } => {
                if let Some(i) = self.pick(node, None) {
                    if self.hosts[i as usize].status == HostStatus::Up {
                        self.counts.crashes += 1;
                        self.kill_host(i, machine, HostStatus::Down);
                        if let Some(d) = restart_after {
                            self.push(now + d, Ev::Restart(i));
                        }
                    }
                }
            }
            Command::Restart { node } => self.restart(node.0),
            Command::Leave { node, graceful } => {
                if let Some(i) = self.pick(node, None) {
                    self.leave(i, graceful);
                }
            }
            Command::Join { count } => {
                for _ in 0..count {
                    let i = self.add_host(false, false);
                    self.counts.joins += 1;
                    self.start_host(i);
                }
            }
            Command::WithNode { node, f } => {
                let _ = self.with_node(node, f);
            }
            Command::WithSim(f) => f(self),
        }
    }

    fn gossip(&mut self, from: Pick, message: GossipMessage, probe: bool) -> bool {
        let now = self.now;
        let Some(f) = self.pick(from, None) else {
            return false;
        };
        let expected = self.live_honest().len().saturating_sub(1) as u32;
        let inc = self.hosts[f as usize].inc;
        let Some(Actor::Node(n)) = self.hosts[f as usize].actor.as_mut() else {
            return false;
        };
        let ok = match n.broadcast(now, message, BroadcastOptions::default()) {
            Ok(r) => {
                self.ledger
                    .sent_gossip(r.id, f, inc, now, expected, probe, self.hosts.len());
                true
            }
            Err(e) => {
                self.ledger.refused.note(Refusable::Broadcast, &e);
                false
            }
        };
        self.drain(f);
        ok
    }

    fn sockets_of(&self, i: u32) -> Vec<u32> {
        let mut v: Vec<u32> = self.hosts[i as usize]
            .conns
            .values()
            .filter_map(|s| match s {
                ConnSlot::Sock(s, _) => Some(*s),
                ConnSlot::Dialing => None,
            })
            .collect();
        v.sort_unstable();
        v
    }

    fn stall(&mut self, s: u32, d: Duration) {
        let until = self.now + d;
        if let Some(sock) = self.sockets[s as usize].as_mut() {
            self.counts.stalls += 1;
            for p in sock.pipes.iter_mut() {
                p.stalled_until = p.stalled_until.max(until);
            }
            self.kick(s, 0);
            self.kick(s, 1);
        }
    }

    fn reset(&mut self, s: u32) {
        let now = self.now;
        let f = self.scenario.faults.clone();
        let Some(sock) = self.sockets[s as usize].as_mut() else {
            return;
        };
        self.counts.resets += 1;
        for p in sock.pipes.iter_mut() {
            p.q.clear();
            p.buffered = 0;
            p.debt = 0;
            p.dead = true;
        }
        let never = if chance(&mut self.rng_faults, f.half_open_prob) {
            self.counts.half_open += 1;
            Some(self.rng_faults.below(2) as u8)
        } else {
            None
        };
        for side in 0..2u8 {
            if never == Some(side) {
                continue;
            }
            let d = f.reset_notify_ms.sample(&mut self.rng_faults);
            self.push(
                now + Duration::from_nanos(ms(d)),
                Ev::Notify {
                    sock: s,
                    side,
                    error: "connection reset by peer",
                },
            );
        }
    }

    fn partition(&mut self, split: Split, oneway: bool, heal_after: Option<Duration>) {
        let now = self.now;
        let mut side = vec![1u8; self.hosts.len()];
        match split {
            Split::Fraction(f) => {
                let live = self.live_honest();
                let k = ((live.len() as f64) * f).round() as usize;
                let mut pool = live;
                for _ in 0..k.min(pool.len()) {
                    let j = self.rng_faults.below(pool.len() as u64) as usize;
                    side[pool.swap_remove(j) as usize] = 0;
                }
            }
            Split::Nodes(ns) => {
                for n in ns {
                    if let Some(x) = side.get_mut(n.0 as usize) {
                        *x = 0;
                    }
                }
            }
        }
        let id = self.next_partition;
        self.next_partition += 1;
        self.counts.partitions += 1;
        self.log(format_args!(
            "partition {id} (oneway {oneway}): side A {:?}, heal after {heal_after:?}",
            side.iter()
                .enumerate()
                .filter(|(_, x)| **x == 0)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        ));
        self.partitions.insert(id, Partition { side, oneway });
        self.partition_active = true;
        if let Some(d) = heal_after {
            self.push(now + d, Ev::Heal(id));
        }
    }

    fn restart(&mut self, i: u32) {
        // A scheduled restart may name a node that never existed.
        if self
            .hosts
            .get(i as usize)
            .is_none_or(|h| h.status != HostStatus::Down)
        {
            return;
        }
        self.counts.restarts += 1;
        self.log(format_args!("n{i} restarts"));
        self.ledger.forget_node(i);
        self.start_host(i);
    }

    fn leave(&mut self, i: u32, graceful: bool) {
        let now = self.now;
        if self.hosts[i as usize].status != HostStatus::Up || self.hosts[i as usize].leaving {
            return;
        }
        self.counts.leaves += 1;
        self.log(format_args!("n{i} leaves (graceful: {graceful})"));
        if graceful {
            let inc = self.hosts[i as usize].inc;
            self.hosts[i as usize].leaving = true;
            if let Some(Actor::Node(n)) = self.hosts[i as usize].actor.as_mut() {
                n.shutdown(now, Duration::from_secs(5));
            }
            self.push(now + Duration::from_secs(10), Ev::LeaveDeadline(i, inc));
            self.drain(i);
        } else {
            self.kill_host(i, false, HostStatus::Left);
        }
    }

    fn random_fault(&mut self, k: FaultKind) {
        let now = self.now;
        if !self.faults_on {
            return;
        }
        let f = self.scenario.faults.clone();
        let candidates: Vec<u32> = self
            .live_honest()
            .into_iter()
            .filter(|i| f.seeds_may_fail || self.hosts[*i as usize].seed_index.is_none())
            .collect();
        let pick = |sim: &mut Sim| -> Option<u32> {
            (!candidates.is_empty())
                .then(|| candidates[sim.rng_faults.below(candidates.len() as u64) as usize])
        };
        let rate = match k {
            FaultKind::Stall => {
                if let Some(i) = pick(self) {
                    let socks = self.sockets_of(i);
                    if !socks.is_empty() {
                        let s = socks[self.rng_faults.below(socks.len() as u64) as usize];
                        let d = f.stall_ms.sample(&mut self.rng_faults);
                        self.stall(s, Duration::from_nanos(ms(d)));
                    }
                }
                f.stalls_per_min
            }
            FaultKind::Reset => {
                if let Some(i) = pick(self) {
                    let socks = self.sockets_of(i);
                    if !socks.is_empty() {
                        let s = socks[self.rng_faults.below(socks.len() as u64) as usize];
                        self.reset(s);
                    }
                }
                f.resets_per_min
            }
            FaultKind::Crash => {
                // Keep at least half the initial population up.
                if candidates.len() * 2 > self.scenario.nodes {
                    if let Some(i) = pick(self) {
                        let machine = chance(&mut self.rng_faults, f.machine_crash_prob);
                        let down = f.downtime_s.sample(&mut self.rng_faults);
                        self.counts.crashes += 1;
                        self.kill_host(i, machine, HostStatus::Down);
                        self.push(now + secs(down), Ev::Restart(i));
                    }
                }
                f.crashes_per_min
            }
            FaultKind::Leave => {
                // Seed nodes never leave for good: joiners bootstrap from them.
                let leavers: Vec<u32> = candidates
                    .iter()
                    .copied()
                    .filter(|i| self.hosts[*i as usize].seed_index.is_none())
                    .collect();
                if candidates.len() * 2 > self.scenario.nodes && !leavers.is_empty() {
                    let i = leavers[self.rng_faults.below(leavers.len() as u64) as usize];
                    {
                        let graceful = chance(&mut self.rng_faults, f.graceful_leave_prob);
                        self.leave(i, graceful);
                    }
                }
                f.leaves_per_min
            }
            FaultKind::Join => {
                let i = self.add_host(false, false);
                self.log(format_args!("n{i} joins"));
                self.counts.joins += 1;
                self.start_host(i);
                f.joins_per_min
            }
            FaultKind::Partition => {
                if let Some(p) = &f.partitions {
                    if !self.partition_active {
                        let oneway = chance(&mut self.rng_faults, p.oneway_prob);
                        let len = p.length_s.sample(&mut self.rng_faults);
                        self.partition(Split::Fraction(p.fraction), oneway, Some(secs(len)));
                    }
                }
                return;
            }
        };
        let d = Dist::Exp { mean: 60.0 / rate }.sample(&mut self.rng_faults);
        self.push(now + secs(d), Ev::Fault(k));
    }

    // ----- phases and checks -----

    fn begin_liveness(&mut self) {
        let now = self.now;
        self.faults_on = false;
        self.partitions.clear();
        self.partition_active = false;
        for s in self.sockets.iter_mut().flatten() {
            for p in s.pipes.iter_mut() {
                p.stalled_until = Timestamp::ZERO;
            }
        }
        self.kick_all();
        for i in 0..self.hosts.len() as u32 {
            if self.hosts[i as usize].status == HostStatus::Down {
                self.restart(i);
            }
        }
        self.push(now + Duration::from_secs(5), Ev::LivenessCheck);
    }

    fn liveness_check(&mut self) {
        let now = self.now;
        if self.converged_at.is_some() {
            return;
        }
        let (components, live) = self.components();
        if let Some(p) = self.ledger.probe_status(now) {
            self.liveness_detail = Some(p);
        }
        let probe_pending = self.ledger.probe_pending(now);
        if components == 1 && live > 1 && !probe_pending {
            self.gossip(
                Pick::Random,
                GossipMessage::App {
                    kind: 0x5157,
                    data: crate::scenario::payload(u64::MAX - self.events, 64),
                },
                true,
            );
        } else if live <= 1 {
            self.converged_at = Some(now);
            self.stopped = true;
            return;
        }
        if components != 1 {
            self.liveness_detail = Some(format!(
                "the graph of {live} live nodes has {components} components: {}",
                self.graph_detail()
            ));
        }
        self.push(now + Duration::from_secs(5), Ev::LivenessCheck);
    }

    /// The smaller components of the graph, for a liveness failure: each node with its
    /// peers, outbound count, address book size and bootstrap peers' status.
    pub(crate) fn graph_detail(&self) -> String {
        let live = self.live_honest();
        let groups = self.component_members(&live);
        let mut out = Vec::new();
        for g in groups.iter().skip(1).take(6) {
            let nodes: Vec<String> = g
                .iter()
                .take(8)
                .map(|i| {
                    let h = &self.hosts[*i as usize];
                    let book = match &h.actor {
                        Some(Actor::Node(n)) => n.address_book().len(),
                        _ => 0,
                    };
                    let boots: Vec<String> = h
                        .config
                        .bootstrap
                        .iter()
                        .filter_map(|b| b.peer_id.and_then(|p| self.by_peer.get(&p)))
                        .map(|j| format!("n{j}:{:?}", self.hosts[*j as usize].status))
                        .collect();
                    format!(
                        "n{i}(peers {}, out {}, book {book}, boot [{}])",
                        h.peers.len(),
                        h.outbound,
                        boots.join(",")
                    )
                })
                .collect();
            out.push(format!("{{{}}}", nodes.join(" ")));
        }
        format!(
            "component sizes {:?}; smaller ones: {}",
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            out.join(" ")
        )
    }

    fn component_members(&self, live: &[u32]) -> Vec<Vec<u32>> {
        let mut index: HashMap<u32, usize> = HashMap::new();
        for (k, i) in live.iter().enumerate() {
            index.insert(*i, k);
        }
        let mut seen = vec![false; live.len()];
        let mut groups = Vec::new();
        for start in 0..live.len() {
            if seen[start] {
                continue;
            }
            let mut g = Vec::new();
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(k) = stack.pop() {
                g.push(live[k]);
                for (peer, _) in self.hosts[live[k] as usize].peers.values() {
                    if let Some(&j) = self.by_peer.get(peer).and_then(|j| index.get(j)) {
                        if !seen[j] {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            g.sort_unstable();
            groups.push(g);
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
        groups
    }

    /// Connected components of the graph of established links between live honest nodes,
    /// and the number of live honest nodes.
    pub(crate) fn components(&self) -> (usize, usize) {
        let live = self.live_honest();
        let mut index: HashMap<u32, usize> = HashMap::new();
        for (k, i) in live.iter().enumerate() {
            index.insert(*i, k);
        }
        let mut parent: Vec<usize> = (0..live.len()).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for (k, i) in live.iter().enumerate() {
            for (peer, _) in self.hosts[*i as usize].peers.values() {
                if let Some(j) = self.by_peer.get(peer).and_then(|j| index.get(j)) {
                    let (a, b) = (find(&mut parent, k), find(&mut parent, *j));
                    if a != b {
                        parent[a] = b;
                    }
                }
            }
        }
        let roots = (0..live.len())
            .filter(|x| find(&mut parent, *x) == *x)
            .count();
        (roots, live.len())
    }

    fn sample(&mut self) {
        self.samples += 1;
        let check = self.samples
            % (self.scenario.check_interval.as_nanos() / self.scenario.sample_interval.as_nanos())
                .max(1) as u64
            == 0;
        let (mut total, mut peaks) = (0u64, 0u64);
        for i in 0..self.hosts.len() {
            let h = &self.hosts[i];
            let Some(a) = h.actor.as_ref() else { continue };
            total += a.buffered_bytes() as u64;
            if !h.sybil {
                let peak = a.peak_buffered_bytes() as u64;
                peaks += peak;
                self.peak_buffered_node = self.peak_buffered_node.max(peak);
            }
            if check {
                if let Actor::Node(n) = a {
                    let occupancy = n.occupancy();
                    let mut found = crate::ledger::check_bounds(n, &occupancy, &h.conns_sorted());
                    // The peers the events announced are the peers the node has.
                    let peers = occupancy.peers;
                    if peers != h.peers.len()
                        || n.peer_connections()
                            .any(|(peer, conn)| h.peers.get(&conn).map(|x| x.0) != Some(peer))
                    {
                        found.push(format!(
                            "events announced {} established peers, the node has {}",
                            h.peers.len(),
                            peers
                        ));
                    }
                    self.peak_addrbook_node =
                        self.peak_addrbook_node.max(n.address_book().len() as u64);
                    for d in found {
                        let kind = if d.starts_with("events announced") {
                            "event-consistency"
                        } else {
                            "bound-exceeded"
                        };
                        self.violation(kind, Some(i as u32), d);
                    }
                }
            }
        }
        self.peak_buffered_total = self.peak_buffered_total.max(total);
        self.peak_buffered_node_sum = self.peak_buffered_node_sum.max(peaks);
        if check {
            self.check_connections();
        }
    }

    /// On every connection whose both ends are established and whose direction is empty,
    /// every message the sender framed has reached the receiver exactly once.
    fn check_connections(&mut self) {
        let mut found = Vec::new();
        for (s, sock) in self.sockets.iter().enumerate() {
            let Some(sock) = sock else { continue };
            if !sock.ends[0].open || !sock.ends[1].open {
                continue;
            }
            let conn = |e: &End| -> Option<&silver_p2p_core::Connection> {
                match self.hosts[e.node as usize].actor.as_ref()? {
                    Actor::Node(n) => n.connection(e.conn),
                    Actor::Sybil(_) => None,
                }
            };
            let (Some(a), Some(b)) = (conn(&sock.ends[0]), conn(&sock.ends[1])) else {
                continue;
            };
            if a.state() != ConnectionState::Connected || b.state() != ConnectionState::Connected {
                continue;
            }
            for (dir, (tx, rx)) in [(0usize, (a, b)), (1, (b, a))] {
                if !sock.pipes[dir].q.is_empty() || sock.pipes[dir].dead {
                    continue;
                }
                let (sent, got) = (tx.stats().messages_sent, rx.stats().messages_received);
                if sent != got {
                    found.push((
                        sock.ends[1 - dir].node,
                        format!(
                            "socket {s}: n{} framed {sent} messages, n{} received {got} with nothing in flight",
                            sock.ends[dir].node,
                            sock.ends[1 - dir].node
                        ),
                    ));
                }
            }
        }
        for (n, d) in found {
            self.violation("connection-exactly-once", Some(n), d);
        }
    }

    /// Final checks after the run: outcomes of unicasts and requests, and liveness.
    fn finish(&mut self) {
        let now = self.now;
        if self.violations.iter().any(|v| v.kind == "panic") {
            return;
        }
        for (kind, node, detail) in self.ledger.final_checks(now) {
            self.violation(kind, Some(node), detail);
        }
        if self.converged_at.is_none() && now >= self.end {
            let (components, live) = self.components();
            let detail = self
                .liveness_detail
                .clone()
                .unwrap_or_else(|| format!("{live} live nodes in {components} components"));
            self.violation(
                "liveness",
                None,
                format!(
                    "no convergence within the {}s budget after faults stopped: {detail}",
                    self.scenario.liveness_budget.as_secs()
                ),
            );
        }
    }
}

impl Host {
    fn conns_sorted(&self) -> Vec<ConnectionId> {
        let mut v: Vec<ConnectionId> = self.conns.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// What every event reads of a host shares its first two cache lines; the
    /// configuration and identity come last.
    #[test]
    fn the_fields_every_event_touches_come_first() {
        let hot_end = offset_of!(Host, timer_spin) + size_of::<(Timestamp, u32)>();
        assert!(hot_end <= 2 * 64, "the hot part spans {hot_end} bytes");
        for f in [
            offset_of!(Host, actor),
            offset_of!(Host, timer_at),
            offset_of!(Host, inc),
            offset_of!(Host, status),
            offset_of!(Host, conns),
            offset_of!(Host, started_at),
        ] {
            assert!(f < hot_end);
        }
        assert!(offset_of!(Host, keypair) >= hot_end && offset_of!(Host, config) >= hot_end);
    }
}
