//! `holdfast bench`: a closed-loop load generator.
//!
//! Each connection keeps `--pipeline` requests in flight: a new request is
//! issued the moment a reply completes, so the offered load adapts to the
//! server (closed loop) and latency is measured from the moment a request
//! was issued to the moment its whole echo arrived. Every echoed byte is
//! checked against the byte sent ([`client`]); a wrong byte, a lost
//! connection or a failed connect counts as an error.
//!
//! The connections are spread over `--threads` threads ([`worker`]), each
//! with its own mio poll and latency histogram, merged at the end.
//! `--idle` connects and then sends nothing, to measure what a server holds
//! per idle connection.

pub mod client;
pub mod connect;
pub mod pubsub;
pub mod worker;

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use worker::Live;

/// The protocols the load generator speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Raw bytes, echoed as they are.
    Echo,
    /// u32 big-endian length, then the payload; echoed frame by frame.
    Frame,
}

impl Protocol {
    /// Parses a `--protocol` name.
    pub fn from_name(name: &str) -> Result<Protocol, String> {
        match name {
            "echo" => Ok(Protocol::Echo),
            "frame" => Ok(Protocol::Frame),
            "resp-ping" => Err(
                "resp-ping is not implemented yet (the server has no resp protocol); \
                 use echo or frame"
                    .into(),
            ),
            other => Err(format!("expected echo or frame, got `{other}`")),
        }
    }

    /// The name as `--protocol` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Echo => "echo",
            Protocol::Frame => "frame",
        }
    }
}

/// The settings of one `holdfast bench` run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// `--target`: the server to load.
    pub target: SocketAddr,
    /// `--conns`: connections, all open at once.
    pub conns: usize,
    /// `--pipeline`: requests in flight per connection.
    pub pipeline: usize,
    /// `--size`: payload bytes per request.
    pub size: usize,
    /// `--protocol`.
    pub protocol: Protocol,
    /// `--duration`: how long to measure (with `--idle`: how long to hold).
    pub duration: Duration,
    /// `--warmup`: load before measuring, not counted.
    pub warmup: Duration,
    /// `--threads`: load-generator threads.
    pub threads: usize,
    /// `--json`: print the summary as one JSON line.
    pub json: bool,
    /// `--idle`: connect, then hold the connections without sending.
    pub idle: bool,
    /// `--server-pid`: a local server process whose CPU time (utime +
    /// stime) over the measured window is reported, per request too.
    pub server_pid: Option<u32>,
    /// `--pubsub`: a Redis Pub/Sub load ([`pubsub`]) instead of echo
    /// requests, with its own settings; `conns` and `protocol` are then
    /// unused.
    pub pubsub: Option<pubsub::PubSubOptions>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            target: "127.0.0.1:7000".parse().unwrap(),
            conns: 100,
            pipeline: 1,
            size: 64,
            protocol: Protocol::Echo,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            threads: 1,
            json: false,
            idle: false,
            server_pid: None,
            pubsub: None,
        }
    }
}

/// The bounds `validate` enforces.
/// More connections than any fd limit allows in practice.
const CONNS_MAX: usize = 10_000_000;
/// Requests in flight per connection; the issue times are kept per request.
const PIPELINE_MAX: usize = 65_536;
/// Payload bytes: `frame` carries a u32 length, and holdfast's largest ring
/// is 64MiB.
const SIZE_MAX: usize = 64 << 20;
/// Load-generator threads.
const THREADS_MAX: usize = 1024;
/// Descriptors kept aside for the process itself (stdio, polls, slack).
const FDS_OWN: u64 = 64;
/// The longest the connect phase may take; connects still in flight then
/// count as errors and the run goes on with the connections it has.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl BenchOptions {
    /// Checks every bound; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let range = |flag: &str, value: usize, max: usize| {
            if value == 0 || value > max {
                Err(format!("{flag}: {value} is out of range (1 to {max})"))
            } else {
                Ok(())
            }
        };
        range("--pipeline", self.pipeline, PIPELINE_MAX)?;
        range("--threads", self.threads, THREADS_MAX)?;
        if self.duration.is_zero() {
            return Err("--duration: must be more than 0".into());
        }
        if let Some(pubsub) = &self.pubsub {
            return pubsub.validate(self);
        }
        range("--conns", self.conns, CONNS_MAX)?;
        range("--size", self.size, SIZE_MAX)?;
        if self.threads > self.conns {
            return Err(format!(
                "--threads: {} threads for {} connections; use at most one thread per connection",
                self.threads, self.conns
            ));
        }
        Ok(())
    }
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The settings it ran with.
    pub options: BenchOptions,
    /// Connections established in the connect phase (all of them are
    /// loaded from the start of the warm-up; fewer than `--conns` means
    /// some connects failed or did not finish within [`CONNECT_TIMEOUT`]).
    pub connected: u64,
    /// Requests answered (and verified) in the measured window.
    pub requests: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Connections lost to errors.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Latency percentiles in nanoseconds: p50, p99, p99.9, max.
    pub latency_nanos: [u64; 4],
    /// CPU time (user + system) `--server-pid` used in the measured window.
    pub server_cpu: Option<Duration>,
    /// How long the connect phase took (every connect settled, or
    /// [`CONNECT_TIMEOUT`]).
    pub connect_time: Duration,
    /// Connects refused (a server's accept queue overflowing) and tried
    /// again in the connect phase.
    pub connect_retries: u64,
}

