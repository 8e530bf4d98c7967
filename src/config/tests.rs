//! The settings as a user gives them: flags and files, through the
//! declarations.

use std::path::Path;
use std::time::Duration;

use super::*;

const KIB: usize = 1024;

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

/// The settings of `mode` from `file` and `flags`, validated.
fn settings(mode: Mode, file: Option<&Path>, flags: &[String]) -> Result<Config, ConfigError> {
    let command = clap::Command::new("holdfast").no_binary_name(true);
    let matches = command
        .args(args(mode))
        .try_get_matches_from(flags)
        .map_err(|error| flag_error(&error).unwrap_or_else(|| panic!("{error}")))?;
    let mut config = load(mode, file, &matches)?;
    config.validate()?;
    Ok(config)
}

/// `key = value` pairs as flags (`pin-cores = true` is `--pin-cores`).
fn flags(settings: &[(&str, &str)]) -> Vec<String> {
    let flag = |&(key, value): &(&str, &str)| match value {
        "true" => format!("--{key}"),
        _ => format!("--{key}={value}"),
    };
    settings.iter().map(flag).collect()
}

/// The first error `holdfast serve --key value` meets.
fn invalid(key: &str, value: &str) -> ConfigError {
    settings(Mode::Serve, None, &flags(&[(key, value)])).unwrap_err()
}

fn valid(pairs: &[(&str, &str)]) -> Config {
    settings(Mode::Serve, None, &flags(pairs)).unwrap()
}

/// The first error of `holdfast serve` with all of `pairs`.
fn invalid_all(pairs: &[(&str, &str)]) -> ConfigError {
    settings(Mode::Serve, None, &flags(pairs)).unwrap_err()
}

fn file_error_of(text: &str) -> ConfigError {
    let file = TempFile::new(text);
    settings(Mode::Serve, Some(&file.0), &[]).unwrap_err()
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
    for value in ["32", "0", "128MiB"] {
        let error = invalid("buffer", value);
        assert_eq!(error.flag, "--buffer", "{value}");
        assert!(
            error.message.starts_with("must be between 64 and 64MiB"),
            "{error}"
        );
    }
    for (value, next) in [("1000", "1KiB"), ("64KB", "64KiB")] {
        let error = invalid("buffer", value);
        let expected = format!("must be a power of two, got {value} (try {next})");
        assert_eq!(error.message, expected.replace("64KB", "64000"));
    }
    // A `Config` built in code is held to it too.
    let mut config = Config {
        buffer: 1000,
        ..Config::default()
    };
    assert_eq!(config.validate().unwrap_err().flag, "--buffer");
    valid(&[("buffer", "64")]);
    valid(&[("buffer", "64MiB")]);
}

#[test]
fn max_frame_must_fit_in_buffer_with_its_header() {
    assert_eq!(
        invalid_all(&[("protocol", "frame"), ("max-frame", "70000")]).to_string(),
        "--max-frame: 70000 does not fit in --buffer 65536 with the 4-byte frame header \
             (at most 65532); raise --buffer or lower --max-frame"
    );
    valid(&[("protocol", "frame"), ("max-frame", "65532")]);
    valid(&[("protocol", "echo"), ("max-frame", "64KiB")]);
    let error = invalid("max-frame", "65537");
    assert_eq!(error.flag, "--max-frame");
    let mut line = valid(&[("protocol", "line")]);
    line.max_frame = 64 * KIB;
    let error = line.validate().unwrap_err();
    assert!(error.message.contains("1-byte newline"), "{error}");
}

