//! The ring and what is in flight on it: one [`Slot`] of operation state
//! per connection slot, the ring-wide accept and eventfd read, the provided
//! buffers, and the connection operations the driver posts for the shard
//! (`mod.rs` puts them behind [`crate::engine::driver::Driver`]).

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::squeue::Entry;
use io_uring::types::Fd;
use io_uring::{IoUring, opcode};

use super::bufs::{self, BufRing};
use super::op::{self, Kind, Op, Tracker};
use super::{Completion, submit_and_wait};
use crate::engine::buffer::{Pool, Ring as Bytes};
use crate::engine::driver::{EventWaker, Link, Read, Reading, Socket, Token, socket};
use crate::engine::metrics::ShardMetrics;

/// `IORING_RECVSEND_POLL_FIRST` (in a receive's `ioprio`): the socket is
/// probably empty, so wait for it to be readable before trying (and before
/// taking a buffer). Not exported by the `io-uring` crate.
const RECVSEND_POLL_FIRST: u16 = 1;

/// The io_uring instance with its provided buffers. The instance is
/// declared first so it is dropped first: the kernel lets go of the buffers
/// before their memory is freed.
pub struct Ring {
    uring: IoUring,
    bufs: BufRing,
}

impl Ring {
    /// A ring with `entries` submission entries (4× as many completion
    /// entries) and `buffers` provided buffers of `buffer_size` bytes,
    /// flagged SINGLE_ISSUER | DEFER_TASKRUN | SUBMIT_ALL (docs/io_uring.md,
    /// "Kernel, operations, flags"): it must be made on the thread that
    /// submits.
    ///
    /// The ring starts disabled, so it may be made (and its buffers
    /// registered) on another thread: [`Ring::enable`] on the loop's thread
    /// makes that thread its one submitter.
    pub fn new(entries: u32, buffers: usize, buffer_size: usize) -> io::Result<Ring> {
        let uring = IoUring::builder()
            .setup_r_disabled()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .setup_cqsize(entries.saturating_mul(4))
            .build(entries)?;
        let bufs = BufRing::new(buffers, buffer_size)?;
        let (address, count) = bufs.registration();
        // SAFETY: the entries stay allocated while `bufs` lives, and `bufs`
        // is dropped after `uring` (field order) and after an explicit
        // unregister in `UringIo::drop`.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(address, count, bufs::GROUP, 0)?
        };
        Ok(Ring { uring, bufs })
    }

    /// Enables the ring; the calling thread becomes its submitter.
    pub fn enable(&self) -> io::Result<()> {
        self.uring.submitter().register_enable_rings()
    }

    /// The ring's submitter (for probing).
    pub fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }
}

/// What is in flight for one connection slot. Every slot up to the most
/// connections the shard has held has one, so it is part of what an idle
/// connection costs (README, "Memory per connection"): rare state (an
/// upstream's connect, a retired connection's lent ring) lives beside the
/// slots, not in them.
#[derive(Debug, Default)]
struct Slot {
    /// The generation of the connection that owns the slot (its token is
    /// the slot's index and this; see [`Slots::token`]).
    generation: u32,
    /// A connection owns the slot.
    owned: bool,
    /// The receive in flight.
    recv: Option<Receiving>,
    /// The send in flight.
    send: Option<Sending>,
    /// Cancels in flight.
    cancels: u8,
    /// The activation the next operation gets.
    activation: u8,
    /// The buffer the last receive filled, until [`UringIo::absorb`]
    /// copies it into the input ring: just before the connection is
    /// driven, later in the same turn, so the bytes are still in cache
    /// when they are served (copying every receive of a turn as its
    /// completion is handled, then serving, cost up to a third more CPU
    /// per request at 1000 connections × 4 KiB × 16).
    held: Option<Held>,
    /// Bytes copied into the input ring that `read` has not reported.
    received: u32,
    /// The socket may hold more than the receives took: the last one filled
    /// all it asked for, or ended for lack of a buffer.
    more: bool,
    /// The peer's FIN arrived (after the bytes received).
    eof: bool,
    /// The receive failed with this errno (after the bytes received).
    error: Option<Errno>,
    /// The send failed with this errno.
    send_error: Option<Errno>,
    /// Bytes sends took out of the output ring since the last flush.
    sent: u32,
    /// The receive ended with ENOBUFS: re-arm once buffers are back.
    starved: bool,
    /// Already on this turn's list of connections to drive.
    touched: bool,
    /// The connection closed: nothing new is posted, completions only
    /// retire what was in flight.
    retired: bool,
    /// What the connection wanted at its last drive (see
    /// [`UringIo::settle_recv`]).
    reading: Reading,
    /// The socket may hold more than has been read (the epoll driver's
    /// readable flag): a completion brought bytes, or a receive filled all
    /// it asked for.
    ready: bool,
    /// An upstream connect is in flight (see [`UringIo::connects`]).
    connecting: bool,
}

/// An errno (they are small and never 0).
type Errno = std::num::NonZeroU16;

/// The errno of a failed completion's negative result.
fn errno(result: i32) -> Option<Errno> {
    Errno::new(u16::try_from(-result).unwrap_or(u16::MAX))
}

/// A filled provided buffer a connection holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    bid: u16,
    /// It stays while its client connection waits for a unit of
    /// `--max-buffer-memory` (counted in [`UringIo::kept`]).
    kept: bool,
    len: NonZeroU32,
}

/// A receive in flight.
#[derive(Clone, Copy, Debug)]
struct Receiving {
    activation: u8,
    /// A cancel was sent for it.
    cancelled: bool,
    /// [`UringIo::enters`] (its low 16 bits) when it was pushed: once an
    /// enter has passed and it is still in flight, the socket was empty.
    pushed: u16,
    /// Bytes asked for: never more than the input ring had room for, nor
    /// than a buffer holds (never none: a full ring posts no receive).
    asked: NonZeroU32,
}

