//! The command line: `holdfast serve [options]` and `holdfast proxy
//! [options]`, turned into a [`Config`] (their flags are the settings
//! declared in `config`), and `holdfast bench [options]`, turned into
//! [`BenchOptions`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use crate::config::{self, Config, ConfigError, Mode, Protocol, parse_duration, parse_size};
use crate::engine::reload::Source;
use crate::tools::bench::pubsub::PubSubOptions;
use crate::tools::bench::{BenchOptions, Protocol as BenchProtocol};
use crate::tools::chaos::ScanOptions;

/// What the command line asked for.
pub enum Command {
    /// `holdfast serve`: run the server with this validated config,
    /// reloading from the source on SIGHUP.
    Serve(Config, Source),
    /// `holdfast serve --check` (or `proxy --check`): validate the
    /// settings and probe the backend, then exit.
    Check(Config),
    /// `holdfast proxy`: run the RESP proxy with this validated config,
    /// reloading from the source on SIGHUP.
    Proxy(Config, Source),
    /// `holdfast reload`: ask the server whose admin endpoint is at this
    /// address to reload its settings.
    Reload(SocketAddr),
    /// `holdfast bench`: load a server with these validated options.
    Bench(BenchOptions),
    /// `holdfast chaos scan`: look for the classic mistakes in a server.
    ChaosScan(ScanOptions),
    /// `holdfast chaos proxy`: a fault-injecting proxy with Toxiproxy's API.
    ChaosProxy(config::ChaosProxySettings),
}

/// Parses `args` (including the program name). `Err` carries the exit code
/// and the text to print: help and version go to stdout with code 0;
/// errors are ONE line for stderr with code 2, naming the flag.
pub fn parse<I, T>(args: I) -> Result<Command, (i32, String)>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let matches = cli()
        .try_get_matches_from(&args)
        .map_err(|error| clap_error(&error, command_named(&args)))?;
    let usage = |error: ConfigError| (2, error.to_string());
    match matches.subcommand() {
        Some(("serve", flags)) => {
            let config = settings(Mode::Serve, flags).map_err(usage)?;
            let source = source(Mode::Serve, flags);
            Ok(checked(flags, config, |c| Command::Serve(c, source)))
        }
        Some(("proxy", flags)) => {
            let config = settings(Mode::Proxy, flags).map_err(usage)?;
            let source = source(Mode::Proxy, flags);
            Ok(checked(flags, config, |c| Command::Proxy(c, source)))
        }
        Some(("reload", flags)) => {
            let admin = flags.get_one::<SocketAddr>("admin").copied();
            Ok(Command::Reload(admin.expect("a default")))
        }
        Some(("bench", flags)) => {
            let bench = BenchArgs::from_arg_matches(flags).map_err(|e| (2, e.to_string()))?;
            bench.options().map(Command::Bench).map_err(|e| (2, e))
        }
        Some(("chaos", chaos)) => match chaos.subcommand() {
            Some(("scan", flags)) => ScanOptions::from_arg_matches(flags)
                .map(Command::ChaosScan)
                .map_err(|e| (2, e.to_string())),
            Some(("proxy", flags)) => config::ChaosProxySettings::from_arg_matches(flags)
                .map(Command::ChaosProxy)
                .map_err(|e| (2, e.to_string())),
            _ => Err((2, MISSING_CHAOS.into())),
        },
        _ => Err((2, MISSING_COMMAND.into())),
    }
}

/// `--check` asks for [`Command::Check`] instead of running.
fn checked(flags: &ArgMatches, config: Config, run: impl FnOnce(Config) -> Command) -> Command {
    if flags.get_flag("check") {
        Command::Check(config)
    } else {
        run(config)
    }
}

/// Where a reload reads the settings: as at start, the same file and the
/// same flags (which keep winning over the file).
fn source(mode: Mode, flags: &ArgMatches) -> Source {
    let file = flags.get_one::<PathBuf>("config").cloned();
    let flags = flags.clone();
    Source {
        mode,
        file,
        load: Box::new(move || settings(mode, &flags)),
    }
}

