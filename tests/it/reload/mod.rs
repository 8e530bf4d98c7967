//! Reloading the settings while the server runs (README "Operations",
//! "Reload"): SIGHUP, `POST /reload` and `holdfast reload` re-read the
//! `--config` file; a file that fails validation or changes a setting that
//! is not live changes nothing and says why; a live setting takes effect,
//! for the connections already open where the README says so.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

mod proxy;
mod upgrade;

use crate::util::{self, ConfigFile, Server, expect_closed, http_post, line_round_trip};

/// Waits this long for a reload's effect: generous for a loaded machine.
const SETTLE: Duration = Duration::from_secs(5);

/// `holdfast reload --admin ADDR`: exit code, stdout, stderr.
fn reload_command(server: &Server) -> (i32, String, String) {
    let admin = server.admin().to_string();
    let (status, out, err) = util::run_to_exit(&["reload", "--admin", &admin], SETTLE);
    let code = status
        .and_then(|s| s.code())
        .expect("holdfast reload exits");
    (code, out, err)
}

/// A line-protocol server on `file`, holding one client that has made a
/// round trip (so it is open and idle).
fn line_server(file: &ConfigFile) -> (Server, std::net::TcpStream) {
    let server = Server::start(&["--config", file.path()]);
    let mut client = server.connect();
    line_round_trip(&mut client, b"hello");
    (server, client)
}

/// The reloads counted with `result`.
fn reloads(server: &Server, result: &str) -> f64 {
    server.metric("holdfast_config_reloads_total", &[("result", result)])
}

/// Asserts that `client`, idle for `idle`, is still open and served.
fn still_served_after(client: &mut std::net::TcpStream, idle: Duration) {
    std::thread::sleep(idle);
    line_round_trip(client, b"still here");
}

const BASE: &str = "protocol = \"line\"\nidle-timeout = \"60s\"\n";

#[test]
fn an_invalid_file_changes_nothing_and_says_why() {
    let file = ConfigFile::new("reload-invalid", BASE);
    let (server, mut client) = line_server(&file);
    let sha_before = file.sha256();
    // A live change beside a bad value: neither is applied.
    file.write("protocol = \"line\"\nidle-timeout = \"300ms\"\nread-timeout = \"1ms\"\n");
    let (status, body) = http_post(server.admin(), "/reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.starts_with("reload invalid: "), "{body}");
    assert!(body.contains("read-timeout"), "names the key: {body}");
    let (code, out, err) = reload_command(&server);
    assert_eq!(code, 1, "stdout {out:?} stderr {err:?}");
    assert!(
        err.contains("reload invalid: ") && err.contains("read-timeout"),
        "{err}"
    );
    assert!(err.contains("HTTP 422"), "{err}");
    server.signal(Signal::SIGHUP);
    server.wait_metric(
        "holdfast_config_reloads_total",
        &[("result", "invalid")],
        3.0,
        SETTLE,
    );
    assert_eq!(reloads(&server, "applied"), 0.0);
    assert_eq!(server.metric("holdfast_config_generation", &[]), 1.0);
    let info = [("sha256", sha_before.as_str())];
    assert_eq!(server.metric("holdfast_config_info", &info), 1.0);
    let log = server.stderr_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("reload invalid: "))
        .count();
    assert_eq!(lines, 3, "one log line per reload:\n{log}");
    assert!(log.contains("nothing applied"), "{log}");
    // The old 60 s idle timeout stands: the idle client is still served
    // after far longer than the 300 ms the file asked for.
    still_served_after(&mut client, Duration::from_millis(1200));
}

