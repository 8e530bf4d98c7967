//! The shard's side of upstream connections: connecting them, driving them
//! (write requests, read replies, hand each reply to the client that
//! awaits it), their deadlines, and closing them with every request they
//! owed answered by an error. Same loop, same rings, same wheel as client
//! connections; the [`Driver`] moves their bytes the same way.
//!
//! A reply read is matched to the oldest request the connection owes (an
//! upstream answers a connection's requests in order). It is written
//! straight into the client's output ring when it is the client's next
//! awaited reply and there is room; otherwise it is stored in the awaited
//! entry until the replies before it are written.

use std::collections::VecDeque;

use super::core::Core;
use super::pump::Upstream;
use super::serve::Responder;
use crate::engine::buffer::{Pool, Ring};
use crate::engine::codec::reply::Skip;
use crate::engine::codec::{Codec, Decoded, Protocol};
use crate::engine::conn::{Conn, State, Table};
use crate::engine::driver::{Driver, Token};
use crate::engine::metrics::{CloseReason, ShardMetrics, UpstreamError};
use crate::engine::service::{Answer, CallError, Dialect, REDIRECTS_MAX};
use crate::engine::timer::Millis;
use crate::engine::upstream::Upstreams;
use crate::engine::upstream::breaker::{FailureKind, State as BreakerState};
use crate::engine::upstream::conn::{Expiry, Outstanding, Phase, UpConn};
use crate::engine::upstream::dispatch::{DISCARD, HEALTH_CHECK, Redirected};
use crate::engine::upstream::pending::Pendings;

impl Core {
    /// Moves one upstream connection as far as it can go now: finish its
    /// connect, then pump it (read replies and hand them on, take queued
    /// requests, write).
    pub(super) fn drive_upstream<I: Driver>(&mut self, io: &mut I, token: Token) {
        if !self.connected(io, token) {
            return;
        }
        let pumped = self.pump::<Upstream, I>(io, token);
        self.close_doomed(io);
        let upstreams = self.upstreams.as_deref_mut().expect("upstream");
        let up = upstreams.conns.get_mut(token).expect("live");
        // An upstream that closed will never send what it still owed.
        let failure = pumped.err().or(up.conn.eof.then_some(CallError::Reset));
        if failure == Some(CallError::Connect) {
            let dialect = upstreams.pools[up.upstream].dialect_of(up.lane);
            if dialect == Dialect::Resp2 {
                // The greeting was refused: as a failed connect.
                self.connect_failed(io, token);
            } else {
                self.greeting_refused(io, token);
            }
            return;
        }
        if let Some(error) = failure {
            self.close_upstream(io, token, Some(error));
            return;
        }
        let (deadline, _) = up.deadline(&upstreams.settings.deadlines);
        if self.close_if_retired(io, token) {
            return;
        }
        self.mem_settle(token);
        self.settle(io, token, deadline);
    }

    /// Closes the upstream connection `token` if a reload removed its
    /// upstream and it owes nothing: no reply outstanding, no request
    /// waiting in its lane or in its output ring. True if it closed.
    pub(super) fn close_if_retired<I: Driver>(&mut self, io: &mut I, token: Token) -> bool {
        let Some(upstreams) = self.upstreams.as_deref() else {
            return false;
        };
        let Some(up) = upstreams.conns.get(token) else {
            return false;
        };
        let pool = &upstreams.pools[up.upstream];
        let owes_nothing = up.outstanding.is_empty()
            && pool.lanes[up.lane].queue.is_empty()
            && up.conn.output_len() == 0;
        if !pool.retired || !owes_nothing || up.conn.state == State::Closed {
            return false;
        }
        log::debug!(
            "upstream {}: removed by a reload; closing a drained connection",
            pool.name
        );
        self.close_upstream(io, token, None);
        true
    }

