//! `--max-buffer-memory`: the bytes all rings may hold together.
//!
//! A connection holds rings only while it is busy, and then at most two (its
//! input and its output ring), so the budget is counted in units of two
//! rings: a client connection takes a unit before its first ring and gives
//! it back once it holds none and awaits no reply. Without a unit it waits,
//! not read from (`shard/memory.rs`). It never waits while it holds a ring,
//! so a unit, once taken, always comes back: no connection waits for one
//! held by another that waits.
//!
//! The process's budget is one atomic count of units; each shard takes
//! units from it in chunks into its own [`Allowance`], so that a connection
//! busy for one request and idle again costs a local count, not a shared
//! atomic. A shard keeps at most two chunks it does not use, and gives all
//! it does not use back while another shard is starving (then wakes it).
//! A shard's ring pool keeps idle rings only within its allowance, so the
//! rings a shard has allocated (handed out or idle) stay within the units
//! it holds: the budget bounds the rings' memory, not only their use.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Config, format_size};
use crate::engine::buffer::pool::SURPLUS_KEEP_MS;
use crate::engine::driver::Waker;
use crate::engine::service::Dialect;

/// The process's budget.
#[derive(Debug)]
pub struct Budget {
    /// Units in all.
    units: usize,
    /// Units the shards have taken (may pass `units` by what was forced).
    taken: AtomicUsize,
    /// Bytes in a unit (two rings).
    unit_bytes: usize,
    /// Units a shard takes at once.
    chunk: usize,
    /// Shards that found the budget empty while connections waited.
    starving: AtomicUsize,
    /// Which shards those are.
    starved: Vec<AtomicBool>,
    /// Each shard's waker (set once the shards' eventfds exist).
    wakers: Mutex<Vec<Waker>>,
    /// `taken` in bytes, for `holdfast_buffer_memory_bytes`.
    gauge: Arc<AtomicU64>,
}

impl Budget {
    /// A budget of `bytes` for rings of `buffer` bytes, shared by `shards`
    /// shards, publishing what is taken into `gauge`.
    pub fn new(bytes: usize, buffer: usize, shards: usize, gauge: Arc<AtomicU64>) -> Budget {
        let unit_bytes = 2 * buffer;
        let units = (bytes / unit_bytes).max(1);
        // Small enough that the shards' spare chunks hold a quarter of the
        // budget at most.
        let chunk = (units / (8 * shards.max(1))).clamp(1, 16);
        Budget {
            units,
            taken: AtomicUsize::new(0),
            unit_bytes,
            chunk,
            starving: AtomicUsize::new(0),
            starved: (0..shards.max(1)).map(|_| AtomicBool::new(false)).collect(),
            wakers: Mutex::new(Vec::new()),
            gauge,
        }
    }

    /// The shards' wakers, for waking a starving shard.
    pub fn set_wakers(&self, wakers: Vec<Waker>) {
        *self.wakers.lock().unwrap_or_else(|e| e.into_inner()) = wakers;
    }

    /// Takes up to `wanted` units; returns how many it got.
    fn take(&self, wanted: usize) -> usize {
        let mut taken = self.taken.load(Ordering::Relaxed);
        loop {
            let got = wanted.min(self.units.saturating_sub(taken));
            if got == 0 {
                return 0;
            }
            match self.taken.compare_exchange_weak(
                taken,
                taken + got,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.publish();
                    return got;
                }
                Err(now) => taken = now,
            }
        }
    }

    /// Takes `units` whatever is left (an overdraw past the budget).
    fn force(&self, units: usize) {
        self.taken.fetch_add(units, Ordering::SeqCst);
        self.publish();
    }

    /// Gives `units` back, and wakes the shards starving for them.
    fn give(&self, units: usize) {
        self.taken.fetch_sub(units, Ordering::SeqCst);
        self.publish();
        if self.starving.load(Ordering::SeqCst) > 0 {
            self.wake_starved(None);
        }
    }

    /// Wakes the starving shards (but `except`), or every other shard when
    /// `except` starves (so that they give back what they do not use).
    fn wake_starved(&self, except: Option<usize>) {
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for (index, waker) in wakers.iter().enumerate() {
            let wanted = match except {
                Some(shard) => index != shard,
                None => self.starved[index].load(Ordering::SeqCst),
            };
            if wanted && let Err(error) = waker.wake() {
                log::warn!("waking shard {index} for buffer memory: {error}");
            }
        }
    }

    fn publish(&self) {
        self.gauge
            .store(self.taken_bytes() as u64, Ordering::Relaxed);
    }

    /// Bytes the shards have taken (for busy connections, or spare in a
    /// shard's allowance).
    pub fn taken_bytes(&self) -> usize {
        self.taken.load(Ordering::Relaxed) * self.unit_bytes
    }

    /// The budget in bytes (whole units).
    pub fn bytes(&self) -> usize {
        self.units * self.unit_bytes
    }

    /// Whether some shard starves (a relaxed look, once per loop turn).
    pub fn anyone_starving(&self) -> bool {
        self.starving.load(Ordering::Relaxed) > 0
    }

    /// Marks `shard` starving or not; true if that changed.
    fn mark(&self, shard: usize, starving: bool) -> bool {
        if self.starved[shard].load(Ordering::Relaxed) == starving {
            return false;
        }
        let was = self.starved[shard].swap(starving, Ordering::SeqCst);
        match (was, starving) {
            (false, true) => self.starving.fetch_add(1, Ordering::SeqCst),
            (true, false) => self.starving.fetch_sub(1, Ordering::SeqCst),
            _ => return false,
        };
        true
    }
}

