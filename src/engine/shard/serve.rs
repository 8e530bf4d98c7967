//! The middle of the data path: frames out of a connection's input ring,
//! through the service, replies into its output ring; and the replies a
//! client awaited (from upstreams) into its output ring, in request order.
//! The [`Responder`] owns what that takes (codec, service, scratch).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::engine::buffer::{Pool, Ring};
use crate::engine::codec::{Codec, DecodeError, Decoded, Input, Protocol};
use crate::engine::conn::{Conn, State};
use crate::engine::driver::Token;
use crate::engine::metrics::{CloseReason, ShardMetrics};
use crate::engine::service::host::Handler;
use crate::engine::service::{Answer, Reply};

use super::push::Push;
use crate::engine::timer::Millis;
use crate::engine::upstream::pending::Pendings;
use crate::engine::upstream::{Calls, Upstreams};

/// The serve path's own parts: the codec frames, the service answers.
pub struct Responder {
    /// The protocol's codec.
    pub codec: Codec,
    /// The service and its sessions.
    pub service: Box<dyn Handler>,
    metrics: Arc<ShardMetrics>,
}

/// What serving a client reaches besides the responder and the connection.
pub struct Serving<'a> {
    /// The ring pool.
    pub pool: &'a mut Pool,
    /// Holds a frame that wraps around its ring, so that the service
    /// always sees one slice.
    pub scratch: &'a mut [u8],
    /// The upstreams, when the service may call them.
    pub upstreams: Option<&'a mut Upstreams>,
    /// The shard's queue of connections to drive this turn.
    pub queue: &'a mut VecDeque<Token>,
    /// Server push (a call's context).
    pub push: &'a mut Push,
    /// The shard's clock, in milliseconds.
    pub now: Millis,
    /// The same instant in microseconds.
    pub now_us: u64,
    /// The most frames to serve now (`--request-rate`; `usize::MAX`
    /// without one).
    pub frame_limit: usize,
}

/// Why serving stopped short of a frame.
enum Halt {
    /// No whole frame is in (or the stream was corrupt: the state says so).
    Input,
    /// The output ring lacks room for the reply (backpressure).
    Output,
    /// `--max-pending` replies are awaited, or no buffer may hold one more.
    Pending,
}

impl Responder {
    /// A responder counting into `metrics`.
    pub fn new(codec: Codec, service: Box<dyn Handler>, metrics: Arc<ShardMetrics>) -> Responder {
        Responder {
            codec,
            service,
            metrics,
        }
    }

    /// Serves every complete frame in `conn`'s input while its output ring
    /// has room for the reply (and, with upstreams, while fewer than
    /// `--max-pending` replies are awaited). Returns the number of frames
    /// served, or the reason to close the connection at once (a panic, an
    /// overflowing reply).
    ///
    /// Leaves `conn.output_blocked` set when it stopped for lack of output
    /// room, `conn.pending_full` when it stopped for `--max-pending`, and
    /// `conn.partial_since` set when an incomplete frame is left over. A
    /// corrupt stream moves the connection to `Closing(protocol_error)`:
    /// the replies already made are still flushed.
    ///
    /// A reply made while earlier ones are still awaited is not written to
    /// the ring but kept in an awaited-reply entry behind them; a frame
    /// whose service call makes upstream calls gets such an entry too.
    pub fn serve(
        &mut self,
        conn: &mut Conn,
        token: Token,
        at: &mut Serving<'_>,
    ) -> Result<usize, CloseReason> {
        conn.output_blocked = false;
        conn.pending_full = false;
        if conn.link.input.is_none() {
            return Ok(0);
        }
        let mut frames = 0;
        while conn.state.serves()
            && frames < at.frame_limit
            && conn.link.input.as_ref().is_some_and(|i| !i.is_empty())
        {
            match self.serve_one(conn, token, at)? {
                // The call pushed: those are written before the next frame.
                Ok(()) if !at.push.outbox.is_empty() => {
                    frames += 1;
                    break;
                }
                Ok(()) => frames += 1,
                Err(Halt::Input) => break,
                Err(Halt::Output) => {
                    conn.output_blocked = true;
                    break;
                }
                Err(Halt::Pending) => {
                    conn.pending_full = true;
                    break;
                }
            }
        }
        self.metrics.frames.add(frames as u64);
        settle_input(conn, at.pool, at.now, frames);
        Ok(frames)
    }

