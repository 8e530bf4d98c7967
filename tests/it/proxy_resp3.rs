//! `HELLO 3` through `holdfast proxy`: a client that asks for RESP3 gets
//! every reply as a Redis server sends it in RESP3. The same commands go to
//! a real `redis-server` and through the proxy and the replies are compared
//! byte for byte, in front of two plain upstreams and of a real Redis
//! Cluster (with an `-ASK` and a `-MOVED` followed on RESP3 connections);
//! a client library and `redis-cli -3` see maps, sets and doubles; RESP2
//! and RESP3 clients side by side get each their own protocol; upstreams
//! with a password are greeted in the right order; replicas answer RESP3
//! reads; and a client that switches protocol has its requests run in the
//! order it sent them.

use crate::cluster::{move_slot, redirects};
use crate::proxy::proxy;
use crate::util;

use std::thread;
use std::time::{Duration, Instant};

use holdfast::apps::proxy::cluster::slot::slot;
use holdfast::apps::proxy::hash::{Continuum, KeyHash};
use util::cluster::Cluster;
use util::resp3::Value;
use util::{Redis, Resp, Server};

const WITHIN: Duration = Duration::from_secs(5);

/// How a reply through the proxy must compare with Redis's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compare {
    /// Byte for byte.
    Exact,
    /// HELLO's description of the server: the same keys, in the same
    /// order, with values of the same type, equal but for `id`, `version`
    /// and `mode` (the proxy's own).
    Hello,
    /// CLIENT INFO: the same type (a verbatim string of text in RESP3),
    /// the same `name=` and `resp=`; the rest is the proxy's own.
    ClientInfo,
}

use Compare::{ClientInfo, Exact, Hello};

