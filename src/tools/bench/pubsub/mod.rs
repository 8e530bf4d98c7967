//! `holdfast bench --pubsub`: Redis Pub/Sub load, every message checked.
//!
//! `--subscribers` connections each SUBSCRIBE (or, with `--psubscribe`,
//! PSUBSCRIBE to a pattern that matches it alone) to one of `--channels`
//! channels, subscriber `i` to channel `i mod channels`, and must see the
//! subscription confirmed before publishing starts. `--publishers`
//! connections then PUBLISH `--size`-byte messages to the channels in
//! turn: flat out, each with at most `--pipeline` messages in flight (a
//! message is in flight until every subscriber of its channel has it), or
//! at a fixed total `--rate`. A payload carries its publisher, channel,
//! number (per publisher and channel) and send time, and a pattern over
//! the rest ([`wire`]); every message received is checked for its channel,
//! its payload and its order ([`order`]), and its publish-to-delivery
//! latency recorded. Every PUBLISH reply must count the channel's
//! confirmed subscribers. At the window's end publishers stop; the run
//! waits (the drain, at most [`DRAIN_MAX`], or [`DRAIN_QUIET`] without a
//! delivery) for what is owed, and what never came is missing.
//!
//! The connections are spread over `--threads` threads ([`worker`]) as
//! the echo load's are, with the same connect phase
//! ([`connect`](super::connect)).

pub mod conn;
pub mod order;
pub mod publisher;
pub mod subscriber;
pub mod summary;
pub mod wire;
pub mod worker;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};

use super::{BenchOptions, CONNS_MAX, FDS_OWN};
use publisher::Pace;
use summary::Summary;
use worker::{Outcome, Shared, WAKE};

/// The settings only a pub/sub run has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubSubOptions {
    /// `--subscribers`: subscribed connections.
    pub subscribers: usize,
    /// `--publishers`: publishing connections.
    pub publishers: usize,
    /// `--channels`: channels the subscribers are spread over.
    pub channels: usize,
    /// `--rate`: messages per second over all publishers; 0 is flat out.
    pub rate: u64,
    /// `--psubscribe`: subscribe by pattern.
    pub pattern: bool,
}

impl Default for PubSubOptions {
    fn default() -> PubSubOptions {
        PubSubOptions {
            subscribers: 100,
            publishers: 1,
            channels: 1,
            rate: 0,
            pattern: false,
        }
    }
}

/// Publishers: each subscriber keeps 24 bytes per publisher for the order
/// check, so this bounds that at 6 KiB a subscriber.
pub const PUBLISHERS_MAX: usize = 256;
/// The largest message: a subscriber keeps at most one incomplete message
/// between reads.
pub const SIZE_MAX: usize = 64 << 10;
/// Messages per second.
pub const RATE_MAX: u64 = 100_000_000;
/// The longest the drain waits for what publishers sent before the end.
pub const DRAIN_MAX: Duration = Duration::from_secs(5);
/// The drain ends sooner when nothing was delivered for this long.
pub const DRAIN_QUIET: Duration = Duration::from_secs(1);

impl PubSubOptions {
    /// Checks every bound; the error names the flag.
    pub fn validate(&self, options: &BenchOptions) -> Result<(), String> {
        let range = |flag: &str, value: usize, low: usize, high: usize| {
            if value < low || value > high {
                Err(format!("{flag}: {value} is out of range ({low} to {high})"))
            } else {
                Ok(())
            }
        };
        range("--subscribers", self.subscribers, 1, CONNS_MAX)?;
        range("--publishers", self.publishers, 1, PUBLISHERS_MAX)?;
        range("--channels", self.channels, 1, wire::CHANNELS_MAX)?;
        if self.channels > self.subscribers {
            return Err(format!(
                "--channels: {} channels for {} subscribers; each channel needs a subscriber",
                self.channels, self.subscribers
            ));
        }
        range("--size", options.size, wire::HEADER_LEN, SIZE_MAX).map_err(|error| {
            format!(
                "{error}; a message carries a {}-byte header",
                wire::HEADER_LEN
            )
        })?;
        if self.rate > RATE_MAX {
            return Err(format!(
                "--rate: {} is out of range (0 to {RATE_MAX})",
                self.rate
            ));
        }
        let connections = self.subscribers + if options.idle { 0 } else { self.publishers };
        if options.threads > connections {
            return Err(format!(
                "--threads: {} threads for {connections} connections; use at most one thread per connection",
                options.threads
            ));
        }
        Ok(())
    }
}

