//! The admin endpoint: a tiny, bounded HTTP/1.1 server on its own thread
//! serving `/metrics`, `/healthz` and `/readyz`, and `POST /reload`
//! (`engine/reload/`: the reload runs on this thread, answered when done).
//!
//! It runs its own small mio loop so that a slow or hostile scraper can
//! never stall a shard: the only thing it shares with the shards is the
//! [`Registry`], which it reads with relaxed atomic loads.
//!
//! HTTP is implemented only as far as a scraper or a health checker needs:
//! one request per connection, the request line is parsed and the headers
//! are ignored, every response carries `Content-Length` and
//! `Connection: close`, and the connection is closed after it. That keeps
//! each connection's life a straight line (read head → write response →
//! close), which makes every bound below easy to state.
//!
//! Bounds: at most [`ADMIN_CONNECTIONS_MAX`] connections, each with a
//! request buffer of at most [`REQUEST_BYTES_MAX`] and a whole-life deadline
//! of [`ADMIN_TIMEOUT`]. Memory is therefore at most 16 × 8 KiB of request
//! buffers plus one rendered response per connection (a few hundred bytes
//! per shard).
//!
//! Accepting is paced by the shards' own `Acceptor`: out of file
//! descriptors, it sheds one waiting connection with its spare fd and
//! pauses (10 ms doubling to 1 s, ended early by a close), so the admin
//! thread never spins on a listener it cannot accept from.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::engine::metrics::render::render;
use crate::engine::metrics::{Registry, ReloadResult};
use crate::engine::reload::Reloader;
use crate::engine::shard::accept::Acceptor;
use crate::engine::timer::Millis;

/// Admin connections served at once. A scraper or health checker needs
/// one; the margin covers several of them plus an operator's `curl`. Over
/// the bound the oldest connection still waiting for its request is closed
/// to make room (see `free_slot`); if every slot is busy writing, the new
/// connection is accepted and closed at once, so the backlog cannot fill
/// with connections nobody will serve.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;

/// Largest request head (request line and headers) read from one admin
/// connection: 8 KiB, the usual limit of HTTP servers, and far more than a
/// `GET /metrics` needs. A longer head is answered with 431 and closed, so
/// that a peer cannot make the admin thread buffer without bound.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;

/// How long one admin connection may live, from accept to close, whatever
/// it does. Closes slowloris peers (a head sent a byte at a time) and peers
/// that never read their response, so that they cannot hold the
/// [`ADMIN_CONNECTIONS_MAX`] slots.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections accepted per loop turn before the connections already open
/// get their turn; the rest of the backlog is taken on the next turn (the
/// poll is then immediate).
const ACCEPT_BATCH: usize = 2 * ADMIN_CONNECTIONS_MAX;

/// Readiness events taken per poll: one per connection plus the listener,
/// so a turn can see every socket at once.
const EVENTS_MAX: usize = ADMIN_CONNECTIONS_MAX + 1;

/// Bytes read at once while discarding input after the response.
const DRAIN_CHUNK: usize = 1024;

/// File descriptors the admin endpoint holds while running besides its
/// connections: the listener, the epoll instance (mio's `Poll` opens
/// exactly one fd on Linux; no waker is used) and the accept's spare fd.
const ADMIN_FDS_OWN: usize = 3;

/// The listener's token; connections use their slot index.
const LISTENER: Token = Token(usize::MAX);

/// A running admin endpoint.
pub struct Admin {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// The thread serving it.
    pub thread: JoinHandle<()>,
}

/// Binds `addr` now (so a bind error is reported before serving starts)
/// and serves it on a new thread until the process exits.
///
/// The admin endpoint's own descriptors are added to
/// `registry.fds_other` while they are open, so that
/// `holdfast_fd_unaccounted` stays 0 while scraping.
pub fn spawn(
    addr: SocketAddr,
    registry: Arc<Registry>,
    reloader: Option<Arc<Reloader>>,
) -> io::Result<Admin> {
    spawn_with(addr, registry, Limits::PRODUCTION, reloader)
}

/// The bounds of one admin endpoint; the production values are the public
/// constants, tests shrink them.
#[derive(Clone, Copy, Debug)]
struct Limits {
    connections_max: usize,
    request_bytes_max: usize,
    timeout: Duration,
}

