//! Binary upgrade: the running process hands its listening sockets to a
//! new one over a Unix socket, as HAProxy's `expose-fd listeners` and
//! Pingora's upgrade do (both pass the descriptors with SCM_RIGHTS; Envoy's
//! hot restart too, with more shared state than holdfast needs).
//!
//! The old process (`--upgrade-socket PATH`) listens on `PATH`. The new one
//! (`--upgrade-from PATH`) connects and receives an offer: a fixed-length
//! header (`holdfast-upgrade 1 GENERATION COUNT`) then the listeners, at
//! most [`FDS_PER_MESSAGE`] per one-byte message. It serves on them and
//! writes `ready`; only then does the old process stop accepting and drain
//! (as on SIGTERM), answering `draining` once its shards have closed their
//! listeners; the new one then accepts what waits in the queues once (see
//! `Shared::sweep_queues` in `shard/core.rs`). Both share each listening socket
//! in between, so a connection in its queue is accepted by one or the
//! other; the old process accepts what its queue holds when it stops (as
//! on SIGTERM) and closes its descriptor, which does not close the socket
//! the new one holds. A new process that fails before `ready` closes the
//! connection: the old one keeps serving and waits for the next.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::engine::driver::inherit;
use crate::engine::metrics::Registry;

/// Length of the offer's header, padded with spaces.
const HEADER_LEN: usize = 64;
/// The header's first word and protocol version.
const MAGIC: &str = "holdfast-upgrade 1";
/// Descriptors per message: the kernel takes at most 253 (SCM_MAX_FD).
pub const FDS_PER_MESSAGE: usize = 250;
/// The new process's word once it serves.
const READY: &[u8] = b"ready\n";
/// The old process's answer once it drains.
const DRAINING: &[u8] = b"draining\n";

/// What the old process offers: duplicates of its listeners, until it
/// drains (then they are closed, so that closing the shards' own closes
/// the sockets as on any shutdown).
#[derive(Clone)]
pub struct Offer {
    fds: Arc<Mutex<Option<Vec<OwnedFd>>>>,
    listener: Arc<Mutex<Option<RawFd>>>,
    /// The thread serving upgrades, joined before the process exits.
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    generation: u64,
    /// Whose count of the process's own descriptors (`fds_other`) the
    /// offer keeps true as its descriptors come and go.
    registry: Arc<Registry>,
}

impl Offer {
    /// Duplicates of `listeners`, offered as generation `generation`.
    /// Made before the server counts its own descriptors, they are counted
    /// there; `registry` loses them when they are closed.
    pub fn new(
        listeners: &[std::net::TcpListener],
        generation: u64,
        registry: Arc<Registry>,
    ) -> io::Result<Offer> {
        let fds = listeners
            .iter()
            .map(|l| l.try_clone().map(OwnedFd::from))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Offer {
            fds: Arc::new(Mutex::new(Some(fds))),
            listener: Arc::new(Mutex::new(None)),
            thread: Arc::new(Mutex::new(None)),
            generation,
            registry,
        })
    }

    /// Closes the duplicates and stops serving upgrades (the process
    /// drains); idempotent.
    pub fn withdraw(&self) {
        if let Some(fds) = self.fds.lock().expect("offer lock").take() {
            self.registry
                .fds_other
                .fetch_sub(fds.len(), Ordering::Relaxed);
        }
        if let Some(fd) = self.listener.lock().expect("offer lock").take() {
            // Wakes the thread blocked in accept(2), which then ends.
            // SHUT_RDWR on a listening Unix socket cannot fail usefully.
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    }

    /// Serves upgrades on `path` on a thread of its own: every new process
    /// that connects is offered the listeners; the first that answers
    /// `ready` within `timeout` makes this process call `drain`.
    pub fn serve(
        &self,
        path: &Path,
        timeout: Duration,
        drain: impl Fn() + Send + 'static,
    ) -> io::Result<()> {
        let listener = bind(path)?;
        *self.listener.lock().expect("offer lock") = Some(listener.as_raw_fd());
        self.registry.fds_other.fetch_add(1, Ordering::Relaxed);
        let offer = self.clone();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("holdfast-upgrade".into())
            .spawn(move || {
                offer.accept_loop(&listener, &path, timeout, drain);
                drop(listener);
                offer.registry.fds_other.fetch_sub(1, Ordering::Relaxed);
            })?;
        *self.thread.lock().expect("offer lock") = Some(thread);
        Ok(())
    }

    /// Withdraws the offer and waits for the thread serving upgrades to
    /// end, so that a hand-over in progress has answered the new process
    /// (`draining`) before this process exits: its drain can end before
    /// the answer is written.
    pub fn finish(&self) {
        self.withdraw();
        let thread = self.thread.lock().expect("offer lock").take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Offers the listeners to each process that connects until one takes
    /// them, or the offer is withdrawn.
    fn accept_loop(
        &self,
        listener: &UnixListener,
        path: &Path,
        timeout: Duration,
        drain: impl Fn(),
    ) {
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(_) if self.withdrawn() => return,
                Err(e) => {
                    log::warn!("upgrade socket {}: accept: {e}", path.display());
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            match self.hand_over(stream, timeout, &drain) {
                Ok(()) => return,
                Err(e) => log::warn!("upgrade: {e}; this process keeps serving"),
            }
        }
    }

    fn withdrawn(&self) -> bool {
        self.fds.lock().expect("offer lock").is_none()
    }

    /// Sends the listeners to one new process and waits for its `ready`.
    fn hand_over(
        &self,
        mut stream: UnixStream,
        timeout: Duration,
        drain: &dyn Fn(),
    ) -> io::Result<()> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        {
            let fds = self.fds.lock().expect("offer lock");
            let fds = fds
                .as_ref()
                .ok_or_else(|| io::Error::other("draining already: nothing to hand over"))?;
            let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
            send_offer(&mut stream, self.generation, &raw)?;
        }
        log::info!("upgrade: listeners sent to a new process; waiting for it to serve");
        let mut answer = [0u8; READY.len()];
        stream
            .read_exact(&mut answer)
            .map_err(|e| io::Error::other(format!("the new process did not start ({e})")))?;
        if answer != READY {
            return Err(io::Error::other("the new process answered nonsense"));
        }
        log::info!("upgrade: the new process serves; draining");
        drain();
        self.withdraw();
        stream.write_all(DRAINING)?;
        Ok(())
    }
}

