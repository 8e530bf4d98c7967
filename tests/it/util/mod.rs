//! Helpers shared by the integration tests: start the `holdfast` binary on
//! ephemeral ports, read its `/proc` figures and its `/metrics`, and talk
//! the built-in protocols over real loopback sockets.
//!
//! Every client socket made here has a read and a write timeout, so a test
//! that waits for bytes that never come fails instead of hanging.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prometheus_parse::{Scrape, Value};

pub mod cluster;
pub mod haproxy;
pub mod netns;
pub mod resp3;

/// How long a client socket waits for a read or write before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Interval of every polling loop here.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A `holdfast serve` child process. Dropping it kills (SIGKILL) and reaps
/// it, so a failing test leaves no process behind.
pub struct Server {
    child: Child,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The admin endpoint, unless started with `--admin off`.
    pub admin: Option<SocketAddr>,
    /// Every stderr line so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// The listening line, as printed.
    pub listening_line: String,
    exit: Option<ExitStatus>,
}

impl Server {
    /// Starts `holdfast serve --listen 127.0.0.1:0 --admin 127.0.0.1:0
    /// --threads 1` plus `args` (any of those three given in `args` replaces
    /// the default) and waits for its listening line.
    pub fn start(args: &[&str]) -> Server {
        Server::start_under(&[], args)
    }

    /// As [`Server::start`], with the binary run by `wrapper` (a command
    /// and its arguments, to which the binary's path and arguments are
    /// appended), e.g. a shell that sets limits first.
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Server {
        Server::start_command(wrapper, "serve", args)
    }

    /// Starts `holdfast proxy` with the same test defaults as
    /// [`Server::start`] plus `args` (which name the upstreams).
    pub fn start_proxy(args: &[&str]) -> Server {
        Server::start_command(&[], "proxy", args)
    }

