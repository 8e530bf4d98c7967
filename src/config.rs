//! The server's settings: bounded defaults, parsing of sizes and durations,
//! and `validate()`, which relates the bounds to each other before anything
//! starts.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::codec::Protocol;

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
    /// `--log-level`.
    pub log_level: log::LevelFilter,
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
            log_level: log::LevelFilter::Info,
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

impl Config {
    /// Checks every bound and fills the derived defaults (`max_frame` when
    /// 0). `threads` and `max_conns` of 0 stay 0 here: the server derives
    /// them from the machine at start-up.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        todo!()
    }

    /// Applies a TOML file with the same keys as the flags (`max-conns =
    /// 100`, `idle-timeout = "5s"`); unknown keys are errors.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let _ = path;
        todo!()
    }
}

/// Parses a size: `512`, `64KiB`, `1MiB` (also `KB`/`MB`/`GB` as powers of
/// 1000, `K`/`M`/`G` and `KiB`/`MiB`/`GiB` as powers of 1024).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let _ = text;
    todo!()
}

/// Parses a duration: `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let _ = text;
    todo!()
}
