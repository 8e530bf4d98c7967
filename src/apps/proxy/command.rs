//! What the proxy does with each client command: send it whole to the
//! upstream that owns its key(s), split it over upstreams ([`Split`], done
//! by [`super::split::Plan`]), answer it itself ([`Local`]), or refuse it
//! with an error ([`Refusal`]).
//!
//! Commands are allowed by name, as twemproxy does: a command that is not
//! listed is refused, because the proxy cannot know where its keys are or
//! whether it is safe to run on one upstream of several. Refused on
//! purpose: commands over the whole keyspace (KEYS, SCAN, FLUSHALL,
//! DBSIZE, RANDOMKEY), transactions (MULTI, EXEC, WATCH), pub/sub,
//! blocking commands (BLPOP and friends, WAIT: one of them would stall a
//! pipelined upstream connection), server and connection administration
//! (CONFIG, INFO, DEBUG, SHUTDOWN, SCRIPT, CLIENT KILL, ...) and SORT (its BY and
//! GET patterns read keys the proxy cannot see). Among them every command
//! that would make an upstream push (RESP3 `>` frames) on its own: SUBSCRIBE,
//! PSUBSCRIBE, SSUBSCRIBE, MONITOR, CLIENT TRACKING (`super::client`
//! refuses it); a push on a connection many clients share belongs to
//! none of them, and one where a reply is owed closes it as out of step.
//!
//! Commands with several keys that must run together (RENAME, SMOVE,
//! SINTERSTORE, EVAL with keys, ...) are sent whole when all their keys are
//! on one upstream, which a hash tag (`{user1}.a`, `{user1}.b`) ensures,
//! and refused otherwise.

use crate::engine::codec::resp::{Args, parse_int};
use crate::engine::service::Dialect;

/// How the proxy handles one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Send the command, bytes as they came, to this upstream; its reply is
    /// the client's reply.
    Forward(usize),
    /// Keys on several upstreams: split and merge with
    /// [`super::split::Plan`].
    Split(Split),
    /// Answer at once with [`local_reply`].
    Local(Local),
    /// A command about the client's own connection, answered with its
    /// session ([`super::client::Connection`]).
    Connection(Connection),
    /// Answer at once with [`Refusal::write`].
    Refuse(Refusal),
    /// An empty command (`*0`, a blank line): no reply, as in Redis.
    Empty,
}

/// The commands that are split key by key and merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `MGET k...`: an array of the values, in key order.
    Mget,
    /// `MSET k v ...`: `+OK` if every upstream said so.
    Mset,
    /// `DEL k...`: the sum of the counts.
    Del,
    /// `UNLINK k...`: the sum of the counts.
    Unlink,
    /// `EXISTS k...`: the sum of the counts.
    Exists,
    /// `TOUCH k...`: the sum of the counts.
    Touch,
}

impl Split {
    /// Every split command, in [`Split::code`] order.
    pub const ALL: [Split; 6] = [
        Split::Mget,
        Split::Mset,
        Split::Del,
        Split::Unlink,
        Split::Exists,
        Split::Touch,
    ];

    /// A one-byte code for the command (its place in [`Split::ALL`]).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The command of a [`Split::code`].
    pub fn from_code(code: u8) -> Option<Split> {
        Split::ALL.get(usize::from(code)).copied()
    }

    /// The command name sent to upstreams.
    pub fn name(self) -> &'static [u8] {
        match self {
            Split::Mget => b"MGET",
            Split::Mset => b"MSET",
            Split::Del => b"DEL",
            Split::Unlink => b"UNLINK",
            Split::Exists => b"EXISTS",
            Split::Touch => b"TOUCH",
        }
    }

    /// Arguments per key: 2 for MSET (key and value), else 1.
    pub fn stride(self) -> usize {
        if self == Split::Mset { 2 } else { 1 }
    }
}

