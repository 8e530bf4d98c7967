//! Which node serves which hash slot, learnt from the cluster itself with
//! `CLUSTER SLOTS` (answered by every Redis from 3.0 on), and kept fresh.
//!
//! Every node the first answer names, primaries and replicas, becomes an
//! upstream of the engine (so a failover, which promotes a replica the
//! proxy already knows, needs no new upstream); a node a later answer names
//! (a scale-out) is added as one then, within `--upstream-slots`, through
//! the hook the service set ([`Topology::grow_with`]). The slot map
//! changes: a thread of its own re-reads it every
//! `--cluster-refresh`, and sooner (at most once a second) when a shard
//! asks because of a redirection or a failed connection. It publishes each
//! new map as an `Arc` behind a mutex, with a generation the shards compare
//! once per command (one relaxed atomic load; the mutex only when it
//! changed). The thread does blocking I/O with timeouts, off the shards'
//! loops. When replicas serve reads it also asks every primary each second
//! which of its replicas are fit to (`replicas.rs`), and the map sends the
//! reads of a slot whose replicas are not to its primary.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::slot::SLOTS;
use crate::apps::proxy::link::{Links, call, resolve};
use crate::apps::proxy::replicas::{self, INFO_REPLICATION, info_text};
use crate::engine::codec::reply::{self, Element};

/// No node serves the slot (or one the proxy does not know).
pub const NO_NODE: u16 = u16::MAX;

/// The most nodes a cluster may have for the proxy (Redis's own advice is
/// 1000 at most).
pub const NODES_MAX: usize = 1024;

/// Asked-for refreshes are this far apart at least.
const REFRESH_GAP: Duration = Duration::from_secs(1);

/// How often the primaries are asked about their replicas.
const REPLICA_CHECK: Duration = Duration::from_secs(1);

const CLUSTER_SLOTS: &[u8] = b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n";

/// The owner of every slot, and a replica of it, as node indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMap {
    owners: Box<[u16]>,
    replicas: Box<[u16]>,
    /// One more than the highest node index it names.
    nodes: usize,
}

impl SlotMap {
    fn empty() -> SlotMap {
        SlotMap {
            owners: vec![NO_NODE; SLOTS].into(),
            replicas: vec![NO_NODE; SLOTS].into(),
            nodes: 0,
        }
    }

    /// Nodes a shard must have an upstream for to use this map: one more
    /// than the highest index it names.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    fn name(&mut self, node: u16) {
        if node != NO_NODE {
            self.nodes = self.nodes.max(usize::from(node) + 1);
        }
    }

    /// The node serving `slot`, or [`NO_NODE`].
    pub fn owner(&self, slot: u16) -> u16 {
        self.owners[usize::from(slot)]
    }

    /// Where `slot`'s reads go when replicas serve them: the first replica
    /// the cluster lists (it leaves failed ones out) that is fit to serve
    /// reads, else the primary; [`NO_NODE`] if the slot never had a
    /// replica.
    pub fn replica(&self, slot: u16) -> u16 {
        self.replicas[usize::from(slot)]
    }

    /// Says `node` serves `slot` now (a `MOVED`); its replica is unknown,
    /// so its reads go to it too.
    pub fn set(&mut self, slot: u16, node: u16) {
        self.owners[usize::from(slot)] = node;
        self.replicas[usize::from(slot)] = node;
        self.name(node);
    }

    /// Slots served by a known node.
    pub fn covered(&self) -> usize {
        self.owners.iter().filter(|&&n| n != NO_NODE).count()
    }
}

/// One range of `CLUSTER SLOTS`: its slots and the nodes serving them,
/// the primary first, as `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// First and last slot.
    pub slots: (u16, u16),
    /// Primary, then replicas.
    pub nodes: Vec<String>,
}

/// What the topology thread calls with the nodes a map names that the
/// proxy does not know yet, to make them upstreams; `Err` says why not.
pub type Grow = Box<dyn Fn(&[(String, SocketAddr)]) -> Result<(), String> + Send>;

