//! A connection's and the server's life: half-close, resets mid-reply,
//! graceful shutdown on SIGTERM/SIGINT, and a second signal.

use crate::util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use util::{Closed, Server, expect_closed, frame, frame_round_trip, http_get, read_frame};

const CLOSED: &str = "holdfast_connections_closed_total";
const OPEN: &str = "holdfast_connections_open";

#[test]
fn half_closed_peer_gets_every_reply_then_eof() {
    let server = Server::start(&["--protocol", "frame"]);
    let mut client = server.connect();
    let payloads = [&b"one"[..], b"two", b"three"];
    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    client.write_all(&wire).unwrap();
    util::shutdown_write(&client);
    for payload in payloads {
        assert_eq!(read_frame(&mut client), payload);
    }
    let (rest, how, _) = expect_closed(&mut client, Duration::from_secs(2));
    assert!(rest.is_empty(), "bytes after the replies: {rest:?}");
    assert_eq!(how, Closed::Eof, "an orderly close after a half-close");
    server.wait_metric(CLOSED, &[("reason", "peer")], 1.0, Duration::from_secs(2));
    assert_eq!(server.metric(CLOSED, &[]), 1.0, "closed for any reason");
}

/// A client that resets its connection while a large reply is on its way.
fn reset_mid_reply(addr: std::net::SocketAddr) {
    let mut client = util::connect(addr);
    // 8 frames of 60 000 bytes: far more reply than the 64 KiB output ring
    // and the socket buffers hold at once.
    let request = frame(&[0xabu8; 60_000]);
    let mut wire = Vec::new();
    for _ in 0..8 {
        wire.extend_from_slice(&request);
    }
    let mut sent = 0;
    let start = Instant::now();
    // Send what the sockets take without blocking for long, reading a
    // little so the reply is under way.
    while sent < wire.len() && start.elapsed() < Duration::from_millis(300) {
        sent += util::write_nonblocking(&mut client, &wire[sent..]).unwrap();
        if sent >= request.len() {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    let mut first = [0u8; 1000];
    client
        .read_exact(&mut first)
        .expect("the start of the reply");
    util::reset(client);
}

#[test]
fn storm_of_resets_mid_reply_leaks_nothing() {
    let server = Server::start(&["--protocol", "frame"]);
    let baseline = server.fd_baseline();
    let addr = server.addr;
    let mut observer = server.connect();
    frame_round_trip(&mut observer, b"before");

    let storm: Vec<_> = (0..5)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..10 {
                    reset_mid_reply(addr);
                }
            })
        })
        .collect();
    for thread in storm {
        thread.join().expect("a resetting client");
    }
    frame_round_trip(&mut observer, b"after");

    server.wait_metric(OPEN, &[], 1.0, Duration::from_secs(3));
    let scrape = server.scrape();
    let reset = util::metric(&scrape, CLOSED, &[("reason", "reset")]);
    let any = util::metric(&scrape, CLOSED, &[]);
    assert_eq!(any, 50.0, "closed for any reason (reset: {reset})");
    assert_eq!(reset, 50.0, "every reset peer is counted as reset");
    assert_eq!(
        util::metric(&scrape, "holdfast_connections_accepted_total", &[]),
        51.0
    );
    drop(observer);
    server.wait_metric(OPEN, &[], 0.0, Duration::from_secs(2));
    server.assert_fds_return(baseline, Duration::from_secs(3));
}

/// Starts `count` clients that each pipeline `frames` frames without
/// reading; returns them with what each sent.
fn pipelined_clients(
    server: &Server,
    count: usize,
    frames: usize,
) -> Vec<(TcpStream, Vec<Vec<u8>>)> {
    (0..count)
        .map(|c| {
            let mut client = server.connect();
            let payloads: Vec<Vec<u8>> = (0..frames)
                .map(|i| format!("client {c} frame {i} {}", "p".repeat(i % 50)).into_bytes())
                .collect();
            let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
            client.write_all(&wire).unwrap();
            (client, payloads)
        })
        .collect()
}

