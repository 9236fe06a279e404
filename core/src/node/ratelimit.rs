//! Rate limiting for inbound traffic: token buckets, a per-peer limiter (messages and bytes)
//! and a node-wide byte budget.
//!
//! Everything here is pure arithmetic on injected [`Timestamp`]s: no clock is read and no
//! timer is armed. Buckets refill lazily whenever they are asked something, using exact
//! integer arithmetic (balances are kept in billionths of a token, so one nanosecond at a
//! rate of one token per second is exactly one unit). There is no floating-point drift, no
//! overflow for any `u64` input, and a clock that goes backwards is treated as "no time
//! passed".
//!
//! The limiters work with TCP back-pressure rather than against it: bytes that already
//! arrived are always accounted (a bucket may go into debt), and the verdict tells the node to
//! stop reading from the peer until the debt is paid off. A peer that keeps running into its
//! limit is reported as abusive so the node can penalise or drop it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Timestamp;
use crate::ConfigError;

/// Balance units per token: balances are kept in nano-tokens.
const NANO: u128 = 1_000_000_000;

/// Smallest allowed byte burst (per peer and global): 64 KiB, so one maximum-size Noise
/// frame (65,535 bytes) can always pass a full bucket.
pub const MIN_BYTE_BURST: u64 = 64 << 10;

/// Largest allowed [`RateLimitConfig::abuse_threshold`]; it bounds the memory a limiter keeps
/// per peer (one timestamp per recent over-limit event).
pub const MAX_ABUSE_THRESHOLD: u32 = 1000;

/// A token bucket: holds up to `burst` tokens and refills at `rate` tokens per second.
///
/// Create one per budget with [`TokenBucket::new`] and ask it with the current time from the
/// caller's monotonic clock. The balance may go negative (down to `-burst`) through
/// [`TokenBucket::force_take`], which is how already-received bytes are accounted; while it is
/// negative nothing can be taken.
///
/// Guarantees: over any period the bucket never admits more than `rate × elapsed + burst`
/// tokens (plus at most `burst` of debt through `force_take`), computed exactly in integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Current balance in nano-tokens, always within `[-burst × 1e9, burst × 1e9]`.
    balance: i128,
    /// The latest time the bucket has seen; refills are counted from here.
    last: Timestamp,
}

impl TokenBucket {
    /// A full bucket (`burst` tokens) refilling at `rate_per_sec` tokens per second, as of
    /// `now`. A rate of 0 means the bucket never refills; a burst of 0 admits nothing but
    /// requests for zero tokens.
    pub fn new(rate_per_sec: u64, burst: u64, now: Timestamp) -> Self {
        TokenBucket {
            rate: rate_per_sec,
            burst,
            balance: i128::from(burst) * NANO as i128,
            last: now,
        }
    }

    /// Tokens added per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Capacity of the bucket in tokens (also the deepest possible debt).
    pub fn burst(&self) -> u64 {
        self.burst
    }

    fn cap(&self) -> i128 {
        i128::from(self.burst) * NANO as i128
    }

    /// Adds the tokens earned since the last time seen. Time going backwards adds nothing
    /// (and the later time stays the reference).
    fn refill(&mut self, now: Timestamp) {
        if now <= self.last {
            return;
        }
        let elapsed = u128::from(now.as_nanos() - self.last.as_nanos());
        // rate × nanoseconds is exactly the number of nano-tokens earned; < 2^128.
        let earned = u128::from(self.rate) * elapsed;
        let cap = self.cap();
        // cap - balance is within [0, 2 × cap] and fits comfortably.
        let room = (cap - self.balance) as u128;
        if earned >= room {
            self.balance = cap;
        } else {
            self.balance += earned as i128;
        }
        self.last = now;
    }

