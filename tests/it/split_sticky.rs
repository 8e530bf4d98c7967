//! Sticky and split packets: TCP keeps no message boundaries, so any
//! segmentation of a stream must yield the same frames and the same replies.

use crate::util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use util::{IO_TIMEOUT, Rng, Server, frame, line, read_exact_timeout, read_frame};

/// Sends `stream_bytes` in random chunks (1..=`chunk_max` bytes, a short
/// pause now and then) while another thread reads `expected.len()` bytes;
/// asserts they are exactly `expected`.
fn send_chunked_expect(
    client: &mut TcpStream,
    stream_bytes: &[u8],
    expected: &[u8],
    rng: &mut Rng,
    chunk_max: usize,
) {
    let mut reader = client.try_clone().unwrap();
    let want = expected.len();
    let reading = thread::spawn(move || {
        let mut got = Vec::with_capacity(want);
        let mut buf = vec![0u8; 16 * 1024];
        while got.len() < want {
            match reader.read(&mut buf[..(want - got.len()).min(16 * 1024)]) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading replies after {} bytes: {e}", got.len()),
            }
        }
        got
    });
    let mut sent = 0;
    while sent < stream_bytes.len() {
        let size = rng.range(1, chunk_max).min(stream_bytes.len() - sent);
        client
            .write_all(&stream_bytes[sent..sent + size])
            .expect("sending a chunk");
        sent += size;
        if rng.range(0, 15) == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let got = reading.join().expect("reader thread");
    assert_eq!(got.len(), expected.len(), "reply bytes");
    if let Some(at) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("replies differ from the expected stream at byte {at}");
    }
}

#[test]
fn many_frames_in_one_write_all_answered_in_order() {
    let server = Server::start(&["--protocol", "frame"]);
    let mut client = server.connect();
    let payloads: Vec<Vec<u8>> = (0..200u32)
        .map(|i| format!("frame {i} {}", "x".repeat(i as usize % 37)).into_bytes())
        .collect();
    let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
    client.write_all(&wire).unwrap();
    for (i, payload) in payloads.iter().enumerate() {
        assert_eq!(&read_frame(&mut client), payload, "reply {i}");
    }
}

#[test]
fn lines_in_one_write_answered_in_order() {
    let server = Server::start(&["--protocol", "line"]);
    let mut client = server.connect();
    let wire = b"one\ntwo\r\n\nthree\n";
    client.write_all(wire).unwrap();
    // The `\r` before a `\n` is dropped; an empty line is an empty frame.
    let expected = b"one\ntwo\n\nthree\n";
    assert_eq!(
        read_exact_timeout(&mut client, expected.len(), IO_TIMEOUT),
        expected
    );
}