/// What both are sent, in order. `@0` and `@1` stand for two hash tags
/// whose keys are on different upstreams (or cluster nodes), so multi-key
/// commands are split and merged.
const SEQUENCE: &[(Compare, &[&str])] = &[
    (Hello, &["HELLO", "3"]),
    (Exact, &["PING"]),
    (Exact, &["ECHO", "hi"]),
    (Exact, &["SET", "{@0}k", "v0"]),
    (Exact, &["GET", "{@0}k"]),
    (Exact, &["GET", "{@0}missing"]),
    (Exact, &["MSET", "{@0}a", "1", "{@1}a", "2", "{@1}b", "3"]),
    (
        Exact,
        &[
            "MGET",
            "{@0}a",
            "{@1}missing",
            "{@1}a",
            "{@0}missing",
            "{@1}b",
        ],
    ),
    (Exact, &["MGET", "{@0}missing", "{@1}missing"]),
    (Exact, &["EXISTS", "{@0}a", "{@1}a", "{@1}missing"]),
    (Exact, &["HSET", "{@0}h", "f1", "v1", "f2", "v2"]),
    (Exact, &["HGETALL", "{@0}h"]),
    (Exact, &["HGETALL", "{@1}missing"]),
    (Exact, &["HGET", "{@0}h", "nope"]),
    (Exact, &["HMGET", "{@0}h", "f2", "nope"]),
    (Exact, &["SADD", "{@1}s", "3", "1", "2"]),
    (Exact, &["SMEMBERS", "{@1}s"]),
    (Exact, &["SMEMBERS", "{@1}missing"]),
    (Exact, &["SISMEMBER", "{@1}s", "2"]),
    (Exact, &["ZADD", "{@0}z", "1.5", "a", "2", "b"]),
    (Exact, &["ZSCORE", "{@0}z", "a"]),
    (Exact, &["ZSCORE", "{@0}z", "nope"]),
    (Exact, &["ZMSCORE", "{@0}z", "a", "nope"]),
    (Exact, &["ZRANGE", "{@0}z", "0", "-1", "WITHSCORES"]),
    (Exact, &["ZINCRBY", "{@0}z", "1", "a"]),
    (Exact, &["ZPOPMIN", "{@0}z"]),
    (Exact, &["INCRBYFLOAT", "{@1}f", "1.1"]),
    (Exact, &["INCRBYFLOAT", "{@1}f", "1e3"]),
    (
        Exact,
        &["EVAL", "return {1, false, 'x', {2, 'y'}}", "1", "{@0}k"],
    ),
    (Exact, &["EVAL", "return nil", "1", "{@0}k"]),
    (
        Exact,
        &[
            "EVAL",
            "redis.setresp(3) return redis.call('HGETALL', KEYS[1])",
            "1",
            "{@0}h",
        ],
    ),
    (Exact, &["EVAL", "return {double = 1.5}", "1", "{@0}k"]),
    (
        Exact,
        &[
            "EVAL",
            "return {big_number = '123456789012345678901234567890'}",
            "1",
            "{@0}k",
        ],
    ),
    (
        Exact,
        &[
            "EVAL",
            "return {verbatim_string = {format = 'txt', string = 'hi'}}",
            "1",
            "{@0}k",
        ],
    ),
    (
        Exact,
        &[
            "EVAL",
            "return redis.error_reply('MINE oops')",
            "1",
            "{@0}k",
        ],
    ),
    (Exact, &["INCR", "{@0}k"]),
    (Exact, &["HGET", "{@0}k", "f"]),
    (Exact, &["LPOS", "{@1}missing", "x"]),
    (Exact, &["TYPE", "{@0}h"]),
    (Exact, &["TTL", "{@0}k"]),
    (
        Exact,
        &["GEOADD", "{@1}g", "13.361389", "38.115556", "Palermo"],
    ),
    (Exact, &["GEOPOS", "{@1}g", "Palermo", "nope"]),
    (Exact, &["XADD", "{@1}x", "1-1", "f", "v"]),
    (Exact, &["XRANGE", "{@1}x", "-", "+"]),
    (Exact, &["CLIENT", "GETNAME"]),
    (Exact, &["CLIENT", "SETNAME", "app"]),
    (Exact, &["CLIENT", "GETNAME"]),
    (ClientInfo, &["CLIENT", "INFO"]),
    (Exact, &["COMMAND", "DOCS", "nosuch"]),
    (Exact, &["DEL", "{@0}a", "{@1}a", "{@1}missing"]),
    // Back to RESP2, and to RESP3 again.
    (Hello, &["HELLO", "2"]),
    (Exact, &["GET", "{@0}missing"]),
    (Exact, &["MGET", "{@0}missing", "{@1}b"]),
    (Exact, &["HGETALL", "{@0}h"]),
    (Exact, &["CLIENT", "GETNAME"]),
    (ClientInfo, &["CLIENT", "INFO"]),
    (Hello, &["HELLO", "3"]),
    (Exact, &["GET", "{@0}missing"]),
    (Exact, &["ZRANGE", "{@0}z", "0", "-1", "WITHSCORES"]),
    (Hello, &["HELLO"]),
    (Exact, &["HELLO", "4"]),
];

/// Reads only, in RESP3, on keys of both tags: sent while a slot moves.
const READS: &[(Compare, &[&str])] = &[
    (Exact, &["GET", "{@0}k"]),
    (Exact, &["GET", "{@0}missing"]),
    (Exact, &["HGETALL", "{@0}h"]),
    // One key per slot: a migrating slot refuses several (TRYAGAIN).
    (Exact, &["MGET", "{@0}k", "{@1}b", "{@1}missing"]),
    (Exact, &["ZRANGE", "{@0}z", "0", "-1", "WITHSCORES"]),
    (Exact, &["SMEMBERS", "{@1}s"]),
];

/// Sends each command of `sequence` (its `@0` and `@1` replaced by
/// `tags`) to Redis (`direct`) and through the proxy (`proxied`), and
/// compares the replies.
fn compare(
    direct: &mut Resp,
    proxied: &mut Resp,
    tags: &[String; 2],
    sequence: &[(Compare, &[&str])],
) {
    for (how, words) in sequence {
        let args: Vec<Vec<u8>> = words
            .iter()
            .map(|w| {
                w.replace("@0", &tags[0])
                    .replace("@1", &tags[1])
                    .into_bytes()
            })
            .collect();
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let theirs = direct.call(&refs);
        let ours = proxied.call(&refs);
        let shown = |bytes: &[u8]| bytes.escape_ascii().to_string();
        let same = match how {
            Exact => ours == theirs,
            Hello => same_description(&ours, &theirs),
            ClientInfo => same_client_info(&ours, &theirs),
        };
        assert!(
            same,
            "{words:?}\n  proxy: {}\n  redis: {}",
            shown(&ours),
            shown(&theirs)
        );
    }
}

