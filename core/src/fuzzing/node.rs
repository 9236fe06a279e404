//! The `node_inputs` target: a [`Node`] with several fake peers (honest connections whose
//! wire, timing and messages the fuzzer controls) and every command of the node's API.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use super::conn::{hello, keypair, message_from, small_config, ConnCheck};
use crate::node::{
    BroadcastOptions, ConnectionId, Event, GossipMessage, InboundRequestId, Input, MessageId, Node,
    NodeConfig, Output, RelayMode, Request, Validation,
};
use crate::{Connection, PeerAddr, PeerId, Role, Timestamp};

/// Most fake peers one input creates (each costs a handshake).
const MAX_PEERS: usize = 8;
/// Most steps one input runs.
const MAX_STEPS: usize = 256;
/// Most timer firings one clock step may cause before the timer wheel is deemed stuck.
const MAX_TIMEOUTS_PER_STEP: usize = 10_000;

/// One step of the `node_inputs` program. Peers are named by index, modulo their count.
#[derive(Debug, Arbitrary)]
enum NodeStep {
    /// A new peer dials the node from `10.0.<ip>.1`.
    Inbound { ip: u8 },
    /// The node is told to dial a new address `10.1.<ip>.1:7000`, pinned or not.
    Dial { ip: u8, pinned: bool },
    /// Up to `n` of a peer's bytes reach the node.
    Deliver { peer: u8, n: u16 },
    /// Up to `n` of the node's bytes reach a peer.
    Return { peer: u8, n: u16 },
    /// A pending byte to the node is corrupted.
    Corrupt { peer: u8, at: u16, xor: u8 },
    /// Arbitrary bytes are inserted in front of a peer's pending bytes.
    Inject { peer: u8, bytes: Vec<u8> },
    /// A peer's application sends a message (any kind: gossip, peers, requests, acks…).
    PeerSend { peer: u8, message: Vec<u8> },
    /// A peer closes.
    PeerClose { peer: u8 },
    /// A peer's socket fails under the node.
    SocketClosed { peer: u8, error: bool },
    /// The node's application broadcasts.
    Broadcast {
        block: bool,
        data: Vec<u8>,
        fanout: Option<u8>,
        exclude: Option<u8>,
    },
    /// … sends a unicast.
    Unicast { peer: u8, data: Vec<u8> },
    /// … sends a request.
    Request {
        peer: u8,
        block: bool,
        data: Vec<u8>,
    },
    /// … answers the nth pending inbound request.
    Respond { nth: u8, answer: Option<Vec<u8>> },
    /// … judges the nth gossip awaiting validation.
    Validate { nth: u8, verdict: u8 },
    /// … blames a peer for an invalid payload.
    ReportInvalid { peer: u8 },
    /// … bans or unbans a peer.
    Ban { peer: u8, secs: u16 },
    /// … unbans a peer.
    Unban { peer: u8 },
    /// … disconnects a peer.
    Disconnect { peer: u8 },
    /// … asks for discovery.
    Discover,
    /// … restores arbitrary snapshot bytes.
    Restore(Vec<u8>),
    /// … snapshots and restores its own snapshot, which must be accepted.
    SnapshotRoundTrip,
    /// Time passes (in units of 64 ms); due timers fire.
    Advance(u16),
    /// The node shuts down with a grace period.
    Shutdown,
}

/// A peer of the node under test: an honest connection and the wire between them.
struct FakePeer {
    conn: Connection,
    check: ConnCheck,
    node_conn: ConnectionId,
    to_node: Vec<u8>,
    to_peer: Vec<u8>,
    /// The node output `Close` for this connection: its socket is gone.
    node_closed: bool,
    /// The node output `PauseRead`.
    node_paused: bool,
    /// The node was told the socket closed.
    socket_closed: bool,
}

/// The node under test, its fake peers, and the consistency checks on its events.
struct Harness {
    node: Node,
    now: Timestamp,
    peers: Vec<FakePeer>,
    next_key: u8,
    connected: BTreeMap<PeerId, ConnectionId>,
    requests: Vec<InboundRequestId>,
    pending_validation: Vec<MessageId>,
    per_conn_bound: usize,
    max_connections: usize,
    relay_validate: bool,
}

