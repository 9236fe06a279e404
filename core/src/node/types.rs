//! The node's inputs, outputs, events, command errors and statistics.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;

use crate::connection::{CloseReason, ConnectionState, ConnectionStats};
use crate::identity::PeerId;
use crate::message::AppKind;
use crate::node::addrbook::AddressBookStats;
use crate::time::Timestamp;

/// Identifies one connection (one socket) for the life of the node. Never reused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ConnectionId(pub u64);

impl core::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Who opened a connection.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Direction {
    /// The peer dialed us.
    Inbound,
    /// We dialed the peer.
    Outbound,
}

/// The content hash identifying a gossip message (SHA-256 of its kind and payload).
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MessageId(pub [u8; 32]);

/// Lexicographic on the bytes, like the derived order, a word at a time (see
/// `identity::cmp_key`).
impl Ord for MessageId {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        crate::identity::cmp_key(&self.0, &other.0)
    }
}

impl PartialOrd for MessageId {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl core::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MessageId({})", hex::encode(&self.0[..6]))
    }
}

impl core::fmt::Display for MessageId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What the adapter tells the node. Pass the current time with each.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input<'a> {
    /// An outbound connect (from [`Output::Dial`]) succeeded.
    Connected {
        /// The connection.
        conn: ConnectionId,
    },
    /// Bytes read from a socket.
    Received {
        /// The connection.
        conn: ConnectionId,
        /// The bytes, split anywhere.
        bytes: &'a [u8],
    },
    /// Bytes of earlier `Transmit`s were written to the socket.
    Written {
        /// The connection.
        conn: ConnectionId,
        /// How many.
        bytes: usize,
    },
    /// The socket closed or failed (a failed connect included). `error` is `None` for a
    /// clean end of stream.
    Closed {
        /// The connection.
        conn: ConnectionId,
        /// The IO error's description.
        error: Option<String>,
    },
    /// The deadline from [`crate::node::Node::poll_timeout`] passed.
    Timeout,
}

/// What the node asks of the adapter. Drain with [`crate::node::Node::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Write these bytes to the connection's socket, in order; report with `Input::Written`.
    Transmit {
        /// The connection.
        conn: ConnectionId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Open a TCP connection to `addr` for `conn`; report `Input::Connected` or
    /// `Input::Closed`.
    Dial {
        /// The new connection's id.
        conn: ConnectionId,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Close the socket after writing every `Transmit` emitted for it before this.
    Close {
        /// The connection.
        conn: ConnectionId,
    },
    /// Stop reading this socket.
    PauseRead {
        /// The connection.
        conn: ConnectionId,
    },
    /// Read this socket again.
    ResumeRead {
        /// The connection.
        conn: ConnectionId,
    },
    /// Something for the application.
    Event(Event),
}

/// A gossip payload: what `broadcast` sends and what arrives as [`Event::Gossip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GossipMessage {
    /// A transaction.
    Transaction(Bytes),
    /// A block.
    Block(Bytes),
    /// An application-defined broadcast.
    App {
        /// Application-defined kind.
        kind: AppKind,
        /// Payload.
        data: Bytes,
    },
}

impl GossipMessage {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            GossipMessage::Transaction(d) | GossipMessage::Block(d) => d.len(),
            GossipMessage::App { data, .. } => data.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A block by hash.
    GetBlock(Bytes),
    /// A transaction by hash.
    GetTransaction(Bytes),
    /// An application request.
    App {
        /// Application-defined kind.
        kind: AppKind,
        /// Payload.
        data: Bytes,
    },
}

/// Identifies a request we sent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct RequestId(pub u64);

/// Identifies a request a peer sent us, for [`crate::node::Node::respond`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundRequestId {
    /// The connection it arrived on (answers go back on it).
    pub conn: ConnectionId,
    /// The peer's request id.
    pub request_id: u64,
}

/// Identifies a unicast we sent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct UnicastId(pub u64);