#[test]
fn frame_split_byte_by_byte_yields_one_reply() {
    let server = Server::start(&["--protocol", "frame"]);
    let mut client = server.connect();
    let payload = b"split across twenty-odd segments";
    for byte in frame(payload) {
        client.write_all(&[byte]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_frame(&mut client), payload);
    // Exactly one reply: the next thing on the wire answers the next frame.
    client.write_all(&frame(b"next")).unwrap();
    assert_eq!(read_frame(&mut client), b"next");
}

#[test]
fn line_split_byte_by_byte_yields_one_reply() {
    let server = Server::start(&["--protocol", "line"]);
    let mut client = server.connect();
    for &byte in b"dripped line\r\n" {
        client.write_all(&[byte]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    client.write_all(b"next\n").unwrap();
    let expected = b"dripped line\nnext\n";
    assert_eq!(
        read_exact_timeout(&mut client, expected.len(), IO_TIMEOUT),
        expected
    );
}

#[test]
fn random_chunking_of_random_frames() {
    let server = Server::start(&["--protocol", "frame"]);
    let mut rng = Rng::new(0x5eed_f4a3);
    let mut wire = Vec::new();
    for _ in 0..400 {
        // Mostly small, some empty, some several KiB.
        let len = match rng.range(0, 9) {
            0 => 0,
            1 => rng.range(2_000, 9_000),
            _ => rng.range(1, 300),
        };
        wire.extend_from_slice(&frame(&rng.bytes(len)));
    }
    let mut client = server.connect();
    // The echo service answers each frame with itself: replies == requests.
    send_chunked_expect(&mut client, &wire, &wire, &mut rng, 3_000);
    // And a stream of small frames in tiny chunks: most frames now arrive
    // in several reads and most reads hold the end of one frame and the
    // start of the next.
    let mut small = Vec::new();
    for _ in 0..150 {
        let len = rng.range(0, 40);
        small.extend_from_slice(&frame(&rng.bytes(len)));
    }
    send_chunked_expect(&mut client, &small, &small, &mut rng, 7);
}

#[test]
fn random_chunking_of_random_lines() {
    let server = Server::start(&["--protocol", "line"]);
    let mut rng = Rng::new(0x0011_14e5);
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..400 {
        let len = match rng.range(0, 9) {
            0 => 0,
            1 => rng.range(1_000, 6_000),
            _ => rng.range(1, 200),
        };
        let payload: Vec<u8> = rng
            .bytes(len)
            .into_iter()
            .map(|b| if b == b'\n' || b == b'\r' { b'.' } else { b })
            .collect();
        wire.extend_from_slice(&payload);
        // Some lines end in CRLF: the `\r` is not part of the reply.
        if rng.range(0, 3) == 0 {
            wire.push(b'\r');
        }
        wire.push(b'\n');
        expected.extend_from_slice(&line(&payload));
    }
    let mut client = server.connect();
    send_chunked_expect(&mut client, &wire, &expected, &mut rng, 3_000);
}

#[test]
fn frames_larger_than_half_the_ring_wrap_around_it() {
    // A 4 KiB ring holds at most one such frame, so a pipelined stream of
    // them keeps both rings non-empty and makes frames straddle the end of
    // the storage (the scratch-copy path) on input and replies wrap on
    // output.
    let server = Server::start(&["--protocol", "frame", "--buffer", "4KiB"]);
    let mut rng = Rng::new(0x000a_11ce);
    let mut wire = Vec::new();
    for i in 0..120 {
        let len = match i % 4 {
            0 => 4092, // max-frame: header + payload fill the ring exactly
            1 => rng.range(2_049, 4_091),
            2 => rng.range(1, 2_048),
            _ => rng.range(2_049, 4_092),
        };
        wire.extend_from_slice(&frame(&rng.bytes(len)));
    }
    let mut client = server.connect();
    send_chunked_expect(&mut client, &wire, &wire, &mut rng, 5_000);
    // Then one at a time, after an odd-sized frame has moved the ring's
    // positions, in case emptied rings are reset to offset 0.
    for len in [1_500, 3_000, 4_092, 2_047, 4_000] {
        let payload = rng.bytes(len);
        let mut two = frame(b"odd-sized");
        two.extend_from_slice(&frame(&payload));
        client.write_all(&two).unwrap();
        assert_eq!(read_frame(&mut client), b"odd-sized");
        assert_eq!(read_frame(&mut client), payload, "a {len}-byte frame");
    }
}

#[test]
fn lines_larger_than_half_the_ring_wrap_around_it() {
    // Lines of up to max-frame (4095 with a 4 KiB ring) pipelined, so the
    // newline search and the reply's newline straddle the ring's end.
    let server = Server::start(&["--protocol", "line", "--buffer", "4KiB"]);
    let mut rng = Rng::new(0x0b16_11e5);
    let mut wire = Vec::new();
    for i in 0..120 {
        let len = match i % 3 {
            0 => 4095,
            1 => rng.range(2_049, 4_094),
            _ => rng.range(0, 2_048),
        };
        let payload: Vec<u8> = rng
            .bytes(len)
            .into_iter()
            .map(|b| if b == b'\n' || b == b'\r' { b'-' } else { b })
            .collect();
        wire.extend_from_slice(&line(&payload));
    }
    let mut client = server.connect();
    send_chunked_expect(&mut client, &wire, &wire, &mut rng, 5_000);
}
