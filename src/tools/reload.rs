//! `holdfast reload`: asks a running server to reload its settings
//! (`POST /reload` on its admin endpoint) and says what came of it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long to wait for the server's answer: the reload runs before it
/// answers (reading the file, resolving upstream names).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read: one line, and the HTTP head.
const ANSWER_MAX: u64 = 64 * 1024;

/// What the server answered: its HTTP status and the line it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// 200 when applied, 422 when the file is invalid, 409 when it
    /// changes a setting that is not live.
    pub status: u16,
    /// The server's one line.
    pub line: String,
}

/// Posts `/reload` to the admin endpoint at `admin`. `Err`: no answer
/// (cannot connect, timed out, not HTTP), as one line.
pub fn run(admin: SocketAddr) -> Result<Answer, String> {
    let fail = |what: &str, e: std::io::Error| format!("admin endpoint {admin}: {what}: {e}");
    let mut stream = TcpStream::connect_timeout(&admin, TIMEOUT).map_err(|e| fail("connect", e))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| fail("set timeout", e))?;
    let request = format!(
        "POST /reload HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail("send", e))?;
    let mut answer = Vec::new();
    stream
        .take(ANSWER_MAX)
        .read_to_end(&mut answer)
        .map_err(|e| fail("read the answer", e))?;
    parse(&answer).ok_or_else(|| format!("admin endpoint {admin}: not an HTTP answer"))
}

/// The status and body of an HTTP/1.1 answer.
fn parse(answer: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        line: body.trim_end().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_line_are_read() {
        let answer = b"HTTP/1.1 409 Conflict\r\nContent-Length: 5\r\n\r\nnope\n";
        let expected = Answer {
            status: 409,
            line: "nope".into(),
        };
        assert_eq!(parse(answer), Some(expected));
        assert_eq!(parse(b"garbage"), None);
    }
}
