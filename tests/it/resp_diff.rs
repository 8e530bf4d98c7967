//! The `resp` service against a real `redis-server` (7.0): the same
//! generated command sequences go to both and the replies are compared
//! byte for byte, in RESP2 and again in RESP3 (after `HELLO 3`). Pub/Sub
//! has its own suite, `pubsub_diff.rs`. This suite is the spec of the service's Redis
//! compatibility; the few intended differences are listed in one place,
//! below, and are either normalized here or left out of the generator.
//!
//! The intended differences (mirrored in the README's RESP section), and how
//! this suite deals with each:
//!
//! - **SCAN**: the cursor is holdfast's own (stripe and position): compared
//!   by the keys a full iteration returns.
//! - **KEYS**: the order of the keys: compared sorted.
//! - **RANDOMKEY**: which key: compared as nil or not.
//! - **TTL PTTL EXPIRETIME PEXPIRETIME TIME**: clock readings: compared
//!   within a tolerance.
//! - **SELECT**: one database: Redis runs with --databases 1 here, so SELECT
//!   1 fails alike.
//! - **SET/SETEX/... with an absolute expiry in the past**: the key is stored
//!   expired in both; when the active expiry removes it differs, so DBSIZE
//!   right after it would race: not generated (EXPIREAT and GETEX with a past
//!   time delete at once and are generated).
//! - **SETRANGE, APPEND**: values are limited to --max-frame (Redis: 512
//!   MiB), with Redis's error text: offsets between the two are not generated.
//! - **COMMAND**: only this server's commands; key specifications and
//!   subcommands are empty; DOCS is empty.
//! - **INFO**: a subset of Redis's sections and fields, plus holdfast's own.
//! - **HELLO, CLIENT, CONFIG**: HELLO reports version 7.0.0 and the shard as
//!   its id; CLIENT names are not kept; CONFIG GET knows save, appendonly,
//!   maxmemory, databases.
//! - **lists, hashes, sets, sorted sets, streams, transactions, scripting,
//!   sharded pub/sub**: not held: an error naming the command.
//! - **Pub/Sub**: compared by `pubsub_diff.rs`, with its own list.

use crate::util;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use util::{Redis, Resp, Server};

const KEYS: &[&str] = &["a", "b", "c", "k:1", "{t}x", ""];

const VALUES: &[&str] = &[
    "",
    "v",
    "hello world",
    "0",
    "1",
    "-1",
    "-0",
    "007",
    "42",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "3.14",
    "1e3",
    "abc",
    " 5",
    "0x10",
    "inf",
    "+1",
    "10.50",
    "ohmytext",
    "mynewtext",
];

const INTEGERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "10",
    "100",
    "-0",
    "abc",
    "",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "1.5",
    " 1",
    "01",
    "+1",
    "2147483648",
    "-2147483649",
    "9223372036854776",
];

const FLOATS: &[&str] = &[
    "0",
    "0.1",
    "-0.1",
    "1.5",
    "2.0e2",
    "5.0e3",
    "-3",
    "1e-5",
    "abc",
    "",
    "inf",
    "-inf",
    "nan",
    "1e400",
    "0x1p3",
    " 1",
    "1e",
    "3.0000000000000000001",
];

/// Expiry amounts that keep a key for the whole case or delete it at
/// once, never in between (see the intended differences in the module doc).
const SECONDS: &[&str] = &[
    "100",
    "1000",
    "0",
    "-1",
    "-100",
    "abc",
    "-0",
    "9223372036854775807",
    "9223372036854775",
    "9223372036854776",
    "-9223372036854775808",
    "-9223372036854776",
];

const MILLIS: &[&str] = &[
    "100000",
    "1200000",
    "0",
    "-5",
    "abc",
    "9223372036854775807",
    "-9223372036854775808",
];

/// Placeholders replaced when a case runs: absolute times 1000 s after or
/// before now.
const FUTURE_S: &str = "@future_s";
const FUTURE_MS: &str = "@future_ms";
const PAST_S: &str = "@past_s";
const PAST_MS: &str = "@past_ms";

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(list).prop_map(str::to_string)
}

fn key() -> impl Strategy<Value = String> {
    pick(KEYS)
}

fn cmd(parts: Vec<String>) -> Vec<String> {
    parts
}

