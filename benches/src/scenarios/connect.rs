//! `connect`: connection establishment latency.
//!
//! One listener node and one dialer node. Each iteration:
//!   1. `t0 = now`; `dialer.connect_to_peer(listener_addr)`.
//!   2. The dialer's `Event::PeerConnected`, timestamped on the dialer's loop, minus `t0` is
//!      the `connect_us` sample. It covers the command hop to the node loop, the TCP
//!      connect, and the 3-message Noise XX handshake up to the point where the dialer has
//!      produced Noise message 3 (carrying its Hello) and holds the listener's Hello from
//!      message 2: the session is usable for sending. This is the anchor's dialer-side point.
//!   3. The listener's own `PeerConnected` minus `t0` is `listener_established_us`
//!      (supplementary; it needs message 3 to arrive, about half an RTT later).
//!   4. The connection is torn down and both sides' `PeerDisconnected` awaited, so every
//!      dial uses a fresh TCP connection and starts from a quiet state.
//!
//! The handle has no `disconnect` (the core's `Node::disconnect` is not exposed by the
//! driver), so step 4 bans the listener on the dialer, which closes the connection with a
//! Goodbye, and lifts the ban once both sides saw the close.

use std::time::{Duration, Instant};

use serde_json::json;

use super::Report;
use crate::common::{self, expect_link, micros};

/// Options of `connect` (the anchor's flags and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Measured iterations.
    #[arg(long, default_value_t = 200)]
    pub n: usize,
    /// Unmeasured warm-up iterations.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
}

/// Runs the scenario; stops early (not completed) once `budget` is spent.
pub async fn run(o: Opts, budget: Duration) -> Report {
    let deadline = Instant::now() + budget;
    let listener = common::start_node(common::bench_config(1), true).await;
    let mut listener_links = common::link_events(&listener);
    let dialer = common::start_node(common::bench_config(1), false).await;
    let mut dialer_links = common::link_events(&dialer);
    let addr = listener.dial_addr().expect("listener listens");
    let listener_peer = listener.peer_id();

    let mut dialer_us = Vec::with_capacity(o.n);
    let mut listener_us = Vec::with_capacity(o.n);
    let mut failure = None;
    for i in 0..(o.warmup + o.n) {
        if Instant::now() > deadline {
            failure = Some(format!("time budget exhausted after {i} iterations"));
            break;
        }
        let iteration = async {
            let t0 = Instant::now();
            dialer
                .connect_to_peer(addr)
                .await
                .map_err(|e| format!("dial: {e}"))?;
            let dialer_at = expect_link(&mut dialer_links, true).await?;
            let listener_at = expect_link(&mut listener_links, true).await?;
            dialer
                .ban(listener_peer, Duration::from_secs(3600))
                .map_err(|e| e.to_string())?;
            expect_link(&mut dialer_links, false).await?;
            expect_link(&mut listener_links, false).await?;
            dialer.unban(listener_peer).map_err(|e| e.to_string())?;
            Ok::<_, String>((dialer_at - t0, listener_at.saturating_duration_since(t0)))
        };
        match iteration.await {
            Ok((d, l)) if i >= o.warmup => {
                dialer_us.push(micros(d));
                listener_us.push(micros(l));
            }
            Ok(_) => {}
            Err(e) => {
                failure = Some(format!("iteration {i}: {e}"));
                break;
            }
        }
    }

    Report {
        scenario: "connect",
        params: json!({
            "n": o.n,
            "warmup": o.warmup,
            "what": "NetworkHandle::connect_to_peer() -> Event::PeerConnected on the dialer (connect_us: Noise message 3 produced, listener's Hello held), timestamped in a register_message_handler callback on the dialer's loop; fresh TCP connection each time, closed on both sides (PeerDisconnected) before the next dial; teardown by ban + unban since the handle has no disconnect",
        }),
        completed: failure.is_none() && dialer_us.len() == o.n,
        failure,
        results: json!({
            "connect_us": common::summarize(&dialer_us),
            "listener_established_us": common::summarize(&listener_us),
        }),
    }
}
