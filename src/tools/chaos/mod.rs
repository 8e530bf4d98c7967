//! `holdfast chaos scan`: finds the classic mistakes of a TCP server it did
//! not build, by being the worst clients that server will ever meet.
//!
//! One module per check, each bounded in connections, bytes and time, each
//! ending in a [`Finding`]: pass, fail or cannot tell, with the numbers that
//! decided it. With `--pid` the server's `/proc` figures (fds, RSS, CPU
//! time) are evidence too ([`procfs`]); without it the checks that need
//! them say "cannot tell" rather than guess.
//!
//! The scanner is a client only: it talks to the server through loopback or
//! a given address and never links to the engine's serving code (it reuses
//! the engine's protocol names and the load generator's CPU reader).

pub mod bad_input;
pub mod buffers;
pub mod exhaustion;
pub mod idle;
pub mod leaks;
pub mod partial;
pub mod probe;
pub mod procfs;
pub mod protocol;
pub mod proxy;
pub mod report;
pub mod shutdown;
pub mod slow_peer;
pub mod split;

use std::fmt;
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::engine::codec::Protocol;
pub use report::{Finding, Report, Verdict};

/// Default for `--duration`: long enough to see a server's idle timeout of
/// a minute (a common default) close a connection.
pub const DEFAULT_WAIT: &str = "70s";
/// Default for `--max-conns`.
pub const DEFAULT_MAX_CONNS: usize = 1000;
/// The most connections `--max-conns` may ask for.
pub const MAX_CONNS_LIMIT: usize = 100_000;
/// Descriptors the scanner keeps for itself beyond `--max-conns`.
const OWN_FDS: u64 = 64;

/// The options of `holdfast chaos scan`.
#[derive(Args, Clone, Debug)]
pub struct ScanOptions {
    /// The server to scan (host:port)
    #[arg(value_name = "ADDR")]
    pub addr: String,
    /// The server's protocol: echo | line | frame | resp
    #[arg(long, value_parser = parse_protocol, default_value = "echo")]
    pub protocol: Protocol,
    /// The server's process id (local): its fds, RSS and CPU time become evidence
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// The most connections any check opens at once (the fd-exhaustion check opens this many)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNS)]
    pub max_conns: usize,
    /// The longest any check waits for the server to react (close an idle
    /// connection, give back fds, cut off a slow reader)
    #[arg(long, value_name = "TIME", value_parser = crate::config::parse_duration, default_value = DEFAULT_WAIT)]
    pub duration: Duration,
    /// Run only these checks
    #[arg(long, value_enum, value_name = "CHECK", num_args = 1..)]
    pub only: Vec<Check>,
    /// Also write the report as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write the report as one self-contained HTML page to this file
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Allow the shutdown check to send SIGTERM to --pid (the server exits)
    #[arg(long)]
    pub allow_signal: bool,
}

impl ScanOptions {
    /// Options with the defaults, for `addr` speaking `protocol`.
    pub fn new(addr: impl Into<String>, protocol: Protocol) -> ScanOptions {
        ScanOptions {
            addr: addr.into(),
            protocol,
            pid: None,
            max_conns: DEFAULT_MAX_CONNS,
            duration: crate::config::parse_duration(DEFAULT_WAIT).expect("default"),
            only: Vec::new(),
            json: None,
            html: None,
            allow_signal: false,
        }
    }
}

fn parse_protocol(name: &str) -> Result<Protocol, String> {
    Protocol::from_name(name)
        .ok_or_else(|| format!("expected echo, line, frame or resp, got `{name}`"))
}

/// The checks, in the order they run (shutdown last: it ends the server).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// fd / connection leaks
    Leaks,
    /// idle and mid-frame (slowloris) connections closed in time
    Idle,
    /// garbage, truncated and fuzzed frames; others still served
    BadInput,
    /// oversized frames and endless lines; memory bounded
    Buffers,
    /// a client that sends and never reads
    SlowPeer,
    /// sticky and split packets
    Split,
    /// partial reads and writes through a tiny receive buffer
    Partial,
    /// connections past the server's limit
    Exhaustion,
    /// graceful shutdown under load (needs --pid and --allow-signal)
    Shutdown,
}

impl Check {
    /// Every check, in running order.
    pub const ALL: [Check; 9] = [
        Check::Leaks,
        Check::Idle,
        Check::BadInput,
        Check::Buffers,
        Check::SlowPeer,
        Check::Split,
        Check::Partial,
        Check::Exhaustion,
        Check::Shutdown,
    ];

    /// The name as `--only` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Check::Leaks => "leaks",
            Check::Idle => "idle",
            Check::BadInput => "bad-input",
            Check::Buffers => "buffers",
            Check::SlowPeer => "slow-peer",
            Check::Split => "split",
            Check::Partial => "partial",
            Check::Exhaustion => "exhaustion",
            Check::Shutdown => "shutdown",
        }
    }

    fn run(self, ctx: &Ctx) -> Finding {
        match self {
            Check::Leaks => leaks::run(ctx),
            Check::Idle => idle::run(ctx),
            Check::BadInput => bad_input::run(ctx),
            Check::Buffers => buffers::run(ctx),
            Check::SlowPeer => slow_peer::run(ctx),
            Check::Split => split::run(ctx),
            Check::Partial => partial::run(ctx),
            Check::Exhaustion => exhaustion::run(ctx),
            Check::Shutdown => shutdown::run(ctx),
        }
    }
}