/// `node_inputs`: arbitrary inputs and commands against a node with up to eight fake peers.
/// Checked after every step: the node's memory accounting within the per-connection bound
/// times its connections, the connection limit, peer events consistent (a peer connects
/// once before any message from it and disconnects once), messages only from connected
/// peers, timers that advance, and its own snapshot always restorable.
pub fn node_inputs(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let connection = small_config(&mut u);
    let relay_validate: bool = u.arbitrary().unwrap_or(false);
    let tree_gossip: bool = u.arbitrary().unwrap_or(false);
    let max_connections = usize::from(u.int_in_range(2..=6u8).unwrap_or(4));
    let mut config = NodeConfig {
        network_id: "fuzz".into(),
        listen_addrs: vec!["10.9.9.9:7000".parse().expect("literal")],
        connection,
        ..NodeConfig::default()
    };
    config.limits.max_connections = max_connections;
    config.limits.max_inbound = max_connections;
    config.limits.max_outbound = max_connections.min(config.limits.max_outbound);
    config.limits.target_outbound = config.limits.max_outbound.min(2);
    config.limits.max_pending_handshakes = max_connections;
    config.limits.max_inbound_per_ip = 2;
    if relay_validate {
        config.gossip.relay = RelayMode::Validate;
    }
    if tree_gossip {
        // Peers' IHave, IWant and Prune then reach the tree logic; its tables are small
        // so their bounds are hit.
        config.gossip.mode = crate::node::GossipMode::Tree;
        config.gossip.max_pending_wants = 4;
        config.gossip.max_history_bytes = 4096;
    }
    let per_conn_bound = config.connection.max_buffered_bytes();
    let Ok(node) = Node::new(config, keypair(100), [7; 32], Timestamp::ZERO) else {
        return;
    };
    let mut h = Harness {
        node,
        now: Timestamp::ZERO,
        peers: Vec::new(),
        next_key: 1,
        connected: BTreeMap::new(),
        requests: Vec::new(),
        pending_validation: Vec::new(),
        per_conn_bound,
        max_connections,
        relay_validate,
    };
    h.settle();
    let mut taken = 0;
    while let Some(step) = super::next_step::<NodeStep>(&mut u, &mut taken, MAX_STEPS) {
        h.step(step);
        h.settle();
    }
}

impl Harness {
    fn peer(&mut self, i: u8) -> Option<&mut FakePeer> {
        if self.peers.is_empty() {
            return None;
        }
        let n = self.peers.len();
        self.peers.get_mut(usize::from(i) % n)
    }

    fn peer_id(&self, i: u8) -> Option<PeerId> {
        if self.peers.is_empty() {
            return None;
        }
        let n = self.peers.len();
        self.peers[usize::from(i) % n].conn.peer_id()
    }

    fn new_peer(&mut self, role: Role, node_conn: ConnectionId) -> FakePeer {
        let key = keypair(self.next_key);
        self.next_key = self.next_key.wrapping_add(1).max(1);
        let config = Arc::new(crate::ConnectionConfig::default());
        let check = ConnCheck::new(&config);
        let seed = [self.next_key; 32];
        FakePeer {
            conn: Connection::new(role, config, hello("fake"), &key, None, seed, self.now),
            check,
            node_conn,
            to_node: Vec::new(),
            to_peer: Vec::new(),
            node_closed: false,
            node_paused: false,
            socket_closed: false,
        }
    }

