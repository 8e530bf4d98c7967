//! RESP2 replies as an upstream Redis sends them: where one ends (to frame
//! a pipelined stream of replies), what it holds (to merge the replies of
//! a split command), and how to pass over one too large to hold.
//!
//! [`next`] reads one element: a whole simple string, error, integer, bulk
//! string or nil, or only the header of an array (its elements follow, each
//! read by another call). [`reply_len`] walks a whole reply, arrays and
//! all. [`Skip`] walks one as its bytes go by, holding none of them. All
//! are bounded: they read only the bytes given, never allocate, and answer
//! any input (garbage included) with a value, "incomplete", or an error.
//!
//! Nesting is not bounded: a reply is walked with one count of the
//! elements still to come (an array of n replaces itself with its n
//! elements), not a stack. A client decides how deep a reply nests (a Lua
//! script may return tables in tables), and a reply the proxy cannot walk
//! would have to close a connection other clients' requests share.

use crate::engine::codec::resp::{HEADER_LINE_MAX, parse_int};

/// The longest bulk string taken: Redis's own limit (`proto-max-bulk-len`,
/// 512 MiB). A longer length is garbage, not a value to wait for.
pub const BULK_MAX: usize = 512 << 20;

/// One element of a reply, borrowing from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element<'a> {
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
    /// A line or a bulk string not ended by `\r\n`, or a `$` or `*`
    /// header line longer than a number can be.
    Crlf,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Type(b) => write!(f, "bad reply type byte 0x{b:02x}"),
            ReplyError::Number => write!(f, "bad number in a reply"),
            ReplyError::Crlf => write!(f, "missing \\r\\n in a reply"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Reads the first element of `bytes`: the element and the bytes it took,
/// `Ok(None)` when more bytes are needed to tell.
pub fn next(bytes: &[u8]) -> Result<Option<(Element<'_>, usize)>, ReplyError> {
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
        b'+' => Element::Simple(line),
        b'-' => Element::Error(line),
        b':' => Element::Integer(number()?),
        b'*' => match number()? {
            -1 => Element::Nil,
            n => Element::Array(usize::try_from(n).map_err(|_| ReplyError::Number)?),
        },
        _ => {
            let len = match number()? {
                -1 => return Ok(Some((Element::Nil, after))),
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
            return Ok(Some((Element::Bulk(&bytes[after..end - 2]), end)));
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
    // Elements still to read, the one being read included.
    let mut left: u64 = 1;
    let mut at = 0;
    while left > 0 {
        let Some((reply, used)) = next(&bytes[at..])? else {
            return Ok(None);
        };
        at += used;
        left = after_element(left, reply)?;
    }
    Ok(Some(at))
}

/// The count of elements still to read once `reply` has been read: one
/// less, plus an array's elements.
fn after_element(left: u64, reply: Element<'_>) -> Result<u64, ReplyError> {
    let more = match reply {
        Element::Array(n) => n as u64,
        _ => 0,
    };
    (left - 1).checked_add(more).ok_or(ReplyError::Number)
}

/// Passes over one reply too large to hold, as its bytes arrive: tells
/// where it ends without keeping any of it, so that the connection it
/// came on stays in step.
///
/// Lines (`+`, `-`, `:`) are passed over up to their `\n`, bulk payloads
/// by their length; `$` and `*` header lines are read whole (at most
/// [`HEADER_LINE_MAX`] bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skip {
    /// Elements still to pass, the one being passed included.
    left: u64,
    /// Where in an element the walk is.
    at: SkipAt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SkipAt {
    /// The start of an element: its type byte.
    Start,
    /// Inside a line, before its `\n`.
    Line,
    /// Inside a bulk string: this many payload bytes, then `\r\n`.
    Bulk(u64),
}

impl Default for Skip {
    fn default() -> Skip {
        Skip::new()
    }
}

impl Skip {
    /// A walk from the start of a reply.
    pub fn new() -> Skip {
        Skip {
            left: 1,
            at: SkipAt::Start,
        }
    }

    /// Passes over the reply's bytes at the start of `bytes`: how many it
    /// took, and whether the reply ended there (the bytes after it are the
    /// next reply's). It takes fewer than all only at the reply's end or
    /// before a header line that is not all in yet: call again with those
    /// bytes and more.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(usize, bool), ReplyError> {
        let mut at = 0;
        while self.left > 0 {
            let rest = &bytes[at..];
            match self.at {
                SkipAt::Bulk(payload) => {
                    let passed = (rest.len() as u64).min(payload);
                    at += passed as usize;
                    if passed < payload {
                        self.at = SkipAt::Bulk(payload - passed);
                        return Ok((at, false));
                    }
                    // The payload is passed; its `\r\n` is read whole.
                    match rest.get(passed as usize..passed as usize + 2) {
                        None => {
                            self.at = SkipAt::Bulk(0);
                            return Ok((at, false));
                        }
                        Some(b"\r\n") => at += 2,
                        Some(_) => return Err(ReplyError::Crlf),
                    }
                    self.element_done(Element::Nil)?;
                }
                SkipAt::Line => match rest.iter().position(|&b| b == b'\n') {
                    Some(newline) => {
                        at += newline + 1;
                        self.element_done(Element::Nil)?;
                    }
                    None => return Ok((bytes.len(), false)),
                },
                SkipAt::Start => match rest.first() {
                    None => return Ok((at, false)),
                    Some(b'+' | b'-' | b':') => {
                        at += 1;
                        self.at = SkipAt::Line;
                    }
                    Some(&kind) => {
                        let Some(line) = header_line(rest)? else {
                            return Ok((at, false));
                        };
                        let n = parse_int(&rest[1..line - 2]).ok_or(ReplyError::Number)?;
                        at += line;
                        match (kind, n) {
                            (b'*' | b'$', -1) => self.element_done(Element::Nil)?,
                            (b'*', n) if n >= 0 => self.element_done(Element::Array(n as usize))?,
                            (b'$', n) if n >= 0 && n as u64 <= BULK_MAX as u64 => {
                                self.at = SkipAt::Bulk(n as u64);
                            }
                            (b'*' | b'$', _) => return Err(ReplyError::Number),
                            (kind, _) => return Err(ReplyError::Type(kind)),
                        }
                    }
                },
            }
        }
        Ok((at, true))
    }

    /// An element was passed (an array's header adds its elements).
    fn element_done(&mut self, element: Element<'_>) -> Result<(), ReplyError> {
        self.left = after_element(self.left, element)?;
        self.at = SkipAt::Start;
        Ok(())
    }
}

/// The length of the `$` or `*` header line at the start of `bytes`, `\r\n`
/// included, once it is all there; the type byte is checked first, so
/// garbage fails at once rather than after a line's worth of bytes.
fn header_line(bytes: &[u8]) -> Result<Option<usize>, ReplyError> {
    let kind = bytes[0];
    if !matches!(kind, b'$' | b'*') {
        return Err(ReplyError::Type(kind));
    }
    let window = &bytes[..bytes.len().min(HEADER_LINE_MAX)];
    match window.iter().position(|&b| b == b'\n') {
        Some(newline) if window[newline - 1] == b'\r' && newline >= 2 => Ok(Some(newline + 1)),
        Some(_) => Err(ReplyError::Crlf),
        None if window.len() == HEADER_LINE_MAX => Err(ReplyError::Crlf),
        None => Ok(None),
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

    fn one(bytes: &[u8]) -> Element<'_> {
        let (reply, used) = next(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        reply
    }

    #[test]
    fn each_kind_of_element() {
        assert_eq!(one(b"+OK\r\n"), Element::Simple(b"OK"));
        assert_eq!(one(b"-ERR no\r\n"), Element::Error(b"ERR no"));
        assert_eq!(one(b":-42\r\n"), Element::Integer(-42));
        assert_eq!(one(b"$3\r\na\r\n\r\n"), Element::Bulk(b"a\r\n"));
        assert_eq!(one(b"$0\r\n\r\n"), Element::Bulk(b""));
        assert_eq!(one(b"$-1\r\n"), Element::Nil);
        assert_eq!(one(b"*-1\r\n"), Element::Nil);
        assert_eq!(one(b"*0\r\n"), Element::Array(0));
        assert_eq!(next(b"*2\r\n:1\r\n").unwrap(), Some((Element::Array(2), 4)));
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
    fn nesting_is_not_bounded() {
        // A Lua script may return tables in tables: a reply the proxy could
        // not walk would cost the connection other clients share.
        let mut deep = b"*1\r\n".repeat(100);
        deep.extend(b":1\r\n");
        assert_eq!(reply_len(&deep), Ok(Some(deep.len())));
        assert_eq!(reply_len(&deep[..deep.len() - 1]), Ok(None));
    }

    /// Feeds `bytes` to a fresh [`Skip`] in pieces of `piece` bytes, the
    /// way a connection's ring would (bytes not taken are offered again
    /// with the next piece); returns where the reply ended.
    fn skip_in_pieces(bytes: &[u8], piece: usize) -> Result<Option<usize>, ReplyError> {
        let mut skip = Skip::new();
        let (mut taken, mut have) = (0, 0);
        while have < bytes.len() {
            have = (have + piece).min(bytes.len());
            let (used, done) = skip.feed(&bytes[taken..have])?;
            taken += used;
            if done {
                return Ok(Some(taken));
            }
        }
        Ok(None)
    }

    #[test]
    fn skip_finds_the_end_of_a_reply_in_any_pieces() {
        let mut big = b"*3\r\n$70000\r\n".to_vec();
        big.extend(vec![b'x'; 70_000]);
        big.extend(b"\r\n*2\r\n+OK\r\n$-1\r\n-ERR long error line\r\n");
        let replies: [&[u8]; 6] = [
            &big,
            b"$0\r\n\r\n",
            b"+OK\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n*1\r\n:1\r\n$1\r\na\r\n",
        ];
        for reply in replies {
            let mut stream = reply.to_vec();
            stream.extend(b"+NEXT\r\n");
            for piece in [1, 2, 3, 7, 100, 4096, usize::MAX / 2] {
                assert_eq!(
                    skip_in_pieces(&stream, piece),
                    Ok(Some(reply.len())),
                    "{:?} in pieces of {piece}",
                    &reply[..reply.len().min(20)].escape_ascii().to_string()
                );
            }
            assert_eq!(skip_in_pieces(&reply[..reply.len() - 1], 5), Ok(None));
        }
    }

    #[test]
    fn skip_agrees_with_reply_len() {
        let scan = b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$-1\r\n+after\r\n";
        let len = reply_len(scan).unwrap().unwrap();
        assert_eq!(Skip::new().feed(scan), Ok((len, true)));
    }

    #[test]
    fn skip_rejects_what_is_not_a_reply() {
        let cases: [(&[u8], ReplyError); 6] = [
            (b"!oops\r\n", ReplyError::Type(b'!')),
            (b"$x\r\n", ReplyError::Number),
            (b"*-2\r\n", ReplyError::Number),
            (b"$1\r\nab\r\n", ReplyError::Crlf),
            (b"$1\n", ReplyError::Crlf),
            (b"$11111111111111111111111111111111111", ReplyError::Crlf),
        ];
        for (bytes, error) in cases {
            assert_eq!(
                Skip::new().feed(bytes),
                Err(error),
                "{:?}",
                bytes.escape_ascii()
            );
        }
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
            if let Ok((used, _)) = Skip::new().feed(&bytes) {
                prop_assert!(used <= bytes.len());
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
                // A reply walked whole is walked to the same end in pieces.
                for piece in [1, 3, 8] {
                    prop_assert_eq!(skip_in_pieces(&bytes, piece), Ok(Some(len)));
                }
            }
        }
    }
}
