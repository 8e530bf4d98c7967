//! The settings of `holdfast serve` and `holdfast proxy`. A leaf: nothing
//! here imports from the rest of the crate.
//!
//! - `settings`: every setting declared once (flag, file key, default,
//!   bounds, help), as the fields of [`Config`];
//! - `bounds`: the bounds a declaration names, checked while parsing;
//! - `units`: how sizes, durations and counts are written;
//! - `choices`: the settings that name a choice, as plain enums;
//! - `live`: which settings a reload may change, and what one changes;
//! - `load`: defaults, then the `--config` file (`file`), then the flags;
//! - `relations`: [`Config::validate`], the checks between settings;
//! - `error`: [`ConfigError`], one line naming the flag.

mod bounds;
mod choices;
mod error;
mod file;
mod front;
mod live;
mod load;
mod net;
mod relations;
mod settings;
mod units;

#[cfg(test)]
mod tests;

pub use bounds::range_of;
pub use choices::{Admin, Backend, Jitter, KeyHash, Protocol, ReadFrom, SlowConsumer};
pub use error::ConfigError;
pub use front::PROXY_BUFFER_MIN;
pub use live::{Diff, diff, is_live, live_keys};
pub use load::{Mode, args, flag_error, load};
pub use net::{Cidr, Keepalive, ProxyProtocol, TRUSTED_MAX, TcpKeepalive, Trusted};
pub use relations::{RESP_BUFFER_MIN, RESP_MAX_FRAME_MIN, UPSTREAMS_MAX};
pub use settings::{BackoffSettings, BreakerSettings, ChaosProxySettings, Config};
pub use units::{format_duration, format_size, parse_duration, parse_size};

impl Default for Config {
    /// Every setting's declared default (`holdfast serve`'s).
    fn default() -> Config {
        load::defaults()
    }
}

impl Default for BreakerSettings {
    fn default() -> BreakerSettings {
        load::defaults()
    }
}

impl Default for BackoffSettings {
    fn default() -> BackoffSettings {
        load::defaults()
    }
}
