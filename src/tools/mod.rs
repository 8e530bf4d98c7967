//! Clients, not servers: [`bench`](mod@bench), the load generator behind
//! `holdfast bench`, which drives any TCP server; [`chaos`]; [`reload`],
//! behind `holdfast reload`.

pub mod bench;
pub mod chaos;
pub mod reload;
