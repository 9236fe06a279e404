//! The node's configuration: every limit and interval of the node level, with documented
//! defaults, parsed from TOML text and validated. The adapter reads the file; the core parses
//! and checks it, so every runtime gets the same rules and the same error messages.

use std::time::Duration;

use crate::addr::PeerAddr;
use crate::config::{duration_ms, ConfigError, ConnectionConfig};
use crate::hello::{Capabilities, MAX_AGENT_LEN, MAX_LISTEN_ADDRS, MAX_NETWORK_ID_LEN};
use crate::node::addrbook::AddressBookConfig;
use crate::node::backoff::BackoffConfig;
use crate::node::ratelimit::RateLimitConfig;

/// Upper bound on [`NodeConfig::timer_granularity`]: a coarser grid would delay handshake
/// timeouts and keepalives past any use.
pub const MAX_TIMER_GRANULARITY: Duration = Duration::from_secs(60);

/// Everything a [`crate::node::Node`] needs to know, with a default for every field.
///
/// In TOML, top-level keys come first and each sub-structure is a table (`[limits]`,
/// `[discovery]`, …). Unknown keys are an error, not ignored. Durations are integers in
/// milliseconds with an `_ms` suffix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Nodes on different networks never talk. Default `"silver-devnet"`.
    pub network_id: String,
    /// Software name sent in the Hello. Default `"silver-p2p/<version>"`.
    pub agent: String,
    /// Feature bits sent in the Hello. Default: all this version knows. `LAZY_GOSSIP`
    /// follows `gossip.mode` and `AES_GCM` follows `cipher`, whatever is set here.
    pub capabilities: Capabilities,
    /// Which transport AEAD this node asks for (`"auto"`, `"chacha20-poly1305"` or
    /// `"aes-256-gcm"`). A connection uses AES-256-GCM only when both sides ask for it,
    /// ChaCha20-Poly1305 otherwise. Default `"auto"`: see [`CipherPreference::Auto`].
    pub cipher: CipherPreference,
    /// How late the node may serve a connection's deadlines (handshake and idle timeouts,
    /// keepalive checks, reassembly and graceful-close deadlines), so that it wakes once for
    /// all of them. Those deadlines, and the periodic maintenance run (when
    /// `discovery.interval_ms` is at least one step; a shorter one keeps its own period),
    /// fall on a grid of this step that starts when the node is created: a node with many
    /// connections wakes about once a step for all of their timers instead of once for
    /// each, and a keepalive check on a link that carries traffic (which finds nothing due
    /// and re-arms) costs no wake-up of its own. Each such deadline fires at most this much after it is due.
    /// Zero serves every deadline at its exact time. At most 60 s. Default 1000 ms.
    #[serde(with = "duration_ms", rename = "timer_granularity_ms")]
    pub timer_granularity: Duration,
    /// Addresses we announce to peers (where we accept connections). Default: none.
    pub listen_addrs: Vec<std::net::SocketAddr>,
    /// Bootstrap peers: dialed at start, redialed with backoff forever (persistent). One
    /// that sends the node away because it is full (Goodbye `Evicted` or
    /// `TooManyConnections`) is redialed only while the node has fewer outbound connections
    /// than `limits.target_outbound` (and the address book cannot fill them) or than it has
    /// persistent peers.
    pub bootstrap: Vec<PeerAddr>,
    /// Connection counts.
    pub limits: LimitsConfig,
    /// Peer discovery.
    pub discovery: DiscoveryConfig,
    /// The address book.
    pub address_book: AddressBookConfig,
    /// Redialing persistent peers.
    pub reconnect: BackoffConfig,
    /// Per-peer and global rate limits.
    pub rate_limit: RateLimitConfig,
    /// Broadcast (gossip).
    pub gossip: GossipConfig,
    /// Unicast with delivery confirmation.
    pub unicast: UnicastConfig,
    /// Request/response.
    pub requests: RequestConfig,
    /// Misbehaviour and bans.
    pub bans: BanConfig,
    /// Health monitoring.
    pub health: HealthConfig,
    /// Per-connection limits and intervals.
    pub connection: ConnectionConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            network_id: "silver-devnet".into(),
            agent: concat!("silver-p2p/", env!("CARGO_PKG_VERSION")).into(),
            capabilities: Capabilities::ALL,
            cipher: CipherPreference::Auto,
            timer_granularity: Duration::from_secs(1),
            listen_addrs: Vec::new(),
            bootstrap: Vec::new(),
            limits: LimitsConfig::default(),
            discovery: DiscoveryConfig::default(),
            address_book: AddressBookConfig::default(),
            reconnect: BackoffConfig::default(),
            rate_limit: RateLimitConfig::default(),
            gossip: GossipConfig::default(),
            unicast: UnicastConfig::default(),
            requests: RequestConfig::default(),
            bans: BanConfig::default(),
            health: HealthConfig::default(),
            connection: ConnectionConfig::default(),
        }
    }
}

