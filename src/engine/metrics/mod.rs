//! Numbers: per-shard counters that only their shard writes, summed by the
//! admin thread at scrape time. A shard never waits on a lock to count.

pub mod render;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Why a connection was closed; one counted label value each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer finished (FIN) and every reply was flushed.
    Peer,
    /// No traffic at all for `--idle-timeout`.
    IdleTimeout,
    /// A started frame did not complete within `--read-timeout`.
    ReadTimeout,
    /// Pending output made no progress for `--write-timeout`.
    WriteTimeout,
    /// The stream was corrupt (bad or oversized frame).
    ProtocolError,
    /// The service wrote more than it reserved (a service bug).
    OutputOverflow,
    /// The service panicked on this connection's frame.
    Panic,
    /// The peer reset the connection (ECONNRESET, EPIPE, ...).
    Reset,
    /// Closed by a graceful shutdown.
    Shutdown,
    /// Pushes queued past `--slow-consumer-bytes` (`--slow-consumer close`).
    SlowConsumer,
    /// Sent nothing within `--heartbeat-timeout` of a heartbeat ping.
    HeartbeatTimeout,
    /// `--proxy-protocol`: the first bytes were no PROXY header of an
    /// accepted version, or the peer closed before sending one.
    ProxyMissing,
    /// `--proxy-protocol`: the PROXY header broke the specification (or
    /// was cut short by the peer's close).
    ProxyMalformed,
    /// `--proxy-protocol`: the PROXY header was not whole within
    /// `--proxy-timeout`.
    ProxyTimeout,
    /// A per-address limit turned the client its PROXY header named away
    /// (also counted in `rejected_total` by the limit).
    Refused,
    /// The kernel gave up on the peer (ETIMEDOUT): `--tcp-keepalive`
    /// probes or, with `--tcp-user-timeout`, sent data went unanswered.
    DeadPeer,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [CloseReason; 16] = [
        CloseReason::Peer,
        CloseReason::IdleTimeout,
        CloseReason::ReadTimeout,
        CloseReason::WriteTimeout,
        CloseReason::ProtocolError,
        CloseReason::OutputOverflow,
        CloseReason::Panic,
        CloseReason::Reset,
        CloseReason::Shutdown,
        CloseReason::SlowConsumer,
        CloseReason::HeartbeatTimeout,
        CloseReason::ProxyMissing,
        CloseReason::ProxyMalformed,
        CloseReason::ProxyTimeout,
        CloseReason::Refused,
        CloseReason::DeadPeer,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Peer => "peer",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::ReadTimeout => "read_timeout",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::OutputOverflow => "output_overflow",
            CloseReason::Panic => "panic",
            CloseReason::Reset => "reset",
            CloseReason::Shutdown => "shutdown",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::ProxyMissing => "proxy_missing",
            CloseReason::ProxyMalformed => "proxy_malformed",
            CloseReason::ProxyTimeout => "proxy_timeout",
            CloseReason::Refused => "refused",
            CloseReason::DeadPeer => "dead_peer",
        }
    }

    /// Index into per-reason arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a pushed message was not written to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The connection closed before the message reached it.
    Gone,
    /// The connection had `--slow-consumer-bytes` queued
    /// (`--slow-consumer drop`).
    SlowConsumer,
    /// Larger than the connection's output ring can ever hold (the
    /// service's `deliver_reserve` said so).
    TooLarge,
    /// This shard's service call could not mail it to another shard
    /// (that shard's mailbox was full).
    MailboxFull,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 4] = [
        DropReason::Gone,
        DropReason::SlowConsumer,
        DropReason::TooLarge,
        DropReason::MailboxFull,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Gone => "gone",
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::TooLarge => "too_large",
            DropReason::MailboxFull => "mailbox_full",
        }
    }

    /// Index into per-reason arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a new connection was turned away at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// `--max-conns` connections were already open.
    MaxConns,
    /// The process ran out of file descriptors (EMFILE/ENFILE).
    FdLimit,
    /// `--proxy-protocol`: the peer is not in `--proxy-trusted`.
    ProxyUntrusted,
    /// `--max-conns-per-ip` connections from the client's address were open.
    PerIp,
    /// The client's address opened connections faster than
    /// `--conn-rate-per-ip`.
    ConnRate,
    /// `--ip-table-max` addresses, each with a connection open, were held.
    IpTableFull,
    /// Shed: more than `--shed-accept-queue` connections waited to be
    /// accepted.
    ShedQueue,
    /// Shed: loop turns took longer than `--shed-loop-lag`.
    ShedLag,
    /// Shed: fewer than `--shed-fds-left` descriptors were left.
    ShedFds,
    /// Shed: the rings held more than `--shed-buffer-memory` of the budget.
    ShedMemory,
}

