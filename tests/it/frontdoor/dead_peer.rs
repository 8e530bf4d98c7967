//! Peers that vanish: keepalive and user timeout, in a network namespace
//! the test makes, with an nftables rule that drops the packets.

use crate::util;

use std::io::Write;
use std::time::{Duration, Instant};

use super::CLOSED;
use util::{Server, line_round_trip};

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
