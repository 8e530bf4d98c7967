//! The hashed wheel.

use super::Millis;

/// Identifies a scheduled entry, for [`Wheel::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerKey(pub(crate) usize);

/// A hashed timer wheel of `slots` slots of `tick_ms` each.
///
/// Entries never fire early: an entry fires on the first `advance(now)` with
/// `now >= deadline`, at most one tick late.
pub struct Wheel<T> {
    _todo: std::marker::PhantomData<T>,
}

impl<T: Copy> Wheel<T> {
    /// A wheel starting at time 0. Panics unless `slots` is a power of two
    /// and `tick_ms > 0`.
    pub fn new(tick_ms: Millis, slots: usize) -> Wheel<T> {
        let _ = (tick_ms, slots);
        todo!()
    }
    /// Schedules `value` to fire at `deadline` (a deadline in the past fires
    /// on the next `advance`).
    pub fn schedule(&mut self, deadline: Millis, value: T) -> TimerKey {
        let _ = (deadline, value);
        todo!()
    }
    /// Removes an entry that has not fired; returns its value, or `None` if
    /// the key already fired or was cancelled (a stale key never touches
    /// another entry).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let _ = key;
        todo!()
    }
    /// Moves time to `now` and appends every due entry's value to `expired`.
    pub fn advance(&mut self, now: Millis, expired: &mut Vec<T>) {
        let _ = (now, expired);
        todo!()
    }
    /// A lower bound on the next deadline (the start of the first tick with
    /// an entry, within one rotation; the end of the rotation if entries are
    /// further away), or `None` when the wheel is empty. For the poll timeout.
    pub fn next_expiry(&self) -> Option<Millis> {
        todo!()
    }
    /// Entries scheduled and not fired or cancelled.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
