//! `holdfast chaos proxy`: the binary, driven through its Toxiproxy API
//! with raw HTTP (and, in `toxiproxy_python_client_drives_it`, with
//! Toxiproxy's own Python client), in front of an echo upstream the test
//! runs in threads. Each toxic's effect is measured on real loopback
//! connections.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{self, Closed, Rng, expect_closed, read_exact_timeout};

/// The tests of this module run one at a time: most measure time, and
/// the 1000-connection and multi-megabyte ones would skew the others.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `holdfast chaos proxy` child; killed and reaped on drop.
struct ChaosProxy {
    child: Child,
    api: SocketAddr,
}

impl ChaosProxy {
    fn start(args: &[&str]) -> ChaosProxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["chaos", "proxy", "--api", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning holdfast chaos proxy");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines
            .next()
            .expect("a first stderr line")
            .expect("readable stderr");
        let api = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no API address in `{line}`"));
        // Keep draining stderr so the child never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        ChaosProxy { child, api }
    }

    /// One API request: the status and the body as JSON (`Null` if empty).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, text) = http(self.api, method, path, body.as_bytes());
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value)
    }

    /// Creates proxy `name` to `upstream`; returns its listening address.
    fn proxy(&self, name: &str, upstream: SocketAddr) -> SocketAddr {
        let body = json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string()});
        let (status, proxy) = self.call("POST", "/proxies", Some(body));
        assert_eq!(status, 201, "{proxy}");
        proxy["listen"].as_str().unwrap().parse().unwrap()
    }

    fn toxic(&self, proxy: &str, toxic: Value) {
        let path = format!("/proxies/{proxy}/toxics");
        let (status, body) = self.call("POST", &path, Some(toxic));
        assert_eq!(status, 200, "{body}");
    }

    fn metric(&self, name: &str) -> f64 {
        let (status, text) = http(self.api, "GET", "/metrics", b"");
        assert_eq!(status, 200);
        let line = text.lines().find(|l| l.starts_with(name));
        let value = line.and_then(|l| l.rsplit(' ').next());
        value.and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with a body: status and body text.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = raw.into_bytes();
    request.extend_from_slice(body);
    raw_http(addr, &request)
}

fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = util::connect(addr);
    stream.write_all(request).expect("sending a request");
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .expect("reading a response");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// An echo server on threads: every connection's bytes come back; its
/// FIN is answered with a FIN once everything is echoed.
struct Echo {
    addr: SocketAddr,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || echo(stream));
                if spawned.is_err() {
                    return;
                }
            }
        });
        Echo { addr }
    }
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = util::connect(addr);
    stream.set_nodelay(true).unwrap();
    stream
}

/// The time of one small round trip through `stream`.
fn round_trip(stream: &mut TcpStream, payload: &[u8]) -> Duration {
    let start = Instant::now();
    stream.write_all(payload).unwrap();
    let back = read_exact_timeout(stream, payload.len(), Duration::from_secs(5));
    let took = start.elapsed();
    assert_eq!(back, payload);
    took
}

/// `payload` sent by one thread while this one reads it back: the bytes
/// read, and when the last came.
fn echo_through(addr: SocketAddr, payload: Vec<u8>) -> (Vec<u8>, Duration) {
    let mut stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let len = payload.len();
    let start = Instant::now();
    let sending = std::thread::spawn(move || writer.write_all(&payload));
    let back = read_exact_timeout(&mut stream, len, Duration::from_secs(20));
    let took = start.elapsed();
    sending.join().unwrap().expect("sending the payload");
    (back, took)
}

/// Within 1 ms + 10% of `expected` (the issue's bound for latency).
fn assert_near(what: &str, measured: Duration, expected: Duration) {
    let slack = Duration::from_millis(1) + expected / 10;
    assert!(
        measured + slack >= expected && measured <= expected + slack,
        "{what}: measured {measured:?}, expected {expected:?} ± {slack:?}"
    );
}