/// What each connection of a run is and how the run paces itself.
pub struct Plan {
    /// Subscribers: global indices `0..subscribers`.
    pub subscribers: usize,
    /// Publishers (none with `--idle`): the indices after the subscribers.
    pub publishers: usize,
    /// Channels.
    pub channels: usize,
    /// Load threads: thread `t` has the indices `t, t + threads, ...`.
    pub threads: usize,
    /// PSUBSCRIBE instead of SUBSCRIBE.
    pub pattern: bool,
    /// How publishers pace themselves.
    pub pace: Pace,
    /// The longest frame a subscriber waits to complete.
    pub frame_max: usize,
}

/// What a connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Subscribes to this channel.
    Subscriber(u32),
    /// Publishes, as this publisher.
    Publisher(u32),
}

impl Plan {
    /// The plan of a validated run.
    pub fn new(options: &BenchOptions, pubsub: &PubSubOptions) -> Plan {
        let publishers = if options.idle { 0 } else { pubsub.publishers };
        let pace = match pubsub.rate {
            0 => Pace::Window {
                pipeline: options.pipeline,
            },
            rate => Pace::Every {
                interval: Duration::from_secs_f64(pubsub.publishers as f64 / rate as f64),
            },
        };
        Plan {
            subscribers: pubsub.subscribers,
            publishers,
            channels: pubsub.channels,
            threads: options.threads,
            pattern: pubsub.pattern,
            pace,
            // A pmessage's framing, channel and pattern take under 100
            // bytes; the rest leaves room to show an unexpected frame.
            frame_max: options.size + 256,
        }
    }

    /// Every connection.
    pub fn total(&self) -> usize {
        self.subscribers + self.publishers
    }

    /// What connection `index` does.
    pub fn role(&self, index: usize) -> Role {
        if index < self.subscribers {
            Role::Subscriber((index % self.channels) as u32)
        } else {
            Role::Publisher((index - self.subscribers) as u32)
        }
    }

    /// The thread that runs publisher `publisher`.
    pub fn thread_of_publisher(&self, publisher: usize) -> usize {
        (self.subscribers + publisher) % self.threads
    }

    /// When publisher `id`'s first message is due, with a fixed rate: the
    /// publishers start spread over one interval.
    pub fn first_due(&self, id: u32, start: Instant) -> Option<Instant> {
        match self.pace {
            Pace::Every { interval } => {
                Some(start + interval.mul_f64(f64::from(id) / self.publishers.max(1) as f64))
            }
            Pace::Window { .. } => None,
        }
    }
}

/// Runs the pub/sub load `options` describes and returns what it
/// measured. Fails when it could not run: the fd limit, the server
/// refusing SUBSCRIBE, no subscription confirmed.
pub fn run(options: &BenchOptions) -> Result<Summary, String> {
    options.validate()?;
    let pubsub = options
        .pubsub
        .as_ref()
        .ok_or_else(|| "not a pub/sub run".to_string())?;
    let plan = Arc::new(Plan::new(options, pubsub));
    check_fds(&plan)?;
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..plan.threads {
        let poll = Poll::new().map_err(|error| format!("creating a poll: {error}"))?;
        wakers.push(
            Waker::new(poll.registry(), WAKE)
                .map_err(|error| format!("creating a waker: {error}"))?,
        );
        polls.push(poll);
    }
    let shared = Arc::new(Shared::new(&plan, wakers));
    let mut handles = Vec::new();
    for (me, poll) in polls.into_iter().enumerate() {
        let indices: Vec<usize> = (me..plan.total()).step_by(plan.threads).collect();
        let (options, plan, thread_shared) = (options.clone(), plan.clone(), shared.clone());
        let handle = std::thread::Builder::new()
            .name(format!("holdfast-bench-{me}"))
            .spawn(move || worker::run(&options, &plan, (me, poll, indices), &thread_shared))
            .map_err(|error| format!("starting a load thread: {error}"));
        match handle {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                shared.stop_all();
                return Err(error);
            }
        }
    }
    let phases = drive(options, &plan, &shared, &handles);
    shared.stop_all();
    let mut outcomes = Vec::new();
    for handle in handles {
        let outcome = handle
            .join()
            .map_err(|_| "a load thread panicked".to_string())?
            .map_err(|error| format!("load thread: {error}"))?;
        outcomes.push(outcome);
    }
    let phases = phases?;
    let summary = Summary::new(options, &plan, &phases, outcomes)?;
    if summary.subscribed == 0 {
        return Err(format!(
            "no subscription was confirmed ({})",
            summary.first_error.as_deref().unwrap_or("no error either")
        ));
    }
    Ok(summary)
}

/// What the main thread measured of the phases.
pub struct Phases {
    /// How long connecting and subscribing took.
    pub connect_time: Duration,
    /// The server's CPU time over the measured window, if measured.
    pub server_cpu: Option<Duration>,
    /// How long the drain took.
    pub drain_time: Duration,
}

