//! Reloading the settings while the server runs (SIGHUP, `POST /reload`,
//! `holdfast reload`): the file is read again through the same layers as
//! at start (defaults, the file, the flags given at start, which keep
//! winning), validated, compared with the settings in effect, and either
//! applied whole or not at all.
//!
//! The path of a reload: the thread that asked for it (the signal thread,
//! or the admin thread for `POST /reload`) runs [`Reloader::reload`], one
//! at a time. It publishes the new settings as an immutable snapshot
//! ([`Published`]: an `Arc<Config>` behind a mutex and a generation
//! counter) and wakes every shard. Each shard compares the generation once
//! per loop turn (one relaxed load) and, when it moved, takes the snapshot
//! and applies its live settings at the top of the turn
//! (`shard/settings.rs`). No lock is on the path of a request.

mod sha256;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{self, Config, ConfigError, Mode};
use crate::engine::driver::Waker;
use crate::engine::front::{AddrTable, PerIp};
use crate::engine::metrics::{Registry, ReloadResult};

/// Where a reload reads the settings from.
pub struct Source {
    /// Which command's settings.
    pub mode: Mode,
    /// The `--config` file, if one was given (hashed for
    /// `holdfast_config_info`).
    pub file: Option<PathBuf>,
    /// Loads and validates the settings as at start: defaults, the file,
    /// then the flags given at start.
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
}

/// The settings of one generation, as the shards take them.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Every setting (the fixed ones as at start).
    pub config: Config,
    /// Every upstream the process has known, by slot (a removed one keeps
    /// its slot: its connections drain, its metrics stay): its name and
    /// address. At most `--upstream-slots`.
    pub slots: Vec<(String, SocketAddr)>,
    /// The slot of each of `config.upstreams`, in order: the upstreams in
    /// use.
    pub active: Vec<usize>,
    /// The process's per-address table, once any per-address limit was
    /// set (at start or by a reload); a reload sets its limits in place.
    pub per_ip: Option<Arc<AddrTable>>,
}

impl Snapshot {
    /// The snapshot of the settings the server starts with: slot `i` is
    /// upstream `i`; `per_ip` is the table the shards start with.
    pub fn new(config: Config, per_ip: Option<Arc<AddrTable>>) -> Snapshot {
        let names = config.upstreams.iter().cloned();
        let slots: Vec<_> = names.zip(config.upstream_addrs.iter().copied()).collect();
        let active = (0..slots.len()).collect();
        Snapshot {
            config,
            slots,
            active,
            per_ip,
        }
    }

    /// The snapshot of `config` after this one: its upstreams keep their
    /// slots by name, a new one takes the next free slot. `Err` when no
    /// slot is left.
    fn next(&self, config: Config) -> Result<Snapshot, String> {
        let mut slots = self.slots.clone();
        let mut active = Vec::with_capacity(config.upstreams.len());
        for (name, addr) in config.upstreams.iter().zip(&config.upstream_addrs) {
            let slot = match slots.iter().position(|(known, _)| known == name) {
                Some(slot) => slot,
                None if slots.len() < self.config.upstream_slots() => {
                    slots.push((name.clone(), *addr));
                    slots.len() - 1
                }
                None => {
                    return Err(format!(
                        "upstreams: no slot left for {name}: the {} of --upstream-slots are \
                         taken (a removed upstream keeps its slot); raise it and restart",
                        slots.len()
                    ));
                }
            };
            active.push(slot);
        }
        Ok(Snapshot {
            config,
            slots,
            active,
            per_ip: self.per_ip.clone(),
        })
    }
}

/// The settings in effect, as every shard reads them.
pub struct Published {
    /// One more per applied reload; a shard compares it once per turn.
    generation: AtomicU64,
    /// The snapshot of that generation.
    current: Mutex<Arc<Snapshot>>,
}

impl Published {
    /// Generation 1: the settings the server started with (resolved) and
    /// its per-address table, if any.
    pub fn new(config: Config, per_ip: Option<Arc<AddrTable>>) -> Published {
        let snapshot = Snapshot::new(config, per_ip);
        Published {
            generation: AtomicU64::new(1),
            current: Mutex::new(Arc::new(snapshot)),
        }
    }