#[test]
fn a_changed_fixed_key_is_refused_whole() {
    let file = ConfigFile::new("reload-refused", BASE);
    let (server, mut client) = line_server(&file);
    file.write("protocol = \"line\"\nidle-timeout = \"300ms\"\nbuffer = \"8KiB\"\n");
    let (status, body) = http_post(server.admin(), "/reload");
    assert_eq!(status, 409, "{body}");
    // --max-frame follows --buffer when not set: it changes too.
    assert!(
        body.starts_with("reload refused: buffer, max-frame cannot change"),
        "{body}"
    );
    let (code, _, err) = reload_command(&server);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reload refused: buffer"), "{err}");
    assert_eq!(reloads(&server, "refused"), 2.0);
    assert_eq!(server.metric("holdfast_config_generation", &[]), 1.0);
    let log = server.stderr_text();
    assert!(
        log.contains("[WARN] reload refused: buffer, max-frame cannot change"),
        "{log}"
    );
    // Nothing applied: the live idle timeout beside it did not change.
    still_served_after(&mut client, Duration::from_millis(1200));
    // The fixed key back as it was: the live change alone is applied.
    file.write("protocol = \"line\"\nidle-timeout = \"300ms\"\n");
    let (code, out, err) = reload_command(&server);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "reload applied: generation 2; changed idle-timeout 60s -> 300ms"
    );
    let (_, how, _) = expect_closed(&mut client, SETTLE);
    eprintln!("closed by {how:?}");
}

