//! Redis Pub/Sub on `--protocol resp`, driven as users drive it:
//! `redis-cli SUBSCRIBE` and `PSUBSCRIBE` (the real program, its output
//! read), the `redis` crate's pub/sub (RESP2 and RESP3), a client that
//! publishes and stores keys, publishers and subscribers spread over two
//! shards, subscribers that go away, and the bounds on groups. The
//! replies themselves are compared with redis-server's in `pubsub_diff`.

use crate::util;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use util::resp3::{Conn, array};
use util::{Server, wait_until};

fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--protocol", "resp"];
    args.extend(extra);
    Server::start(&args)
}

/// How long anything here may take to arrive.
const WITHIN: Duration = Duration::from_secs(5);

/// A `redis-cli` process whose output lines come through a channel.
struct Cli {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Cli {
    fn start(server: &Server, args: &[&str]) -> Cli {
        let port = server.addr.port().to_string();
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-cli (make deps installs it)");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Cli { child, lines }
    }

    /// Its next `n` output lines.
    fn next_lines(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(WITHIN)
                    .unwrap_or_else(|_| panic!("redis-cli printed {i} of {n} lines"))
            })
            .collect()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_cli_subscribe_receives_what_a_publisher_sends() {
    let server = start(&["--threads", "2"]);
    let cli = Cli::start(&server, &["SUBSCRIBE", "news", "weather"]);
    assert_eq!(
        cli.next_lines(6),
        ["subscribe", "news", "1", "subscribe", "weather", "2"]
    );
    let mut publisher = Conn::connect(server.addr);
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"news", b"hello world"]),
        b":1\r\n"
    );
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"sports", b"nobody"]),
        b":0\r\n"
    );
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"weather", b"rain"]),
        b":1\r\n"
    );
    assert_eq!(
        cli.next_lines(6),
        [
            "message",
            "news",
            "hello world",
            "message",
            "weather",
            "rain"
        ]
    );
}

#[test]
fn redis_cli_psubscribe_receives_what_matches() {
    let server = start(&["--threads", "2"]);
    let cli = Cli::start(&server, &["PSUBSCRIBE", "news.*", "h?llo"]);
    assert_eq!(
        cli.next_lines(6),
        ["psubscribe", "news.*", "1", "psubscribe", "h?llo", "2"]
    );
    let mut publisher = Conn::connect(server.addr);
    assert_eq!(
        publisher.call(&[b"PUBLISH", b"news.tech", b"rust 2"]),
        b":1\r\n"
    );
    assert_eq!(publisher.call(&[b"PUBLISH", b"news", b"no dot"]), b":0\r\n");
    assert_eq!(publisher.call(&[b"PUBLISH", b"hallo", b"hi"]), b":1\r\n");
    assert_eq!(
        cli.next_lines(8),
        [
            "pmessage",
            "news.*",
            "news.tech",
            "rust 2",
            "pmessage",
            "h?llo",
            "hallo",
            "hi"
        ]
    );
}

fn client(server: &Server, query: &str) -> redis::Connection {
    let url = format!("redis://{}/{query}", server.addr);
    let client = redis::Client::open(url).unwrap();
    let con = client.get_connection_with_timeout(WITHIN).unwrap();
    con.set_read_timeout(Some(WITHIN)).unwrap();
    con
}

/// Subscribers of `channel` and pattern subscriptions, as PUBSUB says.
fn counts(con: &mut redis::Connection, channel: &str) -> (i64, i64) {
    let numsub: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(con)
        .unwrap();
    let numpat: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(con).unwrap();
    (numsub.1, numpat)
}

