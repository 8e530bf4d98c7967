//! One publisher connection: PUBLISH to the channels in turn, each message
//! numbered per channel and stamped with its send time, flat out within a
//! window of undelivered messages or on a fixed schedule; every reply must
//! count the channel's subscribers.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::conn::{Failure, read_frames};
use super::wire::{self, Header};
use crate::engine::codec::reply::{self, Element};

/// Unsent bytes a publisher builds ahead of the socket: no more is built
/// until the socket has taken them.
const OUT_AHEAD_MAX: usize = 64 * 1024;

/// PUBLISH commands awaiting their reply per publisher at a fixed
/// `--rate`; a publisher at the bound falls behind its schedule.
pub const RATE_IN_FLIGHT_MAX: usize = 65_536;

/// How a publisher paces itself.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Flat out: at most `pipeline` messages in flight, a message being in
    /// flight until every subscriber of its channel has received it.
    Window {
        /// `--pipeline`.
        pipeline: usize,
    },
    /// One message every `interval`.
    Every {
        /// `--publishers` ÷ `--rate`.
        interval: Duration,
    },
}

/// What a publisher needs from the thread and the run.
pub struct Context<'a> {
    /// Confirmed subscribers per channel.
    pub fanout: &'a [u32],
    /// The largest of them.
    pub fanout_max: u64,
    /// `--size`.
    pub size: usize,
    /// The pace.
    pub pace: Pace,
    /// The run's clock: send times are ns since it.
    pub epoch: Instant,
}

/// What a thread's publishers count.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// PUBLISH commands answered, over the whole run.
    pub published_total: u64,
    /// PUBLISH commands answered in the measured window.
    pub published_window: u64,
    /// Replies whose receiver count was not the channel's confirmed
    /// subscribers.
    pub receivers_mismatch: u64,
    /// Deliveries the answered messages owe: the sum of their channels'
    /// subscribers.
    pub owed_total: u64,
}

/// One publisher.
pub struct Publisher {
    /// The socket; `None` once the connection failed.
    pub socket: Option<TcpStream>,
    /// Whether the connect has completed.
    pub open: bool,
    /// Its number, 0 to `--publishers` − 1.
    pub id: u32,
    /// The channel of its next message.
    next_channel: usize,
    /// The number of its next message, per channel.
    seq: Box<[u64]>,
    /// Messages the server has answered, per channel.
    pub answered: Box<[u64]>,
    /// Bytes built and not yet written, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// The channel of each PUBLISH awaiting its reply, oldest first.
    awaiting: VecDeque<u32>,
    /// The incomplete reply at the end of the last read.
    partial: Vec<u8>,
    /// Deliveries owed by the messages built so far (for the window).
    owed_built: u64,
    /// When the next message is due (with a fixed rate).
    pub due: Option<Instant>,
}

impl Publisher {
    /// Publisher `id` over `channels` channels, its connect in flight.
    pub fn new(socket: TcpStream, id: u32, channels: usize) -> Publisher {
        Publisher {
            socket: Some(socket),
            open: false,
            id,
            next_channel: id as usize % channels,
            seq: vec![0; channels].into_boxed_slice(),
            answered: vec![0; channels].into_boxed_slice(),
            out: Vec::new(),
            out_at: 0,
            awaiting: VecDeque::new(),
            partial: Vec::new(),
            owed_built: 0,
            due: None,
        }
    }

    /// Whether every message built has been written and answered.
    pub fn idle(&self) -> bool {
        self.awaiting.is_empty() && self.out_at == self.out.len()
    }

    /// Whether the window is what holds it back (so a delivery seen by
    /// another thread should wake this one).
    pub fn blocked_on_deliveries(&self, context: &Context<'_>, delivered: u64) -> bool {
        match context.pace {
            Pace::Window { pipeline } => {
                !self.window_open(pipeline, context.fanout_max, delivered)
                    && self.awaiting.len() < pipeline
            }
            Pace::Every { .. } => false,
        }
    }

