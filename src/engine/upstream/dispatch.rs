//! A shard's upstreams: one [`Pool`] per upstream address, the upstream
//! connections themselves (a table beside the client table: same rings,
//! same wheel, same loop), the replies clients await ([`Pendings`]), and
//! [`Upstreams::send`], which puts one call on a connection, in a lane's
//! queue, or refuses it at once.
//!
//! Why a table of its own rather than client connections with a role
//! flag: serving a client writes into an upstream connection's ring, and
//! reading an upstream reply writes into a client's; with two tables both
//! are plain disjoint borrows. Client-only bookkeeping (`--max-conns`, the
//! accept pacing, the drain) stays untouched, and the token says which
//! table an event or a deadline is for (`conn::table::UPSTREAM_BIT`).

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::engine::driver::Token;

use super::breaker::State;
use super::conn::{self, Deadlines, Greeting, Greetings, Outstanding, UpConn};
use super::pending::Pendings;
use super::pool::{Pool, Waiting};
use crate::config::{BackoffSettings, BreakerSettings, Config, Protocol, ReadFrom};
use crate::engine::buffer::Pool as Rings;
use crate::engine::conn::Table;
use crate::engine::metrics::{FailFast, ShardMetrics, UpstreamError};
use crate::engine::service::{CallError, Caller, Dialect, Redirect};
use crate::engine::timer::Millis;

/// What a shard needs to know to call upstreams, from the validated
/// settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Each upstream: its name as written and its address.
    pub upstreams: Vec<(String, SocketAddr)>,
    /// `--upstream-conns`: lanes (connections) per upstream per shard, for
    /// each [`Dialect`].
    pub lanes: usize,
    /// `--upstream-pipeline`: replies one connection may owe.
    pub pipeline: usize,
    /// `--upstream-queue`: requests one lane may hold waiting.
    pub queue_max: usize,
    /// `--connect-timeout`, `--upstream-timeout`, `--upstream-idle-timeout`.
    pub deadlines: Deadlines,
    /// `--max-pending`: replies one client may await.
    pub max_pending: usize,
    /// `--max-pending-bytes`: what the shard's awaited replies may hold.
    pub max_pending_bytes: usize,
    /// The breaker thresholds.
    pub breaker: BreakerSettings,
    /// The reconnect delays.
    pub backoff: BackoffSettings,
    /// Sent first on every new connection of each dialect
    /// (`--upstream-password`, `HELLO 3`, `READONLY`).
    pub greeting: Greetings,
    /// Sent first instead on a new connection to the upstream named
    /// (`--upstream-credential`).
    pub greetings: Vec<(String, Greetings)>,
    /// The health check (`--health-check-interval`), for RESP upstreams.
    pub health: Option<Health>,
    /// Replies may redirect their request to another upstream
    /// ([`crate::engine::service::Service::redirect`]): connections keep
    /// each request's bytes until its reply (`--cluster`).
    pub redirects: bool,
}

/// The request each shard sends each upstream every `interval`: any reply
/// is a success for the breaker, a failed connect or a timeout a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// How often.
    pub interval: Millis,
    /// What (`PING`): static, so that a check allocates nothing.
    pub request: &'static [u8],
}

/// The awaited-reply token of a health check: no client awaits it, and
/// [`Pendings`] never hands it out (its slot has the upstream bit).
pub const HEALTH_CHECK: Token = Token(usize::MAX);

/// The awaited-reply token of a request sent before a redirected one
/// (`ASKING`): no client awaits its reply either.
pub const DISCARD: Token = Token(usize::MAX - 1);

/// A request to send again elsewhere: its reply redirected it.
#[derive(Clone, Copy, Debug)]
pub struct Redirected {
    /// The call it is.
    pub owed: Outstanding,
    /// Where it goes, and what goes first.
    pub to: Redirect,
    /// The dialect of the connection it came on: it goes on one of the
    /// same dialect.
    pub dialect: Dialect,
    /// Its bytes in [`Upstreams::redirected_bytes`].
    pub at: usize,
}

