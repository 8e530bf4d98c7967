//! One subscriber connection: it subscribes to its channel as soon as it
//! is connected, waits for the confirmation, then checks every message it
//! receives: the right channel (and pattern), the payload intact, each
//! publisher's messages once and in order.

use hdrhistogram::Histogram;
use mio::net::TcpStream;

use super::conn::{Failure, read_frames, write_now};
use super::order::{Order, Verdict};
use super::wire::{self, Push};

/// Where a subscriber is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Its connect is in flight.
    Connecting,
    /// SUBSCRIBE sent, not confirmed yet.
    Subscribing,
    /// Confirmed: receiving messages.
    Subscribed,
}

/// What every subscriber of a thread counts.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Messages received intact, on the right channel, not duplicates,
    /// over the whole run.
    pub delivered_total: u64,
    /// The same, received in the measured window.
    pub delivered_window: u64,
    /// Messages whose payload was not what its publisher sent.
    pub corrupt: u64,
    /// Messages that came on another channel or pattern than the one
    /// subscribed to.
    pub wrong_channel: u64,
    /// Messages received a second time.
    pub duplicates: u64,
    /// Messages received after a later one of the same publisher.
    pub out_of_order: u64,
}

/// What checking a read's messages needs from the thread.
pub struct Check<'a> {
    /// `--size`.
    pub size: usize,
    /// `--publishers`: a payload naming another publisher is corrupt.
    pub publishers: u32,
    /// Now, in ns since the run's epoch.
    pub now_ns: u64,
    /// Whether the measured window is on.
    pub measuring: bool,
    /// Publish-to-delivery latencies of the measured window.
    pub histogram: &'a mut Histogram<u64>,
    /// The thread's counts.
    pub tally: &'a mut Tally,
    /// Messages delivered per publisher since the thread last told the
    /// publishers (their flow control).
    pub deliveries: &'a mut [u64],
}

/// One subscriber.
pub struct Subscriber {
    /// The socket; `None` once the connection failed.
    pub socket: Option<TcpStream>,
    /// Where it is.
    pub state: State,
    /// Its channel.
    pub channel: u32,
    /// PSUBSCRIBE to the channel's pattern instead of SUBSCRIBE.
    pattern: bool,
    /// The incomplete frame at the end of the last read.
    partial: Vec<u8>,
    /// The order check of each publisher's messages.
    orders: Box<[Order]>,
}

impl Subscriber {
    /// A subscriber of `channel` whose connect is in flight on `socket`.
    pub fn new(socket: TcpStream, channel: u32, pattern: bool, publishers: usize) -> Subscriber {
        Subscriber {
            socket: Some(socket),
            state: State::Connecting,
            channel,
            pattern,
            partial: Vec::new(),
            orders: vec![Order::default(); publishers].into_boxed_slice(),
        }
    }

    /// The connect completed: sends SUBSCRIBE (or PSUBSCRIBE).
    pub fn subscribe(&mut self) -> Result<(), Failure> {
        let socket = self.socket.as_mut().ok_or(Failure::Closed)?;
        write_now(
            socket,
            &wire::subscribe_command(self.channel as usize, self.pattern),
        )?;
        self.state = State::Subscribing;
        Ok(())
    }

    /// Distinct messages received from each publisher.
    pub fn received(&self) -> Vec<u64> {
        self.orders.iter().map(Order::distinct).collect()
    }

    /// Reads what arrived: the confirmation, then messages, each checked.
    /// Returns `true` when the subscription was confirmed by this read.
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        frame_max: usize,
        check: &mut Check<'_>,
    ) -> Result<bool, Failure> {
        let was = self.state;
        let Subscriber {
            socket,
            state,
            channel,
            pattern,
            partial,
            orders,
        } = self;
        let socket = socket.as_mut().ok_or(Failure::Closed)?;
        read_frames(socket, scratch, partial, frame_max, |bytes| {
            let Some((push, used)) = wire::next_push(bytes)
                .map_err(|error| Failure::Unexpected(format!("{error}: {}", wire::show(bytes))))?
            else {
                return Ok(None);
            };
            let frame = &bytes[..used];
            match state {
                State::Subscribed => on_message(push, frame, *channel, *pattern, orders, check)?,
                _ => confirm(push, frame, *channel, *pattern)?,
            }
            *state = State::Subscribed;
            Ok(Some(used))
        })?;
        Ok(was != State::Subscribed && self.state == State::Subscribed)
    }
}

/// The reply to SUBSCRIBE must confirm this channel (or pattern), one
/// subscription on the connection.
fn confirm(push: Push<'_>, frame: &[u8], channel: u32, pattern: bool) -> Result<(), Failure> {
    let command = if pattern { "PSUBSCRIBE" } else { "SUBSCRIBE" };
    let (kind, index): (&[u8], _) = if pattern {
        (
            b"psubscribe",
            wire::pattern_index as fn(&[u8]) -> Option<u32>,
        )
    } else {
        (
            b"subscribe",
            wire::channel_index as fn(&[u8]) -> Option<u32>,
        )
    };
    match push {
        Push::Subscribed(got, name, 1) if got == kind && index(name) == Some(channel) => Ok(()),
        Push::Error(reply) => Err(Failure::Refused {
            command,
            reply: String::from_utf8_lossy(reply).into_owned(),
        }),
        _ => Err(Failure::Unexpected(format!(
            "unexpected reply to {command}: {}",
            wire::show(frame)
        ))),
    }
}

/// Checks one frame received while subscribed; only a frame that is no
/// message at all stops the connection.
fn on_message(
    push: Push<'_>,
    frame: &[u8],
    channel: u32,
    pattern: bool,
    orders: &mut [Order],
    check: &mut Check<'_>,
) -> Result<(), Failure> {
    let (name, payload) = match push {
        Push::Message(name, payload) if !pattern => (name, payload),
        Push::PMessage(matched, name, payload) if pattern => {
            if wire::pattern_index(matched) != Some(channel) {
                check.tally.wrong_channel += 1;
                return Ok(());
            }
            (name, payload)
        }
        _ => {
            return Err(Failure::Unexpected(format!(
                "unexpected frame while subscribed: {}",
                wire::show(frame)
            )));
        }
    };
    if wire::channel_index(name) != Some(channel) {
        check.tally.wrong_channel += 1;
        return Ok(());
    }
    let header = wire::check_payload(payload, check.size)
        .filter(|header| header.channel == channel && header.publisher < check.publishers);
    let Some(header) = header else {
        check.tally.corrupt += 1;
        return Ok(());
    };
    match orders[header.publisher as usize].observe(header.seq) {
        Verdict::Duplicate => {
            check.tally.duplicates += 1;
            return Ok(());
        }
        Verdict::Late => check.tally.out_of_order += 1,
        Verdict::InOrder | Verdict::Ahead { .. } => {}
    }
    check.deliveries[header.publisher as usize] += 1;
    check.tally.delivered_total += 1;
    if check.measuring {
        check.tally.delivered_window += 1;
        let latency = check.now_ns.saturating_sub(header.sent_ns).max(1);
        check.histogram.saturating_record(latency);
    }
    Ok(())
}
