//! Injected time. The core never reads a clock: every call that can depend on time takes a
//! [`Timestamp`] that the caller read from its own monotonic clock (or a simulator's virtual one).

use core::fmt;
use core::ops::{Add, AddAssign};
use core::time::Duration;

/// A point on the caller's monotonic clock, in nanoseconds since an epoch the caller picks.
///
/// The epoch never matters to the core: it only compares timestamps and adds durations.
/// Adapters typically use "nanoseconds since the adapter started"; simulators start at zero.
/// Arithmetic saturates, so a far-future deadline never wraps around into the past.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The latest representable instant; used as "never".
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// A timestamp `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    /// A timestamp `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later (a clock that the
    /// caller fed out of order never produces a negative or panicking duration).
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        self.saturating_add(rhs)
    }
}

impl AddAssign<Duration> for Timestamp {
    fn add_assign(&mut self, rhs: Duration) {
        *self = self.saturating_add(rhs);
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// The earliest of two optional deadlines (`None` means "no deadline").
pub(crate) fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Timestamp::MAX;
        assert_eq!(t + Duration::from_secs(1), Timestamp::MAX);
        assert_eq!(
            Timestamp::from_secs(1).saturating_duration_since(Timestamp::from_secs(2)),
            Duration::ZERO
        );
        assert_eq!(
            Timestamp::from_secs(3).saturating_duration_since(Timestamp::from_secs(1)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn earliest_ignores_missing_deadlines() {
        let a = Some(Timestamp::from_secs(5));
        let b = Some(Timestamp::from_secs(3));
        assert_eq!(earliest(a, b), b);
        assert_eq!(earliest(a, None), a);
        assert_eq!(earliest(None, None), None);
    }
}
