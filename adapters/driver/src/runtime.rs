//! The async run loop, written once for every async runtime, and the small [`Runtime`]
//! trait a runtime crate implements to use it.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::channel::mpsc;
use futures::future::{select, AbortHandle, Abortable, Either};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use silver_p2p_core::node::{CipherPreference, ConnectionId, Node};
use silver_p2p_core::ConfigError;
use silver_p2p_core::PeerId;
use std::task::Poll;

use crate::clock::Clock;
use crate::core_loop::{DriverCore, LoopEvent, SocketTable};
use crate::files::{os_seed, Files, FilesError};
use crate::handle::NetworkHandle;
use crate::read_buffer::ReadBuffer;
use crate::read_credit::ReadCredit;
use crate::NodeOptions;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The reading half of a TCP stream.
pub trait ReadHalf: Send + 'static {
    /// Reads into `buf`; `Ok(0)` is end of stream. Must be cancel-safe (dropping the
    /// future before it completes loses no data), as TCP reads in every runtime are.
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<usize>>;

    /// Waits until [`ReadHalf::try_read`] would not block, holding no buffer meanwhile.
    /// Runtimes with readiness notifications (tokio) implement this pair and
    /// [`ReadHalf::supports_readiness`], so an idle connection owns no read buffer at all:
    /// the loop reads into a buffer shared by every connection of the thread. The default
    /// reports `Unsupported`; a reader task then reads through [`ReadHalf::read`] and a
    /// per-connection [`ReadBuffer`]. Must be cancel-safe.
    fn readable(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(std::future::ready(Err(io::ErrorKind::Unsupported.into())))
    }

    /// Whether [`ReadHalf::readable`] and [`ReadHalf::try_read`] work. Then the loop
    /// itself waits for the socket and reads it, with no reader task between the socket
    /// and the node (one task wake-up less per message received); otherwise a reader task
    /// per connection reads and hands the bytes over.
    fn supports_readiness(&self) -> bool {
        false
    }

    /// Reads what is available without waiting: `Ok(0)` is end of stream, `WouldBlock`
    /// means nothing was (a spurious readiness). Called only after
    /// [`ReadHalf::readable`] succeeded. `WouldBlock` must leave the half not ready, so the
    /// next `readable` waits for new bytes: returning it for any other reason (a spent
    /// scheduling budget, a busy lock) while the socket holds data makes the loop read the
    /// same socket again at once, without end.
    fn try_read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// [`ReadHalf::try_read`] appending to `buf`'s spare capacity (at least one byte of
    /// it), with the same rule for `WouldBlock`. Runtimes that can read into uninitialised
    /// memory override it (tokio's `AsyncRead`); the default zero-fills the spare capacity
    /// first.
    fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let start = buf.len();
        buf.resize(buf.capacity().max(start + 1), 0);
        let result = self.try_read(&mut buf[start..]);
        buf.truncate(start + *result.as_ref().unwrap_or(&0));
        result
    }
}

thread_local! {
    /// The readiness path's read buffer, one per runtime thread (with
    /// [`ReadBuffer::LARGE`] of capacity): the loop reads into it and hands the node a
    /// slice of it, so a read costs neither an allocation nor a copy. Taken out of the slot
    /// for the duration of one read and its processing, never across an await.
    static SHARED_READ_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The writing half of a TCP stream.
pub trait WriteHalf: Send + 'static {
    /// Writes all of `buf`.
    fn write_all<'a>(&'a mut self, buf: &'a [u8]) -> BoxFuture<'a, io::Result<()>>;
    /// Writes what the socket takes now without waiting (`WouldBlock` if nothing). Runtimes
    /// that implement it let the loop write a transmit itself while the connection's writer
    /// task has nothing queued, saving a task wake-up per message; the default reports
    /// `Unsupported` and every transmit goes through the writer task.
    fn try_write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Flushes and shuts the write side down.
    fn close(&mut self) -> BoxFuture<'_, io::Result<()>>;
}

