//! One-directional application traffic over one connection, the anchor's raw-stream
//! scenarios:
//!
//! * `throughput`: bulk transfer as fixed-size application messages.
//! * `msgrate`: small messages as fast as the public API takes them.
//!
//! The library has no byte streams: application data travels as messages. The public
//! point-to-point message path is `NetworkHandle::unicast(peer, kind, data)`, which resolves
//! once the receiver's node has handed the message to its application and acknowledged it.
//! The sender keeps up to `--window` unicasts outstanding (see [`Pipeline`]); that window is
//! the API's back-pressure, playing the part of the anchor's `write_all`, which waits when
//! yamux's send window is full. Each call carries one message: the caller never coalesces
//! messages (except in `msgrate --writer buffered`, the anchor's BufWriter variant).
//!
//! Both are measured at the RECEIVER, between the first and the last message its
//! application gets (a `register_message_handler` callback on the receiver's loop), so
//! connection setup and the sender's head start are excluded.

use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use silver_p2p::node::Event;
use silver_p2p::tokio::{HandleError, NetworkHandle};
use silver_p2p::{AppKind, PeerId};
use tokio::sync::mpsc;

use super::Report;
use crate::common::{self, round3, Pair, KIND_DATA, KIND_END};

/// Keeps up to `window` unicasts to one peer outstanding: `send` hands one message to the
/// node and returns as soon as fewer than `window` are unacknowledged.
struct Pipeline {
    handle: NetworkHandle,
    peer: PeerId,
    window: usize,
    in_flight: FuturesUnordered<BoxFuture<'static, Result<(), HandleError>>>,
}

