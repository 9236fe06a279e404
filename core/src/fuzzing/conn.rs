//! Targets over one [`Connection`]: the handshake with the fuzzer playing the other side,
//! and arbitrary inputs against an established connection.

use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use crate::frame::{encode_packet, PacketDecoder, MAX_PACKET_LEN};
use crate::handshake::{self, Role, TransportCipher, TransportSuite, MAX_NOISE_MESSAGE};
use crate::{
    Capabilities, Connection, ConnectionConfig, ConnectionEvent, ConnectionOutput, ConnectionState,
    GoodbyeReason, Hello, Keypair, Message, PeerAddr, PeerId, SeededRng, Timestamp,
    PROTOCOL_VERSION,
};

/// The network id of every connection under test.
const NETWORK: &str = "fuzz";

/// Our Hello: it asks for AES-256-GCM, so the peer's Hello decides the transport suite.
pub(super) fn hello(agent: &str) -> Arc<Hello> {
    hello_asking(agent, true)
}

/// A Hello with every capability, asking for AES-256-GCM or not.
pub(super) fn hello_asking(agent: &str, aes_gcm: bool) -> Arc<Hello> {
    let capabilities = if aes_gcm {
        Capabilities::ALL
    } else {
        Capabilities::ALL.without(Capabilities::AES_GCM)
    };
    Arc::new(Hello {
        network_id: NETWORK.into(),
        versions: vec![PROTOCOL_VERSION],
        capabilities,
        listen_addrs: vec![],
        agent: agent.into(),
    })
}

pub(super) fn keypair(n: u8) -> Keypair {
    Keypair::generate(&mut SeededRng::from_seed([n; 32]))
}

/// A valid connection configuration with small, fuzzer-chosen bounds, so the fuzzer can
/// reach every limit (queue full, window full, reply backlog, too many partials) in a few
/// hundred bytes of input. Falls back to the defaults if the draw breaks a rule.
pub(super) fn small_config(u: &mut Unstructured<'_>) -> ConnectionConfig {
    let mut draw = || -> arbitrary::Result<ConnectionConfig> {
        let chunk_size = u.int_in_range(512..=4096usize)?;
        let max_message_size = chunk_size * u.int_in_range(1..=16usize)?;
        let ping = u.int_in_range(1..=60_000u64)?;
        Ok(ConnectionConfig {
            handshake_timeout: Duration::from_millis(u.int_in_range(1..=20_000)?),
            ping_interval: Duration::from_millis(ping),
            rtt_sample_interval: Duration::from_millis(u.int_in_range(1..=120_000)?),
            idle_timeout: Duration::from_millis(ping + u.int_in_range(1..=60_000u64)?),
            max_hello_size: 1024,
            max_message_size,
            chunk_size,
            max_partial_messages: u.int_in_range(1..=4)?,
            reassembly_timeout: Duration::from_millis(u.int_in_range(1..=20_000)?),
            max_queued_bytes: max_message_size * u.int_in_range(1..=4usize)?,
            max_queued_messages: u.int_in_range(1..=256)?,
            max_in_flight_bytes: u.int_in_range(1024..=65_536)?,
            max_transmit_bytes: u.int_in_range(1024..=65_536)?,
            reply_backlog_limit: u.int_in_range(1024..=16_384)?,
        })
    };
    match draw() {
        Ok(c) if c.validate().is_ok() => c,
        _ => ConnectionConfig::default(),
    }
}

/// A message from fuzz bytes: a decodable encoding as itself, anything else as an App
/// payload (so both every kind and arbitrary payloads are reachable).
pub(super) fn message_from(raw: Vec<u8>) -> Message {
    let bytes = Bytes::from(raw);
    Message::decode(&bytes).unwrap_or(Message::App {
        kind: 0,
        data: bytes,
    })
}

