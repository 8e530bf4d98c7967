//! How long to wait before reconnecting to an upstream: exponential backoff
//! with a cap and jitter, the two schemes of the AWS Architecture Blog's
//! "Exponential Backoff And Jitter":
//!
//! - full jitter: `random(0, min(cap, base * 2^attempt))`;
//! - decorrelated jitter: `min(cap, random(base, previous * 3))`.
//!
//! Jitter is what keeps many clients (here: every shard of every proxy)
//! from reconnecting to a restarted upstream in lockstep. The randomness is
//! a SplitMix64 generator inside the [`Backoff`], seeded by the caller, so
//! a given seed always yields the same delays (tests need no clock and no
//! sleep) and no state is shared between shards. Seed each (shard,
//! upstream) differently, or they wait in step after all.

pub use crate::config::{BackoffSettings, Jitter};
use crate::engine::timer::Millis;

/// One upstream's reconnect backoff (per shard).
#[derive(Clone, Debug)]
pub struct Backoff {
    settings: BackoffSettings,
    /// Failures since the last success.
    attempt: u32,
    /// The last delay (decorrelated jitter grows from it); `base` at first.
    previous: Millis,
    rng: u64,
}

impl Backoff {
    /// A backoff at its start, with validated `settings` (`base` at least
    /// 1 ms, `cap` at least `base`); `seed` picks the delays.
    pub fn new(settings: BackoffSettings, seed: u64) -> Backoff {
        debug_assert!(
            1 <= settings.base && settings.base <= settings.cap,
            "{settings:?}"
        );
        Backoff {
            settings,
            attempt: 0,
            previous: settings.base,
            rng: seed,
        }
    }

    /// The delay before the next attempt, after a failed one. Never more
    /// than `cap`; with full jitter never more than `base * 2^attempt`,
    /// with decorrelated jitter never less than `base`.
    pub fn next_delay(&mut self) -> Millis {
        let BackoffSettings { base, cap, jitter } = self.settings;
        let delay = match jitter {
            Jitter::Full => {
                let ceiling = base
                    .checked_shl(self.attempt)
                    .filter(|c| c >> self.attempt == base);
                let ceiling = ceiling.map_or(cap, |c| c.min(cap));
                self.between(0, ceiling)
            }
            Jitter::Decorrelated => {
                let ceiling = self.previous.saturating_mul(3);
                self.between(base, ceiling).min(cap)
            }
        };
        self.attempt = self.attempt.saturating_add(1);
        self.previous = delay.max(base);
        delay
    }

