//! The replies clients await: one [`Pending`] per request whose reply is
//! not written yet, in a per-shard table, threaded per client into a FIFO
//! ([`PendingList`]) in request order. The lists live here, indexed by the
//! client's slot, rather than in each `Conn`: a shard without upstreams
//! pays nothing for them, and `Conn` stays small.
//!
//! A request gets an entry when its reply cannot be written at once: it
//! made upstream calls, or an earlier request of the same client is still
//! awaited (its reply, written at once, then waits in the entry's buffer).
//! The head of a client's list is written to the client as soon as it is
//! complete; a reply that completes out of order stays in its entry until
//! the ones before it are written.
//!
//! Buffers (reply bytes, outcome lists) come from free lists that keep
//! their capacity, so the steady state allocates nothing: a request whose
//! single reply arrives in order and finds room in the client's ring uses
//! no buffer at all; the others borrow one and give it back.
//!
//! Two bounds hold the bytes (the capacity of the byte buffers):
//! - an entry holds at most `entry_max` (`--buffer`, the client's ring: a
//!   reply larger could not be written anyway), whatever number of calls
//!   it made; a reply that would take it past that is not stored and the
//!   call fails with [`CallError::TooLarge`]. So one client holds at most
//!   `--max-pending` × `--buffer`;
//! - the shard's entries and idle buffers together hold at most `held_max`
//!   (`--max-pending-bytes`). Idle buffers are freed first; past that, a
//!   reply that would need more is not stored ([`CallError::NoMemory`]),
//!   a split command's plan is refused, and a reply made behind awaited
//!   ones is not taken ([`Pendings::buffer`] says no; the engine stops
//!   reading that client until its earlier replies are written).
//!
//! The outcome lists (12 bytes per call) are not counted: they are
//! bounded by the entries (`--max-pending` per client) times the calls of
//! one (at most one per upstream).

use crate::engine::driver::Token;

use crate::engine::conn::Table;
use crate::engine::service::{Answer, CallError, Outcome};

/// One client's awaited replies, oldest first: a list threaded through the
/// pending table. Tokens are stored as plain integers, [`PendingList::NONE`]
/// for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingList {
    /// The oldest entry (the next reply to write).
    pub head: u64,
    /// The newest.
    pub tail: u64,
    /// How many. Invariant: 0 exactly when `head` (and `tail`) is `NONE`.
    pub len: u32,
}

impl PendingList {
    /// No entry (never a pending token: the listener's reserved token).
    pub const NONE: u64 = u64::MAX;

    /// An empty list.
    pub const EMPTY: PendingList = PendingList {
        head: PendingList::NONE,
        tail: PendingList::NONE,
        len: 0,
    };

    /// No reply awaited.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The smallest buffer handed out: replies are often a few bytes (`+OK`),
/// and a buffer that first held one would otherwise grow (allocate) when it
/// is reused for a larger reply; most replies fit this.
pub const BUFFER_MIN: usize = 512;

/// One awaited reply.
#[derive(Debug)]
pub struct Pending {
    /// The client connection it is for.
    pub client: Token,
    /// The next entry of the same client, or [`PendingList::NONE`].
    next: u64,
    /// Upstream calls made for the request.
    calls: u32,
    /// Calls with no outcome yet. Invariant: `left <= calls`.
    left: u32,
    /// The whole reply is in `store` (written at once, behind earlier
    /// ones); no calls were made.
    ready: bool,
    /// `store[..kept]` is what the service kept for its answer.
    kept: usize,
    /// Kept bytes, then upstream replies as they arrive (or the ready
    /// reply). `None` until needed.
    store: Option<Vec<u8>>,
    /// Per call: its outcome. `None` until one is stored.
    outcomes: Option<Vec<Outcome>>,
}

impl Pending {
    /// Every call has its outcome, or the reply was ready from the start.
    pub fn complete(&self) -> bool {
        self.ready || (self.calls > 0 && self.left == 0)
    }

    /// Nothing stored yet: a reply for its one call can go straight to the
    /// client.
    pub fn nothing_stored(&self) -> bool {
        self.calls == 1 && self.outcomes.is_none() && self.kept == 0
    }

