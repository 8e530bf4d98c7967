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
    let Conn {
        input: input_slot,
        output: output_slot,
        state,
        output_blocked,
        partial_since,
        progress,
        ..
    } = conn;
    *output_blocked = false;
    let Some(input) = input_slot.as_mut() else {
        return Ok(0);
    };
    let mut frames = 0;
    while state.serves() && !input.is_empty() {
        let (first, second) = input.readable();
        let view = Input::new(first, second);
        let (start, len, consumed) = match codec.decode(view, progress) {
            Decoded::NeedMore => break,
            Decoded::Error(error) => {
                log::debug!("closing a connection: {error}");
                // Tell the peer why, when the protocol has a way to and
                // there is room; the close follows the flush.
                if let Some(message) = codec.error_reply(&error) {
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
            // No amount of flushing makes room: the service reserved more
            // than the ring can ever hold.
            return Err(CloseReason::OutputOverflow);
        }
        if output.free() < need {
            *output_blocked = true;
            break;
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
        *partial_since = Some(now);
    }
    Ok(frames)
}
