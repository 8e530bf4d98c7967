//! The integration tests, one binary: each module tests one concern of the
//! `holdfast` binary or the library through real loopback sockets (`util`
//! starts servers, redis-servers and clients). Run one module with
//! `cargo test --test it MODULE::`.

mod util;

mod admin;
mod bad_input;
mod bench_cli;
mod bench_pubsub;
mod chaos;
mod chaos_proxy;
mod cli;
mod cluster;
mod fd_exhaustion;
mod frontdoor;
mod lifecycle;
mod limits;
mod metrics;
mod panic;
mod partial_io;
mod proxy;
mod proxy_auth;
mod proxy_replicas;
mod proxy_resp3;
mod pubsub;
mod pubsub_diff;
mod push;
mod regressions;
mod reload;
mod resp;
mod resp_client;
mod resp_diff;
mod shards;
mod split_sticky;
mod systemd;
mod timeouts;
mod upgrade;
mod upstream;
#[cfg(feature = "uring")]
mod uring;
