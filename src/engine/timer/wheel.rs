//! The hashed wheel.
//!
//! Entries live in one [`Slab`] of nodes. Each slot of the wheel is an
//! intrusive doubly linked list threaded through those nodes by index
//! (`prev`/`next`), with its head in `heads`; a bitmap marks the non-empty
//! slots. So `schedule` and `cancel` are O(1) and touch no allocator once the
//! slab has grown to its working size, and `next_expiry` scans 64 slots per
//! word instead of one list head at a time.
//!
//! An entry goes into the slot of its deadline tick, `ceil(deadline /
//! tick_ms)`, rounded up so that reaching the tick never means reaching it
//! early. Deadlines more than a rotation ahead share a slot with nearer ones
//! and are simply skipped when the slot is visited, until a later visit finds
//! them due (the classic hashed wheel, Varghese & Lauck's scheme 6).
//!
//! Memory per entry: one slab entry holding a [`Node`]: the value, the
//! deadline (8 bytes) and four `u32` (prev, next, generation, slot), i.e.
//! `24 + size_of::<T>()` bytes rounded up to 8, plus the slab's tag for
//! vacant/occupied (up to 8 more). For an 8-byte `T` (a connection token) that
//! is 32 bytes of node, 40 bytes of slab entry. Fixed cost per wheel: 4 bytes
//! per slot of list heads plus 1 bit per slot of bitmap (2 KiB + 64 B for 512
//! slots).

use std::num::NonZeroU32;

use slab::Slab;

use super::Millis;

/// Identifies a scheduled entry, for [`Wheel::cancel`].
///
/// Carries the slab index and the generation the entry was given when it was
/// scheduled. Slab indices are reused after removal, so the generation is what
/// lets a stale key (its entry fired or was cancelled, and the index now holds
/// another entry) be recognised and refused instead of removing the wrong
/// entry. Generations come from a per-wheel `u32` counter: a stale key could
/// only match again after exactly 2^32 further schedules landed a new entry on
/// the same index, which is far beyond any deadline a connection holds a key
/// for. A generation is never 0, so `Option<(TimerKey, Millis)>` (a
/// connection's timer) costs no more than the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerKey {
    index: u32,
    generation: NonZeroU32,
}

/// A hashed timer wheel of `slots` slots of `tick_ms` each.
///
/// Firing semantics, exactly:
/// - An entry never fires early: `advance(now, ..)` only yields entries with
///   `deadline <= now`.
/// - An entry fires no later than the first `advance(now, ..)` with
///   `now >= ceil(deadline / tick_ms) * tick_ms`, i.e. at most one tick
///   (`tick_ms - 1` ms) after its deadline, counted in the times passed to
///   `advance`. It may fire earlier than that (but never before its deadline)
///   when a slot visit finds it already due, e.g. after a large time jump.
/// - An entry scheduled with `deadline <= now` (now being the last time given
///   to `advance`) fires on the very next `advance`, even one with the same
///   `now`.
/// - Each entry fires at most once, and not at all if cancelled first.
///   Entries fired by one `advance` are appended in no particular order.
pub struct Wheel<T> {
    /// Every live entry. Invariant: each node is on exactly the list of
    /// `heads[node.slot]`, and `nodes.len()` is the number of live entries.
    nodes: Slab<Node<T>>,
    /// Per-slot list head (a `nodes` index) or `NIL` when the slot is empty.
    heads: Box<[u32]>,
    /// Bit `s` set iff `heads[s] != NIL`; lets `next_expiry` skip 64 empty
    /// slots per word. Length `max(1, slots / 64)`.
    occupied: Box<[u64]>,
    /// `slots - 1`; slots is a power of two so a tick maps to its slot by
    /// masking.
    mask: u64,
    tick_ms: Millis,
    /// The time of the last `advance` (0 before the first).
    now: Millis,
    /// The first tick not yet visited: every tick below it has been visited.
    /// Invariant: every entry not scheduled in the past (see `revisit`) has a
    /// deadline tick `>= tick_next`.
    tick_next: u64,
    /// Set when an entry was scheduled with `deadline <= now`. Such entries
    /// go in the slot of the last visited tick (`tick_next - 1`), and the
    /// next `advance` visits that slot again so they fire then, even if time
    /// has not reached a new tick.
    revisit: bool,
    /// The generation the next scheduled entry gets (wrapping).
    generation_next: u32,
}

