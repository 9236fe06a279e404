//! Shared building blocks of the scenario runner: the node configuration and start-up (the
//! stack under test), timestamped event probes, statistics, process memory, host CPU
//! accounting and the run metadata printed with every result line.
//!
//! It mirrors `src/common.rs` of the rust-libp2p anchor harness
//! (`/work/shared/anchors/libp2p-bench`), so percentiles, rounding, RSS and CPU figures are
//! computed the same way on both sides of a comparison.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use silver_p2p::node::{CipherPreference, Event, NodeConfig};
use silver_p2p::tokio::{EventStream, NetworkHandle, NetworkManager};
use silver_p2p::{AppKind, PeerId};
use tokio::sync::mpsc;

/// Loopback listen address; port 0 lets the kernel choose a free port.
pub const LISTEN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Application kind of the `rtt` requests.
pub const KIND_REQUEST: AppKind = 1;
/// Application kind of the data messages of `throughput` and `msgrate`.
pub const KIND_DATA: AppKind = 2;
/// Application kind of the end-of-transfer marker of `msgrate`.
pub const KIND_END: AppKind = 3;
/// Application kind of the `broadcast` messages.
pub const KIND_BROADCAST: AppKind = 4;

/// The `--cipher` every benchmark node is configured with (default: the library's,
/// `auto`). Set once, by `main`, before any node starts.
static CIPHER: std::sync::OnceLock<CipherPreference> = std::sync::OnceLock::new();

/// Sets the cipher preference of every node this process starts; call before the first.
pub fn set_cipher(cipher: CipherPreference) {
    let _ = CIPHER.set(cipher);
}

/// The cipher preference of every benchmark node.
pub fn cipher() -> CipherPreference {
    CIPHER.get().copied().unwrap_or_default()
}

/// The transport AEAD two benchmark nodes agree on on this machine (the scenarios that
/// depend on it also report what their connection used, from its statistics).
pub fn transport_suite() -> &'static str {
    cipher()
        .resolve(silver_p2p::driver::has_aes_instructions())
        .name()
}

/// How long a scenario waits for one expected event before it gives up with a failure
/// (instead of hanging until the hard timeout, which would lose every figure).
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

/// A rate no loopback benchmark reaches: rate limits set to this never pause reading. The
/// anchor has no inbound rate limits, and the defaults (e.g. 1,000 requests/s per peer,
/// 64 MiB/s per peer) would cap the very figures being measured.
const UNLIMITED: u64 = 1 << 40;

// ---------------------------------------------------------------------------
// The stack under test
// ---------------------------------------------------------------------------

/// The configuration of every benchmark node: the library defaults, except what would make
/// the benchmark measure a policy instead of the stack.
///
/// * Connection limits (total, inbound, per IP, pending handshakes) admit `peers` peers:
///   every benchmark peer comes from 127.0.0.1, and the default per-IP limit is 4.
/// * `target_outbound = 0`: the coordinator never dials by itself, so the only
///   connections are the ones a scenario opens (and a disconnected peer is not redialed
///   from the address book behind the scenario's back).
/// * Every inbound rate limit is lifted (see [`UNLIMITED`]).
///
/// * `cipher` is the `--cipher` flag, by default the library's default (`auto`).
///
/// Everything else (queues, chunking, keepalive, timeouts, gossip) keeps its default.
pub fn bench_config(peers: usize) -> NodeConfig {
    let mut c = NodeConfig {
        network_id: "silver-bench".into(),
        cipher: cipher(),
        ..NodeConfig::default()
    };
    let l = &mut c.limits;
    l.target_outbound = 0;
    l.max_inbound = l.max_inbound.max(peers + 8);
    l.max_inbound_per_ip = l.max_inbound_per_ip.max(peers + 8);
    l.max_pending_handshakes = l.max_pending_handshakes.max(peers + 8);
    l.max_connections = l.max_connections.max(l.max_inbound + l.max_outbound);
    let r = &mut c.rate_limit;
    r.messages_per_sec = UNLIMITED;
    r.message_burst = UNLIMITED;
    r.bytes_per_sec = UNLIMITED;
    r.byte_burst = UNLIMITED;
    r.global_bytes_per_sec = UNLIMITED;
    r.global_byte_burst = UNLIMITED;
    r.per_class.gossip = UNLIMITED;
    r.per_class.requests = UNLIMITED;
    r.per_class.unicast = UNLIMITED;
    r.per_class.discovery = UNLIMITED;
    c
}