    /// Whether the upstream connection `token` is live and connected,
    /// finishing its connect if the driver says it completed (a failed one
    /// closes it).
    fn connected<I: Driver>(&mut self, io: &mut I, token: Token) -> bool {
        let now = self.clock.now;
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return false;
        };
        let Some(up) = upstreams.conns.get_mut(token) else {
            return false;
        };
        if up.conn.state == State::Closed {
            return false;
        }
        if up.phase != Phase::Ready {
            match io.connect_status(token, &mut up.conn.link) {
                None => return false,
                Some(Err(error)) => {
                    let name = &upstreams.pools[up.upstream].name;
                    log::debug!("upstream {name}: connect: {error}");
                    self.connect_failed(io, token);
                    return false;
                }
                Some(Ok(())) => {
                    up.phase = Phase::Ready;
                    up.conn.last_active = now;
                    up.conn.write_since = now;
                    let pool = &upstreams.pools[up.upstream];
                    let dialect = pool.dialect_of(up.lane);
                    if let Some(greeting) = upstreams.settings.greeting_for(&pool.name, dialect) {
                        let output = up.conn.link.output.get_or_insert_with(|| self.pool.take());
                        let written = output.push(&greeting.request);
                        debug_assert_eq!(written, greeting.request.len(), "validated to fit");
                        up.greeting_owed = greeting.replies();
                    }
                    // Replies may come before any readiness event says so.
                    io.expect_read(token);
                    let pool = &mut upstreams.pools[up.upstream];
                    pool.breaker.on_connected(now);
                    pool.backoff.reset();
                    pool.retry_at = 0;
                }
            }
        }
        true
    }

    /// Reads every whole reply in `token`'s input and hands each to the
    /// client awaiting it; returns how many. A reply larger than the ring
    /// is passed over as its bytes come, and its request alone gets
    /// `TooLarge`: the connection stays in step for the requests behind
    /// it. An error closes the connection: bytes that are not a reply, or
    /// a reply with no request to answer (`Reset`).
    pub(super) fn take_replies(&mut self, token: Token) -> Result<usize, CallError> {
        let Sides {
            mut clients,
            upstreams,
            metrics,
            scratch,
        } = self.sides();
        let max_pending = upstreams.settings.max_pending;
        let up = upstreams.conns.get_mut(token).expect("live");
        let Some(input) = up.conn.link.input.as_ref() else {
            return Ok(0);
        };
        if input.len() <= up.scanned {
            // Nothing new since the last look found no whole reply.
            return Ok(0);
        }
        let full = input.is_full();
        let (first, second) = input.readable();
        // Replies are read from one slice: a wrapped ring is copied once.
        let bytes: &[u8] = if second.is_empty() {
            first
        } else {
            let len = input.len();
            input.copy_out(0, &mut scratch[..len]);
            &scratch[..len]
        };
        let counts = &metrics.upstreams[up.upstream];
        let dialect = upstreams.pools[up.upstream].dialect_of(up.lane);
        // What the replies the greeting owes must be (looked up only while
        // one is owed: the first read of a connection).
        let greeting = match up.greeting_owed {
            0 => None,
            _ => {
                let name = &upstreams.pools[up.upstream].name;
                upstreams.settings.greeting_for(name, dialect)
            }
        };
        let breaker = &mut upstreams.pools[up.upstream].breaker;
        let mut reader = Replies {
            bytes,
            at: 0,
            full,
            upstream: up.upstream,
        };
        let mut replies = 0;
        let result = loop {
            let codec = &clients.responder.codec;
            let outcome = match reader.next(codec, &mut up.skipping, &mut up.conn.progress) {
                Next::Reply(outcome) => outcome,
                Next::Wait => break Ok(()),
                Next::Broken => break Err(CallError::Reset),
            };
            if up.greeting_owed > 0 {
                let checked = match (greeting, outcome) {
                    (Some(greeting), Ok(reply)) => greeting.check(up.greeting_owed, reply),
                    _ => Err("greeting"),
                };
                up.greeting_owed -= 1;
                let Err(command) = checked else {
                    continue;
                };
                let name = &upstreams.pools[up.upstream].name;
                let said = outcome.map(first_line).unwrap_or_default();
                log::warn!("upstream {name}: the greeting's {command} was refused: {said}");
                break Err(CallError::Connect);
            }
            if outcome == Err(CallError::TooLarge) {
                counts.errors[UpstreamError::TooLarge.index()].inc();
            }
            let Some(owed) = up.outstanding.pop_front() else {
                log::debug!("upstream {}: a reply to no request", up.upstream);
                break Err(CallError::Reset);
            };
            // The upstream answered: whatever the reply, it is no failure
            // of the upstream's (a reply too large is the request's doing).
            breaker.on_success(clients.now);
            if let Some(sent) = up.sent.as_mut() {
                let to = outcome
                    .ok()
                    .filter(|reply| reply.first() == Some(&b'-') && redirectable(&owed))
                    .and_then(|reply| clients.responder.service.redirect(reply));
                let len = owed.len as usize;
                if let Some(to) = to {
                    counts.redirects.inc();
                    let bytes = &mut upstreams.redirected_bytes;
                    let at = bytes.len();
                    bytes.resize(at + len, 0);
                    sent.copy_out(0, &mut bytes[at..]);
                    let redirected = Redirected {
                        owed,
                        to,
                        at,
                        dialect,
                    };
                    upstreams.redirected.push(redirected);
                }
                sent.consume(len);
                if to.is_some() {
                    replies += 1;
                    continue;
                }
            }
            let waited = clients.now_us.saturating_sub(owed.sent_us);
            counts.latency.observe_us(waited);
            let (pending, call) = (owed.pending, owed.call as usize);
            let pendings = &mut upstreams.pending;
            clients.complete(pendings, max_pending, pending, call, outcome);
            replies += 1;
        };
        if up.sent.as_ref().is_some_and(Ring::is_empty) {
            clients.pool.give(up.sent.take().expect("checked"));
        }
        let used = reader.at;
        let input = up.conn.link.input.as_mut().expect("read from it");
        input.consume(used);
        up.scanned = input.len();
        if input.is_empty() {
            up.scanned = 0;
            if let Some(input) = up.conn.link.input.take() {
                clients.pool.give(input);
            }
        }
        result.map(|()| replies)
    }

    /// The client side and the upstreams apart, for handing upstream
    /// outcomes to the clients that await them.
    fn sides(&mut self) -> Sides<'_> {
        Sides {
            clients: Clients {
                conns: &mut self.conns,
                queue: &mut self.queue,
                responder: &mut self.responder,
                pool: &mut self.pool,
                doomed: &mut self.doomed,
                now: self.clock.now,
                now_us: self.clock.now_us,
            },
            upstreams: self.upstreams.as_deref_mut().expect("upstreams"),
            metrics: &self.metrics,
            scratch: &mut self.scratch,
        }
    }

    /// Connects the lanes that have requests waiting and no connection
    /// (unless a failed connect is backing off while the breaker is closed).
    pub(super) fn connect_lanes<I: Driver>(&mut self, io: &mut I) {
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        upstreams.connect_wanted = false;
        if upstreams.waiting == 0 || (self.drain_until.is_some() && self.conns.is_empty()) {
            // Only lanes with requests waiting get a connection; once the
            // drain has no client left, none does.
            return;
        }
        let now = self.clock.now;
        // Every dialect's lanes: one no client calls in has nothing queued.
        let pools = upstreams.pools.len();
        let lanes = upstreams.settings.lanes * Dialect::ALL.len();
        for upstream in 0..pools {
            for lane in 0..lanes {
                let upstreams = self.upstreams.as_deref_mut().expect("checked");
                let pool = &upstreams.pools[upstream];
                let waiting = &pool.lanes[lane];
                if waiting.conn.is_some() || waiting.queue.is_empty() {
                    continue;
                }
                if now < pool.retry_at && pool.breaker.state() == BreakerState::Closed {
                    continue;
                }
                self.open_upstream(io, upstream, lane);
            }
        }
    }

    /// Starts a connection for `lane` of `upstream`.
    fn open_upstream<I: Driver>(&mut self, io: &mut I, upstream: usize, lane: usize) {
        let now = self.clock.now;
        let upstreams = self.upstreams.as_deref_mut().expect("checked");
        let token = upstreams.conns.next_token();
        let addr = upstreams.pools[upstream].addr;
        self.metrics.upstreams[upstream].connects.inc();
        let stream = match io.connect(token, addr) {
            Ok(stream) => {
                if let Some(options) = self.door.as_ref().and_then(|door| door.sockets) {
                    let _ = options.apply(&stream);
                }
                stream
            }
            Err(error) => {
                log::debug!(
                    "upstream {}: connect: {error}",
                    upstreams.pools[upstream].name
                );
                self.lane_connect_failed(upstream, lane);
                self.close_doomed(io);
                return;
            }
        };
        let conn = Conn::new(stream, now);
        let pipeline = upstreams.settings.pipeline;
        let deadline = now + upstreams.settings.deadlines.connect;
        let inserted = upstreams
            .conns
            .insert(|_| UpConn::new(conn, upstream, lane, pipeline, now));
        debug_assert_eq!(inserted, token);
        let keeps_sent = upstreams.settings.redirects;
        upstreams.pools[upstream].lanes[lane].conn = Some(token);
        let up = upstreams.conns.get_mut(token).expect("just inserted");
        up.keeps_sent = keeps_sent;
        up.conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
    }

    /// `token`'s connect failed or timed out.
    fn connect_failed<I: Driver>(&mut self, io: &mut I, token: Token) {
        let upstreams = self.upstreams.as_deref_mut().expect("checked");
        let Some(up) = upstreams.conns.get(token) else {
            return;
        };
        let (upstream, lane) = (up.upstream, up.lane);
        // Only requests pipelined behind a refused greeting are owed.
        self.close_upstream(io, token, Some(CallError::Connect));
        self.lane_connect_failed(upstream, lane);
        self.close_doomed(io);
    }

    /// The upstream refused the greeting of `token`, a connection of a
    /// dialect other than the first (its `HELLO 3`): that dialect is not
    /// tried again for [`GREETING_RETRY_MS`], and the requests that waited
    /// for the connection fail. The upstream itself is up (its other
    /// dialect's connections are served): its breaker and backoff do not
    /// count this, or one client's RESP3 could fail every RESP2 client.
    fn greeting_refused<I: Driver>(&mut self, io: &mut I, token: Token) {
        let upstreams = self.upstreams.as_deref_mut().expect("checked");
        let Some(up) = upstreams.conns.get(token) else {
            return;
        };
        let (upstream, lane) = (up.upstream, up.lane);
        let pool = &mut upstreams.pools[upstream];
        let dialect = pool.dialect_of(lane);
        // First: the requests pipelined behind the greeting then fail
        // without counting against the upstream (`fail_owed`).
        pool.refused_until[dialect.index()] = self.clock.now + GREETING_RETRY_MS;
        self.close_upstream(io, token, Some(CallError::Connect));
        self.metrics.upstreams[upstream].errors[UpstreamError::Connect.index()].inc();
        self.fail_lane_queue(upstream, lane);
        self.close_doomed(io);
    }

    /// A connect attempt for `lane` of `upstream` failed: the breaker
    /// counts it, the next attempt backs off, and the requests that waited
    /// for it fail at once (nothing piles up behind a dead upstream).
    fn lane_connect_failed(&mut self, upstream: usize, lane: usize) {
        let now = self.clock.now;
        let upstreams = self.upstreams.as_deref_mut().expect("checked");
        let pool = &mut upstreams.pools[upstream];
        pool.breaker.on_failure(now, FailureKind::Connect);
        pool.retry_at = now + pool.backoff.next_delay();
        self.metrics.upstreams[upstream].errors[UpstreamError::Connect.index()].inc();
        self.fail_lane_queue(upstream, lane);
    }

    /// Fails every request waiting in `lane` of `upstream` (its connection
    /// could not be made).
    fn fail_lane_queue(&mut self, upstream: usize, lane: usize) {
        let Sides {
            mut clients,
            upstreams,
            ..
        } = self.sides();
        let max_pending = upstreams.settings.max_pending;
        let pool = &mut upstreams.pools[upstream];
        while let Some(waiting) = pool.lanes[lane].dequeue_dropped(clients.pool) {
            upstreams.waiting -= 1;
            clients.complete(
                &mut upstreams.pending,
                max_pending,
                waiting.pending,
                waiting.call as usize,
                Err(CallError::Connect),
            );
        }
    }

    /// Sends each upstream its health check once it is due (not while
    /// draining): into a ready connection, or queued for one, which
    /// `connect_lanes` then makes. The breaker hears the outcome as for a
    /// request; no client awaits it.
    pub(super) fn check_health(&mut self) {
        let (now, now_us) = (self.clock.now, self.clock.now_us);
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        if now < upstreams.health_due || self.drain_until.is_some() {
            return;
        }
        let Some(health) = upstreams.settings.health.clone() else {
            return;
        };
        upstreams.health_due = now + health.interval;
        for upstream in 0..upstreams.pools.len() {
            // A reload removed it: its connections drain and close.
            if upstreams.pools[upstream].retired {
                continue;
            }
            // Refused at once (breaker open, backing off, queue full):
            // nothing to check until that passes.
            let _ = upstreams.send(
                (HEALTH_CHECK, 0, 0),
                (Token(0), Dialect::Resp2),
                upstream,
                health.request,
                &mut self.pool,
                &mut self.queue,
                &self.metrics,
                now_us,
            );
        }
    }

    /// Sends again, where their replies said, the requests redirected while
    /// replies were read (an `ASKING` first when asked); a request whose
    /// client has gone is dropped, one that cannot be sent fails its call.
    pub(super) fn resend_redirected(&mut self) {
        let now_us = self.clock.now_us;
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        if upstreams.redirected.is_empty() {
            return;
        }
        let list = std::mem::take(&mut upstreams.redirected);
        let bytes = std::mem::take(&mut upstreams.redirected_bytes);
        let mut failed = Vec::new();
        for redirected in &list {
            let owed = redirected.owed;
            let Some(client) = upstreams
                .pending
                .get(owed.pending)
                .map(|entry| entry.client)
            else {
                continue;
            };
            let target = redirected.to.upstream;
            let (pool, queue, metrics) = (&mut self.pool, &mut self.queue, &*self.metrics);
            if !redirected.to.before.is_empty() {
                let before = redirected.to.before;
                let _ = upstreams.send(
                    (DISCARD, 0, 0),
                    (client, redirected.dialect),
                    target,
                    before,
                    pool,
                    queue,
                    metrics,
                    now_us,
                );
            }
            let request = &bytes[redirected.at..redirected.at + owed.len as usize];
            let call = (owed.pending, owed.call as usize, owed.hops + 1);
            let lane = (client, redirected.dialect);
            if let Err(error) =
                upstreams.send(call, lane, target, request, pool, queue, metrics, now_us)
            {
                failed.push((owed, error));
            }
        }
        let upstreams = self.upstreams.as_deref_mut().expect("checked");
        upstreams.redirected = list;
        upstreams.redirected.clear();
        upstreams.redirected_bytes = bytes;
        upstreams.redirected_bytes.clear();
        if failed.is_empty() {
            return;
        }
        let Sides {
            mut clients,
            upstreams,
            ..
        } = self.sides();
        let max_pending = upstreams.settings.max_pending;
        for (owed, error) in failed {
            let (pending, call) = (owed.pending, owed.call as usize);
            clients.complete(
                &mut upstreams.pending,
                max_pending,
                pending,
                call,
                Err(error),
            );
        }
    }

    /// An upstream connection's wheel entry fired: close it if its
    /// deadline passed, else re-schedule.
    pub(super) fn upstream_timer<I: Driver>(&mut self, io: &mut I, token: Token) {
        let now = self.clock.now;
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        let Some(up) = upstreams.conns.get_mut(token) else {
            return;
        };
        if up.conn.state == State::Closed {
            return;
        }
        let (deadline, expiry) = up.deadline(&upstreams.settings.deadlines);
        if now < deadline {
            up.conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
            return;
        }
        up.conn.timer = None;
        match expiry {
            Expiry::Connect => {
                log::debug!(
                    "upstream {}: connect timed out",
                    upstreams.pools[up.upstream].name
                );
                self.connect_failed(io, token);
            }
            Expiry::Request => self.close_upstream(io, token, Some(CallError::Timeout)),
            Expiry::Idle => self.close_upstream(io, token, None),
        }
    }

    /// Fails the queued requests that waited longer than
    /// `--upstream-timeout` for a connection.
    pub(super) fn expire_queued<I: Driver>(&mut self, io: &mut I) {
        let now = self.clock.now;
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        if upstreams.waiting == 0 {
            return;
        }
        let Sides {
            mut clients,
            upstreams,
            metrics,
            ..
        } = self.sides();
        let timeout = upstreams.settings.deadlines.request;
        let max_pending = upstreams.settings.max_pending;
        for (upstream, pool) in upstreams.pools.iter_mut().enumerate() {
            let counts = &metrics.upstreams[upstream];
            for lane in pool.lanes.iter_mut() {
                while lane
                    .queue
                    .front()
                    .is_some_and(|waiting| waiting.since_us / 1000 + timeout <= now)
                {
                    let waiting = lane.dequeue_dropped(clients.pool).expect("front exists");
                    upstreams.waiting -= 1;
                    pool.breaker.on_failure(now, FailureKind::Timeout);
                    counts.errors[UpstreamError::Timeout.index()].inc();
                    clients.complete(
                        &mut upstreams.pending,
                        max_pending,
                        waiting.pending,
                        waiting.call as usize,
                        Err(CallError::Timeout),
                    );
                }
            }
        }
        self.close_doomed(io);
    }

    /// Closes an upstream connection. Every request it owed gets `error`
    /// as its outcome (a timeout for the oldest and all behind it: the
    /// stream is out of step), and each counts as a failure for the
    /// breaker. `None`: a quiet close (idle, draining), owing nothing that
    /// matters.
    pub(super) fn close_upstream<I: Driver>(
        &mut self,
        io: &mut I,
        token: Token,
        error: Option<CallError>,
    ) {
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        let Some(up) = upstreams.conns.get_mut(token) else {
            return;
        };
        if up.conn.state == State::Closed {
            return;
        }
        up.conn.state = State::Closed;
        if let Some((key, _)) = up.conn.timer.take() {
            self.wheel.cancel(key);
        }
        let lane = &mut upstreams.pools[up.upstream].lanes[up.lane];
        if lane.conn == Some(token) {
            lane.conn = None;
        }
        self.fail_owed(token, error);
        let upstreams = self.upstreams.as_deref_mut().expect("upstreams");
        let up = upstreams.conns.get_mut(token).expect("live");
        if io.retire(token, &mut up.conn.link) {
            self.release_upstream(token);
        }
        self.close_doomed(io);
    }

    /// Answers every request the closing upstream connection `token` owed
    /// with `error` (`None`: a quiet close), each a failure for the breaker
    /// (but not where the upstream refused the connection's dialect: it is
    /// up, see `greeting_refused`).
    fn fail_owed(&mut self, token: Token, error: Option<CallError>) {
        let Sides {
            mut clients,
            upstreams,
            metrics,
            ..
        } = self.sides();
        let up = upstreams.conns.get_mut(token).expect("live");
        let pool = &mut upstreams.pools[up.upstream];
        if !up.outstanding.is_empty() {
            log::debug!(
                "upstream {}: closing with {} replies owed ({})",
                pool.name,
                up.outstanding.len(),
                error.map_or("quietly", CallError::name)
            );
        }
        let counts = &metrics.upstreams[up.upstream];
        let max_pending = upstreams.settings.max_pending;
        let counted = !pool.refused(up.lane, clients.now);
        up.skipping = None;
        while let Some(owed) = up.outstanding.pop_front() {
            let outcome = error.unwrap_or(CallError::Reset);
            let (kind, label) = match outcome {
                CallError::Timeout => (FailureKind::Timeout, UpstreamError::Timeout),
                _ => (FailureKind::Reset, UpstreamError::Reset),
            };
            if counted {
                pool.breaker.on_failure(clients.now, kind);
            }
            counts.errors[label.index()].inc();
            let (pending, call) = (owed.pending, owed.call as usize);
            let pendings = &mut upstreams.pending;
            clients.complete(pendings, max_pending, pending, call, Err(outcome));
        }
    }

    /// Frees a closed upstream connection: socket, rings, slot.
    pub(super) fn release_upstream(&mut self, token: Token) {
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        let Some(mut up) = upstreams.conns.remove(token) else {
            return;
        };
        debug_assert_eq!(up.conn.state, State::Closed);
        for ring in [
            up.conn.link.input.take(),
            up.conn.link.output.take(),
            up.sent.take(),
        ]
        .into_iter()
        .flatten()
        {
            self.pool.give(ring);
        }
        if up.conn.link.unit {
            self.mem_release();
        }
    }

    /// Closes every upstream connection and drops the requests still
    /// queued (the drain has ended for clients: no one awaits them).
    pub(super) fn close_upstreams<I: Driver>(&mut self, io: &mut I) {
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        for pool in upstreams.pools.iter_mut() {
            for lane in pool.lanes.iter_mut() {
                while lane.dequeue_dropped(&mut self.pool).is_some() {
                    upstreams.waiting -= 1;
                }
            }
        }
        for token in upstreams.conns.tokens() {
            self.close_upstream(io, token, None);
        }
    }

    /// Closes the clients whose reply could not be written (a panic or an
    /// overflow in the service's answer).
    pub(super) fn close_doomed<I: Driver>(&mut self, io: &mut I) {
        while let Some((client, reason)) = self.doomed.pop() {
            self.close(io, client, reason);
        }
    }

    /// Copies each pool's state into its gauges, at most every
    /// [`PUBLISH_EVERY_MS`] (the work grows with the number of upstreams,
    /// and a turn can be a few microseconds).
    pub(super) fn publish_upstreams(&mut self) {
        let Some(upstreams) = self.upstreams.as_deref_mut() else {
            return;
        };
        let due = upstreams.published_at + PUBLISH_EVERY_MS;
        if self.clock.now < due && self.drain_until.is_none() {
            // The loop wakes for it if nothing else comes first, so gauges
            // of an idle shard are never stale for longer.
            upstreams.publish_due = Some(due);
            return;
        }
        upstreams.published_at = self.clock.now;
        upstreams.publish_due = None;
        debug_assert_eq!(
            upstreams.waiting,
            upstreams
                .pools
                .iter()
                .map(|pool| pool.queued())
                .sum::<usize>(),
            "the count of queued requests drifted"
        );
        let upstreams = &*upstreams;
        self.metrics.pending.set(upstreams.pending.len() as u64);
        let pending = &upstreams.pending;
        self.metrics.pending_bytes.set(pending.held() as u64);
        self.metrics.pending_bytes_refused.set(pending.refused());
        self.metrics.pending_bytes_paused.set(pending.paused());
        self.metrics
            .upstream_conns_open
            .set(upstreams.conns.len() as u64);
        for (pool, counts) in upstreams.pools.iter().zip(self.metrics.upstreams.iter()) {
            let (mut in_use, mut idle, mut connecting) = (0, 0, 0);
            for lane in pool.lanes.iter() {
                let Some(up) = lane.conn.and_then(|token| upstreams.conns.get(token)) else {
                    continue;
                };
                match up.phase {
                    Phase::Connecting(_) => connecting += 1,
                    Phase::Ready if up.outstanding.is_empty() => idle += 1,
                    Phase::Ready => in_use += 1,
                }
            }
            counts.conns_in_use.set(in_use);
            counts.conns_idle.set(idle);
            counts.conns_connecting.set(connecting);
            counts.queued.set(pool.queued() as u64);
            counts
                .breaker_state
                .set(pool.breaker.state().index() as u64);
            for from in BreakerState::ALL {
                for to in BreakerState::ALL {
                    counts.transitions[from.index()][to.index()]
                        .set(pool.breaker.transitions(from, to));
                }
            }
        }
    }
}

