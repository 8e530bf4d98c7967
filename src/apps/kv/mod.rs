//! The key-value service behind `--protocol resp`: Redis 7's string,
//! expiry and keyspace commands (and what clients send on connect), over a
//! [`Store`] shared by every shard, and Pub/Sub over the engine's groups
//! (`pubsub.rs`), with Redis's replies and error texts.
//!
//! Replies are RESP2, or RESP3 after `HELLO 3` (the connection's
//! [`Session`] says which), written whole by the service (the `resp`
//! codec adds no framing). `reply_reserve` is exact for the replies whose size depends
//! on the data: the read commands among them (GET, MGET, GETRANGE, KEYS,
//! SCAN, LCS, INFO, ...) are run there, and what they found is kept in
//! `pending` for `call` to write, so a value another shard changes in
//! between can never make a reply outgrow its reserve. A write that
//! answers with data (GETSET, GETDEL, GETEX, SET ... GET, INCRBYFLOAT) is
//! reserved for what the key holds then, and refuses (unchanged) with
//! `reply too large` if it grew past the reply window meanwhile. Every
//! other reply fits [`SMALL_REPLY`].
//!
//! The shards' ticks run the active expiry ([`Store::expire_cycle`]) over
//! each shard's share of the stripes.

mod float;
mod glob;
mod keys;
mod pubsub;
mod reply;
mod server;
mod session;
pub mod store;
mod strings;
mod table;

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::reply::{Out, Sink, TOO_LARGE, Text, array_header_len, bulk_len, c_str};
use self::table::{Command, Op};
use crate::engine::codec::resp::Args;
use crate::engine::metrics::Registry;
use crate::engine::service::{Context, Message, Opened, Pusher, Reply, Service, ServiceContext};

pub use self::session::Session;
pub use self::store::Store;
pub use self::table::{COMMANDS, UNSUPPORTED};

/// The reserve of every reply that does not depend on stored data: status,
/// integer and error replies.
pub const SMALL_REPLY: usize = 256;

/// How often a shard runs its share of the active expiry (Redis's `hz` 10).
pub const EXPIRE_TICK: Duration = Duration::from_millis(100);

/// The time one expiry tick may take on a shard (Redis allows 25 % of its
/// one thread; a shard here serves connections too, so less).
pub const EXPIRE_BUDGET: Duration = Duration::from_millis(2);

/// How soon the next tick comes when one ran out of time (many keys are
/// expiring): the sweep keeps pace, as Redis's fast cycles do.
pub const EXPIRE_TICK_BUSY: Duration = Duration::from_millis(10);

/// The longest `DEBUG SLEEP`: it blocks the whole shard, on purpose.
pub const DEBUG_SLEEP_MAX_MS: u64 = 10_000;

/// The version reported to clients (HELLO, INFO): the Redis behaviour the
/// command set follows, so that clients that check it are content.
pub const REDIS_VERSION: &str = "7.0.0";

/// One shard's instance of the key-value service.
pub struct Kv {
    store: Arc<Store>,
    registry: Arc<Registry>,
    /// The ring capacity: no reply may be larger.
    reply_max: usize,
    /// The longest value APPEND and SETRANGE may make (`--max-frame`, the
    /// longest a client can send).
    max_value: usize,
    debug_commands: bool,
    port: u16,
    threads: usize,
    max_conns: usize,
    shard: usize,
    started: Instant,
    /// Frames served, so that a cached INFO is used only for the frame it
    /// was rendered for.
    calls: Cell<u64>,
    /// xorshift state for RANDOMKEY.
    random: Cell<u64>,
    /// What `reply_reserve` prepared for the frame `call` serves next.
    pending: RefCell<Pending>,
    /// The process-wide group directory (PUBSUB) is reached through it.
    pusher: Pusher,
    /// Scratch for Pub/Sub: a group name; the groups a message goes to
    /// (names, and where each lies in them); a message.
    group: Vec<u8>,
    names: Vec<u8>,
    ranges: Vec<Range<usize>>,
    message: Vec<u8>,
    /// The last message frame delivered, for the next subscriber.
    frames: pubsub::Frames,
}