/// The commands the proxy answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// `PING [message]`.
    Ping,
    /// `ECHO message`.
    Echo,
    /// `QUIT`: `+OK`, then the engine closes the connection.
    Quit,
    /// `COMMAND ...`: an empty answer, enough for clients that ask
    /// (`redis-cli` does, for hints): no command, in the shape Redis
    /// gives (`COMMAND DOCS` a map in RESP3, an array in RESP2).
    Command,
    /// `SELECT db`: only database 0 exists behind a proxy.
    Select,
}

/// The commands about the client's own connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// `AUTH [user] password`.
    Auth,
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    Hello,
    /// `CLIENT subcommand ...`.
    Client,
}

impl Route {
    /// Whether a client that has not authenticated may send it: AUTH,
    /// HELLO (which may carry AUTH) and QUIT, as in Redis.
    pub fn before_auth(&self) -> bool {
        matches!(
            self,
            Route::Connection(Connection::Auth | Connection::Hello)
                | Route::Local(Local::Quit)
                | Route::Empty
        )
    }
}

/// A command the proxy will not run, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: Reason,
    /// The command's name, lower-case and cut to [`NAME_MAX`] bytes, for
    /// the error text.
    name: [u8; NAME_MAX],
    name_len: u8,
}

/// Why a command is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not a command the proxy runs.
    NotSupported,
    /// Not the arguments the command takes.
    WrongArity,
    /// Keys that must be together are on different upstreams.
    CrossUpstream,
    /// A script (EVAL, EVALSHA) that names no key: no upstream to run on.
    NoKeys,
    /// A key count (`numkeys`) that is not a number, or more keys than
    /// arguments.
    BadKeyCount,
}

/// The longest command name echoed in an error reply.
pub const NAME_MAX: usize = 32;

/// Routes the command `args` (its name first); `place` maps a key to the
/// index of the upstream that owns it (as [`super::hash::Continuum::upstream`]).
pub fn route(mut args: Args<'_>, place: impl Fn(&[u8]) -> usize) -> Route {
    let Some(name) = args.next() else {
        return Route::Empty;
    };
    let argc = args.left();
    let refuse = |reason| Route::Refuse(Refusal::new(reason, name));
    let mut upper = [0u8; 24];
    let Some(kind) = uppercase(name, &mut upper).and_then(lookup) else {
        return refuse(Reason::NotSupported);
    };
    match kind {
        Kind::Local(local) => {
            let ok = match local {
                Local::Ping => argc <= 1,
                Local::Echo | Local::Select => argc == 1,
                Local::Quit | Local::Command => true,
            };
            if ok {
                Route::Local(local)
            } else {
                refuse(Reason::WrongArity)
            }
        }
        Kind::Connection(command) => {
            let ok = match command {
                Connection::Auth => (1..=2).contains(&argc),
                Connection::Hello => true,
                Connection::Client => argc >= 1,
            };
            if ok {
                Route::Connection(command)
            } else {
                refuse(Reason::WrongArity)
            }
        }
        Kind::Split(split) => {
            if argc == 0 || argc % split.stride() != 0 {
                return refuse(Reason::WrongArity);
            }
            match together(args.step_by(split.stride()), &place) {
                Some(upstream) => Route::Forward(upstream),
                None => Route::Split(split),
            }
        }
        Kind::Keys(keys) => match keys {
            Keys::At(positions) => {
                if positions.iter().any(|&p| p > argc) {
                    return refuse(Reason::WrongArity);
                }
                let keys = positions.iter().filter_map(|&p| args.clone().nth(p - 1));
                together(keys, &place).map_or(refuse(Reason::CrossUpstream), Route::Forward)
            }
            Keys::Rest { from, stride } => {
                if argc < from || (argc + 1 - from) % stride != 0 {
                    return refuse(Reason::WrongArity);
                }
                let keys = args.skip(from - 1).step_by(stride);
                together(keys, &place).map_or(refuse(Reason::CrossUpstream), Route::Forward)
            }
            Keys::Counted { at, dest } => {
                let Some(count) = args.clone().nth(at - 1) else {
                    return refuse(Reason::WrongArity);
                };
                let count = match parse_int(count).map(usize::try_from) {
                    Some(Ok(count)) if at + count <= argc => count,
                    _ => return refuse(Reason::BadKeyCount),
                };
                if count == 0 && !dest {
                    return refuse(Reason::NoKeys);
                }
                let first = if dest { args.clone().next() } else { None };
                let keys = first.into_iter().chain(args.skip(at).take(count));
                together(keys, &place).map_or(refuse(Reason::CrossUpstream), Route::Forward)
            }
        },
    }
}