    /// Serves the frame at the front of `conn`'s input, if it can now.
    fn serve_one(
        &mut self,
        conn: &mut Conn,
        token: Token,
        at: &mut Serving<'_>,
    ) -> Result<Result<(), Halt>, CloseReason> {
        let awaited = at
            .upstreams
            .as_ref()
            .map_or(0, |u| u.pending.awaited(token));
        let max_pending = at
            .upstreams
            .as_ref()
            .map_or(usize::MAX, |u| u.settings.max_pending);
        if awaited >= max_pending || (conn.fenced && awaited > 0) {
            return Ok(Err(Halt::Pending));
        }
        conn.fenced = false;
        let codec = &self.codec;
        let link = &mut conn.link;
        let input = link.input.as_mut().expect("serving input");
        let (first, second) = input.readable();
        let view = Input::new(first, second);
        let (start, len, consumed) = match codec.decode(view, &mut conn.progress) {
            Decoded::Frame {
                start,
                len,
                consumed,
            } => (start, len, consumed),
            Decoded::NeedMore => return Ok(Err(Halt::Input)),
            Decoded::Error(error) => {
                refuse(codec, &error, awaited, &mut link.output, at.pool);
                conn.state = State::Closing(CloseReason::ProtocolError);
                return Ok(Err(Halt::Input));
            }
        };
        debug_assert!(start + len <= consumed && consumed <= view.len());
        let output = link.output.get_or_insert_with(|| at.pool.take());
        let Some((len, consumed)) = cut(codec, len, consumed, output) else {
            return Ok(Err(Halt::Output));
        };
        let payload = payload(codec, view, start, len, at.scratch);
        let behind = awaited > 0;
        if conn.backlog.is_some() {
            // Pushes are queued: this reply goes behind them.
            return Ok(Err(Halt::Output));
        }
        let reserve = match reserve(codec, self.service.as_ref(), token, payload, output, behind)? {
            Some(reserve) => reserve,
            None => return Ok(Err(Halt::Output)),
        };
        let mut frame = Frame {
            codec,
            service: self.service.as_mut(),
            metrics: &self.metrics,
            payload,
            reserve,
            client: token,
            pool: at.pool,
            upstreams: at.upstreams.as_deref_mut(),
            queue: at.queue,
            push: at.push,
            now_us: at.now_us,
        };
        let after = match frame.answer(output, behind)? {
            Ok(after) => after,
            Err(halt) => return Ok(Err(halt)),
        };
        input.consume(consumed);
        if after.close {
            conn.state = State::Closing(CloseReason::Peer);
        }
        conn.fenced = after.fence;
        Ok(Ok(()))
    }

    /// Writes the complete replies at the head of `client`'s awaited list
    /// into its output ring (`conn`), in order, while there is room;
    /// returns how many. Clears `conn.pending_full` once one is written
    /// and fewer than `max_pending` are left; sets `conn.output_blocked`
    /// when a complete reply waits for room.
    pub fn deliver(
        &mut self,
        conn: &mut Conn,
        client: Token,
        pendings: &mut Pendings,
        max_pending: usize,
        pool: &mut Pool,
    ) -> Result<usize, CloseReason> {
        let mut delivered = 0;
        while let Some(head) = pendings.head(client) {
            let entry = pendings.get(head).expect("a list's head is live");
            if !entry.complete() {
                break;
            }
            let output = conn.link.output.get_or_insert_with(|| pool.take());
            let overhead = self.codec.protocol().overhead();
            if let Some(bytes) = entry.ready_reply() {
                if output.free() < bytes.len() + overhead {
                    conn.output_blocked = true;
                    break;
                }
                let mark = self.codec.begin_reply(output);
                output.push(bytes);
                self.codec.end_reply(output, mark, bytes.len());
            } else {
                let answer = entry.answer();
                if !self.write_answer(conn, &answer, pool)? {
                    break;
                }
            }
            pendings.pop(client);
            delivered += 1;
        }
        // Only a reply written can lift either wait (--max-pending, or no
        // room for a reply behind awaited ones); the next serve looks again.
        if delivered > 0 && pendings.awaited(client) < max_pending {
            conn.pending_full = false;
        }
        Ok(delivered)
    }