    /// Starts `holdfast COMMAND` (`serve` or `proxy`) under `wrapper`.
    fn start_command(wrapper: &[&str], subcommand: &str, args: &[&str]) -> Server {
        let mut child = spawn_command(wrapper, subcommand, args);
        let stderr = collect_stderr(&mut child);
        let deadline = Instant::now() + START_TIMEOUT;
        let line = loop {
            if let Some(line) = stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("listening on "))
            {
                break line.clone();
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the reader thread a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "holdfast serve {args:?} exited with {status} before listening; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let stuck = where_stuck(child.id());
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "holdfast serve {args:?} printed no listening line within {START_TIMEOUT:?}; \
                     its threads: {stuck}; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        let (addr, admin) = parse_listening_line(&line);
        Server {
            child,
            addr,
            admin,
            stderr,
            listening_line: line,
            exit: None,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Entries in `/proc/PID/fd`: the descriptors the server holds.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("reading the server's /proc/PID/fd")
            .count()
    }

    /// The descriptor numbers the server holds, ascending.
    pub fn fd_numbers(&self) -> Vec<u64> {
        let mut numbers: Vec<u64> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("reading the server's /proc/PID/fd")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        numbers.sort_unstable();
        numbers
    }

    /// Resident memory (`VmRSS` of `/proc/PID/status`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// The most resident memory so far (`VmHWM`, the kernel's high-water
    /// mark: no peak between two samples is missed), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    /// The value (KiB) of the `field` line of `/proc/PID/status`.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading the server's /proc/PID/status");
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        line.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{field} value"))
    }

    /// CPU time used so far (utime + stime of `/proc/PID/stat`), in clock
    /// ticks (see [`clock_ticks_per_second`]).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("reading the server's /proc/PID/stat");
        // The command name (field 2) may hold spaces; fields after its
        // closing parenthesis start at field 3 (state).
        let rest = &stat[stat.rfind(')').expect("comm in /proc/PID/stat") + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields[11].parse().expect("utime");
        let stime: u64 = fields[12].parse().expect("stime");
        utime + stime
    }

    /// Stops the server (SIGSTOP) and waits until every thread of it is
    /// stopped, so bytes sent now queue up unread.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
        let stopped = wait_until(Duration::from_secs(2), || {
            std::fs::read_dir(format!("/proc/{}/task", self.pid()))
                .expect("reading /proc/PID/task")
                .filter_map(|t| t.ok())
                .all(|t| {
                    std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                        stat[stat.rfind(')').unwrap_or(0) + 1..]
                            .trim_start()
                            .starts_with('T')
                    })
                })
        });
        assert!(stopped, "the server did not stop on SIGSTOP");
    }

    /// Resumes a server stopped by [`Server::pause`].
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// The admin address (panics if started with `--admin off`).
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("this server has no admin endpoint")
    }

    /// GET /metrics, parsed.
    pub fn scrape(&self) -> Scrape {
        let (status, body) = http_get(self.admin(), "/metrics");
        assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
        Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parsing /metrics")
    }

    /// The process-wide value of `name` with `labels` (summed over shards).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.scrape(), name, labels)
    }

    /// Scrapes until `name{labels}` equals `expected`; panics with the last
    /// value seen after `timeout`.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        expected: f64,
        timeout: Duration,
    ) {
        let mut last = f64::NAN;
        let reached = wait_until(timeout, || {
            last = self.metric(name, labels);
            last == expected
        });
        assert!(
            reached,
            "{name}{labels:?} is {last}, expected {expected} (waited {timeout:?})"
        );
    }

    /// A baseline descriptor count: taken after a scrape, once the count has
    /// stayed the same for 200 ms (the admin side of the scrape's socket may
    /// close a moment after the response).
    pub fn fd_baseline(&self) -> usize {
        if self.admin.is_some() {
            let _ = self.scrape();
        }
        let mut last = self.fd_count();
        let mut since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(3);
        while since.elapsed() < Duration::from_millis(200) && Instant::now() < deadline {
            std::thread::sleep(POLL_INTERVAL);
            let now = self.fd_count();
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        last
    }

    /// Asserts that the descriptor count comes back to `baseline` (or
    /// below) within `timeout`: no connection leaked a descriptor.
    pub fn assert_fds_return(&self, baseline: usize, timeout: Duration) {
        let mut now = usize::MAX;
        let back = wait_until(timeout, || {
            now = self.fd_count();
            now <= baseline
        });
        assert!(
            back,
            "the server holds {now} descriptors, {baseline} before the storm (waited {timeout:?})"
        );
    }

    /// Sends `sig` to the server.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("kill(2) the server");
    }

    /// Waits up to `timeout` for the server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitpid the server") {
                self.exit = Some(status);
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Every stderr line so far, joined.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// A client connected to the server (with timeouts).
    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The command `holdfast SUBCOMMAND` with the test defaults and `args`.
/// Where each thread of process `pid` is: its name, state and the kernel
/// function it waits in (`/proc/PID/task/*/{comm,stat,wchan}`), for a
/// process that does not start in time.
fn where_stuck(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "gone".into();
    };
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    let threads: Vec<String> = tasks
        .filter_map(|task| task.ok())
        .map(|task| {
            let stat = read(task.path().join("stat"));
            let state = stat[stat.rfind(')').map_or(0, |at| at + 1)..]
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string();
            let comm = read(task.path().join("comm"));
            let wchan = read(task.path().join("wchan"));
            format!("{} {state} in {wchan}", comm.trim())
        })
        .collect();
    threads.join(", ")
}

fn spawn_command(wrapper: &[&str], subcommand: &str, args: &[&str]) -> Child {
    let binary = env!("CARGO_BIN_EXE_holdfast");
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command.arg(subcommand);
    for (flag, value) in [
        ("--listen", "127.0.0.1:0"),
        ("--admin", "127.0.0.1:0"),
        ("--threads", "1"),
    ] {
        if !args.contains(&flag) {
            command.args([flag, value]);
        }
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning holdfast")
}

/// Starts a thread that appends each stderr line of `child` to the result.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            match line {
                Ok(line) => sink.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    });
    lines
}

