//! Accept pacing shared by the drivers and the admin endpoint
//! (`engine/admin.rs`): fd exhaustion handled without ever spinning (shed
//! one waiting connection, then pause with a back-off that a closing
//! connection ends early), and rate-limited warnings.

use std::fs::File;
use std::io;

use crate::engine::metrics::{RejectReason, ShardMetrics};
use crate::engine::sys;
use crate::engine::timer::Millis;

/// First pause after EMFILE/ENFILE; doubled on each repeat.
const FD_BACKOFF_FIRST: Millis = 10;
/// Longest pause after EMFILE/ENFILE (a closing connection ends it early).
const FD_BACKOFF_MAX: Millis = 1_000;
/// At most one warning line per this many milliseconds per shard; the ones
/// held back are counted in the next.
const WARN_INTERVAL: Millis = 1_000;

/// The accept side of a shard or of the admin endpoint.
pub struct Acceptor {
    /// The listener may have connections waiting (edge-triggered: set by a
    /// readable event, cleared by EAGAIN).
    pub ready: bool,
    /// Accepting is paused until then (after fd exhaustion).
    paused_until: Option<Millis>,
    backoff: Millis,
    /// Kept open so that under EMFILE one fd can be freed to accept and
    /// close a waiting connection.
    spare: Option<File>,
    warn: RateLimit,
    /// What the warnings name: `accept` for a shard, `admin accept`.
    what: &'static str,
}

impl Acceptor {
    /// A shard's: ready to accept, with a spare fd.
    pub fn new() -> io::Result<Acceptor> {
        Acceptor::named("accept")
    }

    /// Ready to accept, with a spare fd; warnings start with `what`.
    pub fn named(what: &'static str) -> io::Result<Acceptor> {
        Ok(Acceptor {
            ready: true,
            paused_until: None,
            backoff: FD_BACKOFF_FIRST,
            spare: Some(sys::spare_fd()?),
            warn: RateLimit::default(),
            what,
        })
    }

    /// Whether to try accepting on this turn.
    pub fn due(&self, now: Millis) -> bool {
        self.ready && self.paused_until.is_none_or(|until| now >= until)
    }

    /// When a pause ends, for the poll timeout.
    pub fn resume_at(&self) -> Option<Millis> {
        self.paused_until.filter(|_| self.ready)
    }

    /// A connection closed and freed an fd: end any pause now.
    pub fn on_close(&mut self) {
        if self.paused_until.is_some() {
            self.paused_until = Some(0);
        }
    }
}

impl Acceptor {
    /// A connection was accepted: the fd back-off starts over.
    pub fn on_accepted(&mut self) {
        self.backoff = FD_BACKOFF_FIRST;
    }

    /// Starts a turn of accepting (its pause, if any, is over).
    pub fn begin(&mut self) {
        self.paused_until = None;
    }

    /// A shard's accept error: [`Acceptor::on_error_uncounted`], with a
    /// shed connection counted as rejected for `fd_limit`.
    pub fn on_error(
        &mut self,
        error: &io::Error,
        now: Millis,
        metrics: &ShardMetrics,
        shed_one: impl FnOnce() -> bool,
    ) -> bool {
        self.on_error_uncounted(error, now, || {
            let shed = shed_one();
            if shed {
                metrics.rejected[RejectReason::FdLimit.index()].inc();
            }
            shed
        })
    }

    /// Handles an accept error at `now`. Fd exhaustion frees the spare fd
    /// so that `shed_one` can accept one waiting connection and close it
    /// (the backlog shrinks instead of the listener staying ready forever),
    /// then pauses with a doubling back-off; a peer that gave up before we
    /// accepted is nothing; anything else pauses briefly. Warnings are rate
    /// limited. Returns true if accepting may go on at once.
    pub fn on_error_uncounted(
        &mut self,
        error: &io::Error,
        now: Millis,
        shed_one: impl FnOnce() -> bool,
    ) -> bool {
        let what = self.what;
        if sys::is_fd_exhaustion(error) {
            drop(self.spare.take());
            shed_one();
            // Another shard may take the freed fd first; then try again on
            // the next shed.
            self.spare = sys::spare_fd().ok();
            let pause = self.backoff;
            self.paused_until = Some(now + pause);
            self.backoff = (pause * 2).min(FD_BACKOFF_MAX);
            if let Some(held) = self.warn.allow(now) {
                log::warn!(
                    "{what}: {error}: shedding new connections, pausing accept for {pause}ms \
                     ({held} similar warnings held back)"
                );
            }
            return false;
        }
        // The peer gave up before we accepted (ECONNABORTED and the like):
        // nothing to do for it.
        if is_transient(error) {
            return true;
        }
        if let Some(held) = self.warn.allow(now) {
            log::warn!("{what}: {error} ({held} similar warnings held back)");
        }
        self.paused_until = Some(now + FD_BACKOFF_FIRST);
        false
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR)
    )
}

/// Lets a repeated warning through at most once per [`WARN_INTERVAL`].
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Millis>,
    held: u64,
}

impl RateLimit {
    /// `Some(number held back since the last one)` if a line may be logged
    /// now.
    fn allow(&mut self, now: Millis) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + WARN_INTERVAL) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_holds_back_and_counts() {
        let mut limit = RateLimit::default();
        assert_eq!(limit.allow(0), Some(0));
        assert_eq!(limit.allow(10), None);
        assert_eq!(limit.allow(999), None);
        assert_eq!(limit.allow(1_000), Some(2));
        assert_eq!(limit.allow(1_001), None);
    }
}
