//! The key-value store shared by every shard's [`super::Kv`] service.
//!
//! Keys live in a fixed number of stripes, each a `Mutex<IndexMap>` chosen
//! by a hash of the key. A shard holds one stripe lock for one key
//! operation only (a map lookup and at most one insert or remove), never
//! across a syscall or a reply write, so a lock is held for well under a
//! microsecond and with 4 stripes or more per shard two shards rarely want
//! the same one. Multi-key commands (MGET, MSET, DEL, EXISTS) take the
//! stripes one key at a time: each key is atomic, the command as a whole is
//! not (another shard may see half of an MSET), which the README states.
//!
//! Memory is counted as key + value bytes + [`ENTRY_OVERHEAD`] per entry in
//! one atomic counter; a write that would take it past `max_memory` is
//! refused before anything changes. Expired keys are removed lazily when
//! touched and by [`Store::sweep`], which looks at a bounded number of
//! entries per call.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

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

/// A deadline that never comes.
const NEVER: u64 = u64::MAX;

/// A write refused because memory would pass `max_memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Oom;

/// When a SET applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// Only when the key does not exist (NX).
    Absent,
    /// Only when the key exists (XX).
    Present,
}

/// What a SET does to the key's time to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// No expiry (a plain SET clears any earlier one).
    Persist,
    /// Keep the one the key had (KEEPTTL).
    Keep,
    /// Expire this many milliseconds from now.
    In(u64),
}

/// Why an INCR failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncrError {
    /// The value is not a decimal i64.
    NotInteger,
    /// The result would not fit an i64.
    Overflow,
    /// The new value would pass `max_memory`.
    Oom,
}

/// The shared store. See the module docs.
#[derive(Debug)]
pub struct Store {
    stripes: Box<[Mutex<Stripe>]>,
    /// Invariant: the sum of [`entry_size`] over every entry in every stripe
    /// (updated under the stripe lock, read without).
    used: AtomicUsize,
    max_memory: usize,
    epoch: Instant,
    expired: AtomicU64,
}

#[derive(Debug, Default)]
struct Stripe {
    map: IndexMap<Box<[u8]>, Entry>,
    /// Where the next sweep of this stripe starts.
    cursor: usize,
}

#[derive(Debug)]
struct Entry {
    value: Arc<[u8]>,
    /// Milliseconds since the store's epoch; [`NEVER`] for no expiry.
    expires_at: u64,
}