impl Limits {
    const PRODUCTION: Limits = Limits {
        connections_max: ADMIN_CONNECTIONS_MAX,
        request_bytes_max: REQUEST_BYTES_MAX,
        timeout: ADMIN_TIMEOUT,
    };
}

fn spawn_with(
    addr: SocketAddr,
    registry: Arc<Registry>,
    limits: Limits,
    reloader: Option<Arc<Reloader>>,
) -> io::Result<Admin> {
    let context = |what: &str, error: io::Error| {
        io::Error::new(
            error.kind(),
            format!("admin listener {addr}: {what}: {error}"),
        )
    };
    let mut listener = TcpListener::bind(addr).map_err(|e| context("bind", e))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| context("local_addr", e))?;
    let poll = Poll::new().map_err(|e| context("epoll_create", e))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| context("register", e))?;
    let acceptor = Acceptor::named("admin accept").map_err(|e| context("spare fd", e))?;
    let mut admin_loop = AdminLoop::new(poll, listener, acceptor, registry, limits);
    admin_loop.reloader = reloader;
    let thread = std::thread::Builder::new()
        .name("holdfast-admin".into())
        .spawn(move || admin_loop.run())
        .map_err(|e| context("spawn thread", e))?;
    Ok(Admin { local_addr, thread })
}

/// The admin thread's state.
struct AdminLoop {
    poll: Poll,
    listener: TcpListener,
    /// Accept pacing, on a clock of milliseconds since `epoch`.
    acceptor: Acceptor,
    epoch: Instant,
    registry: Arc<Registry>,
    /// Runs `POST /reload`, if the server reloads.
    reloader: Option<Arc<Reloader>>,
    limits: Limits,
    /// Open connections; the index is the token.
    /// Invariant: `slots.len() == limits.connections_max`.
    slots: Vec<Option<Connection>>,
}

/// One admin connection.
struct Connection {
    stream: TcpStream,
    /// The connection is closed at this instant whatever its phase.
    deadline: Instant,
    phase: Phase,
}

/// Where a connection is in its one request/response exchange.
enum Phase {
    /// Reading the request head.
    /// Invariant: `head.len() <= limits.request_bytes_max`.
    Reading { head: Vec<u8> },
    /// Writing `response[written..]`.
    Writing { response: Vec<u8>, written: usize },
    /// The response is sent and our side shut down; input is read and
    /// discarded until the peer closes. Closing with unread input would
    /// make the kernel send a reset, which can destroy the response before
    /// the peer has read it (for example after a 431).
    Draining,
}

/// What advancing a connection came to.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Waiting for readiness.
    Blocked,
    /// Finished or failed: close it.
    Close,
}