/// The nodes, by upstream index: the first map's, then those later maps
/// named (a scale-out), each once the engine took it as an upstream.
#[derive(Default)]
struct Nodes {
    names: Vec<String>,
    /// Their addresses, to recognise a node a redirect names.
    addrs: Vec<SocketAddr>,
}

/// The cluster as the proxy knows it.
pub struct Topology {
    nodes: Mutex<Nodes>,
    /// Makes new nodes upstreams (set once the server runs), if it can.
    grow: Mutex<Option<Grow>>,
    /// Where to ask first when the known nodes do not answer.
    seeds: Vec<String>,
    /// `AUTH` sent before `CLUSTER SLOTS` (`--upstream-password`).
    auth: Option<Box<[u8]>>,
    current: Mutex<Arc<SlotMap>>,
    generation: AtomicU64,
    wanted: AtomicBool,
    /// The ranges of the last `CLUSTER SLOTS` read.
    ranges: Mutex<Vec<Range>>,
    /// By node: whether it may serve reads as a replica (as its primary
    /// said last; true until asked).
    fit: Mutex<Vec<bool>>,
    /// By slot: whether a map has listed a replica for it. Such a slot
    /// whose replicas are all gone now (the cluster dropped a dead one) is
    /// read from its primary, as one whose replicas are unfit.
    replicated: Mutex<Vec<bool>>,
}

impl Topology {
    /// Asks `seeds` in turn for the slot map; the nodes it names (primaries
    /// first) become the proxy's upstreams.
    /// `auth`, an encoded `AUTH` command, goes first on each connection.
    pub fn discover(seeds: &[String], auth: Option<Box<[u8]>>) -> Result<Topology, String> {
        let mut errors = Vec::new();
        for seed in seeds {
            match ask(seed, auth.as_deref()) {
                Ok(ranges) => {
                    let mut topology = Topology::from_ranges(seeds, &ranges)?;
                    topology.auth = auth;
                    return Ok(topology);
                }
                Err(error) => errors.push(format!("{seed}: {error}")),
            }
        }
        Err(format!(
            "no seed answered CLUSTER SLOTS ({})",
            errors.join("; ")
        ))
    }

    /// The topology of parsed `CLUSTER SLOTS` ranges.
    pub fn from_ranges(seeds: &[String], ranges: &[Range]) -> Result<Topology, String> {
        let mut nodes: Vec<String> = Vec::new();
        for name in named(ranges) {
            if !nodes.contains(name) {
                nodes.push(name.clone());
            }
        }
        if nodes.len() > NODES_MAX {
            return Err(format!("{} nodes, at most {NODES_MAX}", nodes.len()));
        }
        let addrs = nodes
            .iter()
            .map(|name| resolve(name))
            .collect::<Result<Vec<_>, _>>()?;
        let count = nodes.len();
        let topology = Topology {
            nodes: Mutex::new(Nodes {
                names: nodes,
                addrs,
            }),
            grow: Mutex::new(None),
            seeds: seeds.to_vec(),
            auth: None,
            current: Mutex::new(Arc::new(SlotMap::empty())),
            generation: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            ranges: Mutex::new(ranges.to_vec()),
            fit: Mutex::new(vec![true; count]),
            replicated: Mutex::new(vec![false; SLOTS]),
        };
        topology.publish(topology.map_of(ranges));
        Ok(topology)
    }

    /// The nodes, by upstream index, and their addresses.
    pub fn nodes(&self) -> (Vec<String>, Vec<SocketAddr>) {
        let nodes = self.nodes.lock().expect("not poisoned");
        (nodes.names.clone(), nodes.addrs.clone())
    }

    /// From now on, nodes a new map names are made upstreams by `grow`
    /// (the first call sets it; the others are ignored).
    pub fn grow_with(&self, grow: impl FnOnce() -> Grow) {
        let mut slot = self.grow.lock().expect("not poisoned");
        if slot.is_none() {
            *slot = Some(grow());
        }
    }

