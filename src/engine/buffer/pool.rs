//! A per-shard pool of rings, so that steady-state traffic allocates nothing
//! and an idle connection holds no ring at all.

use super::Ring;

/// Idle rings past `free_max` that no take needed for this long are
/// freed: a burst that comes back within it (a publish to a thousand
/// subscribers every few hundred milliseconds) reuses its rings instead of
/// allocating and zeroing them again.
pub const SURPLUS_KEEP_MS: u64 = 1_000;

/// Hands out empty rings of one capacity and keeps `free_max` returned ones
/// for reuse; rings returned past that are kept only while bursts keep
/// needing them ([`SURPLUS_KEEP_MS`]).
pub struct Pool {
    /// Capacity of every ring this pool hands out (a power of two).
    ring_capacity: usize,
    /// Idle rings, all empty. Invariant: past `free_max` only until
    /// [`Pool::trim`] finds them unneeded for [`SURPLUS_KEEP_MS`], so at
    /// rest the pool holds at most `free_max * ring_capacity` bytes for no
    /// one (and never more rings than were busy at once).
    free: Vec<Ring>,
    free_max: usize,
    /// The most rings kept allocated (handed out and idle together): the
    /// shard's share of `--max-buffer-memory` (`engine/memory.rs`). A ring
    /// returned past it is freed at once.
    cap: usize,
    /// Rings handed out by `take` and not yet returned by `give`.
    live: usize,
    /// The fewest idle rings since `window_at`: the rings above it sat
    /// idle the whole window.
    low: usize,
    /// When the current window began.
    window_at: u64,
}

