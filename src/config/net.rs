//! The settings that name addresses rather than quantities: the PROXY
//! protocol's mode and the sources trusted to send it; and the TCP
//! keepalive's three numbers.

use std::net::IpAddr;
use std::time::Duration;

use super::bounds::Bound;
use super::units::{format_duration, parse_count, parse_duration};

/// The most address blocks `--proxy-trusted` takes: each accept looks
/// through the list once.
pub const TRUSTED_MAX: usize = 256;

/// `--proxy-protocol`: which PROXY protocol headers the listener expects at
/// the start of every connection (HAProxy's `doc/proxy-protocol.txt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// No header: the peer's address is the client's.
    #[default]
    Off,
    /// The text header (`PROXY TCP4 ...\r\n`) only.
    V1,
    /// The binary header only.
    V2,
    /// Either, told apart by the first byte.
    Any,
}

impl ProxyProtocol {
    /// The name `--proxy-protocol` takes.
    pub fn name(self) -> &'static str {
        match self {
            ProxyProtocol::Off => "off",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
            ProxyProtocol::Any => "any",
        }
    }

    /// Whether a header is expected at all.
    pub fn on(self) -> bool {
        self != ProxyProtocol::Off
    }

    /// Whether the text header is accepted.
    pub fn takes_v1(self) -> bool {
        matches!(self, ProxyProtocol::V1 | ProxyProtocol::Any)
    }

    /// Whether the binary header is accepted.
    pub fn takes_v2(self) -> bool {
        matches!(self, ProxyProtocol::V2 | ProxyProtocol::Any)
    }

    pub(crate) fn parse(text: &str) -> Result<ProxyProtocol, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(ProxyProtocol::Off),
            "v1" => Ok(ProxyProtocol::V1),
            "v2" => Ok(ProxyProtocol::V2),
            "any" => Ok(ProxyProtocol::Any),
            _ => Err(format!("expected off, v1, v2 or any, got `{text}`")),
        }
    }
}

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address (all its
/// bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4 address written as IPv6,
    /// `::ffff:a.b.c.d`, counts as the IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(block), IpAddr::V4(ip)) => prefix_eq(
                u32::from(block).into(),
                u32::from(ip).into(),
                32,
                self.prefix,
            ),
            (IpAddr::V6(block), IpAddr::V6(ip)) => {
                prefix_eq(block.into(), ip.into(), 128, self.prefix)
            }
            _ => false,
        }
    }

    fn parse(text: &str) -> Result<Cidr, String> {
        let wrong = || format!("expected an address or a block such as 10.0.0.0/8, got `{text}`");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| wrong())?;
        let addr = addr.to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix.parse::<u8>().map_err(|_| wrong())?,
        };
        if prefix > bits {
            return Err(format!("`{text}`: a prefix of at most {bits} bits"));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// Whether the top `prefix` bits of two `width`-bit numbers are equal.
fn prefix_eq(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let shift = width - u32::from(prefix);
    shift >= width || (a >> shift) == (b >> shift)
}

/// `--proxy-trusted`: the sources that may send a PROXY header, a
/// comma-separated list of addresses and blocks, or `none` (the default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trusted(Vec<Cidr>);

impl Trusted {
    /// Whether `ip` is in one of the blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn parse(text: &str) -> Result<Trusted, String> {
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(Trusted::default());
        }
        let blocks = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if blocks.len() > TRUSTED_MAX {
            return Err(format!(
                "{} address blocks, at most {TRUSTED_MAX}",
                blocks.len()
            ));
        }
        Ok(Trusted(blocks))
    }
}

/// `--tcp-keepalive`: after `idle` with nothing received, probe every
/// `interval`; `count` probes unanswered and the kernel ends the
/// connection (ETIMEDOUT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before the first probe (TCP_KEEPIDLE).
    pub idle: Duration,
    /// Time between probes (TCP_KEEPINTVL).
    pub interval: Duration,
    /// Probes unanswered before the connection ends (TCP_KEEPCNT).
    pub count: u32,
}

/// `--tcp-keepalive` as set: off, or its three numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpKeepalive(pub Option<Keepalive>);

impl TcpKeepalive {
    pub(crate) fn parse(text: &str) -> Result<TcpKeepalive, String> {
        KeepaliveBound.parse(text)
    }
}

/// The bounds of `--tcp-keepalive`: the kernel counts its times in whole
/// seconds (at most 32767) and its probes up to 127; past two hours idle
/// (the kernel's own default) it finds a dead peer too late to matter.
#[derive(Clone, Copy, Debug)]
pub struct KeepaliveBound;