/// SET's options, valid and not, in any order and number.
fn set_options() -> impl Strategy<Value = Vec<String>> {
    let option = prop_oneof![
        Just(vec!["NX".to_string()]),
        Just(vec!["xx".to_string()]),
        Just(vec!["GET".to_string()]),
        Just(vec!["KEEPTTL".to_string()]),
        pick(SECONDS).prop_map(|s| vec!["EX".to_string(), s]),
        pick(MILLIS).prop_map(|s| vec!["px".to_string(), s]),
        Just(vec!["EXAT".to_string(), FUTURE_S.to_string()]),
        Just(vec!["PXAT".to_string(), FUTURE_MS.to_string()]),
        Just(vec!["EX".to_string()]),
        Just(vec!["BOGUS".to_string()]),
        Just(vec!["PERSIST".to_string()]),
    ];
    prop::collection::vec(option, 0..4).prop_map(|o| o.concat())
}

/// GETEX's options; past absolute times are fine here (the key goes).
fn getex_options() -> impl Strategy<Value = Vec<String>> {
    let option = prop_oneof![
        Just(vec!["PERSIST".to_string()]),
        pick(SECONDS).prop_map(|s| vec!["EX".to_string(), s]),
        pick(MILLIS).prop_map(|s| vec!["PX".to_string(), s]),
        Just(vec!["EXAT".to_string(), FUTURE_S.to_string()]),
        Just(vec!["PXAT".to_string(), PAST_MS.to_string()]),
        Just(vec!["EXAT".to_string(), PAST_S.to_string()]),
        Just(vec!["NX".to_string()]),
        Just(vec!["KEEPTTL".to_string()]),
    ];
    prop::collection::vec(option, 0..3).prop_map(|o| o.concat())
}

fn expire_flags() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(pick(&["NX", "xx", "GT", "lt", "FOO"]), 0..3)
}

fn string_command() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        (key(), pick(VALUES), set_options()).prop_map(|(k, v, o)| cmd([
            vec!["SET".into(), k, v],
            o
        ]
        .concat())),
        key().prop_map(|k| cmd(vec!["GET".into(), k])),
        prop::collection::vec(key(), 0..4).prop_map(|ks| cmd([vec!["MGET".into()], ks].concat())),
        (key(), pick(VALUES)).prop_map(|(k, v)| cmd(vec!["SETNX".into(), k, v])),
        (
            pick(&["SETEX", "PSETEX"]),
            key(),
            pick(SECONDS),
            pick(VALUES)
        )
            .prop_map(|(c, k, s, v)| cmd(vec![c, k, s, v])),
        (key(), pick(VALUES)).prop_map(|(k, v)| cmd(vec!["GETSET".into(), k, v])),
        key().prop_map(|k| cmd(vec!["GETDEL".into(), k])),
        (key(), getex_options()).prop_map(|(k, o)| cmd([vec!["GETEX".into(), k], o].concat())),
        (
            pick(&["GETRANGE", "SUBSTR"]),
            key(),
            pick(INTEGERS),
            pick(INTEGERS)
        )
            .prop_map(|(c, k, s, e)| cmd(vec![c, k, s, e])),
        (
            key(),
            pick(&["0", "1", "5", "-1", "abc", "536870912", "100"]),
            pick(VALUES)
        )
            .prop_map(|(k, o, v)| cmd(vec!["SETRANGE".into(), k, o, v])),
        key().prop_map(|k| cmd(vec!["STRLEN".into(), k])),
        (key(), pick(VALUES)).prop_map(|(k, v)| cmd(vec!["APPEND".into(), k, v])),
        (
            pick(&["MSET", "MSETNX"]),
            prop::collection::vec((key(), pick(VALUES)), 1..4),
            any::<bool>()
        )
            .prop_map(|(c, pairs, odd)| {
                let mut parts = vec![c];
                for (k, v) in pairs {
                    parts.push(k);
                    parts.push(v);
                }
                if odd {
                    parts.pop();
                }
                parts
            }),
        (pick(&["INCR", "DECR"]), key()).prop_map(|(c, k)| cmd(vec![c, k])),
        (pick(&["INCRBY", "DECRBY"]), key(), pick(INTEGERS))
            .prop_map(|(c, k, n)| cmd(vec![c, k, n])),
        (key(), pick(FLOATS)).prop_map(|(k, f)| cmd(vec!["INCRBYFLOAT".into(), k, f])),
        (
            key(),
            key(),
            prop::collection::vec(
                pick(&["LEN", "IDX", "WITHMATCHLEN", "MINMATCHLEN", "2", "0", "x"]),
                0..4
            )
        )
            .prop_map(|(a, b, o)| cmd([vec!["LCS".into(), a, b], o].concat())),
    ]
}

