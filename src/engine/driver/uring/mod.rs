//! The io_uring driver (`uring` feature; docs/io_uring.md says what it
//! relies on and why): one multishot accept, one receive per connection
//! into a provided buffer ring (so an idle connection holds no read
//! buffer), asking for no more than its input ring has room for so that the
//! buffer goes back in the same turn (a connection that stops serving holds
//! none), at most one send per connection in flight straight from its
//! output ring, and one `io_uring_enter` per wait that both submits and
//! waits (its timeout is the timer wheel's next deadline).
//!
//! Closing follows the sequence of docs/io_uring.md, "Close and cancel":
//! [`Driver::retire`] marks the slot retired and cancels every operation in
//! flight on it by its exact `user_data`, and only after each one's final
//! completion does [`Event::Released`] let the shard close its socket, free
//! its rings and reuse its slot.

#[allow(unsafe_code)]
mod bufs;
#[allow(unsafe_code)]
mod io;
mod op;
mod probe;

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::IoUring;
use io_uring::types::{SubmitArgs, Timespec};

use self::io::{Ring, UringIo};
use self::op::{Kind, Op};
use super::{Driver, Event, Link, Links, NoLinks, Read, Reading, Socket, Token, Waker};
use crate::config::Config;
use crate::engine::buffer::Pool;
use crate::engine::metrics::ShardMetrics;

pub use self::probe::probe;

/// While connections wait for receive buffers, the loop looks again at
/// least this often.
const STARVED_RECHECK: Duration = Duration::from_millis(10);

/// One shard's ring, listener and what is in flight. With SINGLE_ISSUER
/// only one thread may submit: the ring is made disabled (so the start-up
/// fd count includes it) and enabled by the shard's thread in `start`.
pub struct Uring {
    io: UringIo,
    /// Open until the drain has accepted its queue.
    listener: Option<std::net::TcpListener>,
    /// The drain began: accepting is by plain `accept(2)` calls on the
    /// listener's queue, the multishot accept being cancelled.
    stopping: bool,
    /// Every connection is gone: the eventfd read is not posted again.
    finishing: bool,
    /// The accept's final completion came with a socket: its end is
    /// reported next.
    accept_ended: bool,
    /// Connections a completion moved this wait, to drive once each
    /// (capacity: a completion queue's worth).
    touched: VecDeque<Token>,
    /// Accepted sockets still among this wait's completions, counted when
    /// first asked for (`Driver::accepts_pending`), then counted down.
    accepts_pending: Option<usize>,
}

/// One completion, copied out of the ring.
#[derive(Clone, Copy, Debug, Default)]
pub struct Completion {
    user_data: u64,
    result: i32,
    flags: u32,
}

impl Uring {
    /// A driver accepting on `listener`, woken by `waker`, under `config`'s
    /// ring settings, for connections whose input rings hold `--buffer`
    /// bytes.
    pub fn new(
        listener: std::net::TcpListener,
        waker: Waker,
        config: &Config,
        metrics: Arc<ShardMetrics>,
    ) -> std::io::Result<Uring> {
        let ring = Ring::new(
            config.uring_entries as u32,
            config.uring_buffers,
            config.uring_buffer_size,
        )?;
        let io = UringIo::new(ring, metrics, waker, config.buffer);
        Ok(Uring {
            touched: io::resident(io.cqes.capacity(), Token(0)),
            io,
            listener: Some(listener),
            stopping: false,
            finishing: false,
            accept_ended: false,
            accepts_pending: None,
        })
    }

    /// Handles one completion; returns what the shard must hear of it.
    fn complete(&mut self, cqe: Completion, links: &mut impl Links) -> Option<Event> {
        let last = !io_uring::cqueue::more(cqe.flags);
        let op = Op::decode(cqe.user_data);
        if !self.io.tracker.completed(cqe.user_data, last) || op.is_none() {
            self.stray(cqe, op);
            return None;
        }
        let op = op.expect("checked");
        match op.kind {
            Kind::Accept => self.on_accept(cqe, last),
            Kind::Wake => {
                // A stop request or mail: the loop looks at both every
                // turn. The read is posted again until the loop finishes.
                self.io.wake_done();
                if !self.finishing {
                    self.io.arm_wake();
                }
                None
            }
            Kind::CancelRing => {
                self.io.ring_cancel_done();
                None
            }
            Kind::Recv | Kind::Send | Kind::Cancel | Kind::Connect => self.on_conn(op, cqe, links),
        }
    }

