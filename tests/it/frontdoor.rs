//! The front door (issue 14): the PROXY protocol header on the listener,
//! driven by a real HAProxy and by hand-made good and bad headers.

use crate::util;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use util::haproxy::{Haproxy, connect_from};
use util::{Server, expect_closed, line_round_trip};

const CLOSED: &str = "holdfast_connections_closed_total";
const REJECTED: &str = "holdfast_connections_rejected_total";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The binary signature, version 2, the command and family bytes, the
/// length, the address block.
fn v2_header(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x20 | command, family]);
    header.extend_from_slice(&(block.len() as u16).to_be_bytes());
    header.extend_from_slice(block);
    header
}

/// HAProxy relays clients from two loopback addresses to holdfast with
/// `send` (`send-proxy-v2` or `send-proxy`): every line is answered, and
/// holdfast names the real client addresses, not HAProxy's.
fn served_through_haproxy(mode: &str, send: &str) {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--proxy-protocol",
        mode,
        "--proxy-trusted",
        "127.0.0.1",
        "--log-level",
        "debug",
    ]);
    let haproxy = Haproxy::start(server.addr, send);
    for source in ["127.0.0.2", "127.0.0.3"] {
        let mut client = connect_from(ip(source), haproxy.addr).unwrap();
        for n in 0..3 {
            line_round_trip(&mut client, format!("{source} says {n}").as_bytes());
        }
    }
    let said = |who: &str| {
        server
            .stderr_text()
            .contains(&format!("PROXY header from {who}"))
    };
    assert!(
        util::wait_until(Duration::from_secs(2), || said("127.0.0.2")
            && said("127.0.0.3")),
        "holdfast did not name the clients' addresses:\n{}",
        server.stderr_text()
    );
    assert!(!said("127.0.0.1"), "{}", server.stderr_text());
    for reason in ["proxy_missing", "proxy_malformed", "proxy_timeout"] {
        assert_eq!(
            server.metric(CLOSED, &[("reason", reason)]),
            0.0,
            "{reason}"
        );
    }
}

#[test]
fn haproxy_send_proxy_v2_is_served_with_the_clients_addresses() {
    served_through_haproxy("v2", "send-proxy-v2");
}

#[test]
fn haproxy_send_proxy_v1_is_served_with_the_clients_addresses() {
    served_through_haproxy("v1", "send-proxy");
}

/// A connection that sends `bytes` and then `end`s (closes its side, or
/// waits for the server): the server closes it, and counts `reason`.
struct Bad {
    bytes: Vec<u8>,
    close: bool,
    reason: &'static str,
}

#[test]
fn bad_headers_close_their_connection_with_a_counted_reason() {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--proxy-protocol",
        "any",
        "--proxy-trusted",
        "127.0.0.0/8",
        "--proxy-timeout",
        "300ms",
    ]);
    let cases = [
        Bad {
            bytes: b"hello\n".to_vec(),
            close: false,
            reason: "proxy_missing",
        },
        Bad {
            bytes: b"PROXY TCP4 1.2.3.4\n".to_vec(),
            close: false,
            reason: "proxy_malformed",
        },
        Bad {
            bytes: b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\nhello\n".to_vec(),
            close: false,
            reason: "proxy_malformed",
        },
        Bad {
            bytes: v2_header(2, 0x11, &[0; 12]),
            close: false,
            reason: "proxy_malformed",
        },
        // Slow: a start of a header, then nothing.
        Bad {
            bytes: b"PROXY TCP4 1.2.3".to_vec(),
            close: false,
            reason: "proxy_timeout",
        },
        Bad {
            bytes: Vec::new(),
            close: false,
            reason: "proxy_timeout",
        },
        // Cut short by the client's close, or no byte at all.
        Bad {
            bytes: v2_header(1, 0x11, &[0; 12])[..20].to_vec(),
            close: true,
            reason: "proxy_malformed",
        },
        Bad {
            bytes: Vec::new(),
            close: true,
            reason: "proxy_missing",
        },
    ];
    let mut expected = std::collections::HashMap::new();
    for case in &cases {
        let started = Instant::now();
        let mut client = server.connect();
        client.write_all(&case.bytes).unwrap();
        if case.close {
            client.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let (reply, _, _) = expect_closed(&mut client, Duration::from_secs(3));
        assert!(reply.is_empty(), "{:?} was answered {reply:?}", case.bytes);
        if case.reason == "proxy_timeout" {
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(280) && waited < Duration::from_millis(1500),
                "closed after {waited:?}"
            );
        }
        *expected.entry(case.reason).or_insert(0.0) += 1.0;
        server.wait_metric(
            CLOSED,
            &[("reason", case.reason)],
            expected[case.reason],
            Duration::from_secs(2),
        );
    }
    // The server goes on: a good header is served, bytes after it intact.
    let mut good = server.connect();
    let mut block = vec![192, 0, 2, 9, 127, 0, 0, 1];
    block.extend_from_slice(&[0x9c, 0x40, 0x1b, 0x58]);
    good.write_all(&v2_header(1, 0x11, &block)).unwrap();
    good.write_all(b"first\nsec").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    good.write_all(b"ond\n").unwrap();
    let mut reply = [0u8; 13];
    good.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"first\nsecond\n");
    assert_eq!(server.metric(CLOSED, &[("reason", "peer")]), 0.0);
}

