//! Server push through the engine API: handles, sessions, pushes from a
//! call on the same shard, from another shard and from a foreign thread,
//! stale handles, groups across shards, slow consumers and heartbeats.
//! The service under test (`Relay`) runs in this process, so the tests
//! can hand handles around; the heartbeat cost test runs the binary.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast::config::{Config, SlowConsumer};
use holdfast::engine::codec::Protocol;
use holdfast::engine::metrics::{CloseReason, DropReason, Registry};
use holdfast::engine::server::{Running, Server};
use holdfast::{Closed, Context, Handle, Opened, PushError, Reply, Service};

use crate::util;

/// What the tests see of the service: every handle opened (in order),
/// every close, and how many sessions were dropped.
#[derive(Default)]
struct Seen {
    opened: Mutex<Vec<Handle>>,
    closed: Mutex<Vec<(Handle, CloseReason)>>,
    dropped: AtomicUsize,
}

/// A line service driven by commands: `push I TEXT` (to the I-th
/// connection opened), `join G`, `leave G`, `pub G TEXT`, `me`.
struct Relay {
    seen: Arc<Seen>,
}

/// A connection's session: counts its own drop.
#[derive(Default)]
struct Peer {
    seen: Option<Arc<Seen>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(seen) = &self.seen {
            seen.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Service for Relay {
    type Session = Peer;

    fn open(&mut self, opened: &Opened, _: &mut Context<'_>) -> Peer {
        self.seen.opened.lock().unwrap().push(opened.handle);
        Peer {
            seen: Some(self.seen.clone()),
        }
    }

    fn close(&mut self, _: Peer, closed: &Closed) {
        let entry = (closed.handle, closed.reason);
        self.seen.closed.lock().unwrap().push(entry);
    }

    fn reply_reserve(&self, _: &Peer, _: &[u8]) -> usize {
        64
    }

    fn call(&mut self, _: &mut Peer, cx: &mut Context<'_>, line: &[u8], reply: &mut Reply<'_>) {
        let line = String::from_utf8_lossy(line).into_owned();
        let mut words = line.splitn(3, ' ');
        let (verb, first, rest) = (words.next(), words.next(), words.next());
        let answer = match (verb, first, rest) {
            (Some("push"), Some(index), Some(text)) => {
                let to = self.seen.opened.lock().unwrap()[index.parse::<usize>().unwrap()];
                match cx.push(to, text.as_bytes()) {
                    Ok(()) => "ok".to_owned(),
                    Err(PushError::Gone) => "gone".to_owned(),
                    Err(e) => format!("error {e}"),
                }
            }
            (Some("join"), Some(group), None) => format!("{:?}", cx.join(group.as_bytes())),
            (Some("leave"), Some(group), None) => format!("{}", cx.leave(group.as_bytes())),
            (Some("pub"), Some(group), Some(text)) => {
                match cx.publish(group.as_bytes(), text.as_bytes()) {
                    Ok(receivers) => format!("{receivers}"),
                    Err(e) => format!("error {e}"),
                }
            }
            (Some("quiet"), Some(group), Some(text)) => {
                let _ = cx.publish(group.as_bytes(), text.as_bytes());
                reply.silence();
                return;
            }
            (Some("me"), None, None) => cx.handle().to_string(),
            _ => "?".to_owned(),
        };
        let _ = reply.put(answer.as_bytes());
    }
}

/// A `line` server of `threads` shards running [`Relay`], with `tune`
/// applied to its settings.
fn start(threads: usize, tune: impl FnOnce(&mut Config)) -> (Running, Arc<Seen>) {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: None,
        threads,
        protocol: Protocol::Line,
        ..Config::default()
    };
    tune(&mut config);
    config.validate().expect("a valid config");
    let seen = Arc::new(Seen::default());
    let relay = seen.clone();
    let running = Server::new(config)
        .service(move || Relay {
            seen: relay.clone(),
        })
        .start()
        .expect("server start");
    (running, seen)
}

/// A client reading lines.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(running: &Running) -> Client {
        let stream = util::connect(running.local_addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .expect("a line within 10 s");
        assert!(n > 0, "the server closed the connection");
        line.trim_end_matches('\n').to_owned()
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }
}

