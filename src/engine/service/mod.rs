//! The application interface: a [`Service`] gets one complete frame and a
//! [`Reply`] to write into, never a socket.
//!
//! A service may also answer later: instead of writing, it asks the engine
//! to call upstream servers ([`Reply::call`]); once every call has an
//! outcome the engine hands them to [`Service::answer`], which writes the
//! reply. Replies keep the order of the client's requests either way.

mod context;
pub(crate) mod host;

use std::io;
use std::net::SocketAddr;

pub use self::context::Context;
pub use crate::engine::metrics::CloseReason;
pub use crate::engine::push::{Handle, JoinError, Message, PushError, Pusher};

/// The application. One instance per shard, called on that shard's thread.
///
/// # Implementer notes
///
/// - Each connection has a [`Service::Session`], made by
///   [`Service::open`] when it is accepted, handed to every call for it,
///   and given back to [`Service::close`] when it ends (then dropped): the
///   engine keeps it in the connection's slot, so per-connection state
///   needs no table of the service's own.
/// - `call` gets exactly one complete frame (its payload, without header or
///   delimiter) and writes at most `reply_reserve(frame)` payload bytes
///   into the reply. The engine frames the reply for the protocol (length
///   header, newline) itself.
/// - The engine calls `call` only once the output ring has room for
///   `reply_reserve` bytes plus the framing, so a reply never waits for the
///   socket. Writing more than reserved is a bug in the service: the
///   connection is closed with reason `output_overflow`.
/// - A panic in `open`, `call` or `deliver` closes only that connection
///   (reason `panic`); the shard and every other connection go on. Keep
///   per-shard state consistent across a panic or do not keep it.
/// - No method may block: they run on the event loop.
/// - The engine speaks first through [`Context`]: [`Context::push`] to any
///   connection's [`Handle`], [`Context::join`] a group and
///   [`Context::publish`] to one; from other threads through a
///   [`Pusher`]. Each pushed message reaches its connection's service in
///   [`Service::deliver`], which writes it (the default: as it came).
/// - A service that calls upstreams ([`Reply::call`], only when the engine
///   was given upstreams) writes nothing in that `call`; the engine later
///   calls [`Service::answer_reserve`] and [`Service::answer`] with the
///   outcomes, under the same rules as `reply_reserve` and `call`. An
///   upstream reply is framed by the client's protocol (a RESP reply, a
///   line, a length-prefixed frame), see [`crate::engine::codec::Codec::decode_reply`].
pub trait Service: Send + 'static {
    /// Per-connection state (`()` for none).
    type Session: Default + Send + 'static;

    /// A connection was accepted: make its session. It may join groups
    /// and push already. The default: `Session::default()`.
    fn open(&mut self, opened: &Opened, cx: &mut Context<'_>) -> Self::Session {
        let _ = (opened, cx);
        Self::Session::default()
    }

    /// A connection ended (it has already left its groups): its session
    /// comes back one last time.
    fn close(&mut self, session: Self::Session, closed: &Closed) {
        let _ = (session, closed);
    }

    /// The most payload bytes the reply to `frame` may take. It sees the
    /// frame so that a reserve can be exact (a GET can look up its value's
    /// length) rather than the worst case, which keeps pipelined replies
    /// packed in the output ring. More than the ring capacity minus the
    /// protocol framing can never be served: the connection is closed with
    /// reason `output_overflow`.
    fn reply_reserve(&self, session: &Self::Session, frame: &[u8]) -> usize;

    /// Serves one frame.
    fn call(
        &mut self,
        session: &mut Self::Session,
        cx: &mut Context<'_>,
        frame: &[u8],
        reply: &mut Reply<'_>,
    );

    /// The most payload bytes [`Service::deliver`] writes for `message`.
    fn deliver_reserve(&self, session: &Self::Session, message: &Message<'_>) -> usize {
        let _ = session;
        message.bytes.len()
    }

    /// Writes a message pushed to this connection (framed by the engine as
    /// a reply is), within `deliver_reserve`. Writing nothing skips it
    /// (a chat room skips the sender's own lines). The default writes the
    /// bytes as they came.
    fn deliver(&mut self, session: &mut Self::Session, message: &Message<'_>, out: &mut Reply<'_>) {
        let _ = session;
        let _ = out.put(message.bytes);
    }

    /// Writes the heartbeat ping for a connection silent for
    /// `--heartbeat-interval` (at most [`HEARTBEAT_RESERVE`] bytes);
    /// returns false to send the protocol's own (RESP: `PING` as a
    /// command array; line: a `PING` line; length-prefixed: an empty
    /// frame; echo: nothing).
    fn heartbeat(&mut self, session: &mut Self::Session, out: &mut Reply<'_>) -> bool {
        let _ = (session, out);
        false
    }

    /// Periodic work on the shard's loop (the key-value service expires
    /// keys here). Called on the shard's first turn, then again once the
    /// returned delay has passed: on the first turn after it (the loop
    /// wakes for it when idle, and a busy loop may run it a little late).
    /// `None` asks for no more ticks. Like `call`, it must not block; a
    /// panic in it is counted in `handler_panics` and ends the ticks.
    /// (To push from here, keep a [`Pusher`] from the [`ServiceContext`].)
    fn tick(&mut self) -> Option<std::time::Duration> {
        None
    }

    /// The most payload bytes the reply written by [`Service::answer`] may
    /// take. The default fits a reply that forwards every upstream reply
    /// as it came, or an error of a few dozen bytes instead of any of them.
    fn answer_reserve(&self, answer: &Answer<'_>) -> usize {
        answer.replies_len() + 64 * answer.calls()
    }

    /// Writes the reply to a frame whose `call` made upstream calls, once
    /// each has an outcome. The default writes each upstream's reply in
    /// turn and nothing for a failed call (services that make calls are
    /// expected to say what a failure looks like in their protocol).
    fn answer(&mut self, answer: &Answer<'_>, reply: &mut Reply<'_>) {
        for call in 0..answer.calls() {
            if let Ok(bytes) = answer.outcome(call) {
                let _ = reply.put(bytes);
            }
        }
    }

    /// Whether an upstream's `reply` to a call says the request belongs to
    /// another upstream (Redis Cluster's `-MOVED` and `-ASK`): the engine
    /// then sends the same request bytes there, `before` first (whose own
    /// reply it drops), at most [`REDIRECTS_MAX`] times, and the call's
    /// outcome is the last upstream's reply. Asked only with
    /// `Settings::redirects` on (the engine keeps each request's bytes
    /// until its reply for this). The default: never.
    fn redirect(&mut self, reply: &[u8]) -> Option<Redirect> {
        let _ = reply;
        None
    }

    /// A reload changed the upstreams (`--upstream`): from the next call,
    /// [`Reply::call`] may name only the `slot`s of `upstreams` (in the
    /// order of the settings). A removed upstream's slot is not reused
    /// for another; its calls already made are answered as usual. The
    /// default ignores it (a service that makes no calls).
    fn upstreams(&mut self, upstreams: &[Upstream<'_>]) {
        let _ = upstreams;
    }
}

