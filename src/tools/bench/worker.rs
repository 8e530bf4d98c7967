//! One load-generator thread: its own mio poll, its share of the
//! connections, its own latency histogram. Threads share nothing but a few
//! counters for the progress line, updated once per loop turn, and the
//! window ([`Live::window`]) that the main thread sets once every
//! connection of every thread has settled.
//!
//! A run has three phases: connect (every connection, at most
//! `CONNECTING_MAX` in flight per thread, no requests sent), warm-up
//! (full load, not counted) and the measured window. The clocks of the last
//! two start only when the first is over, so a slow connect phase shortens
//! nothing and every connection is loaded for the whole window.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

use super::client::{Conn, ConnError, Message, latency_nanos};
use super::{BenchOptions, new_histogram};

/// Connects in flight per thread. Bounds the burst of SYNs so a server's
/// listen backlog (1024 by default, for holdfast and tokio alike) does not
/// overflow and turn into 1 s SYN retransmits.
const CONNECTING_MAX: usize = 256;

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

/// Events taken per poll.
const EVENTS_MAX: usize = 1024;

/// Bytes read or written per syscall (a thread's one scratch buffer).
const SCRATCH_LEN: usize = 64 * 1024;

/// Counters every thread adds to, read by the progress line.
#[derive(Default)]
pub struct Live {
    /// Replies completed (warm-up included).
    pub requests: AtomicU64,
    /// Connections that failed.
    pub errors: AtomicU64,
    /// Connections established.
    pub connected: AtomicU64,
    /// Connections whose connect finished, well or badly.
    pub settled: AtomicU64,
    /// Set by the main thread once every connect has settled (or the
    /// connect phase timed out): the end of the warm-up and the end of the
    /// measured window. Until then the threads only connect.
    pub window: OnceLock<(Instant, Instant)>,
}

/// What one thread measured.
pub struct Outcome {
    /// Latency of the requests answered in the measured window, in ns.
    pub histogram: Histogram<u64>,
    /// Requests answered in the measured window.
    pub requests: u64,
    /// Connections lost to errors (connect, i/o, wrong echo).
    pub errors: u64,
    /// Connections established.
    pub connected: u64,
    /// Connects refused and tried again in the connect phase.
    pub retries: u64,
    /// The first error, for the summary.
    pub first_error: Option<String>,
}

/// Runs connections `indices` (global indices: they pick the source
/// address): connects them all, waits for [`Live::window`], loads them
/// until its end and measures from the end of its warm-up.
pub fn run(options: &BenchOptions, indices: Vec<usize>, live: &Arc<Live>) -> io::Result<Outcome> {
    let mut worker = Worker::new(options, indices)?;
    let mut events = Events::with_capacity(EVENTS_MAX);
    loop {
        let now = Instant::now();
        worker.open_window(live, now);
        if worker.window.is_some_and(|(_, end)| now >= end) {
            break;
        }
        worker.connect_some(now)?;
        let timeout = match worker.window {
            Some((_, end)) => (end - now).min(Duration::from_millis(100)),
            // Waiting for the window: look at it often.
            None => Duration::from_millis(1),
        };
        match worker.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        let now = Instant::now();
        for event in events.iter() {
            worker.on_event(event, now);
        }
        worker.publish(live);
    }
    Ok(worker.outcome)
}

/// One thread's state over a run.
struct Worker<'a> {
    options: &'a BenchOptions,
    /// The global index of each local connection (the token).
    indices: Vec<usize>,
    message: Message,
    poll: Poll,
    /// By local index; `None` before its connect and after it failed.
    conns: Vec<Option<Conn>>,
    scratch: Vec<u8>,
    outcome: Outcome,
    /// Connect attempts made, by local index.
    attempts: Vec<u8>,
    /// Refused connects to try again, at an instant, in instant order.
    retry: VecDeque<(Instant, usize)>,
    /// The next local index never tried.
    next_connect: usize,
    /// Connects in flight.
    connecting: usize,
    /// Replies completed, warm-up included.
    answered_total: u64,
    /// Connections whose connect finished, well or badly.
    settled: u64,
    /// What [`Live`] was last given: (replies, errors, connected, settled).
    published: (u64, u64, u64, u64),
    /// The window, once the main thread has set it and this thread has
    /// started the load.
    window: Option<(Instant, Instant)>,
}