    /// The node index of `addr` (`host:port` as a redirect names it).
    pub fn index_of(&self, addr: &[u8]) -> Option<u16> {
        let text = std::str::from_utf8(addr).ok()?;
        let nodes = self.nodes.lock().expect("not poisoned");
        if let Some(index) = nodes.names.iter().position(|name| name == text) {
            return Some(index as u16);
        }
        let addr: SocketAddr = text.parse().ok()?;
        nodes
            .addrs
            .iter()
            .position(|a| *a == addr)
            .map(|i| i as u16)
    }

    /// Makes upstreams of the nodes `ranges` name that are not known yet
    /// (primaries first), through the grow hook: they are known from then
    /// on, with the next indexes. Without the hook, or past [`NODES_MAX`]
    /// or the engine's slots, they stay unknown (and their slots
    /// unserved, as [`Topology::map_of`] says).
    fn learn(&self, ranges: &[Range]) {
        let mut new: Vec<String> = Vec::new();
        for name in named(ranges) {
            if self.index_of(name.as_bytes()).is_none() && !new.contains(name) {
                new.push(name.clone());
            }
        }
        let grow = self.grow.lock().expect("not poisoned");
        let (Some(grow), false) = (grow.as_ref(), new.is_empty()) else {
            return;
        };
        let known = self.nodes.lock().expect("not poisoned").names.len();
        let resolved = if known + new.len() > NODES_MAX {
            Err(format!("{} nodes, at most {NODES_MAX}", known + new.len()))
        } else {
            (new.iter())
                .map(|name| resolve(name).map(|addr| (name.clone(), addr)))
                .collect::<Result<Vec<_>, _>>()
        };
        // Known first, so that a reload meanwhile (its settings take the
        // topology's nodes) keeps them; the engine then adds them (none
        // twice) with the same indexes: the next free slots.
        let added = resolved.and_then(|added| {
            self.know(&added);
            grow(&added).inspect_err(|_| self.forget(known))
        });
        match added {
            Ok(()) => log::info!(
                "cluster: new nodes {} made upstreams {known} to {}",
                new.join(", "),
                known + new.len() - 1
            ),
            Err(why) => log::warn!("cluster: new nodes {} are not used: {why}", new.join(", ")),
        }
    }

    /// Adds `added` to the known nodes, each fit to serve reads.
    fn know(&self, added: &[(String, SocketAddr)]) {
        let mut nodes = self.nodes.lock().expect("not poisoned");
        let mut fit = self.fit.lock().expect("not poisoned");
        for (name, addr) in added {
            nodes.names.push(name.clone());
            nodes.addrs.push(*addr);
            fit.push(true);
        }
    }

    /// Forgets the nodes past the first `count`.
    fn forget(&self, count: usize) {
        let mut nodes = self.nodes.lock().expect("not poisoned");
        nodes.names.truncate(count);
        nodes.addrs.truncate(count);
        self.fit.lock().expect("not poisoned").truncate(count);
    }

    /// The generation of the current map: it changes when the map does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The current map and its generation.
    pub fn current(&self) -> (u64, Arc<SlotMap>) {
        let map = self.current.lock().expect("not poisoned");
        (self.generation.load(Ordering::Acquire), map.clone())
    }

    /// Asks the refresher to re-read the map soon (a redirection, a failed
    /// connection).
    pub fn ask_refresh(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    /// Starts the thread that re-reads the map every `every`, and soon
    /// after [`Topology::ask_refresh`]; with `max_lag`, it also asks the
    /// primaries about their replicas every second.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        every: Duration,
        max_lag: Option<Duration>,
    ) -> std::io::Result<()> {
        let topology = Arc::clone(self);
        std::thread::Builder::new()
            .name("cluster-topology".into())
            .spawn(move || topology.refresh_forever(every, max_lag))
            .map(drop)
    }

    fn refresh_forever(&self, every: Duration, max_lag: Option<Duration>) {
        let mut last = Instant::now();
        let mut checked: Option<Instant> = None;
        let mut primaries = Links::default();
        loop {
            if let Some(max_lag) = max_lag
                && checked.is_none_or(|at| at.elapsed() >= REPLICA_CHECK)
            {
                checked = Some(Instant::now());
                self.check_replicas(max_lag, &mut primaries);
            }
            std::thread::sleep(Duration::from_millis(50));
            let since = last.elapsed();
            let asked = self.wanted.load(Ordering::Relaxed) && since >= REFRESH_GAP;
            if !(asked || since >= every) {
                continue;
            }
            self.wanted.store(false, Ordering::Relaxed);
            last = Instant::now();
            self.refresh();
        }
    }