/// An upstream a service may call: the index [`Reply::call`] takes, and
/// its name as written in the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upstream<'a> {
    /// What [`Reply::call`] takes to call it.
    pub slot: usize,
    /// Its name as written (`host:port`).
    pub name: &'a str,
    /// The name of the upstream it replicates (`--upstream-replica`), if
    /// any: calls that only read may go to it instead.
    pub primary: Option<&'a str>,
}

impl Upstream<'_> {
    /// The upstreams of `config` as a server starts with them: upstream
    /// `i` in slot `i`, each with the primary it replicates, if any.
    pub fn of_config(config: &crate::config::Config) -> Vec<Upstream<'_>> {
        (config.upstreams.iter().enumerate())
            .map(|(slot, name)| Upstream {
                slot,
                name,
                primary: config.primary_of(name),
            })
            .collect()
    }
}

/// Which of an upstream's connections a call goes on ([`Reply::call_in`]):
/// each dialect has connections of its own (`--upstream-conns` per
/// upstream per shard, made when first needed, so a dialect never called
/// costs no connection), greeted so that the upstream answers in it. A
/// service whose clients speak different protocols sends each client's
/// calls in its dialect and forwards the replies as they come.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// As the upstream speaks unasked (RESP2 for a Redis server). Health
    /// checks go on these connections.
    #[default]
    Resp2,
    /// RESP3: the connections send `HELLO 3` (after `AUTH`, before
    /// `READONLY`) when they connect, so a Redis server answers them in
    /// RESP3. Only with `--protocol resp`; otherwise they are greeted as
    /// [`Dialect::Resp2`]'s are.
    Resp3,
}

