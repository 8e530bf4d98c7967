//! One client connection: its socket, its two rings (held only while they
//! hold bytes), where it is in its life, and the timestamps its deadlines
//! are computed from.

pub mod table;

pub use table::Table;

use crate::engine::buffer::Ring;
use crate::engine::driver::{Link, Reading, Socket};
use crate::engine::metrics::CloseReason;
use crate::engine::timer::{Millis, TimerKey};

/// Where a connection is in its life. Reading stops in every state but
/// `Open` and `DrainRead`; a connection in any state still gets every reply
/// to the frames it has sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Reading and serving.
    Open,
    /// The peer sent FIN: answer what was received, flush, close (`peer`).
    ReadClosed,
    /// Shutdown began: read what already reached the socket (to EAGAIN),
    /// then as `Drain`.
    DrainRead,
    /// Shutdown: answer what was received, flush, close (`shutdown`).
    Drain,
    /// Closing for this reason once the output is flushed; nothing more is
    /// read or served (a service asked to close, or the stream was corrupt).
    Closing(CloseReason),
    /// Our side is shut (FIN sent after the last reply); input is read and
    /// discarded until the peer's FIN or [`LINGER_MS`], then the connection
    /// closes for this reason. Closing a socket that still has unread input
    /// makes the kernel send a reset, which destroys replies the peer has
    /// not read yet; lingering lets them arrive (nginx's lingering close).
    Lingering(CloseReason),
    /// Closed and counted; the driver still has operations in flight on
    /// the socket (io_uring), so the socket and rings are released only
    /// when the last one completes. Nothing is read, served or written.
    Closed,
}

/// How long after its accept a connection that has sent nothing yet may
/// still send its first request once a drain has begun: it was accepted
/// to be served (its peer is most likely writing that request now), so
/// the drain answers it rather than closing it unheard, which would fail
/// the request of a client that did nothing wrong. Connections silent for
/// longer are idle ones, closed at once; the drain's grace bounds it all.
pub const DRAIN_FIRST_REQUEST_MS: Millis = 1_000;

/// How long a connection lingers after our FIN for the peer's, at most.
/// Two seconds is plenty for a peer that is reading to take its replies,
/// and bounds what one that keeps sending can cost.
pub const LINGER_MS: Millis = 2_000;

impl State {
    /// Whether the socket should be read in this state.
    pub fn reads(self) -> bool {
        matches!(self, State::Open | State::DrainRead | State::Lingering(_))
    }

    /// Whether received frames are still served in this state.
    pub fn serves(self) -> bool {
        !matches!(
            self,
            State::Closing(_) | State::Lingering(_) | State::Closed
        )
    }

    /// The reason to count when this connection closes once it has nothing
    /// left to do, or `None` while it may still receive frames.
    pub fn finished_reason(self) -> Option<CloseReason> {
        match self {
            State::Open | State::DrainRead | State::Lingering(_) | State::Closed => None,
            State::ReadClosed => Some(CloseReason::Peer),
            State::Drain => Some(CloseReason::Shutdown),
            State::Closing(reason) => Some(reason),
        }
    }
}

/// The time limits, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// No traffic at all for this long closes.
    pub idle: Millis,
    /// A started frame must complete within this.
    pub read: Millis,
    /// Pending output must make progress within this.
    pub write: Millis,
    /// Nothing received for this long sends a heartbeat ping; 0: none.
    pub heartbeat: Millis,
    /// Nothing received for this long after the ping closes.
    pub heartbeat_timeout: Millis,
    /// A PROXY header must be whole within this of the accept
    /// (`--proxy-timeout`).
    pub preamble: Millis,
}

/// What a connection's deadline brings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Close it for this reason.
    Close(CloseReason),
    /// Send it a heartbeat ping.
    Ping,
}

