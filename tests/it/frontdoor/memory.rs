//! The process memory budget (`--max-buffer-memory`): many busy connections
//! against a small budget keep the server's memory under it (plus a stated
//! overhead) and every request is still answered; the same load without
//! the budget passes that bound (so the bound measures something).
//! `--strict-memory` refuses settings whose worst case passes the cgroup's
//! memory limit; `--shed-buffer-memory` sheds new connections on it.

use crate::util;

use std::io::{Read, Write};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use super::REJECTED;
use util::{Server, run_command_to_exit};

const CLIENTS: usize = 200;
/// Each client's frame: most of a 64 KiB ring.
const PAYLOAD: usize = 60 << 10;
/// What a client sends before it holds: all of its frame but the last KiB,
/// which its connection's input ring holds (a frame begun) until the rest
/// comes.
const FIRST: usize = 4 + PAYLOAD - 1024;
/// 16 units of two 64 KiB rings, for 200 connections that each would hold
/// one ring (and a second for the reply).
const BUDGET: u64 = 2 << 20;
/// Resident memory the server grows by besides the rings: allocator slack,
/// the connection table, the metrics, a scrape.
const OVERHEAD: u64 = 3 << 20;
/// How long the frames begun may take to reach the server.
const HOLD: Duration = Duration::from_secs(10);

/// The driver's settings, and the memory the driver has besides (io_uring's
/// provided buffers, touched as receives fill them).
fn driver_args() -> (Vec<&'static str>, u64) {
    if cfg!(feature = "uring") {
        let args = vec!["--uring-buffers", "256", "--uring-buffer-size", "4KiB"];
        (args, 2 * 256 * 4096)
    } else {
        (Vec::new(), 0)
    }
}

/// One client: sends all but the end of a frame, holds until `go` (every
/// client has sent as much), sends the rest and says whether the echo came
/// back whole.
fn client(server: &Server, index: usize, go: Arc<Barrier>) -> thread::JoinHandle<bool> {
    let mut stream = server.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7 + index) as u8).collect();
    let wire = util::frame(&payload);
    stream.write_all(&wire[..FIRST]).unwrap();
    thread::spawn(move || {
        go.wait();
        if stream.write_all(&wire[FIRST..]).is_err() {
            return false;
        }
        let mut echoed = vec![0u8; wire.len()];
        stream.read_exact(&mut echoed).is_ok() && echoed == wire
    })
}

/// Whether every client's frame begun is in the server: read into a ring,
/// or its connection waiting for buffer memory.
fn all_in(server: &Server) -> bool {
    let scrape = server.scrape();
    let read = util::metric(&scrape, "holdfast_bytes_read_total", &[]) as usize;
    let waiting = util::metric(&scrape, "holdfast_buffer_memory_waiting", &[]) as usize;
    read / FIRST + waiting >= CLIENTS
}

/// Runs the load against a server started with `budget`: returns it, how
/// much its resident memory grew at its peak, and how many clients were
/// answered in full.
fn busy_clients(budget: &str) -> (Server, u64, usize) {
    let (mut args, _) = driver_args();
    args.extend([
        "--protocol",
        "frame",
        "--threads",
        "2",
        "--buffer",
        "64KiB",
        "--max-buffer-memory",
        budget,
    ]);
    let server = Server::start(&args);
    let baseline = server.rss_bytes();
    let go = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| client(&server, index, go.clone()))
        .collect();
    let held = util::wait_until(HOLD, || all_in(&server));
    assert!(held, "the frames begun did not all reach the server");
    go.wait();
    let answered = clients
        .into_iter()
        .map(|client| client.join().unwrap())
        .filter(|&whole| whole)
        .count();
    let growth = server.peak_rss_bytes().saturating_sub(baseline);
    (server, growth, answered)
}

#[test]
fn busy_connections_wait_for_the_budget_and_all_are_answered() {
    let (_, beyond) = driver_args();
    let bound = BUDGET + OVERHEAD + beyond;
    let (server, growth, answered) = busy_clients("2MiB");
    let waits = server.metric("holdfast_buffer_memory_waits_total", &[]);
    let waited = server.metric("holdfast_buffer_memory_wait_seconds_total", &[]);
    eprintln!(
        "budget 2 MiB: RSS +{} KiB at its peak (bound {} KiB); {waits} waits, {waited} s",
        growth >> 10,
        bound >> 10
    );
    assert_eq!(answered, CLIENTS, "clients answered in full");
    assert!(growth < bound, "RSS grew by {growth} bytes; bound {bound}");
    assert!(waits >= 1.0, "the budget was never reached");
    assert!(waited > 0.0, "no time waited was counted");
    let limit = server.metric("holdfast_buffer_memory_limit_bytes", &[]);
    assert_eq!(limit, BUDGET as f64);
    assert_eq!(server.metric("holdfast_buffer_memory_waiting", &[]), 0.0);
    assert_eq!(
        server.metric("holdfast_buffer_memory_overdraws_total", &[]),
        0.0,
        "no ring was taken past the budget"
    );
    let taken = server.metric("holdfast_buffer_memory_bytes", &[]);
    assert!(taken <= limit, "{taken} bytes taken of {limit}");
    drop(server);

    // The same load with a budget it never reaches: every connection holds
    // its input ring at once, and the bound above does not hold.
    let (server, growth, answered) = busy_clients("1GiB");
    eprintln!("budget 1 GiB: RSS +{} KiB at its peak", growth >> 10);
    assert_eq!(answered, CLIENTS);
    assert_eq!(
        server.metric("holdfast_buffer_memory_waits_total", &[]),
        0.0
    );
    assert!(
        growth > bound,
        "without the budget RSS grew by only {growth} bytes: the load does not test it"
    );
    assert!(growth > (CLIENTS * PAYLOAD / 2) as u64, "{growth}");
}

