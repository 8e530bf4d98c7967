//! Monitoring: `/metrics` carries every documented family, its counters
//! match the traffic the test made, and the process figures match `/proc`.

use crate::util;

use std::io::Write;
use std::time::Duration;

use util::{Server, frame, http_get, metric, read_frame};

/// Every family DESIGN.md documents.
const FAMILIES: [&str; 12] = [
    "holdfast_connections_open",
    "holdfast_connections_accepted_total",
    "holdfast_connections_rejected_total",
    "holdfast_connections_closed_total",
    "holdfast_handler_panics_total",
    "holdfast_frames_total",
    "holdfast_bytes_read_total",
    "holdfast_bytes_written_total",
    "holdfast_shards",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
];

const CLOSE_REASONS: [&str; 9] = [
    "peer",
    "idle_timeout",
    "read_timeout",
    "write_timeout",
    "protocol_error",
    "output_overflow",
    "panic",
    "reset",
    "shutdown",
];

/// The soft RLIMIT_NOFILE of `pid` (`Max open files` in /proc/PID/limits).
fn soft_fd_limit(pid: i32) -> f64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn every_documented_family_is_present_from_the_start() {
    let server = Server::start(&["--threads", "2"]);
    let scrape = server.scrape();
    for family in FAMILIES {
        assert!(
            scrape.samples.iter().any(|s| s.metric == family),
            "no {family} in /metrics"
        );
    }
    for reason in CLOSE_REASONS {
        assert!(
            scrape.samples.iter().any(|s| {
                s.metric == "holdfast_connections_closed_total"
                    && s.labels.get("reason") == Some(reason)
            }),
            "no closed_total{{reason=\"{reason}\"}} series at zero"
        );
    }
    for reason in ["max_conns", "fd_limit"] {
        assert!(
            scrape.samples.iter().any(|s| {
                s.metric == "holdfast_connections_rejected_total"
                    && s.labels.get("reason") == Some(reason)
            }),
            "no rejected_total{{reason=\"{reason}\"}} series at zero"
        );
    }
    assert_eq!(metric(&scrape, "holdfast_shards", &[]), 2.0);
    assert_eq!(metric(&scrape, "holdfast_connections_open", &[]), 0.0);
    assert_eq!(http_get(server.admin(), "/healthz").0, 200);
    assert_eq!(http_get(server.admin(), "/readyz").0, 200);
}

#[test]
fn counters_match_the_traffic_over_two_shards() {
    let server = Server::start(&["--threads", "2", "--protocol", "frame"]);
    let before = server.scrape();
    let unaccounted_before = metric(&before, "holdfast_fd_unaccounted", &[]);

    let mut clients: Vec<_> = (0..6).map(|_| server.connect()).collect();
    let mut bytes = 0usize;
    let mut frames = 0usize;
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..5 {
            let payload = vec![b'm'; 10 * c + i];
            let wire = frame(&payload);
            client.write_all(&wire).unwrap();
            assert_eq!(read_frame(client), payload);
            bytes += wire.len();
            frames += 1;
        }
    }
    // The server counts written bytes just after the write returns, which
    // can be after the client has already read them: wait for the count.
    server.wait_metric(
        "holdfast_bytes_written_total",
        &[],
        bytes as f64,
        Duration::from_secs(2),
    );
    let during = server.scrape();
    assert_eq!(metric(&during, "holdfast_connections_open", &[]), 6.0);
    assert_eq!(
        metric(&during, "holdfast_connections_accepted_total", &[]),
        6.0
    );
    assert_eq!(metric(&during, "holdfast_frames_total", &[]), frames as f64);
    assert_eq!(
        metric(&during, "holdfast_bytes_read_total", &[]),
        bytes as f64
    );
    assert_eq!(
        metric(&during, "holdfast_bytes_written_total", &[]),
        bytes as f64,
        "echo: as many bytes out as in"
    );

    drop(clients);
    server.wait_metric(
        "holdfast_connections_closed_total",
        &[("reason", "peer")],
        6.0,
        Duration::from_secs(2),
    );
    // A closed connection's socket and slot are released after its count
    // (on io_uring, once the kernel's last completion for it is in).
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        0.0,
        Duration::from_secs(2),
    );
    server.wait_metric(
        "holdfast_fd_unaccounted",
        &[],
        unaccounted_before,
        Duration::from_secs(2),
    );
    let after = server.scrape();
    assert_eq!(
        metric(&after, "holdfast_connections_closed_total", &[]),
        6.0,
        "closed for any reason"
    );
}

#[test]
fn process_figures_match_proc() {
    let server = Server::start(&[]);
    let baseline = server.fd_baseline();
    let scrape = server.scrape();
    // The scrape's own connection is open on the server's side while it
    // renders; the count may or may not include it.
    let open_fds = metric(&scrape, "process_open_fds", &[]);
    assert!(
        (open_fds - baseline as f64).abs() <= 2.0,
        "process_open_fds {open_fds}, /proc/PID/fd has {baseline}"
    );
    assert_eq!(
        metric(&scrape, "process_max_fds", &[]),
        soft_fd_limit(server.pid())
    );
    let rss = metric(&scrape, "process_resident_memory_bytes", &[]);
    let proc_rss = server.rss_bytes() as f64;
    assert!(
        rss > proc_rss / 2.0 && rss < proc_rss * 2.0,
        "process_resident_memory_bytes {rss}, VmRSS {proc_rss}"
    );
}
