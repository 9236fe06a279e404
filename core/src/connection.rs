//! One connection to one peer: handshake, framing, encryption, coalescing, chunking,
//! keepalive, back-pressure and closing, as a sans-IO state machine.
//!
//! The caller (the node, or a test) feeds it bytes, write completions and the time, and drains
//! [`ConnectionOutput`]s. Every peer mistake closes the connection with a [`CloseReason`]; no
//! input can make it panic or allocate beyond its configured bounds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::chunk::{ChunkError, Reassembler, ReassemblyLimits};
use crate::config::ConnectionConfig;
use crate::frame::{FrameError, Packet, PacketDecoder, LEN_PREFIX, MAX_PACKET_LEN};
use crate::handshake::{
    self, NoiseError, Role, TransportCipher, TransportSuite, HANDSHAKE_OVERHEAD,
    MAX_FRAME_PLAINTEXT, TAG_LEN,
};
use crate::hello::{negotiate_version, Hello};
use crate::identity::{Keypair, PeerId};
use crate::message::{self, DecodeError, EncodedMessage, GoodbyeReason, Message, MessageKind};
use crate::queue::{OutboundQueue, Outgoing, QueueFull, QueueLimits};
use crate::rng::{nth_u64, SeededRng};
use crate::time::{earliest, Timestamp};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ConnectionState {
    /// Outbound, waiting for the TCP connect to complete.
    Connecting,
    /// Exchanging Noise handshake messages.
    Handshaking,
    /// Authenticated; messages flow.
    Connected,
    /// Flushing queued messages before a Goodbye (graceful close in progress).
    Closing,
    /// Done; no further output except what was already queued.
    Closed,
}

/// How a peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Bad packet framing.
    #[error("framing: {0}")]
    Framing(#[from] FrameError),
    /// Noise rejected a handshake message or a transport message did not authenticate.
    #[error("{0}")]
    Noise(#[from] NoiseError),
    /// A frame or message that does not decode.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The peer's Hello does not decode.
    #[error("invalid hello: {0}")]
    InvalidHello(DecodeError),
    /// Handshake message 1 carried a payload.
    #[error("handshake message 1 carries a payload")]
    UnexpectedHandshakePayload,
    /// Chunking rules broken.
    #[error("chunking: {0}")]
    Chunk(#[from] ChunkError),
    /// A message larger than the maximum message size.
    #[error("message of {0} bytes exceeds the maximum")]
    MessageTooLarge(usize),
}

/// Why a connection closed. Every close carries one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The handshake did not complete within the handshake timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer sent nothing for the idle timeout.
    #[error("peer silent for the idle timeout")]
    IdleTimeout,
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    ProtocolViolation(Violation),
    /// The peer is on another network.
    #[error("network mismatch: ours {ours:?}, theirs {theirs:?}")]
    NetworkMismatch {
        /// Our network id.
        ours: String,
        /// The peer's network id.
        theirs: String,
    },
    /// No protocol version in common.
    #[error("no common protocol version: ours {ours:?}, theirs {theirs:?}")]
    VersionMismatch {
        /// Our versions.
        ours: Vec<u32>,
        /// The peer's versions.
        theirs: Vec<u32>,
    },
    /// The peer's identity is not the one the address pinned.
    #[error("identity mismatch: expected {expected}, got {actual}")]
    IdentityMismatch {
        /// The pinned id.
        expected: PeerId,
        /// The id that answered.
        actual: PeerId,
    },
    /// We connected to ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
    /// We closed it on request (the Goodbye reason we sent).
    #[error("closed locally ({0:?})")]
    LocalRequest(GoodbyeReason),
    /// The peer said Goodbye.
    #[error("peer said goodbye ({reason:?}: {detail})")]
    RemoteGoodbye {
        /// The peer's reason.
        reason: GoodbyeReason,
        /// The peer's detail text.
        detail: String,
    },
    /// The peer closed the stream without a Goodbye.
    #[error("peer closed the connection")]
    RemoteClosed,
    /// The socket failed (connect refused, reset, …); the adapter's description.
    #[error("io: {0}")]
    Io(String),
}

impl CloseReason {
    /// The Goodbye reason we send the peer when closing for this reason.
    fn goodbye(&self) -> Option<GoodbyeReason> {
        match self {
            CloseReason::IdleTimeout => Some(GoodbyeReason::Timeout),
            CloseReason::ProtocolViolation(_) => Some(GoodbyeReason::ProtocolViolation),
            CloseReason::NetworkMismatch { .. } => Some(GoodbyeReason::NetworkMismatch),
            CloseReason::VersionMismatch { .. } => Some(GoodbyeReason::VersionMismatch),
            CloseReason::LocalRequest(r) => Some(*r),
            _ => None,
        }
    }

    /// Whether the peer is to blame (for the node's misbehaviour accounting).
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, CloseReason::ProtocolViolation(_))
    }
}

/// What the application learns from a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The handshake completed: the peer is authenticated and messages flow.
    Established {
        /// The peer's identity.
        peer: PeerId,
        /// The peer's Hello.
        hello: Box<Hello>,
        /// The negotiated protocol version.
        version: u32,
    },
    /// A message for the application (keepalive, chunking and goodbye are handled inside).
    Message(Message),
    /// A message queued with [`Connection::send_tracked`] has been written to the socket
    /// (the adapter reported all bytes up to its frame written).
    Written(u64),
    /// The connection closed. Emitted exactly once per connection. Tracked messages not yet
    /// written when it closes never produce `Written`.
    Closed(CloseReason),
}

