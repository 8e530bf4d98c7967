//! No heap allocation per delivered message in steady state: a publish
//! to many subscribers reuses the rings its last burst returned to the
//! pool (a regression made every push allocate and zero a ring: the
//! memory budget's cap on the pool fell below the burst).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use holdfast::apps::kv::Kv;
use holdfast::apps::kv::store::Store;
use holdfast::engine::codec::Protocol;
use holdfast::engine::server::Server;

use crate::counting::{ALLOCATIONS, COUNTING, TRACES};

/// Subscribed connections.
const SUBSCRIBERS: usize = 200;
/// Publishes before counting starts, and while counting.
const WARMUP: usize = 300;
const MEASURED: usize = 1_000;

const PUBLISH: &[u8] = b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$8\r\nmessage!\r\n";
const SUBSCRIBED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
const DELIVERED: &[u8] = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$8\r\nmessage!\r\n";

/// `rounds` publishes, each read by every subscriber before the next;
/// allocation-free on this side (the buffers are the caller's).
fn publish(publisher: &mut TcpStream, subscribers: &mut [TcpStream], rounds: usize) {
    let mut reply = [0u8; 5];
    let mut message = [0u8; DELIVERED.len()];
    for _ in 0..rounds {
        publisher.write_all(PUBLISH).unwrap();
        publisher.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b":200\r", "receivers");
        let mut rest = [0u8; 1];
        publisher.read_exact(&mut rest).unwrap();
        for subscriber in subscribers.iter_mut() {
            subscriber.read_exact(&mut message).unwrap();
            assert_eq!(&message[..], DELIVERED);
        }
    }
}

#[test]
fn steady_state_publishes_allocate_nothing() {
    let _serial = crate::counting::serial();
    crate::counting::trace_if_asked();
    let mut config = crate::counting::server_config(Protocol::Resp);
    config.validate().unwrap();
    let store = Arc::new(Store::new(1, 0));
    let running = Server::new(config)
        .service_with(move |context| Kv::new(store.clone(), context))
        .start()
        .expect("start the server");
    let addr = running.local_addr;
    let mut subscribers: Vec<TcpStream> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut conn = TcpStream::connect(addr).unwrap();
            conn.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n")
                .unwrap();
            let mut confirmed = [0u8; SUBSCRIBED.len()];
            conn.read_exact(&mut confirmed).unwrap();
            assert_eq!(&confirmed[..], SUBSCRIBED);
            conn
        })
        .collect();
    let mut publisher = TcpStream::connect(addr).unwrap();
    publisher.set_nodelay(true).unwrap();

    publish(&mut publisher, &mut subscribers, WARMUP);
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    publish(&mut publisher, &mut subscribers, MEASURED);
    COUNTING.store(false, Ordering::SeqCst);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst);
    let delivered = (MEASURED * SUBSCRIBERS) as u64;
    eprintln!("pub/sub: {allocations} allocations for {delivered} deliveries");
    for trace in TRACES.lock().unwrap().iter() {
        eprintln!("allocation in the window:\n{trace}");
    }

    drop((subscribers, publisher));
    running.stopper()();
    running.wait();
    // None per delivery (or per publish). Not exactly none: unlike the
    // echo test's four connections, 201 connections' timers and queues
    // can reach a new peak size under a loaded machine's timing at any
    // time (a CI run saw 1), which is no per-message cost. The regression
    // this guards made 169000.
    assert!(
        allocations * 1000 < delivered,
        "{allocations} allocations for {delivered} deliveries"
    );
}