impl Dialect {
    /// Every dialect, in [`Dialect::index`] order.
    pub const ALL: [Dialect; 2] = [Dialect::Resp2, Dialect::Resp3];

    /// A dense index for per-dialect tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where a redirected request goes ([`Service::redirect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The upstream index.
    pub upstream: usize,
    /// Sent first on the same connection, its reply dropped (`ASKING`), or
    /// empty.
    pub before: &'static [u8],
}

/// How many times one call may be redirected; past it the redirecting
/// reply is its outcome (a loop between two upstreams ends).
pub const REDIRECTS_MAX: u8 = 5;

/// The most bytes a [`Service::heartbeat`] ping may take.
pub const HEARTBEAT_RESERVE: usize = 64;

/// A connection just accepted.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    /// Its handle: keep it to push to it.
    pub handle: Handle,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The address it reached us on.
    pub local: SocketAddr,
}

/// A connection that ended.
#[derive(Clone, Copy, Debug)]
pub struct Closed {
    /// Its handle (now stale).
    pub handle: Handle,
    /// Why it closed (the `reason` it is counted under).
    pub reason: CloseReason,
}

/// Why an upstream call got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// Refused at once, nothing was sent: the upstream's circuit breaker is
    /// open, or its connections and wait queue are full, or the request is
    /// larger than a connection ring.
    Unavailable,
    /// The connection the request waited for could not be made.
    Connect,
    /// No reply within `--upstream-timeout`.
    Timeout,
    /// The connection broke before the reply came (reset, closed, or the
    /// upstream sent bytes that are not a reply).
    Reset,
    /// The reply is larger than a connection ring (`--buffer`), or the
    /// replies of a split command together are.
    TooLarge,
    /// The reply had to wait (it came before the client could take it)
    /// and the shard's awaited replies already hold `--max-pending-bytes`.
    NoMemory,
}

impl CallError {
    /// Every kind, in [`CallError::index`] order.
    pub const ALL: [CallError; 6] = [
        CallError::Unavailable,
        CallError::Connect,
        CallError::Timeout,
        CallError::Reset,
        CallError::TooLarge,
        CallError::NoMemory,
    ];

    /// A dense index for per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short name: `unavailable`, `connect`, `timeout`, `reset`,
    /// `too_large`, `no_memory`.
    pub fn name(self) -> &'static str {
        match self {
            CallError::Unavailable => "unavailable",
            CallError::Connect => "connect",
            CallError::Timeout => "timeout",
            CallError::Reset => "reset",
            CallError::TooLarge => "too_large",
            CallError::NoMemory => "no_memory",
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallError::Unavailable => "upstream unavailable",
            CallError::Connect => "upstream connection failed",
            CallError::Timeout => "upstream timed out",
            CallError::Reset => "upstream connection lost",
            CallError::TooLarge => "upstream reply too large",
            CallError::NoMemory => "no memory left for awaited replies",
        })
    }
}

impl std::error::Error for CallError {}

