//! The process-wide group directory: for every group name, how many
//! members it has on each shard. Joins and leaves write it (a write lock,
//! once per join or leave); a publish reads it once (a read lock) to learn
//! how many connections receive the message and which shards to send it
//! to, so that no shard without members hears of it. Bounded by
//! `--max-groups` names; a name leaves it with its last member.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use super::JoinError;

/// Per group name, its members on each shard.
type Counts = BTreeMap<Box<[u8]>, Box<[u32]>>;

/// Member counts per group and shard.
pub struct Directory {
    shards: usize,
    max_groups: usize,
    names: RwLock<Counts>,
}

/// Where a publish goes: receivers in all, and the shards that have any.
#[derive(Debug, Default)]
pub struct Route {
    /// Connections that receive it (a connection in two of the groups
    /// counts twice, as Redis counts a channel and a matching pattern).
    pub receivers: usize,
    /// Per shard: whether it has members in any of the groups.
    pub shards: Vec<bool>,
}

impl Directory {
    /// An empty directory for `shards` shards, holding at most
    /// `max_groups` names.
    pub fn new(shards: usize, max_groups: usize) -> Directory {
        Directory {
            shards,
            max_groups,
            names: RwLock::new(BTreeMap::new()),
        }
    }

    /// Counts one more member of `group` on `shard`.
    pub fn add(&self, group: &[u8], shard: usize) -> Result<(), JoinError> {
        let mut names = self.names.write().expect("directory lock");
        if let Some(counts) = names.get_mut(group) {
            counts[shard] += 1;
            return Ok(());
        }
        if names.len() >= self.max_groups {
            return Err(JoinError::TooManyGroups);
        }
        let mut counts = vec![0; self.shards].into_boxed_slice();
        counts[shard] = 1;
        names.insert(group.into(), counts);
        Ok(())
    }

    /// Counts one member fewer of `group` on `shard`; the name goes with
    /// its last member.
    pub fn remove(&self, group: &[u8], shard: usize) {
        let mut names = self.names.write().expect("directory lock");
        let Some(counts) = names.get_mut(group) else {
            debug_assert!(false, "leaving a group the directory lacks");
            return;
        };
        counts[shard] = counts[shard].saturating_sub(1);
        if counts.iter().all(|&count| count == 0) {
            names.remove(group);
        }
    }

    /// Where a message published to `groups` goes, written into `route`.
    pub fn route(&self, groups: &[&[u8]], route: &mut Route) {
        route.receivers = 0;
        route.shards.clear();
        route.shards.resize(self.shards, false);
        let names = self.names.read().expect("directory lock");
        for group in groups {
            if let Some(counts) = names.get(*group) {
                for (shard, &count) in counts.iter().enumerate() {
                    route.receivers += count as usize;
                    route.shards[shard] |= count > 0;
                }
            }
        }
    }

    /// Members of `group` over all shards.
    pub fn members(&self, group: &[u8]) -> usize {
        let names = self.names.read().expect("directory lock");
        names
            .get(group)
            .map_or(0, |counts| counts.iter().map(|&c| c as usize).sum())
    }

    /// Calls `visit` with every group whose name starts with `prefix`, in
    /// name order, and its member count.
    pub fn scan(&self, prefix: &[u8], mut visit: impl FnMut(&[u8], usize)) {
        let names = self.names.read().expect("directory lock");
        let from = (Bound::Included(prefix), Bound::Unbounded);
        for (name, counts) in names.range::<[u8], _>(from) {
            if !name.starts_with(prefix) {
                break;
            }
            visit(name, counts.iter().map(|&c| c as usize).sum());
        }
    }

    /// Groups in the directory.
    pub fn len(&self) -> usize {
        self.names.read().expect("directory lock").len()
    }

    /// No group has a member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_joins_and_leaves_and_names_go_with_the_last_member() {
        let directory = Directory::new(2, 10);
        directory.add(b"news", 0).unwrap();
        directory.add(b"news", 1).unwrap();
        directory.add(b"news", 1).unwrap();
        let mut route = Route::default();
        directory.route(&[b"news", b"none"], &mut route);
        assert_eq!(route.receivers, 3);
        assert_eq!(route.shards, [true, true]);
        directory.remove(b"news", 0);
        directory.route(&[b"news"], &mut route);
        assert_eq!(
            (route.receivers, route.shards.clone()),
            (2, vec![false, true])
        );
        directory.remove(b"news", 1);
        directory.remove(b"news", 1);
        assert!(directory.is_empty());
    }

    #[test]
    fn the_bound_on_names_refuses_new_names_only() {
        let directory = Directory::new(1, 2);
        directory.add(b"a", 0).unwrap();
        directory.add(b"b", 0).unwrap();
        assert_eq!(directory.add(b"c", 0), Err(JoinError::TooManyGroups));
        directory.add(b"a", 0).unwrap();
        assert_eq!(directory.members(b"a"), 2);
    }

    #[test]
    fn scan_visits_one_prefix_in_order() {
        let directory = Directory::new(1, 10);
        for name in [&b"p:b"[..], b"c:x", b"p:a", b"q"] {
            directory.add(name, 0).unwrap();
        }
        let mut seen = Vec::new();
        directory.scan(b"p:", |name, n| seen.push((name.to_vec(), n)));
        assert_eq!(seen, [(b"p:a".to_vec(), 1), (b"p:b".to_vec(), 1)]);
    }
}