    /// An attempt succeeded: the next failure starts over from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.previous = self.settings.base;
    }

    #[cfg(test)]
    /// Failures since the last success (or the start).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// A number in `low..=high` (SplitMix64, then a remainder: the bias
    /// is below 2^-40 for any range a delay can have).
    fn between(&mut self, low: Millis, high: Millis) -> Millis {
        if high <= low {
            return low;
        }
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        low + z % (high - low + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FULL: BackoffSettings = BackoffSettings {
        base: 100,
        cap: 10_000,
        jitter: Jitter::Full,
    };
    const DECORRELATED: BackoffSettings = BackoffSettings {
        jitter: Jitter::Decorrelated,
        ..FULL
    };

    fn delays(settings: BackoffSettings, seed: u64, count: usize) -> Vec<Millis> {
        let mut backoff = Backoff::new(settings, seed);
        (0..count).map(|_| backoff.next_delay()).collect()
    }

    /// The mean delay of attempt `n` over many seeds.
    fn mean_at(settings: BackoffSettings, n: usize) -> f64 {
        let sum: u64 = (0..2000).map(|seed| delays(settings, seed, n + 1)[n]).sum();
        sum as f64 / 2000.0
    }

    #[test]
    fn full_jitter_stays_under_the_doubling_ceiling_and_the_cap() {
        for seed in 0..200 {
            for (n, delay) in delays(FULL, seed, 40).into_iter().enumerate() {
                let ceiling = (100u64 << n.min(20)).min(10_000);
                assert!(delay <= ceiling, "seed {seed} attempt {n}: {delay}");
            }
        }
    }

    #[test]
    fn decorrelated_jitter_stays_between_base_and_cap() {
        for seed in 0..200 {
            let mut previous = 100;
            for delay in delays(DECORRELATED, seed, 40) {
                assert!((100..=10_000).contains(&delay), "seed {seed}: {delay}");
                assert!(delay <= previous * 3);
                previous = delay;
            }
        }
    }

    #[test]
    fn delays_grow_until_the_cap() {
        // Full jitter: the mean is half the ceiling, which doubles.
        let means: Vec<f64> = (0..5).map(|n| mean_at(FULL, n)).collect();
        for pair in means.windows(2) {
            let growth = pair[1] / pair[0];
            assert!((1.8..2.2).contains(&growth), "{means:?}");
        }
        assert!((4_700.0..5_300.0).contains(&mean_at(FULL, 12)));
        let early = mean_at(DECORRELATED, 0);
        let later = mean_at(DECORRELATED, 4);
        assert!(later > 3.0 * early, "{early} {later}");
        // It settles near half the cap (5.3 s measured): a delay drawn low
        // pulls the next ones down.
        let settled = mean_at(DECORRELATED, 30);
        assert!((4_500.0..6_000.0).contains(&settled), "{settled}");
    }

    #[test]
    fn reset_starts_over() {
        for settings in [FULL, DECORRELATED] {
            let mut backoff = Backoff::new(settings, 7);
            for _ in 0..30 {
                backoff.next_delay();
            }
            assert_eq!(backoff.attempts(), 30);
            backoff.reset();
            assert_eq!(backoff.attempts(), 0);
            let delay = backoff.next_delay();
            assert!(delay <= 300, "{settings:?}: {delay}");
        }
    }

    #[test]
    fn a_seed_fixes_the_delays() {
        assert_eq!(delays(FULL, 42, 20), delays(FULL, 42, 20));
        assert_ne!(delays(FULL, 42, 20), delays(FULL, 43, 20));
        assert_eq!(delays(DECORRELATED, 1, 20), delays(DECORRELATED, 1, 20));
    }

    #[test]
    fn endless_failures_never_overflow() {
        let big = BackoffSettings {
            base: 3_600_000,
            cap: 3_600_000,
            jitter: Jitter::Full,
        };
        let mut backoff = Backoff::new(big, 0);
        for _ in 0..100_000 {
            assert!(backoff.next_delay() <= 3_600_000);
        }
        assert_eq!(backoff.attempts(), 100_000);
    }

    #[test]
    fn equal_base_and_cap_is_a_fixed_ceiling() {
        let fixed = BackoffSettings {
            base: 500,
            cap: 500,
            jitter: Jitter::Decorrelated,
        };
        assert!(delays(fixed, 3, 10).iter().all(|&d| d == 500));
    }

    proptest! {
        #[test]
        fn any_settings_keep_the_bounds(
            base in 1u64..5_000,
            extra in 0u64..100_000,
            decorrelated in any::<bool>(),
            seed in any::<u64>(),
            resets in prop::collection::vec(any::<bool>(), 1..100),
        ) {
            let jitter = if decorrelated { Jitter::Decorrelated } else { Jitter::Full };
            let settings = BackoffSettings { base, cap: base + extra, jitter };
            let mut backoff = Backoff::new(settings, seed);
            for reset in resets {
                let attempt = backoff.attempts();
                let delay = backoff.next_delay();
                prop_assert!(delay <= settings.cap);
                if decorrelated {
                    prop_assert!(delay >= base);
                } else if attempt < 20 {
                    prop_assert!(delay <= base << attempt);
                }
                if reset {
                    backoff.reset();
                }
            }
        }
    }
}
