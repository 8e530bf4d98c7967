//! The io_uring driver, on the scenarios of docs/io_uring.md, "Testing": a
//! close with a receive pending, slot reuse under randomised close timing, a
//! provided buffer pool far too small, short sends, a reset in the middle of
//! a send, shutdown with operations in flight, a tiny completion queue,
//! wake-ups, and the fallback to epoll when seccomp denies io_uring.
//!
//! The rest of the suite already runs on io_uring in a `--features uring`
//! build (it is the default backend there); these tests name the backend
//! explicitly and check the driver's own counters too. Debug builds of the
//! driver panic (the process exits 70) when an operation completes twice,
//! a completion names no live operation, or anything is still in flight
//! when a shard exits; so "the server still serves", "it exits 0" and
//! "stray completions stay 0" are real checks here.

use crate::util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use util::{Closed, Rng, Server, echo_round_trip, expect_closed, frame, frame_round_trip};

/// The backend every test here asks for.
const BACKEND: &str = "uring";
const CLOSED: &str = "holdfast_connections_closed_total";
const OPEN: &str = "holdfast_connections_open";
const ACCEPTED: &str = "holdfast_connections_accepted_total";
const UNACCOUNTED: &str = "holdfast_fd_unaccounted";
const BACKEND_INFO: &str = "holdfast_backend_info";
const ENTERS: &str = "holdfast_uring_enters_total";
const ENOBUFS: &str = "holdfast_uring_enobufs_total";
const CQ_OVERFLOW: &str = "holdfast_uring_cq_overflow_total";
const SHORT_SENDS: &str = "holdfast_uring_short_sends_total";
const STRAY: &str = "holdfast_uring_stray_completions_total";

/// A server under test. If the test fails, its stderr is printed, so a
/// driver panic (and the tracker's message) shows next to the failure.
struct Running(Server);

impl Deref for Running {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- holdfast stderr ---\n{}\n--- end of holdfast stderr ---",
                self.0.stderr_text()
            );
        }
    }
}

/// `holdfast serve --backend uring ARGS`, checked to run on that backend.
fn start(args: &[&str]) -> Running {
    let mut all = vec!["--backend", BACKEND];
    all.extend_from_slice(args);
    let server = Running(Server::start(&all));
    assert_eq!(
        server.metric(BACKEND_INFO, &[("backend", BACKEND)]),
        1.0,
        "started with --backend {BACKEND}"
    );
    server
}

/// A driver counter, summed over the shards.
fn counter(server: &Server, name: &str) -> f64 {
    server.metric(name, &[])
}

/// The checks every test ends with: the process is alive (no tracker
/// panic), no completion was stray, and every descriptor is accounted for
/// again.
fn assert_sound(server: &mut Running) {
    if let Some(status) = server.wait_exit(Duration::ZERO) {
        panic!("the server exited ({status}) during the test");
    }
    assert_eq!(counter(server, STRAY), 0.0, "stray completions");
    server.wait_metric(UNACCOUNTED, &[], 0.0, Duration::from_secs(3));
}

/// Whether `got` is `expected`; panics naming the first differing byte.
fn assert_same_bytes(got: &[u8], expected: &[u8], what: &str) {
    if let Some(at) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: differs from what was sent at byte {at}");
    }
    assert_eq!(got.len(), expected.len(), "{what}: length");
}

