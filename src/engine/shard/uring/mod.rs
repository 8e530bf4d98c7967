//! The io_uring driver's loop (`uring` feature; docs/io_uring.md says what
//! it relies on and why): one multishot accept, one receive per connection
//! into a provided buffer ring (so an idle connection holds no read
//! buffer), asking for no more than its input ring has room for so that the
//! buffer goes back in the same turn (a connection that stops serving holds
//! none), at most one send per connection in flight straight from its
//! output ring, and one `io_uring_enter` per turn that both submits and
//! waits (its timeout is the timer wheel's next deadline).
//!
//! Closing follows the sequence of docs/io_uring.md, "Close and cancel":
//! the connection is counted and marked [`State::Closed`], every operation
//! in flight on it is cancelled by its exact `user_data`, and only after
//! each one's final completion are its socket closed, its rings freed and
//! its slot reused.

#[allow(unsafe_code)]
mod bufs;
#[allow(unsafe_code)]
mod io;
mod op;
mod probe;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::IoUring;
use io_uring::types::{SubmitArgs, Timespec};
use mio::Token;

use self::io::{Ring, UringIo};
use self::op::{Kind, Op};
use super::core::Core;
use crate::config::Config;
use crate::engine::buffer::Pool;
use crate::engine::conn::table::is_upstream;
use crate::engine::conn::{Conn, State};
use crate::engine::timer::Millis;

pub use self::io::EventWaker;
pub use self::probe::probe;

/// How long past the end of the grace period the shard waits for the
/// final completions of what it cancelled (the connections still open then,
/// the accept, the eventfd read) before it gives up on them, their memory
/// leaked rather than freed under the kernel. Cancelled operations complete
/// within the next enter; this only bounds a kernel that does not, so that
/// the process exits by the grace period as on epoll (it was 2 s, twice
/// over: 4 s past the grace).
const EXIT_WAIT: Duration = Duration::from_millis(500);
/// While connections wait for receive buffers, the loop looks again at
/// least this often.
const STARVED_RECHECK: Duration = Duration::from_millis(10);

/// One shard on io_uring. With SINGLE_ISSUER only one thread may submit:
/// the ring is made disabled and enabled by the shard's thread in `run`.
pub struct UringShard {
    core: Core,
    listener: std::net::TcpListener,
    waker: Arc<EventWaker>,
    /// Made disabled here (so the start-up fd count includes it), enabled
    /// on the shard's thread.
    ring: Ring,
}

impl UringShard {
    /// A shard accepting on `listener`; returns it with the waker that
    /// makes it notice a stop request.
    pub fn new(
        listener: std::net::TcpListener,
        core: Core,
        config: &Config,
    ) -> std::io::Result<(UringShard, Arc<EventWaker>)> {
        let waker = Arc::new(EventWaker::new()?);
        let ring = Ring::new(
            config.uring_entries as u32,
            config.uring_buffers,
            config.uring_buffer_size,
        )?;
        core.metrics.fds_own.set(super::FDS_PER_SHARD as u64);
        let shard = UringShard {
            core,
            listener,
            waker: waker.clone(),
            ring,
        };
        Ok((shard, waker))
    }

    /// Runs the loop until the graceful shutdown has finished.
    pub fn run(self) -> std::io::Result<()> {
        let UringShard {
            core,
            listener,
            waker,
            ring,
        } = self;
        ring.enable()?;
        let input_capacity = core.pool.ring_capacity();
        let io = UringIo::new(ring, core.metrics.clone(), waker, input_capacity);
        let mut shard = Loop {
            touched: Vec::with_capacity(io.cqes.capacity()),
            core,
            io,
            listener: Some(listener),
        };
        let finished = shard.run()?;
        if !finished {
            // The kernel may still use connection rings, buffers or the
            // ring itself: leak them all rather than free them under it.
            std::mem::forget(shard);
        }
        Ok(())
    }
}

/// The running loop: the core plus the ring.
struct Loop {
    core: Core,
    io: UringIo,
    /// Open until the drain begins and its accept has completed for the
    /// last time.
    listener: Option<std::net::TcpListener>,
    /// Connections a completion moved this turn, to drive once each.
    touched: Vec<Token>,
}

/// One completion, copied out of the ring.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
}