/// Starts a node on the current tokio runtime with `config`, listening on a fresh loopback
/// port if `listen`, with a fresh identity and nothing on disk.
pub async fn start_node(config: NodeConfig, listen: bool) -> NetworkHandle {
    let listen = if listen {
        vec![LISTEN_ADDR]
    } else {
        Vec::new()
    };
    let handle = NetworkManager::new(config, listen)
        .start()
        .await
        .expect("start node");
    // Until its first event subscriber appears, the driver keeps a clone of up to 1,024
    // events for it. Nodes observed only through `register_message_handler` would keep
    // those clones (and the frame buffers their payloads share) for their whole life, which
    // distorts the memory figures: subscribe once and drop the stream, which ends that.
    drop(handle.events());
    handle
}

/// A node's application-level view of its connections, as [`link_events`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// `Event::PeerConnected`: the handshake completed, the peer can be sent to.
    Up(PeerId),
    /// `Event::PeerDisconnected`.
    Down(PeerId),
    /// `Event::DialFailed`, with the reason.
    DialFailed(String),
}

/// Runs `pick` on `handle`'s node loop for every event (`register_message_handler`), and
/// sends each value it returns, timestamped with `Instant::now()` right there, to the
/// returned channel. The timestamp is the moment the application is told, with no task hop
/// in between, which is the point the anchor reads its clock (when its swarm yields the
/// event to the task polling it).
pub fn probe<T: Send + 'static>(
    handle: &NetworkHandle,
    mut pick: impl FnMut(&Event) -> Option<T> + Send + 'static,
) -> mpsc::UnboundedReceiver<(Instant, T)> {
    let (tx, rx) = mpsc::unbounded_channel();
    handle
        .register_message_handler(move |e| {
            if let Some(v) = pick(e) {
                let _ = tx.send((Instant::now(), v));
            }
        })
        .expect("node running");
    rx
}

/// A [`probe`] of connection establishment and closure.
pub fn link_events(handle: &NetworkHandle) -> mpsc::UnboundedReceiver<(Instant, Link)> {
    probe(handle, |e| match e {
        Event::PeerConnected { peer, .. } => Some(Link::Up(*peer)),
        Event::PeerDisconnected { peer, .. } => Some(Link::Down(*peer)),
        Event::DialFailed { addr, reason } => Some(Link::DialFailed(format!("{addr}: {reason}"))),
        _ => None,
    })
}

/// Waits (at most [`EVENT_WAIT`]) for the next [`Link`] event and checks that it is `Up`
/// (`want_up`) or `Down`; returns its timestamp.
pub async fn expect_link(
    rx: &mut mpsc::UnboundedReceiver<(Instant, Link)>,
    want_up: bool,
) -> Result<Instant, String> {
    let what = if want_up {
        "PeerConnected"
    } else {
        "PeerDisconnected"
    };
    match tokio::time::timeout(EVENT_WAIT, rx.recv()).await {
        Err(_) => Err(format!("no {what} within {EVENT_WAIT:?}")),
        Ok(None) => Err("node stopped".into()),
        Ok(Some((at, Link::Up(_)))) if want_up => Ok(at),
        Ok(Some((at, Link::Down(_)))) if !want_up => Ok(at),
        Ok(Some((_, other))) => Err(format!("expected {what}, got {other:?}")),
    }
}