/// What an async runtime supplies: spawning, a timer, and TCP. Implementations set
/// `TCP_NODELAY` on every stream they return.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A bound listener.
    type Listener: Send + Sync + 'static;
    /// A stream's reading half.
    type Read: ReadHalf;
    /// A stream's writing half.
    type Write: WriteHalf;
    /// Runs `task` in the background.
    fn spawn(&self, task: BoxFuture<'static, ()>);
    /// Completes at `deadline` (or later; the loop checks the clock itself).
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;
    /// Lets the runtime run other ready tasks (and poll for I/O, where it can) before the
    /// calling task goes on. The default wakes the task at once and returns to the
    /// executor a single time.
    fn yield_now(&self) -> BoxFuture<'static, ()> {
        let mut yielded = false;
        Box::pin(futures::future::poll_fn(move |cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }))
    }
    /// Binds a listener; returns it with its actual address.
    fn bind(
        &self,
        addr: SocketAddr,
    ) -> BoxFuture<'static, io::Result<(Self::Listener, SocketAddr)>>;
    /// Accepts one connection: its halves and the peer's address.
    #[allow(clippy::type_complexity)] // spelled out so implementors see exactly what to return
    fn accept(
        &self,
        listener: Arc<Self::Listener>,
    ) -> BoxFuture<'static, io::Result<(Self::Read, Self::Write, SocketAddr)>>;
    /// Connects.
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> BoxFuture<'static, io::Result<(Self::Read, Self::Write)>>;
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration breaks a rule.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A listen address could not be bound (in use, not available, …).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The data directory or a file in it could not be used.
    #[error(transparent)]
    Files(#[from] FilesError),
}

type Msg<R> = LoopEvent<(<R as Runtime>::Read, <R as Runtime>::Write)>;

enum ToWriter {
    Data(Vec<u8>),
    Close,
}

struct ConnIo<R: Runtime> {
    writer: mpsc::UnboundedSender<ToWriter>,
    /// The write half, shared by the loop (while nothing is queued) and the writer task.
    write: Arc<SharedWrite<R::Write>>,
    /// Whether the runtime can write without waiting ([`WriteHalf::try_write`]).
    direct: bool,
    reader: ReaderIo<R>,
}

/// A connection's write half and how many transmits wait for its writer task. The loop
/// writes directly only when none wait (so bytes keep their order) and the writer task
/// does not hold the half.
struct SharedWrite<W> {
    half: futures::lock::Mutex<W>,
    queued: std::sync::atomic::AtomicUsize,
}

/// How a connection is read.
enum ReaderIo<R: Runtime> {
    /// By a reader task, paused and resumed through `ctl`, bounded by `credit`.
    Task {
        ctl: mpsc::UnboundedSender<bool>,
        credit: Arc<ReadCredit>,
    },
    /// By the loop itself (runtimes with readiness): the read half waits for readiness in
    /// the table's `ready` set (`abort` cancels that wait), or sits in `parked` while
    /// reading is paused.
    InLoop {
        abort: AbortHandle,
        paused: bool,
        parked: Option<R::Read>,
    },
}

/// A read half that became readable (or failed waiting), for the loop to read.
type Readiness<R> = (ConnectionId, <R as Runtime>::Read, io::Result<()>);

/// Starts a node on runtime `rt`: binds the listeners, loads or creates the identity and the
/// peers snapshot from the data directory, and spawns the loop. Returns the handle.
pub async fn start<R: Runtime>(rt: R, opts: NodeOptions) -> Result<NetworkHandle, StartError> {
    opts.config.validate()?;
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for addr in &opts.listen {
        let (l, a) = rt.bind(*addr).await.map_err(|source| StartError::Bind {
            addr: *addr,
            source,
        })?;
        listeners.push(Arc::new(l));
        bound.push(a);
    }
    let (core, peer_id) = prepare(&opts, &bound)?;
    let (tx, rx) = mpsc::unbounded::<Msg<R>>();
    for l in listeners {
        let (rt2, tx2) = (rt.clone(), tx.clone());
        rt.spawn(Box::pin(accept_loop(rt2, l, tx2)));
    }
    let send_tx = tx.clone();
    let handle = NetworkHandle::new(
        move |cmd| send_tx.unbounded_send(LoopEvent::Command(cmd)).is_ok(),
        core.outbox(),
        peer_id,
        bound,
        opts.event_capacity,
    );
    rt.spawn(Box::pin(run(rt.clone(), core, rx, tx)));
    Ok(handle)
}

