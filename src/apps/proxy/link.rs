//! Connections of the proxy's own threads to the servers they ask about
//! replication (the cluster's topology, the replica watch): [`call`] opens
//! one for a single question; [`Links`] keeps one per server asked again
//! and again (`INFO replication` every second), opened and logged in at
//! first use and again after any error.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::engine::codec::reply;

/// How long a connect, a write or a read may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest reply read: a thousand nodes with their slot ranges take
/// well under this.
const REPLY_MAX: usize = 8 << 20;

/// Kept connections, by server; only those asked in the last round stay.
#[derive(Default)]
pub struct Links {
    open: HashMap<String, TcpStream>,
}

impl Links {
    /// The reply of the server at `addr` to `command`, on its kept
    /// connection or, if it has none or that one fails, a new one kept
    /// (that sends `auth`, an encoded `AUTH`, first).
    pub fn call(
        &mut self,
        addr: &str,
        auth: Option<&[u8]>,
        command: &[u8],
    ) -> Result<Vec<u8>, String> {
        if let Some(stream) = self.open.get_mut(addr) {
            match request(stream, command) {
                Ok(reply) => return Ok(reply),
                Err(error) => {
                    log::debug!("cluster: {addr}: kept connection: {error}; opening another");
                    self.open.remove(addr);
                }
            }
        }
        let mut stream = connect(addr, auth)?;
        let reply = request(&mut stream, command)?;
        self.open.insert(addr.to_string(), stream);
        Ok(reply)
    }

    /// Closes the connections to nodes not in `asked`.
    pub fn keep_only(&mut self, asked: &[&str]) {
        self.open.retain(|addr, _| asked.contains(&addr.as_str()));
    }
}

/// The reply of the node at `addr` to `command`, after `auth` if given,
/// on a connection of its own.
pub fn call(addr: &str, auth: Option<&[u8]>, command: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = connect(addr, auth)?;
    request(&mut stream, command)
}

/// `addr` resolved.
pub fn resolve(name: &str) -> Result<SocketAddr, String> {
    name.to_socket_addrs()
        .map_err(|error| format!("{name}: {error}"))?
        .next()
        .ok_or_else(|| format!("{name}: no address"))
}

/// A connection to `addr` with timeouts, logged in with `auth` (whose
/// reply must be `+OK`) if given.
fn connect(addr: &str, auth: Option<&[u8]>) -> Result<TcpStream, String> {
    let to = resolve(addr)?;
    let mut stream = TcpStream::connect_timeout(&to, IO_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    if let Some(auth) = auth {
        let reply = request(&mut stream, auth)?;
        if !reply.starts_with(b"+OK\r\n") {
            let line = reply.split(|&b| b == b'\r').next().unwrap_or_default();
            return Err(format!("AUTH refused: {}", String::from_utf8_lossy(line)));
        }
    }
    Ok(stream)
}

/// Sends `command` and reads its one whole reply (nothing else is in
/// flight on the connection).
fn request(stream: &mut TcpStream, command: &[u8]) -> Result<Vec<u8>, String> {
    stream.write_all(command).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(len) = reply::reply_len(&bytes).map_err(|e| e.to_string())? {
            if len != bytes.len() {
                return Err("more than the one reply asked for".into());
            }
            return Ok(bytes);
        }
        if bytes.len() > REPLY_MAX {
            return Err("reply too large".into());
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed before the reply".into()),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}