/// What the caller must do. Drain with [`Connection::poll_output`] after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionOutput {
    /// Write these bytes to the socket, in order, then report them with
    /// [`Connection::handle_written`].
    Transmit(Vec<u8>),
    /// Stop reading from the socket until [`ConnectionOutput::ResumeRead`].
    PauseRead,
    /// Read from the socket again.
    ResumeRead,
    /// Close the socket after writing every `Transmit` emitted before this output.
    Close,
    /// Something for the application.
    Event(ConnectionEvent),
}

/// Why [`Connection::send`] refused a message. Local misuse, never the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closing or closed.
    #[error("connection is closed")]
    Closed,
    /// The encoded message exceeds the maximum message size.
    #[error("message of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The outbound queue is full (bytes or messages); retry after the peer reads.
    #[error("outbound queue full")]
    QueueFull,
    /// Chunks and Goodbyes are produced by the connection itself.
    #[error("{0:?} messages are produced by the connection itself")]
    ReservedKind(MessageKind),
    /// A field exceeds a protocol limit the peer would enforce.
    #[error("field {0} exceeds its protocol limit")]
    InvalidField(&'static str),
}

/// Counters and gauges of one connection.
///
/// Laid out in this order (`repr(C)`): the counters every packet moves share the first
/// cache line (see [`Connection`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct ConnectionStats {
    /// Bytes handed to the adapter to write (framing and encryption included).
    pub bytes_sent: u64,
    /// Bytes received from the adapter.
    pub bytes_received: u64,
    /// Whole messages sent (a chunked message counts once).
    pub messages_sent: u64,
    /// Whole messages received (a chunked message counts once).
    pub messages_received: u64,
    /// Encrypted frames sent.
    pub frames_sent: u64,
    /// Encrypted frames received.
    pub frames_received: u64,
    /// Nanosecond timestamp of the last message received.
    pub last_message_at: Option<Timestamp>,
    /// Protocol violations and failed sends seen on this connection.
    pub errors: u64,
    /// Queued messages dropped because the connection closed before sending them.
    pub messages_dropped: u64,
    /// Pings sent by keepalive.
    pub pings_sent: u64,
    /// Pongs that matched our outstanding Ping.
    pub pongs_matched: u64,
    /// Pongs with an unknown nonce or none outstanding (ignored).
    pub pongs_unmatched: u64,
    /// Keepalive pings in a row that went unanswered until the next one was due (0 after
    /// every matched Pong): the current responsiveness, where the counters give history.
    pub pings_unanswered_in_a_row: u32,
    /// Nanosecond timestamp the handshake completed.
    pub connected_since: Option<Timestamp>,
    /// Latest round-trip sample.
    pub rtt: Option<Duration>,
    /// Smoothed round-trip time (7/8 old + 1/8 sample).
    pub srtt: Option<Duration>,
    /// The AEAD protecting the transport, once the handshake completed.
    pub transport_suite: Option<TransportSuite>,
}

/// Keepalive bookkeeping. A Ping goes out when the peer has been silent for
/// `ping_interval` (keepalive), or when the round-trip sample is due (`rtt_sample_interval`),
/// whichever comes first: a busy link needs no keepalive, only a fresh sample now and then.
/// (When to look next is `Connection::ping_check`, kept with the hot fields.)
#[derive(Debug, Default)]
struct Keepalive {
    /// When the last Ping went out (the handshake's completion before the first).
    last_ping: Timestamp,
    /// When a Ping is due whatever the traffic, to take a round-trip sample.
    next_sample: Timestamp,
    outstanding: Option<(u64, Timestamp)>,
}

impl Keepalive {
    /// When the next Ping is due, given when the peer was last heard from.
    fn due(&self, last_received: Timestamp, ping_interval: Duration) -> Timestamp {
        (self.last_ping.max(last_received) + ping_interval).min(self.next_sample)
    }
}

enum Crypto {
    Handshake(Box<snow::HandshakeState>),
    Transport(Box<TransportCipher>),
    None,
}

impl core::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Crypto::Handshake(_) => "Handshake",
            Crypto::Transport(_) => "Transport",
            Crypto::None => "None",
        })
    }
}

/// Reasons the core currently wants the socket not read, as bits.
pub(crate) mod pause {
    pub const REPLY_BACKLOG: u8 = 1;
    pub const EXTERNAL: u8 = 2;
}

