//! The one pump every connection is driven through, client or upstream:
//! read → the side's step → flush, again while anything moves and the read
//! budget lasts. Only the step in the middle differs ([`Side`]): a client's
//! frames are served and its awaited replies delivered; an upstream
//! connection's replies are handed to the clients that await them and its
//! lane's queued requests taken.

use super::core::{Core, find};
use super::serve::Serving;
use crate::engine::conn::{Conn, State, Table};
use crate::engine::driver::{Driver, Token};
use crate::engine::metrics::CloseReason;
use crate::engine::service::CallError;
use crate::engine::upstream::Upstreams;

/// What one kind of connection does between reading and flushing.
pub(super) trait Side {
    /// Why the connection must close.
    type Failure;
    /// The driver failed a read or a write (the peer's error).
    const RESET: Self::Failure;
    /// Client traffic: counted in the shard's byte counters.
    const CLIENT: bool;

    /// Works on what was read; returns whether anything moved.
    fn step(core: &mut Core, token: Token) -> Result<bool, Self::Failure>;

    /// Why a read or write that failed with `error` ends the connection.
    fn failure(error: &std::io::Error) -> Self::Failure {
        let _ = error;
        Self::RESET
    }

    /// Whether to stop pumping now that the peer has closed (an upstream
    /// that closed answers nothing more: no request may be added).
    fn stop_at_eof() -> bool {
        !Self::CLIENT
    }
}

/// A client connection: serve its frames, deliver its awaited replies.
pub(super) struct Client;

/// An upstream connection: hand its replies on, take queued requests.
pub(super) struct Upstream;

impl Side for Client {
    type Failure = CloseReason;
    const RESET: CloseReason = CloseReason::Reset;
    const CLIENT: bool = true;

    /// The kernel's ETIMEDOUT (keepalive probes or a user timeout went
    /// unanswered) is a dead peer; anything else a reset.
    fn failure(error: &std::io::Error) -> CloseReason {
        match error.raw_os_error() {
            Some(libc::ETIMEDOUT) => CloseReason::DeadPeer,
            _ => CloseReason::Reset,
        }
    }

    fn step(core: &mut Core, token: Token) -> Result<bool, CloseReason> {
        let conn = core.conns.get(token).expect("pumped while live");
        if conn.throttled || (conn.preamble && !core.door_preamble(token)?) {
            return Ok(false);
        }
        let frame_limit = core.door_frames(token);
        let conn = core.conns.get_mut(token).expect("pumped while live");
        let mut serving = Serving {
            pool: &mut core.pool,
            scratch: &mut core.scratch,
            upstreams: core.upstreams.as_deref_mut(),
            queue: &mut core.queue,
            push: &mut core.push,
            now: core.clock.now,
            now_us: core.clock.now_us,
            frame_limit,
        };
        let served = core.responder.serve(conn, token, &mut serving)?;
        let mut moved = served > 0;
        if core.push.take_changed() {
            core.note_groups(token);
        }
        if !core.push.outbox.is_empty() {
            core.apply_outbox();
            moved = true;
        }
        let conn = core.conns.get_mut(token).expect("pumped while live");
        if let Some(upstreams) = core.upstreams.as_deref_mut() {
            let max_pending = upstreams.settings.max_pending;
            let pending = &mut upstreams.pending;
            let pool = &mut core.pool;
            moved |= core
                .responder
                .deliver(conn, token, pending, max_pending, pool)?
                > 0;
        }
        if frame_limit != usize::MAX {
            core.door_served(token, served, frame_limit);
        }
        Ok(moved)
    }
}

impl Side for Upstream {
    type Failure = CallError;
    const RESET: CallError = CallError::Reset;
    const CLIENT: bool = false;

    fn step(core: &mut Core, token: Token) -> Result<bool, CallError> {
        let mut moved = core.take_replies(token)? > 0;
        core.resend_redirected();
        let upstreams = core.upstreams.as_deref_mut().expect("upstream");
        moved |= upstreams.take_queued(token, &mut core.pool, core.clock.now_us) > 0;
        Ok(moved)
    }
}

