//! The drivers: every syscall on a shard's sockets, behind one small trait
//! ([`Driver`]), as Redis's `ae.c` sits over `ae_epoll.c`. The shard's loop
//! (`shard/`) owns the turn and decides what to do; a driver waits, moves
//! bytes between sockets and rings, and reports what happened in its own
//! terms ([`Event`]).
//!
//! - [`epoll`]: readiness through mio, edge-triggered; reads and writes are
//!   plain syscalls to EAGAIN ([`socket`]). mio stays inside it.
//! - [`uring`] (`uring` feature): operations in flight on an io_uring,
//!   written on the `io-uring` crate; it does not use mio.
//!
//! What crosses the seam is the driver's own: a [`Token`] (a connection
//! table's slot and generation), a [`Socket`] (a non-blocking std TCP
//! stream), a connection's [`Link`] (its socket and its two rings) and the
//! shard's ring [`Pool`]. Per-driver state (epoll's readiness flags,
//! io_uring's operations in flight) lives in the driver, per slot.

pub mod epoll;
#[allow(unsafe_code)]
pub mod inherit;
pub mod socket;
#[cfg(feature = "uring")]
pub mod uring;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::engine::buffer::{Pool, Ring};

/// A connection's socket: a non-blocking TCP stream. Dropping it closes it.
pub type Socket = std::net::TcpStream;

/// Set in the slot half of every token of an upstream connection table;
/// clear in a client table's.
pub const UPSTREAM_BIT: usize = 1 << 31;

/// Names one connection: `generation << 32 | slot`, the slot carrying
/// [`UPSTREAM_BIT`] for an upstream connection (see `conn/table.rs`). A
/// token whose slot was reused names nothing: its generation is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

impl Token {
    /// Whether this names an upstream connection.
    pub fn is_upstream(self) -> bool {
        self.0 & UPSTREAM_BIT != 0
    }

    /// The index a driver keeps its per-connection state under: client
    /// table slot `s` at `2s`, upstream slot `s` at `2s + 1`, so both
    /// tables share one dense index space.
    pub fn index(self) -> usize {
        let raw = self.0 & 0xffff_ffff;
        ((raw & !UPSTREAM_BIT) << 1) | usize::from(raw & UPSTREAM_BIT != 0)
    }

    /// The token of `generation` whose [`Token::index`] is `index`.
    #[cfg_attr(not(feature = "uring"), allow(dead_code))]
    pub fn from_index(index: usize, generation: u32) -> Token {
        let slot = (index >> 1) | if index & 1 == 1 { UPSTREAM_BIT } else { 0 };
        Token((generation as usize) << 32 | slot)
    }

    /// The token's generation (io_uring's `user_data` carries it).
    #[cfg_attr(not(feature = "uring"), allow(dead_code))]
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// What a driver touches of a connection: its socket and its two rings
/// (each held only while it holds bytes: see `buffer/pool.rs`).
pub struct Link {
    /// The socket.
    pub socket: Socket,
    /// Received bytes not yet served.
    pub input: Option<Ring>,
    /// Reply bytes not yet written.
    pub output: Option<Ring>,
    /// It holds a unit of `--max-buffer-memory` (`engine/memory.rs`): it
    /// may take rings. A driver that receives before the shard asks (io_uring)
    /// keeps bytes for a connection without one where they landed.
    pub unit: bool,
}

impl Link {
    /// A link with no rings yet.
    pub fn new(socket: Socket) -> Link {
        Link {
            socket,
            input: None,
            output: None,
            unit: false,
        }
    }
}

/// What one read pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// Bytes moved into the input ring.
    pub bytes: usize,
    /// The peer closed its side (end of stream).
    pub eof: bool,
}

/// What a connection wants from its socket, as of the end of a drive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reading {
    /// Nothing more is read (closing, finished, end of stream).
    #[default]
    Stopped,
    /// It reads, but not now: its output ring lacks room or `--max-pending`
    /// replies are awaited (backpressure).
    Paused,
    /// It reads.
    Open,
}

/// What happened during a wait, one at a time.
#[derive(Debug)]
pub enum Event {
    /// Something moved for this connection (readiness, or a completion
    /// already applied to its rings): drive it.
    Ready(Token),
    /// A closed connection's last operation completed: it may be released.
    #[cfg_attr(not(feature = "uring"), allow(dead_code))] // io_uring's
    Released(Token),
    /// The listener may have connections waiting (accept them).
    Listener,
    /// The listener gave a connection (io_uring's multishot accept).
    #[cfg_attr(not(feature = "uring"), allow(dead_code))]
    Accepted(Socket),
    /// Accepting failed (io_uring; epoll's accept reports its errors
    /// where it is called).
    #[cfg_attr(not(feature = "uring"), allow(dead_code))]
    AcceptFailed(io::Error),
    /// The listener's accept in flight ended (io_uring): post another, or,
    /// draining, close the listener.
    #[cfg_attr(not(feature = "uring"), allow(dead_code))]
    AcceptEnded,
}

/// The connections a driver may need while it handles a completion: the
/// link a token names, with the shard's ring pool.
#[cfg_attr(not(feature = "uring"), allow(dead_code))] // epoll needs none
pub trait Links {
    /// `token`'s link (if the connection is in the table, closed or not)
    /// and the pool.
    fn link(&mut self, token: Token) -> Option<(&mut Link, &mut Pool)>;
}

/// No connections (a driver's last waits, after every one is released).
#[cfg_attr(not(feature = "uring"), allow(dead_code))]
pub struct NoLinks;