/// `listening on 127.0.0.1:P (...); admin on 127.0.0.1:Q` (or `admin on
/// off`) → both addresses.
fn parse_listening_line(line: &str) -> (SocketAddr, Option<SocketAddr>) {
    let after = |marker: &str| -> &str {
        let start = line
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker:?} in {line:?}"))
            + marker.len();
        line[start..]
            .split(|c: char| c.is_whitespace() || c == ';' || c == ',')
            .next()
            .unwrap()
    };
    let addr = after("listening on ")
        .parse()
        .unwrap_or_else(|e| panic!("listen address in {line:?}: {e}"));
    let admin = match after("admin on ") {
        "off" => None,
        text => Some(
            text.parse()
                .unwrap_or_else(|e| panic!("admin address in {line:?}: {e}")),
        ),
    };
    (addr, admin)
}

/// Runs `holdfast ARGS` to its end (killing it after `timeout`) and returns
/// its exit status (`None` if it had to be killed), stdout and stderr.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    command.args(args);
    run_command_to_exit(command, timeout)
}

/// Runs `command` to its end (killing it after `timeout`) and returns its
/// exit status (`None` if it had to be killed), stdout and stderr.
pub fn run_command_to_exit(
    mut command: Command,
    timeout: Duration,
) -> (Option<ExitStatus>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    (
        status,
        out_thread.join().unwrap(),
        err_thread.join().unwrap(),
    )
}

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes
/// (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Asserts that `server` uses under a fifth of a core over one second
/// (after a 200 ms settle), while `what` holds: a loop that spins on a
/// listener it cannot accept from uses all of one.
pub fn assert_not_spinning(server: &Server, what: &str) {
    std::thread::sleep(Duration::from_millis(200));
    let ticks_before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let ticks = server.cpu_ticks() - ticks_before;
    let hz = clock_ticks_per_second();
    assert!(
        ticks * 5 < hz,
        "the server used {ticks} ticks of CPU in 1 s while {what} ({hz} ticks = one core): \
         it is spinning"
    );
}

/// One HTTP/1.1 GET; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path)
}

/// One HTTP/1.1 POST without a body; returns the status code and the body.
pub fn http_post(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "POST", path)
}

/// One HTTP/1.1 request; returns the status code and the body.
fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = connect(addr);
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("sending an admin request");
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !response.is_empty() => break,
            Err(e) => panic!("reading the admin response to GET {path}: {e}"),
        }
        // Stop at the end of the body when the server keeps the connection.
        if let Some(complete) = complete_response(&response) {
            response.truncate(complete);
            break;
        }
        assert!(Instant::now() < deadline, "admin GET {path} took too long");
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in the response to GET {path}: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// The length of a complete response with a `Content-Length`, if `bytes`
/// holds one.
fn complete_response(bytes: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(bytes).ok()?;
    let end = text.find("\r\n\r\n")? + 4;
    let length: usize = text[..end].lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })?;
    (bytes.len() >= end + length).then_some(end + length)
}

/// The sum of every sample of `name` carrying `labels`. A process-wide
/// series (without a `shard` label) wins if there is one; otherwise the
/// per-shard series are summed. A label value with no sample is 0, but a
/// metric name absent altogether is a failure (a typo would read as 0).
pub fn metric(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    assert!(
        scrape.samples.iter().any(|s| s.metric == name),
        "no metric {name} in the scrape (metrics: {:?})",
        scrape
            .samples
            .iter()
            .map(|s| s.metric.as_str())
            .collect::<std::collections::BTreeSet<_>>()
    );
    let matching: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    let asks_shard = labels.iter().any(|(k, _)| *k == "shard");
    let whole: Vec<_> = matching
        .iter()
        .filter(|s| s.labels.get("shard").is_none())
        .collect();
    let chosen: Vec<_> = if asks_shard || whole.is_empty() {
        matching.iter().collect()
    } else {
        whole
    };
    chosen
        .iter()
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a number: {other:?}"),
        })
        .sum()
}