    /// The generation in effect.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The snapshot in effect and its generation.
    pub fn latest(&self) -> (Arc<Snapshot>, u64) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (current.clone(), self.generation.load(Ordering::Acquire))
    }

    /// Makes `config` the settings in effect; returns its generation.
    fn publish(&self, snapshot: Snapshot) -> u64 {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(snapshot);
        // Under the lock, so that a shard that sees the new generation
        // takes this snapshot or a later one.
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// What a reload came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new settings are in effect as generation `generation`;
    /// `changed` names the keys whose value changed (maybe none).
    Applied {
        /// The generation now in effect.
        generation: u64,
        /// The keys whose value changed, as `key old -> new`.
        changed: Vec<String>,
    },
    /// The file could not be read, parsed or validated; nothing changed.
    Invalid(String),
    /// The file changes settings that cannot change live (their keys);
    /// nothing changed.
    Refused(Vec<String>),
}

impl Outcome {
    /// The `result` label of `holdfast_config_reloads_total`.
    pub fn result(&self) -> ReloadResult {
        match self {
            Outcome::Applied { .. } => ReloadResult::Applied,
            Outcome::Invalid(_) => ReloadResult::Invalid,
            Outcome::Refused(_) => ReloadResult::Refused,
        }
    }

    /// One line saying what happened, for the log, `POST /reload` and
    /// `holdfast reload`.
    pub fn message(&self) -> String {
        match self {
            Outcome::Applied {
                generation,
                changed,
            } if changed.is_empty() => {
                format!("reload applied: generation {generation}, no setting changed")
            }
            Outcome::Applied {
                generation,
                changed,
            } => format!(
                "reload applied: generation {generation}; changed {}",
                changed.join(", ")
            ),
            Outcome::Invalid(why) => {
                format!("reload invalid: {why}; nothing applied, the settings in effect stay")
            }
            Outcome::Refused(keys) => format!(
                "reload refused: {} cannot change while running (restart or upgrade the \
                 binary for that); nothing applied, the settings in effect stay",
                keys.join(", ")
            ),
        }
    }
}

/// Runs reloads, one at a time.
pub struct Reloader {
    source: Source,
    /// The settings in effect as loaded (before the server resolved its
    /// machine-dependent zeros: `--threads 0`, `--max-conns 0`), which a
    /// new load is compared with. The lock serializes reloads.
    loaded: Mutex<Config>,
    published: Arc<Published>,
    wakers: Vec<Waker>,
    registry: Arc<Registry>,
}

impl Reloader {
    /// Reloads from `source` over `loaded` (the settings the server started
    /// with, as loaded), publishing into `published` and waking the shards
    /// through `wakers`.
    pub fn new(
        source: Source,
        loaded: Config,
        published: Arc<Published>,
        wakers: Vec<Waker>,
        registry: Arc<Registry>,
    ) -> Reloader {
        let reloader = Reloader {
            source,
            loaded: Mutex::new(loaded),
            published,
            wakers,
            registry,
        };
        if let Ok(Some(bytes)) = reloader.read_file() {
            reloader.set_sha256(&bytes);
        }
        reloader
    }

    /// Reads the settings again and applies them if valid and every
    /// changed setting is live; logs and counts what it came to.
    pub fn reload(&self) -> Outcome {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.try_reload(&mut loaded);
        let result = outcome.result();
        self.registry.config.reloads[result.index()].fetch_add(1, Ordering::Relaxed);
        match result {
            ReloadResult::Applied => log::info!("{}", outcome.message()),
            _ => log::warn!("{}", outcome.message()),
        }
        outcome
    }

