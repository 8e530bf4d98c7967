//! A circuit breaker per upstream: stop sending requests to an upstream
//! that is failing, so that clients get an error at once instead of
//! queueing behind it, and try it again a little at a time.
//!
//! ```text
//!            failure ratio reached over the window (with enough requests),
//!            or `connect_failures` connect failures in a row
//!   Closed ───────────────────────────────────────────────▶ Open
//!     ▲                                                  │    ▲
//!     │ `probes` successes             cool-down elapsed │    │ a probe fails
//!     │                                (at the next      ▼    │
//!     └───────────────────────────────── allow) ────── HalfOpen
//! ```
//!
//! The caller asks [`Breaker::allow`] before sending and reports each
//! outcome with [`Breaker::on_success`] or [`Breaker::on_failure`]. Time is
//! passed in, so the breaker never reads a clock, and it holds a fixed
//! array of counts: no allocation, no lock.
//!
//! Outcomes that arrive while the breaker is open (replies to requests let
//! through before it opened) are ignored: they neither close it nor extend
//! the cool-down. Such a reply can still arrive during half-open and count
//! as a probe's outcome; the upstream timeout, shorter than the cool-down,
//! keeps that rare.

pub use crate::config::BreakerSettings;
use crate::engine::timer::Millis;

/// Buckets of the rolling window: with the default 10 s window, one per
/// second (Hystrix's `numBuckets`). Old counts leave the window one bucket
/// at a time, so the window spans between `window - window / BUCKETS` and
/// `window` of history.
pub const BUCKETS: usize = 10;

/// Where a breaker stands (declared with the other metric labels).
pub use crate::engine::metrics::BreakerState as State;

/// Why a request to an upstream failed, as the metrics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be made (refused, unreachable, timed out).
    Connect,
    /// The upstream did not answer within the upstream timeout.
    Timeout,
    /// The connection broke (reset, closed) with the request unanswered.
    Reset,
}

/// One upstream's circuit breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: State,
    /// Closed: the rolling window. Invariant: a bucket's counts belong to
    /// the period `epoch` (time / bucket width).
    buckets: [Bucket; BUCKETS],
    /// Connect failures since the last success or connection made.
    connect_failures: u32,
    /// Open: when it opened.
    opened_at: Millis,
    /// HalfOpen: probes let through and probe successes so far.
    /// Invariant: `probe_successes <= probes_sent <= settings.probes`.
    probes_sent: u32,
    probe_successes: u32,
    /// The latest time seen, so that a clock read out of order never moves
    /// the window back.
    now: Millis,
    transitions: [[u64; 3]; 3],
}

impl Breaker {
    /// A closed breaker, with validated `settings`.
    pub fn new(settings: BreakerSettings) -> Breaker {
        debug_assert!(
            settings.failure_ratio > 0.0 && settings.probes > 0,
            "{settings:?}"
        );
        Breaker {
            settings,
            state: State::Closed,
            buckets: [Bucket::default(); BUCKETS],
            connect_failures: 0,
            opened_at: 0,
            probes_sent: 0,
            probe_successes: 0,
            now: 0,
            transitions: [[0; 3]; 3],
        }
    }

    /// Whether a request may go to the upstream now. Closed: yes. Open: no,
    /// until the cool-down has passed, when the breaker turns half-open.
    /// Half-open: yes for the first `probes` requests (each `true` takes a
    /// probe slot, so call it only for a request about to be sent), then no.
    ///
    /// Contract: every request let through gets exactly one outcome report
    /// (the upstream timeout guarantees one); a half-open breaker waits for
    /// its probes' outcomes and would otherwise refuse for ever.
    pub fn allow(&mut self, now: Millis) -> bool {
        let now = self.tick(now);
        if self.state == State::Open
            && now >= self.opened_at.saturating_add(self.settings.cool_down)
        {
            self.probes_sent = 0;
            self.probe_successes = 0;
            self.transition(State::HalfOpen);
        }
        match self.state {
            State::Closed => true,
            State::Open => false,
            State::HalfOpen if self.probes_sent < self.settings.probes => {
                self.probes_sent += 1;
                true
            }
            State::HalfOpen => false,
        }
    }