/// Whether the command `args` (its name first) only reads, so that a
/// replica may answer it (`--read-from`): the commands Redis flags
/// `readonly` among those the proxy routes.
pub fn read_only(mut args: Args<'_>) -> bool {
    let mut upper = [0u8; 24];
    let Some(name) = args.next().and_then(|name| uppercase(name, &mut upper)) else {
        return false;
    };
    matches!(
        name,
        b"GET"
            | b"MGET"
            | b"EXISTS"
            | b"STRLEN"
            | b"GETRANGE"
            | b"SUBSTR"
            | b"GETBIT"
            | b"BITCOUNT"
            | b"BITPOS"
            | b"BITFIELD_RO"
            | b"TYPE"
            | b"TTL"
            | b"PTTL"
            | b"EXPIRETIME"
            | b"PEXPIRETIME"
            | b"DUMP"
            | b"HGET"
            | b"HMGET"
            | b"HEXISTS"
            | b"HLEN"
            | b"HKEYS"
            | b"HVALS"
            | b"HGETALL"
            | b"HSTRLEN"
            | b"HSCAN"
            | b"HRANDFIELD"
            | b"LLEN"
            | b"LRANGE"
            | b"LINDEX"
            | b"LPOS"
            | b"SCARD"
            | b"SISMEMBER"
            | b"SMISMEMBER"
            | b"SMEMBERS"
            | b"SRANDMEMBER"
            | b"SSCAN"
            | b"SDIFF"
            | b"SINTER"
            | b"SUNION"
            | b"SINTERCARD"
            | b"ZCARD"
            | b"ZSCORE"
            | b"ZMSCORE"
            | b"ZRANK"
            | b"ZREVRANK"
            | b"ZRANGE"
            | b"ZREVRANGE"
            | b"ZRANGEBYSCORE"
            | b"ZREVRANGEBYSCORE"
            | b"ZRANGEBYLEX"
            | b"ZREVRANGEBYLEX"
            | b"ZCOUNT"
            | b"ZLEXCOUNT"
            | b"ZSCAN"
            | b"ZRANDMEMBER"
            | b"ZUNION"
            | b"ZINTER"
            | b"ZDIFF"
            | b"ZINTERCARD"
            | b"GEODIST"
            | b"GEOHASH"
            | b"GEOPOS"
            | b"GEOSEARCH"
            | b"XLEN"
            | b"XRANGE"
            | b"XREVRANGE"
            | b"EVAL_RO"
            | b"EVALSHA_RO"
    )
}