/// A cgroup tree whose `memory.max` says `limit`, where this process's
/// cgroup is (`HOLDFAST_CGROUP_ROOT` stands for /sys/fs/cgroup).
fn fake_cgroup(limit: &str) -> std::path::PathBuf {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let root = std::env::temp_dir().join(format!("holdfast-cgroup-{}", std::process::id()));
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        let (dir, file) = match controllers {
            "" => (root.join(path.trim_start_matches('/')), "memory.max"),
            c if c.split(',').any(|c| c == "memory") => (
                root.join("memory").join(path.trim_start_matches('/')),
                "memory.limit_in_bytes",
            ),
            _ => continue,
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), limit).unwrap();
    }
    root
}

fn serve(root: &std::path::Path, extra: &[&str]) -> (Option<std::process::ExitStatus>, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "off"])
        .args(["--threads", "1", "--max-conns", "1000", "--buffer", "64KiB"])
        .args(extra)
        .env("HOLDFAST_CGROUP_ROOT", root);
    let (status, _, stderr) = run_command_to_exit(command, Duration::from_secs(2));
    (status, stderr)
}

#[test]
fn the_worst_case_past_the_cgroup_limit_warns_or_with_strict_memory_refuses() {
    // 1000 connections × two 64 KiB rings: 125 MiB at worst, in a 64 MiB
    // cgroup.
    let root = fake_cgroup("67108864");
    let (status, stderr) = serve(&root, &["--max-buffer-memory", "1GiB", "--strict-memory"]);
    let status = status.expect("refused at once");
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("--max-buffer-memory") && lines[0].contains("64MiB"));
    // Without --strict-memory: a warning, and it serves.
    let (status, stderr) = serve(&root, &["--max-buffer-memory", "1GiB"]);
    assert!(status.is_none(), "exited: {stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("exceeds the cgroup"),
        "{stderr}"
    );
    // Within the limit (the default: half of it), no warning.
    let (status, stderr) = serve(&root, &["--strict-memory"]);
    assert!(status.is_none(), "exited: {stderr}");
    assert!(
        stderr.contains("buffer memory budget 32MiB (half of the cgroup's memory.max, 64MiB)"),
        "{stderr}"
    );
    assert!(!stderr.contains("WARN"), "{stderr}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn new_connections_are_shed_while_the_budget_is_mostly_taken() {
    // 16 units of two 4 KiB rings. A client with a frame begun holds one:
    // 10 of them take 10 units and the shard's spare, past 50 %.
    let server = Server::start(&[
        "--protocol",
        "frame",
        "--buffer",
        "4KiB",
        "--max-buffer-memory",
        "128KiB",
        "--shed-buffer-memory",
        "50",
    ]);
    let begun = &util::frame(&[7u8; 3000])[..2000];
    let busy: Vec<_> = (0..10)
        .map(|_| {
            let mut client = server.connect();
            client.write_all(begun).unwrap();
            client
        })
        .collect();
    let full = util::wait_until(Duration::from_secs(5), || {
        server.metric("holdfast_buffer_memory_bytes", &[]) > 64.0 * 1024.0
    });
    assert!(full, "the busy clients took no budget");
    // Shedding may begin before the last busy clients are accepted (the
    // budget can pass 50 % with fewer than ten): wait until each is either
    // open or shed, then count from there.
    let shed_count = || server.metric(REJECTED, &[("reason", "shed_buffer_memory")]);
    let judged = util::wait_until(Duration::from_secs(5), || {
        server.metric("holdfast_connections_open", &[]) + shed_count() == 10.0
    });
    assert!(judged, "the busy clients were neither served nor shed");
    let before = shed_count();
    let shed = server.connect();
    assert!(
        util::wait_until(Duration::from_secs(2), || super::refused(&shed)),
        "served while shedding"
    );
    assert_eq!(shed_count(), before + 1.0);
    // The busy clients go: the budget comes back, and new connections are
    // served again.
    drop(busy);
    let back = util::wait_until(Duration::from_secs(5), || {
        server.metric("holdfast_buffer_memory_bytes", &[]) <= 32.0 * 1024.0
    });
    assert!(back, "the budget did not come back");
    let mut served = server.connect();
    let wire = util::frame(b"back");
    served.write_all(&wire).unwrap();
    let mut echoed = vec![0u8; wire.len()];
    served.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, wire);
    assert_eq!(server.metric("holdfast_shedding", &[]), 0.0);
}
