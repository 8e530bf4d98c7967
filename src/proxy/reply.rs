//! RESP2 replies as an upstream Redis sends them: where one ends (to frame
//! a pipelined stream of replies) and what it holds (to merge the replies
//! of a split command).
//!
//! [`next`] reads one element: a whole simple string, error, integer, bulk
//! string or nil, or only the header of an array (its elements follow, each
//! read by another call). [`reply_len`] walks a whole reply, arrays and
//! all. Both are bounded: they read only the bytes given, nest at most
//! [`DEPTH_MAX`] arrays, never allocate, and answer any input (garbage
//! included) with a value, `Ok(None)` for "incomplete", or an error.

use crate::codec::resp::parse_int;

/// The deepest nesting of arrays taken. Redis's own replies nest a few
/// levels (SCAN: 2, XREAD: 4, COMMAND INFO: 5); deeper is not a reply we
/// sent a command for.
pub const DEPTH_MAX: usize = 8;

/// The longest bulk string taken: Redis's own limit (`proto-max-bulk-len`,
/// 512 MiB). A longer length is garbage, not a value to wait for.
pub const BULK_MAX: usize = 512 << 20;

/// One element of a reply, borrowing from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK`: the text after `+`.
    Simple(&'a [u8]),
    /// `-ERR ...`: the text after `-` (`ERR ...`).
    Error(&'a [u8]),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`: the payload.
    Bulk(&'a [u8]),
    /// `$-1` or `*-1`.
    Nil,
    /// `*N`: an array of N elements, which follow.
    Array(usize),
}

/// Bytes that are not a RESP2 reply. The upstream connection that sent
/// them is out of step and must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// The first byte is none of `+ - : $ *`.
    Type(u8),
    /// A length or an integer that is not a number, or out of range (a
    /// bulk string over [`BULK_MAX`]).
    Number,
    /// A line or a bulk string not ended by `\r\n`.
    Crlf,
    /// Arrays nested deeper than [`DEPTH_MAX`].
    TooDeep,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Type(b) => write!(f, "bad reply type byte 0x{b:02x}"),
            ReplyError::Number => write!(f, "bad number in a reply"),
            ReplyError::Crlf => write!(f, "missing \\r\\n in a reply"),
            ReplyError::TooDeep => write!(f, "reply nested deeper than {DEPTH_MAX}"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Reads the first element of `bytes`: the element and the bytes it took,
/// `Ok(None)` when more bytes are needed to tell.
pub fn next(bytes: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ReplyError> {
    let Some(&kind) = bytes.first() else {
        return Ok(None);
    };
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(ReplyError::Type(kind));
    }
    let Some((line, after)) = line(bytes)? else {
        return Ok(None);
    };
    let number = || parse_int(line).ok_or(ReplyError::Number);
    let reply = match kind {
        b'+' => Reply::Simple(line),
        b'-' => Reply::Error(line),
        b':' => Reply::Integer(number()?),
        b'*' => match number()? {
            -1 => Reply::Nil,
            n => Reply::Array(usize::try_from(n).map_err(|_| ReplyError::Number)?),
        },
        _ => {
            let len = match number()? {
                -1 => return Ok(Some((Reply::Nil, after))),
                n => usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= BULK_MAX)
                    .ok_or(ReplyError::Number)?,
            };
            let end = after + len + 2;
            if bytes.len() < end {
                return Ok(None);
            }
            if &bytes[end - 2..end] != b"\r\n" {
                return Err(ReplyError::Crlf);
            }
            return Ok(Some((Reply::Bulk(&bytes[after..end - 2]), end)));
        }
    };
    Ok(Some((reply, after)))
}

/// The length of the first whole reply in `bytes` (an array with all its
/// elements), `Ok(None)` when it is not all there yet.
///
/// Each call walks from the start: a caller that retries as bytes trickle
/// in should first wait for a `\r\n` past what it had, or keep the cost of
/// a large reply in mind.
pub fn reply_len(bytes: &[u8]) -> Result<Option<usize>, ReplyError> {
    // Elements still to read in each open array, innermost last.
    let mut open = [0usize; DEPTH_MAX];
    let mut depth = 0;
    let mut at = 0;
    loop {
        let Some((reply, used)) = next(&bytes[at..])? else {
            return Ok(None);
        };
        at += used;
        if let Reply::Array(n) = reply {
            if n > 0 {
                if depth == DEPTH_MAX {
                    return Err(ReplyError::TooDeep);
                }
                open[depth] = n;
                depth += 1;
                continue;
            }
        }
        // A value is complete: count it in its array, and a completed
        // array in its parent's.
        loop {
            if depth == 0 {
                return Ok(Some(at));
            }
            open[depth - 1] -= 1;
            if open[depth - 1] > 0 {
                break;
            }
            depth -= 1;
        }
    }
}

/// The line after the type byte, without its `\r\n`, and the offset after
/// it. A `\r` or `\n` inside the line is an error (Redis sends none).
fn line(bytes: &[u8]) -> Result<Option<(&[u8], usize)>, ReplyError> {
    let Some(cr) = bytes.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Ok(None);
    };
    match bytes.get(cr..cr + 2) {
        Some(b"\r\n") => Ok(Some((&bytes[1..cr], cr + 2))),
        None if bytes[cr] == b'\r' => Ok(None),
        _ => Err(ReplyError::Crlf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(bytes: &[u8]) -> Reply<'_> {
        let (reply, used) = next(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        reply
    }

    #[test]
    fn each_kind_of_element() {
        assert_eq!(one(b"+OK\r\n"), Reply::Simple(b"OK"));
        assert_eq!(one(b"-ERR no\r\n"), Reply::Error(b"ERR no"));
        assert_eq!(one(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(one(b"$3\r\na\r\n\r\n"), Reply::Bulk(b"a\r\n"));
        assert_eq!(one(b"$0\r\n\r\n"), Reply::Bulk(b""));
        assert_eq!(one(b"$-1\r\n"), Reply::Nil);
        assert_eq!(one(b"*-1\r\n"), Reply::Nil);
        assert_eq!(one(b"*0\r\n"), Reply::Array(0));
        assert_eq!(next(b"*2\r\n:1\r\n").unwrap(), Some((Reply::Array(2), 4)));
    }

    #[test]
    fn incomplete_elements_need_more() {
        for bytes in [
            &b""[..],
            b"+OK",
            b"+OK\r",
            b":1",
            b"$3\r\nab",
            b"$3\r\nabc\r",
            b"$3",
        ] {
            assert_eq!(next(bytes), Ok(None), "{:?}", bytes.escape_ascii());
        }
    }

    #[test]
    fn bad_elements_rejected() {
        let cases: [(&[u8], ReplyError); 9] = [
            (b"!oops\r\n", ReplyError::Type(b'!')),
            (b":x\r\n", ReplyError::Number),
            (b":01\r\n", ReplyError::Number),
            (b"$-2\r\n", ReplyError::Number),
            (b"*-5\r\n", ReplyError::Number),
            (b"$99999999999999999999\r\n", ReplyError::Number),
            (b"$1\r\nab\r\n", ReplyError::Crlf),
            (b"+O\nK\r\n", ReplyError::Crlf),
            (b"+O\rK\r\n", ReplyError::Crlf),
        ];
        for (bytes, error) in cases {
            assert_eq!(next(bytes), Err(error), "{:?}", bytes.escape_ascii());
        }
        assert_eq!(
            next(b"$9223372036854775807\r\n"),
            Err(ReplyError::Number),
            "a bulk string too long to wait for"
        );
        let mut at_max = format!("${BULK_MAX}\r\n").into_bytes();
        assert_eq!(next(&at_max), Ok(None));
        at_max.insert(1, b'1');
        assert_eq!(next(&at_max), Err(ReplyError::Number));
    }

    #[test]
    fn reply_len_walks_nested_arrays() {
        let scan = b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$-1\r\n";
        assert_eq!(reply_len(scan), Ok(Some(scan.len())));
        let mut two = scan.to_vec();
        two.extend(b"+OK\r\n");
        assert_eq!(reply_len(&two), Ok(Some(scan.len())));
        for cut in 0..scan.len() {
            assert_eq!(reply_len(&scan[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(reply_len(b"*0\r\n*1\r\n"), Ok(Some(4)));
        assert_eq!(reply_len(b"*1\r\n*0\r\n"), Ok(Some(8)));
        assert_eq!(
            reply_len(b"*3\r\n:1\r\n*1\r\n*1\r\n:2\r\n:3\r\n"),
            Ok(Some(24))
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |levels: usize| {
            let mut bytes = b"*1\r\n".repeat(levels);
            bytes.extend(b":1\r\n");
            bytes
        };
        assert_eq!(reply_len(&deep(DEPTH_MAX)), Ok(Some(4 * DEPTH_MAX + 4)));
        assert_eq!(reply_len(&deep(DEPTH_MAX + 1)), Err(ReplyError::TooDeep));
    }

    #[test]
    fn a_huge_array_count_only_needs_more() {
        assert_eq!(reply_len(b"*9223372036854775807\r\n:1\r\n"), Ok(None));
    }

    /// Pieces of replies, so that random strings of them are often nearly
    /// valid and reach the deeper paths.
    const PIECES: &[&[u8]] = &[
        b"*", b"$", b":", b"+", b"-", b"\r\n", b"1", b"-1", b"2", b"0", b"a",
    ];

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = next(&bytes);
            if let Ok(Some(len)) = reply_len(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }

        #[test]
        fn near_replies_never_panic(
            parts in prop::collection::vec(prop::sample::select(PIECES), 0..40)
        ) {
            let bytes = parts.concat();
            if let Ok(Some(len)) = reply_len(&bytes) {
                prop_assert!(len <= bytes.len());
                prop_assert_eq!(reply_len(&bytes[..len]), Ok(Some(len)));
            }
        }
    }
}
