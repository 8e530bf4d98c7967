//! Check 6, sticky and split packets: one request split at every byte
//! boundary (with a pause between the halves, so they arrive apart), one
//! sent a byte at a time, and many requests in one write. Every reply must
//! be right.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use super::probe::{self, IO_TIMEOUT};
use super::protocol;
use super::{Check, Ctx, Finding};

/// Payload bytes of the request split at every boundary.
pub const SPLIT_PAYLOAD: usize = 24;
/// Pause between the two halves (and between single bytes): long enough
/// for the first part to be read on its own.
const PAUSE: Duration = Duration::from_millis(3);
/// Requests in the one write.
pub const STICKY_REQUESTS: usize = 200;

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let check = Check::Split;
    let mut stream = match probe::connect(ctx.addr) {
        Ok(s) => s,
        Err(e) => return Finding::fail(check, format!("connect: {e}")),
    };
    let splits = match every_boundary(ctx, &mut stream) {
        Ok(n) => n,
        Err(e) => return Finding::fail(check, e),
    };
    if let Err(e) = byte_at_a_time(ctx, &mut stream) {
        return Finding::fail(check, format!("a request sent a byte at a time: {e}"));
    }
    match sticky(ctx, &mut stream) {
        Ok(bytes) => Finding::pass(
            check,
            format!(
                "a request split at each of its {splits} byte boundaries, one sent a byte at a \
                 time, {STICKY_REQUESTS} requests ({bytes} bytes) in one write: every reply right"
            ),
        ),
        Err(e) => Finding::fail(
            check,
            format!("{STICKY_REQUESTS} requests in one write: {e}"),
        ),
    }
}

/// Sends the request split at each boundary in turn; returns how many.
fn every_boundary(ctx: &Ctx, stream: &mut TcpStream) -> Result<usize, String> {
    let payload = protocol::payload(SPLIT_PAYLOAD, 11);
    let request = protocol::request(ctx.protocol, &payload);
    let expected = protocol::reply(ctx.protocol, &payload);
    for at in 1..request.len() {
        let sent = stream
            .write_all(&request[..at])
            .and_then(|_| {
                std::thread::sleep(PAUSE);
                stream.write_all(&request[at..])
            })
            .map_err(|e| format!("sending a request split at byte {at}: {e}"));
        let got = sent.and_then(|_| probe::read_exact_within(stream, expected.len(), IO_TIMEOUT));
        got.and_then(|g| probe::compare(&g, &expected))
            .map_err(|e| format!("a request split at byte {at} of {}: {e}", request.len()))?;
    }
    Ok(request.len() - 1)
}

fn byte_at_a_time(ctx: &Ctx, stream: &mut TcpStream) -> Result<(), String> {
    let payload = protocol::payload(SPLIT_PAYLOAD, 12);
    let request = protocol::request(ctx.protocol, &payload);
    for byte in &request {
        stream
            .write_all(std::slice::from_ref(byte))
            .map_err(|e| format!("sending: {e}"))?;
        std::thread::sleep(PAUSE);
    }
    let expected = protocol::reply(ctx.protocol, &payload);
    let got = probe::read_exact_within(stream, expected.len(), IO_TIMEOUT)?;
    probe::compare(&got, &expected)
}

/// Many requests of different sizes in one write; returns its size.
fn sticky(ctx: &Ctx, stream: &mut TcpStream) -> Result<usize, String> {
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..STICKY_REQUESTS {
        let payload = protocol::payload(1 + i % 50, i as u64);
        requests.extend_from_slice(&protocol::request(ctx.protocol, &payload));
        expected.extend_from_slice(&protocol::reply(ctx.protocol, &payload));
    }
    stream
        .write_all(&requests)
        .map_err(|e| format!("sending: {e}"))?;
    let got = probe::read_exact_within(stream, expected.len(), IO_TIMEOUT)?;
    probe::compare(&got, &expected)?;
    Ok(requests.len())
}
