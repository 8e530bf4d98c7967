//! One load-generator connection: what it sends, and the check that every
//! byte coming back is the byte that was sent.
//!
//! Both supported protocols echo the request stream unchanged (`echo`
//! returns raw bytes; `frame` returns each frame, header included), so the
//! reply stream must equal the request stream byte for byte. Requests are
//! numbered: request `seq` is the [`Message`] template with `seq` written
//! into its first payload bytes, so a lost, duplicated or reordered request
//! shows up as a mismatch, not just a corrupted byte.
//!
//! The connection holds no request bytes: what to send next and what to
//! expect next are both regenerated from `(seq, offset)`, so memory per
//! connection stays small whatever `--pipeline` and `--size` are.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

use super::Protocol;

/// The bytes of one request (and of its expected reply), parametrised by
/// the request's sequence number.
pub struct Message {
    /// Header (for `frame`) and payload, with the sequence bytes zero.
    template: Box<[u8]>,
    /// Where in the message the sequence number (u64 little-endian) goes.
    seq_at: usize,
    /// How many of its 8 bytes fit (fewer when the payload is shorter).
    seq_len: usize,
}

impl Message {
    /// The request of `size` payload bytes for `protocol`.
    pub fn new(protocol: Protocol, size: usize) -> Message {
        let header = match protocol {
            Protocol::Frame => 4,
            Protocol::Echo => 0,
        };
        let mut template = vec![0u8; header + size];
        if protocol == Protocol::Frame {
            let len = u32::try_from(size).expect("--size is checked to fit a u32");
            template[..4].copy_from_slice(&len.to_be_bytes());
        }
        // A pattern that is not constant, so a shifted stream does not match.
        for (index, byte) in template[header..].iter_mut().enumerate() {
            *byte = (index as u8).wrapping_mul(31).wrapping_add(7);
        }
        let seq_len = size.min(8);
        template[header..header + seq_len].fill(0);
        Message {
            template: template.into_boxed_slice(),
            seq_at: header,
            seq_len,
        }
    }

    /// Bytes on the wire per request.
    pub fn len(&self) -> usize {
        self.template.len()
    }

    /// Whether the message is empty (never, for a valid `--size`).
    pub fn is_empty(&self) -> bool {
        self.template.is_empty()
    }

    /// Writes bytes `[offset, offset + dst.len())` of request `seq` into `dst`.
    pub fn fill(&self, seq: u64, offset: usize, dst: &mut [u8]) {
        dst.copy_from_slice(&self.template[offset..offset + dst.len()]);
        let seq_bytes = seq.to_le_bytes();
        for (index, byte) in dst.iter_mut().enumerate() {
            let at = offset + index;
            if at >= self.seq_at + self.seq_len {
                break;
            }
            if at >= self.seq_at {
                *byte = seq_bytes[at - self.seq_at];
            }
        }
    }

    /// Whether `got` equals bytes `[offset, offset + got.len())` of request
    /// `seq`.
    pub fn matches(&self, seq: u64, offset: usize, got: &[u8]) -> bool {
        let seq_end = self.seq_at + self.seq_len;
        let seq_bytes = seq.to_le_bytes();
        // The bytes before the end of the sequence number: compare singly.
        let head = got.len().min(seq_end.saturating_sub(offset));
        for (index, &byte) in got[..head].iter().enumerate() {
            let at = offset + index;
            let expected = if at >= self.seq_at {
                seq_bytes[at - self.seq_at]
            } else {
                self.template[at]
            };
            if byte != expected {
                return false;
            }
        }
        // The rest is the fixed template: one slice comparison.
        let rest = offset + head;
        got[head..] == self.template[rest..rest + got.len() - head]
    }
}

/// Why a connection stopped.
#[derive(Debug)]
pub enum ConnError {
    /// The connection could not be established.
    Connect(io::Error),
    /// A read or write failed.
    Io(io::Error),
    /// The server closed the connection.
    Closed,
    /// A reply byte differs from the request byte it echoes.
    Mismatch {
        /// The request whose echo was wrong.
        seq: u64,
        /// Offset of the first wrong chunk within it.
        offset: usize,
    },
    /// Bytes arrived for a request that was never sent.
    Unsolicited,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Connect(error) => write!(f, "connect: {error}"),
            ConnError::Io(error) => write!(f, "i/o: {error}"),
            ConnError::Closed => write!(f, "closed by the server"),
            ConnError::Mismatch { seq, offset } => {
                write!(f, "wrong echo of request {seq} at byte {offset}")
            }
            ConnError::Unsolicited => write!(f, "bytes for a request never sent"),
        }
    }
}

impl std::error::Error for ConnError {}

