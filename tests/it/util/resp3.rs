//! A RESP2 and RESP3 client for the Pub/Sub tests: frames of every type
//! Redis 7 sends (push frames, maps, sets, nulls, verbatim strings), read
//! one at a time whether or not a command asked for them, and parsed into
//! a tree whose equality is byte equality.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{IO_TIMEOUT, connect};

/// The length of the first whole frame in `bytes`, `None` while it is
/// not all there.
pub fn frame_len(bytes: &[u8]) -> Option<usize> {
    // Elements still to read, the one being read included.
    let mut left: u64 = 1;
    let mut at = 0;
    while left > 0 {
        let kind = *bytes.get(at)?;
        let end = at + bytes[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&bytes[at + 1..end]).expect("a header line is text");
        at = end + 2;
        left -= 1;
        let number = || line.parse::<i64>().expect("a length");
        match kind {
            b'$' | b'=' | b'!' if number() >= 0 => {
                at += number() as usize + 2;
                if at > bytes.len() {
                    return None;
                }
            }
            b'*' | b'~' | b'>' if number() > 0 => left += number() as u64,
            b'%' if number() > 0 => left += 2 * number() as u64,
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' | b'$' | b'*' | b'~' | b'>' | b'%' => {}
            other => panic!("not a RESP frame: type byte {other:?} in {bytes:?}"),
        }
    }
    Some(at)
}

/// A parsed frame. Its kind is the type byte; a line's text and a blob's
/// bytes are kept raw, so two values are equal exactly when their bytes
/// are.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// `+ - : _ , # (`, and `$-1`, `*-1`: the type byte and the line.
    Line(u8, Vec<u8>),
    /// `$ = !`: the type byte and the payload.
    Blob(u8, Vec<u8>),
    /// `* ~ > %`: the type byte and the elements (a map's keys and values
    /// in turn).
    Aggregate(u8, Vec<Value>),
}

impl Value {
    /// Parses the first frame of `bytes` (which must be whole); returns it
    /// and its length.
    pub fn parse(bytes: &[u8]) -> (Value, usize) {
        let end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        let kind = bytes[0];
        let line = bytes[1..end].to_vec();
        let number = || std::str::from_utf8(&line).unwrap().parse::<i64>().unwrap();
        match kind {
            b'$' | b'=' | b'!' if number() >= 0 => {
                let start = end + 2;
                let len = number() as usize;
                let blob = bytes[start..start + len].to_vec();
                (Value::Blob(kind, blob), start + len + 2)
            }
            b'*' | b'~' | b'>' | b'%' if number() >= 0 => {
                let count = number() as usize * if kind == b'%' { 2 } else { 1 };
                let mut at = end + 2;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    let (item, used) = Value::parse(&bytes[at..]);
                    items.push(item);
                    at += used;
                }
                (Value::Aggregate(kind, items), at)
            }
            _ => (Value::Line(kind, line), end + 2),
        }
    }

    /// The payload of a blob (bulk string).
    pub fn blob(&self) -> Option<&[u8]> {
        match self {
            Value::Blob(_, bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The elements of an aggregate.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Aggregate(_, items) => Some(items),
            _ => None,
        }
    }
}

/// A client connection that reads frames as they come.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` (reads and writes time out after
    /// [`IO_TIMEOUT`]).
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = connect(addr);
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Sends one command, as multibulk.
    pub fn send(&mut self, args: &[&[u8]]) {
        let mut bytes = Vec::new();
        holdfast::engine::codec::resp::encode_command(args, &mut bytes);
        self.stream.write_all(&bytes).expect("sending a command");
    }

    /// The next frame, whole; panics after [`IO_TIMEOUT`].
    pub fn frame(&mut self) -> Vec<u8> {
        self.frame_within(IO_TIMEOUT)
            .unwrap_or_else(|| panic!("no frame within {IO_TIMEOUT:?}"))
    }

    /// The next frame, or `None` if none is whole within `timeout`.
    pub fn frame_within(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut chunk = [0u8; 16 * 1024];
        let frame = loop {
            if let Some(len) = frame_len(&self.buffer) {
                break Some(self.buffer.drain(..len).collect());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "the connection closed with {:?} unread",
                    String::from_utf8_lossy(&self.buffer)
                ),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    break None;
                }
                Err(e) => panic!("reading a frame: {e}"),
            }
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        frame
    }

    /// Sends one command and reads one frame.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args);
        self.frame()
    }
}

/// `$<len>\r\n<bytes>\r\n`.
pub fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// The frame Redis sends a RESP2 subscriber: `*N` and bulk strings (the
/// last element of a (un)subscribe confirmation is a count: give it as
/// `:N`).
pub fn array(items: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for item in items {
        if item.starts_with(b":") {
            out.extend_from_slice(item);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&bulk(item));
        }
    }
    out
}
