//! One pub/sub load thread: its own mio poll, its share of the
//! subscribers and publishers, its own latency histogram and counts.
//!
//! Phases, as in the echo load ([`super::super::worker`]): connect (each
//! subscriber subscribes as soon as it is connected; it has settled once
//! its subscription is confirmed), then the window the main thread sets
//! once every connection of every thread has settled (warm-up, then
//! measured), then the drain: publishers stop at the window's end and wait
//! for their replies, subscribers go on receiving, until the main thread
//! says stop.
//!
//! Threads share a few atomics ([`Shared`]): the progress counters, the
//! confirmed subscriptions per channel, and per publisher the messages
//! delivered so far, which a publisher's window waits on. A thread whose
//! publishers wait on deliveries another thread counts says so
//! ([`Shared::waiting`]) and is woken ([`Shared::wakers`]) when they come.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Poll, Token, Waker};

use super::super::connect::{self, Connector};
use super::super::worker::{EVENTS_MAX, Live, SCRATCH_LEN};
use super::super::{BenchOptions, new_histogram};
use super::conn::Failure;
use super::publisher::{self, Context, Publisher};
use super::subscriber::{self, Check, State, Subscriber};
use super::{Plan, Role};

/// The token of a thread's waker.
pub const WAKE: Token = Token(usize::MAX);

/// What the threads and the main thread share.
pub struct Shared {
    /// Progress counters and the window (`requests` counts deliveries).
    pub live: Live,
    /// The run's clock: a message's send time is ns since it.
    pub epoch: Instant,
    /// Confirmed subscriptions, per channel.
    pub confirmed: Vec<AtomicU32>,
    /// The confirmed subscriptions per channel as publishing starts: what
    /// each PUBLISH reply must count. Set just before the window.
    pub fanout: OnceLock<Vec<u32>>,
    /// Messages delivered so far (intact, once), per publisher.
    pub delivered: Vec<AtomicU64>,
    /// Deliveries the answered PUBLISH commands owe, all publishers.
    pub owed: AtomicU64,
    /// Publishers done after the window's end (every message answered,
    /// or failed).
    pub publishers_done: AtomicU64,
    /// The first refusal of SUBSCRIBE: the run stops with it.
    pub refused: OnceLock<String>,
    /// Set by the main thread: the threads return.
    pub stop: AtomicBool,
    /// Per thread: it is about to sleep with publishers waiting for
    /// deliveries.
    pub waiting: Vec<AtomicBool>,
    /// Per thread: wakes its poll.
    pub wakers: Vec<Waker>,
}

impl Shared {
    /// State for `plan`, waking the threads through `wakers`.
    pub fn new(plan: &Plan, wakers: Vec<Waker>) -> Shared {
        Shared {
            live: Live::default(),
            epoch: Instant::now(),
            confirmed: (0..plan.channels).map(|_| AtomicU32::new(0)).collect(),
            fanout: OnceLock::new(),
            delivered: (0..plan.publishers).map(|_| AtomicU64::new(0)).collect(),
            owed: AtomicU64::new(0),
            publishers_done: AtomicU64::new(0),
            refused: OnceLock::new(),
            stop: AtomicBool::new(false),
            waiting: wakers.iter().map(|_| AtomicBool::new(false)).collect(),
            wakers,
        }
    }

    /// Stops every thread.
    pub fn stop_all(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
    }
}

/// What one thread measured.
pub struct Outcome {
    /// Publish-to-delivery latency of the messages received in the
    /// measured window, in ns.
    pub histogram: Histogram<u64>,
    /// The subscribers' counts.
    pub subscribers: subscriber::Tally,
    /// The publishers' counts.
    pub publishers: publisher::Tally,
    /// Connections lost to errors.
    pub errors: u64,
    /// The first error, for the summary.
    pub first_error: Option<String>,
    /// Connections established.
    pub connected: u64,
    /// Connects refused and tried again.
    pub retries: u64,
    /// Subscriptions confirmed.
    pub subscribed: u64,
    /// Each confirmed subscriber's channel and the distinct messages it
    /// received from each publisher.
    pub received: Vec<(u32, Vec<u64>)>,
    /// Each publisher's id and its answered messages per channel.
    pub answered: Vec<(u32, Box<[u64]>)>,
}

