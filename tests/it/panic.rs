//! Failure isolation: a service that panics, or writes more than it
//! reserved, loses only the connection it was serving; the shard and every
//! other connection go on. These run the server in-process (the library
//! API) with services of their own.

use crate::util;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use holdfast::config::Config;
use holdfast::engine::codec::Protocol;
use holdfast::engine::metrics::{CloseReason, Registry};
use holdfast::engine::server::{Running, Server};
use holdfast::engine::service::{Context, Reply, Service};

use util::{connect, expect_closed, line_round_trip, wait_until};

/// Echoes lines; panics on the line `boom`.
struct PanicsOnBoom;

impl Service for PanicsOnBoom {
    type Session = ();

    fn reply_reserve(&self, _: &(), frame: &[u8]) -> usize {
        frame.len()
    }

    fn call(&mut self, _: &mut (), _: &mut Context<'_>, frame: &[u8], reply: &mut Reply<'_>) {
        if frame == b"boom" {
            panic!("the service was told to panic");
        }
        reply.put(frame).expect("within the reserve");
    }
}

/// Echoes lines, but gets its reserve wrong on purpose: the line `twice`
/// is answered twice (more than reserved), and a 13-byte line reserves more
/// than any ring holds.
struct Overflows;

impl Service for Overflows {
    type Session = ();

    fn reply_reserve(&self, _: &(), frame: &[u8]) -> usize {
        let frame_len = frame.len();
        if frame_len == 13 { 1 << 40 } else { frame_len }
    }

    fn call(&mut self, _: &mut (), _: &mut Context<'_>, frame: &[u8], reply: &mut Reply<'_>) {
        let first = reply.put(frame);
        if frame == b"twice" {
            assert!(first.is_ok());
            assert!(reply.put(frame).is_err(), "past the reserve");
        }
    }
}

/// A one-shard `line` server on an ephemeral port, no admin endpoint.
fn start<S: Service>(make: impl Fn() -> S + Send + Sync + 'static) -> Running {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: None,
        threads: 1,
        protocol: Protocol::Line,
        ..Config::default()
    };
    config.validate().expect("a valid config");
    Server::new(config)
        .service(make)
        .start()
        .expect("server start")
}

fn closed(registry: &Registry, reason: CloseReason) -> u64 {
    registry
        .shards
        .iter()
        .map(|s| s.closed[reason.index()].get())
        .sum()
}

fn closed_any(registry: &Registry) -> u64 {
    CloseReason::ALL.iter().map(|&r| closed(registry, r)).sum()
}

fn panics(registry: &Registry) -> u64 {
    registry.shards.iter().map(|s| s.handler_panics.get()).sum()
}

fn open(registry: &Registry) -> u64 {
    registry
        .shards
        .iter()
        .map(|s| s.connections_open.get())
        .sum()
}

/// Every client does one round trip.
fn all_round_trip(clients: &mut [TcpStream], tag: &str) {
    for (i, client) in clients.iter_mut().enumerate() {
        line_round_trip(client, format!("{tag} from client {i}").as_bytes());
    }
}

/// Stops the server and waits for its shards (bounded: every client is
/// gone by then, and the grace period is the default).
fn stop(running: Running) {
    (running.stopper())();
    running.wait();
}

#[test]
fn panic_in_service_closes_only_that_connection() {
    let running = start(|| PanicsOnBoom);
    let registry: Arc<Registry> = running.registry.clone();
    let mut others: Vec<TcpStream> = (0..10).map(|_| connect(running.local_addr)).collect();
    all_round_trip(&mut others, "before");

    let mut victim = connect(running.local_addr);
    line_round_trip(&mut victim, b"fine so far");
    victim.write_all(b"boom\n").unwrap();
    let (bytes, _, _) = expect_closed(&mut victim, Duration::from_secs(2));
    assert!(
        bytes.is_empty(),
        "a reply to the panicking frame: {bytes:?}"
    );

    all_round_trip(&mut others, "after");
    assert!(
        wait_until(Duration::from_secs(2), || closed(
            &registry,
            CloseReason::Panic
        ) == 1),
        "closed[panic] = {}",
        closed(&registry, CloseReason::Panic)
    );
    assert_eq!(panics(&registry), 1, "handler_panics");
    assert_eq!(closed_any(&registry), 1, "closed for any reason");
    assert_eq!(open(&registry), 10, "connections open");

    // A second panic on a fresh connection is just as contained.
    let mut again = connect(running.local_addr);
    again.write_all(b"boom\n").unwrap();
    expect_closed(&mut again, Duration::from_secs(2));
    all_round_trip(&mut others, "after the second");
    assert!(wait_until(Duration::from_secs(2), || panics(&registry) == 2));
    assert_eq!(closed(&registry, CloseReason::Panic), 2);

    drop(others);
    stop(running);
}

#[test]
fn reply_past_its_reserve_closes_only_that_connection() {
    let running = start(|| Overflows);
    let registry = running.registry.clone();
    let mut others: Vec<TcpStream> = (0..10).map(|_| connect(running.local_addr)).collect();
    all_round_trip(&mut others, "before");

    // Writes more than it reserved.
    let mut twice = connect(running.local_addr);
    line_round_trip(&mut twice, b"fine so far");
    twice.write_all(b"twice\n").unwrap();
    expect_closed(&mut twice, Duration::from_secs(2));
    all_round_trip(&mut others, "after twice");
    assert!(
        wait_until(Duration::from_secs(2), || {
            closed(&registry, CloseReason::OutputOverflow) == 1
        }),
        "closed[output_overflow] = {}",
        closed(&registry, CloseReason::OutputOverflow)
    );

    // Reserves more than the output ring can ever hold.
    let mut greedy = connect(running.local_addr);
    greedy.write_all(b"thirteen byte\n").unwrap();
    expect_closed(&mut greedy, Duration::from_secs(2));
    all_round_trip(&mut others, "after greedy");
    assert!(
        wait_until(Duration::from_secs(2), || {
            closed(&registry, CloseReason::OutputOverflow) == 2
        }),
        "closed[output_overflow] = {}",
        closed(&registry, CloseReason::OutputOverflow)
    );
    assert_eq!(closed_any(&registry), 2, "closed for any reason");
    assert_eq!(panics(&registry), 0, "handler_panics");

    drop(others);
    stop(running);
}