impl AdminLoop {
    /// Takes over `poll`, `listener` (already registered) and `acceptor`
    /// and counts their fds in `fds_other`; `Drop` gives the count back,
    /// also when the thread cannot be started.
    fn new(
        poll: Poll,
        listener: TcpListener,
        acceptor: Acceptor,
        registry: Arc<Registry>,
        limits: Limits,
    ) -> AdminLoop {
        registry
            .fds_other
            .fetch_add(ADMIN_FDS_OWN, Ordering::Relaxed);
        AdminLoop {
            poll,
            listener,
            acceptor,
            epoch: Instant::now(),
            registry,
            reloader: None,
            limits,
            slots: (0..limits.connections_max).map(|_| None).collect(),
        }
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(EVENTS_MAX);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Not a peer's doing nor a passing condition: the poller
                // itself is broken. The shards do not depend on this
                // thread, so stop serving and say why.
                log::error!("admin endpoint stopped: epoll_wait: {error}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.acceptor.ready = true,
                    Token(index) => self.advance(index),
                }
            }
            let now = Instant::now();
            if self.acceptor.due(self.millis(now)) {
                self.acceptor.begin();
                self.accept(now);
            }
            self.close_expired(now);
        }
    }

    /// `now` on the acceptor's clock.
    fn millis(&self, now: Instant) -> Millis {
        now.saturating_duration_since(self.epoch).as_millis() as Millis
    }

    /// Zero while accepting is due (the listener is edge-triggered: a
    /// batch that ended at its bound gets no new event for the rest), else
    /// the earliest of the connection deadlines and the end of an accept
    /// pause; `None` (wait for an event) when there is neither.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.acceptor.due(self.millis(now)) {
            return Some(Duration::ZERO);
        }
        let resume = self
            .acceptor
            .resume_at()
            .map(|at| self.epoch + Duration::from_millis(at));
        self.slots
            .iter()
            .flatten()
            .map(|connection| connection.deadline)
            .chain(resume)
            .min()
            .map(|wake| wake.saturating_duration_since(now))
    }

    /// Accepts up to [`ACCEPT_BATCH`] waiting connections.
    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.acceptor.on_accepted();
                    self.admit(stream, peer, now);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.acceptor.ready = false;
                    return;
                }
                Err(error) => {
                    let listener = &self.listener;
                    let shed = || listener.accept().is_ok();
                    if !self
                        .acceptor
                        .on_error_uncounted(&error, self.millis(now), shed)
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Gives a new connection a slot and reads its request if it came with
    /// the handshake.
    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let index = self.free_slot();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut stream, Token(index), interest)
        {
            log::warn!("admin: {peer}: epoll_ctl: {error}; closed");
            return;
        }
        self.registry.fds_other.fetch_add(1, Ordering::Relaxed);
        self.slots[index] = Some(Connection {
            stream,
            deadline: now + self.limits.timeout,
            phase: Phase::Reading {
                head: Vec::with_capacity(self.limits.request_bytes_max),
            },
        });
        // The peer may have sent its request already; the readable edge
        // for it can come with this same accept, so try now.
        self.advance(index);
    }

    /// A slot for a new connection. When all are taken, one gives up its
    /// slot, so that no set of peers can lock a probe out while the process
    /// lives: the oldest connection that already has its answer and holds
    /// the socket open (keep-alive clients, sidecars), else the oldest one
    /// still waiting for its request head (slowloris), else the oldest one
    /// being written to (a peer that does not read). Such peers can only
    /// shorten each other's lives.
    fn free_slot(&mut self) -> usize {
        if let Some(index) = self.slots.iter().position(Option::is_none) {
            return index;
        }
        let oldest = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| slot.as_ref().map(|c| (index, c)))
            .min_by_key(|(_, connection)| (connection.phase.eviction_rank(), connection.deadline))
            .map(|(index, _)| index)
            .expect("the admin endpoint has at least one slot");
        log::debug!("admin: connection {oldest} evicted for a new one");
        self.close(oldest);
        oldest
    }

    /// Moves connection `index` as far as its socket allows. Safe to call
    /// on any event, stale or spurious: each phase just tries its I/O until
    /// it would block. (A slot freed and refilled within one batch of
    /// events may see the old connection's event; that is only a spurious
    /// wake-up for the new one.)
    fn advance(&mut self, index: usize) {
        let Some(connection) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        let progress = connection.advance(&self.registry, self.reloader.as_deref(), &self.limits);
        if progress == Progress::Close {
            self.close(index);
        }
    }

    fn close_expired(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            if self.slots[index]
                .as_ref()
                .is_some_and(|connection| now >= connection.deadline)
            {
                log::debug!("admin: connection {index} timed out; closed");
                self.close(index);
            }
        }
    }

    fn close(&mut self, index: usize) {
        if let Some(mut connection) = self.slots[index].take() {
            // Closing the fd removes it from epoll anyway; deregistering
            // first keeps mio's view and the kernel's in step.
            let _ = self.poll.registry().deregister(&mut connection.stream);
            drop(connection);
            self.registry.fds_other.fetch_sub(1, Ordering::Relaxed);
            // An fd is free again: end an accept pause now.
            self.acceptor.on_close();
        }
    }
}

impl Drop for AdminLoop {
    fn drop(&mut self) {
        let open = self.slots.iter().flatten().count();
        self.registry
            .fds_other
            .fetch_sub(ADMIN_FDS_OWN + open, Ordering::Relaxed);
    }
}

impl Phase {
    /// Which connections give up their slot first when all are taken
    /// (lowest first): answered, then not yet asking, then being answered.
    fn eviction_rank(&self) -> u8 {
        match self {
            Phase::Draining => 0,
            Phase::Reading { .. } => 1,
            Phase::Writing { .. } => 2,
        }
    }
}