#[test]
fn resp_max_frame_must_hold_a_client_command() {
    let error = invalid_all(&[("protocol", "resp"), ("max-frame", "16")]);
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
    let proxy = |cool_down: &str| {
        let pairs = [
            ("upstream", "127.0.0.1:1"),
            ("upstream-timeout", "2s"),
            ("breaker-cool-down", cool_down),
        ];
        settings(Mode::Proxy, None, &flags(&pairs))
    };
    let error = proxy("1s").unwrap_err();
    assert_eq!(error.flag, "--breaker-cool-down");
    assert!(
        error
            .message
            .starts_with("1s must be at least --upstream-timeout 2s"),
        "{error}"
    );
    proxy("2s").unwrap();
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
    let error = invalid("backlog", "70000");
    assert_eq!(
        error.to_string(),
        "--backlog: must be between 1 and 65535, got 70000"
    );
    for value in ["0", "5000000000"] {
        let error = invalid("backlog", value);
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
        let error = invalid_all(&[("listen", listen), ("admin", admin)]);
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
        let error = invalid(key, value);
        assert_eq!(error.flag, format!("--{key}"), "{value}");
        assert!(error.message.contains(&format!("`{value}`")), "{error}");
    }
    if cfg!(feature = "uring") {
        let config = valid(&[("backend", "uring")]);
        assert_eq!(config.backend, Some(Backend::Uring));
    } else {
        let error = invalid("backend", "uring");
        assert_eq!(
            error.to_string(),
            "--backend: uring needs a build with `--features uring`"
        );
    }
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
    let config = settings(Mode::Serve, Some(&file.0), &[]).unwrap();
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
        error
            .message
            .ends_with(" line 3: buffer: expected a size such as 512, 64KiB or 1MiB, got `64x`"),
        "{error}"
    );
    let error = file_error_of("threads = [2]\n");
    assert!(
        error
            .message
            .ends_with("threads: expected a string, a number or a boolean, got a array")
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
    let error = settings(Mode::Serve, Some(&path), &[]).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "--config: cannot read {}: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn each_command_takes_its_settings() {
    let longs = |mode| -> Vec<String> {
        let args = args(mode);
        args.iter()
            .filter_map(|arg| arg.get_long().map(String::from))
            .collect()
    };
    let (serve, proxy) = (longs(Mode::Serve), longs(Mode::Proxy));
    let store = ["max-memory", "enable-debug-commands"];
    for key in &serve {
        assert_eq!(
            proxy.contains(key),
            !store.contains(&key.as_str()),
            "--{key}"
        );
    }
    for key in [
        "upstream",
        "max-pending",
        "breaker-window",
        "reconnect-max",
        "key-hash",
    ] {
        assert!(proxy.iter().any(|k| k == key) && !serve.iter().any(|k| k == key));
    }
    // And so does the file.
    let file = TempFile::new("upstreams = [\"127.0.0.1:1\"]\n");
    let error = settings(Mode::Serve, Some(&file.0), &[]).unwrap_err();
    assert!(error.message.contains("unknown key `upstreams`"), "{error}");
    let file = TempFile::new("upstreams = [\"127.0.0.1:1\"]\nmax-memory = 5\n");
    let error = settings(Mode::Proxy, Some(&file.0), &[]).unwrap_err();
    assert!(
        error.message.contains("unknown key `max-memory`"),
        "{error}"
    );
}

/// A file naming every setting with its default text is the default: each
/// flag is a file key, read by the same parser.
#[test]
fn every_flag_is_a_file_key_with_the_same_default() {
    for mode in [Mode::Serve, Mode::Proxy] {
        let mut text = String::new();
        if mode == Mode::Proxy {
            text += "upstreams = [\"127.0.0.1:1\"]\n";
        }
        for arg in args(mode) {
            let (Some(key), Some(default)) = (arg.get_long(), arg.get_default_values().first())
            else {
                continue;
            };
            text += &format!("{key} = \"{}\"\n", default.to_string_lossy());
        }
        let file = TempFile::new(&text);
        let upstream = [("upstream", "127.0.0.1:1")];
        let flags = flags(if mode == Mode::Proxy { &upstream } else { &[] });
        let from_file = settings(mode, Some(&file.0), &[]).unwrap();
        let from_defaults = settings(mode, None, &flags).unwrap();
        assert_eq!(
            format!("{from_file:?}"),
            format!("{from_defaults:?}"),
            "{mode:?}"
        );
    }
}

