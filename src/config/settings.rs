//! Every setting, declared once: its field, flag and file key (the field's
//! name in kebab case), help (the doc comment), default (`default_value`),
//! bounds (`bounds`) and which commands take it (`help_heading`: the
//! key-value store's settings are `serve`'s only, the upstreams' and the
//! breaker's `proxy`'s only). Relations between settings are checked in
//! `relations.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::bounds::{Range, Ratio, WithBounds, count, count32, millis, size, timeout};
use super::choices::{self, Admin, Backend, Jitter, KeyHash, Protocol, ReadFrom, SlowConsumer};
use super::live::WithLive;
use super::net::{KeepaliveBound, ProxyProtocol, TcpKeepalive, Trusted};
use super::relations::UPSTREAMS_MAX;
use super::units::{parse_duration, parse_size};

/// `--help` heading of the engine's limits.
pub const LIMITS: &str = "Limits";
/// `--help` heading of the settings only `holdfast serve` takes.
pub const STORE: &str = "Key-value store (resp)";
/// `--help` heading of who may connect, how often and how fast.
pub const FRONT: &str = "Front door";
/// `--help` heading of settings only `holdfast proxy` takes.
pub const UPSTREAMS: &str = "Upstreams";
/// `--help` heading of the breaker's settings (`holdfast proxy` only).
pub const BREAKER: &str = "Circuit breaker";
/// `--help` heading of the credentials clients give the proxy and the
/// proxy gives its upstreams (`holdfast proxy` only).
pub const AUTH: &str = "Authentication (proxy)";

/// The timer wheel ticks in milliseconds; a shorter deadline would fire
/// before a healthy peer on a busy box could answer.
pub const TIMEOUT_MIN: Duration = Duration::from_millis(10);
/// Longer than a day is "no timeout" in disguise, which is the failure mode
/// the timeouts exist to remove.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);
/// A deadline of the engine or of an upstream call.
const TIMEOUT: Range<Duration> = timeout(TIMEOUT_MIN, TIMEOUT_MAX);
/// The breaker's and the backoff's spans: past an hour they stop reacting.
const HOUR: Duration = Duration::from_secs(3600);
/// A ring indexes by masking, so its capacity is a power of two. Smallest:
/// below this, the header and a useful payload hardly fit. Largest: each
/// connection holds two, so this times `--max-conns` is the worst-case
/// memory; 64MiB is already far past any sane frame.
pub const BUFFER_RANGE: Range<usize> = size(64, 64 << 20).power_of_two();
/// The provided buffer ring is indexed by masking too.
pub const URING_BUFFERS_RANGE: Range<usize> = count(1, URING_ENTRIES_MAX).power_of_two();
/// A store, or a shard's awaited replies, larger than 1 TiB is a typo.
const TIB: u64 = 1 << 40;
/// Bounds the work of one loop turn (accepts) and the events array memory.
const BATCH_MAX: u64 = 65_536;
/// The kernel's limit on a provided buffer ring's and a submission queue's
/// entries.
const URING_ENTRIES_MAX: u64 = 32_768;
/// Requests per upstream connection, in flight or waiting (24 bytes of
/// bookkeeping each), and replies one client may await (each may hold up
/// to `--buffer` bytes).
const QUEUE_MAX: u64 = 65_536;

