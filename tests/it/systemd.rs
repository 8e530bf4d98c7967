//! Socket activation: holdfast started as systemd starts a socket unit's
//! service, by `systemd-socket-activate` (systemd's own tool for it): the
//! listening socket is bound by systemd and passed as fd 3 with
//! `LISTEN_FDS`/`LISTEN_PID`; holdfast binds nothing itself.

use crate::util;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use util::line_round_trip;

/// Kills and reaps the child if the test fails before it exits.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serves_on_the_listener_systemd_passes() {
    let port = util::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::env::temp_dir().join(format!("holdfast-it-systemd-{}.log", std::process::id()));
    let stderr = std::fs::File::create(&log).unwrap();
    // --listen names another port: the inherited socket is served instead.
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &addr.to_string(), env!("CARGO_BIN_EXE_holdfast")])
        .args([
            "serve",
            "--protocol",
            "line",
            "--admin",
            "off",
            "--threads",
            "2",
        ])
        .args(["--listen", "127.0.0.1:1", "--shutdown-grace", "2s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("systemd-socket-activate (make deps installs it)");
    let mut child = Reaped(child);
    // systemd-socket-activate listens, and starts holdfast on the first
    // connection, as a socket unit does.
    assert!(
        util::wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "systemd-socket-activate listens on {addr}"
    );
    for i in 0..20 {
        let mut client = util::connect(addr);
        line_round_trip(&mut client, format!("hello {i}").as_bytes());
    }
    // The shards serve before the start-up logs its listening line: wait
    // for the line rather than read the log once.
    let listening = format!("listening on {addr}");
    let mut text = String::new();
    util::wait_until(Duration::from_secs(5), || {
        text = std::fs::read_to_string(&log).unwrap();
        text.contains(&listening)
    });
    assert!(
        text.contains("socket activation: 1 listener from systemd"),
        "holdfast says where its listener came from:\n{text}"
    );
    assert!(text.contains(&listening), "{text}");
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM).unwrap();
    let mut status = None;
    util::wait_until(Duration::from_secs(5), || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    let status = status.expect("holdfast exits on SIGTERM");
    assert!(status.success(), "holdfast exits 0 on SIGTERM: {status}");
    let _ = std::fs::remove_file(&log);
}
