//! Plain syscalls on a connection socket, to EAGAIN: the epoll driver's
//! reads and writes, and the io_uring driver's reads of a burst.
//!
//! - [`read`]: socket → input ring, to EAGAIN, end of stream, a full ring
//!   or the budget, whichever comes first;
//! - [`flush`]: output ring → socket, to EAGAIN or an empty ring.
//!
//! Both hand rings back to the pool when they are left empty, so an idle
//! connection holds none. Under edge-triggered readiness a short read or
//! write shows the socket buffer drained or full, which guarantees a fresh
//! event once that changes: no syscall is spent on the EAGAIN then.

use std::io;

use super::{Link, Read};
use crate::engine::buffer::Pool;

/// Reads `link`'s socket into its input ring (taken from `pool` if it has
/// none) until the socket is drained, the ring is full or `budget` bytes
/// were read. `fin_seen`: the peer's FIN was reported, which raises no edge
/// of its own, so reading goes on to end of stream rather than stop at a
/// short read. Returns what was read and whether the socket may still hold
/// more. An error is the peer's (reset, broken pipe).
pub fn read(
    link: &mut Link,
    pool: &mut Pool,
    budget: usize,
    fin_seen: bool,
) -> io::Result<(Read, bool)> {
    let mut done = Read::default();
    let mut ready = true;
    while ready && done.bytes < budget {
        let input = link.input.get_or_insert_with(|| pool.take());
        if input.is_full() {
            break;
        }
        let asked = input.free().min(budget - done.bytes);
        match input.read_from_at_most(&mut &link.socket, asked) {
            Ok(0) => {
                done.eof = true;
                ready = false;
            }
            Ok(n) => {
                done.bytes += n;
                // A short read drained the socket: the next byte (or FIN)
                // to arrive raises a new edge. A FIN that already arrived
                // raises none: then read on to the end of stream.
                if n < asked && !fin_seen {
                    ready = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(input) = link.input.take_if(|input| input.is_empty()) {
        pool.give(input);
    }
    Ok((done, ready))
}

/// Writes `link`'s output ring to its socket until it is empty or the
/// socket is full. Returns the bytes written and whether the socket may
/// still take more. An error is the peer's.
pub fn flush(link: &mut Link, pool: &mut Pool) -> io::Result<(usize, bool)> {
    let mut written = 0;
    let mut ready = true;
    while ready {
        let Some(output) = link.output.as_mut().filter(|output| !output.is_empty()) else {
            break;
        };
        let asked = output.len();
        match output.write_to(&mut &link.socket) {
            Ok(n) => {
                written += n;
                // A short write filled the socket buffer: wait for the
                // writable edge rather than spend a syscall on EAGAIN.
                if n < asked {
                    ready = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(output) = link.output.take_if(|output| output.is_empty()) {
        pool.give(output);
    }
    Ok((written, ready))
}