#[test]
fn every_byte_intact_both_ways() {
    let _serial = serial();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let addr = proxy.proxy("echo", echo.addr);
    let mut rng = Rng::new(16);
    for len in [1, 1000, 65_536, 3_000_000] {
        let payload = rng.bytes(len);
        let (back, _) = echo_through(addr, payload.clone());
        assert!(back == payload, "{len} bytes came back changed");
    }
    // And through a chain of toxics that cut, delay and pace them.
    proxy.toxic(
        "echo",
        json!({"type": "slicer", "stream": "upstream",
        "attributes": {"average_size": 700, "size_variation": 300, "delay": 10}}),
    );
    proxy.toxic(
        "echo",
        json!({"type": "latency", "attributes": {"latency": 5, "jitter": 5}}),
    );
    proxy.toxic(
        "echo",
        json!({"type": "bandwidth", "attributes": {"rate": 10_000}}),
    );
    let payload = rng.bytes(2_000_000);
    let (back, _) = echo_through(addr, payload.clone());
    assert!(
        back == payload,
        "2 MB through three toxics came back changed"
    );
}

/// A connection through proxy `name` (made here) to an upstream this test
/// holds: the client's socket and the upstream's end.
fn pair(proxy: &ChaosProxy, name: &str) -> (TcpStream, TcpStream) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = proxy.proxy(name, upstream.local_addr().unwrap());
    let client = connect(addr);
    let (far, _) = upstream.accept().expect("the proxy connects upstream");
    far.set_nodelay(true).unwrap();
    far.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    far.set_write_timeout(Some(util::IO_TIMEOUT)).unwrap();
    (client, far)
}

/// How long `payload` written to `from` takes to be read from `to`.
fn one_way(from: &mut TcpStream, to: &mut TcpStream, payload: &[u8]) -> Duration {
    let start = Instant::now();
    from.write_all(payload).unwrap();
    let got = read_exact_timeout(to, payload.len(), Duration::from_secs(5));
    let took = start.elapsed();
    assert_eq!(got, payload);
    took
}

/// `n` one-way delays from `from` to `to`, sorted.
fn delays(n: usize, from: &mut TcpStream, to: &mut TcpStream) -> Vec<Duration> {
    let mut samples: Vec<Duration> = (0..n).map(|_| one_way(from, to, b"ping")).collect();
    samples.sort();
    samples
}

/// Each stream's latency is measured one way, from the bytes written on
/// one side to their read on the other (no echo in between). A loaded
/// machine can only add delay to a sample, so the earliest sample and the
/// median are held to 1 ms + 10%; a sample or two may be late.
#[test]
fn latency_both_ways_and_jitter() {
    let proxy = ChaosProxy::start(&[]);
    let (mut client, mut far) = pair(&proxy, "down");
    let (mut client_up, mut far_up) = pair(&proxy, "up");
    let baseline = delays(9, &mut far, &mut client);
    eprintln!("one way without toxics: {:?} (median)", baseline[4]);
    proxy.toxic(
        "down",
        json!({"type": "latency", "attributes": {"latency": 100}}),
    );
    proxy.toxic(
        "up",
        json!({"type": "latency", "stream": "upstream",
        "attributes": {"latency": 50}}),
    );
    let measured = [
        ("downstream", 100, delays(9, &mut far, &mut client)),
        ("upstream", 50, delays(9, &mut client_up, &mut far_up)),
    ];
    for (stream, latency, samples) in measured {
        let latency = Duration::from_millis(latency);
        eprintln!("latency {latency:?} {stream}: {samples:?}");
        assert_near("earliest", samples[0], latency);
        assert_near("median", samples[4], latency);
    }
    let path = "/proxies/down/toxics/latency_downstream";
    let update = json!({"attributes": {"latency": 100, "jitter": 40}});
    assert_eq!(proxy.call("POST", path, Some(update)).0, 200);
    let samples = delays(30, &mut far, &mut client);
    let slack = Duration::from_millis(1) + Duration::from_millis(100) / 10;
    let high = Duration::from_millis(140) + slack;
    let within = samples.iter().filter(|s| **s <= high).count();
    eprintln!(
        "latency 100 ms jitter 40 ms: {:?} to {:?}, {within} of 30 within 140 ms + {slack:?}",
        samples[0], samples[29]
    );
    assert!(
        samples[0] + slack >= Duration::from_millis(60),
        "{samples:?} under 100 - 40 ms"
    );
    assert!(samples[15] <= high, "median over 100 + 40 ms: {samples:?}");
    assert!(
        within >= 24,
        "{} of 30 over 100 + 40 ms: {samples:?}",
        30 - within
    );
    assert!(
        samples[26] - samples[3] >= Duration::from_millis(20),
        "no jitter: {samples:?}"
    );
}