/// Everything between binding the listeners and running the loop, the same for every
/// runtime: opens the data directory, loads or creates the key, announces the bound
/// addresses if the configuration names none, resolves `cipher = "auto"` for this CPU,
/// creates the node seeded from OS entropy, and restores the peers snapshot (moving a
/// corrupt one aside).
pub fn prepare(
    opts: &NodeOptions,
    bound: &[SocketAddr],
) -> Result<(DriverCore, PeerId), StartError> {
    let files = opts.data_dir.as_ref().map(Files::open).transpose()?;
    let key = match &files {
        Some(f) => f.key()?,
        None => silver_p2p_core::Keypair::from_private_key(os_seed()?),
    };
    let mut config = opts.config.clone();
    if config.listen_addrs.is_empty() {
        config.listen_addrs = bound.to_vec();
    }
    let has_aes = crate::has_aes_instructions();
    if config.cipher == CipherPreference::Aes256Gcm && !has_aes {
        tracing::warn!(
            "cipher = \"aes-256-gcm\" on a CPU without AES instructions: connections to peers \
             that ask for it too will run AES in software, several times slower than \
             ChaCha20-Poly1305 (\"auto\" would choose that here)"
        );
    }
    config.cipher = config.cipher.resolve(has_aes);
    tracing::info!(
        "transport cipher {} (used with peers that ask for it too)",
        config.cipher
    );
    let clock = Clock::new();
    let mut node = Node::new(config, key, os_seed()?, clock.now())?;
    if let Some(f) = &files {
        f.load_snapshot(|bytes| node.restore(clock.now(), bytes))?;
    }
    let peer_id = node.peer_id();
    let mut core = DriverCore::new(node, clock, files, opts.save_interval);
    core.set_max_unprocessed_read_bytes(opts.max_unprocessed_read_bytes);
    Ok((core, peer_id))
}

/// The `NetworkManager` of every async adapter: options in, a running node's handle out.
#[derive(Debug, Clone)]
pub struct NetworkManager<R> {
    runtime: R,
    options: NodeOptions,
}

impl<R: Runtime + Default> NetworkManager<R> {
    /// A node with `config` listening on `listen` (port 0 picks a free port).
    pub fn new(config: silver_p2p_core::node::NodeConfig, listen: Vec<SocketAddr>) -> Self {
        Self::with_options(NodeOptions::new(config, listen))
    }

    /// From full options (data directory, event capacity, save interval).
    pub fn with_options(options: NodeOptions) -> Self {
        NetworkManager {
            runtime: R::default(),
            options,
        }
    }
}

impl<R: Runtime> NetworkManager<R> {
    /// Binds, loads the node's files and starts it on the runtime (call it from inside that
    /// runtime).
    pub async fn start(self) -> Result<NetworkHandle, StartError> {
        start(self.runtime, self.options).await
    }
}

async fn accept_loop<R: Runtime>(rt: R, l: Arc<R::Listener>, tx: mpsc::UnboundedSender<Msg<R>>) {
    loop {
        match rt.accept(l.clone()).await {
            Ok((r, w, remote)) => {
                if tx
                    .unbounded_send(LoopEvent::Accepted((r, w), remote))
                    .is_err()
                {
                    return; // the node stopped
                }
            }
            Err(e) => {
                if tx.is_closed() {
                    return;
                }
                // Out of file descriptors and similar: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                rt.sleep_until(Instant::now() + std::time::Duration::from_millis(50))
                    .await;
            }
        }
    }
}

/// Waits for `io` or for a pause/resume message to the reader, whichever comes first.
async fn or_control<T>(
    io: BoxFuture<'_, T>,
    ctl: &mut mpsc::UnboundedReceiver<bool>,
) -> Either<T, Option<bool>> {
    match select(io, ctl.next()).await {
        Either::Left((res, _)) => Either::Left(res),
        Either::Right((ctl_msg, _)) => Either::Right(ctl_msg),
    }
}

