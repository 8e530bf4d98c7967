//! The front door (issue 14), one file per part: the PROXY protocol
//! (`proxy`), per-address limits (`limits`), the request rate (`rate`),
//! peers that vanish (`dead_peer`), load shedding (`shed`), the memory
//! budget (`memory`). Helpers shared
//! by them are here.

mod dead_peer;
mod limits;
mod memory;
mod proxy;
mod rate;
mod shed;

use std::net::IpAddr;

pub const CLOSED: &str = "holdfast_connections_closed_total";
pub const REJECTED: &str = "holdfast_connections_rejected_total";

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The binary signature, version 2, the command and family bytes, the
/// length, the address block.
pub fn v2_header(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x20 | command, family]);
    header.extend_from_slice(&(block.len() as u16).to_be_bytes());
    header.extend_from_slice(block);
    header
}

/// Whether the server closed `stream` (it was refused), after the refusal
/// had time to arrive.
pub fn refused(stream: &std::net::TcpStream) -> bool {
    crate::util::poll_state(stream).is_err()
}
