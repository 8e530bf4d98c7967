//! Check 8, fd exhaustion: up to `--max-conns` connections held at once,
//! past whatever limit the server has. It must stay up, not spin (with
//! `--pid`: CPU time while they are held), and serve again as soon as they
//! leave.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::probe::{self, POLL};
use super::{Check, Ctx, Finding};

/// How long the connections are held while CPU time is measured.
pub const HOLD: Duration = Duration::from_secs(1);
/// CPU share of one core above which a server holding idle connections
/// counts as spinning.
pub const SPIN_SHARE: f64 = 0.5;
/// How long after the last connect the ones the server refused (accepted
/// and closed) are counted: shorter than any sane idle timeout.
const REFUSE_GRACE: Duration = Duration::from_millis(500);
/// Consecutive failed connects after which no more are tried.
const CONNECT_FAILS_MAX: usize = 8;

/// What holding the connections showed.
struct Held {
    opened: usize,
    refused: usize,
    closed_by_server: usize,
    cpu_share: Option<f64>,
    meanwhile: String,
}

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let check = Check::Exhaustion;
    let held = hold(ctx);
    let counts = format!(
        "{} connections opened ({} closed by the server within {} of the last, {} failed to \
         connect); while held a new client was {}",
        held.opened,
        held.closed_by_server,
        probe::ms(REFUSE_GRACE),
        held.refused,
        held.meanwhile
    );
    let cpu = held
        .cpu_share
        .map_or("CPU not measured (no --pid)".to_string(), |s| {
            format!(
                "CPU {:.0}% of a core over {:.1} s",
                s * 100.0,
                HOLD.as_secs_f64()
            )
        });
    if ctx.proc.as_ref().is_some_and(|p| !p.alive()) {
        return Finding::fail(check, format!("{counts}; the process has exited"));
    }
    let start = Instant::now();
    let served = loop {
        match probe::serving(ctx) {
            Ok(_) => break Ok(start.elapsed()),
            Err(e) if start.elapsed() > ctx.wait => break Err(e),
            Err(_) => std::thread::sleep(POLL),
        }
    };
    match served {
        Err(e) => Finding::fail(
            check,
            format!(
                "{counts}; {cpu}; {:.1} s after they left a new client still got: {e}",
                ctx.wait.as_secs_f64()
            ),
        ),
        Ok(after) => {
            let evidence = format!(
                "{counts}; {cpu}; served again {} after they left",
                probe::ms(after)
            );
            if held.cpu_share.is_some_and(|s| s > SPIN_SHARE) {
                Finding::fail(check, evidence)
            } else {
                Finding::pass(check, evidence)
            }
        }
    }
}

/// Opens up to `ctx.max_conns` connections and holds them for [`HOLD`],
/// measuring the server's CPU time and trying one more client meanwhile.
fn hold(ctx: &Ctx) -> Held {
    let mut streams = Vec::with_capacity(ctx.max_conns);
    let mut refused = 0;
    let mut fails_in_a_row = 0;
    while streams.len() + refused < ctx.max_conns && fails_in_a_row < CONNECT_FAILS_MAX {
        match probe::connect(ctx.addr) {
            Ok(s) => {
                streams.push(s);
                fails_in_a_row = 0;
            }
            Err(_) => {
                refused += 1;
                fails_in_a_row += 1;
            }
        }
    }
    // Closed before any timeout of the server could act: refused.
    std::thread::sleep(REFUSE_GRACE);
    let closed_by_server = streams.iter().filter(|s| closed_now(s)).count();
    let cpu_before = ctx.proc.as_ref().and_then(|p| p.cpu().ok());
    let measured = Instant::now();
    let meanwhile = match probe::serving(ctx) {
        Ok(latency) => format!("served in {}", probe::ms(latency)),
        Err(e) => format!("not served ({e})"),
    };
    std::thread::sleep(HOLD.saturating_sub(measured.elapsed()));
    let cpu_after = ctx.proc.as_ref().and_then(|p| p.cpu().ok());
    let cpu_share = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => {
            Some(b.saturating_sub(a).as_secs_f64() / measured.elapsed().as_secs_f64())
        }
        _ => None,
    };
    Held {
        opened: streams.len(),
        refused,
        closed_by_server,
        cpu_share,
        meanwhile,
    }
}

/// Whether the server has already closed `stream` (without waiting).
fn closed_now(mut stream: &TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut byte = [0u8; 1];
    let closed = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    closed
}
