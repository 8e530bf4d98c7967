//! The settings that name a choice rather than a quantity (the protocol,
//! the backend, the key hash, ...): the plain enums the engine and the apps
//! act on, and how each is read from its flag.

use std::net::SocketAddr;

/// The wire protocols built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Raw bytes: whatever arrived is a frame.
    Echo,
    /// `\n`-terminated lines (a `\r` before the `\n` is dropped too).
    Line,
    /// u32 big-endian length, then that many payload bytes.
    Frame,
    /// RESP2 (Redis) requests; a frame is one whole command, raw, and the
    /// service writes whole RESP replies itself.
    Resp,
}

impl Protocol {
    /// Every protocol name accepted by `--protocol`.
    pub const NAMES: &'static [&'static str] = &["echo", "line", "frame", "resp"];

    /// Parses a `--protocol` name.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "echo" => Some(Protocol::Echo),
            "line" => Some(Protocol::Line),
            "frame" => Some(Protocol::Frame),
            "resp" => Some(Protocol::Resp),
            _ => None,
        }
    }

    /// The name as `--protocol` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Echo => "echo",
            Protocol::Line => "line",
            Protocol::Frame => "frame",
            Protocol::Resp => "resp",
        }
    }

    /// Bytes of framing around each payload on the wire (header or
    /// delimiter): what `--buffer` must hold beyond `--max-frame`. For
    /// `line` this counts the `\n` only (a `\r` counts as payload).
    pub fn overhead(self) -> usize {
        match self {
            Protocol::Echo | Protocol::Resp => 0,
            Protocol::Line => 1,
            Protocol::Frame => 4,
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Protocol, String> {
        Protocol::from_name(text.trim()).ok_or_else(|| {
            format!(
                "expected one of {}, got `{text}`",
                Protocol::NAMES.join(", ")
            )
        })
    }
}

/// What a push does to a connection that already has
/// `--slow-consumer-bytes` of pushes queued behind its full output ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Close the connection (`closed_total{reason="slow_consumer"}`), as
    /// Redis's `client-output-buffer-limit pubsub` does.
    Close,
    /// Drop the message (`push_dropped_total{reason="slow_consumer"}`).
    Drop,
}

impl SlowConsumer {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SlowConsumer::Close => "close",
            SlowConsumer::Drop => "drop",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<SlowConsumer, String> {
        match text.trim() {
            "close" => Ok(SlowConsumer::Close),
            "drop" => Ok(SlowConsumer::Drop),
            _ => Err(format!("expected close or drop, got `{text}`")),
        }
    }
}

/// Where `holdfast proxy --cluster` sends read-only commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// Every command to the slot's primary.
    Primary,
    /// Read-only commands to a replica of the slot; none known: an error.
    Replica,
    /// Read-only commands to a replica of the slot; none known: the primary.
    PreferReplica,
}

impl ReadFrom {
    pub(crate) fn parse(text: &str) -> Result<ReadFrom, String> {
        match text.trim() {
            "primary" => Ok(ReadFrom::Primary),
            "replica" => Ok(ReadFrom::Replica),
            "prefer-replica" => Ok(ReadFrom::PreferReplica),
            _ => Err(format!(
                "expected primary, replica or prefer-replica, got `{text}`"
            )),
        }
    }
}

/// The driver that moves bytes between sockets and rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Readiness through epoll (mio), then read(2)/write(2).
    Epoll,
    /// Completions through io_uring: multishot accept and receive into
    /// provided buffers, sends from the output ring (`uring` builds only).
    Uring,
}

impl Backend {
    /// The name used on the command line and in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Epoll => "epoll",
            Backend::Uring => "uring",
        }
    }

    /// `epoll`, or `uring` in a build with the `uring` feature.
    pub(crate) fn parse(text: &str) -> Result<Backend, String> {
        match text.trim() {
            "epoll" => Ok(Backend::Epoll),
            "uring" if cfg!(feature = "uring") => Ok(Backend::Uring),
            "uring" => Err("uring needs a build with `--features uring`".into()),
            _ => Err(format!(
                "expected epoll (or uring in a `--features uring` build), got `{text}`"
            )),
        }
    }
}

/// How the proxy turns a key (its hash tag) into a position on its ketama
/// ring: one of nutcracker's `hash:` functions (`apps::proxy::hash` computes
/// them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyHash {
    /// `fnv1a_64`, nutcracker's default.
    #[default]
    Fnv1a64,
    /// `murmur`: MurmurHash2, well mixed.
    Murmur,
}

impl KeyHash {
    pub(crate) fn parse(text: &str) -> Result<KeyHash, String> {
        text.trim().parse()
    }

    /// The name nutcracker's configuration uses for it.
    pub fn name(self) -> &'static str {
        match self {
            KeyHash::Fnv1a64 => "fnv1a_64",
            KeyHash::Murmur => "murmur",
        }
    }
}

impl std::str::FromStr for KeyHash {
    type Err = String;

