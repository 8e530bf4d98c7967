//! Check 2, stuck tasks and idle connections: connections that send
//! nothing, and connections that stop in the middle of a frame
//! (slowloris). Does the server ever close them, and when?

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::probe;
use super::protocol;
use super::{Check, Ctx, Finding};

/// Connections that never send a byte.
pub const IDLE_CONNS: usize = 4;
/// Connections that send half a request and stop.
pub const MID_FRAME_CONNS: usize = 4;

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let half = protocol::request(ctx.protocol, &protocol::payload(64, 3));
    let mut idle = Vec::new();
    let mut stalled = Vec::new();
    for _ in 0..IDLE_CONNS.min(ctx.max_conns) {
        match probe::connect(ctx.addr) {
            Ok(s) => idle.push(s),
            Err(e) => return Finding::fail(Check::Idle, format!("connect: {e}")),
        }
    }
    for _ in 0..MID_FRAME_CONNS.min(ctx.max_conns) {
        match probe::connect(ctx.addr) {
            Ok(mut s) => {
                let _ = s.write_all(&half[..half.len() / 2]);
                stalled.push(s);
            }
            Err(e) => return Finding::fail(Check::Idle, format!("connect: {e}")),
        }
    }
    let start = Instant::now();
    let deadline = start + ctx.wait;
    let idle_closed = closed_times(&mut idle, start, deadline);
    let stalled_closed = closed_times(&mut stalled, start, deadline);
    let evidence = format!(
        "idle: {}; mid-frame: {}",
        describe(&idle_closed, idle.len(), ctx.wait),
        describe(&stalled_closed, stalled.len(), ctx.wait)
    );
    if idle_closed.len() == idle.len() && stalled_closed.len() == stalled.len() {
        Finding::pass(Check::Idle, evidence)
    } else {
        Finding::fail(Check::Idle, evidence)
    }
}

/// When each stream was seen closed by the server (since `start`).
fn closed_times(streams: &mut [TcpStream], start: Instant, deadline: Instant) -> Vec<Duration> {
    streams
        .iter_mut()
        .filter_map(|s| probe::wait_closed(s, deadline).map(|_| start.elapsed()))
        .collect()
}

fn describe(closed: &[Duration], of: usize, wait: Duration) -> String {
    let Some(last) = closed.iter().max() else {
        return format!("0/{of} closed within {:.1} s", wait.as_secs_f64());
    };
    let first = closed.iter().min().unwrap_or(last);
    format!(
        "{}/{of} closed after {:.2}-{:.2} s (waited up to {:.1} s)",
        closed.len(),
        first.as_secs_f64(),
        last.as_secs_f64(),
        wait.as_secs_f64()
    )
}
