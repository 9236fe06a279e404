//! [`DriverCore`]: the node with the glue every adapter needs. It turns commands from the
//! handle into node calls, node outputs into socket [`Action`]s, and node events into answers
//! for waiting handle calls and into the application's event streams.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use silver_p2p_core::node::*;
use silver_p2p_core::{PeerAddr, PeerId, Timestamp};

use crate::clock::Clock;
use crate::files::Files;
use crate::handle::HandleError;
use crate::outbox::Outbox;

/// The direct-message path of one node, handed from its loop to its handles (see
/// [`DriverCore::outbox`]). Opaque: only the handle uses it.
#[derive(Clone)]
pub struct SendPath(pub(crate) Arc<Outbox>);

/// A callback the loop runs on every event (`register_message_handler`). It runs on the
/// loop: keep it short, or hand the work to another task.
pub type EventHandler = Box<dyn FnMut(&Event) + Send>;

/// What the handle asks of the loop. Each carries its reply channel.
#[non_exhaustive]
pub enum Command {
    /// Broadcast to every peer.
    Broadcast(
        GossipMessage,
        oneshot::Sender<Result<BroadcastReport, HandleError>>,
    ),
    /// Unicast; the reply comes when it is delivered or failed.
    Unicast(PeerId, u32, Bytes, oneshot::Sender<Result<(), HandleError>>),
    /// Request; the reply is the answer.
    Request(PeerId, Request, oneshot::Sender<Result<Bytes, HandleError>>),
    /// Answer a peer's request.
    Respond(
        InboundRequestId,
        Option<Bytes>,
        oneshot::Sender<Result<(), HandleError>>,
    ),
    /// Dial an address once.
    Connect(PeerAddr, oneshot::Sender<Result<(), HandleError>>),
    /// Dial an address and keep redialing it.
    AddBootstrap(PeerAddr),
    /// Close the connection to a peer gracefully (Goodbye, then close).
    Disconnect(PeerId, oneshot::Sender<Result<(), HandleError>>),
    /// Run discovery now.
    Discover,
    /// Ban a peer.
    Ban(PeerId, Duration),
    /// Lift a ban.
    Unban(PeerId),
    /// Report the validation verdict on gossip.
    Validate(MessageId, Validation),
    /// Connected peers.
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    /// Statistics.
    Stats(oneshot::Sender<NetworkStats>),
    /// Subscribe to events.
    Subscribe(mpsc::Sender<Event>),
    /// Run a callback on every event.
    RegisterHandler(EventHandler),
    /// Shut down gracefully; the reply is the report.
    Stop(Duration, oneshot::Sender<ShutdownReport>),
    /// Direct messages wait in the outbox (see [`crate::NetworkHandle::send`]).
    DrainOutbox,
}

/// What the runtime must do with sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection for `conn`; report the result with `Input::Connected` or
    /// `Input::Closed`.
    Dial {
        /// The connection.
        conn: ConnectionId,
        /// Where.
        addr: SocketAddr,
    },
    /// Write the bytes in order, then report `Input::Written`.
    Transmit {
        /// The connection.
        conn: ConnectionId,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Close after writing what was sent before.
    Close {
        /// The connection.
        conn: ConnectionId,
    },
    /// Stop reading this socket.
    PauseRead {
        /// The connection.
        conn: ConnectionId,
    },
    /// Read it again.
    ResumeRead {
        /// The connection.
        conn: ConnectionId,
    },
}

/// What a runtime does with sockets, driven by [`DriverCore::handle_event`] and
/// [`DriverCore::act`]: the connection-to-socket table. Async runtimes keep per-connection
/// tasks, the std-thread adapter per-connection threads; the dispatch logic is this one.
pub trait SocketTable {
    /// A connected stream, as the runtime represents it.
    type Stream;
    /// Starts reading and writing `stream` for `conn`.
    fn open(&mut self, conn: ConnectionId, stream: Self::Stream);
    /// Queues bytes for `conn`'s socket (in order); report them written later.
    fn write(&mut self, conn: ConnectionId, bytes: Vec<u8>);
    /// Closes `conn`'s socket after the bytes queued before; forgets it.
    fn close(&mut self, conn: ConnectionId);
    /// Stops (`true`) or resumes reading `conn`.
    fn pause(&mut self, conn: ConnectionId, paused: bool);
    /// Starts connecting to `addr` for `conn`; report with [`LoopEvent::Dialed`].
    fn dial(&mut self, conn: ConnectionId, addr: SocketAddr);
    /// The loop processed `n` bytes `conn`'s reader handed over: give them back to its
    /// [`crate::ReadCredit`].
    fn processed(&mut self, conn: ConnectionId, n: usize);
    /// Whether [`DriverCore::act`] should carry out more actions in this turn of the loop.
    /// A table that writes from the loop itself returns `false` once it has written its
    /// share, so the loop lets other tasks (the peers it just wrote to, in a simulation or
    /// a benchmark in one process) run before it goes on; see
    /// [`DriverCore::has_pending_actions`].
    fn wants_more_actions(&self) -> bool {
        true
    }
}