    /// Takes `n` tokens if the balance (after refilling up to `now`) holds at least `n`, and
    /// returns true; otherwise takes nothing and returns false. Call it before admitting
    /// something that can still be refused. A request for more than `burst` tokens always
    /// fails; a request for zero tokens succeeds exactly when the bucket is not in debt.
    pub fn try_take(&mut self, now: Timestamp, n: u64) -> bool {
        self.refill(now);
        let need = i128::from(n) * NANO as i128;
        if self.balance >= need {
            self.balance -= need;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens unconditionally, letting the balance go negative. Call it for
    /// something that already happened and must be accounted (bytes that were already read).
    /// The debt is capped at `burst` tokens: whatever exceeds it is forgiven, so a single huge
    /// input can never stall the bucket for longer than `burst / rate` seconds.
    pub fn force_take(&mut self, now: Timestamp, n: u64) {
        self.refill(now);
        let need = i128::from(n) * NANO as i128;
        self.balance = (self.balance - need).max(-self.cap());
    }

    /// Whole tokens available at `now` (0 while the bucket is in debt). Never more than
    /// `burst`.
    pub fn available(&mut self, now: Timestamp) -> u64 {
        self.refill(now);
        if self.balance <= 0 {
            0
        } else {
            (self.balance / NANO as i128) as u64
        }
    }

    /// How long from `now` until [`TokenBucket::try_take`] for `n` tokens would succeed, if
    /// nothing else is taken meanwhile. `Some(Duration::ZERO)` means it would succeed now;
    /// `None` means never (`n > burst`, or the bucket needs a refill and its rate is 0).
    ///
    /// The answer is exact to the nanosecond: at `now + d` the request succeeds and at
    /// `now + d - 1ns` it fails (when `d > 0`). `n = 0` asks when the bucket is out of debt.
    /// If `now` is earlier than a time the bucket has already seen, the wait is measured from
    /// `now` but refilling only starts at that later time. Saturates at [`Duration::MAX`].
    pub fn time_until(&mut self, now: Timestamp, n: u64) -> Option<Duration> {
        self.refill(now);
        if n > self.burst {
            return None;
        }
        let need = i128::from(n) * NANO as i128;
        if self.balance >= need {
            return Some(Duration::ZERO);
        }
        if self.rate == 0 {
            return None;
        }
        let deficit = (need - self.balance) as u128;
        let rate = u128::from(self.rate);
        let wait = deficit.div_ceil(rate);
        // If the caller's clock went backwards, refilling resumes only at `last`.
        let lag = u128::from(self.last.as_nanos().saturating_sub(now.as_nanos()));
        let total = wait + lag;
        let secs = total / NANO;
        Some(match u64::try_from(secs) {
            Ok(secs) => Duration::new(secs, (total % NANO) as u32),
            Err(_) => Duration::MAX,
        })
    }
}

/// Inbound rate limits, per peer and for the whole node. Part of the node configuration
/// (section `rate_limit`); check it with [`RateLimitConfig::validate`] before use.
///
/// A peer that exceeds its limit is not dropped: its reading is paused until its buckets are
/// out of debt. Only a peer that runs into its limit `abuse_threshold` times within
/// `abuse_window_ms` is reported as misbehaving.
///
/// Note: `byte_burst` should be at least the largest message the node accepts
/// (`ConnectionConfig::max_message_size`), or every such message pauses the peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Messages per second a peer may sustain. At least 1. Default 10,000.
    pub messages_per_sec: u64,
    /// Messages a peer may send in a burst above the sustained rate (the bucket's capacity).
    /// At least 1. Default 20,000.
    pub message_burst: u64,
    /// Bytes per second a peer may sustain. At least 1. Default 64 MiB (67,108,864).
    pub bytes_per_sec: u64,
    /// Bytes a peer may send in a burst (the bucket's capacity). At least 64 KiB so one
    /// maximum-size frame can pass. Default 64 MiB (67,108,864).
    pub byte_burst: u64,
    /// Bytes per second the node accepts from all peers together. At least 1.
    /// Default 256 MiB (268,435,456).
    pub global_bytes_per_sec: u64,
    /// Bytes the node accepts from all peers together in a burst. At least 64 KiB.
    /// Default 512 MiB (536,870,912).
    pub global_byte_burst: u64,
    /// How many times a peer must run into its limit (each time starting a new pause) within
    /// `abuse_window_ms` before it counts as misbehaviour. Between 1 and 1000. Default 10.
    pub abuse_threshold: u32,
    /// The window, in milliseconds, within which `abuse_threshold` over-limit events make a
    /// peer abusive. At least 1. Default 10,000 (10 s).
    pub abuse_window_ms: u64,
    /// Messages per second per peer and message class, each class with a burst of twice its
    /// rate: gossip (Transaction, Block, App), requests (GetBlock, GetTransaction, Request),
    /// unicasts (Unicast, Direct), and discovery (GetPeers, Peers). Exceeding one pauses reading like the
    /// limits above.
    pub per_class: ClassLimits,
}

/// Per-peer message rates for each message class (see [`RateLimitConfig::per_class`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassLimits {
    /// Gossip messages per second. Default 10,000.
    pub gossip: u64,
    /// Requests per second. Default 1,000.
    pub requests: u64,
    /// Unicasts and direct messages per second, together. Default 5,000.
    pub unicast: u64,
    /// Discovery messages per second. Default 10.
    pub discovery: u64,
}

