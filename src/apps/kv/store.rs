//! The key-value store shared by every shard's [`super::Kv`] service.
//!
//! Keys live in a fixed number of stripes, each a `Mutex<Stripe>` chosen by
//! a hash of the key. A shard holds one stripe lock for one key operation
//! only (a map lookup and at most one insert or remove), never across a
//! syscall or a reply write, so a lock is held for well under a
//! microsecond and with 4 stripes or more per shard two shards rarely want
//! the same one. The commands that must see several keys at once (MSET,
//! MSETNX, RENAME) lock their stripes in ascending order, the one order
//! every path uses, so they cannot deadlock; MGET, DEL and EXISTS take one
//! key at a time (each key is atomic, the command is not).
//!
//! Memory is counted as key + value bytes + [`ENTRY_OVERHEAD`] per entry;
//! a write that would take it past `max_memory` first reclaims expired keys
//! (a bounded sweep, [`RECLAIM_VISITS`]) and is refused, unchanged, if that
//! did not make room. Keys, keys with a TTL and bytes are counted as they
//! change (per stripe, and in store-wide atomics that INFO and DBSIZE read
//! without a lock).
//!
//! Expiry times are Unix milliseconds, as in Redis (EXPIREAT, PEXPIRETIME);
//! a key is expired once the clock is past its time. An expired key is
//! removed when a command touches it, and by [`Store::expire_cycle`], which
//! the shards run on their timers: Redis's active expiry, sampling keys
//! with a TTL and going on while many of them had expired.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;

/// Bytes counted per entry on top of its key and value: the key's box (16),
/// the value's `Arc` pointer and counts (32), the expiry (8), and the
/// map's index and hash slots (~24). An estimate, so that a flood of empty
/// keys still meets the memory bound.
pub const ENTRY_OVERHEAD: usize = 80;

/// Stripes per shard thread: with 4× more stripes than threads, two shards
/// working on random keys collide on a stripe rarely.
pub const STRIPES_PER_THREAD: usize = 4;

/// The fewest stripes, even with one thread (cheap: an empty map each).
pub const STRIPES_MIN: usize = 16;

/// Keys with a TTL sampled per step of an expiry cycle, as Redis's
/// `ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP`.
pub const EXPIRE_SAMPLE: usize = 20;

/// Entries visited per step at most (keys without a TTL are passed over),
/// as Redis's bound on the buckets one step may look at.
pub const EXPIRE_STEP_VISITS: usize = EXPIRE_SAMPLE * 20;

/// A stripe is swept again at once while more than this percentage of the
/// keys sampled in it had expired, as Redis's
/// `ACTIVE_EXPIRE_CYCLE_ACCEPTABLE_STALE`.
pub const EXPIRE_STALE_PERCENT: usize = 10;

/// Entries a write refused for memory looks at, over all stripes, to
/// reclaim expired keys before it answers `-OOM`.
pub const RECLAIM_VISITS: usize = 4096;

/// A write refused because memory would pass `max_memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Oom;

/// The shared store. See the module docs.
#[derive(Debug)]
pub struct Store {
    stripes: Box<[Mutex<Stripe>]>,
    /// Invariant: the sum of [`entry_size`] over every entry (updated under
    /// the entry's stripe lock, read without).
    used: AtomicUsize,
    /// Entries in every stripe (expired ones not yet removed included).
    keys: AtomicUsize,
    /// Entries with an expiry.
    volatile: AtomicUsize,
    max_memory: usize,
    expired: AtomicU64,
    /// A running average of the TTL left on the keys an expiry cycle saw,
    /// in ms, as Redis's `avg_ttl`.
    avg_ttl: AtomicU64,
    /// Where the next reclaim starts, so that reclaims spread.
    reclaim_next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Stripe {
    map: IndexMap<Box<[u8]>, Entry>,
    /// Entries with an expiry in this stripe.
    volatile: usize,
    /// Where the next expiry step of this stripe starts.
    cursor: usize,
}

/// A stored value and its expiry.
#[derive(Debug, Clone)]
struct Entry {
    value: Arc<[u8]>,
    /// Unix milliseconds; [`PERSISTENT`] for none. Every expiry stored is
    /// positive: one at or before now removes the key instead.
    expires_at: i64,
}

/// The `expires_at` of a key without expiry.
const PERSISTENT: i64 = 0;

impl Entry {
    fn expiry(&self) -> Option<i64> {
        (self.expires_at != PERSISTENT).then_some(self.expires_at)
    }

