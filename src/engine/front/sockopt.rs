//! Socket options against peers that vanish without a FIN (a NAT that
//! forgot the flow, a pulled cable, a host that died): TCP keepalive for a
//! quiet connection, TCP_USER_TIMEOUT for data that is never acknowledged.
//! The kernel then ends the connection with ETIMEDOUT, which the shard
//! counts as `dead_peer`.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::config::{Config, Keepalive};

/// The options set on every client and upstream socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    keepalive: Option<Keepalive>,
    user_timeout: Option<Duration>,
}

impl SocketOptions {
    /// The options `config` asks for, or `None` when it asks for none
    /// (then no socket gets a syscall more).
    pub fn from_config(config: &Config) -> Option<SocketOptions> {
        let options = SocketOptions {
            keepalive: config.tcp_keepalive.0,
            user_timeout: Some(config.tcp_user_timeout).filter(|d| !d.is_zero()),
        };
        (options.keepalive.is_some() || options.user_timeout.is_some()).then_some(options)
    }

    /// Sets them on `socket`.
    pub fn apply(&self, socket: &std::net::TcpStream) -> io::Result<()> {
        let socket = SockRef::from(socket);
        if let Some(keepalive) = self.keepalive {
            let probes = TcpKeepalive::new()
                .with_time(keepalive.idle)
                .with_interval(keepalive.interval)
                .with_retries(keepalive.count);
            socket.set_tcp_keepalive(&probes)?;
        }
        if let Some(timeout) = self.user_timeout {
            socket.set_tcp_user_timeout(Some(timeout))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_reach_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let options = SocketOptions {
            keepalive: Some(Keepalive {
                idle: Duration::from_secs(7),
                interval: Duration::from_secs(3),
                count: 4,
            }),
            user_timeout: Some(Duration::from_millis(1500)),
        };
        options.apply(&socket).unwrap();
        let socket = SockRef::from(&socket);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 4);
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(SocketOptions::from_config(&Config::default()), None);
    }
}
