//! Pushed messages on their last leg: from a service call's outbox or the
//! shard's mailbox into the receiving connections' output rings (or, for a
//! slow consumer, into its backlog), sessions opened and closed, and
//! heartbeat pings. The connections written to are queued, so the same
//! turn flushes them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::core::Core;
use super::memory::Memory;
use crate::config::{Config, SlowConsumer};
use crate::engine::buffer::{Pool, Ring};
use crate::engine::codec::Codec;
use crate::engine::conn::{Backlog, Conn};
use crate::engine::driver::{Driver, Link, Token};
use crate::engine::metrics::{CloseReason, DropReason, ShardMetrics};
use crate::engine::push::groups::Groups;
use crate::engine::push::mailbox::To;
use crate::engine::push::outbox::{Outbox, Target};
use crate::engine::push::{Handle, Hub, Message, Pusher};
use crate::engine::service::host::Handler;
use crate::engine::service::{Closed, Context, HEARTBEAT_RESERVE, Opened, Reply};

/// The shard's half of push.
pub struct Push {
    /// The process-wide half.
    pub hub: Arc<Hub>,
    /// Handed to service calls.
    pub pusher: Pusher,
    /// This shard's groups.
    pub groups: Groups,
    /// The current call's pushes to this shard's connections.
    pub outbox: Outbox,
    /// This shard's index.
    pub shard: usize,
    policy: SlowConsumer,
    backlog_max: usize,
    /// Scratch: the members a group message goes to.
    members: Vec<Token>,
}

impl Push {
    /// The push state of shard `shard`.
    pub fn new(hub: Arc<Hub>, shard: usize, config: &Config) -> Push {
        Push {
            pusher: Pusher::new(hub.clone()),
            groups: Groups::new(shard, config.max_memberships),
            outbox: Outbox::new(config.mailbox_bytes),
            hub,
            shard,
            policy: config.slow_consumer,
            backlog_max: config.slow_consumer_bytes,
            members: Vec::new(),
        }
    }

    /// A reload's slow-consumer settings: for the next push.
    pub fn set_slow_consumer(&mut self, policy: SlowConsumer, backlog_max: usize) {
        self.policy = policy;
        self.backlog_max = backlog_max;
    }

    /// Whether a call joined or left a group since last asked.
    pub fn take_changed(&mut self) -> bool {
        self.groups.take_changed()
    }

    /// The context of a call for connection `token`.
    pub fn context(&mut self, token: Token) -> Context<'_> {
        let this = Handle::new(self.shard, token);
        Context::new(
            this,
            &self.hub,
            &self.pusher,
            &mut self.groups,
            &mut self.outbox,
        )
    }
}

/// What writing one message to one connection came to.
enum Written {
    /// Into the output ring or the backlog (or skipped by the service).
    Yes,
    /// Not written, for this reason (counted).
    Dropped(DropReason),
    /// The connection must close (counted when it does).
    Close(CloseReason),
}

impl Core {
    /// A connection was admitted: its handle goes live and the service
    /// makes its session. A panic in `open` closes it.
    pub(super) fn open_session<I: Driver>(&mut self, io: &mut I, token: Token) {
        let conn = self.conns.get(token).expect("just admitted");
        let (Ok(peer), Ok(local)) = (conn.link.socket.peer_addr(), conn.link.socket.local_addr())
        else {
            // Reset before we got here.
            self.close(io, token, CloseReason::Reset);
            return;
        };
        self.push.hub.opened(self.push.shard, token);
        let opened = Opened {
            handle: Handle::new(self.push.shard, token),
            peer,
            local,
        };
        let service = &mut self.responder.service;
        let mut cx = self.push.context(token);
        let result = catch_unwind(AssertUnwindSafe(|| service.open(&opened, &mut cx)));
        self.note_groups(token);
        self.apply_outbox();
        if result.is_err() {
            self.metrics.handler_panics.inc();
            self.close(io, token, CloseReason::Panic);
        }
    }