/// The live connection `token` names in either table.
pub(super) fn lookup<'a>(
    conns: &'a mut Table<Conn>,
    upstreams: Option<&'a mut Upstreams>,
    token: Token,
) -> &'a mut Conn {
    find(conns, upstreams, token).expect("pumped while live")
}

impl Core {
    /// Moves the live connection `token` as far as it can go now: read,
    /// the side's step, flush, again while anything moves and the read
    /// budget lasts. An error is the reason to close it.
    pub(super) fn pump<S: Side, I: Driver>(
        &mut self,
        io: &mut I,
        token: Token,
    ) -> Result<(), S::Failure> {
        let mut budget = self.limits.read_budget;
        loop {
            let mut moved = self.pump_read::<S, I>(io, token, &mut budget)?;
            let conn = lookup(&mut self.conns, self.upstreams.as_deref_mut(), token);
            let had_output = conn.output_len() > 0;
            moved |= S::step(self, token)?;
            let conn = lookup(&mut self.conns, self.upstreams.as_deref_mut(), token);
            if !had_output && conn.output_len() > 0 {
                // Output just became pending: the write timeout starts now.
                conn.write_since = self.clock.now;
            }
            moved |= self.pump_flush::<S, I>(io, token)?;
            let conn = lookup(&mut self.conns, self.upstreams.as_deref_mut(), token);
            if conn.backlog.is_some() {
                moved |= self.refill(token);
            }
            let conn = lookup(&mut self.conns, self.upstreams.as_deref_mut(), token);
            if !moved || (conn.eof && S::stop_at_eof()) {
                return Ok(());
            }
        }
    }

    /// Reads what the driver has for `token` within `budget`; whether
    /// anything moved.
    fn pump_read<S: Side, I: Driver>(
        &mut self,
        io: &mut I,
        token: Token,
        budget: &mut usize,
    ) -> Result<bool, S::Failure> {
        let conn = lookup(&mut self.conns, self.upstreams.as_deref_mut(), token);
        if !(conn.wants_read() && io.may_read(token) && *budget > 0) {
            return Ok(false);
        }
        if S::CLIENT && !conn.link.unit && !self.mem_admit(token) {
            return Ok(false);
        }
        let conn = lookup(&mut self.conns, self.upstreams.as_deref_mut(), token);
        let asked = *budget;
        let read = io
            .read(token, &mut conn.link, &mut self.pool, asked)
            .map_err(|error| S::failure(&error))?;
        let mut moved = false;
        if read.bytes > 0 {
            moved = true;
            *budget = budget.saturating_sub(read.bytes);
            conn.last_active = self.clock.now;
            conn.last_read = self.clock.now;
            conn.heard = true;
            conn.pinged = false;
            if S::CLIENT {
                self.metrics.bytes_read.add(read.bytes as u64);
            }
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
        if conn.state == State::DrainRead
            && !io.may_read(token)
            && !conn.awaits_first_request(self.clock.now)
        {
            // Everything that reached the socket before the shutdown has
            // been read (and a fresh connection's first request with it).
            conn.state = State::Drain;
        }
        Ok(moved)
    }

    /// Writes what `token`'s output ring holds; whether anything moved.
    fn pump_flush<S: Side, I: Driver>(
        &mut self,
        io: &mut I,
        token: Token,
    ) -> Result<bool, S::Failure> {
        let conn = lookup(&mut self.conns, self.upstreams.as_deref_mut(), token);
        match io.flush(token, &mut conn.link, &mut self.pool) {
            Ok(0) => Ok(false),
            Ok(written) => {
                conn.last_active = self.clock.now;
                conn.write_since = self.clock.now;
                if S::CLIENT {
                    self.metrics.bytes_written.add(written as u64);
                }
                Ok(true)
            }
            Err(error) => Err(S::failure(&error)),
        }
    }
}