/// What the runtime's socket side tells the loop.
pub enum LoopEvent<S> {
    /// A listener accepted a stream.
    Accepted(S, SocketAddr),
    /// A dial finished.
    Dialed(ConnectionId, std::io::Result<S>),
    /// Bytes were read.
    Received(ConnectionId, Vec<u8>),
    /// Bytes were written.
    Written(ConnectionId, usize),
    /// The socket ended (clean end of stream: `None`) or failed.
    Ended(ConnectionId, Option<String>),
    /// A handle command.
    Command(Command),
    /// A writer finished: everything queued for its socket was written (or failed) and the
    /// socket is closed. Shutdown waits for these before `stop` returns.
    Flushed(ConnectionId),
}

/// The node and the adapter-side state around it. Runtimes call its methods from their loop
/// and carry out the [`Action`]s it hands to [`DriverCore::act`] (or one at a time, from
/// [`DriverCore::next_action`]).
pub struct DriverCore {
    node: Node,
    clock: Clock,
    unicasts: BTreeMap<UnicastId, oneshot::Sender<Result<(), HandleError>>>,
    requests: BTreeMap<RequestId, oneshot::Sender<Result<Bytes, HandleError>>>,
    stops: Vec<oneshot::Sender<ShutdownReport>>,
    subscribers: Vec<mpsc::Sender<Event>>,
    handlers: Vec<EventHandler>,
    files: Option<Files>,
    save_interval: Duration,
    next_save: Instant,
    finished: Option<ShutdownReport>,
    /// Events from before the first subscriber (start-up dials, early connections), handed
    /// to that subscriber so nothing the node did at start is lost. `None` once delivered.
    early: Option<std::collections::VecDeque<Event>>,
    /// Connections being dialed (a stream arriving for any other is dropped).
    dialing: std::collections::BTreeSet<ConnectionId>,
    /// Events dropped because a subscriber did not keep up.
    pub dropped_events: u64,
    /// Direct messages on their way from the handles to the node.
    outbox: Arc<Outbox>,
    /// Some direct messages wait for room in their connection's queue.
    outbox_blocked: bool,
    /// The last `act` stopped with actions left (see [`DriverCore::has_pending_actions`]).
    actions_pending: bool,
    /// Direct messages dropped before they reached the node.
    dropped_sends: u64,
    /// How far each connection's reader may run ahead of the loop.
    max_unprocessed_read_bytes: usize,
}

impl Drop for DriverCore {
    fn drop(&mut self) {
        // Senders must not wait for a loop that is gone.
        self.outbox.close();
    }
}

impl DriverCore {
    /// Wraps `node` (created with `clock.now()`), saving snapshots through `files` every
    /// `save_interval` if given.
    pub fn new(node: Node, clock: Clock, files: Option<Files>, save_interval: Duration) -> Self {
        DriverCore {
            outbox: Outbox::new(&node),
            outbox_blocked: false,
            actions_pending: false,
            dropped_sends: 0,
            max_unprocessed_read_bytes: crate::NodeOptions::DEFAULT_MAX_UNPROCESSED_READ_BYTES,
            node,
            clock,
            unicasts: BTreeMap::new(),
            requests: BTreeMap::new(),
            stops: Vec::new(),
            subscribers: Vec::new(),
            handlers: Vec::new(),
            files,
            save_interval,
            next_save: Instant::now() + save_interval,
            finished: None,
            early: Some(std::collections::VecDeque::new()),
            dialing: std::collections::BTreeSet::new(),
            dropped_events: 0,
        }
    }

