//! `line`: `\n`-terminated lines, bounded by `max_frame` payload bytes.

use super::{DecodeError, Decoded, Input};

/// Decodes the first line of `input`; `progress` remembers how far the
/// newline search got.
pub fn decode(input: Input<'_>, max_frame: usize, progress: &mut usize) -> Decoded {
    // Input only grows between calls (the caller consumes after a frame, and
    // we reset `progress` then), so every byte before `progress` was already
    // found not to be a newline. Resuming there keeps a line dripped one byte
    // per call linear overall instead of quadratic.
    debug_assert!(*progress <= input.len(), "progress past the input");
    match input.find(b'\n', *progress) {
        // The bytes before the newline, `\r` included, are the payload the
        // limit applies to.
        Some(newline) if newline <= max_frame => {
            *progress = 0;
            let crlf = newline > 0 && input.byte(newline - 1) == b'\r';
            Decoded::Frame {
                start: 0,
                len: newline - usize::from(crlf),
                consumed: newline + 1,
            }
        }
        // No newline among the first max_frame + 1 bytes: it can no longer
        // come in time, so fail now rather than buffer a line we would reject.
        Some(_) => too_long(max_frame, progress),
        None if input.len() > max_frame => too_long(max_frame, progress),
        None => {
            *progress = input.len();
            Decoded::NeedMore
        }
    }
}

fn too_long(max_frame: usize, progress: &mut usize) -> Decoded {
    *progress = 0;
    Decoded::Error(DecodeError::LineTooLong { max: max_frame })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codec::tests::serve;
    use crate::engine::codec::{Codec, Protocol};
    use proptest::prelude::*;

    fn line(input: &[u8], max_frame: usize) -> Decoded {
        decode(Input::new(input, &[]), max_frame, &mut 0)
    }

    fn frame(len: usize, consumed: usize) -> Decoded {
        Decoded::Frame {
            start: 0,
            len,
            consumed,
        }
    }

    const TOO_LONG: Decoded = Decoded::Error(DecodeError::LineTooLong { max: 4 });

    #[test]
    fn empty_input_needs_more() {
        assert_eq!(line(b"", 4), Decoded::NeedMore);
    }

    #[test]
    fn partial_line_needs_more() {
        assert_eq!(line(b"abc", 4), Decoded::NeedMore);
        assert_eq!(line(b"abc\r", 4), Decoded::NeedMore);
    }

    #[test]
    fn newline_ends_a_frame() {
        assert_eq!(line(b"abc\n", 4), frame(3, 4));
    }

    #[test]
    fn empty_line_is_an_empty_frame() {
        assert_eq!(line(b"\n", 4), frame(0, 1));
        assert_eq!(line(b"\r\n", 4), frame(0, 2));
    }

    #[test]
    fn crlf_stripped() {
        assert_eq!(line(b"ab\r\n", 4), frame(2, 4));
    }

    #[test]
    fn only_one_cr_stripped() {
        assert_eq!(line(b"a\r\r\n", 4), frame(2, 4));
    }

    #[test]
    fn cr_elsewhere_is_payload() {
        assert_eq!(line(b"a\rb\n", 4), frame(3, 4));
    }

    #[test]
    fn two_frames_in_one_read() {
        let mut progress = 0;
        let input = Input::new(b"ab\ncd\r\n", &[]);
        assert_eq!(decode(input, 4, &mut progress), frame(2, 3));
        let input = Input::new(b"cd\r\n", &[]);
        assert_eq!(decode(input, 4, &mut progress), frame(2, 4));
    }

    #[test]
    fn frame_split_across_reads() {
        let mut progress = 0;
        assert_eq!(
            decode(Input::new(b"ab", &[]), 4, &mut progress),
            Decoded::NeedMore
        );
        assert_eq!(progress, 2);
        let input = Input::new(b"abc\n", &[]);
        assert_eq!(decode(input, 4, &mut progress), frame(3, 4));
        assert_eq!(progress, 0);
    }

    #[test]
    fn frame_wrapping_the_ring() {
        assert_eq!(decode(Input::new(b"ab", b"c\r\n"), 4, &mut 0), frame(3, 5));
        assert_eq!(decode(Input::new(b"abc\r", b"\n"), 4, &mut 0), frame(3, 5));
        assert_eq!(decode(Input::new(b"abc\r\n", b"x"), 4, &mut 0), frame(3, 5));
    }

    #[test]
    fn line_exactly_max_frame_accepted() {
        assert_eq!(line(b"abcd\n", 4), frame(4, 5));
        // The `\r` counts towards the limit.
        assert_eq!(line(b"abc\r\n", 4), frame(3, 5));
    }

    #[test]
    fn line_one_over_max_frame_rejected() {
        assert_eq!(line(b"abcde\n", 4), TOO_LONG);
        assert_eq!(line(b"abcd\r\n", 4), TOO_LONG);
    }

    #[test]
    fn oversized_line_rejected_before_its_newline_arrives() {
        assert_eq!(line(b"abcd", 4), Decoded::NeedMore);
        let mut progress = 4;
        assert_eq!(
            decode(Input::new(b"abcde", &[]), 4, &mut progress),
            TOO_LONG
        );
        assert_eq!(progress, 0);
    }

    #[test]
    fn max_frame_zero_accepts_only_empty_lines() {
        assert_eq!(line(b"\n", 0), frame(0, 1));
        assert_eq!(line(b"", 0), Decoded::NeedMore);
        assert_eq!(
            line(b"a", 0),
            Decoded::Error(DecodeError::LineTooLong { max: 0 })
        );
    }

    #[test]
    fn dripped_line_is_scanned_once() {
        // Each call resumes where the last stopped: `progress` tracks the
        // input, so no byte is searched twice.
        let stream = [b'x'; 100];
        let mut progress = 0;
        for len in 1..=100 {
            let input = Input::new(&stream[..len], &[]);
            assert_eq!(decode(input, 1000, &mut progress), Decoded::NeedMore);
            assert_eq!(progress, len);
        }
    }

    /// Payloads free of `\n`; each is sent with `\n` or `\r\n` (always
    /// `\r\n` when it ends in `\r`, which a bare `\n` would strip).
    fn encode(lines: &[(Vec<u8>, bool)]) -> Vec<u8> {
        let mut stream = Vec::new();
        for (payload, crlf) in lines {
            stream.extend(payload);
            if *crlf || payload.last() == Some(&b'\r') {
                stream.push(b'\r');
            }
            stream.push(b'\n');
        }
        stream
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_lines(
            lines in prop::collection::vec(
                (prop::collection::vec(any::<u8>().prop_filter("newline", |&b| b != b'\n'), 0..=62), any::<bool>()),
                0..40,
            ),
            chunk_sizes in prop::collection::vec(1usize..100, 1..20),
        ) {
            // 62 bytes + `\r` = 63 = max_frame, + `\n` = the ring's 64.
            let codec = Codec::new(Protocol::Line, 63);
            let decoded = serve(codec, 64, &encode(&lines), &chunk_sizes).unwrap();
            let payloads: Vec<Vec<u8>> = lines.into_iter().map(|(payload, _)| payload).collect();
            prop_assert_eq!(decoded, payloads);
        }
    }
}