impl Default for ClassLimits {
    fn default() -> Self {
        ClassLimits {
            gossip: 10_000,
            requests: 1_000,
            unicast: 5_000,
            discovery: 10,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            messages_per_sec: 10_000,
            message_burst: 20_000,
            bytes_per_sec: 64 << 20,
            byte_burst: 64 << 20,
            global_bytes_per_sec: 256 << 20,
            global_byte_burst: 512 << 20,
            abuse_threshold: 10,
            abuse_window_ms: 10_000,
            per_class: ClassLimits::default(),
        }
    }
}

impl RateLimitConfig {
    /// Checks every rule; the first broken one is returned, naming the field as
    /// `rate_limit.<field>`. Call it when loading the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least = |field: &str, v: u64, min: u64| {
            if v < min {
                Err(ConfigError::new(
                    format!("rate_limit.{field}"),
                    format!("{v} is below the minimum of {min}"),
                ))
            } else {
                Ok(())
            }
        };
        at_least("messages_per_sec", self.messages_per_sec, 1)?;
        at_least("message_burst", self.message_burst, 1)?;
        at_least("bytes_per_sec", self.bytes_per_sec, 1)?;
        at_least("byte_burst", self.byte_burst, MIN_BYTE_BURST)?;
        at_least("global_bytes_per_sec", self.global_bytes_per_sec, 1)?;
        at_least("global_byte_burst", self.global_byte_burst, MIN_BYTE_BURST)?;
        if !(1..=MAX_ABUSE_THRESHOLD).contains(&self.abuse_threshold) {
            return Err(ConfigError::new(
                "rate_limit.abuse_threshold",
                format!(
                    "{} is outside 1..={MAX_ABUSE_THRESHOLD}",
                    self.abuse_threshold
                ),
            ));
        }
        at_least("abuse_window_ms", self.abuse_window_ms, 1)?;
        at_least("per_class.gossip", self.per_class.gossip, 1)?;
        at_least("per_class.requests", self.per_class.requests, 1)?;
        at_least("per_class.unicast", self.per_class.unicast, 1)?;
        at_least("per_class.discovery", self.per_class.discovery, 1)?;
        Ok(())
    }
}

/// What the node should do after a peer's message was accounted by
/// [`PeerRateLimiter::on_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within limits: keep reading.
    Allowed,
    /// Over a limit (the message is still accounted and may be processed): stop reading
    /// from this peer until `resume_at`, when its buckets are out of debt. `resume_at` is
    /// never before the `now` passed in ([`Timestamp::MAX`] means never).
    Pause {
        /// When to resume reading from the peer.
        resume_at: Timestamp,
    },
    /// Over a limit, and the peer has now run into its limits `abuse_threshold` times within
    /// the abuse window: treat it as misbehaving. The pause still applies
    /// (see [`PeerRateLimiter::paused_until`]).
    Abuse,
}

/// The inbound limits for one peer: a message bucket and a byte bucket, plus the record of
/// recent over-limit events that decides abuse.
///
/// Create one per connected peer with [`PeerRateLimiter::new`] and call
/// [`PeerRateLimiter::on_message`] for every message received from it.
#[derive(Debug, Clone)]
pub struct PeerRateLimiter {
    messages: TokenBucket,
    bytes: TokenBucket,
    paused_until: Option<Timestamp>,
    abuse_threshold: u32,
    abuse_window: Duration,
    /// Start times of recent pauses, oldest first; at most `abuse_threshold` entries.
    events: VecDeque<Timestamp>,
}