/// The transport AEAD a node asks for in its Hello (the [`Capabilities::AES_GCM`] bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CipherPreference {
    /// AES-256-GCM where this CPU has AES and carry-less multiply instructions (x86-64
    /// AES-NI and PCLMULQDQ, Arm AES and PMULL), ChaCha20-Poly1305 elsewhere. The adapters
    /// resolve it by the CPU when they start a node ([`CipherPreference::resolve`]), the
    /// simulator to AES-256-GCM on every machine; the core reads nothing from its
    /// environment, so a node started with `Auto` unresolved asks for ChaCha20-Poly1305 and
    /// behaves the same on every machine.
    #[default]
    Auto,
    /// Always ChaCha20-Poly1305.
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
    /// Ask for AES-256-GCM (used only with peers that ask for it too).
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

impl CipherPreference {
    /// `Auto` made definite for a CPU that has (or lacks) AES instructions; the other
    /// choices stay as they are. Adapters call it before [`crate::node::Node::new`].
    pub fn resolve(self, cpu_has_aes: bool) -> CipherPreference {
        match self {
            CipherPreference::Auto if cpu_has_aes => CipherPreference::Aes256Gcm,
            CipherPreference::Auto => CipherPreference::ChaCha20Poly1305,
            other => other,
        }
    }

    /// Whether the Hello asks for AES-256-GCM (`Auto` unresolved does not).
    pub fn asks_for_aes_gcm(self) -> bool {
        self == CipherPreference::Aes256Gcm
    }

    /// The name configuration files use for it.
    pub fn name(self) -> &'static str {
        match self {
            CipherPreference::Auto => "auto",
            CipherPreference::ChaCha20Poly1305 => "chacha20-poly1305",
            CipherPreference::Aes256Gcm => "aes-256-gcm",
        }
    }
}

impl std::fmt::Display for CipherPreference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CipherPreference {
    type Err = ConfigError;

    /// Parses the names configuration files use (for command-line flags, say).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        [
            CipherPreference::Auto,
            CipherPreference::ChaCha20Poly1305,
            CipherPreference::Aes256Gcm,
        ]
        .into_iter()
        .find(|c| c.name() == s)
        .ok_or_else(|| {
            ConfigError::new(
                "cipher",
                format!("{s:?} is not one of auto, chacha20-poly1305, aes-256-gcm"),
            )
        })
    }
}

