//! The PROXY protocol header, versions 1 (text) and 2 (binary), as HAProxy's
//! `doc/proxy-protocol.txt` (2020/03/05) specifies it: what a load balancer
//! sends before a client's bytes to say whose connection it is relaying.
//!
//! [`parse`] looks at the bytes received so far and says whether they are a
//! whole header (and how long), need more, or can never become one. It
//! decides as early as the bytes allow: a first byte that starts neither
//! signature is refused at once, and a text line is refused as soon as it
//! holds a lone CR or LF or passes 107 bytes without its CRLF.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::ProxyProtocol;

/// The binary header's signature (section 2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The text header's start (section 2.1).
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest text header, CRLF included (section 2.1: the worst case is
/// `PROXY UNKNOWN` with two IPv6 addresses and two ports).
pub const V1_MAX: usize = 107;
/// The binary header's fixed part: signature, version and command, family
/// and protocol, length.
const V2_FIXED: usize = 16;

/// What the bytes received so far are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The start of a header: more bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes (the client's bytes follow it).
    /// `source` is the client's address, or `None` where the connection's
    /// own peer address stands (a `LOCAL` or `UNKNOWN` header, a family
    /// other than TCP over IPv4 or IPv6).
    Header {
        /// The header's length in bytes.
        len: usize,
        /// The client's address and port.
        source: Option<SocketAddr>,
    },
    /// The bytes start no header of an accepted version.
    Missing,
    /// A header that breaks the specification; the reason.
    Malformed(&'static str),
}

/// Reads a header of a version `mode` accepts from the start of `bytes`.
/// A binary header whose declared length passes `max_len` (the input
/// ring's capacity: the header is read whole into it) is malformed.
pub fn parse(bytes: &[u8], mode: ProxyProtocol, max_len: usize) -> Parsed {
    let Some(&first) = bytes.first() else {
        return Parsed::Incomplete;
    };
    if first == V2_SIGNATURE[0] && mode.takes_v2() {
        parse_v2(bytes, max_len)
    } else if first == V1_PREFIX[0] && mode.takes_v1() {
        parse_v1(bytes)
    } else {
        Parsed::Missing
    }
}

/// Section 2.1: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, or `PROXY
/// UNKNOWN` followed by anything up to the CRLF.
fn parse_v1(bytes: &[u8]) -> Parsed {
    let start = &bytes[..bytes.len().min(V1_PREFIX.len())];
    if start != &V1_PREFIX[..start.len()] {
        return Parsed::Missing;
    }
    let scanned = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = line_end(scanned) else {
        return Parsed::Malformed("a lone CR or LF in the PROXY line");
    };
    let Some(end) = end else {
        if scanned.len() >= V1_MAX {
            return Parsed::Malformed("no CRLF within 107 bytes of the PROXY line");
        }
        return Parsed::Incomplete;
    };
    let len = end + 2;
    let Some(line) = bytes.get(V1_PREFIX.len()..end) else {
        return Parsed::Incomplete;
    };
    match v1_source(line) {
        Ok(source) => Parsed::Header { len, source },
        Err(reason) => Parsed::Malformed(reason),
    }
}

/// Where the CRLF starts: `Some(None)` while none is in yet, `None` when a
/// CR not followed by LF, or an LF not after a CR, came first.
fn line_end(bytes: &[u8]) -> Option<Option<usize>> {
    for (at, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\r' => {
                return match bytes.get(at + 1) {
                    Some(b'\n') => Some(Some(at)),
                    Some(_) => None,
                    None => Some(None),
                };
            }
            b'\n' => return None,
            _ => {}
        }
    }
    Some(None)
}