/// The properties every connection under test must keep, checked on each output.
#[derive(Debug, Default)]
pub(super) struct ConnCheck {
    /// The connection's [`ConnectionConfig::max_buffered_bytes`].
    bound: usize,
    established: bool,
    closed: bool,
    /// `Close` was output: the adapter closes the socket once the bytes before it are out.
    close_output: bool,
    paused: bool,
}

impl ConnCheck {
    pub(super) fn new(config: &ConnectionConfig) -> Self {
        ConnCheck {
            bound: config.max_buffered_bytes(),
            ..ConnCheck::default()
        }
    }

    /// Drains `conn`, checking its memory bound first and every output; returns the bytes
    /// it asked to transmit and the messages it delivered.
    pub(super) fn drain(&mut self, conn: &mut Connection, wire: &mut Vec<u8>) -> Vec<Message> {
        let bound = self.bound;
        let held = conn.buffered_bytes();
        assert!(
            held <= bound,
            "connection holds {held} bytes, bound {bound}"
        );
        let mut delivered = Vec::new();
        while let Some(out) = conn.poll_output() {
            match out {
                ConnectionOutput::Transmit(bytes) => {
                    assert!(!self.close_output, "transmit after Close");
                    assert!(!bytes.is_empty(), "empty transmit");
                    wire.extend_from_slice(&bytes);
                }
                ConnectionOutput::PauseRead => self.paused = true,
                ConnectionOutput::ResumeRead => self.paused = false,
                ConnectionOutput::Close => self.close_output = true,
                ConnectionOutput::Event(e) => {
                    assert!(!self.closed, "event after Closed: {e:?}");
                    match e {
                        ConnectionEvent::Established { peer, .. } => {
                            assert!(!self.established, "established twice");
                            assert_eq!(conn.peer_id(), Some(peer));
                            self.established = true;
                        }
                        ConnectionEvent::Message(m) => {
                            assert!(self.established, "message before the handshake: {m:?}");
                            delivered.push(m);
                        }
                        ConnectionEvent::Closed(_) => self.closed = true,
                        _ => {}
                    }
                }
            }
        }
        if conn.state() == ConnectionState::Closed {
            assert!(self.closed, "closed without a Closed event and reason");
        }
        if self.closed {
            assert_eq!(conn.state(), ConnectionState::Closed);
        }
        delivered
    }
}

/// The fuzzer's side of a handshake: a bare Noise state it drives with chosen payloads, then
/// the transport suite the two Hellos agree on, as an honest peer would.
struct NoisePeer {
    id: PeerId,
    handshake: Option<snow::HandshakeState>,
    transport: Option<TransportCipher>,
    decoder: PacketDecoder,
    broken: bool,
    /// The payloads this side put in its handshake messages.
    sent_payloads: Vec<Vec<u8>>,
    /// The payloads it read from the connection's handshake messages.
    received_payloads: Vec<Vec<u8>>,
}

impl NoisePeer {
    fn new(role: Role, key: &Keypair) -> Self {
        NoisePeer {
            id: key.peer_id(),
            handshake: handshake::start(role, key, SeededRng::from_seed([0xee; 32])).ok(),
            transport: None,
            decoder: PacketDecoder::new(MAX_PACKET_LEN),
            broken: false,
            sent_payloads: Vec::new(),
            received_payloads: Vec::new(),
        }
    }

