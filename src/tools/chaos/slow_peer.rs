//! Check 5, timeouts and slow peers: a client that sends requests and never
//! reads a reply. The server must stop taking its requests (bounded
//! memory), cut it off in bounded time, and meanwhile keep answering a
//! well-behaved client quickly.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::probe::{self, POLL};
use super::protocol;
use super::{Check, Ctx, Finding};

/// Payload bytes of each of the slow client's requests.
pub const SLOW_PAYLOAD: usize = 16 << 10;
/// The most request bytes the slow client sends.
pub const SLOW_BYTES_MAX: u64 = 64 << 20;
/// The slow client's receive buffer: tiny, so the server's output backs
/// up at once.
const SLOW_RCVBUF: usize = 4 << 10;
/// A write blocked this long means the server stopped taking requests.
const STALL: Duration = Duration::from_millis(500);
/// The slowest round trip a well-behaved client may see meanwhile.
pub const WITNESS_SLOW: Duration = Duration::from_secs(1);
/// RSS growth that counts as unbounded.
pub const RSS_GROWTH_MAX: u64 = 16 << 20;

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let check = Check::SlowPeer;
    let mut slow = match probe::connect_sized(ctx.addr, Some(SLOW_RCVBUF), None) {
        Ok(s) => s,
        Err(e) => return Finding::fail(check, format!("connect: {e}")),
    };
    let rss_before = ctx.proc.as_ref().and_then(|p| p.rss().ok());
    let (sent, stalled) = fill(ctx, &mut slow);
    // Connected now, not before the fill: an idle timeout of the server
    // must not close it while the slow client fills up.
    let mut witness = match probe::connect(ctx.addr) {
        Ok(w) => w,
        Err(e) => return Finding::fail(check, format!("a well-behaved client's connect: {e}")),
    };
    let watch = watch(ctx, &mut witness, &mut slow, stalled);
    let growth = match (rss_before, watch.rss_peak) {
        (Some(before), Some(peak)) => Some(peak.saturating_sub(before)),
        _ => None,
    };
    let took = if stalled {
        format!(
            "the server took {} of requests, then stopped reading",
            probe::bytes(sent)
        )
    } else {
        format!("the server took all {} of requests", probe::bytes(sent))
    };
    let cut = match watch.cut_after {
        Some(d) => format!("cut off {:.2} s after that", d.as_secs_f64()),
        None => format!("still connected {:.1} s later", ctx.wait.as_secs_f64()),
    };
    let witness_text = match &watch.witness_error {
        Some(e) => format!("a well-behaved client: {e}"),
        None => format!(
            "a well-behaved client: {} round trips, slowest {}",
            watch.round_trips,
            probe::ms(watch.slowest)
        ),
    };
    let rss_text = growth.map_or(String::new(), |g| format!("; RSS +{}", probe::bytes(g)));
    let evidence = format!("{took}; {cut}; {witness_text}{rss_text}");
    let bad_memory = growth.is_some_and(|g| g > RSS_GROWTH_MAX);
    if watch.cut_after.is_none() || watch.witness_error.is_some() || bad_memory {
        Finding::fail(check, evidence)
    } else {
        Finding::pass(check, evidence)
    }
}

/// Writes requests without reading until a write blocks for [`STALL`]
/// (true), the connection fails, or [`SLOW_BYTES_MAX`] or `ctx.wait`
/// pass. Returns the bytes sent.
fn fill(ctx: &Ctx, slow: &mut TcpStream) -> (u64, bool) {
    let request = protocol::request(ctx.protocol, &protocol::payload(SLOW_PAYLOAD, 5));
    let _ = slow.set_write_timeout(Some(STALL));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut at = 0;
    while sent < SLOW_BYTES_MAX && start.elapsed() < ctx.wait {
        match slow.write(&request[at..]) {
            Ok(n) => {
                sent += n as u64;
                at = (at + n) % request.len();
            }
            Err(e) if probe::is_timeout(&e) => return (sent, true),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (sent, true),
        }
    }
    (sent, false)
}

/// What [`watch`] saw.
struct Watch {
    cut_after: Option<Duration>,
    round_trips: usize,
    slowest: Duration,
    witness_error: Option<String>,
    rss_peak: Option<u64>,
}

/// Until the slow client is cut off or `ctx.wait` passes: round trips on
/// the witness and RSS readings.
fn watch(ctx: &Ctx, witness: &mut TcpStream, slow: &mut TcpStream, stalled: bool) -> Watch {
    let start = Instant::now();
    let mut seen = Watch {
        cut_after: None,
        round_trips: 0,
        slowest: Duration::ZERO,
        witness_error: None,
        rss_peak: None,
    };
    while start.elapsed() < ctx.wait {
        let payload = protocol::payload(probe::PROBE_PAYLOAD, seen.round_trips as u64);
        match probe::round_trip(witness, ctx.protocol, &payload) {
            Ok(latency) if latency > WITNESS_SLOW => {
                seen.witness_error = Some(format!("a round trip took {}", probe::ms(latency)));
            }
            Ok(latency) => seen.slowest = seen.slowest.max(latency),
            Err(e) => seen.witness_error = Some(e),
        }
        seen.round_trips += 1;
        seen.rss_peak = seen
            .rss_peak
            .max(ctx.proc.as_ref().and_then(|p| p.rss().ok()));
        if seen.witness_error.is_some() {
            break;
        }
        if cut_off(slow) {
            seen.cut_after = Some(start.elapsed());
            break;
        }
        if !stalled {
            // It never pushed back: nothing to wait for.
            break;
        }
        std::thread::sleep(POLL);
    }
    seen
}

/// Whether the server has closed or reset `slow`: a pending socket error,
/// or a one-byte write that fails (a write that would block means it is
/// still open and full).
fn cut_off(slow: &mut TcpStream) -> bool {
    if matches!(slow.take_error(), Ok(Some(_))) {
        return true;
    }
    let _ = slow.set_nonblocking(true);
    let outcome = slow.write(b"x");
    let _ = slow.set_nonblocking(false);
    match outcome {
        Ok(_) => false,
        Err(e) => !probe::is_timeout(&e) && e.kind() != ErrorKind::Interrupted,
    }
}
