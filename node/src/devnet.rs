//! `silver-node devnet`: N real nodes on 127.0.0.1 in one process, exercised and measured.
//!
//! Phases, each bounded in time:
//!
//! 1. **Start**: node 0 listens on 127.0.0.1:0 with no bootstrap; nodes 1..N bootstrap from it
//!    (its address pinned to its identity). Every node has a fresh identity and no files.
//! 2. **Discovery** (`--discovery-timeout`): the harness polls every node's peers until each
//!    reached its target degree: `target_outbound` outbound peers, or a connection to every
//!    other node (in a small devnet that is the most it can have); the bootstrap node, which
//!    never dials, needs `target_outbound` peers of either direction.
//! 3. **Broadcasts** (`--broadcasts`, `--broadcast-timeout` each): transactions, and every
//!    `--block-every`-th a block, from random nodes, one after the other. Propagation latency
//!    runs from just before the broadcast call to the moment each other node's application
//!    task received the Gossip event from its event stream (`Instant`s in this process).
//! 4. **Unicasts** (`--unicasts`, `--unicast-timeout` each): from a random node to a random
//!    one of its peers; delivered means acknowledged after delivery to the receiver's
//!    application, and the receiver's event stream is checked too.
//! 5. **Throughput** (`--burst`): that many transactions broadcast back to back from random
//!    nodes; the figure is deliveries per second until every node had every one (bounded by
//!    twice the broadcast timeout).
//! 6. **Summary**: printed on stdout (`--json`: one JSON object), then every node is stopped.
//!
//! Progress goes to stderr. The exit status is 1 when discovery did not converge, a broadcast
//! did not reach every node, a unicast failed, or a command failed; 0 otherwise.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use silver_p2p_core::node::{message_id, Direction, Event, GossipMessage, MessageId, NodeConfig};
use silver_p2p_core::PeerId;
use silver_p2p_tokio::{HandleError, NetworkHandle, NetworkManager, NodeOptions};
use tokio::sync::mpsc;

use crate::config::load_config;
use crate::report::{bytes, ms, Percentiles};
use crate::CliError;

