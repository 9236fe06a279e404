//! Run a silver-p2p node on async-std. async-std is discontinued upstream in favour of smol;
//! both sit on async-io, so this crate is the smol adapter with async-std's task spawner, and
//! moving to smol later means changing one import.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use silver_p2p_async_std::{NetworkManager, NodeConfig};
//! async_std::task::block_on(async {
//!     let node = NetworkManager::new(NodeConfig::default(), vec!["127.0.0.1:0".parse()?])
//!         .start()
//!         .await?;
//!     node.stop(std::time::Duration::from_secs(5)).await?;
//!     Ok(())
//! })
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use silver_p2p_driver::BoxFuture;
use silver_p2p_smol::{AsyncIo, Spawner};

pub use silver_p2p_driver::core::node::NodeConfig;
pub use silver_p2p_driver::{
    core, EventStream, HandleError, NetworkHandle, NodeOptions, StartError,
};

/// async-std's task spawner.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStdSpawner;

impl Spawner for AsyncStdSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        async_std::task::spawn(task);
    }
}

/// Builds and starts a node on async-std: `NetworkManager::new(config, listen).start().await`.
pub type NetworkManager = silver_p2p_driver::NetworkManager<AsyncIo<AsyncStdSpawner>>;