/// A connected client with read and write timeouts of [`IO_TIMEOUT`] and
/// Nagle off (so each write is its own segment).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A client whose SO_RCVBUF is set to `rcvbuf` before connecting (so the
/// window it advertises is small from the handshake on).
pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_recv_buffer_size(rcvbuf).unwrap();
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Closes `stream` with a reset (SO_LINGER 0) instead of a FIN.
pub fn reset(stream: TcpStream) {
    let socket = socket2::Socket::from(stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket);
}

/// `payload` as the `frame` protocol puts it on the wire.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `payload` as the `line` protocol puts it on the wire.
pub fn line(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.extend_from_slice(payload);
    out.push(b'\n');
    out
}

/// Reads exactly `len` bytes within `timeout`; panics saying how many came.
pub fn read_exact_timeout(stream: &mut TcpStream, len: usize, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "read {got} of {len} bytes within {timeout:?}"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut out[got..]) {
            Ok(0) => panic!("the server closed after {got} of {len} bytes"),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read {got} of {len} bytes, then: {e}"),
        }
    }
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    out
}

/// Reads one `frame`-protocol reply and returns its payload.
pub fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let header = read_exact_timeout(stream, 4, IO_TIMEOUT);
    let len = u32::from_be_bytes(header.try_into().unwrap()) as usize;
    read_exact_timeout(stream, len, IO_TIMEOUT)
}

/// One `frame` round trip: sends `payload`, expects it back.
pub fn frame_round_trip(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(&frame(payload)).expect("sending a frame");
    assert_eq!(read_frame(stream), payload, "echoed frame");
}

/// Runs `redis-cli -p PORT ARGS` (flags first in `args`, as on its command
/// line), asserts it succeeded, and returns its stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("running redis-cli (make deps installs redis-tools)");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// One `line` round trip: sends `payload` + `\n`, expects the same back.
pub fn line_round_trip(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(&line(payload)).expect("sending a line");
    let reply = read_exact_timeout(stream, payload.len() + 1, IO_TIMEOUT);
    assert_eq!(reply, line(payload), "echoed line");
}

/// One `echo` round trip: sends `payload`, expects it back.
pub fn echo_round_trip(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).expect("sending bytes");
    let reply = read_exact_timeout(stream, payload.len(), IO_TIMEOUT);
    assert_eq!(reply, payload, "echoed bytes");
}

/// How a read ended when the server was expected to close.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// End of stream (FIN).
    Eof,
    /// ECONNRESET.
    Reset,
}

/// Asserts that the server closes `stream` within `within`: a read returns
/// 0 or fails with ECONNRESET. Bytes that arrive first are returned, with
/// how the stream ended and when.
pub fn expect_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Closed, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = within.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "the server did not close the connection within {within:?} ({} bytes came)",
            got.len()
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (got, Closed::Eof, start.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return (got, Closed::Reset, start.elapsed());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("waiting for the server to close: {e}"),
        }
    }
}

/// Whether the server has closed `stream`, without waiting and without
/// consuming anything: `Ok(n)` with `n` bytes pending (0: still open,
/// nothing yet), or `Err` with how it was closed.
pub fn poll_state(stream: &TcpStream) -> Result<usize, Closed> {
    stream.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let state = match stream.peek(&mut buf) {
        Ok(0) => Err(Closed::Eof),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(Closed::Reset),
        Err(e) => panic!("peeking at a client socket: {e}"),
    };
    stream.set_nonblocking(false).unwrap();
    state
}

/// Writes as much of `data` as the socket takes without blocking; returns
/// how much it took (0 when the socket is full). A reset is an error.
pub fn write_nonblocking(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    stream.set_nonblocking(true)?;
    let mut sent = 0;
    let result = loop {
        if sent == data.len() {
            break Ok(sent);
        }
        match stream.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(sent),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    result
}

/// Bytes `stream` has sent that the peer has not acknowledged yet
/// (SIOCOUTQ). On loopback 0 means every byte sent is in the server's
/// socket (or already read by it).
pub fn unacked_bytes(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: the fd is an open TCP socket owned by `stream` for the whole
    // call; SIOCOUTQ (= TIOCOUTQ) writes one c_int through the pointer,
    // which points at a live local.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    assert_eq!(rc, 0, "ioctl(SIOCOUTQ): {}", io::Error::last_os_error());
    queued as usize
}

/// Raises this (test) process's soft RLIMIT_NOFILE to its hard limit, for
/// tests that hold many client sockets; returns the soft limit now.
pub fn raise_own_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    hard
}

