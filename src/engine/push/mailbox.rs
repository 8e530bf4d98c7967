//! A shard's mailbox: what other shards and other threads send it, in a
//! bounded lock-free queue (`crossbeam_queue::ArrayQueue`: one atomic
//! claim per message, no lock). A sender wakes the shard only when no
//! wake-up is outstanding, so a batch of messages costs one eventfd write;
//! the shard clears the flag before it drains. Bounded twice: by messages
//! (`--mailbox`) and by the bytes they hold (`--mailbox-bytes`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;

use super::{Handle, PushError};
use crate::engine::driver::{Token, Waker};
use crate::engine::metrics::ShardMetrics;

/// Who a mailed message is for.
pub enum To {
    /// One connection of the receiving shard.
    One(Token),
    /// The receiving shard's members of these groups.
    Groups(Arc<[Box<[u8]>]>),
}

/// One mailed message.
pub struct Envelope {
    /// Its receivers.
    pub to: To,
    /// The bytes (shared by every shard a group message goes to).
    pub bytes: Arc<[u8]>,
    /// The connection whose call sent it, if one did.
    pub from: Option<Handle>,
}

/// A shard's incoming queue.
pub struct Mailbox {
    queue: ArrayQueue<Envelope>,
    bytes: AtomicUsize,
    bytes_max: usize,
    notified: AtomicBool,
    waker: Waker,
    /// The receiving shard's counters (refusals are counted there).
    metrics: Arc<ShardMetrics>,
}

impl Mailbox {
    /// A mailbox of `capacity` messages and `bytes_max` bytes that wakes
    /// its shard with `waker` and counts refusals in `metrics`.
    pub fn new(
        capacity: usize,
        bytes_max: usize,
        waker: Waker,
        metrics: Arc<ShardMetrics>,
    ) -> Mailbox {
        Mailbox {
            queue: ArrayQueue::new(capacity),
            bytes: AtomicUsize::new(0),
            bytes_max,
            notified: AtomicBool::new(false),
            waker,
            metrics,
        }
    }

    /// Queues `envelope` and wakes the shard unless a wake-up is already
    /// outstanding. `Full`: one of the bounds is reached (nothing queued).
    pub fn send(&self, envelope: Envelope) -> Result<(), PushError> {
        let len = envelope.bytes.len();
        let over = self.bytes.fetch_add(len, Ordering::AcqRel) + len > self.bytes_max;
        if over || self.queue.push(envelope).is_err() {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            self.metrics.mailbox_refused.fetch_add(1, Ordering::Relaxed);
            return Err(PushError::Full);
        }
        // The swap orders the push before the flag: a shard that clears the
        // flag (also with a swap) after this sees the message.
        if !self.notified.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// Takes the next message, on the shard's own thread. Call
    /// [`Mailbox::rearm`] before a batch of these.
    pub fn take(&self) -> Option<Envelope> {
        let envelope = self.queue.pop()?;
        self.bytes.fetch_sub(envelope.bytes.len(), Ordering::AcqRel);
        Some(envelope)
    }

    /// Clears the wake-up flag before draining: a message sent after this
    /// wakes the shard again.
    pub fn rearm(&self) {
        self.notified.swap(false, Ordering::AcqRel);
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// No message waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::driver::EventWaker;

    fn envelope(len: usize) -> Envelope {
        Envelope {
            to: To::One(Token(1)),
            bytes: vec![0; len].into(),
            from: None,
        }
    }

    #[test]
    fn both_bounds_refuse_and_taking_frees_room() {
        let waker = Arc::new(EventWaker::new().unwrap());
        let metrics = Arc::new(ShardMetrics::default());
        let mailbox = Mailbox::new(2, 100, waker, metrics.clone());
        mailbox.send(envelope(60)).unwrap();
        assert_eq!(mailbox.send(envelope(41)).err(), Some(PushError::Full));
        mailbox.send(envelope(40)).unwrap();
        assert_eq!(mailbox.send(envelope(0)).err(), Some(PushError::Full));
        mailbox.rearm();
        assert_eq!(mailbox.take().map(|e| e.bytes.len()), Some(60));
        mailbox.send(envelope(60)).unwrap();
        assert_eq!(mailbox.len(), 2);
        assert_eq!(metrics.mailbox_refused.load(Ordering::Relaxed), 2);
    }
}