/// Data-dependent replies, prepared by `reply_reserve`.
#[derive(Default)]
struct Pending {
    kind: Prepared,
    /// GET / MGET: the values, as they were at reserve time.
    values: Vec<Option<Arc<[u8]>>>,
    /// MGET (an array of them), not GET.
    many: bool,
    /// Every other prepared reply, rendered.
    text: Text,
    /// INFO: the frame and call count `text` was rendered at; a retry of
    /// the same frame with no call in between (its output ring was full)
    /// reuses it.
    info_frame: Vec<u8>,
    info_calls: u64,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Prepared {
    #[default]
    Nothing,
    Values,
    Text,
    TooLarge,
}

/// A command's arguments, the name first, as Redis's `argv`. Up to 8 live
/// on the stack.
struct Argv<'a> {
    small: [&'a [u8]; 8],
    large: Vec<&'a [u8]>,
    len: usize,
}

impl<'a> Argv<'a> {
    fn parse(frame: &'a [u8]) -> Argv<'a> {
        let mut argv = Argv {
            small: [&[]; 8],
            large: Vec::new(),
            len: 0,
        };
        for arg in Args::parse(frame) {
            if argv.len < argv.small.len() {
                argv.small[argv.len] = arg;
            } else {
                if argv.large.is_empty() {
                    argv.large.extend_from_slice(&argv.small);
                }
                argv.large.push(arg);
            }
            argv.len += 1;
        }
        argv
    }

    fn get(&self) -> &[&'a [u8]] {
        if self.large.is_empty() {
            &self.small[..self.len]
        } else {
            &self.large
        }
    }
}

/// How a command's reply is reserved and made.
enum Plan {
    /// Rendered at reserve time into `pending` (reads, errors).
    Render,
    /// GET / MGET values kept at reserve time.
    Values,
    /// Made by `call`, within this many bytes.
    Write(usize),
}

impl Kv {
    /// A shard's service over the shared `store`.
    pub fn new(store: Arc<Store>, context: &ServiceContext<'_>) -> Kv {
        let config = context.config;
        let seed = std::collections::hash_map::RandomState::new();
        let seed = std::hash::BuildHasher::hash_one(&seed, context.shard) | 1;
        Kv {
            store,
            registry: context.registry.clone(),
            reply_max: config.buffer,
            max_value: config.max_frame,
            debug_commands: config.enable_debug_commands,
            port: config.listen.port(),
            threads: config.threads.max(1),
            max_conns: config.max_conns,
            shard: context.shard,
            started: Instant::now(),
            calls: Cell::new(0),
            random: Cell::new(seed),
            pending: RefCell::default(),
            pusher: context.pusher.clone(),
            group: Vec::new(),
            names: Vec::new(),
            ranges: Vec::new(),
            message: Vec::new(),
            frames: pubsub::Frames::default(),
        }
    }

    /// The command `argv` names, if known, with a fitting arity and
    /// allowed in the session's mode; else writes Redis's error to `out`.
    fn resolve(session: &Session, argv: &[&[u8]], out: &mut dyn Sink) -> Option<&'static Command> {
        let name = argv[0];
        let Some(command) = table::lookup(name) else {
            if table::is_unsupported(name) && session::refuse_unsupported(session, name, out) {
                // Refused in subscribed mode, as Redis refuses it.
            } else if table::is_unsupported(name) {
                out.put(b"-ERR unsupported command '");
                out.put(&reply::no_newlines(&c_str(name).to_ascii_lowercase()));
                out.put(b"': this server holds strings only (see the README)\r\n");
            } else {
                unknown_command(argv, out);
            }
            return None;
        };
        if !command.arity_ok(argv.len()) {
            out.wrong_arity(command.name);
            return None;
        }
        if session::refuse(session, command, argv, out) {
            return None;
        }
        Some(command)
    }

    fn plan(&self, session: &Session, command: &Command, argv: &[&[u8]], frame: &[u8]) -> Plan {
        match command.op {
            Op::Get | Op::Mget => Plan::Values,
            Op::Subscribe | Op::Psubscribe | Op::Unsubscribe | Op::Punsubscribe => {
                Plan::Write(self.pubsub_reserve(session, argv))
            }
            Op::Publish => Plan::Write(self.publish_reserve(session, argv)),
            Op::Hello => Plan::Write(SMALL_REPLY + frame.len()),
            op if rendered_ahead(op) => Plan::Render,
            Op::Getset | Op::Getdel | Op::Getex => Plan::Write(self.value_reserve(argv[1])),
            Op::Set if argv[3..].iter().any(|a| a.eq_ignore_ascii_case(b"GET")) => {
                Plan::Write(self.value_reserve(argv[1]))
            }
            Op::Incrbyfloat => Plan::Write(self.incrbyfloat_reserve(argv)),
            // "Unsupported option <the argument>" echoes it.
            Op::Expire | Op::Pexpire | Op::Expireat | Op::Pexpireat => {
                Plan::Write(SMALL_REPLY + frame.len())
            }
            _ => Plan::Write(SMALL_REPLY),
        }
    }