/// The outcome of one upstream call, as [`Answer`] stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No outcome yet.
    Waiting,
    /// The reply is `bytes[start..start + len]` of the answer's store.
    Reply {
        /// Where it starts.
        start: u32,
        /// How long it is.
        len: u32,
    },
    /// The call failed.
    Failed(CallError),
}

/// What [`Service::answer`] gets: the outcome of each call the frame's
/// `call` made, in the order it made them, and the bytes it kept
/// ([`Reply::keep`]).
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    kept: &'a [u8],
    outcomes: Outcomes<'a>,
}

#[derive(Clone, Copy, Debug)]
enum Outcomes<'a> {
    /// One call, its reply still where it arrived.
    One(Result<&'a [u8], CallError>),
    /// Replies stored in `store` as `list` says.
    Stored {
        store: &'a [u8],
        list: &'a [Outcome],
    },
}

impl<'a> Answer<'a> {
    /// The answer to a frame that made one call, with nothing kept.
    pub fn one(outcome: Result<&'a [u8], CallError>) -> Answer<'a> {
        Answer {
            kept: &[],
            outcomes: Outcomes::One(outcome),
        }
    }

    /// The answer whose replies lie in `store` as `list` says, with
    /// `store[..kept]` the bytes kept.
    pub fn stored(store: &'a [u8], kept: usize, list: &'a [Outcome]) -> Answer<'a> {
        Answer {
            kept: &store[..kept],
            outcomes: Outcomes::Stored { store, list },
        }
    }

    /// How many calls the frame made.
    pub fn calls(&self) -> usize {
        match self.outcomes {
            Outcomes::One(_) => 1,
            Outcomes::Stored { list, .. } => list.len(),
        }
    }

    /// The reply to call `index` (numbered from 0 in the order made), or
    /// why there is none.
    pub fn outcome(&self, index: usize) -> Result<&'a [u8], CallError> {
        match self.outcomes {
            Outcomes::One(outcome) => {
                assert_eq!(index, 0, "one call made");
                outcome
            }
            Outcomes::Stored { store, list } => match list[index] {
                Outcome::Reply { start, len } => {
                    Ok(&store[start as usize..start as usize + len as usize])
                }
                Outcome::Failed(error) => Err(error),
                Outcome::Waiting => unreachable!("answered before every outcome was in"),
            },
        }
    }

    /// The bytes of every reply together (failed calls count 0).
    pub fn replies_len(&self) -> usize {
        (0..self.calls())
            .map(|call| self.outcome(call).map_or(0, <[u8]>::len))
            .sum()
    }

    /// What `call` kept with [`Reply::keep`] (empty if nothing).
    pub fn kept(&self) -> &'a [u8] {
        self.kept
    }
}

/// The engine's side of [`Reply::call`] and [`Reply::keep`]: where calls go.
pub(crate) trait Caller {
    /// Sends (or queues) call number `index` of this frame to `upstream`,
    /// on a connection of `dialect`.
    fn call(&mut self, index: usize, upstream: usize, dialect: Dialect, request: &[u8]);
    /// Keeps `bytes` for the answer, if the bounds allow.
    fn keep(&mut self, bytes: &[u8]) -> Result<(), CallError>;
    /// Whether a call to `upstream` would be sent now (see
    /// [`Reply::available`]).
    fn available(&self, upstream: usize) -> bool;
}

/// The most calls one frame may make (a split command makes one per
/// upstream it touches, at most `proxy::hash::UPSTREAMS_MAX`).
pub const CALLS_MAX: usize = 4096;

/// Where a service instance runs, for the factory that builds it: one
/// instance per shard.
pub struct ServiceContext<'a> {
    /// The shard's index, from 0.
    pub shard: usize,
    /// The validated settings (threads and `max_conns` resolved).
    pub config: &'a crate::config::Config,
    /// The engine's counters, for services that report them (INFO, say).
    pub registry: &'a std::sync::Arc<crate::engine::metrics::Registry>,
    /// Pushes from anywhere (clone it for a thread or for [`Service::tick`]).
    pub pusher: &'a Pusher,
    /// Adds upstreams while the server runs, when it reloads (see
    /// [`UpstreamAdder`]).
    pub upstream_adder: Option<UpstreamAdder>,
}

