//! `resp`: RESP2 requests as Redis clients send them, one whole command per
//! frame.
//!
//! Two request forms exist (Redis's `processMultibulkBuffer` and
//! `processInlineBuffer`):
//! - multibulk: `*N\r\n` then N bulk strings `$len\r\n<len bytes>\r\n`, what
//!   every client library, `redis-cli` and `redis-benchmark` send;
//! - inline: one line of space-separated words (`PING\r\n`), what a person
//!   types into `nc` or `telnet`.
//!
//! A frame is the whole command, raw (`start` 0, `len` = `consumed`), so the
//! service parses its arguments with [`Args`], which re-walks the already
//! validated bytes without allocating. An inline command is split as Redis
//! splits it (quotes and escapes, `codec/inline.rs`) and reaches the
//! service re-encoded as multibulk ([`canonical`]): services see one form. Everything is bounded: the whole
//! command by `max_frame` (it must sit in the input ring), each bulk length
//! by `max_frame` as soon as its `$len` line is in, the argument count by
//! [`ARGS_MAX`], and each header line by [`HEADER_LINE_MAX`].

use super::{DecodeError, Decoded, Input};

/// The most arguments one multibulk command may carry. Redis allows 1M, but
/// every argument of a command is work done in one service call on the
/// event loop (a hash and a stripe lock for MGET/MSET/DEL) while every other
/// connection of the shard waits; 4096 keeps the worst command to a few
/// hundred microseconds and still lets MSET/MGET move thousands of keys at
/// once. Bigger batches pipeline several commands, which the loop
/// interleaves fairly.
pub const ARGS_MAX: usize = 4096;

/// The longest `*N` or `$len` header line, `\r\n` included: a sign, 20
/// digits and the terminator fit; anything longer is not a number we take.
pub const HEADER_LINE_MAX: usize = 32;

/// Protocol errors, worded as Redis words them (after `Protocol error: `).
pub mod error {
    /// `*N` is not a number, or N is over [`super::ARGS_MAX`].
    pub const INVALID_MULTIBULK: &str = "invalid multibulk length";
    /// `$len` is not a number, negative, or over `max_frame`.
    pub const INVALID_BULK: &str = "invalid bulk length";
    /// An argument of a multibulk command does not start with `$`.
    pub const EXPECTED_DOLLAR: &str = "expected '$', got something else";
    /// An inline command with no newline within `max_frame` bytes.
    pub const INLINE_TOO_BIG: &str = "too big inline request";
    /// A `*N` line with no `\r\n` within [`super::HEADER_LINE_MAX`] bytes.
    pub const MBULK_LINE_TOO_BIG: &str = "too big mbulk count string";
    /// A `$len` line with no `\r\n` within [`super::HEADER_LINE_MAX`] bytes.
    pub const BULK_LINE_TOO_BIG: &str = "too big bulk count string";
    /// A bulk string not followed by `\r\n`.
    pub const EXPECTED_CRLF: &str = "expected '\\r\\n' after a bulk string";
    /// The whole command would not fit in `max_frame` bytes.
    pub const COMMAND_TOO_BIG: &str = "command larger than max-frame";
    /// An inline command with a quote not closed, or a closing quote not
    /// followed by a blank (Redis's `sdssplitargs` fails on it).
    pub const UNBALANCED_QUOTES: &str = "unbalanced quotes in request";
}

