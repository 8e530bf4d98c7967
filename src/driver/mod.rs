//! The driver owns every syscall on a connection's socket. Its whole
//! surface, which a second backend (io_uring, behind the `uring` feature)
//! must provide as well:
//!
//! - [`read`]: socket → input ring, to EAGAIN, end of stream, a full ring or
//!   the work budget, whichever comes first;
//! - [`flush`]: output ring → socket, to EAGAIN or an empty ring.
//!
//! Both hand rings back to the pool when they are left empty, so an idle
//! connection holds none. Readiness itself (the poller) is mio's, driven by
//! the shard.

pub mod mio;

pub use self::mio::{Read, flush, read};
