//! Run a silver-p2p node on tokio. This crate only tells the shared driver how tokio spawns,
//! sleeps and does TCP; everything else is in `silver-p2p-driver`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use silver_p2p_tokio::{NetworkManager, NodeConfig};
//! let node = NetworkManager::new(NodeConfig::default(), vec!["127.0.0.1:0".parse()?])
//!     .start()
//!     .await?;
//! println!("listening on {:?} as {}", node.listen_addrs(), node.peer_id());
//! node.stop(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use silver_p2p_driver::{BoxFuture, ReadHalf, Runtime, WriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

pub use silver_p2p_driver::core::node::NodeConfig;
pub use silver_p2p_driver::{
    core, EventStream, HandleError, NetworkHandle, NodeOptions, StartError,
};

/// The tokio [`Runtime`]: tasks go to the current tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// A tokio read half.
pub struct Reader(OwnedReadHalf);
/// A tokio write half.
pub struct Writer(OwnedWriteHalf);

impl ReadHalf for Reader {
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(self.0.read(buf))
    }
    fn readable(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.0.readable())
    }
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
    fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        // Through `AsyncRead` rather than `try_read_buf`: tokio's `poll_read` takes a read
        // that leaves part of the buffer empty as proof the socket is drained and clears
        // its readiness, where `try_read_buf` keeps it set until a read fails. Without that,
        // every message that arrives alone (a broadcast's copy, a request) costs a second
        // read that only returns `WouldBlock`, and a second turn of the loop.
        //
        // Outside tokio's cooperative budget: with the budget spent, `poll_read` returns
        // `Pending` without reading and wakes the waker it was given, here a no-op one.
        // Taken for `WouldBlock`, that would leave the readiness set and the loop reading
        // the same socket again and again within one poll, never yielding to refill the
        // budget. Unconstrained, `Pending` means the socket really has nothing.
        let read = std::pin::pin!(tokio::task::coop::unconstrained(self.0.read_buf(buf)));
        match read.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn supports_readiness(&self) -> bool {
        true
    }
}

impl WriteHalf for Writer {
    fn write_all<'a>(&'a mut self, buf: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(self.0.write_all(buf))
    }
    fn close(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(self.0.shutdown())
    }
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
}

fn split(s: TcpStream) -> io::Result<(Reader, Writer)> {
    s.set_nodelay(true)?;
    let (r, w) = s.into_split();
    Ok((Reader(r), Writer(w)))
}

impl Runtime for Tokio {
    type Listener = TcpListener;
    type Read = Reader;
    type Write = Writer;

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        tokio::spawn(task);
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn yield_now(&self) -> BoxFuture<'static, ()> {
        // Tokio's own yield also polls the I/O driver before the task resumes, so the
        // sockets our writes made readable are served in between.
        Box::pin(tokio::task::yield_now())
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(TcpListener, SocketAddr)>> {
        Box::pin(async move {
            let l = TcpListener::bind(addr).await?;
            let a = l.local_addr()?;
            Ok((l, a))
        })
    }

    fn accept(
        &self,
        l: Arc<TcpListener>,
    ) -> BoxFuture<'static, io::Result<(Reader, Writer, SocketAddr)>> {
        Box::pin(async move {
            let (s, remote) = l.accept().await?;
            let (r, w) = split(s)?;
            Ok((r, w, remote))
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(Reader, Writer)>> {
        Box::pin(async move { split(TcpStream::connect(addr).await?) })
    }
}

/// Builds and starts a node on tokio: `NetworkManager::new(config, listen).start().await`.
pub type NetworkManager = silver_p2p_driver::NetworkManager<Tokio>;