/// The reply Redis sends before closing on a protocol error:
/// `-ERR Protocol error: <message>\r\n`.
pub fn error_reply(message: &'static str) -> &'static [u8] {
    macro_rules! replies {
        ($($name:ident),*) => {
            match message {
                $(m if m == error::$name => concat_reply!($name),)*
                _ => b"-ERR Protocol error\r\n",
            }
        };
    }
    macro_rules! concat_reply {
        (INVALID_MULTIBULK) => {
            b"-ERR Protocol error: invalid multibulk length\r\n"
        };
        (INVALID_BULK) => {
            b"-ERR Protocol error: invalid bulk length\r\n"
        };
        (EXPECTED_DOLLAR) => {
            b"-ERR Protocol error: expected '$', got something else\r\n"
        };
        (INLINE_TOO_BIG) => {
            b"-ERR Protocol error: too big inline request\r\n"
        };
        (MBULK_LINE_TOO_BIG) => {
            b"-ERR Protocol error: too big mbulk count string\r\n"
        };
        (BULK_LINE_TOO_BIG) => {
            b"-ERR Protocol error: too big bulk count string\r\n"
        };
        (EXPECTED_CRLF) => {
            b"-ERR Protocol error: expected '\\r\\n' after a bulk string\r\n"
        };
        (COMMAND_TOO_BIG) => {
            b"-ERR Protocol error: command larger than max-frame\r\n"
        };
        (UNBALANCED_QUOTES) => {
            b"-ERR Protocol error: unbalanced quotes in request\r\n"
        };
    }
    replies!(
        INVALID_MULTIBULK,
        INVALID_BULK,
        EXPECTED_DOLLAR,
        INLINE_TOO_BIG,
        MBULK_LINE_TOO_BIG,
        BULK_LINE_TOO_BIG,
        EXPECTED_CRLF,
        COMMAND_TOO_BIG,
        UNBALANCED_QUOTES
    )
}

/// Decodes the first command of `input`.
///
/// `progress` lets a command that arrives in many small reads be walked
/// once overall rather than once per read: for an inline command it is how
/// far the newline search got (as in `line`); for a multibulk command it
/// packs the offset of the next unparsed argument and the count of
/// arguments still to come (see `pack`), so each argument header is
/// parsed once and each payload is jumped over, never scanned.
pub fn decode(input: Input<'_>, max_frame: usize, progress: &mut usize) -> Decoded {
    if input.is_empty() {
        return Decoded::NeedMore;
    }
    let decoded = if input.byte(0) == b'*' {
        multibulk(input, max_frame, progress)
    } else {
        inline(input, max_frame, progress)
    };
    match decoded {
        Decoded::NeedMore => {
            // The contract that keeps a full ring from stalling: whatever
            // is still missing fits within max_frame.
            debug_assert!(
                input.len() < max_frame.max(1),
                "need more with {} bytes held, max {max_frame}: {:?} {:?}",
                input.len(),
                input.first,
                input.second
            );
        }
        Decoded::Frame { .. } | Decoded::Error(_) => *progress = 0,
    }
    decoded
}

/// The arguments of a command frame, in order, as slices of it. Built for
/// frames this module's decoder returned; on other bytes it stops early
/// rather than fail, so no input can make it panic.
///
/// An inline line is split on blanks only, without Redis's quoting: the
/// engine hands services the multibulk form of an inline command
/// ([`canonical`]), so they never meet one.
#[derive(Clone, Debug)]
pub struct Args<'a> {
    frame: &'a [u8],
    at: usize,
    /// Arguments still to yield (multibulk); `None` for inline.
    remaining: Option<usize>,
}

