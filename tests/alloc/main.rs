//! The allocation tests, a binary of their own: they replace the global
//! allocator with one that counts ([`counting`]), which in the `it` binary
//! would count every other test's allocations too. The two tests here take
//! turns ([`counting::serial`]) for the same reason.

mod counting;
mod echo;
mod proxy;
mod pubsub;

// The proxy test starts a redis-server through the integration tests'
// helpers; the rest of them are not used here.
#[allow(dead_code)]
#[path = "../it/util/mod.rs"]
mod util;
