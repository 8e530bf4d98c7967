//! Fronting a Redis Cluster (`holdfast proxy --cluster`): keys go by hash
//! slot ([`slot`]) to the node the slot map says ([`topology`]), and
//! replies that say otherwise (`-MOVED`, `-ASK`) send the request on, the
//! client never seeing them ([`View::redirect`], which the engine asks).

pub mod slot;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use self::topology::{NO_NODE, SlotMap, Topology};
use crate::config::{Config, ReadFrom};
use crate::engine::service::Redirect;
use crate::engine::upstream::conn::Greeting;

/// Joins the cluster of `config.cluster`'s seeds: learns its nodes, makes
/// them `config`'s upstreams (validated again), and starts the thread
/// that keeps the slot map fresh.
pub fn join(config: &mut Config) -> Result<Arc<Topology>, String> {
    let seeds: Vec<String> = config
        .cluster
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    let auth = config
        .upstream_password
        .as_deref()
        .map(|password| Greeting::auth(config.upstream_user.as_deref(), password).request);
    let topology = Arc::new(Topology::discover(&seeds, auth)?);
    let (_, map) = topology.current();
    let (nodes, _) = topology.nodes();
    log::info!(
        "cluster: {} nodes, {} of {} slots served",
        nodes.len(),
        map.covered(),
        slot::SLOTS
    );
    config.cluster = None;
    config.upstreams = nodes;
    let validated = config.validate();
    config.cluster = Some(seeds.join(","));
    validated.map_err(|error| error.to_string())?;
    topology
        .spawn_refresher(config.cluster_refresh, replica_check(config))
        .map_err(|error| format!("cannot start the topology thread: {error}"))?;
    Ok(topology)
}

/// The lag past which a replica serves no reads, when replicas serve any.
fn replica_check(config: &Config) -> Option<Duration> {
    (config.read_from != ReadFrom::Primary).then_some(config.replica_max_lag)
}

/// Sent before a request an `-ASK` redirects, on the same connection.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// The error for a slot no known node serves, as Redis words it.
pub const CLUSTERDOWN: &[u8] = b"-CLUSTERDOWN Hash slot not served\r\n";

/// The error for a read with `--read-from replica` when the slot has no
/// replica the proxy knows.
pub const NO_REPLICA: &[u8] = b"-CLUSTERDOWN no replica serves this slot (--read-from replica)\r\n";

/// The error for keys of one command in different slots, as Redis words it.
pub const CROSSSLOT: &[u8] = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n";

/// One shard's view of the cluster: the last slot map it took, with the
/// `MOVED`s it has seen since.
pub struct View {
    topology: Arc<Topology>,
    seen: u64,
    map: Arc<SlotMap>,
    read_from: ReadFrom,
    /// Nodes this shard has an upstream for: a map that names a node past
    /// them (one the topology just added) waits until the shard has made
    /// its pools (see [`View::known`]).
    known: usize,
}

impl View {
    /// A view of `topology`'s current map, for a shard with upstreams for
    /// its first `known` nodes.
    pub fn new(topology: Arc<Topology>, read_from: ReadFrom, known: usize) -> View {
        let (seen, map) = topology.current();
        View {
            topology,
            seen,
            map,
            read_from,
            known,
        }
    }

    /// The shard has upstreams for the first `nodes` nodes now (the
    /// engine added those the topology learnt).
    pub fn known(&mut self, nodes: usize) {
        self.known = nodes;
    }

    /// Takes the topology's map if it changed (one atomic load) and names
    /// no node this shard has no upstream for yet (it has one by its next
    /// turn: the map is taken then).
    pub fn refresh(&mut self) {
        if self.topology.generation() != self.seen {
            let (seen, map) = self.topology.current();
            if map.nodes() <= self.known {
                (self.seen, self.map) = (seen, map);
            }
        }
    }