/// Why a scan could not run at all (a failed check is not an error).
#[derive(Debug)]
pub enum ScanError {
    /// An option is out of range or cannot be used.
    Options(String),
    /// The server did not answer one plain request before the checks.
    Unreachable(String),
    /// The JSON or HTML report could not be written.
    Write(PathBuf, std::io::Error),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Options(text) => write!(f, "{text}"),
            ScanError::Unreachable(text) => write!(f, "the server is not serving: {text}"),
            ScanError::Write(path, e) => write!(f, "writing {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for ScanError {}

/// What every check is given.
pub struct Ctx {
    /// The server.
    pub addr: SocketAddr,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its process, when `--pid` was given.
    pub proc: Option<procfs::Proc>,
    /// `--max-conns`.
    pub max_conns: usize,
    /// `--duration`: the longest wait for the server to react.
    pub wait: Duration,
    /// `--allow-signal`.
    pub allow_signal: bool,
}

/// Runs the checks `options` asks for and writes the JSON and HTML reports
/// it names. The terminal card is [`Report::to_text`]; the exit status
/// for the command is [`Report::exit_code`] (non-zero when a check failed).
pub fn run(options: &ScanOptions) -> Result<Report, ScanError> {
    let ctx = context(options)?;
    probe::serving(&ctx).map_err(ScanError::Unreachable)?;
    let checks: Vec<Check> = Check::ALL
        .into_iter()
        .filter(|c| options.only.is_empty() || options.only.contains(c))
        .collect();
    let sampler = ctx.proc.clone().map(procfs::Sampler::start);
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    let mut findings = Vec::with_capacity(checks.len());
    for (i, check) in checks.iter().enumerate() {
        if progress {
            eprint!("\r[{}/{}] {:<12}", i + 1, checks.len(), check.name());
        }
        findings.push(check.run(&ctx));
    }
    if progress {
        eprintln!("\r{:<40}", "");
    }
    let report = Report {
        addr: ctx.addr,
        protocol: ctx.protocol,
        pid: options.pid,
        elapsed: started.elapsed(),
        findings,
        samples: sampler.map(procfs::Sampler::stop).unwrap_or_default(),
    };
    write_files(options, &report)?;
    Ok(report)
}

/// Validates `options` into what the checks use.
fn context(options: &ScanOptions) -> Result<Ctx, ScanError> {
    let addr = options
        .addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ScanError::Options(format!("ADDR: cannot resolve `{}`", options.addr)))?;
    if options.max_conns == 0 || options.max_conns > MAX_CONNS_LIMIT {
        return Err(ScanError::Options(format!(
            "--max-conns: {} is out of range (1 to {MAX_CONNS_LIMIT})",
            options.max_conns
        )));
    }
    own_fd_room(options.max_conns)?;
    if options.duration < Duration::from_millis(100) {
        return Err(ScanError::Options("--duration: at least 100ms".into()));
    }
    let proc = match options.pid {
        Some(pid) => Some(procfs::Proc::open(pid).map_err(ScanError::Options)?),
        None => None,
    };
    Ok(Ctx {
        addr,
        protocol: options.protocol,
        proc,
        max_conns: options.max_conns,
        wait: options.duration,
        allow_signal: options.allow_signal,
    })
}

/// `--max-conns` must fit in the scanner's own descriptor limit (raised
/// to the hard limit first, as the server does).
fn own_fd_room(max_conns: usize) -> Result<(), ScanError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| ScanError::Options(format!("reading RLIMIT_NOFILE: {e}")))?;
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let room = hard.saturating_sub(OWN_FDS);
    if max_conns as u64 > room {
        return Err(ScanError::Options(format!(
            "--max-conns: {max_conns} does not fit this process's fd limit ({hard}, {OWN_FDS} kept aside); \
             raise `ulimit -n` or ask for at most {room}"
        )));
    }
    Ok(())
}

fn write_files(options: &ScanOptions, report: &Report) -> Result<(), ScanError> {
    if let Some(path) = &options.json {
        std::fs::write(path, report.to_json()).map_err(|e| ScanError::Write(path.clone(), e))?;
    }
    if let Some(path) = &options.html {
        std::fs::write(path, report.to_html()).map_err(|e| ScanError::Write(path.clone(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `ScanOptions` as the command line will embed it.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        scan: ScanOptions,
    }

    fn parse(args: &[&str]) -> Result<ScanOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("scan").chain(args.iter().copied())).map(|c| c.scan)
    }

    #[test]
    fn flags_parse() {
        let o = parse(&[
            "127.0.0.1:7000",
            "--protocol",
            "resp",
            "--pid",
            "42",
            "--max-conns",
            "10",
            "--duration",
            "5s",
            "--only",
            "idle",
            "bad-input",
            "--json",
            "r.json",
            "--allow-signal",
        ])
        .unwrap();
        assert_eq!(o.addr, "127.0.0.1:7000");
        assert_eq!(o.protocol, Protocol::Resp);
        assert_eq!((o.pid, o.max_conns), (Some(42), 10));
        assert_eq!(o.duration, Duration::from_secs(5));
        assert_eq!(o.only, vec![Check::Idle, Check::BadInput]);
        assert!(o.allow_signal && o.json.is_some() && o.html.is_none());
    }

    #[test]
    fn defaults_and_bad_values() {
        let o = parse(&["localhost:1"]).unwrap();
        assert_eq!(o.protocol, Protocol::Echo);
        assert_eq!(o.duration, Duration::from_secs(70));
        assert!(parse(&["x:1", "--protocol", "http"]).is_err());
        assert!(parse(&["x:1", "--only", "nothing"]).is_err());
        let mut o = ScanOptions::new("127.0.0.1:1", Protocol::Line);
        o.max_conns = 0;
        assert!(matches!(run(&o), Err(ScanError::Options(_))));
    }
}