/// Every setting of `holdfast serve` and `holdfast proxy`. Build it with
/// [`Config::default`] or `config::load`, then call [`Config::validate`].
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Where clients connect
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000",
          value_parser = choices::address)]
    pub listen: SocketAddr,
    /// Wire protocol: echo | line | frame | resp (the proxy speaks resp only)
    #[arg(long, value_name = "NAME", default_value = "echo", value_parser = Protocol::parse)]
    pub protocol: Protocol,
    /// Metrics and health endpoint, or off
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:7001",
          value_parser = choices::admin)]
    pub admin: Admin,
    /// Shards (event loops, one thread each); 0 = one per CPU
    #[arg(long, value_name = "N", default_value = "0",
          bounds = count(0, 1024).note(" (0 means one per CPU)"))]
    pub threads: usize,
    /// Client connections per process; 0 = derived from the open-file limit
    /// at start-up. Each costs an fd, a slab slot and, while busy, two rings
    #[arg(long, value_name = "N", default_value = "0",
          bounds = count(0, 10_000_000).note(" (0 derives it from the open-file limit)"))]
    pub max_conns: usize,
    /// Capacity of each of a connection's two rings
    #[arg(long, value_name = "SIZE", default_value = "64KiB", bounds = BUFFER_RANGE)]
    pub buffer: usize,
    /// Largest frame payload; 0 = what fits in --buffer with the framing
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    pub max_frame: usize,
    /// No traffic at all for this long closes
    #[arg(long, value_name = "DUR", default_value = "60s",
          value_parser = parse_duration, bounds = TIMEOUT,
          live = true)]
    pub idle_timeout: Duration,
    /// A started frame must complete within this
    #[arg(long, value_name = "DUR", default_value = "10s",
          value_parser = parse_duration, bounds = TIMEOUT,
          live = true)]
    pub read_timeout: Duration,
    /// Pending output must make progress within this
    #[arg(long, value_name = "DUR", default_value = "10s",
          value_parser = parse_duration, bounds = TIMEOUT,
          live = true)]
    pub write_timeout: Duration,
    /// Drain time after SIGTERM/SIGINT; 0 closes at once
    #[arg(long, value_name = "DUR", default_value = "10s",
          value_parser = parse_duration, bounds = timeout(Duration::ZERO, TIMEOUT_MAX),
          live = true)]
    pub shutdown_grace: Duration,
    /// Serve binary upgrades on this Unix socket: a new process started with
    /// --upgrade-from on it receives the listening sockets, and this one then drains
    #[arg(long, value_name = "PATH")]
    pub upgrade_socket: Option<PathBuf>,
    /// Take the listening sockets of the process serving upgrades on this Unix socket
    /// instead of binding, then tell it to drain
    #[arg(long, value_name = "PATH")]
    pub upgrade_from: Option<PathBuf>,
    /// How long either side of an upgrade waits for the other (the sockets, then the
    /// new process's start); past it the old process keeps serving
    #[arg(long, value_name = "DUR", default_value = "10s", help_heading = LIMITS,
          value_parser = parse_duration, bounds = timeout(TIMEOUT_MIN, Duration::from_secs(600)))]
    pub upgrade_timeout: Duration,
    /// epoll | uring (uring needs a `--features uring` build) [default: uring in a uring build,
    /// falling back to epoll if the kernel refuses it; epoll otherwise]
    #[arg(long, value_name = "NAME", value_parser = Backend::parse)]
    pub backend: Option<Backend>,
    /// listen(2) backlog of each listener (the kernel caps it at net.core.somaxconn)
    #[arg(long, value_name = "N", default_value = "1024", help_heading = LIMITS,
          bounds = count32(1, 65_535))]
    pub backlog: u32,
    /// Accepts per loop turn per shard, so a connect storm cannot starve open connections
    #[arg(long, value_name = "N", default_value = "64", help_heading = LIMITS,
          bounds = count(1, BATCH_MAX),
          live = true)]
    pub accept_batch: usize,
    /// Readiness events taken per poll
    #[arg(long, value_name = "N", default_value = "1024", help_heading = LIMITS,
          bounds = count(1, BATCH_MAX))]
    pub events_max: usize,
    /// Bytes read per connection per loop turn before the others get their turn
    #[arg(long, value_name = "SIZE", default_value = "256KiB", help_heading = LIMITS,
          bounds = size(1, 1 << 30),
          live = true)]
    pub read_budget: usize,
    /// Idle rings a shard keeps for reuse (times --buffer is memory held idle)
    #[arg(long, value_name = "N", default_value = "64", help_heading = LIMITS,
          bounds = count(0, 1_000_000))]
    pub pool_free_max: usize,
    /// Bytes all rings together may hold (pooled idle ones too); a connection that needs a
    /// ring past it waits, not read from. 0 = half the cgroup's memory.max, or of the
    /// machine's memory
    #[arg(long, value_name = "SIZE", default_value = "0", help_heading = LIMITS,
          bounds = size(0, TIB).note(" (0 derives it from the cgroup's or the machine's memory)"))]
    pub max_buffer_memory: usize,
    /// Refuse to start when the worst-case memory of the settings, within
    /// --max-buffer-memory, exceeds the cgroup's memory limit (else a warning)
    #[arg(long, help_heading = LIMITS)]
    pub strict_memory: bool,
    /// Rings a shard allocates at start, at most --pool-free-max
    #[arg(long, value_name = "N", default_value = "0", help_heading = LIMITS,
          bounds = count(0, 1_000_000))]
    pub pool_prealloc: usize,
    /// A connection that sends nothing for this long gets the protocol's ping; 0 = no
    /// heartbeats
    #[arg(long, value_name = "DUR", default_value = "0s",
          value_parser = parse_duration, bounds = timeout(Duration::ZERO, TIMEOUT_MAX),
          live = true)]
    pub heartbeat_interval: Duration,
    /// After a heartbeat ping, a connection that sends nothing for this long is closed
    /// (heartbeat_timeout)
    #[arg(long, value_name = "DUR", default_value = "10s",
          value_parser = parse_duration, bounds = TIMEOUT,
          live = true)]
    pub heartbeat_timeout: Duration,
    /// What a push to a connection whose --slow-consumer-bytes are queued does: close
    /// (slow_consumer) | drop (the message, counted)
    #[arg(long, value_name = "POLICY", default_value = "close", help_heading = LIMITS,
          value_parser = SlowConsumer::parse,
          live = true)]
    pub slow_consumer: SlowConsumer,
    /// Pushed bytes a connection may have queued behind its full output ring
    #[arg(long, value_name = "SIZE", default_value = "1MiB", help_heading = LIMITS,
          bounds = size(0, TIB),
          live = true)]
    pub slow_consumer_bytes: usize,
    /// Messages a shard's mailbox holds (pushes from other shards and threads); past it a
    /// push is refused
    #[arg(long, value_name = "N", default_value = "4096", help_heading = LIMITS,
          bounds = count(1, 1 << 24))]
    pub mailbox: usize,
    /// Bytes a shard's mailbox holds, at least --buffer; also the most one service call
    /// may push
    #[arg(long, value_name = "SIZE", default_value = "64MiB", help_heading = LIMITS,
          bounds = size(64, TIB))]
    pub mailbox_bytes: usize,
    /// Groups (Pub/Sub channels and patterns) in the process; past it a join is refused
    #[arg(long, value_name = "N", default_value = "1000000", help_heading = LIMITS,
          bounds = count(1, 1 << 32))]
    pub max_groups: usize,
    /// Groups one connection may be in; past it a join is refused
    #[arg(long, value_name = "N", default_value = "10000", help_heading = LIMITS,
          bounds = count(1, 1 << 24))]
    pub max_memberships: usize,
    /// error | warn | info | debug | trace
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = choices::log_level,
          live = true)]
    pub log_level: log::LevelFilter,
    /// Pin shard i to CPU i (sched_setaffinity), modulo the CPUs this process may use
    #[arg(long)]
    pub pin_cores: bool,
    /// PROXY protocol header expected before every connection's bytes: off | v1 | v2 | any.
    /// Its client address is the one limits and logs use
    #[arg(long, value_name = "MODE", default_value = "off", help_heading = FRONT,
          value_parser = ProxyProtocol::parse)]
    pub proxy_protocol: ProxyProtocol,
    /// Sources that may send the PROXY header (required with it): addresses and blocks,
    /// comma-separated (127.0.0.1,10.0.0.0/8); a connection from elsewhere is refused
    #[arg(long, value_name = "CIDRS", default_value = "none", help_heading = FRONT,
          value_parser = Trusted::parse)]
    pub proxy_trusted: Trusted,
    /// The whole PROXY header must arrive within this of the accept
    #[arg(long, value_name = "DUR", default_value = "3s", help_heading = FRONT,
          value_parser = parse_duration, bounds = TIMEOUT,
          live = true)]
    pub proxy_timeout: Duration,
    /// Connections one client address may hold open (across all shards); 0 = no limit
    #[arg(long, value_name = "N", default_value = "0", help_heading = FRONT,
          bounds = count32(0, 10_000_000).note(" (0 means no limit)"),
          live = true)]
    pub max_conns_per_ip: u32,
    /// New connections per second one client address may open (a token bucket); 0 = no limit
    #[arg(long, value_name = "N", default_value = "0", help_heading = FRONT,
          bounds = count32(0, 1_000_000).note(" (0 means no limit)"),
          live = true)]
    pub conn_rate_per_ip: u32,
    /// New connections one address may open at once before --conn-rate-per-ip paces it
    /// (the bucket's size); 0 = one second's worth
    #[arg(long, value_name = "N", default_value = "0", help_heading = FRONT,
          bounds = count32(0, 1_000_000).note(" (0 means one second of --conn-rate-per-ip)"),
          live = true)]
    pub conn_burst_per_ip: u32,
    /// Leading bits of an IPv4 address that name one client for the per-address limits
    #[arg(long, value_name = "BITS", default_value = "32", help_heading = FRONT,
          bounds = count32(1, 32))]
    pub ipv4_prefix: u32,
    /// Leading bits of an IPv6 address that name one client (a /64 is one site)
    #[arg(long, value_name = "BITS", default_value = "64", help_heading = FRONT,
          bounds = count32(1, 128))]
    pub ipv6_prefix: u32,
    /// Client addresses the per-address limits track at once; 0 = --max-conns
    #[arg(long, value_name = "N", default_value = "0", help_heading = FRONT,
          bounds = count(0, 10_000_000).note(" (0 means --max-conns)"))]
    pub ip_table_max: usize,
    /// Frames per second one connection may send (a token bucket); past it the connection
    /// is not read from until tokens return. 0 = no limit
    #[arg(long, value_name = "N", default_value = "0", help_heading = FRONT,
          bounds = count32(0, 10_000_000).note(" (0 means no limit)"),
          live = true)]
    pub request_rate: u32,
    /// Frames one connection may send at once before --request-rate paces it; 0 = one
    /// second's worth
    #[arg(long, value_name = "N", default_value = "0", help_heading = FRONT,
          bounds = count32(0, 10_000_000).note(" (0 means one second of --request-rate)"),
          live = true)]
    pub request_burst: u32,
    /// TCP keepalive on client and upstream sockets: off, or IDLE,INTERVAL,COUNT (probe
    /// after IDLE quiet, every INTERVAL; COUNT unanswered and the peer is dead)
    #[arg(long, value_name = "SPEC", default_value = "off", help_heading = FRONT,
          value_parser = TcpKeepalive::parse, bounds = KeepaliveBound)]
    pub tcp_keepalive: TcpKeepalive,
    /// TCP_USER_TIMEOUT on client and upstream sockets: data sent but not acknowledged
    /// this long ends the connection; 0 = the kernel's default (off)
    #[arg(long, value_name = "DUR", default_value = "0", help_heading = FRONT,
          value_parser = parse_duration,
          bounds = timeout(Duration::ZERO, TIMEOUT_MAX).note(" (0 means off)"))]
    pub tcp_user_timeout: Duration,
    /// Shed new connections (accept and close them) while more than this many wait in a
    /// shard's accept queue; resume at half. 0 = off
    #[arg(long, value_name = "N", default_value = "0", help_heading = FRONT,
          bounds = count32(0, 65_535).note(" (0 means off)"))]
    pub shed_accept_queue: u32,
    /// Shed new connections while a shard's loop turns take longer than this (the longest
    /// turn of the last 10 ms); resume at half. 0 = off
    #[arg(long, value_name = "DUR", default_value = "0", help_heading = FRONT,
          value_parser = parse_duration,
          bounds = timeout(Duration::ZERO, Duration::from_secs(60)).note(" (0 means off)"))]
    pub shed_loop_lag: Duration,
    /// Shed new connections while fewer file descriptors than this are left for them under
    /// RLIMIT_NOFILE; resume at twice as many. 0 = off
    #[arg(long, value_name = "N", default_value = "0", help_heading = FRONT,
          bounds = count(0, 10_000_000).note(" (0 means off)"))]
    pub shed_fds_left: usize,
    /// Shed new connections while the rings hold more than this percentage of
    /// --max-buffer-memory; resume at half. 0 = off
    #[arg(long, value_name = "PERCENT", default_value = "0", help_heading = FRONT,
          bounds = count32(0, 100).note(" (0 means off)"))]
    pub shed_buffer_memory: u32,
    /// Bytes of keys + values (plus 80 per entry) the store holds, 0 = unlimited;
    /// past it writes get -OOM
    #[arg(long, value_name = "SIZE", default_value = "64MiB", help_heading = STORE,
          bounds = size(0, TIB).note(" (0 means unlimited)"))]
    pub max_memory: usize,
    /// Allow DEBUG PANIC and DEBUG SLEEP (milliseconds)
    #[arg(long, help_heading = STORE)]
    pub enable_debug_commands: bool,
    /// io_uring: provided receive buffers per shard, shared by its connections
    #[arg(long, value_name = "N", default_value = "512", help_heading = LIMITS,
          bounds = URING_BUFFERS_RANGE)]
    pub uring_buffers: usize,
    /// io_uring: bytes per provided receive buffer (the most one receive carries)
    #[arg(long, value_name = "SIZE", default_value = "16KiB", help_heading = LIMITS,
          bounds = size(512, 1 << 20))]
    pub uring_buffer_size: usize,
    /// io_uring: submission queue entries per shard (the completion queue has 4x)
    #[arg(long, value_name = "N", default_value = "4096", help_heading = LIMITS,
          bounds = count(8, URING_ENTRIES_MAX))]
    pub uring_entries: usize,
    /// Front a Redis Cluster: some of its nodes, HOST:PORT[,HOST:PORT...]; the proxy
    /// learns the rest (CLUSTER SLOTS) and routes by hash slot, instead of --upstream
    #[arg(long, value_name = "SEEDS", help_heading = UPSTREAMS, value_parser = choices::seeds)]
    pub cluster: Option<String>,
    /// How often the proxy re-reads the cluster's slot map; a redirect or a failed
    /// connection asks for it sooner, at most once a second
    #[arg(long, value_name = "DUR", default_value = "10s", help_heading = UPSTREAMS,
          value_parser = parse_duration, bounds = timeout(Duration::from_secs(1), HOUR))]
    pub cluster_refresh: Duration,
    /// Where read-only commands go: primary | replica (with --cluster the slot's replica,
    /// else one of the key's upstream's --upstream-replica; its primary while none is
    /// fit; an error if it never had one) | prefer-replica (else the primary)
    #[arg(long, value_name = "WHERE", default_value = "primary", help_heading = UPSTREAMS,
          value_parser = ReadFrom::parse)]
    pub read_from: ReadFrom,
    /// With --read-from replica or prefer-replica (a cluster's replicas, or
    /// --upstream-replica's): a replica serves reads only while its primary lists it
    /// online and heard from it this recently (INFO replication's lag, asked every
    /// second); else its reads go to the primary
    #[arg(long, value_name = "DUR", default_value = "5s", help_heading = UPSTREAMS,
          value_parser = parse_duration, bounds = timeout(Duration::from_secs(1), HOUR))]
    pub replica_max_lag: Duration,
    /// An upstream Redis server, host:port; repeat for several (`upstreams = [...]` in
    /// --config). The proxy places keys by these names
    #[arg(long = "upstream", value_name = "ADDR", help_heading = UPSTREAMS,
          value_parser = choices::upstream, live = true)]
    pub upstreams: Vec<String>,
    /// An --upstream that replicates another, PRIMARY=REPLICA (both given as --upstream;
    /// not with --cluster, which finds the replicas): keys are placed over the
    /// primaries, and with --read-from replica or prefer-replica the read-only commands
    /// for a primary's keys go to a replica of it whose breaker is closed; repeat for
    /// several (`upstream-replicas = [...]` in --config)
    #[arg(long = "upstream-replica", value_name = "PRIMARY=REPLICA", help_heading = UPSTREAMS,
          value_parser = choices::upstream_replica, live = true)]
    pub upstream_replicas: Vec<String>,
    /// Upstreams the proxy can address over its life, reloads included: a removed one
    /// keeps its slot (its connections drain, its metrics stay; adding it back reuses
    /// it). Each costs a pool per shard and its metrics; 0 = twice as many as at start
    #[arg(long, value_name = "N", default_value = "0", help_heading = UPSTREAMS,
          bounds = count(0, UPSTREAMS_MAX as u64).note(" (0 means twice --upstream's count)"))]
    pub upstream_slots: usize,
    /// The addresses of `upstreams`, resolved by [`Config::validate`].
    #[arg(skip)]
    pub upstream_addrs: Vec<SocketAddr>,
    /// Replies one client may await; past it the client is not read from
    #[arg(long, value_name = "N", default_value = "128", help_heading = UPSTREAMS,
          bounds = count(1, QUEUE_MAX),
          live = true)]
    pub max_pending: usize,
    /// Bytes a shard's awaited replies may hold, at least --buffer; past it a reply that
    /// must wait is dropped with an error
    #[arg(long, value_name = "SIZE", default_value = "64MiB", help_heading = UPSTREAMS,
          bounds = size(64, TIB))]
    pub max_pending_bytes: usize,
    /// Connections per upstream per shard (a client keeps to one), and as many for RESP3
    /// clients
    #[arg(long, value_name = "N", default_value = "1", help_heading = UPSTREAMS,
          bounds = count(1, 64))]
    pub upstream_conns: usize,
    /// Requests in flight per upstream connection
    #[arg(long, value_name = "N", default_value = "512", help_heading = UPSTREAMS,
          bounds = count(1, QUEUE_MAX))]
    pub upstream_pipeline: usize,
    /// Requests that may wait for an upstream connection; past it they fail at once
    #[arg(long, value_name = "N", default_value = "1024", help_heading = UPSTREAMS,
          bounds = count(1, QUEUE_MAX))]
    pub upstream_queue: usize,
    /// An upstream connect must complete within this
    #[arg(long, value_name = "DUR", default_value = "1s", help_heading = UPSTREAMS,
          value_parser = parse_duration, bounds = TIMEOUT,
          live = true)]
    pub connect_timeout: Duration,
    /// A request must be answered within this (shorter than --idle-timeout), or it gets
    /// an error and its connection is replaced
    #[arg(long, value_name = "DUR", default_value = "1s", help_heading = UPSTREAMS,
          value_parser = parse_duration, bounds = TIMEOUT,
          live = true)]
    pub upstream_timeout: Duration,
    /// An upstream connection unused this long is closed
    #[arg(long, value_name = "DUR", default_value = "60s", help_heading = UPSTREAMS,
          value_parser = parse_duration, bounds = TIMEOUT,
          live = true)]
    pub upstream_idle_timeout: Duration,
    /// Each shard PINGs each upstream this often, so the breaker hears of a dead one
    /// before a client pays for it (resp upstreams); 0 = off
    #[arg(long, value_name = "DUR", default_value = "2s", help_heading = UPSTREAMS,
          value_parser = parse_duration,
          bounds = timeout(Duration::ZERO, HOUR).note(" (0 turns health checks off)"))]
    pub health_check_interval: Duration,
    /// The `--breaker-*` thresholds.
    #[command(flatten)]
    pub breaker: BreakerSettings,
    /// The `--reconnect-*` delays.
    #[command(flatten)]
    pub backoff: BackoffSettings,
    /// murmur | fnv1a_64, as nutcracker's hash: (fnv1a_64 to take over a nutcracker's
    /// keys; it spreads keys unevenly)
    #[arg(long, value_name = "NAME", default_value = "murmur", help_heading = UPSTREAMS,
          value_parser = KeyHash::parse)]
    pub key_hash: KeyHash,
    /// The password of the `default` user: clients must AUTH (or HELLO AUTH) before
    /// any other command. Prefer the config file: a flag shows in `ps`
    #[arg(long, value_name = "SECRET", help_heading = AUTH, value_parser = choices::secret)]
    pub requirepass: Option<String>,
    /// A named user clients may AUTH as, NAME:PASSWORD; repeat for several
    /// (`user = [...]` in --config)
    #[arg(long = "user", value_name = "NAME:PASSWORD", help_heading = AUTH,
          value_parser = choices::user)]
    pub users: Vec<String>,
    /// The user the proxy AUTHs as on every upstream connection (with
    /// --upstream-password; without it, the `default` user)
    #[arg(long, value_name = "NAME", help_heading = AUTH, value_parser = choices::secret)]
    pub upstream_user: Option<String>,
    /// The password the proxy sends in AUTH on every new upstream connection
    #[arg(long, value_name = "SECRET", help_heading = AUTH, value_parser = choices::secret)]
    pub upstream_password: Option<String>,
    /// One upstream's own credentials, ADDR=USER:PASSWORD (user `default` for a server
    /// with only requirepass), over --upstream-user/--upstream-password for it; repeat
    /// for several (`upstream-credentials = [...]` in --config)
    #[arg(long = "upstream-credential", value_name = "ADDR=USER:PASSWORD", help_heading = AUTH,
          value_parser = choices::upstream_credential, live = true)]
    pub upstream_credentials: Vec<String>,
}