    /// A request was answered.
    pub fn on_success(&mut self, now: Millis) {
        let now = self.tick(now);
        self.connect_failures = 0;
        match self.state {
            State::Closed => {
                let bucket = self.bucket(now);
                bucket.successes = bucket.successes.saturating_add(1);
            }
            State::Open => {}
            State::HalfOpen => {
                self.probe_successes = (self.probe_successes + 1).min(self.probes_sent);
                if self.probe_successes >= self.settings.probes {
                    self.buckets = [Bucket::default(); BUCKETS];
                    self.transition(State::Closed);
                }
            }
        }
    }

    /// A request failed, or a connect attempt did: counted in the window;
    /// a connect failure also counts toward the run of
    /// [`BreakerSettings::connect_failures`]. Report one per failed connect
    /// attempt, not one per request that was waiting on it.
    pub fn on_failure(&mut self, now: Millis, kind: FailureKind) {
        let now = self.tick(now);
        if kind == FailureKind::Connect {
            self.connect_failures = self.connect_failures.saturating_add(1);
        }
        match self.state {
            State::Closed => {
                let bucket = self.bucket(now);
                bucket.failures = bucket.failures.saturating_add(1);
                if self.connect_failures >= self.settings.connect_failures || self.ratio_reached() {
                    self.open(now);
                }
            }
            State::Open => {}
            State::HalfOpen => self.open(now),
        }
    }

    /// A connection to the upstream was made: the run of connect failures
    /// ends (without counting a request in the window).
    pub fn on_connected(&mut self, now: Millis) {
        self.tick(now);
        self.connect_failures = 0;
    }

    /// The state as of the last call; an open breaker whose cool-down has
    /// passed turns half-open at the next [`Breaker::allow`].
    pub fn state(&self) -> State {
        self.state
    }

    #[cfg(test)]
    /// When an open breaker will let probes through; `None` unless open.
    pub fn open_until(&self) -> Option<Millis> {
        (self.state == State::Open).then(|| self.opened_at.saturating_add(self.settings.cool_down))
    }

    /// How many times the breaker went from `from` to `to`, for metrics.
    pub fn transitions(&self, from: State, to: State) -> u64 {
        self.transitions[from.index()][to.index()]
    }

    fn tick(&mut self, now: Millis) -> Millis {
        self.now = self.now.max(now);
        self.now
    }

    fn transition(&mut self, to: State) {
        self.transitions[self.state.index()][to.index()] += 1;
        self.state = to;
    }

    fn open(&mut self, now: Millis) {
        self.opened_at = now;
        self.connect_failures = 0;
        self.transition(State::Open);
    }

    fn width(&self) -> Millis {
        (self.settings.window / BUCKETS as Millis).max(1)
    }

    /// The bucket for `now`, emptied first if it held an older period.
    fn bucket(&mut self, now: Millis) -> &mut Bucket {
        let epoch = now / self.width();
        let bucket = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket
    }

    fn ratio_reached(&self) -> bool {
        let current = self.now / self.width();
        let (mut requests, mut failures) = (0u64, 0u64);
        for bucket in &self.buckets {
            if bucket.epoch + BUCKETS as u64 > current && bucket.epoch <= current {
                requests += u64::from(bucket.successes) + u64::from(bucket.failures);
                failures += u64::from(bucket.failures);
            }
        }
        requests >= u64::from(self.settings.min_requests)
            && failures as f64 >= self.settings.failure_ratio * requests as f64
    }
}

