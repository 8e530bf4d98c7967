//! The application interface: a [`Service`] gets one complete frame and a
//! [`Reply`] to write into, never a socket.

mod echo;
pub mod kv;
pub mod store;

pub use echo::Echo;
pub use kv::Kv;
pub use store::Store;

use std::io;

/// The application. One instance per shard, called on that shard's thread.
///
/// # Implementer notes
///
/// - `call` gets exactly one complete frame (its payload, without header or
///   delimiter) and writes at most `reply_reserve(frame)` payload bytes
///   into the reply. The engine frames the reply for the protocol (length
///   header, newline) itself.
/// - The engine calls `call` only once the output ring has room for
///   `reply_reserve` bytes plus the framing, so a reply never waits for the
///   socket. Writing more than reserved is a bug in the service: the
///   connection is closed with reason `output_overflow`.
/// - A panic in `call` closes only that connection (reason `panic`); the
///   shard and every other connection go on. Keep per-shard state consistent
///   across a panic or do not keep it.
/// - `call` must not block: it runs on the event loop.
pub trait Service: Send + 'static {
    /// The most payload bytes the reply to `frame` may take. It sees the
    /// frame so that a reserve can be exact (a GET can look up its value's
    /// length) rather than the worst case, which keeps pipelined replies
    /// packed in the output ring. More than the ring capacity minus the
    /// protocol framing can never be served: the connection is closed with
    /// reason `output_overflow`.
    fn reply_reserve(&self, frame: &[u8]) -> usize;

    /// Serves one frame.
    fn call(&mut self, frame: &[u8], reply: &mut Reply<'_>);
}

/// Where a service instance runs, for the factory that builds it: one
/// instance per shard.
pub struct ServiceContext<'a> {
    /// The shard's index, from 0.
    pub shard: usize,
    /// The validated settings (threads and `max_conns` resolved).
    pub config: &'a crate::config::Config,
    /// The engine's counters, for services that report them (INFO, say).
    pub registry: &'a std::sync::Arc<crate::metrics::Registry>,
}

/// Where a service writes its reply: a bounded window of the connection's
/// output ring.
pub struct Reply<'a> {
    ring: &'a mut crate::buffer::Ring,
    limit: usize,
    written: usize,
    overflowed: bool,
    close: bool,
}

/// The reply went past its `reply_reserve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reply larger than its reply_reserve")
    }
}

impl std::error::Error for Overflow {}

impl<'a> Reply<'a> {
    /// A reply window of `limit` bytes at the end of `ring`. The caller
    /// guarantees `ring.free() >= limit`.
    pub(crate) fn new(ring: &'a mut crate::buffer::Ring, limit: usize) -> Reply<'a> {
        debug_assert!(ring.free() >= limit);
        Reply {
            ring,
            limit,
            written: 0,
            overflowed: false,
            close: false,
        }
    }

    /// Appends `bytes` to the reply, all or nothing. Past the reserve it
    /// writes nothing and returns `Err(Overflow)`; the connection will be
    /// closed with reason `output_overflow`.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        if self.overflowed || bytes.len() > self.limit - self.written {
            self.overflowed = true;
            return Err(Overflow);
        }
        let taken = self.ring.push(bytes);
        debug_assert_eq!(taken, bytes.len());
        self.written += taken;
        Ok(())
    }

    /// Bytes still allowed.
    pub fn remaining(&self) -> usize {
        self.limit - self.written
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.written
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Close the connection once this reply (and everything before it) has
    /// been flushed; frames after this one are not served.
    pub fn close_after(&mut self) {
        self.close = true;
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub(crate) fn wants_close(&self) -> bool {
        self.close
    }
}

impl io::Write for Reply<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.put(buf)
            .map(|()| buf.len())
            .map_err(|e| io::Error::new(io::ErrorKind::WriteZero, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