impl<T: Copy> Wheel<T> {
    /// A wheel starting at time 0. Panics unless `slots` is a power of two
    /// and `tick_ms > 0`.
    pub fn new(tick_ms: Millis, slots: usize) -> Wheel<T> {
        Wheel::with_capacity(tick_ms, slots, 0)
    }

    /// Like [`Wheel::new`], with room for `capacity` entries allocated up
    /// front so that scheduling up to that many never allocates (a shard sizes
    /// it from its connection limit).
    pub fn with_capacity(tick_ms: Millis, slots: usize, capacity: usize) -> Wheel<T> {
        assert!(tick_ms > 0, "timer wheel: tick_ms must be > 0");
        assert!(
            slots.is_power_of_two(),
            "timer wheel: slots must be a power of two, got {slots}"
        );
        // Slot numbers are stored as u32 in every node.
        assert!(
            slots <= 1 << 31,
            "timer wheel: at most 2^31 slots, got {slots}"
        );
        Wheel {
            nodes: Slab::with_capacity(capacity),
            heads: vec![NIL; slots].into_boxed_slice(),
            occupied: vec![0; slots.div_ceil(64)].into_boxed_slice(),
            mask: slots as u64 - 1,
            tick_ms,
            now: 0,
            tick_next: 0,
            revisit: false,
            generation_next: 1,
        }
    }

    /// Schedules `value` to fire at `deadline` (a deadline in the past fires
    /// on the next `advance`).
    pub fn schedule(&mut self, deadline: Millis, value: T) -> TimerKey {
        let index = self.nodes.vacant_key();
        // NIL is u32::MAX, so indices must stay below it. Reaching 4 billion
        // live timers means a leak elsewhere; continuing would corrupt lists.
        assert!(
            index < NIL as usize,
            "timer wheel: more than {} live entries",
            NIL - 1
        );
        let index = index as u32;
        let generation = self.generation_next;
        // Skips 0 on the wrap: a key's generation is never 0.
        self.generation_next = self.generation_next.checked_add(1).unwrap_or(1);

        let tick = if deadline <= self.now && self.tick_next > 0 {
            // Already due. Its own tick may lie behind us (never visited
            // again) or be the next one (which `advance(self.now)` would not
            // reach yet), so park it on the last visited tick and have the
            // next advance look there again.
            self.revisit = true;
            self.tick_next - 1
        } else {
            let tick = deadline.div_ceil(self.tick_ms);
            // deadline > now >= (tick_next - 1) * tick_ms, so rounding up
            // lands at or after tick_next; before the first advance
            // tick_next is 0 and this holds trivially.
            debug_assert!(tick >= self.tick_next);
            tick
        };
        let slot = (tick & self.mask) as u32;

        let head = self.heads[slot as usize];
        let inserted = self.nodes.insert(Node {
            value,
            deadline,
            prev: NIL,
            next: head,
            generation,
            slot,
        });
        debug_assert_eq!(inserted, index as usize);
        if head == NIL {
            self.mark(slot as usize, true);
        } else {
            debug_assert_eq!(self.nodes[head as usize].prev, NIL);
            debug_assert_eq!(self.nodes[head as usize].slot, slot);
            self.nodes[head as usize].prev = index;
        }
        self.heads[slot as usize] = index;
        let generation = NonZeroU32::new(generation).expect("generations start at 1");
        TimerKey { index, generation }
    }

