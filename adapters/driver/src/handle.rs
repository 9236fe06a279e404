//! The handle API users call, the same in every adapter: async in the async runtimes,
//! blocking ([`BlockingHandle`]) for plain threads. It sends [`Command`]s to the node's loop
//! and awaits the answers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::Stream;
use silver_p2p_core::node::*;
use silver_p2p_core::{PeerAddr, PeerId};

use crate::core_loop::{Command, EventHandler, SendPath};
use crate::outbox::{Payload, Pushed};

/// Why a handle call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The node refused the command (local misuse: unknown peer, too large, full, …).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The unicast was not delivered.
    #[error("unicast failed: {0}")]
    Unicast(UnicastFailure),
    /// The request got no answer.
    #[error("request failed: {0}")]
    Request(RequestFailure),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

type Sender = Arc<dyn Fn(Command) -> bool + Send + Sync>;

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct NetworkHandle {
    send: Sender,
    outbox: SendPath,
    peer_id: PeerId,
    listen_addrs: Arc<Vec<SocketAddr>>,
    event_capacity: usize,
    /// The shutdown report, kept so every later `stop` returns it after the loop is gone.
    report: Arc<std::sync::OnceLock<ShutdownReport>>,
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle")
            .field("peer_id", &self.peer_id)
            .field("listen_addrs", &self.listen_addrs)
            .finish()
    }
}

/// The application's stream of node events (see [`NetworkHandle::events`]).
pub struct EventStream(mpsc::Receiver<Event>);

impl Stream for EventStream {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

impl EventStream {
    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        futures::StreamExt::next(&mut self.0).await
    }

    /// The next event, blocking the thread (for thread-based code).
    pub fn recv_blocking(&mut self) -> Option<Event> {
        futures::executor::block_on(futures::StreamExt::next(&mut self.0))
    }

    /// The next event if one is waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.0.try_recv().ok()
    }
}