/// Sets the soft RLIMIT_NOFILE of process `pid` to `soft`, keeping its
/// hard limit (so an unprivileged test can raise it back); returns the
/// soft limit it had.
pub fn set_fd_soft_limit(pid: i32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new-limit pointer only reads; `old` is a live local
    // the call writes one struct into.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(
        rc,
        0,
        "prlimit(RLIMIT_NOFILE): {}",
        io::Error::last_os_error()
    );
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid, initialised struct that outlives the call;
    // a null old-limit pointer means "don't report".
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(
        rc,
        0,
        "prlimit(RLIMIT_NOFILE): {}",
        io::Error::last_os_error()
    );
    old.rlim_cur
}

/// Half-closes the client's sending side.
pub fn shutdown_write(stream: &TcpStream) {
    stream.shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
}

/// A small fixed-seed PRNG (xorshift64*), so the "random" tests replay
/// exactly.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[low, high]`.
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high - low + 1) as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Like [`run_to_exit`], but runs `wrapper WRAPPER_ARGS... holdfast ARGS`.
pub fn run_via_to_exit(
    wrapper: &std::path::Path,
    wrapper_args: &[&str],
    args: &[&str],
    timeout: Duration,
) -> (Option<ExitStatus>, String, String) {
    let mut command = Command::new(wrapper);
    command
        .args(wrapper_args)
        .arg(env!("CARGO_BIN_EXE_holdfast"))
        .args(args);
    run_command_to_exit(command, timeout)
}

