//! # silver-p2p
//!
//! The facade crate: depend on this one. It re-exports the sans-IO core
//! ([`silver_p2p_core`], also at the root of this crate) and, behind one cargo feature per
//! runtime, each adapter: `tokio` (default), `smol`, `async-std`, `std-thread`, or `full`.
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use silver_p2p::tokio::NetworkManager;
//! use silver_p2p::node::NodeConfig;
//! let node = NetworkManager::new(NodeConfig::default(), vec!["127.0.0.1:0".parse()?])
//!     .start()
//!     .await?;
//! println!("{} listening on {:?}", node.peer_id(), node.listen_addrs());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub use silver_p2p_core as core;
pub use silver_p2p_core::*;

/// The runtime-agnostic adapter layer (handle API, files), present with any runtime feature.
#[cfg(any(
    feature = "tokio",
    feature = "smol",
    feature = "async-std",
    feature = "std-thread"
))]
pub use silver_p2p_driver as driver;

/// Run a node on tokio.
#[cfg(feature = "tokio")]
pub use silver_p2p_tokio as tokio;

/// Run a node on smol.
#[cfg(feature = "smol")]
pub use silver_p2p_smol as smol;

/// Run a node on async-std.
#[cfg(feature = "async-std")]
pub use silver_p2p_async_std as async_std;

/// Run a node on plain threads with a blocking handle.
#[cfg(feature = "std-thread")]
pub use silver_p2p_std_thread as std_thread;
