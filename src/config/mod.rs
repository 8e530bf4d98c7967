//! The server's settings: bounded defaults, parsing of sizes and durations,
//! and `validate()`, which relates the bounds to each other before anything
//! starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use crate::apps::proxy::hash::{KeyHash, UPSTREAMS_MAX};
use crate::engine::codec::Protocol;
use crate::engine::upstream::backoff::{BackoffSettings, Jitter};
use crate::engine::upstream::breaker::BreakerSettings;

/// Every setting of `holdfast serve`. Build it with [`Config::default`] and
/// the CLI/TOML layers, then call [`Config::validate`].
#[derive(Clone, Debug)]
pub struct Config {
    /// `--listen`: where clients connect.
    pub listen: SocketAddr,
    /// `--protocol`.
    pub protocol: Protocol,
    /// `--admin`: the metrics/health listener; `None` for `off`.
    pub admin: Option<SocketAddr>,
    /// `--threads`: number of shards (event loops); 0 means one per CPU.
    pub threads: usize,
    /// `--max-conns`: open client connections per process; 0 means derive
    /// from RLIMIT_NOFILE at start-up.
    pub max_conns: usize,
    /// `--buffer`: capacity of each per-connection ring (power of two).
    pub buffer: usize,
    /// `--max-frame`: payload limit; 0 means what fits in `buffer` with the
    /// protocol's framing.
    pub max_frame: usize,
    /// `--idle-timeout`: no traffic at all for this long closes.
    pub idle_timeout: Duration,
    /// `--read-timeout`: a started frame must complete within this.
    pub read_timeout: Duration,
    /// `--write-timeout`: pending output must make progress within this.
    pub write_timeout: Duration,
    /// `--shutdown-grace`: drain time after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// `--backlog`: the listen(2) backlog of each listener.
    pub backlog: u32,
    /// `--accept-batch`: connections accepted per loop turn per shard, so a
    /// connect storm cannot starve established peers.
    pub accept_batch: usize,
    /// `--events-max`: readiness events taken per poll.
    pub events_max: usize,
    /// `--read-budget`: bytes read from one connection per loop turn before
    /// others get their turn.
    pub read_budget: usize,
    /// `--pool-free-max`: idle rings a shard keeps for reuse (the rest are
    /// freed); memory held idle is at most this × `buffer` per shard.
    pub pool_free_max: usize,
    /// `--pool-prealloc`: rings each shard allocates at start (at most
    /// `pool_free_max`), so a burst of up to this many busy rings is served
    /// without allocating; idle memory per shard grows by this × `buffer`.
    pub pool_prealloc: usize,
    /// `--log-level`.
    pub log_level: log::LevelFilter,
    /// `--pin-cores`: pin shard i to CPU i (modulo the CPUs this process
    /// may use).
    pub pin_cores: bool,
    /// `--max-memory`: for `resp`, the bytes of keys and values (plus a
    /// per-entry overhead) the store may hold; a write past it is refused
    /// with `-OOM`. 0 means unlimited.
    pub max_memory: usize,
    /// `--enable-debug-commands`: for `resp`, allow `DEBUG PANIC` and
    /// `DEBUG SLEEP`.
    pub enable_debug_commands: bool,
    /// `--backend`: the driver under the shards. `None` is the build's
    /// default: io_uring in a `uring` build (epoll, with one warning, when
    /// the kernel refuses io_uring), epoll otherwise. An explicit `uring`
    /// that the kernel refuses is an error.
    pub backend: Option<Backend>,
    /// `--uring-buffers`: provided receive buffers per shard (power of two),
    /// shared by all of the shard's connections; a connection holds one only
    /// from the completion that filled it until its bytes are copied into
    /// the connection's input ring.
    pub uring_buffers: usize,
    /// `--uring-buffer-size`: bytes of each provided receive buffer (the
    /// most one receive completion carries).
    pub uring_buffer_size: usize,
    /// `--uring-entries`: submission queue entries per shard (the
    /// completion queue has four times as many).
    pub uring_entries: usize,
    /// `--upstream` (repeated) or `upstreams = [...]` in the file: the
    /// servers the service calls, as written (`host:port`); the proxy
    /// places keys by these names.
    pub upstreams: Vec<String>,
    /// The addresses of `upstreams`, resolved by [`Config::validate`].
    pub upstream_addrs: Vec<SocketAddr>,
    /// `--max-pending`: replies one client may await at once; past it the
    /// client is not read from until one is written.
    pub max_pending: usize,
    /// `--max-pending-bytes`: per shard, the bytes the buffers of awaited
    /// replies may hold together (replies that arrived out of order or
    /// before their client could take them, the merge plans of split
    /// commands, and idle buffers kept for reuse).
    pub max_pending_bytes: usize,
    /// `--upstream-conns`: connections per upstream per shard.
    pub upstream_conns: usize,
    /// `--upstream-pipeline`: requests one upstream connection may have
    /// in flight.
    pub upstream_pipeline: usize,
    /// `--upstream-queue`: requests that may wait for each upstream
    /// connection (while it connects or its pipeline is full).
    pub upstream_queue: usize,
    /// `--connect-timeout`: an upstream connect must complete within this.
    pub connect_timeout: Duration,
    /// `--upstream-timeout`: a request must be answered within this.
    pub upstream_timeout: Duration,
    /// `--upstream-idle-timeout`: an upstream connection unused this long
    /// is closed.
    pub upstream_idle_timeout: Duration,
    /// The `--breaker-*` thresholds.
    pub breaker: BreakerSettings,
    /// The `--reconnect-*` delays.
    pub backoff: BackoffSettings,
    /// `--key-hash`: how the proxy hashes keys onto its ketama ring.
    pub key_hash: KeyHash,
}

/// The driver that moves bytes between sockets and rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Readiness through epoll (mio), then read(2)/write(2).
    Epoll,
    /// Completions through io_uring: multishot accept and receive into
    /// provided buffers, sends from the output ring (`uring` builds only).
    Uring,
}

impl Backend {
    /// The name used on the command line and in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Epoll => "epoll",
            Backend::Uring => "uring",
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:7000".parse().unwrap(),
            protocol: Protocol::Echo,
            admin: Some("127.0.0.1:7001".parse().unwrap()),
            threads: 0,
            max_conns: 0,
            buffer: 64 * 1024,
            max_frame: 0,
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            backlog: 1024,
            accept_batch: 64,
            events_max: 1024,
            read_budget: 256 * 1024,
            pool_free_max: 64,
            pool_prealloc: 0,
            log_level: log::LevelFilter::Info,
            pin_cores: false,
            max_memory: 64 << 20,
            enable_debug_commands: false,
            backend: None,
            uring_buffers: 512,
            uring_buffer_size: 16 * 1024,
            uring_entries: 4096,
            upstreams: Vec::new(),
            upstream_addrs: Vec::new(),
            max_pending: 128,
            max_pending_bytes: 64 << 20,
            upstream_conns: 1,
            upstream_pipeline: 512,
            upstream_queue: 1024,
            connect_timeout: Duration::from_secs(1),
            upstream_timeout: Duration::from_secs(1),
            upstream_idle_timeout: Duration::from_secs(60),
            breaker: BreakerSettings::default(),
            backoff: BackoffSettings::default(),
            key_hash: KeyHash::Murmur,
        }
    }
}

