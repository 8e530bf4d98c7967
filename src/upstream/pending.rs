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

use mio::Token;

use crate::conn::Table;
use crate::service::{Answer, CallError, Outcome};

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

    /// Calls made.
    pub fn calls(&self) -> usize {
        self.calls as usize
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
    /// `buffer_max`; at most `free_max` are kept.
    buffers: Vec<Vec<u8>>,
    /// Idle outcome lists (empty), at most `free_max`.
    lists: Vec<Vec<Outcome>>,
    free_max: usize,
    buffer_max: usize,
}

impl Pendings {
    /// An empty table. Buffers larger than `buffer_max` bytes are freed
    /// rather than kept; at most `free_max` idle ones of each kind are
    /// kept.
    pub fn new(buffer_max: usize, free_max: usize) -> Pendings {
        Pendings {
            table: Table::with_capacity(1024),
            clients: Vec::new(),
            buffers: Vec::with_capacity(free_max),
            lists: Vec::with_capacity(free_max),
            free_max,
            buffer_max,
        }
    }

    /// Entries in the table (every client's together).
    pub fn len(&self) -> usize {
        self.table.len()
    }

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

    /// Keeps `bytes` at the start of `token`'s store (before any reply can
    /// have arrived: keeping happens within the service call).
    pub fn keep(&mut self, token: Token, bytes: &[u8]) {
        let mut store = self.take_store(token);
        debug_assert_eq!(store.len(), self.table.get(token).map_or(0, |e| e.kept));
        store.clear();
        store.extend_from_slice(bytes);
        let entry = self.table.get_mut(token).expect("keep on a live entry");
        entry.kept = bytes.len();
        entry.store = Some(store);
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
        list[call] = match outcome {
            Ok(bytes) => {
                let mut store = self.take_store(token);
                let start = store.len();
                store.extend_from_slice(bytes);
                self.table.get_mut(token).expect("live").store = Some(store);
                Outcome::Reply {
                    start: start as u32,
                    len: bytes.len() as u32,
                }
            }
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
    /// [`BUFFER_MIN`]): a kept one if any.
    pub fn buffer(&mut self, capacity: usize) -> Vec<u8> {
        let mut buffer = self.buffers.pop().unwrap_or_default();
        buffer.reserve(capacity.max(BUFFER_MIN));
        buffer
    }

    /// Takes a buffer back (see [`Pendings::buffer`]).
    pub fn give_buffer(&mut self, mut buffer: Vec<u8>) {
        if self.buffers.len() < self.free_max && buffer.capacity() <= self.buffer_max {
            buffer.clear();
            self.buffers.push(buffer);
        }
    }

    fn take_store(&mut self, token: Token) -> Vec<u8> {
        let taken = self.table.get_mut(token).and_then(|e| e.store.take());
        taken.unwrap_or_else(|| self.buffer(0))
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
            if self.lists.len() < self.free_max && list.capacity() <= self.buffer_max {
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

    fn client() -> Token {
        Token(7)
    }

    #[test]
    fn entries_leave_in_request_order() {
        let mut pendings = Pendings::new(1 << 16, 4);
        let first = pendings.open(client());
        pendings.append(first);
        pendings.add_call(first);
        let mut buffer = pendings.buffer(8);
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
        let mut pendings = Pendings::new(1 << 16, 4);
        let entry = pendings.open(client());
        pendings.append(entry);
        for _ in 0..3 {
            pendings.add_call(entry);
        }
        pendings.keep(entry, b"MGET a b c");
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
        let mut pendings = Pendings::new(1 << 16, 4);
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
        let mut pendings = Pendings::new(1024, 1);
        let mut buffer = pendings.buffer(32);
        let pointer = buffer.as_ptr();
        assert!(buffer.capacity() >= BUFFER_MIN);
        buffer.extend_from_slice(b"x");
        let entry = pendings.open_ready(client(), buffer);
        pendings.append(entry);
        pendings.pop(client());
        let again = pendings.buffer(16);
        assert_eq!(again.as_ptr(), pointer);
        assert!(again.is_empty());
        // Too large to keep.
        pendings.give_buffer(Vec::with_capacity(2048));
        let capacity = again.capacity();
        pendings.give_buffer(again);
        assert_eq!(pendings.buffer(1).capacity(), capacity);
    }
}
