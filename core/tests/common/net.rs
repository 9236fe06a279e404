//! An in-memory network of `Node`s in virtual time: the adapter's job (sockets, timers)
//! done by a router, so multi-node behaviour is tested deterministically.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use silver_p2p_core::node::*;
use silver_p2p_core::*;

pub struct SimNode {
    pub node: Node,
    pub addr: SocketAddr,
    pub events: Vec<Event>,
    pub up: bool,
    /// How many times the node's own deadline woke it (`Input::Timeout`), and when.
    pub wakeups: Vec<Timestamp>,
}

#[derive(Debug)]
enum Delivery {
    Bytes(Vec<u8>),
    Eof,
    Connected,
    Refused(String),
}

pub struct Net {
    pub nodes: Vec<SimNode>,
    pub now: Timestamp,
    pub latency: Duration,
    /// (node, conn) -> (node, conn) for established links.
    links: BTreeMap<(usize, ConnectionId), (usize, ConnectionId)>,
    queue: BTreeMap<(Timestamp, u64), (usize, ConnectionId, Delivery)>,
    seq: u64,
    /// Links whose bytes in one direction are dropped: (from node, to node).
    pub cut: BTreeSet<(usize, usize)>,
    /// Read-paused connections.
    paused: BTreeSet<(usize, ConnectionId)>,
}

pub fn node_addr(i: usize) -> SocketAddr {
    format!("10.{}.{}.1:7000", i / 250, i % 250)
        .parse()
        .unwrap()
}

pub fn config_for(i: usize, bootstrap: Option<(PeerId, SocketAddr)>) -> NodeConfig {
    let mut c = NodeConfig {
        network_id: "test".into(),
        listen_addrs: vec![node_addr(i)],
        ..Default::default()
    };
    if let Some((id, a)) = bootstrap {
        c.bootstrap = vec![PeerAddr::pinned(id, a)];
    }
    c
}

pub fn key(i: usize) -> Keypair {
    Keypair::generate(&mut SeededRng::from_seed([(i % 251) as u8 + 1; 32]))
}

impl Net {
    pub fn new() -> Net {
        Net {
            nodes: Vec::new(),
            now: Timestamp::from_secs(1),
            latency: Duration::from_millis(10),
            links: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            paused: BTreeSet::new(),
        }
    }

    /// `n` nodes, every one bootstrapping from node 0; `tweak` adjusts each config.
    pub fn star(n: usize, tweak: impl Fn(usize, &mut NodeConfig)) -> Net {
        let mut net = Net::new();
        let boot = (key(0).peer_id(), node_addr(0));
        for i in 0..n {
            let mut c = config_for(i, (i > 0).then_some(boot));
            tweak(i, &mut c);
            net.add(c, key(i));
        }
        net
    }

