//! The provided buffer ring (IO_URING.md §4): `count` buffers of `size`
//! bytes that the kernel fills for multishot receives, so an idle
//! connection holds no read memory. A buffer a completion hands over is
//! held until its bytes are copied into the connection's input ring, then
//! given back exactly once. Held buffers are chained per connection in
//! arrival order through `next` (no allocation).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The buffer group id of the shard's one provided buffer ring.
pub const GROUP: u16 = 0;

/// End of a held chain.
const NONE: u16 = u16::MAX;

/// The buffers and the ring of entries the kernel takes them from.
pub struct BufRing {
    /// The ring of entries shared with the kernel, page aligned.
    entries: *mut BufRingEntry,
    layout: Layout,
    /// Our copy of the tail (the kernel only reads it).
    tail: u16,
    mask: u16,
    /// The buffers' memory, `count × size` bytes. Only ever accessed through
    /// raw pointers and per-buffer slices: the kernel writes into buffers
    /// it holds while we read the ones we hold, so no reference may span
    /// the whole allocation.
    memory: *mut u8,
    memory_layout: Layout,
    size: usize,
    /// Per buffer: bytes of it not yet copied, where they start, and the
    /// next buffer in the same connection's chain.
    len: Box<[u32]>,
    start: Box<[u32]>,
    next: Box<[u16]>,
    /// Buffers the kernel has (given back and not yet handed out again).
    available: usize,
}

/// A connection's held buffers, oldest first.
#[derive(Clone, Copy, Debug)]
pub struct Chain {
    head: u16,
    tail: u16,
    /// Buffers in the chain.
    pub count: u16,
}

impl Default for Chain {
    fn default() -> Chain {
        Chain {
            head: NONE,
            tail: NONE,
            count: 0,
        }
    }
}

impl Chain {
    /// No buffer held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl BufRing {
    /// `count` (a power of two, at most 32768) buffers of `size` bytes, all
    /// available to the kernel once registered.
    pub fn new(count: usize, size: usize) -> BufRing {
        assert!(count.is_power_of_two() && count <= 32_768);
        let layout = Layout::from_size_align(count * size_of::<BufRingEntry>(), 4096)
            .expect("buffer ring layout");
        // SAFETY: the layout has a non-zero size (count ≥ 1); the pointer is
        // checked for null below and freed with the same layout in `drop`.
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        assert!(!entries.is_null(), "out of memory for the buffer ring");
        let memory_layout = Layout::from_size_align(count * size, 4096).expect("buffers layout");
        // SAFETY: as above (count and size are at least 1).
        let memory = unsafe { alloc_zeroed(memory_layout) };
        assert!(!memory.is_null(), "out of memory for the receive buffers");
        let mut ring = BufRing {
            entries,
            layout,
            tail: 0,
            mask: (count - 1) as u16,
            memory,
            memory_layout,
            size,
            len: vec![0; count].into_boxed_slice(),
            start: vec![0; count].into_boxed_slice(),
            next: vec![NONE; count].into_boxed_slice(),
            available: 0,
        };
        for bid in 0..count {
            ring.give(bid as u16);
        }
        ring
    }

    /// The entries' address and count, for `register_buf_ring_with_flags`.
    /// They stay valid until `self` is dropped, which must come after the
    /// ring is unregistered or the io_uring instance closed.
    pub fn registration(&self) -> (u64, u16) {
        (self.entries as u64, self.mask.wrapping_add(1))
    }

    /// Buffers the kernel may fill now.
    pub fn available(&self) -> usize {
        self.available
    }

