//! The relay: one thread, one mio loop, every proxy's listener and every
//! connection. The API thread sends it [`Command`]s (with a waker) and
//! waits for each to be carried out, so an API answer means the change is
//! in force. Release times are kept in the engine's timer wheel
//! (src/engine/timer), one entry per connection for its earliest due
//! segment, at a 1 ms tick.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::chain::Rng;
use super::link::{CLIENT, Link, Pumped, UPSTREAM};
use super::metrics::Metrics;
use super::toxic::ToxicSpec;
use crate::engine::timer::{Millis, Wheel};

/// The waker's token; listeners and links are numbered above it.
pub const WAKER: Token = Token(0);
/// Listener tokens start here; a link's sockets are `2 * key + side + 1`.
const LISTENER_BASE: usize = 1 << 40;
/// Accepts per listener per turn before the links get their turn.
const ACCEPT_BATCH: usize = 256;
/// Accepting pauses this long after an error other than EAGAIN (such as
/// EMFILE), rather than spinning on a listener it cannot accept from.
const ACCEPT_PAUSE: Millis = 100;
/// Bytes one read takes at most.
const READ_CHUNK: usize = 64 * 1024;
/// Readiness events per poll.
const EVENTS: usize = 1024;
/// Timer wheel slots (1 ms each): a rotation of about 4 s; later
/// deadlines go round (src/engine/timer/wheel.rs).
const WHEEL_SLOTS: usize = 4096;

/// What the API asks of the relay.
pub enum Command {
    /// Serve proxy `id` on `listener`, forwarding to `upstream` (`None`:
    /// it did not resolve; each connection is closed at once).
    Start {
        id: u64,
        listener: std::net::TcpListener,
        upstream: Option<SocketAddr>,
        toxics: Vec<ToxicSpec>,
    },
    /// Stop proxy `id`: close its listener and its connections.
    Stop { id: u64 },
    /// Proxy `id`'s toxics are now these.
    Toxics { id: u64, toxics: Vec<ToxicSpec> },
}

/// A command and where to say it is done.
pub struct Envelope {
    pub command: Command,
    pub done: SyncSender<()>,
}

/// The relay's bounds (from `ChaosProxySettings`).
#[derive(Clone, Copy)]
pub struct Bounds {
    pub max_conns: usize,
    pub buffer: usize,
}

/// What the wheel wakes.
#[derive(Clone, Copy)]
enum Wake {
    Link(usize),
    Listener(usize),
}

struct Listening {
    proxy: u64,
    listener: TcpListener,
    paused: bool,
}

struct ProxyEntry {
    listener: usize,
    upstream: Option<SocketAddr>,
    toxics: Vec<ToxicSpec>,
}

pub struct Relay {
    poll: Poll,
    commands: Receiver<Envelope>,
    bounds: Bounds,
    metrics: Arc<Metrics>,
    proxies: HashMap<u64, ProxyEntry>,
    listeners: Slab<Listening>,
    links: Slab<Link>,
    wheel: Wheel<Wake>,
    epoch: Instant,
    rng: Rng,
    scratch: Vec<u8>,
    /// Links and listeners to visit next turn without waiting.
    again: Vec<Wake>,
}

