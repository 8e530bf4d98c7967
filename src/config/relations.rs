//! [`Config::validate`]: what no single setting's bounds can say, the
//! relations between settings, checked once every layer is applied. Also
//! the bounds the engine depends on for memory safety of its indexing
//! (ring capacities are powers of two), so that a `Config` built in code is
//! held to them too.

use std::net::SocketAddr;
use std::time::Duration;

use super::bounds::Range;
use super::choices::Protocol;
use super::error::ConfigError;
use super::settings::{BUFFER_RANGE, Config, URING_BUFFERS_RANGE};
use super::units::{format_duration, format_size};

/// The smallest ring for `resp`: the key-value service reserves up to a few
/// hundred bytes for a small reply (an error naming an unknown command, an
/// INFO page), which must fit an empty output ring.
pub const RESP_BUFFER_MIN: usize = 4096;
/// The smallest `--max-frame` for `resp`: a whole command must fit in it,
/// and clients send commands of a few hundred bytes on connect (HELLO,
/// CLIENT SETINFO with a library's name and version, AUTH).
pub const RESP_MAX_FRAME_MIN: usize = 1024;
/// Upstreams of one proxy: the ketama ring (160 points of 8 bytes each per
/// upstream) stays under 1.3 MiB and its index in a `u32`.
pub const UPSTREAMS_MAX: usize = 1024;
/// Named users of the proxy (`--user`): each AUTH compares against the
/// list, so it stays short.
pub const USERS_MAX: usize = 64;

impl Config {
    /// The upstream slots the proxy keeps (`--upstream-slots`, 0: twice as
    /// many as `--upstream`s, within [`UPSTREAMS_MAX`]).
    pub fn upstream_slots(&self) -> usize {
        match self.upstream_slots {
            0 => (2 * self.upstreams.len()).min(UPSTREAMS_MAX),
            slots => slots,
        }
    }

    /// Each `--upstream-credential` as (upstream, user, password); one that
    /// is not `ADDR=USER:PASSWORD` (refused while parsing) is left out.
    pub fn upstream_logins(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.upstream_credentials.iter().filter_map(|text| {
            let (addr, login) = text.split_once('=')?;
            let (user, password) = login.split_once(':')?;
            Some((addr.trim(), user, password))
        })
    }

