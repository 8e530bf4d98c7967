//! What the loop drives, whatever the driver: the connection table, the
//! timer wheel, the ring pool, the codec and service, and the one data path
//! through them ([`Core::drive`]). The [`Driver`] moves bytes between a
//! socket and the rings and decides when a closed connection's socket may
//! really be released.

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::accept::Acceptor;
use super::memory::Memory;
use super::pump::{Client, lookup};
use super::push::Push;
use super::serve::Responder;
use crate::config::Config;
use crate::engine::buffer::Pool;
use crate::engine::codec::Codec;
use crate::engine::conn::table::is_upstream;
use crate::engine::conn::{Conn, Due, State, Table, Timeouts};
use crate::engine::driver::{Driver, Link, Links, Socket, Token};
use crate::engine::front::{AddrTable, Door};
use crate::engine::memory::Budget;
use crate::engine::metrics::{CloseReason, RejectReason, ShardMetrics};
use crate::engine::push::Hub;
use crate::engine::reload::Published;
use crate::engine::service::host::Handler;
use crate::engine::timer::{Millis, Wheel};
use crate::engine::upstream::Upstreams;

/// Timer wheel tick: deadlines fire at most this late.
const WHEEL_TICK_MS: Millis = 10;
/// Timer wheel slots (power of two): one rotation is 5.12 s, so a 60 s idle
/// deadline is looked at about a dozen times before it fires.
const WHEEL_SLOTS: usize = 512;
/// The shard's clock, read once per turn: everything in a turn happens "at"
/// its start.
pub(super) struct Clock {
    epoch: Instant,
    /// Milliseconds since the shard started, as of this turn.
    pub(super) now: Millis,
    /// The same instant in microseconds (upstream latencies).
    pub(super) now_us: u64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
            now: 0,
            now_us: 0,
        }
    }

    /// Starts a turn: reads the clock.
    fn begin_turn(&mut self) -> Instant {
        let turn = Instant::now();
        self.now_us = turn.duration_since(self.epoch).as_micros() as u64;
        self.now = self.now_us / 1000;
        turn
    }

    /// Milliseconds since the shard started, read now (not as of the turn).
    fn elapsed_ms(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }
}

/// What is shared between a shard and the rest of the process.
#[derive(Clone)]
pub struct Shared {
    /// Open client connections over all shards, for `--max-conns`.
    pub open_total: Arc<AtomicUsize>,
    /// Set once to start the graceful shutdown (then the shard is woken).
    pub stop: Arc<AtomicBool>,
    /// Set when the listening sockets outlive this process: a new process
    /// took them over (set before `stop`), or systemd passed them (set at
    /// start; it keeps them for the next start). The drain then leaves
    /// their queues to the next process instead of accepting them.
    pub listeners_kept: Arc<AtomicBool>,
    /// Shards whose listener is still open. After a hand-over the old
    /// process answers the new one only once this is 0: until a shard's
    /// io_uring accept is cancelled, a connection's one wake-up may go to it
    /// and none to the new process (io_uring's accept waits exclusively,
    /// and the kernel wakes one exclusive waiter per connection).
    pub listeners_open: Arc<AtomicUsize>,
    /// In a process that took its listeners over: set once the old process
    /// has closed its own. Each shard then accepts its listener's queue once
    /// with plain accepts, for connections whose wake-up the old process's
    /// cancelled accept took and left.
    pub sweep_queues: Option<Arc<AtomicBool>>,
    /// The per-address limits, if any (`engine/front/table.rs`).
    pub per_ip: Option<Arc<AddrTable>>,
    /// Descriptors RLIMIT_NOFILE leaves for client connections.
    pub fd_room: usize,
    /// `--max-buffer-memory`, shared by the shards in chunks.
    pub budget: Arc<Budget>,
    /// The settings in effect, as reloads publish them.
    pub settings: Arc<Published>,
}