/// A connection's progress through its request and reply streams.
///
/// Invariant: `recv_seq <= send_seq <= issued`, and `sent_at` holds one
/// issue time per request issued and not yet fully answered, so
/// `sent_at.len() == issued - recv_seq <= pipeline`.
pub struct Stream {
    /// Requests issued so far (sent or waiting to be sent).
    issued: u64,
    /// The request being written, and how much of it is written.
    send_seq: u64,
    send_offset: usize,
    /// The request whose echo is being read, and how much of it arrived.
    recv_seq: u64,
    recv_offset: usize,
    /// Issue time of each outstanding request, oldest first.
    sent_at: VecDeque<Instant>,
}

impl Stream {
    /// A stream that will keep at most `pipeline` requests outstanding.
    pub fn new(pipeline: usize) -> Stream {
        Stream {
            issued: 0,
            send_seq: 0,
            send_offset: 0,
            recv_seq: 0,
            recv_offset: 0,
            sent_at: VecDeque::with_capacity(pipeline),
        }
    }

    /// Requests issued and not yet fully answered.
    pub fn outstanding(&self) -> usize {
        self.sent_at.len()
    }

    /// Issues one more request at `now` (it is sent on the next `write`).
    pub fn issue(&mut self, now: Instant) {
        self.issued += 1;
        self.sent_at.push_back(now);
    }

    /// Whether issued bytes wait to be written.
    pub fn wants_write(&self) -> bool {
        self.send_seq < self.issued
    }

    /// Fills `dst` with the next bytes to send; returns how many (0 when
    /// nothing is pending). Does not mark them sent: see [`Stream::sent`].
    pub fn next_bytes(&self, message: &Message, dst: &mut [u8]) -> usize {
        let mut seq = self.send_seq;
        let mut offset = self.send_offset;
        let mut filled = 0;
        while seq < self.issued && filled < dst.len() {
            let n = (message.len() - offset).min(dst.len() - filled);
            message.fill(seq, offset, &mut dst[filled..filled + n]);
            filled += n;
            offset += n;
            if offset == message.len() {
                seq += 1;
                offset = 0;
            }
        }
        filled
    }

    /// Marks `n` more bytes as written to the socket.
    pub fn sent(&mut self, message: &Message, n: usize) {
        let total = self.send_offset + n;
        self.send_seq += (total / message.len()) as u64;
        self.send_offset = total % message.len();
        debug_assert!(
            self.send_seq < self.issued || self.send_offset == 0 && self.send_seq == self.issued
        );
    }

    /// Checks `bytes` read from the socket against the requests sent; calls
    /// `answered(issue_time)` for each request whose echo is now complete.
    pub fn received(
        &mut self,
        message: &Message,
        mut bytes: &[u8],
        mut answered: impl FnMut(Instant),
    ) -> Result<(), ConnError> {
        while !bytes.is_empty() {
            // An echo can only follow what was written.
            let sent_through = self.send_seq * message.len() as u64 + self.send_offset as u64;
            let received_through = self.recv_seq * message.len() as u64 + self.recv_offset as u64;
            if received_through >= sent_through {
                return Err(ConnError::Unsolicited);
            }
            let n = (message.len() - self.recv_offset).min(bytes.len());
            let n = n.min((sent_through - received_through) as usize);
            if !message.matches(self.recv_seq, self.recv_offset, &bytes[..n]) {
                return Err(ConnError::Mismatch {
                    seq: self.recv_seq,
                    offset: self.recv_offset,
                });
            }
            bytes = &bytes[n..];
            self.recv_offset += n;
            if self.recv_offset == message.len() {
                self.recv_offset = 0;
                self.recv_seq += 1;
                let issued_at = self
                    .sent_at
                    .pop_front()
                    .expect("a request answered was issued");
                answered(issued_at);
            }
        }
        Ok(())
    }
}

/// A connection of the load generator.
pub struct Conn {
    /// The socket.
    pub socket: TcpStream,
    /// Whether the non-blocking connect has completed.
    pub open: bool,
    /// The request and reply streams.
    pub stream: Stream,
}

impl Conn {
    /// A connection whose connect is in progress.
    pub fn new(socket: TcpStream, pipeline: usize) -> Conn {
        Conn {
            socket,
            open: false,
            stream: Stream::new(pipeline),
        }
    }

    /// Writes pending requests until none is left or the socket is full.
    pub fn write(&mut self, message: &Message, scratch: &mut [u8]) -> Result<(), ConnError> {
        while self.stream.wants_write() {
            let n = self.stream.next_bytes(message, scratch);
            match self.socket.write(&scratch[..n]) {
                Ok(written) => self.stream.sent(message, written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(ConnError::Io(error)),
            }
        }
        Ok(())
    }

    /// Reads and checks replies until the socket is drained.
    pub fn read(
        &mut self,
        message: &Message,
        scratch: &mut [u8],
        mut answered: impl FnMut(Instant),
    ) -> Result<(), ConnError> {
        loop {
            match self.socket.read(scratch) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => self
                    .stream
                    .received(message, &scratch[..n], &mut answered)?,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(ConnError::Io(error)),
            }
        }
    }
}

