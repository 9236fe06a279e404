//! The address book: every peer address this node has heard of, kept within fixed bounds,
//! with enough history to choose whom to dial next ([`AddressBook::select`]) and what to
//! tell a peer that asks for addresses ([`AddressBook::sample`]).
//!
//! Modelled on Bitcoin Core's `addrman`, rewritten for this crate:
//!
//! * **Two tables.** *New* holds addresses we have heard of but never completed a handshake
//!   with (or that were pushed out of tried); *tried* holds addresses where a handshake
//!   succeeded ([`AddressBook::mark_success`]). Each table is split into buckets of equal
//!   capacity (`max_new / new_buckets` and `max_tried / tried_buckets`), so neither table
//!   can ever exceed its bound.
//! * **Bucketing by source.** A new address is placed by hashing the secret seed with the
//!   *source* netgroup (the /16 or /32 of the peer that told us, see [`netgroup`]) and the
//!   address's own netgroup. All addresses one source group sends from one address group share
//!   a single bucket, and one source group can reach at most 8 buckets in all. A full bucket
//!   evicts a "terrible" entry (not seen for the horizon, or failing) or else the oldest entry
//!   *of that bucket*, so a source flooding us with addresses only churns the few buckets it
//!   maps to, and cannot displace what other sources told us. On top of that, one source group
//!   may hold at most `max_per_source_group` new entries: at the cap, its own worst entry makes
//!   room. Because placement is keyed by a seed the attacker does not know, it cannot aim its
//!   addresses at chosen buckets either.
//! * **Tried is earned.** An address only enters tried after a completed handshake, and its
//!   tried bucket depends on its own netgroup, so taking over the tried table needs many real,
//!   listening nodes spread over many netgroups. Dial selection draws from tried half the time.
//! * **Operator addresses are protected.** [`AddrSource::Bootstrap`] and
//!   [`AddrSource::Manual`] entries are never evicted to make room for peer-learned ones, and
//!   are never forgotten for failing (only [`AddressBook::remove`] drops them).
//!
//! Everything is deterministic: the book is a set of `BTreeMap`s and `BTreeSet`s, time comes
//! in as [`Timestamp`] arguments and randomness from a caller's [`SeededRng`].
//!
//! **Loopback devnets.** Every 127.0.0.0/8 address is in the group 127.0.0.0/16, both as an
//! address and as a source, so on a loopback devnet every peer-learned address competes for
//! one source-group cap (`max_per_source_group`) and one new bucket (capacity
//! `max_new / new_buckets`). The defaults (64 and 4096 / 64 = 64) fit a 50-node devnet; for a
//! larger one raise `max_per_source_group` and lower `new_buckets` (for example
//! `new_buckets = 1`, `max_per_source_group = max_new`). Bootstrap addresses likewise share
//! one new bucket there (at most 8 anywhere), so list at most `max_new / new_buckets` of them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use sha2::{Digest, Sha256};

use crate::addr::PeerAddr;
use crate::identity::PeerId;
use crate::rng::SeededRng;
use crate::time::Timestamp;
use crate::ConfigError;

/// Largest `max_new` / `max_tried` accepted by [`AddressBookConfig::validate`].
const MAX_TABLE_SIZE: usize = 1 << 20;
/// Largest bucket count accepted by [`AddressBookConfig::validate`].
const MAX_BUCKETS: usize = 1 << 16;
/// How many new buckets one source group can reach.
const NEW_BUCKETS_PER_SOURCE_GROUP: u64 = 8;
/// How many tried buckets one address group can reach.
const TRIED_BUCKETS_PER_GROUP: u64 = 8;
/// An address attempted this recently is never "terrible" (it is being tried right now).
const RECENT_ATTEMPT_NANOS: u64 = 60 * NANOS_PER_SEC;
/// Failures after which a never-successful address is "terrible" (capped by `max_failures`).
const TERRIBLE_FAILURES: u32 = 3;
/// Failures after which a once-successful address is "terrible" …
const TRIED_TERRIBLE_FAILURES: u32 = 10;
/// … if its last success is older than this.
const TRIED_TERRIBLE_AGE_NANOS: u64 = 7 * 24 * 3600 * NANOS_PER_SEC;
/// Dial weight by failure count (≈ 0.66^failures, as addrman), in thousandths.
const FAILURE_WEIGHTS: [u64; 9] = [1000, 660, 436, 287, 190, 125, 83, 55, 36];
const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
/// The internal clock reading a restored book starts at (see [`AddressBook::restore`]).
const RESTORE_REFERENCE: u64 = u64::MAX / 2;

/// The version of the snapshot format [`AddressBook::snapshot`] writes and
/// [`AddressBook::restore`] reads.
pub const SNAPSHOT_VERSION: u64 = 1;

// ---------------------------------------------------------------------------------------------
// Netgroups and sources
// ---------------------------------------------------------------------------------------------

/// A network group: the unit of diversity. Addresses in one group are assumed to be under
/// one operator's control (one provider, one attacker), so the book caps what one group can
/// contribute and dial selection spreads outbound connections over groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetGroup {
    /// An IPv4 /16 (also used for IPv4-mapped IPv6 addresses): its first two octets.
    V4([u8; 2]),
    /// An IPv6 /32: its first four octets.
    V6([u8; 4]),
}

impl NetGroup {
    fn encode(&self) -> Vec<u8> {
        match self {
            NetGroup::V4([a, b]) => vec![4, *a, *b],
            NetGroup::V6([a, b, c, d]) => vec![6, *a, *b, *c, *d],
        }
    }
}

impl fmt::Display for NetGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetGroup::V4([a, b]) => write!(f, "{a}.{b}.0.0/16"),
            NetGroup::V6([a, b, c, d]) => {
                let ip = Ipv6Addr::new(
                    u16::from_be_bytes([*a, *b]),
                    u16::from_be_bytes([*c, *d]),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                );
                write!(f, "{ip}/32")
            }
        }
    }
}

/// The network group of `ip`: the IPv4 /16 or the IPv6 /32, with IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`) treated as the IPv4 address they carry.
///
/// Loopback and private ranges get groups like any other (127.0.0.1 and 127.0.0.2 are both in
/// 127.0.0.0/16), so a loopback devnet is one group: see the module docs for the caps to raise.
pub fn netgroup(ip: IpAddr) -> NetGroup {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            NetGroup::V4([o[0], o[1]])
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            NetGroup::V6([o[0], o[1], o[2], o[3]])
        }
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// The form an address is stored under: IPv4-mapped IPv6 becomes IPv4 and the IPv6 flow
/// label is cleared, so one endpoint has one key.
fn canonical_socket(socket: SocketAddr) -> SocketAddr {
    match socket {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, v6.scope_id())),
        },
        SocketAddr::V4(_) => socket,
    }
}

/// Why `socket` (already canonical) can never be dialled, if it cannot.
fn invalid_reason(socket: &SocketAddr) -> Option<&'static str> {
    if socket.port() == 0 {
        return Some("port 0");
    }
    match socket.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified IP address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast IP address"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast IP address"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified IP address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast IP address"),
        _ => None,
    }
}

fn socket_bytes(socket: &SocketAddr) -> Vec<u8> {
    let mut out = match socket.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    out.extend_from_slice(&socket.port().to_be_bytes());
    out
}

/// Where the book learned an address. It decides the address's new bucket, whether it
/// counts against a source-group cap, and whether it is protected from eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrSource {
    /// From the bootstrap list in the configuration. Protected: never evicted for
    /// peer-learned addresses, never forgotten for failures.
    Bootstrap,
    /// Added by the operator at run time (an RPC, a command line). Protected like
    /// `Bootstrap`.
    Manual,
    /// Learned from a Peers message sent by the peer at this IP address. Its netgroup is the
    /// source group: it decides the bucket and the `max_per_source_group` cap.
    Peer(IpAddr),
    /// The listen address an inbound peer announced in its Hello. The source group is the
    /// address's own group, so callers should only pass listen addresses whose IP equals the
    /// connection's remote IP (for any other, use `Peer(remote_ip)`).
    Inbound,
}

impl AddrSource {
    /// Whether entries from this source are protected from eviction by peer-learned ones and
    /// from being forgotten after `max_failures` (true for `Bootstrap` and `Manual`).
    pub fn is_protected(&self) -> bool {
        matches!(self, AddrSource::Bootstrap | AddrSource::Manual)
    }

    /// Index into `AddressBook::by_source_kind`.
    fn kind_index(&self) -> usize {
        match self {
            AddrSource::Bootstrap => 0,
            AddrSource::Manual => 1,
            AddrSource::Peer(_) => 2,
            AddrSource::Inbound => 3,
        }
    }

    /// When an address is heard of again, a higher rank replaces the recorded source
    /// (operator sources win over peer-learned ones; otherwise the first source stays).
    fn rank(&self) -> u8 {
        match self {
            AddrSource::Peer(_) | AddrSource::Inbound => 0,
            AddrSource::Bootstrap => 1,
            AddrSource::Manual => 2,
        }
    }
}

/// The group a new entry is bucketed and capped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SourceKey {
    Bootstrap,
    Manual,
    Group(NetGroup),
}

impl SourceKey {
    fn of(source: &AddrSource, socket: &SocketAddr) -> SourceKey {
        match source {
            AddrSource::Bootstrap => SourceKey::Bootstrap,
            AddrSource::Manual => SourceKey::Manual,
            AddrSource::Peer(ip) => SourceKey::Group(netgroup(*ip)),
            AddrSource::Inbound => SourceKey::Group(netgroup(socket.ip())),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            SourceKey::Bootstrap => vec![b'B'],
            SourceKey::Manual => vec![b'M'],
            SourceKey::Group(g) => {
                let mut out = vec![b'G'];
                out.extend(g.encode());
                out
            }
        }
    }