/// The longest `--tcp-keepalive` idle time.
const KEEPALIVE_IDLE_MAX: Duration = Duration::from_secs(2 * 3600);
/// The longest `--tcp-keepalive` interval.
const KEEPALIVE_INTERVAL_MAX: Duration = Duration::from_secs(600);
/// The most `--tcp-keepalive` probes (TCP_KEEPCNT's own limit).
const KEEPALIVE_COUNT_MAX: u64 = 127;

impl Bound for KeepaliveBound {
    type Value = TcpKeepalive;

    fn parse(&self, text: &str) -> Result<TcpKeepalive, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(TcpKeepalive(None));
        }
        let wrong =
            || format!("expected off or IDLE,INTERVAL,COUNT such as 60s,10s,6, got `{text}`");
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [idle, interval, count] = parts[..] else {
            return Err(wrong());
        };
        let seconds = |part: &str, max: Duration, what: &str| {
            let value = parse_duration(part)?;
            if value.subsec_millis() != 0 || value < Duration::from_secs(1) || value > max {
                return Err(format!(
                    "the {what} must be whole seconds from 1s to {}, got {part}",
                    format_duration(max)
                ));
            }
            Ok(value)
        };
        let idle = seconds(idle, KEEPALIVE_IDLE_MAX, "idle time")?;
        let interval = seconds(interval, KEEPALIVE_INTERVAL_MAX, "interval")?;
        let count = parse_count(count).map_err(|_| wrong())?;
        if !(1..=KEEPALIVE_COUNT_MAX).contains(&count) {
            return Err(format!(
                "the probe count must be from 1 to {KEEPALIVE_COUNT_MAX}, got {count}"
            ));
        }
        Ok(TcpKeepalive(Some(Keepalive {
            idle,
            interval,
            count: count as u32,
        })))
    }

    fn describe(&self) -> String {
        format!(
            "off, or IDLE,INTERVAL,COUNT: 1s to {}, 1s to {}, 1 to {KEEPALIVE_COUNT_MAX}",
            format_duration(KEEPALIVE_IDLE_MAX),
            format_duration(KEEPALIVE_INTERVAL_MAX)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_contain_what_their_prefix_says() {
        let trusted = Trusted::parse("10.0.0.0/8, 192.0.2.7, fd00::/16,::1").unwrap();
        for inside in [
            "10.1.2.3",
            "192.0.2.7",
            "fd00:1::5",
            "::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(trusted.contains(ip(inside)), "{inside}");
        }
        for outside in ["11.0.0.1", "192.0.2.8", "fd01::1", "::2", "127.0.0.1"] {
            assert!(!trusted.contains(ip(outside)), "{outside}");
        }
        let all = Trusted::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        assert!(!all.contains(ip("2001:db8::1")));
        assert!(Trusted::parse("").unwrap().is_empty());
        assert!(Trusted::parse("none").unwrap().is_empty());
    }

    #[test]
    fn bad_blocks_are_refused_with_the_text() {
        for bad in ["10.0.0.0/33", "::/129", "10.0.0", "host", "10.0.0.0/x"] {
            let error = Trusted::parse(bad).unwrap_err();
            assert!(error.contains(bad), "{bad}: {error}");
        }
        let many = vec!["10.0.0.1"; TRUSTED_MAX + 1].join(",");
        assert!(Trusted::parse(&many).unwrap_err().contains("at most 256"));
    }

    #[test]
    fn keepalive_takes_three_numbers_or_off() {
        let parse = |text: &str| KeepaliveBound.parse(text);
        assert_eq!(parse("off"), Ok(TcpKeepalive(None)));
        let keepalive = parse("30s, 5s, 4").unwrap().0.unwrap();
        assert_eq!(keepalive.idle, Duration::from_secs(30));
        assert_eq!(keepalive.interval, Duration::from_secs(5));
        assert_eq!(keepalive.count, 4);
        for bad in [
            "30s,5s",
            "1500ms,1s,3",
            "0s,1s,3",
            "3h,1s,3",
            "1s,11m,3",
            "1s,1s,0",
            "1s,1s,128",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("x,1s,3").unwrap_err().contains("x"));
    }

    #[test]
    fn modes_parse() {
        assert_eq!(ProxyProtocol::parse("V2"), Ok(ProxyProtocol::V2));
        assert!(ProxyProtocol::Any.takes_v1() && ProxyProtocol::Any.takes_v2());
        assert!(!ProxyProtocol::V1.takes_v2() && !ProxyProtocol::Off.on());
        assert!(ProxyProtocol::parse("v3").unwrap_err().contains("v3"));
    }
}
