//! The key-value service behind `--protocol resp`: the Redis commands that
//! `redis-cli`, `redis-benchmark` and client libraries need, over a
//! [`Store`] shared by every shard.
//!
//! Replies are RESP2, written whole by the service (the `resp` codec adds
//! no framing). `reply_reserve` is exact for the replies whose size depends
//! on the data (GET, MGET, INFO, ...): it looks them up, keeps what it saw
//! in `pending`, and `call` writes exactly that, so a value another shard
//! changes in between can never make a reply outgrow its reserve. Every
//! other reply fits [`SMALL_REPLY`].

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::{Condition, IncrError, Oom, Store, Ttl};
use super::{Reply, Service, ServiceContext};
use crate::codec::resp::{Args, parse_int};
use crate::metrics::{CloseReason, Registry};

/// The reserve of every reply that does not depend on stored data: status,
/// integer and error replies, whose longest (an unknown command naming its
/// first arguments, each cut short) stays under this.
pub const SMALL_REPLY: usize = 256;

/// Commands between two incremental sweeps of expired keys on one shard.
pub const SWEEP_EVERY: u32 = 64;

/// Entries looked at per sweep: with [`SWEEP_EVERY`], at most one entry
/// checked per two commands, so sweeping never stalls the loop.
pub const SWEEP_BUDGET: usize = 32;

/// The longest `DEBUG SLEEP`: it blocks the whole shard, on purpose.
pub const DEBUG_SLEEP_MAX_MS: u64 = 10_000;

/// The version reported to clients (HELLO, INFO): the Redis behaviour the
/// command subset follows, so that clients that check it are content.
pub const REDIS_VERSION: &str = "7.0.0";

const OK: &[u8] = b"+OK\r\n";
const NIL: &[u8] = b"$-1\r\n";
const EMPTY_ARRAY: &[u8] = b"*0\r\n";
const OOM: &[u8] = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";
const NOT_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";
const SYNTAX: &[u8] = b"-ERR syntax error\r\n";
const TOO_LARGE: &[u8] = b"-ERR reply too large for the connection buffer\r\n";

/// One shard's instance of the key-value service.
pub struct Kv {
    store: Arc<Store>,
    registry: Arc<Registry>,
    /// The ring capacity: no reply may be larger.
    reply_max: usize,
    debug_commands: bool,
    port: u16,
    threads: usize,
    max_conns: usize,
    shard: usize,
    started: Instant,
    commands: u32,
    sweep_next: usize,
    /// What `reply_reserve` saw for the frame `call` serves next.
    pending: RefCell<Pending>,
}

/// Data-dependent replies, prepared by `reply_reserve`.
#[derive(Default)]
struct Pending {
    kind: Prepared,
    /// GET / MGET: the values, as they were at reserve time.
    values: Vec<Option<Arc<[u8]>>>,
    /// INFO and friends: the whole reply, rendered.
    text: Vec<u8>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Prepared {
    #[default]
    Nothing,
    Values,
    Text,
    TooLarge,
}

impl Kv {
    /// A shard's service over the shared `store`.
    pub fn new(store: Arc<Store>, context: &ServiceContext<'_>) -> Kv {
        let config = context.config;
        Kv {
            store,
            registry: context.registry.clone(),
            reply_max: config.buffer,
            debug_commands: config.enable_debug_commands,
            port: config.listen.port(),
            threads: config.threads,
            max_conns: config.max_conns,
            shard: context.shard,
            started: Instant::now(),
            commands: 0,
            sweep_next: context.shard,
            pending: RefCell::default(),
        }
    }