impl Connection {
    fn advance(
        &mut self,
        registry: &Registry,
        reloader: Option<&Reloader>,
        limits: &Limits,
    ) -> Progress {
        loop {
            let next = match &mut self.phase {
                Phase::Reading { head } => {
                    match read_head(&mut self.stream, head, limits.request_bytes_max) {
                        Ok(Some(reply)) => Phase::Writing {
                            response: response(reply, registry, reloader),
                            written: 0,
                        },
                        Ok(None) => return Progress::Blocked,
                        Err(_) => return Progress::Close,
                    }
                }
                Phase::Writing { response, written } => {
                    if let Some(progress) = write_response(&mut self.stream, response, written) {
                        return progress;
                    }
                    Phase::Draining
                }
                Phase::Draining => return drain(&mut self.stream),
            };
            self.phase = next;
        }
    }
}

/// Writes `response[written..]` and then shuts down our side. `None`:
/// done, go on to draining; else blocked or failed.
fn write_response(
    stream: &mut TcpStream,
    response: &[u8],
    written: &mut usize,
) -> Option<Progress> {
    while *written < response.len() {
        match stream.write(&response[*written..]) {
            Ok(0) => return Some(Progress::Close),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(Progress::Blocked),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(Progress::Close),
        }
    }
    // FIN now, so the peer sees the end of the response while we wait for
    // its close.
    if stream.shutdown(Shutdown::Write).is_err() {
        return Some(Progress::Close);
    }
    None
}