/// Binds `path`, replacing a socket file no process listens on any more
/// (one a killed process left behind), never a live one.
fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::other(format!(
                    "{}: another process serves upgrades there",
                    path.display()
                )));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        other => other,
    }
}

/// Writes the header then the descriptors in messages of one byte each.
fn send_offer(stream: &mut UnixStream, generation: u64, fds: &[RawFd]) -> io::Result<()> {
    let mut header = format!("{MAGIC} {generation} {}", fds.len()).into_bytes();
    header.resize(HEADER_LEN, b' ');
    stream.write_all(&header)?;
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let rights = [ControlMessage::ScmRights(chunk)];
        let byte = [io::IoSlice::new(b"L")];
        // A signal that interrupts the send is no reason to give up.
        loop {
            match sendmsg::<()>(stream.as_raw_fd(), &byte, &rights, MsgFlags::empty(), None) {
                Err(nix::errno::Errno::EINTR) => continue,
                sent => {
                    sent.map_err(io::Error::from)?;
                    break;
                }
            }
        }
    }
    Ok(())
}

/// The listeners a new process took from the old one; [`Taken::confirm`]
/// once they are served.
pub struct Taken {
    /// The old process's listeners, in its shard order.
    pub listeners: Vec<std::net::TcpListener>,
    /// This process's generation: the old one's plus one.
    pub generation: u64,
    stream: UnixStream,
    began: Instant,
    path: PathBuf,
}

/// Connects to the old process on `path` and receives its listeners
/// (waiting at most `timeout`).
pub fn take(path: &Path, timeout: Duration) -> io::Result<Taken> {
    let began = Instant::now();
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header)?;
    let (generation, count) = parse_header(&header)?;
    let mut listeners = Vec::with_capacity(count);
    while listeners.len() < count {
        for fd in receive_fds(&stream)? {
            listeners.push(inherit::adopt_listener(fd)?);
        }
    }
    if listeners.len() != count {
        return Err(io::Error::other(format!(
            "offered {count} listeners, received {}",
            listeners.len()
        )));
    }
    Ok(Taken {
        listeners,
        generation: generation + 1,
        stream,
        began,
        path: path.to_path_buf(),
    })
}

/// The generation and listener count of an offer's header.
fn parse_header(header: &[u8]) -> io::Result<(u64, usize)> {
    let bad = || io::Error::other("the upgrade socket does not speak holdfast's upgrade protocol");
    let text = std::str::from_utf8(header).map_err(|_| bad())?;
    let rest = text.strip_prefix(MAGIC).ok_or_else(bad)?;
    let mut words = rest.split_whitespace();
    let generation = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let count: usize = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    if count == 0 || count > 1024 {
        return Err(bad());
    }
    Ok((generation, count))
}

/// One message's descriptors (its one byte read).
fn receive_fds(stream: &UnixStream) -> io::Result<Vec<RawFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; FDS_PER_MESSAGE]);
    // A signal can interrupt the wait (EINTR: the socket has a timeout, so
    // the kernel does not restart it); nothing was received then.
    let msg = loop {
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            received => break received.map_err(io::Error::from)?,
        }
    };
    if msg.bytes == 0 {
        return Err(io::Error::other(
            "the old process closed the upgrade socket",
        ));
    }
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received);
        }
    }
    if fds.is_empty() {
        return Err(io::Error::other("an upgrade message carried no descriptor"));
    }
    Ok(fds)
}

impl Taken {
    /// Tells the old process this one serves, and waits for it to drain;
    /// returns how long the hand-over took, from connecting to its answer.
    pub fn confirm(mut self) -> io::Result<Duration> {
        self.stream.write_all(READY)?;
        let mut answer = [0u8; DRAINING.len()];
        self.stream.read_exact(&mut answer)?;
        if answer != DRAINING {
            return Err(io::Error::other("the old process answered nonsense"));
        }
        Ok(self.began.elapsed())
    }

    /// The socket the listeners came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
