//! The epoll driver, through mio: edge-triggered readiness for the
//! listener, the waker and every connection; reads and writes go on until
//! the kernel says EAGAIN ([`super::socket`]). A connection's readiness
//! lives here, one byte of flags per slot, set by an event and cleared only
//! when a syscall showed the socket drained (or full).

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};

use super::{Driver, Event, Link, Links, Read, Reading, Socket, Token, Waker, socket};
use crate::engine::buffer::Pool;

/// mio token of the shard's listener (no connection token has all ones in
/// its slot half: slots stay below [`super::UPSTREAM_BIT`]).
const LISTENER: mio::Token = mio::Token(usize::MAX);
/// mio token of the shard's waker.
const WAKER: mio::Token = mio::Token(usize::MAX - 1);

/// The socket may have unread bytes (set by a readable event, cleared only
/// by EAGAIN, a short read or end of stream).
const READ: u8 = 1;
/// The socket may take bytes (set by a writable event, cleared by EAGAIN or
/// a short write).
const WRITE: u8 = 2;
/// The poller reported the peer's FIN (EPOLLRDHUP): it raises no edge of
/// its own once reported, so reads go on to end of stream rather than stop
/// at a short read.
const FIN: u8 = 4;

/// One shard's poller and listener.
pub struct Epoll {
    poll: Poll,
    events: Events,
    /// Open until the drain has accepted its queue.
    listener: Option<TcpListener>,
    /// Kept so its eventfd stays open as long as it is registered.
    _waker: Waker,
    /// Readiness flags per connection, indexed by [`Token::index`].
    flags: Vec<u8>,
    /// This wait's connection events, in order (capacity `--events-max`:
    /// never grows).
    ready: VecDeque<Token>,
    /// This wait reported the listener readable.
    listener_ready: bool,
}

impl Epoll {
    /// A poller for `listener` and `waker`, taking at most `events_max`
    /// events per wait.
    pub fn new(
        listener: std::net::TcpListener,
        waker: Waker,
        events_max: usize,
    ) -> io::Result<Epoll> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        poll.registry().register(
            &mut SourceFd(&waker.fd().as_raw_fd()),
            WAKER,
            Interest::READABLE,
        )?;
        Ok(Epoll {
            poll,
            events: Events::with_capacity(events_max),
            listener: Some(listener),
            _waker: waker,
            flags: Vec::new(),
            ready: VecDeque::with_capacity(events_max),
            listener_ready: false,
        })
    }

    fn flags(&mut self, token: Token) -> &mut u8 {
        let index = token.index();
        if self.flags.len() <= index {
            self.flags.resize(index + 1, 0);
        }
        &mut self.flags[index]
    }

    fn has(&self, token: Token, flag: u8) -> bool {
        self.flags
            .get(token.index())
            .is_some_and(|flags| flags & flag != 0)
    }

    fn set(&mut self, token: Token, flag: u8, on: bool) {
        let flags = self.flags(token);
        if on {
            *flags |= flag;
        } else {
            *flags &= !flag;
        }
    }

    fn register(&self, token: Token, socket: &Socket) -> io::Result<()> {
        self.poll.registry().register(
            &mut SourceFd(&socket.as_raw_fd()),
            mio::Token(token.0),
            Interest::READABLE | Interest::WRITABLE,
        )
    }
}