/// Connection counts and eviction protection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most connections of any kind, handshaking included. Default 125.
    pub max_connections: usize,
    /// Most inbound connections. Default 117.
    pub max_inbound: usize,
    /// Outbound connections the node works to keep. Default 8.
    pub target_outbound: usize,
    /// Most outbound connections (manual and persistent peers may take the node above the
    /// target, up to this). Default 12.
    pub max_outbound: usize,
    /// Most connections still connecting or handshaking at once. Default 32.
    pub max_pending_handshakes: usize,
    /// Most inbound connections from one IP address. Default 4.
    pub max_inbound_per_ip: usize,
    /// Inbound peers protected from eviction by lowest smoothed RTT. Default 8.
    pub protect_by_rtt: usize,
    /// Inbound peers protected from eviction by most recent useful message. Default 4.
    pub protect_by_usefulness: usize,
    /// Inbound peers protected from eviction by longest connection time. Default 8.
    pub protect_by_uptime: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 125,
            max_inbound: 117,
            target_outbound: 8,
            max_outbound: 12,
            max_pending_handshakes: 32,
            max_inbound_per_ip: 4,
            protect_by_rtt: 8,
            protect_by_usefulness: 4,
            protect_by_uptime: 8,
        }
    }
}

/// Peer discovery and the coordinator's schedule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// How often the coordinator runs (dials, GetPeers, replacement). Default 1 s.
    #[serde(with = "duration_ms", rename = "interval_ms")]
    pub interval: Duration,
    /// While below the outbound target, ask one connected peer for addresses this often.
    /// Default 30 s.
    #[serde(with = "duration_ms", rename = "get_peers_interval_ms")]
    pub get_peers_interval: Duration,
    /// A connection's GetPeers is answered at most once per this interval. Default 600 s.
    #[serde(with = "duration_ms", rename = "answer_interval_ms")]
    pub answer_interval: Duration,
    /// Most addresses in one Peers answer (the protocol caps it at 1000). Default 1000.
    pub max_peers_per_answer: usize,
    /// Unsolicited addresses accepted per peer and second (token bucket). Default 1/10 s,
    /// written as 100 (milli-addresses per second).
    pub unsolicited_addrs_per_ksec: u64,
    /// Burst of unsolicited addresses per peer. Default 1000.
    pub unsolicited_addrs_burst: u64,
    /// New dials the coordinator starts per run. Default 8.
    pub max_dials_per_interval: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            interval: Duration::from_secs(1),
            get_peers_interval: Duration::from_secs(30),
            answer_interval: Duration::from_secs(600),
            max_peers_per_answer: 1000,
            unsolicited_addrs_per_ksec: 100,
            unsolicited_addrs_burst: 1000,
            max_dials_per_interval: 8,
        }
    }
}

/// When received gossip is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayMode {
    /// Relay every new message at once.
    Auto,
    /// Relay only after the application accepts it (`Node::validation_result`).
    Validate,
}

/// How gossip travels between peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GossipMode {
    /// Every node pushes every new message to all its peers (but the sender). Fastest
    /// and most robust, at the cost of one copy of every message per connection and
    /// direction: a node with d peers receives each message about d times.
    Flood,
    /// Push along a spanning tree, announce to the rest (epidemic broadcast trees). Peers
    /// start eager (pushed to); a peer that delivers a message we already had is told to
    /// stop (`Prune`) and becomes lazy. Lazy peers get the ids of recent messages
    /// (`IHave`, each id once per peer), a few chosen at random every `announce_interval`;
    /// a node missing an announced message asks for it (`IWant`), which also makes that
    /// link eager again, so the tree repairs itself after failures; a request unanswered
    /// within `want_timeout` goes to another peer that announced the message. A node that loses a
    /// pushing peer asks all its lazy peers to push again, and they answer with their
    /// recent ids. Each node then receives each payload about once. Where the tree is
    /// broken without a connection closing (a silent peer), repair waits for a random
    /// announcement, so delivery there is likely within a few `announce_interval`s but not
    /// certain within `history`. A node in tree mode always advertises
    /// [`crate::Capabilities::LAZY_GOSSIP`]; peers that do not are always pushed to.
    Tree,
}