    /// Reads the map from the first node that answers (known primaries,
    /// then every known node, then the seeds) and publishes it if it
    /// changed.
    pub fn refresh(&self) {
        let (known, _) = self.nodes();
        let candidates = known.iter().chain(&self.seeds);
        for node in candidates {
            match ask(node, self.auth.as_deref()) {
                Ok(ranges) => {
                    self.learn(&ranges);
                    let map = self.map_of(&ranges);
                    *self.ranges.lock().expect("not poisoned") = ranges;
                    if *self.current().1 != map {
                        log::info!(
                            "cluster: new slot map from {node} ({} of {SLOTS} slots served by known nodes)",
                            map.covered()
                        );
                        self.publish(map);
                    }
                    return;
                }
                Err(error) => log::debug!("cluster: {node}: {error}"),
            }
        }
        log::warn!("cluster: no node answered CLUSTER SLOTS; keeping the last slot map");
    }

    /// Asks each primary which of its replicas are fit to serve reads
    /// (one that does not answer leaves its replicas as they were) and
    /// publishes the map again if that changed where reads go.
    /// The primaries are asked on connections kept from one check to the
    /// next (`links`).
    fn check_replicas(&self, max_lag: Duration, links: &mut Links) {
        let ranges = self.ranges.lock().expect("not poisoned").clone();
        let mut fit = self.fit.lock().expect("not poisoned").clone();
        let mut asked: Vec<&str> = Vec::new();
        for range in &ranges {
            let (primary, replicas) = range.nodes.split_first().expect("parsed with one");
            if replicas.is_empty() || asked.contains(&primary.as_str()) {
                continue;
            }
            asked.push(primary);
            let info = match links.call(primary, self.auth.as_deref(), INFO_REPLICATION) {
                Ok(bytes) => info_text(&bytes),
                Err(error) => {
                    log::debug!("cluster: {primary}: INFO replication: {error}");
                    continue;
                }
            };
            let listed = replicas::listed(&info, max_lag.as_secs());
            let siblings = ranges.iter().filter(|r| r.nodes[0] == *primary);
            for replica in siblings.flat_map(|r| &r.nodes[1..]) {
                let Some(index) = self.index_of(replica.as_bytes()) else {
                    continue;
                };
                let verdict = listed
                    .iter()
                    .find(|(addr, _)| self.index_of(addr.as_bytes()) == Some(index))
                    .map_or(Err("not listed by its primary".to_string()), |(_, v)| {
                        v.clone()
                    });
                let was = std::mem::replace(&mut fit[usize::from(index)], verdict.is_ok());
                match (was, verdict) {
                    (true, Err(why)) => log::warn!(
                        "cluster: replica {replica} {why}: its slots' reads go to {primary}"
                    ),
                    (false, Ok(())) => log::info!("cluster: replica {replica} serves reads again"),
                    _ => {}
                }
            }
        }
        links.keep_only(&asked);
        *self.fit.lock().expect("not poisoned") = fit;
        let map = self.map_of(&ranges);
        if *self.current().1 != map {
            self.publish(map);
        }
    }

    fn map_of(&self, ranges: &[Range]) -> SlotMap {
        let fit = self.fit.lock().expect("not poisoned").clone();
        let mut replicated = self.replicated.lock().expect("not poisoned");
        let mut map = SlotMap::empty();
        for range in ranges {
            let primary = &range.nodes[0];
            let Some(index) = self.index_of(primary.as_bytes()) else {
                log::warn!(
                    "cluster: {primary} serves slots {}-{} but is not a node the proxy could \
                     add; they fail with CLUSTERDOWN",
                    range.slots.0,
                    range.slots.1
                );
                continue;
            };
            let replica = match range.nodes.len() {
                1 => NO_NODE,
                _ => range.nodes[1..]
                    .iter()
                    .filter_map(|name| self.index_of(name.as_bytes()))
                    .find(|&node| fit[usize::from(node)])
                    .unwrap_or(index),
            };
            map.name(index);
            map.name(replica);
            for slot in range.slots.0..=range.slots.1 {
                let slot = usize::from(slot);
                replicated[slot] |= replica != NO_NODE;
                map.owners[slot] = index;
                map.replicas[slot] = match replica {
                    NO_NODE if replicated[slot] => index,
                    replica => replica,
                };
            }
        }
        map
    }