    fn expired(&self, now: i64) -> bool {
        self.expires_at != PERSISTENT && now > self.expires_at
    }
}

fn entry_size(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// The wall clock in Unix milliseconds, Redis's `mstime()`.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time one operation runs at: [`unix_ms`], read when first asked
/// and the same after. Most operations touch only keys without an expiry
/// and never ask (reading the clock for each was 4 % of GET's CPU at
/// `-P 16`).
#[derive(Default)]
struct Now(std::cell::Cell<Option<i64>>);

impl Now {
    fn get(&self) -> i64 {
        self.0.get().unwrap_or_else(|| {
            let now = unix_ms();
            self.0.set(Some(now));
            now
        })
    }
}

/// One key under its stripe's lock: what a command reads and changes.
/// Reading it never shows an expired entry (it was removed on the way in).
pub struct Slot<'s> {
    store: &'s Store,
    stripe: &'s mut Stripe,
    key: &'s [u8],
    index: Option<usize>,
    now: Now,
    refused: bool,
}

impl Slot<'_> {
    /// The clock this operation runs at (Unix ms).
    pub fn now(&self) -> i64 {
        self.now.get()
    }

    /// The value, if the key exists.
    pub fn value(&self) -> Option<&Arc<[u8]>> {
        self.index.map(|i| &self.stripe.map[i].value)
    }

    /// Whether the key exists.
    pub fn exists(&self) -> bool {
        self.index.is_some()
    }

    /// The key's expiry (Unix ms), if it exists and has one.
    pub fn expiry(&self) -> Option<i64> {
        self.index.and_then(|i| self.stripe.map[i].expiry())
    }

    /// Stores `value` with `expiry` (Unix ms, `None` for none), creating the
    /// key if needed. Refused, with nothing changed, when memory would pass
    /// `max_memory`.
    pub fn put(&mut self, value: Arc<[u8]>, expiry: Option<i64>) -> Result<(), Oom> {
        let old = self
            .index
            .map_or(0, |i| entry_size(self.key, &self.stripe.map[i].value));
        if self
            .store
            .resize(old, entry_size(self.key, &value))
            .is_err()
        {
            self.refused = true;
            return Err(Oom);
        }
        let entry = Entry {
            value,
            expires_at: expiry.unwrap_or(PERSISTENT),
        };
        match self.index {
            Some(i) => {
                let slot = &mut self.stripe.map[i];
                let was = slot.expiry().is_some();
                *slot = entry;
                self.store
                    .count_volatile(self.stripe, was, expiry.is_some());
            }
            None => {
                let (i, _) = self.stripe.map.insert_full(self.key.into(), entry);
                self.index = Some(i);
                self.store.keys.fetch_add(1, Ordering::Relaxed);
                self.store
                    .count_volatile(self.stripe, false, expiry.is_some());
            }
        }
        Ok(())
    }

    /// Sets or clears the expiry of an existing key; false if it does not
    /// exist.
    pub fn set_expiry(&mut self, expiry: Option<i64>) -> bool {
        let Some(i) = self.index else {
            return false;
        };
        let entry = &mut self.stripe.map[i];
        let was = entry.expiry().is_some();
        entry.expires_at = expiry.unwrap_or(PERSISTENT);
        self.store
            .count_volatile(self.stripe, was, expiry.is_some());
        true
    }

    /// Removes the key; its value if it existed.
    pub fn remove(&mut self) -> Option<Arc<[u8]>> {
        let i = self.index.take()?;
        let (_, entry) = self.store.remove_at(self.stripe, i)?;
        Some(entry.value)
    }
}

/// What [`Store::rename`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renamed {
    /// The source does not exist.
    NoSuchKey,
    /// RENAMENX and the destination exists: nothing changed.
    TargetExists,
    /// Done (or source and destination are the same existing key).
    Done,
}

impl Store {
    /// A store for `threads` shards holding at most `max_memory` bytes (0:
    /// unlimited).
    pub fn new(threads: usize, max_memory: usize) -> Store {
        let count = threads
            .max(1)
            .saturating_mul(STRIPES_PER_THREAD)
            .next_power_of_two()
            .max(STRIPES_MIN);
        Store {
            stripes: (0..count).map(|_| Mutex::default()).collect(),
            used: AtomicUsize::new(0),
            keys: AtomicUsize::new(0),
            volatile: AtomicUsize::new(0),
            max_memory,
            expired: AtomicU64::new(0),
            avg_ttl: AtomicU64::new(0),
            reclaim_next: AtomicUsize::new(0),
        }
    }

    /// The number of stripes (a power of two).
    pub fn stripes(&self) -> usize {
        self.stripes.len()
    }

