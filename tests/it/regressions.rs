//! Regression tests, one per bug found, each named after the bug it pins
//! down (`fn line_reply_lost_when_ring_wraps()`, say) with a comment giving
//! the reproduction and the fix. Empty until the first bug.

use crate::util;

use std::io::Write;
use std::thread;
use std::time::Duration;

use util::{Closed, Server, expect_closed, frame, frame_round_trip, read_frame};

/// Fixed on main in 201fe94 ("read to end of stream once EPOLLRDHUP is
/// seen").
///
/// Bug: a FIN that is already in the socket when the data before it is read
/// is never seen. The mio driver (`driver::read`) takes a short read as proof
/// that the socket is drained and clears `read_ready` without reading on to
/// the EOF; under edge triggering no new edge comes for a FIN that had
/// already arrived, so the half-closed connection is answered but never
/// closed until its idle timeout (and then counted `idle_timeout`, not
/// `peer`).
///
/// Reproduction: `holdfast serve --protocol frame`; a client writes three
/// frames and at once `shutdown(SHUT_WR)`; it reads the three replies and
/// then waits for EOF, which does not come whenever data and FIN were both
/// queued before the server's read (about half the runs on loopback). Here
/// the server is stopped (SIGSTOP) while they are queued, which makes it
/// happen every time.
#[test]
fn fin_already_queued_behind_data_closes_the_connection() {
    let server = Server::start(&["--protocol", "frame", "--idle-timeout", "5s"]);
    let mut client = server.connect();
    frame_round_trip(&mut client, b"accepted");
    server.pause();
    let wire: Vec<u8> = [&b"a"[..], b"bb", b"ccc"]
        .iter()
        .flat_map(|p| frame(p))
        .collect();
    client.write_all(&wire).unwrap();
    util::shutdown_write(&client);
    thread::sleep(Duration::from_millis(50));
    server.resume();
    for payload in [&b"a"[..], b"bb", b"ccc"] {
        assert_eq!(read_frame(&mut client), payload);
    }
    let (_, how, _) = expect_closed(&mut client, Duration::from_secs(2));
    assert_eq!(how, Closed::Eof);
    server.wait_metric(
        "holdfast_connections_closed_total",
        &[("reason", "peer")],
        1.0,
        Duration::from_secs(1),
    );
}

/// The same exchange with a pause between the data and the FIN works: the
/// FIN then raises an edge of its own. (Control for the test above.)
#[test]
fn fin_arriving_after_a_pause_closes_the_connection() {
    let server = Server::start(&["--protocol", "frame", "--idle-timeout", "5s"]);
    let mut client = server.connect();
    client.write_all(&frame(b"a")).unwrap();
    assert_eq!(read_frame(&mut client), b"a");
    thread::sleep(Duration::from_millis(50));
    util::shutdown_write(&client);
    let (_, how, _) = expect_closed(&mut client, Duration::from_secs(2));
    assert_eq!(how, Closed::Eof);
}

/// Bug: closing a connection that still has unread bytes in its socket
/// makes the kernel send a RST, which throws away the replies still in the
/// server's socket send buffer: "flushed" only means handed to the kernel.
/// A connection closed after a protocol error (or at the end of a drain)
/// loses replies to the good frames before the bad one whenever the peer
/// is slower to read than the server to write and sent anything after the
/// bad frame. Fixed by the lingering close (shutdown(SHUT_WR), then read
/// and discard until EOF or `LINGER_MS`, then close).
///
/// Reproduction: `holdfast serve --protocol frame`; a client with SO_RCVBUF
/// 4096 sends 50 frames of 1000 bytes, a header announcing 1e9 bytes, and
/// 50 000 more bytes; 300 ms later it reads: it gets 4096 of the 50 200
/// reply bytes, then ECONNRESET.
#[test]
fn replies_before_a_bad_frame_survive_bytes_behind_it() {
    let server = Server::start(&["--protocol", "frame"]);
    let mut client = util::connect_small_rcvbuf(server.addr, 4096);
    let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1000]).collect();
    let mut wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    wire.extend_from_slice(&1_000_000_000u32.to_be_bytes());
    wire.extend_from_slice(&[b'g'; 50_000]);
    client.write_all(&wire).unwrap();
    thread::sleep(Duration::from_millis(300));
    for (i, payload) in payloads.iter().enumerate() {
        assert_eq!(&read_frame(&mut client), payload, "reply {i}");
    }
    expect_closed(&mut client, Duration::from_secs(2));
}

/// The same loss at the end of a graceful shutdown: bytes that arrive
/// after the drain has read the socket stay unread, and the close resets
/// away the replies to the requests that came before the signal.
///
/// Reproduction: `holdfast serve --protocol frame`; a client with SO_RCVBUF
/// 4096 sends 50 frames of 1000 bytes (all acknowledged), the server gets
/// SIGTERM, the client sends 50 more frames and then reads: the first 50
/// replies do not all arrive (ECONNRESET). Fixed by the lingering close.
#[test]
fn replies_before_sigterm_survive_bytes_sent_after_it() {
    let server = Server::start(&["--protocol", "frame", "--shutdown-grace", "5s"]);
    let mut client = util::connect_small_rcvbuf(server.addr, 4096);
    let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1000]).collect();
    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    client.write_all(&wire).unwrap();
    assert!(util::wait_until(Duration::from_secs(2), || {
        util::unacked_bytes(&client) == 0
    }));
    server.signal(nix::sys::signal::Signal::SIGTERM);
    thread::sleep(Duration::from_millis(200));
    // Late requests: the server need not answer these, but must not let
    // them cost the earlier replies.
    let _ = util::write_nonblocking(&mut client, &wire);
    thread::sleep(Duration::from_millis(200));
    for (i, payload) in payloads.iter().enumerate() {
        assert_eq!(&read_frame(&mut client), payload, "reply {i}");
    }
}

/// The lingering close is bounded: a peer that keeps its side open, and
/// keeps sending, after our FIN is still closed once `LINGER_MS` (2 s) has
/// passed, with the reason that started the close.
#[test]
fn lingering_is_bounded_for_a_peer_that_never_closes() {
    let server = Server::start(&["--protocol", "frame", "--idle-timeout", "30s"]);
    let mut client = server.connect();
    frame_round_trip(&mut client, b"ok");
    // A header over max-frame: a protocol error, answered with our FIN.
    client.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let (_, how, _) = expect_closed(&mut client, Duration::from_secs(1));
    assert_eq!(how, Closed::Eof);
    // The server lingers, reading and discarding what still comes.
    for _ in 0..5 {
        let _ = client.write(&[b'x'; 100]);
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.metric("holdfast_connections_open", &[]), 1.0);
    server.wait_metric(
        "holdfast_connections_closed_total",
        &[("reason", "protocol_error")],
        1.0,
        Duration::from_secs(4),
    );
    assert_eq!(server.metric("holdfast_connections_open", &[]), 0.0);
}
