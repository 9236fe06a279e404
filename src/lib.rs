//! # silver-p2p
//!
//! The facade crate: depend on this one. It re-exports the sans-IO core
//! ([`silver_p2p_core`]); runtime adapters will be re-exported behind one cargo feature each.
#![forbid(unsafe_code)]

pub use silver_p2p_core as core;
pub use silver_p2p_core::*;