/// Defaults, then the file, then the flags given; then the relations
/// between them. The proxy needs an upstream and speaks resp only.
fn settings(mode: Mode, flags: &ArgMatches) -> Result<Config, ConfigError> {
    let file = flags.get_one::<PathBuf>("config").map(PathBuf::as_path);
    let mut config = config::load(mode, file, flags)?;
    if mode == Mode::Proxy {
        if config.upstreams.is_empty() && config.cluster.is_none() {
            let message =
                "at least one is needed, such as --upstream 127.0.0.1:6379 (or --cluster)";
            return Err(ConfigError::new("--upstream", message));
        }
        if config.protocol != Protocol::Resp {
            let message = format!("the proxy speaks resp only, got {}", config.protocol.name());
            return Err(ConfigError::new("--protocol", message));
        }
    }
    config.validate()?;
    Ok(config)
}

const MISSING_COMMAND: &str = "missing command: try `holdfast serve`, `holdfast proxy`, `holdfast bench`, `holdfast chaos scan` or `holdfast --help`";

const RELOAD_ABOUT: &str = "Ask a running server to reload its settings (as SIGHUP does): POST \
     /reload to its admin endpoint, print the line it answers; exit 0 when applied, 1 when \
     refused or invalid (nothing was applied), 3 when the server could not be asked";

const MISSING_CHAOS: &str =
    "missing chaos command: try `holdfast chaos scan ADDR` or `holdfast chaos proxy`";

const CHAOS_ABOUT: &str = "Test another server for the classic mistakes of TCP services";

const SCAN_ABOUT: &str = "Run one bounded check per classic mistake (leaks, idle and slow \
     peers, bad input, buffers, split and partial I/O, fd exhaustion, shutdown) against ADDR; \
     exits 1 if a check fails";

const CHAOS_PROXY_ABOUT: &str = "A fault-injecting TCP proxy (latency, bandwidth, slicing, stalls, \
     resets, slow close, refusal) driven through Toxiproxy's HTTP API";

const CHAOS_PROXY_AFTER_HELP: &str = "\
Examples:
  holdfast chaos proxy --api 127.0.0.1:8474
  curl -s -XPOST 127.0.0.1:8474/proxies \\
    -d '{\"name\":\"redis\",\"listen\":\"127.0.0.1:26379\",\"upstream\":\"127.0.0.1:6379\"}'
  curl -s -XPOST 127.0.0.1:8474/proxies/redis/toxics \\
    -d '{\"type\":\"latency\",\"attributes\":{\"latency\":100,\"jitter\":10}}'

Any Toxiproxy client library works against --api.";

const ABOUT: &str =
    "holdfast — a TCP server engine that holds many connections and does not fall over";

const AFTER_HELP: &str = "\
Examples:
  holdfast serve --protocol line --listen 127.0.0.1:7000
  holdfast serve --config holdfast.toml --threads 4
  holdfast proxy --upstream 127.0.0.1:6379 --upstream 127.0.0.1:6380