/// The `redis` crate's sync pub/sub, over `query` (`""` for RESP2,
/// `?protocol=resp3`).
fn the_redis_crate_subscribes_receives_and_leaves(query: &str) {
    use redis::Commands;
    let server = start(&["--threads", "2"]);
    let mut subscriber = client(&server, query);
    let mut publisher = client(&server, query);
    {
        let mut pubsub = subscriber.as_pubsub();
        pubsub.set_read_timeout(Some(WITHIN)).unwrap();
        pubsub.subscribe("orders").unwrap();
        pubsub.psubscribe("user.*").unwrap();
        // RESP3 subscribes without waiting for the confirmation.
        let subscribed = wait_until(WITHIN, || counts(&mut publisher, "orders") == (1, 1));
        assert!(subscribed, "{:?}", counts(&mut publisher, "orders"));
        assert_eq!(publisher.publish::<_, _, i64>("orders", "o-1").unwrap(), 1);
        assert_eq!(
            publisher.publish::<_, _, i64>("user.42", "login").unwrap(),
            1
        );
        assert_eq!(publisher.publish::<_, _, i64>("others", "x").unwrap(), 0);
        let message = pubsub.get_message().unwrap();
        assert_eq!(message.get_channel_name(), "orders");
        assert_eq!(message.get_payload::<String>().unwrap(), "o-1");
        assert!(!message.from_pattern());
        let message = pubsub.get_message().unwrap();
        assert_eq!(message.get_channel_name(), "user.42");
        assert_eq!(message.get_pattern::<String>().unwrap(), "user.*");
        assert_eq!(message.get_payload::<String>().unwrap(), "login");
        pubsub.unsubscribe("orders").unwrap();
        let left = wait_until(WITHIN, || counts(&mut publisher, "orders") == (0, 1));
        assert!(left, "{:?}", counts(&mut publisher, "orders"));
        assert_eq!(publisher.publish::<_, _, i64>("orders", "o-2").unwrap(), 0);
        assert_eq!(publisher.publish::<_, _, i64>("user.7", "bye").unwrap(), 1);
        let message = pubsub.get_message().unwrap();
        assert_eq!(message.get_payload::<String>().unwrap(), "bye");
    }
    // Dropping the pub/sub unsubscribed from everything: the connection
    // takes commands again.
    let () = subscriber.set("after", "pubsub").unwrap();
    assert_eq!(subscriber.get::<_, String>("after").unwrap(), "pubsub");
    assert_eq!(counts(&mut publisher, "orders"), (0, 0));
}

#[test]
fn the_redis_crate_pubsub_over_resp2() {
    the_redis_crate_subscribes_receives_and_leaves("");
}

#[test]
fn the_redis_crate_pubsub_over_resp3() {
    the_redis_crate_subscribes_receives_and_leaves("?protocol=resp3");
}

