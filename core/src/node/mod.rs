//! The node level of the core: one [`Node`] owns every connection and decides whom to talk
//! to, what to send and what to refuse — the connection pool and its limits, the peer table,
//! discovery, the address book, reconnection, health, rate limits, broadcast, unicast,
//! request/response, bans, error recovery and shutdown. Like the connection below it, it is
//! pure: time and randomness are inputs, sockets are the adapter's.
//!
//! The run loop is the connection's (see the crate docs): apply one input
//! ([`Node::handle_input`], [`Node::accept`] or a command), drain [`Node::poll_output`] to
//! `None`, read [`Node::poll_timeout`], wait, repeat.

pub mod addrbook;
pub mod backoff;
mod cache;
pub mod config;
mod eviction;
pub mod ratelimit;
mod timer_queue;
mod types;
mod wants;

pub use config::*;
pub use types::*;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::addr::PeerAddr;
use crate::config::{ConfigError, ConnectionConfig};
use crate::connection::{
    CloseReason, Connection, ConnectionEvent, ConnectionOutput, ConnectionState, SendError,
    Violation,
};
use crate::handshake::Role;
use crate::hello::{Capabilities, Hello, SUPPORTED_VERSIONS};
use crate::identity::{Keypair, PeerId};
use crate::message::{
    EncodedMessage, GoodbyeReason, Message, MAX_IDS_PER_MESSAGE, MAX_PEERS_PER_MESSAGE,
};
use crate::rng::SeededRng;
use crate::time::Timestamp;

use addrbook::{AddrSource, AddressBook};
use backoff::Backoff;
use cache::{ExpiringSet, KeyedHash};
use ratelimit::{GlobalBandwidth, PeerRateLimiter, TokenBucket, Verdict};
use timer_queue::TimerQueue;
use wants::{Announced, PendingWants};

/// Node timers, kept in one ordered index so `poll_timeout` is a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The coordinator's periodic run.
    Maintenance,
    /// A connection's own deadline.
    Conn(ConnectionId),
    /// The end of a rate-limit pause.
    RateResume(ConnectionId),
    /// A unicast's next resend or final deadline.
    Unicast(u64),
    /// A request's deadline.
    Request(u64),
    /// Tree gossip: the next announcement round.
    Announce,
    /// Tree gossip: the announcement across a link that stopped pushing
    /// (`announce_delay` after its Prune).
    PruneAnnounce(ConnectionId),
    /// Tree gossip: requests for announced messages that time out now, to be made again to
    /// the next peer that announced them (see `wants`).
    WantRetry,
}

/// One connection and what the node knows about it.
//
// In the order of how often it is touched (`repr(C)`), as `Connection` is: what every
// packet and flush reads (the flags, the timer entry, the buffered total, the gossip
// marks) fills the line right after the connection's own, the rate limits come next, and
// the identity and the rarely used state last.
#[derive(Debug)]
#[repr(C)]
struct Conn {
    conn: Connection,
    // Every packet and flush.
    /// Registered in the peer table (the handshake completed and it survived duplicate
    /// resolution).
    registered: bool,
    closed: bool,
    /// Listed in `Node::sendable`.
    sendable: bool,
    /// The peer advertised [`Capabilities::LAZY_GOSSIP`]: it may be made lazy.
    lazy_gossip: bool,
    direction: Direction,
    /// The connection's buffered bytes when it was last flushed (its share of
    /// `Node::conns_buffered`).
    buffered: usize,
    /// The deadline registered in the timer index for this connection.
    timer_at: Option<Timestamp>,
    /// Last time the peer sent something new and valid (gossip we had not seen, answers).
    useful_at: Option<Timestamp>,
    /// Tree gossip: when this link last brought a gossip message we did not have yet. A
    /// link that was some message's fastest path within the last `announce_interval` is
    /// not pruned for a duplicate (see `Node::prune`).
    first_copy_at: Option<Timestamp>,
    // Every message received.
    limiter: PeerRateLimiter,
    /// Message buckets per class: gossip, requests, unicast, discovery.
    class_buckets: [TokenBucket; 4],
    peer: Option<PeerId>,
    misbehaviour: u32,
    rate_paused_until: Option<Timestamp>,
    // The rest.
    addr: SocketAddr,
    version: u32,
    agent: String,
    created_at: Timestamp,
    /// Unsolicited address budget, in milli-addresses.
    addr_budget: TokenBucket,
    answered_get_peers_at: Option<Timestamp>,
    /// Requests from this peer awaiting our answer.
    inbound_requests: BTreeSet<u64>,
    /// Our requests in flight on this connection.
    outbound_requests: usize,
    /// Tree gossip: when we last sent this peer a Prune, and last answered its plain graft
    /// with our recent ids. Each is repeated at most once per `announce_interval`, so a
    /// peer cannot make us send either over and over.
    pruned_at: Option<Timestamp>,
    graft_answered_at: Option<Timestamp>,
    /// Tree gossip: the arrival time of the newest message announced on this link after a
    /// Prune. Those announcements name each message at most once per link, so however
    /// often a peer gets the link pruned it cannot make us send more ids than arrive.
    prune_announced_upto: Option<Timestamp>,
    /// Tree gossip: the arrival time of the newest message named to this peer in an
    /// announcement round. A round names only messages that arrived after it, so each
    /// message is named to a peer at most once by the rounds, not once per round.
    round_announced_upto: Option<Timestamp>,
    /// Tree gossip: when the announcement across this link after its last Prune is due
    /// (registered in the timer index; at most one at a time); whether another Prune came
    /// after it was registered (another announcement follows it then); and whether it is
    /// the one follow-up for messages still travelling when the first was sent.
    prune_announce_at: Option<Timestamp>,
    get_peers_outstanding: bool,
    announce_again: bool,
    prune_follow_up: bool,
}

impl Conn {
    /// An established peer the application knows of (registered and connected): the
    /// connections gossip is pushed, announced and grafted on.
    fn is_gossip_peer(&self) -> bool {
        self.registered && self.conn.state() == ConnectionState::Connected
    }
}

/// A recent gossip message kept to answer IWant (tree gossip).
#[derive(Debug)]
struct HistoryEntry {
    wire: EncodedMessage,
    /// Connections it was sent to in answer to IWant: each is served at most once, so a
    /// peer cannot make us send one message over and over.
    served: Vec<ConnectionId>,
}

/// The node's output queues, borrowed apart from its connections (see
/// `Node::conn_and_queues`).
struct OutputQueues<'a> {
    outputs: &'a mut VecDeque<Output>,
    outputs_buffered: &'a mut usize,
    sendable: &'a mut VecDeque<ConnectionId>,
}

impl OutputQueues<'_> {
    /// Moves one of connection `conn`'s socket outputs to the node's queue; an event is
    /// handed back for the caller to handle.
    fn push(&mut self, conn: ConnectionId, out: ConnectionOutput) -> Option<ConnectionEvent> {
        self.outputs.push_back(match out {
            ConnectionOutput::Transmit(bytes) => {
                *self.outputs_buffered += bytes.capacity();
                Output::Transmit { conn, bytes }
            }
            ConnectionOutput::PauseRead => Output::PauseRead { conn },
            ConnectionOutput::ResumeRead => Output::ResumeRead { conn },
            ConnectionOutput::Close => Output::Close { conn },
            ConnectionOutput::Event(e) => return Some(e),
        });
        None
    }

    /// Lists open connection `id` in `Node::sendable` if it has a transmit to build and is
    /// not listed yet.
    fn list_if_sendable(&mut self, id: ConnectionId, c: &mut Conn) {
        if !c.sendable
            && c.conn.state() == ConnectionState::Connected
            && c.conn.has_transmit_ready()
        {
            c.sendable = true;
            self.sendable.push_back(id);
        }
    }
}

#[derive(Debug)]
struct Persistent {
    addr: PeerAddr,
    backoff: Backoff,
    next_attempt: Timestamp,
    conn: Option<ConnectionId>,
    /// The peer ended the last connection because it was full (Goodbye `Evicted` or
    /// `TooManyConnections`): it is redialed only while the node is short of outbound peers
    /// (see [`Node::add_persistent_peer`]).
    full: bool,
}

#[derive(Debug)]
struct PendingUnicast {
    peer: PeerId,
    kind: crate::message::AppKind,
    data: Bytes,
    attempts: u32,
    deadline: Timestamp,
    /// When the current attempt is considered lost.
    retry_at: Timestamp,
    /// The connection the last attempt went out on, if it is still open.
    sent_on: Option<ConnectionId>,
    timer_at: Timestamp,
}

#[derive(Debug)]
struct PendingRequest {
    peer: PeerId,
    conn: ConnectionId,
    deadline: Timestamp,
}

#[derive(Debug)]
struct PendingValidation {
    from: PeerId,
    message: GossipMessage,
    deadline: Timestamp,
}

#[derive(Debug)]
struct ShutdownState {
    deadline: Timestamp,
    report: ShutdownReport,
    queued_at_start: u64,
    done: bool,
}

/// The application's verdict on a gossip message in `validate` relay mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Valid: relay it.
    Accept,
    /// Invalid: drop it (the sender is not penalised for relaying; report it with
    /// [`Node::report_invalid_payload`] if the application blames it).
    Reject,
    /// Not judged: drop it without relaying.
    Ignore,
}

/// Options of one broadcast.
#[derive(Default)]
pub struct BroadcastOptions<'a> {
    /// Send to at most this many peers (the healthiest first); `None` = all.
    pub fanout: Option<usize>,
    /// Peers to leave out.
    pub exclude: Vec<PeerId>,
    /// Only peers for which this returns true.
    pub filter: Option<&'a dyn Fn(&PeerInfo) -> bool>,
}

/// The node state machine. See the module docs.
//
// The fields are in the order of how often they are touched (`repr(C)`), as `Connection`'s
// are: a simulation of thousands of nodes finds a node's state cold in the cache at each
// input, so what every input reads is packed into the first lines, what gossip reads next,
// and the identity, address book, bans and configuration last.
#[derive(Debug)]
#[repr(C)]
pub struct Node {
    // Every input, flush and poll.
    /// Boxed: entries are large and B-tree nodes reserve room for eleven of them.
    conns: BTreeMap<ConnectionId, Box<Conn>>,
    outputs: VecDeque<Output>,
    /// Connections touched since the last flush (unsorted, may repeat; a flush sorts and
    /// de-duplicates once, cheaper than keeping a set ordered on every touch).
    dirty: Vec<ConnectionId>,
    /// The previous flush's batch, kept for its allocation.
    dirty_batch: Vec<ConnectionId>,
    /// Open connections with queued messages whose frames are not built yet. They are
    /// built one transmit at a time as the caller polls outputs, round-robin, so a caller
    /// writes the first frame of a broadcast while the next ones are still to be encrypted
    /// rather than after all of them.
    sendable: VecDeque<ConnectionId>,
    /// Bytes of the `Transmit`s waiting in `outputs`.
    outputs_buffered: usize,
    /// The connections' buffered bytes as of their last flush.
    conns_buffered: usize,
    /// The most `outputs_buffered + conns_buffered` ever reached (see
    /// [`Node::peak_buffered_bytes`]).
    peak_buffered: usize,
    timers: TimerQueue<Timer>,
    shutdown: Option<ShutdownState>,
    global_bandwidth: GlobalBandwidth,
    // Every gossip message and announcement.
    seen: ExpiringSet<MessageId>,
    /// Tree gossip: recent messages by id, to announce and to answer IWant.
    history: BTreeMap<MessageId, HistoryEntry>,
    /// The same ids in the order they were added, to expire them.
    history_order: VecDeque<(Timestamp, MessageId)>,
    /// Payload bytes held in `history`.
    history_bytes: usize,
    /// Tree gossip: the lazy connections, sorted, kept by `set_eager` and `on_closed`.
    /// Relaying skips them and announcing picks from them without visiting every
    /// connection.
    lazy: Vec<ConnectionId>,
    /// Tree gossip: when a gossip connection last opened or closed or a link last turned
    /// eager or lazy; announcement rounds go to fewer peers `history` after it (see
    /// `settled_announce_peers`).
    links_changed_at: Option<Timestamp>,
    /// Tree gossip: ids asked for with IWant, and who to ask next if the request times
    /// out (`want_timeout`) unanswered.
    pending_wants: PendingWants,
    /// Our broadcasts still being written, by token (oldest first), and their ids.
    tracked: BTreeMap<u64, TrackedBroadcast>,
    tracked_ids: BTreeMap<MessageId, u64>,
    next_broadcast: u64,
    peers: BTreeMap<PeerId, ConnectionId>,
    /// Connections not closed, by [`Direction`] (see `count_direction`).
    open_by_direction: [usize; 2],
    rng: SeededRng,
    counters: NodeCounters,
    // The rest, the configuration last (its hot settings are a few scattered reads).
    conn_config: Arc<ConnectionConfig>,
    hello: Arc<Hello>,
    keypair: Keypair,
    local_id: PeerId,
    next_conn: u64,
    /// The times of the `Timer::Maintenance` entries in `timers` (the periodic run and any
    /// earlier wake-ups for due redials): a run replaces them all, and this finds them
    /// without walking every connection's deadline.
    maintenance_at: Vec<Timestamp>,
    /// Where the grid of `timer_granularity` steps starts (the node's creation).
    timer_origin: Timestamp,
    addrbook: AddressBook,
    persistent: BTreeMap<SocketAddr, Persistent>,
    /// Our own addresses (learned from self-connections), never dialed.
    self_addrs: BTreeSet<SocketAddr>,
    peer_bans: BTreeMap<PeerId, (Timestamp, BanReason)>,
    ip_bans: BTreeMap<IpAddr, (Timestamp, BanReason)>,
    pending_validation: BTreeMap<MessageId, PendingValidation>,
    unicasts: BTreeMap<u64, PendingUnicast>,
    next_unicast: u64,
    delivered: ExpiringSet<(PeerId, u64)>,
    requests: BTreeMap<u64, PendingRequest>,
    next_request: u64,
    late_requests: ExpiringSet<(PeerId, u64)>,
    last_get_peers: Option<Timestamp>,
    failures: BTreeMap<FailureKind, u64>,
    recoveries: BTreeMap<Recovery, u64>,
    /// Traffic of closed connections, so node totals survive them.
    closed_traffic: [u64; 4],
    /// Queued messages connections dropped when they closed.
    dropped_at_close: u64,
    /// When the coordinator last looked for an unhealthy peer to replace.
    last_health_check: Option<Timestamp>,
    config: NodeConfig,
}

#[derive(Debug)]
struct TrackedBroadcast {
    id: MessageId,
    /// One entry per copy, sorted by connection id so a write report finds its copy by
    /// binary search (a broadcast to n peers gets n reports: a scan would be quadratic).
    peers: Vec<(PeerId, ConnectionId, BroadcastStatus)>,
    /// Copies still `Queued`; the broadcast is complete when this reaches zero.
    queued: usize,
}