/// A circuit breaker's thresholds (`engine::upstream::breaker` says why
/// each default).
#[derive(Clone, Copy, Debug, PartialEq, Args)]
pub struct BreakerSettings {
    /// Span over which the failure ratio is taken
    #[arg(long = "breaker-window", value_name = "DUR", default_value = "10s",
          help_heading = BREAKER, bounds = millis(Duration::from_millis(100), HOUR))]
    pub window: u64,
    /// Share of failed requests in the window that opens the breaker
    #[arg(long = "breaker-failure-ratio", value_name = "RATIO", default_value = "0.5",
          help_heading = BREAKER, bounds = Ratio)]
    pub failure_ratio: f64,
    /// Requests the window must hold before the ratio counts
    #[arg(long = "breaker-min-requests", value_name = "N", default_value = "20",
          help_heading = BREAKER, bounds = count32(1, 1_000_000))]
    pub min_requests: u32,
    /// Connect failures in a row that open the breaker
    #[arg(long = "breaker-connect-failures", value_name = "N", default_value = "3",
          help_heading = BREAKER, bounds = count32(1, 1000))]
    pub connect_failures: u32,
    /// How long an open breaker fails requests at once before probing; at least
    /// --upstream-timeout
    #[arg(long = "breaker-cool-down", value_name = "DUR", default_value = "5s",
          help_heading = BREAKER, bounds = millis(TIMEOUT_MIN, HOUR))]
    pub cool_down: u64,
    /// Probe requests let through half-open; all must succeed to close
    #[arg(long = "breaker-probes", value_name = "N", default_value = "3",
          help_heading = BREAKER, bounds = count32(1, 1000))]
    pub probes: u32,
}