    fn window_open(&self, pipeline: usize, fanout_max: u64, delivered: u64) -> bool {
        let undelivered = self.owed_built.saturating_sub(delivered);
        undelivered < pipeline as u64 * fanout_max.max(1)
    }

    /// Builds the messages its pace allows now (`delivered`: deliveries of
    /// its messages so far, every thread's subscribers counted) and writes
    /// what the socket takes.
    pub fn send(
        &mut self,
        context: &Context<'_>,
        delivered: u64,
        now: Instant,
    ) -> Result<(), Failure> {
        while self.out.len() - self.out_at < OUT_AHEAD_MAX && self.may_send(context, delivered, now)
        {
            self.build(context, now);
        }
        self.flush()
    }

    fn may_send(&self, context: &Context<'_>, delivered: u64, now: Instant) -> bool {
        match context.pace {
            Pace::Window { pipeline } => {
                self.awaiting.len() < pipeline
                    && self.window_open(pipeline, context.fanout_max, delivered)
            }
            Pace::Every { .. } => {
                self.awaiting.len() < RATE_IN_FLIGHT_MAX && self.due.is_some_and(|due| due <= now)
            }
        }
    }

    /// Appends the next PUBLISH to the output.
    fn build(&mut self, context: &Context<'_>, now: Instant) {
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        let channel = self.next_channel;
        self.next_channel = (channel + 1) % self.seq.len();
        let header = Header {
            publisher: self.id,
            channel: channel as u32,
            seq: self.seq[channel],
            sent_ns: now.saturating_duration_since(context.epoch).as_nanos() as u64,
        };
        self.seq[channel] += 1;
        wire::publish_command(&header, context.size, &mut self.out);
        self.awaiting.push_back(channel as u32);
        self.owed_built += u64::from(context.fanout[channel]);
        if let (Pace::Every { interval }, Some(due)) = (context.pace, self.due) {
            self.due = Some(due + interval);
        }
    }

    /// Writes built bytes until none is left or the socket is full.
    pub fn flush(&mut self) -> Result<(), Failure> {
        let Some(socket) = self.socket.as_mut() else {
            return Err(Failure::Closed);
        };
        while self.out_at < self.out.len() {
            match socket.write(&self.out[self.out_at..]) {
                Ok(n) => self.out_at += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(Failure::Io(error)),
            }
        }
        Ok(())
    }

    /// Reads the replies that arrived: each must be the receiver count of
    /// its message's channel.
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        context: &Context<'_>,
        measuring: bool,
        tally: &mut Tally,
    ) -> Result<(), Failure> {
        let Publisher {
            socket,
            awaiting,
            partial,
            answered,
            ..
        } = self;
        let socket = socket.as_mut().ok_or(Failure::Closed)?;
        // A reply to PUBLISH is an integer; an error is a line too.
        let frame_max = 512;
        read_frames(socket, scratch, partial, frame_max, |bytes| {
            let Some((element, used)) = reply::next(bytes)
                .map_err(|error| Failure::Unexpected(format!("{error}: {}", wire::show(bytes))))?
            else {
                return Ok(None);
            };
            let receivers = match element {
                Element::Integer(n) => n,
                Element::Error(text) => {
                    return Err(Failure::PublishRefused(
                        String::from_utf8_lossy(text).into_owned(),
                    ));
                }
                _ => {
                    return Err(Failure::Unexpected(format!(
                        "unexpected reply to PUBLISH: {}",
                        wire::show(&bytes[..used.min(bytes.len())])
                    )));
                }
            };
            let Some(channel) = awaiting.pop_front() else {
                return Err(Failure::Unexpected(format!(
                    "a reply to no PUBLISH: {}",
                    wire::show(&bytes[..used])
                )));
            };
            let fanout = context.fanout[channel as usize];
            if receivers != i64::from(fanout) {
                tally.receivers_mismatch += 1;
            }
            answered[channel as usize] += 1;
            tally.published_total += 1;
            tally.owed_total += u64::from(fanout);
            if measuring {
                tally.published_window += 1;
            }
            Ok(Some(used))
        })
    }
}
