//! Reconnection backoff: exponential growth with full jitter, driven only by inputs.
//!
//! A [`Backoff`] tracks consecutive failures to reach one address. Each failure yields the
//! instant of the next attempt, `now + uniform(0 ..= min(cap, base × factor^failures))`
//! ("full jitter", which spreads the reconnections of many nodes that lost the same peer at
//! the same moment). Nothing here reads a clock or arms a timer: the caller passes `now` and a
//! [`SeededRng`], and schedules the returned instant itself. All arithmetic saturates, so no
//! number of failures overflows.

use std::time::Duration;

use crate::rng::SeededRng;
use crate::time::Timestamp;
use crate::ConfigError;

/// Nanoseconds per millisecond.
const NANOS_PER_MS: u64 = 1_000_000;

/// How reconnection attempts to one address back off. Part of the node configuration
/// (section `reconnect`); check it with [`BackoffConfig::validate`] before use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Upper bound of the delay after the first failure, in milliseconds. At least 1.
    /// Default 1000 (1 s).
    pub base_ms: u64,
    /// Growth of the upper bound per further failure. At least 1 (1 means no growth).
    /// Default 2.
    pub factor: u32,
    /// Largest upper bound, in milliseconds, however many failures. At least `base_ms`.
    /// Default 300,000 (5 min).
    pub cap_ms: u64,
    /// Consecutive failures after which a non-persistent address is given up
    /// ([`Backoff::should_give_up`]); persistent addresses are retried forever (the caller
    /// decides which is which). At least 1. Default 8.
    pub give_up_after: u32,
    /// How long a connection to a persistent peer must stay up, in milliseconds, before it
    /// counts as a success and resets the backoff. One that drops sooner counts as one more
    /// failure, so a peer that accepts us and then evicts us (a full bootstrap node) is
    /// redialed ever more slowly instead of every `base_ms`. A connection the peer closes
    /// because it is full (Goodbye `Evicted` or `TooManyConnections`) never counts as a
    /// success, however long it lasted. 0 resets the backoff as soon as a handshake
    /// completes. Default 60,000 (1 min).
    pub stable_after_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base_ms: 1000,
            factor: 2,
            cap_ms: 300_000,
            give_up_after: 8,
            stable_after_ms: 60_000,
        }
    }
}

