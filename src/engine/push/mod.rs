//! Server push: the engine speaks first. A connection is named by a
//! [`Handle`] that a service may keep anywhere; a message goes to one
//! handle, or to every member of a named group, from the service on any
//! shard or from any thread through a [`Pusher`].
//!
//! Where a pushed message travels (ARCHITECTURE.md draws it):
//!
//! - from a service call to a connection on the same shard: the call's
//!   [`Outbox`](outbox::Outbox), applied when the call returns, straight
//!   into the connection's output ring;
//! - to another shard, or from a thread outside the engine: that shard's
//!   bounded [`Mailbox`](mailbox::Mailbox) (a lock-free queue), one wake-up
//!   per batch; the shard drains it at the top of its next turn;
//! - to a group: the [`Directory`](directory::Directory) (process-wide
//!   member counts per shard) says which shards have members and how many
//!   receive it; each such shard gets one message, and delivers it to its
//!   own members ([`Groups`](groups::Groups)).
//!
//! A connection whose output ring is full queues pushes behind it in rings
//! of its own, up to `--slow-consumer-bytes`; past that the
//! `--slow-consumer` policy closes it or drops the message (both counted).

pub mod directory;
pub mod groups;
pub mod hub;
pub mod mailbox;
pub mod outbox;

pub use self::hub::{Hub, Pusher};

use crate::engine::driver::Token;

/// Names one client connection anywhere in the process: its shard, its
/// slot in that shard's table and the slot's generation. `Copy`, `Send`,
/// hashable: keep it anywhere. A handle whose connection has closed names
/// nothing (its slot's generation moved on): a push to it reports
/// [`PushError::Gone`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle {
    shard: u32,
    token: Token,
}

impl Handle {
    pub(crate) fn new(shard: usize, token: Token) -> Handle {
        Handle {
            shard: shard as u32,
            token,
        }
    }

    /// The shard the connection lives on.
    pub fn shard(self) -> usize {
        self.shard as usize
    }

    pub(crate) fn token(self) -> Token {
        self.token
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = self.token.0 & 0xffff_ffff;
        write!(f, "{}:{}:{}", self.shard, slot, self.token.generation())
    }
}

/// A pushed message as the receiving connection's service sees it
/// ([`Service::deliver`](crate::engine::service::Service::deliver)).
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The group it was published to, or `None` for a push to one handle.
    pub group: Option<&'a [u8]>,
    /// The bytes pushed (framed by the protocol when written).
    pub bytes: &'a [u8],
    /// The connection whose service call sent it, if one did (a chat room
    /// skips its own lines with this).
    pub from: Option<Handle>,
}

/// Why a push was refused. A refused push wrote nothing anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The handle's connection has closed (or never was).
    Gone,
    /// The receiving shard's mailbox is full (`--mailbox`,
    /// `--mailbox-bytes`), or this call already pushed that many bytes.
    Full,
    /// The message can never fit the connection's output ring
    /// (`--buffer` less the protocol's framing).
    TooLarge,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PushError::Gone => "connection gone",
            PushError::Full => "mailbox full",
            PushError::TooLarge => "message larger than an output ring",
        })
    }
}

impl std::error::Error for PushError {}

/// Why a connection could not join a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinError {
    /// The process already has `--max-groups` groups.
    TooManyGroups,
    /// The connection is already in `--max-memberships` groups.
    TooManyMemberships,
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinError::TooManyGroups => "too many groups (--max-groups)",
            JoinError::TooManyMemberships => {
                "too many groups for one connection (--max-memberships)"
            }
        })
    }
}

impl std::error::Error for JoinError {}