Sizes take 512, 64KiB, 1MiB, 1GiB (K/M/G are the same; KB/MB/GB are powers of 1000).
Durations take 500ms, 10s, 2m, 1h (a bare number is seconds).
The --config file is TOML whose keys are the flag names without `--`
(max-conns = 100, buffer = \"64KiB\", idle-timeout = \"5s\"); flags given win over it.";

fn cli() -> clap::Command {
    clap::Command::new("holdfast")
        .version(env!("CARGO_PKG_VERSION"))
        .about(ABOUT)
        .after_help(AFTER_HELP)
        .propagate_version(true)
        .color(clap::ColorChoice::Never)
        .subcommand(
            settings_command(Mode::Serve)
                .about(SERVE_ABOUT)
                .after_help(AFTER_HELP),
        )
        .subcommand(
            settings_command(Mode::Proxy)
                .about(PROXY_ABOUT)
                .after_help(PROXY_AFTER_HELP),
        )
        .subcommand(
            BenchArgs::augment_args(clap::Command::new("bench"))
                .about(BENCH_ABOUT)
                .after_help(BENCH_AFTER_HELP),
        )
        .subcommand(
            clap::Command::new("reload").about(RELOAD_ABOUT).arg(
                Arg::new("admin")
                    .long("admin")
                    .value_name("ADDR")
                    .default_value("127.0.0.1:7001")
                    .value_parser(clap::value_parser!(SocketAddr))
                    .help("The server's admin endpoint (its --admin)"),
            ),
        )
        .subcommand(
            clap::Command::new("chaos")
                .about(CHAOS_ABOUT)
                .subcommand(ScanOptions::augment_args(clap::Command::new("scan")).about(SCAN_ABOUT))
                .subcommand(
                    config::ChaosProxySettings::augment_args(clap::Command::new("proxy"))
                        .about(CHAOS_PROXY_ABOUT)
                        .after_help(CHAOS_PROXY_AFTER_HELP),
                ),
        )
}

/// `serve` or `proxy`: the settings the mode takes, `--config` and `--check`.
fn settings_command(mode: Mode) -> clap::Command {
    let name = match mode {
        Mode::Serve => "serve",
        Mode::Proxy => "proxy",
    };
    let file = Arg::new("config")
        .long("config")
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help("TOML file with the same keys as these flags; flags win");
    let check = Arg::new("check")
        .long("check")
        .action(ArgAction::SetTrue)
        .help(
            "Validate the settings and probe the backend, print one line, exit \
         (0 ok, 1 backend refused, 2 bad flag)",
        );
    clap::Command::new(name)
        .args(config::args(mode))
        .arg(file)
        .arg(check)
}

const SERVE_ABOUT: &str = "Run the server: accept connections, decode frames, answer them";

const PROXY_ABOUT: &str = "Run a RESP proxy in front of Redis servers: keys spread over the \
     upstreams by consistent hashing, with pooled connections, timeouts and circuit breakers";

const BENCH_ABOUT: &str = "Load generator: keep requests in flight on many connections, check \
     every echoed byte, report requests/s and latency percentiles";

const BENCH_AFTER_HELP: &str = "\
Examples:
  holdfast bench --conns 1000 --pipeline 16 --size 64 --duration 10s
  holdfast bench --target 127.0.0.1:7000 --protocol frame --json
  holdfast bench --idle --conns 10000 --duration 5s   # hold idle connections
  holdfast bench --pubsub --target 127.0.0.1:6379 --subscribers 1000 --channels 10 \
      --publishers 2 --pipeline 8       # Redis Pub/Sub, flat out
  holdfast bench --pubsub --subscribers 100 --rate 10000   # 10000 msg/s in all

With --pubsub, subscribers SUBSCRIBE (one channel each, spread over
--channels) and must be confirmed before publishers start; every message is
checked (channel, payload, order per publisher, duplicates, missing) and its
publish-to-delivery latency recorded. The exit status is 1 when any check
failed, and when the server refuses SUBSCRIBE.

Every connection is established before the warm-up starts; the warm-up and
--duration are counted from there. Against a loopback target connections are
spread over source addresses 127.0.0.1 to 127.0.0.250, the port picked at
connect time, so the ephemeral port range is never the limit.";

const PROXY_AFTER_HELP: &str = "\
Examples:
  holdfast proxy --listen 127.0.0.1:7000 --upstream 127.0.0.1:6379 --upstream 127.0.0.1:6380
  holdfast proxy --config proxy.toml      # with upstreams = [\"10.0.0.1:6379\", \"10.0.0.2:6379\"]

Keys go to upstreams by ketama consistent hashing over the names as written,
placed as nutcracker places them (distribution ketama, hash murmur by
default or fnv1a_64 to take over a nutcracker's keys, hash tags {...}). MGET, MSET, DEL, EXISTS, UNLINK and TOUCH are split
per upstream and merged; commands that cannot be proxied get an error reply.
A request not answered within --upstream-timeout, or refused by an open
breaker or a full queue, gets `-ERR upstream ...` at once.

Sizes take 512, 64KiB, 1MiB; durations take 500ms, 10s, 2m, 1h.
The --config file is TOML whose keys are the flag names without `--`;
flags given win over it.";

/// The flags of `holdfast bench`.
#[derive(Args)]
struct BenchArgs {
    #[arg(
        long,
        value_name = "ADDR",
        help = "The server to load [default: 127.0.0.1:7000]"
    )]
    target: Option<SocketAddr>,
    #[arg(long, value_name = "N", help = "Connections [default: 100]")]
    conns: Option<usize>,
    #[arg(
        long,
        value_name = "P",
        help = "Requests in flight per connection [default: 1]"
    )]
    pipeline: Option<usize>,
    #[arg(
        long,
        value_name = "SIZE",
        value_parser = parse_size,
        help = "Payload bytes per request [default: 64]"
    )]
    size: Option<usize>,
    #[arg(
        long,
        value_name = "NAME",
        value_parser = BenchProtocol::from_name,
        help = "echo | frame (resp-ping: not yet) [default: echo]"
    )]
    protocol: Option<BenchProtocol>,
    #[arg(
        long,
        value_name = "DUR",
        value_parser = parse_duration,
        help = "How long to measure (with --idle: to hold) [default: 10s]"
    )]
    duration: Option<Duration>,
    #[arg(
        long,
        value_name = "DUR",
        value_parser = parse_duration,
        help = "Load before measuring, not counted [default: 1s]"
    )]
    warmup: Option<Duration>,
    #[arg(long, value_name = "N", help = "Load-generator threads [default: 1]")]
    threads: Option<usize>,
    #[arg(long, help = "Print the summary as one JSON line")]
    json: bool,
    #[arg(long, help = "Connect, then hold the connections idle for --duration")]
    idle: bool,
    #[arg(
        long,
        value_name = "PID",
        help = "Report this local server's CPU time over the measured window, per request"
    )]
    server_pid: Option<u32>,
    #[arg(
        long,
        help = "Redis Pub/Sub load: subscribers, publishers, every message checked"
    )]
    pubsub: bool,
    #[arg(
        long,
        value_name = "N",
        help = "With --pubsub: subscribed connections [default: 100]"
    )]
    subscribers: Option<usize>,
    #[arg(
        long,
        value_name = "N",
        help = "With --pubsub: publishing connections [default: 1]"
    )]
    publishers: Option<usize>,
    #[arg(
        long,
        value_name = "N",
        help = "With --pubsub: channels the subscribers are spread over [default: 1]"
    )]
    channels: Option<usize>,
    #[arg(
        long,
        value_name = "MSG/S",
        help = "With --pubsub: messages per second over all publishers; 0 is flat out \
                (--pipeline messages in flight per publisher) [default: 0]"
    )]
    rate: Option<u64>,
    #[arg(
        long,
        help = "With --pubsub: PSUBSCRIBE to a pattern matching the channel, not SUBSCRIBE"
    )]
    psubscribe: bool,
}

