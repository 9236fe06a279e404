//! In-memory test harness: two connections joined by a simulated link in virtual time (in
//! the style of quinn-proto's `Pair`), and a raw Noise peer written against PROTOCOL.md for
//! adversarial input.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use silver_p2p_core::*;

pub const NETWORK: &str = "test-net";

pub fn hello(agent: &str) -> Hello {
    Hello {
        network_id: NETWORK.into(),
        versions: vec![PROTOCOL_VERSION],
        capabilities: Capabilities::ALL,
        listen_addrs: vec!["127.0.0.1:9000".parse().unwrap()],
        agent: agent.into(),
    }
}

pub fn keypair(seed: u8) -> Keypair {
    Keypair::generate(&mut SeededRng::from_seed([seed; 32]))
}

/// One direction of the link: transmits in order, delivered at most `rate` bytes per step.
#[derive(Default)]
struct Wire {
    pending: VecDeque<Vec<u8>>,
    offset: usize,
    /// The sender asked for the socket to close after the pending bytes.
    close_after: bool,
    /// Bytes are "written" but never arrive (a lossy middlebox; TCP would not do this, but
    /// it models a peer that stopped processing).
    blackhole: bool,
    /// Nothing moves: writes never complete (a peer that stopped reading).
    stalled: bool,
}

/// One side of the pair with everything it emitted.
pub struct Side {
    pub conn: Connection,
    pub events: Vec<ConnectionEvent>,
    pub paused: bool,
    /// The socket is gone (either end closed it).
    pub socket_closed: bool,
    /// This side emitted `Close`.
    pub closed_locally: bool,
}

impl Side {
    pub fn messages(&self) -> Vec<Message> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ConnectionEvent::Message(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.events.iter().find_map(|e| match e {
            ConnectionEvent::Closed(r) => Some(r),
            _ => None,
        })
    }

    pub fn established(&self) -> Option<(PeerId, u32)> {
        self.events.iter().find_map(|e| match e {
            ConnectionEvent::Established { peer, version, .. } => Some((*peer, *version)),
            _ => None,
        })
    }

    pub fn closed_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, ConnectionEvent::Closed(_)))
            .count()
    }
}

/// Two connections and the link between them, in virtual time.
pub struct Pair {
    pub a: Side,
    pub b: Side,
    ab: Wire,
    ba: Wire,
    pub now: Timestamp,
    /// Bytes each direction carries per step (the link's bandwidth).
    pub rate: usize,
    /// Virtual time each step takes.
    pub step_time: Duration,
}

pub struct PairBuilder {
    pub config_a: ConnectionConfig,
    pub config_b: ConnectionConfig,
    pub hello_a: Hello,
    pub hello_b: Hello,
    pub key_a: Keypair,
    pub key_b: Keypair,
    pub pin: Option<PeerId>,
    /// Which side dials.
    pub a_dials: bool,
}

impl Default for PairBuilder {
    fn default() -> Self {
        PairBuilder {
            config_a: ConnectionConfig::default(),
            config_b: ConnectionConfig::default(),
            hello_a: hello("a"),
            hello_b: hello("b"),
            key_a: keypair(1),
            key_b: keypair(2),
            pin: None,
            a_dials: true,
        }
    }
}

impl PairBuilder {
    pub fn build(self) -> Pair {
        let now = Timestamp::from_secs(1000);
        let (ra, rb) = if self.a_dials {
            (Role::Initiator, Role::Responder)
        } else {
            (Role::Responder, Role::Initiator)
        };
        let pin_a = if self.a_dials { self.pin } else { None };
        let pin_b = if self.a_dials { None } else { self.pin };
        let mut a = Connection::new(
            ra,
            Arc::new(self.config_a),
            Arc::new(self.hello_a),
            &self.key_a,
            pin_a,
            [11; 32],
            now,
        );
        let mut b = Connection::new(
            rb,
            Arc::new(self.config_b),
            Arc::new(self.hello_b),
            &self.key_b,
            pin_b,
            [12; 32],
            now,
        );
        if self.a_dials {
            a.handle_connected(now);
        } else {
            b.handle_connected(now);
        }
        let side = |conn| Side {
            conn,
            events: Vec::new(),
            paused: false,
            socket_closed: false,
            closed_locally: false,
        };
        Pair {
            a: side(a),
            b: side(b),
            ab: Wire::default(),
            ba: Wire::default(),
            now,
            rate: usize::MAX,
            step_time: Duration::from_millis(1),
        }
    }
}