impl TrackedBroadcast {
    fn new(id: MessageId, mut peers: Vec<(PeerId, ConnectionId, BroadcastStatus)>) -> Self {
        peers.sort_unstable_by_key(|(_, c, _)| *c);
        let queued = peers
            .iter()
            .filter(|(_, _, s)| *s == BroadcastStatus::Queued)
            .count();
        TrackedBroadcast { id, peers, queued }
    }

    /// Moves the copy on `conn` from `Queued` to `to`; false if it had none still queued.
    fn settle(&mut self, conn: ConnectionId, to: BroadcastStatus) -> bool {
        let Ok(i) = self.peers.binary_search_by_key(&conn, |(_, c, _)| *c) else {
            return false;
        };
        let status = &mut self.peers[i].2;
        if *status != BroadcastStatus::Queued {
            return false;
        }
        *status = to;
        self.queued -= 1;
        true
    }
}

/// Version of the [`Node::snapshot`] format.
pub const NODE_SNAPSHOT_VERSION: u32 = 1;

/// The persisted node state: CBOR map `{version, address_book, bans}`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSnapshot {
    version: u32,
    /// The address book's own snapshot bytes.
    address_book: Bytes,
    bans: Vec<BanEntry>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BanEntry {
    peer: Option<PeerId>,
    ip: Option<IpAddr>,
    remaining_ms: u64,
    reason: BanReason,
}

/// Why [`Node::restore`] refused a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeSnapshotError {
    /// Not CBOR of the expected layout.
    #[error("malformed node snapshot: {0}")]
    Malformed(String),
    /// Another format version.
    #[error(
        "node snapshot version {0} is not supported (this build reads {NODE_SNAPSHOT_VERSION})"
    )]
    WrongVersion(u32),
    /// The address book inside is invalid.
    #[error(transparent)]
    AddressBook(#[from] addrbook::SnapshotError),
}

/// The first point at or after `t` of the grid of `step`s that starts at `origin` (see
/// [`NodeConfig::timer_granularity`]); `t` itself without a grid or before it starts.
fn on_grid(origin: Timestamp, step: Duration, t: Timestamp) -> Timestamp {
    let step = step.as_nanos().min(u64::MAX as u128) as u64;
    if step == 0 || t <= origin {
        return t;
    }
    let steps = (t.as_nanos() - origin.as_nanos()).div_ceil(step);
    Timestamp::from_nanos(origin.as_nanos().saturating_add(steps.saturating_mul(step)))
}

/// Content hash of a gossip message: SHA-256 over a kind tag and the payload.
pub fn message_id(message: &GossipMessage) -> MessageId {
    let mut h = Sha256::new();
    match message {
        GossipMessage::Transaction(d) => {
            h.update([0u8]);
            h.update(d);
        }
        GossipMessage::Block(d) => {
            h.update([1u8]);
            h.update(d);
        }
        GossipMessage::App { kind, data } => {
            h.update([2u8]);
            h.update(kind.to_be_bytes());
            h.update(data);
        }
    }
    MessageId(h.finalize().into())
}

fn gossip_to_message(m: &GossipMessage) -> Message {
    match m {
        GossipMessage::Transaction(d) => Message::Transaction { data: d.clone() },
        GossipMessage::Block(d) => Message::Block { data: d.clone() },
        GossipMessage::App { kind, data } => Message::App {
            kind: *kind,
            data: data.clone(),
        },
    }
}

fn request_to_message(request_id: u64, r: &Request) -> Message {
    match r {
        Request::GetBlock(hash) => Message::GetBlock {
            request_id,
            hash: hash.clone(),
        },
        Request::GetTransaction(hash) => Message::GetTransaction {
            request_id,
            hash: hash.clone(),
        },
        Request::App { kind, data } => Message::Request {
            request_id,
            kind: *kind,
            data: data.clone(),
        },
    }
}

impl Node {
    /// A node with `config`, identity `keypair`, all randomness from `seed`, starting at
    /// `now`. Validates the configuration. Bootstrap peers are dialed on the first
    /// coordinator run (at `now`).
    ///
    /// **A fixed seed in production means key reuse**: adapters seed from OS entropy.
    pub fn new(
        config: NodeConfig,
        keypair: Keypair,
        seed: [u8; 32],
        now: Timestamp,
    ) -> Result<Node, ConfigError> {
        config.validate()?;
        let mut rng = SeededRng::from_seed(seed);
        let keyed = KeyedHash::new(crate::rng::labelled_u64s(&seed, b"hash tables"));
        let addrbook = AddressBook::new(config.address_book.clone(), rng.derive_seed(b"addrbook"));
        // Only a tree-gossip node understands being made lazy: a flood node advertising it
        // would be pruned and then hear nothing from its tree peers.
        let mut capabilities = config
            .capabilities
            .without(Capabilities::LAZY_GOSSIP | Capabilities::AES_GCM);
        if config.gossip.mode == GossipMode::Tree {
            capabilities = capabilities | Capabilities::LAZY_GOSSIP;
        }
        // The transport suite is agreed from both Hellos: asking for AES-256-GCM is this bit.
        if config.cipher.asks_for_aes_gcm() {
            capabilities = capabilities | Capabilities::AES_GCM;
        }
        let hello = Hello {
            network_id: config.network_id.clone(),
            versions: SUPPORTED_VERSIONS.to_vec(),
            capabilities,
            listen_addrs: config.listen_addrs.clone(),
            agent: config.agent.clone(),
        };
        // Unicast ids start at a random point per run: a restarted node must not reuse ids a
        // receiver still remembers from its previous run (it would acknowledge without
        // delivering). Half the range leaves room to count up without wrapping.
        let first_unicast = rng.next_u64() >> 1;
        let mut node = Node {
            conn_config: Arc::new(config.connection.clone()),
            hello: Arc::new(hello),
            local_id: keypair.peer_id(),
            keypair,
            rng,
            conns: BTreeMap::new(),
            peers: BTreeMap::new(),
            next_conn: 0,
            outputs: VecDeque::new(),
            dirty: Vec::new(),
            sendable: VecDeque::new(),
            dirty_batch: Vec::new(),
            outputs_buffered: 0,
            conns_buffered: 0,
            peak_buffered: 0,
            timers: TimerQueue::new(),
            maintenance_at: Vec::new(),
            timer_origin: now,
            addrbook,
            persistent: BTreeMap::new(),
            self_addrs: BTreeSet::new(),
            peer_bans: BTreeMap::new(),
            ip_bans: BTreeMap::new(),
            seen: ExpiringSet::new(
                config.gossip.seen_cache_size,
                config.gossip.seen_ttl,
                keyed.clone(),
            ),
            pending_validation: BTreeMap::new(),
            unicasts: BTreeMap::new(),
            next_unicast: first_unicast,
            delivered: ExpiringSet::new(
                config.unicast.dedup_cache_size,
                config.unicast.dedup_ttl,
                keyed.clone(),
            ),
            requests: BTreeMap::new(),
            next_request: 0,
            late_requests: ExpiringSet::new(4096, config.requests.timeout * 3, keyed.clone()),
            global_bandwidth: GlobalBandwidth::new(&config.rate_limit, now),
            last_get_peers: None,
            shutdown: None,
            counters: NodeCounters::default(),
            failures: BTreeMap::new(),
            recoveries: BTreeMap::new(),
            closed_traffic: [0; 4],
            dropped_at_close: 0,
            tracked: BTreeMap::new(),
            tracked_ids: BTreeMap::new(),
            next_broadcast: 0,
            history: BTreeMap::new(),
            history_order: VecDeque::new(),
            history_bytes: 0,
            pending_wants: PendingWants::new(
                config.gossip.max_pending_wants,
                config.gossip.want_timeout,
                keyed,
            ),
            open_by_direction: [0; 2],
            last_health_check: None,
            lazy: Vec::new(),
            links_changed_at: None,
            config,
        };
        for addr in node.config.bootstrap.clone() {
            node.add_persistent_peer(now, addr);
        }
        node.wake_maintenance(now);
        if node.tree_gossip() {
            node.timers
                .insert((now + node.config.gossip.announce_interval, Timer::Announce));
        }
        Ok(node)
    }