impl NetworkHandle {
    /// A handle whose commands go through `send` (which returns false once the loop is
    /// gone) and whose direct messages go through `outbox` (from [`crate::DriverCore::outbox`]).
    /// Adapters call this; users get handles from `start`.
    pub fn new(
        send: impl Fn(Command) -> bool + Send + Sync + 'static,
        outbox: SendPath,
        peer_id: PeerId,
        listen_addrs: Vec<SocketAddr>,
        event_capacity: usize,
    ) -> Self {
        NetworkHandle {
            send: Arc::new(send),
            outbox,
            peer_id,
            listen_addrs: Arc::new(listen_addrs),
            event_capacity,
            report: Arc::new(std::sync::OnceLock::new()),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, HandleError> {
        let (tx, rx) = oneshot::channel();
        if !(self.send)(make(tx)) {
            return Err(HandleError::Stopped);
        }
        rx.await.map_err(|_| HandleError::Stopped)
    }

    fn tell(&self, cmd: Command) -> Result<(), HandleError> {
        if (self.send)(cmd) {
            Ok(())
        } else {
            Err(HandleError::Stopped)
        }
    }

    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on (actual ports, after binding).
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The address to give other nodes: the first listen address pinned to our identity.
    pub fn dial_addr(&self) -> Option<PeerAddr> {
        self.listen_addrs
            .first()
            .map(|a| PeerAddr::pinned(self.peer_id, *a))
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, HandleError> {
        self.ask(Command::Peers).await
    }

    /// Broadcasts to every peer; resolves with the per-peer report.
    pub async fn broadcast(&self, msg: GossipMessage) -> Result<BroadcastReport, HandleError> {
        self.ask(|tx| Command::Broadcast(msg, tx)).await?
    }

    /// Sends `data` to `peer`; resolves once the peer acknowledged it (or it failed).
    pub async fn unicast(&self, peer: PeerId, kind: u32, data: Bytes) -> Result<(), HandleError> {
        self.ask(|tx| Command::Unicast(peer, kind, data, tx))
            .await?
    }

    /// Sends `data` to `peer` without delivery confirmation, the fastest way to reach one
    /// peer; the peer's application gets it once as [`Event::Direct`], unless the connection
    /// closes first (use [`NetworkHandle::unicast`] when the sender must know). Resolves as
    /// soon as the message is queued, which is at once unless the peer's queue is full
    /// (`connection.max_queued_bytes` or `max_queued_messages` waiting): then it waits until
    /// the socket has drained enough. Messages to one peer leave in the order of the calls
    /// within their size class (one larger than `connection.chunk_size` travels in the bulk
    /// class and may be overtaken by smaller ones). Fails at once if the peer is not
    /// connected or the message is larger than `connection.max_message_size`. Messages still
    /// queued when the peer disconnects are dropped and counted in
    /// [`NetworkStats::sends_dropped`].
    pub async fn send(&self, peer: PeerId, kind: u32, data: Bytes) -> Result<(), HandleError> {
        self.send_payload(peer, kind, Payload::Owned(data)).await
    }

    /// [`NetworkHandle::send`] for a message the caller holds as a borrowed slice, such as a
    /// reused buffer: the library copies it into a buffer many queued messages share, which
    /// is cheaper for small messages than the caller allocating a `Bytes` for each one.
    /// Everything else (ordering, back-pressure, failures) is as for `send`.
    pub async fn send_slice(
        &self,
        peer: PeerId,
        kind: u32,
        data: &[u8],
    ) -> Result<(), HandleError> {
        self.send_payload(peer, kind, Payload::Borrowed(data)).await
    }

    async fn send_payload(
        &self,
        peer: PeerId,
        kind: u32,
        data: Payload<'_>,
    ) -> Result<(), HandleError> {
        self.outbox.0.check(kind, data.len())?;
        let mut item = Some((kind, data));
        let pushed =
            futures::future::poll_fn(|cx| self.outbox.0.poll_push(cx, &peer, &mut item)).await?;
        match pushed {
            Pushed::Queued => Ok(()),
            Pushed::NudgeLoop => self.tell(Command::DrainOutbox),
        }
    }

    /// Asks `peer`; resolves with the answer.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Bytes, HandleError> {
        self.ask(|tx| Command::Request(peer, request, tx)).await?
    }

    /// Answers a peer's request (from [`Event::Request`]): `None` sends NotFound.
    pub async fn respond(
        &self,
        id: InboundRequestId,
        answer: Option<Bytes>,
    ) -> Result<(), HandleError> {
        self.ask(|tx| Command::Respond(id, answer, tx)).await?
    }

    /// A new stream of every event from now on; the first stream also gets the events from
    /// before it (start-up dials and connections, up to 1024). A subscriber that falls more
    /// than the configured capacity behind loses events (counted by the driver), never blocks
    /// the node.
    pub fn events(&self) -> EventStream {
        let (tx, rx) = mpsc::channel(self.event_capacity);
        let _ = self.tell(Command::Subscribe(tx));
        EventStream(rx)
    }

    /// Runs `handler` on the node's loop for every event.
    pub fn register_message_handler(
        &self,
        handler: impl FnMut(&Event) + Send + 'static,
    ) -> Result<(), HandleError> {
        let h: EventHandler = Box::new(handler);
        self.tell(Command::RegisterHandler(h))
    }

    /// Dials `addr` once (not redialed if it drops).
    pub async fn connect_to_peer(&self, addr: PeerAddr) -> Result<(), HandleError> {
        self.ask(|tx| Command::Connect(addr, tx)).await?
    }

    /// Closes the connection to `peer` with a Goodbye (reason normal). The peer is not
    /// banned and may reconnect; a persistent (bootstrap) peer is redialed with backoff.
    /// Fails with `CommandError::UnknownPeer` if it is not connected.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), HandleError> {
        self.ask(|tx| Command::Disconnect(peer, tx)).await?
    }

    /// Dials `addr` and keeps redialing it with backoff whenever it drops.
    pub fn add_bootstrap_peer(&self, addr: PeerAddr) -> Result<(), HandleError> {
        self.tell(Command::AddBootstrap(addr))
    }

    /// Runs discovery now (asks peers for addresses, fills outbound slots).
    pub fn discover_peers(&self) -> Result<(), HandleError> {
        self.tell(Command::Discover)
    }

    /// Bans `peer` for `duration`, disconnecting it.
    pub fn ban(&self, peer: PeerId, duration: Duration) -> Result<(), HandleError> {
        self.tell(Command::Ban(peer, duration))
    }

    /// Lifts a ban.
    pub fn unban(&self, peer: PeerId) -> Result<(), HandleError> {
        self.tell(Command::Unban(peer))
    }

    /// The application's verdict on gossip (relay mode `validate`).
    pub fn validate(&self, id: MessageId, verdict: Validation) -> Result<(), HandleError> {
        self.tell(Command::Validate(id, verdict))
    }

    /// Statistics.
    pub async fn stats(&self) -> Result<NetworkStats, HandleError> {
        self.ask(Command::Stats).await
    }

    /// Shuts down gracefully within `grace`; resolves with the report. Calling it again
    /// returns the same report.
    pub async fn stop(&self, grace: Duration) -> Result<ShutdownReport, HandleError> {
        if let Some(r) = self.report.get() {
            return Ok(r.clone());
        }
        let r = self.ask(|tx| Command::Stop(grace, tx)).await?;
        Ok(self.report.get_or_init(|| r).clone())
    }

    /// This handle as a blocking one, for thread-based code.
    pub fn blocking(&self) -> BlockingHandle {
        BlockingHandle(self.clone())
    }
}

/// The same API as [`NetworkHandle`], blocking the calling thread. Never call it from inside
/// an async task.
#[derive(Clone, Debug)]
pub struct BlockingHandle(pub NetworkHandle);

macro_rules! blocking {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl BlockingHandle {
            $(
                $(#[$doc])*
                pub fn $name(&self, $($arg: $ty),*) -> $ret {
                    futures::executor::block_on(self.0.$name($($arg),*))
                }
            )*
        }
    };
}

blocking! {
    /// Connected peers.
    fn peers() -> Result<Vec<PeerInfo>, HandleError>;
    /// Broadcasts to every peer.
    fn broadcast(msg: GossipMessage) -> Result<BroadcastReport, HandleError>;
    /// Sends without confirmation; waits only while the peer's queue is full.
    fn send(peer: PeerId, kind: u32, data: Bytes) -> Result<(), HandleError>;
    /// Sends a borrowed slice without confirmation (copied; see [`NetworkHandle::send_slice`]).
    fn send_slice(peer: PeerId, kind: u32, data: &[u8]) -> Result<(), HandleError>;
    /// Sends and waits for the acknowledgement.
    fn unicast(peer: PeerId, kind: u32, data: Bytes) -> Result<(), HandleError>;
    /// Asks and waits for the answer.
    fn request(peer: PeerId, request: Request) -> Result<Bytes, HandleError>;
    /// Answers a peer's request.
    fn respond(id: InboundRequestId, answer: Option<Bytes>) -> Result<(), HandleError>;
    /// Dials once.
    fn connect_to_peer(addr: PeerAddr) -> Result<(), HandleError>;
    /// Closes the connection to a peer.
    fn disconnect(peer: PeerId) -> Result<(), HandleError>;
    /// Statistics.
    fn stats() -> Result<NetworkStats, HandleError>;
    /// Shuts down gracefully.
    fn stop(grace: Duration) -> Result<ShutdownReport, HandleError>;
}

impl BlockingHandle {
    /// This node's identity.
    pub fn peer_id(&self) -> PeerId {
        self.0.peer_id()
    }

