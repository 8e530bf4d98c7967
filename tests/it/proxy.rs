//! `holdfast proxy` in front of real `redis-server`s (started here on free
//! loopback ports): commands routed by key, multi-key commands split and
//! merged, replies in request order across upstreams, unsupported commands
//! refused, and `redis-cli` through it as a newcomer would use it.

use crate::util;

use std::collections::HashSet;

use holdfast::apps::proxy::hash::{Continuum, KeyHash};
use util::{Redis, Resp, Server};

/// A proxy in front of `upstreams`, with `extra` flags.
pub(crate) fn proxy(upstreams: &[&Redis], extra: &[&str]) -> Server {
    let names: Vec<String> = upstreams.iter().map(|r| r.name()).collect();
    let mut args: Vec<&str> = Vec::new();
    for name in &names {
        args.extend(["--upstream", name]);
    }
    args.extend(extra);
    Server::start_proxy(&args)
}

/// Where the proxy puts `key` among `upstreams` (in the order given).
fn owner(upstreams: &[&Redis], key: &str) -> usize {
    let names: Vec<String> = upstreams.iter().map(|r| r.name()).collect();
    Continuum::new(&names, KeyHash::Murmur)
        .unwrap()
        .upstream(key.as_bytes())
}

fn bulk(value: &str) -> Vec<u8> {
    format!("${}\r\n{value}\r\n", value.len()).into_bytes()
}

#[test]
fn keys_land_on_their_upstream_and_come_back() {
    let (a, b) = (Redis::start(), Redis::start());
    let upstreams = [&a, &b];
    let server = proxy(&upstreams, &[]);
    let mut client = Resp::connect(server.addr);
    assert_eq!(client.call(&[b"PING"]), b"+PONG\r\n");
    let mut seen = HashSet::new();
    for i in 0..40 {
        // Nutcracker's fnv1a_64 mixes a key's last bytes poorly: vary the
        // first ones so that keys spread.
        let key = format!("{i}:user");
        let value = format!("v{i}");
        assert_eq!(
            client.call(&[b"SET", key.as_bytes(), value.as_bytes()]),
            b"+OK\r\n"
        );
        assert_eq!(client.call(&[b"GET", key.as_bytes()]), bulk(&value));
        // Stored where ketama says, and only there.
        let at = owner(&upstreams, &key);
        seen.insert(at);
        assert_eq!(
            upstreams[at].client().call(&[b"GET", key.as_bytes()]),
            bulk(&value)
        );
        assert_eq!(
            upstreams[1 - at]
                .client()
                .call(&[b"EXISTS", key.as_bytes()]),
            b":0\r\n"
        );
    }
    assert_eq!(seen.len(), 2, "40 keys all on one upstream");
    // A reply that is an error from the upstream comes back as is.
    assert_eq!(
        client.call(&[b"INCR", b"1:user"]),
        b"-ERR value is not an integer or out of range\r\n"
    );
    // What cannot be proxied is refused, and the connection goes on.
    assert_eq!(
        client.call(&[b"KEYS", b"*"]),
        b"-ERR command 'keys' is not supported by the proxy\r\n"
    );
    assert_eq!(client.call(&[b"GET", b"nope"]), b"$-1\r\n");
}

