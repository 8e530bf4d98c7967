//! The command-line contract: a bad value or an impossible combination
//! exits 2 with one stderr line naming the flag; a bind failure exits 1
//! naming the address; `--config` applies a TOML file and flags win.

use crate::util;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use util::{Server, run_to_exit};

const BASE: [&str; 7] = [
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    "--threads",
    "1",
];

/// Runs `holdfast serve` (test defaults) with `extra`; asserts exit code 2
/// and exactly one stderr line containing `flag`.
fn assert_usage_error(extra: &[&str], flag: &str) {
    let args: Vec<&str> = BASE.iter().copied().chain(extra.iter().copied()).collect();
    let (status, _, stderr) = run_to_exit(&args, Duration::from_secs(5));
    let status = status.unwrap_or_else(|| panic!("{extra:?}: still running after 5 s"));
    assert_eq!(
        status.code(),
        Some(2),
        "{extra:?}: exit status {status}; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{extra:?}: expected one stderr line, got {}:\n{stderr}",
        lines.len()
    );
    assert!(
        lines[0].contains(flag),
        "{extra:?}: the stderr line does not name {flag}: {:?}",
        lines[0]
    );
}

#[test]
fn buffer_not_a_power_of_two_exits_2() {
    assert_usage_error(&["--buffer", "1000"], "--buffer");
}

#[test]
fn max_frame_larger_than_the_buffer_exits_2() {
    assert_usage_error(
        &["--max-frame", "70000", "--buffer", "64KiB"],
        "--max-frame",
    );
}

#[test]
fn max_frame_that_leaves_no_room_for_the_header_exits_2() {
    // 64 KiB of payload plus the 4-byte header does not fit a 64 KiB ring.
    assert_usage_error(
        &[
            "--protocol",
            "frame",
            "--max-frame",
            "64KiB",
            "--buffer",
            "64KiB",
        ],
        "--max-frame",
    );
}

#[test]
fn resp_max_frame_too_small_for_a_command_exits_2() {
    // Accepted once, then every command but the shortest was refused.
    assert_usage_error(&["--protocol", "resp", "--max-frame", "16"], "--max-frame");
}

#[test]
fn proxy_breaker_cool_down_shorter_than_the_upstream_timeout_exits_2() {
    let (status, _, stderr) = run_to_exit(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
            "--upstream",
            "127.0.0.1:1",
            "--upstream-timeout",
            "2s",
            "--breaker-cool-down",
            "1s",
        ],
        Duration::from_secs(5),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(2), "stderr:\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr:\n{stderr}");
    assert!(stderr.contains("--breaker-cool-down"), "stderr:\n{stderr}");
}

#[test]
fn bad_duration_exits_2() {
    assert_usage_error(&["--idle-timeout", "5x"], "--idle-timeout");
}

#[test]
fn unknown_protocol_exits_2() {
    assert_usage_error(&["--protocol", "nope"], "--protocol");
}

#[test]
fn unknown_flag_exits_2() {
    assert_usage_error(&["--frobnicate", "3"], "--frobnicate");
}

#[test]
fn bad_log_level_exits_2() {
    assert_usage_error(&["--log-level", "loud"], "--log-level");
}

#[test]
fn missing_config_file_exits_2() {
    assert_usage_error(&["--config", "/nonexistent/holdfast.toml"], "--config");
}

#[test]
fn max_conns_beyond_the_fd_limit_is_lowered_with_one_warning() {
    // Under any RLIMIT_NOFILE hard limit short of 9 million (the kernel's
    // default nr_open is 1 048 576).
    let server = Server::start(&["--max-conns", "9000000"]);
    let stderr = server.stderr_text();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("--max-conns") && l.contains("9000000"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning naming both numbers:\n{stderr}"
    );
    let lowered: String = server
        .listening_line
        .split("max-conns ")
        .nth(1)
        .expect("max-conns in the listening line")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(
        warnings[0].contains(&lowered),
        "the warning does not name the lowered value {lowered}: {}",
        warnings[0]
    );
    assert!(lowered.parse::<u64>().unwrap() < 9_000_000);
    let mut client = server.connect();
    util::echo_round_trip(&mut client, b"still serves");
}

#[test]
fn help_prints_to_stdout_and_exits_0() {
    let (status, stdout, _) = run_to_exit(&["serve", "--help"], Duration::from_secs(5));
    let status = status.expect("--help returns");
    assert!(status.success(), "exit status {status}");
    for flag in [
        "--listen",
        "--max-frame",
        "--idle-timeout",
        "--shutdown-grace",
    ] {
        assert!(
            stdout.contains(flag),
            "--help does not mention {flag}:\n{stdout}"
        );
    }
}

