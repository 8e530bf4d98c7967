//! Per-address limits: open connections and new connections a second,
//! per address (IPv6 per /64), exact across shards, behind HAProxy too.

use crate::util;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::{CLOSED, REJECTED, ip, refused, v2_header};
use util::haproxy::{Haproxy, connect_from};
use util::{Server, expect_closed, line_round_trip};

#[test]
fn one_address_is_held_to_its_limit_while_others_connect_normally() {
    util::raise_own_fd_limit();
    // Two shards: the limit holds for the process, whichever shard the
    // kernel gives a connection to.
    let server = Server::start(&[
        "--protocol",
        "line",
        "--threads",
        "2",
        "--max-conns-per-ip",
        "50",
    ]);
    let greedy: Vec<_> = (0..1000)
        .map(|_| connect_from(ip("127.0.0.2"), server.addr).unwrap())
        .collect();
    let mut others: Vec<_> = ["127.0.0.3", "127.0.0.4"]
        .iter()
        .flat_map(|source| (0..20).map(|_| connect_from(ip(source), server.addr).unwrap()))
        .collect();
    server.wait_metric(
        REJECTED,
        &[("reason", "per_ip")],
        950.0,
        Duration::from_secs(5),
    );
    for (n, client) in others.iter_mut().enumerate() {
        line_round_trip(client, format!("other {n}").as_bytes());
    }
    let (mut held, gone): (Vec<_>, Vec<_>) = greedy.into_iter().partition(|c| !refused(c));
    assert_eq!((held.len(), gone.len()), (50, 950));
    for (n, client) in held.iter_mut().enumerate() {
        line_round_trip(client, format!("held {n}").as_bytes());
    }
    assert_eq!(server.metric("holdfast_connections_open", &[]), 90.0);
    assert!(
        server
            .stderr_text()
            .contains("refused a connection from 127.0.0.2: --max-conns-per-ip 50 reached")
    );
    // Ten leave: ten more from that address fit, and no more.
    held.truncate(40);
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        80.0,
        Duration::from_secs(2),
    );
    for n in 0..10 {
        let mut client = connect_from(ip("127.0.0.2"), server.addr).unwrap();
        line_round_trip(&mut client, format!("newcomer {n}").as_bytes());
        held.push(client);
    }
    let mut over = connect_from(ip("127.0.0.2"), server.addr).unwrap();
    let (reply, _, _) = expect_closed(&mut over, Duration::from_secs(2));
    assert!(reply.is_empty());
    server.wait_metric(
        REJECTED,
        &[("reason", "per_ip")],
        951.0,
        Duration::from_secs(2),
    );
    drop((held, others));
    server.wait_metric(
        "holdfast_ip_table_entries",
        &[],
        0.0,
        Duration::from_secs(2),
    );
}