/// The application kind of devnet unicasts.
const UNICAST_KIND: u32 = 0xde5;

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
        return Err(format!("{s} is outside (0, 3600] seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Options of `silver-node devnet`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevnetArgs {
    /// Nodes to start on 127.0.0.1 (the first bootstraps the others).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub nodes: u32,
    /// Outbound connections every node works to keep (limits.target_outbound).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub target_outbound: u32,
    /// Broadcasts measured one by one for coverage and propagation latency.
    #[arg(long, default_value_t = 20)]
    pub broadcasts: u32,
    /// Every Nth broadcast is a block, the others transactions (0: transactions only).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub block_every: u32,
    /// Transaction payload size in bytes (at least 16).
    #[arg(long, value_name = "BYTES", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..))]
    pub tx_size: u32,
    /// Block payload size in bytes (at least 16; above 16,256 it travels as chunks).
    #[arg(long, value_name = "BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(16..))]
    pub block_size: u32,
    /// Unicasts, each from a random node to a random one of its peers.
    #[arg(long, default_value_t = 20)]
    pub unicasts: u32,
    /// Transactions broadcast back to back for the throughput figure (0 skips the phase).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub burst: u32,
    /// Seconds allowed for every node to reach its target degree.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub discovery_timeout: Duration,
    /// Seconds allowed for one broadcast to reach every node (the burst gets twice this).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub broadcast_timeout: Duration,
    /// Seconds allowed for one unicast to be acknowledged.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub unicast_timeout: Duration,
    /// Network id of the devnet (default: the configuration's, "silver-devnet").
    #[arg(long, value_name = "ID")]
    pub network: Option<String>,
    /// Base configuration for every node; the devnet then adjusts the keys loopback needs
    /// (limits, discovery intervals, address book buckets, reconnect backoff).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed for the harness's choices (origins, receivers, payloads); random by default.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The configuration of every devnet node: `base` with what a loopback network of `n` nodes
/// needs. Every address is 127.0.0.1, so the per-IP inbound limit must admit every node and
/// the address book's netgroup bucketing collapses to one group; intervals shrink so the
/// network forms in seconds. Limits and intervals already stricter in `base` are kept; the
/// address book's bucket counts are set to 1 (one netgroup needs no more).
pub fn devnet_config(mut c: NodeConfig, n: usize, target: usize) -> NodeConfig {
    c.bootstrap.clear();
    c.listen_addrs.clear();
    let l = &mut c.limits;
    l.target_outbound = target;
    l.max_outbound = l.max_outbound.max(target);
    l.max_inbound_per_ip = l.max_inbound_per_ip.max(n);
    l.max_inbound = l.max_inbound.max(n);
    l.max_connections = l.max_connections.max(l.max_inbound + l.max_outbound);
    l.max_pending_handshakes = l.max_pending_handshakes.max(2 * n);
    let d = &mut c.discovery;
    d.interval = d.interval.min(Duration::from_millis(200));
    d.get_peers_interval = d.get_peers_interval.min(Duration::from_millis(250));
    d.answer_interval = d.answer_interval.min(Duration::from_millis(500));
    let a = &mut c.address_book;
    a.retry_interval_secs = a.retry_interval_secs.min(1);
    a.new_buckets = 1;
    a.tried_buckets = 1;
    a.max_per_source_group = a.max_per_source_group.max(a.max_new);
    let r = &mut c.reconnect;
    r.base_ms = r.base_ms.min(200);
    r.cap_ms = r.cap_ms.clamp(r.base_ms, 5_000);
    c
}

/// SplitMix64: the harness's choices, reproducible with `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A unique payload: a sequence number and a random word, then zeros up to `len`.
fn payload(seq: u64, len: usize, rng: &mut Rng) -> Bytes {
    let mut v = vec![0u8; len.max(16)];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v[8..16].copy_from_slice(&rng.next().to_be_bytes());
    Bytes::from(v)
}

/// What a node's application task saw, stamped when it saw it.
enum Seen {
    Gossip(usize, MessageId, Instant),
    Unicast(usize, u64),
}

/// One broadcast being tracked.
struct Tracked {
    sent_at: Instant,
    origin: usize,
    block: bool,
    arrivals: Vec<Option<Instant>>,
    count: usize,
}

/// Live progress on stderr.
struct Progress {
    start: Instant,
    quiet: bool,
    last: Instant,
}

impl Progress {
    fn line(&mut self, msg: impl std::fmt::Display) {
        self.last = Instant::now();
        if !self.quiet {
            eprintln!("[{:6.2}s] {msg}", self.start.elapsed().as_secs_f64());
        }
    }

    /// Whether a periodic line is due (one a second).
    fn due(&self) -> bool {
        self.last.elapsed() >= Duration::from_secs(1)
    }
}

/// Node degrees at the end of the run.
#[derive(Debug, Default, serde::Serialize)]
pub struct Degree {
    /// Fewest peers of a node.
    pub min: usize,
    /// Mean peers per node.
    pub mean: f64,
    /// Most peers of a node.
    pub max: usize,
    /// Mean outbound peers per node.
    pub outbound_mean: f64,
}

/// The throughput burst.
#[derive(Debug, Default, serde::Serialize)]
pub struct Throughput {
    /// Transactions broadcast back to back.
    pub messages: usize,
    /// Payload bytes of each.
    pub message_bytes: usize,
    /// Share of (message, other node) deliveries that happened.
    pub coverage: f64,
    /// From the first broadcast call to the last delivery, in seconds.
    pub seconds: f64,
    /// Messages per second (delivered to every node).
    pub messages_per_s: f64,
    /// Deliveries to applications per second, all nodes together.
    pub deliveries_per_s: f64,
}

/// Node-wide counters summed over every node.
#[derive(Debug, Default, serde::Serialize)]
pub struct Traffic {
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Dials that failed before the handshake completed.
    pub dials_failed: u64,
    /// Duplicate connections to one identity closed.
    pub duplicates_closed: u64,
    /// Gossip duplicates dropped by the seen-caches.
    pub gossip_duplicates: u64,
    /// Gossip copies lost to full queues.
    pub gossip_dropped_queue_full: u64,
    /// Tree gossip: Prunes sent (links that stopped pushing).
    pub gossip_prunes_sent: u64,
    /// Tree gossip: IHave messages sent.
    pub gossip_announcements_sent: u64,
    /// Tree gossip: message ids asked for with IWant.
    pub gossip_ids_wanted: u64,
    /// Tree gossip: plain grafts sent (lazy peers asked to push again).
    pub gossip_grafts_sent: u64,
    /// Unicast retransmissions.
    pub unicast_retries: u64,
    /// Bytes sent per second of the whole run.
    pub bytes_per_s: f64,
}

/// Everything the devnet measured. `--json` prints it as is.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Whether every check passed (the exit status is 0 exactly then).
    pub ok: bool,
    /// Nodes started.
    pub nodes: usize,
    /// The outbound target of every node.
    pub target_outbound: usize,
    /// The seed of the harness's choices.
    pub seed: u64,
    /// Seconds to start every node (bind, spawn).
    pub startup_s: f64,
    /// Whether every node reached its target degree within the discovery timeout.
    pub converged: bool,
    /// Seconds from starting the first node until every node reached its target degree
    /// (`null` if that did not happen in time).
    pub discovery_s: Option<f64>,
    /// Nodes at their target degree when discovery ended.
    pub nodes_at_target: usize,
    /// Degrees at the end of the run.
    pub degree: Degree,
    /// Broadcasts measured.
    pub broadcasts: usize,
    /// Deliveries that happened over deliveries expected (broadcasts × (nodes − 1)).
    pub coverage: f64,
    /// Deliveries that happened.
    pub deliveries: usize,
    /// Deliveries expected.
    pub expected_deliveries: usize,
    /// Latency from the broadcast call to each other node's application, every delivery.
    pub propagation_ms: Percentiles,
    /// The same, transactions only.
    pub propagation_ms_transactions: Percentiles,
    /// The same, blocks only.
    pub propagation_ms_blocks: Percentiles,
    /// Per broadcast, the time until the last node had it (complete broadcasts only).
    pub complete_ms: Percentiles,
    /// Unicasts attempted.
    pub unicasts: usize,
    /// Unicasts acknowledged.
    pub unicast_delivered: usize,
    /// Unicasts that failed (no peer, refused, not acknowledged in time).
    pub unicast_failed: usize,
    /// Unicasts the receivers' applications got.
    pub unicast_received: usize,
    /// From the unicast call to its acknowledgement.
    pub unicast_ms: Percentiles,
    /// The throughput burst (`null` when skipped with `--burst 0`).
    pub throughput: Option<Throughput>,
    /// Counters over every node.
    pub traffic: Traffic,
    /// Failed commands and checks, counted.
    pub errors: usize,
    /// The first of them (at most 20).
    pub error_messages: Vec<String>,
    /// Seconds the whole devnet took, shutdown included.
    pub elapsed_s: f64,
}

struct Devnet {
    handles: Vec<NetworkHandle>,
    index: HashMap<PeerId, usize>,
    rx: mpsc::UnboundedReceiver<Seen>,
    tracked: HashMap<MessageId, Tracked>,
    unicasts_seen: HashMap<u64, usize>,
    errors: Vec<String>,
    rng: Rng,
    progress: Progress,
    seq: u64,
}

impl Devnet {
    fn n(&self) -> usize {
        self.handles.len()
    }

    fn error(&mut self, e: String) {
        if !self.progress.quiet {
            eprintln!("devnet error: {e}");
        }
        self.errors.push(e);
    }

    fn apply(&mut self, seen: Seen) {
        match seen {
            Seen::Gossip(node, id, at) => {
                if let Some(t) = self.tracked.get_mut(&id) {
                    if t.arrivals[node].is_none() && node != t.origin {
                        t.arrivals[node] = Some(at);
                        t.count += 1;
                    }
                }
            }
            Seen::Unicast(node, tag) => {
                self.unicasts_seen.insert(tag, node);
            }
        }
    }

    /// Applies observations until `done` holds or `deadline` passes; returns `done`'s value.
    async fn wait(&mut self, deadline: Instant, mut done: impl FnMut(&Devnet) -> bool) -> bool {
        loop {
            while let Ok(s) = self.rx.try_recv() {
                self.apply(s);
            }
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline.into(), self.rx.recv()).await {
                Ok(Some(s)) => self.apply(s),
                Ok(None) | Err(_) => return done(self),
            }
        }
    }

    fn track(&mut self, msg: &GossipMessage, origin: usize) -> MessageId {
        let id = message_id(msg);
        self.tracked.insert(
            id,
            Tracked {
                sent_at: Instant::now(),
                origin,
                block: matches!(msg, GossipMessage::Block(_)),
                arrivals: vec![None; self.n()],
                count: 0,
            },
        );
        id
    }

    async fn broadcast(&mut self, origin: usize, msg: GossipMessage) -> Option<MessageId> {
        let id = self.track(&msg, origin);
        match call(self.handles[origin].broadcast(msg)).await {
            Ok(r) if r.queued() == 0 => {
                self.error(format!("broadcast from node {origin} reached no peer"));
                Some(id)
            }
            Ok(_) => Some(id),
            Err(e) => {
                self.tracked.remove(&id);
                self.error(format!("broadcast from node {origin} failed: {e}"));
                None
            }
        }
    }
}

