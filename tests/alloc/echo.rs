//! Zero heap allocations per request in steady state.
//!
//! A counting global allocator wraps the system one; an in-process server
//! (echo, then frame) answers warm-up traffic, then the count is taken over
//! many more requests and must not move. The client side (blocking std
//! sockets, fixed buffers) allocates nothing per request either, so every
//! allocation counted would be the engine's.
//!
//! To see where an allocation comes from, run
//! `HOLDFAST_ALLOC_TRACE=1 cargo test --test alloc -- --nocapture`: the
//! first few allocations in the window are reported with a backtrace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;

use holdfast::config::Config;
use holdfast::engine::codec::Protocol;
use holdfast::engine::server::Server;

use crate::counting::{ALLOCATIONS, COUNTING, TRACES};

/// Connections driven at once.
const CONNS: usize = 4;
/// Payload bytes per request.
const SIZE: usize = 64;
/// Round trips per connection before counting starts.
const WARMUP: usize = 2_000;
/// Round trips per connection while counting.
const MEASURED: usize = 10_000;

/// One request on the wire for `protocol` (payload of [`SIZE`] bytes).
fn request(protocol: Protocol) -> Vec<u8> {
    let mut bytes = Vec::new();
    if protocol == Protocol::Frame {
        bytes.extend_from_slice(&(SIZE as u32).to_be_bytes());
    }
    bytes.extend((0..SIZE).map(|i| i as u8));
    bytes
}

/// `rounds` round trips on each connection, in lock step; allocation-free
/// (the buffers are the caller's).
fn round_trips(conns: &mut [TcpStream], request: &[u8], reply: &mut [u8], rounds: usize) {
    for _ in 0..rounds {
        for conn in conns.iter_mut() {
            conn.write_all(request).unwrap();
        }
        for conn in conns.iter_mut() {
            conn.read_exact(reply).unwrap();
            assert_eq!(reply, request, "wrong echo");
        }
    }
}

fn allocations_per_request(protocol: Protocol) -> (u64, u64) {
    let mut config = Config {
        // Every ring these connections can hold at once (an input and an
        // output each) exists before counting: the pool allocates only for
        // a new peak of busy rings, which is not a per-request cost, and
        // which load on the machine could make come at any time.
        pool_prealloc: 2 * CONNS,
        ..crate::counting::server_config(protocol)
    };
    config.validate().unwrap();
    let running = Server::new(config)
        .service(|| holdfast::apps::echo::Echo)
        .start()
        .expect("start the server");
    let addr: SocketAddr = running.local_addr;
    let mut conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let conn = TcpStream::connect(addr).unwrap();
            conn.set_nodelay(true).unwrap();
            conn
        })
        .collect();
    let request = request(protocol);
    let mut reply = vec![0u8; request.len()];

    round_trips(&mut conns, &request, &mut reply, WARMUP);
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    round_trips(&mut conns, &request, &mut reply, MEASURED);
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);

    drop(conns);
    running.stopper()();
    running.wait();
    (allocations, (CONNS * MEASURED) as u64)
}

#[test]
fn steady_state_requests_allocate_nothing() {
    let _serial = crate::counting::serial();
    crate::counting::trace_if_asked();
    // The counter itself works: one allocation in the window is seen.
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    drop(std::hint::black_box(Vec::<u8>::with_capacity(16)));
    COUNTING.store(false, Ordering::SeqCst);
    assert!(
        ALLOCATIONS.load(Ordering::SeqCst) >= 1,
        "the counter missed"
    );
    TRACES.lock().unwrap().clear();

    let mut report = Vec::new();
    for protocol in [Protocol::Echo, Protocol::Frame] {
        let (allocations, requests) = allocations_per_request(protocol);
        eprintln!(
            "{}: {allocations} allocations over {requests} requests",
            protocol.name()
        );
        report.push((protocol.name(), allocations, requests));
    }
    for trace in TRACES.lock().unwrap().iter() {
        eprintln!("allocation in the window:\n{trace}");
    }
    for (name, allocations, requests) in report {
        assert_eq!(
            allocations, 0,
            "{name}: {allocations} heap allocations over {requests} steady-state requests"
        );
    }
}