fn key_command() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        (
            pick(&["DEL", "UNLINK", "EXISTS", "TOUCH"]),
            prop::collection::vec(key(), 0..4)
        )
            .prop_map(|(c, ks)| cmd([vec![c], ks].concat())),
        (
            pick(&["EXPIRE", "expire", "EXPIREAT"]),
            key(),
            pick(SECONDS),
            expire_flags()
        )
            .prop_map(|(c, k, s, f)| cmd([vec![c, k, s], f].concat())),
        (
            pick(&["PEXPIRE", "PEXPIREAT"]),
            key(),
            pick(MILLIS),
            expire_flags()
        )
            .prop_map(|(c, k, s, f)| cmd([vec![c, k, s], f].concat())),
        (key(), pick(&[FUTURE_S, PAST_S]), expire_flags()).prop_map(|(k, t, f)| cmd([
            vec!["EXPIREAT".into(), k, t],
            f
        ]
        .concat())),
        (key(), pick(&[FUTURE_MS, PAST_MS])).prop_map(|(k, t)| cmd(vec!["PEXPIREAT".into(), k, t])),
        (
            pick(&[
                "TTL",
                "PTTL",
                "EXPIRETIME",
                "PEXPIRETIME",
                "PERSIST",
                "TYPE"
            ]),
            key()
        )
            .prop_map(|(c, k)| cmd(vec![c, k])),
        (pick(&["RENAME", "RENAMENX"]), key(), key()).prop_map(|(c, a, b)| cmd(vec![c, a, b])),
        Just(cmd(vec!["DBSIZE".into()])),
        pick(&["*", "k*", "?", "[ab]", "*x", "[^a]*", "k:\\1", "a[", ""])
            .prop_map(|p| cmd(vec!["KEYS".into(), p])),
        scan_command(),
        Just(cmd(vec!["RANDOMKEY".into()])),
        pick(INTEGERS).prop_map(|n| cmd(vec!["SELECT".into(), n])),
        prop::collection::vec(pick(&["ASYNC", "sync", "LAZY"]), 0..2).prop_map(|o| cmd([
            vec!["FLUSHDB".into()],
            o
        ]
        .concat())),
    ]
}

fn scan_command() -> impl Strategy<Value = Vec<String>> {
    let option = prop_oneof![
        pick(&["*", "k*", "[ab]", "?"]).prop_map(|p| vec!["MATCH".to_string(), p]),
        pick(&["1", "3", "100", "0", "-1", "abc"]).prop_map(|n| vec!["COUNT".to_string(), n]),
        pick(&["string", "list", "STRING"]).prop_map(|t| vec!["TYPE".to_string(), t]),
        Just(vec!["NOPE".to_string()]),
        Just(vec!["COUNT".to_string()]),
    ];
    (
        pick(&["0", "0", "0", "abc", " 1", "-x", ""]),
        prop::collection::vec(option, 0..3),
    )
        .prop_map(|(cursor, o)| cmd([vec!["SCAN".into(), cursor], o.concat()].concat()))
}

/// Known commands with any number of arguments (arity errors), unknown
/// ones, and the connection commands.
fn other_command() -> impl Strategy<Value = Vec<String>> {
    let name = pick(&[
        "GET", "SET", "SETEX", "GETEX", "MSET", "INCRBY", "EXPIRE", "TTL", "RENAME", "KEYS",
        "SCAN", "DBSIZE", "LCS", "GETRANGE", "SELECT", "ECHO", "PING", "APPEND", "FOO", "getfoo",
        "x\r\ny",
    ]);
    prop_oneof![
        (name, prop::collection::vec(pick(VALUES), 0..4)).prop_map(|(n, args)| cmd([
            vec![n],
            args
        ]
        .concat())),
        prop::collection::vec(pick(VALUES), 0..3)
            .prop_map(|args| cmd([vec!["PING".into()], args].concat())),
        pick(VALUES).prop_map(|v| cmd(vec!["ECHO".into(), v])),
    ]
}

fn sequence() -> impl Strategy<Value = Vec<Vec<String>>> {
    let command = prop_oneof![
        5 => string_command(),
        4 => key_command(),
        1 => other_command(),
    ];
    prop::collection::vec(command, 1..30)
}