/// A local connection.
enum Slot {
    /// Not started yet, or its connect failed for good.
    None,
    Sub(Subscriber),
    Pub(Publisher),
}

/// Runs connections `indices` of `plan` with `poll` as thread `me`.
pub fn run(
    options: &BenchOptions,
    plan: &Plan,
    (me, poll, indices): (usize, Poll, Vec<usize>),
    shared: &Shared,
) -> io::Result<Outcome> {
    let mut worker = Worker::new(options, plan, me, poll, indices);
    let mut events = Events::with_capacity(EVENTS_MAX);
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        worker.open_window(shared, now);
        worker.connect_some(now)?;
        worker.publish(shared, now);
        let timeout = worker.timeout(shared, now);
        match worker.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
        shared.waiting[me].store(false, Ordering::SeqCst);
        let now = Instant::now();
        for event in events.iter() {
            worker.on_event(event, shared, now);
        }
        worker.flush_counts(shared);
    }
    Ok(worker.outcome())
}

/// One thread's state over a run.
struct Worker<'a> {
    options: &'a BenchOptions,
    plan: &'a Plan,
    me: usize,
    connector: Connector,
    poll: Poll,
    /// By local index (the token).
    slots: Vec<Slot>,
    /// What each local connection is, by local index.
    roles: Vec<Role>,
    /// The local indices of the publishers.
    publishers: Vec<usize>,
    scratch: Vec<u8>,
    histogram: Histogram<u64>,
    subs: subscriber::Tally,
    pubs: publisher::Tally,
    /// Deliveries per publisher not yet added to [`Shared::delivered`].
    deliveries: Vec<u64>,
    /// Per thread: it runs a publisher this turn delivered for.
    wake: Vec<bool>,
    errors: u64,
    first_error: Option<String>,
    connected: u64,
    subscribed: u64,
    settled: u64,
    /// What [`Live`] and [`Shared::owed`] were last given: (deliveries,
    /// errors, connected, settled, owed).
    told: [u64; 5],
    /// The window once this thread has seen it.
    window: Option<(Instant, Instant)>,
    /// Whether this thread's publishers have all been counted done.
    publishers_done: bool,
}