    /// Reads what the connection under test sent, keeping the Noise states in step.
    fn read(&mut self, wire: &mut Vec<u8>) {
        let bytes = std::mem::take(wire);
        let mut input = &bytes[..];
        let mut buf = vec![0; MAX_NOISE_MESSAGE];
        while !self.broken {
            let packet = match self.decoder.next_packet(&mut input) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(_) => {
                    self.broken = true;
                    break;
                }
            };
            let ok = if let Some(hs) = self.handshake.as_mut() {
                match hs.read_message(&packet, &mut buf) {
                    Ok(n) => {
                        self.received_payloads.push(buf[..n].to_vec());
                        true
                    }
                    Err(_) => false,
                }
            } else if let Some(t) = self.transport.as_mut() {
                let mut sealed = packet.to_vec();
                t.open(&mut sealed).is_ok()
            } else {
                false
            };
            self.broken |= !ok;
            self.finish_handshake();
        }
    }

    fn finish_handshake(&mut self) {
        if self
            .handshake
            .as_ref()
            .is_some_and(|hs| hs.is_handshake_finished())
        {
            let hs = self.handshake.take().expect("checked");
            // The suite both Hellos agree on; a Hello that does not decode ends the
            // connection anyway, so ChaCha20-Poly1305 is as good a guess as any there.
            let hellos =
                |payloads: &[Vec<u8>]| payloads.iter().rev().find_map(|p| Hello::decode(p).ok());
            let suite = match (hellos(&self.sent_payloads), hellos(&self.received_payloads)) {
                (Some(ours), Some(theirs)) => TransportSuite::negotiate(&ours, &theirs),
                _ => TransportSuite::ChaCha20Poly1305,
            };
            match TransportCipher::from_handshake(hs, suite) {
                Ok(t) => self.transport = Some(t),
                Err(_) => self.broken = true,
            }
        }
    }

    /// The next handshake message carrying `payload`, or a transport frame of it once the
    /// handshake is over; `None` when it is not this side's turn or the state is broken.
    fn write(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        if self.broken || payload.len() > MAX_NOISE_MESSAGE - 200 {
            return None;
        }
        let mut buf = vec![0; MAX_NOISE_MESSAGE];
        let n = if let Some(hs) = self.handshake.as_mut() {
            if !hs.is_my_turn() {
                return None;
            }
            self.sent_payloads.push(payload.to_vec());
            hs.write_message(payload, &mut buf).ok()?
        } else {
            let mut frame = payload.to_vec();
            if !self.transport.as_mut()?.seal(&mut frame, 0) {
                return None;
            }
            buf = frame;
            buf.len()
        };
        self.finish_handshake();
        Some(encode_packet(&buf[..n]))
    }
}

/// A Hello the fuzzer fills in; `encode` lets it be valid or break any limit.
#[derive(Debug, Arbitrary)]
struct FuzzHello {
    same_network: bool,
    versions: Vec<u32>,
    capabilities: u64,
    addrs: Vec<([u8; 4], u16)>,
    agent: String,
}

impl FuzzHello {
    fn encode(self) -> Vec<u8> {
        Hello {
            network_id: if self.same_network {
                NETWORK.into()
            } else {
                "other".into()
            },
            versions: self.versions,
            capabilities: Capabilities(self.capabilities),
            listen_addrs: self
                .addrs
                .into_iter()
                .map(|(ip, port)| PeerAddr::new((ip, port).into()).socket)
                .collect(),
            agent: self.agent,
        }
        .encode()
    }
}

/// One step of a handshake target.
#[derive(Debug, Arbitrary)]
enum HandshakeStep {
    /// The fuzzer's side writes its next Noise message with a Hello it filled in.
    Hello(FuzzHello),
    /// … or with arbitrary payload bytes (after the handshake: a frame's plaintext).
    Payload(Vec<u8>),
    /// … or, once connected, a frame of messages.
    Frame(Vec<Vec<u8>>),
    /// Arbitrary bytes on the stream, as a packet.
    Packet(Vec<u8>),
    /// Arbitrary bytes on the stream.
    Raw(Vec<u8>),
    /// The fuzzer's side reads what the connection under test sent.
    Read,
    /// The application sends a message on the connection under test.
    Send(Vec<u8>),
    /// Time passes; due timers fire.
    Advance(u16),
    /// The socket closes.
    Eof,
}

/// `handshake_initiator`: our connection dials; the fuzzer answers as the responder.
pub fn handshake_initiator(data: &[u8]) {
    handshake_target(Role::Initiator, data);
}

/// `handshake_responder`: our connection accepts; the fuzzer dials as the initiator.
pub fn handshake_responder(data: &[u8]) {
    handshake_target(Role::Responder, data);
}

