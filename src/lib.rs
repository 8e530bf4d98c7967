//! holdfast: a TCP server engine for Linux boxes that hold many connections
//! and must not fall over.
//!
//! The application (a [`engine::service::Service`]) sees complete frames and
//! writes replies; it never touches a socket, a buffer size, a timeout or a
//! thread. The crate is four layers; each imports only the layers below it
//! (`scripts/imports.py` checks):
//!
//! - [`tools`]: clients of any server, not part of one: the load generator
//!   behind `holdfast bench`.
//! - [`apps`]: the services built on the engine: echo, the RESP key-value
//!   store, the RESP proxy.
//! - [`engine`]: the server itself: the driver, the shard loop, connections,
//!   rings, timers, codecs, upstream calls, metrics, and the `Service` API.
//! - [`config`]: the settings, their defaults and bounds (a leaf).
//!
//! [`cli`] (the command line) sits above them all and is used by the binary.
//!
//! A service author needs what the crate root re-exports: [`Server`],
//! [`Config`], [`Service`] and its [`Reply`] (`examples/custom_service.rs`).
//!
//! Data flows one way: socket → input ring → codec → service → output ring
//! → socket.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod apps;
pub mod cli;
pub mod config;
pub mod engine;
pub mod tools;

pub use config::Config;
pub use engine::push::{Handle, Message, PushError, Pusher};
pub use engine::server::Server;
pub use engine::service::{Closed, Context, Opened, Reply, Service, ServiceContext};