/// A send in flight: it reads the first contiguous region of the
/// connection's output ring. While the connection lives, that ring stays in
/// its `Link` (replies are appended behind the region; the region's bytes
/// leave the ring only when this completes, so the ring is never empty,
/// never handed back to the pool, while it is lent). Once the connection is
/// retired, the ring moves to [`UringIo::abandoned`]: the shard can no
/// longer reach it, and only the send's final completion gives it back to
/// the pool.
#[derive(Clone, Copy, Debug)]
struct Sending {
    activation: u8,
    /// Bytes asked for (never none: an empty ring posts no send).
    asked: NonZeroU32,
    /// Where the lent region starts: it must not move before the send
    /// completes (checked in debug builds only).
    #[cfg(debug_assertions)]
    region: usize,
}

/// An upstream connect in flight, then its result until the core asks:
/// kept beside the slots (few connects are in flight at once), with the
/// address the kernel reads boxed so that it stays put until the connect's
/// final completion.
#[derive(Debug)]
struct Connecting {
    /// The slot's index.
    index: usize,
    activation: u8,
    /// Read by the kernel only; held so that it lives long enough. `None`
    /// once the connect completed.
    #[allow(dead_code)]
    addr: Option<Box<socket2::SockAddr>>,
    /// The connect's result, once it completed.
    result: Option<i32>,
}

/// The per-slot state, indexed like `user_data`'s slot field: a client
/// connection's table slot `s` is `2s`, an upstream connection's `2s + 1`.
/// Kept in two vectors so that a server with no upstreams holds no state
/// for upstream slots.
#[derive(Debug, Default)]
struct Slots {
    clients: Vec<Slot>,
    upstreams: Vec<Slot>,
}

impl Slots {
    fn side(&self, index: usize) -> &Vec<Slot> {
        if index & 1 == 0 {
            &self.clients
        } else {
            &self.upstreams
        }
    }

    fn side_mut(&mut self, index: usize) -> &mut Vec<Slot> {
        if index & 1 == 0 {
            &mut self.clients
        } else {
            &mut self.upstreams
        }
    }

    fn get(&self, index: usize) -> Option<&Slot> {
        self.side(index).get(index >> 1)
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut Slot> {
        self.side_mut(index).get_mut(index >> 1)
    }

    /// Makes room for `index`.
    fn ensure(&mut self, index: usize) {
        let side = self.side_mut(index);
        if side.len() <= index >> 1 {
            side.resize_with((index >> 1) + 1, Slot::default);
        }
    }
}

impl std::ops::Index<usize> for Slots {
    type Output = Slot;

    fn index(&self, index: usize) -> &Slot {
        &self.side(index)[index >> 1]
    }
}

impl std::ops::IndexMut<usize> for Slots {
    fn index_mut(&mut self, index: usize) -> &mut Slot {
        &mut self.side_mut(index)[index >> 1]
    }
}

impl Slot {
    fn idle(&self) -> bool {
        self.recv.is_none() && self.send.is_none() && self.cancels == 0 && !self.connecting
    }

    /// The token of the connection that owns slot `index`, if one does.
    fn owner(&self, index: usize) -> Option<Token> {
        self.owned
            .then(|| Token::from_index(index, self.generation))
    }

    fn next_activation(&mut self) -> u8 {
        self.activation = self.activation.wrapping_add(1);
        self.activation
    }
}

/// An empty queue with room for `capacity` items, its memory made
/// resident now (as the provided buffers are): a queue a turn fills as far
/// as its completions go would otherwise grow the process's memory by the
/// largest turn's, which is no cost of the connections open at the time.
pub fn resident<T: Copy>(capacity: usize, filler: T) -> VecDeque<T> {
    let mut queue = VecDeque::with_capacity(capacity);
    queue.resize(capacity, filler);
    queue.clear();
    queue
}

/// The eventfd read in flight, with the 8 bytes it lands in: the operation
/// owns them, so they live until its final completion (or are leaked with
/// the driver when the loop gives up on the kernel). A cell, because the
/// kernel writes them behind our back.
#[derive(Debug)]
struct WakeRead {
    activation: u8,
    /// Written by the kernel only; held so that it lives long enough.
    #[allow(dead_code)]
    landing: Box<UnsafeCell<u64>>,
}

/// The driver: the ring and the state of everything in flight on it.
pub struct UringIo {
    ring: Ring,
    slots: Slots,
    /// Debug builds: every operation in flight, checked.
    pub tracker: Tracker,
    /// Completions taken from the ring, not yet handled.
    pub cqes: VecDeque<Completion>,
    metrics: Arc<ShardMetrics>,
    waker: Arc<EventWaker>,
    /// The read posted on the waker's eventfd.
    wake: Option<WakeRead>,
    accept: Option<u8>,
    ring_activation: u8,
    ring_cancels: u16,
    /// Connections whose receive ended for lack of buffers, oldest first.
    starved: VecDeque<Token>,
    /// Upstream connects in flight or not yet reported, by slot index.
    connects: Vec<Connecting>,
    /// The output rings of retired connections whose send is still in
    /// flight, by slot index: the kernel may still read them.
    abandoned: Vec<(usize, Bytes)>,
    /// Buffers held for client connections with no unit of
    /// `--max-buffer-memory` (no ring to copy into yet): at most three
    /// quarters of them, so that the connections that hold units always
    /// find buffers to receive into (every other buffer comes back within
    /// the turn that filled it) and can finish, giving their units back.
    kept: usize,
    /// Enters so far (see [`Receiving::pushed`]).
    enters: u64,
    /// The size of an input ring (`--buffer`): what a receive may ask for
    /// on a connection that has none yet.
    input_capacity: usize,
}

impl UringIo {
    /// The driver around `ring`, for connections whose input rings hold
    /// `input_capacity` bytes.
    pub fn new(
        ring: Ring,
        metrics: Arc<ShardMetrics>,
        waker: Arc<EventWaker>,
        input_capacity: usize,
    ) -> UringIo {
        let cq_entries = ring.uring.params().cq_entries() as usize;
        UringIo {
            ring,
            slots: Slots::default(),
            tracker: Tracker::default(),
            // A turn takes at most a full completion queue (more only when a
            // full submission queue forces an early submit).
            cqes: resident(cq_entries, Completion::default()),
            metrics,
            waker,
            wake: None,
            accept: None,
            ring_activation: 0,
            ring_cancels: 0,
            starved: VecDeque::new(),
            connects: Vec::new(),
            abandoned: Vec::new(),
            kept: 0,
            enters: 0,
            input_capacity,
        }
    }