    /// Removes an entry that has not fired; returns its value, or `None` if
    /// the key already fired or was cancelled (a stale key never touches
    /// another entry).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let node = self.nodes.get(key.index as usize)?;
        if node.generation != key.generation.get() {
            return None;
        }
        Some(self.remove(key.index).value)
    }

    /// Moves time to `now` and appends every due entry's value to `expired`.
    ///
    /// Visits each tick from the first unvisited one up to `now`'s tick, but
    /// at most `slots` of them: after a jump of more than a rotation, one
    /// visit per slot already sees every entry, and each visit fires all that
    /// is due, so the work is bounded by `slots` slot visits plus the entries
    /// on the visited lists. `now` must not go backwards (a smaller `now` is
    /// treated as the previous one).
    pub fn advance(&mut self, now: Millis, expired: &mut Vec<T>) {
        debug_assert!(now >= self.now, "timer wheel: time went backwards");
        let now = now.max(self.now);
        self.now = now;
        let now_tick = now / self.tick_ms;
        let start = if self.revisit {
            // `revisit` is only set once tick_next > 0.
            self.tick_next - 1
        } else {
            self.tick_next
        };
        self.revisit = false;
        if now_tick >= start {
            let steps = (now_tick - start + 1).min(self.mask + 1);
            for tick in start..start + steps {
                let slot = (tick & self.mask) as usize;
                if self.is_marked(slot) {
                    self.fire_slot(slot, now, expired);
                }
            }
        }
        // Every entry with a deadline tick <= now_tick was on a visited list
        // (its tick was >= start, or every slot was visited) and is due
        // (deadline <= tick * tick_ms <= now), so it fired: the invariant on
        // `tick_next` holds again.
        self.tick_next = now_tick + 1;
    }

    /// A lower bound on the next deadline (the start of the first tick with
    /// an entry, within one rotation; the end of the rotation if entries are
    /// further away), or `None` when the wheel is empty. For the poll timeout.
    ///
    /// Precisely: the time `tick * tick_ms` of the first tick, from the next
    /// unvisited one on, whose slot is non-empty, but at least the last time
    /// given to `advance` (entries scheduled in the past make it exactly
    /// that). It is never later than `ceil(deadline / tick_ms) * tick_ms` of
    /// the earliest entry, which is when `advance` is guaranteed to fire it,
    /// so sleeping until it never makes an entry late. It may be earlier than
    /// needed when the first non-empty slot holds only entries a rotation or
    /// more away: the caller then wakes, fires nothing, and asks again.
    ///
    /// O(1) when empty, otherwise O(slots / 64) bitmap words.
    pub fn next_expiry(&self) -> Option<Millis> {
        if self.nodes.is_empty() {
            return None;
        }
        if self.revisit {
            return Some(self.now);
        }
        let slots = self.mask + 1;
        let distance = match self.occupied_distance((self.tick_next & self.mask) as usize) {
            Some(distance) => distance as u64,
            None => {
                // The bitmap is exact and the wheel is not empty, so some
                // slot is marked; the end of the rotation is still a valid
                // answer should that ever break.
                debug_assert!(false, "timer wheel: entries but no marked slot");
                slots
            }
        };
        let tick = self.tick_next + distance;
        // saturating: a caller may use a far-future deadline (Millis::MAX)
        // as "never", whose rounded-up tick start does not fit.
        Some(tick.saturating_mul(self.tick_ms).max(self.now))
    }

    /// Entries scheduled and not fired or cancelled.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// "No node": the end of a list, or an empty slot.
const NIL: u32 = u32::MAX;

/// One entry, linked into the list of its slot.
struct Node<T> {
    value: T,
    deadline: Millis,
    /// Previous node on the slot's list, `NIL` for the head.
    prev: u32,
    /// Next node on the slot's list, `NIL` for the tail.
    next: u32,
    /// Matched against [`TimerKey::generation`] so stale keys are refused.
    generation: u32,
    /// The slot whose list holds this node. Stored, not recomputed from the
    /// deadline, because entries scheduled in the past are parked on the
    /// current slot rather than their deadline's; on 8-byte-aligned nodes it
    /// fills what would be padding.
    slot: u32,
}

