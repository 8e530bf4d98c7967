//! The middle of the data path: frames out of a connection's input ring,
//! through the service, replies into its output ring.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::buffer::Pool;
use crate::codec::{Codec, Decoded, Input, Protocol};
use crate::conn::{Conn, State};
use crate::metrics::{CloseReason, ShardMetrics};
use crate::service::{Reply, Service};
use crate::timer::Millis;

/// Serves every complete frame in `conn`'s input while its output ring has
/// room for the reply. Returns the number of frames served, or the reason
/// to close the connection at once (a panic, an overflowing reply).
///
/// Leaves `conn.output_blocked` set when it stopped for lack of output room,
/// and `conn.partial_since` set when an incomplete frame is left over. A
/// corrupt stream moves the connection to `Closing(protocol_error)`: the
/// replies already made are still flushed.
pub fn serve(
    conn: &mut Conn,
    codec: &Codec,
    service: &mut dyn Service,
    pool: &mut Pool,
    scratch: &mut [u8],
    metrics: &ShardMetrics,
    now: Millis,
) -> Result<usize, CloseReason> {
    conn.output_blocked = false;
    let Some(mut input) = conn.input.take() else {
        return Ok(0);
    };
    let mut frames = 0;
    let served = loop {
        if !conn.state.serves() || input.is_empty() {
            break Ok(());
        }
        let (first, second) = input.readable();
        let view = Input::new(first, second);
        match serve_one(conn, view, codec, service, pool, scratch, metrics) {
            Ok(Some(consumed)) => {
                input.consume(consumed);
                frames += 1;
            }
            Ok(None) => break Ok(()),
            Err(reason) => break Err(reason),
        }
    };
    metrics.frames.add(frames as u64);
    if !conn.state.serves() {
        // Nothing more will be served: what is left can be dropped.
        input.clear();
    }
    if input.is_empty() {
        conn.partial_since = None;
        conn.progress = 0;
        pool.give(input);
    } else {
        if frames > 0 || conn.partial_since.is_none() {
            // What is left is the start of a new frame, begun about now.
            conn.partial_since = Some(now);
        }
        conn.input = Some(input);
    }
    served.map(|()| frames)
}

/// Serves the complete frames at the start of `bytes`, received for `conn`
/// and not copied into its input ring (which must be empty): the io_uring
/// driver's receive buffers are served in place. Returns the frames served
/// and the bytes they took; the rest (an incomplete frame, or what waits
/// for output room) is for the input ring.
pub fn serve_received(
    conn: &mut Conn,
    bytes: &[u8],
    codec: &Codec,
    service: &mut dyn Service,
    pool: &mut Pool,
    scratch: &mut [u8],
    metrics: &ShardMetrics,
) -> Result<(usize, usize), CloseReason> {
    debug_assert!(conn.input.as_ref().is_none_or(|input| input.is_empty()));
    conn.output_blocked = false;
    let (mut frames, mut used) = (0, 0);
    let served = loop {
        if !conn.state.serves() || used == bytes.len() {
            break Ok(());
        }
        let view = Input::new(&bytes[used..], &[]);
        match serve_one(conn, view, codec, service, pool, scratch, metrics) {
            Ok(Some(consumed)) => {
                used += consumed;
                frames += 1;
            }
            Ok(None) => break Ok(()),
            Err(reason) => break Err(reason),
        }
    };
    metrics.frames.add(frames as u64);
    // The decoder's scratch described `bytes`; the rest starts afresh in
    // the input ring.
    conn.progress = 0;
    if !conn.state.serves() {
        used = bytes.len();
    }
    served.map(|()| (frames, used))
}

/// Decodes and serves one frame at the start of `view`. `Some(bytes the
/// frame took)`, or `None` when nothing more can be served now: the frame
/// is incomplete, the output ring lacks room (`output_blocked` is set), or
/// the stream is corrupt (the state is then `Closing(protocol_error)`).
fn serve_one(
    conn: &mut Conn,
    view: Input<'_>,
    codec: &Codec,
    service: &mut dyn Service,
    pool: &mut Pool,
    scratch: &mut [u8],
    metrics: &ShardMetrics,
) -> Result<Option<usize>, CloseReason> {
    let (start, len, consumed) = match codec.decode(view, &mut conn.progress) {
        Decoded::NeedMore => return Ok(None),
        Decoded::Error(error) => {
            log::debug!("closing a connection: {error}");
            // Tell the peer why, when the protocol has a way to and there
            // is room; the close follows the flush.
            if let Some(message) = codec.error_reply(&error) {
                let output = conn.output.get_or_insert_with(|| pool.take());
                if output.free() >= message.len() {
                    output.push(message);
                }
            }
            conn.state = State::Closing(CloseReason::ProtocolError);
            return Ok(None);
        }
        Decoded::Frame {
            start,
            len,
            consumed,
        } => (start, len, consumed),
    };
    debug_assert!(start + len <= consumed && consumed <= view.len());
    let output = conn.output.get_or_insert_with(|| pool.take());
    // A raw byte stream has no frame boundaries, so a frame may be cut to
    // the room left in the output ring instead of waiting for all of it to
    // drain: replies then stream while the peer sends.
    let (len, consumed) = if codec.protocol() == Protocol::Echo && len > output.free() {
        let room = output.free();
        if room < len.min(output.capacity() / 4) {
            conn.output_blocked = true;
            return Ok(None);
        }
        (room, room)
    } else {
        (len, consumed)
    };
    // A frame that wraps around the ring's end is copied once into the
    // shard's scratch so the service always sees one slice.
    let payload: &[u8] = match view.contiguous(start, len) {
        Some(payload) => payload,
        None => {
            view.copy_to(start, &mut scratch[..len]);
            &scratch[..len]
        }
    };
    let reserve = service.reply_reserve(payload);
    let need = reserve.saturating_add(codec.protocol().overhead());
    if need > output.capacity() {
        // No amount of flushing makes room: the service reserved more than
        // the ring can ever hold.
        return Err(CloseReason::OutputOverflow);
    }
    if output.free() < need {
        conn.output_blocked = true;
        return Ok(None);
    }
    let mark = codec.begin_reply(output);
    let mut reply = Reply::new(output, reserve);
    let called = catch_unwind(AssertUnwindSafe(|| service.call(payload, &mut reply)));
    if called.is_err() {
        metrics.handler_panics.inc();
        return Err(CloseReason::Panic);
    }
    if reply.overflowed() {
        return Err(CloseReason::OutputOverflow);
    }
    let (written, close) = (reply.len(), reply.wants_close());
    codec.end_reply(output, mark, written);
    if close {
        conn.state = State::Closing(CloseReason::Peer);
    }
    Ok(Some(consumed))
}