/// Reads into `head` until the request head is complete (or is known to
/// be bad), the socket would block, or the peer is gone.
///
/// `Ok(Some(reply))`: answer with `reply`. `Ok(None)`: need more input.
/// `Err`: the peer closed or failed before a complete request; close
/// without answering.
fn read_head(
    stream: &mut TcpStream,
    head: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<Reply>> {
    loop {
        if head.len() >= limit {
            return Ok(Some(Reply::HeadTooLarge));
        }
        let start = head.len();
        head.resize(limit, 0);
        let read = stream.read(&mut head[start..]);
        head.truncate(start + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                if let Some(reply) = examine_head(head, start) {
                    return Ok(Some(reply));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Decides on `head` after new bytes arrived at `head[new_from..]`:
/// the reply once the head is complete, or at once when the request line
/// is already known to be malformed (no point waiting for the rest of a
/// garbage head). `None`: need more input.
fn examine_head(head: &[u8], new_from: usize) -> Option<Reply> {
    // The terminator may straddle the old and the new bytes.
    let search_from = new_from.saturating_sub(3);
    let complete = find(&head[search_from..], b"\r\n\r\n").is_some();
    let line_end = find(head, b"\r\n");
    match (line_end, complete) {
        (Some(end), true) => Some(route(&head[..end])),
        (Some(end), false) => match route(&head[..end]) {
            Reply::BadRequest => Some(Reply::BadRequest),
            _ => None,
        },
        (None, _) => None,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Reads and discards input until the peer closes (or fails).
fn drain(stream: &mut TcpStream) -> Progress {
    let mut scratch = [0u8; DRAIN_CHUNK];
    loop {
        match stream.read(&mut scratch) {
            Ok(0) => return Progress::Close,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Progress::Close,
        }
    }
}

/// The answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Metrics,
    Healthz,
    Readyz,
    Reload,
    NotFound,
    MethodNotAllowed,
    ReloadNotPost,
    BadRequest,
    HeadTooLarge,
}

/// Routes a request line (without its CRLF): `METHOD SP TARGET SP VERSION`.
fn route(line: &[u8]) -> Reply {
    let Ok(line) = std::str::from_utf8(line) else {
        return Reply::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Reply::BadRequest;
    };
    let method_ok = !method.is_empty() && method.bytes().all(is_token_byte);
    let version_ok = matches!(version, "HTTP/1.0" | "HTTP/1.1");
    if !method_ok || !version_ok || !target.starts_with('/') {
        return Reply::BadRequest;
    }
    // A scraper may add a query string; it selects nothing here.
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    match (method, path) {
        ("POST", "/reload") => Reply::Reload,
        ("GET", "/metrics") => Reply::Metrics,
        ("GET", "/healthz") => Reply::Healthz,
        ("GET", "/readyz") => Reply::Readyz,
        (_, "/reload") => Reply::ReloadNotPost,
        ("GET", _) => Reply::NotFound,
        _ => Reply::MethodNotAllowed,
    }
}

/// Runs a reload for `POST /reload`: the status (200 applied, 422 the file
/// is invalid, 409 it changes a setting that is not live) and the one line
/// that says what happened.
fn reload(reloader: Option<&Reloader>) -> (&'static str, String) {
    let Some(reloader) = reloader else {
        let why = "reload unavailable: this server was started without a settings source\n";
        return ("503 Service Unavailable", why.into());
    };
    let outcome = reloader.reload();
    let status = match outcome.result() {
        ReloadResult::Applied => "200 OK",
        ReloadResult::Invalid => "422 Unprocessable Content",
        ReloadResult::Refused => "409 Conflict",
    };
    (status, format!("{}\n", outcome.message()))
}

/// `tchar` of RFC 9110, the bytes a method may consist of.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The complete response bytes for `reply`.
fn response(reply: Reply, registry: &Registry, reloader: Option<&Reloader>) -> Vec<u8> {
    const TEXT: &str = "text/plain; charset=utf-8";
    const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
    let mut rendered = String::new();
    let reloaded;
    let (status, content_type, body): (&str, &str, &str) = match reply {
        Reply::Metrics => {
            render(registry, &mut rendered);
            ("200 OK", METRICS, &rendered)
        }
        Reply::Healthz => ("200 OK", TEXT, "ok\n"),
        Reply::Readyz if registry.ready.load(Ordering::Relaxed) => ("200 OK", TEXT, "ready\n"),
        Reply::Readyz => ("503 Service Unavailable", TEXT, "draining\n"),
        Reply::Reload => {
            reloaded = reload(reloader);
            (reloaded.0, TEXT, reloaded.1.as_str())
        }
        Reply::NotFound => ("404 Not Found", TEXT, "not found\n"),
        Reply::MethodNotAllowed | Reply::ReloadNotPost => {
            ("405 Method Not Allowed", TEXT, "method not allowed\n")
        }
        Reply::BadRequest => ("400 Bad Request", TEXT, "bad request\n"),
        Reply::HeadTooLarge => (
            "431 Request Header Fields Too Large",
            TEXT,
            "request head too large\n",
        ),
    };
    let allow = match reply {
        Reply::MethodNotAllowed => "Allow: GET\r\n",
        Reply::ReloadNotPost => "Allow: POST\r\n",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {allow}Connection: close\r\n\r\n",
        body.len()
    );
    let mut bytes = Vec::with_capacity(head.len() + body.len());
    bytes.extend_from_slice(head.as_bytes());
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::engine::metrics::ShardMetrics;

    /// Long enough for a loaded CI machine; tests that need the timeout to
    /// fire shrink it.
    const TEST_LIMITS: Limits = Limits {
        connections_max: ADMIN_CONNECTIONS_MAX,
        request_bytes_max: REQUEST_BYTES_MAX,
        timeout: Duration::from_secs(10),
    };

    fn start(limits: Limits, shards: usize) -> (SocketAddr, Arc<Registry>) {
        let shards = (0..shards)
            .map(|_| Arc::new(ShardMetrics::default()))
            .collect();
        let registry = Arc::new(Registry::new(shards, "epoll"));
        registry.ready.store(true, Ordering::Relaxed);
        let loopback = "127.0.0.1:0".parse().unwrap();
        let admin = spawn_with(loopback, registry.clone(), limits, None).expect("admin binds");
        (admin.local_addr, registry)
    }

    fn connect(addr: SocketAddr) -> StdStream {
        let stream = StdStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    struct Response {
        status: u16,
        headers: String,
        body: String,
    }

    /// Reads a whole response (to EOF, as `Connection: close` promises)
    /// and checks `Content-Length` against it.
    fn read_response(stream: &mut StdStream) -> Response {
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("response to EOF");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("complete head");
        let status = head[9..12].parse().expect("status code");
        let length: usize = header(head, "content-length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "Content-Length matches the body");
        assert_eq!(header(head, "connection"), Some("close".into()));
        Response {
            status,
            headers: head.to_owned(),
            body: body.to_owned(),
        }
    }

    fn header(head: &str, name: &str) -> Option<String> {
        head.lines()
            .filter_map(|line| line.split_once(": "))
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_owned())
    }

    fn request(addr: SocketAddr, raw: &[u8]) -> Response {
        let mut stream = connect(addr);
        stream.write_all(raw).unwrap();
        read_response(&mut stream)
    }

    fn get(addr: SocketAddr, path: &str) -> Response {
        request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
        )
    }

    fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn metrics_served_in_prometheus_text() {
        let (addr, _registry) = start(TEST_LIMITS, 2);
        let response = get(addr, "/metrics");
        assert_eq!(response.status, 200);
        assert_eq!(
            header(&response.headers, "content-type").as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let scrape =
            prometheus_parse::Scrape::parse(response.body.lines().map(|l| Ok(l.to_owned())))
                .unwrap();
        assert!(scrape.docs.contains_key("holdfast_connections_open"));
        assert!(scrape.docs.contains_key("holdfast_fd_unaccounted"));
    }

    #[test]
    fn metrics_query_string_ignored() {
        let (addr, _registry) = start(TEST_LIMITS, 1);
        assert_eq!(get(addr, "/metrics?format=text").status, 200);
    }

    #[test]
    fn healthz_ok() {
        let (addr, _registry) = start(TEST_LIMITS, 1);
        let response = get(addr, "/healthz");
        assert_eq!((response.status, response.body.as_str()), (200, "ok\n"));
    }

    #[test]
    fn readyz_follows_ready_flag() {
        let (addr, registry) = start(TEST_LIMITS, 1);
        let response = get(addr, "/readyz");
        assert_eq!((response.status, response.body.as_str()), (200, "ready\n"));
        registry.ready.store(false, Ordering::Relaxed);
        let response = get(addr, "/readyz");
        assert_eq!(
            (response.status, response.body.as_str()),
            (503, "draining\n")
        );
    }

    #[test]
    fn unknown_path_not_found() {
        let (addr, _registry) = start(TEST_LIMITS, 1);
        assert_eq!(get(addr, "/").status, 404);
        assert_eq!(get(addr, "/metricsx").status, 404);
    }

    #[test]
    fn other_method_not_allowed() {
        let (addr, _registry) = start(TEST_LIMITS, 1);
        let response = request(addr, b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(response.status, 405);
        assert_eq!(header(&response.headers, "allow").as_deref(), Some("GET"));
    }

    /// Without a reloader (a server embedded without a settings source),
    /// `POST /reload` says so; `GET /reload` names the method to use.
    #[test]
    fn reload_without_a_source_is_unavailable() {
        let (addr, registry) = start(TEST_LIMITS, 1);
        let response = request(addr, b"POST /reload HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(response.status, 503);
        assert!(
            response.body.starts_with("reload unavailable"),
            "{}",
            response.body
        );
        let response = request(addr, b"GET /reload HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(response.status, 405);
        assert_eq!(header(&response.headers, "allow").as_deref(), Some("POST"));
        let reloads = &registry.config.reloads;
        assert!(reloads.iter().all(|n| n.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn garbage_request_bad_request() {
        let (addr, _registry) = start(TEST_LIMITS, 1);
        for garbage in [
            &b"garbage\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"G(T /metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            let response = request(addr, garbage);
            assert_eq!(response.status, 400, "{garbage:?}");
        }
    }

    #[test]
    fn bad_request_line_answered_before_head_ends() {
        let (addr, _registry) = start(TEST_LIMITS, 1);
        // Only the request line: no empty line follows, yet it is already
        // known to be malformed, so the answer must not wait for more.
        let response = request(addr, b"\x00\x01 not http\r\n");
        assert_eq!(response.status, 400);
    }

    #[test]
    fn head_split_across_reads() {
        let (addr, _registry) = start(TEST_LIMITS, 1);
        let mut stream = connect(addr);
        for piece in [
            &b"GET /hea"[..],
            b"lthz HTTP/1.1\r\nHost: t\r",
            b"\n\r",
            b"\n",
        ] {
            stream.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let response = read_response(&mut stream);
        assert_eq!((response.status, response.body.as_str()), (200, "ok\n"));
    }

    #[test]
    fn slowloris_closed_after_timeout() {
        let timeout = Duration::from_millis(300);
        let (addr, registry) = start(
            Limits {
                timeout,
                ..TEST_LIMITS
            },
            1,
        );
        let started = Instant::now();
        let mut stream = connect(addr);
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: sl")
            .unwrap();
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        let elapsed = started.elapsed();
        assert!(read.is_ok(), "closed with FIN, not reset: {read:?}");
        assert!(rest.is_empty(), "no response to half a request");
        assert!(
            elapsed >= timeout,
            "closed after {elapsed:?}, before the timeout"
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "closed only after {elapsed:?}"
        );
        eventually("the admin fds to be given back", || {
            registry.fds_other.load(Ordering::Relaxed) == ADMIN_FDS_OWN
        });
    }

    #[test]
    fn idle_holders_cannot_lock_out_a_scraper() {
        let (addr, registry) = start(TEST_LIMITS, 1);
        // Fill every slot with a connection that never sends a request.
        let holders: Vec<StdStream> = (0..ADMIN_CONNECTIONS_MAX).map(|_| connect(addr)).collect();
        eventually("every slot to be taken", || {
            registry.fds_other.load(Ordering::Relaxed) == ADMIN_FDS_OWN + ADMIN_CONNECTIONS_MAX
        });
        // A scraper still gets through, long before the holders time out:
        // the oldest holder gave up its slot.
        assert_eq!(get(addr, "/healthz").status, 200);
        assert_eq!(get(addr, "/metrics").status, 200);
        let mut first = &holders[0];
        first
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut byte = [0u8; 1];
        match first.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("the oldest holder was not evicted: {other:?}"),
        }
        // The slots never exceed the bound.
        assert!(
            registry.fds_other.load(Ordering::Relaxed) <= ADMIN_FDS_OWN + ADMIN_CONNECTIONS_MAX
        );
        drop(holders);
        eventually("the slots to free up", || {
            registry.fds_other.load(Ordering::Relaxed) == ADMIN_FDS_OWN
        });
    }

    /// Connections that got their answer and keep the socket open, as
    /// keep-alive scrapers and sidecars do (each has read its response).
    fn answered_holders(addr: SocketAddr, count: usize) -> Vec<StdStream> {
        (0..count)
            .map(|_| {
                let mut stream = connect(addr);
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                    .unwrap();
                let mut head = [0u8; 12];
                stream.read_exact(&mut head).unwrap();
                assert_eq!(&head, b"HTTP/1.1 200");
                stream
            })
            .collect()
    }

    #[test]
    fn answered_keep_alive_holders_cannot_lock_out_a_probe() {
        let (addr, registry) = start(TEST_LIMITS, 1);
        let holders = answered_holders(addr, ADMIN_CONNECTIONS_MAX);
        eventually("every slot to be taken", || {
            registry.fds_other.load(Ordering::Relaxed) == ADMIN_FDS_OWN + ADMIN_CONNECTIONS_MAX
        });
        for _ in 0..3 {
            assert_eq!(get(addr, "/healthz").status, 200);
        }
        assert!(
            registry.fds_other.load(Ordering::Relaxed) <= ADMIN_FDS_OWN + ADMIN_CONNECTIONS_MAX
        );
        drop(holders);
    }

    #[test]
    fn answered_holders_are_evicted_before_ones_still_asking() {
        let (addr, registry) = start(TEST_LIMITS, 1);
        let half = ADMIN_CONNECTIONS_MAX / 2;
        // The older half has not sent a request; the younger half has its
        // answer and sits on it.
        let asking: Vec<StdStream> = (0..half).map(|_| connect(addr)).collect();
        eventually("the askers to be accepted", || {
            registry.fds_other.load(Ordering::Relaxed) == ADMIN_FDS_OWN + half
        });
        let answered = answered_holders(addr, ADMIN_CONNECTIONS_MAX - half);
        eventually("every slot to be taken", || {
            registry.fds_other.load(Ordering::Relaxed) == ADMIN_FDS_OWN + ADMIN_CONNECTIONS_MAX
        });
        assert_eq!(get(addr, "/healthz").status, 200);
        // The oldest connection of all is still there: it may yet ask.
        let mut oldest = &asking[0];
        oldest
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut byte = [0u8; 1];
        match oldest.read(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!("the oldest asker was evicted before an answered one: {other:?}"),
        }
        drop((asking, answered));
    }

    #[test]
    fn oversized_head_rejected_and_closed() {
        let (addr, _registry) = start(TEST_LIMITS, 1);
        let mut raw = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while raw.len() <= 2 * REQUEST_BYTES_MAX {
            raw.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let mut stream = connect(addr);
        stream.write_all(&raw).unwrap();
        let response = read_response(&mut stream);
        assert_eq!(response.status, 431);
    }

    #[test]
    fn large_response_written_across_writable_events() {
        // A response far larger than what the socket buffers can take (the
        // client's receive buffer is pinned small, the server's send buffer
        // grows to 4 MiB at most by default), so the admin loop must keep
        // the remainder and finish it on later writable events.
        let shards = 40_000;
        let (addr, _registry) = start(TEST_LIMITS, shards);
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: StdStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let response = read_response(&mut stream);
        assert_eq!(response.status, 200);
        assert!(
            response.body.len() > 8 << 20,
            "{} bytes",
            response.body.len()
        );
        let last = format!(
            "holdfast_loop_iterations_total{{shard=\"{}\"}} 0\n",
            shards - 1
        );
        assert!(response.body.contains(&last));
        assert!(response.body.ends_with('\n'));
    }

    #[test]
    fn admin_fds_counted_while_open() {
        let (addr, registry) = start(TEST_LIMITS, 1);
        assert_eq!(registry.fds_other.load(Ordering::Relaxed), ADMIN_FDS_OWN);
        let idle = connect(addr);
        eventually("the connection to be counted", || {
            registry.fds_other.load(Ordering::Relaxed) == ADMIN_FDS_OWN + 1
        });
        drop(idle);
        eventually("the connection to be given back", || {
            registry.fds_other.load(Ordering::Relaxed) == ADMIN_FDS_OWN
        });
    }

    #[test]
    fn bind_error_names_the_listener() {
        let (addr, _registry) = start(TEST_LIMITS, 1);
        let registry = Arc::new(Registry::new(Vec::new(), "epoll"));
        let error = match spawn(addr, registry.clone(), None) {
            Err(error) => error,
            Ok(_) => panic!("second bind of {addr} succeeded"),
        };
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert!(
            error
                .to_string()
                .starts_with(&format!("admin listener {addr}: bind:")),
            "{error}"
        );
        assert_eq!(registry.fds_other.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn fd_shortage_pauses_accepting_until_a_close() {
        let registry = Arc::new(Registry::new(Vec::new(), "epoll"));
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut admin_loop = AdminLoop::new(
            Poll::new().unwrap(),
            listener,
            Acceptor::named("admin accept").unwrap(),
            registry.clone(),
            TEST_LIMITS,
        );
        let now = Instant::now();
        assert_eq!(
            admin_loop.poll_timeout(now),
            Some(Duration::ZERO),
            "accepting is due at start"
        );
        admin_loop.acceptor.ready = false;
        assert_eq!(admin_loop.poll_timeout(now), None, "idle: wait for events");
        admin_loop.acceptor.ready = true;
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let go_on = admin_loop
            .acceptor
            .on_error_uncounted(&emfile, admin_loop.millis(now), || false);
        assert!(!go_on, "EMFILE stops this batch");
        let pause = admin_loop.poll_timeout(now).expect("a pause ends");
        assert!(
            pause > Duration::ZERO && pause <= Duration::from_millis(10),
            "{pause:?}"
        );
        // A connection closing frees an fd: the pause ends at once.
        admin_loop.acceptor.on_close();
        assert_eq!(admin_loop.poll_timeout(now), Some(Duration::ZERO));
        assert_eq!(registry.fds_other.load(Ordering::Relaxed), ADMIN_FDS_OWN);
        drop(admin_loop);
        assert_eq!(
            registry.fds_other.load(Ordering::Relaxed),
            0,
            "given back on drop"
        );
    }

    #[test]
    fn request_lines_routed() {
        let cases: [(&[u8], Reply); 11] = [
            (b"POST /reload HTTP/1.1", Reply::Reload),
            (b"GET /reload HTTP/1.1", Reply::ReloadNotPost),
            (b"PUT /nope HTTP/1.1", Reply::MethodNotAllowed),
            (b"GET /metrics HTTP/1.1", Reply::Metrics),
            (b"GET /metrics HTTP/1.0", Reply::Metrics),
            (b"GET /healthz?x=1 HTTP/1.1", Reply::Healthz),
            (b"GET /readyz HTTP/1.1", Reply::Readyz),
            (b"GET /nope HTTP/1.1", Reply::NotFound),
            (b"DELETE /metrics HTTP/1.1", Reply::MethodNotAllowed),
            (b"GET  /metrics HTTP/1.1", Reply::BadRequest),
            (b"", Reply::BadRequest),
        ];
        for (line, reply) in cases {
            assert_eq!(route(line), reply, "{:?}", String::from_utf8_lossy(line));
        }
    }
}
