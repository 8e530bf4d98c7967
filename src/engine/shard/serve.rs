//! The middle of the data path: frames out of a connection's input ring,
//! through the service, replies into its output ring; and the replies a
//! client awaited (from upstreams) into its output ring, in request order.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::engine::buffer::Pool;
use crate::engine::codec::{Codec, Decoded, Input, Protocol};
use crate::engine::conn::{Conn, State};
use crate::engine::driver::{Link, Token};
use crate::engine::metrics::{CloseReason, ShardMetrics};
use crate::engine::service::{Answer, Reply, Service};
use crate::engine::timer::Millis;
use crate::engine::upstream::pending::Pendings;
use crate::engine::upstream::{Calls, Upstreams};

/// The shard's parts `serve` works with besides the connection.
pub struct Serving<'a> {
    /// The codec.
    pub codec: &'a Codec,
    /// The service.
    pub service: &'a mut dyn Service,
    /// The ring pool.
    pub pool: &'a mut Pool,
    /// Holds a frame that wraps around its ring.
    pub scratch: &'a mut [u8],
    /// The counters.
    pub metrics: &'a ShardMetrics,
    /// The upstreams, when the service may call them.
    pub upstreams: Option<&'a mut Upstreams>,
    /// The shard's queue of connections to drive this turn.
    pub queue: &'a mut VecDeque<Token>,
    /// The shard's clock, in milliseconds and microseconds.
    pub now: Millis,
    /// The same instant in microseconds.
    pub now_us: u64,
}