    /// Prepares the reply to GET/MGET/INFO/...; returns its exact size, or
    /// `None` for the commands whose reply fits [`SMALL_REPLY`].
    fn prepare(&self, frame: &[u8]) -> Option<usize> {
        let mut args = Args::parse(frame);
        let name = args.next()?;
        let mut pending = self.pending.borrow_mut();
        let pending = &mut *pending;
        pending.kind = Prepared::Nothing;
        let size = if name.eq_ignore_ascii_case(b"GET") || name.eq_ignore_ascii_case(b"MGET") {
            let single = name.len() == 3;
            let argc = args.left();
            if argc == 0 || (single && argc != 1) {
                return None; // an arity error
            }
            pending.values.clear();
            let mut size = if single { 0 } else { array_header_len(argc) };
            for key in args {
                let value = self.store.get(key);
                size += value.as_deref().map_or(NIL.len(), bulk_len);
                pending.values.push(value);
            }
            pending.kind = Prepared::Values;
            size
        } else if name.eq_ignore_ascii_case(b"ECHO") || name.eq_ignore_ascii_case(b"PING") {
            // `call` checks the room left and answers TOO_LARGE when an
            // echo could never fit the ring.
            let mut rest = args;
            let (Some(text), None) = (rest.next(), rest.next()) else {
                return None;
            };
            return Some(bulk_len(text).max(SMALL_REPLY)).filter(|&n| n <= self.reply_max);
        } else {
            let text = &mut pending.text;
            text.clear();
            if !self.render(name, args, text) {
                return None;
            }
            pending.kind = Prepared::Text;
            text.len()
        };
        if size > self.reply_max {
            pending.kind = Prepared::TooLarge;
            pending.values.clear();
            return Some(TOO_LARGE.len());
        }
        Some(size.max(SMALL_REPLY))
    }

    /// Renders the introspection replies whose size varies (INFO, HELLO,
    /// CONFIG GET) into `out`; false for any other command.
    fn render(&self, name: &[u8], mut args: Args<'_>, out: &mut Vec<u8>) -> bool {
        if name.eq_ignore_ascii_case(b"INFO") {
            let info = self.info(args.next());
            push_bulk(out, info.as_bytes());
            true
        } else if name.eq_ignore_ascii_case(b"HELLO") {
            match args.next().map(parse_int) {
                None | Some(Some(2)) => {
                    let fields: [(&str, &[u8]); 6] = [
                        ("server", b"redis"),
                        ("version", REDIS_VERSION.as_bytes()),
                        ("proto", b""),
                        ("id", b""),
                        ("mode", b"standalone"),
                        ("role", b"master"),
                    ];
                    out.extend(b"*14\r\n");
                    for (key, value) in fields {
                        push_bulk(out, key.as_bytes());
                        match key {
                            "proto" => out.extend(b":2\r\n"),
                            "id" => out.extend(format!(":{}\r\n", self.shard).as_bytes()),
                            _ => push_bulk(out, value),
                        }
                    }
                    push_bulk(out, b"modules");
                    out.extend(EMPTY_ARRAY);
                }
                // RESP3 is not spoken: clients fall back to RESP2 on this.
                Some(Some(_)) => out.extend(b"-NOPROTO unsupported protocol version\r\n"),
                Some(None) => {
                    out.extend(b"-ERR Protocol version is not an integer or out of range\r\n");
                }
            }
            true
        } else if name.eq_ignore_ascii_case(b"CONFIG") {
            let Some(sub) = args.next() else {
                return false;
            };
            if !sub.eq_ignore_ascii_case(b"GET") {
                return false;
            }
            let max_memory = self.store.max_memory().to_string();
            let params: [(&str, &[u8]); 4] = [
                ("save", b""),
                ("appendonly", b"no"),
                ("maxmemory", max_memory.as_bytes()),
                ("databases", b"1"),
            ];
            let mut found: Vec<(&str, &[u8])> = Vec::new();
            for pattern in args {
                for (param, value) in params {
                    let matches = pattern == b"*" || pattern.eq_ignore_ascii_case(param.as_bytes());
                    if matches && !found.iter().any(|(p, _)| *p == param) {
                        found.push((param, value));
                    }
                }
            }
            out.extend(format!("*{}\r\n", found.len() * 2).as_bytes());
            for (param, value) in found {
                push_bulk(out, param.as_bytes());
                push_bulk(out, value);
            }
            true
        } else {
            false
        }
    }