/// Opens connections from `source` back to back for `span`, each
/// answering one line or refused; returns how many were answered.
fn hammer(server: &Server, source: &str, span: Duration) -> usize {
    let mut answered = 0;
    let start = Instant::now();
    while start.elapsed() < span {
        let mut client = connect_from(ip(source), server.addr).unwrap();
        if client.write_all(b"ping\n").is_ok() {
            let mut reply = [0u8; 5];
            if client.read_exact(&mut reply).is_ok() {
                assert_eq!(&reply, b"ping\n");
                answered += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    answered
}

#[test]
fn new_connections_per_address_burst_then_keep_to_the_rate() {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--conn-rate-per-ip",
        "50",
        "--conn-burst-per-ip",
        "20",
    ]);
    // The burst: 20 at once are let in, the 21st right after is not.
    let burst: Vec<_> = (0..21)
        .map(|_| connect_from(ip("127.0.0.2"), server.addr).unwrap())
        .collect();
    server.wait_metric(
        REJECTED,
        &[("reason", "conn_rate")],
        1.0,
        Duration::from_secs(2),
    );
    assert!(refused(&burst[20]) && !burst[..20].iter().any(refused));
    drop(burst);
    // Then the rate: over 3 s of asking, 50 a second (the bucket is empty
    // or nearly so after the burst: at most one token of slack each way).
    std::thread::sleep(Duration::from_millis(400));
    let span = Duration::from_secs(3);
    let other = std::thread::scope(|scope| {
        let other = scope.spawn(|| hammer(&server, "127.0.0.3", Duration::from_millis(500)));
        let answered = hammer(&server, "127.0.0.2", span) as f64;
        // 400 ms of refill (20 tokens, the burst's size) plus 50 a second.
        let expected = 20.0 + 50.0 * span.as_secs_f64();
        eprintln!("{answered} connections answered in {span:?}, expected {expected}");
        assert!(
            (answered - expected).abs() <= expected * 0.1,
            "{answered} connections answered in {span:?}, expected about {expected}"
        );
        other.join().unwrap()
    });
    // Another address opening its own, meanwhile, is paced on its own.
    assert!(other >= 20, "127.0.0.3 got {other} answers");
}

#[test]
fn behind_haproxy_the_limit_counts_the_real_client_addresses() {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--proxy-protocol",
        "v2",
        "--proxy-trusted",
        "127.0.0.1",
        "--max-conns-per-ip",
        "3",
    ]);
    let haproxy = Haproxy::start(server.addr, "send-proxy-v2");
    // Every connection reaches holdfast from HAProxy's 127.0.0.1, but the
    // limit sees each client: 127.0.0.2 gets 3 of its 5, 127.0.0.3 all 3.
    let mut first: Vec<_> = (0..5)
        .map(|_| connect_from(ip("127.0.0.2"), haproxy.addr).unwrap())
        .collect();
    let mut second: Vec<_> = (0..3)
        .map(|_| connect_from(ip("127.0.0.3"), haproxy.addr).unwrap())
        .collect();
    for (n, client) in first.iter_mut().enumerate() {
        let _ = client.write_all(format!("first {n}\n").as_bytes());
    }
    for (n, client) in second.iter_mut().enumerate() {
        line_round_trip(client, format!("second {n}").as_bytes());
    }
    server.wait_metric(
        REJECTED,
        &[("reason", "per_ip")],
        2.0,
        Duration::from_secs(3),
    );
    server.wait_metric(
        CLOSED,
        &[("reason", "refused")],
        2.0,
        Duration::from_secs(3),
    );
    let mut answered = 0;
    for (n, client) in first.iter_mut().enumerate() {
        let mut reply = vec![0u8; format!("first {n}\n").len()];
        if client.read_exact(&mut reply).is_ok() {
            assert_eq!(reply, format!("first {n}\n").as_bytes());
            answered += 1;
        }
    }
    assert_eq!(answered, 3);
    assert!(
        server
            .stderr_text()
            .contains("refused a connection from 127.0.0.2: --max-conns-per-ip 3 reached")
    );
}

/// A binary PROXY header for a TCP over IPv6 client `source`.
fn v6_header(source: &str) -> Vec<u8> {
    let source: std::net::Ipv6Addr = source.parse().unwrap();
    let mut block = source.octets().to_vec();
    block.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    block.extend_from_slice(&[0x30, 0x39, 0x1b, 0x58]);
    v2_header(1, 0x21, &block)
}

#[test]
fn ipv6_clients_are_counted_per_64_by_default() {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--proxy-protocol",
        "v2",
        "--proxy-trusted",
        "127.0.0.1",
        "--max-conns-per-ip",
        "2",
    ]);
    let open = |source: &str| {
        let mut client = server.connect();
        client.write_all(&v6_header(source)).unwrap();
        client.write_all(b"hi\n").unwrap();
        let mut reply = [0u8; 3];
        let answered = client.read_exact(&mut reply).is_ok();
        (client, answered)
    };
    // Two hosts of one /64 share its two connections...
    let a = open("2001:db8:0:7::1");
    let b = open("2001:db8:0:7:ffff::2");
    let c = open("2001:db8:0:7::3");
    assert!(a.1 && b.1 && !c.1);
    // ...and the next /64 has its own.
    let d = open("2001:db8:0:8::1");
    assert!(d.1);
    server.wait_metric(
        REJECTED,
        &[("reason", "per_ip")],
        1.0,
        Duration::from_secs(2),
    );
    assert_eq!(server.metric("holdfast_ip_table_entries", &[]), 2.0);
}