    /// The ready reply (unframed), if the entry holds one.
    pub fn ready_reply(&self) -> Option<&[u8]> {
        self.ready
            .then(|| self.store.as_deref().unwrap_or_default())
    }

    /// The outcomes of a complete entry that made calls.
    pub fn answer(&self) -> Answer<'_> {
        debug_assert!(self.calls > 0 && self.left == 0);
        let store = self.store.as_deref().unwrap_or_default();
        let list = self.outcomes.as_deref().unwrap_or_default();
        debug_assert_eq!(list.len(), self.calls as usize);
        Answer::stored(store, self.kept, list)
    }
}

/// A shard's awaited replies and the buffers they borrow.
pub struct Pendings {
    table: Table<Pending>,
    /// Per client slot: its list. Grows to the highest slot seen.
    clients: Vec<PendingList>,
    /// Idle byte buffers. Invariant: each is empty, with capacity at most
    /// `entry_max`; at most `free_max` are kept.
    buffers: Vec<Vec<u8>>,
    /// Idle outcome lists (empty), at most `free_max`.
    lists: Vec<Vec<Outcome>>,
    free_max: usize,
    /// The most bytes one entry may hold.
    entry_max: usize,
    /// The most bytes all byte buffers may hold together.
    held_max: usize,
    /// The capacity of every byte buffer this table owns (in entries,
    /// idle, or lent out by [`Pendings::buffer`]). Invariant: at most
    /// `held_max`.
    held: usize,
    /// Outcomes not stored and split plans refused for `held_max`.
    refused: u64,
    /// Times a client's reply waited for `held_max`.
    paused: u64,
}

impl Pendings {
    /// An empty table whose entries hold at most `entry_max` bytes each
    /// and whose byte buffers hold at most `held_max` together; at most
    /// `free_max` idle buffers of each kind are kept.
    pub fn new(entry_max: usize, held_max: usize, free_max: usize) -> Pendings {
        debug_assert!(held_max >= entry_max, "one whole entry must fit");
        Pendings {
            table: Table::with_capacity(1024),
            clients: Vec::new(),
            buffers: Vec::with_capacity(free_max),
            lists: Vec::with_capacity(free_max),
            free_max,
            entry_max,
            held_max,
            held: 0,
            refused: 0,
            paused: 0,
        }
    }

    /// Bytes the byte buffers hold (their capacity), idle ones included.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Outcomes not stored and split plans refused because the shard's
    /// bound was reached (each failed its request with
    /// [`CallError::NoMemory`]).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Times a client's reply waited because the shard's bound was reached
    /// (see [`Pendings::note_paused`]).
    pub fn paused(&self) -> u64 {
        self.paused
    }

    /// Counts a client left waiting because [`Pendings::buffer`] said no.
    pub fn note_paused(&mut self) {
        self.paused += 1;
    }

    /// Entries in the table (every client's together).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    #[cfg(test)]
    /// No entry.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// A new entry for `client`, not yet in its list (see
    /// [`Pendings::append`]).
    pub fn open(&mut self, client: Token) -> Token {
        self.table.insert(|_| Pending {
            client,
            next: PendingList::NONE,
            calls: 0,
            left: 0,
            ready: false,
            kept: 0,
            store: None,
            outcomes: None,
        })
    }

    /// A new entry for `client` holding the reply already written into
    /// `buffer` (taken with [`Pendings::buffer`]).
    pub fn open_ready(&mut self, client: Token, buffer: Vec<u8>) -> Token {
        let token = self.open(client);
        let entry = self.table.get_mut(token).expect("just opened");
        entry.ready = true;
        entry.store = Some(buffer);
        token
    }

    /// How many replies `client` awaits.
    pub fn awaited(&self, client: Token) -> usize {
        self.clients
            .get(slot(client))
            .map_or(0, |list| list.len as usize)
    }