    /// The INFO page: server, clients, memory, stats and keyspace sections
    /// from the engine's counters (summed over shards) and the store.
    fn info(&self, section: Option<&[u8]>) -> String {
        use std::fmt::Write;
        let shards = &self.registry.shards;
        let sum = |get: &dyn Fn(&crate::metrics::ShardMetrics) -> u64| -> u64 {
            shards.iter().map(|s| get(s)).sum()
        };
        let want = |name: &str| {
            section.is_none_or(|s| {
                s.eq_ignore_ascii_case(name.as_bytes())
                    || s.eq_ignore_ascii_case(b"all")
                    || s.eq_ignore_ascii_case(b"default")
                    || s.eq_ignore_ascii_case(b"everything")
            })
        };
        let mut text = String::new();
        if want("server") {
            let uptime = self.started.elapsed().as_secs();
            let _ = write!(
                text,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nholdfast_version:{}\r\n\
                 redis_mode:standalone\r\nos:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\n\
                 uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nshards:{}\r\n\
                 backend:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::process::id(),
                self.port,
                uptime / 86_400,
                self.threads,
                self.registry.backend,
            );
        }
        if want("clients") {
            let _ = write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
                sum(&|s| s.connections_open.get()),
                self.max_conns,
            );
        }
        if want("memory") {
            let _ = write!(
                text,
                "# Memory\r\nused_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\n\r\n",
                self.store.used_memory(),
                self.store.max_memory(),
            );
        }
        if want("stats") {
            let closed = |reason: CloseReason| sum(&|s| s.closed[reason.index()].get());
            let _ = write!(
                text,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 total_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\n\
                 rejected_connections:{}\r\nexpired_keys:{}\r\nprotocol_errors:{}\r\n\
                 handler_panics:{}\r\n\r\n",
                sum(&|s| s.accepted.get()),
                sum(&|s| s.frames.get()),
                sum(&|s| s.bytes_read.get()),
                sum(&|s| s.bytes_written.get()),
                sum(&|s| s.rejected.iter().map(|c| c.get()).sum()),
                self.store.expired_keys(),
                closed(CloseReason::ProtocolError),
                sum(&|s| s.handler_panics.get()),
            );
        }
        if want("keyspace") {
            let keys = self.store.len();
            text.push_str("# Keyspace\r\n");
            if keys > 0 {
                let _ = write!(
                    text,
                    "db0:keys={keys},expires={},avg_ttl=0\r\n",
                    self.store.volatile_len()
                );
            }
        }
        text
    }

    fn sweep(&mut self) {
        self.commands = self.commands.wrapping_add(1);
        if self.commands % SWEEP_EVERY == 0 {
            self.store.sweep(self.sweep_next, SWEEP_BUDGET);
            self.sweep_next = self.sweep_next.wrapping_add(1);
        }
    }