impl RejectReason {
    /// Every reason, in label order.
    pub const ALL: [RejectReason; 10] = [
        RejectReason::MaxConns,
        RejectReason::FdLimit,
        RejectReason::ProxyUntrusted,
        RejectReason::PerIp,
        RejectReason::ConnRate,
        RejectReason::IpTableFull,
        RejectReason::ShedQueue,
        RejectReason::ShedLag,
        RejectReason::ShedFds,
        RejectReason::ShedMemory,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MaxConns => "max_conns",
            RejectReason::FdLimit => "fd_limit",
            RejectReason::ProxyUntrusted => "proxy_untrusted",
            RejectReason::PerIp => "per_ip",
            RejectReason::ConnRate => "conn_rate",
            RejectReason::IpTableFull => "ip_table_full",
            RejectReason::ShedQueue => "shed_accept_queue",
            RejectReason::ShedLag => "shed_loop_lag",
            RejectReason::ShedFds => "shed_fds_left",
            RejectReason::ShedMemory => "shed_buffer_memory",
        }
    }

    /// Index into per-reason arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A monotonically increasing count written by one thread (its shard) and
/// read by any. Writing is a plain load + store, not a locked read-modify-
/// write: there is only one writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (single writer only).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    /// Adds 1 (single writer only).
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down, written by one thread.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value (single writer only).
    #[inline]
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the loop-turn histogram buckets; `+Inf` is
/// implied after the last.
pub const LOOP_TURN_BUCKETS: [f64; 10] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 1.0,
];

/// A fixed-bucket histogram written by one thread.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Count per bucket of [`LOOP_TURN_BUCKETS`], plus one for `+Inf`
    /// (non-cumulative; the renderer accumulates).
    pub buckets: [Counter; LOOP_TURN_BUCKETS.len() + 1],
    /// Sum of observations, in nanoseconds.
    pub sum_ns: Counter,
    /// Number of observations.
    pub count: Counter,
}

impl Histogram {
    /// Records one observation of `ns` nanoseconds (single writer only).
    pub fn observe_ns(&self, ns: u64) {
        let seconds = ns as f64 / 1e9;
        let index = LOOP_TURN_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LOOP_TURN_BUCKETS.len());
        self.buckets[index].inc();
        self.sum_ns.add(ns);
        self.count.inc();
    }
}

/// Upper bounds (seconds) of the upstream latency histogram buckets, from
/// the request handed to a connection to its reply read; `+Inf` is implied.
pub const UPSTREAM_LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The upstream latency histogram of one upstream on one shard.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Count per bucket of [`UPSTREAM_LATENCY_BUCKETS`], plus `+Inf`
    /// (non-cumulative).
    pub buckets: [Counter; UPSTREAM_LATENCY_BUCKETS.len() + 1],
    /// Sum of observations, in microseconds.
    pub sum_us: Counter,
}

impl LatencyHistogram {
    /// Records one observation of `us` microseconds (single writer only).
    pub fn observe_us(&self, us: u64) {
        let seconds = us as f64 / 1e6;
        let index = UPSTREAM_LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(UPSTREAM_LATENCY_BUCKETS.len());
        self.buckets[index].inc();
        self.sum_us.add(us);
    }
}

