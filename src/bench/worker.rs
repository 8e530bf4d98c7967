//! One load-generator thread: its own mio poll, its share of the
//! connections, its own latency histogram. Threads share nothing but a few
//! counters for the progress line, updated once per loop turn.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Connections per source address. Linux hands out ephemeral ports from
/// about 28k (32768–60999) per source address when a socket is bound before
/// connect, so past this the next address of 127.0.0.0/8 is used.
pub const CONNS_PER_SOURCE: usize = 20_000;

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
    /// The first error, for the summary.
    pub first_error: Option<String>,
}

/// Runs connections `indices` (global indices: they pick the source
/// address) until `end`; measures from `warmup_end`.
pub fn run(
    options: &BenchOptions,
    indices: Vec<usize>,
    warmup_end: Instant,
    end: Instant,
    live: &Arc<Live>,
) -> io::Result<Outcome> {
    let message = Message::new(options.protocol, options.size);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(EVENTS_MAX);
    let mut conns: Vec<Option<Conn>> = (0..indices.len()).map(|_| None).collect();
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut outcome = Outcome {
        histogram: new_histogram(),
        requests: 0,
        errors: 0,
        connected: 0,
        first_error: None,
    };
    let mut next_connect = 0;
    let mut connecting = 0;
    let mut answered_total = 0u64;
    let mut published = (0u64, 0u64, 0u64, 0u64);
    let mut settled = 0u64;

    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Start connects up to the in-flight bound.
        while connecting < CONNECTING_MAX && next_connect < indices.len() {
            let local = next_connect;
            next_connect += 1;
            match connect(options.target, indices[local]) {
                Ok(mut socket) => {
                    poll.registry().register(
                        &mut socket,
                        Token(local),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conns[local] = Some(Conn::new(socket, options.pipeline));
                    connecting += 1;
                }
                Err(error) => {
                    settled += 1;
                    fail(&mut outcome, ConnError::Connect(error));
                }
            }
        }

        let timeout = (end - now).min(Duration::from_millis(100));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        let now = Instant::now();
        let measuring = now >= warmup_end;
        for event in events.iter() {
            let local = event.token().0;
            let Some(conn) = conns[local].as_mut() else {
                continue;
            };
            let result = drive(
                conn,
                event,
                &message,
                &mut scratch,
                options,
                now,
                measuring,
                &mut outcome,
                &mut answered_total,
            );
            let was_open = conn.open;
            if !was_open && matches!(result, Ok(true)) {
                conn.open = true;
                connecting -= 1;
                settled += 1;
                outcome.connected += 1;
                // Now that it is open, drive it once more: issue and send.
                let result = drive(
                    conn,
                    event,
                    &message,
                    &mut scratch,
                    options,
                    now,
                    measuring,
                    &mut outcome,
                    &mut answered_total,
                );
                if let Err(error) = result {
                    conns[local] = None;
                    fail(&mut outcome, error);
                }
                continue;
            }
            if let Err(error) = result {
                if !was_open {
                    connecting -= 1;
                    settled += 1;
                }
                conns[local] = None;
                fail(&mut outcome, error);
            }
        }

        // Publish for the progress line: a handful of relaxed adds per turn.
        let current = (answered_total, outcome.errors, outcome.connected, settled);
        live.requests
            .fetch_add(current.0 - published.0, Ordering::Relaxed);
        live.errors
            .fetch_add(current.1 - published.1, Ordering::Relaxed);
        live.connected
            .fetch_add(current.2 - published.2, Ordering::Relaxed);
        live.settled
            .fetch_add(current.3 - published.3, Ordering::Relaxed);
        published = current;
    }
    Ok(outcome)
}

/// Handles one event on `conn`. Returns `Ok(true)` when a pending connect
/// just completed (the caller marks it open and drives it again).
#[allow(clippy::too_many_arguments)]
fn drive(
    conn: &mut Conn,
    event: &mio::event::Event,
    message: &Message,
    scratch: &mut [u8],
    options: &BenchOptions,
    now: Instant,
    measuring: bool,
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
    if !options.idle {
        // Closed loop: every answer makes room for one more request.
        while conn.stream.outstanding() < options.pipeline {
            conn.stream.issue(now);
        }
        conn.write(message, scratch)?;
    }
    Ok(false)
}

fn fail(outcome: &mut Outcome, error: ConnError) {
    outcome.errors += 1;
    if outcome.first_error.is_none() {
        outcome.first_error = Some(error.to_string());
    }
}

/// Starts a non-blocking connect to `target` for connection `index`,
/// bound first to its source address when the target is on loopback.
fn connect(target: SocketAddr, index: usize) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    if let Some(source) = source_address(target, index) {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// The source address of connection `index`: 127.0.0.1 for the first
/// [`CONNS_PER_SOURCE`], then 127.0.0.2, and so on, when the target is an
/// IPv4 loopback address; `None` (let the kernel choose) otherwise.
pub fn source_address(target: SocketAddr, index: usize) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let host = 1 + index / CONNS_PER_SOURCE;
            // 127.0.0.1 ..= 127.0.255.254: 65534 addresses × 20000 conns.
            let host = u32::try_from(host).ok().filter(|&h| h < 0xffff)?;
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
        assert_eq!(ip(CONNS_PER_SOURCE - 1), "127.0.0.1");
        assert_eq!(ip(CONNS_PER_SOURCE), "127.0.0.2");
        assert_eq!(ip(300 * CONNS_PER_SOURCE), "127.0.1.45");
    }

    #[test]
    fn other_targets_let_the_kernel_choose() {
        let target: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        assert_eq!(source_address(target, 0), None);
        let target: SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(source_address(target, 0), None);
    }
}