    /// Enables the ring: the calling thread becomes its one submitter.
    pub fn enable(&self) -> io::Result<()> {
        self.ring.enable()
    }

    /// The shard's counters.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// Queues `entry` as `op`. A full submission queue is submitted first
    /// (the completions that makes room for are kept for the loop); a
    /// pushed entry is live whatever happens next (docs/io_uring.md, "Close
    /// and cancel"), so it is tracked at once.
    fn push(&mut self, entry: Entry, op: Op) {
        let user_data = op.encode();
        let entry = entry.user_data(user_data);
        loop {
            // SAFETY: every pointer in `entry` stays valid until the
            // operation's final completion, because the operation's state
            // here owns what it points at until then: the eventfd read's 8
            // bytes are boxed in its `WakeRead`, a connect's address in its
            // `Connecting`; a send's region is in an output ring that is
            // never empty (so never given back) while lent, that a retired
            // connection hands over to `abandoned`, and that only the
            // send's final completion gives back.
            let pushed = unsafe { self.ring.uring.submission().push(&entry) };
            if pushed.is_ok() {
                self.tracker.submitted(user_data);
                return;
            }
            self.submit_pending();
        }
    }

    /// Submits what is queued without waiting; completions are collected.
    fn submit_pending(&mut self) {
        if let Err(e) = submit_and_wait(&self.ring.uring, Some(Duration::ZERO)) {
            panic!("io_uring: submitting failed: {e}");
        }
        self.collect();
    }

    /// Submits and waits for a completion or `timeout`, then takes every
    /// completion out of the ring.
    pub fn enter(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.metrics.uring.enters.inc();
        submit_and_wait(&self.ring.uring, timeout)?;
        self.enters += 1;
        self.collect();
        Ok(())
    }

    /// Moves every completion out of the ring. An overflowed queue is
    /// counted; the completions the kernel kept come with the next enter.
    fn collect(&mut self) {
        if self.ring.uring.submission().cq_overflow() {
            self.metrics.uring.cq_overflow.inc();
        }
        for cqe in self.ring.uring.completion() {
            self.cqes.push_back(Completion {
                user_data: cqe.user_data(),
                result: cqe.result(),
                flags: cqe.flags(),
            });
        }
    }

    // Ring-wide operations.

    fn ring_op(&mut self, kind: Kind) -> (Op, u8) {
        self.ring_activation = self.ring_activation.wrapping_add(1);
        (Op::ring(kind, self.ring_activation), self.ring_activation)
    }

    /// Posts the multishot accept on the listener `fd`.
    pub fn arm_accept(&mut self, fd: RawFd) {
        let (op, activation) = self.ring_op(Kind::Accept);
        // Non-blocking sockets: io_uring then retries a send or receive by
        // polling and completes a send short when the peer's window is
        // full. On a blocking socket it would hand the op to a worker
        // thread that blocks until all of it is sent, and a slow reader's
        // progress would show only at the end (the write timeout measures
        // progress).
        let entry = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build();
        self.push(entry, op);
        self.accept = Some(activation);
    }

    /// The multishot accept is in flight.
    pub fn accept_armed(&self) -> bool {
        self.accept.is_some()
    }

    /// The accept's final completion arrived.
    pub fn accept_ended(&mut self) {
        self.accept = None;
    }

    /// Cancels the multishot accept (the drain began).
    pub fn cancel_accept(&mut self) {
        if let Some(activation) = self.accept {
            self.cancel_ring(Op::ring(Kind::Accept, activation));
        }
    }

    fn cancel_ring(&mut self, target: Op) {
        let (op, _) = self.ring_op(Kind::CancelRing);
        self.push(opcode::AsyncCancel::new(target.encode()).build(), op);
        self.ring_cancels += 1;
    }

    /// A ring-wide cancel completed.
    pub fn ring_cancel_done(&mut self) {
        self.ring_cancels -= 1;
    }

    /// Posts the read on the waker's eventfd.
    pub fn arm_wake(&mut self) {
        let (op, activation) = self.ring_op(Kind::Wake);
        let landing = Box::new(UnsafeCell::new(0u64));
        let entry = opcode::Read::new(
            Fd(self.waker.fd().as_raw_fd()),
            landing.get().cast::<u8>(),
            8,
        )
        .build();
        self.wake = Some(WakeRead {
            activation,
            landing,
        });
        self.push(entry, op);
    }

    /// The eventfd read completed (a stop request, or mail).
    pub fn wake_done(&mut self) {
        self.wake = None;
    }

    /// Cancels the eventfd read (the loop is exiting).
    pub fn cancel_wake(&mut self) {
        if let Some(activation) = self.wake.as_ref().map(|wake| wake.activation) {
            self.cancel_ring(Op::ring(Kind::Wake, activation));
        }
    }

    /// Any ring-wide operation still in flight.
    pub fn ring_ops_in_flight(&self) -> bool {
        self.wake.is_some() || self.accept.is_some() || self.ring_cancels > 0
    }