impl Links for NoLinks {
    fn link(&mut self, _: Token) -> Option<(&mut Link, &mut Pool)> {
        None
    }
}

/// A backend. The loop calls `wait`, then `next_event` until `None`, and
/// drives connections through `read` → (serve) → `flush` → `settle`.
pub trait Driver {
    /// Called once on the shard's own thread, before the first wait.
    fn start(&mut self) -> io::Result<()>;

    /// Waits until something happens or `timeout` passes (`None`: no
    /// limit; zero: only collect what is there). Returns how many events
    /// arrived.
    fn wait(&mut self, timeout: Option<Duration>, links: &mut impl Links) -> io::Result<usize>;

    /// The next thing that happened in this wait.
    fn next_event(&mut self, links: &mut impl Links) -> Option<Event>;

    /// Accepts a waiting connection. `WouldBlock`: none is waiting now (on
    /// io_uring: accepted sockets come as [`Event::Accepted`]).
    fn accept(&mut self) -> io::Result<Socket>;

    /// Accepts a connection waiting in the listener's queue with a plain
    /// non-blocking `accept(2)`, whatever the driver's own way: for the
    /// drain, and for connections no wake-up will report (see
    /// `shard/turn.rs`, `sweep_queue`). `WouldBlock`: the queue is empty.
    fn accept_queued(&mut self) -> io::Result<Socket>;

    /// Accepts one waiting connection and closes it at once (shedding load
    /// under fd exhaustion); true if there was one.
    fn shed(&mut self) -> bool;

    /// Connections already accepted by the kernel for this shard and not
    /// yet handed over (io_uring's multishot accept delivers them as
    /// completions, so they wait here rather than in the listener's
    /// queue). Epoll accepts one at a time: none.
    fn accepts_pending(&mut self) -> usize {
        0
    }

    /// Takes in an admitted connection (registers it, posts its receive).
    fn open(&mut self, token: Token, link: &mut Link) -> io::Result<()>;

    /// Moves bytes that arrived for `link` into its input ring (taken from
    /// `pool` if it has none), up to `budget` bytes, while there is room.
    /// An error is the peer's: the connection closes.
    fn read(
        &mut self,
        token: Token,
        link: &mut Link,
        pool: &mut Pool,
        budget: usize,
    ) -> io::Result<Read>;

    /// Whether more bytes (or the peer's FIN) may be waiting to be read.
    fn may_read(&self, token: Token) -> bool;

    /// Bytes may be waiting whose news has not come (the drain, a linger,
    /// a connect that just completed): the next `read` tries.
    fn expect_read(&mut self, token: Token);

    /// Starts or continues writing `link`'s output ring; returns the bytes
    /// that left the ring since the last call. An empty ring the driver no
    /// longer needs goes back to `pool`. An error is the peer's.
    fn flush(&mut self, token: Token, link: &mut Link, pool: &mut Pool) -> io::Result<usize>;

    /// The end of a drive of a live connection, with what it wants now (a
    /// completion-based driver posts or cancels its receive).
    fn settle(&mut self, token: Token, link: &Link, reading: Reading);

    /// The connection is closing: stop everything in flight on it. True if
    /// its socket and rings may be released now; false if an
    /// [`Event::Released`] will say when.
    fn retire(&mut self, token: Token, link: &mut Link) -> bool;

    /// A new socket for the upstream connection `token`, its connect to
    /// `addr` started (see [`Driver::connect_status`]).
    fn connect(&mut self, token: Token, addr: std::net::SocketAddr) -> io::Result<Socket>;

    /// How the connect of `token` is going: `None` while in flight.
    fn connect_status(&mut self, token: Token, link: &mut Link) -> Option<io::Result<()>>;

    /// The drain begins: collect what reached the sockets before the stop
    /// and not yet reported (events follow through `next_event`), and stop
    /// the listener's own accepting. True if the listener may close now
    /// (after its queue is accepted); false if an [`Event::AcceptEnded`]
    /// will say when.
    fn stop_accepting(&mut self) -> io::Result<bool>;

    /// Closes the listener (its queue was accepted).
    fn close_listener(&mut self);

    /// Whether the listener is still open.
    fn listening(&self) -> bool;

    /// Whether operations that are not a connection's are still in flight
    /// (the loop exits only once they are not).
    fn busy(&self) -> bool;

    /// Every connection is released: end what is left in flight, waiting
    /// at most until `until`. False if it gave up (the kernel may still use
    /// the driver's memory: the caller must leak the driver).
    fn finish(&mut self, until: Instant) -> io::Result<bool>;
}

/// Wakes a shard's loop from another thread (to notice the stop flag): an
/// eventfd the driver watches (epoll registers it; io_uring keeps a read
/// posted on it).
#[derive(Debug)]
pub struct EventWaker {
    fd: EventFd,
}

impl EventWaker {
    /// A fresh eventfd (close-on-exec).
    pub fn new() -> io::Result<EventWaker> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)?;
        Ok(EventWaker { fd })
    }

    /// Wakes the shard.
    pub fn wake(&self) -> io::Result<()> {
        self.fd.write(1)?;
        Ok(())
    }

    /// The eventfd, for the driver to watch.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// Wakes a shard (shared with the thread that stops the server).
pub type Waker = Arc<EventWaker>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_back_from_its_index_and_generation() {
        for token in [
            Token(0),
            Token(7 << 32 | 5),
            Token((u32::MAX as usize) << 32 | UPSTREAM_BIT | 12),
            Token(3 << 32 | (UPSTREAM_BIT - 2)),
        ] {
            assert_eq!(Token::from_index(token.index(), token.generation()), token);
        }
    }
}