impl Relay {
    /// A relay and the waker the API uses to tell it a command is waiting.
    pub fn new(
        commands: Receiver<Envelope>,
        bounds: Bounds,
        metrics: Arc<Metrics>,
    ) -> io::Result<(Relay, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let epoch = Instant::now();
        let seed = epoch.elapsed().as_nanos() as u64 ^ std::process::id() as u64;
        let relay = Relay {
            poll,
            commands,
            bounds,
            metrics,
            proxies: HashMap::new(),
            listeners: Slab::new(),
            links: Slab::new(),
            wheel: Wheel::new(1, WHEEL_SLOTS),
            epoch,
            rng: Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66),
            scratch: vec![0; READ_CHUNK],
            again: Vec::new(),
        };
        Ok((relay, waker))
    }

    /// Runs until the command channel closes (the API is gone).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let mut expired = Vec::new();
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        if !self.take_commands(now) {
                            return Ok(());
                        }
                    }
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE, now),
                    Token(t) => self.on_socket(t - 1, event, now),
                }
            }
            self.wheel.advance(self.millis(now), &mut expired);
            for wake in expired.drain(..) {
                self.wake(wake, true, now);
            }
            for wake in std::mem::take(&mut self.again) {
                self.wake(wake, false, now);
            }
            self.metrics.queued_bytes.store(
                self.links.iter().map(|(_, l)| l.charged() as u64).sum(),
                Ordering::Relaxed,
            );
        }
    }

    /// Visits what the wheel (`fired`) or the last turn asked for.
    fn wake(&mut self, wake: Wake, fired: bool, now: Instant) {
        match wake {
            Wake::Link(key) => {
                let Some(link) = self.links.get_mut(key) else {
                    return;
                };
                if fired {
                    link.timer = None;
                }
                self.pump(key, now);
            }
            Wake::Listener(key) if fired => self.resume_listener(key, now),
            Wake::Listener(key) => self.accept(key, now),
        }
    }

    fn millis(&self, now: Instant) -> Millis {
        now.saturating_duration_since(self.epoch).as_millis() as Millis
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = self.wheel.next_expiry()?;
        let now = self.millis(Instant::now());
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    /// Carries out every waiting command; `false` when the API is gone.
    fn take_commands(&mut self, now: Instant) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(envelope) => {
                    self.command(envelope.command, now);
                    let _ = envelope.done.send(());
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return true,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Start {
                id,
                listener,
                upstream,
                toxics,
            } => self.start(id, listener, upstream, toxics, now),
            Command::Stop { id } => self.stop(id),
            Command::Toxics { id, toxics } => {
                let keys: Vec<usize> = self.links_of(id);
                for key in keys {
                    let link = &mut self.links[key];
                    link.set_toxics(&toxics, now, &mut self.rng);
                    self.pump(key, now);
                }
                if let Some(proxy) = self.proxies.get_mut(&id) {
                    proxy.toxics = toxics;
                }
            }
        }
    }

    fn start(
        &mut self,
        id: u64,
        listener: std::net::TcpListener,
        upstream: Option<SocketAddr>,
        toxics: Vec<ToxicSpec>,
        now: Instant,
    ) {
        self.stop(id);
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let mut listener = TcpListener::from_std(listener);
        let key = self.listeners.vacant_key();
        let token = Token(LISTENER_BASE + key);
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut listener, token, Interest::READABLE)
        {
            log::warn!("chaos proxy: register listener: {error}");
            return;
        }
        self.listeners.insert(Listening {
            proxy: id,
            listener,
            paused: false,
        });
        let entry = ProxyEntry {
            listener: key,
            upstream,
            toxics,
        };
        self.proxies.insert(id, entry);
        self.metrics
            .proxies
            .store(self.proxies.len() as u64, Ordering::Relaxed);
        // Connections may already wait in its queue.
        self.accept(key, now);
    }

    fn stop(&mut self, id: u64) {
        let Some(entry) = self.proxies.remove(&id) else {
            return;
        };
        self.listeners.remove(entry.listener);
        for key in self.links_of(id) {
            self.close(key, false);
        }
        self.metrics
            .proxies
            .store(self.proxies.len() as u64, Ordering::Relaxed);
    }

    fn links_of(&self, id: u64) -> Vec<usize> {
        let of = self.links.iter().filter(|(_, link)| link.proxy == id);
        of.map(|(key, _)| key).collect()
    }

    fn accept(&mut self, key: usize, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            let Some(listening) = self.listeners.get(key) else {
                return;
            };
            if listening.paused {
                return;
            }
            let proxy = listening.proxy;
            match listening.listener.accept() {
                Ok((client, _)) => self.admit(proxy, client, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("chaos proxy: accept: {e}; pausing {ACCEPT_PAUSE} ms");
                    Metrics::add(&self.metrics.accept_errors, 1);
                    self.listeners[key].paused = true;
                    let at = self.millis(now) + ACCEPT_PAUSE;
                    self.wheel.schedule(at, Wake::Listener(key));
                    return;
                }
            }
        }
        self.again.push(Wake::Listener(key));
    }

    fn resume_listener(&mut self, key: usize, now: Instant) {
        if let Some(listening) = self.listeners.get_mut(key) {
            listening.paused = false;
            self.accept(key, now);
        }
    }

    /// A new client of proxy `id`: connect its upstream, start its link.
    fn admit(&mut self, id: u64, client: TcpStream, now: Instant) {
        if self.links.len() >= self.bounds.max_conns {
            Metrics::add(&self.metrics.rejected_max_conns, 1);
            return;
        }
        let Some(entry) = self.proxies.get(&id) else {
            return;
        };
        let upstream = match entry.upstream.map(TcpStream::connect) {
            Some(Ok(upstream)) => upstream,
            _ => {
                Metrics::add(&self.metrics.upstream_failed, 1);
                return;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let link = Link::new(id, client, upstream, &entry.toxics, now, &mut self.rng);
        let key = self.links.insert(link);
        let both = Interest::READABLE | Interest::WRITABLE;
        for side in [CLIENT, UPSTREAM] {
            let token = Token(2 * key + side + 1);
            let socket = &mut self.links[key].sockets[side];
            if self.poll.registry().register(socket, token, both).is_err() {
                self.close(key, false);
                return;
            }
        }
        Metrics::add(&self.metrics.accepted, 1);
        self.metrics
            .open
            .store(self.links.len() as u64, Ordering::Relaxed);
        self.pump(key, now);
    }

    fn on_socket(&mut self, token: usize, event: &mio::event::Event, now: Instant) {
        let (key, side) = (token / 2, token % 2);
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            link.readable[side] = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            link.writable[side] = true;
            if side == UPSTREAM && link.connecting && link.finish_connect().is_err() {
                Metrics::add(&self.metrics.upstream_failed, 1);
                self.close(key, false);
                return;
            }
        }
        self.pump(key, now);
    }

    fn pump(&mut self, key: usize, now: Instant) {
        let mut moved = super::link::Moved::default();
        let link = &mut self.links[key];
        let pumped = link.pump(
            now,
            self.bounds.buffer,
            &mut self.scratch,
            &mut self.rng,
            &mut moved,
        );
        for (counter, n) in self.metrics.bytes.iter().zip(moved.read) {
            Metrics::add(counter, n);
        }
        match pumped {
            Pumped::Close { reset } => self.close(key, reset),
            Pumped::Open { wake, more } => {
                if more {
                    self.again.push(Wake::Link(key));
                }
                self.set_timer(key, wake);
            }
        }
    }

    /// Keeps the link's wheel entry on `wake` (rounded up to the tick).
    fn set_timer(&mut self, key: usize, wake: Option<Instant>) {
        let deadline = wake.map(|at| {
            let since = at.saturating_duration_since(self.epoch);
            since.as_nanos().div_ceil(1_000_000) as Millis
        });
        let link = &mut self.links[key];
        if link.timer.map(|(_, at)| at) == deadline {
            return;
        }
        if let Some((timer, _)) = link.timer.take() {
            self.wheel.cancel(timer);
        }
        if let Some(at) = deadline {
            let timer = self.wheel.schedule(at, Wake::Link(key));
            self.links[key].timer = Some((timer, at));
        }
    }

    fn close(&mut self, key: usize, reset: bool) {
        let mut link = self.links.remove(key);
        if let Some((timer, _)) = link.timer.take() {
            self.wheel.cancel(timer);
        }
        for socket in &mut link.sockets {
            let _ = self.poll.registry().deregister(socket);
        }
        if reset {
            Metrics::add(&self.metrics.resets, 1);
        }
        link.close(reset);
        self.metrics
            .open
            .store(self.links.len() as u64, Ordering::Relaxed);
    }
}
