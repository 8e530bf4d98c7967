//! One connection through a proxy: the client's socket, the upstream's,
//! and a [`Pipe`] each way. `pump` moves bytes as far as readiness, the
//! bound and the release times allow, and says when to come back.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::chain::{End, Item, Pipe, Rng};
use super::toxic::{Stream, ToxicSpec};

/// Reads per pipe per pump, so one fast sender cannot starve the others;
/// the link is pumped again on the next turn if it could read more.
const READS_PER_PUMP: usize = 16;

/// The sockets of a link: the client's, the upstream's.
pub const CLIENT: usize = 0;
pub const UPSTREAM: usize = 1;

/// What a pump came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// Still open: wake it at this instant (a segment falls due), and
    /// pump it again next turn if `more` (it stopped at its read budget).
    Open { wake: Option<Instant>, more: bool },
    /// Close it (both sockets), with a reset if `reset`.
    Close { reset: bool },
}

pub struct Link {
    pub proxy: u64,
    pub sockets: [TcpStream; 2],
    /// The upstream's connect has not completed yet.
    pub connecting: bool,
    /// Edge-triggered readiness, per socket: set by an event, cleared by
    /// `WouldBlock`.
    pub readable: [bool; 2],
    pub writable: [bool; 2],
    /// Upstream (client → upstream) and downstream pipes.
    pub pipes: [Pipe; 2],
    /// The timer wheel's entry for this link, and its deadline.
    pub timer: Option<(crate::engine::timer::TimerKey, u64)>,
}

/// Bytes read from each stream by one pump (for the metrics).
#[derive(Default)]
pub struct Moved {
    pub read: [u64; 2],
}

impl Link {
    pub fn new(
        proxy: u64,
        client: TcpStream,
        upstream: TcpStream,
        toxics: &[ToxicSpec],
        now: Instant,
        rng: &mut Rng,
    ) -> Link {
        let pipes = Stream::BOTH.map(|stream| Pipe::new(stream, toxics, now, rng));
        Link {
            proxy,
            sockets: [client, upstream],
            connecting: true,
            readable: [false; 2],
            writable: [false; 2],
            pipes,
            timer: None,
        }
    }

    /// The upstream socket is writable while connecting: did it connect?
    /// `Err` when it failed.
    pub fn finish_connect(&mut self) -> io::Result<()> {
        let upstream = &self.sockets[UPSTREAM];
        if let Some(error) = upstream.take_error()? {
            return Err(error);
        }
        match upstream.peer_addr() {
            Ok(_) => {
                self.connecting = false;
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(error) => Err(error),
        }
    }

    pub fn set_toxics(&mut self, toxics: &[ToxicSpec], now: Instant, rng: &mut Rng) {
        for pipe in &mut self.pipes {
            pipe.set_toxics(toxics, now, rng);
        }
    }

    pub fn charged(&self) -> usize {
        self.pipes.iter().map(|p| p.charged).sum()
    }

    /// Writes what is due and reads what fits, in turns, until neither
    /// moves or the read budget is spent; then writes what came due.
    pub fn pump(
        &mut self,
        now: Instant,
        bound: usize,
        scratch: &mut [u8],
        rng: &mut Rng,
        moved: &mut Moved,
    ) -> Pumped {
        let mut more = false;
        for index in 0..2 {
            for _ in 0..READS_PER_PUMP {
                if let Some(closed) = self.write_due(index, now) {
                    return closed;
                }
                match self.read_once(index, now, bound, scratch, rng) {
                    Ok(Some(n)) => moved.read[index] += n as u64,
                    Ok(None) => break,
                    Err(_) => return Pumped::Close { reset: false },
                }
            }
            if let Some(closed) = self.write_due(index, now) {
                return closed;
            }
            more |= self.can_read(index, bound);
        }
        if self.pipes.iter().all(|p| p.done) {
            return Pumped::Close { reset: false };
        }
        let wake = self.pipes.iter().filter_map(|p| p.next_at(now)).min();
        Pumped::Open { wake, more }
    }

    /// Pipe `index`'s source (pipe 0 reads the client, pipe 1 the
    /// upstream) is readable and the pipe has room.
    fn can_read(&self, index: usize, bound: usize) -> bool {
        let connected = index == CLIENT || !self.connecting;
        connected && self.readable[index] && self.pipes[index].room(bound) > 0
    }

    /// One read into pipe `index`: `Some(bytes)` (0: the source's FIN), or
    /// `None` when it cannot read now.
    fn read_once(
        &mut self,
        index: usize,
        now: Instant,
        bound: usize,
        scratch: &mut [u8],
        rng: &mut Rng,
    ) -> io::Result<Option<usize>> {
        if !self.can_read(index, bound) {
            return Ok(None);
        }
        let room = self.pipes[index].room(bound).min(scratch.len());
        loop {
            match self.sockets[index].read(&mut scratch[..room]) {
                Ok(n) => {
                    self.pipes[index].read(&scratch[..n], now, rng);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable[index] = false;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes pipe `index`'s due segments to its destination; `Some` when
    /// the link must close.
    fn write_due(&mut self, index: usize, now: Instant) -> Option<Pumped> {
        let dest = 1 - index;
        loop {
            let seg = self.pipes[index].due(now)?;
            let written = match &seg.item {
                Item::End(End::Half) => {
                    if dest == UPSTREAM && self.connecting {
                        return None;
                    }
                    let _ = self.sockets[dest].shutdown(Shutdown::Write);
                    self.pipes[index].done = true;
                    0
                }
                Item::End(End::Whole) => return Some(Pumped::Close { reset: false }),
                Item::End(End::Reset) => return Some(Pumped::Close { reset: true }),
                Item::Data { buf, start, end } => {
                    if !self.writable[dest] || (dest == UPSTREAM && self.connecting) {
                        return None;
                    }
                    match self.sockets[dest].write(&buf[*start..*end]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.writable[dest] = false;
                            return None;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return Some(Pumped::Close { reset: false }),
                    }
                }
            };
            self.pipes[index].consume(written);
        }
    }

    /// Closes both sockets; with `reset`, so that the peers get a RST
    /// (SO_LINGER 0), as Toxiproxy's reset_peer does.
    pub fn close(self, reset: bool) {
        if reset {
            for socket in &self.sockets {
                let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
            }
        }
    }
}
