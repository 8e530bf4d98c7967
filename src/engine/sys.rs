//! The few operating-system facts and knobs the server needs: file
//! descriptor limits, listening sockets, the spare fd, CPU count.

use std::fs::File;
use std::io;
use std::net::SocketAddr;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use socket2::{Domain, Protocol, Socket, Type};

/// Raises the soft RLIMIT_NOFILE to the hard limit (as Redis does) and
/// returns the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// A non-blocking listening socket on `addr`. With `reuse_port` several
/// sockets (one per shard) share the address and the kernel spreads new
/// connections over them.
pub fn listener(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Opens the spare descriptor kept for shedding under EMFILE: closing it
/// frees one fd, enough to accept a waiting connection and close it, so the
/// listener's backlog drains instead of the loop spinning on a readable
/// listener it cannot accept from.
pub fn spare_fd() -> io::Result<File> {
    File::open("/dev/null")
}

/// Whether an accept error means the process or system is out of fds.
pub fn is_fd_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}

/// Pins the calling thread to the `index`-th CPU this process may run on
/// (wrapping around); returns that CPU's number.
pub fn pin_to_cpu(index: usize) -> io::Result<usize> {
    let pid = nix::unistd::Pid::from_raw(0);
    let allowed = sched_getaffinity(pid).map_err(io::Error::from)?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .collect();
    let cpu = *cpus
        .get(index % cpus.len().max(1))
        .ok_or_else(|| io::Error::other("no CPU in this process's affinity mask"))?;
    let mut only = CpuSet::new();
    only.set(cpu).map_err(io::Error::from)?;
    sched_setaffinity(pid, &only).map_err(io::Error::from)?;
    Ok(cpu)
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Counts the entries of `/proc/self/fd`. The directory being listed is
/// itself an open fd and shows up in the listing, so it is subtracted:
/// the figure is what the process holds apart from this measurement.
pub fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    let mut count: u64 = 0;
    for entry in entries {
        entry.ok()?;
        count += 1;
    }
    Some(count.saturating_sub(1))
}
