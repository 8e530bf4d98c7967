//! What happens when upstreams misbehave, through `holdfast proxy`: a slow
//! upstream produces timeouts, not a pile-up; a dead one opens its breaker
//! and fails fast, and is used again once it returns (through half-open);
//! a connect to a blackholed address times out; only the dead upstream's
//! keys fail; pools and pending replies stay within their bounds; health
//! checks find a dead upstream, and its return, with no client traffic.

use crate::util;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use holdfast::apps::proxy::hash::{Continuum, KeyHash};
use util::{Blackhole, Redis, Resp, Server, wait_until};

const UNAVAILABLE: &[u8] = b"-ERR upstream unavailable\r\n";
const TIMED_OUT: &[u8] = b"-ERR upstream timed out\r\n";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn breaker(server: &Server, upstream: &str, state: &str) -> f64 {
    server.metric(
        "holdfast_upstream_breaker_state",
        &[("upstream", upstream), ("state", state)],
    )
}

#[test]
fn a_slow_upstream_gives_timeouts_not_a_pile_up() {
    let slow = Server::start(&["--protocol", "resp", "--enable-debug-commands"]);
    let name = slow.addr.to_string();
    let server = Server::start_proxy(&[
        "--upstream",
        &name,
        "--upstream-timeout",
        "200ms",
        "--breaker-cool-down",
        "300ms",
        "--max-pending",
        "16",
    ]);
    assert_eq!(
        Resp::connect(server.addr).call(&[b"SET", b"k", b"v"]),
        b"+OK\r\n"
    );
    let rss_before = server.rss_bytes();
    // Keep the upstream stuck: each DEBUG SLEEP holds its only shard.
    let stop = Arc::new(AtomicBool::new(false));
    let staller = {
        let (stop, addr) = (stop.clone(), slow.addr);
        std::thread::spawn(move || {
            let mut staller = Resp::connect(addr);
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(staller.call(&[b"DEBUG", b"SLEEP", b"1000"]), b"+OK\r\n");
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    // A pipelining client too, against --max-pending.
    let piper = {
        let addr = server.addr;
        std::thread::spawn(move || {
            let mut client = Resp::connect(addr);
            for _ in 0..20 {
                for _ in 0..64 {
                    client.send(&[b"GET", b"k"]);
                }
                for _ in 0..64 {
                    let reply = client.reply();
                    assert!(
                        reply == b"$1\r\nv\r\n" || reply == TIMED_OUT || reply == UNAVAILABLE,
                        "{}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            }
        })
    };
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut client = Resp::connect(addr);
                let mut latencies = Vec::new();
                let mut timeouts = 0;
                let until = Instant::now() + Duration::from_millis(2500);
                while Instant::now() < until {
                    let start = Instant::now();
                    let reply = client.call(&[b"GET", b"k"]);
                    latencies.push(start.elapsed());
                    if reply == TIMED_OUT {
                        timeouts += 1;
                    } else {
                        assert!(
                            reply == b"$1\r\nv\r\n" || reply == UNAVAILABLE,
                            "{}",
                            String::from_utf8_lossy(&reply)
                        );
                    }
                }
                (latencies, timeouts)
            })
        })
        .collect();
    let mut pending_max = 0.0f64;
    let mut rss_max = 0;
    while !clients.iter().all(|c| c.is_finished()) {
        pending_max = pending_max.max(server.metric("holdfast_pending_replies", &[]));
        rss_max = rss_max.max(server.rss_bytes());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut latencies = Vec::new();
    let mut timeouts = 0;
    for client in clients {
        let (mine, timed_out) = client.join().unwrap();
        latencies.extend(mine);
        timeouts += timed_out;
    }
    piper.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    eprintln!(
        "{} requests, {timeouts} timed out, p50 {:?}, p99 {p99:?}, max {:?}, pending max {pending_max}, rss +{} KiB",
        latencies.len(),
        percentile(&latencies, 0.5),
        latencies.last().unwrap(),
        rss_max.saturating_sub(rss_before) / 1024
    );
    assert!(
        timeouts > 0,
        "the upstream was never slow enough to time out"
    );
    // Each request is answered near the timeout at worst: nothing queues
    // behind a stuck upstream.
    assert!(p99 <= Duration::from_millis(450), "p99 {p99:?}");
    // 8 clients with one request each, one pipelining client held to 16.
    assert!(
        pending_max <= 8.0 + 16.0,
        "pending replies reached {pending_max}"
    );
    assert!(
        rss_max.saturating_sub(rss_before) < 32 << 20,
        "memory grew by {} KiB",
        (rss_max - rss_before) / 1024
    );
    staller.join().unwrap();
    // Once the upstream is back, requests are served again (through the
    // breaker's half-open probes if it opened).
    let mut client = Resp::connect(server.addr);
    let served = wait_until(Duration::from_secs(5), || {
        client.call(&[b"GET", b"k"]) == b"$1\r\nv\r\n"
    });
    assert!(served, "requests never succeeded again");
}

#[test]
fn a_killed_upstream_opens_its_breaker_fails_fast_and_recovers() {
    let mut redis = Redis::start();
    let name = redis.name();
    let server = Server::start_proxy(&[
        "--upstream",
        &name,
        "--breaker-cool-down",
        "1s",
        "--reconnect-base",
        "10ms",
        "--reconnect-max",
        "50ms",
    ]);
    let mut client = Resp::connect(server.addr);
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    redis.kill();
    // Connect failures (refused) open the breaker after three in a row.
    let opened = wait_until(Duration::from_secs(5), || {
        let reply = client.call(&[b"GET", b"k"]);
        assert!(reply.starts_with(b"-ERR upstream"), "{reply:?}");
        breaker(&server, &name, "open") == 1.0
    });
    assert!(opened, "the breaker did not open");
    // Open: every request fails at once, without touching the network.
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let reply = client.call(&[b"GET", b"k"]);
        latencies.push(start.elapsed());
        assert_eq!(reply, UNAVAILABLE);
    }
    latencies.sort();
    let median = percentile(&latencies, 0.5);
    let max = *latencies.last().unwrap();
    eprintln!("fail fast: median {median:?}, max {max:?}");
    assert!(median < Duration::from_millis(1), "median {median:?}");
    assert!(max < Duration::from_millis(50), "max {max:?}");
    let fail_fast = server.metric(
        "holdfast_upstream_fail_fast_total",
        &[("upstream", &name), ("reason", "breaker_open")],
    );
    assert!(fail_fast >= 200.0, "{fail_fast}");
    // The upstream returns: after the cool-down, probes go through and
    // close the breaker.
    let restarted = (0..50).find_map(|_| {
        Redis::start_on(redis.port).or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        })
    });
    let _redis = restarted.expect("restarting redis-server on its port");
    let recovered = wait_until(Duration::from_secs(10), || {
        client.call(&[b"SET", b"k", b"again"]) == b"+OK\r\n"
    });
    assert!(recovered, "requests never succeeded again");
    assert_eq!(client.call(&[b"GET", b"k"]), b"$5\r\nagain\r\n");
    let closed = wait_until(Duration::from_secs(5), || {
        client.call(&[b"GET", b"k"]);
        breaker(&server, &name, "closed") == 1.0
    });
    assert!(closed, "the breaker did not close");
    let transition = |from: &str, to: &str| {
        server.metric(
            "holdfast_upstream_breaker_transitions_total",
            &[("upstream", &name), ("from", from), ("to", to)],
        )
    };
    assert!(transition("closed", "open") >= 1.0);
    assert!(transition("open", "half_open") >= 1.0);
    assert!(transition("half_open", "closed") >= 1.0);
}

