//! How many connections wait in a listener's accept queue: the kernel's
//! socket diagnostics over netlink (`inet_diag`, what `ss -lt` shows as
//! Recv-Q), asked for the listening TCP sockets of one family and matched
//! to this shard's listener by its inode (with SO_REUSEPORT every shard's
//! listener has the same address). Safe code only: the request and the
//! replies are plain bytes (layouts from `linux/inet_diag.h` and
//! `linux/netlink.h`).

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

/// `SOCK_DIAG_BY_FAMILY`, the request and reply message type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const DUMP: u16 = 0x1 | 0x300;
/// `NLMSG_ERROR` and `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `TCP_LISTEN`'s bit in `idiag_states`.
const LISTENING: u32 = 1 << 10;
/// A netlink message header's size.
const HEADER: usize = 16;
/// Where, in an `inet_diag_msg`, the accept queue's length (`idiag_rqueue`),
/// the backlog (`idiag_wqueue`) and the inode are.
const RQUEUE: usize = 56;
const WQUEUE: usize = 60;
const INODE: usize = 68;

/// Asks the kernel about one listener.
pub struct QueueProbe {
    socket: OwnedFd,
    family: u8,
    inode: u32,
    buffer: Vec<u8>,
}

/// A listener's accept queue as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    /// Connections whose handshake completed, waiting to be accepted.
    pub waiting: u32,
    /// The most it holds (the backlog, capped by `somaxconn`).
    pub backlog: u32,
}

impl QueueProbe {
    /// A probe of `listener` (one netlink socket, kept open).
    pub fn new(listener: &TcpListener) -> io::Result<QueueProbe> {
        let family = match listener.local_addr()? {
            std::net::SocketAddr::V4(_) => libc::AF_INET as u8,
            std::net::SocketAddr::V6(_) => libc::AF_INET6 as u8,
        };
        let inode = nix::sys::stat::fstat(listener.as_fd())?.st_ino as u32;
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        Ok(QueueProbe {
            socket,
            family,
            inode,
            buffer: vec![0; 16 * 1024],
        })
    }

    /// The listener's queue now; `None` if the kernel did not list it.
    pub fn queue(&mut self) -> io::Result<Option<Queue>> {
        let request = request(self.family);
        let kernel = NetlinkAddr::new(0, 0);
        let fd = self.socket.as_raw_fd();
        sendto(fd, &request, &kernel, MsgFlags::empty())?;
        let mut found = None;
        loop {
            let len = recv(fd, &mut self.buffer, MsgFlags::empty())?;
            match parse(&self.buffer[..len], self.inode, &mut found) {
                Some(Ok(())) => return Ok(found),
                Some(Err(error)) => return Err(error),
                None => {}
            }
        }
    }
}

/// An `inet_diag_req_v2` dump of the listening TCP sockets of `family`.
fn request(family: u8) -> [u8; 72] {
    let mut message = [0u8; 72];
    message[0..4].copy_from_slice(&72u32.to_ne_bytes());
    message[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message[6..8].copy_from_slice(&DUMP.to_ne_bytes());
    message[HEADER] = family;
    message[HEADER + 1] = libc::IPPROTO_TCP as u8;
    message[HEADER + 4..HEADER + 8].copy_from_slice(&LISTENING.to_ne_bytes());
    message
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Reads one datagram of replies, noting the listener with `inode` in
/// `found`: `Some(Ok)` at the dump's end, `Some(Err)` on a netlink error,
/// `None` when more datagrams follow.
fn parse(mut bytes: &[u8], inode: u32, found: &mut Option<Queue>) -> Option<io::Result<()>> {
    while bytes.len() >= HEADER {
        let len = u32_at(bytes, 0)? as usize;
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if len < HEADER || len > bytes.len() {
            return Some(Err(io::Error::other("a truncated netlink reply")));
        }
        let body = &bytes[HEADER..len];
        match kind {
            NLMSG_DONE => return Some(Ok(())),
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).map_or(0, |e| -(e as i32));
                return Some(Err(io::Error::from_raw_os_error(errno)));
            }
            SOCK_DIAG_BY_FAMILY if u32_at(body, INODE) == Some(inode) => {
                *found = Some(Queue {
                    waiting: u32_at(body, RQUEUE)?,
                    backlog: u32_at(body, WQUEUE)?,
                });
            }
            _ => {}
        }
        // Messages are 4-byte aligned.
        bytes = bytes.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener's queue fills with connections nobody accepts, and the
    /// probe sees each of them.
    #[test]
    fn the_queue_of_a_listener_nobody_accepts() {
        let listener = crate::engine::sys::listener("127.0.0.1:0".parse().unwrap(), 16, false)
            .expect("a listener");
        let mut probe = QueueProbe::new(&listener).unwrap();
        let empty = probe.queue().unwrap().expect("listed");
        assert_eq!(
            empty,
            Queue {
                waiting: 0,
                backlog: 16
            }
        );
        let addr = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..5)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let waiting = probe.queue().unwrap().expect("listed").waiting;
        assert_eq!(waiting, 5);
        let _ = listener.accept().unwrap();
        assert_eq!(probe.queue().unwrap().expect("listed").waiting, 4);
        drop(clients);
    }
}