/// The type byte of a parsed value.
fn kind(value: &Value) -> u8 {
    match value {
        Value::Line(kind, _) | Value::Blob(kind, _) | Value::Aggregate(kind, _) => *kind,
    }
}

/// Whether two HELLO replies describe alike (see [`Compare::Hello`]).
fn same_description(ours: &[u8], theirs: &[u8]) -> bool {
    let ((ours, _), (theirs, _)) = (Value::parse(ours), Value::parse(theirs));
    let (Some(mine), Some(redis)) = (ours.items(), theirs.items()) else {
        return ours == theirs;
    };
    kind(&ours) == kind(&theirs)
        && mine.len() == redis.len()
        && mine.chunks(2).zip(redis.chunks(2)).all(|(a, b)| {
            let own = [&b"id"[..], b"version", b"mode"].contains(&a[0].blob().unwrap_or_default());
            a[0] == b[0]
                && if own {
                    kind(&a[1]) == kind(&b[1])
                } else {
                    a[1] == b[1]
                }
        })
}

/// Whether two CLIENT INFO replies agree (see [`Compare::ClientInfo`]).
fn same_client_info(ours: &[u8], theirs: &[u8]) -> bool {
    let ((ours, _), (theirs, _)) = (Value::parse(ours), Value::parse(theirs));
    let field = |value: &Value, name: &str| -> Option<String> {
        let text = String::from_utf8_lossy(value.blob()?).into_owned();
        let text = text
            .strip_prefix("txt:")
            .unwrap_or(&text)
            .trim_end()
            .to_string();
        let pair = text.split(' ').find(|pair| pair.starts_with(name))?;
        Some(pair.to_string())
    };
    let prefix = |value: &Value| value.blob().map(|b| b.starts_with(b"txt:"));
    kind(&ours) == kind(&theirs)
        && prefix(&ours) == prefix(&theirs)
        && field(&ours, "name=") == field(&theirs, "name=")
        && field(&ours, "resp=") == field(&theirs, "resp=")
        && field(&ours, "resp=").is_some()
}

/// Two hash tags that `place` puts apart.
fn two_tags(place: impl Fn(&str) -> u16) -> [String; 2] {
    let first = place("t0");
    let other = (1..)
        .map(|i| format!("t{i}"))
        .find(|tag| place(tag) != first)
        .unwrap();
    ["t0".to_string(), other]
}

/// `redis-cli -3` as a person types it (`--no-raw`: types shown) against
/// the server on `port`.
fn redis_cli_3(port: u16, args: &[&str]) -> String {
    util::redis_cli(port, &[&["-3", "--no-raw"], args].concat())
}