/// One connection.
///
/// Invariants: `input`/`output` are `Some` only while they hold bytes (or
/// within one drive of the loop), so an idle connection holds no ring;
/// `partial_since` is `Some` exactly when `input` holds an incomplete frame;
/// `timer` is the wheel entry for a time no later than [`Conn::deadline`].
pub struct Conn {
    /// The socket and the two rings, what the driver works on. (Whether
    /// the socket is readable or writable is the driver's to know.)
    pub link: Link,
    /// Life cycle.
    pub state: State,
    /// A read returned end of stream: the peer will send nothing more.
    pub eof: bool,
    /// Serving stopped because the output ring lacks room for the next
    /// reply: reading is paused until it drains (backpressure).
    pub output_blocked: bool,
    /// Serving stopped because `--max-pending` replies are awaited (from
    /// upstreams): reading is paused until one is written (backpressure).
    pub pending_full: bool,
    /// A served frame fenced the ones after it ([`crate::engine::service::Reply::fence`]):
    /// nothing more is served while replies before them are awaited (then
    /// `pending_full` holds reading too).
    pub fenced: bool,
    /// Already in the shard's queue of connections to drive again.
    pub queued: bool,
    /// Its PROXY header is still to come (`--proxy-protocol`): nothing is
    /// served, and `partial_since` is the accept.
    pub preamble: bool,
    /// Over `--request-rate`: nothing is read or served until its frame
    /// tokens return (the front door wakes it).
    pub throttled: bool,
    /// Waits for a unit of `--max-buffer-memory` (it holds no ring):
    /// nothing is read until the shard wakes it (`shard/memory.rs`).
    pub mem_wait: bool,
    /// Last time a byte was read or written.
    pub last_active: Millis,
    /// Last time a byte was read (heartbeats); the accept until one is.
    pub last_read: Millis,
    /// A byte has been read from the peer (see [`DRAIN_FIRST_REQUEST_MS`]).
    pub heard: bool,
    /// A heartbeat ping went out and nothing was read since.
    pub pinged: bool,
    /// In at least one group: the idle timeout does not apply (as Redis
    /// exempts its Pub/Sub clients); heartbeats find dead ones.
    pub grouped: bool,
    /// Pushes queued behind a full output ring (a slow consumer), in
    /// order; `None` for every connection keeping up.
    pub backlog: Option<Box<Backlog>>,
    /// When the incomplete frame at the front of `input` started.
    pub partial_since: Option<Millis>,
    /// Last time pending output made progress (or became pending).
    pub write_since: Millis,
    /// The decoder's scratch (see the codec contract).
    pub progress: usize,
    /// The wheel entry and the time it fires.
    pub timer: Option<(TimerKey, Millis)>,
}

impl Conn {
    /// A new open connection accepted at `now`.
    pub fn new(socket: Socket, now: Millis) -> Conn {
        Conn {
            link: Link::new(socket),
            state: State::Open,
            eof: false,
            output_blocked: false,
            pending_full: false,
            fenced: false,
            queued: false,
            preamble: false,
            throttled: false,
            mem_wait: false,
            last_active: now,
            last_read: now,
            heard: false,
            pinged: false,
            grouped: false,
            backlog: None,
            partial_since: None,
            write_since: now,
            progress: 0,
            timer: None,
        }
    }

    /// Whether the socket should be read now, if the driver knows of bytes
    /// waiting.
    pub fn wants_read(&self) -> bool {
        self.state.reads()
            && !self.output_blocked
            && !self.pending_full
            && !self.throttled
            && !self.mem_wait
            && !self.link.input.as_ref().is_some_and(Ring::is_full)
    }

    /// Draining, it waits for its first request: it has sent nothing since
    /// its accept, less than [`DRAIN_FIRST_REQUEST_MS`] before `now`.
    pub fn awaits_first_request(&self, now: Millis) -> bool {
        self.state == State::DrainRead && !self.heard && now < self.first_request_due()
    }

    /// When a draining connection that has sent nothing is given up on.
    fn first_request_due(&self) -> Millis {
        self.last_read + DRAIN_FIRST_REQUEST_MS
    }

