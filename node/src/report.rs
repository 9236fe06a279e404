//! Formatting for people: byte counts, rates, percentiles, the periodic traffic line of
//! `run` and its shutdown report.

use std::time::Duration;

use silver_p2p_core::node::{Direction, NetworkStats, ShutdownReport};

/// `n` bytes in the largest binary unit that keeps the number at least 1 (`1.5 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration in milliseconds with three decimals, as JSON and summaries show latencies.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Latency percentiles of a sample set, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (milliseconds); all zero when empty.
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Percentiles::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let r = (p / 100.0 * s.len() as f64).ceil() as usize;
            s[r.clamp(1, s.len()) - 1]
        };
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Percentiles {
            count: s.len(),
            p50: round(rank(50.0)),
            p90: round(rank(90.0)),
            p99: round(rank(99.0)),
            max: round(s[s.len() - 1]),
            mean: round(s.iter().sum::<f64>() / s.len() as f64),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return f.write_str("no samples");
        }
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            self.p50, self.p90, self.p99, self.max, self.count
        )
    }
}

/// Established peers by direction: (inbound, outbound).
pub fn directions(stats: &NetworkStats) -> (usize, usize) {
    let out = stats
        .per_peer
        .iter()
        .filter(|p| p.direction == Direction::Outbound)
        .count();
    (stats.per_peer.len() - out, out)
}

/// The periodic line of `run`: peers by direction and traffic, with rates since `prev`
/// (taken `elapsed` earlier).
pub fn traffic_line(
    stats: &NetworkStats,
    prev: Option<&NetworkStats>,
    elapsed: Duration,
) -> String {
    let (inb, out) = directions(stats);
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = |now: u64, before: Option<u64>| match before {
        Some(b) => format!(
            ", {}/s",
            bytes(((now.saturating_sub(b)) as f64 / secs) as u64)
        ),
        None => String::new(),
    };
    format!(
        "peers {} (in {inb}, out {out}, handshaking {}) | sent {} in {} msgs{} | received {} in {} msgs{} | addresses {} | bans {}",
        stats.peers,
        stats.handshaking,
        bytes(stats.bytes_sent),
        stats.messages_sent,
        rate(stats.bytes_sent, prev.map(|p| p.bytes_sent)),
        bytes(stats.bytes_received),
        stats.messages_received,
        rate(stats.bytes_received, prev.map(|p| p.bytes_received)),
        stats.address_book.known,
        stats.active_bans,
    )
}

/// The shutdown report as one line.
pub fn shutdown_line(r: &ShutdownReport) -> String {
    format!(
        "{} peers closed, {} queued messages flushed, {} dropped, {} unicasts failed, {} requests failed",
        r.peers_closed, r.messages_flushed, r.messages_dropped, r.unicasts_failed, r.requests_failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&s);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(p.mean, 50.5);
        assert_eq!(Percentiles::of(&[]).count, 0);
        assert_eq!(Percentiles::of(&[3.0]).p99, 3.0);
    }

    #[test]
    fn byte_counts_are_readable() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