    /// Links `token` at the end of its client's list.
    pub fn append(&mut self, token: Token) {
        let client = self
            .table
            .get(token)
            .expect("appending a live entry")
            .client;
        let index = slot(client);
        if self.clients.len() <= index {
            self.clients.resize(index + 1, PendingList::EMPTY);
        }
        let list = self.clients[index];
        if list.is_empty() {
            self.clients[index].head = token.0 as u64;
        } else {
            let tail = self
                .table
                .get_mut(Token(list.tail as usize))
                .expect("a list's tail is live");
            debug_assert_eq!(tail.next, PendingList::NONE);
            tail.next = token.0 as u64;
        }
        let list = &mut self.clients[index];
        list.tail = token.0 as u64;
        list.len += 1;
    }

    /// The entry `token` names, if still live (its client may have gone).
    pub fn get(&self, token: Token) -> Option<&Pending> {
        self.table.get(token)
    }

    /// The oldest entry of `client`.
    pub fn head(&self, client: Token) -> Option<Token> {
        let list = self.clients.get(slot(client))?;
        (!list.is_empty()).then_some(Token(list.head as usize))
    }

    /// Unlinks and frees the oldest entry of `client` (its buffers go
    /// back).
    pub fn pop(&mut self, client: Token) {
        let Some(head) = self.head(client) else {
            return;
        };
        let entry = self.table.remove(head).expect("a list's head is live");
        debug_assert_eq!(entry.client, client);
        let list = &mut self.clients[slot(client)];
        list.len -= 1;
        if entry.next == PendingList::NONE {
            debug_assert_eq!(list.len, 0);
            *list = PendingList::EMPTY;
        } else {
            list.head = entry.next;
        }
        self.recycle(entry);
    }

    /// Frees every entry of `client` (it closed). Replies still owed for
    /// them find no entry when they come and are dropped.
    pub fn clear(&mut self, client: Token) {
        while self.head(client).is_some() {
            self.pop(client);
        }
    }

    /// Counts one more call for `token`; returns its index.
    pub fn add_call(&mut self, token: Token) -> usize {
        let entry = self.table.get_mut(token).expect("calls on a live entry");
        entry.calls += 1;
        entry.left += 1;
        entry.calls as usize - 1
    }

    /// Frees an entry that is in no client's list (its request was given
    /// up while it was served: a plan refused, a service that failed).
    pub fn discard(&mut self, token: Token) {
        if let Some(entry) = self.table.remove(token) {
            self.recycle(entry);
        }
    }

    /// Keeps `bytes` at the start of `token`'s store (before any reply can
    /// have arrived: keeping happens within the service call), if the
    /// entry's and the shard's bounds allow: else `TooLarge` or
    /// `NoMemory`, and nothing is kept.
    pub fn keep(&mut self, token: Token, bytes: &[u8]) -> Result<(), CallError> {
        if bytes.len() > self.entry_max {
            return Err(CallError::TooLarge);
        }
        let mut store = self.take_store(token);
        debug_assert_eq!(store.len(), self.table.get(token).map_or(0, |e| e.kept));
        store.clear();
        if !self.grow(&mut store, bytes.len()) {
            self.give_buffer(store);
            self.refused += 1;
            return Err(CallError::NoMemory);
        }
        store.extend_from_slice(bytes);
        let entry = self.table.get_mut(token).expect("keep on a live entry");
        entry.kept = bytes.len();
        entry.store = Some(store);
        Ok(())
    }

    /// Stores the outcome of call `call` of `token`: the reply `bytes`, or
    /// `error`. Returns the client and whether the entry is now complete,
    /// or `None` if the entry is gone (the client closed).
    pub fn record(
        &mut self,
        token: Token,
        call: usize,
        outcome: Result<&[u8], CallError>,
    ) -> Option<(Token, bool)> {
        let calls = self.table.get(token)?.calls as usize;
        let mut list = self.take_list(token);
        if list.len() < calls {
            list.resize(calls, Outcome::Waiting);
        }
        debug_assert_eq!(list[call], Outcome::Waiting, "two outcomes for one call");
        list[call] = match outcome.and_then(|bytes| self.store(token, bytes)) {
            Ok((start, len)) => Outcome::Reply { start, len },
            Err(error) => Outcome::Failed(error),
        };
        let entry = self.table.get_mut(token).expect("live");
        entry.outcomes = Some(list);
        entry.left -= 1;
        Some((entry.client, entry.left == 0))
    }