    /// Whether `max_per_source_group` applies (it does not to operator sources).
    fn capped(&self) -> bool {
        matches!(self, SourceKey::Group(_))
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The bounds of an [`AddressBook`]. Validate with [`AddressBookConfig::validate`] before
/// use; [`AddressBook::new`] clamps out-of-range values instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddressBookConfig {
    /// Most entries in the new table (addresses never connected to). The effective bound is
    /// `new_buckets × ⌊max_new / new_buckets⌋`, never more than this. Default 4096.
    pub max_new: usize,
    /// Most entries in the tried table (addresses a handshake succeeded with). The effective
    /// bound is `tried_buckets × ⌊max_tried / tried_buckets⌋`. Default 1024.
    pub max_tried: usize,
    /// Buckets the new table is split into; each holds `max_new / new_buckets` entries. One
    /// source group reaches at most 8 of them. At most `max_new`. Default 64 (64 per bucket).
    pub new_buckets: usize,
    /// Buckets the tried table is split into; each holds `max_tried / tried_buckets` entries.
    /// One address group reaches at most 8 of them. At most `max_tried`. Default 16
    /// (64 per bucket).
    pub tried_buckets: usize,
    /// Most new entries one source netgroup may contribute (bootstrap and manual entries are
    /// not counted). At the cap, that group's own worst entry makes room. On loopback every
    /// peer is one group: raise this for devnets of more than ~60 nodes. Default 64.
    pub max_per_source_group: usize,
    /// A peer-learned address that is not in tried is forgotten after this many failed
    /// attempts in a row (tried, bootstrap and manual ones are kept, but dialled less often).
    /// Default 5.
    pub max_failures: u32,
    /// Addresses not seen for this long are "terrible": the first to be evicted when space
    /// is needed, and never handed out by [`AddressBook::sample`]. Default 30 days.
    pub horizon_secs: u64,
    /// [`AddressBook::select`] skips addresses attempted less than this long ago. Default 60.
    pub retry_interval_secs: u64,
}

impl Default for AddressBookConfig {
    fn default() -> Self {
        AddressBookConfig {
            max_new: 4096,
            max_tried: 1024,
            new_buckets: 64,
            tried_buckets: 16,
            max_per_source_group: 64,
            max_failures: 5,
            horizon_secs: 30 * 24 * 3600,
            retry_interval_secs: 60,
        }
    }
}

impl AddressBookConfig {
    /// Checks every rule; the first broken one is returned, with fields named
    /// `address_book.<field>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |name: &str| format!("address_book.{name}");
        let within = |name: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    field(name),
                    format!("{v} is outside {lo}..={hi}"),
                ))
            }
        };
        within("max_new", self.max_new, 1, MAX_TABLE_SIZE)?;
        within("max_tried", self.max_tried, 1, MAX_TABLE_SIZE)?;
        if !(1..=self.max_new.min(MAX_BUCKETS)).contains(&self.new_buckets) {
            return Err(ConfigError::new(
                field("new_buckets"),
                format!(
                    "{} is outside 1..={} (at most max_new, so every bucket holds an entry, and at most {MAX_BUCKETS})",
                    self.new_buckets,
                    self.max_new.min(MAX_BUCKETS)
                ),
            ));
        }
        if !(1..=self.max_tried.min(MAX_BUCKETS)).contains(&self.tried_buckets) {
            return Err(ConfigError::new(
                field("tried_buckets"),
                format!(
                    "{} is outside 1..={} (at most max_tried, so every bucket holds an entry, and at most {MAX_BUCKETS})",
                    self.tried_buckets,
                    self.max_tried.min(MAX_BUCKETS)
                ),
            ));
        }
        if self.max_per_source_group == 0 {
            return Err(ConfigError::new(
                field("max_per_source_group"),
                "must be at least 1",
            ));
        }
        if self.max_failures == 0 {
            return Err(ConfigError::new(
                field("max_failures"),
                "must be at least 1",
            ));
        }
        if self.horizon_secs == 0 {
            return Err(ConfigError::new(
                field("horizon_secs"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Entries and statistics
// ---------------------------------------------------------------------------------------------

/// What the book knows about one address, as returned by [`AddressBook::get`].
///
/// Times are on the caller's clock. A restored book keeps exact ages internally but shows a
/// time that would fall before the caller's epoch as [`Timestamp::ZERO`] here, and shows
/// restored times as `ZERO` until its first call that takes a clock reading (see
/// [`AddressBook::restore`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    /// Where the address was learned (operator sources replace peer ones when re-added).
    pub source: AddrSource,
    /// The last time the address was added (heard of again) or a handshake with it succeeded.
    pub last_seen: Timestamp,
    /// The last dial attempt ([`AddressBook::mark_attempt`], or a failure or success).
    pub last_tried: Option<Timestamp>,
    /// The last completed handshake.
    pub last_success: Option<Timestamp>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// The identity at this address: pinned by an operator source, announced by the peer
    /// itself, or proven by a handshake (which always overrides). [`AddressBook::select`]
    /// returns it pinned.
    pub peer_id: Option<PeerId>,
    /// Whether the address is in the tried table (a handshake with it succeeded).
    pub in_tried: bool,
}

#[derive(Clone, Debug)]
struct Entry {
    /// The public view; its times are derived from the internal ones below.
    info: AddrInfo,
    /// Internal clock (caller's clock + offset) readings, which never lose precision.
    seen: u64,
    tried: Option<u64>,
    success: Option<u64>,
    /// Index in the new or the tried table, as `info.in_tried` says.
    bucket: usize,
}

impl Entry {
    fn fresh(now: u64, source: AddrSource, peer_id: Option<PeerId>) -> Entry {
        Entry {
            info: AddrInfo {
                source,
                last_seen: Timestamp::ZERO,
                last_tried: None,
                last_success: None,
                failures: 0,
                peer_id,
                in_tried: false,
            },
            seen: now,
            tried: None,
            success: None,
            bucket: 0,
        }
    }

    /// Recomputes the public times from the internal ones.
    fn sync(&mut self, offset: u64) {
        fn view(t: u64, offset: u64) -> Timestamp {
            Timestamp::from_nanos(t.saturating_sub(offset))
        }
        self.info.last_seen = view(self.seen, offset);
        self.info.last_tried = self.tried.map(|t| view(t, offset));
        self.info.last_success = self.success.map(|t| view(t, offset));
    }

    /// The time eviction compares: the last success in tried, the last sighting in new.
    fn staleness_stamp(&self) -> u64 {
        if self.info.in_tried {
            self.success.unwrap_or(self.seen)
        } else {
            self.seen
        }
    }
}

/// Counters describing an [`AddressBook`], for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AddressBookStats {
    /// Addresses known (new + tried).
    pub known: usize,
    /// Addresses in the new table.
    pub new: usize,
    /// Addresses in the tried table.
    pub tried: usize,
    /// Known addresses whose source is [`AddrSource::Bootstrap`].
    pub bootstrap: usize,
    /// Known addresses whose source is [`AddrSource::Manual`].
    pub manual: usize,
    /// Known addresses whose source is [`AddrSource::Peer`].
    pub peer: usize,
    /// Known addresses whose source is [`AddrSource::Inbound`].
    pub inbound: usize,
    /// Addresses refused as undialable (port 0, unspecified, multicast or broadcast IP).
    pub rejected: u64,
    /// Valid new addresses refused for lack of room (their bucket full of protected entries).
    pub refused: u64,
    /// Entries evicted to make room for others.
    pub evicted: u64,
    /// Peer-learned entries forgotten after `max_failures` failed attempts.
    pub forgotten: u64,
}

// ---------------------------------------------------------------------------------------------
// Snapshot format
// ---------------------------------------------------------------------------------------------

/// The persisted form of an address book, written by [`AddressBook::snapshot`] as CBOR.
///
/// Layout (version 1): a CBOR map with exactly two keys, in this order: `"version"` (an
/// unsigned integer, [`SNAPSHOT_VERSION`]) and `"entries"` (a definite-length array of
/// [`SnapshotEntry`] maps). Times are stored as ages relative to the moment of the snapshot,
/// because the caller's clock epoch does not survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddressBookSnapshot {
    /// The format version, [`SNAPSHOT_VERSION`].
    pub version: u64,
    /// Every known address.
    pub entries: Vec<SnapshotEntry>,
}

/// One address in an [`AddressBookSnapshot`]: a CBOR map with these keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotEntry {
    /// `ip:port` or `[ipv6]:port`; must be dialable (no port 0, no unspecified, multicast
    /// or broadcast IP).
    pub addr: String,
    /// The identity at this address, 64 hex characters, or null.
    pub peer_id: Option<String>,
    /// Where the address was learned.
    pub source: SnapshotSource,
    /// Milliseconds from the last sighting to the snapshot.
    pub last_seen_age_ms: u64,
    /// Milliseconds from the last attempt to the snapshot, or null.
    pub last_tried_age_ms: Option<u64>,
    /// Milliseconds from the last completed handshake to the snapshot, or null (required
    /// when `tried` is true).
    pub last_success_age_ms: Option<u64>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Whether the address was in the tried table.
    pub tried: bool,
}

/// [`AddrSource`] in a snapshot: the text `"bootstrap"`, `"manual"` or `"inbound"`, or the
/// map `{"peer": "<ip>"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotSource {
    /// [`AddrSource::Bootstrap`].
    Bootstrap,
    /// [`AddrSource::Manual`].
    Manual,
    /// [`AddrSource::Inbound`].
    Inbound,
    /// [`AddrSource::Peer`], with the IP address as text.
    Peer(String),
}

impl From<AddrSource> for SnapshotSource {
    fn from(source: AddrSource) -> Self {
        match source {
            AddrSource::Bootstrap => SnapshotSource::Bootstrap,
            AddrSource::Manual => SnapshotSource::Manual,
            AddrSource::Inbound => SnapshotSource::Inbound,
            AddrSource::Peer(ip) => SnapshotSource::Peer(ip.to_string()),
        }
    }
}

/// Why [`AddressBook::restore`] refused a snapshot. Nothing is restored from a refused one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes are not well-formed CBOR, or end in the middle of an item.
    #[error("not a CBOR address-book snapshot: {0}")]
    NotCbor(String),
    /// Well-formed CBOR, but not laid out as an [`AddressBookSnapshot`] (a missing or
    /// unknown key, a wrong type, trailing bytes).
    #[error("malformed address-book snapshot: {0}")]
    Malformed(String),
    /// A snapshot of another format version.
    #[error("address-book snapshot version {found} is not supported (this build reads version {supported})")]
    WrongVersion {
        /// The version in the snapshot.
        found: u64,
        /// The version this build reads, [`SNAPSHOT_VERSION`].
        supported: u64,
    },
    /// An entry breaks a rule: an address that is not `ip:port` or not dialable, a bad peer
    /// id or source IP, a tried entry without a success time, a duplicate address.
    #[error("address-book snapshot entry {index} is invalid: {reason}")]
    InvalidEntry {
        /// The entry's position in the `entries` array, from 0.
        index: u64,
        /// The rule it breaks.
        reason: String,
    },
}

/// At most 64 characters of `s`, for error messages about untrusted input.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

fn truncated() -> SnapshotError {
    SnapshotError::NotCbor("the input ends inside an item".into())
}

const MAJOR_UINT: u8 = 0;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;

/// Reads one CBOR head: (major type, argument). Indefinite lengths are refused.
fn read_head(input: &mut &[u8]) -> Result<(u8, u64), SnapshotError> {
    let (&first, rest) = input.split_first().ok_or_else(truncated)?;
    let major = first >> 5;
    let width = match first & 0x1f {
        n @ 0..=23 => {
            *input = rest;
            return Ok((major, u64::from(n)));
        }
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 if (2..=5).contains(&major) => {
            return Err(SnapshotError::Malformed(
                "indefinite-length items do not appear in snapshots".into(),
            ))
        }
        _ => {
            return Err(SnapshotError::NotCbor(format!(
                "invalid CBOR initial byte 0x{first:02x}"
            )))
        }
    };
    if rest.len() < width {
        return Err(truncated());
    }
    let (arg, rest) = rest.split_at(width);
    *input = rest;
    Ok((
        major,
        arg.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    ))
}

