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

pub mod inline;
pub mod length;
pub mod line;
pub mod raw;
pub mod reply;
pub mod resp;

use std::fmt;

pub use crate::config::Protocol;
use crate::engine::buffer::Ring;

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
        match index.checked_sub(self.first.len()) {
            None => self.first[index],
            Some(index) => self.second[index],
        }
    }
    /// The position of the first `needle` at or after `from`, if any.
    pub fn find(&self, needle: u8, from: usize) -> Option<usize> {
        // Slice searches, not `byte` calls: `position` over a slice compiles
        // to a tight loop, and a line decoder runs this over every byte read.
        let split = self.first.len();
        if from < split {
            if let Some(found) = self.first[from..].iter().position(|&b| b == needle) {
                return Some(from + found);
            }
        }
        let from = from.saturating_sub(split);
        let found = self.second.get(from..)?.iter().position(|&b| b == needle)?;
        Some(split + from + found)
    }
    /// The bytes `[start, start + len)` as one slice when they are
    /// contiguous, `None` when they straddle the wrap (then use
    /// [`Input::copy_to`]). Panics past the end.
    pub fn contiguous(&self, start: usize, len: usize) -> Option<&'a [u8]> {
        let end = start.checked_add(len).filter(|&end| end <= self.len());
        let end = end.unwrap_or_else(|| panic!("range {start}+{len} past {}", self.len()));
        let split = self.first.len();
        if end <= split {
            Some(&self.first[start..end])
        } else if start >= split {
            Some(&self.second[start - split..end - split])
        } else {
            None
        }
    }
    /// Copies `[start, start + dst.len())` into `dst`. Panics past the end.
    pub fn copy_to(&self, start: usize, dst: &mut [u8]) {
        let len = dst.len();
        if let Some(bytes) = self.contiguous(start, len) {
            dst.copy_from_slice(bytes);
            return;
        }
        // Straddles the wrap: the tail of `first`, then the head of `second`.
        let (head, tail) = dst.split_at_mut(self.first.len() - start);
        head.copy_from_slice(&self.first[start..]);
        tail.copy_from_slice(&self.second[..tail.len()]);
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
    /// The bytes break the protocol's grammar (RESP: a bad `*N` or `$len`
    /// header, a missing `\r\n`); the message is the protocol's own words.
    Protocol(&'static str),
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
            DecodeError::Protocol(message) => write!(f, "protocol error: {message}"),
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
            Protocol::Resp => resp::decode(input, self.max_frame, progress),
        }
    }

    /// Writes the frame `[start, start + len)` of `input` (one
    /// [`Codec::decode`] returned) into `out` in the form the service
    /// should see, when that differs from its bytes, and returns its
    /// length; `None` when the frame's bytes are its form. Only a RESP
    /// inline command differs: it becomes the multibulk command Redis
    /// would have split it into ([`inline`]), at most `max_frame` bytes.
    pub fn canonical(
        &self,
        input: Input<'_>,
        start: usize,
        len: usize,
        out: &mut [u8],
    ) -> Option<usize> {
        match self.protocol {
            Protocol::Resp => resp::canonical(input, start, len, out),
            Protocol::Echo | Protocol::Line | Protocol::Frame => None,
        }
    }

    /// Decodes the first reply an upstream sent, from contiguous `bytes`:
    /// upstreams speak the client's protocol, so a reply is framed as a
    /// request is for `line` and `frame`, and is one whole RESP reply
    /// (aggregates and all, RESP2 or RESP3) for `resp`. `echo` has no
    /// framing, so it cannot call upstreams (the settings refuse it). The
    /// payload is what a service's answer sees; `consumed` includes the
    /// framing.
    ///
    /// A RESP3 push (`>`) is no reply: an upstream sends one only to a
    /// connection that subscribed or turned tracking on, which no client
    /// may do to a shared connection, so one where a reply is owed means
    /// the stream is out of step.
    pub fn decode_reply(&self, bytes: &[u8], progress: &mut usize) -> Decoded {
        match self.protocol {
            Protocol::Resp if bytes.first() == Some(&b'>') => {
                Decoded::Error(DecodeError::Protocol("a push where a reply is owed"))
            }
            Protocol::Resp => match crate::engine::codec::reply::reply_len(bytes) {
                Ok(Some(len)) => Decoded::Frame {
                    start: 0,
                    len,
                    consumed: len,
                },
                Ok(None) => Decoded::NeedMore,
                Err(_) => Decoded::Error(DecodeError::Protocol("not a RESP reply")),
            },
            Protocol::Echo => Decoded::Error(DecodeError::Protocol("echo replies have no framing")),
            Protocol::Line | Protocol::Frame => self.decode(Input::new(bytes, &[]), progress),
        }
    }

    /// What to tell the peer before closing on `error`, for protocols that
    /// have an error reply (RESP: `-ERR Protocol error: <message>`, as
    /// Redis sends); the close follows once it is flushed.
    pub fn error_reply(&self, error: &DecodeError) -> Option<&'static [u8]> {
        match (self.protocol, error) {
            (Protocol::Resp, DecodeError::Protocol(message)) => Some(resp::error_reply(message)),
            (Protocol::Resp, _) => Some(b"-ERR Protocol error\r\n"),
            (Protocol::Echo | Protocol::Line | Protocol::Frame, _) => None,
        }
    }

    /// The payload of the protocol's own heartbeat ping: a `PING` command
    /// for RESP (as a replica is pinged), a `PING` line, an empty
    /// length-prefixed frame; nothing for a raw byte stream.
    pub fn heartbeat(&self) -> &'static [u8] {
        match self.protocol {
            Protocol::Resp => b"*1\r\n$4\r\nPING\r\n",
            Protocol::Line => b"PING",
            Protocol::Frame | Protocol::Echo => b"",
        }
    }

    /// Starts a reply in `out`: writes any header placeholder and returns a
    /// mark for [`Codec::end_reply`]. The caller guarantees
    /// `out.free() >= reply payload bound + protocol overhead`.
    pub fn begin_reply(&self, out: &mut Ring) -> usize {
        let mark = out.len();
        if self.protocol == Protocol::Frame {
            // A placeholder: the payload length is known only at the end.
            let taken = out.push(&[0; length::HEADER_LEN]);
            assert_eq!(taken, length::HEADER_LEN, "no room for a reply header");
        }
        mark
    }

    /// Finishes the reply begun at `mark` whose payload was `len` bytes:
    /// back-fills the length header or appends the delimiter.
    pub fn end_reply(&self, out: &mut Ring, mark: usize, len: usize) {
        let overhead_before = match self.protocol {
            Protocol::Frame => length::HEADER_LEN,
            Protocol::Echo | Protocol::Line | Protocol::Resp => 0,
        };
        debug_assert_eq!(
            out.len(),
            mark + overhead_before + len,
            "reply length mismatch"
        );
        match self.protocol {
            Protocol::Echo | Protocol::Resp => {}
            Protocol::Line => {
                assert_eq!(out.push(b"\n"), 1, "no room for a reply delimiter");
            }
            Protocol::Frame => {
                // A truncated length would desynchronise the peer's stream.
                let len = u32::try_from(len).expect("reply payload over u32::MAX bytes");
                out.overwrite(mark, &len.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `stream` through a ring of `ring_capacity` bytes the way a
    /// connection does: arrives in chunks of the given sizes (cycled), each
    /// chunk pushed as far as it fits, then frames decoded and consumed until
    /// the codec needs more. Returns the payloads, or the first error.
    pub(super) fn serve(
        codec: Codec,
        ring_capacity: usize,
        stream: &[u8],
        chunk_sizes: &[usize],
    ) -> Result<Vec<Vec<u8>>, DecodeError> {
        let mut ring = Ring::with_capacity(ring_capacity);
        let mut progress = 0;
        let mut payloads = Vec::new();
        assert!(!chunk_sizes.is_empty());
        let mut sizes = chunk_sizes.iter().cycle();
        let mut rest = stream;
        while !rest.is_empty() {
            let size = (*sizes.next().unwrap()).clamp(1, rest.len());
            let (mut chunk, after) = rest.split_at(size);
            rest = after;
            while !chunk.is_empty() {
                let taken = ring.push(chunk);
                chunk = &chunk[taken..];
                drain(codec, &mut ring, &mut progress, &mut payloads)?;
                // A full ring the codec cannot decode from would stall the
                // connection for good: max_frame does not fit the ring.
                assert!(!ring.is_full(), "codec stuck on a full ring");
            }
        }
        Ok(payloads)
    }

    fn drain(
        codec: Codec,
        ring: &mut Ring,
        progress: &mut usize,
        payloads: &mut Vec<Vec<u8>>,
    ) -> Result<(), DecodeError> {
        loop {
            let (first, second) = ring.readable();
            let input = Input::new(first, second);
            match codec.decode(input, progress) {
                Decoded::Frame {
                    start,
                    len,
                    consumed,
                } => {
                    assert!(len <= codec.max_frame());
                    assert!(start + len <= consumed && consumed <= input.len());
                    assert!(consumed > 0, "a frame must consume something");
                    let mut payload = vec![0; len];
                    input.copy_to(start, &mut payload);
                    if let Some(bytes) = input.contiguous(start, len) {
                        assert_eq!(bytes, payload);
                    }
                    payloads.push(payload);
                    ring.consume(consumed);
                    assert_eq!(*progress, 0, "progress not reset after a frame");
                }
                Decoded::NeedMore => return Ok(()),
                Decoded::Error(error) => return Err(error),
            }
        }
    }

    /// `0..10` split as `[0, 1, 2]` and `[3, .., 9]`.
    fn split_input(bytes: &[u8; 10]) -> Input<'_> {
        Input::new(&bytes[..3], &bytes[3..])
    }

    const DIGITS: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

    #[test]
    fn byte_reads_both_slices() {
        let input = split_input(&DIGITS);
        assert_eq!((0..10).map(|i| input.byte(i)).collect::<Vec<_>>(), DIGITS);
    }

    #[test]
    #[should_panic]
    fn byte_past_the_end_panics() {
        split_input(&DIGITS).byte(10);
    }

    #[test]
    fn find_searches_both_slices_from_an_offset() {
        let input = split_input(&[7, 1, 7, 2, 3, 7, 4, 5, 6, 7]);
        assert_eq!(input.find(7, 0), Some(0));
        assert_eq!(input.find(7, 1), Some(2));
        assert_eq!(input.find(7, 3), Some(5));
        assert_eq!(input.find(7, 6), Some(9));
        assert_eq!(input.find(7, 10), None);
        assert_eq!(input.find(7, 11), None);
        assert_eq!(input.find(8, 0), None);
        assert_eq!(Input::new(&[], &[]).find(7, 0), None);
    }

    #[test]
    fn contiguous_only_within_one_slice() {
        let input = split_input(&DIGITS);
        assert_eq!(input.contiguous(0, 3), Some(&DIGITS[..3]));
        assert_eq!(input.contiguous(3, 7), Some(&DIGITS[3..]));
        assert_eq!(input.contiguous(4, 2), Some(&DIGITS[4..6]));
        assert_eq!(input.contiguous(3, 0), Some(&[][..]));
        assert_eq!(input.contiguous(2, 2), None);
    }

    #[test]
    #[should_panic(expected = "past 10")]
    fn contiguous_past_the_end_panics() {
        split_input(&DIGITS).contiguous(8, 3);
    }

    #[test]
    fn copy_to_straddling_the_wrap() {
        let input = split_input(&DIGITS);
        let mut dst = [0u8; 5];
        input.copy_to(1, &mut dst);
        assert_eq!(dst, [1, 2, 3, 4, 5]);
        input.copy_to(5, &mut dst);
        assert_eq!(dst, [5, 6, 7, 8, 9]);
    }

    /// Writes a reply through `begin_reply`/`end_reply` into a ring whose
    /// data starts at `offset`, then decodes it back with the same codec.
    fn reply_round_trip(protocol: Protocol, offset: usize, payload: &[u8]) -> Vec<u8> {
        let codec = Codec::new(protocol, 16);
        let mut out = Ring::with_capacity(32);
        // Park the head at `offset` with one byte still held, so the ring
        // does not restart at 0 and the reply lands where we want it.
        out.push(&vec![b'x'; offset + 1]);
        out.consume(offset);
        let mark = codec.begin_reply(&mut out);
        assert_eq!(mark, 1);
        assert_eq!(out.push(payload), payload.len());
        codec.end_reply(&mut out, mark, payload.len());
        out.consume(1);
        let (first, second) = out.readable();
        match codec.decode(Input::new(first, second), &mut 0) {
            Decoded::Frame {
                start,
                len,
                consumed,
            } => {
                assert_eq!(consumed, out.len(), "exactly the reply");
                let mut decoded = vec![0; len];
                out.copy_out(start, &mut decoded);
                decoded
            }
            other => panic!("{protocol:?} reply decoded to {other:?}"),
        }
    }

    #[test]
    fn a_resp_reply_is_one_whole_reply_and_never_a_push() {
        let codec = Codec::new(Protocol::Resp, 1024);
        let map = b"%1\r\n$1\r\na\r\n_\r\n";
        let mut two = map.to_vec();
        two.extend(b"+OK\r\n");
        match codec.decode_reply(&two, &mut 0) {
            Decoded::Frame {
                start,
                len,
                consumed,
            } => {
                assert_eq!((start, len, consumed), (0, map.len(), map.len()));
            }
            other => panic!("a map decoded to {other:?}"),
        }
        assert!(matches!(
            codec.decode_reply(&map[..5], &mut 0),
            Decoded::NeedMore
        ));
        // Even an incomplete push: it is never waited for.
        for push in [
            &b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"[..],
            b">2\r\n",
        ] {
            assert!(
                matches!(codec.decode_reply(push, &mut 0), Decoded::Error(_)),
                "{:?}",
                push.escape_ascii()
            );
        }
    }

    #[test]
    fn echo_reply_is_the_bare_payload() {
        let codec = Codec::new(Protocol::Echo, 16);
        let mut out = Ring::with_capacity(32);
        let mark = codec.begin_reply(&mut out);
        out.push(b"hi");
        codec.end_reply(&mut out, mark, 2);
        assert_eq!(out.readable().0, b"hi");
    }

    #[test]
    fn line_reply_ends_with_a_newline() {
        let codec = Codec::new(Protocol::Line, 16);
        let mut out = Ring::with_capacity(32);
        let mark = codec.begin_reply(&mut out);
        out.push(b"hi");
        codec.end_reply(&mut out, mark, 2);
        assert_eq!(out.readable().0, b"hi\n");
    }

    #[test]
    fn frame_reply_gets_a_length_header() {
        let codec = Codec::new(Protocol::Frame, 16);
        let mut out = Ring::with_capacity(32);
        out.push(b"earlier");
        let mark = codec.begin_reply(&mut out);
        assert_eq!(mark, 7);
        out.push(b"hi");
        codec.end_reply(&mut out, mark, 2);
        assert_eq!(out.readable().0, b"earlier\0\0\0\x02hi");
    }

    #[test]
    fn frame_reply_header_straddling_the_wrap_decodes_back() {
        // Head at 30 of 32: the reply's header fills 31, 0, 1, 2.
        assert_eq!(reply_round_trip(Protocol::Frame, 30, b"hello"), b"hello");
    }

    #[test]
    fn replies_decode_back_at_every_ring_offset() {
        for protocol in [Protocol::Echo, Protocol::Line, Protocol::Frame] {
            for offset in 0..32 {
                for payload in [&b""[..], b"a", b"hello, world"] {
                    if protocol == Protocol::Echo && payload.is_empty() {
                        continue; // an empty echo reply is no bytes at all
                    }
                    assert_eq!(
                        reply_round_trip(protocol, offset, payload),
                        payload,
                        "{protocol:?} at offset {offset}"
                    );
                }
            }
        }
    }
}
