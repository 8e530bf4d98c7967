//! A reload's settings, taken in at the top of a loop turn
//! (`engine/reload/`): the shard compares the published generation with
//! the one it applied (one atomic load a turn) and, when it moved, applies
//! the snapshot's live settings. Which reach the connections already open:
//!
//! - the timeouts (`--idle-timeout`, `--read-timeout`, `--write-timeout`,
//!   `--heartbeat-*`, `--proxy-timeout`, the upstreams'): every
//!   connection's deadline is computed again from the moment it counts
//!   from (its last activity, its partial frame, ...), so a connection
//!   already idle longer than a lowered `--idle-timeout` closes at once;
//! - `--request-rate` and `--request-burst`: every connection's bucket
//!   keeps its tokens (up to the new burst) and earns at the new rate;
//!   parked connections are served again at once and parked anew if over;
//! - `--slow-consumer*`, `--max-pending`, `--accept-batch`,
//!   `--read-budget`: from the next push, request, accept or read;
//! - `--shutdown-grace`: for a drain that begins after the reload;
//! - `--upstream-credential`: for upstream connections made after it (open
//!   ones stay logged in).

use std::time::Duration;

use super::core::Core;
use crate::config::Config;
use crate::engine::conn::{State, Timeouts};
use crate::engine::driver::{Driver, Token};
use crate::engine::front::{Door, Pass, Rate, Throttle};
use crate::engine::reload::Snapshot;
use crate::engine::service::Upstream;
use crate::engine::timer::Millis;
use crate::engine::upstream::conn::Deadlines;
use crate::engine::upstream::dispatch::greetings;

fn ms(d: Duration) -> Millis {
    d.as_millis().min(u64::MAX as u128) as Millis
}

/// The connection time limits of `config`.
pub(super) fn timeouts(config: &Config) -> Timeouts {
    Timeouts {
        idle: ms(config.idle_timeout),
        read: ms(config.read_timeout),
        write: ms(config.write_timeout),
        heartbeat: ms(config.heartbeat_interval),
        heartbeat_timeout: ms(config.heartbeat_timeout),
        preamble: ms(config.proxy_timeout),
    }
}

/// The upstream connections' time limits of `config`.
pub(super) fn deadlines(config: &Config) -> Deadlines {
    Deadlines {
        connect: ms(config.connect_timeout),
        request: ms(config.upstream_timeout),
        idle: ms(config.upstream_idle_timeout),
    }
}

/// A client connection's slot in the table (its token's low half).
fn slot(token: Token) -> usize {
    token.0 & 0xffff_ffff
}

impl Core {
    /// Applies the settings of a reload if one was published since the
    /// last turn.
    pub(super) fn take_settings<I: Driver>(&mut self, io: &mut I) {
        if self.settings.generation() == self.settings_seen {
            return;
        }
        let (snapshot, generation) = self.settings.latest();
        self.settings_seen = generation;
        self.apply_settings(&snapshot.config, io);
        self.apply_per_ip(&snapshot);
        self.apply_upstreams(&snapshot, io);
    }

    /// Per-address limits a reload set where there were none: the door
    /// counts against the new table from the next accept, and the
    /// connections already open are counted in it, by their peer address
    /// (not judged: a limit lower than what an address holds already
    /// refuses its next connections, it closes none). Behind a PROXY
    /// header the client's address is not kept, so those are not counted.
    /// A table the door has already had its limits set in place.
    fn apply_per_ip(&mut self, snapshot: &Snapshot) {
        let Some(table) = &snapshot.per_ip else {
            return;
        };
        if self.door.as_ref().is_some_and(|door| door.has_table()) {
            return;
        }
        match self.door.as_deref_mut() {
            Some(door) => door.attach_table(table.clone()),
            // Without a door no rate was set either (`apply_rate` ran).
            None => {
                self.door = Door::new(&snapshot.config, Some(table.clone()), None).map(Box::new)
            }
        }
        let door = self.door.as_deref_mut().expect("a door with a table");
        if door.reads_headers() {
            return;
        }
        for token in self.conns.tokens() {
            let Some(conn) = self.conns.get(token).filter(|c| c.state != State::Closed) else {
                continue;
            };
            let Ok(peer) = conn.link.socket.peer_addr() else {
                continue;
            };
            let key = table.seat(peer.ip());
            let pass = Pass {
                preamble: false,
                key,
            };
            door.seat(slot(token), pass);
        }
    }

