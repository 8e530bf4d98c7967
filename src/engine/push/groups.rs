//! A shard's own half of the groups: which of its connections are in each
//! group, and which groups each connection is in (so that a close leaves
//! them all). The counts go to the process-wide
//! [`Directory`](super::directory::Directory) as members come and go. A
//! connection in no group costs nothing here.

use std::collections::HashMap;

use indexmap::IndexSet;
use slab::Slab;

use super::JoinError;
use super::directory::Directory;
use crate::engine::driver::Token;

/// One group's members on this shard.
struct Group {
    name: Box<[u8]>,
    members: IndexSet<Token>,
}

/// The shard's groups.
pub struct Groups {
    shard: usize,
    max_memberships: usize,
    by_name: HashMap<Box<[u8]>, usize>,
    groups: Slab<Group>,
    /// Per connection in any group: the groups it is in.
    joined: HashMap<Token, Vec<usize>>,
    /// A join or leave happened since [`Groups::take_changed`].
    changed: bool,
}

impl Groups {
    /// No groups yet, on `shard`, each connection in at most
    /// `max_memberships`.
    pub fn new(shard: usize, max_memberships: usize) -> Groups {
        Groups {
            shard,
            max_memberships,
            by_name: HashMap::new(),
            groups: Slab::new(),
            joined: HashMap::new(),
            changed: false,
        }
    }

    /// Puts `member` in `name`; false if it already was.
    pub fn join(
        &mut self,
        directory: &Directory,
        member: Token,
        name: &[u8],
    ) -> Result<bool, JoinError> {
        let existing = self.by_name.get(name).copied();
        if let Some(index) = existing
            && self.groups[index].members.contains(&member)
        {
            return Ok(false);
        }
        let joined = self.joined.get(&member).map_or(0, Vec::len);
        if joined >= self.max_memberships {
            return Err(JoinError::TooManyMemberships);
        }
        directory.add(name, self.shard)?;
        let index = existing.unwrap_or_else(|| {
            let index = self.groups.insert(Group {
                name: name.into(),
                members: IndexSet::new(),
            });
            self.by_name.insert(name.into(), index);
            index
        });
        self.groups[index].members.insert(member);
        self.joined.entry(member).or_default().push(index);
        self.changed = true;
        Ok(true)
    }

    /// Takes `member` out of `name`; false if it was not in it.
    pub fn leave(&mut self, directory: &Directory, member: Token, name: &[u8]) -> bool {
        let Some(&index) = self.by_name.get(name) else {
            return false;
        };
        if !self.groups[index].members.contains(&member) {
            return false;
        }
        if let Some(list) = self.joined.get_mut(&member) {
            list.retain(|&g| g != index);
            if list.is_empty() {
                self.joined.remove(&member);
            }
        }
        self.drop_member(directory, index, member);
        self.changed = true;
        true
    }

    /// Whether a join or leave happened since last asked.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Takes `member` out of every group it is in (it closed); returns
    /// how many.
    pub fn leave_all(&mut self, directory: &Directory, member: Token) -> usize {
        let Some(list) = self.joined.remove(&member) else {
            return 0;
        };
        for &index in &list {
            self.drop_member(directory, index, member);
        }
        list.len()
    }

    /// The groups `member` is in, in the order joined.
    pub fn of(&self, member: Token) -> impl Iterator<Item = &[u8]> {
        self.joined
            .get(&member)
            .into_iter()
            .flatten()
            .map(|&index| &*self.groups[index].name)
    }

    /// How many groups `member` is in.
    pub fn count(&self, member: Token) -> usize {
        self.joined.get(&member).map_or(0, Vec::len)
    }

    /// This shard's members of `name`, appended to `out`.
    pub fn members(&self, name: &[u8], out: &mut Vec<Token>) {
        if let Some(&index) = self.by_name.get(name) {
            out.extend(self.groups[index].members.iter().copied());
        }
    }

    /// Groups with a member on this shard.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// No group has a member here.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Connections in at least one group.
    pub fn joined_len(&self) -> usize {
        self.joined.len()
    }

    fn drop_member(&mut self, directory: &Directory, index: usize, member: Token) {
        let group = &mut self.groups[index];
        group.members.swap_remove(&member);
        directory.remove(&group.name, self.shard);
        if group.members.is_empty() {
            let group = self.groups.remove(index);
            self.by_name.remove(&group.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_leaves_all_leaves_nothing_behind() {
        let directory = Directory::new(1, 100);
        let mut groups = Groups::new(0, 10);
        let (a, b) = (Token(1), Token(2));
        assert_eq!(groups.join(&directory, a, b"x"), Ok(true));
        assert_eq!(groups.join(&directory, a, b"x"), Ok(false));
        groups.join(&directory, a, b"y").unwrap();
        groups.join(&directory, b, b"x").unwrap();
        assert_eq!(directory.members(b"x"), 2);
        assert_eq!(groups.of(a).collect::<Vec<_>>(), [&b"x"[..], b"y"]);
        assert_eq!(groups.leave_all(&directory, a), 2);
        assert_eq!(directory.members(b"x"), 1);
        assert_eq!(directory.members(b"y"), 0);
        assert!(groups.leave(&directory, b, b"x"));
        assert!(groups.is_empty() && directory.is_empty() && groups.joined_len() == 0);
    }

    #[test]
    fn memberships_are_bounded_per_connection() {
        let directory = Directory::new(1, 100);
        let mut groups = Groups::new(0, 2);
        groups.join(&directory, Token(1), b"a").unwrap();
        groups.join(&directory, Token(1), b"b").unwrap();
        assert_eq!(
            groups.join(&directory, Token(1), b"c"),
            Err(JoinError::TooManyMemberships)
        );
        assert_eq!(groups.join(&directory, Token(2), b"c"), Ok(true));
    }
}
