//! Each decoder over a ring full of small frames: the cost per frame of
//! finding frame boundaries (no service, no copies).
//!
//! `cargo bench --bench codec`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use holdfast::engine::buffer::Ring;
use holdfast::engine::codec::{Codec, Decoded, Input, Protocol};

const CAPACITY: usize = 64 * 1024;
/// Payload bytes per frame.
const PAYLOAD: usize = 32;

/// A ring filled (as far as whole frames go) with `protocol` frames of
/// [`PAYLOAD`] bytes; returns it with the number of frames.
fn full_ring(protocol: Protocol) -> (Ring, usize) {
    let mut frame = Vec::new();
    match protocol {
        Protocol::Frame => {
            frame.extend_from_slice(&(PAYLOAD as u32).to_be_bytes());
            frame.extend(std::iter::repeat_n(b'x', PAYLOAD));
        }
        Protocol::Line => {
            frame.extend(std::iter::repeat_n(b'x', PAYLOAD));
            frame.push(b'\n');
        }
        Protocol::Echo => frame.extend(std::iter::repeat_n(b'x', PAYLOAD)),
        Protocol::Resp => {
            // SET k <value>: a typical small command, 32 payload bytes.
            frame.extend(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$32\r\n");
            frame.extend(std::iter::repeat_n(b'x', PAYLOAD));
            frame.extend(b"\r\n");
        }
    }
    let mut ring = Ring::with_capacity(CAPACITY);
    let mut frames = 0;
    while ring.free() >= frame.len() {
        ring.push(&frame);
        frames += 1;
    }
    (ring, frames)
}

/// Decodes every frame of `ring` without consuming it; returns the count.
fn decode_all(codec: &Codec, ring: &Ring) -> usize {
    let (first, second) = ring.readable();
    let mut offset = 0;
    let mut frames = 0;
    let mut progress = 0;
    loop {
        let input = if offset < first.len() {
            Input::new(&first[offset..], second)
        } else {
            Input::new(&second[offset - first.len()..], &[])
        };
        match codec.decode(input, &mut progress) {
            Decoded::Frame { consumed, .. } => {
                offset += consumed;
                frames += 1;
            }
            Decoded::NeedMore => return frames,
            Decoded::Error(error) => panic!("{error}"),
        }
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/decode_full_ring");
    for protocol in [
        Protocol::Echo,
        Protocol::Line,
        Protocol::Frame,
        Protocol::Resp,
    ] {
        // Echo takes whatever is there as one frame, up to max-frame: give it
        // a max-frame of one payload so it, too, walks frame by frame.
        let max_frame = if protocol == Protocol::Echo {
            PAYLOAD
        } else {
            CAPACITY
        };
        let codec = Codec::new(protocol, max_frame);
        let (ring, frames) = full_ring(protocol);
        assert_eq!(decode_all(&codec, &ring), frames);
        group.throughput(Throughput::Elements(frames as u64));
        group.bench_function(protocol.name(), |b| {
            b.iter(|| black_box(decode_all(black_box(&codec), black_box(&ring))))
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