    /// The outbox the handles put direct messages in; give it to [`crate::NetworkHandle::new`].
    pub fn outbox(&self) -> SendPath {
        SendPath(self.outbox.clone())
    }

    /// Moves the direct messages waiting in the outbox into the node.
    fn drain_outbox(&mut self) {
        let now = self.now();
        let drained = self.outbox.drain_into(&mut self.node, now);
        self.outbox_blocked = drained.blocked;
        self.dropped_sends += drained.dropped;
    }

    /// Sets how many bytes a connection's reader may hand over before the loop processed
    /// them ([`crate::NodeOptions::max_unprocessed_read_bytes`]).
    pub fn set_max_unprocessed_read_bytes(&mut self, limit: usize) {
        self.max_unprocessed_read_bytes = limit;
    }

    /// How far a connection's reader may run ahead of the loop: the limit to create each
    /// connection's [`ReadCredit`](crate::ReadCredit) with.
    pub fn max_unprocessed_read_bytes(&self) -> usize {
        self.max_unprocessed_read_bytes
    }

    /// The node, for reading.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The current time on the node's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Whether the node has shut down. The loop then closes every socket, waits (boundedly)
    /// for the writers to flush, calls [`DriverCore::complete_stop`] and exits.
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// Answers every waiting `stop` with the shutdown report. Call once the sockets are
    /// flushed, so a program that exits right after `stop` does not cut off its Goodbyes.
    pub fn complete_stop(&mut self) {
        if let Some(report) = &self.finished {
            for tx in self.stops.drain(..) {
                let _ = tx.send(report.clone());
            }
        }
    }

    /// A socket was accepted: registers it, or says why it must be dropped.
    pub fn accept(&mut self, remote: SocketAddr) -> Result<ConnectionId, AcceptError> {
        let now = self.now();
        self.node.accept(now, remote)
    }

    /// Applies a socket event.
    pub fn input(&mut self, input: Input<'_>) {
        let now = self.now();
        self.node.handle_input(now, input);
    }

