//! Partial reads and writes: with a tiny client receive buffer the server's
//! writes come up short and hit EAGAIN all the time, and the client reads a
//! few bytes at a time; every byte must still come back, in order.

use crate::util;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use util::{Rng, Server, connect_small_rcvbuf, frame};

/// Sends ~1 MiB as frames of random sizes from one thread while this one
/// reads the replies 7 bytes at a time through a 4 KiB SO_RCVBUF, pausing
/// now and then so the server's output ring fills and its writes stall.
fn tiny_reads_get_every_byte(protocol: &str, seed: u64) {
    let server = Server::start(&["--protocol", protocol]);
    let mut client = connect_small_rcvbuf(server.addr, 4096);
    let mut rng = Rng::new(seed);
    let mut wire = Vec::new();
    while wire.len() < 1 << 20 {
        let len = rng.range(1, 9_000);
        let payload = rng.bytes(len);
        if protocol == "frame" {
            wire.extend_from_slice(&frame(&payload));
        } else {
            wire.extend_from_slice(&payload);
        }
    }
    let expected = wire.clone();
    let mut writer = client.try_clone().unwrap();
    let writing = thread::spawn(move || {
        let mut rng = Rng::new(seed ^ 0xffff);
        let mut sent = 0;
        while sent < wire.len() {
            let size = rng.range(1, 40_000).min(wire.len() - sent);
            writer
                .write_all(&wire[sent..sent + size])
                .unwrap_or_else(|e| panic!("sending after {sent} bytes: {e}"));
            sent += size;
        }
    });
    let start = Instant::now();
    let mut got = Vec::with_capacity(expected.len());
    let mut buf = [0u8; 7];
    let mut next_pause = 16 * 1024;
    while got.len() < expected.len() {
        let want = (expected.len() - got.len()).min(buf.len());
        match client.read(&mut buf[..want]) {
            Ok(0) => panic!("the server closed after {} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading after {} bytes: {e}", got.len()),
        }
        if got.len() >= next_pause {
            next_pause += 16 * 1024;
            thread::sleep(Duration::from_millis(3));
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {} of {} bytes in 30 s",
            got.len(),
            expected.len()
        );
    }
    writing.join().expect("writer thread");
    if let Some(at) = got.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!("the reply stream differs from what was sent at byte {at}");
    }
    // Nothing extra either.
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let extra = client.read(&mut buf);
    assert!(
        !matches!(extra, Ok(n) if n > 0),
        "bytes after the expected end: {extra:?}"
    );
}

#[test]
fn frames_through_tiny_socket_buffers_and_7_byte_reads() {
    tiny_reads_get_every_byte("frame", 0x7e57_0001);
}

#[test]
fn echo_through_tiny_socket_buffers_and_7_byte_reads() {
    tiny_reads_get_every_byte("echo", 0x7e57_0002);
}