/// A client that has sent until the server stopped reading it: its
/// replies pile up unread (4 KiB receive buffer), so the server's output
/// ring is full and a send of it is in flight or waiting.
fn stuck_reader(addr: SocketAddr) -> TcpStream {
    let mut client = util::connect_small_rcvbuf(addr, 4096);
    let chunk = vec![0x11u8; 32 * 1024];
    let start = Instant::now();
    loop {
        if util::write_nonblocking(&mut client, &chunk).unwrap() == 0 {
            thread::sleep(Duration::from_millis(50));
            if util::write_nonblocking(&mut client, &chunk).unwrap() == 0 {
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never stalled");
    }
    client
}

#[test]
fn backend_info_names_the_driver() {
    // The default in a uring build, on a kernel that allows it.
    let server = Running(Server::start(&["--protocol", "echo"]));
    assert_eq!(
        server.metric(BACKEND_INFO, &[("backend", "uring")]),
        1.0,
        "the default backend of a uring build"
    );
    assert_eq!(server.metric(BACKEND_INFO, &[("backend", "epoll")]), 0.0);
    assert!(
        !server.stderr_text().contains("falling back"),
        "a fallback on a kernel that allows io_uring"
    );
    echo_round_trip(&mut server.connect(), b"default backend");
    drop(server);

    let mut server = start(&["--protocol", "echo"]);
    echo_round_trip(&mut server.connect(), b"uring backend");
    assert!(counter(&server, ENTERS) > 0.0, "no io_uring_enter counted");
    assert_sound(&mut server);
    drop(server);

    let server = Running(Server::start(&["--protocol", "echo", "--backend", "epoll"]));
    assert_eq!(server.metric(BACKEND_INFO, &[("backend", "epoll")]), 1.0);
    assert_eq!(server.metric(BACKEND_INFO, &[("backend", "uring")]), 0.0);
    echo_round_trip(&mut server.connect(), b"epoll backend");
}

#[test]
fn check_probes_the_backend() {
    for (backend, expected) in [
        (None, "settings ok; backend uring"),
        (Some("uring"), "settings ok; backend uring"),
        (Some("epoll"), "settings ok; backend epoll"),
    ] {
        let mut args = vec!["serve", "--check", "--listen", "127.0.0.1:0"];
        if let Some(backend) = backend {
            args.extend(["--backend", backend]);
        }
        let (status, out, err) = util::run_to_exit(&args, Duration::from_secs(10));
        let status = status.expect("serve --check returned within 10 s");
        assert!(
            status.success(),
            "{args:?}: {status}\nstdout: {out}\nstderr: {err}"
        );
        let lines: Vec<&str> = out.lines().chain(err.lines()).collect();
        assert_eq!(
            lines.iter().filter(|l| l.contains(expected)).count(),
            1,
            "{args:?}: no line {expected:?} in {lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("falling back")),
            "{args:?}: {lines:?}"
        );
    }
    // The driver's settings are validated too.
    let (status, out, err) = util::run_to_exit(
        &["serve", "--check", "--uring-buffers", "100"],
        Duration::from_secs(10),
    );
    assert!(
        !status.expect("returned").success(),
        "a pool of 100 buffers (not a power of two) passed: {out}{err}"
    );
    assert!(err.contains("--uring-buffers"), "stderr: {err}");
}

#[test]
fn idle_timeout_closes_connections_with_a_receive_pending() {
    const SILENT: usize = 16;
    const SPOKE: usize = 8;
    let mut server = start(&["--protocol", "echo", "--idle-timeout", "200ms"]);
    let baseline = server.fd_baseline();
    // Each holds a multishot receive that never completes: the silent ones
    // from the start, the others after one round trip.
    let mut clients: Vec<TcpStream> = (0..SILENT).map(|_| server.connect()).collect();
    for i in 0..SPOKE {
        let mut client = server.connect();
        echo_round_trip(&mut client, format!("hello {i}").as_bytes());
        clients.push(client);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let (bytes, how, _) = expect_closed(client, Duration::from_secs(3));
        assert!(bytes.is_empty(), "client {i} got {} bytes", bytes.len());
        assert_eq!(how, Closed::Eof, "client {i}: an orderly close");
    }
    let total = (SILENT + SPOKE) as f64;
    server.wait_metric(
        CLOSED,
        &[("reason", "idle_timeout")],
        total,
        Duration::from_secs(2),
    );
    assert_eq!(server.metric(CLOSED, &[]), total, "closed for any reason");
    server.wait_metric(OPEN, &[], 0.0, Duration::from_secs(2));
    assert_sound(&mut server);
    server.assert_fds_return(baseline, Duration::from_secs(3));

    // The closes left the driver able to serve.
    let mut client = server.connect();
    for i in 0..10 {
        echo_round_trip(&mut client, format!("after the timeouts {i}").as_bytes());
    }
    assert_sound(&mut server);
}

/// How a short-lived client of [`churn_reuses_slots_without_crossed_completions`]
/// ends.
fn short_lived(addr: SocketAddr, rng: &mut Rng) {
    let mut client = util::connect(addr);
    let len = rng.range(1, 6_000);
    let payload = rng.bytes(len);
    let wire = frame(&payload);
    let pause = Duration::from_micros(rng.range(0, 2_000) as u64);
    match rng.range(0, 6) {
        // A full round trip, then an orderly close.
        0 => frame_round_trip(&mut client, &payload),
        // A request, then FIN without waiting for the reply.
        1 => client.write_all(&wire).unwrap(),
        // A request, then a reset at once.
        2 => {
            client.write_all(&wire).unwrap();
            util::reset(client);
        }
        // A request, then a reset a moment later (the reply may be on its
        // way).
        3 => {
            client.write_all(&wire).unwrap();
            thread::sleep(pause);
            util::reset(client);
        }
        // Half a request, then a reset or a FIN.
        4 => {
            client.write_all(&wire[..wire.len() / 2]).unwrap();
            thread::sleep(pause);
            if rng.range(0, 1) == 0 {
                util::reset(client);
            }
        }
        // Part of the reply read, then a reset.
        5 => {
            client.write_all(&wire).unwrap();
            let mut some = vec![0u8; rng.range(1, wire.len())];
            let _ = client.read(&mut some);
            util::reset(client);
        }
        // Nothing sent: a reset right after the handshake.
        _ => {
            thread::sleep(pause);
            util::reset(client);
        }
    }
}

#[test]
fn churn_reuses_slots_without_crossed_completions() {
    const CHURNERS: usize = 4;
    const SHORT_EACH: usize = 75;
    const LONG: usize = 3;
    // One shard: every short connection reuses a slot of the same slab, and
    // the long-lived ones share the ring with them.
    let mut server = start(&["--protocol", "frame", "--threads", "1"]);
    let baseline = server.fd_baseline();
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicUsize>> =
        Arc::new((0..LONG).map(|_| AtomicUsize::new(0)).collect());

    let long: Vec<_> = (0..LONG)
        .map(|l| {
            let stop = stop.clone();
            let progress = progress.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(0x10a9_0000 + l as u64);
                let mut client = util::connect(addr);
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Up to three frames in flight at once.
                    let payloads: Vec<Vec<u8>> = (0..rng.range(1, 3))
                        .map(|_| {
                            let len = rng.range(1, 20_000);
                            rng.bytes(len)
                        })
                        .collect();
                    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
                    client.write_all(&wire).unwrap();
                    for (i, payload) in payloads.iter().enumerate() {
                        let reply = util::read_frame(&mut client);
                        assert_same_bytes(
                            &reply,
                            payload,
                            &format!("long-lived {l}, round {rounds}, frame {i}"),
                        );
                    }
                    rounds += 1;
                    progress[l].store(rounds, Ordering::Relaxed);
                }
                (rounds, client)
            })
        })
        .collect();

    let churners: Vec<_> = (0..CHURNERS)
        .map(|c| {
            thread::spawn(move || {
                let mut rng = Rng::new(0xc4u64 << 32 | c as u64);
                for _ in 0..SHORT_EACH {
                    short_lived(addr, &mut rng);
                }
            })
        })
        .collect();
    for churner in churners {
        churner.join().expect("a short-lived client");
    }
    // The long-lived ones keep going after the storm until each has made
    // ten rounds (however fast the storm went on a loaded machine).
    let ten_each = util::wait_until(Duration::from_secs(10), || {
        progress
            .iter()
            .all(|rounds| rounds.load(Ordering::Relaxed) >= 10)
    });
    stop.store(true, Ordering::Relaxed);
    assert!(ten_each, "a long-lived client stalled: {progress:?}");
    let mut kept = Vec::new();
    for (l, thread) in long.into_iter().enumerate() {
        let (rounds, client) = thread.join().expect("a long-lived client");
        assert!(rounds >= 10, "long-lived {l}: only {rounds} rounds");
        kept.push(client);
    }
    for (l, client) in kept.iter_mut().enumerate() {
        frame_round_trip(client, format!("long-lived {l} at the end").as_bytes());
    }

    // Every short connection the server took is closed; the long ones stay.
    let short = (CHURNERS * SHORT_EACH) as f64;
    let mut seen = (0.0, 0.0, 0.0);
    let settled = util::wait_until(Duration::from_secs(5), || {
        let scrape = server.scrape();
        seen = (
            util::metric(&scrape, ACCEPTED, &[]),
            util::metric(&scrape, CLOSED, &[]),
            util::metric(&scrape, OPEN, &[]),
        );
        seen.2 == LONG as f64 && seen.1 == seen.0 - LONG as f64
    });
    assert!(
        settled,
        "(accepted, closed, open) = {seen:?}, expected open {LONG} and the rest closed"
    );
    // A client reset before its accept may never reach the server.
    assert!(
        seen.0 <= short + LONG as f64 && seen.0 >= short * 0.9,
        "accepted {} of {short} short and {LONG} long connections",
        seen.0
    );
    assert_sound(&mut server);
    drop(kept);
    server.wait_metric(OPEN, &[], 0.0, Duration::from_secs(2));
    assert_sound(&mut server);
    server.assert_fds_return(baseline, Duration::from_secs(3));
}

