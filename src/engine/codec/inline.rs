//! RESP inline commands (`SET "a b" 1`, typed into telnet) split into
//! arguments exactly as Redis splits them (`sdssplitargs` in Redis's
//! `src/sds.c`, called by `processInlineBuffer` in `src/networking.c`), and
//! re-encoded as the multibulk command a client library would have sent.
//! The engine hands services the multibulk form, so the key-value service
//! and the proxy (and the upstreams behind it) see the arguments Redis
//! would see, never the raw line.
//!
//! The rules, on the line without its `\r\n`:
//! - arguments are separated by blanks (space, `\t`, `\r`, `\n`, `\v`,
//!   `\f`; only space, `\t`, `\r` and `\n` end an unquoted word);
//! - a `"` starts a double-quoted part (also in the middle of a word):
//!   `\n \r \t \b \a` are escapes, `\xHH` is a byte, `\` before any other
//!   character is that character;
//! - a `'` starts a single-quoted part, where only `\'` is an escape;
//! - a closing quote must be followed by a blank or the end of the line,
//!   and every quote must be closed, else the line is a protocol error
//!   (`unbalanced quotes in request`; Redis closes the connection);
//! - a NUL byte ends the line, as for `sdssplitargs`, which reads a C
//!   string: the rest is ignored, or the line is unbalanced if a quote is
//!   open. (Redis itself looks for the line's `\n` with `strchr`, so it
//!   would not even see a line with a NUL end; the proxy does not wait.)

/// The line has a quote that is not closed, or a closing quote followed by
/// something other than a blank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unbalanced;

/// What receives the arguments as they are split.
trait Sink {
    /// The next byte of the current argument.
    fn byte(&mut self, byte: u8);
    /// The current argument ends (it may be empty: `""`).
    fn end(&mut self);
}

/// Where the splitter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// Between arguments.
    Blank,
    /// In an unquoted part of an argument.
    Word,
    /// In a double-quoted part.
    Double,
    /// After a `\` in a double-quoted part.
    DoubleEscape,
    /// After `\x` in a double-quoted part.
    Hex,
    /// After `\x` and one hex digit.
    HexDigit(u8),
    /// In a single-quoted part.
    Single,
    /// After a `\` in a single-quoted part.
    SingleEscape,
    /// Right after a closing quote.
    Closed,
}

/// Splits `line` (without its `\r\n`) as Redis does, into `sink`.
fn split(line: impl Iterator<Item = u8>, sink: &mut impl Sink) -> Result<(), Unbalanced> {
    let mut at = At::Blank;
    for byte in line.take_while(|&b| b != 0) {
        at = step(at, byte, sink)?;
    }
    match at {
        At::Blank => Ok(()),
        At::Word | At::Closed => {
            sink.end();
            Ok(())
        }
        _ => Err(Unbalanced),
    }
}

/// One byte of the line.
fn step(at: At, byte: u8, sink: &mut impl Sink) -> Result<At, Unbalanced> {
    Ok(match at {
        At::Blank if is_blank(byte) => At::Blank,
        At::Blank | At::Word => unquoted(byte, sink),
        At::Double | At::DoubleEscape | At::Hex | At::HexDigit(_) => double_quoted(at, byte, sink),
        At::Single | At::SingleEscape => single_quoted(at, byte, sink),
        At::Closed if is_blank(byte) => {
            sink.end();
            At::Blank
        }
        At::Closed => return Err(Unbalanced),
    })
}

/// A byte outside quotes (leading blanks already skipped).
fn unquoted(byte: u8, sink: &mut impl Sink) -> At {
    match byte {
        b' ' | b'\t' | b'\r' | b'\n' => {
            sink.end();
            At::Blank
        }
        b'"' => At::Double,
        b'\'' => At::Single,
        _ => {
            sink.byte(byte);
            At::Word
        }
    }
}

/// A byte in a double-quoted part, `at` one of its states.
fn double_quoted(at: At, byte: u8, sink: &mut impl Sink) -> At {
    match at {
        At::DoubleEscape => {
            let escaped = match byte {
                b'x' => return At::Hex,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'b' => 0x08,
                b'a' => 0x07,
                other => other,
            };
            sink.byte(escaped);
            At::Double
        }
        At::Hex => match hex(byte) {
            Some(_) => At::HexDigit(byte),
            // Not `\xHH`: the `x` stands for itself, this byte is read anew.
            None => {
                sink.byte(b'x');
                double_quoted(At::Double, byte, sink)
            }
        },
        At::HexDigit(first) => match (hex(first), hex(byte)) {
            (Some(high), Some(low)) => {
                sink.byte(high << 4 | low);
                At::Double
            }
            _ => {
                sink.byte(b'x');
                sink.byte(first);
                double_quoted(At::Double, byte, sink)
            }
        },
        // At::Double itself.
        _ => match byte {
            b'\\' => At::DoubleEscape,
            b'"' => At::Closed,
            _ => {
                sink.byte(byte);
                At::Double
            }
        },
    }
}

