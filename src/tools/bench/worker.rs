//! One load-generator thread: its own mio poll, its share of the
//! connections, its own latency histogram. Threads share nothing but a few
//! counters for the progress line, updated once per loop turn, and the
//! window ([`Live::window`]) that the main thread sets once every
//! connection of every thread has settled.
//!
//! A run has three phases: connect (every connection, at most
//! `CONNECTING_MAX` in flight per thread, no requests sent), warm-up
//! (full load, not counted) and the measured window. The clocks of the last
//! two start only when the first is over, so a slow connect phase shortens
//! nothing and every connection is loaded for the whole window.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Poll};

use super::client::{Conn, ConnError, Message, latency_nanos};
use super::connect::{self, Connector};
use super::{BenchOptions, new_histogram};

/// Events taken per poll.
pub const EVENTS_MAX: usize = 1024;

/// Bytes read or written per syscall (a thread's one scratch buffer).
pub const SCRATCH_LEN: usize = 64 * 1024;

/// Counters every thread adds to, read by the progress line.
#[derive(Default)]
pub struct Live {
    /// Replies completed (warm-up included).
    pub requests: AtomicU64,
    /// Connections that failed.
    pub errors: AtomicU64,
    /// Connections established.
    pub connected: AtomicU64,
    /// Connections whose connect finished, well or badly.
    pub settled: AtomicU64,
    /// Set by the main thread once every connect has settled (or the
    /// connect phase timed out): the end of the warm-up and the end of the
    /// measured window. Until then the threads only connect.
    pub window: OnceLock<(Instant, Instant)>,
}

/// What one thread measured.
pub struct Outcome {
    /// Latency of the requests answered in the measured window, in ns.
    pub histogram: Histogram<u64>,
    /// Requests answered in the measured window.
    pub requests: u64,
    /// Connections lost to errors (connect, i/o, wrong echo).
    pub errors: u64,
    /// Connections established.
    pub connected: u64,
    /// Connects refused and tried again in the connect phase.
    pub retries: u64,
    /// The first error, for the summary.
    pub first_error: Option<String>,
}

/// Runs connections `indices` (global indices: they pick the source
/// address): connects them all, waits for [`Live::window`], loads them
/// until its end and measures from the end of its warm-up.
pub fn run(options: &BenchOptions, indices: Vec<usize>, live: &Arc<Live>) -> io::Result<Outcome> {
    let mut worker = Worker::new(options, indices)?;
    let mut events = Events::with_capacity(EVENTS_MAX);
    loop {
        let now = Instant::now();
        worker.open_window(live, now);
        if worker.window.is_some_and(|(_, end)| now >= end) {
            break;
        }
        worker.connect_some(now)?;
        let timeout = match worker.window {
            Some((_, end)) => (end - now).min(Duration::from_millis(100)),
            // Waiting for the window: look at it often.
            None => Duration::from_millis(1),
        };
        match worker.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        let now = Instant::now();
        for event in events.iter() {
            worker.on_event(event, now);
        }
        worker.publish(live);
    }
    Ok(worker.outcome)
}

/// One thread's state over a run.
struct Worker<'a> {
    options: &'a BenchOptions,
    /// The connect phase of this thread's connections.
    connector: Connector,
    message: Message,
    poll: Poll,
    /// By local index; `None` before its connect and after it failed.
    conns: Vec<Option<Conn>>,
    scratch: Vec<u8>,
    outcome: Outcome,
    /// Replies completed, warm-up included.
    answered_total: u64,
    /// Connections whose connect finished, well or badly.
    settled: u64,
    /// What [`Live`] was last given: (replies, errors, connected, settled).
    published: (u64, u64, u64, u64),
    /// The window, once the main thread has set it and this thread has
    /// started the load.
    window: Option<(Instant, Instant)>,
}