impl<T: Copy> Wheel<T> {
    /// Fires every due entry on `slot`'s list; keeps the rest in place.
    fn fire_slot(&mut self, slot: usize, now: Millis, expired: &mut Vec<T>) {
        let mut index = self.heads[slot];
        while index != NIL {
            let node = &self.nodes[index as usize];
            debug_assert_eq!(node.slot as usize, slot);
            // Read before removal: removing `index` relinks its neighbours
            // but leaves `next` itself in place.
            let next = node.next;
            if node.deadline <= now {
                expired.push(self.remove(index).value);
            }
            index = next;
        }
    }

    /// Unlinks the node at `index` from its slot's list and frees it.
    fn remove(&mut self, index: u32) -> Node<T> {
        let (prev, next, slot) = {
            let node = &self.nodes[index as usize];
            (node.prev, node.next, node.slot as usize)
        };
        if prev == NIL {
            debug_assert_eq!(self.heads[slot], index, "list head out of sync");
            self.heads[slot] = next;
            if next == NIL {
                self.mark(slot, false);
            }
        } else {
            debug_assert_eq!(self.nodes[prev as usize].next, index, "prev.next broken");
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            debug_assert_eq!(self.nodes[next as usize].prev, index, "next.prev broken");
            self.nodes[next as usize].prev = prev;
        }
        self.nodes.remove(index as usize)
    }

    fn mark(&mut self, slot: usize, occupied: bool) {
        let bit = 1u64 << (slot % 64);
        if occupied {
            self.occupied[slot / 64] |= bit;
        } else {
            self.occupied[slot / 64] &= !bit;
        }
    }

    fn is_marked(&self, slot: usize) -> bool {
        self.occupied[slot / 64] & (1u64 << (slot % 64)) != 0
    }

    /// How many slots forward from `from` (0 = `from` itself, wrapping) the
    /// first non-empty slot is, or `None` if all are empty.
    fn occupied_distance(&self, from: usize) -> Option<usize> {
        let words = self.occupied.len();
        let slots = self.mask as usize + 1;
        let word_first = from / 64;
        let above = !0u64 << (from % 64);
        // Distance from `from` to the lowest set bit of word `w`, wrapping.
        let distance = |w: usize, bits: u64| {
            let slot = w * 64 + bits.trailing_zeros() as usize;
            (slot + slots - from) & (slots - 1)
        };
        let bits = self.occupied[word_first] & above;
        if bits != 0 {
            return Some(distance(word_first, bits));
        }
        for step in 1..words {
            let w = (word_first + step) % words;
            if self.occupied[w] != 0 {
                return Some(distance(w, self.occupied[w]));
            }
        }
        // Wrapped all the way round: the part of the first word below `from`.
        let bits = self.occupied[word_first] & !above;
        (bits != 0).then(|| distance(word_first, bits))
    }