    /// A connection closed: its handle goes stale, it leaves its groups,
    /// and its session goes back to the service.
    pub(super) fn close_session(&mut self, token: Token, reason: CloseReason) {
        let push = &mut self.push;
        push.hub.closed(push.shard, token);
        push.groups.leave_all(push.hub.directory(), token);
        self.metrics.groups.set(push.groups.len() as u64);
        let closed = Closed {
            handle: Handle::new(push.shard, token),
            reason,
        };
        let service = &mut self.responder.service;
        if catch_unwind(AssertUnwindSafe(|| service.close(&closed))).is_err() {
            self.metrics.handler_panics.inc();
        }
    }

    /// After a call for `token`: whether it is in a group now (the idle
    /// timeout spares members), and the group gauge.
    pub(super) fn note_groups(&mut self, token: Token) {
        let grouped = self.push.groups.count(token) > 0;
        if let Some(conn) = self.conns.get_mut(token) {
            conn.grouped = grouped;
        }
        self.metrics.groups.set(self.push.groups.len() as u64);
    }

    /// Writes the pushes the last call made to this shard's connections.
    pub(super) fn apply_outbox(&mut self) {
        if self.push.outbox.is_empty() {
            return;
        }
        let (mut writer, push) = self.writer();
        let held = push.outbox.take();
        for one in &held {
            let bytes = push.outbox.bytes(one.message.clone());
            match &one.target {
                Target::One(token) => {
                    writer.write(
                        *token,
                        &Message {
                            group: None,
                            bytes,
                            from: one.from,
                        },
                    );
                }
                Target::Groups(names) => {
                    for group in push.outbox.names(names.clone()) {
                        let message = Message {
                            group: Some(group),
                            bytes,
                            from: one.from,
                        };
                        writer.write_group(&push.groups, &mut push.members, &message);
                    }
                }
            }
        }
        push.outbox.restore(held);
    }

    /// Writes what other shards and threads mailed this shard (at most
    /// one mailbox's worth per turn, so a flood cannot starve the loop).
    pub(super) fn drain_mailbox(&mut self) {
        let (mut writer, push) = self.writer();
        let mailbox = push.hub.mailbox(push.shard);
        mailbox.rearm();
        for _ in 0..push.hub.limits().mailbox {
            let Some(envelope) = mailbox.take() else {
                break;
            };
            let bytes = &envelope.bytes[..];
            match &envelope.to {
                To::One(token) => {
                    let message = Message {
                        group: None,
                        bytes,
                        from: envelope.from,
                    };
                    writer.write(*token, &message);
                }
                To::Groups(names) => {
                    for group in names.iter() {
                        let message = Message {
                            group: Some(group),
                            bytes,
                            from: envelope.from,
                        };
                        writer.write_group(&push.groups, &mut push.members, &message);
                    }
                }
            }
        }
    }

    /// Whether mail waits (the loop then does not sleep).
    pub(super) fn mail_waiting(&self) -> bool {
        !self.push.hub.mailbox(self.push.shard).is_empty()
    }

    /// The parts a delivery writes through, apart from the push state.
    fn writer(&mut self) -> (Writer<'_>, &mut Push) {
        let writer = Writer {
            conns: &mut self.conns,
            pool: &mut self.pool,
            memory: &mut self.memory,
            codec: &self.responder.codec,
            service: self.responder.service.as_mut(),
            metrics: &self.metrics,
            queue: &mut self.queue,
            doomed: &mut self.doomed,
            policy: self.push.policy,
            backlog_max: self.push.backlog_max,
        };
        (writer, &mut self.push)
    }

    /// Sends `token` its heartbeat ping (the service's, or the protocol's),
    /// if its output ring has room now; the ping's deadline starts anyway.
    pub(super) fn ping(&mut self, token: Token) {
        let (mut writer, _) = self.writer();
        writer.ping(token);
    }
}