/// How often the upstream gauges are refreshed, at most.
const PUBLISH_EVERY_MS: Millis = 50;

/// After an upstream refused a dialect's greeting, how long before that
/// dialect's connections to it are tried again (an upstream upgraded in
/// place starts speaking it within this).
const GREETING_RETRY_MS: Millis = 1_000;

/// The client side, while an upstream outcome is handed on.
struct Clients<'a> {
    conns: &'a mut Table<Conn>,
    queue: &'a mut VecDeque<Token>,
    responder: &'a mut Responder,
    pool: &'a mut Pool,
    /// Clients to close once the upstream side is done (their answer
    /// panicked or overflowed).
    doomed: &'a mut Vec<(Token, CloseReason)>,
    now: Millis,
    now_us: u64,
}

/// The shard's parts split for handing upstream outcomes to clients
/// ([`Core::sides`]).
struct Sides<'a> {
    clients: Clients<'a>,
    upstreams: &'a mut Upstreams,
    metrics: &'a ShardMetrics,
    /// Holds upstream replies that wrap around their ring.
    scratch: &'a mut [u8],
}

/// Where the replies in an upstream connection's input are.
struct Replies<'a> {
    bytes: &'a [u8],
    /// Bytes of whole replies read so far.
    at: usize,
    /// The input ring is full.
    full: bool,
    upstream: usize,
}