impl Loop {
    /// Runs until the drain is over. Returns false if operations were
    /// still in flight when the loop gave up waiting for them.
    fn run(&mut self) -> std::io::Result<bool> {
        self.io.arm_wake();
        loop {
            if let Some(listener) = self.listener.as_ref()
                && !self.io.accept_armed()
                && self.core.acceptor.due(self.core.now)
            {
                self.core.acceptor.begin();
                self.core.acceptor.ready = false;
                self.io.arm_accept(listener.as_raw_fd());
            }
            self.rearm_starved();
            let mut timeout = self.core.wait_timeout(false);
            if self.io.has_starved() {
                // Receives still to re-post look again soon even if no
                // completion comes (a bounded wait, not a spin).
                timeout = Some(timeout.map_or(STARVED_RECHECK, |t| t.min(STARVED_RECHECK)));
            }
            self.io.enter(timeout)?;
            let turn = self.core.begin_turn(self.io.cqes.len());
            self.handle_completions();
            if self.core.stop_requested() {
                // Bytes that reached a socket before the stop may still be
                // deferred task work: one more enter turns them into
                // completions, so the drain answers them (as epoll's read to
                // EAGAIN does).
                self.io.enter(Some(Duration::ZERO))?;
                self.handle_completions();
                self.stop_accepting();
                self.core.begin_drain(&mut self.io);
            }
            self.core.drive_queued(&mut self.io);
            self.core.fire_timers(&mut self.io);
            self.core.drain_done(&mut self.io);
            self.core.end_turn(turn);
            if let Some(until) = self.core.drain_until {
                // One deadline for all the waiting that follows the drain.
                let exit_by = until + EXIT_WAIT.as_millis() as Millis;
                if self.core.all_released() && !self.io.accept_armed() {
                    return self.exit(exit_by);
                }
                if self.core.now > exit_by {
                    log::error!(
                        "io_uring: {} connections still have operations in flight {EXIT_WAIT:?} \
                         after the drain; leaking their memory",
                        self.core.conns.len()
                    );
                    return Ok(false);
                }
            }
        }
    }

    /// Handles every completion taken, then drives each connection they
    /// moved once.
    fn handle_completions(&mut self) {
        while let Some(cqe) = self.io.cqes.pop_front() {
            let last = !io_uring::cqueue::more(cqe.flags);
            let op = Op::decode(cqe.user_data);
            if !self.io.tracker.completed(cqe.user_data, last) || op.is_none() {
                self.stray(cqe, op);
                continue;
            }
            let op = op.expect("checked");
            match op.kind {
                Kind::Accept => self.on_accept(cqe, last),
                Kind::Wake => self.io.wake_done(),
                Kind::CancelRing => self.io.ring_cancel_done(),
                Kind::Recv | Kind::Send | Kind::Cancel | Kind::Connect => self.on_conn(op, cqe),
            }
        }
        // Reuses the list's memory turn after turn (no allocation per turn).
        let mut touched = std::mem::take(&mut self.touched);
        for token in touched.drain(..) {
            if let Some((conn, pool)) = conn_and_pool(&mut self.core, token) {
                self.io.untouch(token);
                if conn.state != State::Closed {
                    self.io.absorb(token, conn, pool);
                    self.core.drive(&mut self.io, token);
                }
            }
        }
        self.touched = touched;
    }

    /// A completion that names no live operation: count it, and still give
    /// back the buffer or close the socket it carries.
    fn stray(&mut self, cqe: Completion, op: Option<Op>) {
        log::error!("io_uring: stray completion {op:?} result {}", cqe.result);
        self.core.metrics.uring.stray_completions.inc();
        self.io.drop_carried(cqe, op);
    }

    fn on_accept(&mut self, cqe: Completion, last: bool) {
        if cqe.result >= 0 {
            let stream = self.io.accepted_stream(cqe.result);
            self.take_in(stream);
        } else if cqe.result != -libc::ECANCELED
            && let Some(listener) = self.listener.as_ref()
        {
            let error = std::io::Error::from_raw_os_error(-cqe.result);
            let shed = || listener.accept().is_ok();
            let core = &mut self.core;
            core.acceptor
                .on_error(&error, core.now, &core.metrics, shed);
        }
        if last {
            self.io.accept_ended();
            if self.core.drain_until.is_none() {
                self.core.acceptor.ready = true;
            } else {
                // The drain's cancel took the accept: only now may the
                // listener be closed (docs/io_uring.md, "Close and cancel").
                self.close_listener();
            }
        }
    }

    /// Takes in a socket the listener gave: admitted as usual (or turned
    /// away past `--max-conns`), and served as a draining connection if the
    /// drain has begun (it was in the listener's queue before the drain:
    /// the kernel had completed its handshake).
    fn take_in(&mut self, stream: mio::net::TcpStream) {
        self.core.acceptor.on_accepted();
        let Some(token) = self.core.admit(stream) else {
            return;
        };
        let conn = self.core.conns.get_mut(token).expect("just admitted");
        self.io.open(token, conn);
        if self.core.drain_until.is_some() {
            self.core.adopt_draining(&mut self.io, token);
        }
    }

