//! The admin endpoint of a running server: it cannot become the weak door.
//! Slow and garbage peers neither lock scrapers out nor disturb clients,
//! and the server can account for every descriptor it holds.

use crate::util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use util::{Closed, Server, echo_round_trip, http_get, poll_state};

#[test]
fn idle_server_accounts_for_every_descriptor() {
    let server = Server::start(&[]);
    // The scrape's own connection is counted by the admin endpoint, so an
    // idle server reads exactly 0.
    assert_eq!(server.metric("holdfast_fd_unaccounted", &[]), 0.0);
    let mut clients: Vec<_> = (0..5).map(|_| server.connect()).collect();
    for client in &mut clients {
        echo_round_trip(client, b"ping");
    }
    assert_eq!(server.metric("holdfast_fd_unaccounted", &[]), 0.0);
}

#[test]
fn slowloris_and_garbage_on_the_admin_port_do_not_lock_out_scrapes() {
    let server = Server::start(&[]);
    let admin = server.admin();
    // More request-less connections than the endpoint keeps (16), each
    // holding half a request head.
    let slow: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut stream = util::connect(admin);
            stream.write_all(b"GET /metr").unwrap();
            stream
        })
        .collect();
    // Garbage, and a head over the 8 KiB cap.
    for junk in [&b"\x00\xff\r\n\r\n"[..], b"NOT HTTP AT ALL\r\n\r\n"] {
        let mut stream = util::connect(admin);
        stream.write_all(junk).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    }
    let mut big = util::connect(admin);
    let _ = big.write_all(&vec![b'a'; 20_000]);
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 4"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // A scraper still gets through at once, and clients are unaffected.
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("holdfast_connections_open"));
    assert_eq!(http_get(admin, "/healthz").0, 200);
    let mut client = server.connect();
    echo_round_trip(&mut client, b"still serving");

    // Once the slow peers leave, nothing is left behind.
    drop(slow);
    drop(client);
    assert!(util::wait_until(Duration::from_secs(3), || {
        server.metric("holdfast_fd_unaccounted", &[]) == 0.0
            && server.metric("holdfast_connections_open", &[]) == 0.0
    }));
}

/// Admin clients that arrive while the server is out of descriptors.
const WAITING_SCRAPERS: usize = 8;

#[test]
fn admin_port_sheds_without_spinning_when_out_of_descriptors() {
    let server = Server::start(&[]);
    let admin = server.admin();
    let baseline = server.fd_baseline();
    // The limit bounds descriptor numbers: the lowest free number leaves
    // none free below it.
    let held = server.fd_numbers();
    let limit = (0..).find(|fd| !held.contains(fd)).unwrap();
    let old_limit = util::set_fd_soft_limit(server.pid(), limit);
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let scrapers: Vec<TcpStream> = (0..WAITING_SCRAPERS)
        .map(|_| {
            let mut scraper = util::connect(admin);
            scraper.write_all(request).unwrap();
            scraper
        })
        .collect();

    // The admin thread cannot accept them, and must not busy-loop on its
    // listener meanwhile.
    util::assert_not_spinning(&server, "out of descriptors (the admin listener)");
    // Its spare descriptor let it close some instead of leaving them all
    // waiting (10 ms back-off doubling: several in 1.2 s).
    let shed = scrapers
        .iter()
        .filter(|s| matches!(poll_state(s), Err(Closed::Eof | Closed::Reset)))
        .count();
    assert!(
        shed >= 1,
        "no admin client was shed in 1.2 s out of descriptors"
    );

    // Descriptors back: every client is answered or was shed, none is
    // left hanging.
    util::set_fd_soft_limit(server.pid(), old_limit);
    for (i, mut scraper) in scrapers.into_iter().enumerate() {
        let mut answer = Vec::new();
        match scraper.read_to_end(&mut answer) {
            Ok(_) => assert!(
                answer.is_empty() || answer.starts_with(b"HTTP/1.1 200"),
                "scraper {i}: {:?}",
                String::from_utf8_lossy(&answer)
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "scraper {i}"),
        }
    }
    let started = Instant::now();
    assert_eq!(http_get(admin, "/healthz").0, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "answered late");
    server.assert_fds_return(baseline, Duration::from_secs(3));
    // The warning is rate-limited, not one line per attempt.
    let warnings = server
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("admin accept"))
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} admin accept warnings:\n{}",
        server.stderr_text()
    );
}
