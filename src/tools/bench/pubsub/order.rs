//! The order check of one publisher's messages as one subscriber receives
//! them. A publisher numbers its messages to each channel 0, 1, 2, ...;
//! a subscriber of that channel must receive each once, in that order.
//!
//! Per (subscriber, publisher) the check keeps 24 bytes: the highest
//! number seen, which of the 64 numbers below it were seen (to tell a
//! duplicate from a late arrival), and how many distinct messages came.
//! What never came is counted at the end, against what the publisher
//! published ([`Order::distinct`]).

/// What one received message was, against the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next one: numbered one past the highest so far.
    InOrder,
    /// Numbered further on: `skipped` numbers in between have not come
    /// (lost so far; a late arrival may still fill them).
    Ahead {
        /// How many numbers it skipped.
        skipped: u64,
    },
    /// Numbered below one already received and not seen before: out of
    /// order. (More than 64 below the highest, a duplicate cannot be told
    /// from a late arrival; it counts as late.)
    Late,
    /// Seen before.
    Duplicate,
}

/// The bits of the window below the highest number seen.
const WINDOW: u64 = 64;

/// The messages of one publisher one subscriber has received.
#[derive(Clone, Copy, Debug, Default)]
pub struct Order {
    /// One past the highest number seen (0: none yet).
    high: u64,
    /// Bit `i`: number `high − 1 − i` was seen.
    seen: u64,
    /// Distinct messages received.
    distinct: u64,
}

impl Order {
    /// Records message `seq` and says what it was.
    pub fn observe(&mut self, seq: u64) -> Verdict {
        if seq >= self.high {
            let skipped = seq - self.high;
            let shift = skipped + 1;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            } | 1;
            self.high = seq + 1;
            self.distinct += 1;
            return if skipped == 0 {
                Verdict::InOrder
            } else {
                Verdict::Ahead { skipped }
            };
        }
        let back = self.high - 1 - seq;
        if back < WINDOW {
            let bit = 1u64 << back;
            if self.seen & bit != 0 {
                return Verdict::Duplicate;
            }
            self.seen |= bit;
        }
        self.distinct += 1;
        Verdict::Late
    }

    /// Distinct messages received.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> (Vec<Verdict>, u64) {
        let mut order = Order::default();
        let verdicts = seqs.iter().map(|&seq| order.observe(seq)).collect();
        (verdicts, order.distinct())
    }

    #[test]
    fn a_stream_in_order_is_all_in_order() {
        let seqs: Vec<u64> = (0..1000).collect();
        let (verdicts, distinct) = run(&seqs);
        assert!(verdicts.iter().all(|&v| v == Verdict::InOrder));
        assert_eq!(distinct, 1000);
    }

    #[test]
    fn a_gap_is_ahead_and_its_late_arrival_is_late_not_a_duplicate() {
        let (verdicts, distinct) = run(&[0, 3, 1, 2, 4, 1, 4]);
        use Verdict::*;
        assert_eq!(
            verdicts,
            [
                InOrder,
                Ahead { skipped: 2 },
                Late,
                Late,
                InOrder,
                Duplicate,
                Duplicate
            ]
        );
        assert_eq!(distinct, 5);
    }

    #[test]
    fn a_loss_leaves_distinct_short() {
        let (verdicts, distinct) = run(&[0, 1, 2, 5, 6]);
        assert_eq!(verdicts[3], Verdict::Ahead { skipped: 2 });
        assert_eq!(distinct, 5);
        // Message 3 and 4 of 7 never came: 7 - 5 missing.
    }

    #[test]
    fn the_window_reaches_back_64() {
        let mut order = Order::default();
        for seq in 0..200 {
            if seq != 100 {
                order.observe(seq);
            }
        }
        // 100 is 99 below the highest (199): past the window, so late.
        assert_eq!(order.observe(100), Verdict::Late);
        assert_eq!(order.observe(199 - 63), Verdict::Duplicate);
        assert_eq!(order.observe(0), Verdict::Late);
        let mut order = Order::default();
        order.observe(0);
        assert_eq!(order.observe(100), Verdict::Ahead { skipped: 99 });
        assert_eq!(order.observe(0), Verdict::Late);
    }
}