/// Bytes/s through `to` while `from` (on another thread) writes `len`
/// bytes as fast as it can: measured from the first read to the last.
fn throughput(from: &mut TcpStream, to: &mut TcpStream, len: usize) -> f64 {
    let payload = Rng::new(len as u64).bytes(len);
    let mut writer = from.try_clone().unwrap();
    let expected = payload.clone();
    let sending = std::thread::spawn(move || writer.write_all(&payload));
    let mut got = Vec::with_capacity(len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = None;
    to.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while got.len() < len {
        let n = to.read(&mut buf).expect("reading the paced bytes");
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        first.get_or_insert((Instant::now(), n));
    }
    let (start, skip) = first.unwrap();
    sending.join().unwrap().expect("writing");
    assert!(got == expected, "the paced bytes changed");
    (len - skip) as f64 / start.elapsed().as_secs_f64()
}

#[test]
fn bandwidth_within_ten_percent() {
    let proxy = ChaosProxy::start(&[]);
    let (mut client, mut far) = pair(&proxy, "down");
    let (mut client_up, mut far_up) = pair(&proxy, "up");
    // 400 KB/s: 600 KB take 1.5 s.
    proxy.toxic(
        "down",
        json!({"type": "bandwidth", "attributes": {"rate": 400}}),
    );
    proxy.toxic(
        "up",
        json!({"type": "bandwidth", "stream": "upstream",
        "attributes": {"rate": 400}}),
    );
    let rates = [
        ("downstream", throughput(&mut far, &mut client, 600_000)),
        ("upstream", throughput(&mut client_up, &mut far_up, 600_000)),
    ];
    for (stream, rate) in rates {
        let rate = rate / 1000.0;
        eprintln!("bandwidth 400 KB/s {stream}: {rate:.1} KB/s over 1.5 s");
        assert!((360.0..=440.0).contains(&rate), "{stream}: {rate:.1} KB/s");
    }
}

#[test]
fn slicer_cuts_into_small_segments() {
    let _serial = serial();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let addr = proxy.proxy("sliced", echo.addr);
    // Pieces of at most 8 + 2 bytes, 100 ms apart: each read sees one.
    proxy.toxic(
        "sliced",
        json!({"type": "slicer",
        "attributes": {"average_size": 8, "size_variation": 2, "delay": 100_000}}),
    );
    let mut stream = connect(addr);
    let payload = Rng::new(3).bytes(60);
    let start = Instant::now();
    stream.write_all(&payload).unwrap();
    let mut back = Vec::new();
    let mut reads = Vec::new();
    let mut buf = [0u8; 4096];
    while back.len() < payload.len() {
        let n = stream.read(&mut buf).expect("reading slices");
        assert!(n > 0, "closed after {} bytes", back.len());
        reads.push(n);
        back.extend_from_slice(&buf[..n]);
    }
    let took = start.elapsed();
    eprintln!("slicer 8±2 bytes 100 ms apart: reads of {reads:?} in {took:?}");
    assert_eq!(back, payload);
    // A reader held off the CPU for 100 ms sees two pieces in one read;
    // that may happen once. Pieces over 10 bytes would show in most reads.
    let small = reads.iter().filter(|&&n| n <= 10).count();
    assert!(small + 1 >= reads.len(), "reads over 10 bytes: {reads:?}");
    assert!(reads.len() >= 5, "only {} reads", reads.len());
    // At least 6 pieces, 100 ms apart.
    assert!(took >= Duration::from_millis(500), "{took:?}");
}

#[test]
fn reset_peer_and_limit_data_end_the_connection() {
    let _serial = serial();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let reset = proxy.proxy("reset", echo.addr);
    let limited = proxy.proxy("limited", echo.addr);
    proxy.toxic(
        "reset",
        json!({"type": "reset_peer", "attributes": {"timeout": 300}}),
    );
    proxy.toxic(
        "limited",
        json!({"type": "limit_data", "attributes": {"bytes": 1000}}),
    );

    let mut stream = connect(reset);
    stream.write_all(b"hello").unwrap();
    let (bytes, how, after) = expect_closed(&mut stream, Duration::from_secs(3));
    eprintln!("reset_peer 300 ms: {how:?} after {after:?}");
    assert_eq!(how, Closed::Reset);
    assert!(bytes.is_empty(), "{bytes:?}");
    assert!(after >= Duration::from_millis(290), "reset after {after:?}");
    assert!(
        after <= Duration::from_millis(1000),
        "reset after {after:?}"
    );

    let mut stream = connect(limited);
    let payload = Rng::new(5).bytes(5000);
    stream.write_all(&payload).unwrap();
    let (bytes, how, _) = expect_closed(&mut stream, Duration::from_secs(3));
    eprintln!("limit_data 1000: {} bytes, then {how:?}", bytes.len());
    assert_eq!(bytes, payload[..1000]);
}

#[test]
fn timeout_stalls_and_closes_after_its_time() {
    let _serial = serial();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let stalled = proxy.proxy("stalled", echo.addr);
    let timed = proxy.proxy("timed", echo.addr);
    proxy.toxic(
        "stalled",
        json!({"type": "timeout", "attributes": {"timeout": 0}}),
    );
    proxy.toxic(
        "timed",
        json!({"type": "timeout", "attributes": {"timeout": 500}}),
    );

    let mut stream = connect(stalled);
    stream.write_all(b"anyone there?").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        util::poll_state(&stream),
        Ok(0),
        "a black hole answers nothing and stays open"
    );

    let start = Instant::now();
    let mut stream = connect(timed);
    stream.write_all(b"anyone there?").unwrap();
    let (bytes, how, _) = expect_closed(&mut stream, Duration::from_secs(3));
    let after = start.elapsed();
    eprintln!("timeout 500 ms: {how:?} after {after:?}");
    assert!(bytes.is_empty(), "{bytes:?}");
    assert!(
        after >= Duration::from_millis(490),
        "closed after {after:?}"
    );
    assert!(
        after <= Duration::from_millis(1500),
        "closed after {after:?}"
    );

    // Removing the toxic lets bytes through again on new connections.
    let (status, _) = proxy.call("DELETE", "/proxies/stalled/toxics/timeout_downstream", None);
    assert_eq!(status, 204);
    let mut stream = connect(stalled);
    round_trip(&mut stream, b"back");
}