impl Settings {
    /// What a shard needs to call the upstreams of a validated `config`;
    /// `None` without upstreams.
    pub fn from_config(config: &Config) -> Option<Settings> {
        if config.upstreams.is_empty() {
            return None;
        }
        debug_assert_eq!(
            config.upstreams.len(),
            config.upstream_addrs.len(),
            "validated"
        );
        let ms = |d: std::time::Duration| d.as_millis().min(u64::MAX as u128) as Millis;
        let names = config.upstreams.iter().cloned();
        Some(Settings {
            upstreams: names.zip(config.upstream_addrs.iter().copied()).collect(),
            lanes: config.upstream_conns,
            pipeline: config.upstream_pipeline,
            queue_max: config.upstream_queue,
            deadlines: Deadlines {
                connect: ms(config.connect_timeout),
                request: ms(config.upstream_timeout),
                idle: ms(config.upstream_idle_timeout),
            },
            max_pending: config.max_pending,
            max_pending_bytes: config.max_pending_bytes,
            breaker: config.breaker,
            backoff: config.backoff,
            greeting: conn::greetings(
                config
                    .upstream_password
                    .as_deref()
                    .map(|password| (config.upstream_user.as_deref(), password)),
                config.protocol == Protocol::Resp,
                config.cluster.is_some() && config.read_from != ReadFrom::Primary,
            ),
            greetings: greetings(config),
            health: (config.protocol == Protocol::Resp && !config.health_check_interval.is_zero())
                .then(|| Health {
                    interval: ms(config.health_check_interval),
                    request: b"*1\r\n$4\r\nPING\r\n",
                }),
            redirects: config.cluster.is_some(),
        })
    }
}

impl Settings {
    /// What a new connection to the upstream `name` in `dialect` sends
    /// first.
    pub fn greeting_for(&self, name: &str, dialect: Dialect) -> Option<&Greeting> {
        let own = self.greetings.iter().find(|(upstream, _)| upstream == name);
        let greetings = own.map_or(&self.greeting, |(_, greetings)| greetings);
        greetings[dialect.index()].as_ref()
    }
}

/// The greetings of `--upstream-credential`s (not with `--cluster`, so
/// never `READONLY`), by upstream name.
pub fn greetings(config: &Config) -> Vec<(String, Greetings)> {
    let resp3 = config.protocol == Protocol::Resp;
    let login = |(addr, user, password): (&str, &str, &str)| {
        let credentials = Some((Some(user), password));
        (addr.to_string(), conn::greetings(credentials, resp3, false))
    };
    config.upstream_logins().map(login).collect()
}

/// Idle buffers of awaited replies a shard keeps for reuse.
const PENDING_BUFFERS_FREE_MAX: usize = 256;

/// A shard's upstreams and the replies its clients await from them.
pub struct Upstreams {
    /// By upstream index.
    pub pools: Vec<Pool>,
    /// Upstream connections (tokens with `UPSTREAM_BIT`).
    pub conns: Table<UpConn>,
    /// Replies clients await.
    pub pending: Pendings,
    /// The settings.
    pub settings: Settings,
    /// A lane queued a request and has no connection: the shard should
    /// connect before it next waits.
    pub connect_wanted: bool,
    /// Requests waiting in every lane's queue together, so that the
    /// per-turn work on queues (deadlines, connects) is skipped when none
    /// waits. Invariant: the sum of the lanes' queue lengths.
    pub waiting: usize,
    /// When the gauges were last refreshed (shard milliseconds).
    pub published_at: Millis,
    /// A refresh was skipped: when it is due.
    pub publish_due: Option<Millis>,
    /// When the next health checks go out (with [`Settings::health`]).
    pub health_due: Millis,
    /// Requests whose replies redirected them, to send again this turn.
    pub redirected: Vec<Redirected>,
    /// Their bytes.
    pub redirected_bytes: Vec<u8>,
}

impl Upstreams {
    /// The upstreams of shard number `shard`, with rings of
    /// `ring_capacity` bytes.
    pub fn new(settings: Settings, shard: usize, ring_capacity: usize) -> Upstreams {
        let pools = settings
            .upstreams
            .iter()
            .enumerate()
            .map(|(index, (name, addr))| {
                // Distinct per (shard, upstream), so shards reconnect apart.
                let seed = ((shard as u64) << 32) ^ (index as u64) ^ 0x9e37_79b9_7f4a_7c15;
                Pool::new(
                    name.clone(),
                    *addr,
                    settings.lanes,
                    settings.breaker,
                    settings.backoff,
                    seed,
                )
            })
            .collect();
        // The first checks go out one interval after the start.
        let health_due = settings.health.as_ref().map_or(0, |health| health.interval);
        Upstreams {
            pools,
            conns: Table::upstream(16),
            pending: Pendings::new(
                ring_capacity,
                settings.max_pending_bytes,
                PENDING_BUFFERS_FREE_MAX,
            ),
            settings,
            connect_wanted: false,
            waiting: 0,
            published_at: 0,
            publish_due: None,
            health_due,
            redirected: Vec::new(),
            redirected_bytes: Vec::new(),
        }
    }

    /// A pool for the upstream a reload added in slot `slot`.
    pub fn add_pool(&mut self, shard: usize, slot: usize, name: String, addr: SocketAddr) {
        debug_assert_eq!(slot, self.pools.len());
        let settings = &self.settings;
        let seed = ((shard as u64) << 32) ^ (slot as u64) ^ 0x9e37_79b9_7f4a_7c15;
        let pool = Pool::new(
            name,
            addr,
            settings.lanes,
            settings.breaker,
            settings.backoff,
            seed,
        );
        self.pools.push(pool);
    }