    fn step(&mut self, step: NodeStep) {
        let now = self.now;
        match step {
            NodeStep::Inbound { ip } => {
                if self.peers.len() < MAX_PEERS {
                    let from = SocketAddr::from((Ipv4Addr::new(10, 0, ip, 1), 40_000));
                    if let Ok(conn) = self.node.accept(now, from) {
                        let mut peer = self.new_peer(Role::Initiator, conn);
                        peer.conn.handle_connected(now);
                        self.peers.push(peer);
                    }
                }
            }
            NodeStep::Dial { ip, pinned } => {
                let socket = SocketAddr::from((Ipv4Addr::new(10, 1, ip, 1), 7000));
                let addr = if pinned {
                    PeerAddr::pinned(keypair(self.next_key).peer_id(), socket)
                } else {
                    PeerAddr::new(socket)
                };
                let _ = self.node.connect(now, addr);
            }
            NodeStep::Deliver { peer, n } => {
                let Some(p) = self.peer(peer) else { return };
                if p.node_paused || p.node_closed || p.socket_closed || p.to_node.is_empty() {
                    return;
                }
                let n = usize::from(n).clamp(1, p.to_node.len());
                let bytes: Vec<u8> = p.to_node.drain(..n).collect();
                let conn = p.node_conn;
                self.node.handle_input(
                    now,
                    Input::Received {
                        conn,
                        bytes: &bytes,
                    },
                );
            }
            NodeStep::Return { peer, n } => {
                let Some(p) = self.peer(peer) else { return };
                if !p.to_peer.is_empty() {
                    let n = usize::from(n).clamp(1, p.to_peer.len());
                    let bytes: Vec<u8> = p.to_peer.drain(..n).collect();
                    p.conn.handle_bytes(now, &bytes);
                }
                if p.node_closed && p.to_peer.is_empty() {
                    p.conn.handle_closed(now, None);
                }
            }
            NodeStep::Corrupt { peer, at, xor } => {
                let Some(p) = self.peer(peer) else { return };
                if !p.to_node.is_empty() {
                    let i = usize::from(at) % p.to_node.len();
                    p.to_node[i] ^= xor;
                }
            }
            NodeStep::Inject { peer, bytes } => {
                let Some(p) = self.peer(peer) else { return };
                p.to_node.splice(0..0, bytes);
            }
            NodeStep::PeerSend { peer, message } => {
                let Some(p) = self.peer(peer) else { return };
                let _ = p.conn.send(message_from(message));
            }
            NodeStep::PeerClose { peer } => {
                let Some(p) = self.peer(peer) else { return };
                p.conn.close(now, crate::GoodbyeReason::Normal);
            }
            NodeStep::SocketClosed { peer, error } => {
                let Some(p) = self.peer(peer) else { return };
                if p.socket_closed || p.node_closed {
                    return;
                }
                p.socket_closed = true;
                let conn = p.node_conn;
                p.conn.handle_closed(now, Some("reset".into()));
                let error = error.then(|| "reset".to_string());
                self.node.handle_input(now, Input::Closed { conn, error });
            }
            NodeStep::Broadcast {
                block,
                data,
                fanout,
                exclude,
            } => {
                let data = Bytes::from(data);
                let message = if block {
                    GossipMessage::Block(data)
                } else {
                    GossipMessage::Transaction(data)
                };
                let exclude = exclude.and_then(|i| self.peer_id(i)).into_iter().collect();
                let opts = BroadcastOptions {
                    fanout: fanout.map(usize::from),
                    exclude,
                    filter: None,
                };
                let _ = self.node.broadcast(now, message, opts);
            }
            NodeStep::Unicast { peer, data } => {
                if let Some(id) = self.peer_id(peer) {
                    let _ = self.node.unicast(now, &id, 1, Bytes::from(data));
                }
            }
            NodeStep::Request { peer, block, data } => {
                if let Some(id) = self.peer_id(peer) {
                    let request = if block {
                        Request::GetBlock(Bytes::from(data))
                    } else {
                        Request::App {
                            kind: 2,
                            data: Bytes::from(data),
                        }
                    };
                    let _ = self.node.request(now, &id, request);
                }
            }
            NodeStep::Respond { nth, answer } => {
                if !self.requests.is_empty() {
                    let i = usize::from(nth) % self.requests.len();
                    let id = self.requests.swap_remove(i);
                    let _ = self.node.respond(now, id, answer.map(Bytes::from));
                }
            }
            NodeStep::Validate { nth, verdict } => {
                if !self.pending_validation.is_empty() {
                    let i = usize::from(nth) % self.pending_validation.len();
                    let id = self.pending_validation.swap_remove(i);
                    let verdict = match verdict % 3 {
                        0 => Validation::Accept,
                        1 => Validation::Reject,
                        _ => Validation::Ignore,
                    };
                    let _ = self.node.validation_result(now, id, verdict);
                }
            }
            NodeStep::ReportInvalid { peer } => {
                if let Some(id) = self.peer_id(peer) {
                    let _ = self.node.report_invalid_payload(now, &id);
                }
            }
            NodeStep::Ban { peer, secs } => {
                if let Some(id) = self.peer_id(peer) {
                    self.node.ban(now, id, Duration::from_secs(u64::from(secs)));
                }
            }
            NodeStep::Unban { peer } => {
                if let Some(id) = self.peer_id(peer) {
                    self.node.unban(&id);
                }
            }
            NodeStep::Disconnect { peer } => {
                if let Some(id) = self.peer_id(peer) {
                    let _ = self.node.disconnect(now, &id);
                }
            }
            NodeStep::Discover => self.node.discover(now),
            NodeStep::Restore(bytes) => {
                let _ = self.node.restore(now, &bytes);
            }
            NodeStep::SnapshotRoundTrip => {
                let snapshot = self.node.snapshot(now);
                if let Err(e) = self.node.restore(now, &snapshot) {
                    panic!("the node rejects its own snapshot: {e}");
                }
            }
            NodeStep::Advance(units) => {
                self.now += Duration::from_millis(u64::from(units) * 64);
                let now = self.now;
                for p in &mut self.peers {
                    if p.conn.poll_timeout().is_some_and(|t| t <= now) {
                        p.conn.handle_timeout(now);
                    }
                }
                let mut fired = 0;
                while self.node.poll_timeout().is_some_and(|t| t <= now) {
                    self.node.handle_input(now, Input::Timeout);
                    self.drain_node();
                    fired += 1;
                    assert!(
                        fired < MAX_TIMEOUTS_PER_STEP,
                        "the node's deadline does not advance past {now:?}"
                    );
                }
            }
            NodeStep::Shutdown => self.node.shutdown(now, Duration::from_secs(2)),
        }
    }

