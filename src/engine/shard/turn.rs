//! The loop, written once for every driver: each turn waits (no longer
//! than the next deadline), handles what the driver reports, accepts,
//! drives the connections queued for another pass, the throttled ones
//! whose tokens are back and those waiting for buffer memory a unit is back
//! for, fires the timers, and
//! checks the drain; the graceful shutdown ends it through the same path
//! on every driver.

use std::io;
use std::time::{Duration, Instant};

use super::core::Core;
use crate::engine::conn::State;
use crate::engine::driver::{Driver, Event, Socket};
use crate::engine::metrics::CloseReason;
use crate::engine::timer::Millis;

/// How long past the end of the grace period the loop waits for the
/// driver's final completions (the connections still open then, the
/// accept, the eventfd read) before it gives up on them, their memory
/// leaked rather than freed under the kernel. Cancelled operations
/// complete within the next enter; this only bounds a kernel that does
/// not, so that the process exits by the grace period as on epoll. (Epoll
/// has nothing in flight: it never waits here.)
const EXIT_WAIT_MS: Millis = 500;

/// How [`Loop::accept_some`] accepts.
#[derive(Clone, Copy)]
enum Accept {
    /// The driver's own way ([`Driver::accept`]).
    Own,
    /// Plain accepts from the listener's queue ([`Driver::accept_queued`]).
    Queued,
}

/// One shard's core and driver, turning.
pub struct Loop<D> {
    core: Core,
    driver: D,
}

impl<D: Driver> Loop<D> {
    /// A loop around `core` on `driver`.
    pub fn new(core: Core, driver: D) -> Loop<D> {
        Loop { core, driver }
    }

    /// Runs until the graceful shutdown has finished. Returns false if the
    /// driver still had operations in flight when the loop gave up waiting
    /// for them: the caller must then leak the loop rather than free
    /// memory the kernel may still use.
    pub fn run(&mut self) -> io::Result<bool> {
        self.driver.start()?;
        loop {
            let timeout = self.core.wait_timeout(self.driver.listening());
            self.driver.wait(timeout, &mut self.core)?;
            let turn = self.core.begin_turn();
            // A reload's settings, before anything of this turn.
            self.core.take_settings(&mut self.driver);
            // Mail first: what another shard sent before this turn's
            // events goes out before their replies.
            self.core.drain_mailbox();
            self.handle_events();
            if self.core.sweep_due() {
                self.sweep_queue();
            }
            if self.core.stop_requested() {
                self.stop()?;
            }
            if self.driver.listening() && self.core.acceptor.due(self.core.clock.now) {
                self.core.acceptor.begin();
                self.accept_some(self.core.limits.accept_batch, Accept::Own);
            }
            self.core.drive_queued(&mut self.driver);
            self.core.wake_throttled(&mut self.driver);
            self.core.wake_memory(&mut self.driver);
            self.core.fire_timers(&mut self.driver);
            self.core.drain_done(&mut self.driver);
            self.core.end_turn(turn);
            if let Some(finished) = self.exit()? {
                return Ok(finished);
            }
        }
    }

    /// Handles everything the driver reported.
    fn handle_events(&mut self) {
        while let Some(event) = self.driver.next_event(&mut self.core) {
            match event {
                Event::Ready(token) => self.core.drive(&mut self.driver, token),
                Event::Released(token) => self.core.release(token),
                Event::Listener => self.core.acceptor.ready = true,
                Event::Accepted(socket) => self.take_in(socket),
                Event::AcceptFailed(error) => {
                    let (core, driver) = (&mut self.core, &mut self.driver);
                    core.acceptor
                        .on_error(&error, core.clock.now, &core.metrics, || driver.shed());
                }
                Event::AcceptEnded if self.core.drain_until.is_none() => {
                    self.core.acceptor.ready = true;
                }
                // The drain's cancel took the accept: only now may the
                // listener be closed (docs/io_uring.md, "Close and cancel").
                Event::AcceptEnded => self.close_listener(),
            }
        }
    }