impl PeerRateLimiter {
    /// A limiter with full buckets as of `now`, using the per-peer fields of `cfg`
    /// (which should have passed [`RateLimitConfig::validate`]).
    pub fn new(cfg: &RateLimitConfig, now: Timestamp) -> Self {
        PeerRateLimiter {
            messages: TokenBucket::new(cfg.messages_per_sec, cfg.message_burst, now),
            bytes: TokenBucket::new(cfg.bytes_per_sec, cfg.byte_burst, now),
            paused_until: None,
            abuse_threshold: cfg.abuse_threshold,
            abuse_window: Duration::from_millis(cfg.abuse_window_ms),
            events: VecDeque::new(),
        }
    }

    /// Accounts one received message of `bytes` bytes (always: it already arrived) and says
    /// whether to keep reading from the peer.
    ///
    /// Returns [`Verdict::Allowed`] when both buckets had room. Otherwise the buckets go into
    /// debt and the verdict is [`Verdict::Pause`] with the instant both are out of debt
    /// again. A message that runs over the limit while the peer is not already paused
    /// starts a new pause and counts as one over-limit event; messages that arrive during a
    /// pause (already buffered before reading stopped) extend it without counting again.
    /// When the events within the abuse window reach `abuse_threshold`, the verdict is
    /// [`Verdict::Abuse`] instead (and stays so for every further over-limit event while the
    /// window holds that many).
    pub fn on_message(&mut self, now: Timestamp, bytes: u64) -> Verdict {
        let mut over = false;
        if !self.messages.try_take(now, 1) {
            self.messages.force_take(now, 1);
            over = true;
        }
        if !self.bytes.try_take(now, bytes) {
            self.bytes.force_take(now, bytes);
            over = true;
        }
        if !over {
            self.paused_until = None;
            return Verdict::Allowed;
        }
        let already_paused = self.is_paused(now);
        let resume_at = self.out_of_debt_at(now);
        self.paused_until = Some(resume_at);
        if !already_paused && self.record_event(now) {
            return Verdict::Abuse;
        }
        Verdict::Pause { resume_at }
    }

    /// The end of the current (or last) pause, if the peer has run over its limit since its
    /// last allowed message. Use it to resume reading after [`Verdict::Abuse`].
    pub fn paused_until(&self) -> Option<Timestamp> {
        self.paused_until
    }

    /// Whether the peer is paused at `now`, i.e. `now` is before the end of the last pause.
    pub fn is_paused(&self, now: Timestamp) -> bool {
        matches!(self.paused_until, Some(t) if now < t)
    }

    /// The earliest instant at which both buckets are out of debt.
    fn out_of_debt_at(&mut self, now: Timestamp) -> Timestamp {
        match (
            self.messages.time_until(now, 0),
            self.bytes.time_until(now, 0),
        ) {
            (Some(a), Some(b)) => now + a.max(b),
            _ => Timestamp::MAX,
        }
    }

    /// Records an over-limit event at `now`; true if the window now holds `abuse_threshold`
    /// events.
    fn record_event(&mut self, now: Timestamp) -> bool {
        self.events.push_back(now);
        while let Some(&first) = self.events.front() {
            if now.saturating_duration_since(first) > self.abuse_window {
                self.events.pop_front();
            } else {
                break;
            }
        }
        let threshold = self.abuse_threshold as usize;
        while self.events.len() > threshold.max(1) {
            self.events.pop_front();
        }
        self.events.len() >= threshold
    }
}

/// The node-wide inbound byte budget: one bucket shared by all peers.
///
/// Create one per node with [`GlobalBandwidth::new`] and call [`GlobalBandwidth::on_bytes`]
/// for every read from any peer.
#[derive(Debug, Clone)]
pub struct GlobalBandwidth {
    bucket: TokenBucket,
}

impl GlobalBandwidth {
    /// A full budget as of `now`, from the global fields of `cfg`.
    pub fn new(cfg: &RateLimitConfig, now: Timestamp) -> Self {
        GlobalBandwidth {
            bucket: TokenBucket::new(cfg.global_bytes_per_sec, cfg.global_byte_burst, now),
        }
    }

    /// Accounts `n` bytes received from any peer (always: they already arrived). Returns
    /// `None` if the budget had room, or `Some(resume_at)` if it is now in debt: stop reading
    /// from all peers until `resume_at` (never before `now`; [`Timestamp::MAX`] means never).
    pub fn on_bytes(&mut self, now: Timestamp, n: u64) -> Option<Timestamp> {
        if self.bucket.try_take(now, n) {
            return None;
        }
        self.bucket.force_take(now, n);
        Some(match self.bucket.time_until(now, 0) {
            Some(d) => now + d,
            None => Timestamp::MAX,
        })
    }