/// CONNS concurrent echo clients each send 64 KiB in random chunks (while a
/// second thread reads) through a pool of `buffers` provided buffers of
/// 512 bytes: the multishot receives keep running dry. The clients start
/// writing while the server is stopped, so that every connection has bytes
/// waiting when it runs again: more than the pool holds at once (a loaded
/// machine could otherwise serve them few enough at a time that the pool
/// never ran dry: it once did in a CI run).
fn tiny_buffer_pool(buffers: &str, seed: u64) {
    const CONNS: usize = 24;
    const BYTES: usize = 64 * 1024;
    let mut server = start(&[
        "--protocol",
        "echo",
        "--uring-buffers",
        buffers,
        "--uring-buffer-size",
        "512",
    ]);
    let addr = server.addr;
    let ready = Arc::new(Barrier::new(CONNS + 1));
    let clients: Vec<_> = (0..CONNS)
        .map(|c| {
            let ready = ready.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(seed + c as u64);
                let data = rng.bytes(BYTES);
                let mut client = util::connect(addr);
                let mut writer = client.try_clone().unwrap();
                let sent = data.clone();
                ready.wait();
                let writing = thread::spawn(move || {
                    let mut at = 0;
                    while at < sent.len() {
                        let size = rng.range(1, 6_000).min(sent.len() - at);
                        writer.write_all(&sent[at..at + size]).unwrap();
                        at += size;
                    }
                });
                let got = util::read_exact_timeout(&mut client, BYTES, Duration::from_secs(20));
                writing.join().expect("writer");
                assert_same_bytes(&got, &data, &format!("client {c}"));
            })
        })
        .collect();
    // Every connection accepted (its receive posted), then stopped while
    // the clients write.
    server.wait_metric(OPEN, &[], CONNS as f64, Duration::from_secs(5));
    server.pause();
    ready.wait();
    thread::sleep(Duration::from_millis(300));
    server.resume();
    for (c, client) in clients.into_iter().enumerate() {
        client
            .join()
            .unwrap_or_else(|_| panic!("client {c} failed"));
    }
    let enobufs = counter(&server, ENOBUFS);
    assert!(
        enobufs > 0.0,
        "{CONNS} clients through {buffers} buffer(s) never emptied the pool"
    );
    // Each receive posted again waits for a buffer that is back, so the
    // pool runs dry about once per buffer filled (measured: about 3000 for
    // these 3072 buffers' worth). Posting every waiting receive at once made
    // the kernel end most of them again at once: 33000 to 70000 here.
    let filled = (CONNS * BYTES / 512) as f64;
    assert!(
        enobufs <= 2.0 * filled,
        "{enobufs} receives ended for lack of buffers for {filled} buffers' worth of \
         bytes: re-posting is spinning"
    );
    server.wait_metric(OPEN, &[], 0.0, Duration::from_secs(2));
    assert_sound(&mut server);
    // And the pool still serves once it has its buffers back.
    echo_round_trip(&mut server.connect(), b"the pool is whole again");
}

