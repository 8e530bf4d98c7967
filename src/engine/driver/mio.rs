//! The epoll driver, through mio: edge-triggered readiness, so every read
//! and write goes on until the kernel says EAGAIN (or a short read or write
//! shows the socket buffer is drained or full, which under edge triggering
//! guarantees a fresh event once that changes).

use std::io;

use crate::engine::buffer::Pool;
use crate::engine::conn::Conn;

/// What one read pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// Bytes moved into the input ring.
    pub bytes: usize,
    /// The peer closed its side (end of stream).
    pub eof: bool,
}

/// Reads from `conn`'s socket into its input ring (taken from `pool` if it
/// has none) while [`Conn::wants_read`] holds and fewer than `budget` bytes
/// were read. An error is the peer's (reset, broken pipe): close the
/// connection.
pub fn read(conn: &mut Conn, pool: &mut Pool, budget: usize) -> io::Result<Read> {
    let mut done = Read::default();
    while conn.wants_read() && done.bytes < budget {
        let input = conn.input.get_or_insert_with(|| pool.take());
        let asked = input.free().min(budget - done.bytes);
        match input.read_from_at_most(&mut conn.stream, asked) {
            Ok(0) => {
                done.eof = true;
                conn.read_ready = false;
            }
            Ok(n) => {
                done.bytes += n;
                // A short read drained the socket: the next byte (or FIN)
                // to arrive raises a new edge, so there is no need to spend
                // a syscall on the EAGAIN. A FIN that already arrived raises
                // none: then read on to the end of stream.
                if n < asked && !conn.fin_seen {
                    conn.read_ready = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.read_ready = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(input) = conn.input.take_if(|input| input.is_empty()) {
        pool.give(input);
    }
    Ok(done)
}

/// Writes `conn`'s output ring to its socket until it is empty or the
/// socket is full; returns the bytes written. An error is the peer's.
pub fn flush(conn: &mut Conn, pool: &mut Pool) -> io::Result<usize> {
    let mut written = 0;
    while conn.write_ready {
        let Some(output) = conn.output.as_mut().filter(|output| !output.is_empty()) else {
            break;
        };
        let asked = output.len();
        match output.write_to(&mut conn.stream) {
            Ok(n) => {
                written += n;
                // A short write filled the socket buffer: wait for the
                // writable edge rather than spend a syscall on EAGAIN.
                if n < asked {
                    conn.write_ready = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.write_ready = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(output) = conn.output.take_if(|output| output.is_empty()) {
        pool.give(output);
    }
    Ok(written)
}
