//! Clients, not servers: [`bench`](mod@bench), the load generator behind
//! `holdfast bench`, which drives any TCP server.

pub mod bench;
pub mod chaos;