/// Nanoseconds from `start` to `end`, at least 1 (the histogram's floor).
pub fn latency_nanos(start: Instant, end: Instant) -> u64 {
    let nanos = end.saturating_duration_since(start).as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of requests `0..count`, as the stream sends them.
    fn wire(message: &Message, count: u64) -> Vec<u8> {
        let mut stream = Stream::new(count as usize);
        let now = Instant::now();
        for _ in 0..count {
            stream.issue(now);
        }
        let mut bytes = vec![0u8; message.len() * count as usize];
        let n = stream.next_bytes(message, &mut bytes);
        assert_eq!(n, bytes.len());
        bytes
    }

    #[test]
    fn frame_message_carries_its_header_and_sequence() {
        let message = Message::new(Protocol::Frame, 16);
        assert_eq!(message.len(), 20);
        let mut bytes = [0u8; 20];
        message.fill(0x0102, 0, &mut bytes);
        assert_eq!(&bytes[..4], &16u32.to_be_bytes());
        assert_eq!(&bytes[4..12], &0x0102u64.to_le_bytes());
        assert!(message.matches(0x0102, 0, &bytes));
        assert!(!message.matches(0x0103, 0, &bytes));
    }

    #[test]
    fn fill_and_matches_agree_at_every_offset() {
        for size in [1, 3, 8, 9, 64] {
            for protocol in [Protocol::Echo, Protocol::Frame] {
                let message = Message::new(protocol, size);
                let mut whole = vec![0u8; message.len()];
                message.fill(77, 0, &mut whole);
                for start in 0..message.len() {
                    for end in start..=message.len() {
                        let mut part = vec![0u8; end - start];
                        message.fill(77, start, &mut part);
                        assert_eq!(part, whole[start..end]);
                        assert!(message.matches(77, start, &part));
                    }
                }
            }
        }
    }

    #[test]
    fn echo_split_anywhere_is_accepted_and_timed_once_per_request() {
        let message = Message::new(Protocol::Echo, 10);
        let bytes = wire(&message, 5);
        for chunk in [1, 3, 7, 10, 50] {
            let mut stream = Stream::new(5);
            for _ in 0..5 {
                stream.issue(Instant::now());
            }
            stream.sent(&message, bytes.len());
            let mut answered = 0;
            for part in bytes.chunks(chunk) {
                stream.received(&message, part, |_| answered += 1).unwrap();
            }
            assert_eq!(answered, 5, "chunk {chunk}");
            assert_eq!(stream.outstanding(), 0);
        }
    }

    #[test]
    fn corrupted_byte_is_a_mismatch() {
        let message = Message::new(Protocol::Frame, 32);
        let mut bytes = wire(&message, 3);
        bytes[message.len() + 20] ^= 1;
        let mut stream = Stream::new(3);
        for _ in 0..3 {
            stream.issue(Instant::now());
        }
        stream.sent(&message, bytes.len());
        let error = stream.received(&message, &bytes, |_| {}).unwrap_err();
        assert!(
            matches!(error, ConnError::Mismatch { seq: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn reordered_requests_are_a_mismatch() {
        let message = Message::new(Protocol::Echo, 16);
        let bytes = wire(&message, 2);
        let (first, second) = bytes.split_at(message.len());
        let swapped = [second, first].concat();
        let mut stream = Stream::new(2);
        stream.issue(Instant::now());
        stream.issue(Instant::now());
        stream.sent(&message, swapped.len());
        assert!(stream.received(&message, &swapped, |_| {}).is_err());
    }

    #[test]
    fn bytes_beyond_what_was_sent_are_unsolicited() {
        let message = Message::new(Protocol::Echo, 4);
        let bytes = wire(&message, 2);
        let mut stream = Stream::new(2);
        stream.issue(Instant::now());
        stream.issue(Instant::now());
        stream.sent(&message, 4);
        let error = stream.received(&message, &bytes, |_| {}).unwrap_err();
        assert!(matches!(error, ConnError::Unsolicited), "{error}");
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let message = Message::new(Protocol::Frame, 5);
        let expected = wire(&message, 3);
        let mut stream = Stream::new(3);
        for _ in 0..3 {
            stream.issue(Instant::now());
        }
        let mut got = Vec::new();
        let mut scratch = [0u8; 4];
        while stream.wants_write() {
            let n = stream.next_bytes(&message, &mut scratch[..3]);
            got.extend_from_slice(&scratch[..n]);
            stream.sent(&message, n);
        }
        assert_eq!(got, expected);
    }
}
