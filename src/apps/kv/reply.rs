//! Writing replies: one [`Sink`] interface over the connection's reply
//! window ([`Out`]) and a rendered reply kept for later ([`Text`]), and
//! Redis's error texts. A sink knows the connection's protocol: RESP2, or
//! RESP3 after `HELLO 3`, where nulls, maps, sets, verbatim strings and
//! push frames have types of their own (RESP2 writes them as Redis does
//! there: `$-1`, flat arrays, bulk strings).

use crate::engine::service::Reply;

pub const OK: &[u8] = b"+OK\r\n";
pub const NIL: &[u8] = b"$-1\r\n";
/// RESP3's null.
pub const NULL3: &[u8] = b"_\r\n";
pub const EMPTY_BULK: &[u8] = b"$0\r\n\r\n";
pub const EMPTY_ARRAY: &[u8] = b"*0\r\n";
pub const ZERO: &[u8] = b":0\r\n";
pub const ONE: &[u8] = b":1\r\n";
pub const OOM: &[u8] = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";
pub const NOT_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";
pub const NOT_FLOAT: &[u8] = b"-ERR value is not a valid float\r\n";
pub const SYNTAX: &[u8] = b"-ERR syntax error\r\n";
pub const NO_SUCH_KEY: &[u8] = b"-ERR no such key\r\n";
pub const TOO_LARGE: &[u8] = b"-ERR reply too large for the connection buffer\r\n";
pub const STRING_TOO_LONG: &[u8] =
    b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n";

/// Where a reply goes; every write is all or nothing against `room`.
pub trait Sink {
    /// Appends `bytes` (the caller checked [`Sink::room`] for data-sized
    /// parts; small parts fit the reserve by construction).
    fn put(&mut self, bytes: &[u8]);

    /// Bytes still allowed.
    fn room(&self) -> usize;

    /// Whether the connection speaks RESP3.
    fn resp3(&self) -> bool;

    /// `<kind><number>\r\n`.
    fn header(&mut self, kind: u8, len: i64) {
        let mut buf = [0u8; 24];
        let n = write_header(&mut buf, kind, len);
        self.put(&buf[..n]);
    }

    /// A bulk string.
    fn bulk(&mut self, value: &[u8]) {
        self.header(b'$', value.len() as i64);
        self.put(value);
        self.put(b"\r\n");
    }

    /// An integer.
    fn integer(&mut self, value: i64) {
        self.header(b':', value);
    }

    /// An array header.
    fn array(&mut self, len: usize) {
        self.header(b'*', len as i64);
    }

    /// A null (`$-1`; RESP3 `_`).
    fn null(&mut self) {
        self.put(if self.resp3() { NULL3 } else { NIL });
    }

    /// A map header for `pairs` key-value pairs (RESP2: an array of twice
    /// as many elements).
    fn map(&mut self, pairs: usize) {
        if self.resp3() {
            self.header(b'%', pairs as i64);
        } else {
            self.array(2 * pairs);
        }
    }

    /// A set header (RESP2: an array).
    fn set(&mut self, len: usize) {
        self.header(if self.resp3() { b'~' } else { b'*' }, len as i64);
    }

    /// A push frame's header (RESP2: an array), as Pub/Sub messages are.
    fn push(&mut self, len: usize) {
        self.header(if self.resp3() { b'>' } else { b'*' }, len as i64);
    }

    /// A verbatim text (`=<len>\r\ntxt:...`; RESP2: a bulk string), as
    /// INFO replies.
    fn verbatim(&mut self, text: &[u8]) {
        if !self.resp3() {
            return self.bulk(text);
        }
        self.header(b'=', text.len() as i64 + 4);
        self.put(b"txt:");
        self.put(text);
        self.put(b"\r\n");
    }

    /// `-ERR <text>`, with CR and LF turned to spaces as Redis does.
    fn error(&mut self, text: &[u8]) {
        self.put(b"-ERR ");
        self.put(&no_newlines(text));
        self.put(b"\r\n");
    }

    /// `-ERR wrong number of arguments for '<name>' command`.
    fn wrong_arity(&mut self, name: &str) {
        self.put(b"-ERR wrong number of arguments for '");
        self.put(name.as_bytes());
        self.put(b"' command\r\n");
    }

    /// `-ERR invalid expire time in '<name>' command`.
    fn invalid_expire(&mut self, name: &str) {
        self.put(b"-ERR invalid expire time in '");
        self.put(name.as_bytes());
        self.put(b"' command\r\n");
    }
}