impl BenchArgs {
    fn options(&self) -> Result<BenchOptions, String> {
        let defaults = BenchOptions::default();
        let options = BenchOptions {
            target: self.target.unwrap_or(defaults.target),
            conns: self.conns.unwrap_or(defaults.conns),
            pipeline: self.pipeline.unwrap_or(defaults.pipeline),
            size: self.size.unwrap_or(defaults.size),
            protocol: self.protocol.unwrap_or(defaults.protocol),
            duration: self.duration.unwrap_or(defaults.duration),
            warmup: self.warmup.unwrap_or(defaults.warmup),
            threads: self.threads.unwrap_or(defaults.threads),
            json: self.json,
            idle: self.idle,
            server_pid: self.server_pid,
            pubsub: self.pubsub()?,
        };
        options.validate()?;
        Ok(options)
    }

    /// The `--pubsub` settings; the flags of one mode are refused in the
    /// other.
    fn pubsub(&self) -> Result<Option<PubSubOptions>, String> {
        let only_pubsub = [
            ("--subscribers", self.subscribers.is_some()),
            ("--publishers", self.publishers.is_some()),
            ("--channels", self.channels.is_some()),
            ("--rate", self.rate.is_some()),
            ("--psubscribe", self.psubscribe),
        ];
        if !self.pubsub {
            return match only_pubsub.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(format!("{flag}: only with --pubsub")),
                None => Ok(None),
            };
        }
        if self.conns.is_some() {
            return Err("--conns: not with --pubsub (use --subscribers and --publishers)".into());
        }
        if self.protocol.is_some() {
            return Err("--protocol: not with --pubsub (it speaks RESP)".into());
        }
        if self.rate.is_some_and(|rate| rate > 0) && self.pipeline.is_some() {
            return Err(
                "--pipeline: not with --rate (publishers send on schedule; --pipeline is the \
                 flat-out window)"
                    .into(),
            );
        }
        let defaults = PubSubOptions::default();
        Ok(Some(PubSubOptions {
            subscribers: self.subscribers.unwrap_or(defaults.subscribers),
            publishers: self.publishers.unwrap_or(defaults.publishers),
            channels: self.channels.unwrap_or(defaults.channels),
            rate: self.rate.unwrap_or(defaults.rate),
            pattern: self.psubscribe,
        }))
    }
}

/// Clap's errors as one line. A setting's parser's complaint about a value
/// reads as the settings' own errors do: `--buffer: must be ...`.
fn clap_error(error: &clap::Error, command: &str) -> (i32, String) {
    if !error.use_stderr() {
        // Help and version: the full text, for stdout.
        return (0, error.render().to_string());
    }
    let settings = command != "holdfast bench";
    match config::flag_error(error).filter(|_| settings) {
        Some(error) => (2, error.to_string()),
        None => (2, one_line(error, command)),
    }
}

