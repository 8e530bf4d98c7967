//! Calling upstreams without avalanches.
//!
//! The parts that decide rather than do: a circuit breaker per upstream
//! ([`breaker`]) and the reconnect backoff ([`backoff`]), plain state
//! machines driven by the caller with the time
//! ([`Millis`](crate::engine::timer::Millis)), so they never read a clock, sleep,
//! allocate after construction, or need a lock.
//!
//! The state a shard keeps: its pool per upstream address with lanes and
//! wait queues, a set per [`Dialect`](crate::engine::service::Dialect)
//! ([`pool`]), its upstream connections and what they send first
//! ([`conn`]), the
//! replies its clients await in request order ([`pending`]), and the
//! dispatch of a service's calls onto all that ([`dispatch`]). The shard's
//! loop drives the connections (`shard/upstream.rs`).
pub mod backoff;
pub mod breaker;
pub mod conn;
pub mod dispatch;
pub mod pending;
pub mod pool;

pub use dispatch::{Calls, Settings, Upstreams};
