//! The byte ring on its hot paths: push/consume of small requests, and the
//! vectored read/write the driver does against a socket (a `Cursor` here).
//!
//! `cargo bench --bench ring`

use std::hint::black_box;
use std::io::Cursor;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use holdfast::engine::buffer::Ring;

const CAPACITY: usize = 64 * 1024;

fn push_consume(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring/push_consume");
    for size in [64usize, 4096] {
        let data = vec![7u8; size];
        let mut ring = Ring::with_capacity(CAPACITY);
        // Offset the head so pushes wrap around the end now and then.
        ring.push(&[0u8; 100]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                let n = ring.push(black_box(&data));
                ring.consume(black_box(n));
            })
        });
    }
    group.finish();
}

fn read_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring/read_from_write_to");
    for size in [64usize, 4096] {
        let source = vec![3u8; size];
        let mut sink = vec![0u8; size];
        let mut ring = Ring::with_capacity(CAPACITY);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                let mut src = Cursor::new(black_box(&source[..]));
                let read = ring.read_from(&mut src).unwrap();
                let mut dst = Cursor::new(&mut sink[..]);
                let written = ring.write_to(&mut dst).unwrap();
                debug_assert_eq!(read, written);
                black_box(written)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, push_consume, read_write);
criterion_main!(benches);