#[test]
fn breaker_and_backoff_bounds_name_their_flag() {
    let cases = [
        ("breaker-window", "99ms"),
        ("breaker-failure-ratio", "0"),
        ("breaker-failure-ratio", "1.5"),
        ("breaker-failure-ratio", "NaN"),
        ("breaker-min-requests", "0"),
        ("breaker-connect-failures", "0"),
        ("breaker-cool-down", "9ms"),
        ("breaker-probes", "0"),
        ("breaker-probes", "1001"),
        ("reconnect-base", "0"),
        ("reconnect-base", "61m"),
        ("reconnect-max", "61m"),
    ];
    for (key, value) in cases {
        let flags = flags(&[("upstream", "127.0.0.1:1"), (key, value)]);
        let error = settings(Mode::Proxy, None, &flags).unwrap_err();
        assert_eq!(error.flag, format!("--{key}"), "{value}: {error}");
    }
    let flags = flags(&[
        ("upstream", "127.0.0.1:1"),
        ("reconnect-base", "1s"),
        ("reconnect-max", "999ms"),
    ]);
    let error = settings(Mode::Proxy, None, &flags).unwrap_err();
    assert_eq!(
        error.to_string(),
        "--reconnect-max: must be at least --reconnect-base 1s, got 999ms"
    );
    let config = valid(&[]);
    assert_eq!(config.breaker, BreakerSettings::default());
    assert_eq!(config.backoff, BackoffSettings::default());
}

/// The rows of the README's limits table, as cells.
fn limits_table(readme: &str) -> Vec<Vec<String>> {
    let section = readme
        .split("\n## Limits\n")
        .nth(1)
        .expect("a Limits section");
    let section = section.split("\n## ").next().unwrap();
    let rows = section.lines().filter(|line| line.starts_with('|')).skip(2);
    let cells = |line: &str| {
        line.trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect()
    };
    rows.map(cells).collect()
}

/// The README's limits table says what the declarations say: every bounded
/// setting has a row with its declared default and range, and every row
/// that names a flag names a setting.
#[test]
fn readme_limits_table_matches_the_declarations() {
    let readme = include_str!("../../README.md");
    let mut declared = args(Mode::Serve);
    let serve: Vec<_> = declared
        .iter()
        .map(|arg| arg.get_long().map(String::from))
        .collect();
    let proxy_only = args(Mode::Proxy).into_iter();
    declared.extend(proxy_only.filter(|arg| !serve.contains(&arg.get_long().map(String::from))));
    let mut seen = Vec::new();
    for row in limits_table(readme) {
        assert_eq!(row.len(), 4, "{row:?}");
        let Some(name) = row[0]
            .strip_prefix("`--")
            .and_then(|rest| rest.split('`').next())
        else {
            continue;
        };
        let arg = declared.iter().find(|arg| arg.get_long() == Some(name));
        let arg = arg.unwrap_or_else(|| panic!("README limits row `--{name}` is no setting"));
        if let Some(default) = arg.get_default_values().first() {
            let default = default.to_string_lossy();
            let rest = row[1].strip_prefix(default.as_ref());
            let ok = rest.is_some_and(|rest| rest.is_empty() || rest.starts_with(' '));
            assert!(
                ok,
                "--{name}: README default `{}`, declared {default}",
                row[1]
            );
        }
        if let Some(range) = range_of(arg) {
            assert_eq!(row[2], range, "--{name}: README range");
        }
        seen.push(name.to_string());
    }
    for arg in declared.iter().filter(|arg| range_of(arg).is_some()) {
        let name = arg.get_long().unwrap();
        assert!(
            seen.iter().any(|seen| seen == name),
            "--{name} has no README limits row"
        );
    }
}