    /// Marks call `call` of `token`, the only one, answered without
    /// storing its reply (it went straight to the client). Returns the
    /// client, or `None` if the entry is gone.
    pub fn answered(&mut self, token: Token) -> Option<Token> {
        let entry = self.table.get_mut(token)?;
        debug_assert!(entry.nothing_stored() && entry.left == 1);
        entry.left = 0;
        Some(entry.client)
    }

    /// An empty buffer with room for `capacity` bytes (at least
    /// [`BUFFER_MIN`]): a kept one if any. `None` when the shard's bound
    /// leaves no room for it (or it is larger than an entry may hold).
    /// Give it back with [`Pendings::give_buffer`] or
    /// [`Pendings::open_ready`], and write no more than `capacity` into it:
    /// its capacity is what is counted.
    pub fn buffer(&mut self, capacity: usize) -> Option<Vec<u8>> {
        if capacity > self.entry_max {
            return None;
        }
        let mut buffer = self.buffers.pop().unwrap_or_default();
        if self.grow(&mut buffer, capacity) {
            Some(buffer)
        } else {
            self.give_buffer(buffer);
            None
        }
    }

    /// Takes a buffer back (see [`Pendings::buffer`]).
    pub fn give_buffer(&mut self, mut buffer: Vec<u8>) {
        if self.buffers.len() < self.free_max && buffer.capacity() <= self.entry_max {
            buffer.clear();
            self.buffers.push(buffer);
        } else {
            self.held -= buffer.capacity();
        }
    }

    /// Appends a reply to `token`'s store: where it starts and its
    /// length, or why it was not stored.
    fn store(&mut self, token: Token, bytes: &[u8]) -> Result<(u32, u32), CallError> {
        let stored = self
            .table
            .get(token)
            .map_or(0, |entry| entry.store.as_ref().map_or(0, Vec::len));
        if stored + bytes.len() > self.entry_max {
            // The answer could not be written whole to the client anyway.
            return Err(CallError::TooLarge);
        }
        let mut store = self.take_store(token);
        let stored = self.grow(&mut store, bytes.len());
        let start = store.len();
        if stored {
            store.extend_from_slice(bytes);
        }
        let entry = self.table.get_mut(token).expect("live");
        entry.store = Some(store);
        if !stored {
            self.refused += 1;
            return Err(CallError::NoMemory);
        }
        Ok((start as u32, bytes.len() as u32))
    }

    /// Makes room in `buffer` for `more` bytes past its length, without
    /// passing the shard's bound (idle buffers are freed for it first);
    /// false if it cannot. The capacity grows to exactly what is needed,
    /// so an entry's buffer never holds more than the entry may.
    fn grow(&mut self, buffer: &mut Vec<u8>, more: usize) -> bool {
        let need = (buffer.len() + more).max(BUFFER_MIN.min(self.entry_max));
        let Some(extra) = need
            .checked_sub(buffer.capacity())
            .filter(|&extra| extra > 0)
        else {
            return true;
        };
        while self.held + extra > self.held_max {
            let Some(idle) = self.buffers.pop() else {
                return false;
            };
            self.held -= idle.capacity();
        }
        let before = buffer.capacity();
        buffer.reserve_exact(need - buffer.len());
        self.held += buffer.capacity() - before;
        true
    }

    fn take_store(&mut self, token: Token) -> Vec<u8> {
        let taken = self.table.get_mut(token).and_then(|e| e.store.take());
        taken.unwrap_or_else(|| self.buffers.pop().unwrap_or_default())
    }

    fn take_list(&mut self, token: Token) -> Vec<Outcome> {
        let taken = self.table.get_mut(token).and_then(|e| e.outcomes.take());
        taken.unwrap_or_else(|| {
            let mut list = self.lists.pop().unwrap_or_default();
            // Room for the calls of most split commands (one per upstream
            // touched), so a reused list rarely grows.
            list.reserve(16);
            list
        })
    }