/// The handshake targets: whatever the fuzzer's side does, no message reaches the
/// application before the handshake completes; a completed handshake authenticated exactly
/// the fuzzer's Noise key (and the pinned identity, when one was pinned) with a Hello of our
/// network and a common version; memory stays bounded and every close has a reason.
fn handshake_target(role: Role, data: &[u8]) {
    let mut u = Unstructured::new(data);
    let config = Arc::new(small_config(&mut u));
    let mut check = ConnCheck::new(&config);
    let pin: u8 = u.arbitrary().unwrap_or(0);
    let local_key = keypair(1);
    let peer_key = keypair(2);
    // Pinning: none, the right identity, or a wrong one (which must never establish).
    let expected = match pin % 3 {
        0 => None,
        1 => Some(peer_key.peer_id()),
        _ => Some(keypair(3).peer_id()),
    };
    let mut now = Timestamp::ZERO;
    let mut conn = Connection::new(
        role,
        config,
        hello("local"),
        &local_key,
        expected,
        [5; 32],
        now,
    );
    let peer_role = match role {
        Role::Initiator => Role::Responder,
        Role::Responder => Role::Initiator,
    };
    let mut peer = NoisePeer::new(peer_role, &peer_key);
    let mut wire = Vec::new();
    if role == Role::Initiator {
        conn.handle_connected(now);
    }
    check.drain(&mut conn, &mut wire);
    let mut taken = 0;
    while let Some(step) = super::next_step::<HandshakeStep>(&mut u, &mut taken, 64) {
        let was_established = check.established;
        let input = match step {
            HandshakeStep::Hello(h) => peer.write(&h.encode()),
            HandshakeStep::Payload(p) => peer.write(&p),
            HandshakeStep::Frame(messages) => {
                let mut plain = Vec::new();
                for m in messages {
                    message_from(m).encode(&mut plain);
                }
                peer.write(&plain)
            }
            HandshakeStep::Packet(p) if !p.is_empty() && p.len() <= MAX_PACKET_LEN => {
                Some(encode_packet(&p))
            }
            HandshakeStep::Packet(_) => None,
            HandshakeStep::Raw(r) => Some(r),
            HandshakeStep::Read => {
                peer.read(&mut wire);
                None
            }
            HandshakeStep::Send(m) => {
                let _ = conn.send(message_from(m));
                None
            }
            HandshakeStep::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 16);
                if conn.poll_timeout().is_some_and(|t| t <= now) {
                    conn.handle_timeout(now);
                }
                None
            }
            HandshakeStep::Eof => {
                conn.handle_closed(now, None);
                None
            }
        };
        if let Some(bytes) = input {
            if !check.paused && !check.close_output {
                conn.handle_bytes(now, &bytes);
            }
        }
        let transmitted = wire.len();
        check.drain(&mut conn, &mut wire);
        let sent = wire.len() - transmitted;
        if sent > 0 {
            conn.handle_written(now, sent);
            check.drain(&mut conn, &mut wire);
        }
        if check.established && !was_established {
            assert_eq!(
                conn.peer_id(),
                Some(peer.id),
                "established with an identity that did not do the handshake"
            );
            if let Some(pinned) = expected {
                assert_eq!(pinned, peer.id, "established despite a pinned identity");
            }
            let hello = peer
                .sent_payloads
                .iter()
                .rev()
                .find_map(|p| Hello::decode(p).ok())
                .expect("established without a Hello from the peer");
            assert_eq!(hello.network_id, NETWORK, "established across networks");
            assert!(
                hello.versions.contains(&PROTOCOL_VERSION),
                "established without a common version"
            );
        }
    }
}