/// One shard's share of the budget, in units.
#[derive(Debug)]
pub struct Allowance {
    budget: Arc<Budget>,
    shard: usize,
    /// Units taken from the budget.
    held: usize,
    /// Units its connections hold.
    used: usize,
    /// Units of `held` taken past the budget, given back first.
    forced: usize,
    /// Spare units kept besides the two chunks (for `--pool-prealloc`'s
    /// rings), given back only to a starving shard.
    floor: usize,
    /// The most units used since `window_at` (milliseconds, the shard's
    /// clock): units past it, the two chunks and the floor go back at the
    /// end of the window ([`Allowance::trim`]).
    peak: usize,
    window_at: u64,
}

impl Allowance {
    /// Shard `shard`'s share of `budget`, holding the units for `rings`
    /// idle rings if the budget has them.
    pub fn new(budget: Arc<Budget>, shard: usize, rings: usize) -> Allowance {
        let floor = budget.take(rings.div_ceil(2));
        Allowance {
            budget,
            shard,
            held: floor,
            used: 0,
            forced: 0,
            floor,
            peak: 0,
            window_at: 0,
        }
    }

    /// A unit for a connection about to take rings; false when the budget
    /// has none left (the shard is then starving until [`Allowance::fed`]).
    pub fn reserve(&mut self) -> bool {
        if self.used == self.held {
            self.held += self.budget.take(self.budget.chunk);
            if self.used == self.held {
                return self.starve();
            }
        }
        self.used += 1;
        self.peak = self.peak.max(self.used);
        true
    }

    /// The budget is empty: mark this shard starving, then look again (a
    /// unit given back in between found no mark to wake it by).
    fn starve(&mut self) -> bool {
        if self.budget.mark(self.shard, true) {
            self.budget.wake_starved(Some(self.shard));
        }
        self.held += self.budget.take(1);
        if self.used == self.held {
            return false;
        }
        self.used += 1;
        self.peak = self.peak.max(self.used);
        true
    }

    /// No connection of this shard waits any more.
    pub fn fed(&mut self) {
        self.budget.mark(self.shard, false);
    }

    /// A unit whatever is left, for a connection that already holds rings
    /// it could not wait for (bytes a receive brought in, a push, an
    /// upstream link): from the budget if it has one, else past it. True
    /// if past it (an overdraw, given back first).
    pub fn force(&mut self) -> bool {
        let mut past = false;
        if self.used == self.held {
            self.held += self.budget.take(self.budget.chunk);
        }
        if self.used == self.held {
            self.budget.force(1);
            self.held += 1;
            self.forced += 1;
            past = true;
        }
        self.used += 1;
        self.peak = self.peak.max(self.used);
        past
    }

    /// A connection gave its unit back (it holds no ring any more). An
    /// overdraw goes back at once; other spare units stay while the pool
    /// keeps the rings they cover ([`Allowance::trim`]).
    pub fn release(&mut self) {
        debug_assert!(self.used > 0, "released a unit never reserved");
        self.used -= 1;
        if self.forced > 0 {
            self.forced -= 1;
            self.give_back(1);
        }
    }

