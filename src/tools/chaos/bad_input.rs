//! Check 3, crash on bad input: noise, truncated and fuzzed requests and
//! the protocol's malformed headers, each on its own connection, while a
//! witness connection opened before them must keep being answered.

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use super::probe::{self, IO_TIMEOUT, POLL};
use super::protocol;
use super::{Check, Ctx, Finding};

/// How long a process whose sockets were reset may take to be gone.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let check = Check::BadInput;
    let mut witness = match probe::connect(ctx.addr) {
        Ok(s) => s,
        Err(e) => return Finding::fail(check, format!("connect: {e}")),
    };
    let cases = protocol::bad_inputs(ctx.protocol);
    let mut slowest = Duration::ZERO;
    let mut open = Vec::new();
    for (i, (name, bytes)) in cases.iter().enumerate() {
        if let Ok(mut stream) = probe::connect(ctx.addr) {
            let _ = stream.write_all(bytes);
            // Half the cases end with our FIN, half stay open: a parser
            // may fail at the end of the stream or while waiting for more.
            if i % 2 == 0 {
                let _ = stream.shutdown(Shutdown::Write);
            }
            open.push(stream);
        }
        let payload = protocol::payload(probe::PROBE_PAYLOAD, i as u64);
        match probe::round_trip(&mut witness, ctx.protocol, &payload) {
            Ok(latency) => slowest = slowest.max(latency),
            Err(e) => return died(ctx, i + 1, cases.len(), name, &e),
        }
    }
    // Let the server read every bad input to its end before the last look:
    // a crash may come after the witness's last round trip.
    let deadline = Instant::now() + IO_TIMEOUT;
    for mut stream in open {
        let _ = stream.shutdown(Shutdown::Write);
        probe::wait_closed(&mut stream, deadline);
    }
    match probe::serving(ctx) {
        Ok(_) => Finding::pass(
            check,
            format!(
                "{} bad inputs (noise, truncated, {} fuzzed, malformed headers) on their own \
                 connections: a witness connection answered all {} round trips (slowest {}), \
                 a new connection served",
                cases.len(),
                cases.iter().filter(|c| c.0.starts_with("fuzzed")).count(),
                cases.len(),
                probe::ms(slowest)
            ),
        ),
        Err(e) => Finding::fail(
            check,
            format!(
                "after {} bad inputs a new connection: {e}{}",
                cases.len(),
                exit_note(ctx)
            ),
        ),
    }
}

/// The witness failed after bad input number `n` (`name`).
fn died(ctx: &Ctx, n: usize, total: usize, name: &str, error: &str) -> Finding {
    let fresh = match probe::serving(ctx) {
        Ok(_) => "a new connection was served".to_string(),
        Err(e) => format!("a new connection: {e}"),
    };
    Finding::fail(
        Check::BadInput,
        format!(
            "after bad input {n}/{total} ({name}) on another connection, the witness: {error}; \
             {fresh}{}",
            exit_note(ctx)
        ),
    )
}

/// "; process N has exited" when `--pid` shows it has (or does within
/// [`EXIT_WAIT`]: a dying process closes its sockets before it is gone).
fn exit_note(ctx: &Ctx) -> String {
    let Some(proc) = &ctx.proc else {
        return String::new();
    };
    let start = Instant::now();
    while proc.alive() {
        if start.elapsed() > EXIT_WAIT {
            return String::new();
        }
        std::thread::sleep(POLL);
    }
    format!("; process {} has exited", proc.pid)
}