impl<'a> Worker<'a> {
    fn new(
        options: &'a BenchOptions,
        plan: &'a Plan,
        me: usize,
        poll: Poll,
        indices: Vec<usize>,
    ) -> Worker<'a> {
        let slots = indices.iter().map(|_| Slot::None).collect();
        let roles: Vec<Role> = indices.iter().map(|&index| plan.role(index)).collect();
        let publishers = (0..roles.len())
            .filter(|&local| matches!(roles[local], Role::Publisher(_)))
            .collect();
        Worker {
            options,
            plan,
            me,
            connector: Connector::new(options.target, indices),
            poll,
            slots,
            roles,
            publishers,
            scratch: vec![0u8; SCRATCH_LEN + plan.frame_max],
            histogram: new_histogram(),
            subs: subscriber::Tally::default(),
            pubs: publisher::Tally::default(),
            deliveries: vec![0; plan.publishers],
            wake: vec![false; plan.threads],
            errors: 0,
            first_error: None,
            connected: 0,
            subscribed: 0,
            settled: 0,
            told: [0; 5],
            window: None,
            publishers_done: false,
        }
    }

    fn fail(&mut self, error: Failure) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    /// Connect phase: starts connects up to the in-flight bound.
    fn connect_some(&mut self, now: Instant) -> io::Result<()> {
        if self.window.is_some() {
            return Ok(());
        }
        let mut failed = Vec::new();
        let (slots, roles, plan) = (&mut self.slots, &self.roles, self.plan);
        self.connector.start_some(
            now,
            self.poll.registry(),
            |local, socket| {
                slots[local] = match roles[local] {
                    Role::Subscriber(channel) => Slot::Sub(Subscriber::new(
                        socket,
                        channel,
                        plan.pattern,
                        plan.publishers,
                    )),
                    Role::Publisher(id) => Slot::Pub(Publisher::new(socket, id, plan.channels)),
                };
            },
            |error| failed.push(error),
        )?;
        for error in failed {
            self.settled += 1;
            self.fail(Failure::Connect(error));
        }
        Ok(())
    }

    /// Once the main thread has set the window: the connect phase is over
    /// (what has not settled fails), and the publishers' clocks start.
    fn open_window(&mut self, shared: &Shared, now: Instant) {
        if self.window.is_some() {
            return;
        }
        let Some(&window) = shared.live.window.get() else {
            return;
        };
        self.window = Some(window);
        let (in_flight, waiting) = self.connector.close_phase();
        self.settled += (in_flight + waiting) as u64;
        for _ in 0..waiting {
            self.fail(Failure::Connect(io::ErrorKind::ConnectionRefused.into()));
        }
        let missed = io::Error::new(
            io::ErrorKind::TimedOut,
            "not established when the connect phase ended",
        );
        for local in 0..self.slots.len() {
            let failure = match &mut self.slots[local] {
                Slot::Sub(sub) if sub.state == State::Connecting => {
                    Failure::Connect(io::Error::new(missed.kind(), missed.to_string()))
                }
                Slot::Sub(sub) if sub.state == State::Subscribing => Failure::Unconfirmed,
                Slot::Pub(publisher) if !publisher.open => {
                    Failure::Connect(io::Error::new(missed.kind(), missed.to_string()))
                }
                Slot::Pub(publisher) => {
                    publisher.due = self.plan.first_due(publisher.id, now);
                    continue;
                }
                _ => continue,
            };
            self.drop_socket(local);
            self.fail(failure);
        }
    }

    /// Forgets a connection's socket (it closes), keeping what it counted.
    fn drop_socket(&mut self, local: usize) {
        match &mut self.slots[local] {
            Slot::Sub(sub) => sub.socket = None,
            Slot::Pub(publisher) => publisher.socket = None,
            Slot::None => {}
        }
    }

    /// The publishers' context, once the window is open.
    fn context(&self, shared: &'a Shared) -> Option<Context<'a>> {
        self.window?;
        let fanout = shared.fanout.get()?;
        Some(Context {
            fanout,
            fanout_max: fanout.iter().copied().max().unwrap_or(0).into(),
            size: self.options.size,
            pace: self.plan.pace,
            epoch: shared.epoch,
        })
    }

    /// Sends what the publishers may send now, until the window's end;
    /// after it, counts them done once every message is answered.
    fn publish(&mut self, shared: &'a Shared, now: Instant) {
        let Some(context) = self.context(shared) else {
            return;
        };
        let ended = self.window.is_some_and(|(_, end)| now >= end);
        let mut failures = Vec::new();
        let mut done = true;
        for &local in &self.publishers {
            let Slot::Pub(publisher) = &mut self.slots[local] else {
                continue;
            };
            if publisher.socket.is_none() {
                continue;
            }
            let result = if ended {
                publisher.flush()
            } else {
                let delivered = shared.delivered[publisher.id as usize].load(Ordering::SeqCst);
                publisher.send(&context, delivered, now)
            };
            match result {
                Ok(()) => done &= ended && publisher.idle(),
                Err(failure) => {
                    publisher.socket = None;
                    failures.push(failure);
                }
            }
        }
        for failure in failures {
            self.fail(failure);
        }
        if done && !self.publishers_done {
            self.publishers_done = true;
            shared
                .publishers_done
                .fetch_add(self.publishers.len() as u64, Ordering::SeqCst);
        }
    }

    /// How long to sleep: until a publisher is due, the window's edge, or
    /// a short look at the main thread's orders. Before sleeping with
    /// publishers held back by deliveries another thread counts, says so
    /// and tries once more, so a delivery counted meanwhile is not missed.
    fn timeout(&mut self, shared: &'a Shared, now: Instant) -> Duration {
        let Some((_, end)) = self.window else {
            // Waiting for the window: look at it often.
            return Duration::from_millis(1);
        };
        if now >= end {
            // The drain: look at the stop flag often.
            return Duration::from_millis(10);
        }
        let mut timeout = (end - now).min(Duration::from_millis(100));
        let Some(context) = self.context(shared) else {
            return timeout;
        };
        let mut blocked = false;
        for &local in &self.publishers {
            if let Slot::Pub(publisher) = &self.slots[local] {
                if publisher.socket.is_none() {
                    continue;
                }
                // A publisher behind its schedule waits for its socket.
                if let Some(due) = publisher.due.filter(|&due| due > now) {
                    timeout = timeout.min(due - now);
                }
                let delivered = shared.delivered[publisher.id as usize].load(Ordering::SeqCst);
                blocked |= publisher.blocked_on_deliveries(&context, delivered);
            }
        }
        if blocked {
            shared.waiting[self.me].store(true, Ordering::SeqCst);
            self.publish(shared, now);
        }
        timeout
    }

    /// Drives the connection an event names.
    fn on_event(&mut self, event: &mio::event::Event, shared: &'a Shared, now: Instant) {
        if event.token() == WAKE {
            return;
        }
        let local = event.token().0;
        let result = match &self.slots[local] {
            Slot::Sub(_) => self.on_subscriber(local, event, shared, now),
            Slot::Pub(_) => self.on_publisher(local, event, shared, now),
            Slot::None => return,
        };
        if let Err(failure) = result {
            self.drop_socket(local);
            if let Failure::Refused { .. } = &failure {
                let _ = shared.refused.set(failure.to_string());
            }
            self.fail(failure);
        }
    }

    /// A connect in flight completed (`Ok(true)`), is still in flight
    /// (`Ok(false)`) or failed; a refused one is tried again.
    fn settle_connect(&mut self, local: usize, now: Instant) -> Result<bool, Failure> {
        let socket = match &self.slots[local] {
            Slot::Sub(sub) => sub.socket.as_ref(),
            Slot::Pub(publisher) => publisher.socket.as_ref(),
            Slot::None => None,
        };
        let Some(socket) = socket else {
            return Ok(false);
        };
        match connect::finish(socket) {
            Ok(true) => {
                self.connector.established();
                self.connected += 1;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(error) => {
                if self.connector.failed(local, &error, now) {
                    self.slots[local] = Slot::None;
                    return Ok(false);
                }
                self.settled += 1;
                Err(Failure::Connect(error))
            }
        }
    }

    fn on_subscriber(
        &mut self,
        local: usize,
        event: &mio::event::Event,
        shared: &'a Shared,
        now: Instant,
    ) -> Result<(), Failure> {
        let state = match &self.slots[local] {
            Slot::Sub(sub) if sub.socket.is_some() => sub.state,
            _ => return Ok(()),
        };
        if state == State::Connecting {
            if !self.settle_connect(local, now)? {
                return Ok(());
            }
            let Slot::Sub(sub) = &mut self.slots[local] else {
                return Ok(());
            };
            return sub.subscribe().inspect_err(|_| self.settled += 1);
        }
        if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
            return Ok(());
        }
        let measuring = self
            .window
            .is_some_and(|(warmup_end, end)| (warmup_end..end).contains(&now));
        let mut check = Check {
            size: self.options.size,
            publishers: self.plan.publishers as u32,
            now_ns: now.saturating_duration_since(shared.epoch).as_nanos() as u64,
            measuring,
            histogram: &mut self.histogram,
            tally: &mut self.subs,
            deliveries: &mut self.deliveries,
        };
        let Slot::Sub(sub) = &mut self.slots[local] else {
            return Ok(());
        };
        match sub.on_readable(&mut self.scratch, self.plan.frame_max, &mut check) {
            Ok(true) => {
                self.subscribed += 1;
                self.settled += 1;
                shared.confirmed[sub.channel as usize].fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(failure) => {
                if state == State::Subscribing {
                    self.settled += 1;
                }
                Err(failure)
            }
        }
    }

    fn on_publisher(
        &mut self,
        local: usize,
        event: &mio::event::Event,
        shared: &'a Shared,
        now: Instant,
    ) -> Result<(), Failure> {
        let open = match &self.slots[local] {
            Slot::Pub(publisher) if publisher.socket.is_some() => publisher.open,
            _ => return Ok(()),
        };
        if !open {
            if self.settle_connect(local, now)? {
                self.settled += 1;
                if let Slot::Pub(publisher) = &mut self.slots[local] {
                    publisher.open = true;
                }
            }
            return Ok(());
        }
        // Before the window nothing is sent, so nothing is read: bytes
        // that came unasked are found with the first reply.
        let Some(context) = self.context(shared) else {
            return Ok(());
        };
        let measuring = self
            .window
            .is_some_and(|(warmup_end, end)| (warmup_end..end).contains(&now));
        let Slot::Pub(publisher) = &mut self.slots[local] else {
            return Ok(());
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            publisher.on_readable(&mut self.scratch, &context, measuring, &mut self.pubs)?;
        }
        if event.is_writable() {
            publisher.flush()?;
        }
        Ok(())
    }

    /// Adds this turn's deliveries to [`Shared::delivered`], wakes the
    /// threads whose publishers wait for them, and updates the progress
    /// counters.
    fn flush_counts(&mut self, shared: &Shared) {
        let wake = &mut self.wake;
        for (publisher, count) in self.deliveries.iter_mut().enumerate() {
            if *count > 0 {
                shared.delivered[publisher].fetch_add(*count, Ordering::SeqCst);
                *count = 0;
                wake[self.plan.thread_of_publisher(publisher)] = true;
            }
        }
        for (thread, wake) in wake.iter_mut().enumerate() {
            if std::mem::take(wake)
                && thread != self.me
                && shared.waiting[thread].load(Ordering::SeqCst)
            {
                let _ = shared.wakers[thread].wake();
            }
        }
        let now = [
            self.subs.delivered_total,
            self.errors,
            self.connected,
            self.settled,
            self.pubs.owed_total,
        ];
        let live = &shared.live;
        let delta = |i: usize| now[i] - self.told[i];
        live.requests.fetch_add(delta(0), Ordering::Relaxed);
        live.errors.fetch_add(delta(1), Ordering::Relaxed);
        live.connected.fetch_add(delta(2), Ordering::Relaxed);
        live.settled.fetch_add(delta(3), Ordering::SeqCst);
        shared.owed.fetch_add(delta(4), Ordering::SeqCst);
        self.told = now;
    }

    /// What the thread measured, once it stops.
    fn outcome(self) -> Outcome {
        let mut received = Vec::new();
        let mut answered = Vec::new();
        for slot in self.slots {
            match slot {
                Slot::Sub(sub) if sub.state == State::Subscribed => {
                    received.push((sub.channel, sub.received()));
                }
                Slot::Pub(publisher) => answered.push((publisher.id, publisher.answered)),
                _ => {}
            }
        }
        Outcome {
            histogram: self.histogram,
            subscribers: self.subs,
            publishers: self.pubs,
            errors: self.errors,
            first_error: self.first_error,
            connected: self.connected,
            retries: self.connector.retries,
            subscribed: self.subscribed,
            received,
            answered,
        }
    }
}