impl<'a> Worker<'a> {
    fn new(options: &'a BenchOptions, indices: Vec<usize>) -> io::Result<Worker<'a>> {
        let count = indices.len();
        Ok(Worker {
            options,
            indices,
            message: Message::new(options.protocol, options.size),
            poll: Poll::new()?,
            conns: (0..count).map(|_| None).collect(),
            scratch: vec![0u8; SCRATCH_LEN],
            outcome: Outcome {
                histogram: new_histogram(),
                requests: 0,
                errors: 0,
                connected: 0,
                retries: 0,
                first_error: None,
            },
            attempts: vec![0u8; count],
            retry: VecDeque::new(),
            next_connect: 0,
            connecting: 0,
            answered_total: 0,
            settled: 0,
            published: (0, 0, 0, 0),
            window: None,
        })
    }

    /// Once the main thread has set the window: starts the load; connects
    /// still waiting to be retried have missed it and fail.
    fn open_window(&mut self, live: &Live, now: Instant) {
        if self.window.is_some() {
            return;
        }
        let Some(&window) = live.window.get() else {
            return;
        };
        self.window = Some(window);
        start_load(
            &mut self.conns,
            &self.message,
            &mut self.scratch,
            self.options,
            now,
            &mut self.outcome,
        );
        self.settled += (self.connecting + self.retry.len()) as u64;
        for _ in self.retry.drain(..) {
            fail(
                &mut self.outcome,
                ConnError::Connect(io::ErrorKind::ConnectionRefused.into()),
            );
        }
        self.connecting = 0;
    }

    /// Connect phase: starts connects (retries first, once due) up to the
    /// in-flight bound.
    fn connect_some(&mut self, now: Instant) -> io::Result<()> {
        while self.window.is_none() && self.connecting < CONNECTING_MAX {
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
            match connect(self.options.target, self.indices[local]) {
                Ok(mut socket) => {
                    self.poll.registry().register(
                        &mut socket,
                        Token(local),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    self.conns[local] = Some(Conn::new(socket, self.options.pipeline));
                    self.connecting += 1;
                }
                Err(error) if refused(&error) && self.attempts[local] < CONNECT_ATTEMPTS => {
                    self.retry_later(local, now);
                }
                Err(error) => {
                    self.settled += 1;
                    fail(&mut self.outcome, ConnError::Connect(error));
                }
            }
        }
        Ok(())
    }

    /// Queues a refused connect for another attempt, later for each one.
    fn retry_later(&mut self, local: usize, now: Instant) {
        self.outcome.retries += 1;
        let at = now + RETRY_PAUSE * u32::from(self.attempts[local]);
        self.retry.push_back((at, local));
    }

    /// Drives the connection an event names; settles its connect when it
    /// completes or fails.
    fn on_event(&mut self, event: &mio::event::Event, now: Instant) {
        let local = event.token().0;
        let Some(conn) = self.conns[local].as_mut() else {
            return;
        };
        let measuring = self.window.is_some_and(|(warmup_end, _)| now >= warmup_end);
        let was_open = conn.open;
        let result = drive(
            conn,
            event,
            &self.message,
            &mut self.scratch,
            self.options,
            now,
            (self.window.is_some(), measuring),
            &mut self.outcome,
            &mut self.answered_total,
        );
        match result {
            Ok(true) if !was_open => {
                conn.open = true;
                self.connecting -= 1;
                self.settled += 1;
                self.outcome.connected += 1;
            }
            Ok(_) => {}
            Err(error) => {
                self.conns[local] = None;
                if !was_open {
                    self.connecting -= 1;
                    if let ConnError::Connect(cause) = &error {
                        if refused(cause) && self.attempts[local] < CONNECT_ATTEMPTS {
                            self.retry_later(local, now);
                            return;
                        }
                    }
                    self.settled += 1;
                }
                fail(&mut self.outcome, error);
            }
        }
    }

    /// Publishes for the progress line: a handful of relaxed adds per turn.
    fn publish(&mut self, live: &Live) {
        let current = (
            self.answered_total,
            self.outcome.errors,
            self.outcome.connected,
            self.settled,
        );
        let published = self.published;
        live.requests
            .fetch_add(current.0 - published.0, Ordering::Relaxed);
        live.errors
            .fetch_add(current.1 - published.1, Ordering::Relaxed);
        live.connected
            .fetch_add(current.2 - published.2, Ordering::Relaxed);
        live.settled
            .fetch_add(current.3 - published.3, Ordering::Relaxed);
        self.published = current;
    }
}

/// The window has opened: a connect still in flight has missed it and
/// counts as an error; every open connection gets its first requests
/// (none with `--idle`). Connects that completed sent nothing so far and
/// get no further readiness event, so they are started here.
fn start_load(
    conns: &mut [Option<Conn>],
    message: &Message,
    scratch: &mut [u8],
    options: &BenchOptions,
    now: Instant,
    outcome: &mut Outcome,
) {
    for slot in conns.iter_mut() {
        let Some(conn) = slot.as_mut() else {
            continue;
        };
        let result = if !conn.open {
            Err(ConnError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "not established when the connect phase ended",
            )))
        } else if options.idle {
            Ok(())
        } else {
            while conn.stream.outstanding() < options.pipeline {
                conn.stream.issue(now);
            }
            conn.write(message, scratch)
        };
        if let Err(error) = result {
            *slot = None;
            fail(outcome, error);
        }
    }
}