/// Bounds a shard applies, from the validated [`Config`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `--max-conns`, process-wide.
    pub max_conns: usize,
    /// `--accept-batch`.
    pub accept_batch: usize,
    /// `--read-budget`.
    pub read_budget: usize,
    /// `--shutdown-grace`.
    pub shutdown_grace: Millis,
    /// `--backlog`: the most connections a listener's queue holds, so the
    /// most a drain accepts from it before closing it.
    pub backlog: usize,
    /// Descriptors RLIMIT_NOFILE leaves for client connections.
    pub fd_room: usize,
}

/// What a shard's loop drives, whatever its driver: the connections and
/// everything they are served with.
pub struct Core {
    /// Live connections, and closed ones whose socket the driver still
    /// holds ([`State::Closed`]).
    pub(super) conns: Table<Conn>,
    /// Connection deadlines.
    pub(super) wheel: Wheel<Token>,
    /// Rings for busy connections.
    pub(super) pool: Pool,
    /// The codec and the service.
    pub(super) responder: Responder,
    /// Holds a frame (or upstream replies) that wraps around its ring, so
    /// the service always sees one slice; `max_frame` bytes (a whole ring
    /// with upstreams).
    pub(super) scratch: Box<[u8]>,
    /// The connection time limits.
    pub(super) timeouts: Timeouts,
    /// The shard's bounds.
    pub(super) limits: Limits,
    /// This shard's counters.
    pub(super) metrics: Arc<ShardMetrics>,
    /// Accept pacing (fd exhaustion back-off, warnings).
    pub(super) acceptor: Acceptor,
    pub(super) open_total: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    listeners_kept: Arc<AtomicBool>,
    listeners_open: Arc<AtomicUsize>,
    /// Until the queue sweep after a hand-over is done (see [`Shared`]).
    sweep_queues: Option<Arc<AtomicBool>>,
    /// Set when the graceful shutdown began: when it must end.
    pub(super) drain_until: Option<Millis>,
    /// Connections to drive again without waiting for an event (their read
    /// budget ran out while bytes were still waiting). Each is queued at
    /// most once, so this holds at most one entry per connection.
    pub(super) queue: VecDeque<Token>,
    expired: Vec<Token>,
    /// The time, as of this turn.
    pub(super) clock: Clock,
    /// The upstreams the service may call, if any (`holdfast proxy`).
    pub(super) upstreams: Option<Box<Upstreams>>,
    /// Clients whose awaited reply could not be written (their service
    /// answer panicked or overflowed), closed once the upstream side that
    /// found out is done. Empty between calls.
    pub(super) doomed: Vec<(Token, CloseReason)>,
    /// When the service's periodic work (`Service::tick`) is due next;
    /// `None` once it wants no more.
    tick_at: Option<Millis>,
    /// Server push: groups, the call's outbox, the way to the mailboxes.
    pub(super) push: Push,
    /// The front door (`shard/door.rs`), if any of its features is on.
    pub(super) door: Option<Box<Door>>,
    /// This shard's share of `--max-buffer-memory` and the connections
    /// waiting for it (`shard/memory.rs`).
    pub(super) memory: Memory,
    /// The settings reloads publish (`shard/settings.rs`).
    pub(super) settings: Arc<Published>,
    /// The generation of the settings this shard applied last.
    pub(super) settings_seen: u64,
}