/// Outcomes counted in one period of the window.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    successes: u32,
    failures: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: BreakerSettings = BreakerSettings {
        window: 10_000,
        failure_ratio: 0.5,
        min_requests: 20,
        connect_failures: 3,
        cool_down: 5_000,
        probes: 3,
    };

    fn outcomes(breaker: &mut Breaker, now: Millis, successes: u32, failures: u32) {
        for _ in 0..successes {
            breaker.on_success(now);
        }
        for _ in 0..failures {
            breaker.on_failure(now, FailureKind::Timeout);
        }
    }

    /// A breaker opened at `at` by failed requests.
    fn opened(at: Millis) -> Breaker {
        let mut breaker = Breaker::new(S);
        outcomes(&mut breaker, at, 0, 20);
        assert_eq!(breaker.state(), State::Open);
        breaker
    }

    #[test]
    fn closed_lets_everything_through() {
        let mut breaker = Breaker::new(S);
        outcomes(&mut breaker, 0, 100, 19);
        assert!((0..1000).all(|t| breaker.allow(t)));
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn opens_when_the_ratio_is_reached_with_enough_requests() {
        let mut breaker = Breaker::new(S);
        outcomes(&mut breaker, 100, 10, 9);
        assert_eq!(breaker.state(), State::Closed, "19 requests: too few");
        breaker.on_failure(200, FailureKind::Reset);
        assert_eq!(breaker.state(), State::Open, "10 of 20 failed");
        assert!(!breaker.allow(200));
        assert_eq!(breaker.transitions(State::Closed, State::Open), 1);
    }

    #[test]
    fn stays_closed_below_the_ratio() {
        let mut breaker = Breaker::new(S);
        outcomes(&mut breaker, 0, 1000, 999);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn stays_closed_below_min_requests() {
        let mut breaker = Breaker::new(S);
        outcomes(&mut breaker, 0, 0, 19);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn failures_leave_the_window() {
        // 19 failures at t=0 sit in bucket 0 (0..1000 ms): still counted at
        // 9999 ms, gone at 10000 ms.
        let mut breaker = Breaker::new(S);
        outcomes(&mut breaker, 0, 0, 19);
        breaker.on_failure(9_999, FailureKind::Timeout);
        assert_eq!(breaker.state(), State::Open);
        let mut breaker = Breaker::new(S);
        outcomes(&mut breaker, 0, 0, 19);
        breaker.on_failure(10_000, FailureKind::Timeout);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn a_reused_bucket_forgets_its_old_period() {
        let mut breaker = Breaker::new(S);
        outcomes(&mut breaker, 500, 0, 15);
        // 20_500 maps to the same slot as 500, two windows later.
        outcomes(&mut breaker, 20_500, 0, 15);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn opens_after_consecutive_connect_failures() {
        let mut breaker = Breaker::new(S);
        breaker.on_failure(0, FailureKind::Connect);
        breaker.on_failure(10, FailureKind::Connect);
        assert_eq!(breaker.state(), State::Closed);
        breaker.on_failure(20, FailureKind::Connect);
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn a_success_or_a_connection_ends_the_connect_failure_run() {
        // Connect failures count in the window too: keep the ratio out.
        let mut breaker = Breaker::new(BreakerSettings {
            min_requests: 1000,
            ..S
        });
        for t in 0..10 {
            breaker.on_failure(t, FailureKind::Connect);
            breaker.on_failure(t, FailureKind::Connect);
            if t % 2 == 0 {
                breaker.on_success(t);
            } else {
                breaker.on_connected(t);
            }
        }
        // Timeouts are failures but not connect failures.
        breaker.on_failure(10, FailureKind::Connect);
        breaker.on_failure(10, FailureKind::Timeout);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn open_fails_fast_until_the_cool_down_ends() {
        let mut breaker = opened(1_000);
        assert_eq!(breaker.open_until(), Some(6_000));
        assert!(!breaker.allow(1_000));
        assert!(!breaker.allow(5_999));
        assert_eq!(breaker.state(), State::Open);
        assert!(breaker.allow(6_000));
        assert_eq!(breaker.state(), State::HalfOpen);
        assert_eq!(breaker.open_until(), None);
    }

    #[test]
    fn half_open_lets_only_the_probes_through() {
        let mut breaker = opened(0);
        assert_eq!((0..10).filter(|_| breaker.allow(5_000)).count(), 3);
        assert_eq!(breaker.state(), State::HalfOpen);
    }

    #[test]
    fn probe_successes_close_it() {
        let mut breaker = opened(0);
        for _ in 0..3 {
            assert!(breaker.allow(5_000));
        }
        breaker.on_success(5_001);
        breaker.on_success(5_002);
        assert_eq!(breaker.state(), State::HalfOpen);
        breaker.on_success(5_003);
        assert_eq!(breaker.state(), State::Closed);
        assert!(breaker.allow(5_004));
        // The window restarted empty: the failures that opened it are gone.
        outcomes(&mut breaker, 5_005, 0, 19);
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.transitions(State::HalfOpen, State::Closed), 1);
    }

    #[test]
    fn a_probe_failure_reopens_with_a_fresh_cool_down() {
        let mut breaker = opened(0);
        assert!(breaker.allow(5_000));
        assert!(breaker.allow(5_000));
        breaker.on_success(5_100);
        breaker.on_failure(5_200, FailureKind::Timeout);
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(breaker.open_until(), Some(10_200));
        assert!(!breaker.allow(10_199));
        assert!(breaker.allow(10_200));
        assert_eq!(breaker.transitions(State::HalfOpen, State::Open), 1);
        assert_eq!(breaker.transitions(State::Open, State::HalfOpen), 2);
    }

    #[test]
    fn late_outcomes_while_open_change_nothing() {
        let mut breaker = opened(0);
        outcomes(&mut breaker, 100, 50, 50);
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(breaker.open_until(), Some(5_000));
    }

    #[test]
    fn time_going_back_is_taken_as_now() {
        let mut breaker = opened(10_000);
        assert!(!breaker.allow(0));
        assert!(!breaker.allow(14_999));
        assert!(breaker.allow(15_000));
        assert!(breaker.allow(3));
    }

    #[test]
    fn a_success_beyond_the_probes_sent_does_not_count() {
        // A reply to a request let through before the breaker opened can
        // arrive during half-open: it cannot stand for a probe not sent.
        let mut breaker = opened(0);
        assert!(breaker.allow(5_000));
        for _ in 0..5 {
            breaker.on_success(5_001);
        }
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(breaker.allow(5_002) && breaker.allow(5_002));
        breaker.on_success(5_003);
        breaker.on_success(5_003);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn transitions_are_counted_per_pair() {
        let mut breaker = opened(0);
        breaker.allow(5_000);
        breaker.on_failure(5_000, FailureKind::Reset);
        for _ in 0..3 {
            assert!(breaker.allow(10_000));
            breaker.on_success(10_000);
        }
        let counts: Vec<u64> = State::ALL
            .iter()
            .flat_map(|&from| State::ALL.map(|to| breaker.transitions(from, to)))
            .collect();
        // closed→open, open→half_open ×2, half_open→open, half_open→closed.
        assert_eq!(counts, [0, 1, 0, 0, 0, 2, 1, 1, 0]);
        assert_eq!(State::HalfOpen.name(), "half_open");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Allow,
        Success,
        Failure(FailureKind),
        Connected,
    }

    fn op() -> impl Strategy<Value = (u64, Op)> {
        let kind = prop_oneof![
            Just(FailureKind::Connect),
            Just(FailureKind::Timeout),
            Just(FailureKind::Reset)
        ];
        (
            0u64..3_000,
            prop_oneof![
                Just(Op::Allow),
                Just(Op::Success),
                kind.prop_map(Op::Failure),
                Just(Op::Connected)
            ],
        )
    }

    proptest! {
        #[test]
        fn any_history_keeps_the_invariants(ops in prop::collection::vec(op(), 0..400)) {
            let settings = BreakerSettings { min_requests: 5, cool_down: 2_000, ..S };
            let mut breaker = Breaker::new(settings);
            let mut now = 0;
            for (step, op) in ops {
                now += step;
                let before = breaker.state();
                match op {
                    Op::Allow => {
                        let allowed = breaker.allow(now);
                        prop_assert_eq!(allowed, match breaker.state() {
                            State::Closed => true,
                            State::Open => false,
                            State::HalfOpen => allowed,
                        });
                        if before == State::Open && breaker.state() == State::Open {
                            prop_assert!(breaker.open_until().unwrap() > now);
                        }
                    }
                    Op::Success => breaker.on_success(now),
                    Op::Failure(kind) => breaker.on_failure(now, kind),
                    Op::Connected => breaker.on_connected(now),
                }
                prop_assert!(breaker.probe_successes <= breaker.probes_sent);
                prop_assert!(breaker.probes_sent <= settings.probes);
                let into_open: u64 = State::ALL.iter().map(|&s| breaker.transitions(s, State::Open)).sum();
                let out_of_open: u64 = State::ALL.iter().map(|&s| breaker.transitions(State::Open, s)).sum();
                prop_assert_eq!(into_open - out_of_open, u64::from(breaker.state() == State::Open));
            }
        }
    }
}
