//! What subscribers and publishers share: why a connection stopped, and
//! reading a stream of frames with only the tail of an incomplete one kept
//! between reads.

use std::fmt;
use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// Why a pub/sub connection stopped.
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be established.
    Connect(io::Error),
    /// A read or write failed.
    Io(io::Error),
    /// The server closed the connection.
    Closed,
    /// SUBSCRIBE (or PSUBSCRIBE) was answered with an error: the server
    /// has no pub/sub, or refuses it.
    Refused {
        /// `SUBSCRIBE` or `PSUBSCRIBE`.
        command: &'static str,
        /// The error reply, without its `-`.
        reply: String,
    },
    /// PUBLISH was answered with an error.
    PublishRefused(String),
    /// Bytes that are not what the connection expects at that point.
    Unexpected(String),
    /// The subscription was not confirmed before publishing started.
    Unconfirmed,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(error) => write!(f, "connect: {error}"),
            Failure::Io(error) => write!(f, "i/o: {error}"),
            Failure::Closed => write!(f, "closed by the server"),
            Failure::Refused { command, reply } => {
                write!(f, "the server refused {command}: -{}", cut(reply))?;
                if reply.starts_with("DENIED") {
                    // Redis's protected mode takes 127.0.0.1 only.
                    write!(
                        f,
                        " (the load connects from 127.0.0.1 to 127.0.0.{}: start \
                         redis-server with --protected-mode no)",
                        super::super::connect::SOURCES
                    )?;
                }
                Ok(())
            }
            Failure::PublishRefused(reply) => {
                write!(f, "the server refused PUBLISH: -{}", cut(reply))
            }
            Failure::Unexpected(what) => write!(f, "{what}"),
            Failure::Unconfirmed => {
                write!(f, "subscription not confirmed when the connect phase ended")
            }
        }
    }
}

/// An error reply shortened to 160 characters for a one-line message.
fn cut(reply: &str) -> String {
    match reply.char_indices().nth(160) {
        Some((at, _)) => format!("{}...", &reply[..at]),
        None => reply.to_string(),
    }
}

/// Writes all of `bytes` now, or fails: for a command small enough that a
/// fresh socket always takes it whole.
pub fn write_now(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), Failure> {
    match socket.write(bytes) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(n) => Err(Failure::Io(io::Error::other(format!(
            "only {n} of the {} bytes of a command were taken",
            bytes.len()
        )))),
        Err(error) => Err(Failure::Io(error)),
    }
}

/// Reads everything `socket` has (until a read comes back short) and
/// hands `frame` the bytes from each
/// frame's start on; `frame` returns how many bytes the frame it found
/// took, or `None` when it is not complete. The incomplete tail is kept in
/// `partial` (at most `frame_max` bytes, or it is an error) and put in
/// front of the next read's bytes, in `scratch`, which must be longer than
/// `frame_max`.
pub fn read_frames(
    socket: &mut TcpStream,
    scratch: &mut [u8],
    partial: &mut Vec<u8>,
    frame_max: usize,
    mut frame: impl FnMut(&[u8]) -> Result<Option<usize>, Failure>,
) -> Result<(), Failure> {
    debug_assert!(scratch.len() > frame_max);
    loop {
        let kept = partial.len();
        scratch[..kept].copy_from_slice(partial);
        let n = match socket.read(&mut scratch[kept..]) {
            Ok(0) => return Err(Failure::Closed),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(Failure::Io(error)),
        };
        let bytes = &scratch[..kept + n];
        let mut at = 0;
        while at < bytes.len() {
            match frame(&bytes[at..])? {
                Some(used) => at += used,
                None => break,
            }
        }
        let rest = &bytes[at..];
        if rest.len() > frame_max {
            return Err(Failure::Unexpected(format!(
                "a frame longer than the {frame_max} bytes expected: {}",
                super::wire::show(rest)
            )));
        }
        partial.clear();
        partial.extend_from_slice(rest);
        if kept + n < scratch.len() {
            // A short read took all the socket had: Linux's epoll wakes
            // again for any later byte (and for the FIN), so asking once
            // more only to hear EAGAIN would double the reads.
            return Ok(());
        }
    }
}
