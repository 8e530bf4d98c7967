//! `holdfast chaos scan` (driven in-process through `tools::chaos::run`):
//! holdfast itself passes every check; each naive fixture server of
//! tests/fixtures/naive is caught by exactly the checks for its mistake.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use holdfast::engine::codec::Protocol;
use holdfast::tools::chaos::{self, Check, Report, ScanOptions, Verdict};

use crate::util::Server;

/// How long a check waits for the server to react: the test servers'
/// timeouts are 1 s.
const WAIT: Duration = Duration::from_secs(3);
/// Connections the exhaustion check opens: past holdfast's `--max-conns
/// 50` and the fixtures' 64.
const MAX_CONNS: usize = 100;

/// holdfast with 1 s timeouts and a connection limit below [`MAX_CONNS`].
const HOLDFAST_ARGS: [&str; 8] = [
    "--idle-timeout",
    "1s",
    "--read-timeout",
    "1s",
    "--write-timeout",
    "1s",
    "--max-conns",
    "50",
];

fn options(addr: SocketAddr, protocol: Protocol, pid: u32) -> ScanOptions {
    let mut options = ScanOptions::new(addr.to_string(), protocol);
    options.pid = Some(pid);
    options.max_conns = MAX_CONNS;
    options.duration = WAIT;
    options
}

fn scan(options: &ScanOptions) -> Report {
    let report = chaos::run(options).expect("the scan runs");
    eprintln!("{}", report.to_text());
    report
}

fn verdicts(report: &Report) -> BTreeMap<&'static str, Verdict> {
    report
        .findings
        .iter()
        .map(|f| (f.check.name(), f.verdict))
        .collect()
}

/// Every check but shutdown (not allowed to signal) passes.
fn assert_all_pass(report: &Report) {
    for f in &report.findings {
        let expected = match f.check {
            Check::Shutdown => Verdict::CannotTell,
            _ => Verdict::Pass,
        };
        assert_eq!(f.verdict, expected, "{}: {}", f.check.name(), f.evidence);
    }
    assert_eq!(report.exit_code(), 0);
}

fn holdfast_scan(protocol: &str) -> Report {
    let mut args = vec!["--protocol", protocol];
    args.extend(HOLDFAST_ARGS);
    let server = Server::start(&args);
    // The uring build's default driver is io_uring: both drivers are
    // scanned, one per feature set.
    let backend = if cfg!(feature = "uring") {
        "uring"
    } else {
        "epoll"
    };
    assert_eq!(
        server.metric("holdfast_backend_info", &[("backend", backend)]),
        1.0
    );
    let protocol = Protocol::from_name(protocol).unwrap();
    scan(&options(server.addr, protocol, server.pid() as u32))
}

#[test]
fn holdfast_line_passes_every_check() {
    assert_all_pass(&holdfast_scan("line"));
}

#[test]
fn holdfast_frame_passes_every_check() {
    assert_all_pass(&holdfast_scan("frame"));
}

#[test]
fn holdfast_resp_passes_every_check() {
    assert_all_pass(&holdfast_scan("resp"));
}

#[test]
fn holdfast_answers_every_request_in_flight_then_exits_on_sigterm() {
    let mut args = vec!["--protocol", "line"];
    args.extend(HOLDFAST_ARGS);
    let server = Server::start(&args);
    let mut options = options(server.addr, Protocol::Line, server.pid() as u32);
    options.only = vec![Check::Shutdown];
    options.allow_signal = true;
    let report = scan(&options);
    let finding = report.finding(Check::Shutdown).unwrap();
    assert_eq!(finding.verdict, Verdict::Pass, "{}", finding.evidence);
}

/// A fixture server (python3 tests/fixtures/naive/NAME.py), killed on drop.
struct Fixture {
    child: Child,
    addr: SocketAddr,
}

