//! Binary upgrade: a new process takes the listening sockets of the old
//! one over `--upgrade-socket` / `--upgrade-from` (SCM_RIGHTS) while
//! clients connect, disconnect and pipeline; the old one drains and exits
//! 0. A new process that fails leaves the old one serving.

use crate::util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::{Server, line_round_trip};

/// Idle connections open at each upgrade of the lone client's test.
const IDLE_AT_UPGRADE: usize = 1000;

/// Requests each long-lived client keeps in flight.
const WINDOW: usize = 16;

/// A socket path of this test's own.
fn socket_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "holdfast-it-upgrade-{}-{name}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// What the clients saw, summed over all of them.
#[derive(Default)]
struct Tally {
    connections: AtomicU64,
    requests: AtomicU64,
    replies: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    wrong: AtomicU64,
    /// Requests a closing connection had not answered, sent again on a
    /// new connection (the old process closes its connections after the
    /// requests that reached it; the later ones reached no process).
    resent: AtomicU64,
    /// Connections the old process closed (FIN) under a client.
    cut: AtomicU64,
}

impl Tally {
    fn count(&self, error: &io::Error) {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => self.refused.fetch_add(1, Ordering::Relaxed),
            _ => self.reset.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A connection, counted; None (and the error counted) if refused.
fn open(addr: SocketAddr, tally: &Tally) -> Option<TcpStream> {
    match TcpStream::connect_timeout(&addr, util::IO_TIMEOUT) {
        Ok(stream) => {
            stream.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
            stream.set_nodelay(true).unwrap();
            tally.connections.fetch_add(1, Ordering::Relaxed);
            Some(stream)
        }
        Err(e) => {
            tally.count(&e);
            None
        }
    }
}

/// Sends `batch` (lines) and reads back as many lines as came before the
/// server's FIN; returns how many were answered, each checked.
fn exchange(stream: &mut TcpStream, batch: &[String], tally: &Tally) -> io::Result<usize> {
    let wire: String = batch.iter().map(|r| format!("{r}\n")).collect();
    stream.write_all(wire.as_bytes())?;
    tally
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < wire.len() {
        match stream.read(&mut buf)? {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    let whole = got.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let answered = got[..whole].split(|&b| b == b'\n').count() - 1;
    if got[..whole] != wire.as_bytes()[..whole] {
        tally.wrong.fetch_add(1, Ordering::Relaxed);
    }
    tally.replies.fetch_add(answered as u64, Ordering::Relaxed);
    Ok(answered)
}

/// A client that connects, sends one request, checks its reply and
/// closes, every `pause`, until `stop`.
fn churn(addr: SocketAddr, id: usize, pause: Duration, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut pending = vec![format!("churn-{id}-{seq}")];
        seq += 1;
        while !pending.is_empty() {
            let Some(mut stream) = open(addr, &tally) else {
                break;
            };
            match exchange(&mut stream, &pending, &tally) {
                Ok(answered) => {
                    if answered < pending.len() {
                        tally.cut.fetch_add(1, Ordering::Relaxed);
                        tally
                            .resent
                            .fetch_add((pending.len() - answered) as u64, Ordering::Relaxed);
                    }
                    pending.drain(..answered);
                }
                Err(e) => {
                    tally.count(&e);
                    break;
                }
            }
        }
        thread::sleep(pause);
    }
}

/// A long-lived client that keeps `WINDOW` requests in flight; when the
/// server closes under it, it sends what was not answered again on a new
/// connection.
fn pipeline(addr: SocketAddr, id: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut seq = 0u64;
    let Some(mut stream) = open(addr, &tally) else {
        return;
    };
    let mut pending: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) || !pending.is_empty() {
        while pending.len() < WINDOW && !stop.load(Ordering::Relaxed) {
            pending.push(format!(
                "pipe-{id}-{seq}-{}",
                "x".repeat((seq % 64) as usize)
            ));
            seq += 1;
        }
        match exchange(&mut stream, &pending, &tally) {
            Ok(answered) => {
                pending.drain(..answered);
                if pending.is_empty() {
                    continue;
                }
                tally.cut.fetch_add(1, Ordering::Relaxed);
                tally
                    .resent
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                match open(addr, &tally) {
                    Some(fresh) => stream = fresh,
                    None => return,
                }
            }
            Err(e) => {
                tally.count(&e);
                return;
            }
        }
    }
}

/// Starts holdfast with the test's settings plus `args`.
fn start(socket: &std::path::Path, args: &[&str]) -> Server {
    let mut all = vec![
        "--protocol",
        "line",
        "--threads",
        "2",
        "--shutdown-grace",
        "5s",
        "--upgrade-socket",
        socket.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// The hand-over time the new process logged, in ms (once the old one has
/// answered; the log line may come after the new process's start).
fn hand_over_ms(server: &Server) -> u64 {
    util::wait_until(Duration::from_secs(5), || {
        server.stderr_text().contains("hand-over took ")
    });
    let text = server.stderr_text();
    let at = text
        .find("hand-over took ")
        .unwrap_or_else(|| panic!("no hand-over line:\n{text}"));
    let rest = &text[at + "hand-over took ".len()..];
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn upgrade_under_churn_and_pipelines_loses_nothing() {
    let socket = socket_path("load");
    let mut old = start(&socket, &[]);
    let addr = old.addr;
    assert_eq!(old.metric("holdfast_generation", &[]), 1.0);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for id in 0..4 {
        let (halt, seen) = (stop.clone(), tally.clone());
        let pause = Duration::from_millis(2);
        clients.push(thread::spawn(move || churn(addr, id, pause, halt, seen)));
        let (halt, seen) = (stop.clone(), tally.clone());
        clients.push(thread::spawn(move || pipeline(addr, id, halt, seen)));
    }
    thread::sleep(Duration::from_millis(700));
    let before = tally.replies.load(Ordering::Relaxed);
    assert!(
        before > 100,
        "the load runs before the upgrade: {before} replies"
    );

    let began = Instant::now();
    let new = start(&socket, &["--upgrade-from", socket.to_str().unwrap()]);
    let started = began.elapsed();
    assert_eq!(new.addr, addr, "the new process serves the same address");
    assert_eq!(new.metric("holdfast_generation", &[]), 2.0);
    // The grace is 5 s; the new process's start is the rest.
    let status = old
        .wait_exit(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("the old process still runs 6 s after the upgrade"));
    let drained = began.elapsed();
    assert!(status.success(), "the old process exits 0: {status}");

    thread::sleep(Duration::from_millis(700));
    let at_stop = tally.replies.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let t = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "upgrade under load: {} connections, {} requests sent ({} resent after a close), \
         {} replies, {} refused, {} reset, {} wrong, {} connections closed under a client; \
         new process listening {:?} after its start, hand-over {} ms (connect to drain), \
         old process gone {:?} after the new one started",
        t(&tally.connections),
        t(&tally.requests),
        t(&tally.resent),
        t(&tally.replies),
        t(&tally.refused),
        t(&tally.reset),
        t(&tally.wrong),
        t(&tally.cut),
        started,
        hand_over_ms(&new),
        drained,
    );
    assert_eq!(t(&tally.refused), 0, "connections refused");
    assert_eq!(t(&tally.reset), 0, "connections reset");
    assert_eq!(t(&tally.wrong), 0, "wrong replies");
    assert_eq!(
        t(&tally.requests) - t(&tally.resent),
        t(&tally.replies),
        "every request answered, once"
    );
    assert!(at_stop > before + 100, "the new process served the load");
    let served = new.metric("holdfast_connections_accepted_total", &[]);
    assert!(
        served > 10.0,
        "the new process accepted {served} connections"
    );
    let _ = std::fs::remove_file(&socket);
}

/// One client alone, connecting again as soon as it has its reply, through
/// a row of upgrades: no other client's connection can wake a process for
/// one left in the listener's queue. On io_uring the kernel wakes one
/// accept per connection, so one the old process's cancelled accept was
/// woken for must still be taken (`shard/turn.rs`, `sweep_queue`).
#[test]
fn a_lone_client_is_served_through_a_row_of_upgrades() {
    let socket = socket_path("row");
    let mut old = start(&socket, &[]);
    let addr = old.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let client = {
        let (halt, seen) = (stop.clone(), tally.clone());
        thread::spawn(move || churn(addr, 0, Duration::ZERO, halt, seen))
    };
    let from = socket.to_str().unwrap();
    for round in 0..4 {
        // Idle connections make the old process's drain begin slowly: the
        // longer its accept is armed after the stop, the likelier a
        // connection's wake-up goes to it and is lost with its cancel.
        let idle: Vec<TcpStream> = (0..IDLE_AT_UPGRADE).map(|_| old.connect()).collect();
        assert!(
            util::wait_until(Duration::from_secs(5), || old
                .metric("holdfast_connections_open", &[])
                >= IDLE_AT_UPGRADE as f64),
            "the idle connections are open"
        );
        let new = start(&socket, &["--upgrade-from", from]);
        assert_eq!(new.metric("holdfast_generation", &[]), f64::from(round + 2));
        // Closed once the old process drains, so that it need not wait
        // for their ends (its lingering close).
        assert!(
            util::wait_until(Duration::from_secs(5), || new
                .stderr_text()
                .contains("hand-over took")),
            "upgrade {round}: the hand-over completes"
        );
        drop(idle);
        let left = Instant::now();
        let status = old
            .wait_exit(Duration::from_secs(6))
            .unwrap_or_else(|| panic!("upgrade {round}: the old process still runs after 6 s"));
        assert!(
            status.success(),
            "upgrade {round}: the old one exits 0: {status}"
        );
        // Its last clients have closed: nothing is left to drain (a
        // linger ends at the peer's FIN, not at its 2 s bound).
        assert!(
            left.elapsed() < Duration::from_millis(1000),
            "upgrade {round}: the old process exited {:?} after its last clients left",
            left.elapsed()
        );
        old = new;
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let t = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "4 upgrades: {} connections, {} replies, {} closed under the client, {} refused, \
         {} reset or unanswered for 5 s",
        t(&tally.connections),
        t(&tally.replies),
        t(&tally.cut),
        t(&tally.refused),
        t(&tally.reset),
    );
    assert_eq!(t(&tally.refused), 0, "connections refused");
    assert_eq!(t(&tally.reset), 0, "connections reset or never answered");
    assert_eq!(t(&tally.wrong), 0, "wrong replies");
    assert_eq!(
        t(&tally.requests) - t(&tally.resent),
        t(&tally.replies),
        "every request answered, once"
    );
    assert!(t(&tally.replies) > 100, "the client was served");
    let _ = std::fs::remove_file(&socket);
}

#[test]
fn a_new_process_that_fails_leaves_the_old_one_serving() {
    let socket = socket_path("fail");
    let old = start(&socket, &[]);
    let mut client = old.connect();
    line_round_trip(&mut client, b"before");
    let from = socket.to_str().unwrap();
    // A bad flag: it never reaches the old process.
    let (status, _, stderr) = util::run_to_exit(
        &["serve", "--upgrade-from", from, "--threads", "nope"],
        Duration::from_secs(10),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    // One that takes the listeners, then cannot start: two listeners for
    // three shards.
    let (status, _, stderr) = util::run_to_exit(
        &[
            "serve",
            "--protocol",
            "line",
            "--admin",
            "off",
            "--threads",
            "3",
            "--upgrade-from",
            from,
        ],
        Duration::from_secs(10),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(stderr.contains("--threads 3"), "names the flag: {stderr}");
    assert!(
        util::wait_until(Duration::from_secs(2), || old
            .stderr_text()
            .contains("keeps serving")),
        "the old process says it keeps serving:\n{}",
        old.stderr_text()
    );
    line_round_trip(&mut client, b"after, same connection");
    let mut fresh = old.connect();
    line_round_trip(&mut fresh, b"after, new connection");
    assert_eq!(old.metric("holdfast_ready", &[]), 1.0, "still accepting");
    // The upgrade's own descriptors (the Unix socket served, the
    // duplicates offered) are accounted for.
    assert_eq!(old.metric("holdfast_fd_unaccounted", &[]), 0.0, "old");
    // And a later upgrade still works.
    let new = start(&socket, &["--upgrade-from", from]);
    // Once the old process has stopped accepting (one it accepted just
    // before its drain would be served too: a drain waits up to a second
    // after the accept for a silent connection's first request).
    hand_over_ms(&new);
    let mut third = new.connect();
    line_round_trip(&mut third, b"on the new one");
    assert_eq!(new.metric("holdfast_generation", &[]), 2.0);
    // And the new one's (the Unix socket the listeners came over, closed;
    // the one it serves).
    assert_eq!(new.metric("holdfast_fd_unaccounted", &[]), 0.0, "new");
    let _ = std::fs::remove_file(&socket);
}