/// Serves every complete frame in `conn`'s input while its output ring has
/// room for the reply (and, with upstreams, while fewer than
/// `--max-pending` replies are awaited). Returns the number of frames
/// served, or the reason to close the connection at once (a panic, an
/// overflowing reply).
///
/// Leaves `conn.output_blocked` set when it stopped for lack of output room,
/// `conn.pending_full` when it stopped for `--max-pending`, and
/// `conn.partial_since` set when an incomplete frame is left over. A
/// corrupt stream moves the connection to `Closing(protocol_error)`: the
/// replies already made are still flushed.
///
/// A reply made while earlier ones are still awaited is not written to the
/// ring but kept in an awaited-reply entry behind them; a frame whose
/// service call makes upstream calls gets such an entry too.
pub fn serve(conn: &mut Conn, token: Token, shard: &mut Serving<'_>) -> Result<usize, CloseReason> {
    let Serving {
        codec,
        service,
        pool,
        scratch,
        metrics,
        upstreams,
        queue,
        now,
        now_us,
    } = shard;
    let Conn {
        link:
            Link {
                input: input_slot,
                output: output_slot,
                ..
            },
        state,
        output_blocked,
        pending_full,
        partial_since,
        progress,
        ..
    } = conn;
    *output_blocked = false;
    *pending_full = false;
    let Some(input) = input_slot.as_mut() else {
        return Ok(0);
    };
    let max_pending = upstreams
        .as_ref()
        .map_or(usize::MAX, |u| u.settings.max_pending);
    let mut frames = 0;
    while state.serves() && !input.is_empty() {
        let awaited = upstreams
            .as_ref()
            .map_or(0, |upstreams| upstreams.pending.awaited(token));
        if awaited >= max_pending {
            *pending_full = true;
            break;
        }
        let (first, second) = input.readable();
        let view = Input::new(first, second);
        let (start, len, consumed) = match codec.decode(view, progress) {
            Decoded::NeedMore => break,
            Decoded::Error(error) => {
                log::debug!("closing a connection: {error}");
                // Tell the peer why, when the protocol has a way to and
                // there is room (and no earlier reply is still awaited:
                // the close does not wait for those).
                if let Some(message) = codec.error_reply(&error)
                    && awaited == 0
                {
                    let output = output_slot.get_or_insert_with(|| pool.take());
                    if output.free() >= message.len() {
                        output.push(message);
                    }
                }
                *state = State::Closing(CloseReason::ProtocolError);
                break;
            }
            Decoded::Frame {
                start,
                len,
                consumed,
            } => (start, len, consumed),
        };
        debug_assert!(start + len <= consumed && consumed <= view.len());
        let output = output_slot.get_or_insert_with(|| pool.take());
        // A raw byte stream has no frame boundaries, so a frame may be cut
        // to the room left in the output ring instead of waiting for all of
        // it to drain: replies then stream while the peer sends.
        let (len, consumed) = if codec.protocol() == Protocol::Echo && len > output.free() {
            let room = output.free();
            if room < len.min(output.capacity() / 4) {
                *output_blocked = true;
                break;
            }
            (room, room)
        } else {
            (len, consumed)
        };
        // A frame that wraps around the ring's end is copied once into the
        // shard's scratch so the service always sees one slice; one in
        // another form (a RESP inline command) is re-encoded there.
        let payload: &[u8] = if let Some(canonical) = codec.canonical(view, start, len, scratch) {
            &scratch[..canonical]
        } else {
            match view.contiguous(start, len) {
                Some(payload) => payload,
                None => {
                    view.copy_to(start, &mut scratch[..len]);
                    &scratch[..len]
                }
            }
        };
        let reserve = service.reply_reserve(payload);
        let need = reserve.saturating_add(codec.protocol().overhead());
        if need > output.capacity() {
            // No amount of flushing makes room: the service reserved more
            // than the ring can ever hold.
            return Err(CloseReason::OutputOverflow);
        }
        let behind = awaited > 0;
        if !behind && output.free() < need {
            *output_blocked = true;
            break;
        }
        // Behind an awaited reply, this one waits in a buffer of its own,
        // if the shard's bound on such buffers allows; else the client
        // waits, as for --max-pending, until its earlier replies are
        // written (each one written drives it again).
        let mut buffer = None;
        if let Some(upstreams) = upstreams.as_deref_mut().filter(|_| behind) {
            match upstreams.pending.buffer(reserve) {
                Some(taken) => buffer = Some(taken),
                None => {
                    upstreams.pending.note_paused();
                    *pending_full = true;
                    break;
                }
            }
        }
        let mut calls = upstreams.as_deref_mut().map(|upstreams| Calls {
            upstreams,
            rings: pool,
            queue,
            metrics,
            client: token,
            now_us: *now_us,
            pending: None,
        });
        let mark = match buffer {
            Some(_) => None,
            None => Some(codec.begin_reply(output)),
        };
        let mut reply = match buffer.as_mut() {
            Some(buffer) => Reply::buffered(buffer, reserve),
            None => Reply::new(output, reserve),
        };
        if let Some(calls) = calls.as_mut() {
            reply = reply.with_caller(calls);
        }
        let called = catch_unwind(AssertUnwindSafe(|| service.call(payload, &mut reply)));
        let failed = if called.is_err() {
            metrics.handler_panics.inc();
            Some(CloseReason::Panic)
        } else if reply.overflowed() {
            Some(CloseReason::OutputOverflow)
        } else {
            None
        };
        let (written, close, made_calls) = (reply.len(), reply.wants_close(), reply.calls() > 0);
        let opened = calls.and_then(|calls| calls.pending);
        if let Some(reason) = failed {
            if let Some(upstreams) = upstreams.as_deref_mut() {
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
        match (mark, opened) {
            // Written at once, in order.
            (Some(mark), None) => codec.end_reply(output, mark, written),
            // Calls made: the answer comes later; undo the reply's start.
            (Some(mark), Some(opened)) => {
                output.truncate(mark);
                let upstreams = upstreams.as_deref_mut().expect("calls need upstreams");
                upstreams.pending.append(opened);
            }
            (None, opened) => {
                let upstreams = upstreams.as_deref_mut().expect("behind needs upstreams");
                let buffer = buffer.take().expect("a buffered reply");
                let entry = match opened {
                    Some(opened) => {
                        upstreams.pending.give_buffer(buffer);
                        opened
                    }
                    None => upstreams.pending.open_ready(token, buffer),
                };
                upstreams.pending.append(entry);
            }
        }
        debug_assert!(!made_calls || opened.is_some());
        input.consume(consumed);
        frames += 1;
        if close {
            *state = State::Closing(CloseReason::Peer);
        }
    }
    metrics.frames.add(frames as u64);
    if !state.serves() {
        // Nothing more will be served: what is left can be dropped.
        input.clear();
    }
    if input.is_empty() {
        *partial_since = None;
        *progress = 0;
        if let Some(input) = input_slot.take() {
            pool.give(input);
        }
    } else if frames > 0 || partial_since.is_none() {
        // What is left is the start of a new frame, begun about now.
        *partial_since = Some(*now);
    }
    Ok(frames)
}

/// What writing an awaited reply to a client takes.
pub struct Writer<'a> {
    /// Frames the reply.
    pub codec: &'a Codec,
    /// Writes answers from upstream outcomes.
    pub service: &'a mut dyn Service,
    /// Rings for clients that hold none.
    pub pool: &'a mut Pool,
    /// Counts panics.
    pub metrics: &'a ShardMetrics,
}

/// Writes the complete replies at the head of `client`'s awaited list into
/// its output ring (`conn`), in order, while there is room; returns how
/// many. Clears `conn.pending_full` once one is written and fewer than
/// `max_pending` are left; sets
/// `conn.output_blocked` when a complete reply waits for room.
pub fn deliver(
    conn: &mut Conn,
    client: Token,
    pendings: &mut Pendings,
    max_pending: usize,
    writer: &mut Writer<'_>,
) -> Result<usize, CloseReason> {
    let codec = writer.codec;
    let mut delivered = 0;
    while let Some(head) = pendings.head(client) {
        let entry = pendings.get(head).expect("a list's head is live");
        if !entry.complete() {
            break;
        }
        let output = conn.link.output.get_or_insert_with(|| writer.pool.take());
        let overhead = codec.protocol().overhead();
        if let Some(bytes) = entry.ready_reply() {
            if output.free() < bytes.len() + overhead {
                conn.output_blocked = true;
                break;
            }
            let mark = codec.begin_reply(output);
            output.push(bytes);
            codec.end_reply(output, mark, bytes.len());
        } else {
            let answer = entry.answer();
            if !write_answer(conn, &answer, writer)? {
                break;
            }
        }
        pendings.pop(client);
        delivered += 1;
    }
    // Only a reply written can lift either wait (--max-pending, or no room
    // for a reply behind awaited ones); the next serve looks again.
    if delivered > 0 && pendings.awaited(client) < max_pending {
        conn.pending_full = false;
    }
    Ok(delivered)
}

/// Writes the service's answer into `conn`'s output ring. Returns false
/// (and sets `conn.output_blocked`) when the ring lacks room for it now.
pub fn write_answer(
    conn: &mut Conn,
    answer: &Answer<'_>,
    writer: &mut Writer<'_>,
) -> Result<bool, CloseReason> {
    let Writer {
        codec,
        service,
        pool,
        metrics,
    } = writer;
    let output = conn.link.output.get_or_insert_with(|| pool.take());
    let reserve = service.answer_reserve(answer);
    let need = reserve.saturating_add(codec.protocol().overhead());
    if need > output.capacity() {
        return Err(CloseReason::OutputOverflow);
    }
    if output.free() < need {
        conn.output_blocked = true;
        return Ok(false);
    }
    let mark = codec.begin_reply(output);
    let mut reply = Reply::new(output, reserve);
    let called = catch_unwind(AssertUnwindSafe(|| service.answer(answer, &mut reply)));
    if called.is_err() {
        metrics.handler_panics.inc();
        return Err(CloseReason::Panic);
    }
    if reply.overflowed() {
        return Err(CloseReason::OutputOverflow);
    }
    let (written, close) = (reply.len(), reply.wants_close());
    codec.end_reply(output, mark, written);
    if close && conn.state.serves() {
        conn.state = State::Closing(CloseReason::Peer);
    }
    Ok(true)
}