/// Why a request produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestFailure {
    /// The peer does not have it.
    #[error("not found")]
    NotFound,
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The connection closed first.
    #[error("peer disconnected")]
    Disconnected,
    /// The node shut down first.
    #[error("node shut down")]
    Shutdown,
}

/// Why a unicast was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnicastFailure {
    /// Not acknowledged within the timeout (after every retry).
    #[error("not acknowledged in time")]
    Timeout,
    /// Every allowed attempt was used without an acknowledgement.
    #[error("no acknowledgement after {0} attempts")]
    AttemptsExhausted(u32),
    /// The node shut down first.
    #[error("node shut down")]
    Shutdown,
    /// The peer was banned.
    #[error("peer banned")]
    Banned,
}

/// Why a peer or address was banned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum BanReason {
    /// The application asked.
    Manual,
    /// The misbehaviour score reached the threshold; the last offence named.
    Misbehaviour(String),
}

/// What the application learns from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A handshake completed; the peer is registered.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its connection.
        conn: ConnectionId,
        /// Its socket address.
        addr: SocketAddr,
        /// Who dialed.
        direction: Direction,
        /// Its agent string.
        agent: String,
    },
    /// A registered peer's connection closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
        /// The connection.
        conn: ConnectionId,
        /// Why.
        reason: CloseReason,
    },
    /// An outbound connection failed before the handshake completed.
    DialFailed {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
    /// A new gossip message (each id is reported once).
    Gossip {
        /// Its content hash.
        id: MessageId,
        /// The peer it came from.
        from: PeerId,
        /// The message.
        message: GossipMessage,
    },
    /// A unicast for the application (acknowledged to the sender as this is emitted;
    /// retries are de-duplicated, so each arrives once).
    Unicast {
        /// The sender.
        from: PeerId,
        /// Application-defined kind.
        kind: AppKind,
        /// Payload.
        data: Bytes,
    },
    /// A direct message for the application (`Node::send` on the peer's side): not
    /// acknowledged; it arrives once, in order with the peer's other direct messages of its
    /// size class, or not at all if the connection closed first.
    Direct {
        /// The sender.
        from: PeerId,
        /// Application-defined kind.
        kind: AppKind,
        /// Payload.
        data: Bytes,
    },
    /// A peer asks something; answer with `Node::respond`.
    Request {
        /// Pass to `respond`.
        id: InboundRequestId,
        /// The peer.
        from: PeerId,
        /// The request.
        request: Request,
    },
    /// The outcome of a request we sent.
    Response {
        /// Our request id.
        id: RequestId,
        /// The peer asked.
        peer: PeerId,
        /// The answer.
        result: Result<Bytes, RequestFailure>,
    },
    /// A unicast was acknowledged.
    UnicastDelivered {
        /// Our id.
        id: UnicastId,
        /// The peer.
        peer: PeerId,
    },
    /// A unicast failed.
    UnicastFailed {
        /// Our id.
        id: UnicastId,
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: UnicastFailure,
    },
    /// A peer identity or IP was banned.
    Banned {
        /// The peer, when the ban is by identity.
        peer: Option<PeerId>,
        /// The IP, when the ban is by address.
        ip: Option<IpAddr>,
        /// How long.
        duration: Duration,
        /// Why.
        reason: BanReason,
    },
    /// Every copy of a broadcast we originated is written, dropped or failed.
    BroadcastComplete {
        /// The message id.
        id: MessageId,
        /// Copies written to a peer's socket.
        written: usize,
        /// Copies dropped because a peer's queue was full.
        dropped: usize,
        /// Copies lost because a connection closed first.
        failed: usize,
    },
    /// Addresses learned.
    AddressesDiscovered {
        /// The peer that sent them (None for bootstrap or manual).
        from: Option<PeerId>,
        /// How many were new.
        new: usize,
    },
    /// `shutdown` finished: every connection is closed. Emitted exactly once.
    ShutdownComplete(ShutdownReport),
}