#[test]
fn mget_mset_and_del_are_split_and_merged() {
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    let upstreams = [&a, &b, &c];
    let server = proxy(&upstreams, &[]);
    let mut client = Resp::connect(server.addr);
    // Twenty keys on each upstream (the ports, and so the ring, vary from
    // run to run).
    let mut per_upstream = [0; 3];
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("{i}k"))
        .filter(|key| {
            let at = owner(&upstreams, key);
            per_upstream[at] += 1;
            per_upstream[at] <= 20
        })
        .take(60)
        .collect();
    assert_eq!(keys.len(), 60);
    let mut mset: Vec<&[u8]> = vec![b"MSET"];
    let values: Vec<String> = (0..60).map(|i| format!("value-{i}")).collect();
    for (key, value) in keys.iter().zip(&values) {
        mset.push(key.as_bytes());
        mset.push(value.as_bytes());
    }
    assert_eq!(client.call(&mset), b"+OK\r\n");
    let mut used = HashSet::new();
    for (key, value) in keys.iter().zip(&values) {
        let at = owner(&upstreams, key);
        used.insert(at);
        assert_eq!(
            upstreams[at].client().call(&[b"GET", key.as_bytes()]),
            bulk(value)
        );
    }
    assert_eq!(used.len(), 3, "the MSET did not spread");
    // MGET in the client's order, a missing key as nil, a repeated key twice.
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    let wanted = [5, usize::MAX, 0, 59, 5, 31];
    let names: Vec<&str> = wanted
        .iter()
        .map(|&i| keys.get(i).map_or("missing", String::as_str))
        .collect();
    mget.extend(names.iter().map(|k| k.as_bytes()));
    let mut expected = format!("*{}\r\n", wanted.len()).into_bytes();
    for i in wanted {
        match values.get(i) {
            Some(value) => expected.extend(bulk(value)),
            None => expected.extend(b"$-1\r\n"),
        }
    }
    assert_eq!(client.call(&mget), expected);
    let k = |i: usize| keys[i].as_bytes();
    assert_eq!(
        client.call(&[b"EXISTS", k(1), k(2), b"nope", k(40)]),
        b":3\r\n"
    );
    assert_eq!(
        client.call(&[b"DEL", k(1), k(2), b"nope", k(40), k(1)]),
        b":3\r\n"
    );
    let mut expected = b"*2\r\n$-1\r\n".to_vec();
    expected.extend(bulk("value-4"));
    assert_eq!(client.call(&[b"MGET", k(1), k(4)]), expected);
    // Keys that must be together and are not: refused, with the way out.
    let (x, y) = (0..100)
        .map(|i| format!("{i}r"))
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| owner(&upstreams, &w[0]) != owner(&upstreams, &w[1]))
        .map(|w| (w[0].clone(), w[1].clone()))
        .unwrap();
    let refused = client.call(&[b"RENAME", x.as_bytes(), y.as_bytes()]);
    assert!(
        refused.starts_with(b"-ERR keys of 'rename' are on different upstreams"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    // With a hash tag they are together.
    assert_eq!(
        client.call(&[b"SET", b"{u1}.a", b"1"]),
        b"+OK\r\n",
        "a tagged key"
    );
    assert_eq!(client.call(&[b"RENAME", b"{u1}.a", b"{u1}.b"]), b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"{u1}.b"]), bulk("1"));
}

#[test]
fn pipelined_replies_keep_request_order_across_upstreams() {
    let (a, b) = (Redis::start(), Redis::start());
    // The slow upstream: holdfast's own resp server, stalled on demand by
    // DEBUG SLEEP (which holds its one shard).
    let slow = Server::start(&["--protocol", "resp", "--enable-debug-commands"]);
    let slow_name = slow.addr.to_string();
    let names = [a.name(), b.name(), slow_name.clone()];
    let ring = Continuum::new(&names, KeyHash::Murmur).unwrap();
    let server = Server::start_proxy(&[
        "--upstream",
        &names[0],
        "--upstream",
        &names[1],
        "--upstream",
        &names[2],
    ]);
    let mut client = Resp::connect(server.addr);
    // Keys on every upstream, each holding its own name.
    let keys: Vec<String> = (0..200).map(|i| format!("{i}:order")).collect();
    let on_slow = keys
        .iter()
        .filter(|k| ring.upstream(k.as_bytes()) == 2)
        .count();
    assert!(
        on_slow > 10 && on_slow < 190,
        "{on_slow} keys on the slow one"
    );
    for key in &keys {
        client.send(&[b"SET", key.as_bytes(), key.as_bytes()]);
    }
    for _ in &keys {
        assert_eq!(client.reply(), b"+OK\r\n");
    }
    // Stall the slow upstream, then pipeline reads over all three: the
    // fast upstreams answer first, yet every reply comes back in order.
    let mut staller = Resp::connect(slow.addr);
    staller.send(&[b"DEBUG", b"SLEEP", b"300"]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let start = std::time::Instant::now();
    for round in 0..3 {
        for (i, key) in keys.iter().enumerate() {
            if (i + round) % 3 == 0 {
                client.send(&[
                    b"MGET",
                    key.as_bytes(),
                    keys[(i + 7) % keys.len()].as_bytes(),
                ]);
            } else {
                client.send(&[b"GET", key.as_bytes()]);
            }
        }
    }
    for round in 0..3 {
        for (i, key) in keys.iter().enumerate() {
            let reply = client.reply();
            if (i + round) % 3 == 0 {
                let mut expected = b"*2\r\n".to_vec();
                expected.extend(bulk(key));
                expected.extend(bulk(&keys[(i + 7) % keys.len()]));
                assert_eq!(reply, expected, "round {round} request {i}");
            } else {
                assert_eq!(reply, bulk(key), "round {round} request {i}");
            }
        }
    }
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(200),
        "the slow upstream was not slow: the test proves nothing"
    );
    assert_eq!(staller.reply(), b"+OK\r\n");
}

