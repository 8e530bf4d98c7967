//! RESP2 and RESP3 replies as an upstream Redis sends them: where one
//! ends (to frame a pipelined stream of replies), what it holds (to merge
//! the replies of a split command), and how to pass over one too large to
//! hold.
//!
//! [`next`] reads one element: a whole simple string, error, integer, bulk
//! string or nil (RESP3: null, boolean, double, big number, blob error,
//! verbatim string), or only the header of an aggregate (an array; RESP3:
//! a map, set, attribute or push), whose elements follow, each read by
//! another call. [`reply_len`] walks a whole reply, aggregates and all.
//! [`Skip`] walks one as its bytes go by, holding none of them. All are
//! bounded: they read only the bytes given, never allocate, and answer any
//! input (garbage included) with a value, "incomplete", or an error.
//!
//! Nesting is not bounded: a reply is walked with one count of the
//! elements still to come (an aggregate of n replaces itself with its n
//! elements, a map's with 2n, an attribute's with 2n and the reply it
//! decorates), not a stack. A client decides how deep a reply nests (a
//! Lua script may return tables in tables), and a reply the proxy cannot
//! walk would have to close a connection other clients' requests share.

use crate::engine::codec::resp::{HEADER_LINE_MAX, parse_int};

/// The longest bulk string taken (and blob error, and verbatim string):
/// Redis's own limit (`proto-max-bulk-len`, 512 MiB). A longer length is
/// garbage, not a value to wait for.
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
    /// `$-1` or `*-1` (RESP2), `_` (RESP3).
    Nil,
    /// `*N`: an array of N elements, which follow.
    Array(usize),
    /// RESP3 `#t` or `#f`.
    Boolean(bool),
    /// RESP3 `,1.5` (also `inf`, `-inf`, `nan`): the text after `,`.
    Double(&'a [u8]),
    /// RESP3 `(12345678901234567890`: the digits after `(`.
    BigNumber(&'a [u8]),
    /// RESP3 `!N\r\nERR ...`: an error as a blob, its payload.
    BlobError(&'a [u8]),
    /// RESP3 `=N\r\ntxt:...`: a verbatim string, its payload (the
    /// three-letter format and `:` included).
    Verbatim(&'a [u8]),
    /// RESP3 `%N`: a map of N pairs, whose 2N elements follow.
    Map(usize),
    /// RESP3 `~N`: a set of N elements, which follow.
    Set(usize),
    /// RESP3 `|N`: N pairs of attributes, then the reply they describe,
    /// which is part of the same reply.
    Attribute(usize),
    /// RESP3 `>N`: a push of N elements, which follow. Out of band: never
    /// the reply to a request.
    Push(usize),
}

/// Bytes that are not a RESP reply. The upstream connection that sent
/// them is out of step and must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// The first byte is no RESP2 or RESP3 type.
    Type(u8),
    /// A length or an integer that is not a number, or out of range (a
    /// bulk string over [`BULK_MAX`]).
    Number,
    /// A line or a bulk string not ended by `\r\n`, or a header line
    /// longer than a number can be.
    Crlf,
    /// A RESP3 null, boolean, double, big number or verbatim string whose
    /// text is not one.
    Value,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Type(b) => write!(f, "bad reply type byte 0x{b:02x}"),
            ReplyError::Number => write!(f, "bad number in a reply"),
            ReplyError::Crlf => write!(f, "missing \\r\\n in a reply"),
            ReplyError::Value => write!(f, "bad RESP3 value in a reply"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// The type bytes of elements that are one line.
fn is_line_kind(kind: u8) -> bool {
    matches!(kind, b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(')
}

/// The type bytes of elements whose header line gives a length (a payload
/// follows) or a count (elements follow).
fn is_header_kind(kind: u8) -> bool {
    matches!(kind, b'$' | b'!' | b'=' | b'*' | b'%' | b'~' | b'|' | b'>')
}

/// Reads the first element of `bytes`: the element and the bytes it took,
/// `Ok(None)` when more bytes are needed to tell.
pub fn next(bytes: &[u8]) -> Result<Option<(Element<'_>, usize)>, ReplyError> {
    let Some(&kind) = bytes.first() else {
        return Ok(None);
    };
    if !is_line_kind(kind) && !is_header_kind(kind) {
        return Err(ReplyError::Type(kind));
    }
    let Some((line, after)) = line(bytes)? else {
        return Ok(None);
    };
    if is_line_kind(kind) {
        return Ok(Some((line_element(kind, line)?, after)));
    }
    let n = parse_int(line).ok_or(ReplyError::Number)?;
    if n == -1 && matches!(kind, b'$' | b'*') {
        return Ok(Some((Element::Nil, after)));
    }
    let n = usize::try_from(n).map_err(|_| ReplyError::Number)?;
    if !matches!(kind, b'$' | b'!' | b'=') {
        return Ok(Some((aggregate(kind, n), after)));
    }
    if n > BULK_MAX {
        return Err(ReplyError::Number);
    }
    let end = after + n + 2;
    if bytes.len() < end {
        return Ok(None);
    }
    if &bytes[end - 2..end] != b"\r\n" {
        return Err(ReplyError::Crlf);
    }
    let payload = &bytes[after..end - 2];
    let element = match kind {
        b'$' => Element::Bulk(payload),
        b'!' => Element::BlobError(payload),
        // A verbatim string starts with its format: `txt:`, `mkd:`.
        _ if payload.get(3) == Some(&b':') => Element::Verbatim(payload),
        _ => return Err(ReplyError::Value),
    };
    Ok(Some((element, end)))
}

/// The element of a one-line `kind` whose text is `line`.
fn line_element(kind: u8, line: &[u8]) -> Result<Element<'_>, ReplyError> {
    Ok(match (kind, line) {
        (b'+', _) => Element::Simple(line),
        (b'-', _) => Element::Error(line),
        (b':', _) => Element::Integer(parse_int(line).ok_or(ReplyError::Number)?),
        (b'_', b"") => Element::Nil,
        (b'#', b"t") => Element::Boolean(true),
        (b'#', b"f") => Element::Boolean(false),
        (b',', _) if is_double(line) => Element::Double(line),
        (b'(', _) if is_big_number(line) => Element::BigNumber(line),
        _ => return Err(ReplyError::Value),
    })
}

/// The aggregate of type `kind` with `n` entries (`n` pairs for a map or
/// attributes).
fn aggregate(kind: u8, n: usize) -> Element<'static> {
    match kind {
        b'*' => Element::Array(n),
        b'%' => Element::Map(n),
        b'~' => Element::Set(n),
        b'|' => Element::Attribute(n),
        _ => Element::Push(n),
    }
}

/// Whether `text` is a RESP3 double as Redis writes one: digits with a
/// sign, a point and an exponent, or `inf`, `-inf`, `nan`.
fn is_double(text: &[u8]) -> bool {
    matches!(text, b"inf" | b"-inf" | b"+inf" | b"nan" | b"-nan")
        || (text.iter().any(u8::is_ascii_digit)
            && text
                .iter()
                .all(|&b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E')))
}

/// Whether `text` is a RESP3 big number: digits, with a sign.
fn is_big_number(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// The length of the first whole reply in `bytes` (an aggregate with all
/// its elements; attributes with the reply they describe), `Ok(None)` when
/// it is not all there yet.
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
/// less, plus an aggregate's elements (an attribute's pairs and the reply
/// after them).
fn after_element(left: u64, reply: Element<'_>) -> Result<u64, ReplyError> {
    let more = match reply {
        Element::Array(n) | Element::Set(n) | Element::Push(n) => n as u64,
        Element::Map(n) => 2 * n as u64,
        Element::Attribute(n) => 2 * n as u64 + 1,
        _ => 0,
    };
    (left - 1).checked_add(more).ok_or(ReplyError::Number)
}

/// Passes over one reply too large to hold, as its bytes arrive: tells
/// where it ends without keeping any of it, so that the connection it
/// came on stays in step.
///
/// Lines (`+`, `-`, `:`; RESP3 `_`, `#`, `,`, `(`) are passed over up to
/// their `\n`, payloads (`$`; RESP3 `!`, `=`) by their length; header
/// lines are read whole (at most [`HEADER_LINE_MAX`] bytes).
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
                    Some(&kind) if is_line_kind(kind) => {
                        at += 1;
                        self.at = SkipAt::Line;
                    }
                    Some(_) => {
                        let Some(line) = header_line(rest)? else {
                            return Ok((at, false));
                        };
                        at += line;
                        self.header(rest[0], &rest[1..line - 2])?;
                    }
                },
            }
        }
        Ok((at, true))
    }

    /// A header line of type `kind` with `number` was passed: a nil, a
    /// payload to pass, or an aggregate whose elements follow.
    fn header(&mut self, kind: u8, number: &[u8]) -> Result<(), ReplyError> {
        let n = parse_int(number).ok_or(ReplyError::Number)?;
        match (kind, n) {
            (b'*' | b'$', -1) => self.element_done(Element::Nil),
            (b'$' | b'!' | b'=', n) if n >= 0 && n as u64 <= BULK_MAX as u64 => {
                self.at = SkipAt::Bulk(n as u64);
                Ok(())
            }
            (b'*' | b'%' | b'~' | b'|' | b'>', n) if n >= 0 => {
                self.element_done(aggregate(kind, n as usize))
            }
            _ => Err(ReplyError::Number),
        }
    }

    /// An element was passed (an aggregate's header adds its elements).
    fn element_done(&mut self, element: Element<'_>) -> Result<(), ReplyError> {
        self.left = after_element(self.left, element)?;
        self.at = SkipAt::Start;
        Ok(())
    }
}

/// The length of the header line at the start of `bytes`, `\r\n`
/// included, once it is all there; the type byte is checked first, so
/// garbage fails at once rather than after a line's worth of bytes.
fn header_line(bytes: &[u8]) -> Result<Option<usize>, ReplyError> {
    let kind = bytes[0];
    if !is_header_kind(kind) {
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
    fn each_kind_of_resp3_element() {
        assert_eq!(one(b"_\r\n"), Element::Nil);
        assert_eq!(one(b"#t\r\n"), Element::Boolean(true));
        assert_eq!(one(b"#f\r\n"), Element::Boolean(false));
        for double in [
            &b"1.5"[..],
            b"-2",
            b"1e+300",
            b"-1.2E-7",
            b"inf",
            b"-inf",
            b"nan",
        ] {
            let mut bytes = b",".to_vec();
            bytes.extend(double);
            bytes.extend(b"\r\n");
            assert_eq!(one(&bytes), Element::Double(double));
        }
        assert_eq!(
            one(b"(3492890328409238509324850943850943825024385\r\n"),
            Element::BigNumber(b"3492890328409238509324850943850943825024385")
        );
        assert_eq!(one(b"(-1\r\n"), Element::BigNumber(b"-1"));
        assert_eq!(
            one(b"!21\r\nSYNTAX invalid syntax\r\n"),
            Element::BlobError(b"SYNTAX invalid syntax")
        );
        assert_eq!(
            one(b"=15\r\ntxt:Some string\r\n"),
            Element::Verbatim(b"txt:Some string")
        );
        assert_eq!(one(b"%2\r\n"), Element::Map(2));
        assert_eq!(one(b"~0\r\n"), Element::Set(0));
        assert_eq!(one(b"|1\r\n"), Element::Attribute(1));
        assert_eq!(one(b">3\r\n"), Element::Push(3));
    }

    #[test]
    fn bad_resp3_elements_rejected() {
        let cases: [(&[u8], ReplyError); 15] = [
            (b"_x\r\n", ReplyError::Value),
            (b"#\r\n", ReplyError::Value),
            (b"#true\r\n", ReplyError::Value),
            (b",\r\n", ReplyError::Value),
            (b",1.5x\r\n", ReplyError::Value),
            (b",.\r\n", ReplyError::Value),
            (b"(\r\n", ReplyError::Value),
            (b"(12a\r\n", ReplyError::Value),
            (b"=3\r\ntxt\r\n", ReplyError::Value),
            (b"=5\r\ntxt!x\r\n", ReplyError::Value),
            (b"!-1\r\n", ReplyError::Number),
            (b"=-1\r\n", ReplyError::Number),
            (b"%-1\r\n", ReplyError::Number),
            (b"~x\r\n", ReplyError::Number),
            (b"!1\r\nab\r\n", ReplyError::Crlf),
        ];
        for (bytes, error) in cases {
            assert_eq!(next(bytes), Err(error), "{:?}", bytes.escape_ascii());
        }
        for kind in [b'!', b'='] {
            let mut over = format!("{}{}\r\n", kind as char, BULK_MAX + 1).into_bytes();
            assert_eq!(next(&over), Err(ReplyError::Number), "past BULK_MAX");
            over.truncate(1);
            assert_eq!(next(&over), Ok(None));
        }
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
        let cases: [(&[u8], ReplyError); 10] = [
            (b"?oops\r\n", ReplyError::Type(b'?')),
            (b"!oops\r\n", ReplyError::Number),
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
    fn reply_len_walks_resp3_aggregates() {
        // HGETALL: a map of two pairs.
        let map = b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n";
        // SMEMBERS in a set, ZRANGE WITHSCORES as arrays of pairs.
        let set = b"~2\r\n$1\r\nb\r\n$1\r\na\r\n";
        let zrange = b"*1\r\n*2\r\n$1\r\nm\r\n,1.5\r\n";
        // Attributes describe the reply after them, part of the same reply.
        let attribute = b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2\r\n:9\r\n";
        let nested = b"%1\r\n~1\r\n#t\r\n*2\r\n(1\r\n=5\r\ntxt:x\r\n";
        let push = b">2\r\n$7\r\nmessage\r\n!3\r\nERR\r\n";
        for reply in [&map[..], set, zrange, attribute, nested, push] {
            assert_eq!(reply_len(reply), Ok(Some(reply.len())));
            let mut two = reply.to_vec();
            two.extend(b"+OK\r\n");
            assert_eq!(reply_len(&two), Ok(Some(reply.len())));
            for cut in 0..reply.len() {
                assert_eq!(reply_len(&reply[..cut]), Ok(None), "cut {cut}");
            }
        }
        assert_eq!(reply_len(b"%0\r\n|0\r\n:1\r\n"), Ok(Some(4)));
        assert_eq!(reply_len(b"|0\r\n:1\r\n:2\r\n"), Ok(Some(8)));
        assert_eq!(
            reply_len(b"%9223372036854775807\r\n"),
            Ok(None),
            "a count that fits waits for its elements"
        );
        assert_eq!(
            reply_len(b"*2\r\n%9223372036854775807\r\n%9223372036854775807\r\n"),
            Err(ReplyError::Number),
            "counts past u64 are garbage"
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
        let mut big3 = b"|1\r\n+a\r\n#t\r\n%1\r\n=70004\r\ntxt:".to_vec();
        big3.extend(vec![b'y'; 70_000]);
        big3.extend(b"\r\n~3\r\n_\r\n,-inf\r\n!2\r\nno\r\n");
        let replies: [&[u8]; 9] = [
            &big,
            &big3,
            b"$0\r\n\r\n",
            b"+OK\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n*1\r\n:1\r\n$1\r\na\r\n",
            b"%1\r\n(12\r\n>1\r\n_\r\n",
            b"|0\r\n_\r\n",
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
        let cases: [(&[u8], ReplyError); 9] = [
            (b"?oops\r\n", ReplyError::Type(b'?')),
            (b"!oops\r\n", ReplyError::Number),
            (b"%-1\r\n", ReplyError::Number),
            (b"=-1\r\n", ReplyError::Number),
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
        b"*", b"$", b":", b"+", b"-", b"\r\n", b"1", b"-1", b"2", b"0", b"a", b"_", b"#", b"t",
        b",", b"(", b"!", b"=", b"txt:", b"%", b"~", b"|", b">", b".5", b"inf",
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