    /// Accepts what is still in the listener's queue (at most `--backlog`)
    /// and takes it in, then closes the listener: closing it with
    /// connections queued would reset them. A handshake that completes
    /// after this is reset.
    fn close_listener(&mut self) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        for _ in 0..self.core.limits.backlog {
            match listener.accept() {
                // Non-blocking, as the multishot accept makes them (see
                // `UringIo::arm_accept`).
                Ok((stream, _)) => match stream.set_nonblocking(true) {
                    Ok(()) => self.take_in(mio::net::TcpStream::from_std(stream)),
                    Err(e) => log::warn!("accept: making the socket non-blocking: {e}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    let shed = || listener.accept().is_ok();
                    let core = &mut self.core;
                    if !core.acceptor.on_error(&e, core.now, &core.metrics, shed) {
                        break;
                    }
                }
            }
        }
    }

    /// A receive, send, cancel or (upstream) connect completion of one
    /// connection.
    fn on_conn(&mut self, op: Op, cqe: Completion) {
        let token = self.io.owner(op);
        let Some(conn) = token.and_then(|token| self.core.conn_mut(token)) else {
            // The tracker knew the op, so its connection must be alive
            // (slots are freed only after every final completion).
            self.stray(cqe, Some(op));
            return;
        };
        let token = token.expect("found");
        let moved = match op.kind {
            Kind::Recv => self.io.on_recv(token, conn, cqe),
            Kind::Send => self.io.on_send(token, conn, cqe),
            Kind::Connect => self.io.on_connect(token, cqe),
            _ => self.io.on_cancel(token),
        };
        if conn.state == State::Closed {
            if self.io.idle(token) {
                self.core.release(token);
                self.io.forget(token);
            }
        } else if moved && self.io.touch(token) {
            self.touched.push(token);
        }
    }

    /// Connections whose receive ended for lack of buffers get a new one
    /// once buffers are back.
    fn rearm_starved(&mut self) {
        let mut budget = self.io.buffers_available();
        while let Some(token) = self.io.next_starved(&mut budget) {
            if let Some(conn) = self.core.conn_mut(token) {
                self.io.settle_recv(token, conn);
            }
        }
    }

    /// The drain begins: cancel the multishot accept (what it still
    /// delivers is taken in as draining, and its final completion closes the
    /// listener, taking in what is still queued first).
    fn stop_accepting(&mut self) {
        if self.io.accept_armed() {
            self.io.cancel_accept();
        } else {
            self.close_listener();
        }
        self.core
            .metrics
            .fds_own
            .set(super::FDS_PER_SHARD as u64 - 1);
    }

    /// Every connection is gone: cancel the eventfd read, wait for its
    /// final completion (until `exit_by` at most), then drop the ring
    /// before its buffers.
    fn exit(&mut self, exit_by: Millis) -> std::io::Result<bool> {
        self.io.cancel_wake();
        let until = Instant::now() + Duration::from_millis(exit_by.saturating_sub(self.core.now));
        while self.io.ring_ops_in_flight() && Instant::now() < until {
            self.io.enter(Some(Duration::from_millis(50)))?;
            self.handle_completions();
        }
        if self.io.ring_ops_in_flight() {
            log::error!("io_uring: operations still in flight at exit; leaking their memory");
            return Ok(false);
        }
        self.io.tracker.finish();
        Ok(true)
    }
}

/// `token`'s connection, client or upstream, if live, with the shard's
/// ring pool beside it (for [`UringIo::absorb`]).
fn conn_and_pool(core: &mut Core, token: Token) -> Option<(&mut Conn, &mut Pool)> {
    let conn = if is_upstream(token) {
        &mut core.upstreams.as_deref_mut()?.conns.get_mut(token)?.conn
    } else {
        core.conns.get_mut(token)?
    };
    Some((conn, &mut core.pool))
}

/// A timeout for `submit_with_args`.
fn timespec(duration: Duration) -> Timespec {
    Timespec::new()
        .sec(duration.as_secs())
        .nsec(duration.subsec_nanos())
}

/// Enters the ring: submits what is queued and waits for at least one
/// completion or `timeout` (`None`: no limit; zero: just collect).
fn submit_and_wait(ring: &IoUring, timeout: Option<Duration>) -> std::io::Result<()> {
    let submitter = ring.submitter();
    let result = match timeout {
        None => submitter.submit_and_wait(1),
        Some(timeout) => {
            let ts = timespec(timeout);
            submitter.submit_with_args(1, &SubmitArgs::new().timespec(&ts))
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(e) => match e.raw_os_error() {
            // ETIME is the tick; the rest mean "collect, then come back".
            Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
            _ => Err(e),
        },
    }
}