/// Writes the reply to a [`Local`] command (`args` is the whole command,
/// name first, as routed) for a client speaking `dialect`.
pub fn local_reply(local: Local, args: Args<'_>, dialect: Dialect, out: &mut Vec<u8>) {
    let argument = args.clone().nth(1);
    match (local, argument) {
        (Local::Ping, None) => out.extend_from_slice(b"+PONG\r\n"),
        (Local::Ping | Local::Echo, Some(text)) => push_bulk(out, text),
        (Local::Quit, _) => out.extend_from_slice(b"+OK\r\n"),
        (Local::Command, Some(sub)) if sub.eq_ignore_ascii_case(b"COUNT") => {
            out.extend_from_slice(b":0\r\n")
        }
        (Local::Command, Some(sub))
            if sub.eq_ignore_ascii_case(b"DOCS") && dialect == Dialect::Resp3 =>
        {
            out.extend_from_slice(b"%0\r\n")
        }
        (Local::Command, _) => out.extend_from_slice(b"*0\r\n"),
        (Local::Select, Some(b"0")) => out.extend_from_slice(b"+OK\r\n"),
        (Local::Select, _) => out.extend_from_slice(b"-ERR DB index is out of range\r\n"),
        // Not routed here (ECHO takes one argument), answered all the same.
        (Local::Echo, None) => Refusal::new(Reason::WrongArity, b"echo").write(out),
    }
}

impl Refusal {
    fn new(reason: Reason, name: &[u8]) -> Refusal {
        let mut copy = [0u8; NAME_MAX];
        let len = name.len().min(NAME_MAX);
        for (to, &from) in copy.iter_mut().zip(&name[..len]) {
            *to = if from.is_ascii_graphic() {
                from.to_ascii_lowercase()
            } else {
                b'?'
            };
        }
        Refusal {
            reason,
            name: copy,
            name_len: len as u8,
        }
    }