#[test]
fn replies_are_redis_resp3_byte_for_byte_over_two_upstreams() {
    let (a, b, direct) = (Redis::start(), Redis::start(), Redis::start());
    let upstreams = [&a, &b];
    let server = proxy(&upstreams, &[]);
    let names: Vec<String> = upstreams.iter().map(|r| r.name()).collect();
    let ring = Continuum::new(&names, KeyHash::Murmur).unwrap();
    let tags = two_tags(|tag| ring.upstream(tag.as_bytes()) as u16);
    let mut theirs = direct.client();
    let mut ours = Resp::connect(server.addr);
    compare(&mut theirs, &mut ours, &tags, SEQUENCE);
    // The keys are on both upstreams.
    for (tag, key) in tags.iter().zip(["h", "b"]) {
        let key = format!("{{{tag}}}{key}");
        let at = ring.upstream(tag.as_bytes());
        assert_eq!(
            upstreams[at].client().call(&[b"EXISTS", key.as_bytes()]),
            b":1\r\n"
        );
    }
    // redis-cli -3 prints the same through the proxy as from Redis.
    let (h, z, b_key) = (
        format!("{{{}}}h", tags[0]),
        format!("{{{}}}z", tags[0]),
        format!("{{{}}}b", tags[1]),
    );
    for args in [
        &["HGETALL", h.as_str()][..],
        &["ZRANGE", &z, "0", "-1", "WITHSCORES"],
        &["MGET", &b_key, "nope", &h],
        &["GET", "nope"],
    ] {
        let (mine, redis) = (
            redis_cli_3(server.addr.port(), args),
            redis_cli_3(direct.port, args),
        );
        assert_eq!(mine, redis, "redis-cli -3 {args:?}");
    }
    assert!(redis_cli_3(server.addr.port(), &["HGETALL", &h]).starts_with("1# \"f1\" => \"v1\""));
}

#[test]
fn replies_are_redis_resp3_byte_for_byte_through_a_cluster_and_redirects_are_followed() {
    let cluster = Cluster::start();
    let direct = Redis::start();
    let seed = cluster.seed();
    // No periodic refresh during the test: only the redirects can tell.
    let server = Server::start_proxy(&["--cluster", &seed, "--cluster-refresh", "1h"]);
    let tags = two_tags(|tag| cluster.owner(slot(tag.as_bytes())).0);
    let mut theirs = direct.client();
    let mut ours = Resp::connect(server.addr);
    compare(&mut theirs, &mut ours, &tags, SEQUENCE);

    // The first tag's slot moves to another primary under the RESP3
    // client: `-ASK` while it migrates, `-MOVED` once it has.
    let moving = slot(tags[0].as_bytes());
    let (from, _) = cluster.owner(moving);
    let to = cluster.other_primary(from);
    let listed = cluster.client(from).call(&[
        b"CLUSTER",
        b"GETKEYSINSLOT",
        moving.to_string().as_bytes(),
        b"100",
    ]);
    let (listed, _) = Value::parse(&listed);
    let keys: Vec<String> = (listed.items().unwrap().iter())
        .map(|key| String::from_utf8(key.blob().unwrap().to_vec()).unwrap())
        .collect();
    assert!(keys.len() >= 3, "{keys:?}");
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let before = redirects(&server);
    move_slot(&cluster, moving, to, &keys, || {
        compare(&mut theirs, &mut ours, &tags, READS);
        assert!(redirects(&server) > before, "no ASK was followed");
    });
    let asked = redirects(&server);
    compare(&mut theirs, &mut ours, &tags, READS);
    assert!(redirects(&server) > asked, "no MOVED was followed");
    let key = format!("{{{}}}h", tags[0]);
    assert_eq!(
        cluster.client(to).call(&[b"HLEN", key.as_bytes()]),
        b":2\r\n",
        "the hash is on the node it moved to"
    );
}

#[test]
fn a_client_library_speaking_resp3_gets_maps_sets_and_doubles() {
    use redis::Value as V;
    let (a, b) = (Redis::start(), Redis::start());
    let server = proxy(&[&a, &b], &[]);
    let url = format!("redis://{}/?protocol=resp3", server.addr);
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_connection_with_timeout(WITHIN).unwrap();
    con.set_read_timeout(Some(WITHIN)).unwrap();
    let query = |con: &mut redis::Connection, args: &[&str]| -> V {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(con).unwrap()
    };
    let bulk = |text: &str| V::BulkString(text.as_bytes().to_vec());
    query(&mut con, &["HSET", "h", "f1", "v1", "f2", "v2"]);
    assert_eq!(
        query(&mut con, &["HGETALL", "h"]),
        V::Map(vec![(bulk("f1"), bulk("v1")), (bulk("f2"), bulk("v2"))])
    );
    query(&mut con, &["SADD", "s", "2", "1"]);
    assert_eq!(
        query(&mut con, &["SMEMBERS", "s"]),
        V::Set(vec![bulk("1"), bulk("2")])
    );
    query(&mut con, &["ZADD", "z", "1.5", "m"]);
    assert_eq!(query(&mut con, &["ZSCORE", "z", "m"]), V::Double(1.5));
    // Two keys on each upstream, one of each missing: a merged MGET.
    let names = [a.name(), b.name()];
    let ring = Continuum::new(&names, KeyHash::Murmur).unwrap();
    let ring = &ring;
    let on = |upstream: usize| {
        (0..)
            .map(|i| format!("key:{i}"))
            .filter(move |key| ring.upstream(key.as_bytes()) == upstream)
    };
    let keys: Vec<String> = on(0).take(2).chain(on(1).take(2)).collect();
    query(&mut con, &["SET", &keys[0], "zero"]);
    query(&mut con, &["SET", &keys[2], "two"]);
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    assert_eq!(
        query(&mut con, &mget),
        V::Array(vec![bulk("zero"), V::Nil, bulk("two"), V::Nil])
    );
    assert_eq!(query(&mut con, &["GET", "nope"]), V::Nil);
}