    fn recycle(&mut self, entry: Pending) {
        if let Some(store) = entry.store {
            self.give_buffer(store);
        }
        if let Some(mut list) = entry.outcomes {
            if self.lists.len() < self.free_max && list.capacity() <= self.entry_max {
                list.clear();
                self.lists.push(list);
            }
        }
    }
}

/// A client token's slot: its list's index.
fn slot(client: Token) -> usize {
    client.0 & 0x7fff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_check_token_is_never_an_awaited_reply() {
        let mut pendings = Pendings::new(64, 1 << 20, 4);
        for client in 0..100 {
            let token = pendings.open(Token(client));
            assert_ne!(token, super::super::dispatch::HEALTH_CHECK);
        }
        assert!(pendings.get(super::super::dispatch::HEALTH_CHECK).is_none());
    }

    fn client() -> Token {
        Token(7)
    }

    #[test]
    fn entries_leave_in_request_order() {
        let mut pendings = Pendings::new(1 << 16, 1 << 20, 4);
        let first = pendings.open(client());
        pendings.append(first);
        pendings.add_call(first);
        let mut buffer = pendings.buffer(8).unwrap();
        buffer.extend_from_slice(b"+PONG\r\n");
        let second = pendings.open_ready(client(), buffer);
        pendings.append(second);
        assert_eq!(pendings.awaited(client()), 2);
        // The second is complete, the first is not: the head waits.
        assert!(pendings.get(second).unwrap().complete());
        assert!(!pendings.get(first).unwrap().complete());
        assert_eq!(pendings.head(client()), Some(first));
        assert_eq!(
            pendings.record(first, 0, Ok(b"$1\r\na\r\n")),
            Some((client(), true))
        );
        let head = pendings.get(first).unwrap();
        assert_eq!(head.answer().outcome(0), Ok(&b"$1\r\na\r\n"[..]));
        pendings.pop(client());
        assert_eq!(pendings.head(client()), Some(second));
        assert_eq!(
            pendings.get(second).unwrap().ready_reply(),
            Some(&b"+PONG\r\n"[..])
        );
        pendings.pop(client());
        assert_eq!(pendings.head(client()), None);
        assert_eq!(pendings.awaited(client()), 0);
        assert!(pendings.is_empty());
    }

    #[test]
    fn several_calls_complete_in_any_order_with_kept_bytes() {
        let mut pendings = Pendings::new(1 << 16, 1 << 20, 4);
        let entry = pendings.open(client());
        pendings.append(entry);
        for _ in 0..3 {
            pendings.add_call(entry);
        }
        pendings.keep(entry, b"MGET a b c").unwrap();
        assert_eq!(
            pendings.record(entry, 2, Err(CallError::Timeout)),
            Some((client(), false))
        );
        assert_eq!(
            pendings.record(entry, 0, Ok(b":1\r\n")),
            Some((client(), false))
        );
        assert_eq!(
            pendings.record(entry, 1, Ok(b":2\r\n")),
            Some((client(), true))
        );
        let answer = pendings.get(entry).unwrap().answer();
        assert_eq!(answer.calls(), 3);
        assert_eq!(answer.kept(), b"MGET a b c");
        assert_eq!(answer.outcome(0), Ok(&b":1\r\n"[..]));
        assert_eq!(answer.outcome(1), Ok(&b":2\r\n"[..]));
        assert_eq!(answer.outcome(2), Err(CallError::Timeout));
        assert_eq!(answer.replies_len(), 8);
    }

    #[test]
    fn a_closed_client_leaves_stale_tokens_behind() {
        let mut pendings = Pendings::new(1 << 16, 1 << 20, 4);
        let entry = pendings.open(client());
        pendings.append(entry);
        pendings.add_call(entry);
        pendings.clear(client());
        assert_eq!(pendings.awaited(client()), 0);
        // The reply that comes later finds nothing to fill.
        assert_eq!(pendings.record(entry, 0, Ok(b"+OK\r\n")), None);
        assert_eq!(pendings.answered(entry), None);
    }

    #[test]
    fn buffers_are_reused() {
        let mut pendings = Pendings::new(1024, 1 << 20, 1);
        let mut buffer = pendings.buffer(32).unwrap();
        let pointer = buffer.as_ptr();
        assert!(buffer.capacity() >= BUFFER_MIN);
        buffer.extend_from_slice(b"x");
        let entry = pendings.open_ready(client(), buffer);
        pendings.append(entry);
        pendings.pop(client());
        let again = pendings.buffer(16).unwrap();
        assert_eq!(again.as_ptr(), pointer);
        assert!(again.is_empty());
        let capacity = again.capacity();
        pendings.give_buffer(again);
        assert_eq!(pendings.buffer(1).unwrap().capacity(), capacity);
        assert!(pendings.buffer(1025).is_none(), "larger than an entry");
    }

    /// An entry with `calls` calls, in `client`'s list.
    fn entry_with_calls(pendings: &mut Pendings, client: Token, calls: usize) -> Token {
        let entry = pendings.open(client);
        pendings.append(entry);
        for _ in 0..calls {
            pendings.add_call(entry);
        }
        entry
    }

    #[test]
    fn an_entry_holds_at_most_entry_max_whatever_its_calls() {
        let mut pendings = Pendings::new(1024, 1 << 20, 4);
        let entry = entry_with_calls(&mut pendings, client(), 4);
        pendings.keep(entry, &[7; 24]).unwrap();
        let reply = [b'x'; 400];
        assert_eq!(
            pendings.record(entry, 0, Ok(&reply)),
            Some((client(), false))
        );
        assert_eq!(
            pendings.record(entry, 1, Ok(&reply)),
            Some((client(), false))
        );
        // 24 + 400 + 400 + 400 > 1024: the third is not stored.
        assert_eq!(
            pendings.record(entry, 2, Ok(&reply)),
            Some((client(), false))
        );
        assert_eq!(
            pendings.record(entry, 3, Ok(b":1\r\n")),
            Some((client(), true))
        );
        let answer = pendings.get(entry).unwrap().answer();
        assert_eq!(answer.outcome(1), Ok(&reply[..]));
        assert_eq!(answer.outcome(2), Err(CallError::TooLarge));
        assert_eq!(answer.outcome(3), Ok(&b":1\r\n"[..]));
        assert!(pendings.held() <= 1024, "{} bytes held", pendings.held());
        assert_eq!(pendings.refused(), 0, "the entry's bound, not the shard's");
        assert_eq!(pendings.keep(entry, &[0; 1025]), Err(CallError::TooLarge));
    }

    #[test]
    fn the_shard_holds_at_most_held_max() {
        let mut pendings = Pendings::new(1024, 2048, 4);
        let reply = [b'x'; 1000];
        let mut stored = 0;
        let mut entries = Vec::new();
        for slot in 0..4 {
            let client = Token(slot);
            let entry = entry_with_calls(&mut pendings, client, 1);
            entries.push(entry);
            pendings.record(entry, 0, Ok(&reply)).unwrap();
            match pendings.get(entry).unwrap().answer().outcome(0) {
                Ok(bytes) => {
                    assert_eq!(bytes, reply);
                    stored += 1;
                }
                Err(error) => assert_eq!(error, CallError::NoMemory),
            }
            assert!(pendings.held() <= 2048, "{} bytes held", pendings.held());
        }
        assert_eq!(stored, 2);
        assert_eq!(pendings.refused(), 2);
        assert!(pendings.buffer(100).is_none(), "no room for a ready reply");
        // A plan kept before any call: the entry is not in a list yet.
        let entry = pendings.open(Token(9));
        assert_eq!(pendings.keep(entry, b"plan"), Err(CallError::NoMemory));
        pendings.discard(entry);
        // Entries written and gone give their room back.
        pendings.pop(Token(0));
        let ready = pendings.buffer(100).expect("room again");
        pendings.give_buffer(ready);
        for slot in 0..4 {
            pendings.clear(Token(slot));
        }
        assert!(pendings.is_empty());
        // Only idle buffers are left, and they make room when needed.
        let whole = pendings.buffer(1024).unwrap();
        let second = pendings.buffer(1024).unwrap();
        assert!(pendings.held() <= 2048);
        pendings.give_buffer(whole);
        pendings.give_buffer(second);
    }
}
