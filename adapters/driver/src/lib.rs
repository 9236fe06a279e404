//! # silver-p2p-driver
//!
//! Everything the runtime adapters share, written once: the clock that turns `Instant`s into
//! core [`Timestamp`](silver_p2p_core::Timestamp)s, [`DriverCore`] (the node plus the glue
//! that turns its outputs into socket actions and its events into answers for the handle),
//! the generic async run loop over a four-method-sized [`Runtime`] trait, the
//! [`NetworkHandle`] API users call, and the node's files (identity key, address book and
//! ban snapshot).
//!
//! A runtime crate (tokio, smol, async-std) only implements [`Runtime`]: spawn, a timer, and
//! TCP listen/accept/connect with split read and write halves. The std-thread adapter drives
//! [`DriverCore`] from threads instead of tasks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod core_loop;
mod cpu;
mod files;
mod handle;
mod outbox;
mod read_buffer;
mod read_credit;
mod runtime;
#[doc(hidden)]
pub mod testing;

pub use clock::Clock;
pub use core_loop::{Action, Command, DriverCore, EventHandler, LoopEvent, SendPath, SocketTable};
pub use cpu::has_aes_instructions;
pub use files::{load_or_create_key, os_seed, write_atomic, Files, FilesError};
pub use handle::{BlockingHandle, EventStream, HandleError, NetworkHandle};
pub use read_buffer::ReadBuffer;
pub use read_credit::ReadCredit;
pub use runtime::{
    prepare, start, BoxFuture, NetworkManager, ReadHalf, Runtime, StartError, WriteHalf,
};
pub use silver_p2p_core as core;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use silver_p2p_core::node::NodeConfig;

/// How to start a node: its configuration, where to listen, and where its files live.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node configuration (TOML-parsed or built in code).
    pub config: NodeConfig,
    /// Addresses to listen on (port 0 picks a free port; the bound address is announced).
    pub listen: Vec<SocketAddr>,
    /// Directory for the key file and the peers snapshot; `None` keeps nothing on disk and
    /// uses a fresh identity.
    pub data_dir: Option<PathBuf>,
    /// Events buffered per subscriber before further ones are dropped (and counted).
    pub event_capacity: usize,
    /// How often the address book and bans are saved (also saved at shutdown).
    pub save_interval: Duration,
    /// Bytes a connection's reader may have read but the loop not yet processed; above it
    /// the reader stops reading until the loop catches up, and TCP flow control slows the
    /// peer (see [`ReadCredit`]). Bounds the memory a fast peer can occupy when the loop or
    /// the application falls behind. Default 256 KiB (four full reads).
    pub max_unprocessed_read_bytes: usize,
}

impl NodeOptions {
    /// Options with `config`, listening on `listen`, nothing on disk.
    pub fn new(config: NodeConfig, listen: Vec<SocketAddr>) -> Self {
        NodeOptions {
            config,
            listen,
            data_dir: None,
            event_capacity: 65_536,
            save_interval: Duration::from_secs(60),
            max_unprocessed_read_bytes: Self::DEFAULT_MAX_UNPROCESSED_READ_BYTES,
        }
    }

    /// The default of [`NodeOptions::max_unprocessed_read_bytes`].
    pub const DEFAULT_MAX_UNPROCESSED_READ_BYTES: usize = 256 * 1024;

    /// Keeps the key and snapshot files under `dir`.
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
}
