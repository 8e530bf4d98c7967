//! `--request-rate`: each connection's frames a second, a token bucket per
//! connection (by table slot). A connection over it is parked: it is not
//! read from or served until enough tokens are back, so TCP pushes back on
//! its client; nothing is dropped, and nothing is held beyond its rings.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::bucket::{Bucket, Rate};
use crate::config::Config;
use crate::engine::driver::Token;
use crate::engine::timer::Millis;

/// A parked connection is woken once this much of its rate is back (at
/// most its burst), so a connection held to its rate is woken about a
/// hundred times a second, not once per frame.
const WAKE_SHARE: u32 = 100;

/// One shard's frame rates.
pub struct Throttle {
    rate: Rate,
    /// Each connection's bucket, by table slot.
    buckets: Vec<Bucket>,
    /// Parked connections: when to wake each, and since when it waits.
    /// Each live connection is here at most once (`Conn::throttled`);
    /// one closed meanwhile stays until its time and is then skipped.
    parked: BinaryHeap<Reverse<(Millis, Token, Millis)>>,
}

impl Throttle {
    /// The rate `config` asks for, if any.
    pub fn new(config: &Config) -> Option<Throttle> {
        Some(Throttle {
            rate: Rate::new(config.request_rate, config.request_burst)?,
            buckets: Vec::new(),
            parked: BinaryHeap::new(),
        })
    }

    /// A reload's new rate: each bucket keeps its tokens (up to the new
    /// burst) and earns at the new rate from its next refill.
    pub fn set_rate(&mut self, rate: Rate) {
        self.rate = rate;
    }

    /// Every parked connection, unparked (a reload changed the rate: each
    /// is served again and parked anew at the new rate if still over it).
    pub fn take_parked(&mut self) -> Vec<Token> {
        let parked = std::mem::take(&mut self.parked);
        parked
            .into_iter()
            .map(|Reverse((_, token, _))| token)
            .collect()
    }

    /// A connection took table slot `slot` at `now`: a full bucket.
    pub fn seat(&mut self, slot: usize, now: Millis) {
        if self.buckets.len() <= slot {
            self.buckets.resize(slot + 1, Bucket::full(self.rate, now));
        }
        self.buckets[slot] = Bucket::full(self.rate, now);
    }

    /// The frames the connection in `slot` may be served at `now`.
    pub fn frames(&mut self, slot: usize, now: Millis) -> usize {
        let rate = self.rate;
        let bucket = &mut self.buckets[slot];
        bucket.tokens(rate, now).try_into().unwrap_or(usize::MAX)
    }

    /// The connection in `slot` was served `frames` frames at `now`.
    pub fn spend(&mut self, slot: usize, frames: usize, now: Millis) {
        let rate = self.rate;
        let taken = self.buckets[slot].take_up_to(rate, now, frames as u64);
        debug_assert_eq!(
            taken, frames as u64,
            "served more frames than it had tokens"
        );
    }

    /// The connection `token` in `slot` is parked at `now`, until a share
    /// of its rate is back.
    pub fn park(&mut self, token: Token, slot: usize, now: Millis) {
        let share = u64::from((self.rate.per_second / WAKE_SHARE).max(1));
        let wake = self.buckets[slot].ready_at(self.rate, now, share);
        self.parked.push(Reverse((wake, token, now)));
    }

    /// When the first parked connection is to be woken.
    pub fn next_wake(&self) -> Option<Millis> {
        self.parked.peek().map(|Reverse((wake, _, _))| *wake)
    }

    /// A parked connection whose time has come at `now`, and how long it
    /// waited.
    pub fn wake(&mut self, now: Millis) -> Option<(Token, Millis)> {
        if self.next_wake()? > now {
            return None;
        }
        let Reverse((_, token, since)) = self.parked.pop()?;
        Some((token, now.saturating_sub(since)))
    }
}