#[test]
fn local_commands_and_quit() {
    let a = Redis::start();
    let server = proxy(&[&a], &[]);
    let mut client = Resp::connect(server.addr);
    assert_eq!(client.call(&[b"ECHO", b"hi"]), bulk("hi"));
    assert_eq!(client.call(&[b"SELECT", b"0"]), b"+OK\r\n");
    assert_eq!(
        client.call(&[b"SELECT", b"2"]),
        b"-ERR DB index is out of range\r\n"
    );
    // A local reply queued behind an upstream one keeps its place.
    client.send(&[b"SET", b"x", b"1"]);
    client.send(&[b"PING"]);
    client.send(&[b"GET", b"x"]);
    client.send(&[b"QUIT"]);
    assert_eq!(client.reply(), b"+OK\r\n");
    assert_eq!(client.reply(), b"+PONG\r\n");
    assert_eq!(client.reply(), bulk("1"));
    assert_eq!(client.reply(), b"+OK\r\n");
    let (rest, _, _) = util::expect_closed(&mut client.stream, util::IO_TIMEOUT);
    assert!(rest.is_empty());
}

#[test]
fn redis_cli_works_through_the_proxy() {
    let (a, b) = (Redis::start(), Redis::start());
    let server = proxy(&[&a, &b], &[]);
    let cli = |args: &[&str]| util::redis_cli(server.addr.port(), args);
    assert_eq!(cli(&["PING"]), "PONG\n");
    assert_eq!(cli(&["SET", "greeting", "hello"]), "OK\n");
    assert_eq!(cli(&["GET", "greeting"]), "hello\n");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2", "c", "3"]), "OK\n");
    assert_eq!(cli(&["MGET", "a", "b", "c", "d"]), "1\n2\n3\n\n");
    assert_eq!(cli(&["DEL", "a", "b", "c", "d"]), "3\n");
}

