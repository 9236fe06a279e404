//! # silver-p2p-sim
//!
//! A deterministic network simulator for silver-p2p: many unmodified `silver-p2p-core`
//! [`Node`](silver_p2p_core::node::Node)s in one thread, in virtual time, over simulated TCP
//! links with faults — to test the core itself and the application logic users build on it,
//! the way turmoil and madsim are used.
//!
//! * **Virtual time.** The clock jumps to the next event; an event heap orders events by
//!   time, then by a sequence number.
//! * **One seed.** Every node seed, identity, link draw, fault decision and workload choice
//!   derives from one seeded ChaCha generator: the same seed and scenario give the same trace,
//!   checked through [`Report::trace_hash`].
//! * **TCP-like links.** Reliable and in order per direction; every write is re-split at
//!   random byte boundaries; latency (flat or by a [`Regions`] matrix), jitter and bandwidth
//!   are configurable distributions ([`LinkConfig`]); a reader that pauses or a stall causes
//!   back-pressure on the writer.
//! * **Real cryptography.** Nodes run their Noise handshakes and encrypted transport; a node
//!   left at `cipher = "auto"` runs AES-256-GCM on every machine (as the adapters resolve it
//!   on CPUs with AES instructions), so a seed replays the same trace anywhere.
//! * **Faults.** Stalls, resets (each end told at its own time, or never: half-open),
//!   one-way and two-way partitions with healing, crashes (process or machine) and restarts
//!   with the last persisted address book and bans, churn, dial failures and refusals, and
//!   a sybil actor flooding addresses ([`Faults`], [`Command`], [`SybilConfig`]).
//! * **Invariants.** Checked as the run goes, in a safety phase (faults on) then a liveness
//!   phase (faults off, the network must converge within a budget): no panic; exactly-once
//!   delivery per connection and per application id; events consistent with the node's own
//!   peer table; no honest node banned; every bounded
//!   structure within its bound; after healing, a connected graph and a broadcast reaching
//!   every live node. See [`Report::violations`].
//!
//! ## The run loop
//!
//! The simulator plays the adapter for every node and follows the core's run-loop contract
//! to the letter: apply one input (`Connected`, `Received`, `Written`, `Closed`, `Timeout`,
//! or a command), drain `poll_output` to `None` — routing transmits into links, dials to
//! listeners, closes to end-of-stream markers, and events to the ledger and the hooks —
//! then re-read `poll_timeout`. Writes complete (`Written`) when the link's window has
//! room, so a slow or stalled reader back-pressures the writer as a socket would.
//!
//! ## Ordering
//!
//! The core keeps order within a message class (control, data, chunked bulk), not across
//! them. The simulator checks order where the application can observe it: unicasts first
//! sent on one connection reach the application in the order they were sent. Gossip order
//! per connection is hidden by the seen-cache; loss or duplication of any message on an
//! established connection is caught by comparing the connections' own counters whenever a
//! direction has nothing in flight.
//!
//! ## Example
//!
//! ```
//! use std::time::Duration;
//! use silver_p2p_sim::{Command, Pick, Scenario, Split};
//!
//! let report = Scenario::new(12)
//!     .seed(7)
//!     .duration(Duration::from_secs(120))
//!     .configure(|_, c| c.limits.target_outbound = 4)
//!     .at(Duration::from_secs(40), Command::Partition {
//!         split: Split::Fraction(0.5),
//!         oneway: false,
//!         heal_after: Some(Duration::from_secs(30)),
//!     })
//!     .on_event(|ctx, event| {
//!         // Application logic under test goes here; it may issue commands.
//!         if let silver_p2p_core::node::Event::Gossip { .. } = event {
//!             let _ = ctx.now();
//!         }
//!     })
//!     .run();
//! report.assert_ok();
//! assert!(report.broadcasts.sent > 0);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dist;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod ledger;
pub mod link;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod sim;
pub mod sybil;
pub mod trace;

pub use dist::Dist;
pub use link::{LinkConfig, Regions};
pub use report::{available_memory, process_peak_rss, Report};
pub use scenario::{
    Command, ConfigFn, Faults, Hook, HookCtx, NodeFn, PartitionFaults, Pick, Scenario, Split,
    Topology, Workload, BUILTIN_SCENARIOS,
};
pub use schedule::parse_schedule;
pub use sim::{FaultCounts, HostStatus, NodeId, Progress, Sim, Violation};
pub use sybil::SybilConfig;