/// A `redis-server` child on a free loopback port, without persistence.
/// Dropping it kills (SIGKILL) and reaps it.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Redis {
    /// Starts one on a port the kernel says is free (bind port 0, release,
    /// start; another port if something took it meanwhile).
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// [`Redis::start`] with more `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        for _ in 0..10 {
            let port = free_port();
            if let Some(redis) = Redis::start_on_with(port, extra) {
                return redis;
            }
        }
        panic!("could not start redis-server on a free port (is it installed? make deps)");
    }

    /// Starts one on `port`; `None` if it did not come up (the port was
    /// taken).
    pub fn start_on(port: u16) -> Option<Redis> {
        Redis::start_on_with(port, &[])
    }

    fn start_on_with(port: u16, extra: &[&str]) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server (make deps installs it)");
        let mut redis = Redis {
            child: Some(child),
            port,
        };
        let up = wait_until(Duration::from_secs(5), || {
            if let Ok(Some(_)) = redis.child.as_mut().unwrap().try_wait() {
                return true;
            }
            TcpStream::connect(redis.addr()).is_ok_and(|stream| {
                let mut client = Resp::from(stream);
                // With --requirepass: NOAUTH, up all the same.
                let reply = client.call(&[b"PING"]);
                reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH")
            })
        });
        let exited = matches!(redis.child.as_mut().unwrap().try_wait(), Ok(Some(_)));
        (up && !exited).then_some(redis)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `127.0.0.1:PORT`, as an upstream is named.
    pub fn name(&self) -> String {
        self.addr().to_string()
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client connected straight to it.
    pub fn client(&self) -> Resp {
        Resp::connect(self.addr())
    }

    /// `connected_clients` of its `INFO clients`, not counting the
    /// connection that asks.
    pub fn connected_clients(&self) -> usize {
        let info = self.client().call(&[b"INFO", b"clients"]);
        let text = String::from_utf8_lossy(&info);
        let line = text
            .lines()
            .find(|l| l.starts_with("connected_clients:"))
            .unwrap_or_else(|| panic!("no connected_clients in {text}"));
        let count: usize = line["connected_clients:".len()..].trim().parse().unwrap();
        count - 1
    }

    /// A counter of its `INFO stats` (`total_connections_received`, ...);
    /// the connection that asks is counted in it.
    pub fn stat(&self, name: &str) -> u64 {
        let info = self.client().call(&[b"INFO", b"stats"]);
        let text = String::from_utf8_lossy(&info);
        let prefix = format!("{name}:");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        line[prefix.len()..].trim().parse().unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A minimal RESP client over a blocking socket with timeouts: commands
/// are encoded as multibulk, replies (RESP2 or RESP3) framed by
/// [`resp3::frame_len`] and returned as raw bytes.
pub struct Resp {
    /// The socket.
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl From<TcpStream> for Resp {
    fn from(stream: TcpStream) -> Resp {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Resp {
            stream,
            buffer: Vec::new(),
        }
    }
}

impl Resp {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Resp {
        Resp::from(connect(addr))
    }

    /// Sends one command without waiting for its reply.
    pub fn send(&mut self, args: &[&[u8]]) {
        let mut bytes = Vec::new();
        holdfast::engine::codec::resp::encode_command(args, &mut bytes);
        self.stream.write_all(&bytes).expect("sending a command");
    }

    /// Reads one whole reply; panics after [`IO_TIMEOUT`].
    pub fn reply(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(len) = resp3::frame_len(&self.buffer) {
                return self.buffer.drain(..len).collect();
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "the connection closed; {} bytes of a reply: {:?}",
                    self.buffer.len(),
                    String::from_utf8_lossy(&self.buffer)
                ),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading a reply: {e}"),
            }
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args);
        self.reply()
    }
}

/// A listener that never accepts, its backlog full, so a connect to it
/// hangs (the kernel drops the SYN) until the connecting side gives up.
/// Keep the value alive while it is used.
pub struct Blackhole {
    _listener: socket2::Socket,
    _queued: Vec<TcpStream>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Blackhole {
    /// Binds 127.0.0.1:0 with a backlog of 0 and fills the backlog.
    pub fn new() -> Blackhole {
        let listener = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        listener
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        for _ in 0..16 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => queued.push(stream),
                Err(_) => break,
            }
        }
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
            "the blackhole's backlog did not fill"
        );
        Blackhole {
            _listener: listener,
            _queued: queued,
            addr,
        }
    }
}

/// The `deny_io_uring` example (a seccomp filter, then `exec`): built by
/// `cargo test --all-targets`; a narrower run builds it here.
pub fn deny_io_uring() -> std::path::PathBuf {
    let profile_dir = std::path::Path::new(env!("CARGO_BIN_EXE_holdfast"))
        .parent()
        .expect("the binary's directory");
    let path = profile_dir.join("examples").join("deny_io_uring");
    if !path.exists() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--quiet", "--example", "deny_io_uring"])
            .args(if cfg!(feature = "uring") {
                &["--features", "uring"][..]
            } else {
                &[]
            })
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("running cargo build --example");
        assert!(
            status.success() && path.exists(),
            "cargo build --example deny_io_uring: {status}; no {}",
            path.display()
        );
    }
    path
}

/// A `--config` file in the temp directory that a test rewrites between
/// reloads; removed on drop.
pub struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    /// A file named after the test process and `name`, holding `contents`.
    pub fn new(name: &str, contents: &str) -> ConfigFile {
        let file = format!("holdfast-{}-{name}.toml", std::process::id());
        let file = ConfigFile(std::env::temp_dir().join(file));
        file.write(contents);
        file
    }

    /// Replaces the contents.
    pub fn write(&self, contents: &str) {
        std::fs::write(&self.0, contents).expect("writing the config file");
    }

    /// The path, as a flag's value.
    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }

    /// The file's SHA-256 as `sha256sum` prints it.
    pub fn sha256(&self) -> String {
        let out = Command::new("sha256sum")
            .arg(&self.0)
            .output()
            .expect("running sha256sum");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .next()
            .expect("a digest")
            .to_string()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