/// The `chaos proxy` rows of the limits table say what
/// `ChaosProxySettings` declares, and every bounded setting of it has one.
#[test]
fn readme_limits_table_matches_the_chaos_proxy_declarations() {
    use clap::Args;
    let readme = include_str!("../../README.md");
    let command = ChaosProxySettings::augment_args(clap::Command::new("proxy"));
    let declared: Vec<_> = command.get_arguments().cloned().collect();
    let mut seen = Vec::new();
    for row in limits_table(readme) {
        let Some(name) = row[0]
            .strip_prefix("`chaos proxy --")
            .and_then(|rest| rest.split('`').next())
        else {
            continue;
        };
        let arg = declared.iter().find(|arg| arg.get_long() == Some(name));
        let arg = arg.unwrap_or_else(|| panic!("README row `chaos proxy --{name}` is no setting"));
        let default = arg.get_default_values()[0].to_string_lossy().to_string();
        assert!(
            row[1].starts_with(&default),
            "--{name}: README default `{}`",
            row[1]
        );
        assert_eq!(
            Some(row[2].clone()),
            range_of(arg),
            "--{name}: README range"
        );
        seen.push(name.to_string());
    }
    for arg in declared.iter().filter(|arg| range_of(arg).is_some()) {
        let name = arg.get_long().unwrap();
        assert!(
            seen.iter().any(|s| s == name),
            "chaos proxy --{name} has no README row"
        );
    }
}

/// A ratio is a TOML float; the file took only strings, integers and
/// booleans, so `breaker-failure-ratio = 0.25` was refused.
#[test]
fn file_takes_a_ratio_as_a_float() {
    let file = TempFile::new("upstreams = [\"127.0.0.1:1\"]\nbreaker-failure-ratio = 0.25\n");
    let config = settings(Mode::Proxy, Some(&file.0), &[]).unwrap();
    assert_eq!(config.breaker.failure_ratio, 0.25);
}

/// A file value is held to its setting's bounds as it is read, so the
/// error names the file's line and key, not only the flag.
#[test]
fn file_value_out_of_range_names_the_line_and_key() {
    let error = file_error_of("threads = 2\nbacklog = 0\n");
    assert_eq!(error.flag, "--config");
    assert!(
        error
            .message
            .ends_with(" line 2: backlog: must be between 1 and 65535, got 0"),
        "{error}"
    );
}

/// The PROXY protocol: the mode, the trusted sources it needs, a ring the
/// header fits in; each refusal names its flag.
#[test]
fn proxy_protocol_needs_trusted_sources_and_room_for_its_header() {
    let config = valid(&[
        ("proxy-protocol", "any"),
        ("proxy-trusted", "10.0.0.0/8, 127.0.0.1"),
        ("proxy-timeout", "500ms"),
    ]);
    assert_eq!(config.proxy_protocol, ProxyProtocol::Any);
    assert!(config.proxy_trusted.contains("10.2.3.4".parse().unwrap()));
    assert_eq!(config.proxy_timeout, Duration::from_millis(500));
    assert!(!valid(&[]).proxy_protocol.on());

    let error = invalid("proxy-protocol", "v2");
    assert_eq!(error.flag, "--proxy-trusted", "{error}");
    assert_eq!(invalid("proxy-protocol", "v3").flag, "--proxy-protocol");
    assert_eq!(
        invalid("proxy-trusted", "10.0.0.0/40").flag,
        "--proxy-trusted"
    );
    assert_eq!(invalid("proxy-timeout", "5ms").flag, "--proxy-timeout");
    let error = invalid_all(&[
        ("proxy-protocol", "v1"),
        ("proxy-trusted", "127.0.0.1"),
        ("buffer", "256"),
    ]);
    assert_eq!(
        error.to_string(),
        "--buffer: must be at least 512 with --proxy-protocol (the header is read into it), got 256"
    );
    let file = TempFile::new("proxy-protocol = \"v2\"\nproxy-trusted = \"192.0.2.0/24\"\n");
    let config = settings(
        Mode::Proxy,
        Some(&file.0),
        &flags(&[("upstream", "127.0.0.1:1")]),
    );
    assert!(
        config
            .unwrap()
            .proxy_trusted
            .contains("192.0.2.9".parse().unwrap())
    );
}

