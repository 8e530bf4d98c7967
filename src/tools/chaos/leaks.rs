//! Check 1, fd / connection leaks: waves of connections ended every way a
//! peer ends them (FIN, RST, half-close, mid-frame); then the server's open
//! descriptors (with `--pid`) must come back to the baseline.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::probe::{self, IO_TIMEOUT, POLL};
use super::protocol;
use super::{Check, Ctx, Finding};

/// Connections per way of ending, per wave.
pub const CONNS_PER_ENDING: usize = 16;
/// Waves of every ending.
pub const WAVES: usize = 2;
/// How long the descriptor count must hold still to be a baseline.
const SETTLE: Duration = Duration::from_millis(200);

/// The ways a peer ends a connection.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// close(): FIN after the reply was read.
    Fin,
    /// close() with SO_LINGER 0: a reset.
    Rst,
    /// shutdown(SHUT_WR), then wait for the server to close.
    HalfClose,
    /// Half a request, then close().
    MidFrame,
}

const ENDINGS: [Ending; 4] = [
    Ending::Fin,
    Ending::Rst,
    Ending::HalfClose,
    Ending::MidFrame,
];

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let baseline = ctx
        .proc
        .as_ref()
        .and_then(|p| p.settled_fds(SETTLE, IO_TIMEOUT).ok());
    let per_ending = CONNS_PER_ENDING.min(ctx.max_conns);
    let mut ended = 0;
    let mut peak = baseline.unwrap_or(0);
    for _ in 0..WAVES {
        for ending in ENDINGS {
            match wave(ctx, ending, per_ending) {
                Ok(fds) => peak = peak.max(fds.unwrap_or(0)),
                Err(e) => {
                    return Finding::fail(
                        Check::Leaks,
                        format!("after {ended} connections ended: {ending:?} wave: {e}"),
                    );
                }
            }
            ended += per_ending;
        }
    }
    let what = format!("{ended} connections ended by FIN, RST, half-close and mid-frame");
    let (Some(proc), Some(baseline)) = (&ctx.proc, baseline) else {
        return Finding::unknown(
            Check::Leaks,
            format!("{what}, all served; needs --pid to count the server's fds"),
        );
    };
    let start = Instant::now();
    let mut now = u64::MAX;
    while start.elapsed() < ctx.wait {
        now = proc.fds().unwrap_or(u64::MAX);
        if now <= baseline {
            return Finding::pass(
                Check::Leaks,
                format!(
                    "{what}: fds {baseline} before, peak {peak}, back to {now} in {}",
                    probe::ms(start.elapsed())
                ),
            );
        }
        std::thread::sleep(POLL);
    }
    Finding::fail(
        Check::Leaks,
        format!(
            "{what}: fds {baseline} before, still {now} (+{}) after {:.1} s",
            now.saturating_sub(baseline),
            ctx.wait.as_secs_f64()
        ),
    )
}

/// Opens `count` connections, makes one round trip on each, then ends
/// them all as `ending` says. Returns the server's fds while they were
/// open.
fn wave(ctx: &Ctx, ending: Ending, count: usize) -> Result<Option<u64>, String> {
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = probe::connect(ctx.addr).map_err(|e| format!("connect: {e}"))?;
        let payload = protocol::payload(probe::PROBE_PAYLOAD, i as u64);
        probe::round_trip(&mut stream, ctx.protocol, &payload)?;
        streams.push(stream);
    }
    let fds = ctx.proc.as_ref().and_then(|p| p.fds().ok());
    let half = protocol::request(ctx.protocol, &protocol::payload(probe::PROBE_PAYLOAD, 9));
    let mut half_closed = Vec::new();
    for mut stream in streams {
        match ending {
            Ending::Fin => drop(stream),
            Ending::Rst => reset(stream),
            Ending::MidFrame => {
                let _ = stream.write_all(&half[..half.len() / 2]);
                drop(stream);
            }
            Ending::HalfClose => {
                let _ = stream.shutdown(Shutdown::Write);
                half_closed.push(stream);
            }
        }
    }
    // A server that never closes a half-closed connection leaks it: the
    // fd count will show it, so a bounded wait here is enough.
    let deadline = Instant::now() + IO_TIMEOUT;
    for mut stream in half_closed {
        probe::wait_closed(&mut stream, deadline);
    }
    Ok(fds)
}

/// Closes `stream` with a reset (SO_LINGER 0).
pub fn reset(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