    /// The listen addresses.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        self.0.listen_addrs()
    }

    /// The first listen address pinned to our identity.
    pub fn dial_addr(&self) -> Option<PeerAddr> {
        self.0.dial_addr()
    }

    /// A new event stream (use `recv_blocking`).
    pub fn events(&self) -> EventStream {
        self.0.events()
    }

    /// See [`NetworkHandle::register_message_handler`].
    pub fn register_message_handler(
        &self,
        handler: impl FnMut(&Event) + Send + 'static,
    ) -> Result<(), HandleError> {
        self.0.register_message_handler(handler)
    }

    /// See [`NetworkHandle::add_bootstrap_peer`].
    pub fn add_bootstrap_peer(&self, addr: PeerAddr) -> Result<(), HandleError> {
        self.0.add_bootstrap_peer(addr)
    }

    /// See [`NetworkHandle::discover_peers`].
    pub fn discover_peers(&self) -> Result<(), HandleError> {
        self.0.discover_peers()
    }

    /// See [`NetworkHandle::ban`].
    pub fn ban(&self, peer: PeerId, duration: Duration) -> Result<(), HandleError> {
        self.0.ban(peer, duration)
    }

    /// See [`NetworkHandle::unban`].
    pub fn unban(&self, peer: PeerId) -> Result<(), HandleError> {
        self.0.unban(peer)
    }
}
