//! `conn-mem`: resident memory per idle connection.
//!
//! The anchor opens C connections between ONE pair of libp2p swarms. Here that is
//! impossible by design: the node keeps one connection per identity and closes duplicates
//! (`Node::on_established`, "two connections to one identity"). So the C connections come
//! from C distinct dialer nodes (each its own identity, none listening) to one listener
//! node, all in this process, and the per-node cost is taken out of the figure:
//!
//! 1. warm-up: one dialer node connects, then stops (so lazily initialised global state is
//!    excluded); settle; RSS sample `rss_kib_baseline`.
//! 2. start the C dialer nodes, unconnected; settle; RSS sample `rss_kib_before`.
//! 3. connect them, `batch` dials at a time, until the listener reports all C; settle; RSS
//!    sample `rss_kib_after`.
//!
//! `kib_per_connection_both_ends = (after − before) / C` is what one established connection
//! costs at both of its ends (the listener's inbound endpoint and the dialer's outbound
//! endpoint), comparable with the anchor's figure of the same name; `kib_per_endpoint` is
//! half of it. `kib_per_idle_dialer_node = (before − baseline) / C` is the separate cost of
//! an unconnected node, which libp2p's measurement has no counterpart of. Kernel socket
//! buffers are not part of RSS.

use std::time::{Duration, Instant};

use serde_json::json;

use super::Report;
use crate::common::{self, expect_link, millis, round3};

/// Options of `conn-mem` (the anchor's flags and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Number of idle connections to establish (C).
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// Dials in flight at once.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Quiet period before each RSS sample, in milliseconds.
    #[arg(long = "settle-ms", default_value_t = 1000)]
    pub settle_ms: u64,
}

/// Runs the scenario; stops early (not completed) once `budget` is spent.
pub async fn run(o: Opts, budget: Duration) -> Report {
    let deadline = Instant::now() + budget;
    let settle = Duration::from_millis(o.settle_ms);
    let listener = common::start_node(common::bench_config(o.conns + 1), true).await;
    let addr = listener.dial_addr().expect("listener listens");
    let mut links = common::link_events(&listener);
    let mut failure = None;

    // 1. Warm-up connection: open, then close by stopping its dialer node.
    let warm = common::start_node(common::bench_config(1), false).await;
    let warm_up = async {
        warm.connect_to_peer(addr)
            .await
            .map_err(|e| e.to_string())?;
        expect_link(&mut links, true).await?;
        warm.stop(Duration::from_secs(1))
            .await
            .map_err(|e| e.to_string())?;
        expect_link(&mut links, false).await
    };
    if let Err(e) = warm_up.await {
        failure = Some(format!("warm-up: {e}"));
    }
    drop(warm);
    tokio::time::sleep(settle).await;
    let (rss_baseline, _) = common::rss_kib();

    // 2. The dialer nodes, not yet connected.
    let mut dialers = Vec::with_capacity(o.conns);
    for _ in 0..o.conns {
        dialers.push(common::start_node(common::bench_config(1), false).await);
    }
    tokio::time::sleep(settle).await;
    let (rss_before, hwm_before) = common::rss_kib();

    // 3. Connect them, `batch` at a time; a batch is done when the listener has them all.
    let t0 = Instant::now();
    let mut established = 0usize;
    for batch in dialers.chunks(o.batch.max(1)) {
        if failure.is_some() {
            break;
        }
        if Instant::now() > deadline {
            failure = Some(format!(
                "time budget exhausted after {established} connections"
            ));
            break;
        }
        let connect_batch = async {
            for d in batch {
                d.connect_to_peer(addr).await.map_err(|e| e.to_string())?;
            }
            for _ in batch {
                expect_link(&mut links, true).await?;
            }
            Ok::<_, String>(())
        };
        match connect_batch.await {
            Ok(()) => established += batch.len(),
            Err(e) => failure = Some(format!("after {established} connections: {e}")),
        }
    }
    let establish_ms = millis(t0.elapsed());
    tokio::time::sleep(settle).await;
    let (rss_after, hwm_after) = common::rss_kib();

    let per_conn = rss_after.saturating_sub(rss_before) as f64 / established.max(1) as f64;
    let per_node = rss_before.saturating_sub(rss_baseline) as f64 / o.conns.max(1) as f64;
    Report {
        scenario: "conn-mem",
        params: json!({
            "connections": o.conns,
            "dial_batch": o.batch,
            "settle_ms": o.settle_ms,
            "what": "RSS delta after establishing C idle TCP+Noise connections from C distinct, already running dialer nodes (one connection per identity is a library rule) to one listener node, all in-process; both ends counted; the dialer nodes' own cost before connecting is measured separately (kib_per_idle_dialer_node)",
        }),
        completed: failure.is_none() && established == o.conns,
        failure,
        results: json!({
            "connections_established": established,
            "rss_kib_baseline": rss_baseline,
            "rss_kib_before": rss_before,
            "rss_kib_after": rss_after,
            "peak_rss_kib_before": hwm_before,
            "peak_rss_kib_after": hwm_after,
            "kib_per_connection_both_ends": round3(per_conn),
            "kib_per_endpoint": round3(per_conn / 2.0),
            "kib_per_idle_dialer_node": round3(per_node),
            "establish_all_ms": round3(establish_ms),
            "connections_per_sec": round3(established as f64 / (establish_ms / 1e3)),
        }),
    }
}