#[test]
fn slow_close_delays_the_close() {
    let _serial = serial();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let addr = proxy.proxy("slow", echo.addr);
    let closing = |addr| {
        let mut stream = connect(addr);
        round_trip(&mut stream, b"bye");
        stream.shutdown(Shutdown::Write).unwrap();
        let (_, how, after) = expect_closed(&mut stream, Duration::from_secs(3));
        (how, after)
    };
    let (how, quick) = closing(addr);
    assert_eq!(how, Closed::Eof);
    proxy.toxic(
        "slow",
        json!({"type": "slow_close", "attributes": {"delay": 600}}),
    );
    let (how, slow) = closing(addr);
    eprintln!("slow_close 600 ms: close seen after {slow:?} (without: {quick:?})");
    assert_eq!(how, Closed::Eof);
    assert!(quick < Duration::from_millis(200), "{quick:?}");
    assert!(slow >= Duration::from_millis(590), "{slow:?}");
    assert!(slow <= Duration::from_millis(1500), "{slow:?}");
}

#[test]
fn disabled_proxy_refuses_connections() {
    let _serial = serial();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let addr = proxy.proxy("door", echo.addr);
    let mut open = connect(addr);
    round_trip(&mut open, b"in");
    let (status, body) = proxy.call("POST", "/proxies/door", Some(json!({"enabled": false})));
    assert_eq!(status, 200);
    assert_eq!(body["enabled"], false);
    let refused = TcpStream::connect(addr).map(|_| ()).map_err(|e| e.kind());
    assert_eq!(refused, Err(io::ErrorKind::ConnectionRefused));
    let (_, how, _) = expect_closed(&mut open, Duration::from_secs(2));
    eprintln!("disabled: new connections refused, the open one {how:?}");
    // Enabled again, on the same address.
    let (status, body) = proxy.call("POST", "/proxies/door", Some(json!({"enabled": true})));
    assert_eq!(
        (status, body["listen"].as_str()),
        (200, Some(&*addr.to_string()))
    );
    round_trip(&mut connect(addr), b"in again");
}