impl Pipeline {
    fn new(handle: NetworkHandle, peer: PeerId, window: usize) -> Self {
        Pipeline {
            handle,
            peer,
            window: window.max(1),
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Sends one message; waits while the window is full.
    async fn send(&mut self, kind: AppKind, data: Bytes) -> Result<(), HandleError> {
        let (h, peer) = (self.handle.clone(), self.peer);
        self.in_flight
            .push(Box::pin(async move { h.unicast(peer, kind, data).await }));
        // A pushed future does nothing until polled, and the command only reaches the node
        // on that first poll: poll now so the message leaves at once rather than when the
        // window next fills.
        if let Poll::Ready(Some(r)) = futures::poll!(self.in_flight.next()) {
            r?;
        }
        while self.in_flight.len() >= self.window {
            if let Some(r) = self.in_flight.next().await {
                r?;
            }
        }
        Ok(())
    }

    /// Waits until every message sent is acknowledged.
    async fn finish(&mut self) -> Result<(), HandleError> {
        while let Some(r) = self.in_flight.next().await {
            r?;
        }
        Ok(())
    }
}

/// What the receiver's application observed.
#[derive(Debug, Default, Clone)]
struct Received {
    messages: u64,
    bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    in_order: bool,
}

impl Received {
    fn new() -> Self {
        Received {
            in_order: true,
            ..Default::default()
        }
    }

    /// Accounts one message at `now`; `seq` is its sequence number, if it carries one.
    fn note(&mut self, now: Instant, len: usize, seq: Option<u64>) {
        self.stamp(now);
        self.count(len, seq);
    }

    /// Moves the window's end to `now` (and opens it, the first time).
    fn stamp(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Accounts one message without reading the clock.
    fn count(&mut self, len: usize, seq: Option<u64>) {
        if let Some(s) = seq {
            self.in_order &= s == self.messages;
        }
        self.messages += 1;
        self.bytes += len as u64;
    }

    /// Seconds between the first and the last message.
    fn window_secs(&self) -> f64 {
        match (self.first, self.last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64(),
            _ => f64::NAN,
        }
    }
}

/// The AEAD the sender's connection to the receiver used, from its statistics.
fn used_suite(stats: Option<&silver_p2p::node::NetworkStats>) -> Option<&'static str> {
    stats?
        .per_peer
        .first()?
        .stats
        .transport_suite
        .map(|s| s.name())
}

/// The sequence number in the first 8 bytes of a payload.
fn seq_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// A payload of `size` bytes (at least 8) filled with `fill`.
fn payload(size: usize, fill: u8) -> Vec<u8> {
    vec![fill; size.max(8)]
}

/// The default send window for `message_bytes`-byte unicasts: as many as the public API
/// accepts outstanding (`unicast.max_pending`), but no more than fill a quarter of the
/// connection's send queue (`connection.max_queued_bytes`). Past the queue's bound the
/// node still accepts a unicast but cannot queue it, and it then waits for the 2 s
/// ack-timeout retry, which would measure that timer instead of the stack.
fn default_window(message_bytes: usize) -> usize {
    let c = common::bench_config(1);
    let by_queue = c.connection.max_queued_bytes / 4 / message_bytes.max(1);
    c.unicast.max_pending.min(by_queue).max(1)
}

// ---------------------------------------------------------------------------
// throughput
// ---------------------------------------------------------------------------

/// Options of `throughput` (the anchor's flags and defaults, plus `--window`).
#[derive(Debug, Clone, clap::Args)]
pub struct ThroughputOpts {
    /// Bytes per transfer.
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    /// Size of each application message.
    #[arg(long = "write-size", default_value_t = 64 * 1024)]
    pub write_size: usize,
    /// Accepted for command-line compatibility with the anchor; unused, since messages
    /// arrive whole (there is no read buffer to size).
    #[arg(long = "read-size", default_value_t = 64 * 1024)]
    pub read_size: usize,
    /// Number of transfers over the same connection.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Unacknowledged unicasts the sender keeps outstanding with `--acknowledged` [default:
    /// see `default_window`; 64 for 64 KiB messages].
    #[arg(long)]
    pub window: Option<usize>,
    /// Send acknowledged unicasts instead of direct messages (`NetworkHandle::send`, the
    /// counterpart of the anchor's raw stream writes).
    #[arg(long)]
    pub acknowledged: bool,
}

/// Runs `throughput`; stops early (not completed) once `budget` is spent.
pub async fn run_throughput(o: ThroughputOpts, budget: Duration) -> Report {
    let deadline = Instant::now() + budget;
    let pair = Pair::connect().await.expect("connect the pair");

    // Receiver application: one report per transfer of `bytes` bytes.
    let (report_tx, mut reports) = mpsc::unbounded_channel::<Received>();
    let per_transfer = o.bytes;
    let mut current = Received::new();
    pair.server
        .register_message_handler(move |e| {
            if let Event::Unicast {
                kind: KIND_DATA,
                data,
                ..
            }
            | Event::Direct {
                kind: KIND_DATA,
                data,
                ..
            } = e
            {
                current.note(Instant::now(), data.len(), None);
                if current.bytes >= per_transfer {
                    let _ = report_tx.send(std::mem::replace(&mut current, Received::new()));
                }
            }
        })
        .expect("server running");

    let chunk = Bytes::from(payload(o.write_size, 0xab));
    let window = o.window.unwrap_or_else(|| default_window(chunk.len()));
    let mut pipe = Pipeline::new(pair.client.clone(), pair.server_peer, window);
    let (mut rx_mbps, mut tx_mbps) = (Vec::new(), Vec::new());
    let mut failure = None;
    for r in 0..o.repeats {
        if Instant::now() > deadline {
            failure = Some(format!("time budget exhausted after {r} transfers"));
            break;
        }
        let transfer = async {
            let t0 = Instant::now();
            let mut sent = 0u64;
            while sent < o.bytes {
                let n = (o.bytes - sent).min(chunk.len() as u64) as usize;
                if o.acknowledged {
                    pipe.send(KIND_DATA, chunk.slice(..n)).await?;
                } else {
                    pair.client
                        .send(pair.server_peer, KIND_DATA, chunk.slice(..n))
                        .await?;
                }
                sent += n as u64;
            }
            pipe.finish().await?;
            Ok::<_, HandleError>((sent, t0.elapsed()))
        };
        let (sent, tx_time) = match transfer.await {
            Ok(v) => v,
            Err(e) => {
                failure = Some(format!("transfer {r}: {e}"));
                break;
            }
        };
        let got = match tokio::time::timeout(common::EVENT_WAIT, reports.recv()).await {
            Ok(Some(got)) => got,
            _ => {
                failure = Some(format!("transfer {r}: no receiver report"));
                break;
            }
        };
        if got.bytes != sent {
            failure = Some(format!(
                "transfer {r}: receiver got {} of {sent} bytes",
                got.bytes
            ));
            break;
        }
        rx_mbps.push(got.bytes as f64 / 1e6 / got.window_secs());
        tx_mbps.push(sent as f64 / 1e6 / tx_time.as_secs_f64());
    }
    let stats = pair.client.stats().await.ok();

    Report {
        scenario: "throughput",
        params: json!({
            "bytes_per_transfer": o.bytes,
            "write_size": o.write_size,
            "read_size": null,
            "repeats": o.repeats,
            "window": window,
            "acknowledged": o.acknowledged,
            "mechanism": "one write_size-byte message per call over one connection: NetworkHandle::send (direct message, no acknowledgement; waits only while the peer's send queue is full), or with --acknowledged NetworkHandle::unicast (acknowledged delivery) with up to `window` unacknowledged; messages above the 16,256-byte chunk size travel as chunks; receiver application = register_message_handler on Event::Direct / Event::Unicast; read_size does not apply (messages arrive whole)",
            "unit": "MB/s with MB = 10^6 bytes, receiver: payload bytes / (last message - first message)",
        }),
        completed: failure.is_none() && rx_mbps.len() == o.repeats,
        failure,
        results: json!({
            "rx_mb_per_s_median": round3(common::median(&rx_mbps)),
            "rx_mb_per_s_each": rx_mbps.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
            "rx_gbit_per_s_median": round3(common::median(&rx_mbps) * 8.0 / 1000.0),
            "tx_mb_per_s_median": round3(common::median(&tx_mbps)),
            "tx_note": "sender: first call until the last one returned (with --acknowledged: until it is acknowledged)",
            "sender_unicast_retries": stats.as_ref().map(|s| s.counters.unicast_retries),
            "sender_unicasts_failed": stats.as_ref().map(|s| s.counters.unicasts_failed),
            "transport_suite": used_suite(stats.as_ref()),
        }),
    }
}

// ---------------------------------------------------------------------------
// msgrate
// ---------------------------------------------------------------------------

/// How the sender hands messages to the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriterMode {
    /// One `NetworkHandle::send` (direct message, no acknowledgement) per message, no
    /// caller-side batching: the headline figure, the counterpart of one raw stream write
    /// per message.
    Direct,
    /// One acknowledged `NetworkHandle::unicast` per message, up to `--window` outstanding.
    Unicast,
    /// Messages are packed into ~64 KiB unicasts by the caller, like the anchor's 64 KiB
    /// BufWriter: the ceiling when the application batches.
    Buffered,
}

impl WriterMode {
    fn name(self) -> &'static str {
        match self {
            WriterMode::Direct => "direct",
            WriterMode::Unicast => "unicast",
            WriterMode::Buffered => "buffered",
        }
    }
}

