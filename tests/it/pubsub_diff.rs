//! Pub/Sub against a real `redis-server` (7.0): the same commands, from
//! two connections each, go to both servers, and what each connection
//! receives (replies and messages) is compared byte for byte: subscribed
//! mode and its errors, PUBSUB, UNSUBSCRIBE with nothing subscribed, RESP3
//! after HELLO 3, replies larger than the connection's ring.
//!
//! What differs on purpose, and how it is compared:
//!
//! - **the order of several subscriptions in one reply or message run**:
//!   Redis walks hash tables whose order depends on a random seed;
//!   holdfast goes in the order subscribed (UNSUBSCRIBE with no
//!   argument), in name order (patterns matching one PUBLISH, PUBSUB
//!   CHANNELS). Those runs are compared as sets, the counts in place.
//! - **HELLO**: holdfast reports version 7.0.0 and its shard as the id.
//!
//! After each command, both connections are sent `PING <marker>` and read
//! up to its answer, so everything a command caused has arrived. The
//! holdfast server runs one shard: a message to another shard arrives in
//! that shard's next loop turn, so a command its subscriber sends right
//! after the PUBLISH reply may be answered first (see the README), which
//! the marker would then race.

use crate::util;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use util::resp3::{Conn, Value};
use util::{Redis, Server};

const CHANNELS: &[&str] = &["a", "b", "news.1", ""];
const PATTERNS: &[&str] = &["n*", "*", "a?", "news.[0-9]", "b", "[", "\\*"];
const PUBLISHED: &[&str] = &["a", "b", "news.1", "news.x", "", "ab", "*"];
const MARKER: &[u8] = b"~marker~";

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(list).prop_map(str::to_string)
}

fn with(name: &str, args: Vec<String>) -> Vec<String> {
    [vec![name.to_string()], args].concat()
}

fn command() -> impl Strategy<Value = Vec<String>> {
    let channels = |n| prop::collection::vec(pick(CHANNELS), n);
    let patterns = |n| prop::collection::vec(pick(PATTERNS), n);
    prop_oneof![
        4 => channels(1..4).prop_map(|a| with("SUBSCRIBE", a)),
        3 => patterns(1..3).prop_map(|a| with("PSUBSCRIBE", a)),
        2 => channels(0..3).prop_map(|a| with("UNSUBSCRIBE", a)),
        2 => patterns(0..2).prop_map(|a| with("punsubscribe", a)),
        5 => (pick(PUBLISHED), pick(&["hi", "", "a b"]))
            .prop_map(|(c, m)| vec!["PUBLISH".into(), c, m]),
        1 => channels(0..3).prop_map(|a| with("PUBSUB", [vec!["NUMSUB".into()], a].concat())),
        1 => Just(vec!["PUBSUB".into(), "NUMPAT".into()]),
        1 => prop::collection::vec(pick(PATTERNS), 0..2)
            .prop_map(|a| with("PUBSUB", [vec!["CHANNELS".into()], a].concat())),
        1 => prop::collection::vec(pick(&["help", "FOO", "numpat", "x"]), 0..3)
            .prop_map(|a| with("PUBSUB", a)),
        2 => prop::collection::vec(pick(&["x", ""]), 0..3).prop_map(|a| with("PING", a)),
        1 => pick(&["2", "3", "4", "x"]).prop_map(|v| vec!["HELLO".into(), v]),
        1 => prop::collection::vec(pick(&["x"]), 0..2).prop_map(|a| with("RESET", a)),
        2 => prop_oneof![
            Just(vec!["GET".into(), "k".into()]),
            Just(vec!["SET".into(), "k".into(), "v".into()]),
            Just(vec!["GET".into()]),
            Just(vec!["ECHO".into(), "x".into()]),
            Just(vec!["CONFIG".into(), "GET".into(), "save".into()]),
            Just(vec!["CONFIG".into(), "nosuch".into()]),
            Just(vec!["COMMAND".into(), "COUNT".into(), "x".into()]),
            Just(vec!["NOSUCH".into()]),
            Just(vec!["SUBSCRIBE".into()]),
            Just(vec!["PUBLISH".into(), "a".into()]),
        ],
    ]
}