impl<'a> Args<'a> {
    /// An iterator over the arguments of `frame`.
    pub fn parse(frame: &'a [u8]) -> Args<'a> {
        if frame.first() == Some(&b'*') {
            if let Some((count, after)) = header(frame, 1) {
                return Args {
                    frame,
                    at: after,
                    remaining: Some(usize::try_from(count).unwrap_or(0)),
                };
            }
            return Args {
                frame,
                at: frame.len(),
                remaining: Some(0),
            };
        }
        // Inline: the line without its `\r\n`.
        let end = frame
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(frame.len());
        let end = if end > 0 && frame[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        Args {
            frame: &frame[..end],
            at: 0,
            remaining: None,
        }
    }

    /// How many arguments are left. O(1) for a multibulk command (its
    /// header says so; the decoder checked the frame holds them all), a
    /// scan of the line for an inline one.
    pub fn left(&self) -> usize {
        match self.remaining {
            Some(remaining) => remaining,
            None => self.clone().count(),
        }
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match &mut self.remaining {
            Some(0) => None,
            Some(remaining) => {
                if self.frame.get(self.at) != Some(&b'$') {
                    *remaining = 0;
                    return None;
                }
                let Some((len, after)) = header(self.frame, self.at + 1) else {
                    *remaining = 0;
                    return None;
                };
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                let Some(arg) = after
                    .checked_add(len)
                    .and_then(|end| self.frame.get(after..end))
                else {
                    *remaining = 0;
                    return None;
                };
                *remaining -= 1;
                self.at = after + len + 2;
                Some(arg)
            }
            None => {
                let rest = self.frame.get(self.at..)?;
                let start = rest.iter().position(|b| !is_space(*b))?;
                let len = rest[start..]
                    .iter()
                    .position(|b| is_space(*b))
                    .unwrap_or(rest.len() - start);
                self.at += start + len;
                Some(&rest[start..start + len])
            }
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Parses `digits\r\n` at `from` of a contiguous frame: the number and the
/// offset after the `\n`.
fn header(frame: &[u8], from: usize) -> Option<(i64, usize)> {
    let rest = frame.get(from..)?;
    let cr = rest
        .iter()
        .take(HEADER_LINE_MAX)
        .position(|&b| b == b'\r')?;
    let number = parse_int(&rest[..cr])?;
    (rest.get(cr + 1) == Some(&b'\n')).then_some((number, from + cr + 2))
}

/// Appends `args` to `out` as a RESP2 multibulk command, the form every
/// client sends and [`decode`] takes; the inverse of [`Args`].
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses a decimal i64 (optional `-`, digits only), as Redis's `string2ll`.
pub fn parse_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    // No leading zero, and no "-0": Redis's `string2ll` refuses both.
    if digits.is_empty()
        || digits.len() > 19
        || (digits[0] == b'0' && (digits.len() > 1 || negative))
    {
        return None;
    }
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(b - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

fn protocol(message: &'static str) -> Decoded {
    Decoded::Error(DecodeError::Protocol(message))
}

fn inline(input: Input<'_>, max_frame: usize, progress: &mut usize) -> Decoded {
    debug_assert!(*progress <= input.len(), "progress past the input");
    match input.find(b'\n', *progress) {
        Some(newline) if newline < max_frame => {
            // Split as Redis splits it, and bounded as the multibulk
            // command it becomes (see [`canonical`]).
            match super::inline::measure(inline_line(input, newline + 1)) {
                Err(_) => protocol(error::UNBALANCED_QUOTES),
                Ok(measure) if measure.args > ARGS_MAX => protocol(error::INVALID_MULTIBULK),
                Ok(measure) if measure.len > max_frame => protocol(error::INLINE_TOO_BIG),
                Ok(_) => Decoded::Frame {
                    start: 0,
                    len: newline + 1,
                    consumed: newline + 1,
                },
            }
        }
        Some(_) => protocol(error::INLINE_TOO_BIG),
        None if input.len() >= max_frame => protocol(error::INLINE_TOO_BIG),
        None => {
            *progress = input.len();
            Decoded::NeedMore
        }
    }
}

/// The bytes of the inline command in the first `len` bytes of `input`
/// (a frame [`decode`] returned), without its `\n` and a `\r` before it.
fn inline_line(input: Input<'_>, len: usize) -> impl Iterator<Item = u8> + Clone + '_ {
    let mut line = len.saturating_sub(1);
    if line > 0 && input.byte(line - 1) == b'\r' {
        line -= 1;
    }
    input.first.iter().chain(input.second).copied().take(line)
}

/// Writes the command frame `[start, start + len)` of `input` (one
/// [`decode`] returned) into `out` in the form a service should see, when
/// that differs from its bytes: an inline command becomes the multibulk
/// command of the arguments Redis would split it into. Returns the length
/// written, or `None` for a multibulk frame (already in its form).
pub fn canonical(input: Input<'_>, start: usize, len: usize, out: &mut [u8]) -> Option<usize> {
    if len == 0 || input.byte(start) == b'*' {
        return None;
    }
    debug_assert_eq!(start, 0, "an inline frame starts its input");
    let written = super::inline::to_multibulk(inline_line(input, len), out);
    debug_assert!(written.is_some(), "a decoded inline frame re-encodes");
    written
}

/// Multiplier packing (offset, remaining) into one `progress` value.
const STRIDE: usize = ARGS_MAX + 1;

/// Packs the resume point of a multibulk command: the offset of its next
/// argument header (> 0, past the `*N` line) and the arguments still to
/// come. `None` when the product would overflow (a 32-bit target with a
/// huge ring): then the decoder just re-walks, correct if slower.
fn pack(offset: usize, remaining: usize) -> Option<usize> {
    debug_assert!(offset > 0 && remaining <= ARGS_MAX);
    offset.checked_mul(STRIDE)?.checked_add(remaining)
}

fn multibulk(input: Input<'_>, max_frame: usize, progress: &mut usize) -> Decoded {
    let (mut at, mut remaining) = if *progress == 0 {
        match line_number(input, 1, max_frame, error::MBULK_LINE_TOO_BIG) {
            Err(decoded) => return decoded,
            Ok((count, after)) => {
                // `*0` and `*-1` are empty commands: Redis skips them.
                if count <= 0 {
                    return Decoded::Frame {
                        start: 0,
                        len: after,
                        consumed: after,
                    };
                }
                match usize::try_from(count) {
                    Ok(count) if count <= ARGS_MAX => (after, count),
                    _ => return protocol(error::INVALID_MULTIBULK),
                }
            }
        }
    } else {
        (*progress / STRIDE, *progress % STRIDE)
    };
    while remaining > 0 {
        if let Some(saved) = pack(at, remaining) {
            *progress = saved;
        }
        if at >= max_frame {
            return protocol(error::COMMAND_TOO_BIG);
        }
        if at >= input.len() {
            return Decoded::NeedMore;
        }
        if input.byte(at) != b'$' {
            return protocol(error::EXPECTED_DOLLAR);
        }
        let (len, after) = match line_number(input, at + 1, max_frame, error::BULK_LINE_TOO_BIG) {
            Err(decoded) => return decoded,
            Ok(found) => found,
        };
        // Judged as soon as the `$len` line is in, before any payload.
        let len = match usize::try_from(len) {
            Ok(len) if len <= max_frame => len,
            _ => return protocol(error::INVALID_BULK),
        };
        let end = after + len + 2;
        if end > max_frame {
            return protocol(error::COMMAND_TOO_BIG);
        }
        if end > input.len() {
            return Decoded::NeedMore;
        }
        if input.byte(end - 2) != b'\r' || input.byte(end - 1) != b'\n' {
            return protocol(error::EXPECTED_CRLF);
        }
        at = end;
        remaining -= 1;
    }
    Decoded::Frame {
        start: 0,
        len: at,
        consumed: at,
    }
}

/// Parses the `digits\r\n` header line starting at `from`: the number and
/// the offset after its `\n`. `Err` carries the answer to return: need more
/// (the line is incomplete), or a protocol error.
fn line_number(
    input: Input<'_>,
    from: usize,
    max_frame: usize,
    too_big: &'static str,
) -> Result<(i64, usize), Decoded> {
    let invalid = if too_big == error::MBULK_LINE_TOO_BIG {
        error::INVALID_MULTIBULK
    } else {
        error::INVALID_BULK
    };
    let available = input.len().saturating_sub(from);
    let scan = available.min(HEADER_LINE_MAX);
    // The line is read in place; only one that straddles the ring's wrap
    // is copied out first.
    let mut copy = [0u8; HEADER_LINE_MAX];
    let digits: &[u8] = match input.contiguous(from, scan) {
        Some(digits) => digits,
        None => {
            input.copy_to(from, &mut copy[..scan]);
            &copy[..scan]
        }
    };
    let Some(cr) = digits.iter().position(|&b| b == b'\r') else {
        if scan == HEADER_LINE_MAX {
            return Err(protocol(too_big));
        }
        if from + scan >= max_frame {
            return Err(protocol(error::COMMAND_TOO_BIG));
        }
        return Err(Decoded::NeedMore);
    };
    let after = from + cr + 2;
    if after > max_frame {
        return Err(protocol(error::COMMAND_TOO_BIG));
    }
    if cr + 1 >= scan {
        // The `\n` is not in yet; or could only come past the line limit.
        if scan == HEADER_LINE_MAX {
            return Err(protocol(too_big));
        }
        return Err(Decoded::NeedMore);
    }
    if digits[cr + 1] != b'\n' {
        return Err(protocol(invalid));
    }
    match parse_int(&digits[..cr]) {
        Some(number) => Ok((number, after)),
        None => Err(protocol(invalid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codec::tests::serve;
    use crate::engine::codec::{Codec, Protocol};
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8], max_frame: usize) -> Decoded {
        decode(Input::new(bytes, &[]), max_frame, &mut 0)
    }

    fn frame(len: usize) -> Decoded {
        Decoded::Frame {
            start: 0,
            len,
            consumed: len,
        }
    }

    #[test]
    fn args_left_counts_what_is_still_to_come() {
        let multibulk = command(&[b"SET", b"k", b"v"]);
        let mut args = Args::parse(&multibulk);
        assert_eq!(args.left(), 3);
        args.next();
        assert_eq!(args.left(), 2);
        let mut inline = Args::parse(b"MGET a  b c\r\n");
        assert_eq!(inline.left(), 4);
        inline.next();
        assert_eq!(inline.left(), 3);
    }

    fn args(frame: &[u8]) -> Vec<Vec<u8>> {
        Args::parse(frame).map(<[u8]>::to_vec).collect()
    }

    fn err(message: &'static str) -> Decoded {
        protocol(message)
    }

    fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        out
    }

    #[test]
    fn empty_input_needs_more() {
        assert_eq!(decode_all(b"", 64), Decoded::NeedMore);
    }

    #[test]
    fn multibulk_command_is_one_frame() {
        let bytes = command(&[b"SET", b"key", b"value"]);
        assert_eq!(decode_all(&bytes, 64), frame(bytes.len()));
        assert_eq!(
            args(&bytes),
            vec![b"SET".to_vec(), b"key".into(), b"value".into()]
        );
    }

    #[test]
    fn inline_command_is_one_frame() {
        assert_eq!(decode_all(b"PING\r\n", 64), frame(6));
        assert_eq!(args(b"PING\r\n"), vec![b"PING".to_vec()]);
        assert_eq!(
            args(b"  set  a\tb \r\n"),
            vec![b"set".to_vec(), b"a".into(), b"b".into()]
        );
        assert_eq!(args(b"PING\n"), vec![b"PING".to_vec()]);
    }

    #[test]
    fn empty_commands_have_no_args() {
        assert_eq!(decode_all(b"\r\n", 64), frame(2));
        assert!(args(b"\r\n").is_empty());
        assert_eq!(decode_all(b"*0\r\n", 64), frame(4));
        assert_eq!(decode_all(b"*-1\r\n", 64), frame(5));
        assert!(args(b"*0\r\n").is_empty());
    }

    #[test]
    fn two_commands_in_one_read() {
        let mut bytes = command(&[b"GET", b"a"]);
        let first = bytes.len();
        bytes.extend(b"PING\r\n");
        assert_eq!(decode_all(&bytes, 64), frame(first));
        assert_eq!(decode_all(&bytes[first..], 64), frame(6));
    }

    #[test]
    fn command_split_across_reads() {
        let bytes = command(&[b"SET", b"key", b"value"]);
        let mut progress = 0;
        for cut in 0..bytes.len() {
            let input = Input::new(&bytes[..cut], &[]);
            assert_eq!(
                decode(input, 64, &mut progress),
                Decoded::NeedMore,
                "cut {cut}"
            );
        }
        assert_eq!(
            decode(Input::new(&bytes, &[]), 64, &mut progress),
            frame(bytes.len())
        );
        assert_eq!(progress, 0);
    }

    #[test]
    fn command_wrapping_the_ring() {
        let bytes = command(&[b"SET", b"key", b"value"]);
        for cut in 0..=bytes.len() {
            let (first, second) = bytes.split_at(cut);
            assert_eq!(
                decode(Input::new(first, second), 64, &mut 0),
                frame(bytes.len()),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn binary_safe_arguments() {
        let bytes = command(&[b"SET", b"k\r\n", b"\0*$\n"]);
        assert_eq!(decode_all(&bytes, 64), frame(bytes.len()));
        assert_eq!(args(&bytes)[2], b"\0*$\n");
    }

    #[test]
    fn invalid_multibulk_length_rejected() {
        assert_eq!(decode_all(b"*x\r\n", 64), err(error::INVALID_MULTIBULK));
        assert_eq!(decode_all(b"*1\rx", 64), err(error::INVALID_MULTIBULK));
        let too_many = format!("*{}\r\n", ARGS_MAX + 1);
        assert_eq!(
            decode_all(too_many.as_bytes(), 64),
            err(error::INVALID_MULTIBULK)
        );
        assert_eq!(
            decode_all(b"*99999999999999999999\r\n", 64),
            err(error::INVALID_MULTIBULK)
        );
    }

    #[test]
    fn invalid_bulk_length_rejected() {
        assert_eq!(decode_all(b"*1\r\n$-1\r\n", 64), err(error::INVALID_BULK));
        assert_eq!(decode_all(b"*1\r\n$abc\r\n", 64), err(error::INVALID_BULK));
    }

    #[test]
    fn oversized_bulk_rejected_before_its_payload() {
        assert_eq!(decode_all(b"*1\r\n$65\r\n", 64), err(error::INVALID_BULK));
        // Fits max_frame alone, not with its headers.
        assert_eq!(
            decode_all(b"*1\r\n$60\r\n", 64),
            err(error::COMMAND_TOO_BIG)
        );
    }

    #[test]
    fn command_exactly_max_frame_accepted() {
        let bytes = command(&[b"0123456789"]);
        assert_eq!(decode_all(&bytes, bytes.len()), frame(bytes.len()));
        assert_eq!(
            decode_all(&bytes, bytes.len() - 1),
            err(error::COMMAND_TOO_BIG)
        );
    }

    #[test]
    fn missing_dollar_rejected() {
        assert_eq!(
            decode_all(b"*1\r\nPING\r\n", 64),
            err(error::EXPECTED_DOLLAR)
        );
    }

    #[test]
    fn missing_crlf_after_bulk_rejected() {
        assert_eq!(
            decode_all(b"*1\r\n$1\r\naXY", 64),
            err(error::EXPECTED_CRLF)
        );
    }

    #[test]
    fn endless_header_line_rejected() {
        let line = [b'1'; 40];
        let mut bytes = b"*".to_vec();
        bytes.extend(line);
        assert_eq!(decode_all(&bytes, 1024), err(error::MBULK_LINE_TOO_BIG));
        let mut bytes = b"*1\r\n$".to_vec();
        bytes.extend(line);
        assert_eq!(decode_all(&bytes, 1024), err(error::BULK_LINE_TOO_BIG));
    }

    #[test]
    fn oversized_inline_rejected_before_its_newline() {
        assert_eq!(decode_all(b"PING PING", 8), err(error::INLINE_TOO_BIG));
        assert_eq!(decode_all(b"PING PIN\n", 8), err(error::INLINE_TOO_BIG));
        assert_eq!(decode_all(b"PING", 8), Decoded::NeedMore);
    }

    #[test]
    fn inline_is_bounded_as_the_multibulk_command_it_becomes() {
        // `*2\r\n$1\r\na\r\n$1\r\nb\r\n`: 18 bytes for a 4-byte line.
        assert_eq!(decode_all(b"a b\n", 18), frame(4));
        assert_eq!(decode_all(b"a b\n", 17), err(error::INLINE_TOO_BIG));
        let many = "a ".repeat(ARGS_MAX + 1) + "\n";
        assert_eq!(
            decode_all(many.as_bytes(), 1 << 20),
            err(error::INVALID_MULTIBULK)
        );
    }

    #[test]
    fn inline_quotes_follow_redis() {
        assert_eq!(
            decode_all(b"GET \"x\r\n", 64),
            err(error::UNBALANCED_QUOTES)
        );
        assert_eq!(
            error_reply(error::UNBALANCED_QUOTES),
            b"-ERR Protocol error: unbalanced quotes in request\r\n"
        );
        let line = b"SET \"a b\" 'c\\'d'\r\n";
        assert_eq!(decode_all(line, 64), frame(line.len()));
        // Wherever the ring wraps, the re-encoded command is the same.
        for cut in 0..=line.len() {
            let (first, second) = line.split_at(cut);
            let input = Input::new(first, second);
            let mut out = [0u8; 64];
            let len = canonical(input, 0, line.len(), &mut out).unwrap();
            assert_eq!(&out[..len], &command(&[b"SET", b"a b", b"c'd"])[..]);
        }
        // A multibulk frame is already in its form.
        let multibulk = command(&[b"GET", b"x"]);
        let input = Input::new(&multibulk, &[]);
        assert_eq!(canonical(input, 0, multibulk.len(), &mut [0u8; 64]), None);
    }

    #[test]
    fn error_replies_are_redis_wording() {
        assert_eq!(
            error_reply(error::INVALID_BULK),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
        for message in [
            error::INVALID_MULTIBULK,
            error::INVALID_BULK,
            error::EXPECTED_DOLLAR,
            error::INLINE_TOO_BIG,
            error::MBULK_LINE_TOO_BIG,
            error::BULK_LINE_TOO_BIG,
            error::EXPECTED_CRLF,
            error::COMMAND_TOO_BIG,
            error::UNBALANCED_QUOTES,
        ] {
            let expected = format!("-ERR Protocol error: {message}\r\n");
            assert_eq!(error_reply(message), expected.as_bytes());
        }
    }

    #[test]
    fn dripped_command_walks_each_header_once() {
        // A command of many arguments, one byte per call: progress moves
        // forward past every complete argument.
        let arg_list: Vec<&[u8]> = vec![b"x"; 100];
        let bytes = command(&arg_list);
        let mut progress = 0;
        let mut last_offset = 0;
        for len in 1..bytes.len() {
            let input = Input::new(&bytes[..len], &[]);
            assert_eq!(decode(input, 4096, &mut progress), Decoded::NeedMore);
            let offset = progress / STRIDE;
            assert!(offset >= last_offset, "progress went back");
            last_offset = offset;
        }
        assert!(last_offset > bytes.len() - 10);
        assert_eq!(
            decode(Input::new(&bytes, &[]), 4096, &mut progress),
            frame(bytes.len())
        );
    }

    #[test]
    fn parse_int_is_strict() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-12"), Some(-12));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"1a",
            b" 1",
            b"9223372036854775808",
            b"+1",
            b"-0",
            b"-01",
        ] {
            assert_eq!(parse_int(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn arb_command() -> impl Strategy<Value = (Vec<Vec<u8>>, bool)> {
        (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..5),
            any::<bool>(),
        )
    }

    fn encode(commands: &[(Vec<Vec<u8>>, bool)]) -> (Vec<u8>, Vec<Vec<Vec<u8>>>) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (arg_list, inline) in commands {
            if *inline {
                // Inline words: printable, no spaces, not starting with `*`.
                let words: Vec<Vec<u8>> = arg_list
                    .iter()
                    .map(|a| a.iter().map(|b| b'a' + b % 26).collect::<Vec<u8>>())
                    .filter(|w| !w.is_empty())
                    .collect();
                let line = words.join(&b' ');
                stream.extend(&line);
                stream.extend(b"\r\n");
                expected.push(words);
            } else {
                let refs: Vec<&[u8]> = arg_list.iter().map(Vec::as_slice).collect();
                stream.extend(command(&refs));
                expected.push(arg_list.clone());
            }
        }
        (stream, expected)
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_commands(
            commands in prop::collection::vec(arb_command(), 0..30),
            chunk_sizes in prop::collection::vec(1usize..100, 1..20),
        ) {
            let (stream, expected) = encode(&commands);
            let codec = Codec::new(Protocol::Resp, 128);
            let frames = serve(codec, 128, &stream, &chunk_sizes).unwrap();
            let decoded: Vec<Vec<Vec<u8>>> = frames.iter().map(|f| args(f)).collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn garbage_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            chunk_sizes in prop::collection::vec(1usize..100, 1..20),
        ) {
            let codec = Codec::new(Protocol::Resp, 64);
            if let Ok(frames) = serve(codec, 64, &bytes, &chunk_sizes) {
                for frame in frames {
                    let _ = args(&frame).len();
                }
            }
        }

        /// Any inline line the decoder takes re-encodes, wherever the ring
        /// wraps, into one multibulk command within max_frame.
        #[test]
        fn decoded_inline_lines_re_encode_within_max_frame(
            line in prop::collection::vec(
                prop::sample::select(&b"ab \t\"'\\x4f\0\r\x0b"[..]), 0..40),
            cut in 0usize..48,
            max_frame in 8usize..128,
        ) {
            let mut bytes = line.clone();
            bytes.push(b'\n');
            if bytes[0] == b'*' {
                return Ok(());
            }
            let (first, second) = bytes.split_at(cut.min(bytes.len()));
            let input = Input::new(first, second);
            if let Decoded::Frame { start, len, .. } = decode(input, max_frame, &mut 0) {
                let mut out = vec![0u8; max_frame];
                let written = canonical(input, start, len, &mut out);
                prop_assert!(written.is_some());
                let written = written.unwrap();
                let again = decode(Input::new(&out[..written], &[]), max_frame, &mut 0);
                prop_assert_eq!(again, frame(written));
            }
        }
    }
}
