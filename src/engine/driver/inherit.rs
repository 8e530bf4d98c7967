//! Listening sockets the process did not open itself: those a binary
//! upgrade receives over a Unix socket (`engine/upgrade.rs`) and those
//! systemd passes (`LISTEN_FDS`). Taking a descriptor number is the one
//! step here that the compiler cannot check.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of `fd`, which must be a listening TCP socket: it is
/// checked to be a socket that listens, in the TCP family, and made
/// non-blocking and close-on-exec.
pub fn adopt_listener(fd: RawFd) -> io::Result<std::net::TcpListener> {
    // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags, on any
    // number. The descriptor must be open before it is owned, or OwnedFd
    // would close a number some other part of the process may reuse; the
    // caller passes one nothing else in the process owns (received with
    // SCM_RIGHTS, or passed by systemd and touched by no other code), so
    // this is its only owner and closing it on drop is right.
    let owned = unsafe {
        if libc::fcntl(fd, libc::F_GETFD) < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    let socket = socket2::Socket::from(owned);
    if !socket.is_listener()? {
        return Err(io::Error::other(format!("descriptor {fd} does not listen")));
    }
    if socket.r#type()? != socket2::Type::STREAM || socket.local_addr()?.as_socket().is_none() {
        return Err(io::Error::other(format!(
            "descriptor {fd} is not a TCP socket"
        )));
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    Ok(socket.into())
}

/// The listening sockets systemd passed to this process (socket
/// activation: `LISTEN_PID` is this process, `LISTEN_FDS` counts the
/// descriptors from 3), or `None` when it passed none. A child would not
/// take them for its own: `LISTEN_PID` names this process.
pub fn systemd_listeners() -> io::Result<Option<Vec<std::net::TcpListener>>> {
    const FIRST: i32 = 3;
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: i32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| io::Error::other(format!("LISTEN_FDS={count}: not a count of 1 to 1024")))?;
    let listeners = (FIRST..FIRST + count)
        .map(adopt_listener)
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Some(listeners))
}