/// Steps: which connection (0 or 1) sends which command.
fn steps() -> impl Strategy<Value = Vec<(usize, Vec<String>)>> {
    prop::collection::vec((0..2usize, command()), 1..25)
}

/// One server's two connections.
struct Side {
    conns: [Conn; 2],
}

impl Side {
    fn new(addr: std::net::SocketAddr) -> Side {
        Side {
            conns: [Conn::connect(addr), Conn::connect(addr)],
        }
    }

    /// Back to two fresh connections' state, an empty keyspace.
    fn reset(&mut self) {
        for conn in &mut self.conns {
            assert_eq!(conn.call(&[b"RESET"]), b"+RESET\r\n");
        }
        assert_eq!(self.conns[0].call(&[b"FLUSHALL"]), b"+OK\r\n");
    }

    /// Sends `args` on connection `on`; returns what each connection
    /// received because of it, the answer to the marker included.
    fn step(&mut self, on: usize, args: &[&[u8]]) -> [Vec<Value>; 2] {
        self.conns[on].send(args);
        let mut received = [Vec::new(), Vec::new()];
        for (conn, frames) in self.conns.iter_mut().zip(&mut received) {
            conn.send(&[b"PING", MARKER]);
            loop {
                let frame = Value::parse(&conn.frame()).0;
                let marker = is_marker(&frame);
                frames.push(frame);
                if marker {
                    break;
                }
            }
        }
        received
    }
}

/// Whether `frame` answers `PING <marker>` (in subscribed mode, RESP2:
/// `pong` and the marker in an array).
fn is_marker(frame: &Value) -> bool {
    match frame {
        Value::Blob(b'$', bytes) => bytes == MARKER,
        Value::Aggregate(b'*', items) => {
            items.len() == 2 && items[0].blob() == Some(b"pong") && items[1].blob() == Some(MARKER)
        }
        _ => false,
    }
}

/// The kind word of a Pub/Sub frame (`message`, `unsubscribe`, ...).
fn kind(frame: &Value) -> Option<&[u8]> {
    match frame {
        Value::Aggregate(b'*' | b'>', items) if items.len() >= 3 => items[0].blob(),
        _ => None,
    }
}

/// What the module doc lists as differing on purpose, made equal.
fn normalize(command: &[&[u8]], frames: &mut [Value]) {
    let name = command[0].to_ascii_uppercase();
    for frame in frames.iter_mut() {
        normalize_hello(frame);
        if name == b"PUBSUB"
            && command
                .get(1)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"CHANNELS"))
            && let Value::Aggregate(_, items) = frame
        {
            items.sort();
        }
    }
    // Runs of pmessages (one PUBLISH, several patterns) and of
    // (p)unsubscribe confirmations of an UNSUBSCRIBE without arguments:
    // the names as a set, the counts in place.
    let all = command.len() == 1;
    let mut start = 0;
    while start < frames.len() {
        let run_kind = kind(&frames[start]).map(<[u8]>::to_vec);
        let mut end = start + 1;
        while end < frames.len() && kind(&frames[end]).map(<[u8]>::to_vec) == run_kind {
            end += 1;
        }
        match run_kind.as_deref() {
            Some(b"pmessage") => frames[start..end].sort(),
            Some(b"unsubscribe" | b"punsubscribe") if all => sort_names(&mut frames[start..end]),
            _ => {}
        }
        start = end;
    }
}

/// Sorts the names (the second element) of confirmation frames, leaving
/// each frame's count where it was.
fn sort_names(frames: &mut [Value]) {
    let mut names: Vec<Value> = frames
        .iter()
        .map(|f| f.items().unwrap()[1].clone())
        .collect();
    names.sort();
    for (frame, name) in frames.iter_mut().zip(names) {
        if let Value::Aggregate(_, items) = frame {
            items[1] = name;
        }
    }
}