/// Options of `msgrate` (the anchor's flags and defaults, plus `--window`).
#[derive(Debug, Clone, clap::Args)]
pub struct MsgRateOpts {
    /// Payload bytes per message (the frame adds a 4-byte length prefix).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// How long the sender keeps sending, in seconds.
    #[arg(long = "duration-s", default_value_t = 5.0)]
    pub duration_s: f64,
    /// direct: one direct message (`send`) per message; unicast: one acknowledged unicast
    /// per message; buffered: ~64 KiB of messages per unicast.
    #[arg(long, value_enum, default_value_t = WriterMode::Direct)]
    pub writer: WriterMode,
    /// Unacknowledged unicasts the sender keeps outstanding [default: see `default_window`;
    /// 16,131 for 256-byte messages].
    #[arg(long)]
    pub window: Option<usize>,
}

/// Bytes a buffered writer collects before it sends them as one unicast.
const BUFFERED_BYTES: usize = 64 * 1024;

/// Runs `msgrate`. It is bounded by `--duration-s`, not by the budget (like the anchor's).
pub async fn run_msgrate(o: MsgRateOpts, _budget: Duration) -> Report {
    let pair = Pair::connect().await.expect("connect the pair");

    // Receiver application: each unicast holds one or more `u32 BE length || payload`
    // frames, payload[0..8] a sequence number checked for loss and reordering. The end
    // marker carries the number of messages sent.
    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<Received>();
    let mut seen = Received::new();
    pair.server
        .register_message_handler(move |e| match e {
            Event::Unicast {
                kind: KIND_DATA,
                data,
                ..
            }
            | Event::Direct {
                kind: KIND_DATA,
                data,
                ..
            } => {
                // The clock is read at the first message and at the end marker, which
                // arrives right behind the last one: at three million messages a second a
                // clock read per message would cost the receiver several per cent.
                if seen.first.is_none() {
                    seen.stamp(Instant::now());
                }
                let mut rest = &data[..];
                while rest.len() >= 4 {
                    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    let Some(frame) = rest.get(4..4 + len) else {
                        seen.in_order = false; // truncated frame
                        break;
                    };
                    seen.count(len, seq_of(frame));
                    rest = &rest[4 + len..];
                }
            }
            Event::Unicast { kind: KIND_END, .. } | Event::Direct { kind: KIND_END, .. } => {
                seen.stamp(Instant::now());
                let _ = report_tx.send(seen.clone());
            }
            _ => {}
        })
        .expect("server running");

    let duration = Duration::from_secs_f64(o.duration_s);
    let unicast_bytes = match o.writer {
        WriterMode::Direct | WriterMode::Unicast => 4 + o.size.max(8),
        WriterMode::Buffered => BUFFERED_BYTES,
    };
    let window = o.window.unwrap_or_else(|| default_window(unicast_bytes));
    let mut pipe = Pipeline::new(pair.client.clone(), pair.server_peer, window);
    let sending = async {
        // One pre-built frame; only the sequence number in payload[0..8] changes.
        let mut frame = Vec::with_capacity(4 + o.size.max(8));
        frame.extend_from_slice(&(o.size.max(8) as u32).to_be_bytes());
        frame.extend_from_slice(&payload(o.size, 0x42));
        let mut batch = BytesMut::with_capacity(BUFFERED_BYTES + frame.len());
        let t0 = Instant::now();
        let mut seq = 0u64;
        loop {
            // Check the clock once per 256 messages to keep it off the hot path.
            for _ in 0..256 {
                frame[4..12].copy_from_slice(&seq.to_be_bytes());
                seq += 1;
                match o.writer {
                    WriterMode::Direct => {
                        pair.client
                            .send_slice(pair.server_peer, KIND_DATA, &frame)
                            .await?
                    }
                    WriterMode::Unicast => {
                        pipe.send(KIND_DATA, Bytes::copy_from_slice(&frame)).await?
                    }
                    WriterMode::Buffered => {
                        batch.put_slice(&frame);
                        if batch.len() >= BUFFERED_BYTES {
                            pipe.send(KIND_DATA, batch.split().freeze()).await?;
                        }
                    }
                }
            }
            if t0.elapsed() >= duration {
                break;
            }
        }
        if !batch.is_empty() {
            // The library keeps order only within a size class: full batches exceed the
            // chunk size and travel as chunks, and a short last batch would travel as one
            // data message and overtake them. Let the full ones land first, as an
            // application that needs order must.
            pipe.finish().await?;
            pipe.send(KIND_DATA, batch.split().freeze()).await?;
        }
        pipe.finish().await?;
        let end = Bytes::from(seq.to_be_bytes().to_vec());
        if o.writer == WriterMode::Direct {
            // Direct messages of one size class keep their order: the marker lands last.
            pair.client.send(pair.server_peer, KIND_END, end).await?;
        } else {
            pipe.send(KIND_END, end).await?;
            pipe.finish().await?;
        }
        Ok::<_, HandleError>(seq)
    };
    let (sent, failure) = match sending.await {
        Ok(n) => (n, None),
        Err(e) => (0, Some(format!("send failed: {e}"))),
    };
    let r = match failure {
        None => tokio::time::timeout(common::EVENT_WAIT, report_rx.recv())
            .await
            .ok()
            .flatten(),
        Some(_) => None,
    };
    let failure = failure.or_else(|| r.is_none().then(|| "no receiver report".to_string()));
    let r = r.unwrap_or_else(Received::new);
    let secs = r.window_secs();
    // Messages after the first one, over the time between first and last.
    let rate = r.messages.saturating_sub(1) as f64 / secs;
    let stats = pair.client.stats().await.ok();

    Report {
        scenario: "msgrate",
        params: json!({
            "payload_bytes": o.size.max(8),
            "frame_bytes": o.size.max(8) + 4,
            "send_duration_s": o.duration_s,
            "writer": o.writer.name(),
            "window": window,
            "mechanism": "4-byte BE length prefix + payload per message; writer=direct: one NetworkHandle::send_slice of the reused frame buffer (direct message, no acknowledgement; waits only while the peer's send queue is full) per message; writer=unicast: one NetworkHandle::unicast (acknowledged delivery) per message, up to `window` unacknowledged; writer=buffered: messages packed by the caller into ~64 KiB unicasts; the library coalesces queued messages into shared Noise frames by itself; receiver application = register_message_handler on Event::Direct / Event::Unicast, reading the clock at the first message and at the end marker sent right after the last (the window between them)",
        }),
        completed: failure.is_none() && r.messages == sent && r.in_order,
        failure,
        results: json!({
            "msgs_per_sec": round3(rate),
            "payload_mb_per_s": round3(rate * o.size.max(8) as f64 / 1e6),
            "messages_sent": sent,
            "messages_received": r.messages,
            "receive_window_s": round3(secs),
            "in_order": r.in_order,
            "sender_unicast_retries": stats.as_ref().map(|s| s.counters.unicast_retries),
            "sender_unicasts_failed": stats.as_ref().map(|s| s.counters.unicasts_failed),
            "sender_sends_dropped": stats.as_ref().map(|s| s.sends_dropped),
            "transport_suite": used_suite(stats.as_ref()),
            "sender_messages_per_frame": stats.as_ref().and_then(|s| {
                let c = &s.per_peer.first()?.stats;
                Some(round3(c.messages_sent as f64 / c.frames_sent.max(1) as f64))
            }),
        }),
    }
}