/// A byte in a single-quoted part, `at` one of its states: only `\'` is
/// an escape.
fn single_quoted(at: At, byte: u8, sink: &mut impl Sink) -> At {
    match (at, byte) {
        (At::SingleEscape, b'\'') => {
            sink.byte(b'\'');
            At::Single
        }
        (At::SingleEscape, _) => {
            sink.byte(b'\\');
            single_quoted(At::Single, byte, sink)
        }
        // At::Single itself.
        (_, b'\\') => At::SingleEscape,
        (_, b'\'') => At::Closed,
        _ => {
            sink.byte(byte);
            At::Single
        }
    }
}

/// C's `isspace` in the C locale.
fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

/// How a line re-encodes as multibulk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measure {
    /// Its arguments.
    pub args: usize,
    /// The bytes of the multibulk command (`*N\r\n`, then each `$len\r\n`,
    /// argument and `\r\n`).
    pub len: usize,
    /// The current argument's length so far.
    current: usize,
}

impl Sink for Measure {
    fn byte(&mut self, _: u8) {
        self.current += 1;
    }

    fn end(&mut self) {
        self.args += 1;
        self.len += header_len(self.current) + self.current + 2;
        self.current = 0;
    }
}

/// Splits `line` (without its `\r\n`) and measures its multibulk form.
pub fn measure(line: impl Iterator<Item = u8>) -> Result<Measure, Unbalanced> {
    let mut measure = Measure::default();
    split(line, &mut measure)?;
    measure.len += header_len(measure.args);
    Ok(measure)
}

/// Writes a multibulk command into a slice known to be large enough: each
/// argument's bytes go first, then move right to make room for its
/// `$len\r\n` once the length is known (inline lines are short, the move
/// is cheap), and the same for `*N\r\n` at the end.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
    /// Where the current argument starts.
    start: usize,
}

impl Sink for Writer<'_> {
    fn byte(&mut self, byte: u8) {
        self.out[self.at] = byte;
        self.at += 1;
    }

    fn end(&mut self) {
        let len = self.at - self.start;
        self.at = prepend_header(self.out, self.start, self.at, b'$', len);
        self.out[self.at..self.at + 2].copy_from_slice(b"\r\n");
        self.at += 2;
        self.start = self.at;
    }
}

/// Writes `line` (without its `\r\n`) as a multibulk command at the start
/// of `out`; returns its length. `None` when the line is unbalanced or
/// `out` is too small (nothing useful is written then).
pub fn to_multibulk(line: impl Iterator<Item = u8> + Clone, out: &mut [u8]) -> Option<usize> {
    let measure = measure(line.clone()).ok()?;
    if measure.len > out.len() {
        return None;
    }
    let mut writer = Writer {
        out,
        at: 0,
        start: 0,
    };
    split(line, &mut writer).ok()?;
    let len = prepend_header(writer.out, 0, writer.at, b'*', measure.args);
    debug_assert_eq!(len, measure.len);
    Some(len)
}

/// The length of `<kind><n>\r\n`.
fn header_len(n: usize) -> usize {
    1 + digits(n) + 2
}