/// The phases, from the main thread: connect and subscribe, the window
/// (warm-up, measured), the drain.
fn drive<T>(
    options: &BenchOptions,
    plan: &Plan,
    shared: &Shared,
    threads: &[std::thread::JoinHandle<T>],
) -> Result<Phases, String> {
    let tty = std::io::stderr().is_terminal();
    let connect_start = Instant::now();
    super::wait_for_connects(plan.total(), &shared.live, threads, tty, &|| {
        shared.refused.get().is_some()
    });
    if let Some(refusal) = shared.refused.get() {
        return Err(refusal.clone());
    }
    let fanout: Vec<u32> = shared
        .confirmed
        .iter()
        .map(|count| count.load(Ordering::SeqCst))
        .collect();
    let subscribed: u64 = fanout.iter().map(|&n| u64::from(n)).sum();
    let _ = shared.fanout.set(fanout);
    let start = Instant::now();
    let connect_time = start - connect_start;
    let cpu_start = if options.warmup.is_zero() {
        super::server_cpu(options)?
    } else {
        None
    };
    let window = (
        start + options.warmup,
        start + options.warmup + options.duration,
    );
    if subscribed == 0 {
        return Ok(Phases {
            connect_time,
            server_cpu: None,
            drain_time: Duration::ZERO,
        });
    }
    let _ = shared.live.window.set(window);
    if options.idle {
        eprintln!(
            "holding {subscribed} subscribed idle connections ({} errors)",
            shared.live.errors.load(Ordering::Relaxed)
        );
    }
    let unit = "msg/s delivered";
    let cpu_start =
        super::watch_window(options, &shared.live, (start, window), cpu_start, tty, unit)?;
    if tty {
        eprint!("\r\x1b[K");
    }
    let server_cpu = match (cpu_start, super::server_cpu(options)?) {
        (Some(start), Some(end)) => Some(end.saturating_sub(start)),
        _ => None,
    };
    let drain_time = if options.idle {
        Duration::ZERO
    } else {
        drain(plan, shared)
    };
    Ok(Phases {
        connect_time,
        server_cpu,
        drain_time,
    })
}

/// After the window: waits until every publisher has its replies and
/// every delivery owed has come, [`DRAIN_QUIET`] passes without progress,
/// or [`DRAIN_MAX`]. Returns how long it waited.
fn drain(plan: &Plan, shared: &Shared) -> Duration {
    let start = Instant::now();
    let progress = || {
        let delivered: u64 = shared
            .delivered
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .sum();
        let done = shared.publishers_done.load(Ordering::SeqCst);
        (delivered, done, shared.owed.load(Ordering::SeqCst))
    };
    let mut last = (start, progress());
    loop {
        let now = Instant::now();
        let (delivered, done, owed) = progress();
        if done >= plan.publishers as u64 && delivered >= owed {
            return now - start;
        }
        if (delivered, done, owed) != last.1 {
            last = (now, (delivered, done, owed));
        }
        if now - last.0 >= DRAIN_QUIET || now - start >= DRAIN_MAX {
            return now - start;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Refuses a run whose connections do not fit in RLIMIT_NOFILE (raised to
/// the hard limit first).
fn check_fds(plan: &Plan) -> Result<(), String> {
    let limit = crate::engine::sys::raise_fd_limit()
        .map_err(|error| format!("reading RLIMIT_NOFILE: {error}"))?;
    // Each thread has a poll and a waker.
    let needed = plan.total() as u64 + FDS_OWN + 2 * plan.threads as u64;
    if needed > limit {
        return Err(format!(
            "--subscribers: {} connections need about {needed} file descriptors, \
             RLIMIT_NOFILE is {limit}; raise it (ulimit -n) or lower --subscribers",
            plan.total()
        ));
    }
    Ok(())
}

/// The count of messages owed and never received: for each confirmed
/// subscriber and each publisher, the messages that publisher had answered
/// on the subscriber's channel less the distinct ones it received.
pub fn missing(outcomes: &[Outcome], plan: &Plan) -> u64 {
    let mut answered = vec![vec![0u64; plan.channels]; plan.publishers];
    for (id, counts) in outcomes.iter().flat_map(|o| &o.answered) {
        answered[*id as usize].copy_from_slice(counts);
    }
    let mut missing = 0;
    for (channel, received) in outcomes.iter().flat_map(|o| &o.received) {
        for (publisher, got) in received.iter().enumerate() {
            let sent = answered.get(publisher).map_or(0, |a| a[*channel as usize]);
            missing += sent.saturating_sub(*got);
        }
    }
    missing
}