/// A file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("holdfast-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
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

#[test]
fn config_file_applies_and_flags_override_it() {
    let file = TempFile::new(
        "config.toml",
        "protocol = \"line\"\nmax-conns = 7\nbuffer = \"8KiB\"\nidle-timeout = \"30s\"\n",
    );
    let server = Server::start(&["--config", file.path(), "--max-conns", "9"]);
    let line = &server.listening_line;
    assert!(line.contains("(line,"), "protocol from the file: {line}");
    assert!(
        line.contains("buffer 8192 B"),
        "buffer from the file: {line}"
    );
    assert!(
        line.contains("max-conns 9"),
        "the flag wins over the file: {line}"
    );
    // And it behaves so: lines are echoed.
    let mut client = server.connect();
    util::line_round_trip(&mut client, b"configured by file");
}

#[test]
fn unknown_key_in_config_file_exits_2() {
    let file = TempFile::new("unknown-key.toml", "no-such-key = 1\n");
    assert_usage_error(&["--config", file.path()], "--config");
    let args: Vec<&str> = BASE
        .iter()
        .copied()
        .chain(["--config", file.path()])
        .collect();
    let (_, _, stderr) = run_to_exit(&args, Duration::from_secs(5));
    assert!(
        stderr.contains("no-such-key"),
        "the key is not named: {stderr}"
    );
}

#[test]
fn bad_value_in_config_file_exits_2() {
    let file = TempFile::new("bad-value.toml", "buffer = \"1000\"\n");
    assert_usage_error(&["--config", file.path()], "buffer");
}

#[test]
fn bind_failure_exits_1_naming_the_address() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    assert_bind_failure(
        &[
            "serve",
            "--listen",
            &addr,
            "--admin",
            "off",
            "--threads",
            "1",
        ],
        &addr,
    );
}

#[test]
fn admin_bind_failure_exits_1_naming_the_address() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    assert_bind_failure(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            &addr,
            "--threads",
            "1",
        ],
        &addr,
    );
}

#[test]
fn admin_off_says_so_and_serves() {
    let server = Server::start(&["--admin", "off", "--protocol", "echo"]);
    assert!(server.admin.is_none());
    assert!(
        server.listening_line.contains("admin on off"),
        "{}",
        server.listening_line
    );
    let mut client = server.connect();
    util::echo_round_trip(&mut client, b"no admin needed");
}

/// Several shards bind with SO_REUSEPORT, which would let a second server
/// of the same user quietly share a port already in use; it must fail to
/// bind instead, as a single-shard server does.
#[test]
fn second_multi_shard_server_on_a_taken_port_exits_1() {
    let first = Server::start(&["--threads", "2", "--admin", "off"]);
    let addr = first.addr.to_string();
    assert_bind_failure(
        &[
            "serve",
            "--listen",
            &addr,
            "--admin",
            "off",
            "--threads",
            "2",
        ],
        &addr,
    );
}

/// Runs `args` and checks that the server exits 1 with a message naming
/// `addr`, the address it could not bind.
fn assert_bind_failure(args: &[&str], addr: &str) {
    let (status, _, stderr) = run_to_exit(args, Duration::from_secs(5));
    let status = status.expect("exits");
    assert_eq!(
        status.code(),
        Some(1),
        "exit status {status}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(addr),
        "the message does not name {addr}:\n{stderr}"
    );
}

#[test]
fn check_validates_probes_and_exits_without_serving() {
    let (status, stdout, stderr) = run_to_exit(
        &["serve", "--check", "--listen", "127.0.0.1:1"],
        Duration::from_secs(5),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");
    // The build's default backend: uring in a uring build on a kernel that
    // allows it (else epoll, with the warning on stderr).
    let expected = if cfg!(feature = "uring") && !stderr.contains("falling back to epoll") {
        "settings ok; backend uring"
    } else {
        "settings ok; backend epoll"
    };
    assert_eq!(stdout.trim(), expected, "{stderr}");
    let (status, stdout, _) = run_to_exit(
        &["serve", "--check", "--backend", "epoll"],
        Duration::from_secs(5),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert_eq!(stdout.trim(), "settings ok; backend epoll");
    // A bad flag is still a usage error.
    assert_usage_error(&["--check", "--buffer", "100"], "--buffer");
}

#[cfg(not(feature = "uring"))]
#[test]
fn uring_backend_without_the_feature_exits_2() {
    assert_usage_error(&["--backend", "uring"], "--backend");
}
