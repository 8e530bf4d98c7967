//! One event loop on one thread: it accepts, drives connections through the
//! data path, fires deadlines, and drains on shutdown. A shard shares
//! nothing on its hot path: its poller, listener, connection table, timer
//! wheel, ring pool, service and counters are its own. The only shared
//! state is the process-wide count of open connections (one atomic add per
//! accept and close) and the stop flag.

mod accept;
mod serve;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::buffer::Pool;
use crate::codec::Codec;
use crate::config::Config;
use crate::conn::table::{LISTENER, WAKER};
use crate::conn::{Conn, State, Table, Timeouts};
use crate::driver;
use crate::metrics::{CloseReason, ShardMetrics};
use crate::service::Service;
use crate::timer::{Millis, Wheel};

use accept::Acceptor;

/// Timer wheel tick: deadlines fire at most this late.
const WHEEL_TICK_MS: Millis = 10;
/// Timer wheel slots (power of two): one rotation is 5.12 s, so a 60 s idle
/// deadline is looked at about a dozen times before it fires.
const WHEEL_SLOTS: usize = 512;
/// Bytes read from one connection before what was read is served and
/// flushed, on a turn with at most [`QUIET_TURN_EVENTS`] events: replies to
/// the start of a burst then go out while the rest is still being read, so
/// a lone pipelining peer overlaps with the server instead of taking turns
/// with it in ring-sized batches. On a busy turn the other connections keep
/// the server and the wire overlapped anyway, and reading a whole burst at
/// once saves syscalls (measured: +40 % req/s for one connection with 16 ×
/// 4 KiB in flight; the cap on every turn cost 10–25 % at 1000 and 10000
/// connections).
const READ_PASS_MAX: usize = 16 * 1024;
/// A turn with at most this many readiness events counts as quiet.
const QUIET_TURN_EVENTS: usize = 2;
/// Descriptors a shard holds besides its connections: listener, epoll,
/// waker (eventfd), spare fd.
pub const FDS_PER_SHARD: usize = 4;

/// What is shared between a shard and the rest of the process.
#[derive(Clone)]
pub struct Shared {
    /// Open client connections over all shards, for `--max-conns`.
    pub open_total: Arc<AtomicUsize>,
    /// Set once to start the graceful shutdown (then the shard is woken).
    pub stop: Arc<AtomicBool>,
}

/// Bounds a shard applies, from the validated [`Config`].
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_conns: usize,
    accept_batch: usize,
    read_budget: usize,
    events_max: usize,
    shutdown_grace: Millis,
}

/// One event loop.
pub struct Shard {
    poll: Poll,
    listener: Option<TcpListener>,
    acceptor: Acceptor,
    conns: Table<Conn>,
    wheel: Wheel<Token>,
    pool: Pool,
    codec: Codec,
    service: Box<dyn Service>,
    /// Holds a frame that wraps around its ring, so the service always sees
    /// one slice; `max_frame` bytes.
    scratch: Box<[u8]>,
    timeouts: Timeouts,
    limits: Limits,
    metrics: Arc<ShardMetrics>,
    open_total: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Set when the graceful shutdown began: when it must end.
    drain_until: Option<Millis>,
    /// Connections to drive again without waiting for an event (their read
    /// budget ran out while the socket still had bytes). Each is queued at
    /// most once, so this holds at most one entry per connection.
    queue: VecDeque<Token>,
    expired: Vec<Token>,
    /// Readiness events of the current turn (see [`READ_PASS_MAX`]).
    turn_events: usize,
    epoch: Instant,
    now: Millis,
}