fn digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Moves `out[start..end]` right and writes `<kind><n>\r\n` before it;
/// returns the new end.
fn prepend_header(out: &mut [u8], start: usize, end: usize, kind: u8, n: usize) -> usize {
    let header = header_len(n);
    out.copy_within(start..end, start + header);
    out[start] = kind;
    let mut value = n;
    for at in (start + 1..start + 1 + digits(n)).rev() {
        out[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out[start + header - 2..start + header].copy_from_slice(b"\r\n");
    end + header
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codec::resp::encode_command;
    use proptest::prelude::*;

    /// The arguments Redis would see for `line`.
    fn args(line: &[u8]) -> Result<Vec<Vec<u8>>, Unbalanced> {
        struct Collect(Vec<Vec<u8>>, Vec<u8>);
        impl Sink for Collect {
            fn byte(&mut self, byte: u8) {
                self.1.push(byte);
            }
            fn end(&mut self) {
                self.0.push(std::mem::take(&mut self.1));
            }
        }
        let mut collect = Collect(Vec::new(), Vec::new());
        split(line.iter().copied(), &mut collect)?;
        Ok(collect.0)
    }

    fn ok(line: &[u8], expected: &[&[u8]]) {
        let expected: Vec<Vec<u8>> = expected.iter().map(|a| a.to_vec()).collect();
        assert_eq!(
            args(line),
            Ok(expected),
            "{:?}",
            line.escape_ascii().to_string()
        );
    }

    #[test]
    fn words_split_on_blanks() {
        ok(b"", &[]);
        ok(b" \t\x0b ", &[]);
        ok(b"PING", &[b"PING"]);
        ok(b"  set  a\tb ", &[b"set", b"a", b"b"]);
        // \v and \f are blanks between words, not inside one.
        ok(b"\x0bget a\x0bb", &[b"get", b"a\x0bb"]);
    }

    #[test]
    fn double_quotes_take_escapes() {
        ok(b"SET \"a b\" 1", &[b"SET", b"a b", b"1"]);
        ok(b"\"\"", &[b""]);
        ok(br#""\n\r\t\b\a\\\"\q""#, &[b"\n\r\t\x08\x07\\\"q"]);
        ok(br#""\x41\x7a\xff""#, &[b"Az\xff"]);
        // Not two hex digits: the x stands for itself.
        ok(br#""\xZ1" "\x4Z" "\x4""#, &[b"xZ1", b"x4Z", b"x4"]);
        // A quote in the middle of a word opens a quoted part.
        ok(br#"ab"c d" e"#, &[b"abc d", b"e"]);
        ok(b"'x'\x0by", &[b"x", b"y"]);
    }

    #[test]
    fn single_quotes_take_only_one_escape() {
        ok(br#"'it\'s' '\n' 'a"b'"#, &[b"it's", b"\\n", b"a\"b"]);
        ok(br#"'a\b'"#, &[b"a\\b"]);
    }

    #[test]
    fn unbalanced_quotes_are_refused() {
        for line in [
            &br#"GET "x"#[..],
            br#"GET 'x"#,
            br#"SET "a"b 1"#,
            br#"SET 'a'b 1"#,
            br#""abc\"#,
            br#""\x4"#,
            br#"'\'"#,
            // The first backslash stands for itself, the second escapes
            // the quote: nothing closes it (as in Redis).
            br#"'\\'"#,
            b"\"a\0\"",
        ] {
            assert_eq!(args(line), Err(Unbalanced), "{:?}", line.escape_ascii());
        }
    }

    #[test]
    fn a_nul_ends_the_line() {
        ok(b"GET a\0b c", &[b"GET", b"a"]);
        ok(b"GET \"a\"\0junk", &[b"GET", b"a"]);
    }

    #[test]
    fn multibulk_form_is_what_a_client_sends() {
        for line in [
            &b"SET \"a b\" 1"[..],
            b"",
            b"  x  ",
            br#"'it\'s' "\x41" """#,
        ] {
            let mut expected = Vec::new();
            let parts = args(line).unwrap();
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            encode_command(&refs, &mut expected);
            let measured = measure(line.iter().copied()).unwrap();
            assert_eq!(measured.len, expected.len());
            assert_eq!(measured.args, parts.len());
            let mut out = vec![0u8; expected.len()];
            assert_eq!(
                to_multibulk(line.iter().copied(), &mut out),
                Some(expected.len())
            );
            assert_eq!(out, expected);
            assert_eq!(
                to_multibulk(line.iter().copied(), &mut out[..expected.len() - 1]),
                None,
                "too small"
            );
        }
    }

    proptest! {
        #[test]
        fn any_line_splits_or_is_refused_without_panic(
            line in prop::collection::vec(
                prop::sample::select(&b"ab \t\"'\\x4f\0\r\n\x0b"[..]), 0..40),
        ) {
            let mut out = vec![0u8; 16 * line.len() + 16];
            match args(&line) {
                Ok(parts) => {
                    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                    let mut expected = Vec::new();
                    encode_command(&refs, &mut expected);
                    let len = to_multibulk(line.iter().copied(), &mut out);
                    prop_assert_eq!(len, Some(expected.len()));
                    prop_assert_eq!(&out[..expected.len()], &expected[..]);
                }
                Err(Unbalanced) => {
                    prop_assert_eq!(to_multibulk(line.iter().copied(), &mut out), None);
                }
            }
        }
    }
}