    /// Bytes that can be received at `now` without exceeding the budget.
    pub fn available(&mut self, now: Timestamp) -> u64 {
        self.bucket.available(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn ms(t: u64) -> Timestamp {
        Timestamp::from_millis(t)
    }

    #[test]
    fn bucket_starts_full_and_refills_at_its_rate() {
        let mut b = TokenBucket::new(10, 20, ms(0));
        assert_eq!(b.available(ms(0)), 20);
        assert!(b.try_take(ms(0), 20));
        assert!(!b.try_take(ms(0), 1));
        assert_eq!(b.available(ms(99)), 0);
        assert_eq!(b.available(ms(100)), 1);
        assert_eq!(b.available(ms(1000)), 10);
        assert_eq!(b.available(ms(100_000)), 20, "capped at burst");
        assert_eq!((b.rate(), b.burst()), (10, 20));
    }

    #[test]
    fn failed_take_takes_nothing() {
        let mut b = TokenBucket::new(1, 5, ms(0));
        assert!(!b.try_take(ms(0), 6));
        assert!(!b.try_take(ms(0), u64::MAX));
        assert_eq!(b.available(ms(0)), 5);
        assert!(b.try_take(ms(0), 5));
    }

    #[test]
    fn force_take_goes_into_bounded_debt() {
        let mut b = TokenBucket::new(10, 10, ms(0));
        b.force_take(ms(0), 15);
        assert_eq!(b.available(ms(0)), 0);
        assert!(
            !b.try_take(ms(0), 0),
            "zero tokens are refused while in debt"
        );
        assert_eq!(b.time_until(ms(0), 0), Some(Duration::from_millis(500)));
        // The debt never exceeds the burst.
        b.force_take(ms(0), u64::MAX);
        assert_eq!(b.time_until(ms(0), 0), Some(Duration::from_secs(1)));
        assert_eq!(b.time_until(ms(0), 10), Some(Duration::from_secs(2)));
        assert!(b.try_take(ms(1000), 0));
        assert!(b.try_take(ms(2000), 10));
    }

    #[test]
    fn time_until_is_exact_and_none_when_never() {
        let mut b = TokenBucket::new(3, 3, ms(0));
        assert!(b.try_take(ms(0), 3));
        // One token at 3/s takes ceil(1e9 / 3) ns.
        let d = b.time_until(ms(0), 1).unwrap();
        assert_eq!(d, Duration::from_nanos(333_333_334));
        assert!(!b.clone().try_take(Timestamp::from_nanos(333_333_333), 1));
        assert!(b.clone().try_take(Timestamp::from_nanos(333_333_334), 1));
        assert_eq!(b.time_until(ms(0), 4), None);
        let mut z = TokenBucket::new(0, 3, ms(0));
        assert!(z.try_take(ms(0), 2));
        assert_eq!(z.time_until(ms(0), 1), Some(Duration::ZERO));
        assert_eq!(z.time_until(ms(0), 2), None, "rate 0 never refills");
        assert_eq!(z.available(Timestamp::MAX), 1);
    }

    #[test]
    fn clock_going_backwards_adds_nothing() {
        let mut b = TokenBucket::new(1000, 1000, ms(10_000));
        assert!(b.try_take(ms(10_000), 1000));
        assert_eq!(b.available(ms(5_000)), 0);
        assert_eq!(b.available(ms(10_000)), 0);
        assert_eq!(b.available(ms(10_001)), 1);
        // The wait is measured from the (earlier) now, refilling from the later time seen.
        assert_eq!(b.time_until(ms(10_000), 2), Some(Duration::from_millis(2)));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut b = TokenBucket::new(u64::MAX, u64::MAX, Timestamp::ZERO);
        assert!(b.try_take(Timestamp::ZERO, u64::MAX));
        b.force_take(Timestamp::ZERO, u64::MAX);
        assert_eq!(b.available(Timestamp::MAX), u64::MAX);
        let mut s = TokenBucket::new(1, u64::MAX, Timestamp::ZERO);
        s.force_take(Timestamp::ZERO, u64::MAX);
        s.force_take(Timestamp::ZERO, u64::MAX);
        assert_eq!(s.time_until(Timestamp::ZERO, u64::MAX), Some(Duration::MAX));
        assert_eq!(s.available(Timestamp::MAX), 0);
    }

    #[test]
    fn config_defaults_are_valid_and_documented_values() {
        let c = RateLimitConfig::default();
        c.validate().unwrap();
        assert_eq!(c.messages_per_sec, 10_000);
        assert_eq!(c.message_burst, 20_000);
        assert_eq!(c.bytes_per_sec, 64 * 1024 * 1024);
        assert_eq!(c.byte_burst, 64 * 1024 * 1024);
        assert_eq!(c.global_bytes_per_sec, 256 * 1024 * 1024);
        assert_eq!(c.global_byte_burst, 512 * 1024 * 1024);
        assert_eq!(c.abuse_threshold, 10);
        assert_eq!(c.abuse_window_ms, 10_000);
    }

    #[test]
    fn config_validation_names_the_field() {
        let field = |c: RateLimitConfig| c.validate().unwrap_err().field;
        let d = RateLimitConfig::default;
        assert_eq!(
            field(RateLimitConfig {
                messages_per_sec: 0,
                ..d()
            }),
            "rate_limit.messages_per_sec"
        );
        assert_eq!(
            field(RateLimitConfig {
                message_burst: 0,
                ..d()
            }),
            "rate_limit.message_burst"
        );
        assert_eq!(
            field(RateLimitConfig {
                bytes_per_sec: 0,
                ..d()
            }),
            "rate_limit.bytes_per_sec"
        );
        let e = RateLimitConfig {
            byte_burst: 65_535,
            ..d()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "rate_limit.byte_burst");
        assert!(e.rule.contains("65536"), "{e}");
        RateLimitConfig {
            byte_burst: 65_536,
            global_byte_burst: 65_536,
            ..d()
        }
        .validate()
        .unwrap();
        assert_eq!(
            field(RateLimitConfig {
                global_bytes_per_sec: 0,
                ..d()
            }),
            "rate_limit.global_bytes_per_sec"
        );
        assert_eq!(
            field(RateLimitConfig {
                global_byte_burst: 1,
                ..d()
            }),
            "rate_limit.global_byte_burst"
        );
        for t in [0, MAX_ABUSE_THRESHOLD + 1] {
            assert_eq!(
                field(RateLimitConfig {
                    abuse_threshold: t,
                    ..d()
                }),
                "rate_limit.abuse_threshold"
            );
        }
        assert_eq!(
            field(RateLimitConfig {
                abuse_window_ms: 0,
                ..d()
            }),
            "rate_limit.abuse_window_ms"
        );
    }

    #[test]
    fn config_serde_fills_defaults_and_rejects_unknown_fields() {
        let c: RateLimitConfig = toml::from_str("messages_per_sec = 5").unwrap();
        assert_eq!(
            c,
            RateLimitConfig {
                messages_per_sec: 5,
                ..Default::default()
            }
        );
        assert!(toml::from_str::<RateLimitConfig>("message_per_sec = 5").is_err());
        let back: RateLimitConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    fn small_cfg() -> RateLimitConfig {
        RateLimitConfig {
            messages_per_sec: 10,
            message_burst: 10,
            bytes_per_sec: 65_536,
            byte_burst: 65_536,
            global_bytes_per_sec: 65_536,
            global_byte_burst: 65_536,
            abuse_threshold: 3,
            abuse_window_ms: 10_000,
            per_class: ClassLimits::default(),
        }
    }

    #[test]
    fn limiter_pauses_on_message_count_until_out_of_debt() {
        let mut l = PeerRateLimiter::new(&small_cfg(), ms(0));
        for _ in 0..10 {
            assert_eq!(l.on_message(ms(0), 10), Verdict::Allowed);
        }
        // The 11th message is one token of debt at 10/s: 100 ms.
        assert_eq!(
            l.on_message(ms(0), 10),
            Verdict::Pause { resume_at: ms(100) }
        );
        assert!(l.is_paused(ms(99)));
        assert!(!l.is_paused(ms(100)));
        assert_eq!(l.paused_until(), Some(ms(100)));
        // At resume time the bucket is at zero; one more token takes another 100 ms.
        assert_eq!(l.on_message(ms(200), 10), Verdict::Allowed);
        assert_eq!(l.paused_until(), None);
    }

    #[test]
    fn limiter_pauses_on_bytes() {
        let mut l = PeerRateLimiter::new(&small_cfg(), ms(0));
        assert_eq!(l.on_message(ms(0), 65_536), Verdict::Allowed);
        assert_eq!(
            l.on_message(ms(0), 32_768),
            Verdict::Pause { resume_at: ms(500) }
        );
        // A message bigger than the whole burst: the debt is capped at one burst (1 s).
        let mut l = PeerRateLimiter::new(&small_cfg(), ms(0));
        assert_eq!(
            l.on_message(ms(0), 10 << 20),
            Verdict::Pause {
                resume_at: ms(1000)
            }
        );
    }

    /// Drives one new over-limit event: exhaust the message bucket at `t`.
    fn trip(l: &mut PeerRateLimiter, t: Timestamp) -> Verdict {
        loop {
            let v = l.on_message(t, 0);
            if v != Verdict::Allowed {
                return v;
            }
        }
    }

    #[test]
    fn repeated_pauses_within_the_window_are_abuse() {
        let mut l = PeerRateLimiter::new(&small_cfg(), ms(0));
        assert_eq!(trip(&mut l, ms(0)), Verdict::Pause { resume_at: ms(100) });
        // Messages already buffered during the pause extend it but are not new events.
        for i in 0..5 {
            assert_eq!(
                l.on_message(ms(50), 0),
                Verdict::Pause {
                    resume_at: ms(200 + 100 * i)
                }
            );
        }
        assert!(matches!(trip(&mut l, ms(3000)), Verdict::Pause { .. }));
        assert_eq!(trip(&mut l, ms(6000)), Verdict::Abuse);
        assert!(l.paused_until().unwrap() > ms(6000));
        // Still abusive while the window holds three events.
        assert_eq!(trip(&mut l, ms(9000)), Verdict::Abuse);
    }

    #[test]
    fn events_outside_the_window_do_not_count() {
        let mut l = PeerRateLimiter::new(&small_cfg(), ms(0));
        for t in [0, 6000, 12_000, 18_000, 24_000] {
            assert!(
                matches!(trip(&mut l, ms(t)), Verdict::Pause { .. }),
                "at {t} ms"
            );
        }
        // Three within 10 s (first to last) is abuse: 24 s, 30 s, 34 s.
        assert!(matches!(trip(&mut l, ms(30_000)), Verdict::Pause { .. }));
        assert_eq!(trip(&mut l, ms(34_000)), Verdict::Abuse);
    }

    #[test]
    fn global_bandwidth_pauses_everyone_until_out_of_debt() {
        let mut g = GlobalBandwidth::new(&small_cfg(), ms(0));
        assert_eq!(g.available(ms(0)), 65_536);
        assert_eq!(g.on_bytes(ms(0), 65_536), None);
        assert_eq!(g.on_bytes(ms(0), 16_384), Some(ms(250)));
        assert_eq!(g.available(ms(250)), 0);
        assert_eq!(g.on_bytes(ms(500), 16_384), None);
    }

    /// u64s that are often small, sometimes huge.
    fn any_amount() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..10, 0u64..100_000, any::<u64>()]
    }

    /// Clock steps: mostly forward, sometimes zero or backwards.
    fn any_step() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => 0i64..2_000_000_000,
            1 => Just(0i64),
            1 => -1_000_000_000i64..0,
            1 => 0i64..i64::MAX / 4,
        ]
    }

    fn step(t: Timestamp, s: i64) -> Timestamp {
        if s >= 0 {
            t + Duration::from_nanos(s as u64)
        } else {
            Timestamp::from_nanos(t.as_nanos().saturating_sub(s.unsigned_abs()))
        }
    }

    proptest! {
        #[test]
        fn bucket_never_admits_more_than_rate_times_elapsed_plus_burst(
            (rate, burst, t0) in (any_amount(), any_amount(), any::<u64>()),
            ops in prop::collection::vec((any_step(), any_amount()), 0..64),
        ) {
            let t0 = Timestamp::from_nanos(t0 / 2);
            let mut b = TokenBucket::new(rate, burst, t0);
            let (mut now, mut latest) = (t0, t0);
            let mut admitted: u128 = 0;
            for (s, n) in ops {
                now = step(now, s);
                latest = latest.max(now);
                if b.try_take(now, n) {
                    admitted += u128::from(n);
                }
                let elapsed = u128::from(latest.as_nanos() - t0.as_nanos());
                // admitted ≤ rate × elapsed_ns / 1e9 + burst, exactly, in nano-tokens.
                prop_assert!(
                    admitted * NANO <= u128::from(rate) * elapsed + u128::from(burst) * NANO,
                    "admitted {} rate {} burst {} elapsed {}ns", admitted, rate, burst, elapsed
                );
                prop_assert!(b.available(now) <= burst);
            }
        }

        #[test]
        fn time_until_is_exact(
            (rate, burst) in (any_amount(), 1u64..1_000_000),
            ops in prop::collection::vec((any_step(), any::<bool>(), any::<u64>()), 0..16),
            t0 in any::<u64>(),
            last_step in any_step(),
            n_raw in any::<u64>(),
        ) {
            let mut now = Timestamp::from_nanos(t0 / 2);
            let mut b = TokenBucket::new(rate, burst, now);
            for (s, force, n) in ops {
                now = step(now, s);
                let n = n % (burst * 2 + 1);
                if force { b.force_take(now, n) } else { let _ = b.try_take(now, n); }
            }
            now = step(now, last_step);
            let n = n_raw % (burst + 2);
            let d = b.time_until(now, n);
            if n > burst {
                prop_assert_eq!(d, None);
                return Ok(());
            }
            match d {
                None => prop_assert_eq!(rate, 0),
                Some(d) => {
                    let at = u128::from(now.as_nanos()) + d.as_nanos();
                    if at < u128::from(u64::MAX) {
                        let at = Timestamp::from_nanos(at as u64);
                        prop_assert!(b.clone().try_take(at, n), "succeeds after waiting {:?}", d);
                        if !d.is_zero() {
                            let before = Timestamp::from_nanos(at.as_nanos() - 1);
                            prop_assert!(!b.clone().try_take(before, n), "fails 1 ns earlier");
                        } else {
                            prop_assert!(b.clone().try_take(now, n));
                        }
                    }
                }
            }
        }

        #[test]
        fn limiter_resume_is_never_in_the_past_and_traffic_flows_after_it(
            cfg in (
                1u64..2000, 1u64..100, 1u64..10_000_000, MIN_BYTE_BURST..4_000_000,
                1u32..20, 1u64..20_000,
            ).prop_map(|(mr, mb, br, bb, th, w)| RateLimitConfig {
                messages_per_sec: mr,
                message_burst: mb,
                bytes_per_sec: br,
                byte_burst: bb,
                abuse_threshold: th,
                abuse_window_ms: w,
                ..Default::default()
            }),
            msgs in prop::collection::vec(
                (prop_oneof![0u64..1_000_000, 0u64..100 * MS, Just(0u64)], 0u64..8_000_000),
                1..64,
            ),
        ) {
            prop_assert!(cfg.validate().is_ok());
            let mut now = Timestamp::from_secs(1);
            let mut l = PeerRateLimiter::new(&cfg, now);
            for (dt, bytes) in msgs {
                now += Duration::from_nanos(dt);
                let verdict = l.on_message(now, bytes);
                let resume_at = match verdict {
                    Verdict::Allowed => {
                        prop_assert!(!l.is_paused(now));
                        continue;
                    }
                    Verdict::Pause { resume_at } => {
                        prop_assert_eq!(l.paused_until(), Some(resume_at));
                        resume_at
                    }
                    Verdict::Abuse => l.paused_until().unwrap(),
                };
                prop_assert!(resume_at > now, "resume {} not after now {}", resume_at, now);
                prop_assert!(l.is_paused(now));
                prop_assert!(!l.is_paused(resume_at));
                let mut probe = l.clone();
                prop_assert_eq!(probe.messages.time_until(resume_at, 0), Some(Duration::ZERO));
                prop_assert_eq!(probe.bytes.time_until(resume_at, 0), Some(Duration::ZERO));
                // One more message of the same size (within the burst) goes through once the
                // buckets have refilled for it.
                let size = bytes.min(cfg.byte_burst);
                let wait = probe.messages.time_until(resume_at, 1).unwrap()
                    .max(probe.bytes.time_until(resume_at, size).unwrap());
                prop_assert_eq!(probe.on_message(resume_at + wait, size), Verdict::Allowed);
            }
        }
    }
}