#[test]
fn a_source_not_trusted_is_refused_at_accept() {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--proxy-protocol",
        "v2",
        "--proxy-trusted",
        "127.0.0.2,10.0.0.0/8",
    ]);
    let mut stranger = connect_from(ip("127.0.0.3"), server.addr).unwrap();
    let header = v2_header(0, 0, &[]);
    let _ = stranger.write_all(&header);
    let (reply, _, _) = expect_closed(&mut stranger, Duration::from_secs(2));
    assert!(reply.is_empty());
    server.wait_metric(
        REJECTED,
        &[("reason", "proxy_untrusted")],
        1.0,
        Duration::from_secs(2),
    );
    assert!(
        server
            .stderr_text()
            .contains("refused a connection from 127.0.0.3: not in --proxy-trusted"),
        "{}",
        server.stderr_text()
    );
    // A trusted balancer's health check (LOCAL) is served as itself.
    let mut balancer = connect_from(ip("127.0.0.2"), server.addr).unwrap();
    balancer.write_all(&header).unwrap();
    line_round_trip(&mut balancer, b"still here");
    assert_eq!(
        server.metric("holdfast_connections_accepted_total", &[]),
        1.0
    );
}

/// Whether the server closed `stream` (it was refused), after the refusal
/// had time to arrive.
fn refused(stream: &std::net::TcpStream) -> bool {
    util::poll_state(stream).is_err()
}

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

#[test]
fn a_connection_over_its_request_rate_is_paced_and_loses_no_byte() {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--request-rate",
        "200",
        "--request-burst",
        "400",
    ]);
    // 1000 lines of different lengths, sent as fast as TCP takes them.
    let lines: Vec<Vec<u8>> = (0..1000)
        .map(|n| format!("line {n} {}\n", "x".repeat(n % 50)).into_bytes())
        .collect();
    let sent: Vec<u8> = lines.concat();
    let mut client = server.connect();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = client.try_clone().unwrap();
    let start = Instant::now();
    let (got, burst_done, done) = std::thread::scope(|scope| {
        scope.spawn(|| writer.write_all(&sent).unwrap());
        // Meanwhile another connection is served at once: the rate is
        // each connection's own.
        let mut other = server.connect();
        for n in 0..20 {
            let asked = Instant::now();
            line_round_trip(&mut other, format!("other {n}").as_bytes());
            assert!(
                asked.elapsed() < Duration::from_millis(500),
                "{:?}",
                asked.elapsed()
            );
        }
        let burst_bytes: usize = lines[..400].iter().map(Vec::len).sum();
        let mut got = vec![0u8; sent.len()];
        client.read_exact(&mut got[..burst_bytes]).unwrap();
        let burst_done = start.elapsed();
        client.read_exact(&mut got[burst_bytes..]).unwrap();
        (got, burst_done, start.elapsed())
    });
    assert!(got == sent, "the replies differ from the lines sent");
    // The burst comes at once (at the rate alone it would take 2 s), the
    // other 600 at 200 a second: 3 s.
    eprintln!("400 lines in {burst_done:?}, 1000 in {done:?}");
    assert!(
        burst_done < Duration::from_millis(1000),
        "the burst took {burst_done:?}"
    );
    let expected = 3.0;
    let took = done.as_secs_f64();
    assert!(
        (took - expected).abs() <= expected * 0.1,
        "1000 lines took {took:.2} s, expected {expected} s"
    );
    assert!(server.metric("holdfast_throttled_total", &[]) >= 1.0);
    let throttled = server.metric("holdfast_throttled_seconds_total", &[]);
    // Counted in whole milliseconds per pause: a little slack.
    assert!(
        throttled >= 2.0 && throttled <= took + 0.1,
        "throttled {throttled} s of {took:.3} s"
    );
    // Nothing was closed or dropped: the connection goes on at its rate.
    line_round_trip(&mut client, b"after");
}