/// What a shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShutdownReport {
    /// Connections closed (established ones).
    pub peers_closed: usize,
    /// Queued messages that were written before closing.
    pub messages_flushed: u64,
    /// Queued messages dropped at the deadline.
    pub messages_dropped: u64,
    /// Unicasts still unacknowledged, reported failed.
    pub unicasts_failed: usize,
    /// Requests still unanswered, reported failed.
    pub requests_failed: usize,
}

/// The per-peer outcome of one broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BroadcastStatus {
    /// Queued for the peer.
    Queued,
    /// Written to the peer's socket.
    Written,
    /// The peer's queue was full: it loses this message (counted).
    DroppedQueueFull,
    /// The connection closed before the message was written.
    Failed,
}

/// The result of `broadcast`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BroadcastReport {
    /// The message id.
    pub id: MessageId,
    /// Per peer, what happened.
    pub peers: Vec<(PeerId, BroadcastStatus)>,
}

impl BroadcastReport {
    /// Peers the message was queued for.
    pub fn queued(&self) -> usize {
        self.peers
            .iter()
            .filter(|(_, s)| *s == BroadcastStatus::Queued)
            .count()
    }
}

/// One connected peer, for `Node::peers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Its connection.
    pub conn: ConnectionId,
    /// Its socket address.
    pub addr: SocketAddr,
    /// Who dialed.
    pub direction: Direction,
    /// Connection state.
    pub state: ConnectionState,
    /// Its agent string.
    pub agent: String,
    /// Negotiated protocol version.
    pub version: u32,
    /// Whether we redial it when it drops.
    pub persistent: bool,
    /// Health score 0..=100.
    pub health: u32,
    /// Misbehaviour score.
    pub misbehaviour: u32,
    /// Whether new gossip is pushed to this peer: always with flood gossip; with tree gossip,
    /// false once the link was pruned to announcements only (see `GossipMode::Tree`).
    #[serde(default)]
    pub gossip_push: bool,
    /// Connection counters.
    pub stats: ConnectionStats,
}