fn entry_size(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
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
            max_memory,
            epoch: Instant::now(),
            expired: AtomicU64::new(0),
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

    /// The value of `key`, if it exists and has not expired.
    pub fn get(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        let now = self.now();
        let mut stripe = self.stripe(key);
        self.live(&mut stripe, key, now)
            .map(|entry| entry.value.clone())
    }

    /// The length of `key`'s value, if it exists and has not expired.
    pub fn exists(&self, key: &[u8]) -> bool {
        let now = self.now();
        let mut stripe = self.stripe(key);
        self.live(&mut stripe, key, now).is_some()
    }

    /// Sets `key` to `value` under `condition`; `Ok(false)` when the
    /// condition did not hold (nothing changed).
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        condition: Condition,
        ttl: Ttl,
    ) -> Result<bool, Oom> {
        let now = self.now();
        let mut stripe = self.stripe(key);
        let old = self.live(&mut stripe, key, now);
        let (old_size, old_expiry) = match old {
            Some(entry) => (entry_size(key, &entry.value), entry.expires_at),
            None => (0, NEVER),
        };
        let exists = old.is_some();
        match condition {
            Condition::Absent if exists => return Ok(false),
            Condition::Present if !exists => return Ok(false),
            _ => {}
        }
        let new_size = entry_size(key, value);
        self.resize(old_size, new_size)?;
        let expires_at = match ttl {
            Ttl::Persist => NEVER,
            Ttl::Keep => old_expiry,
            Ttl::In(ms) => now.saturating_add(ms),
        };
        let entry = Entry {
            value: value.into(),
            expires_at,
        };
        match stripe.map.get_mut(key) {
            Some(slot) => *slot = entry,
            None => {
                stripe.map.insert(key.into(), entry);
            }
        }
        Ok(true)
    }

    /// Sets every `(key, value)` pair, or none when they would not fit
    /// together in `max_memory`. Each key is set atomically; the command as
    /// a whole is not (stripes are locked one at a time).
    pub fn set_many<'a>(
        &self,
        pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    ) -> Result<(), Oom> {
        // Reserve the worst case (every key new) first, so that running out
        // half-way can never leave half the pairs written.
        let worst: usize = pairs.clone().map(|(k, v)| entry_size(k, v)).sum();
        self.resize(0, worst)?;
        let now = self.now();
        for (key, value) in pairs {
            let mut stripe = self.stripe(key);
            let old_size = self
                .live(&mut stripe, key, now)
                .map_or(0, |entry| entry_size(key, &entry.value));
            // Already counted in `worst`: give back what the old entry held.
            self.used.fetch_sub(old_size, Ordering::Relaxed);
            let entry = Entry {
                value: value.into(),
                expires_at: NEVER,
            };
            if let Some(slot) = stripe.map.get_mut(key) {
                *slot = entry;
            } else {
                stripe.map.insert(key.into(), entry);
            }
        }
        Ok(())
    }

    /// Removes `key`; whether it existed.
    pub fn remove(&self, key: &[u8]) -> bool {
        let now = self.now();
        let mut stripe = self.stripe(key);
        if self.live(&mut stripe, key, now).is_none() {
            return false;
        }
        if let Some((key, entry)) = stripe.map.swap_remove_entry(key) {
            self.release(entry_size(&key, &entry.value));
        }
        true
    }

    /// Adds `delta` to the integer in `key` (absent counts as 0).
    pub fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, IncrError> {
        let now = self.now();
        let mut stripe = self.stripe(key);
        let (current, old_size, expires_at) = match self.live(&mut stripe, key, now) {
            Some(entry) => {
                let number = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| crate::codec::resp::parse_int(text.as_bytes()))
                    .ok_or(IncrError::NotInteger)?;
                (number, entry_size(key, &entry.value), entry.expires_at)
            }
            None => (0, 0, NEVER),
        };
        let next = current.checked_add(delta).ok_or(IncrError::Overflow)?;
        let text = next.to_string();
        let new_size = entry_size(key, text.as_bytes());
        self.resize(old_size, new_size)
            .map_err(|Oom| IncrError::Oom)?;
        let entry = Entry {
            value: text.as_bytes().into(),
            expires_at,
        };
        if let Some(slot) = stripe.map.get_mut(key) {
            *slot = entry;
        } else {
            stripe.map.insert(key.into(), entry);
        }
        Ok(next)
    }

    /// Sets `key` to expire `ms` from now (0 or less: removes it at once);
    /// whether the key existed.
    pub fn expire_in(&self, key: &[u8], ms: i64) -> bool {
        let now = self.now();
        let mut stripe = self.stripe(key);
        if self.live(&mut stripe, key, now).is_none() {
            return false;
        }
        match u64::try_from(ms) {
            Ok(ms) if ms > 0 => {
                if let Some(entry) = stripe.map.get_mut(key) {
                    entry.expires_at = now.saturating_add(ms);
                }
            }
            _ => {
                if let Some((key, entry)) = stripe.map.swap_remove_entry(key) {
                    self.release(entry_size(&key, &entry.value));
                }
            }
        }
        true
    }

    /// `key`'s remaining time to live in ms: `None` when it does not exist,
    /// `Some(None)` when it has no expiry.
    pub fn ttl_ms(&self, key: &[u8]) -> Option<Option<u64>> {
        let now = self.now();
        let mut stripe = self.stripe(key);
        let entry = self.live(&mut stripe, key, now)?;
        Some((entry.expires_at != NEVER).then(|| entry.expires_at - now))
    }

    /// Keys held (expired ones not yet swept included, as Redis counts).
    /// Locks the stripes one at a time.
    pub fn len(&self) -> usize {
        (0..self.stripes.len())
            .map(|i| self.lock(i).map.len())
            .sum()
    }

    /// No keys at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys with an expiry set.
    pub fn volatile_len(&self) -> usize {
        (0..self.stripes.len())
            .map(|i| {
                let stripe = self.lock(i);
                stripe
                    .map
                    .values()
                    .filter(|entry| entry.expires_at != NEVER)
                    .count()
            })
            .sum()
    }

    /// Removes every key. Stripe by stripe, so a concurrent write may
    /// survive it, as it could have come just after.
    pub fn clear(&self) {
        for i in 0..self.stripes.len() {
            let mut stripe = self.lock(i);
            let freed: usize = stripe
                .map
                .iter()
                .map(|(key, entry)| entry_size(key, &entry.value))
                .sum();
            stripe.map = IndexMap::new();
            stripe.cursor = 0;
            self.release(freed);
        }
    }

    /// Looks at up to `budget` entries of stripe `index` (modulo the stripe
    /// count), from where its last sweep stopped, and removes the expired
    /// ones. Returns how many it removed.
    pub fn sweep(&self, index: usize, budget: usize) -> usize {
        let now = self.now();
        let mut stripe = self.lock(index & (self.stripes.len() - 1));
        let mut removed = 0;
        let mut at = stripe.cursor;
        for _ in 0..budget {
            if at >= stripe.map.len() {
                at = 0;
                break;
            }
            let expired = stripe
                .map
                .get_index(at)
                .is_some_and(|(_, entry)| entry.expires_at <= now);
            if expired {
                // The last entry moves into `at`: look at it next.
                if let Some((key, entry)) = stripe.map.swap_remove_index(at) {
                    self.release(entry_size(&key, &entry.value));
                    removed += 1;
                }
            } else {
                at += 1;
            }
        }
        stripe.cursor = at;
        self.expired.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Milliseconds since the store's epoch.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn stripe(&self, key: &[u8]) -> MutexGuard<'_, Stripe> {
        self.lock(stripe_hash(key) as usize)
    }

    /// A poisoned stripe is still consistent: nothing here panics between
    /// changing a map and updating `used`, so the poison is ignored.
    fn lock(&self, index: usize) -> MutexGuard<'_, Stripe> {
        self.stripes[index & (self.stripes.len() - 1)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live entry of `key`: an expired one is removed on the way.
    fn live<'s>(&self, stripe: &'s mut Stripe, key: &[u8], now: u64) -> Option<&'s Entry> {
        let index = stripe.map.get_index_of(key)?;
        if stripe.map[index].expires_at <= now {
            if let Some((key, entry)) = stripe.map.swap_remove_index(index) {
                self.release(entry_size(&key, &entry.value));
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        Some(&stripe.map[index])
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

    #[test]
    fn stripes_are_a_power_of_two_of_at_least_four_per_thread() {
        assert_eq!(Store::new(1, 0).stripes(), 16);
        assert_eq!(Store::new(8, 0).stripes(), 32);
        assert_eq!(Store::new(5, 0).stripes(), 32);
    }

    #[test]
    fn set_get_remove_account_memory() {
        let store = Store::new(1, 0);
        assert!(
            store
                .set(b"k", b"value", Condition::Always, Ttl::Persist)
                .unwrap()
        );
        assert_eq!(store.get(b"k").as_deref(), Some(&b"value"[..]));
        assert_eq!(store.used_memory(), 1 + 5 + ENTRY_OVERHEAD);
        store
            .set(b"k", b"v", Condition::Always, Ttl::Persist)
            .unwrap();
        assert_eq!(store.used_memory(), 1 + 1 + ENTRY_OVERHEAD);
        assert!(store.remove(b"k"));
        assert!(!store.remove(b"k"));
        assert_eq!(store.used_memory(), 0);
    }

    #[test]
    fn nx_and_xx_conditions() {
        let store = Store::new(1, 0);
        assert!(
            !store
                .set(b"k", b"1", Condition::Present, Ttl::Persist)
                .unwrap()
        );
        assert!(
            store
                .set(b"k", b"1", Condition::Absent, Ttl::Persist)
                .unwrap()
        );
        assert!(
            !store
                .set(b"k", b"2", Condition::Absent, Ttl::Persist)
                .unwrap()
        );
        assert!(
            store
                .set(b"k", b"3", Condition::Present, Ttl::Persist)
                .unwrap()
        );
        assert_eq!(store.get(b"k").as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn write_past_max_memory_is_refused_and_nothing_is_lost() {
        let size = 1 + 10 + ENTRY_OVERHEAD;
        let store = Store::new(1, 2 * size);
        store
            .set(b"a", &[0; 10], Condition::Always, Ttl::Persist)
            .unwrap();
        store
            .set(b"b", &[0; 10], Condition::Always, Ttl::Persist)
            .unwrap();
        assert_eq!(
            store.set(b"c", &[0; 10], Condition::Always, Ttl::Persist),
            Err(Oom)
        );
        // Shrinking or replacing within the limit is fine.
        store
            .set(b"a", &[0; 5], Condition::Always, Ttl::Persist)
            .unwrap();
        assert_eq!(store.get(b"b").map(|v| v.len()), Some(10));
        let pairs = [(&b"x"[..], &b"1"[..]), (b"y", b"2")];
        assert_eq!(store.set_many(pairs.iter().copied()), Err(Oom));
        assert!(!store.exists(b"x"));
        assert_eq!(store.incr_by(b"n", 1), Err(IncrError::Oom));
    }

    #[test]
    fn set_many_counts_replaced_entries_once() {
        let store = Store::new(1, 0);
        store
            .set(b"a", b"old", Condition::Always, Ttl::Persist)
            .unwrap();
        let pairs = [(&b"a"[..], &b"1"[..]), (b"b", b"2")];
        store.set_many(pairs.iter().copied()).unwrap();
        assert_eq!(store.used_memory(), 2 * (2 + ENTRY_OVERHEAD));
    }

    #[test]
    fn incr_parses_and_overflows() {
        let store = Store::new(1, 0);
        assert_eq!(store.incr_by(b"n", 5), Ok(5));
        assert_eq!(store.incr_by(b"n", -7), Ok(-2));
        store
            .set(b"s", b"abc", Condition::Always, Ttl::Persist)
            .unwrap();
        assert_eq!(store.incr_by(b"s", 1), Err(IncrError::NotInteger));
        store
            .set(
                b"m",
                b"9223372036854775807",
                Condition::Always,
                Ttl::Persist,
            )
            .unwrap();
        assert_eq!(store.incr_by(b"m", 1), Err(IncrError::Overflow));
    }

    #[test]
    fn expired_keys_vanish_lazily_and_by_sweep() {
        let store = Store::new(1, 0);
        store
            .set(b"a", b"1", Condition::Always, Ttl::In(1))
            .unwrap();
        store
            .set(b"b", b"1", Condition::Always, Ttl::In(1))
            .unwrap();
        store
            .set(b"c", b"1", Condition::Always, Ttl::Persist)
            .unwrap();
        assert_eq!(store.ttl_ms(b"c"), Some(None));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(store.get(b"a"), None);
        assert_eq!(store.len(), 2);
        let swept: usize = (0..store.stripes()).map(|i| store.sweep(i, 100)).sum();
        assert_eq!(swept, 1);
        assert_eq!(store.len(), 1);
        assert_eq!(store.expired_keys(), 2);
        assert_eq!(store.used_memory(), 2 + ENTRY_OVERHEAD);
    }

    #[test]
    fn expire_and_ttl() {
        let store = Store::new(1, 0);
        assert!(!store.expire_in(b"k", 1000));
        store
            .set(b"k", b"v", Condition::Always, Ttl::Persist)
            .unwrap();
        assert!(store.expire_in(b"k", 10_000));
        let ttl = store.ttl_ms(b"k").unwrap().unwrap();
        assert!((9_000..=10_000).contains(&ttl), "{ttl}");
        assert!(store.expire_in(b"k", 0));
        assert_eq!(store.ttl_ms(b"k"), None);
        assert_eq!(store.used_memory(), 0);
    }

    #[test]
    fn sweep_budget_is_bounded() {
        let store = Store::new(1, 0);
        for i in 0..1000 {
            let key = format!("k{i}");
            store
                .set(key.as_bytes(), b"v", Condition::Always, Ttl::In(1))
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(store.sweep(0, 10) <= 10);
    }

    #[test]
    fn clear_frees_everything() {
        let store = Store::new(2, 0);
        for i in 0..100 {
            let key = format!("k{i}");
            store
                .set(key.as_bytes(), b"v", Condition::Always, Ttl::Persist)
                .unwrap();
        }
        store.clear();
        assert!(store.is_empty());
        assert_eq!(store.used_memory(), 0);
    }
}