#[test]
fn a_mixed_client_publishes_and_stores_keys() {
    use redis::Commands;
    let server = start(&["--threads", "2"]);
    let mut subscriber = Conn::connect(server.addr);
    subscriber.send(&[b"SUBSCRIBE", b"events"]);
    assert_eq!(subscriber.frame(), array(&[b"subscribe", b"events", b":1"]));
    let mut con = client(&server, "");
    // Writes and publishes, one by one and pipelined.
    let () = con.set("user:1", "ada").unwrap();
    assert_eq!(con.publish::<_, _, i64>("events", "user:1 set").unwrap(), 1);
    let (count, receivers, name, more): (i64, i64, String, i64) = redis::pipe()
        .incr("logins", 1)
        .publish("events", "login")
        .get("user:1")
        .publish("events", "done")
        .query(&mut con)
        .unwrap();
    assert_eq!((count, receivers, name.as_str(), more), (1, 1, "ada", 1));
    for payload in [&b"user:1 set"[..], b"login", b"done"] {
        assert_eq!(subscriber.frame(), array(&[b"message", b"events", payload]));
    }
    assert_eq!(con.get::<_, i64>("logins").unwrap(), 1);
    // A RESP3 connection may do both while subscribed: its own message
    // comes before the count, as Redis sends it.
    let mut both = Conn::connect(server.addr);
    assert!(both.call(&[b"HELLO", b"3"]).starts_with(b"%7\r\n"));
    assert_eq!(
        both.call(&[b"SUBSCRIBE", b"events"]),
        b">3\r\n$9\r\nsubscribe\r\n$6\r\nevents\r\n:1\r\n"
    );
    assert_eq!(both.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    both.send(&[b"PUBLISH", b"events", b"mine"]);
    assert_eq!(
        both.frame(),
        b">3\r\n$7\r\nmessage\r\n$6\r\nevents\r\n$4\r\nmine\r\n"
    );
    assert_eq!(both.frame(), b":2\r\n");
    assert_eq!(both.call(&[b"GET", b"nope"]), b"_\r\n");
    assert_eq!(subscriber.frame(), array(&[b"message", b"events", b"mine"]));
    assert_eq!(con.get::<_, String>("k").unwrap(), "v");
}

/// `n` connections or more, with at least one on each of the two shards
/// (`CLIENT ID` answers the shard).
fn on_both_shards(server: &Server, n: usize) -> Vec<Conn> {
    let mut conns = Vec::new();
    let mut seen = [false; 2];
    while conns.len() < n || !(seen[0] && seen[1]) {
        assert!(conns.len() < 200, "200 connections all landed on one shard");
        let mut conn = Conn::connect(server.addr);
        match conn.call(&[b"CLIENT", b"ID"]).as_slice() {
            b":0\r\n" => seen[0] = true,
            b":1\r\n" => seen[1] = true,
            other => panic!("CLIENT ID answered {other:?}"),
        }
        conns.push(conn);
    }
    conns
}

#[test]
fn publishers_and_subscribers_on_different_shards_get_every_message_once_in_order() {
    const MESSAGES: usize = 500;
    let server = start(&["--threads", "2"]);
    let mut subscribers = on_both_shards(&server, 6);
    for sub in &mut subscribers {
        sub.send(&[b"SUBSCRIBE", b"ticks"]);
        assert_eq!(sub.frame(), array(&[b"subscribe", b"ticks", b":1"]));
        sub.send(&[b"PSUBSCRIBE", b"tick*"]);
        assert_eq!(sub.frame(), array(&[b"psubscribe", b"tick*", b":2"]));
    }
    let publishers = on_both_shards(&server, 4);
    // Each subscriber gets each message twice: for the channel and for
    // the pattern.
    let receivers = format!(":{}\r\n", 2 * subscribers.len()).into_bytes();
    let count = publishers.len();
    let publishing: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, mut publisher)| {
            let receivers = receivers.clone();
            std::thread::spawn(move || {
                for n in 0..MESSAGES {
                    let payload = format!("{p}:{n}");
                    let reply = publisher.call(&[b"PUBLISH", b"ticks", payload.as_bytes()]);
                    assert_eq!(reply, receivers, "publisher {p}, message {n}");
                }
            })
        })
        .collect();
    let reading: Vec<_> = subscribers
        .into_iter()
        .map(|mut sub| {
            std::thread::spawn(move || {
                // Per publisher: the next message expected on the channel
                // and on the pattern.
                let mut next = vec![[0usize; 2]; count];
                for _ in 0..2 * count * MESSAGES {
                    let frame = util::resp3::Value::parse(&sub.frame()).0;
                    let items = frame.items().expect("a message array");
                    let pattern = usize::from(items[0].blob() == Some(b"pmessage"));
                    let payload = items.last().unwrap().blob().unwrap();
                    let payload = std::str::from_utf8(payload).unwrap();
                    let (p, n) = payload.split_once(':').unwrap();
                    let (p, n): (usize, usize) = (p.parse().unwrap(), n.parse().unwrap());
                    assert_eq!(n, next[p][pattern], "publisher {p}, pattern {pattern}");
                    next[p][pattern] += 1;
                }
                // Nothing more: every message came once.
                assert_eq!(sub.frame_within(Duration::from_millis(300)), None);
            })
        })
        .collect();
    for thread in publishing.into_iter().chain(reading) {
        thread.join().unwrap();
    }
}

/// The process-wide `holdfast_groups` (summed over the shards).
fn groups(server: &Server) -> f64 {
    server.metric("holdfast_groups", &[])
}