impl Core {
    /// The core of a shard serving `service` under `config` (validated,
    /// `max_conns` resolved).
    pub(super) fn new(
        service: Box<dyn Handler>,
        config: &Config,
        shared: &Shared,
        metrics: Arc<ShardMetrics>,
        shard: usize,
        hub: Arc<Hub>,
    ) -> io::Result<Core> {
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as Millis;
        let upstreams = crate::engine::upstream::Settings::from_config(config)
            .map(|settings| Box::new(Upstreams::new(settings, shard, config.buffer)));
        let scratch_len = if upstreams.is_some() {
            config.max_frame.max(config.buffer)
        } else {
            config.max_frame
        };
        Ok(Core {
            conns: Table::with_capacity(1024.min(config.max_conns)),
            wheel: Wheel::with_capacity(WHEEL_TICK_MS, WHEEL_SLOTS, 1024.min(config.max_conns)),
            pool: Pool::new(config.buffer, config.pool_free_max, config.pool_prealloc),
            responder: Responder::new(
                Codec::new(config.protocol, config.max_frame),
                service,
                metrics.clone(),
            ),
            scratch: vec![0; scratch_len].into_boxed_slice(),
            timeouts: super::settings::timeouts(config),
            limits: Limits {
                max_conns: config.max_conns,
                accept_batch: config.accept_batch,
                read_budget: config.read_budget,
                shutdown_grace: ms(config.shutdown_grace),
                backlog: config.backlog as usize,
                fd_room: shared.fd_room,
            },
            acceptor: Acceptor::new()?,
            metrics,
            open_total: shared.open_total.clone(),
            stop: shared.stop.clone(),
            listeners_kept: shared.listeners_kept.clone(),
            listeners_open: shared.listeners_open.clone(),
            sweep_queues: shared.sweep_queues.clone(),
            drain_until: None,
            // Sized like the table, so the queue rarely grows.
            queue: VecDeque::with_capacity(1024.min(config.max_conns)),
            expired: Vec::new(),
            clock: Clock::new(),
            upstreams,
            doomed: Vec::new(),
            tick_at: Some(0),
            push: Push::new(hub, shard, config),
            door: Door::new(config, shared.per_ip.clone(), None).map(Box::new),
            memory: Memory::new(shared.budget.clone(), shard, config.pool_prealloc),
            settings_seen: shared.settings.generation(),
            settings: shared.settings.clone(),
        })
    }

    /// Starts a turn: reads the clock.
    pub(super) fn begin_turn(&mut self) -> Instant {
        self.clock.begin_turn()
    }

    /// Whether the listening sockets outlive this process (the drain then
    /// leaves their queues to the next one).
    pub(super) fn listeners_kept(&self) -> bool {
        self.listeners_kept.load(Ordering::Acquire)
    }

    /// The shard's listener is closed (counted for a hand-over).
    pub(super) fn listener_closed(&self) {
        self.listeners_open.fetch_sub(1, Ordering::Release);
    }

