//! Per-connection byte storage: fixed-capacity rings and the per-shard pool
//! they come from. Nothing here ever grows: memory per connection is bounded
//! by two ring capacities, whatever the peer does.

pub mod pool;
pub mod ring;

pub use pool::Pool;
pub use ring::Ring;
