//! Check 9 (with `--pid` and `--allow-signal`), graceful shutdown under
//! load: clients keep one request in flight each; SIGTERM is sent once
//! every request in flight has been written, and no client writes after
//! it. Every one of those requests must be answered, then the process must
//! exit.

use std::net::TcpStream;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::probe::{self, POLL};
use super::procfs::Proc;
use super::protocol;
use super::{Check, Ctx, Finding};
use crate::engine::codec::Protocol;

/// Clients loading the server when the signal comes.
pub const LOAD_CONNS: usize = 4;
/// How long they load it before the signal.
const LOAD_BEFORE: Duration = Duration::from_millis(300);

/// One client's tally.
#[derive(Default)]
struct Tally {
    answered: usize,
    lost: Option<String>,
}

/// Runs the check.
pub fn run(ctx: &Ctx) -> Finding {
    let check = Check::Shutdown;
    let Some(proc) = ctx.proc.as_ref().filter(|_| ctx.allow_signal) else {
        return Finding::unknown(
            check,
            "not run: needs --pid and --allow-signal (the server exits)",
        );
    };
    // Writers hold the read side while they write; the signal is sent
    // under the write side, so it comes after every write begun before it.
    let signalled = Arc::new(RwLock::new(false));
    let clients = match start_load(ctx, &signalled) {
        Ok(clients) => clients,
        Err(e) => return Finding::fail(check, format!("connect: {e}")),
    };
    std::thread::sleep(LOAD_BEFORE);
    if let Err(e) = terminate(proc, &signalled) {
        return Finding::unknown(check, format!("sending SIGTERM to {}: {e}", proc.pid));
    }
    let signalled_at = Instant::now();
    let tallies: Vec<Tally> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or_default())
        .collect();
    let exited = wait_exit(proc, signalled_at, ctx.wait);
    let answered: usize = tallies.iter().map(|t| t.answered).sum();
    let lost: Vec<&String> = tallies.iter().filter_map(|t| t.lost.as_ref()).collect();
    let exit_text = match exited {
        Some(d) => format!("exited {} after SIGTERM", probe::ms(d)),
        None => format!(
            "still running {:.1} s after SIGTERM",
            ctx.wait.as_secs_f64()
        ),
    };
    let evidence = format!(
        "{answered} requests answered on {} connections, {} lost{}; {exit_text}",
        tallies.len(),
        lost.len(),
        lost.first()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
    if lost.is_empty() && exited.is_some() {
        Finding::pass(check, evidence)
    } else {
        Finding::fail(check, evidence)
    }
}

/// Starts [`LOAD_CONNS`] clients, each on its own thread.
fn start_load(ctx: &Ctx, signalled: &Arc<RwLock<bool>>) -> std::io::Result<Vec<JoinHandle<Tally>>> {
    let mut clients = Vec::new();
    for i in 0..LOAD_CONNS.min(ctx.max_conns) {
        let stream = probe::connect(ctx.addr)?;
        let flag = Arc::clone(signalled);
        let protocol = ctx.protocol;
        clients.push(std::thread::spawn(move || load(stream, protocol, &flag, i)));
    }
    Ok(clients)
}

/// Sets the flag and sends SIGTERM while no client is writing.
fn terminate(proc: &Proc, signalled: &RwLock<bool>) -> nix::Result<()> {
    let mut flag = signalled.write().unwrap_or_else(|e| e.into_inner());
    *flag = true;
    kill(Pid::from_raw(proc.pid as i32), Signal::SIGTERM)
}

/// How long after `since` the process exited, if within `wait`.
fn wait_exit(proc: &Proc, since: Instant, wait: Duration) -> Option<Duration> {
    while since.elapsed() <= wait {
        if !proc.alive() {
            return Some(since.elapsed());
        }
        std::thread::sleep(POLL);
    }
    None
}

/// Round trips until the signal; the request in flight when it came must
/// still be answered.
fn load(mut stream: TcpStream, protocol: Protocol, flag: &RwLock<bool>, seed: usize) -> Tally {
    let mut tally = Tally::default();
    let mut n = 0u64;
    loop {
        let payload = protocol::payload(probe::PROBE_PAYLOAD, seed as u64 * 1_000_000 + n);
        {
            let signalled = flag.read().unwrap_or_else(|e| e.into_inner());
            if *signalled {
                return tally;
            }
            let request = protocol::request(protocol, &payload);
            if let Err(e) = std::io::Write::write_all(&mut stream, &request) {
                tally.lost = Some(format!("sending: {e}"));
                return tally;
            }
        }
        let expected = protocol::reply(protocol, &payload);
        match probe::read_exact_within(&mut stream, expected.len(), probe::IO_TIMEOUT)
            .and_then(|got| probe::compare(&got, &expected))
        {
            Ok(()) => tally.answered += 1,
            Err(e) => {
                tally.lost = Some(e);
                return tally;
            }
        }
        n += 1;
    }
}