    pub fn add(&mut self, config: NodeConfig, key: Keypair) -> usize {
        let i = self.nodes.len();
        let addr = config.listen_addrs[0];
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 1000).to_le_bytes());
        let node = Node::new(config, key, seed, self.now).expect("valid config");
        self.nodes.push(SimNode {
            node,
            addr,
            events: Vec::new(),
            wakeups: Vec::new(),
            up: true,
        });
        i
    }

    fn schedule(&mut self, at: Timestamp, node: usize, conn: ConnectionId, d: Delivery) {
        self.seq += 1;
        self.queue.insert((at, self.seq), (node, conn, d));
    }

    /// Drains every node's outputs, routing them.
    fn drain(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].node.poll_output() {
                    any = true;
                    self.route(i, out);
                }
            }
            if !any {
                return;
            }
        }
    }

    fn route(&mut self, i: usize, out: Output) {
        let now = self.now;
        match out {
            Output::Transmit { conn, bytes } => {
                let n = bytes.len();
                if let Some(&(j, jc)) = self.links.get(&(i, conn)) {
                    if !self.cut.contains(&(i, j)) {
                        self.schedule(now + self.latency, j, jc, Delivery::Bytes(bytes));
                    }
                }
                // The socket accepted the bytes.
                self.nodes[i]
                    .node
                    .handle_input(now, Input::Written { conn, bytes: n });
            }
            Output::Dial { conn, addr } => {
                let target = self.nodes.iter().position(|n| n.up && n.addr == addr);
                let from =
                    SocketAddr::new(self.nodes[i].addr.ip(), 40_000 + (conn.0 % 20_000) as u16);
                match target {
                    Some(j) => match self.nodes[j].node.accept(now, from) {
                        Ok(jc) => {
                            self.links.insert((i, conn), (j, jc));
                            self.links.insert((j, jc), (i, conn));
                            self.schedule(now + self.latency, i, conn, Delivery::Connected);
                        }
                        Err(e) => self.schedule(
                            now + self.latency,
                            i,
                            conn,
                            Delivery::Refused(e.to_string()),
                        ),
                    },
                    None => self.schedule(
                        now + self.latency,
                        i,
                        conn,
                        Delivery::Refused("connection refused".into()),
                    ),
                }
            }
            Output::Close { conn } => {
                if let Some((j, jc)) = self.links.remove(&(i, conn)) {
                    self.links.remove(&(j, jc));
                    self.schedule(now + self.latency, j, jc, Delivery::Eof);
                }
            }
            Output::PauseRead { conn } => {
                self.paused.insert((i, conn));
            }
            Output::ResumeRead { conn } => {
                self.paused.remove(&(i, conn));
            }
            Output::Event(e) => self.nodes[i].events.push(e),
            other => panic!("unexpected output {other:?}"),
        }
    }

    fn next_time(&self) -> Option<Timestamp> {
        let q = self.queue.keys().next().map(|(t, _)| *t);
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.node.poll_timeout())
            .min();
        [q, timers].into_iter().flatten().min()
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Timestamp) {
        self.drain();
        while let Some(t) = self.next_time() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            let now = self.now;
            // Deliveries due now, in order.
            while let Some((&(t, s), _)) = self.queue.iter().next() {
                if t > now {
                    break;
                }
                let (j, conn, d) = self.queue.remove(&(t, s)).unwrap();
                if !self.nodes[j].up {
                    continue;
                }
                if matches!(d, Delivery::Bytes(_)) && self.paused.contains(&(j, conn)) {
                    // Not reading: the bytes wait (a real kernel buffer would fill up).
                    self.schedule(now + Duration::from_millis(1), j, conn, d);
                    continue;
                }
                let node = &mut self.nodes[j].node;
                match d {
                    Delivery::Bytes(b) => {
                        node.handle_input(now, Input::Received { conn, bytes: &b })
                    }
                    Delivery::Eof => node.handle_input(now, Input::Closed { conn, error: None }),
                    Delivery::Connected => node.handle_input(now, Input::Connected { conn }),
                    Delivery::Refused(e) => node.handle_input(
                        now,
                        Input::Closed {
                            conn,
                            error: Some(e),
                        },
                    ),
                }
                self.drain();
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].up && self.nodes[i].node.poll_timeout().is_some_and(|t| t <= now) {
                    self.nodes[i].wakeups.push(now);
                    self.nodes[i].node.handle_input(now, Input::Timeout);
                }
            }
            self.drain();
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Applies a command to node `i` at the current time and routes what it produces.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Timestamp) -> R) -> R {
        let r = f(&mut self.nodes[i].node, self.now);
        self.drain();
        r
    }

    pub fn id(&self, i: usize) -> PeerId {
        self.nodes[i].node.peer_id()
    }

    pub fn outbound(&self, i: usize) -> usize {
        self.nodes[i]
            .node
            .peers()
            .iter()
            .filter(|p| p.direction == Direction::Outbound)
            .count()
    }

    /// The nodes node `i` has a link to.
    pub fn linked(&self, i: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .links
            .iter()
            .filter(|((a, _), _)| *a == i)
            .map(|(_, (b, _))| *b)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Resets every link between nodes `a` and `b` (both ends see end-of-stream).
    pub fn reset_links(&mut self, a: usize, b: usize) {
        let pairs: Vec<((usize, ConnectionId), (usize, ConnectionId))> = self
            .links
            .iter()
            .filter(|((i, _), (j, _))| *i == a && *j == b)
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((i, ic), (j, jc)) in pairs {
            self.links.remove(&(i, ic));
            self.links.remove(&(j, jc));
            let now = self.now;
            self.nodes[i].node.handle_input(
                now,
                Input::Closed {
                    conn: ic,
                    error: Some("reset".into()),
                },
            );
            self.nodes[j].node.handle_input(
                now,
                Input::Closed {
                    conn: jc,
                    error: Some("reset".into()),
                },
            );
        }
        self.drain();
    }

    /// Crashes node `i` (peers see resets) and starts it again with the same identity and
    /// config, restoring `snapshot` if given.
    pub fn restart(
        &mut self,
        i: usize,
        config: NodeConfig,
        key: Keypair,
        snapshot: Option<Vec<u8>>,
    ) {
        let pairs: Vec<((usize, ConnectionId), (usize, ConnectionId))> = self
            .links
            .iter()
            .filter(|((a, _), _)| *a == i)
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((a, ac), (b, bc)) in pairs {
            self.links.remove(&(a, ac));
            self.links.remove(&(b, bc));
            let now = self.now;
            self.nodes[b].node.handle_input(
                now,
                Input::Closed {
                    conn: bc,
                    error: Some("reset".into()),
                },
            );
        }
        self.queue.retain(|_, (j, _, _)| *j != i);
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64 + 5000).to_le_bytes());
        let mut node = Node::new(config, key, seed, self.now).expect("valid config");
        if let Some(s) = snapshot {
            node.restore(self.now, &s).expect("snapshot restores");
        }
        self.nodes[i].node = node;
        self.nodes[i].events.clear();
        self.drain();
    }

    pub fn gossip_count(&self, i: usize, id: &MessageId) -> usize {
        self.nodes[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::Gossip { id: g, .. } if g == id))
            .count()
    }
}