/// Handles one event on `conn`, `loading` once the window is set and
/// `measuring` once its warm-up is over. Returns `Ok(true)` when a pending
/// connect just completed (the caller marks it open and drives it again).
#[allow(clippy::too_many_arguments)]
fn drive(
    conn: &mut Conn,
    event: &mio::event::Event,
    message: &Message,
    scratch: &mut [u8],
    options: &BenchOptions,
    now: Instant,
    (loading, measuring): (bool, bool),
    outcome: &mut Outcome,
    answered_total: &mut u64,
) -> Result<bool, ConnError> {
    if !conn.open {
        if let Some(error) = conn.socket.take_error().map_err(ConnError::Connect)? {
            return Err(ConnError::Connect(error));
        }
        return match conn.socket.peer_addr() {
            Ok(_) => {
                let _ = conn.socket.set_nodelay(true);
                Ok(true)
            }
            // Not connected yet: a spurious wake-up.
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(error) => Err(ConnError::Connect(error)),
        };
    }
    if event.is_readable() || event.is_read_closed() || event.is_error() {
        let mut answered = 0u64;
        let histogram = &mut outcome.histogram;
        conn.read(message, scratch, |issued_at| {
            answered += 1;
            if measuring {
                // Saturates at the histogram's top instead of failing.
                histogram.saturating_record(latency_nanos(issued_at, now));
            }
        })?;
        *answered_total += answered;
        if measuring {
            outcome.requests += answered;
        }
    }
    if loading && !options.idle {
        // Closed loop: every answer makes room for one more request.
        while conn.stream.outstanding() < options.pipeline {
            conn.stream.issue(now);
        }
        conn.write(message, scratch)?;
    }
    Ok(false)
}

/// Whether a connect failed because the server refused or reset it (a
/// listener whose accept queue overflowed), which is worth another try.
fn refused(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

fn fail(outcome: &mut Outcome, error: ConnError) {
    outcome.errors += 1;
    if outcome.first_error.is_none() {
        outcome.first_error = Some(error.to_string());
    }
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
