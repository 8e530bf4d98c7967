//! Deadlines: a silent peer, a peer that never finishes its frame
//! (slowloris) and a peer that never reads its replies are all closed, each
//! counted under its own reason, and nothing else is; meanwhile such peers
//! cost the other clients nothing.

use crate::util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::{Server, connect_small_rcvbuf, expect_closed, frame, frame_round_trip};

const CLOSED: &str = "holdfast_connections_closed_total";

#[test]
fn idle_client_closed_after_idle_timeout() {
    let server = Server::start(&["--protocol", "frame", "--idle-timeout", "300ms"]);
    let baseline = server.fd_baseline();
    let mut silent = server.connect();
    let (bytes, _, after) = expect_closed(&mut silent, Duration::from_secs(3));
    assert!(
        bytes.is_empty(),
        "a silent client got {} bytes",
        bytes.len()
    );
    assert!(
        after >= Duration::from_millis(250),
        "closed after {after:?}, before the 300ms idle timeout"
    );
    server.wait_metric(
        CLOSED,
        &[("reason", "idle_timeout")],
        1.0,
        Duration::from_secs(2),
    );
    server.assert_fds_return(baseline, Duration::from_secs(2));
}

#[test]
fn traffic_keeps_a_connection_past_the_idle_timeout() {
    let server = Server::start(&["--protocol", "frame", "--idle-timeout", "300ms"]);
    let mut busy = server.connect();
    // 1.2 s of a round trip every 100 ms: four idle timeouts long, never
    // idle for one.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1_200) {
        frame_round_trip(&mut busy, b"still here");
        thread::sleep(Duration::from_millis(100));
    }
    // Then silence closes it.
    expect_closed(&mut busy, Duration::from_secs(3));
    let scrape = server.scrape();
    assert_eq!(
        util::metric(&scrape, CLOSED, &[("reason", "idle_timeout")]),
        1.0
    );
    assert_eq!(
        util::metric(&scrape, CLOSED, &[]),
        1.0,
        "closed for any reason"
    );
}

#[test]
fn slowloris_closed_by_read_timeout_while_complete_frames_are_not() {
    let server = Server::start(&[
        "--protocol",
        "frame",
        "--read-timeout",
        "300ms",
        "--idle-timeout",
        "60s",
    ]);
    let baseline = server.fd_baseline();

    // A well-behaved client over the same period: every frame is split in
    // two writes 20 ms apart (so it is briefly incomplete) and completes
    // well within the read timeout.
    let stop = Arc::new(AtomicBool::new(false));
    let mut good = server.connect();
    let good_stop = stop.clone();
    let good_thread = thread::spawn(move || {
        let mut rounds = 0;
        while !good_stop.load(Ordering::Relaxed) {
            let wire = frame(format!("complete frame {rounds}").as_bytes());
            let (head, tail) = wire.split_at(6);
            good.write_all(head).unwrap();
            thread::sleep(Duration::from_millis(20));
            good.write_all(tail).unwrap();
            assert_eq!(
                util::read_frame(&mut good),
                format!("complete frame {rounds}").as_bytes()
            );
            rounds += 1;
            thread::sleep(Duration::from_millis(30));
        }
        // Handed back open: its close must not count before the asserts.
        (rounds, good)
    });

    // The slowloris: a header announcing 100 bytes, then a byte every 50 ms
    // (it would take 5 s to finish).
    let mut slow = server.connect();
    slow.write_all(&100u32.to_be_bytes()).unwrap();
    let mut dripper = slow.try_clone().unwrap();
    let drip = thread::spawn(move || {
        for _ in 0..100 {
            if dripper.write_all(b"x").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let (bytes, _, after) = expect_closed(&mut slow, Duration::from_secs(2));
    assert!(bytes.is_empty(), "the slowloris got {} bytes", bytes.len());
    assert!(
        after >= Duration::from_millis(250),
        "closed after {after:?}, before the 300ms read timeout"
    );
    drip.join().unwrap();
    // Keep the good client going a while after the slowloris is gone.
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (rounds, _good) = good_thread
        .join()
        .expect("the good client was served throughout");
    assert!(rounds >= 10, "only {rounds} round trips");

    let scrape = server.scrape();
    assert_eq!(
        util::metric(&scrape, CLOSED, &[("reason", "read_timeout")]),
        1.0
    );
    assert_eq!(
        util::metric(&scrape, CLOSED, &[]),
        1.0,
        "closed for any reason"
    );
    assert_eq!(util::metric(&scrape, "holdfast_connections_open", &[]), 1.0);
    server.assert_fds_return(baseline + 1, Duration::from_secs(2));
}

#[test]
fn slow_readers_closed_by_write_timeout_with_bounded_memory() {
    const CLIENTS: usize = 20;
    const BUFFER: u64 = 64 * 1024;
    let server = Server::start(&["--protocol", "echo", "--write-timeout", "500ms"]);
    let baseline_fds = server.fd_baseline();
    let baseline_rss = server.rss_bytes();

    // Each client sends until its socket takes no more (the server has
    // stopped reading it: its output ring is full and the client reads
    // nothing), then holds on.
    let chunk = vec![0x5au8; 64 * 1024];
    let mut clients = Vec::new();
    let mut stalled = Vec::new();
    for _ in 0..CLIENTS {
        let client = connect_small_rcvbuf(server.addr, 4096);
        client
            .set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut writer = client.try_clone().unwrap();
        let chunk = chunk.clone();
        stalled.push(thread::spawn(move || {
            let mut sent = 0usize;
            loop {
                match writer.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return (sent, true);
                    }
                    // Already closed by the server: fine too.
                    Err(_) => return (sent, false),
                }
                assert!(sent < 256 << 20, "the server took 256 MiB without stalling");
            }
        }));
        clients.push(client);
    }
    let mut peak_rss = server.rss_bytes();
    for thread in stalled {
        let (sent, _) = thread.join().unwrap();
        assert!(sent > BUFFER as usize, "only {sent} bytes went out");
        peak_rss = peak_rss.max(server.rss_bytes());
    }
    let closed_all = util::wait_until(Duration::from_secs(5), || {
        peak_rss = peak_rss.max(server.rss_bytes());
        server.metric(CLOSED, &[("reason", "write_timeout")]) == CLIENTS as f64
    });
    assert!(
        closed_all,
        "write_timeout closes: {} of {CLIENTS}",
        server.metric(CLOSED, &[("reason", "write_timeout")])
    );
    assert_eq!(
        server.metric(CLOSED, &[]),
        CLIENTS as f64,
        "closed for any reason"
    );

    // Each connection holds at most its two rings, whatever the peer does;
    // kernel socket buffers are not in the RSS. 8 MiB covers allocator and
    // thread-stack slack.
    let bound = BUFFER * 2 * CLIENTS as u64 + (8 << 20);
    let growth = peak_rss.saturating_sub(baseline_rss);
    eprintln!("RSS {baseline_rss} -> peak {peak_rss} (+{growth}), bound +{bound}");
    assert!(
        growth < bound,
        "RSS grew by {growth} bytes (from {baseline_rss} to {peak_rss}); bound {bound}"
    );

    // Every client sees the close: a write fails once the reset is in.
    for (i, mut client) in clients.into_iter().enumerate() {
        client
            .set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let failed = util::wait_until(Duration::from_secs(2), || {
            matches!(client.write(b"?"), Err(e)
                if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe))
        });
        assert!(failed, "client {i} can still write after its close");
    }
    server.assert_fds_return(baseline_fds, Duration::from_secs(2));
}

