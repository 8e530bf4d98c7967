//! Where the shard consults its front door (`engine/front/`): at accept
//! ([`Core::door_admit`], then [`Core::door_seat`] once the connection has
//! a slot, or [`Core::door_undo`] if `--max-conns` turned it away), while a
//! connection's PROXY header is still to come ([`Core::door_preamble`]),
//! and at release ([`Core::door_release`]). Without a door (every
//! front-door feature off) each of these is one branch.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::core::Core;
use crate::config::Config;
use crate::engine::driver::{Driver, Socket, Token};
use crate::engine::front::{Door, Pass, Preamble, Shed};
use crate::engine::metrics::CloseReason;
use crate::engine::timer::Millis;

/// A client connection's slot in the table (its token's low half).
fn slot(token: Token) -> usize {
    token.0 & 0xffff_ffff
}

impl Core {
    /// Whether the accepted `socket` may come in: `None` if the door
    /// turned it away (counted; the caller drops it, which closes it).
    pub(super) fn door_admit(&mut self, socket: &Socket) -> Option<Pass> {
        let Some(door) = self.door.as_deref_mut() else {
            return Some(Pass::default());
        };
        if let Some(shed) = door.shed.as_mut() {
            let open = self.open_total.load(Ordering::Relaxed);
            let fds_left = self.limits.fd_room.saturating_sub(open) as u64;
            let memory = self.memory.percent_taken();
            if let Some(reason) = shed.judge(self.clock.now, fds_left, memory, &self.metrics) {
                self.metrics.rejected[reason.index()].inc();
                return None;
            }
        }
        let pass = match door.admit(|| socket.peer_addr().ok(), self.clock.now) {
            Ok(pass) => pass,
            Err(reason) => {
                self.metrics.rejected[reason.index()].inc();
                return None;
            }
        };
        if let Some(options) = door.sockets
            && let Err(error) = options.apply(socket)
        {
            log::debug!("setting --tcp-keepalive or --tcp-user-timeout: {error}");
        }
        Some(pass)
    }

    /// The shard watches its headroom with `shed` (made from its listener
    /// before the driver took it).
    pub(super) fn door_attach_shed(&mut self, config: &Config, shed: Shed) {
        match self.door.as_deref_mut() {
            Some(door) => door.shed = Some(shed),
            None => self.door = Door::new(config, None, Some(shed)).map(Box::new),
        }
    }

    /// Whether the door sheds on the accept queue's depth.
    pub(super) fn door_watches_queue(&self) -> bool {
        let shed = self.door.as_ref().and_then(|door| door.shed.as_ref());
        shed.is_some_and(Shed::watches_queue)
    }

    /// Accepted connections the driver holds besides the listener's queue
    /// (io_uring's), for the next shedding judgement.
    pub(super) fn door_accepts_pending(&mut self, pending: usize) {
        if let Some(shed) = self.door.as_deref_mut().and_then(|d| d.shed.as_mut()) {
            shed.pending = pending as u64;
        }
    }

    /// Descriptors the door holds (the accept-queue probe's).
    pub(super) fn door_fds(&self) -> usize {
        let shed = self.door.as_ref().and_then(|door| door.shed.as_ref());
        shed.map_or(0, Shed::fds)
    }

    /// The end of a loop turn that began at `turn`: the shedding signals.
    pub(super) fn door_turn(&mut self, turn: Instant) {
        if let Some(shed) = self.door.as_deref_mut().and_then(|d| d.shed.as_mut()) {
            let work_us = turn.elapsed().as_micros() as u64;
            shed.turn(self.clock.now, work_us, &self.metrics);
        }
    }

    /// A connection the door let in with `pass` was turned away after all.
    pub(super) fn door_undo(&mut self, pass: Pass) {
        if let Some(door) = self.door.as_deref_mut() {
            door.undo(pass);
        }
    }