/// The per-address limits: off by default, bounded, and a burst needs a
/// rate.
#[test]
fn per_address_limits_are_bounded() {
    let config = valid(&[]);
    assert_eq!((config.max_conns_per_ip, config.conn_rate_per_ip), (0, 0));
    assert_eq!((config.ipv4_prefix, config.ipv6_prefix), (32, 64));
    let config = valid(&[
        ("max-conns-per-ip", "10"),
        ("conn-rate-per-ip", "5"),
        ("conn-burst-per-ip", "20"),
        ("ipv6-prefix", "56"),
        ("ip-table-max", "1000"),
    ]);
    assert_eq!(config.conn_burst_per_ip, 20);
    assert_eq!(config.ipv6_prefix, 56);
    for (key, value) in [
        ("ipv4-prefix", "0"),
        ("ipv4-prefix", "33"),
        ("ipv6-prefix", "129"),
        ("max-conns-per-ip", "-1"),
        ("conn-rate-per-ip", "1000001"),
    ] {
        assert_eq!(invalid(key, value).flag, format!("--{key}"), "{value}");
    }
    let error = invalid("conn-burst-per-ip", "5");
    assert_eq!(
        error.to_string(),
        "--conn-burst-per-ip: is the bucket of --conn-rate-per-ip, which is not set"
    );
    let config = valid(&[("request-rate", "100"), ("request-burst", "7")]);
    assert_eq!((config.request_rate, config.request_burst), (100, 7));
    assert_eq!(invalid("request-burst", "7").flag, "--request-burst");
    assert_eq!(invalid("request-rate", "10000001").flag, "--request-rate");
}

/// Keepalive and user timeout: off by default, bounded, each refusal names
/// its flag.
#[test]
fn dead_peer_settings_are_bounded() {
    let config = valid(&[]);
    assert_eq!(config.tcp_keepalive, TcpKeepalive(None));
    assert_eq!(config.tcp_user_timeout, Duration::ZERO);
    let config = valid(&[("tcp-keepalive", "60s,10s,6"), ("tcp-user-timeout", "30s")]);
    let keepalive = config.tcp_keepalive.0.unwrap();
    assert_eq!(keepalive.idle, Duration::from_secs(60));
    assert_eq!(keepalive.count, 6);
    assert_eq!(config.tcp_user_timeout, Duration::from_secs(30));
    for (key, value) in [
        ("tcp-keepalive", "60s"),
        ("tcp-keepalive", "60s,10s,200"),
        ("tcp-user-timeout", "25h"),
    ] {
        assert_eq!(invalid(key, value).flag, format!("--{key}"), "{value}");
    }
}

/// Load shedding: off by default, each threshold bounded.
#[test]
fn shedding_thresholds_are_bounded() {
    let config = valid(&[]);
    assert_eq!(config.shed_accept_queue, 0);
    assert_eq!(config.shed_loop_lag, Duration::ZERO);
    assert_eq!(config.shed_fds_left, 0);
    let config = valid(&[
        ("shed-accept-queue", "512"),
        ("shed-loop-lag", "100ms"),
        ("shed-fds-left", "1000"),
    ]);
    assert_eq!(config.shed_loop_lag, Duration::from_millis(100));
    for (key, value) in [
        ("shed-accept-queue", "65536"),
        ("shed-loop-lag", "2m"),
        ("shed-fds-left", "x"),
    ] {
        assert_eq!(invalid(key, value).flag, format!("--{key}"), "{value}");
    }
}

/// The keys of the README's table of live settings (the first cell of
/// each row under "### Reload", each key in backquotes).
fn readme_live_keys(readme: &str) -> Vec<String> {
    let section = readme
        .split("\n### Reload\n")
        .nth(1)
        .expect("a Reload section");
    let section = section.split("\n### ").next().unwrap();
    let rows = section.lines().filter(|line| line.starts_with("| `"));
    let first_cell = |line: &str| line.trim_matches('|').split(" | ").next().map(String::from);
    let cells: Vec<String> = rows.filter_map(first_cell).collect();
    let mut keys = Vec::new();
    for cell in cells {
        keys.extend(cell.split('`').skip(1).step_by(2).map(String::from));
    }
    keys
}

/// The README says which settings are live exactly as their declarations
/// do (`live = true`), for both commands.
#[test]
fn readme_live_keys_match_the_declarations() {
    let readme = include_str!("../../README.md");
    let mut documented = readme_live_keys(readme);
    documented.sort();
    let mut declared = live_keys(Mode::Serve);
    declared.extend(live_keys(Mode::Proxy));
    declared.sort();
    declared.dedup();
    assert_eq!(documented, declared);
    assert!(declared.contains(&"idle-timeout".to_string()));
    assert!(!live_keys(Mode::Serve).contains(&"upstreams".to_string()));
    assert!(live_keys(Mode::Proxy).contains(&"upstreams".to_string()));
}