    /// Serves one command; `out` collects the reply (at most the reserve).
    fn execute(&mut self, frame: &[u8], out: &mut Out<'_, '_>) {
        let mut args = Args::parse(frame);
        let Some(name) = args.next() else {
            return; // an empty command gets no reply, as in Redis
        };
        let argc = args.left();
        let mut upper = [0u8; 16];
        let command = uppercase(name, &mut upper);
        let arity = |ok: bool, out: &mut Out<'_, '_>| {
            if !ok {
                out.wrong_arity(name);
            }
            ok
        };
        match command {
            b"PING" => match (argc, args.next()) {
                (0, _) => out.put(b"+PONG\r\n"),
                (1, Some(text)) => out.bulk_or_too_large(text),
                _ => out.wrong_arity(name),
            },
            b"ECHO" => {
                if arity(argc == 1, out) {
                    out.bulk_or_too_large(args.next().unwrap_or_default());
                }
            }
            b"GET" | b"MGET" => {
                if arity(if command == b"GET" { argc == 1 } else { argc >= 1 }, out) {
                    self.reply_values(command == b"MGET", args, out);
                }
            }
            b"SET" => {
                if arity(argc >= 2, out) {
                    self.set(args, out);
                }
            }
            b"MSET" => {
                if arity(argc >= 2 && argc % 2 == 0, out) {
                    let mut keys = args.clone().step_by(2);
                    let values = args.skip(1).step_by(2);
                    let pairs = std::iter::from_fn(move || keys.next()).zip(values);
                    match self.store.set_many(pairs) {
                        Ok(()) => out.put(OK),
                        Err(Oom) => out.put(OOM),
                    }
                }
            }
            b"DEL" | b"UNLINK" | b"EXISTS" => {
                if arity(argc >= 1, out) {
                    let count = if command == b"EXISTS" {
                        args.filter(|key| self.store.exists(key)).count()
                    } else {
                        args.filter(|key| self.store.remove(key)).count()
                    };
                    out.integer(count as i64);
                }
            }
            b"INCR" | b"DECR" | b"INCRBY" | b"DECRBY" => {
                let by = command.ends_with(b"BY");
                if arity(argc == 1 + usize::from(by), out) {
                    let key = args.next().unwrap_or_default();
                    let delta = if by {
                        match args.next().and_then(parse_int) {
                            Some(delta) => delta,
                            None => return out.put(NOT_INTEGER),
                        }
                    } else {
                        1
                    };
                    let delta = if command.starts_with(b"DECR") {
                        match delta.checked_neg() {
                            Some(delta) => delta,
                            None => return out.put(NOT_INTEGER),
                        }
                    } else {
                        delta
                    };
                    match self.store.incr_by(key, delta) {
                        Ok(value) => out.integer(value),
                        Err(IncrError::NotInteger) => out.put(NOT_INTEGER),
                        Err(IncrError::Overflow) => {
                            out.put(b"-ERR increment or decrement would overflow\r\n")
                        }
                        Err(IncrError::Oom) => out.put(OOM),
                    }
                }
            }
            b"EXPIRE" | b"PEXPIRE" => {
                if arity(argc == 2, out) {
                    let key = args.next().unwrap_or_default();
                    let Some(amount) = args.next().and_then(parse_int) else {
                        return out.put(NOT_INTEGER);
                    };
                    let ms = if command == b"EXPIRE" {
                        amount.checked_mul(1000)
                    } else {
                        Some(amount)
                    };
                    match ms {
                        Some(ms) => out.integer(i64::from(self.store.expire_in(key, ms))),
                        None => out.put(b"-ERR invalid expire time in 'expire' command\r\n"),
                    }
                }
            }
            b"TTL" | b"PTTL" => {
                if arity(argc == 1, out) {
                    let ttl = match self.store.ttl_ms(args.next().unwrap_or_default()) {
                        None => -2,
                        Some(None) => -1,
                        Some(Some(ms)) if command == b"TTL" => ms.div_ceil(1000) as i64,
                        Some(Some(ms)) => ms as i64,
                    };
                    out.integer(ttl);
                }
            }
            b"DBSIZE" => {
                if arity(argc == 0, out) {
                    out.integer(self.store.len() as i64);
                }
            }
            b"FLUSHALL" | b"FLUSHDB" => {
                self.store.clear();
                out.put(OK);
            }
            b"SELECT" => {
                if arity(argc == 1, out) {
                    match args.next().and_then(parse_int) {
                        Some(0) => out.put(OK),
                        _ => out.put(b"-ERR DB index is out of range\r\n"),
                    }
                }
            }
            b"QUIT" => {
                out.put(OK);
                out.close = true;
            }
            b"COMMAND" => match args.next() {
                Some(sub) if sub.eq_ignore_ascii_case(b"COUNT") => out.integer(0),
                _ => out.put(EMPTY_ARRAY),
            },
            b"CLIENT" => match args.next() {
                Some(sub) if sub.eq_ignore_ascii_case(b"GETNAME") => out.put(NIL),
                Some(sub) if sub.eq_ignore_ascii_case(b"ID") => out.integer(0),
                Some(sub)
                    if sub.eq_ignore_ascii_case(b"SETNAME")
                        || sub.eq_ignore_ascii_case(b"SETINFO") =>
                {
                    out.put(OK)
                }
                _ => out.put(b"-ERR unknown subcommand or wrong number of arguments for 'client' command\r\n"),
            },
            b"INFO" | b"HELLO" | b"CONFIG" => self.reply_text(name, out),
            b"DEBUG" => self.debug(args, out),
            _ => out.unknown(name, args),
        }
    }

    fn set(&mut self, mut args: Args<'_>, out: &mut Out<'_, '_>) {
        let (Some(key), Some(value)) = (args.next(), args.next()) else {
            return out.put(SYNTAX);
        };
        let mut condition = Condition::Always;
        let mut ttl = Ttl::Persist;
        while let Some(option) = args.next() {
            let mut upper = [0u8; 16];
            match uppercase(option, &mut upper) {
                b"NX" if condition == Condition::Always => condition = Condition::Absent,
                b"XX" if condition == Condition::Always => condition = Condition::Present,
                b"KEEPTTL" if ttl == Ttl::Persist => ttl = Ttl::Keep,
                unit @ (b"EX" | b"PX") if ttl == Ttl::Persist => {
                    let Some(amount) = args.next() else {
                        return out.put(SYNTAX);
                    };
                    let Some(amount) = parse_int(amount) else {
                        return out.put(NOT_INTEGER);
                    };
                    let scale = if unit == b"EX" { 1000 } else { 1 };
                    match amount.checked_mul(scale) {
                        Some(ms) if ms > 0 => ttl = Ttl::In(ms as u64),
                        _ => return out.put(b"-ERR invalid expire time in 'set' command\r\n"),
                    }
                }
                _ => return out.put(SYNTAX),
            }
        }
        match self.store.set(key, value, condition, ttl) {
            Ok(true) => out.put(OK),
            Ok(false) => out.put(NIL),
            Err(Oom) => out.put(OOM),
        }
    }