impl Summary {
    /// Requests per second over the measured window.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.requests as f64 / seconds
        } else {
            0.0
        }
    }

    /// Server CPU time per request answered, when it was measured.
    pub fn server_cpu_per_request(&self) -> Option<Duration> {
        let cpu = self.server_cpu?;
        let requests = u32::try_from(self.requests).ok().filter(|&n| n > 0)?;
        Some(cpu / requests)
    }

    /// The summary as one JSON object on one line (latencies in µs).
    pub fn to_json(&self) -> String {
        let fields: Vec<String> = self
            .json_fields()
            .into_iter()
            .map(|(key, value)| format!("\"{key}\":{value}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    /// The JSON fields in order, each value already in JSON; the optional
    /// ones only when known.
    fn json_fields(&self) -> Vec<(&'static str, String)> {
        let o = &self.options;
        let micros = |nanos: u64| format!("{:.1}", nanos as f64 / 1000.0);
        let mut fields = vec![
            ("target", format!("\"{}\"", o.target)),
            ("protocol", format!("\"{}\"", o.protocol.name())),
            ("conns", o.conns.to_string()),
            ("connected", self.connected.to_string()),
            ("pipeline", o.pipeline.to_string()),
            ("size", o.size.to_string()),
            ("threads", o.threads.to_string()),
            ("idle", o.idle.to_string()),
            ("seconds", format!("{:.3}", self.elapsed.as_secs_f64())),
            ("requests", self.requests.to_string()),
            ("rps", format!("{:.1}", self.rate())),
            ("p50_us", micros(self.latency_nanos[0])),
            ("p99_us", micros(self.latency_nanos[1])),
            ("p999_us", micros(self.latency_nanos[2])),
            ("max_us", micros(self.latency_nanos[3])),
            ("errors", self.errors.to_string()),
            (
                "connect_s",
                format!("{:.3}", self.connect_time.as_secs_f64()),
            ),
            ("connect_retries", self.connect_retries.to_string()),
        ];
        if let Some(cpu) = self.server_cpu {
            fields.push(("server_cpu_s", format!("{:.3}", cpu.as_secs_f64())));
        }
        if let Some(per) = self.server_cpu_per_request() {
            let us = per.as_secs_f64() * 1e6;
            fields.push(("server_cpu_us_per_req", format!("{us:.3}")));
        }
        if let Some(error) = &self.first_error {
            fields.push(("first_error", format!("\"{}\"", json_escape(error))));
        }
        fields
    }

    /// The summary for people, several lines.
    pub fn to_text(&self) -> String {
        let o = &self.options;
        let micros = |nanos: u64| format!("{:.1} µs", nanos as f64 / 1000.0);
        let mut text = format!(
            "holdfast bench: {} {}, {} conns ({} connected) × pipeline {}, {} B, {} thread{}, {:.1}s measured\n",
            o.target,
            o.protocol.name(),
            o.conns,
            self.connected,
            o.pipeline,
            o.size,
            o.threads,
            if o.threads == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64(),
        );
        if self.connected < o.conns as u64 {
            let _ = writeln!(
                text,
                "WARNING   only {} of {} connections were established; the figures below are for {}",
                self.connected, o.conns, self.connected
            );
        }
        let _ = writeln!(
            text,
            "connect   {:.3} s for all connections ({} refused and retried), then {:.1} s warm-up",
            self.connect_time.as_secs_f64(),
            self.connect_retries,
            o.warmup.as_secs_f64()
        );
        let _ = writeln!(text, "requests  {} ({:.0}/s)", self.requests, self.rate());
        let _ = writeln!(
            text,
            "latency   p50 {}  p99 {}  p99.9 {}  max {}",
            micros(self.latency_nanos[0]),
            micros(self.latency_nanos[1]),
            micros(self.latency_nanos[2]),
            micros(self.latency_nanos[3]),
        );
        if let Some(cpu) = self.server_cpu {
            let per = self.server_cpu_per_request().unwrap_or_default();
            let _ = writeln!(
                text,
                "server    {:.3} s CPU, {:.2} µs per request",
                cpu.as_secs_f64(),
                per.as_secs_f64() * 1e6
            );
        }
        let _ = write!(text, "errors    {}", self.errors);
        if let Some(error) = &self.first_error {
            let _ = write!(text, " (first: {error})");
        }
        text.push('\n');
        text
    }
}

/// Runs the load described by `options` and returns what it measured.
/// Prints a progress line on stderr once a second when stderr is a
/// terminal. Fails only on setup errors (fd limit, poll creation).
pub fn run(options: &BenchOptions) -> Result<Summary, String> {
    options.validate()?;
    let limit = crate::engine::sys::raise_fd_limit()
        .map_err(|error| format!("reading RLIMIT_NOFILE: {error}"))?;
    let needed = options.conns as u64 + FDS_OWN + options.threads as u64;
    if needed > limit {
        return Err(format!(
            "--conns: {} connections need about {needed} file descriptors, \
             RLIMIT_NOFILE is {limit}; raise it (ulimit -n) or lower --conns",
            options.conns
        ));
    }

    let live = Arc::new(Live::default());
    let handles: Vec<_> = (0..options.threads)
        .map(|thread| {
            let indices: Vec<usize> = (thread..options.conns).step_by(options.threads).collect();
            let options = options.clone();
            let live = live.clone();
            std::thread::Builder::new()
                .name(format!("holdfast-bench-{thread}"))
                .spawn(move || worker::run(&options, indices, &live))
                .map_err(|error| format!("starting a load thread: {error}"))
        })
        .collect::<Result<_, _>>()?;

    let (connect_time, server_cpu) = progress(options, &live, &handles)?;

    let mut histogram = new_histogram();
    let mut summary = Summary {
        options: options.clone(),
        connected: 0,
        requests: 0,
        elapsed: options.duration,
        errors: 0,
        first_error: None,
        latency_nanos: [0; 4],
        server_cpu,
        connect_time,
        connect_retries: 0,
    };
    for handle in handles {
        let outcome = handle
            .join()
            .map_err(|_| "a load thread panicked".to_string())?
            .map_err(|error| format!("load thread: {error}"))?;
        histogram
            .add(&outcome.histogram)
            .map_err(|error| format!("merging histograms: {error}"))?;
        summary.connected += outcome.connected;
        summary.connect_retries += outcome.retries;
        summary.requests += outcome.requests;
        summary.errors += outcome.errors;
        summary.first_error = summary.first_error.or(outcome.first_error);
    }
    summary.latency_nanos = [
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
    ];
    Ok(summary)
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Drives the phases from the main thread. First the connect phase: waits
/// until every connect has settled (or [`CONNECT_TIMEOUT`], or every load
/// thread has stopped), then opens the window: the warm-up and the measured
/// window start now. Until the window's end: once a second, a progress line
/// on stderr if it is a terminal; with `--idle`, one line as the window
/// opens, in any case (a script waits for it before measuring the server).
/// Reads the CPU time of `--server-pid` at the end of the warm-up and at
/// the end; returns the connect phase's length and the CPU difference.
fn progress<T>(
    options: &BenchOptions,
    live: &Live,
    threads: &[std::thread::JoinHandle<T>],
) -> Result<(Duration, Option<Duration>), String> {
    let tty = std::io::stderr().is_terminal();
    let connect_start = Instant::now();
    wait_for_connects(options.conns, live, threads, tty, &|| false);
    let start = Instant::now();
    let connect_time = start.duration_since(connect_start);
    // Without a warm-up the measured window starts now.
    let cpu_start = if options.warmup.is_zero() {
        server_cpu(options)?
    } else {
        None
    };
    let window = open_window(options, live, start)?;
    let cpu_start = watch_window(options, live, (start, window), cpu_start, tty, "req/s")?;
    if tty {
        eprint!("\r\x1b[K");
    }
    let cpu_end = server_cpu(options)?;
    let cpu = match (cpu_start, cpu_end) {
        (Some(start), Some(end)) => Some(end.saturating_sub(start)),
        _ => None,
    };
    Ok((connect_time, cpu))
}

/// The CPU time `--server-pid` has used so far, if one was given.
fn server_cpu(options: &BenchOptions) -> Result<Option<Duration>, String> {
    match options.server_pid {
        Some(pid) => process_cpu(pid)
            .map(Some)
            .map_err(|error| format!("--server-pid: reading /proc/{pid}/stat: {error}")),
        None => Ok(None),
    }
}

/// The connect phase: until `total` connections have settled,
/// [`CONNECT_TIMEOUT`] has passed, every load thread has stopped or
/// `give_up` says so; a line twice a second on a terminal.
fn wait_for_connects<T>(
    total: usize,
    live: &Live,
    threads: &[std::thread::JoinHandle<T>],
    tty: bool,
    give_up: &dyn Fn() -> bool,
) {
    let connect_start = Instant::now();
    let mut last_line = connect_start;
    loop {
        let settled = live.settled.load(Ordering::SeqCst);
        let now = Instant::now();
        if settled as usize >= total
            || now.duration_since(connect_start) >= CONNECT_TIMEOUT
            || threads.iter().all(|thread| thread.is_finished())
            || give_up()
        {
            return;
        }
        if tty && now.duration_since(last_line) >= Duration::from_millis(500) {
            eprint!(
                "\r\x1b[Kconnecting: {} of {} connected, {} errors",
                live.connected.load(Ordering::Relaxed),
                total,
                live.errors.load(Ordering::Relaxed)
            );
            last_line = now;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sets the window (warm-up end, end) from `start` for the load threads;
/// with `--idle`, says so on stderr.
fn open_window(
    options: &BenchOptions,
    live: &Live,
    start: Instant,
) -> Result<(Instant, Instant), String> {
    let warmup_end = start + options.warmup;
    let end = warmup_end + options.duration;
    live.window
        .set((warmup_end, end))
        .map_err(|_| "the load window was set twice".to_string())?;
    if options.idle {
        eprintln!(
            "holding {} idle connections ({} errors)",
            live.connected.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed)
        );
    }
    Ok((warmup_end, end))
}

/// Sleeps through the window, printing the rate of [`Live::requests`]
/// (in `unit`) once a second on a terminal; reads the server's CPU time as
/// the warm-up ends (unless `cpu_start` already holds it) and returns it.
fn watch_window(
    options: &BenchOptions,
    live: &Live,
    (start, (warmup_end, end)): (Instant, (Instant, Instant)),
    mut cpu_start: Option<Duration>,
    tty: bool,
    unit: &str,
) -> Result<Option<Duration>, String> {
    let mut last = (start, 0u64);
    let tick = Duration::from_millis(1000);
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(cpu_start);
        }
        // Wake for the next tick, or exactly at the window's edges.
        let mut wake = now + tick;
        if cpu_start.is_none() && now < warmup_end {
            wake = wake.min(warmup_end);
        }
        std::thread::sleep(wake.min(end) - now);
        let now = Instant::now();
        if cpu_start.is_none() && now >= warmup_end {
            cpu_start = server_cpu(options)?;
        }
        if tty && !options.idle && now.duration_since(last.0) >= Duration::from_millis(900) {
            let requests = live.requests.load(Ordering::Relaxed);
            let rate = (requests - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            eprint!(
                "\r\x1b[K{:>5.1}s  {:>10.0} {unit}  {} connected  {} errors",
                now.duration_since(start).as_secs_f64(),
                rate,
                live.connected.load(Ordering::Relaxed),
                live.errors.load(Ordering::Relaxed),
            );
            last = (now, requests);
        }
    }
}

/// User + system CPU time of process `pid` so far (`/proc/PID/stat`
/// fields 14 and 15, in clock ticks of `sysconf(_SC_CLK_TCK)`).
pub fn process_cpu(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = stat_cpu_ticks(&stat)
        .ok_or_else(|| std::io::Error::other("unexpected /proc/PID/stat format"))?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&n| n > 0)
        .unwrap_or(100) as u64;
    Ok(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / per_second,
    ))
}

/// utime + stime, in clock ticks, from the text of `/proc/PID/stat`. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After `)`: field 3 (state) is first, so utime (14) is the 12th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Escapes `text` for a JSON string.
fn json_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(escaped, "\\u{:04x}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            options: BenchOptions::default(),
            connected: 100,
            requests: 2000,
            elapsed: Duration::from_secs(2),
            errors: 1,
            first_error: Some("i/o: \"reset\"".into()),
            latency_nanos: [10_000, 99_000, 999_500, 2_000_000],
            server_cpu: Some(Duration::from_millis(10)),
            connect_time: Duration::from_millis(20),
            connect_retries: 3,
        }
    }

    #[test]
    fn json_is_one_line_with_every_figure() {
        let json = summary().to_json();
        assert!(!json.contains('\n'));
        for field in [
            "\"requests\":2000",
            "\"rps\":1000.0",
            "\"p50_us\":10.0",
            "\"p99_us\":99.0",
            "\"p999_us\":999.5",
            "\"errors\":1",
            "\"connected\":100",
            "\"connect_s\":0.020",
            "\"connect_retries\":3",
            "\"server_cpu_s\":0.010",
            "\"server_cpu_us_per_req\":5.000",
            "\"protocol\":\"echo\"",
            "\"first_error\":\"i/o: \\\"reset\\\"\"",
        ] {
            assert!(json.contains(field), "{field} missing from {json}");
        }
    }

    /// The whole line, byte for byte: field order and number formats.
    #[test]
    fn json_line_exactly() {
        let expected = r#"{"target":"127.0.0.1:7000","protocol":"echo","conns":100,"connected":100,"pipeline":1,"size":64,"threads":1,"idle":false,"seconds":2.000,"requests":2000,"rps":1000.0,"p50_us":10.0,"p99_us":99.0,"p999_us":999.5,"max_us":2000.0,"errors":1,"connect_s":0.020,"connect_retries":3,"server_cpu_s":0.010,"server_cpu_us_per_req":5.000,"first_error":"i/o: \"reset\""}"#;
        assert_eq!(summary().to_json(), expected);
    }

    #[test]
    fn text_names_the_rate_and_percentiles() {
        let text = summary().to_text();
        assert!(text.contains("requests  2000 (1000/s)"), "{text}");
        assert!(text.contains("p99 99.0 µs"), "{text}");
        assert!(text.contains("errors    1 (first: "), "{text}");
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "1234 (a) b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 3 0 12345 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(300));
        assert_eq!(stat_cpu_ticks("garbage"), None);
        let own = process_cpu(std::process::id()).unwrap();
        assert!(own < Duration::from_secs(24 * 3600));
    }

    #[test]
    fn resp_ping_is_refused_by_name() {
        let error = Protocol::from_name("resp-ping").unwrap_err();
        assert!(error.contains("not implemented"), "{error}");
        assert_eq!(Protocol::from_name("frame"), Ok(Protocol::Frame));
        assert!(Protocol::from_name("line").is_err());
    }

    #[test]
    fn validate_names_the_flag() {
        let bad = |change: fn(&mut BenchOptions)| {
            let mut options = BenchOptions::default();
            change(&mut options);
            options.validate().unwrap_err()
        };
        assert!(bad(|o| o.conns = 0).starts_with("--conns: "));
        assert!(bad(|o| o.pipeline = 0).starts_with("--pipeline: "));
        assert!(bad(|o| o.size = SIZE_MAX + 1).starts_with("--size: "));
        assert!(bad(|o| o.duration = Duration::ZERO).starts_with("--duration: "));
        assert!(bad(|o| o.threads = 101).starts_with("--threads: "));
        assert!(BenchOptions::default().validate().is_ok());
    }
}
