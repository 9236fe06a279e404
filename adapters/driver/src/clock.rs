//! The adapter's clock: monotonic time as core timestamps.

use std::time::{Duration, Instant};

use silver_p2p_core::Timestamp;

/// Converts between `Instant` (what runtimes sleep on) and [`Timestamp`] (what the core
/// takes): nanoseconds since the clock was created.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// The current time. Read it fresh on every wake-up: a timer that fired late is handled
    /// as of now, never as of its old deadline.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.epoch.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64)
    }

    /// The instant of a core deadline.
    pub fn instant(&self, t: Timestamp) -> Instant {
        self.epoch + Duration::from_nanos(t.as_nanos())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
