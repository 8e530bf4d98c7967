//! One event loop on one thread: it accepts, drives connections through the
//! data path, fires deadlines, and drains on shutdown. A shard shares
//! nothing on its hot path: its poller or ring, listener, connection table,
//! timer wheel, ring pool, service and counters are its own. The only
//! shared state is the process-wide count of open connections (one atomic
//! add per accept and close), the stop flag and, with per-address limits,
//! their table (one lock per accept and release).
//!
//! [`core`] holds the connections and the data path, `turn` the loop
//! (written once); the driver (`driver/`: epoll, or io_uring in a `uring`
//! build) waits and moves bytes for it.

pub(crate) mod accept;
mod core;
mod door;
mod memory;
mod pump;
mod push;
mod serve;
mod settings;
mod turn;
mod upstream;

use std::io;
use std::sync::Arc;

use self::turn::Loop;
use crate::config::{Backend, Config};
use crate::engine::driver::epoll::Epoll;
#[cfg(feature = "uring")]
use crate::engine::driver::uring::Uring;
use crate::engine::metrics::ShardMetrics;
use crate::engine::push::Hub;
use crate::engine::service::host::Handler;

pub use self::core::Shared;
pub use crate::engine::driver::Waker;

/// Descriptors a shard holds besides its connections: listener, epoll or
/// io_uring instance, waker (eventfd), spare fd.
pub const FDS_PER_SHARD: usize = 4;

/// One event loop, on the driver chosen at start-up.
pub enum Shard {
    /// On epoll.
    Epoll(Box<Loop<Epoll>>),
    /// On io_uring.
    #[cfg(feature = "uring")]
    Uring(Box<Loop<Uring>>),
}

impl Shard {
    /// Shard number `index` on `backend` serving `listener` with
    /// `service`, under `config` (validated, with `max_conns` resolved),
    /// woken by `waker` (for `shared.stop` and its mailbox in `hub`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        backend: Backend,
        listener: std::net::TcpListener,
        service: Box<dyn Handler>,
        config: &Config,
        shared: &Shared,
        metrics: Arc<ShardMetrics>,
        waker: Waker,
        hub: Arc<Hub>,
    ) -> io::Result<Shard> {
        let mut core = core::Core::new(service, config, shared, metrics.clone(), index, hub)?;
        if let Some(shed) = crate::engine::front::Shed::new(config, &listener)? {
            core.door_attach_shed(config, shed);
        }
        let fds_own = FDS_PER_SHARD + core.door_fds();
        let shard = match backend {
            Backend::Epoll => {
                let driver = Epoll::new(listener, waker, config.events_max)?;
                Shard::Epoll(Box::new(Loop::new(core, driver)))
            }
            #[cfg(feature = "uring")]
            Backend::Uring => {
                let driver = Uring::new(listener, waker, config, metrics.clone())?;
                Shard::Uring(Box::new(Loop::new(core, driver)))
            }
            #[cfg(not(feature = "uring"))]
            Backend::Uring => unreachable!("--backend uring is refused without the uring feature"),
        };
        metrics.fds_own.set(fds_own as u64);
        Ok(shard)
    }

    /// Runs the loop until the graceful shutdown has finished.
    pub fn run(self) -> io::Result<()> {
        match self {
            Shard::Epoll(shard) => run(shard),
            #[cfg(feature = "uring")]
            Shard::Uring(shard) => run(shard),
        }
    }
}

fn run<D: crate::engine::driver::Driver>(mut shard: Box<Loop<D>>) -> io::Result<()> {
    if !shard.run()? {
        // The kernel may still use connection rings, buffers or the ring
        // itself: leak them all rather than free them under it.
        std::mem::forget(shard);
    }
    Ok(())
}
