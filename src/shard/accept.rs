//! Accepting: a batch per loop turn, the process-wide connection cap, and
//! fd exhaustion handled without ever spinning.

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;

use mio::Interest;

use super::Shard;
use crate::conn::Conn;
use crate::metrics::RejectReason;
use crate::sys;
use crate::timer::Millis;

/// First pause after EMFILE/ENFILE; doubled on each repeat.
const FD_BACKOFF_FIRST: Millis = 10;
/// Longest pause after EMFILE/ENFILE (a closing connection ends it early).
const FD_BACKOFF_MAX: Millis = 1_000;
/// At most one warning line per this many milliseconds per shard; the ones
/// held back are counted in the next.
const WARN_INTERVAL: Millis = 1_000;

/// The accept side of a shard.
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
}

impl Acceptor {
    /// Ready to accept, with a spare fd.
    pub fn new() -> io::Result<Acceptor> {
        Ok(Acceptor {
            ready: true,
            paused_until: None,
            backoff: FD_BACKOFF_FIRST,
            spare: Some(sys::spare_fd()?),
            warn: RateLimit::default(),
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

impl Shard {
    /// Accepts up to one batch of waiting connections.
    pub(super) fn accept_some(&mut self) {
        if !self.acceptor.due(self.now) {
            return;
        }
        self.acceptor.paused_until = None;
        for _ in 0..self.limits.accept_batch {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    self.acceptor.backoff = FD_BACKOFF_FIRST;
                    if self.open_total.fetch_add(1, Ordering::AcqRel) >= self.limits.max_conns {
                        self.open_total.fetch_sub(1, Ordering::AcqRel);
                        self.metrics.rejected[RejectReason::MaxConns.index()].inc();
                        drop(stream);
                        continue;
                    }
                    self.admit(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.acceptor.ready = false;
                    return;
                }
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    self.shed_one();
                    let pause = self.acceptor.backoff;
                    self.acceptor.paused_until = Some(self.now + pause);
                    self.acceptor.backoff = (pause * 2).min(FD_BACKOFF_MAX);
                    if let Some(held) = self.acceptor.warn.allow(self.now) {
                        log::warn!(
                            "accept: {e}: shedding new connections, pausing accept for {pause}ms \
                             ({held} similar warnings held back)"
                        );
                    }
                    return;
                }
                // The peer gave up before we accepted (ECONNABORTED and the
                // like): nothing to do for it.
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    if let Some(held) = self.acceptor.warn.allow(self.now) {
                        log::warn!("accept: {e} ({held} similar warnings held back)");
                    }
                    self.acceptor.paused_until = Some(self.now + FD_BACKOFF_FIRST);
                    return;
                }
            }
        }
    }

    /// Registers a new connection with the poller, the table and the wheel.
    fn admit(&mut self, stream: mio::net::TcpStream) {
        // Replies are written whole, so Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let now = self.now;
        let token = self.conns.insert(|_| Conn::new(stream, now));
        let conn = self.conns.get_mut(token).expect("just inserted");
        let registered = self.poll.registry().register(
            &mut conn.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            log::warn!("registering a connection with epoll: {e}");
            drop(self.conns.remove(token));
            self.open_total.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let deadline = now + self.timeouts.idle;
        conn.timer = Some((self.wheel.schedule(deadline, token), deadline));
        self.metrics.accepted.inc();
        // No read yet: registration reports any bytes that came with the
        // handshake as a first event.
    }

    /// Frees the spare fd to accept one waiting connection and close it, so
    /// the backlog shrinks instead of the listener staying readable forever.
    fn shed_one(&mut self) {
        drop(self.acceptor.spare.take());
        if let Some(listener) = self.listener.as_ref()
            && let Ok((stream, _)) = listener.accept()
        {
            drop(stream);
            self.metrics.rejected[RejectReason::FdLimit.index()].inc();
        }
        // Another shard may take the freed fd first; then try again on the
        // next shed.
        self.acceptor.spare = sys::spare_fd().ok();
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
