//! The command table: every command the service knows, with the metadata
//! Redis 7.0 reports for it in `COMMAND INFO` (arity, flags, key
//! positions, ACL categories, tips), looked up by name without regard to
//! case. Arity follows Redis: `n` exactly n arguments counting the name,
//! `-n` at least n.

use super::reply::Sink;

/// Which handler serves a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Append,
    Client,
    Command,
    Config,
    Dbsize,
    Debug,
    Decr,
    Decrby,
    Del,
    Echo,
    Exists,
    Expire,
    Expireat,
    Expiretime,
    Flushall,
    Flushdb,
    Get,
    Getdel,
    Getex,
    Getrange,
    Getset,
    Hello,
    Incr,
    Incrby,
    Incrbyfloat,
    Info,
    Keys,
    Lcs,
    Mget,
    Mset,
    Msetnx,
    Persist,
    Pexpire,
    Pexpireat,
    Pexpiretime,
    Ping,
    Psetex,
    Psubscribe,
    Pttl,
    Publish,
    Pubsub,
    Punsubscribe,
    Quit,
    Randomkey,
    Rename,
    Renamenx,
    Reset,
    Scan,
    Select,
    Set,
    Setex,
    Setnx,
    Setrange,
    Strlen,
    Subscribe,
    Substr,
    Time,
    Touch,
    Ttl,
    Type,
    Unlink,
    Unsubscribe,
}

/// One command's entry.
#[derive(Debug)]
pub struct Command {
    /// Lower case, as Redis names it in errors and COMMAND INFO.
    pub name: &'static str,
    pub op: Op,
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// First key, last key (negative: from the end), step.
    pub keys: (i32, i32, i32),
    pub categories: &'static [&'static str],
    pub tips: &'static [&'static str],
}

impl Command {
    #[allow(clippy::too_many_arguments)]
    const fn new(
        name: &'static str,
        op: Op,
        arity: i32,
        flags: &'static [&'static str],
        keys: (i32, i32, i32),
        categories: &'static [&'static str],
        tips: &'static [&'static str],
    ) -> Command {
        Command {
            name,
            op,
            arity,
            flags,
            keys,
            categories,
            tips,
        }
    }

    /// Whether `argc` arguments (the name included) fit the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }

    /// The `COMMAND INFO` entry: name, arity, flags, first key, last key,
    /// step, ACL categories, tips, key specifications and subcommands (the
    /// last two empty here: see the README's differences from Redis). The
    /// lists are sets in RESP3, as Redis sends them.
    pub fn render_info(&self, out: &mut dyn Sink) {
        out.array(10);
        out.bulk(self.name.as_bytes());
        out.integer(i64::from(self.arity));
        status_array(out, self.flags);
        out.integer(i64::from(self.keys.0));
        out.integer(i64::from(self.keys.1));
        out.integer(i64::from(self.keys.2));
        status_array(out, self.categories);
        out.set(self.tips.len());
        for tip in self.tips {
            out.bulk(tip.as_bytes());
        }
        out.set(0);
        out.set(0);
    }
}

fn status_array(out: &mut dyn Sink, items: &[&str]) {
    out.set(items.len());
    for item in items {
        out.put(b"+");
        out.put(item.as_bytes());
        out.put(b"\r\n");
    }
}

