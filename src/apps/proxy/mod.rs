//! The RESP proxy's pure parts: which upstream owns a key ([`hash`]), how
//! a client's command is routed ([`command`]), split over upstreams and
//! its replies merged back ([`split`]), the commands about the client's
//! own connection and who may connect ([`client`]), and the [`Proxy`]
//! service over them (upstream replies are read by `engine::codec::reply`). The parts
//! touch no socket and no clock; the engine feeds them bytes and upstream
//! indexes.

pub mod client;
pub mod cluster;
pub mod command;
pub mod hash;
mod link;
mod replicas;
mod service;
pub mod split;
pub mod watch;

pub use self::service::Proxy;