    /// Hands buffer `bid` back to the kernel.
    fn give(&mut self, bid: u16) {
        let index = (self.tail & self.mask) as usize;
        let address = self.memory as u64 + (bid as usize * self.size) as u64;
        // SAFETY: `index` ≤ mask < count, inside the allocation; the kernel
        // does not read this entry until the tail below moves past it.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(address);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field overlays entry 0's reserved field
        // (`BufRingEntry::tail`), a properly aligned u16 in our allocation;
        // the kernel reads it concurrently, hence the atomic release store
        // that publishes the entry written above.
        let tail = unsafe { &*BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
        self.available += 1;
    }

    /// A receive completion handed over `bid` with `len` bytes: append it
    /// to `chain` (an empty buffer goes straight back).
    pub fn hold(&mut self, chain: &mut Chain, bid: u16, len: usize) {
        self.available -= 1;
        if len == 0 {
            self.give(bid);
            return;
        }
        let b = bid as usize;
        self.len[b] = len as u32;
        self.start[b] = 0;
        self.next[b] = NONE;
        if chain.tail == NONE {
            chain.head = bid;
        } else {
            self.next[chain.tail as usize] = bid;
        }
        chain.tail = bid;
        chain.count += 1;
    }

    /// A completion carried `bid` for nobody (a closed connection, a stray
    /// completion): give it back at once.
    pub fn drop_buffer(&mut self, bid: u16) {
        self.available -= 1;
        self.give(bid);
    }

    /// The oldest held bytes of `chain`.
    pub fn front(&self, chain: &Chain) -> Option<&[u8]> {
        if chain.head == NONE {
            return None;
        }
        let b = chain.head as usize;
        let start = b * self.size + self.start[b] as usize;
        // SAFETY: buffer `b` is held (a completion handed it over and it
        // has not been given back), so the kernel does not write it; the
        // range lies within buffer `b` (start + len ≤ its size), inside the
        // allocation, and lives as long as `self`.
        Some(unsafe { std::slice::from_raw_parts(self.memory.add(start), self.len[b] as usize) })
    }

    /// `n` bytes of the front of `chain` were copied out; a buffer emptied
    /// goes back to the kernel.
    pub fn consume(&mut self, chain: &mut Chain, n: usize) {
        let b = chain.head as usize;
        debug_assert!(chain.head != NONE && n <= self.len[b] as usize);
        self.len[b] -= n as u32;
        self.start[b] += n as u32;
        if self.len[b] == 0 {
            chain.head = self.next[b];
            if chain.head == NONE {
                chain.tail = NONE;
            }
            chain.count -= 1;
            self.give(b as u16);
        }
    }

    /// Gives back every buffer of `chain` (the connection is closing).
    pub fn clear(&mut self, chain: &mut Chain) {
        while chain.head != NONE {
            let len = self.len[chain.head as usize] as usize;
            self.consume(chain, len);
        }
    }
}

// SAFETY: the pointers are to memory this value owns alone; the shard
// moves it to its thread before the ring is enabled, and from then on only
// that thread touches it.
unsafe impl Send for BufRing {}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both allocated in `new` with these layouts; the owner drops
        // the io_uring instance (which unregisters the ring, so the kernel
        // neither reads the entries nor writes the buffers any more) first.
        unsafe {
            dealloc(self.entries.cast(), self.layout);
            dealloc(self.memory, self.memory_layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the kernel: writes `bytes` into buffer `bid`.
    fn fill(ring: &mut BufRing, bid: u16, bytes: &[u8]) {
        assert!(bytes.len() <= ring.size);
        // SAFETY: in bounds of buffer `bid`; no kernel in these tests.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                ring.memory.add(bid as usize * ring.size),
                bytes.len(),
            )
        };
    }

    #[test]
    fn chains_keep_order_and_give_each_buffer_back_once() {
        let mut ring = BufRing::new(4, 8);
        assert_eq!(ring.available(), 4);
        let mut chain = Chain::default();
        // The kernel hands out buffers 2 then 0, filled with 5 and 3 bytes.
        fill(&mut ring, 2, b"hello");
        fill(&mut ring, 0, b"abc");
        ring.hold(&mut chain, 2, 5);
        ring.hold(&mut chain, 0, 3);
        assert_eq!(ring.available(), 2);
        assert_eq!(chain.count, 2);
        assert_eq!(ring.front(&chain), Some(&b"hello"[..]));
        ring.consume(&mut chain, 2);
        assert_eq!(ring.front(&chain), Some(&b"llo"[..]));
        assert_eq!(ring.available(), 2);
        ring.consume(&mut chain, 3);
        assert_eq!(ring.available(), 3);
        assert_eq!(ring.front(&chain), Some(&b"abc"[..]));
        ring.clear(&mut chain);
        assert!(chain.is_empty());
        assert_eq!(ring.front(&chain), None);
        assert_eq!(ring.available(), 4);
        // Four gives at start, two after: the tail moved six entries.
        assert_eq!(ring.tail, 6);
    }

    #[test]
    fn an_empty_buffer_goes_straight_back() {
        let mut ring = BufRing::new(2, 8);
        let mut chain = Chain::default();
        ring.hold(&mut chain, 1, 0);
        assert!(chain.is_empty());
        assert_eq!(ring.available(), 2);
    }
}