/// A RESP reply, parsed enough to normalize it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Line(u8, Vec<u8>),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Value>>),
}

fn parse(bytes: &[u8]) -> (Value, usize) {
    let end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
    let line = &bytes[1..end];
    let number = || std::str::from_utf8(line).unwrap().parse::<i64>().unwrap();
    match bytes[0] {
        b'$' => match number() {
            -1 => (Value::Bulk(None), end + 2),
            n => {
                let start = end + 2;
                let body = bytes[start..start + n as usize].to_vec();
                (Value::Bulk(Some(body)), start + n as usize + 2)
            }
        },
        b'*' => match number() {
            -1 => (Value::Array(None), end + 2),
            n => {
                let mut at = end + 2;
                let mut items = Vec::new();
                for _ in 0..n {
                    let (item, used) = parse(&bytes[at..]);
                    items.push(item);
                    at += used;
                }
                (Value::Array(Some(items)), at)
            }
        },
        kind => (Value::Line(kind, line.to_vec()), end + 2),
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Line(b':', n) => std::str::from_utf8(n).ok()?.parse().ok(),
        _ => None,
    }
}

/// Compares the two replies to `args`, normalizing what
/// intended differences (the module doc) name; `Err` says how they differ.
fn compare(args: &[Vec<u8>], ours: &[u8], theirs: &[u8]) -> Result<(), String> {
    if ours == theirs {
        return Ok(());
    }
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let (a, _) = parse(ours);
    let (b, _) = parse(theirs);
    let within = |tolerance: i64| match (integer(&a), integer(&b)) {
        (Some(x), Some(y)) if x >= 0 && y >= 0 => (x - y).abs() <= tolerance,
        _ => false,
    };
    let same = match name.as_str() {
        "TTL" | "EXPIRETIME" => within(1),
        "PTTL" | "PEXPIRETIME" => within(2000),
        // A cursor other than 0 means different places in the two
        // servers (cursor 0 runs a whole iteration, see `Pair::run`).
        "SCAN" => matches!((&a, &b), (Value::Array(Some(_)), Value::Array(Some(_)))),
        "KEYS" => match (&a, &b) {
            (Value::Array(Some(x)), Value::Array(Some(y))) => {
                let (mut x, mut y) = (x.clone(), y.clone());
                x.sort_by_key(|v| format!("{v:?}"));
                y.sort_by_key(|v| format!("{v:?}"));
                x == y
            }
            _ => false,
        },
        "RANDOMKEY" => matches!((&a, &b), (Value::Bulk(Some(_)), Value::Bulk(Some(_)))),
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(format!(
            "{:?}\n  holdfast: {:?}\n  redis:    {:?}",
            args.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(ours),
            String::from_utf8_lossy(theirs)
        ))
    }
}

/// The keys a whole SCAN iteration returns (from cursor 0), or the first
/// reply when it is an error.
fn scan_all(client: &mut Resp, options: &[Vec<u8>]) -> Result<BTreeSet<Vec<u8>>, Vec<u8>> {
    let mut keys = BTreeSet::new();
    let mut cursor = b"0".to_vec();
    for _ in 0..10_000 {
        let mut args: Vec<&[u8]> = vec![b"SCAN", &cursor];
        args.extend(options.iter().map(Vec::as_slice));
        let reply = client.call(&args);
        let Value::Array(Some(parts)) = parse(&reply).0 else {
            return Err(reply);
        };
        let [Value::Bulk(Some(next)), Value::Array(Some(found))] = parts.as_slice() else {
            panic!("a SCAN reply of another shape: {reply:?}");
        };
        for key in found {
            if let Value::Bulk(Some(key)) = key {
                keys.insert(key.clone());
            }
        }
        if next == b"0" {
            return Ok(keys);
        }
        cursor = next.clone();
    }
    panic!("SCAN did not end in 10000 calls");
}

struct Pair {
    // Kept alive for the clients' sake.
    _holdfast: Server,
    _redis: Redis,
    ours: Resp,
    theirs: Resp,
}

impl Pair {
    fn start() -> Pair {
        let holdfast = Server::start(&["--protocol", "resp", "--threads", "2"]);
        let redis = Redis::start_with(&["--databases", "1"]);
        let ours = Resp::from(holdfast.connect());
        let theirs = redis.client();
        Pair {
            _holdfast: holdfast,
            _redis: redis,
            ours,
            theirs,
        }
    }

