//! `frame`: a u32 big-endian payload length, then the payload.

use super::{DecodeError, Decoded, Input};

/// Length of the header.
pub const HEADER_LEN: usize = 4;

/// Decodes the first frame of `input`.
pub fn decode(input: Input<'_>, max_frame: usize) -> Decoded {
    if input.len() < HEADER_LEN {
        return Decoded::NeedMore;
    }
    let mut header = [0u8; HEADER_LEN];
    input.copy_to(0, &mut header);
    let len = u32::from_be_bytes(header);
    // Judge the announced length before any payload is buffered: a peer must
    // not make us wait for (or hold) bytes we will reject anyway.
    let len = match usize::try_from(len) {
        Ok(len) if len <= max_frame => len,
        _ => {
            return Decoded::Error(DecodeError::FrameTooLarge {
                len: u64::from(len),
                max: max_frame,
            });
        }
    };
    let consumed = HEADER_LEN + len;
    if input.len() < consumed {
        return Decoded::NeedMore;
    }
    Decoded::Frame {
        start: HEADER_LEN,
        len,
        consumed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codec::tests::serve;
    use crate::engine::codec::{Codec, Protocol};
    use proptest::prelude::*;

    fn frame(len: usize) -> Decoded {
        Decoded::Frame {
            start: HEADER_LEN,
            len,
            consumed: HEADER_LEN + len,
        }
    }

    fn encode(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = Vec::new();
        for payload in payloads {
            stream.extend((payload.len() as u32).to_be_bytes());
            stream.extend(payload);
        }
        stream
    }

    #[test]
    fn empty_input_needs_more() {
        assert_eq!(decode(Input::new(&[], &[]), 8), Decoded::NeedMore);
    }

    #[test]
    fn partial_header_needs_more() {
        assert_eq!(decode(Input::new(&[0, 0, 0], &[]), 8), Decoded::NeedMore);
    }

    #[test]
    fn partial_payload_needs_more() {
        assert_eq!(
            decode(Input::new(b"\0\0\0\x03ab", &[]), 8),
            Decoded::NeedMore
        );
    }

    #[test]
    fn zero_length_frame() {
        assert_eq!(decode(Input::new(&[0, 0, 0, 0], &[]), 8), frame(0));
    }

    #[test]
    fn two_frames_in_one_read() {
        let stream = b"\0\0\0\x02ab\0\0\0\x01c";
        assert_eq!(decode(Input::new(stream, &[]), 8), frame(2));
        assert_eq!(decode(Input::new(&stream[6..], &[]), 8), frame(1));
    }

    #[test]
    fn frame_split_across_reads() {
        let stream = b"\0\0\0\x03abc";
        for cut in 0..stream.len() {
            assert_eq!(
                decode(Input::new(&stream[..cut], &[]), 8),
                Decoded::NeedMore
            );
        }
        assert_eq!(decode(Input::new(stream, &[]), 8), frame(3));
    }

    #[test]
    fn frame_wrapping_the_ring() {
        // Header and payload each straddle the wrap at some cut.
        let stream = b"\0\0\0\x03abc";
        for cut in 0..=stream.len() {
            let (first, second) = stream.split_at(cut);
            assert_eq!(
                decode(Input::new(first, second), 8),
                frame(3),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn frame_exactly_max_frame_accepted() {
        assert_eq!(decode(Input::new(b"\0\0\0\x03abc", &[]), 3), frame(3));
    }

    #[test]
    fn oversized_frame_rejected() {
        let error = DecodeError::FrameTooLarge { len: 4, max: 3 };
        assert_eq!(
            decode(Input::new(b"\0\0\0\x04abcd", &[]), 3),
            Decoded::Error(error)
        );
    }

    #[test]
    fn oversized_header_rejected_before_payload() {
        let error = DecodeError::FrameTooLarge {
            len: u64::from(u32::MAX),
            max: 1024,
        };
        let header = [0xff; 4];
        assert_eq!(
            decode(Input::new(&header[..1], &header[1..]), 1024),
            Decoded::Error(error)
        );
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_frames(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=60), 0..40),
            chunk_sizes in prop::collection::vec(1usize..100, 1..20),
        ) {
            // 4 bytes of header + 60 = the ring's 64.
            let codec = Codec::new(Protocol::Frame, 60);
            let decoded = serve(codec, 64, &encode(&payloads), &chunk_sizes).unwrap();
            prop_assert_eq!(decoded, payloads);
        }

        /// An oversized header in a stream is reported, whatever the chunking.
        #[test]
        fn oversized_frame_in_a_stream_rejected(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=60), 0..5),
            chunk_sizes in prop::collection::vec(1usize..100, 1..20),
        ) {
            let mut stream = encode(&payloads);
            stream.extend(61u32.to_be_bytes());
            let error = DecodeError::FrameTooLarge { len: 61, max: 60 };
            let codec = Codec::new(Protocol::Frame, 60);
            prop_assert_eq!(serve(codec, 64, &stream, &chunk_sizes), Err(error));
        }
    }
}
