//! The PROXY protocol on the listener, driven by a real HAProxy and by
//! hand-made good and bad headers.

use crate::util;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::{CLOSED, REJECTED, ip, v2_header};
use util::haproxy::{Haproxy, connect_from};
use util::{Server, expect_closed, line_round_trip};

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
