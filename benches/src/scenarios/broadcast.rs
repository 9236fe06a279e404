//! `broadcast`: one publisher, P directly connected subscribers.
//!
//! Topology: a star. Every subscriber node dials the publisher node and nothing else;
//! subscribers do not listen, so the publisher learns no address it could hand out and no
//! subscriber-to-subscriber link can form (and with `target_outbound = 0` nobody dials on
//! its own). Every delivery is therefore one hop. A subscriber relays a new message to every
//! peer except the one it came from, and its only peer is the publisher, so relaying sends
//! nothing. The library has no topics: a broadcast goes to every connected peer, which is
//! exactly the anchor's set of subscribers.
//!
//! Readiness: rounds start once the publisher reports `PeerConnected` for all P
//! subscribers (the counterpart of the anchor's subscription announcements). `setup_ms`
//! covers starting the P nodes and the P connections, Noise handshakes included.
//!
//! Each round r: `t0` is read immediately before `NetworkHandle::broadcast(App { .. })`;
//! the payload is `size` bytes whose first 8 are r, so every message is distinct (the
//! message id is a content hash). Each subscriber's application timestamps the message in
//! a `register_message_handler` callback on its loop. `all_received_ms` = max over
//! subscribers − t0. Rounds run strictly one after another, with a `gap` between them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use silver_p2p::node::{Event, GossipMessage};

use super::Report;
use crate::common::{self, millis, round3, KIND_BROADCAST};

/// Options of `broadcast` (the anchor's flags and defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// The broadcast protocol. The library has one: flooding to every connected peer
    /// (unsigned, de-duplicated by a content-hash seen-cache), the counterpart of the
    /// anchor's default floodsub, whose name is accepted as an alias.
    #[arg(long, value_enum, default_value_t = Pubsub::Flood)]
    pub pubsub: Pubsub,
    /// Number of subscriber nodes (P).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Measured rounds.
    #[arg(long, default_value_t = 50)]
    pub rounds: usize,
    /// Unmeasured warm-up rounds.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Idle gap between rounds, in milliseconds.
    #[arg(long = "gap-ms", default_value_t = 10)]
    pub gap_ms: u64,
    /// Longest wait for one round to be fully delivered, in seconds.
    #[arg(long = "round-timeout-s", default_value_t = 10.0)]
    pub round_timeout_s: f64,
}

/// The broadcast protocols the library offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pubsub {
    /// `NetworkHandle::broadcast`: flooding to every connected peer.
    #[value(alias = "floodsub")]
    Flood,
}

/// A delivery reported by a subscriber's application.
struct Delivery {
    subscriber: usize,
    round: u64,
    at: Instant,
}