    /// Writes the service's answer into `conn`'s output ring. Returns false
    /// (and sets `conn.output_blocked`) when the ring lacks room for it now.
    pub fn write_answer(
        &mut self,
        conn: &mut Conn,
        answer: &Answer<'_>,
        pool: &mut Pool,
    ) -> Result<bool, CloseReason> {
        let output = conn.link.output.get_or_insert_with(|| pool.take());
        let reserve = self.service.answer_reserve(answer);
        let need = reserve.saturating_add(self.codec.protocol().overhead());
        if need > output.capacity() {
            return Err(CloseReason::OutputOverflow);
        }
        if output.free() < need {
            conn.output_blocked = true;
            return Ok(false);
        }
        let mark = self.codec.begin_reply(output);
        let mut reply = Reply::new(output, reserve);
        let service = &mut self.service;
        let called = catch_unwind(AssertUnwindSafe(|| service.answer(answer, &mut reply)));
        if called.is_err() {
            self.metrics.handler_panics.inc();
            return Err(CloseReason::Panic);
        }
        if reply.overflowed() {
            return Err(CloseReason::OutputOverflow);
        }
        let (written, close) = (reply.len(), reply.wants_close());
        self.codec.end_reply(output, mark, written);
        if close && conn.state.serves() {
            conn.state = State::Closing(CloseReason::Peer);
        }
        Ok(true)
    }
}

/// What a served frame asked of the connection.
struct After {
    /// Close once its reply is flushed ([`Reply::close_after`]).
    close: bool,
    /// Serve nothing more until its reply and those before are written
    /// ([`Reply::fence`]).
    fence: bool,
}

/// One frame being answered.
struct Frame<'a> {
    codec: &'a Codec,
    service: &'a mut dyn Handler,
    metrics: &'a ShardMetrics,
    payload: &'a [u8],
    /// What the service reserved for the reply.
    reserve: usize,
    client: Token,
    pool: &'a mut Pool,
    upstreams: Option<&'a mut Upstreams>,
    queue: &'a mut VecDeque<Token>,
    push: &'a mut Push,
    now_us: u64,
}

impl Frame<'_> {
    /// Calls the service for the frame, its reply going into `output`, or
    /// (`behind` awaited replies, or when it calls upstreams) into an
    /// awaited-reply entry. Returns what the reply asked of the connection
    /// (close, fence), a halt if no buffer may hold the reply now, or the
    /// reason to close at once (a panic, an overflowing reply).
    fn answer(
        &mut self,
        output: &mut Ring,
        behind: bool,
    ) -> Result<Result<After, Halt>, CloseReason> {
        // Behind an awaited reply, this one waits in a buffer of its own,
        // if the shard's bound on such buffers allows; else the client
        // waits, as for --max-pending, until its earlier replies are
        // written (each one written drives it again).
        let mut buffer = None;
        if let Some(upstreams) = self.upstreams.as_deref_mut().filter(|_| behind) {
            match upstreams.pending.buffer(self.reserve) {
                Some(taken) => buffer = Some(taken),
                None => {
                    upstreams.pending.note_paused();
                    return Ok(Err(Halt::Pending));
                }
            }
        }
        let mut calls = self.upstreams.as_deref_mut().map(|upstreams| Calls {
            upstreams,
            rings: &mut *self.pool,
            queue: &mut *self.queue,
            metrics: self.metrics,
            client: self.client,
            now_us: self.now_us,
            pending: None,
        });
        let mark = buffer.is_none().then(|| self.codec.begin_reply(output));
        let mut reply = match buffer.as_mut() {
            Some(buffer) => Reply::buffered(buffer, self.reserve),
            None => Reply::new(output, self.reserve),
        };
        if let Some(calls) = calls.as_mut() {
            reply = reply.with_caller(calls);
        }
        let (service, payload) = (&mut self.service, self.payload);
        let mut cx = self.push.context(self.client);
        let called = catch_unwind(AssertUnwindSafe(|| {
            service.call(&mut cx, payload, &mut reply)
        }));
        let failed = if called.is_err() {
            self.metrics.handler_panics.inc();
            Some(CloseReason::Panic)
        } else if reply.overflowed() {
            Some(CloseReason::OutputOverflow)
        } else {
            None
        };
        let (written, made_calls) = (reply.len(), reply.calls() > 0);
        let after = After {
            close: reply.wants_close(),
            fence: reply.fenced(),
        };
        let silent = reply.is_silent();
        let opened = calls.and_then(|calls| calls.pending);
        if let Some(reason) = failed {
            if let Some(upstreams) = self.upstreams.as_deref_mut() {
                // Whatever the call opened goes in the client's list, so
                // that the close frees it.
                if let Some(opened) = opened {
                    upstreams.pending.append(opened);
                }
                if let Some(buffer) = buffer.take() {
                    upstreams.pending.give_buffer(buffer);
                }
            }
            return Err(reason);
        }
        debug_assert!(!made_calls || opened.is_some());
        self.place(output, mark, (written, silent), opened, buffer);
        Ok(Ok(after))
    }

    /// Puts the reply where it belongs: framed in the output ring, or in
    /// the client's list of awaited replies.
    fn place(
        &mut self,
        output: &mut Ring,
        mark: Option<usize>,
        (written, silent): (usize, bool),
        opened: Option<Token>,
        buffer: Option<Vec<u8>>,
    ) {
        let upstreams = self.upstreams.as_deref_mut();
        match (mark, opened) {
            // No reply at all: undo the reply's start.
            (Some(mark), None) if silent => output.truncate(mark),
            // Written at once, in order.
            (Some(mark), None) => self.codec.end_reply(output, mark, written),
            // Calls made: the answer comes later; undo the reply's start.
            (Some(mark), Some(opened)) => {
                output.truncate(mark);
                let upstreams = upstreams.expect("calls need upstreams");
                upstreams.pending.append(opened);
            }
            (None, opened) => {
                let upstreams = upstreams.expect("behind needs upstreams");
                let buffer = buffer.expect("a buffered reply");
                let entry = match opened {
                    Some(opened) => {
                        upstreams.pending.give_buffer(buffer);
                        opened
                    }
                    None => upstreams.pending.open_ready(self.client, buffer),
                };
                upstreams.pending.append(entry);
            }
        }
    }
}