    /// The socket an accept completion delivered.
    pub fn accepted_stream(&self, fd: i32) -> Socket {
        // SAFETY: a successful accept completion's result is a new
        // descriptor that nothing else in the process owns.
        unsafe { Socket::from_raw_fd(fd) }
    }

    /// Releases what a completion nobody expected carries: a buffer goes
    /// back, an accepted socket is closed.
    pub fn drop_carried(&mut self, cqe: Completion, op: Option<Op>) {
        if let Some(bid) = io_uring::cqueue::buffer_select(cqe.flags) {
            self.ring.bufs.give_back(bid);
        }
        if op.is_some_and(|op| op.kind == Kind::Accept) && cqe.result >= 0 {
            // SAFETY: as in `accepted_stream`; dropping it closes it.
            drop(unsafe { OwnedFd::from_raw_fd(cqe.result) });
        }
    }

    // Connections.

    fn slot(&mut self, token: Token) -> &mut Slot {
        &mut self.slots[token.index()]
    }

    /// The free slot state of a new connection `token`.
    fn claim(&mut self, token: Token) -> &mut Slot {
        let index = token.index();
        assert!(
            index < op::SLOT_MAX,
            "connection slot beyond user_data's 32 bits"
        );
        self.slots.ensure(index);
        let slot = &mut self.slots[index];
        debug_assert!(!slot.owned && slot.idle());
        slot
    }

    /// A connection was admitted: take its slot and post its receive.
    pub fn open(&mut self, token: Token, link: &Link) {
        let slot = self.claim(token);
        let activation = slot.activation;
        *slot = Slot {
            generation: token.generation(),
            owned: true,
            activation,
            // Bytes may have come with the handshake: the first receive
            // tries at once, and a drain that takes the connection in
            // waits for it before it stops reading.
            more: true,
            ready: true,
            reading: Reading::Open,
            ..Slot::default()
        };
        self.settle_recv(token, link);
    }

    /// The live connection `op` belongs to.
    pub fn owner(&self, op: Op) -> Option<Token> {
        let index = op.slot as usize;
        self.slots
            .get(index)
            .and_then(|slot| slot.owner(index))
            .filter(|&token| op.is_for(token))
    }

    /// `token` is closed and nothing is in flight for it any more.
    pub fn done_with(&mut self, token: Token) -> bool {
        let slot = self.slot(token);
        slot.retired && slot.idle()
    }

    /// Frees `token`'s slot state (its connection is about to be released).
    pub fn forget(&mut self, token: Token) {
        self.tracker.releasing(token);
        let slot = self.slot(token);
        debug_assert!(slot.idle() && slot.held.is_none());
        let activation = slot.activation;
        *slot = Slot {
            activation,
            ..Slot::default()
        };
        // A connect's result nobody asked for (the connection closed
        // first): the slot's next owner must not find it.
        let index = token.index();
        self.connects.retain(|connect| connect.index != index);
    }

    /// Puts `token` on this turn's drive list unless it is there already.
    pub fn touch(&mut self, token: Token) -> bool {
        !std::mem::replace(&mut self.slot(token).touched, true)
    }

    /// Takes `token` off this turn's drive list.
    pub fn untouch(&mut self, token: Token) {
        if let Some(slot) = self.slots.get_mut(token.index())
            && slot.owner(token.index()) == Some(token)
        {
            slot.touched = false;
        }
    }

    /// The next connection waiting for buffers to post its receive again,
    /// if a buffer is back for it. Each turn re-posts at most as many
    /// receives as there are buffers available, oldest first: re-posting
    /// them all at once would have the kernel end most of them again with
    /// ENOBUFS at once, a loop that spins while buffers are short.
    pub fn next_starved(&mut self, budget: &mut usize) -> Option<Token> {
        while *budget > 0 {
            let token = self.starved.pop_front()?;
            if let Some(slot) = self.slots.get_mut(token.index())
                && slot.owner(token.index()) == Some(token)
                && slot.starved
            {
                slot.starved = false;
                *budget -= 1;
                return Some(token);
            }
        }
        None
    }

    /// Some connection waits for buffers.
    pub fn has_starved(&self) -> bool {
        !self.starved.is_empty()
    }

    /// Buffers the kernel may fill now: all of them, between turns.
    pub fn buffers_available(&self) -> usize {
        // Less those kept for connections waiting for buffer memory.
        self.ring.bufs.count() - self.kept
    }

    /// Posts or cancels `link`'s receive as its connection wants (as of its
    /// last drive): one is in flight while it reads and its input ring has
    /// room; cancelled once it stops reading. (A receive in flight while
    /// reading is paused stays: it can bring no more than the input ring
    /// takes.)
    pub fn settle_recv(&mut self, token: Token, link: &Link) {
        let slot = self.slot(token);
        if slot.retired {
            return;
        }
        let reads = slot.reading != Reading::Stopped && !slot.eof && slot.error.is_none();
        match slot.recv {
            Some(receiving) if !reads && !receiving.cancelled => {
                slot.recv = Some(Receiving {
                    cancelled: true,
                    ..receiving
                });
                slot.cancels += 1;
                let target = Op::conn(Kind::Recv, token, receiving.activation);
                let op = Op::conn(Kind::Cancel, token, slot.next_activation());
                self.push(opcode::AsyncCancel::new(target.encode()).build(), op);
            }
            None if reads && !slot.starved && slot.reading == Reading::Open => {
                self.post_recv(token, link);
            }
            _ => {}
        }
    }

