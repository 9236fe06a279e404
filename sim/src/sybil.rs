//! An adversarial actor that floods honest nodes with fake peer addresses.
//!
//! It is not a `Node`: it drives the core's own per-connection machine
//! ([`silver_p2p_core::Connection`]) directly, so its handshakes, encryption and keepalive are
//! real and honest nodes cannot tell it from a peer, while what it sends is chosen here. It
//! dials honest nodes, accepts their dials, and on every connection:
//!
//! * sends an unsolicited `Peers` message with `addrs_per_message` fake addresses every
//!   `flood_interval` (exercising the per-peer unsolicited-address rate limit), and
//! * answers every `GetPeers` with the same kind of list (solicited addresses bypass the rate
//!   limit, so this exercises the address book's per-source-group caps and bucketing).
//!
//! Fake addresses are in 200.0.0.0/8 and up (spread over many /16 netgroups), where no
//! simulated host listens: dials to them time out. It does not send malformed frames (the
//! core's adversarial tests cover those) and it never relays gossip.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use silver_p2p_core::message::Message;
use silver_p2p_core::node::{AcceptError, ConnectionId, Input, Output};
use silver_p2p_core::{
    Capabilities, Connection, ConnectionConfig, ConnectionEvent, ConnectionOutput, Hello, Keypair,
    PeerAddr, Role, SeededRng, Timestamp, PROTOCOL_VERSION,
};

/// What a sybil node does.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SybilConfig {
    /// How many sybil nodes join (each with its own identity and IP, all in one /16).
    pub count: usize,
    /// Honest nodes each sybil dials (it redials to keep this many connections).
    pub dials: usize,
    /// How often it sends an unsolicited `Peers` message on every connection.
    pub flood_interval: Duration,
    /// Fake addresses per `Peers` message (the protocol allows at most 1000).
    pub addrs_per_message: usize,
}

impl Default for SybilConfig {
    /// One sybil dialing 8 honest nodes, 1000 fake addresses per connection every second.
    fn default() -> Self {
        SybilConfig {
            count: 1,
            dials: 8,
            flood_interval: Duration::from_secs(1),
            addrs_per_message: 1000,
        }
    }
}

/// The first address of the fake range: every fake IP is at or above it.
pub const FAKE_ADDR_BASE: u32 = 0xC800_0000; // 200.0.0.0

/// Whether `ip` is one of the fake addresses sybils advertise.
pub fn is_fake(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) >= FAKE_ADDR_BASE,
        IpAddr::V6(_) => false,
    }
}

/// The sybil's state machine, with the same run-loop shape as a `Node`.
#[derive(Debug)]
pub(crate) struct Sybil {
    config: Arc<ConnectionConfig>,
    hello: Arc<Hello>,
    keypair: Keypair,
    rng: SeededRng,
    params: SybilConfig,
    conns: BTreeMap<ConnectionId, Connection>,
    established: BTreeSet<ConnectionId>,
    dialing: BTreeSet<ConnectionId>,
    next_conn: u64,
    outputs: VecDeque<Output>,
    targets: Vec<SocketAddr>,
    next_tick: Timestamp,
    fake_counter: u32,
    /// Fake addresses sent so far.
    pub sent_addrs: u64,
}

impl Sybil {
    /// A sybil speaking on `network_id`, announcing `listen`, dialing among `targets`.
    pub fn new(
        network_id: &str,
        listen: SocketAddr,
        keypair: Keypair,
        seed: [u8; 32],
        params: SybilConfig,
        targets: Vec<SocketAddr>,
        now: Timestamp,
    ) -> Sybil {
        let hello = Hello {
            network_id: network_id.into(),
            versions: vec![PROTOCOL_VERSION],
            capabilities: Capabilities::ALL,
            listen_addrs: vec![listen],
            agent: "sim-sybil".into(),
        };
        Sybil {
            config: Arc::new(ConnectionConfig::default()),
            hello: Arc::new(hello),
            keypair,
            rng: SeededRng::from_seed(seed),
            params,
            conns: BTreeMap::new(),
            established: BTreeSet::new(),
            dialing: BTreeSet::new(),
            next_conn: 0,
            outputs: VecDeque::new(),
            targets,
            next_tick: now,
            fake_counter: 0,
            sent_addrs: 0,
        }
    }