/// One connection's state machine. See the crate docs for the run-loop contract.
//
// The fields are in the order of how often they are touched (`repr(C)`, starting on a cache
// line): every input and output reads the first line, packets and flushes the next few, and
// the identity and rarely used state come last. A node with many connections, or a
// simulation of many nodes, finds a connection's state cold in the cache, so every line
// a step touches costs a miss (with the compiler's order a packet touched all 11 lines).
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Connection {
    // Every input and output.
    state: ConnectionState,
    paused: u8,
    role: Role,
    in_flight: usize,
    /// Bytes handed out in Transmits, and bytes reported written, since creation.
    emitted: u64,
    written: u64,
    /// The latest time any input carried (for outputs produced outside an input).
    clock: Timestamp,
    last_received: Timestamp,
    crypto: Crypto,
    // Deadlines and limits.
    /// When `handle_timeout` next looks whether a Ping is due (see [`Keepalive`]), once
    /// established: the deadline `poll_timeout` reports. Received bytes only ever make a
    /// Ping due later, so it moves at a check rather than on every packet, which would
    /// churn the embedding's timer index.
    ping_check: Option<Timestamp>,
    graceful_deadline: Option<Timestamp>,
    config: Arc<ConnectionConfig>,
    // The read side.
    decoder: PacketDecoder,
    reassembler: Reassembler,
    // The write side.
    queue: OutboundQueue,
    outputs: VecDeque<ConnectionOutput>,
    /// (emitted offset at which the message's frame ends, token), oldest first.
    tracked: VecDeque<(u64, u64)>,
    /// Its first line holds the counters every packet moves.
    stats: ConnectionStats,
    // Identity and the rest.
    local_hello: Arc<Hello>,
    local_id: PeerId,
    expected_peer: Option<PeerId>,
    remote: Option<(PeerId, Box<Hello>, u32)>,
    created_at: Timestamp,
    /// Keys the stream of ping nonces (drawn on demand: a generator's buffer would cost
    /// every idle connection 300 bytes).
    nonce_seed: [u8; 32],
    keepalive: Keepalive,
}

impl Connection {
    /// A new connection in `role`. Initiators start in [`ConnectionState::Connecting`] and
    /// begin the handshake at [`Connection::handle_connected`]; responders (the socket is
    /// already accepted) start in [`ConnectionState::Handshaking`].
    ///
    /// `expected_peer` pins the identity the peer must prove (from a `<peer-id>@addr`
    /// address). `seed` feeds every random choice this connection makes (ephemeral keys, ping
    /// nonces): pass fresh entropy in production. The handshake deadline starts at `now`.
    pub fn new(
        role: Role,
        config: Arc<ConnectionConfig>,
        local_hello: Arc<Hello>,
        keypair: &Keypair,
        expected_peer: Option<PeerId>,
        seed: [u8; 32],
        now: Timestamp,
    ) -> Self {
        let mut rng = SeededRng::from_seed(seed);
        let hs_rng = rng.derive(b"handshake");
        let nonce_seed = rng.derive_seed(b"nonces");
        let mut outputs = VecDeque::new();
        let (crypto, state) = match handshake::start(role, keypair, hs_rng) {
            Ok(hs) => (Crypto::Handshake(Box::new(hs)), ConnectionState::Connecting),
            Err(e) => {
                // Only reachable if snow itself is misconfigured; report it as a close.
                outputs.push_back(ConnectionOutput::Close);
                outputs.push_back(ConnectionOutput::Event(ConnectionEvent::Closed(
                    CloseReason::ProtocolViolation(Violation::Noise(e)),
                )));
                (Crypto::None, ConnectionState::Closed)
            }
        };
        let handshake_limit = config.max_hello_size + HANDSHAKE_OVERHEAD;
        let mut conn = Connection {
            role,
            state,
            local_hello,
            local_id: keypair.peer_id(),
            expected_peer,
            remote: None,
            crypto,
            decoder: PacketDecoder::new(handshake_limit),
            reassembler: Reassembler::new(),
            queue: OutboundQueue::default(),
            outputs,
            in_flight: 0,
            emitted: 0,
            written: 0,
            tracked: VecDeque::new(),
            paused: 0,
            created_at: now,
            clock: now,
            last_received: now,
            ping_check: None,
            keepalive: Keepalive::default(),
            graceful_deadline: None,
            nonce_seed,
            stats: ConnectionStats::default(),
            config,
        };
        if role == Role::Responder && conn.state == ConnectionState::Connecting {
            conn.state = ConnectionState::Handshaking;
        }
        conn
    }

    // ----- getters -----

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Which side we are.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The authenticated peer, once the handshake completed.
    pub fn peer_id(&self) -> Option<PeerId> {
        self.remote.as_ref().map(|r| r.0)
    }