impl Pool {
    /// A pool of rings of `ring_capacity` bytes keeping at most `free_max`
    /// idle rings, `prealloc` of them allocated now.
    ///
    /// Without `prealloc` a ring is allocated whenever more rings are busy
    /// at once than ever before on this shard: rare once traffic has run a
    /// while, but a new peak can come at any time. Preallocating the peak
    /// makes a shard allocation-free from its first request.
    pub fn new(ring_capacity: usize, free_max: usize, prealloc: usize) -> Pool {
        // Fail at start-up rather than at the first connection.
        assert!(
            ring_capacity.is_power_of_two(),
            "ring capacity {ring_capacity} is not a non-zero power of two"
        );
        assert!(
            prealloc <= free_max,
            "prealloc {prealloc} > free_max {free_max}"
        );
        // Reserved up front so returning a ring never allocates.
        let mut free = Vec::with_capacity(free_max);
        free.extend((0..prealloc).map(|_| Ring::with_capacity(ring_capacity)));
        Pool {
            ring_capacity,
            free,
            free_max,
            cap: usize::MAX,
            live: 0,
            low: prealloc,
            window_at: 0,
        }
    }
    /// An empty ring: a pooled one if any, else a fresh allocation.
    pub fn take(&mut self) -> Ring {
        let ring = self
            .free
            .pop()
            .unwrap_or_else(|| Ring::with_capacity(self.ring_capacity));
        debug_assert!(ring.is_empty());
        self.live += 1;
        self.low = self.low.min(self.free.len());
        ring
    }
    /// Returns a ring (cleared here) to the idle ones.
    pub fn give(&mut self, mut ring: Ring) {
        debug_assert_eq!(
            ring.capacity(),
            self.ring_capacity,
            "ring from another pool"
        );
        assert!(self.live > 0, "pool got back more rings than it gave out");
        self.live -= 1;
        if self.live + self.free.len() >= self.cap {
            return;
        }
        ring.clear();
        self.free.push(ring);
    }
    /// Keeps at most `rings` allocated from now on, freeing idle ones past
    /// it now.
    pub fn set_cap(&mut self, rings: usize) {
        self.cap = rings;
        let keep = rings.saturating_sub(self.live).min(self.free.len());
        self.free.truncate(keep);
        self.low = self.low.min(keep);
    }
    /// Frees the idle rings past `free_max` that no take needed for a
    /// whole [`SURPLUS_KEEP_MS`] (`now` in milliseconds; once per loop
    /// turn).
    pub fn trim(&mut self, now: u64) {
        if now < self.window_at + SURPLUS_KEEP_MS {
            return;
        }
        let unneeded = self.low.saturating_sub(self.free_max);
        self.free.truncate(self.free.len() - unneeded);
        self.low = self.free.len();
        self.window_at = now;
    }
    /// When [`Pool::trim`] may next free something: while idle rings past
    /// `free_max` are held, the end of the current window (the loop wakes
    /// for it, so an idle shard gives them back too).
    pub fn next_trim(&self) -> Option<u64> {
        (self.free.len() > self.free_max).then_some(self.window_at + SURPLUS_KEEP_MS)
    }
    /// The capacity of every ring this pool hands out.
    pub fn ring_capacity(&self) -> usize {
        self.ring_capacity
    }
    /// Rings handed out and not yet returned.
    pub fn live(&self) -> usize {
        self.live
    }
    /// Idle rings kept for reuse.
    pub fn free_len(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_allocates_when_nothing_is_idle() {
        let mut pool = Pool::new(16, 2, 0);
        let ring = pool.take();
        assert_eq!(ring.capacity(), 16);
        assert!(ring.is_empty());
        assert_eq!((pool.live(), pool.free_len()), (1, 0));
    }

    #[test]
    fn given_rings_are_reused_and_come_back_empty() {
        let mut pool = Pool::new(16, 2, 0);
        let mut ring = pool.take();
        ring.push(b"left over");
        pool.give(ring);
        assert_eq!((pool.live(), pool.free_len()), (0, 1));
        let ring = pool.take();
        assert!(ring.is_empty());
        assert_eq!(ring.free(), 16);
        assert_eq!((pool.live(), pool.free_len()), (1, 0));
    }

    #[test]
    fn idle_rings_past_free_max_go_once_a_second_passes_without_a_burst() {
        let mut pool = Pool::new(16, 2, 0);
        let burst = |pool: &mut Pool| {
            let rings: Vec<Ring> = (0..5).map(|_| pool.take()).collect();
            assert_eq!(pool.live(), 5);
            for ring in rings {
                pool.give(ring);
            }
        };
        burst(&mut pool);
        pool.trim(SURPLUS_KEEP_MS);
        assert_eq!((pool.live(), pool.free_len()), (0, 5));
        // The same burst again within the next second takes the kept rings.
        burst(&mut pool);
        pool.trim(2 * SURPLUS_KEEP_MS - 1);
        pool.trim(2 * SURPLUS_KEEP_MS);
        assert_eq!(pool.free_len(), 5);
        // A second with a smaller burst: what it did not need goes.
        let ring = pool.take();
        pool.give(ring);
        pool.trim(3 * SURPLUS_KEEP_MS);
        assert_eq!(pool.free_len(), 3, "the 2 kept and the 1 used");
        pool.trim(4 * SURPLUS_KEEP_MS);
        assert_eq!((pool.live(), pool.free_len()), (0, 2));
    }

    #[test]
    fn preallocated_rings_are_handed_out_first() {
        let mut pool = Pool::new(16, 4, 3);
        assert_eq!((pool.live(), pool.free_len()), (0, 3));
        let rings: Vec<Ring> = (0..3).map(|_| pool.take()).collect();
        assert_eq!((pool.live(), pool.free_len()), (3, 0));
        for ring in rings {
            pool.give(ring);
        }
        assert_eq!((pool.live(), pool.free_len()), (0, 3));
    }

    #[test]
    fn free_max_zero_keeps_nothing_at_rest() {
        let mut pool = Pool::new(16, 0, 0);
        let ring = pool.take();
        pool.give(ring);
        // Taken during the first window, idle through the second.
        pool.trim(SURPLUS_KEEP_MS);
        assert_eq!(pool.free_len(), 1);
        pool.trim(2 * SURPLUS_KEEP_MS);
        assert_eq!((pool.live(), pool.free_len()), (0, 0));
    }

    #[test]
    fn past_its_cap_a_returned_ring_is_freed() {
        let mut pool = Pool::new(16, 8, 4);
        pool.set_cap(3);
        assert_eq!(pool.free_len(), 3, "idle rings past the cap go at once");
        let rings: Vec<Ring> = (0..5).map(|_| pool.take()).collect();
        for ring in rings {
            pool.give(ring);
        }
        assert_eq!((pool.live(), pool.free_len()), (0, 3));
    }

    #[test]
    #[should_panic(expected = "more rings than it gave out")]
    fn giving_back_a_ring_never_taken_panics() {
        Pool::new(16, 2, 0).give(Ring::with_capacity(16));
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn capacity_must_be_a_power_of_two() {
        Pool::new(24, 2, 0);
    }
}
