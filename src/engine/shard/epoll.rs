//! The epoll driver's loop, through mio: edge-triggered readiness for the
//! listener, the waker and every connection; the syscalls themselves are in
//! [`crate::engine::driver::mio`].

use std::io;
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::core::{Core, Io};
use crate::engine::buffer::Pool;
use crate::engine::conn::Conn;
use crate::engine::conn::table::{LISTENER, WAKER};
use crate::engine::driver::{self, Read};
use crate::engine::metrics::CloseReason;

/// Read and write to EAGAIN with plain syscalls; a closed connection's
/// socket can go at once (epoll forgets a closed fd by itself). Upstream
/// connections are registered through `registry` as they are made.
struct EpollIo {
    /// A duplicate of the poller's registry (one more fd), only when the
    /// shard has upstreams.
    registry: Option<mio::Registry>,
}

impl Io for EpollIo {
    fn read(
        &mut self,
        _: Token,
        conn: &mut Conn,
        pool: &mut Pool,
        budget: usize,
    ) -> io::Result<Read> {
        driver::mio::read(conn, pool, budget)
    }

    fn flush(&mut self, _: Token, conn: &mut Conn, pool: &mut Pool) -> io::Result<usize> {
        driver::mio::flush(conn, pool)
    }

    fn retire(&mut self, _: Token, _: &mut Conn) -> bool {
        true
    }

    fn connect(&mut self, token: Token, addr: std::net::SocketAddr) -> io::Result<TcpStream> {
        // Non-blocking: the connect completes (or fails) later, reported
        // as writability (or an error) on the socket.
        let mut stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        let registry = self.registry.as_ref().expect("upstreams need the registry");
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(stream)
    }

    fn connect_status(&mut self, _: Token, conn: &mut Conn) -> Option<io::Result<()>> {
        if !conn.write_ready {
            return None;
        }
        // Writable after a non-blocking connect: SO_ERROR says how it
        // went; a peer address says it is connected (mio's advice).
        match conn.stream.take_error() {
            Ok(Some(error)) | Err(error) => return Some(Err(error)),
            Ok(None) => {}
        }
        match conn.stream.peer_addr() {
            Ok(_) => Some(Ok(())),
            Err(error) if error.kind() == io::ErrorKind::NotConnected => {
                conn.write_ready = false;
                None
            }
            Err(error) => Some(Err(error)),
        }
    }
}

/// One shard on epoll.
pub struct EpollShard {
    core: Core,
    io: EpollIo,
    poll: Poll,
    listener: Option<TcpListener>,
}

impl EpollShard {
    /// A shard accepting on `listener`; returns it with the waker that
    /// makes it notice a stop request.
    pub fn new(
        listener: std::net::TcpListener,
        core: Core,
    ) -> io::Result<(EpollShard, Arc<Waker>)> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let registry = match core.upstreams {
            Some(_) => Some(poll.registry().try_clone()?),
            None => None,
        };
        let fds_own = super::fds_per_shard(registry.is_some());
        core.metrics.fds_own.set(fds_own as u64);
        let shard = EpollShard {
            core,
            io: EpollIo { registry },
            poll,
            listener: Some(listener),
        };
        Ok((shard, waker))
    }

    /// Runs the loop until the graceful shutdown has finished.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(self.core.limits.events_max);
        loop {
            let timeout = self.core.wait_timeout(self.listener.is_some());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let turn = self.core.begin_turn(events.iter().count());
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.core.acceptor.ready = true,
                    WAKER => {}
                    token => {
                        let Some(conn) = self.core.conn_mut(token) else {
                            // A stale event for a closed connection.
                            continue;
                        };
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            conn.read_ready = true;
                        }
                        if event.is_read_closed() {
                            conn.fin_seen = true;
                        }
                        if event.is_writable() || event.is_write_closed() || event.is_error() {
                            conn.write_ready = true;
                        }
                        self.core.drive(&mut self.io, token);
                    }
                }
            }
            if self.core.stop_requested() {
                self.close_listener();
                self.core.begin_drain(&mut self.io);
            }
            if self.listener.is_some() && self.core.acceptor.due(self.core.now) {
                self.core.acceptor.begin();
                self.accept_some(self.core.limits.accept_batch);
            }
            self.core.drive_queued(&mut self.io);
            self.core.fire_timers(&mut self.io);
            let done = self.core.drain_done(&mut self.io);
            self.core.end_turn(turn);
            if done.is_some() {
                return Ok(());
            }
        }
    }

    /// The drain begins: accepts every connection in the listener's queue
    /// (the kernel completed their handshakes: closing the listener would
    /// reset them), so that the drain serves them too, then closes it. A
    /// handshake that completes after this is reset.
    fn close_listener(&mut self) {
        self.core.acceptor.begin();
        self.accept_some(self.core.limits.backlog);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            let fds_own = self.core.metrics.fds_own.get();
            self.core.metrics.fds_own.set(fds_own - 1);
        }
    }

    /// Accepts up to `max` waiting connections.
    fn accept_some(&mut self, max: usize) {
        let core = &mut self.core;
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        for _ in 0..max {
            match listener.accept() {
                Ok((stream, _)) => {
                    core.acceptor.on_accepted();
                    let Some(token) = core.admit(stream) else {
                        continue;
                    };
                    let conn = core.conns.get_mut(token).expect("just admitted");
                    let registered = self.poll.registry().register(
                        &mut conn.stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if let Err(e) = registered {
                        log::warn!("registering a connection with epoll: {e}");
                        core.close(&mut self.io, token, CloseReason::Reset);
                    }
                    // No read yet: registration reports any bytes that came
                    // with the handshake as a first event.
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    core.acceptor.ready = false;
                    return;
                }
                Err(e) => {
                    let shed = || listener.accept().is_ok();
                    if !core.acceptor.on_error(&e, core.now, &core.metrics, shed) {
                        return;
                    }
                }
            }
        }
    }
}