    /// Once per loop turn (`now` in milliseconds): at the end of each
    /// [`SURPLUS_KEEP_MS`] window, gives back the units past the most the
    /// connections used in it, two chunks and the floor. So a burst that
    /// comes back within the window (a publish to a thousand subscribers)
    /// finds its units, and the pool the rings they cover, still there
    /// instead of allocating and zeroing the rings again; a shard that
    /// went quiet gives them back within two windows (and at once to a
    /// starving shard, [`Allowance::share`]).
    pub fn trim(&mut self, now: u64) {
        self.peak = self.peak.max(self.used);
        if now < self.window_at + SURPLUS_KEEP_MS {
            return;
        }
        let keep = self.peak + 2 * self.budget.chunk + self.floor;
        if self.held > keep {
            self.give_back(self.held - keep);
        }
        self.peak = self.used;
        self.window_at = now;
    }

    /// The end of the current window, while it holds units past the
    /// connections', two chunks and the floor (see [`Allowance::trim`]).
    pub fn next_trim(&self) -> Option<u64> {
        let keep = self.used + 2 * self.budget.chunk + self.floor;
        (self.held > keep).then_some(self.window_at + SURPLUS_KEEP_MS)
    }

    /// Gives back every unit no connection uses, if another shard starves
    /// (once per loop turn).
    pub fn share(&mut self) {
        if self.held > self.used && self.budget.anyone_starving() {
            self.give_back(self.held - self.used);
        }
    }

    fn give_back(&mut self, units: usize) {
        self.held -= units;
        self.forced = self.forced.min(self.held - self.used);
        self.budget.give(units);
    }

    /// Whether a unit could be had now (this shard's, or the budget's).
    pub fn has_room(&self) -> bool {
        self.used < self.held || self.budget.taken.load(Ordering::Relaxed) < self.budget.units
    }

    /// The percentage of the budget the shards have taken.
    pub fn percent_taken(&self) -> u64 {
        let taken = self.budget.taken.load(Ordering::Relaxed) as u64;
        taken * 100 / self.budget.units as u64
    }

    /// Rings this shard's allowance covers (two per unit held).
    pub fn rings(&self) -> usize {
        2 * self.held
    }
}

impl Drop for Allowance {
    fn drop(&mut self) {
        self.fed();
        if self.held > 0 {
            self.budget.give(self.held);
        }
    }
}

/// The memory the process may use, and what that figure is: the cgroup's
/// `memory.max` (v2) if it sets one, else the machine's memory.
pub fn memory_limit() -> Option<(u64, &'static str)> {
    cgroup_limit()
        .map(|bytes| (bytes, "the cgroup's memory.max"))
        .or_else(|| machine_memory().map(|bytes| (bytes, "the machine's memory")))
}

/// Where the cgroup file systems are mounted; `HOLDFAST_CGROUP_ROOT`
/// stands for it in tests (a directory with a `memory.max` in it).
fn cgroup_root() -> String {
    std::env::var("HOLDFAST_CGROUP_ROOT").unwrap_or_else(|_| "/sys/fs/cgroup".to_string())
}

