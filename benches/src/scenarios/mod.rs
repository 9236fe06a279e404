//! One module per benchmark scenario, each a copy of the anchor's scenario of the same name.
//! Every `run` returns a [`Report`]; `main` adds the run metadata and prints it as one line.

pub mod broadcast;
pub mod conn_mem;
pub mod connect;
pub mod floor;
pub mod rtt;
pub mod streams;

use serde_json::Value;

/// What a scenario found: the body of its result line.
pub struct Report {
    /// The scenario's name, as on the command line.
    pub scenario: &'static str,
    /// The parameters it ran with, and how it measured.
    pub params: Value,
    /// Whether every planned iteration ran (false when the soft budget stopped it early or
    /// something failed).
    pub completed: bool,
    /// Why it stopped early, if it did.
    pub failure: Option<String>,
    /// The figures.
    pub results: Value,
}
