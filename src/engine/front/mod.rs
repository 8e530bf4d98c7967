//! The front door: who may connect, how often and how fast, before a
//! connection reaches the data path. The shard consults it at accept, at a
//! connection's first bytes (its PROXY header) and at release
//! (`shard/door.rs`); with every feature off the shard has no door at all.
//!
//! - [`header`]: the PROXY protocol header (v1 and v2), a pure parser;
//! - `warn`: rate-limited warnings that name the address refused.

pub mod header;
mod warn;

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, ProxyProtocol, Trusted};
use crate::engine::metrics::{CloseReason, RejectReason};
use crate::engine::timer::Millis;

use self::header::Parsed;
use self::warn::Warn;

/// What a connection was let in with, kept until it is released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Its PROXY header is still to come.
    pub preamble: bool,
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
    warn: Warn,
}

impl Door {
    /// The door `config` asks for, or `None` when every front-door feature
    /// is off (then the shard never consults one).
    pub fn from_config(config: &Config) -> Option<Door> {
        if !config.proxy_protocol.on() {
            return None;
        }
        Some(Door {
            proxy: config.proxy_protocol,
            trusted: config.proxy_trusted.clone(),
            warn: Warn::default(),
        })
    }

    /// A connection from `peer` (`None`: its address could not be read)
    /// was accepted at `now`: let it in, or say why not.
    pub fn admit(&mut self, peer: Option<SocketAddr>, now: Millis) -> Result<Pass, RejectReason> {
        let mut pass = Pass::default();
        if self.proxy.on() {
            // A peer whose address cannot be read (it left already) cannot
            // be shown to be trusted.
            if !peer.is_some_and(|peer| self.trusted.contains(peer.ip())) {
                let who = peer.map_or("an unknown address".to_string(), |p| p.ip().to_string());
                self.warn.refused(now, &who, "not in --proxy-trusted");
                return Err(RejectReason::ProxyUntrusted);
            }
            pass.preamble = true;
        }
        Ok(pass)
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