/// The source of the line after `PROXY ` (without its CRLF).
fn v1_source(line: &[u8]) -> Result<Option<SocketAddr>, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "a PROXY line that is not ASCII")?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    let v4 = match family {
        // The receiver ignores what follows UNKNOWN (section 2.1).
        "UNKNOWN" => return Ok(None),
        "TCP4" => true,
        "TCP6" => false,
        _ => return Err("a PROXY line whose protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let fields: Vec<&str> = fields.collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err("a PROXY line without exactly two addresses and two ports");
    };
    let address = |text: &str| if v4 { v1_ipv4(text) } else { v1_ipv6(text) };
    let source = address(source).ok_or("a PROXY line with a bad source address")?;
    address(destination).ok_or("a PROXY line with a bad destination address")?;
    let port = v1_port(source_port).ok_or("a PROXY line with a bad source port")?;
    v1_port(destination_port).ok_or("a PROXY line with a bad destination port")?;
    Ok(Some(SocketAddr::new(source, port)))
}

/// Four decimal numbers 0 to 255 with no leading zeroes, dot-separated.
fn v1_ipv4(text: &str) -> Option<IpAddr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        *octet = decimal(parts.next()?, 3)?.try_into().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

/// An IPv6 address in its text form (hex groups, one `::` at most). The
/// specification asks for hex groups only, but `inet_ntop`, which senders
/// use, writes an IPv4-mapped address as `::ffff:1.2.3.4`: taken too.
fn v1_ipv6(text: &str) -> Option<IpAddr> {
    text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// A port, 0 to 65535 with no leading zeroes.
fn v1_port(text: &str) -> Option<u16> {
    decimal(text, 5)?.try_into().ok()
}

/// A decimal number of 1 to `digits` digits with no leading zero.
fn decimal(text: &str, digits: usize) -> Option<u32> {
    let bytes = text.as_bytes();
    let plain = !bytes.is_empty()
        && bytes.len() <= digits
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes[0] != b'0' || bytes.len() == 1);
    plain.then(|| text.parse().ok()).flatten()
}

/// Section 2.2: the signature, version 2 and a command, a family and
/// protocol, the length of what follows, the addresses, TLVs (skipped).
fn parse_v2(bytes: &[u8], max_len: usize) -> Parsed {
    let start = &bytes[..bytes.len().min(V2_SIGNATURE.len())];
    if start != &V2_SIGNATURE[..start.len()] {
        return Parsed::Missing;
    }
    if let Some(&version) = bytes.get(12)
        && (version >> 4 != 2 || version & 0xf > 1)
    {
        return Parsed::Malformed("a binary PROXY header of another version or command");
    }
    if let Some(&family) = bytes.get(13)
        && (family >> 4 > 3 || family & 0xf > 2)
    {
        return Parsed::Malformed("a binary PROXY header of an unknown family or protocol");
    }
    if bytes.len() < V2_FIXED {
        return Parsed::Incomplete;
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if len > max_len {
        return Parsed::Malformed("a binary PROXY header longer than the connection's buffer");
    }
    if bytes.len() < len {
        return Parsed::Incomplete;
    }
    let local = bytes[12] & 0xf == 0;
    match v2_source(bytes[13], &bytes[V2_FIXED..len]) {
        // A LOCAL header's addresses are ignored, whatever they are.
        _ if local => Parsed::Header { len, source: None },
        Ok(source) => Parsed::Header { len, source },
        Err(reason) => Parsed::Malformed(reason),
    }
}

/// The source address of a binary header's address block.
fn v2_source(family: u8, block: &[u8]) -> Result<Option<SocketAddr>, &'static str> {
    let short = "a binary PROXY header too short for its addresses";
    match family {
        // TCP over IPv4: two 4-byte addresses, two ports.
        0x11 => {
            let block = block.get(..12).ok_or(short)?;
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            let port = u16::from_be_bytes([block[8], block[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // TCP over IPv6: two 16-byte addresses, two ports.
        0x21 => {
            let block = block.get(..36).ok_or(short)?;
            let octets: [u8; 16] = block[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([block[32], block[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        // UDP, UNIX and UNSPEC: what a TCP listener does not serve falls
        // back to the connection's own addresses (section 2.2), but the
        // declared block must still hold its addresses.
        0x12 if block.len() < 12 => Err(short),
        0x22 if block.len() < 36 => Err(short),
        0x31 | 0x32 if block.len() < 216 => Err(short),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests;
