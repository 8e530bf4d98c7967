//! Load shedding before collapse: a shard watches its own headroom and,
//! past a threshold, turns new connections away at once (accepted and
//! closed, counted) rather than take in work it cannot serve; it resumes
//! with hysteresis, once the signal is back under half its threshold.
//!
//! The signals, each off unless its threshold is set:
//! - the listener's accept queue (`--shed-accept-queue`): connections
//!   whose handshake completed and wait to be accepted, from the kernel
//!   ([`QueueProbe`]) every [`SAMPLE_MS`], counted down as the shard
//!   accepts them, plus those the driver already accepted and holds
//!   (io_uring's multishot accept empties the listener's queue into
//!   completions while the shard is busy);
//! - loop lag (`--shed-loop-lag`): the longest turn of the loop's work in
//!   the last [`SAMPLE_MS`] window (a stalled shard);
//! - fds left (`--shed-fds-left`): what RLIMIT_NOFILE leaves for more
//!   connections;
//! - buffer memory (`--shed-buffer-memory`): the percentage of
//!   `--max-buffer-memory` the shards have taken (`engine/memory.rs`), as
//!   of the accept.

use std::io;
use std::net::TcpListener;

use super::diag::QueueProbe;
use crate::config::Config;
use crate::engine::metrics::{RejectReason, ShardMetrics};
use crate::engine::timer::Millis;

/// How often the accept queue is asked for, and the span the loop lag is
/// the longest turn of.
pub const SAMPLE_MS: Millis = 10;

/// One signal's thresholds and state.
#[derive(Clone, Copy, Debug, Default)]
struct Trigger {
    /// Shedding starts above this.
    high: u64,
    /// Shedding on.
    on: bool,
}

impl Trigger {
    fn new(high: u64) -> Option<Trigger> {
        (high > 0).then_some(Trigger { high, on: false })
    }

    /// Judges `value`: on above `high`, off again at or below half of it.
    fn judge(&mut self, value: u64) -> bool {
        if value > self.high {
            self.on = true;
        } else if value <= self.high / 2 {
            self.on = false;
        }
        self.on
    }
}

/// One shard's load shedding.
pub struct Shed {
    queue: Option<(QueueProbe, Trigger)>,
    lag: Option<Trigger>,
    memory: Option<Trigger>,
    fds: Option<u64>,
    fds_on: bool,
    /// The accept queue as last sampled, less what was accepted since.
    waiting: u64,
    /// Connections the driver accepted and holds for the shard besides the
    /// listener's queue (io_uring's accept completions), as of this accept.
    pub pending: u64,
    /// The longest turn (µs) of the current and the last window.
    lag_window: u64,
    lag_last: u64,
    sampled_at: Millis,
}

impl Shed {
    /// The shedding `config` asks for, if any, watching `listener`.
    pub fn new(config: &Config, listener: &TcpListener) -> io::Result<Option<Shed>> {
        let queue = match Trigger::new(u64::from(config.shed_accept_queue)) {
            Some(trigger) => Some((QueueProbe::new(listener)?, trigger)),
            None => None,
        };
        let lag = Trigger::new(config.shed_loop_lag.as_micros() as u64);
        let fds = Some(config.shed_fds_left as u64).filter(|&n| n > 0);
        let memory = Trigger::new(u64::from(config.shed_buffer_memory));
        if queue.is_none() && lag.is_none() && fds.is_none() && memory.is_none() {
            return Ok(None);
        }
        Ok(Some(Shed {
            queue,
            lag,
            memory,
            fds,
            fds_on: false,
            waiting: 0,
            pending: 0,
            lag_window: 0,
            lag_last: 0,
            sampled_at: 0,
        }))
    }

    /// Whether it sheds on the accept queue's depth.
    pub fn watches_queue(&self) -> bool {
        self.queue.is_some()
    }

    /// Descriptors the probe holds (for the fd accounting).
    pub fn fds(&self) -> usize {
        usize::from(self.queue.is_some())
    }

    /// The end of a loop turn at `now` whose work took `work_us`: the lag
    /// window, and every [`SAMPLE_MS`] a fresh look at the accept queue;
    /// the gauges.
    pub fn turn(&mut self, now: Millis, work_us: u64, metrics: &ShardMetrics) {
        self.lag_window = self.lag_window.max(work_us);
        self.sample(now, metrics);
    }

    /// Every [`SAMPLE_MS`]: the lag window moves on and the accept queue is
    /// asked for again.
    fn sample(&mut self, now: Millis, metrics: &ShardMetrics) {
        if now < self.sampled_at + SAMPLE_MS {
            return;
        }
        self.sampled_at = now;
        self.lag_last = std::mem::take(&mut self.lag_window);
        if let Some((probe, _)) = self.queue.as_mut() {
            match probe.queue() {
                Ok(Some(queue)) => self.waiting = u64::from(queue.waiting),
                Ok(None) => self.waiting = 0,
                Err(error) => log::debug!("the accept queue's depth: {error}"),
            }
        }
        metrics.accept_queue.set(self.waiting);
        metrics.loop_lag_us.set(self.lag_last);
    }

    /// A connection was accepted at `now` while `fds_left` descriptors are
    /// left for connections and the rings hold `memory_pct` percent of the
    /// budget: whether to shed it, and for which signal. The first accept
    /// after a pause (a stall) looks at the queue afresh.
    pub fn judge(
        &mut self,
        now: Millis,
        fds_left: u64,
        memory_pct: u64,
        metrics: &ShardMetrics,
    ) -> Option<RejectReason> {
        let lag = self.lag_last.max(self.lag_window);
        self.sample(now, metrics);
        // On io_uring the kernel accepts for the shard while it is busy:
        // those wait among the completions, not in the listener's queue.
        let waiting = self.waiting + self.pending;
        self.waiting = self.waiting.saturating_sub(1);
        if self.queue.is_some() {
            metrics.accept_queue.set(waiting);
        }
        let mut reason = None;
        if let Some((_, trigger)) = self.queue.as_mut()
            && trigger.judge(waiting)
        {
            reason = Some(RejectReason::ShedQueue);
        }
        if let Some(trigger) = self.lag.as_mut()
            && trigger.judge(lag)
        {
            reason = reason.or(Some(RejectReason::ShedLag));
        }
        if let Some(low) = self.fds {
            // On below `low` left, off again at twice as many.
            self.fds_on = fds_left < low || (self.fds_on && fds_left < 2 * low);
            if self.fds_on {
                reason = reason.or(Some(RejectReason::ShedFds));
            }
        }
        if let Some(trigger) = self.memory.as_mut()
            && trigger.judge(memory_pct)
        {
            reason = reason.or(Some(RejectReason::ShedMemory));
        }
        metrics.fds_left.set(fds_left);
        metrics.shedding.set(u64::from(reason.is_some()));
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_starts_above_its_threshold_and_stops_at_half() {
        let mut trigger = Trigger::new(20).unwrap();
        let seen: Vec<bool> = [5, 20, 21, 15, 11, 10, 15, 21]
            .into_iter()
            .map(|value| trigger.judge(value))
            .collect();
        assert_eq!(seen, [false, false, true, true, true, false, false, true]);
        assert!(Trigger::new(0).is_none());
    }
}