/// Writes pushed messages into connections.
struct Writer<'a> {
    conns: &'a mut crate::engine::conn::Table<Conn>,
    pool: &'a mut Pool,
    memory: &'a mut Memory,
    codec: &'a Codec,
    service: &'a mut dyn Handler,
    metrics: &'a ShardMetrics,
    queue: &'a mut std::collections::VecDeque<Token>,
    doomed: &'a mut Vec<(Token, CloseReason)>,
    policy: SlowConsumer,
    backlog_max: usize,
}

impl Writer<'_> {
    /// Writes `message` to every member of its group on this shard.
    fn write_group(&mut self, groups: &Groups, members: &mut Vec<Token>, message: &Message<'_>) {
        members.clear();
        groups.members(message.group.expect("a group message"), members);
        for &member in members.iter() {
            self.write(member, message);
        }
    }

    /// Writes `message` to `token` and counts the outcome; queues the
    /// connection so that this turn flushes it.
    fn write(&mut self, token: Token, message: &Message<'_>) {
        match self.try_write(token, message) {
            Written::Yes => self.metrics.pushed.inc(),
            Written::Dropped(reason) => self.metrics.push_dropped[reason.index()].inc(),
            Written::Close(reason) => {
                if reason == CloseReason::Panic {
                    self.metrics.handler_panics.inc();
                }
                self.doomed.push((token, reason));
            }
        }
    }

    fn try_write(&mut self, token: Token, message: &Message<'_>) -> Written {
        let Some(conn) = self.conns.get_mut(token) else {
            return Written::Dropped(DropReason::Gone);
        };
        if !conn.state.serves() {
            return Written::Dropped(DropReason::Gone);
        }
        let service = &mut *self.service;
        let Ok(reserve) =
            catch_unwind(AssertUnwindSafe(|| service.deliver_reserve(token, message)))
        else {
            return Written::Close(CloseReason::Panic);
        };
        let need = reserve.saturating_add(self.codec.protocol().overhead());
        if need > self.pool.ring_capacity() {
            return Written::Dropped(DropReason::TooLarge);
        }
        let output = output_ring(&mut conn.link, self.pool, self.memory, self.metrics);
        let behind = conn.backlog.is_some() || output.free() < need;
        let queued = conn.backlog.as_ref().map_or(0, |backlog| backlog.len);
        if behind && queued + need > self.backlog_max {
            return match self.policy {
                SlowConsumer::Close => Written::Close(CloseReason::SlowConsumer),
                SlowConsumer::Drop => Written::Dropped(DropReason::SlowConsumer),
            };
        }
        let ring = if behind {
            let backlog = conn.backlog.get_or_insert_with(Box::default);
            backlog_ring(backlog, self.pool, need)
        } else {
            output
        };
        let before = ring.len();
        let write = |reply: &mut Reply<'_>| service.deliver(token, message, reply);
        let written = write_framed(self.codec, ring, reserve, true, write);
        let grown = ring.len() - before;
        if let Some(backlog) = conn.backlog.as_mut() {
            backlog.len += grown;
            let queued = self.metrics.push_queued_bytes.get();
            self.metrics.push_queued_bytes.set(queued + grown as u64);
        }
        match written {
            Ok(()) => {
                queue(conn, token, self.queue);
                Written::Yes
            }
            Err(reason) => Written::Close(reason),
        }
    }

    /// Writes `token`'s heartbeat ping.
    fn ping(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        conn.pinged = true;
        let output = output_ring(&mut conn.link, self.pool, self.memory, self.metrics);
        let need = HEARTBEAT_RESERVE + self.codec.protocol().overhead();
        if conn.backlog.is_some() || output.free() < need {
            // Its output is stuck: the write timeout will tell.
            return;
        }
        let (service, codec) = (&mut *self.service, self.codec);
        let written = write_framed(codec, output, HEARTBEAT_RESERVE, false, |reply| {
            if !service.heartbeat(token, reply) {
                let _ = reply.put(codec.heartbeat());
            }
        });
        match written {
            Ok(()) => {
                self.metrics.heartbeats.inc();
                queue(conn, token, self.queue);
            }
            Err(reason) => self.doomed.push((token, reason)),
        }
    }
}

