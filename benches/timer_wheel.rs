//! The timer wheel: schedule + cancel (what every connection does as its
//! deadline moves) and advance over a wheel holding many entries.
//!
//! `cargo bench --bench timer_wheel`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use holdfast::engine::timer::Wheel;

/// The shard's wheel shape: 512 slots of 10 ms.
const TICK_MS: u64 = 10;
const SLOTS: usize = 512;

fn schedule_cancel(c: &mut Criterion) {
    let mut wheel: Wheel<u64> = Wheel::with_capacity(TICK_MS, SLOTS, 1024);
    // Some residents, so lists are not all empty.
    for i in 0..1000u64 {
        wheel.schedule(i * 7 % 60_000, i);
    }
    let mut deadline = 0u64;
    c.bench_function("timer_wheel/schedule_cancel", |b| {
        b.iter(|| {
            deadline = (deadline + 997) % 60_000;
            let key = wheel.schedule(black_box(deadline), 1);
            black_box(wheel.cancel(key))
        })
    });
}

fn advance(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_wheel/advance");
    for entries in [10_000u64, 100_000] {
        group.throughput(Throughput::Elements(entries));
        // Entries spread over 10 s (more than the 5.12 s rotation); one
        // advance to 10 s fires all of them.
        group.bench_function(format!("{entries}_entries"), |b| {
            b.iter_batched(
                || {
                    let mut wheel: Wheel<u64> =
                        Wheel::with_capacity(TICK_MS, SLOTS, entries as usize);
                    for i in 0..entries {
                        wheel.schedule(i * 10_000 / entries, i);
                    }
                    (wheel, Vec::with_capacity(entries as usize))
                },
                |(mut wheel, mut expired)| {
                    let mut now = 0;
                    while now < 10_000 {
                        now += TICK_MS;
                        wheel.advance(now, &mut expired);
                    }
                    assert_eq!(expired.len(), entries as usize);
                    (wheel, expired)
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, schedule_cancel, advance);
criterion_main!(benches);