    /// Fires due timers (call when [`DriverCore::next_deadline`] passed; extra calls are
    /// harmless) and saves the snapshot when it is due.
    pub fn timeout(&mut self) {
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_input(now, Input::Timeout);
        }
        if Instant::now() >= self.next_save {
            self.next_save = Instant::now() + self.save_interval;
            self.save();
        }
    }

    /// The next instant at which to call [`DriverCore::timeout`].
    pub fn next_deadline(&self) -> Option<Instant> {
        let node = self.node.poll_timeout().map(|t| self.clock.instant(t));
        let save = self.files.as_ref().map(|_| self.next_save);
        [node, save].into_iter().flatten().min()
    }

    fn save(&mut self) {
        if let Some(f) = &self.files {
            let snapshot = self.node.snapshot(self.clock.now());
            if let Err(e) = f.save_snapshot(&snapshot) {
                tracing::warn!("could not save the peers snapshot: {e}");
            }
        }
    }

    /// Carries out a handle command.
    pub fn command(&mut self, cmd: Command) {
        let now = self.now();
        let n = &mut self.node;
        match cmd {
            Command::Broadcast(m, reply) => {
                let _ = reply.send(
                    n.broadcast(now, m, BroadcastOptions::default())
                        .map_err(HandleError::from),
                );
            }
            Command::Unicast(peer, kind, data, reply) => match n.unicast(now, &peer, kind, data) {
                Ok(id) => {
                    self.unicasts.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Request(peer, req, reply) => match n.request(now, &peer, req) {
                Ok(id) => {
                    self.requests.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Respond(id, answer, reply) => {
                let _ = reply.send(n.respond(now, id, answer).map_err(HandleError::from));
            }
            Command::Connect(addr, reply) => {
                let _ = reply.send(n.connect(now, addr).map(|_| ()).map_err(HandleError::from));
            }
            Command::AddBootstrap(addr) => n.add_persistent_peer(now, addr),
            Command::Disconnect(peer, reply) => {
                let _ = reply.send(n.disconnect(now, &peer).map_err(HandleError::from));
            }
            Command::Discover => n.discover(now),
            Command::Ban(peer, d) => n.ban(now, peer, d),
            Command::Unban(peer) => {
                n.unban(&peer);
            }
            Command::Validate(id, v) => {
                let _ = n.validation_result(now, id, v);
            }
            Command::Peers(reply) => {
                let _ = reply.send(n.peers());
            }
            Command::Stats(reply) => {
                let mut stats = n.stats(now);
                stats.events_dropped = self.dropped_events;
                stats.sends_dropped = self.dropped_sends;
                let _ = reply.send(stats);
            }
            Command::Subscribe(mut tx) => {
                for e in self.early.take().into_iter().flatten() {
                    if tx.try_send(e).is_err() {
                        self.dropped_events += 1;
                    }
                }
                self.subscribers.push(tx);
            }
            Command::RegisterHandler(h) => self.handlers.push(h),
            Command::Stop(grace, reply) => {
                self.stops.push(reply);
                n.shutdown(now, grace);
            }
            Command::DrainOutbox => self.drain_outbox(),
        }
    }

    /// Applies one event from the runtime's socket side (or a command).
    pub fn handle_event<T: SocketTable>(&mut self, ev: LoopEvent<T::Stream>, table: &mut T) {
        match ev {
            LoopEvent::Accepted(stream, remote) => match self.accept(remote) {
                Ok(conn) => table.open(conn, stream),
                Err(e) => tracing::debug!("refused {remote}: {e}"),
            },
            LoopEvent::Dialed(conn, result) => {
                if !self.dialing.remove(&conn) {
                    return; // closed while dialing: drop the stream
                }
                match result {
                    Ok(stream) => {
                        table.open(conn, stream);
                        self.input(Input::Connected { conn });
                    }
                    Err(e) => self.input(Input::Closed {
                        conn,
                        error: Some(e.to_string()),
                    }),
                }
            }
            LoopEvent::Received(conn, bytes) => self.received(conn, &bytes, table),
            LoopEvent::Written(conn, n) => self.input(Input::Written { conn, bytes: n }),
            LoopEvent::Ended(conn, error) => {
                table.close(conn);
                self.input(Input::Closed { conn, error });
            }
            LoopEvent::Command(cmd) => self.command(cmd),
            LoopEvent::Flushed(_) => {}
        }
    }

    /// Hands bytes read from `conn`'s socket to the node (and back to the reader's credit).
    /// A loop that reads its sockets itself calls this with its read buffer; a reader task
    /// sends [`LoopEvent::Received`] instead.
    pub fn received<T: SocketTable>(&mut self, conn: ConnectionId, bytes: &[u8], table: &mut T) {
        self.input(Input::Received { conn, bytes });
        table.processed(conn, bytes.len());
    }

    /// Drains the node and carries out its socket actions on `table`. Call after every batch
    /// of events and after timeouts. Each action is carried out as soon as the node makes
    /// it: the node builds frames as they are asked for, so the first copy of a broadcast is
    /// on the wire while the node has still to encrypt the others.
    pub fn act<T: SocketTable>(&mut self, table: &mut T) {
        if self.outbox_blocked {
            // Written bytes may have made room in the connections' queues.
            self.drain_outbox();
        }
        self.actions_pending = false;
        while let Some(a) = self.next_action() {
            match a {
                Action::Dial { conn, addr } => {
                    self.dialing.insert(conn);
                    table.dial(conn, addr);
                }
                Action::Transmit { conn, bytes } => table.write(conn, bytes),
                Action::Close { conn } => {
                    self.dialing.remove(&conn);
                    table.close(conn);
                }
                Action::PauseRead { conn } => table.pause(conn, true),
                Action::ResumeRead { conn } => table.pause(conn, false),
            }
            if !table.wants_more_actions() {
                self.actions_pending = true;
                return;
            }
        }
    }

    /// Whether the last [`DriverCore::act`] stopped before the node ran out of actions
    /// (the table had done its share for the turn): call `act` again soon, without
    /// waiting for an event.
    pub fn has_pending_actions(&self) -> bool {
        self.actions_pending
    }

    /// The node's next socket action, or `None` when it has none left (call again after the
    /// next input). Events met on the way go to their waiters and subscribers.
    pub fn next_action(&mut self) -> Option<Action> {
        loop {
            let action = match self.node.poll_output()? {
                Output::Transmit { conn, bytes } => Action::Transmit { conn, bytes },
                Output::Dial { conn, addr } => Action::Dial { conn, addr },
                Output::Close { conn } => Action::Close { conn },
                Output::PauseRead { conn } => Action::PauseRead { conn },
                Output::ResumeRead { conn } => Action::ResumeRead { conn },
                Output::Event(e) => {
                    self.on_event(e);
                    continue;
                }
                _ => continue,
            };
            return Some(action);
        }
    }

    fn on_event(&mut self, e: Event) {
        match &e {
            Event::UnicastDelivered { id, .. } => {
                if let Some(tx) = self.unicasts.remove(id) {
                    let _ = tx.send(Ok(()));
                }
            }
            Event::UnicastFailed { id, reason, .. } => {
                if let Some(tx) = self.unicasts.remove(id) {
                    let _ = tx.send(Err(HandleError::Unicast(reason.clone())));
                }
            }
            Event::Response { id, result, .. } => {
                if let Some(tx) = self.requests.remove(id) {
                    let _ = tx.send(result.clone().map_err(HandleError::Request));
                }
            }
            Event::PeerConnected { peer, .. } => self.outbox.connected(*peer),
            // A peer that reconnected at once keeps its queue.
            Event::PeerDisconnected { peer, .. } if !self.node.is_connected(peer) => {
                self.dropped_sends += self.outbox.disconnected(peer);
            }
            Event::ShutdownComplete(report) => {
                self.dropped_sends += self.outbox.close();
                self.save();
                self.finished = Some(report.clone());
            }
            _ => {}
        }
        for h in &mut self.handlers {
            h(&e);
        }
        if let Some(early) = &mut self.early {
            /// Events kept for the first subscriber at most.
            const EARLY: usize = 1024;
            if early.len() < EARLY {
                early.push_back(e.clone());
            } else {
                self.dropped_events += 1;
            }
        }
        let mut i = 0;
        while i < self.subscribers.len() {
            match self.subscribers[i].try_send(e.clone()) {
                Ok(()) => i += 1,
                Err(err) if err.is_full() => {
                    self.dropped_events += 1;
                    i += 1;
                }
                Err(_) => {
                    // The subscriber went away.
                    self.subscribers.swap_remove(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silver_p2p_core::{Keypair, PeerAddr, SeededRng};

    /// A table that takes `share` actions per turn and records the dials.
    struct SharedTurns {
        share: usize,
        this_turn: usize,
        dials: Vec<ConnectionId>,
    }

    impl SocketTable for SharedTurns {
        type Stream = ();
        fn open(&mut self, _: ConnectionId, _: ()) {}
        fn write(&mut self, _: ConnectionId, _: Vec<u8>) {
            self.this_turn += 1;
        }
        fn close(&mut self, _: ConnectionId) {}
        fn pause(&mut self, _: ConnectionId, _: bool) {}
        fn dial(&mut self, conn: ConnectionId, _: SocketAddr) {
            self.this_turn += 1;
            self.dials.push(conn);
        }
        fn processed(&mut self, _: ConnectionId, _: usize) {}
        fn wants_more_actions(&self) -> bool {
            self.this_turn < self.share
        }
    }

    #[test]
    fn act_stops_at_the_tables_share_and_the_rest_follows_in_later_turns() {
        const SEEDS: usize = 20;
        let mut rng = SeededRng::from_seed([9; 32]);
        let mut config = NodeConfig {
            network_id: "act-turns".into(),
            ..Default::default()
        };
        config.bootstrap = (0..SEEDS)
            .map(|i| {
                let peer = Keypair::generate(&mut rng).peer_id();
                PeerAddr::pinned(peer, SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16)))
            })
            .collect();
        config.limits.max_outbound = SEEDS;
        config.discovery.max_dials_per_interval = SEEDS;
        let clock = Clock::new();
        let node = Node::new(config, Keypair::generate(&mut rng), [1; 32], clock.now()).unwrap();
        let mut core = DriverCore::new(node, clock, None, Duration::from_secs(60));
        let mut table = SharedTurns {
            share: 6,
            this_turn: 0,
            dials: Vec::new(),
        };
        core.timeout();
        core.act(&mut table);
        assert_eq!(table.dials.len(), 6, "one share in the first turn");
        assert!(core.has_pending_actions());
        let mut turns = 1;
        while core.has_pending_actions() {
            table.this_turn = 0;
            core.act(&mut table);
            turns += 1;
            assert!(turns < 10, "the rest is carried out in a few turns");
        }
        assert_eq!(table.dials.len(), SEEDS, "no action is lost between turns");
        let mut unique = table.dials.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), SEEDS, "and none is repeated");
    }
}