/// Broadcast (gossip).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipConfig {
    /// Message ids remembered to drop duplicates. Default 65,536.
    pub seen_cache_size: usize,
    /// How long a message id is remembered. Default 10 min.
    #[serde(with = "duration_ms", rename = "seen_ttl_ms")]
    pub seen_ttl: Duration,
    /// `auto` or `validate`. Default `auto`.
    pub relay: RelayMode,
    /// Messages awaiting the application's verdict in `validate` mode. Default 4096.
    pub max_pending_validation: usize,
    /// A message not judged within this time is dropped. Default 10 s.
    #[serde(with = "duration_ms", rename = "validation_timeout_ms")]
    pub validation_timeout: Duration,
    /// Peers a relay goes to (0 = all). Must be 0 in tree mode. Default 0.
    pub relay_fanout: usize,
    /// Our own broadcasts tracked per peer until every copy is written (older ones are
    /// forgotten first). Default 1024.
    pub max_tracked_broadcasts: usize,
    /// `flood` or `tree` (see [`GossipMode`]). Default `flood`.
    pub mode: GossipMode,
    /// Tree mode: how often recent message ids are announced to lazy peers. Default 1 s.
    #[serde(with = "duration_ms", rename = "announce_interval_ms")]
    pub announce_interval: Duration,
    /// Tree mode: how long a message is given to travel the pushing links before it is
    /// announced. A younger one is likely still on its way, and announcing it would make
    /// peers ask for copies they are about to receive, grafting links the tree had just
    /// pruned. The same wait (up to twice it, at random) comes between a link's Prune and
    /// the announcement its two ends then make to each other: prunes at two places of one
    /// cycle can cross while concurrent broadcasts are under way and split the pushing
    /// links in two, every such split runs through a link pruned just before, and that
    /// announcement lets each side pull what the other part had (grafting the link back)
    /// instead of waiting for a random announcement round. Zero announces messages as soon
    /// as they arrive and each pruned link at once. `history_ms` must be at least
    /// `announce_interval_ms` plus this. Default 200 ms.
    #[serde(with = "duration_ms", rename = "announce_delay_ms")]
    pub announce_delay: Duration,
    /// Tree mode: lazy peers, chosen at random among those with news, that each
    /// announcement round goes to while the node's links are changing (within `history`
    /// of a connection opening or closing, or a link being pruned or grafted); a round
    /// names to a peer only the messages no earlier round named to it. More repairs a
    /// broken tree sooner, at one small message per peer and round. Default 2.
    pub announce_peers: usize,
    /// Tree mode: lazy peers each announcement round goes to once none of the node's links
    /// has changed for `history`. The tree around the node is then settled and its
    /// announcements are insurance against a break nobody noticed (a peer gone silent):
    /// each node still hears an announcement from some neighbour about
    /// `settled_announce_peers` times per `announce_interval`. In a settled network the
    /// rounds are most of the messages sent (two thirds of them at 2), and 1 instead of 2
    /// halves them. At least 1, at most `announce_peers`. Default 1.
    pub settled_announce_peers: usize,
    /// Tree mode: how long a message stays announced and is kept to answer `IWant`. A
    /// node cut off from the tree without noticing (a silent peer) gets back what it missed
    /// if any announcement reaches it within this time: its neighbours' rounds, about
    /// `settled_announce_peers` per `announce_interval` for it even in a settled network,
    /// make that all but certain. At least `announce_interval_ms` plus `announce_delay_ms`.
    /// Default 10 s.
    #[serde(with = "duration_ms", rename = "history_ms")]
    pub history: Duration,
    /// Tree mode: most bytes kept for `IWant` answers: payloads plus the record of whom
    /// each was sent to (oldest dropped first). At least `connection.max_message_size`.
    /// Default 8 MiB.
    pub max_history_bytes: usize,
    /// Tree mode: announced message ids requested and awaited at once (about 100 bytes
    /// each); when full, the oldest is forgotten first (its next announcer is then asked).
    /// Default 4096.
    pub max_pending_wants: usize,
    /// Tree mode: a requested message not received within this time is asked of the first
    /// other peer that announced it meanwhile (announcements of a pending id are not
    /// answered with more requests, and each peer names an id only once), or else of the
    /// next peer that announces it. Default 1 s.
    #[serde(with = "duration_ms", rename = "want_timeout_ms")]
    pub want_timeout: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            seen_cache_size: 65_536,
            seen_ttl: Duration::from_secs(600),
            relay: RelayMode::Auto,
            max_pending_validation: 4096,
            validation_timeout: Duration::from_secs(10),
            relay_fanout: 0,
            max_tracked_broadcasts: 1024,
            mode: GossipMode::Flood,
            announce_interval: Duration::from_secs(1),
            announce_delay: Duration::from_millis(200),
            announce_peers: 2,
            settled_announce_peers: 1,
            history: Duration::from_secs(10),
            max_history_bytes: 8 << 20,
            max_pending_wants: 4096,
            want_timeout: Duration::from_secs(1),
        }
    }
}