impl Fixture {
    fn start(name: &str) -> Fixture {
        let path = format!(
            "{}/tests/fixtures/naive/{name}.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut child = Command::new("python3")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting python3 {path}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("reading the fixture's listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no listening line, got {line:?}"));
        Fixture { child, addr }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scans fixture `name`; asserts exactly `failing` fail and the rest pass.
fn assert_caught_by(name: &str, failing: &[Check]) {
    let fixture = Fixture::start(name);
    let report = scan(&options(fixture.addr, Protocol::Line, fixture.child.id()));
    for f in &report.findings {
        let expected = match f.check {
            Check::Shutdown => Verdict::CannotTell,
            c if failing.contains(&c) => Verdict::Fail,
            _ => Verdict::Pass,
        };
        assert_eq!(
            f.verdict,
            expected,
            "{name} {}: {} (all: {:?})",
            f.check.name(),
            f.evidence,
            verdicts(&report)
        );
    }
    assert_eq!(report.exit_code(), i32::from(!failing.is_empty()));
}

#[test]
fn careful_fixture_passes_every_check() {
    assert_caught_by("careful", &[]);
}

#[test]
fn no_timeouts_is_caught_by_idle_and_slow_peer() {
    assert_caught_by("no_timeouts", &[Check::Idle, Check::SlowPeer]);
}

#[test]
fn leaks_on_reset_is_caught_by_leaks() {
    assert_caught_by("leaks_on_reset", &[Check::Leaks]);
}

#[test]
fn per_read_is_caught_by_split_and_partial() {
    assert_caught_by("per_read", &[Check::Split, Check::Partial]);
}

#[test]
fn dies_on_bad_frame_is_caught_by_bad_input() {
    // It exits at the first bad input, so the checks after it cannot reach
    // it: scan only the checks before it, then bad-input.
    let fixture = Fixture::start("dies_on_bad_frame");
    let mut options = options(fixture.addr, Protocol::Line, fixture.child.id());
    options.only = vec![Check::Leaks, Check::Idle, Check::BadInput];
    let report = scan(&options);
    let v = verdicts(&report);
    assert_eq!(v["leaks"], Verdict::Pass, "{v:?}");
    assert_eq!(v["idle"], Verdict::Pass, "{v:?}");
    let bad = report.finding(Check::BadInput).unwrap();
    assert_eq!(bad.verdict, Verdict::Fail, "{}", bad.evidence);
    assert!(bad.evidence.contains("has exited"), "{}", bad.evidence);
}

#[test]
fn dies_on_bad_frame_passes_the_checks_that_send_no_bad_input() {
    let fixture = Fixture::start("dies_on_bad_frame");
    let mut options = options(fixture.addr, Protocol::Line, fixture.child.id());
    options.only = vec![
        Check::Buffers,
        Check::SlowPeer,
        Check::Split,
        Check::Partial,
        Check::Exhaustion,
    ];
    assert_all_pass(&scan(&options));
}

#[test]
fn unbounded_buffer_is_caught_by_buffers() {
    assert_caught_by("unbounded_buffer", &[Check::Buffers]);
}

#[test]
fn scan_writes_json_and_html_and_refuses_a_dead_address() {
    let fixture = Fixture::start("careful");
    let dir = std::env::temp_dir().join(format!("holdfast-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut options = options(fixture.addr, Protocol::Line, fixture.child.id());
    options.only = vec![Check::Split];
    options.json = Some(dir.join("report.json"));
    options.html = Some(dir.join("report.html"));
    scan(&options);
    let json = std::fs::read_to_string(dir.join("report.json")).unwrap();
    assert!(
        json.contains(r#""check":"split","verdict":"pass""#),
        "{json}"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "no chart in the page");
    let _ = std::fs::remove_dir_all(&dir);
    drop(fixture);
    let error = chaos::run(&ScanOptions::new(options.addr.clone(), Protocol::Line)).unwrap_err();
    assert!(error.to_string().contains("not serving"), "{error}");
}

#[test]
fn without_pid_the_fd_and_memory_checks_cannot_tell() {
    let fixture = Fixture::start("unbounded_buffer");
    let mut options = options(fixture.addr, Protocol::Line, fixture.child.id());
    options.pid = None;
    options.only = vec![Check::Leaks, Check::Buffers];
    let report = scan(&options);
    for f in &report.findings {
        assert_eq!(
            f.verdict,
            Verdict::CannotTell,
            "{}: {}",
            f.check.name(),
            f.evidence
        );
        assert!(f.evidence.contains("--pid"), "{}", f.evidence);
    }
    assert_eq!(report.exit_code(), 0);
}

/// The command line: `holdfast chaos scan` runs the checks asked for,
/// prints the card, and exits 1 when one fails (0 when all pass); a scan
/// without its address is a usage error (2, one line).
#[test]
fn the_command_line_scan_exits_by_its_verdicts() {
    let scan = |addr: SocketAddr, only: &[&str]| {
        let mut args = vec!["chaos", "scan"];
        let addr = addr.to_string();
        args.extend([
            addr.as_str(),
            "--protocol",
            "line",
            "--duration",
            "3s",
            "--only",
        ]);
        args.extend(only);
        Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(&args)
            .output()
            .expect("running holdfast chaos scan")
    };
    let fixture = Fixture::start("per_read");
    let caught = scan(fixture.addr, &["split", "idle"]);
    let card = String::from_utf8_lossy(&caught.stdout);
    assert_eq!(caught.status.code(), Some(1), "{card}");
    assert!(card.contains("FAIL  split"), "{card}");
    assert!(card.contains("PASS  idle"), "{card}");

    let mut args = vec!["--protocol", "line"];
    args.extend(HOLDFAST_ARGS);
    let server = Server::start(&args);
    let clean = scan(server.addr, &["split"]);
    let card = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(clean.status.code(), Some(0), "{card}");
    assert!(card.contains("PASS  split"), "{card}");

    let usage = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["chaos", "scan", "--protocol", "line"])
        .output()
        .expect("running holdfast chaos scan");
    let stderr = String::from_utf8_lossy(&usage.stderr);
    assert_eq!(usage.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