/// Node-wide counters. Every field counts since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeCounters {
    /// Inbound connections accepted.
    pub inbound_accepted: u64,
    /// Inbound connections refused (limits, bans, shutdown).
    pub inbound_refused: u64,
    /// Inbound peers evicted to make room.
    pub evicted: u64,
    /// Dials started.
    pub dials: u64,
    /// Dials that completed a handshake.
    pub dials_succeeded: u64,
    /// Dials that failed before the handshake completed.
    pub dials_failed: u64,
    /// Duplicate connections to one identity closed.
    pub duplicates_closed: u64,
    /// Redials of persistent peers.
    pub reconnects: u64,
    /// Unhealthy outbound peers replaced.
    pub replaced_unhealthy: u64,
    /// GetPeers sent.
    pub get_peers_sent: u64,
    /// GetPeers answered.
    pub get_peers_answered: u64,
    /// GetPeers ignored (answered too recently).
    pub get_peers_ignored: u64,
    /// Addresses received in Peers messages.
    pub addrs_received: u64,
    /// Unsolicited addresses dropped by the rate limit.
    pub addrs_dropped: u64,
    /// Broadcasts we originated.
    pub broadcasts: u64,
    /// Gossip messages relayed.
    pub relayed: u64,
    /// Gossip duplicates dropped.
    pub gossip_duplicates: u64,
    /// Gossip copies a slow peer lost because its queue was full.
    pub gossip_dropped_queue_full: u64,
    /// Gossip the application rejected or did not judge in time.
    pub gossip_rejected: u64,
    /// Tree gossip: Prune messages sent (a peer pushed a message we already had).
    #[serde(default)]
    pub gossip_prunes_sent: u64,
    /// Tree gossip: IHave announcements sent to lazy peers.
    #[serde(default)]
    pub gossip_announcements_sent: u64,
    /// Tree gossip: message ids named in those announcements.
    #[serde(default)]
    pub gossip_ids_announced: u64,
    /// Tree gossip: message ids asked for with IWant after an announcement.
    #[serde(default)]
    pub gossip_ids_wanted: u64,
    /// Tree gossip: of those, ids asked for again of another announcer after the first
    /// request timed out unanswered (`want_timeout`).
    #[serde(default)]
    pub gossip_want_retries: u64,
    /// Tree gossip: messages sent in answer to IWant.
    #[serde(default)]
    pub gossip_served: u64,
    /// Tree gossip: lazy peers asked to push again after a pushing peer was lost.
    #[serde(default)]
    pub gossip_grafts_sent: u64,
    /// Copies of our broadcasts written to a peer's socket.
    pub broadcast_copies_written: u64,
    /// Copies of our broadcasts lost because the connection closed first.
    pub broadcast_copies_failed: u64,
    /// Unicasts sent (first attempts).
    pub unicasts_sent: u64,
    /// Unicast retransmissions.
    pub unicast_retries: u64,
    /// Unicasts acknowledged.
    pub unicasts_delivered: u64,
    /// Unicasts failed.
    pub unicasts_failed: u64,
    /// Retried unicasts suppressed at the receiver.
    pub unicast_duplicates: u64,
    /// Direct messages queued on a connection (`Node::send`).
    #[serde(default)]
    pub directs_sent: u64,
    /// Direct messages received and handed to the application.
    #[serde(default)]
    pub directs_received: u64,
    /// Requests sent.
    pub requests_sent: u64,
    /// Requests answered with data.
    pub responses: u64,
    /// Requests answered NotFound.
    pub not_found: u64,
    /// Requests timed out.
    pub request_timeouts: u64,
    /// Peer requests refused over the inbound cap.
    pub requests_refused: u64,
    /// Responses nobody asked for.
    pub unsolicited_responses: u64,
    /// Bans imposed.
    pub bans: u64,
    /// Read pauses for rate limits.
    pub rate_limit_pauses: u64,
}

/// Failure kinds the node recovers from, for the error-recovery statistics.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum FailureKind {
    /// A dial failed (refused, unreachable, handshake failed).
    DialFailed,
    /// A connection dropped (IO error, end of stream, silence).
    ConnectionLost,
    /// A peer broke the protocol.
    ProtocolViolation,
    /// A unicast was not acknowledged in time.
    UnicastAckTimeout,
    /// A request was not answered in time.
    RequestTimeout,
    /// A peer's queue was full.
    QueueFull,
    /// A peer exceeded its rate limit.
    RateLimited,
}

/// How the node recovered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Recovery {
    /// Tried again (unicast resend, persistent redial with backoff).
    Retry,
    /// Dialed another address to keep the outbound target.
    ReplacePeer,
    /// Dropped the work or the peer (counted).
    Drop,
    /// Paused reading the peer (back-pressure).
    Pause,
    /// Disconnected and banned the peer.
    Ban,
}

/// A snapshot of the node: node-wide figures and one entry per connected peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkStats {
    /// When the snapshot was taken.
    pub now: Timestamp,
    /// Established peers.
    pub peers: usize,
    /// Open connections by direction (handshaking included).
    pub inbound: usize,
    /// Open outbound connections (dialing and handshaking included).
    pub outbound: usize,
    /// Connections still connecting or handshaking.
    pub handshaking: usize,
    /// Bytes sent, all connections, this run (closed connections included).
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Counters.
    pub counters: NodeCounters,
    /// Failures by kind.
    pub failures: BTreeMap<FailureKind, u64>,
    /// Recoveries by kind.
    pub recoveries: BTreeMap<Recovery, u64>,
    /// Address book figures.
    pub address_book: AddressBookStats,
    /// Active bans.
    pub active_bans: usize,
    /// Unicasts awaiting acknowledgement.
    pub pending_unicasts: usize,
    /// Requests awaiting an answer.
    pub pending_requests: usize,
    /// Bytes held in buffers by the core's own accounting ([`crate::node::Node::buffered_bytes`]).
    pub buffered_bytes: usize,
    /// The most bytes the buffers ever held at once ([`crate::node::Node::peak_buffered_bytes`]).
    #[serde(default)]
    pub peak_buffered_bytes: usize,
    /// Per-peer figures.
    pub per_peer: Vec<PeerInfo>,
    /// Events an adapter could not hand to an application subscriber that fell too far
    /// behind. The core never drops an event (it is 0 from [`crate::node::Node::stats`]);
    /// an adapter that buffers events per subscriber fills this in.
    #[serde(default)]
    pub events_dropped: u64,
    /// Direct messages an adapter accepted from the application but dropped before they
    /// reached the node, because the peer disconnected or the node stopped first. The core
    /// reports 0; an adapter that buffers sends fills this in.
    #[serde(default)]
    pub sends_dropped: u64,
}