impl<'a> Worker<'a> {
    fn new(options: &'a BenchOptions, indices: Vec<usize>) -> io::Result<Worker<'a>> {
        let count = indices.len();
        Ok(Worker {
            options,
            connector: Connector::new(options.target, indices),
            message: Message::new(options.protocol, options.size),
            poll: Poll::new()?,
            conns: (0..count).map(|_| None).collect(),
            scratch: vec![0u8; SCRATCH_LEN],
            outcome: Outcome {
                histogram: new_histogram(),
                requests: 0,
                errors: 0,
                connected: 0,
                retries: 0,
                first_error: None,
            },
            answered_total: 0,
            settled: 0,
            published: (0, 0, 0, 0),
            window: None,
        })
    }

    /// Once the main thread has set the window: starts the load; connects
    /// still waiting to be retried have missed it and fail.
    fn open_window(&mut self, live: &Live, now: Instant) {
        if self.window.is_some() {
            return;
        }
        let Some(&window) = live.window.get() else {
            return;
        };
        self.window = Some(window);
        start_load(
            &mut self.conns,
            &self.message,
            &mut self.scratch,
            self.options,
            now,
            &mut self.outcome,
        );
        let (in_flight, waiting) = self.connector.close_phase();
        self.settled += (in_flight + waiting) as u64;
        for _ in 0..waiting {
            fail(
                &mut self.outcome,
                ConnError::Connect(io::ErrorKind::ConnectionRefused.into()),
            );
        }
    }

    /// Connect phase: starts connects (retries first, once due) up to the
    /// in-flight bound.
    fn connect_some(&mut self, now: Instant) -> io::Result<()> {
        if self.window.is_some() {
            return Ok(());
        }
        let (conns, outcome, settled) = (&mut self.conns, &mut self.outcome, &mut self.settled);
        let pipeline = self.options.pipeline;
        self.connector.start_some(
            now,
            self.poll.registry(),
            |local, socket| conns[local] = Some(Conn::new(socket, pipeline)),
            |error| {
                *settled += 1;
                fail(outcome, ConnError::Connect(error));
            },
        )?;
        self.outcome.retries = self.connector.retries;
        Ok(())
    }

    /// Drives the connection an event names; settles its connect when it
    /// completes or fails.
    fn on_event(&mut self, event: &mio::event::Event, now: Instant) {
        let local = event.token().0;
        let Some(conn) = self.conns[local].as_mut() else {
            return;
        };
        let measuring = self.window.is_some_and(|(warmup_end, _)| now >= warmup_end);
        let was_open = conn.open;
        let result = drive(
            conn,
            event,
            &self.message,
            &mut self.scratch,
            self.options,
            now,
            (self.window.is_some(), measuring),
            &mut self.outcome,
            &mut self.answered_total,
        );
        match result {
            Ok(true) if !was_open => {
                conn.open = true;
                self.connector.established();
                self.settled += 1;
                self.outcome.connected += 1;
            }
            Ok(_) => {}
            // Only a connect can fail before the connection is open.
            Err(ConnError::Connect(cause)) if !was_open => {
                self.conns[local] = None;
                if self.connector.failed(local, &cause, now) {
                    self.outcome.retries = self.connector.retries;
                    return;
                }
                self.settled += 1;
                fail(&mut self.outcome, ConnError::Connect(cause));
            }
            Err(error) => {
                self.conns[local] = None;
                fail(&mut self.outcome, error);
            }
        }
    }

    /// Publishes for the progress line: a handful of relaxed adds per turn.
    fn publish(&mut self, live: &Live) {
        let current = (
            self.answered_total,
            self.outcome.errors,
            self.outcome.connected,
            self.settled,
        );
        let published = self.published;
        live.requests
            .fetch_add(current.0 - published.0, Ordering::Relaxed);
        live.errors
            .fetch_add(current.1 - published.1, Ordering::Relaxed);
        live.connected
            .fetch_add(current.2 - published.2, Ordering::Relaxed);
        live.settled
            .fetch_add(current.3 - published.3, Ordering::Relaxed);
        self.published = current;
    }
}

/// The window has opened: a connect still in flight has missed it and
/// counts as an error; every open connection gets its first requests
/// (none with `--idle`). Connects that completed sent nothing so far and
/// get no further readiness event, so they are started here.
fn start_load(
    conns: &mut [Option<Conn>],
    message: &Message,
    scratch: &mut [u8],
    options: &BenchOptions,
    now: Instant,
    outcome: &mut Outcome,
) {
    for slot in conns.iter_mut() {
        let Some(conn) = slot.as_mut() else {
            continue;
        };
        let result = if !conn.open {
            Err(ConnError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                "not established when the connect phase ended",
            )))
        } else if options.idle {
            Ok(())
        } else {
            while conn.stream.outstanding() < options.pipeline {
                conn.stream.issue(now);
            }
            conn.write(message, scratch)
        };
        if let Err(error) = result {
            *slot = None;
            fail(outcome, error);
        }
    }
}

/// Handles one event on `conn`, `loading` once the window is set and
/// `measuring` once its warm-up is over. Returns `Ok(true)` when a pending
/// connect just completed (the caller marks it open and drives it again).
#[allow(clippy::too_many_arguments)]
fn drive(
    conn: &mut Conn,
    event: &mio::event::Event,
    message: &Message,
    scratch: &mut [u8],
    options: &BenchOptions,
    now: Instant,
    (loading, measuring): (bool, bool),
    outcome: &mut Outcome,
    answered_total: &mut u64,
) -> Result<bool, ConnError> {
    if !conn.open {
        return connect::finish(&conn.socket).map_err(ConnError::Connect);
    }
    if event.is_readable() || event.is_read_closed() || event.is_error() {
        let mut answered = 0u64;
        let histogram = &mut outcome.histogram;
        conn.read(message, scratch, |issued_at| {
            answered += 1;
            if measuring {
                // Saturates at the histogram's top instead of failing.
                histogram.saturating_record(latency_nanos(issued_at, now));
            }
        })?;
        *answered_total += answered;
        if measuring {
            outcome.requests += answered;
        }
    }
    if loading && !options.idle {
        // Closed loop: every answer makes room for one more request.
        while conn.stream.outstanding() < options.pipeline {
            conn.stream.issue(now);
        }
        conn.write(message, scratch)?;
    }
    Ok(false)
}

fn fail(outcome: &mut Outcome, error: ConnError) {
    outcome.errors += 1;
    if outcome.first_error.is_none() {
        outcome.first_error = Some(error.to_string());
    }
}