/// Unicast with delivery confirmation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnicastConfig {
    /// Time to wait for an Ack before resending. Default 2 s.
    #[serde(with = "duration_ms", rename = "ack_timeout_ms")]
    pub ack_timeout: Duration,
    /// Most transmissions of one message. Default 5.
    pub max_attempts: u32,
    /// A message not acknowledged within this time fails. Default 30 s.
    #[serde(with = "duration_ms", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Unicasts awaiting an Ack, node-wide. Default 16,384.
    pub max_pending: usize,
    /// (sender, id) pairs remembered to deliver a retried message at most once. Default
    /// 65,536.
    pub dedup_cache_size: usize,
    /// How long a delivered id is remembered (at least `timeout`). Default 120 s.
    #[serde(with = "duration_ms", rename = "dedup_ttl_ms")]
    pub dedup_ttl: Duration,
}

impl Default for UnicastConfig {
    fn default() -> Self {
        UnicastConfig {
            ack_timeout: Duration::from_secs(2),
            max_attempts: 5,
            timeout: Duration::from_secs(30),
            max_pending: 16_384,
            dedup_cache_size: 65_536,
            dedup_ttl: Duration::from_secs(120),
        }
    }
}

/// Request/response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestConfig {
    /// A request unanswered this long fails with a timeout. Default 10 s.
    #[serde(with = "duration_ms", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Our requests in flight to one peer; more are refused. Default 16.
    pub max_in_flight_per_peer: usize,
    /// A peer's requests awaiting our answer; more are refused with NotFound. Default 32.
    pub max_inbound_per_peer: usize,
}

impl Default for RequestConfig {
    fn default() -> Self {
        RequestConfig {
            timeout: Duration::from_secs(10),
            max_in_flight_per_peer: 16,
            max_inbound_per_peer: 32,
        }
    }
}

/// Misbehaviour scores and bans.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BanConfig {
    /// A peer whose score reaches this is disconnected and banned. Default 100.
    pub threshold: u32,
    /// Score of a protocol violation (malformed frames, bad handshake). Default 100.
    pub protocol_violation: u32,
    /// Score of broken chunking. Default 100.
    pub invalid_chunking: u32,
    /// Score of sustained rate-limit abuse. Default 0: reading pauses are the defence, and
    /// an honest peer relaying heavy traffic under TCP back-pressure hits the limit again
    /// after every pause just like an abusive one, so penalising it is opt-in.
    pub rate_limit_abuse: u32,
    /// Score of a response to a request we never sent. Default 20.
    pub unsolicited_response: u32,
    /// Score of an invalid payload the application reports. Default 50.
    pub invalid_payload: u32,
    /// How long a misbehaviour ban lasts. Default 1 h.
    #[serde(with = "duration_ms", rename = "duration_ms")]
    pub duration: Duration,
    /// Most bans kept; the one expiring first is dropped to make room. Default 10,000.
    pub max_bans: usize,
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            threshold: 100,
            protocol_violation: 100,
            invalid_chunking: 100,
            rate_limit_abuse: 0,
            unsolicited_response: 20,
            invalid_payload: 50,
            duration: Duration::from_secs(3600),
            max_bans: 10_000,
        }
    }
}