/// Connects until `count` connections are open, and waits until the
/// service has opened them all; returns them with their handles.
fn clients(running: &Running, seen: &Seen, count: usize) -> Vec<(Client, Handle)> {
    let before = seen.opened.lock().unwrap().len();
    let mut out: Vec<Client> = (0..count).map(|_| Client::connect(running)).collect();
    assert!(util::wait_until(Duration::from_secs(10), || {
        seen.opened.lock().unwrap().len() == before + count
    }));
    // Which handle is whose: each asks.
    let handles: Vec<String> = out.iter_mut().map(|c| c.ask("me")).collect();
    let opened = seen.opened.lock().unwrap().clone();
    out.into_iter()
        .zip(handles)
        .map(|(client, name)| {
            let handle = *opened.iter().find(|h| h.to_string() == name).unwrap();
            (client, handle)
        })
        .collect()
}

fn index_of(seen: &Seen, handle: Handle) -> usize {
    let opened = seen.opened.lock().unwrap();
    opened.iter().position(|&h| h == handle).unwrap()
}

fn closed(registry: &Registry, reason: CloseReason) -> u64 {
    registry
        .shards
        .iter()
        .map(|s| s.closed[reason.index()].get())
        .sum()
}

fn groups_gauge(registry: &Registry) -> u64 {
    registry.shards.iter().map(|s| s.groups.get()).sum()
}

fn stop(running: Running) {
    running.stopper()();
    running.wait();
}

#[test]
fn a_push_reaches_a_connection_of_the_same_shard_right_after_the_senders_reply() {
    let (running, seen) = start(1, |_| {});
    let mut both = clients(&running, &seen, 2);
    let (mut b, hb) = both.pop().unwrap();
    let (mut a, ha) = both.pop().unwrap();
    let to_b = index_of(&seen, hb);
    assert_eq!(a.ask(&format!("push {to_b} hello b")), "ok");
    assert_eq!(b.line(), "hello b");
    // To itself: the reply first, then the push.
    let to_a = index_of(&seen, ha);
    a.send(&format!("push {to_a} to myself"));
    assert_eq!(
        (a.line(), a.line()),
        ("ok".to_owned(), "to myself".to_owned())
    );
    stop(running);
}

#[test]
fn pushes_cross_shards_in_the_senders_order() {
    let (running, seen) = start(2, |_| {});
    // Connections land on shards by the kernel's hash: open until one is
    // on the other shard (8 at once all landed on one shard about once in
    // 128 runs; 64 in a row would be once in 2^63).
    let (mut a, ha) = clients(&running, &seen, 1).pop().unwrap();
    let mut others = Vec::new();
    let (mut b, hb) = loop {
        let (client, handle) = clients(&running, &seen, 1).pop().unwrap();
        if handle.shard() != ha.shard() {
            break (client, handle);
        }
        assert!(
            others.len() < 64,
            "64 connections, all on shard {}",
            ha.shard()
        );
        others.push(client);
    };
    let to_b = index_of(&seen, hb);
    for i in 0..500 {
        a.send(&format!("push {to_b} message {i}"));
    }
    for i in 0..500 {
        assert_eq!(a.line(), "ok");
        assert_eq!(b.line(), format!("message {i}"));
    }
    stop(running);
}

#[test]
fn a_foreign_thread_pushes_through_the_pusher_in_order() {
    let (running, seen) = start(2, |_| {});
    let mut some = clients(&running, &seen, 4);
    let pusher = running.pusher();
    let targets: Vec<Handle> = some.iter().map(|(_, h)| *h).collect();
    let thread = std::thread::spawn(move || {
        for i in 0..1000 {
            for &to in &targets {
                // The mailbox may be momentarily full: a real producer
                // would back off the same way.
                while pusher.push(to, format!("tick {i}").as_bytes()) == Err(PushError::Full) {
                    std::thread::yield_now();
                }
            }
        }
    });
    for (client, _) in &mut some {
        for i in 0..1000 {
            assert_eq!(client.line(), format!("tick {i}"));
        }
    }
    thread.join().unwrap();
    stop(running);
}

