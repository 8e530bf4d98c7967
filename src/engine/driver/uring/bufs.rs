//! The provided buffer ring (docs/io_uring.md, "Reads"): `count` buffers
//! of `size` bytes that the kernel fills for receives, so an idle
//! connection holds no read memory. A completion hands a buffer over; its
//! bytes are copied into the connection's input ring at once and the buffer
//! goes straight back, so no connection ever keeps one.
//!
//! Both the entries and the buffers are anonymous mappings of their own,
//! not heap allocations: the allocator never sees them. Freed, megabytes of
//! buffers from the heap would raise glibc's dynamic mmap threshold (the
//! backend probe makes and drops a ring at start-up), and from then on the
//! growing connection tables lived in the heap, where each doubling copies
//! and leaves the old copy resident: 668 B of RSS per idle connection
//! instead of 380 (`holdfast bench --idle --conns 10000`, one shard).

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The buffer group id of the shard's one provided buffer ring.
pub const GROUP: u16 = 0;

/// The buffers and the ring of entries the kernel takes them from.
pub struct BufRing {
    /// The ring of entries shared with the kernel, page aligned.
    entries: Mapping,
    /// Our copy of the tail (the kernel only reads it).
    tail: u16,
    mask: u16,
    /// The buffers' memory, `count × size` bytes. Only ever accessed through
    /// raw pointers and per-buffer slices: the kernel writes into buffers
    /// it holds while we read the ones we hold, so no reference may span
    /// the whole allocation.
    memory: Mapping,
    size: usize,
}

/// An anonymous private mapping, zero-filled by the kernel, its pages
/// resident from the start (`MAP_POPULATE`: the kernel fills the buffers in
/// turn, so under load every page is soon in use anyway; a fixed pool
/// should cost what it costs from the first moment), unmapped when
/// dropped.
struct Mapping {
    address: *mut u8,
    len: usize,
}

impl Mapping {
    /// `len` (≥ 1) bytes, page aligned.
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous mapping at an address of the kernel's
        // choice touches no memory of ours; the result is checked.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            address: address.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the owner of
        // the pointers into it (`BufRing`) is being dropped, after the
        // io_uring instance that used them (see `BufRing`'s drop).
        unsafe { libc::munmap(self.address.cast(), self.len) };
    }
}

impl BufRing {
    /// `count` (a power of two, at most 32768) buffers of `size` bytes, all
    /// available to the kernel once registered.
    pub fn new(count: usize, size: usize) -> io::Result<BufRing> {
        assert!(count.is_power_of_two() && count <= 32_768 && size > 0);
        let mut ring = BufRing {
            entries: Mapping::new(count * size_of::<BufRingEntry>())?,
            tail: 0,
            mask: (count - 1) as u16,
            memory: Mapping::new(count * size)?,
            size,
        };
        for bid in 0..count {
            ring.give_back(bid as u16);
        }
        Ok(ring)
    }

    /// The entries' address and count, for `register_buf_ring_with_flags`.
    /// They stay valid until `self` is dropped, which must come after the
    /// ring is unregistered or the io_uring instance closed.
    pub fn registration(&self) -> (u64, u16) {
        (self.entries.address as u64, self.mask.wrapping_add(1))
    }

    /// How many buffers there are. Every completion's buffer goes back
    /// while the completion is handled, so between turns the kernel has
    /// them all.
    pub fn count(&self) -> usize {
        self.mask as usize + 1
    }

    /// The size of one buffer: the most one receive brings.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Hands buffer `bid` to the kernel: at start, and once a completion
    /// that handed it over has been handled (its bytes copied out, or for
    /// nobody: a closed connection, a stray completion).
    pub fn give_back(&mut self, bid: u16) {
        // A bid past the pool would hand the kernel memory we do not own.
        assert!(bid <= self.mask, "buffer id {bid} past the pool");
        let index = (self.tail & self.mask) as usize;
        let address = self.memory.address as u64 + (bid as usize * self.size) as u64;
        // SAFETY: `index` ≤ mask < count, inside the allocation; the kernel
        // does not read this entry until the tail below moves past it.
        let entry = unsafe { &mut *self.entries.address.cast::<BufRingEntry>().add(index) };
        entry.set_addr(address);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field overlays entry 0's reserved field
        // (`BufRingEntry::tail`), a properly aligned u16 in our allocation;
        // the kernel reads it concurrently, hence the atomic release store
        // that publishes the entry written above.
        let tail = unsafe { &*BufRingEntry::tail(self.entries.address.cast()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed
    /// over: copy them out, then [`BufRing::give_back`] the buffer.
    pub fn filled(&self, bid: u16, len: usize) -> &[u8] {
        let b = bid as usize;
        assert!(b <= self.mask as usize && len <= self.size);
        // SAFETY: buffer `b` was handed over by a completion and has not been
        // given back, so the kernel does not write it; the range lies within
        // buffer `b` (checked above), inside the allocation, and lives as
        // long as `self`.
        unsafe { std::slice::from_raw_parts(self.memory.address.add(b * self.size), len) }
    }
}

// SAFETY: the pointers are to memory this value owns alone; the shard
// moves it to its thread before the ring is enabled, and from then on only
// that thread touches it.
unsafe impl Send for BufRing {}

// Dropping a `BufRing` unmaps both mappings (`Mapping`'s drop). Its owner
// drops the io_uring instance first (which unregisters the ring, so the
// kernel neither reads the entries nor writes the buffers any more): the
// field order of `io::Ring` and the unregister in `UringIo`'s drop.

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
                ring.memory.address.add(bid as usize * ring.size),
                bytes.len(),
            )
        };
    }

    #[test]
    fn a_buffer_listeners_kept_is_read_then_given_back_once() {
        let mut ring = BufRing::new(4, 8).unwrap();
        assert_eq!(ring.count(), 4);
        // The kernel hands out buffer 2, filled with 5 bytes.
        fill(&mut ring, 2, b"hello");
        assert_eq!(ring.filled(2, 5), b"hello");
        assert_eq!(ring.filled(2, 2), b"he");
        ring.give_back(2);
        // Four gives at start, one after: the tail moved five entries.
        assert_eq!(ring.tail, 5);
    }

    #[test]
    #[should_panic]
    fn a_length_past_the_buffer_is_refused() {
        let ring = BufRing::new(2, 8).unwrap();
        ring.filled(1, 9);
    }
}