/// HELLO's reply: the version and id fields blanked.
fn normalize_hello(frame: &mut Value) {
    if let Value::Aggregate(b'*' | b'%', items) = frame
        && items.len() == 14
        && items[0].blob() == Some(b"server")
    {
        items[3] = Value::Blob(b'$', b"VERSION".to_vec());
        items[7] = Value::Line(b':', b"ID".to_vec());
    }
}

struct Pair {
    _holdfast: Server,
    _redis: Redis,
    ours: Side,
    theirs: Side,
}

impl Pair {
    fn start(extra: &[&str]) -> Pair {
        let mut args = vec!["--protocol", "resp", "--threads", "1"];
        args.extend(extra);
        let holdfast = Server::start(&args);
        let redis = Redis::start_with(&["--databases", "1"]);
        Pair {
            ours: Side::new(holdfast.addr),
            theirs: Side::new(redis.addr()),
            _holdfast: holdfast,
            _redis: redis,
        }
    }

    /// Runs `steps` on both from fresh connections; the first difference.
    fn run(&mut self, steps: &[(usize, Vec<String>)]) -> Result<(), String> {
        self.ours.reset();
        self.theirs.reset();
        for (at, (on, command)) in steps.iter().enumerate() {
            let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
            self.compare(*on, &args)
                .map_err(|diff| format!("step {at} of {steps:?}\n{diff}"))?;
        }
        Ok(())
    }

    /// Sends `args` on connection `on` of both; how they differ, if they do.
    fn compare(&mut self, on: usize, args: &[&[u8]]) -> Result<(), String> {
        let mut ours = self.ours.step(on, args);
        let mut theirs = self.theirs.step(on, args);
        for frames in ours.iter_mut().chain(theirs.iter_mut()) {
            normalize(args, frames);
        }
        if ours == theirs {
            return Ok(());
        }
        Err(format!(
            "connection {on} sent {:?}\n  holdfast: {ours:?}\n  redis:    {theirs:?}",
            args.iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
        ))
    }

    fn script(&mut self, steps: &[(usize, &[&str])]) {
        let steps: Vec<(usize, Vec<String>)> = steps
            .iter()
            .map(|(on, args)| (*on, args.iter().map(|a| a.to_string()).collect()))
            .collect();
        if let Err(diff) = self.run(&steps) {
            panic!("{diff}");
        }
    }
}

#[test]
fn subscribed_mode_pubsub_and_resp3_as_redis_answers_them() {
    let mut pair = Pair::start(&[]);
    pair.script(&[
        // Nothing to leave: a null name and the count.
        (0, &["UNSUBSCRIBE"]),
        (0, &["PUNSUBSCRIBE"]),
        (0, &["SUBSCRIBE", "a", "b", "a"]),
        (0, &["PSUBSCRIBE", "n*", "a?"]),
        (1, &["PUBLISH", "a", "to a"]),
        (1, &["PUBLISH", "news", "to n*"]),
        (1, &["PUBLISH", "ab", "to a?"]),
        (1, &["PUBSUB", "NUMSUB", "a", "b", "c"]),
        (1, &["PUBSUB", "NUMPAT"]),
        (1, &["PUBSUB", "CHANNELS"]),
        (1, &["PUBSUB", "CHANNELS", "?"]),
        // Subscribed mode, RESP2: only Pub/Sub, PING, QUIT, RESET.
        (0, &["PING"]),
        (0, &["PING", "x"]),
        (0, &["GET", "k"]),
        (0, &["GET"]),
        (0, &["HELLO", "3"]),
        (0, &["CONFIG", "GET", "save"]),
        (0, &["CONFIG", "nosuch"]),
        (0, &["PUBSUB", "NUMPAT"]),
        (0, &["PUBLISH", "a", "x"]),
        (0, &["UNSUBSCRIBE", "b", "zz"]),
        (0, &["UNSUBSCRIBE"]),
        (0, &["PUNSUBSCRIBE", "n*"]),
        (0, &["PUNSUBSCRIBE"]),
        (0, &["UNSUBSCRIBE"]),
        (0, &["GET", "k"]),
        // RESP3: push frames, no limits, own messages before the count.
        (0, &["HELLO", "3"]),
        (0, &["SUBSCRIBE", "a"]),
        (0, &["PSUBSCRIBE", "*"]),
        (0, &["GET", "k"]),
        (0, &["SET", "k", "v", "NX", "GET"]),
        (0, &["PUBLISH", "a", "own"]),
        (1, &["PUBLISH", "a", "theirs"]),
        (0, &["PING"]),
        (0, &["CONFIG", "GET", "save"]),
        (0, &["INFO", "keyspace"]),
        (0, &["UNSUBSCRIBE"]),
        (0, &["PUNSUBSCRIBE"]),
        (0, &["UNSUBSCRIBE"]),
        (0, &["HELLO", "2"]),
        (0, &["GET", "nope"]),
        // RESET leaves everything quietly and goes back to RESP2.
        (1, &["HELLO", "3"]),
        (1, &["SUBSCRIBE", "b"]),
        (1, &["RESET"]),
        (0, &["PUBLISH", "b", "nobody"]),
        (1, &["GET", "nope"]),
        (1, &["PUBSUB", "HELP"]),
        (1, &["PUBSUB", "CHANNELS", "a", "b"]),
        (1, &["PUBSUB", "NUMPAT", "x"]),
        (1, &["PUBSUB", "FOO"]),
        (1, &["HELLO", "3", "AUTH", "default", "any"]),
        (1, &["HELLO", "3", "AUTH", "bob", "any"]),
        (1, &["HELLO", "2", "SETNAME", "no spaces"]),
        (1, &["HELLO", "3", "FOO"]),
    ]);
}