    fn new_conn(&mut self, now: Timestamp, role: Role) -> ConnectionId {
        let id = ConnectionId(self.next_conn);
        self.next_conn += 1;
        let seed = self.rng.derive_seed(b"sybil-conn");
        let conn = Connection::new(
            role,
            self.config.clone(),
            self.hello.clone(),
            &self.keypair,
            None,
            seed,
            now,
        );
        self.conns.insert(id, conn);
        id
    }

    /// An inbound connection from `remote`: always accepted.
    pub fn accept(
        &mut self,
        now: Timestamp,
        _remote: SocketAddr,
    ) -> Result<ConnectionId, AcceptError> {
        Ok(self.new_conn(now, Role::Responder))
    }

    pub fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        match input {
            Input::Connected { conn } => {
                self.dialing.remove(&conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.handle_connected(now);
                }
                self.flush(now, conn);
            }
            Input::Received { conn, bytes } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.handle_bytes(now, bytes);
                }
                self.flush(now, conn);
            }
            Input::Written { conn, bytes } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.handle_written(now, bytes);
                }
                self.flush(now, conn);
            }
            Input::Closed { conn, error } => {
                self.dialing.remove(&conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.handle_closed(now, error);
                }
                self.flush(now, conn);
            }
            _ => self.on_timeout(now),
        }
    }

    fn on_timeout(&mut self, now: Timestamp) {
        let due: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for id in due {
            if let Some(c) = self.conns.get_mut(&id) {
                c.handle_timeout(now);
            }
            self.flush(now, id);
        }
        if now >= self.next_tick {
            self.next_tick = now + self.params.flood_interval;
            let ids: Vec<ConnectionId> = self.established.iter().copied().collect();
            for id in ids {
                self.send_fakes(id);
                self.flush(now, id);
            }
            let open = self.conns.len();
            for _ in open..self.params.dials {
                if self.targets.is_empty() {
                    break;
                }
                let addr = self.targets[self.rng.below(self.targets.len() as u64) as usize];
                let id = self.new_conn(now, Role::Initiator);
                self.dialing.insert(id);
                self.outputs.push_back(Output::Dial { conn: id, addr });
            }
        }
    }

    fn send_fakes(&mut self, id: ConnectionId) {
        let n = self.params.addrs_per_message.min(1000);
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            self.fake_counter = self.fake_counter.wrapping_add(1);
            // Stride 257 spreads consecutive fakes over many /16 netgroups.
            let ip = FAKE_ADDR_BASE
                + (self.fake_counter.wrapping_mul(257) % (0xFFFF_FFFF - FAKE_ADDR_BASE));
            addrs.push(PeerAddr::new(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                7000,
            )));
        }
        if let Some(c) = self.conns.get_mut(&id) {
            if c.send(Message::Peers { addrs }).is_ok() {
                self.sent_addrs += n as u64;
            }
        }
    }

    fn flush(&mut self, now: Timestamp, id: ConnectionId) {
        let mut closed = false;
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(out) = c.poll_output() else { break };
            match out {
                ConnectionOutput::Transmit(bytes) => {
                    self.outputs.push_back(Output::Transmit { conn: id, bytes })
                }
                ConnectionOutput::Close => self.outputs.push_back(Output::Close { conn: id }),
                ConnectionOutput::PauseRead => {
                    self.outputs.push_back(Output::PauseRead { conn: id })
                }
                ConnectionOutput::ResumeRead => {
                    self.outputs.push_back(Output::ResumeRead { conn: id })
                }
                ConnectionOutput::Event(ConnectionEvent::Established { .. }) => {
                    self.established.insert(id);
                    self.send_fakes(id);
                }
                ConnectionOutput::Event(ConnectionEvent::Message(Message::GetPeers { .. })) => {
                    self.send_fakes(id);
                }
                ConnectionOutput::Event(ConnectionEvent::Closed(_)) => closed = true,
                _ => {}
            }
        }
        let _ = now;
        if closed {
            self.conns.remove(&id);
            self.established.remove(&id);
            self.dialing.remove(&id);
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.conns
            .values()
            .filter_map(|c| c.poll_timeout())
            .chain(std::iter::once(self.next_tick))
            .min()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.conns.values().map(|c| c.buffered_bytes()).sum()
    }
}