/// Every command, sorted by name (a test checks), so lookups are a binary
/// search (of [`NAMES`]).
pub const COMMANDS: &[Command] = &[
    Command::new(
        "append",
        Op::Append,
        3,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new("client", Op::Client, -2, &[], (0, 0, 0), &["@slow"], &[]),
    Command::new(
        "command",
        Op::Command,
        -1,
        &["loading", "stale"],
        (0, 0, 0),
        &["@slow", "@connection"],
        &["nondeterministic_output_order"],
    ),
    Command::new("config", Op::Config, -2, &[], (0, 0, 0), &["@slow"], &[]),
    Command::new(
        "dbsize",
        Op::Dbsize,
        1,
        &["readonly", "fast"],
        (0, 0, 0),
        &["@keyspace", "@read", "@fast"],
        &["request_policy:all_shards", "response_policy:agg_sum"],
    ),
    Command::new(
        "debug",
        Op::Debug,
        -2,
        &["admin", "noscript", "loading", "stale"],
        (0, 0, 0),
        &["@admin", "@slow", "@dangerous"],
        &[],
    ),
    Command::new(
        "decr",
        Op::Decr,
        2,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "decrby",
        Op::Decrby,
        3,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "del",
        Op::Del,
        -2,
        &["write"],
        (1, -1, 1),
        &["@keyspace", "@write", "@slow"],
        &["request_policy:multi_shard", "response_policy:agg_sum"],
    ),
    Command::new(
        "echo",
        Op::Echo,
        2,
        &["loading", "stale", "fast"],
        (0, 0, 0),
        &["@fast", "@connection"],
        &[],
    ),
    Command::new(
        "exists",
        Op::Exists,
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        &["@keyspace", "@read", "@fast"],
        &["request_policy:multi_shard", "response_policy:agg_sum"],
    ),
    Command::new(
        "expire",
        Op::Expire,
        -3,
        &["write", "fast"],
        (1, 1, 1),
        &["@keyspace", "@write", "@fast"],
        &[],
    ),
    Command::new(
        "expireat",
        Op::Expireat,
        -3,
        &["write", "fast"],
        (1, 1, 1),
        &["@keyspace", "@write", "@fast"],
        &[],
    ),
    Command::new(
        "expiretime",
        Op::Expiretime,
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        &["@keyspace", "@read", "@fast"],
        &[],
    ),
    Command::new(
        "flushall",
        Op::Flushall,
        -1,
        &["write"],
        (0, 0, 0),
        &["@keyspace", "@write", "@slow", "@dangerous"],
        &["request_policy:all_shards", "response_policy:all_succeeded"],
    ),
    Command::new(
        "flushdb",
        Op::Flushdb,
        -1,
        &["write"],
        (0, 0, 0),
        &["@keyspace", "@write", "@slow", "@dangerous"],
        &["request_policy:all_shards", "response_policy:all_succeeded"],
    ),
    Command::new(
        "get",
        Op::Get,
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        &["@read", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "getdel",
        Op::Getdel,
        2,
        &["write", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "getex",
        Op::Getex,
        -2,
        &["write", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "getrange",
        Op::Getrange,
        4,
        &["readonly"],
        (1, 1, 1),
        &["@read", "@string", "@slow"],
        &[],
    ),
    Command::new(
        "getset",
        Op::Getset,
        3,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "hello",
        Op::Hello,
        -1,
        &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        (0, 0, 0),
        &["@fast", "@connection"],
        &[],
    ),
    Command::new(
        "incr",
        Op::Incr,
        2,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "incrby",
        Op::Incrby,
        3,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "incrbyfloat",
        Op::Incrbyfloat,
        3,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "info",
        Op::Info,
        -1,
        &["loading", "stale"],
        (0, 0, 0),
        &["@slow", "@dangerous"],
        &[
            "nondeterministic_output",
            "request_policy:all_shards",
            "response_policy:special",
        ],
    ),
    Command::new(
        "keys",
        Op::Keys,
        2,
        &["readonly"],
        (0, 0, 0),
        &["@keyspace", "@read", "@slow", "@dangerous"],
        &["request_policy:all_shards", "nondeterministic_output_order"],
    ),
    Command::new(
        "lcs",
        Op::Lcs,
        -3,
        &["readonly"],
        (1, 2, 1),
        &["@read", "@string", "@slow"],
        &[],
    ),
    Command::new(
        "mget",
        Op::Mget,
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        &["@read", "@string", "@fast"],
        &["request_policy:multi_shard"],
    ),
    Command::new(
        "mset",
        Op::Mset,
        -3,
        &["write", "denyoom"],
        (1, -1, 2),
        &["@write", "@string", "@slow"],
        &[
            "request_policy:multi_shard",
            "response_policy:all_succeeded",
        ],
    ),
    Command::new(
        "msetnx",
        Op::Msetnx,
        -3,
        &["write", "denyoom"],
        (1, -1, 2),
        &["@write", "@string", "@slow"],
        &["request_policy:multi_shard", "response_policy:agg_min"],
    ),
    Command::new(
        "persist",
        Op::Persist,
        2,
        &["write", "fast"],
        (1, 1, 1),
        &["@keyspace", "@write", "@fast"],
        &[],
    ),
    Command::new(
        "pexpire",
        Op::Pexpire,
        -3,
        &["write", "fast"],
        (1, 1, 1),
        &["@keyspace", "@write", "@fast"],
        &[],
    ),
    Command::new(
        "pexpireat",
        Op::Pexpireat,
        -3,
        &["write", "fast"],
        (1, 1, 1),
        &["@keyspace", "@write", "@fast"],
        &[],
    ),
    Command::new(
        "pexpiretime",
        Op::Pexpiretime,
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        &["@keyspace", "@read", "@fast"],
        &[],
    ),
    Command::new(
        "ping",
        Op::Ping,
        -1,
        &["fast"],
        (0, 0, 0),
        &["@fast", "@connection"],
        &["request_policy:all_shards", "response_policy:all_succeeded"],
    ),
    Command::new(
        "psetex",
        Op::Psetex,
        4,
        &["write", "denyoom"],
        (1, 1, 1),
        &["@write", "@string", "@slow"],
        &[],
    ),
    Command::new(
        "psubscribe",
        Op::Psubscribe,
        -2,
        &["pubsub", "noscript", "loading", "stale"],
        (0, 0, 0),
        &["@pubsub", "@slow"],
        &[],
    ),
    Command::new(
        "pttl",
        Op::Pttl,
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        &["@keyspace", "@read", "@fast"],
        &["nondeterministic_output"],
    ),
    Command::new(
        "publish",
        Op::Publish,
        3,
        &["pubsub", "loading", "stale", "fast"],
        (0, 0, 0),
        &["@pubsub", "@fast"],
        &[],
    ),
    Command::new("pubsub", Op::Pubsub, -2, &[], (0, 0, 0), &["@slow"], &[]),
    Command::new(
        "punsubscribe",
        Op::Punsubscribe,
        -1,
        &["pubsub", "noscript", "loading", "stale"],
        (0, 0, 0),
        &["@pubsub", "@slow"],
        &[],
    ),
    Command::new(
        "quit",
        Op::Quit,
        -1,
        &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        (0, 0, 0),
        &["@fast", "@connection"],
        &[],
    ),
    Command::new(
        "randomkey",
        Op::Randomkey,
        1,
        &["readonly"],
        (0, 0, 0),
        &["@keyspace", "@read", "@slow"],
        &["request_policy:all_shards", "nondeterministic_output"],
    ),
    Command::new(
        "rename",
        Op::Rename,
        3,
        &["write"],
        (1, 2, 1),
        &["@keyspace", "@write", "@slow"],
        &[],
    ),
    Command::new(
        "renamenx",
        Op::Renamenx,
        3,
        &["write", "fast"],
        (1, 2, 1),
        &["@keyspace", "@write", "@fast"],
        &[],
    ),
    Command::new(
        "reset",
        Op::Reset,
        1,
        &[
            "noscript",
            "loading",
            "stale",
            "fast",
            "no_auth",
            "allow_busy",
        ],
        (0, 0, 0),
        &["@fast", "@connection"],
        &[],
    ),
    Command::new(
        "scan",
        Op::Scan,
        -2,
        &["readonly"],
        (0, 0, 0),
        &["@keyspace", "@read", "@slow"],
        &["nondeterministic_output", "request_policy:special"],
    ),
    Command::new(
        "select",
        Op::Select,
        2,
        &["loading", "stale", "fast"],
        (0, 0, 0),
        &["@fast", "@connection"],
        &[],
    ),
    Command::new(
        "set",
        Op::Set,
        -3,
        &["write", "denyoom"],
        (1, 1, 1),
        &["@write", "@string", "@slow"],
        &[],
    ),
    Command::new(
        "setex",
        Op::Setex,
        4,
        &["write", "denyoom"],
        (1, 1, 1),
        &["@write", "@string", "@slow"],
        &[],
    ),
    Command::new(
        "setnx",
        Op::Setnx,
        3,
        &["write", "denyoom", "fast"],
        (1, 1, 1),
        &["@write", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "setrange",
        Op::Setrange,
        4,
        &["write", "denyoom"],
        (1, 1, 1),
        &["@write", "@string", "@slow"],
        &[],
    ),
    Command::new(
        "strlen",
        Op::Strlen,
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        &["@read", "@string", "@fast"],
        &[],
    ),
    Command::new(
        "subscribe",
        Op::Subscribe,
        -2,
        &["pubsub", "noscript", "loading", "stale"],
        (0, 0, 0),
        &["@pubsub", "@slow"],
        &[],
    ),
    Command::new(
        "substr",
        Op::Substr,
        4,
        &["readonly"],
        (1, 1, 1),
        &["@read", "@string", "@slow"],
        &[],
    ),
    Command::new(
        "time",
        Op::Time,
        1,
        &["loading", "stale", "fast"],
        (0, 0, 0),
        &["@fast"],
        &["nondeterministic_output"],
    ),
    Command::new(
        "touch",
        Op::Touch,
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        &["@keyspace", "@read", "@fast"],
        &["request_policy:multi_shard", "response_policy:agg_sum"],
    ),
    Command::new(
        "ttl",
        Op::Ttl,
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        &["@keyspace", "@read", "@fast"],
        &["nondeterministic_output"],
    ),
    Command::new(
        "type",
        Op::Type,
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        &["@keyspace", "@read", "@fast"],
        &[],
    ),
    Command::new(
        "unlink",
        Op::Unlink,
        -2,
        &["write", "fast"],
        (1, -1, 1),
        &["@keyspace", "@write", "@fast"],
        &["request_policy:multi_shard", "response_policy:agg_sum"],
    ),
    Command::new(
        "unsubscribe",
        Op::Unsubscribe,
        -1,
        &["pubsub", "noscript", "loading", "stale"],
        (0, 0, 0),
        &["@pubsub", "@slow"],
        &[],
    ),
];

/// The longest command name (a test checks every one fits).
const NAME_MAX: usize = 16;

/// A name of at most [`NAME_MAX`] bytes as one number, its bytes big-end
/// first and zero-padded: the numbers sort as the names do (no name holds
/// a zero byte), so a lookup compares integers rather than calling
/// `memcmp` at every step of its search, which had GET at `-P 16` spend a
/// fifth of its CPU finding its command (BENCHMARKING.md, "RESP vs
/// redis-server").
const fn name_key(name: &[u8]) -> u128 {
    let mut bytes = [0u8; NAME_MAX];
    let mut i = 0;
    while i < name.len() && i < NAME_MAX {
        bytes[i] = name[i];
        i += 1;
    }
    u128::from_be_bytes(bytes)
}

/// [`COMMANDS`]' names as [`name_key`]s, in the same order.
static NAMES: [u128; COMMANDS.len()] = {
    let mut keys = [0; COMMANDS.len()];
    let mut i = 0;
    while i < COMMANDS.len() {
        keys[i] = name_key(COMMANDS[i].name.as_bytes());
        i += 1;
    }
    keys
};

/// The entry for `name` (any case), if the service knows it.
pub fn lookup(name: &[u8]) -> Option<&'static Command> {
    let mut lower = [0u8; NAME_MAX];
    lower.get_mut(..name.len())?.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let at = NAMES.binary_search(&u128::from_be_bytes(lower)).ok()?;
    // A name with zero bytes at its end would pass for a shorter one.
    Some(&COMMANDS[at]).filter(|command| command.name.len() == name.len())
}

/// Redis commands on the data types this service does not hold (lists,
/// hashes, sets, sorted sets, streams, bitmaps, HyperLogLogs, geo) and on
/// features it leaves out (transactions, scripting, sharded pub/sub, ...):
/// they get an error naming the command instead of Redis's behaviour.
pub const UNSUPPORTED: &[&str] = &[
    "blmove",
    "blmpop",
    "blpop",
    "brpop",
    "brpoplpush",
    "bzmpop",
    "bzpopmax",
    "bzpopmin",
    "lindex",
    "linsert",
    "llen",
    "lmove",
    "lmpop",
    "lpop",
    "lpos",
    "lpush",
    "lpushx",
    "lrange",
    "lrem",
    "lset",
    "ltrim",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "hdel",
    "hexists",
    "hget",
    "hgetall",
    "hincrby",
    "hincrbyfloat",
    "hkeys",
    "hlen",
    "hmget",
    "hmset",
    "hrandfield",
    "hscan",
    "hset",
    "hsetnx",
    "hstrlen",
    "hvals",
    "sadd",
    "scard",
    "sdiff",
    "sdiffstore",
    "sinter",
    "sintercard",
    "sinterstore",
    "sismember",
    "smembers",
    "smismember",
    "smove",
    "spop",
    "srandmember",
    "srem",
    "sscan",
    "sunion",
    "sunionstore",
    "zadd",
    "zcard",
    "zcount",
    "zdiff",
    "zdiffstore",
    "zincrby",
    "zinter",
    "zintercard",
    "zinterstore",
    "zlexcount",
    "zmpop",
    "zmscore",
    "zpopmax",
    "zpopmin",
    "zrandmember",
    "zrange",
    "zrangebylex",
    "zrangebyscore",
    "zrangestore",
    "zrank",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zrevrange",
    "zrevrangebylex",
    "zrevrangebyscore",
    "zrevrank",
    "zscan",
    "zscore",
    "zunion",
    "zunionstore",
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xgroup",
    "xinfo",
    "xlen",
    "xpending",
    "xrange",
    "xread",
    "xreadgroup",
    "xrevrange",
    "xsetid",
    "xtrim",
    "bitcount",
    "bitfield",
    "bitfield_ro",
    "bitop",
    "bitpos",
    "getbit",
    "setbit",
    "pfadd",
    "pfcount",
    "pfdebug",
    "pfmerge",
    "pfselftest",
    "geoadd",
    "geodist",
    "geohash",
    "geopos",
    "georadius",
    "georadius_ro",
    "georadiusbymember",
    "georadiusbymember_ro",
    "geosearch",
    "geosearchstore",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "script",
    "fcall",
    "fcall_ro",
    "function",
    "ssubscribe",
    "sunsubscribe",
    "spublish",
    "copy",
    "move",
    "swapdb",
    "dump",
    "restore",
    "object",
    "sort",
    "sort_ro",
    "wait",
    "migrate",
    "auth",
    "acl",
    "save",
    "bgsave",
    "bgrewriteaof",
    "lastsave",
    "shutdown",
    "monitor",
    "slowlog",
    "latency",
    "memory",
    "module",
    "replicaof",
    "slaveof",
    "sync",
    "psync",
    "cluster",
    "readonly",
    "readwrite",
    "failover",
    "lolwut",
    "asking",
];

/// Whether `name` (any case) is one of [`UNSUPPORTED`].
pub fn is_unsupported(name: &[u8]) -> bool {
    UNSUPPORTED
        .iter()
        .any(|known| known.as_bytes().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_lookups_ignore_case() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
        assert!(COMMANDS.iter().all(|c| c.name.len() <= NAME_MAX));
        assert!(NAMES.windows(2).all(|w| w[0] < w[1]));
        for command in COMMANDS {
            let upper = command.name.to_ascii_uppercase();
            assert_eq!(lookup(upper.as_bytes()).map(|c| c.name), Some(command.name));
        }
        assert_eq!(lookup(b"GeT").map(|c| c.op), Some(Op::Get));
        assert!(lookup(b"get\0").is_none() && lookup(b"ge").is_none());
        assert_eq!(lookup(b"incrbyfloat").map(|c| c.op), Some(Op::Incrbyfloat));
        assert!(lookup(b"nosuch").is_none());
        assert!(lookup(&[b'a'; 40]).is_none());
        assert!(COMMANDS.iter().all(|c| !is_unsupported(c.name.as_bytes())));
    }

    #[test]
    fn arity_follows_redis() {
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let set = lookup(b"set").unwrap();
        assert!(set.arity_ok(3) && set.arity_ok(9) && !set.arity_ok(2));
    }
}
