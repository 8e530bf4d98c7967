//! Where the shard applies `--max-buffer-memory` (`engine/memory.rs`): a
//! client connection takes a unit (two rings) before it reads into its
//! first ring ([`Core::mem_admit`]), or waits, not read from, in
//! [`Memory::waiters`] until a unit is back ([`Core::wake_memory`]); it
//! gives the unit back at the end of a drive that leaves it holding no ring
//! and awaiting no reply ([`Core::mem_settle`]). Connections that hold
//! rings they could not wait for (an upstream link, a push to an idle
//! client, a receive already in flight on io_uring) take a unit past the
//! budget, counted; a push takes it with the ring (`shard/push.rs`). The
//! pool keeps idle rings only within the units the shard holds, and the
//! shard keeps the units its connections used at their peak for a
//! second after ([`Core::mem_trim`]), so that bursts reuse their rings.

use std::collections::VecDeque;
use std::sync::Arc;

use super::core::{Core, find};
use crate::engine::buffer::Pool;
use crate::engine::driver::{Driver, Token};
use crate::engine::memory::{Allowance, Budget};
use crate::engine::metrics::ShardMetrics;
use crate::engine::timer::Millis;

/// A shard's side of the budget.
pub(super) struct Memory {
    allowance: Allowance,
    /// Client connections waiting for a unit, oldest first, with when each
    /// began to; each at most once (`Conn::mem_wait`). One closed while
    /// waiting is skipped when met.
    waiters: VecDeque<(Token, Millis)>,
}

impl Memory {
    /// Shard `shard`'s side of `budget`, with `prealloc` rings allocated.
    pub(super) fn new(budget: Arc<Budget>, shard: usize, prealloc: usize) -> Memory {
        Memory {
            allowance: Allowance::new(budget, shard, prealloc),
            waiters: VecDeque::new(),
        }
    }

    /// The percentage of the budget the shards have taken (for
    /// `--shed-buffer-memory`).
    pub(super) fn percent_taken(&self) -> u64 {
        self.allowance.percent_taken()
    }

    /// When [`Core::mem_trim`] may next give units back: the end of the
    /// current window while units past the keep are held (the loop wakes
    /// for it, so an idle shard gives them back too).
    pub(super) fn next_trim(&self) -> Option<u64> {
        self.allowance.next_trim()
    }

    /// A unit whatever the budget has left, for rings a connection holds
    /// or is about to take without waiting (a push, bytes a receive
    /// brought in): an overdraw is counted. The pool's cap follows.
    pub(super) fn force(&mut self, pool: &mut Pool, metrics: &ShardMetrics) {
        if self.allowance.force() {
            metrics.memory_overdraws.inc();
        }
        pool.set_cap(self.allowance.rings());
    }
}

impl Core {
    /// Whether the client `token`, about to read, may: it holds a unit or
    /// gets one now. If not, it waits (counted) and is driven again by
    /// [`Core::wake_memory`] once one is back.
    pub(super) fn mem_admit(&mut self, token: Token) -> bool {
        let conn = self.conns.get_mut(token).expect("live");
        if conn.link.unit {
            return true;
        }
        if conn.link.input.is_some() || conn.link.output.is_some() {
            // Rings taken without a unit (a push): count them.
            conn.link.unit = true;
            self.mem_force();
            return true;
        }
        // Behind the connections already waiting, if any.
        if self.memory.waiters.is_empty() && self.memory.allowance.reserve() {
            conn.link.unit = true;
            self.pool.set_cap(self.memory.allowance.rings());
            return true;
        }
        conn.mem_wait = true;
        self.memory.waiters.push_back((token, self.clock.now));
        self.metrics.memory_waits.inc();
        false
    }

    /// The end of a drive of `token` (client or upstream): it holds a unit
    /// while it holds a ring or awaits a reply, and none otherwise.
    pub(super) fn mem_settle(&mut self, token: Token) {
        let awaited = match self.upstreams.as_ref() {
            Some(upstreams) if !token.is_upstream() => upstreams.pending.awaited(token),
            _ => 0,
        };
        let Some(conn) = find(&mut self.conns, self.upstreams.as_deref_mut(), token) else {
            return;
        };
        let link = &conn.link;
        let busy =
            link.input.is_some() || link.output.is_some() || conn.backlog.is_some() || awaited > 0;
        if busy == link.unit {
            return;
        }
        conn.link.unit = busy;
        if busy {
            self.mem_force();
        } else {
            self.mem_release();
        }
    }

    /// A unit whatever the budget has left, for rings already held.
    fn mem_force(&mut self) {
        self.memory.force(&mut self.pool, &self.metrics);
    }

    /// A connection gave its unit back (it holds no ring, or was
    /// released).
    pub(super) fn mem_release(&mut self) {
        self.memory.allowance.release();
        self.pool.set_cap(self.memory.allowance.rings());
    }

    /// Once per turn, after the pool's: the units no burst needed for a
    /// window go back to the budget (and the pool's cap follows).
    pub(super) fn mem_trim(&mut self) {
        self.memory.allowance.trim(self.clock.now);
        self.pool.set_cap(self.memory.allowance.rings());
    }

    /// Whether a waiting connection can have a unit now (the loop then
    /// does not sleep).
    pub(super) fn memory_ready(&self) -> bool {
        !self.memory.waiters.is_empty() && self.memory.allowance.has_room()
    }

    /// Once per turn: gives spare units back if another shard starves, and
    /// drives the waiting connections a unit is back for, oldest first.
    pub(super) fn wake_memory<I: Driver>(&mut self, io: &mut I) {
        self.memory.allowance.share();
        while let Some(&(token, since)) = self.memory.waiters.front() {
            let Some(conn) = self.conns.get_mut(token).filter(|conn| conn.mem_wait) else {
                self.memory.waiters.pop_front();
                continue;
            };
            if !self.memory.allowance.reserve() {
                break;
            }
            self.memory.waiters.pop_front();
            conn.mem_wait = false;
            conn.link.unit = true;
            self.metrics
                .memory_wait_ms
                .add(self.clock.now.saturating_sub(since));
            self.drive(io, token);
        }
        if self.memory.waiters.is_empty() {
            self.memory.allowance.fed();
        }
        self.pool.set_cap(self.memory.allowance.rings());
        let waiting = self.memory.waiters.len() as u64;
        self.metrics.memory_waiting.set(waiting);
    }
}