#[test]
fn a_stale_handle_reports_gone_and_never_reaches_the_slots_next_owner() {
    let (running, seen) = start(1, |_| {});
    let mut both = clients(&running, &seen, 2);
    let (b, hb) = both.pop().unwrap();
    let (mut a, _) = both.pop().unwrap();
    let to_b = index_of(&seen, hb);
    drop(b);
    assert!(util::wait_until(Duration::from_secs(10), || {
        seen.closed.lock().unwrap().iter().any(|&(h, _)| h == hb)
    }));
    assert_eq!(running.pusher().push(hb, b"late"), Err(PushError::Gone));
    assert_eq!(a.ask(&format!("push {to_b} late")), "gone");
    // A new connection takes the freed slot: the old handle is still gone,
    // and the newcomer gets nothing meant for it.
    let (mut c, hc) = clients(&running, &seen, 1).pop().unwrap();
    assert_ne!(hc, hb);
    assert_eq!(running.pusher().push(hb, b"late"), Err(PushError::Gone));
    assert_eq!(a.ask(&format!("push {to_b} late")), "gone");
    assert_eq!(c.ask("me"), hc.to_string(), "nothing came before its reply");
    stop(running);
}

#[test]
fn a_group_across_shards_gets_each_message_once_in_order_and_closes_leave_nothing() {
    const MEMBERS: usize = 200;
    const MESSAGES: usize = 50;
    let (running, seen) = start(2, |_| {});
    let mut members = clients(&running, &seen, MEMBERS);
    for (member, _) in &mut members {
        assert_eq!(member.ask("join news"), "Ok(true)");
    }
    let shards: std::collections::BTreeSet<usize> =
        members.iter().map(|(_, h)| h.shard()).collect();
    assert_eq!(shards.len(), 2, "members on both shards");
    let mut publishers = clients(&running, &seen, 2);
    for i in 0..MESSAGES {
        for (p, (publisher, _)) in publishers.iter_mut().enumerate() {
            publisher.send(&format!("pub news p{p} {i}"));
        }
    }
    for (publisher, _) in &mut publishers {
        for _ in 0..MESSAGES {
            assert_eq!(publisher.line(), MEMBERS.to_string(), "receivers");
        }
    }
    for (member, _) in &mut members {
        let mut next = [0; 2];
        for _ in 0..2 * MESSAGES {
            let line = member.line();
            let (p, i) = line.split_once(' ').unwrap();
            let p: usize = p[1..].parse().unwrap();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                next[p],
                "in order per publisher, once"
            );
            next[p] += 1;
        }
    }
    assert_eq!(running.pusher().members(b"news"), MEMBERS);
    assert_eq!(
        groups_gauge(&running.registry),
        2,
        "one group on each shard"
    );
    let sessions = seen.opened.lock().unwrap().len();
    drop(members);
    drop(publishers);
    assert!(util::wait_until(Duration::from_secs(10), || {
        seen.dropped.load(Ordering::SeqCst) == sessions
    }));
    assert_eq!(running.pusher().members(b"news"), 0);
    assert!(running.pusher().directory().is_empty());
    assert!(util::wait_until(Duration::from_secs(5), || groups_gauge(
        &running.registry
    ) == 0));
    // Every connection's slot is free again (nothing in flight is left).
    let open = || -> u64 {
        running
            .registry
            .shards
            .iter()
            .map(|s| s.connections_open.get())
            .sum()
    };
    assert!(
        util::wait_until(Duration::from_secs(5), || open() == 0),
        "{} still open",
        open()
    );
    let reasons = seen.closed.lock().unwrap();
    assert!(
        reasons.iter().all(|&(_, r)| r == CloseReason::Peer),
        "{reasons:?}"
    );
    drop(reasons);
    stop(running);
}