#[test]
fn one_provided_buffer_for_24_connections() {
    tiny_buffer_pool("1", 0xb0f_0001);
}

#[test]
fn two_provided_buffers_for_24_connections() {
    tiny_buffer_pool("2", 0xb0f_0002);
}

#[test]
fn short_sends_to_a_slow_reader_lose_nothing() {
    const BYTES: usize = 4 << 20;
    let mut server = start(&["--protocol", "echo"]);
    let mut client = util::connect_small_rcvbuf(server.addr, 4096);
    let data = Rng::new(0x5e_0d5).bytes(BYTES);
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let written = Arc::new(AtomicUsize::new(0));
    let progress = written.clone();
    let writing = thread::spawn(move || {
        for chunk in sent.chunks(64 * 1024) {
            writer.write_all(chunk).unwrap();
            progress.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    // Read nothing until the writer is stuck: the server has stopped
    // reading, so its output ring is full and a send of it waits on a full
    // socket. The reads below then free less room than that send holds:
    // short sends by construction, not by the relative speed of the two
    // sides (a loaded machine made them vanish once).
    let mut last = (0, Instant::now());
    while last.1.elapsed() < Duration::from_millis(300) {
        thread::sleep(Duration::from_millis(20));
        let now = written.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let start = Instant::now();
    let mut got = Vec::with_capacity(BYTES);
    let mut buf = vec![0u8; 8 * 1024];
    let mut next_pause = 0;
    while got.len() < BYTES {
        let want = (BYTES - got.len()).min(buf.len());
        match client.read(&mut buf[..want]) {
            Ok(0) => panic!("the server closed after {} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading after {} bytes: {e}", got.len()),
        }
        // Slow: a pause every 128 KiB keeps the server's socket full.
        if got.len() >= next_pause {
            next_pause += 128 * 1024;
            thread::sleep(Duration::from_millis(2));
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {BYTES} bytes in 60 s",
            got.len()
        );
    }
    writing.join().expect("writer");
    assert_same_bytes(&got, &data, "the echo");
    assert!(
        counter(&server, SHORT_SENDS) > 0.0,
        "4 MiB to a 4 KiB receive window without one short send"
    );
    drop(client);
    server.wait_metric(OPEN, &[], 0.0, Duration::from_secs(2));
    assert_sound(&mut server);
}

#[test]
fn peer_reset_with_a_send_waiting_is_counted_and_cleaned_up() {
    const CLIENTS: usize = 8;
    let mut server = start(&["--protocol", "echo"]);
    let baseline = server.fd_baseline();
    let stuck: Vec<TcpStream> = (0..CLIENTS).map(|_| stuck_reader(server.addr)).collect();
    assert_eq!(server.metric(OPEN, &[]), CLIENTS as f64);
    for client in stuck {
        util::reset(client);
    }
    server.wait_metric(
        CLOSED,
        &[("reason", "reset")],
        CLIENTS as f64,
        Duration::from_secs(3),
    );
    assert_eq!(
        server.metric(CLOSED, &[]),
        CLIENTS as f64,
        "closed for any reason"
    );
    server.wait_metric(OPEN, &[], 0.0, Duration::from_secs(2));
    assert_sound(&mut server);
    server.assert_fds_return(baseline, Duration::from_secs(3));
    echo_round_trip(&mut server.connect(), b"still serving");
}

#[test]
fn peer_reset_while_replies_stream_is_counted_and_cleaned_up() {
    const CLIENTS: usize = 20;
    let mut server = start(&["--protocol", "echo"]);
    let baseline = server.fd_baseline();
    let mut observer = server.connect();
    echo_round_trip(&mut observer, b"before");
    let request = vec![0xabu8; 512 * 1024];
    for _ in 0..CLIENTS {
        let mut client = util::connect(server.addr);
        let mut sent = 0;
        let start = Instant::now();
        // Enough that the reply is under way and more is coming.
        while sent < 128 * 1024 && start.elapsed() < Duration::from_millis(500) {
            sent += util::write_nonblocking(&mut client, &request[sent..]).unwrap();
        }
        let mut first = [0u8; 1000];
        client
            .read_exact(&mut first)
            .expect("the start of the echo");
        util::reset(client);
    }
    echo_round_trip(&mut observer, b"after");
    server.wait_metric(OPEN, &[], 1.0, Duration::from_secs(3));
    let reset = server.metric(CLOSED, &[("reason", "reset")]);
    assert_eq!(
        server.metric(CLOSED, &[]),
        CLIENTS as f64,
        "closed for any reason (reset: {reset})"
    );
    assert_eq!(
        reset, CLIENTS as f64,
        "every reset peer is counted as reset"
    );
    drop(observer);
    server.wait_metric(OPEN, &[], 0.0, Duration::from_secs(2));
    assert_sound(&mut server);
    server.assert_fds_return(baseline, Duration::from_secs(3));
}

/// Signals SIGTERM while connections hold every kind of operation: idle
/// ones a pending receive, stuck readers a waiting send, busy ones both,
/// mid-transfer. The process must exit 0 (not 70, the tracker's panic)
/// within `within` of the signal.
fn shutdown_with_operations_in_flight(grace: &str, within: Duration) {
    const EACH: usize = 4;
    let mut server = start(&["--protocol", "echo", "--shutdown-grace", grace]);
    let addr = server.addr;
    let idle: Vec<TcpStream> = (0..EACH).map(|_| server.connect()).collect();
    let stuck: Vec<TcpStream> = (0..EACH).map(|_| stuck_reader(addr)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..EACH)
        .map(|b| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut client = util::connect(addr);
                let chunk = Rng::new(b as u64 + 1).bytes(16 * 1024);
                let mut back = vec![0u8; chunk.len()];
                let mut rounds = 0u64;
                // Until the server closes it (or the test gives up).
                while !stop.load(Ordering::Relaxed) {
                    if client.write_all(&chunk).is_err() || client.read_exact(&mut back).is_err() {
                        break;
                    }
                    assert_eq!(back, chunk, "busy client {b}, round {rounds}");
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    server.wait_metric(OPEN, &[], (3 * EACH) as f64, Duration::from_secs(3));
    thread::sleep(Duration::from_millis(100));

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(within);
    stop.store(true, Ordering::Relaxed);
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {within:?} after SIGTERM (grace {grace}); stderr:\n{}",
            server.stderr_text()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status} (70: a shard panicked) {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(
        !server.stderr_text().contains("panicked"),
        "a panic on the way out"
    );
    for (b, thread) in busy.into_iter().enumerate() {
        let rounds = thread.join().expect("a busy client");
        assert!(rounds > 0, "busy client {b} never got its echo");
    }
    drop((idle, stuck));
}

#[test]
fn sigterm_with_operations_in_flight_exits_0_after_the_grace() {
    shutdown_with_operations_in_flight("1s", Duration::from_millis(2_500));
}

#[test]
fn sigterm_with_operations_in_flight_and_no_grace_exits_0_at_once() {
    shutdown_with_operations_in_flight("0", Duration::from_secs(2));
}

#[test]
fn tiny_completion_queue_loses_no_reply() {
    const THREADS: usize = 4;
    const CONNS_EACH: usize = 16;
    const ROUNDS: usize = 20;
    const BATCH: usize = 10;
    // 8 submission entries, so 32 completion entries for 64 connections.
    let mut server = start(&["--protocol", "frame", "--uring-entries", "8"]);
    let addr = server.addr;
    let ready = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let ready = ready.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(0xc0_0000 + t as u64);
                let mut clients: Vec<TcpStream> =
                    (0..CONNS_EACH).map(|_| util::connect(addr)).collect();
                ready.wait();
                for round in 0..ROUNDS {
                    // Every connection pipelines a batch before any reply is
                    // read, so completions for all of them come together.
                    let batches: Vec<Vec<Vec<u8>>> = clients
                        .iter_mut()
                        .map(|client| {
                            let payloads: Vec<Vec<u8>> = (0..BATCH)
                                .map(|_| {
                                    let len = rng.range(1, 2_000);
                                    rng.bytes(len)
                                })
                                .collect();
                            let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
                            client.write_all(&wire).unwrap();
                            payloads
                        })
                        .collect();
                    for (c, (client, payloads)) in clients.iter_mut().zip(&batches).enumerate() {
                        for (i, payload) in payloads.iter().enumerate() {
                            let reply = util::read_frame(client);
                            assert_same_bytes(
                                &reply,
                                payload,
                                &format!("thread {t}, client {c}, round {round}, frame {i}"),
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for (t, thread) in threads.into_iter().enumerate() {
        thread
            .join()
            .unwrap_or_else(|_| panic!("client thread {t} failed"));
    }
    eprintln!("cq overflows counted: {}", counter(&server, CQ_OVERFLOW));
    let conns = (THREADS * CONNS_EACH) as f64;
    server.wait_metric(CLOSED, &[("reason", "peer")], conns, Duration::from_secs(3));
    server.wait_metric(OPEN, &[], 0.0, Duration::from_secs(2));
    assert_sound(&mut server);
    frame_round_trip(&mut server.connect(), b"after the storm");
}

#[test]
fn an_idle_loop_wakes_for_new_connections_and_bytes() {
    // Under DEFER_TASKRUN completions show only after an enter that waits
    // for them: a loop asleep in its wait must still see a new connection
    // and its bytes at once, on either shard.
    let mut server = start(&["--protocol", "echo", "--threads", "2"]);
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        // Long enough for both loops to be asleep.
        thread::sleep(Duration::from_millis(60));
        let start = Instant::now();
        let mut client = server.connect();
        echo_round_trip(&mut client, format!("wake up {i}").as_bytes());
        thread::sleep(Duration::from_millis(60));
        echo_round_trip(&mut client, format!("again {i}").as_bytes());
        slowest = slowest.max(start.elapsed() - Duration::from_millis(60));
    }
    // Generous for a loaded machine, and still far below anything a timer
    // would wake the loop for (the idle timeout is 60 s).
    assert!(
        slowest < Duration::from_secs(1),
        "the slowest connect and two round trips took {slowest:?}"
    );
    assert_sound(&mut server);
}

#[test]
fn seccomp_denied_io_uring_falls_back_to_epoll() {
    let deny = util::deny_io_uring();
    for errno in ["EPERM", "ENOSYS"] {
        let server = Running(Server::start_under(
            &[deny.to_str().unwrap(), "--errno", errno],
            &["--protocol", "echo"],
        ));
        assert_eq!(
            server.metric(BACKEND_INFO, &[("backend", "epoll")]),
            1.0,
            "{errno}: the backend after the fallback"
        );
        assert_eq!(server.metric(BACKEND_INFO, &[("backend", "uring")]), 0.0);
        let stderr = server.stderr_text();
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("falling back to epoll"))
            .collect();
        assert_eq!(
            warnings.len(),
            1,
            "{errno}: one fallback warning; stderr:\n{stderr}"
        );
        assert!(
            warnings[0].to_lowercase().contains("seccomp"),
            "{errno}: the warning does not name seccomp as a cause: {}",
            warnings[0]
        );
        let mut client = server.connect();
        for i in 0..10 {
            echo_round_trip(&mut client, format!("on epoll {i}").as_bytes());
        }
    }
}

#[test]
fn seccomp_denied_io_uring_fails_an_explicit_uring_backend() {
    let deny = util::deny_io_uring();
    for errno in ["EPERM", "ENOSYS"] {
        let (status, out, err) = util::run_via_to_exit(
            &deny,
            &["--errno", errno],
            &[
                "serve",
                "--backend",
                "uring",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--threads",
                "1",
            ],
            Duration::from_secs(10),
        );
        let status = status.expect("serve --backend uring returned within 10 s");
        assert_eq!(
            status.code(),
            Some(1),
            "{errno}: {status}\nstdout: {out}\nstderr: {err}"
        );
        assert!(!err.contains("listening on"), "{errno}: it listened: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{errno}: one line on stderr: {err}");
        assert!(
            lines[0].to_lowercase().contains("seccomp"),
            "{errno}: the error does not name seccomp as a cause: {}",
            lines[0]
        );
    }
}

#[test]
fn seccomp_denied_io_uring_check_reports_the_fallback_or_refuses() {
    let deny = util::deny_io_uring();
    for errno in ["EPERM", "ENOSYS"] {
        let wrapper = ["--errno", errno];
        let (status, out, err) = util::run_via_to_exit(
            &deny,
            &wrapper,
            &["serve", "--check", "--listen", "127.0.0.1:0"],
            Duration::from_secs(10),
        );
        let status = status.expect("serve --check returned within 10 s");
        assert!(
            status.success(),
            "{errno}: {status}\nstdout: {out}\nstderr: {err}"
        );
        let all = format!("{out}\n{err}");
        assert!(
            all.contains("settings ok; backend epoll"),
            "{errno}: no fallback in: {all}"
        );
        assert!(
            all.lines()
                .any(|l| !l.contains("settings ok") && l.to_lowercase().contains("seccomp")),
            "{errno}: no warning naming seccomp in: {all}"
        );

        let (status, out, err) = util::run_via_to_exit(
            &deny,
            &wrapper,
            &[
                "serve",
                "--check",
                "--backend",
                "uring",
                "--listen",
                "127.0.0.1:0",
            ],
            Duration::from_secs(10),
        );
        let status = status.expect("serve --check --backend uring returned within 10 s");
        assert_eq!(
            status.code(),
            Some(1),
            "{errno}: {status}\nstdout: {out}\nstderr: {err}"
        );
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{errno}: one line on stderr: {err}");
        assert!(
            lines[0].to_lowercase().contains("seccomp"),
            "{errno}: the error does not name seccomp as a cause: {}",
            lines[0]
        );
    }
}