    /// A completion that names no live operation: count it, and still give
    /// back the buffer or close the socket it carries.
    fn stray(&mut self, cqe: Completion, op: Option<Op>) {
        log::error!("io_uring: stray completion {op:?} result {}", cqe.result);
        self.io.metrics().uring.stray_completions.inc();
        self.io.drop_carried(cqe, op);
    }

    fn on_accept(&mut self, cqe: Completion, last: bool) -> Option<Event> {
        if last {
            self.io.accept_ended();
        }
        if cqe.result >= 0 {
            self.accept_ended = last;
            if let Some(pending) = self.accepts_pending.as_mut() {
                *pending = pending.saturating_sub(1);
            }
            return Some(Event::Accepted(self.io.accepted_stream(cqe.result)));
        }
        if cqe.result != -libc::ECANCELED && self.listener.is_some() {
            self.accept_ended = last;
            let error = std::io::Error::from_raw_os_error(-cqe.result);
            return Some(Event::AcceptFailed(error));
        }
        last.then_some(Event::AcceptEnded)
    }

    /// A receive, send, cancel or (upstream) connect completion of one
    /// connection.
    fn on_conn(&mut self, op: Op, cqe: Completion, links: &mut impl Links) -> Option<Event> {
        let token = self.io.owner(op);
        let Some((link, pool)) = token.and_then(|token| links.link(token)) else {
            // The tracker knew the op, so its connection must be in the
            // table (slots are freed only after every final completion).
            self.stray(cqe, Some(op));
            return None;
        };
        let token = token.expect("found");
        let moved = match op.kind {
            Kind::Recv => self.io.on_recv(token, cqe),
            Kind::Send => self.io.on_send(token, link, pool, cqe),
            Kind::Connect => self.io.on_connect(token, cqe),
            _ => self.io.on_cancel(token),
        };
        if self.io.done_with(token) {
            self.io.forget(token);
            return Some(Event::Released(token));
        }
        if moved && self.io.touch(token) {
            self.touched.push_back(token);
        }
        None
    }

    /// Connections whose receive ended for lack of buffers get a new one
    /// once buffers are back.
    fn rearm_starved(&mut self, links: &mut impl Links) {
        let mut budget = self.io.buffers_available();
        while let Some(token) = self.io.next_starved(&mut budget) {
            if let Some((link, _)) = links.link(token) {
                self.io.settle_recv(token, link);
            }
        }
    }
}

impl Driver for Uring {
    fn start(&mut self) -> std::io::Result<()> {
        self.io.enable()?;
        self.io.arm_wake();
        Ok(())
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        links: &mut impl Links,
    ) -> std::io::Result<usize> {
        self.rearm_starved(links);
        let mut timeout = timeout;
        if self.io.has_starved() {
            // Receives still to re-post look again soon even if no
            // completion comes (a bounded wait, not a spin).
            timeout = Some(timeout.map_or(STARVED_RECHECK, |t| t.min(STARVED_RECHECK)));
        }
        self.io.enter(timeout)?;
        self.accepts_pending = None;
        Ok(self.io.cqes.len())
    }

    fn next_event(&mut self, links: &mut impl Links) -> Option<Event> {
        if std::mem::take(&mut self.accept_ended) {
            return Some(Event::AcceptEnded);
        }
        while let Some(cqe) = self.io.cqes.pop_front() {
            if let Some(event) = self.complete(cqe, links) {
                return Some(event);
            }
        }
        let token = self.touched.pop_front()?;
        self.io.untouch(token);
        if let Some((link, pool)) = links.link(token) {
            self.io.absorb(token, link, pool);
        }
        Some(Event::Ready(token))
    }

