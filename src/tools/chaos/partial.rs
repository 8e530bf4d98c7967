//! Check 7, partial reads and writes: large requests and replies through a
//! tiny receive buffer, read a few bytes at a time. Every byte must come
//! back intact and in order.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use super::probe;
use super::protocol::{self, Rng};
use super::{Check, Ctx, Finding};

/// Payload bytes per request: large next to the socket buffers, within
/// the 64 KiB frames servers commonly allow.
pub const PARTIAL_PAYLOAD: usize = 48 << 10;
/// Requests sent.
pub const PARTIAL_REQUESTS: usize = 8;
/// Our receive buffer.
const RCVBUF: usize = 4 << 10;
/// The largest single read.
const READ_MAX: usize = 64;
/// The longest the whole exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let check = Check::Partial;
    let mut stream = match probe::connect_sized(ctx.addr, Some(RCVBUF), None) {
        Ok(s) => s,
        Err(e) => return Finding::fail(check, format!("connect: {e}")),
    };
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..PARTIAL_REQUESTS {
        let payload = protocol::payload(PARTIAL_PAYLOAD, 100 + i as u64);
        requests.extend_from_slice(&protocol::request(ctx.protocol, &payload));
        expected.extend_from_slice(&protocol::reply(ctx.protocol, &payload));
    }
    let mut writer = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return Finding::fail(check, format!("socket: {e}")),
    };
    let _ = writer.set_write_timeout(Some(EXCHANGE_TIMEOUT));
    let sending = std::thread::spawn(move || writer.write_all(&requests));
    let outcome = read_slowly(&mut stream, &expected);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sending.join();
    match outcome {
        Ok(reads) => Finding::pass(
            check,
            format!(
                "{PARTIAL_REQUESTS} replies of {} read 1-{READ_MAX} bytes at a time through a \
                 {} receive buffer ({reads} reads): every byte right",
                probe::bytes(PARTIAL_PAYLOAD as u64),
                probe::bytes(RCVBUF as u64)
            ),
        ),
        Err(e) => Finding::fail(check, e),
    }
}

/// Reads `expected.len()` bytes in reads of 1 to [`READ_MAX`] bytes and
/// compares them; returns the number of reads.
fn read_slowly(stream: &mut std::net::TcpStream, expected: &[u8]) -> Result<usize, String> {
    let mut rng = Rng::new(7);
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    let mut got = Vec::with_capacity(expected.len());
    let mut buf = [0u8; READ_MAX];
    let mut reads = 0;
    while got.len() < expected.len() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {} reply bytes within {EXCHANGE_TIMEOUT:?}",
                got.len(),
                expected.len()
            ));
        }
        let want = (1 + rng.below(READ_MAX)).min(expected.len() - got.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(format!(
                    "closed by the server after {} of {} reply bytes",
                    got.len(),
                    expected.len()
                ));
            }
            Ok(n) => {
                let at = got.len();
                got.extend_from_slice(&buf[..n]);
                reads += 1;
                if got[at..] != expected[at..at + n] {
                    return probe::compare(&got, &expected[..got.len()]).map(|_| reads);
                }
            }
            Err(e) if probe::is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "{e} after {} of {} reply bytes",
                    got.len(),
                    expected.len()
                ));
            }
        }
    }
    Ok(reads)
}
