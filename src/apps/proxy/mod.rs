//! The RESP proxy's pure parts: which upstream owns a key ([`hash`]), how
//! a client's command is routed ([`command`]), split over upstreams and
//! its replies merged back ([`split`]), and upstream replies read
//! ([`reply`]). None of them touches a socket or a clock; the engine feeds
//! them bytes and upstream indexes.

pub mod command;
pub mod hash;
mod service;
pub mod split;

pub use self::service::Proxy;