#[test]
fn health_checks_find_a_dead_upstream_and_its_return_before_a_client_does() {
    let mut redis = Redis::start();
    let name = redis.name();
    let port = redis.port;
    let server = Server::start_proxy(&[
        "--upstream",
        &name,
        "--threads",
        "1",
        "--health-check-interval",
        "50ms",
        "--breaker-cool-down",
        "500ms",
        "--upstream-timeout",
        "200ms",
        "--reconnect-base",
        "10ms",
        "--reconnect-max",
        "20ms",
    ]);
    let checks = |server: &Server| {
        server.metric(
            "holdfast_upstream_health_checks_total",
            &[("upstream", &name)],
        )
    };
    // Checks go out with no client at all.
    let sent = wait_until(Duration::from_secs(5), || checks(&server) >= 3.0);
    assert!(sent, "{} health checks", checks(&server));
    assert_eq!(breaker(&server, &name, "closed"), 1.0);
    redis.kill();
    // Still no client: the checks' failed connects open the breaker.
    let opened = wait_until(Duration::from_secs(5), || {
        breaker(&server, &name, "open") == 1.0
    });
    assert!(opened, "the breaker did not open without traffic");
    let requests = server.metric("holdfast_upstream_requests_total", &[("upstream", &name)]);
    assert_eq!(requests, 0.0, "no client request was needed");
    // The first client request fails at once, without a connect of its own.
    let mut client = Resp::connect(server.addr);
    assert_eq!(client.call(&[b"GET", b"k"]), UNAVAILABLE);
    // The upstream returns: the checks probe the half-open breaker and
    // close it, and the next client request succeeds at its first try.
    let restarted = (0..50).find_map(|_| {
        Redis::start_on(port).or_else(|| {
            std::thread::sleep(Duration::from_millis(100));
            None
        })
    });
    let _redis = restarted.expect("restarting redis-server on its port");
    let before = checks(&server);
    let closed = wait_until(Duration::from_secs(10), || {
        breaker(&server, &name, "closed") == 1.0
    });
    assert!(closed, "the breaker did not close without traffic");
    assert!(checks(&server) > before);
    assert_eq!(client.call(&[b"SET", b"k", b"back"]), b"+OK\r\n");
}

