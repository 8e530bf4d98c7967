//! Framing: turning a byte stream into frames and replies into bytes.
//!
//! # The decoder contract
//!
//! `decode` looks at the readable bytes of a connection's input ring (given
//! as [`Input`], at most two slices) and answers:
//! - [`Decoded::NeedMore`] when the bytes hold no complete frame yet. This is
//!   never an error: TCP keeps no message boundaries, so any prefix of a valid
//!   stream is valid.
//! - [`Decoded::Frame`] for the first complete frame: where its payload lies
//!   and how many bytes to consume (header + payload + delimiter), exactly
//!   that frame and nothing after it. The caller consumes, then calls again
//!   until it needs more.
//! - [`Decoded::Error`] when the stream is corrupt (a length over
//!   `max_frame`, a line too long): the connection is closed with reason
//!   `protocol_error`. An oversized length header is rejected as soon as the
//!   header is complete, before any payload is buffered.
//!
//! `progress` is per-connection scratch the decoder may use to avoid
//! rescanning bytes it already looked at (for `line`: how far it searched for
//! the newline). The caller sets it to 0 for a new connection and never
//! touches it otherwise; the decoder resets it when it returns a frame.

pub mod length;
pub mod line;
pub mod raw;

use std::fmt;

use crate::buffer::Ring;

/// The wire protocols built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Raw bytes: whatever arrived is a frame.
    Echo,
    /// `\n`-terminated lines (a `\r` before the `\n` is dropped too).
    Line,
    /// u32 big-endian length, then that many payload bytes.
    Frame,
}

impl Protocol {
    /// Every protocol name accepted by `--protocol`.
    pub const NAMES: &'static [&'static str] = &["echo", "line", "frame"];

    /// Parses a `--protocol` name.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "echo" => Some(Protocol::Echo),
            "line" => Some(Protocol::Line),
            "frame" => Some(Protocol::Frame),
            _ => None,
        }
    }

    /// The name as `--protocol` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Echo => "echo",
            Protocol::Line => "line",
            Protocol::Frame => "frame",
        }
    }

    /// Bytes of framing around each payload on the wire (header or
    /// delimiter): what `--buffer` must hold beyond `--max-frame`. For
    /// `line` this counts the `\n` only (a `\r` counts as payload).
    pub fn overhead(self) -> usize {
        match self {
            Protocol::Echo => 0,
            Protocol::Line => 1,
            Protocol::Frame => 4,
        }
    }
}

/// The readable bytes of a ring, in order, as at most two slices.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The first (older) part.
    pub first: &'a [u8],
    /// The rest, when the bytes wrap around the ring's end; often empty.
    pub second: &'a [u8],
}

impl<'a> Input<'a> {
    /// A view of one contiguous slice.
    pub fn new(first: &'a [u8], second: &'a [u8]) -> Input<'a> {
        Input { first, second }
    }
    /// Total bytes.
    pub fn len(&self) -> usize {
        self.first.len() + self.second.len()
    }
    /// No bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The byte at `index` (panics past the end).
    pub fn byte(&self, index: usize) -> u8 {
        let _ = index;
        todo!()
    }
    /// The position of the first `needle` at or after `from`, if any.
    pub fn find(&self, needle: u8, from: usize) -> Option<usize> {
        let _ = (needle, from);
        todo!()
    }
    /// The bytes `[start, start + len)` as one slice when they are
    /// contiguous, `None` when they straddle the wrap (then use
    /// [`Input::copy_to`]). Panics past the end.
    pub fn contiguous(&self, start: usize, len: usize) -> Option<&'a [u8]> {
        let _ = (start, len);
        todo!()
    }
    /// Copies `[start, start + dst.len())` into `dst`. Panics past the end.
    pub fn copy_to(&self, start: usize, dst: &mut [u8]) {
        let _ = (start, dst);
        todo!()
    }
}

/// What a decoder found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame: its payload is `[start, start + len)` of the input;
    /// consume `consumed` bytes once it has been served.
    Frame {
        /// Offset of the payload.
        start: usize,
        /// Payload length.
        len: usize,
        /// Bytes to consume: header + payload + delimiter.
        consumed: usize,
    },
    /// No complete frame yet.
    NeedMore,
    /// The stream is corrupt; close the connection.
    Error(DecodeError),
}

/// Why a stream is corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A length header announces more payload than `max_frame`.
    FrameTooLarge {
        /// The announced payload length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// No newline within `max_frame` bytes.
    LineTooLong {
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds max-frame {max}")
            }
            DecodeError::LineTooLong { max } => {
                write!(f, "no newline within max-frame {max} bytes")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A protocol with its limit: decodes frames and frames replies.
#[derive(Clone, Copy, Debug)]
pub struct Codec {
    protocol: Protocol,
    max_frame: usize,
}

impl Codec {
    /// A codec for `protocol` accepting payloads of at most `max_frame` bytes.
    pub fn new(protocol: Protocol, max_frame: usize) -> Codec {
        Codec {
            protocol,
            max_frame,
        }
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The payload limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Decodes the first frame of `input` (see the module contract).
    pub fn decode(&self, input: Input<'_>, progress: &mut usize) -> Decoded {
        match self.protocol {
            Protocol::Echo => raw::decode(input, self.max_frame),
            Protocol::Line => line::decode(input, self.max_frame, progress),
            Protocol::Frame => length::decode(input, self.max_frame),
        }
    }

    /// Starts a reply in `out`: writes any header placeholder and returns a
    /// mark for [`Codec::end_reply`]. The caller guarantees
    /// `out.free() >= reply payload bound + protocol overhead`.
    pub fn begin_reply(&self, out: &mut Ring) -> usize {
        let _ = out;
        todo!()
    }

    /// Finishes the reply begun at `mark` whose payload was `len` bytes:
    /// back-fills the length header or appends the delimiter.
    pub fn end_reply(&self, out: &mut Ring, mark: usize, len: usize) {
        let _ = (out, mark, len);
        todo!()
    }
}
