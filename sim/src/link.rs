//! How simulated links behave: latency (flat or by a region matrix), jitter, bandwidth,
//! re-splitting of writes, socket buffer sizes and connect timeouts.
//!
//! Every link behaves like TCP: bytes arrive reliably and in order in each direction.
//! Jitter and bandwidth only move arrival times later, never reorder bytes.

use std::time::Duration;

use crate::dist::Dist;

/// A latency matrix between named regions, and how nodes are spread over them.
///
/// `latency_ms[a][b]` is the one-way base latency from region `a` to region `b` in
/// milliseconds (the matrix need not be symmetric). Each node is placed in a region drawn
/// with probability proportional to `weights`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Regions {
    /// Region names, for reports.
    pub names: Vec<String>,
    /// Relative share of nodes in each region.
    pub weights: Vec<u32>,
    /// One-way base latency from region row to region column, in milliseconds.
    pub latency_ms: Vec<Vec<f64>>,
}

impl Regions {
    /// Five regions with rough real-world one-way latencies (half the usual round trips):
    /// North America east and west, Europe, Asia, South America.
    pub fn world() -> Regions {
        let names = ["na-east", "na-west", "europe", "asia", "south-america"];
        let m = [
            [2.0, 35.0, 40.0, 90.0, 60.0],
            [35.0, 2.0, 70.0, 60.0, 80.0],
            [40.0, 70.0, 2.0, 110.0, 100.0],
            [90.0, 60.0, 110.0, 2.0, 150.0],
            [60.0, 80.0, 100.0, 150.0, 2.0],
        ];
        Regions {
            names: names.iter().map(|s| s.to_string()).collect(),
            weights: vec![30, 20, 30, 15, 5],
            latency_ms: m.iter().map(|r| r.to_vec()).collect(),
        }
    }

    /// Checks that the matrix is square, matches the names and weights, and has at least one
    /// region with a positive weight.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.names.len();
        if n == 0 || self.weights.len() != n || self.latency_ms.len() != n {
            return Err(
                "regions: names, weights and latency rows must have one entry per region".into(),
            );
        }
        if self.latency_ms.iter().any(|r| r.len() != n) {
            return Err("regions: the latency matrix must be square".into());
        }
        if self.weights.iter().all(|w| *w == 0) {
            return Err("regions: at least one weight must be positive".into());
        }
        Ok(())
    }
}

/// Link behaviour for every connection in a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkConfig {
    /// One-way base latency of a new connection, in milliseconds, drawn once per connection
    /// (ignored when `regions` is set).
    pub latency_ms: Dist,
    /// Region matrix; when set, a connection's base latency is its regions' entry.
    pub regions: Option<Regions>,
    /// Extra delay drawn for every write, in milliseconds. Never reorders bytes: a write
    /// arrives no earlier than the one before it on the same direction.
    pub jitter_ms: Dist,
    /// Bandwidth of each direction of each connection, in bytes per second, drawn once per
    /// connection. `None` means unlimited.
    pub bandwidth: Option<Dist>,
    /// Each write is re-split into between 1 and this many pieces at random byte boundaries,
    /// each delivered as its own read. At least 1.
    pub max_pieces: u32,
    /// Bytes one direction holds (socket send plus receive buffers) before the sender's
    /// writes stop completing: back-pressure when the reader is slow, paused or stalled.
    pub window: usize,
    /// How long a dial to an address where nothing answers takes to fail.
    pub connect_timeout: Duration,
}

impl Default for LinkConfig {
    /// A data-centre-like network: 5–50 ms one-way latency, up to 5 ms jitter, unlimited
    /// bandwidth, writes split in up to 3 pieces, 1 MiB per direction, 5 s connect timeout.
    fn default() -> Self {
        LinkConfig {
            latency_ms: Dist::Uniform { lo: 5.0, hi: 50.0 },
            regions: None,
            jitter_ms: Dist::Uniform { lo: 0.0, hi: 5.0 },
            bandwidth: None,
            max_pieces: 3,
            window: 1 << 20,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl LinkConfig {
    /// Slow, uneven links: the world region matrix, heavy-tailed jitter and 64 KiB/s – 1 MiB/s
    /// of bandwidth per direction.
    pub fn slow() -> LinkConfig {
        LinkConfig {
            regions: Some(Regions::world()),
            jitter_ms: Dist::Pareto {
                scale: 1.0,
                shape: 1.5,
            },
            bandwidth: Some(Dist::Uniform {
                lo: 64.0 * 1024.0,
                hi: 1024.0 * 1024.0,
            }),
            window: 256 << 10,
            ..LinkConfig::default()
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_pieces == 0 {
            return Err("links: max_pieces must be at least 1".into());
        }
        if self.window == 0 {
            return Err("links: window must be positive".into());
        }
        if let Some(r) = &self.regions {
            r.validate()?;
        }
        Ok(())
    }
}
