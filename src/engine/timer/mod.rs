//! Deadlines: a hashed timer wheel with O(1) schedule and cancel.
//!
//! Time is in milliseconds since the shard started ([`Millis`]); a tick is
//! `tick_ms` of them. A connection keeps one entry for its earliest possible
//! deadline; activity only records a timestamp, and the shard re-checks the
//! real deadline lazily when the entry fires (re-scheduling if it moved).

mod wheel;

pub use wheel::{TimerKey, Wheel};

/// Milliseconds since the owning shard started.
pub type Millis = u64;
