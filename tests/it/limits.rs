//! `--max-conns`: connections over the cap are accepted and closed at once
//! (counted as rejected); the ones within it are unaffected, and a freed
//! slot is reusable.

use crate::util;

use std::time::Duration;

use util::{Server, echo_round_trip, expect_closed};

const REJECTED: &str = "holdfast_connections_rejected_total";

#[test]
fn max_conns_rejects_the_excess_and_frees_slots() {
    let server = Server::start(&["--protocol", "echo", "--max-conns", "5"]);
    let baseline = server.fd_baseline();

    let mut held: Vec<_> = (0..5).map(|_| server.connect()).collect();
    for (i, client) in held.iter_mut().enumerate() {
        echo_round_trip(client, format!("client {i}").as_bytes());
    }

    for extra in 0..2 {
        let mut over = server.connect();
        let (bytes, _, _) = expect_closed(&mut over, Duration::from_secs(1));
        assert!(bytes.is_empty(), "over-cap client {extra} got {bytes:?}");
    }
    server.wait_metric(
        REJECTED,
        &[("reason", "max_conns")],
        2.0,
        Duration::from_secs(2),
    );
    assert_eq!(server.metric(REJECTED, &[("reason", "fd_limit")]), 0.0);
    assert_eq!(
        server.metric("holdfast_connections_accepted_total", &[]),
        5.0
    );

    // The five are unaffected.
    for (i, client) in held.iter_mut().enumerate() {
        echo_round_trip(client, format!("client {i} again").as_bytes());
    }

    // Two leave; two newcomers fit.
    held.truncate(3);
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        3.0,
        Duration::from_secs(2),
    );
    for i in 0..2 {
        let mut newcomer = server.connect();
        echo_round_trip(&mut newcomer, format!("newcomer {i}").as_bytes());
        held.push(newcomer);
    }
    // And the cap still holds.
    let mut over = server.connect();
    expect_closed(&mut over, Duration::from_secs(1));
    server.wait_metric(
        REJECTED,
        &[("reason", "max_conns")],
        3.0,
        Duration::from_secs(2),
    );
    for (i, client) in held.iter_mut().enumerate() {
        echo_round_trip(client, format!("last {i}").as_bytes());
    }

    drop(held);
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        0.0,
        Duration::from_secs(2),
    );
    server.assert_fds_return(baseline, Duration::from_secs(2));
}

#[test]
fn max_conns_is_process_wide_across_shards() {
    // Two shards, each with its own listener (SO_REUSEPORT): the cap counts
    // connections over both.
    let server = Server::start(&["--protocol", "echo", "--max-conns", "4", "--threads", "2"]);
    let mut held: Vec<_> = (0..4).map(|_| server.connect()).collect();
    for (i, client) in held.iter_mut().enumerate() {
        echo_round_trip(client, format!("client {i}").as_bytes());
    }
    for _ in 0..4 {
        let mut over = server.connect();
        expect_closed(&mut over, Duration::from_secs(1));
    }
    server.wait_metric(
        REJECTED,
        &[("reason", "max_conns")],
        4.0,
        Duration::from_secs(2),
    );
    assert_eq!(
        server.metric("holdfast_connections_accepted_total", &[]),
        4.0
    );
    assert_eq!(server.metric("holdfast_connections_open", &[]), 4.0);
    for (i, client) in held.iter_mut().enumerate() {
        echo_round_trip(client, format!("client {i} again").as_bytes());
    }
}

#[test]
fn idle_connections_hold_no_rings() {
    // An idle connection gives its rings back to the pool, so a thousand
    // of them, each having made a round trip, cost far less than a thousand
    // pairs of 64 KiB rings (125 MiB).
    const CONNS: usize = 1000;
    util::raise_own_fd_limit();
    let server = Server::start(&["--protocol", "echo"]);
    let baseline_fds = server.fd_baseline();
    let baseline_rss = server.rss_bytes();
    let mut clients = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        let mut client = server.connect();
        echo_round_trip(&mut client, format!("conn {i}").as_bytes());
        clients.push(client);
    }
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        CONNS as f64,
        Duration::from_secs(3),
    );
    let growth = server.rss_bytes().saturating_sub(baseline_rss);
    // The pool keeps at most 64 idle rings per shard (4 MiB); the rest is
    // per-connection bookkeeping, a few hundred bytes each.
    let bound = 8u64 << 20;
    assert!(
        growth < bound,
        "RSS grew by {growth} bytes holding {CONNS} idle connections; bound {bound}"
    );
    // They all still work.
    for (i, client) in clients.iter_mut().enumerate().step_by(50) {
        echo_round_trip(client, format!("again {i}").as_bytes());
    }
    drop(clients);
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        0.0,
        Duration::from_secs(3),
    );
    server.assert_fds_return(baseline_fds, Duration::from_secs(3));
}

/// The descriptors the server reserves for each shard when it sizes
/// `--max-conns` cover what a shard really holds: with upstreams the epoll
/// driver keeps a second handle on its epoll instance, which a reservation
/// of 4 per shard left out.
#[test]
fn fd_reservation_covers_what_a_proxy_shard_holds() {
    use holdfast::config::{Backend, Config};
    use holdfast::engine::codec::Protocol;
    use holdfast::engine::server::{Server, fds_reserved_per_shard};

    let backends: &[Backend] = if cfg!(feature = "uring") {
        &[Backend::Epoll, Backend::Uring]
    } else {
        &[Backend::Epoll]
    };
    for &backend in backends {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: None,
            threads: 2,
            protocol: Protocol::Resp,
            log_level: log::LevelFilter::Off,
            backend: Some(backend),
            // Never connected: no request is sent.
            upstreams: vec!["127.0.0.1:1".into()],
            ..Config::default()
        };
        config.validate().unwrap();
        let reserved = fds_reserved_per_shard(&config);
        // A lane per --upstream-conns and dialect (RESP2, RESP3).
        let dialects = holdfast::engine::service::Dialect::ALL.len();
        let lanes = config.upstreams.len() * config.upstream_conns * dialects;
        let running = Server::new(config)
            .service_with(holdfast::apps::proxy::Proxy::new)
            .start()
            .expect("start the proxy");
        // A uring shard counts its ring once its thread has made it.
        let _ = util::connect(running.local_addr);
        for (index, shard) in running.registry.shards.iter().enumerate() {
            assert!(
                util::wait_until(Duration::from_secs(2), || shard.fds_own.get() > 0),
                "shard {index} never counted its descriptors"
            );
            let own = shard.fds_own.get() as usize;
            assert!(
                own + lanes <= reserved,
                "{backend:?}: shard {index} holds {own} descriptors and up to {lanes} upstream \
                 connections; {reserved} reserved"
            );
        }
        running.stopper()();
        running.wait();
    }
}

/// A soft fd limit that cannot be raised to the hard one (here a seccomp
/// filter denies setting limits) stops the start with a line that says so.
#[test]
fn failing_to_raise_the_fd_limit_is_reported_as_such() {
    let deny = util::deny_io_uring();
    let (status, _, stderr) = util::run_via_to_exit(
        std::path::Path::new("/bin/sh"),
        &[
            "-c",
            "ulimit -Sn 1024 && exec \"$@\"",
            "sh",
            deny.to_str().unwrap(),
            "--rlimit",
        ],
        &["serve", "--listen", "127.0.0.1:0", "--admin", "off"],
        Duration::from_secs(10),
    );
    let status = status.expect("exits by itself");
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("raising RLIMIT_NOFILE to its hard limit: "),
        "stderr:\n{stderr}"
    );
}