fn drain(side: &mut Side, wire: &mut Wire) -> bool {
    let mut any = false;
    while let Some(out) = side.conn.poll_output() {
        any = true;
        match out {
            ConnectionOutput::Transmit(bytes) => {
                assert!(!side.closed_locally, "transmit after close");
                if !side.socket_closed {
                    wire.pending.push_back(bytes);
                }
            }
            ConnectionOutput::PauseRead => {
                assert!(!side.paused);
                side.paused = true;
            }
            ConnectionOutput::ResumeRead => {
                assert!(side.paused);
                side.paused = false;
            }
            ConnectionOutput::Close => {
                assert!(!side.closed_locally, "close twice");
                side.closed_locally = true;
                side.socket_closed = true;
                wire.close_after = true;
            }
            ConnectionOutput::Event(e) => side.events.push(e),
            other => panic!("unexpected output {other:?}"),
        }
    }
    any
}

/// Moves up to `rate` bytes from `from`'s wire into `to`; returns whether anything moved.
fn deliver(now: Timestamp, rate: usize, wire: &mut Wire, from: &mut Side, to: &mut Side) -> bool {
    let mut budget = rate;
    let mut moved = false;
    if to.paused || wire.stalled {
        return false;
    }
    while budget > 0 {
        let Some(front) = wire.pending.front() else {
            break;
        };
        let take = (front.len() - wire.offset).min(budget);
        let piece = front[wire.offset..wire.offset + take].to_vec();
        wire.offset += take;
        budget -= take;
        if wire.offset == front.len() {
            wire.pending.pop_front();
            wire.offset = 0;
        }
        from.conn.handle_written(now, take);
        if !wire.blackhole && !to.socket_closed {
            to.conn.handle_bytes(now, &piece);
        }
        moved = true;
        if to.paused {
            break;
        }
    }
    if wire.pending.is_empty() && wire.close_after {
        wire.close_after = false;
        if !to.socket_closed {
            to.conn.handle_closed(now, None);
            to.socket_closed = true;
        }
        moved = true;
    }
    moved
}

impl Pair {
    pub fn new() -> Pair {
        PairBuilder::default().build()
    }

    /// Drains both sides' outputs and moves one step's worth of bytes each way.
    pub fn step(&mut self) -> bool {
        let mut any = drain(&mut self.a, &mut self.ab) | drain(&mut self.b, &mut self.ba);
        any |= deliver(self.now, self.rate, &mut self.ab, &mut self.a, &mut self.b);
        any |= deliver(self.now, self.rate, &mut self.ba, &mut self.b, &mut self.a);
        any |= drain(&mut self.a, &mut self.ab) | drain(&mut self.b, &mut self.ba);
        if any && self.rate != usize::MAX {
            self.now += self.step_time;
            // A real loop fires due timers between socket events.
            for side in [&mut self.a, &mut self.b] {
                if side.conn.poll_timeout().is_some_and(|t| t <= self.now) {
                    side.conn.handle_timeout(self.now);
                }
            }
        }
        any
    }

    /// Steps until nothing moves (timers are not fired).
    pub fn drive(&mut self) {
        for _ in 0..10_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("pair did not go idle");
    }

    /// Jumps the clock to the earliest deadline of either side and fires it. Returns false
    /// when neither side has a deadline.
    pub fn advance_to_next_timeout(&mut self) -> bool {
        let t = [self.a.conn.poll_timeout(), self.b.conn.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(t) = t else { return false };
        self.now = self.now.max(t);
        self.a.conn.handle_timeout(self.now);
        self.b.conn.handle_timeout(self.now);
        true
    }

    /// Drives, firing timers, until virtual time reaches `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        loop {
            self.drive();
            let next = [self.a.conn.poll_timeout(), self.b.conn.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.conn.handle_timeout(self.now);
                    self.b.conn.handle_timeout(self.now);
                }
                _ => {
                    self.now = self.now.max(until);
                    self.drive();
                    return;
                }
            }
        }
    }

    /// Bytes from b stop reaching a (b still thinks they were written).
    pub fn blackhole_b_to_a(&mut self) {
        self.ba.blackhole = true;
    }

    /// Bytes from a stop reaching b.
    pub fn blackhole_a_to_b(&mut self) {
        self.ab.blackhole = true;
    }

    /// b stops reading: a's writes stop completing.
    pub fn stall_a_to_b(&mut self) {
        self.ab.stalled = true;
    }

    /// b reads again.
    pub fn unstall_a_to_b(&mut self) {
        self.ab.stalled = false;
    }

    /// Bytes currently in flight a→b (not yet delivered).
    pub fn pending_a_to_b(&self) -> usize {
        self.ab.pending.iter().map(|p| p.len()).sum::<usize>() - self.ab.offset
    }
}

