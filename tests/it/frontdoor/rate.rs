//! `--request-rate`: a connection over it is paced by not being read.

use crate::util;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use util::{Server, line_round_trip};

#[test]
fn a_connection_over_its_request_rate_is_paced_and_loses_no_byte() {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--request-rate",
        "200",
        "--request-burst",
        "400",
    ]);
    // 1000 lines of different lengths, sent as fast as TCP takes them.
    let lines: Vec<Vec<u8>> = (0..1000)
        .map(|n| format!("line {n} {}\n", "x".repeat(n % 50)).into_bytes())
        .collect();
    let sent: Vec<u8> = lines.concat();
    let mut client = server.connect();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = client.try_clone().unwrap();
    let start = Instant::now();
    let (got, burst_done, done) = std::thread::scope(|scope| {
        scope.spawn(|| writer.write_all(&sent).unwrap());
        // Meanwhile another connection is served at once: the rate is
        // each connection's own.
        let mut other = server.connect();
        for n in 0..20 {
            let asked = Instant::now();
            line_round_trip(&mut other, format!("other {n}").as_bytes());
            assert!(
                asked.elapsed() < Duration::from_millis(500),
                "{:?}",
                asked.elapsed()
            );
        }
        let burst_bytes: usize = lines[..400].iter().map(Vec::len).sum();
        let mut got = vec![0u8; sent.len()];
        client.read_exact(&mut got[..burst_bytes]).unwrap();
        let burst_done = start.elapsed();
        client.read_exact(&mut got[burst_bytes..]).unwrap();
        (got, burst_done, start.elapsed())
    });
    assert!(got == sent, "the replies differ from the lines sent");
    // The burst comes at once (at the rate alone it would take 2 s), the
    // other 600 at 200 a second: 3 s.
    eprintln!("400 lines in {burst_done:?}, 1000 in {done:?}");
    assert!(
        burst_done < Duration::from_millis(1000),
        "the burst took {burst_done:?}"
    );
    let expected = 3.0;
    let took = done.as_secs_f64();
    assert!(
        (took - expected).abs() <= expected * 0.1,
        "1000 lines took {took:.2} s, expected {expected} s"
    );
    assert!(server.metric("holdfast_throttled_total", &[]) >= 1.0);
    let throttled = server.metric("holdfast_throttled_seconds_total", &[]);
    // Counted in whole milliseconds per pause: a little slack.
    assert!(
        throttled >= 2.0 && throttled <= took + 0.1,
        "throttled {throttled} s of {took:.3} s"
    );
    // Nothing was closed or dropped: the connection goes on at its rate.
    line_round_trip(&mut client, b"after");
}

#[test]
fn a_throttled_connection_is_not_read_beyond_its_ring() {
    let server = Server::start(&[
        "--protocol",
        "line",
        "--buffer",
        "4KiB",
        "--request-rate",
        "10",
        "--request-burst",
        "10",
    ]);
    let line = format!("{}\n", "y".repeat(99));
    // More than loopback's socket buffers hold (a few MiB each way).
    let flood = line.repeat(320_000);
    let mut client = server.connect();
    let taken = util::write_nonblocking(&mut client, flood.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    // TCP pushed back: the server read what its ring holds and what it
    // served (10 at once, then 10 a second), no more.
    let read = server.metric("holdfast_bytes_read_total", &[]);
    let served = server.metric("holdfast_frames_total", &[]);
    assert!((10.0..=25.0).contains(&served), "{served} frames served");
    assert!(
        read <= 4096.0 + served * 100.0,
        "{read} bytes read, {served} served"
    );
    assert!(
        taken < flood.len(),
        "the client's socket took all {taken} bytes"
    );
    assert_eq!(server.metric("holdfast_connections_open", &[]), 1.0);
}