    // ----- getters -----

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.local_id
    }

    /// The configuration in force.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The connection behind `conn`, if open.
    pub fn connection(&self, conn: ConnectionId) -> Option<&Connection> {
        self.conns.get(&conn).map(|c| &c.conn)
    }

    /// Whether `peer` is connected and registered.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The address book.
    pub fn address_book(&self) -> &AddressBook {
        &self.addrbook
    }

    /// Whether `shutdown` was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Established peers.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers
            .values()
            .filter_map(|id| self.peer_info(*id))
            .collect()
    }

    fn peer_info(&self, id: ConnectionId) -> Option<PeerInfo> {
        let c = self.conns.get(&id)?;
        Some(PeerInfo {
            peer: c.peer?,
            conn: id,
            addr: c.addr,
            direction: c.direction,
            state: c.conn.state(),
            agent: c.agent.clone(),
            version: c.version,
            persistent: self.persistent.contains_key(&c.addr),
            health: self.health(c),
            misbehaviour: c.misbehaviour,
            gossip_push: self.is_eager(id),
            stats: c.conn.stats().clone(),
        })
    }

    /// Health score 0..=100: availability (share of keepalive pings answered, and 0 while
    /// two or more in a row go unanswered) scaled by latency (smoothed RTT against
    /// `health.bad_rtt`), so a peer that stops answering scores 0 whatever its past, and a
    /// slow one at most half.
    fn health(&self, c: &Conn) -> u32 {
        let s = c.conn.stats();
        let availability = if s.pings_unanswered_in_a_row >= 2 {
            0
        } else {
            (s.pongs_matched * 100)
                .checked_div(s.pings_sent)
                .map_or(100, |a| a.min(100) as u32)
        };
        let bad = self.config.health.bad_rtt.as_nanos().max(1);
        let latency = match s.srtt {
            None => 100,
            Some(r) => 100 - (r.as_nanos() * 100 / bad).min(100) as u32,
        };
        availability * (50 + latency / 2) / 100
    }

    /// A snapshot of every figure the node keeps.
    pub fn stats(&self, now: Timestamp) -> NetworkStats {
        let mut totals = self.closed_traffic;
        for c in self.conns.values() {
            let s = c.conn.stats();
            totals[0] += s.bytes_sent;
            totals[1] += s.bytes_received;
            totals[2] += s.messages_sent;
            totals[3] += s.messages_received;
        }
        let o = self.occupancy();
        NetworkStats {
            now,
            peers: o.peers,
            inbound: o.inbound,
            outbound: o.outbound,
            handshaking: o.handshaking,
            bytes_sent: totals[0],
            bytes_received: totals[1],
            messages_sent: totals[2],
            messages_received: totals[3],
            counters: self.counters.clone(),
            failures: self.failures.clone(),
            recoveries: self.recoveries.clone(),
            address_book: self.addrbook.stats(),
            active_bans: o.active_bans,
            pending_unicasts: o.pending_unicasts,
            pending_requests: o.pending_requests,
            buffered_bytes: o.buffered_bytes,
            peak_buffered_bytes: self.peak_buffered,
            per_peer: self.peers(),
            events_dropped: 0,
            sends_dropped: 0,
        }
    }

    /// How full the bounded structures are (see [`Occupancy`]). Cheap enough to call for
    /// every node of a large simulation every simulated second; the same figures as
    /// [`Node::stats`] gives.
    pub fn occupancy(&self) -> Occupancy {
        let mut o = Occupancy::default();
        for c in self.conns.values() {
            match c.direction {
                Direction::Inbound => o.inbound += 1,
                Direction::Outbound => o.outbound += 1,
            }
            if matches!(
                c.conn.state(),
                ConnectionState::Connecting | ConnectionState::Handshaking
            ) {
                o.handshaking += 1;
            }
        }
        let book = self.addrbook.stats();
        o.peers = self.peers.len();
        o.address_book_new = book.new;
        o.address_book_tried = book.tried;
        o.active_bans = self.peer_bans.len() + self.ip_bans.len();
        o.pending_unicasts = self.unicasts.len();
        o.pending_requests = self.requests.len();
        o.buffered_bytes = self.buffered_bytes();
        o
    }

    /// Established peers and their connections, in peer id order: what [`Node::peers`]
    /// lists, without building a [`PeerInfo`] for each.
    pub fn peer_connections(&self) -> impl Iterator<Item = (PeerId, ConnectionId)> + '_ {
        self.peers.iter().map(|(p, c)| (*p, *c))
    }

    /// Bytes the node holds in buffers, by the core's own accounting: every connection's
    /// buffers plus undrained outputs. Bounded by the configuration (see the README). Kept
    /// as a running total, so reading it costs nothing however many peers the node has (a
    /// simulator reads it for every node every simulated second).
    pub fn buffered_bytes(&self) -> usize {
        let total = self.conns_buffered + self.outputs_buffered;
        debug_assert_eq!(total, self.buffered_bytes_by_scan());
        total
    }

    /// [`Node::buffered_bytes`] summed afresh, to check the running total against.
    fn buffered_bytes_by_scan(&self) -> usize {
        let outs: usize = self
            .outputs
            .iter()
            .map(|o| match o {
                Output::Transmit { bytes, .. } => bytes.capacity(),
                _ => 0,
            })
            .sum();
        outs + self
            .conns
            .values()
            .map(|c| c.conn.buffered_bytes())
            .sum::<usize>()
    }

    // ----- the run loop -----

    /// Applies one input. Drain [`Node::poll_output`] afterwards.
    pub fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        match input {
            Input::Connected { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.conn.handle_connected(now);
                    self.dirty.push(conn);
                }
            }
            Input::Received { conn, bytes } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.conn.handle_bytes(now, bytes);
                    self.dirty.push(conn);
                    if let Some(resume) = self.global_bandwidth.on_bytes(now, bytes.len() as u64) {
                        self.rate_pause(now, conn, resume);
                    }
                }
            }
            Input::Written { conn, bytes } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.conn.handle_written(now, bytes);
                    self.dirty.push(conn);
                }
            }
            Input::Closed { conn, error } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.conn.handle_closed(now, error);
                    self.dirty.push(conn);
                }
            }
            Input::Timeout => self.handle_timeout(now),
        }
        self.flush(now);
    }

    /// The next output, or `None` when there is nothing to do. Call until `None` after every
    /// input and command. An open connection's frames are built here, one transmit per
    /// connection in turn, as they are asked for: an adapter that writes each `Transmit`
    /// before polling the next has the first copy of a broadcast on the wire while the
    /// others are still to be encrypted.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            if let Some(out) = self.outputs.pop_front() {
                if let Output::Transmit { bytes, .. } = &out {
                    self.outputs_buffered -= bytes.capacity();
                }
                return Some(out);
            }
            let id = self.sendable.pop_front()?;
            self.build_transmit(id);
        }
    }

    /// Builds `id`'s next transmit into the output queue, and lists the connection again
    /// (at the back, after the others) if it has more to send.
    fn build_transmit(&mut self, id: ConnectionId) {
        let Some((c, mut queues)) = self.conn_and_queues(id) else {
            return;
        };
        c.sendable = false;
        // One transmit, then what building it made besides: at most a pause or a resume of
        // reading, never an event (an open connection's events were drained before it was
        // listed).
        let built = c.conn.poll_output().into_iter();
        for out in built.chain(std::iter::from_fn(|| c.conn.poll_made_output())) {
            let stray = queues.push(id, out);
            debug_assert!(stray.is_none(), "an event while building a transmit");
        }
        queues.list_if_sendable(id, c);
        self.reindex(id);
    }

    /// Connection `id` and the node's output queues, borrowed apart so a connection's
    /// outputs can move to the queues under one lookup.
    fn conn_and_queues(&mut self, id: ConnectionId) -> Option<(&mut Conn, OutputQueues<'_>)> {
        let Node {
            conns,
            outputs,
            outputs_buffered,
            sendable,
            ..
        } = self;
        let c = conns.get_mut(&id)?;
        Some((
            c,
            OutputQueues {
                outputs,
                outputs_buffered,
                sendable,
            },
        ))
    }

    /// The most bytes this node's buffers ever held at once, by the same accounting as
    /// [`Node::buffered_bytes`], sampled whenever a connection's buffers change. A
    /// simulator or a monitor reads it to learn the transient peaks a periodic sample of
    /// `buffered_bytes` misses (outputs are usually drained within one step).
    pub fn peak_buffered_bytes(&self) -> usize {
        self.peak_buffered
    }

    /// When to pass [`Input::Timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.shutdown.as_ref().is_some_and(|s| s.done) {
            return None;
        }
        self.timers.earliest()
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        while let Some((_, timer)) = self.timers.pop_due(now) {
            match timer {
                // The run cancels every recorded maintenance time, this one included.
                Timer::Maintenance => self.maintenance(now),
                Timer::Conn(id) => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.timer_at = None;
                        c.conn.handle_timeout(now);
                        self.dirty.push(id);
                    }
                }
                Timer::RateResume(id) => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        if c.rate_paused_until.is_some_and(|r| r <= now) {
                            c.rate_paused_until = None;
                            c.conn.set_read_paused(now, false);
                            self.dirty.push(id);
                        }
                    }
                }
                Timer::Unicast(id) => self.unicast_timer(now, id),
                Timer::Request(id) => self.request_timeout(now, id),
                Timer::Announce => self.announce(now),
                Timer::PruneAnnounce(id) => self.prune_announce(now, id),
                Timer::WantRetry => self.retry_wants(now),
            }
        }
    }

    /// Drains every connection touched since the last flush, handling its events, until
    /// nothing is left to do.
    fn flush(&mut self, now: Timestamp) {
        while !self.dirty.is_empty() {
            // Handlers below may touch connections again: those land in a later batch.
            let mut batch =
                std::mem::replace(&mut self.dirty, std::mem::take(&mut self.dirty_batch));
            batch.sort_unstable();
            batch.dedup();
            for id in batch.drain(..) {
                self.flush_connection(now, id);
            }
            self.dirty_batch = batch;
        }
        self.check_shutdown_complete();
    }

    /// Drains one connection's outputs into the node's queue, handling its events.
    fn flush_connection(&mut self, now: Timestamp, id: ConnectionId) {
        // Socket outputs go straight to the queue under one lookup; an event ends the
        // borrow so its handler can touch any connection, then draining resumes.
        while let Some((c, mut queues)) = self.conn_and_queues(id) {
            // An open connection's frames wait for `poll_output` (see `Node::sendable`);
            // any other's are built now, so a closing connection's last frames are in the
            // queue before its Close.
            let lazy = c.conn.state() == ConnectionState::Connected;
            let mut event = None;
            while let Some(out) = if lazy {
                c.conn.poll_made_output()
            } else {
                c.conn.poll_output()
            } {
                event = queues.push(id, out);
                if event.is_some() {
                    break;
                }
            }
            match event {
                Some(e) => self.on_connection_event(now, id, e),
                None => {
                    queues.list_if_sendable(id, c);
                    break;
                }
            }
        }
        self.reindex(id);
    }

    /// Updates a connection's entry in the timer index, or removes a closed connection.
    fn reindex(&mut self, id: ConnectionId) {
        let (origin, step) = (self.timer_origin, self.config.timer_granularity);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        // Every change to a connection's buffers passes through a flush, which ends here.
        let buffered = c.conn.buffered_bytes();
        self.conns_buffered = self.conns_buffered - c.buffered + buffered;
        c.buffered = buffered;
        self.peak_buffered = self
            .peak_buffered
            .max(self.conns_buffered + self.outputs_buffered);
        let next = c.conn.poll_timeout().map(|t| on_grid(origin, step, t));
        if next != c.timer_at {
            if let Some(old) = c.timer_at {
                self.timers.remove(&(old, Timer::Conn(id)));
            }
            if let Some(t) = next {
                self.timers.insert((t, Timer::Conn(id)));
            }
            c.timer_at = next;
        }
        if c.closed {
            let c = self.conns.remove(&id).expect("present");
            self.conns_buffered -= c.buffered;
            if let Some(t) = c.timer_at {
                self.timers.remove(&(t, Timer::Conn(id)));
            }
            if let Some(t) = c.rate_paused_until {
                self.timers.remove(&(t, Timer::RateResume(id)));
            }
            if let Some(t) = c.prune_announce_at {
                self.timers.remove(&(t, Timer::PruneAnnounce(id)));
            }
            let s = c.conn.stats();
            self.closed_traffic[0] += s.bytes_sent;
            self.closed_traffic[1] += s.bytes_received;
            self.closed_traffic[2] += s.messages_sent;
            self.closed_traffic[3] += s.messages_received;
            self.dropped_at_close += s.messages_dropped;
        }
    }

    fn count_failure(&mut self, kind: FailureKind, recovery: Recovery) {
        *self.failures.entry(kind).or_default() += 1;
        *self.recoveries.entry(recovery).or_default() += 1;
    }

    // ----- connections -----

    fn new_conn(
        &mut self,
        now: Timestamp,
        role: Role,
        addr: SocketAddr,
        dialed: Option<PeerAddr>,
    ) -> ConnectionId {
        let id = ConnectionId(self.next_conn);
        self.next_conn += 1;
        let seed = self.rng.derive_seed(b"connection");
        let conn = Connection::new(
            role,
            self.conn_config.clone(),
            self.hello.clone(),
            &self.keypair,
            dialed.and_then(|d| d.peer_id),
            seed,
            now,
        );
        let d = &self.config.discovery;
        let direction = match role {
            Role::Initiator => Direction::Outbound,
            Role::Responder => Direction::Inbound,
        };
        self.conns.insert(
            id,
            Box::new(Conn {
                conn,
                addr,
                direction,
                peer: None,
                registered: false,
                agent: String::new(),
                version: 0,
                created_at: now,
                useful_at: None,
                limiter: PeerRateLimiter::new(&self.config.rate_limit, now),
                class_buckets: {
                    let c = &self.config.rate_limit.per_class;
                    [c.gossip, c.requests, c.unicast, c.discovery]
                        .map(|r| TokenBucket::new(r, r.saturating_mul(2), now))
                },
                rate_paused_until: None,
                addr_budget: TokenBucket::new(
                    d.unsolicited_addrs_per_ksec,
                    d.unsolicited_addrs_burst.saturating_mul(1000),
                    now,
                ),
                get_peers_outstanding: false,
                answered_get_peers_at: None,
                inbound_requests: BTreeSet::new(),
                outbound_requests: 0,
                misbehaviour: 0,
                timer_at: None,
                closed: false,
                buffered: 0,
                sendable: false,
                lazy_gossip: false,
                pruned_at: None,
                first_copy_at: None,
                graft_answered_at: None,
                prune_announced_upto: None,
                round_announced_upto: None,
                prune_announce_at: None,
                announce_again: false,
                prune_follow_up: false,
            }),
        );
        self.open_by_direction[direction as usize] += 1;
        self.dirty.push(id);
        id
    }

    fn pending_handshakes(&self) -> usize {
        self.conns
            .values()
            .filter(|c| {
                !c.closed
                    && matches!(
                        c.conn.state(),
                        ConnectionState::Connecting | ConnectionState::Handshaking
                    )
            })
            .count()
    }

    /// Connections not closed in direction `d`: a counter kept by `new_conn` and
    /// `on_closed`, since the coordinator asks every run and a scan touches every
    /// connection's memory.
    fn count_direction(&self, d: Direction) -> usize {
        let n = self.open_by_direction[d as usize];
        debug_assert_eq!(
            n,
            self.conns
                .values()
                .filter(|c| !c.closed && c.direction == d)
                .count()
        );
        n
    }

    fn open_conns(&self) -> usize {
        self.count_direction(Direction::Inbound) + self.count_direction(Direction::Outbound)
    }

    fn is_banned_peer(&self, now: Timestamp, peer: &PeerId) -> bool {
        self.peer_bans
            .get(peer)
            .is_some_and(|(until, _)| *until > now)
    }

    fn is_banned_ip(&self, now: Timestamp, ip: &IpAddr) -> bool {
        self.ip_bans.get(ip).is_some_and(|(until, _)| *until > now)
    }

    /// A socket was accepted from `remote`. Returns the id to use in inputs for it, or why
    /// the node refuses it (then drop the socket). May evict another inbound peer to make
    /// room.
    pub fn accept(
        &mut self,
        now: Timestamp,
        remote: SocketAddr,
    ) -> Result<ConnectionId, AcceptError> {
        let result = self.try_accept(now, remote);
        match &result {
            Ok(_) => self.counters.inbound_accepted += 1,
            Err(_) => self.counters.inbound_refused += 1,
        }
        self.flush(now);
        result
    }

    fn try_accept(
        &mut self,
        now: Timestamp,
        remote: SocketAddr,
    ) -> Result<ConnectionId, AcceptError> {
        if self.shutdown.is_some() {
            return Err(AcceptError::ShuttingDown);
        }
        if self.is_banned_ip(now, &remote.ip()) {
            return Err(AcceptError::Banned);
        }
        let from_ip = self
            .conns
            .values()
            .filter(|c| {
                !c.closed && c.direction == Direction::Inbound && c.addr.ip() == remote.ip()
            })
            .count();
        if from_ip >= self.config.limits.max_inbound_per_ip {
            return Err(AcceptError::PerIpLimit);
        }
        if self.pending_handshakes() >= self.config.limits.max_pending_handshakes {
            return Err(AcceptError::TooManyHandshakes);
        }
        let l = &self.config.limits;
        if self.count_direction(Direction::Inbound) >= l.max_inbound
            || self.open_conns() >= l.max_connections
        {
            let Some(victim) = self.select_eviction() else {
                return Err(AcceptError::Full);
            };
            self.counters.evicted += 1;
            self.close_conn(now, victim, GoodbyeReason::Evicted);
        }
        Ok(self.new_conn(now, Role::Responder, remote, None))
    }

    /// Dials `addr` now (a manual connection, not redialed when it drops; see
    /// [`Node::add_persistent_peer`] for that). Emits [`Output::Dial`].
    pub fn connect(
        &mut self,
        now: Timestamp,
        addr: PeerAddr,
    ) -> Result<ConnectionId, CommandError> {
        let r = self.check_dial(now, &addr).map(|()| self.dial(now, addr));
        self.flush(now);
        r
    }

    fn check_dial(&self, now: Timestamp, addr: &PeerAddr) -> Result<(), CommandError> {
        if self.shutdown.is_some() {
            return Err(CommandError::ShuttingDown);
        }
        if addr.peer_id == Some(self.local_id)
            || self.self_addrs.contains(&addr.socket)
            || self.config.listen_addrs.contains(&addr.socket)
        {
            return Err(CommandError::SelfTarget);
        }
        if self.is_banned_ip(now, &addr.ip())
            || addr.peer_id.is_some_and(|p| self.is_banned_peer(now, &p))
        {
            return Err(CommandError::Banned);
        }
        if addr.peer_id.is_some_and(|p| self.peers.contains_key(&p))
            || self
                .conns
                .values()
                .any(|c| !c.closed && c.direction == Direction::Outbound && c.addr == addr.socket)
        {
            return Err(CommandError::AlreadyConnected);
        }
        if self.count_direction(Direction::Outbound) >= self.config.limits.max_outbound
            || self.open_conns() >= self.config.limits.max_connections
        {
            return Err(CommandError::ConnectionLimit);
        }
        Ok(())
    }

    fn dial(&mut self, now: Timestamp, addr: PeerAddr) -> ConnectionId {
        let id = self.new_conn(now, Role::Initiator, addr.socket, Some(addr));
        self.addrbook.mark_attempt(now, &addr.socket);
        self.counters.dials += 1;
        self.outputs.push_back(Output::Dial {
            conn: id,
            addr: addr.socket,
        });
        id
    }

    /// Adds a peer that is dialed now and redialed with backoff whenever it drops, for as
    /// long as the node runs (bootstrap and manually added peers).
    ///
    /// A persistent peer that closes the connection because it is full (Goodbye `Evicted` or
    /// `TooManyConnections`) has asked the node to go elsewhere: it is redialed only while
    /// the node has fewer outbound connections than `limits.target_outbound` (after trying
    /// its address book) or than it has persistent peers, and that close counts as a
    /// failure for the backoff however long the connection lasted.
    /// Otherwise every node holding a popular bootstrap peer would, on being evicted, come
    /// back and evict another, for ever.
    pub fn add_persistent_peer(&mut self, now: Timestamp, addr: PeerAddr) {
        self.addrbook.add(now, addr, AddrSource::Manual);
        self.persistent.entry(addr.socket).or_insert(Persistent {
            addr,
            backoff: Backoff::new(self.config.reconnect.clone()),
            next_attempt: now,
            conn: None,
            full: false,
        });
        self.schedule_maintenance(now);
    }

    /// Runs the coordinator now and asks every connected peer for addresses.
    pub fn discover(&mut self, now: Timestamp) {
        let ids: Vec<ConnectionId> = self.peers.values().copied().collect();
        for id in ids {
            self.send_get_peers(id);
        }
        self.schedule_maintenance(now);
        self.flush(now);
    }

    fn schedule_maintenance(&mut self, now: Timestamp) {
        self.cancel_maintenance();
        self.wake_maintenance(now);
    }

    /// Makes the maintenance run happen at `at` (besides any run already scheduled).
    fn wake_maintenance(&mut self, at: Timestamp) {
        if self.timers.insert((at, Timer::Maintenance)) {
            self.maintenance_at.push(at);
        }
    }

    /// Drops every scheduled maintenance run.
    fn cancel_maintenance(&mut self) {
        for at in std::mem::take(&mut self.maintenance_at) {
            self.timers.remove(&(at, Timer::Maintenance));
        }
    }

    /// Disconnects `peer` with a Goodbye. Persistent peers are redialed later.
    pub fn disconnect(&mut self, now: Timestamp, peer: &PeerId) -> Result<(), CommandError> {
        let id = *self
            .peers
            .get(peer)
            .ok_or(CommandError::UnknownPeer(*peer))?;
        self.close_conn(now, id, GoodbyeReason::Normal);
        self.flush(now);
        Ok(())
    }

    fn close_conn(&mut self, now: Timestamp, id: ConnectionId, reason: GoodbyeReason) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.conn.close(now, reason);
            self.dirty.push(id);
        }
    }

    fn send_to(&mut self, id: ConnectionId, msg: Message) -> Result<(), SendError> {
        let c = self.conns.get_mut(&id).ok_or(SendError::Closed)?;
        let r = c.conn.send(msg);
        self.dirty.push(id);
        r
    }

    fn send_get_peers(&mut self, id: ConnectionId) {
        if self
            .send_to(
                id,
                Message::GetPeers {
                    max: MAX_PEERS_PER_MESSAGE as u32,
                },
            )
            .is_ok()
        {
            if let Some(c) = self.conns.get_mut(&id) {
                c.get_peers_outstanding = true;
            }
            self.counters.get_peers_sent += 1;
        }
    }

    // ----- connection events -----

    fn on_connection_event(&mut self, now: Timestamp, id: ConnectionId, e: ConnectionEvent) {
        match e {
            ConnectionEvent::Established {
                peer,
                hello,
                version,
            } => self.on_established(now, id, peer, *hello, version),
            ConnectionEvent::Message(m) => self.on_message(now, id, m),
            ConnectionEvent::Closed(reason) => self.on_closed(now, id, reason),
            ConnectionEvent::Written(token) => self.on_written(token, id),
        }
    }

    fn on_established(
        &mut self,
        now: Timestamp,
        id: ConnectionId,
        peer: PeerId,
        hello: Hello,
        version: u32,
    ) {
        if self.is_banned_peer(now, &peer) {
            self.close_conn(now, id, GoodbyeReason::Banned);
            return;
        }
        if self.shutdown.is_some() {
            self.close_conn(now, id, GoodbyeReason::Normal);
            return;
        }
        // Two connections to one identity: keep the one dialed by the smaller id, so both
        // sides keep the same one; with the same dialer, keep the older.
        if let Some(&existing) = self.peers.get(&peer) {
            let c = &self.conns[&id];
            if c.direction == Direction::Outbound {
                // Whichever connection stays, this dial reached the identity it wanted: a
                // proven address. Otherwise the book would count it a failed attempt and
                // skip it for `retry_interval_secs` (a node restarted from its book would
                // not find this peer again for that long).
                let addr = c.addr;
                self.addrbook.mark_success(now, &addr, peer);
            }
            let dir_new = self.conns[&id].direction;
            let dir_old = self.conns[&existing].direction;
            let dialer = |d: Direction| match d {
                Direction::Outbound => self.local_id,
                Direction::Inbound => peer,
            };
            let keep_new = dir_new != dir_old && dialer(dir_new) < dialer(dir_old);
            self.counters.duplicates_closed += 1;
            if keep_new {
                self.peers.remove(&peer);
                if let Some(c) = self.conns.get_mut(&existing) {
                    c.registered = false;
                }
                // The application saw this peer connect on the old connection: tell it that
                // one is gone before the new one is announced.
                self.outputs
                    .push_back(Output::Event(Event::PeerDisconnected {
                        peer,
                        conn: existing,
                        reason: CloseReason::LocalRequest(GoodbyeReason::DuplicateConnection),
                    }));
                self.close_conn(now, existing, GoodbyeReason::DuplicateConnection);
            } else {
                self.close_conn(now, id, GoodbyeReason::DuplicateConnection);
                return;
            }
        }
        let c = self
            .conns
            .get_mut(&id)
            .expect("event from a live connection");
        c.peer = Some(peer);
        c.registered = true;
        self.links_changed_at = Some(now);
        c.agent = hello.agent.clone();
        c.version = version;
        c.lazy_gossip = hello.capabilities.contains(Capabilities::LAZY_GOSSIP);
        let direction = c.direction;
        let addr = c.addr;
        self.peers.insert(peer, id);
        match direction {
            Direction::Outbound => {
                self.counters.dials_succeeded += 1;
                self.addrbook.mark_success(now, &addr, peer);
                if let Some(p) = self.persistent.get_mut(&addr) {
                    // The backoff resets only once the connection has proven stable
                    // (`reconnect.stable_after_ms`).
                    p.backoff.on_connected(now);
                    p.conn = Some(id);
                }
                // Ask outbound peers for addresses (as Bitcoin does): they are the ones we
                // chose, so their answers are harder to poison.
                self.send_get_peers(id);
            }
            Direction::Inbound => {
                // Learn where the peer listens; an unspecified IP means "the one you see".
                let mut new = 0;
                for a in hello
                    .listen_addrs
                    .iter()
                    .take(crate::hello::MAX_LISTEN_ADDRS)
                {
                    let mut a = *a;
                    if a.ip().is_unspecified() {
                        a.set_ip(addr.ip());
                    }
                    // Only the address it connects from is the peer's own; others it
                    // announces count against its netgroup like any gossip.
                    let source = if a.ip() == addr.ip() {
                        AddrSource::Inbound
                    } else {
                        AddrSource::Peer(addr.ip())
                    };
                    if self.addrbook.add(now, PeerAddr::pinned(peer, a), source) {
                        new += 1;
                    }
                }
                if new > 0 {
                    self.outputs
                        .push_back(Output::Event(Event::AddressesDiscovered {
                            from: Some(peer),
                            new,
                        }));
                }
            }
        }
        self.outputs.push_back(Output::Event(Event::PeerConnected {
            peer,
            conn: id,
            addr,
            direction,
            agent: hello.agent,
        }));
        // Unicasts waiting for this peer (a reconnection) go out again now.
        let waiting: Vec<u64> = self
            .unicasts
            .iter()
            .filter(|(_, u)| u.peer == peer && u.sent_on.is_none())
            .map(|(k, _)| *k)
            .collect();
        for u in waiting {
            self.transmit_unicast(now, u);
        }
    }

    fn on_closed(&mut self, now: Timestamp, id: ConnectionId, reason: CloseReason) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.closed {
            self.open_by_direction[c.direction as usize] -= 1;
        }
        c.closed = true;
        let (peer, registered, direction, addr) = (c.peer, c.registered, c.direction, c.addr);
        let established = c.conn.stats().connected_since.is_some();
        let was_eager = match self.lazy.binary_search(&id) {
            Ok(i) => {
                self.lazy.remove(i);
                false
            }
            Err(_) => true,
        };
        if registered {
            self.links_changed_at = Some(now);
            if let Some(p) = peer {
                if self.peers.get(&p) == Some(&id) {
                    self.peers.remove(&p);
                }
                self.outputs
                    .push_back(Output::Event(Event::PeerDisconnected {
                        peer: p,
                        conn: id,
                        reason: reason.clone(),
                    }));
            }
            if was_eager {
                self.graft_all(now);
            }
        }
        if reason == CloseReason::SelfConnection {
            self.self_addrs.insert(addr);
            self.addrbook.remove(&addr);
        }
        // Misbehaviour: only what the peer demonstrably did wrong, never silence (a partition
        // looks the same) and never what it relayed.
        if let CloseReason::ProtocolViolation(v) = &reason {
            let score = match v {
                Violation::Chunk(_) => self.config.bans.invalid_chunking,
                _ => self.config.bans.protocol_violation,
            };
            self.count_failure(FailureKind::ProtocolViolation, Recovery::Ban);
            self.misbehave(now, id, score, format!("{v}"));
        }
        if direction == Direction::Outbound && !established {
            self.counters.dials_failed += 1;
            if !matches!(
                reason,
                CloseReason::SelfConnection | CloseReason::LocalRequest(_)
            ) {
                self.addrbook.mark_failure(now, &addr);
            }
            self.outputs.push_back(Output::Event(Event::DialFailed {
                addr,
                reason: reason.clone(),
            }));
        }
        if established && !matches!(reason, CloseReason::LocalRequest(_)) {
            let persistent = self.persistent.contains_key(&addr);
            self.count_failure(
                FailureKind::ConnectionLost,
                if persistent {
                    Recovery::Retry
                } else {
                    Recovery::ReplacePeer
                },
            );
        } else if !established && direction == Direction::Outbound {
            let persistent = self.persistent.contains_key(&addr);
            self.count_failure(
                FailureKind::DialFailed,
                if persistent {
                    Recovery::Retry
                } else {
                    Recovery::Drop
                },
            );
        }
        if let Some(p) = self.persistent.get_mut(&addr) {
            if p.conn == Some(id) || direction == Direction::Outbound {
                p.conn = None;
                let mut rng = self.rng.derive(b"backoff");
                if matches!(
                    reason,
                    CloseReason::RemoteGoodbye {
                        reason: GoodbyeReason::Evicted | GoodbyeReason::TooManyConnections,
                        ..
                    }
                ) {
                    p.backoff.on_refused();
                    p.full = true;
                } else {
                    p.full = false;
                }
                p.next_attempt = p.backoff.on_failure(now, &mut rng);
                let at = p.next_attempt;
                self.wake_maintenance(at);
            }
        }
        // Requests in flight on this connection fail now.
        let failed: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.conn == id)
            .map(|(k, _)| *k)
            .collect();
        for r in failed {
            let req = self.requests.remove(&r).expect("present");
            self.timers.remove(&(req.deadline, Timer::Request(r)));
            self.outputs.push_back(Output::Event(Event::Response {
                id: RequestId(r),
                peer: req.peer,
                result: Err(RequestFailure::Disconnected),
            }));
        }
        // Copies of our broadcasts still queued on it are lost.
        let mut touched = Vec::new();
        for (token, t) in self.tracked.iter_mut() {
            if t.settle(id, BroadcastStatus::Failed) {
                self.counters.broadcast_copies_failed += 1;
                touched.push(*token);
            }
        }
        for token in touched {
            self.finish_tracked(token);
        }
        // Unicasts sent on it wait for the peer to come back (or their deadline).
        for u in self.unicasts.values_mut() {
            if u.sent_on == Some(id) {
                u.sent_on = None;
            }
        }
        if self.shutdown.is_none() {
            self.schedule_maintenance(now);
        }
    }

    fn misbehave(&mut self, now: Timestamp, id: ConnectionId, score: u32, what: String) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.misbehaviour = c.misbehaviour.saturating_add(score);
        if c.misbehaviour < self.config.bans.threshold {
            return;
        }
        let (peer, ip) = (c.peer, c.addr.ip());
        let reason = BanReason::Misbehaviour(what);
        let duration = self.config.bans.duration;
        if let Some(p) = peer {
            self.ban_peer_inner(now, p, duration, reason.clone());
        }
        // Loopback addresses are never IP-banned, so one bad local process cannot cut a
        // local devnet off from itself.
        if !ip.is_loopback() {
            self.ban_ip_inner(now, ip, duration, reason);
        }
    }

    fn make_room_for_ban(&mut self) {
        let max = self.config.bans.max_bans;
        while self.peer_bans.len() + self.ip_bans.len() >= max.max(1) {
            let p = self
                .peer_bans
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, (t, _))| (*k, *t));
            let i = self
                .ip_bans
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, (t, _))| (*k, *t));
            match (p, i) {
                (Some((pk, pt)), Some((_, it))) if pt <= it => {
                    self.peer_bans.remove(&pk);
                }
                (_, Some((ik, _))) => {
                    self.ip_bans.remove(&ik);
                }
                (Some((pk, _)), None) => {
                    self.peer_bans.remove(&pk);
                }
                (None, None) => break,
            }
        }
    }

    fn ban_peer_inner(
        &mut self,
        now: Timestamp,
        peer: PeerId,
        duration: Duration,
        reason: BanReason,
    ) {
        if !self.peer_bans.contains_key(&peer) {
            self.make_room_for_ban();
        }
        self.peer_bans
            .insert(peer, (now + duration, reason.clone()));
        self.counters.bans += 1;
        self.outputs.push_back(Output::Event(Event::Banned {
            peer: Some(peer),
            ip: None,
            duration,
            reason,
        }));
        if let Some(&id) = self.peers.get(&peer) {
            self.close_conn(now, id, GoodbyeReason::Banned);
        }
        // Fail unicasts to a banned peer at once.
        let ids: Vec<u64> = self
            .unicasts
            .iter()
            .filter(|(_, u)| u.peer == peer)
            .map(|(k, _)| *k)
            .collect();
        for u in ids {
            self.fail_unicast(u, UnicastFailure::Banned);
        }
    }

    fn ban_ip_inner(&mut self, now: Timestamp, ip: IpAddr, duration: Duration, reason: BanReason) {
        if !self.ip_bans.contains_key(&ip) {
            self.make_room_for_ban();
        }
        self.ip_bans.insert(ip, (now + duration, reason.clone()));
        self.counters.bans += 1;
        self.outputs.push_back(Output::Event(Event::Banned {
            peer: None,
            ip: Some(ip),
            duration,
            reason,
        }));
        let ids: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.closed && c.addr.ip() == ip)
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            self.close_conn(now, id, GoodbyeReason::Banned);
        }
    }

    /// Bans `peer` for `duration` (disconnecting it). Bans expire by themselves.
    pub fn ban(&mut self, now: Timestamp, peer: PeerId, duration: Duration) {
        self.ban_peer_inner(now, peer, duration, BanReason::Manual);
        self.flush(now);
    }

    /// Bans an IP address for `duration` (disconnecting every connection from it).
    pub fn ban_ip(&mut self, now: Timestamp, ip: IpAddr, duration: Duration) {
        self.ban_ip_inner(now, ip, duration, BanReason::Manual);
        self.flush(now);
    }

    /// Lifts a ban on `peer`. Returns whether there was one.
    pub fn unban(&mut self, peer: &PeerId) -> bool {
        self.peer_bans.remove(peer).is_some()
    }

    /// Lifts a ban on `ip`. Returns whether there was one.
    pub fn unban_ip(&mut self, ip: &IpAddr) -> bool {
        self.ip_bans.remove(ip).is_some()
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, now: Timestamp, peer: &PeerId) -> bool {
        self.is_banned_peer(now, peer)
    }

    /// The application found a payload from `peer` invalid (the layer never judges
    /// content itself): adds the invalid-payload score, which may ban the peer.
    pub fn report_invalid_payload(
        &mut self,
        now: Timestamp,
        peer: &PeerId,
    ) -> Result<(), CommandError> {
        let id = *self
            .peers
            .get(peer)
            .ok_or(CommandError::UnknownPeer(*peer))?;
        let score = self.config.bans.invalid_payload;
        self.misbehave(
            now,
            id,
            score,
            "invalid payload reported by the application".into(),
        );
        self.flush(now);
        Ok(())
    }

    fn rate_pause(&mut self, now: Timestamp, id: ConnectionId, resume_at: Timestamp) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(old) = c.rate_paused_until {
            if old >= resume_at {
                return;
            }
            self.timers.remove(&(old, Timer::RateResume(id)));
        } else {
            c.conn.set_read_paused(now, true);
            self.counters.rate_limit_pauses += 1;
            *self.failures.entry(FailureKind::RateLimited).or_default() += 1;
            *self.recoveries.entry(Recovery::Pause).or_default() += 1;
        }
        c.rate_paused_until = Some(resume_at);
        self.timers.insert((resume_at, Timer::RateResume(id)));
        self.dirty.push(id);
    }

    // ----- messages -----

    fn on_message(&mut self, now: Timestamp, id: ConnectionId, msg: Message) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(peer) = c.peer.filter(|_| c.registered) else {
            return;
        };
        let class = match &msg {
            Message::Transaction { .. }
            | Message::Block { .. }
            | Message::App { .. }
            | Message::IHave { .. }
            | Message::IWant { .. }
            | Message::Prune => Some(0),
            Message::GetBlock { .. } | Message::GetTransaction { .. } | Message::Request { .. } => {
                Some(1)
            }
            Message::Unicast { .. } | Message::Direct { .. } => Some(2),
            Message::GetPeers { .. } | Message::Peers { .. } => Some(3),
            _ => None,
        };
        let mut class_resume = None;
        if let Some(k) = class {
            let bucket = &mut c.class_buckets[k];
            if !bucket.try_take(now, 1) {
                // Over the class rate: the message is still handled (it was read), and
                // reading pauses until the class has room again.
                bucket.force_take(now, 1);
                class_resume =
                    Some(now + bucket.time_until(now, 0).unwrap_or(Duration::from_secs(1)));
            }
        }
        let verdict = c.limiter.on_message(now, msg.encoded_len() as u64);
        if let Some(resume) = class_resume {
            self.rate_pause(now, id, resume);
        }
        match verdict {
            Verdict::Allowed => {}
            Verdict::Pause { resume_at } => self.rate_pause(now, id, resume_at),
            Verdict::Abuse => {
                let score = self.config.bans.rate_limit_abuse;
                self.misbehave(now, id, score, "sustained rate-limit abuse".into());
            }
        }
        match msg {
            Message::Transaction { data } => {
                self.on_gossip(now, id, peer, GossipMessage::Transaction(data))
            }
            Message::Block { data } => self.on_gossip(now, id, peer, GossipMessage::Block(data)),
            Message::App { kind, data } => {
                self.on_gossip(now, id, peer, GossipMessage::App { kind, data })
            }
            Message::Unicast {
                message_id,
                kind,
                data,
            } => {
                // Ack first: the application gets the event in this same step.
                let _ = self.send_to(id, Message::Ack { message_id });
                if self.delivered.insert(now, (peer, message_id)) {
                    self.outputs.push_back(Output::Event(Event::Unicast {
                        from: peer,
                        kind,
                        data,
                    }));
                } else {
                    self.counters.unicast_duplicates += 1;
                }
            }
            Message::Direct { kind, data } => {
                self.counters.directs_received += 1;
                self.outputs.push_back(Output::Event(Event::Direct {
                    from: peer,
                    kind,
                    data,
                }));
            }
            // An Ack for an id we no longer track is a late duplicate: harmless, ignored.
            Message::Ack { message_id }
                if self
                    .unicasts
                    .get(&message_id)
                    .is_some_and(|u| u.peer == peer) =>
            {
                let u = self.unicasts.remove(&message_id).expect("present");
                self.timers
                    .remove(&(u.timer_at, Timer::Unicast(message_id)));
                self.counters.unicasts_delivered += 1;
                self.outputs
                    .push_back(Output::Event(Event::UnicastDelivered {
                        id: UnicastId(message_id),
                        peer,
                    }));
            }
            Message::GetBlock { request_id, hash } => {
                self.on_request(id, peer, request_id, Request::GetBlock(hash))
            }
            Message::GetTransaction { request_id, hash } => {
                self.on_request(id, peer, request_id, Request::GetTransaction(hash))
            }
            Message::Request {
                request_id,
                kind,
                data,
            } => self.on_request(id, peer, request_id, Request::App { kind, data }),
            Message::Response { request_id, data } => {
                self.on_response(now, id, peer, request_id, Ok(data))
            }
            Message::NotFound { request_id } => {
                self.on_response(now, id, peer, request_id, Err(RequestFailure::NotFound))
            }
            Message::GetPeers { max } => self.on_get_peers(now, id, max),
            Message::Peers { addrs } => self.on_peers(now, id, peer, addrs),
            Message::IHave { ids } => self.on_ihave(now, id, ids),
            Message::IWant { ids } => self.on_iwant(now, id, ids),
            Message::Prune => self.on_prune(now, id),
            _ => {}
        }
    }

    fn on_request(&mut self, id: ConnectionId, peer: PeerId, request_id: u64, request: Request) {
        let cap = self.config.requests.max_inbound_per_peer;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.inbound_requests.len() >= cap || !c.inbound_requests.insert(request_id) {
            // Over the cap (or a reused id): refused with NotFound, not an error.
            self.counters.requests_refused += 1;
            let _ = self.send_to(id, Message::NotFound { request_id });
            return;
        }
        self.outputs.push_back(Output::Event(Event::Request {
            id: InboundRequestId {
                conn: id,
                request_id,
            },
            from: peer,
            request,
        }));
    }

    /// Answers a peer's request: `Some(data)` sends a Response, `None` a NotFound.
    pub fn respond(
        &mut self,
        now: Timestamp,
        id: InboundRequestId,
        answer: Option<Bytes>,
    ) -> Result<(), CommandError> {
        let c = self
            .conns
            .get_mut(&id.conn)
            .ok_or(CommandError::UnknownId)?;
        if !c.inbound_requests.remove(&id.request_id) {
            return Err(CommandError::UnknownId);
        }
        let msg = match answer {
            Some(data) => Message::Response {
                request_id: id.request_id,
                data,
            },
            None => Message::NotFound {
                request_id: id.request_id,
            },
        };
        let r = self.send_to(id.conn, msg).map_err(|e| self.send_error(e));
        self.flush(now);
        r
    }

    fn send_error(&mut self, e: SendError) -> CommandError {
        match e {
            SendError::TooLarge { len, max } => CommandError::TooLarge { len, max },
            SendError::QueueFull => {
                self.count_failure(FailureKind::QueueFull, Recovery::Drop);
                CommandError::Full("the peer's send queue")
            }
            SendError::InvalidField(f) => CommandError::InvalidField(f),
            _ => CommandError::ShuttingDown,
        }
    }

    fn on_response(
        &mut self,
        now: Timestamp,
        id: ConnectionId,
        peer: PeerId,
        request_id: u64,
        result: Result<Bytes, RequestFailure>,
    ) {
        match self.requests.get(&request_id) {
            Some(r) if r.peer == peer => {
                let r = self.requests.remove(&request_id).expect("present");
                self.timers
                    .remove(&(r.deadline, Timer::Request(request_id)));
                if let Some(c) = self.conns.get_mut(&r.conn) {
                    c.outbound_requests = c.outbound_requests.saturating_sub(1);
                    if result.is_ok() {
                        c.useful_at = Some(now);
                    }
                }
                match &result {
                    Ok(_) => self.counters.responses += 1,
                    Err(_) => self.counters.not_found += 1,
                }
                self.outputs.push_back(Output::Event(Event::Response {
                    id: RequestId(request_id),
                    peer,
                    result,
                }));
            }
            _ if self.late_requests.contains(now, &(peer, request_id)) => {
                // An answer that arrived after our timeout: honest, just slow.
            }
            _ => {
                self.counters.unsolicited_responses += 1;
                let score = self.config.bans.unsolicited_response;
                self.misbehave(now, id, score, "unsolicited response".into());
            }
        }
    }

    /// Sends a request to `peer`; the answer arrives as [`Event::Response`] with the
    /// returned id (data, NotFound, timeout or disconnection — exactly one).
    pub fn request(
        &mut self,
        now: Timestamp,
        peer: &PeerId,
        request: Request,
    ) -> Result<RequestId, CommandError> {
        if self.shutdown.is_some() {
            return Err(CommandError::ShuttingDown);
        }
        let id = *self
            .peers
            .get(peer)
            .ok_or(CommandError::UnknownPeer(*peer))?;
        let c = &self.conns[&id];
        if c.outbound_requests >= self.config.requests.max_in_flight_per_peer {
            return Err(CommandError::Full("requests in flight to this peer"));
        }
        let request_id = self.next_request;
        let msg = request_to_message(request_id, &request);
        self.send_to(id, msg).map_err(|e| self.send_error(e))?;
        self.next_request += 1;
        let deadline = now + self.config.requests.timeout;
        self.requests.insert(
            request_id,
            PendingRequest {
                peer: *peer,
                conn: id,
                deadline,
            },
        );
        self.timers.insert((deadline, Timer::Request(request_id)));
        if let Some(c) = self.conns.get_mut(&id) {
            c.outbound_requests += 1;
        }
        self.counters.requests_sent += 1;
        self.flush(now);
        Ok(RequestId(request_id))
    }

    fn request_timeout(&mut self, now: Timestamp, request_id: u64) {
        let Some(r) = self.requests.get(&request_id) else {
            return;
        };
        if r.deadline > now {
            return;
        }
        let r = self.requests.remove(&request_id).expect("present");
        if let Some(c) = self.conns.get_mut(&r.conn) {
            c.outbound_requests = c.outbound_requests.saturating_sub(1);
        }
        self.late_requests.insert(now, (r.peer, request_id));
        self.counters.request_timeouts += 1;
        self.count_failure(FailureKind::RequestTimeout, Recovery::Drop);
        self.outputs.push_back(Output::Event(Event::Response {
            id: RequestId(request_id),
            peer: r.peer,
            result: Err(RequestFailure::Timeout),
        }));
    }

    // ----- gossip -----

    fn on_gossip(
        &mut self,
        now: Timestamp,
        id: ConnectionId,
        from: PeerId,
        message: GossipMessage,
    ) {
        let mid = message_id(&message);
        if !self.seen.insert(now, mid) {
            self.counters.gossip_duplicates += 1;
            self.prune(now, id);
            return;
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.useful_at = Some(now);
            c.first_copy_at = Some(now);
        }
        self.outputs.push_back(Output::Event(Event::Gossip {
            id: mid,
            from,
            message: message.clone(),
        }));
        match self.config.gossip.relay {
            RelayMode::Auto => self.relay(now, mid, from, &message),
            RelayMode::Validate => {
                self.expire_validation(now);
                if self.pending_validation.len() >= self.config.gossip.max_pending_validation {
                    self.counters.gossip_rejected += 1;
                    return;
                }
                self.pending_validation.insert(
                    mid,
                    PendingValidation {
                        from,
                        message,
                        deadline: now + self.config.gossip.validation_timeout,
                    },
                );
            }
        }
    }

    fn expire_validation(&mut self, now: Timestamp) {
        let before = self.pending_validation.len();
        self.pending_validation.retain(|_, p| p.deadline > now);
        self.counters.gossip_rejected += (before - self.pending_validation.len()) as u64;
    }

    /// The application's verdict on gossip `id` (relay mode `validate`). Accepted messages
    /// are relayed to every peer but the one they came from.
    pub fn validation_result(
        &mut self,
        now: Timestamp,
        id: MessageId,
        verdict: Validation,
    ) -> Result<(), CommandError> {
        self.expire_validation(now);
        let p = self
            .pending_validation
            .remove(&id)
            .ok_or(CommandError::UnknownId)?;
        match verdict {
            Validation::Accept => self.relay(now, id, p.from, &p.message),
            Validation::Reject | Validation::Ignore => self.counters.gossip_rejected += 1,
        }
        self.flush(now);
        Ok(())
    }

    fn relay(&mut self, now: Timestamp, id: MessageId, from: PeerId, message: &GossipMessage) {
        let fanout = match self.config.gossip.relay_fanout {
            0 => None,
            n => Some(n),
        };
        let report = self.send_gossip(
            now,
            id,
            message,
            BroadcastOptions {
                fanout,
                exclude: vec![from],
                filter: None,
            },
            None,
        );
        self.counters.relayed += report
            .iter()
            .filter(|(_, _, s)| *s == BroadcastStatus::Queued)
            .count() as u64;
    }

    /// Queues `message` (id `mid`) for the peers `opts` selects — in tree mode only the
    /// eager ones; the lazy ones hear of it in the next announcement rounds.
    fn send_gossip(
        &mut self,
        now: Timestamp,
        mid: MessageId,
        message: &GossipMessage,
        opts: BroadcastOptions<'_>,
        token: Option<u64>,
    ) -> Vec<(PeerId, ConnectionId, BroadcastStatus)> {
        let tree = self.tree_gossip();
        let mut targets: Vec<(u32, u64, PeerId, ConnectionId)> = Vec::new();
        for (peer, id) in &self.peers {
            if opts.exclude.contains(peer) || (tree && self.lazy.binary_search(id).is_ok()) {
                continue;
            }
            let c = &self.conns[id];
            if c.conn.state() != ConnectionState::Connected {
                continue;
            }
            if let Some(f) = opts.filter {
                match self.peer_info(*id) {
                    Some(info) if f(&info) => {}
                    _ => continue,
                }
            }
            let health = if opts.fanout.is_some() {
                self.health(c)
            } else {
                0
            };
            targets.push((health, 0, *peer, *id));
        }
        if let Some(n) = opts.fanout {
            if n < targets.len() {
                // Healthiest first; random order among equals so load spreads.
                for t in targets.iter_mut() {
                    t.1 = self.rng.next_u64();
                }
                targets.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                targets.truncate(n);
            }
        }
        // Encoded once, shared by every peer's queue.
        let Ok(wire) = gossip_to_message(message).encoded() else {
            return Vec::new();
        };
        if tree {
            self.remember(now, mid, &wire);
        }
        let mut out = Vec::with_capacity(targets.len());
        for (_, _, peer, id) in targets {
            let sent = match (self.conns.get_mut(&id), token) {
                (Some(c), Some(t)) => c.conn.send_tracked(wire.clone(), t),
                (Some(c), None) => c.conn.send_encoded(wire.clone()),
                (None, _) => Err(SendError::Closed),
            };
            self.dirty.push(id);
            let status = match sent {
                Ok(()) => BroadcastStatus::Queued,
                Err(_) => {
                    if tree && self.conns.get(&id).is_some_and(|c| c.lazy_gossip) {
                        // Lazy on our side, so the next announcements tell it what it
                        // missed; its IWant will graft it back.
                        self.make_lazy(now, id);
                    }
                    self.counters.gossip_dropped_queue_full += 1;
                    self.count_failure(FailureKind::QueueFull, Recovery::Drop);
                    BroadcastStatus::DroppedQueueFull
                }
            };
            out.push((peer, id, status));
        }
        out
    }

    /// Whether gossip travels in tree mode (see [`GossipMode`]).
    fn tree_gossip(&self) -> bool {
        self.config.gossip.mode == GossipMode::Tree
    }

    /// Tree gossip: whether new messages are pushed to connection `id` (else only
    /// announced). Every connection is eager until pruned.
    fn is_eager(&self, id: ConnectionId) -> bool {
        self.lazy.binary_search(&id).is_err()
    }

    /// Marks connection `id` eager or lazy (its membership of `Node::lazy`), and a change
    /// as the node's latest link change (see `links_changed_at`). Returns whether anything
    /// changed.
    fn set_eager(&mut self, now: Timestamp, id: ConnectionId, eager: bool) -> bool {
        if self.conns.get(&id).is_none_or(|c| c.closed) {
            return false;
        }
        let changed = match self.lazy.binary_search(&id) {
            Ok(i) if eager => {
                self.lazy.remove(i);
                true
            }
            Err(i) if !eager => {
                self.lazy.insert(i, id);
                true
            }
            _ => false,
        };
        if changed {
            self.links_changed_at = Some(now);
        }
        changed
    }

    /// Tree gossip: a peer sent us a message we already had, so one of the paths to us is
    /// redundant. If the peer can be made lazy (the link is not our last eager one, and
    /// brought no message first within the last `announce_interval`), it is, and it is
    /// asked to do the same. A
    /// peer already lazy on our side that still pushes missed our Prune (a full queue, or
    /// a Prune that crossed its graft): it is asked again, at most once per
    /// `announce_interval`.
    fn prune(&mut self, now: Timestamp, id: ConnectionId) {
        if !self.tree_gossip() {
            return;
        }
        let every = self.config.gossip.announce_interval;
        let eager = self.is_eager(id);
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        if !c.lazy_gossip || (!eager && c.pruned_at.is_some_and(|t| now < t + every)) {
            return;
        }
        if eager && !self.has_eager_link(Some(id)) {
            // Our last pushing link: keep it, or we would hear of new messages only through
            // announcements (see `make_lazy`).
            return;
        }
        if eager && c.first_copy_at.is_some_and(|t| now < t + every) {
            // The fastest path for some message lately: redundant for this message's
            // origin, not for every origin. With many origins broadcasting at once, pruning
            // such links splits the tree faster than announcements graft it back, and most
            // messages then arrive by announcement instead of by push.
            return;
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.pruned_at = Some(now);
        }
        self.make_lazy(now, id);
        if self.send_to(id, Message::Prune).is_ok() {
            self.counters.gossip_prunes_sent += 1;
        }
    }

    /// Tree gossip: the peer stops pushing to us on this connection, so we stop pushing on
    /// it too (a flood peer never prunes; a Prune from one is ignored).
    fn on_prune(&mut self, now: Timestamp, id: ConnectionId) {
        if self.tree_gossip() && self.conns.get(&id).is_some_and(|c| c.lazy_gossip) {
            self.make_lazy(now, id);
        }
    }

    /// Tree gossip: registers the announcement across link `id`, which just stopped
    /// pushing (a Prune either way, or a full queue), `announce_delay` to twice that from
    /// now. If one is already pending, it
    /// keeps its time (the split it may mend came first) and another follows it, for what
    /// arrives after this Prune.
    fn schedule_prune_announce(&mut self, now: Timestamp, id: ConnectionId) {
        let delay = self.config.gossip.announce_delay;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.prune_announce_at.is_some() {
            c.announce_again = true;
            return;
        }
        // Spread over [delay, 2 × delay): the first link across a split to announce
        // repairs it, and the part behind it has what it missed before the others announce,
        // so it is not pulled over every link at once.
        let spread = delay.as_nanos().min(u64::MAX as u128) as u64;
        let at = now + delay + Duration::from_nanos(self.rng.below(spread.max(1)));
        c.prune_announce_at = Some(at);
        self.timers.insert((at, Timer::PruneAnnounce(id)));
    }

    /// Tree gossip: the announcement across a link pruned `announce_delay` or more ago. If
    /// the Prune (or one crossing it elsewhere in the cycle) split the pushing links, this
    /// link joins the two parts: the peer asks for what its part missed, and its IWant
    /// grafts the link back. A link pushing again by now needs nothing.
    fn prune_announce(&mut self, now: Timestamp, id: ConnectionId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.prune_announce_at = None;
        let again = std::mem::take(&mut c.announce_again);
        let follow_up = std::mem::take(&mut c.prune_follow_up);
        let (usable, upto) = (c.is_gossip_peer(), c.prune_announced_upto);
        if !usable || self.is_eager(id) || self.shutdown.is_some() {
            return;
        }
        self.expire_history(now);
        let newest = self.send_ihaves(now, id, self.config.gossip.announce_delay, upto);
        if let (Some(c), Some(t)) = (self.conns.get_mut(&id), newest) {
            c.prune_announced_upto = Some(t);
        }
        if again {
            self.schedule_prune_announce(now, id);
            return;
        }
        // Messages that arrived since the Prune and were still travelling were left out; if
        // a split keeps them from the peer's part, nothing else would announce them across
        // this link. One follow-up names them once they have settled (and no more follow
        // this one, so a link pruned once is not announced on for ever).
        let delay = self.config.gossip.announce_delay;
        let Some(&(newest, _)) = self.history_order.back() else {
            return;
        };
        if follow_up || newest + delay <= now {
            return;
        }
        if let Some(c) = self.conns.get_mut(&id) {
            let at = newest + delay;
            c.prune_announce_at = Some(at);
            c.prune_follow_up = true;
            self.timers.insert((at, Timer::PruneAnnounce(id)));
        }
    }

    /// Tree gossip: whether some gossip peer but `except` is pushed to (eager).
    fn has_eager_link(&self, except: Option<ConnectionId>) -> bool {
        self.conns
            .iter()
            .any(|(id, c)| Some(*id) != except && c.is_gossip_peer() && self.is_eager(*id))
    }

    /// Tree gossip: stops pushing to connection `id`. Every demotion passes here, because a
    /// node whose every link is lazy hears of new messages only through announcements, up
    /// to `announce_interval` late, and its own broadcasts reach no peer at all until then.
    /// Its own prunes never take its last eager link, but a Prune from the peer (both ends
    /// of a cycle can prune at once) or a full queue during a push can; then one other lazy
    /// peer, drawn at random, is grafted at once. At most one graft per demotion, and only
    /// while no eager link is left: a peer alternating grafts and Prunes moves one link at
    /// a time.
    ///
    /// A demotion may also split the pushing links (see `announce_delay`), so the
    /// announcement across this link is registered here too.
    fn make_lazy(&mut self, now: Timestamp, id: ConnectionId) {
        if !self.set_eager(now, id, false) || self.shutdown.is_some() {
            return;
        }
        if !self.has_eager_link(None) {
            let candidates: Vec<ConnectionId> = self
                .lazy
                .iter()
                .copied()
                .filter(|c| *c != id && self.conns.get(c).is_some_and(|c| c.is_gossip_peer()))
                .collect();
            if !candidates.is_empty() {
                let pick = candidates[self.rng.below(candidates.len() as u64) as usize];
                self.graft(now, pick);
            }
        }
        self.schedule_prune_announce(now, id);
    }

    /// Tree gossip: makes connection `id` eager and asks the peer to push to us again (an
    /// IWant without ids).
    fn graft(&mut self, now: Timestamp, id: ConnectionId) {
        self.set_eager(now, id, true);
        if self.send_to(id, Message::IWant { ids: Vec::new() }).is_ok() {
            self.counters.gossip_grafts_sent += 1;
        }
    }

    /// Tree gossip: a peer that pushed to us is gone, and with it perhaps our only path
    /// from part of the network. Every lazy peer is asked to push again (an IWant without
    /// ids); the duplicates that follow prune the tree back to shape. Without this the
    /// nodes behind the lost link would depend on random announcements alone.
    fn graft_all(&mut self, now: Timestamp) {
        if !self.tree_gossip() || self.shutdown.is_some() {
            return;
        }
        for id in std::mem::take(&mut self.lazy) {
            if self.conns.get(&id).is_some_and(|c| c.is_gossip_peer()) {
                self.graft(now, id);
            }
        }
    }

    /// Tree gossip: keeps a message we pushed or relayed, to announce it to lazy peers and
    /// to answer their IWant, within `history` and `max_history_bytes`.
    fn remember(&mut self, now: Timestamp, id: MessageId, wire: &EncodedMessage) {
        if self.history.contains_key(&id) {
            return;
        }
        self.history_bytes += wire.bytes().len();
        self.history.insert(
            id,
            HistoryEntry {
                wire: wire.clone(),
                served: Vec::new(),
            },
        );
        self.history_order.push_back((now, id));
        self.expire_history(now);
    }

    /// Drops history entries older than `history`, then the oldest until the payload
    /// bytes are within `max_history_bytes`.
    fn expire_history(&mut self, now: Timestamp) {
        let g = &self.config.gossip;
        while let Some(&(at, id)) = self.history_order.front() {
            if at + g.history > now && self.history_bytes <= g.max_history_bytes {
                break;
            }
            self.history_order.pop_front();
            if let Some(e) = self.history.remove(&id) {
                self.history_bytes -=
                    e.wire.bytes().len() + e.served.len() * std::mem::size_of::<ConnectionId>();
            }
        }
    }

    /// Announces the messages of the history to connection `id`, newest first, in as many
    /// IHave messages as [`MAX_IDS_PER_MESSAGE`] requires (the history is bounded by
    /// `history_ms` and `max_history_bytes`).
    ///
    /// Only messages that arrived at least `settled` ago are announced: a younger one is
    /// likely still on its way to the peer along the pushing links, and an announcement
    /// would make the peer ask for a copy it is about to receive, grafting a link the tree
    /// had just pruned.
    ///
    /// With `after`, only messages that arrived later than it are announced. Returns the
    /// arrival time of the newest message announced, if every IHave was queued.
    fn send_ihaves(
        &mut self,
        now: Timestamp,
        id: ConnectionId,
        settled: Duration,
        after: Option<Timestamp>,
    ) -> Option<Timestamp> {
        // Arrival order: the unsettled ones are the newest, the already announced the
        // oldest.
        let mut listed = self
            .history_order
            .iter()
            .rev()
            .skip_while(|(at, _)| *at + settled > now)
            .take_while(|(at, _)| after.is_none_or(|a| *at > a))
            .peekable();
        let mut newest = listed.peek().map(|(at, _)| *at);
        let ids: Vec<[u8; 32]> = listed.map(|(_, m)| m.0).collect();
        for chunk in ids.chunks(MAX_IDS_PER_MESSAGE) {
            if self
                .send_to(
                    id,
                    Message::IHave {
                        ids: chunk.to_vec(),
                    },
                )
                .is_ok()
            {
                self.counters.gossip_announcements_sent += 1;
                self.counters.gossip_ids_announced += chunk.len() as u64;
            } else {
                // Not all named (a full queue): the next announcement names them again.
                newest = None;
            }
        }
        newest
    }

    /// Tree gossip: one announcement round. The ids of the messages in the history go to
    /// `announce_peers` lazy peers (`settled_announce_peers` once no link has changed for
    /// `history`) chosen at random among those it has news for: each peer's only those
    /// that arrived after the ones earlier rounds named to it.
    fn announce(&mut self, now: Timestamp) {
        if self.shutdown.is_some() {
            return;
        }
        self.timers
            .insert((now + self.config.gossip.announce_interval, Timer::Announce));
        self.expire_history(now);
        let delay = self.config.gossip.announce_delay;
        // The newest message settled enough to announce (see `send_ihaves`).
        let Some(newest_settled) = self
            .history_order
            .iter()
            .rev()
            .map(|(at, _)| *at)
            .find(|at| *at + delay <= now)
        else {
            return;
        };

        let g = &self.config.gossip;
        let settled = self.links_changed_at.is_none_or(|t| now >= t + g.history);
        let mut left = if settled {
            g.settled_announce_peers
        } else {
            g.announce_peers
        };
        let mut lazy = self.lazy.clone();
        for i in 0..lazy.len() {
            if left == 0 {
                break;
            }
            // A partial Fisher-Yates shuffle: the entries taken so far are a uniform
            // random choice.
            let j = i + self.rng.below((lazy.len() - i) as u64) as usize;
            lazy.swap(i, j);
            let Some(upto) = self
                .conns
                .get(&lazy[i])
                .filter(|c| c.is_gossip_peer())
                .map(|c| c.round_announced_upto)
            else {
                continue;
            };
            if upto.is_some_and(|t| t >= newest_settled) {
                continue; // named everything to this peer already
            }
            left -= 1;
            let newest = self.send_ihaves(now, lazy[i], delay, upto);
            if let (Some(c), Some(t)) = (self.conns.get_mut(&lazy[i]), newest) {
                c.round_announced_upto = Some(t);
            }
        }
    }

    /// Tree gossip: a peer announced message ids. The ones we lack and have not asked
    /// anyone for lately are asked of it, and the link becomes eager both ways (the peer
    /// takes our IWant as a request to push), which is how a broken tree grows back.
    fn on_ihave(&mut self, now: Timestamp, id: ConnectionId, ids: Vec<[u8; 32]>) {
        if !self.tree_gossip() {
            return;
        }
        let mut wanted = Vec::new();
        for raw in ids {
            let mid = MessageId(raw);
            // Most announced ids are in our own recent history: a small map, checked before
            // the much larger seen-cache.
            if self.history.contains_key(&mid) || self.seen.contains(now, &mid) {
                continue;
            }
            match self.pending_wants.announced(now, mid, id) {
                Announced::Ask => wanted.push(raw),
                Announced::Next(at) => {
                    self.timers.insert((at, Timer::WantRetry));
                }
                Announced::Pending => {}
            }
        }
        self.ask_for(now, id, wanted);
    }

    /// Tree gossip: sends connection `id` an IWant for `wanted` (if any), which grafts it.
    fn ask_for(&mut self, now: Timestamp, id: ConnectionId, wanted: Vec<[u8; 32]>) {
        if wanted.is_empty() {
            return;
        }
        self.set_eager(now, id, true);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.useful_at = Some(now);
        self.counters.gossip_ids_wanted += wanted.len() as u64;
        let _ = self.send_to(id, Message::IWant { ids: wanted });
    }

    /// Tree gossip: requests that timed out unanswered are made to the next peer that
    /// announced their messages, grouped into one IWant per peer.
    fn retry_wants(&mut self, now: Timestamp) {
        let (history, seen) = (&self.history, &self.seen);
        let mut due = self
            .pending_wants
            .retry_due(now, |m| history.contains_key(m) || seen.contains(now, m));
        if due.is_empty() || self.shutdown.is_some() {
            return;
        }
        due.sort_by_key(|(conn, _)| *conn);
        for group in due.chunk_by(|a, b| a.0 == b.0) {
            let conn = group[0].0;
            if self.conns.get(&conn).is_some_and(|c| c.is_gossip_peer()) {
                self.counters.gossip_want_retries += group.len() as u64;
                for chunk in group.chunks(MAX_IDS_PER_MESSAGE) {
                    self.ask_for(now, conn, chunk.iter().map(|(_, m)| m.0).collect());
                }
            } else {
                // That peer is gone: the next one to announce these is asked at once.
                for (_, m) in group {
                    self.pending_wants.forget(m);
                }
            }
        }
        self.flush(now);
    }

    /// Tree gossip: a peer asks for messages it was announced. Each one we still hold is
    /// sent once per connection; the peer becomes eager.
    fn on_iwant(&mut self, now: Timestamp, id: ConnectionId, ids: Vec<[u8; 32]>) {
        if !self.tree_gossip() {
            return;
        }
        self.set_eager(now, id, true);
        if ids.is_empty() {
            // A plain graft: the peer lost a pushing peer and may have lost messages with
            // it. Telling it what we hold lets it pull them now rather than wait for a
            // random announcement (once per announcement interval: an empty IWant costs
            // the peer three bytes, the answer can be much larger).
            let every = self.config.gossip.announce_interval;
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if c.graft_answered_at.is_some_and(|t| now < t + every) {
                return;
            }
            c.graft_answered_at = Some(now);
            self.expire_history(now);
            // Everything: the peer lost a pushing link and may lack even the newest.
            self.send_ihaves(now, id, Duration::ZERO, None);
            return;
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        for raw in ids {
            let Some(e) = self.history.get_mut(&MessageId(raw)) else {
                continue;
            };
            if e.served.contains(&id) {
                continue;
            }
            // Recorded only once queued, so a peer refused for a full queue may ask again.
            if c.conn.send_encoded(e.wire.clone()).is_ok() {
                e.served.push(id);
                self.history_bytes += std::mem::size_of::<ConnectionId>();
                self.counters.gossip_served += 1;
            } else {
                self.counters.gossip_dropped_queue_full += 1;
            }
        }
        self.dirty.push(id);
    }

    /// Broadcasts `message` to every connected peer (or as `opts` selects). The message id
    /// is its content hash; peers relay it onwards and a seen-cache stops duplicates, so each
    /// node's application sees it once. A peer whose queue is full loses this copy (counted)
    /// and never holds up the others.
    ///
    /// With tree gossip ([`GossipMode::Tree`]) the message is pushed to the eager peers
    /// among those `opts` selects, and the report lists only those; lazy peers, whatever
    /// `opts` says, may hear of it in the announcements and fetch it, as any peer may ask
    /// for a message it was announced.
    pub fn broadcast(
        &mut self,
        now: Timestamp,
        message: GossipMessage,
        opts: BroadcastOptions<'_>,
    ) -> Result<BroadcastReport, CommandError> {
        if self.shutdown.is_some() {
            return Err(CommandError::ShuttingDown);
        }
        let len = gossip_to_message(&message).encoded_len();
        if len > self.conn_config.max_message_size {
            return Err(CommandError::TooLarge {
                len,
                max: self.conn_config.max_message_size,
            });
        }
        let id = message_id(&message);
        self.seen.insert(now, id);
        let token = self.next_broadcast;
        self.next_broadcast += 1;
        let peers = self.send_gossip(now, id, &message, opts, Some(token));
        self.counters.broadcasts += 1;
        let report = BroadcastReport {
            id,
            peers: peers.iter().map(|(p, _, s)| (*p, *s)).collect(),
        };
        // Track the copies until each is written, dropped or failed.
        while self.tracked.len() >= self.config.gossip.max_tracked_broadcasts.max(1) {
            let (_, old) = self.tracked.pop_first().expect("non-empty");
            self.tracked_ids.remove(&old.id);
        }
        if let Some(old) = self.tracked_ids.insert(id, token) {
            self.tracked.remove(&old);
        }
        self.tracked.insert(token, TrackedBroadcast::new(id, peers));
        self.finish_tracked(token);
        self.flush(now);
        Ok(report)
    }

    /// Per peer, what became of broadcast `id` (while it is among the tracked ones).
    pub fn broadcast_status(&self, id: &MessageId) -> Option<Vec<(PeerId, BroadcastStatus)>> {
        let t = self.tracked.get(self.tracked_ids.get(id)?)?;
        let mut status: Vec<_> = t.peers.iter().map(|(p, _, s)| (*p, *s)).collect();
        status.sort_unstable_by_key(|(p, _)| *p);
        Some(status)
    }

    fn on_written(&mut self, token: u64, conn: ConnectionId) {
        let Some(t) = self.tracked.get_mut(&token) else {
            return;
        };
        if t.settle(conn, BroadcastStatus::Written) {
            self.counters.broadcast_copies_written += 1;
            self.finish_tracked(token);
        }
    }

    /// Reports a tracked broadcast complete once no copy is still queued. The status stays
    /// queryable until newer broadcasts push it out.
    fn finish_tracked(&mut self, token: u64) {
        let Some(t) = self.tracked.get(&token) else {
            return;
        };
        if t.queued > 0 {
            return;
        }
        let count = |st| t.peers.iter().filter(|(_, _, s)| *s == st).count();
        self.outputs
            .push_back(Output::Event(Event::BroadcastComplete {
                id: t.id,
                written: count(BroadcastStatus::Written),
                dropped: count(BroadcastStatus::DroppedQueueFull),
                failed: count(BroadcastStatus::Failed),
            }));
    }

    // ----- unicast -----

    /// Sends `data` to `peer` with delivery confirmation. The outcome arrives as
    /// [`Event::UnicastDelivered`] or [`Event::UnicastFailed`] for the returned id. The
    /// message is resent if no Ack arrives in time — also over a new connection after a
    /// reconnection — and the receiver delivers it to its application at most once.
    pub fn unicast(
        &mut self,
        now: Timestamp,
        peer: &PeerId,
        kind: crate::message::AppKind,
        data: Bytes,
    ) -> Result<UnicastId, CommandError> {
        if self.shutdown.is_some() {
            return Err(CommandError::ShuttingDown);
        }
        if *peer == self.local_id {
            return Err(CommandError::SelfTarget);
        }
        if !self.peers.contains_key(peer) {
            return Err(CommandError::UnknownPeer(*peer));
        }
        if self.unicasts.len() >= self.config.unicast.max_pending {
            return Err(CommandError::Full("pending unicasts"));
        }
        let probe = Message::Unicast {
            message_id: u64::MAX,
            kind,
            data: data.clone(),
        };
        if probe.encoded_len() > self.conn_config.max_message_size {
            return Err(CommandError::TooLarge {
                len: probe.encoded_len(),
                max: self.conn_config.max_message_size,
            });
        }
        let id = self.next_unicast;
        self.next_unicast += 1;
        let deadline = now + self.config.unicast.timeout;
        self.unicasts.insert(
            id,
            PendingUnicast {
                peer: *peer,
                kind,
                data,
                attempts: 0,
                deadline,
                retry_at: deadline,
                sent_on: None,
                timer_at: deadline,
            },
        );
        self.timers.insert((deadline, Timer::Unicast(id)));
        self.counters.unicasts_sent += 1;
        self.transmit_unicast(now, id);
        self.flush(now);
        Ok(UnicastId(id))
    }

    /// Sends `data` to `peer` without delivery confirmation: the cheapest way to reach one
    /// connected peer. The message is queued on the peer's connection and leaves in order
    /// with the other messages of its size class (one larger than a chunk travels in the
    /// bulk class and may be overtaken by smaller ones); the peer's application gets it
    /// once, as [`Event::Direct`]. If the connection closes before it is written it is lost
    /// (counted in the connection's dropped messages): use [`Node::unicast`] when the
    /// sender must know. Fails with `Full("send queue")` while the connection's queue is
    /// full (`connection.max_queued_bytes`, `max_queued_messages`): retry once the adapter
    /// reports bytes written.
    pub fn send(
        &mut self,
        now: Timestamp,
        peer: &PeerId,
        kind: crate::message::AppKind,
        data: Bytes,
    ) -> Result<(), CommandError> {
        let conn = self.direct_target(peer)?;
        let r = match self.send_to(conn, Message::Direct { kind, data }) {
            Ok(()) => {
                self.counters.directs_sent += 1;
                Ok(())
            }
            Err(SendError::QueueFull) => Err(CommandError::Full("send queue")),
            Err(SendError::TooLarge { len, max }) => Err(CommandError::TooLarge { len, max }),
            Err(SendError::InvalidField(f)) => Err(CommandError::InvalidField(f)),
            // Closing: for the caller the peer is as good as gone.
            Err(_) => Err(CommandError::UnknownPeer(*peer)),
        };
        self.flush(now);
        r
    }

    /// [`Node::send`] for many messages to one peer: queues messages from the front of
    /// `pending` until the connection's queue is full, then builds the frames once, so a
    /// batch of small messages shares frames and encryptions. What it could not queue stays
    /// in `pending`, in order, for a later call (after the adapter reports bytes written).
    /// A message the connection refuses for any other reason (too large, a field over a
    /// protocol limit) is removed and counted in [`Queued::refused`]. Fails, taking nothing,
    /// when no message can go to `peer` at all (not connected, shutting down).
    pub fn send_queued(
        &mut self,
        now: Timestamp,
        peer: &PeerId,
        pending: &mut VecDeque<(crate::message::AppKind, Bytes)>,
    ) -> Result<Queued, CommandError> {
        let id = self.direct_target(peer)?;
        let max_message_size = self.conn_config.max_message_size;
        let c = self
            .conns
            .get_mut(&id)
            .ok_or(CommandError::UnknownPeer(*peer))?;
        // One lookup and one dirty mark for the whole batch: this is the hot path of
        // small direct messages.
        let mut done = Queued::default();
        while let Some((kind, data)) = pending.front() {
            let len = data.len();
            // Checked before the message is taken, so a message that does not fit stays
            // where it is without being copied or reference-counted.
            let encoded = Message::direct_len(*kind, len);
            if !c.conn.has_room(encoded) && encoded <= max_message_size {
                break;
            }
            let (kind, data) = pending.pop_front().expect("front exists");
            match c.conn.send(Message::Direct { kind, data }) {
                Ok(()) => done.messages += 1,
                Err(_) => done.refused += 1,
            }
            done.bytes += len;
        }
        self.counters.directs_sent += done.messages as u64;
        self.dirty.push(id);
        self.flush(now);
        Ok(done)
    }

    /// The connection a direct message to `peer` goes on, or why there is none.
    fn direct_target(&self, peer: &PeerId) -> Result<ConnectionId, CommandError> {
        if self.shutdown.is_some() {
            return Err(CommandError::ShuttingDown);
        }
        if *peer == self.local_id {
            return Err(CommandError::SelfTarget);
        }
        self.peers
            .get(peer)
            .copied()
            .ok_or(CommandError::UnknownPeer(*peer))
    }

    fn transmit_unicast(&mut self, now: Timestamp, id: u64) {
        let Some(u) = self.unicasts.get(&id) else {
            return;
        };
        let Some(&conn) = self.peers.get(&u.peer) else {
            return; // waits for a reconnection or its deadline
        };
        let msg = Message::Unicast {
            message_id: id,
            kind: u.kind,
            data: u.data.clone(),
        };
        if self.send_to(conn, msg).is_err() {
            self.count_failure(FailureKind::QueueFull, Recovery::Retry);
        }
        let ack_timeout = self.config.unicast.ack_timeout;
        let u = self.unicasts.get_mut(&id).expect("present");
        if u.attempts > 0 {
            self.counters.unicast_retries += 1;
        }
        u.attempts += 1;
        u.sent_on = Some(conn);
        u.retry_at = (now + ack_timeout).min(u.deadline);
        self.timers.remove(&(u.timer_at, Timer::Unicast(id)));
        u.timer_at = u.retry_at;
        self.timers.insert((u.timer_at, Timer::Unicast(id)));
    }

    fn unicast_timer(&mut self, now: Timestamp, id: u64) {
        let Some(u) = self.unicasts.get(&id) else {
            return;
        };
        if now >= u.deadline {
            self.fail_unicast(id, UnicastFailure::Timeout);
            return;
        }
        if u.attempts >= self.config.unicast.max_attempts {
            let a = u.attempts;
            self.fail_unicast(id, UnicastFailure::AttemptsExhausted(a));
            return;
        }
        let connected = self.peers.contains_key(&u.peer);
        self.count_failure(FailureKind::UnicastAckTimeout, Recovery::Retry);
        if connected {
            self.transmit_unicast(now, id);
        } else {
            // Not connected: wait for the peer to come back until the deadline.
            let u = self.unicasts.get_mut(&id).expect("present");
            u.sent_on = None;
            u.timer_at = u.deadline;
            self.timers.insert((u.deadline, Timer::Unicast(id)));
        }
    }

    fn fail_unicast(&mut self, id: u64, reason: UnicastFailure) {
        let Some(u) = self.unicasts.remove(&id) else {
            return;
        };
        self.timers.remove(&(u.timer_at, Timer::Unicast(id)));
        self.counters.unicasts_failed += 1;
        self.outputs.push_back(Output::Event(Event::UnicastFailed {
            id: UnicastId(id),
            peer: u.peer,
            reason,
        }));
    }

    // ----- discovery -----

    fn on_get_peers(&mut self, now: Timestamp, id: ConnectionId, max: u32) {
        let interval = self.config.discovery.answer_interval;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.answered_get_peers_at.is_some_and(|t| now < t + interval) {
            self.counters.get_peers_ignored += 1;
            return;
        }
        c.answered_get_peers_at = Some(now);
        let asker = c.peer;
        let n = (max as usize)
            .min(self.config.discovery.max_peers_per_answer)
            .min(MAX_PEERS_PER_MESSAGE);
        let mut addrs = self.addrbook.sample(&mut self.rng, n);
        // Never hand a peer its own address.
        addrs.retain(|a| a.peer_id.is_none() || a.peer_id != asker);
        self.counters.get_peers_answered += 1;
        let _ = self.send_to(id, Message::Peers { addrs });
    }

    fn on_peers(&mut self, now: Timestamp, id: ConnectionId, from: PeerId, addrs: Vec<PeerAddr>) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let solicited = std::mem::take(&mut c.get_peers_outstanding);
        let source_ip = c.addr.ip();
        self.counters.addrs_received += addrs.len() as u64;
        let mut new = 0;
        for a in addrs {
            if !solicited && !c.addr_budget.try_take(now, 1000) {
                self.counters.addrs_dropped += 1;
                continue;
            }
            if a.peer_id == Some(self.local_id) {
                continue;
            }
            if self.addrbook.add(now, a, AddrSource::Peer(source_ip)) {
                new += 1;
            }
        }
        if new > 0 {
            self.outputs
                .push_back(Output::Event(Event::AddressesDiscovered {
                    from: Some(from),
                    new,
                }));
        }
    }

    /// The coordinator: runs every `discovery.interval`. Expires bans, redials persistent
    /// peers that are due, keeps outbound connections at the target from the address book,
    /// asks for more addresses while below target, and replaces an unhealthy outbound peer.
    fn maintenance(&mut self, now: Timestamp) {
        self.cancel_maintenance();
        if self.shutdown.is_some() {
            return;
        }
        // The next periodic run: `discovery.interval` from now, moved earlier onto the timer
        // grid (by less than a step) so that the connections' deadlines share its wake-up.
        let (step, interval) = (
            self.config.timer_granularity,
            self.config.discovery.interval,
        );
        let next = if step.is_zero() || interval < step {
            now + interval
        } else {
            on_grid(
                self.timer_origin,
                step,
                now + (interval - step) + Duration::from_nanos(1),
            )
        };
        self.wake_maintenance(next);
        self.peer_bans.retain(|_, (until, _)| *until > now);
        self.ip_bans.retain(|_, (until, _)| *until > now);
        self.expire_validation(now);
        let mut dials = self.config.discovery.max_dials_per_interval;

        // Persistent peers first: they are why the node exists on this network.
        self.redial_persistent(now, &mut dials, false);

        // Keep outbound connections at the target, preferring netgroups we lack.
        let target = self.config.limits.target_outbound;
        let mut tries = dials * 4;
        while dials > 0
            && tries > 0
            && self.count_direction(Direction::Outbound) < target
            && self.pending_handshakes() < self.config.limits.max_pending_handshakes
        {
            tries -= 1;
            let avoid: BTreeSet<addrbook::NetGroup> = self
                .conns
                .values()
                .filter(|c| !c.closed && c.direction == Direction::Outbound)
                .map(|c| addrbook::netgroup(c.addr.ip()))
                .collect();
            let conns = &self.conns;
            let peers = &self.peers;
            let self_addrs = &self.self_addrs;
            let listen = &self.config.listen_addrs;
            let persistent = &self.persistent;
            let local = self.local_id;
            let Some(addr) = self.addrbook.select(
                now,
                &mut self.rng,
                |a: &PeerAddr| {
                    a.peer_id == Some(local)
                        || a.peer_id.is_some_and(|p| peers.contains_key(&p))
                        || self_addrs.contains(&a.socket)
                        || listen.contains(&a.socket)
                        // Persistent peers are dialed on their own backoff schedule only.
                        || persistent.contains_key(&a.socket)
                        || conns.values().any(|c| !c.closed && c.addr == a.socket)
                },
                &avoid,
            ) else {
                break;
            };
            if self.check_dial(now, &addr).is_ok() {
                self.dial(now, addr);
                dials -= 1;
            } else {
                // Selected but not dialable (banned, …): make sure it is not picked forever.
                self.addrbook.mark_attempt(now, &addr.socket);
            }
        }

        // A persistent peer that sent us away because it was full is needed only when the
        // address book could not bring the node to its target, or when the node keeps
        // fewer outbound connections than it has persistent peers (a node that dials only
        // its persistent peers, `target_outbound = 0`, needs every one of them).
        if self.count_direction(Direction::Outbound) < target.max(self.persistent.len()) {
            self.redial_persistent(now, &mut dials, true);
        }

        // Ask for addresses while below target.
        if self.count_direction(Direction::Outbound) < target
            && self
                .last_get_peers
                .is_none_or(|t| now >= t + self.config.discovery.get_peers_interval)
            && !self.peers.is_empty()
        {
            let ids: Vec<ConnectionId> = self.peers.values().copied().collect();
            let pick = ids[self.rng.below(ids.len() as u64) as usize];
            self.send_get_peers(pick);
            self.last_get_peers = Some(now);
        }

        // A peer's health changes only as its pings are answered or not, so it is looked
        // at four times per ping interval rather than on every run.
        let every = self.config.connection.ping_interval / 4;
        if self.last_health_check.is_none_or(|t| now >= t + every) {
            self.last_health_check = Some(now);
            self.replace_unhealthy(now);
        }
    }

    /// Dials the persistent peers whose redial is due, within the `dials` left this run:
    /// those that last sent us away because they were full when `full` is set, the others
    /// otherwise.
    fn redial_persistent(&mut self, now: Timestamp, dials: &mut usize, full: bool) {
        let due: Vec<SocketAddr> = self
            .persistent
            .iter()
            .filter(|(_, p)| p.conn.is_none() && p.next_attempt <= now && p.full == full)
            .map(|(k, _)| *k)
            .collect();
        for a in due {
            if *dials == 0 || self.pending_handshakes() >= self.config.limits.max_pending_handshakes
            {
                break;
            }
            let addr = self.persistent[&a].addr;
            let connected = addr.peer_id.is_some_and(|p| self.peers.contains_key(&p))
                || self.conns.values().any(|c| !c.closed && c.addr == a);
            if connected {
                continue;
            }
            if self.check_dial(now, &addr).is_ok() {
                let id = self.dial(now, addr);
                let p = self.persistent.get_mut(&a).expect("present");
                if p.backoff.failures() > 0 {
                    self.counters.reconnects += 1;
                }
                p.conn = Some(id);
                *dials -= 1;
            }
        }
    }

    fn replace_unhealthy(&mut self, now: Timestamp) {
        let h = &self.config.health;
        let target = self.config.limits.target_outbound;
        // Open outbound connections include every registered outbound peer: below the
        // target there is nothing to replace, and no need to look at each peer.
        if self.count_direction(Direction::Outbound) < target || self.addrbook.is_empty() {
            return;
        }
        let mut outbound_connected = 0;
        let mut worst: Option<(u32, ConnectionId)> = None;
        for id in self.peers.values() {
            let c = &self.conns[id];
            if c.direction != Direction::Outbound {
                continue;
            }
            outbound_connected += 1;
            let old_enough = c
                .conn
                .stats()
                .connected_since
                .is_some_and(|t| now >= t + h.min_age);
            if old_enough && !self.persistent.contains_key(&c.addr) {
                let candidate = (self.health(c), *id);
                worst = Some(worst.map_or(candidate, |w| w.min(candidate)));
            }
        }
        if outbound_connected < target {
            return;
        }
        if let Some((score, id)) = worst {
            if score < h.replace_below {
                self.counters.replaced_unhealthy += 1;
                self.close_conn(now, id, GoodbyeReason::Normal);
            }
        }
    }

    // ----- eviction -----

    fn select_eviction(&self) -> Option<ConnectionId> {
        let candidates: Vec<eviction::Candidate> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !c.closed
                    && c.registered
                    && c.direction == Direction::Inbound
                    && !self.persistent.contains_key(&c.addr)
            })
            .map(|(id, c)| eviction::Candidate {
                id: *id,
                netgroup: addrbook::netgroup(c.addr.ip()),
                connected_at: c.conn.stats().connected_since.unwrap_or(c.created_at),
                rtt: c.conn.stats().srtt,
                useful_at: c.useful_at,
            })
            .collect();
        let l = &self.config.limits;
        eviction::select(
            candidates,
            eviction::Protection {
                by_rtt: l.protect_by_rtt,
                by_usefulness: l.protect_by_usefulness,
                by_uptime: l.protect_by_uptime,
            },
        )
    }

    // ----- persistence -----

    /// The address book and the active bans as CBOR bytes, for the adapter to write to disk
    /// (atomically) and hand back to [`Node::restore`] after a restart. Times are stored as
    /// durations relative to `now`, since the clock's epoch does not survive a restart.
    pub fn snapshot(&self, now: Timestamp) -> Vec<u8> {
        let remaining = |until: Timestamp| until.saturating_duration_since(now).as_millis() as u64;
        let mut bans: Vec<BanEntry> = self
            .peer_bans
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|(p, (until, reason))| BanEntry {
                peer: Some(*p),
                ip: None,
                remaining_ms: remaining(*until),
                reason: reason.clone(),
            })
            .collect();
        bans.extend(
            self.ip_bans
                .iter()
                .filter(|(_, (until, _))| *until > now)
                .map(|(ip, (until, reason))| BanEntry {
                    peer: None,
                    ip: Some(*ip),
                    remaining_ms: remaining(*until),
                    reason: reason.clone(),
                }),
        );
        let snapshot = NodeSnapshot {
            version: NODE_SNAPSHOT_VERSION,
            address_book: Bytes::from(self.addrbook.snapshot()),
            bans,
        };
        let mut out = Vec::new();
        ciborium::into_writer(&snapshot, &mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Restores a [`Node::snapshot`]: replaces the address book and adds the bans (within
    /// `bans.max_bans`). A corrupt snapshot is refused with a reason and changes nothing.
    /// Call it right after [`Node::new`].
    pub fn restore(&mut self, now: Timestamp, bytes: &[u8]) -> Result<(), NodeSnapshotError> {
        let snapshot: NodeSnapshot = ciborium::from_reader(bytes)
            .map_err(|e| NodeSnapshotError::Malformed(e.to_string()))?;
        if snapshot.version != NODE_SNAPSHOT_VERSION {
            return Err(NodeSnapshotError::WrongVersion(snapshot.version));
        }
        for b in &snapshot.bans {
            if b.peer.is_some() == b.ip.is_some() {
                return Err(NodeSnapshotError::Malformed(
                    "a ban names exactly one of peer and ip".into(),
                ));
            }
        }
        let mut book = AddressBook::restore(
            self.config.address_book.clone(),
            self.rng.derive_seed(b"addrbook"),
            &snapshot.address_book,
        )?;
        // Persistent peers stay known whatever the snapshot says.
        for p in self.persistent.values() {
            book.add(now, p.addr, AddrSource::Manual);
        }
        self.addrbook = book;
        for b in snapshot.bans.into_iter().take(self.config.bans.max_bans) {
            let until = now + Duration::from_millis(b.remaining_ms);
            if let Some(p) = b.peer {
                self.make_room_for_ban();
                self.peer_bans.insert(p, (until, b.reason));
            } else if let Some(ip) = b.ip {
                self.make_room_for_ban();
                self.ip_bans.insert(ip, (until, b.reason));
            }
        }
        Ok(())
    }

    // ----- shutdown -----

    /// Shuts down gracefully: stops accepting and discovering, flushes every connection's
    /// queue (unicasts included) until `grace` passes, sends Goodbye to every peer, closes
    /// everything, and emits exactly one [`Event::ShutdownComplete`]. Calling it again does
    /// nothing.
    pub fn shutdown(&mut self, now: Timestamp, grace: Duration) {
        if self.shutdown.is_some() {
            return;
        }
        let deadline = now + grace;
        let mut report = ShutdownReport::default();
        let mut queued = 0;
        let ids: Vec<ConnectionId> = self.conns.keys().copied().collect();
        for id in ids {
            let c = self.conns.get_mut(&id).expect("present");
            if c.closed {
                continue;
            }
            queued += c.conn.queued_messages() as u64;
            if c.conn.state() == ConnectionState::Connected {
                report.peers_closed += 1;
            }
            c.conn.close_gracefully(now, deadline);
            self.dirty.push(id);
        }
        self.timers
            .retain(|(_, t)| matches!(t, Timer::Conn(_) | Timer::Unicast(_) | Timer::Request(_)));
        self.maintenance_at.clear();
        self.shutdown = Some(ShutdownState {
            deadline,
            report,
            queued_at_start: queued,
            done: false,
        });
        self.flush(now);
    }

    fn check_shutdown_complete(&mut self) {
        let Some(s) = &self.shutdown else { return };
        if s.done || self.conns.values().any(|c| !c.closed) || !self.dirty.is_empty() {
            return;
        }
        let unicasts: Vec<u64> = self.unicasts.keys().copied().collect();
        let unicasts_failed = unicasts.len();
        for u in unicasts {
            self.fail_unicast(u, UnicastFailure::Shutdown);
        }
        let requests: Vec<(u64, PeerId)> =
            self.requests.iter().map(|(k, r)| (*k, r.peer)).collect();
        let requests_failed = requests.len();
        for (r, peer) in requests {
            self.requests.remove(&r);
            self.outputs.push_back(Output::Event(Event::Response {
                id: RequestId(r),
                peer,
                result: Err(RequestFailure::Shutdown),
            }));
        }
        self.timers.clear();
        self.maintenance_at.clear();
        let s = self.shutdown.as_mut().expect("checked");
        s.done = true;
        let mut report = s.report.clone();
        report.messages_dropped = self.dropped_at_close;
        report.messages_flushed = s.queued_at_start.saturating_sub(report.messages_dropped);
        report.unicasts_failed = unicasts_failed;
        report.requests_failed = requests_failed;
        let _ = s.deadline;
        self.outputs
            .push_back(Output::Event(Event::ShutdownComplete(report)));
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// What every packet and flush reads of a `Conn` besides its connection shares the one
    /// cache line right after the connection's own lines.
    #[test]
    fn the_fields_a_packet_touches_share_a_line_after_the_connection() {
        let start = offset_of!(Conn, registered);
        assert_eq!(start, size_of::<Connection>(), "right after the connection");
        assert_eq!(start % 64, 0, "on a line of its own");
        let end = offset_of!(Conn, first_copy_at) + size_of::<Option<Timestamp>>();
        assert!(end - start <= 64, "spans {} bytes", end - start);
        for f in [
            offset_of!(Conn, closed),
            offset_of!(Conn, sendable),
            offset_of!(Conn, lazy_gossip),
            offset_of!(Conn, direction),
            offset_of!(Conn, buffered),
            offset_of!(Conn, timer_at),
            offset_of!(Conn, useful_at),
        ] {
            assert!((start..end).contains(&f));
        }
        assert!(
            offset_of!(Conn, limiter) >= end && offset_of!(Conn, addr) > offset_of!(Conn, limiter)
        );
    }

    /// What every input, flush and poll reads of a `Node` fills its first five lines, what
    /// gossip reads follows, and the configuration comes last.
    #[test]
    fn the_fields_every_input_touches_come_first() {
        let hot_end = offset_of!(Node, global_bandwidth) + size_of::<GlobalBandwidth>();
        assert!(hot_end <= 5 * 64, "the hot part spans {hot_end} bytes");
        for f in [
            offset_of!(Node, conns),
            offset_of!(Node, outputs),
            offset_of!(Node, dirty),
            offset_of!(Node, sendable),
            offset_of!(Node, timers),
            offset_of!(Node, shutdown),
        ] {
            assert!(f < hot_end);
        }
        let gossip_end = offset_of!(Node, counters) + size_of::<NodeCounters>();
        for f in [
            offset_of!(Node, seen),
            offset_of!(Node, history),
            offset_of!(Node, lazy),
        ] {
            assert!((hot_end..gossip_end).contains(&f));
        }
        for cold in [offset_of!(Node, addrbook), offset_of!(Node, keypair)] {
            assert!(cold >= gossip_end);
        }
        assert!(offset_of!(Node, config) + size_of::<NodeConfig>() + 64 > size_of::<Node>());
    }
}