    /// Where a call of `len` bytes to `upstream` on lane `lane` goes, the
    /// breaker aside: `Ok(true)` straight into the lane's connection (ready,
    /// under its pipeline bound, with room, nothing queued ahead),
    /// `Ok(false)` into the lane's queue, or refused at once (a failed
    /// connect backing off, a full queue).
    fn route(
        &self,
        upstream: usize,
        lane: usize,
        len: usize,
        capacity: usize,
        now: Millis,
    ) -> Result<bool, FailFast> {
        let pool = &self.pools[upstream];
        let refused = pool.refused(lane, now);
        let lane = &pool.lanes[lane];
        let direct = lane.queue.is_empty()
            && lane
                .conn
                .and_then(|token| self.conns.get(token))
                .is_some_and(|up| up.has_room(len, self.settings.pipeline, capacity));
        if direct {
            Ok(true)
        } else if lane.conn.is_none()
            && (refused || (now < pool.retry_at && pool.breaker.state() == State::Closed))
        {
            Err(FailFast::Backoff)
        } else if !lane.queue_has_room(len, self.settings.queue_max, capacity) {
            Err(FailFast::QueueFull)
        } else {
            Ok(false)
        }
    }

    /// Puts call `call` of the awaited reply `pending` (client `client`,
    /// calling in `dialect`) to `upstream`, on the client's lane of that
    /// dialect: straight into the lane's connection when it is ready,
    /// under its pipeline bound and with room, and nothing is queued ahead;
    /// else into the lane's queue; else (or with the breaker open, or
    /// while a failed connect backs off) refused at once. An accepted call
    /// is counted by the breaker, whose outcome it will report.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        (pending, call, hops): (Token, usize, u8),
        (client, dialect): (Token, Dialect),
        upstream: usize,
        request: &[u8],
        rings: &mut Rings,
        queue: &mut VecDeque<Token>,
        metrics: &ShardMetrics,
        now_us: u64,
    ) -> Result<(), CallError> {
        let Some(pool) = self.pools.get(upstream) else {
            debug_assert!(false, "call to upstream {upstream}, which does not exist");
            return Err(CallError::Unavailable);
        };
        let counts = &metrics.upstreams[upstream];
        let now = now_us / 1000;
        let capacity = rings.ring_capacity();
        let len = request.len();
        if len > capacity {
            counts.errors[UpstreamError::TooLarge.index()].inc();
            return Err(CallError::TooLarge);
        }
        let lane_index = pool.lane_of(client, dialect);
        let direct = match self.route(upstream, lane_index, len, capacity, now) {
            Ok(direct) => direct,
            Err(reason) => {
                counts.fail_fast[reason.index()].inc();
                return Err(CallError::Unavailable);
            }
        };
        let pool = &mut self.pools[upstream];
        let lane = &mut pool.lanes[lane_index];
        // Last, as it takes a probe slot when half-open: only for a call
        // that will be sent and so will report an outcome.
        if !pool.breaker.allow(now) {
            counts.fail_fast[FailFast::BreakerOpen.index()].inc();
            return Err(CallError::Unavailable);
        }
        match pending {
            HEALTH_CHECK => counts.health_checks.inc(),
            DISCARD => {}
            _ => counts.requests.inc(),
        }
        let call = call as u32;
        let token = if direct {
            let token = lane.conn.expect("direct needs a connection");
            let up = self.conns.get_mut(token).expect("checked above");
            let sent_us = now_us;
            write_request(
                up,
                request,
                Outstanding {
                    pending,
                    call,
                    sent_us,
                    len: len as u32,
                    hops,
                },
                rings,
            );
            Some(token)
        } else {
            let waiting = Waiting {
                pending,
                call,
                len: len as u32,
                since_us: now_us,
                hops,
            };
            lane.enqueue(waiting, request, self.settings.queue_max, rings);
            self.waiting += 1;
            // Without a connection, one is made; with one, its next drive
            // takes what fits from the queue.
            self.connect_wanted |= lane.conn.is_none();
            lane.conn
        };
        if let Some(token) = token
            && let Some(up) = self.conns.get_mut(token)
            && !up.conn.queued
        {
            up.conn.queued = true;
            queue.push_back(token);
        }
        Ok(())
    }

    /// Moves requests from the front of `up`'s lane queue into it while it
    /// has room; returns how many.
    pub fn take_queued(&mut self, token: Token, rings: &mut Rings, now_us: u64) -> usize {
        let Some(up) = self.conns.get_mut(token) else {
            return 0;
        };
        let lane = &mut self.pools[up.upstream].lanes[up.lane];
        let mut moved = 0;
        while let Some(len) = lane.front_len() {
            if !up.has_room(len, self.settings.pipeline, rings.ring_capacity()) {
                break;
            }
            let output = up.conn.link.output.get_or_insert_with(|| rings.take());
            let sent = match up.keeps_sent {
                true => Some(up.sent.get_or_insert_with(|| rings.take())),
                false => None,
            };
            let waiting = lane
                .dequeue_into(output, sent, rings)
                .expect("front exists");
            up.outstanding.push_back(Outstanding {
                pending: waiting.pending,
                call: waiting.call,
                // The timeout counts from the queueing, so waiting for a
                // connection cannot stretch it.
                sent_us: waiting.since_us.min(now_us),
                len: waiting.len,
                hops: waiting.hops,
            });
            moved += 1;
        }
        self.waiting -= moved;
        moved
    }

    /// When the loop must wake for the upstreams' sake: the earliest time
    /// a queued request times out, or a skipped gauge refresh is due.
    pub fn next_wake(&self) -> Option<Millis> {
        let health = self.settings.health.as_ref().map(|_| self.health_due);
        [self.next_queue_deadline(), self.publish_due, health]
            .into_iter()
            .flatten()
            .min()
    }

    /// The earliest time a queued request times out, if any waits.
    pub fn next_queue_deadline(&self) -> Option<Millis> {
        if self.waiting == 0 {
            return None;
        }
        let timeout = self.settings.deadlines.request;
        self.pools
            .iter()
            .flat_map(|pool| pool.lanes.iter())
            .filter_map(|lane| lane.queue.front())
            .map(|waiting| waiting.since_us / 1000 + timeout)
            .min()
    }
}