async fn reader<R: Runtime>(
    mut r: R::Read,
    conn: ConnectionId,
    tx: mpsc::UnboundedSender<Msg<R>>,
    mut ctl: mpsc::UnboundedReceiver<bool>,
    credit: Arc<ReadCredit>,
) {
    // Reader tasks exist only on runtimes without readiness (see `supports_readiness`).
    let mut buf = ReadBuffer::default();
    let mut paused = false;
    loop {
        if paused {
            match ctl.next().await {
                Some(p) => paused = p,
                None => return,
            }
            continue;
        }
        if credit.exhausted() {
            // The loop is behind with what this reader handed it: wait for it.
            match or_control(Box::pin(credit.wait()), &mut ctl).await {
                Either::Left(()) => {}
                Either::Right(Some(p)) => paused = p,
                Either::Right(None) => return,
            }
            continue;
        }
        let outcome = match or_control(r.read(buf.for_read()), &mut ctl).await {
            Either::Left(read) => Either::Left(read.map(|n| buf.take(n))),
            Either::Right(ctl_msg) => Either::Right(ctl_msg),
        };
        match outcome {
            Either::Left(Ok(bytes)) if bytes.is_empty() => {
                let _ = tx.unbounded_send(LoopEvent::Ended(conn, None));
                return;
            }
            Either::Left(Ok(bytes)) => {
                credit.handed(bytes.len());
                if tx.unbounded_send(LoopEvent::Received(conn, bytes)).is_err() {
                    return;
                }
            }
            Either::Left(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Either::Left(Err(e)) => {
                let _ = tx.unbounded_send(LoopEvent::Ended(conn, Some(e.to_string())));
                return;
            }
            Either::Right(Some(p)) => paused = p,
            Either::Right(None) => return,
        }
    }
}

async fn writer<R: Runtime>(
    w: Arc<SharedWrite<R::Write>>,
    conn: ConnectionId,
    tx: mpsc::UnboundedSender<Msg<R>>,
    rx: mpsc::UnboundedReceiver<ToWriter>,
) {
    write_until_closed::<R>(w, conn, &tx, rx).await;
    let _ = tx.unbounded_send(LoopEvent::Flushed(conn));
}

async fn write_until_closed<R: Runtime>(
    shared: Arc<SharedWrite<R::Write>>,
    conn: ConnectionId,
    tx: &mpsc::UnboundedSender<Msg<R>>,
    mut rx: mpsc::UnboundedReceiver<ToWriter>,
) {
    /// Transmits waiting together are written with one call, up to this size.
    const BATCH: usize = 512 * 1024;
    while let Some(msg) = rx.next().await {
        let mut w = shared.half.lock().await;
        let mut buf = match msg {
            ToWriter::Data(b) => b,
            ToWriter::Close => {
                let _ = w.close().await;
                return;
            }
        };
        let mut items = 1;
        let mut close = false;
        while buf.len() < BATCH {
            match rx.try_recv() {
                Ok(ToWriter::Data(more)) => {
                    items += 1;
                    if buf.capacity() < buf.len() + more.len() {
                        // Sized once for the whole batch: growing by doubling would copy
                        // the bytes gathered so far again at every step.
                        buf.reserve(BATCH.max(buf.len() + more.len()) - buf.len());
                    }
                    buf.extend_from_slice(&more);
                }
                Ok(ToWriter::Close) => {
                    close = true;
                    break;
                }
                _ => break,
            }
        }
        if let Err(e) = w.write_all(&buf).await {
            let _ = tx.unbounded_send(LoopEvent::Ended(conn, Some(e.to_string())));
            return;
        }
        if close {
            let _ = w.close().await;
        }
        drop(w);
        // Only now may the loop write directly again: everything queued is in the socket.
        shared
            .queued
            .fetch_sub(items, std::sync::atomic::Ordering::AcqRel);
        let _ = tx.unbounded_send(LoopEvent::Written(conn, buf.len()));
        if close {
            return;
        }
    }
}

/// The async runtimes' socket table: per-connection writer tasks, and reader tasks or
/// readiness waits inside the loop.
struct AsyncTable<R: Runtime> {
    rt: R,
    tx: mpsc::UnboundedSender<Msg<R>>,
    io: BTreeMap<ConnectionId, ConnIo<R>>,
    /// Transmits the loop may still write itself this turn (see [`MAX_DIRECT_WRITES_PER_TURN`]).
    direct_budget: usize,
    /// Read halves waiting for readiness, read by the loop ([`ReaderIo::InLoop`]).
    ready: FuturesUnordered<Abortable<BoxFuture<'static, Readiness<R>>>>,
    /// Writer tasks still running (they end with `LoopEvent::Flushed`).
    writers: usize,
    /// [`crate::NodeOptions::max_unprocessed_read_bytes`].
    read_limit: usize,
}

impl<R: Runtime> AsyncTable<R> {
    fn note(&mut self, msg: &Msg<R>) {
        if matches!(msg, LoopEvent::Flushed(_)) {
            self.writers = self.writers.saturating_sub(1);
        }
    }

    /// Waits again for a read half the loop just read, unless its connection closed (the
    /// half is dropped) or reading is paused (it is parked).
    fn rearm(&mut self, conn: ConnectionId, r: R::Read) {
        let Some(ReaderIo::InLoop {
            abort,
            paused,
            parked,
        }) = self.io.get_mut(&conn).map(|c| &mut c.reader)
        else {
            return;
        };
        if *paused {
            *parked = Some(r);
        } else {
            *abort = arm::<R>(&mut self.ready, conn, r);
        }
    }
}

/// Waits for `r` to become readable, inside the loop (in `ready`); returns the handle that
/// cancels the wait.
fn arm<R: Runtime>(
    ready: &mut FuturesUnordered<Abortable<BoxFuture<'static, Readiness<R>>>>,
    conn: ConnectionId,
    mut r: R::Read,
) -> AbortHandle {
    let (abort, registration) = AbortHandle::new_pair();
    let wait: BoxFuture<'static, Readiness<R>> = Box::pin(async move {
        let ready = r.readable().await;
        (conn, r, ready)
    });
    ready.push(Abortable::new(wait, registration));
    abort
}