/// A peer driven by hand with snow, following PROTOCOL.md, that can send arbitrary frames.
pub struct RawPeer {
    pub transport: Option<snow::TransportState>,
    pub key: Keypair,
}

fn raw_builder(key: &Keypair) -> snow::Builder<'_> {
    let resolver = snow::resolvers::FallbackResolver::new(
        Box::new(snow::resolvers::RingResolver),
        Box::new(snow::resolvers::DefaultResolver),
    );
    snow::Builder::with_resolver(NOISE_PARAMS.parse().unwrap(), Box::new(resolver))
        .prologue(PROLOGUE)
        .unwrap()
        .local_private_key(key.private_key())
        .unwrap()
}

pub fn packet(body: &[u8]) -> Vec<u8> {
    silver_p2p_core::frame::encode_packet(body)
}

/// Collects every Transmit the connection emits (events are kept in `events`).
pub fn collect(conn: &mut Connection, events: &mut Vec<ConnectionEvent>) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(o) = conn.poll_output() {
        match o {
            ConnectionOutput::Transmit(b) => {
                conn.handle_written(Timestamp::ZERO, b.len());
                bytes.extend_from_slice(&b)
            }
            ConnectionOutput::Event(e) => events.push(e),
            _ => {}
        }
    }
    bytes
}

pub fn first_packet_body(bytes: &[u8]) -> &[u8] {
    let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    &bytes[2..2 + len]
}

impl RawPeer {
    /// Completes a handshake as initiator against `victim` (a responder) and returns the
    /// raw peer in transport mode. The victim's events are appended to `events`.
    pub fn connect(
        victim: &mut Connection,
        now: Timestamp,
        events: &mut Vec<ConnectionEvent>,
    ) -> RawPeer {
        RawPeer::connect_with(keypair(99), |bytes| {
            victim.handle_bytes(now, bytes);
            collect(victim, events)
        })
    }

    /// Completes a handshake as initiator with key `key`, `exchange` delivering our bytes
    /// to the responder and returning what it sent back.
    pub fn connect_with(key: Keypair, mut exchange: impl FnMut(&[u8]) -> Vec<u8>) -> RawPeer {
        let mut hs = raw_builder(&key).build_initiator().unwrap();
        let mut buf = vec![0u8; 65535];
        let n = hs.write_message(&[], &mut buf).unwrap();
        let reply = exchange(&packet(&buf[..n]));
        let mut payload = vec![0u8; 65535];
        hs.read_message(first_packet_body(&reply), &mut payload)
            .unwrap();
        // Speaks ChaChaPoly only, like an implementation that never sets `AES_GCM`: the
        // victim must fall back to it.
        let raw_hello = Hello {
            capabilities: Capabilities::ALL.without(Capabilities::AES_GCM),
            ..hello("raw")
        };
        let n = hs.write_message(&raw_hello.encode(), &mut buf).unwrap();
        exchange(&packet(&buf[..n]));
        RawPeer {
            transport: Some(hs.into_transport_mode().unwrap()),
            key,
        }
    }

    /// A transport packet (length prefix included) carrying `plaintext`.
    pub fn frame(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; plaintext.len() + 16];
        let n = self
            .transport
            .as_mut()
            .unwrap()
            .write_message(plaintext, &mut buf)
            .unwrap();
        packet(&buf[..n])
    }

    /// Starts a handshake as initiator and returns message 1 with the given payload.
    pub fn message1_with_payload(payload: &[u8]) -> Vec<u8> {
        let key = keypair(98);
        let mut hs = raw_builder(&key).build_initiator().unwrap();
        let mut buf = vec![0u8; 65535];
        let n = hs.write_message(payload, &mut buf).unwrap();
        packet(&buf[..n])
    }
}

/// A responder connection with default config, for adversarial tests.
pub fn victim(config: ConnectionConfig) -> Connection {
    Connection::new(
        Role::Responder,
        Arc::new(config),
        Arc::new(hello("victim")),
        &keypair(7),
        None,
        [8; 32],
        Timestamp::ZERO,
    )
}
pub mod net;