    fn reply_values(&mut self, many: bool, keys: Args<'_>, out: &mut Out<'_, '_>) {
        let mut pending = self.pending.borrow_mut();
        match pending.kind {
            Prepared::TooLarge => return out.put(TOO_LARGE),
            Prepared::Values => {}
            // Not prepared (a caller that skipped reply_reserve): look up
            // now and refuse what does not fit what is left.
            Prepared::Nothing | Prepared::Text => {
                pending.values.clear();
                for key in keys {
                    pending.values.push(self.store.get(key));
                }
                let needed: usize = pending
                    .values
                    .iter()
                    .map(|v| v.as_deref().map_or(NIL.len(), bulk_len))
                    .sum::<usize>()
                    + if many {
                        array_header_len(pending.values.len())
                    } else {
                        0
                    };
                if needed > out.reply.remaining() {
                    pending.values.clear();
                    return out.put(TOO_LARGE);
                }
            }
        }
        pending.kind = Prepared::Nothing;
        if many {
            out.header(b'*', pending.values.len());
        }
        for value in pending.values.drain(..) {
            match value {
                Some(value) => out.bulk(&value),
                None => out.put(NIL),
            }
        }
    }

    fn reply_text(&mut self, name: &[u8], out: &mut Out<'_, '_>) {
        let mut pending = self.pending.borrow_mut();
        match pending.kind {
            Prepared::Text if pending.text.len() <= out.reply.remaining() => {
                out.put(&pending.text);
            }
            Prepared::TooLarge => out.put(TOO_LARGE),
            // CONFIG with another subcommand, or not prepared.
            _ => {
                let _ = name;
                out.put(b"-ERR unknown subcommand or wrong number of arguments for 'config' command\r\n");
            }
        }
        pending.kind = Prepared::Nothing;
    }

    fn debug(&mut self, mut args: Args<'_>, out: &mut Out<'_, '_>) {
        if !self.debug_commands {
            return out.put(
                b"-ERR DEBUG command not allowed; start the server with --enable-debug-commands\r\n",
            );
        }
        let mut upper = [0u8; 16];
        match args.next().map(|sub| uppercase(sub, &mut upper)) {
            Some(b"PANIC") => panic!("DEBUG PANIC"),
            Some(b"SLEEP") => match args.next().and_then(parse_int) {
                Some(ms) if (0..=DEBUG_SLEEP_MAX_MS as i64).contains(&ms) => {
                    std::thread::sleep(Duration::from_millis(ms as u64));
                    out.put(OK);
                }
                _ => out.put(b"-ERR DEBUG SLEEP takes 0 to 10000 milliseconds\r\n"),
            },
            _ => out.put(b"-ERR DEBUG subcommands: PANIC, SLEEP <ms>\r\n"),
        }
    }
}

impl Service for Kv {
    fn reply_reserve(&self, frame: &[u8]) -> usize {
        self.prepare(frame).unwrap_or(SMALL_REPLY)
    }

    fn call(&mut self, frame: &[u8], reply: &mut Reply<'_>) {
        self.sweep();
        let mut out = Out {
            reply,
            close: false,
        };
        self.execute(frame, &mut out);
        if out.close {
            out.reply.close_after();
        }
    }
}

/// A reply being written. Writes cannot pass the reserve: `reply_reserve`
/// sized it, and a failed `put` marks the reply overflowed (the engine then
/// closes the connection, a service bug, never silently truncates).
struct Out<'r, 'a> {
    reply: &'r mut Reply<'a>,
    close: bool,
}

impl Out<'_, '_> {
    fn put(&mut self, bytes: &[u8]) {
        let _ = self.reply.put(bytes);
    }

    fn header(&mut self, kind: u8, len: usize) {
        let mut buf = [0u8; 24];
        let n = write_header(&mut buf, kind, len as i64);
        self.put(&buf[..n]);
    }

    fn bulk(&mut self, value: &[u8]) {
        self.header(b'$', value.len());
        self.put(value);
        self.put(b"\r\n");
    }