/// Reads a connection whose read half became readable and hands the bytes to the core,
/// then waits again. What the loop does instead of a reader task on runtimes with
/// readiness.
fn read_in_loop<R: Runtime>(
    core: &mut DriverCore,
    table: &mut AsyncTable<R>,
    (conn, mut r, ready): Readiness<R>,
) {
    if !table.io.contains_key(&conn) {
        return; // closed meanwhile: drop the half
    }
    let mut buf = SHARED_READ_BUFFER.take();
    buf.clear();
    if buf.capacity() < ReadBuffer::LARGE {
        buf.reserve_exact(ReadBuffer::LARGE);
    }
    match ready.and_then(|()| r.try_read_buf(&mut buf)) {
        Ok(0) => core.handle_event(LoopEvent::Ended(conn, None), table),
        Ok(_) => {
            core.received(conn, &buf, table);
            table.rearm(conn, r);
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            table.rearm(conn, r);
        }
        Err(e) => core.handle_event(LoopEvent::Ended(conn, Some(e.to_string())), table),
    }
    SHARED_READ_BUFFER.set(buf);
}

impl<R: Runtime> SocketTable for AsyncTable<R> {
    type Stream = (R::Read, R::Write);

    fn open(&mut self, conn: ConnectionId, (r, w): Self::Stream) {
        let (wtx, wrx) = mpsc::unbounded();
        self.writers += 1;
        let write = Arc::new(SharedWrite {
            half: futures::lock::Mutex::new(w),
            queued: std::sync::atomic::AtomicUsize::new(0),
        });
        self.rt.spawn(Box::pin(writer::<R>(
            write.clone(),
            conn,
            self.tx.clone(),
            wrx,
        )));
        let reader = if r.supports_readiness() {
            ReaderIo::InLoop {
                abort: arm::<R>(&mut self.ready, conn, r),
                paused: false,
                parked: None,
            }
        } else {
            let (ctl, rrx) = mpsc::unbounded();
            let credit = ReadCredit::new(self.read_limit);
            self.rt.spawn(Box::pin(reader::<R>(
                r,
                conn,
                self.tx.clone(),
                rrx,
                credit.clone(),
            )));
            ReaderIo::Task { ctl, credit }
        };
        self.io.insert(
            conn,
            ConnIo {
                writer: wtx,
                write,
                direct: true,
                reader,
            },
        );
    }

