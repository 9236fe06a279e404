//! Run a silver-p2p node on smol. The TCP and timer code here is written against async-io
//! and futures-io, which async-std shares, so `silver-p2p-async-std` reuses it with its own
//! spawner: one implementation serves both runtimes.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use silver_p2p_smol::{NetworkManager, NodeConfig};
//! smol::block_on(async {
//!     let node = NetworkManager::new(NodeConfig::default(), vec!["127.0.0.1:0".parse()?])
//!         .start()
//!         .await?;
//!     println!("listening on {:?}", node.listen_addrs());
//!     node.stop(std::time::Duration::from_secs(5)).await?;
//!     Ok(())
//! })
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use silver_p2p_driver::{BoxFuture, ReadHalf, Runtime, WriteHalf};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

pub use silver_p2p_driver::core::node::NodeConfig;
pub use silver_p2p_driver::{
    core, EventStream, HandleError, NetworkHandle, NodeOptions, StartError,
};

/// Runs tasks for [`AsyncIo`]. smol and async-std each supply one.
pub trait Spawner: Clone + Send + Sync + 'static {
    /// Runs `task` in the background.
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// smol's global executor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolSpawner;

impl Spawner for SmolSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        smol::spawn(task).detach();
    }
}

/// The [`Runtime`] over async-io's reactor and timers, with tasks on spawner `S`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncIo<S>(pub S);

/// A stream's reading side (async-net streams are cheap clones of one socket).
pub struct Reader(TcpStream);
/// A stream's writing side.
pub struct Writer(TcpStream);

impl ReadHalf for Reader {
    fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(self.0.read(buf))
    }
}

impl WriteHalf for Writer {
    fn write_all<'a>(&'a mut self, buf: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(self.0.write_all(buf))
    }
    fn close(&mut self) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            self.0.flush().await?;
            self.0.shutdown(std::net::Shutdown::Write)
        })
    }
}

fn split(s: TcpStream) -> io::Result<(Reader, Writer)> {
    s.set_nodelay(true)?;
    Ok((Reader(s.clone()), Writer(s)))
}

impl<S: Spawner> Runtime for AsyncIo<S> {
    type Listener = TcpListener;
    type Read = Reader;
    type Write = Writer;

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.0.spawn(task)
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::at(deadline).await;
        })
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

/// Builds and starts a node on smol: `NetworkManager::new(config, listen).start().await`.
pub type NetworkManager = silver_p2p_driver::NetworkManager<AsyncIo<SmolSpawner>>;
