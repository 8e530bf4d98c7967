//! What a service reaches of the engine while it serves one connection
//! (`open`, `call`): the connection's [`Handle`], pushes to any
//! connection, its groups, and publishing.

use crate::engine::push::directory::Directory;
use crate::engine::push::groups::Groups;
use crate::engine::push::outbox::Outbox;
use crate::engine::push::{Handle, Hub, JoinError, PushError, Pusher};

/// The engine, as a service call sees it.
pub struct Context<'a> {
    this: Handle,
    hub: &'a Hub,
    pusher: &'a Pusher,
    groups: &'a mut Groups,
    outbox: &'a mut Outbox,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        this: Handle,
        hub: &'a Hub,
        pusher: &'a Pusher,
        groups: &'a mut Groups,
        outbox: &'a mut Outbox,
    ) -> Context<'a> {
        Context {
            this,
            hub,
            pusher,
            groups,
            outbox,
        }
    }

    /// The connection being served.
    pub fn handle(&self) -> Handle {
        self.this
    }

    /// Sends `bytes` to `to`, framed by its protocol. To a connection of
    /// this shard it goes into its output ring as soon as this call
    /// returns (after this call's reply, when `to` is this connection);
    /// to another shard's, through that shard's mailbox. Pushes from one
    /// connection's calls to one connection arrive in the order made.
    pub fn push(&mut self, to: Handle, bytes: &[u8]) -> Result<(), PushError> {
        if to.shard() != self.this.shard() {
            return self.hub.mail_one(to, bytes, Some(self.this));
        }
        self.hub.check(to, bytes.len())?;
        if !self.outbox.fits(bytes.len()) {
            return Err(PushError::Full);
        }
        self.outbox.one(to.token(), bytes, Some(self.this));
        Ok(())
    }

    /// Puts this connection in `group`; true if it was not in it yet. It
    /// leaves every group when it closes.
    pub fn join(&mut self, group: &[u8]) -> Result<bool, JoinError> {
        self.groups
            .join(self.hub.directory(), self.this.token(), group)
    }

    /// Takes this connection out of `group`; true if it was in it.
    pub fn leave(&mut self, group: &[u8]) -> bool {
        self.groups
            .leave(self.hub.directory(), self.this.token(), group)
    }

    /// The groups this connection is in, in the order joined.
    pub fn groups(&self) -> impl Iterator<Item = &[u8]> {
        self.groups.of(self.this.token())
    }

    /// How many groups this connection is in.
    pub fn group_count(&self) -> usize {
        self.groups.count(self.this.token())
    }

    /// Publishes `bytes` to every member of `group`, this connection
    /// included if it is one ([`Message::from`](crate::engine::push::Message)
    /// tells it); returns how many receive it.
    pub fn publish(&mut self, group: &[u8], bytes: &[u8]) -> Result<usize, PushError> {
        self.publish_to(&[group], bytes)
    }

    /// Publishes `bytes` to the members of each group in `groups`, one
    /// message per shard with members (a member of two of them gets it
    /// twice); returns how many receive it, as of now. A shard whose
    /// mailbox is full misses it (counted).
    pub fn publish_to(&mut self, groups: &[&[u8]], bytes: &[u8]) -> Result<usize, PushError> {
        if bytes.len() > self.hub.limits().message_max {
            return Err(PushError::TooLarge);
        }
        let names: usize = groups.iter().map(|g| g.len()).sum();
        if !self.outbox.fits(bytes.len() + names) {
            return Err(PushError::Full);
        }
        let mut route = std::mem::take(&mut self.outbox.route);
        self.hub.directory().route(groups, &mut route);
        let shard = self.this.shard();
        let from = Some(self.this);
        self.hub
            .mail_groups(groups, bytes, &route, Some(shard), from);
        if route.shards[shard] {
            self.outbox.groups(groups, bytes, from);
        }
        let receivers = route.receivers;
        self.outbox.route = route;
        Ok(receivers)
    }

    /// The process-wide group directory (member counts, names).
    pub fn directory(&self) -> &Directory {
        self.hub.directory()
    }

    /// A cloneable, thread-safe pusher, for work that outlives the call.
    pub fn pusher(&self) -> &Pusher {
        self.pusher
    }
}
