//! The per-address limits, one table for the whole process so that they
//! hold exactly across shards: `--max-conns-per-ip` open connections and
//! `--conn-rate-per-ip` new ones a second per client address (IPv4 by its
//! first `--ipv4-prefix` bits, IPv6 by its first `--ipv6-prefix`).
//!
//! The table is behind one mutex, taken once when a connection is let in
//! and once when it is released, never per request. It holds an address
//! while the address has a connection open, or has spent tokens its bucket
//! has not earned back; an address with neither is forgotten (it would be
//! judged the same as a stranger). At most `--ip-table-max` addresses: at
//! the bound, addresses without an open connection are forgotten first
//! (oldest first: their rate is forgiven); when every address held has a
//! connection open, a new address is refused (`ip_table_full`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::bucket::{Bucket, Rate};
use crate::config::Config;
use crate::engine::metrics::RejectReason;
use crate::engine::timer::Millis;

/// One client as the limits count it: an address's leading bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// The first `--ipv4-prefix` bits of an IPv4 address (the rest zero).
    V4(u32),
    /// The first `--ipv6-prefix` bits of an IPv6 address.
    V6(u128),
}

/// What the per-address limits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerIp {
    /// Open connections per address; 0 = no limit.
    pub max_conns: u32,
    /// New connections per second per address, if limited.
    pub rate: Option<Rate>,
    /// Leading bits of an IPv4 address that name a client.
    pub v4_prefix: u32,
    /// Leading bits of an IPv6 address that name a client.
    pub v6_prefix: u32,
}

impl PerIp {
    /// The limits `config` asks for, or `None` when there are none.
    pub fn from_config(config: &Config) -> Option<PerIp> {
        let limits = PerIp {
            max_conns: config.max_conns_per_ip,
            rate: Rate::new(config.conn_rate_per_ip, config.conn_burst_per_ip),
            v4_prefix: config.ipv4_prefix,
            v6_prefix: config.ipv6_prefix,
        };
        (limits.max_conns > 0 || limits.rate.is_some()).then_some(limits)
    }

    /// The client `ip` belongs to (an IPv4 address written as IPv6,
    /// `::ffff:a.b.c.d`, is the IPv4 address).
    pub fn key(&self, ip: IpAddr) -> Key {
        match ip.to_canonical() {
            IpAddr::V4(ip) => Key::V4(u32::from(ip) & mask32(self.v4_prefix)),
            IpAddr::V6(ip) => Key::V6(u128::from(ip) & mask128(self.v6_prefix)),
        }
    }
}

fn mask32(bits: u32) -> u32 {
    u32::MAX.checked_shl(32 - bits.min(32)).unwrap_or(0)
}

fn mask128(bits: u32) -> u128 {
    u128::MAX.checked_shl(128 - bits.min(128)).unwrap_or(0)
}

/// One address the table holds.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Its connections open now.
    open: u32,
    /// Its connection-rate tokens (full when unlimited).
    bucket: Bucket,
    /// In the queue of addresses that had no connection open.
    idle_queued: bool,
}

#[derive(Debug)]
struct Inner {
    /// The limits in force (a reload changes them in place; the prefixes
    /// stay).
    limits: PerIp,
    entries: HashMap<Key, Entry>,
    /// Addresses whose last connection closed while their bucket was not
    /// full, oldest first; an address is here at most once (its entry's
    /// `idle_queued`), and leaves the table only through here, so this
    /// never holds more than the table. Some may have opened a connection
    /// again since: they are dropped from here when met.
    idle: VecDeque<Key>,
}

/// The process's table of client addresses.
#[derive(Debug)]
pub struct AddrTable {
    /// The prefixes that make an address a key (fixed).
    keys: PerIp,
    max: usize,
    epoch: Instant,
    inner: Mutex<Inner>,
    /// Addresses held, for `holdfast_ip_table_entries`.
    gauge: Arc<AtomicU64>,
}