#[test]
fn generated_sequences_get_the_replies_and_messages_redis_gives() {
    let pair = std::cell::RefCell::new(Pair::start(&[]));
    let mut runner = TestRunner::new(Config {
        // `HOLDFAST_DIFF_CASES=2000` for a deeper run.
        cases: std::env::var("HOLDFAST_DIFF_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(64),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&steps(), |steps| {
        pair.borrow_mut().run(&steps).map_err(TestCaseError::fail)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// Replies larger than the connection's ring (4 KiB here): a SUBSCRIBE of
/// 200 channels answers 7 KiB, pipelined with more commands; they come
/// whole and in order.
#[test]
fn replies_larger_than_the_ring_arrive_whole_and_in_order() {
    let mut pair = Pair::start(&["--buffer", "4KiB"]);
    let channels: Vec<String> = (0..200).map(|i| format!("ch-{i:03}")).collect();
    let patterns: Vec<String> = (0..100).map(|i| format!("p-{i:02}*")).collect();
    let subscribe: Vec<&str> = ["SUBSCRIBE"]
        .into_iter()
        .chain(channels.iter().map(String::as_str))
        .collect();
    let psubscribe: Vec<&str> = ["PSUBSCRIBE"]
        .into_iter()
        .chain(patterns.iter().map(String::as_str))
        .collect();
    pair.script(&[
        (0, subscribe.as_slice()),
        (0, psubscribe.as_slice()),
        (1, &["PUBLISH", "ch-007", "x"]),
        (0, &["UNSUBSCRIBE"]),
        (0, &["PUNSUBSCRIBE"]),
    ]);
    // Pipelined: the next replies wait behind the pushed rest.
    for side in [&mut pair.ours, &mut pair.theirs] {
        side.reset();
    }
    let mut received = Vec::new();
    for side in [&mut pair.ours, &mut pair.theirs] {
        let conn = &mut side.conns[0];
        let args: Vec<&[u8]> = subscribe.iter().map(|a| a.as_bytes()).collect();
        conn.send(&args);
        conn.send(&[b"PING", b"between"]);
        conn.send(&[b"SUBSCRIBE", b"last"]);
        let frames: Vec<Vec<u8>> = (0..202).map(|_| conn.frame()).collect();
        received.push(frames);
    }
    assert!(received[0] == received[1], "the pipelined replies differ");
}