/// Waits (at most [`EVENT_WAIT`]) on an event stream until `pred` holds for an event.
pub async fn wait_event(
    events: &mut EventStream,
    mut pred: impl FnMut(&Event) -> bool,
) -> Result<(), String> {
    tokio::time::timeout(EVENT_WAIT, async {
        while let Some(e) = events.next().await {
            if pred(&e) {
                return Ok(());
            }
        }
        Err("node stopped".to_string())
    })
    .await
    .map_err(|_| format!("expected event not seen within {EVENT_WAIT:?}"))?
}

/// Two nodes with one established connection, client → server: the setup of every
/// point-to-point scenario (`rtt`, `throughput`, `msgrate`).
pub struct Pair {
    /// The listening node.
    pub server: NetworkHandle,
    /// The node that dialed it.
    pub client: NetworkHandle,
    /// The server's identity.
    pub server_peer: PeerId,
}

impl Pair {
    /// Starts both nodes, dials, and returns once both sides report `PeerConnected`.
    pub async fn connect() -> Result<Self, String> {
        let server = start_node(bench_config(1), true).await;
        let client = start_node(bench_config(1), false).await;
        let (mut server_events, mut client_events) = (server.events(), client.events());
        let addr = server.dial_addr().expect("server listens");
        client
            .connect_to_peer(addr)
            .await
            .map_err(|e| format!("dial: {e}"))?;
        let up = |e: &Event| matches!(e, Event::PeerConnected { .. });
        wait_event(&mut client_events, up).await?;
        wait_event(&mut server_events, up).await?;
        // Dropping the streams unsubscribes them, so the measured phase pays for no event
        // clones nobody reads.
        Ok(Pair {
            server_peer: server.peer_id(),
            server,
            client,
        })
    }
}

// ---------------------------------------------------------------------------
// Statistics (identical to the anchor's)
// ---------------------------------------------------------------------------

/// Nearest-rank percentile of an ascending-sorted slice (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median (nearest rank) of unsorted values.
pub fn median(values: &[f64]) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 50.0)
}

/// Summary of a latency sample: count, min, median (p50), p90, p99, max, mean, rounded to 3
/// decimals in the unit the caller used.
pub fn summarize(samples: &[f64]) -> Value {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let mean = if s.is_empty() {
        f64::NAN
    } else {
        s.iter().sum::<f64>() / s.len() as f64
    };
    json!({
        "n": s.len(),
        "min": round3(s.first().copied().unwrap_or(f64::NAN)),
        "median": round3(percentile(&s, 50.0)),
        "p90": round3(percentile(&s, 90.0)),
        "p99": round3(percentile(&s, 99.0)),
        "max": round3(s.last().copied().unwrap_or(f64::NAN)),
        "mean": round3(mean),
    })
}

/// Rounds to 3 decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A duration in microseconds.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A duration in milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// Process memory and host CPU
// ---------------------------------------------------------------------------

/// Current resident set size and peak RSS (`VmRSS`, `VmHWM`) in KiB, from
/// `/proc/self/status`; zeros where unavailable.
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Host-wide and own-process CPU time, in clock ticks, at one instant.
#[derive(Clone, Copy)]
pub struct CpuSnapshot {
    /// All CPUs: busy (user+nice+system+irq+softirq+steal) ticks.
    host_busy: u64,
    /// All CPUs: steal ticks.
    host_steal: u64,
    /// All CPUs: total ticks (busy + idle + iowait).
    host_total: u64,
    /// This process: utime + stime ticks.
    own: u64,
}

