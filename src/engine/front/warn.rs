//! Warnings about refused connections, at most one a second per shard,
//! each naming the address it refused and how many were held back.

use crate::engine::timer::Millis;

/// At most one warning line per this many milliseconds.
const INTERVAL: Millis = 1_000;

/// Lets a warning through at most once per [`INTERVAL`].
#[derive(Debug, Default)]
pub struct Warn {
    last: Option<Millis>,
    held: u64,
}

impl Warn {
    /// Warns that a connection from `who` was refused because `why`,
    /// unless one was warned about less than a second ago (then it is
    /// counted in the next line).
    pub fn refused(&mut self, now: Millis, who: &str, why: &str) {
        if self.last.is_some_and(|last| now < last + INTERVAL) {
            self.held += 1;
            return;
        }
        self.last = Some(now);
        let held = std::mem::take(&mut self.held);
        log::warn!(
            "refused a connection from {who}: {why} ({held} more refused since the last warning)"
        );
    }
}