/// How full the node's bounded structures are, to hold against the bounds of its
/// [`crate::node::NodeConfig`]. Read with [`crate::node::Node::occupancy`]: no allocation and
/// one pass over the connections, so a monitor or a simulator can check every node's bounds
/// often; [`NetworkStats`] carries the same figures among many more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Occupancy {
    /// Inbound connections, handshaking included (bound: `limits.max_inbound`).
    pub inbound: usize,
    /// Outbound connections, dialing and handshaking included (bound: `limits.max_outbound`).
    pub outbound: usize,
    /// Connections still connecting or handshaking (bound: `limits.max_pending_handshakes`).
    pub handshaking: usize,
    /// Established peers.
    pub peers: usize,
    /// Address book entries never connected to (bound: `address_book.max_new`).
    pub address_book_new: usize,
    /// Address book entries connected to before (bound: `address_book.max_tried`).
    pub address_book_tried: usize,
    /// Active peer and IP bans (bound: `bans.max_bans`).
    pub active_bans: usize,
    /// Unicasts awaiting acknowledgement (bound: `unicast.max_pending`).
    pub pending_unicasts: usize,
    /// Requests awaiting an answer.
    pub pending_requests: usize,
    /// Bytes held in buffers by the core's own accounting.
    pub buffered_bytes: usize,
}

/// What [`crate::node::Node::send_queued`] took from the front of its queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Queued {
    /// Messages queued on the connection.
    pub messages: usize,
    /// Messages removed but refused (too large, a field over a protocol limit).
    pub refused: usize,
    /// Payload bytes of every message removed, queued or refused.
    pub bytes: usize,
}

/// Why `accept` refused an inbound connection (the adapter drops the socket).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The IP is banned.
    #[error("address is banned")]
    Banned,
    /// Too many connections from this IP.
    #[error("too many connections from this IP")]
    PerIpLimit,
    /// Too many handshakes in progress.
    #[error("too many handshakes in progress")]
    TooManyHandshakes,
    /// No inbound slot and nobody evictable.
    #[error("no inbound slot")]
    Full,
}

/// Why a command was refused. Local misuse, never the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The peer is not connected.
    #[error("peer {0:?} is not connected")]
    UnknownPeer(PeerId),
    /// The peer or address is banned.
    #[error("banned")]
    Banned,
    /// That is our own identity or address.
    #[error("that is this node")]
    SelfTarget,
    /// A connection to that address or peer exists already.
    #[error("already connected or connecting")]
    AlreadyConnected,
    /// No room for another connection.
    #[error("connection limit reached")]
    ConnectionLimit,
    /// The message is larger than the maximum message size.
    #[error("message of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// A bounded table is full (pending unicasts, requests in flight to the peer, …).
    #[error("{0} is full")]
    Full(&'static str),
    /// A field exceeds a protocol limit.
    #[error("field {0} exceeds its protocol limit")]
    InvalidField(&'static str),
    /// The id is unknown (already answered, timed out, or never issued).
    #[error("unknown id")]
    UnknownId,
}