#[test]
fn sigterm_answers_every_request_sent_before_it_then_exits_0() {
    let mut server = Server::start(&["--protocol", "frame", "--shutdown-grace", "5s"]);
    // Accepted first: a connection still in the backlog when the listener
    // closes is not the server's yet.
    let clients = pipelined_clients(&server, 5, 200);
    server.wait_metric(OPEN, &[], 5.0, Duration::from_secs(2));
    // Loopback delivers a write into the peer's socket before write()
    // returns when the window is open (it is: ~9 KiB each); a short pause
    // covers a busy machine.
    thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);

    for (c, (mut client, payloads)) in clients.into_iter().enumerate() {
        for (i, payload) in payloads.iter().enumerate() {
            assert_eq!(&read_frame(&mut client), payload, "client {c}, reply {i}");
        }
        let (rest, _, _) = expect_closed(&mut client, Duration::from_secs(3));
        assert!(rest.is_empty(), "client {c}: bytes after its replies");
    }
    let took = exits_cleanly(&mut server, Duration::from_secs(5), signalled);
    assert!(
        took < Duration::from_secs(4),
        "took {took:?} with nothing left to drain"
    );
}

#[test]
fn sigterm_reads_requests_queued_behind_backpressure() {
    // 4 KiB rings and a client that does not read until after the signal:
    // the server stops reading it once its output is stuck, so most of the
    // requests still sit in the server's socket when SIGTERM comes. They
    // reached the socket before the signal, so each must be answered.
    let mut server = Server::start(&[
        "--protocol",
        "frame",
        "--buffer",
        "4KiB",
        "--shutdown-grace",
        "5s",
    ]);
    let mut client = util::connect_small_rcvbuf(server.addr, 4096);
    let payloads: Vec<Vec<u8>> = (0..60u8).map(|i| vec![i; 1000]).collect();
    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    client.write_all(&wire).unwrap();
    assert!(
        util::wait_until(Duration::from_secs(2), || util::unacked_bytes(&client) == 0),
        "{} bytes never reached the server's socket",
        util::unacked_bytes(&client)
    );
    assert_eq!(server.metric(OPEN, &[]), 1.0);
    server.signal(Signal::SIGTERM);
    thread::sleep(Duration::from_millis(100));
    for (i, payload) in payloads.iter().enumerate() {
        assert_eq!(&read_frame(&mut client), payload, "reply {i}");
    }
    expect_closed(&mut client, Duration::from_secs(3));
    exits_cleanly(&mut server, Duration::from_secs(5), Instant::now());
}

/// A client that connects while the shard is busy has had its handshake
/// completed by the kernel: it waits in the listener's queue, its request
/// in its socket. A drain that begins then takes it in and answers it
/// (closing the listener with it queued would reset it), and the exit still
/// comes within the grace period.
#[test]
fn sigterm_answers_a_connection_still_in_the_accept_queue() {
    let mut server = Server::start(&[
        "--protocol",
        "resp",
        "--enable-debug-commands",
        "--shutdown-grace",
        "3s",
    ]);
    let mut a = util::Resp::connect(server.addr);
    // The shard sleeps for a second: nothing is accepted meanwhile.
    a.send(&[b"DEBUG", b"SLEEP", b"1000"]);
    thread::sleep(Duration::from_millis(200));
    let mut b = server.connect();
    b.write_all(b"PING\r\n").unwrap();
    assert!(
        util::wait_until(Duration::from_secs(1), || util::unacked_bytes(&b) == 0),
        "the PING never reached the server's socket"
    );
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);

    assert_eq!(a.reply(), b"+OK\r\n", "A, whose command was running");
    let mut reply = [0u8; 7];
    b.read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("B, queued when the drain began: {e}"));
    assert_eq!(&reply, b"+PONG\r\n", "B");
    let took = exits_cleanly(&mut server, Duration::from_secs(5), signalled);
    assert!(
        took < Duration::from_millis(4_500),
        "exited {took:?} after the signal, grace 3 s"
    );
}