    fn try_reload(&self, loaded: &mut Config) -> Outcome {
        let bytes = match self.read_file() {
            Ok(bytes) => bytes,
            Err(why) => return Outcome::Invalid(why),
        };
        let new = match (self.source.load)() {
            Ok(new) => new,
            Err(error) => return Outcome::Invalid(error.to_string()),
        };
        let diff = config::diff(self.source.mode, loaded, &new);
        if !diff.fixed.is_empty() {
            return Outcome::Refused(diff.fixed);
        }
        let (running, _) = self.published.latest();
        let mut next = new.clone();
        // Fixed, and resolved at start from the machine.
        next.threads = running.config.threads;
        next.max_conns = running.config.max_conns;
        next.upstream_slots = running.config.upstream_slots;
        let mut next = match running.next(next) {
            Ok(next) => next,
            Err(why) => return Outcome::Invalid(why),
        };
        // Nothing can fail from here: the new settings go into effect.
        self.per_ip_limits(&mut next);
        self.name_upstreams(&next);
        let generation = self.published.publish(next);
        log::set_max_level(new.log_level);
        *loaded = new;
        self.registry
            .config
            .generation
            .store(generation, Ordering::Relaxed);
        if let Some(bytes) = bytes {
            self.set_sha256(&bytes);
        }
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::error!("waking a shard for a reload: {e}");
            }
        }
        Outcome::Applied {
            generation,
            changed: diff.live,
        }
    }

    /// Adds `added` (name and address each) to the upstreams in effect, as
    /// a reload that changed only them would: each takes the next free
    /// slot, every shard makes its pools at its next turn. For a service
    /// that learns upstreams as it runs (a cluster's new nodes). `Err` when
    /// `--upstream-slots` has no slot left for them; nothing changes then.
    pub fn add_upstreams(&self, added: &[(String, SocketAddr)]) -> Result<u64, String> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let (running, generation) = self.published.latest();
        // One a reload added meanwhile is not added twice.
        let added: Vec<&(String, SocketAddr)> = (added.iter())
            .filter(|(name, _)| !running.config.upstreams.contains(name))
            .collect();
        if added.is_empty() {
            return Ok(generation);
        }
        let mut config = running.config.clone();
        for (name, addr) in &added {
            config.upstreams.push(name.clone());
            config.upstream_addrs.push(*addr);
        }
        let next = running.next(config)?;
        self.name_upstreams(&next);
        let generation = self.published.publish(next);
        // A reload compares its file with these: the added upstreams are
        // no change it makes.
        for (name, addr) in &added {
            loaded.upstreams.push(name.clone());
            loaded.upstream_addrs.push(*addr);
        }
        self.registry
            .config
            .generation
            .store(generation, Ordering::Relaxed);
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::error!("waking a shard for added upstreams: {e}");
            }
        }
        Ok(generation)
    }

    /// The per-address limits of `next`: set in place in the process's
    /// table, or a table made for them (sized as at start: `--ip-table-max`,
    /// 0 meaning `--max-conns`).
    fn per_ip_limits(&self, next: &mut Snapshot) {
        let limits = PerIp::from_config(&next.config);
        match (&next.per_ip, limits) {
            (Some(table), limits) => {
                let off = PerIp {
                    max_conns: 0,
                    rate: None,
                    ..table.limits()
                };
                table.set_limits(limits.unwrap_or(off));
            }
            (None, Some(limits)) => {
                let config = &next.config;
                let max = match config.ip_table_max {
                    0 => config.max_conns,
                    max => max,
                };
                let gauge = self.registry.ip_table_entries.clone();
                next.per_ip = Some(Arc::new(AddrTable::new(limits, max, gauge)));
            }
            (None, None) => {}
        }
    }

    /// The metrics' names of the upstreams' slots, new ones added.
    fn name_upstreams(&self, snapshot: &Snapshot) {
        let mut names = self
            .registry
            .upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (name, _) in &snapshot.slots[names.len().min(snapshot.slots.len())..] {
            names.push(name.clone());
        }
    }

    /// The `--config` file's bytes, if one was given.
    fn read_file(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(path) = &self.source.file else {
            return Ok(None);
        };
        std::fs::read(path)
            .map(Some)
            .map_err(|e| format!("--config: {}: {e}", path.display()))
    }

    fn set_sha256(&self, bytes: &[u8]) {
        let mut sha256 = self.registry.config.sha256.lock();
        let sha256 = sha256.as_mut().map_err(|_| ());
        if let Ok(sha256) = sha256 {
            **sha256 = sha256::hex(bytes);
        }
    }
}
