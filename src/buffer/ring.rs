//! A fixed-capacity byte ring.
//!
//! Invariant: `capacity` is a power of two and never changes; the storage is
//! a boxed slice (stable address, never inside a `Vec` that could move), so a
//! later io_uring backend may point an in-flight operation at it.

use std::io::{self, Read, Write};

/// A fixed-capacity FIFO of bytes (power-of-two capacity, never grows).
pub struct Ring {
    _todo: (),
}

impl Ring {
    /// A new empty ring. Panics unless `capacity` is a non-zero power of two
    /// (callers validate sizes at configuration time).
    pub fn with_capacity(capacity: usize) -> Ring {
        let _ = capacity;
        todo!()
    }
    /// Total bytes the ring can hold.
    pub fn capacity(&self) -> usize {
        todo!()
    }
    /// Bytes held (readable).
    pub fn len(&self) -> usize {
        todo!()
    }
    /// No bytes held.
    pub fn is_empty(&self) -> bool {
        todo!()
    }
    /// No room left.
    pub fn is_full(&self) -> bool {
        todo!()
    }
    /// Room left, in bytes (`capacity - len`).
    pub fn free(&self) -> usize {
        todo!()
    }
    /// The held bytes in order, as at most two slices (the second is empty
    /// unless the data wraps around the end of the storage).
    pub fn readable(&self) -> (&[u8], &[u8]) {
        todo!()
    }
    /// The free space in order, as at most two slices. Bytes written there
    /// become readable only after [`Ring::commit`].
    pub fn writable(&mut self) -> (&mut [u8], &mut [u8]) {
        todo!()
    }
    /// Marks `n` bytes at the start of [`Ring::writable`] as written.
    /// Panics if `n > free()`.
    pub fn commit(&mut self, n: usize) {
        let _ = n;
        todo!()
    }
    /// Drops `n` bytes from the front. Panics if `n > len()`.
    pub fn consume(&mut self, n: usize) {
        let _ = n;
        todo!()
    }
    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let _ = data;
        todo!()
    }
    /// Overwrites `bytes` at `offset` from the front of the held bytes
    /// (used to back-fill a length header). Panics if the range is not held.
    pub fn overwrite(&mut self, offset: usize, bytes: &[u8]) {
        let _ = (offset, bytes);
        todo!()
    }
    /// Copies the held bytes `[start, start + dst.len())` into `dst`.
    /// Panics if the range is not held.
    pub fn copy_out(&self, start: usize, dst: &mut [u8]) {
        let _ = (start, dst);
        todo!()
    }
    /// One vectored read (`readv`) from `src` into the free space; commits
    /// what was read and returns its count (0 means end of stream, or a full
    /// ring: callers check `is_full` first).
    pub fn read_from<R: Read>(&mut self, src: &mut R) -> io::Result<usize> {
        let _ = src;
        todo!()
    }
    /// One vectored write (`writev`) of the held bytes to `dst`; consumes
    /// what was written and returns its count.
    pub fn write_to<W: Write>(&mut self, dst: &mut W) -> io::Result<usize> {
        let _ = dst;
        todo!()
    }
    /// Forgets every held byte.
    pub fn clear(&mut self) {
        todo!()
    }
}