impl CpuSnapshot {
    /// Reads `/proc/stat` and `/proc/self/stat` (zeros where unavailable).
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let f = |i: usize| cpu.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let host_busy = f(0) + f(1) + f(2) + f(5) + f(6) + f(7);
        let host_total = host_busy + f(3) + f(4);
        // utime and stime are the 14th and 15th fields, i.e. 11 and 12 after the
        // parenthesised command name (which may itself contain spaces).
        let own_stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after = own_stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<u64> = after
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let own = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
        CpuSnapshot {
            host_busy,
            host_steal: f(7),
            host_total,
            own,
        }
    }

    /// CPU use between `self` and `later` as percentages of the whole host (all CPUs): this
    /// process, everything else, and steal. `other_pct` well above 0 means the figures were
    /// disturbed by other load.
    pub fn report(&self, later: &CpuSnapshot) -> Value {
        let total = later.host_total.saturating_sub(self.host_total).max(1) as f64;
        let busy = later.host_busy.saturating_sub(self.host_busy) as f64;
        let own = later.own.saturating_sub(self.own) as f64;
        let steal = later.host_steal.saturating_sub(self.host_steal) as f64;
        json!({
            "self_pct": round3(100.0 * own / total),
            "other_pct": round3(100.0 * (busy - own).max(0.0) / total),
            "steal_pct": round3(100.0 * steal / total),
        })
    }
}

// ---------------------------------------------------------------------------
// Run metadata
// ---------------------------------------------------------------------------

/// The workspace lock file, embedded at compile time so the result lines name the exact
/// versions the binary was built with.
const CARGO_LOCK: &str = include_str!("../../Cargo.lock");

/// Crates whose resolved versions are reported in `stack_versions`.
const TRACKED: &[&str] = &[
    "silver-p2p",
    "silver-p2p-core",
    "silver-p2p-driver",
    "silver-p2p-tokio",
    "snow",
    "ring",
    "ciborium",
    "bytes",
    "futures",
    "tokio",
];

/// `name → version` for the [`TRACKED`] crates, read from `Cargo.lock`.
fn stack_versions() -> serde_json::Map<String, Value> {
    let mut found = serde_json::Map::new();
    let mut name: Option<&str> = None;
    for line in CARGO_LOCK.lines() {
        if let Some(v) = line.strip_prefix("name = ") {
            name = Some(v.trim_matches('"'));
        } else if let Some(v) = line.strip_prefix("version = ") {
            if let Some(n) = name.take().filter(|n| TRACKED.contains(n)) {
                found.insert(
                    n.to_string(),
                    Value::String(v.trim_matches('"').to_string()),
                );
            }
        }
    }
    found
}

/// The compiler's version. The runner has no build script, so this asks `rustc -V` (as
/// named by `$RUSTC`, else on `PATH`) at run time; the toolchain that built the binary is the
/// one in use unless it was switched in between.
fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    std::process::Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Metadata fields attached to every result line, in output order.
pub fn metadata(workers: usize) -> Vec<(&'static str, Value)> {
    let stack = stack_versions();
    let version = stack.get("silver-p2p").cloned().unwrap_or(Value::Null);
    vec![
        ("impl", json!("silver-p2p")),
        ("silver_p2p_version", version),
        ("stack_versions", Value::Object(stack)),
        ("rustc", json!(rustc_version())),
        ("date_utc", json!(utc_now_rfc3339())),
        (
            "nproc",
            json!(std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)),
        ),
        ("tokio_worker_threads", json!(workers)),
        (
            "transport",
            json!("tcp(loopback 127.0.0.1, nodelay) + noise XX (25519/ChaChaPoly/BLAKE2s, X25519 static-key identities, Hello in messages 2 and 3) + 2-byte length-prefixed transport frames of CBOR message sequences, sealed with the transport AEAD both Hellos agreed on; silver-p2p-tokio adapter"),
        ),
        ("cipher", json!(cipher().name())),
        ("transport_aead", json!(transport_suite())),
    ]
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Formats one JSON object with its keys in the given order. (serde_json's map sorts keys
/// unless its `preserve_order` feature is on, and turning that on here would change the
/// output of every other workspace crate built together with this one.)
pub fn ordered_object(fields: &[(&str, Value)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String((*k).to_string())))
        .collect();
    format!("{{{}}}", body.join(","))
}
