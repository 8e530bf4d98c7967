//! A per-shard pool of rings, so that steady-state traffic allocates nothing
//! and an idle connection holds no ring at all.

use super::Ring;

/// Hands out empty rings of one capacity and keeps at most `free_max`
/// returned ones for reuse (the rest are freed).
pub struct Pool {
    _todo: (),
}

impl Pool {
    /// A pool of rings of `ring_capacity` bytes keeping at most `free_max`
    /// idle rings.
    pub fn new(ring_capacity: usize, free_max: usize) -> Pool {
        let _ = (ring_capacity, free_max);
        todo!()
    }
    /// An empty ring: a pooled one if any, else a fresh allocation.
    pub fn take(&mut self) -> Ring {
        todo!()
    }
    /// Returns a ring (cleared here); kept if fewer than `free_max` are idle.
    pub fn give(&mut self, ring: Ring) {
        let _ = ring;
        todo!()
    }
    /// Rings handed out and not yet returned.
    pub fn live(&self) -> usize {
        todo!()
    }
    /// Idle rings kept for reuse.
    pub fn free_len(&self) -> usize {
        todo!()
    }
}