#[test]
fn resp2_and_resp3_clients_side_by_side_each_get_their_own() {
    let redis = Redis::start();
    // No health check: the upstream's connections are the lanes' alone.
    let server = proxy(&[&redis], &["--health-check-interval", "0s"]);
    assert_eq!(redis.client().call(&[b"HSET", b"h", b"f", b"v"]), b":1\r\n");
    let mut two = Resp::connect(server.addr);
    assert_eq!(two.call(&[b"GET", b"nope"]), b"$-1\r\n");
    // (Waited for: the test's own connections close in the background.)
    let alone = util::wait_until(WITHIN, || redis.connected_clients() == 1);
    assert!(
        alone,
        "RESP3 lanes unused, yet {} connections",
        redis.connected_clients()
    );
    let mut three = Resp::connect(server.addr);
    assert!(three.call(&[b"HELLO", b"3"]).starts_with(b"%7\r\n"));
    // Pipelined and interleaved on the same upstream.
    let requests: [&[&[u8]]; 3] = [
        &[b"GET", b"nope"],
        &[b"HGETALL", b"h"],
        &[b"MGET", b"h", b"nope"],
    ];
    for _ in 0..50 {
        for request in requests {
            two.send(request);
            three.send(request);
        }
    }
    let resp2: [&[u8]; 3] = [
        b"$-1\r\n",
        b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
        b"*2\r\n$-1\r\n$-1\r\n",
    ];
    let resp3: [&[u8]; 3] = [
        b"_\r\n",
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n",
        b"*2\r\n_\r\n_\r\n",
    ];
    for _ in 0..50 {
        for i in 0..3 {
            assert_eq!(two.reply(), resp2[i]);
            assert_eq!(three.reply(), resp3[i]);
        }
    }
    let two_lanes = util::wait_until(WITHIN, || redis.connected_clients() == 2);
    assert!(
        two_lanes,
        "not one connection per dialect: {}",
        redis.connected_clients()
    );
}

#[test]
fn resp3_clients_reach_upstreams_that_require_a_password() {
    let redis = crate::proxy_auth::redis_with_logins();
    assert_eq!(
        redis.client().call(&[b"AUTH", b"up-pass"]),
        b"+OK\r\n",
        "the password is required"
    );
    let logins: [&[&str]; 2] = [
        &["--upstream-password", "up-pass"],
        &["--upstream-user", "bob", "--upstream-password", "bobpw"],
    ];
    for login in logins {
        // AUTH first, then HELLO 3: the other way round the server refuses.
        let server = proxy(&[&redis], login);
        let mut three = Resp::connect(server.addr);
        assert!(three.call(&[b"HELLO", b"3"]).starts_with(b"%7\r\n"));
        three.call(&[b"HSET", b"h", b"f", b"v"]);
        assert_eq!(
            three.call(&[b"HGETALL", b"h"]),
            b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n",
            "{login:?}"
        );
        assert_eq!(three.call(&[b"GET", b"nope"]), b"_\r\n", "{login:?}");
    }
}