/// One step of the `connection_inputs` program. "Remote" is an honest connection on the
/// other end; the fuzzer controls the wire between them, the clock and both applications.
#[derive(Debug, Arbitrary)]
enum ConnStep {
    /// Deliver up to this many of the remote's bytes to the connection under test.
    Deliver(u16),
    /// Flip bits of one pending byte from the remote.
    Corrupt { at: u16, xor: u8 },
    /// Insert arbitrary bytes in front of the remote's pending bytes.
    Inject(Vec<u8>),
    /// Deliver up to this many of our bytes to the remote.
    Return(u16),
    /// Report up to this many of our transmitted bytes written.
    Written(u16),
    /// Our application sends a message.
    Send(Vec<u8>),
    /// Our application sends a large message (chunked, or refused as too large).
    SendLarge(u32),
    /// The remote's application sends a message.
    RemoteSend(Vec<u8>),
    /// The remote's application sends a large message.
    RemoteSendLarge(u32),
    /// Time passes (in units of 16 ms); due timers fire on both sides.
    Advance(u16),
    /// Our application closes: gracefully (with a deadline) or at once.
    Close { graceful: bool },
    /// The remote's application closes.
    RemoteClose,
    /// Our socket fails or ends.
    SocketClosed { error: bool },
    /// The adapter pauses or resumes reading for its own reasons.
    Pause(bool),
}