/// A connection's output ring, taken from `pool` if it has none, with a unit of
/// the memory budget (a push cannot wait for one) if it holds none: so the
/// pool keeps the ring when the flush returns it, for the next burst.
fn output_ring<'a>(
    link: &'a mut Link,
    pool: &mut Pool,
    memory: &mut Memory,
    metrics: &ShardMetrics,
) -> &'a mut Ring {
    if link.output.is_none() && !link.unit {
        link.unit = true;
        memory.force(pool, metrics);
    }
    link.output.get_or_insert_with(|| pool.take())
}

/// The backlog's last ring if it has `need` bytes free, else a new one.
fn backlog_ring<'a>(backlog: &'a mut Backlog, pool: &mut Pool, need: usize) -> &'a mut Ring {
    if backlog.rings.back().is_none_or(|ring| ring.free() < need) {
        backlog.rings.push_back(pool.take());
    }
    backlog.rings.back_mut().expect("just made sure")
}

/// Writes one framed message of at most `reserve` payload bytes into
/// `ring` (which has room for it and the framing) with `write`; a panic
/// or an overflow undoes it and is the reason to close. With
/// `skip_empty`, a message the service wrote nothing for is no frame.
fn write_framed(
    codec: &Codec,
    ring: &mut Ring,
    reserve: usize,
    skip_empty: bool,
    write: impl FnOnce(&mut Reply<'_>),
) -> Result<(), CloseReason> {
    let mark = codec.begin_reply(ring);
    let mut reply = Reply::new(ring, reserve);
    let called = catch_unwind(AssertUnwindSafe(|| write(&mut reply)));
    let (written, overflowed) = (reply.len(), reply.overflowed());
    if called.is_err() || overflowed {
        ring.truncate(mark);
        return Err(if called.is_err() {
            CloseReason::Panic
        } else {
            CloseReason::OutputOverflow
        });
    }
    if written == 0 && skip_empty {
        // Skipped by the service: no empty frame.
        ring.truncate(mark);
        return Ok(());
    }
    codec.end_reply(ring, mark, written);
    Ok(())
}

/// Queues `conn` to be driven (flushed) this turn, once.
fn queue(conn: &mut Conn, token: Token, queue: &mut std::collections::VecDeque<Token>) {
    if !conn.queued {
        conn.queued = true;
        queue.push_back(token);
    }
}

impl Core {
    /// Moves what `token`'s backlog holds into its output ring while there
    /// is room, giving emptied rings back; returns whether anything moved.
    pub(super) fn refill(&mut self, token: Token) -> bool {
        let conn = self.conns.get_mut(token).expect("refilled while live");
        let moved = refill(conn, &mut self.pool);
        let queued = self.metrics.push_queued_bytes.get();
        self.metrics.push_queued_bytes.set(queued - moved as u64);
        moved > 0
    }
}

/// Moves what `conn`'s backlog holds into its output ring while there is
/// room; returns the bytes moved.
fn refill(conn: &mut Conn, pool: &mut Pool) -> usize {
    let Some(backlog) = conn.backlog.as_mut() else {
        return 0;
    };
    let output = conn.link.output.get_or_insert_with(|| pool.take());
    let mut moved = 0;
    while let Some(front) = backlog.rings.front_mut() {
        let (first, second) = front.readable();
        let taken = output.push(first);
        let taken = taken
            + if taken == first.len() {
                output.push(second)
            } else {
                0
            };
        front.consume(taken);
        moved += taken;
        if !front.is_empty() {
            break;
        }
        let empty = backlog.rings.pop_front().expect("the front");
        pool.give(empty);
    }
    backlog.len -= moved;
    if backlog.rings.is_empty() {
        conn.backlog = None;
    }
    moved
}
