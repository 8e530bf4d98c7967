//! Corrupt or hostile input: an oversized length header, a line with no
//! end, random garbage. Each closes only its own connection (reason
//! `protocol_error`), before buffering what it announced.

use crate::util;

use std::io::Write;
use std::thread;
use std::time::Duration;

use util::{Rng, Server, expect_closed, frame, frame_round_trip, line_round_trip, read_frame};

const CLOSED: &str = "holdfast_connections_closed_total";

#[test]
fn oversized_frame_header_closes_before_the_payload() {
    // max-frame 4092 = what a 4 KiB ring holds after the 4-byte header.
    let server = Server::start(&["--protocol", "frame", "--buffer", "4KiB"]);
    let baseline = server.fd_baseline();
    let mut client = server.connect();
    // Exactly max-frame is fine.
    frame_round_trip(&mut client, &vec![7u8; 4092]);
    // One more is refused as soon as the header is in: the payload is never
    // sent, so a server waiting for it would not close.
    client.write_all(&4093u32.to_be_bytes()).unwrap();
    let (bytes, _, _) = expect_closed(&mut client, Duration::from_secs(1));
    assert!(
        bytes.is_empty(),
        "{} bytes in answer to a bad header",
        bytes.len()
    );
    // Clients close on EOF; until they do, the server lingers.
    drop(client);

    // A header announcing 4 GiB - 1.
    let mut huge = server.connect();
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
    expect_closed(&mut huge, Duration::from_secs(1));
    drop(huge);

    server.wait_metric(
        CLOSED,
        &[("reason", "protocol_error")],
        2.0,
        Duration::from_secs(2),
    );
    assert_eq!(server.metric(CLOSED, &[]), 2.0, "closed for any reason");
    server.assert_fds_return(baseline, Duration::from_secs(2));
}

#[test]
fn explicit_max_frame_is_the_payload_limit() {
    let server = Server::start(&["--protocol", "frame", "--max-frame", "100"]);
    let mut client = server.connect();
    frame_round_trip(&mut client, &[1u8; 100]);
    client.write_all(&frame(&[1u8; 101])).unwrap();
    expect_closed(&mut client, Duration::from_secs(1));
    drop(client);
    server.wait_metric(
        CLOSED,
        &[("reason", "protocol_error")],
        1.0,
        Duration::from_secs(2),
    );
}

#[test]
fn line_longer_than_max_frame_closes() {
    let server = Server::start(&["--protocol", "line", "--max-frame", "100"]);
    let baseline = server.fd_baseline();
    // 100 payload bytes (the newline is extra) are fine.
    let mut client = server.connect();
    line_round_trip(&mut client, &[b'a'; 100]);
    // 101 bytes and a newline are not.
    let mut long = vec![b'b'; 101];
    long.push(b'\n');
    client.write_all(&long).unwrap();
    expect_closed(&mut client, Duration::from_secs(1));
    // A client closes on EOF; until it does, the server lingers (and
    // counts the close when it ends).
    drop(client);

    // No newline at all: closed once more than max-frame bytes are in,
    // without waiting for the rest of the 5000.
    let mut endless = server.connect();
    endless.write_all(&[b'c'; 5000]).unwrap();
    expect_closed(&mut endless, Duration::from_secs(1));
    drop(endless);

    server.wait_metric(
        CLOSED,
        &[("reason", "protocol_error")],
        2.0,
        Duration::from_secs(2),
    );
    server.assert_fds_return(baseline, Duration::from_secs(2));
}

#[test]
fn replies_to_frames_before_a_bad_one_still_arrive() {
    let server = Server::start(&["--protocol", "frame", "--buffer", "4KiB"]);
    let mut client = server.connect();
    let mut wire = Vec::new();
    for payload in [&b"first"[..], b"second", b"third"] {
        wire.extend_from_slice(&frame(payload));
    }
    wire.extend_from_slice(&1_000_000u32.to_be_bytes());
    client.write_all(&wire).unwrap();
    assert_eq!(read_frame(&mut client), b"first");
    assert_eq!(read_frame(&mut client), b"second");
    assert_eq!(read_frame(&mut client), b"third");
    let (rest, _, _) = expect_closed(&mut client, Duration::from_secs(1));
    assert!(rest.is_empty(), "bytes after the three replies: {rest:?}");
    drop(client);
    server.wait_metric(
        CLOSED,
        &[("reason", "protocol_error")],
        1.0,
        Duration::from_secs(2),
    );
}

#[test]
fn garbage_from_many_clients_while_a_good_client_works() {
    let server = Server::start(&["--protocol", "frame", "--buffer", "4KiB"]);
    let baseline = server.fd_baseline();
    let addr = server.addr;

    let good = thread::spawn(move || {
        let mut client = util::connect(addr);
        for i in 0..150 {
            frame_round_trip(&mut client, format!("good {i}").as_bytes());
            thread::sleep(Duration::from_millis(5));
        }
    });

    let mut vandals = Vec::new();
    for seed in 1..=8u64 {
        vandals.push(thread::spawn(move || {
            let mut rng = Rng::new(seed * 7919);
            for _ in 0..5 {
                let mut client = util::connect(addr);
                // Some start with a few valid frames, then garbage.
                let mut wire = Vec::new();
                for _ in 0..rng.range(0, 3) {
                    let len = rng.range(0, 50);
                    wire.extend_from_slice(&frame(&rng.bytes(len)));
                }
                let len = rng.range(1, 4_000);
                wire.extend_from_slice(&rng.bytes(len));
                let mut sent = 0;
                while sent < wire.len() {
                    let size = rng.range(1, 700).min(wire.len() - sent);
                    // The server may already have closed: stop sending then.
                    if client.write_all(&wire[sent..sent + size]).is_err() {
                        break;
                    }
                    sent += size;
                }
                thread::sleep(Duration::from_millis(rng.range(0, 20) as u64));
            }
        }));
    }
    for vandal in vandals {
        vandal.join().expect("a garbage sender");
    }
    good.join().expect("the good client was served throughout");

    // Still serving, and every garbage connection is gone.
    let mut after = server.connect();
    frame_round_trip(&mut after, b"after the garbage");
    drop(after);
    server.assert_fds_return(baseline, Duration::from_secs(3));
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        0.0,
        Duration::from_secs(2),
    );
    assert!(server.metric(CLOSED, &[("reason", "protocol_error")]) >= 1.0);
}