#[test]
fn a_throttled_connection_is_not_read_beyond_its_ring() {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--buffer",
        "4KiB",
        "--request-rate",
        "10",
        "--request-burst",
        "10",
    ]);
    let line = format!("{}\n", "y".repeat(99));
    // More than loopback's socket buffers hold (a few MiB each way).
    let flood = line.repeat(320_000);
    let mut client = server.connect();
    let taken = util::write_nonblocking(&mut client, flood.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    // TCP pushed back: the server read what its ring holds and what it
    // served (10 at once, then 10 a second), no more.
    let read = server.metric("holdfast_bytes_read_total", &[]);
    let served = server.metric("holdfast_frames_total", &[]);
    assert!((10.0..=25.0).contains(&served), "{served} frames served");
    assert!(
        read <= 4096.0 + served * 100.0,
        "{read} bytes read, {served} served"
    );
    assert!(
        taken < flood.len(),
        "the client's socket took all {taken} bytes"
    );
    assert_eq!(server.metric("holdfast_connections_open", &[]), 1.0);
}

#[test]
fn keepalive_closes_a_peer_that_vanished() {
    util::netns::isolated(|| {
        let server = Server::start(&[
            "--protocol",
            "line",
            "--tcp-keepalive",
            "1s,1s,2",
            "--idle-timeout",
            "1m",
        ]);
        let mut gone = server.connect();
        let mut alive = server.connect();
        line_round_trip(&mut gone, b"soon gone");
        line_round_trip(&mut alive, b"staying");
        // The peer vanishes: no FIN, no reset, nothing at all either way.
        // (The server's keepalive clock runs from the last round trip.)
        let vanished = Instant::now();
        let port = gone.local_addr().unwrap().port();
        util::netns::drop_tcp(&[("sport", port), ("dport", port)]);
        // Quiet for 1 s, then 2 probes 1 s apart go unanswered: about 3 s,
        // long before the idle timeout.
        server.wait_metric(
            CLOSED,
            &[("reason", "dead_peer")],
            1.0,
            Duration::from_secs(10),
        );
        let took = vanished.elapsed();
        assert!(took >= Duration::from_millis(2000), "closed after {took:?}");
        assert_eq!(server.metric(CLOSED, &[("reason", "idle_timeout")]), 0.0);
        // The peer that answers its probes stays.
        line_round_trip(&mut alive, b"still here");
        assert_eq!(server.metric("holdfast_connections_open", &[]), 1.0);
    });
}

#[test]
fn user_timeout_closes_a_peer_that_stopped_acknowledging() {
    util::netns::isolated(|| {
        let server = Server::start(&[
            "--protocol",
            "line",
            "--tcp-user-timeout",
            "1s",
            "--write-timeout",
            "1m",
            "--idle-timeout",
            "1m",
        ]);
        let mut client = server.connect();
        line_round_trip(&mut client, b"hello");
        // The server's packets to the client are lost from now on: its
        // reply to the next line is never acknowledged.
        let port = client.local_addr().unwrap().port();
        util::netns::drop_tcp(&[("dport", port)]);
        client.write_all(b"unanswered\n").unwrap();
        let sent = Instant::now();
        server.wait_metric(
            CLOSED,
            &[("reason", "dead_peer")],
            1.0,
            Duration::from_secs(10),
        );
        let took = sent.elapsed();
        assert!(took >= Duration::from_millis(900), "closed after {took:?}");
        assert_eq!(server.metric(CLOSED, &[("reason", "write_timeout")]), 0.0);
    });
}

/// `ss`'s view of the established sockets matching `filter`.
fn sockets(filter: &str) -> String {
    let args = ["-tnoH", "state", "established", filter];
    let out = std::process::Command::new("ss")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn keepalive_is_set_on_client_and_upstream_sockets() {
    let redis = util::Redis::start();
    let server = Server::start_proxy(&["--upstream", &redis.name(), "--tcp-keepalive", "7s,3s,4"]);
    let mut client = util::Resp::connect(server.addr);
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    // holdfast's side of the client's connection, and its connection to
    // the upstream: each has its keepalive timer running.
    let accepted = sockets(&format!("( sport = :{} )", server.addr.port()));
    let upstream = sockets(&format!("( dport = :{} )", redis.port));
    for (what, lines) in [("client", &accepted), ("upstream", &upstream)] {
        assert!(lines.contains("timer:(keepalive,"), "{what}: {lines}");
    }
    // Without the flag: no keepalive.
    let plain = Server::start(&["--protocol", "line"]);
    let mut other = plain.connect();
    line_round_trip(&mut other, b"plain");
    let accepted = sockets(&format!("( sport = :{} )", plain.addr.port()));
    assert!(
        !accepted.is_empty() && !accepted.contains("keepalive"),
        "{accepted}"
    );
}

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