/// Why a request to an upstream failed, as the metrics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// A connect attempt failed (refused, unreachable, `--connect-timeout`);
    /// counted once per attempt, not per request that waited on it.
    Connect,
    /// A request got no reply within `--upstream-timeout`.
    Timeout,
    /// A request's connection broke before its reply (reset, closed, bytes
    /// that are not a reply).
    Reset,
    /// A request or its reply was larger than a connection ring.
    TooLarge,
}

impl UpstreamError {
    /// Every kind, in label order.
    pub const ALL: [UpstreamError; 4] = [
        UpstreamError::Connect,
        UpstreamError::Timeout,
        UpstreamError::Reset,
        UpstreamError::TooLarge,
    ];

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Reset => "reset",
            UpstreamError::TooLarge => "too_large",
        }
    }

    /// Index into per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a request was refused at once, without being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailFast {
    /// The upstream's circuit breaker is open (or half-open with its
    /// probes out).
    BreakerOpen,
    /// The connection's pipeline and its wait queue are full.
    QueueFull,
    /// The last connect failed and the reconnect backoff has not elapsed.
    Backoff,
}

impl FailFast {
    /// Every reason, in label order.
    pub const ALL: [FailFast; 3] = [
        FailFast::BreakerOpen,
        FailFast::QueueFull,
        FailFast::Backoff,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailFast::BreakerOpen => "breaker_open",
            FailFast::QueueFull => "queue_full",
            FailFast::Backoff => "backoff",
        }
    }

    /// Index into per-reason arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What one shard counts about one upstream.
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    /// Requests sent (or queued to be sent) to the upstream.
    pub requests: Counter,
    /// Health checks sent (or queued to be sent).
    pub health_checks: Counter,
    /// Replies that sent their request to another upstream (`-MOVED`,
    /// `-ASK`).
    pub redirects: Counter,
    /// Failures, by [`UpstreamError::index`].
    pub errors: [Counter; 4],
    /// Requests refused at once, by [`FailFast::index`].
    pub fail_fast: [Counter; 3],
    /// Connect attempts.
    pub connects: Counter,
    /// Request-to-reply latency.
    pub latency: LatencyHistogram,
    /// Ready connections owing at least one reply.
    pub conns_in_use: Gauge,
    /// Ready connections owing none.
    pub conns_idle: Gauge,
    /// Connections still connecting.
    pub conns_connecting: Gauge,
    /// Requests waiting for a connection.
    pub queued: Gauge,
    /// The breaker's state ([`BreakerState::index`]).
    pub breaker_state: Gauge,
    /// Breaker transitions from → to ([`BreakerState::index`]), copied
    /// from the breaker's own counts.
    pub transitions: [[Gauge; 3]; 3],
}

