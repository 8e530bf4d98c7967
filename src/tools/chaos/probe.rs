//! Client sockets and the round trip every check uses to ask "is the
//! server still serving, and right?".

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::Ctx;
use super::protocol;
use crate::engine::codec::Protocol;

/// How long a connect, a write or a reply may take before it counts as
/// not answered: generous, so a loaded machine is not a failing server.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Interval of every polling loop.
pub const POLL: Duration = Duration::from_millis(20);
/// Payload bytes of a plain round trip.
pub const PROBE_PAYLOAD: usize = 32;
/// The most bytes [`wait_closed`] reads and discards while waiting.
const DISCARD_MAX: usize = 64 << 20;

/// A connected socket with timeouts, `TCP_NODELAY`, and the given buffer
/// sizes (set before the connect, so the window is small from the start).
pub fn connect_sized(
    addr: SocketAddr,
    rcvbuf: Option<usize>,
    sndbuf: Option<usize>,
) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(size) = sndbuf {
        socket.set_send_buffer_size(size)?;
    }
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// A connected socket with the default buffers.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    connect_sized(addr, None, None)
}

/// Reads exactly `len` bytes within `timeout`, or says what came.
pub fn read_exact_within(
    stream: &mut TcpStream,
    len: usize,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut got = vec![0u8; len];
    let mut have = 0;
    while have < len {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no reply within {timeout:?} ({have} of {len} bytes)"
            ));
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut got[have..]) {
            Ok(0) => return Err(format!("closed by the server after {have} of {len} bytes")),
            Ok(n) => have += n,
            Err(e) if is_timeout(&e) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{e} after {have} of {len} bytes")),
        }
    }
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    Ok(got)
}

/// Compares a reply with the expected one; the error names the first
/// differing byte.
pub fn compare(got: &[u8], expected: &[u8]) -> Result<(), String> {
    match got.iter().zip(expected).position(|(a, b)| a != b) {
        None if got.len() == expected.len() => Ok(()),
        None => Err(format!(
            "{} reply bytes, expected {}",
            got.len(),
            expected.len()
        )),
        Some(at) => Err(format!(
            "wrong reply byte at offset {at} of {}: got {:?}, expected {:?}",
            expected.len(),
            snippet(got, at),
            snippet(expected, at)
        )),
    }
}

/// Up to 16 bytes from `at`, printable.
fn snippet(bytes: &[u8], at: usize) -> String {
    String::from_utf8_lossy(&bytes[at..(at + 16).min(bytes.len())]).into_owned()
}

/// Sends one request of `payload` and checks the reply; returns the
/// latency.
pub fn round_trip(
    stream: &mut TcpStream,
    protocol: Protocol,
    payload: &[u8],
) -> Result<Duration, String> {
    let start = Instant::now();
    stream
        .write_all(&protocol::request(protocol, payload))
        .map_err(|e| format!("sending a request: {e}"))?;
    let expected = protocol::reply(protocol, payload);
    let got = read_exact_within(stream, expected.len(), IO_TIMEOUT)?;
    compare(&got, &expected)?;
    Ok(start.elapsed())
}

/// A new connection and one round trip on it: is the server serving?
pub fn serving(ctx: &Ctx) -> Result<Duration, String> {
    let mut stream = connect(ctx.addr).map_err(|e| format!("connecting to {}: {e}", ctx.addr))?;
    round_trip(
        &mut stream,
        ctx.protocol,
        &protocol::payload(PROBE_PAYLOAD, 0),
    )
}

/// Has the server closed `stream`? Reads (and discards, at most
/// [`DISCARD_MAX`] bytes) until the end of the stream, a reset or
/// `deadline`; returns how long the wait took when it was closed.
pub fn wait_closed(stream: &mut TcpStream, deadline: Instant) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 16 * 1024];
    let mut discarded = 0;
    while discarded <= DISCARD_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let _ = stream.set_read_timeout(Some(left.min(Duration::from_millis(100))));
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(n) => discarded += n,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// A read or write timed out (std reports `WouldBlock` or `TimedOut`).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Milliseconds of `d`, for evidence.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes as KiB or MiB, for evidence.
pub fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
