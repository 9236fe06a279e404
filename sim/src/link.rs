//! How simulated links behave: latency (flat or by a region matrix), jitter, bandwidth,
//! re-splitting of writes, socket buffer sizes and connect timeouts.
//!
//! Every link behaves like TCP: bytes arrive reliably and in order in each direction.
//! Jitter and bandwidth only move arrival times later, never reorder bytes.

use std::time::Duration;

use crate::dist::Dist;
use crate::sim::MAX_PIECES;

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
        if self
            .latency_ms
            .iter()
            .flatten()
            .any(|l| !(0.0..=MAX_DELAY_MS).contains(l))
        {
            return Err(format!(
                "regions: latencies must be from 0 to {MAX_DELAY_MS} ms"
            ));
        }
        Ok(())
    }
}

/// The longest delay, in milliseconds, a link setting may name (one day), and the longest
/// any sampled delay lasts: a heavy-tailed draw beyond it is cut to it, so virtual times
/// cannot overflow.
pub const MAX_DELAY_MS: f64 = 86_400_000.0;

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
    /// each delivered as its own read. 1 to [`MAX_PIECES`].
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
        if self.max_pieces == 0 || self.max_pieces > MAX_PIECES {
            return Err(format!("links: max_pieces must be 1 to {MAX_PIECES}"));
        }
        if self.window == 0 {
            return Err("links: window must be positive".into());
        }
        self.latency_ms
            .validate("links: latency_ms", MAX_DELAY_MS)?;
        self.jitter_ms.validate("links: jitter_ms", MAX_DELAY_MS)?;
        if let Some(b) = &self.bandwidth {
            b.validate("links: bandwidth", f64::MAX)?;
            if b.is_zero() {
                return Err("links: bandwidth must be positive (or \"unlimited\")".into());
            }
        }
        if let Some(r) = &self.regions {
            r.validate()?;
        }
        Ok(())
    }

    /// Applies the settings of a TOML text on top of this configuration, as
    /// `silver-p2p-sim --links FILE` does. Every key is optional; an unknown key, a value
    /// of the wrong type or a result that fails [`LinkConfig::validate`] is an error that
    /// names it, and leaves `self` unchanged. The keys:
    ///
    /// ```toml
    /// latency_ms = { uniform = { lo = 5.0, hi = 50.0 } }   # or { const = 20.0 }, { exp = { mean = 20.0 } }
    /// jitter_ms = { pareto = { scale = 1.0, shape = 1.5 } }
    /// bandwidth = { const = 1048576.0 }   # bytes per second, or "unlimited"
    /// regions = "world"                   # or "none", or a table: names, weights, latency_ms
    /// max_pieces = 1                      # 1 to 8: every write arrives as one read
    /// window = 262144
    /// connect_timeout_ms = 2000
    /// ```
    pub fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let o: LinkOverrides = toml::from_str(text).map_err(|e| format!("links: {e}"))?;
        let mut next = self.clone();
        set_given(&mut next.latency_ms, o.latency_ms);
        set_given(&mut next.jitter_ms, o.jitter_ms);
        if let Some(b) = o.bandwidth {
            next.bandwidth = b.resolve("links: bandwidth", &[("unlimited", None)])?;
        }
        if let Some(r) = o.regions {
            next.regions = r.resolve(
                "links: regions",
                &[("world", Some(Regions::world())), ("none", None)],
            )?;
        }
        set_given(&mut next.max_pieces, o.max_pieces);
        set_given(&mut next.window, o.window);
        if let Some(ms) = o.connect_timeout_ms {
            next.connect_timeout = Duration::from_millis(ms);
        }
        next.validate()?;
        *self = next;
        Ok(())
    }
}

/// The keys [`LinkConfig::apply_toml`] reads, each optional.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkOverrides {
    latency_ms: Option<Dist>,
    jitter_ms: Option<Dist>,
    bandwidth: Option<NamedOr<Dist>>,
    regions: Option<NamedOr<Regions>>,
    max_pieces: Option<u32>,
    window: Option<usize>,
    connect_timeout_ms: Option<u64>,
}