    /// Posts a receive for `link` into a provided buffer, asking for no
    /// more than its input ring has room for: whatever it brings fits, so
    /// its buffer can go back as soon as it is copied.
    fn post_recv(&mut self, token: Token, link: &Link) {
        let room = link.input.as_ref().map_or(self.input_capacity, Bytes::free);
        if room == 0 {
            return;
        }
        // The kernel brings no more than a buffer's worth anyway; asking for
        // exactly what it can bring tells a full receive (more may wait)
        // from a short one.
        let Some(asked) = NonZeroU32::new(room.min(self.ring.bufs.size()) as u32) else {
            return;
        };
        let pushed = self.enters as u16;
        let slot = self.slot(token);
        let activation = slot.next_activation();
        slot.recv = Some(Receiving {
            activation,
            cancelled: false,
            pushed,
            asked,
        });
        // Most sockets are empty when their receive is posted (a client
        // waits for its reply): then wait for readability first, which
        // also takes no buffer until bytes are there.
        let ioprio = if slot.more { 0 } else { RECVSEND_POLL_FIRST };
        let entry = opcode::Recv::new(
            Fd(link.socket.as_raw_fd()),
            std::ptr::null_mut(),
            asked.get(),
        )
        .buf_group(bufs::GROUP)
        .ioprio(ioprio)
        .build()
        .flags(io_uring::squeue::Flags::BUFFER_SELECT);
        self.push(entry, Op::conn(Kind::Recv, token, activation));
    }

    /// A receive completion for `token`: the buffer it filled is held until
    /// [`UringIo::absorb`], before the connection is driven this turn.
    /// Returns true if the connection should be driven.
    pub fn on_recv(&mut self, token: Token, cqe: Completion) -> bool {
        let slot = &mut self.slots[token.index()];
        let receiving = slot.recv.take();
        let live = !slot.retired;
        if let Some(bid) = io_uring::cqueue::buffer_select(cqe.flags) {
            if let Some(len) = NonZeroU32::new(cqe.result.max(0) as u32).filter(|_| live) {
                debug_assert!(slot.held.is_none(), "one receive at a time");
                slot.held = Some(Held {
                    bid,
                    kept: false,
                    len,
                });
                slot.more = receiving.is_some_and(|r| len >= r.asked);
                slot.ready = true;
                return true;
            }
            self.ring.bufs.give_back(bid);
        }
        if !live {
            return false;
        }
        match cqe.result {
            0 => slot.eof = true,
            e if e == -libc::ENOBUFS => {
                self.metrics.uring.enobufs.inc();
                slot.starved = true;
                // Bytes are waiting: the receive found no buffer for them.
                slot.more = true;
                self.starved.push_back(token);
                return false;
            }
            // Cancelled when the connection stopped reading. If it reads
            // again by now (a drain that stopped, then lingers for the
            // peer's FIN), settling it posts the next receive: drive it.
            e if e == -libc::ECANCELED => return slot.reading == Reading::Open,
            e if e < 0 => slot.error = errno(e),
            _ => {}
        }
        slot.ready = true;
        true
    }

    /// Copies the buffer `token`'s last receive filled into its input ring
    /// (taken from `pool` if it has none) and gives the buffer back. Called
    /// for every connection a completion moved, just before it is driven,
    /// whether or not it reads now (a connection whose output is blocked
    /// must not keep a buffer the others need), and by `read` (so no plain
    /// read can ever put later bytes ahead of these). It fits: the receive
    /// asked for no more than the ring's room, and only serving (which
    /// frees room) has touched the ring since.
    ///
    /// A client connection without a unit of `--max-buffer-memory` and no
    /// input ring may take no ring: its buffer stays until it has one
    /// (the core asks for it before it reads), unless three quarters of
    /// the buffers are kept so already: then the ring is taken anyway and
    /// the core counts it past the budget.
    pub fn absorb(&mut self, token: Token, link: &mut Link, pool: &mut Pool) {
        let slot = &mut self.slots[token.index()];
        let Some(held) = slot.held.as_mut() else {
            return;
        };
        let unfunded = !link.unit && link.input.is_none() && !token.is_upstream();
        let count = self.ring.bufs.count();
        // Never all of them (one buffer of one leaves none to the others).
        if unfunded && (held.kept || self.kept + 1 < count - count / 4) {
            self.kept += usize::from(!std::mem::replace(&mut held.kept, true));
            return;
        }
        let Held { bid, kept, len } = *held;
        slot.held = None;
        self.kept -= usize::from(kept);
        let len = len.get();
        slot.received += len;
        let input = link.input.get_or_insert_with(|| pool.take());
        let copied = input.push(self.ring.bufs.filled(bid, len as usize));
        self.ring.bufs.give_back(bid);
        assert_eq!(copied, len as usize, "a receive overran its input ring");
    }

    /// A send completion for `link`: its bytes leave the output ring (of
    /// a retired connection, the ring goes back to `pool`). Returns true if
    /// the connection should be driven.
    pub fn on_send(
        &mut self,
        token: Token,
        link: &mut Link,
        pool: &mut Pool,
        cqe: Completion,
    ) -> bool {
        let index = token.index();
        let slot = &mut self.slots[index];
        let Some(sending) = slot.send.take() else {
            return false;
        };
        if slot.retired {
            if let Some(at) = self.abandoned.iter().position(|(i, _)| *i == index) {
                pool.give(self.abandoned.swap_remove(at).1);
            }
            return false;
        }
        let asked = sending.asked;
        if cqe.result >= 0 {
            let sent = cqe.result as usize;
            if let Some(output) = link.output.as_mut() {
                #[cfg(debug_assertions)]
                assert_eq!(
                    output.readable().0.as_ptr() as usize,
                    sending.region,
                    "a lent output region moved before its send completed"
                );
                output.consume(sent);
            }
            slot.sent += sent as u32;
            if sent < asked.get() as usize {
                self.metrics.uring.short_sends.inc();
            }
        } else if cqe.result != -libc::ECANCELED {
            slot.send_error = errno(cqe.result);
        }
        true
    }

