//! One event loop on one thread: it accepts, drives connections through the
//! data path, fires deadlines, and drains on shutdown. A shard shares
//! nothing on its hot path: its poller or ring, listener, connection table,
//! timer wheel, ring pool, service and counters are its own. The only
//! shared state is the process-wide count of open connections (one atomic
//! add per accept and close) and the stop flag.
//!
//! [`core`] is the driver-independent half; [`epoll`] and (in a `uring`
//! build) [`uring`] are the two loops around it.

pub(crate) mod accept;
pub mod core;
mod epoll;
mod serve;
mod upstream;
#[cfg(feature = "uring")]
pub mod uring;

use std::io;
use std::sync::Arc;

use crate::config::{Backend, Config};
use crate::engine::metrics::ShardMetrics;
use crate::engine::service::Service;

pub use self::core::Shared;

/// Descriptors a shard holds besides its connections: listener, epoll or
/// io_uring instance, waker (eventfd), spare fd.
pub const FDS_PER_SHARD: usize = 4;

/// [`FDS_PER_SHARD`], plus, with upstreams, the second handle on the epoll
/// instance the epoll driver registers upstream sockets through (the
/// io_uring driver needs none; the reservation covers either).
pub fn fds_per_shard(upstreams: bool) -> usize {
    FDS_PER_SHARD + usize::from(upstreams)
}

/// One event loop, on the driver chosen at start-up.
pub enum Shard {
    /// The mio (epoll) loop.
    Epoll(Box<epoll::EpollShard>),
    /// The io_uring loop.
    #[cfg(feature = "uring")]
    Uring(Box<uring::UringShard>),
}

/// Wakes a shard from another thread (to notice the stop flag).
#[derive(Clone)]
pub enum Waker {
    /// mio's waker (an eventfd registered with the shard's epoll).
    Mio(Arc<mio::Waker>),
    /// An eventfd the io_uring loop keeps a read posted on.
    #[cfg(feature = "uring")]
    Event(Arc<uring::EventWaker>),
}

impl Waker {
    /// Wakes the shard.
    pub fn wake(&self) -> io::Result<()> {
        match self {
            Waker::Mio(waker) => waker.wake(),
            #[cfg(feature = "uring")]
            Waker::Event(waker) => waker.wake(),
        }
    }
}

impl Shard {
    /// Shard number `index` on `backend` serving `listener` with
    /// `service`, under `config` (validated, with `max_conns` resolved).
    /// Returns it with the waker that makes it notice `shared.stop`.
    pub fn new(
        index: usize,
        backend: Backend,
        listener: std::net::TcpListener,
        service: Box<dyn Service>,
        config: &Config,
        shared: &Shared,
        metrics: Arc<ShardMetrics>,
    ) -> io::Result<(Shard, Waker)> {
        let core = core::Core::new(service, config, shared, metrics, index)?;
        match backend {
            Backend::Epoll => {
                let (shard, waker) = epoll::EpollShard::new(listener, core)?;
                Ok((Shard::Epoll(Box::new(shard)), Waker::Mio(waker)))
            }
            #[cfg(feature = "uring")]
            Backend::Uring => {
                let (shard, waker) = uring::UringShard::new(listener, core, config)?;
                Ok((Shard::Uring(Box::new(shard)), Waker::Event(waker)))
            }
            #[cfg(not(feature = "uring"))]
            Backend::Uring => unreachable!("--backend uring is refused without the uring feature"),
        }
    }

    /// Runs the loop until the graceful shutdown has finished.
    pub fn run(self) -> io::Result<()> {
        match self {
            Shard::Epoll(shard) => shard.run(),
            #[cfg(feature = "uring")]
            Shard::Uring(shard) => shard.run(),
        }
    }
}
