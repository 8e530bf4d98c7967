//! Pushes a service call makes to connections of its own shard, held until
//! the call returns (the connections they go to cannot be touched while
//! the caller's is being served), then written straight into their output
//! rings. Bounded by `--mailbox-bytes`, like a mailbox.

use std::ops::Range;

use super::Handle;
use super::directory::Route;
use crate::engine::driver::Token;

/// Who a held push is for.
#[derive(Clone, Debug)]
pub enum Target {
    /// One connection of this shard.
    One(Token),
    /// This shard's members of the groups whose names lie in the outbox's
    /// bytes at these ranges.
    Groups(Range<usize>),
}

/// One held push.
#[derive(Clone, Debug)]
pub struct Held {
    /// Its receivers.
    pub target: Target,
    /// Where its bytes lie in the outbox.
    pub message: Range<usize>,
    /// The connection whose call made it.
    pub from: Option<Handle>,
}

/// The pushes of one call.
#[derive(Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    names: Vec<Range<usize>>,
    held: Vec<Held>,
    bytes_max: usize,
    /// Scratch for routing a publish (no allocation per publish).
    pub route: Route,
}

impl Outbox {
    /// An empty outbox holding at most `bytes_max` bytes.
    pub fn new(bytes_max: usize) -> Outbox {
        Outbox {
            bytes_max,
            ..Outbox::default()
        }
    }

    /// Whether `len` more bytes fit.
    pub fn fits(&self, len: usize) -> bool {
        self.bytes.len() + len <= self.bytes_max
    }

    /// Holds `message` for `to`. The caller checked [`Outbox::fits`].
    pub fn one(&mut self, to: Token, message: &[u8], from: Option<Handle>) {
        let message = self.append(message);
        self.held.push(Held {
            target: Target::One(to),
            message,
            from,
        });
    }

    /// Holds `message` for this shard's members of `groups`. The caller
    /// checked [`Outbox::fits`] for the message and the names.
    pub fn groups(&mut self, groups: &[&[u8]], message: &[u8], from: Option<Handle>) {
        let first = self.names.len();
        for name in groups {
            let range = self.append(name);
            self.names.push(range);
        }
        let message = self.append(message);
        self.held.push(Held {
            target: Target::Groups(first..self.names.len()),
            message,
            from,
        });
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes the held pushes (give the list back with
    /// [`Outbox::restore`] once applied, to keep its allocation).
    pub fn take(&mut self) -> Vec<Held> {
        std::mem::take(&mut self.held)
    }

    /// The bytes at `range`.
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.bytes[range]
    }

    /// The group names of a [`Target::Groups`].
    pub fn names(&self, range: Range<usize>) -> impl Iterator<Item = &[u8]> {
        self.names[range].iter().map(|r| &self.bytes[r.clone()])
    }

    /// Empties the outbox after its pushes were applied; `held` is the
    /// list [`Outbox::take`] gave out.
    pub fn restore(&mut self, mut held: Vec<Held>) {
        held.clear();
        self.held = held;
        self.bytes.clear();
        self.names.clear();
    }

    fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }
}