    /// A cancel aimed at one of `token`'s operations completed (its
    /// target's own final completion is what retires the target).
    pub fn on_cancel(&mut self, token: Token) -> bool {
        self.slot(token).cancels -= 1;
        false
    }
}

// Upstream connections: the connect, then the same receive and send as a
// client connection.
impl UringIo {
    /// A new socket for the upstream connection `token` with a connect to
    /// `addr` posted; its completion comes to [`UringIo::on_connect`]. The
    /// slot is taken as for an accepted connection, but no receive is
    /// posted until the connect has succeeded (the core settles it then).
    pub fn post_connect(&mut self, token: Token, addr: std::net::SocketAddr) -> io::Result<Socket> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        let _ = socket.set_tcp_nodelay(true);
        let stream = Socket::from(socket);
        let slot = self.claim(token);
        let activation = slot.activation.wrapping_add(1);
        let addr = Box::new(socket2::SockAddr::from(addr));
        let entry = opcode::Connect::new(
            Fd(stream.as_raw_fd()),
            addr.as_ptr().cast::<libc::sockaddr>(),
            addr.len(),
        )
        .build();
        *slot = Slot {
            generation: token.generation(),
            owned: true,
            activation,
            connecting: true,
            ..Slot::default()
        };
        self.connects.push(Connecting {
            index: token.index(),
            activation,
            addr: Some(addr),
            result: None,
        });
        // The address the entry points at is boxed in `connects` until the
        // connect's final completion (`on_connect`); a slot is forgotten
        // only once idle, so never before.
        self.push(entry, Op::conn(Kind::Connect, token, activation));
        Ok(stream)
    }

    /// The connect of `token` completed (connected, failed or cancelled).
    /// Returns true: the connection should be driven.
    pub fn on_connect(&mut self, token: Token, cqe: Completion) -> bool {
        self.slot(token).connecting = false;
        if let Some(connect) = self.connect_mut(token.index()) {
            connect.addr = None;
            connect.result = Some(cqe.result);
        }
        true
    }

    fn connect_mut(&mut self, index: usize) -> Option<&mut Connecting> {
        self.connects
            .iter_mut()
            .find(|connect| connect.index == index)
    }

    /// How the connect of `token` went, once it completed.
    pub fn connect_status(&mut self, token: Token) -> Option<io::Result<()>> {
        let index = token.index();
        let at = self
            .connects
            .iter()
            .position(|connect| connect.index == index && connect.result.is_some())?;
        let result = self.connects.swap_remove(at).result?;
        Some(match result {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(-errno)),
        })
    }
}

// What the shard's loop asks of a connection (see `Driver`).
impl UringIo {
    /// Reports the bytes the receives copied into the input ring (see
    /// [`UringIo::on_recv`]), and reads the rest of a burst.
    pub fn read(
        &mut self,
        token: Token,
        link: &mut Link,
        pool: &mut Pool,
        budget: usize,
    ) -> io::Result<Read> {
        self.absorb(token, link, pool);
        let enters = self.enters as u32;
        let slot = self.slot(token);
        let mut done = Read {
            bytes: std::mem::take(&mut slot.received) as usize,
            eof: slot.eof,
        };
        if let Some(errno) = slot.error
            && done.bytes == 0
        {
            return Err(io::Error::from_raw_os_error(i32::from(errno.get())));
        }
        if slot.recv.is_some_and(|r| r.pushed != enters as u16) {
            // The kernel has had the receive for a whole enter without
            // completing it: the socket was empty.
            slot.more = false;
        }
        if slot.more && slot.recv.is_none() && slot.error.is_none() && !slot.eof {
            // A burst: more waits than a receive brings. Read it now into
            // the input ring's room, as epoll does, rather than a buffer's
            // worth per turn; no receive is in flight to race with.
            let (read, more) = socket::read(link, pool, budget.saturating_sub(done.bytes), false)?;
            done.bytes += read.bytes;
            done.eof |= read.eof;
            slot.eof |= read.eof;
            slot.more = more;
        }
        // Cleared once nothing is known to wait, so the core neither queues
        // the connection again nor (draining) stops reading too early.
        slot.ready = (slot.more && !slot.eof) || slot.error.is_some();
        if let Some(input) = link.input.take_if(|input| input.is_empty()) {
            pool.give(input);
        }
        Ok(done)
    }

    /// Whether more may wait to be read.
    pub fn may_read(&self, token: Token) -> bool {
        self.slots.get(token.index()).is_some_and(|slot| slot.ready)
    }

    /// The next read should look (the drain, a linger, a connect done).
    pub fn expect_read(&mut self, token: Token) {
        self.slot(token).ready = true;
    }