    /// The upstream for a command on `slot`: its primary, or for a
    /// `read` (a read-only command) its replica as `--read-from` says; the
    /// error to reply when there is none (which asks for a fresh map).
    pub fn node(&self, slot: u16, read: bool) -> Result<usize, &'static [u8]> {
        let primary = self.map.owner(slot);
        if primary == NO_NODE {
            self.topology.ask_refresh();
            return Err(CLUSTERDOWN);
        }
        if !read || self.read_from == ReadFrom::Primary {
            return Ok(usize::from(primary));
        }
        match (self.map.replica(slot), self.read_from) {
            (NO_NODE, ReadFrom::Replica) => Err(NO_REPLICA),
            (NO_NODE, _) => Ok(usize::from(primary)),
            (replica, _) => Ok(usize::from(replica)),
        }
    }

    /// A connection to a node failed: the map may be stale.
    pub fn suspect(&self) {
        self.topology.ask_refresh();
    }

    /// Where a `-MOVED slot host:port` or `-ASK slot host:port` reply sends
    /// its request. A `MOVED` also moves the slot in this view at once and
    /// asks for a fresh map; a node the proxy does not know redirects
    /// nowhere (the client gets the reply).
    pub fn redirect(&mut self, reply: &[u8]) -> Option<Redirect> {
        let line = reply.strip_prefix(b"-")?.strip_suffix(b"\r\n")?;
        let mut words = line.split(|&b| b == b' ');
        let kind = words.next()?;
        let moved = kind == b"MOVED";
        if !moved && kind != b"ASK" {
            return None;
        }
        let slot = std::str::from_utf8(words.next()?)
            .ok()?
            .parse::<u16>()
            .ok()?;
        let addr = words.next()?;
        if words.next().is_some() || usize::from(slot) >= slot::SLOTS {
            return None;
        }
        let node = self.topology.index_of(addr);
        let Some(node) = node.filter(|&node| usize::from(node) < self.known) else {
            // A node the next map will name (the topology adds it): the
            // client gets the redirect meanwhile.
            log::debug!(
                "cluster: a redirect to {}, not an upstream (yet)",
                String::from_utf8_lossy(addr)
            );
            self.topology.ask_refresh();
            return None;
        };
        if moved {
            Arc::make_mut(&mut self.map).set(slot, node);
            self.topology.ask_refresh();
        }
        Some(Redirect {
            upstream: usize::from(node),
            before: if moved { b"" } else { ASKING },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::topology::Range;
    use super::*;

    fn view() -> View {
        let range = |slots, nodes: &[&str]| Range {
            slots,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        };
        let ranges = [
            range((0, 8191), &["127.0.0.1:7101", "127.0.0.1:7103"]),
            range((8192, 16383), &["127.0.0.1:7102"]),
        ];
        View::new(
            Arc::new(Topology::from_ranges(&[], &ranges).unwrap()),
            ReadFrom::Primary,
            3,
        )
    }

    fn range(slots: (u16, u16), nodes: &[&str]) -> Range {
        Range {
            slots,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn a_new_node_is_used_once_the_shard_has_its_upstream() {
        let mut view = view();
        let added = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = added.clone();
        view.topology.grow_with(|| {
            Box::new(move |nodes: &[(String, std::net::SocketAddr)]| {
                seen.lock()
                    .unwrap()
                    .extend(nodes.iter().map(|(n, _)| n.clone()));
                Ok(())
            })
        });
        // Slots 0-99 move to a node the first map did not name.
        view.topology.take(&[
            range((0, 99), &["127.0.0.1:7104"]),
            range((100, 8191), &["127.0.0.1:7101", "127.0.0.1:7103"]),
            range((8192, 16383), &["127.0.0.1:7102"]),
        ]);
        assert_eq!(*added.lock().unwrap(), ["127.0.0.1:7104"]);
        assert_eq!(view.topology.index_of(b"127.0.0.1:7104"), Some(3));
        // Until the shard has an upstream for node 3, it keeps the old map
        // and a redirect to the node goes nowhere.
        view.refresh();
        assert_eq!(view.node(5, false), Ok(0));
        assert_eq!(view.redirect(b"-MOVED 5 127.0.0.1:7104\r\n"), None);
        view.known(4);
        view.refresh();
        assert_eq!(view.node(5, false), Ok(3));
        assert_eq!(view.node(100, false), Ok(0));
    }

    #[test]
    fn a_node_the_engine_cannot_add_stays_unknown() {
        let view = view();
        view.topology
            .grow_with(|| Box::new(|_: &[(String, std::net::SocketAddr)]| Err("no slot".into())));
        view.topology.take(&[
            range((0, 99), &["127.0.0.1:7104"]),
            range((100, 16383), &["127.0.0.1:7101"]),
        ]);
        assert_eq!(view.topology.index_of(b"127.0.0.1:7104"), None);
        assert_eq!(view.topology.nodes().0.len(), 3);
        let (_, map) = view.topology.current();
        assert_eq!(map.owner(5), NO_NODE, "its slots are unserved");
    }

    #[test]
    fn moved_sends_on_and_moves_the_slot() {
        let mut view = view();
        assert_eq!(view.node(100, false), Ok(0));
        let to = view.redirect(b"-MOVED 100 127.0.0.1:7102\r\n").unwrap();
        assert_eq!((to.upstream, to.before), (1, &b""[..]));
        assert_eq!(view.node(100, false), Ok(1));
        assert_eq!(view.node(101, false), Ok(0));
    }

    #[test]
    fn ask_sends_on_once_with_asking_first() {
        let mut view = view();
        let to = view.redirect(b"-ASK 100 127.0.0.1:7103\r\n").unwrap();
        assert_eq!((to.upstream, to.before), (2, ASKING));
        assert_eq!(view.node(100, false), Ok(0), "ASK moves nothing");
    }

    #[test]
    fn reads_go_where_read_from_says() {
        let mut view = view();
        assert_eq!(view.node(10, true), Ok(0), "primary: reads too");
        view.read_from = ReadFrom::Replica;
        assert_eq!((view.node(10, true), view.node(10, false)), (Ok(2), Ok(0)));
        assert_eq!(view.node(9000, true), Err(NO_REPLICA), "no replica");
        view.read_from = ReadFrom::PreferReplica;
        assert_eq!((view.node(10, true), view.node(9000, true)), (Ok(2), Ok(1)));
    }

    #[test]
    fn other_errors_and_unknown_nodes_redirect_nowhere() {
        let mut view = view();
        for reply in [
            &b"-ERR wrong number of arguments\r\n"[..],
            b"-MOVED 100 127.0.0.1:9\r\n",
            b"-MOVED 99999 127.0.0.1:7102\r\n",
            b"-MOVED x 127.0.0.1:7102\r\n",
            b"-MOVED 100\r\n",
            b"+OK\r\n",
        ] {
            assert_eq!(
                view.redirect(reply),
                None,
                "{}",
                String::from_utf8_lossy(reply)
            );
        }
    }
}