#[test]
fn a_subscriber_that_disconnects_leaves_nothing_behind() {
    let server = start(&["--threads", "2"]);
    let mut subscribers = on_both_shards(&server, 20);
    for (i, sub) in subscribers.iter_mut().enumerate() {
        let own = format!("own-{i}");
        sub.send(&[b"SUBSCRIBE", b"news", own.as_bytes()]);
        sub.frame();
        sub.frame();
        sub.send(&[b"PSUBSCRIBE", b"n*", format!("{own}*").as_bytes()]);
        sub.frame();
        sub.frame();
    }
    let n = subscribers.len();
    let mut observer = Conn::connect(server.addr);
    let numsub = format!("*2\r\n$4\r\nnews\r\n:{n}\r\n").into_bytes();
    assert_eq!(observer.call(&[b"PUBSUB", b"NUMSUB", b"news"]), numsub);
    let numpat = format!(":{}\r\n", n + 1).into_bytes();
    assert_eq!(observer.call(&[b"PUBSUB", b"NUMPAT"]), numpat);
    // Each shard holds news, n* and its subscribers' own two.
    assert_eq!(groups(&server), (4 + 2 * n) as f64);
    let stats = |observer: &mut Conn| {
        let info = observer.call(&[b"INFO", b"stats"]);
        let info = String::from_utf8_lossy(&info).into_owned();
        let field = |name: &str| -> String {
            let line = info.lines().find(|l| l.starts_with(name)).unwrap();
            line[name.len() + 1..].to_string()
        };
        (field("pubsub_channels"), field("pubsub_patterns"))
    };
    let all = (n + 1).to_string();
    assert_eq!(stats(&mut observer), (all.clone(), all));
    // One leaves by RESET, one by QUIT, the rest by closing.
    let mut first = subscribers.remove(0);
    assert_eq!(first.call(&[b"RESET"]), b"+RESET\r\n");
    assert_eq!(
        first.call(&[b"GET", b"x"]),
        b"$-1\r\n",
        "out of subscribed mode"
    );
    let mut second = subscribers.remove(0);
    assert_eq!(second.call(&[b"QUIT"]), b"+OK\r\n");
    let (rest, how, _) = util::expect_closed(&mut second.stream, WITHIN);
    assert_eq!((rest.len(), how), (0, util::Closed::Eof));
    drop(subscribers);
    server.wait_metric("holdfast_groups", &[], 0.0, WITHIN);
    assert_eq!(
        observer.call(&[b"PUBSUB", b"NUMSUB", b"news", b"own-3"]),
        b"*4\r\n$4\r\nnews\r\n:0\r\n$5\r\nown-3\r\n:0\r\n"
    );
    assert_eq!(observer.call(&[b"PUBSUB", b"NUMPAT"]), b":0\r\n");
    assert_eq!(observer.call(&[b"PUBSUB", b"CHANNELS"]), b"*0\r\n");
    assert_eq!(stats(&mut observer), ("0".into(), "0".into()));
    assert_eq!(observer.call(&[b"PUBLISH", b"news", b"anyone?"]), b":0\r\n");
}

#[test]
fn the_group_bounds_refuse_subscriptions_with_their_errors() {
    let server = start(&["--max-groups", "3", "--max-memberships", "2"]);
    let mut a = Conn::connect(server.addr);
    a.send(&[b"SUBSCRIBE", b"x", b"y", b"z"]);
    assert_eq!(a.frame(), array(&[b"subscribe", b"x", b":1"]));
    assert_eq!(a.frame(), array(&[b"subscribe", b"y", b":2"]));
    assert_eq!(
        a.frame(),
        b"-ERR max memberships reached (max-memberships)\r\n"
    );
    let mut b = Conn::connect(server.addr);
    assert_eq!(
        b.call(&[b"SUBSCRIBE", b"x"]),
        array(&[b"subscribe", b"x", b":1"])
    );
    assert_eq!(
        b.call(&[b"PSUBSCRIBE", b"p*"]),
        array(&[b"psubscribe", b"p*", b":2"])
    );
    let mut c = Conn::connect(server.addr);
    assert_eq!(
        c.call(&[b"SUBSCRIBE", b"q"]),
        b"-ERR max groups reached (max-groups)\r\n"
    );
    // Refused everywhere, c never entered subscribed mode.
    assert_eq!(c.call(&[b"GET", b"k"]), b"$-1\r\n");
    // Existing groups still take members; a freed name is free again.
    assert_eq!(
        c.call(&[b"SUBSCRIBE", b"y"]),
        array(&[b"subscribe", b"y", b":1"])
    );
    assert_eq!(
        b.call(&[b"PUNSUBSCRIBE"]),
        array(&[b"punsubscribe", b"p*", b":1"])
    );
    let mut d = Conn::connect(server.addr);
    assert_eq!(
        d.call(&[b"SUBSCRIBE", b"q"]),
        array(&[b"subscribe", b"q", b":1"])
    );
}
