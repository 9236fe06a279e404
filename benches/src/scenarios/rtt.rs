//! `rtt`: sequential request/response latency over one connection.
//!
//! The library's public request/response path: the client calls
//! `NetworkHandle::request(server, Request::App { .. })` and awaits the answer; the server's
//! application reads `Event::Request` from its `NetworkHandle::events()` stream and answers
//! with `NetworkHandle::respond`. One request in flight: `t0` → `request(..).await` →
//! sample. Request and response are single messages on the one encrypted connection (no
//! per-request stream, unlike libp2p's request-response behaviour), so the closest anchor
//! figure is its `rtt-stream`; its `rtt` is the idiomatic libp2p RPC.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use silver_p2p::node::{Event, Request};

use super::Report;
use crate::common::{self, micros, Pair, KIND_REQUEST};

/// Options of `rtt` (the anchor's flags and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Measured round trips.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Unmeasured warm-up round trips.
    #[arg(long, default_value_t = 500)]
    pub warmup: usize,
    /// Request and response payload size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

/// Runs the scenario; stops early (not completed) once `budget` is spent.
pub async fn run(o: Opts, budget: Duration) -> Report {
    let deadline = Instant::now() + budget;
    let pair = Pair::connect().await.expect("connect the pair");

    // Server application: answer every request with `size` bytes.
    let server = pair.server.clone();
    let mut events = server.events();
    let response = Bytes::from(vec![0x5a; o.size]);
    let server_task = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let Event::Request { id, .. } = e {
                if server.respond(id, Some(response.clone())).await.is_err() {
                    return;
                }
            }
        }
    });

    let request = Bytes::from(vec![0xa5; o.size]);
    let mut samples_us = Vec::with_capacity(o.n);
    let mut failure = None;
    let mut measured_start = None;
    for i in 0..(o.warmup + o.n) {
        if Instant::now() > deadline {
            failure = Some(format!("time budget exhausted after {i} round trips"));
            break;
        }
        if i == o.warmup {
            measured_start = Some(Instant::now());
        }
        let t0 = Instant::now();
        let answer = pair
            .client
            .request(
                pair.server_peer,
                Request::App {
                    kind: KIND_REQUEST,
                    data: request.clone(),
                },
            )
            .await;
        let dt = t0.elapsed();
        match answer {
            Ok(a) if a.len() == o.size => {}
            Ok(a) => {
                failure = Some(format!(
                    "response of {} bytes, expected {}",
                    a.len(),
                    o.size
                ));
                break;
            }
            Err(e) => {
                failure = Some(format!("request {i} failed: {e}"));
                break;
            }
        }
        if i >= o.warmup {
            samples_us.push(micros(dt));
        }
    }
    let measured_secs = measured_start.map_or(0.0, |t| t.elapsed().as_secs_f64());
    server_task.abort();

    Report {
        scenario: "rtt",
        params: json!({
            "n": o.n,
            "warmup": o.warmup,
            "request_bytes": o.size,
            "response_bytes": o.size,
            "mechanism": "NetworkHandle::request(Request::App) -> Event::Request on the server's NetworkHandle::events() stream -> NetworkHandle::respond(Some(data)) -> request() resolves; one connection, 1 request in flight, no per-request stream (compare with the anchor's rtt-stream; its rtt opens a yamux substream per request)",
        }),
        completed: failure.is_none() && samples_us.len() == o.n,
        failure,
        results: json!({
            "rtt_us": common::summarize(&samples_us),
            "round_trips_per_sec": common::round3(samples_us.len() as f64 / measured_secs),
        }),
    }
}