/// Pipelines `request` on every one of `clients` without reading, until a
/// whole pass over them (twice, 20 ms apart) takes nothing more.
fn send_until_stalled(clients: &mut [TcpStream], request: &[u8]) {
    let mut sent = vec![0usize; clients.len()];
    let start = Instant::now();
    let mut idle_passes = 0;
    while idle_passes < 2 {
        let mut took = 0;
        for (client, sent) in clients.iter_mut().zip(&mut sent) {
            let end = request.len().min(*sent + 64 * 1024);
            if *sent < end {
                let n = util::write_nonblocking(client, &request[*sent..end]).unwrap();
                *sent += n;
                took += n;
            }
        }
        idle_passes = if took == 0 { idle_passes + 1 } else { 0 };
        thread::sleep(Duration::from_millis(20));
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server never stopped reading"
        );
    }
}

/// A fresh client's PING: answered, and how long it took (at most 1 s).
fn fresh_ping(addr: std::net::SocketAddr) -> Result<Duration, String> {
    let mut client = util::connect(addr);
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let start = Instant::now();
    client.write_all(b"PING\r\n").unwrap();
    let mut reply = [0u8; 7];
    match client.read_exact(&mut reply) {
        Ok(()) if &reply == b"+PONG\r\n" => Ok(start.elapsed()),
        Ok(()) => Err(format!("got {:?}", String::from_utf8_lossy(&reply))),
        Err(e) => Err(format!("no answer within 1 s ({e})")),
    }
}