/// Adds upstreams to a running server: they take free slots of
/// `--upstream-slots`, every shard makes their pools at its next turn and
/// then tells its service ([`Service::upstreams`]) before any call may
/// name them. Cloneable, for a thread of the service's own.
#[derive(Clone)]
pub struct UpstreamAdder(pub(crate) std::sync::Arc<crate::engine::reload::Reloader>);

impl UpstreamAdder {
    /// Adds `upstreams` (name and address each); `Err` says why not (no
    /// slot left), nothing added then.
    pub fn add(&self, upstreams: &[(String, std::net::SocketAddr)]) -> Result<(), String> {
        self.0.add_upstreams(upstreams).map(drop)
    }
}

/// Where a service writes its reply: a bounded window of the connection's
/// output ring (or, when earlier replies are still awaited, of a buffer
/// the reply waits in), and the way to call upstreams instead.
pub struct Reply<'a> {
    sink: Sink<'a>,
    limit: usize,
    written: usize,
    overflowed: bool,
    close: bool,
    caller: Option<&'a mut dyn Caller>,
    calls: usize,
    kept: bool,
    silent: bool,
    fence: bool,
}

/// Where reply bytes go.
enum Sink<'a> {
    Ring(&'a mut crate::engine::buffer::Ring),
    Buffer(&'a mut Vec<u8>),
}

/// The reply went past its `reply_reserve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reply larger than its reply_reserve")
    }
}

impl std::error::Error for Overflow {}