#[test]
fn shutdown_answers_requests_awaiting_an_upstream_then_exits_0() {
    let slow = Server::start(&["--protocol", "resp", "--enable-debug-commands"]);
    let name = slow.addr.to_string();
    let mut server = Server::start_proxy(&["--upstream", &name]);
    let mut client = Resp::connect(server.addr);
    assert_eq!(client.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    let mut staller = Resp::connect(slow.addr);
    staller.send(&[b"DEBUG", b"SLEEP", b"300"]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    for _ in 0..50 {
        client.send(&[b"GET", b"k"]);
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    server.signal(nix::sys::signal::Signal::SIGTERM);
    for _ in 0..50 {
        assert_eq!(client.reply(), bulk("v"));
    }
    let status = server
        .wait_exit(std::time::Duration::from_secs(5))
        .expect("the proxy did not exit");
    assert!(status.success(), "{status}");
    assert_eq!(staller.reply(), b"+OK\r\n");
}

/// Inline commands (typed into telnet) mean what they mean to Redis: the
/// proxy splits them with Redis's quoting rules, routes them by the key
/// Redis would see, and refuses an unbalanced line as Redis does. Each
/// line's reply is compared with a `redis-server`'s for the same line.
#[test]
fn inline_commands_are_split_and_routed_as_redis_splits_them() {
    use std::io::Write;
    let (a, b) = (Redis::start(), Redis::start());
    let upstreams = [&a, &b];
    let server = proxy(&upstreams, &[]);
    let reference = Redis::start();
    // A key with a space, owned by the upstream that does not own its
    // first word with the quote (what splitting on spaces would route by).
    let key = (0..1000)
        .map(|i| format!("k{i} z"))
        .find(|key| {
            let first = format!("\"{}", key.split(' ').next().unwrap());
            owner(&upstreams, key) != owner(&upstreams, &first)
        })
        .unwrap();
    let lines = [
        format!("SET \"{key}\" 1\r\n"),
        "SET 'it\\'s' \"v\\x41\\n\\ty\"\r\n".to_string(),
        "  SET  plain\tvalue \r\n".to_string(),
        "ECHO \"\"\r\n".to_string(),
        format!("GET \"{key}\"\r\n"),
        "GET 'it\\'s'\r\n".to_string(),
        format!("MGET \"{key}\" 'it\\'s' plain nope\r\n"),
        "DEL plain \"nope\"\n".to_string(),
        "PING\n".to_string(),
    ];
    let mut proxied = Resp::connect(server.addr);
    let mut direct = reference.client();
    for line in &lines {
        proxied.stream.write_all(line.as_bytes()).unwrap();
        direct.stream.write_all(line.as_bytes()).unwrap();
        assert_eq!(proxied.reply(), direct.reply(), "{line:?}");
    }
    // Stored under the key Redis split out, where that key belongs.
    let at = owner(&upstreams, &key);
    assert_eq!(
        upstreams[at].client().call(&[b"GET", key.as_bytes()]),
        bulk("1")
    );
    assert_eq!(
        upstreams[owner(&upstreams, "it's")]
            .client()
            .call(&[b"GET", b"it's"]),
        bulk("vA\n\ty")
    );
    // Unbalanced quotes: Redis's error, then the connection closes.
    for line in ["GET \"x\r\n", "SET \"a\"b 1\r\n", "SET 'x\r\n"] {
        let from = |addr| {
            let mut stream = util::connect(addr);
            stream.write_all(line.as_bytes()).unwrap();
            util::expect_closed(&mut stream, util::IO_TIMEOUT).0
        };
        let (from_proxy, from_redis) = (from(server.addr), from(reference.addr()));
        assert_eq!(from_proxy, from_redis, "{line:?}");
        assert_eq!(
            from_proxy,
            b"-ERR Protocol error: unbalanced quotes in request\r\n"
        );
    }
}

/// How deep a reply nests is the client's choice (a script may return
/// tables in tables): the proxy passes any depth through and the
/// connection it shares with other clients stays.
#[test]
fn deeply_nested_replies_pass_through() {
    let a = Redis::start();
    let server = proxy(&[&a], &[]);
    let mut client = Resp::connect(server.addr);
    let script = format!("return {}1{}", "{".repeat(12), "}".repeat(12));
    let eval: [&[u8]; 4] = [b"EVAL", script.as_bytes(), b"1", b"k"];
    let direct = a.client().call(&eval);
    assert_eq!(direct, [&b"*1\r\n".repeat(12)[..], b":1\r\n"].concat());
    client.send(&eval);
    client.send(&[b"SET", b"k", b"v"]);
    assert_eq!(client.reply(), direct);
    assert_eq!(client.reply(), b"+OK\r\n");
    assert_eq!(client.call(&[b"GET", b"k"]), bulk("v"));
}