impl BackoffConfig {
    /// Checks every rule; the first broken one is returned, naming the field as
    /// `reconnect.<field>`. Call it when loading the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.base_ms == 0 {
            return Err(ConfigError::new(
                "reconnect.base_ms",
                "must be greater than zero",
            ));
        }
        if self.factor == 0 {
            return Err(ConfigError::new("reconnect.factor", "must be at least 1"));
        }
        if self.cap_ms < self.base_ms {
            return Err(ConfigError::new(
                "reconnect.cap_ms",
                format!(
                    "cap_ms ({}) is below base_ms ({})",
                    self.cap_ms, self.base_ms
                ),
            ));
        }
        if self.give_up_after == 0 {
            return Err(ConfigError::new(
                "reconnect.give_up_after",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The upper bound of the delay after `failures` earlier failures:
    /// `min(cap, base × factor^failures)`, computed with saturating integer arithmetic.
    pub fn ceiling_for(&self, failures: u32) -> Duration {
        Duration::from_millis(self.ceiling_ms(failures))
    }

    fn ceiling_ms(&self, failures: u32) -> u64 {
        let growth = u64::from(self.factor).saturating_pow(failures);
        self.base_ms.saturating_mul(growth).min(self.cap_ms)
    }
}

/// Backoff state for one address: consecutive failures and the next attempt.
///
/// Create one per address with [`Backoff::new`]; call [`Backoff::on_failure`] each time a
/// connection attempt fails (or an established connection is lost), and
/// [`Backoff::on_connected`] when a connection comes up — it counts as a success once it has
/// lasted `stable_after_ms` — or [`Backoff::on_success`] for an unconditional reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    cfg: BackoffConfig,
    failures: u32,
    next_attempt: Option<Timestamp>,
    /// When the current connection came up, while it has not yet proven stable.
    connected_since: Option<Timestamp>,
}

impl Backoff {
    /// A backoff with no failures and no scheduled attempt (the address may be tried at
    /// once). `cfg` should have passed [`BackoffConfig::validate`].
    pub fn new(cfg: BackoffConfig) -> Self {
        Backoff {
            cfg,
            failures: 0,
            next_attempt: None,
            connected_since: None,
        }
    }

    /// Records one more failure at `now` and returns when to try again:
    /// `now + d` with `d` drawn uniformly (to the nanosecond) from
    /// `[0, min(cap, base × factor^n)]`, where `n` is the number of failures before this one.
    /// The result is also remembered as [`Backoff::next_attempt`]. Never overflows: the bound
    /// saturates and the returned instant saturates at [`Timestamp::MAX`].
    ///
    /// When this failure ends a connection that came up ([`Backoff::on_connected`]) at least
    /// `stable_after_ms` ago, that connection was a success: the count restarts from zero
    /// before this failure is added.
    pub fn on_failure(&mut self, now: Timestamp, rng: &mut SeededRng) -> Timestamp {
        if let Some(since) = self.connected_since.take() {
            let lasted = now.saturating_duration_since(since);
            if lasted >= Duration::from_millis(self.cfg.stable_after_ms) {
                self.failures = 0;
            }
        }
        let ceiling_ns = self
            .cfg
            .ceiling_ms(self.failures)
            .saturating_mul(NANOS_PER_MS);
        let delay_ns = match ceiling_ns.checked_add(1) {
            Some(bound) => rng.below(bound),
            None => rng.next_u64(),
        };
        self.failures = self.failures.saturating_add(1);
        let at = now + Duration::from_nanos(delay_ns);
        self.next_attempt = Some(at);
        at
    }

    /// Records that the peer ended the current connection because it is full. Call it just
    /// before the [`Backoff::on_failure`] for that close: however long the connection lasted,
    /// it does not count as a success (unless `stable_after_ms` is 0, which made it one when
    /// it came up), so a peer that keeps sending us away is redialed ever more slowly.
    pub fn on_refused(&mut self) {
        self.connected_since = None;
    }

    /// Records a successful connection: the failure count goes back to zero, the scheduled
    /// attempt is dropped and the next failure starts again from `base`.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.next_attempt = None;
        self.connected_since = None;
    }

    /// Records that a connection came up at `now`. With `stable_after_ms` zero that is a
    /// success at once; otherwise it becomes one only if the connection lasts that long,
    /// judged by the [`Backoff::on_failure`] that records its end. So a peer that accepts
    /// and soon drops us keeps adding failures.
    pub fn on_connected(&mut self, now: Timestamp) {
        if self.cfg.stable_after_ms == 0 {
            self.on_success();
        } else {
            self.next_attempt = None;
            self.connected_since = Some(now);
        }
    }

    /// Consecutive failures since creation or the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next attempt is due, as returned by the last [`Backoff::on_failure`];
    /// `None` if nothing failed since creation or the last success (try at once).
    pub fn next_attempt(&self) -> Option<Timestamp> {
        self.next_attempt
    }

    /// Whether a non-persistent address should be forgotten: true once `failures` reaches
    /// `give_up_after`. Persistent addresses ignore it.
    pub fn should_give_up(&self) -> bool {
        self.failures >= self.cfg.give_up_after
    }

    /// The upper bound of the delay the next [`Backoff::on_failure`] will draw:
    /// `min(cap, base × factor^failures)`. Never decreases until [`Backoff::on_success`],
    /// and never exceeds `cap`.
    pub fn ceiling(&self) -> Duration {
        self.cfg.ceiling_for(self.failures)
    }

    /// The configuration this backoff uses.
    pub fn config(&self) -> &BackoffConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rng(seed: u8) -> SeededRng {
        SeededRng::from_seed([seed; 32])
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = BackoffConfig::default();
        c.validate().unwrap();
        assert_eq!(
            (
                c.base_ms,
                c.factor,
                c.cap_ms,
                c.give_up_after,
                c.stable_after_ms
            ),
            (1000, 2, 300_000, 8, 60_000)
        );
    }

    #[test]
    fn validation_names_the_field() {
        let field = |c: BackoffConfig| c.validate().unwrap_err().field;
        let d = BackoffConfig::default;
        assert_eq!(
            field(BackoffConfig { base_ms: 0, ..d() }),
            "reconnect.base_ms"
        );
        assert_eq!(
            field(BackoffConfig { factor: 0, ..d() }),
            "reconnect.factor"
        );
        let e = BackoffConfig { cap_ms: 999, ..d() }.validate().unwrap_err();
        assert_eq!(e.field, "reconnect.cap_ms");
        assert!(e.rule.contains("999") && e.rule.contains("1000"), "{e}");
        assert_eq!(
            field(BackoffConfig {
                give_up_after: 0,
                ..d()
            }),
            "reconnect.give_up_after"
        );
        BackoffConfig {
            factor: 1,
            cap_ms: 1000,
            ..d()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn serde_fills_defaults_and_rejects_unknown_fields() {
        let c: BackoffConfig = toml::from_str("cap_ms = 60000").unwrap();
        assert_eq!(
            c,
            BackoffConfig {
                cap_ms: 60_000,
                ..Default::default()
            }
        );
        assert!(toml::from_str::<BackoffConfig>("cap = 60000").is_err());
        let back: BackoffConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut r = rng(1);
        let mut seen = Vec::new();
        for _ in 0..12 {
            seen.push(b.ceiling().as_secs());
            b.on_failure(Timestamp::ZERO, &mut r);
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn failures_schedule_and_success_resets() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut r = rng(2);
        assert_eq!((b.failures(), b.next_attempt()), (0, None));
        let now = Timestamp::from_secs(100);
        let at = b.on_failure(now, &mut r);
        assert!(at >= now && at <= now + Duration::from_secs(1));
        assert_eq!(b.next_attempt(), Some(at));
        assert_eq!(b.failures(), 1);
        for i in 1..8 {
            assert!(!b.should_give_up(), "after {i} failures");
            b.on_failure(now, &mut r);
        }
        assert!(b.should_give_up());
        b.on_success();
        assert_eq!((b.failures(), b.next_attempt()), (0, None));
        assert!(!b.should_give_up());
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        assert_eq!(b.config(), &BackoffConfig::default());
    }

    #[test]
    fn only_a_connection_that_lasts_resets_the_count() {
        let cfg = BackoffConfig {
            stable_after_ms: 60_000,
            ..BackoffConfig::default()
        };
        let mut b = Backoff::new(cfg.clone());
        let mut r = rng(9);
        let t0 = Timestamp::from_secs(10);
        b.on_failure(t0, &mut r);
        // Up for 5 s, then dropped: one more failure, not a reset.
        b.on_connected(t0);
        b.on_failure(t0 + Duration::from_secs(5), &mut r);
        assert_eq!(b.failures(), 2);
        // Up for a minute: the count restarts, and the drop is the first failure.
        b.on_connected(t0);
        b.on_failure(t0 + Duration::from_secs(60), &mut r);
        assert_eq!(b.failures(), 1);
        // A dial failure after that is not a connection ending: it just adds up.
        b.on_failure(t0 + Duration::from_secs(61), &mut r);
        assert_eq!(b.failures(), 2);
        // With stable_after_ms zero, coming up is a success at once.
        let mut quick = Backoff::new(BackoffConfig {
            stable_after_ms: 0,
            ..cfg
        });
        quick.on_failure(t0, &mut r);
        quick.on_connected(t0);
        assert_eq!(quick.failures(), 0);
        assert_eq!(quick.next_attempt(), None);
    }

    #[test]
    fn a_peer_that_sends_us_away_for_want_of_room_never_resets_the_count() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut r = rng(10);
        let t0 = Timestamp::from_secs(10);
        b.on_failure(t0, &mut r);
        // Up for an hour, then evicted: still one more failure.
        b.on_connected(t0);
        b.on_refused();
        b.on_failure(t0 + Duration::from_secs(3600), &mut r);
        assert_eq!(b.failures(), 2);
        assert_eq!(b.ceiling(), Duration::from_secs(4));
        // The next connection that lasts and ends otherwise is a success again.
        b.on_connected(t0 + Duration::from_secs(3600));
        b.on_failure(t0 + Duration::from_secs(7200), &mut r);
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let cfg = BackoffConfig {
            base_ms: u64::MAX,
            factor: u32::MAX,
            cap_ms: u64::MAX,
            give_up_after: u32::MAX,
            stable_after_ms: u64::MAX,
        };
        let mut b = Backoff::new(cfg.clone());
        b.failures = u32::MAX - 1;
        assert_eq!(b.ceiling(), Duration::from_millis(u64::MAX));
        let at = b.on_failure(Timestamp::MAX, &mut rng(3));
        assert_eq!(at, Timestamp::MAX);
        b.on_failure(Timestamp::ZERO, &mut rng(3));
        assert_eq!(b.failures(), u32::MAX, "the count saturates");
        assert!(b.should_give_up());
        assert_eq!(cfg.ceiling_for(u32::MAX), Duration::from_millis(u64::MAX));
        // factor 1: no growth at all.
        let flat = BackoffConfig {
            factor: 1,
            ..Default::default()
        };
        assert_eq!(flat.ceiling_for(u32::MAX), Duration::from_secs(1));
    }

    /// `min(cap, base × factor^n)` in milliseconds, computed independently in u128.
    fn reference_ceiling_ms(cfg: &BackoffConfig, n: u32) -> u128 {
        let cap = u128::from(cfg.cap_ms);
        let mut v = u128::from(cfg.base_ms);
        for _ in 0..n {
            if v >= cap {
                break;
            }
            v *= u128::from(cfg.factor);
        }
        v.min(cap)
    }

    fn any_config() -> impl Strategy<Value = BackoffConfig> {
        (
            prop_oneof![1u64..10_000, 1u64..=u64::MAX],
            prop_oneof![1u32..5, 1u32..=u32::MAX],
            prop_oneof![0u64..1_000_000, any::<u64>()],
            1u32..20,
        )
            .prop_map(|(base_ms, factor, extra, give_up_after)| BackoffConfig {
                base_ms,
                factor,
                cap_ms: base_ms.saturating_add(extra),
                give_up_after,
                ..BackoffConfig::default()
            })
    }

    proptest! {
        #[test]
        fn every_delay_is_within_the_ceiling(
            cfg in any_config(),
            seed in any::<[u8; 32]>(),
            start in 0u64..1 << 62,
            failures in 1usize..80,
        ) {
            prop_assert!(cfg.validate().is_ok());
            let mut b = Backoff::new(cfg.clone());
            let mut r = SeededRng::from_seed(seed);
            let now = Timestamp::from_nanos(start);
            for n in 0..failures as u32 {
                let bound_ms = reference_ceiling_ms(&cfg, n);
                prop_assert_eq!(b.ceiling().as_millis(), bound_ms);
                let at = b.on_failure(now, &mut r);
                prop_assert!(at >= now);
                let delay = at.saturating_duration_since(now).as_nanos();
                prop_assert!(delay <= bound_ms * u128::from(NANOS_PER_MS));
                prop_assert_eq!(b.next_attempt(), Some(at));
                prop_assert_eq!(b.failures(), n + 1);
            }
        }

        #[test]
        fn ceiling_is_monotone_and_capped(cfg in any_config(), steps in 1u32..200) {
            let mut b = Backoff::new(cfg.clone());
            let mut r = SeededRng::from_seed([0; 32]);
            let mut prev = b.ceiling();
            prop_assert_eq!(prev, Duration::from_millis(cfg.base_ms));
            for _ in 0..steps {
                b.on_failure(Timestamp::ZERO, &mut r);
                let c = b.ceiling();
                prop_assert!(c >= prev);
                prop_assert!(c <= Duration::from_millis(cfg.cap_ms));
                prev = c;
            }
            if cfg.factor >= 2 && steps >= 64 {
                prop_assert_eq!(prev, Duration::from_millis(cfg.cap_ms), "reaches the cap");
            }
        }

        #[test]
        fn jitter_spreads_over_the_whole_range(seed in any::<[u8; 32]>(), failures in 0u32..12) {
            let cfg = BackoffConfig::default();
            let bound = cfg.ceiling_for(failures);
            let half = bound / 2;
            let mut r = SeededRng::from_seed(seed);
            let mut b = Backoff::new(cfg);
            let (mut low, mut high) = (0, 0);
            let mut delays = std::collections::BTreeSet::new();
            for _ in 0..256 {
                b.on_success();
                for _ in 0..failures {
                    b.on_failure(Timestamp::ZERO, &mut r);
                }
                let d = b.on_failure(Timestamp::ZERO, &mut r).saturating_duration_since(Timestamp::ZERO);
                prop_assert!(d <= bound);
                if d < half { low += 1 } else { high += 1 }
                delays.insert(d);
            }
            prop_assert!(delays.len() > 1, "delays are not all equal");
            prop_assert!(low > 0 && high > 0, "both halves: {} low, {} high", low, high);
        }

        #[test]
        fn success_resets_everything(cfg in any_config(), failures in 0u32..100, seed in any::<[u8; 32]>()) {
            let mut b = Backoff::new(cfg.clone());
            let mut r = SeededRng::from_seed(seed);
            for _ in 0..failures {
                b.on_failure(Timestamp::from_secs(5), &mut r);
            }
            prop_assert_eq!(b.should_give_up(), failures >= cfg.give_up_after);
            b.on_success();
            prop_assert_eq!(b.failures(), 0);
            prop_assert_eq!(b.next_attempt(), None);
            prop_assert!(!b.should_give_up());
            prop_assert_eq!(b.ceiling(), Duration::from_millis(cfg.base_ms.min(cfg.cap_ms)));
            prop_assert_eq!(&b, &Backoff::new(cfg));
        }
    }
}