    /// What the connection wants from its socket, for the driver.
    pub fn reading(&self) -> Reading {
        if !self.state.reads() {
            Reading::Stopped
        } else if self.output_blocked || self.pending_full || self.throttled || self.mem_wait {
            Reading::Paused
        } else {
            Reading::Open
        }
    }

    /// Bytes waiting to be written (the backlog's included).
    pub fn output_len(&self) -> usize {
        self.link.output.as_ref().map_or(0, Ring::len) + self.backlog.as_ref().map_or(0, |b| b.len)
    }

    /// The earliest deadline now in force and what it brings. Output that
    /// makes no progress is the write timeout's; an incomplete frame is
    /// the read timeout's, except while reading is paused for
    /// backpressure (a full output ring, `--max-pending` replies awaited,
    /// or `--request-rate`: then the peer is not the one stalling);
    /// otherwise the idle timeout's (not for a member of a group). With
    /// heartbeats, a silent peer is pinged, then closed if still silent. A
    /// lingering connection has only its linger deadline, one awaiting its
    /// PROXY header only that header's.
    pub fn deadline(&self, timeouts: &Timeouts) -> (Millis, Due) {
        if let State::Lingering(reason) = self.state {
            // Our FIN was the last write: the linger is counted from it,
            // and reading (discarding) does not extend it.
            return (self.write_since + LINGER_MS, Due::Close(reason));
        }
        if self.preamble {
            // The header's own deadline stands for the idle and read ones.
            let accepted = self.partial_since.unwrap_or(self.last_active);
            let due = Due::Close(CloseReason::ProxyTimeout);
            return (accepted + timeouts.preamble, due);
        }
        let mut deadline = (Millis::MAX, Due::Close(CloseReason::IdleTimeout));
        let mut tighten = |at: Millis, due: Due| {
            if at < deadline.0 {
                deadline = (at, due);
            }
        };
        if !self.grouped {
            tighten(
                self.last_active + timeouts.idle,
                Due::Close(CloseReason::IdleTimeout),
            );
        }
        if let Some(since) = self.partial_since
            && !self.output_blocked
            && !self.pending_full
            && !self.throttled
            && self.state.reads()
        {
            tighten(since + timeouts.read, Due::Close(CloseReason::ReadTimeout));
        }
        if self.output_len() > 0 {
            tighten(
                self.write_since + timeouts.write,
                Due::Close(CloseReason::WriteTimeout),
            );
        }
        if self.state == State::DrainRead && !self.heard {
            tighten(self.first_request_due(), Due::Close(CloseReason::Shutdown));
        }
        if timeouts.heartbeat > 0 && self.state.reads() {
            let ping_at = self.last_read + timeouts.heartbeat;
            if self.pinged {
                let reason = CloseReason::HeartbeatTimeout;
                tighten(ping_at + timeouts.heartbeat_timeout, Due::Close(reason));
            } else {
                tighten(ping_at, Due::Ping);
            }
        }
        deadline
    }
}

/// Pushed messages queued behind a full output ring, framed, in rings of
/// the shard's pool; moved into the output ring as it drains.
#[derive(Default)]
pub struct Backlog {
    /// The rings, oldest first.
    pub rings: std::collections::VecDeque<Ring>,
    /// Bytes they hold.
    pub len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection costs its `Conn`, a table entry and a wheel node
    /// (and under io_uring the driver's slot): this keeps the first within
    /// the budget that keeps an idle connection under 256 bytes of RSS on
    /// both drivers. (112: the socket, the two rings' boxes and the
    /// memory-budget flag, 24; the state and twelve flags, 14; five
    /// timestamps (one optional) and the decoder's progress, 48; the timer,
    /// 16, its key's non-zero generation standing for `None`; the push
    /// backlog's box, 8. Readiness is the driver's.)
    #[test]
    fn conn_stays_small() {
        assert!(
            std::mem::size_of::<Conn>() <= 112,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
