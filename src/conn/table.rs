//! The connection table: a slab whose tokens carry a generation, so an event
//! or timer for a reused slot is recognised as stale and dropped instead of
//! being served to the connection that now lives there. (Slab keys are
//! reused after removal, as the slab crate documents.)

use mio::Token;
use slab::Slab;

/// Token of the shard's listener.
pub const LISTENER: Token = Token(usize::MAX);
/// Token of the shard's waker (shutdown requests).
pub const WAKER: Token = Token(usize::MAX - 1);

/// Slots stay below this so that no connection token can equal a reserved
/// one above (their low 32 bits are all ones).
const SLOT_MAX: usize = u32::MAX as usize - 2;

/// A slab addressed by generation-carrying tokens.
///
/// Invariant: a token is `generation << 32 | slot`, and it names the entry
/// in `slot` only while that entry's generation is the token's.
pub struct Table<T> {
    slab: Slab<Entry<T>>,
    generation: u32,
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
        }
    }

    /// Stores the value `make` builds from its token, and returns the token.
    pub fn insert(&mut self, make: impl FnOnce(Token) -> T) -> Token {
        self.generation = self.generation.wrapping_add(1);
        let entry = self.slab.vacant_entry();
        assert!(
            entry.key() < SLOT_MAX,
            "connection table exceeds its token space"
        );
        let token = encode(entry.key(), self.generation);
        entry.insert(Entry {
            generation: self.generation,
            value: make(token),
        });
        token
    }

    /// The live value `token` names, or `None` if the token is stale.
    pub fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (slot, generation) = decode(token);
        self.slab
            .get_mut(slot)
            .filter(|entry| entry.generation == generation)
            .map(|entry| &mut entry.value)
    }

    /// Removes and returns the value `token` names, if live.
    pub fn remove(&mut self, token: Token) -> Option<T> {
        let (slot, generation) = decode(token);
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
            .map(|(slot, entry)| encode(slot, entry.generation))
            .collect()
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
    fn reserved_tokens_never_name_a_slot() {
        assert!(decode(LISTENER).0 >= SLOT_MAX);
        assert!(decode(WAKER).0 >= SLOT_MAX);
    }
}
