//! The engine: everything between a socket and a [`service::Service`].
//!
//! From the outside in:
//!
//! - [`server`]: binds, starts one `shard` per core, handles signals and
//!   the graceful shutdown, joins.
//! - `shard`: one event loop on one thread: accepts, drives connections,
//!   fires deadlines. Nothing on its hot path is shared with other shards.
//! - `driver`: every syscall on the shard's sockets, behind one trait: epoll
//!   (through mio) or io_uring; the loop itself is in `shard`.
//! - `conn`: one connection's state, its two rings, its deadlines; the
//!   connection table (slab + generation).
//! - [`front`]: the front door: PROXY protocol headers, per-address
//!   limits and rates, socket options against dead peers.
//! - [`buffer`]: fixed-capacity byte rings and their per-shard pool.
//! - `memory`: `--max-buffer-memory`, the rings' process-wide budget, in
//!   units of two rings taken by shards in chunks.
//! - [`codec`]: frames out of the input ring, framing into the output ring;
//!   RESP replies read from upstreams.
//! - [`service`]: the application interface.
//! - [`push`]: the engine speaks first: connection handles, pushes from
//!   any shard or thread (per-shard mailboxes), groups and their
//!   process-wide directory.
//! - [`timer`]: the hashed timer wheel behind every deadline.
//! - `upstream`: calling other servers from a service: per-upstream
//!   pools of connections in the shard's own loop, the replies clients
//!   await (in request order), the circuit breaker and the reconnect
//!   backoff.
//! - [`metrics`]: per-shard counters, Prometheus text.
//! - [`admin`]: the admin HTTP endpoint (`/metrics`, `/healthz`,
//!   `/readyz`) on its own thread.
//! - [`reload`]: settings reloaded while running (SIGHUP, `POST /reload`):
//!   validated, diffed, published to the shards as a snapshot.
//! - `upgrade`: binary upgrade: the listeners handed to a new process
//!   over a Unix socket (SCM_RIGHTS).
//! - `sys`: socket options, RLIMIT_NOFILE.

pub mod admin;
pub mod buffer;
pub mod codec;
pub(crate) mod conn;
pub(crate) mod driver;
pub mod front;
pub(crate) mod memory;
pub mod metrics;
pub mod push;
pub mod reload;
pub mod server;
pub mod service;
pub(crate) mod shard;
pub(crate) mod sys;
pub mod timer;
pub(crate) mod upgrade;
pub(crate) mod upstream;