    /// Room for a reply carrying `key`'s current value.
    fn value_reserve(&self, key: &[u8]) -> usize {
        let len = self
            .store
            .with(key, |slot| slot.value().map_or(0, |v| v.len()));
        SMALL_REPLY.max(reply::bulk_len_of(len))
    }

    /// Prepares the reply to `frame`; returns its exact size (at most the
    /// ring), or the reserve of a reply `call` will make.
    fn prepare(&self, session: &Session, frame: &[u8]) -> usize {
        let argv = Argv::parse(frame);
        let argv = argv.get();
        if argv.is_empty() {
            return SMALL_REPLY; // an empty command gets no reply, as in Redis
        }
        let mut pending = self.pending.borrow_mut();
        let pending = &mut *pending;
        pending.kind = Prepared::Nothing;
        pending.text.reset(self.reply_max);
        pending.text.resp3 = session.resp3;
        let Some(command) = Self::resolve(session, argv, &mut pending.text) else {
            return self.prepared_text(pending);
        };
        match self.plan(session, command, argv, frame) {
            Plan::Write(reserve) => reserve.min(self.reply_max),
            Plan::Values => self.prepare_values(command.op == Op::Mget, &argv[1..], pending),
            Plan::Render => {
                if command.op == Op::Info
                    && pending.info_frame == frame
                    && pending.info_calls == self.calls.get()
                    && !pending.text.bytes.is_empty()
                {
                    // A retry of the same INFO (its output was full): the
                    // page rendered for it is still current.
                    return self.prepared_text(pending);
                }
                pending.text.reset(self.reply_max);
                self.render(session, command, argv, &mut pending.text);
                if command.op == Op::Info {
                    pending.info_frame.clear();
                    pending.info_frame.extend_from_slice(frame);
                    pending.info_calls = self.calls.get();
                }
                if pending.text.too_large {
                    pending.kind = Prepared::TooLarge;
                    return SMALL_REPLY;
                }
                self.prepared_text(pending)
            }
        }
    }

    /// Marks the rendered text as the reply to write, and returns the
    /// room it needs.
    fn prepared_text(&self, pending: &mut Pending) -> usize {
        pending.kind = Prepared::Text;
        pending
            .text
            .bytes
            .len()
            .max(SMALL_REPLY)
            .min(self.reply_max)
    }

    fn prepare_values(&self, many: bool, keys: &[&[u8]], pending: &mut Pending) -> usize {
        pending.values.clear();
        pending.many = many;
        let mut size = if many {
            array_header_len(keys.len())
        } else {
            0
        };
        for key in keys {
            let value = self.store.get(key);
            size += value.as_deref().map_or(reply::NIL.len(), bulk_len);
            pending.values.push(value);
        }
        if size > self.reply_max {
            pending.values.clear();
            pending.kind = Prepared::TooLarge;
            return SMALL_REPLY;
        }
        pending.kind = Prepared::Values;
        size.max(SMALL_REPLY).min(self.reply_max)
    }

    /// Runs a command whose reply is rendered ahead (reads).
    fn render(&self, session: &Session, command: &Command, argv: &[&[u8]], out: &mut dyn Sink) {
        match command.op {
            Op::Getrange | Op::Substr => self.getrange(argv, out),
            Op::Lcs => self.lcs(argv, out),
            Op::Keys => self.keys(argv, out),
            Op::Scan => self.scan(argv, out),
            Op::Randomkey => self.randomkey(out),
            Op::Info => self.info(argv, out),
            Op::Pubsub => self.pubsub(argv, out),
            Op::Config => self.config(argv, out),
            Op::Command => self.command(argv, out),
            Op::Echo => out.bulk(argv[1]),
            Op::Ping if argv.len() > 2 => out.wrong_arity("ping"),
            Op::Ping if session.restricted() => {
                // Subscribed mode answers as a message would come.
                out.array(2);
                out.bulk(b"pong");
                out.bulk(argv.get(1).copied().unwrap_or_default());
            }
            Op::Ping => match argv.get(1) {
                None => out.put(b"+PONG\r\n"),
                Some(arg) => out.bulk(arg),
            },
            _ => unreachable!("{} is not rendered ahead", command.name),
        }
    }