    /// The command's name as echoed in the error.
    pub fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.name_len)]
    }

    /// Writes the error reply, in Redis's wording where Redis has one.
    pub fn write(&self, out: &mut Vec<u8>) {
        let (before, after): (&[u8], &[u8]) = match self.reason {
            Reason::NotSupported => (b"-ERR command '", b"' is not supported by the proxy"),
            Reason::WrongArity => (b"-ERR wrong number of arguments for '", b"' command"),
            Reason::CrossUpstream => (
                b"-ERR keys of '",
                b"' are on different upstreams; a hash tag ({user1}.a, {user1}.b) puts keys together",
            ),
            Reason::NoKeys => (b"-ERR '", b"' without keys is not supported by the proxy"),
            Reason::BadKeyCount => (b"-ERR invalid number of keys for '", b"'"),
        };
        out.extend_from_slice(before);
        out.extend_from_slice(self.name());
        out.extend_from_slice(after);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `<kind><n>\r\n` (`*3`, `$5`, `:-1`) without allocating.
pub fn push_header(out: &mut Vec<u8>, kind: u8, n: i64) {
    let mut digits = [0u8; 20];
    let mut rest = n.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push(kind);
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends `value` as a bulk string.
pub fn push_bulk(out: &mut Vec<u8>, value: &[u8]) {
    push_header(out, b'$', value.len() as i64);
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The one upstream that owns every key, if they share one; `None` if
/// they do not (or there is no key).
fn together<'k>(
    mut keys: impl Iterator<Item = &'k [u8]>,
    place: impl Fn(&[u8]) -> usize,
) -> Option<usize> {
    let first = place(keys.next()?);
    keys.all(|key| place(key) == first).then_some(first)
}

enum Kind {
    Local(Local),
    Connection(Connection),
    Split(Split),
    Keys(Keys),
}

/// Where a command's keys are (argument 1 is the first after the name).
enum Keys {
    /// At these positions.
    At(&'static [usize]),
    /// From `from` to the end, one in `stride`.
    Rest { from: usize, stride: usize },
    /// A key count at `at`, that many keys after it; and argument 1 first
    /// when `dest` (the destination of ZUNIONSTORE and friends).
    Counted { at: usize, dest: bool },
}

/// `name` in upper case, if it fits `buf` (every command name does).
fn uppercase<'b>(name: &[u8], buf: &'b mut [u8; 24]) -> Option<&'b [u8]> {
    let buf = buf.get_mut(..name.len())?;
    buf.copy_from_slice(name);
    buf.make_ascii_uppercase();
    Some(buf)
}

fn lookup(name: &[u8]) -> Option<Kind> {
    const ONE: Keys = Keys::At(&[1]);
    const TWO: Keys = Keys::At(&[1, 2]);
    Some(match name {
        b"PING" => Kind::Local(Local::Ping),
        b"ECHO" => Kind::Local(Local::Echo),
        b"QUIT" => Kind::Local(Local::Quit),
        b"COMMAND" => Kind::Local(Local::Command),
        b"SELECT" => Kind::Local(Local::Select),
        b"AUTH" => Kind::Connection(Connection::Auth),
        b"HELLO" => Kind::Connection(Connection::Hello),
        b"CLIENT" => Kind::Connection(Connection::Client),
        b"MGET" => Kind::Split(Split::Mget),
        b"MSET" => Kind::Split(Split::Mset),
        b"DEL" => Kind::Split(Split::Del),
        b"UNLINK" => Kind::Split(Split::Unlink),
        b"EXISTS" => Kind::Split(Split::Exists),
        b"TOUCH" => Kind::Split(Split::Touch),
        // Strings, bits and key properties.
        b"GET" | b"SET" | b"SETNX" | b"SETEX" | b"PSETEX" | b"GETSET" | b"GETDEL" | b"GETEX"
        | b"APPEND" | b"STRLEN" | b"INCR" | b"DECR" | b"INCRBY" | b"DECRBY" | b"INCRBYFLOAT"
        | b"GETRANGE" | b"SETRANGE" | b"SUBSTR" | b"GETBIT" | b"SETBIT" | b"BITCOUNT"
        | b"BITPOS" | b"BITFIELD" | b"BITFIELD_RO" | b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT"
        | b"PEXPIREAT" | b"EXPIRETIME" | b"PEXPIRETIME" | b"TTL" | b"PTTL" | b"PERSIST"
        | b"TYPE" | b"DUMP" | b"RESTORE" | b"PFADD"
        // Hashes, lists, sets, sorted sets, geo, streams.
        | b"HGET" | b"HSET" | b"HSETNX" | b"HMSET" | b"HMGET" | b"HDEL" | b"HEXISTS" | b"HLEN"
        | b"HKEYS" | b"HVALS" | b"HGETALL" | b"HINCRBY" | b"HINCRBYFLOAT" | b"HSTRLEN"
        | b"HSCAN" | b"HRANDFIELD" | b"LPUSH" | b"RPUSH" | b"LPUSHX" | b"RPUSHX" | b"LPOP"
        | b"RPOP" | b"LLEN" | b"LRANGE" | b"LINDEX" | b"LSET" | b"LREM" | b"LTRIM"
        | b"LINSERT" | b"LPOS" | b"SADD" | b"SREM" | b"SCARD" | b"SISMEMBER" | b"SMISMEMBER"
        | b"SMEMBERS" | b"SRANDMEMBER" | b"SPOP" | b"SSCAN" | b"ZADD" | b"ZREM" | b"ZCARD"
        | b"ZSCORE" | b"ZMSCORE" | b"ZINCRBY" | b"ZRANK" | b"ZREVRANK" | b"ZRANGE"
        | b"ZREVRANGE" | b"ZRANGEBYSCORE" | b"ZREVRANGEBYSCORE" | b"ZRANGEBYLEX"
        | b"ZREVRANGEBYLEX" | b"ZCOUNT" | b"ZLEXCOUNT" | b"ZREMRANGEBYRANK"
        | b"ZREMRANGEBYSCORE" | b"ZREMRANGEBYLEX" | b"ZPOPMIN" | b"ZPOPMAX" | b"ZSCAN"
        | b"ZRANDMEMBER" | b"GEOADD" | b"GEODIST" | b"GEOHASH" | b"GEOPOS" | b"GEOSEARCH"
        | b"XADD" | b"XLEN" | b"XRANGE" | b"XREVRANGE" | b"XDEL" | b"XTRIM" => Kind::Keys(ONE),
        // Several keys that must be on one upstream.
        b"RENAME" | b"RENAMENX" | b"COPY" | b"SMOVE" | b"RPOPLPUSH" | b"LMOVE"
        | b"GEOSEARCHSTORE" | b"ZRANGESTORE" => Kind::Keys(TWO),
        b"SDIFF" | b"SINTER" | b"SUNION" | b"SDIFFSTORE" | b"SINTERSTORE" | b"SUNIONSTORE"
        | b"PFCOUNT" | b"PFMERGE" => Kind::Keys(Keys::Rest { from: 1, stride: 1 }),
        b"MSETNX" => Kind::Keys(Keys::Rest { from: 1, stride: 2 }),
        b"BITOP" => Kind::Keys(Keys::Rest { from: 2, stride: 1 }),
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" => {
            Kind::Keys(Keys::Counted { at: 2, dest: false })
        }
        b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" => {
            Kind::Keys(Keys::Counted { at: 2, dest: true })
        }
        b"ZUNION" | b"ZINTER" | b"ZDIFF" | b"SINTERCARD" | b"ZINTERCARD" => {
            Kind::Keys(Keys::Counted { at: 1, dest: false })
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codec::resp::encode_command;
    use proptest::prelude::*;

    /// Keys go to the upstream named by their first byte's digit (`3x` →
    /// 3), anything else to 0: easy to read in a test.
    fn place(key: &[u8]) -> usize {
        key.first()
            .filter(|b| b.is_ascii_digit())
            .map_or(0, |b| usize::from(b - b'0'))
    }

    fn frame(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        out
    }

    fn route_of(args: &[&[u8]]) -> Route {
        route(Args::parse(&frame(args)), place)
    }

    fn refusal(args: &[&[u8]]) -> String {
        match route_of(args) {
            Route::Refuse(refusal) => {
                let mut out = Vec::new();
                refusal.write(&mut out);
                String::from_utf8(out).unwrap()
            }
            other => panic!("{other:?}"),
        }
    }

    fn local(args: &[&[u8]]) -> Vec<u8> {
        let bytes = frame(args);
        let Route::Local(kind) = route(Args::parse(&bytes), place) else {
            panic!("not local: {args:?}");
        };
        let mut out = Vec::new();
        local_reply(kind, Args::parse(&bytes), Dialect::Resp2, &mut out);
        out
    }

    #[test]
    fn single_key_commands_go_to_their_keys_upstream() {
        assert_eq!(route_of(&[b"GET", b"3a"]), Route::Forward(3));
        assert_eq!(
            route_of(&[b"set", b"5a", b"v", b"EX", b"10"]),
            Route::Forward(5)
        );
        assert_eq!(route_of(&[b"HgetAll", b"7h"]), Route::Forward(7));
        assert_eq!(route_of(&[b"ZADD", b"2z", b"1", b"m"]), Route::Forward(2));
        // Inline commands route the same way.
        assert_eq!(route(Args::parse(b"get 4k\r\n"), place), Route::Forward(4));
    }

    #[test]
    fn multi_key_commands_split_only_when_spread() {
        assert_eq!(
            route_of(&[b"MGET", b"1a", b"2b"]),
            Route::Split(Split::Mget)
        );
        assert_eq!(route_of(&[b"MGET", b"1a", b"1b"]), Route::Forward(1));
        assert_eq!(route_of(&[b"DEL", b"4a"]), Route::Forward(4));
        assert_eq!(
            route_of(&[b"exists", b"1", b"2"]),
            Route::Split(Split::Exists)
        );
        // MSET's values are not keys: "2v" does not count.
        assert_eq!(
            route_of(&[b"MSET", b"1a", b"2v", b"1b", b"3v"]),
            Route::Forward(1)
        );
        assert_eq!(
            route_of(&[b"MSET", b"1a", b"v", b"2b", b"v"]),
            Route::Split(Split::Mset)
        );
        assert_eq!(
            route_of(&[b"TOUCH", b"1", b"2"]),
            Route::Split(Split::Touch)
        );
        assert_eq!(
            route_of(&[b"UNLINK", b"1", b"2"]),
            Route::Split(Split::Unlink)
        );
    }

    #[test]
    fn keys_that_must_be_together_are_forwarded_or_refused() {
        assert_eq!(route_of(&[b"RENAME", b"1a", b"1b"]), Route::Forward(1));
        assert_eq!(
            route_of(&[b"LMOVE", b"2a", b"2b", b"LEFT", b"RIGHT"]),
            Route::Forward(2)
        );
        assert_eq!(
            route_of(&[b"SINTERSTORE", b"3d", b"3a", b"3b"]),
            Route::Forward(3)
        );
        assert_eq!(
            route_of(&[b"MSETNX", b"1a", b"9", b"1b", b"8"]),
            Route::Forward(1)
        );
        assert_eq!(
            route_of(&[b"BITOP", b"AND", b"6d", b"6a"]),
            Route::Forward(6)
        );
        assert_eq!(
            route_of(&[b"EVAL", b"s", b"2", b"5a", b"5b", b"9x"]),
            Route::Forward(5)
        );
        assert_eq!(
            route_of(&[b"ZUNIONSTORE", b"4d", b"1", b"4a"]),
            Route::Forward(4)
        );
        assert_eq!(route_of(&[b"ZUNIONSTORE", b"4d", b"0"]), Route::Forward(4));
        assert_eq!(
            route_of(&[b"SINTERCARD", b"2", b"7a", b"7b", b"LIMIT", b"1"]),
            Route::Forward(7)
        );
        assert_eq!(
            refusal(&[b"RENAME", b"1a", b"2b"]),
            "-ERR keys of 'rename' are on different upstreams; \
             a hash tag ({user1}.a, {user1}.b) puts keys together\r\n"
        );
        assert!(refusal(&[b"EVAL", b"s", b"2", b"1a", b"2b"]).starts_with("-ERR keys of 'eval'"));
        assert!(refusal(&[b"ZUNIONSTORE", b"1d", b"1", b"2a"]).starts_with("-ERR keys of"));
    }

    #[test]
    fn scripts_need_keys_and_a_sound_key_count() {
        assert_eq!(
            refusal(&[b"EVAL", b"return 1", b"0"]),
            "-ERR 'eval' without keys is not supported by the proxy\r\n"
        );
        for count in [&b"3"[..], b"-1", b"x"] {
            assert_eq!(
                refusal(&[b"EVALSHA", b"abc", count, b"1a", b"1b"]),
                "-ERR invalid number of keys for 'evalsha'\r\n"
            );
        }
        assert!(refusal(&[b"EVAL", b"s"]).contains("wrong number of arguments"));
    }

    #[test]
    fn unsupported_commands_get_a_clear_error() {
        for name in [
            &b"KEYS"[..],
            b"SCAN",
            b"FLUSHALL",
            b"FLUSHDB",
            b"DBSIZE",
            b"RANDOMKEY",
            b"MULTI",
            b"EXEC",
            b"WATCH",
            b"SUBSCRIBE",
            b"PSUBSCRIBE",
            b"SSUBSCRIBE",
            b"MONITOR",
            b"RESET",
            b"PUBLISH",
            b"BLPOP",
            b"BRPOP",
            b"BZPOPMIN",
            b"WAIT",
            b"CONFIG",
            b"INFO",
            b"DEBUG",
            b"SHUTDOWN",
            b"SCRIPT",
            b"SORT",
            b"MOVE",
            b"XREAD",
            b"NOSUCHCOMMAND",
        ] {
            let expected = format!(
                "-ERR command '{}' is not supported by the proxy\r\n",
                String::from_utf8_lossy(name).to_lowercase()
            );
            assert_eq!(refusal(&[name, b"1a", b"0"]), expected);
        }
    }

    #[test]
    fn wrong_arity_is_refused() {
        assert_eq!(
            refusal(&[b"GET"]),
            "-ERR wrong number of arguments for 'get' command\r\n"
        );
        for args in [
            &[&b"MGET"[..]][..],
            &[b"MSET", b"k"],
            &[b"MSET", b"k", b"v", b"k2"],
            &[b"RENAME", b"a"],
            &[b"PING", b"a", b"b"],
            &[b"ECHO"],
            &[b"SELECT"],
            &[b"SDIFF"],
            &[b"MSETNX", b"a"],
        ] {
            assert!(
                refusal(args).contains("wrong number of arguments"),
                "{args:?}"
            );
        }
    }

    #[test]
    fn local_commands_are_answered_here() {
        assert_eq!(local(&[b"PING"]), b"+PONG\r\n");
        assert_eq!(local(&[b"ping", b"hi"]), b"$2\r\nhi\r\n");
        assert_eq!(local(&[b"ECHO", b""]), b"$0\r\n\r\n");
        assert_eq!(local(&[b"QUIT"]), b"+OK\r\n");
        assert_eq!(local(&[b"COMMAND", b"DOCS"]), b"*0\r\n");
        let docs = frame(&[b"COMMAND", b"docs", b"GET"]);
        let mut resp3 = Vec::new();
        local_reply(
            Local::Command,
            Args::parse(&docs),
            Dialect::Resp3,
            &mut resp3,
        );
        assert_eq!(resp3, b"%0\r\n", "RESP3: an empty map");
        assert_eq!(local(&[b"COMMAND", b"count"]), b":0\r\n");
        assert_eq!(local(&[b"SELECT", b"0"]), b"+OK\r\n");
        assert_eq!(
            local(&[b"SELECT", b"1"]),
            b"-ERR DB index is out of range\r\n"
        );
    }

    #[test]
    fn empty_commands_get_no_reply() {
        assert_eq!(route(Args::parse(b"*0\r\n"), place), Route::Empty);
        assert_eq!(route(Args::parse(b"\r\n"), place), Route::Empty);
    }

    #[test]
    fn echoed_names_are_cut_and_cleaned() {
        let long = [b'x'; 100];
        let text = refusal(&[&long]);
        assert!(text.contains(&"x".repeat(NAME_MAX)));
        assert!(!text.contains(&"x".repeat(NAME_MAX + 1)));
        assert_eq!(
            refusal(&[b"BAD\r\nNAME"]),
            "-ERR command 'bad??name' is not supported by the proxy\r\n"
        );
    }

    #[test]
    fn headers_are_decimal() {
        for n in [0, 7, -1, 42, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            push_header(&mut out, b':', n);
            assert_eq!(out, format!(":{n}\r\n").as_bytes());
        }
    }

    const NAMES: &[&[u8]] = &[
        b"GET",
        b"MGET",
        b"MSET",
        b"EVAL",
        b"ZUNIONSTORE",
        b"SINTERCARD",
        b"RENAME",
        b"BITOP",
        b"PING",
        b"SELECT",
        b"KEYS",
        b"LMOVE",
        b"ECHO",
    ];

    proptest! {
        #[test]
        fn any_command_routes_without_panic(
            args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..8),
            name in prop::sample::select(NAMES),
        ) {
            let mut all: Vec<&[u8]> = vec![name];
            all.extend(args.iter().map(Vec::as_slice));
            match route_of(&all) {
                Route::Forward(upstream) => prop_assert!(upstream < 10),
                Route::Refuse(refusal) => {
                    let mut out = Vec::new();
                    refusal.write(&mut out);
                    prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
                }
                Route::Local(kind) => {
                    let bytes = frame(&all);
                    local_reply(kind, Args::parse(&bytes), Dialect::Resp3, &mut Vec::new());
                }
                Route::Split(_) | Route::Connection(_) | Route::Empty => {}
            }
        }
    }
}