    /// Reports what the sends took out of the output ring, and posts the
    /// next one if none is in flight.
    pub fn flush(&mut self, token: Token, link: &mut Link, pool: &mut Pool) -> io::Result<usize> {
        let slot = self.slot(token);
        let sent = std::mem::take(&mut slot.sent) as usize;
        if let Some(errno) = slot.send_error.take() {
            return Err(io::Error::from_raw_os_error(i32::from(errno.get())));
        }
        if slot.send.is_some() {
            return Ok(sent);
        }
        let Some(output) = link.output.as_ref().filter(|output| !output.is_empty()) else {
            if let Some(output) = link.output.take_if(|output| output.is_empty()) {
                pool.give(output);
            }
            return Ok(sent);
        };
        // One send in flight at most, of the first contiguous region; the
        // rest (after a wrap) goes with the next. The region is lent to the
        // kernel until the completion: the ring may take more replies
        // behind it but never overwrites or frees it before then.
        let (region, _) = output.readable();
        let len = region.len().min(u32::MAX as usize) as u32;
        let asked = NonZeroU32::new(len).expect("a non-empty ring's first region");
        let pointer = region.as_ptr();
        let activation = slot.next_activation();
        slot.send = Some(Sending {
            activation,
            asked,
            #[cfg(debug_assertions)]
            region: pointer as usize,
        });
        let fd = Fd(link.socket.as_raw_fd());
        let entry = opcode::Send::new(fd, pointer, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.push(entry, Op::conn(Kind::Send, token, activation));
        Ok(sent)
    }

    /// The end of a drive: remember what the connection wants, and post or
    /// cancel its receive accordingly.
    pub fn settle(&mut self, token: Token, link: &Link, reading: Reading) {
        self.slot(token).reading = reading;
        self.settle_recv(token, link);
    }

    /// The connection closes: cancel what is in flight on it. True if
    /// nothing was (it may be released now).
    pub fn retire(&mut self, token: Token, link: &mut Link) -> bool {
        let index = token.index();
        let slot = &mut self.slots[index];
        slot.retired = true;
        slot.starved = false;
        if let Some(held) = slot.held.take() {
            self.ring.bufs.give_back(held.bid);
            self.kept -= usize::from(held.kept);
        }
        let connecting = slot.connecting;
        let mut targets = [None, None, None];
        if let Some(receiving) = slot.recv.as_mut().filter(|r| !r.cancelled) {
            receiving.cancelled = true;
            targets[0] = Some(Op::conn(Kind::Recv, token, receiving.activation));
        }
        if let Some(sending) = slot.send {
            targets[1] = Some(Op::conn(Kind::Send, token, sending.activation));
            // The kernel may still read the ring: it is the send's now.
            if let Some(output) = link.output.take() {
                self.abandoned.push((index, output));
            }
        }
        if connecting {
            let activation = self.connect_mut(index).map(|connect| connect.activation);
            targets[2] = activation.map(|a| Op::conn(Kind::Connect, token, a));
        }
        for target in targets.into_iter().flatten() {
            let slot = self.slot(token);
            slot.cancels += 1;
            let op = Op::conn(Kind::Cancel, token, slot.next_activation());
            self.push(opcode::AsyncCancel::new(target.encode()).build(), op);
        }
        if self.slot(token).idle() {
            self.forget(token);
            return true;
        }
        // The socket stays open until the last completion, but the peer
        // learns of the close now (docs/io_uring.md, "Close and cancel",
        // step 1), as it does on epoll where the close is immediate.
        let _ = link.socket.shutdown(std::net::Shutdown::Both);
        false
    }
}

/// Dropped only when nothing is in flight: a loop that gives up waiting
/// for the kernel forgets the whole driver instead (see `Shard::run`).
impl Drop for UringIo {
    fn drop(&mut self) {
        let _ = self.ring.uring.submitter().unregister_buf_ring(bufs::GROUP);
    }
}

/// The kernel-level scenarios the driver relies on (docs/io_uring.md), on
/// a real ring over a Unix socket pair.
/// The driver's state per connection slot, kept small: every slot up to
/// the most connections the shard has held has one (`Slots::ensure`), so
/// it is part of the memory an idle connection costs.
const _: () = assert!(size_of::<Slot>() <= if cfg!(debug_assertions) { 64 } else { 52 });

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn io(buffers: usize) -> UringIo {
        let ring = Ring::new(64, buffers, 512).expect("io_uring (run `holdfast serve --check`)");
        ring.enable().unwrap();
        let waker = Arc::new(EventWaker::new().unwrap());
        UringIo::new(ring, Arc::default(), waker, 4096)
    }

    /// Posts a receive of at most `len` bytes into a provided buffer, as
    /// `settle_recv` does (`poll_first`: wait for readability first).
    fn recv(io: &mut UringIo, fd: RawFd, len: u32, poll_first: bool, op: Op) {
        let entry = opcode::Recv::new(Fd(fd), std::ptr::null_mut(), len)
            .buf_group(bufs::GROUP)
            .ioprio(if poll_first { RECVSEND_POLL_FIRST } else { 0 })
            .build()
            .flags(io_uring::squeue::Flags::BUFFER_SELECT);
        io.push(entry, op);
    }

    fn cancel(io: &mut UringIo, target: Op, op: Op) {
        io.push(opcode::AsyncCancel::new(target.encode()).build(), op);
    }

    /// Waits until a completion for `op` arrives; returns it, with every
    /// completion seen checked against the tracker.
    fn next_for(io: &mut UringIo, op: Op) -> Completion {
        for _ in 0..50 {
            if let Some(at) = io.cqes.iter().position(|c| c.user_data == op.encode()) {
                let cqe = io.cqes.remove(at).unwrap();
                let last = !io_uring::cqueue::more(cqe.flags);
                assert!(io.tracker.completed(cqe.user_data, last));
                return cqe;
            }
            io.enter(Some(Duration::from_millis(20))).unwrap();
        }
        panic!("no completion for {op:?}");
    }

    /// The buffer a completion carries, its bytes copied out and given back.
    fn take(io: &mut UringIo, cqe: Completion) -> Vec<u8> {
        let bid = io_uring::cqueue::buffer_select(cqe.flags).expect("a provided buffer");
        let bytes = io.ring.bufs.filled(bid, cqe.result as usize).to_vec();
        io.ring.bufs.give_back(bid);
        bytes
    }