#[test]
fn a_lowered_idle_timeout_closes_an_existing_idle_connection() {
    let file = ConfigFile::new("reload-idle", BASE);
    let (server, mut client) = line_server(&file);
    // A connection that talks every 100 ms throughout stays open.
    let mut busy = server.connect();
    let talking = std::thread::spawn(move || {
        for n in 0..25 {
            line_round_trip(&mut busy, format!("busy {n}").as_bytes());
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    file.write("protocol = \"line\"\nidle-timeout = \"1s\"\n");
    let asked = Instant::now();
    let (status, body) = http_post(server.admin(), "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.trim(),
        "reload applied: generation 2; changed idle-timeout 60s -> 1s"
    );
    // Idle for 1.5 s already, past the new 1 s: closed at once (well
    // before the old 60 s).
    let (_, _, took) = expect_closed(&mut client, SETTLE);
    eprintln!(
        "the idle connection closed {:?} after the reload",
        asked.elapsed()
    );
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    talking.join().expect("the talking connection stayed open");
    let reason = [("reason", "idle_timeout")];
    let closed = server.metric("holdfast_connections_closed_total", &reason);
    assert_eq!(closed, 1.0);
    assert_eq!(server.metric("holdfast_config_generation", &[]), 2.0);
    let sha = file.sha256();
    assert_eq!(
        server.metric("holdfast_config_info", &[("sha256", &sha)]),
        1.0
    );
    let log = server.stderr_text();
    let line = "[INFO] reload applied: generation 2; changed idle-timeout 60s -> 1s";
    assert!(log.contains(line), "{log}");
}

#[test]
fn sighup_post_and_the_command_each_reload() {
    let file = ConfigFile::new("reload-triggers", BASE);
    let server = Server::start(&["--config", file.path()]);
    file.write("protocol = \"line\"\nidle-timeout = \"50s\"\n");
    server.signal(Signal::SIGHUP);
    server.wait_metric("holdfast_config_generation", &[], 2.0, SETTLE);
    file.write("protocol = \"line\"\nidle-timeout = \"40s\"\n");
    let (status, _) = http_post(server.admin(), "/reload");
    assert_eq!(status, 200);
    assert_eq!(server.metric("holdfast_config_generation", &[]), 3.0);
    file.write("protocol = \"line\"\nidle-timeout = \"30s\"\n");
    let (code, out, _) = reload_command(&server);
    assert_eq!(code, 0);
    assert!(
        out.contains("generation 4; changed idle-timeout 40s -> 30s"),
        "{out}"
    );
    assert_eq!(reloads(&server, "applied"), 3.0);
    let log = server.stderr_text();
    for change in ["60s -> 50s", "50s -> 40s", "40s -> 30s"] {
        assert!(
            log.contains(&format!("changed idle-timeout {change}")),
            "{log}"
        );
    }
    assert!(log.contains("(SIGHUP): reloading the settings"), "{log}");
    // A GET does not reload.
    let (status, _) = util::http_get(server.admin(), "/reload");
    assert_eq!(status, 405);
}

/// Lines sent to `client` (pipelined, all at once) and read back: how
/// many came within `window`.
fn lines_within(client: &mut std::net::TcpStream, window: Duration, buf: &mut Vec<u8>) -> usize {
    let end = Instant::now() + window;
    let mut chunk = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        client
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match client.read(&mut chunk) {
            Ok(0) => panic!("closed"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    buf.iter().filter(|&&b| b == b'\n').count()
}

#[test]
fn a_raised_request_rate_speeds_up_an_open_connection() {
    let slow = "protocol = \"line\"\nrequest-rate = \"20\"\nrequest-burst = \"20\"\n";
    let file = ConfigFile::new("reload-rate", slow);
    let server = Server::start(&["--config", file.path()]);
    let mut client = server.connect();
    let lines: Vec<u8> = (0..400)
        .flat_map(|n| format!("line {n}\n").into_bytes())
        .collect();
    client.write_all(&lines).unwrap();
    let mut got = Vec::new();
    // 20 at once, then 20 a second: about 40 in the first second.
    let before = lines_within(&mut client, Duration::from_secs(1), &mut got);
    assert!(
        (20..=70).contains(&before),
        "{before} lines in the first second at 20/s"
    );
    file.write("protocol = \"line\"\nrequest-rate = \"2000\"\nrequest-burst = \"20\"\n");
    let (status, body) = http_post(server.admin(), "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("request-rate 20 -> 2000"), "{body}");
    // The other 360 or so at 2000 a second: well within a second (at the
    // old rate they would take 18 s).
    let after = lines_within(&mut client, Duration::from_millis(1500), &mut got);
    assert_eq!(
        after, 400,
        "{after} of 400 lines 1.5 s after raising the rate"
    );
    assert!(got == lines, "the replies differ from the lines sent");
}

#[test]
fn a_request_rate_added_by_reload_paces_an_open_connection() {
    let file = ConfigFile::new("reload-rate-new", "protocol = \"line\"\n");
    let server = Server::start(&["--config", file.path()]);
    let mut client = server.connect();
    line_round_trip(&mut client, b"before");
    file.write("protocol = \"line\"\nrequest-rate = \"20\"\nrequest-burst = \"20\"\n");
    let (status, body) = http_post(server.admin(), "/reload");
    assert_eq!(status, 200, "{body}");
    let lines: Vec<u8> = (0..200)
        .flat_map(|n| format!("line {n}\n").into_bytes())
        .collect();
    client.write_all(&lines).unwrap();
    let mut got = Vec::new();
    let first = lines_within(&mut client, Duration::from_secs(1), &mut got);
    assert!(
        (20..=70).contains(&first),
        "{first} lines in a second at 20/s"
    );
    // And dropped again: the rest at once.
    file.write("protocol = \"line\"\n");
    let (status, body) = http_post(server.admin(), "/reload");
    assert_eq!(status, 200, "{body}");
    let all = lines_within(&mut client, Duration::from_millis(1500), &mut got);
    assert_eq!(all, 200);
    assert!(got == lines);
}

#[test]
fn the_command_says_when_no_server_answers() {
    let port = util::free_port().to_string();
    let admin = format!("127.0.0.1:{port}");
    let (status, out, err) = util::run_to_exit(&["reload", "--admin", &admin], SETTLE);
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{out} {err}");
    assert!(
        err.starts_with("holdfast: reload: admin endpoint 127.0.0.1:"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn heartbeats_turned_on_by_reload_close_an_open_silent_connection() {
    let file = ConfigFile::new("reload-heartbeat", "protocol = \"resp\"\n");
    let server = Server::start(&["--config", file.path()]);
    let mut silent = util::Resp::connect(server.addr);
    assert_eq!(silent.call(&[b"PING"]), b"+PONG\r\n");
    let mut talking = util::Resp::connect(server.addr);
    file.write(
        "protocol = \"resp\"\nheartbeat-interval = \"300ms\"\nheartbeat-timeout = \"300ms\"\n",
    );
    let (status, body) = http_post(server.admin(), "/reload");
    assert_eq!(status, 200, "{body}");
    // Silent for 300 ms, then 300 more after the ping: closed, while a
    // connection that keeps sending stays.
    let asked = Instant::now();
    let closer = std::thread::spawn(move || expect_closed(&mut silent.stream, SETTLE));
    while asked.elapsed() < Duration::from_millis(1500) {
        assert_eq!(talking.call(&[b"PING"]), b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, _, took) = closer.join().expect("the silent connection closed");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    let reason = [("reason", "heartbeat_timeout")];
    assert_eq!(
        server.metric("holdfast_connections_closed_total", &reason),
        1.0
    );
}

#[test]
fn a_flag_given_at_start_keeps_winning_over_the_file() {
    let file = ConfigFile::new("reload-flag", BASE);
    let server = Server::start(&["--config", file.path(), "--idle-timeout", "60s"]);
    let mut client = server.connect();
    line_round_trip(&mut client, b"hello");
    file.write("protocol = \"line\"\nidle-timeout = \"300ms\"\n");
    let (status, body) = http_post(server.admin(), "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.trim(),
        "reload applied: generation 2, no setting changed"
    );
    still_served_after(&mut client, Duration::from_millis(1200));
}

/// Whether the server turns a new connection away: closed before it is
/// served (a rejected connection is accepted and closed at once).
fn refused(server: &Server) -> bool {
    let mut client = server.connect();
    let _ = client.write_all(b"knock\n");
    let mut buf = [0u8; 64];
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    matches!(client.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn per_address_limits_set_by_reload_count_the_open_connections() {
    let file = ConfigFile::new("reload-per-ip", "protocol = \"line\"\n");
    let server = Server::start(&["--config", file.path()]);
    let mut open: Vec<_> = (0..3).map(|_| server.connect()).collect();
    for client in &mut open {
        line_round_trip(client, b"open");
    }
    file.write("protocol = \"line\"\nmax-conns-per-ip = 3\n");
    let (status, body) = http_post(server.admin(), "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("max-conns-per-ip 0 -> 3"), "{body}");
    // The three open ones count: a fourth is refused, they are served.
    assert!(
        refused(&server),
        "a fourth connection from 127.0.0.1 was served"
    );
    let reason = [("reason", "per_ip")];
    assert_eq!(
        server.metric("holdfast_connections_rejected_total", &reason),
        1.0
    );
    for client in &mut open {
        line_round_trip(client, b"still served");
    }
    // One closes: its place is free again.
    drop(open.pop());
    std::thread::sleep(Duration::from_millis(300));
    let mut again = server.connect();
    line_round_trip(&mut again, b"in again");
    assert!(refused(&server));
    // Raised: two more come in; the limit is counted, not reset.
    file.write("protocol = \"line\"\nmax-conns-per-ip = 5\n");
    assert_eq!(http_post(server.admin(), "/reload").0, 200);
    let mut more: Vec<_> = (0..2).map(|_| server.connect()).collect();
    for client in &mut more {
        line_round_trip(client, b"more");
    }
    assert!(refused(&server));
    assert_eq!(
        server.metric("holdfast_connections_rejected_total", &reason),
        3.0
    );
    // Off: no limit at all.
    file.write("protocol = \"line\"\n");
    assert_eq!(http_post(server.admin(), "/reload").0, 200);
    let mut free = server.connect();
    line_round_trip(&mut free, b"free");
}