/// A setting that is out of range or contradicts another. Its `Display` is
/// the one stderr line: it names the flag and says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag at fault, as typed on the command line (`--max-frame`), or
    /// `--config` for problems in the file itself.
    pub flag: String,
    /// What is wrong and the fix.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The settings [`Config::set`] knows: the flags of `holdfast serve` without
/// their `--`. They are also the keys of a `--config` file, so the command
/// line and the file can never disagree on a name.
pub const KEYS: &[&str] = &[
    "listen",
    "protocol",
    "admin",
    "threads",
    "max-conns",
    "buffer",
    "max-frame",
    "idle-timeout",
    "read-timeout",
    "write-timeout",
    "shutdown-grace",
    "backend",
    "backlog",
    "accept-batch",
    "events-max",
    "read-budget",
    "pool-free-max",
    "pool-prealloc",
    "log-level",
    "pin-cores",
    "max-memory",
    "enable-debug-commands",
    "uring-buffers",
    "uring-buffer-size",
    "uring-entries",
];

/// The settings of `holdfast proxy`: those of `holdfast serve` but the
/// key-value store's, plus the upstream ones. The file names the upstreams
/// with `upstreams = ["host:port", ...]` (the flag is `--upstream`,
/// repeated).
pub const PROXY_KEYS: &[&str] = &[
    "listen",
    "protocol",
    "admin",
    "threads",
    "max-conns",
    "buffer",
    "max-frame",
    "idle-timeout",
    "read-timeout",
    "write-timeout",
    "shutdown-grace",
    "backend",
    "backlog",
    "accept-batch",
    "events-max",
    "read-budget",
    "pool-free-max",
    "pool-prealloc",
    "log-level",
    "pin-cores",
    "uring-buffers",
    "uring-buffer-size",
    "uring-entries",
    "upstream",
    "max-pending",
    "max-pending-bytes",
    "upstream-conns",
    "upstream-pipeline",
    "upstream-queue",
    "connect-timeout",
    "upstream-timeout",
    "upstream-idle-timeout",
    "breaker-window",
    "breaker-failure-ratio",
    "breaker-min-requests",
    "breaker-connect-failures",
    "breaker-cool-down",
    "breaker-probes",
    "reconnect-base",
    "reconnect-max",
    "reconnect-jitter",
    "key-hash",
];

// The bounds `validate` enforces, and why each exists.

/// Smallest ring: below this, the header and a useful payload hardly fit.
const BUFFER_MIN: usize = 64;
/// Largest ring: each connection holds two, so this times `--max-conns` is
/// the worst-case memory; 64MiB is already far past any sane frame.
const BUFFER_MAX: usize = 64 << 20;
/// The timer wheel ticks in milliseconds; a shorter deadline would fire
/// before a healthy peer on a busy box could answer.
const TIMEOUT_MIN: Duration = Duration::from_millis(10);
/// Longer than a day is "no timeout" in disguise, which is the failure mode
/// the timeouts exist to remove.
const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);
/// More shards than any machine has cores only costs threads and fds.
const THREADS_MAX: usize = 1024;
/// A guard against typos: each connection costs at least an fd, a slab slot
/// and (while busy) two rings.
const MAX_CONNS_MAX: usize = 10_000_000;
/// listen(2) backlogs are capped by `net.core.somaxconn`, historically a u16.
const BACKLOG_MAX: usize = 65_535;
/// Bounds the work of one loop turn (accepts) and the events array memory.
const BATCH_MAX: usize = 65_536;
/// One peer reading this much in one turn already starves the others.
const READ_BUDGET_MAX: usize = 1 << 30;
/// Idle rings kept per shard; times `--buffer` is memory held for nothing.
const POOL_FREE_MAX: usize = 1_000_000;
/// The smallest ring for `resp`: the key-value service reserves up to a few
/// hundred bytes for a small reply (an error naming an unknown command, an
/// INFO page), which must fit an empty output ring.
pub const RESP_BUFFER_MIN: usize = 4096;
/// The smallest `--max-frame` for `resp`: a whole command must fit in it,
/// and clients send commands of a few hundred bytes on connect (HELLO,
/// CLIENT SETINFO with a library's name and version, AUTH).
pub const RESP_MAX_FRAME_MIN: usize = 1024;
/// A store larger than 1 TiB is a typo, not a plan.
const MAX_MEMORY_MAX: usize = 1 << 40;
/// The kernel's limit on a provided buffer ring's entries.
const URING_BUFFERS_MAX: usize = 32_768;
/// A receive buffer smaller than this turns a burst into many completions.
const URING_BUFFER_SIZE_MIN: usize = 512;
/// Larger buffers only waste memory: one completion is copied into a ring of
/// `--buffer` bytes anyway.
const URING_BUFFER_SIZE_MAX: usize = 1 << 20;
/// The kernel's limit on submission queue entries.
const URING_ENTRIES_MAX: usize = 32_768;
/// Replies one client may await: each may hold a reply of up to `--buffer`
/// bytes while earlier ones are awaited, so this times `--buffer` bounds
/// what one client can make the proxy hold.
const MAX_PENDING_MAX: usize = 65_536;
/// Awaited-reply bytes per shard: more than 1 TiB is a typo, not a plan.
const MAX_PENDING_BYTES_MAX: usize = 1 << 40;
/// Connections per upstream per shard: each is an fd, times upstreams and
/// shards.
const UPSTREAM_CONNS_MAX: usize = 64;
/// In-flight requests per upstream connection (24 bytes of bookkeeping
/// each, allocated with the connection).
const UPSTREAM_PIPELINE_MAX: usize = 65_536;
/// Waiting requests per upstream connection (24 bytes each plus their bytes,
/// at most one `--buffer` ring).
const UPSTREAM_QUEUE_MAX: usize = 65_536;

