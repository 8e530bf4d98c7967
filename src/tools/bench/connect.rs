//! The connect phase of a load thread, shared by the echo load
//! ([`worker`](super::worker)) and the pub/sub load
//! ([`pubsub`](super::pubsub)): non-blocking connects, at most
//! [`CONNECTING_MAX`] in flight, a refused one tried again a little later,
//! each from its own loopback source address.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Socket, Type};

/// Connects in flight per thread. Bounds the burst of SYNs so a server's
/// listen backlog (1024 by default, for holdfast and tokio alike) does not
/// overflow and turn into 1 s SYN retransmits.
pub const CONNECTING_MAX: usize = 256;

/// Source addresses used against a loopback target: connection `i` is bound
/// to 127.0.0.(1 + i % SOURCES). Linux has about 28k ephemeral ports
/// (32768–60999) per source address and destination; spreading over 250
/// addresses means the port range is never the limit (7M ports), and the
/// TIME_WAIT sockets the client leaves behind at the end of a run are
/// spread thin over all of them.
pub const SOURCES: usize = 250;

/// Attempts per connection in the connect phase. A connect refused by a
/// loopback server whose accept queue overflowed (its CPU busy elsewhere)
/// is tried again after a short pause instead of being lost.
const CONNECT_ATTEMPTS: u8 = 8;

/// Pause before trying a refused connect again, times the attempt number.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The connect phase of one thread's connections, by local index (the
/// index in `indices`, which is also the connection's mio token).
pub struct Connector {
    target: SocketAddr,
    /// The global index of each local connection (it picks the source
    /// address).
    indices: Vec<usize>,
    /// Connect attempts made, by local index.
    attempts: Vec<u8>,
    /// Refused connects to try again, at an instant, in instant order.
    retry: VecDeque<(Instant, usize)>,
    /// The next local index never tried.
    next_connect: usize,
    /// Connects in flight.
    connecting: usize,
    /// Connects refused and queued to be tried again.
    pub retries: u64,
}

impl Connector {
    /// The connect phase of connections `indices` (global indices) to
    /// `target`.
    pub fn new(target: SocketAddr, indices: Vec<usize>) -> Connector {
        let count = indices.len();
        Connector {
            target,
            indices,
            attempts: vec![0u8; count],
            retry: VecDeque::new(),
            next_connect: 0,
            connecting: 0,
            retries: 0,
        }
    }

    /// How many connections this thread has.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The global index of local connection `local`.
    pub fn index(&self, local: usize) -> usize {
        self.indices[local]
    }

    /// Starts connects (retries first, once due) up to the in-flight bound.
    /// Each started socket is registered for reading and writing under
    /// `Token(local)` and handed to `started(local, socket)`; a connect
    /// that failed at once and will not be tried again goes to
    /// `failed(error)`.
    pub fn start_some(
        &mut self,
        now: Instant,
        registry: &Registry,
        mut started: impl FnMut(usize, TcpStream),
        mut failed: impl FnMut(io::Error),
    ) -> io::Result<()> {
        while self.connecting < CONNECTING_MAX {
            let local = match self.retry.front() {
                Some(&(at, local)) if at <= now => {
                    self.retry.pop_front();
                    local
                }
                _ if self.next_connect < self.indices.len() => {
                    self.next_connect += 1;
                    self.next_connect - 1
                }
                _ => break,
            };
            self.attempts[local] += 1;
            match connect(self.target, self.indices[local]) {
                Ok(mut socket) => {
                    registry.register(
                        &mut socket,
                        Token(local),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    self.connecting += 1;
                    started(local, socket);
                }
                Err(error) if self.may_retry(local, &error) => self.retry_later(local, now),
                Err(error) => failed(error),
            }
        }
        Ok(())
    }

    /// A connect in flight completed.
    pub fn established(&mut self) {
        self.connecting -= 1;
    }

    /// A connect in flight failed with `error`. Returns `true` when it was
    /// queued to be tried again (the caller drops the socket, not the
    /// connection), `false` when it failed for good.
    pub fn failed(&mut self, local: usize, error: &io::Error, now: Instant) -> bool {
        self.connecting -= 1;
        if self.may_retry(local, error) {
            self.retry_later(local, now);
            return true;
        }
        false
    }

    /// Ends the connect phase: returns the connects still in flight (their
    /// sockets are the caller's to fail) and the ones still waiting to be
    /// tried again (failed for good now), and forgets both.
    pub fn close_phase(&mut self) -> (usize, usize) {
        let in_flight = std::mem::take(&mut self.connecting);
        let waiting = self.retry.len();
        self.retry.clear();
        self.next_connect = self.indices.len();
        (in_flight, waiting)
    }

    fn may_retry(&self, local: usize, error: &io::Error) -> bool {
        refused(error) && self.attempts[local] < CONNECT_ATTEMPTS
    }

    /// Queues a refused connect for another attempt, later for each one.
    fn retry_later(&mut self, local: usize, now: Instant) {
        self.retries += 1;
        let at = now + RETRY_PAUSE * u32::from(self.attempts[local]);
        self.retry.push_back((at, local));
    }
}

/// Whether the connect in flight on `socket` has completed: `Ok(true)`
/// once established (TCP_NODELAY is then set), `Ok(false)` on a spurious
/// wake-up, the error when it failed.
pub fn finish(socket: &TcpStream) -> io::Result<bool> {
    if let Some(error) = socket.take_error()? {
        return Err(error);
    }
    match socket.peer_addr() {
        Ok(_) => {
            let _ = socket.set_nodelay(true);
            Ok(true)
        }
        // Not connected yet: a spurious wake-up.
        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether a connect failed because the server refused or reset it (a
/// listener whose accept queue overflowed), which is worth another try.
fn refused(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// Starts a non-blocking connect to `target` for connection `index`,
/// bound first to its source address when the target is on loopback.
///
/// Only the address is bound, with port 0 and `IP_BIND_ADDRESS_NO_PORT`:
/// the kernel then picks the source port at connect time and needs only the
/// 4-tuple to be unique, so a port held by a TIME_WAIT socket towards
/// another server port is free to use. (A plain bind to port 0 reserves a
/// port for every destination, must skip every port in TIME_WAIT, and got
/// slow and then failed as TIME_WAIT sockets piled up over a `make bench`.)
fn connect(target: SocketAddr, index: usize) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    if let Some(source) = source_address(target, index) {
        // Best effort: without it (old kernels), bind picks the port.
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        );
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// The source address of connection `index`: 127.0.0.1, 127.0.0.2, ...,
/// 127.0.0.[`SOURCES`] in turn, when the target is an IPv4 loopback
/// address; `None` (let the kernel choose) otherwise.
pub fn source_address(target: SocketAddr, index: usize) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let host = 1 + (index % SOURCES) as u32;
            Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | host)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_sources_spread_past_the_port_range() {
        let target: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let ip = |index| source_address(target, index).unwrap().to_string();
        assert_eq!(ip(0), "127.0.0.1");
        assert_eq!(ip(1), "127.0.0.2");
        assert_eq!(ip(SOURCES - 1), "127.0.0.250");
        assert_eq!(ip(SOURCES), "127.0.0.1");
        assert_eq!(ip(10 * SOURCES + 3), "127.0.0.4");
    }

    #[test]
    fn other_targets_let_the_kernel_choose() {
        let target: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        assert_eq!(source_address(target, 0), None);
        let target: SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(source_address(target, 0), None);
    }
}