    /// Each `--upstream-replica` as (primary, replica).
    pub fn upstream_replica_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.upstream_replicas
            .iter()
            .filter_map(|text| text.split_once('='))
    }

    /// The primary `name` replicates (`--upstream-replica`), if any.
    pub fn primary_of(&self, name: &str) -> Option<&str> {
        self.upstream_replica_pairs()
            .find(|(_, replica)| *replica == name)
            .map(|(primary, _)| primary)
    }

    /// Checks the relations between settings and fills the derived
    /// defaults (`max_frame` when 0), and resolves the upstreams. `threads`
    /// and `max_conns` of 0 stay 0 here: the server derives them from the
    /// machine at start-up.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        within("--buffer", &BUFFER_RANGE, self.buffer)?;
        within("--uring-buffers", &URING_BUFFERS_RANGE, self.uring_buffers)?;
        self.check_resp_buffer()?;
        self.fill_max_frame()?;
        let prealloc = Range::<usize>::at_most(self.pool_free_max as u64, " (--pool-free-max)");
        within("--pool-prealloc", &prealloc, self.pool_prealloc)?;
        if self.backoff.cap < self.backoff.base {
            return Err(ConfigError::new(
                "--reconnect-max",
                format!(
                    "must be at least --reconnect-base {}, got {}",
                    millis(self.backoff.base),
                    millis(self.backoff.cap)
                ),
            ));
        }
        self.check_upstreams()?;
        self.check_credentials()?;
        self.check_mailbox()?;
        self.check_front()?;
        self.check_admin()
    }

    /// Users are few and named once; `default` is `--requirepass`'s; an
    /// upstream user needs its password.
    /// `--upstream-credential`: each for an upstream given, once; not with
    /// `--cluster`, whose nodes share one login.
    fn check_upstream_credentials(&self) -> Result<(), ConfigError> {
        let error = |message: String| ConfigError::new("--upstream-credential", message);
        if self.cluster.is_some() && !self.upstream_credentials.is_empty() {
            return Err(error(
                "a cluster's nodes share one login: give --upstream-user and \
                 --upstream-password"
                    .into(),
            ));
        }
        let addrs: Vec<&str> = self.upstream_logins().map(|(addr, ..)| addr).collect();
        for (index, addr) in addrs.iter().enumerate() {
            if !self.upstreams.iter().any(|name| name == addr) {
                return Err(error(format!("`{addr}` is not an --upstream")));
            }
            if addrs[..index].contains(addr) {
                return Err(error(format!("`{addr}` is given twice")));
            }
        }
        Ok(())
    }

    fn check_credentials(&self) -> Result<(), ConfigError> {
        let error = |message: String| ConfigError::new("--user", message);
        if self.users.len() > USERS_MAX {
            let count = self.users.len();
            return Err(error(format!("{count} users, at most {USERS_MAX}")));
        }
        let names: Vec<&str> = self
            .users
            .iter()
            .filter_map(|u| u.split_once(':'))
            .map(|(n, _)| n)
            .collect();
        for (index, name) in names.iter().enumerate() {
            if names[..index].contains(name) {
                return Err(error(format!("`{name}` is given twice")));
            }
            if *name == "default" && self.requirepass.is_some() {
                return Err(error(
                    "`default` is --requirepass's user: give its password there".into(),
                ));
            }
        }
        self.check_upstream_credentials()?;
        if self.upstream_user.is_some() && self.upstream_password.is_none() {
            return Err(ConfigError::new(
                "--upstream-user",
                String::from("needs --upstream-password"),
            ));
        }
        Ok(())
    }

    /// A mailbox must hold at least one message of the largest size.
    fn check_mailbox(&self) -> Result<(), ConfigError> {
        if self.mailbox_bytes >= self.buffer {
            return Ok(());
        }
        Err(ConfigError::new(
            "--mailbox-bytes",
            format!(
                "must be at least --buffer {}, got {}",
                format_size(self.buffer),
                format_size(self.mailbox_bytes)
            ),
        ))
    }

    /// `resp` replies are written whole by the service, and its small
    /// replies reserve up to [`RESP_BUFFER_MIN`] bytes.
    fn check_resp_buffer(&self) -> Result<(), ConfigError> {
        if self.protocol != Protocol::Resp || self.buffer >= RESP_BUFFER_MIN {
            return Ok(());
        }
        Err(ConfigError::new(
            "--buffer",
            format!(
                "must be at least {} with --protocol resp, got {}",
                format_size(RESP_BUFFER_MIN),
                format_size(self.buffer)
            ),
        ))
    }

    /// A frame is decoded in place from the input ring, so the largest
    /// payload plus its framing must fit in one ring. Needs a valid buffer.
    fn fill_max_frame(&mut self) -> Result<(), ConfigError> {
        let fits = self.buffer - self.protocol.overhead();
        if self.max_frame == 0 {
            self.max_frame = fits;
            return Ok(());
        }
        if self.max_frame <= fits {
            return self.check_resp_max_frame();
        }
        Err(ConfigError::new(
            "--max-frame",
            format!(
                "{} does not fit in --buffer {}{} (at most {fits}); raise --buffer or lower --max-frame",
                self.max_frame,
                self.buffer,
                framing(self.protocol)
            ),
        ))
    }

    /// A `resp` command is one frame: a `--max-frame` too small for what
    /// clients send would refuse nearly every command.
    fn check_resp_max_frame(&self) -> Result<(), ConfigError> {
        if self.protocol != Protocol::Resp || self.max_frame >= RESP_MAX_FRAME_MIN {
            return Ok(());
        }
        Err(ConfigError::new(
            "--max-frame",
            format!(
                "must be at least {} with --protocol resp (a whole command must fit), got {}",
                format_size(RESP_MAX_FRAME_MIN),
                self.max_frame
            ),
        ))
    }

    /// The upstreams, the timeouts they must fit in, and their addresses.
    fn check_upstreams(&mut self) -> Result<(), ConfigError> {
        // At least one reply of the largest size must fit, or a client whose
        // reply came early could never be answered.
        if self.max_pending_bytes < self.buffer {
            return Err(ConfigError::new(
                "--max-pending-bytes",
                format!(
                    "must be at least --buffer {}, got {}",
                    format_size(self.buffer),
                    format_size(self.max_pending_bytes)
                ),
            ));
        }
        let error = |message: String| ConfigError::new("--upstream", message);
        if self.upstreams.len() > UPSTREAMS_MAX {
            let count = self.upstreams.len();
            return Err(error(format!("{count} upstreams, at most {UPSTREAMS_MAX}")));
        }
        if self.cluster.is_some() && !self.upstreams.is_empty() {
            return Err(ConfigError::new(
                "--cluster",
                String::from(
                    "the cluster's nodes are the upstreams: give --cluster or --upstream, not both",
                ),
            ));
        }
        self.check_upstream_replicas()?;
        if self.upstreams.is_empty() && self.cluster.is_none() {
            self.upstream_addrs.clear();
            return Ok(());
        }
        if self.protocol == Protocol::Echo {
            return Err(error(
                "echo replies have no framing to match them to requests; use line, frame or resp"
                    .into(),
            ));
        }
        self.check_upstream_timeouts()?;
        if self.upstream_slots != 0 && self.upstream_slots < self.upstreams.len() {
            return Err(ConfigError::new(
                "--upstream-slots",
                format!(
                    "must be at least the {} upstreams given, got {}",
                    self.upstreams.len(),
                    self.upstream_slots
                ),
            ));
        }
        let mut addrs = Vec::with_capacity(self.upstreams.len());
        for (index, name) in self.upstreams.iter().enumerate() {
            if self.upstreams[..index].contains(name) {
                return Err(error(format!("`{name}` is given twice")));
            }
            addrs.push(resolve(name).map_err(error)?);
        }
        self.upstream_addrs = addrs;
        Ok(())
    }

    /// `--upstream-replica`: both sides are upstreams; a replica has one
    /// primary, which is no replica itself; not with `--cluster`.
    fn check_upstream_replicas(&self) -> Result<(), ConfigError> {
        let error = |message: String| ConfigError::new("--upstream-replica", message);
        if self.cluster.is_some() && !self.upstream_replicas.is_empty() {
            return Err(error(
                "a cluster's replicas are found in its slot map; give --cluster alone".into(),
            ));
        }
        let pairs: Vec<(&str, &str)> = self.upstream_replica_pairs().collect();
        for (index, &(primary, replica)) in pairs.iter().enumerate() {
            for name in [primary, replica] {
                if !self.upstreams.iter().any(|upstream| upstream == name) {
                    return Err(error(format!("`{name}` is not an --upstream")));
                }
            }
            if pairs[..index].iter().any(|&(_, other)| other == replica) {
                return Err(error(format!("`{replica}` is given a primary twice")));
            }
            if pairs.iter().any(|&(_, other)| other == primary) {
                return Err(error(format!(
                    "`{primary}` replicates another upstream: it cannot have replicas"
                )));
            }
        }
        Ok(())
    }

    fn check_upstream_timeouts(&self) -> Result<(), ConfigError> {
        if self.upstream_timeout >= self.idle_timeout {
            return Err(ConfigError::new(
                "--upstream-timeout",
                format!(
                    "{} must be shorter than --idle-timeout {}, or a client waiting for an \
                     upstream would be closed as idle",
                    format_duration(self.upstream_timeout),
                    format_duration(self.idle_timeout)
                ),
            ));
        }
        let cool_down = Duration::from_millis(self.breaker.cool_down);
        if cool_down < self.upstream_timeout {
            return Err(ConfigError::new(
                "--breaker-cool-down",
                format!(
                    "{} must be at least --upstream-timeout {}, so that requests sent before \
                     the breaker opened have their outcome before it lets probes through",
                    format_duration(cool_down),
                    format_duration(self.upstream_timeout)
                ),
            ));
        }
        Ok(())
    }

    /// Two listeners on one port would fail to bind, or worse, with
    /// SO_REUSEPORT, share it and hand clients to the admin endpoint.
    fn check_admin(&self) -> Result<(), ConfigError> {
        let Some(admin) = self.admin else {
            return Ok(());
        };
        if !overlaps(self.listen, admin) {
            return Ok(());
        }
        Err(ConfigError::new(
            "--admin",
            format!(
                "{admin} clashes with --listen {}; use another port, or --admin off",
                self.listen
            ),
        ))
    }
}

fn within(flag: &str, range: &Range<usize>, value: usize) -> Result<(), ConfigError> {
    match range.complaint(value as u64) {
        None => Ok(()),
        Some(message) => Err(ConfigError::new(flag, message)),
    }
}

fn millis(ms: u64) -> String {
    format_duration(Duration::from_millis(ms))
}

/// The address of an upstream named `host:port` (the first one a name
/// resolves to).
fn resolve(name: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = name.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    match name.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("`{name}` resolves to no address")),
        Err(error) => Err(format!("cannot resolve `{name}`: {error}")),
    }
}

/// How the message about `--max-frame` names the protocol's framing.
fn framing(protocol: Protocol) -> String {
    match protocol {
        Protocol::Echo | Protocol::Resp => String::new(),
        Protocol::Line => " with the 1-byte newline".into(),
        Protocol::Frame => " with the 4-byte frame header".into(),
    }
}

/// Whether two listeners would fight over one port: the same port (0 lets
/// the kernel pick, so never clashes) on the same or a wildcard address.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let wildcard = a.ip().is_unspecified() || b.ip().is_unspecified();
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || wildcard)
}