    /// Whether the listener's queue is to be swept now: once, after a
    /// hand-over, when the old process has closed its listeners.
    pub(super) fn sweep_due(&mut self) -> bool {
        let due = self
            .sweep_queues
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Acquire));
        if due {
            self.sweep_queues = None;
        }
        due
    }

    /// Whether the stop flag was raised and the drain has not begun yet.
    pub(super) fn stop_requested(&self) -> bool {
        self.drain_until.is_none() && self.stop.load(Ordering::Acquire)
    }

    /// Ends a turn: updates the gauges and the turn histogram.
    pub(super) fn end_turn(&mut self, turn: Instant) {
        self.metrics.connections_open.set(self.conns.len() as u64);
        self.pool.trim(self.clock.now);
        self.mem_trim();
        self.door_turn(turn);
        self.publish_upstreams();
        self.metrics.loop_iterations.inc();
        self.metrics
            .loop_turn
            .observe_ns(turn.elapsed().as_nanos() as u64);
    }

    /// How long the driver may wait for events: not past the next deadline,
    /// and not at all while work is queued or accepting is due. `None`:
    /// nothing is scheduled.
    pub(super) fn wait_timeout(&self, accepting: bool) -> Option<Duration> {
        let busy = !self.queue.is_empty() || self.mail_waiting() || self.memory_ready();
        if busy || (accepting && self.acceptor.due(self.clock.now)) {
            return Some(Duration::ZERO);
        }
        let wake = [
            self.wheel.next_expiry(),
            self.acceptor.resume_at(),
            self.drain_until,
            self.tick_at,
            self.pool.next_trim(),
            self.memory.next_trim(),
            self.upstreams
                .as_ref()
                .and_then(|upstreams| upstreams.next_wake()),
            self.door_wake_at(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        // Measured from the start of this turn, so the wait can only be
        // shorter than needed (never make a deadline late).
        let now = self.clock.elapsed_ms();
        Some(Duration::from_millis(wake.saturating_sub(now)))
    }

    /// Takes in an accepted socket: counts it against `--max-conns`
    /// (rejecting it past the cap), enters it in the table and the wheel.
    /// Returns its token, or `None` if it was turned away (and closed).
    pub(super) fn admit(&mut self, stream: Socket) -> Option<Token> {
        let pass = self.door_admit(&stream)?;
        if self.open_total.fetch_add(1, Ordering::AcqRel) >= self.limits.max_conns {
            self.open_total.fetch_sub(1, Ordering::AcqRel);
            self.metrics.rejected[RejectReason::MaxConns.index()].inc();
            self.door_undo(pass);
            return None;
        }
        // Replies are written whole, so Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let now = self.clock.now;
        let token = self.conns.insert(|_| Conn::new(stream, now));
        let conn = self.conns.get_mut(token).expect("just inserted");
        if pass.preamble {
            conn.preamble = true;
            conn.partial_since = Some(now);
        }
        let (deadline, _) = conn.deadline(&self.timeouts);
        conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
        self.door_seat(token, pass);
        self.metrics.accepted.inc();
        Some(token)
    }

    /// Moves one connection as far as it can go now (see `Core::pump`);
    /// then closes it if it is finished, queues it if its budget ran out,
    /// and makes sure its timer is no later than its deadline.
    pub(super) fn drive<I: Driver>(&mut self, io: &mut I, token: Token) {
        if token.is_upstream() {
            self.drive_upstream(io, token);
            return;
        }
        if self
            .conns
            .get(token)
            .is_none_or(|conn| conn.state == State::Closed)
        {
            return;
        }
        if let Err(reason) = self.pump::<Client, I>(io, token) {
            self.close(io, token, reason);
            return;
        }
        // Pushes this drive made may have doomed connections (this one too).
        self.close_doomed(io);
        if self
            .conns
            .get(token)
            .is_none_or(|conn| conn.state == State::Closed)
        {
            return;
        }
        if self.finish(io, token) {
            return;
        }
        self.mem_settle(token);
        let conn = self.conns.get_mut(token).expect("live");
        let (deadline, _) = conn.deadline(&self.timeouts);
        self.settle(io, token, deadline);
        if self
            .upstreams
            .as_ref()
            .is_some_and(|upstreams| upstreams.connect_wanted)
        {
            self.connect_lanes(io);
        }
    }

    /// Ends the client `token` if it has nothing left to do: closes it once
    /// the peer has closed too, else shuts our side and lingers so that its
    /// unread input cannot turn the close into a reset. True if it closed.
    fn finish<I: Driver>(&mut self, io: &mut I, token: Token) -> bool {
        let conn = self.conns.get_mut(token).expect("live");
        let finished = match conn.state {
            // Lingering ends when the peer has taken its replies and closed.
            State::Lingering(reason) => conn.eof.then_some(reason),
            state => state.finished_reason().filter(|_| {
                let awaited = self
                    .upstreams
                    .as_ref()
                    .map_or(0, |upstreams| upstreams.pending.awaited(token));
                conn.output_len() == 0 && !conn.output_blocked && awaited == 0
            }),
        };
        let Some(reason) = finished else {
            return false;
        };
        if conn.eof {
            self.close(io, token, reason);
            return true;
        }
        let _ = conn.link.socket.shutdown(std::net::Shutdown::Write);
        conn.state = State::Lingering(reason);
        conn.write_since = self.clock.now;
        io.expect_read(token);
        false
    }

    /// The end of a drive, client or upstream: queue the connection again
    /// if bytes may still wait (its read budget ran out), move its timer
    /// earlier if `deadline` is, and let the driver settle it.
    pub(super) fn settle<I: Driver>(&mut self, io: &mut I, token: Token, deadline: Millis) {
        let conn = lookup(&mut self.conns, self.upstreams.as_deref_mut(), token);
        if conn.wants_read() && io.may_read(token) && !conn.queued {
            conn.queued = true;
            self.queue.push_back(token);
        }
        match conn.timer {
            Some((_, at)) if at <= deadline => {}
            previous => {
                if let Some((key, _)) = previous {
                    self.wheel.cancel(key);
                }
                conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
            }
        }
        io.settle(token, &conn.link, conn.reading());
    }

    /// The connection `token` names, client or upstream, if live.
    pub(super) fn conn_mut(&mut self, token: Token) -> Option<&mut Conn> {
        find(&mut self.conns, self.upstreams.as_deref_mut(), token)
    }

    /// Whether every connection, client and upstream, has been released.
    pub(super) fn all_released(&self) -> bool {
        self.conns.is_empty()
            && self
                .upstreams
                .as_ref()
                .is_none_or(|upstreams| upstreams.conns.is_empty())
    }

    /// Drives the connections whose read budget ran out last turn, once each.
    pub(super) fn drive_queued<I: Driver>(&mut self, io: &mut I) {
        for _ in 0..self.queue.len() {
            let Some(token) = self.queue.pop_front() else {
                break;
            };
            if let Some(conn) = self.conn_mut(token) {
                conn.queued = false;
                self.drive(io, token);
            }
        }
    }

    /// Closes the connections whose deadline passed; re-schedules the ones
    /// whose deadline moved later since their entry was made.
    pub(super) fn fire_timers<I: Driver>(&mut self, io: &mut I) {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(self.clock.now, &mut expired);
        for token in expired.drain(..) {
            if is_upstream(token) {
                self.upstream_timer(io, token);
                continue;
            }
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            let (deadline, due) = conn.deadline(&self.timeouts);
            if self.clock.now < deadline {
                conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
                continue;
            }
            conn.timer = None;
            match due {
                Due::Close(reason) => self.close(io, token, reason),
                Due::Ping => {
                    self.ping(token);
                    let conn = self.conns.get_mut(token).expect("live");
                    let (deadline, _) = conn.deadline(&self.timeouts);
                    conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
                }
            }
        }
        self.expired = expired;
        self.close_doomed(io);
        if self.upstreams.is_some() {
            self.expire_queued(io);
            self.check_health();
            self.connect_lanes(io);
        }
        self.tick_service();
    }

    /// Runs the service's periodic work once it is due. A panic in it is
    /// counted and logged, and ends the ticks (the shard goes on).
    fn tick_service(&mut self) {
        if self.tick_at.is_none_or(|at| self.clock.now < at) {
            return;
        }
        let service = &mut self.responder.service;
        self.tick_at = match catch_unwind(AssertUnwindSafe(|| service.tick())) {
            Ok(delay) => {
                delay.map(|d| self.clock.now + d.as_millis().min(Millis::MAX as u128) as Millis)
            }
            Err(_) => {
                self.metrics.handler_panics.inc();
                log::error!("the service's tick panicked; no more ticks on this shard");
                None
            }
        };
    }

    /// Starts the graceful shutdown (the driver has taken in what was in the
    /// listener's queue and stopped accepting): read what already reached
    /// each connection, answer it, flush, close.
    pub(super) fn begin_drain<I: Driver>(&mut self, io: &mut I) {
        self.drain_until = Some(self.clock.now + self.limits.shutdown_grace);
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.get_mut(token) {
                if conn.state == State::Closed {
                    continue;
                }
                if conn.state == State::Open {
                    conn.state = State::DrainRead;
                }
                // Bytes may be waiting whose event is not in yet.
                io.expect_read(token);
                self.drive(io, token);
            }
        }
    }

    /// Serves `token`, accepted after the drain began (it was waiting in the
    /// listener's queue: the kernel had completed its handshake), as the
    /// drain serves every connection: what already reached it is read and
    /// answered, then it closes.
    pub(super) fn adopt_draining<I: Driver>(&mut self, io: &mut I, token: Token) {
        if let Some(conn) = self.conns.get_mut(token)
            && conn.state == State::Open
        {
            conn.state = State::DrainRead;
            io.expect_read(token);
            self.drive(io, token);
        }
    }

    /// Whether the drain is over: `Some(true)` when every connection is
    /// gone, `Some(false)` when the grace ran out (every connection still
    /// open is then closed), `None` while draining goes on or none began.
    pub(super) fn drain_done<I: Driver>(&mut self, io: &mut I) -> Option<bool> {
        let until = self.drain_until?;
        if self.conns.is_empty() {
            // No client awaits an upstream reply any more.
            self.close_upstreams(io);
            return self.all_released().then_some(true);
        }
        if self.clock.now < until {
            return None;
        }
        for token in self.conns.tokens() {
            self.close(io, token, CloseReason::Shutdown);
        }
        self.close_upstreams(io);
        Some(false)
    }

    /// The one way a connection ends: the reason is counted, its timer
    /// cancelled, and the driver stops what it has in flight; the socket and
    /// rings go when the driver is done with them ([`Core::release`]).
    pub(super) fn close<I: Driver>(&mut self, io: &mut I, token: Token, reason: CloseReason) {
        if is_upstream(token) {
            self.close_upstream(io, token, None);
            return;
        }
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.state == State::Closed {
            return;
        }
        conn.state = State::Closed;
        if let Some((key, _)) = conn.timer.take() {
            self.wheel.cancel(key);
        }
        if let Some(upstreams) = self.upstreams.as_deref_mut() {
            // Replies still owed for it are dropped when they come.
            upstreams.pending.clear(token);
        }
        self.metrics.closed[reason.index()].inc();
        self.close_session(token, reason);
        let conn = self.conns.get_mut(token).expect("closing");
        if io.retire(token, &mut conn.link) {
            self.release(token);
        }
    }

    /// Frees a closed connection: its socket is closed, its rings return
    /// to the pool and its slot to the table, and accepting may resume.
    pub(super) fn release(&mut self, token: Token) {
        if is_upstream(token) {
            self.release_upstream(token);
            return;
        }
        let Some(mut conn) = self.conns.remove(token) else {
            return;
        };
        debug_assert_eq!(conn.state, State::Closed);
        for ring in [conn.link.input.take(), conn.link.output.take()]
            .into_iter()
            .flatten()
        {
            self.pool.give(ring);
        }
        if let Some(backlog) = conn.backlog.take() {
            let queued = self.metrics.push_queued_bytes.get();
            self.metrics
                .push_queued_bytes
                .set(queued - backlog.len as u64);
            for ring in backlog.rings {
                self.pool.give(ring);
            }
        }
        if conn.link.unit {
            self.mem_release();
        }
        self.open_total.fetch_sub(1, Ordering::AcqRel);
        self.door_release(token);
        self.acceptor.on_close();
        // Dropping the stream closes the fd; epoll forgets a closed fd by
        // itself (none is ever duplicated), so no deregister syscall.
        drop(conn);
    }
}

/// A completion-based driver reaches a connection's rings through this
/// while it handles the completion.
impl Links for Core {
    fn link(&mut self, token: Token) -> Option<(&mut Link, &mut Pool)> {
        let conn = find(&mut self.conns, self.upstreams.as_deref_mut(), token)?;
        Some((&mut conn.link, &mut self.pool))
    }
}

/// The connection `token` names in either table, if live (apart from the
/// rest of the shard, so that its other parts stay usable beside it).
pub(super) fn find<'a>(
    conns: &'a mut Table<Conn>,
    upstreams: Option<&'a mut Upstreams>,
    token: Token,
) -> Option<&'a mut Conn> {
    if token.is_upstream() {
        upstreams?.conns.get_mut(token).map(|up| &mut up.conn)
    } else {
        conns.get_mut(token)
    }
}
