//! Run a silver-p2p node on plain `std::net` sockets and threads: one loop thread owns the
//! node, each connection has a reader and a writer thread, and the handle blocks. No async
//! runtime involved. The dispatch logic is the driver's ([`SocketTable`]); this crate only
//! supplies threads and blocking sockets.
//!
//! ```no_run
//! use silver_p2p_std_thread::{NetworkManager, NodeConfig};
//! let node = NetworkManager::new(NodeConfig::default(), vec!["127.0.0.1:0".parse().unwrap()])
//!     .start()
//!     .unwrap();
//! println!("listening on {:?}", node.listen_addrs());
//! node.stop(std::time::Duration::from_secs(5)).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use silver_p2p_driver::core::node::ConnectionId;
use silver_p2p_driver::{DriverCore, LoopEvent, ReadBuffer, ReadCredit, SocketTable};

pub use silver_p2p_driver::core::node::NodeConfig;
pub use silver_p2p_driver::{
    core, BlockingHandle, EventStream, HandleError, NodeOptions, StartError,
};

/// How long a dial may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Event = LoopEvent<TcpStream>;

/// A reader thread's pause switch.
#[derive(Default)]
struct Gate {
    paused: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    fn set(&self, paused: bool) {
        *self.paused.lock().unwrap_or_else(|p| p.into_inner()) = paused;
        self.cond.notify_all();
    }

    fn wait_open(&self) {
        let mut p = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        while *p {
            p = self.cond.wait(p).unwrap_or_else(|p| p.into_inner());
        }
    }
}

enum ToWriter {
    Data(Vec<u8>),
    Close,
}

struct ConnIo {
    writer: Sender<ToWriter>,
    gate: Arc<Gate>,
    credit: Arc<ReadCredit>,
    stream: TcpStream,
}

struct ThreadTable {
    tx: Sender<Event>,
    io: BTreeMap<ConnectionId, ConnIo>,
    /// Writer threads still running (they end with `LoopEvent::Flushed`).
    writers: usize,
    /// [`NodeOptions::max_unprocessed_read_bytes`].
    read_limit: usize,
}

impl ThreadTable {
    fn note(&mut self, ev: &Event) {
        if matches!(ev, LoopEvent::Flushed(_)) {
            self.writers = self.writers.saturating_sub(1);
        }
    }
}

impl SocketTable for ThreadTable {
    type Stream = TcpStream;