    /// Drains every output of the node and of the fake peers until all are quiet.
    fn settle(&mut self) {
        for _ in 0..16 {
            let mut moved = self.drain_node();
            for p in &mut self.peers {
                let before = p.to_node.len();
                // What a fake peer receives is checked only by its connection's own properties.
                let _ = p.check.drain(&mut p.conn, &mut p.to_node);
                let sent = p.to_node.len() - before;
                if sent > 0 {
                    moved = true;
                    p.conn.handle_written(self.now, sent);
                }
            }
            if !moved {
                break;
            }
        }
        let peers = self.node.peers();
        assert!(
            peers.len() <= self.max_connections,
            "{} peers registered, limit {}",
            peers.len(),
            self.max_connections
        );
        for info in &peers {
            assert_eq!(
                self.connected.get(&info.peer),
                Some(&info.conn),
                "a registered peer without a PeerConnected event"
            );
        }
    }

    /// Drains the node's outputs, routing them to the fake peers and checking its events.
    /// Returns whether anything came out.
    fn drain_node(&mut self) -> bool {
        let live = self.peers.iter().filter(|p| !p.node_closed).count() + 1;
        let held = self.node.buffered_bytes();
        let bound = self.per_conn_bound * live;
        assert!(held <= bound, "node holds {held} bytes, bound {bound}");
        let mut any = false;
        while let Some(out) = self.node.poll_output() {
            any = true;
            match out {
                Output::Transmit { conn, bytes } => {
                    let n = bytes.len();
                    if let Some(p) = self.peers.iter_mut().find(|p| p.node_conn == conn) {
                        assert!(!p.node_closed, "transmit after Close");
                        p.to_peer.extend_from_slice(&bytes);
                    }
                    self.node
                        .handle_input(self.now, Input::Written { conn, bytes: n });
                }
                Output::Dial { conn, .. } => {
                    if self.peers.len() < MAX_PEERS {
                        let peer = self.new_peer(Role::Responder, conn);
                        self.peers.push(peer);
                        self.node.handle_input(self.now, Input::Connected { conn });
                    } else {
                        let error = Some("refused".to_string());
                        self.node
                            .handle_input(self.now, Input::Closed { conn, error });
                    }
                }
                Output::Close { conn } => {
                    if let Some(p) = self.peers.iter_mut().find(|p| p.node_conn == conn) {
                        p.node_closed = true;
                    }
                }
                Output::PauseRead { conn } => self.set_paused(conn, true),
                Output::ResumeRead { conn } => self.set_paused(conn, false),
                Output::Event(event) => self.on_event(event),
            }
        }
        any
    }

    fn set_paused(&mut self, conn: ConnectionId, paused: bool) {
        if let Some(p) = self.peers.iter_mut().find(|p| p.node_conn == conn) {
            p.node_paused = paused;
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::PeerConnected { peer, conn, .. } => {
                let previous = self.connected.insert(peer, conn);
                assert!(previous.is_none(), "{peer} connected twice without leaving");
            }
            Event::PeerDisconnected { peer, conn, .. } => {
                let known = self.connected.remove(&peer);
                assert_eq!(known, Some(conn), "disconnect of a peer not connected");
            }
            Event::Gossip { id, from, .. } => {
                self.assert_connected(&from, "gossip");
                if self.relay_validate {
                    self.pending_validation.push(id);
                    self.pending_validation.truncate(64);
                }
            }
            Event::Unicast { from, .. } => self.assert_connected(&from, "unicast"),
            Event::Request { id, from, .. } => {
                self.assert_connected(&from, "request");
                self.requests.push(id);
                self.requests.truncate(64);
            }
            _ => {}
        }
    }

    fn assert_connected(&self, from: &PeerId, what: &str) {
        assert!(
            self.connected.contains_key(from),
            "{what} from {from}, which is not connected"
        );
    }
}