    /// A pair whose two connections speak RESP3 (`HELLO 3`).
    fn start_resp3() -> Pair {
        let mut pair = Pair::start();
        for client in [&mut pair.ours, &mut pair.theirs] {
            let hello = client.call(&[b"HELLO", b"3"]);
            assert!(hello.starts_with(b"%7\r\n"), "{hello:?}");
        }
        pair
    }

    /// Runs `commands` on both from empty; the first difference, if any.
    fn run(&mut self, commands: &[Vec<String>]) -> Result<(), String> {
        for client in [&mut self.ours, &mut self.theirs] {
            assert_eq!(client.call(&[b"FLUSHALL"]), b"+OK\r\n");
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let (s, ms) = (now.as_secs() as i64, now.as_millis() as i64);
        for command in commands {
            let args: Vec<Vec<u8>> = command
                .iter()
                .map(|a| match a.as_str() {
                    FUTURE_S => (s + 1000).to_string().into_bytes(),
                    FUTURE_MS => (ms + 1_000_000).to_string().into_bytes(),
                    PAST_S => (s - 1000).to_string().into_bytes(),
                    PAST_MS => (ms - 1_000_000).to_string().into_bytes(),
                    other => other.as_bytes().to_vec(),
                })
                .collect();
            // "" reads as cursor 0 too.
            if args[0] == b"SCAN" && args.get(1).is_some_and(|c| c == b"0" || c.is_empty()) {
                let ours = scan_all(&mut self.ours, &args[2..]);
                let theirs = scan_all(&mut self.theirs, &args[2..]);
                if ours != theirs {
                    return Err(format!(
                        "{command:?}\n  holdfast: {ours:?}\n  redis:    {theirs:?}"
                    ));
                }
                continue;
            }
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let ours = self.ours.call(&refs);
            let theirs = self.theirs.call(&refs);
            compare(&args, &ours, &theirs)?;
        }
        Ok(())
    }
}

#[test]
fn generated_sequences_get_the_replies_redis_gives() {
    generated_sequences(Pair::start());
}

/// The same after `HELLO 3`: nulls, maps and the rest as Redis sends them
/// in RESP3.
#[test]
fn generated_sequences_in_resp3_get_the_replies_redis_gives() {
    generated_sequences(Pair::start_resp3());
}

fn generated_sequences(pair: Pair) {
    let pair = std::cell::RefCell::new(pair);
    let mut runner = TestRunner::new(Config {
        // `HOLDFAST_DIFF_CASES=5000` for a deeper run.
        cases: std::env::var("HOLDFAST_DIFF_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(128),
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&sequence(), |commands| {
        pair.borrow_mut()
            .run(&commands)
            .map_err(TestCaseError::fail)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// Sends `args` to both; returns (holdfast's reply, redis's reply).
fn both(pair: &mut Pair, args: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
    (pair.ours.call(args), pair.theirs.call(args))
}

#[test]
fn command_info_matches_redis_for_every_command_served() {
    let mut pair = Pair::start();
    for command in holdfast::apps::kv::COMMANDS {
        let (ours, theirs) = both(&mut pair, &[b"COMMAND", b"INFO", command.name.as_bytes()]);
        let (Value::Array(Some(ours)), Value::Array(Some(theirs))) =
            (parse(&ours).0, parse(&theirs).0)
        else {
            panic!("COMMAND INFO {} is not an array", command.name);
        };
        let (Value::Array(Some(ours)), Value::Array(Some(theirs))) = (&ours[0], &theirs[0]) else {
            panic!("COMMAND INFO {} has no entry", command.name);
        };
        // Name, arity, flags, key positions, ACL categories, tips; key
        // specifications and subcommands are left empty.
        assert_eq!(ours[..8], theirs[..8], "COMMAND INFO {}", command.name);
    }
    let (ours, theirs) = both(&mut pair, &[b"COMMAND", b"INFO", b"nosuchcommand"]);
    assert_eq!(ours, theirs);
}

/// The same in RESP3, where the lists are sets (the type bytes compared
/// too).
#[test]
fn command_info_in_resp3_matches_redis_for_every_command_served() {
    use util::resp3::Value;
    let mut pair = Pair::start_resp3();
    for command in holdfast::apps::kv::COMMANDS {
        let (ours, theirs) = both(&mut pair, &[b"COMMAND", b"INFO", command.name.as_bytes()]);
        let entry = |reply: &[u8]| -> Vec<Value> {
            let (info, _) = Value::parse(reply);
            info.items().unwrap()[0].items().unwrap()[..8].to_vec()
        };
        assert_eq!(
            entry(&ours),
            entry(&theirs),
            "COMMAND INFO {}",
            command.name
        );
    }
    let (ours, theirs) = both(&mut pair, &[b"COMMAND", b"INFO", b"nosuchcommand"]);
    assert_eq!(ours, theirs);
}

#[test]
fn info_fields_are_redis_fields() {
    let mut pair = Pair::start();
    pair.ours.call(&[b"SET", b"a", b"1", b"EX", b"100"]);
    pair.ours.call(&[b"SET", b"b", b"1"]);
    let fields = |reply: &[u8]| -> Vec<(String, String)> {
        let Value::Bulk(Some(text)) = parse(reply).0 else {
            panic!("INFO is not a bulk string");
        };
        String::from_utf8(text)
            .unwrap()
            .split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // holdfast's own lines, not in Redis's INFO.
    let own = [
        "holdfast_version",
        "shards",
        "backend",
        "protocol_errors",
        "handler_panics",
    ];
    for section in ["server", "clients", "memory", "stats", "keyspace"] {
        let (ours, theirs) = both(&mut pair, &[b"INFO", section.as_bytes()]);
        let (ours, theirs) = (fields(&ours), fields(&theirs));
        for (key, _) in &ours {
            if own.contains(&key.as_str()) || key == "db0" {
                continue;
            }
            assert!(
                theirs.iter().any(|(k, _)| k == key),
                "INFO {section}: {key} is not a Redis field"
            );
        }
    }
    let (ours, _) = both(&mut pair, &[b"INFO", b"keyspace"]);
    let ours = fields(&ours);
    assert!(
        ours.contains(&("db0".into(), "keys=2,expires=1,avg_ttl=0".into())),
        "{ours:?}"
    );
    let (ours, theirs) = both(&mut pair, &[b"INFO", b"nosuchsection"]);
    assert_eq!(ours, theirs);
}

#[test]
fn clock_dependent_replies_agree() {
    let mut pair = Pair::start();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    // Rounded as Redis rounds: 1.2 s is 1.
    for args in [
        &[&b"SET"[..], b"k", b"v", b"PX", b"1200"][..],
        &[b"TTL", b"k"],
        &[b"SET", b"k", b"v", b"PX", b"2400"],
        &[b"TTL", b"k"],
        &[b"SET", b"k", b"v", b"PX", b"200"],
        &[b"TTL", b"k"],
    ] {
        let (ours, theirs) = both(&mut pair, args);
        assert_eq!(ours, theirs, "{args:?}");
    }
    // An absolute time in the past: stored expired, never read back.
    let past = (now.as_millis() - 1000).to_string();
    for args in [
        &[&b"SET"[..], b"gone", b"v", b"PXAT", past.as_bytes()][..],
        &[b"GET", b"gone"],
        &[b"EXISTS", b"gone"],
        &[b"TTL", b"gone"],
    ] {
        let (ours, theirs) = both(&mut pair, args);
        assert_eq!(ours, theirs, "{args:?}");
    }
    let (ours, theirs) = both(&mut pair, &[b"TIME"]);
    let seconds = |reply: &[u8]| match parse(reply).0 {
        Value::Array(Some(parts)) => match &parts[0] {
            Value::Bulk(Some(s)) => String::from_utf8_lossy(s).parse::<u64>().unwrap(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert!(seconds(&ours).abs_diff(seconds(&theirs)) <= 2);
}

#[test]
fn other_data_types_get_an_error_naming_the_command() {
    let mut pair = Pair::start();
    for name in [
        "LPUSH",
        "hset",
        "SADD",
        "ZADD",
        "XADD",
        "MULTI",
        "EVAL",
        "SSUBSCRIBE",
    ] {
        let reply = pair.ours.call(&[name.as_bytes(), b"x", b"y"]);
        let expected = format!(
            "-ERR unsupported command '{}': this server holds strings only (see the README)\r\n",
            name.to_lowercase()
        );
        assert_eq!(String::from_utf8_lossy(&reply), expected);
    }
    assert_eq!(pair.ours.call(&[b"PING"]), b"+PONG\r\n");
}