/// A connection accepted just before a drain whose first request had not
/// arrived yet (its client was about to send it): the drain waits for it,
/// answers it, then closes. Closing it unheard would fail a request sent
/// in good faith; an upgrade's old process drains the same way.
#[test]
fn sigterm_answers_the_first_request_of_a_connection_just_accepted() {
    let mut server = Server::start(&["--protocol", "frame", "--shutdown-grace", "5s"]);
    let mut fresh = server.connect();
    assert!(
        util::wait_until(Duration::from_secs(2), || server.metric(OPEN, &[]) == 1.0),
        "the server never took the connection in"
    );
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    thread::sleep(Duration::from_millis(300));
    fresh.write_all(&frame(b"late, but sent")).unwrap();
    assert_eq!(read_frame(&mut fresh), b"late, but sent");
    let (rest, how, _) = expect_closed(&mut fresh, Duration::from_secs(2));
    assert_eq!((rest.len(), how), (0, Closed::Eof), "then a clean close");
    // Our FIN ends the server's linger.
    drop(fresh);
    let took = exits_cleanly(&mut server, Duration::from_secs(3), signalled);
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after the signal"
    );
}

/// A connection that sends nothing is waited for only a second after its
/// accept, not until the grace ends.
#[test]
fn a_silent_new_connection_holds_a_drain_a_second_at_most() {
    let mut server = Server::start(&["--protocol", "frame", "--shutdown-grace", "10s"]);
    let mut silent = server.connect();
    assert!(
        util::wait_until(Duration::from_secs(2), || server.metric(OPEN, &[]) == 1.0),
        "the server never took the connection in"
    );
    let accepted = Instant::now();
    server.signal(Signal::SIGTERM);
    let (bytes, how, _) = expect_closed(&mut silent, Duration::from_secs(5));
    assert_eq!(
        (bytes.len(), how),
        (0, Closed::Eof),
        "closed cleanly, unanswered"
    );
    drop(silent);
    let took = exits_cleanly(&mut server, Duration::from_secs(5), accepted);
    assert!(
        took < Duration::from_secs(4),
        "exited {took:?} after the accept"
    );
}

/// Waits up to `wait` for `server` to exit, asserts it exited 0 (its
/// stderr in the message), and returns how long after `since` that was.
fn exits_cleanly(server: &mut Server, wait: Duration, since: Instant) -> Duration {
    let status = server
        .wait_exit(wait)
        .unwrap_or_else(|| panic!("no exit within {wait:?}"));
    let took = since.elapsed();
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr_text()
    );
    took
}

/// A client whose replies pile up unread: it keeps the drain busy until the
/// grace period ends (the write timeout, 10 s by default, is longer).
fn stuck_reader(server: &Server) -> TcpStream {
    stuck_reader_at(server.addr)
}

/// A `resp` client that can never be answered in full: it asks for a
/// 60 KB value 2000 times (120 MB of replies for 40 KB of requests) and
/// reads nothing. No kernel buffers hold that much, so the server keeps
/// replies pending for it until it gives up; an echo-style client that
/// stops when its writes stall is not that certain: a server slowed down
/// by load may still swallow all of it into its socket buffers later and
/// be idle at the drain.
fn stuck_reader_at(addr: std::net::SocketAddr) -> TcpStream {
    let mut client = util::Resp::from(util::connect_small_rcvbuf(addr, 4096));
    client.send(&[b"SET", b"big", &[b'x'; 60_000]]);
    assert_eq!(client.reply(), b"+OK\r\n");
    let mut client = client.stream;
    let mut requests = Vec::new();
    for _ in 0..2_000 {
        holdfast::engine::codec::resp::encode_command(&[b"GET", b"big"], &mut requests);
    }
    // 40 KB: within the server's receive buffer, so the write completes
    // even once the server has stopped reading.
    client.write_all(&requests).expect("sending the requests");
    client
}

