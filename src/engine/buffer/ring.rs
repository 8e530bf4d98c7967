//! A fixed-capacity byte ring.
//!
//! Invariant: `capacity` is a power of two and never changes; the storage is
//! a boxed slice (stable address, never inside a `Vec` that could move), so a
//! later io_uring backend may point an in-flight operation at it.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::ops::Range;

/// A fixed-capacity FIFO of bytes (power-of-two capacity, never grows).
///
/// Boxed: an `Option<Ring>` is one pointer, so a connection that holds no
/// rings (every idle one: rings come from the shard's pool when bytes do)
/// pays 16 bytes for its two, not 64 (README, "Memory per connection").
pub struct Ring(Box<Cursors>);

/// A ring's storage and where its bytes are.
struct Cursors {
    /// The bytes. Invariant: its length is a non-zero power of two.
    storage: Box<[u8]>,
    /// Index in `storage` of the oldest held byte.
    /// Invariant: `head < capacity`, and `head == 0` whenever `len == 0`.
    head: usize,
    /// Bytes held. Invariant: `len <= capacity`.
    len: usize,
}

impl Ring {
    /// A new empty ring. Panics unless `capacity` is a non-zero power of two
    /// (callers validate sizes at configuration time).
    pub fn with_capacity(capacity: usize) -> Ring {
        assert!(
            capacity.is_power_of_two(),
            "ring capacity {capacity} is not a non-zero power of two"
        );
        Ring(Box::new(Cursors {
            storage: vec![0u8; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }))
    }
    /// Total bytes the ring can hold.
    pub fn capacity(&self) -> usize {
        self.0.storage.len()
    }
    /// Bytes held (readable).
    pub fn len(&self) -> usize {
        self.0.len
    }
    /// No bytes held.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }
    /// No room left.
    pub fn is_full(&self) -> bool {
        self.0.len == self.capacity()
    }
    /// Room left, in bytes (`capacity - len`).
    pub fn free(&self) -> usize {
        self.capacity() - self.0.len
    }
    /// The held bytes in order, as at most two slices (the second is empty
    /// unless the data wraps around the end of the storage).
    pub fn readable(&self) -> (&[u8], &[u8]) {
        let (first, second) = self.span(0, self.0.len);
        (&self.0.storage[first], &self.0.storage[second])
    }
    /// The free space in order, as at most two slices. Bytes written there
    /// become readable only after [`Ring::commit`].
    pub fn writable(&mut self) -> (&mut [u8], &mut [u8]) {
        let end = self.0.head + self.0.len;
        let capacity = self.capacity();
        if end < capacity {
            // Held bytes sit in [head, end): free space is the tail of the
            // storage, then its start up to the head.
            let (before, after) = self.0.storage.split_at_mut(end);
            (after, &mut before[..self.0.head])
        } else {
            // Held bytes wrap (or exactly reach the end): free space is the
            // single gap between where they stop and where they start.
            (&mut self.0.storage[end - capacity..self.0.head], &mut [])
        }
    }
    /// Marks `n` bytes at the start of [`Ring::writable`] as written.
    /// Panics if `n > free()`.
    pub fn commit(&mut self, n: usize) {
        assert!(
            n <= self.free(),
            "commit of {n} bytes, {} free",
            self.free()
        );
        self.0.len += n;
    }
    /// Drops `n` bytes from the front. Panics if `n > len()`.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.0.len, "consume of {n} bytes, {} held", self.0.len);
        self.0.len -= n;
        self.0.head = if self.0.len == 0 {
            // Starting over at 0 keeps the next bytes in one slice, so
            // decoders rarely see a frame straddle the wrap.
            0
        } else {
            (self.0.head + n) & self.mask()
        };
    }
    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let (first, second) = self.writable();
        let n = data.len().min(first.len() + second.len());
        let split = n.min(first.len());
        first[..split].copy_from_slice(&data[..split]);
        second[..n - split].copy_from_slice(&data[split..n]);
        self.commit(n);
        n
    }
    /// Overwrites `bytes` at `offset` from the front of the held bytes
    /// (used to back-fill a length header). Panics if the range is not held.
    pub fn overwrite(&mut self, offset: usize, bytes: &[u8]) {
        let (first, second) = self.span(offset, bytes.len());
        let split = first.len();
        self.0.storage[first].copy_from_slice(&bytes[..split]);
        self.0.storage[second].copy_from_slice(&bytes[split..]);
    }
    /// Copies the held bytes `[start, start + dst.len())` into `dst`.
    /// Panics if the range is not held.
    pub fn copy_out(&self, start: usize, dst: &mut [u8]) {
        let (first, second) = self.span(start, dst.len());
        let split = first.len();
        dst[..split].copy_from_slice(&self.0.storage[first]);
        dst[split..].copy_from_slice(&self.0.storage[second]);
    }
    /// One read from `src` into the free space; commits what was read and
    /// returns its count (0 means end of stream, or a full ring: callers
    /// check `is_full` first).
    pub fn read_from<R: Read>(&mut self, src: &mut R) -> io::Result<usize> {
        self.read_from_at_most(src, usize::MAX)
    }
    /// As [`Ring::read_from`], reading at most `max` bytes.
    pub fn read_from_at_most<R: Read>(&mut self, src: &mut R, max: usize) -> io::Result<usize> {
        if self.is_full() || max == 0 {
            // A zero-length read would tell us nothing; skip the syscall.
            return Ok(0);
        }
        let (first, second) = self.writable();
        let first_len = first.len().min(max);
        let second_len = second.len().min(max - first_len);
        let (first, second) = (&mut first[..first_len], &mut second[..second_len]);
        // One slice (the usual case, since an emptied ring restarts at 0)
        // is a plain read(2): the kernel's readv path costs more (it
        // imports an iovec array) for the same bytes.
        let n = if second.is_empty() {
            src.read(first)?
        } else {
            src.read_vectored(&mut [IoSliceMut::new(first), IoSliceMut::new(second)])?
        };
        self.commit(n);
        Ok(n)
    }
    /// One vectored write (`writev`) of the held bytes to `dst`; consumes
    /// what was written and returns its count.
    pub fn write_to<W: Write>(&mut self, dst: &mut W) -> io::Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let (first, second) = self.readable();
        // As in `read_from`: write(2) for one slice, writev(2) for two.
        let n = if second.is_empty() {
            dst.write(first)?
        } else {
            dst.write_vectored(&[IoSlice::new(first), IoSlice::new(second)])?
        };
        self.consume(n);
        Ok(n)
    }
    /// Drops the newest bytes so that `len` remain (undoing pushes not yet
    /// read). Panics if `len > len()`.
    pub fn truncate(&mut self, len: usize) {
        assert!(
            len <= self.0.len,
            "truncate to {len} bytes, {} held",
            self.0.len
        );
        self.0.len = len;
        if len == 0 {
            self.0.head = 0;
        }
    }
    /// Forgets every held byte.
    pub fn clear(&mut self) {
        self.0.head = 0;
        self.0.len = 0;
    }

    fn mask(&self) -> usize {
        self.capacity() - 1
    }

    /// Where the held bytes `[offset, offset + len)` lie in `storage`: up to
    /// the end of the storage, then from its start (often empty). Panics if
    /// the range is not held.
    fn span(&self, offset: usize, len: usize) -> (Range<usize>, Range<usize>) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.0.len),
            "range {offset}+{len} outside the {} held bytes",
            self.0.len
        );
        let start = (self.0.head + offset) & self.mask();
        let first_len = len.min(self.capacity() - start);
        debug_assert!(len - first_len <= start, "span overlaps itself");
        (start..start + first_len, 0..len - first_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::io::Cursor;

    fn held(ring: &Ring) -> Vec<u8> {
        let (first, second) = ring.readable();
        [first, second].concat()
    }

    /// A ring of 8 holding the bytes `0..=5` across the wrap: 2 at the end
    /// of the storage, 4 at its start.
    fn wrapped() -> Ring {
        let mut ring = Ring::with_capacity(8);
        assert_eq!(ring.push(&[9; 6]), 6);
        ring.consume(6);
        // consume emptied it, so it restarted at 0; refill past the wrap.
        assert_eq!(ring.push(&[9; 6]), 6);
        ring.consume(5);
        assert_eq!(ring.push(&[0, 1, 2, 3, 4]), 5);
        ring.consume(1);
        assert_eq!(ring.push(&[5]), 1);
        ring
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn capacity_must_be_a_power_of_two() {
        Ring::with_capacity(12);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn capacity_must_not_be_zero() {
        Ring::with_capacity(0);
    }

    #[test]
    fn empty() {
        let mut ring = Ring::with_capacity(8);
        assert!(ring.is_empty());
        assert!(!ring.is_full());
        assert_eq!((ring.len(), ring.free(), ring.capacity()), (0, 8, 8));
        assert_eq!(ring.readable(), (&[][..], &[][..]));
        let (first, second) = ring.writable();
        assert_eq!((first.len(), second.len()), (8, 0));
    }

    #[test]
    fn full() {
        let mut ring = Ring::with_capacity(8);
        assert_eq!(ring.push(b"0123456789"), 8);
        assert!(ring.is_full());
        assert_eq!(ring.free(), 0);
        assert_eq!(ring.push(b"x"), 0);
        assert_eq!(held(&ring), b"01234567");
        let (first, second) = ring.writable();
        assert_eq!((first.len(), second.len()), (0, 0));
    }

    #[test]
    fn full_across_the_wrap() {
        let mut ring = Ring::with_capacity(8);
        ring.push(b"abc");
        ring.consume(2);
        assert_eq!(ring.push(b"01234567"), 7);
        assert!(ring.is_full());
        assert_eq!(held(&ring), b"c0123456");
        let (first, second) = ring.writable();
        assert_eq!((first.len(), second.len()), (0, 0));
    }

    #[test]
    fn wrap_around() {
        let ring = wrapped();
        assert_eq!(ring.readable(), (&[0, 1][..], &[2, 3, 4, 5][..]));
        assert_eq!(ring.len(), 6);
    }

    #[test]
    fn writable_split_in_two_before_the_wrap() {
        let mut ring = Ring::with_capacity(8);
        ring.push(b"abcde");
        ring.consume(3);
        let (first, second) = ring.writable();
        assert_eq!((first.len(), second.len()), (3, 3));
        first.copy_from_slice(b"fgh");
        second[..1].copy_from_slice(b"i");
        ring.commit(4);
        assert_eq!(ring.readable(), (&b"defgh"[..], &b"i"[..]));
    }

    #[test]
    fn consume_to_empty_restarts_at_zero() {
        let mut ring = Ring::with_capacity(8);
        ring.push(b"abcdef");
        ring.consume(6);
        assert_eq!(ring.push(b"0123456"), 7);
        assert_eq!(ring.readable(), (&b"0123456"[..], &[][..]));
    }

    #[test]
    fn clear_forgets_everything() {
        let mut ring = wrapped();
        ring.clear();
        assert!(ring.is_empty());
        assert_eq!(ring.push(b"01234567"), 8);
        assert_eq!(ring.readable(), (&b"01234567"[..], &[][..]));
    }

    #[test]
    #[should_panic(expected = "commit of 9 bytes")]
    fn commit_past_free_panics() {
        Ring::with_capacity(8).commit(9);
    }

    #[test]
    #[should_panic(expected = "consume of 1 bytes")]
    fn consume_past_len_panics() {
        Ring::with_capacity(8).consume(1);
    }

    #[test]
    fn overwrite_across_the_wrap() {
        let mut ring = wrapped();
        ring.overwrite(1, b"ABCD");
        assert_eq!(held(&ring), [0, b'A', b'B', b'C', b'D', 5]);
    }

    #[test]
    #[should_panic(expected = "outside the 6 held bytes")]
    fn overwrite_past_len_panics() {
        wrapped().overwrite(4, b"abc");
    }

    #[test]
    fn copy_out_across_the_wrap() {
        let ring = wrapped();
        let mut dst = [0u8; 4];
        ring.copy_out(1, &mut dst);
        assert_eq!(dst, [1, 2, 3, 4]);
        ring.copy_out(2, &mut dst[..0]);
    }

    #[test]
    #[should_panic(expected = "outside the 6 held bytes")]
    fn copy_out_past_len_panics() {
        wrapped().copy_out(3, &mut [0u8; 4]);
    }

    #[test]
    fn read_from_a_cursor_fills_both_slices() {
        let mut ring = Ring::with_capacity(8);
        ring.push(b"abcdef");
        ring.consume(4);
        let mut src = Cursor::new(b"0123456789".to_vec());
        assert_eq!(ring.read_from(&mut src).unwrap(), 6);
        assert_eq!(ring.readable(), (&b"ef01"[..], &b"2345"[..]));
        assert_eq!(ring.read_from(&mut src).unwrap(), 0, "full ring");
        ring.consume(8);
        assert_eq!(ring.read_from(&mut src).unwrap(), 4);
        assert_eq!(ring.read_from(&mut src).unwrap(), 0, "end of stream");
        assert_eq!(held(&ring), b"6789");
    }

    #[test]
    fn read_from_at_most_stops_at_its_limit_across_the_wrap() {
        let mut ring = Ring::with_capacity(8);
        ring.push(b"abcdef");
        ring.consume(4);
        let mut src = Cursor::new(b"0123456789".to_vec());
        // Two bytes fit before the wrap: the limit of 3 takes one more
        // from the start of the storage, and no further.
        assert_eq!(ring.read_from_at_most(&mut src, 3).unwrap(), 3);
        assert_eq!(held(&ring), b"ef012");
        assert_eq!(ring.read_from_at_most(&mut src, 0).unwrap(), 0);
        assert_eq!(ring.read_from_at_most(&mut src, 100).unwrap(), 3, "full");
        assert_eq!(held(&ring), b"ef012345");
    }

    #[test]
    fn write_to_a_cursor_drains_both_slices() {
        let mut ring = wrapped();
        let mut dst = Cursor::new(Vec::new());
        assert_eq!(ring.write_to(&mut dst).unwrap(), 6);
        assert!(ring.is_empty());
        assert_eq!(dst.into_inner(), [0, 1, 2, 3, 4, 5]);
        assert_eq!(ring.write_to(&mut Vec::new()).unwrap(), 0);
    }

    /// Moves at most one byte per call, like a socket under pressure.
    struct Trickle(VecDeque<u8>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (buf.first_mut(), self.0.front()) {
                (Some(slot), Some(&byte)) => {
                    *slot = byte;
                    self.0.pop_front();
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend(buf.first());
            Ok(buf.len().min(1))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn read_from_one_byte_at_a_time_across_the_wrap() {
        let mut ring = Ring::with_capacity(8);
        ring.push(b"abcdef");
        ring.consume(5);
        let mut src = Trickle((0..7).collect());
        for expected in 1..=7 {
            assert_eq!(ring.read_from(&mut src).unwrap(), 1);
            assert_eq!(ring.len(), 1 + expected);
        }
        assert_eq!(held(&ring), [b'f', 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(ring.readable().1.len(), 5, "the reads wrapped");
    }

    #[test]
    fn write_to_one_byte_at_a_time_across_the_wrap() {
        let mut ring = wrapped();
        let mut dst = Trickle(VecDeque::new());
        while !ring.is_empty() {
            assert_eq!(ring.write_to(&mut dst).unwrap(), 1);
        }
        assert_eq!(Vec::from(dst.0), [0, 1, 2, 3, 4, 5]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(Vec<u8>),
        Consume(usize),
        /// Write this many bytes through `writable`, then commit them.
        Commit(u8, usize),
        Overwrite(usize, Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Op::Push),
            (0usize..40).prop_map(Op::Consume),
            (any::<u8>(), 0usize..40).prop_map(|(b, n)| Op::Commit(b, n)),
            (0usize..32, prop::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(at, bytes)| Op::Overwrite(at, bytes)),
        ]
    }

    proptest! {
        /// Any sequence of operations leaves the ring holding what a
        /// `VecDeque` would (out-of-range requests are clamped, since they
        /// would panic by contract).
        #[test]
        fn behaves_like_a_vecdeque(ops in prop::collection::vec(op(), 0..100)) {
            let mut ring = Ring::with_capacity(32);
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(data) => {
                        let n = ring.push(&data);
                        prop_assert_eq!(n, data.len().min(32 - model.len()));
                        model.extend(&data[..n]);
                    }
                    Op::Consume(n) => {
                        let n = n.min(model.len());
                        ring.consume(n);
                        model.drain(..n);
                    }
                    Op::Commit(byte, n) => {
                        let n = n.min(ring.free());
                        let (first, second) = ring.writable();
                        prop_assert_eq!(first.len() + second.len(), 32 - model.len());
                        first.iter_mut().chain(second.iter_mut()).take(n).for_each(|b| *b = byte);
                        ring.commit(n);
                        model.extend(std::iter::repeat_n(byte, n));
                    }
                    Op::Overwrite(at, bytes) => {
                        if at + bytes.len() <= model.len() {
                            ring.overwrite(at, &bytes);
                            for (i, b) in bytes.iter().enumerate() {
                                model[at + i] = *b;
                            }
                        }
                    }
                }
                prop_assert_eq!(held(&ring), Vec::from(model.clone()));
                prop_assert_eq!(ring.len(), model.len());
                prop_assert_eq!(ring.free(), 32 - model.len());
                if !model.is_empty() {
                    let mut out = vec![0u8; model.len() - 1];
                    ring.copy_out(1, &mut out);
                    prop_assert_eq!(&out[..], &Vec::from(model.clone())[1..]);
                }
            }
        }
    }
}