#[test]
fn an_upstream_without_hello_fails_resp3_requests_alone() {
    // As a Redis older than 6 answers HELLO.
    let redis = Redis::start_with(&["--rename-command", "HELLO", ""]);
    let server = proxy(&[&redis], &[]);
    let mut two = Resp::connect(server.addr);
    assert_eq!(two.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    let mut three = Resp::connect(server.addr);
    assert!(three.call(&[b"HELLO", b"3"]).starts_with(b"%7\r\n"));
    assert_eq!(
        three.call(&[b"GET", b"k"]),
        b"-ERR upstream connection failed\r\n"
    );
    let said = util::wait_until(WITHIN, || {
        server
            .stderr_text()
            .contains("the greeting's HELLO 3 was refused: -ERR unknown command")
    });
    assert!(said, "{}", server.stderr_text());
    assert_eq!(two.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // However long the RESP3 client keeps trying (each refusal is a
    // connect the upstream refused; three in a row would open a shared
    // breaker), the RESP2 clients are not failed for it.
    let until = Instant::now() + Duration::from_millis(2_500);
    while Instant::now() < until {
        assert!(three.call(&[b"GET", b"k"]).starts_with(b"-ERR upstream"));
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.metric(
            "holdfast_upstream_errors_total",
            &[("upstream", &redis.name()), ("kind", "connect")]
        ) >= 2.0,
        "the RESP3 connection was tried again after its pause"
    );
    let mut fresh = Resp::connect(server.addr);
    assert_eq!(fresh.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    assert_eq!(two.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    let closed = [("upstream", redis.name()), ("state", "closed".to_string())];
    let closed: Vec<(&str, &str)> = closed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        server.metric("holdfast_upstream_breaker_state", &closed),
        1.0,
        "the breaker stays closed"
    );
}

#[test]
fn reads_from_replicas_come_in_resp3_too() {
    let primary = Redis::start();
    let port = primary.port.to_string();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &port]);
    let (p, r) = (primary.name(), replica.name());
    let pair = format!("{p}={r}");
    let server = Server::start_proxy(&[
        "--upstream",
        &p,
        "--upstream",
        &r,
        "--upstream-replica",
        &pair,
        "--read-from",
        "replica",
    ]);
    let mut three = Resp::connect(server.addr);
    assert!(three.call(&[b"HELLO", b"3"]).starts_with(b"%7\r\n"));
    assert_eq!(three.call(&[b"HSET", b"h", b"f", b"v"]), b":1\r\n");
    let replicated = util::wait_until(WITHIN, || {
        replica.client().call(&[b"HLEN", b"h"]) == b":1\r\n"
    });
    assert!(replicated, "the replica never had the hash");
    assert_eq!(
        three.call(&[b"HGETALL", b"h"]),
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert_eq!(three.call(&[b"MGET", b"h", b"nope"]), b"*2\r\n_\r\n_\r\n");
    let info = replica.client().call(&[b"INFO", b"commandstats"]);
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains("cmdstat_hgetall:calls=1,"), "{info}");
}

#[test]
fn a_client_switching_protocol_keeps_its_requests_in_order() {
    let redis = Redis::start();
    // One request in flight per connection: the SET waits in the proxy
    // while the script runs, and the GET goes on another connection (the
    // RESP3 one), which must not overtake it.
    let server = proxy(&[&redis], &["--upstream-pipeline", "1"]);
    let mut client = Resp::connect(server.addr);
    let busy = "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
                repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 300000 \
                return 1";
    client.send(&[b"EVAL", busy.as_bytes(), b"1", b"k"]);
    client.send(&[b"SET", b"k", b"before"]);
    client.send(&[b"HELLO", b"3"]);
    client.send(&[b"GET", b"k"]);
    assert_eq!(client.reply(), b":1\r\n");
    assert_eq!(client.reply(), b"+OK\r\n");
    assert!(client.reply().starts_with(b"%7\r\n"));
    assert_eq!(client.reply(), b"$6\r\nbefore\r\n");
}