/// A corrupt stream: tell the peer why, when the protocol has a way to and
/// there is room (and no earlier reply is still awaited: the close does
/// not wait for those).
fn refuse(
    codec: &Codec,
    error: &DecodeError,
    awaited: usize,
    output: &mut Option<Ring>,
    pool: &mut Pool,
) {
    log::debug!("closing a connection: {error}");
    if let Some(message) = codec.error_reply(error)
        && awaited == 0
    {
        let output = output.get_or_insert_with(|| pool.take());
        if output.free() >= message.len() {
            output.push(message);
        }
    }
}

/// What the service reserves for the reply to `payload`, if `output` has
/// room for it now (behind awaited replies it goes elsewhere: only the
/// ring's capacity matters). An error: no amount of flushing makes room,
/// the service reserved more than the ring can ever hold.
fn reserve(
    codec: &Codec,
    service: &dyn Handler,
    client: Token,
    payload: &[u8],
    output: &Ring,
    behind: bool,
) -> Result<Option<usize>, CloseReason> {
    let reserve = service.reply_reserve(client, payload);
    let need = reserve.saturating_add(codec.protocol().overhead());
    if need > output.capacity() {
        return Err(CloseReason::OutputOverflow);
    }
    Ok((behind || output.free() >= need).then_some(reserve))
}

/// A raw byte stream has no frame boundaries, so a frame may be cut to the
/// room left in the output ring instead of waiting for all of it to drain:
/// replies then stream while the peer sends. `None`: too little room to be
/// worth it; wait for the ring to drain.
fn cut(codec: &Codec, len: usize, consumed: usize, output: &Ring) -> Option<(usize, usize)> {
    if codec.protocol() != Protocol::Echo || len <= output.free() {
        return Some((len, consumed));
    }
    let room = output.free();
    (room >= len.min(output.capacity() / 4)).then_some((room, room))
}

/// The frame as one slice: a frame that wraps around the ring's end is
/// copied once into `scratch`; one in another form (a RESP inline command)
/// is re-encoded there.
fn payload<'a>(
    codec: &Codec,
    view: Input<'a>,
    start: usize,
    len: usize,
    scratch: &'a mut [u8],
) -> &'a [u8] {
    if let Some(canonical) = codec.canonical(view, start, len, scratch) {
        return &scratch[..canonical];
    }
    match view.contiguous(start, len) {
        Some(payload) => payload,
        None => {
            view.copy_to(start, &mut scratch[..len]);
            &scratch[..len]
        }
    }
}

/// After serving `frames` frames: what is left of the input is dropped if
/// nothing more will be served, the ring goes back once empty, and an
/// incomplete frame left over is timed from now.
fn settle_input(conn: &mut Conn, pool: &mut Pool, now: Millis, frames: usize) {
    let Some(input) = conn.link.input.as_mut() else {
        return;
    };
    if !conn.state.serves() {
        // Nothing more will be served: what is left can be dropped.
        input.clear();
    }
    if input.is_empty() {
        conn.partial_since = None;
        conn.progress = 0;
        if let Some(input) = conn.link.input.take() {
            pool.give(input);
        }
    } else if frames > 0 || conn.partial_since.is_none() {
        // What is left is the start of a new frame, begun about now.
        conn.partial_since = Some(now);
    }
}