    /// Accepts up to `max` waiting connections.
    fn accept_some(&mut self, max: usize, how: Accept) {
        for _ in 0..max {
            let accepted = match how {
                Accept::Own => self.driver.accept(),
                Accept::Queued => self.driver.accept_queued(),
            };
            match accepted {
                Ok(socket) => self.take_in(socket),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.core.acceptor.ready = false;
                    return;
                }
                Err(e) => {
                    let (core, driver) = (&mut self.core, &mut self.driver);
                    let shed = || driver.shed();
                    if !core
                        .acceptor
                        .on_error(&e, core.clock.now, &core.metrics, shed)
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Takes in an accepted socket: admitted as usual (or turned away past
    /// `--max-conns`), handed to the driver, and served as a draining
    /// connection if the drain has begun (it was in the listener's queue
    /// before the drain: the kernel had completed its handshake).
    fn take_in(&mut self, socket: Socket) {
        self.core.acceptor.on_accepted();
        if self.core.door_watches_queue() {
            let pending = self.driver.accepts_pending();
            self.core.door_accepts_pending(pending);
        }
        let Some(token) = self.core.admit(socket) else {
            return;
        };
        let conn = self.core.conns.get_mut(token).expect("just admitted");
        if let Err(e) = self.driver.open(token, &mut conn.link) {
            log::warn!("registering a connection with the driver: {e}");
            self.core.close(&mut self.driver, token, CloseReason::Reset);
            return;
        }
        self.core.open_session(&mut self.driver, token);
        self.core.close_doomed(&mut self.driver);
        if self
            .core
            .conn_mut(token)
            .is_none_or(|conn| conn.state == State::Closed)
        {
            return;
        }
        if self.core.drain_until.is_some() {
            self.core.adopt_draining(&mut self.driver, token);
        }
    }

    /// The stop flag was raised: collect what reached the sockets before
    /// the stop (io_uring defers it to the next enter), stop accepting, and
    /// begin the drain.
    fn stop(&mut self) -> io::Result<()> {
        self.driver.wait(Some(Duration::ZERO), &mut self.core)?;
        self.handle_events();
        if self.driver.stop_accepting()? {
            self.close_listener();
        }
        let fds_own = self.core.metrics.fds_own.get();
        self.core.metrics.fds_own.set(fds_own - 1);
        self.core.begin_drain(&mut self.driver);
        Ok(())
    }

    /// Accepts every connection in the listener's queue (at most
    /// `--backlog`; the kernel completed their handshakes: closing the
    /// listener would reset them), so that the drain serves them too, then
    /// closes it. A handshake that completes after this is reset.
    /// After a hand-over the socket outlives this process's descriptor (the
    /// new process holds it): its queue is left to the new process, which
    /// serves those connections from their first byte.
    fn close_listener(&mut self) {
        if !self.core.listeners_kept() {
            self.core.acceptor.begin();
            self.accept_some(self.core.limits.backlog, Accept::Queued);
        }
        if self.driver.listening() {
            self.driver.close_listener();
            self.core.listener_closed();
        }
    }

    /// After a hand-over, once the old process has closed its listeners:
    /// accepts what waits in the listener's queue with plain accepts. The
    /// old process's io_uring accept, being cancelled, may have taken the
    /// one wake-up the kernel gave for a connection and left it queued;
    /// no wake-up would come for it here until the next connection.
    /// The acceptor's readiness is left as it was: on io_uring the
    /// multishot accept is armed by the first turn that finds it due, which
    /// may not have come yet.
    fn sweep_queue(&mut self) {
        if self.driver.listening() && self.core.drain_until.is_none() {
            let ready = self.core.acceptor.ready;
            self.core.acceptor.begin();
            self.accept_some(self.core.limits.backlog, Accept::Queued);
            self.core.acceptor.ready = ready;
        }
    }

    /// Whether the loop is over: `Some(true)` once the drain has released
    /// every connection and the driver has nothing left in flight,
    /// `Some(false)` if the driver gave up waiting for the kernel.
    fn exit(&mut self) -> io::Result<Option<bool>> {
        let Some(until) = self.core.drain_until else {
            return Ok(None);
        };
        // One deadline for all the waiting that follows the drain.
        let exit_by = until + EXIT_WAIT_MS;
        if self.core.all_released() && !self.driver.busy() {
            let left = Duration::from_millis(exit_by.saturating_sub(self.core.clock.now));
            return self.driver.finish(Instant::now() + left).map(Some);
        }
        if self.core.clock.now > exit_by {
            log::error!(
                "{} connections still have operations in flight {EXIT_WAIT_MS} ms after the \
                 drain; leaking their memory",
                self.core.conns.len()
            );
            return Ok(Some(false));
        }
        Ok(None)
    }
}
