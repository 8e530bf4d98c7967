//! File descriptor exhaustion: more clients come than descriptors fit. The
//! server must shed the excess (counted `fd_limit`), never spin on a
//! listener it cannot accept from, and serve again once descriptors free
//! up. On epoll RLIMIT_NOFILE is lowered under the running server (as an
//! operator or a container runtime might); io_uring's accept takes the
//! limit in force when it was posted, so there the server starts with a
//! low limit and a table mostly filled by inherited descriptors.

use crate::util;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use util::{Closed, Server, echo_round_trip, poll_state};

const CLIENTS: usize = 40;
/// Descriptors left free for the server above what it holds idle.
const HEADROOM: u64 = 10;

/// Sets the soft and hard RLIMIT_NOFILE of process `pid`.
fn set_fd_limit(pid: i32, limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: `rlimit` is a valid, initialised struct that outlives the
    // call; a null old-limit pointer is allowed and means "don't report".
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &rlimit, std::ptr::null_mut()) };
    assert_eq!(
        rc,
        0,
        "prlimit(RLIMIT_NOFILE): {}",
        std::io::Error::last_os_error()
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Served,
    Rejected,
}

#[test]
fn fd_exhaustion_sheds_without_spinning_and_recovers() {
    // This test lowers RLIMIT_NOFILE under a running server. io_uring's
    // accept reads the limit when it is posted, so a multishot accept posted
    // at start-up never sees the lower one: this scenario is epoll's. The
    // uring driver's EMFILE handling is tested in tests/it/uring.rs with a
    // limit that is low from the start.
    let server = Server::start(&["--protocol", "echo", "--backend", "epoll"]);
    let baseline = server.fd_baseline();
    // The limit bounds descriptor numbers, not their count, and the server
    // may hold inherited descriptors with high numbers (a jobserver pipe):
    // pick the limit that leaves exactly HEADROOM free numbers below it.
    let held = server.fd_numbers();
    let limit = (0..)
        .find(|&limit| limit - held.iter().filter(|&&fd| fd < limit).count() as u64 == HEADROOM)
        .unwrap();
    set_fd_limit(server.pid(), limit);
    exhaust_and_recover(&server, baseline, HEADROOM);
}

/// Descriptors inherited by the io_uring server, so that its table is
/// nearly full while `--max-conns` (derived from the limit with a margin
/// of 36 descriptors) still allows more connections than fit.
#[cfg(feature = "uring")]
const INHERITED: u64 = 40;

#[cfg(feature = "uring")]
#[test]
fn fd_exhaustion_on_io_uring_sheds_without_spinning_and_recovers() {
    // The shell sets the limit, opens INHERITED descriptors that the
    // server inherits, then becomes the server.
    let limit = 70;
    let script = format!(
        "ulimit -n {limit} && for i in $(seq {INHERITED}); do exec {{fd}}</dev/null; done && \
         exec \"$@\""
    );
    let server = Server::start_under(
        &["bash", "-c", &script, "holdfast"],
        &["--protocol", "echo", "--backend", "uring"],
    );
    assert!(
        server.metric("holdfast_backend_info", &[("backend", "uring")]) == 1.0,
        "{}",
        server.stderr_text()
    );
    let baseline = server.fd_baseline();
    let held = server.fd_numbers();
    let headroom = limit - held.iter().filter(|&&fd| fd < limit).count() as u64;
    assert!(
        (5..=20).contains(&headroom),
        "{headroom} descriptors free below the limit {limit}: {held:?}"
    );
    exhaust_and_recover(&server, baseline, headroom);
}

/// The scenario, once the server has `headroom` descriptors free.
fn exhaust_and_recover(server: &Server, baseline: usize, headroom: u64) {
    // Every client sends its request at once; the ones the server cannot
    // take wait in the listen backlog.
    let request = |i: usize| format!("req {i:03}").into_bytes();
    let mut clients: Vec<Option<std::net::TcpStream>> = (0..CLIENTS)
        .map(|i| {
            let mut client = server.connect();
            client.write_all(&request(i)).unwrap();
            Some(client)
        })
        .collect();

    // While the excess waits, the server must not busy-loop.
    util::assert_not_spinning(server, "out of descriptors");

    // A snapshot: some are served, some past the limit were already shed,
    // the rest wait.
    let mut fates: Vec<Option<Fate>> = vec![None; CLIENTS];
    for (i, client) in clients.iter().enumerate() {
        match poll_state(client.as_ref().unwrap()) {
            Ok(n) if n >= request(i).len() => fates[i] = Some(Fate::Served),
            Ok(_) => {}
            Err(Closed::Eof | Closed::Reset) => fates[i] = Some(Fate::Rejected),
        }
    }
    let served_at_once = fates.iter().filter(|f| **f == Some(Fate::Served)).count();
    let shed_at_once = fates.iter().filter(|f| **f == Some(Fate::Rejected)).count();
    assert!(
        (1..=headroom as usize).contains(&served_at_once),
        "{served_at_once} clients served with {headroom} descriptors free"
    );
    assert!(
        shed_at_once >= 1,
        "no client past the limit was closed after 1.2 s ({served_at_once} served, the rest \
         waiting)"
    );

    // Served clients check their echo and leave, which frees descriptors.
    for (i, slot) in clients.iter_mut().enumerate() {
        if fates[i].is_some() {
            let mut client = slot.take().unwrap();
            if fates[i] == Some(Fate::Served) {
                let mut reply = vec![0u8; request(i).len()];
                client.read_exact(&mut reply).unwrap();
                assert_eq!(reply, request(i), "client {i}");
            }
        }
    }
    // Every waiting client is then either served or closed within a bound,
    // never left hanging; each leaves once it knows.
    for (i, slot) in clients.iter_mut().enumerate() {
        let Some(client) = slot.take() else { continue };
        let start = Instant::now();
        let fate = loop {
            match poll_state(&client) {
                Ok(n) if n >= request(i).len() => break Fate::Served,
                Ok(_) => {}
                Err(_) => break Fate::Rejected,
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "client {i} neither served nor closed after 5 s"
            );
            thread::sleep(Duration::from_millis(10));
        };
        fates[i] = Some(fate);
    }
    let rejected = fates.iter().filter(|f| **f == Some(Fate::Rejected)).count();

    server.assert_fds_return(baseline, Duration::from_secs(3));
    let mut after = server.connect();
    echo_round_trip(&mut after, b"descriptors are back");
    drop(after);

    let scrape = server.scrape();
    let shed = util::metric(
        &scrape,
        "holdfast_connections_rejected_total",
        &[("reason", "fd_limit")],
    );
    assert!(shed >= 1.0, "rejected[fd_limit] = {shed}");
    assert_eq!(
        shed, rejected as f64,
        "rejected[fd_limit] vs clients that saw a close without a reply"
    );
    assert_eq!(
        util::metric(
            &scrape,
            "holdfast_connections_rejected_total",
            &[("reason", "max_conns")]
        ),
        0.0
    );

    // The EMFILE warning is rate-limited, not one line per attempt.
    let warnings = server
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("accept"))
        .count();
    assert!(
        warnings <= 6,
        "{warnings} accept warnings:\n{}",
        server.stderr_text()
    );
}
