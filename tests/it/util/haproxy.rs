//! A real HAProxy (Debian's `haproxy`, installed by `make deps`) in TCP
//! mode in front of a server, sending the PROXY protocol header, and
//! clients that connect from a chosen loopback address.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{IO_TIMEOUT, free_port, wait_until};

/// An `haproxy -db` child; dropping it kills and reaps it and removes its
/// configuration file.
pub struct Haproxy {
    child: Child,
    config: std::path::PathBuf,
    /// Where clients connect.
    pub addr: SocketAddr,
}

impl Haproxy {
    /// HAProxy on a free loopback port relaying every connection to
    /// `server` with `send` on its server line (`send-proxy`,
    /// `send-proxy-v2`).
    pub fn start(server: SocketAddr, send: &str) -> Haproxy {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let text = format!(
            "global\n    maxconn 4000\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    \
             timeout server 30s\n\
             frontend front\n    bind {addr}\n    default_backend holdfast\n\
             backend holdfast\n    server one {server} {send}\n"
        );
        let config = std::env::temp_dir().join(format!("holdfast-it-haproxy-{port}.cfg"));
        std::fs::File::create(&config)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .expect("writing the HAProxy configuration");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running haproxy (make deps installs Debian's haproxy)");
        let haproxy = Haproxy {
            child,
            config,
            addr,
        };
        // Waiting by connecting would send a connection through to the
        // server: look for the listening socket instead.
        assert!(
            wait_until(Duration::from_secs(5), || listening(port)),
            "haproxy did not listen on {addr}"
        );
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Whether a socket listens on 127.0.0.1:`port` (from /proc/net/tcp).
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
    })
}

/// A client bound to `source` (port chosen by the kernel) connected to
/// `addr`, with the usual timeouts; `Err` if the connect failed.
pub fn connect_from(source: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&addr.into(), IO_TIMEOUT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
