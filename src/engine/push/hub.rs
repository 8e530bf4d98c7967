//! What every shard and every outside thread share for push: the shards'
//! mailboxes, the group directory, and which connection lives in each
//! slot (so that a push to a closed connection is refused at once, from
//! any thread). [`Pusher`] is the cloneable, thread-safe way in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::directory::{Directory, Route};
use super::mailbox::{Envelope, Mailbox, To};
use super::{Handle, PushError};
use crate::engine::driver::{Token, Waker};
use crate::engine::metrics::ShardMetrics;

/// The bounds push works within, from the validated settings.
#[derive(Clone, Copy, Debug)]
pub struct PushLimits {
    /// `--mailbox`: messages a shard's mailbox holds.
    pub mailbox: usize,
    /// `--mailbox-bytes`: bytes a shard's mailbox holds (also the most one
    /// service call may push).
    pub mailbox_bytes: usize,
    /// `--max-groups`: group names in the process.
    pub max_groups: usize,
    /// The largest message a push may carry: an output ring less the
    /// protocol's framing.
    pub message_max: usize,
    /// Slots per shard: `--max-conns` (no shard holds more).
    pub slots: usize,
}

/// The process-wide half of push.
pub struct Hub {
    mailboxes: Box<[Mailbox]>,
    /// Per shard and slot: the generation of the client connection open
    /// there, 0 if none.
    live: Box<[Box<[AtomicU32]>]>,
    directory: Directory,
    limits: PushLimits,
}

impl Hub {
    /// A hub for shards woken by `wakers` and counting into `metrics`
    /// (one each).
    pub fn new(wakers: &[Waker], metrics: &[Arc<ShardMetrics>], limits: PushLimits) -> Hub {
        let shards = wakers.len();
        Hub {
            mailboxes: wakers
                .iter()
                .zip(metrics)
                .map(|(waker, metrics)| {
                    let (capacity, bytes) = (limits.mailbox, limits.mailbox_bytes);
                    Mailbox::new(capacity, bytes, waker.clone(), metrics.clone())
                })
                .collect(),
            live: (0..shards)
                .map(|_| (0..limits.slots).map(|_| AtomicU32::new(0)).collect())
                .collect(),
            directory: Directory::new(shards, limits.max_groups),
            limits,
        }
    }

    /// The bounds.
    pub fn limits(&self) -> &PushLimits {
        &self.limits
    }

    /// The group directory.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Shard `shard`'s mailbox.
    pub fn mailbox(&self, shard: usize) -> &Mailbox {
        &self.mailboxes[shard]
    }

    /// Shards.
    pub fn shards(&self) -> usize {
        self.mailboxes.len()
    }

    /// Records that `token` is open on `shard` (its handle now works).
    pub fn opened(&self, shard: usize, token: Token) {
        if let Some(slot) = self.slot(shard, token) {
            slot.store(token.generation(), Ordering::Release);
        }
    }

