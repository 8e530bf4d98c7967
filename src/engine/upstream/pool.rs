//! One upstream address as one shard sees it: its connections, the
//! requests waiting for them, its circuit breaker and reconnect backoff.
//!
//! The pool has `--upstream-conns` lanes per [`Dialect`] (a RESP3 client's
//! calls go on connections that said `HELLO 3`). A lane is at most one connection
//! and a bounded queue of requests waiting for it (while it connects, or
//! while it owes `--upstream-pipeline` replies, or its output ring is
//! full). A client always uses the same lane of an upstream (chosen by its
//! connection number), so its requests to that upstream are written in
//! order on one connection and answered in order: with several lanes,
//! different clients spread over several connections without any client's
//! requests overtaking each other.
//!
//! A lane never used holds nothing but its empty fields (no connection, no
//! ring, no queue room): the lanes of a dialect no client calls in cost a
//! pool `--upstream-conns` × `size_of::<Lane>()` bytes (56 on x86-64).

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::engine::driver::Token;

use super::backoff::Backoff;
use super::breaker::Breaker;
use crate::config::{BackoffSettings, BreakerSettings};
use crate::engine::buffer::{Pool as Rings, Ring};
use crate::engine::service::Dialect;
use crate::engine::timer::Millis;

/// A request waiting in a lane's queue; its bytes are in the lane's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The client's awaited reply it belongs to.
    pub pending: Token,
    /// Which of that reply's calls it is.
    pub call: u32,
    /// Its length in the lane's ring.
    pub len: u32,
    /// When it was queued, in microseconds of the shard's clock.
    pub since_us: u64,
    /// How many times it was redirected to get here.
    pub hops: u8,
}

/// One connection slot of a pool and its wait queue.
///
/// Invariant: `bytes` holds exactly the requests of `queue`, in order,
/// and is `None` when the queue is empty (an idle lane holds no ring).
#[derive(Default)]
pub struct Lane {
    /// The connection, connecting or ready.
    pub conn: Option<Token>,
    /// Requests waiting, oldest first; at most `--upstream-queue`.
    pub queue: VecDeque<Waiting>,
    bytes: Option<Ring>,
}

impl Lane {
    /// Whether a request of `len` bytes fits in the queue.
    pub fn queue_has_room(&self, len: usize, queue_max: usize, ring_capacity: usize) -> bool {
        self.queue.len() < queue_max && self.bytes.as_ref().map_or(ring_capacity, Ring::free) >= len
    }

    /// Queues `request` (the caller checked [`Lane::queue_has_room`] with
    /// the same `queue_max`). The first use allocates room for `queue_max`
    /// entries at once, so the queue never grows afterwards (24 bytes
    /// each; a lane that never queues allocates nothing).
    pub fn enqueue(
        &mut self,
        waiting: Waiting,
        request: &[u8],
        queue_max: usize,
        rings: &mut Rings,
    ) {
        debug_assert_eq!(waiting.len as usize, request.len());
        debug_assert!(self.queue.len() < queue_max);
        if self.queue.capacity() < queue_max {
            self.queue.reserve_exact(queue_max - self.queue.len());
        }
        let bytes = self.bytes.get_or_insert_with(|| rings.take());
        let taken = bytes.push(request);
        assert_eq!(taken, request.len(), "queued request beyond its room");
        self.queue.push_back(waiting);
    }

    /// Takes the oldest request out of the queue; its bytes go to the end
    /// of `to`, which must have room for them.
    pub fn dequeue_into(
        &mut self,
        to: &mut Ring,
        mut copy: Option<&mut Ring>,
        rings: &mut Rings,
    ) -> Option<Waiting> {
        let waiting = self.queue.pop_front()?;
        let bytes = self.bytes.as_mut().expect("queued bytes");
        let len = waiting.len as usize;
        let (first, second) = bytes.readable();
        let split = len.min(first.len());
        for part in [&first[..split], &second[..len - split]] {
            let taken = to.push(part);
            assert_eq!(taken, part.len(), "no room for a dequeued request");
            if let Some(copy) = copy.as_deref_mut() {
                let taken = copy.push(part);
                assert_eq!(taken, part.len(), "no room to keep a dequeued request");
            }
        }
        bytes.consume(len);
        self.give_back_if_empty(rings);
        Some(waiting)
    }

    /// Takes the oldest request out of the queue, dropping its bytes.
    pub fn dequeue_dropped(&mut self, rings: &mut Rings) -> Option<Waiting> {
        let waiting = self.queue.pop_front()?;
        self.bytes
            .as_mut()
            .expect("queued bytes")
            .consume(waiting.len as usize);
        self.give_back_if_empty(rings);
        Some(waiting)
    }

    /// The length of the oldest queued request.
    pub fn front_len(&self) -> Option<usize> {
        self.queue.front().map(|w| w.len as usize)
    }

    fn give_back_if_empty(&mut self, rings: &mut Rings) {
        if let Some(ring) = self.bytes.take_if(|ring| ring.is_empty()) {
            debug_assert!(self.queue.is_empty());
            rings.give(ring);
        }
    }
}