/// Appends `request` to `up`'s output ring and records the reply it owes.
fn write_request(up: &mut UpConn, request: &[u8], outstanding: Outstanding, rings: &mut Rings) {
    let output = up.conn.link.output.get_or_insert_with(|| rings.take());
    let taken = output.push(request);
    assert_eq!(taken, request.len(), "request written beyond its room");
    if up.keeps_sent {
        let sent = up.sent.get_or_insert_with(|| rings.take());
        let taken = sent.push(request);
        assert_eq!(taken, request.len(), "request kept beyond its room");
    }
    up.outstanding.push_back(outstanding);
}

/// The engine's side of [`crate::engine::service::Reply::call`] while one client
/// frame is served: the calls go to [`Upstreams::send`], on behalf of one
/// awaited reply opened at the first call.
pub struct Calls<'a> {
    /// The shard's upstreams.
    pub upstreams: &'a mut Upstreams,
    /// The shard's ring pool.
    pub rings: &'a mut Rings,
    /// The shard's queue of connections to drive this turn (a connection
    /// given a request goes there to be flushed).
    pub queue: &'a mut VecDeque<Token>,
    /// The shard's counters.
    pub metrics: &'a ShardMetrics,
    /// The client being served.
    pub client: Token,
    /// The shard's clock, in microseconds.
    pub now_us: u64,
    /// The awaited reply opened for this frame, once it made a call.
    pub pending: Option<Token>,
}

impl Calls<'_> {
    /// The awaited reply of this frame, opened at its first call or keep.
    fn entry(&mut self) -> Token {
        match self.pending {
            Some(pending) => pending,
            None => *self
                .pending
                .insert(self.upstreams.pending.open(self.client)),
        }
    }
}

impl Caller for Calls<'_> {
    fn call(&mut self, index: usize, upstream: usize, dialect: Dialect, request: &[u8]) {
        let pending = self.entry();
        let call = self.upstreams.pending.add_call(pending);
        debug_assert_eq!(call, index);
        let sent = self.upstreams.send(
            (pending, call, 0),
            (self.client, dialect),
            upstream,
            request,
            self.rings,
            self.queue,
            self.metrics,
            self.now_us,
        );
        if let Err(error) = sent {
            self.upstreams.pending.record(pending, call, Err(error));
        }
    }

    fn available(&self, upstream: usize) -> bool {
        let now = self.now_us / 1000;
        self.upstreams.pools.get(upstream).is_some_and(|pool| {
            !pool.retired && pool.breaker.state() == State::Closed && now >= pool.retry_at
        })
    }

    fn keep(&mut self, bytes: &[u8]) -> Result<(), CallError> {
        let opened = self.pending.is_none();
        let pending = self.entry();
        let kept = self.upstreams.pending.keep(pending, bytes);
        if kept.is_err() && opened {
            // Nothing was sent for it: no entry.
            self.upstreams.pending.discard(pending);
            self.pending = None;
        }
        kept
    }
}