#[test]
fn without_health_checks_the_first_client_pays() {
    let mut redis = Redis::start();
    let name = redis.name();
    let server = Server::start_proxy(&["--upstream", &name, "--health-check-interval", "0"]);
    let mut client = Resp::connect(server.addr);
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    redis.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(breaker(&server, &name, "closed"), 1.0);
    let checks = server.metric(
        "holdfast_upstream_health_checks_total",
        &[("upstream", &name)],
    );
    assert_eq!(checks, 0.0);
    let reply = client.call(&[b"GET", b"k"]);
    assert!(reply.starts_with(b"-ERR upstream"), "{reply:?}");
}

#[test]
fn a_connect_to_a_blackhole_times_out() {
    let hole = Blackhole::new();
    let name = hole.addr.to_string();
    let server = Server::start_proxy(&[
        "--upstream",
        &name,
        "--connect-timeout",
        "200ms",
        "--upstream-timeout",
        "5s",
    ]);
    let mut client = Resp::connect(server.addr);
    for _ in 0..3 {
        let start = Instant::now();
        let reply = client.call(&[b"GET", b"k"]);
        let took = start.elapsed();
        // The first waits out the connect timeout; the next ones fail at
        // once while the reconnect backs off, or time out connecting again.
        assert!(
            reply == b"-ERR upstream connection failed\r\n" || reply == UNAVAILABLE,
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    let connect_errors = server.metric(
        "holdfast_upstream_errors_total",
        &[("upstream", &name), ("kind", "connect")],
    );
    assert!(connect_errors >= 1.0, "{connect_errors}");
    // No connection is left half-made.
    server.wait_metric(
        "holdfast_upstream_connections",
        &[("upstream", &name), ("state", "connecting")],
        0.0,
        Duration::from_secs(2),
    );
}

#[test]
fn only_the_dead_upstreams_keys_fail() {
    let (live, mut dead) = (Redis::start(), Redis::start());
    let names = [live.name(), dead.name()];
    let ring = Continuum::new(&names, KeyHash::Murmur).unwrap();
    let server = Server::start_proxy(&["--upstream", &names[0], "--upstream", &names[1]]);
    let mut client = Resp::connect(server.addr);
    let keys: Vec<String> = (0..40).map(|i| format!("{i}:key")).collect();
    for key in &keys {
        assert_eq!(client.call(&[b"SET", key.as_bytes(), b"x"]), b"+OK\r\n");
    }
    dead.kill();
    let mut failed = 0;
    for round in 0..20 {
        for key in &keys {
            let start = Instant::now();
            let reply = client.call(&[b"GET", key.as_bytes()]);
            if ring.upstream(key.as_bytes()) == 0 {
                assert_eq!(reply, b"$1\r\nx\r\n", "{key} on the live upstream");
            } else {
                assert!(reply.starts_with(b"-ERR upstream"), "{reply:?}");
                failed += 1;
                if round > 0 {
                    // Refused, or failing to connect at once: never slow.
                    assert!(start.elapsed() < Duration::from_millis(50));
                }
            }
        }
    }
    assert!(failed > 0, "no key on the dead upstream");
}

#[test]
fn pools_never_exceed_their_bound() {
    let redis = Redis::start();
    let name = redis.name();
    let server = Server::start_proxy(&[
        "--upstream",
        &name,
        "--threads",
        "2",
        "--upstream-conns",
        "2",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let (addr, stop) = (server.addr, stop.clone());
            std::thread::spawn(move || {
                let mut client = Resp::connect(addr);
                let key = format!("{i}:pool");
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..8 {
                        client.send(&[b"INCR", key.as_bytes()]);
                    }
                    for _ in 0..8 {
                        assert_eq!(client.reply()[0], b':');
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(2);
    let mut most = 0;
    while Instant::now() < until {
        most = most.max(redis.connected_clients());
        let scrape = server.scrape();
        let open = ["in_use", "idle", "connecting"]
            .iter()
            .map(|state| {
                util::metric(
                    &scrape,
                    "holdfast_upstream_connections",
                    &[("upstream", &name), ("state", state)],
                )
            })
            .sum::<f64>();
        assert!(open <= 4.0, "{open} upstream connections");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let rounds: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(rounds > 32, "the load did not run ({rounds} rounds)");
    // 2 shards × 2 connections.
    assert!(most <= 4, "redis saw {most} connections from the proxy");
    assert!(most >= 1);
}

#[test]
fn max_pending_holds_a_pipelining_client_back() {
    let slow = Server::start(&["--protocol", "resp", "--enable-debug-commands"]);
    let name = slow.addr.to_string();
    let server = Server::start_proxy(&[
        "--upstream",
        &name,
        "--max-pending",
        "8",
        "--upstream-timeout",
        "5s",
    ]);
    let mut staller = Resp::connect(slow.addr);
    staller.send(&[b"DEBUG", b"SLEEP", b"600"]);
    std::thread::sleep(Duration::from_millis(50));
    let mut client = Resp::connect(server.addr);
    let mut batch = Vec::new();
    for i in 0..2000 {
        holdfast::engine::codec::resp::encode_command(
            &[b"ECHO", format!("{i}").as_bytes()],
            &mut batch,
        );
        holdfast::engine::codec::resp::encode_command(&[b"GET", b"nothing"], &mut batch);
    }
    let written = util::write_nonblocking(&mut client.stream, &batch).unwrap();
    let mut pending_max = 0.0f64;
    for _ in 0..10 {
        pending_max = pending_max.max(server.metric("holdfast_pending_replies", &[]));
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(pending_max <= 8.0, "{pending_max} replies pending");
    assert!(
        pending_max >= 1.0,
        "nothing was pending: the test proves nothing"
    );
    client.stream.write_all(&batch[written..]).unwrap();
    for i in 0..2000 {
        let echoed = format!("{i}");
        assert_eq!(
            client.reply(),
            format!("${}\r\n{echoed}\r\n", echoed.len()).into_bytes()
        );
        assert_eq!(client.reply(), b"$-1\r\n");
    }
    assert_eq!(staller.reply(), b"+OK\r\n");
}

const REPLY_TOO_LARGE: &[u8] = b"-ERR upstream reply too large for the connection buffer\r\n";
const UNBALANCED: &[u8] = b"-ERR Protocol error: unbalanced quotes in request\r\n";

/// What one client sends must not fail another's requests: a client
/// asking for a value larger than `--buffer`, or sending inline commands
/// Redis would reject, shares the upstream connection with a victim that
/// pipelines at full speed; the victim sees no error and the breaker stays
/// closed.
#[test]
fn oversized_replies_and_bad_inline_commands_fail_only_their_client() {
    let redis = Redis::start();
    let name = redis.name();
    // Default --buffer (64KiB) and one shard: every client shares one lane.
    let server = Server::start_proxy(&["--upstream", &name]);
    let mut setup = redis.client();
    assert_eq!(
        setup.call(&[b"SETRANGE", b"big", b"70000", b"x"]),
        b":70001\r\n"
    );
    assert_eq!(setup.call(&[b"SET", b"a", b"1"]), b"+OK\r\n");
    let stop = Arc::new(AtomicBool::new(false));
    let victim = {
        let (addr, stop) = (server.addr, stop.clone());
        std::thread::spawn(move || {
            let mut client = Resp::connect(addr);
            let (mut replies, mut errors) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    client.send(&[b"GET", b"a"]);
                }
                for _ in 0..64 {
                    let reply = client.reply();
                    replies += 1;
                    if reply != b"$1\r\n1\r\n" {
                        errors.push(String::from_utf8_lossy(&reply).into_owned());
                    }
                }
            }
            (replies, errors)
        })
    };
    let big = {
        let (addr, stop) = (server.addr, stop.clone());
        std::thread::spawn(move || {
            let mut client = Resp::connect(addr);
            let mut asked = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(client.call(&[b"GET", b"big"]), REPLY_TOO_LARGE);
                // The error is the client's own; its connection goes on.
                assert_eq!(client.call(&[b"GET", b"a"]), b"$1\r\n1\r\n");
                asked += 1;
            }
            asked
        })
    };
    let malformed = {
        let (addr, stop) = (server.addr, stop.clone());
        std::thread::spawn(move || {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                // Redis closes the connection after this error; the
                // proxy must not send it on one that others share.
                let mut client = Resp::connect(addr);
                client.stream.write_all(b"GET \"x\r\n").unwrap();
                let reply = client.reply();
                assert_eq!(reply, UNBALANCED, "{}", String::from_utf8_lossy(&reply));
                sent += 1;
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (replies, errors) = victim.join().unwrap();
    eprintln!("victim: {replies} replies, {} errors", errors.len());
    assert!(
        errors.is_empty(),
        "the victim got {} errors, the first {:?}",
        errors.len(),
        errors.first()
    );
    assert!(replies >= 1000, "the victim made only {replies} requests");
    let (asked, sent) = (big.join().unwrap(), malformed.join().unwrap());
    eprintln!("{asked} oversized GETs, {sent} malformed commands");
    assert!(
        asked >= 20 && sent >= 20,
        "{asked} oversized, {sent} malformed"
    );
    assert_eq!(breaker(&server, &name, "closed"), 1.0);
    let opened = server.metric(
        "holdfast_upstream_breaker_transitions_total",
        &[("upstream", &name), ("from", "closed"), ("to", "open")],
    );
    assert_eq!(opened, 0.0, "the breaker opened");
    let too_large = server.metric(
        "holdfast_upstream_errors_total",
        &[("upstream", &name), ("kind", "too_large")],
    );
    assert_eq!(too_large, asked as f64);
}

/// A holdfast `resp` server whose one shard `DEBUG SLEEP` stalls: an
/// upstream that answers late on demand.
fn stallable() -> Server {
    Server::start(&["--protocol", "resp", "--enable-debug-commands"])
}

/// Stalls `slow` for `ms` milliseconds, from a thread that returns once
/// the stall is over.
fn stall(slow: &Server, ms: u32) -> std::thread::JoinHandle<()> {
    let mut staller = Resp::connect(slow.addr);
    staller.send(&[b"DEBUG", b"SLEEP", ms.to_string().as_bytes()]);
    let handle = std::thread::spawn(move || assert_eq!(staller.reply(), b"+OK\r\n"));
    // The sleep has begun once the server took the command.
    std::thread::sleep(Duration::from_millis(50));
    handle
}

/// The largest value of a gauge seen over `span`, sampled every 20 ms.
fn gauge_max(server: &Server, name: &str, span: Duration) -> f64 {
    let until = Instant::now() + span;
    let mut most = 0.0f64;
    while Instant::now() < until {
        most = most.max(server.metric(name, &[]));
        std::thread::sleep(Duration::from_millis(20));
    }
    most
}

/// A split command holds what one reply may, not one reply per upstream:
/// one client's awaited MGETs over three upstreams with large values,
/// waiting for a fourth that stalls, hold at most `--max-pending` ×
/// `--buffer`.
#[test]
fn a_split_command_holds_at_most_one_buffer() {
    let fast = [Redis::start(), Redis::start(), Redis::start()];
    let slow = stallable();
    let mut names: Vec<String> = fast.iter().map(Redis::name).collect();
    names.push(slow.addr.to_string());
    let ring = Continuum::new(&names, KeyHash::Murmur).unwrap();
    let mut args: Vec<&str> = Vec::new();
    for name in &names {
        args.extend(["--upstream", name]);
    }
    args.extend(["--max-pending", "16", "--upstream-timeout", "5s"]);
    let server = Server::start_proxy(&args);
    // One key on each upstream; 50000-byte values on the fast ones.
    let keys: Vec<String> = (0..4)
        .map(|upstream| {
            (0..1000)
                .map(|i| format!("{i}:split"))
                .find(|key| ring.upstream(key.as_bytes()) == upstream)
                .unwrap()
        })
        .collect();
    let value = vec![b'v'; 50_000];
    for (redis, key) in fast.iter().zip(&keys) {
        assert_eq!(
            redis.client().call(&[b"SET", key.as_bytes(), &value]),
            b"+OK\r\n"
        );
    }
    let stalled = stall(&slow, 2000);
    let mut client = Resp::connect(server.addr);
    let mget: Vec<&[u8]> = std::iter::once(&b"MGET"[..])
        .chain(keys.iter().map(|k| k.as_bytes()))
        .collect();
    for _ in 0..16 {
        client.send(&mget);
    }
    // The fast replies arrive at once, the slow ones after the stall.
    let held = gauge_max(
        &server,
        "holdfast_pending_bytes",
        Duration::from_millis(1200),
    );
    stalled.join().unwrap();
    for _ in 0..16 {
        assert_eq!(
            client.reply(),
            b"-ERR reply too large for the connection buffer\r\n"
        );
    }
    eprintln!("16 awaited MGETs held {held} bytes");
    // Three replies of 50000 bytes each arrived for every one of them.
    assert!(held >= 16.0 * 50_000.0, "{held}: the test proves nothing");
    assert!(held <= 16.0 * 65_536.0, "{held} bytes held");
}

/// A shard's awaited replies hold at most `--max-pending-bytes`: clients
/// whose replies must wait (behind one from a stalled upstream) get an
/// error for the replies past it, in order, and the proxy goes on.
#[test]
fn a_shard_holds_at_most_max_pending_bytes() {
    let redis = Redis::start();
    let slow = stallable();
    let names = [redis.name(), slow.addr.to_string()];
    let ring = Continuum::new(&names, KeyHash::Murmur).unwrap();
    let server = Server::start_proxy(&[
        "--upstream",
        &names[0],
        "--upstream",
        &names[1],
        "--max-pending-bytes",
        "1MiB",
        "--max-pending",
        "64",
        "--upstream-timeout",
        "5s",
    ]);
    let key_on = |upstream: usize| {
        (0..1000)
            .map(|i| format!("{i}:held"))
            .find(|key| ring.upstream(key.as_bytes()) == upstream)
            .unwrap()
    };
    let (big, late) = (key_on(0), key_on(1));
    let value = vec![b'v'; 30_000];
    let mut setup = Resp::connect(server.addr);
    assert_eq!(setup.call(&[b"SET", big.as_bytes(), &value]), b"+OK\r\n");
    assert_eq!(setup.call(&[b"SET", late.as_bytes(), b"late"]), b"+OK\r\n");
    let stalled = stall(&slow, 3000);
    // Each client: a GET that waits for the stalled upstream, then 50
    // whose 30000-byte replies must wait behind it: 6 MB in all.
    let mut clients: Vec<Resp> = (0..4).map(|_| Resp::connect(server.addr)).collect();
    for client in &mut clients {
        client.send(&[b"GET", late.as_bytes()]);
        for _ in 0..50 {
            client.send(&[b"GET", big.as_bytes()]);
        }
    }
    let full =
        |outcome: &str| server.metric("holdfast_pending_bytes_full_total", &[("outcome", outcome)]);
    assert!(
        wait_until(Duration::from_millis(1500), || full("failed") > 0.0),
        "the bound was never reached"
    );
    // A reply the proxy makes itself must wait for room too: less than
    // one 30000-byte reply's room is left.
    let echo = vec![b'e'; 40_000];
    for client in &mut clients {
        client.send(&[b"ECHO", &echo]);
    }
    let held = gauge_max(
        &server,
        "holdfast_pending_bytes",
        Duration::from_millis(600),
    );
    assert!(held <= 1048576.0, "{held} bytes held");
    assert!(held >= 900_000.0, "{held}: the test proves nothing");
    stalled.join().unwrap();
    let mut dropped = 0;
    for client in &mut clients {
        assert_eq!(client.reply(), b"$4\r\nlate\r\n");
        for _ in 0..50 {
            let reply = client.reply();
            if reply == b"-ERR proxy awaited-reply memory full (max-pending-bytes)\r\n" {
                dropped += 1;
            } else {
                assert_eq!(
                    reply.len(),
                    30_000 + 10,
                    "{:?}",
                    &reply[..reply.len().min(60)]
                );
            }
        }
        assert_eq!(client.reply().len(), 40_000 + 10);
    }
    eprintln!("{dropped} of 200 replies dropped, held at most {held} bytes");
    assert!(dropped >= 100, "only {dropped} dropped");
    assert_eq!(full("failed"), dropped as f64);
    assert!(full("paused") >= 1.0, "no reply waited for room");
    // The memory is back: a client's replies wait in it again.
    let stalled = stall(&slow, 300);
    let mut client = Resp::connect(server.addr);
    client.send(&[b"GET", late.as_bytes()]);
    client.send(&[b"GET", big.as_bytes()]);
    stalled.join().unwrap();
    assert_eq!(client.reply(), b"$4\r\nlate\r\n");
    assert_eq!(client.reply().len(), 30_010);
}