    /// Walks every list and checks links, slots, the bitmap and the count.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut seen = 0;
        for (slot, &head) in self.heads.iter().enumerate() {
            assert_eq!(self.is_marked(slot), head != NIL, "bitmap of slot {slot}");
            let mut prev = NIL;
            let mut index = head;
            while index != NIL {
                let node = &self.nodes[index as usize];
                assert_eq!(node.prev, prev);
                assert_eq!(node.slot as usize, slot);
                if !(self.revisit && node.deadline <= self.now) {
                    let tick = node.deadline.div_ceil(self.tick_ms);
                    assert_eq!(tick & self.mask, slot as u64, "entry in wrong slot");
                    assert!(tick >= self.tick_next, "entry behind the wheel");
                }
                seen += 1;
                prev = index;
                index = node.next;
            }
        }
        assert_eq!(seen, self.nodes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn generations_skip_zero_when_they_wrap() {
        let mut wheel = Wheel::with_capacity(10, 8, 4);
        wheel.generation_next = u32::MAX;
        let last = wheel.schedule(100, 1u32);
        assert_eq!(last.generation.get(), u32::MAX);
        assert_eq!(wheel.cancel(last), Some(1));
        // The same index again, with the generation after the wrap: 1.
        let next = wheel.schedule(100, 2u32);
        assert_eq!((next.index, next.generation.get()), (last.index, 1));
        assert_eq!(wheel.cancel(last), None, "the stale key is refused");
        assert_eq!(wheel.cancel(next), Some(2));
        assert_eq!(
            std::mem::size_of::<Option<(TimerKey, Millis)>>(),
            std::mem::size_of::<(TimerKey, Millis)>()
        );
    }

    fn advance(wheel: &mut Wheel<u32>, now: Millis) -> Vec<u32> {
        let mut expired = Vec::new();
        wheel.advance(now, &mut expired);
        wheel.check_invariants();
        expired.sort_unstable();
        expired
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut wheel = Wheel::new(10, 8);
        wheel.schedule(25, 1); // tick 3: fires once now >= 30
        wheel.schedule(40, 2); // exactly on a tick boundary
        assert!(advance(&mut wheel, 24).is_empty());
        // Due at 25, but its tick (ending at 30) is not reached yet: up to
        // one tick late, never early.
        assert!(advance(&mut wheel, 29).is_empty());
        assert_eq!(advance(&mut wheel, 30), vec![1]);
        assert!(advance(&mut wheel, 39).is_empty());
        assert_eq!(advance(&mut wheel, 40), vec![2]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn wrap_around() {
        let (tick, slots) = (10, 8); // one rotation = 80 ms
        let mut wheel = Wheel::new(tick, slots);
        let deadlines = [85, 165, 1000, 1005, 3 * 80 + 5, 7];
        for (value, &deadline) in deadlines.iter().enumerate() {
            wheel.schedule(deadline, value as u32);
        }
        let mut fired_at = BTreeMap::new();
        let mut now = 0;
        while now <= 1100 {
            for value in advance(&mut wheel, now) {
                assert!(fired_at.insert(value, now).is_none(), "fired twice");
            }
            now += 1;
        }
        for (value, &deadline) in deadlines.iter().enumerate() {
            // Stepping 1 ms at a time, each fires exactly on its rounded-up
            // tick, however many rotations ahead it was.
            assert_eq!(fired_at[&(value as u32)], deadline.div_ceil(tick) * tick);
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn cancel_before_fire() {
        let mut wheel = Wheel::new(10, 8);
        let a = wheel.schedule(50, 1);
        let b = wheel.schedule(50, 2);
        assert_eq!(wheel.len(), 2);
        assert_eq!(wheel.cancel(a), Some(1));
        wheel.check_invariants();
        assert_eq!(wheel.len(), 1);
        assert_eq!(advance(&mut wheel, 100), vec![2]);
        assert_eq!(wheel.cancel(b), None);
        assert_eq!(wheel.next_expiry(), None);
    }

    #[test]
    fn cancel_after_fire_returns_none() {
        let mut wheel = Wheel::new(10, 8);
        let key = wheel.schedule(20, 7);
        assert_eq!(advance(&mut wheel, 20), vec![7]);
        assert_eq!(wheel.cancel(key), None);
        assert_eq!(wheel.cancel(key), None);
        let key = wheel.schedule(30, 8);
        assert_eq!(wheel.cancel(key), Some(8));
        assert_eq!(wheel.cancel(key), None, "double cancel");
    }

    #[test]
    fn stale_key_does_not_cancel_reused_slot() {
        let mut wheel = Wheel::new(10, 8);
        let old = wheel.schedule(20, 1);
        assert_eq!(wheel.cancel(old), Some(1));
        let new = wheel.schedule(20, 2);
        assert_eq!(new.index, old.index, "the slab reuses the index");
        assert_eq!(wheel.cancel(old), None);
        assert_eq!(wheel.len(), 1);

        // The same after the old entry fired rather than being cancelled.
        assert_eq!(advance(&mut wheel, 20), vec![2]);
        let newer = wheel.schedule(40, 3);
        assert_eq!(newer.index, new.index);
        assert_eq!(wheel.cancel(new), None);
        assert_eq!(advance(&mut wheel, 40), vec![3]);
    }

    #[test]
    fn many_timers_in_one_slot() {
        let mut wheel = Wheel::new(10, 8);
        let near: Vec<_> = (0..1000).map(|v| wheel.schedule(50, v)).collect();
        // Same slot, one and two rotations later: skipped on this visit.
        for v in 1000..1100 {
            wheel.schedule(50 + 80 * (1 + v as u64 % 2), v);
        }
        for key in near.iter().step_by(3) {
            assert!(wheel.cancel(*key).is_some());
        }
        wheel.check_invariants();
        let expected: Vec<u32> = (0..1000).filter(|v| v % 3 != 0).collect();
        assert_eq!(advance(&mut wheel, 50), expected);
        assert_eq!(wheel.len(), 100);
        assert_eq!(
            advance(&mut wheel, 130),
            (1000..1100).step_by(2).collect::<Vec<_>>()
        );
        assert_eq!(
            advance(&mut wheel, 210),
            (1001..1100).step_by(2).collect::<Vec<_>>()
        );
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadline_fires_on_next_advance() {
        let mut wheel = Wheel::new(10, 8);
        // Before any advance: deadline 0 at time 0.
        wheel.schedule(0, 1);
        assert_eq!(wheel.next_expiry(), Some(0));
        assert_eq!(advance(&mut wheel, 0), vec![1]);

        assert!(advance(&mut wheel, 105).is_empty());
        wheel.schedule(3, 2); // its slot was visited long ago
        wheel.schedule(95, 3); // tick 10, already visited
        wheel.schedule(105, 4); // due now, but its tick (11) is ahead
        wheel.schedule(106, 5); // not due: must wait for tick 11
        assert_eq!(wheel.next_expiry(), Some(105));
        // Same `now` again: the parked entries fire, nothing early does.
        assert_eq!(advance(&mut wheel, 105), vec![2, 3, 4]);
        assert_eq!(wheel.next_expiry(), Some(110));
        assert_eq!(advance(&mut wheel, 110), vec![5]);
    }

    #[test]
    fn big_time_jump_fires_everything_due() {
        let (tick, slots) = (10, 8);
        let mut wheel = Wheel::new(tick, slots);
        // Deadlines spread over many rotations, in every slot.
        let deadline = |v: u32| (v as u64 * 37) % 5000;
        for v in 0..500 {
            wheel.schedule(deadline(v), v);
        }
        // A jump of ~37 rotations: each slot is visited once.
        let fired = advance(&mut wheel, 3000);
        let expected: Vec<u32> = (0..500).filter(|&v| deadline(v) <= 3000).collect();
        assert_eq!(fired, expected);
        for v in fired {
            assert!(deadline(v) <= 3000, "fired early");
        }
        let rest = advance(&mut wheel, 10_000);
        assert_eq!(
            rest,
            (0..500).filter(|&v| deadline(v) > 3000).collect::<Vec<_>>()
        );
        assert!(wheel.is_empty());
    }

    #[test]
    fn next_expiry_lower_bound() {
        let mut wheel = Wheel::new(10, 8);
        assert_eq!(wheel.next_expiry(), None);
        let a = wheel.schedule(25, 1);
        assert_eq!(wheel.next_expiry(), Some(30));
        let b = wheel.schedule(1000, 2); // tick 100, slot 4, many rotations out
        assert_eq!(wheel.next_expiry(), Some(30));
        wheel.cancel(a);
        // Slot 4 is first reached at tick 4: early, but a lower bound.
        let bound = wheel.next_expiry().unwrap();
        assert_eq!(bound, 40);
        assert!(bound <= 1000);
        advance(&mut wheel, 47);
        // Next visit of slot 4 is tick 12.
        assert_eq!(wheel.next_expiry(), Some(120));
        wheel.cancel(b);
        assert_eq!(wheel.next_expiry(), None);

        // Wider wheel: the bitmap scan crosses words and wraps.
        let mut wheel = Wheel::new(1, 512);
        advance(&mut wheel, 300);
        wheel.schedule(300 + 400, 1); // slot 700 & 511 = 188, behind `from`
        assert_eq!(wheel.next_expiry(), Some(700));
        wheel.schedule(301, 2);
        assert_eq!(wheel.next_expiry(), Some(301));
        wheel.schedule(u64::MAX, 3); // "never": no overflow
        assert_eq!(advance(&mut wheel, 1000), vec![1, 2]);
        assert!(wheel.next_expiry().unwrap() >= 1000);
    }

    #[test]
    fn node_and_key_are_small() {
        assert_eq!(size_of::<TimerKey>(), 8);
        assert_eq!(size_of::<Node<u64>>(), 32);
        assert_eq!(size_of::<Node<u32>>(), 32);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn slots_must_be_power_of_two() {
        Wheel::<u32>::new(10, 12);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            /// Deadline relative to now; negative means in the past.
            Schedule(i64),
            /// Index into every key ever issued (live, fired or cancelled).
            Cancel(usize),
            Advance(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (-50i64..2000).prop_map(Op::Schedule),
                2 => any::<usize>().prop_map(Op::Cancel),
                3 => (0u64..40).prop_map(Op::Advance),
                1 => (0u64..3000).prop_map(Op::Advance),
            ]
        }

        proptest! {
            #[test]
            fn matches_model(
                tick in prop_oneof![Just(1u64), Just(3), Just(10)],
                slots_log2 in 0u32..8,
                ops in proptest::collection::vec(op(), 1..300),
            ) {
                let slots = 1usize << slots_log2;
                let mut wheel = Wheel::new(tick, slots);
                // id -> (deadline, scheduled already due)
                let mut live: BTreeMap<u32, (Millis, bool)> = BTreeMap::new();
                let mut keys: Vec<(TimerKey, u32)> = Vec::new();
                let mut now: Millis = 0;
                let mut expired = Vec::new();
                for op in ops {
                    match op {
                        Op::Schedule(offset) => {
                            let deadline = now.saturating_add_signed(offset);
                            let id = keys.len() as u32;
                            keys.push((wheel.schedule(deadline, id), id));
                            live.insert(id, (deadline, deadline <= now));
                        }
                        Op::Cancel(pick) if !keys.is_empty() => {
                            let (key, id) = keys[pick % keys.len()];
                            let model = live.remove(&id).map(|_| id);
                            prop_assert_eq!(wheel.cancel(key), model);
                        }
                        Op::Cancel(_) => {}
                        Op::Advance(step) => {
                            now += step;
                            expired.clear();
                            wheel.advance(now, &mut expired);
                            for id in &expired {
                                let entry = live.remove(id);
                                prop_assert!(entry.is_some(), "{} fired twice or after cancel", id);
                                let (deadline, _) = entry.unwrap();
                                prop_assert!(deadline <= now, "{} fired early", id);
                            }
                            for (id, &(deadline, past)) in &live {
                                prop_assert!(!past, "{} was due at schedule, not fired", id);
                                prop_assert!(
                                    deadline.div_ceil(tick) * tick > now,
                                    "{} (deadline {}) more than a tick late at {}",
                                    id, deadline, now
                                );
                            }
                        }
                    }
                    wheel.check_invariants();
                    prop_assert_eq!(wheel.len(), live.len());
                    match wheel.next_expiry() {
                        None => prop_assert!(live.is_empty()),
                        Some(bound) => {
                            prop_assert!(bound >= now);
                            let earliest = live
                                .values()
                                .map(|&(d, _)| d.div_ceil(tick).saturating_mul(tick))
                                .min()
                                .unwrap();
                            prop_assert!(bound <= earliest.max(now));
                        }
                    }
                }
            }
        }
    }
}
