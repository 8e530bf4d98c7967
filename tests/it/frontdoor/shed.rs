//! Load shedding on the accept queue, loop lag and fds left.

use crate::util;

use std::io::{Read, Write};
use std::time::Duration;

use super::{REJECTED, refused};
use util::{Server, expect_closed, line_round_trip};

/// A client that sent an inline PING: `Some(true)` answered, `Some(false)`
/// closed without an answer (shed).
fn pinged(client: &mut std::net::TcpStream) -> bool {
    let mut reply = [0u8; 7];
    match client.read_exact(&mut reply) {
        Ok(()) => {
            assert_eq!(&reply, b"+PONG\r\n");
            true
        }
        Err(_) => false,
    }
}

/// Stalls the only shard of `server` for `ms` (DEBUG SLEEP) and, while it
/// sleeps, opens `count` connections that each send a PING: they wait in
/// the accept queue. Returns them, once the shard is awake again.
fn queue_behind_a_stall(server: &Server, ms: u32, count: usize) -> Vec<std::net::TcpStream> {
    let mut staller = util::Resp::connect(server.addr);
    staller.send(&[b"DEBUG", b"SLEEP", ms.to_string().as_bytes()]);
    std::thread::sleep(Duration::from_millis(100));
    let queued: Vec<_> = (0..count)
        .map(|_| {
            let mut client = server.connect();
            client.write_all(b"PING\r\n").unwrap();
            client
        })
        .collect();
    assert_eq!(staller.reply(), b"+OK\r\n");
    queued
}

#[test]
fn a_deep_accept_queue_is_shed_down_to_half_its_threshold() {
    let server = Server::start(&[
        "--protocol",
        "resp",
        "--enable-debug-commands",
        "--shed-accept-queue",
        "20",
        "--backlog",
        "128",
    ]);
    // Below the threshold it costs nothing: 15 queued behind a stall are
    // all served.
    let mut few = queue_behind_a_stall(&server, 500, 15);
    assert!(few.iter_mut().all(pinged));
    assert_eq!(
        server.metric(REJECTED, &[("reason", "shed_accept_queue")]),
        0.0
    );
    // 60 queued: the oldest are shed until 10 (half the threshold) wait,
    // and those are served.
    let mut many = queue_behind_a_stall(&server, 1000, 60);
    let served = many
        .iter_mut()
        .map(pinged)
        .filter(|&answered| answered)
        .count();
    let shed = server.metric(REJECTED, &[("reason", "shed_accept_queue")]);
    eprintln!("{served} served, {shed} shed of 60 queued");
    assert_eq!(served as f64 + shed, 60.0);
    assert!((8..=14).contains(&served), "{served} served");
    // Then it stops: a new client is served, and the gauges say so.
    let mut after = server.connect();
    after.write_all(b"PING\r\n").unwrap();
    assert!(pinged(&mut after));
    assert_eq!(server.metric("holdfast_shedding", &[]), 0.0);
    server.wait_metric("holdfast_accept_queue", &[], 0.0, Duration::from_secs(2));
}

#[test]
fn a_lagging_loop_sheds_what_queued_meanwhile_then_resumes() {
    let server = Server::start(&[
        "--protocol",
        "resp",
        "--enable-debug-commands",
        "--shed-loop-lag",
        "300ms",
    ]);
    // A turn of 100 ms is under the threshold: nothing is shed.
    let mut short = queue_behind_a_stall(&server, 100, 5);
    assert!(short.iter_mut().all(pinged));
    // A turn of 800 ms: what queued meanwhile is shed...
    let mut queued = queue_behind_a_stall(&server, 800, 5);
    assert!(!queued.iter_mut().any(pinged));
    assert_eq!(server.metric(REJECTED, &[("reason", "shed_loop_lag")]), 5.0);
    // ...and once turns are quick again, new connections are served.
    std::thread::sleep(Duration::from_millis(100));
    let mut after = server.connect();
    after.write_all(b"PING\r\n").unwrap();
    assert!(pinged(&mut after));
    assert_eq!(server.metric("holdfast_shedding", &[]), 0.0);
}

#[test]
fn running_short_of_fds_sheds_until_twice_as_many_are_back() {
    // 200 fds: 32 + 4 for the server itself leave 164 for connections.
    let server = Server::start_under(
        &["prlimit", "--nofile=200:200", "--"],
        &["--protocol", "line", "--shed-fds-left", "50"],
    );
    let mut clients: Vec<_> = (0..120).map(|_| server.connect()).collect();
    // The 116th would leave fewer than 50: it and the rest are shed.
    server.wait_metric(
        REJECTED,
        &[("reason", "shed_fds_left")],
        5.0,
        Duration::from_secs(3),
    );
    clients.retain(|client| !refused(client));
    assert_eq!(clients.len(), 115);
    assert_eq!(server.metric("holdfast_fds_left", &[]), 49.0);
    // 40 leave: 89 left is not yet twice 50, so it still sheds...
    clients.truncate(75);
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        75.0,
        Duration::from_secs(2),
    );
    let mut over = server.connect();
    expect_closed(&mut over, Duration::from_secs(2));
    // ...11 more leave: 100 left, and new connections are served again.
    clients.truncate(64);
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        64.0,
        Duration::from_secs(2),
    );
    let mut back = server.connect();
    line_round_trip(&mut back, b"back");
    assert_eq!(server.metric(REJECTED, &[("reason", "shed_fds_left")]), 6.0);
}