    fn bulk_or_too_large(&mut self, value: &[u8]) {
        if bulk_len(value) > self.reply.remaining() {
            return self.put(TOO_LARGE);
        }
        self.bulk(value);
    }

    fn integer(&mut self, value: i64) {
        let mut buf = [0u8; 24];
        let n = write_header(&mut buf, b':', value);
        self.put(&buf[..n]);
    }

    fn wrong_arity(&mut self, name: &[u8]) {
        self.put(b"-ERR wrong number of arguments for '");
        let mut name = sanitized(name, 32);
        name.make_ascii_lowercase();
        self.put(&name);
        self.put(b"' command\r\n");
    }

    /// `-ERR unknown command 'x', with args beginning with: 'a' 'b' `, cut
    /// short so it always fits [`SMALL_REPLY`].
    fn unknown(&mut self, name: &[u8], args: Args<'_>) {
        self.put(b"-ERR unknown command '");
        self.put(&sanitized(name, 64));
        self.put(b"', with args beginning with: ");
        let mut budget = 96;
        for arg in args {
            let arg = sanitized(arg, 32);
            if arg.len() + 3 > budget {
                break;
            }
            budget -= arg.len() + 3;
            self.put(b"'");
            self.put(&arg);
            self.put(b"' ");
        }
        self.put(b"\r\n");
    }
}

/// `name` cut to `max` bytes with control characters blanked, so an echoed
/// name cannot break the reply line.
fn sanitized(name: &[u8], max: usize) -> Vec<u8> {
    name.iter()
        .take(max)
        .map(|&b| if b.is_ascii_control() { b' ' } else { b })
        .collect()
}

/// `name` in upper case when it fits `buf` (command names do); otherwise
/// an empty slice, which matches no command.
fn uppercase<'b>(name: &[u8], buf: &'b mut [u8; 16]) -> &'b [u8] {
    if name.len() > buf.len() {
        return &[];
    }
    let buf = &mut buf[..name.len()];
    buf.copy_from_slice(name);
    buf.make_ascii_uppercase();
    buf
}

/// Writes `<kind><number>\r\n` into `buf`; returns its length.
fn write_header(buf: &mut [u8; 24], kind: u8, value: i64) -> usize {
    buf[0] = kind;
    let mut digits = [0u8; 20];
    let mut n = value.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = 1;
    if value < 0 {
        buf[at] = b'-';
        at += 1;
    }
    let len = digits.len() - i;
    buf[at..at + len].copy_from_slice(&digits[i..]);
    at += len;
    buf[at..at + 2].copy_from_slice(b"\r\n");
    at + 2
}

fn digits(mut n: usize) -> usize {
    let mut count = 1;
    while n >= 10 {
        n /= 10;
        count += 1;
    }
    count
}

/// Bytes of `$<len>\r\n<value>\r\n`.
fn bulk_len(value: &[u8]) -> usize {
    1 + digits(value.len()) + 2 + value.len() + 2
}

/// Bytes of `*<count>\r\n`.
fn array_header_len(count: usize) -> usize {
    1 + digits(count) + 2
}

fn push_bulk(out: &mut Vec<u8>, value: &[u8]) {
    out.extend(format!("${}\r\n", value.len()).as_bytes());
    out.extend(value);
    out.extend(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_render_numbers() {
        let mut buf = [0u8; 24];
        let n = write_header(&mut buf, b':', -42);
        assert_eq!(&buf[..n], b":-42\r\n");
        let n = write_header(&mut buf, b'$', 0);
        assert_eq!(&buf[..n], b"$0\r\n");
        let n = write_header(&mut buf, b':', i64::MIN);
        assert_eq!(&buf[..n], b":-9223372036854775808\r\n");
    }

    #[test]
    fn sizes_match_rendering() {
        assert_eq!(bulk_len(b"hello"), b"$5\r\nhello\r\n".len());
        assert_eq!(bulk_len(&[0; 10]), 4 + 10 + 3);
        assert_eq!(array_header_len(12), b"*12\r\n".len());
    }

    #[test]
    fn uppercase_bounds_names() {
        let mut buf = [0u8; 16];
        assert_eq!(uppercase(b"get", &mut buf), b"GET");
        assert_eq!(uppercase(&[b'a'; 17], &mut buf), b"");
    }

    #[test]
    fn sanitized_blanks_control_bytes() {
        assert_eq!(sanitized(b"a\r\nb", 10), b"a  b");
        assert_eq!(sanitized(b"abcdef", 3), b"abc");
    }
}