/// How long a handle call (peers, stats, broadcast) may take before it counts as failed: the
/// node's loop answers them at once, so only a stuck node reaches it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle call bounded by [`CALL_TIMEOUT`].
async fn call<T>(
    f: impl std::future::Future<Output = Result<T, HandleError>>,
) -> Result<T, HandleError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or(Err(HandleError::Stopped))
}

fn subscribe(
    i: usize,
    h: &NetworkHandle,
    tx: mpsc::UnboundedSender<Seen>,
) -> tokio::task::JoinHandle<()> {
    let mut events = h.events();
    let h = h.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            let at = Instant::now();
            let seen = match e {
                Event::Gossip { id, .. } => Seen::Gossip(i, id, at),
                Event::Unicast {
                    kind: UNICAST_KIND,
                    data,
                    ..
                } if data.len() >= 8 => {
                    let tag = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
                    Seen::Unicast(i, tag)
                }
                Event::Request { id, .. } => {
                    let _ = h.respond(id, None).await;
                    continue;
                }
                Event::ShutdownComplete(_) => break,
                _ => continue,
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    })
}

/// Runs the devnet and prints its summary; an error (exit status 1) when a check failed.
pub async fn devnet(args: DevnetArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let n = args.nodes as usize;
    let target = args.target_outbound as usize;
    let mut base = match &args.config {
        Some(p) => load_config(p)?,
        None => NodeConfig::default(),
    };
    if let Some(net) = &args.network {
        base.network_id = net.clone();
    }
    let config = devnet_config(base, n, target);
    config
        .validate()
        .map_err(|e| CliError::input(format!("invalid devnet configuration: {e}")))?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let mut net = Devnet {
        handles: Vec::with_capacity(n),
        index: HashMap::new(),
        rx,
        tracked: HashMap::new(),
        unicasts_seen: HashMap::new(),
        errors: Vec::new(),
        rng: Rng(seed),
        progress: Progress {
            start,
            quiet: args.quiet,
            last: start,
        },
        seq: 0,
    };
    let mut s = Summary {
        nodes: n,
        target_outbound: target,
        seed,
        ..Default::default()
    };

    // 1. Start.
    net.progress.line(format!(
        "starting {n} nodes on 127.0.0.1 (network {:?}, target_outbound {target}, seed {seed})",
        config.network_id
    ));
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut bootstrap = None;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = config.clone();
        c.bootstrap.extend(bootstrap);
        let h = NetworkManager::with_options(NodeOptions::new(c, vec![loopback]))
            .start()
            .await
            .map_err(|e| match e {
                silver_p2p_tokio::StartError::Bind { .. } => {
                    CliError::input(format!("node {i} could not start: {e}"))
                }
                _ => CliError::failure(format!("node {i} could not start: {e}")),
            })?;
        if i == 0 {
            bootstrap = h.dial_addr();
        }
        tasks.push(subscribe(i, &h, tx.clone()));
        net.index.insert(h.peer_id(), i);
        net.handles.push(h);
    }
    drop(tx);
    s.startup_s = round3(start.elapsed().as_secs_f64());
    if let Some(b) = bootstrap {
        net.progress
            .line(format!("started {n} nodes; bootstrap node 0 is {b}"));
    }

    // 2. Discovery.
    let deadline = start + args.discovery_timeout;
    let mut reached: Vec<Option<Duration>> = vec![None; n];
    loop {
        let mut conns = 0;
        for (i, h) in net.handles.iter().enumerate() {
            let peers = call(h.peers()).await.unwrap_or_default();
            let out = peers
                .iter()
                .filter(|p| p.direction == Direction::Outbound)
                .count();
            conns += out;
            let ok = if i == 0 {
                peers.len() >= target.min(n - 1)
            } else {
                out >= target || peers.len() >= n - 1
            };
            if ok && reached[i].is_none() {
                reached[i] = Some(start.elapsed());
            }
        }
        let at = reached.iter().filter(|r| r.is_some()).count();
        s.nodes_at_target = at;
        if at == n {
            let t = reached.iter().flatten().max().copied().unwrap_or_default();
            s.converged = true;
            s.discovery_s = Some(round3(t.as_secs_f64()));
            net.progress.line(format!(
                "discovery: every node at its target degree after {:.2} s ({conns} connections)",
                t.as_secs_f64()
            ));
            break;
        }
        if Instant::now() >= deadline {
            let missing: Vec<String> = reached
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_none())
                .map(|(i, _)| i.to_string())
                .take(20)
                .collect();
            let msg = format!(
                "discovery did not converge within {:?}: {at}/{n} nodes at target degree (missing: {})",
                args.discovery_timeout,
                missing.join(", ")
            );
            net.progress.line(&msg);
            net.errors.push(msg);
            break;
        }
        if net.progress.due() {
            net.progress.line(format!(
                "discovery: {at}/{n} nodes at target degree, {conns} connections"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 3. Broadcasts, one at a time.
    let mut latencies = (Vec::new(), Vec::new());
    let mut complete = Vec::new();
    let mut delivered = 0;
    let mut blocks = 0;
    for k in 0..args.broadcasts {
        let origin = net.rng.below(n);
        net.seq += 1;
        let block = args.block_every > 0 && (k + 1) % args.block_every == 0;
        let msg = if block {
            blocks += 1;
            GossipMessage::Block(payload(net.seq, args.block_size as usize, &mut net.rng))
        } else {
            GossipMessage::Transaction(payload(net.seq, args.tx_size as usize, &mut net.rng))
        };
        let Some(id) = net.broadcast(origin, msg).await else {
            continue;
        };
        let deadline = Instant::now() + args.broadcast_timeout;
        let all = net.wait(deadline, |d| d.tracked[&id].count >= n - 1).await;
        let t = net.tracked.remove(&id).expect("tracked");
        delivered += t.count;
        let lat: Vec<f64> = t
            .arrivals
            .iter()
            .flatten()
            .map(|a| ms(a.duration_since(t.sent_at)))
            .collect();
        if all {
            complete.push(lat.iter().copied().fold(0.0, f64::max));
        } else {
            net.error(format!(
                "broadcast {} from node {origin} reached {}/{} nodes within {:?}",
                k + 1,
                t.count,
                n - 1,
                args.broadcast_timeout
            ));
        }
        if t.block {
            latencies.1.extend(lat);
        } else {
            latencies.0.extend(lat);
        }
        if net.progress.due() || k + 1 == args.broadcasts {
            net.progress.line(format!(
                "broadcasts: {}/{} done ({blocks} blocks), {delivered} deliveries",
                k + 1,
                args.broadcasts
            ));
        }
    }
    s.broadcasts = args.broadcasts as usize;
    s.deliveries = delivered;
    s.expected_deliveries = s.broadcasts * (n - 1);
    s.coverage = ratio(s.deliveries, s.expected_deliveries);
    let all: Vec<f64> = latencies.0.iter().chain(&latencies.1).copied().collect();
    s.propagation_ms = Percentiles::of(&all);
    s.propagation_ms_transactions = Percentiles::of(&latencies.0);
    s.propagation_ms_blocks = Percentiles::of(&latencies.1);
    s.complete_ms = Percentiles::of(&complete);
    if s.broadcasts > 0 {
        net.progress.line(format!(
            "broadcasts: coverage {:.1} %, propagation {}",
            s.coverage * 100.0,
            s.propagation_ms
        ));
    }

    // 4. Unicasts, one at a time.
    let mut acked = Vec::new();
    let mut sent_tags = Vec::new();
    for k in 0..args.unicasts {
        let from = net.rng.below(n);
        let peers = call(net.handles[from].peers()).await.unwrap_or_default();
        if peers.is_empty() {
            net.error(format!("unicast {}: node {from} has no peer", k + 1));
            s.unicast_failed += 1;
            continue;
        }
        let to = peers[net.rng.below(peers.len())].peer;
        net.seq += 1;
        let tag = net.seq;
        let data = payload(tag, 64, &mut net.rng);
        let t0 = Instant::now();
        let r = tokio::time::timeout(
            args.unicast_timeout,
            net.handles[from].unicast(to, UNICAST_KIND, data),
        )
        .await;
        match r {
            Ok(Ok(())) => {
                acked.push(ms(t0.elapsed()));
                s.unicast_delivered += 1;
                sent_tags.push((tag, net.index.get(&to).copied()));
            }
            Ok(Err(e)) => {
                s.unicast_failed += 1;
                net.error(format!("unicast {} from node {from}: {e}", k + 1));
            }
            Err(_) => {
                s.unicast_failed += 1;
                net.error(format!(
                    "unicast {} from node {from}: not acknowledged within {:?}",
                    k + 1,
                    args.unicast_timeout
                ));
            }
        }
    }
    s.unicasts = args.unicasts as usize;
    // Acknowledged means delivered: the receivers' tasks saw them at most moments later.
    let deadline = Instant::now() + Duration::from_secs(2);
    net.wait(deadline, |d| {
        sent_tags
            .iter()
            .all(|(t, _)| d.unicasts_seen.contains_key(t))
    })
    .await;
    s.unicast_received = sent_tags
        .iter()
        .filter(|(t, to)| {
            net.unicasts_seen
                .get(t)
                .is_some_and(|n| Some(n) == to.as_ref())
        })
        .count();
    if s.unicast_received < s.unicast_delivered {
        net.error(format!(
            "{} acknowledged unicasts never reached the receiver's application",
            s.unicast_delivered - s.unicast_received
        ));
    }
    s.unicast_ms = Percentiles::of(&acked);
    if s.unicasts > 0 {
        net.progress.line(format!(
            "unicasts: {}/{} delivered, ack {}",
            s.unicast_delivered, s.unicasts, s.unicast_ms
        ));
    }

    // 5. Throughput burst.
    if args.burst > 0 {
        let t0 = Instant::now();
        let mut ids = Vec::with_capacity(args.burst as usize);
        for _ in 0..args.burst {
            let origin = net.rng.below(n);
            net.seq += 1;
            let msg =
                GossipMessage::Transaction(payload(net.seq, args.tx_size as usize, &mut net.rng));
            if let Some(id) = net.broadcast(origin, msg).await {
                ids.push(id);
            }
        }
        let deadline = t0 + 2 * args.broadcast_timeout;
        net.wait(deadline, |d| {
            ids.iter().all(|id| d.tracked[id].count >= n - 1)
        })
        .await;
        let mut count = 0;
        let mut last = t0;
        for id in &ids {
            let t = net.tracked.remove(id).expect("tracked");
            count += t.count;
            if let Some(a) = t.arrivals.iter().flatten().max() {
                last = last.max(*a);
            }
        }
        let secs = last.duration_since(t0).as_secs_f64().max(1e-6);
        let expected = args.burst as usize * (n - 1);
        let th = s.throughput.insert(Throughput::default());
        th.messages = args.burst as usize;
        th.message_bytes = args.tx_size as usize;
        th.coverage = ratio(count, expected);
        th.seconds = round3(secs);
        th.messages_per_s = (ids.len() as f64 * th.coverage / secs).round();
        th.deliveries_per_s = (count as f64 / secs).round();
        if count < expected {
            net.error(format!(
                "burst: {count}/{expected} deliveries within {:?}",
                2 * args.broadcast_timeout
            ));
        }
        net.progress.line(format!(
            "throughput: {} transactions to {} nodes in {:.3} s: {:.0} messages/s, {:.0} deliveries/s",
            th.messages,
            n - 1,
            th.seconds,
            th.messages_per_s,
            th.deliveries_per_s
        ));
    }

    // 6. Figures, then shutdown.
    let mut degrees = Vec::with_capacity(n);
    let mut outbound = 0;
    for h in &net.handles {
        match call(h.stats()).await {
            Ok(st) => {
                degrees.push(st.peers);
                outbound += crate::report::directions(&st).1;
                let tr = &mut s.traffic;
                tr.bytes_sent += st.bytes_sent;
                tr.messages_sent += st.messages_sent;
                tr.dials_failed += st.counters.dials_failed;
                tr.duplicates_closed += st.counters.duplicates_closed;
                tr.gossip_duplicates += st.counters.gossip_duplicates;
                tr.gossip_dropped_queue_full += st.counters.gossip_dropped_queue_full;
                tr.gossip_prunes_sent += st.counters.gossip_prunes_sent;
                tr.gossip_announcements_sent += st.counters.gossip_announcements_sent;
                tr.gossip_ids_wanted += st.counters.gossip_ids_wanted;
                tr.gossip_grafts_sent += st.counters.gossip_grafts_sent;
                tr.unicast_retries += st.counters.unicast_retries;
            }
            Err(e) => net.errors.push(format!("stats: {e}")),
        }
    }
    s.traffic.bytes_per_s = (s.traffic.bytes_sent as f64 / start.elapsed().as_secs_f64()).round();
    if !degrees.is_empty() {
        s.degree = Degree {
            min: degrees.iter().copied().min().unwrap_or(0),
            max: degrees.iter().copied().max().unwrap_or(0),
            mean: round3(degrees.iter().sum::<usize>() as f64 / degrees.len() as f64),
            outbound_mean: round3(outbound as f64 / degrees.len() as f64),
        };
    }
    let stops: Vec<_> = net
        .handles
        .iter()
        .map(|h| {
            let h = h.clone();
            tokio::spawn(async move { h.stop(Duration::from_secs(1)).await })
        })
        .collect();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        let mut failed = Vec::new();
        for (i, t) in stops.into_iter().enumerate() {
            if !matches!(t.await, Ok(Ok(_))) {
                failed.push(i);
            }
        }
        failed
    })
    .await;
    match stopped {
        Ok(failed) if failed.is_empty() => net.progress.line(format!("stopped {n} nodes")),
        Ok(failed) => net.errors.push(format!("nodes {failed:?} failed to stop")),
        Err(_) => net
            .errors
            .push("stopping the nodes took more than 10 s".to_string()),
    }
    for t in tasks {
        t.abort();
    }

    s.errors = net.errors.len();
    s.error_messages = net.errors.iter().take(20).cloned().collect();
    s.ok = s.converged
        && s.coverage >= 1.0
        && s.throughput.as_ref().is_none_or(|t| t.coverage >= 1.0)
        && s.unicast_failed == 0
        && s.errors == 0;
    s.elapsed_s = round3(start.elapsed().as_secs_f64());
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&s).expect("the summary serializes")
        );
    } else {
        print!("{}", human(&s, &args));
    }
    if s.ok {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "devnet failed: {}",
            s.error_messages
                .first()
                .cloned()
                .unwrap_or_else(|| "checks failed".into())
        )))
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        round3(a as f64 / b as f64)
    }
}

