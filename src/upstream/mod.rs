//! Calling upstreams without avalanches, the parts that decide rather than
//! do: a circuit breaker per upstream ([`breaker`]) and the reconnect
//! backoff ([`backoff`]). Both are plain state machines driven by the
//! caller with the time ([`Millis`](crate::timer::Millis)), so they never
//! read a clock, sleep, allocate after construction, or need a lock.
pub mod backoff;
pub mod breaker;