/// Hundreds of clients with a 4 KiB receive window each pipeline 200 GETs
/// of a 60 KB value and 20000 PINGs and never read. With the default
/// settings a fresh client is still answered at once, every time, and every
/// one of the stuck clients is closed by the write timeout. (On io_uring a
/// connection whose output was blocked kept the receive buffers it held, a
/// few hundred of them took the shared pool, and every other connection
/// waited for a buffer: fresh clients went unanswered and the stuck ones
/// that never got to read waited for the idle timeout instead.)
#[test]
fn pipelining_slow_readers_neither_stall_fresh_clients_nor_escape_the_write_timeout() {
    const CLIENTS: usize = 300;
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    util::raise_own_fd_limit();
    let server = Server::start(&["--protocol", "resp", "--write-timeout", "2s"]);
    let mut setter = util::Resp::connect(server.addr);
    assert_eq!(setter.call(&[b"SET", b"big", &[b'v'; 60_000]]), b"+OK\r\n");
    drop(setter);
    let mut request = Vec::new();
    for _ in 0..200 {
        holdfast::engine::codec::resp::encode_command(&[b"GET", b"big"], &mut request);
    }
    for _ in 0..20_000 {
        holdfast::engine::codec::resp::encode_command(&[b"PING"], &mut request);
    }
    let mut stuck: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| connect_small_rcvbuf(server.addr, 4096))
        .collect();
    send_until_stalled(&mut stuck, &request);
    let stalled = Instant::now();
    // The clients stall as soon as the socket buffers are full, which may
    // be before a busy server has been through them all: let it finish
    // (nothing more read for 200 ms) before timing anyone's answer.
    let mut read = -1.0;
    let settled = util::wait_until(Duration::from_secs(10), || {
        thread::sleep(Duration::from_millis(200));
        let now = server.metric("holdfast_bytes_read_total", &[]);
        std::mem::replace(&mut read, now) == now
    });
    assert!(settled, "the server was still reading after 10 s");

    for attempt in 0..5 {
        let took = fresh_ping(server.addr).unwrap_or_else(|e| {
            panic!(
                "fresh client {attempt}: {e}; {} receives ended for lack of buffers",
                server.metric("holdfast_uring_enobufs_total", &[])
            )
        });
        eprintln!("fresh client {attempt}: +PONG in {took:?}");
    }
    // Each made its last progress before they all stalled: its deadline is
    // at most the write timeout after that. (With the buffer pool held, the
    // clients that never got to read were served in waves as others closed:
    // 7 s here.)
    let closed = |server: &Server| server.metric(CLOSED, &[("reason", "write_timeout")]);
    let all_closed = util::wait_until(
        (WRITE_TIMEOUT + Duration::from_secs(3)).saturating_sub(stalled.elapsed()),
        || closed(&server) == CLIENTS as f64,
    );
    assert!(
        all_closed,
        "{} of {CLIENTS} stuck clients closed by the write timeout {:?} after they stalled",
        closed(&server),
        stalled.elapsed()
    );
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        0.0,
        Duration::from_secs(3),
    );
    fresh_ping(server.addr).expect("a fresh client after the closes");
}

#[test]
fn slow_but_steady_reader_is_not_closed_by_write_timeout() {
    // The write timeout is about progress, not total time: a reader that
    // takes 4 KiB every 100 ms needs several write timeouts to drain its
    // replies but never stalls for one.
    let server = Server::start(&["--protocol", "echo", "--write-timeout", "500ms"]);
    let mut client = connect_small_rcvbuf(server.addr, 4096);
    let sent = vec![0x42u8; 128 * 1024];
    let mut writer = client.try_clone().unwrap();
    let data = sent.clone();
    let writing = thread::spawn(move || writer.write_all(&data));
    let start = Instant::now();
    let mut got = 0;
    while got < sent.len() {
        let chunk = util::read_exact_timeout(
            &mut client,
            (sent.len() - got).min(4096),
            Duration::from_secs(2),
        );
        assert!(chunk.iter().all(|&b| b == 0x42));
        got += chunk.len();
        thread::sleep(Duration::from_millis(100));
    }
    writing.join().unwrap().expect("sending");
    assert!(
        start.elapsed() > Duration::from_secs(2),
        "drained too fast ({:?}) to span several write timeouts",
        start.elapsed()
    );
    assert_eq!(server.metric(CLOSED, &[]), 0.0, "closed for any reason");
    util::echo_round_trip(&mut client, b"still open");
}

#[test]
fn many_idle_connections_all_expire() {
    const CONNS: usize = 300;
    let server = Server::start(&["--protocol", "echo", "--idle-timeout", "300ms"]);
    let baseline = server.fd_baseline();
    let clients: Vec<_> = (0..CONNS).map(|_| server.connect()).collect();
    server.wait_metric(
        CLOSED,
        &[("reason", "idle_timeout")],
        CONNS as f64,
        Duration::from_secs(3),
    );
    for (i, client) in clients.iter().enumerate() {
        assert!(util::poll_state(client).is_err(), "client {i} still open");
    }
    server.assert_fds_return(baseline, Duration::from_secs(2));
}

#[test]
fn idle_timeout_longer_than_a_wheel_turn_fires_on_time() {
    // The timer wheel turns once every few seconds; a deadline further out
    // than one turn must neither fire on an earlier turn nor be lost.
    let server = Server::start(&["--protocol", "echo", "--idle-timeout", "5500ms"]);
    let mut client = server.connect();
    let start = Instant::now();
    for check in [1_000u64, 3_000, 5_000] {
        thread::sleep(Duration::from_millis(check).saturating_sub(start.elapsed()));
        assert_eq!(
            util::poll_state(&client),
            Ok(0),
            "closed before {check} ms of a 5.5 s idle timeout"
        );
    }
    let (_, _, _) = expect_closed(&mut client, Duration::from_secs(3));
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(5_400),
        "closed after {after:?}"
    );
    assert_eq!(server.metric(CLOSED, &[("reason", "idle_timeout")]), 1.0);
}