/// A diff names the keys whose parsed values differ, live ones with both
/// values, and sees through spelling (`1m` is `60s`).
#[test]
fn diff_splits_live_and_fixed_changes() {
    let old = valid(&[("idle-timeout", "1m"), ("buffer", "64KiB")]);
    let same = valid(&[("idle-timeout", "60s"), ("buffer", "65536")]);
    assert!(diff(Mode::Serve, &old, &same).is_empty());
    let new = valid(&[
        ("idle-timeout", "5s"),
        ("buffer", "8KiB"),
        ("request-rate", "10"),
        ("proxy-trusted", "10.0.0.0/8"),
    ]);
    let changed = diff(Mode::Serve, &old, &new);
    assert_eq!(
        changed.live,
        ["idle-timeout 60s -> 5s", "request-rate 0 -> 10"]
    );
    // max-frame follows buffer; a list-valued setting is compared whole.
    assert_eq!(changed.fixed, ["buffer", "max-frame", "proxy-trusted"]);
}

/// The breaker's settings (a flattened group) and the upstream list are
/// compared too.
#[test]
fn diff_sees_the_groups_and_the_upstreams() {
    let with = |pairs: &[(&str, &str)]| {
        let mut all = vec![("upstream", "127.0.0.1:1")];
        all.extend_from_slice(pairs);
        settings(Mode::Proxy, None, &flags(&all)).unwrap()
    };
    let old = with(&[]);
    let new = with(&[("breaker-probes", "5"), ("upstream", "127.0.0.1:2")]);
    let changed = diff(Mode::Proxy, &old, &new);
    assert_eq!(changed.fixed, ["breaker-probes"]);
    assert_eq!(changed.live.len(), 1, "{:?}", changed.live);
    assert!(
        changed.live[0].starts_with("upstreams "),
        "{:?}",
        changed.live
    );
}

#[test]
fn upstream_replicas_name_upstreams_and_one_primary_each() {
    let proxy = |pairs: &[(&str, &str)]| settings(Mode::Proxy, None, &flags(pairs));
    let (a, b, c) = ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003");
    let fails = |pairs: &[(&str, &str)], says: &str| {
        let error = proxy(pairs).unwrap_err();
        assert_eq!(error.flag, "--upstream-replica", "{error}");
        assert!(error.message.contains(says), "{error}");
    };
    let ab = format!("{a}={b}");
    let cb = format!("{c}={b}");
    let ba = format!("{b}={a}");
    let aa = format!("{a}={a}");
    fails(
        &[("upstream", a), ("upstream-replica", &ab)],
        "is not an --upstream",
    );
    fails(
        &[("upstream", a), ("upstream-replica", "127.0.0.1")],
        "PRIMARY=REPLICA",
    );
    fails(
        &[("upstream", a), ("upstream-replica", "127.0.0.1:1=x")],
        "host:port",
    );
    fails(
        &[("upstream", a), ("upstream-replica", &aa)],
        "cannot replicate itself",
    );
    fails(
        &[("upstream", a), ("upstream", b), ("upstream", c)]
            .into_iter()
            .chain([("upstream-replica", ab.as_str()), ("upstream-replica", &cb)])
            .collect::<Vec<_>>(),
        "given a primary twice",
    );
    fails(
        &[
            ("upstream", a),
            ("upstream", b),
            ("upstream", c),
            ("upstream-replica", &ab),
            ("upstream-replica", &format!("{b}={c}")),
        ],
        "cannot have replicas",
    );
    fails(
        &[("cluster", a), ("upstream-replica", &ba)],
        "found in its slot map",
    );
    let config = proxy(&[("upstream", a), ("upstream", b), ("upstream-replica", &ab)]).unwrap();
    assert_eq!(config.primary_of(b), Some(a));
    assert_eq!(config.primary_of(a), None);
}