    /// The peer's Hello, once the handshake completed.
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.remote.as_ref().map(|r| &*r.1)
    }

    /// The negotiated protocol version, once the handshake completed.
    pub fn version(&self) -> Option<u32> {
        self.remote.as_ref().map(|r| r.2)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// Encoded bytes waiting in the outbound queue.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// Messages waiting in the outbound queue.
    pub fn queued_messages(&self) -> usize {
        self.queue.messages()
    }

    /// Bytes handed out in `Transmit`s and not yet reported written.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight
    }

    /// Whether the core currently asks the adapter not to read this socket.
    pub fn is_read_paused(&self) -> bool {
        self.paused != 0
    }

    /// Bytes of memory this connection holds for buffered data: the partial packet, partial
    /// chunked messages, the outbound queue and undrained outputs.
    /// Bounded by the configuration (see the README's memory formula).
    pub fn buffered_bytes(&self) -> usize {
        let outputs: usize = self
            .outputs
            .iter()
            .map(|o| match o {
                ConnectionOutput::Transmit(b) => b.capacity(),
                _ => 0,
            })
            .sum();
        self.decoder.buffered_capacity()
            + self.reassembler.buffered_bytes()
            + self.queue.bytes()
            + outputs
    }

    // ----- inputs -----

    /// The outbound TCP connect succeeded: send handshake message 1. Ignored in other states.
    pub fn handle_connected(&mut self, now: Timestamp) {
        if self.state != ConnectionState::Connecting {
            return;
        }
        self.clock = self.clock.max(now);
        self.state = ConnectionState::Handshaking;
        self.last_received = now;
        self.write_handshake(now, &[]);
    }

    /// Bytes read from the socket, split anywhere. Processes every complete packet.
    pub fn handle_bytes(&mut self, now: Timestamp, bytes: &[u8]) {
        if matches!(
            self.state,
            ConnectionState::Closed | ConnectionState::Connecting
        ) {
            return;
        }
        self.clock = self.clock.max(now);
        self.stats.bytes_received += bytes.len() as u64;
        if !bytes.is_empty() {
            self.last_received = now;
        }
        let mut input = bytes;
        while self.state != ConnectionState::Closed {
            match self.decoder.next_packet(&mut input) {
                Ok(Some(packet)) => {
                    if matches!(self.crypto, Crypto::Handshake(_)) {
                        self.handle_handshake_packet(now, &packet);
                    } else {
                        self.handle_frame(now, packet);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.violation(now, Violation::Framing(e));
                    break;
                }
            }
        }
        self.update_reply_pause();
    }

    /// The adapter finished writing `n` bytes of earlier `Transmit`s; more may be built.
    pub fn handle_written(&mut self, now: Timestamp, n: usize) {
        self.clock = self.clock.max(now);
        self.in_flight = self.in_flight.saturating_sub(n);
        self.written += n as u64;
        while let Some(&(offset, token)) = self.tracked.front() {
            if offset > self.written {
                break;
            }
            self.tracked.pop_front();
            self.outputs
                .push_back(ConnectionOutput::Event(ConnectionEvent::Written(token)));
        }
    }

    /// The socket closed under us: `error` is `None` for a clean end of stream, else the IO
    /// error's description (connect failures included).
    pub fn handle_closed(&mut self, _now: Timestamp, error: Option<String>) {
        if self.state == ConnectionState::Closed {
            return;
        }
        let reason = match error {
            Some(e) => CloseReason::Io(e),
            None => CloseReason::RemoteClosed,
        };
        self.stats.messages_dropped += self.queue.clear();
        self.finish(reason);
    }

    /// Time passed: fires every deadline at or before `now` (handshake, keepalive, idle,
    /// reassembly, graceful close). Call it when [`Connection::poll_timeout`] is due; extra
    /// calls are harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.clock = self.clock.max(now);
        match self.state {
            ConnectionState::Closed => return,
            ConnectionState::Connecting | ConnectionState::Handshaking => {
                if now >= self.handshake_deadline() {
                    self.close_now(now, CloseReason::HandshakeTimeout);
                }
                return;
            }
            ConnectionState::Connected | ConnectionState::Closing => {}
        }
        if self.paused == 0 && now >= self.idle_deadline() {
            self.close_now(now, CloseReason::IdleTimeout);
            return;
        }
        if let Err(e) = self.reassembler.handle_timeout(now) {
            self.violation(now, Violation::Chunk(e));
            return;
        }
        if let Some(deadline) = self.graceful_deadline {
            if now >= deadline {
                self.stats.messages_dropped += self.queue.clear();
                self.close_now(now, CloseReason::LocalRequest(GoodbyeReason::Normal));
                return;
            }
        }
        if self.ping_check.is_some_and(|t| now >= t) {
            let (last_received, interval) = (self.last_received, self.config.ping_interval);
            let ka = &mut self.keepalive;
            let mut ping = None;
            if now >= ka.due(last_received, interval) {
                if ka.outstanding.is_some() {
                    self.stats.pings_unanswered_in_a_row += 1;
                }
                let nonce = nth_u64(&self.nonce_seed, self.stats.pings_sent);
                self.stats.pings_sent += 1;
                ka.outstanding = Some((nonce, now));
                ka.last_ping = now;
                ka.next_sample = now + self.config.rtt_sample_interval;
                ping = Some(nonce);
            }
            self.ping_check = Some(ka.due(last_received, interval));
            if let Some(nonce) = ping {
                let _ = self.enqueue(Outgoing::Message(Message::Ping { nonce }));
            }
        }
    }

    // ----- commands -----

    /// Whether the outbound queue has room for one more message of `len` encoded bytes: if
    /// not, [`Connection::send`] would refuse it with [`SendError::QueueFull`].
    pub fn has_room(&self, len: usize) -> bool {
        self.queue.room_for(len, &self.queue_limits()).is_ok()
    }

    fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_bytes: self.config.max_queued_bytes,
            max_messages: self.config.max_queued_messages,
            chunk_len: self.config.chunk_size,
        }
    }

    /// Queues `msg` for the peer. Allowed from creation on: messages queued before the
    /// handshake completes leave right after it. Large messages are chunked automatically.
    pub fn send(&mut self, msg: Message) -> Result<(), SendError> {
        if matches!(
            self.state,
            ConnectionState::Closing | ConnectionState::Closed
        ) {
            return Err(SendError::Closed);
        }
        if let k @ (MessageKind::Chunk | MessageKind::Goodbye) = msg.kind() {
            return Err(SendError::ReservedKind(k));
        }
        msg.validate().map_err(SendError::InvalidField)?;
        self.enqueue(Outgoing::Message(msg))
    }

    /// [`Connection::send_encoded`], and report [`ConnectionEvent::Written`] with `token`
    /// once the adapter has written the message's last byte.
    pub fn send_tracked(&mut self, msg: EncodedMessage, token: u64) -> Result<(), SendError> {
        self.check_sendable(msg.kind())?;
        self.enqueue(Outgoing::Tracked(msg, token))
    }

    fn check_sendable(&self, kind: MessageKind) -> Result<(), SendError> {
        if matches!(
            self.state,
            ConnectionState::Closing | ConnectionState::Closed
        ) {
            return Err(SendError::Closed);
        }
        if let k @ (MessageKind::Chunk | MessageKind::Goodbye) = kind {
            return Err(SendError::ReservedKind(k));
        }
        Ok(())
    }

    /// [`Connection::send`] for a message encoded once with [`Message::encoded`], so the
    /// same message queued on many connections (a broadcast) is encoded only once.
    pub fn send_encoded(&mut self, msg: EncodedMessage) -> Result<(), SendError> {
        self.check_sendable(msg.kind())?;
        self.enqueue(Outgoing::Encoded(msg))
    }

    fn enqueue(&mut self, msg: Outgoing) -> Result<(), SendError> {
        let len = match &msg {
            Outgoing::Message(m) => m.encoded_len(),
            Outgoing::Encoded(e) | Outgoing::Tracked(e, _) => e.bytes().len(),
        };
        if len > self.config.max_message_size {
            return Err(SendError::TooLarge {
                len,
                max: self.config.max_message_size,
            });
        }
        let limits = self.queue_limits();
        self.queue.push(msg, len, &limits).map_err(|e| {
            self.stats.errors += 1;
            match e {
                QueueFull::Bytes | QueueFull::Messages => SendError::QueueFull,
            }
        })
    }

    /// Closes now: drops the queue, sends a Goodbye with `reason` if the session is
    /// established, then asks the adapter to close. Emits [`ConnectionEvent::Closed`] with
    /// [`CloseReason::LocalRequest`].
    pub fn close(&mut self, now: Timestamp, reason: GoodbyeReason) {
        if self.state == ConnectionState::Closed {
            return;
        }
        self.stats.messages_dropped += self.queue.clear();
        self.close_now(now, CloseReason::LocalRequest(reason));
    }

    /// Closes gracefully: stops accepting new messages, keeps sending what is queued until
    /// the queue is empty or `deadline` passes, then sends a Goodbye and closes.
    pub fn close_gracefully(&mut self, now: Timestamp, deadline: Timestamp) {
        match self.state {
            ConnectionState::Connected => {
                self.state = ConnectionState::Closing;
                self.graceful_deadline = Some(deadline);
                self.maybe_finish_graceful(now);
            }
            ConnectionState::Connecting | ConnectionState::Handshaking => {
                self.close(now, GoodbyeReason::Normal)
            }
            ConnectionState::Closing | ConnectionState::Closed => {}
        }
    }

    /// Adds (`true`) or removes (`false`) an external reason to stop reading this peer, for
    /// example a rate limit the node enforces. Reading resumes when no reason is left.
    pub fn set_read_paused(&mut self, now: Timestamp, paused: bool) {
        self.clock = self.clock.max(now);
        self.set_pause(pause::EXTERNAL, paused);
    }

    // ----- outputs -----

    /// The next thing to do, or `None` when idle. Call until `None` after every input and
    /// command. Frames are built here, lazily, so queued messages coalesce and nothing is
    /// encrypted while the in-flight window is full.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<ConnectionOutput> {
        if let Some(o) = self.poll_made_output() {
            return Some(o);
        }
        if matches!(
            self.state,
            ConnectionState::Connected | ConnectionState::Closing
        ) {
            if let Some(t) = self.build_transmit() {
                self.update_reply_pause();
                return Some(ConnectionOutput::Transmit(t));
            }
            if self.state == ConnectionState::Closing {
                self.maybe_finish_graceful(Timestamp::ZERO);
                return self.outputs.pop_front();
            }
        }
        None
    }

    /// The outputs already made, without building a frame from the queued messages. With
    /// [`Connection::has_transmit_ready`], lets a caller that serves many connections make
    /// every connection's events first and build frames later, one transmit at a time.
    #[must_use]
    pub fn poll_made_output(&mut self) -> Option<ConnectionOutput> {
        let out = self.outputs.pop_front();
        if out.is_none() && self.outputs.capacity() > 0 {
            // Idle connections hold no spare capacity (thousands of them would add up).
            self.outputs = VecDeque::new();
        }
        out
    }

    /// Whether [`Connection::poll_output`] would build a transmit now: the connection is
    /// open, messages are queued and the in-flight window has room.
    #[must_use]
    pub fn has_transmit_ready(&self) -> bool {
        matches!(
            self.state,
            ConnectionState::Connected | ConnectionState::Closing
        ) && !self.queue.is_empty()
            && self.in_flight < self.config.max_in_flight_bytes
    }

    /// The next deadline at which [`Connection::handle_timeout`] must be called, or `None`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            ConnectionState::Closed => None,
            ConnectionState::Connecting | ConnectionState::Handshaking => {
                Some(self.handshake_deadline())
            }
            ConnectionState::Connected | ConnectionState::Closing => {
                let mut t = self.ping_check;
                if self.paused == 0 {
                    t = earliest(t, Some(self.idle_deadline()));
                }
                t = earliest(t, self.reassembler.poll_timeout());
                earliest(t, self.graceful_deadline)
            }
        }
    }

    // ----- internals -----

    fn handshake_deadline(&self) -> Timestamp {
        self.created_at + self.config.handshake_timeout
    }

    fn idle_deadline(&self) -> Timestamp {
        self.last_received + self.config.idle_timeout
    }

    fn write_handshake(&mut self, now: Timestamp, payload: &[u8]) {
        let Crypto::Handshake(hs) = &mut self.crypto else {
            return;
        };
        let mut out = vec![0u8; LEN_PREFIX + payload.len() + HANDSHAKE_OVERHEAD + 64];
        match hs.write_message(payload, &mut out[LEN_PREFIX..]) {
            Ok(n) => {
                out.truncate(LEN_PREFIX + n);
                out[..LEN_PREFIX].copy_from_slice(&(n as u16).to_be_bytes());
                self.push_transmit(out);
            }
            Err(e) => self.violation(now, Violation::Noise(e.into())),
        }
    }

    fn push_transmit(&mut self, bytes: Vec<u8>) {
        self.stats.bytes_sent += bytes.len() as u64;
        self.emitted += bytes.len() as u64;
        self.in_flight += bytes.len();
        self.outputs.push_back(ConnectionOutput::Transmit(bytes));
    }

    fn handle_handshake_packet(&mut self, now: Timestamp, packet: &[u8]) {
        let Crypto::Handshake(hs) = &mut self.crypto else {
            return;
        };
        let mut payload = vec![0u8; packet.len()];
        let n = match hs.read_message(packet, &mut payload) {
            Ok(n) => n,
            Err(e) => return self.violation(now, Violation::Noise(e.into())),
        };
        payload.truncate(n);
        let finished_reading_hello = match (self.role, hs.is_my_turn(), hs.is_handshake_finished())
        {
            // Responder after message 1: answer with message 2 carrying our Hello.
            (Role::Responder, true, false) => {
                if !payload.is_empty() {
                    return self.violation(now, Violation::UnexpectedHandshakePayload);
                }
                let hello = self.local_hello.encode();
                self.write_handshake(now, &hello);
                return;
            }
            // Initiator after message 2, or responder after message 3: the peer's Hello.
            _ => payload,
        };
        let Some(peer) = handshake::remote_peer_id(hs) else {
            return self.violation(
                now,
                Violation::Noise(NoiseError("no remote static key".into())),
            );
        };
        if peer == self.local_id {
            return self.close_now(now, CloseReason::SelfConnection);
        }
        if let Some(expected) = self.expected_peer {
            if expected != peer {
                // Do not reveal our identity (message 3) to an unexpected peer.
                return self.close_now(
                    now,
                    CloseReason::IdentityMismatch {
                        expected,
                        actual: peer,
                    },
                );
            }
        }
        let hello = match Hello::decode(&finished_reading_hello) {
            Ok(h) => h,
            Err(e) => return self.violation(now, Violation::InvalidHello(e)),
        };
        if self.role == Role::Initiator {
            let ours = self.local_hello.encode();
            self.write_handshake(now, &ours);
            if self.state == ConnectionState::Closed {
                return;
            }
        }
        let Crypto::Handshake(hs) = std::mem::replace(&mut self.crypto, Crypto::None) else {
            return;
        };
        let suite = TransportSuite::negotiate(&self.local_hello, &hello);
        match TransportCipher::from_handshake(*hs, suite) {
            Ok(t) => {
                self.crypto = Crypto::Transport(Box::new(t));
                self.stats.transport_suite = Some(suite);
            }
            Err(e) => return self.violation(now, Violation::Noise(e)),
        }
        self.decoder.set_max_len(MAX_PACKET_LEN);
        // Both sides now hold both Hellos; each validates independently and, on mismatch,
        // says why in a Goodbye before closing.
        if hello.network_id != self.local_hello.network_id {
            return self.close_now(
                now,
                CloseReason::NetworkMismatch {
                    ours: self.local_hello.network_id.clone(),
                    theirs: hello.network_id,
                },
            );
        }
        let Some(version) = negotiate_version(&self.local_hello.versions, &hello.versions) else {
            return self.close_now(
                now,
                CloseReason::VersionMismatch {
                    ours: self.local_hello.versions.clone(),
                    theirs: hello.versions,
                },
            );
        };
        self.state = ConnectionState::Connected;
        self.stats.connected_since = Some(now);
        let first = now + self.config.ping_interval;
        self.ping_check = Some(first);
        self.keepalive = Keepalive {
            last_ping: now,
            next_sample: first,
            outstanding: None,
        };
        self.remote = Some((peer, Box::new(hello.clone()), version));
        self.outputs
            .push_back(ConnectionOutput::Event(ConnectionEvent::Established {
                peer,
                hello: Box::new(hello),
                version,
            }));
    }

    fn handle_frame(&mut self, now: Timestamp, packet: Packet<'_>) {
        let Crypto::Transport(t) = &mut self.crypto else {
            return;
        };
        if packet.len() <= TAG_LEN {
            return self.violation(now, Violation::Decode(DecodeError::EmptyFrame));
        }
        // The frame is decrypted where it lies when the decoder assembled it (most large
        // frames span reads); one that arrived whole in the input is copied once. Either
        // way payloads are then handed out as zero-copy slices of it.
        let (mut buf, start) = match packet {
            Packet::Borrowed(body) => (body.to_vec(), 0),
            Packet::Owned(with_prefix) => (with_prefix, LEN_PREFIX),
        };
        let n = match t.open(&mut buf[start..]) {
            Ok(n) => n,
            Err(e) => return self.violation(now, Violation::Noise(e)),
        };
        self.stats.frames_received += 1;
        let frame = Bytes::from(buf).slice(start..start + n);
        let mut reader = crate::cbor::Reader::new(&frame);
        if reader.is_empty() {
            return self.violation(now, Violation::Decode(DecodeError::EmptyFrame));
        }
        // A frame can hold a message larger than a configured maximum below the frame size;
        // only then is each message's length worth checking.
        let check_size = frame.len() > self.config.max_message_size;
        while !reader.is_empty() && self.state != ConnectionState::Closed {
            let before = reader.remaining();
            match Message::read(&mut reader) {
                Ok(m) => {
                    let len = before - reader.remaining();
                    if check_size && len > self.config.max_message_size {
                        return self.violation(now, Violation::MessageTooLarge(len));
                    }
                    self.handle_message(now, m, false)
                }
                Err(e) => return self.violation(now, Violation::Decode(e)),
            }
        }
    }

    fn handle_message(&mut self, now: Timestamp, msg: Message, reassembled: bool) {
        if let Message::Chunk(chunk) = msg {
            if reassembled {
                return self.violation(now, Violation::Decode(DecodeError::NestedChunk));
            }
            let limits = ReassemblyLimits {
                max_message_size: self.config.max_message_size,
                max_partials: self.config.max_partial_messages,
                timeout: self.config.reassembly_timeout,
            };
            match self.reassembler.push(now, &limits, chunk) {
                Ok(None) => {}
                Ok(Some(whole)) => match Message::decode(&whole) {
                    Ok(inner) => self.handle_message(now, inner, true),
                    Err(e) => self.violation(now, Violation::Decode(e)),
                },
                Err(e) => self.violation(now, Violation::Chunk(e)),
            }
            return;
        }
        self.stats.messages_received += 1;
        self.stats.last_message_at = Some(now);
        match msg {
            Message::Ping { nonce } => {
                // A full queue means the peer is not reading; the reply backlog pause and the
                // idle timeout deal with that, so a dropped Pong is only counted.
                let _ = self.enqueue(Outgoing::Message(Message::Pong { nonce }));
            }
            Message::Pong { nonce } => {
                let ka = &mut self.keepalive;
                match ka.outstanding.filter(|(n, _)| *n == nonce) {
                    Some((_, sent)) => {
                        ka.outstanding = None;
                        self.stats.pings_unanswered_in_a_row = 0;
                        let sample = now.saturating_duration_since(sent);
                        self.stats.rtt = Some(sample);
                        self.stats.srtt = Some(match self.stats.srtt {
                            None => sample,
                            Some(s) => (s * 7 + sample) / 8,
                        });
                        self.stats.pongs_matched += 1;
                    }
                    None => self.stats.pongs_unmatched += 1,
                }
            }
            Message::Goodbye { reason, detail } => {
                self.stats.messages_dropped += self.queue.clear();
                self.outputs.push_back(ConnectionOutput::Close);
                self.finish(CloseReason::RemoteGoodbye { reason, detail });
            }
            other => self
                .outputs
                .push_back(ConnectionOutput::Event(ConnectionEvent::Message(other))),
        }
    }

    fn violation(&mut self, now: Timestamp, v: Violation) {
        self.stats.errors += 1;
        self.stats.messages_dropped += self.queue.clear();
        self.close_now(now, CloseReason::ProtocolViolation(v));
    }

    /// Sends a Goodbye (when the session allows one), asks the adapter to close, and reports.
    fn close_now(&mut self, _now: Timestamp, reason: CloseReason) {
        if self.state == ConnectionState::Closed {
            return;
        }
        self.stats.messages_dropped += self.queue.clear();
        if let (Some(goodbye), Crypto::Transport(_)) = (reason.goodbye(), &self.crypto) {
            // The Goodbye bypasses the in-flight window: it is tiny and the last thing we send.
            let detail = reason.to_string();
            let detail = truncate_utf8(&detail, message::MAX_GOODBYE_DETAIL);
            let msg = Message::Goodbye {
                reason: goodbye,
                detail: detail.to_string(),
            };
            let mut out = Vec::with_capacity(LEN_PREFIX + msg.encoded_len() + TAG_LEN);
            out.extend_from_slice(&[0; LEN_PREFIX]);
            msg.encode(&mut out);
            if self.seal_packet(&mut out, 0) {
                self.push_transmit(out);
            }
        }
        self.outputs.push_back(ConnectionOutput::Close);
        self.finish(reason);
    }

    fn finish(&mut self, reason: CloseReason) {
        self.state = ConnectionState::Closed;
        self.crypto = Crypto::None;
        self.ping_check = None;
        self.keepalive = Keepalive::default();
        self.graceful_deadline = None;
        self.reassembler = Reassembler::new();
        self.decoder = PacketDecoder::new(1);
        self.outputs
            .push_back(ConnectionOutput::Event(ConnectionEvent::Closed(reason)));
    }

    fn maybe_finish_graceful(&mut self, now: Timestamp) {
        if self.state == ConnectionState::Closing && self.queue.is_empty() {
            self.close_now(now, CloseReason::LocalRequest(GoodbyeReason::Normal));
        }
    }

    /// Seals the packet that starts at `start` in `out` (a length-prefix placeholder, then
    /// the frame's plaintext up to the end of `out`): encrypts it in place, appends the tag
    /// and fills in the prefix. On failure (only on nonce exhaustion after 2^64 frames;
    /// nothing sensible can be sent then) the packet is removed again.
    fn seal_packet(&mut self, out: &mut Vec<u8>, start: usize) -> bool {
        let Crypto::Transport(t) = &mut self.crypto else {
            out.truncate(start);
            return false;
        };
        if !t.seal(out, start + LEN_PREFIX) {
            out.truncate(start);
            return false;
        }
        let n = out.len() - start - LEN_PREFIX;
        out[start..start + LEN_PREFIX].copy_from_slice(&(n as u16).to_be_bytes());
        self.stats.frames_sent += 1;
        true
    }

    /// Builds one `Transmit` of as many frames as the window and transmit size allow.
    fn build_transmit(&mut self) -> Option<Vec<u8>> {
        if self.queue.is_empty() {
            // Idle connections hold no spare capacity: thousands of idle peers would
            // otherwise dominate the node's memory.
            self.queue.release_memory();
            return None;
        }
        let window = self
            .config
            .max_in_flight_bytes
            .saturating_sub(self.in_flight);
        let budget = window.min(self.config.max_transmit_bytes);
        if budget == 0 {
            return None;
        }
        let estimate = (self.queue.bytes() + 64).min(budget + MAX_PACKET_LEN);
        let mut out = Vec::with_capacity(estimate + LEN_PREFIX + TAG_LEN);
        let mut completed = 0;
        let mut tokens = Vec::new();
        // Later frames shrink to fit the budget, so a Transmit exceeds it only by the first
        // frame (which always goes: a chunk must be able to leave through a small window).
        const MIN_FRAME: usize = 1024;
        while !self.queue.is_empty() {
            let room = budget.saturating_sub(out.len() + LEN_PREFIX + TAG_LEN);
            let max_plain = if out.is_empty() {
                MAX_FRAME_PLAINTEXT
            } else if room >= MIN_FRAME {
                room.min(MAX_FRAME_PLAINTEXT)
            } else {
                break;
            };
            // Each frame's plaintext is built right where it is then encrypted in place.
            let start = out.len();
            out.extend_from_slice(&[0; LEN_PREFIX]);
            let max = out.len() + max_plain;
            completed += self.queue.fill_frame(&mut out, max, &mut tokens);
            if out.len() == start + LEN_PREFIX {
                out.truncate(start);
                break;
            }
            if !self.seal_packet(&mut out, start) {
                break;
            }
        }
        self.stats.messages_sent += completed;
        if out.is_empty() {
            return None;
        }
        self.stats.bytes_sent += out.len() as u64;
        self.in_flight += out.len();
        self.emitted += out.len() as u64;
        let end = self.emitted;
        self.tracked.extend(tokens.into_iter().map(|t| (end, t)));
        Some(out)
    }

    fn update_reply_pause(&mut self) {
        let backlog = self.queue.reply_bytes();
        let limit = self.config.reply_backlog_limit;
        if self.paused & pause::REPLY_BACKLOG == 0 && backlog > limit {
            self.set_pause(pause::REPLY_BACKLOG, true);
        } else if self.paused & pause::REPLY_BACKLOG != 0 && backlog <= limit / 2 {
            self.set_pause(pause::REPLY_BACKLOG, false);
        }
    }

    fn set_pause(&mut self, bit: u8, on: bool) {
        if self.state == ConnectionState::Closed {
            return;
        }
        let before = self.paused;
        if on {
            self.paused |= bit;
        } else {
            self.paused &= !bit;
        }
        if before == 0 && self.paused != 0 {
            self.outputs.push_back(ConnectionOutput::PauseRead);
        } else if before != 0 && self.paused == 0 {
            // We were not reading: the silence was ours, so the idle clock restarts now.
            self.last_received = self.last_received.max(self.clock);
            self.outputs.push_back(ConnectionOutput::ResumeRead);
        }
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// Every input and output reads only the first cache line, a packet or a flush only
    /// the first seven; the identity and the rarely used state stay out of them.
    #[test]
    fn the_fields_a_packet_touches_come_first() {
        assert_eq!(align_of::<Connection>(), 64, "starts on a cache line");
        let first_line = offset_of!(Connection, crypto) + size_of::<Crypto>();
        assert!(first_line <= 64, "the first line overflows: {first_line}");
        for f in [
            offset_of!(Connection, state),
            offset_of!(Connection, paused),
            offset_of!(Connection, in_flight),
            offset_of!(Connection, emitted),
            offset_of!(Connection, written),
            offset_of!(Connection, clock),
            offset_of!(Connection, last_received),
        ] {
            assert!(f < offset_of!(Connection, crypto));
        }
        // The counters every packet moves lead the stats.
        let counters_end =
            offset_of!(ConnectionStats, last_message_at) + size_of::<Option<Timestamp>>();
        assert!(
            counters_end <= 64,
            "per-packet counters span {counters_end} bytes"
        );
        let hot_end = offset_of!(Connection, stats) + counters_end;
        assert!(hot_end <= 7 * 64, "the hot part spans {hot_end} bytes");
        for cold in [
            offset_of!(Connection, local_hello),
            offset_of!(Connection, local_id),
            offset_of!(Connection, expected_peer),
            offset_of!(Connection, remote),
            offset_of!(Connection, created_at),
            offset_of!(Connection, nonce_seed),
        ] {
            assert!(cold >= hot_end);
        }
    }
}