    /// Runs a command that changes data (or answers small), in `call`.
    fn run(&mut self, command: &Command, argv: &[&[u8]], out: &mut Out<'_, '_>) {
        match command.op {
            Op::Set => self.set(argv, out),
            Op::Setex | Op::Psetex => self.setex(command, argv, out),
            Op::Setnx => self.setnx(argv, out),
            Op::Getset => self.getset(argv, out),
            Op::Getdel => self.getdel(argv, out),
            Op::Getex => self.getex(argv, out),
            Op::Setrange => self.setrange(argv, out),
            Op::Append => self.append(argv, out),
            Op::Strlen => self.strlen(argv, out),
            Op::Mset | Op::Msetnx => self.mset(command, argv, out),
            Op::Incr | Op::Decr | Op::Incrby | Op::Decrby => self.incr(command, argv, out),
            Op::Incrbyfloat => self.incrbyfloat(argv, out),
            Op::Del | Op::Unlink => {
                let removed = argv[1..].iter().filter(|k| self.store.remove(k)).count();
                out.integer(removed as i64);
            }
            Op::Exists | Op::Touch => {
                let found = argv[1..].iter().filter(|k| self.store.exists(k)).count();
                out.integer(found as i64);
            }
            Op::Expire | Op::Pexpire | Op::Expireat | Op::Pexpireat => {
                self.expire(command, argv, out)
            }
            Op::Ttl | Op::Pttl | Op::Expiretime | Op::Pexpiretime => self.ttl(command, argv, out),
            Op::Persist => self.persist(argv, out),
            Op::Type => self.key_type(argv, out),
            Op::Rename | Op::Renamenx => self.rename(command, argv, out),
            Op::Dbsize => out.integer(self.store.len() as i64),
            Op::Flushall | Op::Flushdb => self.flush(argv, out),
            Op::Select => self.select(argv, out),
            Op::Time => self.time(out),
            Op::Client => self.client(argv, out),
            Op::Debug => self.debug(argv, out),
            Op::Quit => {
                out.put(reply::OK);
                out.close = true;
            }
            _ => unreachable!("{} is rendered ahead", command.name),
        }
    }

    /// Runs a command that works on the connection's session, in `call`.
    fn run_session(
        &mut self,
        session: &mut Session,
        cx: &mut Context<'_>,
        command: &Command,
        argv: &[&[u8]],
        out: &mut Out<'_, '_>,
    ) {
        use self::pubsub::Kind;
        match command.op {
            Op::Subscribe => self.subscribe(Kind::Channel, session, cx, argv, out),
            Op::Psubscribe => self.subscribe(Kind::Pattern, session, cx, argv, out),
            Op::Unsubscribe => self.unsubscribe(Kind::Channel, session, cx, argv, out),
            Op::Punsubscribe => self.unsubscribe(Kind::Pattern, session, cx, argv, out),
            Op::Publish => self.publish(session, cx, argv, out),
            Op::Reset => self.reset(session, cx, out),
            Op::Hello => self.hello(session, argv, out),
            _ => unreachable!("{} does not work on the session", command.name),
        }
    }

    /// Writes what `prepare` kept for this frame (preparing it now if the
    /// caller skipped `reply_reserve`).
    fn write_prepared(&self, session: &Session, frame: &[u8], out: &mut Out<'_, '_>) {
        if self.pending.borrow().kind == Prepared::Nothing {
            self.prepare(session, frame);
        }
        let mut pending = self.pending.borrow_mut();
        let kind = std::mem::take(&mut pending.kind);
        match kind {
            Prepared::Text if pending.text.bytes.len() <= out.room() => {
                out.put(&pending.text.bytes);
            }
            Prepared::Values => {
                let many = pending.many;
                let needed = pending
                    .values
                    .iter()
                    .map(|v| v.as_deref().map_or(reply::NIL.len(), bulk_len))
                    .sum::<usize>()
                    + if many {
                        array_header_len(pending.values.len())
                    } else {
                        0
                    };
                if needed > out.room() {
                    pending.values.clear();
                    return out.put(TOO_LARGE);
                }
                if many {
                    out.array(pending.values.len());
                }
                for value in pending.values.drain(..) {
                    match value {
                        Some(value) => out.bulk(&value),
                        None => out.null(),
                    }
                }
            }
            _ => out.put(TOO_LARGE),
        }
    }