    fn wants_more_actions(&self) -> bool {
        self.direct_budget > 0
    }

    fn processed(&mut self, conn: ConnectionId, n: usize) {
        if let Some(ConnIo {
            reader: ReaderIo::Task { credit, .. },
            ..
        }) = self.io.get(&conn)
        {
            credit.processed(n);
        }
    }

    fn write(&mut self, conn: ConnectionId, mut bytes: Vec<u8>) {
        use std::sync::atomic::Ordering;
        let Some(c) = self.io.get_mut(&conn) else {
            return;
        };
        // Nothing queued for the writer task: write now, from the loop, what the socket
        // takes, and queue only the rest.
        if c.direct && self.direct_budget > 0 && c.write.queued.load(Ordering::Acquire) == 0 {
            self.direct_budget -= 1;
            if let Some(mut w) = c.write.half.try_lock() {
                match w.try_write(&bytes) {
                    Ok(n) => {
                        // Reported through the loop's own channel: it is read this turn.
                        let _ = self.tx.unbounded_send(LoopEvent::Written(conn, n));
                        if n == bytes.len() {
                            return;
                        }
                        bytes.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => c.direct = false,
                    Err(e) => {
                        let _ = self
                            .tx
                            .unbounded_send(LoopEvent::Ended(conn, Some(e.to_string())));
                        return;
                    }
                }
            }
        }
        c.write.queued.fetch_add(1, Ordering::AcqRel);
        let _ = c.writer.unbounded_send(ToWriter::Data(bytes));
    }

    fn close(&mut self, conn: ConnectionId) {
        if let Some(c) = self.io.remove(&conn) {
            let _ = c.writer.unbounded_send(ToWriter::Close);
            match c.reader {
                ReaderIo::Task { credit, .. } => credit.close(),
                ReaderIo::InLoop { abort, .. } => abort.abort(),
            }
        }
    }

    fn pause(&mut self, conn: ConnectionId, pause: bool) {
        let resume = match self.io.get_mut(&conn).map(|c| &mut c.reader) {
            Some(ReaderIo::Task { ctl, .. }) => {
                let _ = ctl.unbounded_send(pause);
                None
            }
            // A half waiting for readiness is parked when it comes back (see `rearm`).
            Some(ReaderIo::InLoop { paused, parked, .. }) => {
                *paused = pause;
                if pause {
                    None
                } else {
                    parked.take()
                }
            }
            None => None,
        };
        if let Some(r) = resume {
            self.rearm(conn, r);
        }
    }

    fn dial(&mut self, conn: ConnectionId, addr: SocketAddr) {
        let (rt, tx) = (self.rt.clone(), self.tx.clone());
        self.rt.spawn(Box::pin(async move {
            let r = rt.connect(addr).await;
            let _ = tx.unbounded_send(LoopEvent::Dialed(conn, r));
        }));
    }
}

/// Sockets the loop reads in one turn at most before it acts on what it read (sends what
/// the node produced): bounds the latency one busy connection adds to the others.
const MAX_READS_PER_TURN: usize = 32;

/// Transmits the loop writes itself in one turn at most. Then it yields, so the tasks its
/// writes woke (in one process, the very peers it writes to) run before it writes the rest
/// of a burst such as a broadcast to many peers; the node builds those frames only then.
const MAX_DIRECT_WRITES_PER_TURN: usize = 16;

/// What woke the loop.
enum Wake<R: Runtime> {
    /// A message from the handles, the writers, the reader tasks or the dialers (`None`:
    /// every sender is gone).
    Message(Option<Msg<R>>),
    /// A read half the loop reads itself became readable.
    Readable(Readiness<R>),
    /// The deadline passed.
    Timer,
}

/// The loop: waits for socket events, commands or the next deadline, applies them to the
/// core, and carries out the resulting actions. Ends when the node has shut down.
async fn run<R: Runtime>(
    rt: R,
    mut core: DriverCore,
    mut rx: mpsc::UnboundedReceiver<Msg<R>>,
    tx: mpsc::UnboundedSender<Msg<R>>,
) {
    let mut table = AsyncTable {
        rt: rt.clone(),
        tx,
        io: BTreeMap::new(),
        ready: FuturesUnordered::new(),
        direct_budget: 0,
        writers: 0,
        read_limit: core.max_unprocessed_read_bytes(),
    };
    let mut armed: Option<(Option<Instant>, BoxFuture<'static, ()>)> = None;
    loop {
        table.direct_budget = MAX_DIRECT_WRITES_PER_TURN;
        core.act(&mut table);
        if core.is_finished() {
            let conns: Vec<ConnectionId> = table.io.keys().copied().collect();
            let mut writing = table.writers;
            for c in conns {
                table.close(c);
            }
            // Let the writers flush the Goodbyes, for at most two seconds.
            let deadline = Instant::now() + std::time::Duration::from_secs(2);
            while writing > 0 {
                match select(rx.next(), rt.sleep_until(deadline)).await {
                    Either::Left((Some(LoopEvent::Flushed(_)), _)) => writing -= 1,
                    Either::Left((Some(LoopEvent::Command(cmd)), _)) => core.command(cmd),
                    Either::Left((Some(_), _)) => {}
                    _ => break,
                }
            }
            core.complete_stop();
            return;
        }
        // The timer is kept across turns while the node's deadline stays the same (most
        // turns): creating a runtime timer on every wake-up costs an allocation and a timer
        // registration each.
        let deadline = core.next_deadline();
        let due = core.has_pending_actions() || deadline.is_some_and(|d| d <= Instant::now());
        if !due && armed.as_ref().map(|(d, _)| *d) != Some(deadline) {
            let timer = match deadline {
                Some(d) => rt.sleep_until(d),
                None => Box::pin(std::future::pending()) as BoxFuture<'static, ()>,
            };
            armed = Some((deadline, timer));
        }
        let wake = match &mut armed {
            // The turn's share of writes is done and more remain: let the tasks they woke
            // run first, then go on.
            _ if core.has_pending_actions() => {
                rt.yield_now().await;
                Wake::<R>::Timer
            }
            _ if due => Wake::<R>::Timer,
            None => Wake::<R>::Timer,
            Some((_, timer)) => {
                let wake = futures::future::poll_fn(|cx| {
                    if let Poll::Ready(m) = rx.poll_next_unpin(cx) {
                        return Poll::Ready(Wake::Message(m));
                    }
                    // An aborted wait (its connection closed) finishes with nothing to do.
                    while let Poll::Ready(Some(r)) = table.ready.poll_next_unpin(cx) {
                        if let Ok(r) = r {
                            return Poll::Ready(Wake::Readable(r));
                        }
                    }
                    if timer.poll_unpin(cx).is_ready() {
                        return Poll::Ready(Wake::Timer);
                    }
                    Poll::Pending
                })
                .await;
                if matches!(wake, Wake::Timer) {
                    // A finished timer is not polled again.
                    armed = None;
                }
                wake
            }
        };
        match wake {
            Wake::Message(Some(msg)) => {
                table.note(&msg);
                core.handle_event(msg, &mut table);
            }
            Wake::Readable(r) => read_in_loop(&mut core, &mut table, r),
            Wake::Message(None) | Wake::Timer => {}
        }
        // Take whatever else is already waiting before acting, so bursts are batched: every
        // queued message, then any socket already readable, in turn, so neither starves.
        // (Polling `ready` here with a no-op waker is harmless: the wait above polls it with
        // the loop's own waker before the loop sleeps.)
        for _ in 0..MAX_READS_PER_TURN {
            let mut progressed = false;
            while let Ok(msg) = rx.try_recv() {
                table.note(&msg);
                core.handle_event(msg, &mut table);
                progressed = true;
            }
            if let Some(Some(r)) = table.ready.next().now_or_never() {
                if let Ok(r) = r {
                    read_in_loop(&mut core, &mut table, r);
                }
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        // The timer may have fired late or not at all: check the clock ourselves.
        core.timeout();
    }
}
