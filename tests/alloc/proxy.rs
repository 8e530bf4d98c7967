//! Zero heap allocations per request in the proxy's steady state: a
//! forwarded GET and SET, and a pipelined MGET split over two upstreams
//! and merged (pending buffers, outcome lists, the split plan and the
//! merge's list of replies are all reused), from RESP2 clients and from
//! clients that said `HELLO 3` (whose requests go over the upstreams'
//! RESP3 connections) at once.
//!
//! As in `alloc.rs`, a counting global allocator wraps the system one and
//! the proxy runs in this process; the upstreams are `redis-server`
//! processes (their allocations are not this process's). The client side
//! uses fixed buffers, so every allocation counted would be the engine's.
//!
//! `HOLDFAST_ALLOC_TRACE=1 cargo test --test alloc proxy:: -- --nocapture`
//! prints a backtrace of the first allocations in the window.

use crate::util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;

use holdfast::apps::proxy::Proxy;
use holdfast::apps::proxy::hash::{Continuum, KeyHash};
use holdfast::config::Config;
use holdfast::engine::codec::Protocol;
use holdfast::engine::codec::resp::encode_command;
use holdfast::engine::server::Server;
use util::Redis;

use crate::counting::{ALLOCATIONS, COUNTING, TRACES};

/// Connections driven at once.
const CONNS: usize = 4;
/// Warm-up time before counting starts: longer than the upstream timeout
/// (1 s), so that upstream connections' wheel entries have fired and been
/// re-scheduled once (the wheel's list of expired entries reaches its
/// working size) — that is steady state too.
const WARMUP: std::time::Duration = std::time::Duration::from_millis(1_500);
/// Rounds per connection while counting.
const MEASURED: usize = 5_000;

/// One round: what each connection sends, and the replies it expects.
struct Round {
    request: Vec<u8>,
    reply: Vec<u8>,
}

/// A client connection with the round it plays and room for its reply.
struct Client<'a> {
    conn: TcpStream,
    round: &'a Round,
    buffer: Vec<u8>,
}

/// `rounds` rounds on each connection, in lock step; allocation-free.
fn run(clients: &mut [Client], rounds: usize) {
    for _ in 0..rounds {
        for client in clients.iter_mut() {
            client.conn.write_all(&client.round.request).unwrap();
        }
        for client in clients.iter_mut() {
            client.conn.read_exact(&mut client.buffer).unwrap();
            assert!(client.buffer == client.round.reply, "wrong reply");
        }
    }
}

/// Switches `conn` to RESP3: `HELLO 3`, its reply read up to a PING's.
fn hello_3(conn: &mut TcpStream) {
    let mut request = Vec::new();
    encode_command(&[b"HELLO", b"3"], &mut request);
    encode_command(&[b"PING"], &mut request);
    conn.write_all(&request).unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8];
    while !seen.ends_with(b"+PONG\r\n") {
        conn.read_exact(&mut byte).unwrap();
        seen.push(byte[0]);
    }
    assert!(seen.starts_with(b"%"), "HELLO 3 answered {seen:?}");
}

#[test]
fn steady_state_proxy_requests_allocate_nothing() {
    let _serial = crate::counting::serial();
    crate::counting::trace_if_asked();
    let (a, b) = (Redis::start(), Redis::start());
    let names = vec![a.name(), b.name()];
    let mut config = Config {
        upstreams: names.clone(),
        // Rings exist before counting for every ring this load can hold at
        // once (4 clients × 2, 4 upstream connections (RESP2 and RESP3)
        // × 2, 4 lane queues: 20): the pool allocates only for a new peak of busy rings, not per
        // request, and under load a new peak could come at any time (a
        // fresh clone's CI once saw it: 1 allocation, from `Pool::take`).
        pool_prealloc: 64,
        ..crate::counting::server_config(Protocol::Resp)
    };
    config.validate().unwrap();
    let running = Server::new(config)
        .service_with(Proxy::new)
        .start()
        .expect("start the proxy");
    let mut conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let conn = util::connect(running.local_addr);
            conn.set_nodelay(true).unwrap();
            conn
        })
        .collect();
    // Half of them speak RESP3.
    for conn in conns.iter_mut().skip(CONNS / 2) {
        hello_3(conn);
    }
    // Two keys on different upstreams.
    let ring = Continuum::new(&names, KeyHash::Murmur).unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("{i}:alloc")).collect();
    let first = keys
        .iter()
        .find(|k| ring.upstream(k.as_bytes()) == 0)
        .unwrap();
    let second = keys
        .iter()
        .find(|k| ring.upstream(k.as_bytes()) == 1)
        .unwrap();
    let value = b"0123456789abcdef";
    let encode = |args: &[&[u8]]| {
        let mut bytes = Vec::new();
        encode_command(args, &mut bytes);
        bytes
    };
    // A SET on each upstream, a GET, and a split MGET, pipelined.
    let mut request = encode(&[b"SET", first.as_bytes(), value]);
    request.extend(encode(&[b"SET", second.as_bytes(), value]));
    request.extend(encode(&[b"GET", first.as_bytes()]));
    request.extend(encode(&[
        b"MGET",
        first.as_bytes(),
        second.as_bytes(),
        b"{x}gone",
    ]));
    let reply = |nil: &[u8]| {
        let mut reply = b"+OK\r\n+OK\r\n$16\r\n0123456789abcdef\r\n".to_vec();
        reply.extend(b"*3\r\n$16\r\n0123456789abcdef\r\n");
        reply.extend(b"$16\r\n0123456789abcdef\r\n");
        reply.extend(nil);
        reply
    };
    let resp2 = Round {
        request: request.clone(),
        reply: reply(b"$-1\r\n"),
    };
    // RESP3's null: the upstream's RESP3 connection wrote it.
    let resp3 = Round {
        request,
        reply: reply(b"_\r\n"),
    };
    let mut clients: Vec<Client> = conns
        .drain(..)
        .enumerate()
        .map(|(i, conn)| {
            let round = if i < CONNS / 2 { &resp2 } else { &resp3 };
            Client {
                conn,
                round,
                buffer: vec![0u8; round.reply.len()],
            }
        })
        .collect();
    let start = std::time::Instant::now();
    while start.elapsed() < WARMUP {
        run(&mut clients, 100);
    }

    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    run(&mut clients, MEASURED);
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);

    drop(clients);
    running.stopper()();
    running.wait();
    let requests = CONNS * MEASURED * 4;
    eprintln!("proxy: {allocations} allocations over {requests} requests");
    for trace in TRACES.lock().unwrap().iter() {
        eprintln!("allocation in the window:\n{trace}");
    }
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations over {requests} steady-state proxied requests"
    );
}
