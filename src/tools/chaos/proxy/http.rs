//! Just enough HTTP/1.1 for Toxiproxy's clients: one request per
//! connection (`Connection: close` on every answer), a head of at most
//! [`HEAD_MAX`] bytes, a body of at most [`BODY_MAX`] bytes announced by
//! `Content-Length`, and [`IO_TIMEOUT`] for each read and write.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// The largest request head (request line and headers).
pub const HEAD_MAX: usize = 8 * 1024;
/// The largest request body (a `/populate` of many proxies fits).
pub const BODY_MAX: usize = 1 << 20;
/// A client that sends or reads nothing for this long is dropped.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Request {
    pub method: String,
    /// Without the query string.
    pub path: String,
    pub user_agent: String,
    pub body: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }
}

/// Reads one request; `Err(response)` for a request that cannot be served.
pub fn read_request(stream: &mut TcpStream) -> Result<Request, Response> {
    let fail = |status: u16, message: &str| {
        let body = super::error::ApiError::new(message, status).body();
        Response::json(status, body)
    };
    let mut data = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&data, b"\r\n\r\n") {
            break at;
        }
        if data.len() > HEAD_MAX {
            return Err(fail(431, "request head too large"));
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(fail(400, "incomplete request")),
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(fail(400, "bad request line"));
    };
    let mut length = 0;
    let mut user_agent = String::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value.parse().map_err(|_| fail(400, "bad content-length"))?;
            }
            "transfer-encoding" => return Err(fail(411, "send a content-length")),
            "user-agent" => user_agent = value.to_string(),
            "expect" if value.eq_ignore_ascii_case("100-continue") => {
                let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            _ => {}
        }
    }
    if length > BODY_MAX {
        return Err(fail(413, "request body too large"));
    }
    let mut body = data.split_off(head_end + 4);
    body.truncate(length);
    while body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(fail(400, "incomplete request body")),
            Ok(n) => body.extend_from_slice(&chunk[..n.min(length - body.len())]),
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    Ok(Request {
        method: method.to_string(),
        path,
        user_agent,
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// Writes `response` and closes our side; reads what the client still
/// sends (for at most [`IO_TIMEOUT`]) so that the close is not a reset.
pub fn write_response(stream: &mut TcpStream, response: &Response) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    if response.status != 204 {
        out.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            response.content_type,
            response.body.len()
        ));
    }
    out.push_str("Connection: close\r\n\r\n");
    if response.status != 204 {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut sink = [0u8; 1024];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    Ok(())
}