/// Everything one shard counts. The shard writes, the admin thread reads.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Client connections accepted (not counting rejected ones).
    pub accepted: Counter,
    /// Connections turned away, by [`RejectReason::index`].
    pub rejected: [Counter; RejectReason::ALL.len()],
    /// Connections closed, by [`CloseReason::index`].
    pub closed: [Counter; CloseReason::ALL.len()],
    /// Service calls that panicked.
    pub handler_panics: Counter,
    /// Frames served.
    pub frames: Counter,
    /// Bytes read from client sockets.
    pub bytes_read: Counter,
    /// Bytes written to client sockets.
    pub bytes_written: Counter,
    /// Loop turns (one poll and the work after it).
    pub loop_iterations: Counter,
    /// Times a connection was throttled by `--request-rate`.
    pub throttled: Counter,
    /// Milliseconds connections spent throttled (counted as each is woken).
    pub throttled_ms: Counter,
    /// Times a client connection waited for `--max-buffer-memory`.
    pub memory_waits: Counter,
    /// Milliseconds client connections spent waiting for buffer memory
    /// (counted as each is woken).
    pub memory_wait_ms: Counter,
    /// Units of buffer memory taken past the budget (rings a connection
    /// already held: a receive in flight, a push, an upstream link).
    pub memory_overdraws: Counter,
    /// Client connections waiting for buffer memory now.
    pub memory_waiting: Gauge,
    /// Connections waiting in the listener's accept queue, as last sampled
    /// (with `--shed-accept-queue`).
    pub accept_queue: Gauge,
    /// The longest loop turn's work, in µs, of the last 10 ms window (with
    /// `--shed-loop-lag`).
    pub loop_lag_us: Gauge,
    /// Descriptors left for connections, as of the last accept (with
    /// `--shed-fds-left`).
    pub fds_left: Gauge,
    /// 1 while the shard sheds new connections.
    pub shedding: Gauge,
    /// Time one loop turn spent on work (not waiting in poll).
    pub loop_turn: Histogram,
    /// File descriptors this shard holds besides connections (listener,
    /// poller, waker, spare fd), for `holdfast_fd_unaccounted`.
    pub fds_own: Gauge,
    /// What only the io_uring driver counts (zero under epoll).
    pub uring: UringMetrics,
    /// Replies awaited by this shard's clients (from upstreams, or queued
    /// behind such).
    pub pending: Gauge,
    /// Bytes the buffers of awaited replies hold (idle ones included).
    pub pending_bytes: Gauge,
    /// Replies dropped and split commands refused for
    /// `--max-pending-bytes` (a count, copied from the shard's own).
    pub pending_bytes_refused: Gauge,
    /// Times a client's reply waited for `--max-pending-bytes` (a count,
    /// copied from the shard's own).
    pub pending_bytes_paused: Gauge,
    /// Upstream connections open (each an fd).
    pub upstream_conns_open: Gauge,
    /// Per upstream, in the order of the settings; empty without upstreams.
    pub upstreams: Box<[UpstreamMetrics]>,
    /// Pushed messages written to this shard's connections.
    pub pushed: Counter,
    /// Pushed messages not written, by [`DropReason::index`].
    pub push_dropped: [Counter; DropReason::ALL.len()],
    /// Pushes other threads could not mail to this shard (its mailbox was
    /// full): written by the senders, so an atomic add.
    pub mailbox_refused: AtomicU64,
    /// Bytes of pushes queued behind full output rings (slow consumers).
    pub push_queued_bytes: Gauge,
    /// Groups with a member on this shard.
    pub groups: Gauge,
    /// Heartbeat pings sent.
    pub heartbeats: Counter,
}

impl ShardMetrics {
    /// Metrics for a shard that calls `upstreams` upstreams.
    pub fn with_upstreams(upstreams: usize) -> ShardMetrics {
        ShardMetrics {
            upstreams: (0..upstreams).map(|_| UpstreamMetrics::default()).collect(),
            ..ShardMetrics::default()
        }
    }
}

/// The io_uring driver's own counters.
#[derive(Debug, Default)]
pub struct UringMetrics {
    /// `io_uring_enter` calls (each submits and, most often, waits).
    pub enters: Counter,
    /// Receives ended by an empty provided-buffer pool (posted again on a
    /// later turn).
    pub enobufs: Counter,
    /// Times the completion queue had overflowed (completions held by the
    /// kernel until the next enter).
    pub cq_overflow: Counter,
    /// Sends that wrote fewer bytes than asked (the rest is sent again).
    pub short_sends: Counter,
    /// Completions that named no live operation: an invariant violation
    /// (asserted in debug builds); their buffer or fd is still released.
    pub stray_completions: Counter,
}

