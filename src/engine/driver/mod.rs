//! The epoll driver's syscalls on a connection socket:
//!
//! - [`read`]: socket → input ring, to EAGAIN, end of stream, a full ring or
//!   the work budget, whichever comes first;
//! - [`flush`]: output ring → socket, to EAGAIN or an empty ring.
//!
//! Both hand rings back to the pool when they are left empty, so an idle
//! connection holds none. Readiness itself (the poller) is mio's, driven by
//! `shard/epoll.rs`. The io_uring driver (`shard/uring/`) has no such
//! syscalls: its reads and writes are operations in flight on the ring;
//! both plug into the shard through `shard::core::Io`.

pub mod mio;

pub use self::mio::{Read, flush, read};