/// The connection's reply window: writes cannot pass the reserve, and a
/// failed put marks the reply overflowed (the engine then closes the
/// connection, a service bug, never silently truncates).
pub struct Out<'r, 'a> {
    pub reply: &'r mut Reply<'a>,
    /// QUIT: close once this reply is flushed.
    pub close: bool,
    /// The connection speaks RESP3.
    pub resp3: bool,
}

impl Sink for Out<'_, '_> {
    fn put(&mut self, bytes: &[u8]) {
        let _ = self.reply.put(bytes);
    }

    fn room(&self) -> usize {
        self.reply.remaining()
    }

    fn resp3(&self) -> bool {
        self.resp3
    }
}

/// A reply rendered ahead of its call, at most `limit` bytes: past it the
/// text is marked too large and the rest is dropped.
#[derive(Default)]
pub struct Text {
    pub bytes: Vec<u8>,
    pub limit: usize,
    pub too_large: bool,
    /// Rendered for a RESP3 connection.
    pub resp3: bool,
}

impl Text {
    /// Empties it for a reply of at most `limit` bytes.
    pub fn reset(&mut self, limit: usize) {
        self.bytes.clear();
        self.limit = limit;
        self.too_large = false;
    }
}

impl Sink for Text {
    fn put(&mut self, bytes: &[u8]) {
        if self.too_large || bytes.len() > self.room() {
            self.too_large = true;
            return;
        }
        self.bytes.extend_from_slice(bytes);
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.bytes.len())
    }

    fn resp3(&self) -> bool {
        self.resp3
    }
}

/// `text` with CR and LF as spaces (Redis's `sdsmapchars` on errors).
pub fn no_newlines(text: &[u8]) -> Vec<u8> {
    text.iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect()
}

/// `text` up to its first NUL byte, as C's `%s` prints an argument.
pub fn c_str(text: &[u8]) -> &[u8] {
    text.split(|&b| b == 0).next().unwrap_or_default()
}

/// Writes `<kind><number>\r\n` into `buf`; returns its length.
pub fn write_header(buf: &mut [u8; 24], kind: u8, value: i64) -> usize {
    buf[0] = kind;
    let mut digits = [0u8; 20];
    let mut n = value.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = 1;
    if value < 0 {
        buf[at] = b'-';
        at += 1;
    }
    let len = digits.len() - i;
    buf[at..at + len].copy_from_slice(&digits[i..]);
    at += len;
    buf[at..at + 2].copy_from_slice(b"\r\n");
    at + 2
}

fn digits(mut n: usize) -> usize {
    let mut count = 1;
    while n >= 10 {
        n /= 10;
        count += 1;
    }
    count
}

/// Bytes of `$<len>\r\n<value>\r\n`.
pub fn bulk_len(value: &[u8]) -> usize {
    bulk_len_of(value.len())
}

/// Bytes of a bulk string of `len` bytes.
pub fn bulk_len_of(len: usize) -> usize {
    1 + digits(len) + 2 + len + 2
}

/// Bytes of `*<count>\r\n`.
pub fn array_header_len(count: usize) -> usize {
    1 + digits(count) + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_render_numbers() {
        let mut buf = [0u8; 24];
        let n = write_header(&mut buf, b':', -42);
        assert_eq!(&buf[..n], b":-42\r\n");
        let n = write_header(&mut buf, b'$', 0);
        assert_eq!(&buf[..n], b"$0\r\n");
        let n = write_header(&mut buf, b':', i64::MIN);
        assert_eq!(&buf[..n], b":-9223372036854775808\r\n");
    }

    #[test]
    fn sizes_match_rendering() {
        assert_eq!(bulk_len(b"hello"), b"$5\r\nhello\r\n".len());
        assert_eq!(bulk_len(&[0; 10]), 4 + 10 + 3);
        assert_eq!(array_header_len(12), b"*12\r\n".len());
    }

    #[test]
    fn text_refuses_what_passes_its_limit() {
        let mut text = Text::default();
        text.reset(8);
        text.bulk(b"abc");
        assert!(text.too_large, "9 bytes in a limit of 8");
        text.reset(9);
        text.bulk(b"abc");
        assert_eq!(
            (text.bytes.as_slice(), text.too_large),
            (&b"$3\r\nabc\r\n"[..], false)
        );
    }

    #[test]
    fn errors_lose_their_newlines_and_stop_at_nul() {
        assert_eq!(no_newlines(b"a\r\nb"), b"a  b");
        assert_eq!(c_str(b"ab\0cd"), b"ab");
    }
}