    /// Takes `ranges` as if a refresh had read them.
    #[cfg(test)]
    pub(super) fn take(&self, ranges: &[Range]) {
        self.learn(ranges);
        *self.ranges.lock().expect("not poisoned") = ranges.to_vec();
        self.publish(self.map_of(ranges));
    }

    fn publish(&self, map: SlotMap) {
        let mut current = self.current.lock().expect("not poisoned");
        *current = Arc::new(map);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Every node `ranges` name, primaries first (so that upstream indexes read
/// naturally), then replicas; a node serving several ranges comes more
/// than once.
fn named(ranges: &[Range]) -> impl Iterator<Item = &String> {
    let primaries = ranges.iter().map(|range| &range.nodes[0]);
    let replicas = ranges.iter().flat_map(|range| &range.nodes[1..]);
    primaries.chain(replicas)
}

/// `CLUSTER SLOTS` of the node at `addr`, after `auth` if given.
fn ask(addr: &str, auth: Option<&[u8]>) -> Result<Vec<Range>, String> {
    let bytes = call(addr, auth, CLUSTER_SLOTS)?;
    let host = resolve(addr)?.ip().to_string();
    parse_slots(&bytes, &host)
}

/// A parsed reply.
#[derive(Debug)]
enum Value<'a> {
    Text(&'a [u8]),
    Integer(i64),
    Array(Vec<Value<'a>>),
    Error(&'a [u8]),
    Nil,
}

fn value(bytes: &[u8]) -> Result<(Value<'_>, usize), String> {
    let (element, mut at) = reply::next(bytes)
        .map_err(|e| e.to_string())?
        .ok_or("a truncated reply")?;
    let value = match element {
        Element::Simple(text) | Element::Bulk(text) => Value::Text(text),
        Element::Error(text) => Value::Error(text),
        Element::Integer(n) => Value::Integer(n),
        Element::Nil => Value::Nil,
        Element::Array(len) => {
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                let (item, used) = value(&bytes[at..])?;
                items.push(item);
                at += used;
            }
            Value::Array(items)
        }
        // The topology's connections speak RESP2.
        other => return Err(format!("a RESP3 element in a RESP2 reply: {other:?}")),
    };
    Ok((value, at))
}

/// The ranges of a `CLUSTER SLOTS` reply; a node named with an empty host
/// is on `host`, the one asked.
pub fn parse_slots(bytes: &[u8], host: &str) -> Result<Vec<Range>, String> {
    let (reply, _) = value(bytes)?;
    let items = match reply {
        Value::Array(items) => items,
        Value::Error(text) => return Err(String::from_utf8_lossy(text).into_owned()),
        other => return Err(format!("CLUSTER SLOTS answered {other:?}")),
    };
    let slot = |value: &Value<'_>| match value {
        Value::Integer(n) if (0..SLOTS as i64).contains(n) => Ok(*n as u16),
        other => Err(format!("not a slot: {other:?}")),
    };
    let node = |value: &Value<'_>| -> Result<String, String> {
        let Value::Array(fields) = value else {
            return Err(format!("not a node: {value:?}"));
        };
        match fields.as_slice() {
            [Value::Text(ip), Value::Integer(port), ..] if (1..=65535).contains(port) => {
                let ip = String::from_utf8_lossy(ip);
                let ip = if ip.is_empty() || ip == "?" {
                    host.into()
                } else {
                    ip
                };
                Ok(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                })
            }
            _ => Err(format!("not a node: {value:?}")),
        }
    };
    items
        .iter()
        .map(|item| {
            let Value::Array(fields) = item else {
                return Err(format!("not a slot range: {item:?}"));
            };
            if fields.len() < 3 {
                return Err(format!("a slot range without a node: {item:?}"));
            }
            let slots = (slot(&fields[0])?, slot(&fields[1])?);
            let nodes = fields[2..].iter().map(node).collect::<Result<_, _>>()?;
            Ok(Range { slots, nodes })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `CLUSTER SLOTS` reply of a three-primary cluster with one replica
    /// each, as Redis 7 writes it (node ids cut short).
    const REPLY: &[u8] = b"*3\r\n\
*4\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7101\r\n$2\r\naa\r\n*3\r\n$9\r\n127.0.0.1\r\n:7105\r\n$2\r\nbb\r\n\
*4\r\n:5461\r\n:10922\r\n*3\r\n$9\r\n127.0.0.1\r\n:7102\r\n$2\r\ncc\r\n*3\r\n$0\r\n\r\n:7106\r\n$2\r\ndd\r\n\
*3\r\n:10923\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7103\r\n$2\r\nee\r\n";

    #[test]
    fn cluster_slots_are_parsed() {
        let ranges = parse_slots(REPLY, "10.0.0.9").unwrap();
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[0].slots, (0, 5460));
        assert_eq!(ranges[0].nodes, ["127.0.0.1:7101", "127.0.0.1:7105"]);
        // An empty host is the host asked.
        assert_eq!(ranges[1].nodes, ["127.0.0.1:7102", "10.0.0.9:7106"]);
        assert_eq!(ranges[2].nodes, ["127.0.0.1:7103"]);
    }

    #[test]
    fn primaries_come_first_and_every_slot_has_its_owner() {
        let ranges = parse_slots(REPLY, "127.0.0.1").unwrap();
        let topology = Topology::from_ranges(&["127.0.0.1:7101".into()], &ranges).unwrap();
        assert_eq!(
            topology.nodes().0,
            [
                "127.0.0.1:7101",
                "127.0.0.1:7102",
                "127.0.0.1:7103",
                "127.0.0.1:7105",
                "127.0.0.1:7106"
            ]
        );
        let (generation, map) = topology.current();
        assert_eq!(generation, 1);
        assert_eq!((map.owner(0), map.owner(5460), map.owner(5461)), (0, 0, 1));
        assert_eq!(map.owner(16383), 2);
        assert_eq!(
            (map.replica(0), map.replica(5461), map.replica(16383)),
            (3, 4, NO_NODE)
        );
        assert_eq!(map.covered(), SLOTS);
        assert_eq!(topology.index_of(b"127.0.0.1:7106"), Some(4));
        assert_eq!(topology.index_of(b"127.0.0.1:9999"), None);
    }

    #[test]
    fn reads_of_slots_whose_replicas_are_unfit_go_to_the_primary() {
        let ranges = parse_slots(REPLY, "127.0.0.1").unwrap();
        let topology = Topology::from_ranges(&[], &ranges).unwrap();
        topology.fit.lock().unwrap()[3] = false;
        let map = topology.map_of(&ranges);
        assert_eq!((map.replica(0), map.replica(5461)), (0, 4));
        assert_eq!(map.replica(16383), NO_NODE, "no replica at all");
        // The cluster drops the replica of 5461-10922 (it died): read from
        // the primary, not refused.
        let mut without = ranges.clone();
        without[1].nodes.truncate(1);
        let map = topology.map_of(&without);
        assert_eq!((map.replica(5461), map.replica(16383)), (1, NO_NODE));
        let mut moved = map.clone();
        moved.set(5461, 2);
        assert_eq!((moved.owner(5461), moved.replica(5461)), (2, 2));
    }

    #[test]
    fn bad_replies_are_errors() {
        assert!(parse_slots(b"-ERR This instance has cluster support disabled\r\n", "h").is_err());
        assert!(parse_slots(b"*1\r\n*2\r\n:0\r\n:1\r\n", "h").is_err());
        assert!(parse_slots(b"*1\r\n*3\r\n:0\r\n:99999\r\n*2\r\n$1\r\na\r\n:1\r\n", "h").is_err());
    }
}
