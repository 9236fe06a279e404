//! The node level of the core (being assembled).

pub mod backoff;
pub mod ratelimit;
