//! The front door: who may connect, how often and how fast, before a
//! connection reaches the data path. The shard consults it at accept, at a
//! connection's first bytes (its PROXY header) and at release
//! (`shard/door.rs`); with every feature off the shard has no door at all.
//!
//! - [`header`]: the PROXY protocol header (v1 and v2), a pure parser;
//! - `table`: the per-address limits, one table for the process;
//! - `bucket`: the token bucket of every rate;
//! - `throttle`: `--request-rate`, each connection's frames a second;
//! - `sockopt`: TCP keepalive and user timeout against vanished peers;
//! - `shed`: load shedding on the accept queue (`diag`), loop lag and fds;
//! - `warn`: rate-limited warnings that name the address refused.

mod bucket;
mod diag;
pub mod header;
mod shed;
mod sockopt;
mod table;
mod throttle;
mod warn;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::{Config, ProxyProtocol, Trusted};
use crate::engine::metrics::{CloseReason, RejectReason};
use crate::engine::timer::Millis;

use self::header::Parsed;
use self::warn::Warn;

pub use self::bucket::{Bucket, Rate};
pub use self::shed::Shed;
pub use self::sockopt::SocketOptions;
pub use self::table::{AddrTable, Key, PerIp};
pub use self::throttle::Throttle;

/// What a connection was let in with, kept until it is released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Its PROXY header is still to come (the per-address limits judge it
    /// once the header names its client).
    pub preamble: bool,
    /// The address the per-address limits count it under.
    pub key: Option<Key>,
}

/// What a PROXY header check found in a connection's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preamble {
    /// Not whole yet.
    Incomplete,
    /// A whole header of this many bytes; the client is at `client`.
    Done {
        /// The header's length.
        len: usize,
        /// The client's address: the header's, or the peer's own.
        client: IpAddr,
    },
}

/// One shard's front door.
pub struct Door {
    proxy: ProxyProtocol,
    trusted: Trusted,
    /// The process's per-address limits, if any.
    table: Option<Arc<AddrTable>>,
    /// The address each client connection is counted under, by its table
    /// slot (at most one per connection the shard holds).
    seats: Vec<Option<Key>>,
    /// Each connection's frame rate, if limited.
    pub throttle: Option<Throttle>,
    /// Options for every client and upstream socket, if any.
    pub sockets: Option<SocketOptions>,
    /// Load shedding, if any signal is watched.
    pub shed: Option<Shed>,
    warn: Warn,
}

impl Door {
    /// The door `config` asks for, with the process's per-address `table`
    /// (if it limits anything) and the shard's load shedding, or `None`
    /// when every front-door feature is off (then the shard never consults
    /// one).
    pub fn new(config: &Config, table: Option<Arc<AddrTable>>, shed: Option<Shed>) -> Option<Door> {
        let throttle = Throttle::new(config);
        let sockets = SocketOptions::from_config(config);
        let judges = config.proxy_protocol.on() || table.is_some();
        if !judges && throttle.is_none() && sockets.is_none() && shed.is_none() {
            return None;
        }
        Some(Door {
            proxy: config.proxy_protocol,
            trusted: config.proxy_trusted.clone(),
            table,
            seats: Vec::new(),
            throttle,
            sockets,
            shed,
            warn: Warn::default(),
        })
    }

    /// Whether the door counts connections against per-address limits.
    pub fn has_table(&self) -> bool {
        self.table.is_some()
    }

    /// Whether connections come with a PROXY header (their client address
    /// is the header's, not the peer's).
    pub fn reads_headers(&self) -> bool {
        self.proxy.on()
    }

    /// A reload made per-address limits: the door counts against `table`
    /// from the next connection on (the caller seats the open ones).
    pub fn attach_table(&mut self, table: Arc<AddrTable>) {
        self.table = Some(table);
    }