/// One upstream, one shard.
pub struct Pool {
    /// The address as written in the settings (the metric label and the
    /// ketama name).
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// `--upstream-conns` lanes per dialect, dialect by dialect (see
    /// [`Pool::lane_of`]).
    pub lanes: Box<[Lane]>,
    /// This shard's breaker for the upstream.
    pub breaker: Breaker,
    /// Delays between failed connects.
    pub backoff: Backoff,
    /// After a failed connect: no new one before this, and (while the
    /// breaker is closed) requests that would need one fail at once.
    pub retry_at: Millis,
    /// After the upstream refused a dialect's greeting (`HELLO 3` to a
    /// Redis older than 6): that dialect's lanes make no new connection
    /// before this, and its calls fail at once meanwhile. Only its own
    /// calls: the breaker and the backoff the dialects share never hear
    /// of it, so the other dialect's clients are not failed by it.
    pub refused_until: [Millis; Dialect::ALL.len()],
    /// A reload removed the upstream: no new call comes (the service no
    /// longer names it); its connections close once they owe nothing.
    pub retired: bool,
}

impl Pool {
    /// A pool for the upstream `name` at `addr`, with `lanes` lanes per
    /// dialect; `seed` spreads this (shard, upstream)'s reconnect delays.
    pub fn new(
        name: String,
        addr: SocketAddr,
        lanes: usize,
        breaker: BreakerSettings,
        backoff: BackoffSettings,
        seed: u64,
    ) -> Pool {
        Pool {
            name,
            addr,
            lanes: (0..lanes * Dialect::ALL.len())
                .map(|_| Lane::default())
                .collect(),
            breaker: Breaker::new(breaker),
            backoff: Backoff::new(backoff, seed),
            retry_at: 0,
            refused_until: [0; Dialect::ALL.len()],
            retired: false,
        }
    }

    /// The lane a client uses for its calls in `dialect`: fixed for the
    /// connection's life.
    pub fn lane_of(&self, client: Token, dialect: Dialect) -> usize {
        let per_dialect = self.lanes_per_dialect();
        // The slot number (low bits): consecutive clients spread evenly.
        dialect.index() * per_dialect + (client.0 & 0xffff_ffff) % per_dialect
    }

    /// Whether `lane`'s dialect was refused by the upstream until after
    /// `now` (see [`Pool::refused_until`]).
    pub fn refused(&self, lane: usize, now: Millis) -> bool {
        now < self.refused_until[self.dialect_of(lane).index()]
    }

    /// The dialect lane `lane` speaks.
    pub fn dialect_of(&self, lane: usize) -> Dialect {
        Dialect::ALL[lane / self.lanes_per_dialect()]
    }

    fn lanes_per_dialect(&self) -> usize {
        self.lanes.len() / Dialect::ALL.len()
    }

    /// Requests waiting in every lane.
    pub fn queued(&self) -> usize {
        self.lanes.iter().map(|lane| lane.queue.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(len: usize) -> Waiting {
        Waiting {
            pending: Token(1),
            call: 0,
            len: len as u32,
            since_us: 0,
            hops: 0,
        }
    }

    #[test]
    fn queued_requests_leave_whole_and_in_order() {
        let mut rings = Rings::new(16, 4, 0);
        let mut lane = Lane::default();
        assert!(lane.queue_has_room(16, 2, 16));
        lane.enqueue(waiting(6), b"first!", 2, &mut rings);
        lane.enqueue(waiting(7), b"second!", 2, &mut rings);
        assert!(!lane.queue_has_room(1, 2, 16), "the queue bound");
        assert!(!lane.queue_has_room(4, 3, 16), "the ring's room");
        let mut to = Ring::with_capacity(16);
        assert_eq!(
            lane.dequeue_into(&mut to, None, &mut rings),
            Some(waiting(6))
        );
        // The next one wraps around the queue's ring once more is queued.
        lane.enqueue(waiting(8), b"third..!", 2, &mut rings);
        assert_eq!(lane.dequeue_dropped(&mut rings), Some(waiting(7)));
        assert_eq!(
            lane.dequeue_into(&mut to, None, &mut rings),
            Some(waiting(8))
        );
        let (first, second) = to.readable();
        assert_eq!([first, second].concat(), b"first!third..!");
        assert_eq!(lane.dequeue_into(&mut to, None, &mut rings), None);
        assert_eq!(rings.live(), 0, "an empty queue holds no ring");
    }

    #[test]
    fn clients_keep_their_lane() {
        let pool = Pool::new(
            "127.0.0.1:6379".into(),
            "127.0.0.1:6379".parse().unwrap(),
            3,
            BreakerSettings::default(),
            BackoffSettings::default(),
            1,
        );
        let client = Token((9 << 32) | 4);
        assert_eq!(pool.lane_of(client, Dialect::Resp2), 1);
        assert_eq!(
            pool.lane_of(client, Dialect::Resp2),
            pool.lane_of(Token((10 << 32) | 4), Dialect::Resp2)
        );
    }

    #[test]
    fn each_dialect_has_lanes_of_its_own() {
        let pool = Pool::new(
            "127.0.0.1:6379".into(),
            "127.0.0.1:6379".parse().unwrap(),
            3,
            BreakerSettings::default(),
            BackoffSettings::default(),
            1,
        );
        assert_eq!(pool.lanes.len(), 6);
        for slot in 0..9 {
            let client = Token(slot);
            let plain = pool.lane_of(client, Dialect::Resp2);
            let resp3 = pool.lane_of(client, Dialect::Resp3);
            assert!(plain < 3 && (3..6).contains(&resp3), "{plain} {resp3}");
            assert_eq!(pool.dialect_of(plain), Dialect::Resp2);
            assert_eq!(pool.dialect_of(resp3), Dialect::Resp3);
        }
    }

    /// What the module docs say a lane no client calls on costs a pool.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_unused_lane_is_its_empty_fields() {
        assert_eq!(std::mem::size_of::<Lane>(), 56);
    }
}