/// The next reply in an upstream connection's input.
enum Next<'a> {
    /// A whole reply, or one too large for the ring that has been passed
    /// over (its request's outcome is then an error).
    Reply(Result<&'a [u8], CallError>),
    /// No whole reply is in yet.
    Wait,
    /// The stream is not replies: the connection is out of step.
    Broken,
}

impl<'a> Replies<'a> {
    /// The next reply, with `skipping` (a reply larger than the ring being
    /// passed over) and `progress` (the decoder's) kept across calls.
    fn next(
        &mut self,
        codec: &Codec,
        skipping: &mut Option<Skip>,
        progress: &mut usize,
    ) -> Next<'a> {
        let upstream = self.upstream;
        if let Some(skip) = skipping.as_mut() {
            return match skip.feed(&self.bytes[self.at..]) {
                Ok((used, done)) => {
                    self.at += used;
                    if !done {
                        return Next::Wait;
                    }
                    *skipping = None;
                    Next::Reply(Err(CallError::TooLarge))
                }
                Err(error) => {
                    log::debug!("upstream {upstream}: {error}");
                    Next::Broken
                }
            };
        }
        match codec.decode_reply(&self.bytes[self.at..], progress) {
            Decoded::NeedMore => {
                if self.full && self.at == 0 && codec.protocol() == Protocol::Resp {
                    // Larger than the ring: pass it over.
                    *skipping = Some(Skip::new());
                    return self.next(codec, skipping, progress);
                }
                Next::Wait
            }
            Decoded::Error(error) => {
                log::debug!("upstream {upstream}: {error}");
                Next::Broken
            }
            Decoded::Frame {
                start,
                len,
                consumed,
            } => {
                let reply = &self.bytes[self.at + start..self.at + start + len];
                self.at += consumed;
                Next::Reply(Ok(reply))
            }
        }
    }
}

