//! `holdfast chaos proxy`: a fault-injecting TCP proxy driven through
//! Toxiproxy's HTTP API, so the scripts and client libraries teams already
//! have for Toxiproxy drive it unchanged.
//!
//! Two threads: the API ([`api`], blocking, one request at a time) owns the
//! proxies and their toxics ([`collection`]) and sends each change to the
//! relay ([`relay`]), one mio loop that owns every listener and connection
//! and carries the bytes ([`link`]) through the toxics ([`chain`]).
//! Everything is bounded: `--max-conns` connections, `--buffer` bytes per
//! direction per connection, [`collection::PROXIES_MAX`] proxies of
//! [`collection::TOXICS_MAX`] toxics, API requests of [`http::BODY_MAX`].

mod api;
mod chain;
mod collection;
mod error;
mod http;
mod link;
mod metrics;
mod relay;
mod toxic;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::mpsc::channel;

use crate::config::ChaosProxySettings;
use api::Api;
use collection::Collection;
use metrics::Metrics;
use relay::{Bounds, Relay};

/// Runs the proxy: binds the API, creates the proxies of `--config`,
/// prints `holdfast chaos proxy: API listening on ADDR` to stderr, then
/// serves until the process is killed. `Err` when it cannot start.
pub fn run(settings: &ChaosProxySettings) -> io::Result<()> {
    raise_fd_limit();
    let listener = TcpListener::bind(settings.api)
        .map_err(|e| io::Error::new(e.kind(), format!("API listener {}: {e}", settings.api)))?;
    let metrics = Arc::new(Metrics::default());
    let (commands, receive) = channel();
    let bounds = Bounds {
        max_conns: settings.max_conns,
        buffer: settings.buffer,
    };
    let (mut relay, waker) = Relay::new(receive, bounds, metrics.clone())?;
    std::thread::Builder::new()
        .name("holdfast-chaos-relay".into())
        .spawn(move || {
            if let Err(error) = relay.run() {
                log::error!("chaos proxy relay: {error}");
                std::process::exit(1);
            }
        })?;
    let mut api = Api {
        collection: Collection::new(commands, waker),
        metrics,
    };
    if let Some(path) = &settings.config {
        let body = std::fs::read(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if let (_, Some(error)) = api.collection.populate(&body) {
            let message = format!("{}: {}", path.display(), error.message);
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
    }
    eprintln!(
        "holdfast chaos proxy: API listening on {}",
        listener.local_addr()?
    );
    api.serve(listener);
    Ok(())
}

/// Two fds per connection: take the hard limit, as `serve` does.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
