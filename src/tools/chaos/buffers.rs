//! Check 4, buffers: a frame that claims to be as large as the protocol
//! allows (a length header of 2^32-1, an endless line), its bytes streamed
//! in; the server must refuse it or keep its memory bounded (with `--pid`:
//! RSS) while they arrive.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::probe;
use super::protocol;
use super::{Check, Ctx, Finding};

/// The most filler bytes sent after the oversized head.
pub const OVERSIZE_BYTES: u64 = 32 << 20;
/// RSS growth that counts as buffering without bound: half of what is sent.
pub const RSS_GROWTH_MAX: u64 = OVERSIZE_BYTES / 2;
/// A write blocked this long means the server stopped reading.
const STALL: Duration = Duration::from_millis(500);
/// Our send buffer: small, so bytes written are close to bytes the server
/// took.
const SNDBUF: usize = 64 << 10;
/// Bytes per write.
const CHUNK: usize = 64 << 10;

/// How the stream of filler ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The server closed or reset the connection.
    Closed,
    /// Writes blocked: the server stopped reading (flow control).
    Stalled,
    /// Everything was sent (or the time ran out) with the connection open.
    Taken,
}

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let check = Check::Buffers;
    let Some(head) = protocol::oversized_head(ctx.protocol) else {
        return Finding::unknown(check, "echo has no frames to make too large");
    };
    let rss_before = ctx.proc.as_ref().and_then(|p| p.rss().ok());
    let (end, sent, rss_peak) = match stream_oversized(ctx, &head) {
        Ok(outcome) => outcome,
        Err(e) => return Finding::fail(check, format!("connect: {e}")),
    };
    let growth = match (rss_before, rss_peak) {
        (Some(before), Some(peak)) => Some(peak.saturating_sub(before)),
        _ => None,
    };
    let claim = match ctx.protocol {
        crate::engine::codec::Protocol::Line => "a line with no end".to_string(),
        _ => "a frame claiming 4 GiB".to_string(),
    };
    let rss_text = growth.map_or(String::new(), |g| format!("; RSS +{}", probe::bytes(g)));
    let how = match end {
        End::Closed => "then the server closed the connection",
        End::Stalled => "then the server stopped reading (flow control)",
        End::Taken => "all taken, the connection still open",
    };
    let evidence = format!("{} of {claim} sent, {how}{rss_text}", probe::bytes(sent));
    if let Err(e) = probe::serving(ctx) {
        return Finding::fail(check, format!("{evidence}; then a new connection: {e}"));
    }
    match (growth, end) {
        (Some(g), _) if g > RSS_GROWTH_MAX => Finding::fail(check, evidence),
        (Some(_), _) | (None, End::Closed) => Finding::pass(check, evidence),
        (None, End::Stalled) if sent < RSS_GROWTH_MAX => Finding::pass(check, evidence),
        (None, _) => Finding::unknown(check, format!("{evidence}; needs --pid to see RSS")),
    }
}

/// Sends `head` then filler until the server closes, stops reading, or
/// [`OVERSIZE_BYTES`] or `ctx.wait` pass. Replies are read and discarded
/// on another thread, which also notices the close. Returns how it ended,
/// the bytes sent and the highest RSS seen.
fn stream_oversized(ctx: &Ctx, head: &[u8]) -> std::io::Result<(End, u64, Option<u64>)> {
    let mut stream = probe::connect_sized(ctx.addr, None, Some(SNDBUF))?;
    stream.set_write_timeout(Some(STALL))?;
    let closed = Arc::new(AtomicBool::new(false));
    let reader = discard_replies(stream.try_clone()?, Arc::clone(&closed));
    let filler = vec![b'x'; CHUNK];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut rss_peak = None;
    let mut next: &[u8] = head;
    let end = loop {
        if closed.load(Ordering::Relaxed) {
            break End::Closed;
        }
        if sent >= OVERSIZE_BYTES || start.elapsed() > ctx.wait {
            break End::Taken;
        }
        match stream.write(next) {
            Ok(n) => sent += n as u64,
            Err(e) if probe::is_timeout(&e) => break End::Stalled,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break End::Closed,
        }
        next = &filler;
        rss_peak = rss_peak.max(ctx.proc.as_ref().and_then(|p| p.rss().ok()));
    };
    // The server may still be growing what it keeps: one more look.
    std::thread::sleep(Duration::from_millis(200));
    rss_peak = rss_peak.max(ctx.proc.as_ref().and_then(|p| p.rss().ok()));
    let end = if end != End::Closed && closed.load(Ordering::Relaxed) {
        End::Closed
    } else {
        end
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    Ok((end, sent.saturating_sub(head.len() as u64), rss_peak))
}

/// Reads and drops whatever the server sends; sets `closed` at its end of
/// stream or reset.
fn discard_replies(
    mut stream: std::net::TcpStream,
    closed: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if probe::is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        closed.store(true, Ordering::Relaxed);
    })
}