#[test]
fn toxicity_decides_per_connection() {
    let _serial = serial();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let addr = proxy.proxy("maybe", echo.addr);
    proxy.toxic(
        "maybe",
        json!({"type": "latency", "toxicity": 0.0,
        "attributes": {"latency": 300}}),
    );
    let slow = |addr| {
        let streams: Vec<_> = (0..10).map(|_| connect(addr)).collect();
        let times = streams.into_iter().map(|mut s| round_trip(&mut s, b"?"));
        times.filter(|t| *t >= Duration::from_millis(300)).count()
    };
    assert_eq!(slow(addr), 0, "toxicity 0 delayed a connection");
    let update = json!({"toxicity": 1.0});
    let path = "/proxies/maybe/toxics/latency_downstream";
    assert_eq!(proxy.call("POST", path, Some(update)).0, 200);
    assert_eq!(slow(addr), 10, "toxicity 1 left a connection alone");
}

#[test]
fn thousand_connections_at_once() {
    let _serial = serial();
    util::raise_own_fd_limit();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let addr = proxy.proxy("many", echo.addr);
    let mut rng = Rng::new(1000);
    let mut streams: Vec<(TcpStream, Vec<u8>)> = (0..1000)
        .map(|_| {
            let len = rng.range(1, 8000);
            (connect(addr), rng.bytes(len))
        })
        .collect();
    for (stream, payload) in &mut streams {
        stream.write_all(payload).unwrap();
    }
    assert!(
        util::wait_until(Duration::from_secs(5), || {
            proxy.metric("holdfast_chaos_proxy_connections_open") == 1000.0
        }),
        "1000 connections open at once"
    );
    for (stream, payload) in &mut streams {
        let back = read_exact_timeout(stream, payload.len(), Duration::from_secs(10));
        assert!(back == *payload);
    }
    drop(streams);
    assert!(util::wait_until(Duration::from_secs(5), || {
        proxy.metric("holdfast_chaos_proxy_connections_open") == 0.0
    }));
}

#[test]
fn max_conns_closes_the_excess() {
    let _serial = serial();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&["--max-conns", "5"]);
    let addr = proxy.proxy("few", echo.addr);
    let mut held: Vec<_> = (0..5).map(|_| connect(addr)).collect();
    for stream in &mut held {
        round_trip(stream, b"in");
    }
    let mut over = connect(addr);
    let (bytes, _, _) = expect_closed(&mut over, Duration::from_secs(2));
    assert!(bytes.is_empty());
    let rejected = "holdfast_chaos_proxy_connections_rejected_total{reason=\"max_conns\"}";
    assert_eq!(proxy.metric(rejected), 1.0);
    held.pop();
    assert!(util::wait_until(Duration::from_secs(2), || {
        proxy.metric("holdfast_chaos_proxy_connections_open") == 4.0
    }));
    round_trip(&mut connect(addr), b"room again");
}

