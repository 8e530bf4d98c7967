//! The connection table: a slab whose tokens carry a generation, so an event
//! or timer for a reused slot is recognised as stale and dropped instead of
//! being served to the connection that now lives there. (Slab keys are
//! reused after removal, as the slab crate documents.)
//!
//! A shard keeps two tables: client connections and upstream connections
//! (see `upstream/`). Their tokens share one space, told apart by
//! [`UPSTREAM_BIT`], so an event or a timer names its table by itself.

use slab::Slab;

pub use crate::engine::driver::{Token, UPSTREAM_BIT};

/// Slots stay below this so that no slot reaches [`UPSTREAM_BIT`] (and so
/// no token's slot half is all ones, as the epoll driver's own tokens for
/// its listener and waker are).
const SLOT_MAX: usize = UPSTREAM_BIT;

/// Whether `token` names an upstream connection.
pub fn is_upstream(token: Token) -> bool {
    token.is_upstream()
}

/// A slab addressed by generation-carrying tokens.
///
/// Invariant: a token is `generation << 32 | slot`, and it names the entry
/// in `slot` only while that entry's generation is the token's.
pub struct Table<T> {
    slab: Slab<Entry<T>>,
    generation: u32,
    /// [`UPSTREAM_BIT`] for an upstream table, 0 for a client table.
    role: usize,
}

struct Entry<T> {
    generation: u32,
    value: T,
}

impl<T> Table<T> {
    /// An empty table with room for `capacity` entries before growing.
    pub fn with_capacity(capacity: usize) -> Table<T> {
        Table {
            slab: Slab::with_capacity(capacity),
            generation: 0,
            role: 0,
        }
    }

    /// An empty table whose tokens carry [`UPSTREAM_BIT`].
    pub fn upstream(capacity: usize) -> Table<T> {
        Table {
            role: UPSTREAM_BIT,
            ..Table::with_capacity(capacity)
        }
    }

    /// The token the next [`Table::insert`] will return (for a value whose
    /// making needs its token and may fail).
    pub fn next_token(&self) -> Token {
        let slot = self.slab.vacant_key();
        assert!(slot < SLOT_MAX, "connection table exceeds its token space");
        encode(slot | self.role, self.generation.wrapping_add(1))
    }

    /// Stores the value `make` builds from its token, and returns the token.
    pub fn insert(&mut self, make: impl FnOnce(Token) -> T) -> Token {
        self.generation = self.generation.wrapping_add(1);
        let entry = self.slab.vacant_entry();
        assert!(
            entry.key() < SLOT_MAX,
            "connection table exceeds its token space"
        );
        let token = encode(entry.key() | self.role, self.generation);
        entry.insert(Entry {
            generation: self.generation,
            value: make(token),
        });
        token
    }

    /// The live value `token` names, or `None` if the token is stale.
    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (slot, generation) = self.decode(token)?;
        self.slab
            .get_mut(slot)
            .filter(|entry| entry.generation == generation)
            .map(|entry| &mut entry.value)
    }

    /// The live value `token` names, or `None` if the token is stale.
    pub fn get(&self, token: Token) -> Option<&T> {
        let (slot, generation) = self.decode(token)?;
        self.slab
            .get(slot)
            .filter(|entry| entry.generation == generation)
            .map(|entry| &entry.value)
    }

    /// Removes and returns the value `token` names, if live.
    pub fn remove(&mut self, token: Token) -> Option<T> {
        let (slot, generation) = self.decode(token)?;
        match self.slab.get(slot) {
            Some(entry) if entry.generation == generation => Some(self.slab.remove(slot).value),
            _ => None,
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// No live entries.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The token of every live entry (for shutdown, which visits them all).
    pub fn tokens(&self) -> Vec<Token> {
        self.slab
            .iter()
            .map(|(slot, entry)| encode(slot | self.role, entry.generation))
            .collect()
    }

    /// The slot and generation of `token`, if it belongs to this table.
    fn decode(&self, token: Token) -> Option<(usize, u32)> {
        let (slot, generation) = decode(token);
        (slot & UPSTREAM_BIT == self.role).then_some((slot & !UPSTREAM_BIT, generation))
    }
}

fn encode(slot: usize, generation: u32) -> Token {
    Token(((generation as usize) << 32) | slot)
}

fn decode(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_token_for_reused_slot_is_rejected() {
        let mut table = Table::with_capacity(4);
        let old = table.insert(|_| "first");
        assert_eq!(table.remove(old), Some("first"));
        let new = table.insert(|_| "second");
        // Same slot, new generation.
        assert_eq!(old.0 & 0xffff_ffff, new.0 & 0xffff_ffff);
        assert_eq!(table.get_mut(old), None);
        assert_eq!(table.remove(old), None);
        assert_eq!(table.get_mut(new).copied(), Some("second"));
    }

    #[test]
    fn token_round_trips() {
        assert_eq!(decode(encode(7, 9)), (7, 9));
        assert_eq!(
            decode(encode(SLOT_MAX - 1, u32::MAX)),
            (SLOT_MAX - 1, u32::MAX)
        );
    }

    #[test]
    fn upstream_tokens_are_told_apart() {
        let mut clients = Table::with_capacity(2);
        let mut upstreams = Table::upstream(2);
        let next = upstreams.next_token();
        let up = upstreams.insert(|_| "up");
        assert_eq!(up, next);
        let client = clients.insert(|_| "client");
        assert!(is_upstream(up) && !is_upstream(client));
        // Same slot 0 in both, yet neither table answers the other's token.
        assert_eq!(upstreams.get_mut(client), None);
        assert_eq!(clients.get_mut(up), None);
        assert_eq!(upstreams.get(up).copied(), Some("up"));
        assert_eq!(upstreams.tokens(), vec![up]);
        assert_eq!(upstreams.remove(up), Some("up"));
    }
}