/// Publishes `count` messages of about 1 KiB to `group` without waiting
/// for replies (`quiet`: no reply at all), keeping at most `WINDOW` ahead
/// of what `read` says the fast member has read: the fast one always
/// keeps up, whatever the driver's pace.
fn flood(publisher: &mut Client, group: &str, count: usize, read: &AtomicUsize) {
    const WINDOW: usize = 64;
    let text = "x".repeat(1000);
    for i in 0..count {
        while i >= read.load(Ordering::Acquire) + WINDOW {
            std::thread::sleep(Duration::from_micros(200));
        }
        publisher.send(&format!("quiet {group} {i} {text}"));
    }
}

/// One member that reads everything while another never reads: the fast
/// one gets every message; returns the server for the caller's checks.
fn slow_and_fast(policy: SlowConsumer) -> (Running, Client, TcpStream) {
    const MESSAGES: usize = 20_000;
    let (running, seen) = start(1, |config| {
        config.buffer = 16 * 1024;
        config.slow_consumer = policy;
        config.slow_consumer_bytes = 256 * 1024;
    });
    let mut fast = clients(&running, &seen, 1).pop().unwrap().0;
    assert_eq!(fast.ask("join feed"), "Ok(true)");
    let mut slow = util::connect_small_rcvbuf(running.local_addr, 4096);
    slow.write_all(b"join feed\n").unwrap();
    assert!(util::wait_until(Duration::from_secs(5), || {
        running.pusher().members(b"feed") == 2
    }));
    let mut publisher = clients(&running, &seen, 1).pop().unwrap().0;
    let read = Arc::new(AtomicUsize::new(0));
    let progress = read.clone();
    let reader = std::thread::spawn(move || {
        for i in 0..MESSAGES {
            let line = fast.line();
            assert!(
                line.starts_with(&format!("{i} ")),
                "message {i}: {line:.20}"
            );
            progress.store(i + 1, Ordering::Release);
        }
        fast
    });
    flood(&mut publisher, "feed", MESSAGES, &read);
    let fast = reader
        .join()
        .expect("the fast member got every message in order");
    (running, fast, slow)
}

#[test]
fn a_slow_consumer_is_closed_by_the_close_policy_while_a_fast_one_keeps_up() {
    let (running, _fast, mut slow) = slow_and_fast(SlowConsumer::Close);
    assert_eq!(closed(&running.registry, CloseReason::SlowConsumer), 1);
    // Its queued bytes went with it.
    let queued: u64 = running
        .registry
        .shards
        .iter()
        .map(|s| s.push_queued_bytes.get())
        .sum();
    assert_eq!(queued, 0);
    util::expect_closed(&mut slow, Duration::from_secs(10));
    stop(running);
}

#[test]
fn a_slow_consumer_loses_messages_under_the_drop_policy_and_stays() {
    let (running, mut fast, slow) = slow_and_fast(SlowConsumer::Drop);
    let dropped: u64 = running
        .registry
        .shards
        .iter()
        .map(|s| s.push_dropped[DropReason::SlowConsumer.index()].get())
        .sum();
    assert!(dropped > 0, "messages dropped for the slow consumer");
    assert_eq!(closed(&running.registry, CloseReason::SlowConsumer), 0);
    assert!(
        util::poll_state(&slow).is_ok(),
        "the slow consumer is still open"
    );
    assert_eq!(
        fast.ask("me").split(':').count(),
        3,
        "the fast one is served"
    );
    stop(running);
}

#[test]
fn heartbeats_ping_a_silent_peer_then_close_it_and_spare_a_live_one() {
    let (running, seen) = start(1, |config| {
        config.heartbeat_interval = Duration::from_millis(300);
        config.heartbeat_timeout = Duration::from_millis(300);
    });
    let mut pair = clients(&running, &seen, 2);
    let (mut live, _) = pair.pop().unwrap();
    let (mut silent, _) = pair.pop().unwrap();
    // The live one answers every ping (with anything) and stays.
    let answering = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_millis(2000);
        while Instant::now() < until {
            assert_eq!(live.line(), "PING");
            assert_eq!(live.ask("pong"), "?");
        }
        live
    });
    let start = Instant::now();
    assert_eq!(silent.line(), "PING");
    let (rest, _, _) = util::expect_closed(&mut silent.stream, Duration::from_secs(5));
    assert!(rest.is_empty());
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(closed(&running.registry, CloseReason::HeartbeatTimeout), 1);
    let live = answering
        .join()
        .expect("the live one was pinged and stayed");
    assert_eq!(closed(&running.registry, CloseReason::HeartbeatTimeout), 1);
    drop(live);
    stop(running);
}