    /// Records that `token` closed on `shard` (its handle is now gone).
    pub fn closed(&self, shard: usize, token: Token) {
        if let Some(slot) = self.slot(shard, token) {
            let _ =
                slot.compare_exchange(token.generation(), 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Whether `handle`'s connection is open (as of now: it may close
    /// before a message reaches it, which then counts as gone).
    pub fn is_open(&self, handle: Handle) -> bool {
        let token = handle.token();
        self.live.get(handle.shard()).is_some_and(|_| {
            self.slot(handle.shard(), token)
                .is_some_and(|slot| slot.load(Ordering::Acquire) == token.generation())
        })
    }

    /// Checks a push of `len` bytes to `handle`.
    pub fn check(&self, handle: Handle, len: usize) -> Result<(), PushError> {
        if len > self.limits.message_max {
            return Err(PushError::TooLarge);
        }
        if !self.is_open(handle) {
            return Err(PushError::Gone);
        }
        Ok(())
    }

    /// Mails `bytes` to `handle`'s shard for it.
    pub fn mail_one(
        &self,
        handle: Handle,
        bytes: &[u8],
        from: Option<Handle>,
    ) -> Result<(), PushError> {
        self.check(handle, bytes.len())?;
        self.mailboxes[handle.shard()].send(Envelope {
            to: To::One(handle.token()),
            bytes: bytes.into(),
            from,
        })
    }

    /// Mails a message for the members of `groups` to every shard in
    /// `route` but `except`; returns how many mailboxes refused it.
    pub fn mail_groups(
        &self,
        groups: &[&[u8]],
        bytes: &[u8],
        route: &Route,
        except: Option<usize>,
        from: Option<Handle>,
    ) -> usize {
        let mut shared = None;
        let mut refused = 0;
        for (shard, _) in route
            .shards
            .iter()
            .enumerate()
            .filter(|&(shard, &has)| has && Some(shard) != except)
        {
            let (names, bytes) = shared.get_or_insert_with(|| {
                let names: Arc<[Box<[u8]>]> = groups.iter().map(|g| Box::from(*g)).collect();
                (names, Arc::<[u8]>::from(bytes))
            });
            let envelope = Envelope {
                to: To::Groups(names.clone()),
                bytes: bytes.clone(),
                from,
            };
            if self.mailboxes[shard].send(envelope).is_err() {
                refused += 1;
            }
        }
        refused
    }

    fn slot(&self, shard: usize, token: Token) -> Option<&AtomicU32> {
        if token.is_upstream() {
            return None;
        }
        self.live.get(shard)?.get(token.0 & 0xffff_ffff)
    }
}

/// Pushes from anywhere: a cloneable, thread-safe handle on the running
/// server's shards ([`Running::pusher`](crate::engine::server::Running::pusher),
/// [`ServiceContext::pusher`](crate::engine::service::ServiceContext)).
/// Every message goes through the receiving shard's mailbox, so pushes
/// from one thread to one connection arrive in the order sent.
#[derive(Clone)]
pub struct Pusher {
    hub: Arc<Hub>,
}

impl Pusher {
    pub(crate) fn new(hub: Arc<Hub>) -> Pusher {
        Pusher { hub }
    }

    /// A pusher on one shard that no loop drains, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Pusher {
        let waker = Arc::new(crate::engine::driver::EventWaker::new().expect("eventfd"));
        let limits = PushLimits {
            mailbox: 16,
            mailbox_bytes: 1 << 16,
            max_groups: 16,
            message_max: 1 << 10,
            slots: 16,
        };
        let metrics = Arc::new(ShardMetrics::default());
        Pusher::new(Arc::new(Hub::new(&[waker], &[metrics], limits)))
    }

    /// Sends `bytes` to `handle`'s connection, framed by its protocol.
    /// `Ok` means it is on its way: were the connection to close before it
    /// arrives, it is counted as gone (`push_dropped_total{reason="gone"}`).
    pub fn push(&self, handle: Handle, bytes: &[u8]) -> Result<(), PushError> {
        self.hub.mail_one(handle, bytes, None)
    }

    /// Publishes `bytes` to every member of `group`; returns how many
    /// connections receive it (the members as of now). A shard whose
    /// mailbox is full misses it, counted on that shard
    /// (`push_dropped_total{reason="mailbox_full"}`).
    pub fn publish(&self, group: &[u8], bytes: &[u8]) -> Result<usize, PushError> {
        self.publish_to(&[group], bytes)
    }

    /// Publishes `bytes` to the members of every group in `groups` (one
    /// message per shard with members); returns how many receive it.
    pub fn publish_to(&self, groups: &[&[u8]], bytes: &[u8]) -> Result<usize, PushError> {
        if bytes.len() > self.hub.limits.message_max {
            return Err(PushError::TooLarge);
        }
        let mut route = Route::default();
        self.hub.directory.route(groups, &mut route);
        self.hub.mail_groups(groups, bytes, &route, None, None);
        Ok(route.receivers)
    }

    /// Members of `group` over all shards.
    pub fn members(&self, group: &[u8]) -> usize {
        self.hub.directory.members(group)
    }

    /// The group directory (counts, names by prefix).
    pub fn directory(&self) -> &Directory {
        &self.hub.directory
    }
}