    /// The next pseudo-random number (xorshift64).
    fn next_random(&self) -> u64 {
        let mut x = self.random.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.set(x);
        x
    }
}

impl Service for Kv {
    type Session = Session;

    fn open(&mut self, opened: &Opened, _: &mut Context<'_>) -> Session {
        Session {
            handle: Some(opened.handle),
            ..Session::default()
        }
    }

    fn reply_reserve(&self, session: &Session, frame: &[u8]) -> usize {
        self.prepare(session, frame)
    }

    fn call(
        &mut self,
        session: &mut Session,
        cx: &mut Context<'_>,
        frame: &[u8],
        reply: &mut Reply<'_>,
    ) {
        self.calls.set(self.calls.get().wrapping_add(1));
        let mut out = Out {
            reply,
            close: false,
            resp3: session.resp3,
        };
        let argv = Argv::parse(frame);
        let argv = argv.get();
        if argv.is_empty() {
            return;
        }
        let mut scratch = Text::default();
        scratch.reset(SMALL_REPLY);
        match Self::resolve(session, argv, &mut scratch) {
            Some(command) if works_on_session(command.op) => {
                self.run_session(session, cx, command, argv, &mut out)
            }
            Some(command) if !rendered_ahead(command.op) => self.run(command, argv, &mut out),
            _ => self.write_prepared(session, frame, &mut out),
        }
        self.pending.borrow_mut().kind = Prepared::Nothing;
        if out.close {
            out.reply.close_after();
        }
    }

    fn deliver_reserve(&self, session: &Session, message: &Message<'_>) -> usize {
        pubsub::deliver_reserve(session, message)
    }

    fn deliver(&mut self, session: &mut Session, message: &Message<'_>, reply: &mut Reply<'_>) {
        let mut out = Out {
            reply,
            close: false,
            resp3: session.resp3,
        };
        pubsub::deliver(&mut self.frames, session, message, &mut out);
    }

    /// No ping at all: a Redis client would read a `PING` array as the
    /// reply to its next command. With `--heartbeat-interval` a Redis
    /// client must send something itself (client libraries' idle `PING`)
    /// within the interval and the timeout, or it is closed.
    fn heartbeat(&mut self, _: &mut Session, _: &mut Reply<'_>) -> bool {
        true
    }

    fn tick(&mut self) -> Option<Duration> {
        // This shard's share: stripes shard, shard + threads, ...
        let deadline = Instant::now() + EXPIRE_BUDGET;
        let share = (self.shard..self.store.stripes()).step_by(self.threads);
        let late = self.store.expire_cycle(share, deadline);
        Some(if late { EXPIRE_TICK_BUSY } else { EXPIRE_TICK })
    }
}

/// Whether `op` works on the connection's session (its protocol, its
/// subscriptions), in `call`.
fn works_on_session(op: Op) -> bool {
    matches!(
        op,
        Op::Subscribe
            | Op::Psubscribe
            | Op::Unsubscribe
            | Op::Punsubscribe
            | Op::Publish
            | Op::Reset
            | Op::Hello
    )
}

/// Whether `op`'s reply is made by `reply_reserve` (reads whose size
/// depends on the data or the arguments).
fn rendered_ahead(op: Op) -> bool {
    matches!(
        op,
        Op::Get
            | Op::Mget
            | Op::Getrange
            | Op::Substr
            | Op::Lcs
            | Op::Keys
            | Op::Scan
            | Op::Randomkey
            | Op::Info
            | Op::Pubsub
            | Op::Config
            | Op::Command
            | Op::Echo
            | Op::Ping
    )
}

/// `-ERR unknown command '<name>', with args beginning with: '<a>' ...`,
/// as Redis words and cuts it (the name to 128 bytes, the arguments while
/// under 128 bytes in all, each at a NUL as C prints it).
fn unknown_command(argv: &[&[u8]], out: &mut dyn Sink) {
    let mut args: Vec<u8> = Vec::new();
    for arg in &argv[1..] {
        if args.len() >= 128 {
            break;
        }
        let arg = c_str(arg);
        let take = arg.len().min(128 - args.len());
        args.push(b'\'');
        args.extend_from_slice(&arg[..take]);
        args.extend_from_slice(b"' ");
    }
    let name = c_str(argv[0]);
    let mut text = b"unknown command '".to_vec();
    text.extend_from_slice(&name[..name.len().min(128)]);
    text.extend_from_slice(b"', with args beginning with: ");
    text.extend_from_slice(&args);
    out.error(&text);
}