    /// The upstreams of a reload: a pool for each new slot, the removed
    /// ones retired (their idle connections closed now, the others once
    /// they owe nothing), and the service told which it may call.
    fn apply_upstreams<I: Driver>(&mut self, snapshot: &Snapshot, io: &mut I) {
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        let shard = self.push.shard;
        for slot in upstreams.pools.len()..snapshot.slots.len() {
            let (name, addr) = &snapshot.slots[slot];
            upstreams.add_pool(shard, slot, name.clone(), *addr);
        }
        for (slot, pool) in upstreams.pools.iter_mut().enumerate() {
            pool.retired = !snapshot.active.contains(&slot);
        }
        for token in upstreams.conns.tokens() {
            self.close_if_retired(io, token);
        }
        let active: Vec<Upstream<'_>> = snapshot
            .active
            .iter()
            .map(|&slot| {
                let name = snapshot.slots[slot].0.as_str();
                Upstream {
                    slot,
                    name,
                    primary: snapshot.config.primary_of(name),
                }
            })
            .collect();
        self.responder.service.upstreams(&active);
    }

    fn apply_settings<I: Driver>(&mut self, config: &Config, io: &mut I) {
        self.timeouts = timeouts(config);
        self.limits.accept_batch = config.accept_batch;
        self.limits.read_budget = config.read_budget;
        self.limits.shutdown_grace = ms(config.shutdown_grace);
        self.push
            .set_slow_consumer(config.slow_consumer, config.slow_consumer_bytes);
        if let Some(upstreams) = self.upstreams.as_deref_mut() {
            upstreams.settings.deadlines = deadlines(config);
            upstreams.settings.max_pending = config.max_pending;
            // For connections made from now on; open ones stay logged in.
            upstreams.settings.greetings = greetings(config);
        }
        self.apply_rate(config, io);
        self.rearm_timers();
    }

    /// `--request-rate` and `--request-burst`: a new rate for every
    /// connection's bucket, a throttle made (every open connection seated
    /// with a full bucket) or dropped; the parked connections are served
    /// again.
    fn apply_rate<I: Driver>(&mut self, config: &Config, io: &mut I) {
        let now = self.clock.now;
        let rate = Rate::new(config.request_rate, config.request_burst);
        let throttle = self.door.as_deref_mut().and_then(|d| d.throttle.as_mut());
        let parked = match (throttle, rate) {
            (Some(throttle), Some(rate)) => {
                throttle.set_rate(rate);
                throttle.take_parked()
            }
            (Some(throttle), None) => {
                let parked = throttle.take_parked();
                self.door.as_deref_mut().expect("a door").throttle = None;
                parked
            }
            (None, Some(_)) => {
                let mut throttle = Throttle::new(config).expect("a rate");
                for token in self.conns.tokens() {
                    throttle.seat(slot(token), now);
                }
                if self.door.is_none() {
                    // Every other front-door feature is fixed, and was off.
                    self.door = Door::new(config, None, None).map(Box::new);
                }
                self.door
                    .as_deref_mut()
                    .expect("a door with a rate")
                    .throttle = Some(throttle);
                Vec::new()
            }
            (None, None) => Vec::new(),
        };
        for token in parked {
            if let Some(conn) = self.conns.get_mut(token).filter(|conn| conn.throttled) {
                conn.throttled = false;
                self.drive(io, token);
            }
        }
    }

    /// Moves every connection's timer to its deadline under the new
    /// limits when that is earlier (a later one is found when the timer
    /// fires: it is then scheduled again).
    fn rearm_timers(&mut self) {
        for token in self.conns.tokens() {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if conn.state == State::Closed {
                continue;
            }
            let (deadline, _) = conn.deadline(&self.timeouts);
            if let Some((key, at)) = conn.timer
                && deadline < at
            {
                self.wheel.cancel(key);
                conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
            }
        }
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        for token in upstreams.conns.tokens() {
            let Some(up) = upstreams.conns.get_mut(token) else {
                continue;
            };
            if up.conn.state == State::Closed {
                continue;
            }
            let (deadline, _) = up.deadline(&upstreams.settings.deadlines);
            if let Some((key, at)) = up.conn.timer
                && deadline < at
            {
                self.wheel.cancel(key);
                up.conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
            }
        }
    }
}