/// Sets `field` to `value` if a settings file gave one (the TOML overrides leave every
/// key they do not name as it was).
pub(crate) fn set_given<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// A setting given either by one of a few names or in full (a table, a distribution).
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum NamedOr<T> {
    /// One of the names the setting knows.
    Named(String),
    /// The value in full.
    Value(T),
}

impl<T: Clone> NamedOr<T> {
    /// The value this setting stands for: a full value as given, a name as `names` maps
    /// it (`None` meaning "off"); an unknown name is an error naming `what` and the choices.
    pub(crate) fn resolve(
        self,
        what: &str,
        names: &[(&str, Option<T>)],
    ) -> Result<Option<T>, String> {
        match self {
            NamedOr::Value(v) => Ok(Some(v)),
            NamedOr::Named(n) => names
                .iter()
                .find(|(name, _)| *name == n)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    let known: Vec<String> = names.iter().map(|(k, _)| format!("{k:?}")).collect();
                    format!(
                        "{what} {n:?} is neither {} nor a full setting",
                        known.join(", ")
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_settings_override_only_what_they_name() {
        let mut l = LinkConfig::slow();
        l.apply_toml("max_pieces = 1\nwindow = 4096\nconnect_timeout_ms = 1500\n")
            .unwrap();
        assert_eq!((l.max_pieces, l.window), (1, 4096));
        assert_eq!(l.connect_timeout, Duration::from_millis(1500));
        // The rest is still the slow preset.
        assert_eq!(l.regions, Some(Regions::world()));
        assert_eq!(l.jitter_ms, LinkConfig::slow().jitter_ms);

        l.apply_toml(
            "bandwidth = \"unlimited\"\nregions = \"none\"\nlatency_ms = { exp = { mean = 30 } }\n",
        )
        .unwrap();
        assert_eq!(l.bandwidth, None);
        assert_eq!(l.regions, None);
        assert_eq!(l.latency_ms, Dist::Exp { mean: 30.0 });

        l.apply_toml(
            "regions = { names = [\"a\", \"b\"], weights = [1, 1], latency_ms = [[1, 9], [9, 1]] }\n",
        )
        .unwrap();
        assert_eq!(l.regions.as_ref().unwrap().latency_ms[0][1], 9.0);
    }

    #[test]
    fn a_tail_heavier_than_any_run_is_cut_not_overflowed() {
        // Most draws of this jitter are astronomically long; each is cut to a day, so
        // arrival times stay representable (an overflow would panic in a debug build).
        let mut l = LinkConfig::default();
        l.apply_toml("jitter_ms = { pareto = { scale = 1, shape = 0.02 } }\n")
            .unwrap();
        let panics = crate::scenario::tests::panics_in_a_short_run(l, crate::Faults::none());
        assert!(panics.is_empty(), "{panics:?}");
    }

    #[test]
    fn bad_toml_settings_are_refused_and_change_nothing() {
        let before = LinkConfig::default();
        for (text, reason) in [
            ("window = 0\n", "window must be positive"),
            ("max_pieces = 0\n", "max_pieces must be 1 to 8"),
            (
                "latency_ms = { const = -1 }\n",
                "latency_ms: parameters must be finite",
            ),
            (
                "jitter_ms = { pareto = { scale = 1, shape = 0 } }\n",
                "tail index",
            ),
            ("bandwidth = { const = 0 }\n", "bandwidth must be positive"),
            (
                "bandwidth = \"fast\"\n",
                "bandwidth \"fast\" is neither \"unlimited\"",
            ),
            ("regions = \"mars\"\n", "neither \"world\", \"none\""),
            (
                "regions = { names = [\"a\"], weights = [1], latency_ms = [[1, 2]] }\n",
                "must be square",
            ),
            ("latency = { const = 1 }\n", "unknown field `latency`"),
            ("jitter_ms = { const = 1e16 }\n", "values must be at most"),
            (
                "regions = { names = [\"a\"], weights = [1], latency_ms = [[1e12]] }\n",
                "from 0 to",
            ),
            ("max_pieces = \"two\"\n", "links:"),
        ] {
            let mut l = before.clone();
            let e = l.apply_toml(text).expect_err(text);
            assert!(e.contains(reason), "{text}: {e}");
            assert_eq!(l, before, "{text}");
        }
    }
}