/// Reads a text string that must equal `name`.
fn expect_key(input: &mut &[u8], name: &str) -> Result<(), SnapshotError> {
    let (major, len) = read_head(input)?;
    if major != MAJOR_TEXT {
        return Err(SnapshotError::Malformed(format!(
            "expected the key {name:?}, found CBOR major type {major}"
        )));
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if input.len() < len {
        return Err(truncated());
    }
    let (key, rest) = input.split_at(len);
    if key != name.as_bytes() {
        return Err(SnapshotError::Malformed(format!(
            "expected the key {name:?}, found {:?}",
            clip(&String::from_utf8_lossy(key))
        )));
    }
    *input = rest;
    Ok(())
}

fn entry_decode_error(index: u64, err: ciborium::de::Error<std::io::Error>) -> SnapshotError {
    match err {
        ciborium::de::Error::Io(_) => {
            SnapshotError::NotCbor(format!("the input ends inside entry {index}"))
        }
        ciborium::de::Error::Syntax(_) => {
            SnapshotError::NotCbor(format!("invalid CBOR in entry {index}"))
        }
        ciborium::de::Error::Semantic(_, msg) => {
            SnapshotError::Malformed(format!("entry {index}: {}", clip(&msg)))
        }
        ciborium::de::Error::RecursionLimitExceeded => {
            SnapshotError::Malformed(format!("entry {index} nests too deeply"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The address book
// ---------------------------------------------------------------------------------------------

/// A bounded, deterministic store of peer addresses in new and tried tables (see the module
/// docs). One per node; every method is cheap enough to call on each event (at most a few
/// thousand entries are scanned by `select` and `sample`).
#[derive(Clone)]
pub struct AddressBook {
    config: AddressBookConfig,
    seed: [u8; 32],
    new_bucket_cap: usize,
    tried_bucket_cap: usize,
    entries: BTreeMap<SocketAddr, Entry>,
    new_table: Vec<BTreeSet<SocketAddr>>,
    tried_table: Vec<BTreeSet<SocketAddr>>,
    new_count: usize,
    tried_count: usize,
    /// Entries by kind of source (see `AddrSource::kind_index`), kept by `link` and
    /// `unlink` so [`AddressBook::stats`] need not visit every entry.
    by_source_kind: [usize; 4],
    /// New entries per capped source group.
    by_source: BTreeMap<SourceKey, BTreeSet<SocketAddr>>,
    /// Internal clock = caller's clock + offset; `None` for a restored book that has not yet
    /// seen a clock reading.
    offset: Option<u64>,
    /// The latest internal clock reading.
    latest: u64,
    rejected: u64,
    refused: u64,
    evicted: u64,
    forgotten: u64,
}

impl fmt::Debug for AddressBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The seed keys bucket placement: keep it out of logs.
        f.debug_struct("AddressBook")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl AddressBook {
    /// An empty book. `seed` keys the bucket placement hash: draw it from OS entropy (or the
    /// node's seeded generator) and keep it secret, so peers cannot predict which bucket an
    /// address lands in. `config` should have passed [`AddressBookConfig::validate`]; values
    /// out of range are clamped so this never panics.
    pub fn new(config: AddressBookConfig, seed: [u8; 32]) -> Self {
        let new_buckets = config.new_buckets.clamp(1, MAX_BUCKETS);
        let tried_buckets = config.tried_buckets.clamp(1, MAX_BUCKETS);
        AddressBook {
            new_bucket_cap: config.max_new.min(MAX_TABLE_SIZE) / new_buckets,
            tried_bucket_cap: config.max_tried.min(MAX_TABLE_SIZE) / tried_buckets,
            config,
            seed,
            entries: BTreeMap::new(),
            new_table: vec![BTreeSet::new(); new_buckets],
            tried_table: vec![BTreeSet::new(); tried_buckets],
            new_count: 0,
            by_source_kind: [0; 4],
            tried_count: 0,
            by_source: BTreeMap::new(),
            offset: Some(0),
            latest: 0,
            rejected: 0,
            refused: 0,
            evicted: 0,
            forgotten: 0,
        }
    }

    /// The configuration the book was built with.
    pub fn config(&self) -> &AddressBookConfig {
        &self.config
    }

    /// Records that `addr` was heard of from `source` at `now`. Call it for bootstrap and
    /// manual addresses at start-up, for every address in a Peers message
    /// (`AddrSource::Peer(sender_ip)`) and for an inbound peer's listen address.
    ///
    /// Returns true if the address is new to the book. A known address gets `last_seen`
    /// updated, its source upgraded if `source` is an operator source, and an identity if
    /// `addr` is pinned and `source` is not peer gossip. Undialable addresses (port 0,
    /// unspecified, multicast, broadcast IP) are rejected and counted. Never exceeds the
    /// configured bounds: when the address's bucket or its source group is full, the worst
    /// entry there is evicted ("terrible" first, else the oldest); an address learned from
    /// peers never evicts a bootstrap or manual one and is refused instead.
    pub fn add(&mut self, now: Timestamp, addr: PeerAddr, source: AddrSource) -> bool {
        self.observe(now);
        let now = self.internal(now);
        let offset = self.view_offset();
        let socket = canonical_socket(addr.socket);
        if invalid_reason(&socket).is_some() {
            self.rejected += 1;
            return false;
        }
        if let Some(entry) = self.entries.get_mut(&socket) {
            entry.seen = entry.seen.max(now);
            if let Some(id) = addr.peer_id {
                // Gossip about a known address must not re-pin it (that would make us fail
                // to reach the real node there); the operator and the node itself may.
                if !matches!(source, AddrSource::Peer(_)) {
                    entry.info.peer_id = Some(id);
                }
            }
            entry.sync(offset);
            if source.rank() > entry.info.source.rank() {
                if entry.info.in_tried {
                    self.by_source_kind[entry.info.source.kind_index()] -= 1;
                    self.by_source_kind[source.kind_index()] += 1;
                    entry.info.source = source;
                } else if let Some(mut moved) = self.unlink(&socket) {
                    // The source decides the new bucket: re-place it.
                    moved.info.source = source;
                    if !self.insert_new(now, socket, moved) {
                        self.evicted += 1;
                    }
                }
            }
            return false;
        }
        let entry = Entry::fresh(now, source, addr.peer_id);
        if self.insert_new(now, socket, entry) {
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Records a dial attempt to `addr` at `now` (call it when the connection is started).
    /// [`AddressBook::select`] then skips the address for `retry_interval_secs` unless the attempt succeeds. Unknown
    /// addresses are ignored.
    pub fn mark_attempt(&mut self, now: Timestamp, addr: &SocketAddr) {
        self.observe(now);
        let now = self.internal(now);
        let offset = self.view_offset();
        if let Some(entry) = self.entries.get_mut(&canonical_socket(*addr)) {
            entry.tried = Some(entry.tried.map_or(now, |t| t.max(now)));
            entry.sync(offset);
        }
    }

    /// Records a completed outbound handshake with `peer` at `addr`: clears the failure
    /// count, records the identity, and moves the address into the tried table. If its tried
    /// bucket is full, the worst entry there moves back to new (bootstrap and manual entries
    /// are only displaced by other bootstrap or manual ones; if the bucket holds nothing else
    /// the address stays in new). Unknown addresses are ignored: `add` them first.
    pub fn mark_success(&mut self, now: Timestamp, addr: &SocketAddr, peer: PeerId) {
        self.observe(now);
        let now = self.internal(now);
        let offset = self.view_offset();
        let socket = canonical_socket(*addr);
        let Some(entry) = self.entries.get_mut(&socket) else {
            return;
        };
        entry.success = Some(now);
        entry.tried = Some(entry.tried.map_or(now, |t| t.max(now)));
        entry.seen = entry.seen.max(now);
        entry.info.failures = 0;
        entry.info.peer_id = Some(peer);
        entry.sync(offset);
        if entry.info.in_tried {
            return;
        }
        let protected = entry.info.source.is_protected();
        let bucket = self.tried_bucket(&socket);
        let victim = match self.tried_table.get(bucket) {
            Some(set) if set.len() >= self.tried_bucket_cap => {
                match self.victim(now, set, protected) {
                    Some(v) => Some(v),
                    None => return, // stays in new
                }
            }
            Some(_) => None,
            None => return,
        };
        let Some(mut moving) = self.unlink(&socket) else {
            return;
        };
        let demoted = victim.and_then(|v| self.unlink(&v).map(|e| (v, e)));
        moving.info.in_tried = true;
        moving.bucket = bucket;
        self.link(socket, moving);
        if let Some((v, demoted)) = demoted {
            if !self.insert_new(now, v, demoted) {
                self.evicted += 1;
            }
        }
    }

    /// Records a failed dial or handshake with `addr` at `now`. A peer-learned address that
    /// is not in tried is forgotten once it has failed `max_failures` times since its last
    /// success; tried, bootstrap and manual addresses are kept but weighted down in
    /// [`AddressBook::select`]. Unknown addresses are ignored.
    pub fn mark_failure(&mut self, now: Timestamp, addr: &SocketAddr) {
        self.observe(now);
        let now = self.internal(now);
        let offset = self.view_offset();
        let socket = canonical_socket(*addr);
        let max_failures = self.config.max_failures.max(1);
        let Some(entry) = self.entries.get_mut(&socket) else {
            return;
        };
        entry.info.failures = entry.info.failures.saturating_add(1);
        entry.tried = Some(entry.tried.map_or(now, |t| t.max(now)));
        entry.sync(offset);
        if !entry.info.in_tried
            && !entry.info.source.is_protected()
            && entry.info.failures >= max_failures
        {
            self.unlink(&socket);
            self.forgotten += 1;
        }
    }

    /// Forgets `addr` entirely, whatever its source (for example, an operator's "remove peer"
    /// or an address found to be our own). Returns whether it was known.
    pub fn remove(&mut self, addr: &SocketAddr) -> bool {
        self.unlink(&canonical_socket(*addr)).is_some()
    }

    /// Chooses an address to dial at `now`, or `None` if no address qualifies.
    ///
    /// Skips addresses attempted in the last `retry_interval_secs` and those `exclude`
    /// returns true for (already connected, banned, being dialled). Prefers addresses whose
    /// netgroup is not in `avoid_groups` (pass the groups of current outbound peers) and
    /// falls back to the others only when none is left. Among the candidates, draws from
    /// tried or new with equal chance (when both have one), then picks an address weighted
    /// by ≈ 0.66^failures. The address is returned pinned to its known identity, if any.
    pub fn select(
        &self,
        now: Timestamp,
        rng: &mut SeededRng,
        exclude: impl Fn(&PeerAddr) -> bool,
        avoid_groups: &BTreeSet<NetGroup>,
    ) -> Option<PeerAddr> {
        let now = self.internal(now);
        let retry = self
            .config
            .retry_interval_secs
            .saturating_mul(NANOS_PER_SEC);
        // pools[fallback][tried]
        let mut pools: [[Vec<(PeerAddr, u64)>; 2]; 2] = Default::default();
        for (socket, entry) in &self.entries {
            // A recent attempt that failed waits out the retry interval; one that succeeded
            // (a peer we lost, or knew before a restart) may be dialed again at once.
            let failed_recently = entry.tried.is_some_and(|t| {
                now.saturating_sub(t) < retry && entry.success.is_none_or(|s| s < t)
            });
            if failed_recently {
                continue;
            }
            let addr = PeerAddr {
                peer_id: entry.info.peer_id,
                socket: *socket,
            };
            if exclude(&addr) {
                continue;
            }
            let fallback = avoid_groups.contains(&netgroup(socket.ip()));
            let weight = FAILURE_WEIGHTS[(entry.info.failures as usize).min(8)];
            pools[usize::from(fallback)][usize::from(entry.info.in_tried)].push((addr, weight));
        }
        let [diverse, fallback] = &pools;
        let level = if diverse.iter().any(|p| !p.is_empty()) {
            diverse
        } else {
            fallback
        };
        let [new, tried] = level;
        let pool = match (new.is_empty(), tried.is_empty()) {
            (true, true) => return None,
            (false, true) => new,
            (true, false) => tried,
            (false, false) => {
                if rng.below(2) == 0 {
                    tried
                } else {
                    new
                }
            }
        };
        let total: u64 = pool.iter().map(|(_, w)| w).sum();
        let mut pick = rng.below(total);
        for (addr, weight) in pool {
            if pick < *weight {
                return Some(*addr);
            }
            pick -= weight;
        }
        pool.last().map(|(addr, _)| *addr)
    }

    /// Up to `max` addresses, in random order, for answering a GetPeers request. Terrible
    /// entries (not seen within the horizon, or failing) are left out, and the draw is from
    /// the `2 × max` most recently seen entries, so answers favour live addresses while not
    /// revealing the whole book. Addresses carry their known identity.
    pub fn sample(&self, rng: &mut SeededRng, max: usize) -> Vec<PeerAddr> {
        if max == 0 {
            return Vec::new();
        }
        let now = self.latest;
        // The `2 × max` best by (most recently seen, then address), kept in a heap whose
        // top is the worst of them: one pass, and memory for the answer's pool only, not
        // for the whole book (a node answers a GetPeers from each peer every few minutes).
        let keep = max.saturating_mul(2);
        let mut best: BinaryHeap<(Reverse<u64>, SocketAddr)> =
            BinaryHeap::with_capacity(keep.min(self.entries.len()));
        for (socket, e) in &self.entries {
            if self.is_terrible(e, now) {
                continue;
            }
            let rank = (Reverse(e.seen), *socket);
            if best.len() < keep {
                best.push(rank);
            } else if let Some(mut worst) = best.peek_mut() {
                if rank < *worst {
                    *worst = rank;
                }
            }
        }
        let mut pool = best.into_sorted_vec();
        let k = max.min(pool.len());
        for i in 0..k {
            let span = (pool.len() - i) as u64;
            let j = i + rng.below(span) as usize;
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool.into_iter()
            .map(|(_, socket)| PeerAddr {
                peer_id: self.entries.get(&socket).and_then(|e| e.info.peer_id),
                socket,
            })
            .collect()
    }

    /// Number of known addresses (new + tried); at most `max_new + max_tried`.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `addr` is known (IPv4-mapped IPv6 and IPv4 forms are the same address).
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.entries.contains_key(&canonical_socket(*addr))
    }

    /// What the book knows about `addr`, if anything.
    pub fn get(&self, addr: &SocketAddr) -> Option<&AddrInfo> {
        self.entries
            .get(&canonical_socket(*addr))
            .map(|entry| &entry.info)
    }

    /// Every known address with its metadata, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &AddrInfo)> + '_ {
        self.entries
            .iter()
            .map(|(socket, entry)| (*socket, &entry.info))
    }

    /// Current counts, for metrics.
    pub fn stats(&self) -> AddressBookStats {
        let stats = AddressBookStats {
            known: self.entries.len(),
            new: self.new_count,
            tried: self.tried_count,
            rejected: self.rejected,
            refused: self.refused,
            evicted: self.evicted,
            forgotten: self.forgotten,
            bootstrap: self.by_source_kind[0],
            manual: self.by_source_kind[1],
            peer: self.by_source_kind[2],
            inbound: self.by_source_kind[3],
        };
        debug_assert_eq!(self.by_source_kind, {
            let mut by_kind = [0usize; 4];
            for entry in self.entries.values() {
                by_kind[entry.info.source.kind_index()] += 1;
            }
            by_kind
        });
        stats
    }

    /// The book as CBOR bytes ([`AddressBookSnapshot`]), for persisting across restarts.
    /// Times are stored as ages relative to the latest clock reading the book was given.
    /// Counters ([`AddressBook::stats`]) and bucket positions are not stored.
    pub fn snapshot(&self) -> Vec<u8> {
        let reference = self.latest;
        let age_ms = |t: u64| reference.saturating_sub(t) / NANOS_PER_MILLI;
        let entries = self
            .entries
            .iter()
            .map(|(socket, e)| SnapshotEntry {
                addr: socket.to_string(),
                peer_id: e.info.peer_id.map(|id| id.to_string()),
                source: e.info.source.into(),
                last_seen_age_ms: age_ms(e.seen),
                last_tried_age_ms: e.tried.map(age_ms),
                last_success_age_ms: e.success.map(age_ms),
                failures: e.info.failures,
                tried: e.info.in_tried,
            })
            .collect();
        let snapshot = AddressBookSnapshot {
            version: SNAPSHOT_VERSION,
            entries,
        };
        let mut out = Vec::new();
        ciborium::into_writer(&snapshot, &mut out)
            .expect("writing plain data to a Vec<u8> cannot fail");
        out
    }

    /// A book rebuilt from [`AddressBook::snapshot`] bytes, with `config` and `seed` (which
    /// may differ from the ones the snapshot was taken with).
    ///
    /// Every bound is re-applied: entries are placed one by one as if added, so a snapshot
    /// holding any number of entries yields a book within `config`'s limits (tried entries
    /// whose tried bucket is full go to new; entries that do not fit are evicted or refused
    /// as in [`AddressBook::add`]). Entries are decoded one at a time and no allocation
    /// depends on a declared length, so memory use is bounded by the book plus the input.
    /// Any defect is a [`SnapshotError`] naming it, never a panic.
    ///
    /// Ages are re-anchored at the first clock reading the book receives (the first `add`,
    /// `mark_*` call): restored times are that reading minus their age. Until then,
    /// [`AddrInfo`] shows them as [`Timestamp::ZERO`] and `select` treats "now" as the
    /// snapshot moment.
    pub fn restore(
        config: AddressBookConfig,
        seed: [u8; 32],
        bytes: &[u8],
    ) -> Result<AddressBook, SnapshotError> {
        let mut book = AddressBook::new(config, seed);
        book.offset = None;
        book.latest = RESTORE_REFERENCE;
        let mut input = bytes;
        let (major, fields) = read_head(&mut input)?;
        if major != MAJOR_MAP {
            return Err(SnapshotError::Malformed(format!(
                "a snapshot is a CBOR map, found major type {major}"
            )));
        }
        if fields != 2 {
            return Err(SnapshotError::Malformed(format!(
                "a snapshot map has 2 keys, found {fields}"
            )));
        }
        expect_key(&mut input, "version")?;
        let (major, version) = read_head(&mut input)?;
        if major != MAJOR_UINT {
            return Err(SnapshotError::Malformed(
                "the version is not an unsigned integer".into(),
            ));
        }
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::WrongVersion {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        expect_key(&mut input, "entries")?;
        let (major, count) = read_head(&mut input)?;
        if major != MAJOR_ARRAY {
            return Err(SnapshotError::Malformed(format!(
                "entries is not an array (major type {major})"
            )));
        }
        for index in 0..count {
            let entry: SnapshotEntry =
                ciborium::from_reader(&mut input).map_err(|err| entry_decode_error(index, err))?;
            book.restore_entry(index, entry)?;
        }
        if !input.is_empty() {
            return Err(SnapshotError::Malformed(format!(
                "{} trailing bytes after the snapshot",
                input.len()
            )));
        }
        Ok(book)
    }

    // -- internals ----------------------------------------------------------------------------

    fn restore_entry(&mut self, index: u64, e: SnapshotEntry) -> Result<(), SnapshotError> {
        let bad = |reason: String| SnapshotError::InvalidEntry { index, reason };
        let socket: SocketAddr = e
            .addr
            .parse()
            .map_err(|_| bad(format!("{:?} is not ip:port", clip(&e.addr))))?;
        let socket = canonical_socket(socket);
        if let Some(reason) = invalid_reason(&socket) {
            return Err(bad(format!("{socket} is not dialable: {reason}")));
        }
        let peer_id = match &e.peer_id {
            None => None,
            Some(text) => Some(
                text.parse::<PeerId>()
                    .map_err(|err| bad(format!("peer_id: {err}")))?,
            ),
        };
        let source = match &e.source {
            SnapshotSource::Bootstrap => AddrSource::Bootstrap,
            SnapshotSource::Manual => AddrSource::Manual,
            SnapshotSource::Inbound => AddrSource::Inbound,
            SnapshotSource::Peer(ip) => AddrSource::Peer(
                ip.parse()
                    .map_err(|_| bad(format!("source peer {:?} is not an IP", clip(ip))))?,
            ),
        };
        if e.tried && e.last_success_age_ms.is_none() {
            return Err(bad("a tried entry has no last_success_age_ms".into()));
        }
        if self.entries.contains_key(&socket) {
            return Err(bad(format!("duplicate address {socket}")));
        }
        let stamp =
            |age_ms: u64| RESTORE_REFERENCE.saturating_sub(age_ms.saturating_mul(NANOS_PER_MILLI));
        let mut entry = Entry::fresh(stamp(e.last_seen_age_ms), source, peer_id);
        entry.tried = e.last_tried_age_ms.map(stamp);
        entry.success = e.last_success_age_ms.map(stamp);
        entry.info.failures = e.failures;
        let now = self.latest;
        if e.tried {
            let bucket = self.tried_bucket(&socket);
            if self
                .tried_table
                .get(bucket)
                .is_some_and(|set| set.len() < self.tried_bucket_cap)
            {
                entry.info.in_tried = true;
                entry.bucket = bucket;
                self.link(socket, entry);
                return Ok(());
            }
        }
        if !self.insert_new(now, socket, entry) {
            self.refused += 1;
        }
        Ok(())
    }

    /// Moves the internal clock forward to `now` (anchoring a restored book on first use).
    fn observe(&mut self, now: Timestamp) {
        if self.offset.is_none() {
            let offset = RESTORE_REFERENCE.saturating_sub(now.as_nanos());
            self.offset = Some(offset);
            for entry in self.entries.values_mut() {
                entry.sync(offset);
            }
        }
        let now = self.internal(now);
        self.latest = self.latest.max(now);
    }

    /// `now` on the internal clock (the snapshot moment for a restored book not yet anchored).
    fn internal(&self, now: Timestamp) -> u64 {
        match self.offset {
            Some(offset) => now.as_nanos().saturating_add(offset),
            None => self.latest,
        }
    }

    /// The offset used to show internal times on the caller's clock.
    fn view_offset(&self) -> u64 {
        self.offset.unwrap_or(RESTORE_REFERENCE)
    }

    fn hash(&self, tag: &[u8], parts: &[&[u8]]) -> u64 {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update([tag.len() as u8]);
        h.update(tag);
        for part in parts {
            h.update([part.len() as u8]);
            h.update(part);
        }
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    /// The new bucket for an address of `group` learned from `key`: one bucket per
    /// (source, address group) pair, at most 8 per source.
    fn new_bucket(&self, key: SourceKey, group: NetGroup) -> usize {
        let key = key.encode();
        let slot = self.hash(b"addrbook/new-slot", &[&key, &group.encode()])
            % NEW_BUCKETS_PER_SOURCE_GROUP;
        let h = self.hash(b"addrbook/new", &[&key, &slot.to_le_bytes()]);
        (h % self.new_table.len() as u64) as usize
    }

    /// The tried bucket of `socket`: at most 8 per address group.
    fn tried_bucket(&self, socket: &SocketAddr) -> usize {
        let slot =
            self.hash(b"addrbook/tried-slot", &[&socket_bytes(socket)]) % TRIED_BUCKETS_PER_GROUP;
        let group = netgroup(socket.ip()).encode();
        let h = self.hash(b"addrbook/tried", &[&group, &slot.to_le_bytes()]);
        (h % self.tried_table.len() as u64) as usize
    }

    /// addrman's "terrible": safe to evict, not worth sharing.
    fn is_terrible(&self, entry: &Entry, now: u64) -> bool {
        let age = |t: u64| now.saturating_sub(t);
        if entry.tried.is_some_and(|t| age(t) < RECENT_ATTEMPT_NANOS) {
            return false;
        }
        if age(entry.seen) > self.config.horizon_secs.saturating_mul(NANOS_PER_SEC) {
            return true;
        }
        match entry.success {
            None => entry.info.failures >= TERRIBLE_FAILURES.min(self.config.max_failures.max(1)),
            Some(success) => {
                entry.info.failures >= TRIED_TERRIBLE_FAILURES
                    && age(success) > TRIED_TERRIBLE_AGE_NANOS
            }
        }
    }

    /// The entry among `candidates` to evict: unprotected before protected (protected ones
    /// only if the newcomer is protected), terrible before not, oldest first, then by address.
    fn victim<'a>(
        &self,
        now: u64,
        candidates: impl IntoIterator<Item = &'a SocketAddr>,
        incoming_protected: bool,
    ) -> Option<SocketAddr> {
        candidates
            .into_iter()
            .filter_map(|socket| {
                let entry = self.entries.get(socket)?;
                let protected = entry.info.source.is_protected();
                if protected && !incoming_protected {
                    return None;
                }
                Some((
                    protected,
                    !self.is_terrible(entry, now),
                    entry.staleness_stamp(),
                    *socket,
                ))
            })
            .min()
            .map(|(_, _, _, socket)| socket)
    }

    fn evict(&mut self, socket: &SocketAddr) {
        if self.unlink(socket).is_some() {
            self.evicted += 1;
        }
    }

    /// Places `entry` in its new bucket, evicting to make room; false if there is none.
    fn insert_new(&mut self, now: u64, socket: SocketAddr, mut entry: Entry) -> bool {
        let key = SourceKey::of(&entry.info.source, &socket);
        let bucket = self.new_bucket(key, netgroup(socket.ip()));
        let protected = entry.info.source.is_protected();
        let bucket_full = |book: &Self| !matches!(book.new_table.get(bucket), Some(set) if set.len() < book.new_bucket_cap);
        // Refuse before evicting anything if the bucket can never make room.
        let bucket_victim = if bucket_full(self) {
            match self
                .new_table
                .get(bucket)
                .and_then(|set| self.victim(now, set, protected))
            {
                Some(v) => Some(v),
                None => return false,
            }
        } else {
            None
        };
        if key.capped() {
            let held = self.by_source.get(&key).map_or(0, BTreeSet::len);
            if held >= self.config.max_per_source_group {
                let victim = self
                    .by_source
                    .get(&key)
                    .and_then(|set| self.victim(now, set, false));
                match victim {
                    Some(v) => self.evict(&v),
                    None => return false,
                }
            }
        }
        if bucket_full(self) {
            // The source eviction did not free this bucket, so its victim is still there and
            // still the worst (an entry's rank does not depend on the others).
            match bucket_victim {
                Some(v) => self.evict(&v),
                None => return false,
            }
        }
        entry.info.in_tried = false;
        entry.bucket = bucket;
        self.link(socket, entry);
        true
    }

    /// Adds `entry` to the map and to the table, bucket and source index it names.
    fn link(&mut self, socket: SocketAddr, mut entry: Entry) {
        self.by_source_kind[entry.info.source.kind_index()] += 1;
        if entry.info.in_tried {
            if let Some(set) = self.tried_table.get_mut(entry.bucket) {
                set.insert(socket);
                self.tried_count += 1;
            }
        } else {
            if let Some(set) = self.new_table.get_mut(entry.bucket) {
                set.insert(socket);
                self.new_count += 1;
            }
            let key = SourceKey::of(&entry.info.source, &socket);
            if key.capped() {
                self.by_source.entry(key).or_default().insert(socket);
            }
        }
        entry.sync(self.view_offset());
        self.entries.insert(socket, entry);
    }

    /// Removes `socket` from the map, its table, bucket and source index.
    fn unlink(&mut self, socket: &SocketAddr) -> Option<Entry> {
        let entry = self.entries.remove(socket)?;
        self.by_source_kind[entry.info.source.kind_index()] -= 1;
        if entry.info.in_tried {
            if let Some(set) = self.tried_table.get_mut(entry.bucket) {
                if set.remove(socket) {
                    self.tried_count -= 1;
                }
            }
        } else {
            if let Some(set) = self.new_table.get_mut(entry.bucket) {
                if set.remove(socket) {
                    self.new_count -= 1;
                }
            }
            let key = SourceKey::of(&entry.info.source, socket);
            if let Some(set) = self.by_source.get_mut(&key) {
                set.remove(socket);
                if set.is_empty() {
                    self.by_source.remove(&key);
                }
            }
        }
        Some(entry)
    }

    /// Every structural invariant, for tests.
    #[cfg(test)]
    fn check(&self) -> Result<(), String> {
        let mut new = 0;
        let mut tried = 0;
        for (i, set) in self.new_table.iter().enumerate() {
            if set.len() > self.new_bucket_cap {
                return Err(format!("new bucket {i} holds {}", set.len()));
            }
            for s in set {
                let e = self
                    .entries
                    .get(s)
                    .ok_or_else(|| format!("{s} in new bucket, not in map"))?;
                let key = SourceKey::of(&e.info.source, s);
                if e.info.in_tried || e.bucket != i || self.new_bucket(key, netgroup(s.ip())) != i {
                    return Err(format!("{s} misplaced in new bucket {i}"));
                }
            }
            new += set.len();
        }
        for (i, set) in self.tried_table.iter().enumerate() {
            if set.len() > self.tried_bucket_cap {
                return Err(format!("tried bucket {i} holds {}", set.len()));
            }
            for s in set {
                let e = self
                    .entries
                    .get(s)
                    .ok_or_else(|| format!("{s} in tried, not in map"))?;
                if !e.info.in_tried || e.bucket != i || self.tried_bucket(s) != i {
                    return Err(format!("{s} misplaced in tried bucket {i}"));
                }
                if e.success.is_none() {
                    return Err(format!("{s} in tried without a success"));
                }
            }
            tried += set.len();
        }
        if new != self.new_count || tried != self.tried_count {
            return Err("table counters disagree".into());
        }
        if new + tried != self.entries.len() {
            return Err("map and tables disagree".into());
        }
        if new > self.config.max_new || tried > self.config.max_tried {
            return Err(format!("tables exceed bounds: new {new}, tried {tried}"));
        }
        let mut indexed = 0;
        for (key, set) in &self.by_source {
            if set.len() > self.config.max_per_source_group || set.is_empty() {
                return Err(format!("source {key:?} holds {}", set.len()));
            }
            for s in set {
                let e = self.entries.get(s).ok_or("source index dangling")?;
                if e.info.in_tried || SourceKey::of(&e.info.source, s) != *key {
                    return Err(format!("{s} wrongly indexed under {key:?}"));
                }
            }
            indexed += set.len();
        }
        let capped = self
            .entries
            .iter()
            .filter(|(s, e)| !e.info.in_tried && SourceKey::of(&e.info.source, s).capped())
            .count();
        if capped != indexed {
            return Err("source index incomplete".into());
        }
        for (s, e) in &self.entries {
            if invalid_reason(s).is_some() || canonical_socket(*s) != *s {
                return Err(format!("{s} should not be stored"));
            }
            let mut copy = e.clone();
            copy.sync(self.view_offset());
            if copy.info != e.info {
                return Err(format!("{s} view out of sync"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const SEED: [u8; 32] = [7; 32];

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn pa(s: &str) -> PeerAddr {
        PeerAddr::new(sa(s))
    }
    fn t(secs: u64) -> Timestamp {
        Timestamp::from_secs(secs)
    }
    fn peer(ip: &str) -> AddrSource {
        AddrSource::Peer(ip.parse().unwrap())
    }
    fn id(n: u8) -> PeerId {
        PeerId::from_public_key([n; 32])
    }
    fn rng() -> SeededRng {
        SeededRng::from_seed([9; 32])
    }
    fn none() -> BTreeSet<NetGroup> {
        BTreeSet::new()
    }
    fn book(config: AddressBookConfig) -> AddressBook {
        config.validate().unwrap();
        AddressBook::new(config, SEED)
    }
    fn small(max_new: usize, new_buckets: usize) -> AddressBookConfig {
        AddressBookConfig {
            max_new,
            new_buckets,
            max_per_source_group: 1000,
            max_failures: 10,
            ..AddressBookConfig::default()
        }
    }

    #[test]
    fn netgroups() {
        let g = |s: &str| netgroup(s.parse().unwrap());
        assert_eq!(g("1.2.3.4"), NetGroup::V4([1, 2]));
        assert_eq!(g("1.2.200.9"), g("1.2.3.4"));
        assert_ne!(g("1.3.3.4"), g("1.2.3.4"));
        assert_eq!(g("::ffff:1.2.3.4"), g("1.2.3.4"));
        assert_eq!(g("2001:db8:1:2::1"), NetGroup::V6([0x20, 0x01, 0x0d, 0xb8]));
        assert_eq!(g("2001:db8:ffff::1"), g("2001:db8::1"));
        assert_ne!(g("2001:db9::1"), g("2001:db8::1"));
        assert_eq!(g("127.0.0.1"), g("127.0.0.2"));
        assert_eq!(g("10.0.0.1"), NetGroup::V4([10, 0]));
        assert_eq!(g("1.2.3.4").to_string(), "1.2.0.0/16");
        assert_eq!(g("2001:db8::1").to_string(), "2001:db8::/32");
    }

    #[test]
    fn config_defaults_validate_and_parse() {
        let c = AddressBookConfig::default();
        assert_eq!(c.max_new, 4096);
        assert_eq!(c.max_tried, 1024);
        assert_eq!(c.max_per_source_group, 64);
        assert_eq!(c.max_failures, 5);
        assert_eq!(c.horizon_secs, 30 * 24 * 3600);
        c.validate().unwrap();
        let parsed: AddressBookConfig = toml::from_str("max_new = 100\nnew_buckets = 4").unwrap();
        assert_eq!(parsed.max_new, 100);
        assert_eq!(parsed.max_tried, 1024);
        parsed.validate().unwrap();
        assert!(toml::from_str::<AddressBookConfig>("max_nwe = 1").is_err());
        let err = AddressBookConfig {
            new_buckets: 5000,
            ..c.clone()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "address_book.new_buckets");
        let err = AddressBookConfig {
            max_new: 0,
            ..c.clone()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "address_book.max_new");
        for (bad, field) in [
            (
                AddressBookConfig {
                    max_per_source_group: 0,
                    ..c.clone()
                },
                "address_book.max_per_source_group",
            ),
            (
                AddressBookConfig {
                    max_failures: 0,
                    ..c.clone()
                },
                "address_book.max_failures",
            ),
            (
                AddressBookConfig {
                    horizon_secs: 0,
                    ..c.clone()
                },
                "address_book.horizon_secs",
            ),
            (
                AddressBookConfig {
                    tried_buckets: 0,
                    ..c.clone()
                },
                "address_book.tried_buckets",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().field, field);
        }
        // An invalid config never panics the constructor.
        let mut b = AddressBook::new(
            AddressBookConfig {
                max_new: 0,
                new_buckets: 0,
                max_tried: 0,
                tried_buckets: 0,
                max_per_source_group: 0,
                max_failures: 0,
                ..c
            },
            SEED,
        );
        assert!(!b.add(t(1), pa("1.2.3.4:1"), AddrSource::Bootstrap));
        b.check().unwrap();
    }

    #[test]
    fn add_rejects_undialable_and_counts() {
        let mut b = book(AddressBookConfig::default());
        for bad in [
            "1.2.3.4:0",
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[ff02::1]:80",
            "[::ffff:0.0.0.0]:80",
        ] {
            assert!(!b.add(t(1), pa(bad), peer("9.9.9.9")), "{bad}");
        }
        assert!(b.is_empty());
        assert_eq!(b.stats().rejected, 7);
    }

    #[test]
    fn add_new_then_known_updates_last_seen_and_canonicalises() {
        let mut b = book(AddressBookConfig::default());
        assert!(b.add(t(1), pa("1.2.3.4:80"), peer("9.9.9.9")));
        assert!(!b.add(t(5), pa("[::ffff:1.2.3.4]:80"), peer("8.8.8.8")));
        assert_eq!(b.len(), 1);
        assert!(b.contains(&sa("[::ffff:1.2.3.4]:80")));
        let info = b.get(&sa("1.2.3.4:80")).unwrap();
        assert_eq!(info.last_seen, t(5));
        assert_eq!(info.source, peer("9.9.9.9"), "first peer source is kept");
        assert!(!info.in_tried);
        // An operator source upgrades it (and protects it).
        assert!(!b.add(t(6), pa("1.2.3.4:80"), AddrSource::Manual));
        assert_eq!(b.get(&sa("1.2.3.4:80")).unwrap().source, AddrSource::Manual);
        let s = b.stats();
        assert_eq!((s.known, s.new, s.manual, s.peer), (1, 1, 1, 0));
        b.check().unwrap();
    }

    #[test]
    fn gossip_does_not_repin_but_the_peer_and_operator_may() {
        let mut b = book(AddressBookConfig::default());
        let a = sa("1.2.3.4:80");
        b.add(t(1), PeerAddr::pinned(id(1), a), peer("9.9.9.9"));
        assert_eq!(b.get(&a).unwrap().peer_id, Some(id(1)));
        b.add(t(2), PeerAddr::pinned(id(2), a), peer("8.8.8.8"));
        assert_eq!(b.get(&a).unwrap().peer_id, Some(id(1)));
        b.add(t(3), PeerAddr::pinned(id(3), a), AddrSource::Inbound);
        assert_eq!(b.get(&a).unwrap().peer_id, Some(id(3)));
        b.mark_success(t(4), &a, id(4));
        assert_eq!(b.get(&a).unwrap().peer_id, Some(id(4)));
        let chosen = b.select(t(1000), &mut rng(), |_| false, &none()).unwrap();
        assert_eq!(chosen, PeerAddr::pinned(id(4), a));
    }

    #[test]
    fn loopback_devnet_fits_with_defaults() {
        let mut b = book(AddressBookConfig::default());
        assert!(b.add(t(0), pa("127.0.0.1:9000"), AddrSource::Bootstrap));
        for i in 1..50u16 {
            let host = 1 + (i % 5) as u8;
            let addr = pa(&format!("127.0.0.{host}:{}", 9000 + i));
            let from = AddrSource::Peer(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 50) as u8)));
            assert!(b.add(t(1), addr, from), "{addr}");
        }
        assert!(b.add(t(1), pa("127.0.0.2:9000"), AddrSource::Inbound));
        assert_eq!(b.len(), 51);
        for i in 0..8u16 {
            b.mark_success(
                t(2),
                &sa(&format!("127.0.0.{}:{}", 1 + (i % 5), 9000 + i)),
                id(i as u8),
            );
        }
        assert_eq!(b.stats().tried, 8);
        assert!(b.select(t(100), &mut rng(), |_| false, &none()).is_some());
        b.check().unwrap();
    }

    #[test]
    fn one_source_group_is_capped_and_churns_only_itself() {
        let mut b = book(AddressBookConfig::default());
        // Another source's entries first.
        for i in 0..10u8 {
            b.add(t(0), pa(&format!("50.{i}.0.1:80")), peer("198.51.100.1"));
        }
        // A flood from one /16 (two IPs in it), addresses spread over 200 groups.
        for i in 0..200u32 {
            let from = if i % 2 == 0 {
                "203.0.113.7"
            } else {
                "203.0.200.8"
            };
            let addr = pa(&format!("{}.{}.1.1:80", 1 + i / 100, i % 100));
            assert!(b.add(t(1 + u64::from(i)), addr, peer(from)));
        }
        let flood = b
            .iter()
            .filter(|(_, i)| matches!(i.source, AddrSource::Peer(ip) if netgroup(ip) == NetGroup::V4([203, 0])))
            .count();
        assert_eq!(flood, 64);
        // The oldest of the flood went first; the other source is untouched.
        assert!(!b.contains(&sa("1.0.1.1:80")));
        assert!(b.contains(&sa("2.99.1.1:80")));
        for i in 0..10u8 {
            assert!(b.contains(&sa(&format!("50.{i}.0.1:80"))));
        }
        assert!(b.add(t(500), pa("60.0.0.1:80"), peer("198.51.100.1")));
        assert_eq!(b.len(), 75);
        b.check().unwrap();
    }

    #[test]
    fn full_bucket_evicts_terrible_then_oldest() {
        // One bucket of four.
        let mut b = book(small(4, 1));
        for (i, a) in ["1.0.0.1:1", "2.0.0.1:1", "3.0.0.1:1", "4.0.0.1:1"]
            .iter()
            .enumerate()
        {
            assert!(b.add(t(i as u64), pa(a), peer("9.9.9.9")));
        }
        for _ in 0..3 {
            b.mark_failure(t(10), &sa("3.0.0.1:1"));
        }
        // Right after the attempts 3.0.0.1 is not yet terrible: the oldest goes.
        assert!(b.add(t(20), pa("5.0.0.1:1"), peer("9.9.9.9")));
        assert!(!b.contains(&sa("1.0.0.1:1")));
        assert!(b.contains(&sa("3.0.0.1:1")));
        // A minute later it is, and goes before the (older) 2.0.0.1.
        assert!(b.add(t(100), pa("6.0.0.1:1"), peer("9.9.9.9")));
        assert!(!b.contains(&sa("3.0.0.1:1")));
        assert!(b.contains(&sa("2.0.0.1:1")));
        assert!(b.add(t(101), pa("7.0.0.1:1"), peer("9.9.9.9")));
        assert!(!b.contains(&sa("2.0.0.1:1")));
        assert_eq!(b.len(), 4);
        assert_eq!(b.stats().evicted, 3);
        // Beyond the horizon an entry is terrible too.
        let mut b = book(AddressBookConfig {
            horizon_secs: 50,
            ..small(2, 1)
        });
        b.add(t(0), pa("1.0.0.1:1"), peer("9.9.9.9"));
        b.add(t(100), pa("2.0.0.1:1"), peer("9.9.9.9"));
        b.add(t(100), pa("1.0.0.1:1"), peer("9.9.9.9")); // seen again: fresh
        b.add(t(200), pa("3.0.0.1:1"), peer("9.9.9.9"));
        assert!(b.contains(&sa("3.0.0.1:1")));
        assert_eq!(b.len(), 2);
        b.check().unwrap();
    }

    #[test]
    fn bootstrap_and_manual_are_never_evicted_by_peer_addresses() {
        let mut b = book(small(4, 1));
        for a in ["1.0.0.1:1", "2.0.0.1:1", "3.0.0.1:1"] {
            assert!(b.add(t(0), pa(a), AddrSource::Bootstrap));
        }
        assert!(b.add(t(0), pa("4.0.0.1:1"), AddrSource::Manual));
        for i in 0..20u8 {
            assert!(!b.add(t(10), pa(&format!("9.{i}.0.1:1")), peer("8.8.8.8")));
        }
        assert_eq!(b.stats().refused, 20);
        assert_eq!(b.stats().bootstrap, 3);
        assert_eq!(b.stats().manual, 1);
        // A bootstrap address evicts peer-learned ones first, even newer ones.
        assert!(b.remove(&sa("4.0.0.1:1")));
        assert!(b.add(t(20), pa("9.0.0.1:1"), peer("8.8.8.8")));
        assert!(b.add(t(30), pa("5.0.0.1:1"), AddrSource::Bootstrap));
        assert!(!b.contains(&sa("9.0.0.1:1")));
        assert_eq!(b.stats().bootstrap, 4);
        // Bootstrap failures never forget it.
        for _ in 0..50 {
            b.mark_failure(t(40), &sa("1.0.0.1:1"));
        }
        assert!(b.contains(&sa("1.0.0.1:1")));
        // In tried, a peer-learned address cannot displace a bootstrap one.
        let mut b = book(AddressBookConfig {
            max_tried: 1,
            tried_buckets: 1,
            ..AddressBookConfig::default()
        });
        b.add(t(0), pa("1.0.0.1:1"), AddrSource::Bootstrap);
        b.add(t(0), pa("2.0.0.1:1"), peer("8.8.8.8"));
        b.mark_success(t(1), &sa("1.0.0.1:1"), id(1));
        b.mark_success(t(2), &sa("2.0.0.1:1"), id(2));
        assert!(b.get(&sa("1.0.0.1:1")).unwrap().in_tried);
        let loser = b.get(&sa("2.0.0.1:1")).unwrap();
        assert!(!loser.in_tried);
        assert_eq!(loser.last_success, Some(t(2)));
        b.check().unwrap();
    }

    #[test]
    fn success_moves_to_tried_and_full_tried_bucket_demotes_the_oldest() {
        let mut b = book(AddressBookConfig {
            max_tried: 2,
            tried_buckets: 1,
            ..AddressBookConfig::default()
        });
        for a in ["1.0.0.1:1", "2.0.0.1:1", "3.0.0.1:1"] {
            b.add(t(0), pa(a), peer("8.8.8.8"));
        }
        b.mark_attempt(t(1), &sa("1.0.0.1:1"));
        b.mark_failure(t(1), &sa("1.0.0.1:1"));
        b.mark_success(t(2), &sa("1.0.0.1:1"), id(1));
        let info = b.get(&sa("1.0.0.1:1")).unwrap();
        assert!(info.in_tried);
        assert_eq!(info.failures, 0);
        assert_eq!(info.peer_id, Some(id(1)));
        assert_eq!(info.last_success, Some(t(2)));
        b.mark_success(t(3), &sa("2.0.0.1:1"), id(2));
        b.mark_success(t(4), &sa("3.0.0.1:1"), id(3));
        let s = b.stats();
        assert_eq!((s.tried, s.new, s.known), (2, 1, 3));
        let demoted = b.get(&sa("1.0.0.1:1")).unwrap();
        assert!(!demoted.in_tried);
        assert_eq!(demoted.last_success, Some(t(2)));
        // Unknown addresses are ignored.
        b.mark_success(t(5), &sa("7.7.7.7:7"), id(7));
        assert!(!b.contains(&sa("7.7.7.7:7")));
        b.check().unwrap();
    }

    #[test]
    fn failures_forget_unproven_and_deprioritise_tried() {
        let mut b = book(AddressBookConfig::default());
        let new = sa("1.0.0.1:1");
        b.add(t(0), new.into(), peer("8.8.8.8"));
        for _ in 0..4 {
            b.mark_failure(t(1), &new);
        }
        assert_eq!(b.get(&new).unwrap().failures, 4);
        b.mark_failure(t(1), &new);
        assert!(!b.contains(&new));
        assert_eq!(b.stats().forgotten, 1);

        let good = sa("2.0.0.1:1");
        let bad = sa("3.0.0.1:1");
        for a in [good, bad] {
            b.add(t(0), a.into(), peer("8.8.8.8"));
            b.mark_success(t(1), &a, id(1));
        }
        for _ in 0..20 {
            b.mark_failure(t(2), &bad);
        }
        assert!(b.get(&bad).unwrap().in_tried);
        assert_eq!(b.get(&bad).unwrap().failures, 20);
        let mut r = rng();
        let good_picks = (0..1000)
            .filter(|_| {
                b.select(t(1000), &mut r, |_| false, &none())
                    .unwrap()
                    .socket
                    == good
            })
            .count();
        assert!(good_picks > 900, "{good_picks}");
        b.check().unwrap();
    }

    #[test]
    fn select_prefers_tried_half_the_time() {
        let mut b = book(AddressBookConfig::default());
        for i in 0..20u8 {
            b.add(t(0), pa(&format!("{}.1.0.1:1", i + 1)), peer("8.8.8.8"));
        }
        let proven = sa("100.1.0.1:1");
        b.add(t(0), proven.into(), peer("8.8.8.8"));
        b.mark_success(t(0), &proven, id(1));
        let mut r = rng();
        let tried = (0..1000)
            .filter(|_| {
                b.select(t(1000), &mut r, |_| false, &none())
                    .unwrap()
                    .socket
                    == proven
            })
            .count();
        assert!((400..600).contains(&tried), "{tried}");
        // With only new entries it still selects.
        b.remove(&proven);
        assert!(b.select(t(1000), &mut r, |_| false, &none()).is_some());
        assert!(AddressBook::new(AddressBookConfig::default(), SEED)
            .select(t(0), &mut r, |_| false, &none())
            .is_none());
    }

    #[test]
    fn select_spreads_over_groups_skips_excluded_and_recent() {
        let mut b = book(AddressBookConfig::default());
        for i in 1..=10u8 {
            b.add(t(0), pa(&format!("1.1.0.{i}:1")), peer("8.8.8.8"));
        }
        let lone = sa("2.2.0.1:1");
        b.add(t(0), lone.into(), peer("8.8.8.8"));
        let crowded: BTreeSet<NetGroup> = [netgroup("1.1.0.1".parse().unwrap())].into();
        let mut r = rng();
        for _ in 0..50 {
            assert_eq!(
                b.select(t(10), &mut r, |_| false, &crowded).unwrap().socket,
                lone
            );
        }
        // When only avoided groups are left, fall back to them.
        let a = b
            .select(t(10), &mut r, |p| p.socket == lone, &crowded)
            .unwrap();
        assert_eq!(netgroup(a.ip()), NetGroup::V4([1, 1]));
        let both: BTreeSet<NetGroup> = [NetGroup::V4([1, 1]), NetGroup::V4([2, 2])].into();
        assert!(b.select(t(10), &mut r, |_| false, &both).is_some());
        // Excluding everything yields nothing.
        assert!(b.select(t(10), &mut r, |_| true, &none()).is_none());
        // Recently attempted addresses are skipped until retry_interval_secs has passed.
        for i in 1..=10u8 {
            b.mark_attempt(t(100), &sa(&format!("1.1.0.{i}:1")));
        }
        for _ in 0..50 {
            assert_eq!(
                b.select(t(130), &mut r, |_| false, &none()).unwrap().socket,
                lone
            );
        }
        b.mark_attempt(t(100), &lone);
        assert!(b.select(t(159), &mut r, |_| false, &none()).is_none());
        assert!(b.select(t(160), &mut r, |_| false, &none()).is_some());
    }

    #[test]
    fn select_is_deterministic_for_a_seed() {
        let mut b = book(AddressBookConfig::default());
        for i in 0..100u8 {
            b.add(
                t(0),
                pa(&format!("{}.{}.0.1:1", i % 7 + 1, i)),
                peer("8.8.8.8"),
            );
        }
        let run = || {
            let mut r = rng();
            (0..20)
                .map(|_| b.select(t(10), &mut r, |_| false, &none()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn sample_is_bounded_recent_and_skips_terrible() {
        let mut b = book(AddressBookConfig::default());
        for i in 0..100u8 {
            b.add(
                t(u64::from(i)),
                pa(&format!("10.{i}.0.1:1")),
                AddrSource::Peer(IpAddr::V4(Ipv4Addr::new(i, 9, 9, 9))),
            );
        }
        let mut r = rng();
        let s = b.sample(&mut r, 10);
        assert_eq!(s.len(), 10);
        let distinct: BTreeSet<_> = s.iter().collect();
        assert_eq!(distinct.len(), 10);
        for a in &s {
            let seen = b.get(&a.socket).unwrap().last_seen;
            assert!(seen >= t(80), "{a} seen at {seen}");
        }
        assert_eq!(b.sample(&mut r, 1000).len(), 100);
        assert!(b.sample(&mut r, 0).is_empty());
        // Failing unproven entries are not shared.
        for _ in 0..3 {
            b.mark_failure(t(100), &sa("10.99.0.1:1"));
        }
        b.add(t(200), pa("11.0.0.1:1"), peer("8.8.8.8"));
        let all = b.sample(&mut r, 1000);
        assert_eq!(all.len(), 100);
        assert!(all.iter().all(|a| a.socket != sa("10.99.0.1:1")));
    }

    fn varied_book() -> AddressBook {
        let mut b = book(AddressBookConfig::default());
        b.add(t(1), pa("1.0.0.1:1"), AddrSource::Bootstrap);
        b.add(t(2), pa("2.0.0.1:2"), AddrSource::Manual);
        b.add(
            t(3),
            PeerAddr::pinned(id(3), sa("[2001:db8::3]:3")),
            peer("8.8.8.8"),
        );
        b.add(t(4), pa("4.0.0.1:4"), AddrSource::Inbound);
        b.add(t(5), pa("5.0.0.1:5"), peer("2001:db8::9"));
        b.mark_attempt(t(6), &sa("5.0.0.1:5"));
        b.mark_failure(t(7), &sa("5.0.0.1:5"));
        b.mark_success(t(8), &sa("4.0.0.1:4"), id(4));
        b.mark_success(t(9), &sa("1.0.0.1:1"), id(1));
        b.mark_failure(t(10), &sa("1.0.0.1:1"));
        b
    }

    #[test]
    fn snapshot_round_trip() {
        let b = varied_book();
        let bytes = b.snapshot();
        let mut r = AddressBook::restore(AddressBookConfig::default(), SEED, &bytes).unwrap();
        r.check().unwrap();
        r.observe(t(10));
        r.check().unwrap();
        assert_eq!(b.iter().collect::<Vec<_>>(), r.iter().collect::<Vec<_>>());
        let (s, rs) = (b.stats(), r.stats());
        assert_eq!((s.known, s.new, s.tried), (rs.known, rs.new, rs.tried));
        assert_eq!(r.snapshot(), bytes);
        // Readable as the documented struct, too.
        let doc: AddressBookSnapshot = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(doc.version, SNAPSHOT_VERSION);
        assert_eq!(doc.entries.len(), 5);
        let e = doc.entries.iter().find(|e| e.addr == "5.0.0.1:5").unwrap();
        assert_eq!(e.source, SnapshotSource::Peer("2001:db8::9".into()));
        assert_eq!(e.failures, 1);
        assert_eq!(e.last_seen_age_ms, 5000);
        assert_eq!(e.last_tried_age_ms, Some(3000));
        // Another seed and smaller bounds: still within bounds.
        let r = AddressBook::restore(
            AddressBookConfig {
                max_tried: 1,
                tried_buckets: 1,
                ..AddressBookConfig::default()
            },
            [1; 32],
            &bytes,
        )
        .unwrap();
        r.check().unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r.stats().tried, 1);
    }

    #[test]
    fn restored_ages_are_anchored_at_the_first_clock_reading() {
        let mut b = book(AddressBookConfig {
            horizon_secs: 700,
            ..AddressBookConfig::default()
        });
        let (old, recent) = (sa("1.0.0.1:1"), sa("2.0.0.1:1"));
        b.add(t(400), old.into(), peer("8.8.8.8"));
        b.add(t(1000), recent.into(), peer("8.8.8.8"));
        b.mark_attempt(t(1000), &recent);
        let bytes = b.snapshot();
        let mut r = AddressBook::restore(b.config().clone(), SEED, &bytes).unwrap();
        assert_eq!(r.get(&recent).unwrap().last_seen, Timestamp::ZERO);
        // Before any clock reading, select treats "now" as the snapshot moment.
        let mut g = rng();
        assert_eq!(
            r.select(t(0), &mut g, |_| false, &none()).unwrap().socket,
            old
        );
        // The new process's clock starts near zero.
        r.mark_attempt(t(5), &sa("9.9.9.9:9"));
        assert_eq!(r.get(&recent).unwrap().last_seen, t(5));
        assert_eq!(r.get(&recent).unwrap().last_tried, Some(t(5)));
        assert_eq!(
            r.get(&old).unwrap().last_seen,
            Timestamp::ZERO,
            "shown clamped"
        );
        // The attempt 25 s ago still counts.
        assert_eq!(
            r.select(t(30), &mut g, |_| false, &none()).unwrap().socket,
            old
        );
        assert!(r
            .select(t(65), &mut g, |p| p.socket == old, &none())
            .is_some());
        // Internally the old entry is still 600 s old: 150 s later it is past the horizon.
        assert_eq!(r.sample(&mut g, 10).len(), 2);
        r.add(t(155), pa("3.0.0.1:1"), peer("8.8.8.8"));
        let shared = r.sample(&mut g, 10);
        assert!(shared.iter().all(|a| a.socket != old));
        assert_eq!(shared.len(), 2);
    }

    fn encode(snapshot: &AddressBookSnapshot) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(snapshot, &mut out).unwrap();
        out
    }

    fn entry(addr: &str) -> SnapshotEntry {
        SnapshotEntry {
            addr: addr.into(),
            peer_id: None,
            source: SnapshotSource::Peer("8.8.8.8".into()),
            last_seen_age_ms: 0,
            last_tried_age_ms: None,
            last_success_age_ms: None,
            failures: 0,
            tried: false,
        }
    }

    fn restore(bytes: &[u8]) -> Result<AddressBook, SnapshotError> {
        AddressBook::restore(AddressBookConfig::default(), SEED, bytes)
    }

    #[test]
    fn corrupt_snapshots_are_rejected_with_the_reason() {
        let good = varied_book().snapshot();
        assert!(matches!(restore(&[]), Err(SnapshotError::NotCbor(_))));
        assert!(matches!(restore(&[0xff]), Err(SnapshotError::NotCbor(_))));
        assert!(matches!(restore(&[0x1c]), Err(SnapshotError::NotCbor(_))));
        for cut in [1, 5, good.len() / 2, good.len() - 1] {
            assert!(
                matches!(restore(&good[..cut]), Err(SnapshotError::NotCbor(_))),
                "cut at {cut}"
            );
        }
        assert!(matches!(restore(&[0x01]), Err(SnapshotError::Malformed(_))));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            restore(&trailing),
            Err(SnapshotError::Malformed(_))
        ));
        let v2 = encode(&AddressBookSnapshot {
            version: 2,
            entries: vec![],
        });
        assert_eq!(
            restore(&v2).unwrap_err(),
            SnapshotError::WrongVersion {
                found: 2,
                supported: 1
            }
        );
        let invalid = |entries: Vec<SnapshotEntry>| {
            restore(&encode(&AddressBookSnapshot {
                version: 1,
                entries,
            }))
            .unwrap_err()
        };
        for (entries, index) in [
            (vec![entry("127.0.0.1:0")], 0),
            (vec![entry("1.2.3.4:5"), entry("0.0.0.0:5")], 1),
            (vec![entry("localhost:5")], 0),
            (vec![entry("1.2.3.4:5"), entry("[::ffff:1.2.3.4]:5")], 1),
            (
                vec![SnapshotEntry {
                    tried: true,
                    ..entry("1.2.3.4:5")
                }],
                0,
            ),
            (
                vec![SnapshotEntry {
                    peer_id: Some("zz".into()),
                    ..entry("1.2.3.4:5")
                }],
                0,
            ),
            (
                vec![SnapshotEntry {
                    source: SnapshotSource::Peer("nope".into()),
                    ..entry("1.2.3.4:5")
                }],
                0,
            ),
        ] {
            match invalid(entries) {
                SnapshotError::InvalidEntry { index: i, .. } => assert_eq!(i, index),
                other => panic!("{other}"),
            }
        }
        // An entry with an unknown key, a missing key, or the wrong type.
        use ciborium::Value;
        let doc = |entry: Value| {
            let mut out = Vec::new();
            ciborium::into_writer(
                &Value::Map(vec![
                    (Value::Text("version".into()), Value::Integer(1.into())),
                    (Value::Text("entries".into()), Value::Array(vec![entry])),
                ]),
                &mut out,
            )
            .unwrap();
            out
        };
        assert!(matches!(
            restore(&doc(Value::Map(vec![(
                Value::Text("addr".into()),
                Value::Text("1.2.3.4:5".into())
            )]))),
            Err(SnapshotError::Malformed(_))
        ));
        assert!(matches!(
            restore(&doc(Value::Integer(3.into()))),
            Err(SnapshotError::Malformed(_))
        ));
        // A declared length far beyond the input is refused without allocating for it.
        let mut huge = vec![0xa2];
        huge.push(0x67);
        huge.extend_from_slice(b"version");
        huge.push(0x01);
        huge.push(0x67);
        huge.extend_from_slice(b"entries");
        huge.extend_from_slice(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(restore(&huge), Err(SnapshotError::NotCbor(_))));
        let mut long_addr = huge[..huge.len() - 9].to_vec();
        long_addr.extend_from_slice(&[0x81, 0xa1, 0x64]);
        long_addr.extend_from_slice(b"addr");
        long_addr.extend_from_slice(&[0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            restore(&long_addr),
            Err(SnapshotError::NotCbor(_))
        ));
        // Keys in another order are not the documented layout.
        let mut swapped = vec![0xa2, 0x67];
        swapped.extend_from_slice(b"entries");
        swapped.push(0x80);
        assert!(matches!(
            restore(&swapped),
            Err(SnapshotError::Malformed(_))
        ));
    }

    fn big_snapshot(n: u32) -> Vec<u8> {
        let entries = (0..n)
            .map(|i| {
                let [a, b, c, d] = i.to_be_bytes();
                SnapshotEntry {
                    source: match i % 4 {
                        0 => SnapshotSource::Bootstrap,
                        1 => SnapshotSource::Peer(format!("{}.{}.1.1", c, d)),
                        2 => SnapshotSource::Inbound,
                        _ => SnapshotSource::Peer("8.8.8.8".into()),
                    },
                    tried: i % 3 == 0,
                    last_success_age_ms: Some(u64::from(i)),
                    last_seen_age_ms: u64::from(i % 1000),
                    ..entry(&format!("{}.{}.{}.{}:{}", 1 + a, b, c, d, 1 + i % 7))
                }
            })
            .collect();
        encode(&AddressBookSnapshot {
            version: 1,
            entries,
        })
    }

    #[test]
    fn restore_reapplies_bounds() {
        let bytes = big_snapshot(30_000);
        let config = AddressBookConfig::default();
        let r = AddressBook::restore(config.clone(), SEED, &bytes).unwrap();
        r.check().unwrap();
        assert!(r.stats().new <= config.max_new);
        assert!(r.stats().tried <= config.max_tried);
        assert!(r.stats().tried > 0 && r.stats().new > 0);
    }

    #[test]
    #[ignore = "slow: a million-entry snapshot (about 100 MB)"]
    fn restore_a_million_entries_stays_bounded() {
        let bytes = big_snapshot(1_000_000);
        let r = AddressBook::restore(AddressBookConfig::default(), SEED, &bytes).unwrap();
        r.check().unwrap();
        assert!(r.len() <= 4096 + 1024);
    }

    // -- properties ---------------------------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, u8, u8),
        Attempt(u8, u8),
        Success(u8, u8, u8),
        Failure(u8, u8),
        Remove(u8, u8),
        Select(u8),
        Sample(u8),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, p, s)| Op::Add(a, p, s)),
            2 => (any::<u8>(), any::<u8>()).prop_map(|(a, p)| Op::Attempt(a, p)),
            2 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, p, i)| Op::Success(a, p, i)),
            3 => (any::<u8>(), any::<u8>()).prop_map(|(a, p)| Op::Failure(a, p)),
            1 => (any::<u8>(), any::<u8>()).prop_map(|(a, p)| Op::Remove(a, p)),
            1 => any::<u8>().prop_map(Op::Select),
            1 => any::<u8>().prop_map(Op::Sample),
            1 => any::<u16>().prop_map(Op::Advance),
        ]
    }

    fn addr_of(a: u8, p: u8) -> SocketAddr {
        let port = [0u16, 8000, 8001, 9000, 9001, 1, 65535, 30303][usize::from(p % 8)];
        let ip = match a % 10 {
            0 => IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8 + u16::from(a % 3),
                0,
                0,
                0,
                0,
                0,
                u16::from(a),
            )),
            1 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, a % 4)),
            2 => IpAddr::V6(Ipv4Addr::new(10, a % 3, 0, a).to_ipv6_mapped()),
            3 if a % 7 == 0 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::new(10 + a % 4, a % 5, 0, a)),
        };
        SocketAddr::new(ip, port)
    }

    fn source_of(s: u8) -> AddrSource {
        match s % 12 {
            0 => AddrSource::Bootstrap,
            1 => AddrSource::Manual,
            2 | 3 => AddrSource::Inbound,
            4 => AddrSource::Peer(IpAddr::V4(Ipv4Addr::new(127, 0, 0, s))),
            _ => AddrSource::Peer(IpAddr::V4(Ipv4Addr::new(s % 5 + 1, s % 3, 0, 1))),
        }
    }

    fn small_config() -> AddressBookConfig {
        AddressBookConfig {
            max_new: 24,
            new_buckets: 4,
            max_tried: 8,
            tried_buckets: 2,
            max_per_source_group: 5,
            max_failures: 2,
            horizon_secs: 100,
            retry_interval_secs: 10,
        }
    }

    fn run(
        config: &AddressBookConfig,
        ops: &[Op],
    ) -> Result<(AddressBook, Timestamp), TestCaseError> {
        let mut b = AddressBook::new(config.clone(), SEED);
        let mut r = rng();
        let mut now = t(1);
        for op in ops {
            match *op {
                Op::Add(a, p, s) => {
                    b.add(now, addr_of(a, p).into(), source_of(s));
                }
                Op::Attempt(a, p) => b.mark_attempt(now, &addr_of(a, p)),
                Op::Success(a, p, i) => b.mark_success(now, &addr_of(a, p), id(i)),
                Op::Failure(a, p) => b.mark_failure(now, &addr_of(a, p)),
                Op::Remove(a, p) => {
                    b.remove(&addr_of(a, p));
                }
                Op::Select(g) => {
                    let avoid: BTreeSet<NetGroup> = [NetGroup::V4([10 + g % 4, g % 5])].into();
                    if let Some(a) = b.select(now, &mut r, |p| p.socket.port() == 1, &avoid) {
                        prop_assert!(b.contains(&a.socket));
                        prop_assert!(a.socket.port() != 1);
                    }
                }
                Op::Sample(n) => {
                    let s = b.sample(&mut r, usize::from(n % 16));
                    prop_assert!(s.len() <= usize::from(n % 16));
                }
                Op::Advance(secs) => now += std::time::Duration::from_secs(u64::from(secs % 300)),
            }
            if let Err(e) = b.check() {
                return Err(TestCaseError::fail(e));
            }
            let s = b.stats();
            prop_assert!(s.new <= config.max_new && s.tried <= config.max_tried);
            prop_assert!(b.len() <= config.max_new + config.max_tried);
        }
        Ok((b, now))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn any_operation_sequence_stays_within_bounds(ops in prop::collection::vec(op(), 1..200)) {
            let config = small_config();
            let (b, _) = run(&config, &ops)?;
            // Deterministic: the same operations give the same book.
            let (again, _) = run(&config, &ops)?;
            prop_assert_eq!(b.snapshot(), again.snapshot());
            // A snapshot restores to the same book under the same config and seed.
            let mut restored = AddressBook::restore(config, SEED, &b.snapshot()).unwrap();
            restored.observe(Timestamp::from_nanos(b.latest));
            prop_assert!(restored.check().is_ok());
            prop_assert_eq!(b.iter().collect::<Vec<_>>(), restored.iter().collect::<Vec<_>>());
        }

        #[test]
        fn default_bounds_hold_too(ops in prop::collection::vec(op(), 1..200)) {
            run(&AddressBookConfig { max_per_source_group: 3, ..AddressBookConfig::default() }, &ops)?;
        }

        #[test]
        fn restore_of_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(b) = AddressBook::restore(small_config(), SEED, &bytes) {
                prop_assert!(b.check().is_ok());
            }
        }

        #[test]
        fn restore_of_damaged_snapshots_never_panics(
            ops in prop::collection::vec(op(), 1..60),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let (b, _) = run(&small_config(), &ops)?;
            let mut bytes = b.snapshot();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            for input in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
                if let Ok(r) = AddressBook::restore(small_config(), SEED, input) {
                    prop_assert!(r.check().is_ok());
                }
            }
        }
    }
}