    /// Bytes counted now (keys, values and per-entry overhead).
    pub fn used_memory(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit (0: unlimited).
    pub fn max_memory(&self) -> usize {
        self.max_memory
    }

    /// Keys removed because they expired, so far.
    pub fn expired_keys(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Keys held (expired ones not yet removed included, as Redis counts).
    /// A counter: no lock, no walk.
    pub fn len(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// No keys at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys with an expiry (a counter).
    pub fn volatile_len(&self) -> usize {
        self.volatile.load(Ordering::Relaxed)
    }

    /// The running average TTL (ms) of the keys the expiry cycles sampled.
    pub fn avg_ttl(&self) -> u64 {
        self.avg_ttl.load(Ordering::Relaxed)
    }

    /// Runs `f` on `key` under its stripe's lock (an expired entry is
    /// removed first). For reads and for writes that never grow memory.
    pub fn with<R>(&self, key: &[u8], f: impl FnOnce(&mut Slot<'_>) -> R) -> R {
        let mut stripe = self.stripe(key);
        let mut slot = self.slot(&mut stripe, key, Now::default());
        f(&mut slot)
    }

    /// Runs `f` on `key` under its stripe's lock, like [`Store::with`];
    /// when `f` had a write refused for memory ([`Slot::put`]), expired
    /// keys are reclaimed (with no lock held) and, if that freed anything,
    /// `f` runs once more. `f` must leave the key unchanged when a put is
    /// refused (it then returns the refusal).
    pub fn write<R>(&self, key: &[u8], mut f: impl FnMut(&mut Slot<'_>) -> R) -> R {
        let (result, refused) = self.write_once(key, &mut f);
        if refused && self.reclaim() > 0 {
            return self.write_once(key, &mut f).0;
        }
        result
    }

    fn write_once<R>(&self, key: &[u8], f: &mut impl FnMut(&mut Slot<'_>) -> R) -> (R, bool) {
        let mut stripe = self.stripe(key);
        let mut slot = self.slot(&mut stripe, key, Now::default());
        let result = f(&mut slot);
        (result, slot.refused)
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.with(key, |slot| slot.value().cloned())
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &[u8]) -> bool {
        self.with(key, |slot| slot.exists())
    }

    /// Removes `key`; whether it existed.
    pub fn remove(&self, key: &[u8]) -> bool {
        self.with(key, |slot| slot.remove().is_some())
    }

    /// Sets every `(key, value)` pair (no expiry), all under their stripes'
    /// locks at once, so no other client sees half of them. With
    /// `only_new`, nothing is set if any key exists (MSETNX): `Ok(false)`.
    /// Refused, unchanged, when they would not fit in `max_memory`.
    pub fn set_many<'a>(
        &self,
        pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
        only_new: bool,
    ) -> Result<bool, Oom> {
        match self.set_many_once(pairs.clone(), only_new) {
            Err(Oom) if self.reclaim() > 0 => self.set_many_once(pairs, only_new),
            other => other,
        }
    }

    fn set_many_once<'a>(
        &self,
        pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        only_new: bool,
    ) -> Result<bool, Oom> {
        let now = Now::default();
        // Each key's last value is the one that stays.
        let mut last: std::collections::HashMap<&[u8], &[u8]> = std::collections::HashMap::new();
        for (key, value) in pairs {
            last.insert(key, value);
        }
        let mut indices: Vec<usize> = last.keys().map(|k| self.index_of(k)).collect();
        let mut locked = self.lock_many(&mut indices);
        let at = |key: &[u8]| -> usize {
            let index = self.index_of(key);
            locked
                .binary_search_by_key(&index, |(i, _)| *i)
                .expect("every stripe was locked")
        };
        let positions: Vec<usize> = last.keys().map(|k| at(k)).collect();
        let (mut old, mut new) = (0, 0);
        for ((&key, &value), &at) in last.iter().zip(&positions) {
            let stripe = &mut *locked[at].1;
            let index = self.live_index(stripe, key, &now);
            if only_new && index.is_some() {
                return Ok(false);
            }
            old += index.map_or(0, |i| entry_size(key, &stripe.map[i].value));
            new += entry_size(key, value);
        }
        self.resize(old, new)?;
        for ((&key, &value), &at) in last.iter().zip(&positions) {
            let stripe = &mut *locked[at].1;
            let entry = Entry {
                value: value.into(),
                expires_at: PERSISTENT,
            };
            match stripe.map.get_index_of(key) {
                Some(i) => {
                    let was = stripe.map[i].expiry().is_some();
                    stripe.map[i] = entry;
                    self.count_volatile(stripe, was, false);
                }
                None => {
                    stripe.map.insert(key.into(), entry);
                    self.keys.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(true)
    }

    /// Moves `from`'s value and expiry to `to` (replacing it), both stripes
    /// locked at once. Memory is not checked (RENAME may not fail for it in
    /// Redis either); it changes only by the keys' lengths.
    pub fn rename(&self, from: &[u8], to: &[u8], only_new: bool) -> Renamed {
        let now = Now::default();
        let (index_from, index_to) = (self.index_of(from), self.index_of(to));
        let mut locked = self.lock_many(&mut vec![index_from, index_to]);
        let at = |index: usize| usize::from(locked.len() == 2 && locked[1].0 == index);
        let (at_from, at_to) = (at(index_from), at(index_to));
        let Some(i) = self.live_index(&mut locked[at_from].1, from, &now) else {
            return Renamed::NoSuchKey;
        };
        if from == to {
            return if only_new {
                Renamed::TargetExists
            } else {
                Renamed::Done
            };
        }
        if let Some(j) = self.live_index(&mut locked[at_to].1, to, &now) {
            if only_new {
                return Renamed::TargetExists;
            }
            self.remove_at(&mut locked[at_to].1, j);
        }
        // Looked up again: removing `to` may have moved `from` in a shared
        // stripe.
        let stripe = &mut *locked[at_from].1;
        let i = stripe.map.get_index_of(from).unwrap_or(i);
        let Some((_, entry)) = self.remove_at(stripe, i) else {
            return Renamed::NoSuchKey;
        };
        let stripe = &mut *locked[at_to].1;
        self.used
            .fetch_add(entry_size(to, &entry.value), Ordering::Relaxed);
        self.keys.fetch_add(1, Ordering::Relaxed);
        self.count_volatile(stripe, false, entry.expiry().is_some());
        stripe.map.insert(to.into(), entry);
        Renamed::Done
    }

    /// Removes every key. Each stripe's map is swapped for an empty one
    /// under its lock and dropped after the lock is released, so other
    /// shards wait for a swap, not for the freeing. Stripe by stripe: a
    /// concurrent write may survive it, as it could have come just after.
    pub fn clear(&self) {
        for i in 0..self.stripes.len() {
            let taken = {
                let mut stripe = self.lock(i);
                let volatile = std::mem::take(&mut stripe.volatile);
                stripe.cursor = 0;
                self.volatile.fetch_sub(volatile, Ordering::Relaxed);
                std::mem::take(&mut stripe.map)
            };
            let freed: usize = taken
                .iter()
                .map(|(key, entry)| entry_size(key, &entry.value))
                .sum();
            self.keys.fetch_sub(taken.len(), Ordering::Relaxed);
            self.release(freed);
            drop(taken);
        }
    }

    /// Active expiry over the stripes `indices` (taken modulo the stripe
    /// count), as Redis's `activeExpireCycle`: per stripe with keys that
    /// have a TTL, sample [`EXPIRE_SAMPLE`] of them from where the last
    /// step stopped and remove the expired ones; sample that stripe again
    /// while more than [`EXPIRE_STALE_PERCENT`] % of a sample had expired.
    /// Stops at `deadline`. The lock is taken per step, so other shards
    /// wait at most one step. Returns whether the deadline cut it short
    /// (there is likely more to do).
    pub fn expire_cycle(&self, indices: impl Iterator<Item = usize>, deadline: Instant) -> bool {
        let mut ttl_sum: u128 = 0;
        let mut ttl_samples: u64 = 0;
        let mut late = false;
        'stripes: for index in indices {
            loop {
                let now = unix_ms();
                let step = self.expire_step(index, now, EXPIRE_SAMPLE);
                ttl_sum += step.ttl_sum;
                ttl_samples += step.ttl_samples;
                if Instant::now() >= deadline {
                    late = true;
                    break 'stripes;
                }
                if step.sampled == 0 || step.expired * 100 <= step.sampled * EXPIRE_STALE_PERCENT {
                    break;
                }
            }
        }
        if ttl_samples > 0 {
            // Redis's running average: 2 % of this sample, 98 % of before.
            let sample = (ttl_sum / u128::from(ttl_samples)) as u64;
            let before = self.avg_ttl.load(Ordering::Relaxed);
            let before = if before == 0 { sample } else { before };
            self.avg_ttl
                .store(before / 50 * 49 + sample / 50, Ordering::Relaxed);
        }
        late
    }

    /// Reclaims expired keys for a write refused for memory: expiry steps
    /// over the stripes in turn (from where the last reclaim stopped) until
    /// [`RECLAIM_VISITS`] entries were looked at. Returns the keys removed.
    pub fn reclaim(&self) -> usize {
        if self.volatile_len() == 0 {
            return 0;
        }
        let start = self.reclaim_next.fetch_add(1, Ordering::Relaxed);
        let mut removed = 0;
        let mut visits = 0;
        for offset in 0..self.stripes.len() {
            let index = start.wrapping_add(offset);
            loop {
                let step = self.expire_step(index, unix_ms(), EXPIRE_SAMPLE);
                removed += step.expired;
                visits += step.visited;
                if visits >= RECLAIM_VISITS {
                    return removed;
                }
                if step.expired == 0 {
                    break;
                }
            }
        }
        removed
    }

    /// One step over stripe `index`: up to `sample` keys with a TTL (at
    /// most [`EXPIRE_STEP_VISITS`] entries), expired ones removed.
    fn expire_step(&self, index: usize, now: i64, sample: usize) -> Step {
        let mut step = Step::default();
        let mut stripe = self.lock(index);
        if stripe.volatile == 0 {
            return step;
        }
        let mut at = stripe.cursor;
        while step.sampled < sample && step.visited < EXPIRE_STEP_VISITS {
            if at >= stripe.map.len() {
                at = 0;
                if stripe.map.is_empty() {
                    break;
                }
            }
            step.visited += 1;
            let entry = &stripe.map[at];
            let Some(expiry) = entry.expiry() else {
                at += 1;
                continue;
            };
            step.sampled += 1;
            if entry.expired(now) {
                // The last entry moves into `at`: look at it next.
                self.remove_at(&mut stripe, at);
                self.expired.fetch_add(1, Ordering::Relaxed);
                step.expired += 1;
            } else {
                step.ttl_sum += (expiry - now) as u128;
                step.ttl_samples += 1;
                at += 1;
            }
        }
        stripe.cursor = at;
        step
    }

    /// Up to `count` entries of a SCAN from `cursor` (see `ScanCursor`),
    /// the keys `want` accepts pushed to `keys`, taking no more than `room`
    /// bytes of replies (`cost` of each key). Returns the next cursor, 0
    /// when done.
    ///
    /// The guarantee, as Redis's: every key present for the whole scan is
    /// returned at least once; keys added or removed meanwhile may or may
    /// not be, and a key may come twice. It holds because each stripe is
    /// walked from its last position down: a removal moves only the last
    /// entry (into the hole), and the last entry is either already walked
    /// or moves to a lower position, still ahead.
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        mut room: usize,
        cost: impl Fn(&[u8]) -> usize,
        want: impl Fn(&[u8]) -> bool,
        keys: &mut Vec<Box<[u8]>>,
    ) -> Result<u64, ScanTooLarge> {
        let bits = self.stripes.len().trailing_zeros();
        let mut stripe_index = (cursor & (self.stripes.len() as u64 - 1)) as usize;
        let mut left = cursor >> bits; // 0: from the stripe's end
        let mut visited = 0;
        while visited < count {
            let now = unix_ms();
            let mut stripe = self.lock(stripe_index);
            let mut at = if left == 0 {
                stripe.map.len()
            } else {
                (left as usize).min(stripe.map.len())
            };
            while at > 0 && visited < count {
                let i = at - 1;
                if stripe.map[i].expired(now) {
                    self.remove_at(&mut stripe, i);
                    self.expired.fetch_add(1, Ordering::Relaxed);
                    visited += 1;
                    at -= 1;
                    continue;
                }
                let key = stripe.map.get_index(i).expect("in range").0;
                if want(key) {
                    let need = cost(key);
                    if need > room {
                        if visited == 0 && keys.is_empty() {
                            return Err(ScanTooLarge);
                        }
                        // Stop before it: the cursor resumes here.
                        return Ok(((at as u64) << bits) | stripe_index as u64);
                    }
                    room -= need;
                    keys.push(key.clone());
                }
                visited += 1;
                at -= 1;
            }
            drop(stripe);
            if at > 0 {
                return Ok(((at as u64) << bits) | stripe_index as u64);
            }
            stripe_index += 1;
            left = 0;
            if stripe_index == self.stripes.len() {
                return Ok(0);
            }
        }
        Ok(stripe_index as u64)
    }

    /// Every live key `want` accepts, or `None` once their `cost` passes
    /// `room`.
    pub fn keys(
        &self,
        room: usize,
        cost: impl Fn(&[u8]) -> usize,
        want: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<Box<[u8]>>> {
        let mut keys = Vec::new();
        let mut taken = 0;
        for index in 0..self.stripes.len() {
            let now = unix_ms();
            let stripe = self.lock(index);
            for (key, entry) in stripe.map.iter() {
                if !entry.expired(now) && want(key) {
                    taken += cost(key);
                    if taken > room {
                        return None;
                    }
                    keys.push(key.clone());
                }
            }
        }
        Some(keys)
    }

    /// A key picked at random (each key about equally likely), `None` when
    /// there is none. Expired keys met on the way are removed.
    pub fn random_key(&self, mut random: impl FnMut() -> u64) -> Option<Box<[u8]>> {
        // Bounded: each miss either removed an expired key or met a stripe
        // emptied by another shard meanwhile.
        for _ in 0..1000 {
            let total = self.len();
            if total == 0 {
                return None;
            }
            let mut pick = (random() % total as u64) as usize;
            for index in 0..self.stripes.len() {
                let mut stripe = self.lock(index);
                if pick >= stripe.map.len() {
                    pick -= stripe.map.len();
                    continue;
                }
                let now = unix_ms();
                let (key, entry) = stripe.map.get_index(pick).expect("in range");
                if !entry.expired(now) {
                    return Some(key.clone());
                }
                self.remove_at(&mut stripe, pick);
                self.expired.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        None
    }

    fn slot<'s>(&'s self, stripe: &'s mut Stripe, key: &'s [u8], now: Now) -> Slot<'s> {
        let index = self.live_index(stripe, key, &now);
        Slot {
            store: self,
            stripe,
            key,
            index,
            now,
            refused: false,
        }
    }

    /// Where `key` is in `stripe`, if it is there and live; an expired
    /// entry is removed on the way.
    fn live_index(&self, stripe: &mut Stripe, key: &[u8], now: &Now) -> Option<usize> {
        let i = stripe.map.get_index_of(key)?;
        // The clock only for a key that can have expired.
        if stripe.map[i].expiry().is_some_and(|at| now.get() > at) {
            self.remove_at(stripe, i);
            self.expired.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(i)
    }

    /// Removes entry `i` of `stripe` with its accounting.
    fn remove_at(&self, stripe: &mut Stripe, i: usize) -> Option<(Box<[u8]>, Entry)> {
        let (key, entry) = stripe.map.swap_remove_index(i)?;
        self.release(entry_size(&key, &entry.value));
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.count_volatile(stripe, entry.expiry().is_some(), false);
        Some((key, entry))
    }

    fn count_volatile(&self, stripe: &mut Stripe, was: bool, is: bool) {
        match (was, is) {
            (false, true) => {
                stripe.volatile += 1;
                self.volatile.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                stripe.volatile -= 1;
                self.volatile.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn index_of(&self, key: &[u8]) -> usize {
        stripe_hash(key) as usize & (self.stripes.len() - 1)
    }

    fn stripe(&self, key: &[u8]) -> MutexGuard<'_, Stripe> {
        self.lock(self.index_of(key))
    }

    /// Locks the stripes `indices` name (sorted and deduplicated here) in
    /// ascending order, the one order every multi-stripe path uses.
    fn lock_many(&self, indices: &mut Vec<usize>) -> Vec<(usize, MutexGuard<'_, Stripe>)> {
        indices.sort_unstable();
        indices.dedup();
        indices.iter().map(|&i| (i, self.lock(i))).collect()
    }

    /// A poisoned stripe is still consistent: nothing here panics between
    /// changing a map and updating the counters, so the poison is ignored.
    fn lock(&self, index: usize) -> MutexGuard<'_, Stripe> {
        self.stripes[index & (self.stripes.len() - 1)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Accounts an entry going from `old` to `new` bytes; refuses growth
    /// past `max_memory`.
    fn resize(&self, old: usize, new: usize) -> Result<(), Oom> {
        if new <= old {
            self.release(old - new);
            return Ok(());
        }
        let grow = new - old;
        let max = self.max_memory;
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                let after = used.checked_add(grow)?;
                (max == 0 || after <= max).then_some(after)
            })
            .map(drop)
            .map_err(|_| Oom)
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A SCAN whose next key alone is larger than the reply room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanTooLarge;

/// What one expiry step saw.
#[derive(Default)]
struct Step {
    visited: usize,
    sampled: usize,
    expired: usize,
    ttl_sum: u128,
    ttl_samples: u64,
}

/// FNV-1a over the key, to pick a stripe. Not flood-resistant, and need not
/// be: the maps inside use SipHash with a random key; a peer aiming many
/// keys at one stripe only makes its own shard wait a little on that lock.
fn stripe_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The low bits pick the stripe; fold the high ones in.
    hash ^ (hash >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set(store: &Store, key: &[u8], value: &[u8], expiry: Option<i64>) -> Result<(), Oom> {
        store.write(key, |slot| slot.put(value.into(), expiry))
    }

    fn in_ms(ms: i64) -> Option<i64> {
        Some(unix_ms() + ms)
    }

    #[test]
    fn stripes_are_a_power_of_two_of_at_least_four_per_thread() {
        assert_eq!(Store::new(1, 0).stripes(), 16);
        assert_eq!(Store::new(8, 0).stripes(), 32);
        assert_eq!(Store::new(5, 0).stripes(), 32);
    }

    #[test]
    fn writes_and_removals_keep_the_counters() {
        let store = Store::new(1, 0);
        set(&store, b"k", b"value", None).unwrap();
        assert_eq!(store.get(b"k").as_deref(), Some(&b"value"[..]));
        assert_eq!(store.used_memory(), 1 + 5 + ENTRY_OVERHEAD);
        set(&store, b"k", b"v", in_ms(10_000)).unwrap();
        assert_eq!(store.used_memory(), 1 + 1 + ENTRY_OVERHEAD);
        assert_eq!((store.len(), store.volatile_len()), (1, 1));
        set(&store, b"k", b"v", None).unwrap();
        assert_eq!(store.volatile_len(), 0);
        assert!(store.with(b"k", |slot| slot.set_expiry(in_ms(10_000))));
        assert_eq!(store.volatile_len(), 1);
        assert!(store.remove(b"k"));
        assert!(!store.remove(b"k"));
        assert_eq!(
            (store.used_memory(), store.len(), store.volatile_len()),
            (0, 0, 0)
        );
    }

    #[test]
    fn write_past_max_memory_is_refused_and_nothing_is_lost() {
        let size = 1 + 10 + ENTRY_OVERHEAD;
        let store = Store::new(1, 2 * size);
        set(&store, b"a", &[0; 10], None).unwrap();
        set(&store, b"b", &[0; 10], None).unwrap();
        assert_eq!(set(&store, b"c", &[0; 10], None), Err(Oom));
        // Shrinking or replacing within the limit is fine.
        set(&store, b"a", &[0; 5], None).unwrap();
        assert_eq!(store.get(b"b").map(|v| v.len()), Some(10));
        let pairs = [(&b"x"[..], &b"1"[..]), (b"y", b"2")];
        assert_eq!(store.set_many(pairs.iter().copied(), false), Err(Oom));
        assert!(!store.exists(b"x"));
    }

    #[test]
    fn a_write_refused_for_memory_first_reclaims_expired_keys() {
        // Full of keys that have expired: without a reclaim every write
        // would be refused until something touched them.
        let size = 4 + 100 + ENTRY_OVERHEAD;
        let store = Store::new(1, 200 * size);
        let mut stored = 0;
        while set(
            &store,
            format!("k{stored:03}").as_bytes(),
            &[1; 100],
            in_ms(30),
        )
        .is_ok()
        {
            stored += 1;
        }
        assert_eq!(stored, 200);
        std::thread::sleep(Duration::from_millis(60));
        for i in 0..200 {
            let key = format!("f{i:03}");
            assert_eq!(
                set(&store, key.as_bytes(), &[2; 100], None),
                Ok(()),
                "write {i}"
            );
        }
        assert_eq!(store.len(), 200);
        assert_eq!(store.expired_keys(), 200);
        let pairs = [(&b"m1"[..], &[3u8; 100][..])];
        assert_eq!(store.set_many(pairs.iter().copied(), false), Err(Oom));
    }

    #[test]
    fn set_many_counts_replaced_and_repeated_keys_once() {
        let store = Store::new(1, 0);
        set(&store, b"a", b"old", in_ms(10_000)).unwrap();
        let pairs = [(&b"a"[..], &b"1"[..]), (b"b", b"2"), (b"b", b"3")];
        assert_eq!(store.set_many(pairs.iter().copied(), false), Ok(true));
        assert_eq!(store.used_memory(), 2 * (2 + ENTRY_OVERHEAD));
        assert_eq!((store.len(), store.volatile_len()), (2, 0));
        assert_eq!(store.get(b"b").as_deref(), Some(&b"3"[..]));
        let pairs = [(&b"c"[..], &b"1"[..]), (b"a", b"2")];
        assert_eq!(store.set_many(pairs.iter().copied(), true), Ok(false));
        assert!(!store.exists(b"c"));
    }

    #[test]
    fn active_expiry_removes_expired_keys_without_access() {
        let store = Store::new(1, 0);
        for i in 0..1000 {
            let expiry = if i % 4 == 0 { None } else { in_ms(1) };
            set(&store, format!("k{i}").as_bytes(), b"v", expiry).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        let deadline = Instant::now() + Duration::from_secs(5);
        let late = store.expire_cycle(0..store.stripes(), deadline);
        assert!(!late);
        // The cycle stops a stripe once no more than 10 % of a sample had
        // expired: here every sample is all expired until none is left.
        assert_eq!(store.len(), 250);
        assert_eq!(store.volatile_len(), 0);
        assert_eq!(store.expired_keys(), 750);
        let kept: usize = (0..1000)
            .step_by(4)
            .map(|i| format!("k{i}").len() + 1 + ENTRY_OVERHEAD)
            .sum();
        assert_eq!(store.used_memory(), kept);
    }

    #[test]
    fn an_expiry_cycle_stops_at_its_deadline() {
        let store = Store::new(1, 0);
        for i in 0..20_000 {
            set(&store, format!("k{i}").as_bytes(), b"v", in_ms(1)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        assert!(store.expire_cycle(0..store.stripes(), Instant::now()));
        assert!(!store.is_empty());
    }

    #[test]
    fn rename_moves_value_and_expiry() {
        let store = Store::new(4, 0);
        set(&store, b"from", b"v", in_ms(10_000)).unwrap();
        set(&store, b"to", b"old", None).unwrap();
        assert_eq!(store.rename(b"from", b"to", true), Renamed::TargetExists);
        assert_eq!(store.rename(b"from", b"to", false), Renamed::Done);
        assert_eq!(store.rename(b"from", b"x", false), Renamed::NoSuchKey);
        assert_eq!(store.get(b"to").as_deref(), Some(&b"v"[..]));
        assert!(store.with(b"to", |slot| slot.expiry()).is_some());
        assert_eq!((store.len(), store.volatile_len()), (1, 1));
        assert_eq!(store.used_memory(), 2 + 1 + ENTRY_OVERHEAD);
        assert_eq!(store.rename(b"to", b"to", false), Renamed::Done);
        assert_eq!(store.rename(b"to", b"to", true), Renamed::TargetExists);
    }

    #[test]
    fn clear_frees_everything() {
        let store = Store::new(2, 0);
        for i in 0..100 {
            let expiry = if i % 2 == 0 { None } else { in_ms(10_000) };
            set(&store, format!("k{i}").as_bytes(), b"v", expiry).unwrap();
        }
        store.clear();
        assert!(store.is_empty());
        assert_eq!((store.used_memory(), store.volatile_len()), (0, 0));
    }

    fn full_scan(store: &Store, count: usize) -> Vec<Box<[u8]>> {
        let mut keys = Vec::new();
        let mut cursor = 0;
        loop {
            cursor = store
                .scan(cursor, count, usize::MAX, |_| 1, |_| true, &mut keys)
                .unwrap();
            if cursor == 0 {
                return keys;
            }
        }
    }

    #[test]
    fn a_scan_returns_every_key_present_throughout_despite_removals() {
        let store = Store::new(1, 0);
        for i in 0..2000 {
            set(&store, format!("k{i}").as_bytes(), b"v", None).unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut round = 0;
        loop {
            let mut keys = Vec::new();
            cursor = store
                .scan(cursor, 7, usize::MAX, |_| 1, |_| true, &mut keys)
                .unwrap();
            seen.extend(keys);
            // Meanwhile: remove some keys (every 3rd of the ones still
            // there), add new ones.
            round += 1;
            for i in (round * 3..2000).step_by(97) {
                if i % 3 == 0 {
                    store.remove(format!("k{i}").as_bytes());
                }
            }
            set(&store, format!("new{round}").as_bytes(), b"v", None).unwrap();
            if cursor == 0 {
                break;
            }
        }
        for i in (0..2000).filter(|i| i % 3 != 0) {
            let key = format!("k{i}");
            assert!(seen.contains(key.as_bytes()), "{key} was never returned");
        }
        assert_eq!(full_scan(&store, 1000).len(), store.len());
    }

    #[test]
    fn a_scan_stops_where_its_reply_room_ends() {
        let store = Store::new(1, 0);
        for i in 0..100 {
            set(&store, format!("k{i:02}").as_bytes(), b"v", None).unwrap();
        }
        let mut keys = Vec::new();
        let mut cursor = 0;
        loop {
            cursor = store
                .scan(cursor, 100, 30, |k| k.len(), |_| true, &mut keys)
                .unwrap();
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 100);
        let mut none = Vec::new();
        assert_eq!(
            store.scan(0, 10, 2, |k| k.len(), |_| true, &mut none),
            Err(ScanTooLarge)
        );
    }
}