/// The summary for people.
fn human(s: &Summary, args: &DevnetArgs) -> String {
    let mut o = String::new();
    let mut row = |k: &str, v: String| o.push_str(&format!("  {k:<14} {v}\n"));
    row(
        "nodes",
        format!(
            "{} on 127.0.0.1, target_outbound {}, started in {:.3} s",
            s.nodes, s.target_outbound, s.startup_s
        ),
    );
    row(
        "discovery",
        match s.discovery_s {
            Some(d) => format!("{d:.3} s until every node reached its target degree"),
            None => format!(
                "NOT CONVERGED: {}/{} nodes at target degree",
                s.nodes_at_target, s.nodes
            ),
        },
    );
    row(
        "degree",
        format!(
            "min {}, mean {:.1}, max {} peers (outbound mean {:.1})",
            s.degree.min, s.degree.mean, s.degree.max, s.degree.outbound_mean
        ),
    );
    let blocks = if args.block_every == 0 {
        0
    } else {
        s.broadcasts / args.block_every as usize
    };
    row(
        "broadcasts",
        format!(
            "{} ({} transactions of {} B, {blocks} blocks of {})",
            s.broadcasts,
            s.broadcasts - blocks,
            args.tx_size,
            bytes(args.block_size.into())
        ),
    );
    row(
        "coverage",
        format!(
            "{:.1} % ({}/{} deliveries)",
            s.coverage * 100.0,
            s.deliveries,
            s.expected_deliveries
        ),
    );
    row("propagation", s.propagation_ms.to_string());
    row("  transactions", s.propagation_ms_transactions.to_string());
    row("  blocks", s.propagation_ms_blocks.to_string());
    row("  complete", s.complete_ms.to_string());
    row(
        "unicasts",
        format!(
            "{} delivered, {} failed, {} received; ack {}",
            s.unicast_delivered, s.unicast_failed, s.unicast_received, s.unicast_ms
        ),
    );
    row(
        "throughput",
        match &s.throughput {
            Some(t) => format!(
                "{} transactions in {:.3} s: {:.0} messages/s, {:.0} deliveries/s, coverage {:.1} %",
                t.messages,
                t.seconds,
                t.messages_per_s,
                t.deliveries_per_s,
                t.coverage * 100.0
            ),
            None => "skipped (--burst 0)".into(),
        },
    );
    let tr = &s.traffic;
    row(
        "traffic",
        format!(
            "{} sent in {} messages ({}/s); {} failed dials, {} duplicate connections closed, {} gossip duplicates dropped",
            bytes(tr.bytes_sent),
            tr.messages_sent,
            bytes(tr.bytes_per_s as u64),
            tr.dials_failed,
            tr.duplicates_closed,
            tr.gossip_duplicates
        ),
    );
    if tr.gossip_prunes_sent + tr.gossip_announcements_sent + tr.gossip_grafts_sent > 0 {
        row(
            "tree",
            format!(
                "{} prunes, {} announcements, {} ids asked for, {} grafts",
                tr.gossip_prunes_sent,
                tr.gossip_announcements_sent,
                tr.gossip_ids_wanted,
                tr.gossip_grafts_sent
            ),
        );
    }
    row("errors", s.errors.to_string());
    for e in &s.error_messages {
        row("", e.clone());
    }
    row(
        "result",
        format!(
            "{} in {:.2} s",
            if s.ok { "OK" } else { "FAILED" },
            s.elapsed_s
        ),
    );
    format!("devnet summary\n{o}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devnet_config_is_valid_for_small_and_large_devnets() {
        for n in [2, 5, 20, 50, 200, 1000] {
            let c = devnet_config(NodeConfig::default(), n, 4);
            c.validate().unwrap();
            assert!(c.limits.max_inbound_per_ip >= n);
            assert!(c.limits.max_pending_handshakes >= n);
        }
        let c = devnet_config(NodeConfig::default(), 10, 20);
        c.validate().unwrap();
        assert_eq!(c.limits.max_outbound, 20);
    }

    #[test]
    fn payloads_are_unique_and_sized() {
        let mut r = Rng(1);
        let a = payload(1, 100, &mut r);
        let b = payload(2, 100, &mut r);
        assert_eq!(a.len(), 100);
        assert_ne!(a, b);
        assert_eq!(payload(3, 1, &mut r).len(), 16);
    }
}