    #[test]
    fn a_cancel_aimed_at_a_stale_generation_finds_nothing() {
        let mut io = io(8);
        let (ours, mut peer) = UnixStream::pair().unwrap();
        // Slot 3, generation 2 owns the receive; generation 1 is gone.
        let live = Token((2 << 32) | 3);
        let stale = Token((1 << 32) | 3);
        let receive = Op::conn(Kind::Recv, live, 1);
        recv(&mut io, ours.as_raw_fd(), 512, true, receive);
        let stale_cancel = Op::conn(Kind::Cancel, stale, 2);
        cancel(&mut io, Op::conn(Kind::Recv, stale, 1), stale_cancel);
        assert_eq!(next_for(&mut io, stale_cancel).result, -libc::ENOENT);
        // The live receive is untouched.
        peer.write_all(b"still here").unwrap();
        let cqe = next_for(&mut io, receive);
        assert_eq!(cqe.result, 10);
        assert_eq!(take(&mut io, cqe), b"still here");
        // Close with a receive pending: cancel by its exact user_data; its
        // own final completion (not the cancel's) retires it.
        let again = Op::conn(Kind::Recv, live, 2);
        recv(&mut io, ours.as_raw_fd(), 512, true, again);
        let close = Op::conn(Kind::Cancel, live, 3);
        cancel(&mut io, again, close);
        assert_eq!(next_for(&mut io, close).result, 0);
        let last = next_for(&mut io, again);
        assert_eq!(last.result, -libc::ECANCELED);
        assert!(io_uring::cqueue::buffer_select(last.flags).is_none());
        io.tracker.finish();
    }

    #[test]
    fn a_receive_brings_no_more_than_it_asked_for() {
        let mut io = io(8);
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let token = Token((1 << 32) | 1);
        peer.write_all(&[7u8; 300]).unwrap();
        // 300 bytes wait; the input ring has room for 100: the receive
        // takes 100 and leaves the rest in the socket.
        let first = Op::conn(Kind::Recv, token, 1);
        recv(&mut io, ours.as_raw_fd(), 100, false, first);
        let cqe = next_for(&mut io, first);
        assert_eq!(cqe.result, 100);
        assert_eq!(take(&mut io, cqe).len(), 100);
        let second = Op::conn(Kind::Recv, token, 2);
        recv(&mut io, ours.as_raw_fd(), 512, false, second);
        let cqe = next_for(&mut io, second);
        assert_eq!(cqe.result, 200, "what the first receive left");
        take(&mut io, cqe);
        io.tracker.finish();
    }

    #[test]
    fn an_empty_pool_ends_a_receive_with_enobufs_until_buffers_return() {
        let mut io = io(1);
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let (idle, _idle_peer) = UnixStream::pair().unwrap();
        let token = Token((1 << 32) | 1);
        let waiting = Op::conn(Kind::Recv, Token((1 << 32) | 2), 1);
        // An idle connection's receive waits for readability first: it takes
        // no buffer, so an empty pool does not end it.
        recv(&mut io, idle.as_raw_fd(), 512, true, waiting);
        let first = Op::conn(Kind::Recv, token, 1);
        recv(&mut io, ours.as_raw_fd(), 512, true, first);
        peer.write_all(b"one").unwrap();
        let one = next_for(&mut io, first);
        assert_eq!(one.result, 3);
        // The one buffer is out (not given back yet): bytes that come now
        // end the next receive.
        let second = Op::conn(Kind::Recv, token, 2);
        recv(&mut io, ours.as_raw_fd(), 512, true, second);
        peer.write_all(b"two").unwrap();
        let starved = next_for(&mut io, second);
        assert_eq!(starved.result, -libc::ENOBUFS);
        assert!(io_uring::cqueue::buffer_select(starved.flags).is_none());
        // Give the buffer back, post again: the bytes were kept.
        assert_eq!(take(&mut io, one), b"one");
        let third = Op::conn(Kind::Recv, token, 3);
        recv(&mut io, ours.as_raw_fd(), 512, false, third);
        let cqe = next_for(&mut io, third);
        assert_eq!(take(&mut io, cqe), b"two");
        // The idle connection's receive is still waiting, untouched.
        assert!(io.cqes.iter().all(|c| c.user_data != waiting.encode()));
        let stop = Op::conn(Kind::Cancel, token, 4);
        cancel(&mut io, waiting, stop);
        next_for(&mut io, stop);
        assert_eq!(next_for(&mut io, waiting).result, -libc::ECANCELED);
        io.tracker.finish();
    }

    /// A connected loopback TCP pair, ours non-blocking, the peer's
    /// receive buffer and our send buffer full, so a send waits.
    fn stuck_pair() -> (Socket, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = Socket::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let chunk = [0u8; 65536];
        while (&ours).write(&chunk).is_ok() {}
        (ours, peer)
    }

    #[test]
    fn a_retired_connections_output_ring_is_its_sends_until_the_final_completion() {
        let mut io = io(8);
        let mut pool = Pool::new(4096, 8, 0);
        let (ours, peer) = stuck_pair();
        let token = Token((1 << 32) | 4);
        let mut link = Link::new(ours);
        io.open(token, &link);
        link.output = Some(pool.take());
        link.output
            .as_mut()
            .unwrap()
            .push(b"a reply the peer is not reading");
        assert_eq!(io.flush(token, &mut link, &mut pool).unwrap(), 0);
        io.enter(Some(Duration::ZERO)).unwrap();
        assert!(io.cqes.is_empty(), "the send waits for room");
        // Closing: the ring the kernel may still read leaves the link.
        assert!(!io.retire(token, &mut link));
        assert!(link.output.is_none());
        assert_eq!(pool.free_len(), 0, "not back while the send is in flight");
        for _ in 0..50 {
            io.enter(Some(Duration::from_millis(20))).unwrap();
            while let Some(cqe) = io.cqes.pop_front() {
                let last = !io_uring::cqueue::more(cqe.flags);
                assert!(io.tracker.completed(cqe.user_data, last));
                match Op::decode(cqe.user_data).unwrap().kind {
                    Kind::Recv => {
                        io.on_recv(token, cqe);
                    }
                    Kind::Send => {
                        io.on_send(token, &mut link, &mut pool, cqe);
                    }
                    _ => {
                        io.on_cancel(token);
                    }
                }
            }
            if io.done_with(token) {
                break;
            }
        }
        assert!(io.done_with(token));
        assert_eq!(
            pool.free_len(),
            1,
            "the send's final completion gave it back"
        );
        io.forget(token);
        io.tracker.finish();
        drop(peer);
    }
}
