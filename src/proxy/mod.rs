//! The RESP proxy's pure parts: which upstream owns a key ([`hash`]) and
//! how a client's command is routed, split over upstreams and its replies
//! merged back ([`command`]). Neither touches a socket or the clock; the
//! engine feeds them bytes and indexes.

pub mod hash;