/// The memory limit of this process's cgroup: v2's `memory.max` (under
/// the path of the "0::" line of /proc/self/cgroup), else v1's
/// `memory.limit_in_bytes` (under the memory controller's path); `None`
/// for "max", v1's huge "no limit", or without either.
pub fn cgroup_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = cgroup_root();
    let read = |file: String| {
        let text = std::fs::read_to_string(file).ok()?;
        text.trim()
            .parse::<u64>()
            .ok()
            .filter(|&bytes| bytes < 1 << 60)
    };
    let v2 = cgroups.lines().find_map(|line| line.strip_prefix("0::"));
    let v1 = cgroups.lines().find_map(|line| {
        let (_, rest) = line.split_once(':')?;
        let (controllers, path) = rest.split_once(':')?;
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let v2 = v2.and_then(|path| read(format!("{root}{}/memory.max", path.trim_end_matches('/'))));
    v2.or_else(|| {
        let path = v1?.trim_end_matches('/');
        read(format!("{root}/memory{path}/memory.limit_in_bytes"))
    })
}

/// MemTotal from /proc/meminfo.
fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// The budget in force and what the settings could use at worst, stated
/// at start-up.
#[derive(Debug)]
pub struct Plan {
    /// `--max-buffer-memory`, or what it was derived from.
    pub budget: usize,
    /// Where `budget` came from.
    pub source: String,
    /// Every client connection busy at once: `--max-conns` × two rings.
    pub clients: usize,
    /// Memory outside the budget: upstream links' rings (they never wait)
    /// and io_uring's provided buffers.
    pub beyond: usize,
    /// The cgroup's memory limit, if any.
    pub cgroup: Option<u64>,
}

impl Plan {
    /// The plan of `config` (`max_conns` and `threads` resolved), with
    /// io_uring's buffers if `uring`.
    pub fn new(config: &Config, uring: bool) -> Plan {
        let cgroup = cgroup_limit();
        let (budget, source) = match config.max_buffer_memory {
            0 => match memory_limit() {
                Some((bytes, what)) => (
                    (bytes / 2) as usize,
                    format!("half of {what}, {}", format_size(bytes as usize)),
                ),
                None => (usize::MAX, "no memory limit found".to_string()),
            },
            bytes => (bytes, "--max-buffer-memory".to_string()),
        };
        let ring = config.buffer;
        let clients = config.max_conns.saturating_mul(2 * ring);
        let lanes = config.upstream_conns * Dialect::ALL.len();
        let upstream_links = config.threads * config.upstreams.len() * lanes;
        let mut beyond = upstream_links * 2 * ring;
        if uring {
            beyond += config.threads * config.uring_buffers * config.uring_buffer_size;
        }
        Plan {
            budget: budget.max(2 * ring),
            source,
            clients,
            beyond,
            cgroup,
        }
    }

    /// The most the rings may hold: the budget, or less if every client
    /// busy at once needs less; plus what is beyond the budget.
    pub fn worst(&self) -> usize {
        self.budget.min(self.clients).saturating_add(self.beyond)
    }

    /// The start-up line.
    pub fn line(&self) -> String {
        format!(
            "buffer memory budget {} ({}); worst case of the settings {}: rings {} (the budget, \
             or --max-conns × two rings if less: {}) and {} beyond the budget (upstream links, \
             io_uring buffers); cgroup memory limit {}",
            format_size(self.budget),
            self.source,
            format_size(self.worst()),
            format_size(self.budget.min(self.clients)),
            format_size(self.clients),
            format_size(self.beyond),
            self.cgroup
                .map_or("none".to_string(), |bytes| format_size(bytes as usize)),
        )
    }

    /// What is wrong if the worst case exceeds the cgroup's limit.
    pub fn excess(&self) -> Option<String> {
        let limit = self.cgroup? as usize;
        (self.worst() > limit).then(|| {
            format!(
                "--max-buffer-memory: the worst case of the settings, {}, exceeds the cgroup's \
                 memory.max {}; lower --max-buffer-memory or --max-conns",
                format_size(self.worst()),
                format_size(limit)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(units: usize, shards: usize) -> Arc<Budget> {
        Arc::new(Budget::new(units * 2048, 1024, shards, Arc::default()))
    }

    #[test]
    fn units_are_shared_exactly_with_chunks_per_shard() {
        // 10 units of two 1 KiB rings, two shards: chunks of 1.
        let budget = budget(10, 2);
        let (mut a, mut b) = (
            Allowance::new(budget.clone(), 0, 0),
            Allowance::new(budget.clone(), 1, 0),
        );
        let got_a = (0..8).filter(|_| a.reserve()).count();
        let got_b = (0..8).filter(|_| b.reserve()).count();
        assert_eq!((got_a, got_b), (8, 2));
        assert!(!a.has_room() && !b.reserve());
        assert_eq!(budget.taken_bytes(), 20 * 1024);
        // What a gives back stays while its pool keeps the rings (16 idle
        // ones here), then what is beyond two spare chunks returns to the
        // budget at a's turn.
        for _ in 0..8 {
            a.release();
        }
        a.trim(SURPLUS_KEEP_MS - 1);
        assert_eq!(a.rings(), 16, "kept for a burst within the window");
        assert!(!b.has_room());
        a.trim(SURPLUS_KEEP_MS);
        assert_eq!(a.rings(), 16, "the window's peak was 8 units");
        a.trim(2 * SURPLUS_KEEP_MS);
        assert!(b.has_room());
        let more = (0..8).filter(|_| b.reserve()).count();
        assert_eq!(more, 6, "a keeps two spare units");
        // b starves; a, at its next turn, gives its spare units back.
        assert!(budget.anyone_starving());
        a.share();
        assert_eq!((0..8).filter(|_| b.reserve()).count(), 2);
        b.fed();
        assert!(!budget.anyone_starving());
    }

    #[test]
    fn the_worst_case_is_the_budget_or_every_client_busy_plus_what_never_waits() {
        let config = Config {
            max_conns: 1000,
            threads: 2,
            buffer: 64 << 10,
            max_buffer_memory: 32 << 20,
            upstreams: vec!["127.0.0.1:1".into()],
            upstream_conns: 4,
            uring_buffers: 256,
            uring_buffer_size: 4096,
            ..Config::default()
        };
        let plan = Plan::new(&config, false);
        assert_eq!((plan.budget, plan.clients), (32 << 20, 1000 * (128 << 10)));
        // Two shards × one upstream × four links of two dialects × two rings.
        assert_eq!(plan.beyond, 32 * (64 << 10));
        assert_eq!(plan.worst(), (32 << 20) + (2 << 20));
        assert_eq!(Plan::new(&config, true).beyond, (2 << 20) + 2 * 256 * 4096);
        let few = Config {
            max_conns: 10,
            ..config
        };
        assert_eq!(Plan::new(&few, false).worst(), 10 * (128 << 10) + (2 << 20));
        let plan = Plan {
            cgroup: Some(16 << 20),
            ..Plan::new(&few, false)
        };
        assert_eq!(plan.excess(), None);
        let plan = Plan {
            cgroup: Some(3 << 20),
            ..plan
        };
        assert!(plan.excess().is_some_and(|why| why.contains("3MiB")));
    }

    /// Whether `waker` was woken since last asked (its eventfd's count,
    /// read without blocking).
    fn woken(waker: &Waker) -> bool {
        let fd = waker.fd();
        let flags = nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
        let mut count = [0u8; 8];
        nix::unistd::read(fd, &mut count).is_ok()
    }

    #[test]
    fn a_starving_shard_wakes_the_others_and_is_woken_by_what_they_give_back() {
        let budget = budget(2, 2);
        let wakers: Vec<Waker> = (0..2)
            .map(|_| Arc::new(crate::engine::driver::EventWaker::new().unwrap()))
            .collect();
        budget.set_wakers(wakers.clone());
        let (mut a, mut b) = (
            Allowance::new(budget.clone(), 0, 0),
            Allowance::new(budget.clone(), 1, 0),
        );
        assert!(a.reserve() && a.reserve());
        assert!(!woken(&wakers[0]) && !woken(&wakers[1]));
        // b finds the budget empty: a is woken to give back what it can.
        assert!(!b.reserve());
        assert!(woken(&wakers[0]) && !woken(&wakers[1]));
        // a's connection is done; at a's next turn its spare unit goes
        // back, and b is woken for it.
        a.release();
        a.share();
        assert!(woken(&wakers[1]));
        assert!(b.has_room() && b.reserve());
        b.fed();
        a.release();
        a.share();
        assert!(!woken(&wakers[1]), "no one starves: no wake");
    }

    #[test]
    fn a_busy_idle_cycle_costs_no_shared_count() {
        let budget = Arc::new(Budget::new(64 << 20, 64 << 10, 1, Arc::default()));
        let mut allowance = Allowance::new(budget.clone(), 0, 0);
        assert!(allowance.reserve());
        let taken = budget.taken.load(Ordering::Relaxed);
        for _ in 0..1000 {
            allowance.release();
            assert!(allowance.reserve());
        }
        assert_eq!(budget.taken.load(Ordering::Relaxed), taken);
        drop(allowance);
        assert_eq!(
            budget.taken_bytes(),
            0,
            "a dropped allowance gives all back"
        );
    }

    #[test]
    fn the_preallocated_rings_units_stay_until_another_shard_starves() {
        let budget = budget(10, 2);
        let mut a = Allowance::new(budget.clone(), 0, 5);
        assert_eq!(a.rings(), 6);
        assert!(a.reserve());
        a.release();
        assert_eq!(a.rings(), 6, "kept past the two chunks");
        let mut b = Allowance::new(budget.clone(), 1, 0);
        assert_eq!((0..8).filter(|_| b.reserve()).count(), 7);
        a.share();
        assert_eq!(a.rings(), 0);
        assert!(b.reserve());
    }

    #[test]
    fn a_forced_unit_overdraws_and_comes_back() {
        let budget = budget(1, 1);
        let mut allowance = Allowance::new(budget.clone(), 0, 0);
        assert!(!allowance.force(), "a unit the budget has is no overdraw");
        assert!(allowance.force());
        assert_eq!(budget.taken_bytes(), 2 * 2048);
        allowance.release();
        allowance.release();
        assert!(allowance.reserve() && !allowance.reserve());
        assert!(memory_limit().is_some_and(|(bytes, _)| bytes > 0));
    }
}