/// 10000 idle connections with heartbeats on cost the server no CPU while
/// none is due (each has the timer-wheel entry it has anyway).
#[test]
fn heartbeats_cost_nothing_for_ten_thousand_idle_connections() {
    const CONNS: usize = 10_000;
    util::raise_own_fd_limit();
    let server = util::Server::start(&[
        "--heartbeat-interval",
        "1h",
        "--idle-timeout",
        "2h",
        "--threads",
        "1",
    ]);
    let conns: Vec<TcpStream> = (0..CONNS).map(|_| server.connect()).collect();
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        CONNS as f64,
        Duration::from_secs(30),
    );
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = server.cpu_ticks() - before;
    let ms = used * 1000 / util::clock_ticks_per_second();
    assert!(
        ms <= 50,
        "{ms} ms of CPU in 2 s for {CONNS} idle connections"
    );
    drop(conns);
}

/// A group of 10000 members over two shards (Redis Pub/Sub in the `resp`
/// service: one channel is one group) gets every message once, in order
/// per publisher, with PUBLISH counting all of them; closing them all
/// leaves no group and no member behind.
#[test]
fn ten_thousand_members_over_two_shards_get_every_message_once_in_order() {
    const MEMBERS: usize = 10_000;
    const MESSAGES: usize = 20;
    util::raise_own_fd_limit();
    let server = util::Server::start(&["--protocol", "resp", "--threads", "2"]);
    let confirm = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n";
    let mut members: Vec<TcpStream> = Vec::with_capacity(MEMBERS);
    for _ in 0..MEMBERS {
        let mut member = server.connect();
        member.write_all(b"SUBSCRIBE news\r\n").unwrap();
        members.push(member);
    }
    for member in &mut members {
        let got = util::read_exact_timeout(member, confirm.len(), Duration::from_secs(10));
        assert_eq!(got, confirm);
    }
    let mut publishers: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    let message = |p: usize, i: usize| format!("p{p}-{i:02}");
    for i in 0..MESSAGES {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            let text = message(p, i);
            publisher
                .write_all(format!("PUBLISH news {text}\r\n").as_bytes())
                .unwrap();
        }
    }
    let counted = format!(":{MEMBERS}\r\n");
    for publisher in &mut publishers {
        let replies =
            util::read_exact_timeout(publisher, counted.len() * MESSAGES, Duration::from_secs(10));
        assert_eq!(replies, counted.repeat(MESSAGES).as_bytes(), "receivers");
    }
    // Each message frame is the same length: read them all, then check the
    // order per publisher.
    let frame = |text: &str| {
        format!(
            "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n${}\r\n{text}\r\n",
            text.len()
        )
    };
    let frame_len = frame(&message(0, 0)).len();
    for member in &mut members {
        let got =
            util::read_exact_timeout(member, frame_len * 2 * MESSAGES, Duration::from_secs(10));
        let got = String::from_utf8(got).unwrap();
        let mut next = [0; 2];
        for one in got.as_bytes().chunks(frame_len) {
            let one = std::str::from_utf8(one).unwrap();
            let p = usize::from(one.contains("$5\r\np1-"));
            assert_eq!(
                one,
                frame(&message(p, next[p])),
                "once, in order per publisher"
            );
            next[p] += 1;
        }
        assert_eq!(next, [MESSAGES, MESSAGES]);
    }
    drop(members);
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        2.0,
        Duration::from_secs(30),
    );
    server.wait_metric("holdfast_groups", &[], 0.0, Duration::from_secs(10));
    let mut publisher = publishers.pop().unwrap();
    publisher.write_all(b"PUBSUB NUMSUB news\r\n").unwrap();
    let numsub = b"*2\r\n$4\r\nnews\r\n:0\r\n";
    let got = util::read_exact_timeout(&mut publisher, numsub.len(), Duration::from_secs(10));
    assert_eq!(got, numsub);
}