/// `connection_inputs`: arbitrary inputs, time steps and wire faults against one connection
/// whose peer is an honest connection. Checked after every step: the memory bound, message
/// delivery only after the handshake, one Closed event with a reason, and (while the wire is
/// untouched) exactly-once in-order delivery of what the remote's application sent.
pub fn connection_inputs(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let config = Arc::new(small_config(&mut u));
    let remote_config = Arc::new(small_config(&mut u));
    let remote_chunk_size = remote_config.chunk_size;
    let we_dial: bool = u.arbitrary().unwrap_or(true);
    // Ours asks for AES-256-GCM: the remote's Hello picks the transport suite.
    let remote_asks_aes: bool = u.arbitrary().unwrap_or(false);
    let (role, remote_role) = if we_dial {
        (Role::Initiator, Role::Responder)
    } else {
        (Role::Responder, Role::Initiator)
    };
    let (mut check, mut remote_check) = (ConnCheck::new(&config), ConnCheck::new(&remote_config));
    let mut now = Timestamp::ZERO;
    let (local_key, remote_key) = (keypair(1), keypair(2));
    let mut conn = Connection::new(role, config, hello("local"), &local_key, None, [5; 32], now);
    let mut remote = Connection::new(
        remote_role,
        remote_config,
        hello_asking("remote", remote_asks_aes),
        &remote_key,
        None,
        [6; 32],
        now,
    );
    // Bytes in flight each way, and how many of ours are not yet reported written.
    let (mut to_local, mut to_remote) = (Vec::new(), Vec::new());
    let mut unreported = 0usize;
    // What the remote's application sent and what we delivered, while the wire is intact.
    let mut tampered = false;
    let mut remote_sent: Vec<Message> = Vec::new();
    let mut delivered: Vec<Message> = Vec::new();
    match role {
        Role::Initiator => conn.handle_connected(now),
        Role::Responder => remote.handle_connected(now),
    }
    let mut taken = 0;
    loop {
        let before = to_local.len();
        remote_check.drain(&mut remote, &mut to_local);
        let sent = to_local.len() - before;
        if sent > 0 {
            remote.handle_written(now, sent);
            remote_check.drain(&mut remote, &mut to_local);
        }
        let before = to_remote.len();
        delivered.extend(check.drain(&mut conn, &mut to_remote));
        unreported += to_remote.len() - before;

        let Some(step) = super::next_step::<ConnStep>(&mut u, &mut taken, 256) else {
            break;
        };
        match step {
            ConnStep::Deliver(n) => {
                if !check.paused && !check.close_output && !to_local.is_empty() {
                    let n = usize::from(n).clamp(1, to_local.len());
                    let chunk: Vec<u8> = to_local.drain(..n).collect();
                    conn.handle_bytes(now, &chunk);
                }
            }
            ConnStep::Corrupt { at, xor } => {
                if !to_local.is_empty() && xor != 0 {
                    let i = usize::from(at) % to_local.len();
                    to_local[i] ^= xor;
                    tampered = true;
                }
            }
            ConnStep::Inject(bytes) => {
                tampered |= !bytes.is_empty();
                to_local.splice(0..0, bytes);
            }
            ConnStep::Return(n) => {
                if !remote_check.paused && !remote_check.close_output && !to_remote.is_empty() {
                    let n = usize::from(n).clamp(1, to_remote.len());
                    let chunk: Vec<u8> = to_remote.drain(..n).collect();
                    remote.handle_bytes(now, &chunk);
                }
                if check.close_output && to_remote.is_empty() {
                    remote.handle_closed(now, None);
                }
            }
            ConnStep::Written(n) => {
                let n = usize::from(n).min(unreported);
                if n > 0 {
                    unreported -= n;
                    conn.handle_written(now, n);
                }
            }
            ConnStep::Send(m) => {
                let _ = conn.send(message_from(m));
            }
            ConnStep::SendLarge(len) => {
                let data = Bytes::from(vec![7; (len % (1 << 18)) as usize]);
                let _ = conn.send(Message::Block { data });
            }
            ConnStep::RemoteSend(m) => {
                let m = message_from(m);
                if remote.send(m.clone()).is_ok() && is_application(&m) {
                    remote_sent.push(m);
                }
            }
            ConnStep::RemoteSendLarge(len) => {
                let m = Message::Block {
                    data: Bytes::from(vec![9; (len % (1 << 18)) as usize]),
                };
                if remote.send(m.clone()).is_ok() {
                    remote_sent.push(m);
                }
            }
            ConnStep::Advance(units) => {
                now += Duration::from_millis(u64::from(units) * 16);
                for c in [&mut conn, &mut remote] {
                    if c.poll_timeout().is_some_and(|t| t <= now) {
                        c.handle_timeout(now);
                    }
                }
            }
            ConnStep::Close { graceful: true } => {
                conn.close_gracefully(now, now + Duration::from_secs(1));
            }
            ConnStep::Close { graceful: false } => conn.close(now, GoodbyeReason::Normal),
            ConnStep::RemoteClose => remote.close(now, GoodbyeReason::Normal),
            ConnStep::SocketClosed { error } => {
                conn.handle_closed(now, error.then(|| "reset".to_string()));
            }
            ConnStep::Pause(paused) => conn.set_read_paused(now, paused),
        }
        if !tampered {
            // The connection keeps order within a sending class (control, data, chunked
            // bulk), not across classes: each class must arrive exactly once, in order.
            for class in 0..3 {
                let of_class = |msgs: &[Message]| -> Vec<Message> {
                    msgs.iter()
                        .filter(|m| send_class(m, remote_chunk_size) == class)
                        .cloned()
                        .collect()
                };
                let (sent, got) = (of_class(&remote_sent), of_class(&delivered));
                assert!(
                    sent.starts_with(&got),
                    "class {class} delivery is not exactly-once in order: sent {:?}, delivered {:?}",
                    sent.iter().map(Message::kind).collect::<Vec<_>>(),
                    got.iter().map(Message::kind).collect::<Vec<_>>()
                );
            }
        }
    }
}

/// The sending class of `m` on a connection with `chunk_size`: 0 control, 1 data, 2 bulk
/// (chunked).
fn send_class(m: &Message, chunk_size: usize) -> u8 {
    if m.encoded_len() > chunk_size {
        2
    } else {
        match m.kind().priority() {
            crate::Priority::Control => 0,
            _ => 1,
        }
    }
}

/// Messages that reach the receiving application as `ConnectionEvent::Message` (keepalive
/// and goodbye are consumed by the connection itself).
fn is_application(m: &Message) -> bool {
    !matches!(
        m,
        Message::Ping { .. } | Message::Pong { .. } | Message::Goodbye { .. }
    )
}