    /// Parses nutcracker's name for the hash (`fnv1a_64`, `murmur`).
    fn from_str(name: &str) -> Result<KeyHash, String> {
        match name {
            "fnv1a_64" => Ok(KeyHash::Fnv1a64),
            "murmur" => Ok(KeyHash::Murmur),
            _ => Err(format!(
                "unknown key hash '{name}', expected fnv1a_64 or murmur"
            )),
        }
    }
}

/// Which jitter spreads the reconnect delays (`engine::upstream::backoff`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Jitter {
    /// `random(0, min(cap, base * 2^attempt))`: the least total work, and
    /// each delay has a known ceiling. The default.
    #[default]
    Full,
    /// `min(cap, random(base, previous * 3))`: never shorter than `base`,
    /// grows from the previous delay rather than from the attempt count.
    Decorrelated,
}

impl Jitter {
    pub(crate) fn parse(text: &str) -> Result<Jitter, String> {
        match text.trim() {
            "full" => Ok(Jitter::Full),
            "decorrelated" => Ok(Jitter::Decorrelated),
            _ => Err(format!("expected full or decorrelated, got `{text}`")),
        }
    }
}

/// `--admin`: an address, or `None` for `off`.
pub type Admin = Option<SocketAddr>;

pub(crate) fn address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("expected an IP address and port such as 127.0.0.1:7000, got `{text}`")
    })
}

pub(crate) fn admin(text: &str) -> Result<Admin, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!("expected an IP address and port such as 127.0.0.1:7001, or off, got `{text}`")
    })
}

pub(crate) fn log_level(text: &str) -> Result<log::LevelFilter, String> {
    const LEVELS: [(&str, log::LevelFilter); 5] = [
        ("error", log::LevelFilter::Error),
        ("warn", log::LevelFilter::Warn),
        ("info", log::LevelFilter::Info),
        ("debug", log::LevelFilter::Debug),
        ("trace", log::LevelFilter::Trace),
    ];
    LEVELS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text.trim()))
        .map(|&(_, level)| level)
        .ok_or_else(|| format!("expected one of error, warn, info, debug, trace, got `{text}`"))
}

/// An upstream as written: `host:port` (a name or an IP address).
/// The longest password or user name: an upstream's `AUTH user password`
/// must fit the smallest ring `resp` allows.
pub const SECRET_MAX: usize = 512;

/// A password or user name: not empty, printable ASCII without spaces
/// (what a RESP client can send as one argument without quoting surprises).
pub(crate) fn secret(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > SECRET_MAX {
        return Err(format!("must be at most {SECRET_MAX} bytes"));
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "must be printable ASCII without spaces, found {c:?}"
        ));
    }
    Ok(text.to_string())
}

/// `NAME:PASSWORD` for `--user`: both [`secret`]s, the name without a colon.
pub(crate) fn user(text: &str) -> Result<String, String> {
    let (name, password) = text
        .split_once(':')
        .ok_or_else(|| "expected NAME:PASSWORD".to_string())?;
    secret(name).map_err(|e| format!("the name {e}"))?;
    secret(password).map_err(|e| format!("the password {e}"))?;
    Ok(text.to_string())
}

/// `--upstream-credential`: `ADDR=USER:PASSWORD`, an [`upstream`] address
/// and a [`user`].
pub(crate) fn upstream_credential(text: &str) -> Result<String, String> {
    let (addr, credentials) = text
        .split_once('=')
        .ok_or_else(|| "expected ADDR=USER:PASSWORD".to_string())?;
    upstream(addr)?;
    user(credentials).map_err(|e| e.replace("NAME:PASSWORD", "ADDR=USER:PASSWORD"))?;
    Ok(text.to_string())
}

/// `--upstream-replica`: `PRIMARY=REPLICA`, two distinct [`upstream`]
/// addresses.
pub(crate) fn upstream_replica(text: &str) -> Result<String, String> {
    let (primary, replica) = text
        .split_once('=')
        .ok_or_else(|| "expected PRIMARY=REPLICA".to_string())?;
    let (primary, replica) = (upstream(primary)?, upstream(replica)?);
    if primary == replica {
        return Err(format!("`{primary}` cannot replicate itself"));
    }
    Ok(format!("{primary}={replica}"))
}

/// `--cluster`: a comma-separated list of [`upstream`] addresses.
pub(crate) fn seeds(text: &str) -> Result<String, String> {
    let seeds: Vec<&str> = text.split(',').map(str::trim).collect();
    if seeds.len() > 64 {
        return Err(format!("{} seed nodes, at most 64", seeds.len()));
    }
    for seed in &seeds {
        upstream(seed)?;
    }
    Ok(seeds.join(","))
}

pub(crate) fn upstream(text: &str) -> Result<String, String> {
    let text = text.trim();
    let wrong = || format!("expected host:port such as 127.0.0.1:6379, got `{text}`");
    let (host, port) = text.rsplit_once(':').ok_or_else(wrong)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(wrong());
    }
    Ok(text.to_string())
}