impl AddrTable {
    /// A table for `limits` holding at most `max` addresses, publishing its
    /// size into `gauge`.
    pub fn new(limits: PerIp, max: usize, gauge: Arc<AtomicU64>) -> AddrTable {
        let inner = Inner {
            limits,
            entries: HashMap::new(),
            idle: VecDeque::new(),
        };
        AddrTable {
            keys: limits,
            max: max.max(1),
            epoch: Instant::now(),
            inner: Mutex::new(inner),
            gauge,
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> PerIp {
        self.lock().limits
    }

    /// A reload's limits (`--max-conns-per-ip`, `--conn-rate-per-ip`,
    /// `--conn-burst-per-ip`), from the next connection on; the addresses'
    /// counts and buckets stay (a bucket holds at most the new burst).
    pub fn set_limits(&self, limits: PerIp) {
        self.lock().limits = limits;
    }

    /// Counts a connection from `ip` that is already open (a reload made
    /// this table while it was), without judging it; `None` when the
    /// table is full of addresses with connections open.
    pub fn seat(&self, ip: IpAddr) -> Option<Key> {
        let key = self.keys.key(ip);
        let now = self.now();
        let mut inner = self.lock();
        if !inner.entries.contains_key(&key) && !self.make_room(&mut inner) {
            return None;
        }
        let bucket = Bucket::full(inner.limits.rate.unwrap_or(UNLIMITED), now);
        let fresh = Entry {
            open: 0,
            bucket,
            idle_queued: false,
        };
        inner.entries.entry(key).or_insert(fresh).open += 1;
        self.gauge
            .store(inner.entries.len() as u64, Ordering::Relaxed);
        Some(key)
    }

    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned table is consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets a connection from `ip` in (counting it open), or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Key, RejectReason> {
        self.admit_at(ip, self.now())
    }

    /// [`AddrTable::admit`] at `now` (milliseconds of the table's clock).
    fn admit_at(&self, ip: IpAddr, now: Millis) -> Result<Key, RejectReason> {
        let key = self.keys.key(ip);
        let mut inner = self.lock();
        let limits = inner.limits;
        self.forget_refilled(&mut inner, now);
        if !inner.entries.contains_key(&key) && !self.make_room(&mut inner) {
            return Err(RejectReason::IpTableFull);
        }
        let fresh = Entry {
            open: 0,
            bucket: limits
                .rate
                .map_or(Bucket::full(UNLIMITED, now), |rate| Bucket::full(rate, now)),
            idle_queued: false,
        };
        let entry = inner.entries.entry(key).or_insert(fresh);
        let outcome = if limits.max_conns > 0 && entry.open >= limits.max_conns {
            Err(RejectReason::PerIp)
        } else if let Some(rate) = limits.rate
            && !entry.bucket.take(rate, now)
        {
            Err(RejectReason::ConnRate)
        } else {
            entry.open += 1;
            Ok(key)
        };
        self.gauge
            .store(inner.entries.len() as u64, Ordering::Relaxed);
        outcome
    }

    /// A connection let in as `key` closed.
    pub fn release(&self, key: Key) {
        self.release_at(key, self.now());
    }

    /// [`AddrTable::release`] at `now`.
    fn release_at(&self, key: Key, now: Millis) {
        let mut inner = self.lock();
        let rate = inner.limits.rate;
        let Some(entry) = inner.entries.get_mut(&key) else {
            debug_assert!(false, "released an address the table does not hold");
            return;
        };
        entry.open -= 1;
        if entry.open == 0 && !entry.idle_queued {
            let spent = rate.is_some_and(|rate| !entry.bucket.is_full(rate, now));
            if spent {
                // Kept until its bucket is full again (or room is needed).
                entry.idle_queued = true;
                inner.idle.push_back(key);
            } else {
                // It remembers nothing a stranger's entry would not.
                inner.entries.remove(&key);
            }
        }
        self.forget_refilled(&mut inner, now);
        self.gauge
            .store(inner.entries.len() as u64, Ordering::Relaxed);
    }

    /// Forgets up to two of the oldest idle addresses whose bucket is full
    /// again, so that the table shrinks as it is used.
    fn forget_refilled(&self, inner: &mut Inner, now: Millis) {
        let Some(rate) = inner.limits.rate else {
            return;
        };
        for _ in 0..2 {
            let Some(&key) = inner.idle.front() else {
                return;
            };
            let Some(entry) = inner.entries.get_mut(&key) else {
                inner.idle.pop_front();
                continue;
            };
            if entry.open > 0 {
                entry.idle_queued = false;
                inner.idle.pop_front();
            } else if entry.bucket.is_full(rate, now) {
                inner.entries.remove(&key);
                inner.idle.pop_front();
            } else {
                return;
            }
        }
    }

    /// Makes room for one more address if the table is full, by forgetting
    /// the oldest address that has no connection open; false if every one
    /// has.
    fn make_room(&self, inner: &mut Inner) -> bool {
        while inner.entries.len() >= self.max {
            let Some(key) = inner.idle.pop_front() else {
                return false;
            };
            if let Some(entry) = inner.entries.get_mut(&key) {
                entry.idle_queued = false;
                if entry.open == 0 {
                    inner.entries.remove(&key);
                }
            }
        }
        true
    }
}

/// The bucket of an address when only open connections are limited (never
/// looked at).
const UNLIMITED: Rate = Rate {
    per_second: 1,
    burst: 1,
};

#[cfg(test)]
mod tests;