    /// A connection was accepted at `now`; `peer` reads its peer address
    /// (`None`: it could not be read), only if something judges by it:
    /// let it in, or say why not.
    pub fn admit(
        &mut self,
        peer: impl FnOnce() -> Option<SocketAddr>,
        now: Millis,
    ) -> Result<Pass, RejectReason> {
        if !self.proxy.on() && self.table.is_none() {
            return Ok(Pass::default());
        }
        let peer = peer();
        if self.proxy.on() {
            // A peer whose address cannot be read (it left already) cannot
            // be shown to be trusted.
            if !peer.is_some_and(|peer| self.trusted.contains(peer.ip())) {
                let who = peer.map_or("an unknown address".to_string(), |p| p.ip().to_string());
                self.warn.refused(now, &who, "not in --proxy-trusted");
                return Err(RejectReason::ProxyUntrusted);
            }
            return Ok(Pass {
                preamble: true,
                key: None,
            });
        }
        // A peer that left before its address was read is let in: its
        // first read finds it gone.
        let key = match peer {
            Some(peer) => self.count(peer.ip(), now)?,
            None => None,
        };
        Ok(Pass {
            preamble: false,
            key,
        })
    }

    /// Counts a connection from `client` against the per-address limits.
    fn count(&mut self, client: IpAddr, now: Millis) -> Result<Option<Key>, RejectReason> {
        let Some(table) = self.table.as_deref() else {
            return Ok(None);
        };
        match table.admit(client) {
            Ok(key) => Ok(Some(key)),
            Err(reason) => {
                let limits = table.limits();
                let why = match reason {
                    RejectReason::PerIp => {
                        format!("--max-conns-per-ip {} reached", limits.max_conns)
                    }
                    RejectReason::ConnRate => format!(
                        "faster than --conn-rate-per-ip {}",
                        limits.rate.map_or(0, |rate| rate.per_second)
                    ),
                    _ => "--ip-table-max addresses, each with a connection open, held".into(),
                };
                self.warn.refused(now, &client.to_string(), &why);
                Err(reason)
            }
        }
    }

    /// A connection let in with `pass` was turned away after all (by
    /// `--max-conns`): it is not counted against its address.
    pub fn undo(&mut self, pass: Pass) {
        if let (Some(table), Some(key)) = (self.table.as_deref(), pass.key) {
            table.release(key);
        }
    }

    /// The connection in table slot `slot` was let in with `pass`.
    pub fn seat(&mut self, slot: usize, pass: Pass) {
        if self.seats.len() <= slot {
            self.seats.resize(slot + 1, None);
        }
        self.seats[slot] = pass.key;
    }

    /// The connection in `slot`, whose PROXY header named `client`, is
    /// counted against the per-address limits, or must be turned away.
    pub fn seat_client(
        &mut self,
        slot: usize,
        client: IpAddr,
        now: Millis,
    ) -> Result<(), RejectReason> {
        let key = self.count(client, now)?;
        self.seat(
            slot,
            Pass {
                preamble: false,
                key,
            },
        );
        Ok(())
    }

    /// The connection in `slot` is gone: it no longer counts.
    pub fn release(&mut self, slot: usize) {
        let key = self.seats.get_mut(slot).and_then(Option::take);
        if let (Some(table), Some(key)) = (self.table.as_deref(), key) {
            table.release(key);
        }
    }

    /// Looks for the PROXY header at the start of `bytes` (what a
    /// connection has sent so far; `eof`: it will send no more; `max_len`:
    /// its input ring's capacity). `peer` reads the connection's own peer
    /// address, which stands where the header names no client.
    pub fn preamble(
        &mut self,
        bytes: &[u8],
        eof: bool,
        max_len: usize,
        peer: impl FnOnce() -> Option<SocketAddr>,
    ) -> Result<Preamble, CloseReason> {
        match header::parse(bytes, self.proxy, max_len) {
            Parsed::Header { len, source } => {
                let client = source.or_else(peer).map(|addr| addr.ip().to_canonical());
                let client = client.ok_or(CloseReason::ProxyMissing)?;
                Ok(Preamble::Done { len, client })
            }
            Parsed::Incomplete if !eof => Ok(Preamble::Incomplete),
            // Cut short by the peer's close: a partial header is malformed
            // (section 2.2), no byte at all is no header.
            Parsed::Incomplete if !bytes.is_empty() => Err(CloseReason::ProxyMalformed),
            Parsed::Incomplete | Parsed::Missing => Err(CloseReason::ProxyMissing),
            Parsed::Malformed(why) => {
                log::debug!("closing a connection: {why}");
                Err(CloseReason::ProxyMalformed)
            }
        }
    }
}