    fn accept(&mut self) -> std::io::Result<Socket> {
        let Some(listener) = self.listener.as_ref() else {
            return Err(std::io::ErrorKind::WouldBlock.into());
        };
        if self.stopping {
            // The drain takes in the listener's queue with plain accepts.
            return self.accept_queued();
        }
        if !self.io.accept_armed() {
            self.io.arm_accept(listener.as_raw_fd());
        }
        // Sockets come as completions.
        Err(std::io::ErrorKind::WouldBlock.into())
    }

    fn accept_queued(&mut self) -> std::io::Result<Socket> {
        let Some(listener) = self.listener.as_ref() else {
            return Err(std::io::ErrorKind::WouldBlock.into());
        };
        // Non-blocking as the multishot accept makes them (see
        // `UringIo::arm_accept`).
        let (socket, _) = listener.accept()?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    fn shed(&mut self) -> bool {
        self.listener
            .as_ref()
            .is_some_and(|listener| listener.accept().is_ok())
    }

    fn accepts_pending(&mut self) -> usize {
        *self.accepts_pending.get_or_insert_with(|| {
            let accepted = |cqe: &&Completion| {
                cqe.result >= 0
                    && Op::decode(cqe.user_data).is_some_and(|op| op.kind == Kind::Accept)
            };
            self.io.cqes.iter().filter(accepted).count()
        })
    }

    fn open(&mut self, token: Token, link: &mut Link) -> std::io::Result<()> {
        self.io.open(token, link);
        Ok(())
    }

    fn read(
        &mut self,
        token: Token,
        link: &mut Link,
        pool: &mut Pool,
        budget: usize,
    ) -> std::io::Result<Read> {
        self.io.read(token, link, pool, budget)
    }

    fn may_read(&self, token: Token) -> bool {
        self.io.may_read(token)
    }

    fn expect_read(&mut self, token: Token) {
        self.io.expect_read(token);
    }

    fn flush(&mut self, token: Token, link: &mut Link, pool: &mut Pool) -> std::io::Result<usize> {
        self.io.flush(token, link, pool)
    }

    fn settle(&mut self, token: Token, link: &Link, reading: Reading) {
        self.io.settle(token, link, reading);
    }

    fn retire(&mut self, token: Token, link: &mut Link) -> bool {
        self.io.retire(token, link)
    }

    fn connect(&mut self, token: Token, addr: std::net::SocketAddr) -> std::io::Result<Socket> {
        self.io.post_connect(token, addr)
    }

    fn connect_status(&mut self, token: Token, _: &mut Link) -> Option<std::io::Result<()>> {
        self.io.connect_status(token)
    }

    fn stop_accepting(&mut self) -> std::io::Result<bool> {
        self.stopping = true;
        if self.io.accept_armed() {
            // What the accept still delivers is taken in as draining; its
            // final completion (`Event::AcceptEnded`) closes the listener.
            self.io.cancel_accept();
            return Ok(false);
        }
        Ok(true)
    }

    fn close_listener(&mut self) {
        self.listener = None;
    }

    fn listening(&self) -> bool {
        self.listener.is_some()
    }

    fn busy(&self) -> bool {
        self.io.accept_armed()
    }

    fn finish(&mut self, until: Instant) -> std::io::Result<bool> {
        // Every connection is gone: cancel the eventfd read and wait for
        // its final completion; the ring is dropped before its buffers.
        self.finishing = true;
        self.io.cancel_wake();
        while self.io.ring_ops_in_flight() && Instant::now() < until {
            self.io.enter(Some(Duration::from_millis(50)))?;
            while let Some(cqe) = self.io.cqes.pop_front() {
                let event = self.complete(cqe, &mut NoLinks);
                debug_assert!(event.is_none(), "{event:?} after the last connection");
            }
        }
        if self.io.ring_ops_in_flight() {
            log::error!("io_uring: operations still in flight at exit; leaking their memory");
            return Ok(false);
        }
        self.io.tracker.finish();
        Ok(true)
    }
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