impl Driver for Epoll {
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>, _: &mut impl Links) -> io::Result<usize> {
        if let Err(e) = self.poll.poll(&mut self.events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        let mut count = 0;
        for event in self.events.iter() {
            count += 1;
            let token = match event.token() {
                LISTENER => {
                    self.listener_ready = true;
                    continue;
                }
                WAKER => continue,
                mio::Token(token) => Token(token),
            };
            // A stale token (its connection closed this turn) marks a slot
            // that its next owner resets when it is opened; a flag set too
            // many costs one EAGAIN at most.
            let mut flags = 0;
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                flags |= READ;
            }
            if event.is_read_closed() {
                flags |= FIN;
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                flags |= WRITE;
            }
            if let Some(slot) = self.flags.get_mut(token.index()) {
                *slot |= flags;
            }
            self.ready.push_back(token);
        }
        Ok(count)
    }

    fn next_event(&mut self, _: &mut impl Links) -> Option<Event> {
        if std::mem::take(&mut self.listener_ready) {
            return Some(Event::Listener);
        }
        self.ready.pop_front().map(Event::Ready)
    }

    fn accept(&mut self) -> io::Result<Socket> {
        let Some(listener) = self.listener.as_ref() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // mio accepts with SOCK_NONBLOCK | SOCK_CLOEXEC.
        let (stream, _) = listener.accept()?;
        Ok(Socket::from(stream))
    }

    fn accept_queued(&mut self) -> io::Result<Socket> {
        self.accept()
    }

    fn shed(&mut self) -> bool {
        self.listener
            .as_ref()
            .is_some_and(|listener| listener.accept().is_ok())
    }

    fn open(&mut self, token: Token, link: &mut Link) -> io::Result<()> {
        // No read yet: registration reports any bytes that came with the
        // handshake as a first event.
        *self.flags(token) = WRITE;
        self.register(token, &link.socket)
    }

    fn read(
        &mut self,
        token: Token,
        link: &mut Link,
        pool: &mut Pool,
        budget: usize,
    ) -> io::Result<Read> {
        let fin = self.has(token, FIN);
        let (read, ready) = socket::read(link, pool, budget, fin)?;
        self.set(token, READ, ready);
        Ok(read)
    }

    fn may_read(&self, token: Token) -> bool {
        self.has(token, READ)
    }

    fn expect_read(&mut self, token: Token) {
        self.set(token, READ, true);
    }

    fn flush(&mut self, token: Token, link: &mut Link, pool: &mut Pool) -> io::Result<usize> {
        if !self.has(token, WRITE) {
            if let Some(output) = link.output.take_if(|output| output.is_empty()) {
                pool.give(output);
            }
            return Ok(0);
        }
        let (written, ready) = socket::flush(link, pool)?;
        self.set(token, WRITE, ready);
        Ok(written)
    }

    fn settle(&mut self, _: Token, _: &Link, _: Reading) {}

    fn retire(&mut self, _: Token, _: &mut Link) -> bool {
        // Dropping the socket closes it; epoll forgets a closed fd by itself
        // (none is ever duplicated), so no deregister syscall.
        true
    }

    fn connect(&mut self, token: Token, addr: std::net::SocketAddr) -> io::Result<Socket> {
        // Non-blocking: the connect completes (or fails) later, reported
        // as writability (or an error) on the socket. Nothing is known
        // until then.
        let stream = mio::net::TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        let socket = Socket::from(stream);
        *self.flags(token) = 0;
        self.register(token, &socket)?;
        Ok(socket)
    }

    fn connect_status(&mut self, token: Token, link: &mut Link) -> Option<io::Result<()>> {
        if !self.has(token, WRITE) {
            return None;
        }
        // Writable after a non-blocking connect: SO_ERROR says how it
        // went; a peer address says it is connected (mio's advice).
        match link.socket.take_error() {
            Ok(Some(error)) | Err(error) => return Some(Err(error)),
            Ok(None) => {}
        }
        match link.socket.peer_addr() {
            Ok(_) => Some(Ok(())),
            Err(error) if error.kind() == io::ErrorKind::NotConnected => {
                self.set(token, WRITE, false);
                None
            }
            Err(error) => Some(Err(error)),
        }
    }

    fn stop_accepting(&mut self) -> io::Result<bool> {
        // Readiness needs no collecting: the drain reads every socket to
        // EAGAIN.
        Ok(true)
    }

    fn close_listener(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }

    fn listening(&self) -> bool {
        self.listener.is_some()
    }

    fn busy(&self) -> bool {
        false
    }

    fn finish(&mut self, _: Instant) -> io::Result<bool> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_tokens_never_name_a_slot() {
        for reserved in [LISTENER, WAKER] {
            assert!(reserved.0 & 0xffff_ffff >= super::super::UPSTREAM_BIT);
        }
    }
}