impl Clients<'_> {
    /// Hands the outcome of call `call` of the awaited reply `pending` to
    /// its client: written at once when it is the client's next reply, its
    /// only call, and there is room; else stored, and the client's
    /// complete replies written in order as far as they go. The client is
    /// queued to be driven (flushed, served further).
    fn complete(
        &mut self,
        pendings: &mut Pendings,
        max_pending: usize,
        pending: Token,
        call: usize,
        outcome: Result<&[u8], CallError>,
    ) {
        let Some(entry) = pendings.get(pending) else {
            // Its client has gone, or it was a health check.
            return;
        };
        let client = entry.client;
        let Some(conn) = self.conns.get_mut(client) else {
            debug_assert!(false, "an awaited reply outlived its client");
            return;
        };
        let is_head = pendings.head(client) == Some(pending);
        let had_output = conn.output_len() > 0;
        let mut written = false;
        if is_head && entry.nothing_stored() {
            match self
                .responder
                .write_answer(conn, &Answer::one(outcome), self.pool)
            {
                Ok(true) => {
                    pendings.answered(pending);
                    pendings.pop(client);
                    written = true;
                }
                Ok(false) => {
                    pendings.record(pending, call, outcome);
                }
                Err(reason) => {
                    self.doomed.push((client, reason));
                    return;
                }
            }
        } else {
            let Some((_, complete)) = pendings.record(pending, call, outcome) else {
                return;
            };
            if !(complete && is_head) {
                return;
            }
        }
        match self
            .responder
            .deliver(conn, client, pendings, max_pending, self.pool)
        {
            Ok(delivered) => written |= delivered > 0,
            Err(reason) => {
                self.doomed.push((client, reason));
                return;
            }
        }
        if !written {
            return;
        }
        if pendings.awaited(client) < max_pending {
            // A reply written may lift the client's wait (as in deliver).
            conn.pending_full = false;
        }
        if !had_output && conn.output_len() > 0 {
            conn.write_since = self.now;
        }
        if !conn.queued {
            conn.queued = true;
            self.queue.push_back(client);
        }
    }
}

/// The first line of a reply, without its `\r\n`, for a log line.
fn first_line(reply: &[u8]) -> String {
    let line = reply.split(|&b| b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned()
}

/// Whether a reply to `owed` may redirect it: a client's request, not
/// redirected too often already.
fn redirectable(owed: &Outstanding) -> bool {
    owed.hops < REDIRECTS_MAX && owed.pending != HEALTH_CHECK && owed.pending != DISCARD
}