#[test]
fn bad_api_input_gets_a_4xx_json_error() {
    let _serial = serial();
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let addr = proxy.proxy("p", echo.addr);
    proxy.toxic(
        "p",
        json!({"type": "latency", "attributes": {"latency": 1}}),
    );
    let duplicate = format!(r#"{{"name":"p","upstream":"{}"}}"#, echo.addr);
    let cases: Vec<(&str, &str, &str, u16, &str)> = vec![
        ("POST", "/proxies", "{", 400, "bad request body"),
        (
            "POST",
            "/proxies",
            r#"{"upstream":"127.0.0.1:1"}"#,
            400,
            "missing required field: name",
        ),
        (
            "POST",
            "/proxies",
            r#"{"name":"q"}"#,
            400,
            "missing required field: upstream",
        ),
        ("POST", "/proxies", &duplicate, 409, "proxy already exists"),
        ("GET", "/proxies/nope", "", 404, "proxy not found"),
        (
            "POST",
            "/proxies/p/toxics",
            r#"{"type":"nope"}"#,
            400,
            "invalid toxic type",
        ),
        (
            "POST",
            "/proxies/p/toxics",
            r#"{"type":"latency","stream":"sideways"}"#,
            400,
            "stream was invalid",
        ),
        (
            "POST",
            "/proxies/p/toxics",
            r#"{"type":"latency"}"#,
            409,
            "toxic already exists",
        ),
        (
            "POST",
            "/proxies/p/toxics",
            r#"{"type":"slicer","attributes":{"delay":"x"}}"#,
            400,
            "bad request body",
        ),
        ("GET", "/proxies/p/toxics/nope", "", 404, "toxic not found"),
        (
            "DELETE",
            "/proxies/p/toxics/nope",
            "",
            404,
            "toxic not found",
        ),
        (
            "POST",
            "/populate",
            r#"[{"name":"r"}]"#,
            400,
            "missing required field: upstream",
        ),
        ("DELETE", "/version", "", 405, "method not allowed"),
        ("GET", "/nowhere", "", 404, "not found"),
    ];
    for (method, path, body, status, message) in cases {
        let (got, text) = http(proxy.api, method, path, body.as_bytes());
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} {body}: not JSON ({e}): {text}"));
        assert_eq!(got, status, "{method} {path} {body}: {text}");
        assert_eq!(value["status"], status, "{text}");
        let error = value["error"].as_str().unwrap_or("");
        assert!(error.contains(message), "{method} {path} {body}: {text}");
    }
    let (status, _) = raw_http(proxy.api, b"NONSENSE\r\n\r\n");
    assert_eq!(status, 400);
    let (status, _) = raw_http(proxy.api, &[b'x'; 20_000]);
    assert_eq!(status, 431);
    // The proxy goes on: its toxic unchanged, its bytes forwarded.
    let (_, toxics) = proxy.call("GET", "/proxies/p/toxics", None);
    assert_eq!(toxics.as_array().map(Vec::len), Some(1), "{toxics}");
    round_trip(&mut connect(addr), b"still here");
    // And /populate works when the input is good.
    let body = json!([{"name": "p", "listen": addr.to_string(), "upstream": echo.addr.to_string()},
        {"name": "r", "listen": "127.0.0.1:0", "upstream": echo.addr.to_string()}]);
    let (status, made) = proxy.call("POST", "/populate", Some(body));
    assert_eq!(status, 201, "{made}");
    let listen = made["proxies"][1]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    round_trip(&mut connect(listen), b"populated");
    let (_, proxies) = proxy.call("GET", "/proxies", None);
    assert_eq!(
        proxies["p"]["toxics"].as_array().map(Vec::len),
        Some(1),
        "{proxies}"
    );
}

#[test]
fn bad_flag_exits_2_naming_it() {
    let _serial = serial();
    let (status, _, stderr) = util::run_to_exit(
        &["chaos", "proxy", "--max-conns", "0"],
        Duration::from_secs(10),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--max-conns"), "{stderr}");
}

/// The Python interpreter of the venv `make deps` installs Toxiproxy's
/// client into.
const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyclient/bin/python");

#[test]
fn toxiproxy_python_client_drives_it() {
    let _serial = serial();
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} is missing: run `make deps` (it installs toxiproxy-python)"
    );
    let echo = Echo::start();
    let proxy = ChaosProxy::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/toxiproxy_client.py");
    let output = Command::new(PYTHON)
        .args([
            script,
            &proxy.api.port().to_string(),
            &echo.addr.to_string(),
        ])
        .output()
        .expect("running the Python client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(output.status.success(), "the client's script failed");
    assert!(stdout.contains("all steps passed"), "{stdout}");
}