/// What the admin endpoint reads: every shard's metrics and the process's
/// state.
#[derive(Debug)]
pub struct Registry {
    /// One entry per shard, in shard order.
    pub shards: Vec<std::sync::Arc<ShardMetrics>>,
    /// True while accepting; false once draining (`/readyz` answers 503).
    pub ready: AtomicBool,
    /// Which process this is across binary upgrades: 1 for one started
    /// afresh, the old process's plus one for one that took its
    /// listeners (`holdfast_generation`).
    pub generation: AtomicU64,
    /// The driver in use (`epoll` or `uring`), for `holdfast_backend_info`.
    pub backend: &'static str,
    /// The upstreams' names as written (the `upstream` label), in the
    /// order of every shard's [`ShardMetrics::upstreams`].
    /// Reloads add names (`engine/reload/`); a removed upstream keeps its
    /// slot and name.
    pub upstreams: std::sync::Mutex<Vec<String>>,
    /// File descriptors the process holds outside the shards that are
    /// known and expected (stdio, the admin listener and poller, the
    /// signal pipe), for `holdfast_fd_unaccounted`.
    pub fds_other: AtomicUsize,
    /// Client addresses the per-address limits hold (written by their
    /// table, under its lock).
    pub ip_table_entries: std::sync::Arc<AtomicU64>,
    /// Bytes of `--max-buffer-memory` the shards have taken (written by the
    /// budget, `engine/memory.rs`).
    pub buffer_memory: std::sync::Arc<AtomicU64>,
    /// `--max-buffer-memory` in force (whole units of two rings).
    pub buffer_memory_limit: AtomicU64,
    /// Reloads of the settings (`engine/reload/`).
    pub config: ConfigMetrics,
}

/// What the reloads of the settings came to.
#[derive(Debug)]
pub struct ConfigMetrics {
    /// Reloads by [`ReloadResult`] (`holdfast_config_reloads_total`).
    pub reloads: [AtomicU64; ReloadResult::ALL.len()],
    /// 1 at start, one more per applied reload
    /// (`holdfast_config_generation`).
    pub generation: AtomicU64,
    /// The SHA-256 of the `--config` file in effect, in hex, or `none`
    /// (`holdfast_config_info`); written by reloads only.
    pub sha256: std::sync::Mutex<String>,
}

impl Default for ConfigMetrics {
    fn default() -> ConfigMetrics {
        ConfigMetrics {
            reloads: Default::default(),
            generation: AtomicU64::new(1),
            sha256: std::sync::Mutex::new("none".into()),
        }
    }
}

/// What one reload came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new settings are in effect (also when nothing changed).
    Applied,
    /// The file could not be read, parsed or validated: nothing changed.
    Invalid,
    /// The file changes a setting that cannot change live: nothing changed.
    Refused,
}

impl ReloadResult {
    /// Every result, in [`ReloadResult::index`] order.
    pub const ALL: [ReloadResult; 3] = [
        ReloadResult::Applied,
        ReloadResult::Invalid,
        ReloadResult::Refused,
    ];

    /// A dense index for per-result tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `result` label.
    pub fn name(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Invalid => "invalid",
            ReloadResult::Refused => "refused",
        }
    }
}

impl Registry {
    /// A registry over `shards` using `backend`, not yet ready (the server
    /// sets `ready` once every shard accepts) and with no other fds counted
    /// (the server adds stdio and its signal pipe; [`crate::engine::admin::spawn`] adds
    /// its own).
    pub fn new(shards: Vec<std::sync::Arc<ShardMetrics>>, backend: &'static str) -> Registry {
        Registry {
            shards,
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            backend,
            upstreams: std::sync::Mutex::new(Vec::new()),
            fds_other: AtomicUsize::new(0),
            ip_table_entries: std::sync::Arc::new(AtomicU64::new(0)),
            buffer_memory: std::sync::Arc::new(AtomicU64::new(0)),
            buffer_memory_limit: AtomicU64::new(0),
            config: ConfigMetrics::default(),
        }
    }
}

/// Where an upstream's circuit breaker stands (`upstream::breaker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed,
    /// Requests are refused until the cool-down ends.
    Open,
    /// A few probe requests decide between closing and reopening.
    HalfOpen,
}

impl BreakerState {
    /// Every state, in [`BreakerState::index`] order.
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    /// A dense index (0..3) for per-state tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label: `closed`, `open`, `half_open`.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}