/// Clap draws errors over several lines (message, tip, usage, "for more
/// information"); the contract is one line. Keep the message and any tip,
/// and point at the help of `command`, the one that failed.
fn one_line(error: &clap::Error, command: &str) -> String {
    let text = error.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or("invalid command line");
    let mut parts = vec![first.strip_prefix("error: ").unwrap_or(first)];
    parts.extend(lines.filter(|line| line.starts_with("tip:")));
    format!("{}; see `{command} --help`", parts.join("; "))
}

/// `holdfast serve` when the arguments name that subcommand. The top level
/// has no options taking a value, so its first plain word is the command.
fn command_named(args: &[std::ffi::OsString]) -> &'static str {
    let word = args
        .iter()
        .skip(1)
        .find(|arg| !arg.to_string_lossy().starts_with('-'));
    match word {
        Some(word) if word == "serve" => "holdfast serve",
        Some(word) if word == "proxy" => "holdfast proxy",
        Some(word) if word == "bench" => "holdfast bench",
        _ => "holdfast",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp file with a unique name, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(text: &str) -> TempFile {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let unique = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("holdfast-cli-{}-{unique}.toml", std::process::id());
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn serve(flags: &[&str]) -> Result<Config, (i32, String)> {
        let args = ["holdfast", "serve"].iter().chain(flags);
        parse(args.copied()).map(|command| match command {
            Command::Serve(config, _) => config,
            Command::Check(_) => panic!("parsed as check"),
            Command::Bench(_)
            | Command::Proxy(..)
            | Command::ChaosScan(_)
            | Command::ChaosProxy(_)
            | Command::Reload(_) => {
                panic!("parsed as bench, proxy, reload or chaos")
            }
        })
    }

    fn error_of(args: &[&str]) -> (i32, String) {
        match parse(args.iter().copied()) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(error) => error,
        }
    }

    fn help_of(args: &[&str]) -> String {
        let (code, text) = error_of(args);
        assert_eq!(code, 0, "{args:?}: {text}");
        text
    }

    #[test]
    fn serve_without_flags_is_the_default() {
        let config = serve(&[]).unwrap();
        let mut expected = Config::default();
        expected.validate().unwrap();
        assert_eq!(format!("{config:?}"), format!("{expected:?}"));
    }

    #[test]
    fn flags_are_applied() {
        let config = serve(&[
            "--protocol",
            "line",
            "--listen",
            "127.0.0.1:7100",
            "--admin",
            "off",
            "--buffer",
            "16KiB",
            "--idle-timeout",
            "5s",
            "--accept-batch",
            "8",
        ])
        .unwrap();
        assert_eq!(config.protocol, crate::engine::codec::Protocol::Line);
        assert_eq!(config.listen, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(config.admin, None);
        assert_eq!(config.buffer, 16 * 1024);
        assert_eq!(config.max_frame, 16 * 1024 - 1);
        assert_eq!(config.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(config.accept_batch, 8);
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file = TempFile::new("threads = 2\nbuffer = 65536\nidle-timeout = \"5s\"\n");
        let config = serve(&["--config", file.path(), "--threads", "3"]).unwrap();
        assert_eq!(config.threads, 3);
        assert_eq!(config.buffer, 65536);
        assert_eq!(config.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(config.read_timeout, Config::default().read_timeout);
        // The flag wins wherever it stands relative to --config.
        let config = serve(&["--threads", "4", "--config", file.path()]).unwrap();
        assert_eq!(config.threads, 4);
    }

    #[test]
    fn file_errors_are_one_line_naming_config() {
        let file = TempFile::new("max_conn = 100\n");
        let (code, text) = serve(&["--config", file.path()]).unwrap_err();
        assert_eq!(code, 2);
        assert!(text.starts_with("--config: "), "{text}");
        assert!(text.contains("unknown key `max_conn`"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let (code, text) = serve(&["--config", "/nonexistent/holdfast.toml"]).unwrap_err();
        assert_eq!(code, 2);
        assert_eq!(
            text,
            "--config: cannot read /nonexistent/holdfast.toml: \
             No such file or directory (os error 2)"
        );
    }

    #[test]
    fn bad_values_are_one_line_naming_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--buffer", "64x"],
                "--buffer: expected a size such as 512, 64KiB or 1MiB, got `64x`",
            ),
            (
                &["--backend", "kqueue"],
                "--backend: expected epoll (or uring in a `--features uring` build), got `kqueue`",
            ),
            (
                &["--uring-buffers", "100"],
                "--uring-buffers: must be a power of two, got 100 (try 128)",
            ),
            (
                &["--protocol", "frame", "--max-frame", "70000"],
                "--max-frame: 70000 does not fit in --buffer 65536 with the 4-byte frame \
                 header (at most 65532); raise --buffer or lower --max-frame",
            ),
        ];
        for (flags, expected) in cases {
            assert_eq!(serve(flags).unwrap_err(), (2, expected.to_string()));
        }
        let flags_at_fault: &[(&[&str], &str)] = &[
            (&["--listen", "nowhere"], "--listen: "),
            (&["--admin", "127.0.0.1:7000"], "--admin: "),
            (&["--threads", "2000"], "--threads: "),
            (&["--read-timeout", "1ms"], "--read-timeout: "),
            (&["--log-level", "loud"], "--log-level: "),
            (&["--backlog", "0"], "--backlog: "),
            (&["--events-max", "0"], "--events-max: "),
            (&["--read-budget", "0"], "--read-budget: "),
            (&["--pool-free-max", "x"], "--pool-free-max: "),
        ];
        for (flags, prefix) in flags_at_fault {
            let (code, text) = serve(flags).unwrap_err();
            assert_eq!(code, 2, "{flags:?}");
            assert!(text.starts_with(prefix), "{flags:?}: {text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn clap_errors_are_one_line_with_code_2() {
        let cases: &[&[&str]] = &[
            &["holdfast", "--bogus"],
            &["holdfast", "bench", "--conns"],
            &["holdfast", "serve", "--bufer", "1"],
            &["holdfast", "serve", "--buffer"],
            &["holdfast", "serve", "--buffer", "64", "--buffer", "128"],
            &["holdfast", "serve", "stray"],
            &["holdfast", "help", "nothing"],
        ];
        for args in cases {
            let (code, text) = error_of(args);
            assert_eq!(code, 2, "{args:?}");
            assert!(!text.contains('\n'), "{args:?}: {text}");
            assert!(!text.starts_with("error:"), "{text}");
            assert!(text.ends_with("--help`"), "{text}");
        }
        let (_, text) = error_of(&["holdfast", "serve", "--bufer", "1"]);
        assert_eq!(
            text,
            "unexpected argument '--bufer' found; \
             tip: a similar argument exists: '--buffer'; see `holdfast serve --help`"
        );
    }

    fn bench(flags: &[&str]) -> Result<BenchOptions, (i32, String)> {
        let args = ["holdfast", "bench"].iter().chain(flags);
        parse(args.copied()).map(|command| match command {
            Command::Bench(options) => options,
            Command::Serve(..)
            | Command::Check(_)
            | Command::Proxy(..)
            | Command::ChaosScan(_)
            | Command::ChaosProxy(_)
            | Command::Reload(_) => {
                panic!("parsed as serve")
            }
        })
    }

    #[test]
    fn bench_flags_are_applied_over_defaults() {
        let options = bench(&[]).unwrap();
        assert_eq!(options.target, BenchOptions::default().target);
        let options = bench(&[
            "--target",
            "127.0.0.1:7100",
            "--conns",
            "10",
            "--pipeline",
            "16",
            "--size",
            "4KiB",
            "--protocol",
            "frame",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--threads",
            "2",
            "--json",
        ])
        .unwrap();
        assert_eq!(options.target, "127.0.0.1:7100".parse().unwrap());
        assert_eq!(options.conns, 10);
        assert_eq!(options.pipeline, 16);
        assert_eq!(options.size, 4096);
        assert_eq!(options.protocol, BenchProtocol::Frame);
        assert_eq!(options.duration, std::time::Duration::from_secs(2));
        assert_eq!(options.warmup, std::time::Duration::from_millis(500));
        assert_eq!(options.threads, 2);
        assert!(options.json && !options.idle);
    }

    #[test]
    fn bench_errors_are_one_line_naming_the_flag() {
        let (code, text) = bench(&["--protocol", "resp-ping"]).unwrap_err();
        assert_eq!(code, 2);
        assert!(text.contains("resp-ping is not implemented yet"), "{text}");
        assert!(text.ends_with("see `holdfast bench --help`"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let (code, text) = bench(&["--conns", "0"]).unwrap_err();
        assert_eq!((code, text.starts_with("--conns: ")), (2, true), "{text}");
        let (code, text) = bench(&["--size", "64x"]).unwrap_err();
        assert_eq!(code, 2);
        assert!(text.contains("--size"), "{text}");
    }

    #[test]
    fn bench_pubsub_flags_make_a_pubsub_run() {
        assert_eq!(bench(&[]).unwrap().pubsub, None);
        let options = bench(&[
            "--pubsub",
            "--subscribers",
            "1000",
            "--publishers",
            "4",
            "--channels",
            "10",
            "--pipeline",
            "8",
            "--psubscribe",
        ])
        .unwrap();
        let expected = PubSubOptions {
            subscribers: 1000,
            publishers: 4,
            channels: 10,
            rate: 0,
            pattern: true,
        };
        assert_eq!(options.pubsub, Some(expected));
        assert_eq!(options.pipeline, 8);
        let options = bench(&["--pubsub", "--rate", "5000"]).unwrap();
        assert_eq!(options.pubsub.unwrap().rate, 5000);
        assert_eq!(
            bench(&["--pubsub"]).unwrap().pubsub,
            Some(PubSubOptions::default())
        );
    }

    #[test]
    fn bench_pubsub_errors_are_one_line_naming_the_flag() {
        let cases: [(&[&str], &str); 10] = [
            (
                &["--subscribers", "10"],
                "--subscribers: only with --pubsub",
            ),
            (&["--psubscribe"], "--psubscribe: only with --pubsub"),
            (&["--pubsub", "--conns", "10"], "--conns: not with --pubsub"),
            (
                &["--pubsub", "--protocol", "frame"],
                "--protocol: not with --pubsub",
            ),
            (
                &["--pubsub", "--rate", "10", "--pipeline", "4"],
                "--pipeline: not with --rate",
            ),
            (
                &["--pubsub", "--subscribers", "0"],
                "--subscribers: 0 is out of range",
            ),
            (
                &["--pubsub", "--publishers", "257"],
                "--publishers: 257 is out of range",
            ),
            (
                &["--pubsub", "--subscribers", "5", "--channels", "6"],
                "--channels: 6 channels for 5",
            ),
            (
                &["--pubsub", "--size", "16"],
                "--size: 16 is out of range (24 to 65536)",
            ),
            (
                &["--pubsub", "--rate", "200000000"],
                "--rate: 200000000 is out of range",
            ),
        ];
        for (flags, start) in cases {
            let (code, text) = bench(flags).unwrap_err();
            assert_eq!(code, 2, "{flags:?}");
            assert!(text.starts_with(start), "{flags:?}: {text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn no_command_says_what_to_type() {
        for args in [&["holdfast"][..], &[]] {
            let error = error_of(args);
            let expected = "missing command: try `holdfast serve`, `holdfast proxy`, `holdfast bench`, `holdfast chaos scan` or `holdfast --help`";
            assert_eq!(error, (2, expected.to_string()));
        }
    }

    #[test]
    fn help_and_version_exit_0_with_full_text() {
        let top = help_of(&["holdfast", "--help"]);
        assert!(top.starts_with("holdfast — a TCP server engine"), "{top}");
        assert!(top.contains("serve"), "{top}");
        assert!(top.contains("holdfast serve --protocol line --listen 127.0.0.1:7000"));
        assert_eq!(help_of(&["holdfast", "-h"]), help_of(&["holdfast", "help"]));
        let serve = help_of(&["holdfast", "serve", "--help"]);
        assert_eq!(serve, help_of(&["holdfast", "help", "serve"]));
        assert_eq!(serve, help_of(&["holdfast", "serve", "-h"]));
        assert!(serve.contains("Limits:"), "{serve}");
        assert!(serve.contains("[default: 64KiB]"), "{serve}");
        let version = help_of(&["holdfast", "--version"]);
        assert_eq!(
            version.trim(),
            format!("holdfast {}", env!("CARGO_PKG_VERSION"))
        );
    }

    fn proxy(flags: &[&str]) -> Result<Config, (i32, String)> {
        let args = ["holdfast", "proxy"].iter().chain(flags);
        parse(args.copied()).map(|command| match command {
            Command::Proxy(config, _) => config,
            _ => panic!("not parsed as proxy"),
        })
    }

    #[test]
    fn proxy_takes_upstreams_from_flags_or_the_file() {
        let config = proxy(&[
            "--upstream",
            "127.0.0.1:6379",
            "--upstream",
            "127.0.0.1:6380",
        ])
        .unwrap();
        assert_eq!(config.protocol, Protocol::Resp);
        assert_eq!(config.upstreams, ["127.0.0.1:6379", "127.0.0.1:6380"]);
        assert_eq!(
            config.upstream_addrs,
            [
                "127.0.0.1:6379".parse().unwrap(),
                "127.0.0.1:6380".parse().unwrap()
            ]
        );
        let file = TempFile::new(
            "upstreams = [\"127.0.0.1:7379\", \"127.0.0.1:7380\"]\nupstream-timeout = \"250ms\"\n",
        );
        let config = proxy(&["--config", file.path()]).unwrap();
        assert_eq!(config.upstreams, ["127.0.0.1:7379", "127.0.0.1:7380"]);
        assert_eq!(
            config.upstream_timeout,
            std::time::Duration::from_millis(250)
        );
        // Flags replace the file's list.
        let config = proxy(&["--config", file.path(), "--upstream", "127.0.0.1:1"]).unwrap();
        assert_eq!(config.upstreams, ["127.0.0.1:1"]);
        // The key-value store's settings are not the proxy's.
        let file = TempFile::new("upstreams = [\"127.0.0.1:1\"]\nmax-memory = 5\n");
        let (code, text) = proxy(&["--config", file.path()]).unwrap_err();
        assert_eq!(code, 2);
        assert!(text.contains("unknown key `max-memory`"), "{text}");
        // And serve does not take the proxy's.
        let file = TempFile::new("upstreams = [\"127.0.0.1:1\"]\n");
        let (_, text) = serve(&["--config", file.path()]).unwrap_err();
        assert!(text.contains("unknown key `upstreams`"), "{text}");
    }

    #[test]
    fn proxy_errors_are_one_line_naming_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "--upstream: at least one is needed"),
            (&["--upstream", "nowhere"], "--upstream: expected host:port"),
            (
                &["--upstream", "127.0.0.1:1", "--upstream", "127.0.0.1:1"],
                "--upstream: `127.0.0.1:1` is given twice",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--protocol", "line"],
                "--protocol: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--max-pending", "0"],
                "--max-pending: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--upstream-conns", "65"],
                "--upstream-conns: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--upstream-pipeline", "0"],
                "--upstream-pipeline: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--upstream-queue", "0"],
                "--upstream-queue: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--connect-timeout", "1ms"],
                "--connect-timeout: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--upstream-timeout", "x"],
                "--upstream-timeout: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--upstream-timeout", "2m"],
                "--upstream-timeout: 2m must be shorter than --idle-timeout 1m",
            ),
            (
                &[
                    "--upstream",
                    "127.0.0.1:1",
                    "--upstream-idle-timeout",
                    "25h",
                ],
                "--upstream-idle-timeout: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--breaker-window", "1ms"],
                "--breaker-window: ",
            ),
            (
                &[
                    "--upstream",
                    "127.0.0.1:1",
                    "--breaker-failure-ratio",
                    "1.5",
                ],
                "--breaker-failure-ratio: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--breaker-min-requests", "0"],
                "--breaker-min-requests: ",
            ),
            (
                &[
                    "--upstream",
                    "127.0.0.1:1",
                    "--breaker-connect-failures",
                    "0",
                ],
                "--breaker-connect-failures: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--breaker-cool-down", "1ms"],
                "--breaker-cool-down: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--breaker-probes", "0"],
                "--breaker-probes: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--reconnect-base", "0"],
                "--reconnect-base: ",
            ),
            (
                &[
                    "--upstream",
                    "127.0.0.1:1",
                    "--reconnect-base",
                    "1s",
                    "--reconnect-max",
                    "10ms",
                ],
                "--reconnect-max: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--reconnect-jitter", "some"],
                "--reconnect-jitter: ",
            ),
            (
                &["--upstream", "127.0.0.1:1", "--key-hash", "md5"],
                "--key-hash: ",
            ),
        ];
        for (flags, prefix) in cases {
            let (code, text) = proxy(flags).unwrap_err();
            assert_eq!(code, 2, "{flags:?}");
            assert!(text.starts_with(prefix), "{flags:?}: {text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }
}
