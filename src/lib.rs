//! holdfast: a TCP server engine for Linux boxes that hold many connections
//! and must not fall over.
//!
//! The application (a [`service::Service`]) sees complete frames and writes
//! replies; it never touches a socket, a buffer size, a timeout or a thread.
//! The layers, from the outside in:
//!
//! - [`server`]: binds, starts one [`shard`] per core, handles signals and
//!   the graceful shutdown, joins.
//! - [`shard`]: one event loop on one thread: accepts, drives connections,
//!   fires deadlines. Nothing on its hot path is shared with other shards.
//! - [`driver`]: every syscall on a connection's socket: reads into the
//!   input ring, writes from the output ring, to EAGAIN.
//! - [`conn`]: one connection's state, its two rings, its deadlines; the
//!   connection table (slab + generation).
//! - [`buffer`]: fixed-capacity byte rings and their per-shard pool.
//! - [`codec`]: frames out of the input ring, framing into the output ring.
//! - [`service`]: the application interface and the built-in echo service.
//! - [`timer`]: the hashed timer wheel behind every deadline.
//! - [`metrics`]: per-shard counters, Prometheus text, the admin endpoint.
//! - [`upstream`]: calling other servers from a service: per-upstream
//!   pools of connections in the shard's own loop, the replies clients
//!   await (in request order), the circuit breaker and the reconnect
//!   backoff.
//! - [`proxy`]: the RESP proxy's key placement, command routing, split and
//!   merge (its service is [`service::Proxy`], behind `holdfast proxy`).
//! - [`config`] and [`cli`]: the settings, their bounds, the command line.
//! - [`bench`](mod@bench): the load generator behind `holdfast bench` (a client, not
//!   a layer of the server).
//! - [`sys`]: socket options, RLIMIT_NOFILE.
//!
//! Data flows one way: socket → input ring → codec → service → output ring
//! → socket.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod buffer;
pub mod cli;
pub mod codec;
pub mod config;
pub mod conn;
pub mod driver;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod service;
pub mod shard;
pub mod sys;
pub mod timer;
pub mod upstream;