/// Runs the scenario; stops early (not completed) once `budget` is spent (setup included).
pub async fn run(o: Opts, budget: Duration) -> Report {
    let deadline = Instant::now() + budget;
    let round_timeout = Duration::from_secs_f64(o.round_timeout_s);
    let (rss_start, _) = common::rss_kib();

    // --- publisher -------------------------------------------------------
    let publisher = common::start_node(common::bench_config(o.subscribers), true).await;
    let pub_addr = publisher.dial_addr().expect("publisher listens");
    let mut pub_events = publisher.events();

    // --- subscribers -----------------------------------------------------
    let setup_t0 = Instant::now();
    let (del_tx, mut del_rx) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
    let mut subscribers = Vec::with_capacity(o.subscribers);
    let mut failure = None;
    for i in 0..o.subscribers {
        let sub = common::start_node(common::bench_config(1), false).await;
        let tx = del_tx.clone();
        sub.register_message_handler(move |e| {
            if let Event::Gossip {
                message:
                    GossipMessage::App {
                        kind: KIND_BROADCAST,
                        data,
                    },
                ..
            } = e
            {
                let at = Instant::now();
                if let Some(round) = data.get(..8) {
                    let round = u64::from_be_bytes(round.try_into().expect("8 bytes"));
                    let _ = tx.send(Delivery {
                        subscriber: i,
                        round,
                        at,
                    });
                }
            }
        })
        .expect("subscriber running");
        if let Err(e) = sub.connect_to_peer(pub_addr).await {
            failure = Some(format!("subscriber {i} could not dial: {e}"));
            break;
        }
        subscribers.push(sub);
    }
    // Ready when the publisher has every subscriber as a connected peer.
    let want = o.subscribers;
    // Moves the stream in, so it is dropped (unsubscribed) with the future: the rounds need
    // no publisher events, so none should be cloned for us.
    let ready = async move {
        let mut connected = 0;
        while connected < want {
            match pub_events.next().await {
                Some(Event::PeerConnected { .. }) => connected += 1,
                Some(Event::PeerDisconnected { peer, reason, .. }) => {
                    return Err(format!(
                        "subscriber {peer} disconnected during setup: {reason}"
                    ))
                }
                Some(_) => {}
                None => return Err("publisher stopped".to_string()),
            }
        }
        Ok(())
    };
    if failure.is_none() {
        failure = match tokio::time::timeout_at(deadline.into(), ready).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("setup timed out".into()),
        };
    }
    let setup_ms = millis(setup_t0.elapsed());
    let (rss_ready, _) = common::rss_kib();

    // --- rounds ----------------------------------------------------------
    let mut all_ms = Vec::with_capacity(o.rounds);
    let mut first_ms = Vec::with_capacity(o.rounds);
    let mut per_delivery_ms = Vec::with_capacity(o.rounds * o.subscribers);
    for r in 0..(o.warmup + o.rounds) as u64 {
        if failure.is_some() {
            break;
        }
        if Instant::now() > deadline {
            failure = Some(format!("time budget exhausted after {r} rounds"));
            break;
        }
        let mut data = vec![0x77u8; o.size.max(8)];
        data[..8].copy_from_slice(&r.to_be_bytes());
        let message = GossipMessage::App {
            kind: KIND_BROADCAST,
            data: Bytes::from(data),
        };
        let t0 = Instant::now();
        match publisher.broadcast(message).await {
            Ok(report) if report.queued() == o.subscribers => {}
            Ok(report) => {
                failure = Some(format!(
                    "round {r}: queued for {} of {} subscribers",
                    report.queued(),
                    o.subscribers
                ));
                break;
            }
            Err(e) => {
                failure = Some(format!("broadcast failed in round {r}: {e}"));
                break;
            }
        }

        // Collect one delivery per subscriber for this round.
        let mut seen = HashSet::with_capacity(o.subscribers);
        let mut times = Vec::with_capacity(o.subscribers);
        let round_deadline = tokio::time::Instant::now() + round_timeout;
        while seen.len() < o.subscribers {
            match tokio::time::timeout_at(round_deadline, del_rx.recv()).await {
                Ok(Some(d)) if d.round == r => {
                    if seen.insert(d.subscriber) {
                        times.push(d.at);
                    }
                }
                Ok(Some(_stale)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if seen.len() < o.subscribers {
            failure = Some(format!(
                "round {r}: only {}/{} subscribers received within {round_timeout:?}",
                seen.len(),
                o.subscribers
            ));
            break;
        }
        if r as usize >= o.warmup {
            let lat: Vec<f64> = times
                .iter()
                .map(|t| millis(t.saturating_duration_since(t0)))
                .collect();
            all_ms.push(lat.iter().copied().fold(f64::MIN, f64::max));
            first_ms.push(lat.iter().copied().fold(f64::MAX, f64::min));
            per_delivery_ms.extend(lat);
        }
        tokio::time::sleep(Duration::from_millis(o.gap_ms)).await;
    }
    let relayed: u64 = {
        let mut n = 0;
        for s in &subscribers {
            n += s.stats().await.map_or(0, |st| st.counters.relayed);
        }
        n
    };

    Report {
        scenario: "broadcast",
        params: json!({
            "pubsub": match o.pubsub {
                Pubsub::Flood => "flood",
            },
            "subscribers": o.subscribers,
            "rounds": o.rounds,
            "warmup_rounds": o.warmup,
            "message_bytes": o.size,
            "gap_ms": o.gap_ms,
            "topology": "star: each subscriber node has one connection to the publisher node (subscribers do not listen); every connected peer is a subscriber",
            "pubsub_config": "silver-p2p broadcast: NetworkHandle::broadcast(GossipMessage::App) floods to every connected peer; unsigned; content-hash seen-cache; relay=auto (a subscriber's relay targets exclude the sender, its only peer); receiver application = register_message_handler on Event::Gossip",
        }),
        completed: failure.is_none() && all_ms.len() == o.rounds,
        failure,
        results: json!({
            "all_received_ms": common::summarize(&all_ms),
            "first_received_ms": common::summarize(&first_ms),
            "per_delivery_ms": common::summarize(&per_delivery_ms),
            "setup_ms": round3(setup_ms),
            "rss_kib_after_setup": rss_ready,
            "rss_kib_per_subscriber_swarm": round3(rss_ready.saturating_sub(rss_start) as f64 / o.subscribers.max(1) as f64),
            "subscriber_relays": relayed,
        }),
    }
}