/// Health monitoring and replacement of unhealthy outbound peers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// An outbound peer scoring below this (0..=100) is replaced when a candidate exists
    /// (checked four times per `connection.ping_interval_ms`, since scores move only as
    /// pings are answered or missed). Default 30.
    pub replace_below: u32,
    /// Peers younger than this are never replaced. Default 120 s.
    #[serde(with = "duration_ms", rename = "min_age_ms")]
    pub min_age: Duration,
    /// An RTT at or above this scores zero for latency. Default 2 s.
    #[serde(with = "duration_ms", rename = "bad_rtt_ms")]
    pub bad_rtt: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            replace_below: 30,
            min_age: Duration::from_secs(120),
            bad_rtt: Duration::from_secs(2),
        }
    }
}

/// Why a configuration text could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigParseError {
    /// Not valid TOML, a wrong type, or an unknown key (the parser names it).
    #[error("{0}")]
    Syntax(String),
    /// Valid TOML that breaks a rule.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

fn prefixed(prefix: &str, r: Result<(), ConfigError>) -> Result<(), ConfigError> {
    r.map_err(|e| {
        if e.field.starts_with(prefix) {
            e
        } else {
            ConfigError::new(format!("{prefix}.{}", e.field), e.rule)
        }
    })
}

impl NodeConfig {
    /// Parses TOML text and validates the result.
    pub fn from_toml(text: &str) -> Result<Self, ConfigParseError> {
        let config: NodeConfig =
            toml::from_str(text).map_err(|e| ConfigParseError::Syntax(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML text (every key, defaults included).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks every rule; the first broken one is returned, naming the field and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.network_id.is_empty() || self.network_id.len() > MAX_NETWORK_ID_LEN {
            return Err(ConfigError::new(
                "network_id",
                format!("must be 1..={MAX_NETWORK_ID_LEN} bytes"),
            ));
        }
        if self.agent.len() > MAX_AGENT_LEN {
            return Err(ConfigError::new(
                "agent",
                format!("longer than {MAX_AGENT_LEN} bytes"),
            ));
        }
        if self.timer_granularity > MAX_TIMER_GRANULARITY {
            return Err(ConfigError::new(
                "timer_granularity_ms",
                format!("must be at most {} ms", MAX_TIMER_GRANULARITY.as_millis()),
            ));
        }
        if self.listen_addrs.len() > MAX_LISTEN_ADDRS {
            return Err(ConfigError::new(
                "listen_addrs",
                format!("more than {MAX_LISTEN_ADDRS} addresses"),
            ));
        }
        let l = &self.limits;
        let over = |field: &str, a: usize, other: &str, b: usize| {
            Err(ConfigError::new(
                format!("limits.{field}"),
                format!("{field} ({a}) exceeds {other} ({b})"),
            ))
        };
        if l.max_connections == 0 {
            return Err(ConfigError::new(
                "limits.max_connections",
                "must be at least 1",
            ));
        }
        if l.max_inbound > l.max_connections {
            return over(
                "max_inbound",
                l.max_inbound,
                "max_connections",
                l.max_connections,
            );
        }
        if l.max_outbound > l.max_connections {
            return over(
                "max_outbound",
                l.max_outbound,
                "max_connections",
                l.max_connections,
            );
        }
        if l.target_outbound > l.max_outbound {
            return over(
                "target_outbound",
                l.target_outbound,
                "max_outbound",
                l.max_outbound,
            );
        }
        if l.max_pending_handshakes == 0 {
            return Err(ConfigError::new(
                "limits.max_pending_handshakes",
                "must be at least 1",
            ));
        }
        let d = &self.discovery;
        if d.interval.is_zero() || d.get_peers_interval.is_zero() {
            return Err(ConfigError::new(
                "discovery",
                "interval_ms and get_peers_interval_ms must be greater than zero",
            ));
        }
        if d.max_peers_per_answer > crate::message::MAX_PEERS_PER_MESSAGE {
            return Err(ConfigError::new(
                "discovery.max_peers_per_answer",
                format!(
                    "max_peers_per_answer ({}) exceeds the protocol limit ({})",
                    d.max_peers_per_answer,
                    crate::message::MAX_PEERS_PER_MESSAGE
                ),
            ));
        }
        let g = &self.gossip;
        if g.seen_cache_size == 0 || g.seen_ttl.is_zero() {
            return Err(ConfigError::new(
                "gossip.seen_cache_size",
                "seen_cache_size and seen_ttl_ms must be greater than zero",
            ));
        }
        if g.mode == GossipMode::Tree {
            if g.announce_interval.is_zero()
                || g.announce_peers == 0
                || g.want_timeout.is_zero()
                || g.max_pending_wants == 0
            {
                return Err(ConfigError::new(
                    "gossip",
                    "tree mode needs announce_interval_ms, announce_peers, want_timeout_ms \
                     and max_pending_wants greater than zero",
                ));
            }
            if g.settled_announce_peers == 0 || g.settled_announce_peers > g.announce_peers {
                return Err(ConfigError::new(
                    "gossip.settled_announce_peers",
                    format!(
                        "must be at least 1 (with none, a node cut off by a silent peer would \
                         never hear what it missed) and at most announce_peers ({})",
                        g.announce_peers
                    ),
                ));
            }
            if g.history < g.announce_interval + g.announce_delay {
                return Err(ConfigError::new(
                    "gossip.history_ms",
                    format!(
                        "history ({:?}) is shorter than announce_interval ({:?}) plus \
                         announce_delay ({:?}): a message is announced from announce_delay \
                         after it arrived until history after, and a round could miss a \
                         shorter window, so some messages would never be announced",
                        g.history, g.announce_interval, g.announce_delay
                    ),
                ));
            }
            if g.relay_fanout != 0 {
                return Err(ConfigError::new(
                    "gossip.relay_fanout",
                    "must be 0 in tree mode: the tree decides whom a relay goes to, and a peer \
                     left out would be neither pushed to nor told",
                ));
            }
            if g.max_history_bytes < self.connection.max_message_size {
                return Err(ConfigError::new(
                    "gossip.max_history_bytes",
                    format!(
                        "max_history_bytes ({}) is below connection.max_message_size ({}): the \
                         largest message could never be kept for the peers that ask for it",
                        g.max_history_bytes, self.connection.max_message_size
                    ),
                ));
            }
            if g.seen_ttl < g.history {
                return Err(ConfigError::new(
                    "gossip.seen_ttl_ms",
                    "seen_ttl is shorter than history: an announced message could be taken \
                     for new again",
                ));
            }
        }
        let u = &self.unicast;
        if u.max_attempts == 0 || u.ack_timeout.is_zero() || u.max_pending == 0 {
            return Err(ConfigError::new(
                "unicast",
                "max_attempts, ack_timeout_ms and max_pending must be greater than zero",
            ));
        }
        if u.dedup_ttl < u.timeout {
            return Err(ConfigError::new(
                "unicast.dedup_ttl_ms",
                format!(
                    "dedup_ttl ({:?}) is below timeout ({:?}): a retry could be delivered twice",
                    u.dedup_ttl, u.timeout
                ),
            ));
        }
        if u.dedup_cache_size == 0 {
            return Err(ConfigError::new(
                "unicast.dedup_cache_size",
                "must be at least 1",
            ));
        }
        let r = &self.requests;
        if r.timeout.is_zero() || r.max_in_flight_per_peer == 0 {
            return Err(ConfigError::new(
                "requests",
                "timeout_ms and max_in_flight_per_peer must be greater than zero",
            ));
        }
        if self.bans.threshold == 0 {
            return Err(ConfigError::new("bans.threshold", "must be at least 1"));
        }
        if self.health.replace_below > 100 {
            return Err(ConfigError::new(
                "health.replace_below",
                "must be within 0..=100",
            ));
        }
        prefixed("address_book", self.address_book.validate())?;
        prefixed("reconnect", self.reconnect.validate())?;
        prefixed("rate_limit", self.rate_limit.validate())?;
        prefixed("connection", self.connection.validate())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let c = NodeConfig::default();
        c.validate().unwrap();
        let text = c.to_toml();
        assert_eq!(NodeConfig::from_toml(&text).unwrap(), c);
    }

    #[test]
    fn partial_toml_keeps_defaults() {
        let c = NodeConfig::from_toml(
            "network_id = \"x\"\n[limits]\ntarget_outbound = 4\n[connection]\nping_interval_ms = 5000\n",
        )
        .unwrap();
        assert_eq!(c.network_id, "x");
        assert_eq!(c.limits.target_outbound, 4);
        assert_eq!(c.limits.max_connections, 125);
        assert_eq!(c.connection.ping_interval, Duration::from_secs(5));
    }

    #[test]
    fn rule_errors_name_field_and_rule() {
        let e = NodeConfig::from_toml("[limits]\nmax_outbound = 12\nmax_connections = 10\nmax_inbound = 10\ntarget_outbound = 8\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "limits.max_outbound: max_outbound (12) exceeds max_connections (10)"
        );
        let e = NodeConfig::from_toml("[connection]\nidle_timeout_ms = 1000\n").unwrap_err();
        assert!(e.to_string().starts_with("connection.idle_timeout"), "{e}");
        let e = NodeConfig::from_toml("timer_granularity_ms = 60001\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "timer_granularity_ms: must be at most 60000 ms"
        );
        for ms in [0, 60_000] {
            let c = NodeConfig::from_toml(&format!("timer_granularity_ms = {ms}\n")).unwrap();
            assert_eq!(c.timer_granularity, Duration::from_millis(ms));
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let e = NodeConfig::from_toml("[limits]\nmax_peers = 3\n").unwrap_err();
        assert!(matches!(e, ConfigParseError::Syntax(_)));
        assert!(e.to_string().contains("max_peers"), "{e}");
        let e = NodeConfig::from_toml("network_id = 5\n").unwrap_err();
        assert!(matches!(e, ConfigParseError::Syntax(_)));
        let e = NodeConfig::from_toml("bootstrap = [\"nonsense\"]\n").unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
    }

    #[test]
    fn cipher_is_named_in_toml_and_auto_resolves_by_cpu() {
        assert_eq!(NodeConfig::default().cipher, CipherPreference::Auto);
        for (text, expected) in [
            ("auto", CipherPreference::Auto),
            ("chacha20-poly1305", CipherPreference::ChaCha20Poly1305),
            ("aes-256-gcm", CipherPreference::Aes256Gcm),
        ] {
            let c = NodeConfig::from_toml(&format!("cipher = \"{text}\"\n")).unwrap();
            assert_eq!(c.cipher, expected);
            let back = toml::to_string(&c).unwrap();
            assert!(back.contains(&format!("cipher = \"{text}\"")), "{back}");
            assert_eq!(expected.to_string(), text);
            assert_eq!(text.parse::<CipherPreference>(), Ok(expected));
        }
        let e = NodeConfig::from_toml("cipher = \"aes-128-gcm\"\n").unwrap_err();
        assert!(e.to_string().contains("aes-128-gcm"), "{e}");
        let e = "aes-128-gcm".parse::<CipherPreference>().unwrap_err();
        assert_eq!(e.field, "cipher");
        assert!(e.to_string().contains("aes-128-gcm"), "{e}");
        assert_eq!(
            CipherPreference::Auto.resolve(true),
            CipherPreference::Aes256Gcm
        );
        assert_eq!(
            CipherPreference::Auto.resolve(false),
            CipherPreference::ChaCha20Poly1305
        );
        for fixed in [
            CipherPreference::ChaCha20Poly1305,
            CipherPreference::Aes256Gcm,
        ] {
            assert_eq!(fixed.resolve(true), fixed);
            assert_eq!(fixed.resolve(false), fixed);
        }
    }
}
