//! `echo`: raw bytes; whatever has arrived (up to `max_frame`) is a frame.

use super::{Decoded, Input};

/// Decodes the first frame of `input`.
pub fn decode(input: Input<'_>, max_frame: usize) -> Decoded {
    // A zero limit would yield empty frames forever: the caller would spin.
    assert!(max_frame > 0, "echo needs max_frame > 0");
    if input.is_empty() {
        return Decoded::NeedMore;
    }
    let len = input.len().min(max_frame);
    Decoded::Frame {
        start: 0,
        len,
        consumed: len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codec::tests::serve;
    use crate::engine::codec::{Codec, Protocol};
    use proptest::prelude::*;

    #[test]
    fn empty_input_needs_more() {
        assert_eq!(decode(Input::new(&[], &[]), 8), Decoded::NeedMore);
    }

    #[test]
    fn whatever_arrived_is_one_frame() {
        let frame = Decoded::Frame {
            start: 0,
            len: 5,
            consumed: 5,
        };
        assert_eq!(decode(Input::new(b"hello", &[]), 8), frame);
        assert_eq!(decode(Input::new(b"he", b"llo"), 8), frame);
    }

    #[test]
    fn more_than_max_frame_is_cut_at_max_frame() {
        let frame = Decoded::Frame {
            start: 0,
            len: 3,
            consumed: 3,
        };
        assert_eq!(decode(Input::new(b"hello", &[]), 3), frame);
    }

    #[test]
    fn frame_wrapping_the_ring() {
        let frames = serve(
            Codec::new(Protocol::Echo, 16),
            16,
            b"0123456789abcdefghij",
            &[10, 10],
        );
        assert_eq!(frames.unwrap().concat(), b"0123456789abcdefghij");
    }

    proptest! {
        /// Echo keeps no boundaries, so any chunking yields the stream back,
        /// in pieces of at most max_frame.
        #[test]
        fn any_chunking_yields_the_stream(
            stream in prop::collection::vec(any::<u8>(), 0..2000),
            chunk_sizes in prop::collection::vec(1usize..200, 1..20),
            max_frame in 1usize..=64,
        ) {
            let codec = Codec::new(Protocol::Echo, max_frame);
            let frames = serve(codec, 64, &stream, &chunk_sizes).unwrap();
            prop_assert!(frames.iter().all(|f| !f.is_empty() && f.len() <= max_frame));
            prop_assert_eq!(frames.concat(), stream);
        }
    }
}