/// The reconnect backoff's delays (`engine::upstream::backoff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Args)]
pub struct BackoffSettings {
    /// First reconnect delay ceiling after a failed connect
    #[arg(long = "reconnect-base", value_name = "DUR", default_value = "100ms",
          help_heading = UPSTREAMS, bounds = millis(Duration::from_millis(1), HOUR))]
    pub base: u64,
    /// Longest reconnect delay, at least --reconnect-base
    #[arg(long = "reconnect-max", value_name = "DUR", default_value = "10s",
          help_heading = UPSTREAMS, bounds = millis(Duration::from_millis(1), HOUR))]
    pub cap: u64,
    /// full | decorrelated jitter of reconnect delays
    #[arg(long = "reconnect-jitter", value_name = "NAME", default_value = "full",
          help_heading = UPSTREAMS, value_parser = Jitter::parse)]
    pub jitter: Jitter,
}

/// `--help` heading of `holdfast chaos proxy`'s limits.
pub const CHAOS_PROXY: &str = "Chaos proxy limits";

/// The settings of `holdfast chaos proxy` (src/tools/chaos/proxy): where
/// its Toxiproxy-compatible API listens and what bounds its relay.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct ChaosProxySettings {
    /// Where the Toxiproxy-compatible HTTP API (and /metrics) listens
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8474",
          value_parser = choices::address)]
    pub api: SocketAddr,
    /// A JSON file of proxies to create at start (the body of POST /populate)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Client connections through all proxies at once (each also holds an
    /// upstream connection: two fds); past it a new one is accepted and closed
    #[arg(long, value_name = "N", default_value = "10000", help_heading = CHAOS_PROXY,
          bounds = count(1, 1_000_000))]
    pub max_conns: usize,
    /// Bytes one direction of one connection may hold while its toxics delay
    /// them; past it that side is not read from (TCP pushes back on the sender)
    #[arg(long, value_name = "SIZE", default_value = "64KiB", help_heading = CHAOS_PROXY,
          bounds = size(1024, 64 << 20))]
    pub buffer: usize,
}