impl Shard {
    /// A shard serving `listener` with `service`, under `config` (already
    /// validated, with `max_conns` resolved). Returns it with the waker that
    /// makes it notice `shared.stop`.
    pub fn new(
        listener: std::net::TcpListener,
        service: Box<dyn Service>,
        config: &Config,
        shared: &Shared,
        metrics: Arc<ShardMetrics>,
    ) -> io::Result<(Shard, Arc<Waker>)> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        metrics.fds_own.set(FDS_PER_SHARD as u64);
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as Millis;
        let shard = Shard {
            poll,
            listener: Some(listener),
            acceptor: Acceptor::new()?,
            conns: Table::with_capacity(1024.min(config.max_conns)),
            wheel: Wheel::with_capacity(WHEEL_TICK_MS, WHEEL_SLOTS, 1024.min(config.max_conns)),
            pool: Pool::new(config.buffer, config.pool_free_max),
            codec: Codec::new(config.protocol, config.max_frame),
            service,
            scratch: vec![0; config.max_frame].into_boxed_slice(),
            timeouts: Timeouts {
                idle: ms(config.idle_timeout),
                read: ms(config.read_timeout),
                write: ms(config.write_timeout),
            },
            limits: Limits {
                max_conns: config.max_conns,
                accept_batch: config.accept_batch,
                read_budget: config.read_budget,
                events_max: config.events_max,
                shutdown_grace: ms(config.shutdown_grace),
            },
            metrics,
            open_total: shared.open_total.clone(),
            stop: shared.stop.clone(),
            drain_until: None,
            queue: VecDeque::new(),
            expired: Vec::new(),
            turn_events: 0,
            epoch: Instant::now(),
            now: 0,
        };
        Ok((shard, waker))
    }

    /// Runs the loop until the graceful shutdown has finished.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.limits.events_max);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let turn = Instant::now();
            self.now = turn.duration_since(self.epoch).as_millis() as Millis;
            self.turn_events = events.iter().count();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.acceptor.ready = true,
                    WAKER => {}
                    token => {
                        let Some(conn) = self.conns.get_mut(token) else {
                            // A stale event for a closed connection.
                            continue;
                        };
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            conn.read_ready = true;
                        }
                        if event.is_read_closed() {
                            conn.fin_seen = true;
                        }
                        if event.is_writable() || event.is_write_closed() || event.is_error() {
                            conn.write_ready = true;
                        }
                        self.drive(token);
                    }
                }
            }
            if self.drain_until.is_none() && self.stop.load(Ordering::Acquire) {
                self.begin_drain();
            }
            self.accept_some();
            self.drive_queued();
            self.fire_timers();
            self.metrics.connections_open.set(self.conns.len() as u64);
            self.metrics.loop_iterations.inc();
            self.metrics
                .loop_turn
                .observe_ns(turn.elapsed().as_nanos() as u64);
            if let Some(until) = self.drain_until {
                if self.conns.is_empty() {
                    return Ok(());
                }
                if self.now >= until {
                    for token in self.conns.tokens() {
                        self.close(token, CloseReason::Shutdown);
                    }
                    self.metrics.connections_open.set(0);
                    return Ok(());
                }
            }
        }
    }

    /// How long the next poll may wait: not past the next deadline, and not
    /// at all while work is queued.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.queue.is_empty() || (self.listener.is_some() && self.acceptor.due(self.now)) {
            return Some(Duration::ZERO);
        }
        let wake = [
            self.wheel.next_expiry(),
            self.acceptor.resume_at(),
            self.drain_until,
        ]
        .into_iter()
        .flatten()
        .min()?;
        // Measured from the start of this turn, so the wait can only be
        // shorter than needed (never make a deadline late).
        let now = self.epoch.elapsed().as_millis() as Millis;
        Some(Duration::from_millis(wake.saturating_sub(now)))
    }

    /// Moves one connection as far as it can go now: read, serve, flush,
    /// again while anything moves and the read budget lasts; then close it
    /// if it is finished, queue it if its budget ran out, and make sure its
    /// timer is no later than its deadline.
    fn drive(&mut self, token: Token) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let mut budget = self.limits.read_budget;
        let pass_max = if self.turn_events <= QUIET_TURN_EVENTS {
            READ_PASS_MAX
        } else {
            usize::MAX
        };
        let outcome = loop {
            let mut moved = false;
            if conn.wants_read() && budget > 0 {
                match driver::read(conn, &mut self.pool, budget.min(pass_max)) {
                    Ok(read) => {
                        if read.bytes > 0 {
                            moved = true;
                            budget = budget.saturating_sub(read.bytes);
                            conn.last_active = now;
                            self.metrics.bytes_read.add(read.bytes as u64);
                        }
                        if read.eof {
                            moved = true;
                            conn.eof = true;
                            conn.state = match conn.state {
                                State::Open => State::ReadClosed,
                                State::DrainRead => State::Drain,
                                other => other,
                            };
                        }
                    }
                    Err(_) => break Err(CloseReason::Reset),
                }
                if conn.state == State::DrainRead && !conn.read_ready {
                    // Everything that reached the socket before the
                    // shutdown has been read.
                    conn.state = State::Drain;
                }
            }
            let had_output = conn.output_len() > 0;
            match serve::serve(
                conn,
                &self.codec,
                self.service.as_mut(),
                &mut self.pool,
                &mut self.scratch,
                &self.metrics,
                now,
            ) {
                Ok(frames) => moved |= frames > 0,
                Err(reason) => break Err(reason),
            }
            if !had_output && conn.output_len() > 0 {
                // Output just became pending: the write timeout starts now.
                conn.write_since = now;
            }
            match driver::flush(conn, &mut self.pool) {
                Ok(0) => {}
                Ok(written) => {
                    moved = true;
                    conn.last_active = now;
                    conn.write_since = now;
                    self.metrics.bytes_written.add(written as u64);
                }
                Err(_) => break Err(CloseReason::Reset),
            }
            if !moved {
                break Ok(());
            }
        };
        if let Err(reason) = outcome {
            self.close(token, reason);
            return;
        }
        let finished = match conn.state {
            // Lingering ends when the peer has taken its replies and closed.
            State::Lingering(reason) => conn.eof.then_some(reason),
            state => state
                .finished_reason()
                .filter(|_| conn.output_len() == 0 && !conn.output_blocked),
        };
        if let Some(reason) = finished {
            if conn.eof {
                self.close(token, reason);
                return;
            }
            // The peer may still send: shut our side and linger so that
            // its unread input cannot turn the close into a reset.
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            conn.state = State::Lingering(reason);
            conn.write_since = now;
            conn.read_ready = true;
        }
        if conn.wants_read() && !conn.queued {
            conn.queued = true;
            self.queue.push_back(token);
        }
        let (deadline, _) = conn.deadline(&self.timeouts);
        match conn.timer {
            Some((_, at)) if at <= deadline => {}
            previous => {
                if let Some((key, _)) = previous {
                    self.wheel.cancel(key);
                }
                conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
            }
        }
    }

    /// Drives the connections whose read budget ran out last turn, once each.
    fn drive_queued(&mut self) {
        for _ in 0..self.queue.len() {
            let Some(token) = self.queue.pop_front() else {
                break;
            };
            if let Some(conn) = self.conns.get_mut(token) {
                conn.queued = false;
                self.drive(token);
            }
        }
    }

    /// Closes the connections whose deadline passed; re-schedules the ones
    /// whose deadline moved later since their entry was made.
    fn fire_timers(&mut self) {
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.advance(self.now, &mut expired);
        for token in expired.drain(..) {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            let (deadline, reason) = conn.deadline(&self.timeouts);
            if self.now >= deadline {
                conn.timer = None;
                self.close(token, reason);
            } else {
                conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
            }
        }
        self.expired = expired;
    }

    /// Starts the graceful shutdown: close the listener, then read what
    /// already reached each connection, answer it, flush, close.
    fn begin_drain(&mut self) {
        self.drain_until = Some(self.now + self.limits.shutdown_grace);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            self.metrics.fds_own.set(FDS_PER_SHARD as u64 - 1);
        }
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.get_mut(token) {
                if conn.state == State::Open {
                    conn.state = State::DrainRead;
                }
                // Bytes may be waiting whose event is not in yet.
                conn.read_ready = true;
                self.drive(token);
            }
        }
    }

    /// The one way a connection ends: its socket, timer and rings are all
    /// released here, and the reason is counted.
    fn close(&mut self, token: Token, reason: CloseReason) {
        let Some(mut conn) = self.conns.remove(token) else {
            return;
        };
        if let Some((key, _)) = conn.timer.take() {
            self.wheel.cancel(key);
        }
        for ring in [conn.input.take(), conn.output.take()]
            .into_iter()
            .flatten()
        {
            self.pool.give(ring);
        }
        self.metrics.closed[reason.index()].inc();
        self.open_total.fetch_sub(1, Ordering::AcqRel);
        self.acceptor.on_close();
        // Dropping the stream closes the fd; epoll forgets a closed fd by
        // itself (none is ever duplicated), so no deregister syscall.
        drop(conn);
    }
}
