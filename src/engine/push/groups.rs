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

/// The groups one connection is in (their slab indices), in the order
/// joined. Most connections are in one: it is kept inline, so such a
/// member costs its map entry and no allocation of its own (16 bytes,
/// against a `Vec`'s 24 and a heap block).
enum Joined {
    One(u32),
    // Boxed: a thin pointer keeps `Joined` at 16 bytes (a `Vec` is 24).
    #[allow(clippy::box_collection)]
    Many(Box<Vec<u32>>),
}

impl Joined {
    fn as_slice(&self) -> &[u32] {
        match self {
            Joined::One(index) => std::slice::from_ref(index),
            Joined::Many(list) => list,
        }
    }

    fn push(&mut self, index: u32) {
        match self {
            Joined::One(first) => *self = Joined::Many(Box::new(vec![*first, index])),
            Joined::Many(list) => list.push(index),
        }
    }

    /// Removes `index`; false if no group is left.
    fn remove(&mut self, index: u32) -> bool {
        match self {
            Joined::One(first) => *first != index,
            Joined::Many(list) => {
                list.retain(|&g| g != index);
                match list.as_slice() {
                    [] => false,
                    [only] => {
                        *self = Joined::One(*only);
                        true
                    }
                    _ => true,
                }
            }
        }
    }
}

/// The shard's groups.
pub struct Groups {
    shard: usize,
    max_memberships: usize,
    by_name: HashMap<Box<[u8]>, usize>,
    groups: Slab<Group>,
    /// Per connection in any group: the groups it is in.
    joined: HashMap<Token, Joined>,
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
        if self.count(member) >= self.max_memberships {
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
        // A slab index fits: a shard has at most `--max-groups` (≤ 2^32).
        let index32 = index as u32;
        match self.joined.get_mut(&member) {
            Some(joined) => joined.push(index32),
            None => {
                self.joined.insert(member, Joined::One(index32));
            }
        }
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
        if let Some(joined) = self.joined.get_mut(&member)
            && !joined.remove(index as u32)
        {
            self.joined.remove(&member);
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
        let Some(joined) = self.joined.remove(&member) else {
            return 0;
        };
        for &index in joined.as_slice() {
            self.drop_member(directory, index as usize, member);
        }
        joined.as_slice().len()
    }

    /// The groups `member` is in, in the order joined.
    pub fn of(&self, member: Token) -> impl Iterator<Item = &[u8]> {
        self.joined
            .get(&member)
            .map(Joined::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|&index| &*self.groups[index as usize].name)
    }

    /// How many groups `member` is in.
    pub fn count(&self, member: Token) -> usize {
        self.joined
            .get(&member)
            .map_or(0, |joined| joined.as_slice().len())
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
    fn a_membership_list_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Joined>(), 16);
    }

    #[test]
    fn memberships_keep_their_order_through_joins_and_leaves() {
        let directory = Directory::new(1, 100);
        let mut groups = Groups::new(0, 10);
        let a = Token(1);
        for name in [&b"x"[..], b"y", b"z"] {
            groups.join(&directory, a, name).unwrap();
        }
        assert!(groups.leave(&directory, a, b"y"));
        assert_eq!(groups.of(a).collect::<Vec<_>>(), [&b"x"[..], b"z"]);
        assert!(groups.leave(&directory, a, b"x"));
        assert_eq!((groups.count(a), groups.joined_len()), (1, 1));
        groups.join(&directory, a, b"w").unwrap();
        assert_eq!(groups.of(a).collect::<Vec<_>>(), [&b"z"[..], b"w"]);
        assert!(groups.leave(&directory, a, b"z") && groups.leave(&directory, a, b"w"));
        assert!(!groups.leave(&directory, a, b"w"));
        assert!(groups.is_empty() && groups.joined_len() == 0 && directory.is_empty());
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