    /// A connection the door let in with `pass` is now `token`.
    pub(super) fn door_seat(&mut self, token: Token, pass: Pass) {
        if let Some(door) = self.door.as_deref_mut() {
            door.seat(slot(token), pass);
            if let Some(throttle) = door.throttle.as_mut() {
                throttle.seat(slot(token), self.clock.now);
            }
        }
    }

    /// How many frames the client `token` may be served now
    /// (`--request-rate`; `usize::MAX` without one).
    pub(super) fn door_frames(&mut self, token: Token) -> usize {
        let throttle = self.door.as_deref_mut().and_then(|d| d.throttle.as_mut());
        throttle.map_or(usize::MAX, |t| t.frames(slot(token), self.clock.now))
    }

    /// The client `token` was served `served` of the `limit` frames it
    /// could be: they are spent, and if the limit held frames back, it is
    /// parked (not read or served) until tokens return.
    pub(super) fn door_served(&mut self, token: Token, served: usize, limit: usize) {
        let now = self.clock.now;
        let throttle = self.door.as_deref_mut().and_then(|d| d.throttle.as_mut());
        let throttle = throttle.expect("a frame limit needs a throttle");
        throttle.spend(slot(token), served, now);
        let conn = self.conns.get_mut(token).expect("live");
        let held_back = served == limit
            && conn.state.serves()
            && conn
                .link
                .input
                .as_ref()
                .is_some_and(|input| !input.is_empty());
        if held_back {
            conn.throttled = true;
            throttle.park(token, slot(token), now);
            self.metrics.throttled.inc();
        }
    }

    /// When the first throttled client is due to be woken.
    pub(super) fn door_wake_at(&self) -> Option<Millis> {
        self.door.as_ref()?.throttle.as_ref()?.next_wake()
    }

    /// Wakes the throttled clients whose tokens are back: each is read and
    /// served again from where it stopped.
    pub(super) fn wake_throttled<I: Driver>(&mut self, io: &mut I) {
        let now = self.clock.now;
        loop {
            let throttle = self.door.as_deref_mut().and_then(|d| d.throttle.as_mut());
            let Some((token, waited)) = throttle.and_then(|t| t.wake(now)) else {
                return;
            };
            // A connection closed while parked is skipped.
            if let Some(conn) = self.conns.get_mut(token).filter(|conn| conn.throttled) {
                conn.throttled = false;
                self.metrics.throttled_ms.add(waited);
                self.drive(io, token);
            }
        }
    }

    /// The client `token` is released: it no longer counts for its address.
    pub(super) fn door_release(&mut self, token: Token) {
        if let Some(door) = self.door.as_deref_mut() {
            door.release(slot(token));
        }
    }

    /// The client `token` awaits its PROXY header: look for it in what was
    /// read. True once it is in (and consumed: serving may begin); an error
    /// is the reason to close (a bad header, or a per-address limit that
    /// refuses the client it names).
    pub(super) fn door_preamble(&mut self, token: Token) -> Result<bool, CloseReason> {
        let door = self.door.as_deref_mut().expect("a preamble needs a door");
        let conn = self.conns.get_mut(token).expect("live");
        let Some(input) = conn.link.input.as_mut() else {
            return match conn.eof {
                true => Err(CloseReason::ProxyMissing),
                false => Ok(false),
            };
        };
        // Nothing was consumed from this ring yet, and a header fits in it:
        // the header's bytes are all in its first slice.
        let (bytes, _) = input.readable();
        let capacity = input.capacity();
        let socket = &conn.link.socket;
        let peer = || socket.peer_addr().ok();
        let (len, client) = match door.preamble(bytes, conn.eof, capacity, peer)? {
            Preamble::Incomplete => return Ok(false),
            Preamble::Done { len, client } => (len, client),
        };
        input.consume(len);
        conn.preamble = false;
        conn.partial_since = None;
        log::debug!("connection {token:?}: PROXY header from {client}");
        if let Err(reason) = door.seat_client(slot(token), client, self.clock.now) {
            self.metrics.rejected[reason.index()].inc();
            return Err(CloseReason::Refused);
        }
        Ok(true)
    }
}