impl<'a> Reply<'a> {
    /// A reply window of `limit` bytes at the end of `ring`. The caller
    /// guarantees `ring.free() >= limit`.
    pub(crate) fn new(ring: &'a mut crate::engine::buffer::Ring, limit: usize) -> Reply<'a> {
        debug_assert!(ring.free() >= limit);
        Reply {
            sink: Sink::Ring(ring),
            limit,
            written: 0,
            overflowed: false,
            close: false,
            caller: None,
            calls: 0,
            kept: false,
            silent: false,
            fence: false,
        }
    }

    /// A reply window of `limit` bytes appended to `buffer`.
    pub(crate) fn buffered(buffer: &'a mut Vec<u8>, limit: usize) -> Reply<'a> {
        Reply {
            sink: Sink::Buffer(buffer),
            limit,
            written: 0,
            overflowed: false,
            close: false,
            caller: None,
            calls: 0,
            kept: false,
            silent: false,
            fence: false,
        }
    }

    /// Lets this reply make upstream calls through `caller`.
    pub(crate) fn with_caller(mut self, caller: &'a mut dyn Caller) -> Reply<'a> {
        self.caller = Some(caller);
        self
    }

    /// Asks the engine to send `request` to upstream number `upstream`
    /// (its index in the upstreams the engine was given); the reply to the
    /// frame is then written by [`Service::answer`] once every call made
    /// for it has an outcome. A call that cannot be sent now (breaker
    /// open, pool and queue full) has its outcome at once:
    /// [`CallError::Unavailable`].
    ///
    /// A reply either writes bytes or makes calls, not both; calling
    /// without upstreams, past [`CALLS_MAX`], or after writing is a bug in
    /// the service and closes the connection (`output_overflow`).
    pub fn call(&mut self, upstream: usize, request: &[u8]) {
        self.call_in(Dialect::Resp2, upstream, request);
    }

    /// [`Reply::call`] on `upstream`'s connections of `dialect` (a client
    /// that asked for RESP3 gets its replies in RESP3 from connections
    /// that speak it). A client's calls in one dialect to one upstream
    /// stay in order on one connection; see [`Reply::fence`] for a client
    /// that changes dialect.
    pub fn call_in(&mut self, dialect: Dialect, upstream: usize, request: &[u8]) {
        match self.caller.as_mut() {
            Some(caller) if self.written == 0 && self.calls < CALLS_MAX => {
                caller.call(self.calls, upstream, dialect, request);
                self.calls += 1;
            }
            _ => self.overflowed = true,
        }
    }

    /// Serves no frame of this connection after this one until every
    /// reply up to this one is written: for a frame after which the
    /// connection's calls go elsewhere (another [`Dialect`], so other
    /// connections), whose requests must not overtake the ones made
    /// before it. Reading pauses meanwhile, as for `--max-pending`.
    pub fn fence(&mut self) {
        self.fence = true;
    }

    pub(crate) fn fenced(&self) -> bool {
        self.fence
    }

    /// Whether a call to `upstream` would be sent now rather than fail
    /// fast: its breaker is closed (health checks and calls find it up) and
    /// no failed connect is backing off. For a service with a choice of
    /// upstreams (a replica or its primary); false without upstreams.
    pub fn available(&self, upstream: usize) -> bool {
        self.caller
            .as_ref()
            .is_some_and(|caller| caller.available(upstream))
    }

    /// Keeps `bytes` for [`Service::answer`] ([`Answer::kept`]), such as
    /// what the answer needs to merge several replies; a second keep
    /// replaces the first. Keep first, then call: kept bytes are held
    /// until the answer is written, within the engine's bounds on awaited
    /// replies (`--buffer` for one, `--max-pending-bytes` for a shard), and
    /// past them the keep fails (`TooLarge`, `NoMemory`): then make no
    /// call and write an error instead. A reply that kept must make at
    /// least one call; keeping without upstreams or after writing is a bug
    /// in the service and closes the connection (`output_overflow`).
    pub fn keep(&mut self, bytes: &[u8]) -> Result<(), CallError> {
        match self.caller.as_mut() {
            Some(caller) if self.written == 0 => {
                caller.keep(bytes)?;
                self.kept = true;
                Ok(())
            }
            _ => {
                self.overflowed = true;
                Err(CallError::Unavailable)
            }
        }
    }

    /// Upstream calls made so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Appends `bytes` to the reply, all or nothing. Past the reserve it
    /// writes nothing and returns `Err(Overflow)`; the connection will be
    /// closed with reason `output_overflow`.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        if self.overflowed || self.calls > 0 || bytes.len() > self.limit - self.written {
            self.overflowed = true;
            return Err(Overflow);
        }
        match &mut self.sink {
            Sink::Ring(ring) => {
                let taken = ring.push(bytes);
                debug_assert_eq!(taken, bytes.len());
            }
            Sink::Buffer(buffer) => buffer.extend_from_slice(bytes),
        }
        self.written += bytes.len();
        Ok(())
    }

    /// Bytes still allowed.
    pub fn remaining(&self) -> usize {
        self.limit - self.written
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.written
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Sends no reply at all to this frame (where the protocol would
    /// otherwise frame an empty one: an empty line, a zero-length frame),
    /// for frames that only push or publish. Ignored once bytes are
    /// written.
    pub fn silence(&mut self) {
        self.silent = true;
    }

    pub(crate) fn is_silent(&self) -> bool {
        self.silent && self.written == 0
    }

    /// Close the connection once this reply (and everything before it) has
    /// been flushed; frames after this one are not served.
    pub fn close_after(&mut self) {
        self.close = true;
    }

    pub(crate) fn overflowed(&self) -> bool {
        // Kept bytes wait for an answer that only calls bring.
        self.overflowed || (self.kept && self.calls == 0)
    }

    pub(crate) fn wants_close(&self) -> bool {
        self.close
    }
}

impl io::Write for Reply<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.put(buf)
            .map(|()| buf.len())
            .map_err(|e| io::Error::new(io::ErrorKind::WriteZero, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