impl Config {
    /// Checks every bound and fills the derived defaults (`max_frame` when
    /// 0). `threads` and `max_conns` of 0 stay 0 here: the server derives
    /// them from the machine at start-up.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.check_buffer()?;
        self.check_resp_buffer()?;
        self.fill_max_frame()?;
        check_timeout("--idle-timeout", self.idle_timeout, TIMEOUT_MIN)?;
        check_timeout("--read-timeout", self.read_timeout, TIMEOUT_MIN)?;
        check_timeout("--write-timeout", self.write_timeout, TIMEOUT_MIN)?;
        // A grace of 0 is a legitimate "close everything at once".
        check_timeout("--shutdown-grace", self.shutdown_grace, Duration::ZERO)?;
        let count = |n: usize| n.to_string();
        let threads_note = " (0 means one per CPU)";
        check_range(
            "--threads",
            self.threads,
            0,
            THREADS_MAX,
            threads_note,
            count,
        )?;
        let conns_note = " (0 derives it from the open-file limit)";
        check_range(
            "--max-conns",
            self.max_conns,
            0,
            MAX_CONNS_MAX,
            conns_note,
            count,
        )?;
        check_range(
            "--backlog",
            self.backlog as usize,
            1,
            BACKLOG_MAX,
            "",
            count,
        )?;
        check_range("--accept-batch", self.accept_batch, 1, BATCH_MAX, "", count)?;
        check_range("--events-max", self.events_max, 1, BATCH_MAX, "", count)?;
        let budget = self.read_budget;
        check_range("--read-budget", budget, 1, READ_BUDGET_MAX, "", format_size)?;
        check_range(
            "--pool-free-max",
            self.pool_free_max,
            0,
            POOL_FREE_MAX,
            "",
            count,
        )?;
        check_range(
            "--pool-prealloc",
            self.pool_prealloc,
            0,
            self.pool_free_max,
            " (--pool-free-max)",
            count,
        )?;
        let memory_note = " (0 means unlimited)";
        check_range(
            "--max-memory",
            self.max_memory,
            0,
            MAX_MEMORY_MAX,
            memory_note,
            format_size,
        )?;
        self.check_uring()?;
        self.check_upstreams()?;
        self.check_admin()
    }

    /// The upstream settings' bounds, and the upstreams resolved.
    fn check_upstreams(&mut self) -> Result<(), ConfigError> {
        let count = |n: usize| n.to_string();
        let max_pending = self.max_pending;
        check_range("--max-pending", max_pending, 1, MAX_PENDING_MAX, "", count)?;
        // At least one reply of the largest size must fit, or a client whose
        // reply came early could never be answered.
        check_range(
            "--max-pending-bytes",
            self.max_pending_bytes,
            self.buffer,
            MAX_PENDING_BYTES_MAX,
            " (at least --buffer)",
            format_size,
        )?;
        let conns = self.upstream_conns;
        check_range("--upstream-conns", conns, 1, UPSTREAM_CONNS_MAX, "", count)?;
        let pipeline = self.upstream_pipeline;
        check_range(
            "--upstream-pipeline",
            pipeline,
            1,
            UPSTREAM_PIPELINE_MAX,
            "",
            count,
        )?;
        let queue = self.upstream_queue;
        check_range("--upstream-queue", queue, 1, UPSTREAM_QUEUE_MAX, "", count)?;
        check_timeout("--connect-timeout", self.connect_timeout, TIMEOUT_MIN)?;
        check_timeout("--upstream-timeout", self.upstream_timeout, TIMEOUT_MIN)?;
        check_timeout(
            "--upstream-idle-timeout",
            self.upstream_idle_timeout,
            TIMEOUT_MIN,
        )?;
        self.breaker.validate()?;
        self.backoff.validate()?;
        let error = |message: String| ConfigError {
            flag: "--upstream".into(),
            message,
        };
        if self.upstreams.len() > UPSTREAMS_MAX {
            return Err(error(format!(
                "{} upstreams, at most {UPSTREAMS_MAX}",
                self.upstreams.len()
            )));
        }
        if self.upstreams.is_empty() {
            self.upstream_addrs.clear();
            return Ok(());
        }
        if self.protocol == Protocol::Echo {
            return Err(error(
                "echo replies have no framing to match them to requests; use line, frame or resp"
                    .into(),
            ));
        }
        if self.upstream_timeout >= self.idle_timeout {
            return Err(ConfigError {
                flag: "--upstream-timeout".into(),
                message: format!(
                    "{} must be shorter than --idle-timeout {}, or a client waiting for an \
                     upstream would be closed as idle",
                    format_duration(self.upstream_timeout),
                    format_duration(self.idle_timeout)
                ),
            });
        }
        let cool_down = Duration::from_millis(self.breaker.cool_down);
        if cool_down < self.upstream_timeout {
            return Err(ConfigError {
                flag: "--breaker-cool-down".into(),
                message: format!(
                    "{} must be at least --upstream-timeout {}, so that requests sent before \
                     the breaker opened have their outcome before it lets probes through",
                    format_duration(cool_down),
                    format_duration(self.upstream_timeout)
                ),
            });
        }
        let mut addrs = Vec::with_capacity(self.upstreams.len());
        for (index, name) in self.upstreams.iter().enumerate() {
            if self.upstreams[..index].contains(name) {
                return Err(error(format!("`{name}` is given twice")));
            }
            addrs.push(resolve(name).map_err(error)?);
        }
        self.upstream_addrs = addrs;
        Ok(())
    }

    /// What a shard needs to call the upstreams; `None` without upstreams.
    /// Call after [`Config::validate`].
    pub fn upstream_settings(&self) -> Option<crate::engine::upstream::Settings> {
        if self.upstreams.is_empty() {
            return None;
        }
        debug_assert_eq!(self.upstreams.len(), self.upstream_addrs.len(), "validated");
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        Some(crate::engine::upstream::Settings {
            upstreams: self
                .upstreams
                .iter()
                .cloned()
                .zip(self.upstream_addrs.iter().copied())
                .collect(),
            lanes: self.upstream_conns,
            pipeline: self.upstream_pipeline,
            queue_max: self.upstream_queue,
            deadlines: crate::engine::upstream::conn::Deadlines {
                connect: ms(self.connect_timeout),
                request: ms(self.upstream_timeout),
                idle: ms(self.upstream_idle_timeout),
            },
            max_pending: self.max_pending,
            max_pending_bytes: self.max_pending_bytes,
            breaker: self.breaker,
            backoff: self.backoff,
        })
    }

    /// The provided buffer ring is indexed by masking (a power of two) and
    /// limited to 2^15 entries by the kernel.
    fn check_uring(&self) -> Result<(), ConfigError> {
        let count = |n: usize| n.to_string();
        let buffers = self.uring_buffers;
        check_range("--uring-buffers", buffers, 1, URING_BUFFERS_MAX, "", count)?;
        if !buffers.is_power_of_two() {
            return Err(ConfigError {
                flag: "--uring-buffers".into(),
                message: format!(
                    "must be a power of two, got {buffers} (try {})",
                    buffers.next_power_of_two().min(URING_BUFFERS_MAX)
                ),
            });
        }
        check_range(
            "--uring-buffer-size",
            self.uring_buffer_size,
            URING_BUFFER_SIZE_MIN,
            URING_BUFFER_SIZE_MAX,
            "",
            format_size,
        )?;
        check_range(
            "--uring-entries",
            self.uring_entries,
            8,
            URING_ENTRIES_MAX,
            "",
            count,
        )
    }

    /// Applies a TOML file with the same keys as the flags (`max-conns =
    /// 100`, `idle-timeout = "5s"`); unknown keys are errors.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        self.apply_file_with(path, KEYS)
    }

    /// As [`Config::apply_file`], for `holdfast proxy`: the keys are
    /// [`PROXY_KEYS`] (`upstreams = [...]` names the upstreams).
    pub fn apply_proxy_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        self.apply_file_with(path, PROXY_KEYS)
    }

    fn apply_file_with(&mut self, path: &Path, keys: &[&str]) -> Result<(), ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|error| file_error(format!("cannot read {origin}: {error}")))?;
        self.apply_toml(&text, &origin, keys)
    }

    /// Sets one setting by its flag name without `--` (see [`KEYS`]),
    /// parsing `value` exactly as the command line does. The error names
    /// the flag; cross-setting bounds wait for [`Config::validate`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        self.set_value(key, value.trim())
            .map_err(|message| ConfigError {
                flag: format!("--{key}"),
                message,
            })
    }

    fn set_value(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "listen" => self.listen = parse_address(value)?,
            "protocol" => self.protocol = parse_protocol(value)?,
            "admin" => self.admin = parse_admin(value)?,
            "threads" => self.threads = parse_count(value)?,
            "max-conns" => self.max_conns = parse_count(value)?,
            "buffer" => self.buffer = parse_size(value)?,
            "max-frame" => self.max_frame = parse_size(value)?,
            "idle-timeout" => self.idle_timeout = parse_duration(value)?,
            "read-timeout" => self.read_timeout = parse_duration(value)?,
            "write-timeout" => self.write_timeout = parse_duration(value)?,
            "shutdown-grace" => self.shutdown_grace = parse_duration(value)?,
            "backend" => self.backend = Some(parse_backend(value)?),
            "backlog" => self.backlog = parse_backlog(value)?,
            "accept-batch" => self.accept_batch = parse_count(value)?,
            "events-max" => self.events_max = parse_count(value)?,
            "read-budget" => self.read_budget = parse_size(value)?,
            "pool-free-max" => self.pool_free_max = parse_count(value)?,
            "pool-prealloc" => self.pool_prealloc = parse_count(value)?,
            "log-level" => self.log_level = parse_log_level(value)?,
            "pin-cores" => self.pin_cores = parse_bool(value)?,
            "max-memory" => self.max_memory = parse_size(value)?,
            "enable-debug-commands" => self.enable_debug_commands = parse_bool(value)?,
            "uring-buffers" => self.uring_buffers = parse_count(value)?,
            "uring-buffer-size" => self.uring_buffer_size = parse_size(value)?,
            "uring-entries" => self.uring_entries = parse_count(value)?,
            "upstream" => self.upstreams.push(parse_upstream(value)?),
            "max-pending" => self.max_pending = parse_count(value)?,
            "max-pending-bytes" => self.max_pending_bytes = parse_size(value)?,
            "upstream-conns" => self.upstream_conns = parse_count(value)?,
            "upstream-pipeline" => self.upstream_pipeline = parse_count(value)?,
            "upstream-queue" => self.upstream_queue = parse_count(value)?,
            "connect-timeout" => self.connect_timeout = parse_duration(value)?,
            "upstream-timeout" => self.upstream_timeout = parse_duration(value)?,
            "upstream-idle-timeout" => self.upstream_idle_timeout = parse_duration(value)?,
            "breaker-window" => self.breaker.window = parse_millis(value)?,
            "breaker-failure-ratio" => self.breaker.failure_ratio = parse_ratio(value)?,
            "breaker-min-requests" => self.breaker.min_requests = parse_u32(value)?,
            "breaker-connect-failures" => self.breaker.connect_failures = parse_u32(value)?,
            "breaker-cool-down" => self.breaker.cool_down = parse_millis(value)?,
            "breaker-probes" => self.breaker.probes = parse_u32(value)?,
            "reconnect-base" => self.backoff.base = parse_millis(value)?,
            "reconnect-max" => self.backoff.cap = parse_millis(value)?,
            "reconnect-jitter" => self.backoff.jitter = parse_jitter(value)?,
            "key-hash" => self.key_hash = value.parse()?,
            _ => {
                return Err(format!(
                    "not a setting; the settings are {}",
                    KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The ring indexes by masking, so its capacity must be a power of two.
    fn check_buffer(&self) -> Result<(), ConfigError> {
        let buffer = self.buffer;
        if buffer.is_power_of_two() && (BUFFER_MIN..=BUFFER_MAX).contains(&buffer) {
            return Ok(());
        }
        Err(ConfigError {
            flag: "--buffer".into(),
            message: format!(
                "must be a power of two between {BUFFER_MIN} and {}, such as 16KiB or 64KiB, got {}",
                format_size(BUFFER_MAX),
                format_size(buffer)
            ),
        })
    }

    /// `resp` replies are written whole by the service, and its small
    /// replies reserve up to [`RESP_BUFFER_MIN`] bytes.
    fn check_resp_buffer(&self) -> Result<(), ConfigError> {
        if self.protocol != Protocol::Resp || self.buffer >= RESP_BUFFER_MIN {
            return Ok(());
        }
        Err(ConfigError {
            flag: "--buffer".into(),
            message: format!(
                "must be at least {} with --protocol resp, got {}",
                format_size(RESP_BUFFER_MIN),
                format_size(self.buffer)
            ),
        })
    }

    /// A frame is decoded in place from the input ring, so the largest
    /// payload plus its framing must fit in one ring. Needs a valid buffer.
    fn fill_max_frame(&mut self) -> Result<(), ConfigError> {
        let overhead = self.protocol.overhead();
        let fits = self.buffer - overhead;
        if self.max_frame == 0 {
            self.max_frame = fits;
            return Ok(());
        }
        if self.max_frame <= fits {
            return self.check_resp_max_frame();
        }
        Err(ConfigError {
            flag: "--max-frame".into(),
            message: format!(
                "{} does not fit in --buffer {}{} (at most {fits}); raise --buffer or lower --max-frame",
                self.max_frame,
                self.buffer,
                framing(self.protocol)
            ),
        })
    }

    /// A `resp` command is one frame: a `--max-frame` too small for what
    /// clients send would refuse nearly every command.
    fn check_resp_max_frame(&self) -> Result<(), ConfigError> {
        if self.protocol != Protocol::Resp || self.max_frame >= RESP_MAX_FRAME_MIN {
            return Ok(());
        }
        Err(ConfigError {
            flag: "--max-frame".into(),
            message: format!(
                "must be at least {} with --protocol resp (a whole command must fit), got {}",
                format_size(RESP_MAX_FRAME_MIN),
                self.max_frame
            ),
        })
    }

    /// Two listeners on one port would fail to bind, or worse, with
    /// SO_REUSEPORT, share it and hand clients to the admin endpoint.
    fn check_admin(&self) -> Result<(), ConfigError> {
        let Some(admin) = self.admin else {
            return Ok(());
        };
        if !overlaps(self.listen, admin) {
            return Ok(());
        }
        Err(ConfigError {
            flag: "--admin".into(),
            message: format!(
                "{admin} clashes with --listen {}; use another port, or --admin off",
                self.listen
            ),
        })
    }

    fn apply_toml(&mut self, text: &str, origin: &str, keys: &[&str]) -> Result<(), ConfigError> {
        let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
            toml::from_str(text).map_err(|error| file_error(toml_error(&error, text, origin)))?;
        // Apply in file order so the first error reported is the first line.
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        for (key, value) in entries {
            let at = format!("{origin} line {}", line_of(text, key.span().start));
            let key = key.into_inner();
            if key == "upstreams" && keys.contains(&"upstream") {
                self.upstreams.clear();
                let Some(list) = value.get_ref().as_array() else {
                    return Err(file_error(format!(
                        "{at}: upstreams: expected a list such as [\"127.0.0.1:6379\"]"
                    )));
                };
                for item in list {
                    let Some(name) = item.as_str() else {
                        return Err(file_error(format!(
                            "{at}: upstreams: expected strings such as \"127.0.0.1:6379\""
                        )));
                    };
                    self.set("upstream", name).map_err(|error| {
                        file_error(format!("{at}: upstreams: {}", error.message))
                    })?;
                }
                continue;
            }
            if !keys.contains(&key.as_str()) || key == "upstream" {
                return Err(file_error(format!("{at}: {}", unknown_key(&key, keys))));
            }
            let value = toml_text(value.get_ref())
                .map_err(|message| file_error(format!("{at}: {key}: {message}")))?;
            self.set(&key, &value)
                .map_err(|error| file_error(format!("{at}: {key}: {}", error.message)))?;
        }
        Ok(())
    }
}

/// Parses a size: `512`, `64KiB`, `1MiB` (also `KB`/`MB`/`GB` as powers of
/// 1000, `K`/`M`/`G` and `KiB`/`MiB`/`GiB` as powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let wrong = || format!("expected a size such as 512, 64KiB or 1MiB, got `{text}`");
    let (number, unit) = split_number(text).ok_or_else(wrong)?;
    let scale: usize = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(wrong()),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{}` is too large for a size", text.trim()))
}

/// Parses a duration: `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let wrong = || format!("expected a duration such as 500ms, 10s or 2m, got `{text}`");
    let (number, unit) = split_number(text).ok_or_else(wrong)?;
    let millis_per: u64 = match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(wrong()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{}` is too long for a duration", text.trim()))
}

/// Renders a byte count the way `--buffer` takes it: `64KiB`, `1MiB`, or
/// plain bytes when no binary unit divides it.
pub fn format_size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (scale, unit) in UNITS {
        if bytes >= scale && bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

/// Renders a duration the way the timeout flags take it: `24h`, `2m`,
/// `10s`, `500ms` (finer durations in Rust's debug form).
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return format!("{duration:?}");
    }
    let millis = duration.as_millis();
    const UNITS: [(u128, &str); 3] = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    for (scale, unit) in UNITS {
        if millis >= scale && millis % scale == 0 {
            return format!("{}{unit}", millis / scale);
        }
    }
    format!("{millis}ms")
}

/// Splits `64 KiB` into `("64", "KiB")`; `None` unless it starts with a
/// digit and the number is all digits.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    if number.is_empty() {
        return None;
    }
    Some((number, unit.trim_start()))
}

fn parse_count(text: &str) -> Result<usize, String> {
    match split_number(text) {
        Some((number, "")) => number.parse().map_err(|_| format!("`{text}` is too large")),
        _ => Err(format!(
            "expected a whole number such as 0 or 100, got `{text}`"
        )),
    }
}

/// The field is a u32, so the range check happens here rather than
/// wrapping a large value into a small one.
fn parse_backlog(text: &str) -> Result<u32, String> {
    let backlog = parse_count(text)?;
    let count = |n: usize| n.to_string();
    range_message(backlog, 1, BACKLOG_MAX, "", count).map_or(Ok(backlog as u32), Err)
}

/// An upstream as written: `host:port` (a name or an IP address).
fn parse_upstream(text: &str) -> Result<String, String> {
    let wrong = || format!("expected host:port such as 127.0.0.1:6379, got `{text}`");
    let (host, port) = text.rsplit_once(':').ok_or_else(wrong)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(wrong());
    }
    Ok(text.to_string())
}

/// The address of an upstream named `host:port` (the first one a name
/// resolves to).
fn resolve(name: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = name.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    match name.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("`{name}` resolves to no address")),
        Err(error) => Err(format!("cannot resolve `{name}`: {error}")),
    }
}

fn parse_millis(text: &str) -> Result<u64, String> {
    parse_duration(text).map(|d| d.as_millis().min(u64::MAX as u128) as u64)
}

fn parse_u32(text: &str) -> Result<u32, String> {
    let n = parse_count(text)?;
    u32::try_from(n).map_err(|_| format!("`{text}` is too large"))
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if ratio.is_finite() => Ok(ratio),
        _ => Err(format!("expected a ratio such as 0.5, got `{text}`")),
    }
}

fn parse_jitter(text: &str) -> Result<Jitter, String> {
    match text {
        "full" => Ok(Jitter::Full),
        "decorrelated" => Ok(Jitter::Decorrelated),
        _ => Err(format!("expected full or decorrelated, got `{text}`")),
    }
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("expected an IP address and port such as 127.0.0.1:7000, got `{text}`")
    })
}

fn parse_admin(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!("expected an IP address and port such as 127.0.0.1:7001, or off, got `{text}`")
    })
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    Protocol::from_name(text).ok_or_else(|| {
        format!(
            "expected one of {}, got `{text}`",
            Protocol::NAMES.join(", ")
        )
    })
}

fn parse_log_level(text: &str) -> Result<log::LevelFilter, String> {
    const LEVELS: [(&str, log::LevelFilter); 5] = [
        ("error", log::LevelFilter::Error),
        ("warn", log::LevelFilter::Warn),
        ("info", log::LevelFilter::Info),
        ("debug", log::LevelFilter::Debug),
        ("trace", log::LevelFilter::Trace),
    ];
    LEVELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|&(_, level)| level)
        .ok_or_else(|| format!("expected one of error, warn, info, debug, trace, got `{text}`"))
}

/// `epoll`, or `uring` in a build with the `uring` feature.
fn parse_backend(text: &str) -> Result<Backend, String> {
    match text {
        "epoll" => Ok(Backend::Epoll),
        "uring" if cfg!(feature = "uring") => Ok(Backend::Uring),
        "uring" => Err("uring needs a build with `--features uring`".into()),
        _ => Err(format!(
            "expected epoll (or uring in a `--features uring` build), got `{text}`"
        )),
    }
}

fn check_timeout(flag: &str, value: Duration, min: Duration) -> Result<(), ConfigError> {
    if (min..=TIMEOUT_MAX).contains(&value) {
        return Ok(());
    }
    let max = format_duration(TIMEOUT_MAX);
    let message = if min.is_zero() {
        format!("must be at most {max}, got {}", format_duration(value))
    } else {
        let (min, value) = (format_duration(min), format_duration(value));
        format!("must be between {min} and {max}, got {value}")
    };
    Err(ConfigError {
        flag: flag.into(),
        message,
    })
}

fn check_range(
    flag: &str,
    value: usize,
    min: usize,
    max: usize,
    note: &str,
    show: fn(usize) -> String,
) -> Result<(), ConfigError> {
    match range_message(value, min, max, note, show) {
        None => Ok(()),
        Some(message) => Err(ConfigError {
            flag: flag.into(),
            message,
        }),
    }
}

/// `None` when `value` is in `min..=max`, else the complaint.
fn range_message(
    value: usize,
    min: usize,
    max: usize,
    note: &str,
    show: fn(usize) -> String,
) -> Option<String> {
    if (min..=max).contains(&value) {
        return None;
    }
    let (max, value) = (show(max), show(value));
    Some(if min == 0 {
        format!("must be at most {max}{note}, got {value}")
    } else {
        format!("must be between {} and {max}{note}, got {value}", show(min))
    })
}

/// How the message about `--max-frame` names the protocol's framing.
fn framing(protocol: Protocol) -> String {
    match protocol {
        Protocol::Echo | Protocol::Resp => String::new(),
        Protocol::Line => " with the 1-byte newline".into(),
        Protocol::Frame => " with the 4-byte frame header".into(),
    }
}

/// Whether two listeners would fight over one port: the same port (0 lets
/// the kernel pick, so never clashes) on the same or a wildcard address.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let wildcard = a.ip().is_unspecified() || b.ip().is_unspecified();
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || wildcard)
}

fn file_error(message: String) -> ConfigError {
    ConfigError {
        flag: "--config".into(),
        message,
    }
}

/// toml's `Display` draws the offending line over several lines; the
/// contract is one line, so keep its message and say the line number.
fn toml_error(error: &toml::de::Error, text: &str, origin: &str) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => format!("{origin} line {}: {message}", line_of(text, span.start)),
        None => format!("{origin}: {message}"),
    }
}

/// TOML values become the text a flag would carry, so the file and the
/// command line share one parser per setting.
fn toml_text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Boolean(flag) => Ok(flag.to_string()),
        other => Err(format!(
            "expected a string, an integer or a boolean, got a {}",
            other.type_str()
        )),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, got `{text}`")),
    }
}

fn unknown_key(key: &str, keys: &[&str]) -> String {
    let closest = keys
        .iter()
        .map(|known| (edit_distance(key, known), known))
        .min()
        .filter(|&(distance, _)| distance <= 2);
    match closest {
        Some((_, known)) => format!("unknown key `{key}`; did you mean `{known}`?"),
        None => format!("unknown key `{key}`; the keys are {}", keys.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean" on a mistyped key.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|&&byte| byte == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;

    /// A temp file with a unique name, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(text: &str) -> TempFile {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let unique = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("holdfast-config-{}-{unique}.toml", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The error `validate` gives after `key = value`.
    fn invalid(key: &str, value: &str) -> ConfigError {
        let mut config = Config::default();
        config.set(key, value).unwrap();
        config.validate().unwrap_err()
    }

    fn valid(settings: &[(&str, &str)]) -> Config {
        let mut config = Config::default();
        for (key, value) in settings {
            config.set(key, value).unwrap();
        }
        config.validate().unwrap();
        config
    }

    fn file_error_of(text: &str) -> ConfigError {
        let file = TempFile::new(text);
        Config::default().apply_file(&file.0).unwrap_err()
    }

    #[test]
    fn sizes_with_every_unit() {
        let cases = [
            ("512", 512),
            ("0", 0),
            ("64KiB", 64 * KIB),
            ("1MiB", MIB),
            ("1GiB", 1 << 30),
            ("64K", 64 * KIB),
            ("1M", MIB),
            ("2G", 2 << 30),
            ("64KB", 64_000),
            ("1MB", 1_000_000),
            ("1GB", 1_000_000_000),
            ("64kib", 64 * KIB),
            ("64 KiB", 64 * KIB),
            ("1 mb", 1_000_000),
            ("  16k ", 16 * KIB),
            ("100B", 100),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_what_was_expected() {
        assert_eq!(
            parse_size("12x").unwrap_err(),
            "expected a size such as 512, 64KiB or 1MiB, got `12x`"
        );
        for text in ["", "KiB", "-1", "1.5MiB", "64 K iB", "64KiBs", "0x40"] {
            let error = parse_size(text).unwrap_err();
            assert!(error.starts_with("expected a size"), "{text}: {error}");
        }
    }

    #[test]
    fn oversized_size_is_an_error_not_a_wrap() {
        for text in ["99999999999999999999999", "17179869184GiB"] {
            let error = parse_size(text).unwrap_err();
            assert!(error.contains("too large"), "{text}: {error}");
        }
    }

    #[test]
    fn durations_with_every_unit() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("7", Duration::from_secs(7)),
            ("0", Duration::ZERO),
            ("10 S", Duration::from_secs(10)),
            ("250MS", Duration::from_millis(250)),
        ];
        for (text, duration) in cases {
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_what_was_expected() {
        assert_eq!(
            parse_duration("10 days").unwrap_err(),
            "expected a duration such as 500ms, 10s or 2m, got `10 days`"
        );
        for text in ["", "s", "-1s", "1.5s", "10us", "1d"] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.starts_with("expected a duration"), "{text}: {error}");
        }
        let error = parse_duration("99999999999999999999h").unwrap_err();
        assert!(error.contains("too long"), "{error}");
        let error = parse_duration("18446744073709551615h").unwrap_err();
        assert!(error.contains("too long"), "{error}");
    }

    #[test]
    fn formatting_round_trips_through_parsing() {
        for bytes in [0, 1, 64, 1000, 64 * KIB, 3 * MIB, 5 << 30, 65_532] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        for millis in [0, 5, 1500, 10_000, 120_000, 86_400_000] {
            let duration = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_size(64 * KIB), "64KiB");
        assert_eq!(format_duration(TIMEOUT_MAX), "24h");
    }

    #[test]
    fn defaults_are_valid_and_max_frame_is_derived_per_protocol() {
        let config = valid(&[]);
        assert_eq!(config.max_frame, 64 * KIB);
        assert_eq!(valid(&[("protocol", "line")]).max_frame, 64 * KIB - 1);
        assert_eq!(valid(&[("protocol", "frame")]).max_frame, 64 * KIB - 4);
        let small = valid(&[("protocol", "frame"), ("buffer", "4KiB")]);
        assert_eq!(small.max_frame, 4 * KIB - 4);
    }

    #[test]
    fn validate_is_idempotent() {
        let mut config = valid(&[("protocol", "frame")]);
        config.validate().unwrap();
        assert_eq!(config.max_frame, 64 * KIB - 4);
    }

    #[test]
    fn buffer_must_be_a_bounded_power_of_two() {
        for value in ["1000", "32", "0", "128MiB", "64KB"] {
            let error = invalid("buffer", value);
            assert_eq!(error.flag, "--buffer", "{value}");
            assert!(
                error.message.starts_with(
                    "must be a power of two between 64 and 64MiB, such as 16KiB or 64KiB"
                ),
                "{error}"
            );
        }
        valid(&[("buffer", "64")]);
        valid(&[("buffer", "64MiB")]);
    }

    #[test]
    fn max_frame_must_fit_in_buffer_with_its_header() {
        let mut config = Config::default();
        config.set("protocol", "frame").unwrap();
        config.set("max-frame", "70000").unwrap();
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "--max-frame: 70000 does not fit in --buffer 65536 with the 4-byte frame header \
             (at most 65532); raise --buffer or lower --max-frame"
        );
        valid(&[("protocol", "frame"), ("max-frame", "65532")]);
        valid(&[("protocol", "echo"), ("max-frame", "64KiB")]);
        let error = invalid("max-frame", "65537");
        assert_eq!(error.flag, "--max-frame");
        let mut line = Config::default();
        line.set("protocol", "line").unwrap();
        assert!(line.validate().is_ok());
        line.max_frame = 64 * KIB;
        let error = line.validate().unwrap_err();
        assert!(error.message.contains("1-byte newline"), "{error}");
    }

    #[test]
    fn resp_max_frame_must_hold_a_client_command() {
        let error = {
            let mut config = Config::default();
            config.set("protocol", "resp").unwrap();
            config.set("max-frame", "16").unwrap();
            config.validate().unwrap_err()
        };
        assert_eq!(
            error.to_string(),
            "--max-frame: must be at least 1KiB with --protocol resp (a whole command must \
             fit), got 16"
        );
        valid(&[("protocol", "resp"), ("max-frame", "1KiB")]);
        valid(&[("protocol", "frame"), ("max-frame", "16")]);
    }

    #[test]
    fn breaker_cool_down_must_outlast_the_upstream_timeout() {
        let mut config = Config::default();
        config.set("protocol", "resp").unwrap();
        config.set("upstream-timeout", "2s").unwrap();
        config.set("breaker-cool-down", "1s").unwrap();
        config.upstreams = vec!["127.0.0.1:1".into()];
        let error = config.validate().unwrap_err();
        assert_eq!(error.flag, "--breaker-cool-down");
        assert!(
            error
                .message
                .starts_with("1s must be at least --upstream-timeout 2s"),
            "{error}"
        );
        config.set("breaker-cool-down", "2s").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn timeouts_are_bounded() {
        for flag in ["idle-timeout", "read-timeout", "write-timeout"] {
            for value in ["5ms", "0", "25h"] {
                let error = invalid(flag, value);
                assert_eq!(error.flag, format!("--{flag}"));
                assert!(
                    error.message.starts_with("must be between 10ms and 24h"),
                    "{error}"
                );
            }
            valid(&[(flag, "10ms")]);
            valid(&[(flag, "24h")]);
        }
        valid(&[("shutdown-grace", "0")]);
        let error = invalid("shutdown-grace", "25h");
        assert_eq!(
            error.to_string(),
            "--shutdown-grace: must be at most 24h, got 25h"
        );
    }

    #[test]
    fn counts_are_bounded_and_name_their_flag() {
        let out_of_range = [
            ("threads", "1025"),
            ("max-conns", "10000001"),
            ("accept-batch", "0"),
            ("accept-batch", "65537"),
            ("events-max", "0"),
            ("events-max", "65537"),
            ("read-budget", "0"),
            ("read-budget", "2GiB"),
            ("pool-free-max", "1000001"),
            ("pool-prealloc", "65"),
        ];
        for (key, value) in out_of_range {
            let error = invalid(key, value);
            assert_eq!(error.flag, format!("--{key}"), "{value}");
            assert!(error.message.starts_with("must be"), "{error}");
        }
        let in_range = [
            ("threads", "0"),
            ("threads", "1024"),
            ("max-conns", "0"),
            ("max-conns", "10000000"),
            ("backlog", "65535"),
            ("accept-batch", "65536"),
            ("events-max", "1"),
            ("read-budget", "1GiB"),
            ("pool-free-max", "0"),
            ("pool-prealloc", "64"),
        ];
        for (key, value) in in_range {
            valid(&[(key, value)]);
        }
        let error = invalid("threads", "5000");
        assert_eq!(
            error.to_string(),
            "--threads: must be at most 1024 (0 means one per CPU), got 5000"
        );
    }

    #[test]
    fn backlog_out_of_range_is_rejected_when_set() {
        let error = Config::default().set("backlog", "70000").unwrap_err();
        assert_eq!(
            error.to_string(),
            "--backlog: must be between 1 and 65535, got 70000"
        );
        for value in ["0", "5000000000"] {
            let error = Config::default().set("backlog", value).unwrap_err();
            assert_eq!(error.flag, "--backlog");
        }
    }

    #[test]
    fn admin_must_not_share_the_listen_port() {
        let clashes = [
            ("127.0.0.1:7000", "127.0.0.1:7000"),
            ("0.0.0.0:7000", "127.0.0.1:7000"),
            ("127.0.0.1:7000", "[::]:7000"),
        ];
        for (listen, admin) in clashes {
            let mut config = Config::default();
            config.set("listen", listen).unwrap();
            config.set("admin", admin).unwrap();
            let error = config.validate().unwrap_err();
            assert_eq!(error.flag, "--admin", "{listen} {admin}");
            assert!(error.message.contains("--admin off"), "{error}");
        }
        valid(&[("listen", "127.0.0.1:7000"), ("admin", "off")]);
        valid(&[("listen", "127.0.0.1:0"), ("admin", "127.0.0.1:0")]);
        valid(&[("listen", "127.0.0.1:7000"), ("admin", "127.0.0.2:7000")]);
    }

    #[test]
    fn set_parses_each_kind_of_value() {
        let config = valid(&[
            ("listen", "0.0.0.0:9000"),
            ("protocol", "line"),
            ("admin", "OFF"),
            ("threads", "2"),
            ("buffer", "16KiB"),
            ("idle-timeout", "5s"),
            ("backend", "epoll"),
            ("backlog", "128"),
            ("log-level", "debug"),
        ]);
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.protocol, Protocol::Line);
        assert_eq!(config.admin, None);
        assert_eq!(config.threads, 2);
        assert_eq!(config.buffer, 16 * KIB);
        assert_eq!(config.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.backlog, 128);
        assert_eq!(config.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn set_rejects_bad_values_naming_the_flag() {
        let cases = [
            ("listen", "localhost"),
            ("protocol", "http"),
            ("admin", "7001"),
            ("threads", "-1"),
            ("threads", "four"),
            ("buffer", "64x"),
            ("idle-timeout", "soon"),
            ("backend", "kqueue"),
            ("log-level", "verbose"),
        ];
        for (key, value) in cases {
            let error = Config::default().set(key, value).unwrap_err();
            assert_eq!(error.flag, format!("--{key}"), "{value}");
            assert!(error.message.contains(&format!("`{value}`")), "{error}");
        }
        if cfg!(feature = "uring") {
            let mut config = Config::default();
            config.set("backend", "uring").unwrap();
            assert_eq!(config.backend, Some(Backend::Uring));
        } else {
            let error = Config::default().set("backend", "uring").unwrap_err();
            assert_eq!(
                error.to_string(),
                "--backend: uring needs a build with `--features uring`"
            );
        }
        let error = Config::default().set("bogus", "1").unwrap_err();
        assert_eq!(error.flag, "--bogus");
    }

    #[test]
    fn file_sets_every_kind_of_value() {
        let file = TempFile::new(
            r#"
            listen = "127.0.0.1:7100"
            protocol = "line"
            admin = "off"
            threads = 2
            max-conns = 100
            buffer = "16KiB"
            max-frame = 1000
            idle-timeout = "5s"
            read-timeout = 3
            write-timeout = "500ms"
            shutdown-grace = "0"
            backend = "epoll"
            backlog = 64
            accept-batch = 8
            events-max = 256
            read-budget = 65536
            pool-free-max = 4
            log-level = "debug"
            "#,
        );
        let mut config = Config::default();
        config.apply_file(&file.0).unwrap();
        config.validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(config.protocol, Protocol::Line);
        assert_eq!(config.admin, None);
        assert_eq!((config.threads, config.max_conns), (2, 100));
        assert_eq!((config.buffer, config.max_frame), (16 * KIB, 1000));
        assert_eq!(config.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.read_timeout, Duration::from_secs(3));
        assert_eq!(config.write_timeout, Duration::from_millis(500));
        assert_eq!(config.shutdown_grace, Duration::ZERO);
        assert_eq!((config.backlog, config.accept_batch), (64, 8));
        assert_eq!((config.events_max, config.read_budget), (256, 64 * KIB));
        assert_eq!(config.pool_free_max, 4);
        assert_eq!(config.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn file_unknown_key_names_the_line_and_the_likely_key() {
        let error = file_error_of("threads = 2\nmax_conn = 100\n");
        assert_eq!(error.flag, "--config");
        assert!(
            error
                .message
                .ends_with(" line 2: unknown key `max_conn`; did you mean `max-conns`?")
        );
        let error = file_error_of("colour = \"blue\"\n");
        assert!(
            error
                .message
                .contains("unknown key `colour`; the keys are listen,"),
            "{error}"
        );
    }

    #[test]
    fn file_bad_value_names_the_key_and_line() {
        let error = file_error_of("threads = 2\n\nbuffer = \"64x\"\n");
        assert_eq!(error.flag, "--config");
        assert!(
            error.message.ends_with(
                " line 3: buffer: expected a size such as 512, 64KiB or 1MiB, got `64x`"
            ),
            "{error}"
        );
        let error = file_error_of("threads = [2]\n");
        assert!(
            error
                .message
                .ends_with("threads: expected a string, an integer or a boolean, got a array")
        );
        let error = file_error_of("idle-timeout = -5\n");
        assert!(
            error.message.contains("idle-timeout: expected a duration"),
            "{error}"
        );
    }

    #[test]
    fn file_syntax_error_is_one_line_with_its_line_number() {
        let error = file_error_of("threads = 2\nbuffer = \n");
        let text = error.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("--config: "), "{text}");
        assert!(text.contains(" line 2: "), "{text}");
        let error = file_error_of("threads = 2\nthreads = 3\n");
        assert!(!error.to_string().contains('\n'));
    }

    #[test]
    fn missing_file_says_it_cannot_be_read() {
        let path = std::env::temp_dir().join("holdfast-config-does-not-exist.toml");
        let error = Config::default().apply_file(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "--config: cannot read {}: No such file or directory (os error 2)",
                path.display()
            )
        );
    }

    /// `PROXY_KEYS` is written out by hand: this keeps it equal to the
    /// serve settings without the key-value store's, so an engine setting
    /// added to one list cannot be forgotten in the other.
    #[test]
    fn the_proxy_has_every_engine_setting() {
        const STORE_ONLY: [&str; 2] = ["max-memory", "enable-debug-commands"];
        for key in KEYS {
            assert_eq!(
                PROXY_KEYS.contains(key),
                !STORE_ONLY.contains(key),
                "{key} in PROXY_KEYS"
            );
        }
    }

    #[test]
    fn every_key_is_a_setting() {
        for key in KEYS {
            let error = Config::default().set(key, "\u{1}").unwrap_err();
            assert!(!error.message.starts_with("not a setting"), "{key}");
        }
    }
}