#[test]
fn readyz_turns_503_while_draining_and_sigint_exits_0_after_the_grace() {
    let mut server = Server::start(&["--protocol", "resp", "--shutdown-grace", "2s"]);
    let admin = server.admin();
    assert_eq!(http_get(admin, "/readyz").0, 200);
    assert_eq!(http_get(admin, "/healthz").0, 200);
    let _stuck = stuck_reader(&server);

    let signalled = Instant::now();
    server.signal(Signal::SIGINT);
    assert!(
        util::wait_until(Duration::from_secs(1), || http_get(admin, "/readyz").0
            == 503),
        "/readyz still {} after SIGINT",
        http_get(admin, "/readyz").0
    );
    assert_eq!(
        http_get(admin, "/healthz").0,
        200,
        "/healthz while draining"
    );
    // The listener closed at once: new connections are refused.
    assert!(
        util::wait_until(Duration::from_secs(1), || TcpStream::connect(server.addr)
            .is_err()),
        "still accepting while draining"
    );
    assert!(
        server.wait_exit(Duration::from_millis(1_500)).is_none(),
        "left before the grace"
    );

    let took = exits_cleanly(&mut server, Duration::from_secs(4), signalled);
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(4),
        "exited {took:?} after the signal, grace 2 s"
    );
}

#[test]
fn second_sigterm_exits_at_once() {
    let mut server = Server::start(&["--protocol", "resp", "--shutdown-grace", "30s"]);
    let admin = server.admin();
    let _stuck = stuck_reader(&server);
    server.signal(Signal::SIGTERM);
    assert!(
        util::wait_until(Duration::from_secs(1), || http_get(admin, "/readyz").0
            == 503),
        "the first SIGTERM did not start a drain"
    );
    assert!(
        server.wait_exit(Duration::from_millis(300)).is_none(),
        "exited on the first signal"
    );
    let again = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(1))
        .expect("exit within 1 s of the second signal");
    assert!(
        status.code().is_some(),
        "exited by itself, not killed: {status}"
    );
    assert!(again.elapsed() < Duration::from_secs(1));
}

#[test]
fn zero_shutdown_grace_closes_at_once() {
    let mut server = Server::start(&["--protocol", "resp", "--shutdown-grace", "0"]);
    let _stuck = stuck_reader(&server);
    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let took = exits_cleanly(&mut server, Duration::from_secs(2), signalled);
    assert!(
        took < Duration::from_secs(1),
        "exited {took:?} after the signal"
    );
}

#[test]
fn drain_closes_idle_connections_at_once_and_the_stuck_one_at_the_grace() {
    use holdfast::config::Config;
    use holdfast::engine::codec::Protocol;
    use holdfast::engine::metrics::CloseReason;

    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: None,
        threads: 1,
        protocol: Protocol::Resp,
        shutdown_grace: Duration::from_millis(500),
        ..Config::default()
    };
    config.validate().unwrap();
    let store = std::sync::Arc::new(holdfast::apps::kv::Store::new(1, config.max_memory));
    let running = holdfast::engine::server::Server::new(config)
        .service_with(move |context| holdfast::apps::kv::Kv::new(store.clone(), context))
        .start()
        .unwrap();
    let registry = running.registry.clone();
    let closed = move |reason: CloseReason| -> u64 {
        registry
            .shards
            .iter()
            .map(|s| s.closed[reason.index()].get())
            .sum()
    };
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut client = util::Resp::connect(running.local_addr);
            client.send(&[b"PING"]);
            assert_eq!(client.reply(), b"+PONG\r\n");
            client.stream
        })
        .collect();
    let _stuck = stuck_reader_at(running.local_addr);

    let stop = running.stopper();
    let start = Instant::now();
    stop();
    for client in &mut idle {
        let (_, how, after) = expect_closed(client, Duration::from_millis(400));
        assert_eq!(how, Closed::Eof, "an idle connection closes cleanly");
        assert!(after < Duration::from_millis(400));
    }
    running.wait();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "the drain took {took:?} with a 500 ms grace"
    );
    assert_eq!(closed(CloseReason::Shutdown), 4, "closed[shutdown]");
    let any: u64 = CloseReason::ALL.iter().map(|&r| closed(r)).sum();
    assert_eq!(any, 4, "closed for any reason");
}