    fn open(&mut self, conn: ConnectionId, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (Ok(mut rd), Ok(mut wr), Ok(keep)) =
            (stream.try_clone(), stream.try_clone(), stream.try_clone())
        else {
            let _ = self
                .tx
                .send(LoopEvent::Ended(conn, Some("cannot clone socket".into())));
            return;
        };
        let gate = Arc::new(Gate::default());
        let credit = ReadCredit::new(self.read_limit);
        let (wtx, wrx) = mpsc::channel::<ToWriter>();
        let tx = self.tx.clone();
        let (g, c) = (gate.clone(), credit.clone());
        thread::spawn(move || {
            let mut buf = ReadBuffer::default();
            loop {
                g.wait_open();
                // The loop is behind with what this reader handed it: wait for it.
                c.wait_blocking();
                match rd.read(buf.for_read()) {
                    Ok(0) => {
                        let _ = tx.send(LoopEvent::Ended(conn, None));
                        return;
                    }
                    Ok(n) => {
                        c.handed(n);
                        if tx.send(LoopEvent::Received(conn, buf.take(n))).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(LoopEvent::Ended(conn, Some(e.to_string())));
                        return;
                    }
                }
            }
        });
        let tx = self.tx.clone();
        thread::spawn(move || {
            const BATCH: usize = 512 * 1024;
            while let Ok(msg) = wrx.recv() {
                let mut buf = match msg {
                    ToWriter::Data(b) => b,
                    ToWriter::Close => break,
                };
                let mut close = false;
                while buf.len() < BATCH {
                    match wrx.try_recv() {
                        Ok(ToWriter::Data(more)) => buf.extend_from_slice(&more),
                        Ok(ToWriter::Close) => {
                            close = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = wr.write_all(&buf) {
                    let _ = tx.send(LoopEvent::Ended(conn, Some(e.to_string())));
                    break;
                }
                let _ = tx.send(LoopEvent::Written(conn, buf.len()));
                if close {
                    break;
                }
            }
            let _ = wr.flush();
            let _ = wr.shutdown(Shutdown::Write);
            let _ = tx.send(LoopEvent::Flushed(conn));
        });
        self.writers += 1;
        self.io.insert(
            conn,
            ConnIo {
                writer: wtx,
                gate,
                credit,
                stream: keep,
            },
        );
    }

    fn write(&mut self, conn: ConnectionId, bytes: Vec<u8>) {
        if let Some(c) = self.io.get(&conn) {
            let _ = c.writer.send(ToWriter::Data(bytes));
        }
    }

    fn close(&mut self, conn: ConnectionId) {
        if let Some(c) = self.io.remove(&conn) {
            let _ = c.writer.send(ToWriter::Close);
            // Wake a reader blocked on a paused gate or on its credit so its thread can end.
            c.gate.set(false);
            c.credit.close();
            let _ = c.stream.shutdown(Shutdown::Read);
        }
    }

    fn pause(&mut self, conn: ConnectionId, paused: bool) {
        if let Some(c) = self.io.get(&conn) {
            c.gate.set(paused);
        }
    }

    fn processed(&mut self, conn: ConnectionId, n: usize) {
        if let Some(c) = self.io.get(&conn) {
            c.credit.processed(n);
        }
    }

    fn dial(&mut self, conn: ConnectionId, addr: SocketAddr) {
        let tx = self.tx.clone();
        thread::spawn(move || {
            let r = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT);
            let _ = tx.send(LoopEvent::Dialed(conn, r));
        });
    }
}

/// Builds and starts a node on threads.
#[derive(Debug, Clone)]
pub struct NetworkManager {
    options: NodeOptions,
}

impl NetworkManager {
    /// A node with `config` listening on `listen` (port 0 picks a free port).
    pub fn new(config: NodeConfig, listen: Vec<SocketAddr>) -> Self {
        NetworkManager {
            options: NodeOptions::new(config, listen),
        }
    }

    /// From full options (data directory, event capacity, save interval).
    pub fn with_options(options: NodeOptions) -> Self {
        NetworkManager { options }
    }

    /// Binds, loads the node's files and starts the loop thread; returns the blocking
    /// handle.
    pub fn start(self) -> Result<BlockingHandle, StartError> {
        let opts = self.options;
        opts.config.validate()?;
        let mut listeners = Vec::new();
        let mut bound = Vec::new();
        for addr in &opts.listen {
            let l = TcpListener::bind(addr).map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
            let a = l.local_addr().map_err(|source| StartError::Bind {
                addr: *addr,
                source,
            })?;
            listeners.push(l);
            bound.push(a);
        }
        let (core, peer_id) = silver_p2p_driver::prepare(&opts, &bound)?;
        let (tx, rx) = mpsc::channel::<Event>();
        for l in listeners {
            let tx = tx.clone();
            thread::spawn(move || accept_loop(l, tx));
        }
        let send = Mutex::new(tx.clone());
        let handle = silver_p2p_driver::NetworkHandle::new(
            move |cmd| {
                send.lock()
                    .map(|s| s.send(LoopEvent::Command(cmd)).is_ok())
                    .unwrap_or(false)
            },
            core.outbox(),
            peer_id,
            bound.clone(),
            opts.event_capacity,
        );
        thread::spawn(move || run(core, rx, tx, bound));
        Ok(handle.blocking())
    }
}

fn accept_loop(l: TcpListener, tx: Sender<Event>) {
    for s in l.incoming() {
        match s {
            Ok(s) => {
                let remote = match s.peer_addr() {
                    Ok(a) => a,
                    Err(_) => continue,
                };
                if tx.send(LoopEvent::Accepted(s, remote)).is_err() {
                    return; // the node stopped
                }
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn run(mut core: DriverCore, rx: Receiver<Event>, tx: Sender<Event>, listen: Vec<SocketAddr>) {
    let mut table = ThreadTable {
        tx,
        io: BTreeMap::new(),
        writers: 0,
        read_limit: core.max_unprocessed_read_bytes(),
    };
    loop {
        core.act(&mut table);
        if core.is_finished() {
            let conns: Vec<ConnectionId> = table.io.keys().copied().collect();
            for c in conns {
                table.close(c);
            }
            // Let the writers flush the Goodbyes, for at most two seconds.
            let deadline = Instant::now() + Duration::from_secs(2);
            while table.writers > 0 {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(LoopEvent::Flushed(_)) => table.writers -= 1,
                    Ok(LoopEvent::Command(cmd)) => core.command(cmd),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            core.complete_stop();
            drop(rx);
            // Wake the accept threads (blocked in accept) so they see the loop is gone.
            for a in listen {
                let _ = TcpStream::connect_timeout(&a, Duration::from_millis(200));
            }
            return;
        }
        let ev = match core.next_deadline() {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(ev) => Some(ev),
                Err(_) => return,
            },
        };
        if let Some(ev) = ev {
            table.note(&ev);
            core.handle_event(ev, &mut table);
            while let Ok(ev) = rx.try_recv() {
                table.note(&ev);
                core.handle_event(ev, &mut table);
            }
        }
        core.timeout();
    }
}
