//! Check 5, timeouts and slow peers: a client that sends requests and never
//! reads a reply. The server must stop taking its requests (bounded
//! memory), cut it off in bounded time, and meanwhile keep answering a
//! well-behaved client quickly.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::probe::{self, POLL};
use super::protocol;
use super::{Check, Ctx, Finding};
use crate::engine::codec::Protocol;

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

/// What the well-behaved client saw.
#[derive(Default)]
struct Witness {
    round_trips: usize,
    slowest: Duration,
    error: Option<String>,
}

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let check = Check::SlowPeer;
    let (mut slow, witness) = match (
        probe::connect_sized(ctx.addr, Some(SLOW_RCVBUF), None),
        probe::connect(ctx.addr),
    ) {
        (Ok(s), Ok(w)) => (s, w),
        (Err(e), _) | (_, Err(e)) => return Finding::fail(check, format!("connect: {e}")),
    };
    let rss_before = ctx.proc.as_ref().and_then(|p| p.rss().ok());
    let stop = Arc::new(AtomicBool::new(false));
    let witnessing = witness_loop(witness, ctx.protocol, Arc::clone(&stop));
    let began = Instant::now();
    let (sent, stalled) = fill(ctx, &mut slow);
    let (cut_after, rss_peak) = wait_cut_off(ctx, &mut slow, stalled, began);
    stop.store(true, Ordering::Relaxed);
    let witness = witnessing.join().unwrap_or_default();
    let growth = rss_before.zip(rss_peak).map(|(b, p)| p.saturating_sub(b));
    let evidence = describe(ctx, sent, stalled, cut_after, &witness, growth, began);
    let bad_memory = growth.is_some_and(|g| g > RSS_GROWTH_MAX);
    if cut_after.is_none() || witness.error.is_some() || bad_memory {
        Finding::fail(check, evidence)
    } else {
        Finding::pass(check, evidence)
    }
}

fn describe(
    ctx: &Ctx,
    sent: u64,
    stalled: bool,
    cut_after: Option<Duration>,
    witness: &Witness,
    growth: Option<u64>,
    began: Instant,
) -> String {
    let took = if stalled {
        format!(
            "the server took {} of requests, then stopped reading",
            probe::bytes(sent)
        )
    } else {
        format!("the server took all {} of requests", probe::bytes(sent))
    };
    let cut = match cut_after {
        Some(d) => format!("cut off {:.2} s after its first request", d.as_secs_f64()),
        None => format!(
            "still connected {:.1} s after its first request (waited {:.1} s)",
            began.elapsed().as_secs_f64(),
            ctx.wait.as_secs_f64()
        ),
    };
    let witness_text = match &witness.error {
        Some(e) => format!("a well-behaved client meanwhile: {e}"),
        None => format!(
            "a well-behaved client meanwhile: {} round trips, slowest {}",
            witness.round_trips,
            probe::ms(witness.slowest)
        ),
    };
    let rss_text = growth.map_or(String::new(), |g| format!("; RSS +{}", probe::bytes(g)));
    format!("{took}; {cut}; {witness_text}{rss_text}")
}

/// Round trips on `stream` every [`POLL`] until `stop`, or the first
/// failure or one slower than [`WITNESS_SLOW`].
fn witness_loop(
    mut stream: TcpStream,
    protocol: Protocol,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Witness> {
    std::thread::spawn(move || {
        let mut seen = Witness::default();
        while !stop.load(Ordering::Relaxed) {
            let payload = protocol::payload(probe::PROBE_PAYLOAD, seen.round_trips as u64);
            match probe::round_trip(&mut stream, protocol, &payload) {
                Ok(latency) if latency > WITNESS_SLOW => {
                    seen.error = Some(format!("a round trip took {}", probe::ms(latency)));
                }
                Ok(latency) => seen.slowest = seen.slowest.max(latency),
                Err(e) => seen.error = Some(e),
            }
            seen.round_trips += 1;
            if seen.error.is_some() {
                break;
            }
            std::thread::sleep(POLL);
        }
        seen
    })
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
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (sent, true),
        }
    }
    (sent, false)
}

/// Until the slow client is cut off or `ctx.wait` passes (only once it
/// stalled: a server that never pushed back is not waited for). Returns
/// when it was cut off (since `began`) and the highest RSS seen.
fn wait_cut_off(
    ctx: &Ctx,
    slow: &mut TcpStream,
    stalled: bool,
    began: Instant,
) -> (Option<Duration>, Option<u64>) {
    let start = Instant::now();
    let mut rss_peak = None;
    loop {
        rss_peak = rss_peak.max(ctx.proc.as_ref().and_then(|p| p.rss().ok()));
        if cut_off(slow) {
            return (Some(began.elapsed()), rss_peak);
        }
        if !stalled || start.elapsed() >= ctx.wait {
            return (None, rss_peak);
        }
        std::thread::sleep(POLL);
    }
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
