//! The relations between the front door's settings (`--proxy-*`,
//! per-address limits, rates), checked by [`Config::validate`].

use super::error::ConfigError;
use super::settings::Config;
use super::units::format_size;

/// The smallest `--buffer` with `--proxy-protocol`: the header is read
/// whole into the input ring, and a text header takes up to 107 bytes, a
/// binary one 16 plus its addresses (36 bytes for IPv6) plus what its TLVs
/// carry (a unique ID alone takes up to 131).
pub const PROXY_BUFFER_MIN: usize = 512;

impl Config {
    /// The front door's relations.
    pub(super) fn check_front(&self) -> Result<(), ConfigError> {
        self.check_proxy_protocol()?;
        let pairs = [
            (
                "--conn-burst-per-ip",
                self.conn_burst_per_ip,
                "--conn-rate-per-ip",
                self.conn_rate_per_ip,
            ),
            (
                "--request-burst",
                self.request_burst,
                "--request-rate",
                self.request_rate,
            ),
        ];
        for (burst_flag, burst, rate_flag, rate) in pairs {
            if burst > 0 && rate == 0 {
                return Err(ConfigError::new(
                    burst_flag,
                    format!("is the bucket of {rate_flag}, which is not set"),
                ));
            }
        }
        Ok(())
    }

    /// A PROXY header lets its sender name any client address, so only
    /// the sources named may send one; and it must fit the input ring.
    fn check_proxy_protocol(&self) -> Result<(), ConfigError> {
        if !self.proxy_protocol.on() {
            return Ok(());
        }
        if self.proxy_trusted.is_empty() {
            return Err(ConfigError::new(
                "--proxy-trusted",
                format!(
                    "required with --proxy-protocol {}: the addresses of the balancers that \
                     send the header, such as 10.0.0.0/8",
                    self.proxy_protocol.name()
                ),
            ));
        }
        if self.buffer < PROXY_BUFFER_MIN {
            return Err(ConfigError::new(
                "--buffer",
                format!(
                    "must be at least {} with --proxy-protocol (the header is read into it), \
                     got {}",
                    format_size(PROXY_BUFFER_MIN),
                    format_size(self.buffer)
                ),
            ));
        }
        Ok(())
    }
}
