//! A token bucket in whole milliseconds and thousandths of a token, so it
//! is exact in integers: `rate` tokens a second is `rate` thousandths a
//! millisecond.

use crate::engine::timer::Millis;

/// Thousandths of a token in one token.
const MILLI: u64 = 1000;

/// A rate and the bucket's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: u32,
    /// The most tokens the bucket holds (what may be spent at once).
    pub burst: u32,
}

impl Rate {
    /// `per_second` with a bucket of `burst` (0: one second's worth);
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<Rate> {
        let burst = if burst == 0 { per_second } else { burst };
        (per_second > 0).then_some(Rate { per_second, burst })
    }

    /// The most thousandths a bucket holds: `burst` whole tokens and the
    /// fraction of the next one, so that asking often loses no fraction
    /// to the cap.
    fn capacity(self) -> u64 {
        u64::from(self.burst) * MILLI + MILLI - 1
    }
}

/// A bucket's tokens as of a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Thousandths of a token.
    milli: u64,
    /// When `milli` was last brought up to date.
    at: Millis,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(rate: Rate, now: Millis) -> Bucket {
        Bucket {
            milli: u64::from(rate.burst) * MILLI,
            at: now,
        }
    }

    /// Adds what `rate` earned since the last refill, up to the capacity.
    fn refill(&mut self, rate: Rate, now: Millis) {
        let earned = now.saturating_sub(self.at) * u64::from(rate.per_second);
        self.milli = (self.milli + earned).min(rate.capacity());
        self.at = self.at.max(now);
    }

    /// Spends one token at `now` if there is one.
    pub fn take(&mut self, rate: Rate, now: Millis) -> bool {
        self.refill(rate, now);
        if self.milli < MILLI {
            return false;
        }
        self.milli -= MILLI;
        true
    }

    /// Spends up to `wanted` whole tokens at `now`; returns how many.
    pub fn take_up_to(&mut self, rate: Rate, now: Millis, wanted: u64) -> u64 {
        self.refill(rate, now);
        let taken = (self.milli / MILLI).min(wanted);
        self.milli -= taken * MILLI;
        taken
    }

    /// Whole tokens there are at `now` (without spending them).
    pub fn tokens(&mut self, rate: Rate, now: Millis) -> u64 {
        self.refill(rate, now);
        self.milli / MILLI
    }

    /// When the next whole token will be there (`now` if one is).
    pub fn next_token(&self, rate: Rate, now: Millis) -> Millis {
        self.ready_at(rate, now, 1)
    }

    /// When `tokens` whole tokens (at most the burst) will be there.
    pub fn ready_at(&self, rate: Rate, now: Millis, tokens: u64) -> Millis {
        let mut bucket = *self;
        bucket.refill(rate, now);
        let wanted = tokens.clamp(1, u64::from(rate.burst)) * MILLI;
        let missing = wanted.saturating_sub(bucket.milli);
        now + missing.div_ceil(u64::from(rate.per_second))
    }

    /// Whether the bucket is full at `now` (it then remembers nothing a
    /// fresh one would not).
    pub fn is_full(&mut self, rate: Rate, now: Millis) -> bool {
        self.refill(rate, now);
        self.milli >= u64::from(rate.burst) * MILLI
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let rate = Rate::new(50, 10).unwrap();
        let mut bucket = Bucket::full(rate, 0);
        let burst = (0..20).filter(|_| bucket.take(rate, 0)).count();
        assert_eq!(burst, 10);
        // 50 a second is one every 20 ms.
        assert_eq!(bucket.next_token(rate, 0), 20);
        assert!(!bucket.take(rate, 19));
        assert!(bucket.take(rate, 20));
        // Over 10 s of asking every millisecond: exactly 500 more.
        let paced = (21..10_021).filter(|&now| bucket.take(rate, now)).count();
        assert_eq!(paced, 500);
        // A long pause refills to the burst, no more.
        assert_eq!(bucket.tokens(rate, 1_000_000), 10);
        assert!(bucket.is_full(rate, 1_000_000));
    }

    #[test]
    fn fractions_of_a_millisecond_add_up() {
        // 3 a second: a token every 333.3 ms, none lost to rounding.
        let rate = Rate::new(3, 1).unwrap();
        let mut bucket = Bucket::full(rate, 0);
        let taken = (0..=60_000).filter(|&now| bucket.take(rate, now)).count();
        assert_eq!(taken, 1 + 180);
        assert_eq!(bucket.take_up_to(rate, 70_000, 5), 1);
        assert_eq!(Rate::new(0, 5), None);
        assert_eq!(Rate::new(7, 0).unwrap().burst, 7);
        // The time never runs backwards for a bucket.
        let mut late = Bucket::full(rate, 100);
        assert!(late.take(rate, 50));
        assert!(!late.take(rate, 60));
    }
}
